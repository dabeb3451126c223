/**
 * SimulatedNetwork's native delivery lane (`nativeDelivery: true`): Kademlia nodes right on their
 * SimTransport run their datagrams and timers in native code. A run must give the same events in
 * the same order as without the lane: every counter, every routing table and every lookup equal.
 * Imports the BUILT package (dist/), as a user would.
 */
import test from 'ava'
import crypto from 'node:crypto'

import { DeccomError, Delay, ErrorCode, Identity, Kademlia, Node, Noise, ReliableUdp, SimErrorCode, SimulatedNetwork } from '../dist/index.js'
import { until } from './helpers/wait'

const digest = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex')

const kad = (n: Node) => n.stack.find(Kademlia)!

/**
 * 160 Kademlia nodes join through node 0 on jittery links (every 7th with a Delay layer between
 * Kademlia and the transport, so it stays out of the lane), exchange application messages, look
 * each other up; one leaves midway. Returns everything observable, as text.
 */
async function scenario(nativeDelivery: boolean, threads = 1): Promise<{ snapshot: string; native: number }> {
  const sim = new SimulatedNetwork({ seed: 11, defaultLink: { latency: 10, jitter: 40 }, trace: false, nativeDelivery, threads })
  try {
    const boot = '10.0.0.1:4000'
    const nodes: Node[] = []
    const got: string[] = []
    for (let b = 0; b < 160; b += 40) {
      const batch = await sim.createNodes(40, {
        stack: (i) => {
          const k = new Kademlia({ bootstrap: b + i === 0 ? [] : [boot] })
          return (b + i) % 7 === 3 ? [k, new Delay({ latency: () => 3 })] : [k]
        },
      })
      for (const n of batch) n.on('message', (from, data) => got.push(`${sim.now} ${from.address.key}>${n.address.key} ${data.toString()}`))
      nodes.push(...batch)
      await sim.runFor(1500)
    }
    // Application datagrams (another tag: handed back by the lane) between lane nodes.
    for (let i = 0; i < 20; i++) await nodes[i].send(nodes[(i * 13 + 5) % nodes.length].address, Buffer.from(`m${i}`))
    // A hostile sender: garbage and truncated or bit-flipped Kademlia datagrams with Kademlia's tag
    // (the lane delivers them to the native node as they are; the node drops and counts them).
    const hostile = sim.createTransport({ address: '10.9.9.9:4000' })
    await hostile.start()
    const rnd = sim.random
    for (let i = 0; i < 300; i++) {
      const bytes = Buffer.alloc(rnd.int(200))
      rnd.bytes(bytes)
      if (i % 3 === 0) bytes.set([1, 1]) // a plausible version and type, then garbage
      hostile.send(nodes[rnd.int(nodes.length)].address, bytes, 3)
    }
    await sim.runFor(20_000)
    await nodes[50].close()
    const found: string[] = []
    for (let i = 0; i < 60; i++) {
      const to = nodes[(i * 37 + 11) % nodes.length]
      kad(nodes[i]).lookup(to.id, { stopAtTarget: true }).then(
        (r) => found.push(`${i} ${r.peer?.address.key ?? '-'} ${r.hops}`),
        (e: DeccomError) => found.push(`${i} ${e.code}`),
      )
    }
    await sim.runFor(20_000)
    await hostile.stop()
    const { native_events: native = 0, ...stats } = sim.stats()
    const tables = nodes.map((n) => (n === nodes[50] ? [] : kad(n).closest(n.id, 30).map((p) => p.address.key)))
    const layers = nodes.map((n) => n.stats())
    return { snapshot: JSON.stringify({ stats, tables, layers, got, found: found.sort() }), native }
  } finally {
    await sim.close()
  }
}

