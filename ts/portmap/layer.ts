/**
 * PortMapper — asks the router for a UDP port mapping (PCP, NAT-PMP, UPnP-IGD: docs/nat.md, "Router
 * port mapping") so that peers reach this node directly, without a punch or a relay.
 *
 * A layer without a data path: it binds `localAddress` (the transport's port is the one mapped)
 * and, optionally, `externalAddress` (a HolePuncher below); it provides `externalAddress` — the
 * mapped address when there is one, else what the layer below says — and `portMapping()`. Put it
 * above the HolePuncher and below Kademlia: Kademlia's record then advertises the mapped address.
 * `Node.create` inserts one by itself (option `portMapping`, see node.ts).
 *
 * At start, when the node's address is private (RFC 1918; for a wildcard bind, the address toward
 * the default gateway) or `always` is set, it tries the protocols in order (default PCP, NAT-PMP,
 * UPnP) in the background — start never waits for a router. A granted mapping is renewed at half
 * its lifetime (retried every `retryInterval` ms until it expires); after `stop()` it is deleted
 * (waiting at most `timeout` ms). `mapped()` waits for the first attempt's outcome.
 */
import type { Address } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { realClock } from '../clock'
import { toAddress } from '../address'
import { DeccomError, ErrorCode } from '../errors'
import { type LayerLog, silentLog } from '../log'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { type MappingProtocol, type PortMapping, type RequestOptions, defaultGateway, isPrivateV4, localAddressToward } from './common'
import { natpmpMap, natpmpUnmap } from './natpmp'
import { pcpMap, pcpRenew, pcpUnmap } from './pcp'
import { ssdpDiscover } from './ssdp'
import { fetchIgdService, upnpMap, upnpRenew, upnpUnmap } from './upnp-igd'

export type { MappingProtocol, PortMapping } from './common'

/** Options of the {@link PortMapper} layer (also `NodeOptions.portMapping`). */
export interface PortMapperOptions {
  /** The protocols to try, in order (default `['pcp', 'nat-pmp', 'upnp']`). */
  protocols?: MappingProtocol[]
  /** Try even when the node's address is not private (default false). */
  always?: boolean
  /** The router for PCP and NAT-PMP (default: the IPv4 default gateway, from /proc/net/route on Linux). */
  gateway?: string
  /** Seconds of mapping to ask for (default 7200). */
  lifetime?: number
  /** Milliseconds per HTTP exchange and for SSDP discovery (default 2000). */
  timeout?: number
  /** Milliseconds between retries of a failed renewal, and between attempts after none succeeded (default 60000; 0: no new attempts). */
  retryInterval?: number
}

/** What {@link PortMapper.portMapping} reports. */
export interface PortMappingInfo {
  /** The protocol the router granted the mapping over. */
  protocol: MappingProtocol
  /** The address peers reach us at through the router. */
  external: Address
  /** The local port it forwards to. */
  internalPort: number
  /** Seconds granted (0: until deleted). */
  lifetime: number
}

const ALL: MappingProtocol[] = ['pcp', 'nat-pmp', 'upnp']

export class PortMapper extends Protocol {
  static override bindTo = ['localAddress', 'externalAddress?']
  static override provides = ['externalAddress', 'portMapping']

  readonly name = 'port-mapper'
  readonly #o: Required<Omit<PortMapperOptions, 'gateway'>> & { gateway: string | null }
  #mapping: PortMapping | null = null
  #external: Address | null = null
  #abort: AbortController | null = null
  #timer: TimerHandle | undefined
  #clock: Clock = realClock
  #first: Promise<PortMappingInfo | null> = Promise.resolve(null)
  #running = false
  #log: LayerLog = silentLog
  #lastError: Error | null = null

