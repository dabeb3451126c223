/** Kademlia — the layer (see `index.ts` for the protocol, `state.ts` for its parts). */
import type { Address, AddressLike } from '../../address'
import { fromRawAddress, toAddress } from '../../address'
import type { TimerHandle } from '../../clock'
import { DeccomError, ErrorCode } from '../../errors'
import type { Identity } from '../../identity'
import { native } from '../../native'
import { cryptoRandom } from '../../layer-random'
import { Peer, encodePeerRecord } from '../../peer'
import type { LayerContext } from '../../protocol'
import { Protocol } from '../../protocol'
import { abort, startLookup } from './lookups'
import { type KadMessage, copyOut, decodeKad, doneWith } from './message'
import { join, onRefreshTimer } from './refresh'
import { addrSizes, match } from './rpc'
import {
  type FindPeerOptions, type KadEvent, type KademliaOptions, type Listener, type LookupOptions, type LookupResult,
  DiscoveryErrorCode, FIND_NODE, KadState, NODES, PING, PONG, TAG_KAD, aborted, closed, int, nonNegative, patience, positive, toHex, toId,
} from './state' // prettier-ignore
import { ANSWER_REPLY_RATE, alive, answer, onFindNode } from './verification'

export class Kademlia extends Protocol {
  static override bindTo = ['send', 'localAddress', 'externalAddress?', 'approveConnection?', 'tcpAddress?']
  static override bindFrom = ['onMessage', 'introducerOf?']
  static override provides = ['findPeer', 'getPeer', 'peers', 'closest', 'closestRows', 'lookup', 'introducerOf']
  static override emits = ['onMessage', 'onConnected', 'onDisconnected']

  readonly name = 'kademlia'
  override readonly tag = TAG_KAD

