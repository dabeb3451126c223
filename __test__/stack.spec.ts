import test from 'ava'
import { types } from 'node:util'
import ts from 'typescript'

import {
  DeccomError,
  ErrorCode,
  type Fn,
  Protocol,
  Stack,
  StackError,
  bindFrom,
  bindTo,
  emits,
  fromNative,
  provides,
  requires,
} from '../dist/index.js'

// ---------------------------------------------------------------------------------------------
// Test layers modelling the real ones. Data is a string so the path it took is visible:
// a datagram "x" arriving at Udp reaches Kademlia as "noise(rudp(x))".
// ---------------------------------------------------------------------------------------------

/** The protected binding tables of a layer (tests only). */
const tables = (p: Protocol) => p as unknown as { lower: Record<string, Fn>; upper: Record<string, Fn> }
const ctx = { identity: undefined, log: () => {} }

class Udp extends Protocol {
  static override provides = ['sendDatagram']
  static override emits = ['onDatagram']
  readonly name = 'udp'
  sent: Array<[string, string]> = []
  sendDatagram(to: string, data: string): string {
    this.sent.push([to, data])
    this.count('sent')
    return 'udp'
  }
  /** Simulates a datagram arriving from the socket. */
  receive(from: string, data: string): unknown {
    this.count('received')
    return this.upper.onDatagram(from, data)
  }
}

class ReliableUdp extends Protocol {
  static override bindTo = ['sendDatagram']
  static override bindFrom = ['onDatagram']
  static override provides = ['sendMessage']
  static override emits = ['onMessage']
  readonly name = 'reliable-udp'
  override readonly tag = 1
  sendMessage(to: string, data: string): string {
    return 'rudp:' + this.lower.sendDatagram(to, data)
  }
  onDatagram(from: string, data: string): void {
    this.upper.onMessage(from, `rudp(${data})`)
  }
}

class Noise extends Protocol {
  static override bindTo = ['sendMessage']
  static override bindFrom = ['onMessage']
  static override provides = ['sendMessage', 'approveConnection']
  static override emits = ['onMessage']
  readonly name = 'noise'
  override readonly tag = 2
  sendMessage(to: string, data: string): string {
    return 'noise:' + this.lower.sendMessage(to, data)
  }
  approveConnection(peer: string): boolean {
    return peer !== 'mallory'
  }
  onMessage(from: string, data: string): void {
    this.upper.onMessage(from, `noise(${data})`)
  }
}

class Kademlia extends Protocol {
  static override bindTo = ['sendMessage', 'approveConnection', 'sendDatagram']
  static override bindFrom = ['onMessage']
  static override emits = ['connected']
  readonly name = 'kademlia'
  override readonly tag = 3
  received: string[] = []
  onMessage(from: string, data: string): void {
    this.received.push(data)
    if (this.lower.approveConnection(from)) this.upper.connected(from)
  }
  send(to: string, data: string): string {
    return this.lower.sendMessage(to, data)
  }
  ping(to: string): string {
    return this.lower.sendDatagram(to, 'ping')
  }
}

/** The application on top: takes Kademlia's `connected` event. */
class App extends Protocol {
  static override bindFrom = ['connected']
  readonly name = 'app'
  peers: string[] = []
  connected(peer: string): void {
    this.peers.push(peer)
  }
}

const goodLayers = () => {
  const l = { app: new App(), kad: new Kademlia(), noise: new Noise(), rudp: new ReliableUdp(), udp: new Udp() }
  return { ...l, stack: new Stack([l.app, l.kad, l.noise, l.rudp, l.udp]) }
}

