/**
 * Building, validating and running a stack of layers.
 *
 * Layers are listed TOP first, bottom last, as users write them:
 * `new Stack([new KeepAlive(), new Kademlia(), new Noise(), new ReliableUdp(), udp])`.
 *
 * {@link Stack.build} resolves every declaration once, bottom-up, and throws a {@link StackError}
 * naming the layer, the binding and the layers searched when the stack cannot work. The result is
 * applied only when the whole stack is valid, so a failed build leaves the layers untouched.
 */
import { DeccomError, ErrorCode, StackError } from './errors'
import { type DeclarationKind, type Fn, type LayerContext, type LayerDescription, type NativeCapable, type NativeLaneUser, type NativeResponder, type NativeRole, absentBinding } from './layer-types'
import { realClock } from './clock'
import { LogGroup } from './log'
import { type LayerRandom, cryptoRandom } from './layer-random'
import { Protocol, bindingName, setLayerLog } from './protocol'

/** What {@link Stack.describe} prints for an optional binding nobody below offers. */
const ABSENT = 'absent'

type BindingDescription = Omit<LayerDescription, 'native' | 'tag'>

type State = 'new' | 'built' | 'starting' | 'started' | 'stopped'
type Declarations = Record<DeclarationKind, readonly string[]>
/** One assignment to perform when the plan is applied: `record[key] = fn`. */
type Wire = [record: Record<string, Fn>, key: string, fn: Fn]

/** Layers that belong to a built stack: their bindings are wired, so they cannot join another. */
const owned = new WeakSet<Protocol>()

/**
 * What {@link Stack.start} takes: a {@link LayerContext} whose `clock` may be left out (default
 * {@link realClock}) and whose `log`, if any, is not used: the Stack gives each layer its own
 * `ctx.log` (namespace `deccom:<layer>`, lines tagged with the first 8 hex digits of
 * `identity.idHex` when there is one, rate-limited on `clock`; see `log.ts`).
 */
export type StackContext = Omit<LayerContext, 'log' | 'clock' | 'random'> & {
  /** The clock every layer runs on (default {@link realClock}). */
  readonly clock?: LayerContext['clock']
  /** Ignored: each layer gets its own `ctx.log`. */
  readonly log?: unknown
  /** Each layer gets a fork of it as `ctx.random` (default: the OS generator). */
  readonly random?: LayerRandom
}

/** A stack of layers: build once, start bottom-up, stop top-down. */
export class Stack {
  /** The layers, top (application side) first, bottom (transport) last. */
  readonly layers: readonly Protocol[]
  #state: State = 'new'
  #described: BindingDescription[] | undefined
  #started: Protocol[] = [] // in start order (bottom first)
  /** Layers running in a native socket's I/O thread, the socket included (see {@link #fuse}). */
  readonly #native = new Set<Protocol>()
  #starting: Promise<void> | undefined
  /** The layers' debug loggers (created at start, closed at stop). */
  #logs: LogGroup | undefined
  #stopping: Promise<void> | undefined

  /** @param layers top first, bottom last. Validation happens in {@link build}. */
  constructor(layers: Protocol[]) {
    if (!Array.isArray(layers)) {
      throw new StackError(ErrorCode.STACK_INVALID, 'new Stack(layers) takes an array of layers, top first.', {
        layer: '',
      })
    }
    this.layers = Object.freeze([...layers])
  }

