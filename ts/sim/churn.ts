/**
 * Churn for a {@link SimulatedNetwork}: nodes leave after a session time drawn from a distribution
 * and (optionally) come back after an offline time, deterministically from the network's seed.
 *
 * ```ts
 * const churn = new Churn({
 *   session: { type: 'weibull', shape: 0.5, scale: 60_000 }, // ms online
 *   offline: { type: 'exponential', mean: 30_000 },          // ms offline; omit: never come back
 *   rejoin: 'same',                                          // same identity and address, or 'new'
 *   onJoin: (node, slot) => { ... },                         // e.g. bootstrap again
 * })
 * await sim.createNodes(500, { stack, churn })
 * await sim.runFor(3_600_000)
 * churn.stats(); churn.current(7); churn.sessions()
 * ```
 *
 * Each node created with a churn option is a *slot*. Its sessions and offline times come from a
 * random stream of its own (seeded from the churn's seed, default derived from the network's seed,
 * and the slot number), so they do not depend on what other nodes do. Leaving is `node.close()`
 * (the node is also removed from `sim.nodes`); coming back is a new Node made like the first one:
 * fresh layers from the same `stack(i)`, behind the same NAT, with the same region and bandwidth,
 * and either the same identity and address (`'same'`) or a new identity and address (`'new'`).
 */
import type { Address } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import type { Node } from '../node'
import type { Seed } from './random'
import { Random, seedToU32 } from './random'

/** Exponential durations: memoryless, P(X > x) = exp(-x / mean). */
export interface ExponentialDistribution {
  /** Selects this distribution. */
  type: 'exponential'
  /** The mean duration, in virtual ms (a finite number > 0). */
  mean: number
}

/**
 * Weibull durations: P(X > x) = exp(-(x / scale)^shape). A shape below 1 is heavy-tailed (many short
 * sessions, a few very long ones); a shape of 1 is the exponential distribution with mean `scale`.
 */
export interface WeibullDistribution {
  /** Selects this distribution. */
  type: 'weibull'
  /** The shape k (dimensionless, a finite number > 0). */
  shape: number
  /** The scale λ, in virtual ms (a finite number > 0): about 63 % of the durations are below it. */
  scale: number
}

/**
 * Pareto type I durations: P(X > x) = (scale / x)^shape for x ≥ scale. The mean, shape · scale /
 * (shape - 1), is finite only for a shape above 1.
 */
export interface ParetoDistribution {
  /** Selects this distribution. */
  type: 'pareto'
  /** The shape α, the tail index (dimensionless, a finite number > 0): the smaller, the heavier the tail. */
  shape: number
  /** The scale, in virtual ms (a finite number > 0): the shortest possible duration. */
  scale: number
}

/** A distribution of durations in virtual ms (checked when the {@link Churn} is made). */
export type SessionDistribution = ExponentialDistribution | WeibullDistribution | ParetoDistribution

/** Options of {@link Churn}. */
export interface ChurnOptions {
  /** How long a node stays online. */
  session: SessionDistribution
  /** How long a node that left stays offline before it comes back; omitted: it never comes back. */
  offline?: SessionDistribution
  /** Who comes back: `'same'` identity and address (default), or a `'new'` identity and address. */
  rejoin?: 'same' | 'new'
  /** Seed of the churn's streams (default: derived from the network's seed and the churn's order). */
  seed?: Seed
  /** Completed session lengths kept for {@link Churn.sessions} (the first ones; default 10 000). */
  maxSamples?: number
  /** Called when a node leaves (before it is closed). */
  onLeave?: (node: Node, slot: number) => void
  /** Called when a node comes back (not for the nodes createNodes returns). */
  onJoin?: (node: Node, slot: number) => void
}

/** @internal What a Churn needs of the network. */
export interface ChurnHost {
  readonly clock: Clock
  readonly seed: number
  /** Removes a leaving node from the network's lists. */
  _forget(node: Node, address: Address): void
  /** A user-level trace event (no-op when the export is off). */
  traceEvent(type: string, fields?: Record<string, unknown>): void
}

interface Slot {
  node: Node | undefined
  /** The node's address (a closed node no longer answers `address`). */
  address: Address
  since: number
  rng: Random
  timer: TimerHandle | undefined
  closing: Promise<void> | undefined
  respawn: (same: boolean) => Promise<Node>
}

const hostSeq = new WeakMap<ChurnHost, number>()

/** The churn process of a set of nodes. Pass it as `churn` to `sim.createNodes`; one network only. */
export class Churn {
  readonly #opts: ChurnOptions
  readonly #slots: Slot[] = []
  #host: ChurnHost | undefined
  #seed = 0
  #stopped = false
  #sum = 0
  #count = 0
  readonly #samples: number[] = []
  readonly #maxSamples: number
  readonly #stats = { leaves: 0, joins: 0, join_errors: 0, close_errors: 0 }
  /** The last error of a rejoin or a close (they run in virtual-time events: nothing else sees them). */
  lastError: unknown

