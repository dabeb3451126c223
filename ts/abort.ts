/**
 * AbortSignal support shared by the layers: one way to honour a signal.
 *
 * - An already-aborted signal rejects at once, before the operation does anything (nothing sent,
 *   nothing opened).
 * - An abort while the operation runs calls its `cancel` (which stops timers, removes the operation's
 *   waiter, closes what only it used) and rejects with {@link abortError} (`ERR_DECCOM_ABORTED`,
 *   `cause`: the signal's reason).
 * - The abort listener is removed as soon as the operation settles, so one long-lived signal can be
 *   passed to any number of operations without accumulating listeners.
 */
import { abortError } from './errors'

/** The options object every abortable operation accepts (its last argument). */
export interface AbortOptions {
  /** Aborting it rejects the operation with ERR_DECCOM_ABORTED and undoes what it started. */
  signal?: AbortSignal
}

/** Throws the abort error when `signal` has been aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal)
}

/**
 * Like `new Promise(executor)`, settled at most once, and rejected with the abort error (after
 * `cancel` ran) when `signal` aborts first. A signal aborted already rejects without running
 * `executor`. `cancel` runs only on abort, never after the promise settled otherwise.
 */
export function abortable<T>(
  signal: AbortSignal | undefined,
  executor: (resolve: (value: T) => void, reject: (err: unknown) => void) => void,
  cancel?: () => void,
): Promise<T> {
  if (!signal) return new Promise<T>(executor)
  if (signal.aborted) return Promise.reject(abortError(signal))
  return new Promise<T>((resolve, reject) => {
    let done = false
    const onAbort = (): void => {
      if (done) return
      done = true
      try {
        cancel?.()
      } finally {
        reject(abortError(signal))
      }
    }
    const settle = (): boolean => {
      if (done) return false
      done = true
      signal.removeEventListener('abort', onAbort)
      return true
    }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      executor(
        (v) => settle() && resolve(v),
        (e) => settle() && reject(e),
      )
    } catch (e) {
      if (settle()) reject(e)
    }
  })
}

/**
 * Settles as `promise` does, or rejects with the abort error (after `cancel` ran) when `signal`
 * aborts first (or had aborted already). What `promise` settles with afterwards is ignored (its
 * rejection is handled).
 */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined, cancel?: () => void): Promise<T> {
  if (!signal) return promise
  const drop = (): void => {
    promise.catch(() => {})
    cancel?.()
  }
  if (signal.aborted) drop()
  return abortable<T>(signal, (resolve, reject) => promise.then(resolve, reject), drop)
}
