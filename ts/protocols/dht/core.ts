/**
 * DHT: the shared parts — constants, options, the state every part works on ({@link DhtCore}),
 * requests and their matching, and the iterative query toward a key.
 */
import type { Address } from '../../address'
import { fromRawAddress } from '../../address'
import type { Clock, TimerHandle } from '../../clock'
import { abortable } from '../../abort'
import { DeccomError, ErrorCode } from '../../errors'
import { native } from '../../native'
import { IdMap, sameId } from '../kademlia/id-map'
import type { Answer } from './answer'
import { copyOut, encodeScratch } from '../kademlia/message'

/** Tag of DHT datagrams. */
export const TAG_DHT = 13
export const GET = 1
export const REPLY = 2
export const ANNOUNCE = 3
export const PUT = 4
export const PUT_MUTABLE = 5
export const ACK = 6
export const NOTIFY = 7
export const KIND_TOPIC = 1
export const KIND_IMMUTABLE = 2
export const KIND_MUTABLE = 3
export const NO_TOKEN = Buffer.alloc(16)
/** Largest value in bytes (as BEP 44). */
export const MAX_VALUE = 1000
/** Requests in flight, at most. */
export const MAX_PENDING = 8192
/** Remembered tokens (one per storer address), at most. */
export const MAX_TOKENS = 8192
/** Nodes a GET's reply carries. */
export const REPLY_NODES = 8
/** Record pages fetched per node and topic query. */
export const MAX_PAGES = 16

/** A parsed answer (see `answer.ts`). */
export type Decoded = Answer

/** Options of {@link Dht}. */
export interface DhtOptions {
  /** Nodes a query converges on, and records are stored at (default 20). */
  k?: number
  /** Queries in flight per topic query and immutable get, which end at the first answer that has what they seek (default 3). */
  alpha?: number
  /**
   * Queries in flight per put, putMutable and getMutable (default 10): these must hear from all
   * k closest nodes, so with 3 in flight they would take about k / 3 round trips.
   */
  valueAlpha?: number
  /** Per-query timeout in ms (default 1000). */
  queryTimeout?: number
  /** Size a GET to a node that gave us no token yet is padded to (default 1200). */
  padTo?: number
  /** Lifetime of announce records in ms (default 20 minutes); joins refresh at half of it. */
  announceTtl?: number
  /** How often a joined topic is looked up again, in ms (default: half the announce TTL). */
  lookupInterval?: number
  /** How long a value put by this node is stored, in ms (default 2 hours); owners republish at half of it. */
  valueTtl?: number
  /**
   * Most records (announces and values) this node stores for others in total; a new one beyond is
   * refused as `full` (default 20 000).
   */
  maxRecords?: number
  /** Most announcers this node stores per topic; a new one beyond is refused as `full` (default 128). */
  maxPerTopic?: number
  /**
   * Most records this node stores that were put by one source IP (the address the put came from,
   * proven by its token); a new one beyond is refused as `full` (default 512).
   */
  maxPerSource?: number
  /**
   * Puts per second one source IP may make here (announces, immutable and mutable puts; a token
   * bucket refilled at this rate); a put without a token left is refused as `rate_limited`
   * (default 50).
   */
  putRate?: number
  /** Size of each source IP's bucket: the puts it may make at once after a pause (default 200). */
  putBurst?: number
  /** How long a node that looked up or announced on a topic is told of new announcers, in ms (default 60 000). */
  subscribeMs?: number
  /** Token secret rotation period in ms (default 300 000). */
  tokenRotation?: number
}

/** A node a query reached: its id, address and the token it gave us. */
export interface QueryNode {
  id: Buffer
  address: Address
}

export interface QueryResult {
  /** The k closest nodes that answered, closest first. */
  closest: QueryNode[]
  queries: number
  replies: number
  elapsed: number
}

export type Fn = (...args: any[]) => any

interface Pending {
  hi: number
  to: Address
  type: number
  /** When it times out (the clock's ms). */
  deadline: number
  cb: (m: Decoded | null) => void
}

/** The operations of the layer its parts use. */
export interface DhtOps {
  count(name: string, n?: number): void
  sendControl(to: Address, data: Uint8Array): boolean
  readonly lower: Record<string, Fn>
}

/** The state of one DHT layer, shared by its parts. */
export class DhtCore {
  k = 20
  alpha = 3
  valueAlpha = 10
  queryTimeout = 1000
  padTo = 1200
  announceTtl = 1_200_000
  lookupInterval = 600_000
  valueTtl = 7_200_000
  running = false
  clock!: Clock
  /** This node's id (answers never name it as a candidate). */
  selfId: Buffer = Buffer.alloc(32)
  readonly pending = new Map<number, Pending>()
  readonly tokens = new Map<string, Buffer>()
  /** Address key of a storer → our raw address as it saw us (from its REPLY). */
  readonly observed = new Map<string, Buffer>()
  nextLo = 0
  readonly qid = Buffer.alloc(32)

  constructor(private readonly ops: DhtOps) {}

