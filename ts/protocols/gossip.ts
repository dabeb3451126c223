/**
 * Gossip — push/pull exchange of peer records, liveness pings, and `findPeer` by flooding
 * (wire format: docs/wire.md#gossip-tag-8).
 *
 * Every `interval` ms the layer sends EXCHANGE (its record and up to `k` random records it knows) to
 * `fanout` random known peers (the bootstrap addresses until it knows someone); the receiver merges
 * them and answers EXCHANGE_REPLY with up to `k` random records of its own. Known peers are pinged
 * every `pingInterval` ms; after `misses` unanswered pings in a row (no datagram of any kind from
 * them meanwhile) they are forgotten and `onDisconnected` is emitted. A peer that names itself in
 * a message from its own address (or answers a ping) is connected: `onConnected`.
 * `findPeer(id)` floods FIND to `fanout` random peers with a hop limit; each node forwards a query
 * id once (bounded seen-set); a node that knows the target answers FOUND straight to the origin.
 *
 * ## Wire format (tag {@link TAG_GOSSIP}; records use the checked peer-record codec)
 * | type | body |
 * |------|------|
 * | 1 EXCHANGE | record list (below), then zero padding up to `padTo` bytes |
 * | 2 EXCHANGE_REPLY | record list |
 * | 3 PING, 4 PONG | u32 id |
 * | 5 FIND | u32 query id hi, u32 lo, u8 hops left, 32-byte target, origin record (u16 len + bytes) |
 * | 6 FOUND | u32 query id hi, u32 lo, record (u16 len + bytes) |
 * A record list is: u8 count (<= 64), then `count` × (u16 length, record); the first record is the
 * sender's. **No amplification**: a reply is never larger than its request (EXCHANGE is padded so
 * that the reply can carry about k records; PONG = PING; FOUND goes to the origin only once per
 * query and is about as large as the FIND that carried the origin's record), and sources that are
 * not known peers get replies within a rate per prefix. A learned record is pinged at once; only a
 * peer that answered (a PONG with our ping id, or an EXCHANGE_REPLY) gets EXCHANGEs and FINDs and
 * has its record passed on, so a record naming a victim costs the victim only pings. Malformed datagrams,
 * unsolicited replies and records whose address is not the sender's are dropped and counted.
 * Byte layout and test vectors: docs/wire.md#gossip-tag-8; every datagram is encoded and decoded by
 * ts/wire/gossip.ts (malformed ones, trailing bytes included, are dropped: `dropped_malformed`).
 */
import { JoinGate } from './join-gate'
import { randomBytes } from 'node:crypto'
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode, abortError } from '../errors'
import type { Identity } from '../identity'
import { Peer, type PeerRecord, encodePeerRecord } from '../peer'
import { type PeerListener, PeerListeners } from '../peer-listeners'
import { type LayerLog, silentLog } from '../log'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { DiscoveryErrorCode, toId } from './kademlia'
import { MAX_LIST, REPLY, decodeGossip, decodeList, encodeExchange, encodeFind, encodeFound, encodeGossipPing, encodeList, encodeReply } from '../wire/gossip'
import { ReplyLimiter } from './reply-limit'
import { cryptoRandom } from '../layer-random'

export { decodeList, encodeList }

/** Tag of Gossip datagrams. */
export const TAG_GOSSIP = 8
/** A Gossip PING with its tag byte. */
const PING_DATAGRAM_LEN = 6

/** Options of {@link Gossip}. */
export interface GossipOptions {
  /** Addresses of nodes to join through (their ids need not be known). */
  bootstrap?: AddressLike[]
  /** ms between exchanges (default 1000). */
  interval?: number
  /** Peers per exchange round / per flooded FIND (default 3). */
  fanout?: number
  /** Records per message (default 20). */
  k?: number
  /** Most peers remembered (default 1000). */
  maxPeers?: number
  /** ms between liveness pings of each peer (default 5000). */
  pingInterval?: number
  /** Unanswered pings before a peer is forgotten (default 3). */
  misses?: number
  /** Hop limit of flooded FINDs (default 6). */
  hopLimit?: number
  /** Query ids remembered for duplicate suppression (default 4096). */
  seenSize?: number
  /** EXCHANGE padding (default 1200). */
  padTo?: number
  /** Default findPeer timeout, ms (default 5000). */
  findTimeout?: number
  /** Seed of the layer's random choices (default: from the OS). */
  seed?: number
}