/** Build and return the StackError it throws. */
const buildError = (t: import('ava').ExecutionContext, layers: Protocol[]): StackError => {
  const err = t.throws(() => new Stack(layers).build(), { instanceOf: StackError })
  t.true(err instanceof DeccomError)
  return err as StackError
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

test('a good stack binds nearest-first, and past intermediate layers when needed', (t) => {
  const { stack } = goodLayers()
  stack.build()
  t.deepEqual(stack.describe(), [
    { layer: 'app', tag: undefined, bindTo: {}, bindFrom: { connected: 'kademlia' }, native: false },
    {
      layer: 'kademlia',
      tag: 3,
      bindTo: { sendMessage: 'noise', approveConnection: 'noise', sendDatagram: 'udp' },
      bindFrom: { onMessage: 'noise' },
      native: false,
    },
    { layer: 'noise', tag: 2, bindTo: { sendMessage: 'reliable-udp' }, bindFrom: { onMessage: 'reliable-udp' }, native: false },
    { layer: 'reliable-udp', tag: 1, bindTo: { sendDatagram: 'udp' }, bindFrom: { onDatagram: 'udp' }, native: false },
    { layer: 'udp', tag: undefined, bindTo: {}, bindFrom: {}, native: false },
  ])
})

test('calls go down to the nearest provider; sendDatagram reaches udp past noise and reliable-udp', (t) => {
  const { stack, kad, udp } = goodLayers()
  stack.build()
  // sendMessage resolves to Noise (nearest), not ReliableUdp; Noise forwards to ReliableUdp.
  t.is(kad.send('bob', 'hello'), 'noise:rudp:udp')
  t.is(kad.ping('bob'), 'udp')
  t.deepEqual(udp.sent, [['bob', 'hello'], ['bob', 'ping']])
  t.is(tables(kad).lower.approveConnection('mallory'), false)
})

test("events flow up: udp's onDatagram reaches reliable-udp, then noise, kademlia and the app", (t) => {
  const { stack, app, kad, udp, rudp } = goodLayers()
  stack.build()
  let seen: unknown
  rudp.onDatagram = function (this: ReliableUdp, from: string, data: string) {
    seen = this // patched after build: the slot still holds the original bound method
    ReliableUdp.prototype.onDatagram.call(this, from, data)
  }
  udp.receive('bob', 'x')
  t.is(seen, undefined, 'bindings are resolved once, at build time')
  t.deepEqual(kad.received, ['noise(rudp(x))'])
  t.deepEqual(app.peers, ['bob'])
  udp.receive('mallory', 'y')
  t.deepEqual(kad.received, ['noise(rudp(x))', 'noise(rudp(y))'])
  t.deepEqual(app.peers, ['bob'], 'kademlia asked noise.approveConnection')
  t.false('dropped_no_consumer' in udp.counters)
})

test('after build a binding is a plain, stable function reference (no lookup, no proxy)', (t) => {
  const { stack, kad, udp } = goodLayers()
  stack.build()
  const { lower, upper } = tables(kad)
  t.false(types.isProxy(lower))
  t.false(types.isProxy(upper))
  t.false(types.isProxy(tables(udp).upper))
  const desc = Object.getOwnPropertyDescriptor(lower, 'sendDatagram')
  t.is(typeof desc?.value, 'function', 'a data property, not a getter')
  const f = lower.sendDatagram
  t.is(f('a', '1'), 'udp')
  t.is(f('b', '2'), 'udp')
  t.is(lower.sendDatagram, f, 'same reference across calls')
  t.deepEqual(udp.sent, [['a', '1'], ['b', '2']], 'bound to the providing layer')
  t.is(udp.counters.sent, 2)
})

test('many upper layers may bind to the same provided method', (t) => {
  class Pinger extends Protocol {
    static override bindTo = ['sendDatagram']
    readonly name = 'pinger'
  }
  const udp = new Udp()
  const stack = new Stack([new Pinger(), new Pinger(), new ReliableUdp(), udp])
  stack.build()
  t.deepEqual(
    stack.describe().map((d) => [d.layer, d.bindTo.sendDatagram]),
    [['pinger', 'udp'], ['pinger#2', 'udp'], ['reliable-udp', 'udp'], ['udp', undefined]],
  )
})

test('an optional binding ("name?") binds to the nearest provider below, or returns undefined when none', (t) => {
  class Reader extends Protocol {
    static override bindTo = ['sendDatagram', 'externalAddress?']
    readonly name = 'reader'
    external(): unknown {
      return this.lower.externalAddress()
    }
  }
  class Observer extends Protocol {
    static override provides = ['externalAddress']
    readonly name = 'observer'
    constructor(readonly value: string) {
      super()
    }
    externalAddress(): string {
      return this.value
    }
  }
  // Absent: the stack builds and the call returns undefined.
  const alone = new Reader()
  new Stack([alone, new Udp()]).build()
  t.is(alone.external(), undefined)
  // Present: nearest first, past layers that do not provide it.
  const reader = new Reader()
  const stack = new Stack([reader, new Observer('near'), new ReliableUdp(), new Observer('far'), new Udp()])
  stack.build()
  t.is(reader.external(), 'near')
  t.is(stack.describe()[0].bindTo.externalAddress, 'observer')
  // "?" is for bindTo and bindFrom only.
  class Bad extends Protocol {
    static override provides = ['x?']
    readonly name = 'bad'
    'x?'(): void {}
  }
  const err = t.throws(() => new Stack([new Bad(), new Udp()]).build(), { instanceOf: StackError })
  t.is(err?.code, ErrorCode.STACK_INVALID)
})

// ---------------------------------------------------------------------------------------------
// Validation errors
// ---------------------------------------------------------------------------------------------

test('an impossible stack: nothing provides approveConnection', (t) => {
  const kad = new Kademlia()
  const err = buildError(t, [kad, new ReliableUdp(), new Udp()])
  t.is(err.code, ErrorCode.BINDING_MISSING)
  t.is(err.code, 'ERR_DECCOM_BINDING_MISSING')
  t.is(err.name, 'StackError')
  t.is(err.layer, 'kademlia')
  t.is(err.binding, 'approveConnection')
  t.deepEqual(err.searched, ['reliable-udp', 'udp'])
  t.is(
    err.message,
    'Layer "kademlia" binds to "approveConnection" (bindTo), but no layer below provides it ' +
      '(searched: reliable-udp, udp). Add a layer that provides "approveConnection" below "kademlia", or remove the binding.',
  )
  // A failed build changes nothing: the placeholder still reports the unbuilt stack.
  const e2 = t.throws(() => kad.send('bob', 'x'), { instanceOf: DeccomError })
  t.is(e2?.code, ErrorCode.STACK_STATE)
})

test('binding missing: bottom layer, bindFrom, and hints for the wrong kind or a layer above', (t) => {
  const bottom = buildError(t, [new ReliableUdp()])
  t.is(bottom.binding, 'sendDatagram')
  t.deepEqual(bottom.searched, [])
  t.regex(bottom.message, /there are no layers below it/)

  class Listener extends Protocol {
    static override bindFrom = ['onPacket']
    readonly name = 'listener'
    onPacket() {}
  }
  const from = buildError(t, [new Listener(), new Udp()])
  t.is(from.code, ErrorCode.BINDING_MISSING)
  t.is(from.layer, 'listener')
  t.is(from.binding, 'onPacket')
  t.deepEqual(from.searched, ['udp'])
  t.regex(from.message, /binds from "onPacket" \(bindFrom\), but no layer below emits it/)

  class Confused extends Protocol {
    static override bindTo = ['onDatagram']
    readonly name = 'confused'
  }
  t.regex(buildError(t, [new Confused(), new Udp()]).message, /"udp" emits "onDatagram".*bindFrom instead/)
  // Wrong order: udp above reliable-udp.
  const order = buildError(t, [new Udp(), new ReliableUdp()])
  t.is(order.layer, 'reliable-udp')
  t.regex(order.message, /"udp" provides "sendDatagram" but sits above "reliable-udp"/)
})

test('a doubly-taken slot throws BINDING_TAKEN naming both layers', (t) => {
  // "sink" takes reliable-udp's onMessage and does not re-emit it, so kademlia cannot have it.
  class Sink extends Protocol {
    static override bindFrom = ['onMessage']
    static override provides = ['approveConnection']
    readonly name = 'sink'
    onMessage() {}
    approveConnection() {
      return true
    }
  }
  const err = buildError(t, [new Kademlia(), new Sink(), new ReliableUdp(), new Udp()])
  t.is(err.code, ErrorCode.BINDING_TAKEN)
  t.is(err.layer, 'kademlia')
  t.is(err.binding, 'onMessage')
  t.deepEqual(err.searched, ['sink', 'reliable-udp'])
  t.deepEqual(err.details, { emitter: 'reliable-udp', takenBy: 'sink' })
  t.regex(err.message, /"onMessage" slot of "reliable-udp".*already taken by "sink"/)
  t.regex(err.message, /"sink" must re-emit it/)
})

test('requires: satisfied by a provided method or an emitted slot below, else REQUIREMENT_MISSING', (t) => {
  class Needy extends Protocol {
    static override requires = ['sendDatagram', 'onMessage']
    readonly name = 'needy'
  }
  t.notThrows(() => new Stack([new Needy(), new ReliableUdp(), new Udp()]).build())

  @requires('nat')
  class NatUser extends Protocol {
    readonly name = 'nat-user'
  }
  const err = buildError(t, [new NatUser(), new ReliableUdp(), new Udp()])
  t.is(err.code, ErrorCode.REQUIREMENT_MISSING)
  t.is(err.layer, 'nat-user')
  t.is(err.binding, 'nat')
  t.deepEqual(err.searched, ['reliable-udp', 'udp'])
  // Requirements only look below.
  t.is(buildError(t, [new Udp(), new Needy()]).code, ErrorCode.REQUIREMENT_MISSING)
})

test('tags: conflicts and out-of-range values', (t) => {
  class Tagged extends Protocol {
    readonly name: string
    override readonly tag: number
    constructor(name: string, tag: number) {
      super()
      this.name = name
      this.tag = tag
    }
  }
  const conflict = buildError(t, [new Tagged('a', 7), new Tagged('b', 9), new Tagged('c', 7)])
  t.is(conflict.code, ErrorCode.TAG_CONFLICT)
  t.is(conflict.layer, 'c')
  t.regex(conflict.message, /"a" and "c" both use tag 7/)
  for (const bad of [0, 256, -1, 1.5, Number.NaN]) {
    const err = buildError(t, [new Tagged('x', bad)])
    t.is(err.code, ErrorCode.STACK_INVALID, `tag ${bad}`)
    t.is(err.layer, 'x')
  }
  t.notThrows(() => new Stack([new Tagged('lo', 1), new Tagged('hi', 255), new Udp()]).build())
})

test('invalid stacks: empty, instance reused, shared with another stack, missing methods', (t) => {
  t.is(buildError(t, []).code, ErrorCode.STACK_INVALID)

  const udp = new Udp()
  const twice = buildError(t, [udp, udp])
  t.is(twice.code, ErrorCode.STACK_INVALID)
  t.regex(twice.message, /appears twice/)

  new Stack([udp]).build()
  t.regex(buildError(t, [new ReliableUdp(), udp]).message, /already belongs to another stack/)

  class NoMethod extends Protocol {
    static override provides = ['sendMessage']
    readonly name = 'no-method'
  }
  const e1 = buildError(t, [new NoMethod()])
  t.is(e1.code, ErrorCode.STACK_INVALID)
  t.is(e1.layer, 'no-method')
  t.is(e1.binding, 'sendMessage')

  class NoCallback extends Protocol {
    static override bindFrom = ['onDatagram']
    readonly name = 'no-callback'
  }
  const e2 = buildError(t, [new NoCallback(), new Udp()])
  t.is(e2.code, ErrorCode.STACK_INVALID)
  t.regex(e2.message, /declares "onDatagram" in bindFrom but has no method "onDatagram"/)

  t.is(buildError(t, [{ name: 'fake' } as unknown as Protocol]).code, ErrorCode.STACK_INVALID)
})

test('duplicate names get #2, #3 suffixes', (t) => {
  class Filter extends Protocol {
    readonly name = 'filter'
  }
  const stack = new Stack([new Filter(), new Filter(), new Filter(), new Udp()])
  stack.build()
  t.deepEqual(stack.layers.map((l) => l.name), ['filter', 'filter#2', 'filter#3', 'udp'])
  t.deepEqual(Object.keys(stack.stats()), ['filter', 'filter#2', 'filter#3', 'udp'])
})

test('build twice throws STACK_STATE', (t) => {
  const { stack } = goodLayers()
  stack.build()
  const err = t.throws(() => stack.build(), { instanceOf: DeccomError })
  t.is(err?.code, ErrorCode.STACK_STATE)
  t.false(err instanceof StackError)
})

// ---------------------------------------------------------------------------------------------
// Default upper slots, stats, find
// ---------------------------------------------------------------------------------------------

test('an emitted slot nobody takes drops and counts on the emitting layer', (t) => {
  const udp = new Udp()
  t.is(udp.receive('bob', 'early'), undefined, 'before any stack')
  new Stack([udp]).build()
  t.is(udp.receive('bob', 'x'), undefined)
  t.is(udp.counters.dropped_no_consumer, 2)
  t.deepEqual(udp.stats(), { received: 2, dropped_no_consumer: 2 })

  // Kademlia emits `connected`, but no app is on top.
  const { kad, udp: u2 } = goodLayers()
  new Stack([kad, new Noise(), new ReliableUdp(), u2]).build()
  u2.receive('bob', 'x')
  t.deepEqual(kad.received, ['noise(rudp(x))'])
  t.is(kad.counters.dropped_no_consumer, 1)
})

test('stats() is per layer name; find() returns the nearest from the top', (t) => {
  const { stack, kad, noise, udp } = goodLayers()
  stack.build()
  kad.ping('bob')
  const stats = stack.stats()
  t.deepEqual(Object.keys(stats), ['app', 'kademlia', 'noise', 'reliable-udp', 'udp'])
  t.deepEqual(stats.udp, { sent: 1 })
  stats.udp.sent = 99
  t.is(udp.counters.sent, 1, 'stats are a copy')
  t.is(stack.find(Kademlia), kad)
  t.is(stack.find(Noise), noise)
  t.is(stack.find(Protocol)?.name, 'app')
  class Absent extends Protocol {
    readonly name = 'absent'
  }
  t.is(stack.find(Absent), undefined)
})

// ---------------------------------------------------------------------------------------------
// Decorators and plain-call declarations
// ---------------------------------------------------------------------------------------------

test('decorators declare bindings without touching the parent class', (t) => {
  @bindTo('sendDatagram')
  @bindFrom('onDatagram')
  @provides('sendMessage')
  @emits('onMessage')
  class DecoRudp extends Protocol {
    readonly name = 'deco-rudp'
    sendMessage(to: string, data: string) {
      return 'deco:' + this.lower.sendDatagram(to, data)
    }
    onDatagram(from: string, data: string) {
      this.upper.onMessage(from, data)
    }
  }
  t.deepEqual(DecoRudp.bindTo, ['sendDatagram'])
  t.deepEqual(DecoRudp.bindFrom, ['onDatagram'])
  t.deepEqual(DecoRudp.provides, ['sendMessage'])
  t.deepEqual(DecoRudp.emits, ['onMessage'])
  for (const k of ['bindTo', 'bindFrom', 'provides', 'emits', 'requires'] as const) t.deepEqual(Protocol[k], [], k)

  const kad = new Kademlia()
  const err = buildError(t, [kad, new DecoRudp(), new Udp()])
  t.is(err.binding, 'approveConnection', 'sendMessage resolved to the decorated layer first')
  const top = new Noise()
  const stack = new Stack([top, new DecoRudp(), new Udp()])
  stack.build()
  t.is(top.sendMessage('bob', 'x'), 'noise:deco:udp')

  // Subclass decorated: inherits and extends (deduplicated); the parent keeps its own arrays.
  @bindTo('sendMessage', 'findValue')
  class SubKad extends Kademlia {}
  t.deepEqual(SubKad.bindTo, ['sendMessage', 'approveConnection', 'sendDatagram', 'findValue'])
  t.deepEqual(Kademlia.bindTo, ['sendMessage', 'approveConnection', 'sendDatagram'])
  t.deepEqual(SubKad.bindFrom, ['onMessage'], 'undecorated lists are inherited')

  // A decorator plus the class's own static field: both count, whatever the field/decorator order.
  @bindTo('b')
  class Both extends Protocol {
    static override bindTo = ['a']
    readonly name = 'both'
  }
  t.deepEqual(Both.bindTo, ['a', 'b'])
})

test('decorator + static field also combine under the tsc emit used for dist/', (t) => {
  // tsc (unlike esbuild/tsx) calls class decorators BEFORE static fields are defined, so a
  // decorator writing the static directly would be overwritten by the field. Compile with tsc and run.
  const src = `
    import { Protocol, bindTo } from 'deccom-protocol'
    @bindTo('b') export class Both extends Protocol { static override bindTo = ['a']; readonly name = 'both' }`
  const { outputText } = ts.transpileModule(src, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, experimentalDecorators: false },
  })
  const mod = { exports: {} as { Both: typeof Protocol } }
  const req = () => ({ Protocol, bindTo })
  new Function('require', 'module', 'exports', outputText)(req, mod, mod.exports)
  t.deepEqual(mod.exports.Both.bindTo, ['a', 'b'])
})

