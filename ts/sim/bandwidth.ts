/**
 * Bandwidth per node for a {@link SimulatedNetwork}: an uplink and a downlink (the node's access
 * link), each a FIFO serializer with a bounded backlog. Given to
 * `sim.createNodes(n, { bandwidth: { up: 125, down: 1250, queueBytes: 256 * 1024 } })` (bytes per
 * ms: 125 = 1 Mbit/s) or as a function of the node's index.
 *
 * - **Uplink.** Every datagram a node sends, to any destination, waits behind the earlier ones and
 *   takes `size / up` ms; it enters the link (latency, loss... of the pair) when its last byte is
 *   out. A backlog above `queueBytes` drops it (`dropped_uplink`).
 * - **Downlink.** Every datagram arriving for the node, from any source, waits behind the earlier
 *   arrivals and takes `size / down` ms; it is delivered when its last byte is in. A backlog above
 *   `queueBytes` drops it (`dropped_downlink`).
 *
 * `size` is the datagram's wire size (tag byte + payload). Per-link `bandwidth` (LinkSpec) still
 * applies to the pair on top of the nodes' own.
 */
import { DeccomError, ErrorCode } from '../errors'

/** A node's access link (bytes per ms; Infinity or omitted: no limit). */
export interface NodeBandwidth {
  /** Uplink: bytes per ms the node can send, over all destinations (default Infinity). */
  up?: number
  /** Downlink: bytes per ms the node can receive, over all sources (default Infinity). */
  down?: number
  /** Most bytes waiting in each direction; a datagram beyond is dropped (default 1 MiB). */
  queueBytes?: number
}

export const DEFAULT_ACCESS_QUEUE = 1024 * 1024

/** One direction of an access link: a FIFO serializer at `rate` bytes per ms. */
export class AccessLink {
  readonly rate: number
  readonly bound: number
  /** Virtual time at which the last accepted datagram is fully serialized. */
  #free = 0

  constructor(rate: number, bound: number) {
    this.rate = rate
    this.bound = bound
  }

  /**
   * A datagram of `size` bytes offered at `now`: the time its serialization ends, or -1 when the
   * backlog (bytes still to serialize ahead of it, plus its own) would exceed the bound.
   */
  offer(now: number, size: number): number {
    const start = this.#free > now ? this.#free : now
    if ((start - now) * this.rate + size > this.bound) return -1
    this.#free = start + size / this.rate
    return this.#free
  }
}

/** The access links of a bandwidth option, or undefined for none; validates. */
export function accessLinks(b: NodeBandwidth | undefined, where: string): { up?: AccessLink; down?: AccessLink } | undefined {
  if (b === undefined) return undefined
  if (typeof b !== 'object' || b === null) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${where}: { up?, down?, queueBytes? }`)
  const bound = b.queueBytes ?? DEFAULT_ACCESS_QUEUE
  if (!(bound >= 0) || !Number.isFinite(bound)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${where}.queueBytes must be a finite number >= 0, got ${bound}`)
  const link = (rate: number | undefined, field: string): AccessLink | undefined => {
    if (rate === undefined || rate === Infinity) return undefined
    if (!(rate > 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${where}.${field} must be > 0 bytes per ms (Infinity for no limit), got ${rate}`)
    return new AccessLink(rate, bound)
  }
  const up = link(b.up, 'up')
  const down = link(b.down, 'down')
  return up || down ? { up, down } : undefined
}
