/**
 * KeepAlive — liveness of registered peers (wire format: docs/wire.md#keepalive-tag-7).
 *
 * Every `interval` ms each registered peer that has sent nothing since the last ping counts one
 * miss and is pinged again; any datagram from the peer (of any layer: this layer binds from
 * `onMessage` and passes everything that is not its own up) resets its misses. After `misses`
 * consecutive misses — and not before — the peer is unregistered and `onDisconnected(peer)` is
 * emitted upward (also as `keepAlive.on('disconnected', fn)`).
 *
 * Peers are registered with `register(peerOrAddress)`; with `autoRegister` (default true) the
 * peers a discovery layer below reports as connected (its `onConnected` slot, e.g. Kademlia or
 * Gossip: this layer binds from `onConnected?`, optionally) are registered too. The event is passed
 * on upward (this layer emits `onConnected`), so a layer above can still take it.
 *
 * ## Wire format (tag {@link TAG_KEEPALIVE})
 * | bytes | ping                | pong                  |
 * |-------|---------------------|-----------------------|
 * | 0     | 0x01                | 0x02                  |
 * | 1..5  | ping id, u32 BE     | the ping's id, echoed |
 * A pong is as large as its ping (no amplification); a source that is not a registered peer gets
 * pongs only within a rate per source prefix (`dropped_reply_rate`). Anything else with this tag is dropped and
 * counted (`dropped_malformed`).
 * Byte layout and test vectors: docs/wire.md#keepalive-tag-7; every datagram is encoded and decoded by
 * ts/wire/keep-alive.ts.
 */
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import { Peer } from '../peer'
import { type PeerListener, PeerListeners } from '../peer-listeners'
import { type LayerLog, silentLog } from '../log'
import type { BindingsOf, LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { decodeKeepAlive, encodeKeepAlive } from '../wire/keep-alive'
import { ReplyLimiter } from './reply-limit'

/** Tag of keep-alive datagrams. */
export const TAG_KEEPALIVE = 7

const MAX_PEERS = 65_536

/** Options of {@link KeepAlive}. */
export interface KeepAliveOptions {
  /** Ping period in ms (default 5000). */
  interval?: number
  /** Consecutive missed pings before `onDisconnected` (default 3). */
  misses?: number
  /** Register the peers a discovery layer below reports as connected (default true). */
  autoRegister?: boolean
}

interface Watched {
  peer: Peer
  missed: number
  awaiting: boolean
}

/** Typed layer: `lower`/`upper` hold exactly these bindings (keep them in step with the statics). */
export class KeepAlive
  extends Protocol<{
    /** The binding it calls below. */
    lower: 'send'
    /** The slots it calls above. */
    upper: 'onMessage' | 'onDisconnected' | 'onConnected'
  }>
  implements BindingsOf<'onMessage' | 'onConnected' | 'register' | 'unregister'>
{
  static override bindTo = ['send']
  static override bindFrom = ['onMessage', 'onConnected?']
  static override provides = ['register', 'unregister']
  static override emits = ['onMessage', 'onDisconnected', 'onConnected']

  readonly name = 'keep-alive'
  override readonly tag = TAG_KEEPALIVE

  readonly #interval: number
  readonly #misses: number
  readonly #autoRegister: boolean
  /** Registered peers by `Address.key` (stable across intern-cache resets). */
  readonly #peers = new Map<string, Watched>()
  readonly #listeners = new PeerListeners<'disconnected'>((name) => this.count(name))
  #clock: Clock | null = null
  #log: LayerLog = silentLog
  #timer: TimerHandle | null = null
  #nextId = 1
  readonly #replies = new ReplyLimiter()

  constructor(opts: KeepAliveOptions = {}) {
    super()
    this.#interval = opts.interval ?? 5000
    this.#misses = opts.misses ?? 3
    this.#autoRegister = opts.autoRegister ?? true
    if (!(this.#interval > 0) || !Number.isFinite(this.#interval)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `interval must be > 0 ms, got ${this.#interval}`)
    if (!Number.isInteger(this.#misses) || this.#misses < 1) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `misses must be an integer >= 1, got ${this.#misses}`)
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx.clock
    this.#log = ctx.log
    this.#timer = ctx.clock.setTimeout(this.#tick, this.#interval)
  }

  /** A discovery layer below reports a connected peer: watch it (with `autoRegister`), and pass it up. */
  onConnected(peer: Peer): void {
    if (this.#autoRegister && this.#clock) this.register(peer)
    this.upper.onConnected(peer)
  }

  override async stop(): Promise<void> {
    this.#clock?.clearTimeout(this.#timer ?? undefined)
    this.#timer = null
    this.#clock = null
    this.#peers.clear()
  }

  /** Watch a peer (idempotent). */
  register(peer: Peer | AddressLike): void {
    const p = peer instanceof Peer ? peer : new Peer(toAddress(peer))
    const w = this.#peers.get(p.address.key)
    if (w) {
      if (p.id && !w.peer.id) w.peer = p
      return
    }
    if (this.#peers.size >= MAX_PEERS) return this.count('dropped_register_full')
    this.#peers.set(p.address.key, { peer: p, missed: 0, awaiting: false })
    this.count('registered')
  }

  /** Stop watching a peer. */
  unregister(peer: Peer | AddressLike): void {
    if (this.#peers.delete((peer instanceof Peer ? peer.address : toAddress(peer)).key)) this.count('unregistered')
  }

  /** The watched peers. */
  peers(): Peer[] {
    return [...this.#peers.values()].map((w) => w.peer)
  }

  /** Missed pings in a row of a watched peer, or undefined. */
  missedOf(peer: Peer | AddressLike): number | undefined {
    return this.#peers.get((peer instanceof Peer ? peer.address : toAddress(peer)).key)?.missed
  }

  /** Listen to watched peers that stopped answering (`disconnected`). */
  on(event: 'disconnected', fn: PeerListener): this {
    this.#listeners.add(event, fn)
    return this
  }

  /** Stop listening (see {@link on}). */
  off(event: 'disconnected', fn: PeerListener): this {
    this.#listeners.delete(event, fn)
    return this
  }

  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    // A secure layer below (Noise) reports the sender as a Peer; the address is what we match on.
    const from = source instanceof Peer ? source.address : source
    const w = this.#peers.get(from.key)
    if (w) {
      w.missed = 0
      w.awaiting = false
    }
    if (tag !== TAG_KEEPALIVE) return this.upper.onMessage(source, data, tag)
    const m = decodeKeepAlive(data)
    if (m === null) return this.count('dropped_malformed')
    if (m.type === 'PING') {
      // A registered peer always gets its PONG; others (any claimed source) within the prefix rate.
      if (!w && !this.#replies.allow(from, this.#clock?.now() ?? 0)) return this.count('dropped_reply_rate')
      this.count('pings_answered')
      this.sendControl(from, encodeKeepAlive({ type: 'PONG', id: m.id }))
    } else {
      this.count(w ? 'pongs_received' : 'dropped_unsolicited')
    }
  }

  readonly #tick = (): void => {
    const clock = this.#clock
    if (!clock) return
    for (const [addr, w] of [...this.#peers]) {
      if (w.awaiting) {
        w.missed++
        this.count('missed')
        if (w.missed >= this.#misses) {
          this.#peers.delete(addr)
          this.count('disconnected')
          this.#log('peer at %s disconnected: %d pings unanswered', w.peer.address.key, w.missed)
          this.upper.onDisconnected(w.peer)
          this.#listeners.emit('disconnected', w.peer)
          continue
        }
      }
      const ping = encodeKeepAlive({ type: 'PING', id: this.#nextId })
      this.#nextId = (this.#nextId + 1) >>> 0
      w.awaiting = true
      this.sendControl(addr, ping)
    }
    if (this.#clock) this.#timer = clock.setTimeout(this.#tick, this.#interval)
  }

}
