/**
 * BigGossip messages: `[type][record list]` with PULL padded (docs/wire.md#biggossip-tag-5); the
 * record list is Gossip's (./gossip.ts). The BigGossip layer (ts/protocols/big-gossip.ts) encodes
 * and decodes every datagram here. Decoders return null for anything malformed (an unknown type, a
 * bad list, bytes after a SAMPLE's or INTRO's list).
 */
import type { PeerRecord } from '../peer'
import { decodeList, decodeWholeList, encodeList } from './gossip'

export const PULL = 1
export const SAMPLE = 2
export const INTRO = 3

export type BigGossipMessage = { type: 'PULL'; records: Buffer[]; padding: number } | { type: 'SAMPLE' | 'INTRO'; records: Buffer[] }
/** A decoded message: the fields of {@link BigGossipMessage} plus the decoded records. */
export type DecodedBigGossip = BigGossipMessage & { decoded: PeerRecord[] }

const TYPES = { PULL, SAMPLE, INTRO } as const

/** A PULL carrying `records`, zero-padded to `padTo` bytes in all. */
export function encodePull(records: Buffer[], padTo: number): Buffer {
  const body = encodeList(records)
  const b = Buffer.alloc(Math.max(1 + body.length, padTo))
  b[0] = PULL
  body.copy(b, 1)
  return b
}

/** A SAMPLE or INTRO of as many of `records` as fit in `maxLen` bytes in all. */
export function encodeSampleOrIntro(type: 'SAMPLE' | 'INTRO', records: Buffer[], maxLen = Infinity): Buffer {
  return Buffer.concat([Buffer.from([TYPES[type]]), encodeList(records, maxLen - 1)])
}

export function encodeBigGossip(m: BigGossipMessage): Buffer {
  if (m.type === 'PULL') return encodePull(m.records, 1 + encodeList(m.records).length + m.padding)
  return encodeSampleOrIntro(m.type, m.records)
}

export function decodeBigGossip(data: Buffer): DecodedBigGossip | null {
  const t = data[0]
  if (t !== PULL && t !== SAMPLE && t !== INTRO) return null
  try {
    if (t === PULL) {
      const { raw, records, end } = decodeList(data, 1)
      return { type: 'PULL', records: raw, padding: data.length - end, decoded: records }
    }
    const { raw, records } = decodeWholeList(data, 1)
    return { type: t === SAMPLE ? 'SAMPLE' : 'INTRO', records: raw, decoded: records }
  } catch {
    return null
  }
}
