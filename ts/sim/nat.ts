/**
 * NAT models for the {@link SimulatedNetwork} (RFC 4787 terminology).
 *
 * | type                 | mapping (RFC 4787 §4.1)       | filtering (§5)                 |
 * |----------------------|-------------------------------|--------------------------------|
 * | `full-cone`          | endpoint-independent          | endpoint-independent           |
 * | `address-restricted` | endpoint-independent          | address-dependent              |
 * | `port-restricted`    | endpoint-independent          | address-and-port-dependent     |
 * | `symmetric`          | address-and-port-dependent    | address-and-port-dependent     |
 *
 * A mapping is created by the first outbound datagram (internal address → remote endpoint) and is
 * kept alive by outbound traffic only ("NAT outbound refresh", REQ-6; inbound traffic does not
 * refresh): it expires `mappingTimeout` virtual ms after the last outbound datagram that used it.
 * The permission to receive from a remote host (address-dependent filtering) or endpoint
 * (address-and-port-dependent) is likewise opened by an outbound datagram to it and expires
 * `mappingTimeout` ms after the last one. Public ports are drawn from a seeded random stream in
 * [1024, 65535] (no port preservation, no parity). Hairpinning is off: a datagram from inside to the
 * NAT's own public address is dropped (`dropped_hairpin`).
 *
 * Expiry is lazy (checked when a datagram needs the mapping), so the cost per datagram is a couple
 * of Map lookups; there are no timers.
 */
import type { Address } from '../address'
import { toAddress } from '../address'
import { DeccomError, ErrorCode } from '../errors'
import type { Random } from './random'

/** The NAT behaviours the simulator models (which inbound datagrams a mapping lets through, and whether the mapping depends on the destination). */
export type NatType = 'full-cone' | 'address-restricted' | 'port-restricted' | 'symmetric'

/** Every {@link NatType}. */
export const NAT_TYPES: readonly NatType[] = Object.freeze(['full-cone', 'address-restricted', 'port-restricted', 'symmetric'])

/** Options of {@link SimulatedNetwork.createNat}. */
export interface SimNatOptions {
  /** The NAT's behaviour. */
  type: NatType
  /** The NAT's public IP (host only; default: the next free 198.18.x.y). */
  publicAddress?: string
  /** Virtual ms a mapping (and a filter permission) lives after its last outbound datagram (default 120 000). */
  mappingTimeout?: number
}

/** A snapshot of one live mapping. */
export interface SimNatMapping {
  /** The address behind the NAT. */
  internal: Address
  /** The public address it is mapped to. */
  external: Address
  /** The remote endpoint of an address-and-port-dependent (symmetric) mapping; undefined otherwise. */
  remote?: Address
  /** Virtual time at which it expires unless refreshed by outbound traffic. */
  expires: number
}

interface Mapping {
  internal: Address
  external: Address
  remote: Address | undefined
  key: string
  /** Virtual time of the last outbound datagram. */
  last: number
  /** Filter permissions: remote host (address-dependent) or remote key (address-and-port) → last outbound time. */
  permits: Map<string, number> | undefined
}

const MIN_PORT = 1024
const PORT_RANGE = 65536 - MIN_PORT

