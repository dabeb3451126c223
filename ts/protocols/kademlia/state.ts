/**
 * Kademlia: the shared parts — wire constants, options and result types, the state every part of
 * the layer works on ({@link KadState}). The protocol itself — answering, requests and their
 * matching, verifying and admitting peers, the lookups' progress — runs in the native node
 * (`KadTable`, deccom-core's `kad::node`), one call per datagram. The parts here: `driver.ts`
 * (datagrams in and out, the node's timer, its events), `peers.ts` (peers entering and leaving the
 * table, approval), `lookups.ts` (lookups and their promises), `join.ts` (starting the node's join
 * and refresh, which run natively, and their outcome: `ready()`, the log), and the layer itself in
 * `layer.ts`; encoded records to Peers in `message.ts`.
 */
import type { Address, AddressLike } from '../../address'
import { Waiters } from '../../abort'
import type { Clock, TimerHandle } from '../../clock'
import { DeccomError, ErrorCode } from '../../errors'
import type { native } from '../../native'
import type { Peer } from '../../peer'
import { PeerListeners } from '../../peer-listeners'
import { type LayerLog, silentLog } from '../../log'

/** A resolved binding of the layer (as `Fn` in layer-types.ts, which imports this module's types). */
type Fn = (...args: any[]) => any

/** Tag of Kademlia datagrams. */
export const TAG_KAD = 3

/** Error codes of discovery layers (not in ErrorCode yet). */
export const DiscoveryErrorCode = Object.freeze({
  /** The lookup ended without finding the peer. */
  PEER_NOT_FOUND: 'ERR_DECCOM_PEER_NOT_FOUND',
  /** findPeer's timeout passed. */
  LOOKUP_TIMEOUT: 'ERR_DECCOM_LOOKUP_TIMEOUT',
  /** The node runs as many lookups as it may (4,096): none was started. */
  TOO_MANY_LOOKUPS: 'ERR_DECCOM_TOO_MANY_LOOKUPS',
} as const)


/** Options of {@link Kademlia}. */
export interface KademliaOptions {
  /** Addresses of nodes to join through (their ids need not be known). */
  bootstrap?: AddressLike[]
  /** Bucket size and lookup width (default 20). */
  k?: number
  /** Parallel queries per lookup (default 3). */
  alpha?: number
  /** Bucket refresh period in ms (default 600 000). */
  refreshInterval?: number
  /**
   * Per-query timeout in ms (default 1000); an answer up to twice as late still counts. A lookup
   * stops waiting for a query earlier, after the node's usual answer time (see `minPatience`).
   */
  queryTimeout?: number
  /**
   * A lookup stops waiting for an unanswered FIND_NODE (it may still answer, and is then used)
   * after srtt + 4 × rttvar of this node's answered FIND_NODEs (RFC 6298's estimator), at least
   * this many ms (default 100), at most `queryTimeout`. So a dead contact delays a lookup by about
   * a round trip's worth of patience, not by a whole `queryTimeout`.
   */
  minPatience?: number
  /**
   * A joined node looks itself up once more this many ms after joining (default 10 000; 0: never),
   * so that nodes that joined around the same time — a network forming, many nodes started at
   * once — learn of it without waiting for the periodic refresh.
   */
  settleLookup?: number
  /**
   * After joining, the bucket refresh (lookups of random ids in the buckets the self-lookup did not
   * cover) starts this many ms after `ready()` resolved (default 500; 0: at once), so that what the
   * application does right after `ready()` — a `findPeer`, a `connect` — does not share the
   * network and the CPU with it. The refresh then runs as before.
   */
  joinRefreshDelay?: number
  /** Bootstrap attempts after the first while no bootstrap node answers (default 5). */
  bootstrapRetries?: number
  /** Consecutive query failures after which a table entry is removed (default 2). */
  maxFailures?: number
  /** Size FIND_NODE is padded to on first contact (default 1200; 0 disables). */
  padTo?: number
  /**
   * An ephemeral node looks others up, answers what it is asked, and connects — but asks the
   * nodes it queries not to add it to their routing tables (its FIND_NODEs carry the ephemeral
   * flag), so a short-lived client leaves no dead entries behind when it goes. Nobody can find it
   * by its id (`findPeer` of it fails); it finds and connects to others (default false).
   */
  ephemeral?: boolean
  /** Replacement cache size per bucket (default 20). */
  maxReplacements?: number
  /** Default `findPeer` timeout in ms (default 30 000). */
  findTimeout?: number
  /**
   * A full bucket's least recently seen entry is pinged to make room for a newcomer only if it was
   * not heard from for this many ms, and no entry of the bucket answered such a ping within this
   * many ms (default 300 000, the refresh period; 0: always). Anything heard from the pinged entry
   * counts as an answer. A dead entry is also removed once it fails `maxFailures` queries in a row.
   */
  pingInterval?: number
  /**
   * Seed of request ids and random lookup targets (default: drawn from `ctx.random` at start: the OS
   * generator, or in a SimulatedNetwork the network's seed).
   */
  seed?: number
}

