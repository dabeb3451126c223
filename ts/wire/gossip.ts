/**
 * Gossip messages and the record list shared with BigGossip (docs/wire.md#gossip-tag-8).
 *
 * A record list is `[count u8 <= 64]` then `count` × `[length u16 BE][peer record]`. Decoders return
 * null for anything malformed (the layer drops it and counts `dropped_malformed`).
 */
import { decodePeerRecord } from '../peer'

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

/** Decodes a record list at `off`; throws on malformed input. */
export function decodeList(data: Buffer, off: number): { records: ReturnType<typeof decodePeerRecord>[]; raw: Buffer[]; end: number } {
  const n = data[off]
  if (n === undefined || n > MAX_LIST) throw new Error('bad count')
  let p = off + 1
  const records = []
  const raw: Buffer[] = []
  for (let i = 0; i < n; i++) {
    if (p + 2 > data.length) throw new Error('truncated')
    const l = data.readUInt16BE(p)
    if (p + 2 + l > data.length) throw new Error('truncated')
    const slot = data.subarray(p + 2, p + 2 + l)
    records.push(decodePeerRecord(slot))
    raw.push(slot)
    p += 2 + l
  }
  return { records, raw, end: p }
}

export type GossipMessage =
  | { type: 'EXCHANGE'; records: Buffer[]; padding: number }
  | { type: 'EXCHANGE_REPLY'; records: Buffer[] }
  | { type: 'PING' | 'PONG'; id: number }
  | { type: 'FIND'; queryHi: number; queryLo: number; hops: number; target: Buffer; origin: Buffer }
  | { type: 'FOUND'; queryHi: number; queryLo: number; record: Buffer }

/** A FIND: query id (hi, lo), hops left, 32-byte target, origin record. */
export function encodeFind(hi: number, lo: number, hops: number, target: Buffer, origin: Buffer): Buffer {
  const b = Buffer.alloc(FIND_FIXED + origin.length)
  b[0] = FIND
  b.writeUInt32BE(hi, 1)
  b.writeUInt32BE(lo, 5)
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
  b.writeUInt32BE(hi, 1)
  b.writeUInt32BE(lo, 5)
  b.writeUInt16BE(record.length, 9)
  record.copy(b, 11)
  return b
}

export function encodeGossip(m: GossipMessage): Buffer {
  switch (m.type) {
    case 'EXCHANGE': {
      const body = encodeList(m.records)
      const b = Buffer.alloc(1 + body.length + m.padding)
      b[0] = EXCHANGE
      body.copy(b, 1)
      return b
    }
    case 'EXCHANGE_REPLY':
      return Buffer.concat([Buffer.from([REPLY]), encodeList(m.records)])
    case 'PING':
    case 'PONG': {
      const b = Buffer.alloc(5)
      b[0] = m.type === 'PING' ? PING : PONG
      b.writeUInt32BE(m.id >>> 0, 1)
      return b
    }
    case 'FIND':
      return encodeFind(m.queryHi, m.queryLo, m.hops, m.target, m.origin)
    case 'FOUND':
      return encodeFound(m.queryHi, m.queryLo, m.record)
  }
}

/** Decodes a Gossip message (the bytes after the tag), checking every record; null when malformed. */
export function decodeGossip(data: Buffer): GossipMessage | null {
  try {
    switch (data[0]) {
      case EXCHANGE: {
        const { raw, end } = decodeList(data, 1)
        return { type: 'EXCHANGE', records: raw, padding: data.length - end }
      }
      case REPLY:
        return { type: 'EXCHANGE_REPLY', records: decodeList(data, 1).raw }
      case PING:
      case PONG:
        if (data.length !== 5) return null
        return { type: data[0] === PING ? 'PING' : 'PONG', id: data.readUInt32BE(1) }
      case FIND: {
        if (data.length < FIND_FIXED) return null
        const l = data.readUInt16BE(42)
        const origin = data.subarray(44, 44 + l)
        decodePeerRecord(origin)
        return { type: 'FIND', queryHi: data.readUInt32BE(1), queryLo: data.readUInt32BE(5), hops: data[9], target: data.subarray(10, 42), origin }
      }
      case FOUND: {
        if (data.length < FOUND_FIXED) return null
        const l = data.readUInt16BE(9)
        const record = data.subarray(11, 11 + l)
        decodePeerRecord(record)
        return { type: 'FOUND', queryHi: data.readUInt32BE(1), queryLo: data.readUInt32BE(5), record }
      }
      default:
        return null
    }
  } catch {
    return null
  }
}
