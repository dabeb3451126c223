/**
 * Relay — traffic through a relay peer when no direct path exists (two symmetric NATs; see
 * docs/nat.md). Binds `send`, takes `onMessage`; provides `send` and emits `onMessage`, so the
 * application keeps the same send/message API.
 *
 * - **Relay node**: `new Relay({ serve: { maxSessions, maxBytesPerSecond } })` forwards between its
 *   clients. A client gets a session with ALLOCATE, but only for an address it can receive at: an
 *   ALLOCATE without a valid token is answered by a CHALLENGE of the same size carrying one (a
 *   stateless HMAC of the client's address and the time slot under the relay's secret), and only an
 *   ALLOCATE echoing it opens (or refreshes) a session. The relay forwards a DATA datagram only when
 *   both its sender and its destination hold a session (nobody is sent relayed traffic they did not
 *   ask for), within `maxBytesPerSecond` payload bytes per sending session, `maxBytesPerSecondTo`
 *   per destination (token buckets, one second of burst) and `maxTotalBytesPerSecond` over all.
 *   Sessions expire after `sessionTtl` ms without ALLOCATE or DATA. At most `maxSessionsPerHost`
 *   per host (an IPv4 address, an IPv6 /64: more evict that host's idlest) and `maxSessions` in all;
 *   when full, a newcomer evicts the idlest session of the host holding the most sessions if that
 *   host holds at least 2 more than the newcomer's, else it gets ALLOC_REFUSED.
 * - **Client**: `relayVia(relay, peers)` allocates a session (kept alive by refreshing), routes
 *   `peers` through it and resolves once the relay confirms each of them holds a session too.
 *   `send(peer, ...)` to a routed peer goes through the relay; messages a relay forwards arrive with
 *   `from` = a {@link RelayedPeer} (the original sender's address as the relay reports it,
 *   `relayed: true`, `relay`), and replies to that peer are routed back through the same relay.
 *   FWD is accepted only from the relay the client chose for that sender (`relayVia`), while it
 *   routes the sender there: a relay can neither inject other senders nor reroute a direct path.
 *
 * ## Wire format (tag {@link TAG_RELAY}); `addr` as in nat-wire.ts (7 or 19 bytes)
 * | type | name          | direction | body                                  |
 * |------|---------------|-----------|---------------------------------------|
 * | 1    | (retired)     |           | the token-less ALLOC of version 1: unknown type |
 * | 2    | ALLOC_OK      | r → c     | nonce u32                             |
 * | 3    | ALLOC_REFUSED | r → c     | nonce u32, reason u8 (1 not a relay, 2 full) |
 * | 4    | DATA          | c → r     | addr (destination), tag u8, payload   |
 * | 5    | FWD           | r → c     | addr (original sender), tag u8, payload |
 * | 6    | QUERY         | c → r     | nonce u32, addr (peer)                |
 * | 7    | QUERY_REPLY   | r → c     | nonce u32, present u8                 |
 * | 8    | RELEASE       | c → r     | nonce u32 (of the session's ALLOCATE) |
 * | 9    | ALLOCATE      | c → r     | nonce u32, token 16 B (zeros: none yet) |
 * | 10   | CHALLENGE     | r → c     | nonce u32 (of the ALLOCATE), token 16 B |
 * Byte layout and test vectors: docs/wire.md#relay-tag-10; every datagram is encoded and decoded by
 * ts/wire/relay.ts (malformed ones, trailing bytes included, are dropped: `dropped_malformed`).
 */
import { abortable, throwIfAborted } from '../abort'
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import { Peer } from '../peer'
import { type LayerLog, silentLog } from '../log'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { CHALLENGE, DATA, FWD, QUERY, REFUSED_FULL, REFUSED_NOT_RELAY, decodeRelay, encodeRelay } from '../wire/relay'
import { AddressTokens, NO_TOKEN } from './address-token'

/** Tag of relay datagrams. */
export const TAG_RELAY = 10


/** A peer whose message came through a relay. */
export class RelayedPeer extends Peer {
  /** Always true: tells a RelayedPeer from a directly reached {@link Peer}. */
  readonly relayed = true as const
  constructor(
    address: Address,
    /** The relay that forwarded the message. */
    readonly relay: Address,
  ) {
    super(address)
  }

  /** `Peer(host:port via relay host:port)`. */
  override toString(): string {
    return `Peer(${this.address.key} via relay ${this.relay.key})`
  }
}

