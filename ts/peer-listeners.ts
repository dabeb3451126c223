/**
 * The listeners a discovery or liveness layer keeps for peers coming (`connected`) and going
 * (`disconnected`): what its `on` and `off` add and remove, and whom it tells. One listener
 * that throws never stops the others or the layer's own work (it runs inside the layer's
 * handling of a datagram or a timer): the throw is counted as `listener_errors`.
 */
import type { Peer } from './peer'

/** Called with a peer that came (`connected`) or went (`disconnected`); see the layers' `on`. */
export type PeerListener = (peer: Peer) => void

export class PeerListeners<E extends string> {
  readonly #sets = new Map<E, Set<PeerListener>>()
  readonly #count: (name: string) => void

  /** `count` is the layer's counter (called with `listener_errors`). */
  constructor(count: (name: string) => void) {
    this.#count = count
  }

  add(event: E, fn: PeerListener): void {
    let s = this.#sets.get(event)
    if (!s) this.#sets.set(event, (s = new Set()))
    s.add(fn)
  }

  delete(event: E, fn: PeerListener): void {
    this.#sets.get(event)?.delete(fn)
  }

  /** Whether any listener is registered. */
  any(): boolean {
    for (const s of this.#sets.values()) if (s.size > 0) return true
    return false
  }

  /** Calls the listeners of `event` with `peer`, each once, in the order they were added. */
  emit(event: E, peer: Peer): void {
    const s = this.#sets.get(event)
    if (!s) return
    for (const fn of s) {
      try {
        fn(peer)
      } catch {
        this.#count('listener_errors')
      }
    }
  }
}
