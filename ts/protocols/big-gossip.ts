/**
 * BigGossip — peer sampling (docs/discovery.md; wire format: docs/wire.md#biggossip-tag-5).
 *
 * Every `interval` ms the layer sends PULL to `pullFrom` random known peers (the bootstrap
 * addresses until it knows someone); each answers SAMPLE with up to `k` random records it knows.
 * For every record it did not know, the puller introduces itself with an unpadded PULL (its own
 * record, as large as an INTRO) so that the new peer learns it too, and answers with a SAMPLE that
 * proves its address. A peer that names itself in a message from its own address is connected
 * (`onConnected`, also `bigGossip.on('connected', fn)`).
 *
 * ## Wire format (tag {@link TAG_BIG_GOSSIP}; record lists as in Gossip)
 * | type | body |
 * |------|------|
 * | 1 PULL | record list holding the sender's record, then zero padding up to `padTo` bytes |
 * | 2 SAMPLE | record list: the sender's record, then up to k random records |
 * | 3 INTRO | record list holding the sender's record |
 * No amplification: SAMPLE is never larger than its PULL (the PULL's padding pays for it), and
 * an introduction (an unpadded PULL: our record, nothing more; INTRO is still understood) is sent
 * only to peers learned from a SAMPLE we asked for, once each. A peer that never
 * answered a PULL of ours (its record may name any address) is pulled once, within a budget per IP
 * and prefix, and forgotten if it does not answer; SAMPLEs pass on only records of peers that
 * answered. Sources that never answered get SAMPLEs within a rate per prefix. Malformed datagrams,
 * unsolicited SAMPLEs and records whose address is not the sender's are dropped and counted.
 * Byte layout and test vectors: docs/wire.md#biggossip-tag-5; every datagram is encoded and decoded by
 * ts/wire/big-gossip.ts (malformed ones, trailing bytes included, are dropped: `dropped_malformed`).
 */
import { JoinGate } from './join-gate'
import type { AbortOptions } from '../abort'
import { throwIfAborted } from '../abort'
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import type { Identity } from '../identity'
import { Peer, type PeerRecord, encodePeerRecord } from '../peer'
import { type PeerListener, PeerListeners } from '../peer-listeners'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { makeRng, sample } from './gossip'
import { DiscoveryErrorCode, toId } from './kademlia'
import { DeccomError } from '../errors'

/** Tag of BigGossip datagrams. */
export const TAG_BIG_GOSSIP = 5

import { SAMPLE, decodeBigGossip, encodePull, encodeSampleOrIntro } from '../wire/big-gossip'
import { KeyedBuckets, ReplyLimiter, prefixOf } from './reply-limit'

/** Options of {@link BigGossip}. */
export interface BigGossipOptions {
  /** Addresses of nodes to join through (their ids need not be known). */
  bootstrap?: AddressLike[]
  /** ms between pulls (default 1000). */
  interval?: number
  /** Peers pulled from per round (default 3). */
  pullFrom?: number
  /** Records per SAMPLE (default 20). */
  k?: number
  /** Most peers remembered (default 10 000). */
  maxPeers?: number
  /** PULL padding (default 1200). */
  padTo?: number
  /** Seed of the layer's random choices (default: from the OS). */
  seed?: number
}

interface Known {
  peer: Peer
  record: Buffer
  connected: boolean
  /** It answered a PULL of ours (its address is validated). */
  answered: boolean
  /** A PULL of ours to it is unanswered (it is forgotten if still so at its next turn). */
  tried: boolean
}

/**
 * PULLs to peers that never answered us (learned from records anyone can make: they may name a
 * victim) spend a token of the peer's IP and of its prefix (IPv4 /24, IPv6 /48), given back when
 * it answers; each such peer is pulled once and forgotten if it does not answer. Only records of
 * peers that answered us are passed on in SAMPLEs.
 */
const UNVALIDATED_BURST_IP = 16
const UNVALIDATED_BURST_PREFIX = 64
const UNVALIDATED_RATE = 1
/** A validation PULL (with its tag byte): room for the answerer's record (at most 332 bytes) in its SAMPLE. */
const VALIDATION_PULL_LEN = 341
/** A SAMPLE cut for a validation PULL keeps at least this much room (its sender's record and a few more). */
const MIN_SAMPLE_ROOM = 400

export class BigGossip extends Protocol {
  static override bindTo = ['send', 'localAddress']
  static override bindFrom = ['onMessage']
  static override provides = ['findPeer', 'getPeer', 'peers']
  static override emits = ['onMessage', 'onConnected', 'onDisconnected']

