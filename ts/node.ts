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
 * Events: `'message' (from: Peer, data: Buffer)`. The `data` Buffer is a view into a batch buffer
 * shared with the other datagrams of its batch: copy it if you keep it beyond the callback and
 * care about memory (it stays valid; it only keeps the batch alive).
 */
import { EventEmitter } from 'node:events'
import type { Address, AddressLike } from './address'
import { toAddress } from './address'
import type { Clock } from './clock'
import { realClock } from './clock'
import { abortError, DeccomError, ErrorCode } from './errors'
import { Identity } from './identity'
import { Peer } from './peer'
import { LogGroup } from './log'
import type { LayerContext } from './protocol'
import { Protocol } from './protocol'
import type { PingOptions, UdpOptions } from './protocols/udp'
import { TAG_APP, UdpTransport } from './protocols/udp'
import { Stack } from './stack'

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
}

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

/** The application layer a Node puts on top of its stack: binds `send` and takes `onMessage`. */
class Application extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  readonly name = 'app'
  readonly #peers = new Map<Address, Peer>()

  constructor(private readonly node: Node) {
    super()
  }

  send(to: Address, data: Uint8Array): unknown {
    return this.lower.send(to, data, TAG_APP)
  }

  onMessage(from: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== TAG_APP) return this.count('dropped_unknown_tag')
    this.count('received')
    this.node.emit('message', from instanceof Peer ? from : this.#peer(from), data)
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

export interface Node {
  on(event: 'message', listener: (from: Peer, data: Buffer) => void): this
  once(event: 'message', listener: (from: Peer, data: Buffer) => void): this
  off(event: 'message', listener: (from: Peer, data: Buffer) => void): this
  emit(event: 'message', from: Peer, data: Buffer): boolean
}

export class Node extends EventEmitter {
  readonly identity: Identity
  readonly stack: Stack
  readonly #app: Application
  /** The bottom layer of the stack: the transport. */
  readonly #transport: Protocol & TransportLike
  readonly #clock: Clock
  #state: 'new' | 'running' | 'closing' | 'closed' = 'new'
  #closing: Promise<void> | null = null

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
    this.#app = new Application(this)
    this.stack = new Stack([this.#app, ...layers])
    this.stack.build()
    this.#transport = layers[layers.length - 1] as Protocol & TransportLike
    this.#clock = opts.clock ?? realClock
  }

  /** Builds the stack (validating every binding), then starts it bottom-up. */
  static async create(opts: NodeOptions = {}): Promise<Node> {
    const node = new Node(opts)
    const ctx: LayerContext = {
      identity: node.identity,
      // The Stack gives each layer its own logger (`deccom:<layer>`, see log.ts); this one is the node's.
      log: new LogGroup(node.identity.idHex.slice(0, 8), node.#clock).layer('node'),
      clock: node.#clock,
    }
    await node.stack.start(ctx)
    node.#state = 'running'
    return node
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
   * @throws (rejects) ERR_DECCOM_PEER_IDENTITY_MISMATCH, ERR_DECCOM_DATAGRAM_TOO_LARGE,
   *   ERR_DECCOM_INVALID_ADDRESS, ERR_DECCOM_ABORTED, ERR_DECCOM_CLOSED, the discovery and
   *   handshake errors of the layers
   */
  send(to: Peer | Buffer | AddressLike, data: Uint8Array, opts: { signal?: AbortSignal } = {}): Promise<void> {
    try {
      if (this.#state !== 'running') throw notRunning()
      if (opts.signal?.aborted) throw abortError(opts.signal)
      if (Buffer.isBuffer(to) && to.length === 32) {
        return this.findPeer(to, { signal: opts.signal }).then((peer) => this.send(peer, data, opts))
      }
      if (to instanceof Peer && to.id !== null) {
        const auth = this.#authenticator()
        if (auth && !auth.remotePeer(to.address)?.id?.equals(to.id)) {
          return auth.authenticate(to, { signal: opts.signal }).then(() => this.#sendNow(to.address, data))
        }
      }
      return this.#sendNow(to instanceof Peer ? to.address : toAddress(to as AddressLike), data)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  #sendNow(to: Address, data: Uint8Array): Promise<void> {
    const r = this.#app.send(to, data)
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
  findPeer(id: Buffer | string, opts?: { timeout?: number; signal?: AbortSignal }): Promise<Peer> {
    if (this.#state !== 'running') return Promise.reject(notRunning())
    const layer = this.stack.provider('findPeer') as
      | (Protocol & { findPeer(id: Buffer | string, opts?: { timeout?: number; signal?: AbortSignal }): Promise<Peer> })
      | undefined
    if (!layer) {
      return Promise.reject(new DeccomError(ErrorCode.STACK_INVALID, 'No layer in the stack can find peers (add a discovery layer such as Kademlia or Gossip)'))
    }
    return layer.findPeer(id, opts)
  }

  /** Counters of every layer, by layer name. */
  stats(): NodeStats {
    return this.stack.stats()
  }

  /** Stops every layer top-down, releasing every socket and timer. Idempotent. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing
    this.#state = 'closing'
    this.#closing = this.stack.stop().finally(() => {
      this.#state = 'closed'
    })
    return this.#closing
  }
}

/** A transport sits at the bottom: it provides `send` without binding to anything below. */
function isTransport(layer: Protocol): boolean {
  const cls = layer.constructor as typeof Protocol
  return cls.bindTo.length === 0 && cls.provides.includes('send')
}

function notRunning(): DeccomError {
  return new DeccomError(ErrorCode.CLOSED, 'The node is not running (closed, or not created with Node.create)')
}
