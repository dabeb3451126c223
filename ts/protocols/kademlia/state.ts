/**
 * Kademlia: the shared parts — wire constants, options and result types, the state every part of
 * the layer works on ({@link KadState}), and the message helpers. The parts: `rpc.ts` (requests and
 * their matching), `verification.ts` (answering FIND_NODE, verifying and admitting peers into the
 * routing table), `lookups.ts` (iterative lookups), `refresh.ts` (join and bucket refresh), and the
 * layer itself in `layer.ts`; decoding datagrams is `message.ts`.
 */
import type { Address, AddressLike } from '../../address'
import { Waiters } from '../../abort'
import type { Clock, TimerHandle } from '../../clock'
import { DeccomError, ErrorCode } from '../../errors'
import type { native } from '../../native'
import type { Peer } from '../../peer'
import { type LayerLog, silentLog } from '../../log'
import type { KadMessage } from './message'
import { IdMap } from './id-map'

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
} as const)

export const PING = 1
export const PONG = 2
export const FIND_NODE = 3
export const NODES = 4
export const QUERY = 0
export const WAIT = 1
export const MAX_PENDING = 8192
export const MAX_VERIFYING = 256
export const MAX_APPROVING = 1024

/** Options of {@link Kademlia}. */
export interface KademliaOptions {
  /** Addresses of nodes to join through (their ids need not be known). */
  bootstrap?: AddressLike[]
  /** Bucket size and lookup width (default 20). */
  k?: number
  /** Parallel queries per lookup (default 3). */
  alpha?: number
  /** Bucket refresh period in ms (default 300 000). */
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
   * many ms (default 60 000; 0: always). Anything heard from the pinged entry counts as an answer.
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
  /** The k closest peers that answered, closest first. */
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

export type Listener = (peer: Peer) => void
export type KadEvent = 'connected' | 'disconnected'
export type NativeMessage = KadMessage
export type NativeTable = InstanceType<typeof native.KadTable>
export type NativeLookup = InstanceType<typeof native.KadLookup>

export interface Entry {
  handle: number
  /** The peer's node id (`peer.id`). */
  id: Buffer
  peer: Peer
  failures: number
  inTable: boolean
}

export interface Request {
  hi: number
  to: Address
  kind: number
  timer: TimerHandle
  cb: (m: NativeMessage | null) => void
}

export interface Run {
  target: Buffer
  /** findPeer: the lookup stops once the target answers (it is asked apart, as a claim). */
  stop: boolean
  /** An internal lookup: `onDone` gets no result object (see `ids`). */
  maintenance: boolean
  /** A maintenance lookup's `onDone` gets the ids of the closest peers that answered. */
  ids: boolean
  /** The result lists the closest peers (not for findPeer, which returns only the target). */
  closest: boolean
  lk: NativeLookup
  done: boolean
  timer: TimerHandle | null
  timerAt: number
  /** The target, verified: it answered a query of ours at that address under its id. */
  found: Peer | null
  foundHops: number
  /** findPeer: addresses third parties named for the target, not yet asked (bounded). */
  claims: Array<{ peer: Peer; hops: number }>
  /** findPeer: every address claimed so far (by Address.key), so each is asked once. */
  claimed: Set<string>
  /** The first claim that could not be verified (the target may be behind a NAT), if any. */
  unverified: { peer: Peer; hops: number } | null
  /** A claim is being asked now. */
  verifying: boolean
  /**
   * findPeer: while a claim is asked, the lookup sends no new query until this time (patience
   * after the claim was sent): the target's own answer usually ends the lookup first.
   */
  pausedUntil: number
  /** The native lookup has converged; finish when no claim is being asked. */
  converged: boolean
  t0: number
  /** findPeer: told each claimed address of the target as it is learned (FindPeerOptions.onCandidate). */
  onClaim: ((peer: Peer) => void) | undefined
  /** A maintenance lookup ends (sends no further query) once this is true, e.g. its bucket filled. */
  enough: (() => boolean) | undefined
  /**
   * Told of every answer, with the lookup, right after its records became candidates (the parse
   * layout still describes it: `KadLookup.unknownCloser` may read it).
   */
  onAnswer: ((m: NativeMessage, lk: NativeLookup) => void) | undefined
  onDone: (r: LookupResult | null, closestIds: Buffer) => void
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
export class KadState {
  bootstrap!: Address[]
  k!: number
  alpha!: number
  refreshInterval!: number
  queryTimeout!: number
  minPatience!: number
  settleLookup!: number
  settleTimer: TimerHandle | null = null
  joinRefreshDelay!: number
  /** The wait between joining and the join's bucket refresh. */
  joinRefreshTimer: TimerHandle | null = null
  /** Smoothed duration of answered FIND_NODEs (ms; 0: none yet) and its mean deviation. */
  querySrtt = 0
  queryRttVar = 0
  bootstrapRetries!: number
  maxFailures!: number
  padTo!: number
  ephemeral = false
  maxReplacements!: number
  findTimeout!: number
  pingInterval!: number
  rng!: number
  running = false
  clock!: Clock
  log: LayerLog = silentLog
  self!: Address
  selfId!: Buffer
  selfHex = ''
  /** The external address our own record carries, or null. */
  ownExternal: Address | null = null
  table: NativeTable | null = null
  approver: Approver | null = null
  readonly entries: (Entry | undefined)[] = []
  readonly free: number[] = []
  /** Known peers (in the table or its replacement caches) by node id. */
  readonly byId = new IdMap<Entry>()
  readonly byAddr = new Map<string, Entry>() // by Address.key: stable across intern-cache resets
  readonly pending = new Map<number, Request>()
  nextLo = 0
  readonly verifying = new Set<string>() // Address.key
  readonly approving = new Set<string>()
  readonly runs = new Set<Run>()
  readonly listeners = new Map<KadEvent, Set<Listener>>()
  refreshTimer: TimerHandle | null = null
  joinTimer: TimerHandle | null = null
  /** A join attempt (or the timer of its retry) is in progress. */
  joining = false
  refreshing = false
  joined = false
  /** `ready()` calls waiting for the join; failed with the last bootstrap failure. */
  readonly joinWaiters = new Waiters()
  joinFailed = false
  ids!: Buffer
  handles!: Uint32Array
  readonly qid = Buffer.alloc(32)
  /** Where `KadLookup.next` writes the address of the node to query (18-byte form). */
  readonly qaddr = Buffer.alloc(18)
  /** The periodic refresh timer's callback (set by the layer). */
  refreshTick: () => void = () => {}

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

/** The TCP port record `i` of `m` announced (0 = the sender), or null. */
export function tcpPortAt(m: NativeMessage, i: number): number | null {
  return m.tcpPort(i)
}

/** The encoded identity of record `i` of a decoded message (0 = the sender), a copy. */
export function identityAt(m: NativeMessage, i: number): Buffer {
  return m.identity(i)
}

/** The external address record `i` of a decoded message announced (0 = the sender), or null. */
export function externalAt(m: NativeMessage, i: number): Address | null {
  return m.external(i)
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

/** Records the duration of an answered FIND_NODE (RFC 6298 §2 gains). */
export function sampleQuery(s: KadState, ms: number): void {
  if (s.querySrtt === 0) {
    s.querySrtt = Math.max(ms, 0.001)
    s.queryRttVar = ms / 2
    return
  }
  s.queryRttVar = 0.75 * s.queryRttVar + 0.25 * Math.abs(s.querySrtt - ms)
  s.querySrtt = 0.875 * s.querySrtt + 0.125 * ms
}

/** How long a lookup waits for a FIND_NODE before asking another node (see `minPatience`). */
export function patience(s: KadState): number {
  if (s.querySrtt === 0) return s.queryTimeout
  return Math.min(s.queryTimeout, Math.max(s.minPatience, s.querySrtt + 4 * s.queryRttVar))
}