test('plain-call form works for JS users and does not leak into the parent', (t) => {
  class Plain extends Protocol {
    readonly name = 'plain'
    onDatagram() {}
  }
  bindTo('sendDatagram', 'sendDatagram')(Plain)
  bindFrom('onDatagram')(Plain)
  bindTo('sendDatagram', 'extra')(Plain)
  t.deepEqual(Plain.bindTo, ['sendDatagram', 'extra'])
  t.deepEqual(Protocol.bindTo, [])
  t.true(Object.isFrozen(Plain.bindTo))

  class Child extends Plain {}
  bindTo('more')(Child)
  t.deepEqual(Child.bindTo, ['sendDatagram', 'extra', 'more'])
  t.deepEqual(Plain.bindTo, ['sendDatagram', 'extra'])

  const err = buildError(t, [new Plain(), new Udp()])
  t.is(err.binding, 'extra')

  t.throws(() => bindTo(''), { instanceOf: DeccomError })
})

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

class Rec extends Protocol {
  readonly name: string
  constructor(
    name: string,
    private readonly log: string[],
    private readonly fail: { start?: boolean; stop?: boolean } = {},
  ) {
    super()
    this.name = name
  }
  override async start(): Promise<void> {
    await Promise.resolve()
    this.log.push(`start ${this.name}`)
    if (this.fail.start) throw new Error(`start ${this.name} failed`)
  }
  override async stop(): Promise<void> {
    await Promise.resolve()
    this.log.push(`stop ${this.name}`)
    if (this.fail.stop) throw new Error(`stop ${this.name} failed`)
  }
}

