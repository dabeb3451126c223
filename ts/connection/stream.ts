/**
 * One stream of a {@link Connection}: a Node.js `Duplex`, ordered and reliable, with its own
 * flow-control window (docs/wire.md#connections-tag-12).
 *
 * Receiving: DATA frames may arrive out of order (reliable messages are delivered whole but not in
 * order); bytes are put in order here and handed to the readable side as the application reads.
 * The peer may send at most `window` bytes past what the application has read (MAX_DATA credits,
 * sent as it reads), so an unread stream holds at most `window` bytes.
 * Sending: `write()` hands bytes to the connection as far as the peer's credit allows; beyond that
 * the write waits (and `write()` returns false once the writable buffer is full, `'drain'` follows).
 */
import { Duplex } from 'node:stream'
import { DeccomError, ErrorCode } from '../errors'

/** What `_write`/`_writev` handed over and is not sent yet: its chunks, the next one to send from and where in it, the bytes left. */
interface Pending {
  chunks: Buffer[]
  i: number
  at: number
  left: number
  cb: (e?: Error | null) => void
}

/** What a stream needs from its connection. */
export interface StreamHost {
  /** Bytes the connection may send now (connection-level credit and carrier room). */
  sendCredit(): number
  /**
   * Sends a DATA frame whose payload is `data` (or the pieces of it back to back); resolves when
   * the carrier acknowledged it.
   */
  sendData(stream: Stream, offset: number, fin: boolean, data: Uint8Array | readonly Uint8Array[]): Promise<void>
  /** Sends MAX_DATA for the stream. */
  sendMaxData(stream: number, max: number): void
  /** Sends RESET for the stream: `finished` when all its bytes were sent (`finalSize` of them). */
  sendReset(stream: number, code: number, finished: boolean, finalSize: number): void
  /** The application read `n` bytes of some stream (connection-level credit). */
  consumed(n: number): void
  /**
   * The stream holds `delta` more (or fewer) separate out-of-order ranges; false when that would
   * exceed the connection's limit (a protocol violation: no honest sender causes it).
   */
  reordered(delta: number): boolean
  /** Waits for connection-level credit: `fn` runs once credit is back. */
  waitCredit(stream: Stream): void
  /** The stream is finished (both directions, or reset): forget it. */
  closed(stream: Stream): void
}

/** Largest payload of one DATA frame. */
export const MAX_FRAME = 128 * 1024

/** Code a RESET carries when a stream is destroyed without an error (cancelled). */
export const RESET_CANCEL = 0
/** Code a RESET carries when a stream is destroyed with an error that names no numeric code. */
export const RESET_ERROR = 1

/** Options of a {@link Stream} (`conn.openStream(opts)`). */
export interface StreamOptions {
  /** Writable buffer in bytes before `write()` returns false (default 256 KiB). */
  highWaterMark?: number
}

/**
 * One stream of a {@link Connection}: a Node.js `Duplex`, ordered and reliable, with its own
 * flow-control window (the peer may send at most that many bytes beyond what the application has
 * read). `end()` finishes the sending side; `reset(code)` abandons both.
 */
export class Stream extends Duplex {
  /** The stream id on its connection (odd or even by the side that opened it). */
  readonly id: number
  readonly #host: StreamHost
  readonly #window: number
  // sending
  #sendOffset = 0
  #peerMax: number
  #acked = 0
  #pending: Pending | null = null
  #finWanted: ((e?: Error | null) => void) | null = null
  #finSent = false
  // receiving
  #recvOffset = 0
  #recvMax: number
  #consumed = 0
  #finalSize = -1
  /** The end of the furthest bytes received (in order or not): a final size may not be below it. */
  #recvHighest = 0
  /** Bytes in order, not yet handed to the readable side (small pieces coalesced, see {@link append}). */
  readonly #queue: Buffer[] = []
  /** Out-of-order ranges waiting for the gap before them, by start and by end (adjacent pieces merge). */
  readonly #runs = new Map<number, Run>()
  readonly #runEnds = new Map<number, Run>()
  #wanting = false
  #ended = false
  #resetBy: 'local' | 'remote' | null = null

