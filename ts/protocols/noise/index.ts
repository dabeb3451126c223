/**
 * Noise — an identity-bound secure channel over whatever carries datagrams below it
 * (docs/security.md; wire format: docs/wire.md#noise-datagrams-tag-4).
 *
 * ```ts
 * const node = await Node.create({ identity, stack: [new Noise({ mode: 'encrypt' }), new ReliableUdp()] })
 * node.on('message', (from, data) => from.id)   // the authenticated node id of the sender
 * ```
 *
 * Provides `send(to, data, tag = 0)`, `approveConnection(peer): Promise<boolean>`,
 * `remoteId(addr)`; emits `onMessage(from: Peer, data, tag)` where `from.id`/`from.publicIdentity`
 * come from the handshake (null for unprotected plaintext data). Binds `send` and takes
 * `onMessage` from below. Its own datagrams carry tag {@link TAG_NOISE} (4).
 *
 * The protocol — Noise XX/IK handshakes bound to the Ed25519 identity, retransmissions,
 * simultaneous open, per-datagram nonces with a sliding replay window, rekeys, modes, cookies
 * and rate limits — is `deccom-core::noise`, driven here through the native `NoiseEndpoint` with
 * the node's clock (so it also runs in a SimulatedNetwork).
 *
 * ## Framing inside each Noise message
 * Each Noise message carries one frame: `[upper tag][0x00][data]` for a whole message, or a chunk
 * `[upper tag][0x01][message id u32][total u32][offset u32][data]` of a message larger than
 * `maxFrameSize` bytes (default 60,000). The codec and the bounded reassembly are
 * `deccom-core::noise::frame`, shared with the socket thread's Noise stage; the layout is in
 * docs/wire.md#noise-frames. Reassembly is bounded: `maxMessageSize` per message,
 * `maxReassemblyPerPeer` / `maxReassemblyTotal` bytes, `reassemblyTimeout` ms without progress;
 * beyond them chunks are dropped and counted (`dropped_reassembly_*`). A chunk never joins a message
 * protected in another mode, and overlapping chunks are refused.
 *
 * ## Sending
 * In `encrypt` and `sign` modes a message to a peer without a completed handshake waits in a
 * bounded queue (`maxQueuedPerPeer` messages) while a handshake runs; it is sent when the
 * handshake completes and rejected with the handshake's error code (e.g.
 * `ERR_DECCOM_NOISE_HANDSHAKE_TIMEOUT`) when it fails or `handshakeDeadline` ms pass. The promise
 * settles like the layer below: when the datagrams are handed to UDP, or when ReliableUdp has
 * them acknowledged. Above a reliable layer the first data waits until our last handshake
 * message is acknowledged, so the peer has the session before the data arrives.
 */
import type { Address, AddressLike } from '../../address'
import { toAddress } from '../../address'
import type { Clock, TimerHandle } from '../../clock'
import { Deadline } from '../../clock'
import { abortError, DeccomError, ErrorCode, fromNative } from '../../errors'
import type { Identity } from '../../identity'
import { native } from '../../native'
import { Peer } from '../../peer'
import type { LayerContext } from '../../protocol'
import { Protocol } from '../../protocol'
import { type LayerLog, silentLog } from '../../log'
import type { UdpTransport } from '../udp'
import { TAG_APP } from '../udp'
import { type NoiseMode, type NoiseOptions, NoiseErrorCode, TAG_NOISE, endpointConfig, stageConfig } from './options'

export { NoiseErrorCode, TAG_NOISE } from './options'
export type { NoiseMode, NoiseOptions } from './options'

/** Peers the JavaScript-driven peer table keeps before evicting idle ones (see #peerId). */
const NOISE_MAX_PEERS = 4096

type NativeEndpoint = InstanceType<typeof native.NoiseEndpoint>

interface Queued {
  data: Buffer
  tag: number
  resolve: () => void
  reject: (e: Error) => void
}

/** Told when a peer's handshake completes (null) or fails (the error). */
type Settle = (err: DeccomError | null) => void

/** A peer we wait for: messages to send and approvals to answer once its handshake completes. */
interface Waiting {
  queue: Queued[]
  approvals: Settle[]
  timer: TimerHandle | null
}

