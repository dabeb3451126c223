/**
 * Return-routability tokens: a stateless proof that a peer receives datagrams at the address it
 * claims, before a layer spends anything on it (a relay session, an introduction).
 *
 * A token is HMAC-SHA256(secret, time slot u64 BE || raw address)[0..16], the raw address being the
 * 18-byte `Address.raw`. It is valid in its slot and the next, so it lives one to two `slotMs`.
 * The secret is drawn at construction and on {@link AddressTokens.rotate} (a restart invalidates every
 * token). A layer answers a request without a valid token only with a challenge carrying one, no
 * larger than the request; the peer proves its address by echoing it. The wire formats that carry
 * tokens (relay ALLOCATE/CHALLENGE, hole-punch INTRO_REQ/INTRO_CHALLENGE) are in docs/wire.md.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Address } from '../address'

/** Bytes of a token on the wire. */
export const TOKEN_LEN = 16
/** The token a peer sends before it has one (never valid). */
export const NO_TOKEN: Buffer = Buffer.alloc(TOKEN_LEN)

export class AddressTokens {
  #secret: Buffer = randomBytes(32)
  readonly #slot = Buffer.alloc(8)

  /** @param slotMs milliseconds per time slot (a token lives one to two of them) */
  constructor(readonly slotMs: number) {}

  /** Draws a new secret: every token handed out so far becomes invalid. */
  rotate(): void {
    this.#secret = randomBytes(32)
  }

  /** The token for `a` at time `now` (ms on the layer's clock). */
  token(a: Address, now: number): Buffer {
    return this.#at(a, Math.floor(now / this.slotMs))
  }

  /** True when `token` is the token of `a` in the slot of `now` or the one before. */
  valid(a: Address, token: Uint8Array, now: number): boolean {
    if (token.length !== TOKEN_LEN || NO_TOKEN.equals(token)) return false
    const slot = Math.floor(now / this.slotMs)
    return timingSafeEqual(token, this.#at(a, slot)) || timingSafeEqual(token, this.#at(a, slot - 1))
  }

  #at(a: Address, slot: number): Buffer {
    this.#slot.writeBigUInt64BE(BigInt(Math.max(0, slot)))
    return createHmac('sha256', this.#secret).update(this.#slot).update(a.raw).digest().subarray(0, TOKEN_LEN)
  }
}
