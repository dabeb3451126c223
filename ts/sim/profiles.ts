/**
 * @internal Per-node properties of a {@link SimulatedNetwork} (region, latency model, access links),
 * and what the network asks of them per datagram. Nodes created without such options have no
 * profile; with no profile at all the network skips this (one size check per datagram).
 */
import type { Address } from '../address'
import type { AccessLink } from './bandwidth'
import type { LinkParams } from './impair'
import type { LatencyModel, SimNodeInfo } from './latency'

export interface NodeProfile {
  readonly info: SimNodeInfo
  readonly latency: LatencyModel | undefined
  readonly up: AccessLink | undefined
  readonly down: AccessLink | undefined
}

export class NodeProfiles<S extends LinkParams> {
  readonly #byAddress = new Map<string, NodeProfile>() // by Address.key (see SimulatedNetwork)
  /** A NAT's public address → the private address it maps to now (no side effects). */
  readonly #resolve: (a: Address) => Address | undefined

  constructor(resolve: (a: Address) => Address | undefined) {
    this.#resolve = resolve
  }

  get size(): number {
    return this.#byAddress.size
  }

  set(p: NodeProfile): void {
    this.#byAddress.set(p.info.address.key, p)
  }

  delete(a: Address): void {
    this.#byAddress.delete(a.key)
  }

  get(a: Address): NodeProfile | undefined {
    return this.#byAddress.get(a.key) ?? (this.#byAddress.size !== 0 ? this.#lookupMapped(a) : undefined)
  }

  #lookupMapped(a: Address): NodeProfile | undefined {
    const inner = this.#resolve(a)
    return inner === undefined ? undefined : this.#byAddress.get(inner.key)
  }

  /**
   * `base` with the latency and jitter of the pair (sender's model first, then receiver's), or
   * `base` itself when neither has an answer. `from` is the sender's private address, `to` the
   * destination as sent (a NAT's public address is resolved through its mapping).
   */
  spec(from: Address, to: Address, base: S): S {
    const a = this.#byAddress.get(from.key)
    const b = this.get(to)
    if (a?.latency === undefined && b?.latency === undefined) return base
    const infoA = a?.info ?? { address: from, index: -1, region: undefined }
    const infoB = b?.info ?? { address: to, index: -1, region: undefined }
    return a?.latency?.spec(infoA, infoB, base) ?? b?.latency?.spec(infoA, infoB, base) ?? base
  }

  /** When a datagram sent by `from` at `now` has left its uplink; `now` without one; -1: dropped. */
  uplink(from: Address, now: number, size: number): number {
    const up = this.#byAddress.get(from.key)?.up
    return up === undefined ? now : up.offer(now, size)
  }

  /** When a datagram arriving for `to` at `now` has come through its downlink; -1: dropped. */
  downlink(to: Address, now: number, size: number): number {
    const down = this.#byAddress.get(to.key)?.down
    return down === undefined ? now : down.offer(now, size)
  }
}
