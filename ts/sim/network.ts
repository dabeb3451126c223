/**
 * SimulatedNetwork — an in-process datagram network in virtual time.
 *
 * ```ts
 * const sim = new SimulatedNetwork({ seed: 42, defaultLink: { latency: 5, loss: 0.1 } })
 * const nodes = await sim.createNodes(100, { stack: (i) => [new MyLayer()] })
 * nodes[0].send(nodes[1].address, Buffer.from('hi'))
 * await sim.runFor(10_000)                                  // 10 s of virtual time
 * await sim.runUntil(() => done, { timeout: 60_000 })        // or until a condition holds
 * sim.trace.hash; sim.stats(); await sim.close()
 * ```
 *
 * Every node is a real deccom {@link Node} with a {@link SimTransport} at the bottom of its stack and
 * the network's virtual {@link SimulatedNetwork.clock} as `ctx.clock`, so the same layers that run
 * over UDP run here. No datagram leaves the process; addresses are 10.x.y.z:4000 by default.
 *
 * ## Links
 * A datagram from A to B takes the link A→B, whose {@link LinkSpec} is `defaultLink` overridden by
 * `link(A, B)` (asked for every datagram, so it can change over time, e.g. for partitions). Each
 * ordered pair is one instance of deccom's impairment model (`./impair.ts`; deccom-core `impair`
 * documents the procedure), seeded with `spec.seed` if given, else with the FNV-1a hash of
 * `"<network seed> <A>><B>"`: serialization at `bandwidth` behind a backlog bounded by
 * `maxQueueBytes` (`dropped_queue`), then loss (`lost`), corruption of one non-tag bit
 * (`corrupted`), `latency` + [0, `jitter`) ms, an extra (0, `reorderDelay`] ms with probability
 * `reorder` (`reordered`) and a second copy with its own jitter with probability `duplicate`
 * (`duplicated`). A datagram to an address with no started transport is dropped on arrival
 * (`dropped_no_route`).
 *
 * ## NATs
 * {@link createNat} makes an RFC 4787 NAT (`./nat.ts`); a node created with `behind: nat` has a
 * private address: its datagrams to the outside leave from the NAT's public address and a mapped
 * port, and datagrams arriving at the NAT's public side are delivered only if the mapping and the
 * filtering allow (else `dropped_nat`, and counted in the NAT's stats).
 *
 * ## Event loop and microtasks (the rule)
 * Virtual time only moves inside {@link runFor}/{@link runUntil}. They pop events (timers of
 * {@link clock}, datagram deliveries) from a heap ordered by (time, sequence number), set
 * {@link now} to the event's time and run it. **Each event runs in its own `setImmediate`
 * callback, and Node empties the `process.nextTick` queue and the microtask queue before every
 * immediate callback: so after an event, all the promise continuations it caused run — however
 * many `await`s deep — at that event's virtual time, before the next event is taken and time
 * advances.** This is the rule Node applies between two real timer callbacks. Events due at the same
 * virtual time run in the order they were scheduled. The immediates are queued 256 at a time, so the
 * real event loop (I/O, real timers) gets a turn every 256 events. `runUntil`'s condition is checked
 * at the start of every step, i.e. with microtasks settled. Both calls are bounded: by their virtual
 * deadline and by a maximum number of events.
 *
 * ## Determinism
 * The links' randomness comes from their impairment instances (seeded from `seed` and the link);
 * the rest (default identities, ping ids, NAT ports, {@link random}, and every layer's
 * `ctx.random`: each node gets a stream forked from the seed, each of its layers a fork of that)
 * from xoshiro128** streams derived from `seed`. A program that takes its time from the virtual clock
 * and its randomness from the simulator, run with the same seed, processes the same events in the
 * same order: {@link trace} (a rolling hash of every event, and a bounded log of datagram events)
 * is identical. Real I/O or `Math.random` in the program breaks this, of course.
 */
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import { Identity } from '../identity'
import { Node } from '../node'
import type { NodeOptions } from '../node'
import type { Protocol } from '../protocol'
import { SimNat } from './nat'
import type { SimNatOptions } from './nat'
import { IMPAIR_COPIES, IMPAIR_CORRUPTED, IMPAIR_QUEUE_FULL, IMPAIR_REORDERED, verdict } from './impair'
import { LinkTable } from './links'
import { type NativeLane, laneFor } from './lane'
import type { LinkParams } from './impair'
import type { Seed } from './random'
import { Random, hashString, seedToU32 } from './random'
import { SimTransport } from './transport'
import type { SimMedium } from './transport'
import { createPlanned, planNodes } from './plan'
import type { ResearchNodesOptions } from './plan'
import { NodeProfiles } from './profiles'
import { TraceExporter } from './trace-export'
import { DeterminismTrace, KINDS, Kind, type SimTrace } from './trace'
import { EventQueue } from './event-queue'
import type { SimEvent } from './event-queue'
import type { TraceExport, TraceSink } from './trace-export'

