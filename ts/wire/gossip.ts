/**
 * Gossip messages and the record list shared with BigGossip (docs/wire.md#gossip-tag-8). The Gossip
 * layer (ts/protocols/gossip.ts) encodes and decodes every datagram here.
 *
 * A record list is `[count u8 <= 64]` then `count` × `[length u16 BE][peer record]`, each slot
 * holding exactly one record. Decoders return null for anything malformed — an unknown type, a
 * length field running past the end, a bad record, bytes after the message (EXCHANGE's padding
 * aside) — and the layer drops it and counts `dropped_malformed`.
 */
import type { PeerRecord } from '../peer'
import { decodeRecordExact } from './record'

export const EXCHANGE = 1
export const REPLY = 2
export const PING = 3
export const PONG = 4
export const FIND = 5
export const FOUND = 6
/** Most records in one list. */
export const MAX_LIST = 64
/** Bytes of a FIND before the origin record. */
export const FIND_FIXED = 44
/** Bytes of a FOUND before the record. */
export const FOUND_FIXED = 11
/** Length of a PING or PONG. */
export const PING_LEN = 5

/** Encodes a record list of as many of `records` as fit in `maxLen` bytes (and at most 64). */
export function encodeList(records: Buffer[], maxLen = Infinity): Buffer {
  const parts: Buffer[] = [Buffer.alloc(1)]
  let len = 1
  let n = 0
  for (const r of records) {
    if (n === MAX_LIST || len + 2 + r.length > maxLen) break
    const l = Buffer.alloc(2)
    l.writeUInt16BE(r.length)
    parts.push(l, r)
    len += 2 + r.length
    n++
  }
  parts[0][0] = n
  return Buffer.concat(parts)
}

/** A decoded record list: the records, their bytes, and the offset after the list. */
export interface DecodedList {
  records: PeerRecord[]
  raw: Buffer[]
  end: number
}

/** Decodes a record list at `off`; throws on malformed input (count > 64, a slot past the end, a slot not holding exactly one valid record). */
export function decodeList(data: Buffer, off: number): DecodedList {
  const n = data[off]
  if (n === undefined || n > MAX_LIST) throw new Error('bad count')
  let p = off + 1
  const records: PeerRecord[] = []
  const raw: Buffer[] = []
  for (let i = 0; i < n; i++) {
    if (p + 2 > data.length) throw new Error('truncated')
    const l = data.readUInt16BE(p)
    if (p + 2 + l > data.length) throw new Error('truncated')
    const slot = data.subarray(p + 2, p + 2 + l)
    records.push(decodeRecordExact(slot))
    raw.push(slot)
    p += 2 + l
  }
  return { records, raw, end: p }
}

/** Decodes a record list that must end exactly at the end of `data`; throws otherwise. */
export function decodeWholeList(data: Buffer, off: number): DecodedList {
  const l = decodeList(data, off)
  if (l.end !== data.length) throw new Error('bytes after the record list')
  return l
}

export type GossipMessage =
  | { type: 'EXCHANGE'; records: Buffer[]; padding: number }
  | { type: 'EXCHANGE_REPLY'; records: Buffer[] }
  | { type: 'PING' | 'PONG'; id: number }
  | { type: 'FIND'; queryHi: number; queryLo: number; hops: number; target: Buffer; origin: Buffer }
  | { type: 'FOUND'; queryHi: number; queryLo: number; record: Buffer }

/**
 * A decoded message: the fields of {@link GossipMessage} plus the decoded records in `decoded` (the
 * list's records; FIND's origin; FOUND's record), so the layer decodes each record once.
 */
export type DecodedGossip =
  | { type: 'EXCHANGE'; records: Buffer[]; padding: number; decoded: PeerRecord[] }
  | { type: 'EXCHANGE_REPLY'; records: Buffer[]; decoded: PeerRecord[] }
  | { type: 'PING' | 'PONG'; id: number }
  | { type: 'FIND'; queryHi: number; queryLo: number; hops: number; target: Buffer; origin: Buffer; decoded: PeerRecord }
  | { type: 'FOUND'; queryHi: number; queryLo: number; record: Buffer; decoded: PeerRecord }

