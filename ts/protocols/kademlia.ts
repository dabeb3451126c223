/**
 * Kademlia — peer discovery over the XOR metric (PROTOCOLS.md, Discovery).
 *
 * ```ts
 * const node = await Node.create({ stack: [new Kademlia({ bootstrap: ['10.0.0.1:4000'] })] })
 * const peer = await node.findPeer(idHex, { timeout: 5000, signal })
 * ```
 *
 * The routing table (256 k-buckets, least-recently-seen order, "ping the oldest before evicting",
 * replacement caches), the iterative lookup (α parallel queries, converging on the k closest) and
 * the wire codec are Rust (`deccom-core::kad`, driven through `KadTable`/`KadLookup`). This layer
 * owns the datagrams, the timers (always `ctx.clock`, so it runs in virtual time) and the API.
 *
 * ## Bindings
 * - bindTo `send`, `localAddress`, and optionally `externalAddress` (a HolePuncher below provides it):
 *   our own record, sent in every FIND_NODE and NODES, carries the external (NAT-mapped) address
 *   that layer learned (agreed by 2 observers), so that a node behind a NAT is advertised where
 *   others can reach or punch it. Records of other peers keep the external address they announced,
 *   and found peers carry it as `Peer.external`. Without such a layer, records carry none.
 * - bindFrom `onMessage`: datagrams with tag {@link TAG_KAD} are
 *   Kademlia's; every other datagram is passed up unchanged (emits `onMessage`) — and counts as a
 *   sign of life of the table entry at that address.
 * - provides `findPeer`, `getPeer`, `peers`, `closest`, `lookup`.
 * - emits `onConnected(peer)` when a peer enters the routing table and `onDisconnected(peer)` when
 *   it leaves it. The node's application layer does not take these slots, so by default they are
 *   no-ops counted as `dropped_no_consumer`; a layer above may bindFrom them. The same events are
 *   also available on the layer itself: `kad.on('connected' | 'disconnected', (peer) => ...)`.
 *
 * ## Connection approval
 * Before a new peer enters the table (or its replacement cache), the layer asks the nearest layer
 * *below* it that has a method `approveConnection(peer): boolean | Promise<boolean>` (e.g. Noise,
 * which authenticates the peer). Bindings are mandatory in the stack API, so this optional
 * dependency is resolved by walking `ctx.stack.layers` below this layer at start; without such a
 * layer every verified peer is approved. Rejections are counted (`rejected_by_approval`).
 *
 * ## Verification and amplification (wire format: docs/wire.md#kademlia-tag-3)
 * - Responses (PONG, NODES) are accepted only when they answer a request we sent: same 64-bit
 *   random request id, same type, from the address we sent to (`dropped_unsolicited` otherwise);
 *   a NODES from another node than the one queried is dropped (`dropped_wrong_sender`).
 * - A peer enters the table only with a verified address: it answered one of our requests. An
 *   unknown peer that queries us is answered, then pinged; it is considered when the PONG arrives.
 *   Peers named in NODES answers are only lookup candidates until they answer a query themselves.
 * - A response to an unverified address is never larger than its request: NODES is cut to the
 *   FIND_NODE's size (flag "truncated"), or not sent (`dropped_amplification`). On first contact
 *   with a peer (one whose requests we never answered) FIND_NODE is padded to `padTo` bytes (default
 *   1200) so that the answer can still carry about k records.
 *
 * ## Lifecycle
 * On start: self-lookup through the bootstrap peers (retried `bootstrapRetries` times with
 * exponential backoff while none answers), then a refresh of every bucket from the closest
 * non-empty one up that is not yet full. Every `refreshInterval` ms: a self-lookup (so that the
 * neighbourhood stays current as the network grows), then a lookup of a random id in the range of
 * every bucket without activity for that long. A table entry that fails `maxFailures` queries in a
 * row is removed (a replacement takes its place). All timers are cleared on stop and pending
 * `findPeer` calls reject with ERR_DECCOM_CLOSED.
 */
import { randomBytes } from 'node:crypto'
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import type { Identity } from '../identity'
import { native } from '../native'
import { Peer, encodePeerRecord } from '../peer'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'

/** Tag of Kademlia datagrams. */
export const TAG_KAD = 3

/** Error codes of discovery layers (not in ErrorCode yet). */
export const DiscoveryErrorCode = Object.freeze({
  /** The lookup ended without finding the peer. */
  PEER_NOT_FOUND: 'ERR_DECCOM_PEER_NOT_FOUND',
  /** findPeer's timeout passed. */
  LOOKUP_TIMEOUT: 'ERR_DECCOM_LOOKUP_TIMEOUT',
} as const)

const PING = 1
const PONG = 2
const FIND_NODE = 3
const NODES = 4
const QUERY = 0
const WAIT = 1
const MAX_PENDING = 8192
const MAX_VERIFYING = 256
const MAX_APPROVING = 1024
const MAX_ADDR_SET = 8192
/** Remembered "who told us about whom" entries (oldest dropped first). */
const MAX_TOLD_BY = 8192

