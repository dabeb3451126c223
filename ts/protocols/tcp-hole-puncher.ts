/**
 * TcpHolePuncher — TCP hole punching by simultaneous open, coordinated over UDP by an introducer
 * (docs/nat.md "TCP hole punching (tag 11)").
 *
 * Stacked above a {@link TcpTransport} and a UDP path that reaches the introducer (usually a
 * HolePuncher, whose rendezvous probes keep the UDP mappings alive):
 *
 * ```ts
 * const tcp = new TcpTransport()
 * const thp = new TcpHolePuncher()
 * const node = await Node.create({ stack: [thp, tcp, new HolePuncher({ rendezvous: [R] })] })
 * const { path, peer } = await thp.connect(targetUdpMappedAddress, R)   // path: 'punched' | 'direct'
 * await tcp.sendStream(peer.id, data)
 * ```
 *
 * Binds `send`, takes `onMessage` (datagrams of other tags pass up untouched) and emits it.
 *
 * ## Why a dedicated punch port
 * Linux refuses to bind a connecting socket to a port that has a LISTENING socket (EADDRINUSE even
 * with SO_REUSEADDR, and node:net in Node 20 has no SO_REUSEPORT), so `connect({ localPort:
 * <TcpTransport port> })` does not work while the transport listens. Each punch session therefore
 * uses a fresh ephemeral "punch port"; its external mapping is taken to be the NAT's public IP as
 * the introducer observed it over UDP + the same port (true for port-preserving NATs such as
 * Linux MASQUERADE without --random-fully). Symmetric NATs are not punchable this way.
 *
 * ## Protocol (tag {@link TAG_TCP_HOLEPUNCH}); `addr` is the nat-wire encoding (7 or 19 bytes)
 * | type | name   | body                                                                  | from → to |
 * |------|--------|-----------------------------------------------------------------------|-----------|
 * | 6    | REQ    | nonce u32, token 16 B, target addr (UDP), punch port u16, listen port u16, id[32] | A → I |
 * | 7    | CHALLENGE | nonce u32 (of the REQ), token 16 B                                 | I → A     |
 * | 2    | OFFER  | nonce u32, A's addr (UDP, as I saw it), A's id[32]                     | I → B     |
 * | 3    | ACCEPT | nonce u32, A's addr (UDP), punch port u16, listen port u16, id[32]    | B → I     |
 * | 4    | GO     | nonce u32, role u8 (1 = initiator), delay u16 ms, peer punch addr, peer listen addr, peer id[32] | I → A, B |
 * | 5    | FAIL   | nonce u32                                                              | I → A     |
 *
 * REQ and ACCEPT are zero-padded to at least 96 bytes (shorter ones are dropped), so every OFFER,
 * GO or FAIL the introducer sends is smaller than the request that caused it (no amplification).
 * A REQ must echo the introducer's return-routability token (ts/protocols/address-token.ts) for the
 * requester's address: without a valid one it gets only a 21-byte CHALLENGE, and no OFFER, GO or
 * connection attempt is made toward an address someone merely claimed. (Type 1, the first REQ
 * without a token, is retired.)
 * Byte layout and test vectors: docs/wire.md#tcp-hole-punching-tag-11; every datagram is encoded and
 * decoded by ts/wire/tcp-hole-punch.ts (malformed ones are dropped: `dropped_malformed`).
 *
 * A repeats REQ every `introRetry` ms until GO, B repeats ACCEPT until GO (UDP may lose them). On
 * GO both sides `connect()` from their punch port to the peer's punch endpoint, again every
 * `punchInterval` ms after a failure (and after `attemptTimeout` ms in SYN_SENT), until one
 * connection is established; it is handed to the TcpTransport with `adoptSocket` (the REQ sender is
 * the "initiator" for duplicate resolution). In parallel each side dials the other's TCP listening
 * endpoint directly (fallback where one side is reachable; `direct: false` disables it), and
 * `connect(..., { tcpAddress })` dials a known address at once. Whatever opens first wins;
 * TcpTransport's duplicate resolution keeps one connection. After `punchTimeout` ms the session
 * fails with ERR_DECCOM_TCP_PUNCH_TIMEOUT. When the TcpTransport's `tcpMapping()` (observations of
 * at least 2 peers) says our NAT rewrites TCP source ports, no simultaneous open is attempted (it
 * cannot be aimed at us; `punch_skipped_ports_rewritten`), only the direct dials. The introducer's OFFER/GO are rate limited
 * (`maxIntroductionsPerSecond`) and its pending table is bounded (`maxPending`).
 */
