/**
 * FaultyTransport — a transparent test layer that drops, duplicates, reorders and corrupts
 * datagrams with given probabilities, from a seeded random generator so that failures reproduce.
 *
 * ```ts
 * const node = await Node.create({ stack: [new ReliableUdp(), new FaultyTransport({ seed: 7, drop: 0.1, reorder: 0.05 })] })
 * ```
 *
 * It binds `send` and `onMessage` of the layer below and provides/emits the same names, so it fits
 * anywhere in a stack (normally right above the transport). The faults are decided by deccom's one
 * impairment model (deccom-core `impair`, also behind Delay and the SimulatedNetwork's links),
 * one seeded instance per direction: receive seeded with `seed`, send with `seed ^ 0x9e3779b9`.
 * Every datagram that goes through it in a faulty `direction` (and, with `tags`, only datagrams
 * with one of those tags) takes exactly eight random draws, whatever happens to it, and is:
 * - dropped with probability `drop` (`faulty_dropped`), and then nothing else applies;
 *   otherwise it counts as `passed` and, independently of each other,
 * - corrupted with probability `corrupt`: one uniformly chosen payload bit is flipped, in a
 *   copy (`faulty_corrupted`). The tag byte is never corrupted; a datagram with an empty payload
 *   is left as it is;
 * - duplicated with probability `duplicate`: a second copy goes on right after it
 *   (`faulty_duplicated`);
 * - reordered with probability `reorder`: it is held back (`faulty_reordered`) for a random
 *   (0, `reorderDelay`] ms on `ctx.clock`, so the datagrams that follow overtake it. At most
 *   `maxHeld` datagrams are held at a time; beyond that, they go on at once.
 * So which datagrams are dropped, duplicated, reordered or corrupted (and which bit) depends only
 * on the seed and the sequence of datagram sizes — the same in native mode, in JavaScript and on
 * a SimulatedNetwork link with the same seed and probabilities (`__test__/impair.spec.ts`).
 *
 * The transport's own datagrams (pings and pongs of `node.ping`) never reach a layer above the
 * transport, so this layer does not affect them. Being a JS layer that sees every datagram, it puts
 * the layers above it on the JavaScript path. `stop()` clears every timer and
 * drops the datagrams still held (`dropped_closed`).
 *
 * **Native mode.** When a native layer above asks for it (ReliableUdp does, so that it keeps its
 * fast path), this layer sits directly on a UdpTransport, `tags` is not set and `native` is not
 * `false`, the same model runs inside the socket's I/O thread instead (same probabilities, same
 * seeds), and this layer only passes calls through. Layers above it (ReliableUdp) then keep the
 * native fast path. Differences: native faults see every datagram on the socket, the
 * transport's pings included. Decisions are counted in the transport's stats
 * (`faults_rx_*`, `faults_tx_*`); the layer's `native` getter says which mode is in use.
 */
import type { Address } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { realClock } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { IMPAIR_COPIES, IMPAIR_CORRUPTED, IMPAIR_DUPLICATED, IMPAIR_REORDERED, ImpairModel, corruptPayload, verdict } from '../sim/impair'
import type { Seed } from '../sim/random'
import { seedToU32 } from '../sim/random'
import type { UdpTransport } from './udp'

/** Options of {@link FaultyTransport}. */
export interface FaultyTransportOptions {
  /** Seed of the decisions (default: a random one, readable as `layer.seed` to replay a failure). */
  seed?: Seed
  /** Probability 0..1 that a datagram is dropped (default 0). */
  drop?: number
  /** Probability 0..1 that a datagram goes on twice (default 0). */
  duplicate?: number
  /** Probability 0..1 that a datagram is held back (0, reorderDelay] ms and overtaken (default 0). */
  reorder?: number
  /** Probability 0..1 that one bit of the payload is flipped (default 0). */
  corrupt?: number
  /** Which datagrams are subject to faults: outgoing, incoming or both (default 'both'). */
  direction?: 'send' | 'receive' | 'both'
  /** Only datagrams with these tags are subject to faults (default: every tag). */
  tags?: readonly number[]
  /** Longest time in ms a reordered datagram is held (default 20). */
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

