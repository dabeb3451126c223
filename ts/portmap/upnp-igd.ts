/**
 * UPnP Internet Gateway Device client (IGD v1/v2, WANIPConnection:1/2 or WANPPPConnection:1):
 * fetches the device description found by SSDP, picks the WAN connection service's control URL,
 * and calls its SOAP actions GetExternalIPAddress, AddPortMapping and DeletePortMapping.
 *
 * No XML parser: the few fields are taken with bounded regular expressions from a document of at
 * most 64 KiB (descriptions) or 16 KiB (SOAP answers); HTTP exchanges time out after `timeout`
 * ms. The control URL must point at the same host as the description (the router).
 */
import http from 'node:http'
import { abortError } from '../errors'
import { type PortMapping, type RequestOptions, mappingError, timeoutError } from './common'

const MAX_DESCRIPTION = 64 * 1024
const MAX_SOAP_ANSWER = 16 * 1024
const SERVICES = ['urn:schemas-upnp-org:service:WANIPConnection:2', 'urn:schemas-upnp-org:service:WANIPConnection:1', 'urn:schemas-upnp-org:service:WANPPPConnection:1']

/** The WAN connection service of a gateway. */
export interface IgdService {
  /** The service type URN (WANIPConnection or WANPPPConnection, version 1 or 2). */
  serviceType: string
  /** Where its SOAP actions are posted. */
  controlUrl: URL
}

/** GET or POST with a body size limit; the whole exchange ends after `timeout` ms. */
function httpExchange(url: URL, method: 'GET' | 'POST', headers: Record<string, string>, body: string | null, maxBytes: number, timeout: number, signal?: AbortSignal): Promise<{ status: number; text: string }> {
  if (signal?.aborted) return Promise.reject(abortError(signal))
  return new Promise((resolve, reject) => {
    let done = false
    const finish = (err: unknown, v?: { status: number; text: string }): void => {
      if (done) return
      done = true
      clearTimeout(deadline)
      if (err) {
        req.destroy()
        reject(err)
      } else resolve(v!)
    }
    // A total deadline (the socket timeout alone lets a slow drip of bytes go on for ever).
    const deadline = setTimeout(() => finish(timeoutError('upnp', url.href, timeout)), timeout)
    const req = http.request(url, { method, headers: { ...headers, Connection: 'close' }, signal, agent: false }, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > maxBytes) return finish(mappingError('upnp', 'malformed', `answer from ${url.host} is larger than ${maxBytes} bytes`))
        chunks.push(c)
      })
      res.on('end', () => finish(null, { status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', (e) => finish(mappingError('upnp', 'http', `reading ${url.href}: ${e.message}`)))
    })
    req.on('error', (e: Error) => finish(signal?.aborted ? abortError(signal) : mappingError('upnp', 'http', `${method} ${url.href}: ${e.message}`)))
    if (body !== null) req.write(body)
    req.end()
  })
}

function tagValue(xml: string, name: string): string | null {
  const m = new RegExp(`<(?:[A-Za-z0-9_]+:)?${name}(?:\\s[^>]{0,200})?>([^<]{0,2048})</(?:[A-Za-z0-9_]+:)?${name}>`).exec(xml)
  return m ? decodeEntities(m[1].trim()) : null
}

function decodeEntities(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos);/g, (_m, e: string) => ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" })[e]!)
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!)
}

/** The WAN connection service of the description at `location` (parsed from `xml`), or null. */
export function parseDescription(xml: string, location: URL): IgdService | null {
  const base = tagValue(xml, 'URLBase')
  let baseUrl = location
  if (base) {
    try {
      baseUrl = new URL(base)
    } catch {
      return null
    }
  }
  const blocks = xml.match(/<service>[\s\S]{0,4096}?<\/service>/g) ?? []
  for (const want of SERVICES) {
    for (const block of blocks.slice(0, 64)) {
      if (tagValue(block, 'serviceType') !== want) continue
      const control = tagValue(block, 'controlURL')
      if (!control) continue
      let url: URL
      try {
        url = new URL(control, baseUrl)
      } catch {
        continue
      }
      if (url.protocol !== 'http:' || url.hostname !== location.hostname) continue
      return { serviceType: want, controlUrl: url }
    }
  }
  return null
}

/** Fetches the description at `location` and finds the WAN connection service. */
export async function fetchIgdService(location: URL, timeout: number, opts: RequestOptions = {}): Promise<IgdService> {
  const res = await httpExchange(location, 'GET', {}, null, MAX_DESCRIPTION, timeout, opts.signal)
  if (res.status !== 200) throw mappingError('upnp', 'http', `GET ${location.href}: HTTP ${res.status}`)
  const svc = parseDescription(res.text, location)
  if (!svc) throw mappingError('upnp', 'no-service', `${location.href} describes no WANIPConnection or WANPPPConnection service`)
  return svc
}

