/**
 * JoinGate — the `ready({ signal })` of a layer with a joining phase (Gossip, BigGossip,
 * FixedPeers): open once the layer holds its first peer, or at once when it was given nobody to
 * contact (the first node of a network). `node.ready()` waits for every such layer.
 */
import { abortError, DeccomError, ErrorCode } from '../errors'

export class JoinGate {
  #open = false
  readonly #waiters: { resolve: () => void; reject: (e: Error) => void }[] = []

  /** True once open. */
  get isOpen(): boolean {
    return this.#open
  }

  /** Opens the gate (idempotent): every `wait` resolves. */
  open(): void {
    if (this.#open) return
    this.#open = true
    for (const w of this.#waiters.splice(0)) w.resolve()
  }

  /** Rejects every waiter with ERR_DECCOM_CLOSED (the layer stopped). */
  close(layer: string): void {
    const e = new DeccomError(ErrorCode.CLOSED, `The ${layer} layer stopped before it joined`)
    for (const w of this.#waiters.splice(0)) w.reject(e)
  }

  /** Resolves when open; rejects with ERR_DECCOM_ABORTED when `signal` aborts first. */
  wait(signal?: AbortSignal): Promise<void> {
    if (this.#open) return Promise.resolve()
    if (signal?.aborted) return Promise.reject(abortError(signal))
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(w)
        if (i >= 0) this.#waiters.splice(i, 1)
        reject(abortError(signal!))
      }
      const w = {
        resolve: (): void => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
        reject: (e: Error): void => {
          signal?.removeEventListener('abort', onAbort)
          reject(e)
        },
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.push(w)
    })
  }
}
