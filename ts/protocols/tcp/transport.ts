/**
 * TcpTransport — the layer: its server, the public API, creating and closing connections. The
 * module documentation (format, introduction, duplicates, references, backpressure) is in
 * `index.ts`; the wire codec in `codec.ts`; per-connection parsing and sending in `connection.ts`;
 * the introduction in `introduction.ts`.
 */
import { EventEmitter } from 'node:events'
import net from 'node:net'
import type { AbortOptions } from '../../abort'
import { abortable, throwIfAborted } from '../../abort'
import type { Address, AddressLike } from '../../address'
import { toAddress } from '../../address'
import type { Clock } from '../../clock'
import { realClock } from '../../clock'
import { DeccomError, ErrorCode } from '../../errors'
import { Identity } from '../../identity'
import type { Fn, LayerContext } from '../../protocol'
import { Protocol } from '../../protocol'
import { ObservationTable } from '../observations'
import { TCP_MAX_TAG, T_AUTH, T_HELLO, T_OBSERVED, stripMapped } from './codec'
import type { ConnRef, NoiseLike, Pending, ResolvedTcpOptions, TcpCloseReason, TcpHost, TcpMapping, TcpObservation, TcpPeer, TcpTarget, TcpTransportOptions, Waiter } from './connection'
import { Conn, SCRATCH_SIZE, armIdle, cleanup, close, closed, destroy, idOf, mappingKey, onBytes, onDrain, onEnd, onRead, readBuffer, write } from './connection'
import { onAuth, onGoaway, onHello, onObserved, sendHello } from './introduction'

const RESOLVED = Promise.resolve()

export class TcpTransport extends Protocol {
  /** `remoteId?` / `approveConnection?`: a Noise layer below, if any, that checks claimed ids. */
  static override bindTo = ['localAddress', 'remoteId?', 'approveConnection?']
  static override provides = [
    'openConnection', 'sendStream', 'closeStream', 'disconnect', 'tcpAddress', 'pauseStream', 'resumeStream', 'tcpMapping', 'externalTcpAddress', 'adoptSocket', 'tcpPeers',
  ] // prettier-ignore
  static override emits = ['onStream', 'onStreamClosed']

  readonly name = 'tcp'

  readonly #opts: ResolvedTcpOptions
  readonly #events = new EventEmitter()
  readonly #defaultSlot: Fn
  #server: net.Server | null = null
  #local: Address | null = null
  #clock: Clock = realClock
  #log: (fmt: string, ...a: unknown[]) => void = () => {}
  #identity: Identity | null = null
  #udp: Address | null = null
  #noise: NoiseLike | null = null
  #requireAuth = false
  #stopped = false
  readonly #conns = new Set<Conn>()
  /** Accepted connections not yet introduced, oldest first (at most maxPendingConnections). */
  readonly #pending = new Set<Conn>()
  /** Current connection per peer id (hex). */
  readonly #byId = new Map<string, Conn>()
  /** Outbound connections not yet open, by the dialled address key. */
  readonly #dialing = new Map<string, Conn>()
  /** Known TCP listening address → peer id (hex), and back. */
  readonly #idOfAddr = new Map<string, string>()
  readonly #addrOfId = new Map<string, Address>()
  readonly #observations: ObservationTable<TcpObservation>
  /** Reads at frame boundaries go here; every connection shares it (see #onBytes). */
  readonly #scratch = Buffer.allocUnsafe(SCRATCH_SIZE)
  /** What connection.ts and introduction.ts use of this layer. */
  readonly #host: TcpHost

