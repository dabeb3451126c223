/**
 * The layer contract.
 *
 * A layer is a class extending {@link Protocol} that declares, as static arrays on its class:
 * - `bindTo`:   methods it calls on lower layers (calls going down), resolved against ANY layer
 *               below, the nearest first. A name ending in `?` is optional: the layer calls it
 *               without the `?` (`this.lower.externalAddress()` for `'externalAddress?'`), and
 *               when no layer below provides it, the call returns undefined;
 * - `bindFrom`: callbacks it offers that a lower layer calls (events going up); a name ending in `?`
 *               is optional: without an emitter below, the callback is simply never called;
 * - `provides`: its methods that upper layers may `bindTo`;
 * - `emits`:    callback slots it calls upward, each filled by exactly one upper layer's `bindFrom`;
 * - `requires`: names that must exist below it (provided or emitted).
 *
 * {@link Stack.build} resolves the declarations once; afterwards `this.lower.x(...)` and
 * `this.upper.y(...)` are plain function calls with no per-call lookup.
 *
 * ```ts
 * class Ping extends Protocol {
 *   static override bindTo = ['sendMessage']
 *   static override bindFrom = ['onMessage']
 *   readonly name = 'ping'
 *   onMessage(from: Peer, data: Uint8Array) { this.count('received'); this.lower.sendMessage(from, data) }
 * }
 * // or, without static fields:  @bindTo('sendMessage') @bindFrom('onMessage') class Ping extends Protocol {...}
 * ```
 *
 * ## Typed layers
 * Without a type argument (as above) `this.lower` and `this.upper` are records of any function.
 * With one, a {@link LayerSpec} naming the bindings the layer uses, they hold exactly those
 * names, with the signatures of the {@link Bindings} registry (which applications extend by
 * declaration merging); any other name is a compile error:
 *
 * ```ts
 * class Echo extends Protocol<{ lower: 'send' | 'externalAddress?'; upper: 'onMessage' }> implements BindingsOf<'onMessage'> {
 *   static override bindTo = ['send', 'externalAddress?']
 *   static override bindFrom = ['onMessage']
 *   static override emits = ['onMessage']
 *   readonly name = 'echo'
 *   onMessage(from: Address | Peer, data: Buffer, tag: number): void {
 *     if (tag !== 9) return this.upper.onMessage(from, data, tag)
 *     void this.lower.send(from instanceof Peer ? from.address : from, data, 9)
 *   }
 * }
 * ```
 * `lower` lists what the layer calls going down (its `bindTo`; `'name?'` for an optional one,
 * whose call may return undefined), `upper` the slots it calls going up (its `emits`); the
 * methods it offers (`bindFrom`, `provides`) are checked with `implements BindingsOf<...>`. The
 * type argument only types these objects: the static arrays remain the declaration the Stack
 * resolves, so list the same names in both.
 */
import { DeccomError, ErrorCode } from './errors'
import {
  type DeclarationKind,
  type Fn,
  type LayerContext,
  type LayerSpec,
  type LowerBindings,
  type NativeRole,
  type Untyped,
  type UpperBindings,
  absentBinding,
} from './layer-types'
import { type LayerLog, silentLog } from './log'

export type {
  BindingRef,
  Bindings,
  BindingsOf,
  DeclarationKind,
  Fn,
  LayerContext,
  LayerDescription,
  LayerSpec,
  LowerBindings,
  LowerOf,
  NativeCapable,
  NativeResponder,
  NativeRole,
  Untyped,
  UpperBindings,
} from './layer-types'

/** A concrete or abstract class of layers, typed or not. */
export type ProtocolClass = abstract new (...args: any[]) => Protocol<any>

const NONE: readonly string[] = Object.freeze([])

/** Gives `layer` its debug logger (the Stack does, before starting it). Set by Protocol's static block. */
export let setLayerLog: (layer: Protocol<any>, log: LayerLog) => void

/**
 * Base class of every layer. Subclasses set `name`, maybe `tag`, and declare bindings as statics.
 * `S` (optional) types `lower` and `upper`: see "Typed layers" above.
 */
