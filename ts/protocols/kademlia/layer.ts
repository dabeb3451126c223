/** Kademlia — the layer (see `index.ts` for the protocol, `state.ts` for its parts). */
import type { Address, AddressLike } from '../../address'
import { fromRawAddress, toAddress } from '../../address'
import type { TimerHandle } from '../../clock'
import { DeccomError, ErrorCode } from '../../errors'
import type { Identity } from '../../identity'
import { native } from '../../native'
import { cryptoRandom } from '../../layer-random'
import { Peer, encodePeerRecord } from '../../peer'
import type { PeerListener } from '../../peer-listeners'
import type { LayerContext } from '../../protocol'
import { Protocol } from '../../protocol'
import { type LayerLog, silentLog } from '../../log'
import { deliver, events, onTimer } from './driver'
import { abort, lookupDone, resultOf, startLookup } from './lookups'
import { peersOfRecords } from './message'
import { approve, emit, entryPeer } from './peers'
import { onJoined, onJoinFailed, onJoinRetry, startUpkeep } from './join'
import {
  type FindPeerOptions, type KadEvent, type KademliaOptions, type LookupOptions, type LookupResult,
  type KadLane, DiscoveryErrorCode, KadState, TAG_KAD, aborted, closed, int, nonNegative, positive, toHex, toId,
} from './state' // prettier-ignore

/** The native node's counter names, by index. */
const COUNTER_NAMES: string[] = native.kadCounterNames()

export class Kademlia extends Protocol {
  static override bindTo = ['send', 'localAddress', 'externalAddress?', 'approveConnection?', 'tcpAddress?']
  static override bindFrom = ['onMessage', 'introducerOf?']
  static override provides = ['findPeer', 'getPeer', 'peers', 'closest', 'closestRows', 'lookup', 'introducerOf']
  static override emits = ['onMessage', 'onConnected', 'onDisconnected']

  readonly name = 'kademlia'
  override readonly tag = TAG_KAD

