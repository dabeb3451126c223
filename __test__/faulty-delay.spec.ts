/**
 * The test layers FaultyTransport and Delay: over real loopback UDP nodes, and in virtual time.
 * Imports the BUILT package (dist/), as a user would.
 */
import test, { type ExecutionContext } from 'ava'

import { Delay, FaultyTransport, Node, type NodeOptions, type Peer, SimulatedNetwork } from '../dist/index.js'
import { n, sleep } from './helpers/wait.ts'

/** Creates a loopback node that is closed when the test ends, whatever happens. */
async function open(t: ExecutionContext, opts: NodeOptions = {}): Promise<Node> {
  const node = await Node.create({ host: '127.0.0.1', ...opts })
  t.teardown(() => node.close())
  return node
}

/** Records every message a node receives (copied), with its arrival time. */
function inbox(node: Node): Array<{ from: Peer; data: Buffer; at: number }> {
  const got: Array<{ from: Peer; data: Buffer; at: number }> = []
  node.on('message', (from, data) => got.push({ from, data: Buffer.from(data), at: performance.now() }))
  return got
}

/** Resolves when `cond()` holds, polling every 5 ms; rejects after `ms`. */
async function waitFor(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const deadline = performance.now() + ms
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}


function timeouts(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
}

function popcount(x: number): number {
  let c = 0
  for (; x; x &= x - 1) c++
  return c
}

test.serial('close() clears every timer of Faulty and Delay: the Timeout count returns to its baseline', async (t) => {
  const baseline = timeouts()
  const a = await Node.create({
    host: '127.0.0.1',
    stack: [new Delay({ latency: () => 60_000 }), new FaultyTransport({ seed: 1, reorder: 1, reorderDelay: 60_000, direction: 'send' })],
  })
  const b = await Node.create({
    host: '127.0.0.1',
    stack: [new FaultyTransport({ seed: 2, reorder: 1, reorderDelay: 60_000, direction: 'receive' }), new Delay({ latency: () => 60_000, on: 'receive' })],
  })
  const c = await Node.create({ host: '127.0.0.1' })
  const d = await Node.create({ host: '127.0.0.1', stack: [new FaultyTransport({ seed: 3, reorder: 1, reorderDelay: 60_000, direction: 'send' })] })
  for (let i = 0; i < 3; i++) await d.send(c.address, Buffer.from(`d${i}`)) // each held by a timer
  t.is(d.stats().faulty.faulty_reordered, 3)
  // a: Delay holds everything (one timer per peer); b: Delay on receive holds what c sends it.
  for (let i = 0; i < 5; i++) {
    await a.send(b.address, Buffer.from(`a${i}`))
    await a.send(c.address, Buffer.from(`a${i}`))
    await c.send(b.address, Buffer.from(`c${i}`))
  }
  await waitFor(() => n(b.stats().delay.delayed) === 5, 3000, 'b to queue what c sent')
  t.true(timeouts() >= baseline + 6, `timers pending: ${timeouts()} vs baseline ${baseline}`)
  t.is(a.stats().delay.queued_bytes, 10 * 3)
  await Promise.all([a.close(), b.close(), c.close(), d.close()])
  t.is(timeouts(), baseline)
  t.is(d.stats().faulty.dropped_closed, 3)
  t.is(a.stats().delay.dropped_closed, 10)
  t.is(b.stats().delay.dropped_closed, 5)
})

test('drop = 1 on send: nothing arrives, the counter counts, the other direction works', async (t) => {
  const faulty = new FaultyTransport({ seed: 1, drop: 1, direction: 'send' })
  const a = await open(t, { stack: [faulty] })
  const b = await open(t)
  const atB = inbox(b)
  const atA = inbox(a)
  for (let i = 0; i < 50; i++) await a.send(b.address, Buffer.from(`m${i}`))
  await b.send(a.address, Buffer.from('back'))
  await waitFor(() => atA.length === 1)
  await sleep(100)
  t.is(atB.length, 0)
  t.is(a.stats().faulty.faulty_dropped, 50)
  t.is(n(a.stats().faulty.passed), 0)
  t.is(n(a.stats().udp.sent), 0)
  t.is(atA[0].data.toString(), 'back')
  t.is(faulty.seed, 1)
})

