/**
 * The simulator's event queue: a min-heap of events ordered by (time, sequence number), so that
 * events due at the same virtual time run in the order they were scheduled. Cancelling marks an
 * event (lazy deletion); the heap is compacted when cancelled events dominate it.
 *
 * The heap is 4-ary and keeps each entry's time and sequence number in typed arrays beside the
 * events: sifting compares numbers in contiguous memory (a node's four children share a cache
 * line) instead of reading an event object per comparison.
 */
import type { Address } from '../address'

/** One scheduled event. Also the handle of a virtual timer. */
export interface SimEvent {
  /** Virtual time (ms) at which it runs. */
  time: number
  /** Scheduling order: breaks ties between events due at the same time. */
  seq: number
  /** What it runs; null once fired or cancelled, and for a datagram's arrival. */
  fn: (() => void) | null
  /** 0 pending, 1 fired or cancelled. */
  state: 0 | 1
  /** A datagram's arrival (see {@link EventQueue.datagram}): its link's ends and its bytes; else null. */
  from: Address | null
  to: Address | null
  bytes: Buffer | null
}

/** Cancelled events tolerated in the heap before a compaction is considered. */
const COMPACT_AFTER = 1024

/** @internal A min-heap of {@link SimEvent}s with lazy cancellation. */
export class EventQueue {
  #events: SimEvent[] = []
  #times = new Float64Array(1024)
  #seqs = new Float64Array(1024)
  #cancelled = 0
  #seq = 0

  /**
   * The next sequence number. The simulator's native lane numbers its events from the same
   * counter: it reads this before a call that may schedule, and sets it after.
   */
  get seq(): number {
    return this.#seq
  }

  set seq(n: number) {
    this.#seq = n
  }

  /** Events scheduled and neither fired nor cancelled. */
  get pending(): number {
    return this.#events.length - this.#cancelled
  }

  /** A new pending event at `time`. */
  schedule(time: number, fn: () => void): SimEvent {
    const e: SimEvent = { time, seq: this.#seq++, fn, state: 0, from: null, to: null, bytes: null }
    this.#push(e)
    return e
  }

  /** A new pending arrival at `time` of the datagram `bytes` on the link from → to (`fn` null). */
  datagram(time: number, from: Address, to: Address, bytes: Buffer): void {
    this.#push({ time, seq: this.#seq++, fn: null, state: 0, from, to, bytes })
  }

  /** An event that never runs (scheduled after the network closed): nothing is kept. */
  dead(time: number): SimEvent {
    return { time, seq: this.#seq++, fn: null, state: 1, from: null, to: null, bytes: null }
  }

  /** Cancels a pending event (a no-op for one that fired or was cancelled). */
  cancel(e: SimEvent | undefined): void {
    if (e === undefined || e.state !== 0) return
    e.state = 1
    e.fn = null
    this.#cancelled++
    if (this.#cancelled > COMPACT_AFTER && this.#cancelled * 2 > this.#events.length) {
      const live = this.#events.filter((x) => x.state === 0)
      this.#events.length = 0
      this.#cancelled = 0
      for (const x of live) this.#push(x)
    }
  }

  /** The next live event, discarding cancelled ones at the top. */
  peek(): SimEvent | undefined {
    const h = this.#events
    while (h.length > 0 && h[0].state !== 0) {
      this.pop()
      this.#cancelled--
    }
    return h[0]
  }

  /** Removes the top of the heap (call after {@link peek}). */
  pop(): SimEvent | undefined {
    const h = this.#events
    const top = h[0]
    const last = h.pop()
    const n = h.length
    if (n > 0 && last !== undefined) {
      const times = this.#times
      const seqs = this.#seqs
      const t = times[n]
      const s = seqs[n]
      let i = 0
      for (;;) {
        const first = 4 * i + 1
        if (first >= n) break
        // The earliest of the (up to four) children.
        let c = first
        let ct = times[first]
        let cs = seqs[first]
        const end = first + 4 < n ? first + 4 : n
        for (let k = first + 1; k < end; k++) {
          const kt = times[k]
          if (kt < ct || (kt === ct && seqs[k] < cs)) {
            c = k
            ct = kt
            cs = seqs[k]
          }
        }
        if (!(ct < t || (ct === t && cs < s))) break
        h[i] = h[c]
        times[i] = ct
        seqs[i] = cs
        i = c
      }
      h[i] = last
      times[i] = t
      seqs[i] = s
    }
    return top
  }

  /** Drops every event; a later cancel of any of their handles is a no-op. */
  clear(): void {
    for (const e of this.#events) {
      e.state = 1
      e.fn = null
    }
    this.#events.length = 0
    this.#cancelled = 0
  }

  #push(e: SimEvent): void {
    const h = this.#events
    let i = h.length
    if (i === this.#times.length) this.#grow()
    const times = this.#times
    const seqs = this.#seqs
    const t = e.time
    const s = e.seq
    h.push(e)
    while (i > 0) {
      const p = (i - 1) >> 2
      const pt = times[p]
      if (!(t < pt || (t === pt && s < seqs[p]))) break
      h[i] = h[p]
      times[i] = pt
      seqs[i] = seqs[p]
      i = p
    }
    h[i] = e
    times[i] = t
    seqs[i] = s
  }

  #grow(): void {
    const times = new Float64Array(this.#times.length * 2)
    times.set(this.#times)
    this.#times = times
    const seqs = new Float64Array(this.#seqs.length * 2)
    seqs.set(this.#seqs)
    this.#seqs = seqs
  }
}
