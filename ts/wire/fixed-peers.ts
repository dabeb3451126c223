/**
 * FixedPeers messages: `[1 HELLO | 2 HELLO_ACK][peer record]` or `[3 EXIT]`
 * (docs/wire.md#fixedpeers-tag-6). Decoders return null for anything malformed.
 */
import { type PeerRecord, decodePeerRecord } from '../peer'

export const HELLO = 1
export const HELLO_ACK = 2
export const EXIT = 3

export type FixedPeersMessage = { type: 'HELLO' | 'HELLO_ACK'; record: Buffer } | { type: 'EXIT' }
/** A decoded message; HELLO and HELLO_ACK also carry the decoded record. */
export type DecodedFixedPeers = { type: 'HELLO' | 'HELLO_ACK'; record: Buffer; peer: PeerRecord } | { type: 'EXIT' }

export function encodeFixedPeers(m: FixedPeersMessage): Buffer {
  if (m.type === 'EXIT') return Buffer.from([EXIT])
  return Buffer.concat([Buffer.from([m.type === 'HELLO' ? HELLO : HELLO_ACK]), m.record])
}

/** Decodes a message (the bytes after the tag); null when malformed. Bytes after EXIT's type are ignored. */
export function decodeFixedPeers(data: Buffer): DecodedFixedPeers | null {
  if (data.length === 0) return null
  if (data[0] === EXIT) return { type: 'EXIT' }
  if (data[0] !== HELLO && data[0] !== HELLO_ACK) return null
  let peer: PeerRecord
  try {
    peer = decodePeerRecord(data.subarray(1))
  } catch {
    return null
  }
  return { type: data[0] === HELLO ? 'HELLO' : 'HELLO_ACK', record: data.subarray(1), peer }
}
