/**
 * Per-pair latency for a {@link SimulatedNetwork}: from a region × region matrix, or from a function
 * of the two nodes. Given to `sim.createNodes(n, { latency, region })`.
 *
 * ```ts
 * const geo: RegionLatency = {
 *   matrix: { eu: { eu: 10, us: 45 }, us: { eu: 45, us: 15 } }, // one-way ms, row = sender's region
 *   jitter: 4,                                                  // + uniform [0, 4) ms per datagram
 *   weights: { eu: 2, us: 1 },                                  // 2/3 of the nodes in eu
 * }
 * await sim.createNodes(300, { latency: geo })
 * await sim.createNodes(10, { latency: (a, b) => (a.index === b.index ? 1 : 20) })
 * ```
 *
 * A datagram from A to B takes its `latency` and `jitter` from A's model if A was created with one,
 * else from B's, else from the link spec; `link(A, B)` still sets the link's other fields (loss,
 * bandwidth...). A matrix needs both nodes to have a region (else the link spec applies). A
 * function is asked once per ordered pair (the answer is kept): it must be a pure function of its
 * arguments for a run to be reproducible.
 */
import type { Address } from '../address'
import { DeccomError, ErrorCode } from '../errors'
import type { Random } from './random'

/** What a latency function knows about a node. */
export interface SimNodeInfo {
  /** The node's (private) address. */
  readonly address: Address
  /** Its index within the createNodes call that made it (0-based); -1 for an address that is not such a node. */
  readonly index: number
  /** Its region, if it has one. */
  readonly region: string | undefined
}

/** One-way delay of a pair: `latency` ms plus uniform [0, `jitter`) ms per datagram. */
export interface PairLatency {
  /** The fixed one-way delay, in virtual ms (a finite number >= 0). */
  latency: number
  /** The upper bound of the uniform extra delay drawn per datagram, in virtual ms (finite, >= 0; default 0). */
  jitter?: number
}

/** A latency function: the one-way delay from `from` to `to` (a number: ms, no jitter). */
export type LatencyFunction = (from: SimNodeInfo, to: SimNodeInfo) => number | PairLatency

/** Latency from regions. Every region a node is given must be a row and a column of `matrix`. */
export interface RegionLatency {
  /** One-way ms: `matrix[fromRegion][toRegion]`. */
  matrix: Readonly<Record<string, Readonly<Record<string, number>>>>
  /** Uniform extra delay [0, jitter) ms per datagram: one value, or per pair like `matrix` (default 0). */
  jitter?: number | Readonly<Record<string, Readonly<Record<string, number>>>>
  /**
   * Relative weights of the regions, used when createNodes has no `region` function: the counts are
   * the weights' shares of n (largest remainders), in a seeded random order. Default: equal weights.
   */
  weights?: Readonly<Record<string, number>>
}

/**
 * The `latency` option of `sim.createNodes`: a region × region matrix ({@link RegionLatency}) or a
 * function of the two nodes ({@link LatencyFunction}). A matrix is checked when createNodes is
 * called, a function's answers when they are given (the first datagram of the pair).
 */
export type LatencyOption = RegionLatency | LatencyFunction

/** Pair answers kept per model at most (the cache is cleared when full: answers are recomputed). */
const MAX_CACHED = 65_536

/** @internal A checked latency option, ready to answer pairs. */
export class LatencyModel {
  readonly option: LatencyOption
  readonly #regions: string[] | undefined
  /**
   * Derived link specs: per region pair (a matrix) or per address pair (a function), with the spec
   * they were derived from; stable objects, so the network does not reconfigure links per datagram.
   */
  readonly #cache = new Map<string, { base: object; spec: object | undefined }>()