/** Chunks of one large message outstanding below at once (see #transmitChunks). */
const MAX_CHUNKS_IN_FLIGHT = 128
const EMPTY = Buffer.alloc(0)
const RESOLVED = Promise.resolve()
const noop = (): void => {}
const MODES: readonly NoiseMode[] = ['plaintext', 'sign', 'encrypt']

export class Noise extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send', 'approveConnection', 'authenticate', 'remoteId', 'remotePeer']
  static override emits = ['onMessage']

  readonly name = 'noise'
  override readonly tag = TAG_NOISE

  readonly #opts: NoiseOptions
  readonly #mode: NoiseMode
  readonly #maxMessage: number
  #ep: NativeEndpoint | null = null
  #clock: Clock | null = null
  #deadline: Deadline | null = null
  #driving = false
  /** Peer numbers by `Address.key`, least recently used first (bounded, see #peerId). */
  readonly #peerIds = new Map<string, number>()
  /** The address of each peer number in #peerIds. */
  readonly #peers: Record<number, Address> = Object.create(null)
  #nextPeer = 0
  /** Authenticated peers (Peer objects with id), by peer number. */
  readonly #auth = new Map<number, Peer>()
  /** Peers whose queue has been flushed after their handshake: sends go straight out. */
  readonly #ready = new Set<number>()
  readonly #waiting = new Map<number, Waiting>()
  /** The promise of the last handshake datagram sent to each peer (reliable layers below). */
  readonly #lastHandshake = new Map<number, Promise<unknown>>()
  #nextMessageId = 1
  // Native mode (see the module documentation): the socket's Noise stage does the work.
  #native: UdpTransport | null = null
  #identity: Identity | null = null
  /** Native mode: authenticated peers and approval waiters, by `Address.key` (stable across intern-cache resets). */
  readonly #nativeAuth = new Map<string, Peer>()
  readonly #nativeWaiters = new Map<string, Settle[]>()
  #log: LayerLog = silentLog

  constructor(opts: NoiseOptions = {}) {
    super()
    const mode = opts.mode ?? 'encrypt'
    if (!MODES.includes(mode)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `Noise mode must be 'plaintext', 'sign' or 'encrypt', got ${String(mode)}`)
    this.#opts = opts
    this.#mode = mode
    this.#maxMessage = opts.maxMessageSize ?? 256 * 1024 * 1024
  }

  /** The configured mode. */
  get mode(): NoiseMode {
    return this.#mode
  }

  /** This node's X25519 static key (peers that know it can handshake with IK), after start. */
  get localStaticKey(): Buffer | null {
    return this.#ep?.localStaticPublicKey ?? null
  }

  override async start(ctx: LayerContext): Promise<void> {
    const identity = ctx.identity as Identity
    if (!identity || !identity.native) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'Noise needs the node identity in its LayerContext')
    if (!identity.canSign) {
      throw new DeccomError(NoiseErrorCode.NAME_IDENTITY, 'Noise needs an Ed25519 identity (a name identity cannot sign its Noise static key); use Identity.generate() or Identity.fromSeed()')
    }
    this.#clock = ctx.clock
    this.#deadline = new Deadline(ctx.clock, () => this.#drive())
    this.#identity = identity
    this.#log = ctx.log
    this.#log('mode %s%s', this.#mode, this.#opts.native === false ? ' (native off)' : '')
    const o = this.#opts
    try {
      this.#ep = new native.NoiseEndpoint(
        identity.native,
        endpointConfig(this.#opts, this.#mode),
        ctx.clock.now(),
      )
    } catch (e) {
      throw fromNative(e)
    }
  }

  // ------------------------------------------------------------------------------------------
  // Provided methods

  /**
   * Sends a message to `to`, protected in the configured mode. Resolves when the layer below has
   * taken (UDP) or delivered (ReliableUdp) every datagram of it.
   * @throws (rejects) ERR_DECCOM_MESSAGE_TOO_LARGE, ERR_DECCOM_NOISE_QUEUE_FULL,
   *   ERR_DECCOM_NOISE_HANDSHAKE_*, ERR_DECCOM_CLOSED, and the lower layer's errors
   */
  send(to: AddressLike, data: Uint8Array, tag: number = TAG_APP): Promise<void> {
    try {
      if (this.#native) {
        throw new DeccomError(ErrorCode.STACK_INVALID, 'Noise runs natively under ReliableUdp and carries only its traffic; send through the ReliableUdp layer (or set native: false)')
      }
      const ep = this.#ep
      if (!ep) throw closed()
      if (data.length > this.#maxMessage) {
        throw new DeccomError(ErrorCode.MESSAGE_TOO_LARGE, `A message of ${data.length} bytes exceeds the Noise maxMessageSize (${this.#maxMessage} bytes)`, {
          details: { size: data.length, max: this.#maxMessage },
        })
      }
      const addr = toAddress(to)
      const pid = this.#peerId(addr)
      this.count('messages_sent')
      this.count('bytes_sent', data.length)
      if (this.#mode === 'plaintext' || this.#isReady(pid)) return this.#transmit(pid, data, tag)
      return new Promise<void>((resolve, reject) => {
        const w = this.#wait(pid)
        if (w.queue.length >= (this.#opts.maxQueuedPerPeer ?? 256)) {
          this.count('dropped_queue_full')
          return reject(new DeccomError(NoiseErrorCode.QUEUE_FULL, `More than ${this.#opts.maxQueuedPerPeer ?? 256} messages wait for the handshake with ${addr.key}; wait and retry`))
        }
        w.queue.push({ data: Buffer.from(data), tag, resolve, reject })
      })
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Approval for discovery layers: resolves true once a handshake with `peer` has completed
   * (starting one if needed), false when it fails or `handshakeDeadline` passes. A `Peer` with an
   * id is approved only if the handshake authenticates that id (see {@link authenticate}). In
   * plaintext mode nothing is authenticated and every peer is approved.
   */
  approveConnection(peer: Peer | AddressLike): Promise<boolean> {
    if (this.#mode === 'plaintext' && this.#ep) return Promise.resolve(true)
    const target = peer instanceof Peer ? peer : new Peer(toAddress(peer))
    return this.authenticate(target).then(
      () => true,
      () => false,
    )
  }

  /** True when this layer proves identities: handshakes run (encrypt and sign modes). */
  get authenticates(): boolean {
    return this.#mode !== 'plaintext'
  }

  /**
   * Binds a dial to an identity: resolves with the authenticated peer at `peer.address` once a
   * handshake there has completed (starting one if needed) and, when `peer.id` is set, only if it
   * authenticated exactly that node id. From then on, until the session ends, a handshake at that
   * address that authenticates anyone else is refused, so data queued for the peer never goes to
   * someone else.
   * @throws (rejects) ERR_DECCOM_PEER_IDENTITY_MISMATCH (someone else holds or answered at the
   *   address; nothing was sent to it), ERR_DECCOM_NOISE_HANDSHAKE_* (no handshake completed),
   *   ERR_DECCOM_ABORTED, ERR_DECCOM_CLOSED, ERR_DECCOM_INVALID_ARGUMENT (plaintext mode)
   */
  authenticate(peer: Peer, opts: { signal?: AbortSignal } = {}): Promise<Peer> {
    const { signal } = opts
    if (signal?.aborted) return Promise.reject(abortError(signal))
    if (!this.#ep) return Promise.reject(closed())
    if (this.#mode === 'plaintext') {
      return Promise.reject(new DeccomError(ErrorCode.INVALID_ARGUMENT, 'A plaintext Noise layer authenticates nobody; use mode encrypt or sign'))
    }
    const addr = peer.address
    const want = peer.id
    const done = (): Peer | DeccomError | null => {
      const have = this.remotePeer(addr)
      if (!have) return null
      if (want && !have.id!.equals(want)) return mismatch(addr, want, have.id)
      return have
    }
    const now = done()
    if (now instanceof DeccomError) return Promise.reject(now)
    if (now && (this.#native || this.#isReady(this.#peerIds.get(addr.key)!))) {
      if (want && !this.#native) this.#ep.expectIdentity(this.#clock!.now(), this.#peerIds.get(addr.key)!, want)
      return Promise.resolve(now)
    }
    return new Promise<Peer>((resolve, reject) => {
      let onAbort: (() => void) | undefined
      const settle: Settle = (err) => {
        if (onAbort) signal!.removeEventListener('abort', onAbort)
        if (err) return reject(err)
        const r = done()
        if (r instanceof DeccomError) return reject(r)
        if (r === null) return reject(new DeccomError(NoiseErrorCode.HANDSHAKE_TIMEOUT, `No completed handshake with ${addr.key}`))
        resolve(r)
      }
      const list = this.#native ? this.#nativeWait(addr, want, settle) : this.#authWait(addr, want, settle)
      if (list && signal) {
        onAbort = () => {
          const i = list.indexOf(settle)
          if (i >= 0) list.splice(i, 1)
          reject(abortError(signal))
        }
        signal.addEventListener('abort', onAbort, { once: true })
      }
    })
  }

  /** JavaScript-driven: binds `addr` to `want` in the endpoint and waits for its handshake. */
  #authWait(addr: Address, want: Buffer | null, settle: Settle): Settle[] | null {
    const ep = this.#ep!
    const pid = this.#peerId(addr)
    if (want) {
      try {
        if (!ep.expectIdentity(this.#clock!.now(), pid, want)) {
          settle(mismatch(addr, want, ep.isAuthenticated(pid)))
          return null
        }
      } catch (e) {
        settle(fromNative(e) as DeccomError)
        return null
      }
    }
    if (this.#isReady(pid)) {
      settle(null)
      return null
    }
    const w = this.#wait(pid)
    w.approvals.push(settle)
    return w.approvals
  }

  /** The authenticated node id of the peer at `addr` (a completed handshake), or null. */
  remoteId(addr: AddressLike): Buffer | null {
    if (this.#native) return this.#nativeAuth.get(toAddress(addr).key)?.id ?? null
    const pid = this.#peerIds.get(toAddress(addr).key)
    if (pid === undefined || !this.#ep) return null
    return this.#ep.isAuthenticated(pid)
  }

  /** The authenticated peer at `addr` (id and public identity filled), or null. */
  remotePeer(addr: AddressLike): Peer | null {
    if (this.#native) return this.#nativeAuth.get(toAddress(addr).key) ?? null
    const pid = this.#peerIds.get(toAddress(addr).key)
    return pid === undefined ? null : (this.#auth.get(pid) ?? null)
  }

  /** The Noise handshake hash of the current session with `addr` (equal on both sides), or null. */
  handshakeHash(addr: AddressLike): Buffer | null {
    const pid = this.#peerIds.get(toAddress(addr).key)
    if (pid === undefined || !this.#ep) return null
    return this.#ep.handshakeHash(pid)
  }

  /**
   * Starts a handshake with `addr` now (IK when the peer's X25519 static key is given, XX
   * otherwise). Usually not needed: `send` and `approveConnection` start handshakes themselves.
   */
  connect(addr: AddressLike, remoteStaticKey?: Uint8Array): void {
    if (this.#native) return this.#native.noiseConnect(toAddress(addr), null)
    const ep = this.#ep
    if (!ep) throw closed()
    const pid = this.#peerId(toAddress(addr))
    try {
      ep.connect(this.#clock!.now(), pid, remoteStaticKey ? Buffer.from(remoteStaticKey) : undefined)
    } catch (e) {
      throw fromNative(e)
    }
    this.#drive()
  }

  /** Records a peer's public identity (e.g. from a peer record) so its signed messages verify without a handshake. */
  setPeerIdentity(addr: AddressLike, publicIdentity: Uint8Array): void {
    const ep = this.#ep
    if (!ep) throw closed()
    try {
      ep.setPeerIdentity(this.#clock!.now(), this.#peerId(toAddress(addr)), publicIdentity)
    } catch (e) {
      throw fromNative(e)
    }
  }

  // ------------------------------------------------------------------------------------------
  // Native mode

  /** True when Noise runs in the socket's I/O thread (see the module documentation). */
  get native(): boolean {
    return this.#native !== null
  }

  static override nativeRole = 'stage' as const
  /** @internal True when {@link enableNative} can move the channel into the socket below. */
  canRunNative(below: readonly object[]): boolean {
    // The socket thread applies its impairment stages (faults, delay) before the Noise stage, so
    // Noise can run there directly over the socket or over those test layers.
    const impairmentsOnly = below.every((l) => (l as { name?: string }).name === 'faulty' || (l as { name?: string }).name === 'delay')
    return this.#opts.native !== false && this.#mode === 'encrypt' && impairmentsOnly && this.#identity !== null
  }

  /** @internal Moves the channel into the socket's I/O thread (asked by ReliableUdp above). */
  enableNative(udp: UdpTransport): void {
    if (this.#native) return
    const o = this.#opts
    // The stage carries reliable-UDP datagrams: let many queue behind a handshake.
    udp.attachNoise(this.#identity!.native, TAG_NOISE, { ...stageConfig(this.#opts), maxPendingPerPeer: 4096 }, {
      onNativeConnected: (peer, id, publicIdentity) => {
        this.count('handshakes_completed')
        this.#log('handshake with %s completed (native): %s', peer.key, hex8(id))
        this.#nativeAuth.set(peer.key, new Peer(peer, id, publicIdentity, null, true))
        this.#settleNative(peer, null)
      },
      onNativeFailed: (peer, kind) => {
        if (kind === NATIVE_FAILED_IDENTITY) {
          // Someone else answered at an address bound to an id: any session there stays as it was.
          this.count('identity_mismatches')
          this.#log('identity mismatch at %s: another node answered (native)', peer.key)
          return this.#settleNative(peer, mismatch(peer, null, this.#nativeAuth.get(peer.key)?.id ?? null))
        }
        this.count(kind === 1 ? 'handshakes_failed' : 'sessions_ended')
        this.#log(kind === 1 ? 'handshake with %s failed (native)' : 'session with %s ended (native)', peer.key)
        this.#nativeAuth.delete(peer.key)
        this.#settleNative(peer, new DeccomError(kind === 1 ? NoiseErrorCode.HANDSHAKE_TIMEOUT : ErrorCode.PEER_UNREACHABLE, kind === 1 ? `The handshake with ${peer.key} failed` : `The session with ${peer.key} ended`))
      },
    })
    this.#native = udp
  }

  /** Native mode: asks the socket's Noise stage for a handshake (bound to `want`) and waits for it. */
  #nativeWait(addr: Address, want: Buffer | null, settle: Settle): Settle[] {
    const list = this.#nativeWaiters.get(addr.key) ?? []
    const deadline = this.#opts.handshakeDeadline ?? 15_000
    const timer = this.#clock!.setTimeout(() => {
      const i = list.indexOf(done)
      if (i >= 0) list.splice(i, 1)
      settle(new DeccomError(NoiseErrorCode.HANDSHAKE_TIMEOUT, `No completed handshake with ${addr.key} within ${deadline} ms`))
    }, deadline)
    const done: Settle = (err) => {
      this.#clock!.clearTimeout(timer)
      settle(err)
    }
    list.push(done)
    this.#nativeWaiters.set(addr.key, list)
    this.#native!.noiseConnect(addr, want)
    return list
  }

  #settleNative(peer: Address, err: DeccomError | null): void {
    const list = this.#nativeWaiters.get(peer.key)
    if (!list) return
    this.#nativeWaiters.delete(peer.key)
    for (const done of list) done(err)
  }

  // ------------------------------------------------------------------------------------------
  // From below

  /** Datagrams from the layer below: ours go to the endpoint; others pass up (dropped when strict). */
  onMessage(from: Address, data: Buffer, tag: number): void {
    if (tag !== TAG_NOISE) {
      if (this.#opts.strict ?? this.#mode !== 'plaintext') return this.count('dropped_unprotected')
      return this.upper.onMessage(from, data, tag)
    }
    const ep = this.#ep
    if (!ep) return this.count('dropped_not_running')
    ep.handleDatagram(this.#clock!.now(), this.#peerId(from), data)
    this.#drive()
  }

  // ------------------------------------------------------------------------------------------
  // Internals

  /**
   * The peer number of `addr`, marked as just used. Keyed by `addr.key` (the address intern cache
   * starts over when full). The table keeps NOISE_MAX_PEERS peers: a new one evicts the least
   * recently used peer that has no state here and none the endpoint reports (a session or a known
   * identity); numbers are never reused while held.
   */
  #peerId(addr: Address): number {
    const key = addr.key
    let id = this.#peerIds.get(key)
    if (id !== undefined) {
      this.#peerIds.delete(key)
      this.#peerIds.set(key, id)
      return id
    }
    if (this.#peerIds.size >= NOISE_MAX_PEERS) this.#evictPeer()
    do {
      id = this.#nextPeer
      this.#nextPeer = (id + 1) >>> 0
    } while (id in this.#peers)
    this.#peerIds.set(key, id)
    this.#peers[id] = addr
    return id
  }

  #evictPeer(): void {
    let scanned = 0
    for (const [key, pid] of this.#peerIds) {
      if (scanned++ >= 64) return
      if (this.#auth.has(pid) || this.#ready.has(pid) || this.#waiting.has(pid) || this.#lastHandshake.has(pid)) continue
      if (this.#ep && (this.#ep.isAuthenticated(pid) !== null || this.#ep.remoteIdentity(pid) !== null)) continue
      this.#peerIds.delete(key)
      delete this.#peers[pid]
      this.#ep?.close(pid) // releases what the endpoint still holds for it (half-open state, partial messages)
      this.count('peer_table_evicted')
      return
    }
  }

  #isReady(pid: number): boolean {
    if (!this.#ready.has(pid)) return false
    if (this.#ep!.isAuthenticated(pid) !== null) return true
    this.#ready.delete(pid) // the session went away without an event (expiry runs on the timer)
    return false
  }

  /** The wait record of `pid`, created (and a handshake started) on first use. */
  #wait(pid: number): Waiting {
    let w = this.#waiting.get(pid)
    if (w) return w
    const clock = this.#clock!
    w = { queue: [], approvals: [], timer: null }
    this.#waiting.set(pid, w)
    const deadline = this.#opts.handshakeDeadline ?? 15_000
    w.timer = clock.setTimeout(() => {
      w!.timer = null
      this.#fail(pid, NoiseErrorCode.HANDSHAKE_TIMEOUT, `No completed handshake with ${this.#peers[pid].key} within ${deadline} ms`)
    }, deadline)
    const ep = this.#ep!
    const now = clock.now()
    if (ep.isAuthenticated(pid) !== null) {
      // Authenticated, but our queue is not flushed yet (waiting for the handshake's ack).
    } else if (this.#mode === 'encrypt') {
      this.#log('handshake with %s started', this.#peers[pid].key)
      // A keepalive queued in the core starts the handshake and makes the core retry it if a
      // simultaneous open made us yield and the peer's handshake then died.
      try {
        ep.send(now, pid, EMPTY)
      } catch {
        ep.connect(now, pid)
      }
    } else {
      this.#log('handshake with %s started', this.#peers[pid].key)
      ep.connect(now, pid)
    }
    this.#drive()
    return w
  }

  /** Rejects the queue and the approvals of `pid`. */
  #fail(pid: number, code: string, message: string): void {
    const w = this.#waiting.get(pid)
    if (!w) return
    this.#waiting.delete(pid)
    if (w.timer !== null) this.#clock!.clearTimeout(w.timer)
    this.count('handshake_waits_failed')
    this.#log('gave up waiting for %s: %s', this.#peers[pid].key, message)
    const err = (): DeccomError => new DeccomError(code, message, { details: { peer: this.#peers[pid].key } })
    for (const q of w.queue) q.reject(err())
    for (const a of w.approvals) a(err())
  }

  /** Sends the queue of `pid` once its handshake completed (and, above a reliable layer, was acknowledged). */
  #onConnected(pid: number): void {
    const hs = this.#lastHandshake.get(pid)
    this.#lastHandshake.delete(pid)
    const flush = (): void => {
      if (!this.#ep || this.#ep.isAuthenticated(pid) === null) return
      this.#ready.add(pid)
      const w = this.#waiting.get(pid)
      if (!w) return
      this.#waiting.delete(pid)
      if (w.timer !== null) this.#clock!.clearTimeout(w.timer)
      for (const q of w.queue) this.#transmit(pid, q.data, q.tag).then(q.resolve, q.reject)
      for (const a of w.approvals) a(null)
    }
    if (hs) hs.then(flush, flush)
    else flush()
  }

  /** Frames `data`, hands the frames to the endpoint and the datagrams to the layer below. */
  #transmit(pid: number, data: Uint8Array, tag: number): Promise<void> {
    const ep = this.#ep
    if (!ep) return Promise.reject(closed())
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    const results: Array<Promise<unknown>> = []
    const now = this.#clock!.now()
    const due = ep.pollTimeout()
    if (due !== null && due <= now) ep.handleTimeout(now)
    // Frame 0 goes out at once; the call says whether the message needs more frames (chunks).
    const id = this.#nextMessageId
    let count: number
    try {
      count = ep.sendFrame(now, pid, tag, buf, id, 0)
      this.#flushTransmits(results)
    } catch (e) {
      this.#drive()
      return Promise.reject(fromNative(e))
    }
    if (count > 1) {
      this.#nextMessageId = (id + 1) >>> 0 || 1
      return this.#transmitChunks(pid, buf, tag, id, count, Promise.all(results))
    }
    this.#drive()
    if (results.length === 0) return RESOLVED
    return Promise.all(results).then(noop)
  }

  /**
   * Sends chunks 1.. of a large message (chunk 0 is `first`) with at most
   * {@link MAX_CHUNKS_IN_FLIGHT} of them outstanding below, so that a reliable layer's per-peer
   * queue is never overrun (a 256 MiB message is ~4,400 chunks).
   */
  async #transmitChunks(pid: number, data: Buffer, tag: number, id: number, count: number, first: Promise<unknown>): Promise<void> {
    first.catch(noop) // observed below; keeps an early failure from being reported as unhandled
    const window: Array<Promise<unknown>> = [first]
    for (let index = 1; index < count; index++) {
      const ep = this.#ep
      if (!ep) throw closed()
      const results: Array<Promise<unknown>> = []
      try {
        ep.sendFrame(this.#clock!.now(), pid, tag, data, id, index)
        this.#flushTransmits(results)
      } catch (e) {
        this.#drive()
        throw fromNative(e)
      }
      const sent = Promise.all(results)
      sent.catch(noop)
      window.push(sent)
      if (window.length >= MAX_CHUNKS_IN_FLIGHT) await window.shift()
    }
    this.#drive()
    await Promise.all(window)
  }

  /**
   * Hands every datagram the endpoint produced to the layer below. Results of data datagrams
   * (type 0x00-0x02) go to `results` when given; failures of the others are counted.
   */
  #flushTransmits(results?: Array<Promise<unknown>>): void {
    const ep = this.#ep
    if (!ep) return
    for (let t = ep.pollTransmit(); t !== null; t = ep.pollTransmit()) {
      const { data, lens, peers } = t
      for (let i = 0, off = 0; i < lens.length; off += lens[i], i++) {
        const pid = peers[i]
        if (!(pid in this.#peers)) { this.count('dropped_evicted_peer'); continue } // prettier-ignore
        const dgram = data.subarray(off, off + lens[i])
        const isData = dgram[0] <= 2
        let r: unknown
        try {
          r = this.lower.send(this.#peers[pid], dgram, TAG_NOISE)
        } catch (e) {
          this.count('lower_send_errors')
          if (isData && results) results.push(Promise.reject(e))
          continue
        }
        if (r instanceof Promise) {
          if (isData && results) {
            results.push(r)
          } else {
            const p = r.catch(() => this.count('lower_send_errors'))
            if (!isData) this.#lastHandshake.set(pid, p)
          }
        }
      }
    }
  }

  /** Timers due, transmits, events; then re-arm the one timer. */
  #drive(): void {
    const ep = this.#ep
    if (!ep || this.#driving) return
    this.#driving = true
    try {
      const now = this.#clock!.now()
      const due = ep.pollTimeout()
      if (due !== null && due <= now) ep.handleTimeout(now)
      for (;;) {
        this.#flushTransmits()
        const e = ep.pollEvents(now)
        if (e === null) break
        this.#onEvents(e)
      }
      this.#deadline!.arm(ep.pollTimeout())
    } finally {
      this.#driving = false
    }
  }

  #onEvents(e: NonNullable<ReturnType<NativeEndpoint['pollEvents']>>): void {
    if (e.disconnected) {
      for (const d of e.disconnected) {
        this.count('disconnected')
        this.#log('session with %s ended', this.#peers[d.peer]?.key)
        this.#auth.delete(d.peer)
        this.#ready.delete(d.peer)
      }
    }
    if (e.connected) {
      for (const c of e.connected) {
        this.count('connected')
        this.#log('handshake with %s completed: %s', this.#peers[c.peer]?.key, hex8(c.remoteId))
        this.#auth.set(c.peer, new Peer(this.#peers[c.peer], c.remoteId, c.remoteIdentity, null, true))
        this.#onConnected(c.peer)
      }
    }
    if (e.messages && e.messagePeers && e.messageModes && e.messageTags) {
      const { messages, messagePeers, messageModes, messageTags } = e
      for (let i = 0; i < messages.length; i++) this.#onMessage(messagePeers[i], messages[i], messageModes[i], messageTags[i])
    }
    if (e.failed) {
      for (const f of e.failed) {
        this.count('handshakes_failed_events')
        this.#log('handshake with %s failed: %s', this.#peers[f.peer]?.key, f.message)
        // Failures of rekeys (we are still authenticated) leave waiting messages alone.
        if (this.#ep!.isAuthenticated(f.peer) !== null) continue
        if (f.code === ErrorCode.PEER_IDENTITY_MISMATCH) this.#fail(f.peer, f.code, mismatch(this.#peers[f.peer], null, null).message)
        else this.#fail(f.peer, f.code, f.message)
      }
    }
  }

  /** A whole message (frames decoded and reassembled by the endpoint) for the layer `tag` above. */
  #onMessage(pid: number, data: Buffer, mode: number, tag: number): void {
    // Plaintext data proves nothing about its sender: deliver it with the address only.
    const from = mode === 0 ? new Peer(this.#peers[pid]) : (this.#auth.get(pid) ?? this.#signedPeer(pid))
    this.count('messages_received')
    this.count('bytes_received', data.length)
    this.upper.onMessage(from, data, tag)
  }

  /** The sender of a signed message whose identity the core verified but that has no session. */
  #signedPeer(pid: number): Peer {
    const id = this.#ep!.isAuthenticated(pid)
    const ident = this.#ep!.remoteIdentity(pid)
    return new Peer(this.#peers[pid], id, ident)
  }

  override stats(): Record<string, number> {
    const s: Record<string, number> = { ...this.counters }
    if (this.#ep) Object.assign(s, this.#ep.stats())
    return s
  }

  override async stop(): Promise<void> {
    const clock = this.#clock
    this.#deadline?.clear()
    this.#ep = null
    const waiting = [...this.#waiting.values()]
    this.#waiting.clear()
    for (const w of waiting) {
      if (w.timer !== null) clock?.clearTimeout(w.timer)
      for (const q of w.queue) q.reject(closed())
      for (const a of w.approvals) a(closed())
    }
    this.#ready.clear()
    this.#auth.clear()
    this.#lastHandshake.clear()
  }
}

/** Native stage failure kind: a handshake authenticated another identity than the one expected. */
const NATIVE_FAILED_IDENTITY = 3

function mismatch(addr: Address, want: Buffer | null, have: Buffer | null): DeccomError {
  const w = want ? `${want.toString('hex').slice(0, 16)}…` : 'the expected node'
  const h = have ? ` (it holds a session with ${have.toString('hex').slice(0, 16)}…)` : ''
  return new DeccomError(ErrorCode.PEER_IDENTITY_MISMATCH, `The node at ${addr.key} is not ${w}${h}; nothing was sent to it`, {
    details: { address: addr.key, expected: want?.toString('hex') ?? null, actual: have?.toString('hex') ?? null },
  })
}

/** The first 8 hex digits of a node id, for the log. */
function hex8(id: Uint8Array | null | undefined): string {
  return id ? Buffer.from(id.buffer, id.byteOffset, Math.min(4, id.byteLength)).toString('hex') : '?'
}

function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The Noise layer is not running (not started, or closed)')
}