  constructor(opts: ChurnOptions) {
    checkDistribution(opts?.session, 'churn.session')
    if (opts.offline !== undefined) checkDistribution(opts.offline, 'churn.offline')
    if (opts.rejoin !== undefined && opts.rejoin !== 'same' && opts.rejoin !== 'new') {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `churn.rejoin must be 'same' or 'new', got ${String(opts.rejoin)}`)
    }
    this.#maxSamples = Math.max(0, Math.floor(opts.maxSamples ?? 10_000))
    this.#opts = opts
  }

  /** Counters: leaves, joins (comebacks), join_errors, close_errors, online, slots, sessions_completed. */
  stats(): Record<string, number> {
    return { ...this.#stats, online: this.online, slots: this.#slots.length, sessions_completed: this.#count }
  }

  /** Nodes online now. */
  get online(): number {
    let n = 0
    for (const s of this.#slots) if (s.node !== undefined) n++
    return n
  }

  /** The node online in `slot` now (slots are numbered in creation order), or undefined. */
  current(slot: number): Node | undefined {
    return this.#slots[slot]?.node
  }

  /** Mean length of the completed sessions (NaN before the first). */
  meanSession(): number {
    return this.#sum / this.#count
  }

  /** Lengths of the first `maxSamples` completed sessions, in ms, in the order they ended. */
  sessions(): readonly number[] {
    return this.#samples
  }

  /** Stops the process: no more leaves or comebacks (nodes stay as they are). */
  stop(): void {
    this.#stopped = true
    for (const s of this.#slots) {
      this.#host?.clock.clearTimeout(s.timer)
      s.timer = undefined
    }
  }

  /** @internal A node of slot `#slots.length` was created; `respawn` makes its successor. */
  _attach(host: ChurnHost, node: Node, respawn: (same: boolean) => Promise<Node>): void {
    if (this.#host === undefined) {
      const k = hostSeq.get(host) ?? 0
      hostSeq.set(host, k + 1)
      this.#host = host
      this.#seed = this.#opts.seed !== undefined ? seedToU32(this.#opts.seed) : seedToU32(`${host.seed} churn ${k}`)
    } else if (this.#host !== host) {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'churn: this Churn already runs on another simulated network')
    }
    const i = this.#slots.length
    const slot: Slot = { node, address: node.address, since: host.clock.now(), rng: new Random(seedToU32(`${this.#seed} ${i}`)), timer: undefined, closing: undefined, respawn }
    this.#slots.push(slot)
    this.#arm(i, slot)
  }

  #arm(i: number, slot: Slot): void {
    if (this.#stopped) return
    slot.timer = this.#host!.clock.setTimeout(() => this.#leave(i, slot), sample(this.#opts.session, slot.rng))
  }

  #leave(i: number, slot: Slot): void {
    const host = this.#host!
    const node = slot.node!
    slot.timer = undefined
    slot.node = undefined
    const length = host.clock.now() - slot.since
    this.#sum += length
    this.#count++
    if (this.#samples.length < this.#maxSamples) this.#samples.push(length)
    this.#stats.leaves++
    host.traceEvent('churn_leave', { slot: i, node: slot.address.key, session: length })
    this.#opts.onLeave?.(node, i)
    host._forget(node, slot.address)
    slot.closing = node.close().catch((e: unknown) => {
      this.#stats.close_errors++
      this.lastError = e
    })
    if (this.#opts.offline === undefined || this.#stopped) return
    slot.timer = host.clock.setTimeout(() => void this.#rejoin(i, slot), sample(this.#opts.offline, slot.rng))
  }

  async #rejoin(i: number, slot: Slot): Promise<void> {
    slot.timer = undefined
    const host = this.#host!
    try {
      await slot.closing
      const node = await slot.respawn((this.#opts.rejoin ?? 'same') === 'same')
      slot.node = node
      slot.address = node.address
      slot.since = host.clock.now()
      this.#stats.joins++
      host.traceEvent('churn_join', { slot: i, node: node.address.key })
      this.#opts.onJoin?.(node, i)
      this.#arm(i, slot)
    } catch (e) {
      this.#stats.join_errors++
      this.lastError = e
    }
  }
}

/** A draw from `d` (ms), using one value of `rng`. */
export function sample(d: SessionDistribution, rng: Random): number {
  const u = 1 - rng.next() // (0, 1]
  switch (d.type) {
    case 'exponential':
      return -d.mean * Math.log(u)
    case 'weibull':
      return d.scale * Math.pow(-Math.log(u), 1 / d.shape)
    case 'pareto':
      return d.scale / Math.pow(u, 1 / d.shape)
  }
}

/** The mean of `d` in ms (Infinity for a Pareto with shape ≤ 1). */
export function meanOf(d: SessionDistribution): number {
  switch (d.type) {
    case 'exponential':
      return d.mean
    case 'weibull':
      return d.scale * gamma(1 + 1 / d.shape)
    case 'pareto':
      return d.shape > 1 ? (d.shape * d.scale) / (d.shape - 1) : Infinity
  }
}

/** Γ(x) for x > 0 (Lanczos approximation, g = 7, 9 terms; relative error below 1e-13). */
function gamma(x: number): number {
  if (x < 0.5) return Math.PI / (Math.sin(Math.PI * x) * gamma(1 - x))
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ]
  x -= 1
  let a = c[0]!
  const t = x + 7.5
  for (let i = 1; i < 9; i++) a += c[i]! / (x + i)
  return Math.sqrt(2 * Math.PI) * Math.pow(t, x + 0.5) * Math.exp(-t) * a
}

function checkDistribution(d: SessionDistribution | undefined, where: string): void {
  const bad = (why: string): never => {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${where}: ${why}`)
  }
  const pos = (x: unknown, f: string): void => {
    if (typeof x !== 'number' || !(x > 0) || !Number.isFinite(x)) bad(`${f} must be a finite number > 0, got ${String(x)}`)
  }
  if (typeof d !== 'object' || d === null) return bad("a distribution: { type: 'exponential' | 'weibull' | 'pareto', ... }")
  if (d.type === 'exponential') pos(d.mean, 'mean')
  else if (d.type === 'weibull' || d.type === 'pareto') {
    pos(d.shape, 'shape')
    pos(d.scale, 'scale')
  } else bad(`unknown type ${String((d as { type?: unknown }).type)}`)
}
