/**
 * The connections of a Node: dials (`node.connect`), accepts (`'connection'`), the HELLO exchange,
 * the limits and the shared receive-memory budget. Frames arrive here from the Node's application
 * layer (reliable messages of tag 12) and from a TcpTransport's `'frame'` events.
 *
 * Dialling, in order: find the peer (a node id goes through the stack's discovery layer); choose
 * the carrier (TCP when asked, or when the stack has a TcpTransport but no ReliableUdp; otherwise
 * reliable messages through the stack); on the UDP path authenticate the peer's id (Noise) and,
 * when that or the HELLO gets no answer within `directTimeout` and the stack has a HolePuncher,
 * punch (or relay) through an introducer; then exchange HELLOs.
 */
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import { raceSignal } from '../abort'
import type { TcpPeer } from '../protocols/tcp/connection'
import { type Clock, type TimerHandle, realClock } from '../clock'
import { abortError, DeccomError, ErrorCode } from '../errors'
import { Peer } from '../peer'
import { DiscoveryErrorCode } from '../protocols/kademlia/state'
import { decodeMux, encodeMux, type Hello, TAG_CONN } from '../wire/mux'
import { type Budget, type Carrier, CLOSE_REFUSED, CLOSE_SHUTDOWN, Connection, type ConnectionLimits, type ConnectionPath } from './connection'

/** Limits and timeouts of a node's connections (`NodeOptions.connections`). */
export interface ConnectionOptions {
  /** Connections open at once; a HELLO beyond is refused (default 1024). */
  maxConnections?: number
  /** Streams the peer may have open at once on one connection (default 1024). */
  maxStreams?: number
  /** Unread bytes a peer may send on one stream (default 4 MiB). */
  streamWindow?: number
  /** Unread bytes a peer may send on one connection, all streams together (default 16 MiB). */
  connectionWindow?: number
  /** Unread bytes all peers together may send this node (default 256 MiB): connections share it. */
  maxBufferedBytes?: number
  /** ms a HELLO may wait for its answer on one path (default 5000). */
  helloTimeout?: number
  /** ms the direct path gets before a HolePuncher in the stack punches (default 1500). */
  directTimeout?: number
}

/** Options of `node.connect()`. */
export interface ConnectOptions {
  /** Aborting it rejects the connect with ERR_DECCOM_ABORTED and stops its attempts. */
  signal?: AbortSignal
  /** `'udp'`: reliable messages through the stack; `'tcp'`: the stack's TcpTransport; default: udp when the stack has ReliableUdp. */
  transport?: 'udp' | 'tcp'
  /** The introducer a hole punch goes through (default: the node that told discovery about the peer, else the HolePuncher's first rendezvous server). */
  via?: AddressLike
}

/** Where `connect` may go: a node id (32 bytes or 64 hex digits), a Peer, or an address. */
export type ConnectTarget = Peer | Buffer | AddressLike

/** What the manager needs from the Node and its stack. */
export interface ConnectionHost {
  clock: Clock
  /** Sends a reliable message of tag 12 through the stack; undefined when the stack has no reliable layer. */
  sendMessage: ((to: Address, frame: Buffer) => Promise<void>) | undefined
  /** `onCandidate`: see FindPeerOptions.onCandidate (layers other than Kademlia ignore it). */
  findPeer(id: Buffer, signal?: AbortSignal, onCandidate?: (peer: Peer) => void): Promise<Peer>
  /** Noise (encrypt or sign) in the stack: binds `peer.address` to `peer.id`. */
  authenticate: ((peer: Peer, signal?: AbortSignal) => Promise<Peer>) | undefined
  /** The TCP layer, when the stack has one. */
  tcp: TcpLike | undefined
  /** The HolePuncher, when the stack has one. */
  punch: ((target: Address, via: AddressLike | undefined, signal?: AbortSignal) => Promise<{ path: string; address: Address; punch?: 'simultaneous' | 'birthday' }>) | undefined
  accept(conn: Connection): void
  count(name: string, n?: number): void
}