  constructor(opts: TcpTransportOptions = {}) {
    super()
    const int = (v: number | undefined, d: number, min: number, name: string): number => {
      const x = v ?? d
      if (!Number.isInteger(x) || x < min) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `TcpTransport ${name} must be an integer >= ${min}, got ${String(v)}`)
      return x
    }
    const maxFrameSize = int(opts.maxFrameSize, 16 * 1024 * 1024, 1, 'maxFrameSize')
    if (maxFrameSize > 0xffff_ffff) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'TcpTransport maxFrameSize must fit in 32 bits')
    this.#opts = {
      host: opts.host,
      port: int(opts.port, 0, 0, 'port'),
      maxFrameSize,
      maxQueuedFrames: int(opts.maxQueuedFrames, 4096, 1, 'maxQueuedFrames'),
      maxQueuedBytes: int(opts.maxQueuedBytes, 16 * 1024 * 1024, 1, 'maxQueuedBytes'),
      idleTimeout: int(opts.idleTimeout, 30_000, 1, 'idleTimeout'),
      handshakeTimeout: int(opts.handshakeTimeout, 10_000, 1, 'handshakeTimeout'),
      maxConnections: int(opts.maxConnections, 1024, 1, 'maxConnections'),
      maxPendingConnections: int(opts.maxPendingConnections, 128, 1, 'maxPendingConnections'),
      highWaterMark: int(opts.highWaterMark, 1024 * 1024, 1024, 'highWaterMark'),
      maxObservations: int(opts.maxObservations, 32, 1, 'maxObservations'),
      requireAuthentication: opts.requireAuthentication,
    }
    this.#defaultSlot = this.upper.onStream
    this.#observations = new ObservationTable(this.#opts.maxObservations)
    const self = this
    this.#host = {
      get opts() { return self.#opts },
      get clock() { return self.#clock },
      get identity() { return self.#identity! },
      get udp() { return self.#udp },
      get local() { return self.#local },
      get noise() { return self.#noise },
      get requireAuth() { return self.#requireAuth },
      scratch: this.#scratch,
      byId: this.#byId,
      dialing: this.#dialing,
      idOfAddr: this.#idOfAddr,
      addrOfId: this.#addrOfId,
      observations: this.#observations,
      conns: this.#conns,
      pending: this.#pending,
      count: (name, n) => this.count(name, n),
      log: (fmt, ...a) => this.#log(fmt, ...a),
      frame: (c, type, body) => this.#frame(c, type, body),
      deliver: (c, data, tag) => this.#deliver(c, data, tag),
      destroy: (c, reason) => destroy(this.#host, c, reason),
      close: (c, reason) => close(this.#host, c, reason),
      armIdle: (c) => armIdle(this.#host, c),
      streamClosed: (peer, reason, error) => this.#streamClosed(peer, reason, error),
    } // prettier-ignore
  }

  // ------------------------------------------------------------------------------------------
  // Events

  /** `'frame' (peer, data, tag)` for every data frame; `'close' (peer, reason, error?)` when a stream closes. */
  on(event: 'frame', listener: (peer: TcpPeer, data: Buffer, tag: number) => void): this
  on(event: 'close', listener: (peer: TcpPeer, reason: TcpCloseReason, error?: unknown) => void): this
  on(event: 'frame' | 'close', listener: (...a: any[]) => void): this {
    this.#events.on(event, listener)
    return this
  }
  /** Like {@link on}, for one event. */
  once(event: 'frame', listener: (peer: TcpPeer, data: Buffer, tag: number) => void): this
  /** Like {@link on}, for one event. */
  once(event: 'close', listener: (peer: TcpPeer, reason: TcpCloseReason, error?: unknown) => void): this
  once(event: 'frame' | 'close', listener: (...a: any[]) => void): this {
    this.#events.once(event, listener)
    return this
  }
  /** Stop listening (see {@link on}). */
  off(event: 'frame' | 'close', listener: (...a: any[]) => void): this {
    this.#events.off(event, listener)
    return this
  }

  // ------------------------------------------------------------------------------------------
  // Lifecycle

  override async start(ctx: LayerContext): Promise<void> {
    if (this.#server || this.#stopped) throw new DeccomError(ErrorCode.STACK_STATE, 'TcpTransport is already started (or stopped)')
    this.#clock = ctx.clock ?? realClock
    this.#log = ctx.log ?? this.#log
    const id = ctx.identity
    if (!(id instanceof Identity)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'TcpTransport needs the node identity in its LayerContext')
    this.#identity = id
    try {
      this.#udp = this.lower.localAddress() as Address
    } catch {
      this.#udp = null
    }
    this.#noise =
      this.hasLower('remoteId') && this.hasLower('approveConnection')
        ? { remoteId: (a) => this.lower.remoteId(a), approveConnection: (a) => this.lower.approveConnection(a) }
        : null
    this.#requireAuth = this.#opts.requireAuthentication ?? this.#noise !== null
    const host = this.#opts.host ?? this.#udp?.host ?? '127.0.0.1'
    const server = net.createServer({ allowHalfOpen: true, highWaterMark: this.#opts.highWaterMark, noDelay: true, pauseOnConnect: true } as net.ServerOpts, (s) => this.#accept(s))
    await new Promise<void>((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException): void => {
        const code = e.code === 'EADDRINUSE' ? ErrorCode.ADDRESS_IN_USE : ErrorCode.SOCKET
        reject(new DeccomError(code, `TcpTransport cannot listen on ${host}:${this.#opts.port}: ${e.message}`, { cause: e }))
      }
      server.once('error', onError)
      server.listen({ host, port: this.#opts.port }, () => {
        server.off('error', onError)
        resolve()
      })
    })
    server.on('error', (e) => this.#log('server error %s', (e as Error).message))
    this.#server = server
    const a = server.address() as net.AddressInfo
    this.#local = toAddress(a.address, a.port)
  }

  override async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    const server = this.#server
    this.#server = null
    const closing: Promise<void>[] = []
    for (const c of [...this.#conns]) {
      if (!c.socket.closed) closing.push(new Promise((resolve) => c.socket.once('close', () => resolve())))
      cleanup(this.#host, c, 'stopped', null)
    }
    if (server) closing.push(new Promise<void>((resolve) => server.close(() => resolve())))
    await Promise.all(closing)
    this.#idOfAddr.clear()
    this.#addrOfId.clear()
    this.#observations.clear()
  }

  // ------------------------------------------------------------------------------------------
  // Provided methods

  /** This node's TCP listening address. @throws ERR_DECCOM_CLOSED before start / after stop */
  tcpAddress(): Address {
    if (!this.#local || this.#stopped) throw closed()
    return this.#local
  }

  /**
   * How our TCP connections appear from outside: the IP address, and whether the source port was
   * kept, on which at least 2 distinct peers agree (each peer reports, in an OBSERVED frame, the
   * address it sees the connection come from). Null while fewer than 2 agree — behind a NAT that
   * rewrites ports randomly they still agree on `portPreserving: false`.
   */
  tcpMapping(): TcpMapping | null {
    const a = this.#observations.agreed(mappingKey)
    return a ? { host: a.value.address.host, portPreserving: a.value.address.port === a.value.localPort, observers: a.observers } : null
  }

  /**
   * Our listening address as it appears from outside: the agreed {@link tcpMapping} host with our
   * listening port, when the mapping preserves ports; else null. Without a NAT this is the address
   * peers reach us at. Behind a port-preserving NAT it is where a connection *from* the listening
   * port would appear; inbound connections reach it only if the NAT forwards the port.
   */
  externalTcpAddress(): Address | null {
    const m = this.tcpMapping()
    if (!m || !m.portPreserving || !this.#local) return null
    return toAddress(m.host, this.#local.port)
  }

  /** Every TCP observation kept (one per observing peer). */
  tcpObservations(): TcpObservation[] {
    return this.#observations.values().map((o) => ({ ...o }))
  }

  /**
   * Opens (or reuses) the connection to `to` and takes a reference on it; resolves with the peer
   * once the introduction completed. Release it with {@link closeStream}. Aborting `opts.signal`
   * before then drops the reference, and closes the connection when nothing else waits on it.
   * @throws (rejects) ERR_DECCOM_TCP_CONNECT_FAILED, ..._TCP_AUTH_FAILED, ..._TCP_UNKNOWN_PEER, ..._INVALID_ADDRESS, ..._CLOSED, ..._ABORTED
   */
  openConnection(to: TcpTarget, opts: AbortOptions = {}): Promise<TcpPeer> {
    const { signal } = opts
    try {
      throwIfAborted(signal)
      const c = this.#connFor(to)
      c.refs++
      if (c.state === 'open' || c.state === 'draining') {
        if (c.state === 'open') {
          // Cancel the idle timer (a draining connection's timer bounds the switch-over: keep it).
          this.#clock.clearTimeout(c.timer)
          c.timer = undefined
        }
        return Promise.resolve(c.peer!)
      }
      let w: Waiter
      return abortable<TcpPeer>(
        signal,
        (resolve, reject) => c.waiters.push((w = { resolve, reject })),
        () => this.#abortWaiter(w),
      )
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Releases one reference taken by {@link openConnection}. When none are left, the connection
   * closes after `idleTimeout` ms without frames. Returns false when there was no such connection
   * or reference.
   */
  closeStream(to: TcpTarget): boolean {
    const c = this.#existing(to)
    if (!c || c.refs === 0) return false
    c.refs--
    if (c.refs === 0 && c.state === 'open') armIdle(this.#host, c)
    return true
  }

  /** Closes the connection to `to` now (references or not). Returns false when there was none. */
  disconnect(to: TcpTarget): boolean {
    const c = this.#existing(to)
    if (!c) return false
    close(this.#host, c, 'local')
    return true
  }

  /**
   * Sends one frame of `data` on stream `tag` (0..0xEF) to `to`, opening a connection if needed
   * (without a reference: it closes when idle). Resolves when the frame is handed to the socket.
   * Aborting `opts.signal` while the frame waits in the queue removes it (a frame handed to the
   * socket is never cut), and closes a connection still opening that nothing else waits on.
   * `sendStream(to, data, { signal })` is the same as with tag 0.
   * @throws (rejects) ERR_DECCOM_TCP_FRAME_TOO_LARGE, ..._TCP_QUEUE_FULL, ..._TCP_CONNECT_FAILED,
   *   ..._TCP_AUTH_FAILED, ..._TCP_UNKNOWN_PEER, ..._TCP_CONNECTION_CLOSED, ..._CLOSED, ..._ABORTED
   */
  sendStream(to: TcpTarget, data: Uint8Array, tag: number | AbortOptions = 0, opts: AbortOptions = {}): Promise<void> {
    if (typeof tag === 'object' && tag !== null) {
      opts = tag
      tag = 0
    }
    const { signal } = opts
    try {
      throwIfAborted(signal)
      if (data.length > this.#opts.maxFrameSize) {
        throw new DeccomError(ErrorCode.TCP_FRAME_TOO_LARGE, `A frame of ${data.length} bytes exceeds the TcpTransport maxFrameSize (${this.#opts.maxFrameSize}); split it or raise maxFrameSize`, {
          details: { size: data.length, max: this.#opts.maxFrameSize },
        })
      }
      if (!Number.isInteger(tag) || tag < 0 || tag > TCP_MAX_TAG) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `A stream tag is an integer 0..${TCP_MAX_TAG}, got ${String(tag)}`)
      const c = this.#connFor(to)
      if (c.state === 'open' && !c.blocked && c.qhead === c.queue.length) {
        write(this.#host, c, data, tag)
        return RESOLVED
      }
      const q = c.queued
      if (q >= this.#opts.maxQueuedFrames || (q > 0 && c.queuedBytes + data.length > this.#opts.maxQueuedBytes)) {
        this.count('dropped_queue_full')
        throw new DeccomError(
          ErrorCode.TCP_QUEUE_FULL,
          `${q} frames (${c.queuedBytes} bytes) already wait for the connection to ${c.peer?.idHex.slice(0, 16) ?? c.remote.key}: the peer reads slower than you send. Wait for earlier sends to resolve, then retry`,
          { details: { frames: q, bytes: c.queuedBytes } },
        )
      }
      const frameTag = tag
      let p: Pending
      return abortable<void>(
        signal,
        (resolve, reject) => {
          c.queue.push((p = { data, tag: frameTag, resolve, reject }))
          c.queuedBytes += data.length
        },
        () => this.#abortPending(p),
      )
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /** Stops reading from the connection to `to` (the sender then gets TCP backpressure). */
  pauseStream(to: TcpTarget): boolean {
    const c = this.#existing(to)
    if (!c) return false
    c.paused = true
    c.socket.pause()
    return true
  }

  /** Resumes reading after {@link pauseStream}. */
  resumeStream(to: TcpTarget): boolean {
    const c = this.#existing(to)
    if (!c) return false
    c.paused = false
    if (c.state !== 'hello' && c.state !== 'checking') c.socket.resume()
    return true
  }

  /**
   * Adopts an already connected socket (e.g. one opened by TCP hole punching, TcpHolePuncher) as a
   * connection: the introduction runs on it as on any other. `initiator` stands in for "who dialled"
   * in duplicate resolution: exactly one end must pass true (both ends of a simultaneous open think
   * they dialled). Resolves with the peer once the introduction completed; the connection starts
   * without references (idle close applies). Additive API (see docs/nat.md, TCP hole punching).
   * @throws (rejects) ERR_DECCOM_CLOSED, ERR_DECCOM_TCP_CONNECT_FAILED, ERR_DECCOM_TCP_AUTH_FAILED
   */
  adoptSocket(socket: net.Socket, initiator: boolean): Promise<TcpPeer> {
    if (this.#stopped || !this.#server) {
      socket.destroy()
      return Promise.reject(closed())
    }
    if (this.#conns.size >= this.#opts.maxConnections || !socket.remoteAddress || socket.destroyed) {
      socket.destroy()
      return Promise.reject(new DeccomError(ErrorCode.TCP_CONNECT_FAILED, 'Cannot adopt the socket (closed, or maxConnections reached)'))
    }
    let remote: Address
    try {
      remote = toAddress(stripMapped(socket.remoteAddress), socket.remotePort!)
    } catch (e) {
      socket.destroy()
      return Promise.reject(e)
    }
    this.count('connections_adopted')
    const c = this.#wrap(socket, initiator, remote)
    return new Promise<TcpPeer>((resolve, reject) => c.waiters.push({ resolve, reject }))
  }

  /** {@link peers} under a name layers above can bind to (`peers` is a discovery layer's). */
  tcpPeers(): TcpPeer[] {
    return this.peers()
  }

  /** The open peers (one per peer id). */
  peers(): TcpPeer[] {
    return [...this.#byId.values()].filter((c) => c.peer).map((c) => c.peer!)
  }

  override stats(): Record<string, number> {
    let queued = 0
    let queuedBytes = 0
    let buffered = 0
    for (const c of this.#conns) {
      queued += c.queued
      queuedBytes += c.queuedBytes
      buffered += c.buffered
    }
    return {
      ...this.counters,
      connections: this.#conns.size,
      pending_connections: this.#pending.size,
      peers: this.#byId.size,
      queued_frames: queued,
      queued_bytes: queuedBytes,
      buffered_bytes: buffered,
    }
  }

  // ------------------------------------------------------------------------------------------
  // Aborts (waiters and queued frames move between connections in duplicate resolution: look them up)

  /** An openConnection was aborted before the connection opened: drop its waiter and its reference. */
  #abortWaiter(w: Waiter): void {
    this.count('connects_aborted')
    for (const c of this.#conns) {
      const i = c.waiters.indexOf(w)
      if (i < 0) continue
      c.waiters.splice(i, 1)
      if (c.refs > 0) c.refs--
      return this.#dropUnused(c)
    }
  }

  /** A sendStream was aborted while its frame waited: remove the frame from its queue. */
  #abortPending(p: Pending): void {
    this.count('sends_aborted')
    for (const c of this.#conns) {
      const i = c.queue.indexOf(p, c.qhead)
      if (i < 0) continue
      c.queue.splice(i, 1)
      c.queuedBytes -= p.data.length
      return this.#dropUnused(c)
    }
  }

  /** Closes a connection still opening once no reference, waiter or queued frame is left on it. */
  #dropUnused(c: Conn): void {
    if ((c.state !== 'hello' && c.state !== 'checking') || c.refs > 0 || c.waiters.length > 0 || c.queued > 0) return
    this.count('connections_aborted')
    destroy(this.#host, c, 'local')
  }

  // ------------------------------------------------------------------------------------------
  // Connections

  /** The connection to use for `to`: the current one, one being dialled, or a new dial. */
  #connFor(to: TcpTarget): Conn {
    if (this.#stopped || !this.#server) throw closed()
    const id = idOf(to)
    if (id !== null) {
      const c = this.#byId.get(id)
      if (c) return c
      const addr = this.#addrOfId.get(id)
      if (!addr) {
        throw new DeccomError(ErrorCode.TCP_UNKNOWN_PEER, `No TCP connection to node ${id.slice(0, 16)}… and no known TCP address for it; connect by address first`, { details: { id } })
      }
      return this.#byAddr(addr)
    }
    return this.#byAddr(toAddress(to as AddressLike))
  }

  #byAddr(addr: Address): Conn {
    const id = this.#idOfAddr.get(addr.key)
    const c = id === undefined ? undefined : this.#byId.get(id)
    if (c) return c
    const d = this.#dialing.get(addr.key)
    if (d) return d
    if (addr === this.#local) throw new DeccomError(ErrorCode.INVALID_ADDRESS, `Refusing to connect to this node's own TCP address ${addr.key}`)
    return this.#dial(addr)
  }

  /** The current or dialling connection for `to`, without creating one. */
  #existing(to: TcpTarget): Conn | undefined {
    const id = idOf(to)
    if (id !== null) return this.#byId.get(id)
    let addr: Address
    try {
      addr = toAddress(to as AddressLike)
    } catch {
      return undefined
    }
    const known = this.#idOfAddr.get(addr.key)
    return (known === undefined ? undefined : this.#byId.get(known)) ?? this.#dialing.get(addr.key)
  }

  #dial(addr: Address): Conn {
    if (this.#conns.size >= this.#opts.maxConnections) {
      throw new DeccomError(ErrorCode.TCP_CONNECT_FAILED, `TcpTransport already has ${this.#conns.size} connections (maxConnections)`, { details: { max: this.#opts.maxConnections } })
    }
    const ref: ConnRef = { c: null }
    const socket = net.connect({ host: addr.host, port: addr.port, allowHalfOpen: true, noDelay: true, highWaterMark: this.#opts.highWaterMark, onread: this.#onread(ref) } as net.NetConnectOpts)
    const c = (ref.c = new Conn(socket, true, addr, addr))
    this.#dialing.set(addr.key, c)
    this.count('connections_opened')
    this.#log('dialing %s', addr.key)
    this.#attach(c, true)
    socket.once('connect', () => sendHello(this.#host, c))
    return c
  }

  #accept(socket: net.Socket): void {
    // Unintroduced connections make room for a new one: the oldest goes first.
    if (!this.#stopped && (this.#pending.size >= this.#opts.maxPendingConnections || (this.#conns.size >= this.#opts.maxConnections && this.#pending.size > 0))) {
      const oldest = this.#pending.values().next().value as Conn
      this.#pending.delete(oldest)
      this.count('pending_evicted')
      oldest.error = new DeccomError(ErrorCode.TCP_CONNECT_FAILED, `The TCP introduction with ${oldest.remote.key} did not complete before ${this.#opts.maxPendingConnections} newer connections arrived`)
      destroy(this.#host, oldest, 'error')
    }
    if (this.#stopped || this.#conns.size >= this.#opts.maxConnections || !socket.remoteAddress) {
      this.count('dropped_connection_limit')
      socket.destroy()
      return
    }
    let remote: Address
    try {
      remote = toAddress(stripMapped(socket.remoteAddress), socket.remotePort!)
    } catch {
      socket.destroy()
      return
    }
    this.count('connections_accepted')
    const c = this.#wrap(socket, false, remote)
    if (c.state === 'hello' || c.state === 'checking') this.#pending.add(c)
  }

  /**
   * A connection on an accepted or adopted socket. Its handle is moved into a new socket that reads
   * through `onread` (which `net.createServer` does not offer in Node 20), so that frame bodies are
   * read straight into their own buffers; bytes the old socket already read are parsed first. If
   * the handle cannot be moved (a socket without one), the socket is read through 'data' events.
   * Sends our HELLO (before anything we parse can make us answer).
   */
  #wrap(raw: net.Socket, outbound: boolean, remote: Address): Conn {
    const ref: ConnRef = { c: null }
    const r = raw as unknown as { _handle?: object | null }
    const handle = r._handle
    let socket: net.Socket | null = null
    if (handle) {
      try {
        socket = new net.Socket({ handle, allowHalfOpen: true, readable: true, writable: true, highWaterMark: this.#opts.highWaterMark, onread: this.#onread(ref) } as net.SocketConstructorOpts)
      } catch (e) {
        this.#log('cannot read %s through onread (%s): using data events', remote.key, (e as Error).message)
      }
    }
    let pending: Buffer | null | undefined
    if (socket) {
      // The handle now belongs to `socket`: take what `raw` already read, then let it go.
      r._handle = null
      pending = raw.readableLength > 0 ? (raw.read() as Buffer | null) : null
      raw.destroy()
    } else {
      socket = raw
      raw.resume()
    }
    socket.setNoDelay(true)
    const c = (ref.c = new Conn(socket, outbound, remote, null))
    this.#attach(c, pending !== undefined)
    sendHello(this.#host, c)
    if (pending) onBytes(this.#host, c, pending, true)
    return c
  }

  /** `onread` options for a connection's socket (the Conn is filled in once it exists). */
  #onread(ref: ConnRef): { buffer: () => Uint8Array; callback: (n: number, buf: Uint8Array) => boolean } {
    return {
      buffer: () => (ref.c === null ? this.#scratch : readBuffer(this.#host, ref.c)),
      callback: (n, buf) => {
        if (ref.c !== null) onRead(this.#host, ref.c, n, buf as Buffer)
        return true
      },
    }
  }

  /** Wires a connection's socket; `reader`: it reads through `onread`, else through 'data' events. */
  #attach(c: Conn, reader: boolean): void {
    this.#conns.add(c)
    c.lastActive = this.#clock.now()
    c.timer = this.#clock.setTimeout(() => this.#handshakeTimeout(c), this.#opts.handshakeTimeout)
    const s = c.socket
    c.reader = reader
    // Without a 'data' listener, flow explicitly, so that 'end' is emitted.
    if (reader) s.resume()
    else s.on('data', (chunk: Buffer) => onBytes(this.#host, c, chunk, true))
    s.on('drain', () => onDrain(this.#host, c))
    s.on('end', () => onEnd(this.#host, c))
    s.on('error', (e) => {
      c.error ??= e
      c.reason ??= 'error'
    })
    s.on('close', () => cleanup(this.#host, c, c.reason ?? 'remote', c.error))
  }

  #handshakeTimeout(c: Conn): void {
    c.timer = undefined
    if (c.state !== 'hello' && c.state !== 'checking') return
    this.count('handshake_timeouts')
    c.error = new DeccomError(ErrorCode.TCP_CONNECT_FAILED, `The TCP introduction with ${c.remote.key} did not complete within ${this.#opts.handshakeTimeout} ms`)
    destroy(this.#host, c, 'error')
  }

  /** An open stream closed: the onStreamClosed slot and the 'close' listeners. */
  #streamClosed(peer: TcpPeer, reason: TcpCloseReason, error: unknown): void {
    try {
      this.upper.onStreamClosed(peer, reason, error)
    } catch (e) {
      this.count('handler_errors')
      queueMicrotask(() => {
        throw e
      })
    }
    try {
      this.#events.emit('close', peer, reason, error)
    } catch (e) {
      this.count('handler_errors')
      queueMicrotask(() => {
        throw e
      })
    }
  }

  // ------------------------------------------------------------------------------------------
  // Receiving

  #frame(c: Conn, type: number, body: Buffer): void {
    if (type <= TCP_MAX_TAG) {
      if (c.state === 'open' || c.state === 'draining' || c.state === 'superseded') return this.#deliver(c, body, type)
      if (!c.gotHello) {
        this.count('dropped_malformed')
        return destroy(this.#host, c, 'malformed')
      }
      // The peer considers the connection open before we do (our checks are still running):
      // keep what was already read and stop reading until the connection opens.
      c.held.push([body, type])
      c.socket.pause()
      return
    }
    if (type === T_HELLO) return onHello(this.#host, c, body)
    if (type === T_AUTH) return onAuth(this.#host, c, body)
    if (type === T_OBSERVED) return onObserved(this.#host, c, body)
    return onGoaway(this.#host, c)
  }

  #deliver(c: Conn, data: Buffer, tag: number): void {
    this.count('frames_received')
    this.count('bytes_received', data.length)
    c.lastActive = this.#clock.now()
    const peer = c.peer!
    try {
      if (this.upper.onStream !== this.#defaultSlot) this.upper.onStream(peer, data, tag)
      this.#events.emit('frame', peer, data, tag)
    } catch (e) {
      this.count('handler_errors')
      queueMicrotask(() => {
        throw e
      })
    }
  }
}
