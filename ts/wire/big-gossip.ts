/**
 * BigGossip messages: `[type][record list]` with PULL padded (docs/wire.md#biggossip-tag-5); the
 * record list is Gossip's (./gossip.ts). Decoders return null for anything malformed.
 */
import { decodeList, encodeList } from './gossip'

export const PULL = 1
export const SAMPLE = 2
export const INTRO = 3

export type BigGossipMessage = { type: 'PULL'; records: Buffer[]; padding: number } | { type: 'SAMPLE' | 'INTRO'; records: Buffer[] }

const TYPES = { PULL, SAMPLE, INTRO } as const

export function encodeBigGossip(m: BigGossipMessage): Buffer {
  const body = encodeList(m.records)
  const b = Buffer.alloc(1 + body.length + (m.type === 'PULL' ? m.padding : 0))
  b[0] = TYPES[m.type]
  body.copy(b, 1)
  return b
}

export function decodeBigGossip(data: Buffer): BigGossipMessage | null {
  const t = data[0]
  if (t !== PULL && t !== SAMPLE && t !== INTRO) return null
  try {
    const { raw, end } = decodeList(data, 1)
    if (t === PULL) return { type: 'PULL', records: raw, padding: data.length - end }
    return { type: t === SAMPLE ? 'SAMPLE' : 'INTRO', records: raw }
  } catch {
    return null
  }
}
