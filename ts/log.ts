/**
 * Debug logging for layers: one `debug` namespace per layer, rate-limited.
 *
 * Each layer of a started stack gets its own {@link LayerLog} as `ctx.log`, printing under the
 * namespace `deccom:<layer name>` (the name shown in stats: `kademlia`, `noise`, `reliable-udp`,
 * `udp`, ...) with the node's short id in front of every line, so that several nodes in one
 * process can be told apart:
 *
 * ```
 * DEBUG=deccom:kademlia,deccom:noise node app.js
 *   deccom:kademlia [a1b2c3d4] joined: 12 peers in 3 buckets +2ms
 * ```
 *
 * Network input must never be able to flood the log, so every logger is rate-limited per message
 * kind (its format string): at most `rate` lines per second with bursts of up to `burst` lines (a
 * token bucket on the node's clock, so virtual time in a simulator). What goes over the limit is
 * counted, and one line `suppressed K similar lines: <format>` reports it about a second later
 * (a real-time timer; so at most one summary a second per kind), or when the stack stops.
 *
 * A call on a disabled namespace returns after one property read: nothing is formatted, counted or
 * stored. Callers with costly arguments check {@link LayerLog.enabled} first.
 */
import createDebug from 'debug'
import { type Clock, type TimerHandle, realClock } from './clock'

/** A layer's debug logger: printf-style (`%s`, `%d`, `%o`, `%O`, `%j`), rate-limited. */
export interface LayerLog {
  (fmt: string, ...a: unknown[]): void
  /** True when the namespace is enabled (DEBUG); when false a call does nothing. */
  readonly enabled: boolean
  /** The `debug` namespace, e.g. `deccom:kademlia`. */
  readonly namespace: string
}

/** Settings of a {@link LogGroup}. */
export interface LogOptions {
  /** Lines per second per message kind, sustained (default 20). */
  rate?: number
  /** Lines a message kind may print at once before the rate applies (default 50). */
  burst?: number
  /**
   * Where the timer that prints summaries runs (default: an `unref`'d real-time timer, so that
   * logging neither adds events to a simulated network's virtual clock, whose trace would then
   * depend on DEBUG, nor keeps the process alive). The rate itself is measured on the clock.
   */
  timers?: Pick<Clock, 'setTimeout' | 'clearTimeout'>
}

/** Real-time timers that do not keep the process alive. */
const unrefTimers: Pick<Clock, 'setTimeout' | 'clearTimeout'> = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => {
    if (h !== undefined) clearTimeout(h as NodeJS.Timeout)
  },
}

/** Distinct message kinds tracked per layer; kinds beyond this share one bucket (memory stays bounded). */
const MAX_KINDS = 256
/** How long a kind's suppressed lines wait before their summary is printed, in ms. */
const SUMMARY_DELAY = 1000
const OVERFLOW = '(other messages)'

interface Bucket {
  tokens: number
  /** Clock time of the last refill. */
  at: number
  suppressed: number
}

/** One logger per layer name; its kinds' buckets. */
interface Entry {
  readonly log: LayerLog
  readonly debug: createDebug.Debugger
  readonly kinds: Map<string, Bucket>
}

/**
 * One `debug` instance per namespace, shared by every node's group: an instance is a function
 * with a dozen properties, and a simulation runs thousands of nodes (what is enabled is decided
 * per namespace anyway).
 */
const debuggers = new Map<string, createDebug.Debugger>()

function debuggerOf(namespace: string): createDebug.Debugger {
  let d = debuggers.get(namespace)
  if (d === undefined) {
    d = createDebug(namespace)
    debuggers.set(namespace, d)
  }
  return d
}

/**
 * The loggers of one stack (one node): a {@link LayerLog} per layer sharing the node's short id,
 * clock and rate limits, and one timer that prints the summaries of suppressed lines. The Stack
 * creates one at start and {@link close}s it at stop.
 */
export class LogGroup {
  readonly #prefix: string
  readonly #clock: Clock
  readonly #timers: Pick<Clock, 'setTimeout' | 'clearTimeout'>
  readonly #rate: number
  readonly #burst: number
  readonly #entries = new Map<string, Entry>()
  /** Buckets with suppressed lines waiting for their summary. */
  readonly #pending = new Map<Bucket, { entry: Entry; kind: string }>()
  #timer: TimerHandle | undefined
  #closed = false

  /**
   * @param tag   printed in brackets at the start of every line (the node's short id); '' for none
   * @param clock the node's clock (the rate limit's time)
   */
  constructor(tag: string, clock: Clock = realClock, opts: LogOptions = {}) {
    this.#prefix = tag ? `[${tag.replace(/%/g, '%%')}] ` : ''
    this.#clock = clock
    this.#timers = opts.timers ?? unrefTimers
    this.#rate = opts.rate ?? 20
    this.#burst = opts.burst ?? 50
    if (!(this.#rate > 0) || !(this.#burst >= 1)) throw new RangeError('LogGroup: rate must be > 0 and burst >= 1')
  }

  /** The logger of layer `name` (namespace `deccom:<name>`); the same function for the same name. */
  layer(name: string): LayerLog {
    const existing = this.#entries.get(name)
    if (existing) return existing.log
    const debug = debuggerOf(`deccom:${name}`)
    const kinds = new Map<string, Bucket>()
    const log = ((fmt: string, ...a: unknown[]): void => {
      if (!debug.enabled) return
      this.#write(entry, String(fmt), a)
    }) as LayerLog
    Object.defineProperty(log, 'enabled', { get: () => debug.enabled })
    Object.defineProperty(log, 'namespace', { value: debug.namespace })
    const entry: Entry = { log, debug, kinds }
    this.#entries.set(name, entry)
    return log
  }

  /** Print every pending summary now and stop the summary timer. Later lines still print (rate-limited). */
  flush(): void {
    this.#timers.clearTimeout(this.#timer)
    this.#timer = undefined
    for (const [b, { entry, kind }] of this.#pending) this.#summary(entry, kind, b)
    this.#pending.clear()
  }

  /** {@link flush}, and no summary timer is armed again (lines still print, summaries at the next flush). */
  close(): void {
    this.#closed = true
    this.flush()
  }

  #write(entry: Entry, fmt: string, a: unknown[]): void {
    let kind = fmt
    let b = entry.kinds.get(kind)
    if (b === undefined) {
      if (entry.kinds.size >= MAX_KINDS) {
        kind = OVERFLOW
        b = entry.kinds.get(kind)
      }
      if (b === undefined) {
        b = { tokens: this.#burst, at: this.#clock.now(), suppressed: 0 }
        entry.kinds.set(kind, b)
      }
    }
    const now = this.#clock.now()
    if (now > b.at) {
      b.tokens = Math.min(this.#burst, b.tokens + ((now - b.at) * this.#rate) / 1000)
      b.at = now
    }
    if (b.tokens < 1) {
      if (b.suppressed++ === 0) {
        this.#pending.set(b, { entry, kind })
        if (this.#timer === undefined && !this.#closed) this.#timer = this.#timers.setTimeout(() => this.flush(), SUMMARY_DELAY)
      }
      return
    }
    b.tokens -= 1
    entry.debug(this.#prefix + fmt, ...a)
  }

  #summary(entry: Entry, kind: string, b: Bucket): void {
    if (b.suppressed === 0) return
    entry.debug(`${this.#prefix}suppressed %d similar lines: %s`, b.suppressed, kind)
    b.suppressed = 0
  }
}

/** A logger that prints nothing (what a layer has before its stack starts it). */
export const silentLog: LayerLog = Object.assign(() => {}, { enabled: false, namespace: '' }) as LayerLog
