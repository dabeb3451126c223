/**
 * ReliableUdp — messages of any size (up to `maxMessageSize`, default 256 MiB) over datagrams of at
 * most `segmentSize` bytes of payload (`loopbackSegmentSize` to loopback addresses), each delivered exactly once, complete and byte-exact.
 *
 * Provides `send(to, data, tag = 0, { signal, onProgress }?): Promise<void>` (resolves when the whole
 * message is acknowledged; `onProgress(acked, total)` reports acknowledged bytes on the way;
 * aborting `signal` gives the message up and rejects with ERR_DECCOM_ABORTED; rejects with
 * ERR_DECCOM_PEER_UNREACHABLE when the peer stops answering for `peerTimeout` ms, ERR_DECCOM_MESSAGE_REFUSED when the receiver will not take it (or answered only
 * "busy", no reassembly memory, for `peerTimeout` ms: `details.reason === 'busy'`), ERR_DECCOM_MESSAGE_TOO_LARGE, ERR_DECCOM_SEND_QUEUE_FULL, ERR_DECCOM_CLOSED);
 * emits `onMessage(from, data, tag)` for each whole message (in native mode, messages of up to
 * 16 KiB that arrive together are views into one shared buffer, as received datagrams are: copy
 * one to keep it long without keeping its neighbours). Datagrams of other tags that arrive
 * outside a reliable message are dropped and counted (`dropped_unreliable`; option `strict`): every
 * layer above sends through this one, so they did not come from a peer running this stack.
 *
 * The protocol (segments, selective acks, RTT/RTO, loss recovery, CUBIC with pacing, receive
 * window, bounded reassembly) is `deccom-core::rudp`, in Rust (wire format: docs/wire.md#reliable-udp-tag-2). It runs in one of two places:
 * - **native** (the fast path): when every layer between this one and the UdpTransport can run
 *   natively (e.g. FaultyTransport or Noise), the endpoint runs inside the socket's I/O thread; no
 *   segment, ack or retransmission ever crosses into JavaScript. The Stack decides this at start
 *   from the layers' declared `nativeRole` (this layer is an `'endpoint'`) and calls
 *   {@link ReliableUdp.enableNative}; `forceJs` declines.
 * - **JavaScript-driven**: otherwise (a JS layer below, or a SimulatedNetwork), the same endpoint is
 *   driven from JavaScript through `RudpEndpoint`, with the node's clock (so it runs in virtual time
 *   too). Correct, but every datagram visits JavaScript.
 * `mode` (after start) tells which one is in use.
 *
 * JavaScript-driven, the endpoint names peers by number: the table is keyed by `Address.key` and
 * holds at most as many peers as the endpoint (4096, least recently used evicted first).
 */
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock } from '../clock'
import { Deadline } from '../clock'
import { DeccomError, ErrorCode, abortError, fromNative } from '../errors'
import { native } from '../native'
import type { Peer } from '../peer'
import { type LayerLog, silentLog } from '../log'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { PeerTable } from './peer-table'
import type { NativeReliableHandler, NativeReliableOptions, UdpTransport } from './udp'
import { TAG_APP } from './udp'

const DEFAULT_MAX_MESSAGE = 256 * 1024 * 1024
/** Peers the JavaScript-driven peer table keeps: the endpoint's own limit (`rudp::Config::max_peers`). */
export const RELIABLE_MAX_PEERS = 4096

/** Tag of reliable-UDP datagrams on the wire. */
export const TAG_RUDP = 2

/** Options of {@link ReliableUdp}. */
export interface ReliableUdpOptions {
  /** Bytes of message data per datagram (default 1200). */
  segmentSize?: number
  /**
   * Bytes of message data per datagram to a loopback address (127.0.0.0/8, ::1), in native mode
   * (default 16,000, or `segmentSize` if larger): the loopback interface carries 64 KiB datagrams unfragmented, and larger
   * segments cost less work per byte. Set it to `segmentSize` to treat loopback like any path.
   */
  loopbackSegmentSize?: number
  /** Largest message in bytes (default 256 MiB). */
  maxMessageSize?: number
  /** Milliseconds without acknowledgement progress before sends to that peer fail (default 10,000). */
  peerTimeout?: number
  /** Bytes of partially received messages kept per peer (default 320 MiB) and in total (default 1 GiB). */
  maxReassemblyPerPeer?: number
  /** Bytes of partially received messages kept in total (default 1 GiB). */
  maxReassemblyTotal?: number
  /** Seed of the endpoint's randomness (default: from the OS). Set it for reproducible simulations. */
  seed?: number
  /** Force the JavaScript-driven endpoint even where the native path is possible (tests, comparisons). */
  forceJs?: boolean
  /**
   * Drop datagrams of other tags that arrive outside a reliable message (default true). Every
   * layer above sends through this one, so such a datagram was not sent by a peer running this
   * stack: it may carry a spoofed source, and a layer above answering it through this one would
   * retransmit the answer to that address until `peerTimeout` (amplification). Counted in
   * `dropped_unreliable`. `false` passes them up unchanged.
   */
  strict?: boolean
}

