/**
 * Node — a stack of layers with an application on top and (by default) a UdpTransport at the bottom.
 *
 * ```ts
 * const node = await Node.create({ identity: Identity.generate(), host: '127.0.0.1', port: 0 })
 * node.on('message', (from, data) => console.log(from.address.key, data))
 * await node.send('127.0.0.1:4000', Buffer.from('hi'))
 * await node.close()
 * ```
 *
 * Events (see {@link NodeEvents}): `'message' (from: Peer, data: Buffer)`, `'connection' (conn)`,
 * `'ready'`, `'peer:discovered' (peer)`, `'peer:lost' (peer)`, `'error' (err)`. A `'message'`'s
 * `data` Buffer is a view into a batch buffer shared with the other datagrams of its batch: copy
 * it if you keep it beyond the callback and care about memory (it stays valid; it only keeps the
 * batch alive).
 */
import { EventEmitter } from 'node:events'
import type { Address, AddressLike } from './address'
import { toAddress } from './address'
import type { Clock } from './clock'
import { realClock } from './clock'
import type { LayerRandom } from './layer-random'
import { abortError, DeccomError, ErrorCode } from './errors'
import { Identity } from './identity'
import { Peer } from './peer'
import { LogGroup } from './log'
import { Protocol } from './protocol'
import type { PingOptions, UdpOptions } from './protocols/udp'
import { TAG_APP, UdpTransport } from './protocols/udp'
import { Stack } from './stack'
import type { StackContext } from './stack'
import { raceSignal } from './abort'
import { renderMetrics } from './metrics'
import type { Connection } from './connection/connection'
import { type ConnectOptions, type ConnectTarget, type ConnectionOptions, Connections, type TcpLike, type TcpPeerLike } from './connection/manager'
import { ReliableUdp, type ReliableSendOptions } from './protocols/reliable'
import { TAG_CONN } from './wire/mux'
import { PortMapper, type PortMapperOptions } from './portmap/layer'
import { type NatReport, natReport } from './nat-report'
import { Dht } from './protocols/dht/layer'
import type { FindPeerOptions } from './protocols/kademlia/state'
import type { JoinOptions, Topic } from './protocols/dht/topic'

/** Options of {@link Node.create}: the stack, the identity, and the UDP socket's options. */
export interface NodeOptions extends UdpOptions {
  /** The node's identity (default: a fresh Ed25519 key pair). */
  identity?: Identity
  /**
   * Layers between the application and the transport, TOP first (as you read a protocol diagram):
   * `[new KeepAlive(), new Kademlia(...), new Noise(...), new ReliableUdp()]`. When the last layer
   * is not a transport, a UdpTransport built from `host`/`port`/... is added below it.
   */
  stack?: Protocol[]
  /**
   * The clock every layer gets as `ctx.clock` (default {@link realClock}). A SimulatedNetwork
   * passes its virtual clock here.
   */
  clock?: Clock
  /**
   * The random stream the layers' `ctx.random` streams are forked from (default: the OS
   * generator). A SimulatedNetwork passes a stream derived from its seed.
   */
  random?: LayerRandom
  /** Limits and windows of connections and streams (see docs/connections.md). */
  connections?: ConnectionOptions
  /** Aborts the creation: the stack is stopped again and `create` rejects with ERR_DECCOM_ABORTED. */
  signal?: AbortSignal
  /**
   * Router port mapping (PCP, NAT-PMP, UPnP-IGD; docs/nat.md): `false` never, `true` or options
   * (e.g. `{ protocols: ['upnp'] }`) always add a {@link PortMapper}. By default one is added when
   * the stack does NAT traversal (a layer provides `externalAddress`, e.g. HolePuncher) over a
   * UdpTransport. It is placed just above that layer (so Kademlia advertises the mapped address),
   * else at the top, and maps only when the node's address is private (unless `always`). Ignored
   * when the stack already has a PortMapper.
   */
  portMapping?: boolean | PortMapperOptions
}