test('start runs bottom-up, stop top-down; stop is idempotent', async (t) => {
  const log: string[] = []
  const stack = new Stack([new Rec('top', log), new Rec('mid', log), new Rec('bottom', log)])
  await stack.start(ctx) // builds implicitly
  t.deepEqual(log, ['start bottom', 'start mid', 'start top'])
  t.is((await t.throwsAsync(stack.start(ctx), { instanceOf: DeccomError }))?.code, ErrorCode.STACK_STATE)

  const p1 = stack.stop()
  const p2 = stack.stop()
  t.is(p1, p2)
  await p1
  await stack.stop()
  t.deepEqual(log.slice(3), ['stop top', 'stop mid', 'stop bottom'])

  const again = await t.throwsAsync(stack.start(ctx), { instanceOf: DeccomError })
  t.is(again?.code, ErrorCode.STACK_STATE)
  t.regex(again!.message, /stopped/)
})

test('a failing start stops the already-started layers (top-down) and rethrows', async (t) => {
  const log: string[] = []
  const stack = new Stack([
    new Rec('a', log),
    new Rec('b', log, { start: true }),
    new Rec('c', log),
    new Rec('d', log),
  ])
  const err = await t.throwsAsync(stack.start(ctx))
  t.is(err?.message, 'start b failed')
  t.deepEqual(log, ['start d', 'start c', 'start b', 'stop c', 'stop d'])
  await stack.stop()
  t.is(log.length, 5, 'nothing left to stop')
  t.is((await t.throwsAsync(stack.start(ctx)))?.message, 'Cannot start the stack: it has been stopped; create a new stack (with new layer instances).')
})

