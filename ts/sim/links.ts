/**
 * The links of a SimulatedNetwork: one impairment instance per ordered pair of addresses, seeded
 * from the network's seed and the pair (or the spec's `seed`), at most {@link MAX_LINK_STATES} at
 * once (beyond that, links with an empty backlog are forgotten; one used again starts afresh).
 *
 * A link whose spec only delays (no loss, duplication, reordering, corruption nor bandwidth limit)
 * runs the model here in JavaScript ({@link delayOffer}): the same SplitMix64 stream and the same
 * due times as the native model (`crates/deccom-core/src/impair.rs`), without a native object per
 * link or a native call per datagram. Any other spec runs the native model; a delay-only link
 * whose spec changes to another becomes native at the same point of its random stream.
 *
 * Most links carry a few datagrams before the bound forgets them, so a link is cheap to make: a
 * row of numbers in one Float64Array (no object), found through an open-addressing table keyed by
 * small ids of its two addresses.
 */
import { IMPAIR_COPIES, ImpairModel, type LinkParams, linkParams, sameLinkParams, verdict } from './impair'

/** Links kept at once (see the module docs). */
export const MAX_LINK_STATES = 65_536

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

// A link's row in the table's Float64Array: its endpoints' ids, the SplitMix64 state (hi, lo)
// of a delay-only link, the datagrams it was offered, its latency and jitter (latency -1: the
// link runs the native model) and its seed.
const FROM = 0
const TO = 1
const HI = 2
const LO = 3
const OFFERED = 4
const LATENCY = 5
const JITTER = 6
const SEED = 7
const ROW = 8

/**
 * A delay-only link's verdict for a datagram offered at `now` (the link's row at `o` of `r`): one
 * copy, due after the latency and the jitter of draw r5 (details in `verdict`). Each datagram
 * takes the model's eight draws.
 */
export function delayOffer(r: Float64Array, o: number, now: number): number {
  const hi0 = r[o + HI]
  const lo0 = r[o + LO]
  r[o + OFFERED]++
  let at = now + r[o + LATENCY]
  const jitter = r[o + JITTER]
  if (jitter > 0) {
    // Draw r5: the state after six increments.
    const lo = lo0 + G6_LO
    const hi = (hi0 + G6_HI + (lo >= TWO32 ? 1 : 0)) >>> 0
    at += unitOfMix(hi, lo >>> 0) * jitter
  }
  const lo = lo0 + G8_LO
  r[o + HI] = (hi0 + G8_HI + (lo >= TWO32 ? 1 : 0)) >>> 0
  r[o + LO] = lo >>> 0
  verdict[0] = at
  verdict[1] = now
  verdict[2] = -1
  return 1 & IMPAIR_COPIES
}

/** The links of one network, by ordered pair of address keys. */
export class LinkTable<S extends LinkParams & { seed?: unknown }> {
  /** Address key → its id (the ids of the links held), and id → key. */
  #ids = new Map<string, number>()
  #keys: string[] = []
  /** The links' rows (see {@link ROW}), their specs and their native models (none: delay-only). */
  #rows = new Float64Array(64 * ROW)
  #specs: S[] = []
  #natives: (ImpairModel | undefined)[] = []
  #size = 0
  /** Open addressing, linear probing: link index + 1, or 0 for a free slot. */
  #slots = new Int32Array(128)
  /** Links running the native model (the others are always idle). */
  #native = 0

  /** `seedOf`: the seed of a new link from → to with `spec` (an unsigned 32-bit integer). */
  constructor(readonly seedOf: (from: string, to: string, spec: S) => number) {}

  /** Links held now. */
  get size(): number {
    return this.#size
  }

  /**
   * The verdict of the link from → to, configured with `spec`, for a datagram of `len` wire bytes
   * offered at `at` ms (details in `verdict`); `now`: the network's time, for forgetting links.
   */
  offer(from: string, to: string, spec: S, now: number, at: number, len: number): number {
    const i = this.#link(from, to, spec, now)
    const r = this.#rows
    const o = i * ROW
    if (r[o + LATENCY] >= 0) return delayOffer(r, o, at)
    return this.#natives[i]!.offer(at, len)
  }

  /** Forgets every link. */
  clear(): void {
    this.#ids = new Map()
    this.#keys = []
    this.#specs = []
    this.#natives = []
    this.#size = 0
    this.#slots.fill(0)
    this.#native = 0
  }