  count(name: string, n?: number): void {
    this.ops.count(name, n)
  }

  get lower(): Record<string, Fn> {
    return this.ops.lower
  }

  /** Sends a request; `cb` gets the matching answer, or null after the timeout. */
  request(to: Address, type: number, build: (hi: number, lo: number) => Buffer, cb: (m: Decoded | null) => void): void {
    const clock = this.clock
    if (!this.running || this.pending.size >= MAX_PENDING) {
      this.count('dropped_too_many_requests')
      clock.setTimeout(() => cb(null), 0)
      return
    }
    let lo = (this.nextLo + 1) >>> 0
    while (this.pending.has(lo)) lo = (lo + 1) >>> 0
    this.nextLo = lo
    const hi = (Math.random() * 0x1_0000_0000) >>> 0
    if (!this.ops.sendControl(to, build(hi, lo))) {
      clock.setTimeout(() => cb(null), 0)
      return
    }
    // Every request waits as long, so they time out in the order they were sent: the order the
    // pending map keeps. One timer, for the oldest, serves them all (see #expire).
    const wait = 2 * this.queryTimeout
    this.pending.set(lo, { hi, to, type, deadline: clock.now() + wait, cb })
    if (this.#expiry === null && !this.#expiring) this.#expiry = clock.setTimeout(this.#onExpiry, wait)
  }

  /** The timer of the oldest pending request (null when none is pending). */
  #expiry: TimerHandle | null = null
  /** True while #expire runs (it arms the timer itself, for the oldest request left). */
  #expiring = false
  readonly #onExpiry = (): void => this.#expire()

  /** Times out the requests whose deadline passed (oldest first), then waits for the next one's. */
  #expire(): void {
    this.#expiry = null
    const now = this.clock.now()
    this.#expiring = true
    try {
      for (const [lo, p] of this.pending) {
        if (p.deadline > now) break
        this.pending.delete(lo)
        this.count('request_timeouts')
        p.cb(null)
      }
    } finally {
      this.#expiring = false
      const oldest = this.pending.values().next().value
      if (oldest !== undefined && this.running) this.#expiry = this.clock.setTimeout(this.#onExpiry, Math.max(0, oldest.deadline - now))
    }
  }

