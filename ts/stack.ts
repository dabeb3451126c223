/**
 * Building, validating and running a stack of layers (DESIGN.md principles 4, 7, 8).
 *
 * Layers are listed TOP first, bottom last, as users write them:
 * `new Stack([new KeepAlive(), new Kademlia(), new Noise(), new ReliableUdp(), udp])`.
 *
 * {@link Stack.build} resolves every declaration once, bottom-up, and throws a {@link StackError}
 * naming the layer, the binding and the layers searched when the stack cannot work. The result is
 * applied only when the whole stack is valid, so a failed build leaves the layers untouched.
 */
import { DeccomError, ErrorCode, StackError } from './errors'
import { type DeclarationKind, type Fn, type LayerContext, Protocol, bindingName } from './protocol'

/** One row of {@link Stack.describe}: which layer each binding of `layer` resolved to. */
export interface BindingDescription {
  /** The layer's (unique) name. */
  layer: string
  /** bindTo name → name of the layer providing it. */
  bindTo: Record<string, string>
  /** bindFrom name → name of the layer whose emitted slot it fills. */
  bindFrom: Record<string, string>
}

type State = 'new' | 'built' | 'starting' | 'started' | 'stopped'
type Declarations = Record<DeclarationKind, readonly string[]>
/** One assignment to perform when the plan is applied: `record[key] = fn`. */
type Wire = [record: Record<string, Fn>, key: string, fn: Fn]

/** Layers that belong to a built stack: their bindings are wired, so they cannot join another. */
const owned = new WeakSet<Protocol>()

/** A stack of layers: build once, start bottom-up, stop top-down. */
export class Stack {
  /** The layers, top (application side) first, bottom (transport) last. */
  readonly layers: readonly Protocol[]
  #state: State = 'new'
  #described: BindingDescription[] | undefined
  #started: Protocol[] = [] // in start order (bottom first)
  #starting: Promise<void> | undefined
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
   * Resolve and validate all bindings (see the rules in DESIGN.md principle 4), then wire them:
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
  async start(ctx: LayerContext): Promise<void> {
    if (this.#state === 'new') this.build()
    if (this.#state !== 'built') throw stateError('start', this.#state)
    this.#state = 'starting'
    this.#starting = this.#startLayers(ctx)
    return this.#starting
  }

  async #startLayers(ctx: LayerContext): Promise<void> {
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const layer = this.layers[i]
      try {
        await layer.start({ ...ctx, stack: this })
      } catch (err) {
        this.#state = 'stopped'
        await this.#stopLayers().catch(() => {})
        throw err
      }
      this.#started.push(layer)
    }
    this.#state = 'started'
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
    await this.#stopLayers()
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

  /** Who bound to whom, top layer first (for tests and debugging). Empty mappings before build. */
  describe(): BindingDescription[] {
    const rows = this.#described ?? this.layers.map((l) => ({ layer: l.name, bindTo: {}, bindFrom: {} }))
    return rows.map((r) => ({ layer: r.layer, bindTo: { ...r.bindTo }, bindFrom: { ...r.bindFrom } }))
  }

  /** Each layer's {@link Protocol.stats}, keyed by layer name. */
  stats(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {}
    for (const layer of this.layers) out[layer.name] = layer.stats()
    return out
  }
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
    if (!Array.isArray(list) || list.some((n) => typeof n !== 'string' || n === '' || n === '?' || (kind !== 'bindTo' && n.endsWith('?')))) {
      throw invalid(name, `Layer "${name}": static ${kind} must be an array of non-empty method names (a trailing "?" marks an optional bindTo only).`)
    }
    d[kind] = list
  }
  for (const kind of ['provides', 'bindFrom'] as const) {
    for (const n of d[kind]) {
      if (typeof (layer as unknown as Record<string, unknown>)[n] !== 'function') {
        throw invalid(name, `Layer "${name}" declares "${n}" in ${kind} but has no method "${n}". Implement it or remove it from ${kind}.`, n)
      }
    }
  }
  return d
}

/** An optional binding that no layer below provides. */
const absent: Fn = () => undefined

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
        wires.push([tables(layer).lower, n, absent])
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

    for (const n of decl[i].bindFrom) {
      const { found, searched } = searchBelow(i, (j) => has(j, 'emits', n))
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
