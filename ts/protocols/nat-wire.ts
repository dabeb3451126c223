/**
 * Address encoding shared by HolePuncher and Relay (see docs/nat.md).
 *
 * | bytes     | IPv4            | IPv6             |
 * |-----------|-----------------|------------------|
 * | 0         | 4               | 6                |
 * | 1..       | 4 address bytes | 16 address bytes |
 * | then 2    | port, u16 BE    | port, u16 BE     |
 *
 * docs/wire.md#address-encodings. 7 bytes for IPv4, 19 for IPv6. Decoding checks every length and returns null on anything malformed.
 */
import type { Address } from '../address'
import { compressV6, toAddress } from '../address'

/** Longest encoded address. */
export const MAX_ADDR_LEN = 19

/** Encoded length of `a`. */
export function addrLen(a: Address): number {
  return a.family === 4 ? 7 : 19
}

/** Writes `a` at `buf[off]`; returns the offset after it. */
export function writeAddr(buf: Buffer, off: number, a: Address): number {
  if (a.family === 4) {
    buf[off] = 4
    a.raw.copy(buf, off + 1, 12, 16)
    a.raw.copy(buf, off + 5, 16, 18)
    return off + 7
  }
  buf[off] = 6
  a.raw.copy(buf, off + 1, 0, 18)
  return off + 19
}

/** Reads an address at `buf[off]`: `[address, offset after it]`, or null when malformed. */
export function readAddr(buf: Uint8Array, off: number): [Address, number] | null {
  if (off >= buf.length) return null
  const fam = buf[off]
  try {
    if (fam === 4) {
      if (off + 7 > buf.length) return null
      const host = `${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}.${buf[off + 4]}`
      const port = (buf[off + 5] << 8) | buf[off + 6]
      if (port === 0) return null
      return [toAddress(host, port), off + 7]
    }
    if (fam === 6) {
      if (off + 19 > buf.length) return null
      const groups: string[] = []
      for (let i = 0; i < 8; i++) groups.push(((buf[off + 1 + 2 * i] << 8) | buf[off + 2 + 2 * i]).toString(16))
      // The canonical text, so equal addresses get equal keys.
      const host = compressV6(groups.join(':'))
      const port = (buf[off + 17] << 8) | buf[off + 18]
      if (port === 0) return null
      return [toAddress(host, port), off + 19]
    }
  } catch {
    return null
  }
  return null
}
