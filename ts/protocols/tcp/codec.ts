/**
 * The TcpTransport wire format as pure functions (no sockets, no state): the transport encodes and
 * decodes every frame through these functions, and __test__/wire-vectors.spec.ts checks them against
 * the test vectors (docs/wire.md#tcp-streams).
 *
 * Every frame is `u32 BE body length | u8 type | body`. Types 0..{@link TCP_MAX_TAG} are data frames
 * (the type is the stream tag); 0xF0.. are control frames: HELLO, AUTH, GOAWAY, OBSERVED.
 *
 * HELLO body ({@link HELLO_FIXED} bytes + the public identity):
 * | bytes  | field                                                       |
 * |--------|-------------------------------------------------------------|
 * | 0      | version (1)                                                 |
 * | 1      | flags: 1 = an AUTH frame follows, 2 = send me an OBSERVED; other bits must be 0 |
 * | 2..34  | node id                                                     |
 * | 34..66 | the sender's connection nonce                               |
 * | 66..84 | the sender's UDP address, 18-byte raw (zero: none)          |
 * | 84..86 | the sender's TCP listening port, u16 BE (0: none)           |
 * | 86..88 | public identity length, u16 BE (≤ 256)                      |
 * | 88..   | public identity                                             |
 *
 * AUTH body: a 64-byte Ed25519 signature of {@link authMessage}. OBSERVED body: the 18-byte raw
 * address the receiver sees the connection come from. GOAWAY: empty.
 */
import net from 'node:net'
import type { Address } from '../../address'
import { compressV6, fromRawAddress, toAddress } from '../../address'

/** Frame header: u32 length + u8 type. */
export const TCP_HEADER_SIZE = 5
/** Highest type byte of a data frame (its stream tag); 0xF0.. are control frames. */
export const TCP_MAX_TAG = 0xef
export const T_HELLO = 0xf0
export const T_AUTH = 0xf1
export const T_GOAWAY = 0xf2
export const T_OBSERVED = 0xf3
/** HELLO flags: an AUTH frame follows; the sender reads OBSERVED frames (so send it one). */
export const FLAG_AUTH = 1
export const FLAG_OBSERVED = 2
/** Every HELLO flag bit this version knows; a HELLO with another bit set is refused. */
export const KNOWN_FLAGS = FLAG_AUTH | FLAG_OBSERVED
export const RAW_ADDR_LEN = 18
export const VERSION = 1
export const HELLO_FIXED = 88
export const MAX_HELLO = 512
export const MAX_PUBLIC_IDENTITY = 256
export const SIG_LEN = 64
export const NONCE_LEN = 32
export const AUTH_DOMAIN = Buffer.from('deccom-tcp-auth-v1')
export const ZERO_ADDR = Buffer.alloc(RAW_ADDR_LEN)

/** The 5-byte header of a frame of `length` body bytes and type `type`. */
export function encodeFrameHeader(length: number, type: number): Buffer {
  const hdr = Buffer.allocUnsafe(TCP_HEADER_SIZE)
  hdr.writeUInt32BE(length, 0)
  hdr[4] = type
  return hdr
}

/** A whole frame: header and body. */
export function encodeFrame(type: number, body: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(TCP_HEADER_SIZE + body.length)
  buf.writeUInt32BE(body.length, 0)
  buf[4] = type
  buf.set(body, TCP_HEADER_SIZE)
  return buf
}

/** The largest body a control frame of `type` may have (0: unknown type). */
export function controlLimit(type: number): number {
  return type === T_HELLO ? MAX_HELLO : type === T_AUTH ? SIG_LEN : type === T_OBSERVED ? RAW_ADDR_LEN : 0
}

/**
 * What a receiver does with a frame header, checked before anything is allocated for the body:
 * `'ok'`; `'oversized'` for a data frame longer than `maxFrameSize`; `'malformed'` for an unknown
 * control type (0xF4..0xFF) or a control frame longer than its limit. Both close the connection.
 */
export function checkFrameHeader(type: number, length: number, maxFrameSize: number): 'ok' | 'oversized' | 'malformed' {
  if (type <= TCP_MAX_TAG) return length > maxFrameSize ? 'oversized' : 'ok'
  return type > T_OBSERVED || length > controlLimit(type) ? 'malformed' : 'ok'
}

