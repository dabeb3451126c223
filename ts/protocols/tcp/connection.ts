/**
 * TcpTransport: the public types and one connection's state (the introduction, the send queue and
 * the frame parser's position). The logic that drives a connection lives in `transport.ts`.
 */
import { randomBytes } from 'node:crypto'
import type net from 'node:net'
import type { Address, AddressLike } from '../../address'
import type { TimerHandle } from '../../clock'
import { DeccomError, ErrorCode } from '../../errors'
import { Identity } from '../../identity'
import { NONCE_LEN, TCP_HEADER_SIZE } from './codec'

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

export interface Pending {
  data: Uint8Array
  tag: number
  resolve: () => void
  reject: (e: Error) => void
}

export interface Waiter {
  resolve: (p: TcpPeer) => void
  reject: (e: Error) => void
}

export type ConnState = 'hello' | 'checking' | 'open' | 'draining' | 'superseded' | 'closed'

export class Conn {
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

export interface ConnRef {
  c: Conn | null
}

/** What the transport uses of a Noise layer below (its optional bindings). */
export interface NoiseLike {
  remoteId(a: AddressLike): Buffer | null
  approveConnection(a: AddressLike): Promise<boolean>
}

export function safeIdOf(publicIdentity: Buffer): Buffer | null {
  try {
    return Identity.idOf(publicIdentity)
  } catch {
    return null
  }
}

/** Observations agree when they name the same IP and the same port behaviour (kept or rewritten). */
export function mappingKey(o: TcpObservation): string {
  return `${o.address.host}|${o.address.port === o.localPort ? 'kept' : 'rewritten'}`
}

/** A node id in hex when `to` names one (32-byte buffer, 64 hex digits, a TcpPeer), else null. */
export function idOf(to: TcpTarget): string | null {
  if (to instanceof Uint8Array) {
    if (to.length !== 32) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `A node id is 32 bytes, got ${to.length}`)
    return Buffer.from(to.buffer, to.byteOffset, 32).toString('hex')
  }
  if (typeof to === 'string') return /^[0-9a-fA-F]{64}$/.test(to) ? to.toLowerCase() : null
  if (to !== null && typeof to === 'object' && 'idHex' in to && typeof to.idHex === 'string') return to.idHex
  return null
}
