/**
 * TcpTransport — framed TCP streams between peers, as a layer above the UDP transport
 * (PROTOCOLS.md "Transports"; docs/tcp.md).
 *
 * ```ts
 * const tcp = new TcpTransport({ port: 0 })
 * const node = await Node.create({ stack: [tcp] })          // UdpTransport added below it
 * tcp.on('frame', (peer, data, tag) => { ... })              // or take the onStream slot in a layer above
 * await tcp.sendStream(otherTcpAddress, data)                // an Address / "host:port", or a node id
 * ```
 *
 * The layer opens its own `node:net` server. It provides `openConnection(to)`, `sendStream(to,
 * data, tag = 0)`, `closeStream(to)`, `disconnect(to)`, `tcpAddress()` and emits
 * `onStream(from: TcpPeer, data, tag)` (each frame) and `onStreamClosed(peer: TcpPeer, reason)`.
 * A Node's application layer does not take those slots, so the layer is also an event source:
 * `tcp.on('frame', (peer, data, tag) => ...)`, `tcp.on('close', (peer, reason) => ...)`.
 * `to` is a node id (32-byte Buffer or 64 hex digits; needs a connection or a TCP address learned
 * from an earlier introduction) or the peer's TCP listening Address (`"host:port"`).
 *
 * ## Wire format (version 1; docs/wire.md#tcp-streams)
 * A connection is a sequence of frames, each a 5-byte header and a body:
 *
 * | bytes | field                                                                 |
 * |-------|-----------------------------------------------------------------------|
 * | 0..4  | body length, u32 big-endian (data frames: at most `maxFrameSize`)     |
 * | 4     | type: 0x00..0xEF a data frame on that stream tag; 0xF0 HELLO; 0xF1 AUTH; 0xF2 GOAWAY; 0xF3 OBSERVED |
 * | 5..   | body                                                                  |
 *
 * The length is checked against the limit of its type BEFORE anything is allocated: a larger
 * header closes the connection (`dropped_oversized` for data frames, `dropped_malformed` for
 * control frames and unknown types). Reads go through `onread` into buffers the transport picks: a
 * body of at most 64 KiB that spans reads is read straight into its own buffer; a larger one is
 * gathered in pieces until half of it is here, then read into its own buffer. Memory never runs
 * ahead of the bytes received by more than 64 KiB + 5 per connection, or, for a larger body, by
 * more than what arrived of it (docs/tcp.md, "Receiving").
 *
 * HELLO (the first frame both sides send, at most 512 bytes):
 *
 * | bytes  | field                                                                   |
 * |--------|-------------------------------------------------------------------------|
 * | 0      | version = 1                                                             |
 * | 1      | flags: bit 0 = an AUTH frame follows (the sender can sign); bit 1 = the sender reads OBSERVED |
 * | 2..34  | node id (SHA-256 of the public identity)                                |
 * | 34..66 | nonce: 32 random bytes, fresh per connection                            |
 * | 66..84 | the sender's UDP address: 16 bytes IPv6 (IPv4-mapped) + port u16; zeros = unknown |
 * | 84..86 | the sender's TCP listening port u16 (0 = none)                          |
 * | 86..88 | public identity length n, u16 (0..256)                                   |
 * | 88..   | public identity (n bytes; its SHA-256 must equal the node id)           |
 *
 * AUTH (64 bytes): the sender's Ed25519 signature over
 * `"deccom-tcp-auth-v1" || receiver's nonce || sender's nonce || sender's id || receiver's id`,
 * sent after the peer's HELLO arrived. It proves the sender holds the key of the id it claims, on
 * this connection (fresh nonces: no replay). GOAWAY (empty): "this connection lost a duplicate
 * resolution; I send no more data on it" (see below). OBSERVED (18 bytes: 16 bytes IPv6 or
 * IPv4-mapped + port u16) is sent, once, in answer to a HELLO with flag bit 1: the address the
 * sender sees the connection come from. A second one, or one before HELLO, closes the connection
 * (`dropped_malformed`); port 0 or an unspecified IP is ignored (`dropped_bad_observation`).
 *
 * ## External address
 * Each OBSERVED becomes an observation once the connection is open (one per peer id, at most
 * `maxObservations`). `tcpMapping()` is the IP and the port behaviour (source port kept or
 * rewritten) that at least 2 distinct peers agree on; `externalTcpAddress()` is that IP with our
 * listening port when ports are kept. See docs/tcp.md.
 *
 * ## Introduction and authentication
 * A connection is open once the peer's HELLO (and, if announced, its AUTH) arrived and checked out.
 * `TcpPeer.authenticated` is true when the signature verified. When a Noise layer is below in the
 * stack (a layer with `remoteId` and `approveConnection`), the introduction must also agree with
 * Noise: the layer runs `approveConnection(peer's UDP address)` (a handshake if there is none) and
 * requires `remoteId(that address)` to equal the claimed id; otherwise the connection is refused
 * (`auth_failed`). `requireAuthentication` (default: true when Noise is below) refuses peers that
 * do not sign; without it, a name identity's id is accepted unauthenticated (`authenticated: false`).
 * The stream itself is neither encrypted nor integrity-protected: an active on-path attacker can
 * still tamper with it after the introduction. Protect the payloads (or use Noise over UDP) when
 * that matters.
 *
 * ## One connection per peer pair; duplicates
 * Connections are keyed by the peer's node id once open. If two connections to the same peer open
 * (both sides dialled at once), both sides keep the one initiated by the smaller node id (if the
 * same node initiated both: the one with the smaller initiator nonce) — a rule both sides evaluate
 * identically. The loser gets GOAWAY and a half-close: each side still reads it to the end, so no
 * frame already written is lost; frames queued for it move to the winner (their order across the
 * switch is not guaranteed), as do its references and waiters.
 *
 * ## References, idle close
 * `openConnection(to)` adds a reference (resolving with the {@link TcpPeer} once open);
 * `closeStream(to)` removes one. A connection without references (accepted ones start at 0, as do
 * connections opened implicitly by `sendStream`) closes after `idleTimeout` ms without frames.
 *
 * ## Backpressure
 * `sendStream` resolves when the frame has been handed to the socket (`socket.write`). When
 * `write()` reports a full socket buffer, later frames wait in a per-connection queue until
 * 'drain'; beyond `maxQueuedFrames` / `maxQueuedBytes` they are rejected with
 * ERR_DECCOM_TCP_QUEUE_FULL. Like `socket.write`, the socket may read `data` after the promise
 * resolved: do not modify it. On the receiving side, `pauseStream(peer)`/`resumeStream(peer)`
 * stop and restart reading (TCP flow control then slows the sender).
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import net from 'node:net'
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { realClock } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import { Identity } from '../identity'
import type { Fn, LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { ObservationTable } from './observations'

/** Frame header: u32 length + u8 type. */
export const TCP_HEADER_SIZE = 5
/** Highest type byte of a data frame (its stream tag); 0xF0.. are control frames. */
export const TCP_MAX_TAG = 0xef
const T_HELLO = 0xf0
const T_AUTH = 0xf1
const T_GOAWAY = 0xf2
const T_OBSERVED = 0xf3
/** HELLO flags: an AUTH frame follows; the sender reads OBSERVED frames (so send it one). */
const FLAG_AUTH = 1
const FLAG_OBSERVED = 2
const RAW_ADDR_LEN = 18
const VERSION = 1
const HELLO_FIXED = 88
const MAX_HELLO = 512
const MAX_PUBLIC_IDENTITY = 256
const SIG_LEN = 64
const NONCE_LEN = 32
const AUTH_DOMAIN = Buffer.from('deccom-tcp-auth-v1')
/** Frames up to this size are copied behind their header (one write); larger ones are written by reference. */
const COPY_LIMIT = 16 * 1024
/** Size of the shared buffer that reads at frame boundaries go into (consumed within the read callback). */
const SCRATCH_SIZE = 64 * 1024
/**
 * A frame body up to this size that spans reads gets its own buffer when its header arrives, and the
 * rest of it is read straight into that buffer (no copy). Per connection, memory may then run ahead
 * of the bytes received by at most this much. A larger body is gathered in pieces until half of it
 * is here, then copied into its own buffer, and the other half is read straight into it.
 */
