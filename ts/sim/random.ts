/**
 * A small seeded pseudo-random generator for simulations and test programs. (The datagram
 * impairments — loss, jitter, duplication, reordering, corruption — come from the impairment model
 * instead: `./impair.ts`.)
 *
 * Algorithm: xoshiro128** 1.1 (Blackman & Vigna, https://prng.di.unimi.it/), 128 bits of state,
 * period 2^128 − 1, seeded by expanding a 32-bit seed (or a string, hashed with FNV-1a) through
 * splitmix32. It is fast, passes BigCrush, and gives the same sequence on every platform and Node
 * version: only 32-bit integer arithmetic (`Math.imul`, shifts) is used. It is NOT cryptographic.
 *
 * ```ts
 * const rng = new Random(42)
 * rng.next()        // float in [0, 1)
 * rng.int(6)        // integer in [0, 6)
 * rng.chance(0.1)   // true with probability 0.1
 * const sub = rng.fork() // an independent stream, itself deterministic
 * ```
 */

/** A seed: a number (its low 32 bits are used; non-integers are truncated) or a string. */
export type Seed = number | string

/**
 * FNV-1a over the UTF-16 code units of `s`: a 32-bit seed from a string. From `h`, the hash of a
 * string `p`, it is the hash of `p + s` (so a text made of parts is hashed without joining them).
 */
export function hashString(s: string, h = 0x811c9dc5): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h >>> 0
}

/** Normalises a {@link Seed} to an unsigned 32-bit integer. */
export function seedToU32(seed: Seed): number {
  if (typeof seed === 'string') return hashString(seed)
  if (typeof seed !== 'number' || !Number.isFinite(seed)) {
    throw new TypeError(`A seed is a finite number or a string, got ${String(seed)}`)
  }
  // Keep 53-bit integers distinct: fold the high part into the low 32 bits.
  const t = Math.trunc(seed)
  return (t ^ Math.floor(t / 0x1_0000_0000)) >>> 0
}

/** splitmix32 step: returns [next state, output]. Used only to expand a seed into state. */
function splitmix32(state: number): [number, number] {
  state = (state + 0x9e3779b9) >>> 0
  let z = state
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return [state, (z ^ (z >>> 16)) >>> 0]
}

/** xoshiro128** seeded from a 32-bit seed or a string. Deterministic, not cryptographic. */
export class Random {
  /** The seed this generator was created with (as an unsigned 32-bit integer). */
  readonly seed: number
  #a: number
  #b: number
  #c: number
  #d: number

  constructor(seed: Seed = 0) {
    this.seed = seedToU32(seed)
    let s = this.seed
    const out: number[] = []
    for (let i = 0; i < 4; i++) {
      const [n, o] = splitmix32(s)
      s = n
      out.push(o)
    }
    ;[this.#a, this.#b, this.#c, this.#d] = out
    // An all-zero state is the one fixed point of xoshiro; splitmix32 cannot give 4 zero words,
    // but guard anyway.
    if ((this.#a | this.#b | this.#c | this.#d) === 0) this.#a = 1
  }

  /** The next 32 random bits, as an unsigned integer. */
  u32(): number {
    const a = this.#a
    const b = this.#b
    const c = this.#c
    const d = this.#d
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0
    const t = b << 9
    let c2 = c ^ a
    let d2 = d ^ b
    const b2 = b ^ c2
    const a2 = a ^ d2
    c2 ^= t
    d2 = rotl(d2, 11)
    this.#a = a2
    this.#b = b2
    this.#c = c2
    this.#d = d2
    return result
  }

  /** A float in [0, 1) with 32 bits of randomness. */
  next(): number {
    return this.u32() / 0x1_0000_0000
  }

  /** An integer in [0, n) for 1 ≤ n ≤ 2^32 (unbiased, by rejection). */
  int(n: number): number {
    if (!(n >= 1 && n <= 0x1_0000_0000) || !Number.isInteger(n)) throw new RangeError(`Random.int(n) takes an integer 1..2^32, got ${n}`)
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % n)
    let x = this.u32()
    while (x >= limit) x = this.u32()
    return x % n
  }

  /** A float in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next()
  }

  /**
   * True with probability `p` (≤ 0: always false, ≥ 1: always true). Always consumes exactly one
   * draw, so a change of probability does not shift the rest of the sequence.
   */
  chance(p: number): boolean {
    const x = this.next()
    return x < p
  }

  /** Fisher–Yates shuffle of `items` in place; returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const tmp = items[i]
      items[i] = items[j]
      items[j] = tmp
    }
    return items
  }

  /** Fills `out` with random bytes; returns it. */
  bytes(out: Uint8Array): Uint8Array {
    for (let i = 0; i < out.length; i += 4) {
      const x = this.u32()
      for (let k = 0; k < 4 && i + k < out.length; k++) out[i + k] = (x >>> (8 * k)) & 0xff
    }
    return out
  }

  /** A new generator whose seed is drawn from this one: an independent, deterministic stream. */
  fork(): Random {
    return new Random(this.u32())
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k))
}
