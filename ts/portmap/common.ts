/**
 * What the port-mapping clients (UPnP-IGD, NAT-PMP, PCP) share: the mapping they return, typed
 * errors, the UDP request/retry loop, the default gateway and the local address toward it.
 *
 * Every answer from the network is hostile input: size-checked, matched against what was asked,
 * and otherwise dropped (counted by the caller through `onMalformed`); no reply in time is a typed
 * ERR_DECCOM_PORT_MAPPING_TIMEOUT. A router's "external" address may be private (RFC 1918): it is
 * accepted as given (a router behind another router, or a test network).
 */
import dgram from 'node:dgram'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { abortError, DeccomError, ErrorCode } from '../errors'

/** The router protocols a mapping can come from. */
export type MappingProtocol = 'upnp' | 'nat-pmp' | 'pcp'

/** A UDP port mapping a router granted. */
export interface PortMapping {
  /** The protocol the router granted the mapping over. */
  protocol: MappingProtocol
  /** The router's external IPv4 address. */
  externalHost: string
  /** The external port the router forwards to us. */
  externalPort: number
  /** Our address the router forwards to. */
  internalHost: string
  /** Our port the router forwards to. */
  internalPort: number
  /** Seconds the router keeps it (0: until removed, UPnP permanent leases). */
  lifetime: number
  /** Protocol state needed to renew or delete (PCP nonce, UPnP control URL and service). */
  state: Record<string, string>
}

/** Options every client call takes. */
export interface RequestOptions {
  /** Aborts the request (ERR_DECCOM_ABORTED). */
  signal?: AbortSignal
  /** Called once per datagram or reply dropped as malformed or unexpected. */
  onMalformed?: (why: string) => void
  /** The router's NAT-PMP/PCP port (default 5351). */
  port?: number
}

export function mappingError(protocol: MappingProtocol, reason: string, message: string, details: Record<string, unknown> = {}): DeccomError {
  return new DeccomError(ErrorCode.PORT_MAPPING_FAILED, `${protocol}: ${message}`, { details: { protocol, reason, ...details } })
}

export function timeoutError(protocol: MappingProtocol, where: string, ms: number): DeccomError {
  return new DeccomError(ErrorCode.PORT_MAPPING_TIMEOUT, `${protocol}: no answer from ${where} within ${ms} ms`, { details: { protocol, where, timeout: ms } })
}

/** True for the RFC 1918 private IPv4 ranges (10/8, 172.16/12, 192.168/16). */
export function isPrivateV4(host: string): boolean {
  if (!net.isIPv4(host)) return false
  const [a, b] = host.split('.').map(Number)
  return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)
}

/**
 * The IPv4 default gateway from the kernel routing table (`/proc/net/route`, Linux), or null
 * (other systems, no default route): NAT-PMP and PCP then need the `gateway` option.
 */
export function defaultGateway(): string | null {
  let text: string
  try {
    text = readFileSync('/proc/net/route', 'utf8')
  } catch {
    return null
  }
  let best: { gw: string; metric: number } | null = null
  for (const line of text.split('\n').slice(1, 1025)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 8 || f[1] !== '00000000' || f[7] !== '00000000') continue
    const flags = Number.parseInt(f[3], 16)
    if (!(flags & 0x1) || !(flags & 0x2)) continue // RTF_UP and RTF_GATEWAY
    if (!/^[0-9A-Fa-f]{8}$/.test(f[2])) continue
    const n = Number.parseInt(f[2], 16) // little-endian in the file
    const gw = [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24].join('.')
    const metric = Number.parseInt(f[6], 10) || 0
    if (!best || metric < best.metric) best = { gw, metric }
  }
  return best?.gw ?? null
}

/** The local IPv4 address the kernel would send from toward `host` (no datagram is sent). */
export function localAddressToward(host: string): Promise<string | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4')
    const done = (v: string | null): void => {
      try {
        s.close()
      } catch {
        // already closed
      }
      resolve(v)
    }
    s.on('error', () => done(null))
    s.connect(9, host, () => {
      try {
        done(s.address().address)
      } catch {
        done(null)
      }
    })
  })
}

/**
 * Sends `request` to `host:port` from a connected UDP socket bound to `bindHost` and resolves with
 * the first answer `accept` turns into a value (undefined: not ours, keep waiting). Retransmits
 * after `delays[i]` ms (RFC 6886 / RFC 6887 style doubling); an ICMP port unreachable (the router
 * does not speak this protocol) fails at once.
 */
export function udpRequest<T>(
  protocol: MappingProtocol,
  host: string,
  port: number,
  bindHost: string,
  request: Buffer,
  accept: (msg: Buffer) => T | undefined,
  delays: readonly number[],
  opts: RequestOptions = {},
): Promise<T> {
  const { signal } = opts
  if (signal?.aborted) return Promise.reject(abortError(signal))
  return new Promise<T>((resolve, reject) => {
    const sock = dgram.createSocket('udp4')
    let timer: NodeJS.Timeout | undefined
    let attempt = 0
    let settled = false
    const finish = (err: unknown, v?: T): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      try {
        sock.close()
      } catch {
        // already closed
      }
      if (err) reject(err)
      else resolve(v as T)
    }
    const onAbort = (): void => finish(abortError(signal!))
    signal?.addEventListener('abort', onAbort, { once: true })
    const total = delays.reduce((a, b) => a + b, 0)
    const send = (): void => {
      if (settled) return
      if (attempt >= delays.length) return finish(timeoutError(protocol, `${host}:${port}`, total))
      sock.send(request, (e) => e && finish(mappingError(protocol, 'send', `cannot send to ${host}:${port}: ${e.message}`)))
      timer = setTimeout(send, delays[attempt++])
    }
    sock.on('error', (e: NodeJS.ErrnoException) => {
      finish(
        e.code === 'ECONNREFUSED'
          ? mappingError(protocol, 'unreachable', `${host}:${port} does not listen (ICMP port unreachable)`)
          : mappingError(protocol, 'socket', `socket error: ${e.message}`),
      )
    })
    sock.on('message', (msg, rinfo) => {
      if (rinfo.address !== host || rinfo.port !== port) return opts.onMalformed?.('wrong sender')
      let v: T | undefined
      try {
        v = accept(msg)
      } catch (e) {
        return finish(e)
      }
      if (v !== undefined) finish(null, v)
    })
    sock.bind(0, bindHost, () => {
      if (settled) return
      sock.connect(port, host, (e?: Error) => {
        if (e) return finish(mappingError(protocol, 'socket', `cannot reach ${host}:${port}: ${e.message}`))
        send()
      })
    })
  })
}

/** An IPv4 address as the 16-byte IPv4-mapped IPv6 form (PCP). */
export function v4Mapped(host: string): Buffer {
  const b = Buffer.alloc(16)
  b[10] = 0xff
  b[11] = 0xff
  host.split('.').forEach((p, i) => (b[12 + i] = Number(p)))
  return b
}

/** The IPv4 address of a 16-byte IPv4-mapped IPv6 address, or null if it is not one. */
export function fromV4Mapped(b: Buffer): string | null {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return null
  if (b[10] !== 0xff || b[11] !== 0xff) return null
  return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`
}