  /** Ends every pending request with null (the layer stops). */
  cancelAll(): void {
    this.clock.clearTimeout(this.#expiry ?? undefined)
    this.#expiry = null
    const all = [...this.pending.values()]
    this.pending.clear()
    for (const p of all) p.cb(null)
  }

  /** The request `m` answers (same id, from the address asked), removed from the pending ones. */
  match(m: Decoded, from: Address, type: number): Pending | undefined {
    const p = this.pending.get(m.requestLo)
    if (!p || p.hi !== m.requestHi || p.to.key !== from.key || p.type !== type) return undefined
    this.pending.delete(m.requestLo)
    return p
  }

  tokenOf(a: Address): Buffer | undefined {
    return this.tokens.get(a.key)
  }

  /** Keeps a copy of `t` (an answer's token is a view of its datagram). */
  setToken(a: Address, t: Buffer): void {
    this.tokens.delete(a.key)
    if (this.tokens.size >= MAX_TOKENS) this.tokens.delete(this.tokens.keys().next().value as string)
    this.tokens.set(a.key, Buffer.from(t))
  }

  /** GET of `key` to `to`: padded when `to` gave us no token yet (so it may answer in full). */
  get(to: Address, kind: number, key: Buffer, offset: number, cb: (m: Decoded | null) => void): void {
    const token = this.tokenOf(to)
    this.count('gets_sent')
    this.request(to, GET, (hi, lo) => copyOut(native.dhtEncodeGetInto(hi, lo, kind, key, token ?? NO_TOKEN, offset, token ? 0 : this.padTo, encodeScratch)), (m) => {
      if (m) {
        this.setToken(to, m.token)
        this.observed.delete(to.key)
        if (this.observed.size >= MAX_TOKENS) this.observed.delete(this.observed.keys().next().value as string)
        this.observed.set(to.key, Buffer.from(m.observed))
      }
      if (m && !m.key.equals(key)) {
        this.count('dropped_wrong_key')
        return cb(null)
      }
      if (m && m.badRecords > 0) this.count('dropped_bad_records', m.badRecords)
      cb(m)
    })
  }

  /** The records of `key` at `to` from `offset` on, page after page (at most MAX_PAGES). */
  pages(to: Address, key: Buffer, offset: number, pages: number, take: (m: Decoded) => void, done?: () => void): void {
    this.get(to, KIND_TOPIC, key, offset, (m) => {
      if (!m) return done?.()
      take(m)
      const got = m.peerCount + m.badRecords
      if (got > 0 && m.total > offset + got && pages < MAX_PAGES) this.pages(to, key, offset + got, pages + 1, take, done)
      else done?.()
    })
  }

  /**
   * An iterative query toward `key` (the k closest nodes, like a Kademlia lookup, driven by the
   * native KadLookup): every node asked answers with the nodes it knows closest to the key and the
   * records it stores for it (`onRecords`; returning true ends the query there, e.g. on the value
   * sought); nodes named in answers are only candidates until they answer themselves. `alpha`
   * queries are in flight at once (default the layer's `alpha`).
   */
  query(kind: number, key: Buffer, onRecords: (m: Decoded, from: QueryNode) => boolean | void, signal?: AbortSignal, alpha = this.alpha): Promise<QueryResult> {
    // On abort: no more requests, no more records; answers still on their way are ignored.
    let cancel = (): void => {}
    return abortable<QueryResult>(signal, (resolve) => {
      const t0 = this.clock.now()
      // The seeds: the table's nodes closest to the key, as rows (id, raw address) the lookup
      // reads its ids from. Candidates by id (no hex strings: a query's records are read once, in
      // native order); a seed becomes one when it is first queried (most never are).
      const rows = Buffer.allocUnsafe(ROW * this.k)
      const seeds = rows.subarray(0, ROW * (this.lower.closestRows(key, this.k, null, rows) as number))
      const cands = new IdMap<QueryNode>()
      const candidate = (id: Buffer): QueryNode | undefined => cands.get(id) ?? seed(cands, seeds, id)
      const lk = new native.KadLookup(key, seeds, alpha, this.k, this.queryTimeout, t0, ROW)
      let timer: TimerHandle | null = null
      let timerAt = Infinity
      let replies = 0
      let done = false
      cancel = () => {
        done = true
        this.clock.clearTimeout(timer ?? undefined)
      }
      const finish = (): void => {
        if (done) return
        done = true
        this.clock.clearTimeout(timer ?? undefined)
        const c = lk.closest()
        const closest: QueryNode[] = []
        for (let i = 0; i + 32 <= c.length; i += 32) {
          const q = cands.get(c, i)
          if (q) closest.push(q)
        }
        this.count('queries')
        resolve({ closest, queries: lk.stats().queries, replies, elapsed: this.clock.now() - t0 })
      }
      const drive = (): void => {
        while (!done) {
          if (!this.running) return finish()
          const action = lk.next(this.clock.now(), this.qid)
          if (action === 0) {
            const node = candidate(this.qid)
            const id = Buffer.from(this.qid)
            if (!node) {
              lk.onFailure(id)
              continue
            }
            this.get(node.address, kind, key, 0, (m) => {
              if (done) return
              if (!m) {
                lk.onFailure(id)
                return drive()
              }
              replies++
              if (onRecords(m, node) === true) return finish()
              const got = m.peerCount + m.badRecords
              if (kind === KIND_TOPIC && got > 0 && m.total > got) this.pages(node.address, key, got, 1, (x) => !done && onRecords(x, node))
              const closer: Buffer[] = []
              // The answer's node rows: an id, then its raw address.
              const rows = m.data
              for (let i = 0; i < m.nodeCount; i++) {
                const at = m.nodeAt(i)
                if (sameId(this.selfId, rows, at)) continue
                if (!cands.has(rows, at)) {
                  let address: Address
                  try {
                    address = fromRawAddress(rows.subarray(at + 32, at + ROW))
                  } catch {
                    continue
                  }
                  cands.set({ id: Buffer.from(rows.subarray(at, at + 32)), address })
                }
                closer.push(rows.subarray(at, at + 32))
              }
              lk.onSuccess(id, Buffer.concat(closer))
              drive()
            })
            continue
          }
          if (action === 1) {
            const at = lk.pollTimeout()
            if (at !== null && at < timerAt) {
              this.clock.clearTimeout(timer ?? undefined)
              timerAt = at
              timer = this.clock.setTimeout(() => {
                timer = null
                timerAt = Infinity
                drive()
              }, Math.max(0, at - this.clock.now()))
            }
            return
          }
          return finish()
        }
      }
      drive()
    }, () => cancel())
  }
}

/** Bytes per row of `closestRows`: an id and an 18-byte address. */
const ROW = 50

/** The seed row with id `id` as a candidate of `cands` (added), or undefined. */
function seed(cands: IdMap<QueryNode>, rows: Buffer, id: Buffer): QueryNode | undefined {
  for (let at = 0; at < rows.length; at += ROW) {
    if (!sameId(id, rows, at)) continue
    let address: Address
    try {
      address = fromRawAddress(rows.subarray(at + 32, at + ROW))
    } catch {
      return undefined
    }
    const node = { id: Buffer.from(rows.subarray(at, at + 32)), address }
    cands.set(node)
    return node
  }
  return undefined
}

/** A 32-byte key from a Buffer or 64 hex digits. */
export function toKey(k: Buffer | Uint8Array | string, what = 'A key'): Buffer {
  if (typeof k === 'string' && /^[0-9a-fA-F]{64}$/.test(k)) return Buffer.from(k, 'hex')
  if (k instanceof Uint8Array && k.length === 32) return Buffer.isBuffer(k) ? k : Buffer.from(k)
  throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} is 32 bytes (a Buffer) or 64 hex digits`)
}
