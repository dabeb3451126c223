/** DHT — the layer (see `index.ts` for the protocol, `core.ts` for its parts). */
import { randomBytes } from 'node:crypto'
import type { Address } from '../../address'
import { fromRawAddress } from '../../address'
import { type TimerHandle, realClock } from '../../clock'
import type { AbortOptions } from '../../abort'
import { DeccomError, ErrorCode } from '../../errors'
import type { Identity } from '../../identity'
import { native } from '../../native'
import { Peer } from '../../peer'
import type { LayerContext } from '../../protocol'
import { Protocol } from '../../protocol'
import { ACK, ANNOUNCE, type DhtOptions, DhtCore, GET, KIND_TOPIC, NOTIFY, NO_TOKEN, REPLY, REPLY_NODES, TAG_DHT, toKey } from './core'
import { Answer } from './answer'
import { type JoinOptions, Topic, type TopicHost } from './topic'
import { type GetMutableOptions, type MutableValue, type PutMutableOptions, type PutMutableResult, type PutResult, getImmutable, getMutable, putImmutable, putMutable } from './values'

/** The source of GETs a node asks its own server (never a real address: port 0). */
const LOCAL = Buffer.alloc(18)

/** Owned values republished, at most. */
const MAX_OWNED = 1024

function positive(v: number, what: string): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} must be a finite number > 0, got ${v}`)
  return v
}

function int(v: number, min: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} must be an integer ${min}..${max}, got ${v}`)
  return v
}

/** What {@link Dht.attachNativeResponder} uses of the socket layer (UdpTransport). */
interface NativeDhtSocket {
  attachDhtResponder(server: unknown, table: unknown, tag: number, nodes: number, now: number): boolean
  detachDhtResponder(): void
  dhtResponderStats(): Record<string, number>
}

/**
 * The DHT layer: join topics to meet the peers that share them, and put and get values at the
 * nodes closest to a key (above Kademlia; see the module's description).
 */
export class Dht extends Protocol {
  static override bindTo = ['send', 'closestRows']
  static override bindFrom = ['onMessage']
  static override emits = ['onMessage']

  readonly name = 'dht'
  override readonly tag = TAG_DHT