export abstract class Protocol<S extends LayerSpec | Untyped = Untyped> {
  /** Methods this layer calls on lower layers (calls going down). */
  static bindTo: readonly string[] = NONE
  /** Callbacks this layer offers; a lower layer calls them (events going up). */
  static bindFrom: readonly string[] = NONE
  /** Methods of this layer that upper layers may `bindTo`. */
  static provides: readonly string[] = NONE
  /** Callback slots this layer calls upward; an upper layer fills each via `bindFrom`. */
  static emits: readonly string[] = NONE
  /** Names that must exist below this layer (as a provided method or an emitted slot). */
  static requires: readonly string[] = NONE
  /**
   * How this layer takes part in native fusion (see {@link NativeRole}); undefined: JavaScript
   * only. A `'stage'` or `'endpoint'` also implements `canRunNative(below)` and `enableNative(socket)`.
   */
  static nativeRole: NativeRole | undefined = undefined

  /**
   * Short name used in errors and stats, e.g. `'udp'`, `'kademlia'`. Unique within a stack:
   * when a name repeats, the Stack renames the later instances `name#2`, `name#3`, ...
   */
  abstract readonly name: string
  /**
   * 1-byte tag (1..255) carried by this layer's own control datagrams, or undefined for a layer
   * without its own datagrams. 0 is reserved for application data. Unique within a stack.
   */
  declare readonly tag?: number

  /**
   * Resolved `bindTo` bindings: `this.lower.sendDatagram(...)` calls the bound method of the
   * nearest layer below that provides it. Before the stack is built each declared name holds a
   * function that throws STACK_STATE.
   */
  protected readonly lower: LowerBindings<S> = {} as LowerBindings<S>
  /**
   * Resolved `emits` slots: `this.upper.onDatagram(...)` calls the bound callback of the upper
   * layer that took the slot. Until (or unless) some layer takes it, the slot holds a default that
   * drops the call, counts `dropped_no_consumer` and returns undefined.
   */
  protected readonly upper: UpperBindings<S> = {} as UpperBindings<S>
  /** Per-layer counters (`sent`, `received`, `dropped_<reason>`...), plain numbers. */
  readonly counters: Record<string, number> = {}

  constructor() {
    const cls = new.target as unknown as typeof Protocol
    const lower = this.lower as Record<string, Fn>
    const upper = this.upper as Record<string, Fn>
    for (const n of cls.bindTo) lower[bindingName(n)] = notBuilt(this, bindingName(n))
    for (const n of cls.emits) upper[n] = this.#dropNoConsumer
  }

  /**
   * True when the (optional) `bindTo` binding `name` resolved to a layer below; false when it is
   * absent (its calls return undefined) or the stack is not built yet.
   */
  protected hasLower(name: string): boolean {
    const f = (this.lower as Record<string, Fn>)[name]
    return f !== undefined && f !== absentBinding && !isNotBuilt(f)
  }

  /** True when a layer above took this layer's emitted slot `name` (with `bindFrom`). */
  protected hasUpper(name: string): boolean {
    const f = (this.upper as Record<string, Fn>)[name]
    return f !== undefined && f !== this.#dropNoConsumer
  }

  /**
   * Add `n` (default 1) to counter `name`, creating it at 0. A `dropped_<reason>` counter is also
   * logged (rate-limited) on the layer's debug namespace.
   */
  protected count(name: string, n = 1): void {
    // One lookup: only an own counter is a number (what the prototype has under a name is not).
    const v = this.counters[name]
    this.counters[name] = (typeof v === 'number' ? v : 0) + n
    if (name.charCodeAt(0) === 100 && name.startsWith('dropped_') && this.#log.enabled) {
      if (n === 1) this.#log(name)
      else this.#log(`${name} (%d)`, n)
    }
  }

