/** Waiting helpers for tests on real sockets: bounded polling, never an open-ended wait. */

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `cond` every 10 ms until it holds (true) or `ms` pass (false). */
export async function until(cond: () => boolean, ms = 3000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(10)) if (cond()) return true
  return cond()
}

/** A counter from `stats()`, 0 when absent. */
export const n = (v: number | undefined): number => v ?? 0

/** A deterministic xorshift32 stream in [0, 1) for picking test inputs (not the simulator's). */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 0x1_0000_0000
  }
}
