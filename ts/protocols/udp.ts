/**
 * UdpTransport — the bottom layer: a native UDP socket (see crates/deccom-napi/src/socket/).
 *
 * Provides `send(to, data, tag = 0)`, `ping(to, { timeout, signal })`, `localAddress()` and the
 * auxiliary sockets (`openAuxiliary(remote, count)`, `closeAuxiliary(remote)`: extra sockets that
 * carry one remote's traffic, for birthday-paradox hole punching; docs/nat.md); emits
 * `onMessage(from, data, tag)` for every datagram that is not its own.
 *
 * ## Wire format
 * Every datagram starts with a one-byte layer tag (docs/wire.md#layer-tag): 0 is application data,
 * other values belong to the layer that declared them. The transport's own tag is {@link TAG_UDP}:
 *
 * | bytes | ping                 | pong                      |
 * |-------|----------------------|---------------------------|
 * | 0     | 0x01 (TAG_UDP)       | 0x01                      |
 * | 1     | 0x01 (PING)          | 0x02 (PONG)               |
 * | 2..6  | request id, u32 BE   | the ping's id, echoed     |
 *
 * A pong is exactly as large as its ping (no amplification). Anything else with this tag, and empty
 * datagrams, are dropped and counted. Every format on the wire: docs/wire.md#layer-tag.
 *
 * ## Batching
 * Sends made in the same JavaScript turn are staged and handed to Rust in one call at the end of
 * the turn (a microtask), where runs to one destination leave in one GSO syscall. Received
 * datagrams arrive in batches; each is dispatched synchronously.
 */
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import { DeccomError, ErrorCode, fromNative } from '../errors'
import { native } from '../native'
import { realClock } from '../clock'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import type { PingOptions } from './ping'
import { Pinger } from './ping'

/** Tag of the transport's own control datagrams. */
export const TAG_UDP = 1
/** Tag of application data. */
export const TAG_APP = 0

const PING_LEN = 6
/** Largest UDP payload over IPv4 (65535 − 20 − 8); IPv6 allows 65527 without jumbograms. */
const MAX_DATAGRAM_V4 = 65_507
const MAX_DATAGRAM_V6 = 65_527
const STAGE_BYTES = 512 * 1024
const STAGE_COUNT = 2048
/** Reliable messages at least this large are sent from the caller's buffer without a copy. */
const SHARE_THRESHOLD = 64 * 1024

/** Options of {@link UdpTransport} (and of {@link Node.create}, which makes one). */
export interface UdpOptions {
  /** IP literal to bind (default `127.0.0.1`; `0.0.0.0` or `::` for all interfaces). */
  host?: string
  /** Port (default 0: any free port). */
  port?: number
  /** SO_RCVBUF in bytes (default: the OS default). High rates want 4 MiB or more. */
  recvBufferSize?: number
  /** SO_SNDBUF in bytes. */
  sendBufferSize?: number
  /** For `::`: accept only IPv6 (default true). */
  ipv6Only?: boolean
  /** Most datagrams per batch handed to JavaScript (default 1024). */
  maxBatch?: number
  /** Received bytes waiting for JavaScript before new datagrams are dropped and counted (default 32 MiB). */
  maxQueuedBytes?: number
  /** Auxiliary sockets open at once at most (default 256; see {@link UdpTransport.openAuxiliary}). */
  maxAuxSockets?: number
}

export type { PingOptions } from './ping'

type NativeSocket = InstanceType<typeof native.UdpSocket>

/** What a layer running on the socket's native reliable path receives (see ReliableUdp). */
export interface NativeReliableHandler {
  /** A whole message; its first byte is the upper layer's tag. */
  onNativeMessage(from: Address, message: Buffer): void
  /** A send finished: status 0 sent, 1 peer unreachable, 2 forgotten/closed, 3 refused by the receiver, 4 no room for another peer. */
  onNativeCompletion(id: number, status: number): void
  /** A send that asked for progress: `acked` bytes (tag byte included) acknowledged so far; before its completion. */
  onNativeProgress(id: number, acked: number): void
}

/** `messageLens` entry of a received message that is not in the batch's packed buffer. */
const UNPACKED = 0xffffffff

