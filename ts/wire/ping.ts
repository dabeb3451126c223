/**
 * Transport ping and KeepAlive ping: `[0x01 PING | 0x02 PONG][id u32 BE]`, exactly 5 bytes after
 * the layer tag (docs/wire.md#udp-transport-ping-tag-1, docs/wire.md#keepalive-tag-7).
 */

export const PING = 1
export const PONG = 2
/** Length of a ping or pong after the layer tag. */
export const PING_LEN = 5

export interface PingMessage {
  type: 'PING' | 'PONG'
  id: number
}

/** Encodes a ping or a pong. */
export function encodePing(m: PingMessage): Buffer {
  const b = Buffer.alloc(PING_LEN)
  b[0] = m.type === 'PING' ? PING : PONG
  b.writeUInt32BE(m.id >>> 0, 1)
  return b
}

/** Decodes a ping or a pong; null (drop, count `dropped_malformed`) for anything else. */
export function decodePing(b: Uint8Array): PingMessage | null {
  if (b.length !== PING_LEN || (b[0] !== PING && b[0] !== PONG)) return null
  return { type: b[0] === PING ? 'PING' : 'PONG', id: ((b[1] << 24) | (b[2] << 16) | (b[3] << 8) | b[4]) >>> 0 }
}