/** Error codes of the simulator (not in ErrorCode yet). */
export const SimErrorCode = Object.freeze({
  /** runUntil's virtual timeout passed (or no event was left) before the condition held. */
  SIM_TIMEOUT: 'ERR_DECCOM_SIM_TIMEOUT',
  /** runFor/runUntil processed its maximum number of events. */
  SIM_EVENT_LIMIT: 'ERR_DECCOM_SIM_EVENT_LIMIT',
  /** The trace export's stream could not keep up (see `exportTrace`). */
  SIM_TRACE_BACKLOG: 'ERR_DECCOM_SIM_TRACE_BACKLOG',
} as const)

/** Properties of a one-way link (the model's parameters, see {@link LinkParams}) and its seed. */
export interface LinkSpec extends LinkParams {
  /**
   * Seed of this link's impairment instance (default: derived from the network's seed and the
   * link). Read when the link is first used; e.g. the seed of a FaultyTransport to replay its run.
   */
  seed?: Seed
}

/** Options of {@link SimulatedNetwork}. */
export interface SimulatedNetworkOptions {
  /** Seed of every random choice of the simulation (default 0). */
  seed?: Seed
  /** Link properties for every pair (defaults: see {@link LinkSpec}). */
  defaultLink?: Partial<LinkSpec>
  /** Per-pair overrides, asked for every datagram; return undefined for the default link. */
  link?: (from: Address, to: Address) => Partial<LinkSpec> | undefined
  /** Datagram records kept in `trace.log` (a rolling window; default 10 000, 0 = none). */
  traceLimit?: number
  /**
   * Keep the determinism trace (default true). With false nothing is hashed or recorded (the
   * trace's hash and log stay empty): for large runs where the trace is not compared.
   */
  trace?: boolean
  /** Default bound on the events one runFor/runUntil call processes (default 10 000 000). */
  maxEvents?: number
  /**
   * Deliver the datagrams between natively run protocol nodes in native code (default false):
   * a Kademlia layer right on its SimTransport attaches its node to the network's lane
   * (`./lane.ts`), and their datagrams to one another and their timers then run with no
   * JavaScript per datagram. The events and their order are the same as without it. Requires
   * `trace: false`, no `link` function and a `defaultLink` that only delays (latency, jitter;
   * no seed); NATs, the trace export and createNodes' research options are refused.
   */
  nativeDelivery?: boolean
  /**
   * Threads of the native lane (default 1; needs `nativeDelivery` and a `defaultLink` latency
   * above 0). With more than one, the natively run nodes are split across threads and virtual
   * time advances in windows no longer than the link latency; what the nodes hand to JavaScript
   * (a lookup ended, a peer entered...) is handled at the end of its window, up to one latency
   * later than it happened, and the lane orders events its own way. A run is then deterministic
   * from the seed and the same for any number of threads above 1, but not the run of one thread.
   * See docs/simulation.md.
   */
  threads?: number
}

/** Options of {@link SimulatedNetwork.runUntil} (and `maxEvents` of {@link SimulatedNetwork.runFor}). */
export interface RunOptions {
  /** Virtual ms after which runUntil rejects with ERR_DECCOM_SIM_TIMEOUT (default 60 000). */
  timeout?: number
  /** Most events to process in this call before rejecting with ERR_DECCOM_SIM_EVENT_LIMIT. */
  maxEvents?: number
}

/** Options of {@link SimulatedNetwork.createNode}. */
export interface SimNodeOptions extends Omit<NodeOptions, 'stack' | 'clock'> {
  /** Layers between the application and the SimTransport, top first (fresh instances). */
  stack?: Protocol[]
  /** The node's address (default: the next free 10.x.y.z:4000). */
  address?: AddressLike
  /** Put the node's (private) address behind this NAT (see {@link SimulatedNetwork.createNat}). */
  behind?: SimNat
}

