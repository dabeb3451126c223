/**
 * The simulator's event queue: a binary min-heap of events ordered by (time, sequence number), so
 * that events due at the same virtual time run in the order they were scheduled. Cancelling marks
 * an event (lazy deletion); the heap is compacted when cancelled events dominate it.
 */

/** One scheduled event. Also the handle of a virtual timer. */
export interface SimEvent {
  /** Virtual time (ms) at which it runs. */
  time: number
  /** Scheduling order: breaks ties between events due at the same time. */
  seq: number
  /** What it runs; null once fired or cancelled. */
  fn: (() => void) | null
  /** 0 pending, 1 fired or cancelled. */
  state: 0 | 1
}

/** Cancelled events tolerated in the heap before a compaction is considered. */
const COMPACT_AFTER = 1024

/** @internal A min-heap of {@link SimEvent}s with lazy cancellation. */
export class EventQueue {
  readonly #heap: SimEvent[] = []
  #cancelled = 0
  #seq = 0

  /** Events scheduled and neither fired nor cancelled. */
  get pending(): number {
    return this.#heap.length - this.#cancelled
  }

  /** A new pending event at `time`. */
  schedule(time: number, fn: () => void): SimEvent {
    const e: SimEvent = { time, seq: this.#seq++, fn, state: 0 }
    this.#push(e)
    return e
  }

  /** An event that never runs (scheduled after the network closed): nothing is kept. */
  dead(time: number): SimEvent {
    return { time, seq: this.#seq++, fn: null, state: 1 }
  }

  /** Cancels a pending event (a no-op for one that fired or was cancelled). */
  cancel(e: SimEvent | undefined): void {
    if (e === undefined || e.state !== 0) return
    e.state = 1
    e.fn = null
    this.#cancelled++
    if (this.#cancelled > COMPACT_AFTER && this.#cancelled * 2 > this.#heap.length) {
      const live = this.#heap.filter((x) => x.state === 0)
      this.#heap.length = 0
      this.#cancelled = 0
      for (const x of live) this.#push(x)
    }
  }

  /** The next live event, discarding cancelled ones at the top. */
  peek(): SimEvent | undefined {
    const h = this.#heap
    while (h.length > 0 && h[0].state !== 0) {
      this.pop()
      this.#cancelled--
    }
    return h[0]
  }

  /** Removes the top of the heap (call after {@link peek}). */
  pop(): SimEvent | undefined {
    const h = this.#heap
    const top = h[0]
    const last = h.pop()
    if (h.length > 0 && last !== undefined) {
      let i = 0
      const n = h.length
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        const c = r < n && before(h[r], h[l]) ? r : l
        if (!before(h[c], last)) break
        h[i] = h[c]
        i = c
      }
      h[i] = last
    }
    return top
  }

  /** Drops every event; a later cancel of any of their handles is a no-op. */
  clear(): void {
    for (const e of this.#heap) {
      e.state = 1
      e.fn = null
    }
    this.#heap.length = 0
    this.#cancelled = 0
  }

  #push(e: SimEvent): void {
    const h = this.#heap
    let i = h.length
    h.push(e)
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!before(e, h[p])) break
      h[i] = h[p]
      i = p
    }
    h[i] = e
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq)
}