/** Options of {@link ReliableUdp.send}. */
export interface ReliableSendOptions {
  /**
   * Aborting gives the message up: none of its segments is sent again, the endpoint releases it,
   * and the promise rejects with ERR_DECCOM_ABORTED. The receiver frees what it reassembled of it
   * when the next message to it passes it (or after its partial-message timeout). An
   * already-aborted signal rejects before anything is queued. No effect once the promise settled.
   */
  signal?: AbortSignal
  /**
   * Called with the bytes of `data` acknowledged so far and `data.length`: increasing, once
   * `min(total / 64, 256 KiB)` more bytes are acknowledged but no more often than every 4 ms,
   * ending with `(total, total)` just before the promise resolves (no final call after a failure
   * or an abort). Errors it throws are counted (`handler_errors`) and ignored.
   */
  onProgress?: (acked: number, total: number) => void
}

interface Pending {
  resolve: () => void
  reject: (e: Error) => void
  /** Bytes of `data`. */
  total: number
  /** JavaScript-driven mode: the peer number (to cancel). */
  peer: number
  onProgress?: (acked: number, total: number) => void
  /** Last value given to `onProgress` (-1: none yet). */
  reported: number
  signal?: AbortSignal
  onAbort?: () => void
}

type JsEndpoint = InstanceType<typeof native.RudpEndpoint>

export class ReliableUdp extends Protocol implements NativeReliableHandler {
  static override bindTo = ['send', 'remotePeer?']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  static override nativeRole = 'endpoint' as const

  readonly name = 'reliable-udp'
  override readonly tag = TAG_RUDP

  readonly #opts: ReliableUdpOptions
  #mode: 'native' | 'js' | null = null
  #log: LayerLog = silentLog
  #udp: UdpTransport | null = null
  readonly #pending = new Map<number, Pending>()
  // JavaScript-driven endpoint state.
  #ep: JsEndpoint | null = null
  #clock: Clock | null = null
  #deadline: Deadline | null = null
  /** Senders a layer below authenticated (JavaScript-driven mode), by peer number. */
  readonly #authenticated = new Map<number, Peer>()
  readonly #peers = new PeerTable(RELIABLE_MAX_PEERS, { onEvict: (id) => this.#authenticated.delete(id) })
  #driving = false
  /** Native mode: who a message came from, the authenticated Peer when Noise runs natively below. */
  #peerOf: (a: Address) => Address | Peer = (a) => a

  constructor(opts: ReliableUdpOptions = {}) {
    super()
    this.#opts = opts
  }

  /** @internal Native fusion (asked by the Stack): true unless `forceJs`. */
  canRunNative(_below: readonly object[]): boolean {
    return this.#opts.forceJs !== true
  }

  /** @internal Native fusion (told by the Stack before start): run the endpoint in `udp`'s I/O thread. */
  enableNative(udp: UdpTransport): void {
    this.#udp = udp
  }

  /** Peers in the JavaScript-driven peer table (0 in native mode, where the socket keeps them). */
  get peerCount(): number {
    return this.#peers.size
  }

