/**
 * JoinGate — the `ready({ signal })` of a layer with a joining phase (Gossip, BigGossip,
 * FixedPeers): open once the layer holds its first peer, or at once when it was given nobody to
 * contact (the first node of a network). `node.ready()` waits for every such layer.
 */
import { Waiters } from '../abort'
import { DeccomError, ErrorCode } from '../errors'

export class JoinGate {
  #open = false
  readonly #waiters = new Waiters()

  /** True once open. */
  get isOpen(): boolean {
    return this.#open
  }

  /** Opens the gate (idempotent): every `wait` resolves. */
  open(): void {
    if (this.#open) return
    this.#open = true
    this.#waiters.resolveAll()
  }

  /** Rejects every waiter with ERR_DECCOM_CLOSED (the layer stopped). */
  close(layer: string): void {
    this.#waiters.rejectAll(new DeccomError(ErrorCode.CLOSED, `The ${layer} layer stopped before it joined`))
  }

  /** Resolves when open; rejects with ERR_DECCOM_ABORTED when `signal` aborts first. */
  wait(signal?: AbortSignal): Promise<void> {
    return this.#open ? Promise.resolve() : this.#waiters.wait(signal)
  }
}