  readonly name = 'big-gossip'
  override readonly tag = TAG_BIG_GOSSIP

  readonly #bootstrap: Address[]
  readonly #interval: number
  readonly #pullFrom: number
  readonly #k: number
  readonly #maxPeers: number
  readonly #padTo: number
  readonly #rand: () => number
  readonly #known = new Map<string, Known>()
  readonly #byAddr = new Map<Address, Known>()
  readonly #pulls = new Set<Address>()
  readonly #listeners = new PeerListeners<'connected'>((name) => this.count(name))
  #clock: Clock | null = null
  /** Answers per source prefix (IPv4 /24, IPv6 /48): a flood of spoofed requests reflects a bounded number. */
  readonly #replies = new ReplyLimiter()
  readonly #ipBudget = new KeyedBuckets(UNVALIDATED_RATE, UNVALIDATED_BURST_IP)
  readonly #prefixBudget = new KeyedBuckets(UNVALIDATED_RATE, UNVALIDATED_BURST_PREFIX)
  #timer: TimerHandle | null = null
  #self!: Address
  #selfHex = ''
  #record!: Buffer

  readonly #gate = new JoinGate()

  constructor(opts: BigGossipOptions = {}) {
    super()
    this.#bootstrap = (opts.bootstrap ?? []).map((a) => toAddress(a))
    if (this.#bootstrap.length === 0) this.#gate.open()
    this.#interval = opts.interval ?? 1000
    this.#pullFrom = opts.pullFrom ?? 3
    this.#k = Math.min(opts.k ?? 20, 63)
    this.#maxPeers = opts.maxPeers ?? 10_000
    this.#padTo = opts.padTo ?? 1200
    this.#rand = makeRng(opts.seed)
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx.clock
    this.#self = this.lower.localAddress() as Address
    const id = ctx.identity as Identity
    this.#selfHex = id.idHex
    this.#record = encodePeerRecord({ publicIdentity: id.publicIdentity, address: this.#self })
    this.#timer = ctx.clock.setTimeout(this.#round, 0)
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
    this.#clock?.clearTimeout(this.#timer ?? undefined)
    this.#clock = null
  }

  /** Listen to peers being learned (`connected`). */
  on(event: 'connected', fn: PeerListener): this {
    this.#listeners.add(event, fn)
    return this
  }

  /** Stop listening (see {@link on}). */
  off(event: 'connected', fn: PeerListener): this {
    this.#listeners.delete(event, fn)
    return this
  }

  /** Known peers (learned directly or from other peers' samples). */
  peers(): Peer[] {
    return [...this.#known.values()].map((k) => k.peer)
  }

  /** The known peer with node id `id` (32 bytes or 64 hex digits), or undefined. */
  getPeer(id: Buffer | string): Peer | undefined {
    return this.#known.get(toId(id).toString('hex'))?.peer
  }

  /**
   * A known peer with this id (peer sampling does not search).
   * @throws ERR_DECCOM_PEER_NOT_FOUND, ERR_DECCOM_ABORTED (`opts.signal` aborted already)
   */
  async findPeer(id: Buffer | string, opts: AbortOptions = {}): Promise<Peer> {
    throwIfAborted(opts.signal)
    const p = this.getPeer(id)
    if (!p) throw new DeccomError(DiscoveryErrorCode.PEER_NOT_FOUND, 'This peer is not in the sample yet')
    return p
  }

  /** A datagram from the layer below: handles this layer's tag, passes the rest up. */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    // A secure layer below (Noise) reports the sender as a Peer; the address is what we match on.
    const from = source instanceof Peer ? source.address : source
    if (tag !== TAG_BIG_GOSSIP) return this.upper.onMessage(source instanceof Peer ? source : this.#byAddr.get(from)?.peer ?? from, data, tag)
    if (!this.#clock) return
    this.count('received')
    // A SAMPLE nobody asked for is dropped on its type byte alone, before it is decoded.
    if (data[0] === SAMPLE && !this.#pulls.delete(from)) return this.count('dropped_unsolicited')
    const m = decodeBigGossip(data)
    if (m === null) return this.count('dropped_malformed')
    const records = m.decoded
    if (records.length === 0 || records[0].address !== from) return this.count('dropped_address_mismatch')
    this.#learn(records[0], true)
    if (m.type === 'PULL') {
      const now = this.#clock.now()
      const k = this.#byAddr.get(from)
      if (!k?.answered && !this.#replies.allow(from, now)) return this.count('dropped_reply_rate')
      // A padded PULL from a peer that never answered us pays for a validation PULL back as well:
      // the SAMPLE and that PULL together are no larger than the PULL (1x).
      let room = data.length
      if (k && !k.answered && !k.tried && data.length >= VALIDATION_PULL_LEN + MIN_SAMPLE_ROOM && this.#spend(from, now)) {
        k.tried = true
        room -= VALIDATION_PULL_LEN
        this.#pulls.add(from)
        this.count('validation_pulls')
        this.sendControl(from, encodePull([this.#record], VALIDATION_PULL_LEN - 1))
      }
      const others = sample([...this.#known.values()].filter((x) => x.answered && x.peer.address !== from), this.#k, this.#rand).map((x) => x.record)
      this.count('samples_sent')
      this.sendControl(from, encodeSampleOrIntro('SAMPLE', [this.#record, ...others], room))
    } else if (m.type === 'SAMPLE') {
      const k = this.#byAddr.get(from)
      if (k && !k.answered) {
        k.answered = true
        k.tried = false
        this.#ipBudget.refund(from.host)
        this.#prefixBudget.refund(prefixOf(from))
      }
      for (const r of records.slice(1)) {
        if (this.#learn(r, false)) {
          // Introduce ourselves with an unpadded PULL (as large as an INTRO): the new peer learns
          // us, and its SAMPLE, which can hold no more than its own record, proves its address.
          const nk = this.#known.get(r.id.toString('hex'))
          if (nk) nk.tried = true
          this.#pulls.add(r.address)
          this.count('intros_sent')
          this.sendControl(r.address, encodePull([this.#record], 0))
        }
      }
    }
  }

  /** True if the record was new. */
  #learn(r: PeerRecord, direct: boolean): boolean {
    const hex = r.id.toString('hex')
    if (hex === this.#selfHex) return false
    let k = this.#known.get(hex)
    const fresh = !k
    if (!k) {
      if (this.#known.size >= this.#maxPeers) {
        this.count('dropped_peers_full')
        return false
      }
      k = { peer: new Peer(r.address, r.id, r.publicIdentity), record: encodePeerRecord({ publicIdentity: r.publicIdentity, address: r.address }), connected: false, answered: false, tried: false }
      this.#known.set(hex, k)
      this.#byAddr.set(r.address, k)
      this.count('peers_learned')
    }
    if (direct && !k.connected) {
      k.connected = true
      this.#gate.open()
      this.upper.onConnected(k.peer)
      this.#listeners.emit('connected', k.peer)
    }
    return fresh
  }

  readonly #round = (): void => {
    const clock = this.#clock
    if (!clock) return
    this.#pulls.clear()
    const targets = this.#known.size > 0 ? this.#pullTargets(clock.now()) : this.#bootstrap.filter((a) => a !== this.#self)
    const msg = encodePull([this.#record], this.#padTo)
    for (const to of targets) {
      this.#pulls.add(to)
      this.sendControl(to, msg)
    }
    this.count('rounds')
    this.#timer = clock.setTimeout(this.#round, this.#interval)
  }

  /** Up to `pullFrom` random known peers; one that never answered is pulled once, within the budget. */
  #pullTargets(now: number): Address[] {
    const out: Address[] = []
    for (const k of sample([...this.#known.values()], this.#pullFrom, this.#rand)) {
      const to = k.peer.address
      if (k.answered) {
        out.push(to)
        continue
      }
      if (k.tried) {
        this.#forget(k)
        continue
      }
      if (!this.#spend(to, now)) continue
      k.tried = true
      out.push(to)
    }
    return out
  }

  /** Takes a token of `to`'s IP and prefix for a PULL to a peer that never answered us. */
  #spend(to: Address, now: number): boolean {
    const prefix = prefixOf(to)
    if (!this.#ipBudget.has(to.host, now) || !this.#prefixBudget.has(prefix, now)) {
      this.count('dropped_unvalidated_budget')
      return false
    }
    this.#ipBudget.take(to.host, now)
    this.#prefixBudget.take(prefix, now)
    return true
  }

  #forget(k: Known): void {
    this.#known.delete(k.peer.id!.toString('hex'))
    if (this.#byAddr.get(k.peer.address) === k) this.#byAddr.delete(k.peer.address)
    this.count('peers_forgotten')
    if (k.connected) this.upper.onDisconnected(k.peer)
  }

}