test('stop attempts every layer and rethrows the first error', async (t) => {
  const log: string[] = []
  const stack = new Stack([
    new Rec('a', log),
    new Rec('b', log, { stop: true }),
    new Rec('c', log, { stop: true }),
    new Rec('d', log),
  ])
  await stack.start(ctx)
  const err = await t.throwsAsync(stack.stop())
  t.is(err?.message, 'stop b failed')
  t.deepEqual(log.slice(4), ['stop a', 'stop b', 'stop c', 'stop d'])
})

test('stop during start waits for the start, then stops everything', async (t) => {
  const log: string[] = []
  const stack = new Stack([new Rec('a', log), new Rec('b', log)])
  const started = stack.start(ctx)
  const stopped = stack.stop()
  await started
  await stopped
  t.deepEqual(log, ['start b', 'start a', 'stop a', 'stop b'])
})

test('stop before start stops nothing and closes the stack', async (t) => {
  const log: string[] = []
  const stack = new Stack([new Rec('a', log)])
  await stack.stop()
  t.deepEqual(log, [])
  t.is((await t.throwsAsync(stack.start(ctx), { instanceOf: DeccomError }))?.code, ErrorCode.STACK_STATE)
})

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

test('ErrorCode is a frozen table of ERR_DECCOM_<KEY> values', (t) => {
  t.true(Object.isFrozen(ErrorCode))
  for (const [k, v] of Object.entries(ErrorCode)) t.is<string, string>(v, `ERR_DECCOM_${k}`)
  for (const k of ['NATIVE_MISSING', 'ADDRESS_IN_USE', 'RECORD_ID_MISMATCH', 'INVALID_ARGUMENT', 'STACK_STATE']) {
    t.true(k in ErrorCode, k)
  }
})

