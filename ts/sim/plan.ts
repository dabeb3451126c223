/**
 * @internal The research options of {@link SimulatedNetwork.createNodes} (regions and latency,
 * bandwidth, NAT mix, churn) resolved for one call: what each node index gets.
 */
import type { Address } from '../address'
import { DeccomError, ErrorCode } from '../errors'
import type { NodeBandwidth } from './bandwidth'
import { accessLinks } from './bandwidth'
import type { Churn } from './churn'
import type { LatencyOption } from './latency'
import { LatencyModel } from './latency'
import type { NatMix } from './nat-mix'
import { planNatMix } from './nat-mix'
import type { SimNat, SimNatOptions } from './nat'
import type { NodeProfile } from './profiles'
import { Random, seedToU32 } from './random'

/** The research options of createNodes (documented on `SimNodesOptions`). */
export interface ResearchNodesOptions {
  region?: (i: number) => string
  latency?: LatencyOption
  bandwidth?: NodeBandwidth | ((i: number) => NodeBandwidth | undefined)
  natMix?: NatMix
  churn?: Churn
  behind?: (i: number) => SimNat | undefined
}

export interface NodePlan {
  behind(i: number): SimNat | undefined
  /** The profile of node `i` at `address`, or undefined if it has none. */
  profile(i: number, address: Address): NodeProfile | undefined
  readonly churn: Churn | undefined
}

const calls = new WeakMap<object, number>()

export function planNodes(
  n: number,
  opts: ResearchNodesOptions,
  sim: { readonly seed: number; createNat(o: SimNatOptions): SimNat },
): NodePlan {
  const k = calls.get(sim) ?? 0
  calls.set(sim, k + 1)
  const research = opts.region !== undefined || opts.latency !== undefined || opts.bandwidth !== undefined || opts.natMix !== undefined
  if (!research) return { behind: (i) => opts.behind?.(i), profile: () => undefined, churn: opts.churn }
  const rng = new Random(seedToU32(`${sim.seed} nodes ${k}`))
  const model = opts.latency !== undefined ? new LatencyModel(opts.latency) : undefined
  let regions: Array<string | undefined> | undefined
  if (opts.region !== undefined) {
    regions = []
    for (let i = 0; i < n; i++) {
      const r = opts.region(i)
      if (typeof r !== 'string') throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `region(${i}) must return a string, got ${String(r)}`)
      model?.checkRegion(r, `region(${i})`)
      regions.push(r)
    }
  } else {
    regions = model?.assign(n, rng.fork())
  }
  let nats: Array<SimNat | undefined> | undefined
  if (opts.natMix !== undefined) {
    if (opts.behind !== undefined) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'createNodes: give natMix or behind, not both')
    nats = planNatMix(n, opts.natMix, rng.fork(), (o) => sim.createNat(o))
  }
  const bw = opts.bandwidth
  if (bw !== undefined && typeof bw !== 'function') accessLinks(bw, 'bandwidth') // validate now
  return {
    behind: (i) => (nats !== undefined ? nats[i] : opts.behind?.(i)),
    profile: (i, address) => {
      const links = accessLinks(typeof bw === 'function' ? bw(i) : bw, typeof bw === 'function' ? `bandwidth(${i})` : 'bandwidth')
      const region = regions?.[i]
      if (model === undefined && region === undefined && links === undefined) return undefined
      return { info: { address, index: i, region }, latency: model, up: links?.up, down: links?.down }
    },
    churn: opts.churn,
  }
}
