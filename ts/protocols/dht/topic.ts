/**
 * DHT topics: `dht.join(topic)` looks the topic up (records of its announcers from the k closest
 * nodes) and announces us there with a signed record; both are repeated while joined. A storer
 * that stores a new announcer tells the topic's recent lookers (NOTIFY), so joiners that looked
 * up before others announced meet them without waiting for the next round.
 */
import { EventEmitter } from 'node:events'
import type { Address } from '../../address'
import { fromRawAddress } from '../../address'
import type { TimerHandle } from '../../clock'
import { DeccomError, ErrorCode, abortError } from '../../errors'
import type { Identity } from '../../identity'
import { native } from '../../native'
import { Peer } from '../../peer'
import { ACK, ANNOUNCE, type Decoded, type DhtCore, KIND_TOPIC, NO_TOKEN, type QueryNode } from './core'
import { sameId } from '../kademlia/id-map'

/** Options of `join`. */
export interface JoinOptions {
  /** Store a record of this node at the topic, so others meet it (default true). */
  announce?: boolean
  /** Look the topic up, to meet the others (default true). */
  lookup?: boolean
  /** Node.join: connect to every peer met (the node with the smaller id dials) and emit 'connection'. */
  connect?: boolean
  /** Leaves the topic when aborted. */
  signal?: AbortSignal
}

/** Events of a {@link Topic} (an EventEmitter): the name and the listener's arguments. */
export interface TopicEvents {
  /** A peer announced on the topic (each once, verified: its record is signed by its identity). */
  peer: [peer: Peer]
  /** An error that belongs to no call (only emitted when someone listens). */
  error: [err: Error]
}

/** What the layer gives a Topic. */
export interface TopicHost {
  core: DhtCore
  identity: Identity
  nextSeq(): number
  count(name: string, n?: number): void
  /** Delivers the announce records this node itself stores for `topic` to `onRecords`. */
  local(topic: Buffer, onRecords: (m: Decoded) => void): void
  removeTopic(t: Topic): void
}

/** A joined topic (see `Dht.join`). */
export class Topic extends EventEmitter<TopicEvents> {
  /** The topic's 32-byte key (given to `join` as a Buffer or 64 hex digits). */
  readonly topic: Buffer
  readonly #host: TopicHost
  readonly #opts: Required<Omit<JoinOptions, 'signal' | 'connect'>>
  readonly #peers = new Map<string, Peer>()
  /** Storers that accepted our record (to withdraw it on leave). */
  #storers = new Map<string, Address>()
  #timer: TimerHandle | null = null
  #left = false
  #flushed: Promise<void>
  #onAbort: (() => void) | null = null
  #signal: AbortSignal | undefined

