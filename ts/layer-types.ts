/**
 * Types shared by the layer contract ({@link Protocol} in `protocol.ts`) and the {@link Stack} that
 * resolves it (`stack.ts`). Both import this module; neither imports the other's module for types,
 * so there is no import cycle. The binding registry names the option and result types of the
 * built-in layers from modules that do not import the layers (`protocols/punch-types.ts`,
 * `protocols/kademlia/state.ts`, `protocols/tcp/connection.ts`, `protocols/ping.ts`).
 */
import type * as net from 'node:net'
import type { Address, AddressLike } from './address'
import type { Clock } from './clock'
import type { Peer } from './peer'
import type { FindPeerOptions, LookupOptions, LookupResult } from './protocols/kademlia/state'
import type { PingOptions } from './protocols/ping'
import type { Observation, PunchResult, TcpPunchResult } from './protocols/punch-types'
import type { TcpCloseReason, TcpMapping, TcpPeer, TcpTarget } from './protocols/tcp/connection'
import type { LayerLog } from './log'
import type { LayerRandom } from './layer-random'

/** Any function; the type of a resolved binding. */
export type Fn = (...args: any[]) => any

/** What a layer receives in `Protocol.start`. Filled in by the Node. */
export interface LayerContext {
  /** The node's identity. */
  readonly identity: unknown
  /**
   * This layer's debug logger, printf-style (`log('joined: %d peers', n)`), from its Stack: the
   * namespace is `deccom:<layer name>` (enable with `DEBUG=deccom:kademlia`, or `deccom:*` for
   * every layer), every line starts with the node's short id (`[a1b2c3d4]`), and each message kind
   * (format string) prints at most 20 lines a second (bursts of 50), the rest summarized as
   * `suppressed K similar lines` (see `log.ts`). When the namespace is disabled a call costs one
   * check and formats nothing; test `log.enabled` before computing costly arguments. Log what the
   * layer does (joins, lookups, handshakes, connections, drops), not every datagram.
   */
  readonly log: LayerLog
  /**
   * The node's clock: use it for every timer and time measurement, so that the layer also runs in
   * virtual time (a SimulatedNetwork passes its own). `realClock` unless `NodeOptions.clock` is set.
   */
  readonly clock: Clock
  /**
   * This layer's random stream (see `layer-random.ts`): the OS generator over real sockets; in a
   * SimulatedNetwork a stream derived from the network's seed, so a run replays exactly. Use it for
   * request ids, random targets and the like (not for secrets).
   */
  readonly random: LayerRandom
}

/** The five declaration lists a layer class may have. */
export type DeclarationKind = 'bindTo' | 'bindFrom' | 'provides' | 'emits' | 'requires'

/**
 * How a layer takes part in native fusion (running inside a native socket's I/O thread), declared
 * as `static nativeRole` on its class:
 * - `'socket'`:   a native transport whose I/O thread can run stages (UdpTransport);
 * - `'stage'`:    a pass-through layer that can run as a stage in that thread, but only when a
 *                 native `'endpoint'` above pulls it in (FaultyTransport, Delay, Noise);
 * - `'endpoint'`: a layer that runs natively when every layer between it and a `'socket'` below is
 *                 a `'stage'` that can (ReliableUdp).
 * A layer without a role (the default) runs in JavaScript only and ends any native run.
 *
 * The Stack decides at start, bottom-up, just before starting each `'endpoint'` (the layers below
 * are started by then): it asks each layer of the run `canRunNative(below)`, `below` being the
 * stages already accepted between it and the socket (nearest the socket first). When all agree it
 * calls `enableNative(socket)` on each stage, bottom-up, then on the endpoint, and starts the
 * endpoint. A layer that is asked nothing stays JavaScript-driven.
 */
export type NativeRole = 'socket' | 'stage' | 'endpoint'

/** The methods a `'stage'` or `'endpoint'` layer implements (see {@link NativeRole}). */
export interface NativeCapable {
  /** Whether this layer can run natively over the socket with the stages `below` (nearest the socket first) in between. */
  canRunNative(below: readonly object[]): boolean
  /** Move this layer's work into the socket's I/O thread. Called at most once, before its start (endpoint) or after it (stage). */
  enableNative(socket: any): void
}

/**
 * A layer whose requests a native socket can answer in its receive path, without JavaScript (the
 * Dht: GETs). Once every layer has started, the Stack offers it to a layer whose datagram path is
 * plain: it sends straight through a `'socket'` layer and receives from `via`, the layer just
 * below it, which receives straight from that socket.
 */
export interface NativeResponder {
  /** Attach the socket's responder, with what `via` holds; true when attached. */
  attachNativeResponder(via: object, socket: object): boolean
}

/**
 * A layer whose protocol can run natively in a simulator's delivery lane (see the
 * SimulatedNetwork's `nativeDelivery`). When the layer sends straight through the layer just below
 * it and fills that layer's `onMessage` slot, the stack offers it that layer once started.
 */