/** The events of a {@link Node}, with their arguments. */
export interface NodeEvents {
  /** An application message (`node.send`) arrived. */
  message: [from: Peer, data: Buffer]
  /** A peer opened a connection to this node (`node.connect` on its side). */
  connection: [conn: Connection]
  /** Every layer with a joining phase joined (see {@link Node.ready}). */
  ready: []
  /** A discovery layer (Kademlia, Gossip, BigGossip, FixedPeers) learned a peer. */
  'peer:discovered': [peer: Peer]
  /** A discovery layer forgot a peer (it stopped answering, or left). */
  'peer:lost': [peer: Peer]
  /** An error that belongs to no call in progress (only emitted when someone listens). */
  error: [err: Error]
}

/** Options of {@link Node.send}. */
export type SendOptions = ReliableSendOptions

/** What Node needs from the bottom layer (UdpTransport, SimTransport, ...) for `address`/`ping`. */
interface TransportLike {
  localAddress?(): Address
  ping?(to: AddressLike, opts?: PingOptions): Promise<number>
}

/** A layer that binds dials to identities (Noise): see `Noise.authenticate`. */
interface Authenticator {
  readonly authenticates: boolean
  authenticate(peer: Peer, opts?: { signal?: AbortSignal }): Promise<Peer>
  remotePeer(addr: AddressLike): Peer | null
}

/** Everything `node.stats()` returns: counters per layer, by layer name. */
export type NodeStats = Record<string, Record<string, number>>

const RESOLVED = Promise.resolve()
const MAX_PEERS_CACHED = 65_536

/** The application layer a Node puts on top of its stack: binds `send` and takes `onMessage` (application data, and connection frames of tag 12). */
class Application extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  readonly name = 'app'
  readonly #peers = new Map<Address, Peer>()

  constructor(private readonly node: Node) {
    super()
  }

  send(to: Address, data: Uint8Array, tag = TAG_APP, opts?: SendOptions): unknown {
    return opts === undefined ? this.lower.send(to, data, tag) : this.lower.send(to, data, tag, opts)
  }

  onMessage(from: Address | Peer, data: Buffer, tag: number): void {
    // Connection frames travel in reliable messages only: without a reliable layer, tag 12 is unknown.
    if (tag === TAG_CONN && this.node.connectionFrame(from, data)) return
    if (tag !== TAG_APP) return this.count('dropped_unknown_tag')
    this.count('received')
    this.node.emitFromNetwork('message', from instanceof Peer ? from : this.#peer(from), data)
  }

  #peer(addr: Address): Peer {
    let p = this.#peers.get(addr)
    if (p === undefined) {
      if (this.#peers.size >= MAX_PEERS_CACHED) this.#peers.clear()
      p = new Peer(addr)
      this.#peers.set(addr, p)
    }
    return p
  }
}

/**
 * A peer-to-peer node: a stack of layers (`opts.stack`, top first) over a transport (a UdpTransport
 * unless the stack ends in one), with the application on top. Made by {@link Node.create}; emits
 * the {@link NodeEvents}.
 */
export class Node extends EventEmitter<NodeEvents> {
  /** The node's identity; its `id` is the node id. */
  readonly identity: Identity
  /** The node's layers, built and started. */
  readonly stack: Stack
  readonly #app: Application
  /** The bottom layer of the stack: the transport. */
  readonly #transport: Protocol & TransportLike
  readonly #clock: Clock
  #state: 'new' | 'running' | 'closing' | 'closed' = 'new'
  #closing: Promise<void> | null = null
  readonly #connections: Connections
  /** The stack has a ReliableUdp layer (connection frames arrive as reliable messages). */
  readonly #reliable: boolean
  #ready: Promise<void> | null = null
  readonly #unsubscribe: (() => void)[] = []

