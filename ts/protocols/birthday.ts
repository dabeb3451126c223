/**
 * Birthday-paradox hole punching, the parts HolePuncher (ts/protocols/hole-puncher.ts) uses when
 * one side's NAT maps endpoint-dependently (a new random public port per destination, as
 * `MASQUERADE --random-fully` does) and the other's endpoint-independently (docs/nat.md,
 * "Birthday-paradox punching"):
 * - {@link mappingOf}: which kind of mapping our own NAT has, from what observers saw;
 * - {@link BirthdayProber}: the endpoint-independent side's probes to random ports of the other
 *   side's public IP, at a bounded rate and in a bounded number.
 * The endpoint-dependent side's part is the transport's auxiliary sockets
 * (`UdpTransport.openAuxiliary`): N sockets, each with its own mapping toward the peer. A probe
 * hits one of N mappings among 64512 ports with probability N / 64512 (256 sockets: 0.4 %), so
 * about 175 probes find one half the time, and 4000 miss with probability e^-16.
 */
import type { Address } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import type { NatMapping } from '../wire/hole-punch'
import type { Observation } from './punch-types'

/** Lowest port probed (ports below are rarely used for NAT mappings). */
export const FIRST_PORT = 1024
const PORTS = 65536 - FIRST_PORT
/** Milliseconds between batches of probes. */
const TICK = 20

/**
 * The mapping of our NAT as observations show it: 'dependent' when two observers saw us at the
 * same IP but different ports, 'independent' when at least two observers agree on one address
 * (and none disagrees), else 'unknown'.
 */
export function mappingOf(observations: readonly Observation[]): NatMapping {
  const byHost = new Map<string, Set<number>>()
  const observers = new Set<string>()
  for (const o of observations) {
    observers.add(o.observer.key)
    let ports = byHost.get(o.address.host)
    if (!ports) byHost.set(o.address.host, (ports = new Set()))
    ports.add(o.address.port)
  }
  for (const ports of byHost.values()) if (ports.size > 1) return 'dependent'
  return observers.size >= 2 && byHost.size === 1 ? 'independent' : 'unknown'
}

/**
 * Sends `send(address)` to random, distinct ports of `host`, `rate` per second, `max` in all, until
 * stopped. Bounded memory: the ports tried (at most `max`).
 */
export class BirthdayProber {
  #timer: TimerHandle | undefined
  #credit = 0
  #last = 0
  readonly #tried = new Set<number>()
  readonly #rand = new Uint32Array(64)
  #randAt = 64

  constructor(
    private readonly clock: Clock,
    private readonly target: Address,
    private readonly rate: number,
    private readonly max: number,
    private readonly send: (to: Address) => void,
  ) {}

  /** Probes sent so far. */
  get sent(): number {
    return this.#tried.size
  }

  get running(): boolean {
    return this.#timer !== undefined
  }

  start(): void {
    if (this.#timer !== undefined) return
    this.#last = this.clock.now()
    this.#credit = Math.min(this.rate * (TICK / 1000), this.max)
    this.#tick()
  }

  stop(): void {
    this.clock.clearTimeout(this.#timer)
    this.#timer = undefined
  }

  readonly #tick = (): void => {
    const now = this.clock.now()
    this.#credit = Math.min(this.#credit + ((now - this.#last) * this.rate) / 1000, this.rate) // at most 1 s of burst
    this.#last = now
    while (this.#credit >= 1 && this.#tried.size < this.max) {
      this.#credit -= 1
      let port: number
      do port = FIRST_PORT + (this.#random() % PORTS)
      while (this.#tried.has(port))
      this.#tried.add(port)
      this.send(toAddress(this.target.host, port))
    }
    this.#timer = this.#tried.size < this.max ? this.clock.setTimeout(this.#tick, TICK) : undefined
  }

  #random(): number {
    if (this.#randAt === this.#rand.length) {
      crypto.getRandomValues(this.#rand)
      this.#randAt = 0
    }
    return this.#rand[this.#randAt++]
  }
}
