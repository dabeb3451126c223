/**
 * Kademlia: a map from 32-byte node ids to peers, looked up by an id read in place (a buffer and
 * an offset: a record of a NODES answer), without making a hex string or a subarray per lookup.
 *
 * Keys are the id's first 30 bits (a small integer: V8 keeps it unboxed and hashes it cheaply);
 * every hit is checked against the whole id. Ids whose 30 bits collide with another id's (ids
 * are SHA-256 values, but a node can grind its identity for a chosen prefix) go to a second map
 * keyed by hex, so a collision costs time, never a wrong answer.
 */

/** Anything with a 32-byte id (a Peer with its id set). */
export interface WithId {
  readonly id: Buffer | null
}

/** The first 30 bits of the id at `buf[off..off + 32]`. */
function keyOf(buf: Buffer, off: number): number {
  return ((buf[off]! << 22) | (buf[off + 1]! << 14) | (buf[off + 2]! << 6) | (buf[off + 3]! >>> 2)) >>> 0
}

/** True when `id` equals `buf[off..off + 32]`. */
export function sameId(id: Buffer, buf: Buffer, off: number): boolean {
  for (let j = 31; j >= 0; j--) if (id[j] !== buf[off + j]) return false
  return true
}

/** Peers by node id (see the module docs). */
export class IdMap<V extends WithId> {
  readonly #fast = new Map<number, V>()
  /** Ids whose key another id holds in `#fast`, by hex (rare: see the module docs). */
  #slow: Map<string, V> | null = null

  /** The value of the id at `buf[off..off + 32]`, if any. */
  get(buf: Buffer, off = 0): V | undefined {
    const v = this.#fast.get(keyOf(buf, off))
    if (v !== undefined && sameId(v.id!, buf, off)) return v
    return this.#slow?.get(buf.toString('hex', off, off + 32))
  }

  /** True when the id at `buf[off..off + 32]` has a value. */
  has(buf: Buffer, off = 0): boolean {
    return this.get(buf, off) !== undefined
  }

  /** Sets the value of its own id (`v.id`, 32 bytes). */
  set(v: V): void {
    const id = v.id!
    const k = keyOf(id, 0)
    const held = this.#fast.get(k)
    if (held === undefined || sameId(held.id!, id, 0)) {
      this.#fast.set(k, v)
      this.#slow?.delete(id.toString('hex'))
    } else {
      ;(this.#slow ??= new Map()).set(id.toString('hex'), v)
    }
  }

  /** Entries held. */
  get size(): number {
    return this.#fast.size + (this.#slow?.size ?? 0)
  }

  /** The values, in the order their ids were first set (those of colliding ids last). */
  *values(): IterableIterator<V> {
    yield* this.#fast.values()
    if (this.#slow) yield* this.#slow.values()
  }

  /** Removes the id at `buf[off..off + 32]`. */
  delete(buf: Buffer, off = 0): void {
    const k = keyOf(buf, off)
    const held = this.#fast.get(k)
    if (held !== undefined && sameId(held.id!, buf, off)) this.#fast.delete(k)
    else this.#slow?.delete(buf.toString('hex', off, off + 32))
  }
}