/** @internal xorshift32 */
export function makeRng(seed?: number): () => number {
  let x = (seed ?? randomBytes(4).readUInt32LE(0)) >>> 0 || 0x9e3779b9
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x
  }
}

/** @internal `n` distinct random items of `xs`. */
export function sample<T>(xs: T[], n: number, rand: () => number): T[] {
  const a = [...xs]
  const out: T[] = []
  while (out.length < n && a.length > 0) out.push(a.splice(rand() % a.length, 1)[0])
  return out
}

interface Known {
  peer: Peer
  record: Buffer
  missed: number
  awaiting: boolean
  connected: boolean
  /**
   * It answered us from its address (a PONG echoing our last ping id, or an EXCHANGE_REPLY): only
   * then does it get padded EXCHANGEs and FINDs, and is its record passed on. A record anyone can
   * make (it may name a victim) costs its address only pings until then.
   */
  answered: boolean
  /** Id of the last ping we sent it. */
  pingId: number
}

interface Find {
  target: string
  resolve: (p: Peer) => void
  reject: (e: Error) => void
  timer: TimerHandle
}

export class Gossip extends Protocol {
  static override bindTo = ['send', 'localAddress']
  static override bindFrom = ['onMessage']
  static override provides = ['findPeer', 'getPeer', 'peers']
  static override emits = ['onMessage', 'onConnected', 'onDisconnected']

  readonly name = 'gossip'
  override readonly tag = TAG_GOSSIP

  readonly #o: Required<Omit<GossipOptions, 'bootstrap' | 'seed'>>
  readonly #bootstrap: Address[]
  #rand: () => number
  readonly #seed: number | undefined
  readonly #known = new Map<string, Known>()
  readonly #byAddr = new Map<Address, Known>()
  readonly #seen = new Set<string>()
  readonly #finds = new Map<string, Find>()
  readonly #listeners = new PeerListeners<'connected' | 'disconnected'>((name) => this.count(name))
  readonly #exchanges = new Set<Address>()
  #clock: Clock | null = null
  #log: LayerLog = silentLog
  /** Whether a peer has connected yet (the log reports the first as the join). */
  #joined = false
  /** Answers per source prefix (IPv4 /24, IPv6 /48): a flood of spoofed requests reflects a bounded number. */
  readonly #replies = new ReplyLimiter()
  #timer: TimerHandle | null = null
  #pingTimer: TimerHandle | null = null
  #self!: Address
  #selfHex = ''
  #record!: Buffer

  readonly #gate = new JoinGate()