const DIRECT_LIMIT = 64 * 1024
const RESOLVED = Promise.resolve()
const ZERO_ADDR = Buffer.alloc(18)

export interface TcpTransportOptions {
  /** IP literal to listen on (default: the UDP transport's host, else 127.0.0.1). */
  host?: string
  /** TCP port (default 0: any free port). */
  port?: number
  /** Largest data frame body in bytes (default 16 MiB). */
  maxFrameSize?: number
  /** Frames waiting for a blocked connection before sends are rejected (default 4096). */
  maxQueuedFrames?: number
  /** Bytes waiting for a blocked connection before sends are rejected (default 16 MiB; one frame is always accepted). */
  maxQueuedBytes?: number
  /** A connection without references closes after this many ms without frames (default 30,000). */
  idleTimeout?: number
  /** Connect + introduction must complete within this many ms (default 10,000). */
  handshakeTimeout?: number
  /** Most connections (open or opening) at once; more incoming ones are refused (default 1024). */
  maxConnections?: number
  /** Refuse peers whose introduction is not signed (default: true when a Noise layer is below). */
  requireAuthentication?: boolean
  /** Socket buffer high-water mark in bytes (default 1 MiB). */
  highWaterMark?: number
  /** TCP observations kept, one per observing peer (default 32; see {@link TcpTransport.tcpMapping}). */
  maxObservations?: number
}

/** A peer (`observer`) saw one of our connections come from `address`; our end was `localPort`. */
export interface TcpObservation {
  observer: Buffer
  observerHex: string
  address: Address
  localPort: number
  /** ms on the layer's clock. */
  at: number
}

/** How this node's TCP connections appear from outside, as at least 2 distinct peers agree. */
export interface TcpMapping {
  /** The IP address they see our connections come from. */
  host: string
  /**
   * True when they saw the source port unchanged (no NAT, or a port-preserving one such as Linux
   * MASQUERADE): a connection from local port p then appears at `host:p`. False when the NAT
   * rewrote it (e.g. `--random-fully`): the mapped port of a new connection cannot be predicted.
   */
  portPreserving: boolean
  /** How many distinct peers (node ids) agree on both. */
  observers: number
}

/** The peer at the other end of a TCP connection. */
export interface TcpPeer {
  /** Its node id (32 bytes) and the same in hex. */
  readonly id: Buffer
  readonly idHex: string
  /** True when the peer proved (by signature, and with Noise by the Noise session) that it owns `id`. */
  readonly authenticated: boolean
  /** The UDP address it announced (unspecified host replaced by the connection's IP), or null. */
  readonly udpAddress: Address | null
  /** Its TCP listening address (connection IP + announced port), or null when it announced none. */
  readonly tcpAddress: Address | null
  /** The socket's remote address. */
  readonly remoteAddress: Address
}

/** A peer as `sendStream`/`openConnection`/`closeStream` take it. */
export type TcpTarget = TcpPeer | Buffer | Uint8Array | AddressLike

/** Why a stream closed (the `reason` of onStreamClosed / 'close'). */
export type TcpCloseReason =
  | 'local' // disconnect()
  | 'idle' // no references and no frames for idleTimeout
  | 'remote' // the peer closed cleanly
  | 'truncated' // the peer closed in the middle of a frame
  | 'oversized' // the peer announced a frame larger than maxFrameSize
  | 'malformed' // a protocol violation
  | 'error' // a socket error (reset, ...)
  | 'stopped' // the layer stopped

