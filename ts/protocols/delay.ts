/**
 * Delay — a transparent test layer that adds latency, and optionally bandwidth-limited transfer
 * time, per peer pair from user functions, on send or on receive.
 *
 * ```ts
 * const delay = new Delay({
 *   latency: (from, to) => 50,              // ms, one way
 *   bandwidth: (from, to) => 125,           // bytes per ms (125 = 1 Mbit/s); omit for none
 *   on: 'send',
 * })
 * const node = await Node.create({ stack: [delay] })
 * ```
 *
 * Binds `send`, `localAddress` and `onMessage` of the layers below; provides `send` and emits
 * `onMessage`. With `on: 'send'` outgoing datagrams wait, with `on: 'receive'` incoming ones do;
 * `from`/`to` of the functions are this node's address and the peer's, in the direction of the
 * datagram. **The functions are called once per peer** — when the first datagram to (or from)
 * it passes — and their answer is kept for that peer, in JavaScript and in native mode alike
 * (the socket thread cannot call JavaScript per datagram). A link that changes over time is a
 * SimulatedNetwork `link` function's job, which is asked per datagram.
 *
 * Each peer's link is an instance of deccom's one impairment model (deccom-core `impair`, as
 * behind FaultyTransport and the SimulatedNetwork's links) with that latency and bandwidth and no
 * faults: a datagram of `n` bytes (payload + 1 tag byte) first waits until the earlier ones to
 * that peer are serialized, then takes `n / bandwidth` ms, then `latency` ms; it never overtakes
 * an earlier datagram of the same pair (Delay does not reorder: use FaultyTransport for that). A
 * datagram to a peer with neither latency nor bandwidth goes on at once. All queues together
 * hold at most `maxQueueBytes` (default 16 MiB); beyond it datagrams are
 * dropped (`dropped_queue`). Time comes from `ctx.clock`, so in a SimulatedNetwork the delays are
 * exact virtual milliseconds; with the real clock a datagram is never released before its time
 * (timers only fire late). One timer per peer with queued datagrams; `stop()` clears them all and
 * drops what is still queued (`dropped_closed`).
 *
 * Counters: delayed, passed (no delay), dropped_queue, dropped_closed, dropped_send_error (the
 * layer below refused a datagram released later), handler_errors; `stats()` adds queued_bytes.
 * The transport's own pings never reach a layer above it: `node.ping` RTTs do not include this
 * delay (measure with application messages). Being a JS layer on the datagram path, it puts the
 * layers above it on the JavaScript path.
 *
 * **Native mode.** When a native layer above asks for it (ReliableUdp does, to keep its fast
 * path) and this layer sits directly on a UdpTransport, the delay line runs inside the socket's
 * I/O thread instead (deccom-core `delay`, on the same model), and this layer only passes calls
 * through. The user functions are called once per peer there too; the transport's own pings are
 * delayed as well. Counters are in the transport's stats
 * (`delay_rx_*`, `delay_tx_*`); the `native` getter says which mode is in use.
 */
import type { Address } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { realClock } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { ImpairModel, verdict } from '../sim/impair'
import type { UdpTransport } from './udp'

/** Options of {@link Delay}. */
export interface DelayOptions {
  /** One-way latency in ms for a datagram from → to (negative or NaN counts as 0). */
  latency: (from: Address, to: Address) => number
  /** Bytes per ms for from → to; omitted, Infinity, ≤ 0 or NaN: no bandwidth limit. */
  bandwidth?: (from: Address, to: Address) => number
  /** Delay outgoing datagrams ('send', default) or incoming ones ('receive'). */
  on?: 'send' | 'receive'
  /** Bound on the bytes queued in all pairs together (default 16 MiB). */
  maxQueueBytes?: number
  /** Run in the socket's I/O thread when a native layer above can (default true); false keeps it in JavaScript. */
  native?: boolean
}

interface Item {
  at: number
  data: Uint8Array
  tag: number
  size: number
}