/** a → b, 200 messages through FaultyTransport(drop 0.3, seed): which ones arrived, and the counters. */
async function lossyRun(t: ExecutionContext, seed: number): Promise<{ arrived: number[]; dropped: number; passed: number }> {
  const a = await Node.create({ host: '127.0.0.1', stack: [new FaultyTransport({ seed, drop: 0.3, direction: 'send' })] })
  const b = await Node.create({ host: '127.0.0.1' })
  try {
    const atB = inbox(b)
    for (let i = 0; i < 200; i++) await a.send(b.address, Buffer.from(String(i)))
    const passed = n(a.stats().faulty.passed)
    await waitFor(() => atB.length >= passed, 3000, `${passed} messages`)
    await sleep(20)
    t.is(atB.length, passed)
    return { arrived: atB.map((m) => Number(m.data.toString())), dropped: n(a.stats().faulty.faulty_dropped), passed }
  } finally {
    await Promise.all([a.close(), b.close()])
  }
}

test('drop = 0.3 with a seed: the same datagrams are dropped in two runs with that seed', async (t) => {
  const r1 = await lossyRun(t, 1234)
  const r2 = await lossyRun(t, 1234)
  const r3 = await lossyRun(t, 4321)
  t.is(r1.dropped + r1.passed, 200)
  t.true(r1.dropped > 30 && r1.dropped < 90, `dropped ${r1.dropped} of 200 at p = 0.3`)
  t.is(r1.dropped, r2.dropped)
  t.deepEqual(r1.arrived, r2.arrived)
  t.notDeepEqual(r1.arrived, r3.arrived)
})

test('duplicate = 1 on receive: every message arrives twice', async (t) => {
  const a = await open(t)
  const b = await open(t, { stack: [new FaultyTransport({ seed: 3, duplicate: 1, direction: 'receive' })] })
  const atB = inbox(b)
  for (let i = 0; i < 20; i++) await a.send(b.address, Buffer.from(`m${i}`))
  await waitFor(() => atB.length >= 40)
  await sleep(50)
  t.is(atB.length, 40)
  const counts = new Map<string, number>()
  for (const m of atB) counts.set(m.data.toString(), (counts.get(m.data.toString()) ?? 0) + 1)
  t.is(counts.size, 20)
  for (const [, c] of counts) t.is(c, 2)
  t.is(b.stats().faulty.faulty_duplicated, 20)
  t.is(b.stats().faulty.passed, 20)
  t.is(b.stats().app.received, 40)
})

test('corrupt = 1: each payload differs from what was sent in exactly one bit; the sender buffer is untouched', async (t) => {
  const a = await open(t, { stack: [new FaultyTransport({ seed: 5, corrupt: 1, direction: 'send' })] })
  const b = await open(t)
  const atB = inbox(b)
  const sent: Buffer[] = []
  for (let i = 0; i < 30; i++) {
    const payload = Buffer.alloc(32, i)
    payload.writeUInt32BE(i, 0)
    const keep = Buffer.from(payload)
    await a.send(b.address, payload)
    t.true(payload.equals(keep), 'the layer corrupts a copy')
    sent.push(keep)
  }
  await waitFor(() => atB.length >= 30)
  t.is(a.stats().faulty.faulty_corrupted, 30)
  const bitsFlipped = new Set<number>()
  for (let i = 0; i < 30; i++) {
    const got = atB[i].data
    t.is(got.length, 32)
    let diff = 0
    for (let k = 0; k < 32; k++) {
      const x = got[k] ^ sent[i][k]
      diff += popcount(x)
      if (x) bitsFlipped.add(k * 8 + Math.log2(x))
    }
    t.is(diff, 1, `message ${i}`)
  }
  t.true(bitsFlipped.size > 10, 'the flipped bit is random')
})

