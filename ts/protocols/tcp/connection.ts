/**
 * TcpTransport: the public types, one connection's state, and what happens on one connection: the
 * frame parser (receiving), the send queue (sending), idle close and cleanup (closing). Connections
 * are created by the layer (`transport.ts`); the introduction is `introduction.ts`.
 */
import { randomBytes } from 'node:crypto'
import type net from 'node:net'
import type { Address, AddressLike } from '../../address'
import type { Clock, TimerHandle } from '../../clock'
import { DeccomError, ErrorCode } from '../../errors'
import { Identity } from '../../identity'
import type { ObservationTable } from '../observations'
import { NONCE_LEN, TCP_HEADER_SIZE, TCP_MAX_TAG, checkFrameHeader, encodeFrame, encodeFrameHeader } from './codec'

/** Frames up to this size are copied behind their header (one write); larger ones are written by reference. */
const COPY_LIMIT = 16 * 1024
/** Size of the shared buffer that reads at frame boundaries go into (consumed within the read callback). */
export const SCRATCH_SIZE = 64 * 1024
/**
 * A frame body up to this size that spans reads gets its own buffer when its header arrives, and the
 * rest of it is read straight into that buffer (no copy). Per connection, memory may then run ahead
 * of the bytes received by at most this much. A larger body is gathered in pieces until half of it
 * is here, then copied into its own buffer, and the other half is read straight into it.
 */
const DIRECT_LIMIT = 64 * 1024

/** Options of {@link TcpTransport}. */
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
  /**
   * Most accepted connections whose introduction has not completed (default 128). A new one beyond
   * it evicts the oldest (`pending_evicted`), so idle or slow connections cannot lock peers out.
   */
  maxPendingConnections?: number
  /** Refuse peers whose introduction is not signed (default: true when a Noise layer is below). */
  requireAuthentication?: boolean
  /** Socket buffer high-water mark in bytes (default 1 MiB). */
  highWaterMark?: number
  /** TCP observations kept, one per observing peer (default 32; see {@link TcpTransport.tcpMapping}). */
  maxObservations?: number
}

/** A peer (`observer`) saw one of our connections come from `address`; our end was `localPort`. */
export interface TcpObservation {
  /** The node id of the peer that reported it. */
  observer: Buffer
  /** That node id in hex. */
  observerHex: string
  /** The address it saw the connection come from. */
  address: Address
  /** Our local port of that connection. */
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
  /** The node id in hex. */
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