export interface NativeLaneUser {
  /** Attach to `below`'s lane, if it has one; true when attached. */
  attachNativeLane(below: object): boolean
}

/** One row of `Stack.describe()`, top layer first. */
export interface LayerDescription {
  /** The layer's (unique) name. */
  layer: string
  /** Its control-datagram tag, or undefined. */
  tag: number | undefined
  /** bindTo name → name of the layer providing it, or `"absent"` for an optional one nobody provides. */
  bindTo: Record<string, string>
  /** bindFrom name → name of the layer whose emitted slot it fills (`"absent"`: optional, no emitter). */
  bindFrom: Record<string, string>
  /** True when the layer runs inside a native socket's I/O thread (decided at start). */
  native: boolean
}

/** What an optional binding nobody provides is wired to: every call returns undefined. */
export const absentBinding: Fn = () => undefined

/**
 * The registry of binding signatures: every name a layer may `bindTo`/`provides` (a method called
 * going down) or `emits`/`bindFrom` (a callback called going up), with its signature. A layer typed
 * with {@link LayerSpec} sees exactly the bindings it names, with these signatures.
 *
 * Prefilled with the bindings of the built-in layers; add your own by declaration merging:
 * ```ts
 * declare module 'deccom' {
 *   interface Bindings {
 *     sendChat(to: AddressLike, text: string): void
 *   }
 * }
 * ```
 */
export interface Bindings {
  // ---- datagram transports (UdpTransport, SimTransport) and the layers that pass `send` on
  /**
   * Send a datagram with a layer tag (0: application data). Layers that queue (ReliableUdp, Noise)
   * return a promise that settles when the layer accepted or delivered it; others return nothing.
   */
  send(to: AddressLike, data: Uint8Array, tag?: number): unknown
  /** A datagram from below: the sender (a Peer once a secure layer knows it), its bytes, its tag. */
  onMessage(from: Address | Peer, data: Buffer, tag: number): void
  /** The transport's own bound address. */
  localAddress(): Address
  /** Round-trip time in ms to an address (transport ping). */
  ping(to: AddressLike, opts?: PingOptions): Promise<number>
  /** UdpTransport: opens up to `count` sockets that carry `remote`'s traffic (the first to hear from it wins); how many opened. */
  openAuxiliary(remote: AddressLike, count: number): number
  /** UdpTransport: closes `remote`'s auxiliary sockets; how many. */
  closeAuxiliary(remote: AddressLike): number
  // ---- discovery (Kademlia, Gossip, BigGossip, FixedPeers)
  /** The peer with node id `id` (32 bytes or 64 hex digits), from the table or by a lookup. */
  findPeer(id: Buffer | string, opts?: FindPeerOptions): Promise<Peer>
  /** The peer with node id `id` if the layer knows it now (no network traffic). */
  getPeer(id: Buffer | string): Peer | undefined
  /** Every peer the discovery layer knows now. */
  peers(): Peer[]
  /** The up to `n` known peers closest to `id` (XOR distance), closest first. */
  closest(id: Buffer | string, n?: number): Peer[]
  /** An iterative lookup of `target` through the network (Kademlia). */
  lookup(target: Buffer | string, opts?: LookupOptions): Promise<LookupResult>
  /** The introducer that named a peer (Kademlia), or null. */
  introducerOf(addr: AddressLike): Address | null
  /** Called upward when a discovery layer learned a peer. */
  onConnected(peer: Peer): void
  /** Called upward when a discovery layer forgot a peer. */
  onDisconnected(peer: Peer): void
  /** Application data to the peer with node id `id` (FixedPeers, Gossip). */
  sendToId(id: Buffer | string, data: Uint8Array): Promise<void>
  /** Application data to every known peer (FixedPeers, Gossip, BigGossip). */
  broadcast(data: Uint8Array): Promise<void>
  // ---- KeepAlive
  /** Starts watching a peer with keep-alive pings (idempotent). */
  register(peer: Peer | AddressLike): void
  /** Stops watching a peer. */
  unregister(peer: Peer | AddressLike): void
  // ---- Noise
  /** A session with `peer` whose handshake authenticated its id (starting a handshake if needed). */
  authenticate(peer: Peer, opts?: { signal?: AbortSignal }): Promise<Peer>
  /** Whether a connection from or to `peer` may proceed (true once a handshake authenticated it). */
  approveConnection(peer: Peer | AddressLike): boolean | Promise<boolean>
  /** The authenticated node id of the peer at `addr`, or null. */
  remoteId(addr: AddressLike): Buffer | null
  /** The authenticated peer at `addr`, or null. */
  remotePeer(addr: AddressLike): Peer | null
  // ---- NAT traversal (HolePuncher, Relay, TcpHolePuncher)
  /** A path to `target` behind a NAT: hole punching through the introducer `via`, else a relay. */
  connect(target: AddressLike, via?: AddressLike): Promise<PunchResult>
  /** This node's external (NAT-mapped) UDP address, once two observers agree on it; else null. */
  externalAddress(): Address | null
  /** The addresses rendezvous nodes reported seeing this node at. */
  observations(): Observation[]
  /** Takes a session on `relay` (and routes to `peers` through it). */
  relayVia(relay: AddressLike, peers?: AddressLike[], opts?: { timeout?: number }): Promise<void>
  /** A TCP connection to `target` by simultaneous open, introduced through `via`. */
  tcpPunch(target: AddressLike, via: AddressLike, opts?: { tcpAddress?: AddressLike }): Promise<TcpPunchResult>
  // ---- TcpTransport
  /** A TCP connection to `to` (reused when open), holding one reference to it. */
  openConnection(to: TcpTarget): Promise<TcpPeer>
  /** A frame with a layer tag on the TCP connection to `to`. */
  sendStream(to: TcpTarget, data: Uint8Array, tag?: number): Promise<void>
  /** Releases one reference taken by `openConnection`; false when there was none. */
  closeStream(to: TcpTarget): boolean
  /** Closes the TCP connection to `to` now; false when there was none. */
  disconnect(to: TcpTarget): boolean
  /** Stops reading from the TCP connection to `to` (backpressure to the sender). */
  pauseStream(to: TcpTarget): boolean
  /** Reads from the TCP connection to `to` again. */
  resumeStream(to: TcpTarget): boolean
  /** The TCP listening address. */
  tcpAddress(): Address
  /** The NAT mapping of outgoing TCP connections, once 2 peers agree on it; else null. */
  tcpMapping(): TcpMapping | null
  /** The external address of the TCP listening port when the mapping preserves ports; else null. */
  externalTcpAddress(): Address | null
  /** Takes over a connected socket (a punched TCP connection) and runs the introduction on it. */
  adoptSocket(socket: net.Socket, initiator: boolean): Promise<TcpPeer>
  /** The peers of the open TCP connections. */
  tcpPeers(): TcpPeer[]
  /** Called upward with each frame a TCP connection received. */
  onStream(peer: TcpPeer, data: Buffer, tag: number): void
  /** Called upward when a TCP connection closed, with why. */
  onStreamClosed(peer: TcpPeer, reason: TcpCloseReason, error: unknown): void
}