test('DeccomError carries code, message, cause and details', (t) => {
  const cause = new Error('low level')
  const e = new DeccomError(ErrorCode.CLOSED, 'node is closed', { cause, details: { port: 1 } })
  t.true(e instanceof Error)
  t.is(e.name, 'DeccomError')
  t.is(e.code, 'ERR_DECCOM_CLOSED')
  t.is(e.message, 'node is closed')
  t.is(e.cause, cause)
  t.deepEqual(e.details, { port: 1 })
  t.true(e.stack!.startsWith('DeccomError: node is closed'))
  const bare = new DeccomError(ErrorCode.ABORTED, 'aborted')
  t.false('details' in bare)
  t.false('cause' in bare)
})

test('fromNative converts ERR_DECCOM_ errors and leaves the rest alone', (t) => {
  // Message prefix form.
  const raw = new Error('ERR_DECCOM_ADDRESS_IN_USE: 127.0.0.1:4000 is already in use; pick another port or use port 0')
  const a = fromNative(raw) as DeccomError
  t.true(a instanceof DeccomError)
  t.is(a.code, ErrorCode.ADDRESS_IN_USE)
  t.is(a.message, '127.0.0.1:4000 is already in use; pick another port or use port 0')
  t.is(a.cause, raw)

  // `.code` form (napi-rs custom status), with and without the prefix repeated in the message.
  const coded = Object.assign(new Error('datagram of 70000 bytes exceeds 65507'), { code: 'ERR_DECCOM_DATAGRAM_TOO_LARGE' })
  const b = fromNative(coded) as DeccomError
  t.is(b.code, ErrorCode.DATAGRAM_TOO_LARGE)
  t.is(b.message, 'datagram of 70000 bytes exceeds 65507')
  t.is(b.cause, coded)
  const both = Object.assign(new Error('ERR_DECCOM_BAD_KEY: key must be 32 bytes'), { code: 'ERR_DECCOM_BAD_KEY' })
  t.is((fromNative(both) as DeccomError).message, 'key must be 32 bytes')

  // Multi-line messages keep their tail.
  t.is((fromNative(new Error('ERR_DECCOM_KEY_FILE: cannot read\n/etc/key')) as DeccomError).message, 'cannot read\n/etc/key')

  // Unchanged.
  const mine = new DeccomError(ErrorCode.CLOSED, 'closed')
  t.is(fromNative(mine), mine)
  const plain = new Error('something else')
  t.is(fromNative(plain), plain)
  const napi = Object.assign(new Error('Invalid argument'), { code: 'GenericFailure' })
  t.is(fromNative(napi), napi)
  const notPrefix = new Error('see ERR_DECCOM_CLOSED: not at the start')
  t.is(fromNative(notPrefix), notPrefix)
  for (const v of ['ERR_DECCOM_CLOSED: a string', null, undefined, 42]) t.is(fromNative(v), v)
})