  /**
   * Drop something: count `dropped_<reason>` and log it rate-limited on the layer's debug
   * namespace, with the printf-style details `fmt, ...a` when given (formatted only when enabled).
   */
  protected drop(reason: string, fmt?: string, ...a: unknown[]): void {
    const name = `dropped_${reason}`
    this.counters[name] = (Object.hasOwn(this.counters, name) ? this.counters[name] : 0) + 1
    if (!this.#log.enabled) return
    if (fmt === undefined) this.#log(name)
    else this.#log(`${name}: ${fmt}`, ...a)
  }

  /** The layer's debug logger, set by its Stack at start (the same as its `ctx.log`). */
  #log: LayerLog = silentLog
  static {
    setLayerLog = (layer, log) => {
      layer.#log = log
    }
  }

  /**
   * Sends one of this layer's own datagrams through `lower.send` (the layer must bind `send`)
   * without waiting for it. A success counts `counter` (default `sent`); a synchronous throw or a
   * rejected promise counts `send_errors`. Returns false when the send threw. For control traffic
   * whose loss the protocol tolerates anyway (probes, gossip, pings, introductions).
   */
  protected sendControl(to: unknown, data: Uint8Array, counter = 'sent', tag: number = this.tag ?? 0): boolean {
    try {
      const r: unknown = (this.lower as Record<string, Fn>).send!(to, data, tag)
      if (r instanceof Promise) r.catch(() => this.count('send_errors'))
      this.count(counter)
      return true
    } catch {
      this.count('send_errors')
      return false
    }
  }

  /** Called bottom-up when the stack starts; layers below are already started. Override. */
  async start(ctx: LayerContext): Promise<void> {}

  /**
   * Called top-down when the stack stops; layers above are already stopped. Release every timer,
   * socket and handle. Not called if this layer's own `start` threw (clean up before throwing).
   * Override.
   */
  async stop(): Promise<void> {}

  /** This layer's statistics. Default: a copy of {@link counters}; override to add more. */
  stats(): Record<string, number> {
    return { ...this.counters }
  }

  /** The default for an `upper` slot nobody took (shared by all slots of this layer). */
  readonly #dropNoConsumer: Fn = () => {
    // Counted but not logged: most such slots are optional events (onConnected...) nobody wants.
    this.counters.dropped_no_consumer = (this.counters.dropped_no_consumer ?? 0) + 1
    return undefined
  }
}

/** The method name of a `bindTo` or `bindFrom` declaration (without the `?` of an optional one). */
export function bindingName(declared: string): string {
  return declared.endsWith('?') ? declared.slice(0, -1) : declared
}

/** Marks the placeholders (a property, not a WeakSet: a simulation makes thousands per second). */
const NOT_BUILT = Symbol('notBuilt')
const isNotBuilt = (f: Fn): boolean => (f as Fn & { [NOT_BUILT]?: true })[NOT_BUILT] === true

/** Placeholder for a `lower` binding before the stack is built. */
function notBuilt(layer: Protocol<any>, binding: string): Fn {
  const f: Fn = () => {
    throw new DeccomError(
      ErrorCode.STACK_STATE,
      `Layer "${layer.name}" called "${binding}" before its stack was built. ` +
        'Put the layer in a Stack (or Node) and build/start it before use.',
      { details: { layer: layer.name, binding } },
    )
  }
  ;(f as Fn & { [NOT_BUILT]?: true })[NOT_BUILT] = true
  return f
}

/** A decorator that is also callable directly: `bindTo('a')(MyClass)`. */
export type DeclarationDecorator = (value: ProtocolClass, context?: ClassDecoratorContext) => void

/** Append names (deduplicated) to `cls[kind]`, always as a new own array: a parent's array is never mutated. */
function declare(cls: ProtocolClass, kind: DeclarationKind, names: readonly string[]): void {
  const current = (cls as unknown as typeof Protocol)[kind] ?? NONE
  const next = Object.freeze([...new Set([...current, ...names])])
  Object.defineProperty(cls, kind, { value: next, writable: true, configurable: true, enumerable: true })
}

function declarer(kind: DeclarationKind, names: string[]): DeclarationDecorator {
  for (const n of names) {
    if (typeof n !== 'string' || n === '') {
      throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${kind}(...) takes non-empty method names, got ${String(n)}`)
    }
  }
  return (value, context) => {
    if (context === undefined) return declare(value, kind, names)
    if (context.kind !== 'class') throw new TypeError(`@${kind}(...) decorates a class, not a ${context.kind}`)
    // Run after the class's own static fields are defined (they would otherwise overwrite us).
    context.addInitializer(function (this: unknown) {
      declare(this as ProtocolClass, kind, names)
    })
  }
}

/** Declare methods the class calls on lower layers. Class decorator or plain call `bindTo('a')(Cls)`. */
export function bindTo(...names: string[]): DeclarationDecorator {
  return declarer('bindTo', names)
}
/** Declare callbacks the class offers to lower layers. Class decorator or plain call. */
export function bindFrom(...names: string[]): DeclarationDecorator {
  return declarer('bindFrom', names)
}
/** Declare methods of the class that upper layers may bind to. Class decorator or plain call. */
export function provides(...names: string[]): DeclarationDecorator {
  return declarer('provides', names)
}
/** Declare callback slots the class calls upward. Class decorator or plain call. */
export function emits(...names: string[]): DeclarationDecorator {
  return declarer('emits', names)
}
/** Declare names that must exist below the class in any stack. Class decorator or plain call. */
export function requires(...names: string[]): DeclarationDecorator {
  return declarer('requires', names)
}