test('reorder: held datagrams are overtaken, none is lost', async (t) => {
  const a = await open(t, { stack: [new FaultyTransport({ seed: 9, reorder: 0.3, reorderDelay: 50, direction: 'send' })] })
  const b = await open(t)
  const atB = inbox(b)
  for (let i = 0; i < 100; i++) await a.send(b.address, Buffer.from(String(i)))
  await waitFor(() => atB.length >= 100)
  const order = atB.map((m) => Number(m.data.toString()))
  t.deepEqual([...order].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i))
  t.notDeepEqual(order, Array.from({ length: 100 }, (_, i) => i))
  const reordered = n(a.stats().faulty.faulty_reordered)
  t.true(reordered > 10 && reordered < 50, `reordered ${reordered}`)
})

test("Delay on 'send' in both nodes: an echo takes at least 2 × latency", async (t) => {
  const LAT = 40
  const a = await open(t, { stack: [new Delay({ latency: () => LAT, on: 'send' })] })
  const b = await open(t, { stack: [new Delay({ latency: () => LAT, on: 'send' })] })
  b.on('message', (from, data) => void b.send(from, data)) // echo
  const atA = inbox(a)
  const rtts: number[] = []
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now()
    await a.send(b.address, Buffer.from(`e${i}`))
    await waitFor(() => atA.length === i + 1, 3000, `echo ${i}`)
    rtts.push(atA[i].at - t0)
  }
  for (const r of rtts) t.true(r >= 2 * LAT && r < 2 * LAT + 500, `echo rtt ${r.toFixed(1)} ms, latency ${LAT} ms each way`)
  t.is(a.stats().delay.delayed, 5)
  t.is(b.stats().delay.delayed, 5)

  // The latency function sees (from = this node, to = the peer) on send, and may vary per pair.
  const seen: string[] = []
  const c = await open(t, { stack: [new Delay({ latency: (from, to) => (seen.push(`${from.key}>${to.key}`), 0) })] })
  await c.send(b.address, Buffer.from('x'))
  t.deepEqual(seen, [`${c.address.key}>${b.address.key}`])
  t.is(c.stats().delay.passed, 1) // no delay, nothing queued: straight through
})

test("Delay on 'receive' delays incoming datagrams by the latency of (peer, this node)", async (t) => {
  const a = await open(t)
  const seen: string[] = []
  const b = await open(t, {
    stack: [new Delay({ latency: (from, to) => (seen.push(`${from.key}>${to.key}`), 60), on: 'receive' })],
  })
  const atB = inbox(b)
  const t0 = performance.now()
  await a.send(b.address, Buffer.from('slow'))
  await waitFor(() => atB.length === 1)
  const dt = atB[0].at - t0
  t.true(dt >= 60 && dt < 600, `arrived after ${dt.toFixed(1)} ms`)
  t.deepEqual(seen, [`${a.address.key}>${b.address.key}`])
})

test('Delay bandwidth: a burst takes time proportional to its size; the queue is bounded', async (t) => {
  const BW = 100 // bytes per ms
  async function burst(count: number): Promise<number> {
    const a = await open(t, { stack: [new Delay({ latency: () => 0, bandwidth: () => BW })] })
    const b = await open(t)
    const atB = inbox(b)
    // One datagram first, outside the clock: the path's one-time costs (the native stage's first
    // run, the first allocation of each side) are not bandwidth.
    await a.send(b.address, Buffer.alloc(9))
    await waitFor(() => atB.length === 1, 5000, 'the warm-up datagram')
    await sleep(20)
    const t0 = performance.now()
    for (let i = 0; i < count; i++) await a.send(b.address, Buffer.alloc(999)) // 1000 bytes with the tag
    await waitFor(() => atB.length === count + 1, 5000, `${count} datagrams`)
    return atB[count].at - t0
  }
  const t10 = await burst(10) // 10 000 bytes at 100 bytes/ms: 100 ms
  const t40 = await burst(40) // 400 ms
  t.true(t10 >= 100 && t10 < 500, `10 kB in ${t10.toFixed(0)} ms`)
  t.true(t40 >= 400 && t40 < 1200, `40 kB in ${t40.toFixed(0)} ms`)
  // Proportional: the extra 30 kB cost about 300 ms more (generous bounds for a loaded machine).
  t.true(t40 - t10 > 250 && t40 / t10 > 2, `10 kB in ${t10.toFixed(0)} ms, 40 kB in ${t40.toFixed(0)} ms`)

  const a = await open(t, { stack: [new Delay({ latency: () => 50, maxQueueBytes: 5000 })] })
  const b = await open(t)
  const atB = inbox(b)
  for (let i = 0; i < 10; i++) await a.send(b.address, Buffer.alloc(999))
  t.is(a.stats().delay.dropped_queue, 5)
  t.is(a.stats().delay.queued_bytes, 5000)
  await waitFor(() => atB.length === 5)
  await sleep(50)
  t.is(atB.length, 5)
  t.is(a.stats().delay.queued_bytes, 0)
})

