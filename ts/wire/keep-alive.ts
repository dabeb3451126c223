/**
 * KeepAlive messages (docs/wire.md#keepalive-tag-7): `[0x01 PING | 0x02 PONG][id u32 BE]`, exactly
 * 5 bytes after the layer tag. The bytes are those of the transport ping (./ping.ts), so this module
 * is that codec under the KeepAlive layer's names: one implementation for both. The KeepAlive layer
 * (ts/protocols/keep-alive.ts) encodes and decodes every datagram here; anything else is dropped and
 * counted (`dropped_malformed`).
 */
import { PING, PING_LEN, PONG, type PingMessage, decodePing, encodePing } from './ping'

export { PING, PONG }
/** Length of a KeepAlive ping or pong after the layer tag. */
export const KEEPALIVE_LEN = PING_LEN
export type KeepAliveMessage = PingMessage

/** Encodes a KeepAlive ping or pong. */
export function encodeKeepAlive(m: KeepAliveMessage): Buffer {
  return encodePing(m)
}

/** Decodes a KeepAlive ping or pong; null (drop, count `dropped_malformed`) for anything else. */
export function decodeKeepAlive(b: Uint8Array): KeepAliveMessage | null {
  return decodePing(b)
}