/** A binding name as a typed layer lists it: a key of {@link Bindings}, or with `?` for an optional one. */
export type BindingRef = (keyof Bindings & string) | `${keyof Bindings & string}?`

/**
 * The bindings a typed layer uses, the type argument of `Protocol<Spec>`:
 * - `lower`: the names it calls on layers below (its `bindTo`), `'name?'` for an optional one
 *            (whose call then also returns undefined);
 * - `upper`: the callback slots it calls upward (its `emits`).
 * The static arrays stay the runtime declaration: list the same names there.
 */
export interface LayerSpec {
  /** The binding names the layer calls below (`'name?'`: optional), as a union. */
  lower?: BindingRef
  /** The callback slots the layer calls upward, as a union. */
  upper?: keyof Bindings & string
}

declare const untyped: unique symbol
/** The spec of an untyped layer (the default): `lower` and `upper` are records of any function. */
export interface Untyped {
  /** A brand no other type has. */
  readonly [untyped]: true
}

type Strip<R> = R extends `${infer N}?` ? N : R
type Maybe<F> = F extends (...a: infer A) => infer T ? (...a: A) => T | undefined : never

/** The `lower` object of a layer calling the bindings `R` (names as in {@link LayerSpec.lower}). */
export type LowerOf<R extends BindingRef> = {
  readonly [K in R as Strip<K>]: K extends keyof Bindings ? Bindings[K] : Maybe<Bindings[Strip<K> & keyof Bindings]>
}

/** The type of `this.lower` in a `Protocol<S>`. */
export type LowerBindings<S> = S extends Untyped
  ? Record<string, Fn>
  : S extends {
        /** The spec's lower bindings. */
        lower: infer R extends BindingRef
      }
    ? LowerOf<R>
    : {}
/** The type of `this.upper` in a `Protocol<S>`. */
export type UpperBindings<S> = S extends Untyped
  ? Record<string, Fn>
  : S extends {
        /** The spec's upper slots. */
        upper: infer R extends keyof Bindings
      }
    ? Readonly<Pick<Bindings, R>>
    : {}

/**
 * The methods a layer implements under binding names (its `bindFrom` callbacks and `provides`),
 * for an `implements` clause: `class Echo extends Protocol<...> implements BindingsOf<'onMessage'>`.
 */
export type BindingsOf<N extends keyof Bindings> = Pick<Bindings, N>