import net from 'node:net'
import { abortable, raceSignal, throwIfAborted } from '../abort'
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode, abortError } from '../errors'
import { Peer } from '../peer'
import { type LayerLog, silentLog } from '../log'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { ID_LEN, MIN_REQUEST, decodeTcpHolePunch, encodeTcpHolePunch } from '../wire/tcp-hole-punch'
import { AddressTokens, NO_TOKEN } from './address-token'
import { addrLen } from './nat-wire'
import { ReplyLimiter } from './reply-limit'
import type { TcpPunchResult } from './punch-types'
export type { TcpPunchResult } from './punch-types'
import type { TcpPeer, TcpTransport } from './tcp'

/** What this layer uses of the TcpTransport (bound below it, or the `tcp` option). */
type TcpLike = Pick<TcpTransport, 'tcpMapping' | 'adoptSocket' | 'openConnection' | 'closeStream' | 'tcpAddress'> & { peers(): TcpPeer[] }

/** Milliseconds per REQ-token slot (a token lives 30 to 60 s). */
const REQ_TOKEN_SLOT = 30_000

/** Tag of TCP hole-punching datagrams. */
export const TAG_TCP_HOLEPUNCH = 11

/**
 * REQ and ACCEPT are zero-padded to at least {@link MIN_REQUEST} bytes, and the introducer ignores
 * shorter ones: each GO it sends in answer (at most 8 + 2 × 19 + 32 = 78 bytes) is then smaller
 * than the request that caused it, so the introducer cannot be used to amplify traffic toward a
 * spoofed A.
 */
function requestPadding(addr: Address): number {
  return Math.max(0, MIN_REQUEST - (5 + addrLen(addr) + 4 + ID_LEN))
}

/** Options of {@link TcpHolePuncher}. */
export interface TcpHolePuncherOptions {
  /** The TcpTransport to use (default: the one below in the stack). */
  tcp?: TcpTransport
  /** Milliseconds between connect attempts after a failed one (default 50). */
  punchInterval?: number
  /** Milliseconds an attempt may stay unanswered (SYN_SENT) before it is restarted (default 1000). */
  attemptTimeout?: number
  /** Milliseconds from `connect` (or from an OFFER) until the session gives up (default 5000). */
  punchTimeout?: number
  /** Milliseconds between REQ / ACCEPT retries while no GO arrived (default 250). */
  introRetry?: number
  /** Also dial the peer's TCP listening endpoint (fallback where it is reachable; default true). */
  direct?: boolean
  /** Sessions at once (default 64). */
  maxSessions?: number
  /** Introducer: pending introductions kept (default 256). */
  maxPending?: number
  /** Introducer: introductions (OFFERs and GO pairs) per second at most (default 100). */
  maxIntroductionsPerSecond?: number
  /** Introducer: the start delay (ms) put in GO (default 0: start at once). */
  startDelay?: number
  /**
   * Make simultaneous-open attempts even when the TcpTransport's `tcpMapping()` says our NAT
   * rewrites TCP source ports (default false: the endpoint the peer aims at cannot be ours, so only
   * the direct dials run and the session fails at `punchTimeout` unless one of them opens).
   */
  punchWhenPortsRewritten?: boolean
}