/** Options of {@link Kademlia.findPeer}. */
export interface FindPeerOptions {
  /** ms before rejecting with ERR_DECCOM_LOOKUP_TIMEOUT (default: the layer's `findTimeout`). */
  timeout?: number
  /** Aborting it rejects with ERR_DECCOM_ABORTED. */
  signal?: AbortSignal
  /**
   * Called once per address the lookup learns for the target (from the table or from another
   * node's answer), before the target confirmed it there. A caller that authenticates the id
   * itself (a Noise handshake at that address) may start on it early; the promise still resolves
   * with the verified peer. A throwing callback is ignored.
   */
  onCandidate?: (peer: Peer) => void
}

/** Options of {@link Kademlia.lookup}. */
export interface LookupOptions extends FindPeerOptions {
  /** Stop as soon as a peer with the target id is learned (default false: run to convergence). */
  stopAtTarget?: boolean
}

/** The outcome of {@link Kademlia.lookup}. */
export interface LookupResult {
  /**
   * The peer with the target id, if found. `peer.verified` is true when it answered a query of ours
   * at that address under that id (through Noise: an authenticated session with that id); false
   * when only other nodes named it there and it did not answer (e.g. behind a NAT). A verified
   * address is preferred to any number of unverified ones.
   */
  peer: Peer | null
  /** The k closest peers that answered, closest first (decoded when first read). */
  closest: Peer[]
  /** Hops: 0 if the target was in the table, else 1 + depth of the peer that named it (or rounds). */
  hops: number
  /** Queries sent. */
  queries: number
  /** Queries that failed (their peer could not be reached). */
  failures: number
  /** Queries unanswered within the query timeout (an answer may still come later). */
  timeouts: number
  /** ms on the layer's clock. */
  elapsed: number
}

export type KadEvent = 'connected' | 'disconnected'
export type NativeTable = InstanceType<typeof native.KadTable>
export type LookupOutcome = NonNullable<ReturnType<NativeTable['takeLookup']>>

/** A lookup running in the node (by its id), and what its end resolves. */
export interface Run {
  id: number
  done: boolean
  /** findPeer: told each address the lookup learns for the target (FindPeerOptions.onCandidate). */
  onClaim: ((peer: Peer) => void) | undefined
  onDone: (o: LookupOutcome) => void
  onError: (e: Error) => void
}

export interface Approver {
  approveConnection(peer: Peer): boolean | Promise<boolean>
}

/** The operations of the Kademlia layer its parts may use. */
export interface KadLayerOps {
  count(name: string, n?: number): void
  sendControl(to: Address, data: Uint8Array): boolean
  /** The layer's resolved `emits` slots (onConnected, onDisconnected). */
  readonly upper: Record<string, Fn>
  /** The layer's resolved `bindTo` bindings (externalAddress?). */
  readonly lower: Record<string, Fn>
}

/** The state of one Kademlia layer, shared by its parts (the layer owns it; nothing else sees it). */
/** A node's place in a simulator's native delivery lane (`ts/sim/lane.ts`, LaneHandle). */
export interface KadLane {
  readonly attached: boolean
  /** Arms the node's timer at `at` (ms; below 0: none) unless it is armed earlier. */
  arm(at: number, now: number): void
  /** Sends what the node queued and arms its timer; true when the node has events. */
  kick(now: number): boolean
  /** Moves the node's timer, an event (time, seq) of the network's queue, to the lane. */
  adopt(at: number, time: number, seq: number): void
  /** Datagrams sent and received through the lane, frames to its own address dropped. */
  counters(): { sent: number; received: number; dropped_self: number }
  detach(): { sent: number; received: number; dropped_self: number }
}

