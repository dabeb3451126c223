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
  // ---- discovery (Kademlia, Gossip, BigGossip, FixedPeers)
  findPeer(id: Buffer | string, opts?: FindPeerOptions): Promise<Peer>
  getPeer(id: Buffer | string): Peer | undefined
  peers(): Peer[]
  closest(id: Buffer | string, n?: number): Peer[]
  lookup(target: Buffer | string, opts?: LookupOptions): Promise<LookupResult>
  /** The introducer that named a peer (Kademlia), or null. */
  introducerOf(addr: AddressLike): Address | null
  onConnected(peer: Peer): void
  onDisconnected(peer: Peer): void
  sendToId(id: Buffer | string, data: Uint8Array): Promise<void>
  broadcast(data: Uint8Array): Promise<void>
  // ---- KeepAlive
  register(peer: Peer | AddressLike): void
  unregister(peer: Peer | AddressLike): void
  // ---- Noise
  authenticate(peer: Peer, opts?: { signal?: AbortSignal }): Promise<Peer>
  approveConnection(peer: Peer | AddressLike): boolean | Promise<boolean>
  remoteId(addr: AddressLike): Buffer | null
  remotePeer(addr: AddressLike): Peer | null
  // ---- NAT traversal (HolePuncher, Relay, TcpHolePuncher)
  connect(target: AddressLike, via?: AddressLike): Promise<PunchResult>
  externalAddress(): Address | null
  observations(): Observation[]
  relayVia(relay: AddressLike, peers?: AddressLike[], opts?: { timeout?: number }): Promise<void>
  tcpPunch(target: AddressLike, via: AddressLike, opts?: { tcpAddress?: AddressLike }): Promise<TcpPunchResult>
  // ---- TcpTransport
  openConnection(to: TcpTarget): Promise<TcpPeer>
  sendStream(to: TcpTarget, data: Uint8Array, tag?: number): Promise<void>
  closeStream(to: TcpTarget): boolean
  disconnect(to: TcpTarget): boolean
  pauseStream(to: TcpTarget): boolean
  resumeStream(to: TcpTarget): boolean
  tcpAddress(): Address
  tcpMapping(): TcpMapping | null
  externalTcpAddress(): Address | null
  adoptSocket(socket: net.Socket, initiator: boolean): Promise<TcpPeer>
  tcpPeers(): TcpPeer[]
  onStream(peer: TcpPeer, data: Buffer, tag: number): void
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
  lower?: BindingRef
  upper?: keyof Bindings & string
}

declare const untyped: unique symbol
/** The spec of an untyped layer (the default): `lower` and `upper` are records of any function. */
export interface Untyped {
  readonly [untyped]: true
}

type Strip<R> = R extends `${infer N}?` ? N : R
type Maybe<F> = F extends (...a: infer A) => infer T ? (...a: A) => T | undefined : never

/** The `lower` object of a layer calling the bindings `R` (names as in {@link LayerSpec.lower}). */
export type LowerOf<R extends BindingRef> = {
  readonly [K in R as Strip<K>]: K extends keyof Bindings ? Bindings[K] : Maybe<Bindings[Strip<K> & keyof Bindings]>
}

/** The type of `this.lower` in a `Protocol<S>`. */
export type LowerBindings<S> = S extends Untyped ? Record<string, Fn> : S extends { lower: infer R extends BindingRef } ? LowerOf<R> : {}
/** The type of `this.upper` in a `Protocol<S>`. */
export type UpperBindings<S> = S extends Untyped
  ? Record<string, Fn>
  : S extends { upper: infer R extends keyof Bindings } ? { readonly [K in R]: Bindings[K] } : {}

/**
 * The methods a layer implements under binding names (its `bindFrom` callbacks and `provides`),
 * for an `implements` clause: `class Echo extends Protocol<...> implements BindingsOf<'onMessage'>`.
 */
export type BindingsOf<N extends keyof Bindings> = Pick<Bindings, N>
