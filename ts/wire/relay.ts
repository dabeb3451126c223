/**
 * Relay messages (docs/wire.md#relay-tag-10): `[type]` then a nonce u32 BE and/or a nat-wire
 * address; DATA and FWD carry the inner layer tag and payload; ALLOCATE and CHALLENGE carry a
 * 16-byte return-routability token. The Relay layer (ts/protocols/relay.ts) encodes and decodes
 * every datagram here. Decoders return null for anything the layer drops as malformed: an unknown
 * type (type 1, the token-less ALLOC of the first version, is retired and unknown), reason or flag,
 * a bad address, a wrong length (every message but DATA and FWD has exactly one length).
 */
import type { Address } from '../address'
import { addrLen, readAddr, writeAddr } from '../protocols/nat-wire'

/** Type 1 (ALLOC without a token) is retired: decoded as unknown. */
export const ALLOC_OK = 2
export const ALLOC_REFUSED = 3
export const DATA = 4
export const FWD = 5
export const QUERY = 6
export const QUERY_REPLY = 7
export const RELEASE = 8
export const ALLOCATE = 9
export const CHALLENGE = 10
/** Length of a return-routability token (ts/protocols/address-token.ts makes and checks them). */
export { TOKEN_LEN } from '../protocols/address-token'
import { TOKEN_LEN } from '../protocols/address-token'
/** ALLOCATE and CHALLENGE: type, nonce u32, token. The answers to an ALLOCATE are never longer. */
export const ALLOCATE_LEN = 5 + TOKEN_LEN
export const REFUSED_NOT_RELAY = 1
export const REFUSED_FULL = 2

export type RelayMessage =
  | { type: 'RELEASE' | 'ALLOC_OK'; nonce: number }
  | { type: 'ALLOCATE' | 'CHALLENGE'; nonce: number; token: Buffer }
  | { type: 'ALLOC_REFUSED'; nonce: number; reason: number }
  | { type: 'DATA' | 'FWD'; addr: Address; tag: number; payload: Buffer }
  | { type: 'QUERY'; nonce: number; addr: Address }
  | { type: 'QUERY_REPLY'; nonce: number; present: boolean }

const CODES = { ALLOC_OK, ALLOC_REFUSED, DATA, FWD, QUERY, QUERY_REPLY, RELEASE, ALLOCATE, CHALLENGE } as const
const NAMES = ['', '', 'ALLOC_OK', 'ALLOC_REFUSED', 'DATA', 'FWD', 'QUERY', 'QUERY_REPLY', 'RELEASE', 'ALLOCATE', 'CHALLENGE'] as const

export function encodeRelay(m: RelayMessage): Buffer {
  if (m.type === 'DATA' || m.type === 'FWD') {
    // Every byte is written below (the payload may be large: relayed traffic).
    const b = Buffer.allocUnsafe(1 + addrLen(m.addr) + 1 + m.payload.length)
    b[0] = CODES[m.type]
    const off = writeAddr(b, 1, m.addr)
    b[off] = m.tag
    b.set(m.payload, off + 1)
    return b
  }
  return encodeNonced(m as Exclude<RelayMessage, { type: 'DATA' | 'FWD' }>)
}

function encodeNonced(m: Exclude<RelayMessage, { type: 'DATA' | 'FWD' }>): Buffer {
  const len =
    m.type === 'QUERY' ? 5 + addrLen(m.addr) : m.type === 'ALLOCATE' || m.type === 'CHALLENGE' ? ALLOCATE_LEN : m.type === 'RELEASE' || m.type === 'ALLOC_OK' ? 5 : 6
  const b = Buffer.alloc(len)
  b[0] = CODES[m.type]
  b.writeUInt32BE(m.nonce >>> 0, 1)
  if (m.type === 'QUERY') writeAddr(b, 5, m.addr)
  else if (m.type === 'ALLOCATE' || m.type === 'CHALLENGE') {
    if (m.token.length !== TOKEN_LEN) throw new RangeError(`A relay token is ${TOKEN_LEN} bytes, got ${m.token.length}`)
    m.token.copy(b, 5)
  }
  else if (m.type === 'ALLOC_REFUSED') b[5] = m.reason
  else if (m.type === 'QUERY_REPLY') b[5] = m.present ? 1 : 0
  return b
}

export function decodeRelay(data: Buffer): RelayMessage | null {
  if (data.length < 1) return null
  const type = NAMES[data[0]]
  switch (type) {
    case 'ALLOCATE':
    case 'CHALLENGE':
      return data.length === ALLOCATE_LEN ? { type, nonce: data.readUInt32BE(1), token: Buffer.from(data.subarray(5)) } : null
    case 'RELEASE':
    case 'ALLOC_OK':
      return data.length === 5 ? { type, nonce: data.readUInt32BE(1) } : null
    case 'ALLOC_REFUSED': {
      const reason = data[5]
      return data.length === 6 && (reason === REFUSED_NOT_RELAY || reason === REFUSED_FULL) ? { type, nonce: data.readUInt32BE(1), reason } : null
    }
    case 'DATA':
    case 'FWD': {
      const a = readAddr(data, 1)
      if (!a || a[1] >= data.length) return null
      return { type, addr: a[0], tag: data[a[1]], payload: data.subarray(a[1] + 1) }
    }
    case 'QUERY': {
      const a = data.length >= 5 ? readAddr(data, 5) : null
      return a && a[1] === data.length ? { type, nonce: data.readUInt32BE(1), addr: a[0] } : null
    }
    case 'QUERY_REPLY':
      return data.length === 6 && data[5] <= 1 ? { type, nonce: data.readUInt32BE(1), present: data[5] === 1 } : null
    default:
      return null
  }
}