interface Session {
  key: string
  nonce: number
  via: Address
  /** The peer's UDP address (A: the target; B: A as the introducer saw it). */
  peerUdp: Address
  initiator: boolean
  state: 'introducing' | 'punching' | 'done'
  punchPort: number
  peerId: Buffer | null
  peerPunch: Address | null
  peerListen: Address | null
  socket: net.Socket | null
  attempts: number
  /** No simultaneous open tried: our NAT rewrites TCP source ports (see punchWhenPortsRewritten). */
  skipped: boolean
  waiters: { resolve: (r: TcpPunchResult) => void; reject: (e: unknown) => void }[]
  /** Aborted when the session fails: stops its direct dials still opening. */
  dials: AbortController
  deadline: TimerHandle | undefined
  retry: TimerHandle | undefined
  attemptTimer: TimerHandle | undefined
  directTried: Set<string>
  /** A: the introducer's return-routability token for our address (zeros until it challenged us). */
  token: Buffer
  /** A: sends the REQ again now (after a CHALLENGE). */
  resend: (() => void) | null
}

interface Pending {
  a: Address
  aPunch: number
  aListen: number
  aId: Buffer
  b: Address
  at: number
}

export class TcpHolePuncher extends Protocol {
  /** The TcpTransport's methods are optional bindings: the `tcp` option may name one instead. */
  static override bindTo = ['send', 'openConnection?', 'closeStream?', 'tcpAddress?', 'tcpMapping?', 'adoptSocket?', 'tcpPeers?']
  static override bindFrom = ['onMessage']
  static override provides = ['tcpPunch']
  static override emits = ['onMessage']

  readonly name = 'tcp-hole-puncher'
  override readonly tag = TAG_TCP_HOLEPUNCH

  readonly #o: Required<Omit<TcpHolePuncherOptions, 'tcp'>>
  #tcp: TcpLike | null
  #clock: Clock | null = null
  #log: LayerLog = silentLog
  /** Answers per source prefix (IPv4 /24, IPv6 /48): a flood of spoofed requests reflects a bounded number. */
  readonly #replies = new ReplyLimiter()
  /** Return-routability tokens a REQ must echo (fresh secret per start). */
  #addrTokens = new AddressTokens(REQ_TOKEN_SLOT)
  #id: Buffer = Buffer.alloc(ID_LEN)
  #listeners: ((r: TcpPunchResult) => void)[] = []
  readonly #sessions = new Map<string, Session>()
  readonly #pending = new Map<string, Pending>()
  #tokens = 0
  #refill = 0
  readonly #nonceBuf = new Uint32Array(1)

  constructor(opts: TcpHolePuncherOptions = {}) {
    super()
    this.#tcp = opts.tcp ?? null
    this.#o = {
      punchInterval: opts.punchInterval ?? 50,
      attemptTimeout: opts.attemptTimeout ?? 1000,
      punchTimeout: opts.punchTimeout ?? 5000,
      introRetry: opts.introRetry ?? 250,
      direct: opts.direct ?? true,
      maxSessions: opts.maxSessions ?? 64,
      maxPending: opts.maxPending ?? 256,
      maxIntroductionsPerSecond: opts.maxIntroductionsPerSecond ?? 100,
      startDelay: opts.startDelay ?? 0,
      punchWhenPortsRewritten: opts.punchWhenPortsRewritten ?? false,
    }
    for (const [k, v] of Object.entries(this.#o)) {
      if (typeof v === 'number' && !(v >= 0 && Number.isFinite(v)) || (typeof v === 'number' && k !== 'startDelay' && v === 0)) {
        throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `TcpHolePuncher option ${k} must be > 0, got ${v}`)
      }
    }
    if (this.#o.startDelay > 0xffff) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'TcpHolePuncher startDelay must be <= 65535')
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx.clock
    this.#log = ctx.log
    this.#addrTokens = new AddressTokens(REQ_TOKEN_SLOT)
    this.#tokens = this.#o.maxIntroductionsPerSecond
    this.#refill = ctx.clock.now()
    const id = (ctx as { identity?: { id?: Buffer } }).identity?.id
    if (id && id.length === ID_LEN) this.#id = Buffer.from(id)
    if (!this.#tcp && ['openConnection', 'closeStream', 'tcpAddress', 'tcpMapping', 'adoptSocket', 'tcpPeers'].every((n) => this.hasLower(n))) {
      const lower = this.lower
      this.#tcp = {
        tcpMapping: () => lower.tcpMapping(),
        adoptSocket: (socket, initiator) => lower.adoptSocket(socket, initiator),
        openConnection: (...a) => lower.openConnection(...a),
        closeStream: (...a) => lower.closeStream(...a),
        tcpAddress: () => lower.tcpAddress(),
        peers: () => lower.tcpPeers(),
      }
    }
    if (!this.#tcp) throw new DeccomError(ErrorCode.STACK_INVALID, 'TcpHolePuncher needs a TcpTransport below it in the stack (or the `tcp` option)')
  }

