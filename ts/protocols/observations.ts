/**
 * "Where others see us": one observation per observer, a bounded table (the oldest observation is
 * evicted first), and the value that at least two distinct observers agree on. HolePuncher keeps
 * its UDP observations here, TcpTransport its TCP ones (docs/nat.md, "External addresses").
 */

/** The value most observers agree on and how many distinct observers reported it. */
export interface Agreement<T> {
  value: T
  observers: number
}

export class ObservationTable<T extends { at: number }> {
  readonly #byObserver = new Map<string, T>()

  /** @param max observations kept at most (one per observer). */
  constructor(readonly max: number) {}

  /** Records the observation of `observer`, replacing its earlier one. */
  set(observer: string, o: T): void {
    if (!this.#byObserver.has(observer) && this.#byObserver.size >= this.max) {
      let oldest: string | null = null
      let at = Infinity
      for (const [k, v] of this.#byObserver) {
        if (v.at < at) {
          at = v.at
          oldest = k
        }
      }
      if (oldest !== null) this.#byObserver.delete(oldest)
    }
    this.#byObserver.set(observer, o)
  }

  values(): T[] {
    return [...this.#byObserver.values()]
  }

  get size(): number {
    return this.#byObserver.size
  }

  clear(): void {
    this.#byObserver.clear()
  }

  /**
   * The observation whose `key` most observers share, if at least 2 distinct observers do (the
   * most recent observation of that group stands for it); else null. Ties go to the group seen
   * most recently.
   */
  agreed(key: (o: T) => string): Agreement<T> | null {
    const votes = new Map<string, Agreement<T>>()
    for (const o of this.#byObserver.values()) {
      const k = key(o)
      const v = votes.get(k)
      if (!v) votes.set(k, { value: o, observers: 1 })
      else {
        v.observers++
        if (o.at >= v.value.at) v.value = o
      }
    }
    let best: Agreement<T> | null = null
    for (const v of votes.values()) {
      if (v.observers < 2) continue
      if (!best || v.observers > best.observers || (v.observers === best.observers && v.value.at > best.value.at)) best = v
    }
    return best
  }
}
