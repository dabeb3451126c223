/**
 * A connection to one peer: messages and multiplexed streams over one carrier (reliable messages
 * through the stack, or a TCP connection), with connection-level flow control and stream limits
 * (docs/wire.md#connections-tag-12, docs/connections.md).
 *
 * Made by {@link Connections} (ts/connection/manager.ts) once both HELLOs are exchanged; the
 * application gets it from `node.connect()` or `node.on('connection')`.
 */
import { EventEmitter } from 'node:events'
import { Waiters } from '../abort'
import type { Clock, TimerHandle } from '../clock'
import { abortError, DeccomError, ErrorCode } from '../errors'
import type { Peer } from '../peer'
import { DATA_HEADER, encodeData, encodeMux, type MuxFrame } from '../wire/mux'
import { Stream, type StreamHost, type StreamOptions } from './stream'

/** How the connection reaches its peer. */
export type ConnectionPath = 'direct' | 'punched' | 'relayed' | 'tcp'

/** What carries a connection's frames: each frame is one reliable message (or TCP frame) of tag 12. */
export interface Carrier {
  /** Sends one frame; resolves when the carrier delivered it (acknowledged, or handed to TCP). */
  send(frame: Buffer): Promise<void>
  /** Frame bytes that may wait for the carrier at once (unresolved sends). */
  readonly maxInFlight: number
}

/** Shared receive-memory budget of all connections of a node (bytes of credit outstanding). */
export interface Budget {
  /** Takes up to `n` bytes; returns how many were granted. */
  take(n: number): number
  /** Returns `n` bytes. */
  give(n: number): void
}

/** Limits a node applies to each connection (see ConnectionOptions in manager.ts). */
export interface ConnectionLimits {
  maxStreams: number
  streamWindow: number
  connectionWindow: number
}

/** Close code carried by CLOSE: a normal close (`conn.close()`). */
export const CLOSE_NORMAL = 0
/** Close code: the peer broke the connection protocol (ERR_DECCOM_PROTOCOL_VIOLATION). */
export const CLOSE_PROTOCOL = 1
/** Close code: the connection was refused (the node holds its maximum of connections or buffer memory). */
export const CLOSE_REFUSED = 2
/** Close code: the node is shutting down (`node.close()`). */
export const CLOSE_SHUTDOWN = 3

/** The events of a {@link Connection}, with their arguments. */
export interface ConnectionEvents {
  /** The peer opened a stream. */
  stream: [stream: Stream]
  /** The peer sent a message on the connection (`conn.send`), outside any stream. */
  message: [data: Buffer]
  /** The connection closed; `err` (ERR_DECCOM_CONNECTION_CLOSED, ...) unless it was a normal close. */
  close: [err?: Error]
}

/** @internal Everything the manager hands a new connection. */
export interface ConnectionInit {
  remote: Peer
  path: ConnectionPath
  rtt: number
  carrier: Carrier
  localNonce: Buffer
  remoteNonce: Buffer
  limits: ConnectionLimits
  budget: Budget
  /** What the peer's HELLO granted us. */
  peerMaxStreams: number
  peerMaxData: number
  peerStreamWindow: number
  /** Credit our HELLO granted the peer (already taken from the budget). */
  grantedData: number
  onClosed: (c: Connection) => void
  clock: Clock
}

/**
 * A connection to one peer: messages (`send`, the `'message'` event) and ordered, reliable,
 * flow-controlled streams (`openStream`, the `'stream'` event). Get one from `node.connect()` or
 * `node.on('connection')`.
 */
export class Connection extends EventEmitter<ConnectionEvents> {
  /** The peer: authenticated (`remote.id` set, `remote.verified`) when the stack has Noise in encrypt or sign mode. */
  readonly remote: Peer
  /** How frames reach the peer. */
  readonly path: ConnectionPath
  /**
   * For a path this side punched (`path` 'punched'): how — 'simultaneous' (both sides punched each
   * other's mapped address) or 'birthday' (birthday-paradox punch; docs/nat.md); else null.
   */
  punch: 'simultaneous' | 'birthday' | null = null
  /** Round-trip time of the HELLO exchange, in ms (0 for the accepting side). */
  readonly rtt: number
  /** @internal */
  readonly localNonce: Buffer
  /** @internal */
  readonly remoteNonce: Buffer
  readonly #carrier: Carrier
  readonly #limits: ConnectionLimits
  readonly #budget: Budget
  readonly #onClosed: (c: Connection) => void
  readonly #clock: Clock
  readonly #streams = new Map<number, Stream>()
  /** Streams we opened that no frame has named yet (their opening frame is deferred, see openStream). */
  readonly #unannounced = new Set<number>()
  readonly #host: StreamHost
  #closed = false
  // streams we open
  #nextId: number
  #opened = 0
  #peerMaxStreams: number
  readonly #peerStreamWindow: number
  /** openStream() calls waiting for the peer's stream limit to rise (MAX_STREAMS). */
  readonly #streamWaiters = new Waiters()
  // streams the peer opens
  readonly #peerParity: number
  #peerHighest: number
  #peerOpened = 0
  #peerClosed = 0
  #grantedStreams: number
  #grantScheduled = false
  // connection-level flow control
  #sent = 0
  #peerMaxData: number
  #inFlight = 0
  /** DATA frames handed to the carrier and not yet delivered (see MAX_DATA_FRAMES_IN_FLIGHT). */
  #framesInFlight = 0
  readonly #blocked = new Set<Stream>()
  #received = 0
  #consumed = 0
  #recvMax: number
  /** The credit our HELLO granted: the connection keeps that much of the node's budget until it closes. */
  readonly #own: number
  /** Bytes of the node's budget this connection holds: max(#own, credit granted and not yet read). */
  #charged: number
  #budgetStarved = false
  /** Out-of-order ranges all streams hold (see MAX_REORDERED_RANGES). */
  #reordered = 0