/** A NAT of a {@link SimulatedNetwork}, made by `sim.createNat()`. Pass it as `behind` to createNode(s). */
export class SimNat {
  /** The NAT's behaviour. */
  readonly type: NatType
  /** The public IP of the NAT (every mapping is `publicAddress:port`). */
  readonly publicAddress: string
  /** ms an idle mapping lives. */
  readonly mappingTimeout: number
  readonly #now: () => number
  readonly #rng: Random
  readonly #endpointIndependentMapping: boolean
  /** 0 endpoint-independent, 1 address-dependent, 2 address-and-port-dependent filtering. */
  readonly #filtering: 0 | 1 | 2
  /** Mapping key (internal, or internal>remote for symmetric) → mapping. */
  readonly #byKey = new Map<string, Mapping>()
  /** Public port → mapping. */
  readonly #byPort = new Map<number, Mapping>()
  readonly #stats = {
    mappings_created: 0,
    mappings_expired: 0,
    translated_out: 0,
    translated_in: 0,
    dropped_filtered: 0,
    dropped_no_mapping: 0,
    dropped_hairpin: 0,
  }

  /** @internal Made by SimulatedNetwork.createNat. */
  constructor(opts: SimNatOptions & { publicAddress: string }, now: () => number, rng: Random) {
    if (!NAT_TYPES.includes(opts.type)) {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `createNat: type must be one of ${NAT_TYPES.join(', ')}, got ${String(opts.type)}`)
    }
    const timeout = opts.mappingTimeout ?? 120_000
    if (!(timeout > 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `createNat: mappingTimeout must be > 0 ms, got ${timeout}`)
    this.type = opts.type
    this.publicAddress = opts.publicAddress
    this.mappingTimeout = timeout
    this.#now = now
    this.#rng = rng
    this.#endpointIndependentMapping = opts.type !== 'symmetric'
    this.#filtering = opts.type === 'full-cone' ? 0 : opts.type === 'address-restricted' ? 1 : 2
  }

  /** Counters: mappings_created, mappings_expired, translated_out, translated_in, dropped_filtered, dropped_no_mapping, dropped_hairpin, mappings. */
  stats(): Record<string, number> {
    return { ...this.#stats, mappings: this.mappings().length }
  }

  /** The live (unexpired) mappings, in creation order. */
  mappings(): SimNatMapping[] {
    const now = this.#now()
    const out: SimNatMapping[] = []
    for (const m of this.#byKey.values()) {
      if (now - m.last >= this.mappingTimeout) continue
      out.push({ internal: m.internal, external: m.external, remote: m.remote, expires: m.last + this.mappingTimeout })
    }
    return out
  }

  /**
   * The live public address that a datagram from `internal` to `remote` would use now, or undefined
   * if there is none yet (no side effects). `remote` matters only for a symmetric NAT.
   */
  mappingFor(internal: Address, remote?: Address): Address | undefined {
    const key = this.#endpointIndependentMapping ? internal.key : remote ? internal.key + '>' + remote.key : undefined
    if (key === undefined) return undefined
    const m = this.#byKey.get(key)
    return m && this.#now() - m.last < this.mappingTimeout ? m.external : undefined
  }

  /**
   * The private address that the live mapping of `publicPort` leads to, whatever the filtering
   * (no side effects), or undefined.
   */
  internalFor(publicPort: number): Address | undefined {
    const m = this.#byPort.get(publicPort)
    return m !== undefined && this.#now() - m.last < this.mappingTimeout ? m.internal : undefined
  }

  /**
   * @internal An outbound datagram from `internal` to `remote`: returns the public source address,
   * creating or refreshing the mapping and the filter permission; undefined if dropped (hairpin).
   */
  _outbound(internal: Address, remote: Address): Address | undefined {
    if (remote.host === this.publicAddress) {
      this.#stats.dropped_hairpin++
      return undefined
    }
    const now = this.#now()
    const key = this.#endpointIndependentMapping ? internal.key : internal.key + '>' + remote.key
    let m = this.#byKey.get(key)
    if (m !== undefined && now - m.last >= this.mappingTimeout) {
      this.#expire(m)
      m = undefined
    }
    if (m === undefined) m = this.#create(key, internal, this.#endpointIndependentMapping ? undefined : remote)
    m.last = now
    if (this.#filtering === 1) m.permits!.set(remote.host, now)
    else if (this.#filtering === 2 && m.permits !== undefined) m.permits.set(remote.key, now)
    this.#stats.translated_out++
    return m.external
  }

  /**
   * @internal An inbound datagram from `remote` to `publicPort` of this NAT: returns the internal
   * address to deliver to, or undefined if the mapping or the filtering drops it (counted).
   */
  _inbound(remote: Address, publicPort: number): Address | undefined {
    const m = this.#byPort.get(publicPort)
    const now = this.#now()
    if (m === undefined || now - m.last >= this.mappingTimeout) {
      if (m !== undefined) this.#expire(m)
      this.#stats.dropped_no_mapping++
      return undefined
    }
    let ok: boolean
    if (this.#filtering === 0) ok = true
    else if (m.remote !== undefined) ok = m.remote.key === remote.key // symmetric: only the mapping's own remote
    else {
      const t = m.permits!.get(this.#filtering === 1 ? remote.host : remote.key)
      ok = t !== undefined && now - t < this.mappingTimeout
    }
    if (!ok) {
      this.#stats.dropped_filtered++
      return undefined
    }
    this.#stats.translated_in++
    return m.internal
  }

  #create(key: string, internal: Address, remote: Address | undefined): Mapping {
    const now = this.#now()
    if (this.#byPort.size >= PORT_RANGE) this.#sweep(now)
    let port: number
    for (;;) {
      port = MIN_PORT + this.#rng.int(PORT_RANGE)
      const old = this.#byPort.get(port)
      if (old === undefined) break
      if (now - old.last >= this.mappingTimeout) {
        this.#expire(old)
        break
      }
      if (this.#byPort.size >= PORT_RANGE) {
        throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `NAT ${this.publicAddress}: all ${PORT_RANGE} public ports are mapped`)
      }
    }
    const m: Mapping = {
      internal,
      external: toAddress(this.publicAddress, port),
      remote,
      key,
      last: now,
      permits: this.#filtering === 0 || remote !== undefined ? undefined : new Map(),
    }
    this.#byKey.set(key, m)
    this.#byPort.set(port, m)
    this.#stats.mappings_created++
    return m
  }

  #expire(m: Mapping): void {
    if (this.#byKey.get(m.key) === m) this.#byKey.delete(m.key)
    if (this.#byPort.get(m.external.port) === m) this.#byPort.delete(m.external.port)
    this.#stats.mappings_expired++
  }

  #sweep(now: number): void {
    for (const m of [...this.#byKey.values()]) if (now - m.last >= this.mappingTimeout) this.#expire(m)
  }
}