interface Pending {
  data: Uint8Array
  tag: number
  resolve: () => void
  reject: (e: Error) => void
}

interface Waiter {
  resolve: (p: TcpPeer) => void
  reject: (e: Error) => void
}

type ConnState = 'hello' | 'checking' | 'open' | 'draining' | 'superseded' | 'closed'

class Conn {
  state: ConnState = 'hello'
  readonly nonce = randomBytes(NONCE_LEN)
  peer: TcpPeer | null = null
  // from the peer's HELLO
  gotHello = false
  peerId: Buffer | null = null
  peerNonce: Buffer | null = null
  peerPublicIdentity: Buffer | null = null
  peerWantsAuth = false
  peerWantsObserved = false
  /** The address the peer says it sees this connection come from (its OBSERVED frame). */
  observed: Address | null = null
  gotObserved = false
  peerAuthed = false
  peerUdp: Address | null = null
  peerTcp: Address | null = null
  gotGoaway = false
  // use
  refs = 0
  readonly queue: Pending[] = []
  qhead = 0
  queuedBytes = 0
  blocked = false
  paused = false
  waiters: Waiter[] = []
  lastActive = 0
  timer: TimerHandle | undefined
  reason: TcpCloseReason | null = null
  error: unknown = null
  ended = false
  held: Array<[Buffer, number]> = []
  // parser
  readonly hdr = Buffer.alloc(TCP_HEADER_SIZE)
  hdrLen = 0
  need = -1
  type = 0
  frameLen = 0
  /** A large frame's received pieces (memory grows with the bytes that actually arrive). */
  parts: Buffer[] = []
  /** A frame (≤ DIRECT_LIMIT) being read straight into its own buffer: body + room for the next header. */
  frame: Buffer | null = null
  filled = 0
  /** The socket reads through `onread` (into buffers from #readBuffer), not through 'data' events. */
  reader = false
  /** The last read filled its buffer (more is probably waiting): read into a fresh buffer, not the scratch. */
  busy = false

  constructor(
    readonly socket: net.Socket,
    readonly outbound: boolean,
    readonly remote: Address,
    /** For outbound connections: the address dialled. */
    readonly dialled: Address | null,
  ) {}

  get queued(): number {
    return this.queue.length - this.qhead
  }
}

export class TcpTransport extends Protocol {
  static override bindTo = ['localAddress']
  static override provides = ['openConnection', 'sendStream', 'closeStream', 'disconnect', 'tcpAddress', 'pauseStream', 'resumeStream', 'tcpMapping', 'externalTcpAddress']
  static override emits = ['onStream', 'onStreamClosed']

  readonly name = 'tcp'

