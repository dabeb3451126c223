/**
 * Relay — traffic through a relay peer when no direct path exists (two symmetric NATs; see
 * docs/nat.md). Binds `send`, takes `onMessage`; provides `send` and emits `onMessage`, so the
 * application keeps the same send/message API.
 *
 * - **Relay node**: `new Relay({ serve: { maxSessions, maxBytesPerSecond } })` forwards between its
 *   clients. A client gets a session with ALLOC; the relay forwards a DATA datagram only when both
 *   its sender and its destination hold a session (nobody is sent relayed traffic they did not ask
 *   for), and at most `maxBytesPerSecond` payload bytes per sending session (token bucket, one
 *   second of burst) and `maxTotalBytesPerSecond` over all sessions. Sessions expire after
 *   `sessionTtl` ms without ALLOC or DATA; at most `maxSessions` at once (more: ALLOC_REFUSED).
 * - **Client**: `relayVia(relay, peers)` allocates a session (kept alive by refreshing), routes
 *   `peers` through it and resolves once the relay confirms each of them holds a session too.
 *   `send(peer, ...)` to a routed peer goes through the relay; messages a relay forwards arrive with
 *   `from` = a {@link RelayedPeer} (the original sender's address as the relay reports it,
 *   `relayed: true`, `relay`), and replies to that peer are routed back through the same relay.
 *
 * ## Wire format (tag {@link TAG_RELAY}); `addr` as in nat-wire.ts (7 or 19 bytes)
 * | type | name          | direction | body                                  |
 * |------|---------------|-----------|---------------------------------------|
 * | 1    | ALLOC         | c → r     | nonce u32                             |
 * | 2    | ALLOC_OK      | r → c     | nonce u32                             |
 * | 3    | ALLOC_REFUSED | r → c     | nonce u32, reason u8 (1 not a relay, 2 full) |
 * | 4    | DATA          | c → r     | addr (destination), tag u8, payload   |
 * | 5    | FWD           | r → c     | addr (original sender), tag u8, payload |
 * | 6    | QUERY         | c → r     | nonce u32, addr (peer)                |
 * | 7    | QUERY_REPLY   | r → c     | nonce u32, present u8                 |
 * | 8    | RELEASE       | c → r     | nonce u32                             |
 * Byte layout and test vectors: docs/wire.md#relay-tag-10; every datagram is encoded and decoded by
 * ts/wire/relay.ts (malformed ones, trailing bytes included, are dropped: `dropped_malformed`).
 */
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import { Peer } from '../peer'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { DATA, FWD, QUERY, REFUSED_FULL, REFUSED_NOT_RELAY, decodeRelay, encodeRelay } from '../wire/relay'

/** Tag of relay datagrams. */
export const TAG_RELAY = 10

/** A peer whose message came through a relay. */
export class RelayedPeer extends Peer {
  readonly relayed = true as const
  constructor(
    address: Address,
    /** The relay that forwarded the message. */
    readonly relay: Address,
  ) {
    super(address)
  }

  override toString(): string {
    return `Peer(${this.address.key} via relay ${this.relay.key})`
  }
}

export interface RelayServeOptions {
  /** Client sessions at once (default 64). */
  maxSessions?: number
  /** Payload bytes per second each session may send through the relay (default 1 MiB). */
  maxBytesPerSecond?: number
  /** Payload bytes per second over all sessions (default unlimited). */
  maxTotalBytesPerSecond?: number
  /** Milliseconds a session lives without ALLOC or DATA (default 60000). */
  sessionTtl?: number
}

export interface RelayOptions {
  /** Act as a relay for others with these limits (default: do not relay). */
  serve?: RelayServeOptions
  /** Milliseconds between ALLOC refreshes of a client session (default 20000; keep < the relay's sessionTtl). */
  refreshInterval?: number
  /** Milliseconds between ALLOC / QUERY retries (default 100). */
  retryInterval?: number
  /** Peers routed through relays at most (default 4096). */
  maxRoutes?: number
}

