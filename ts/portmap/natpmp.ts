/**
 * NAT-PMP client (RFC 6886): the external address (opcode 0) and UDP port mappings (opcode 1),
 * sent to the default gateway's port 5351. Requests are retransmitted after 250, 500, 1000 ms
 * (the RFC's doubling, cut short: a router that has not answered by then is not going to).
 *
 * Request (12 B): version 0, opcode 1 (UDP), reserved u16, internal port u16, suggested external
 * port u16, lifetime u32 (0 deletes). Answer (16 B): version 0, opcode 129, result u16, seconds
 * since epoch u32, internal port u16, external port u16, lifetime u32. External-address answer
 * (12 B): version 0, opcode 128, result u16, epoch u32, IPv4 address.
 */
import { type PortMapping, type RequestOptions, mappingError, udpRequest } from './common'

export const NATPMP_PORT = 5351
const DELAYS = [250, 500, 1000] as const
/** Answers are at most this long (RFC 6886 answers are 12 or 16 bytes; longer ones are dropped). */
const MAX_ANSWER = 1100

const RESULTS: Record<number, string> = {
  1: 'unsupported version',
  2: 'not authorized / refused',
  3: 'network failure',
  4: 'out of resources',
  5: 'unsupported opcode',
}

function check(msg: Buffer, opcode: number, len: number, opts: RequestOptions): boolean {
  if (msg.length < len || msg.length > MAX_ANSWER || msg[0] !== 0 || msg[1] !== 128 + opcode) {
    opts.onMalformed?.('natpmp: bad answer')
    return false
  }
  const result = msg.readUInt16BE(2)
  if (result !== 0) {
    throw mappingError('nat-pmp', 'refused', `the router refused: ${RESULTS[result] ?? `result ${result}`}`, { result })
  }
  return true
}

/** The router's external IPv4 address. */
export function natpmpExternalAddress(gateway: string, bindHost: string, opts: RequestOptions = {}): Promise<string> {
  const req = Buffer.from([0, 0])
  return udpRequest('nat-pmp', gateway, opts.port ?? NATPMP_PORT, bindHost, req, (m) => (check(m, 0, 12, opts) ? `${m[8]}.${m[9]}.${m[10]}.${m[11]}` : undefined), DELAYS, opts)
}

/**
 * Maps UDP `internalPort` (on the address this request comes from, `bindHost`) for `lifetime`
 * seconds, asking for `externalPort` (the router may give another). Resolves with the mapping.
 */
export async function natpmpMap(
  gateway: string,
  bindHost: string,
  internalPort: number,
  externalPort: number,
  lifetime: number,
  opts: RequestOptions = {},
): Promise<PortMapping> {
  const externalHost = await natpmpExternalAddress(gateway, bindHost, opts)
  const { port, life } = await natpmpRequest(gateway, bindHost, internalPort, externalPort, lifetime, opts)
  if (port === 0 || life === 0) throw mappingError('nat-pmp', 'malformed', `the router granted port ${port} for ${life} s`)
  return { protocol: 'nat-pmp', externalHost, externalPort: port, internalHost: bindHost, internalPort, lifetime: life, state: { gateway } }
}

/** Deletes the mapping of UDP `internalPort` (lifetime 0). */
export async function natpmpUnmap(m: PortMapping, opts: RequestOptions = {}): Promise<void> {
  await natpmpRequest(m.state.gateway, m.internalHost, m.internalPort, 0, 0, opts)
}

function natpmpRequest(
  gateway: string,
  bindHost: string,
  internalPort: number,
  externalPort: number,
  lifetime: number,
  opts: RequestOptions,
): Promise<{ port: number; life: number }> {
  const req = Buffer.alloc(12)
  req[1] = 1 // map UDP
  req.writeUInt16BE(internalPort, 4)
  req.writeUInt16BE(externalPort, 6)
  req.writeUInt32BE(lifetime, 8)
  return udpRequest(
    'nat-pmp',
    gateway,
    opts.port ?? NATPMP_PORT,
    bindHost,
    req,
    (m) => {
      if (!check(m, 1, 16, opts)) return undefined
      if (m.readUInt16BE(8) !== internalPort) {
        opts.onMalformed?.('natpmp: answer for another port')
        return undefined
      }
      return { port: m.readUInt16BE(10), life: m.readUInt32BE(12) }
    },
    DELAYS,
    opts,
  )
}
