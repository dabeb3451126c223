/**
 * `node.nat()`: what the layers of a stack measured about the NAT in front of the node — the UDP
 * observations of a HolePuncher, the TCP mapping of a TcpTransport, the router port mapping of a
 * PortMapper — summed up as one report (docs/nat.md, "NAT report").
 */
import { networkInterfaces } from 'node:os'
import type { Address } from './address'
import type { MappingProtocol, PortMappingInfo } from './portmap/layer'
import type { Observation } from './protocols/punch-types'
import type { TcpMapping } from './protocols/tcp/connection'
import type { Stack } from './stack'

/** The kind of NAT, as far as the measurements tell. */
export type NatReportType = 'open' | 'cone' | 'port-restricted' | 'symmetric' | 'unknown'

/** What `node.nat()` reports: the NAT type as measured, per transport, and the router port mapping. */
export interface NatReport {
  /**
   * `'open'`: reachable unsolicited — no address translation seen, or a router port mapping is in
   * force; `'port-restricted'`: observers agree on one mapped address (endpoint-independent
   * mapping; the filtering is not measured, so the strictest cone behaviour is assumed);
   * `'symmetric'`: observers see different mapped ports, or TCP source ports are rewritten;
   * `'cone'`: a full-cone NAT — not told apart from 'port-restricted' by these measurements, so not
   * reported today; `'unknown'`: too few observations.
   */
  type: NatReportType
  /** The UDP transport: local address, agreed external address and what observers saw. */
  udp: {
    /** The local address of the transport. */
    local: Address
    /** The address ≥ 2 observers agree on (HolePuncher), or null. */
    external: Address | null
    /** Distinct observers that reported our address. */
    observers: number
    /** Distinct addresses they reported. */
    addresses: number
  }
  /** The TcpTransport's agreed mapping (`tcpMapping()`), or null (no TcpTransport, or < 2 observers). */
  tcp: TcpMapping | null
  /** Which router protocol granted a port mapping, or null. */
  mapping: MappingProtocol | null
  /** The address peers should use: the mapped one, else the agreed UDP one, else null. */
  external: Address | null
}

type Fn = (...a: unknown[]) => unknown

function call<T>(stack: Stack, name: string): T | null {
  const layer = stack.layers.find((l) => typeof (l as unknown as Record<string, unknown>)[name] === 'function' && (l.constructor as { provides?: readonly string[] }).provides?.includes(name))
  if (!layer) return null
  return ((layer as unknown as Record<string, Fn>)[name].call(layer) as T | undefined) ?? null
}

/** The report for a stack whose transport is bound at `local`. */
export function natReport(stack: Stack, local: Address): NatReport {
  const pm = call<PortMappingInfo>(stack, 'portMapping')
  const obs = call<Observation[]>(stack, 'observations') ?? []
  const agreed = holePuncherAgreed(stack)
  const tcp = call<TcpMapping>(stack, 'tcpMapping')
  const addresses = new Set(obs.map((o) => o.address.key))
  let type: NatReportType = 'unknown'
  if (pm) type = 'open'
  else if (agreed) type = agreed.key === local.key || (local.host === '0.0.0.0' && agreed.port === local.port && interfaceAddresses().has(agreed.host)) ? 'open' : 'port-restricted'
  else if (obs.length >= 2 && addresses.size >= 2) type = 'symmetric'
  else if (tcp && !tcp.portPreserving) type = 'symmetric'
  return {
    type,
    udp: { local, external: agreed, observers: obs.length, addresses: addresses.size },
    tcp,
    mapping: pm?.protocol ?? null,
    external: pm?.external ?? agreed ?? null,
  }
}

/** The HolePuncher's agreed address (not a PortMapper's mapped one, which sits above it). */
function holePuncherAgreed(stack: Stack): Address | null {
  const hp = stack.layers.find((l) => (l.constructor as { provides?: readonly string[] }).provides?.includes('observations'))
  return ((hp as unknown as { externalAddress?(): Address | null } | undefined)?.externalAddress?.() ?? null) as Address | null
}

/** The addresses of this host's interfaces (cached for 5 s). */
let cachedInterfaces: { at: number; set: Set<string> } | null = null
function interfaceAddresses(): Set<string> {
  if (cachedInterfaces && Date.now() - cachedInterfaces.at < 5000) return cachedInterfaces.set
  const set = new Set<string>()
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) set.add(i.address)
  cachedInterfaces = { at: Date.now(), set }
  return set
}
