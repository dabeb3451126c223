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
import type { TimerHandle } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import type { PingOptions } from '../protocols/udp'
import type { SimulatedNetwork } from './network'

const TAG_SIM = 1 // = TAG_UDP: the same wire format as the UDP transport
const TAG_APP = 0
const PING = 1
const PONG = 2
const PING_LEN = 6
const MAX_DATAGRAM = 65_507
const MAX_PINGS = 4096

interface PendingPing {
  to: Address
  t0: number
  timer: TimerHandle
  resolve: (rtt: number) => void
  reject: (e: Error) => void
  onAbort?: () => void
  signal?: AbortSignal
}

export interface SimTransportOptions {
  /** The transport's address on the simulated network. */
  address: Address
}

export class SimTransport extends Protocol {
  static override provides = ['send', 'ping', 'localAddress']
  static override emits = ['onMessage']

  readonly name = 'sim'
  override readonly tag = TAG_SIM

  readonly #net: SimulatedNetwork
  readonly #address: Address
  #running = false
  readonly #pings = new Map<number, PendingPing>()
  #nextPingId: number

  /** Normally made by `sim.createTransport()` or `sim.createNode()`. */
  constructor(network: SimulatedNetwork, opts: SimTransportOptions) {
    super()
    this.#net = network
    this.#address = toAddress(opts.address)
    this.#nextPingId = network._randomU32()
  }

  /** The network this transport belongs to. */
  get network(): SimulatedNetwork {
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
    const bytes = Buffer.allocUnsafe(data.length + 1)
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
    const { timeout = 2000, signal } = opts
    const clock = this.#net.clock
    return new Promise<number>((resolve, reject) => {
      const addr = toAddress(to)
      if (signal?.aborted) return reject(aborted(signal))
      if (this.#pings.size >= MAX_PINGS) {
        return reject(new DeccomError(ErrorCode.INVALID_ARGUMENT, `More than ${MAX_PINGS} pings outstanding; wait for some to finish`))
      }
      let id = this.#nextPingId
      while (this.#pings.has(id)) id = (id + 1) >>> 0
      this.#nextPingId = (id + 1) >>> 0
      const body = Buffer.allocUnsafe(PING_LEN - 1)
      body[0] = PING
      body.writeUInt32BE(id, 1)
      try {
        this.#sendRaw(addr, TAG_SIM, body)
      } catch (e) {
        return reject(e)
      }
      const p: PendingPing = {
        to: addr,
        t0: clock.now(),
        resolve,
        reject,
        timer: clock.setTimeout(() => {
          this.#settlePing(id)
          this.count('ping_timeouts')
          reject(new DeccomError(ErrorCode.PING_TIMEOUT, `No pong from ${addr.key} within ${timeout} ms`, { details: { to: addr.key, timeout } }))
        }, timeout),
      }
      if (signal) {
        p.signal = signal
        p.onAbort = () => {
          this.#settlePing(id)
          reject(aborted(signal))
        }
        signal.addEventListener('abort', p.onAbort, { once: true })
      }
      this.#pings.set(id, p)
      this.count('pings_sent')
    })
  }

  #settlePing(id: number): PendingPing | undefined {
    const p = this.#pings.get(id)
    if (!p) return undefined
    this.#pings.delete(id)
    this.#net.clock.clearTimeout(p.timer)
    if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort)
    return p
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
    if (bytes.length !== PING_LEN) return this.count('dropped_malformed')
    const type = bytes[1]
    if (type === PING) {
      this.count('pings_answered')
      const body = Buffer.from(bytes.subarray(1))
      body[0] = PONG
      this.#sendRaw(from, TAG_SIM, body)
    } else if (type === PONG) {
      const id = bytes.readUInt32BE(2)
      const p = this.#pings.get(id)
      if (!p || p.to !== from) return this.count('dropped_unexpected_pong')
      this.#settlePing(id)
      p.resolve(this.#net.clock.now() - p.t0)
    } else {
      this.count('dropped_malformed')
    }
  }

  override async stop(): Promise<void> {
    if (!this.#running) return
    this.#running = false
    this.#net._detach(this, this.#address)
    for (const id of [...this.#pings.keys()]) {
      const p = this.#settlePing(id)!
      p.reject(closed())
    }
  }
}

function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The simulated transport is not running (not started yet, or closed)')
}

function aborted(signal: AbortSignal): DeccomError {
  return new DeccomError(ErrorCode.ABORTED, 'The operation was aborted', { cause: signal.reason })
}