export interface KademliaOptions {
  /** Addresses of nodes to join through (their ids need not be known). */
  bootstrap?: AddressLike[]
  /** Bucket size and lookup width (default 20). */
  k?: number
  /** Parallel queries per lookup (default 3). */
  alpha?: number
  /** Bucket refresh period in ms (default 300 000). */
  refreshInterval?: number
  /** Per-query timeout in ms (default 1000); an answer up to twice as late still counts. */
  queryTimeout?: number
  /** Bootstrap attempts after the first while no bootstrap node answers (default 5). */
  bootstrapRetries?: number
  /** Consecutive query failures after which a table entry is removed (default 2). */
  maxFailures?: number
  /** Size FIND_NODE is padded to on first contact (default 1200; 0 disables). */
  padTo?: number
  /** Replacement cache size per bucket (default 20). */
  maxReplacements?: number
  /** Default `findPeer` timeout in ms (default 30 000). */
  findTimeout?: number
  /** Seed of request ids and random lookup targets (default: from the OS). */
  seed?: number
}

export interface FindPeerOptions {
  /** ms before rejecting with ERR_DECCOM_LOOKUP_TIMEOUT (default: the layer's `findTimeout`). */
  timeout?: number
  signal?: AbortSignal
}

export interface LookupOptions extends FindPeerOptions {
  /** Stop as soon as a peer with the target id is learned (default false: run to convergence). */
  stopAtTarget?: boolean
}

/** The outcome of {@link Kademlia.lookup}. */
export interface LookupResult {
  /** The peer with the target id, if found. */
  peer: Peer | null
  /** The k closest peers that answered, closest first. */
  closest: Peer[]
  /** Hops: 0 if the target was in the table, else 1 + depth of the peer that named it (or rounds). */
  hops: number
  queries: number
  failures: number
  timeouts: number
  /** ms on the layer's clock. */
  elapsed: number
}

type Listener = (peer: Peer) => void
type KadEvent = 'connected' | 'disconnected'
type NativeMessage = ReturnType<typeof native.kadDecode>
type NativeTable = InstanceType<typeof native.KadTable>
type NativeLookup = InstanceType<typeof native.KadLookup>

interface Entry {
  handle: number
  hex: string
  peer: Peer
  failures: number
  inTable: boolean
}

interface Request {
  hi: number
  to: Address
  kind: number
  timer: TimerHandle
  cb: (m: NativeMessage | null) => void
}

interface Run {
  target: Buffer
  stopAt: string | null
  lk: NativeLookup
  cands: Map<string, Peer>
  done: boolean
  timer: TimerHandle | null
  timerAt: number
  found: Peer | null
  foundHops: number
  t0: number
  onDone: (r: LookupResult) => void
  onError: (e: Error) => void
}

interface Approver {
  approveConnection(peer: Peer): boolean | Promise<boolean>
}

export class Kademlia extends Protocol {
  static override bindTo = ['send', 'localAddress', 'externalAddress?']
  static override bindFrom = ['onMessage']
  static override provides = ['findPeer', 'getPeer', 'peers', 'closest', 'lookup']
  static override emits = ['onMessage', 'onConnected', 'onDisconnected']

  readonly name = 'kademlia'
  override readonly tag = TAG_KAD

  readonly #bootstrap: Address[]
  readonly #k: number
  readonly #alpha: number
  readonly #refreshInterval: number
  readonly #queryTimeout: number
  readonly #bootstrapRetries: number
  readonly #maxFailures: number
  readonly #padTo: number
  readonly #maxReplacements: number
  readonly #findTimeout: number
  #rng: number

  #running = false
  #clock!: Clock
  #log: (fmt: string, ...a: unknown[]) => void = () => {}
  #self!: Address
  #selfId!: Buffer
  #selfHex = ''
  /** The external address our own record carries, or null. */
  #ownExternal: Address | null = null
  #table: NativeTable | null = null
  #approver: Approver | null = null

  readonly #entries: (Entry | undefined)[] = []
  readonly #free: number[] = []
  readonly #byHex = new Map<string, Entry>()
  /** Address key of a peer → the address of the peer whose NODES answer named it last. */
  readonly #toldBy = new Map<string, Address>()
  readonly #byAddr = new Map<Address, Entry>()
  readonly #pending = new Map<number, Request>()
  #nextLo = 0
  /** Addresses that echoed one of our request ids (verified by us). */
  readonly #verified = new Set<string>()
  /** Addresses whose requests we answered (so they have verified us): no padding needed. */
  readonly #verifiedBy = new Set<string>()
  readonly #verifying = new Set<Address>()
  readonly #approving = new Set<string>()
  readonly #runs = new Set<Run>()
  readonly #listeners = new Map<KadEvent, Set<Listener>>()
  #refreshTimer: TimerHandle | null = null
  #joinTimer: TimerHandle | null = null
  #refreshing = false
  #joined = false
  readonly #ids: Buffer
  readonly #handles: Uint32Array
  readonly #qid = Buffer.alloc(32)