test('with the lane, a run gives exactly the events, tables, counters and lookups it gives without', async (t) => {
  const js = await scenario(false)
  const lane = await scenario(true)
  t.is(js.native, 0)
  t.true(lane.native > 0.5 * JSON.parse(lane.snapshot).stats.events, `most events ran in the lane (${lane.native})`)
  const a = JSON.parse(js.snapshot)
  const b = JSON.parse(lane.snapshot)
  t.true(a.stats.sent > 20_000, `${a.stats.sent} datagrams`)
  t.is(a.got.length, 20, 'every application message arrived')
  t.true(a.found.filter((f: string) => !f.includes('ERR')).length >= 55)
  const dropped = (x: { layers: Record<string, Record<string, number>>[] }) =>
    x.layers.reduce((n, l) => n + Object.entries(l.kademlia ?? {}).filter(([k]) => k.startsWith('dropped_malformed')).reduce((m, [, v]) => m + v, 0), 0)
  t.true(dropped(a) >= 250, `the hostile datagrams were dropped as malformed (${dropped(a)})`)
  t.deepEqual(b.stats, a.stats)
  t.deepEqual(b.layers, a.layers)
  t.deepEqual(b.tables, a.tables)
  t.deepEqual(b.got, a.got)
  t.deepEqual(b.found, a.found)
})

test('on several threads: the same run for 2 and 3 threads, run after run, and the network works as on one', async (t) => {
  const two = await scenario(true, 2)
  const three = await scenario(true, 3)
  const again = await scenario(true, 2)
  t.is(three.snapshot, two.snapshot, 'three threads give the run of two')
  t.is(again.snapshot, two.snapshot, 'one seed, one run')
  const a = JSON.parse(two.snapshot)
  const one = JSON.parse((await scenario(true, 1)).snapshot)
  t.notDeepEqual(a.stats, one.stats, 'not the run of one thread (the lane orders events its own way)')
  t.true(two.native > 0.5 * a.stats.events, `most events ran in the lane (${two.native})`)
  t.true(a.stats.sent > 20_000, `${a.stats.sent} datagrams`)
  t.is(a.got.length, 20, 'every application message arrived')
  t.true(a.found.filter((f: string) => !f.includes('ERR')).length >= 55, `lookups found: ${a.found.join(', ')}`)
  const dropped = a.layers.reduce((n: number, l: Record<string, Record<string, number>>) => n + Object.entries(l.kademlia ?? {}).filter(([k]) => k.startsWith('dropped_malformed')).reduce((m, [, v]) => m + v, 0), 0)
  t.true(dropped >= 250, `the hostile datagrams were dropped as malformed (${dropped})`)
  // Every table is as full as on one thread, give or take.
  const sizes = (x: { tables: string[][] }) => x.tables.reduce((n, tb) => n + tb.length, 0)
  t.true(Math.abs(sizes(a) - sizes(one)) <= 0.05 * sizes(one), `table entries ${sizes(a)} against ${sizes(one)}`)
})

test('threads: checked', (t) => {
  const refused = (f: () => unknown) => t.is((t.throws(f) as DeccomError).code, ErrorCode.INVALID_ARGUMENT)
  refused(() => new SimulatedNetwork({ trace: false, threads: 2 })) // no nativeDelivery
  refused(() => new SimulatedNetwork({ nativeDelivery: true, trace: false, threads: 0 }))
  refused(() => new SimulatedNetwork({ nativeDelivery: true, trace: false, threads: 1.5 }))
  refused(() => new SimulatedNetwork({ nativeDelivery: true, trace: false, threads: 1000 }))
  refused(() => new SimulatedNetwork({ nativeDelivery: true, trace: false, threads: 2, defaultLink: { latency: 0, jitter: 5 } }))
  t.notThrows(() => new SimulatedNetwork({ nativeDelivery: true, trace: false, threads: 1, defaultLink: { latency: 0 } }).close())
})