  /** The index of the link from → to, made or reconfigured for `spec`. */
  #link(from: string, to: string, spec: S, now: number): number {
    const a = this.#ids.get(from)
    const b = a === undefined ? undefined : this.#ids.get(to)
    if (b !== undefined) {
      const slots = this.#slots
      const mask = slots.length - 1
      const r = this.#rows
      for (let h = slotOf(a!, b, mask); ; h = (h + 1) & mask) {
        const x = slots[h]
        if (x === 0) break
        const o = (x - 1) * ROW
        if (r[o + FROM] === a && r[o + TO] === b) {
          const i = x - 1
          const old = this.#specs[i]
          if (old !== spec && !sameLinkParams(old, spec)) this.#configure(i, spec)
          return i
        }
      }
    }
    return this.#add(from, to, spec, now)
  }

  /** A new link from → to. */
  #add(from: string, to: string, spec: S, now: number): number {
    if (this.#size >= MAX_LINK_STATES) this.#prune(now)
    const seed = this.seedOf(from, to, spec)
    const i = this.#size++
    if ((i + 1) * ROW > this.#rows.length) {
      const rows = new Float64Array(this.#rows.length * 2)
      rows.set(this.#rows)
      this.#rows = rows
    }
    const r = this.#rows
    const o = i * ROW
    r[o + FROM] = this.#idOf(from)
    r[o + TO] = this.#idOf(to)
    r[o + HI] = 0
    r[o + LO] = seed >>> 0
    r[o + OFFERED] = 0
    r[o + SEED] = seed
    this.#specs.push(spec)
    if (delayOnly(spec)) {
      r[o + LATENCY] = ms(spec.latency)
      r[o + JITTER] = ms(spec.jitter)
      this.#natives.push(undefined)
    } else {
      r[o + LATENCY] = -1
      this.#natives.push(new ImpairModel(seed, linkParams(spec)))
      this.#native++
    }
    if (this.#size * 2 > this.#slots.length) this.#rehash(this.#slots.length * 2)
    else this.#place(i)
    return i
  }

  /** New parameters for link `i`; the random stream carries on (natively if needed). */
  #configure(i: number, spec: S): void {
    const r = this.#rows
    const o = i * ROW
    if (r[o + LATENCY] >= 0 && delayOnly(spec)) {
      r[o + LATENCY] = ms(spec.latency)
      r[o + JITTER] = ms(spec.jitter)
    } else {
      let m = this.#natives[i]
      if (m === undefined) {
        // Carry on at the same point of the stream, in the native model.
        m = this.#natives[i] = nativeAt(r[o + SEED], this.#specs[i], r[o + OFFERED])
        r[o + LATENCY] = -1
        this.#native++
      }
      m.configure(linkParams(spec))
    }
    this.#specs[i] = spec
  }

  #idOf(k: string): number {
    let id = this.#ids.get(k)
    if (id === undefined) {
      id = this.#keys.length
      this.#ids.set(k, id)
      this.#keys.push(k)
    }
    return id
  }

  #place(i: number): void {
    const slots = this.#slots
    const mask = slots.length - 1
    const o = i * ROW
    let h = slotOf(this.#rows[o + FROM], this.#rows[o + TO], mask)
    while (slots[h] !== 0) h = (h + 1) & mask
    slots[h] = i + 1
  }

  #rehash(n: number): void {
    this.#slots = new Int32Array(n)
    for (let i = 0; i < this.#size; i++) this.#place(i)
  }

  /** Forget links with an empty backlog; the links kept are renumbered, with their endpoints. */
  #prune(now: number): void {
    if (this.#native === 0) return this.clear() // every link is idle
    const keep: number[] = []
    for (let i = 0; i < this.#size; i++) if (this.#natives[i]?.idle(now) === false) keep.push(i)
    const r = this.#rows
    const keys = this.#keys
    const specs = this.#specs
    const natives = this.#natives
    this.clear()
    for (const i of keep) {
      const o = i * ROW
      const j = this.#size++
      const p = j * ROW
      r.copyWithin(p, o, o + ROW) // j <= i: rows move down only
      r[p + FROM] = this.#idOf(keys[r[p + FROM]])
      r[p + TO] = this.#idOf(keys[r[p + TO]])
      this.#specs.push(specs[i])
      this.#natives.push(natives[i])
      this.#native++
    }
    this.#rehash(this.#slots.length)
  }
}

/** The slot where the link between ids `a` and `b` is looked for first. */
function slotOf(a: number, b: number, mask: number): number {
  let h = Math.imul(a, 0x9e3779b1) ^ b
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b)
  return (h ^ (h >>> 13)) & mask
}

/** A native model at the point of the stream a delay-only link reached after `offered` datagrams. */
function nativeAt(seed: number, spec: LinkParams, offered: number): ImpairModel {
  const m = new ImpairModel(seed, linkParams(spec))
  for (let i = 0; i < offered; i++) m.offer(-Infinity, 0)
  return m
}
