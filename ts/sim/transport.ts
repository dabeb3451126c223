/**
 * SimTransport — the bottom layer of a node on a {@link SimulatedNetwork}: the same interface and
 * wire behaviour as {@link UdpTransport}, over the simulator instead of a socket.
 *
 * Provides `send(to, data, tag = 0)`, `ping(to, { timeout, signal })` and `localAddress()`; emits
 * `onMessage(from, data, tag)` for every datagram that is not its own. Its own datagrams use tag 1
 * (the UDP transport's tag) with the UDP transport's ping/pong format:
 *
 * | bytes | ping                 | pong                      |
 * |-------|----------------------|---------------------------|
 * | 0     | 0x01 (TAG_UDP)       | 0x01                      |
 * | 1     | 0x01 (PING)          | 0x02 (PONG)               |
 * | 2..6  | request id, u32 BE   | the ping's id, echoed     |
 *
 * Differences from UdpTransport: a datagram leaves at once (no end-of-turn batching; the
 * simulator delivers it after the link's delay), the payload is copied on `send` (the caller may
 * reuse its buffer), RTTs and ping timeouts are measured on the simulator's virtual clock, and the
 * limit is the IPv4 one (65,507 bytes including the tag byte) for every address. Counters: sent,
 * received, pings_sent, pings_answered, ping_timeouts, dropped_empty, dropped_malformed,
 * dropped_unexpected_pong, dropped_self, handler_errors.
 */
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import { DeccomError, ErrorCode } from '../errors'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import type { PingOptions } from '../protocols/ping'
import { Pinger } from '../protocols/ping'
import type { Clock } from '../clock'
import type { LaneClient, LaneCounters, LaneHandle, NativeLane } from './lane'

/**
 * What a SimTransport needs of the network it is attached to. `SimulatedNetwork` implements it;
 * the transport depends on this interface only, so the network can import the transport.
 */
export interface SimMedium {
  readonly clock: Clock
  /** @internal A draw from the network's seeded generator. */
  _randomU32(): number
  /** @internal */
  _attach(t: SimTransport, addr: Address): void
  /** @internal */
  _detach(t: SimTransport, addr: Address): void
  /** @internal Hands a datagram to the network's link model. */
  _transmit(from: Address, to: Address, bytes: Buffer): void
  /** @internal The network's native delivery lane, if any. */
  _nativeLane?(): NativeLane | null
}

const TAG_SIM = 1 // = TAG_UDP: the same wire format as the UDP transport
const TAG_APP = 0
const MAX_DATAGRAM = 65_507

/** Options of {@link SimTransport}. */
export interface SimTransportOptions {
  /** The transport's address on the simulated network. */
  address: Address
}

export class SimTransport extends Protocol {
  static override provides = ['send', 'ping', 'localAddress']
  static override emits = ['onMessage']

  readonly name = 'sim'
  override readonly tag = TAG_SIM

  readonly #net: SimMedium
  readonly #address: Address
  #running = false
  readonly #pinger: Pinger
  /** The protocol node attached to the network's lane above this transport, if any. */
  #lane: LaneHandle | null = null