  private constructor(opts: NodeOptions) {
    super()
    this.identity = opts.identity ?? Identity.generate()
    const layers = [...(opts.stack ?? [])]
    const bottom = layers[layers.length - 1]
    if (!bottom || !isTransport(bottom)) {
      layers.push(
        new UdpTransport({
          host: opts.host,
          port: opts.port,
          recvBufferSize: opts.recvBufferSize,
          sendBufferSize: opts.sendBufferSize,
          ipv6Only: opts.ipv6Only,
          maxBatch: opts.maxBatch,
          maxQueuedBytes: opts.maxQueuedBytes,
        }),
      )
    }
    addPortMapper(layers, opts.portMapping)
    this.#app = new Application(this)
    this.stack = new Stack([this.#app, ...layers])
    this.stack.build()
    this.#transport = layers[layers.length - 1] as Protocol & TransportLike
    this.#clock = opts.clock ?? realClock
    this.#reliable = this.stack.find(ReliableUdp) !== undefined
    this.#connections = this.#makeConnections(opts.connections)
  }

  /**
   * Builds the stack (validating every binding), then starts it bottom-up. Resolves when every
   * layer started (sockets bound); joining a network takes longer: see {@link ready}.
   * @throws (rejects) ERR_DECCOM_ABORTED (`opts.signal`; the stack is stopped again), the layers' start errors
   */
  static async create(opts: NodeOptions = {}): Promise<Node> {
    if (opts.signal?.aborted) throw abortError(opts.signal)
    const node = new Node(opts)
    const ctx: StackContext = {
      identity: node.identity,
      // The Stack gives each layer its own logger (`deccom:<layer>`, see log.ts); this one is the node's.
      log: new LogGroup(node.identity.idHex.slice(0, 8), node.#clock).layer('node'),
      clock: node.#clock,
      random: opts.random,
    }
    await node.stack.start(ctx)
    node.#state = 'running'
    if (opts.signal?.aborted) {
      await node.close()
      throw abortError(opts.signal)
    }
    node.#subscribe()
    return node
  }

  #makeConnections(opts: ConnectionOptions | undefined): Connections {
    const reliable = this.stack.find(ReliableUdp) !== undefined
    const tcp = this.stack.provider('openConnection') as (Protocol & TcpLike) | undefined
    const punch = this.stack.provider('connect') as (Protocol & { connect(t: Address, via?: AddressLike | { signal?: AbortSignal }, o?: { signal?: AbortSignal }): Promise<{ path: string; address: Address; punch?: 'simultaneous' | 'birthday' }> }) | undefined
    return new Connections(
      {
        clock: this.#clock,
        sendMessage: reliable ? (to, frame) => this.#app.send(to, frame, TAG_CONN) as Promise<void> : undefined,
        findPeer: (id, signal, onCandidate) => this.findPeer(id, { signal, onCandidate }),
        authenticate: this.#authenticator() ? (peer, signal) => this.#authenticator()!.authenticate(peer, { signal }) : undefined,
        tcp,
        punch: punch ? (target, via, signal) => (via === undefined ? punch.connect(target, { signal }) : punch.connect(target, via, { signal })) : undefined,
        accept: (conn) => this.emitFromNetwork('connection', conn),
        count: (name, n = 1) => (this.#app.counters[`connections_${name}`] = (this.#app.counters[`connections_${name}`] ?? 0) + n),
      },
      opts,
    )
  }

  /**
   * Emits an event whose cause is network input: an exception from a listener must not unwind
   * into the layer that delivered the datagram. It goes to `'error'` listeners, or, without any,
   * is thrown on its own (an uncaught exception, as from any event listener).
   */
  /** @internal */
  emitFromNetwork<K extends 'message' | 'connection' | 'peer:discovered' | 'peer:lost'>(event: K, ...args: NodeEvents[K]): void {
    try {
      ;(this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args)
    } catch (e) {
      this.#app.counters.handler_errors = (this.#app.counters.handler_errors ?? 0) + 1
      if (this.listenerCount('error') > 0) this.emit('error', e as Error)
      else
        queueMicrotask(() => {
          throw e
        })
    }
  }

  /**
   * Listens to the TcpTransport (connection frames) and, once anyone listens to peer:discovered or
   * peer:lost, to the discovery layers (a layer that nobody listens to reports no peers: in a large
   * simulation that is a Peer object less per table change).
   */
  #subscribe(): void {
    const events = this as unknown as EventEmitter
    const discovery = (event: string | symbol): void => {
      if (event !== 'peer:discovered' && event !== 'peer:lost') return
      events.off('newListener', discovery)
      if (this.#state === 'running') this.#subscribeDiscovery()
    }
    if (events.listenerCount('peer:discovered') + events.listenerCount('peer:lost') > 0) this.#subscribeDiscovery()
    else {
      events.on('newListener', discovery)
      this.#unsubscribe.push(() => events.off('newListener', discovery))
    }
    this.#subscribeTcp()
  }

  /** Listens to the discovery layers (peer:discovered / peer:lost). */
  #subscribeDiscovery(): void {
    for (const layer of this.stack.layers) {
      const l = layer as Protocol & Partial<EventSource>
      if (typeof l.on !== 'function' || typeof l.off !== 'function') continue
      if (this.stack.provider('findPeer') === layer || (layer.constructor as typeof Protocol).provides.includes('findPeer')) {
        const found = (p: Peer): void => this.emitFromNetwork('peer:discovered', p)
        const lost = (p: Peer): void => this.emitFromNetwork('peer:lost', p)
        l.on('connected', found)
        l.on('disconnected', lost)
        this.#unsubscribe.push(() => {
          l.off!('connected', found)
          l.off!('disconnected', lost)
        })
      }
    }
  }

