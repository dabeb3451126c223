/**
 * Determinism of simulated stacks from the network's seed alone: every layer's `ctx.random` is
 * derived from it, so Kademlia without its `seed` option replays exactly. Imports the BUILT package.
 */
import test from 'ava'
import { createHash } from 'node:crypto'

import { Kademlia, type LayerContext, Protocol, SimulatedNetwork, cryptoRandom } from '../dist/index.js'

/** Nodes of the Kademlia determinism runs (two runs of one seed, one of 200 nodes with another). */
const N = Number(process.env.DECCOM_SIM_DETERMINISM_N ?? 2000)

/** N Kademlia nodes (no per-layer seed) join through node 0, then N/4 findPeer; trace hash and tables. */
async function kadRun(seed: number, n: number): Promise<{ hash: string; tables: string; found: number; sent: number }> {
  const sim = new SimulatedNetwork({ seed, defaultLink: { latency: 10, jitter: 40 }, traceLimit: 0 })
  try {
    const nodes = []
    for (let b = 0; b < n; b += 100) {
      nodes.push(
        ...(await sim.createNodes(Math.min(100, n - b), {
          stack: (i) => [new Kademlia({ bootstrap: b + i === 0 ? [] : ['10.0.0.1:4000'] })],
        })),
      )
      await sim.runFor(2000)
    }
    await sim.runFor(20_000)
    const kad = (i: number) => nodes[i].stack.find(Kademlia)!
    let found = 0
    let settled = 0
    const lookups = Math.floor(n / 4)
    for (let i = 0; i < lookups; i++) {
      const to = nodes[(i * 7919 + 1) % n]
      kad(i % n)
        .findPeer(to.id)
        .then(
          () => found++,
          () => {},
        )
        .finally(() => settled++)
    }
    await sim.runUntil(() => settled === lookups, { timeout: 120_000 })
    const h = createHash('sha256')
    for (let i = 0; i < n; i++) {
      h.update(
        kad(i)
          .peers()
          .map((p) => `${p.id!.toString('hex')}@${p.address.key}`)
          .sort()
          .join(',') + '\n',
      )
    }
    return { hash: sim.trace.hash, tables: h.digest('hex'), found, sent: sim.stats().sent }
  } finally {
    await sim.close()
  }
}

// Three serial steps (two runs with one seed, one with another), each a test of its own: every
// step reports before the suite's inactivity timeout, however long the whole takes on a busy CI.
let first: Awaited<ReturnType<typeof kadRun>> | null = null

test.serial(`${N} Kademlia nodes without a seed option, run 1 of seed 11: joins and finds`, async (t) => {
  first = await kadRun(11, N)
  t.true(first.found >= Math.floor(N / 4) - 1, `${first.found} found`)
})

test.serial(`${N} Kademlia nodes, run 2 of seed 11: equal trace hash, tables, traffic and results`, async (t) => {
  const a = first
  if (a === null) return t.fail('run 1 did not complete')
  const b = await kadRun(11, N)
  t.is(a.hash, b.hash)
  t.is(a.tables, b.tables)
  t.is(a.sent, b.sent)
  t.is(a.found, b.found)
})

test.serial('Kademlia nodes with another network seed: another trace hash (the hash is not a constant)', async (t) => {
  const a = first
  if (a === null) return t.fail('run 1 did not complete')
  const c = await kadRun(12, 200)
  t.not(c.hash, a.hash)
})

/** Records the first draws of its ctx.random. */
class Draws extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override emits = ['onMessage']
  readonly name = 'draws'
  draws: number[] = []
  override async start(ctx: LayerContext): Promise<void> {
    for (let i = 0; i < 4; i++) this.draws.push(ctx.random.u32())
  }
  onMessage(...a: unknown[]): void {
    this.upper.onMessage(...a)
  }
}

test('ctx.random: seeded per node and per layer in a simulation, the OS generator elsewhere', async (t) => {
  const draws = async (seed: number) => {
    const sim = new SimulatedNetwork({ seed })
    const nodes = await sim.createNodes(2, { stack: () => [new Draws(), new Draws()] })
    const out = nodes.map((node) => node.stack.layers.filter((l): l is Draws => l instanceof Draws).map((l) => l.draws))
    await sim.close()
    return out
  }
  const a = await draws(3)
  t.deepEqual(a, await draws(3))
  t.notDeepEqual(a, await draws(4))
  // Two layers of a node, and two nodes, get different streams.
  t.notDeepEqual(a[0][0], a[0][1])
  t.notDeepEqual(a[0][0], a[1][0])
  // The default source is the OS generator: its forks are itself, and it fills buffers.
  t.is(cryptoRandom.fork(), cryptoRandom)
  const buf = cryptoRandom.bytes(new Uint8Array(32))
  t.true(buf.some((x) => x !== 0))
})

test('trace: false records and hashes nothing; the same run with the trace on hashes it', async (t) => {
  const run = async (trace: boolean) => {
    const sim = new SimulatedNetwork({ seed: 9, trace })
    const nodes = await sim.createNodes(20, { stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'] })] })
    await sim.runFor(5000)
    const out = { trace: sim.trace, sent: sim.stats().sent, size: nodes[5].stack.find(Kademlia)!.size }
    await sim.close()
    return out
  }
  const off = await run(false)
  const on = await run(true)
  t.is(off.trace.count, 0)
  t.deepEqual(off.trace.log, [])
  t.true(on.trace.count > 1000)
  t.true(on.trace.log.length > 100)
  t.not(on.trace.hash, off.trace.hash)
  // The trace does not change the run.
  t.is(off.sent, on.sent)
  t.is(off.size, on.size)
})