test("on several threads, runUntil's condition is checked after every window, and maxEvents still stops a run", async (t) => {
  const sim = new SimulatedNetwork({ seed: 3, defaultLink: { latency: 10, jitter: 5 }, trace: false, nativeDelivery: true, threads: 2 })
  t.teardown(() => sim.close())
  await sim.createNodes(30, { stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'] })] })
  let windows = 0
  let last = sim.now
  await sim.runUntil(
    () => {
      // Each check follows one window; virtual time never goes backwards.
      t.true(sim.now >= last)
      if (sim.now > last) windows++
      last = sim.now
      return sim.stats().delivered >= 500
    },
    { timeout: 60_000 },
  )
  const delivered = sim.stats().delivered
  t.log(`${delivered} delivered after ${windows} windows`)
  t.true(delivered >= 500 && delivered < 700, `stopped in the window that made it true (${delivered} delivered)`)
  t.true(windows > 5, `${windows} windows`)
  const err = await t.throwsAsync(sim.runFor(60_000, { maxEvents: 321 }))
  t.is((err as DeccomError).code, SimErrorCode.SIM_EVENT_LIMIT)
})

test("runUntil's condition is checked after every event the lane runs", async (t) => {
  for (const nativeDelivery of [false, true]) {
    const sim = new SimulatedNetwork({ seed: 3, defaultLink: { latency: 10, jitter: 5 }, trace: false, nativeDelivery })
    await sim.createNodes(30, { stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'] })] })
    await sim.runUntil(() => sim.stats().delivered >= 500, { timeout: 60_000 })
    t.is(sim.stats().delivered, 500, `stopped at the event that made it true (nativeDelivery ${nativeDelivery})`)
    const err = await t.throwsAsync(sim.runFor(60_000, { maxEvents: 321 }))
    t.is((err as DeccomError).code, SimErrorCode.SIM_EVENT_LIMIT)
    await sim.close()
  }
})

test('the lane refuses what it does not model', async (t) => {
  const refused = (f: () => unknown) => t.is((t.throws(f) as DeccomError).code, ErrorCode.INVALID_ARGUMENT)
  refused(() => new SimulatedNetwork({ nativeDelivery: true })) // the trace is on by default
  refused(() => new SimulatedNetwork({ nativeDelivery: true, trace: false, defaultLink: { loss: 0.1 } }))
  refused(() => new SimulatedNetwork({ nativeDelivery: true, trace: false, link: () => undefined }))
  refused(() => new SimulatedNetwork({ nativeDelivery: true, trace: false, defaultLink: { seed: 4 } }))
  const sim = new SimulatedNetwork({ nativeDelivery: true, trace: false })
  t.teardown(() => sim.close())
  refused(() => sim.createNat({ type: 'full-cone' } as never))
  refused(() => sim.exportTrace({ write: () => {} }))
  await t.throwsAsync(sim.createNodes(2, { region: () => 'eu' }), { instanceOf: DeccomError, code: ErrorCode.INVALID_ARGUMENT })
})

test('a node that leaves: its datagrams no longer reach the lane node, its counts stay', async (t) => {
  const sim = new SimulatedNetwork({ seed: 5, defaultLink: { latency: 10 }, trace: false, nativeDelivery: true })
  t.teardown(() => sim.close())
  const nodes = await sim.createNodes(20, { stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'] })] })
  await sim.runFor(10_000)
  const leaving = nodes[7]
  const before = leaving.stats()
  t.true(before.kademlia.sent > 0)
  t.is(before.sim.sent, before.kademlia.sent, 'the transport counts what the lane sent for it')
  await leaving.close()
  const after = leaving.stats()
  t.is(after.kademlia.sent, before.kademlia.sent, 'what the lane counted is kept after it leaves')
  t.is(after.sim.received, before.sim.received)
  // Lookups of the node that left: the lane hands the datagrams to its address back, and they
  // are dropped with no route.
  const noRoute = sim.stats().dropped_no_route
  for (const n of nodes.slice(0, 5)) kad(n).lookup(leaving.id).catch(() => {})
  await sim.runFor(30_000)
  t.true(sim.stats().dropped_no_route > noRoute)
})

test('after a lane switched the process to mimalloc, real sockets still carry messages whole (blocks of both allocators freed by their own)', async (t) => {
  // Blocks made before the switch (these nodes' sockets and endpoints) are freed by the system
  // allocator, later ones by mimalloc, in the same process and threads.
  const mk = () => Node.create({ identity: Identity.generate(), host: '127.0.0.1', stack: [new ReliableUdp(), new Noise()] })
  const a = await mk()
  const b = await mk()
  t.teardown(() => Promise.all([a.close(), b.close()]))
  const got: Buffer[] = []
  b.on('message', (_from: unknown, data: Buffer) => got.push(data))
  const sim = new SimulatedNetwork({ seed: 4, trace: false, nativeDelivery: true })
  await sim.createNodes(20, { stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'] })] })
  await sim.runFor(5_000)
  const sent: Buffer[] = []
  for (let i = 0; i < 8; i++) {
    const data = crypto.randomBytes(1 + i * 97_531)
    sent.push(data)
    await a.stack.find(ReliableUdp)!.send(b.address, data)
  }
  await sim.runFor(5_000)
  await sim.close()
  await until(() => got.length === sent.length, 10_000)
  t.deepEqual(got.map(digest), sent.map(digest))
})