  constructor(opts: PortMapperOptions = {}) {
    super()
    const protocols = opts.protocols ?? ALL
    if (!Array.isArray(protocols) || protocols.some((p) => !ALL.includes(p))) {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `PortMapper protocols must be some of ${ALL.join(', ')}`)
    }
    this.#o = {
      protocols: [...new Set(protocols)],
      always: opts.always ?? false,
      gateway: opts.gateway ?? null,
      lifetime: opts.lifetime ?? 7200,
      timeout: opts.timeout ?? 2000,
      retryInterval: opts.retryInterval ?? 60_000,
    }
    for (const k of ['lifetime', 'timeout'] as const) {
      const v = this.#o[k]
      if (!Number.isInteger(v) || v <= 0) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `PortMapper option ${k} must be a positive integer, got ${v}`)
    }
    if (!(this.#o.retryInterval >= 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `PortMapper option retryInterval must be >= 0`)
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#log = ctx.log
    this.#clock = ctx.clock
    this.#running = true
    this.#first = this.#attempt()
  }

  /** {@link #round}, whose unexpected errors (the transport closed under it) are kept, not thrown. */
  async #attempt(): Promise<PortMappingInfo | null> {
    try {
      return await this.#round()
    } catch (e) {
      this.count('attempt_errors')
      this.#lastError = e as Error
      return null
    }
  }

  override async stop(): Promise<void> {
    this.#running = false
    this.#clock.clearTimeout(this.#timer)
    this.#abort?.abort(new DeccomError(ErrorCode.CLOSED, 'The PortMapper layer stopped'))
    await this.#first.catch(() => null)
    const m = this.#mapping
    this.#mapping = null
    this.#external = null
    if (m) {
      try {
        await this.#unmap(m, { signal: AbortSignal.timeout(this.#o.timeout) })
        this.count('mappings_deleted')
        this.#log('%s mapping %s:%d deleted', m.protocol, m.externalHost, m.externalPort)
      } catch (e) {
        this.count('delete_failed')
        this.#log('deleting the %s mapping failed: %s', m.protocol, (e as Error).message)
      }
    }
  }

  /** The mapped address if the router granted one, else the address the layer below reports (or null). */
  externalAddress(): Address | null {
    return this.#external ?? ((this.lower.externalAddress() as Address | null | undefined) ?? null)
  }

  /** The mapping in force, or null. */
  portMapping(): PortMappingInfo | null {
    const m = this.#mapping
    if (!m || !this.#external) return null
    return { protocol: m.protocol, external: this.#external, internalPort: m.internalPort, lifetime: m.lifetime }
  }

  /** The error of the last failed attempt (every protocol's), or null. */
  lastError(): Error | null {
    return this.#lastError
  }

  /** Resolves once the first attempt at start ended: with the mapping, or null (none, or not tried). */
  mapped(): Promise<PortMappingInfo | null> {
    return this.#first
  }

  // ---------------------------------------------------------------------------------------------

  #opts(signal: AbortSignal): RequestOptions {
    return { signal, onMalformed: () => this.count('dropped_malformed') }
  }

  /** One round over the protocols; on failure, a new round after `retryInterval`. */
  async #round(): Promise<PortMappingInfo | null> {
    const local = this.lower.localAddress() as Address
    if (local.family !== 4) {
      this.count('skipped_not_ipv4')
      return null
    }
    const gateway = this.#o.gateway ?? defaultGateway()
    let host = local.host
    if (host === '0.0.0.0') host = (gateway ? await localAddressToward(gateway) : null) ?? host
    if (!this.#running) return null
    if (host === '0.0.0.0') {
      this.count('skipped_no_route')
      this.#log('not mapping: no default gateway to find the local address by')
      return null
    }
    if (!this.#o.always && !isPrivateV4(host)) {
      this.count('skipped_not_private')
      this.#log('not mapping: %s is not a private address', host)
      return null
    }
    const ac = (this.#abort = new AbortController())
    const errors: string[] = []
    for (const protocol of this.#o.protocols) {
      if (!this.#running) return null
      this.count(`attempts_${counterName(protocol)}`)
      try {
        const m = await this.#map(protocol, gateway, host, local.port, local.port, ac.signal)
        if (!this.#running) {
          await this.#unmap(m, { signal: AbortSignal.timeout(this.#o.timeout) }).catch(() => {})
          return null
        }
        return this.#granted(m)
      } catch (e) {
        this.count(`failed_${counterName(protocol)}`)
        this.#lastError = e as Error
        errors.push(`${protocol}: ${(e as Error).message}`)
        if (ac.signal.aborted) return null
      }
    }
    this.#log('no port mapping (%s)', errors.join('; '))
    this.#schedule(() => void this.#attempt(), this.#o.retryInterval)
    return null
  }

  #map(protocol: MappingProtocol, gateway: string | null, host: string, internalPort: number, externalPort: number, signal: AbortSignal): Promise<PortMapping> {
    const o = this.#opts(signal)
    const life = this.#o.lifetime
    if (protocol === 'upnp') {
      return ssdpDiscover(host, this.#o.timeout, o)
        .then((loc) => fetchIgdService(loc, this.#o.timeout, o))
        .then((svc) => upnpMap(svc, host, internalPort, externalPort, life, this.#o.timeout, o))
    }
    if (!gateway) {
      return Promise.reject(new DeccomError(ErrorCode.PORT_MAPPING_FAILED, `${protocol}: no default gateway known (pass the gateway option)`, { details: { protocol, reason: 'no-gateway' } }))
    }
    return protocol === 'pcp' ? pcpMap(gateway, host, internalPort, externalPort, life, o) : natpmpMap(gateway, host, internalPort, externalPort, life, o)
  }

  #unmap(m: PortMapping, o: RequestOptions): Promise<void> {
    if (m.protocol === 'upnp') return upnpUnmap(m, this.#o.timeout, o)
    return m.protocol === 'pcp' ? pcpUnmap(m, o) : natpmpUnmap(m, o)
  }

  #granted(m: PortMapping, renewed = false): PortMappingInfo {
    this.#mapping = m
    this.#external = toAddress(m.externalHost, m.externalPort)
    if (!renewed) this.count(`mapped_${counterName(m.protocol)}`)
    this.#log('%s mapping granted: %s -> %s:%d for %d s', m.protocol, this.#external.key, m.internalHost, m.internalPort, m.lifetime)
    // Renew at half the lifetime (a permanent lease needs none).
    if (m.lifetime > 0) {
      const expiresAt = this.#clock.now() + m.lifetime * 1000
      this.#schedule(() => void this.#renew(m, expiresAt), (m.lifetime * 1000) / 2)
    }
    return this.portMapping()!
  }

  async #renew(m: PortMapping, expiresAt: number): Promise<void> {
    if (!this.#running || this.#mapping !== m) return
    const ac = (this.#abort = new AbortController())
    const o = this.#opts(ac.signal)
    const life = this.#o.lifetime
    try {
      const next =
        m.protocol === 'upnp'
          ? await upnpRenew(m, life, this.#o.timeout, o)
          : m.protocol === 'pcp'
            ? await pcpRenew(m, life, o)
            : await natpmpMap(m.state.gateway, m.internalHost, m.internalPort, m.externalPort, life, o)
      if (!this.#running) return
      this.count('renewals')
      this.#granted(next, true)
    } catch (e) {
      if (!this.#running) return
      this.count('renew_failed')
      this.#lastError = e as Error
      this.#log('renewing the %s mapping failed: %s', m.protocol, (e as Error).message)
      const left = expiresAt - this.#clock.now()
      if (left <= 0) {
        // Expired: forget it and start over.
        this.count('mappings_expired')
        this.#mapping = null
        this.#external = null
        this.#schedule(() => void this.#attempt(), Math.min(this.#o.retryInterval || 1000, 1000))
        return
      }
      this.#schedule(() => void this.#renew(m, expiresAt), Math.min(this.#o.retryInterval || left / 2, left))
    }
  }

  #schedule(fn: () => void, ms: number): void {
    if (!this.#running || !(ms > 0)) return
    this.#clock.clearTimeout(this.#timer)
    this.#timer = this.#clock.setTimeout(fn, Math.min(ms, 2 ** 31 - 1))
  }
}

/** 'nat-pmp' → 'nat_pmp' in counter names. */
function counterName(p: MappingProtocol): string {
  return p.replace('-', '_')
}