/** Calls SOAP `action` with `args`; resolves with the answer body. UPnP faults reject with their `errorCode`. */
export async function soapCall(svc: IgdService, action: string, args: [string, string | number][], timeout: number, opts: RequestOptions = {}): Promise<string> {
  const inner = args.map(([k, v]) => `<${k}>${escapeXml(String(v))}</${k}>`).join('')
  const body =
    '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">' +
    `<s:Body><u:${action} xmlns:u="${svc.serviceType}">${inner}</u:${action}></s:Body></s:Envelope>\r\n`
  const res = await httpExchange(
    svc.controlUrl,
    'POST',
    { 'Content-Type': 'text/xml; charset="utf-8"', SOAPAction: `"${svc.serviceType}#${action}"`, 'Content-Length': String(Buffer.byteLength(body)) },
    body,
    MAX_SOAP_ANSWER,
    timeout,
    opts.signal,
  )
  if (res.status === 200) return res.text
  const code = Number(tagValue(res.text, 'errorCode') ?? Number.NaN)
  const desc = tagValue(res.text, 'errorDescription') ?? `HTTP ${res.status}`
  throw mappingError('upnp', 'refused', `${action} refused: ${Number.isFinite(code) ? `${code} ` : ''}${desc}`, { upnpError: Number.isFinite(code) ? code : null, status: res.status })
}

/** The router's external IPv4 address (GetExternalIPAddress). */
export async function upnpExternalAddress(svc: IgdService, timeout: number, opts: RequestOptions = {}): Promise<string> {
  const text = await soapCall(svc, 'GetExternalIPAddress', [], timeout, opts)
  const ip = tagValue(text, 'NewExternalIPAddress')
  if (!ip || !/^\d{1,3}(\.\d{1,3}){3}$/.test(ip) || ip.split('.').some((p) => Number(p) > 255) || ip === '0.0.0.0') {
    throw mappingError('upnp', 'malformed', `GetExternalIPAddress answered ${JSON.stringify(ip?.slice(0, 64) ?? null)}`)
  }
  return ip
}

/**
 * Maps UDP `externalPort` → `internalHost:internalPort` for `lifetime` seconds. A router that
 * takes permanent leases only (error 725) gets lifetime 0 (removed on close); a port taken by
 * someone else (718) is retried on another port, up to 3 times.
 */
export async function upnpMap(
  svc: IgdService,
  internalHost: string,
  internalPort: number,
  externalPort: number,
  lifetime: number,
  timeout: number,
  opts: RequestOptions = {},
): Promise<PortMapping> {
  const externalHost = await upnpExternalAddress(svc, timeout, opts)
  let port = externalPort
  let life = lifetime
  for (let attempt = 0; ; attempt++) {
    try {
      await soapCall(
        svc,
        'AddPortMapping',
        [
          ['NewRemoteHost', ''],
          ['NewExternalPort', port],
          ['NewProtocol', 'UDP'],
          ['NewInternalPort', internalPort],
          ['NewInternalClient', internalHost],
          ['NewEnabled', 1],
          ['NewPortMappingDescription', 'deccom'],
          ['NewLeaseDuration', life],
        ],
        timeout,
        opts,
      )
      break
    } catch (e) {
      const code = (e as { details?: { upnpError?: number } }).details?.upnpError
      if (attempt >= 3) throw e
      if (code === 725 && life !== 0) life = 0
      else if (code === 718) port = 1024 + Math.floor(Math.random() * (65536 - 1024))
      else throw e
    }
  }
  return {
    protocol: 'upnp',
    externalHost,
    externalPort: port,
    internalHost,
    internalPort,
    lifetime: life,
    state: { control: svc.controlUrl.href, service: svc.serviceType },
  }
}

function serviceOf(m: PortMapping): IgdService {
  return { serviceType: m.state.service, controlUrl: new URL(m.state.control) }
}

/** Renews `m` (AddPortMapping again for the same ports). */
export function upnpRenew(m: PortMapping, lifetime: number, timeout: number, opts: RequestOptions = {}): Promise<PortMapping> {
  return upnpMap(serviceOf(m), m.internalHost, m.internalPort, m.externalPort, m.lifetime === 0 ? 0 : lifetime, timeout, opts)
}

/** Deletes `m` (DeletePortMapping). */
export async function upnpUnmap(m: PortMapping, timeout: number, opts: RequestOptions = {}): Promise<void> {
  await soapCall(
    serviceOf(m),
    'DeletePortMapping',
    [
      ['NewRemoteHost', ''],
      ['NewExternalPort', m.externalPort],
      ['NewProtocol', 'UDP'],
    ],
    timeout,
    opts,
  )
}
