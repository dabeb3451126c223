/**
 * PCP client (RFC 6887), MAP opcode for UDP over IPv4, sent to the default gateway's port 5351.
 *
 * Request (60 B): header — version 2, R=0 | opcode 1 (MAP), reserved u16, requested lifetime u32,
 * client IP (16 B, IPv4-mapped); MAP body — mapping nonce 12 B, protocol 17, reserved 3 B,
 * internal port u16, suggested external port u16, suggested external IP (16 B, ::ffff:0.0.0.0 for
 * "any"). Answer: header — version 2, R=1 | opcode (0x81), reserved u8, result code u8, lifetime
 * u32, epoch u32, reserved 12 B; then the MAP body with the assigned port and IP. The answer must
 * carry our nonce, protocol and internal port. A lifetime of 0 with the same nonce deletes.
 * Retransmits after 250, 500, 1000 ms.
 */
import { randomBytes } from 'node:crypto'
import { type PortMapping, type RequestOptions, fromV4Mapped, mappingError, udpRequest, v4Mapped } from './common'

export const PCP_PORT = 5351
const DELAYS = [250, 500, 1000] as const
const MAX_ANSWER = 1100 // RFC 6887: PCP messages are at most 1100 bytes
const MAP_LEN = 60
const UDP = 17

const RESULTS: Record<number, string> = {
  1: 'UNSUPP_VERSION',
  2: 'NOT_AUTHORIZED',
  3: 'MALFORMED_REQUEST',
  4: 'UNSUPP_OPCODE',
  5: 'UNSUPP_OPTION',
  6: 'MALFORMED_OPTION',
  7: 'NETWORK_FAILURE',
  8: 'NO_RESOURCES',
  9: 'UNSUPP_PROTOCOL',
  10: 'USER_EX_QUOTA',
  11: 'CANNOT_PROVIDE_EXTERNAL',
  12: 'ADDRESS_MISMATCH',
  13: 'EXCESSIVE_REMOTE_PEERS',
}

/** Encodes a MAP request (exported for the tests of the codec). */
export function encodePcpMap(client: string, nonce: Buffer, internalPort: number, externalPort: number, externalHost: string, lifetime: number): Buffer {
  const b = Buffer.alloc(MAP_LEN)
  b[0] = 2
  b[1] = 1
  b.writeUInt32BE(lifetime, 4)
  v4Mapped(client).copy(b, 8)
  nonce.copy(b, 24)
  b[36] = UDP
  b.writeUInt16BE(internalPort, 40)
  b.writeUInt16BE(externalPort, 42)
  v4Mapped(externalHost).copy(b, 44)
  return b
}

/** A PCP MAP response, as decoded. */
export interface PcpMapAnswer {
  /** The result code (0: success). */
  result: number
  /** Seconds the mapping is granted. */
  lifetime: number
  /** The assigned external port. */
  externalPort: number
  /** The assigned external IPv4 address. */
  externalHost: string
}

/** Decodes a MAP answer for `nonce`/`internalPort`, or null when it is not one (malformed or someone else's). */
export function decodePcpMap(m: Buffer, nonce: Buffer, internalPort: number): PcpMapAnswer | null {
  if (m.length > MAX_ANSWER || m.length % 4 !== 0) return null
  // A NAT-PMP-only router answers (version 0, 8 bytes or more) "unsupported version": a refusal.
  if (m.length >= 8 && m[0] === 0 && m[1] >= 128) return { result: 1, lifetime: 0, externalPort: 0, externalHost: '' }
  if (m.length < 24 || m[0] !== 2 || m[1] !== 0x81) return null
  const result = m[3]
  if (result !== 0) return { result, lifetime: 0, externalPort: 0, externalHost: '' }
  if (m.length < MAP_LEN) return null
  if (!m.subarray(24, 36).equals(nonce) || m[36] !== UDP || m.readUInt16BE(40) !== internalPort) return null
  const lifetime = m.readUInt32BE(4)
  const externalHost = fromV4Mapped(m.subarray(44, 60))
  // The answer to a delete (lifetime 0) may carry no address.
  if (externalHost === null && lifetime !== 0) return null
  return { result, lifetime, externalPort: m.readUInt16BE(42), externalHost: externalHost ?? '' }
}

function request(gateway: string, client: string, nonce: Buffer, internalPort: number, externalPort: number, externalHost: string, lifetime: number, opts: RequestOptions): Promise<PcpMapAnswer> {
  const req = encodePcpMap(client, nonce, internalPort, externalPort, externalHost, lifetime)
  return udpRequest(
    'pcp',
    gateway,
    opts.port ?? PCP_PORT,
    client,
    req,
    (m) => {
      const a = decodePcpMap(m, nonce, internalPort)
      if (a === null) {
        opts.onMalformed?.('pcp: bad answer')
        return undefined
      }
      if (a.result !== 0) {
        throw mappingError('pcp', 'refused', `the router refused: ${RESULTS[a.result] ?? `result ${a.result}`}`, { result: a.result })
      }
      return a
    },
    DELAYS,
    opts,
  )
}

/**
 * Maps UDP `internalPort` of `client` (our address toward the gateway; PCP checks it is the
 * request's source) for `lifetime` seconds, suggesting `externalPort`.
 */
export async function pcpMap(gateway: string, client: string, internalPort: number, externalPort: number, lifetime: number, opts: RequestOptions = {}, nonceHex?: string): Promise<PortMapping> {
  const nonce = nonceHex ? Buffer.from(nonceHex, 'hex') : randomBytes(12)
  const a = await request(gateway, client, nonce, internalPort, externalPort, '0.0.0.0', lifetime, opts)
  if (a.externalPort === 0 || a.lifetime === 0) throw mappingError('pcp', 'malformed', `the router granted port ${a.externalPort} for ${a.lifetime} s`)
  return {
    protocol: 'pcp',
    externalHost: a.externalHost,
    externalPort: a.externalPort,
    internalHost: client,
    internalPort,
    lifetime: a.lifetime,
    state: { gateway, nonce: nonce.toString('hex') },
  }
}

/** Renews `m` (same nonce, same suggested port). */
export function pcpRenew(m: PortMapping, lifetime: number, opts: RequestOptions = {}): Promise<PortMapping> {
  return pcpMap(m.state.gateway, m.internalHost, m.internalPort, m.externalPort, lifetime, opts, m.state.nonce)
}

/** Deletes `m` (lifetime 0, same nonce). */
export async function pcpUnmap(m: PortMapping, opts: RequestOptions = {}): Promise<void> {
  await request(m.state.gateway, m.internalHost, Buffer.from(m.state.nonce, 'hex'), m.internalPort, 0, '0.0.0.0', 0, opts)
}
