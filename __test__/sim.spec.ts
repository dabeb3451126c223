/**
 * SimulatedNetwork: real deccom Nodes over SimTransport in virtual time, deterministic from a seed.
 * Imports the BUILT package (dist/), as a user would.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import {
  type Address,
  type Clock,
  DeccomError,
  ErrorCode,
  type LayerContext,
  Node,
  Protocol,
  SimErrorCode,
  SimTransport,
  SimulatedNetwork,
  type SimulatedNetworkOptions,
  type TimerHandle,
  toAddress,
} from '../dist/index.js'
import { n } from './helpers/wait.ts'

const here = dirname(fileURLToPath(import.meta.url))
const distUrl = pathToFileURL(join(here, '..', 'dist', 'index.mjs')).href

/** Timers and immediates: what would keep the process alive (besides sockets). */
function timerHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length
}

/**
 * A transparent layer that sends a beat (tag 7) to `next(self)` every `period` ms of ctx.clock and
 * counts the beats received; everything else passes through.
 */
class Heartbeat extends Protocol {
  static override bindTo = ['send', 'localAddress']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'heartbeat'
  clock: Clock | undefined
  #timer: TimerHandle | undefined
  constructor(
    private readonly next: (self: Address) => Address,
    private readonly period = 1000,
  ) {
    super()
  }
  override async start(ctx: LayerContext): Promise<void> {
    this.clock = ctx.clock
    const tick = (): void => {
      this.lower.send(this.next(this.lower.localAddress()), Buffer.from('beat'), 7)
      this.count('beats_sent')
      this.#timer = ctx.clock.setTimeout(tick, this.period)
    }
    this.#timer = ctx.clock.setTimeout(tick, this.period)
  }
  send(to: Address, data: Uint8Array, tag = 0): unknown {
    return this.lower.send(to, data, tag)
  }
  onMessage(from: Address, data: Buffer, tag: number): void {
    if (tag !== 7) return this.upper.onMessage(from, data, tag)
    if (data.toString() === 'beat') this.count('beats_received')
  }
  override async stop(): Promise<void> {
    this.clock?.clearTimeout(this.#timer)
  }
}

test('two nodes exchange messages and ping: RTT is exactly 2 × latency in virtual time', async (t) => {
  const sim = new SimulatedNetwork({ seed: 1, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const [a, b] = await sim.createNodes(2)
  t.regex(a.address.key, /^10\.\d+\.\d+\.\d+:4000$/)
  t.not(a.address.key, b.address.key)
  t.is(a.stats().sim.sent ?? 0, 0)

  const got: Array<[number, string, string]> = []
  b.on('message', (from, data) => {
    got.push([sim.now, from.address.key, data.toString()])
    void b.send(from, Buffer.from('re: ' + data.toString()))
  })
  const atA: Array<[number, string]> = []
  a.on('message', (_from, data) => atA.push([sim.now, data.toString()]))

  const buf = Buffer.from('hello')
  await a.send(b.address, buf)
  buf.fill(0) // the transport copied the bytes on send
  t.is(sim.now, 0)
  await sim.runFor(4.999)
  t.deepEqual(got, [])
  await sim.runFor(0.001)
  t.deepEqual(got, [[5, a.address.key, 'hello']])
  await sim.runFor(100)
  t.deepEqual(atA, [[10, 're: hello']])
  t.is(sim.now, 105)

  const rtts = await Promise.all([a.ping(b.address), sim.runFor(50).then(() => 0)])
  t.is(rtts[0], 10)
  let rtt2 = -1
  void b.ping(a.address.key).then((r) => (rtt2 = r))
  await sim.runUntil(() => rtt2 >= 0)
  t.is(rtt2, 10)
  t.is(n(a.stats().sim.pings_sent), 1)
  t.is(n(b.stats().sim.pings_answered), 1)
  t.is(n(b.stats().sim.received), 1)
  t.is(n(b.stats().app.received), 1)

  // A ping nobody answers times out after exactly `timeout` virtual ms.
  const t0 = sim.now
  let rejectedAt = -1
  const dead = a.ping('10.200.0.1:4000', { timeout: 300 }).catch((e: unknown) => {
    rejectedAt = sim.now
    throw e
  })
  await sim.runFor(1000)
  const err = await t.throwsAsync(dead, { instanceOf: DeccomError })
  t.is(err?.code, ErrorCode.PING_TIMEOUT)
  t.is(rejectedAt - t0, 300)
  t.is(n(a.stats().sim.ping_timeouts), 1)
  t.is(sim.stats().dropped_no_route, 1)

  // Same errors as the UDP transport.
  t.is((await t.throwsAsync(a.send(b.address, Buffer.alloc(65_507)), { instanceOf: DeccomError }))?.code, ErrorCode.DATAGRAM_TOO_LARGE)
  await a.send(b.address, Buffer.alloc(65_506))
  t.is((await t.throwsAsync(a.send(a.address, Buffer.from('me')), { instanceOf: DeccomError }))?.code, ErrorCode.INVALID_ADDRESS)
  await a.close()
  t.is((await t.throwsAsync(a.send(b.address, Buffer.from('x')), { instanceOf: DeccomError }))?.code, ErrorCode.CLOSED)
  t.is((await t.throwsAsync(a.ping(b.address), { instanceOf: DeccomError }))?.code, ErrorCode.CLOSED)
})

test('Node.create takes a SimTransport at the bottom and the virtual clock', async (t) => {
  const sim = new SimulatedNetwork({ seed: 2 })
  t.teardown(() => sim.close())
  const ta = sim.createTransport({ address: '10.1.2.3:5000' })
  const tb = new SimTransport(sim, { address: toAddress('10.1.2.4:5000') })
  t.is(ta.network, sim)
  const hb = new Heartbeat((self) => (self.key === '10.1.2.3:5000' ? tb.localAddress() : ta.localAddress()), 100)
  const a = await Node.create({ stack: [hb, ta], clock: sim.clock })
  const b = await Node.create({ stack: [new Heartbeat(() => ta.localAddress(), 100), tb], clock: sim.clock })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.is(hb.clock, sim.clock)
  t.is(a.address.key, '10.1.2.3:5000')
  t.is(b.address.key, '10.1.2.4:5000')
  t.deepEqual(
    a.stack.describe().map((r) => r.layer),
    ['app', 'heartbeat', 'sim'],
  )
  await sim.runFor(1000)
  t.is(a.stats().heartbeat.beats_sent, 10)
  t.is(a.stats().heartbeat.beats_received, 9) // the beat sent at 1000 ms lands at 1005
  t.is(await Promise.all([a.ping(b.address), sim.runFor(20)]).then(([r]) => r), 10)

  // An address can be started only once.
  const dup = sim.createTransport({ address: '10.1.2.3:5000' })
  const err = await t.throwsAsync(Node.create({ stack: [dup], clock: sim.clock }), { instanceOf: DeccomError })
  t.is(err?.code, ErrorCode.ADDRESS_IN_USE)
})

test("the sim transport's own datagrams: malformed, unexpected pongs and empty ones are dropped and counted", async (t) => {
  const sim = new SimulatedNetwork({ seed: 3 })
  t.teardown(() => sim.close())
  const [a, b] = await sim.createNodes(2)
  const ta = a.stack.layers.at(-1) as InstanceType<typeof SimTransport>
  const delivered: string[] = []
  b.on('message', (_f, d) => delivered.push(d.toString()))
  ta.send(b.address, Buffer.from([1, 0, 0, 0]), 1) // 5 bytes with tag 1: malformed
  ta.send(b.address, Buffer.from([9, 0, 0, 0, 0]), 1) // 6 bytes, unknown type: malformed
  ta.send(b.address, Buffer.from([2, 0, 0, 0, 1]), 1) // a pong nobody asked for
  ta.send(b.address, Buffer.from([1, 1, 2, 3, 4]), 1) // a valid ping: answered
  ;(sim as unknown as { _transmit(f: Address, to: Address, b: Buffer): void })._transmit(a.address, b.address, Buffer.alloc(0))
  ta.send(b.address, Buffer.from('ok'), 0)
  await sim.runFor(20)
  const s = b.stats().sim
  t.is(s.dropped_malformed, 2)
  t.is(s.dropped_unexpected_pong, 1)
  t.is(s.dropped_empty, 1)
  t.is(s.pings_answered, 1)
  t.deepEqual(delivered, ['ok'])
  // The pong for the unsolicited ping came back to a, which did not ask: counted there.
  t.is(a.stats().sim.dropped_unexpected_pong, 1)
})

test('100 nodes, all to all, 10% loss: an app-level resend-until-acked delivers everything', async (t) => {
  const N = 100
  const sim = new SimulatedNetwork({ seed: 7, defaultLink: { latency: 5, jitter: 2, loss: 0.1 } })
  t.teardown(() => sim.close())
  const nodes = await sim.createNodes(N)
  const index = new Map(nodes.map((node, i) => [node.address.key, i]))
  const got = nodes.map(() => new Set<number>())
  const acked = nodes.map(() => new Set<number>())
  const timers = nodes.map(() => new Map<number, TimerHandle>())
  let dataSent = 0
  let delivered = 0
  let ackedCount = 0

  const sendData = (i: number, j: number): void => {
    dataSent++
    void nodes[i].send(nodes[j].address, Buffer.from([1, i]))
    timers[i].set(
      j,
      sim.clock.setTimeout(() => sendData(i, j), 50),
    )
  }
  nodes.forEach((node, me) => {
    node.on('message', (from, data) => {
      const peer = index.get(from.address.key)!
      if (data[0] === 1) {
        if (!got[me].has(data[1])) {
          got[me].add(data[1])
          delivered++
        }
        void node.send(from, Buffer.from([2, me])) // ack every copy
      } else if (data[0] === 2 && !acked[me].has(peer)) {
        acked[me].add(peer)
        ackedCount++
        sim.clock.clearTimeout(timers[me].get(peer))
        timers[me].delete(peer)
      }
    })
  })
  for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) if (i !== j) sendData(i, j)

  const t0 = performance.now()
  await sim.runUntil(() => ackedCount === N * (N - 1), { timeout: 60_000 })
  const real = performance.now() - t0
  t.is(delivered, N * (N - 1))
  for (let i = 0; i < N; i++) t.is(got[i].size, N - 1)
  const st = sim.stats()
  t.true(st.lost > 0.05 * st.sent && st.lost < 0.15 * st.sent, JSON.stringify(st))
  t.true(dataSent > N * (N - 1), `retries happened: ${dataSent}`)
  t.is(st.pending_events, 0, 'every retry timer was cleared')
  t.log(`virtual ${sim.now.toFixed(1)} ms, real ${real.toFixed(0)} ms, ${st.events} events, ${dataSent} data sends, ${st.lost} lost`)
})

/** A small lossy, jittery, duplicating, reordering scenario; returns its trace and what arrived. */
async function scenario(seed: number, extra: Partial<SimulatedNetworkOptions> = {}): Promise<{ hash: string; log: readonly string[]; arrivals: string[] }> {
  const sim = new SimulatedNetwork({
    seed,
    defaultLink: { latency: 5, jitter: 3, loss: 0.1, duplicate: 0.05, reorder: 0.1 },
    link: (from, to) => (from.key < to.key ? { latency: 8, bandwidth: 50 } : undefined),
    ...extra,
  })
  try {
    const nodes = await sim.createNodes(20)
    const arrivals: string[] = []
    nodes.forEach((node, i) => {
      node.on('message', (from, data) => {
        arrivals.push(`${sim.now.toFixed(3)} ${from.address.key}>${i} ${data.toString()}`)
        if (data[0] !== 0x72) void node.send(from, Buffer.from('r' + data.toString()))
      })
      const tick = (k: number): void => {
        const to = nodes[sim.random.int(nodes.length)]
        if (to !== node) void node.send(to.address, Buffer.from(`m${i}.${k}`))
        sim.clock.setTimeout(() => tick(k + 1), 200 + sim.random.int(100))
      }
      sim.clock.setTimeout(() => tick(0), sim.random.int(1000))
    })
    await sim.runFor(10_000)
    const { hash, log } = sim.trace
    return { hash, log, arrivals }
  } finally {
    await sim.close()
  }
}

test('same seed → identical trace; another seed → a different one', async (t) => {
  const a = await scenario(42)
  const b = await scenario(42)
  const c = await scenario(43)
  t.true(a.arrivals.length > 500, `${a.arrivals.length} arrivals`)
  t.is(a.hash, b.hash)
  t.deepEqual(a.log, b.log)
  t.deepEqual(a.arrivals, b.arrivals)
  t.not(a.hash, c.hash)
  t.notDeepEqual(a.arrivals, c.arrivals)
  t.regex(a.hash, /^[0-9a-f]{16}$/)
  // The log is a bounded rolling window.
  const small = await scenario(42, { traceLimit: 100 })
  t.is(small.log.length, 100)
  t.deepEqual(small.log, a.log.slice(-100))
  t.is(small.hash, a.hash)
})

test('virtual time runs faster than real time: 100 nodes with 1-s timers, 60 s virtual in < 2 s real', async (t) => {
  const sim = new SimulatedNetwork({ seed: 5, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  let nodes: Node[] = []
  nodes = await sim.createNodes(100, {
    stack: (i) => [new Heartbeat(() => nodes[(i + 1) % 100].address, 1000)],
  })
  const t0 = performance.now()
  await sim.runFor(60_000)
  const real = performance.now() - t0
  t.is(sim.now, 60_000)
  for (const node of nodes) {
    t.is(node.stats().heartbeat.beats_sent, 60)
    t.is(node.stats().heartbeat.beats_received, 59) // the beat sent at 60 000 ms lands at 60 005
  }
  t.true(real < 2000, `60 s virtual took ${real.toFixed(0)} ms real`)
  t.log(`60 s virtual, 100 nodes: ${real.toFixed(0)} ms real, ${sim.stats().events} events`)
})

test('bandwidth: a 1 MB burst over a 1 MB/s link takes ~1 s of virtual time; the link queue is bounded', async (t) => {
  const sim = new SimulatedNetwork({ seed: 9, defaultLink: { latency: 5, bandwidth: 1000 } })
  t.teardown(() => sim.close())
  const [a, b] = await sim.createNodes(2)
  const arrivals: number[] = []
  b.on('message', () => arrivals.push(sim.now))
  const payload = Buffer.alloc(999) // + 1 tag byte = 1000 bytes per datagram
  for (let i = 0; i < 1000; i++) await a.send(b.address, payload)
  await sim.runUntil(() => arrivals.length === 1000, { timeout: 10_000 })
  t.is(arrivals[0], 1 + 5)
  t.is(arrivals[999], 1000 + 5) // 1 000 000 bytes at 1000 bytes/ms, then the latency
  // A burst beyond the link's queue bound is cut.
  const sim2 = new SimulatedNetwork({ seed: 9, defaultLink: { latency: 5, bandwidth: 1000, maxQueueBytes: 10_000 } })
  t.teardown(() => sim2.close())
  const [c, d] = await sim2.createNodes(2)
  let got = 0
  d.on('message', () => got++)
  for (let i = 0; i < 100; i++) await c.send(d.address, payload)
  await sim2.runFor(1000)
  t.is(got, 10)
  t.is(sim2.stats().dropped_queue, 90)
})

test('runUntil is bounded by virtual time and by events; runs do not overlap', async (t) => {
  const sim = new SimulatedNetwork({ seed: 11 })
  t.teardown(() => sim.close())
  await sim.runUntil(() => true) // already true: no time passes
  t.is(sim.now, 0)
  const err = await t.throwsAsync(sim.runUntil(() => false, { timeout: 1234 }), { instanceOf: DeccomError })
  t.is(err?.code, SimErrorCode.SIM_TIMEOUT)
  t.is(sim.now, 1234)
  const noEvents = await t.throwsAsync(sim.runUntil(() => false, { timeout: Infinity }), { instanceOf: DeccomError })
  t.is(noEvents?.code, SimErrorCode.SIM_TIMEOUT)

  // A zero-delay timer loop never lets time advance: the event bound stops it.
  let spins = 0
  const spin = (): void => {
    spins++
    sim.clock.setTimeout(spin, 0)
  }
  sim.clock.setTimeout(spin, 0)
  const limit = await t.throwsAsync(sim.runFor(10, { maxEvents: 500 }), { instanceOf: DeccomError })
  t.is(limit?.code, SimErrorCode.SIM_EVENT_LIMIT)
  t.is(spins, 500)

  const sim2 = new SimulatedNetwork({ seed: 12 })
  t.teardown(() => sim2.close())
  const first = sim2.runFor(100)
  const second = await t.throwsAsync(sim2.runFor(100), { instanceOf: DeccomError })
  t.is(second?.code, ErrorCode.STACK_STATE)
  await first
})

test('microtasks settle before virtual time advances (async code awaiting a virtual timer)', async (t) => {
  const sim = new SimulatedNetwork({ seed: 13 })
  t.teardown(() => sim.close())
  const sleep = (ms: number): Promise<void> => new Promise((r) => sim.clock.setTimeout(r, ms))
  const seen: Array<[string, number]> = []
  const deep = async (label: string): Promise<void> => {
    for (let i = 0; i < 3; i++) {
      await sleep(10)
      // Several awaits deep after the timer, still at the timer's virtual time.
      await Promise.resolve()
      await new Promise<void>((r) => process.nextTick(r))
      await null
      seen.push([label, sim.now])
    }
  }
  const done = Promise.all([deep('a'), deep('b')])
  sim.clock.setTimeout(() => seen.push(['timer', sim.now]), 15)
  await sim.runFor(100)
  await done
  t.deepEqual(seen, [
    ['a', 10],
    ['b', 10],
    ['timer', 15],
    ['a', 20],
    ['b', 20],
    ['a', 30],
    ['b', 30],
  ])
})

test.serial('sim.close() closes every node, rejects pending pings and leaves no open handles', async (t) => {
  const before = timerHandles()
  const sim = new SimulatedNetwork({ seed: 17, defaultLink: { latency: 5 } })
  let nodes: Node[] = []
  nodes = await sim.createNodes(20, { stack: (i) => [new Heartbeat(() => nodes[(i + 1) % 20].address, 1000)] })
  await sim.runFor(5000)
  const pending = nodes[0].ping('10.250.0.1:4000', { timeout: 60_000 }).then(
    () => 'resolved?!',
    (e: { code?: string }) => e.code,
  )
  t.true(sim.stats().pending_events > 0)
  await sim.close()
  t.is(await pending, ErrorCode.CLOSED)
  t.is(sim.stats().pending_events, 0)
  sim.clock.clearTimeout(sim.clock.setTimeout(() => t.fail('runs after close'), 1)) // ignored after close
  t.is(sim.stats().pending_events, 0)
  t.is(timerHandles(), before, `active resources: ${process.getActiveResourcesInfo().join(', ')}`)
  await t.throwsAsync(sim.runFor(1), { instanceOf: DeccomError })
  await sim.close() // idempotent
})

const CHILD = `
import { SimulatedNetwork, Protocol } from ${JSON.stringify(distUrl)}
class Beat extends Protocol {
  static bindTo = ['send']
  static bindFrom = ['onMessage']
  static provides = ['send']
  static emits = ['onMessage']
  send (to, data, tag) { return this.lower.send(to, data, tag) }
  name = 'beat'
  constructor (to) { super(); this.to = to }
  async start (ctx) { this.clock = ctx.clock; const tick = () => { this.lower.send(this.to(), Buffer.from('b'), 0); this.timer = ctx.clock.setTimeout(tick, 500) }; this.timer = ctx.clock.setTimeout(tick, 500) }
  onMessage (from, data, tag) { this.upper.onMessage(from, data, tag) }
  async stop () { this.clock.clearTimeout(this.timer) }
}
const sim = new SimulatedNetwork({ seed: 1, defaultLink: { latency: 10, loss: 0.1 } })
let nodes = []
nodes = await sim.createNodes(50, { stack: (i) => [new Beat(() => nodes[(i + 7) % 50].address)] })
nodes[1].ping(nodes[2].address, { timeout: 60_000 }).then((rtt) => console.log('rtt ' + rtt))
await sim.runFor(30_000)
nodes[3].ping('10.99.0.1:4000', { timeout: 600_000 }).catch(() => {})
await sim.close()
console.log('done ' + sim.now)
`

test.serial('a child process that ran a simulation and closed it exits by itself', async (t) => {
  t.timeout(30_000)
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
  clearTimeout(killer)
  t.is(code, 0, `stdout: ${stdout}\nstderr: ${stderr}`)
  t.regex(stdout, /rtt 20\n/)
  t.regex(stdout, /done 30000/)
})

test.serial('a datagram to an address spelled again after the address cache started over arrives (the same object: it is in use)', async (t) => {
  const sim = new SimulatedNetwork({ seed: 3, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const [a, b] = await sim.createNodes(2)
  const got: string[] = []
  b.on('message', (_from, data) => got.push(data.toString()))
  // More distinct addresses than the cache holds: it starts over; b's address, in use, is still
  // the object its text gives (the simulator's maps are keyed by address text either way).
  for (let i = 0; i < 70_000; i++) toAddress(`10.${250 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, 1000)
  const again = toAddress(b.address.key)
  t.is(again, b.address, 'the object in use')
  await a.send(again, Buffer.from('still here'))
  await sim.runFor(10)
  t.deepEqual(got, ['still here'])
  t.is(n(sim.stats().dropped_no_route ?? 0), 0)
})