  /** The models of each direction (JavaScript mode). */
  readonly #rx: ImpairModel
  readonly #tx: ImpairModel
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
    this.seed = seedToU32(opts.seed ?? (Math.random() * 0x1_0000_0000) >>> 0)
    const model = { drop: this.#drop, duplicate: this.#duplicate, reorder: this.#reorder, corrupt: this.#corrupt, reorderDelay: this.#reorderDelay }
    this.#rx = new ImpairModel(this.seed, model)
    this.#tx = new ImpairModel((this.seed ^ 0x9e3779b9) >>> 0, model)
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
    const opts = { drop: this.#drop, duplicate: this.#duplicate, reorder: this.#reorder, corrupt: this.#corrupt, reorderDelay: this.#reorderDelay }
    if (this.#receive) udp.setNativeFaults('receive', { ...opts, seed: this.seed })
    if (this.#send) udp.setNativeFaults('send', { ...opts, seed: (this.seed ^ 0x9e3779b9) >>> 0 })
    this.#native = true
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx?.clock ?? realClock
    if (ctx?.log) this.#log = ctx.log
    this.#log('seed %d', this.seed)
    this.#running = true
  }

  /** Sends a datagram down, through the configured faults when they apply on sending. */
  send(to: Address, data: Uint8Array, tag = 0): unknown {
    if (this.#native || !this.#send || (this.#tags !== undefined && !this.#tags.has(tag))) return this.lower.send(to, data, tag)
    return this.#impair('send', to, data, tag)
  }

  /** A datagram from the layer below, passed up through the configured faults when they apply on receiving. */
  onMessage(from: Address, data: Uint8Array, tag: number): void {
    if (this.#native || !this.#receive || (this.#tags !== undefined && !this.#tags.has(tag))) return this.upper.onMessage(from, data, tag)
    this.#impair('receive', from, data, tag)
  }

  /** Asks the model about one datagram and carries out its verdict. */
  #impair(dir: Dir, peer: Address, data: Uint8Array, tag: number): unknown {
    const now = this.#clock.now()
    const code = (dir === 'send' ? this.#tx : this.#rx).offer(now, data.length + 1)
    const copies = code & IMPAIR_COPIES
    if (copies === 0) {
      this.count('faulty_dropped')
      return undefined
    }
    const at0 = verdict[0]
    const at1 = verdict[1]
    this.count('passed')
    let out = data
    if (code & IMPAIR_CORRUPTED) {
      out = corruptPayload(data, verdict[2])
      this.count('faulty_corrupted')
    }
    if (code & IMPAIR_DUPLICATED) this.count('faulty_duplicated')
    if (code & IMPAIR_REORDERED) this.count('faulty_reordered')
    const r = this.#emitAt(dir, peer, out, tag, at0, now, false)
    if (copies === 2) this.#emitAt(dir, peer, out, tag, at1, now, true)
    return r
  }

  /** Forwards a copy now if it is due (or cannot be held), else holds it until `at`. */
  #emitAt(dir: Dir, peer: Address, data: Uint8Array, tag: number, at: number, now: number, again: boolean): unknown {
    if (at <= now || !this.#running || this.#held.size >= this.#maxHeld) {
      if (dir === 'send') return this.lower.send(peer, data, tag)
      // A second delivery gets its own bytes: a handler may modify what it is given.
      return this.upper.onMessage(peer, again ? copy(data) : data, tag)
    }
    // Held bytes must not change under us: a sender may reuse its buffer after send returns.
    const h: Held = { dir, peer, data: copy(data), tag, timer: undefined }
    h.timer = this.#clock.setTimeout(() => {
      h.timer = undefined
      this.#release(h)
    }, at - now)
    this.#held.add(h)
    return undefined
  }

  #release(h: Held): void {
    if (!this.#held.delete(h)) return
    try {
      if (h.dir === 'send') this.lower.send(h.peer, h.data, h.tag)
      else this.upper.onMessage(h.peer, h.data, h.tag)
    } catch (e) {
      // Released late, there is no caller to throw to: count it and carry on.
      this.count(h.dir === 'send' ? 'dropped_send_error' : 'handler_errors')
      this.#log('releasing a held datagram failed: %O', e)
    }
  }

  override async stop(): Promise<void> {
    this.#running = false
    for (const h of this.#held) {
      this.#clock.clearTimeout(h.timer)
      this.count('dropped_closed')
    }
    this.#held.clear()
  }
}

function copy(data: Uint8Array): Buffer {
  return Buffer.from(data)
}
