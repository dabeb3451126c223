/**
 * The native delivery lane of a {@link SimulatedNetwork} created with `nativeDelivery: true`
 * (the native `SimLane`, deccom-core `sim::lane`).
 *
 * A protocol whose node runs natively (Kademlia's `KadTable`) and sits right on its SimTransport
 * attaches it here: from then on the datagrams such nodes send one another, and the node's timer,
 * are events of the lane, run in native code with no JavaScript per datagram. The network's event
 * queue and the lane's share one sequence counter, and the network runs whichever head comes
 * first, so the two form one queue in (time, sequence) order: a run gives the same events in the
 * same order as without the lane. The lane hands back what is not its own: a node's events (a
 * lookup ended, a peer entered...) and datagrams to any other address or of another protocol.
 *
 * The datagrams the JavaScript path sends go into the lane too ({@link NativeLane.transmit}): the
 * lane holds every link (delay and jitter only), and the network's own queue keeps only timers.
 *
 * With `threads` above 1 the native lane is a parallel one (deccom-core `sim::parallel`): it runs
 * whole windows of one link latency on several threads, hands back what it ran into after the
 * window, and reports its head's sequence number as Infinity, so the network's own events at the
 * same time run first. The calls are the same.
 */
import type { Address } from '../address'
import { fromRawAddress } from '../address'
import { DeccomError, ErrorCode } from '../errors'
import { native } from '../native'
import type { EventQueue } from './event-queue'
import type { LinkParams } from './impair'
import { MAX_LINK_STATES, delayOnly } from './links'

type SimLane = InstanceType<typeof native.SimLane>
type KadTable = InstanceType<typeof native.KadTable>

/** Most threads of the native lane (the native lane's own limit). */
const MAX_THREADS: number = native.simMaxThreads()

/**
 * The lane a network with these options runs (null without `nativeDelivery`), its options
 * checked: ERR_DECCOM_INVALID_ARGUMENT for what the lane does not model (a link function, a
 * default link that does more than delay or has its own seed, the trace on) and for `threads`
 * that is not an integer from 1 to the native limit (64), or above 1 without `nativeDelivery` or
 * a latency above 0.
 */
export function laneFor(
  opts: { nativeDelivery?: boolean; threads?: number; link?: unknown },
  defaultLink: LinkParams & { latency: number; jitter: number; seed?: unknown },
  traceOn: boolean,
  queue: EventQueue,
  seedBase: number,
): NativeLane | null {
  const threads = opts.threads ?? 1
  if (threads !== 1 && opts.nativeDelivery !== true) {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'threads above 1 need nativeDelivery', { details: { option: 'threads' } })
  }
  if (opts.nativeDelivery !== true) return null
  const l = defaultLink
  const why =
    opts.link !== undefined ? 'a link function' :
    !delayOnly(l) ? 'a defaultLink that does more than delay' :
    l.seed !== undefined ? "a defaultLink seed" :
    traceOn ? 'the trace (pass trace: false)' : null // prettier-ignore
  if (why !== null) {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `nativeDelivery does not work with ${why}`, { details: { option: 'nativeDelivery' } })
  }
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `threads must be an integer from 1 to ${MAX_THREADS}`, { details: { option: 'threads' } })
  }
  if (threads > 1 && !(l.latency > 0)) {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'threads above 1 need a defaultLink latency above 0', { details: { option: 'threads' } })
  }
  return new NativeLane(queue, l.latency, l.jitter, seedBase, MAX_LINK_STATES, threads)
}

/** Where a handed-back datagram starts in the io buffer (see the native SimLane). */
const IO_BYTES = 88
const IO_SIZE = IO_BYTES + 65_536

/** What an attached node's owner does when the lane hands back the node's events. */
export interface LaneClient {
  onEvents(): void
}

/** The counters of an attached node: datagrams sent and received through the lane, frames to itself dropped. */
export interface LaneCounters {
  sent: number
  received: number
  dropped_self: number
}

/** The network's lane: see the module docs. */
export class NativeLane {
  readonly #lane: SimLane
  readonly #queue: EventQueue
  /** f64 values at 0..40 (see the native SimLane), then a handed-back datagram. */
  readonly #io = Buffer.allocUnsafeSlow(IO_SIZE).fill(0)
  readonly #f = new Float64Array(this.#io.buffer, 0, 6)
  readonly #clients: (LaneClient | undefined)[] = []
  /** The lane's first event: time (Infinity: none) and sequence number. */
  headTime = Infinity
  headSeq = 0

  constructor(queue: EventQueue, latency: number, jitter: number, seedBase: number, maxLinks: number, threads = 1) {
    this.#queue = queue
    this.#lane = new native.SimLane(latency, jitter, seedBase, maxLinks, threads)
  }

  /**
   * Attaches `table` at `address` (datagrams tagged `tag`); null when the address has a node
   * already. `onDetach` gets the node's counters when it is detached.
   */
  attach(table: KadTable, address: Address, tag: number, client: LaneClient, onDetach: (c: LaneCounters) => void): LaneHandle | null {
    const i = this.#lane.attach(table, address.raw, tag)
    if (i < 0) return null
    this.#clients[i] = client
    return new LaneHandle(this, i, onDetach)
  }