/** What a {@link Relay} serving others allows (`RelayOptions.serve`). */
export interface RelayServeOptions {
  /** Client sessions at once (default 64). */
  maxSessions?: number
  /** Sessions per host: one IPv4 address or one IPv6 /64 (default 8; more evict that host's idlest session). */
  maxSessionsPerHost?: number
  /** Payload bytes per second each session may send through the relay (default 1 MiB). */
  maxBytesPerSecond?: number
  /** Payload bytes per second the relay forwards to each session (default: `maxBytesPerSecond`). */
  maxBytesPerSecondTo?: number
  /** Payload bytes per second over all sessions (default unlimited). */
  maxTotalBytesPerSecond?: number
  /** Milliseconds a session lives without ALLOCATE or DATA (default 60000). */
  sessionTtl?: number
  /** Milliseconds per token time slot; a token is accepted in its slot and the next (default 30000). */
  tokenSlot?: number
}

/** Options of {@link Relay}. */
export interface RelayOptions {
  /** Act as a relay for others with these limits (default: do not relay). */
  serve?: RelayServeOptions
  /** Milliseconds between ALLOCATE refreshes of a client session (default 20000; keep < the relay's sessionTtl). */
  refreshInterval?: number
  /** Milliseconds between ALLOCATE / QUERY retries (default 100). */
  retryInterval?: number
  /** Peers routed through relays at most (default 4096). */
  maxRoutes?: number
}

interface ServedSession {
  addr: Address
  /** The host group it counts against (IPv4 address, IPv6 /64). */
  host: string
  /** Nonce of its last ALLOCATE (a RELEASE must carry it). */
  nonce: number
  expires: number
  /** Last ALLOCATE or DATA from the client (eviction takes the idlest). */
  active: number
  tokens: number
  refill: number
  /** Bucket of bytes forwarded to it. */
  inTokens: number
  inRefill: number
}

interface ClientSession {
  relay: Address
  state: 'allocating' | 'ok'
  nonce: number
  /** The relay's last CHALLENGE token (zeros before the first). */
  token: Buffer
  refresh: TimerHandle | undefined
  waiters: { resolve: () => void; reject: (e: unknown) => void }[]
}

interface Query {
  relay: Address
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
  #log: LayerLog = silentLog
  readonly #served = new Map<string, ServedSession>()
  /** Sessions per host group. */
  readonly #hosts = new Map<string, number>()
  /** Return-routability tokens for ALLOCATE (fresh secret per start: a restart invalidates every token). */
  #tokens: AddressTokens | null = null
  #totalTokens = 0
  #totalRefill = 0
  #sweepTimer: TimerHandle | undefined
  readonly #clients = new Map<string, ClientSession>()
  /** Peer key → the relay this node chose for it (used for sending once that session is granted). */
  readonly #routes = new Map<string, Address>()
  readonly #queries = new Map<number, Query>()
  readonly #timers = new Set<TimerHandle>()
  readonly #nonceBuf = new Uint32Array(1)