  /** `'native'` or `'js'` once started (see the module documentation); null before. */
  get mode(): 'native' | 'js' | null {
    return this.#mode
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#log = ctx.log
    const nativeOpts: NativeReliableOptions = {
      segmentSize: this.#opts.segmentSize,
      loopbackSegmentSize: this.#opts.loopbackSegmentSize,
      maxMessageSize: this.#opts.maxMessageSize,
      peerTimeout: this.#opts.peerTimeout,
      maxReassemblyPerPeer: this.#opts.maxReassemblyPerPeer,
      maxReassemblyTotal: this.#opts.maxReassemblyTotal,
      seed: this.#opts.seed,
    }
    const udp = this.#udp
    if (udp) {
      // A native stage below that authenticates senders (Noise) names them with their node id.
      if (this.hasLower('remotePeer')) this.#peerOf = (a) => (this.lower.remotePeer(a) as Peer | null | undefined) ?? a
      udp.attachReliable(this, TAG_RUDP, nativeOpts)
      this.#mode = 'native'
      this.#log('mode native: segments, acks and retransmissions stay in the socket thread')
      return
    }
    this.#clock = ctx.clock
    this.#deadline = new Deadline(ctx.clock, () => this.#drive())
    try {
      this.#ep = new native.RudpEndpoint(nativeOpts, ctx.clock.now())
    } catch (e) {
      throw fromNative(e)
    }
    this.#mode = 'js'
    this.#log('mode js: the endpoint is driven from JavaScript')
  }