  /** Puts a datagram (`bytes`: tag first) sent now on its link, as an event of the lane. */
  transmit(from: Address, to: Address, bytes: Buffer, now: number): void {
    this.#begin()
    this.#lane.transmit(from.raw, to.raw, bytes, now, this.#io)
    this.#end()
  }

  /** @internal */
  _arm(i: number, at: number, now: number): void {
    this.#begin()
    this.#lane.arm(i, at, now, this.#io)
    this.#end()
  }

  /** @internal */
  _kick(i: number, now: number): boolean {
    this.#begin()
    const events = this.#lane.kick(i, now, this.#io)
    this.#end()
    return events
  }

  /** @internal */
  _adopt(i: number, at: number, time: number, seq: number): void {
    this.#begin()
    this.#lane.adopt(i, at, time, seq, this.#io)
    this.#end()
  }

  /** @internal */
  _detach(i: number): LaneCounters {
    this.#begin()
    const c = this.#lane.detach(i, this.#io)
    this.#end()
    this.#clients[i] = undefined
    return counters(c)
  }

  /** @internal */
  _counters(i: number): LaneCounters {
    return counters(this.#lane.nodeCounters(i))
  }

  /**
   * Runs the lane's events before the network's next one (`limitTime`, `limitSeq`) and not after
   * `deadline`, at most `budget`. Returns the events run, and the time of the last one in
   * {@link now}; then (with the network's time set to it) {@link handBack} hands over what the
   * last one left for JavaScript.
   */
  run(limitTime: number, limitSeq: number, deadline: number, budget: number): number {
    this.#begin()
    this.#stopped = this.#lane.run(limitTime, limitSeq, deadline, budget, this.#io)
    this.#end()
    this.now = this.#f[3]!
    return this.#f[4]!
  }

  /**
   * After {@link run}: a node's events go to its client, a datagram not for the lane to `deliver`
   * (once).
   */
  handBack(deliver: (from: Address, to: Address, bytes: Buffer) => void): void {
    const kind = this.#stopped
    this.#stopped = 0
    if (kind === 1) {
      this.#clients[this.#f[5]!]?.onEvents()
    } else if (kind === 2) {
      const io = this.#io
      const len = io.readUInt32LE(84)
      deliver(fromRawAddress(io.subarray(48, 66)), fromRawAddress(io.subarray(66, 84)), Buffer.from(io.subarray(IO_BYTES, IO_BYTES + len)))
    }
  }

  /** Why the last {@link run} stopped: 0 nothing to hand back, 1 a node's events, 2 a datagram. */
  #stopped = 0

  /** The time of the last event {@link run} ran. */
  now = 0

  /** Counters to add to the network's. */
  stats(): { events: number; timers_fired: number; sent: number; bytes_sent: number; delivered: number; bytes_delivered: number } {
    const [events, timers_fired, sent, bytes_sent, delivered, bytes_delivered] = this.#lane.stats() as [number, number, number, number, number, number]
    return { events, timers_fired, sent, bytes_sent, delivered, bytes_delivered }
  }

  /** Events waiting in the lane. */
  get pending(): number {
    return this.#lane.pending
  }

  /** Drops every event, link and node. */
  clear(): void {
    this.#lane.clear()
    this.#clients.length = 0
    this.headTime = Infinity
  }

  #begin(): void {
    this.#f[0] = this.#queue.seq
  }

  #end(): void {
    const f = this.#f
    this.#queue.seq = f[0]!
    this.headTime = f[1]!
    this.headSeq = f[2]!
  }
}

/** An attached node, as its owner sees it. */
export class LaneHandle {
  #attached = true

  constructor(
    readonly lane: NativeLane,
    readonly index: number,
    readonly onDetach: (c: LaneCounters) => void,
  ) {}

  /** Still attached. */
  get attached(): boolean {
    return this.#attached
  }

  /** Arms the node's timer at `at` (ms on the network's clock; below 0: none) unless it is armed earlier. */
  arm(at: number, now: number): void {
    if (this.#attached) this.lane._arm(this.index, at, now)
  }

  /**
   * Sends what the node queued (after a call made on it directly) and arms its timer, as the lane
   * does after a datagram; true when the node has events.
   */
  kick(now: number): boolean {
    return this.#attached && this.lane._kick(this.index, now)
  }

  /** Moves a timer armed on the network's queue (time, sequence number) for deadline `at` to the lane. */
  adopt(at: number, time: number, seq: number): void {
    if (this.#attached) this.lane._adopt(this.index, at, time, seq)
  }

  /** The node's counters so far. */
  counters(): LaneCounters {
    return this.#attached ? this.lane._counters(this.index) : { sent: 0, received: 0, dropped_self: 0 }
  }

  /** Detaches the node (its timer is dropped); returns its counters (also given to `onDetach`). */
  detach(): LaneCounters {
    if (!this.#attached) return { sent: 0, received: 0, dropped_self: 0 }
    this.#attached = false
    const c = this.lane._detach(this.index)
    this.onDetach(c)
    return c
  }
}

function counters(c: number[]): LaneCounters {
  return { sent: c[0] ?? 0, received: c[1] ?? 0, dropped_self: c[2] ?? 0 }
}