export class KadState {
  bootstrap!: Address[]
  k!: number
  alpha!: number
  refreshInterval!: number
  queryTimeout!: number
  minPatience!: number
  settleLookup!: number
  joinRefreshDelay!: number
  bootstrapRetries!: number
  maxFailures!: number
  padTo!: number
  ephemeral = false
  maxReplacements!: number
  findTimeout!: number
  pingInterval!: number
  running = false
  clock!: Clock
  log: LayerLog = silentLog
  self!: Address
  selfId!: Buffer
  selfHex = ''
  /** The external address our own record carries, or null. */
  ownExternal: Address | null = null
  /** The layer below has `externalAddress` (else our record carries none). */
  hasExternal = false
  /** The native node while running. */
  table: NativeTable | null = null
  approver: Approver | null = null
  /** Lookups running in the node, by id. */
  readonly runs = new Map<number, Run>()
  readonly listeners = new PeerListeners<KadEvent>((name) => this.count(name))
  /** Peers entering or leaving the table are reported (someone listens). */
  peerEvents = false
  joined = false
  /** `ready()` calls waiting for the join; failed with the last bootstrap failure. */
  readonly joinWaiters = new Waiters()
  /** Every attempt of the join failed (until it joins: the periodic refresh tries again). */
  joinFailed = false
  /** The node's one timer (at its earliest deadline) and when it fires. */
  timer: TimerHandle | null = null
  timerAt = Infinity
  /**
   * The simulator's native delivery lane, when the node runs in it: the lane then delivers the
   * node's datagrams from other lane nodes and runs its timer (see `attachNativeLane`).
   */
  lane: KadLane | null = null
  /** The node's timer callback (set by the layer: `driver.ts`). */
  timerTick: () => void = () => {}
  /**
   * What the node's events go to (set by the layer): a lookup ended (`lookups.ts`), a peer entered
   * or left the table, a peer waits for approval (`peers.ts`), the join's outcome (`join.ts`).
   */
  onLookupDone: (id: number) => void = () => {}
  onJoin: (kind: number, n: number) => void = () => {}
  onPeer: (event: KadEvent, peer: Peer) => void = () => {}
  onApprove: (record: Buffer) => void = () => {}

  constructor(private readonly layer: KadLayerOps) {}


  count(name: string, n?: number): void {
    this.layer.count(name, n)
  }

  sendControl(to: Address, data: Uint8Array): boolean {
    return this.layer.sendControl(to, data)
  }

  get upper(): Record<string, Fn> {
    return this.layer.upper
  }

  get lower(): Record<string, Fn> {
    return this.layer.lower
  }
}

/** A 32-byte node id from a Buffer or 64 hex digits. */
export function toId(id: Buffer | Uint8Array | string): Buffer {
  if (typeof id === 'string') {
    if (/^[0-9a-fA-F]{64}$/.test(id)) return Buffer.from(id, 'hex')
  } else if (id instanceof Uint8Array && id.length === 32) {
    return Buffer.isBuffer(id) ? id : Buffer.from(id)
  }
  throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'A node id is 32 bytes (a Buffer) or 64 hex digits')
}

export function toHex(id: Buffer | string): string {
  return typeof id === 'string' ? id.toLowerCase() : Buffer.from(id).toString('hex')
}

export function int(v: number, min: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} must be an integer ${min}..${max}, got ${v}`)
  }
  return v
}

export function positive(v: number, what: string): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} must be a finite number > 0, got ${v}`)
  return v
}

export function nonNegative(v: number, what: string): number {
  if (!(v >= 0) || !Number.isFinite(v)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} must be a finite number >= 0, got ${v}`)
  return v
}

export function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The Kademlia layer is not running (not started, or stopped)')
}

export function aborted(signal: AbortSignal): DeccomError {
  return new DeccomError(ErrorCode.ABORTED, 'The operation was aborted', { cause: signal.reason })
}
