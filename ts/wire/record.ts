/**
 * A peer record carried in a slot of known length (docs/wire.md#peer-record): the slot must hold
 * exactly one record. The native codec reads one record from the front of its input; this module
 * adds the length check, so that bytes after a record are refused, never ignored.
 */
import { type PeerRecord, decodePeerRecord } from '../peer'

/**
 * The length of the record at the start of `b`, read from its header fields (flags, identity
 * length, address families). Call it only on bytes `decodePeerRecord` accepted.
 */
export function recordLength(b: Uint8Array): number {
  const flags = b[1]
  let o = 36 + ((b[34] << 8) | b[35])
  o += b[o] === 4 ? 7 : 19
  if (flags & 0x01) o += 2
  if (flags & 0x02) o += b[o] === 4 ? 7 : 19
  return o
}

/** Decodes `slot` as exactly one peer record; throws when it is malformed or has bytes after the record. */
export function decodeRecordExact(slot: Uint8Array): PeerRecord {
  const r = decodePeerRecord(slot)
  if (recordLength(slot) !== slot.length) throw new Error('bytes after the peer record')
  return r
}
