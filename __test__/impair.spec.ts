/**
 * The one impairment model: the same seed gives the same run whichever path runs it — the socket
 * thread (FaultyTransport in native mode under ReliableUdp, real loopback UDP), JavaScript
 * (FaultyTransport with `native: false`) and a SimulatedNetwork link with that seed.
 * Imports the BUILT package (dist/), as a user would.
 */
import test from 'ava'

import { Delay, FaultyTransport, Node, ReliableUdp, SimulatedNetwork } from '../dist/index.js'

const N = 400
const SEED = 20_261_204
const FAULTS = { drop: 0.15, duplicate: 0.15, reorder: 0.15, corrupt: 0.15 }

/** Datagram i: its number (u32 BE) and a filler of 0..59 bytes, so sizes vary along the run. */
function datagram(i: number): Buffer {
  const b = Buffer.alloc(4 + ((i * 7) % 60), 0xa5)
  b.writeUInt32BE(i, 0)
  return b
}

interface Run {
  /** Every delivered payload (hex), sorted: which datagrams, how many times, which bits flipped. */
  delivered: string[]
  counters: { dropped: number; duplicated: number; corrupted: number; reordered: number }
}

async function waitFor(cond: () => boolean, ms: number, what: string, state?: () => string): Promise<void> {
  const deadline = performance.now() + ms
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${state ? `: ${state()}` : ''}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** a → b over loopback UDP, the faults on b's receive side (native or JavaScript-driven). */
async function loopback(native: boolean): Promise<Run & { native: boolean }> {
  const faulty = new FaultyTransport({ seed: SEED, direction: 'receive', ...FAULTS, native })
  // ReliableUdp above asks the layer to run in the socket thread; without it, it stays in JavaScript.
  // a sends plain datagrams: ReliableUdp must pass them up (strict: false).
  const b = await Node.create({ host: '127.0.0.1', stack: native ? [new ReliableUdp({ strict: false }), faulty] : [faulty] })
  const a = await Node.create({ host: '127.0.0.1' })
  try {
    const got: string[] = []
    b.on('message', (_from, data) => got.push(Buffer.from(data).toString('hex')))
    // In small bursts, each received before the next, so that the kernel never drops one (a loaded
    // machine can leave a socket buffer full): the model must see all N, in order.
    for (let i = 0; i < N; i++) {
      await a.send(b.address, datagram(i))
      if (i % 20 === 19) await waitFor(() => b.stats().udp.rxDatagrams >= i + 1, 5000, `datagram ${i} at the socket`)
    }
    let counters: Run['counters']
    let expected: () => number
    if (native) {
      const s = (): Record<string, number> => b.stats().udp
      await waitFor(() => (s().faults_rx_passed ?? 0) + (s().faults_rx_dropped ?? 0) === N, 5000, `${N} datagrams offered`, () => JSON.stringify(s()))
      expected = () => s().faults_rx_passed + s().faults_rx_duplicated
      counters = { dropped: s().faults_rx_dropped, duplicated: s().faults_rx_duplicated, corrupted: s().faults_rx_corrupted, reordered: s().faults_rx_reordered }
    } else {
      const s = (): Record<string, number> => b.stats().faulty
      await waitFor(() => (s().passed ?? 0) + (s().faulty_dropped ?? 0) === N, 5000, `${N} datagrams offered`)
      expected = () => s().passed + (s().faulty_duplicated ?? 0)
      counters = { dropped: s().faulty_dropped, duplicated: s().faulty_duplicated, corrupted: s().faulty_corrupted, reordered: s().faulty_reordered }
    }
    await waitFor(() => got.length >= expected(), 5000, 'every copy')
    await new Promise((r) => setTimeout(r, 50)) // nothing more may come
    return { delivered: got.sort(), counters, native: faulty.native }
  } finally {
    await Promise.all([a.close(), b.close()])
  }
}

/** a → b over a SimulatedNetwork link with the same seed and probabilities. */
async function simulated(): Promise<Run> {
  const sim = new SimulatedNetwork({
    seed: 1,
    defaultLink: { latency: 2 },
    link: (from) => (from.key === '10.0.0.1:4000' ? { loss: FAULTS.drop, duplicate: FAULTS.duplicate, reorder: FAULTS.reorder, corrupt: FAULTS.corrupt, reorderDelay: 20, seed: SEED } : undefined),
  })
  try {
    const [a, b] = await sim.createNodes(2)
    const got: string[] = []
    b.on('message', (_from, data) => got.push(Buffer.from(data).toString('hex')))
    for (let i = 0; i < N; i++) await a.send(b.address, datagram(i))
    await sim.runFor(1000)
    const s = sim.stats()
    return { delivered: got.sort(), counters: { dropped: s.lost, duplicated: s.duplicated, corrupted: s.corrupted, reordered: s.reordered } }
  } finally {
    await sim.close()
  }
}

test.serial('the same seed gives the same deliveries natively, in JavaScript and on a simulated link', async (t) => {
  const nat = await loopback(true)
  const js = await loopback(false)
  const sim = await simulated()
  t.true(nat.native, 'FaultyTransport ran in the socket thread')
  t.false(js.native, 'FaultyTransport ran in JavaScript')

  t.deepEqual(js.counters, nat.counters)
  t.deepEqual(sim.counters, nat.counters)
  t.deepEqual(js.delivered, nat.delivered)
  t.deepEqual(sim.delivered, nat.delivered)

  // The run exercised every fault, and the deliveries agree with the counters.
  const { dropped, duplicated, corrupted, reordered } = nat.counters
  for (const [name, n] of Object.entries(nat.counters)) t.true(n > 20 && n < 120, `${name}: ${n} of ${N} at p = 0.15`)
  t.is(nat.delivered.length, N - dropped + duplicated)
  const originals = new Set(Array.from({ length: N }, (_, i) => datagram(i).toString('hex')))
  const altered = nat.delivered.filter((h) => !originals.has(h))
  // A corrupted datagram is one payload bit away from an original of its size; both copies of a
  // duplicated one carry the same flip, so there are as many distinct altered payloads as decisions.
  for (const h of new Set(altered)) {
    const got = Buffer.from(h, 'hex')
    let best = Infinity
    for (let i = 0; i < N; i++) {
      const o = datagram(i)
      if (o.length !== got.length) continue
      let bits = 0
      for (let k = 0; k < o.length; k++) for (let x = o[k] ^ got[k]; x; x &= x - 1) bits++
      best = Math.min(best, bits)
    }
    t.is(best, 1, `a corrupted datagram has one flipped bit: ${h}`)
  }
  t.is(new Set(altered).size, corrupted)
  t.true(reordered > 0)
})

test('two seeds give different runs; the JavaScript path repeats itself', async (t) => {
  const sim = async (seed: number): Promise<string[]> => {
    const net = new SimulatedNetwork({ seed: 5, defaultLink: { latency: 1, loss: 0.2, duplicate: 0.2, corrupt: 0.2, seed } })
    try {
      const [a, b] = await net.createNodes(2)
      const got: string[] = []
      b.on('message', (_f, d) => got.push(Buffer.from(d).toString('hex')))
      for (let i = 0; i < 100; i++) await a.send(b.address, datagram(i))
      await net.runFor(100)
      return got.sort()
    } finally {
      await net.close()
    }
  }
  t.deepEqual(await sim(1), await sim(1))
  t.notDeepEqual(await sim(1), await sim(2))
})

test('Delay asks its functions once per peer in JavaScript mode too, and keeps the answer', async (t) => {
  const calls: string[] = []
  const sim = new SimulatedNetwork({ seed: 2, defaultLink: { latency: 1 } })
  t.teardown(() => sim.close())
  const [a, b, c] = await sim.createNodes(3, {
    stack: (i) => (i === 0 ? [new Delay({ latency: (_f, to) => (calls.push(to.key), 10), bandwidth: () => 100 })] : []),
  })
  const at: number[] = []
  b.on('message', () => at.push(sim.now))
  for (let i = 0; i < 3; i++) await a.send(b.address, Buffer.alloc(99))
  await a.send(c.address, Buffer.alloc(99))
  await sim.runFor(100)
  await a.send(b.address, Buffer.alloc(99))
  await sim.runFor(100)
  t.deepEqual(calls, [b.address.key, c.address.key])
  // 100 bytes at 100 bytes/ms: 1 ms each, queued; then 10 ms of Delay and 1 ms of link.
  t.deepEqual(at, [12, 13, 14, 112])
})