interface Pair {
  peer: Address
  /** The pair's link (null: no latency and no bandwidth limit, datagrams go on at once). */
  model: ImpairModel | null
  items: Item[]
  head: number
  /** Release time of the last queued item (FIFO: no later item is released earlier). */
  lastAt: number
  timer: TimerHandle | undefined
}

/** Peers whose link is kept; beyond, the links of peers with nothing queued are forgotten. */
const MAX_PAIRS = 65_536

/** Typed layer: `lower`/`upper` hold exactly these bindings (keep them in step with the statics). */
export class Delay extends Protocol<{
  /** The bindings it calls below. */
  lower: 'send' | 'localAddress'
  /** The slot it calls above. */
  upper: 'onMessage'
}> {
  static override bindTo = ['send', 'localAddress']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']

  readonly name = 'delay'

  readonly #latency: DelayOptions['latency']
  readonly #bandwidth: DelayOptions['bandwidth']
  readonly #onSend: boolean
  readonly #maxQueueBytes: number
  readonly #allowNative: boolean
  #clock: Clock = realClock
  #log: (fmt: string, ...a: unknown[]) => void = () => {}
  #local: Address | undefined
  #running = false
  readonly #pairs = new Map<string, Pair>() // by Address.key: stable across intern-cache resets
  #queuedBytes = 0
  #native = false

  constructor(opts: DelayOptions) {
    super()
    if (typeof opts?.latency !== 'function') {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'Delay: latency must be a function (from, to) => ms')
    }
    if (opts.bandwidth !== undefined && typeof opts.bandwidth !== 'function') {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'Delay: bandwidth must be a function (from, to) => bytes per ms')
    }
    this.#allowNative = opts.native !== false
    const on = opts.on ?? 'send'
    if (on !== 'send' && on !== 'receive') {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `Delay: on must be 'send' or 'receive', got ${String(on)}`)
    }
    const max = opts.maxQueueBytes ?? 16 * 1024 * 1024
    if (!(max >= 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `Delay: maxQueueBytes must be >= 0, got ${max}`)
    this.#latency = opts.latency
    this.#bandwidth = opts.bandwidth
    this.#onSend = on === 'send'
    this.#maxQueueBytes = max
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx?.clock ?? realClock
    if (ctx?.log) this.#log = ctx.log
    this.#local = this.lower.localAddress()
    this.#running = true
  }

  /** True when the delay runs in the socket's I/O thread (see "Native mode"). */
  get native(): boolean {
    return this.#native
  }

  static override nativeRole = 'stage' as const
  /** @internal True when {@link enableNative} can move the delay into the socket below. */
  canRunNative(below: readonly object[]): boolean {
    return this.#allowNative && below.length === 0
  }

  /** @internal Moves the delay line into the socket's I/O thread (asked by a native layer above). */
  enableNative(udp: UdpTransport): void {
    if (this.#native) return
    const direction = this.#onSend ? 'send' : 'receive'
    udp.setNativeDelay(direction, this.#maxQueueBytes, (dir, peer) => {
      const local = this.#local!
      const [from, to] = dir === 'send' ? [local, peer] : [peer, local]
      const latency = Number(this.#latency(from, to))
      const bw = this.#bandwidth ? Number(this.#bandwidth(from, to)) : Infinity
      udp.setNativeDelayLink(dir, peer, latency > 0 ? latency : 0, bw > 0 && Number.isFinite(bw) ? bw * 1000 : 0)
    })
    this.#native = true
  }

  /** Sends a datagram down, after its link's latency when the delay applies on sending. */
  send(to: Address, data: Uint8Array, tag = 0): unknown {
    if (!this.#onSend || !this.#running || this.#native) return this.lower.send(to, data, tag)
    return this.#enqueue(to, this.#local!, to, data, tag, true)
  }

  /** A datagram from the layer below, passed up (after its link's latency when the delay applies on receiving). */
  onMessage(from: Address, data: Buffer, tag: number): void {
    if (this.#onSend || !this.#running || this.#native) return this.upper.onMessage(from, data, tag)
    this.#enqueue(from, from, this.#local!, data, tag, false)
  }

  /** The pair of `peer`, its link asked from the user functions the first time. */
  #pair(peer: Address, from: Address, to: Address): Pair {
    let pair = this.#pairs.get(peer.key)
    if (pair !== undefined) return pair
    if (this.#pairs.size >= MAX_PAIRS) {
      for (const [k, p] of this.#pairs) if (p.head === p.items.length) this.#pairs.delete(k)
    }
    const l = Number(this.#latency(from, to))
    const latency = l > 0 && Number.isFinite(l) ? l : 0
    const b = this.#bandwidth === undefined ? Infinity : Number(this.#bandwidth(from, to))
    const bandwidth = b > 0 && Number.isFinite(b) ? b : 0
    const model = latency === 0 && bandwidth === 0 ? null : new ImpairModel(0, { latency, bandwidth })
    pair = { peer, model, items: [], head: 0, lastAt: -Infinity, timer: undefined }
    this.#pairs.set(peer.key, pair)
    return pair
  }

  /** Queues a datagram for `peer`, or forwards it at once when its link has no delay. */
  #enqueue(peer: Address, from: Address, to: Address, data: Uint8Array, tag: number, copyData: boolean): unknown {
    const pair = this.#pair(peer, from, to)
    if (pair.model === null) {
      this.count('passed')
      return this.#forward(peer, data, tag)
    }
    const size = data.length + 1
    if (this.#queuedBytes + size > this.#maxQueueBytes) {
      this.count('dropped_queue')
      return undefined
    }
    const now = this.#clock.now()
    pair.model.offer(now, size)
    const at = Math.max(verdict[0], pair.lastAt)
    pair.lastAt = at
    pair.items.push({ at, data: copyData ? Buffer.from(data) : data, tag, size })
    this.#queuedBytes += size
    this.count('delayed')
    if (pair.timer === undefined) this.#arm(pair, now)
    return undefined
  }

  #arm(pair: Pair, now: number): void {
    pair.timer = this.#clock.setTimeout(() => this.#due(pair), pair.items[pair.head].at - now)
  }

  /** The pair's timer fired: release every item whose time has come, re-arm for the next. */
  #due(pair: Pair): void {
    pair.timer = undefined
    const now = this.#clock.now()
    while (pair.head < pair.items.length && pair.items[pair.head].at <= now) {
      const it = pair.items[pair.head]
      pair.items[pair.head++] = undefined as unknown as Item
      this.#queuedBytes -= it.size
      try {
        this.#forward(pair.peer, it.data, it.tag)
      } catch (e) {
        this.count(this.#onSend ? 'dropped_send_error' : 'handler_errors')
        this.#log('forwarding a queued datagram failed: %O', e)
      }
      if (!this.#running) return
    }
    if (pair.head === pair.items.length) {
      // Empty: keep the pair's link (the user functions are asked once per peer), drop the items.
      pair.items = []
      pair.head = 0
      return
    }
    if (pair.head > 1024 && pair.head * 2 > pair.items.length) {
      pair.items = pair.items.slice(pair.head)
      pair.head = 0
    }
    this.#arm(pair, now)
  }

  #forward(peer: Address, data: Uint8Array, tag: number): unknown {
    if (this.#onSend) return this.lower.send(peer, data, tag)
    // A delayed received datagram is the Buffer the layer below delivered to onMessage.
    return this.upper.onMessage(peer, data as Buffer, tag)
  }

  override stats(): Record<string, number> {
    return { ...this.counters, queued_bytes: this.#queuedBytes }
  }

  override async stop(): Promise<void> {
    this.#running = false
    for (const pair of this.#pairs.values()) {
      this.#clock.clearTimeout(pair.timer)
      pair.timer = undefined
      const left = pair.items.length - pair.head
      if (left > 0) this.count('dropped_closed', left)
    }
    this.#pairs.clear()
    this.#queuedBytes = 0
  }
}