  /** @internal */
  constructor(host: TopicHost, topic: Buffer, opts: JoinOptions) {
    super()
    this.#host = host
    this.topic = topic
    this.#opts = { announce: opts.announce ?? true, lookup: opts.lookup ?? true }
    this.#flushed = this.#round(true)
    // The next round is due an interval after this one ended, whatever its outcome.
    const next = (): void => this.#schedule()
    this.#flushed.then(next, next)
    if (opts.signal) {
      this.#signal = opts.signal
      this.#onAbort = () => void this.leave()
      opts.signal.addEventListener('abort', this.#onAbort, { once: true })
    }
  }

  /** The peers met so far (verified announce records; never this node). */
  peers(): Peer[] {
    return [...this.#peers.values()]
  }

  /** Resolves when the first lookup is done and the first announce was stored (or refused). */
  flushed(): Promise<void> {
    return this.#flushed
  }

  /** True after `leave()`. */
  get left(): boolean {
    return this.#left
  }

  /** Stops refreshing and withdraws our record from the nodes that stored it. */
  async leave(): Promise<void> {
    if (this.#left) return
    this.#left = true
    const core = this.#host.core
    core.clock.clearTimeout(this.#timer ?? undefined)
    if (this.#onAbort) this.#signal!.removeEventListener('abort', this.#onAbort)
    this.#host.removeTopic(this)
    if (!core.running || !this.#opts.announce) return
    const seq = this.#host.nextSeq()
    await Promise.all([...this.#storers.values()].map((a) => this.#announce(a, core.observed.get(a.key), seq, 0)))
    this.#storers.clear()
  }

  /** @internal A NOTIFY, or the records of a REPLY, for this topic. */
  onRecords(m: Decoded): void {
    if (this.#left) return
    const n = m.peerCount
    if (n === 0) return
    const ids = m.peerIds
    for (let i = 0; i < n; i++) {
      const hex = ids.toString('hex', 32 * i, 32 * i + 32)
      if (sameId(this.#host.core.selfId, ids, 32 * i) || this.#peers.has(hex)) continue
      let address: Address
      try {
        address = fromRawAddress(m.peerAddr(i))
      } catch {
        this.#host.count('dropped_bad_address')
        continue
      }
      // The ids are the answer's own buffer; the identity is a view of the datagram: copied.
      const peer = new Peer(address, ids.subarray(32 * i, 32 * i + 32), Buffer.from(m.peerIdentity(i)))
      this.#peers.set(hex, peer)
      this.#host.count('topic_peers_met')
      try {
        this.emit('peer', peer)
      } catch (e) {
        if (this.listenerCount('error') > 0) this.emit('error', e as Error)
        else queueMicrotask(() => {
          throw e
        })
      }
    }
  }

  #schedule(): void {
    const core = this.#host.core
    if (this.#left || !core.running) return
    const every = Math.min(core.lookupInterval, core.announceTtl / 2)
    this.#timer = core.clock.setTimeout(() => {
      if (this.#left || !core.running) return
      void this.#round().catch(() => {})
      this.#schedule()
    }, every)
  }

  /** One lookup (records come in through onRecords) and one announce to the k closest nodes. */
  async #round(first = false): Promise<void> {
    const core = this.#host.core
    if (!core.running) throw new DeccomError(ErrorCode.CLOSED, 'The DHT layer is not running')
    const take = (m: Decoded): void => {
      if (this.#opts.lookup) this.onRecords(m)
    }
    const query = core.query(KIND_TOPIC, this.topic, take)
    // The records this node stores itself: once the GETs left, and after join() returned, so that
    // a 'peer' listener added right after join() hears of them too.
    queueMicrotask(() => {
      if (!this.#left && core.running) this.#host.local(this.topic, take)
    })
    const r = await query
    if (this.#left) return
    if (this.#opts.announce) {
      const seq = this.#host.nextSeq()
      const ttl = Math.max(1, Math.round(core.announceTtl / 1000))
      const results = await Promise.all(r.closest.map((n: QueryNode) => this.#announce(n.address, core.observed.get(n.address.key), seq, ttl)))
      this.#host.count('announces_stored', results.filter(Boolean).length)
    }
    // The storers now tell us of every new announcer (our ANNOUNCE, or a GET with their token,
    // made us a looker there); one more GET to each returns whoever was stored between our
    // first GET and that moment. Together nothing is missed until the next round.
    if (first && this.#opts.lookup && !this.#left) {
      await Promise.all(r.closest.map((n: QueryNode) => new Promise<void>((resolve) => core.pages(n.address, this.topic, 0, 0, take, resolve))))
      this.#host.count('topic_requeries')
    }
    if (this.#signal?.aborted) throw abortError(this.#signal)
  }

  /** ANNOUNCE to `to` of our record at the address `to` sees us at; true when stored. */
  #announce(to: Address, observed: Buffer | undefined, seq: number, ttl: number): Promise<boolean> {
    const core = this.#host.core
    const token = core.tokenOf(to)
    if (!token || !observed) return Promise.resolve(false)
    const id = this.#host.identity
    const sig = id.sign(native.dhtAnnounceMessage(this.topic, observed, seq, ttl))
    return new Promise((resolve) => {
      core.request(to, ACK, (hi, lo) => native.dhtEncodeAnnounce(hi, lo, token ?? NO_TOKEN, this.topic, id.publicIdentity, observed, seq, ttl, sig), (m) => {
        const ok = m !== null && m.status === 0
        if (m && !ok) this.#host.count(`announces_refused_${native.dhtStatusName(m.status ?? 255)}`)
        if (ok && ttl > 0) this.#storers.set(to.key, to)
        resolve(ok)
      })
      void ANNOUNCE
    })
  }
}