  /** @internal Made by Connection: `peerWindow` is what the peer lets us send, `window` what we let it. */
  constructor(host: StreamHost, id: number, peerWindow: number, window: number, opts: StreamOptions = {}) {
    super({ allowHalfOpen: true, writableHighWaterMark: opts.highWaterMark ?? 256 * 1024, readableHighWaterMark: 64 * 1024 })
    this.#host = host
    this.id = id
    this.#peerMax = peerWindow
    this.#window = window
    this.#recvMax = window
    this.once('close', () => this.#host.closed(this))
  }

  /** Bytes handed to the connection so far (sent, maybe not yet acknowledged). */
  get bytesSent(): number {
    return this.#sendOffset
  }

  /** Bytes of this stream the peer's transport acknowledged. */
  get bytesAcknowledged(): number {
    return this.#acked
  }

  /** Bytes received in order so far. */
  get bytesReceived(): number {
    return this.#recvOffset
  }

  /** Abandons the stream in both directions; the peer's stream errors with `code` (ERR_DECCOM_STREAM_RESET). */
  reset(code = RESET_CANCEL): void {
    this.destroy(Object.assign(new DeccomError(ErrorCode.STREAM_RESET, `Stream ${this.id} reset locally with code ${code}`, { details: { code, by: 'local' } }), { resetCode: code }))
  }

  // ---- writable side ----------------------------------------------------------------------

  /** @internal The Writable implementation. */
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.#pending = { chunks: [chunk], i: 0, at: 0, left: chunk.length, cb }
    this.#pump()
  }

  /** @internal The Writable implementation: the chunks are copied into frames, not joined first. */
  override _writev(chunks: { chunk: Buffer }[], cb: (e?: Error | null) => void): void {
    const list = chunks.map((c) => c.chunk)
    let left = 0
    for (const c of list) left += c.length
    this.#pending = { chunks: list, i: 0, at: 0, left, cb }
    this.#pump()
  }