// ---------------------------------------------------------------------------------------------
// describe() and optional bindings (native fusion and peer keys: stack-native.spec.ts)
// ---------------------------------------------------------------------------------------------

test('describe() names each binding\'s provider, "absent" optional ones, tags; String(stack) prints it', (t) => {
  class Probe extends Protocol {
    static override bindTo = ['sendMessage', 'externalAddress?']
    static override bindFrom = ['connected?', 'nothing?']
    readonly name = 'probe'
    connected(): void {}
    nothing(): void {}
  }
  const { app, kad, noise, rudp, udp } = goodLayers()
  void app
  const stack = new Stack([new Probe(), kad, noise, rudp, udp])
  stack.build()
  const rows = stack.describe()
  t.deepEqual(rows.map((r) => r.layer), ['probe', 'kademlia', 'noise', 'reliable-udp', 'udp'])
  t.deepEqual(rows[0], {
    layer: 'probe',
    tag: undefined,
    bindTo: { sendMessage: 'noise', externalAddress: 'absent' },
    bindFrom: { connected: 'kademlia', nothing: 'absent' },
    native: false,
  })
  t.deepEqual(rows[1].bindTo, { sendMessage: 'noise', approveConnection: 'noise', sendDatagram: 'udp' })
  const text = String(stack).split('\n')
  t.is(text.length, 5)
  t.is(text[0], 'probe  bindTo: sendMessage→noise, externalAddress (absent)  bindFrom: connected←kademlia, nothing (absent)')
  t.is(text[1], 'kademlia [tag 3]  bindTo: sendMessage→noise, approveConnection→noise, sendDatagram→udp  bindFrom: onMessage←noise')
  t.is(text[4], 'udp')
})

