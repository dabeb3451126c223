/**
 * FaultyTransport — a transparent test layer that drops, duplicates, reorders and corrupts
 * datagrams with given probabilities, from a seeded random generator so that failures reproduce
 * (PROTOCOLS.md, "Test layers").
 *
 * ```ts
 * const node = await Node.create({ stack: [new ReliableUdp(), new FaultyTransport({ seed: 7, drop: 0.1, reorder: 0.05 })] })
 * ```
 *
 * It binds `send` and `onMessage` of the layer below and provides/emits the same names, so it fits
 * anywhere in a stack (normally right above the transport). Every datagram that goes through it in
 * a faulty `direction` (and, with `tags`, only datagrams with one of those tags) is, in this order:
 * - dropped with probability `drop` (`faulty_dropped`); otherwise it counts as `passed`;
 * - corrupted with probability `corrupt`: one uniformly chosen bit of the payload is flipped, in a
 *   copy (`faulty_corrupted`). The tag byte is never corrupted; an empty payload stays as it is;
 * - duplicated with probability `duplicate`: it goes on twice (`faulty_duplicated`);
 * - reordered with probability `reorder`: it is held back (`faulty_reordered`) and released right
 *   after the next datagram in the same direction goes through, or after a random delay in
 *   (0, `reorderDelay`] ms on `ctx.clock` if no datagram comes first. At most `maxHeld`
 *   datagrams are held at a time; beyond that, datagrams are not held.
 * Each datagram consumes the same number of random draws whatever happens to it, so the sequence
 * of decisions depends only on the seed and the sequence of datagrams.
 *
 * The transport's own datagrams (pings and pongs of `node.ping`) never reach a layer above the
 * transport, so this layer does not affect them. Being a JS layer that sees every datagram, it puts
 * the layers above it on the JavaScript path (DESIGN.md principle 5). `stop()` clears every timer and
 * drops the datagrams still held (`dropped_closed`).
 *
 * **Native mode.** When a native layer above asks for it (ReliableUdp does, so that it keeps its
 * fast path), this layer sits directly on a UdpTransport, `tags` is not set and `native` is not
 * `false`, the faults are applied inside the socket's I/O thread instead
 * (deccom-core `faults`, same probabilities and seed), and this layer only passes calls through.
 * Layers above it (ReliableUdp) then keep the native fast path. Differences: native faults see
 * every datagram on the socket, the transport's pings included, and may corrupt any bit (the tag
 * byte too); a reordered datagram is held until the next one or the end of the current receive
 * burst. Decisions are counted in the transport's stats (`faults_rx_*`, `faults_tx_*`); the
 * layer's `native` getter says which mode is in use.
 */
import type { Address } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { realClock } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import type { Seed } from '../sim/random'
import { Random } from '../sim/random'
import type { UdpTransport } from './udp'

export interface FaultyTransportOptions {
  /** Seed of the decisions (default: a random one, readable as `layer.seed` to replay a failure). */
  seed?: Seed
  /** Probability 0..1 that a datagram is dropped (default 0). */
  drop?: number
  /** Probability 0..1 that a datagram goes on twice (default 0). */
  duplicate?: number
  /** Probability 0..1 that a datagram is held back and overtaken (default 0). */
  reorder?: number
  /** Probability 0..1 that one bit of the payload is flipped (default 0). */
  corrupt?: number
  /** Which datagrams are subject to faults: outgoing, incoming or both (default 'both'). */
  direction?: 'send' | 'receive' | 'both'
  /** Only datagrams with these tags are subject to faults (default: every tag). */
  tags?: readonly number[]
  /** Longest time in ms a reordered datagram is held when nothing overtakes it (default 20). */
  reorderDelay?: number
  /** Most datagrams held for reordering at once (default 1024). */
  maxHeld?: number
  /** Run inside the socket's I/O thread when possible (default true; see "Native mode"). */
  native?: boolean
}

type Dir = 'send' | 'receive'

interface Held {
  dir: Dir
  peer: Address
  data: Uint8Array
  tag: number
  copies: number
  timer: TimerHandle | undefined
}