  #log: LayerLog = silentLog
  /** The address last told to the node as alive, and when (see `onMessage`). */
  #aliveFrom: Address | null = null
  #aliveAt = 0
  /** The log's `enabled`, as last asked (see `onMessage`), and datagrams since. */
  #logOn = false
  #logCheck = 0
  readonly #seed: number | undefined
  readonly #s: KadState = new KadState({
    count: (name, n) => this.count(name, n),
    sendControl: (to, data) => this.sendControl(to, data),
    upper: this.upper,
    lower: this.lower,
  })

  constructor(opts: KademliaOptions = {}) {
    super()
    this.#s.bootstrap = (opts.bootstrap ?? []).map((a) => toAddress(a))
    this.#s.k = int(opts.k ?? 20, 1, 64, 'k')
    this.#s.alpha = int(opts.alpha ?? 3, 1, 64, 'alpha')
    this.#s.refreshInterval = positive(opts.refreshInterval ?? 600_000, 'refreshInterval')
    this.#s.queryTimeout = positive(opts.queryTimeout ?? 1000, 'queryTimeout')
    this.#s.minPatience = positive(opts.minPatience ?? 100, 'minPatience')
    this.#s.settleLookup = nonNegative(opts.settleLookup ?? 10_000, 'settleLookup')
    this.#s.joinRefreshDelay = nonNegative(opts.joinRefreshDelay ?? 500, 'joinRefreshDelay')
    this.#s.bootstrapRetries = int(opts.bootstrapRetries ?? 5, 0, 1000, 'bootstrapRetries')
    this.#s.maxFailures = int(opts.maxFailures ?? 2, 1, 1000, 'maxFailures')
    this.#s.padTo = int(opts.padTo ?? 1200, 0, 65_000, 'padTo')
    this.#s.ephemeral = opts.ephemeral === true
    this.#s.maxReplacements = int(opts.maxReplacements ?? 20, 0, 1000, 'maxReplacements')
    this.#s.findTimeout = positive(opts.findTimeout ?? 30_000, 'findTimeout')
    this.#s.pingInterval = nonNegative(opts.pingInterval ?? 300_000, 'pingInterval')
    this.#seed = opts.seed
    this.#s.onJoin = (kind, n) => {
      if (kind === 6) onJoined(this.#s, n === 1)
      else if (kind === 7) onJoinRetry(this.#s, n)
      else onJoinFailed(this.#s, n)
    }
    this.#s.timerTick = () => onTimer(this.#s)
    this.#s.onLookupDone = (id) => lookupDone(this.#s, id)
    this.#s.onPeer = (event, peer) => emit(this.#s, event, peer)
    this.#s.onApprove = (record) => approve(this.#s, record)
  }

  override async start(ctx: LayerContext): Promise<void> {
    const s = this.#s
    s.clock = ctx.clock
    // Request ids and refresh targets: the option's seed, else the node's stream (seeded in a simulation).
    const seed = (this.#seed ?? (ctx.random ?? cryptoRandom).u32()) >>> 0 || 0x9e3779b9
    this.#log = s.log = ctx.log
    this.#logOn = this.#log.enabled
    const identity = ctx.identity as Identity
    s.self = this.lower.localAddress() as Address
    s.selfId = identity.id
    s.selfHex = identity.idHex
    s.ownExternal = null
    s.hasExternal = this.hasLower('externalAddress')
    // A TcpTransport below announces its port in our record (connect(peer, { transport: 'tcp' })).
    const tcp = this.hasLower('tcpAddress') ? (this.lower.tcpAddress() as Address | null | undefined) : null
    const own = encodePeerRecord({ publicIdentity: identity.publicIdentity, address: s.self, tcpPort: tcp?.port })
    s.approver = this.hasLower('approveConnection') ? { approveConnection: (peer) => this.lower.approveConnection(peer) } : null
    s.table = new native.KadTable(own, s.k, s.maxReplacements, s.clock.now(), {
      alpha: s.alpha,
      queryTimeout: s.queryTimeout,
      minPatience: s.minPatience,
      maxFailures: s.maxFailures,
      padTo: s.padTo,
      ephemeral: s.ephemeral,
      pingInterval: s.pingInterval,
      approve: s.approver !== null,
      seed,
    })
    s.peerEvents = false
    this.#peerEvents()
    s.running = true
    startUpkeep(s)
  }

  /**
   * @internal Offered by the stack when this layer sends through `below` and receives from it
   * (NativeLaneUser): a SimTransport on a network with `nativeDelivery` then runs this node in its
   * native lane. Not with an external address to follow nor with the log on (the lane neither asks
   * nor logs per datagram).
   */
  attachNativeLane(below: object): boolean {
    const s = this.#s
    const t = below as { _attachLane?: (table: unknown, tag: number, client: { onEvents(): void }) => KadLane | null }
    if (typeof t._attachLane !== 'function' || !s.running || !s.table || s.lane !== null || this.#logOn || s.hasExternal) return false
    const lane = t._attachLane(s.table, TAG_KAD, { onEvents: () => events(s) })
    if (lane === null) return false
    s.lane = lane
    // The node's timer moves to the lane as the same event (its time and place in the queue).
    const timer = s.timer as { time?: unknown; seq?: unknown } | null
    if (timer !== null && typeof timer.time === 'number' && typeof timer.seq === 'number') lane.adopt(s.timerAt, timer.time, timer.seq)
    else if (timer !== null) lane.arm(s.timerAt, s.clock.now())
    s.clock.clearTimeout(s.timer ?? undefined)
    s.timer = null
    s.timerAt = Infinity
    return true
  }

  /** Peers entering and leaving the table are reported when someone listens. */
  #peerEvents(): void {
    const s = this.#s
    const on = this.hasUpper('onConnected') || this.hasUpper('onDisconnected') || s.listeners.any()
    if (on && !s.peerEvents && s.table) {
      s.peerEvents = true
      s.table.setPeerEvents(true)
    }
  }

  override async stop(): Promise<void> {
    const s = this.#s
    if (!s.running) return
    s.running = false
    const clock = s.clock
    clock.clearTimeout(s.timer ?? undefined)
    s.timer = null
    s.timerAt = Infinity
    if (s.lane !== null) {
      const c = s.lane.detach()
      if (c.sent > 0) this.count('sent', c.sent)
      if (c.dropped_self > 0) this.count('send_errors', c.dropped_self)
      s.lane = null
    }
    for (const run of [...s.runs.values()]) abort(s, run, closed())
    s.joinWaiters.rejectAll(closed())
    s.table = null
  }

  // ---- public API -------------------------------------------------------------------------

  /** Listen to peers entering (`connected`) or leaving (`disconnected`) the routing table. */
  on(event: KadEvent, fn: PeerListener): this {
    this.#s.listeners.add(event, fn)
    this.#peerEvents()
    return this
  }

  /** Stop listening (see {@link on}). */
  off(event: KadEvent, fn: PeerListener): this {
    this.#s.listeners.delete(event, fn)
    return this
  }

  /**
   * The peer with node id `id` (32 bytes or 64 hex digits): from the table, else by an iterative
   * lookup that stops as soon as some node names it.
   * @throws ERR_DECCOM_PEER_NOT_FOUND, ERR_DECCOM_LOOKUP_TIMEOUT, ERR_DECCOM_ABORTED, ERR_DECCOM_CLOSED,
   *   ERR_DECCOM_INVALID_ARGUMENT
   */
  async findPeer(id: Buffer | string, opts: FindPeerOptions = {}): Promise<Peer> {
    const r = await this.#lookup(id, { ...opts, stopAtTarget: true }, false)
    if (r.peer) return r.peer
    throw new DeccomError(DiscoveryErrorCode.PEER_NOT_FOUND, `No node knows a peer with id ${toHex(id).slice(0, 16)}…`, {
      details: { queries: r.queries, hops: r.hops },
    })
  }

  /** An iterative lookup of `target` (see {@link LookupResult}); `stopAtTarget` for findPeer. */
  lookup(target: Buffer | string, opts: LookupOptions = {}): Promise<LookupResult> {
    return this.#lookup(target, opts, true)
  }

  /** {@link lookup}; `closest`: the result lists the closest peers (findPeer needs only the target). */
  #lookup(target: Buffer | string, opts: LookupOptions, closest: boolean): Promise<LookupResult> {
    return new Promise<LookupResult>((resolve, reject) => {
      const s = this.#s
      const id = toId(target)
      if (!s.running) return reject(closed())
      const { signal, timeout = s.findTimeout, stopAtTarget = false, onCandidate } = opts
      if (signal?.aborted) return reject(aborted(signal))
      const hex = id.toString('hex')
      const t0 = s.clock.now()
      if (stopAtTarget) {
        // Table entries answered us at their address (and were approved by the layer below).
        const p = entryPeer(s, id, true)
        if (p) {
          this.count('lookups_from_table')
          return resolve({ peer: p, closest: [p], hops: 0, queries: 0, failures: 0, timeouts: 0, elapsed: 0 })
        }
      }
      this.#log('lookup %s started', hex.slice(0, 8))
      let timer: TimerHandle | undefined
      let onAbort: (() => void) | undefined
      const cleanup = (): void => {
        s.clock.clearTimeout(timer)
        if (onAbort) signal!.removeEventListener('abort', onAbort)
      }
      const run = startLookup(
        s,
        id,
        { stop: stopAtTarget, onClaim: stopAtTarget ? onCandidate : undefined, records: closest },
        (o) => {
          cleanup()
          const r = resultOf(o, closest)
          this.#log('lookup %s %s: %d hops, %d queries (%d failed, %d timed out) in %d ms', hex.slice(0, 8), r.peer ? 'found' : stopAtTarget ? 'not found' : 'done', r.hops, r.queries, r.failures, r.timeouts, Math.round(r.elapsed))
          resolve(r)
        },
        (e) => {
          cleanup()
          this.#log('lookup %s failed after %d ms: %s', hex.slice(0, 8), Math.round(s.clock.now() - t0), (e as Error).message)
          reject(e)
        },
      )
      if (run.done) return
      timer = s.clock.setTimeout(() => {
        this.count('lookup_timeouts')
        abort(s, run, new DeccomError(DiscoveryErrorCode.LOOKUP_TIMEOUT, `The lookup did not finish within ${timeout} ms`, { details: { timeout } }))
      }, timeout)
      if (signal) {
        onAbort = () => abort(s, run, aborted(signal))
        signal.addEventListener('abort', onAbort, { once: true })
      }
    })
  }

  /**
   * The peer that most recently named `addr` in an answer to one of our lookups (it has heard from
   * `addr`, so it can introduce us: HolePuncher.connect(target) asks this), or null.
   */
  introducerOf(addr: AddressLike): Address | null {
    const teller = this.#s.table?.tellerOf(toAddress(addr).raw)
    return teller ? fromRawAddress(teller) : null
  }

  /** The peer with node id `id` if it is in the routing table (no network traffic), else undefined. */
  getPeer(id: Buffer | string): Peer | undefined {
    let key: Buffer
    try {
      key = toId(id)
    } catch {
      return undefined // not an id: no peer has it
    }
    return entryPeer(this.#s, key)
  }

  /** Every peer in the routing table. */
  peers(): Peer[] {
    return this.#s.table ? peersOfRecords(this.#s.table.records(null, 0)) : []
  }

  /** The up to `n` peers of the table closest to `id`, closest first. */
  closest(id: Buffer | string, n: number = this.#s.k): Peer[] {
    if (!this.#s.table) return []
    return peersOfRecords(this.#s.table.records(toId(id), n))
  }

  /**
   * The up to `n` peers of the table closest to `target` (32 bytes), closest first, written into
   * `out` as rows of 50 bytes — the id, then the address in its 18-byte form (`Address.raw`) —
   * without the one at `exclude`, if it is among them. Returns the rows written (`out` holds at
   * most `out.length / 50`). What a DHT answer lists, with no object made per peer.
   */
  closestRows(target: Buffer, n: number, exclude: Address | null, out: Buffer): number {
    if (!this.#s.table) return 0
    return this.#s.table.closestRows(target, n, exclude?.raw ?? null, out)
  }

  /** @internal The native routing table (a KadTable) while running, for the socket's DHT responder. */
  nativeTable(): unknown {
    return this.#s.table
  }

  /** Entries in the routing table. */
  get size(): number {
    return this.#s.table?.size ?? 0
  }

  /** True once a bootstrap node answered (or there was none to ask) and the self-lookup ended. */
  get joined(): boolean {
    return this.#s.joined
  }

  /**
   * Resolves once joined (see {@link joined}); `node.ready()` waits for it. Rejects with
   * ERR_DECCOM_NOT_READY when every bootstrap attempt failed, ERR_DECCOM_ABORTED, ERR_DECCOM_CLOSED.
   */
  ready(opts: { signal?: AbortSignal } = {}): Promise<void> {
    const s = this.#s
    if (s.joined) return Promise.resolve()
    if (!s.running) return Promise.reject(closed())
    if (s.joinFailed) {
      return Promise.reject(new DeccomError(ErrorCode.NOT_READY, 'Kademlia could not join: no bootstrap node answered', { details: { layer: 'kademlia' } }))
    }
    return s.joinWaiters.wait(opts.signal)
  }

  override stats(): Record<string, number> {
    const s = this.#s
    const out: Record<string, number> = { ...this.counters }
    if (s.lane?.attached === true) {
      const c = s.lane.counters()
      if (c.sent > 0) out.sent = (out.sent ?? 0) + c.sent
      if (c.dropped_self > 0) out.send_errors = (out.send_errors ?? 0) + c.dropped_self
    }
    const t = s.table
    if (t) {
      const c = t.counters()
      for (let i = 0; i < c.length; i++) if (c[i]! > 0) out[COUNTER_NAMES[i]!] = (out[COUNTER_NAMES[i]!] ?? 0) + c[i]!
    }
    const z = t?.addrSizes()
    return {
      ...out, table_size: this.size, pending_requests: t?.pendingRequests ?? 0, lookups_running: s.runs.size, query_srtt_ms: t?.querySrtt ?? 0,
      lookup_patience_ms: t?.patience ?? s.queryTimeout, known_ids: t?.handles().length ?? 0, told_by_size: t?.tellersSize ?? 0,
      verified_size: z?.verified ?? 0, verified_by_size: z?.verifiedBy ?? 0, budget_ips: z?.budgetIps ?? 0, budget_prefixes: z?.budgetPrefixes ?? 0, reply_limit_keys: z?.replyLimitKeys ?? 0,
    } // prettier-ignore
  }

  // ---- datagrams --------------------------------------------------------------------------

  /** A datagram from the layer below: handles this layer's tag, passes the rest up. */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    // A secure layer below (Noise) reports the sender as a Peer; the address is what we match on.
    const from = source instanceof Peer ? source.address : source
    const s = this.#s
    if (tag !== TAG_KAD) {
      // Any datagram from a table entry's address counts as a sign of life: told to the node once
      // per second per address in a row (a stream's datagrams do not each cross into native code).
      const now = s.clock.now()
      if (s.table && (from !== this.#aliveFrom || now - this.#aliveAt >= 1000)) {
        this.#aliveFrom = from
        this.#aliveAt = now
        s.table.alive(from.raw, now)
      }
      return this.upper.onMessage(source, data, tag)
    }
    if (!s.running) return this.count('dropped_not_running')
    // Through an authenticating layer (Noise) the session's handshake went to this address and
    // back: the address is validated, and the sender proved its id.
    const proven = source instanceof Peer && source.id !== null ? source : from
    // Whether the log is on, asked again every 1,024 datagrams (asking costs more than a datagram's
    // share of the layer's work).
    if ((this.#logCheck = (this.#logCheck + 1) & 1023) === 0) this.#logOn = this.#log.enabled
    if (!this.#logOn) return deliver(s, proven, from, data)
    const before = s.table!.counters()
    deliver(s, proven, from, data)
    this.#logDrops(before)
  }

  /** Logs what the node dropped since its counters were `before` (as `count` logs a drop). */
  #logDrops(before: number[]): void {
    const after = this.#s.table?.counters()
    if (!after) return
    for (let i = 0; i < after.length; i++) {
      const n = after[i]! - before[i]!
      const name = COUNTER_NAMES[i]!
      if (n === 0 || !name.startsWith('dropped_')) continue
      if (n === 1) this.#log(name)
      else this.#log(`${name} (%d)`, n)
    }
  }

  // ---- helpers ----------------------------------------------------------------------------

  /** The external address our own record carries (what the layers below agreed on), or null. */
  ownExternalAddress(): Address | null {
    return this.#s.ownExternal
  }

}
