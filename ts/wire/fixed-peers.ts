/**
 * FixedPeers messages: `[1 HELLO | 2 HELLO_ACK][peer record]` or `[3 EXIT]`
 * (docs/wire.md#fixedpeers-tag-6). Decoders return null for anything malformed.
 */
import { decodePeerRecord } from '../peer'

export const HELLO = 1
export const HELLO_ACK = 2
export const EXIT = 3

export type FixedPeersMessage = { type: 'HELLO' | 'HELLO_ACK'; record: Buffer } | { type: 'EXIT' }

export function encodeFixedPeers(m: FixedPeersMessage): Buffer {
  if (m.type === 'EXIT') return Buffer.from([EXIT])
  return Buffer.concat([Buffer.from([m.type === 'HELLO' ? HELLO : HELLO_ACK]), m.record])
}

export function decodeFixedPeers(data: Buffer): FixedPeersMessage | null {
  if (data.length === 0) return null
  if (data[0] === EXIT) return { type: 'EXIT' }
  if (data[0] !== HELLO && data[0] !== HELLO_ACK) return null
  try {
    decodePeerRecord(data.subarray(1))
  } catch {
    return null
  }
  return { type: data[0] === HELLO ? 'HELLO' : 'HELLO_ACK', record: data.subarray(1) }
}