/**
 * Options of {@link SimulatedNetwork.createNodes}. The research options — `region`, `latency`
 * (`./latency.ts`), `bandwidth` (`./bandwidth.ts`), `natMix` (`./nat-mix.ts`), `churn`
 * (`./churn.ts`) — are described in their files and in docs/simulation.md.
 */
export interface SimNodesOptions extends ResearchNodesOptions {
  /** Fresh layers for node `i` (0-based within this call), top first; the SimTransport goes below. */
  stack?: (i: number) => Protocol[]
  /** The identity of node `i` (default: an Ed25519 key from the simulation's seed). */
  identity?: (i: number) => Identity
  /** The address of node `i` (default: the next free 10.x.y.z:4000). */
  address?: (i: number) => AddressLike
  /** The NAT node `i` is behind, or undefined for a public node. */
  behind?: (i: number) => SimNat | undefined
}

const DEFAULT_LINK: LinkSpec = Object.freeze({
  latency: 5,
  jitter: 0,
  bandwidth: Infinity,
  loss: 0,
  duplicate: 0,
  reorder: 0,
  corrupt: 0,
  maxQueueBytes: 16 * 1024 * 1024,
})
const DEFAULT_PORT = 4000

/** Events processed per turn of the real event loop (each in its own immediate). */
const STEPS_PER_TURN = 256

/** A simulated network in virtual time: nodes on simulated links (latency, loss, bandwidth) and NATs, deterministic from its seed. */
export class SimulatedNetwork implements SimMedium {
  /** A Clock whose time is {@link now} and whose timers are events of this simulation. */
  readonly clock: Clock
  /** A seeded random stream for the program under test (separate from the network's own). */
  readonly random: Random
  readonly #seed: number
  readonly #idRng: Random
  readonly #miscRng: Random
  readonly #defaultLink: LinkSpec
  readonly #link: SimulatedNetworkOptions['link']
  readonly #maxEvents: number
  readonly #traceOn: boolean
  /** Forked once per node: the node's `random`, from which its layers' `ctx.random` are forked. */
  readonly #layerRng: Random

  #now = 0
  readonly #events = new EventQueue()
  #running = false
  #closed = false
  #closing: Promise<void> | null = null
  #nextHost = 1

