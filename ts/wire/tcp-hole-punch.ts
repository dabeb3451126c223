/**
 * TcpHolePuncher messages (docs/wire.md#tcp-hole-punching-tag-11): `[type][nonce u32 BE]` then
 * nat-wire addresses, ports u16 BE and 32-byte node ids; REQ and ACCEPT zero-padded to at least
 * 96 bytes. Decoders return null for anything the layer drops as malformed.
 */
import type { Address } from '../address'
import { TOKEN_LEN } from '../protocols/address-token'
import { addrLen, readAddr, writeAddr } from '../protocols/nat-wire'

/** Type 1 was the first REQ, which carried no token: retired (an unknown type). */
export const OFFER = 2
export const ACCEPT = 3
export const GO = 4
export const FAIL = 5
/** REQ: nonce u32, token (16 bytes; zeros: none yet), then the fields of ACCEPT. */
export const REQ = 6
/** CHALLENGE: nonce u32 (of the REQ), token; exactly 21 bytes. */
export const CHALLENGE = 7
/** REQ and ACCEPT are at least this long; shorter ones are dropped. */
export const MIN_REQUEST = 96
export const ID_LEN = 32

export type TcpHolePunchMessage =
  | { type: 'ACCEPT'; nonce: number; addr: Address; punchPort: number; listenPort: number; id: Buffer; padding: number }
  | { type: 'REQ'; nonce: number; token: Buffer; addr: Address; punchPort: number; listenPort: number; id: Buffer; padding: number }
  | { type: 'CHALLENGE'; nonce: number; token: Buffer }
  | { type: 'OFFER'; nonce: number; addr: Address; id: Buffer }
  | { type: 'GO'; nonce: number; initiator: boolean; delay: number; punch: Address; listen: Address | null; id: Buffer }
  | { type: 'FAIL'; nonce: number }

export function encodeTcpHolePunch(m: TcpHolePunchMessage): Buffer {
  let b: Buffer
  switch (m.type) {
    case 'REQ':
    case 'ACCEPT': {
      const tok = m.type === 'REQ' ? TOKEN_LEN : 0
      if (m.type === 'REQ' && m.token.length !== TOKEN_LEN) throw new RangeError(`A TCP hole-punch token is ${TOKEN_LEN} bytes, got ${m.token.length}`)
      const used = 5 + tok + addrLen(m.addr) + 4 + ID_LEN
      b = Buffer.alloc(used + m.padding)
      b[0] = m.type === 'REQ' ? REQ : ACCEPT
      if (m.type === 'REQ') b.set(m.token, 5)
      const o = writeAddr(b, 5 + tok, m.addr)
      b.writeUInt16BE(m.punchPort, o)
      b.writeUInt16BE(m.listenPort, o + 2)
      m.id.copy(b, o + 4)
      break
    }
    case 'OFFER':
      b = Buffer.alloc(5 + addrLen(m.addr) + ID_LEN)
      b[0] = OFFER
      m.id.copy(b, writeAddr(b, 5, m.addr))
      break
    case 'GO': {
      b = Buffer.alloc(8 + addrLen(m.punch) + (m.listen ? addrLen(m.listen) : 1) + ID_LEN)
      b[0] = GO
      b[5] = m.initiator ? 1 : 0
      b.writeUInt16BE(m.delay, 6)
      let o = writeAddr(b, 8, m.punch)
      if (m.listen) o = writeAddr(b, o, m.listen)
      else b[o++] = 0
      m.id.copy(b, o)
      break
    }
    case 'FAIL':
      b = Buffer.alloc(5)
      b[0] = FAIL
      break
    case 'CHALLENGE':
      if (m.token.length !== TOKEN_LEN) throw new RangeError(`A TCP hole-punch token is ${TOKEN_LEN} bytes, got ${m.token.length}`)
      b = Buffer.alloc(5 + TOKEN_LEN)
      b[0] = CHALLENGE
      b.set(m.token, 5)
      break
  }
  b.writeUInt32BE(m.nonce >>> 0, 1)
  return b
}

export function decodeTcpHolePunch(data: Buffer): TcpHolePunchMessage | null {
  if (data.length < 5) return null
  const nonce = data.readUInt32BE(1)
  switch (data[0]) {
    case REQ:
    case ACCEPT: {
      const tok = data[0] === REQ ? TOKEN_LEN : 0
      if (data.length < MIN_REQUEST) return null
      const a = readAddr(data, 5 + tok)
      if (!a || a[1] + 4 + ID_LEN > data.length) return null
      const punchPort = data.readUInt16BE(a[1])
      if (punchPort === 0) return null
      const end = a[1] + 4 + ID_LEN
      const fields = { nonce, addr: a[0], punchPort, listenPort: data.readUInt16BE(a[1] + 2), id: data.subarray(a[1] + 4, end), padding: data.length - end }
      return data[0] === REQ ? { type: 'REQ', token: Buffer.from(data.subarray(5, 5 + TOKEN_LEN)), ...fields } : { type: 'ACCEPT', ...fields }
    }
    case CHALLENGE:
      return data.length === 5 + TOKEN_LEN ? { type: 'CHALLENGE', nonce, token: Buffer.from(data.subarray(5)) } : null
    case OFFER: {
      const a = readAddr(data, 5)
      if (!a || a[1] + ID_LEN !== data.length) return null
      return { type: 'OFFER', nonce, addr: a[0], id: data.subarray(a[1]) }
    }
    case GO: {
      if (data.length < 8) return null
      const role = data[5]
      const pp = readAddr(data, 8)
      if (!pp || role > 1) return null
      let listen: Address | null = null
      let o = pp[1]
      if (data[o] === 0) o += 1
      else {
        const l = readAddr(data, o)
        if (!l) return null
        listen = l[0]
        o = l[1]
      }
      if (o + ID_LEN !== data.length) return null
      return { type: 'GO', nonce, initiator: role === 1, delay: data.readUInt16BE(6), punch: pp[0], listen, id: data.subarray(o) }
    }
    case FAIL:
      return data.length === 5 ? { type: 'FAIL', nonce } : null
    default:
      return null
  }
}