  readonly #opts: Required<Omit<TcpTransportOptions, 'host' | 'requireAuthentication'>> & { host?: string; requireAuthentication?: boolean }
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
      highWaterMark: int(opts.highWaterMark, 1024 * 1024, 1024, 'highWaterMark'),
      maxObservations: int(opts.maxObservations, 32, 1, 'maxObservations'),
      requireAuthentication: opts.requireAuthentication,
    }
    this.#defaultSlot = this.upper.onStream
    this.#observations = new ObservationTable(this.#opts.maxObservations)
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
  once(event: 'frame', listener: (peer: TcpPeer, data: Buffer, tag: number) => void): this
  once(event: 'close', listener: (peer: TcpPeer, reason: TcpCloseReason, error?: unknown) => void): this
  once(event: 'frame' | 'close', listener: (...a: any[]) => void): this {
    this.#events.once(event, listener)
    return this
  }
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
    const layers = ctx.stack?.layers ?? []
    const below = layers.slice(layers.indexOf(this) + 1)
    const noise = below.find((l) => {
      const x = l as unknown as Record<string, unknown>
      return typeof x.remoteId === 'function' && typeof x.approveConnection === 'function'
    })
    this.#noise = (noise as unknown as NoiseLike | undefined) ?? null
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
      this.#cleanup(c, 'stopped', null)
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
   * once the introduction completed. Release it with {@link closeStream}.
   * @throws (rejects) ERR_DECCOM_TCP_CONNECT_FAILED, ..._TCP_AUTH_FAILED, ..._TCP_UNKNOWN_PEER, ..._INVALID_ADDRESS, ..._CLOSED
   */
  openConnection(to: TcpTarget): Promise<TcpPeer> {
    try {
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
      return new Promise<TcpPeer>((resolve, reject) => c.waiters.push({ resolve, reject }))
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
    if (c.refs === 0 && c.state === 'open') this.#armIdle(c)
    return true
  }

  /** Closes the connection to `to` now (references or not). Returns false when there was none. */
  disconnect(to: TcpTarget): boolean {
    const c = this.#existing(to)
    if (!c) return false
    this.#close(c, 'local')
    return true
  }

  /**
   * Sends one frame of `data` on stream `tag` (0..0xEF) to `to`, opening a connection if needed
   * (without a reference: it closes when idle). Resolves when the frame is handed to the socket.
   * @throws (rejects) ERR_DECCOM_TCP_FRAME_TOO_LARGE, ..._TCP_QUEUE_FULL, ..._TCP_CONNECT_FAILED,
   *   ..._TCP_AUTH_FAILED, ..._TCP_UNKNOWN_PEER, ..._TCP_CONNECTION_CLOSED, ..._CLOSED
   */
  sendStream(to: TcpTarget, data: Uint8Array, tag = 0): Promise<void> {
    try {
      if (data.length > this.#opts.maxFrameSize) {
        throw new DeccomError(ErrorCode.TCP_FRAME_TOO_LARGE, `A frame of ${data.length} bytes exceeds the TcpTransport maxFrameSize (${this.#opts.maxFrameSize}); split it or raise maxFrameSize`, {
          details: { size: data.length, max: this.#opts.maxFrameSize },
        })
      }
      if (!Number.isInteger(tag) || tag < 0 || tag > TCP_MAX_TAG) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `A stream tag is an integer 0..${TCP_MAX_TAG}, got ${String(tag)}`)
      const c = this.#connFor(to)
      if (c.state === 'open' && !c.blocked && c.qhead === c.queue.length) {
        this.#write(c, data, tag)
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
      return new Promise<void>((resolve, reject) => {
        c.queue.push({ data, tag, resolve, reject })
        c.queuedBytes += data.length
      })
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

  /** The open peers (one per peer id). */
  peers(): TcpPeer[] {
    return [...this.#byId.values()].filter((c) => c.peer).map((c) => c.peer!)
  }

  override stats(): Record<string, number> {
    let queued = 0
    let queuedBytes = 0
    for (const c of this.#conns) {
      queued += c.queued
      queuedBytes += c.queuedBytes
    }
    return { ...this.counters, connections: this.#conns.size, peers: this.#byId.size, queued_frames: queued, queued_bytes: queuedBytes }
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
    this.#attach(c, true)
    socket.once('connect', () => this.#sendHello(c))
    return c
  }

  #accept(socket: net.Socket): void {
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
    this.#wrap(socket, false, remote)
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
    this.#sendHello(c)
    if (pending) this.#onBytes(c, pending, true)
    return c
  }

  /** `onread` options for a connection's socket (the Conn is filled in once it exists). */
  #onread(ref: ConnRef): { buffer: () => Uint8Array; callback: (n: number, buf: Uint8Array) => boolean } {
    return {
      buffer: () => (ref.c === null ? this.#scratch : this.#readBuffer(ref.c)),
      callback: (n, buf) => {
        if (ref.c !== null) this.#onRead(ref.c, n, buf as Buffer)
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
    else s.on('data', (chunk: Buffer) => this.#onBytes(c, chunk, true))
    s.on('drain', () => this.#onDrain(c))
    s.on('end', () => this.#onEnd(c))
    s.on('error', (e) => {
      c.error ??= e
      c.reason ??= 'error'
    })
    s.on('close', () => this.#cleanup(c, c.reason ?? 'remote', c.error))
  }

  #handshakeTimeout(c: Conn): void {
    c.timer = undefined
    if (c.state !== 'hello' && c.state !== 'checking') return
    this.count('handshake_timeouts')
    c.error = new DeccomError(ErrorCode.TCP_CONNECT_FAILED, `The TCP introduction with ${c.remote.key} did not complete within ${this.#opts.handshakeTimeout} ms`)
    this.#destroy(c, 'error')
  }

  #sendHello(c: Conn): void {
    const id = this.#identity!
    const pub = id.publicIdentity.length <= MAX_PUBLIC_IDENTITY ? id.publicIdentity : Buffer.alloc(0)
    const body = Buffer.alloc(HELLO_FIXED + pub.length)
    body[0] = VERSION
    body[1] = (id.canSign && pub.length > 0 ? FLAG_AUTH : 0) | FLAG_OBSERVED
    id.id.copy(body, 2)
    c.nonce.copy(body, 34)
    ;(this.#udp ? this.#udp.raw : ZERO_ADDR).copy(body, 66)
    body.writeUInt16BE(this.#local?.port ?? 0, 84)
    body.writeUInt16BE(pub.length, 86)
    pub.copy(body, HELLO_FIXED)
    this.#writeRaw(c, body, T_HELLO)
  }

  // ------------------------------------------------------------------------------------------
  // Receiving

  /** The buffer the next read of `c` goes into (the `onread` buffer function). */
  #readBuffer(c: Conn): Uint8Array {
    if (c.frame) return c.frame.subarray(c.filled)
    if (c.need > 0) return Buffer.allocUnsafe(Math.min(c.need + TCP_HEADER_SIZE, SCRATCH_SIZE))
    return c.busy ? Buffer.allocUnsafe(SCRATCH_SIZE) : this.#scratch
  }

  /** `n` bytes were read into `buf` (the buffer {@link #readBuffer} gave for this read). */
  #onRead(c: Conn, n: number, buf: Buffer): void {
    const f = c.frame
    c.busy = n === buf.length
    // Frames may stay views of a buffer of ours that the read filled at least half (as Node shrinks
    // a partly filled read buffer, a small frame must not pin a large one); otherwise they are copied.
    if (f === null || buf.buffer !== f.buffer || buf.byteOffset !== f.byteOffset + c.filled) return this.#onBytes(c, buf.subarray(0, n), buf !== this.#scratch && 2 * n >= buf.length)
    if (c.state === 'closed') return
    c.filled += n
    this.#frameFilled(c)
  }

  /** After bytes went into `c.frame`: delivers it once complete, then parses what follows it. */
  #frameFilled(c: Conn): void {
    const f = c.frame!
    if (c.filled < c.frameLen) {
      c.need = c.frameLen - c.filled
      return
    }
    // The body is complete; up to TCP_HEADER_SIZE bytes after it belong to the next header.
    const end = c.filled
    c.frame = null
    c.need = -1
    this.#frame(c, c.type, f.subarray(0, c.frameLen))
    if (end > c.frameLen) this.#onBytes(c, f.subarray(c.frameLen, end), true)
  }

  /**
   * Parses received bytes. `owned`: `chunk` is ours to keep (frames may be views of it); otherwise it
   * is the shared scratch buffer, and whatever is kept is copied out.
   */
  #onBytes(c: Conn, chunk: Buffer, owned: boolean): void {
    const n = chunk.length
    let off = 0
    while (off < n) {
      if (c.state === 'closed') return
      if (c.frame !== null) {
        // Bytes of a direct frame that were read elsewhere (only before the first read into it).
        const take = Math.min(c.frame.length - c.filled, n - off)
        chunk.copy(c.frame, c.filled, off, off + take)
        off += take
        c.filled += take
        if (c.filled < c.frameLen) {
          c.need = c.frameLen - c.filled
          continue
        }
        // #frameFilled parses the bytes after the body itself; ours continue after them.
        this.#frameFilled(c)
        continue
      }
      if (c.need < 0) {
        let len: number
        let type: number
        if (c.hdrLen === 0 && n - off >= TCP_HEADER_SIZE) {
          len = chunk.readUInt32BE(off)
          type = chunk[off + 4]
          off += TCP_HEADER_SIZE
        } else {
          const take = Math.min(TCP_HEADER_SIZE - c.hdrLen, n - off)
          chunk.copy(c.hdr, c.hdrLen, off, off + take)
          c.hdrLen += take
          off += take
          if (c.hdrLen < TCP_HEADER_SIZE) return
          c.hdrLen = 0
          len = c.hdr.readUInt32BE(0)
          type = c.hdr[4]
        }
        // Check the announced length before anything is allocated for it.
        if (type <= TCP_MAX_TAG) {
          if (len > this.#opts.maxFrameSize) {
            this.count('dropped_oversized')
            this.#log('%s announced a frame of %d bytes (max %d): closing', c.remote.key, len, this.#opts.maxFrameSize)
            return this.#destroy(c, 'oversized')
          }
        } else if (type > T_OBSERVED || len > controlLimit(type)) {
          this.count('dropped_malformed')
          return this.#destroy(c, 'malformed')
        }
        if (n - off >= len) {
          const body = owned ? chunk.subarray(off, off + len) : Buffer.from(chunk.subarray(off, off + len))
          off += len
          this.#frame(c, type, body)
          continue
        }
        c.type = type
        c.frameLen = len
        c.need = len - (n - off)
        if (c.reader && (len <= DIRECT_LIMIT || 2 * (n - off) >= len)) {
          // Read the rest straight into the frame's own buffer (with room for the next header).
          c.frame = Buffer.allocUnsafe(len + TCP_HEADER_SIZE)
          c.filled = chunk.copy(c.frame, 0, off, n)
          return
        }
        c.parts.push(owned ? chunk.subarray(off) : Buffer.from(chunk.subarray(off)))
        return
      }
      const take = Math.min(c.need, n - off)
      const piece = take === n && off === 0 ? chunk : chunk.subarray(off, off + take)
      c.parts.push(owned ? piece : Buffer.from(piece))
      off += take
      c.need -= take
      if (c.need > 0 && c.reader && 2 * c.need <= c.frameLen) {
        // Half the body is here: give it its own buffer (never more than twice what arrived, as
        // the join would hold at the end) and read the other half straight into it.
        const f = Buffer.allocUnsafe(c.frameLen + TCP_HEADER_SIZE)
        let o = 0
        for (const p of c.parts) o += p.copy(f, o)
        c.parts = []
        c.frame = f
        c.filled = o
        continue
      }
      if (c.need === 0) {
        const body = c.parts.length === 1 ? c.parts[0] : Buffer.concat(c.parts, c.frameLen)
        c.parts = []
        c.need = -1
        this.#frame(c, c.type, body)
      }
    }
  }

  #frame(c: Conn, type: number, body: Buffer): void {
    if (type <= TCP_MAX_TAG) {
      if (c.state === 'open' || c.state === 'draining' || c.state === 'superseded') return this.#deliver(c, body, type)
      if (!c.gotHello) {
        this.count('dropped_malformed')
        return this.#destroy(c, 'malformed')
      }
      // The peer considers the connection open before we do (our checks are still running):
      // keep what was already read and stop reading until the connection opens.
      c.held.push([body, type])
      c.socket.pause()
      return
    }
    if (type === T_HELLO) return this.#onHello(c, body)
    if (type === T_AUTH) return this.#onAuth(c, body)
    if (type === T_OBSERVED) return this.#onObserved(c, body)
    return this.#onGoaway(c)
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

  #onHello(c: Conn, b: Buffer): void {
    if (c.gotHello || b.length < HELLO_FIXED || b[0] !== VERSION) return this.#malformed(c)
    const pubLen = b.readUInt16BE(86)
    if (b.length !== HELLO_FIXED + pubLen || pubLen > MAX_PUBLIC_IDENTITY) return this.#malformed(c)
    const id = Buffer.from(b.subarray(2, 34))
    const pub = pubLen > 0 ? Buffer.from(b.subarray(HELLO_FIXED)) : null
    c.gotHello = true
    c.peerId = id
    c.peerNonce = Buffer.from(b.subarray(34, 66))
    c.peerPublicIdentity = pub
    c.peerWantsAuth = (b[1] & FLAG_AUTH) !== 0
    c.peerWantsObserved = (b[1] & FLAG_OBSERVED) !== 0
    if (c.peerWantsAuth && (pub === null || pub[0] !== 0x01 || pub.length !== 33)) return this.#malformed(c)
    if (pub !== null && !safeIdOf(pub)?.equals(id)) return this.#authFail(c, 'the node id is not the SHA-256 of the announced public identity')
    if (id.equals(this.#identity!.id)) return this.#authFail(c, 'the peer claims our own node id (a connection to ourselves?)')
    const host = c.remote.host
    const udpRaw = b.subarray(66, 84)
    if (!udpRaw.equals(ZERO_ADDR)) c.peerUdp = decodeRaw(udpRaw, host)
    const tcpPort = b.readUInt16BE(84)
    if (tcpPort !== 0) {
      try {
        c.peerTcp = toAddress(host, tcpPort)
      } catch {
        c.peerTcp = null
      }
    }
    // Tell the peer where we see its connection come from (its mapped address, behind a NAT).
    if (c.peerWantsObserved) this.#writeRaw(c, c.remote.raw, T_OBSERVED)
    const me = this.#identity!
    if (me.canSign && me.publicIdentity.length <= MAX_PUBLIC_IDENTITY) {
      const sig = me.sign(Buffer.concat([AUTH_DOMAIN, c.peerNonce, c.nonce, me.id, id]))
      this.#writeRaw(c, sig, T_AUTH)
    }
    this.#maybeOpen(c)
  }

  #onAuth(c: Conn, sig: Buffer): void {
    if (!c.gotHello || !c.peerWantsAuth || c.peerAuthed || sig.length !== SIG_LEN) return this.#malformed(c)
    const msg = Buffer.concat([AUTH_DOMAIN, c.nonce, c.peerNonce!, c.peerId!, this.#identity!.id])
    let ok = false
    try {
      ok = Identity.verify(c.peerPublicIdentity!.subarray(1), msg, sig)
    } catch {
      ok = false
    }
    if (!ok) return this.#authFail(c, 'the introduction signature does not verify')
    c.peerAuthed = true
    this.#maybeOpen(c)
  }

  #onObserved(c: Conn, body: Buffer): void {
    if (!c.gotHello || c.gotObserved || body.length !== RAW_ADDR_LEN) return this.#malformed(c)
    c.gotObserved = true
    const a = body.readUInt16BE(16) === 0 ? null : decodeRaw(body, '')
    if (!a) return this.count('dropped_bad_observation')
    c.observed = a
    if (c.peer) this.#observe(c)
  }

  /** Records what the peer of an open connection reported in its OBSERVED frame. */
  #observe(c: Conn): void {
    const localPort = c.socket.localPort
    if (!c.observed || !c.peer || localPort === undefined) return
    this.#observations.set(c.peer.idHex, { observer: c.peer.id, observerHex: c.peer.idHex, address: c.observed, localPort, at: this.#clock.now() })
    this.count('observations')
  }

  #onGoaway(c: Conn): void {
    if (c.gotGoaway) return this.#malformed(c)
    c.gotGoaway = true
    if (c.state === 'open') {
      // The peer chose another connection to us; it is being introduced. Send nothing more here.
      c.state = 'draining'
      this.#clock.clearTimeout(c.timer)
      c.timer = this.#clock.setTimeout(() => {
        c.timer = undefined
        if (c.state === 'draining') this.#close(c, 'remote')
      }, this.#opts.handshakeTimeout)
    }
  }

  #malformed(c: Conn): void {
    this.count('dropped_malformed')
    this.#destroy(c, 'malformed')
  }

  #authFail(c: Conn, why: string): void {
    this.count('auth_failed')
    this.#log('introduction from %s refused: %s', c.remote.key, why)
    c.error = new DeccomError(ErrorCode.TCP_AUTH_FAILED, `The TCP peer at ${c.remote.key} failed authentication: ${why}`)
    this.#destroy(c, 'error')
  }

  /** Opens the connection when the introduction is complete and checks out. */
  #maybeOpen(c: Conn): void {
    if (c.state !== 'hello' || !c.gotHello || (c.peerWantsAuth && !c.peerAuthed)) return
    if (this.#requireAuth && !c.peerAuthed) return this.#authFail(c, 'the introduction is not signed and requireAuthentication is set')
    const noise = this.#noise
    if (!noise) return this.#open(c, c.peerAuthed)
    const udp = c.peerUdp
    if (!udp) return this.#authFail(c, 'no UDP address to check against the Noise session')
    c.state = 'checking'
    const check = (): void => {
      if (c.state !== 'checking') return
      const nid = noise.remoteId(udp)
      if (!nid || !nid.equals(c.peerId!)) return this.#authFail(c, `the Noise-authenticated id of ${udp.key} is ${nid ? nid.toString('hex').slice(0, 16) + '…' : 'unknown'}, not the claimed id`)
      c.state = 'hello'
      this.#open(c, c.peerAuthed)
    }
    if (noise.remoteId(udp)) return check()
    noise.approveConnection(udp).then(check, check)
  }

  #open(c: Conn, authenticated: boolean): void {
    const idHex = c.peerId!.toString('hex')
    c.peer = Object.freeze({ id: c.peerId!, idHex, authenticated, udpAddress: c.peerUdp, tcpAddress: c.peerTcp, remoteAddress: c.remote })
    this.#observe(c)
    if (c.dialled && this.#dialing.get(c.dialled.key) === c) this.#dialing.delete(c.dialled.key)
    for (const a of [c.dialled, c.peerTcp]) {
      if (!a) continue
      const old = this.#idOfAddr.get(a.key)
      if (old !== undefined && old !== idHex && this.#addrOfId.get(old) === a) this.#addrOfId.delete(old)
      this.#idOfAddr.set(a.key, idHex)
      this.#addrOfId.set(idHex, a)
    }
    this.#clock.clearTimeout(c.timer)
    c.timer = undefined
    const existing = this.#byId.get(idHex)
    if (existing && existing !== c) {
      this.count('duplicates_resolved')
      if (this.#precedes(c, existing)) {
        this.#byId.set(idHex, c)
        this.#activate(c)
        this.#supersede(existing, c)
      } else {
        c.state = 'open'
        this.#supersede(c, existing)
      }
      return
    }
    this.#byId.set(idHex, c)
    this.#activate(c)
  }

  /** True when connection `a` must be kept over `b` (same peer): smaller initiator id, then nonce. */
  #precedes(a: Conn, b: Conn): boolean {
    const me = this.#identity!.id
    const ia = a.outbound ? me : a.peerId!
    const ib = b.outbound ? me : b.peerId!
    const cmp = Buffer.compare(ia, ib)
    if (cmp !== 0) return cmp < 0
    const na = a.outbound ? a.nonce : a.peerNonce!
    const nb = b.outbound ? b.nonce : b.peerNonce!
    return Buffer.compare(na, nb) < 0
  }

  /** `c` becomes the current connection of its peer. */
  #activate(c: Conn): void {
    c.state = c.gotGoaway ? 'draining' : 'open'
    this.#log('connection to %s (%s) open', c.peer!.idHex.slice(0, 8), c.remote.key)
    const held = c.held
    c.held = []
    for (const [body, tag] of held) this.#deliver(c, body, tag)
    if (!c.paused && (c.state as ConnState) !== 'closed') c.socket.resume()
    const waiters = c.waiters
    c.waiters = []
    for (const w of waiters) w.resolve(c.peer!)
    this.#flush(c)
    if (c.refs === 0 && c.state === 'open') this.#armIdle(c)
  }

  /** `loser` hands its queue, references and waiters to `winner`, says GOAWAY and half-closes. */
  #supersede(loser: Conn, winner: Conn): void {
    loser.state = 'superseded'
    this.#clock.clearTimeout(loser.timer)
    winner.refs += loser.refs
    loser.refs = 0
    for (let i = loser.qhead; i < loser.queue.length; i++) {
      winner.queue.push(loser.queue[i])
      winner.queuedBytes += loser.queue[i].data.length
    }
    loser.queue.length = 0
    loser.qhead = 0
    loser.queuedBytes = 0
    const held = loser.held
    loser.held = []
    for (const [body, tag] of held) this.#deliver(loser, body, tag)
    if (loser.waiters.length) {
      if (winner.state === 'open' || winner.state === 'draining') for (const w of loser.waiters) w.resolve(winner.peer!)
      else winner.waiters.push(...loser.waiters)
      loser.waiters = []
    }
    if (!loser.paused) loser.socket.resume()
    if (loser.ended) loser.socket.once('finish', () => this.#destroy(loser, 'remote'))
    this.#writeRaw(loser, Buffer.alloc(0), T_GOAWAY)
    loser.socket.end()
    // Read it to the end (the peer half-closes too); bounded by the handshake timeout.
    loser.timer = this.#clock.setTimeout(() => {
      loser.timer = undefined
      this.#destroy(loser, 'remote')
    }, this.#opts.handshakeTimeout)
    if (winner.refs > 0) {
      this.#clock.clearTimeout(winner.timer)
      winner.timer = undefined
    }
    this.#flush(winner)
  }

  // ------------------------------------------------------------------------------------------
  // Sending

  #write(c: Conn, data: Uint8Array, tag: number): void {
    const len = data.length
    let ok: boolean
    if (len <= COPY_LIMIT) {
      const buf = Buffer.allocUnsafe(TCP_HEADER_SIZE + len)
      buf.writeUInt32BE(len, 0)
      buf[4] = tag
      buf.set(data, TCP_HEADER_SIZE)
      ok = c.socket.write(buf)
    } else {
      const hdr = Buffer.allocUnsafe(TCP_HEADER_SIZE)
      hdr.writeUInt32BE(len, 0)
      hdr[4] = tag
      c.socket.cork()
      c.socket.write(hdr)
      ok = c.socket.write(data)
      c.socket.uncork()
    }
    this.count('frames_sent')
    this.count('bytes_sent', len)
    c.lastActive = this.#clock.now()
    if (!ok) {
      c.blocked = true
      this.count('backpressure_waits')
    }
  }

  #writeRaw(c: Conn, body: Buffer, type: number): void {
    const hdr = Buffer.allocUnsafe(TCP_HEADER_SIZE)
    hdr.writeUInt32BE(body.length, 0)
    hdr[4] = type
    c.socket.write(body.length ? Buffer.concat([hdr, body]) : hdr)
  }

  #onDrain(c: Conn): void {
    c.blocked = false
    this.#flush(c)
  }

  #flush(c: Conn): void {
    if (c.state !== 'open') return
    while (!c.blocked && c.qhead < c.queue.length) {
      const p = c.queue[c.qhead]
      c.queue[c.qhead++] = undefined as unknown as Pending
      c.queuedBytes -= p.data.length
      this.#write(c, p.data, p.tag)
      p.resolve()
    }
    if (c.qhead === c.queue.length) {
      c.queue.length = 0
      c.qhead = 0
    }
  }

  // ------------------------------------------------------------------------------------------
  // Closing

  #armIdle(c: Conn): void {
    this.#clock.clearTimeout(c.timer)
    const fire = (): void => {
      c.timer = undefined
      if (c.state !== 'open' || c.refs > 0) return
      const idle = this.#clock.now() - c.lastActive
      if (idle < this.#opts.idleTimeout || c.queued > 0 || c.socket.writableLength > 0) {
        c.timer = this.#clock.setTimeout(fire, Math.max(1, this.#opts.idleTimeout - idle))
        return
      }
      this.count('idle_closed')
      this.#close(c, 'idle')
    }
    c.timer = this.#clock.setTimeout(fire, this.#opts.idleTimeout)
  }

  /** Graceful close: half-close and read to the end (bounded), then destroy. */
  #close(c: Conn, reason: TcpCloseReason): void {
    if (c.state === 'closed') return
    c.reason ??= reason
    if (c.state === 'hello' || c.state === 'checking') return this.#destroy(c, reason)
    this.#clock.clearTimeout(c.timer)
    c.socket.end()
    c.socket.resume()
    c.timer = this.#clock.setTimeout(() => {
      c.timer = undefined
      this.#destroy(c, reason)
    }, 2000)
  }

  #destroy(c: Conn, reason: TcpCloseReason): void {
    if (c.state === 'closed') return
    c.reason ??= reason
    c.socket.destroy()
    // 'close' follows asynchronously and runs #cleanup; mark now so nothing else is parsed.
    this.#cleanup(c, c.reason, c.error)
  }

  #onEnd(c: Conn): void {
    if (c.state === 'closed') return
    const truncated = c.need >= 0 || c.hdrLen > 0
    if (truncated) {
      this.count('dropped_truncated')
      return this.#destroy(c, 'truncated')
    }
    c.ended = true
    // A draining connection waits for its successor (which supersedes it) or its timer.
    if (c.state === 'draining') return
    this.#destroy(c, c.reason ?? 'remote')
  }

  /** Forgets a connection (idempotent): rejects its queue and waiters, fires the close callbacks. */
  #cleanup(c: Conn, reason: TcpCloseReason, error: unknown): void {
    if (c.state === 'closed') return
    const prev = c.state
    c.state = 'closed'
    if (!c.socket.destroyed) c.socket.destroy()
    this.#clock.clearTimeout(c.timer)
    c.timer = undefined
    c.parts = []
    c.frame = null
    c.held = []
    this.#conns.delete(c)
    if (c.dialled && this.#dialing.get(c.dialled.key) === c) this.#dialing.delete(c.dialled.key)
    if (prev === 'superseded') return
    const current = c.peer !== null && this.#byId.get(c.peer.idHex) === c
    if (current) this.#byId.delete(c.peer!.idHex)
    const what = c.peer ? `node ${c.peer.idHex.slice(0, 16)}… (${c.remote.key})` : c.remote.key
    const err =
      prev === 'open' || prev === 'draining'
        ? new DeccomError(ErrorCode.TCP_CONNECTION_CLOSED, `The TCP connection to ${what} closed (${reason}) before the frame was written`, { cause: error ?? undefined, details: { reason } })
        : reason === 'stopped'
          ? closed()
          : error instanceof DeccomError
            ? error
            : new DeccomError(ErrorCode.TCP_CONNECT_FAILED, `Could not open a TCP connection to ${what} (${reason}${error ? ': ' + String((error as Error).message ?? error) : ''})`, {
                cause: error ?? undefined,
                details: { reason },
              })
    for (let i = c.qhead; i < c.queue.length; i++) c.queue[i].reject(err)
    c.queue.length = 0
    c.qhead = 0
    c.queuedBytes = 0
    for (const w of c.waiters) w.reject(err)
    c.waiters = []
    if (prev !== 'open' && prev !== 'draining') {
      if (prev === 'hello' || prev === 'checking') this.count('handshakes_failed')
      return
    }
    this.count('connections_closed')
    if (reason === 'truncated' || reason === 'error' || reason === 'oversized' || reason === 'malformed') this.count(`closed_${reason}`)
    this.#log('connection to %s closed: %s', what, reason)
    const peer = c.peer!
    try {
      this.upper.onStreamClosed(peer, reason, error ?? undefined)
    } catch (e) {
      this.count('handler_errors')
      queueMicrotask(() => {
        throw e
      })
    }
    try {
      this.#events.emit('close', peer, reason, error ?? undefined)
    } catch (e) {
      this.count('handler_errors')
      queueMicrotask(() => {
        throw e
      })
    }
  }
}