  readonly #c: DhtCore = new DhtCore({
    count: (name, n) => this.count(name, n),
    sendControl: (to, data) => this.sendControl(to, data),
    lower: this.lower,
  })
  readonly #opts: DhtOptions
  #server: InstanceType<typeof native.DhtServer> | null = null
  #identity: Identity | null = null
  /** What the layer gives every Topic (made at start, once the identity is known). */
  #host: TopicHost | null = null
  /** The socket answering GETs, once attached (see {@link attachNativeResponder}). */
  #native: NativeDhtSocket | null = null
  readonly #topics = new Map<string, Set<Topic>>()
  /** Values this node put: republished every valueTtl / 2 while the layer runs. */
  readonly #owned = new Map<string, () => Promise<unknown>>()
  #timers: TimerHandle[] = []
  #seq = 0
  readonly #nodes = Buffer.alloc(REPLY_NODES * 50)

  constructor(opts: DhtOptions = {}) {
    super()
    this.#opts = opts
    const c = this.#c
    c.k = int(opts.k ?? 20, 1, 20, 'k')
    c.alpha = int(opts.alpha ?? 3, 1, 64, 'alpha')
    c.valueAlpha = int(opts.valueAlpha ?? 10, 1, 64, 'valueAlpha')
    c.queryTimeout = positive(opts.queryTimeout ?? 1000, 'queryTimeout')
    c.padTo = int(opts.padTo ?? 1200, 0, 1400, 'padTo')
    c.announceTtl = positive(opts.announceTtl ?? 1_200_000, 'announceTtl')
    c.lookupInterval = positive(opts.lookupInterval ?? c.announceTtl / 2, 'lookupInterval')
    c.valueTtl = positive(opts.valueTtl ?? 7_200_000, 'valueTtl')
  }

  override async start(ctx: LayerContext): Promise<void> {
    const c = this.#c
    c.clock = ctx.clock
    this.#identity = ctx.identity as Identity
    c.selfId = this.#identity.id
    const o = this.#opts
    this.#server = new native.DhtServer(randomBytes(32), {
      maxRecords: o.maxRecords,
      maxPerTopic: o.maxPerTopic,
      maxPerSource: o.maxPerSource,
      maxTtlMs: c.announceTtl,
      valueTtlMs: c.valueTtl,
      putRate: o.putRate,
      putBurst: o.putBurst,
      subscribeMs: o.subscribeMs,
    })
    this.#host = {
      core: c,
      identity: this.#identity,
      nextSeq: () => (this.#seq = Math.max(this.#seq + 1, Date.now())),
      count: (name, n) => this.count(name, n),
      local: (topic, onRecords) => this.#local(topic, onRecords),
      removeTopic: (x) => {
        const set = this.#topics.get(x.topic.toString('hex'))
        set?.delete(x)
        if (set?.size === 0) this.#topics.delete(x.topic.toString('hex'))
      },
    }
    c.running = true
    this.#every(positive(o.tokenRotation ?? 300_000, 'tokenRotation'), () => this.#server?.rotate(randomBytes(32)))
    this.#every(10_000, () => this.count('expired', this.#server?.expire(c.clock.now()) ?? 0))
    this.#every(c.valueTtl / 2, () => {
      for (const put of this.#owned.values()) void put().catch(() => this.count('republish_failures'))
    })
  }

  override async stop(): Promise<void> {
    const c = this.#c
    if (!c.running) return
    c.running = false
    this.#native?.detachDhtResponder()
    for (const t of this.#timers) c.clock.clearTimeout(t)
    this.#timers = []
    for (const set of [...this.#topics.values()]) for (const t of [...set]) void t.leave()
    this.#topics.clear()
    c.cancelAll()
    this.#server = null
  }

  #every(ms: number, fn: () => void): void {
    const i = this.#timers.length
    const tick = (): void => {
      if (!this.#c.running) return
      fn()
      this.#timers[i] = this.#c.clock.setTimeout(tick, ms)
    }
    this.#timers.push(this.#c.clock.setTimeout(tick, ms))
  }

  // ---- public API -------------------------------------------------------------------------

  /**
   * Joins `topic` (32 bytes or 64 hex digits): looks it up and announces this node there, now and
   * periodically, until `leave()`. See {@link Topic}.
   */
  join(topic: Buffer | Uint8Array | string, opts: JoinOptions = {}): Topic {
    this.#running()
    const key = toKey(topic, 'A topic')
    const t = new Topic(this.#host!, key, opts)
    const hex = key.toString('hex')
    let set = this.#topics.get(hex)
    if (!set) this.#topics.set(hex, (set = new Set()))
    set.add(t)
    this.count('joins')
    return t
  }

  /** The announcers of `topic` the k closest nodes store (verified), without joining. */
  async lookup(topic: Buffer | Uint8Array | string, opts: AbortOptions = {}): Promise<Peer[]> {
    this.#running()
    const key = toKey(topic, 'A topic')
    const found = new Map<string, Peer>()
    await this.#c.query(KIND_TOPIC, key, (m) => {
      for (let i = 0; i < m.peerCount; i++) {
        const hex = m.peerIds!.toString('hex', 32 * i, 32 * i + 32)
        if (found.has(hex)) continue
        try {
          const a = fromRawAddress(m.peerAddr(i))
          found.set(hex, new Peer(a, m.peerIds.subarray(32 * i, 32 * i + 32), Buffer.from(m.peerIdentity(i))))
        } catch {
          this.count('dropped_bad_address')
        }
      }
    }, opts.signal)
    return [...found.values()]
  }

  /**
   * Stores an immutable value (≤ 1000 bytes) at the k nodes closest to SHA-256(value); republished
   * while the layer runs. @throws ERR_DECCOM_INVALID_ARGUMENT, ERR_DECCOM_DHT_PUT_FAILED, ERR_DECCOM_ABORTED
   */
  async put(value: Uint8Array, opts: AbortOptions = {}): Promise<PutResult> {
    this.#running()
    const r = await putImmutable(this.#c, value, opts)
    this.#own(r.key, () => putImmutable(this.#c, value))
    return r
  }

  /** The value stored under `key` (SHA-256 of it), verified, or null. @throws ERR_DECCOM_ABORTED */
  get(key: Buffer | string, opts: AbortOptions = {}): Promise<Buffer | null> {
    this.#running()
    return getImmutable(this.#c, key, opts)
  }

  /**
   * Stores a mutable value signed by `identity` under SHA-256(public key || salt): `seq` (default
   * the highest found + 1) must be higher than the stored one; with `cas` only over that seq.
   * @throws ERR_DECCOM_INVALID_ARGUMENT, ERR_DECCOM_DHT_CAS_MISMATCH, ERR_DECCOM_DHT_PUT_FAILED
   */
  async putMutable(identity: Identity, value: Uint8Array, opts: PutMutableOptions = {}): Promise<PutMutableResult> {
    this.#running()
    const r = await putMutable(this.#c, identity, value, opts)
    const seq = r.seq
    this.#own(r.key, () => putMutable(this.#c, identity, value, { salt: opts.salt, seq }))
    return r
  }

  /** The mutable value of `publicKey` (and `salt`) with the highest seq, verified, or null. */
  getMutable(publicKey: Uint8Array, opts: GetMutableOptions = {}): Promise<MutableValue | null> {
    this.#running()
    return getMutable(this.#c, publicKey, opts)
  }

  /**
   * @internal Offered by the Stack when this layer sends straight through a native socket and
   * receives through `via` (Kademlia) straight from it: the socket then answers GETs itself, with
   * this layer's server and `via`'s routing table (see `UdpTransport.attachDhtResponder`). Only
   * on the real clock (the server's time follows the layer's clock).
   */
  attachNativeResponder(via: object, socket: object): boolean {
    const table = (via as { nativeTable?: () => unknown }).nativeTable?.()
    const udp = socket as Partial<NativeDhtSocket>
    if (!this.#server || !table || this.#c.clock !== realClock || typeof udp.attachDhtResponder !== 'function') return false
    if (!udp.attachDhtResponder(this.#server, table, TAG_DHT, REPLY_NODES, this.#c.clock.now())) return false
    this.#native = udp as NativeDhtSocket
    return true
  }

  override stats(): Record<string, number> {
    const s = this.#server?.stats()
    const counters = { ...this.counters }
    // What the socket answered without calling this layer counts as this layer's.
    for (const [k, v] of Object.entries(this.#native?.dhtResponderStats() ?? {})) counters[k] = (counters[k] ?? 0) + v
    return {
      ...counters,
      stored_records: s?.records ?? 0,
      stored_topics: s?.topics ?? 0,
      topic_subscribers: s?.subscribers ?? 0,
      pending_requests: this.#c.pending.size,
      joined_topics: this.#topics.size,
    }
  }

  #own(key: Buffer, put: () => Promise<unknown>): void {
    const hex = key.toString('hex')
    this.#owned.delete(hex)
    if (this.#owned.size >= MAX_OWNED) this.#owned.delete(this.#owned.keys().next().value as string)
    this.#owned.set(hex, put)
  }

  /** The announce records of `topic` this node stores, through its own server (no datagram). */
  #local(topic: Buffer, onRecords: (m: Answer) => void): void {
    // Most nodes store nothing for a topic they join: no request to build, answer and decode.
    if (!this.#server || this.#server.topicLen(topic) === 0) return
    for (let offset = 0, pages = 0; this.#server && pages < 16; pages++) {
      const req = native.dhtEncodeGet(0, 0, KIND_TOPIC, topic, NO_TOKEN, offset, 1400)
      const h = this.#server.handle(req, LOCAL, this.#nodes.subarray(0, 0), this.#c.clock.now())
      if (!h.reply) return
      const m = new Answer(h.reply)
      if (m.peerCount > 0) onRecords(m)
      offset += m.peerCount + m.badRecords
      if (m.peerCount + m.badRecords === 0 || m.total <= offset) return
    }
  }

  #running(): void {
    if (!this.#c.running) throw new DeccomError(ErrorCode.CLOSED, 'The DHT layer is not running (not started, or stopped)')
  }

  // ---- datagrams --------------------------------------------------------------------------

  /**
   * A datagram from the layer below: this layer's tag is handled (requests answered by the native
   * server, answers matched to their requests, NOTIFYs given to the joined topic); the rest passed up.
   */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== TAG_DHT) return this.upper.onMessage(source, data, tag)
    const c = this.#c
    if (!c.running || !this.#server) return this.count('dropped_not_running')
    const from = source instanceof Peer ? source.address : source
    this.count('received')
    const type = data.length >= 2 ? data[1]! : 0
    if (type === REPLY || type === ACK || type === NOTIFY) return this.#answer(from, data, type)
    // A GET's answer lists the nodes closest to its key that we know, the requester left out.
    const n = type === GET && data.length >= 43 ? (this.lower.closestRows(data.subarray(11, 43), REPLY_NODES, from, this.#nodes) as number) : 0
    const nodes = this.#nodes.subarray(0, 50 * n)
    const h = this.#server.handle(data, from.raw, nodes, c.clock.now())
    this.count(h.event)
    if (h.event === 'stored_announce' && type === ANNOUNCE) {
      // A topic this node joined: it meets the announcer it stores itself.
      const set = this.#topics.get(data.toString('hex', 26, 58))
      if (set) {
        const m = new Answer(data)
        for (const t of set) t.onRecords(m)
      }
    }
    if (h.event.startsWith('dropped_malformed')) this.count('dropped_malformed')
    if (h.reply) this.sendControl(from, h.reply, 'replies_sent')
    if (h.notify && h.notifyTo) {
      for (let i = 0; i + 18 <= h.notifyTo.length; i += 18) {
        try {
          this.sendControl(fromRawAddress(h.notifyTo.subarray(i, i + 18)), h.notify, 'notifies_sent')
        } catch {
          this.count('dropped_bad_address')
        }
      }
    }
  }

  #answer(from: Address, data: Buffer, type: number): void {
    const c = this.#c
    const m = new Answer(data)
    if (m.kind === 0) {
      this.count('dropped_malformed')
      return this.count(`dropped_malformed_${m.error}`)
    }
    if (type === NOTIFY) {
      const set = this.#topics.get(m.key.toString('hex'))
      if (!set) return this.count('dropped_notify_not_joined')
      if (m.badRecords > 0) return this.count('dropped_bad_records', m.badRecords)
      this.count('notifies_received')
      for (const t of set) t.onRecords(m)
      return
    }
    const p = c.match(m, from, type === REPLY ? GET : ACK)
    if (!p) return this.count('dropped_unsolicited')
    p.cb(m)
  }
}
