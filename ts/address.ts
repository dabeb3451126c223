/**
 * UDP addresses. An {@link Address} is immutable and interned: the same host and port give the same
 * object (within a bounded cache), so layers can compare addresses with `===` or by `key`, and the
 * 18-byte wire form the native socket takes is computed once per address, not once per datagram.
 */
import net from 'node:net'
import { DeccomError, ErrorCode, fromNative } from './errors'
import { native } from './native'

/** An IP address and UDP port. */
export class Address {
  /** `host:port` for IPv4, `[host]:port` for IPv6: unique per address, usable as a Map key. */
  readonly key: string
  /** @internal 16 bytes of IPv6 (IPv4 mapped) + port, big-endian: what the native socket sends to. */
  readonly raw: Buffer

  /** Use {@link toAddress}: it validates and interns. */
  constructor(
    /** The IP address, in canonical text form (IPv6 without brackets). */
    readonly host: string,
    /** The UDP port, 0–65535. */
    readonly port: number,
    /** The IP version. */
    readonly family: 4 | 6,
  ) {
    this.key = family === 4 ? `${host}:${port}` : `[${host}]:${port}`
    this.raw = family === 4 ? encodeV4(host, port) : encodeV6(host, port)
    Object.freeze(this)
  }

  /** The {@link key}, `host:port` or `[host]:port`. */
  toString(): string {
    return this.key
  }

  /** The address as plain JSON data: `{ host, port, family }`. */
  toJSON(): {
    /** See {@link Address.host}. */
    host: string
    /** See {@link Address.port}. */
    port: number
    /** See {@link Address.family}. */
    family: 4 | 6
  } {
    return { host: this.host, port: this.port, family: this.family }
  }
}

/** Anything {@link toAddress} accepts. */
export type AddressLike =
  | Address
  | string
  | {
      /** An IP address or a name that {@link toAddress} resolves. */
      host: string
      /** The UDP port. */
      port: number
    }
  | {
      /** The address of a peer (a {@link Peer}, say). */
      readonly address: Address
    }

const MAX_CACHE = 65_536
const cache = new Map<string, Address>()
/**
 * Every Address alive, by key, held weakly: the caches above start over when full, and a text
 * then parsed again must give the object still in use (layers key maps by Address objects).
 */
const live = new Map<string, WeakRef<Address>>()
const gone = new FinalizationRegistry<string>((key) => {
  if (live.get(key)?.deref() === undefined) live.delete(key)
})

/** The live Address with `addr`'s key, or `addr` (now the live one). */
function intern(addr: Address): Address {
  const held = live.get(addr.key)?.deref()
  if (held !== undefined) return held
  live.set(addr.key, new WeakRef(addr))
  gone.register(addr, addr.key)
  return addr
}
/** `"host:port"` texts already parsed, to their address. */
const byText = new Map<string, Address>()

function encodeV4(host: string, port: number): Buffer {
  const raw = Buffer.alloc(18)
  raw[10] = 0xff
  raw[11] = 0xff
  const parts = host.split('.')
  for (let i = 0; i < 4; i++) raw[12 + i] = Number(parts[i])
  raw.writeUInt16BE(port, 16)
  return raw
}

function encodeV6(host: string, port: number): Buffer {
  try {
    return native.encodeAddress(host, port)
  } catch (e) {
    throw fromNative(e)
  }
}

function invalid(what: unknown, why: string): DeccomError {
  return new DeccomError(ErrorCode.INVALID_ADDRESS, `Invalid address ${JSON.stringify(what)}: ${why}`)
}

