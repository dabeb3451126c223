/**
 * Rate limits by source prefix for reply paths, and the prefix of an address.
 *
 * A reply goes to the address a datagram claims to come from, which nobody validated (UDP source
 * addresses are spoofable). Replies are never larger than their request (1x); on top of that each
 * reply path answers one source prefix (IPv4 /24, IPv6 /48) at most `rate` times per second with a
 * burst of `burst`, so a flood of spoofed requests naming one victim network reflects a bounded
 * number of datagrams. The table of prefixes is bounded (the least recently used one is forgotten).
 */
import type { Address } from '../address'

/** Prefixes of the addresses seen (an Address is immutable: its prefix is computed once). */
const prefixes = new WeakMap<Address, string>()

/** IPv4 /24 or IPv6 /48 of an address (an IPv4-mapped IPv6 address counts as IPv4). */
export function prefixOf(addr: Address): string {
  let p = prefixes.get(addr)
  if (p === undefined) prefixes.set(addr, (p = computePrefix(addr)))
  return p
}

function computePrefix(addr: Address): string {
  let host = addr.host
  if (addr.family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host)
    if (!mapped) return `${expand6(host).slice(0, 3).join(':')}::/48`
    host = mapped[1]!
  }
  const dot = host.lastIndexOf('.')
  return `${host.slice(0, dot)}.0/24`
}

function expand6(host: string): string[] {
  const h = host.split('%')[0]!.toLowerCase()
  const [head, tail] = h.includes('::') ? h.split('::') as [string, string] : [h, null]
  const a = head ? head.split(':') : []
  const b = tail ? tail.split(':') : []
  const fill = tail === null ? [] : new Array<string>(Math.max(0, 8 - a.length - b.length)).fill('0')
  return [...a, ...fill, ...b].map((x) => x.replace(/^0+(?=.)/, ''))
}

/** A token bucket: tokens left, as of time `at` (ms). */
export interface Bucket {
  /** Tokens left (fractional while refilling). */
  tokens: number
  /** When `tokens` was last brought up to date (ms). */
  at: number
}

/** An entry of a {@link RecencyMap}: its key and its less / more recently used neighbours. */
export interface RecencySlot {
  readonly key: string
  prev: this | null
  next: this | null
}

/**
 * Entries keyed by string, at most `maxKeys` of them: when a new key would exceed that, the least
 * recently used key is forgotten. Recency is a doubly linked list beside the map, so using an
 * entry moves it without removing and re-adding its key (which would leave a hole in the map's
 * table per use). The entries are the list's nodes: the caller keeps its fields in them.
 */
export class RecencyMap<S extends RecencySlot> {
  readonly #slots = new Map<string, S>()
  /** Least and most recently used. */
  #lru: S | null = null
  #mru: S | null = null

  constructor(readonly maxKeys: number) {}

  get size(): number {
    return this.#slots.size
  }

  /** The entry of `key`, its recency unchanged. */
  peek(key: string): S | undefined {
    return this.#slots.get(key)
  }

  /** The entry of `key` made the most recently used one; undefined when there is none. */
  use(key: string): S | undefined {
    const s = this.#slots.get(key)
    if (s !== undefined && s !== this.#mru) {
      this.#unlink(s)
      this.#append(s)
    }
    return s
  }

  /**
   * Adds `slot` (whose key is absent) as the most recently used entry, first forgetting the least
   * recently used one when `maxKeys` are held.
   */
  add(slot: S): void {
    if (this.#slots.size >= this.maxKeys && this.#lru !== null) this.remove(this.#lru)
    this.#slots.set(slot.key, slot)
    this.#append(slot)
  }

  /** Forgets `slot` (an entry held). */
  remove(slot: S): void {
    this.#unlink(slot)
    this.#slots.delete(slot.key)
  }

  #unlink(s: S): void {
    if (s.prev) s.prev.next = s.next
    else this.#lru = s.next
    if (s.next) s.next.prev = s.prev
    else this.#mru = s.prev
    s.prev = s.next = null
  }

  #append(s: S): void {
    s.prev = this.#mru
    if (this.#mru) this.#mru.next = s
    else this.#lru = s
    this.#mru = s
  }
}

/** A bucket of {@link KeyedBuckets}. */
interface Slot extends Bucket, RecencySlot {}

/**
 * Token buckets keyed by string (a prefix, an IP), at most `maxKeys` of them: when a new key
 * would exceed that, the least recently used key is forgotten ({@link RecencyMap}).
 */
export class KeyedBuckets {
  readonly #buckets: RecencyMap<Slot>

  constructor(
    readonly rate: number,
    readonly burst: number,
    readonly maxKeys = 4096,
  ) {
    this.#buckets = new RecencyMap(maxKeys)
  }

  /**
   * The bucket of `key` refilled to `now` (as `has` does): take a token by decrementing `tokens`
   * when it is >= 1.
   */
  bucket(key: string, now: number): Bucket {
    return this.#refill(key, now)
  }

  /** Takes one token of `key` at time `now` (ms); false when none is left. */
  take(key: string, now: number): boolean {
    const b = this.#refill(key, now)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  /** True when `key` has a token left at `now`, without taking it. */
  has(key: string, now: number): boolean {
    return this.#refill(key, now).tokens >= 1
  }

  /**
   * Gives one token back to `key` (up to the burst). A bucket that is full again is forgotten: it
   * is what a new key starts with, so only keys with tokens missing take memory.
   */
  refund(key: string): void {
    const b = this.#buckets.peek(key)
    if (!b) return
    b.tokens += 1
    if (b.tokens >= this.burst) this.#buckets.remove(b)
  }

  get size(): number {
    return this.#buckets.size
  }

  #refill(key: string, now: number): Bucket {
    let b = this.#buckets.use(key)
    if (b) {
      b.tokens = Math.min(this.burst, b.tokens + (Math.max(0, now - b.at) * this.rate) / 1000)
      b.at = now
    } else {
      b = { tokens: this.burst, at: now, key, prev: null, next: null }
      this.#buckets.add(b)
    }
    return b
  }
}

/** Replies per second (and burst) one source prefix gets from one reply path by default. */
export const REPLY_RATE = 200
export const REPLY_BURST = 400

/** A reply limiter per source prefix: `allow(addr, now)` is false when the prefix is over its rate. */
export class ReplyLimiter {
  readonly #buckets: KeyedBuckets

  constructor(rate = REPLY_RATE, burst = REPLY_BURST, maxPrefixes = 4096) {
    this.#buckets = new KeyedBuckets(rate, burst, maxPrefixes)
  }

  allow(addr: Address, now: number): boolean {
    return this.#buckets.take(prefixOf(addr), now)
  }

  /** Prefixes tracked. */
  get size(): number {
    return this.#buckets.size
  }
}