  /**
   * By `Address.key`: Address objects are interned, but the intern cache starts over past 65,536
   * addresses, after which the same address may come as another object.
   */
  readonly #transports = new Map<string, SimTransport>()
  /** Private address → the NAT it is behind. */
  /** By `Address.key` (see #transports). */
  readonly #behind = new Map<string, SimNat>()
  /** Public host → NAT. */
  readonly #nats = new Map<string, SimNat>()
  readonly #natRng: Random
  #nextNatHost = 1
  readonly #nodes: Node[] = []
  /** Per-node region, latency model and access links (createNodes' research options). */
  readonly #profiles = new NodeProfiles<LinkSpec>((a) => this.#nats.get(a.host)?.internalFor(a.port))
  /** The JSONL export (`./trace-export.ts`). */
  readonly #tracer = new TraceExporter(
    () => this.#now,
    SimErrorCode.SIM_TRACE_BACKLOG,
    (e) => this.#schedule(0, () => {
      throw e // a failed sink stops the run in progress
    }),
  )
  /** The links' impairment instances (by ordered pair) and the specs they were last given. */
  readonly #links = new LinkTable<LinkSpec>((from, to, spec) =>
    spec.seed !== undefined ? seedToU32(spec.seed) : hashString(to, hashString('>', hashString(from, this.#linkSeedBase))),
  )
  /** The hash of `"<seed> "`, the start of every default link seed's text. */
  readonly #linkSeedBase: number
  /** The native delivery lane (`nativeDelivery`), which then holds the links. */
  readonly #lane: NativeLane | null

  /** The determinism trace (`./trace.ts`). */
  readonly #trace: DeterminismTrace

  readonly #stats = {
    events: 0,
    timers_fired: 0,
    sent: 0,
    delivered: 0,
    lost: 0,
    duplicated: 0,
    reordered: 0,
    corrupted: 0,
    dropped_queue: 0,
    dropped_no_route: 0,
    dropped_nat: 0,
    dropped_uplink: 0,
    dropped_downlink: 0,
    bytes_sent: 0,
    bytes_delivered: 0,
  }

  constructor(opts: SimulatedNetworkOptions = {}) {
    const root = new Random(opts.seed ?? 0)
    this.#seed = root.seed
    this.#linkSeedBase = hashString(`${this.#seed} `)
    this.#idRng = root.fork()
    this.random = root.fork()
    this.#miscRng = root.fork()
    this.#natRng = root.fork()
    this.#layerRng = root.fork()
    this.#defaultLink = checkLink({ ...DEFAULT_LINK, ...(opts.defaultLink ?? {}) }, 'defaultLink')
    this.#link = opts.link
    this.#maxEvents = opts.maxEvents ?? 10_000_000
    this.#traceOn = opts.trace ?? true
    this.#trace = new DeterminismTrace(this.#traceOn ? Math.max(0, Math.floor(opts.traceLimit ?? 10_000)) : 0)
    this.#lane = laneFor(opts, this.#defaultLink, this.#traceOn, this.#events, this.#linkSeedBase)
    const sim = this
    this.clock = Object.freeze({
      now: (): number => sim.#now,
      setTimeout: (fn: () => void, ms: number): TimerHandle => sim.#schedule(ms, () => {
        sim.#stats.timers_fired++
        fn()
      }),
      clearTimeout: (h: TimerHandle | undefined): void => sim.#events.cancel(h as SimEvent | undefined),
    })
  }

  /** The seed, as an unsigned 32-bit integer. */
  get seed(): number {
    return this.#seed
  }

  /** Current virtual time in ms (starts at 0). */
  get now(): number {
    return this.#now
  }

  /** The nodes created with {@link createNode}/{@link createNodes}, in creation order (minus those a churn made leave). */
  get nodes(): readonly Node[] {
    return this.#nodes
  }

  /** A snapshot of the determinism trace. */
  get trace(): SimTrace {
    return this.#trace.snapshot()
  }

  /** Network counters: events, datagrams sent/delivered/lost/duplicated/reordered/dropped, bytes... */
  stats(): Record<string, number> {
    const out: Record<string, number> = { ...this.#stats }
    const lane = this.#lane
    if (lane !== null) {
      const l = lane.stats()
      for (const [k, v] of Object.entries(l)) out[k] = out[k]! + v
      // Of the events, those the lane ran natively.
      out.native_events = l.events
    }
    return {
      ...out,
      now: this.#now,
      pending_events: this.#events.pending + (lane?.pending ?? 0),
      transports: this.#transports.size,
      nodes: this.#nodes.length,
    }
  }

  /**
   * A transport on this network (not yet started: put it at the bottom of a stack). The address
   * defaults to the next free 10.x.y.z:4000.
   */
  createTransport(opts: { address?: AddressLike; behind?: SimNat } = {}): SimTransport {
    const address = opts.address !== undefined ? toAddress(opts.address) : this.#allocate()
    if (opts.behind !== undefined) {
      if (this.#nats.get(opts.behind.publicAddress) !== opts.behind) {
        throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'behind: this NAT was not created by this simulated network')
      }
      if (this.#nats.has(address.host)) {
        throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `behind: ${address.key} is a NAT's public address`)
      }
      const prev = this.#behind.get(address.key)
      if (prev !== undefined && prev !== opts.behind) {
        throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `behind: ${address.key} is already behind the NAT ${prev.publicAddress}`)
      }
      this.#behind.set(address.key, opts.behind)
    }
    return new SimTransport(this, { address })
  }

  /**
   * A NAT (RFC 4787 model, see `ts/sim/nat.ts`): pass it as `behind` to createNode/createNodes.
   * Its public IP defaults to the next free 198.18.x.y; its ports come from a seeded stream.
   */
  createNat(opts: SimNatOptions): SimNat {
    this.#checkOpen('createNat')
    this.#refuseWithLane('NATs')
    let host = opts.publicAddress
    if (host === undefined) {
      do {
        const k = this.#nextNatHost++
        if (k >= 1 << 17) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'The simulated 198.18.0.0/15 NAT range is full')
        host = `198.${18 + (k >>> 16)}.${(k >>> 8) & 255}.${k & 255}`
      } while (this.#nats.has(host))
    } else {
      host = toAddress(host, 1).host
      if (this.#nats.has(host)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `createNat: ${host} is already a NAT's public address`)
    }
    const nat = new SimNat({ ...opts, publicAddress: host }, () => this.#now, this.#natRng.fork())
    this.#nats.set(host, nat)
    return nat
  }

  /** The NATs created with {@link createNat}, in creation order. */
  get nats(): readonly SimNat[] {
    return [...this.#nats.values()]
  }

  /** One Node on this network: `Node.create` with a SimTransport at the bottom and the virtual clock. */
  async createNode(opts: SimNodeOptions = {}): Promise<Node> {
    this.#checkOpen('createNode')
    const { stack = [], address, identity, behind, ...rest } = opts
    const transport = this.createTransport({ address, behind })
    const node = await Node.create({
      ...rest,
      identity: identity ?? this.#identity(),
      stack: [...stack, transport],
      clock: this.clock,
      random: rest.random ?? this.#layerRng.fork(),
    })
    if (this.#closed) {
      await node.close()
      throw closedError('createNode')
    }
    this.#nodes.push(node)
    return node
  }

  /**
   * `n` Nodes on this network, created one after the other (deterministically). Layer `start`s must
   * not wait for virtual time: it does not advance until runFor/runUntil.
   */
  async createNodes(n: number, opts: SimNodesOptions = {}): Promise<Node[]> {
    if (!Number.isInteger(n) || n < 0) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `createNodes(n) takes a count >= 0, got ${n}`)
    if (opts.region !== undefined || opts.latency !== undefined || opts.bandwidth !== undefined || opts.natMix !== undefined) {
      this.#refuseWithLane("createNodes' region, latency, bandwidth and natMix options")
    }
    const plan = planNodes(n, opts, this)
    const out: Node[] = []
    for (let i = 0; i < n; i++) out.push(await createPlanned(this, opts, plan, i, (p) => this.#profiles.set(p)))
    return out
  }

  /** The region of the node at `address` (createNodes' `region` or `latency` weights), or undefined. */
  regionOf(address: AddressLike): string | undefined {
    return this.#profiles.get(toAddress(address))?.info.region
  }

  /** @internal A node leaves (churn): no longer in {@link nodes}, its profile dropped. */
  _forget(node: Node, address: Address): void {
    const k = this.#nodes.indexOf(node)
    if (k >= 0) this.#nodes.splice(k, 1)
    this.#profiles.delete(address)
  }

  /**
   * Streams every datagram event, and the events of {@link traceEvent}, as JSON lines to `sink`
   * (`./trace-export.ts`): `{ path }`, `{ fd }`, `{ write(chunk) }` or `{ stream }`. One export at
   * a time; `close()` it (or the network) to flush.
   */
  exportTrace(sink: TraceSink): TraceExport {
    this.#checkOpen('export the trace')
    this.#refuseWithLane('the trace export')
    return this.#tracer.start(sink)
  }

  /** Writes a user-level event (e.g. `lookup_end` with `hops`) to the trace export; nothing when off. */
  traceEvent(type: string, fields?: Record<string, unknown>): void {
    this.#tracer.event(type, fields)
  }

  /** Advances virtual time by `ms`, running every event due until then. */
  async runFor(ms: number, opts: Pick<RunOptions, 'maxEvents'> = {}): Promise<void> {
    if (!(ms >= 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `runFor(ms) takes ms >= 0, got ${ms}`)
    await this.#run(this.#now + ms, undefined, opts.maxEvents ?? this.#maxEvents)
  }

  /**
   * Runs events until `cond()` is true (checked before the first event and after each one, once
   * microtasks have settled). Rejects with a DeccomError ERR_DECCOM_SIM_TIMEOUT when `timeout`
   * virtual ms pass first — virtual time is then at the deadline — or when no event is left and the
   * deadline is infinite; ERR_DECCOM_SIM_EVENT_LIMIT after `maxEvents` events.
   */
  async runUntil(cond: () => boolean, opts: RunOptions = {}): Promise<void> {
    const timeout = opts.timeout ?? 60_000
    if (!(timeout >= 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `runUntil: timeout must be >= 0, got ${timeout}`)
    const deadline = this.#now + timeout
    const ok = await this.#run(deadline, cond, opts.maxEvents ?? this.#maxEvents)
    if (!ok) {
      throw new DeccomError(
        SimErrorCode.SIM_TIMEOUT,
        Number.isFinite(deadline)
          ? `The condition did not hold within ${timeout} virtual ms (now ${this.#now} ms)`
          : `The condition does not hold and no event is left to run (now ${this.#now} ms)`,
        { details: { timeout, now: this.#now } },
      )
    }
  }

  /** Closes every node (and so every transport and layer timer), then drops all pending events. Idempotent. */
  close(): Promise<void> {
    return (this.#closing ??= this.#close())
  }

  async #close(): Promise<void> {
    this.#closed = true
    const results = await Promise.allSettled(this.#nodes.map((n) => n.close()))
    this.#tracer.active?.close()
    this.#events.clear()
    this.#links.clear()
    this.#lane?.clear()
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
  }

  #run(deadline: number, cond: (() => boolean) | undefined, maxEvents: number): Promise<boolean> {
    this.#checkOpen('run')
    if (this.#running) {
      throw new DeccomError(ErrorCode.STACK_STATE, 'The simulation is already running (await the current runFor/runUntil first)')
    }
    this.#running = true
    return new Promise<boolean>((resolve, reject) => {
      let count = 0
      let done = false
      let batch: NodeJS.Immediate[] = []
      const finish = (err: unknown, ok: boolean): void => {
        done = true
        this.#running = false
        for (const h of batch) clearImmediate(h)
        batch = []
        if (err !== undefined) reject(err)
        else resolve(ok)
      }
      // One event per immediate. Node drains process.nextTick and the microtask queue before each
      // immediate callback, so every step starts with both queues empty.
      const step = (): void => {
        if (done) return
        try {
          if (cond?.()) return finish(undefined, true)
          if (this.#closed) {
            if (cond !== undefined) throw closedError('run until a condition')
            return finish(undefined, true)
          }
          const e = this.#events.peek()
          const lane = this.#lane
          if (lane !== null && lane.headTime <= deadline && (e === undefined || lane.headTime < e.time || (lane.headTime === e.time && lane.headSeq < e.seq))) {
            // The lane's events come first: it runs those before the queue's head (one at a time
            // under runUntil, whose condition is checked between events).
            if (count >= maxEvents) throw eventLimit(maxEvents, this.#now)
            const ran = lane.run(e?.time ?? Infinity, e?.seq ?? Infinity, deadline, cond === undefined ? maxEvents - count : 1)
            if (ran > 0) this.#now = lane.now
            count += ran
            lane.handBack(this.#handBack)
            return
          }
          if (e === undefined || e.time > deadline) {
            if (Number.isFinite(deadline)) this.#now = Math.max(this.#now, deadline)
            return finish(undefined, cond === undefined ? true : cond())
          }
          if (count++ >= maxEvents) throw eventLimit(maxEvents, this.#now)
          this.#events.pop()
          this.#now = e.time
          const fn = e.fn
          e.fn = null
          e.state = 1
          this.#stats.events++
          if (this.#traceOn) this.#trace.mix(e.seq)
          // A throw rejects this run; the simulation can be resumed by another run.
          if (fn !== null) fn()
          else this.#deliver(e.from!, e.to!, e.bytes!)
        } catch (err) {
          finish(err ?? new Error(String(err)), false)
        }
      }
      // Immediates queued together run in one check phase of the event loop, so the loop's other
      // phases (I/O polling, real timers) get a turn once per batch rather than once per event.
      const queueBatch = (): void => {
        if (done) return
        batch = []
        for (let i = 1; i < STEPS_PER_TURN; i++) batch.push(setImmediate(step))
        batch.push(
          setImmediate(() => {
            step()
            queueBatch()
          }),
        )
      }
      queueBatch()
    })
  }

  // ---- events -------------------------------------------------------------------------------

  #schedule(ms: number, fn: () => void): SimEvent {
    const time = this.#due(ms)
    return this.#closed ? this.#events.dead(time) : this.#events.schedule(time, fn)
  }

  /** The time of an event `ms` from now (now for ms <= 0 or NaN). */
  #due(ms: number): number {
    return this.#now + (ms > 0 ? ms : 0)
  }

  // ---- datagrams (used by SimTransport) -----------------------------------------------------

  /** @internal Random 32 bits for transports (e.g. the first ping id), from the seed. */
  _randomU32(): number {
    return this.#miscRng.u32()
  }

  /** @internal The native delivery lane, if the network has one (see `nativeDelivery`). */
  _nativeLane(): NativeLane | null {
    return this.#lane
  }

  /** A datagram the lane hands back (for another address or protocol): delivered as any other. */
  readonly #handBack = (from: Address, to: Address, bytes: Buffer): void => this.#deliver(from, to, bytes)

  /** @internal A transport starts: claim its address. */
  _attach(t: SimTransport, addr: Address): void {
    this.#checkOpen('start a transport')
    if (this.#transports.has(addr.key)) {
      throw new DeccomError(ErrorCode.ADDRESS_IN_USE, `The simulated address ${addr.key} is already in use`, { details: { address: addr.key } })
    }
    this.#transports.set(addr.key, t)
  }

  /** @internal A transport stops: release its address. */
  _detach(t: SimTransport, addr: Address): void {
    if (this.#transports.get(addr.key) === t) this.#transports.delete(addr.key)
  }

  /** @internal Puts one datagram (`bytes`: tag + payload, owned by the network) on the link from → to. */
  _transmit(from: Address, to: Address, bytes: Buffer): void {
    const s = this.#stats
    const src = from
    s.sent++
    s.bytes_sent += bytes.length
    if (this.#lane !== null) {
      // No NATs, profiles, link function nor trace with the lane; it holds the links, and the
      // datagram (delivered natively to a node in the lane, else handed back).
      if (!this.#closed) this.#lane.transmit(from, to, bytes, this.#now)
      return
    }
    if (this.#behind.size !== 0) {
      // Leaving a private address for anywhere but its own LAN: through its NAT.
      const nat = this.#behind.get(from.key)
      if (nat !== undefined && this.#behind.get(to.key) !== nat) {
        const ext = nat._outbound(from, to)
        if (ext === undefined) {
          s.dropped_nat++
          this.#record(Kind.NatDrop, from, to, bytes)
          return
        }
        from = ext
      }
    }
    let spec = this.#specFor(from, to)
    let at = this.#now
    if (this.#profiles.size !== 0) {
      // Per-node latency and uplink (createNodes' research options).
      spec = this.#profiles.spec(src, to, spec)
      at = this.#profiles.uplink(src, at, bytes.length)
      if (at < 0) {
        s.dropped_uplink++
        this.#record(Kind.UplinkDrop, from, to, bytes)
        return
      }
    }
    const code = this.#links.offer(from.key, to.key, spec, this.#now, at, bytes.length)
    if (code & IMPAIR_QUEUE_FULL) {
      s.dropped_queue++
      this.#record(Kind.QueueDrop, from, to, bytes)
      return
    }
    const copies = code & IMPAIR_COPIES
    if (copies === 0) {
      s.lost++
      this.#record(Kind.Lost, from, to, bytes)
      return
    }
    const at0 = verdict[0]
    const at1 = verdict[1]
    if (code & IMPAIR_CORRUPTED) {
      // The network owns `bytes`: flip the bit in place (the model never picks the tag byte).
      const bit = verdict[2]
      bytes[bit >>> 3] ^= 1 << (bit & 7)
      s.corrupted++
    }
    if (code & IMPAIR_REORDERED) s.reordered++
    this.#record(Kind.Send, from, to, bytes)
    this.#arrive(at0, from, to, bytes)
    if (copies === 2) {
      s.duplicated++
      this.#arrive(at1, from, to, Buffer.from(bytes))
    }
  }

  /** Schedules the datagram's arrival at `at`: an event that carries it (no closure). */
  #arrive(at: number, from: Address, to: Address, bytes: Buffer): void {
    const time = this.#due(at - this.#now)
    if (this.#closed) this.#events.dead(time)
    else this.#events.datagram(time, from, to, bytes)
  }

  #deliver(from: Address, to: Address, bytes: Buffer): void {
    if (this.#nats.size !== 0) {
      const nat = this.#nats.get(to.host)
      if (nat !== undefined) {
        // Arriving at a NAT's public side: its mapping and filtering decide.
        const internal = nat._inbound(from, to.port)
        if (internal === undefined) {
          this.#stats.dropped_nat++
          this.#record(Kind.NatDrop, from, to, bytes)
          return
        }
        to = internal
      } else {
        // A private address is reachable only from its own LAN.
        const dst = this.#behind.get(to.key)
        if (dst !== undefined && this.#behind.get(from.key) !== dst) {
          this.#stats.dropped_no_route++
          this.#record(Kind.NoRoute, from, to, bytes)
          return
        }
      }
    }
    if (this.#profiles.size !== 0 && this.#transports.has(to.key)) {
      // The receiver's downlink (createNodes' bandwidth option).
      const at = this.#profiles.downlink(to, this.#now, bytes.length)
      if (at < 0) {
        this.#stats.dropped_downlink++
        this.#record(Kind.DownlinkDrop, from, to, bytes)
        return
      }
      if (at > this.#now) {
        const dst = to
        this.#schedule(at - this.#now, () => this.#handOver(from, dst, bytes))
        return
      }
    }
    this.#handOver(from, to, bytes)
  }

  #handOver(from: Address, to: Address, bytes: Buffer): void {
    const t = this.#transports.get(to.key)
    if (t === undefined) {
      this.#stats.dropped_no_route++
      this.#record(Kind.NoRoute, from, to, bytes)
      return
    }
    this.#stats.delivered++
    this.#stats.bytes_delivered += bytes.length
    this.#record(Kind.Deliver, from, to, bytes)
    t._deliver(from, bytes)
  }

  #specFor(from: Address, to: Address): LinkSpec {
    const over = this.#link?.(from, to)
    return over ? checkLink({ ...this.#defaultLink, ...over }, `link(${from.key}, ${to.key})`) : this.#defaultLink
  }

  // ---- trace --------------------------------------------------------------------------------

  #record(kind: Kind, from: Address, to: Address, bytes: Buffer): void {
    if (this.#tracer.active !== undefined) this.#tracer.active.datagram(this.#now, KINDS[kind], from, to, bytes)
    if (this.#traceOn) this.#trace.record(this.#now, kind, from, to, bytes)
  }

  // ---- helpers ------------------------------------------------------------------------------

  #allocate(): Address {
    for (;;) {
      const k = this.#nextHost++
      if (k >= 1 << 24) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'The simulated 10.0.0.0/8 network is full')
      const a = toAddress(`10.${(k >>> 16) & 255}.${(k >>> 8) & 255}.${k & 255}`, DEFAULT_PORT)
      if (!this.#transports.has(a.key)) return a
    }
  }

  #identity(): Identity {
    const seed = new Uint8Array(32)
    this.#idRng.bytes(seed)
    return Identity.fromSeed(seed)
  }

  #refuseWithLane(what: string): void {
    if (this.#lane !== null) {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `A network with nativeDelivery has no ${what}`, { details: { option: 'nativeDelivery' } })
    }
  }

  #checkOpen(op: string): void {
    if (this.#closed) throw closedError(op)
  }
}

function eventLimit(maxEvents: number, now: number): DeccomError {
  return new DeccomError(SimErrorCode.SIM_EVENT_LIMIT, `Stopped after ${maxEvents} events at virtual time ${now} ms`, {
    details: { maxEvents, now },
  })
}

function closedError(op: string): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, `Cannot ${op}: the simulated network is closed`)
}

function checkLink(l: LinkSpec, where: string): LinkSpec {
  const bad = (field: string, why: string): never => {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${where}.${field} ${why}, got ${String((l as unknown as Record<string, unknown>)[field])}`)
  }
  for (const f of ['latency', 'jitter', 'maxQueueBytes'] as const) if (!(l[f] >= 0) || !Number.isFinite(l[f])) bad(f, 'must be a finite number >= 0')
  if (!(l.bandwidth > 0)) bad('bandwidth', 'must be > 0 bytes per ms (Infinity for no limit)')
  for (const f of ['loss', 'duplicate', 'reorder', 'corrupt'] as const) if (!(l[f] >= 0 && l[f] <= 1)) bad(f, 'must be a probability 0..1')
  if (l.seed !== undefined && typeof l.seed !== 'string' && !Number.isFinite(l.seed)) bad('seed', 'must be a finite number or a string')
  if (l.reorderDelay !== undefined && !(l.reorderDelay >= 0 && Number.isFinite(l.reorderDelay))) bad('reorderDelay', 'must be a finite number >= 0')
  return l
}