  /** @internal Made by the manager. */
  /** @internal Made by the node's connection manager. */
  constructor(init: ConnectionInit) {
    super()
    this.remote = init.remote
    this.path = init.path
    this.rtt = init.rtt
    this.localNonce = init.localNonce
    this.remoteNonce = init.remoteNonce
    this.#carrier = init.carrier
    this.#limits = init.limits
    this.#budget = init.budget
    this.#onClosed = init.onClosed
    // The side with the smaller nonce opens odd stream ids, the other even ones.
    const odd = Buffer.compare(init.localNonce, init.remoteNonce) < 0
    this.#nextId = odd ? 1 : 2
    this.#peerParity = odd ? 0 : 1
    this.#peerHighest = odd ? 0 : -1
    this.#clock = init.clock
    this.#peerMaxStreams = init.peerMaxStreams
    this.#peerMaxData = init.peerMaxData
    this.#peerStreamWindow = init.peerStreamWindow
    this.#grantedStreams = init.limits.maxStreams
    this.#recvMax = init.grantedData
    this.#own = init.grantedData
    this.#charged = init.grantedData
    this.#host = {
      sendCredit: () =>
        this.#closed || this.#framesInFlight >= MAX_DATA_FRAMES_IN_FLIGHT ? 0 : Math.min(this.#peerMaxData - this.#sent, this.#carrier.maxInFlight - this.#inFlight),
      sendData: (s, offset, fin, data) => this.#sendData(s, offset, fin, data),
      sendMaxData: (stream, max) => this.#control({ type: 'MAX_DATA', stream, max }),
      sendReset: (stream, code, finished, finalSize) => {
        this.#unannounced.delete(stream)
        this.#control({ type: 'RESET', stream, code, finished, finalSize })
      },
      consumed: (n) => this.#consume(n),
      reordered: (delta) => {
        this.#reordered += delta
        return this.#reordered <= MAX_REORDERED_RANGES
      },
      waitCredit: (s) => this.#blocked.add(s),
      closed: (s) => this.#streamClosed(s),
    }
  }

  /** True once closed (by either side, or because the carrier failed). */
  get closed(): boolean {
    return this.#closed
  }

  /** Streams open now. */
  get streamCount(): number {
    return this.#streams.size
  }

  /**
   * Sends one message on the connection (the peer's connection emits `'message'`). Resolves when
   * the carrier delivered it.
   */
  send(data: Uint8Array, opts: { signal?: AbortSignal } = {}): Promise<void> {
    if (opts.signal?.aborted) return Promise.reject(abortError(opts.signal))
    if (this.#closed) return Promise.reject(closedError('local'))
    return this.#carrier.send(encodeMux({ type: 'MESSAGE', data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) }))
  }

  /**
   * Opens a stream. Waits while the peer's stream limit is reached (until one of our streams
   * closes), so it also takes a signal.
   * @throws (rejects) ERR_DECCOM_CONNECTION_CLOSED, ERR_DECCOM_ABORTED
   */
  async openStream(opts: StreamOptions & { signal?: AbortSignal } = {}): Promise<Stream> {
    const signal = opts.signal
    if (signal?.aborted) throw abortError(signal)
    while (this.#opened >= this.#peerMaxStreams) {
      if (this.#closed) throw closedError('local')
      await this.#streamWaiters.wait(signal)
    }
    if (this.#closed) throw closedError('local')
    const id = this.#nextId
    this.#nextId += 2
    this.#opened++
    const s = new Stream(this.#host, id, this.#peerStreamWindow, this.#limits.streamWindow, opts)
    this.#streams.set(id, s)
    // The stream's first frame opens it on the other side (its 'stream' event). When the caller
    // writes (or ends) in the same turn, that first DATA frame does it; otherwise an empty DATA
    // frame follows once the caller's pending promise jobs (the `await openStream()` continuation
    // among them) have run: a tick, then a microtask queued behind those jobs.
    this.#unannounced.add(id)
    process.nextTick(() =>
      queueMicrotask(() => {
        if (!this.#unannounced.delete(id) || this.#closed || this.#streams.get(id) !== s) return
        void this.#sendData(s, 0, false, EMPTY).catch(() => {})
      }),
    )
    return s
  }

  /**
   * Closes the connection: streams still open are reset, then the frames already handed to the
   * carrier are given up to `timeout` ms (default 2000) to be delivered, then CLOSE is sent.
   * Streams whose both directions were complete still read to their end. Idempotent.
   */
  async close(opts: { code?: number; timeout?: number } = {}): Promise<void> {
    if (this.#closed) return
    const code = opts.code ?? CLOSE_NORMAL
    this.#shutdown(closedError('local', code))
    const clock = this.#clock
    const timeout = opts.timeout ?? 2000
    const until = clock.now() + timeout
    const sleep = (ms: number): Promise<void> => new Promise((r) => clock.setTimeout(r, ms))
    // Frames already handed to the carrier go first: CLOSE could overtake them (reliable messages reorder).
    while (timeout > 0 && this.#inFlight > 0 && clock.now() < until) await sleep(5)
    const closing = this.#carrier.send(encodeMux({ type: 'CLOSE', code })).catch(() => {})
    if (timeout === 0) return
    let timer: TimerHandle | undefined
    await Promise.race([closing, new Promise<void>((r) => (timer = clock.setTimeout(r, Math.max(0, until - clock.now()))))])
    clock.clearTimeout(timer)
  }

  /** `await using conn = ...` closes the connection (see {@link close}). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** @internal A frame from the peer (after HELLO). Returns false on a protocol violation (the manager closes). */
  onFrame(f: MuxFrame): boolean {
    if (this.#closed) {
      return true
    }
    switch (f.type) {
      case 'DATA': {
        const n = f.data.length
        if (this.#received + n > this.#recvMax) return this.#violation('connection flow-control credit exceeded')
        this.#received += n
        const s = this.#streamFor(f.stream)
        if (s === false) return this.#violation('stream limit exceeded or unknown stream')
        if (s === null) {
          this.#consume(n)
          return true
        }
        return s.onData(f.offset, f.data, f.fin) || this.#violation('stream flow-control credit or final size violated')
      }
      case 'MAX_DATA':
        if (f.stream === 0) {
          if (f.max > this.#peerMaxData) {
            this.#peerMaxData = f.max
            this.#wake()
          }
        } else this.#streams.get(f.stream)?.onMaxData(f.max)
        return true
      case 'MAX_STREAMS':
        if (f.max > this.#peerMaxStreams) {
          this.#peerMaxStreams = f.max
          this.#streamWaiters.resolveAll()
        }
        return true
      case 'RESET': {
        const s = this.#streamFor(f.stream)
        if (s === false) return this.#violation('stream limit exceeded or unknown stream')
        return s === null || s.onReset(f.code, f.finished, f.finalSize) || this.#violation('final size changed')
      }
      case 'CLOSE':
        this.#shutdown(closedError('remote', f.code))
        return true
      case 'MESSAGE':
        this.emit('message', f.data)
        return true
      case 'HELLO':
        return true
    }
  }

  /** @internal The carrier failed or the node closes: everything fails with `err`. */
  fail(err: Error): void {
    this.#shutdown(err)
  }

  /** The stream a frame names: an open one, null (closed: drop), false (never allowed). */
  #streamFor(id: number): Stream | null | false {
    const s = this.#streams.get(id)
    if (s) return s
    if ((id & 1) !== this.#peerParity) return id < this.#nextId ? null : false
    if (id <= this.#peerHighest) return null
    // A new peer stream: it opens every lower id of its parity too (frames may arrive out of order).
    const count = (id - this.#peerHighest) / 2
    if (this.#peerOpened + count > this.#grantedStreams) return false
    let last: Stream | null = null
    for (let i = this.#peerHighest + 2; i <= id; i += 2) {
      last = new Stream(this.#host, i, this.#peerStreamWindow, this.#limits.streamWindow)
      this.#streams.set(i, last)
      this.#peerOpened++
    }
    this.#peerHighest = id
    for (let i = id - 2 * (count - 1); i <= id; i += 2) {
      const s = this.#streams.get(i)
      if (s && !this.#closed) this.emit('stream', s)
    }
    return this.#streams.get(id) ?? null
  }

  #sendData(s: Stream, offset: number, fin: boolean, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.#unannounced.delete(s.id)
    const frame = encodeData(s.id, offset, fin, data)
    this.#sent += frame.length - DATA_HEADER
    this.#inFlight += frame.length
    this.#framesInFlight++
    const p = this.#carrier.send(frame)
    p.then(
      () => {
        this.#inFlight -= frame.length
        this.#framesInFlight--
        this.#wake()
      },
      (e: Error) => {
        this.#inFlight -= frame.length
        this.#framesInFlight--
        this.#shutdown(e)
      },
    )
    return p
  }

  #control(f: MuxFrame): void {
    if (this.#closed) return
    this.#carrier.send(encodeMux(f)).catch((e: Error) => this.#shutdown(e))
  }

  #wake(): void {
    for (const s of this.#blocked) {
      if (this.#host.sendCredit() <= 0) return
      this.#blocked.delete(s)
      s.pump()
    }
  }

  #consume(n: number): void {
    if (this.#closed) return
    this.#consumed += n
    // Read bytes go back to the node's budget, except the initial grant: that stays this
    // connection's, so it can always let its peer send that much again (other connections, and
    // the reserve kept for new ones, cannot starve it).
    const keep = Math.max(this.#own, this.#recvMax - this.#consumed)
    if (this.#charged > keep) {
      this.#budget.give(this.#charged - keep)
      this.#charged = keep
    }
    this.#grantData()
  }

  /** Lets the peer send a whole window past what was read: from what the connection holds, then as far as the node's budget allows. */
  #grantData(): void {
    const window = this.#limits.connectionWindow
    const outstanding = this.#recvMax - this.#consumed
    if (outstanding > window / 2) return
    if (this.#charged < window) this.#charged += this.#budget.take(window - this.#charged)
    this.#budgetStarved = this.#charged < window
    if (this.#charged <= outstanding) return
    this.#recvMax = this.#consumed + this.#charged
    this.#control({ type: 'MAX_DATA', stream: 0, max: this.#recvMax })
  }

  /** @internal The budget has room again. */
  budgetFreed(): void {
    if (this.#budgetStarved && !this.#closed) this.#grantData()
  }

  #streamClosed(s: Stream): void {
    if (this.#streams.get(s.id) !== s) return
    this.#streams.delete(s.id)
    this.#blocked.delete(s)
    if ((s.id & 1) !== (this.#nextId & 1)) {
      this.#peerClosed++
      this.#grantedStreams = this.#peerClosed + this.#limits.maxStreams
      if (!this.#grantScheduled && !this.#closed) {
        this.#grantScheduled = true
        queueMicrotask(() => {
          this.#grantScheduled = false
          this.#control({ type: 'MAX_STREAMS', max: this.#grantedStreams })
        })
      }
    }
  }

  #violation(why: string): false {
    this.#shutdown(new DeccomError(ErrorCode.PROTOCOL_VIOLATION, `The peer broke the connection protocol: ${why}`, { details: { reason: why } }))
    if (!this.#closedSent) {
      this.#closedSent = true
      this.#carrier.send(encodeMux({ type: 'CLOSE', code: CLOSE_PROTOCOL })).catch(() => {})
    }
    return false
  }

  #closedSent = false

  #shutdown(err: Error): void {
    if (this.#closed) return
    this.#closed = true
    this.#budget.give(this.#charged)
    this.#streamWaiters.rejectAll(err)
    for (const s of [...this.#streams.values()]) s.fail(err)
    this.#blocked.clear()
    this.#onClosed(this)
    this.emit('close', (err as DeccomError).details?.by === 'local' && (err as DeccomError).details?.code === CLOSE_NORMAL ? undefined : err)
  }
}

function closedError(by: 'local' | 'remote', code = CLOSE_NORMAL): DeccomError {
  return new DeccomError(ErrorCode.CONNECTION_CLOSED, by === 'local' ? 'The connection was closed' : `The peer closed the connection (code ${code})`, { details: { by, code } })
}

const EMPTY = Buffer.alloc(0)

/**
 * DATA frames a connection has handed to its carrier and not yet seen delivered, at most: the
 * reliable layer queues a bounded number of messages per peer (1024 by default) and refuses more,
 * so small writes under a large credit must wait here instead (control frames and messages keep
 * the rest of that queue).
 */
export const MAX_DATA_FRAMES_IN_FLIGHT = 256

/**
 * Separate out-of-order ranges the streams of one connection may hold at once. Each gap before a
 * range is a DATA frame the sender has not seen delivered, so an honest sender (at most
 * MAX_DATA_FRAMES_IN_FLIGHT of those) never causes more than that many; more is a violation.
 */
export const MAX_REORDERED_RANGES = 1024
