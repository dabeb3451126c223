/**
 * The links of a SimulatedNetwork: one impairment instance per ordered pair of addresses, seeded
 * from the network's seed and the pair (or the spec's `seed`), at most {@link MAX_LINK_STATES} at
 * once (beyond that, links with an empty backlog are forgotten; one used again starts afresh).
 *
 * A link whose spec only delays (no loss, duplication, reordering, corruption nor bandwidth limit)
 * runs the model here in JavaScript ({@link DelayLink}): the same SplitMix64 stream and the same
 * due times as the native model (`crates/deccom-core/src/impair.rs`), without a native object per
 * link or a native call per datagram. Any other spec runs the native model; a delay-only link
 * whose spec changes to another becomes native at the same point of its random stream.
 */
import { IMPAIR_COPIES, ImpairModel, type LinkParams, linkParams, sameLinkParams, verdict } from './impair'

/** Links kept at once (see the module docs). */
export const MAX_LINK_STATES = 65_536

/** What the network asks of a link: the model's `offer` (details in `verdict`) and `idle`. */
export interface LinkModel {
  /** The verdict for a datagram of `len` wire bytes offered at `now` ms (details in `verdict`). */
  offer(now: number, len: number): number
  /** True when nothing waits for serialization at `now`. */
  idle(now: number): boolean
}

interface Link<S> {
  model: LinkModel
  spec: S
  seed: number
}

/** A time in ms as the core sanitizes it: finite and > 0, else 0. */
const ms = (x: number): number => (Number.isFinite(x) && x > 0 ? x : 0)

/** True when the model would only delay datagrams on a link with these parameters. */
export function delayOnly(p: LinkParams): boolean {
  return !(p.loss > 0) && !(p.duplicate > 0) && !(p.reorder > 0) && !(p.corrupt > 0) && !(Number.isFinite(p.bandwidth) && p.bandwidth > 0)
}

// SplitMix64 in 32-bit halves: 6 and 8 times its increment (mod 2^64), and its two multipliers.
const G6 = 6n * 0x9e3779b97f4a7c15n
const G8 = 8n * 0x9e3779b97f4a7c15n
const G6_HI = Number((G6 >> 32n) & 0xffffffffn)
const G6_LO = Number(G6 & 0xffffffffn)
const G8_HI = Number((G8 >> 32n) & 0xffffffffn)
const G8_LO = Number(G8 & 0xffffffffn)
const M1_HI = 0xbf58476d
const M1_LO = 0x1ce4e5b9
const M2_HI = 0x94d049bb
const M2_LO = 0x133111eb
const TWO32 = 0x1_0000_0000

/** The unsigned product of two 32-bit values, low half (high half in `mulHi`). */
let mulHi = 0
function mul32(a: number, b: number): number {
  const a0 = a & 0xffff
  const a1 = a >>> 16
  const b0 = b & 0xffff
  const b1 = b >>> 16
  const mid = a0 * b1 + a1 * b0 // < 2^33, exact
  const lo = a0 * b0 + (mid % 0x10000) * 0x10000 // < 2^33, exact
  mulHi = (a1 * b1 + Math.floor(mid / 0x10000) + Math.floor(lo / TWO32)) >>> 0
  return lo >>> 0
}

/** Output hi/lo of SplitMix64's mixing function of the 64-bit state (hi, lo): a number in [0, 1). */
function unitOfMix(hi: number, lo: number): number {
  // z ^= z >> 30; z *= M1
  lo = (lo ^ ((lo >>> 30) | (hi << 2))) >>> 0
  hi = (hi ^ (hi >>> 30)) >>> 0
  let l = mul32(lo, M1_LO)
  let h = (mulHi + Math.imul(hi, M1_LO) + Math.imul(lo, M1_HI)) >>> 0
  // z ^= z >> 27; z *= M2
  lo = (l ^ ((l >>> 27) | (h << 5))) >>> 0
  hi = (h ^ (h >>> 27)) >>> 0
  l = mul32(lo, M2_LO)
  h = (mulHi + Math.imul(hi, M2_LO) + Math.imul(lo, M2_HI)) >>> 0
  // z ^= z >> 31; then (z >> 11) / 2^53
  lo = (l ^ ((l >>> 31) | (h << 1))) >>> 0
  hi = (h ^ (h >>> 31)) >>> 0
  return (hi * 0x200000 + (lo >>> 11)) / 9_007_199_254_740_992
}

