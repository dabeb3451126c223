/**
 * The impairment model for JavaScript drivers: FaultyTransport and Delay when they run in
 * JavaScript, and every link of a SimulatedNetwork. It is the model of deccom-core
 * (`crates/deccom-core/src/impair.rs`, which documents the exact decision procedure), called
 * through the native `Impairment` class: the same seed and the same sequence of datagram sizes
 * give the same decisions here and in the socket thread.
 *
 * ```ts
 * const m = new ImpairModel(seed, { drop: 0.1, latency: 5, jitter: 2 })
 * const code = m.offer(clock.now(), data.length + 1) // the wire size: tag + payload
 * const copies = code & IMPAIR_COPIES               // 0, 1 or 2
 * verdict[0], verdict[1]                            // due time (ms) of each copy
 * verdict[2]                                        // bit to flip (>= 8: never the tag byte), or -1
 * ```
 */
import type * as Binding from '../../native/index'
import { native } from '../native'

/** Bits of the code {@link ImpairModel.offer} returns. */
export const IMPAIR_COPIES = 0b11
export const IMPAIR_LOST = 1 << 2
export const IMPAIR_QUEUE_FULL = 1 << 3
export const IMPAIR_DUPLICATED = 1 << 4
export const IMPAIR_REORDERED = 1 << 5
export const IMPAIR_CORRUPTED = 1 << 6

/**
 * Where {@link ImpairModel.offer} writes the details of its latest verdict: the due time of the
 * first and second copy, and the bit to flip (-1 for none). Read it right after the call.
 */
export const verdict = new Float64Array(3)

/**
 * Parameters: probabilities 0..1, times in ms, bandwidth in bytes per ms (omitted, 0 or Infinity:
 * none). The native options type: the core sanitizes every value (NaN, negative, infinite).
 */
export type ImpairParams = Binding.ImpairOptions

/** One seeded instance of the model (a link, or one direction of a test layer). */
export class ImpairModel {
  readonly #m: InstanceType<typeof native.Impairment>

  /** `seed`: an unsigned 32-bit integer (see `seedToU32`). */
  constructor(seed: number, params: ImpairParams) {
    this.#m = new native.Impairment(seed >>> 0, params)
  }

  /** Replaces the parameters; the random stream and the link's backlog carry on. */
  configure(params: ImpairParams): void {
    this.#m.configure(params)
  }

  /** The verdict for a datagram of `len` wire bytes offered at `now` ms (details in {@link verdict}). */
  offer(now: number, len: number): number {
    return this.#m.offer(now, len, verdict)
  }

  /** True when nothing waits for serialization at `now`. */
  idle(now: number): boolean {
    return this.#m.idle(now)
  }

  /** Counters: offered, passed, lost, queueFull, duplicated, reordered, corrupted. */
  stats(): Record<string, number> {
    return { ...this.#m.stats() }
  }
}

/** A copy of the payload `data` with wire bit `bit` flipped (bit 8 is the payload's first bit). */
export function corruptPayload(data: Uint8Array, bit: number): Buffer {
  const out = Buffer.from(data)
  const b = bit - 8
  if (b >= 0 && b >>> 3 < out.length) out[b >>> 3] ^= 1 << (b & 7)
  return out
}

/** Properties of a one-way link, as a SimulatedNetwork's `LinkSpec` gives them. Times in virtual milliseconds. */
export interface LinkParams {
  /** One-way propagation delay, ms (default 5). */
  latency: number
  /** Uniform random extra delay in [0, jitter) ms per datagram (default 0). Jitter can reorder. */
  jitter: number
  /** Bytes per ms (1000 = 1 MB/s); Infinity (default): no serialization delay, no queue. */
  bandwidth: number
  /** Probability 0..1 that a datagram is lost (default 0). */
  loss: number
  /** Probability 0..1 that a datagram is delivered twice (default 0). */
  duplicate: number
  /** Probability 0..1 that a datagram is held back by an extra random delay (default 0). */
  reorder: number
  /** Upper bound of that extra delay, ms (default: max(latency, 1)). */
  reorderDelay?: number
  /** Probability 0..1 that one bit of a datagram (never of its tag byte) is flipped (default 0). */
  corrupt: number
  /** Bytes waiting for serialization on this link beyond which datagrams are dropped (default 16 MiB). */
  maxQueueBytes: number
}

/** A link spec as model parameters: `loss` is the drop probability; `reorderDelay` defaults to max(latency, 1). */
export function linkParams(l: LinkParams): ImpairParams {
  return {
    drop: l.loss,
    duplicate: l.duplicate,
    reorder: l.reorder,
    corrupt: l.corrupt,
    latency: l.latency,
    jitter: l.jitter,
    reorderDelay: l.reorderDelay ?? Math.max(l.latency, 1),
    bandwidth: l.bandwidth,
    maxQueueBytes: l.maxQueueBytes,
  }
}

/** True when two link specs configure the model the same way (no need to tell it again). */
export function sameLinkParams(a: LinkParams, b: LinkParams): boolean {
  return (
    a.loss === b.loss &&
    a.duplicate === b.duplicate &&
    a.reorder === b.reorder &&
    a.corrupt === b.corrupt &&
    a.latency === b.latency &&
    a.jitter === b.jitter &&
    a.reorderDelay === b.reorderDelay &&
    a.bandwidth === b.bandwidth &&
    a.maxQueueBytes === b.maxQueueBytes
  )
}