  constructor(opts: RelayOptions = {}) {
    super()
    const o = opts.serve
    this.#serve = o
      ? {
          maxSessions: o.maxSessions ?? 64,
          maxSessionsPerHost: o.maxSessionsPerHost ?? 8,
          maxBytesPerSecond: o.maxBytesPerSecond ?? 1 << 20,
          maxBytesPerSecondTo: o.maxBytesPerSecondTo ?? o.maxBytesPerSecond ?? 1 << 20,
          maxTotalBytesPerSecond: o.maxTotalBytesPerSecond ?? Infinity,
          sessionTtl: o.sessionTtl ?? 60_000,
          tokenSlot: o.tokenSlot ?? 30_000,
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
    this.#log = ctx.log
    this.#log(this.#serve ? 'serving as a relay' : 'client only (not serving as a relay)')
    if (this.#serve) {
      this.#tokens = new AddressTokens(this.#serve.tokenSlot)
      this.#totalTokens = this.#serve.maxTotalBytesPerSecond
      this.#totalRefill = ctx.clock.now()
      this.#sweepTimer = ctx.clock.setTimeout(this.#sweep, this.#serve.sessionTtl / 2)
    }
  }

  override async stop(): Promise<void> {
    const clock = this.#clock
    // Tell our relays we are gone (best effort), then drop everything.
    for (const c of this.#clients.values()) {
      if (c.state === 'ok') this.sendControl(c.relay, encodeRelay({ type: 'RELEASE', nonce: c.nonce }))
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
    this.#hosts.clear()
    this.#routes.clear()
  }

  /** Sessions this node serves as a relay now. */
  sessions(): Address[] {
    return [...this.#served.values()].map((s) => s.addr)
  }

  /** Peers routed through a relay (chosen with `relayVia`): peer key → relay address. */
  routes(): Record<string, Address> {
    return Object.fromEntries(this.#routes)
  }

  /** Stop routing `peer` through a relay (it is sent to directly again; its relay's FWDs are dropped). */
  unroute(peer: AddressLike): void {
    this.#routes.delete(toAddress(peer).key)
  }

  /**
   * Gets a session on `relay` (kept alive until stop), routes `peers` through it and resolves once
   * the relay reports that each of them holds a session too. Only these peers' messages are
   * accepted from that relay. Aborting `opts.signal` rejects with ERR_DECCOM_ABORTED at once: the
   * routes this call added are removed, and a session still being allocated that nobody else waits
   * for stops (no more ALLOCATE or QUERY is sent for it). A signal aborted already changes nothing.
   * @throws ERR_DECCOM_RELAY_REFUSED (not a relay, or full), ERR_DECCOM_RELAY_TIMEOUT, ERR_DECCOM_CLOSED,
   *   ERR_DECCOM_PEER_TABLE_FULL (more than `maxRoutes` routed peers), ERR_DECCOM_ABORTED
   */
  async relayVia(relay: AddressLike, peers: AddressLike[] = [], opts: { timeout?: number; signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = opts
    throwIfAborted(signal)
    const r = toAddress(relay)
    const timeout = opts.timeout ?? 3000
    const ps = peers.map((p) => toAddress(p))
    const deadline = this.#now() + timeout
    const added: Address[] = []
    for (const p of ps) {
      if (this.#routes.get(p.key)?.key === r.key) continue
      if (this.#routes.size >= this.#maxRoutes && !this.#routes.has(p.key)) {
        for (const a of added) this.#routes.delete(a.key)
        throw new DeccomError(ErrorCode.PEER_TABLE_FULL, `More than ${this.#maxRoutes} peers routed through relays`)
      }
      // Chosen before the session exists, so that a FWD arriving with the grant is accepted;
      // `send` uses the route only once the session is granted.
      this.#routes.set(p.key, r)
      added.push(p)
    }
    try {
      await this.#allocate(r, timeout, signal)
    } catch (e) {
      for (const a of added) if (this.#routes.get(a.key) === r) this.#routes.delete(a.key)
      throw e
    }
    try {
      for (const p of ps) {
        for (;;) {
          if (!this.#clock) throw new DeccomError(ErrorCode.CLOSED, 'The Relay layer stopped')
          const left = deadline - this.#now()
          if (left <= 0) {
            throw new DeccomError(ErrorCode.RELAY_TIMEOUT, `Relay ${r.key} does not see ${p.key} holding a session within ${timeout} ms`, {
              details: { relay: r.key, peer: p.key, timeout },
            })
          }
          if (await this.#query(r, p, Math.min(left, this.#retry * 2), signal)) break
          await this.#sleep(Math.min(this.#retry, Math.max(0, deadline - this.#now())), signal)
        }
      }
    } catch (e) {
      // Aborted: undo this call's routes (the session itself stays, it may serve other peers).
      if (signal?.aborted) for (const a of added) if (this.#routes.get(a.key) === r) this.#routes.delete(a.key)
      throw e
    }
    this.count('relay_paths')
  }

  /** Sends a datagram down: through the relay when `to` is reached through one, else directly. */
  send(to: AddressLike, data: Uint8Array, tag = 0): unknown {
    const addr = toAddress(to)
    const relay = this.#routes.get(addr.key)
    if (!relay || this.#clients.get(relay.key)?.state !== 'ok') return this.lower.send(addr, data, tag)
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    const buf = encodeRelay({ type: 'DATA', addr, tag, payload })
    this.count('relayed_sent')
    this.count('relayed_sent_bytes', data.length)
    return this.lower.send(relay, buf, TAG_RELAY)
  }

  /** A datagram from the layer below: relay traffic is handled or unwrapped, the rest passed up. */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== TAG_RELAY) return this.upper.onMessage(source, data, tag)
    const from = source instanceof Peer ? source.address : source
    // Checks on the type byte alone come first (as they cost nothing), then the whole datagram.
    const type = data[0]
    if ((type === DATA || type === QUERY) && !this.#serve) return this.count('dropped_not_relay')
    if (type === FWD && this.#clients.get(from.key)?.state !== 'ok') return this.count('dropped_unsolicited')
    if (type === CHALLENGE && !this.#clients.has(from.key)) return this.count('dropped_unsolicited')
    const m = decodeRelay(data)
    if (m === null) return this.count('dropped_malformed')
    switch (m.type) {
      case 'ALLOCATE':
        return this.#onAllocate(from, m.nonce, m.token)
      case 'CHALLENGE': {
        const c = this.#clients.get(from.key)
        if (!c || c.nonce !== m.nonce) return this.count('dropped_unsolicited')
        return this.#onChallenge(c, m.token)
      }
      case 'RELEASE':
        return this.#onRelease(from, m.nonce)
      case 'ALLOC_OK':
      case 'ALLOC_REFUSED': {
        const c = this.#clients.get(from.key)
        if (!c || c.nonce !== m.nonce) return this.count('dropped_unsolicited')
        if (m.type === 'ALLOC_OK') return this.#onAllocOk(c)
        this.count('alloc_refused')
        this.#dropClient(c)
        const full = m.type === 'ALLOC_REFUSED' && m.reason === REFUSED_FULL
        this.#log('relay %s refused our allocation: %s', from.key, full ? 'full' : 'not a relay')
        const err = new DeccomError(ErrorCode.RELAY_REFUSED, `${from.key} refused to relay for us: ${full ? 'it serves its maximum of sessions' : 'it is not a relay'}`, {
          details: { relay: from.key, reason: full ? 'full' : 'not-a-relay' },
        })
        for (const w of c.waiters.splice(0)) w.reject(err)
        return
      }
      case 'DATA':
        return this.#onData(from, m.addr, m.tag, m.payload)
      case 'FWD': {
        // Only from the relay we chose for this sender: anything else would let a relay inject
        // messages from, or reroute our path to, a peer we talk to directly or through another relay.
        const src = m.addr
        if (this.#routes.get(src.key)?.key !== from.key) return this.count('dropped_unrouted')
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
        if (!q || q.relay.key !== from.key) return this.count('dropped_unsolicited')
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
      this.#remove(from.key)
      if (!this.#admit(from, now)) {
        this.count('alloc_refused_full')
        this.#log('allocation for %s refused: full', from.key)
        return void this.sendControl(from, encodeRelay({ type: 'ALLOC_REFUSED', nonce, reason: REFUSED_FULL }))
      }
      const rate = this.#serve.maxBytesPerSecond
      s = { addr: from, host: hostGroup(from), nonce, expires: 0, active: now, tokens: rate, refill: now, inTokens: this.#serve.maxBytesPerSecondTo, inRefill: now }
      this.#served.set(from.key, s)
      this.#hosts.set(s.host, (this.#hosts.get(s.host) ?? 0) + 1)
      this.count('sessions_opened')
      this.#log('allocation for %s opened (%d sessions)', from.key, this.#served.size)
    }
    s.expires = now + this.#serve.sessionTtl
    s.active = now
    s.nonce = nonce
    this.sendControl(from, encodeRelay({ type: 'ALLOC_OK', nonce }))
  }

  /**
   * An ALLOCATE. Without a valid token (the address is not proven to receive what we send) it only
   * gets a CHALLENGE, exactly as long as the ALLOCATE: no session, no state, no amplification.
   */
  #onAllocate(from: Address, nonce: number, token: Buffer): void {
    if (!this.#serve) return this.#onAlloc(from, nonce) // ALLOC_REFUSED(1): 6 bytes for 21
    const tokens = this.#tokens!
    const now = this.#now()
    if (!tokens.valid(from, token, now)) {
      if (!token.equals(NO_TOKEN)) this.count('dropped_bad_token')
      this.count('challenges_sent')
      return void this.sendControl(from, encodeRelay({ type: 'CHALLENGE', nonce, token: tokens.token(from, now) }))
    }
    this.#onAlloc(from, nonce)
  }

  /**
   * Makes room for a session of `from` (a validated address); false when the table is full and
   * fairness allows no eviction.
   */
  #admit(from: Address, now: number): boolean {
    const serve = this.#serve!
    const host = hostGroup(from)
    const mine = this.#hosts.get(host) ?? 0
    if (mine >= serve.maxSessionsPerHost) {
      // The host competes only with itself (a restarted client, more clients behind one NAT).
      this.#evictIdlest(host)
      this.count('sessions_evicted_host')
      return true
    }
    if (this.#served.size >= serve.maxSessions) this.#expire(now)
    if (this.#served.size < serve.maxSessions) return true
    let top = ''
    let topN = 0
    for (const [h, n] of this.#hosts) {
      if (n > topN) {
        top = h
        topN = n
      }
    }
    // Evict only towards an even share: the biggest host must hold 2 more than ours (so that a
    // newcomer cannot take a slot from a host that holds no more than it will).
    if (topN < mine + 2) return false
    this.#evictIdlest(top)
    this.count('sessions_evicted_fair')
    return true
  }

  #evictIdlest(host: string): void {
    let idlest: ServedSession | null = null
    for (const s of this.#served.values()) if (s.host === host && (idlest === null || s.active < idlest.active)) idlest = s
    if (idlest) this.#remove(idlest.addr.key)
  }

  #remove(key: string): boolean {
    const s = this.#served.get(key)
    if (!s) return false
    this.#served.delete(key)
    const n = (this.#hosts.get(s.host) ?? 1) - 1
    if (n > 0) this.#hosts.set(s.host, n)
    else this.#hosts.delete(s.host)
    return true
  }

  #onRelease(from: Address, nonce: number): void {
    // The nonce of the session's ALLOCATE: a spoofed RELEASE (without it) cannot end a session.
    const s = this.#served.get(from.key)
    if (!s || s.nonce !== nonce) return this.count('dropped_unsolicited')
    this.#remove(from.key)
    this.count('sessions_released')
  }

  #onData(from: Address, dest: Address, tag: number, payload: Buffer): void {
    if (!this.#serve) return this.count('dropped_not_relay')
    const s = this.#live(from)
    if (!s) return this.count('dropped_no_session')
    const d = this.#live(dest)
    if (!d) return this.count('dropped_no_dest_session')
    const now = this.#now()
    const bytes = payload.length
    const rate = this.#serve.maxBytesPerSecond
    s.tokens = Math.min(rate, s.tokens + ((now - s.refill) * rate) / 1000)
    s.refill = now
    const rateTo = this.#serve.maxBytesPerSecondTo
    d.inTokens = Math.min(rateTo, d.inTokens + ((now - d.inRefill) * rateTo) / 1000)
    d.inRefill = now
    const total = this.#serve.maxTotalBytesPerSecond
    if (total !== Infinity) {
      this.#totalTokens = Math.min(total, this.#totalTokens + ((now - this.#totalRefill) * total) / 1000)
      this.#totalRefill = now
    }
    if (s.tokens < bytes || d.inTokens < bytes || this.#totalTokens < bytes) {
      if (d.inTokens < bytes) this.count('dropped_rate_limited_to')
      this.count('dropped_rate_limited')
      this.count('dropped_rate_limited_bytes', bytes)
      return
    }
    s.tokens -= bytes
    d.inTokens -= bytes
    if (total !== Infinity) this.#totalTokens -= bytes
    s.expires = now + this.#serve.sessionTtl
    s.active = now
    // FWD has the same length as DATA when both addresses are of one family.
    const out = encodeRelay({ type: 'FWD', addr: from, tag, payload })
    this.count('forwarded')
    this.count('forwarded_bytes', bytes)
    this.sendControl(dest, out)
  }

  #expire(now: number): void {
    for (const [k, s] of this.#served) {
      if (s.expires <= now) {
        this.#remove(k)
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

  #allocate(r: Address, timeout: number, signal?: AbortSignal): Promise<void> {
    if (!this.#clock) return Promise.reject(new DeccomError(ErrorCode.CLOSED, 'The Relay layer is not running'))
    let c = this.#clients.get(r.key)
    if (c && c.state === 'ok') return Promise.resolve()
    if (!c) {
      c = { relay: r, state: 'allocating', nonce: this.#nextNonce(), token: NO_TOKEN, refresh: undefined, waiters: [] }
      this.#clients.set(r.key, c)
      this.#sendAlloc(c)
    }
    const session = c
    let w: ClientSession['waiters'][number]
    let timer: TimerHandle | undefined
    /** Takes this call's waiter off the session; stops a session still allocating that nobody waits for. */
    const leave = (): void => {
      this.#cancel(timer)
      const i = session.waiters.indexOf(w)
      if (i >= 0) session.waiters.splice(i, 1)
      if (session.state === 'allocating' && session.waiters.length === 0) this.#dropClient(session)
    }
    return abortable<void>(signal, (resolve, reject) => {
      timer = this.#after(timeout, () => {
        leave()
        this.count('alloc_timeouts')
        this.#log('allocation at relay %s timed out after %d ms', r.key, timeout)
        reject(new DeccomError(ErrorCode.RELAY_TIMEOUT, `No answer from relay ${r.key} within ${timeout} ms`, { details: { relay: r.key, timeout } }))
      })
      w = {
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
    }, () => {
      this.count('relay_via_aborted')
      leave()
    })
  }

  #sendAlloc(c: ClientSession): void {
    if (!this.#clock || this.#clients.get(c.relay.key) !== c) return
    this.sendControl(c.relay, encodeRelay({ type: 'ALLOCATE', nonce: c.nonce, token: c.token }))
    this.count('allocs_sent')
    c.refresh = this.#clock.setTimeout(() => this.#sendAlloc(c), c.state === 'ok' ? this.#refreshInterval : this.#retry)
  }

  /** The relay asks us to prove our address: answer at once with its token (once per new token). */
  #onChallenge(c: ClientSession, token: Buffer): void {
    if (token.equals(c.token)) return this.count('dropped_stale_challenge')
    c.token = token
    this.count('challenges_answered')
    this.sendControl(c.relay, encodeRelay({ type: 'ALLOCATE', nonce: c.nonce, token }))
    this.count('allocs_sent')
  }

  #onAllocOk(c: ClientSession): void {
    if (c.state === 'ok') return this.count('alloc_refreshed')
    c.state = 'ok'
    this.count('allocated')
    this.#log('allocated at relay %s', c.relay.key)
    this.#clock?.clearTimeout(c.refresh)
    c.refresh = this.#clock?.setTimeout(() => this.#sendAlloc(c), this.#refreshInterval)
    for (const w of c.waiters.splice(0)) w.resolve()
  }

  #dropClient(c: ClientSession): void {
    this.#clock?.clearTimeout(c.refresh)
    if (this.#clients.get(c.relay.key) === c) this.#clients.delete(c.relay.key)
    for (const [k, r] of this.#routes) if (r.key === c.relay.key) this.#routes.delete(k)
  }

  #query(r: Address, p: Address, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (!this.#clock) return Promise.resolve(false)
    throwIfAborted(signal)
    const nonce = this.#nextNonce()
    this.sendControl(r, encodeRelay({ type: 'QUERY', nonce, addr: p }))
    this.count('queries_sent')
    let timer: TimerHandle | undefined
    return abortable<boolean>(
      signal,
      (resolve) => {
        timer = this.#after(ms, () => {
          this.#queries.delete(nonce)
          resolve(false)
        })
        this.#queries.set(nonce, {
          relay: r,
          resolve: (v) => {
            this.#cancel(timer)
            resolve(v)
          },
        })
      },
      () => {
        this.count('relay_via_aborted')
        this.#cancel(timer)
        this.#queries.delete(nonce)
      },
    )
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

  #sleep(ms: number, signal?: AbortSignal): Promise<void> {
    let timer: TimerHandle | undefined
    return abortable<void>(
      signal,
      (resolve) => {
        timer = this.#after(ms, resolve)
        if (!timer) resolve()
      },
      () => {
        this.count('relay_via_aborted')
        this.#cancel(timer)
      },
    )
  }

  #now(): number {
    return this.#clock ? this.#clock.now() : 0
  }

  #nextNonce(): number {
    crypto.getRandomValues(this.#nonceBuf)
    return this.#nonceBuf[0]
  }
}

/** The host group a session counts against: an IPv4 address (also IPv4-mapped IPv6), else the IPv6 /64. */
function hostGroup(a: Address): string {
  const r = a.raw
  const v4 = a.family === 4 || (r.readUInt32BE(0) === 0 && r.readUInt32BE(4) === 0 && r.readUInt32BE(8) === 0xffff)
  return v4 ? r.toString('hex', 12, 16) : `6${r.toString('hex', 0, 8)}`
}
