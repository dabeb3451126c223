/**
 * Types shared by the layer contract ({@link Protocol} in `protocol.ts`) and the {@link Stack} that
 * resolves it (`stack.ts`). Both import this module; neither imports the other's module for types,
 * so there is no import cycle.
 */
import type { Clock } from './clock'
import type { LayerLog } from './log'

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
