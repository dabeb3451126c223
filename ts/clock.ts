/**
 * Time for layers: real time, or the virtual time of a SimulatedNetwork.
 *
 * A layer that needs time — timeouts, intervals, RTT measurement — takes it from `ctx.clock`
 * (see {@link LayerContext}), never from `setTimeout`/`performance.now` directly. A Node passes
 * {@link realClock} unless `NodeOptions.clock` says otherwise; a {@link SimulatedNetwork} passes its
 * virtual clock, so the same stack runs unchanged in virtual time, deterministically and faster
 * than real time.
 *
 * ```ts
 * override async start(ctx: LayerContext) {
 *   this.#clock = ctx.clock
 *   const tick = () => { this.#beat(); this.#timer = this.#clock.setTimeout(tick, 1000) }
 *   this.#timer = this.#clock.setTimeout(tick, 1000)
 * }
 * override async stop() { this.#clock.clearTimeout(this.#timer) }  // always clear on stop
 * ```
 */

/**
 * An opaque timer handle returned by {@link Clock.setTimeout}. Only pass it back to the
 * `clearTimeout` of the same clock.
 */
export type TimerHandle = object

/** A source of monotonic time and one-shot timers. */
export interface Clock {
  /** Milliseconds on a monotonic scale (fractional allowed). Only differences are meaningful. */
  now(): number
  /**
   * Calls `fn` once, `ms` milliseconds from now (negative or NaN counts as 0). Timers due at the
   * same time fire in the order they were set.
   */
  setTimeout(fn: () => void, ms: number): TimerHandle
  /** Cancels a timer; a handle that already fired, was cleared, or is `undefined` is ignored. */
  clearTimeout(handle: TimerHandle | undefined): void
}

/**
 * Wall-clock time: `performance.now()` and Node's global timers. Its timers are ordinary (not
 * `unref`'d) Node timers: like any Node timer a pending one keeps the process alive, so a layer
 * must clear its timers in `stop()` (a closed Node then leaves no handles behind).
 */
export const realClock: Clock = Object.freeze({
  now: (): number => performance.now(),
  setTimeout: (fn: () => void, ms: number): TimerHandle => setTimeout(fn, ms >= 0 ? ms : 0),
  clearTimeout: (handle: TimerHandle | undefined): void => {
    if (handle !== undefined) clearTimeout(handle as NodeJS.Timeout)
  },
})

/** A promise that resolves after `ms` on `clock` (a convenience for tests and scripts; not cancellable). */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => {
    clock.setTimeout(resolve, ms)
  })
}

/**
 * One timer for a state machine's `pollTimeout()`: `arm(at)` keeps the earliest deadline (a later
 * one does not move it), `arm(null)` and `clear()` cancel it. When it fires, `onFire` runs once.
 */
export class Deadline {
  #timer: TimerHandle | null = null
  #at = Infinity

  constructor(
    private readonly clock: Clock,
    private readonly onFire: () => void,
  ) {}

  /** Fire at clock time `at` (ms), unless an earlier firing is already armed; null cancels. */
  arm(at: number | null): void {
    if (at === null) return this.clear()
    if (this.#timer !== null && this.#at <= at) return
    this.clear()
    this.#at = at
    this.#timer = this.clock.setTimeout(() => {
      this.#timer = null
      this.#at = Infinity
      this.onFire()
    }, Math.max(0, at - this.clock.now()))
  }

  /** Cancels the armed firing, if any. */
  clear(): void {
    if (this.#timer !== null) this.clock.clearTimeout(this.#timer)
    this.#timer = null
    this.#at = Infinity
  }
}
