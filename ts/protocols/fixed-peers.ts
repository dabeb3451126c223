/**
 * FixedPeers — a static list of peers (wire format: docs/wire.md#fixedpeers-tag-6).
 *
 * On start the layer says HELLO (with its peer record) to every listed address, repeating every
 * `helloInterval` ms up to `helloRetries` times until that address answered; a HELLO from a listed
 * address is answered with HELLO_ACK. Either way the peer's id and identity become known:
 * `onConnected(peer)` is emitted upward (also `fixedPeers.on('connected', fn)`). On stop it sends
 * EXIT to every known peer; receivers emit `onDisconnected(peer)` and forget its id (a later
 * HELLO brings it back).
 *
 * Provides `sendToId(id, data)` (application data to the peer with that id; rejects with
 * ERR_DECCOM_PEER_NOT_FOUND if the id is not known), `broadcast(data)` (to every known peer),
 * `peers()` and `findPeer(id)`. Application data travels as ordinary tag-0 datagrams through the
 * layer below, so the receiver's application gets it as a normal message.
 *
 * ## Wire format (tag {@link TAG_FIXED})
 * | byte 0 | rest                              |
 * |--------|-----------------------------------|
 * | 1 HELLO | the sender's peer record         |
 * | 2 HELLO_ACK | the sender's peer record     |
 * | 3 EXIT | nothing                           |
 * Byte layout and test vectors: docs/wire.md#fixedpeers-tag-6; every datagram is encoded and decoded by
 * ts/wire/fixed-peers.ts (malformed ones, trailing bytes included, are dropped: `dropped_malformed`).
 * Records are decoded with the checked peer-record codec. Datagrams from addresses not in the list,
 * malformed ones, and records whose address is not the sender's are dropped and counted.
 */
import { JoinGate } from './join-gate'
import type { AbortOptions } from '../abort'
import { raceSignal, throwIfAborted } from '../abort'
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError } from '../errors'
import type { Identity } from '../identity'
import { Peer, encodePeerRecord } from '../peer'
import { type PeerListener, PeerListeners } from '../peer-listeners'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { TAG_APP } from './udp'
import { DiscoveryErrorCode, toId } from './kademlia'

/** Tag of FixedPeers datagrams. */
export const TAG_FIXED = 6

import { decodeFixedPeers, encodeFixedPeers } from '../wire/fixed-peers'
import { ReplyLimiter } from './reply-limit'

/** Options of {@link FixedPeers}. */
export interface FixedPeersOptions {
  /** The peers' addresses. */
  peers: AddressLike[]
  /** ms between HELLOs to a peer that has not answered (default 1000). */
  helloInterval?: number
  /** HELLOs after the first (default 10). */
  helloRetries?: number
}

export class FixedPeers extends Protocol {
  static override bindTo = ['send', 'localAddress']
  static override bindFrom = ['onMessage']
  static override provides = ['sendToId', 'broadcast', 'peers', 'findPeer']
  static override emits = ['onMessage', 'onConnected', 'onDisconnected']

  readonly name = 'fixed-peers'
  override readonly tag = TAG_FIXED

  readonly #list: Set<Address>
  readonly #helloInterval: number
  readonly #helloRetries: number
  readonly #known = new Map<Address, Peer>()
  readonly #byId = new Map<string, Peer>()
  readonly #listeners = new PeerListeners<'connected' | 'disconnected'>((name) => this.count(name))
  #clock: Clock | null = null
  /** Answers per source prefix (IPv4 /24, IPv6 /48): a flood of spoofed requests reflects a bounded number. */
  readonly #replies = new ReplyLimiter()
  #timer: TimerHandle | null = null
  #record: Buffer | null = null
  #self: Address | null = null
  #tries = 0

  readonly #gate = new JoinGate()

