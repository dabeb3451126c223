/**
 * HolePuncher messages (docs/wire.md#hole-punching-tag-9): `[type][nonce u32 BE]` then addresses
 * in the nat-wire encoding, or zero padding for PROBE and PUNCH. The HolePuncher layer
 * (ts/protocols/hole-puncher.ts) encodes and decodes every datagram here. Decoders return null for
 * anything the layer drops as malformed: an unknown type, a bad address, bytes after the last
 * address, a PROBE or PUNCH shorter than {@link PADDED}, a NAT mapping byte other than 0, 1, 2.
 */
import type { Address } from '../address'
import { TOKEN_LEN } from '../protocols/address-token'
import { MAX_ADDR_LEN, addrLen, readAddr, writeAddr } from '../protocols/nat-wire'

export const PROBE = 1
export const OBSERVED = 2
/** Type 3 was the first INTRO_REQ, which carried no token: retired (an unknown type). */
export const INTRO = 4
export const INTRO_FAIL = 5
export const PUNCH = 6
export const PUNCH_ACK = 7
/** INTRO_REQ: nonce u32, token (16 bytes; zeros: none yet), addr (target). */
export const INTRO_REQ = 8
/** INTRO_CHALLENGE: nonce u32 (of the INTRO_REQ), token; exactly 21 bytes. */
export const INTRO_CHALLENGE = 9
/** INTRO_REQ_NAT: nonce u32, token (16 bytes), mapping u8 (the requester's), addr (target). */
export const INTRO_REQ_NAT = 10
/** INTRO_NAT: nonce u32, mapping u8 (the peer's, 0 when the introducer does not know it), addr (peer), addr (you). */
export const INTRO_NAT = 11
/** How a NAT maps: 0 unknown, 1 endpoint-independent (one public port for every destination), 2 endpoint-dependent. */
export type NatMapping = 'unknown' | 'independent' | 'dependent'
const MAPPINGS: readonly NatMapping[] = ['unknown', 'independent', 'dependent']

/** PROBE and PUNCH are padded to the size of the largest answer (type + nonce + addr). */
export const PADDED = 1 + 4 + MAX_ADDR_LEN

export type HolePunchMessage =
  | { type: 'PROBE' | 'PUNCH'; nonce: number; padding: number }
  | { type: 'OBSERVED' | 'INTRO_FAIL' | 'PUNCH_ACK'; nonce: number; addr: Address }
  | { type: 'INTRO_REQ'; nonce: number; token: Buffer; addr: Address }
  | { type: 'INTRO_CHALLENGE'; nonce: number; token: Buffer }
  | { type: 'INTRO'; nonce: number; peer: Address; you: Address }
  | { type: 'INTRO_REQ_NAT'; nonce: number; token: Buffer; mapping: NatMapping; addr: Address }
  | { type: 'INTRO_NAT'; nonce: number; mapping: NatMapping; peer: Address; you: Address }

const CODES = { PROBE, OBSERVED, INTRO, INTRO_FAIL, PUNCH, PUNCH_ACK, INTRO_REQ, INTRO_CHALLENGE, INTRO_REQ_NAT, INTRO_NAT } as const
const NAMES = ['', 'PROBE', 'OBSERVED', '', 'INTRO', 'INTRO_FAIL', 'PUNCH', 'PUNCH_ACK', 'INTRO_REQ', 'INTRO_CHALLENGE', 'INTRO_REQ_NAT', 'INTRO_NAT'] as const

export function encodeHolePunch(m: HolePunchMessage): Buffer {
  // The fixed part: type, nonce, then the token and the mapping byte where the type has them.
  const head = 5 + ('token' in m ? TOKEN_LEN : 0) + ('mapping' in m ? 1 : 0)
  if ('token' in m && m.token.length !== TOKEN_LEN) throw new RangeError(`A hole-punch token is ${TOKEN_LEN} bytes, got ${m.token.length}`)
  const len = 'padding' in m ? 5 + m.padding : 'addr' in m ? head + addrLen(m.addr) : 'peer' in m ? head + addrLen(m.peer) + addrLen(m.you) : head
  const b = Buffer.alloc(len)
  b[0] = CODES[m.type]
  b.writeUInt32BE(m.nonce >>> 0, 1)
  if ('token' in m) b.set(m.token, 5)
  if ('mapping' in m) {
    const code = MAPPINGS.indexOf(m.mapping)
    if (code < 0) throw new RangeError(`Unknown NAT mapping ${String(m.mapping)}`)
    b[head - 1] = code
  }
  if ('addr' in m) writeAddr(b, head, m.addr)
  else if ('peer' in m) writeAddr(b, writeAddr(b, head, m.peer), m.you)
  return b
}

export function decodeHolePunch(data: Uint8Array): HolePunchMessage | null {
  if (data.length < 5) return null
  const nonce = ((data[1] << 24) | (data[2] << 16) | (data[3] << 8) | data[4]) >>> 0
  const type = NAMES[data[0]]
  switch (type) {
    case 'PROBE':
    case 'PUNCH':
      return data.length < PADDED ? null : { type, nonce, padding: data.length - 5 }
    case 'INTRO_REQ': {
      if (data.length < 5 + TOKEN_LEN) return null
      const a = readAddr(data, 5 + TOKEN_LEN)
      return a && a[1] === data.length ? { type, nonce, token: Buffer.from(data.subarray(5, 5 + TOKEN_LEN)), addr: a[0] } : null
    }
    case 'INTRO_CHALLENGE':
      return data.length === 5 + TOKEN_LEN ? { type, nonce, token: Buffer.from(data.subarray(5)) } : null
    case 'OBSERVED':
    case 'INTRO_FAIL':
    case 'PUNCH_ACK': {
      const a = readAddr(data, 5)
      return a && a[1] === data.length ? { type, nonce, addr: a[0] } : null
    }
    case 'INTRO': {
      const p = readAddr(data, 5)
      const y = p && readAddr(data, p[1])
      return p && y && y[1] === data.length ? { type, nonce, peer: p[0], you: y[0] } : null
    }
    case 'INTRO_REQ_NAT': {
      const mapping = data.length > 5 + TOKEN_LEN ? MAPPINGS[data[5 + TOKEN_LEN]] : undefined
      const a = mapping && readAddr(data, 6 + TOKEN_LEN)
      return a && a[1] === data.length ? { type, nonce, token: Buffer.from(data.subarray(5, 5 + TOKEN_LEN)), mapping: mapping!, addr: a[0] } : null
    }
    case 'INTRO_NAT': {
      const mapping = data.length > 5 ? MAPPINGS[data[5]] : undefined
      const p = mapping && readAddr(data, 6)
      const y = p && readAddr(data, p[1])
      return p && y && y[1] === data.length ? { type, nonce, mapping: mapping!, peer: p[0], you: y[0] } : null
    }
    default:
      return null
  }
}