/** The fields of a HELLO. */
export interface Hello {
  id: Buffer
  nonce: Buffer
  /** Public identity; empty or null when none is announced. */
  publicIdentity: Buffer | null
  wantsAuth: boolean
  wantsObserved: boolean
  /** 18-byte raw UDP address; all zero when none. */
  udpRaw: Buffer
  tcpPort: number
}

/** The HELLO body. A public identity longer than {@link MAX_PUBLIC_IDENTITY} is left out (and then no AUTH is announced). */
export function encodeHello(h: { id: Buffer; nonce: Buffer; publicIdentity: Buffer; canSign: boolean; udpRaw: Buffer | null; tcpPort: number }): Buffer {
  const pub = h.publicIdentity.length <= MAX_PUBLIC_IDENTITY ? h.publicIdentity : Buffer.alloc(0)
  const body = Buffer.alloc(HELLO_FIXED + pub.length)
  body[0] = VERSION
  body[1] = (h.canSign && pub.length > 0 ? FLAG_AUTH : 0) | FLAG_OBSERVED
  h.id.copy(body, 2)
  h.nonce.copy(body, 34)
  ;(h.udpRaw ?? ZERO_ADDR).copy(body, 66)
  body.writeUInt16BE(h.tcpPort, 84)
  body.writeUInt16BE(pub.length, 86)
  pub.copy(body, HELLO_FIXED)
  return body
}

/**
 * A HELLO body's fields (copies), or null when it is malformed: wrong version or length, an unknown
 * flag bit, a public identity longer than allowed, or AUTH announced without a 33-byte Ed25519
 * public identity.
 */
export function decodeHello(b: Buffer): Hello | null {
  if (b.length < HELLO_FIXED || b[0] !== VERSION || (b[1] & ~KNOWN_FLAGS) !== 0) return null
  const pubLen = b.readUInt16BE(86)
  if (b.length !== HELLO_FIXED + pubLen || pubLen > MAX_PUBLIC_IDENTITY) return null
  const publicIdentity = pubLen > 0 ? Buffer.from(b.subarray(HELLO_FIXED)) : null
  const wantsAuth = (b[1] & FLAG_AUTH) !== 0
  if (wantsAuth && (publicIdentity === null || publicIdentity[0] !== 0x01 || publicIdentity.length !== 33)) return null
  return {
    id: Buffer.from(b.subarray(2, 34)),
    nonce: Buffer.from(b.subarray(34, 66)),
    publicIdentity,
    wantsAuth,
    wantsObserved: (b[1] & FLAG_OBSERVED) !== 0,
    udpRaw: b.subarray(66, 84),
    tcpPort: b.readUInt16BE(84),
  }
}

/** What an AUTH signs: the domain, the peer's nonce, the signer's nonce, the signer's id, the peer's id. */
export function authMessage(peerNonce: Buffer, ownNonce: Buffer, ownId: Buffer, peerId: Buffer): Buffer {
  return Buffer.concat([AUTH_DOMAIN, peerNonce, ownNonce, ownId, peerId])
}

/** An OBSERVED body: the 18-byte raw form of the address the connection comes from. */
export function encodeObserved(remote: Address): Buffer {
  return Buffer.from(remote.raw)
}

/**
 * An OBSERVED body: `'malformed'` when it is not 18 bytes, null when it names port 0 or no usable
 * address, else the address (an unspecified host stays unspecified: there is no fallback).
 */
export function decodeObserved(body: Buffer): Address | null | 'malformed' {
  if (body.length !== RAW_ADDR_LEN) return 'malformed'
  return body.readUInt16BE(16) === 0 ? null : decodeRaw(body, '')
}

/** Decodes an 18-byte raw address; an unspecified host becomes `fallbackHost`. */
export function decodeRaw(raw: Buffer, fallbackHost: string): Address | null {
  try {
    const addr = fromRawAddress(raw)
    return addr.host === '0.0.0.0' || addr.host === '::' ? toAddress(net.isIPv6(fallbackHost) ? compressV6(fallbackHost) : fallbackHost, addr.port) : addr
  } catch {
    return null
  }
}

/** `::ffff:1.2.3.4` → `1.2.3.4`; other hosts unchanged. */
export function stripMapped(host: string): string {
  return host.startsWith('::ffff:') && net.isIPv4(host.slice(7)) ? host.slice(7) : host
}