/** A FIND: query id (hi, lo), hops left, 32-byte target, origin record. */
export function encodeFind(hi: number, lo: number, hops: number, target: Buffer, origin: Buffer): Buffer {
  const b = Buffer.alloc(FIND_FIXED + origin.length)
  b[0] = FIND
  b.writeUInt32BE(hi >>> 0, 1)
  b.writeUInt32BE(lo >>> 0, 5)
  b[9] = hops
  target.copy(b, 10)
  b.writeUInt16BE(origin.length, 42)
  origin.copy(b, 44)
  return b
}

/** A FOUND: the query id (hi, lo) and the target's record. */
export function encodeFound(hi: number, lo: number, record: Buffer): Buffer {
  const b = Buffer.alloc(FOUND_FIXED + record.length)
  b[0] = FOUND
  b.writeUInt32BE(hi >>> 0, 1)
  b.writeUInt32BE(lo >>> 0, 5)
  b.writeUInt16BE(record.length, 9)
  record.copy(b, 11)
  return b
}

/** An EXCHANGE carrying `records` (at most 64), zero-padded to `padTo` bytes in all. */
export function encodeExchange(records: Buffer[], padTo: number): Buffer {
  const body = encodeList(records)
  const b = Buffer.alloc(Math.max(1 + body.length, padTo))
  b[0] = EXCHANGE
  body.copy(b, 1)
  return b
}

/** An EXCHANGE_REPLY of as many of `records` as fit in `maxLen` bytes in all (no larger than the EXCHANGE it answers). */
export function encodeReply(records: Buffer[], maxLen = Infinity): Buffer {
  return Buffer.concat([Buffer.from([REPLY]), encodeList(records, maxLen - 1)])
}

/** A PING or a PONG. */
export function encodeGossipPing(type: 'PING' | 'PONG', id: number): Buffer {
  const b = Buffer.alloc(PING_LEN)
  b[0] = type === 'PING' ? PING : PONG
  b.writeUInt32BE(id >>> 0, 1)
  return b
}

export function encodeGossip(m: GossipMessage): Buffer {
  switch (m.type) {
    case 'EXCHANGE':
      return encodeExchange(m.records, 1 + encodeList(m.records).length + m.padding)
    case 'EXCHANGE_REPLY':
      return encodeReply(m.records)
    case 'PING':
    case 'PONG':
      return encodeGossipPing(m.type, m.id)
    case 'FIND':
      return encodeFind(m.queryHi, m.queryLo, m.hops, m.target, m.origin)
    case 'FOUND':
      return encodeFound(m.queryHi, m.queryLo, m.record)
  }
}

/** Decodes a Gossip message (the bytes after the tag), checking every record; null when malformed. */
export function decodeGossip(data: Buffer): DecodedGossip | null {
  try {
    switch (data[0]) {
      case EXCHANGE: {
        const { raw, records, end } = decodeList(data, 1)
        return { type: 'EXCHANGE', records: raw, padding: data.length - end, decoded: records }
      }
      case REPLY: {
        const { raw, records } = decodeWholeList(data, 1)
        return { type: 'EXCHANGE_REPLY', records: raw, decoded: records }
      }
      case PING:
      case PONG:
        if (data.length !== PING_LEN) return null
        return { type: data[0] === PING ? 'PING' : 'PONG', id: data.readUInt32BE(1) }
      case FIND: {
        if (data.length < FIND_FIXED) return null
        const l = data.readUInt16BE(42)
        if (FIND_FIXED + l !== data.length) return null
        const origin = data.subarray(FIND_FIXED)
        const peer = decodeRecordExact(origin)
        return { type: 'FIND', queryHi: data.readUInt32BE(1), queryLo: data.readUInt32BE(5), hops: data[9], target: data.subarray(10, 42), origin, decoded: peer }
      }
      case FOUND: {
        if (data.length < FOUND_FIXED) return null
        const l = data.readUInt16BE(9)
        if (FOUND_FIXED + l !== data.length) return null
        const record = data.subarray(FOUND_FIXED)
        const peer = decodeRecordExact(record)
        return { type: 'FOUND', queryHi: data.readUInt32BE(1), queryLo: data.readUInt32BE(5), record, decoded: peer }
      }
      default:
        return null
    }
  } catch {
    return null
  }
}
