/**
 * The determinism trace of a SimulatedNetwork (`sim.trace`): a 64-bit rolling hash (two 32-bit
 * lanes) of every event and datagram record, and a ring of the last `limit` datagram records.
 */
import type { Address } from '../address'
import { MAX_LINK_STATES } from './links'

/** What {@link SimulatedNetwork.trace} returns. */
export interface SimTrace {
  /** 64-bit rolling hash (16 hex digits) over every event processed and every datagram record. */
  readonly hash: string
  /** The last `traceLimit` datagram records, oldest first: `"<ms> <kind> <from>><to> <bytes>"`. */
  readonly log: readonly string[]
  /** Number of records and events hashed so far. */
  readonly count: number
}

/** Kinds of datagram records in the trace (index = code hashed). */
export const KINDS = ['send', 'deliver', 'lost', 'queue_drop', 'no_route', 'nat_drop', 'uplink_drop', 'downlink_drop'] as const
export const enum Kind {
  Send = 0,
  Deliver = 1,
  Lost = 2,
  QueueDrop = 3,
  NoRoute = 4,
  NatDrop = 5,
  UplinkDrop = 6,
  DownlinkDrop = 7,
}

interface TraceRecord {
  time: number
  kind: Kind
  from: Address
  to: Address
  size: number
}

/** See the module docs. */
export class DeterminismTrace {
  #h1 = 0x811c9dc5
  #h2 = 0x9747b28c
  #count = 0
  readonly #ring: TraceRecord[] = []
  #ringStart = 0
  /** Address → 32-bit hash of its key. */
  readonly #addrHash = new Map<Address, number>()

  /** `limit`: datagram records kept in the log (0: none). */
  constructor(readonly limit: number) {}

  /** Hashes one 32-bit value (an event's sequence number, a part of a record). */
  mix(x: number): void {
    this.#h1 = Math.imul(this.#h1 ^ (x & 0xffff), 0x01000193)
    this.#h1 = Math.imul(this.#h1 ^ (x >>> 16), 0x01000193)
    this.#h2 = Math.imul(this.#h2 ^ x, 0x5bd1e995)
    this.#h2 = (this.#h2 ^ (this.#h2 >>> 15)) >>> 0
    this.#count++
  }

  /** Hashes a datagram record (time, kind, addresses, size, first 64 bytes) and keeps it in the log. */
  record(now: number, kind: Kind, from: Address, to: Address, bytes: Buffer): void {
    const t = Math.round(now * 1000)
    this.mix(t % 0x1_0000_0000)
    this.mix(Math.floor(t / 0x1_0000_0000))
    this.mix(kind)
    this.mix(this.#hashOf(from))
    this.mix(this.#hashOf(to))
    this.mix(bytes.length)
    const n = Math.min(bytes.length, 64)
    for (let i = 0; i < n; i++) this.mix(bytes[i]!)
    if (this.limit === 0) return
    const rec: TraceRecord = { time: now, kind, from, to, size: bytes.length }
    if (this.#ring.length < this.limit) {
      this.#ring.push(rec)
    } else {
      this.#ring[this.#ringStart] = rec
      this.#ringStart = (this.#ringStart + 1) % this.limit
    }
  }

  snapshot(): SimTrace {
    const r = this.#ring
    const ordered = r.length < this.limit ? r : [...r.slice(this.#ringStart), ...r.slice(0, this.#ringStart)]
    const log = ordered.map((x) => `${x.time.toFixed(3)} ${KINDS[x.kind]} ${x.from.key}>${x.to.key} ${x.size}`)
    const hex = (x: number) => (x >>> 0).toString(16).padStart(8, '0')
    return { hash: hex(this.#h1) + hex(this.#h2), log, count: this.#count }
  }

  #hashOf(a: Address): number {
    let h = this.#addrHash.get(a)
    if (h === undefined) {
      h = 0x811c9dc5
      for (let i = 0; i < a.key.length; i++) h = Math.imul(h ^ a.key.charCodeAt(i), 0x01000193)
      h >>>= 0
      if (this.#addrHash.size >= MAX_LINK_STATES) this.#addrHash.clear()
      this.#addrHash.set(a, h)
    }
    return h
  }
}
