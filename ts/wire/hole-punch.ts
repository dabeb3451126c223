/**
 * HolePuncher messages (docs/wire.md#hole-punching-tag-9): `[type][nonce u32 BE]` then addresses
 * in the nat-wire encoding, or zero padding for PROBE and PUNCH. The HolePuncher layer
 * (ts/protocols/hole-puncher.ts) encodes and decodes every datagram here. Decoders return null for
 * anything the layer drops as malformed: an unknown type, a bad address, bytes after the last
 * address, a PROBE or PUNCH shorter than {@link PADDED}.
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
/** PROBE and PUNCH are padded to the size of the largest answer (type + nonce + addr). */
export const PADDED = 1 + 4 + MAX_ADDR_LEN

export type HolePunchMessage =
  | { type: 'PROBE' | 'PUNCH'; nonce: number; padding: number }
  | { type: 'OBSERVED' | 'INTRO_FAIL' | 'PUNCH_ACK'; nonce: number; addr: Address }
  | { type: 'INTRO_REQ'; nonce: number; token: Buffer; addr: Address }
  | { type: 'INTRO_CHALLENGE'; nonce: number; token: Buffer }
  | { type: 'INTRO'; nonce: number; peer: Address; you: Address }

const CODES = { PROBE, OBSERVED, INTRO, INTRO_FAIL, PUNCH, PUNCH_ACK, INTRO_REQ, INTRO_CHALLENGE } as const
const NAMES = ['', 'PROBE', 'OBSERVED', '', 'INTRO', 'INTRO_FAIL', 'PUNCH', 'PUNCH_ACK', 'INTRO_REQ', 'INTRO_CHALLENGE'] as const

export function encodeHolePunch(m: HolePunchMessage): Buffer {
  const tok = 'token' in m ? TOKEN_LEN : 0
  if ('token' in m && m.token.length !== TOKEN_LEN) throw new RangeError(`A hole-punch token is ${TOKEN_LEN} bytes, got ${m.token.length}`)
  const len = 'padding' in m ? 5 + m.padding : 'addr' in m ? 5 + tok + addrLen(m.addr) : 'peer' in m ? 5 + addrLen(m.peer) + addrLen(m.you) : 5 + tok
  const b = Buffer.alloc(len)
  b[0] = CODES[m.type]
  b.writeUInt32BE(m.nonce >>> 0, 1)
  if ('token' in m) b.set(m.token, 5)
  if ('addr' in m) writeAddr(b, 5 + tok, m.addr)
  else if ('peer' in m) writeAddr(b, writeAddr(b, 5, m.peer), m.you)
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
    default:
      return null
  }
}
