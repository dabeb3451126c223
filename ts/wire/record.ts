/**
 * A peer record carried in a slot of known length (docs/wire.md#peer-record): the slot must hold
 * exactly one record. The native codec (`deccom-core::wire::peer_record`) decodes the record at
 * the front and says how many bytes it took; bytes after the record are refused, never ignored.
 */
import { type PeerRecord, decodePeerRecordPrefix } from '../peer'

/** Decodes `slot` as exactly one peer record; throws when it is malformed or has bytes after the record. */
export function decodeRecordExact(slot: Uint8Array): PeerRecord {
  const { record, length } = decodePeerRecordPrefix(slot)
  if (length !== slot.length) throw new Error('bytes after the peer record')
  return record
}