  /** Bytes held by the parser for this connection (partial header and body, frames held until open). */
  get buffered(): number {
    let b = this.hdrLen + (this.frame?.length ?? 0)
    for (const p of this.parts) b += p.length
    for (const [body] of this.held) b += body.length
    return b
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

/** The TcpTransport options with their defaults applied. */
export type ResolvedTcpOptions = Required<Omit<TcpTransportOptions, 'host' | 'requireAuthentication'>> & { host?: string; requireAuthentication?: boolean }

/**
 * What the connection and introduction functions use of the TcpTransport layer: its state (read
 * through getters, as the layer sets some of it at start) and the operations that stay in the layer.
 */
export interface TcpHost {
  readonly opts: ResolvedTcpOptions
  readonly clock: Clock
  readonly identity: Identity
  /** Our UDP address (announced in HELLO), if the layer below has one. */
  readonly udp: Address | null
  /** Our TCP listening address. */
  readonly local: Address | null
  readonly noise: NoiseLike | null
  readonly requireAuth: boolean
  /** The shared buffer reads at frame boundaries go into. */
  readonly scratch: Buffer
  /** Current connection per peer id (hex). */
  readonly byId: Map<string, Conn>
  /** Outbound connections not yet open, by the dialled address key. */
  readonly dialing: Map<string, Conn>
  /** Known TCP listening address → peer id (hex), and back. */
  readonly idOfAddr: Map<string, string>
  readonly addrOfId: Map<string, Address>
  readonly observations: ObservationTable<TcpObservation>
  /** Every connection, open or not. */
  readonly conns: Set<Conn>
  /** Accepted connections not yet introduced, oldest first. */
  readonly pending: Set<Conn>
  count(name: string, n?: number): void
  log(fmt: string, ...a: unknown[]): void
  /** A whole frame arrived on `c`. */
  frame(c: Conn, type: number, body: Buffer): void
  /** A data frame for the application. */
  deliver(c: Conn, data: Buffer, tag: number): void
  destroy(c: Conn, reason: TcpCloseReason): void
  close(c: Conn, reason: TcpCloseReason): void
  armIdle(c: Conn): void
  /** An open stream closed: tell the layer above and the 'close' listeners. */
  streamClosed(peer: TcpPeer, reason: TcpCloseReason, error: unknown): void
}

// ------------------------------------------------------------------------------------------------
// Receiving and sending on one connection

/** The buffer the next read of `c` goes into (the `onread` buffer function). */
export function readBuffer(t: TcpHost, c: Conn): Uint8Array {
  if (c.frame) return c.frame.subarray(c.filled)
  if (c.need > 0) return Buffer.allocUnsafe(Math.min(c.need + TCP_HEADER_SIZE, SCRATCH_SIZE))
  return c.busy ? Buffer.allocUnsafe(SCRATCH_SIZE) : t.scratch
}

/** `n` bytes were read into `buf` (the buffer {@link #readBuffer} gave for this read). */
export function onRead(t: TcpHost, c: Conn, n: number, buf: Buffer): void {
  const f = c.frame
  c.busy = n === buf.length
  // Frames may stay views of a buffer of ours that the read filled at least half (as Node shrinks
  // a partly filled read buffer, a small frame must not pin a large one); otherwise they are copied.
  if (f === null || buf.buffer !== f.buffer || buf.byteOffset !== f.byteOffset + c.filled) return onBytes(t, c, buf.subarray(0, n), buf !== t.scratch && 2 * n >= buf.length)
  if (c.state === 'closed') return
  c.filled += n
  frameFilled(t, c)
}

/** After bytes went into `c.frame`: delivers it once complete, then parses what follows it. */
export function frameFilled(t: TcpHost, c: Conn): void {
  const f = c.frame!
  if (c.filled < c.frameLen) {
    c.need = c.frameLen - c.filled
    return
  }
  // The body is complete; up to TCP_HEADER_SIZE bytes after it belong to the next header.
  const end = c.filled
  c.frame = null
  c.need = -1
  t.frame(c, c.type, f.subarray(0, c.frameLen))
  if (end > c.frameLen) onBytes(t, c, f.subarray(c.frameLen, end), true)
}

/**
 * Parses received bytes. `owned`: `chunk` is ours to keep (frames may be views of it); otherwise it
 * is the shared scratch buffer, and whatever is kept is copied out.
 */
export function onBytes(t: TcpHost, c: Conn, chunk: Buffer, owned: boolean): void {
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
      frameFilled(t, c)
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
      const verdict = checkFrameHeader(type, len, t.opts.maxFrameSize)
      if (verdict === 'oversized') {
        t.count('dropped_oversized')
        t.log('%s announced a frame of %d bytes (max %d): closing', c.remote.key, len, t.opts.maxFrameSize)
        return t.destroy(c, 'oversized')
      }
      if (verdict === 'malformed') {
        t.count('dropped_malformed')
        return t.destroy(c, 'malformed')
      }
      if (type <= TCP_MAX_TAG && c.state === 'hello') {
        // A data frame before the peer's HELLO (and its announced AUTH) checked out: a peer that
        // has proved nothing reserves no buffer. Closed at the header, before its body is read.
        t.count('dropped_malformed')
        t.count('dropped_before_hello')
        t.log('%s sent a data frame before its introduction: closing', c.remote.key)
        return t.destroy(c, 'malformed')
      }
      if (n - off >= len) {
        const body = owned ? chunk.subarray(off, off + len) : Buffer.from(chunk.subarray(off, off + len))
        off += len
        t.frame(c, type, body)
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
      t.frame(c, c.type, body)
    }
  }
}

export function write(t: TcpHost, c: Conn, data: Uint8Array, tag: number): void {
  const len = data.length
  let ok: boolean
  if (len <= COPY_LIMIT) {
    ok = c.socket.write(encodeFrame(tag, data))
  } else {
    c.socket.cork()
    c.socket.write(encodeFrameHeader(len, tag))
    ok = c.socket.write(data)
    c.socket.uncork()
  }
  t.count('frames_sent')
  t.count('bytes_sent', len)
  c.lastActive = t.clock.now()
  if (!ok) {
    c.blocked = true
    t.count('backpressure_waits')
  }
}

export function writeRaw(t: TcpHost, c: Conn, body: Buffer, type: number): void {
  c.socket.write(encodeFrame(type, body))
}

export function onDrain(t: TcpHost, c: Conn): void {
  c.blocked = false
  flush(t, c)
}

export function flush(t: TcpHost, c: Conn): void {
  if (c.state !== 'open') return
  while (!c.blocked && c.qhead < c.queue.length) {
    const p = c.queue[c.qhead]
    c.queue[c.qhead++] = undefined as unknown as Pending
    c.queuedBytes -= p.data.length
    write(t, c, p.data, p.tag)
    p.resolve()
  }
  if (c.qhead === c.queue.length) {
    c.queue.length = 0
    c.qhead = 0
  }
}

// ------------------------------------------------------------------------------------------------
// Closing

export function armIdle(t: TcpHost, c: Conn): void {
  t.clock.clearTimeout(c.timer)
  const fire = (): void => {
    c.timer = undefined
    if (c.state !== 'open' || c.refs > 0) return
    const idle = t.clock.now() - c.lastActive
    if (idle < t.opts.idleTimeout || c.queued > 0 || c.socket.writableLength > 0) {
      c.timer = t.clock.setTimeout(fire, Math.max(1, t.opts.idleTimeout - idle))
      return
    }
    t.count('idle_closed')
    close(t, c, 'idle')
  }
  c.timer = t.clock.setTimeout(fire, t.opts.idleTimeout)
}

/** Graceful close: half-close and read to the end (bounded), then destroy. */
export function close(t: TcpHost, c: Conn, reason: TcpCloseReason): void {
  if (c.state === 'closed') return
  c.reason ??= reason
  if (c.state === 'hello' || c.state === 'checking') return destroy(t, c, reason)
  t.clock.clearTimeout(c.timer)
  c.socket.end()
  c.socket.resume()
  c.timer = t.clock.setTimeout(() => {
    c.timer = undefined
    destroy(t, c, reason)
  }, 2000)
}

export function destroy(t: TcpHost, c: Conn, reason: TcpCloseReason): void {
  if (c.state === 'closed') return
  c.reason ??= reason
  c.socket.destroy()
  // 'close' follows asynchronously and runs #cleanup; mark now so nothing else is parsed.
  cleanup(t, c, c.reason, c.error)
}

export function onEnd(t: TcpHost, c: Conn): void {
  if (c.state === 'closed') return
  const truncated = c.need >= 0 || c.hdrLen > 0
  if (truncated) {
    t.count('dropped_truncated')
    return destroy(t, c, 'truncated')
  }
  c.ended = true
  // A draining connection waits for its successor (which supersedes it) or its timer.
  if (c.state === 'draining') return
  destroy(t, c, c.reason ?? 'remote')
}

/** Forgets a connection (idempotent): rejects its queue and waiters, fires the close callbacks. */
export function cleanup(t: TcpHost, c: Conn, reason: TcpCloseReason, error: unknown): void {
  if (c.state === 'closed') return
  const prev = c.state
  c.state = 'closed'
  if (!c.socket.destroyed) c.socket.destroy()
  t.clock.clearTimeout(c.timer)
  c.timer = undefined
  c.parts = []
  c.frame = null
  c.held = []
  t.conns.delete(c)
  t.pending.delete(c)
  if (c.dialled && t.dialing.get(c.dialled.key) === c) t.dialing.delete(c.dialled.key)
  if (prev === 'superseded') return
  const current = c.peer !== null && t.byId.get(c.peer.idHex) === c
  if (current) t.byId.delete(c.peer!.idHex)
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
    if (prev === 'hello' || prev === 'checking') t.count('handshakes_failed')
    t.log('connection %s %s failed before opening (%s): %s', c.outbound ? 'to' : 'from', what, prev, err.message)
    return
  }
  t.count('connections_closed')
  if (reason === 'truncated' || reason === 'error' || reason === 'oversized' || reason === 'malformed') t.count(`closed_${reason}`)
  t.log('connection to %s closed: %s', what, reason)
  t.streamClosed(c.peer!, reason, error ?? undefined)
}

export function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The TCP transport is not running (not started yet, or closed)')
}
