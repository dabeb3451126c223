/**
 * A bounded table of peer numbers for the JavaScript-driven native endpoints (ReliableUdp, Noise):
 * the endpoints name peers by a `u32`, JavaScript by address.
 *
 * Peers are keyed by `Address.key` ("host:port"), not by the Address object: the address intern
 * cache is bounded and starts over when full, after which the same host:port is a new object.
 * Numbers are never reused while the table holds them (a counter, wrapping at 2^32 past numbers in
 * use). The table keeps at most `cap` peers: adding one more evicts the least recently used peer
 * that `canEvict` allows (looking at the oldest few only); `onEvict` then lets the owner drop what
 * it keeps per peer. When none of those may go, the table grows past `cap` until they can: the
 * owner's own limits bound that state.
 */
import type { Address } from '../address'

/** How many of the least recently used peers an insertion examines for one it may evict. */
const EVICTION_SCAN = 64

export class PeerTable {
  /** key → number, least recently used first (a Map keeps insertion order; a use re-inserts). */
  readonly #byKey = new Map<string, number>()
  readonly #byId = new Map<number, Address>()
  readonly #cap: number
  readonly #canEvict: (id: number) => boolean
  readonly #onEvict: (id: number) => void
  #next = 0
  /** Peers evicted so far. */
  evicted = 0

  constructor(cap: number, opts: { canEvict?: (id: number) => boolean; onEvict?: (id: number) => void } = {}) {
    this.#cap = Math.max(1, cap)
    this.#canEvict = opts.canEvict ?? (() => true)
    this.#onEvict = opts.onEvict ?? (() => {})
  }

  /** Peers in the table. */
  get size(): number {
    return this.#byKey.size
  }

  /** The number of `addr` (created, evicting an old peer if the table is full), marked as just used. */
  id(addr: Address): number {
    const key = addr.key
    let id = this.#byKey.get(key)
    if (id !== undefined) {
      this.#byKey.delete(key)
      this.#byKey.set(key, id)
      return id
    }
    if (this.#byKey.size >= this.#cap) this.#evictOne()
    do {
      id = this.#next
      this.#next = (this.#next + 1) >>> 0
    } while (this.#byId.has(id))
    this.#byKey.set(key, id)
    this.#byId.set(id, addr)
    return id
  }

  /** The number of `addr` if the table has it (not marked as used). */
  peek(addr: Address): number | undefined {
    return this.#byKey.get(addr.key)
  }

  /** The address of peer `id`, marked as just used; undefined when it was evicted (or never existed). */
  address(id: number): Address | undefined {
    const addr = this.#byId.get(id)
    if (addr !== undefined) {
      this.#byKey.delete(addr.key)
      this.#byKey.set(addr.key, id)
    }
    return addr
  }

  /** Forgets every peer (without `onEvict`). */
  clear(): void {
    this.#byKey.clear()
    this.#byId.clear()
  }

  #evictOne(): void {
    let scanned = 0
    for (const [key, id] of this.#byKey) {
      if (scanned++ >= EVICTION_SCAN) return
      if (!this.#canEvict(id)) continue
      this.#byKey.delete(key)
      this.#byId.delete(id)
      this.evicted++
      this.#onEvict(id)
      return
    }
  }
}