/** The parts of TcpTransport the connections use. */
export interface TcpLike {
  openConnection(to: unknown): Promise<TcpPeerLike>
  sendStream(to: unknown, data: Uint8Array, tag?: number): Promise<void>
  closeStream(to: unknown): boolean
}
/** A TCP peer as the TcpTransport names it. */
export type TcpPeerLike = TcpPeer

interface Dial {
  key: string
  nonce: Buffer
  remote: Peer
  path: ConnectionPath
  carrier: Carrier
  started: number
  granted: number
  resolve: (c: Connection) => void
  reject: (e: Error) => void
  promise: Promise<Connection>
  timer: TimerHandle | undefined
  /** connect() calls waiting on this dial; when the last one aborts, the dial stops. */
  waiters: number
}

/** An early dial of `connect(id)` (see `Connections#earlyDial`). */
interface EarlyDial {
  /** Discovery's candidates for the target, as they are learned: the first is dialled. */
  onCandidate: (peer: Peer) => void
  /** Resolves with the early dial's connection once its handshake proved the target's id. */
  won: Promise<Connection>
  /** The early dial's connection if it proved the id, null when it failed or never started. */
  settled: () => Promise<Connection | null>
  /** Discovery settled on `chosen` (null: it failed): a connection elsewhere is closed. */
  discard: (chosen: Address | null) => void
}

const ZERO8 = Buffer.alloc(8)
/** The smallest initial connection credit; a connection that cannot get it is refused. */
const MIN_GRANT = 64 * 1024
/** Wait before `connect(id)` asks discovery a second time (see `Connections#find`). */
const FIND_RETRY_MS = 100
/** Frame bytes a TCP connection may have queued for its socket at once. */
const TCP_IN_FLIGHT = 4 * 1024 * 1024
/** Frame bytes a connection over reliable messages may have undelivered at once (the sender's memory, whatever credit the peer grants). */
const UDP_IN_FLIGHT = 16 * 1024 * 1024

export class Connections implements Budget {
  readonly #host: ConnectionHost
  readonly #limits: ConnectionLimits
  readonly #maxConnections: number
  readonly #maxBuffered: number
  readonly #helloTimeout: number
  readonly #directTimeout: number
  readonly #conns = new Map<string, Connection>()
  readonly #dials = new Map<string, Dial>()
  /** The HELLO each accepted connection answered with, to answer a repeated HELLO again. */
  readonly #answers = new WeakMap<Connection, { carrier: Carrier; frame: Buffer }>()
  #used = 0
  #starved = false
  #closing = false