test('a layer with optional bindings works with and without a provider (bindTo) or emitter (bindFrom)', (t) => {
  class Watcher extends Protocol {
    static override bindTo = ['sendDatagram', 'approveConnection?']
    static override bindFrom = ['onMessage?']
    readonly name = 'watcher'
    seen: string[] = []
    onMessage(from: string, data: string): void {
      this.seen.push(`${from}:${data}`)
    }
    /** Approval through the optional binding; everyone is welcome without an approver below. */
    admit(peer: string): boolean {
      return this.hasLower('approveConnection') ? (this.lower.approveConnection(peer) as boolean) : true
    }
    bound(): boolean {
      return this.hasLower('approveConnection')
    }
  }
  // Without: nothing below approves or emits onMessage.
  const alone = new Watcher()
  t.false(alone.bound(), 'not built yet: not bound')
  const udp1 = new Udp()
  new Stack([alone, udp1]).build()
  t.false(alone.bound())
  t.true(alone.admit('mallory'))
  t.is(tables(alone).lower.approveConnection('mallory'), undefined)
  // Udp emits onDatagram, not onMessage: the optional slot stays empty and Udp's default drops.
  udp1.receive('x', 'hello')
  t.deepEqual(alone.seen, [])
  // With: Noise below approves, ReliableUdp emits onMessage (taken by the watcher).
  const w = new Watcher()
  const noise = new Noise()
  const rudp = new ReliableUdp()
  const udp2 = new Udp()
  const stack = new Stack([w, noise, rudp, udp2])
  // Noise takes reliable-udp's onMessage; its own onMessage slot goes to the watcher.
  stack.build()
  t.true(w.bound())
  t.false(w.admit('mallory'))
  t.true(w.admit('alice'))
  udp2.receive('alice', 'hi')
  t.deepEqual(w.seen, ['alice:noise(rudp(hi))'])
  t.is(stack.describe()[0].bindFrom.onMessage, 'noise')
})
