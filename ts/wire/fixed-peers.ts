/**
 * FixedPeers messages: `[1 HELLO | 2 HELLO_ACK][peer record]` or `[3 EXIT]`
 * (docs/wire.md#fixedpeers-tag-6). The FixedPeers layer (ts/protocols/fixed-peers.ts) encodes and
 * decodes every datagram here. Decoders return null for anything malformed, bytes after the record
 * or after EXIT's type byte included.
 */
import type { PeerRecord } from '../peer'
import { decodeRecordExact } from './record'

export const HELLO = 1
export const HELLO_ACK = 2
export const EXIT = 3

export type FixedPeersMessage = { type: 'HELLO' | 'HELLO_ACK'; record: Buffer } | { type: 'EXIT' }
/** A decoded message; HELLO and HELLO_ACK also carry the decoded record. */
export type DecodedFixedPeers = { type: 'HELLO' | 'HELLO_ACK'; record: Buffer; decoded: PeerRecord } | { type: 'EXIT' }

export function encodeFixedPeers(m: FixedPeersMessage): Buffer {
  if (m.type === 'EXIT') return Buffer.from([EXIT])
  return Buffer.concat([Buffer.from([m.type === 'HELLO' ? HELLO : HELLO_ACK]), m.record])
}

/** Decodes a message (the bytes after the tag); null when malformed. */
export function decodeFixedPeers(data: Buffer): DecodedFixedPeers | null {
  if (data.length === 0) return null
  if (data[0] === EXIT) return data.length === 1 ? { type: 'EXIT' } : null
  if (data[0] !== HELLO && data[0] !== HELLO_ACK) return null
  let peer: PeerRecord
  try {
    peer = decodeRecordExact(data.subarray(1))
  } catch {
    return null
  }
  return { type: data[0] === HELLO ? 'HELLO' : 'HELLO_ACK', record: data.subarray(1), decoded: peer }
}