  /**
   * Resolve and validate all bindings (see the rules in `protocol.ts`), then wire them:
   * afterwards every `lower.x` / `upper.y` is a plain bound function. Repeated layer names are
   * renamed `name#2`, `name#3`...
   * @throws StackError BINDING_MISSING, BINDING_TAKEN, REQUIREMENT_MISSING, TAG_CONFLICT, STACK_INVALID
   * @throws DeccomError STACK_STATE if already built
   */
  build(): void {
    if (this.#state !== 'new') throw stateError('build', this.#state)
    const { names, wires, described } = plan(this.layers)
    this.layers.forEach((layer, i) => {
      if (layer.name !== names[i]) Object.defineProperty(layer, 'name', { value: names[i], configurable: true })
      owned.add(layer)
    })
    for (const [record, key, fn] of wires) record[key] = fn
    this.#described = described
    this.#state = 'built'
  }

  /**
   * Start the layers bottom-up (building first if needed), each awaited before the next.
   * If a layer's start throws, the layers already started are stopped top-down (their stop errors
   * are ignored), the stack becomes stopped, and the original error is rethrown.
   * @throws DeccomError STACK_STATE if already started or stopped
   */
  async start(ctx: StackContext): Promise<void> {
    if (this.#state === 'new') this.build()
    if (this.#state !== 'built') throw stateError('start', this.#state)
    this.#state = 'starting'
    this.#starting = this.#startLayers(ctx)
    return this.#starting
  }

  async #startLayers(ctx: StackContext): Promise<void> {
    const clock = ctx.clock ?? realClock
    const logs = (this.#logs = new LogGroup(shortId(ctx.identity), clock))
    const random = ctx.random ?? cryptoRandom
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const layer = this.layers[i]
      try {
        if (roleOf(layer) === 'endpoint') this.#fuse(i)
        const log = logs.layer(layer.name)
        setLayerLog(layer, log)
        await layer.start({ ...ctx, clock, log, random: random.fork() })
        log('started')
      } catch (err) {
        this.#state = 'stopped'
        await this.#stopLayers().catch(() => {})
        logs.layer(layer.name)('start failed: %s', (err as Error)?.message ?? err)
        logs.close()
        throw err
      }
      this.#started.push(layer)
    }
    this.#offerResponders()
    this.#offerLanes()
    this.#state = 'started'
  }

  /** Offers each {@link NativeLaneUser} the layer just below it, when it sends through it and receives from it. */
  #offerLanes(): void {
    const d = this.#described
    const layers = this.layers
    if (!d) return
    for (let i = 0; i + 1 < layers.length; i++) {
      const layer = layers[i] as Protocol & Partial<NativeLaneUser>
      if (typeof layer.attachNativeLane !== 'function') continue
      const below = layers[i + 1]
      if (d[i].bindTo.send !== below.name || d[i].bindFrom.onMessage !== below.name) continue
      try {
        if (layer.attachNativeLane(below)) this.#logs?.layer(layer.name)('runs in the native delivery lane of %s', below.name)
      } catch (e) {
        this.#logs?.layer(layer.name)('native delivery lane declined: %s', (e as Error)?.message ?? e)
      }
    }
  }

  /** Lets each {@link NativeResponder} whose datagram path is plain attach the socket's responder. */
  #offerResponders(): void {
    const d = this.#described
    const layers = this.layers
    if (!d) return
    for (let i = 0; i + 2 < layers.length; i++) {
      const layer = layers[i] as Protocol & Partial<NativeResponder>
      if (typeof layer.attachNativeResponder !== 'function') continue
      const via = layers[i + 1]
      const socket = layers[i + 2]
      if (roleOf(socket) !== 'socket' || this.#native.has(socket)) continue
      if (d[i].bindTo.send !== socket.name || d[i].bindFrom.onMessage !== via.name || d[i + 1].bindFrom.onMessage !== socket.name) continue
      // An offer that fails leaves the layer answering in JavaScript: it never fails the start.
      let attached = false
      try {
        attached = layer.attachNativeResponder(via, socket)
      } catch (e) {
        this.#logs?.layer(layer.name)('native answering declined: %s', (e as Error)?.message ?? e)
      }
      if (attached) this.#logs?.layer(layer.name)('%s answers requests natively', socket.name)
    }
  }

  /**
   * Native fusion (see {@link NativeRole}): decides whether the `'endpoint'` layer at index `i` and
   * the `'stage'` layers between it and a `'socket'` below run inside the socket's I/O thread, and
   * if so tells each of them, bottom-up. Every layer of the run must pass datagrams (`send`) to the
   * very next one, and each must agree (`canRunNative`); otherwise nothing changes and the run
   * stays JavaScript-driven.
   */
  #fuse(i: number): void {
    const layers = this.layers
    const run: number[] = [i] // endpoint first, then the stages top-down
    let socket = -1
    for (let j = i + 1; j < layers.length; j++) {
      const role = roleOf(layers[j])
      if (role === 'socket') {
        socket = j
        break
      }
      if (role !== 'stage' || this.#native.has(layers[j])) return
      run.push(j)
    }
    if (socket < 0) return
    for (const k of run) {
      if (this.#described?.[k].bindTo.send !== layers[k + 1].name) return
    }
    const accepted: Protocol[] = []
    for (let r = run.length - 1; r >= 0; r--) {
      const layer = layers[run[r]] as Protocol & Partial<NativeCapable>
      if (typeof layer.canRunNative !== 'function' || typeof layer.enableNative !== 'function') return
      if (!layer.canRunNative(accepted.slice())) return
      accepted.push(layer)
    }
    for (const layer of accepted) {
      ;(layer as Protocol & NativeCapable).enableNative(layers[socket])
      this.#native.add(layer)
      this.#logs?.layer(layer.name)('runs natively in the I/O thread of %s', layers[socket].name)
    }
    this.#native.add(layers[socket])
  }

  /** True when `layer` runs inside a native socket's I/O thread (decided at {@link start}). */
  isNative(layer: Protocol): boolean {
    return this.#native.has(layer)
  }

  /**
   * Stop the started layers top-down. Every layer's stop is attempted even if one throws; the
   * first error is rethrown after all. Idempotent: later calls return the same promise. A stop
   * during start waits for the start to finish first. A stopped stack cannot be started again.
   */
  stop(): Promise<void> {
    return (this.#stopping ??= this.#stop())
  }

  async #stop(): Promise<void> {
    if (this.#starting) await this.#starting.catch(() => {})
    this.#state = 'stopped'
    try {
      await this.#stopLayers()
    } finally {
      this.#logs?.close()
    }
  }

  /** Stop every started layer, last started first; throw the first error after trying them all. */
  async #stopLayers(): Promise<void> {
    let first: { err: unknown } | undefined
    for (let layer = this.#started.pop(); layer; layer = this.#started.pop()) {
      try {
        await layer.stop()
      } catch (err) {
        first ??= { err }
      }
    }
    if (first) throw first.err
  }

  /** The nearest layer from the top that is an instance of `cls`, or undefined. */
  find<T extends Protocol>(cls: abstract new (...a: any[]) => T): T | undefined {
    return this.layers.find((l): l is T => l instanceof cls)
  }

  /** The layer a `bindTo` binding of `layer` resolved to (after build), or undefined. */
  providerOf(layer: Protocol, binding: string): Protocol | undefined {
    const row = this.#described?.find((r) => r.layer === layer.name)
    const name = row?.bindTo[binding]
    return name === undefined ? undefined : this.layers.find((l) => l.name === name)
  }

  /**
   * The topmost layer that declares `name` in its `provides` (e.g. `findPeer`: the discovery
   * layer a Node asks), or undefined.
   */
  provider(name: string): Protocol | undefined {
    return this.layers.find((l) => ((l.constructor as typeof Protocol).provides ?? []).includes(name))
  }

  /**
   * Every layer, top first: its tag, where each `bindTo` resolved (the providing layer's name, or
   * `"absent"` for an optional binding nobody below provides), which layer's slot each `bindFrom`
   * fills, and whether it runs natively (known after {@link start}). Empty mappings before build.
   * `String(stack)` prints the same as text.
   */
  describe(): LayerDescription[] {
    const rows = this.#described ?? this.layers.map((l) => ({ layer: l.name, bindTo: {}, bindFrom: {} }))
    return rows.map((r, i) => ({
      layer: r.layer,
      tag: this.layers[i].tag,
      bindTo: { ...r.bindTo },
      bindFrom: { ...r.bindFrom },
      native: this.#native.has(this.layers[i]),
    }))
  }

  /**
   * {@link describe} as text, one line per layer, top first:
   * `reliable-udp [tag 2, native]  bindTo: send→noise, remotePeer→noise  bindFrom: onMessage←noise`
   */
  toString(): string {
    const list = (m: Record<string, string>, arrow: string) =>
      Object.entries(m)
        .map(([k, v]) => (v === ABSENT ? `${k} (absent)` : `${k}${arrow}${v}`))
        .join(', ')
    return this.describe()
      .map((d) => {
        const flags = [d.tag === undefined ? '' : `tag ${d.tag}`, d.native ? 'native' : ''].filter(Boolean).join(', ')
        let line = flags ? `${d.layer} [${flags}]` : d.layer
        if (Object.keys(d.bindTo).length) line += `  bindTo: ${list(d.bindTo, '→')}`
        if (Object.keys(d.bindFrom).length) line += `  bindFrom: ${list(d.bindFrom, '←')}`
        return line
      })
      .join('\n')
  }

  /** Each layer's {@link Protocol.stats}, keyed by layer name. */
  stats(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {}
    for (const layer of this.layers) out[layer.name] = layer.stats()
    return out
  }
}

/** The first 8 hex digits of the node id in a context's identity (`idHex`), or ''. */
function shortId(identity: unknown): string {
  const hex = (identity as { idHex?: unknown } | null | undefined)?.idHex
  return typeof hex === 'string' ? hex.slice(0, 8) : ''
}

function stateError(op: string, state: State): DeccomError {
  const why = state === 'stopped' ? 'it has been stopped; create a new stack (with new layer instances)' : `it is already ${state}`
  return new DeccomError(ErrorCode.STACK_STATE, `Cannot ${op} the stack: ${why}.`, { details: { op, state } })
}

/** Access to a layer's protected binding tables; only the Stack writes them. */
function tables(layer: Protocol): { lower: Record<string, Fn>; upper: Record<string, Fn> } {
  return layer as unknown as { lower: Record<string, Fn>; upper: Record<string, Fn> }
}

const KINDS: readonly DeclarationKind[] = ['bindTo', 'bindFrom', 'provides', 'emits', 'requires']

/** Read and check a layer's declarations (the static arrays of its class). */
function declarationsOf(layer: Protocol, name: string): Declarations {
  const cls = layer.constructor as typeof Protocol
  const d = {} as Declarations
  for (const kind of KINDS) {
    const list = cls[kind] ?? []
    const optionalAllowed = kind === 'bindTo' || kind === 'bindFrom'
    if (!Array.isArray(list) || list.some((n) => typeof n !== 'string' || n === '' || n === '?' || (!optionalAllowed && n.endsWith('?')))) {
      throw invalid(name, `Layer "${name}": static ${kind} must be an array of non-empty method names (a trailing "?" marks an optional bindTo or bindFrom only).`)
    }
    d[kind] = list
  }
  for (const kind of ['provides', 'bindFrom'] as const) {
    for (const n of d[kind].map(bindingName)) {
      if (typeof (layer as unknown as Record<string, unknown>)[n] !== 'function') {
        throw invalid(name, `Layer "${name}" declares "${n}" in ${kind} but has no method "${n}". Implement it or remove it from ${kind}.`, n)
      }
    }
  }
  return d
}

/** The native-fusion role a layer's class declares (see {@link NativeRole}). */
function roleOf(layer: Protocol): NativeRole | undefined {
  return (layer.constructor as typeof Protocol).nativeRole
}

function invalid(layer: string, message: string, binding = ''): StackError {
  return new StackError(ErrorCode.STACK_INVALID, message, { layer, binding })
}

/** "a, b, c", or an explanation when nothing was searched. */
function searchedText(names: string[]): string {
  return names.length ? `searched: ${names.join(', ')}` : 'there are no layers below it'
}

/** Compute unique names, validate the stack and resolve every binding, without changing anything. */
function plan(layers: readonly Protocol[]): { names: string[]; wires: Wire[]; described: BindingDescription[] } {
  if (layers.length === 0) {
    throw invalid('', 'A stack needs at least one layer (normally a transport at the bottom).')
  }

  // Instances and names.
  const names: string[] = []
  const used = new Set<string>()
  layers.forEach((layer, i) => {
    if (!(layer instanceof Protocol)) throw invalid('', `Stack entry ${i} (top = 0) is not a Protocol instance (got ${String(layer)}).`)
    const base = layer.name
    if (typeof base !== 'string' || base === '') throw invalid('', `Stack entry ${i} (top = 0, class ${layer.constructor.name}) has no name.`)
    const j = layers.indexOf(layer)
    if (j !== i) {
      throw invalid(base, `The same "${base}" layer instance appears twice in the stack (entries ${j} and ${i}, top = 0). Create a new instance for each position.`)
    }
    if (owned.has(layer)) {
      throw invalid(base, `Layer "${base}" already belongs to another stack; a layer instance holds its bindings and cannot be shared. Create a new instance.`)
    }
    let name = base
    for (let k = 2; used.has(name); k++) name = `${base}#${k}`
    used.add(name)
    names.push(name)
  })
  const decl = layers.map((layer, i) => declarationsOf(layer, names[i]))

  // Tags.
  const tagOwner = new Map<number, string>()
  layers.forEach((layer, i) => {
    const tag = layer.tag
    if (tag === undefined) return
    if (!Number.isInteger(tag) || tag < 1 || tag > 255) {
      throw invalid(names[i], `Layer "${names[i]}" has tag ${String(tag)}; a tag must be an integer 1..255 (0 is reserved for application data) or undefined.`)
    }
    const other = tagOwner.get(tag)
    if (other !== undefined) {
      throw new StackError(
        ErrorCode.TAG_CONFLICT,
        `Layers "${other}" and "${names[i]}" both use tag ${tag}. Tags route each layer's control datagrams and must be unique within a stack: give one of them another tag.`,
        { layer: names[i], details: { tag, other } },
      )
    }
    tagOwner.set(tag, names[i])
  })

  // Bindings, bottom-up.
  const wires: Wire[] = []
  const described: BindingDescription[] = names.map((layer) => ({ layer, bindTo: {}, bindFrom: {} }))
  const takenBy = new Map<string, string>() // `${emitterIndex}/${slot}` → taker name
  const has = (i: number, kind: DeclarationKind, n: string) => decl[i][kind].includes(n)
  /** Index of the nearest layer below `i` satisfying `test`, and the names searched to find it. */
  const searchBelow = (i: number, test: (j: number) => boolean) => {
    const searched: string[] = []
    for (let j = i + 1; j < layers.length; j++) {
      searched.push(names[j])
      if (test(j)) return { found: j, searched }
    }
    return { found: -1, searched }
  }
  /** A hint when the name exists, but of the wrong kind below or on a layer above. */
  const hint = (i: number, n: string, wanted: 'provides' | 'emits') => {
    const other = wanted === 'provides' ? 'emits' : 'provides'
    for (let j = i + 1; j < layers.length; j++) {
      if (has(j, other, n)) {
        return wanted === 'provides'
          ? ` Note: "${names[j]}" emits "${n}" as an event; to receive it, declare it in bindFrom instead.`
          : ` Note: "${names[j]}" provides "${n}" as a method; to call it, declare it in bindTo instead.`
      }
    }
    for (let j = 0; j < i; j++) {
      if (has(j, wanted, n)) return ` Note: "${names[j]}" ${wanted} "${n}" but sits above "${names[i]}"; bindings only reach down, so move it below.`
    }
    return ''
  }

  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = layers[i]
    const name = names[i]

    for (const declared of decl[i].bindTo) {
      const n = bindingName(declared)
      const { found, searched } = searchBelow(i, (j) => has(j, 'provides', n))
      if (found < 0 && declared !== n) {
        // Optional and absent: calls return undefined.
        wires.push([tables(layer).lower, n, absentBinding])
        described[i].bindTo[n] = ABSENT
        continue
      }
      if (found < 0) {
        throw new StackError(
          ErrorCode.BINDING_MISSING,
          `Layer "${name}" binds to "${n}" (bindTo), but no layer below provides it (${searchedText(searched)}). ` +
            `Add a layer that provides "${n}" below "${name}", or remove the binding.${hint(i, n, 'provides')}`,
          { layer: name, binding: n, searched },
        )
      }
      const provider = layers[found] as unknown as Record<string, Fn>
      wires.push([tables(layer).lower, n, provider[n].bind(provider)])
      described[i].bindTo[n] = names[found]
    }

    for (const declared of decl[i].bindFrom) {
      const n = bindingName(declared)
      const { found, searched } = searchBelow(i, (j) => has(j, 'emits', n))
      if (found < 0 && declared !== n) {
        // Optional and absent: nobody will call it.
        described[i].bindFrom[n] = ABSENT
        continue
      }
      if (found < 0) {
        throw new StackError(
          ErrorCode.BINDING_MISSING,
          `Layer "${name}" binds from "${n}" (bindFrom), but no layer below emits it (${searchedText(searched)}). ` +
            `Add a layer that emits "${n}" below "${name}", or remove the binding.${hint(i, n, 'emits')}`,
          { layer: name, binding: n, searched },
        )
      }
      const key = `${found}/${n}`
      const taker = takenBy.get(key)
      if (taker !== undefined) {
        throw new StackError(
          ErrorCode.BINDING_TAKEN,
          `Layer "${name}" binds from "${n}" (bindFrom), but the "${n}" slot of "${names[found]}", the nearest layer below that emits it, ` +
            `is already taken by "${taker}". A slot has exactly one consumer: to pass "${n}" on, "${taker}" must re-emit it ` +
            `(declare "${n}" in its emits and call this.upper.${n}), or "${name}" must not bind from it.`,
          { layer: name, binding: n, searched, details: { emitter: names[found], takenBy: taker } },
        )
      }
      takenBy.set(key, name)
      const self = layer as unknown as Record<string, Fn>
      wires.push([tables(layers[found]).upper, n, self[n].bind(self)])
      described[i].bindFrom[n] = names[found]
    }

    for (const n of decl[i].requires) {
      const { found, searched } = searchBelow(i, (j) => has(j, 'provides', n) || has(j, 'emits', n))
      if (found < 0) {
        throw new StackError(
          ErrorCode.REQUIREMENT_MISSING,
          `Layer "${name}" requires "${n}", but no layer below provides or emits it (${searchedText(searched)}). ` +
            `Add a layer providing "${n}" below "${name}".`,
          { layer: name, binding: n, searched },
        )
      }
    }
  }
  return { names, wires, described }
}