  #log: (fmt: string, ...a: unknown[]) => void = () => {}
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
    this.#s.refreshInterval = positive(opts.refreshInterval ?? 300_000, 'refreshInterval')
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
    this.#s.pingInterval = nonNegative(opts.pingInterval ?? 60_000, 'pingInterval')
    this.#seed = opts.seed
    this.#s.ids = Buffer.alloc(32 * this.#s.k)
    this.#s.handles = new Uint32Array(this.#s.k)
    this.#s.refreshTick = () => onRefreshTimer(this.#s)
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#s.clock = ctx.clock
    // Request ids and refresh targets: the option's seed, else the node's stream (seeded in a simulation).
    this.#s.rng = (this.#seed ?? (ctx.random ?? cryptoRandom).u32()) >>> 0 || 0x9e3779b9
    this.#log = this.#s.log = ctx.log
    const identity = ctx.identity as Identity
    this.#s.self = this.lower.localAddress() as Address
    this.#s.selfId = identity.id
    this.#s.selfHex = identity.idHex
    this.#s.ownExternal = null
    // A TcpTransport below announces its port in our record (connect(peer, { transport: 'tcp' })).
    const tcp = this.hasLower('tcpAddress') ? (this.lower.tcpAddress() as Address | null | undefined) : null
    const own = encodePeerRecord({ publicIdentity: identity.publicIdentity, address: this.#s.self, tcpPort: tcp?.port })
    this.#s.table = new native.KadTable(own, this.#s.k, this.#s.maxReplacements, this.#s.clock.now())
    this.#s.table.setFreshInterval(this.#s.pingInterval)
    this.#s.approver = this.hasLower('approveConnection') ? { approveConnection: (peer) => this.lower.approveConnection(peer) } : null
    this.#s.running = true
    this.#s.refreshTimer = this.#s.clock.setTimeout(this.#s.refreshTick, this.#s.refreshInterval)
    join(this.#s, 0)
  }

  override async stop(): Promise<void> {
    if (!this.#s.running) return
    this.#s.running = false
    const clock = this.#s.clock
    clock.clearTimeout(this.#s.refreshTimer ?? undefined)
    clock.clearTimeout(this.#s.joinTimer ?? undefined)
    clock.clearTimeout(this.#s.settleTimer ?? undefined)
    clock.clearTimeout(this.#s.joinRefreshTimer ?? undefined)
    this.#s.refreshTimer = this.#s.joinTimer = this.#s.settleTimer = this.#s.joinRefreshTimer = null
    this.#s.joining = false
    for (const r of this.#s.pending.values()) clock.clearTimeout(r.timer)
    this.#s.pending.clear()
    for (const run of [...this.#s.runs]) abort(this.#s, run, closed())
    this.#s.joinWaiters.rejectAll(closed())
    this.#s.table = null
  }

  // ---- public API -------------------------------------------------------------------------

  /** Listen to peers entering (`connected`) or leaving (`disconnected`) the routing table. */
  on(event: KadEvent, fn: Listener): this {
    let set = this.#s.listeners.get(event)
    if (!set) this.#s.listeners.set(event, (set = new Set()))
    set.add(fn)
    return this
  }

  /** Stop listening (see {@link on}). */
  off(event: KadEvent, fn: Listener): this {
    this.#s.listeners.get(event)?.delete(fn)
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
      const id = toId(target)
      if (!this.#s.running) return reject(closed())
      const { signal, timeout = this.#s.findTimeout, stopAtTarget = false, onCandidate } = opts
      if (signal?.aborted) return reject(aborted(signal))
      const hex = id.toString('hex')
      const t0 = this.#s.clock.now()
      if (stopAtTarget) {
        const e = this.#s.byId.get(id)
        if (e?.inTable) {
          // Table entries answered us at their address (and were approved by the layer below).
          this.count('lookups_from_table')
          const p = e.peer.verified ? e.peer : new Peer(e.peer.address, e.peer.id, e.peer.publicIdentity, e.peer.external, true, e.peer.tcpPort)
          return resolve({ peer: p, closest: [p], hops: 0, queries: 0, failures: 0, timeouts: 0, elapsed: 0 })
        }
      }
      this.#log('lookup %s started', hex.slice(0, 8))
      let timer: TimerHandle | undefined
      let onAbort: (() => void) | undefined
      const cleanup = (): void => {
        this.#s.clock.clearTimeout(timer)
        if (onAbort) signal!.removeEventListener('abort', onAbort)
      }
      const run = startLookup(
        this.#s,
        id,
        stopAtTarget,
        [],
        (res) => {
          const r = res! // not a maintenance lookup: there is a result
          cleanup()
          this.#log('lookup %s %s: %d hops, %d queries (%d failed, %d timed out) in %d ms', hex.slice(0, 8), r.peer ? 'found' : stopAtTarget ? 'not found' : 'done', r.hops, r.queries, r.failures, r.timeouts, Math.round(r.elapsed))
          resolve(r)
        },
        (e) => {
          cleanup()
          this.#log('lookup %s failed after %d ms: %s', hex.slice(0, 8), Math.round(this.#s.clock.now() - t0), (e as Error).message)
          reject(e)
        },
        { onClaim: stopAtTarget ? onCandidate : undefined, closest },
      )
      if (run.done) return
      timer = this.#s.clock.setTimeout(() => {
        this.count('lookup_timeouts')
        abort(this.#s, run, new DeccomError(DiscoveryErrorCode.LOOKUP_TIMEOUT, `The lookup did not finish within ${timeout} ms`, { details: { timeout } }))
      }, timeout)
      if (signal) {
        onAbort = () => abort(this.#s, run, aborted(signal))
        signal.addEventListener('abort', onAbort, { once: true })
      }
      void t0
    })
  }

  /** The peer with this id if it is in the routing table. */
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
    const e = this.#s.byId.get(key)
    return e?.inTable ? e.peer : undefined
  }

  /** Every peer in the routing table. */
  peers(): Peer[] {
    if (!this.#s.table) return []
    return Array.from(this.#s.table.entries(), (h) => this.#s.entries[h]!.peer)
  }

  /** The up to `n` peers of the table closest to `id`, closest first. */
  closest(id: Buffer | string, n: number = this.#s.k): Peer[] {
    if (!this.#s.table) return []
    const target = toId(id)
    const ids = n <= this.#s.k ? this.#s.ids : Buffer.alloc(32 * n)
    const handles = n <= this.#s.k ? this.#s.handles : new Uint32Array(n)
    const got = this.#s.table.closest(target, n, ids, handles)
    const out: Peer[] = []
    for (let i = 0; i < got; i++) out.push(this.#s.entries[handles[i]]!.peer)
    return out
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
    if (s.joinFailed && s.joinTimer === null) {
      return Promise.reject(new DeccomError(ErrorCode.NOT_READY, 'Kademlia could not join: no bootstrap node answered', { details: { layer: 'kademlia' } }))
    }
    return s.joinWaiters.wait(opts.signal)
  }

  override stats(): Record<string, number> {
    const s = this.#s
    return {
      ...this.counters, table_size: this.size, pending_requests: s.pending.size, lookups_running: s.runs.size, query_srtt_ms: s.querySrtt, lookup_patience_ms: patience(s),
      known_ids: s.byId.size, told_by_size: s.table?.tellersSize ?? 0, ...addrSizes(s),
    } // prettier-ignore
  }

  // ---- datagrams --------------------------------------------------------------------------

  /** A datagram from the layer below: handles this layer's tag, passes the rest up. */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    // A secure layer below (Noise) reports the sender as a Peer; the address is what we match on.
    const from = source instanceof Peer ? source.address : source
    if (tag !== TAG_KAD) {
      alive(this.#s, from)
      return this.upper.onMessage(source, data, tag)
    }
    if (!this.#s.running) return this.count('dropped_not_running')
    this.count('received')
    const m = decodeKad(data)
    try {
      this.#handle(source, from, data, m)
    } finally {
      doneWith(m)
    }
  }

  /** A Kademlia message `m` (decoded from `data`) from `source` at `from`. */
  #handle(source: Address | Peer, from: Address, data: Buffer, m: KadMessage): void {
    // Through an authenticating layer (Noise) the session's handshake went to this address and
    // back: the address is validated, and the sender proved this id.
    const provenId = source instanceof Peer ? source.id : null
    switch (m.kind) {
      case PING: {
        // Answered always for a validated address, else within the reply rate.
        const r = answer(this.#s, from, data, provenId !== null)
        if (r === ANSWER_REPLY_RATE) return this.count('dropped_reply_rate')
        if (r < 0) return this.count('dropped_malformed')
        this.count('pings_answered')
        alive(this.#s, from)
        this.sendControl(from, copyOut(r >>> 1))
        return
      }
      case PONG: {
        const req = match(this.#s, m, from, PING)
        if (!req) return this.count('dropped_unsolicited')
        alive(this.#s, from)
        return req.cb(m)
      }
      case FIND_NODE:
        // The requester's record names the id its session proved: its address needs no verifying.
        return onFindNode(this.#s, from, data, m, provenId !== null && m.idIs(0, provenId))
      case NODES: {
        const req = match(this.#s, m, from, FIND_NODE)
        if (!req) return this.count('dropped_unsolicited')
        // Through an authenticating layer the sender's record must be the identity it proved.
        if (source instanceof Peer && source.id !== null && !m.idIs(0, source.id)) {
          this.count('dropped_identity_mismatch')
          return req.cb(null)
        }
        return req.cb(m)
      }
      default:
        this.count('dropped_malformed')
        if (m.error) this.count(`dropped_malformed_${m.error}`)
    }
  }

  // ---- requests ---------------------------------------------------------------------------


  // ---- the routing table ------------------------------------------------------------------

  // ---- lookups ----------------------------------------------------------------------------

  // ---- join and refresh -------------------------------------------------------------------

  // ---- helpers ----------------------------------------------------------------------------

  /** The external address our own record carries (what the layers below agreed on), or null. */
  ownExternalAddress(): Address | null {
    return this.#s.ownExternal
  }

}