/** Reliable-UDP settings for the native endpoint (see ReliableUdpOptions). */
export interface NativeReliableOptions {
  segmentSize?: number
  loopbackSegmentSize?: number
  maxMessageSize?: number
  peerTimeout?: number
  maxReassemblyPerPeer?: number
  maxReassemblyTotal?: number
  seed?: number
}

/** What the Noise layer in native mode hears from the socket's Noise stage. */
export interface NativeNoiseHandler {
  /** A session with `peer` completed: its node id and encoded public identity. */
  onNativeConnected(peer: Address, id: Buffer, publicIdentity: Buffer): void
  /** 1: a handshake we started with `peer` failed; 2: the session with `peer` ended. */
  onNativeFailed(peer: Address, kind: number): void
}

/** Fault probabilities for the socket's native fault injector (see FaultyTransport). */
export interface NativeFaultOptions {
  drop?: number
  duplicate?: number
  reorder?: number
  corrupt?: number
  /** Upper bound in ms of the extra delay of a reordered datagram (default 20). */
  reorderDelay?: number
  seed?: number
}

export class UdpTransport extends Protocol {
  static override provides = ['send', 'ping', 'localAddress', 'openAuxiliary', 'closeAuxiliary']
  static override emits = ['onMessage']
  /** Runs native stages (ReliableUdp, Noise, FaultyTransport, Delay) in its I/O thread; see NativeRole. */
  static override nativeRole = 'socket' as const

  readonly name = 'udp'
  override readonly tag = TAG_UDP