  override async stop(): Promise<void> {
    const clock = this.#clock
    this.#clock = null
    const err = new DeccomError(ErrorCode.CLOSED, 'The TcpHolePuncher layer stopped')
    for (const s of [...this.#sessions.values()]) this.#finish(s, err, clock)
    this.#sessions.clear()
    this.#pending.clear()
  }

  /** Called for every connection this layer opened (also those the peer asked for: B's side). */
  onConnection(listener: (r: TcpPunchResult) => void): this {
    this.#listeners.push(listener)
    return this
  }

  /** Alias of {@link connect} for layers above (`bindTo: ['tcpPunch']`). */
  tcpPunch(target: AddressLike, via: AddressLike, opts?: { tcpAddress?: AddressLike; signal?: AbortSignal }): Promise<TcpPunchResult> {
    return this.connect(target, via, opts)
  }

  /**
   * Opens a TCP connection to the node at UDP address `target` (its mapped address as the
   * introducer `via` knows it): asks `via` to coordinate a simultaneous open, and dials
   * `opts.tcpAddress` (and the TCP listening endpoint the introducer reports) directly in parallel.
   * Resolves with the first connection that opens. It starts without references (see
   * TcpTransport `openConnection` to keep it). Aborting `opts.signal` rejects with
   * ERR_DECCOM_ABORTED and ends the session: its REQ retries and timers stop, its punch socket and
   * the direct dials still opening are closed.
   * @throws ERR_DECCOM_TCP_PUNCH_TIMEOUT, ERR_DECCOM_INTRODUCTION_FAILED, ERR_DECCOM_SEND_QUEUE_FULL, ERR_DECCOM_CLOSED, ERR_DECCOM_ABORTED
   */
  connect(target: AddressLike, via: AddressLike, opts: { tcpAddress?: AddressLike; signal?: AbortSignal } = {}): Promise<TcpPunchResult> {
    const { signal } = opts
    let peerUdp: Address
    let viaAddr: Address
    let direct: Address | null
    try {
      throwIfAborted(signal)
      peerUdp = toAddress(target)
      viaAddr = toAddress(via)
      direct = opts.tcpAddress === undefined ? null : toAddress(opts.tcpAddress)
      if (!this.#clock || !this.#tcp) throw new DeccomError(ErrorCode.CLOSED, 'The TcpHolePuncher layer is not running')
      if (this.#sessions.size >= this.#o.maxSessions) throw new DeccomError(ErrorCode.SEND_QUEUE_FULL, `More than ${this.#o.maxSessions} TCP punch sessions at once`)
    } catch (e) {
      return Promise.reject(e)
    }
    return raceSignal(allocPort(this.#localHost()), signal, () => this.count('connects_aborted')).then((port) => {
      if (!this.#clock) throw new DeccomError(ErrorCode.CLOSED, 'The TcpHolePuncher layer stopped')
      const nonce = this.#nextNonce()
      const s = this.#newSession(`${viaAddr.key}/${nonce}`, nonce, viaAddr, peerUdp, true, port)
      let w: Session['waiters'][number]
      const p = abortable<TcpPunchResult>(
        signal,
        (resolve, reject) => s.waiters.push((w = { resolve, reject })),
        () => {
          this.count('connects_aborted')
          const i = s.waiters.indexOf(w)
          if (i >= 0) s.waiters.splice(i, 1)
          if (s.waiters.length === 0) this.#finish(s, abortError(signal!))
        },
      )
      this.count('connects')
      const sendReq = (): void => {
        if (s.state !== 'introducing' || !this.#clock) return
        this.#clock.clearTimeout(s.retry)
        const req = encodeTcpHolePunch({ type: 'REQ', nonce, token: s.token, addr: peerUdp, punchPort: port, listenPort: this.#listenPort(), id: this.#id, padding: requestPadding(peerUdp) })
        this.sendControl(viaAddr, req, 'requests_sent')
        s.retry = this.#clock.setTimeout(sendReq, this.#o.introRetry)
      }
      s.resend = sendReq
      sendReq()
      if (direct) this.#tryDirect(s, direct)
      return p
    })
  }

  override stats(): Record<string, number> {
    return { ...this.counters, sessions: this.#sessions.size, pending_introductions: this.#pending.size }
  }

  // ---------------------------------------------------------------- receiving

  /** A datagram from the layer below: handles this layer's tag, passes the rest up. */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== TAG_TCP_HOLEPUNCH) return this.upper.onMessage(source, data, tag)
    const from = source instanceof Peer ? source.address : source
    if (source instanceof Peer && (source as { relayed?: boolean }).relayed === true) return this.count('dropped_relayed_control')
    if (!this.#clock) return
    const m = decodeTcpHolePunch(data)
    if (m === null) return this.count('dropped_malformed')
    switch (m.type) {
      case 'REQ':
        return this.#onReq(from, m.nonce, m.token, m.addr, m.punchPort, m.listenPort, Buffer.from(m.id))
      case 'CHALLENGE': {
        // The introducer asks us to prove our address: echo its token at once (once per token).
        const s = this.#sessions.get(`${from.key}/${m.nonce}`)
        if (!s || !s.initiator || s.state !== 'introducing' || s.token.equals(m.token)) return this.count('dropped_unsolicited')
        this.count('challenges_received')
        s.token = m.token
        return s.resend?.()
      }
      case 'OFFER':
        return this.#onOffer(from, m.nonce, m.addr, Buffer.from(m.id))
      case 'ACCEPT':
        return this.#onAccept(from, m.nonce, m.addr, m.punchPort, m.listenPort, Buffer.from(m.id))
      case 'GO':
        return this.#onGo(from, m.nonce, m.initiator, m.delay, m.punch, m.listen, Buffer.from(m.id))
      case 'FAIL': {
        const s = this.#sessions.get(`${from.key}/${m.nonce}`)
        if (!s || !s.initiator || s.state !== 'introducing') return this.count('dropped_unsolicited')
        this.count('introductions_refused')
        return this.#finish(s, new DeccomError(ErrorCode.INTRODUCTION_FAILED, `${from.key} refused to coordinate a TCP hole punch to ${s.peerUdp.key}`, { details: { via: from.key, target: s.peerUdp.key } }))
      }
    }
  }

  // ---------------------------------------------------------------- introducer

  #onReq(a: Address, nonce: number, token: Buffer, b: Address, aPunch: number, aListen: number, aId: Buffer): void {
    const now = this.#clock!.now()
    if (!this.#addrTokens.valid(a, token, now)) {
      if (!token.equals(NO_TOKEN)) this.count('dropped_bad_token')
      if (!this.#replies.allow(a, now)) return this.count('dropped_reply_rate')
      return void this.sendControl(a, encodeTcpHolePunch({ type: 'CHALLENGE', nonce, token: this.#addrTokens.token(a, now) }), 'challenges_sent')
    }
    const key = `${nonce}|${b.key}`
    this.#sweepPending()
    let p = this.#pending.get(key)
    if (p && p.a.key !== a.key) return this.count('dropped_unsolicited')
    if (!p) {
      if (b.key === a.key || this.#pending.size >= this.#o.maxPending || !this.#token()) {
        this.count('introductions_refused')
        if (!this.#replies.allow(a, this.#clock!.now())) return this.count('dropped_reply_rate')
        this.sendControl(a, encodeTcpHolePunch({ type: 'FAIL', nonce }), 'fail_sent')
        return
      }
      p = { a, aPunch, aListen, aId, b, at: this.#clock!.now() }
      this.#pending.set(key, p)
    } else if (!this.#token()) return this.count('dropped_rate_limited')
    this.sendControl(b, encodeTcpHolePunch({ type: 'OFFER', nonce, addr: a, id: aId }), 'offers_sent')
  }

  #onAccept(b: Address, nonce: number, a: Address, bPunch: number, bListen: number, bId: Buffer): void {
    const p = this.#pending.get(`${nonce}|${b.key}`)
    if (!p || p.a.key !== a.key) return this.count('dropped_unsolicited')
    if (!this.#token()) return this.count('dropped_rate_limited')
    this.count('introductions')
    this.#sendGo(p.a, nonce, true, toAddress(b.host, bPunch), bListen ? toAddress(b.host, bListen) : null, bId)
    this.#sendGo(b, nonce, false, toAddress(a.host, p.aPunch), p.aListen ? toAddress(a.host, p.aListen) : null, p.aId)
  }

  #sendGo(to: Address, nonce: number, initiator: boolean, punch: Address, listen: Address | null, id: Buffer): void {
    this.sendControl(to, encodeTcpHolePunch({ type: 'GO', nonce, initiator, delay: this.#o.startDelay, punch, listen, id }), 'go_sent')
  }

  #sweepPending(): void {
    const now = this.#clock!.now()
    for (const [k, p] of this.#pending) {
      if (now - p.at <= this.#o.punchTimeout) break
      this.#pending.delete(k)
    }
  }

  #token(): boolean {
    const now = this.#clock!.now()
    const rate = this.#o.maxIntroductionsPerSecond
    this.#tokens = Math.min(rate, this.#tokens + ((now - this.#refill) * rate) / 1000)
    this.#refill = now
    if (this.#tokens < 1) return false
    this.#tokens -= 1
    return true
  }

  // ---------------------------------------------------------------- B's side: OFFER

  #onOffer(via: Address, nonce: number, a: Address, aId: Buffer): void {
    const key = `${via.key}/${nonce}`
    const existing = this.#sessions.get(key)
    if (existing) {
      if (existing.state === 'introducing') this.#sendAccept(existing)
      return
    }
    if (this.#sessions.size >= this.#o.maxSessions) return this.count('dropped_session_limit')
    this.count('offers_received')
    allocPort(this.#localHost()).then(
      (port) => {
        if (!this.#clock || this.#sessions.has(key)) return
        const s = this.#newSession(key, nonce, via, a, false, port)
        s.peerId = aId
        const again = (): void => {
          if (s.state !== 'introducing' || !this.#clock) return
          this.#sendAccept(s)
          s.retry = this.#clock.setTimeout(again, this.#o.introRetry)
        }
        again()
      },
      () => this.count('port_errors'),
    )
  }

  #sendAccept(s: Session): void {
    const accept = encodeTcpHolePunch({ type: 'ACCEPT', nonce: s.nonce, addr: s.peerUdp, punchPort: s.punchPort, listenPort: this.#listenPort(), id: this.#id, padding: requestPadding(s.peerUdp) })
    this.sendControl(s.via, accept, 'accepts_sent')
  }

  // ---------------------------------------------------------------- both sides: GO, punching

  #onGo(via: Address, nonce: number, initiator: boolean, delay: number, punch: Address, listen: Address | null, id: Buffer): void {
    const s = this.#sessions.get(`${via.key}/${nonce}`)
    if (!s || s.initiator !== initiator) return this.count('dropped_unsolicited')
    if (s.state !== 'introducing') return // a repeated GO
    this.count('go_received')
    this.#clock!.clearTimeout(s.retry)
    s.retry = undefined
    s.state = 'punching'
    s.peerPunch = punch
    s.peerListen = listen
    s.peerId = id
    if (listen && this.#o.direct) this.#tryDirect(s, listen)
    // The peer aims at our UDP-observed IP + our punch port: useless when peers agree that our NAT
    // rewrites TCP source ports (our SYNs leave from another port, and its SYNs hit no mapping).
    if (!this.#o.punchWhenPortsRewritten && this.#tcp!.tcpMapping()?.portPreserving === false) {
      s.skipped = true
      this.count('punch_skipped_ports_rewritten')
      return
    }
    s.retry = this.#clock!.setTimeout(() => this.#attempt(s), delay)
  }

  #attempt(s: Session): void {
    s.retry = undefined
    if (s.state !== 'punching' || !this.#clock || !s.peerPunch) return
    // Another path (e.g. the peer dialled our listening port) may have opened already.
    if (s.peerId) {
      const open = this.#tcp!.peers().find((p) => p.id.equals(s.peerId!))
      if (open) return this.#succeed(s, 'direct', open)
    }
    s.attempts++
    this.count('punch_attempts')
    const host = this.#localHost()
    const sock = net.connect({
      host: s.peerPunch.host,
      port: s.peerPunch.port,
      localPort: s.punchPort,
      ...(host === '0.0.0.0' || host === '::' ? {} : { localAddress: host }),
      allowHalfOpen: true,
    } as net.NetConnectOpts)
    s.socket = sock
    const retry = (): void => {
      if (s.socket !== sock) return
      s.socket = null
      this.#clock?.clearTimeout(s.attemptTimer)
      s.attemptTimer = undefined
      sock.destroy()
      if (s.state === 'punching' && this.#clock) s.retry = this.#clock.setTimeout(() => this.#attempt(s), this.#o.punchInterval)
    }
    sock.once('error', () => {
      this.count('punch_attempts_failed')
      retry()
    })
    sock.once('connect', () => {
      if (s.socket !== sock || s.state !== 'punching') return sock.destroy()
      this.#clock?.clearTimeout(s.attemptTimer)
      s.attemptTimer = undefined
      s.socket = null
      sock.removeAllListeners('error')
      this.count('punched')
      this.#tcp!.adoptSocket(sock, s.initiator).then(
        (peer) => this.#succeed(s, 'punched', peer),
        (e) => {
          this.count('adopt_failed')
          if (s.state === 'punching' && this.#clock) s.retry = this.#clock.setTimeout(() => this.#attempt(s), this.#o.punchInterval)
          else if (s.state !== 'done') this.#finish(s, e)
        },
      )
    })
    s.attemptTimer = this.#clock.setTimeout(() => {
      s.attemptTimer = undefined
      this.count('punch_attempts_timed_out')
      retry()
    }, this.#o.attemptTimeout)
  }

  #tryDirect(s: Session, addr: Address): void {
    if (s.directTried.has(addr.key)) return
    s.directTried.add(addr.key)
    this.count('direct_attempts')
    const tcp = this.#tcp!
    tcp.openConnection(addr, { signal: s.dials.signal }).then(
      (peer) => {
        tcp.closeStream(peer.id)
        if (s.state !== 'done') this.#succeed(s, 'direct', peer)
      },
      () => {
        if (!s.dials.signal.aborted) this.count('direct_failed')
      },
    )
  }

  #succeed(s: Session, path: 'punched' | 'direct', peer: TcpPeer): void {
    if (s.state === 'done') return
    this.count(path === 'punched' ? 'connected_punched' : 'connected_direct')
    const r: TcpPunchResult = { path, peer }
    this.#log('TCP punch to %s succeeded after %d attempts: %s connection to %s', s.peerUdp.key, s.attempts, path, peer.id.toString('hex', 0, 4))
    const waiters = s.waiters
    s.waiters = []
    this.#finish(s, null)
    for (const w of waiters) w.resolve(r)
    for (const l of this.#listeners) {
      try {
        l(r)
      } catch (e) {
        this.count('handler_errors')
        queueMicrotask(() => {
          throw e
        })
      }
    }
  }

  #finish(s: Session, err: unknown, clock: Clock | null = this.#clock): void {
    if (s.state === 'done' && s.waiters.length === 0) return
    s.state = 'done'
    clock?.clearTimeout(s.deadline)
    clock?.clearTimeout(s.retry)
    clock?.clearTimeout(s.attemptTimer)
    s.deadline = s.retry = s.attemptTimer = undefined
    if (s.socket) {
      s.socket.destroy()
      s.socket = null
    }
    this.#sessions.delete(s.key)
    const waiters = s.waiters
    s.waiters = []
    if (err) {
      this.#log('TCP punch to %s failed after %d attempts: %s', s.peerUdp.key, s.attempts, (err as Error)?.message ?? err)
      s.dials.abort(err)
      for (const w of waiters) w.reject(err)
    }
  }

  #newSession(key: string, nonce: number, via: Address, peerUdp: Address, initiator: boolean, port: number): Session {
    const s: Session = {
      key,
      nonce,
      via,
      peerUdp,
      initiator,
      state: 'introducing',
      punchPort: port,
      peerId: null,
      peerPunch: null,
      peerListen: null,
      socket: null,
      attempts: 0,
      skipped: false,
      waiters: [],
      dials: new AbortController(),
      deadline: undefined,
      retry: undefined,
      token: NO_TOKEN,
      resend: null,
      attemptTimer: undefined,
      directTried: new Set(),
    }
    this.#sessions.set(key, s)
    this.#log('TCP punch to %s started (%s, introducer %s)', peerUdp.key, initiator ? 'initiator' : 'target', via.key)
    s.deadline = this.#clock!.setTimeout(() => {
      s.deadline = undefined
      if (s.state === 'done') return
      this.count('timeouts')
      this.#finish(
        s,
        new DeccomError(
          ErrorCode.TCP_PUNCH_TIMEOUT,
          `No TCP connection to ${s.peerUdp.key} opened within ${this.#o.punchTimeout} ms (${
            s.state === 'introducing'
              ? `no introduction from ${via.key}`
              : s.skipped
                ? 'no simultaneous open tried: peers agree that our NAT rewrites TCP source ports, so no punch can be aimed at us; use the relay'
                : `${s.attempts} simultaneous-open attempts to ${s.peerPunch?.key}`
          })`,
          { details: { target: s.peerUdp.key, via: via.key, state: s.state, attempts: s.attempts, portsRewritten: s.skipped } },
        ),
      )
    }, this.#o.punchTimeout)
    return s
  }

  #localHost(): string {
    return this.#tcp!.tcpAddress().host
  }

  #listenPort(): number {
    try {
      return this.#tcp!.tcpAddress().port
    } catch {
      return 0
    }
  }

  #nextNonce(): number {
    crypto.getRandomValues(this.#nonceBuf)
    return this.#nonceBuf[0]
  }
}

/** A free TCP port on `host` (bound, then released for the punch socket to bind with SO_REUSEADDR). */
function allocPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen({ host, port: 0 }, () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
  })
}
