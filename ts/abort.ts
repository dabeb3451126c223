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

/**
 * Callers waiting for one event (a layer joined, a stream credit came back): `wait(signal)`
 * resolves when `resolveAll` runs, rejects with `rejectAll`'s error, or with ERR_DECCOM_ABORTED
 * when its signal aborts first (then it leaves the list; no listener stays behind).
 */
export class Waiters {
  readonly #list: { resolve: (v: undefined) => void; reject: (e: unknown) => void }[] = []

  /** Waiting callers. */
  get size(): number {
    return this.#list.length
  }

  wait(signal?: AbortSignal): Promise<void> {
    let w: { resolve: (v: undefined) => void; reject: (e: unknown) => void } | undefined
    return abortable<undefined>(
      signal,
      (resolve, reject) => {
        w = { resolve, reject }
        this.#list.push(w)
      },
      () => {
        const i = w ? this.#list.indexOf(w) : -1
        if (i >= 0) this.#list.splice(i, 1)
      },
    )
  }

  resolveAll(): void {
    for (const w of this.#list.splice(0)) w.resolve(undefined)
  }

  rejectAll(err: Error): void {
    for (const w of this.#list.splice(0)) w.reject(err)
  }
}