interface ServedSession {
  addr: Address
  expires: number
  tokens: number
  refill: number
}

interface ClientSession {
  relay: Address
  state: 'allocating' | 'ok'
  nonce: number
  refresh: TimerHandle | undefined
  waiters: { resolve: () => void; reject: (e: unknown) => void }[]
}

interface Query {
  resolve: (present: boolean) => void
}

export class Relay extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send', 'relayVia']
  static override emits = ['onMessage']

  readonly name = 'relay'
  override readonly tag = TAG_RELAY

  readonly #serve: Required<RelayServeOptions> | null
  readonly #refreshInterval: number
  readonly #retry: number
  readonly #maxRoutes: number
  #clock: Clock | null = null
  readonly #served = new Map<string, ServedSession>()
  #totalTokens = 0
  #totalRefill = 0
  #sweepTimer: TimerHandle | undefined
  readonly #clients = new Map<string, ClientSession>()
  readonly #routes = new Map<string, Address>()
  readonly #queries = new Map<number, Query>()
  readonly #timers = new Set<TimerHandle>()
  readonly #nonceBuf = new Uint32Array(1)

  constructor(opts: RelayOptions = {}) {
    super()
    this.#serve = opts.serve
      ? {
          maxSessions: opts.serve.maxSessions ?? 64,
          maxBytesPerSecond: opts.serve.maxBytesPerSecond ?? 1 << 20,
          maxTotalBytesPerSecond: opts.serve.maxTotalBytesPerSecond ?? Infinity,
          sessionTtl: opts.serve.sessionTtl ?? 60_000,
        }
      : null
    this.#refreshInterval = opts.refreshInterval ?? 20_000
    this.#retry = opts.retryInterval ?? 100
    this.#maxRoutes = opts.maxRoutes ?? 4096
    for (const [k, v] of Object.entries({ ...this.#serve, refreshInterval: this.#refreshInterval, retryInterval: this.#retry, maxRoutes: this.#maxRoutes })) {
      if (!(v > 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `Relay option ${k} must be > 0, got ${v}`)
    }
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx.clock
    if (this.#serve) {
      this.#totalTokens = this.#serve.maxTotalBytesPerSecond
      this.#totalRefill = ctx.clock.now()
      this.#sweepTimer = ctx.clock.setTimeout(this.#sweep, this.#serve.sessionTtl / 2)
    }
  }

  override async stop(): Promise<void> {
    const clock = this.#clock
    // Tell our relays we are gone (best effort), then drop everything.
    for (const c of this.#clients.values()) {
      if (c.state === 'ok') this.sendControl(c.relay, encodeRelay({ type: 'RELEASE', nonce: this.#nextNonce() }))
      clock?.clearTimeout(c.refresh)
      const err = new DeccomError(ErrorCode.CLOSED, 'The Relay layer stopped')
      for (const w of c.waiters.splice(0)) w.reject(err)
    }
    this.#clock = null
    clock?.clearTimeout(this.#sweepTimer)
    for (const t of this.#timers) clock?.clearTimeout(t)
    this.#timers.clear()
    for (const q of this.#queries.values()) q.resolve(false)
    this.#queries.clear()
    this.#clients.clear()
    this.#served.clear()
    this.#routes.clear()
  }

  /** Sessions this node serves as a relay now. */
  sessions(): Address[] {
    return [...this.#served.values()].map((s) => s.addr)
  }

  /** Peers currently routed through a relay: peer key → relay address. */
  routes(): Record<string, Address> {
    return Object.fromEntries(this.#routes)
  }

  /** Stop routing `peer` through a relay (it is sent to directly again). */
  unroute(peer: AddressLike): void {
    this.#routes.delete(toAddress(peer).key)
  }

  /**
   * Gets a session on `relay` (kept alive until stop), routes `peers` through it and resolves once
   * the relay reports that each of them holds a session too.
   * @throws ERR_DECCOM_RELAY_REFUSED (not a relay, or full), ERR_DECCOM_RELAY_TIMEOUT, ERR_DECCOM_CLOSED
   */
  async relayVia(relay: AddressLike, peers: AddressLike[] = [], opts: { timeout?: number } = {}): Promise<void> {
    const r = toAddress(relay)
    const timeout = opts.timeout ?? 3000
    const ps = peers.map((p) => toAddress(p))
    const deadline = this.#now() + timeout
    await this.#allocate(r, timeout)
    for (const p of ps) {
      if (this.#routes.size >= this.#maxRoutes && !this.#routes.has(p.key)) {
        throw new DeccomError(ErrorCode.PEER_TABLE_FULL, `More than ${this.#maxRoutes} peers routed through relays`)
      }
      this.#routes.set(p.key, r)
    }
    for (const p of ps) {
      for (;;) {
        if (!this.#clock) throw new DeccomError(ErrorCode.CLOSED, 'The Relay layer stopped')
        const left = deadline - this.#now()
        if (left <= 0) {
          throw new DeccomError(ErrorCode.RELAY_TIMEOUT, `Relay ${r.key} does not see ${p.key} holding a session within ${timeout} ms`, {
            details: { relay: r.key, peer: p.key, timeout },
          })
        }
        if (await this.#query(r, p, Math.min(left, this.#retry * 2))) break
        await this.#sleep(Math.min(this.#retry, Math.max(0, deadline - this.#now())))
      }
    }
    this.count('relay_paths')
  }

  send(to: AddressLike, data: Uint8Array, tag = 0): unknown {
    const addr = toAddress(to)
    const relay = this.#routes.get(addr.key)
    if (!relay) return this.lower.send(addr, data, tag)
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    const buf = encodeRelay({ type: 'DATA', addr, tag, payload })
    this.count('relayed_sent')
    this.count('relayed_sent_bytes', data.length)
    return this.lower.send(relay, buf, TAG_RELAY)
  }

  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== TAG_RELAY) return this.upper.onMessage(source, data, tag)
    const from = source instanceof Peer ? source.address : source
    // Checks on the type byte alone come first (as they cost nothing), then the whole datagram.
    const type = data[0]
    if ((type === DATA || type === QUERY) && !this.#serve) return this.count('dropped_not_relay')
    if (type === FWD && this.#clients.get(from.key)?.state !== 'ok') return this.count('dropped_unsolicited')
    const m = decodeRelay(data)
    if (m === null) return this.count('dropped_malformed')
    switch (m.type) {
      case 'ALLOC':
        return this.#onAlloc(from, m.nonce)
      case 'RELEASE':
        return this.#onRelease(from)
      case 'ALLOC_OK':
      case 'ALLOC_REFUSED': {
        const c = this.#clients.get(from.key)
        if (!c || c.nonce !== m.nonce) return this.count('dropped_unsolicited')
        if (m.type === 'ALLOC_OK') return this.#onAllocOk(c)
        this.count('alloc_refused')
        this.#dropClient(c)
        const full = m.type === 'ALLOC_REFUSED' && m.reason === REFUSED_FULL
        const err = new DeccomError(ErrorCode.RELAY_REFUSED, `${from.key} refused to relay for us: ${full ? 'it serves its maximum of sessions' : 'it is not a relay'}`, {
          details: { relay: from.key, reason: full ? 'full' : 'not-a-relay' },
        })
        for (const w of c.waiters.splice(0)) w.reject(err)
        return
      }
      case 'DATA':
        return this.#onData(from, m.addr, m.tag, m.payload)
      case 'FWD': {
        const src = m.addr
        if (!this.#routes.has(src.key)) {
          if (this.#routes.size >= this.#maxRoutes) this.count('dropped_route_full')
          else this.#routes.set(src.key, from) // replies go back the same way
        }
        this.count('relayed_received')
        return this.upper.onMessage(new RelayedPeer(src, from), m.payload, m.tag)
      }
      case 'QUERY': {
        const s = this.#served.get(from.key)
        if (!s) return this.count('dropped_no_session')
        return void this.sendControl(from, encodeRelay({ type: 'QUERY_REPLY', nonce: m.nonce, present: this.#live(m.addr) !== null }))
      }
      case 'QUERY_REPLY': {
        const q = this.#queries.get(m.nonce)
        if (!q) return this.count('dropped_unsolicited')
        this.#queries.delete(m.nonce)
        return q.resolve(m.present)
      }
    }
  }

  // ---------------------------------------------------------------- relay side

  #live(a: Address): ServedSession | null {
    const s = this.#served.get(a.key)
    return s && s.expires > this.#now() ? s : null
  }

  #onAlloc(from: Address, nonce: number): void {
    if (!this.#serve) {
      this.count('alloc_refused_not_relay')
      return void this.sendControl(from, encodeRelay({ type: 'ALLOC_REFUSED', nonce, reason: REFUSED_NOT_RELAY }))
    }
    const now = this.#now()
    let s = this.#live(from)
    if (!s) {
      this.#served.delete(from.key)
      if (this.#served.size >= this.#serve.maxSessions) this.#expire(now)
      if (this.#served.size >= this.#serve.maxSessions) {
        this.count('alloc_refused_full')
        return void this.sendControl(from, encodeRelay({ type: 'ALLOC_REFUSED', nonce, reason: REFUSED_FULL }))
      }
      s = { addr: from, expires: 0, tokens: this.#serve.maxBytesPerSecond, refill: now }
      this.#served.set(from.key, s)
      this.count('sessions_opened')
    }
    s.expires = now + this.#serve.sessionTtl
    this.sendControl(from, encodeRelay({ type: 'ALLOC_OK', nonce }))
  }

  #onRelease(from: Address): void {
    if (this.#served.delete(from.key)) this.count('sessions_released')
  }

  #onData(from: Address, dest: Address, tag: number, payload: Buffer): void {
    if (!this.#serve) return this.count('dropped_not_relay')
    const s = this.#live(from)
    if (!s) return this.count('dropped_no_session')
    if (!this.#live(dest)) return this.count('dropped_no_dest_session')
    const now = this.#now()
    const bytes = payload.length
    const rate = this.#serve.maxBytesPerSecond
    s.tokens = Math.min(rate, s.tokens + ((now - s.refill) * rate) / 1000)
    s.refill = now
    const total = this.#serve.maxTotalBytesPerSecond
    if (total !== Infinity) {
      this.#totalTokens = Math.min(total, this.#totalTokens + ((now - this.#totalRefill) * total) / 1000)
      this.#totalRefill = now
    }
    if (s.tokens < bytes || this.#totalTokens < bytes) {
      this.count('dropped_rate_limited')
      this.count('dropped_rate_limited_bytes', bytes)
      return
    }
    s.tokens -= bytes
    if (total !== Infinity) this.#totalTokens -= bytes
    s.expires = now + this.#serve.sessionTtl
    // FWD has the same length as DATA when both addresses are of one family.
    const out = encodeRelay({ type: 'FWD', addr: from, tag, payload })
    this.count('forwarded')
    this.count('forwarded_bytes', bytes)
    this.sendControl(dest, out)
  }

  #expire(now: number): void {
    for (const [k, s] of this.#served) {
      if (s.expires <= now) {
        this.#served.delete(k)
        this.count('sessions_expired')
      }
    }
  }

  readonly #sweep = (): void => {
    const clock = this.#clock
    if (!clock || !this.#serve) return
    this.#expire(clock.now())
    this.#sweepTimer = clock.setTimeout(this.#sweep, this.#serve.sessionTtl / 2)
  }

  // ---------------------------------------------------------------- client side

  #allocate(r: Address, timeout: number): Promise<void> {
    if (!this.#clock) return Promise.reject(new DeccomError(ErrorCode.CLOSED, 'The Relay layer is not running'))
    let c = this.#clients.get(r.key)
    if (c && c.state === 'ok') return Promise.resolve()
    if (!c) {
      c = { relay: r, state: 'allocating', nonce: this.#nextNonce(), refresh: undefined, waiters: [] }
      this.#clients.set(r.key, c)
      this.#sendAlloc(c)
    }
    const session = c
    return new Promise<void>((resolve, reject) => {
      const timer = this.#after(timeout, () => {
        const i = session.waiters.indexOf(w)
        if (i >= 0) session.waiters.splice(i, 1)
        if (session.state === 'allocating' && session.waiters.length === 0) this.#dropClient(session)
        this.count('alloc_timeouts')
        reject(new DeccomError(ErrorCode.RELAY_TIMEOUT, `No answer from relay ${r.key} within ${timeout} ms`, { details: { relay: r.key, timeout } }))
      })
      const w = {
        resolve: () => {
          this.#cancel(timer)
          resolve()
        },
        reject: (e: unknown) => {
          this.#cancel(timer)
          reject(e)
        },
      }
      session.waiters.push(w)
    })
  }

  #sendAlloc(c: ClientSession): void {
    if (!this.#clock || this.#clients.get(c.relay.key) !== c) return
    this.sendControl(c.relay, encodeRelay({ type: 'ALLOC', nonce: c.nonce }))
    this.count('allocs_sent')
    c.refresh = this.#clock.setTimeout(() => this.#sendAlloc(c), c.state === 'ok' ? this.#refreshInterval : this.#retry)
  }

  #onAllocOk(c: ClientSession): void {
    if (c.state === 'ok') return this.count('alloc_refreshed')
    c.state = 'ok'
    this.count('allocated')
    this.#clock?.clearTimeout(c.refresh)
    c.refresh = this.#clock?.setTimeout(() => this.#sendAlloc(c), this.#refreshInterval)
    for (const w of c.waiters.splice(0)) w.resolve()
  }

  #dropClient(c: ClientSession): void {
    this.#clock?.clearTimeout(c.refresh)
    if (this.#clients.get(c.relay.key) === c) this.#clients.delete(c.relay.key)
    for (const [k, r] of this.#routes) if (r.key === c.relay.key) this.#routes.delete(k)
  }

  #query(r: Address, p: Address, ms: number): Promise<boolean> {
    if (!this.#clock) return Promise.resolve(false)
    const nonce = this.#nextNonce()
    this.sendControl(r, encodeRelay({ type: 'QUERY', nonce, addr: p }))
    this.count('queries_sent')
    return new Promise<boolean>((resolve) => {
      const timer = this.#after(ms, () => {
        this.#queries.delete(nonce)
        resolve(false)
      })
      this.#queries.set(nonce, {
        resolve: (v) => {
          this.#cancel(timer)
          resolve(v)
        },
      })
    })
  }

  // ---------------------------------------------------------------- helpers

  #after(ms: number, fn: () => void): TimerHandle | undefined {
    if (!this.#clock) return undefined
    const t: TimerHandle = this.#clock.setTimeout(() => {
      this.#timers.delete(t)
      fn()
    }, ms)
    this.#timers.add(t)
    return t
  }

  #cancel(t: TimerHandle | undefined): void {
    if (t === undefined) return
    this.#timers.delete(t)
    this.#clock?.clearTimeout(t)
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (!this.#after(ms, resolve)) resolve()
    })
  }

  #now(): number {
    return this.#clock ? this.#clock.now() : 0
  }

  #nextNonce(): number {
    crypto.getRandomValues(this.#nonceBuf)
    return this.#nonceBuf[0]
  }

}
