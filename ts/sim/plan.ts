/**
 * @internal The research options of {@link SimulatedNetwork.createNodes} (regions and latency,
 * bandwidth, NAT mix, churn) resolved for one call: what each node index gets.
 */
import type { Address, AddressLike } from '../address'
import { DeccomError, ErrorCode } from '../errors'
import type { Identity } from '../identity'
import type { Node } from '../node'
import type { Protocol } from '../protocol'
import type { NodeBandwidth } from './bandwidth'
import { accessLinks } from './bandwidth'
import type { Churn, ChurnHost } from './churn'
import type { LatencyOption } from './latency'
import { LatencyModel } from './latency'
import type { NatMix } from './nat-mix'
import { planNatMix } from './nat-mix'
import type { SimNat, SimNatOptions } from './nat'
import type { NodeProfile } from './profiles'
import { Random, seedToU32 } from './random'

/** The research options of createNodes (documented on `SimNodesOptions`). */
export interface ResearchNodesOptions {
  /** @internal */
  stack?: (i: number) => Protocol[]
  /** @internal */
  identity?: (i: number) => Identity
  /** @internal */
  address?: (i: number) => AddressLike
  /**
   * The region of node `i` (0-based within this call), e.g. for a `latency` matrix, whose rows it
   * must then name. Default: with a matrix, regions assigned by its `weights`; otherwise none.
   */
  region?: (i: number) => string
  /**
   * The one-way latency and jitter of the datagrams these nodes send, and of those they receive
   * from nodes without one: a region matrix (both nodes need a region) or a function of the two
   * nodes (see {@link LatencyOption}). Default: the link spec's.
   */
  latency?: LatencyOption
  /**
   * Each node's access link, an uplink and a downlink serializer in bytes per virtual ms (see
   * {@link NodeBandwidth}): one for every node, or one per index (undefined: no limit for that node).
   * Default: none (only the links' own `bandwidth` applies).
   */
  bandwidth?: NodeBandwidth | ((i: number) => NodeBandwidth | undefined)
  /**
   * Which share of the nodes is public and which is behind each NAT type (exact counts, seeded
   * order; see {@link NatMix}); the NATs are created for the call. Not together with `behind`.
   */
  natMix?: NatMix
  /**
   * Makes these nodes leave and come back: each becomes a slot of this {@link Churn} (a Churn runs
   * on one network only). Default: the nodes stay until closed.
   */
  churn?: Churn
  /** @internal */
  behind?: (i: number) => SimNat | undefined
}

interface Plan {
  behind(i: number): SimNat | undefined
  /** The profile of node `i` at `address`, or undefined if it has none. */
  profile(i: number, address: Address): NodeProfile | undefined
}

/** What createNodes needs of the network. */
export interface PlanHost extends ChurnHost {
  createNat(o: SimNatOptions): SimNat
  createNode(o: { stack?: Protocol[]; identity?: Identity; address?: AddressLike; behind?: SimNat }): Promise<Node>
}

/**
 * Creates node `i` of a createNodes call with its research options: its NAT, its profile (given to
 * `setProfile`) and its churn slot; a churn comeback is made the same way.
 */
export function createPlanned(
  sim: PlanHost,
  opts: ResearchNodesOptions,
  plan: Plan,
  i: number,
  setProfile: (p: NodeProfile) => void,
): Promise<Node> {
  const make = async (identity: Identity | undefined, address: AddressLike | undefined): Promise<Node> => {
    const node = await sim.createNode({ stack: opts.stack?.(i) ?? [], identity, address, behind: plan.behind(i) })
    const profile = plan.profile(i, node.address)
    if (profile !== undefined) setProfile(profile)
    return node
  }
  return make(opts.identity?.(i), opts.address?.(i)).then((node) => {
    const addr = node.address
    // A comeback: same index, and the same identity and address if asked.
    opts.churn?._attach(sim, node, (same) => make(same ? node.identity : undefined, same ? addr : undefined))
    return node
  })
}

const calls = new WeakMap<object, number>()

export function planNodes(n: number, opts: ResearchNodesOptions, sim: { readonly seed: number; createNat(o: SimNatOptions): SimNat }): Plan {
  const k = calls.get(sim) ?? 0
  calls.set(sim, k + 1)
  const research = opts.region !== undefined || opts.latency !== undefined || opts.bandwidth !== undefined || opts.natMix !== undefined
  if (!research) return { behind: (i) => opts.behind?.(i), profile: () => undefined }
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
  }
}
