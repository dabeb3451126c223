/**
 * Randomness for layers: `ctx.random` (see {@link LayerContext}). A layer draws its request ids,
 * nonces that need not be secret, random lookup targets and the like from it, never from
 * `Math.random`, so that a simulated stack is reproducible from the network's seed alone.
 *
 * Over real sockets it is {@link cryptoRandom} (the OS generator). A SimulatedNetwork gives each
 * node a seeded stream (a fork of its seed), and the node's Stack gives each layer its own fork of
 * that, in start order (bottom-up): a layer that draws more does not shift another layer's draws.
 * Secrets (keys, MAC secrets) keep coming from `node:crypto`.
 */
import { randomBytes, randomFillSync } from 'node:crypto'

/** A source of random bits (the simulator's `Random` is one). */
export interface LayerRandom {
  /** The next 32 random bits, as an unsigned integer. */
  u32(): number
  /** Fills `out` with random bytes; returns it. */
  bytes(out: Uint8Array): Uint8Array
  /** An independent stream derived from this one (deterministic for a seeded source). */
  fork(): LayerRandom
}

/** The OS's cryptographic generator; its forks are itself. */
export const cryptoRandom: LayerRandom = Object.freeze({
  u32: (): number => randomBytes(4).readUInt32LE(0),
  bytes: (out: Uint8Array): Uint8Array => randomFillSync(out),
  fork: (): LayerRandom => cryptoRandom,
})