test('in virtual time the layers are exact and deterministic', async (t) => {
  async function run(seed: number): Promise<{ arrivals: Array<[number, string]>; stats: Record<string, number> }> {
    const sim = new SimulatedNetwork({ seed, defaultLink: { latency: 5 } })
    try {
      const [a, b] = await sim.createNodes(2, {
        stack: (i) =>
          i === 0
            ? [new Delay({ latency: () => 30, bandwidth: () => 10 }), new FaultyTransport({ seed, drop: 0.2, duplicate: 0.2, reorder: 0.2, corrupt: 0.1, direction: 'send' })]
            : [],
      })
      const arrivals: Array<[number, string]> = []
      b.on('message', (_f, d) => arrivals.push([sim.now, d.toString('hex')]))
      // Delay alone first: 99 bytes + tag at 10 bytes/ms = 10 ms, + 30 ms Delay + 5 ms link.
      for (let i = 0; i < 50; i++) await a.send(b.address, Buffer.alloc(99, i))
      await sim.runFor(5000)
      return { arrivals, stats: a.stats().faulty }
    } finally {
      await sim.close()
    }
  }
  const r1 = await run(77)
  const r2 = await run(77)
  t.deepEqual(r1, r2)
  t.true(r1.stats.faulty_dropped > 0 && r1.stats.faulty_duplicated > 0 && r1.stats.faulty_reordered > 0 && r1.stats.faulty_corrupted > 0, JSON.stringify(r1.stats))
  t.is(r1.arrivals.length, r1.stats.passed + r1.stats.faulty_duplicated)

  // Delay alone: exact arrival times.
  const sim = new SimulatedNetwork({ seed: 1, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const [a, b] = await sim.createNodes(2, { stack: (i) => (i === 0 ? [new Delay({ latency: () => 30, bandwidth: () => 10 })] : []) })
  const at: number[] = []
  b.on('message', () => at.push(sim.now))
  for (let i = 0; i < 3; i++) await a.send(b.address, Buffer.alloc(99))
  await sim.runFor(1000)
  t.deepEqual(at, [10 + 30 + 5, 20 + 30 + 5, 30 + 30 + 5])
})

test('FaultyTransport with tags only touches datagrams with those tags; bad options throw', async (t) => {
  const sim = new SimulatedNetwork({ seed: 3 })
  t.teardown(() => sim.close())
  const [a, b] = await sim.createNodes(2, { stack: (i) => (i === 0 ? [new FaultyTransport({ seed: 1, drop: 1, tags: [9] })] : []) })
  const got: string[] = []
  b.on('message', (_f, d) => got.push(d.toString()))
  await a.send(b.address, Buffer.from('app data, tag 0'))
  t.is(await Promise.all([a.ping(b.address), sim.runFor(100)]).then(([rtt]) => rtt), 10) // pings are the transport's own
  t.deepEqual(got, ['app data, tag 0'])
  t.is(n(a.stats().faulty.faulty_dropped), 0)

  for (const bad of [{ drop: 2 }, { corrupt: -0.1 }, { direction: 'up' }, { reorderDelay: Infinity }]) {
    t.throws(() => new FaultyTransport(bad as never), { code: 'ERR_DECCOM_INVALID_ARGUMENT' })
  }
  t.throws(() => new Delay({} as never), { code: 'ERR_DECCOM_INVALID_ARGUMENT' })
  t.throws(() => new Delay({ latency: () => 1, on: 'sideways' as never }), { code: 'ERR_DECCOM_INVALID_ARGUMENT' })
})