  /**
   * Sends a whole message; resolves when every byte is acknowledged. The bytes are not copied:
   * do not modify `data` until the promise settles. See {@link ReliableSendOptions} for progress
   * reports and cancellation.
   */
  send(to: AddressLike, data: Uint8Array, tag: number = TAG_APP, opts: ReliableSendOptions = {}): Promise<void> {
    try {
      const { signal, onProgress } = opts
      if (signal?.aborted) throw abortError(signal)
      const addr = toAddress(to)
      const max = this.#opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE
      if (data.length > max) {
        throw new DeccomError(ErrorCode.MESSAGE_TOO_LARGE, `A message of ${data.length} bytes exceeds maxMessageSize (${max} bytes); raise the option or split the message`, {
          details: { size: data.length, max },
        })
      }
      // The native side holds this buffer (no copy) until the message is acknowledged.
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
      const progress = onProgress !== undefined
      let id: number
      let peer = -1
      if (this.#udp) {
        id = this.#udp.sendReliable(addr, tag, buf, progress)
      } else if (this.#ep) {
        peer = this.#peers.id(addr)
        try {
          id = this.#ep.send(this.#clock!.now(), peer, tag, buf, progress)
        } catch (e) {
          throw fromNative(e)
        }
      } else {
        throw closed()
      }
      this.count('messages_sent')
      this.count('bytes_queued', data.length)
      const promise = new Promise<void>((resolve, reject) => {
        const p: Pending = { resolve, reject, total: data.length, peer, onProgress, reported: -1, signal }
        if (signal) {
          p.onAbort = () => this.#abort(id, p)
          signal.addEventListener('abort', p.onAbort, { once: true })
        }
        this.#pending.set(id, p)
      })
      // JavaScript-driven: drive once the message is pending (a completion may come at once).
      if (this.#ep) this.#drive()
      return promise
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /** The signal of a pending send fired: give the message up, reject at once. */
  #abort(id: number, p: Pending): void {
    if (this.#pending.get(id) !== p) return
    this.#settle(id, p)
    if (this.#udp) this.#udp.cancelReliable(id)
    else if (this.#ep) {
      this.#ep.cancel(this.#clock!.now(), p.peer, id)
      this.#drive()
    }
    this.count('messages_aborted')
    p.reject(abortError(p.signal!))
  }

  /** Forgets a pending send (before resolving or rejecting it). */
  #settle(id: number, p: Pending): void {
    this.#pending.delete(id)
    if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort)
  }

  #report(p: Pending, acked: number): void {
    if (!p.onProgress || acked <= p.reported) return
    p.reported = acked
    try {
      p.onProgress(acked, p.total)
    } catch {
      this.count('handler_errors')
    }
  }

  /** Datagrams from the layer below: ours feed the JavaScript-driven endpoint; others pass up. */
  onMessage(from: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== TAG_RUDP) {
      if (this.#opts.strict !== false) return this.count('dropped_unreliable')
      return this.upper.onMessage(from, data, tag)
    }
    if (!this.#ep) return this.count('dropped_not_running')
    // A layer below that authenticates senders (Noise) hands us a Peer: key the connection by its
    // address, and name the sender of whole messages with the Peer.
    const addr = toAddress(from)
    const id = this.#peers.id(addr)
    if (addr !== from) this.#authenticated.set(id, from as Peer)
    this.#ep.handleDatagram(this.#clock!.now(), id, data)
    this.#drive()
  }

  /** @internal From the native path: a whole message whose first byte is the upper layer's tag. */
  onNativeMessage(from: Address, message: Buffer): void {
    this.#deliver(this.#peerOf(from), message)
  }

  #deliver(from: Address | Peer, message: Buffer): void {
    if (message.length === 0) return this.count('dropped_malformed')
    this.count('messages_received')
    this.count('bytes_received', message.length - 1)
    this.upper.onMessage(from, message.subarray(1), message[0])
  }

  /** @internal From either path: progress of a send that asked for it (bytes acknowledged, tag byte included). */
  onNativeProgress(id: number, acked: number): void {
    const p = this.#pending.get(id)
    // The tag byte travels in front of the data: report at most the data's length.
    if (p) this.#report(p, Math.min(acked, p.total))
  }

  /** @internal From either path: a send finished. */
  onNativeCompletion(id: number, status: number): void {
    const p = this.#pending.get(id)
    if (!p) return
    this.#settle(id, p)
    if (status === 0) {
      this.count('messages_acked')
      this.count('bytes_sent', p.total)
      this.#report(p, p.total)
      p.resolve()
    } else if (status === 1) {
      this.count('messages_failed')
      this.#log('message %d failed: the peer stopped acknowledging', id)
      p.reject(new DeccomError(ErrorCode.PEER_UNREACHABLE, 'The peer stopped acknowledging; the message was not (fully) delivered', { details: { id } }))
    } else if (status === 3) {
      this.count('messages_refused')
      this.#log('message %d refused by the receiver', id)
      p.reject(new DeccomError(ErrorCode.MESSAGE_REFUSED, 'The receiver refused the message (too large for its limits, or it gave up reassembling it)', { details: { id } }))
    } else if (status === 5) {
      this.count('messages_refused')
      this.#log('message %d refused: the receiver stayed busy (no reassembly memory)', id)
      p.reject(new DeccomError(ErrorCode.MESSAGE_REFUSED, 'The receiver had no reassembly memory for the message for peerTimeout (it answered only "busy")', { details: { id, reason: 'busy' } }))
    } else if (status === 4) {
      this.count('messages_failed')
      p.reject(new DeccomError(ErrorCode.PEER_TABLE_FULL, 'No room for another peer: every peer slot has messages in progress; retry later', { details: { id } }))
    } else {
      p.reject(closed())
    }
  }

  /** JavaScript-driven mode: timers due, transmits, events, then re-arm the one timer. */
  #drive(): void {
    const ep = this.#ep
    if (!ep || this.#driving) return
    this.#driving = true
    try {
      const now = this.#clock!.now()
      const due = ep.pollTimeout()
      if (due !== null && due <= now) ep.handleTimeout(now)
      for (let t = ep.pollTransmit(now); t !== null; t = ep.pollTransmit(now)) {
        const { data, lens, peers } = t
        for (let i = 0, off = 0; i < lens.length; off += lens[i], i++) {
          const to = this.#peers.address(peers[i])
          if (to === undefined) this.count('dropped_evicted_peer')
          else this.lower.send(to, data.subarray(off, off + lens[i]), TAG_RUDP)
        }
      }
      for (let e = ep.pollEvents(); e !== null; e = ep.pollEvents()) {
        const { messages, messagePeers, completions, progress } = e
        if (messages && messagePeers) {
          for (let i = 0; i < messages.length; i++) {
            const id = messagePeers[i]
            const addr = this.#peers.address(id)
            if (addr === undefined) this.count('dropped_evicted_peer')
            else this.#deliver(this.#authenticated.get(id) ?? addr, messages[i])
          }
        }
        if (progress) for (let i = 0; i + 1 < progress.length; i += 2) this.onNativeProgress(progress[i], progress[i + 1])
        if (completions) for (let i = 0; i + 1 < completions.length; i += 2) this.onNativeCompletion(completions[i], completions[i + 1])
      }
      this.#deadline!.arm(ep.pollTimeout())
    } finally {
      this.#driving = false
    }
  }

  override stats(): Record<string, number> {
    const s: Record<string, number> = { ...this.counters }
    if (this.#ep) Object.assign(s, this.#ep.stats(), { peers: this.#peers.size, peers_evicted: this.#peers.evicted })
    return s
  }

  override async stop(): Promise<void> {
    this.#deadline?.clear()
    this.#ep = null
    this.#udp = null
    const pending = [...this.#pending]
    for (const [id, p] of pending) this.#settle(id, p)
    for (const [, p] of pending) p.reject(closed())
  }
}

function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'ReliableUdp is not running (not started, or closed)')
}
