/**
 * NAT mixes for {@link SimulatedNetwork.createNodes}: which fraction of the nodes is public and which
 * is behind each NAT type.
 *
 * ```ts
 * await sim.createNodes(1000, { natMix: { open: 0.4, 'full-cone': 0.1, 'port-restricted': 0.3, symmetric: 0.2 } })
 * ```
 *
 * The counts are exact (each weight's share of n, largest remainders: 0.3 of 1000 is 300 nodes), the
 * order is a seeded shuffle (deterministic from the network's seed). Each NATed node gets a NAT of its
 * own (a home router) made by `sim.createNat`, or `perNat` nodes of the same type share one.
 */
import { DeccomError, ErrorCode } from '../errors'
import { apportion } from './latency'
import type { NatType, SimNat, SimNatOptions } from './nat'
import { NAT_TYPES } from './nat'
import type { Random } from './random'

/** Weights of the public nodes (`open`) and of each NAT type; omitted: 0. */
export type NatMix = { [K in NatType | 'open']?: number } & {
  /** Nodes behind one NAT (default 1). */
  perNat?: number
  /** The NATs' mapping timeout (default: createNat's). */
  mappingTimeout?: number
}

const KINDS = ['open', ...NAT_TYPES] as const

/** The NAT of each of `n` nodes (undefined: public), creating the NATs. */
export function planNatMix(n: number, mix: NatMix, rng: Random, createNat: (o: SimNatOptions) => SimNat): Array<SimNat | undefined> {
  if (typeof mix !== 'object' || mix === null) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'natMix: { open?, full-cone?, address-restricted?, port-restricted?, symmetric?, perNat? }')
  for (const k of Object.keys(mix)) {
    if (!(KINDS as readonly string[]).includes(k) && k !== 'perNat' && k !== 'mappingTimeout') {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `natMix: unknown key ${k} (${KINDS.join(', ')}, perNat, mappingTimeout)`)
    }
  }
  const weights = KINDS.map((k) => {
    const w = mix[k] ?? 0
    if (!(w >= 0) || !Number.isFinite(w)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `natMix.${k} must be a finite number >= 0, got ${w}`)
    return w
  })
  const perNat = mix.perNat ?? 1
  if (!Number.isInteger(perNat) || perNat < 1) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `natMix.perNat must be an integer >= 1, got ${perNat}`)
  const kinds = rng.shuffle(apportion(KINDS, weights, n, 'natMix'))
  const out: Array<SimNat | undefined> = new Array(n).fill(undefined)
  const open = new Map<NatType, { nat: SimNat; users: number }>()
  kinds.forEach((k, i) => {
    if (k === 'open') return
    let cur = open.get(k)
    if (cur === undefined || cur.users >= perNat) {
      cur = { nat: createNat({ type: k, mappingTimeout: mix.mappingTimeout }), users: 0 }
      open.set(k, cur)
    }
    cur.users++
    out[i] = cur.nat
  })
  return out
}