  constructor(opts: GossipOptions = {}) {
    super()
    this.#bootstrap = (opts.bootstrap ?? []).map((a) => toAddress(a))
    if (this.#bootstrap.length === 0) this.#gate.open()
    this.#o = {
      interval: opts.interval ?? 1000,
      fanout: opts.fanout ?? 3,
      k: Math.min(opts.k ?? 20, MAX_LIST - 1),
      maxPeers: opts.maxPeers ?? 1000,
      pingInterval: opts.pingInterval ?? 5000,
      misses: opts.misses ?? 3,
      hopLimit: opts.hopLimit ?? 6,
      seenSize: opts.seenSize ?? 4096,
      padTo: opts.padTo ?? 1200,
      findTimeout: opts.findTimeout ?? 5000,
    }
    this.#seed = opts.seed
    this.#rand = makeRng(opts.seed ?? 0)
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx.clock
    this.#log = ctx.log
    // Without a seed option: the node's stream (the OS generator, or the simulation's seed).
    if (this.#seed === undefined) this.#rand = makeRng((ctx.random ?? cryptoRandom).u32())
    this.#self = this.lower.localAddress() as Address
    const id = ctx.identity as Identity
    this.#selfHex = id.idHex
    this.#record = encodePeerRecord({ publicIdentity: id.publicIdentity, address: this.#self })
    this.#timer = ctx.clock.setTimeout(this.#round, 0)
    this.#pingTimer = ctx.clock.setTimeout(this.#pingRound, this.#o.pingInterval)
  }

  /**
   * Resolves once this layer holds its first peer (at once when it was given nobody to contact):
   * `node.ready()` waits for it. Rejects with ERR_DECCOM_ABORTED, or ERR_DECCOM_CLOSED on stop.
   */
  ready(opts: { signal?: AbortSignal } = {}): Promise<void> {
    return this.#gate.wait(opts.signal)
  }

  override async stop(): Promise<void> {
    this.#gate.close(this.name)
    const c = this.#clock
    if (!c) return
    c.clearTimeout(this.#timer ?? undefined)
    c.clearTimeout(this.#pingTimer ?? undefined)
    this.#clock = null
    for (const f of this.#finds.values()) {
      c.clearTimeout(f.timer)
      f.reject(new DeccomError(ErrorCode.CLOSED, 'The Gossip layer stopped'))
    }
    this.#finds.clear()
  }

  /** Listen to peers being learned (`connected`) or forgotten (`disconnected`). */
  on(event: 'connected' | 'disconnected', fn: PeerListener): this {
    this.#listeners.add(event, fn)
    return this
  }

  /** Stop listening (see {@link on}). */
  off(event: 'connected' | 'disconnected', fn: PeerListener): this {
    this.#listeners.delete(event, fn)
    return this
  }

  /** Known peers (learned directly or from other peers' records). */
  peers(): Peer[] {
    return [...this.#known.values()].map((k) => k.peer)
  }

  /** The known peer with node id `id` (32 bytes or 64 hex digits), or undefined. */
  getPeer(id: Buffer | string): Peer | undefined {
    return this.#known.get(toId(id).toString('hex'))?.peer
  }

  /**
   * The peer with this id: known already, or found by flooding. Aborting `opts.signal` rejects with
   * ERR_DECCOM_ABORTED (when aborted already, before anything is sent).
   */
  findPeer(id: Buffer | string, opts: { timeout?: number; signal?: AbortSignal } = {}): Promise<Peer> {
    if (opts.signal?.aborted) return Promise.reject(abortError(opts.signal))
    return new Promise((resolve, reject) => {
      const target = toId(id)
      const hex = target.toString('hex')
      const k = this.#known.get(hex)
      if (k) return resolve(k.peer)
      const clock = this.#clock
      if (!clock) return reject(new DeccomError(ErrorCode.CLOSED, 'The Gossip layer is not running'))
      const hi = this.#rand()
      const lo = this.#rand()
      const qid = `${hi}:${lo}`
      const done = (): void => {
        this.#finds.delete(qid)
        clock.clearTimeout(f.timer)
        opts.signal?.removeEventListener('abort', onAbort)
      }
      const onAbort = (): void => {
        done()
        reject(abortError(opts.signal!))
      }
      const f: Find = {
        target: hex,
        resolve: (p) => {
          done()
          resolve(p)
        },
        reject: (e) => {
          done()
          reject(e)
        },
        timer: clock.setTimeout(() => f.reject(new DeccomError(DiscoveryErrorCode.PEER_NOT_FOUND, 'No answer to the flooded FIND in time')), opts.timeout ?? this.#o.findTimeout),
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      this.#finds.set(qid, f)
      this.#remember(qid)
      this.count('finds')
      const msg = this.#findMsg(hi, lo, this.#o.hopLimit, target, this.#record)
      for (const k2 of sample([...this.#known.values()], this.#o.fanout, this.#rand)) this.sendControl(k2.peer.address, msg)
    })
  }

  /** A datagram from the layer below: handles this layer's tag, passes the rest up. */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    // A secure layer below (Noise) reports the sender as a Peer; the address is what we match on.
    const from = source instanceof Peer ? source.address : source
    const k = this.#byAddr.get(from)
    if (k) {
      k.missed = 0
      k.awaiting = false
    }
    if (tag !== TAG_GOSSIP) return this.upper.onMessage(source instanceof Peer ? source : k?.peer ?? from, data, tag)
    if (!this.#clock) return
    this.count('received')
    // A reply nobody asked for is dropped on its type byte alone, before it is decoded.
    if (data[0] === REPLY && !this.#exchanges.delete(from)) return this.count('dropped_unsolicited')
    const m = decodeGossip(data)
    if (m === null) return this.count('dropped_malformed')
    switch (m.type) {
      case 'EXCHANGE':
      case 'EXCHANGE_REPLY': {
        const records = m.decoded
        if (records.length === 0 || records[0].address !== from) return this.count('dropped_address_mismatch')
        const senderKnown = this.#known.has(records[0].id.toString('hex'))
        records.forEach((r, i) => this.#learn(r, i === 0))
        if (m.type === 'EXCHANGE_REPLY') this.#answered(this.#byAddr.get(from))
        if (m.type === 'EXCHANGE') {
          if (!k && !this.#replies.allow(from, this.#clock.now())) return this.count('dropped_reply_rate')
          // A new sender was just pinged (6 bytes with the tag): the reply and that ping fit the EXCHANGE.
          this.sendControl(from, encodeReply([this.#record, ...this.#randomRecords(from)], data.length - (senderKnown ? 0 : PING_DATAGRAM_LEN)))
        }
        return
      }
      case 'PING':
        if (!k && !this.#replies.allow(from, this.#clock.now())) return this.count('dropped_reply_rate')
        return void this.sendControl(from, encodeGossipPing('PONG', m.id))
      case 'PONG':
        if (!k) return this.count('dropped_unsolicited')
        if (m.id === k.pingId) this.#answered(k)
        this.#connected(k)
        return
      case 'FIND':
        return this.#onFind(from, m.queryHi, m.queryLo, m.hops, m.target, m.origin, m.decoded)
      case 'FOUND': {
        const f = this.#finds.get(`${m.queryHi}:${m.queryLo}`)
        if (!f) return this.count('dropped_unsolicited')
        const r = m.decoded
        if (r.id.toString('hex') !== f.target) return this.count('dropped_wrong_record')
        this.count('finds_answered')
        this.#learn(r, false)
        return f.resolve(this.#known.get(f.target)?.peer ?? new Peer(r.address, r.id, r.publicIdentity))
      }
    }
  }

  #onFind(from: Address, hi: number, lo: number, hops: number, target: Buffer, originRecord: Buffer, origin: PeerRecord): void {
    const qid = `${hi}:${lo}`
    if (this.#seen.has(qid)) return this.count('dropped_duplicate')
    this.#remember(qid)
    const hex = target.toString('hex')
    const k = hex === this.#selfHex ? null : this.#known.get(hex)
    if (hex === this.#selfHex || k) {
      const rec = k ? k.record : this.#record
      const reply = encodeFound(hi, lo, rec)
      // The origin's address comes from its record, which anyone can make: limit it like a reply.
      if (!this.#replies.allow(origin.address, this.#clock?.now() ?? 0)) return this.count('dropped_reply_rate')
      this.count('found_sent')
      return void this.sendControl(origin.address, reply)
    }
    if (hops === 0) return this.count('find_hop_limit')
    const fwd = encodeFind(hi, lo, hops - 1, target, originRecord)
    for (const p of sample([...this.#known.values()].filter((x) => x.answered && x.peer.address !== from && x.peer.address !== origin.address), this.#o.fanout, this.#rand)) {
      this.sendControl(p.peer.address, fwd)
    }
    this.count('finds_forwarded')
  }

  #findMsg(hi: number, lo: number, hops: number, target: Buffer, origin: Buffer): Buffer {
    return encodeFind(hi, lo, hops, target, origin)
  }

  #learn(r: PeerRecord, direct: boolean): void {
    const hex = r.id.toString('hex')
    if (hex === this.#selfHex) return
    let k = this.#known.get(hex)
    if (!k) {
      if (this.#known.size >= this.#o.maxPeers) return this.count('dropped_peers_full')
      k = { peer: new Peer(r.address, r.id, r.publicIdentity), record: encodePeerRecord({ publicIdentity: r.publicIdentity, address: r.address }), missed: 0, awaiting: false, connected: false, answered: false, pingId: 0 }
      this.#known.set(hex, k)
      this.#byAddr.set(r.address, k)
      this.count('peers_learned')
      // Validate the address at once: a 5-byte PING, less than the record that named it.
      this.#ping(k)
    }
    if (direct) this.#connected(k)
  }

  #answered(k: Known | undefined): void {
    if (k && !k.answered) {
      k.answered = true
      this.count('peers_validated')
    }
  }

  #ping(k: Known): void {
    k.pingId = this.#rand()
    k.awaiting = true
    this.sendControl(k.peer.address, encodeGossipPing('PING', k.pingId))
  }

  #connected(k: Known): void {
    k.missed = 0
    k.awaiting = false
    if (k.connected) return
    k.connected = true
    this.#log(this.#joined ? 'peer %s connected at %s' : 'joined: first peer %s at %s', k.peer.id!.toString('hex', 0, 4), k.peer.address.key)
    this.#joined = true
    this.#gate.open()
    this.upper.onConnected(k.peer)
    this.#listeners.emit('connected', k.peer)
  }

  #randomRecords(except: Address): Buffer[] {
    return sample([...this.#known.values()].filter((k) => k.answered && k.peer.address !== except), this.#o.k, this.#rand).map((k) => k.record)
  }

  readonly #round = (): void => {
    const clock = this.#clock
    if (!clock) return
    this.#exchanges.clear() // replies to the previous round that have not arrived yet are late
    const answered = [...this.#known.values()].filter((k) => k.answered)
    const targets = answered.length > 0 ? sample(answered, this.#o.fanout, this.#rand).map((k) => k.peer.address) : this.#bootstrap.filter((a) => a !== this.#self)
    for (const to of targets) {
      // Padding must not be read as records: the list says how many there are.
      const msg = encodeExchange([this.#record, ...this.#randomRecords(to)], this.#o.padTo)
      this.#exchanges.add(to)
      this.sendControl(to, msg)
    }
    this.count('rounds')
    this.#timer = clock.setTimeout(this.#round, this.#o.interval)
  }

  readonly #pingRound = (): void => {
    const clock = this.#clock
    if (!clock) return
    for (const [hex, k] of [...this.#known]) {
      if (k.awaiting && ++k.missed >= this.#o.misses) {
        this.#known.delete(hex)
        if (this.#byAddr.get(k.peer.address) === k) this.#byAddr.delete(k.peer.address)
        this.count('peers_lost')
        this.#log('peer %s at %s lost: %d pings unanswered', k.peer.id!.toString('hex', 0, 4), k.peer.address.key, k.missed)
        if (k.connected) {
          this.upper.onDisconnected(k.peer)
          this.#listeners.emit('disconnected', k.peer)
        }
        continue
      }
      this.#ping(k)
    }
    this.#pingTimer = clock.setTimeout(this.#pingRound, this.#o.pingInterval)
  }

  #remember(qid: string): void {
    if (this.#seen.size >= this.#o.seenSize) this.#seen.delete(this.#seen.values().next().value as string)
    this.#seen.add(qid)
  }

}