interface ConnRef {
  c: Conn | null
}

interface NoiseLike {
  remoteId(a: AddressLike): Buffer | null
  approveConnection(a: AddressLike): Promise<boolean>
}

function safeIdOf(publicIdentity: Buffer): Buffer | null {
  try {
    return Identity.idOf(publicIdentity)
  } catch {
    return null
  }
}

function controlLimit(type: number): number {
  return type === T_HELLO ? MAX_HELLO : type === T_AUTH ? SIG_LEN : type === T_OBSERVED ? RAW_ADDR_LEN : 0
}

/** Observations agree when they name the same IP and the same port behaviour (kept or rewritten). */
function mappingKey(o: TcpObservation): string {
  return `${o.address.host}|${o.address.port === o.localPort ? 'kept' : 'rewritten'}`
}

/** A node id in hex when `to` names one (32-byte buffer, 64 hex digits, a TcpPeer), else null. */
function idOf(to: TcpTarget): string | null {
  if (to instanceof Uint8Array) {
    if (to.length !== 32) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `A node id is 32 bytes, got ${to.length}`)
    return Buffer.from(to.buffer, to.byteOffset, 32).toString('hex')
  }
  if (typeof to === 'string') return /^[0-9a-fA-F]{64}$/.test(to) ? to.toLowerCase() : null
  if (to !== null && typeof to === 'object' && 'idHex' in to && typeof to.idHex === 'string') return to.idHex
  return null
}

function stripMapped(host: string): string {
  return host.startsWith('::ffff:') && net.isIPv4(host.slice(7)) ? host.slice(7) : host
}

/** Decodes an 18-byte raw address; an unspecified host becomes `fallbackHost`. */
function decodeRaw(raw: Buffer, fallbackHost: string): Address | null {
  const port = raw.readUInt16BE(16)
  let host: string
  const v4 = raw.subarray(0, 10).every((x) => x === 0) && raw[10] === 0xff && raw[11] === 0xff
  if (v4) host = `${raw[12]}.${raw[13]}.${raw[14]}.${raw[15]}`
  else {
    const parts: string[] = []
    for (let i = 0; i < 16; i += 2) parts.push(raw.readUInt16BE(i).toString(16))
    host = parts.join(':')
  }
  if (host === '0.0.0.0' || /^0(:0){7}$/.test(host)) host = fallbackHost
  try {
    return toAddress(net.isIPv6(host) ? compressV6(host) : host, port)
  } catch {
    return null
  }
}

/** The canonical (compressed) text of an IPv6 address, as Node prints it. */
function compressV6(host: string): string {
  return new URL(`http://[${host}]/`).hostname.slice(1, -1)
}

function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The TCP transport is not running (not started yet, or closed)')
}