  constructor(option: LatencyOption) {
    this.option = option
    if (typeof option === 'function') return
    if (typeof option !== 'object' || option === null || typeof option.matrix !== 'object' || option.matrix === null) {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'latency: a function or { matrix, jitter?, weights? }')
    }
    const regions = Object.keys(option.matrix)
    if (regions.length === 0) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'latency.matrix has no region')
    for (const a of regions) {
      for (const b of regions) {
        checkMs(option.matrix[a]?.[b], `latency.matrix.${a}.${b}`)
        if (typeof option.jitter === 'object') checkMs(option.jitter[a]?.[b], `latency.jitter.${a}.${b}`)
      }
    }
    if (option.jitter !== undefined && typeof option.jitter !== 'object') checkMs(option.jitter, 'latency.jitter')
    if (option.weights !== undefined) {
      for (const [r, w] of Object.entries(option.weights)) {
        if (!regions.includes(r)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `latency.weights.${r}: not a region of the matrix`)
        if (!(w >= 0) || !Number.isFinite(w)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `latency.weights.${r} must be a finite number >= 0, got ${w}`)
      }
    }
    this.#regions = regions
  }

  /** Checks that `region` is one of the matrix's (a function model takes any). */
  checkRegion(region: string | undefined, where: string): void {
    if (region === undefined || this.#regions === undefined) return
    if (!this.#regions.includes(region)) {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${where}: region ${JSON.stringify(region)} is not in the latency matrix (${this.#regions.join(', ')})`)
    }
  }

  /** Regions for `n` nodes from the weights (a matrix without a region function), else undefined. */
  assign(n: number, rng: Random): string[] | undefined {
    if (this.#regions === undefined) return undefined
    const o = this.option as RegionLatency
    const weights = this.#regions.map((r) => (o.weights ? (o.weights[r] ?? 0) : 1))
    return rng.shuffle(apportion(this.#regions, weights, n, 'latency.weights'))
  }

  /**
   * `base` with the latency and jitter of the pair `a` → `b` (cached), or undefined when this model
   * has no answer for it.
   */
  spec<S extends { latency: number; jitter: number }>(a: SimNodeInfo, b: SimNodeInfo, base: S): S | undefined {
    let key: string
    if (this.#regions !== undefined) {
      if (a.region === undefined || b.region === undefined) return undefined
      key = a.region + '>' + b.region
    } else {
      key = a.address.key + '>' + b.address.key
    }
    const hit = this.#cache.get(key)
    if (hit !== undefined && hit.base === base) return hit.spec as S | undefined
    const p = this.pair(a, b)
    const spec = p === undefined ? undefined : { ...base, latency: p.latency, jitter: p.jitter ?? 0 }
    if (this.#cache.size >= MAX_CACHED) this.#cache.clear()
    this.#cache.set(key, { base, spec })
    return spec
  }

  /** The delay from `a` to `b`, or undefined when this model has no answer (a region missing). */
  pair(a: SimNodeInfo, b: SimNodeInfo): PairLatency | undefined {
    const o = this.option
    if (typeof o === 'function') {
      const r = o(a, b)
      const p = typeof r === 'number' ? { latency: r, jitter: 0 } : { latency: r.latency, jitter: r.jitter ?? 0 }
      checkMs(p.latency, `latency(${a.address.key}, ${b.address.key}).latency`)
      checkMs(p.jitter, `latency(${a.address.key}, ${b.address.key}).jitter`)
      return p
    }
    if (a.region === undefined || b.region === undefined) return undefined
    const jitter = typeof o.jitter === 'object' ? o.jitter[a.region]![b.region]! : (o.jitter ?? 0)
    return { latency: o.matrix[a.region]![b.region]!, jitter }
  }
}

function checkMs(x: unknown, where: string): void {
  if (typeof x !== 'number' || !(x >= 0) || !Number.isFinite(x)) {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${where} must be a finite number of ms >= 0, got ${String(x)}`)
  }
}

/**
 * `n` items: each of `names` repeated its share of n by `weights` (largest remainder method, ties
 * to the earlier name), in the order of `names`. Exact counts: a mix of 0.25/0.75 over 100 gives
 * 25 and 75.
 */
export function apportion<T>(names: readonly T[], weights: readonly number[], n: number, where: string): T[] {
  const total = weights.reduce((s, w) => s + w, 0)
  if (!(total > 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${where}: the weights must have a positive sum`)
  const exact = weights.map((w) => (w / total) * n)
  const counts = exact.map(Math.floor)
  let left = n - counts.reduce((s, c) => s + c, 0)
  const order = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((p, q) => q[0] - p[0] || p[1] - q[1])
  for (let k = 0; left > 0; k++, left--) counts[order[k % order.length]![1]]!++
  const out: T[] = []
  names.forEach((name, i) => {
    for (let c = 0; c < counts[i]!; c++) out.push(name)
  })
  return out
}