  constructor(opts: FixedPeersOptions) {
    super()
    this.#list = new Set((opts?.peers ?? []).map((a) => toAddress(a)))
    if (this.#list.size === 0) this.#gate.open()
    this.#helloInterval = opts?.helloInterval ?? 1000
    this.#helloRetries = opts?.helloRetries ?? 10
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx.clock
    this.#self = this.lower.localAddress() as Address
    this.#list.delete(this.#self)
    this.#record = encodePeerRecord({ publicIdentity: (ctx.identity as Identity).publicIdentity, address: this.#self })
    this.#hello()
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
    this.#timer = null
    this.#clock = null
    for (const addr of this.#known.keys()) this.sendControl(addr, encodeFixedPeers({ type: 'EXIT' }), 'exits_sent')
    this.#known.clear()
    this.#byId.clear()
  }

  /** Listen to peers answering (`connected`) or going silent (`disconnected`). */
  on(event: 'connected' | 'disconnected', fn: PeerListener): this {
    this.#listeners.add(event, fn)
    return this
  }

  /** Stop listening (see {@link on}). */
  off(event: 'connected' | 'disconnected', fn: PeerListener): this {
    this.#listeners.delete(event, fn)
    return this
  }

  /** Peers whose id is known (they answered or said HELLO). */
  peers(): Peer[] {
    return [...this.#known.values()]
  }

  /** The listed peer with this id. @throws ERR_DECCOM_PEER_NOT_FOUND, ERR_DECCOM_ABORTED (`opts.signal` aborted already) */
  async findPeer(id: Buffer | string, opts: AbortOptions = {}): Promise<Peer> {
    throwIfAborted(opts.signal)
    const p = this.#byId.get(toId(id).toString('hex'))
    if (!p) throw notFound(id)
    return p
  }

  /**
   * Application data to the peer with node id `id`. Aborting `opts.signal` rejects with
   * ERR_DECCOM_ABORTED at once (nothing is sent when it was aborted already; what the layer below
   * took already may still leave).
   */
  async sendToId(id: Buffer | string, data: Uint8Array, opts: AbortOptions = {}): Promise<void> {
    throwIfAborted(opts.signal)
    const p = this.#byId.get(toId(id).toString('hex'))
    if (!p) throw notFound(id)
    this.count('data_sent')
    await raceSignal(Promise.resolve(this.lower.send(p.address, data, TAG_APP)), opts.signal)
  }

  /**
   * Application data to every known peer; resolves when the layer below has taken every copy.
   * `opts.signal` as for {@link sendToId}.
   */
  async broadcast(data: Uint8Array, opts: AbortOptions = {}): Promise<void> {
    throwIfAborted(opts.signal)
    this.count('broadcasts')
    await raceSignal(Promise.all([...this.#known.keys()].map((a) => this.lower.send(a, data, TAG_APP))), opts.signal)
  }

  /** A datagram from the layer below: handles this layer's tag, passes the rest up. */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    // A secure layer below (Noise) reports the sender as a Peer; the address is what we match on.
    const from = source instanceof Peer ? source.address : source
    if (tag !== TAG_FIXED) return this.upper.onMessage(source instanceof Peer ? source : this.#known.get(from) ?? from, data, tag)
    if (!this.#list.has(from)) return this.count('dropped_unknown_peer')
    const m = decodeFixedPeers(data)
    if (m === null) return this.count('dropped_malformed')
    if (m.type === 'EXIT') {
      const p = this.#known.get(from)
      if (!p) return this.count('dropped_unsolicited')
      this.#known.delete(from)
      this.#byId.delete(p.id!.toString('hex'))
      this.count('exits_received')
      return this.#emit('disconnected', p)
    }
    const rec = m.decoded
    if (rec.address !== from) return this.count('dropped_address_mismatch')
    if (m.type === 'HELLO') {
      if (this.#replies.allow(from, this.#clock?.now() ?? 0)) this.sendControl(from, encodeFixedPeers({ type: 'HELLO_ACK', record: this.#record! }), 'acks_sent')
      else this.count('dropped_reply_rate')
    }
    if (this.#known.has(from)) return
    const p = new Peer(from, rec.id, rec.publicIdentity)
    this.#known.set(from, p)
    this.#byId.set(rec.id.toString('hex'), p)
    this.count('connected')
    this.#emit('connected', p)
  }

  #hello(): void {
    this.#timer = null
    if (!this.#clock) return
    let missing = 0
    for (const a of this.#list) {
      if (this.#known.has(a)) continue
      missing++
      this.sendControl(a, encodeFixedPeers({ type: 'HELLO', record: this.#record! }), 'hellos_sent')
    }
    if (missing > 0 && this.#tries++ < this.#helloRetries) this.#timer = this.#clock.setTimeout(() => this.#hello(), this.#helloInterval)
  }

  #emit(event: 'connected' | 'disconnected', p: Peer): void {
    if (event === 'connected') this.#gate.open()
    if (event === 'connected') this.upper.onConnected(p)
    else this.upper.onDisconnected(p)
    this.#listeners.emit(event, p)
  }

}

function notFound(id: Buffer | string): DeccomError {
  return new DeccomError(DiscoveryErrorCode.PEER_NOT_FOUND, `No listed peer has id ${typeof id === 'string' ? id.slice(0, 16) : Buffer.from(id).toString('hex').slice(0, 16)}…`)
}