  readonly #opts: UdpOptions
  #sock: NativeSocket | null = null
  #local: Address | null = null
  #maxDatagram = MAX_DATAGRAM_V4
  /** Source address slots, as interned by the native socket. */
  #slots: Address[] = []
  // Send staging: payloads back to back, their lengths, 18 address bytes each.
  readonly #stage = Buffer.allocUnsafe(STAGE_BYTES)
  readonly #lens = new Uint32Array(STAGE_COUNT)
  readonly #addrs = Buffer.allocUnsafe(STAGE_COUNT * 18)
  #staged = 0
  #stagedBytes = 0
  #flushScheduled = false
  /** Reliable sends wait in the socket for `flush()` (see `sendReliable`). */
  #rudpStaged = false
  readonly #flush = (): void => this.flush()
  readonly #pinger = new Pinger(
    () => realClock,
    (name) => this.count(name),
    (to, body) => this.#stageOne(to, body, TAG_UDP, PING_LEN),
    (Math.random() * 0x1_0000_0000) >>> 0,
  )
  #reliable: NativeReliableHandler | null = null
  #delayLinks: ((direction: 'send' | 'receive', peer: Address) => void) | null = null
  #noise: NativeNoiseHandler | null = null

  constructor(opts: UdpOptions = {}) {
    super()
    this.#opts = opts
  }

  override async start(_ctx?: LayerContext): Promise<void> {
    if (this.#sock) throw new DeccomError(ErrorCode.STACK_STATE, 'UdpTransport is already started')
    const { host = '127.0.0.1', port = 0 } = this.#opts
    try {
      this.#sock = native.UdpSocket.bind(
        host,
        port,
        {
          recvBufferSize: this.#opts.recvBufferSize,
          sendBufferSize: this.#opts.sendBufferSize,
          ipv6Only: this.#opts.ipv6Only,
          maxBatch: this.#opts.maxBatch,
          maxQueuedBytes: this.#opts.maxQueuedBytes,
          maxAuxSockets: this.#opts.maxAuxSockets,
        },
        () => this.#onReadable(),
      )
    } catch (e) {
      throw fromNative(e)
    }
    const la = this.#sock.localAddress()
    this.#local = toAddress(la.address, la.port)
    this.#maxDatagram = this.#local.family === 4 ? MAX_DATAGRAM_V4 : MAX_DATAGRAM_V6
    _ctx?.log?.('bound %s', this.#local.key)
  }

  /** The bound address. @throws ERR_DECCOM_CLOSED before start / after stop */
  localAddress(): Address {
    if (!this.#local) throw closed()
    return this.#local
  }

  /**
   * Sends one datagram `[tag][data]` to `to`. Synchronous: the datagram is staged and leaves at the
   * end of this JavaScript turn with the others staged in it.
   * @throws ERR_DECCOM_DATAGRAM_TOO_LARGE, ERR_DECCOM_INVALID_ADDRESS, ERR_DECCOM_CLOSED
   */
  send(to: AddressLike, data: Uint8Array, tag: number = TAG_APP): void {
    const addr = toAddress(to)
    const len = data.length + 1
    if (len > this.#maxDatagram) {
      throw new DeccomError(
        ErrorCode.DATAGRAM_TOO_LARGE,
        `A datagram of ${data.length} bytes (+1 tag byte) exceeds the UDP limit of ${this.#maxDatagram - 1} bytes; ` +
          'send large messages through ReliableUdp, which splits them into segments',
        { details: { size: data.length, max: this.#maxDatagram - 1 } },
      )
    }
    this.#stageOne(addr, data, tag, len)
  }

  #stageOne(addr: Address, data: Uint8Array, tag: number, len: number): void {
    if (this.#sock === null) throw closed()
    if (addr === this.#local) {
      this.count('dropped_self')
      throw new DeccomError(ErrorCode.INVALID_ADDRESS, `Refusing to send to this node's own address ${addr.key}`)
    }
    if (this.#staged === STAGE_COUNT || this.#stagedBytes + len > STAGE_BYTES) this.flush()
    const off = this.#stagedBytes
    this.#stage[off] = tag
    this.#stage.set(data, off + 1)
    this.#lens[this.#staged] = len
    this.#addrs.set(addr.raw, this.#staged * 18)
    this.#staged++
    this.#stagedBytes = off + len
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      queueMicrotask(this.#flush)
    }
  }

  /**
   * Opens up to `count` auxiliary sockets toward `remote` (as many as fit under `maxAuxSockets`)
   * and returns how many were opened. Until one of them receives a datagram, everything sent to
   * `remote` leaves from each of them (each opens its own NAT mapping); the first to receive one
   * wins, the others are closed, and from then on the winner carries all traffic to and from
   * `remote` — native stages (ReliableUdp, Noise) included. Datagrams arriving on them come up as
   * from `remote`. Counters: `aux_open` (now), `aux_opened`, `aux_closed`, `aux_won`,
   * `aux_rx_datagrams`, `aux_tx_datagrams`, `aux_errors`.
   * @throws ERR_DECCOM_CLOSED, ERR_DECCOM_INVALID_ADDRESS, ERR_DECCOM_SOCKET
   */
  openAuxiliary(remote: AddressLike, count: number): number {
    if (this.#sock === null) throw closed()
    this.flush() // what was sent to `remote` before leaves from the main socket, in order
    try {
      return this.#sock.auxOpen(toAddress(remote).raw, Math.max(0, Math.floor(count)))
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** Closes the auxiliary sockets of `remote` (traffic to it goes through the main socket again); returns how many. */
  closeAuxiliary(remote: AddressLike): number {
    if (this.#sock === null) return 0
    this.flush()
    try {
      return this.#sock.auxClose(toAddress(remote).raw)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** Hands every staged datagram (and reliable send) to the socket now (normally automatic at the end of the turn). */
  flush(): void {
    this.#flushScheduled = false
    if (this.#rudpStaged && this.#sock !== null) {
      this.#rudpStaged = false
      this.#sock.flush()
    }
    const n = this.#staged
    if (n === 0 || this.#sock === null) return
    this.#staged = 0
    const bytes = this.#stagedBytes
    this.#stagedBytes = 0
    const accepted = this.#sock.sendBatch(this.#stage.subarray(0, bytes), this.#lens.subarray(0, n), this.#addrs.subarray(0, n * 18))
    this.count('sent', accepted)
    if (accepted < n) this.count('dropped_send', n - accepted)
  }

  /**
   * @internal The socket answers DHT GETs (datagrams of `tag`) in its receive path with `server`
   * (a DhtServer) and `table` (the KadTable whose up to `nodes` closest nodes the answers list),
   * without calling JavaScript; `now` is the layers' clock (ms) at this moment. False when the
   * socket cannot (a native stage attached, or not on Unix): the DHT layer then answers as
   * before. See `crates/deccom-napi/src/socket/responder.rs`.
   */
  attachDhtResponder(server: unknown, table: unknown, tag: number, nodes: number, now: number): boolean {
    if (this.#sock === null) return false
    try {
      return this.#sock.attachDhtResponder(tag, nodes, server as never, table as never, now)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** @internal Stops the socket's DHT responder (see {@link attachDhtResponder}). */
  detachDhtResponder(): void {
    this.#sock?.detachDhtResponder()
  }

  /** @internal What the socket's DHT responder counted, by the DHT layer's counter names. */
  dhtResponderStats(): Record<string, number> {
    return this.#sock?.dhtResponderStats() ?? {}
  }

  /**
   * @internal Runs reliable UDP inside the socket's I/O thread: datagrams tagged `tag` never reach
   * JavaScript; whole messages and completions go to `handler`. Used by ReliableUdp when every
   * layer between it and this transport is native.
   *
   * The socket composes its native stages in the order they are attached, bottom first: the
   * layers below (`setNativeFaults`, `setNativeDelay`, `attachNoise`) attach before the layers
   * above them.
   */
  attachReliable(handler: NativeReliableHandler, tag: number, opts: NativeReliableOptions): void {
    if (this.#sock === null) throw closed()
    try {
      this.#sock.attachRudp(tag, opts)
    } catch (e) {
      throw fromNative(e)
    }
    this.#reliable = handler
  }

  /** @internal Queues a reliable message on the native endpoint (with progress reports if `progress`); returns its id. */
  sendReliable(to: Address, tag: number, data: Buffer, progress = false): number {
    const sock = this.#sock
    if (sock === null) throw closed()
    let id: number
    try {
      // Small messages are copied; large ones are read in place (no copy, one held reference).
      id = data.length < SHARE_THRESHOLD ? sock.rudpSendCopy(to.raw, tag, data, progress) : sock.rudpSend(to.raw, tag, data, progress)
    } catch (e) {
      throw fromNative(e)
    }
    // The socket stages the reliable sends of this turn; flush() hands them to its thread at once.
    this.#rudpStaged = true
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      queueMicrotask(this.#flush)
    }
    return id
  }

  /** @internal Gives up a reliable message on the native endpoint (no completion follows); false when it already completed. */
  cancelReliable(id: number): boolean {
    if (this.#sock === null) return false
    try {
      return this.#sock.rudpCancel(id)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** @internal Native fault injection on one direction (FaultyTransport in native mode); null removes it. */
  setNativeFaults(direction: 'send' | 'receive', opts: NativeFaultOptions | null): void {
    if (this.#sock === null) throw closed()
    try {
      this.#sock.setFaults(direction, opts)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /**
   * @internal Runs Noise (encrypt mode) inside the socket's I/O thread, sealing and opening every
   * reliable-UDP datagram there (Noise in native mode, under ReliableUdp).
   */
  attachNoise(identity: unknown, tag: number, opts: Record<string, unknown>, handler: NativeNoiseHandler): void {
    if (this.#sock === null) throw closed()
    try {
      this.#sock.attachNoise(identity as never, tag, opts)
    } catch (e) {
      throw fromNative(e)
    }
    this.#noise = handler
  }

  /** @internal Starts a handshake on the native Noise stage. */
  noiseConnect(to: Address, expectedId: Buffer | null = null): void {
    if (this.#sock === null) throw closed()
    try {
      this.#sock.noiseConnect(to.raw, expectedId ?? undefined)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /**
   * @internal A native delay line on one direction (Delay in native mode); null removes it.
   * `linkOf(direction, peer)` is called once per new peer and must answer with
   * {@link setNativeDelayLink}; the peer's datagrams wait (bounded) until it does.
   */
  setNativeDelay(direction: 'send' | 'receive', maxQueueBytes: number | null, linkOf: (direction: 'send' | 'receive', peer: Address) => void): void {
    if (this.#sock === null) throw closed()
    try {
      this.#sock.setDelay(direction, maxQueueBytes)
    } catch (e) {
      throw fromNative(e)
    }
    this.#delayLinks = linkOf
  }

  /** @internal The link of one peer on a native delay line (latency ms, bytes per second, 0 = unlimited). */
  setNativeDelayLink(direction: 'send' | 'receive', peer: Address, latencyMs: number, bytesPerSec: number): void {
    if (this.#sock === null) return
    try {
      this.#sock.setDelayLink(direction, peer.raw, latencyMs, bytesPerSec)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /**
   * Round-trip time in milliseconds to the UDP transport at `to`.
   * @throws ERR_DECCOM_PING_TIMEOUT when no pong arrives in time; ERR_DECCOM_ABORTED; ERR_DECCOM_CLOSED
   */
  ping(to: AddressLike, opts: PingOptions = {}): Promise<number> {
    try {
      return this.#pinger.ping(toAddress(to), opts)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  #onReadable(): void {
    const sock = this.#sock
    if (sock === null) return
    let firstError: unknown
    let failed = false
    for (let b = sock.take(); b !== null; b = this.#sock === null ? null : sock.take()) {
      const { data, meta, newAddrs } = b
      if (meta[1] & 1) this.#slots = []
      if (newAddrs) {
        const parts = newAddrs.split(' ')
        for (let i = 0, s = meta[2]; i + 1 < parts.length; i += 2, s++) this.#slots[s] = toAddress(parts[i], Number(parts[i + 1]))
      }
      const { noiseConnected, noiseFailed } = b
      if (this.#noise && (noiseConnected || noiseFailed)) {
        for (const rec of noiseConnected ?? []) {
          this.#noise.onNativeConnected(this.#slots[rec.readUInt32BE(0)], Buffer.from(rec.subarray(4, 36)), Buffer.from(rec.subarray(36)))
        }
        if (noiseFailed) for (let i = 0; i + 1 < noiseFailed.length; i += 2) this.#noise.onNativeFailed(this.#slots[noiseFailed[i]], noiseFailed[i + 1])
      }
      const { messages, messageSlots, messageLens, packedMessages, completions, progress } = b
      if (messageSlots && messageLens && this.#reliable) {
        // Small messages share one buffer (views into it); large ones come one buffer each.
        for (let i = 0, at = 0, large = 0; i < messageSlots.length; i++) {
          const len = messageLens[i]
          let m: Buffer
          if (len === UNPACKED) m = messages![large++]
          else {
            m = packedMessages!.subarray(at, at + len)
            at += len
          }
          try {
            this.#reliable.onNativeMessage(this.#slots[messageSlots[i]], m)
          } catch (e) {
            this.count('handler_errors')
            if (!failed) {
              failed = true
              firstError = e
            }
          }
        }
      }
      if (progress && this.#reliable) {
        for (let i = 0; i + 1 < progress.length; i += 2) this.#reliable.onNativeProgress(progress[i], progress[i + 1])
      }
      if (completions && this.#reliable) {
        for (let i = 0; i + 1 < completions.length; i += 2) this.#reliable.onNativeCompletion(completions[i], completions[i + 1])
      }
      const { delayPeers } = b
      if (delayPeers && this.#delayLinks) {
        for (let i = 0; i + 1 < delayPeers.length; i += 2) {
          try {
            this.#delayLinks(delayPeers[i] === 0 ? 'receive' : 'send', this.#slots[delayPeers[i + 1]])
          } catch (e) {
            this.count('handler_errors')
            if (!failed) {
              failed = true
              firstError = e
            }
          }
        }
      }
      const n = meta[0]
      for (let i = 0, j = 3; i < n; i++, j += 3) {
        try {
          this.#dispatch(data, meta[j], meta[j + 1], this.#slots[meta[j + 2]])
        } catch (e) {
          // A throwing handler must not cost the rest of the batch; the first error is rethrown below.
          this.count('handler_errors')
          if (!failed) {
            failed = true
            firstError = e
          }
        }
      }
    }
    this.flush()
    if (failed) {
      queueMicrotask(() => {
        throw firstError
      })
    }
  }

  #dispatch(data: Buffer, off: number, len: number, from: Address): void {
    if (len === 0) return this.count('dropped_empty')
    const tag = data[off]
    if (tag !== TAG_UDP) {
      this.count('received')
      this.upper.onMessage(from, data.subarray(off + 1, off + len), tag)
      return
    }
    this.#pinger.onControl(from, data.subarray(off + 1, off + len))
  }

  override stats(): Record<string, number> {
    const s: Record<string, number> = { ...this.counters }
    if (this.#sock) Object.assign(s, this.#sock.stats(), this.#sock.pipelineStats(), this.#sock.auxStats())
    return s
  }

  override async stop(): Promise<void> {
    const sock = this.#sock
    if (sock === null) return
    try {
      this.flush()
    } catch {
      // Best effort: closing anyway.
    }
    this.#sock = null
    this.#reliable = null
    this.#delayLinks = null
    this.#noise = null
    sock.close()
    this.#pinger.rejectAll(closed)
    this.#slots = []
  }
}

function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The UDP transport is not running (not started yet, or closed)')
}

