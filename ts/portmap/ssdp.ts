/**
 * SSDP discovery of an Internet Gateway Device (UPnP Device Architecture 1.1, section 1.3): an
 * HTTP-over-UDP `M-SEARCH` to 239.255.255.250:1900, answered by unicast `HTTP/1.1 200 OK` with a
 * `LOCATION:` header (the URL of the device description). Sent three times (0, 500, 1000 ms) for
 * the IGD v1 and v2 device types and the WANIPConnection / WANPPPConnection services; the first
 * usable answer wins.
 *
 * Answers are hostile input: at most 2 KiB, must start with `HTTP/1.1 200`, and the LOCATION must
 * be an `http://` URL whose host is the address the answer came from (nobody on the LAN can point
 * us at a third host). Anything else is dropped (`onMalformed`).
 */
import dgram from 'node:dgram'
import { abortError } from '../errors'
import { type RequestOptions, mappingError, timeoutError } from './common'

export const SSDP_ADDRESS = '239.255.255.250'
export const SSDP_PORT = 1900
const MAX_ANSWER = 2048
const TARGETS = [
  'urn:schemas-upnp-org:device:InternetGatewayDevice:1',
  'urn:schemas-upnp-org:device:InternetGatewayDevice:2',
  'urn:schemas-upnp-org:service:WANIPConnection:1',
  'urn:schemas-upnp-org:service:WANPPPConnection:1',
]

/** One M-SEARCH datagram for search target `st`. */
export function encodeMSearch(st: string, mx = 2): Buffer {
  return Buffer.from(`M-SEARCH * HTTP/1.1\r\nHOST: ${SSDP_ADDRESS}:${SSDP_PORT}\r\nMAN: "ssdp:discover"\r\nMX: ${mx}\r\nST: ${st}\r\n\r\n`, 'latin1')
}

/** The LOCATION URL of an SSDP answer from `from`, or null when the answer is not a usable one. */
export function parseSsdpAnswer(msg: Buffer, from: string): URL | null {
  if (msg.length > MAX_ANSWER) return null
  const text = msg.toString('latin1')
  const lines = text.split('\r\n')
  if (!/^HTTP\/1\.[01] 200\b/.test(lines[0] ?? '')) return null
  let location: string | null = null
  for (const line of lines.slice(1, 64)) {
    const i = line.indexOf(':')
    if (i <= 0) continue
    if (line.slice(0, i).trim().toLowerCase() === 'location') location = line.slice(i + 1).trim()
  }
  if (location === null || location.length > 512) return null
  let url: URL
  try {
    url = new URL(location)
  } catch {
    return null
  }
  if (url.protocol !== 'http:' || url.hostname !== from) return null
  return url
}

/**
 * Finds a gateway by SSDP from the interface with address `bindHost`; resolves with the first
 * description URL. @throws (rejects) ERR_DECCOM_PORT_MAPPING_TIMEOUT after `timeout` ms, ERR_DECCOM_ABORTED
 */
export function ssdpDiscover(bindHost: string, timeout = 2000, opts: RequestOptions = {}): Promise<URL> {
  const { signal } = opts
  if (signal?.aborted) return Promise.reject(abortError(signal))
  return new Promise<URL>((resolve, reject) => {
    const sock = dgram.createSocket({ type: 'udp4', reuseAddr: false })
    const timers: NodeJS.Timeout[] = []
    let settled = false
    const finish = (err: unknown, url?: URL): void => {
      if (settled) return
      settled = true
      for (const t of timers) clearTimeout(t)
      signal?.removeEventListener('abort', onAbort)
      try {
        sock.close()
      } catch {
        // already closed
      }
      if (err) reject(err)
      else resolve(url!)
    }
    const onAbort = (): void => finish(abortError(signal!))
    signal?.addEventListener('abort', onAbort, { once: true })
    sock.on('error', (e) => finish(mappingError('upnp', 'socket', `SSDP socket error: ${e.message}`)))
    sock.on('message', (msg, rinfo) => {
      const url = parseSsdpAnswer(msg, rinfo.address)
      if (url === null) return opts.onMalformed?.('ssdp: unusable answer')
      finish(null, url)
    })
    sock.bind(0, bindHost, () => {
      if (settled) return
      try {
        sock.setMulticastInterface(bindHost)
        sock.setMulticastTTL(2)
      } catch {
        // the default interface will do
      }
      const burst = (): void => {
        for (const st of TARGETS) sock.send(encodeMSearch(st), SSDP_PORT, SSDP_ADDRESS, () => {})
      }
      for (const at of [0, 500, 1000]) timers.push(setTimeout(burst, at))
      timers.push(setTimeout(() => finish(timeoutError('upnp', 'SSDP', timeout)), timeout))
    })
  })
}