  /** The next `n` pending bytes, as views of the chunks they are in (consumed). */
  #take(p: Pending, n: number): Uint8Array | Uint8Array[] {
    const first = p.chunks[p.i]!
    if (first.length - p.at >= n) {
      // The common case: the bytes are in one chunk.
      const piece = first.subarray(p.at, p.at + n)
      p.at += n
      if (p.at === first.length) {
        p.i++
        p.at = 0
      }
      p.left -= n
      return piece
    }
    const pieces: Uint8Array[] = []
    for (let want = n; want > 0; ) {
      const c = p.chunks[p.i]!
      const k = Math.min(want, c.length - p.at)
      pieces.push(c.subarray(p.at, p.at + k))
      p.at += k
      want -= k
      if (p.at === c.length) {
        p.i++
        p.at = 0
      }
    }
    p.left -= n
    return pieces
  }

  /** @internal The Writable implementation. */
  override _final(cb: (e?: Error | null) => void): void {
    this.#finWanted = cb
    this.#pump()
  }

  /** @internal Sends what credit allows; called on write, and when credit comes back. */
  pump(): void {
    this.#pump()
  }

  #pump(): void {
    if (this.destroyed || this.#resetBy) return
    const p = this.#pending
    if (p) {
      while (p.left > 0) {
        const credit = Math.min(this.#peerMax - this.#sendOffset, this.#host.sendCredit())
        if (credit <= 0) {
          if (this.#peerMax - this.#sendOffset > 0) this.#host.waitCredit(this)
          return
        }
        const n = Math.min(credit, p.left, MAX_FRAME)
        const piece = this.#take(p, n)
        const offset = this.#sendOffset
        this.#sendOffset += n
        this.#host.sendData(this, offset, false, piece).then(
          () => {
            this.#acked += n
          },
          () => {},
        )
      }
      this.#pending = null
      p.cb()
    }
    const fin = this.#finWanted
    if (fin && !this.#finSent) {
      this.#finSent = true
      this.#finWanted = null
      this.#host.sendData(this, this.#sendOffset, true, EMPTY).catch(() => {})
      fin()
    }
  }

  /** @internal MAX_DATA from the peer. */
  onMaxData(max: number): void {
    if (max <= this.#peerMax) return
    this.#peerMax = max
    this.#pump()
  }

  // ---- readable side ----------------------------------------------------------------------

  /**
   * @internal DATA from the peer. Returns false when it violates flow control (the connection
   * closes then). Bytes the stream no longer wants are counted as consumed at once.
   */
  onData(offset: number, data: Buffer, fin: boolean): boolean {
    const end = offset + data.length
    if (end > this.#recvMax) return false
    if (fin) {
      if (this.#finalSize >= 0 && this.#finalSize !== end) return false
      // Bytes already received past this final size (frames reorder): it contradicts them.
      if (end < this.#recvHighest) return false
      this.#finalSize = end
    } else if (this.#finalSize >= 0 && end > this.#finalSize) return false
    // (An empty frame carries no bytes: it opens the stream at 0 or carries the FIN at the end.)
    if (data.length > 0 && end > this.#recvHighest) this.#recvHighest = end
    if (this.#resetBy || this.#ended) {
      this.#host.consumed(data.length)
      return true
    }
    if (end <= this.#recvOffset) {
      // Nothing new (an empty FIN at the end, or bytes already had): the end may be due now.
      if (data.length > 0) this.#host.consumed(data.length)
      this.#flush()
      return true
    }
    if (offset > this.#recvOffset) {
      // Out of order: kept until the gap fills. Empty frames carry nothing to keep (their FIN, if
      // any, is recorded above), so they cost no memory however many arrive.
      if (data.length === 0) return true
      if (!this.#store(offset, end, data)) return false
    } else {
      // In order (a duplicate prefix, if any, is cut).
      const skip = this.#recvOffset - offset
      if (skip > 0) this.#host.consumed(skip)
      append(this.#queue, skip > 0 ? data.subarray(skip) : data)
      this.#recvOffset = end
      for (let r = this.#runs.get(this.#recvOffset); r !== undefined; r = this.#runs.get(this.#recvOffset)) {
        this.#runs.delete(r.start)
        this.#runEnds.delete(r.end)
        this.#host.reordered(-1)
        for (const b of r.parts) append(this.#queue, b)
        this.#recvOffset = r.end
      }
    }
    this.#flush()
    return true
  }

  /**
   * Keeps the out-of-order bytes `[offset, end)`: they extend the range ending at `offset` and/or
   * the one starting at `end`, else open a new range (false: too many ranges on the connection).
   * Bytes at a start already held are a duplicate (a hostile peer's: dropped, counted as read).
   */
  #store(offset: number, end: number, data: Buffer): boolean {
    if (this.#runs.has(offset)) {
      this.#host.consumed(data.length)
      return true
    }
    const before = this.#runEnds.get(offset)
    const after = this.#runs.get(end)
    if (before !== undefined) {
      this.#runEnds.delete(before.end)
      append(before.parts, data)
      before.end = end
      if (after !== undefined) {
        this.#runs.delete(after.start)
        this.#runEnds.delete(after.end)
        this.#host.reordered(-1)
        for (const b of after.parts) append(before.parts, b)
        before.end = after.end
      }
      this.#runEnds.set(before.end, before)
    } else if (after !== undefined) {
      this.#runs.delete(after.start)
      after.start = offset
      prepend(after.parts, data)
      this.#runs.set(offset, after)
    } else {
      if (!this.#host.reordered(1)) return false
      const r: Run = { start: offset, end, parts: [] }
      append(r.parts, data)
      this.#runs.set(offset, r)
      this.#runEnds.set(end, r)
    }
    return true
  }

  /** @internal The Readable implementation. */
  override _read(): void {
    this.#wanting = true
    this.#flush()
  }

  /**
   * A small piece may wait in the queue (see #flush) only while the reader has bytes to chew on:
   * as soon as a read comes back empty-handed (`null` for a read that asked for bytes) or leaves
   * the readable buffer empty, everything queued goes out. `read(0)` (Node refilling up to the
   * high-water mark on its own) does not count as asking.
   */
  override read(size?: number): any {
    const r = super.read(size)
    if (size !== 0) {
      // Asked and got nothing: the next bytes go out at once, however small.
      if (r === null) this.#starving = true
      if (this.#queue.length > 0 && (r === null || this.readableLength === 0) && !this.#releasing) {
        // Not from inside read(): a push there (and the end that may follow it) can emit
        // 'readable' synchronously, and a reader's handler would then take these bytes before the
        // ones this read is returning.
        this.#releasing = true
        process.nextTick(() => {
          this.#releasing = false
          if (this.destroyed) return
          this.#wanting = true
          this.#flush(true)
        })
      }
    }
    return r
  }

  /** A release of held pieces is scheduled (see {@link read}). */
  #releasing = false

  /** A read asked for bytes and got none since the last push. */
  #starving = false

  #flush(force = false): void {
    while (this.#wanting && this.#queue.length > 0) {
      // A small piece waits (coalescing with the next ones) while the readable side still holds
      // bytes and nobody asked for more: the readable buffer never fills up with tiny chunks.
      if (!force && !this.#starving && this.readableLength > 0 && this.#queue.length === 1 && this.#queue[0]!.length < COALESCE) break
      const b = this.#queue.shift()!
      this.#consumed += b.length
      this.#host.consumed(b.length)
      this.#starving = false
      this.#wanting = this.push(b)
    }
    if (!this.#ended && this.#finalSize >= 0 && this.#consumed === this.#finalSize && this.#queue.length === 0) {
      this.#ended = true
      this.push(null)
      return
    }
    // Credit: once half the window is read, let the peer send a whole window past what was read.
    if (this.#finalSize < 0 && this.#recvMax - this.#consumed <= this.#window / 2) {
      this.#recvMax = this.#consumed + this.#window
      this.#host.sendMaxData(this.id, this.#recvMax)
    }
  }

  /**
   * @internal RESET from the peer: the stream errors with ERR_DECCOM_STREAM_RESET and `code` —
   * unless the peer had sent all its bytes (`finished`) and we had too: then what it sent is still
   * read to the end (it only stopped reading). Returns false when it contradicts the final size.
   */
  onReset(code: number, finished: boolean, finalSize: number): boolean {
    if (this.#resetBy || this.destroyed) return true
    if (finished) {
      if (this.#finalSize >= 0 && this.#finalSize !== finalSize) return false
      if (finalSize < this.#recvHighest || finalSize > this.#recvMax) return false
      this.#finalSize = finalSize
      if (this.#finSent) return true
    }
    this.#resetBy = 'remote'
    this.#release()
    this.#fatal(new DeccomError(ErrorCode.STREAM_RESET, `The peer reset stream ${this.id} with code ${code}`, { details: { code, by: 'remote' } }))
    return true
  }

  /**
   * The error that ended the stream from outside (a reset by the peer, the connection closing),
   * also when nobody listened for `'error'`; null otherwise.
   */
  get closeError(): Error | null {
    return this.#closeError
  }

  #closeError: Error | null = null

  /**
   * Ends the stream with `err`: as an `'error'` event when someone listens (for await, pipeline
   * and `on('error')` all do), otherwise quietly (`'close'`, with `closeError` set) — what a peer
   * does never throws an unhandled error in the application.
   */
  #fatal(err: Error): void {
    this.#closeError = err
    if (this.listenerCount('error') > 0) this.destroy(err)
    else this.destroy()
  }

  /**
   * @internal The connection is gone: fail the stream with `err` — unless both directions were
   * complete (our FIN sent, every byte of the peer's arrived): then it still reads to its end.
   */
  fail(err: Error): void {
    if (this.destroyed) return
    if (this.#finSent && this.#finalSize >= 0 && this.#recvOffset === this.#finalSize) return
    this.#resetBy = 'remote'
    this.#release()
    this.#fatal(err)
  }

  /** Buffered bytes go back to the connection's credit. */
  #release(): void {
    let n = 0
    for (const b of this.#queue) n += b.length
    for (const r of this.#runs.values()) n += r.end - r.start
    if (this.#runs.size > 0) this.#host.reordered(-this.#runs.size)
    this.#queue.length = 0
    this.#runs.clear()
    this.#runEnds.clear()
    if (n > 0) this.#host.consumed(n)
  }

  /** @internal The Duplex implementation. */
  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    const clean = this.#ended && this.#finSent && err === null
    if (!this.#resetBy && !clean) {
      this.#resetBy = 'local'
      const code = (err as { resetCode?: unknown } | null)?.resetCode
      this.#host.sendReset(this.id, typeof code === 'number' ? code >>> 0 : err ? RESET_ERROR : RESET_CANCEL, this.#finSent, this.#sendOffset)
      this.#release()
    }
    const p = this.#pending
    this.#pending = null
    const fin = this.#finWanted
    this.#finWanted = null
    const e = err ?? new DeccomError(ErrorCode.STREAM_RESET, `Stream ${this.id} was destroyed`, { details: { code: RESET_CANCEL, by: 'local' } })
    p?.cb(e)
    fin?.(e)
    // Ranges a peer left stranded (overlapping pieces that never joined) are let go too.
    this.#release()
    cb(err)
  }
}

const EMPTY = Buffer.alloc(0)

/** Pieces below this size are copied and merged: held bytes cost about their size, not a Buffer each. */
const COALESCE = 1024

/** An out-of-order range of a stream: bytes `[start, end)` in `parts`. */
interface Run {
  start: number
  end: number
  parts: Buffer[]
}

/**
 * Appends `b` to `parts`, merging it into the last part when both fit in {@link COALESCE} bytes,
 * and copying a small piece (so it pins no larger received buffer). Parts average at least half
 * of COALESCE, whatever the peer's frame sizes.
 */
function append(parts: Buffer[], b: Buffer): void {
  if (b.length === 0) return
  const last = parts[parts.length - 1]
  if (last !== undefined && last.length + b.length <= COALESCE) parts[parts.length - 1] = join(last, b)
  else parts.push(b.length < COALESCE ? join(b) : b)
}

/** {@link append} at the front. */
function prepend(parts: Buffer[], b: Buffer): void {
  const first = parts[0]
  if (first !== undefined && first.length + b.length <= COALESCE) parts[0] = join(b, first)
  else parts.unshift(b.length < COALESCE ? join(b) : b)
}

/** A copy of the pieces in a buffer of its own (not a slice of the shared pool). */
function join(...bs: Buffer[]): Buffer {
  let n = 0
  for (const b of bs) n += b.length
  const out = Buffer.allocUnsafeSlow(n)
  let at = 0
  for (const b of bs) {
    out.set(b, at)
    at += b.length
  }
  return out
}