  /** Listens to the TcpTransport (connection frames). */
  #subscribeTcp(): void {
    const tcp = this.stack.provider('openConnection') as (Protocol & TcpLike & EventSource) | undefined
    if (tcp && typeof tcp.on === 'function') {
      const frame = (p: TcpPeerLike, data: Buffer, tag: number): void => {
        if (tag === TAG_CONN) this.#connections.onTcpFrame(p, data)
      }
      const closed = (p: TcpPeerLike): void => this.#connections.onTcpClosed(p)
      tcp.on('frame', frame)
      tcp.on('close', closed)
      this.#unsubscribe.push(() => {
        tcp.off('frame', frame)
        tcp.off('close', closed)
      })
    }
  }

  /**
   * Resolves once every layer with a joining phase has joined: Kademlia bootstrapped (its
   * self-lookup done), Gossip / BigGossip / FixedPeers holding a peer, ... — every layer with a
   * `ready({ signal })` method. Emits `'ready'` once. A stack without such layers is ready at once.
   * @throws (rejects) ERR_DECCOM_NOT_READY (a layer gave up joining, or `timeout` ms passed),
   *   ERR_DECCOM_ABORTED, ERR_DECCOM_CLOSED
   */
  ready(opts: { signal?: AbortSignal; timeout?: number } = {}): Promise<void> {
    if (this.#state !== 'running') return Promise.reject(notRunning())
    if (opts.signal?.aborted) return Promise.reject(abortError(opts.signal))
    if (!this.#ready) {
      const joining = this.stack.layers.filter((l): l is Protocol & Joining => typeof (l as Partial<Joining>).ready === 'function')
      this.#ready = Promise.all(joining.map((l) => l.ready())).then(() => {
        this.emit('ready')
      })
      this.#ready.catch(() => {
        this.#ready = null
      })
    }
    let p = raceSignal(this.#ready, opts.signal, () => {})
    if (opts.timeout !== undefined) {
      const ms = opts.timeout
      p = raceTimeout(p, this.#clock, ms, () => new DeccomError(ErrorCode.NOT_READY, `The node did not join within ${ms} ms`, { details: { timeout: ms } }))
    }
    return p
  }

  /**
   * A connection to `target`: a node id (32 bytes or 64 hex digits; found through the stack's
   * discovery layer), a `Peer`, or an address. Reuses an open connection to the same peer.
   * Chooses the path: reliable messages through the stack (over Noise when it is there, so the
   * peer's id is authenticated), a hole punch or relay through the stack's HolePuncher when the
   * direct path does not answer, or the TcpTransport (`transport: 'tcp'`, or when the stack has no
   * ReliableUdp). `conn.path` tells which.
   * @throws (rejects) ERR_DECCOM_CONNECT_FAILED, ERR_DECCOM_CONNECTION_REFUSED,
   *   ERR_DECCOM_PEER_IDENTITY_MISMATCH, ERR_DECCOM_ABORTED, ERR_DECCOM_STACK_INVALID, ERR_DECCOM_CLOSED,
   *   the discovery, handshake, punching and TCP errors of the layers
   */
  connect(target: ConnectTarget, opts: ConnectOptions = {}): Promise<Connection> {
    if (this.#state !== 'running') return Promise.reject(notRunning())
    return this.#connections.connect(target, opts)
  }

  /** The open connections. */
  connections(): Connection[] {
    return this.#connections.list()
  }

  /**
   * @internal A connection frame (reliable message of tag 12) from the application layer; false
   * when the stack has no reliable layer (then no frame of tag 12 is one).
   */
  connectionFrame(from: Address | Peer, data: Buffer): boolean {
    if (!this.#reliable) return false
    if (this.#state === 'running') this.#connections.onMessage(from, data)
    return true
  }

  /** The node id (SHA-256 of the public identity). */
  get id(): Buffer {
    return this.identity.id
  }

  /** The transport's bound address (the bottom layer's `localAddress()`). */
  get address(): Address {
    const t = this.#transport
    if (typeof t.localAddress !== 'function') {
      throw new DeccomError(ErrorCode.STACK_INVALID, `The bottom layer "${t.name}" has no localAddress()`)
    }
    return t.localAddress()
  }

  /**
   * Sends `data` to a peer, a node id or an address through the top of the stack. Resolves when the
   * stack has taken it: for plain UDP when the datagram is handed to the socket, for a reliable
   * layer when it is acknowledged.
   *
   * A dial to an identity is bound to it: when `to` is a `Peer` with an id (or a 32-byte node id,
   * found first through the stack's discovery layer) and the stack has an authenticating layer
   * (Noise in encrypt or sign mode), the data goes out only over a session that authenticated
   * exactly that id; if someone else answers at the peer's address the send rejects with
   * ERR_DECCOM_PEER_IDENTITY_MISMATCH and nothing reaches that node. Without an authenticating
   * layer an id is a claim nobody checks: the data goes to the peer's address (docs/security.md).
   *
   * `opts.onProgress(acked, total)` reports the acknowledged bytes of this message and
   * `opts.signal` cancels it, when the layer below is ReliableUdp (see its `send`).
   * @throws (rejects) ERR_DECCOM_PEER_IDENTITY_MISMATCH, ERR_DECCOM_DATAGRAM_TOO_LARGE,
   *   ERR_DECCOM_INVALID_ADDRESS, ERR_DECCOM_ABORTED, ERR_DECCOM_CLOSED, the discovery and
   *   handshake errors of the layers
   */
  send(to: Peer | Buffer | AddressLike, data: Uint8Array, opts: SendOptions = {}): Promise<void> {
    try {
      if (this.#state !== 'running') throw notRunning()
      if (opts.signal?.aborted) throw abortError(opts.signal)
      if (Buffer.isBuffer(to) && to.length === 32) {
        return this.findPeer(to, { signal: opts.signal }).then((peer) => this.send(peer, data, opts))
      }
      if (to instanceof Peer && to.id !== null) {
        const auth = this.#authenticator()
        if (auth && !auth.remotePeer(to.address)?.id?.equals(to.id)) {
          return auth.authenticate(to, { signal: opts.signal }).then(() => this.#sendNow(to.address, data, opts))
        }
      }
      return this.#sendNow(to instanceof Peer ? to.address : toAddress(to as AddressLike), data, opts)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  #sendNow(to: Address, data: Uint8Array, opts: SendOptions): Promise<void> {
    if (opts.signal?.aborted) return Promise.reject(abortError(opts.signal))
    const r = this.#app.send(to, data, TAG_APP, opts.signal || opts.onProgress ? opts : undefined)
    return r instanceof Promise ? (r as Promise<void>) : RESOLVED
  }

  /** The stack's layer that binds dials to identities (Noise in encrypt or sign mode), if any. */
  #authenticator(): Authenticator | undefined {
    const layer = this.stack.provider('authenticate') as (Protocol & Authenticator) | undefined
    return layer?.authenticates ? layer : undefined
  }

  /** Round-trip time in ms to the node at `to` (the bottom layer's transport-level `ping()`). */
  ping(to: Peer | AddressLike, opts?: PingOptions): Promise<number> {
    const t = this.#transport
    if (this.#state !== 'running') return Promise.reject(notRunning())
    if (typeof t.ping !== 'function') {
      return Promise.reject(new DeccomError(ErrorCode.STACK_INVALID, `The bottom layer "${t.name}" has no ping()`))
    }
    return t.ping(to instanceof Peer ? to.address : to, opts)
  }

  /**
   * The peer with node id `id` (32 bytes or 64 hex digits), through the discovery layer of the
   * stack: the first layer from the top that provides `findPeer` (Kademlia, Gossip, ...).
   * @throws ERR_DECCOM_STACK_INVALID when no layer can find peers; otherwise the layer's errors
   */
  findPeer(id: Buffer | string, opts?: FindPeerOptions): Promise<Peer> {
    if (this.#state !== 'running') return Promise.reject(notRunning())
    const layer = this.stack.provider('findPeer') as
      | (Protocol & { findPeer(id: Buffer | string, opts?: FindPeerOptions): Promise<Peer> })
      | undefined
    if (!layer) {
      return Promise.reject(new DeccomError(ErrorCode.STACK_INVALID, 'No layer in the stack can find peers (add a discovery layer such as Kademlia or Gossip)'))
    }
    return layer.findPeer(id, opts)
  }

  /**
   * What the layers measured about the NAT in front of this node: `{ type, udp, tcp, mapping,
   * external }` (see {@link NatReport} and docs/nat.md, "NAT report"). Built from the HolePuncher's
   * observations, the TcpTransport's `tcpMapping()` and the PortMapper's mapping, whichever the
   * stack has; `'unknown'` when none measured anything yet.
   */
  nat(): NatReport {
    return natReport(this.stack, this.address)
  }

  /**
   * The stack's DHT layer (`Dht`): `put`/`get` immutable values, `putMutable`/`getMutable` signed ones.
   * @throws ERR_DECCOM_STACK_INVALID when the stack has no Dht layer
   */
  get dht(): Dht {
    // The stack's layers are fixed: found once.
    const layer = (this.#dht ??= this.stack.find(Dht) ?? null)
    if (!layer) throw new DeccomError(ErrorCode.STACK_INVALID, 'No Dht layer in the stack (add new Dht() above Kademlia)')
    return layer
  }
  #dht: Dht | null | undefined

  /**
   * Joins a 32-byte topic through the stack's DHT layer (see `Dht.join`): the Topic emits 'peer'
   * for every peer met. With `connect: true` the node connects to each peer it meets (the one of
   * the pair with the smaller id dials) and emits 'connection' for the connections it opens (the
   * other side emits it on accept).
   * @throws ERR_DECCOM_STACK_INVALID, ERR_DECCOM_CLOSED, ERR_DECCOM_INVALID_ARGUMENT
   */
  join(topic: Buffer | Uint8Array | string, opts: JoinOptions = {}): Topic {
    if (this.#state !== 'running') throw notRunning()
    const t = this.dht.join(topic, opts)
    if (opts.connect) {
      t.on('peer', (peer) => {
        if (!peer.id || Buffer.compare(this.id, peer.id) >= 0 || t.left) return
        this.connect(peer, { signal: opts.signal }).then(
          (conn) => this.emitFromNetwork('connection', conn),
          (e: Error) => {
            this.#app.counters.topic_connect_failures = (this.#app.counters.topic_connect_failures ?? 0) + 1
            if (this.listenerCount('error') > 0) this.emit('error', e)
          },
        )
      })
    }
    return t
  }

  /** Counters of every layer, by layer name. */
  stats(): NodeStats {
    const s = this.stack.stats()
    const app = s[this.#app.name]
    if (app) Object.assign(app, { connections_open: this.#connections.list().length, connections_buffered_bytes: this.#connections.buffered })
    return s
  }

  /**
   * The counters of {@link stats} in the Prometheus text format: `deccom_<layer>_<counter>_total`
   * for counters, `deccom_<layer>_<name>` for gauges (RTT, congestion window, table sizes, queues,
   * open connections), each with the label `node="<first 16 hex digits of the id>"`. Serve it from
   * an HTTP endpoint for a Prometheus-compatible scraper.
   */
  metrics(): string {
    return renderMetrics(this.stats(), this.identity.idHex)
  }

  /**
   * Closes every connection (CLOSE to each peer, at most 500 ms), then stops every layer
   * top-down, releasing every socket and timer. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing
    const wasRunning = this.#state === 'running'
    this.#state = 'closing'
    for (const u of this.#unsubscribe.splice(0)) u()
    const connections = wasRunning ? this.#connections.close() : Promise.resolve()
    this.#closing = connections
      .catch(() => {})
      .then(() => this.stack.stop())
      .finally(() => {
        this.#state = 'closed'
      })
    return this.#closing
  }

  /** `await using node = ...` closes the node (see {@link close}). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** A layer with a joining phase: `node.ready()` waits for its `ready()`. */
export interface Joining {
  /** Resolves once the layer has joined; rejects when it gives up or `signal` aborts. */
  ready(opts?: { signal?: AbortSignal }): Promise<void>
}

interface EventSource {
  on(event: string, fn: (...a: any[]) => void): unknown
  off(event: string, fn: (...a: any[]) => void): unknown
}


/** `p`, or the error `make()` after `ms` on `clock`. */
function raceTimeout<T>(p: Promise<T>, clock: Clock, ms: number, make: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = clock.setTimeout(() => reject(make()), ms)
    p.then(
      (v) => {
        clock.clearTimeout(t)
        resolve(v)
      },
      (e) => {
        clock.clearTimeout(t)
        reject(e)
      },
    )
  })
}

/**
 * Adds a PortMapper to `layers` (top first, transport last) as `opt` says (see NodeOptions.portMapping):
 * just above the topmost layer providing `externalAddress`, else at the top.
 */
function addPortMapper(layers: Protocol[], opt: boolean | PortMapperOptions | undefined): void {
  if (opt === false || layers.some((l) => l instanceof PortMapper)) return
  const provides = (l: Protocol): boolean => (l.constructor as typeof Protocol).provides.includes('externalAddress')
  const at = layers.findIndex(provides)
  if (opt === undefined && (at < 0 || !(layers[layers.length - 1] instanceof UdpTransport))) return
  layers.splice(Math.max(at, 0), 0, new PortMapper(opt === true || opt === undefined ? {} : opt))
}

/** A transport sits at the bottom: it provides `send` without binding to anything below. */
function isTransport(layer: Protocol): boolean {
  const cls = layer.constructor as typeof Protocol
  return cls.bindTo.length === 0 && cls.provides.includes('send')
}

function notRunning(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The node is not running (closed, or not created with Node.create)')
}