/**
 * The model of a delay-only link, in JavaScript: each datagram takes the model's eight draws and
 * is due at `now + latency + u5 · jitter` (one copy, never lost).
 */
export class DelayLink implements LinkModel {
  /** The SplitMix64 state (hi, lo) and the datagrams offered. */
  #hi = 0
  #lo: number
  #offered = 0
  #latency: number
  #jitter: number

  constructor(seed: number, p: LinkParams) {
    this.#lo = seed >>> 0
    this.#latency = ms(p.latency)
    this.#jitter = ms(p.jitter)
  }

  /** New delay-only parameters; the random stream carries on. */
  configure(p: LinkParams): void {
    this.#latency = ms(p.latency)
    this.#jitter = ms(p.jitter)
  }

  /** Datagrams offered so far. */
  get offered(): number {
    return this.#offered
  }

  /** One copy, due after the latency and the jitter of draw r5 (details in `verdict`). */
  offer(now: number, _len: number): number {
    this.#offered++
    let at = now + this.#latency
    if (this.#jitter > 0) {
      // Draw r5: the state after six increments.
      const lo = this.#lo + G6_LO
      const hi = (this.#hi + G6_HI + (lo >= TWO32 ? 1 : 0)) >>> 0
      at += unitOfMix(hi, lo >>> 0) * this.#jitter
    }
    const lo = this.#lo + G8_LO
    this.#hi = (this.#hi + G8_HI + (lo >= TWO32 ? 1 : 0)) >>> 0
    this.#lo = lo >>> 0
    verdict[0] = at
    verdict[1] = now
    verdict[2] = -1
    return 1 & IMPAIR_COPIES
  }

  /** Always true: without a bandwidth nothing waits for serialization. */
  idle(_now: number): boolean {
    return true
  }
}

/** The links of one network, by ordered pair of address keys. */
export class LinkTable<S extends LinkParams & { seed?: unknown }> {
  readonly #links = new Map<string, Map<string, Link<S>>>()
  #size = 0
  /** Links running the native model (the others, {@link DelayLink}s, are always idle). */
  #native = 0

  /** `seedOf`: the seed of a new link from → to with `spec` (an unsigned 32-bit integer). */
  constructor(readonly seedOf: (from: string, to: string, spec: S) => number) {}

  /** Links held now. */
  get size(): number {
    return this.#size
  }

  /** The model of the link from → to, configured with `spec`. */
  model(from: string, to: string, spec: S, now: number): LinkModel {
    let row = this.#links.get(from)
    let link = row?.get(to)
    if (link === undefined) {
      if (this.#size >= MAX_LINK_STATES) {
        this.#prune(now)
        row = this.#links.get(from)
      }
      if (row === undefined) this.#links.set(from, (row = new Map()))
      const seed = this.seedOf(from, to, spec)
      link = { model: delayOnly(spec) ? new DelayLink(seed, spec) : new ImpairModel(seed, linkParams(spec)), spec, seed }
      if (!(link.model instanceof DelayLink)) this.#native++
      row.set(to, link)
      this.#size++
    } else if (link.spec !== spec && !sameLinkParams(link.spec, spec)) {
      let m = link.model
      if (m instanceof DelayLink && delayOnly(spec)) m.configure(spec)
      else {
        // Carry on at the same point of the stream, in the native model.
        if (m instanceof DelayLink) {
          link.model = m = nativeAt(link.seed, link.spec, m.offered)
          this.#native++
        }
        ;(m as ImpairModel).configure(linkParams(spec))
      }
      link.spec = spec
    }
    return link.model
  }

  /** Forgets every link. */
  clear(): void {
    this.#links.clear()
    this.#size = 0
    this.#native = 0
  }

  /** Forget links with an empty backlog. */
  #prune(now: number): void {
    if (this.#native === 0) return this.clear() // every link is idle
    for (const [from, row] of this.#links) {
      for (const [to, l] of row) {
        if (l.model.idle(now)) {
          row.delete(to)
          this.#size--
          if (!(l.model instanceof DelayLink)) this.#native--
        }
      }
      if (row.size === 0) this.#links.delete(from)
    }
  }
}

/** A native model at the point of the stream a delay-only link reached after `offered` datagrams. */
function nativeAt(seed: number, spec: LinkParams, offered: number): ImpairModel {
  const m = new ImpairModel(seed, linkParams(spec))
  for (let i = 0; i < offered; i++) m.offer(-Infinity, 0)
  return m
}