  constructor(host: ConnectionHost, opts: ConnectionOptions = {}) {
    this.#host = host
    this.#limits = {
      maxStreams: int(opts.maxStreams, 1024, 1, 'maxStreams'),
      streamWindow: int(opts.streamWindow, 4 << 20, 1024, 'streamWindow'),
      connectionWindow: int(opts.connectionWindow, 16 << 20, MIN_GRANT, 'connectionWindow'),
    }
    this.#maxConnections = int(opts.maxConnections, 1024, 1, 'maxConnections')
    this.#maxBuffered = int(opts.maxBufferedBytes, 256 << 20, MIN_GRANT, 'maxBufferedBytes')
    this.#helloTimeout = int(opts.helloTimeout, 5000, 1, 'helloTimeout')
    this.#directTimeout = int(opts.directTimeout, 1500, 1, 'directTimeout')
  }

  /** Open connections. */
  list(): Connection[] {
    return [...this.#conns.values()]
  }

  /** Bytes of receive credit granted to peers and not yet read. */
  get buffered(): number {
    return this.#used
  }

  // ---- Budget -----------------------------------------------------------------------------

  /**
   * More credit for an open connection, as far as the budget allows after keeping
   * {@link MIN_GRANT} for every connection that may still open (up to `maxConnections`): open
   * connections never use up the room a new one needs.
   */
  take(n: number): number {
    const g = Math.max(0, Math.min(n, this.#maxBuffered - this.#used - this.#reserve(0)))
    this.#used += g
    if (g < n) this.#starved = true
    return g
  }

  /**
   * What connections not yet open may still need: MIN_GRANT for each beyond the open ones, the
   * dials and `extra` — at most half the budget, so that open connections can always grow their
   * credit again as their data is read (a budget below 2 × maxConnections × MIN_GRANT keeps room
   * for fewer new connections).
   */
  #reserve(extra: number): number {
    return Math.min(Math.floor(this.#maxBuffered / 2), MIN_GRANT * Math.max(0, this.#maxConnections - this.#conns.size - this.#dials.size - extra))
  }

  /**
   * The initial credit of a new connection (dialled or accepted): a whole connection window when
   * the budget has it beyond the reserve of the others, else at least MIN_GRANT from the reserve;
   * 0 (refuse) when not even that is left. A flood of HELLOs therefore cannot take the memory
   * every later connection needs: up to `maxConnections` always fit.
   */
  #takeInitial(): number {
    const avail = this.#maxBuffered - this.#used
    const g = Math.min(this.#limits.connectionWindow, avail, Math.max(MIN_GRANT, avail - this.#reserve(1)))
    if (g < MIN_GRANT) return 0
    this.#used += g
    return g
  }

  give(n: number): void {
    this.#used -= n
    if (this.#starved && n > 0) {
      this.#starved = false
      for (const c of this.#conns.values()) c.budgetFreed()
    }
  }

  // ---- dialling ---------------------------------------------------------------------------

  async connect(target: ConnectTarget, opts: ConnectOptions = {}): Promise<Connection> {
    const signal = opts.signal
    if (signal?.aborted) throw abortError(signal)
    const host = this.#host
    // One nonce for every path tried: a HELLO that got through late is the same connection.
    const ours = nonce()
    const id = targetId(target)
    const early = id !== null && host.authenticate !== undefined && host.sendMessage !== undefined && opts.transport !== 'tcp' ? this.#earlyDial(id, signal, ours) : null
    let peer: Peer
    if (early === null) {
      peer = await this.#resolve(target, signal)
    } else {
      // The lookup runs under its own signal: an early dial that authenticated the id ends it.
      const lookup = new AbortController()
      const onAbort = (): void => lookup.abort(signal!.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      try {
        const found = this.#resolve(target, lookup.signal, early.onCandidate)
        found.catch(() => {})
        const first = await Promise.race([found, early.won])
        if (first instanceof Connection) {
          host.count('early_dials_won')
          lookup.abort(new DeccomError(ErrorCode.ABORTED, 'The peer was reached before the lookup ended'))
          return first
        }
        peer = first
      } catch (e) {
        // The lookup failed (or was aborted): an early dial that proves the id still counts.
        const c = signal?.aborted ? null : await early.settled()
        if (signal?.aborted) throw abortError(signal)
        if (c !== null) {
          host.count('early_dials_won')
          return c
        }
        early.discard(null)
        throw e
      } finally {
        signal?.removeEventListener('abort', onAbort)
      }
      early.discard(peer.address)
    }
    const useTcp = opts.transport === 'tcp' || (opts.transport === undefined && host.sendMessage === undefined && host.tcp !== undefined)
    if (useTcp) return this.#connectTcp(peer, signal)
    const send = host.sendMessage
    if (send === undefined) {
      throw new DeccomError(ErrorCode.STACK_INVALID, 'Connections need a reliable layer: add ReliableUdp to the stack (or a TcpTransport and connect with { transport: "tcp" })')
    }
    const existing = this.#conns.get(udpKey(peer.address))
    if (existing && (peer.id === null || existing.remote.id?.equals(peer.id))) return existing
    try {
      return await this.#direct(peer, 'direct', signal, host.punch ? this.#directTimeout : this.#helloTimeout, ours)
    } catch (e) {
      if (!host.punch || isAbort(e) || (e as DeccomError).code === ErrorCode.PEER_IDENTITY_MISMATCH) throw e
      host.count('punch_attempts')
      // The HolePuncher routes datagrams to the address it punched (or relays them): keep sending there.
      const target = peer.external ?? peer.address
      const r = await host.punch(target, opts.via, signal)
      peer = new Peer(target, peer.id, peer.publicIdentity, peer.external, false, peer.tcpPort)
      const c = await this.#direct(peer, r.path === 'relayed' ? 'relayed' : 'punched', signal, this.#helloTimeout, ours)
      if (c.path === 'punched' && c.punch === null) c.punch = r.punch ?? 'simultaneous'
      return c
    }
  }

  /** A node id goes through discovery; an address becomes a Peer without an id. */
  async #resolve(target: ConnectTarget, signal: AbortSignal | undefined, onCandidate?: (peer: Peer) => void): Promise<Peer> {
    if (target instanceof Peer) return target
    const id = targetId(target)
    if (id !== null) return this.#find(id, signal, onCandidate)
    return new Peer(toAddress(target as AddressLike))
  }

  /**
   * Discovery of `id`, asked once more after {@link FIND_RETRY_MS} when the first lookup found
   * nothing: a node that joined a moment ago enters its neighbours' tables only once they have
   * verified its address, a round trip after its first request, and a lookup in between misses it.
   */
  async #find(id: Buffer, signal: AbortSignal | undefined, onCandidate?: (peer: Peer) => void): Promise<Peer> {
    const host = this.#host
    try {
      return await host.findPeer(id, signal, onCandidate)
    } catch (e) {
      if ((e as DeccomError).code !== DiscoveryErrorCode.PEER_NOT_FOUND) throw e
      host.count('find_retries')
      let timer: TimerHandle | undefined
      await raceSignal(
        new Promise<void>((resolve) => {
          timer = host.clock.setTimeout(resolve, FIND_RETRY_MS)
        }),
        signal,
        () => host.clock.clearTimeout(timer),
      )
      return host.findPeer(id, signal, onCandidate)
    }
  }

  /**
   * Dialling while discovery verifies: the first address discovery learns for the target is
   * authenticated (Noise: a handshake there must prove the id) and sent our HELLO at once, while
   * the lookup still asks the target to confirm it. Nothing is sent on the connection before the
   * handshake proved the id, so this trusts the claim no more than a dial after the lookup would;
   * and a connection whose handshake proved the id is the target's, whatever the lookup still
   * has to say: `won` resolves with it (and `connect` ends the lookup). When discovery settles on
   * another address first, or fails, a connection this dial made is closed.
   */
  #earlyDial(id: Buffer, signal: AbortSignal | undefined, ours: Buffer): EarlyDial {
    let key: string | null = null
    let dial: Promise<Connection> | null = null
    let win!: (c: Connection) => void
    const won = new Promise<Connection>((resolve) => (win = resolve))
    const proves = (c: Connection): boolean => c.remote.id !== null && c.remote.id.equals(id)
    return {
      won,
      onCandidate: (p) => {
        if (key !== null || p.id === null || !p.id.equals(id) || this.#closing) return
        key = udpKey(p.address)
        // Only a connection this dial creates is its own to close.
        if (this.#conns.has(key) || this.#dials.has(key)) return
        this.#host.count('early_dials')
        dial = this.#direct(p, 'direct', signal, this.#host.punch ? this.#directTimeout : this.#helloTimeout, ours)
        dial.then((c) => proves(c) && win(c), () => {})
      },
      settled: () => (dial === null ? Promise.resolve(null) : dial.then((c) => (proves(c) ? c : null), () => null)),
      discard: (chosen) => {
        if (dial === null || (chosen !== null && udpKey(chosen) === key)) return
        this.#host.count('early_dials_discarded')
        dial.then((c) => void c.close().catch(() => {}), () => {})
      },
    }
  }

  /** Authenticate (when the stack can), then HELLO over reliable messages to `peer.address`. */
  async #direct(peer: Peer, path: ConnectionPath, signal: AbortSignal | undefined, timeout: number, ours = nonce()): Promise<Connection> {
    const host = this.#host
    let remote = peer
    if (host.authenticate && peer.id !== null) {
      const ctl = new AbortController()
      const timer = host.clock.setTimeout(() => ctl.abort(new DeccomError(ErrorCode.CONNECT_FAILED, `No handshake with ${peer} within ${timeout} ms`)), timeout)
      const onAbort = (): void => ctl.abort(signal!.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      try {
        remote = await host.authenticate(peer, ctl.signal)
      } catch (e) {
        if (signal?.aborted) throw abortError(signal)
        if (ctl.signal.aborted) throw ctl.signal.reason
        throw e
      } finally {
        host.clock.clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
    }
    const addr = peer.address
    const send = host.sendMessage!
    const carrier: Carrier = { send: (f) => send(addr, f), maxInFlight: UDP_IN_FLIGHT }
    return this.#hello(udpKey(addr), remote, path, carrier, signal, timeout, ours)
  }

  async #connectTcp(peer: Peer, signal: AbortSignal | undefined): Promise<Connection> {
    const tcp = this.#host.tcp
    if (!tcp) throw new DeccomError(ErrorCode.STACK_INVALID, 'connect({ transport: "tcp" }) needs a TcpTransport in the stack')
    let to: unknown = peer.id
    if (peer.tcpPort !== null) to = toAddress(peer.address.host, peer.tcpPort)
    else if (peer.id === null) to = peer.address
    const tp = await raceSignal(tcp.openConnection(to), signal, () => {})
    if (peer.id !== null && !tp.id.equals(peer.id)) {
      tcp.closeStream(tp)
      throw new DeccomError(ErrorCode.PEER_IDENTITY_MISMATCH, `The node at ${tp.remoteAddress.key} is not ${peer}`, { details: { expected: peer.id.toString('hex'), got: tp.idHex } })
    }
    const key = `tcp:${tp.idHex}`
    const existing = this.#conns.get(key)
    if (existing) {
      tcp.closeStream(tp)
      return existing
    }
    const remote = new Peer(tp.udpAddress ?? tp.remoteAddress, tp.id, null, null, tp.authenticated, tp.tcpAddress?.port ?? null)
    try {
      return await this.#hello(key, remote, 'tcp', this.#tcpCarrier(tp), signal, this.#helloTimeout)
    } catch (e) {
      tcp.closeStream(tp)
      throw e
    }
  }

  #tcpCarrier(tp: TcpPeerLike): Carrier {
    const tcp = this.#host.tcp!
    return { send: (f) => tcp.sendStream(tp, f, TAG_CONN), maxInFlight: TCP_IN_FLIGHT }
  }

  /** Sends our HELLO and waits for the peer's. Concurrent dials to one key share it. */
  #hello(key: string, remote: Peer, path: ConnectionPath, carrier: Carrier, signal: AbortSignal | undefined, timeout: number, ours = nonce()): Promise<Connection> {
    const existing = this.#conns.get(key)
    if (existing) return Promise.resolve(existing)
    let dial = this.#dials.get(key)
    if (!dial) {
      if (this.#closing) return Promise.reject(new DeccomError(ErrorCode.CLOSED, 'The node is closing'))
      const granted = this.#takeInitial()
      if (granted === 0) {
        return Promise.reject(new DeccomError(ErrorCode.CONNECTION_REFUSED, 'No receive memory left for another connection (maxBufferedBytes)', { details: { reason: 'busy' } }))
      }
      let resolve!: (c: Connection) => void
      let reject!: (e: Error) => void
      const promise = new Promise<Connection>((res, rej) => {
        resolve = res
        reject = rej
      })
      const d: Dial = { key, nonce: ours, remote, path, carrier, started: this.#host.clock.now(), granted, resolve, reject, promise, timer: undefined, waiters: 0 }
      dial = d
      this.#dials.set(key, d)
      d.timer = this.#host.clock.setTimeout(() => this.#dialFailed(d, new DeccomError(ErrorCode.CONNECT_FAILED, `${remote} did not answer HELLO within ${timeout} ms`, { details: { path } })), timeout)
      this.#host.count('dials')
      carrier.send(this.#helloFrame(d.nonce, ZERO8, granted)).catch((e: Error) => this.#dialFailed(d, e))
    }
    const d = dial
    d.waiters++
    return raceSignal(d.promise, signal, () => {
      if (--d.waiters === 0) this.#dialFailed(d, abortError(signal!))
    }).finally(() => {
      if (!signal?.aborted) d.waiters--
    })
  }

  #dialFailed(d: Dial, e: Error): void {
    if (this.#dials.get(d.key) !== d) return
    this.#dials.delete(d.key)
    this.#host.clock.clearTimeout(d.timer)
    this.give(d.granted)
    this.#host.count('dials_failed')
    d.reject(e)
  }

  #helloFrame(ours: Buffer, echo: Buffer, granted: number): Buffer {
    return encodeMux({ type: 'HELLO', nonce: ours, echo, maxStreams: this.#limits.maxStreams, maxData: granted, streamWindow: this.#limits.streamWindow })
  }

  // ---- receiving --------------------------------------------------------------------------

  /** A reliable message of tag 12 from `from` (a Peer when Noise authenticated it). */
  onMessage(from: Address | Peer, data: Buffer): void {
    const addr = from instanceof Peer ? from.address : from
    const send = this.#host.sendMessage!
    const key = udpKey(addr)
    this.#onFrame(key, data, from instanceof Peer ? from : new Peer(addr), () => ({ path: 'direct', carrier: { send: (f) => send(addr, f), maxInFlight: UDP_IN_FLIGHT } }))
  }

  /** A TCP frame of tag 12. */
  onTcpFrame(tp: TcpPeerLike, data: Buffer): void {
    const remote = new Peer(tp.udpAddress ?? tp.remoteAddress, tp.id, null, null, tp.authenticated, tp.tcpAddress?.port ?? null)
    this.#onFrame(`tcp:${tp.idHex}`, data, remote, () => ({
      path: 'tcp',
      carrier: this.#tcpCarrier(tp),
      // The peer's connection: keep it open while the Connection lives (only once accepted: a
      // refused HELLO must not pin a TCP connection).
      keep: () => void this.#host.tcp?.openConnection(tp).catch(() => {}),
    }))
  }

  /** The TCP connection to `tp` closed: its Connection fails. */
  onTcpClosed(tp: TcpPeerLike): void {
    this.#conns.get(`tcp:${tp.idHex}`)?.fail(new DeccomError(ErrorCode.CONNECTION_CLOSED, 'The TCP connection closed', { details: { by: 'transport' } }))
  }

  #onFrame(key: string, data: Buffer, from: Peer, inbound: () => { path: ConnectionPath; carrier: Carrier; keep?: () => void }): void {
    const f = decodeMux(data)
    if (f === null) return this.#host.count('dropped_malformed')
    const conn = this.#conns.get(key)
    if (f.type !== 'HELLO') {
      if (!conn) return this.#host.count('dropped_no_connection')
      if (!conn.onFrame(f)) this.#host.count('protocol_violations')
      return
    }
    if (conn) {
      if (f.nonce.equals(conn.remoteNonce)) {
        // The peer is still dialling (our answer did not reach it, e.g. before a punch): answer again, same size.
        const answer = this.#answers.get(conn)
        if (answer && f.echo.equals(ZERO8)) {
          this.#host.count('hello_answered_again')
          answer.carrier.send(answer.frame).catch(() => {})
        } else this.#host.count('dropped_duplicate_hello')
        return
      }
      // A HELLO answering a dial (non-zero echo) with another nonce is stale (an old dial's
      // answer): it must not end the connection. Only a fresh dial (zero echo) is a restart.
      if (!f.echo.equals(ZERO8)) return this.#host.count('dropped_stale_hello')
      // A new instance of the peer (it restarted): the old connection is gone.
      conn.fail(new DeccomError(ErrorCode.CONNECTION_CLOSED, 'The peer restarted', { details: { by: 'remote', reason: 'restart' } }))
    }
    const dial = this.#dials.get(key)
    if (dial) {
      if (!f.echo.equals(ZERO8) && !f.echo.equals(dial.nonce)) return this.#host.count('dropped_stale_hello')
      this.#dials.delete(key)
      this.#host.clock.clearTimeout(dial.timer)
      // Dialled by address: the HELLO's sender names the peer (authenticated when Noise runs below).
      const remote = dial.remote.id === null && from.id !== null ? from : dial.remote
      const c = this.#open(key, remote, dial.path, this.#host.clock.now() - dial.started, dial.carrier, dial.nonce, f, dial.granted)
      dial.resolve(c)
      return
    }
    // Not dialling: the peer dials us. An echo of a nonce we do not know is a stale answer.
    if (!f.echo.equals(ZERO8)) return this.#host.count('dropped_stale_hello')
    const { path, carrier, keep } = inbound()
    const remote = from
    if (this.#closing || this.#conns.size >= this.#maxConnections) {
      this.#host.count('refused')
      carrier.send(encodeMux({ type: 'CLOSE', code: CLOSE_REFUSED })).catch(() => {})
      return
    }
    const granted = this.#takeInitial()
    if (granted === 0) {
      this.#host.count('refused')
      carrier.send(encodeMux({ type: 'CLOSE', code: CLOSE_REFUSED })).catch(() => {})
      return
    }
    keep?.()
    const ours = nonce()
    const answer = this.#helloFrame(ours, f.nonce, granted)
    carrier.send(answer).catch(() => {})
    const c = this.#open(key, remote, path, 0, carrier, ours, f, granted)
    this.#answers.set(c, { carrier, frame: answer })
    this.#host.count('accepted')
    this.#host.accept(c)
  }

  #open(key: string, remote: Peer, path: ConnectionPath, rtt: number, carrier: Carrier, ours: Buffer, h: Hello, granted: number): Connection {
    const c = new Connection({
      remote,
      path,
      rtt,
      carrier,
      localNonce: ours,
      remoteNonce: h.nonce,
      limits: this.#limits,
      budget: this,
      peerMaxStreams: h.maxStreams,
      peerMaxData: h.maxData,
      peerStreamWindow: h.streamWindow,
      grantedData: granted,
      clock: this.#host.clock,
      onClosed: (conn) => {
        if (this.#conns.get(key) === conn) this.#conns.delete(key)
        if (path === 'tcp') this.#host.tcp?.closeStream(remote.id!)
      },
    })
    this.#conns.set(key, c)
    this.#host.count('opened')
    return c
  }

  /**
   * Closes every connection (CLOSE with code 3, shutdown) and fails every dial; waits at most `ms`
   * for frames in flight (default: 500 on the real clock; 0 on a virtual one, which only moves
   * while its simulation runs).
   */
  async close(ms = this.#host.clock === realClock ? 500 : 0): Promise<void> {
    this.#closing = true
    const err = new DeccomError(ErrorCode.CLOSED, 'The node is closing')
    for (const d of [...this.#dials.values()]) this.#dialFailed(d, err)
    await Promise.all([...this.#conns.values()].map((c) => c.close({ code: CLOSE_SHUTDOWN, timeout: ms })))
  }
}

/** The node id `connect` goes to discovery for, or null (a Peer or an address). */
function targetId(target: ConnectTarget): Buffer | null {
  if (Buffer.isBuffer(target) && target.length === 32) return target
  if (typeof target === 'string' && /^[0-9a-fA-F]{64}$/.test(target)) return Buffer.from(target, 'hex')
  return null
}

function udpKey(a: Address): string {
  return `udp:${a.key}`
}

function nonce(): Buffer {
  for (;;) {
    const n = Buffer.from(crypto.getRandomValues(new Uint8Array(8)))
    if (!n.equals(ZERO8)) return n
  }
}

function isAbort(e: unknown): boolean {
  return (e as DeccomError)?.code === ErrorCode.ABORTED
}

function int(v: number | undefined, dflt: number, min: number, name: string): number {
  if (v === undefined) return dflt
  if (!Number.isSafeInteger(v) || v < min || v > 0xffff_ffff) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `connections.${name} must be an integer in ${min}..2^32-1, got ${String(v)}`)
  return v
}