/** Parses `"1.2.3.4:5"`, `"[::1]:5"`, `{ host, port }` or a Peer into an interned {@link Address}. */
export function toAddress(a: AddressLike): Address
export function toAddress(host: string, port: number): Address
export function toAddress(a: AddressLike, p?: number): Address {
  if (a instanceof Address) return a
  // A Peer (or anything that carries an Address): layers may be handed the authenticated Peer an
  // upper layer received, and pass it down as the destination.
  if (a !== null && typeof a === 'object' && 'address' in a && a.address instanceof Address) return a.address
  let host: string
  let port: number
  if (typeof a === 'string' && p !== undefined) {
    host = a
    port = p
  } else if (typeof a === 'string') {
    // The same text names the same address: no parsing on the hot path of a send to "host:port".
    const seen = byText.get(a)
    if (seen !== undefined) return seen
    const i = a.lastIndexOf(':')
    if (i < 0) throw invalid(a, 'expected "host:port" (IPv6 as "[host]:port")')
    host = a.slice(0, i)
    port = Number(a.slice(i + 1))
  } else if (a !== null && typeof a === 'object' && 'host' in a && typeof a.host === 'string') {
    host = a.host
    port = a.port
  } else {
    throw invalid(a, 'expected an Address, a Peer, "host:port" or { host, port }')
  }
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  const hit = cache.get(host + '|' + port)
  if (hit !== undefined) {
    if (typeof a === 'string' && p === undefined) remember(a, hit)
    return hit
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalid(a, 'the port must be an integer 0..65535')
  const family = net.isIP(host)
  if (family === 0) throw invalid(a, 'the host must be an IP address (names are not resolved)')
  const addr = intern(new Address(host, port, family as 4 | 6))
  if (cache.size >= MAX_CACHE) {
    // Start over, the texts and the IPv4 numbers too: each then gives the same object as every
    // other spelling.
    cache.clear()
    byText.clear()
    byV4.clear()
    byV4Ip.clear()
  }
  cache.set(host + '|' + port, addr)
  if (typeof a === 'string' && p === undefined) remember(a, addr)
  return addr
}

/** IPv4 addresses by `ip * 65536 + port` (a number: no text is built to find a known address). */
const byV4 = new Map<number, Address>()
/**
 * The IPv4 address last found for each IP, by the IP as a signed 32-bit integer: a small-integer
 * key, so the common case (the port it had last time) is found without boxing `ip * 65536 + port`.
 */
const byV4Ip = new Map<number, Address>()

/**
 * @internal The interned IPv4 address `a.b.c.d:port` from its bytes (each 0..255; port
 * 0..65535), as {@link toAddress} gives it. For decoders that read addresses out of datagrams: a
 * known address costs one number-keyed lookup, no text.
 */
export function ipv4Address(a: number, b: number, c: number, d: number, port: number): Address {
  const ip = (a << 24) | (b << 16) | (c << 8) | d
  const last = byV4Ip.get(ip)
  if (last !== undefined && last.port === port) return last
  const n = (ip >>> 0) * 65536 + port
  let addr = byV4.get(n)
  if (addr === undefined) {
    addr = toAddress(`${a}.${b}.${c}.${d}`, port)
    // toAddress may have just started its cache over (clearing these): the entries go in after.
    if (byV4.size >= MAX_CACHE) byV4.clear()
    byV4.set(n, addr)
  }
  if (byV4Ip.size >= MAX_CACHE) byV4Ip.clear()
  byV4Ip.set(ip, addr)
  return addr
}

/**
 * @internal The Address of an 18-byte raw address ({@link Address.raw}: IPv6, an IPv4 address
 * IPv4-mapped, then the port); an IPv4 one is interned ({@link ipv4Address}).
 * @throws ERR_DECCOM_INVALID_ADDRESS
 */
export function fromRawAddress(raw: Uint8Array): Address {
  const port = (raw[16]! << 8) | raw[17]!
  let v4 = raw[10] === 0xff && raw[11] === 0xff
  for (let i = 0; i < 10 && v4; i++) if (raw[i] !== 0) v4 = false
  if (v4) return ipv4Address(raw[12]!, raw[13]!, raw[14]!, raw[15]!, port)
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((raw[i]! << 8) | raw[i + 1]!).toString(16))
  // The canonical text: an IPv6 address read from bytes has the key of its usual spelling.
  return toAddress(compressV6(groups.join(':')), port)
}

/**
 * @internal The canonical (compressed, lower-case) text of an IPv6 address, as Node prints it:
 * {@link toAddress} keys an address by its text, so decoders that build IPv6 text from bytes
 * pass it through this.
 */
export function compressV6(host: string): string {
  return new URL(`http://[${host}]/`).hostname.slice(1, -1)
}

/** Remembers the address a `"host:port"` text parsed to (bounded like the address cache). */
function remember(text: string, addr: Address): void {
  if (byText.size >= MAX_CACHE) byText.clear()
  byText.set(text, addr)
}