  /** Normally made by `sim.createTransport()` or `sim.createNode()`. */
  constructor(network: SimMedium, opts: SimTransportOptions) {
    super()
    this.#net = network
    this.#address = toAddress(opts.address)
    this.#pinger = new Pinger(
      () => network.clock,
      (name) => this.count(name),
      (to, body) => this.#sendRaw(to, TAG_SIM, body),
      network._randomU32(),
    )
  }

  /** The network this transport belongs to. */
  get network(): SimMedium {
    return this.#net
  }

  override async start(_ctx?: LayerContext): Promise<void> {
    if (this.#running) throw new DeccomError(ErrorCode.STACK_STATE, 'SimTransport is already started')
    this.#net._attach(this, this.#address)
    this.#running = true
  }

  /** The simulated address. @throws ERR_DECCOM_CLOSED before start / after stop */
  localAddress(): Address {
    if (!this.#running) throw closed()
    return this.#address
  }

  /**
   * Sends one datagram `[tag][data]` to `to`; the bytes are copied.
   * @throws ERR_DECCOM_DATAGRAM_TOO_LARGE, ERR_DECCOM_INVALID_ADDRESS, ERR_DECCOM_CLOSED
   */
  send(to: AddressLike, data: Uint8Array, tag: number = TAG_APP): void {
    const addr = toAddress(to)
    if (data.length + 1 > MAX_DATAGRAM) {
      throw new DeccomError(
        ErrorCode.DATAGRAM_TOO_LARGE,
        `A datagram of ${data.length} bytes (+1 tag byte) exceeds the UDP limit of ${MAX_DATAGRAM - 1} bytes; ` +
          'send large messages through ReliableUdp, which splits them into segments',
        { details: { size: data.length, max: MAX_DATAGRAM - 1 } },
      )
    }
    this.#sendRaw(addr, tag, data)
  }

  #sendRaw(addr: Address, tag: number, data: Uint8Array): void {
    if (!this.#running) throw closed()
    if (addr === this.#address) {
      this.count('dropped_self')
      throw new DeccomError(ErrorCode.INVALID_ADDRESS, `Refusing to send to this node's own address ${addr.key}`)
    }
    const bytes = datagram(data.length + 1)
    bytes[0] = tag
    bytes.set(data, 1)
    this.count('sent')
    this.#net._transmit(this.#address, addr, bytes)
  }

  /**
   * Round-trip time in virtual milliseconds to the transport at `to`.
   * @throws ERR_DECCOM_PING_TIMEOUT when no pong arrives in time (default 2000 virtual ms);
   *   ERR_DECCOM_ABORTED; ERR_DECCOM_CLOSED
   */
  ping(to: AddressLike, opts: PingOptions = {}): Promise<number> {
    try {
      return this.#pinger.ping(toAddress(to), opts)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * @internal Attaches the native node (`table`, a KadTable) of the protocol right above this
   * transport, whose datagrams carry `tag`, to the network's delivery lane: null when the network
   * has none, or the transport is not running or has one attached. What the lane sends and
   * receives for it is counted here as this transport's `sent` and `received`.
   */
  _attachLane(table: unknown, tag: number, client: LaneClient): LaneHandle | null {
    const lane = this.#net._nativeLane?.() ?? null
    if (lane === null || !this.#running || this.#lane?.attached === true) return null
    this.#lane = lane.attach(table as Parameters<NativeLane['attach']>[0], this.#address, tag, client, (c) => this.#fold(c))
    return this.#lane
  }

  override stats(): Record<string, number> {
    const out = super.stats()
    if (this.#lane?.attached === true) addLaneCounters(out, this.#lane.counters())
    return out
  }

  /** A detached node's counts join this transport's own. */
  #fold(c: LaneCounters): void {
    addLaneCounters(this.counters as Record<string, number>, c)
  }

  /**
   * @internal Called by the network when a datagram arrives. A throwing upper layer is counted
   * (`handler_errors`) and the error propagates, rejecting the runFor/runUntil in progress.
   */
  _deliver(from: Address, bytes: Buffer): void {
    if (!this.#running) return
    if (bytes.length === 0) return this.count('dropped_empty')
    const tag = bytes[0]
    if (tag !== TAG_SIM) {
      this.count('received')
      try {
        this.upper.onMessage(from, bytes.subarray(1), tag)
      } catch (e) {
        this.count('handler_errors')
        throw e
      }
      return
    }
    this.#pinger.onControl(from, bytes.subarray(1))
  }

  override async stop(): Promise<void> {
    if (!this.#running) return
    this.#running = false
    this.#lane?.detach()
    this.#lane = null
    this.#net._detach(this, this.#address)
    this.#pinger.rejectAll(closed)
  }
}

/**
 * The datagrams' copies are cut from slabs of this size rather than from Node's 8 KiB buffer
 * pool, which needed a new ArrayBuffer (external memory, swept by the collector) every few
 * datagrams. A datagram lives until its delivery (and as long as a layer keeps a view of it, as
 * the UDP transport's batches do): a slab is freed once all of its datagrams are.
 */
const SLAB = 65_536
let slab = Buffer.allocUnsafeSlow(SLAB)
let slabUsed = 0

/** A buffer of `len` bytes for a datagram (see {@link SLAB}). */
function datagram(len: number): Buffer {
  if (len > SLAB / 8) return Buffer.allocUnsafeSlow(len)
  if (slabUsed + len > SLAB) {
    slab = Buffer.allocUnsafeSlow(SLAB)
    slabUsed = 0
  }
  const b = slab.subarray(slabUsed, slabUsed + len)
  slabUsed = (slabUsed + len + 7) & ~7
  return b
}

function addLaneCounters(out: Record<string, number>, c: LaneCounters): void {
  for (const [k, v] of [['sent', c.sent], ['received', c.received], ['dropped_self', c.dropped_self]] as const) if (v > 0) out[k] = (out[k] ?? 0) + v
}

function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The simulated transport is not running (not started yet, or closed)')
}