export class FaultyTransport extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  /** Can run inside the native pipeline (see ReliableUdp's fast path). */
  static readonly nativeCapable = true

  readonly name = 'faulty'
  /** The seed in use (as an unsigned 32-bit integer): pass it back to reproduce a run. */
  readonly seed: number

  readonly #rng: Random
  readonly #drop: number
  readonly #duplicate: number
  readonly #reorder: number
  readonly #corrupt: number
  readonly #send: boolean
  readonly #receive: boolean
  readonly #tags: ReadonlySet<number> | undefined
  readonly #reorderDelay: number
  readonly #maxHeld: number
  #clock: Clock = realClock
  #log: (fmt: string, ...a: unknown[]) => void = () => {}
  #running = false
  readonly #held = new Set<Held>()
  #heldSend: Held[] = []
  #heldReceive: Held[] = []
  readonly #allowNative: boolean
  #native = false

  constructor(opts: FaultyTransportOptions = {}) {
    super()
    const p = (name: 'drop' | 'duplicate' | 'reorder' | 'corrupt'): number => {
      const v = opts[name] ?? 0
      if (!(typeof v === 'number' && v >= 0 && v <= 1)) {
        throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `FaultyTransport: ${name} must be a probability 0..1, got ${String(v)}`)
      }
      return v
    }
    this.#drop = p('drop')
    this.#duplicate = p('duplicate')
    this.#reorder = p('reorder')
    this.#corrupt = p('corrupt')
    const direction = opts.direction ?? 'both'
    if (direction !== 'send' && direction !== 'receive' && direction !== 'both') {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `FaultyTransport: direction must be 'send', 'receive' or 'both', got ${String(direction)}`)
    }
    this.#send = direction !== 'receive'
    this.#receive = direction !== 'send'
    this.#tags = opts.tags ? new Set(opts.tags) : undefined
    this.#reorderDelay = opts.reorderDelay ?? 20
    this.#maxHeld = opts.maxHeld ?? 1024
    if (!(this.#reorderDelay >= 0 && Number.isFinite(this.#reorderDelay))) {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `FaultyTransport: reorderDelay must be a finite number >= 0, got ${opts.reorderDelay}`)
    }
    this.#rng = new Random(opts.seed ?? (Math.random() * 0x1_0000_0000) >>> 0)
    this.seed = this.#rng.seed
    this.#allowNative = opts.native !== false && opts.tags === undefined
  }

  /** True when the faults run in the socket's I/O thread (see "Native mode"). */
  get native(): boolean {
    return this.#native
  }

  static override nativeRole = 'stage' as const
  /** @internal True when {@link enableNative} can move the faults into the socket below. */
  canRunNative(below: readonly object[]): boolean {
    return this.#allowNative && below.length === 0
  }

  /** @internal Moves the faults into the socket's I/O thread (asked by a native layer above). */
  enableNative(udp: UdpTransport): void {
    if (this.#native) return
    const opts = { drop: this.#drop, duplicate: this.#duplicate, reorder: this.#reorder, corrupt: this.#corrupt }
    if (this.#receive) udp.setNativeFaults('receive', { ...opts, seed: this.seed })
    if (this.#send) udp.setNativeFaults('send', { ...opts, seed: (this.seed ^ 0x9e3779b9) >>> 0 })
    this.#native = true
    this.#log('faulty: running natively in the socket thread')
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx?.clock ?? realClock
    if (ctx?.log) this.#log = ctx.log
    this.#log('faulty: seed %d', this.seed)
    this.#running = true
  }

  send(to: Address, data: Uint8Array, tag = 0): unknown {
    if (this.#native || !this.#send || (this.#tags !== undefined && !this.#tags.has(tag))) return this.lower.send(to, data, tag)
    const d = this.#decide(data)
    if (d === undefined) return undefined
    if (d.hold) return this.#hold('send', to, d.data, tag, d.copies, d.holdMs)
    let r: unknown
    try {
      r = this.lower.send(to, d.data, tag)
      if (d.copies === 2) this.lower.send(to, d.data, tag)
    } finally {
      this.#releaseAll('send')
    }
    return r
  }

  onMessage(from: Address, data: Uint8Array, tag: number): void {
    if (this.#native || !this.#receive || (this.#tags !== undefined && !this.#tags.has(tag))) return this.upper.onMessage(from, data, tag)
    const d = this.#decide(data)
    if (d === undefined) return
    if (d.hold) return this.#hold('receive', from, d.data, tag, d.copies, d.holdMs)
    try {
      this.upper.onMessage(from, d.data, tag)
      if (d.copies === 2) this.upper.onMessage(from, copy(d.data), tag)
    } finally {
      this.#releaseAll('receive')
    }
  }

  /** The fate of one datagram, from a fixed number of random draws. undefined: dropped. */
  #decide(data: Uint8Array): { data: Uint8Array; copies: number; hold: boolean; holdMs: number } | undefined {
    const rng = this.#rng
    const dropRoll = rng.next()
    const corruptRoll = rng.next()
    const bitRoll = rng.next()
    const dupRoll = rng.next()
    const reorderRoll = rng.next()
    const delayRoll = rng.next()
    if (dropRoll < this.#drop) {
      this.count('faulty_dropped')
      return undefined
    }
    this.count('passed')
    let out = data
    if (corruptRoll < this.#corrupt && data.length > 0) {
      out = copy(data)
      const bit = Math.floor(bitRoll * data.length * 8)
      out[bit >>> 3] ^= 1 << (bit & 7)
      this.count('faulty_corrupted')
    }
    const copies = dupRoll < this.#duplicate ? 2 : 1
    if (copies === 2) this.count('faulty_duplicated')
    const hold = reorderRoll < this.#reorder && this.#held.size < this.#maxHeld && this.#running
    if (hold) {
      this.count('faulty_reordered')
      // Held bytes must not change under us: a sender may reuse its buffer after send returns.
      if (out === data) out = copy(data)
    }
    return { data: out, copies, hold, holdMs: this.#reorderDelay * (1 - delayRoll) }
  }

  #hold(dir: Dir, peer: Address, data: Uint8Array, tag: number, copies: number, ms: number): undefined {
    const h: Held = { dir, peer, data, tag, copies, timer: undefined }
    h.timer = this.#clock.setTimeout(() => {
      h.timer = undefined
      const list = dir === 'send' ? this.#heldSend : this.#heldReceive
      const i = list.indexOf(h)
      if (i >= 0) list.splice(i, 1)
      this.#release(h)
    }, ms)
    this.#held.add(h)
    ;(dir === 'send' ? this.#heldSend : this.#heldReceive).push(h)
    return undefined
  }

  /** Releases every datagram held in `dir` (after a datagram overtook them), oldest first. */
  #releaseAll(dir: Dir): void {
    const list = dir === 'send' ? this.#heldSend : this.#heldReceive
    if (list.length === 0) return
    if (dir === 'send') this.#heldSend = []
    else this.#heldReceive = []
    for (const h of list) {
      this.#clock.clearTimeout(h.timer)
      h.timer = undefined
      this.#release(h)
    }
  }

  #release(h: Held): void {
    if (!this.#held.delete(h)) return
    for (let i = 0; i < h.copies; i++) {
      try {
        if (h.dir === 'send') this.lower.send(h.peer, h.data, h.tag)
        else this.upper.onMessage(h.peer, i === 0 ? h.data : copy(h.data), h.tag)
      } catch (e) {
        // Released late, there is no caller to throw to: count it and carry on.
        this.count(h.dir === 'send' ? 'dropped_send_error' : 'handler_errors')
        this.#log('faulty: releasing a held datagram failed: %O', e)
      }
    }
  }

  override async stop(): Promise<void> {
    this.#running = false
    for (const h of this.#held) {
      this.#clock.clearTimeout(h.timer)
      this.count('dropped_closed')
    }
    this.#held.clear()
    this.#heldSend = []
    this.#heldReceive = []
  }
}

function copy(data: Uint8Array): Buffer {
  return Buffer.from(data)
}