  constructor(opts: KademliaOptions = {}) {
    super()
    this.#bootstrap = (opts.bootstrap ?? []).map((a) => toAddress(a))
    this.#k = int(opts.k ?? 20, 1, 64, 'k')
    this.#alpha = int(opts.alpha ?? 3, 1, 64, 'alpha')
    this.#refreshInterval = positive(opts.refreshInterval ?? 300_000, 'refreshInterval')
    this.#queryTimeout = positive(opts.queryTimeout ?? 1000, 'queryTimeout')
    this.#bootstrapRetries = int(opts.bootstrapRetries ?? 5, 0, 1000, 'bootstrapRetries')
    this.#maxFailures = int(opts.maxFailures ?? 2, 1, 1000, 'maxFailures')
    this.#padTo = int(opts.padTo ?? 1200, 0, 65_000, 'padTo')
    this.#maxReplacements = int(opts.maxReplacements ?? 20, 0, 1000, 'maxReplacements')
    this.#findTimeout = positive(opts.findTimeout ?? 30_000, 'findTimeout')
    this.#rng = (opts.seed ?? randomBytes(4).readUInt32LE(0)) >>> 0 || 0x9e3779b9
    this.#ids = Buffer.alloc(32 * this.#k)
    this.#handles = new Uint32Array(this.#k)
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx.clock
    this.#log = ctx.log
    const identity = ctx.identity as Identity
    this.#self = this.lower.localAddress() as Address
    this.#selfId = identity.id
    this.#selfHex = identity.idHex
    this.#ownExternal = null
    const own = encodePeerRecord({ publicIdentity: identity.publicIdentity, address: this.#self })
    this.#table = new native.KadTable(own, this.#k, this.#maxReplacements, this.#clock.now())
    this.#approver = findApprover(this, ctx)
    this.#running = true
    this.#refreshTimer = this.#clock.setTimeout(this.#onRefreshTimer, this.#refreshInterval)
    this.#join(0)
  }

  override async stop(): Promise<void> {
    if (!this.#running) return
    this.#running = false
    const clock = this.#clock
    clock.clearTimeout(this.#refreshTimer ?? undefined)
    clock.clearTimeout(this.#joinTimer ?? undefined)
    this.#refreshTimer = this.#joinTimer = null
    for (const r of this.#pending.values()) clock.clearTimeout(r.timer)
    this.#pending.clear()
    for (const run of [...this.#runs]) this.#abort(run, closed())
    this.#table = null
  }

  // ---- public API -------------------------------------------------------------------------

  /** Listen to peers entering (`connected`) or leaving (`disconnected`) the routing table. */
  on(event: KadEvent, fn: Listener): this {
    let set = this.#listeners.get(event)
    if (!set) this.#listeners.set(event, (set = new Set()))
    set.add(fn)
    return this
  }

  off(event: KadEvent, fn: Listener): this {
    this.#listeners.get(event)?.delete(fn)
    return this
  }

  /**
   * The peer with node id `id` (32 bytes or 64 hex digits): from the table, else by an iterative
   * lookup that stops as soon as some node names it.
   * @throws ERR_DECCOM_PEER_NOT_FOUND, ERR_DECCOM_LOOKUP_TIMEOUT, ERR_DECCOM_ABORTED, ERR_DECCOM_CLOSED,
   *   ERR_DECCOM_INVALID_ARGUMENT
   */
  async findPeer(id: Buffer | string, opts: FindPeerOptions = {}): Promise<Peer> {
    const r = await this.lookup(id, { ...opts, stopAtTarget: true })
    if (r.peer) return r.peer
    throw new DeccomError(DiscoveryErrorCode.PEER_NOT_FOUND, `No node knows a peer with id ${toHex(id).slice(0, 16)}…`, {
      details: { queries: r.queries, hops: r.hops },
    })
  }

  /** An iterative lookup of `target` (see {@link LookupResult}); `stopAtTarget` for findPeer. */
  lookup(target: Buffer | string, opts: LookupOptions = {}): Promise<LookupResult> {
    return new Promise<LookupResult>((resolve, reject) => {
      const id = toId(target)
      if (!this.#running) return reject(closed())
      const { signal, timeout = this.#findTimeout, stopAtTarget = false } = opts
      if (signal?.aborted) return reject(aborted(signal))
      const hex = id.toString('hex')
      const t0 = this.#clock.now()
      if (stopAtTarget) {
        const e = this.#byHex.get(hex)
        if (e?.inTable) {
          this.count('lookups_from_table')
          return resolve({ peer: e.peer, closest: [e.peer], hops: 0, queries: 0, failures: 0, timeouts: 0, elapsed: 0 })
        }
      }
      let timer: TimerHandle | undefined
      let onAbort: (() => void) | undefined
      const cleanup = (): void => {
        this.#clock.clearTimeout(timer)
        if (onAbort) signal!.removeEventListener('abort', onAbort)
      }
      const run = this.#startLookup(
        id,
        stopAtTarget ? hex : null,
        [],
        (r) => {
          cleanup()
          resolve(r)
        },
        (e) => {
          cleanup()
          reject(e)
        },
      )
      if (run.done) return
      timer = this.#clock.setTimeout(() => {
        this.count('lookup_timeouts')
        this.#abort(run, new DeccomError(DiscoveryErrorCode.LOOKUP_TIMEOUT, `The lookup did not finish within ${timeout} ms`, { details: { timeout } }))
      }, timeout)
      if (signal) {
        onAbort = () => this.#abort(run, aborted(signal))
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
    return this.#toldBy.get(toAddress(addr).key) ?? null
  }

  getPeer(id: Buffer | string): Peer | undefined {
    const e = this.#byHex.get(toHex(id))
    return e?.inTable ? e.peer : undefined
  }

  /** Every peer in the routing table. */
  peers(): Peer[] {
    if (!this.#table) return []
    return Array.from(this.#table.entries(), (h) => this.#entries[h]!.peer)
  }

  /** The up to `n` peers of the table closest to `id`, closest first. */
  closest(id: Buffer | string, n: number = this.#k): Peer[] {
    if (!this.#table) return []
    const target = toId(id)
    const ids = n <= this.#k ? this.#ids : Buffer.alloc(32 * n)
    const handles = n <= this.#k ? this.#handles : new Uint32Array(n)
    const got = this.#table.closest(target, n, ids, handles)
    const out: Peer[] = []
    for (let i = 0; i < got; i++) out.push(this.#entries[handles[i]]!.peer)
    return out
  }

  /** Entries in the routing table. */
  get size(): number {
    return this.#table?.size ?? 0
  }

  /** True once a bootstrap node answered (or there was none to ask) and the self-lookup ended. */
  get joined(): boolean {
    return this.#joined
  }

  override stats(): Record<string, number> {
    return { ...this.counters, table_size: this.size, pending_requests: this.#pending.size, lookups_running: this.#runs.size }
  }

  // ---- datagrams --------------------------------------------------------------------------

  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    // A secure layer below (Noise) reports the sender as a Peer; the address is what we match on.
    const from = source instanceof Peer ? source.address : source
    if (tag !== TAG_KAD) {
      this.#alive(from)
      return this.upper.onMessage(source, data, tag)
    }
    if (!this.#running) return this.count('dropped_not_running')
    this.count('received')
    const m = native.kadDecode(data)
    switch (m.kind) {
      case PING:
        this.count('pings_answered')
        this.#remember(this.#verifiedBy, from.key)
        this.#alive(from)
        this.sendControl(from, native.kadEncodePing(true, m.requestHi, m.requestLo))
        return
      case PONG: {
        const req = this.#match(m, from, PING)
        if (!req) return this.count('dropped_unsolicited')
        this.#alive(from)
        return req.cb(m)
      }
      case FIND_NODE:
        return this.#onFindNode(from, data.length, m)
      case NODES: {
        const req = this.#match(m, from, FIND_NODE)
        if (!req) return this.count('dropped_unsolicited')
        return req.cb(m)
      }
      default:
        this.count('dropped_malformed')
        if (m.error) this.count(`dropped_malformed_${m.error}`)
    }
  }

  #onFindNode(from: Address, queryLen: number, m: NativeMessage): void {
    const hex = m.ids!.toString('hex', 0, 32)
    if (hex === this.#selfHex) return this.count('dropped_self')
    this.count('find_node_received')
    const verified = this.#isVerified(from)
    this.#refreshOwnRecord()
    const resp = this.#table!.encodeNodes(m.requestHi, m.requestLo, m.target!, verified ? Infinity : queryLen)
    if (resp === null) {
      this.count('dropped_amplification')
    } else {
      this.count('nodes_sent')
      if (!verified) this.count('nodes_sent_unverified')
      this.sendControl(from, resp)
    }
    this.#remember(this.#verifiedBy, from.key)
    const peer = new Peer(from, m.ids!.subarray(0, 32), identityAt(m, 0), externalAt(m, 0))
    if (this.#byHex.get(hex)?.inTable || verified) this.#consider(peer)
    else this.#verify(peer)
  }

  // ---- requests ---------------------------------------------------------------------------


  /** Sends a request; `cb` gets the matching response, or null after `timeout`. */
  #request(to: Address, kind: number, build: (hi: number, lo: number) => Buffer, cb: (m: NativeMessage | null) => void, timeout: number): void {
    const clock = this.#clock
    if (this.#pending.size >= MAX_PENDING) {
      this.count('dropped_too_many_requests')
      clock.setTimeout(() => cb(null), 0)
      return
    }
    let lo = (this.#nextLo + 1) >>> 0
    while (this.#pending.has(lo)) lo = (lo + 1) >>> 0
    this.#nextLo = lo
    const hi = this.#rand()
    const sent = this.sendControl(to, build(hi, lo))
    const timer = clock.setTimeout(
      () => {
        this.#pending.delete(lo)
        if (sent) this.count('request_timeouts')
        cb(null)
      },
      sent ? timeout : 0,
    )
    this.#pending.set(lo, { hi, to, kind, timer, cb })
  }

  #match(m: NativeMessage, from: Address, kind: number): Request | undefined {
    const req = this.#pending.get(m.requestLo)
    if (!req || req.hi !== m.requestHi || req.to !== from || req.kind !== kind) return undefined
    this.#pending.delete(m.requestLo)
    this.#clock.clearTimeout(req.timer)
    this.#remember(this.#verified, from.key)
    return req
  }

  /** FIND_NODE to `to`; `expect` is the id we believe lives there (null for bootstrap addresses). */
  #findNode(to: Address, target: Buffer, expect: string | null, cb: (m: NativeMessage | null) => void): void {
    const pad = this.#verifiedBy.has(to.key) ? 0 : this.#padTo
    this.count('queries_sent')
    this.#request(
      to,
      FIND_NODE,
      (hi, lo) => {
        this.#refreshOwnRecord()
        return this.#table!.encodeFindNode(hi, lo, target, pad)
      },
      (m) => {
        if (m && expect !== null && m.ids!.toString('hex', 0, 32) !== expect) {
          this.count('dropped_wrong_sender')
          return cb(null)
        }
        if (m?.truncated) {
          this.count('nodes_truncated')
          this.#verifiedBy.delete(to.key)
        }
        cb(m)
      },
      2 * this.#queryTimeout,
    )
  }

  #ping(to: Address, cb: (alive: boolean) => void): void {
    this.count('pings_sent')
    this.#request(to, PING, (hi, lo) => native.kadEncodePing(false, hi, lo), (m) => cb(m !== null), this.#queryTimeout)
  }

  // ---- the routing table ------------------------------------------------------------------

  #isVerified(addr: Address): boolean {
    return this.#byAddr.has(addr) || this.#verified.has(addr.key)
  }

  /** Any datagram from a table entry's address counts as a sign of life. */
  #alive(from: Address): void {
    const e = this.#byAddr.get(from)
    if (e && this.#table) {
      e.failures = 0
      this.#table.touch(e.peer.id!, this.#clock.now())
    }
  }

  /** Ping an unknown requester; consider it once it answers (its address is then verified). */
  #verify(peer: Peer): void {
    const addr = peer.address
    if (this.#verifying.has(addr)) return
    if (this.#verifying.size >= MAX_VERIFYING) return this.count('dropped_verify_busy')
    this.#verifying.add(addr)
    this.#ping(addr, (alive) => {
      this.#verifying.delete(addr)
      if (alive && this.#running) this.#consider(peer)
    })
  }

  /** A verified peer: touch it, or ask for approval and insert it. */
  #consider(peer: Peer): void {
    const hex = peer.id!.toString('hex')
    if (hex === this.#selfHex || !this.#table) return
    const known = this.#byHex.get(hex)
    if (known) {
      known.failures = 0
      if (peer.address.key === known.peer.address.key && peer.external?.key !== known.peer.external?.key) {
        // It announced another external address: serve the new one (insert replaces the record).
        known.peer = peer
        if (known.inTable) {
          this.#table.insert(known.handle, peer.publicIdentity!, peer.address.raw, this.#clock.now(), peer.external?.raw ?? null)
          return
        }
      }
      if (known.inTable) this.#table.touch(peer.id!, this.#clock.now())
      else this.#insert(known)
      return
    }
    const approver = this.#approver
    if (approver === null) return this.#admit(peer, hex)
    if (this.#approving.has(hex)) return
    let r: boolean | Promise<boolean>
    try {
      r = approver.approveConnection(peer)
    } catch {
      return this.count('approval_errors')
    }
    if (typeof r === 'boolean') {
      if (r) this.#admit(peer, hex)
      else this.count('rejected_by_approval')
      return
    }
    if (this.#approving.size >= MAX_APPROVING) return this.count('dropped_approval_busy')
    this.#approving.add(hex)
    Promise.resolve(r).then(
      (ok) => {
        this.#approving.delete(hex)
        if (!this.#running) return
        if (ok) this.#admit(peer, hex)
        else this.count('rejected_by_approval')
      },
      () => {
        this.#approving.delete(hex)
        this.count('approval_errors')
      },
    )
  }

  #admit(peer: Peer, hex: string): void {
    if (this.#byHex.has(hex)) return this.#consider(peer)
    const handle = this.#free.pop() ?? this.#entries.length
    const e: Entry = { handle, hex, peer, failures: 0, inTable: false }
    this.#entries[handle] = e
    this.#byHex.set(hex, e)
    this.#insert(e)
  }

  #insert(e: Entry): void {
    let r
    try {
      r = this.#table!.insert(e.handle, e.peer.publicIdentity!, e.peer.address.raw, this.#clock.now(), e.peer.external?.raw ?? null)
    } catch {
      this.count('dropped_bad_record')
      return this.#release(e)
    }
    switch (r.result) {
      case 0:
        this.#entered(e)
        break
      case 2: {
        this.count('bucket_full')
        const old = r.toPing == null ? undefined : this.#entries[r.toPing]
        if (old) {
          this.count('eviction_pings')
          this.#ping(old.peer.address, (alive) => {
            if (!this.#table || this.#entries[old.handle] !== old) return
            const ev = this.#table.onPingResult(old.peer.id!, alive, this.#clock.now())
            if (ev) this.#evicted(ev)
          })
        }
        break
      }
      case 3:
        this.count('bucket_full')
        break
      case 4:
        this.#release(e)
        break
    }
  }

  #entered(e: Entry): void {
    e.inTable = true
    e.failures = 0
    this.#byAddr.set(e.peer.address, e)
    this.count('peers_added')
    this.#emit('connected', e.peer)
  }

  #evicted(ev: { removed: number; promoted?: number | null }): void {
    const r = this.#entries[ev.removed]
    if (r) {
      if (this.#byAddr.get(r.peer.address) === r) this.#byAddr.delete(r.peer.address)
      r.inTable = false
      this.#release(r)
      this.count('peers_removed')
      this.#emit('disconnected', r.peer)
    }
    const p = ev.promoted == null ? undefined : this.#entries[ev.promoted]
    if (p) this.#entered(p)
  }

  #release(e: Entry): void {
    if (this.#entries[e.handle] !== e) return
    this.#entries[e.handle] = undefined
    this.#free.push(e.handle)
    if (this.#byHex.get(e.hex) === e) this.#byHex.delete(e.hex)
  }

  /** A table entry did not answer a query: remove it after `maxFailures` in a row. */
  #failed(hex: string): void {
    const e = this.#byHex.get(hex)
    if (!e?.inTable || !this.#table) return
    if (++e.failures < this.#maxFailures) return
    const ev = this.#table.remove(e.peer.id!)
    if (ev) this.#evicted(ev)
  }

  #emit(event: KadEvent, peer: Peer): void {
    if (event === 'connected') this.upper.onConnected(peer)
    else this.upper.onDisconnected(peer)
    const set = this.#listeners.get(event)
    if (set) {
      for (const fn of set) {
        try {
          fn(peer)
        } catch {
          this.count('listener_errors')
        }
      }
    }
  }

  /** Forget handles the table no longer holds (replacement-cache entries that fell out). */
  #sweep(): void {
    if (!this.#table || this.#byHex.size < 2 * this.#table.size + 1024) return
    const live = new Set(this.#table.handles())
    for (const e of [...this.#byHex.values()]) if (!live.has(e.handle) && !e.inTable) this.#release(e)
  }

  // ---- lookups ----------------------------------------------------------------------------

  #startLookup(target: Buffer, stopAt: string | null, extra: Peer[], onDone: (r: LookupResult) => void, onError: (e: Error) => void): Run {
    const table = this.#table!
    this.count('lookups')
    const cands = new Map<string, Peer>()
    const n = table.closest(target, this.#k, this.#ids, this.#handles)
    let seeds: Buffer = this.#ids.subarray(0, 32 * n)
    for (let i = 0; i < n; i++) {
      const e = this.#entries[this.#handles[i]]!
      cands.set(e.hex, e.peer)
    }
    if (extra.length > 0) {
      const parts: Buffer[] = [Buffer.from(seeds)]
      for (const p of extra) {
        const h = p.id!.toString('hex')
        if (h === this.#selfHex || cands.has(h)) continue
        cands.set(h, p)
        parts.push(p.id!)
      }
      seeds = Buffer.concat(parts)
    }
    const run: Run = {
      target,
      stopAt,
      lk: new native.KadLookup(target, seeds, this.#alpha, this.#k, this.#queryTimeout, this.#clock.now()),
      cands,
      done: false,
      timer: null,
      timerAt: Infinity,
      found: stopAt !== null ? cands.get(stopAt) ?? null : null,
      foundHops: 0,
      t0: this.#clock.now(),
      onDone,
      onError,
    }
    this.#runs.add(run)
    if (run.found) this.#finish(run)
    else this.#drive(run)
    return run
  }

  #drive(run: Run): void {
    const clock = this.#clock
    while (!run.done) {
      const action = run.lk.next(clock.now(), this.#qid)
      if (action === QUERY) {
        const hex = this.#qid.toString('hex')
        const peer = run.cands.get(hex)
        const id = Buffer.from(this.#qid)
        if (!peer) {
          run.lk.onFailure(id)
          continue
        }
        this.#findNode(peer.address, run.target, hex, (m) => this.#onReply(run, id, hex, peer, m))
        continue
      }
      if (action === WAIT) {
        const at = run.lk.pollTimeout()
        if (at !== null && at < run.timerAt) {
          clock.clearTimeout(run.timer ?? undefined)
          run.timerAt = at
          run.timer = clock.setTimeout(() => {
            run.timer = null
            run.timerAt = Infinity
            this.#drive(run)
          }, at - clock.now())
        }
        return
      }
      return this.#finish(run)
    }
  }

  #onReply(run: Run, id: Buffer, hex: string, peer: Peer, m: NativeMessage | null): void {
    if (m === null) {
      this.#failed(hex)
      if (run.done) return
      run.lk.onFailure(id)
      return this.#drive(run)
    }
    const ext = externalAt(m, 0)
    this.#consider(ext?.key === peer.external?.key ? peer : new Peer(peer.address, peer.id, peer.publicIdentity, ext))
    if (run.done) return
    const ids = m.ids!
    let words: string[] | null = null
    let closer = ids.subarray(32, 32 * (m.count + 1))
    for (let i = 1; i <= m.count; i++) {
      const h = ids.toString('hex', 32 * i, 32 * i + 32)
      if (h === this.#selfHex) {
        closer = withoutRecord(closer, i - 1)
        continue
      }
      let p = run.cands.get(h)
      if (!p) {
        words ??= m.hosts!.split(' ')
        let addr: Address
        try {
          addr = toAddress(words[2 * i], Number(words[2 * i + 1]))
        } catch {
          continue
        }
        p = new Peer(addr, ids.subarray(32 * i, 32 * i + 32), identityAt(m, i), externalAt(m, i))
        run.cands.set(h, p)
        // Who told us about whom: a peer behind a NAT is reached through the one that named it,
        // at the address that node saw it at or at the external address it announced.
        this.#told(addr, peer.address)
        if (p.external && p.external !== addr) this.#told(p.external, peer.address)
      }
      if (h === run.stopAt && run.found === null) {
        run.found = p
        run.foundHops = run.lk.depth(id) + 1
      }
    }
    run.lk.onSuccess(id, closer)
    if (run.found) return this.#finish(run)
    this.#drive(run)
  }

  #finish(run: Run): void {
    if (run.done) return
    run.done = true
    this.#clock.clearTimeout(run.timer ?? undefined)
    this.#runs.delete(run)
    const s = run.lk.stats()
    const ids = run.lk.closest()
    const closest: Peer[] = []
    for (let i = 0; i + 32 <= ids.length; i += 32) {
      const p = run.cands.get(ids.subarray(i, i + 32).toString('hex'))
      if (p) closest.push(p)
    }
    if (run.stopAt !== null) this.count(run.found ? 'lookups_found' : 'lookups_not_found')
    run.onDone({
      peer: run.found,
      closest,
      hops: run.found ? run.foundHops : s.rounds,
      queries: s.queries,
      failures: s.failures,
      timeouts: s.timeouts,
      elapsed: this.#clock.now() - run.t0,
    })
  }

  #abort(run: Run, err: Error): void {
    if (run.done) return
    run.done = true
    this.#clock.clearTimeout(run.timer ?? undefined)
    this.#runs.delete(run)
    run.onError(err)
  }

  /** A lookup run to convergence, as a promise that never rejects (internal maintenance). */
  #maintenanceLookup(target: Buffer, extra: Peer[] = []): Promise<LookupResult | null> {
    return new Promise((resolve) => {
      if (!this.#running) return resolve(null)
      this.#startLookup(target, null, extra, resolve, () => resolve(null))
    })
  }

  // ---- join and refresh -------------------------------------------------------------------

  #join(attempt: number): void {
    this.#joinTimer = null
    const addrs = this.#bootstrap.filter((a) => a !== this.#self)
    if (addrs.length === 0) {
      this.#joined = true
      return
    }
    this.count('bootstrap_attempts')
    let left = addrs.length
    const seeds: Peer[] = []
    const seen = new Set<string>()
    for (const a of addrs) {
      this.#findNode(a, this.#selfId, null, (m) => {
        if (m && this.#running) {
          const peer = new Peer(a, m.ids!.subarray(0, 32), identityAt(m, 0), externalAt(m, 0))
          this.#consider(peer)
          seeds.push(peer)
          const words = m.hosts!.split(' ')
          for (let i = 1; i <= m.count; i++) {
            const h = m.ids!.toString('hex', 32 * i, 32 * i + 32)
            if (seen.has(h) || h === this.#selfHex) continue
            seen.add(h)
            try {
              seeds.push(new Peer(toAddress(words[2 * i], Number(words[2 * i + 1])), m.ids!.subarray(32 * i, 32 * i + 32), identityAt(m, i), externalAt(m, i)))
            } catch {
              // not an address we can use
            }
          }
        }
        if (--left === 0 && this.#running) this.#afterBootstrap(attempt, seeds)
      })
    }
  }

  #afterBootstrap(attempt: number, seeds: Peer[]): void {
    if (seeds.length === 0) {
      if (attempt < this.#bootstrapRetries) {
        this.count('bootstrap_retries')
        this.#joinTimer = this.#clock.setTimeout(() => this.#join(attempt + 1), this.#queryTimeout * 2 ** attempt)
      } else {
        this.count('bootstrap_failed')
      }
      return
    }
    void this.#maintenanceLookup(this.#selfId, seeds).then(async () => {
      this.#joined = true
      this.count('joined')
      await this.#refresh(true)
    })
  }

  readonly #onRefreshTimer = (): void => {
    this.#refreshTimer = null
    if (!this.#running) return
    this.#sweep()
    if (this.#table!.size === 0 && this.#bootstrap.length > 0) this.#join(0)
    void this.#refresh(false).finally(() => {
      if (this.#running && this.#refreshTimer === null) this.#refreshTimer = this.#clock.setTimeout(this.#onRefreshTimer, this.#refreshInterval)
    })
  }

  /** One lookup per stale bucket, one after the other. */
  async #refresh(all: boolean): Promise<void> {
    if (this.#refreshing || !this.#table) return
    this.#refreshing = true
    try {
      if (!all) {
        // A periodic self-lookup keeps the closest neighbourhood current as the network grows.
        this.count('self_lookups')
        await this.#maintenanceLookup(this.#selfId)
        if (!this.#table) return
      }
      const stale = this.#table.staleBuckets(this.#clock.now(), all ? 0 : this.#refreshInterval)
      for (const b of stale) {
        if (!this.#running || !this.#table) return
        // On join, a bucket that is already full needs no lookup to fill it.
        if (all && this.#table.bucketLen(b) >= this.#k) {
          this.#table.markRefreshed(b, this.#clock.now())
          continue
        }
        const random = Buffer.allocUnsafe(32)
        for (let i = 0; i < 32; i += 4) random.writeUInt32LE(this.#rand(), i)
        const target = this.#table.randomIdInBucket(b, random)
        this.count('refresh_lookups')
        await this.#maintenanceLookup(target)
        if (!this.#table) return
        this.#table.markRefreshed(b, this.#clock.now())
      }
    } finally {
      this.#refreshing = false
    }
  }

  // ---- helpers ----------------------------------------------------------------------------

  /** Puts the external address the layers below agree on (if any, and not our own) into our record. */
  #refreshOwnRecord(): void {
    const found = this.lower.externalAddress() as Address | null | undefined
    const ext = found && found.key !== this.#self.key ? found : null
    if (ext?.key === this.#ownExternal?.key || !this.#table) return
    this.#ownExternal = ext
    this.#table.setOwnExternal(ext ? ext.raw : null)
    this.count('own_external_updates')
  }

  /** The external address our own record carries (what the layers below agreed on), or null. */
  ownExternalAddress(): Address | null {
    return this.#ownExternal
  }

  /** Remembers that the node at `teller` named a peer at `addr` (bounded; oldest forgotten). */
  #told(addr: Address, teller: Address): void {
    this.#toldBy.delete(addr.key)
    if (this.#toldBy.size >= MAX_TOLD_BY) this.#toldBy.delete(this.#toldBy.keys().next().value as string)
    this.#toldBy.set(addr.key, teller)
  }

  #remember(set: Set<string>, key: string): void {
    if (set.has(key)) return
    if (set.size >= MAX_ADDR_SET) set.delete(set.values().next().value as string)
    set.add(key)
  }

  /** xorshift32: request ids and random targets (unpredictable unless `seed` is given). */
  #rand(): number {
    let x = this.#rng
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    this.#rng = x >>> 0
    return this.#rng
  }
}

/** The encoded identity of record `i` of a decoded message (0 = the sender). */
function identityAt(m: NativeMessage, i: number): Buffer {
  const ends = m.identityEnds!
  return m.identities!.subarray(i === 0 ? 0 : ends[i - 1], ends[i])
}

/** The external address record `i` of a decoded message announced (0 = the sender), or null. */
function externalAt(m: NativeMessage, i: number): Address | null {
  // One split per message (records are read in order), not one per record.
  let words = splitCache.get(m)
  if (!words) splitCache.set(m, (words = m.externals?.split(' ') ?? []))
  const host = words[2 * i]
  if (!host || host === '-') return null
  try {
    return toAddress(host, Number(words[2 * i + 1]))
  } catch {
    return null
  }
}

const splitCache = new WeakMap<NativeMessage, string[]>()

/** `ids` (32 bytes each) without entry `i`. */
function withoutRecord(ids: Buffer, i: number): Buffer {
  return Buffer.concat([ids.subarray(0, 32 * i), ids.subarray(32 * i + 32)])
}

/** The nearest layer below `layer` with an `approveConnection` method, or null. */
function findApprover(layer: Protocol, ctx: LayerContext): Approver | null {
  const layers = ctx.stack?.layers ?? []
  const i = layers.indexOf(layer)
  if (i < 0) return null
  for (let j = i + 1; j < layers.length; j++) {
    const l = layers[j] as unknown as Partial<Approver>
    if (typeof l.approveConnection === 'function') return l as Approver
  }
  return null
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

function toHex(id: Buffer | string): string {
  return typeof id === 'string' ? id.toLowerCase() : Buffer.from(id).toString('hex')
}

function int(v: number, min: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} must be an integer ${min}..${max}, got ${v}`)
  }
  return v
}

function positive(v: number, what: string): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} must be a finite number > 0, got ${v}`)
  return v
}

function closed(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The Kademlia layer is not running (not started, or stopped)')
}

function aborted(signal: AbortSignal): DeccomError {
  return new DeccomError(ErrorCode.ABORTED, 'The operation was aborted', { cause: signal.reason })
}
