/**
 * The simulator's research options: per-pair latency (regions, functions), bandwidth per node,
 * churn from session-time distributions, NAT mixes, and the JSONL trace export with its report.
 * Imports the BUILT package (dist/).
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { PassThrough } from 'node:stream'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import {
  Churn,
  type ChurnOptions,
  DeccomError,
  ErrorCode,
  Kademlia,
  type Node,
  type RegionLatency,
  type SessionDistribution,
  SimErrorCode,
  SimulatedNetwork,
  meanSession,
} from '../dist/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..')

/** Pings `pairs` concurrently and runs the simulation until all have settled; the RTTs. */
async function pingAll(sim: SimulatedNetwork, pairs: Array<[Node, Node]>): Promise<number[]> {
  const out: Array<number | undefined> = pairs.map(() => undefined)
  let failed: unknown
  pairs.forEach(([a, b], k) => {
    a.ping(b.address, { timeout: 10_000 }).then(
      (rtt) => (out[k] = rtt),
      (e: unknown) => (failed = e),
    )
  })
  await sim.runUntil(() => failed !== undefined || out.every((x) => x !== undefined), { timeout: 20_000 })
  if (failed !== undefined) throw failed
  return out as number[]
}

const GEO: RegionLatency = {
  matrix: {
    eu: { eu: 8, us: 40, asia: 90 },
    us: { eu: 50, us: 12, asia: 70 },
    asia: { eu: 110, us: 75, asia: 15 },
  },
  jitter: 6,
  weights: { eu: 3, us: 2, asia: 1 },
}

test('regions: counts follow the weights, and every measured RTT is the matrix round trip plus at most twice the jitter', async (t) => {
  const sim = new SimulatedNetwork({ seed: 11, defaultLink: { latency: 1000 } }) // the default must not be used
  t.teardown(() => sim.close())
  const nodes = await sim.createNodes(60, { latency: GEO })
  const regions = nodes.map((x) => sim.regionOf(x.address))
  t.deepEqual(
    { eu: regions.filter((r) => r === 'eu').length, us: regions.filter((r) => r === 'us').length, asia: regions.filter((r) => r === 'asia').length },
    { eu: 30, us: 20, asia: 10 },
  )
  // Seeded order: not simply the first 30 in eu.
  t.not(regions.slice(0, 30).filter((r) => r === 'eu').length, 30)
  const pairs: Array<[Node, Node]> = []
  for (let i = 0; i < nodes.length; i++) for (let k = 1; k <= 6; k++) pairs.push([nodes[i]!, nodes[(i * 7 + k * 11) % nodes.length]!])
  const rtts = await pingAll(
    sim,
    pairs.filter(([a, b]) => a !== b),
  )
  const byPair = new Map<string, number[]>()
  pairs
    .filter(([a, b]) => a !== b)
    .forEach(([a, b], k) => {
      const ra = sim.regionOf(a.address)!
      const rb = sim.regionOf(b.address)!
      const base = GEO.matrix[ra]![rb]! + GEO.matrix[rb]![ra]!
      const rtt = rtts[k]!
      t.true(rtt >= base && rtt < base + 2 * 6, `${ra}→${rb}: rtt ${rtt}, matrix round trip ${base}`)
      const key = `${ra}>${rb}`
      byPair.set(key, [...(byPair.get(key) ?? []), rtt - base])
    })
  t.is(byPair.size, 9, 'every ordered pair of regions was measured')
  // The jitter is really drawn: the extra delay varies, and its mean is near 2 × 6 / 2.
  const extra = [...byPair.values()].flat()
  t.true(Math.max(...extra) - Math.min(...extra) > 4)
  const mean = extra.reduce((s, x) => s + x, 0) / extra.length
  t.true(mean > 4.5 && mean < 7.5, `mean extra ${mean}`)
})

test('latency function: asked per pair of nodes, exact RTTs; explicit regions are checked against the matrix', async (t) => {
  const sim = new SimulatedNetwork({ seed: 3 })
  t.teardown(() => sim.close())
  const nodes = await sim.createNodes(8, { latency: (a, b) => 2 + 3 * Math.abs(a.index - b.index) })
  const pairs: Array<[Node, Node]> = [
    [nodes[0]!, nodes[7]!],
    [nodes[2]!, nodes[3]!],
    [nodes[5]!, nodes[1]!],
  ]
  t.deepEqual(await pingAll(sim, pairs), [2 * (2 + 21), 2 * (2 + 3), 2 * (2 + 12)])
  const err = await t.throwsAsync(sim.createNodes(2, { latency: GEO, region: (i) => (i === 0 ? 'eu' : 'mars') }))
  t.true(err instanceof DeccomError)
  t.is((err as DeccomError).code, ErrorCode.INVALID_ARGUMENT)
  t.regex(err!.message, /mars/)
})

/** A burst of `count` datagrams of `size` payload bytes from `from` to the `to` nodes (round robin), all sent at the current virtual time. */
async function burst(from: Node, to: Node[], count: number, size: number): Promise<void> {
  for (let k = 0; k < count; k++) await from.send(to[k % to.length]!.address, Buffer.alloc(size, k & 255))
}

test('bandwidth: an uplink serializes everything a node sends, over all destinations, and its queue bound drops the excess', async (t) => {
  const sim = new SimulatedNetwork({ seed: 5, defaultLink: { latency: 7 } })
  t.teardown(() => sim.close())
  const [src, ...dst] = await sim.createNodes(6, { bandwidth: (i) => (i === 0 ? { up: 100 } : undefined) })
  const arrivals: number[] = []
  for (const d of dst) d.on('message', () => arrivals.push(sim.now))
  await burst(src!, dst, 50, 999) // 50 × 1000 wire bytes at 100 bytes/ms: 500 ms
  await sim.runFor(2000)
  t.is(arrivals.length, 50)
  arrivals.sort((a, b) => a - b)
  // The k-th datagram leaves the uplink at (k + 1) × 10 ms and takes 7 ms on the link.
  arrivals.forEach((at, k) => t.true(Math.abs(at - ((k + 1) * 10 + 7)) < 1e-6, `datagram ${k} at ${at}`))
  const rate = (50 * 1000) / (arrivals[49]! - 7) // bytes per ms through the uplink
  t.true(rate <= 100 + 1e-9, `rate ${rate}`)

  // A bound of 20 000 bytes: a burst of 50 keeps 20 (the one being serialized counts as backlog).
  const sim2 = new SimulatedNetwork({ seed: 5, defaultLink: { latency: 7 } })
  t.teardown(() => sim2.close())
  const [s2, ...d2] = await sim2.createNodes(3, { bandwidth: (i) => (i === 0 ? { up: 100, queueBytes: 20_000 } : undefined) })
  let got = 0
  for (const d of d2) d.on('message', () => got++)
  await burst(s2!, d2, 50, 999)
  await sim2.runFor(2000)
  t.is(got, 20)
  t.is(sim2.stats().dropped_uplink, 30)
  t.is(sim2.stats().sent, 50)
})

test('bandwidth: a downlink serializes what a node receives from all sources; without it the same traffic arrives at once', async (t) => {
  const run = async (down: number | undefined): Promise<number[]> => {
    const sim = new SimulatedNetwork({ seed: 8, defaultLink: { latency: 5 } })
    try {
      const [sink, ...srcs] = await sim.createNodes(5, { bandwidth: (i) => (i === 0 && down !== undefined ? { down } : undefined) })
      const at: number[] = []
      sink!.on('message', () => at.push(sim.now))
      for (const s of srcs) await burst(s, [sink!], 10, 499) // 4 × 10 × 500 wire bytes
      await sim.runFor(5000)
      return at
    } finally {
      await sim.close()
    }
  }
  const free = await run(undefined)
  t.is(free.length, 40)
  t.true(free.every((x) => x === 5))
  const slow = await run(50) // 50 bytes/ms: 10 ms per datagram
  t.is(slow.length, 40)
  slow.forEach((at, k) => t.true(Math.abs(at - (5 + (k + 1) * 10)) < 1e-6, `datagram ${k} at ${at}`))
  const rate = (40 * 500) / (slow[39]! - 5)
  t.true(rate <= 50 + 1e-9, `rate ${rate}`)
})

/** Runs churn on `n` bare nodes for `ms` and returns the churn. */
async function churnRun(seed: number, n: number, ms: number, opts: ChurnOptions): Promise<Churn> {
  const sim = new SimulatedNetwork({ seed })
  try {
    const churn = new Churn(opts)
    await sim.createNodes(n, { churn })
    await sim.runFor(ms)
    return churn
  } finally {
    await sim.close()
  }
}

const DISTRIBUTIONS: Array<[string, SessionDistribution, number]> = [
  ['exponential', { type: 'exponential', mean: 1000 }, 0.05],
  ['weibull', { type: 'weibull', shape: 0.7, scale: 1000 / 1.2658 }, 0.07],
  ['pareto', { type: 'pareto', shape: 3, scale: 2000 / 3 }, 0.05],
]

for (const [name, session, tol] of DISTRIBUTIONS) {
  test(`churn: ${name} session times have the distribution's mean over thousands of sessions`, async (t) => {
    const mean = meanSession(session)
    t.true(Math.abs(mean - 1000) < 1, `mean of the ${name} distribution: ${mean}`)
    const churn = await churnRun(21, 60, 120_000, { session, offline: { type: 'exponential', mean: 200 } })
    const s = churn.stats()
    t.true(s.sessions_completed > 4000, `${s.sessions_completed} sessions`)
    t.is(s.leaves, s.sessions_completed)
    t.true(s.joins >= s.leaves - 60 && s.joins <= s.leaves, `${s.joins} joins, ${s.leaves} leaves`)
    t.is(s.join_errors, 0)
    const m = churn.meanSession()
    t.true(Math.abs(m - mean) / mean < tol, `measured mean ${m}, expected ${mean}`)
    // The shape, not only the mean: P(X > mean) of the distribution.
    const samples = churn.sessions()
    const above = samples.filter((x) => x > mean).length / samples.length
    const expected = session.type === 'exponential' ? Math.exp(-1) : session.type === 'weibull' ? Math.exp(-Math.pow(mean / session.scale, session.shape)) : Math.pow(session.scale / mean, session.shape)
    t.true(Math.abs(above - expected) < 0.03, `P(X > mean) ${above}, expected ${expected}`)
    if (session.type === 'pareto') t.true(Math.min(...samples) >= session.scale)
  })
}

test('churn: leaving closes the node and removes it from sim.nodes; "same" comes back with the identity and address, "new" with fresh ones', async (t) => {
  for (const rejoin of ['same', 'new'] as const) {
    const sim = new SimulatedNetwork({ seed: 4 })
    const left: string[] = []
    const joined: Array<[number, Node]> = []
    const churn = new Churn({
      session: { type: 'exponential', mean: 500 },
      offline: { type: 'exponential', mean: 100 },
      rejoin,
      onLeave: (node) => left.push(node.address.key),
      onJoin: (node, slot) => joined.push([slot, node]),
    })
    const first = await sim.createNodes(10, { churn })
    const firstAddress = first.map((x) => x.address)
    await sim.runUntil(() => joined.length >= 5, { timeout: 60_000 })
    t.true(left.length >= 5)
    for (const [slot, node] of joined.slice(0, 5)) {
      if (rejoin === 'same') {
        t.is(node.address, firstAddress[slot])
        t.true(node.identity.id.equals(first[slot]!.identity.id))
      } else {
        t.not(node.address, firstAddress[slot])
        t.false(node.identity.id.equals(first[slot]!.identity.id))
      }
    }
    // sim.nodes holds the online nodes only.
    t.is(sim.nodes.length, churn.online)
    for (let i = 0; i < 10; i++) {
      const cur = churn.current(i)
      if (cur !== undefined) t.true(sim.nodes.includes(cur))
    }
    churn.stop()
    const before = sim.stats().events
    await sim.runFor(10_000)
    t.true(sim.stats().events - before < 50, 'no churn events after stop()')
    await sim.close()
  }
})

test('churn is deterministic from the seed: two runs of a Kademlia network give the same trace hash and sessions', async (t) => {
  const run = async (seed: number): Promise<{ hash: string; sessions: readonly number[]; stats: Record<string, number> }> => {
    const sim = new SimulatedNetwork({ seed, defaultLink: { latency: 10, jitter: 20 } })
    try {
      const churn = new Churn({
        session: { type: 'weibull', shape: 0.6, scale: 20_000 },
        offline: { type: 'pareto', shape: 2, scale: 2_000 },
        rejoin: 'new',
      })
      // The bootstrap node stays; the 39 others churn, and come back as new nodes.
      await sim.createNodes(1, { stack: () => [new Kademlia({ seed: 1, refreshInterval: 10_000 })], latency: GEO })
      await sim.createNodes(39, {
        stack: (i) => [new Kademlia({ bootstrap: ['10.0.0.1:4000'], seed: i + 2, refreshInterval: 10_000 })],
        latency: GEO,
        churn,
      })
      await sim.runFor(90_000)
      return { hash: sim.trace.hash, sessions: [...churn.sessions()], stats: churn.stats() }
    } finally {
      await sim.close()
    }
  }
  const a = await run(77)
  const b = await run(77)
  t.true(a.stats.leaves > 20 && a.stats.joins > 10, JSON.stringify(a.stats))
  t.is(a.hash, b.hash)
  t.deepEqual(a.sessions, b.sessions)
  t.deepEqual(a.stats, b.stats)
  const c = await run(78)
  t.not(c.hash, a.hash)
})

test('NAT mix: exact counts per type, a NAT per node (or perNat), seeded placement; NATed senders appear at their NAT', async (t) => {
  const mix = { open: 0.4, 'full-cone': 0.1, 'port-restricted': 0.3, symmetric: 0.2 }
  const placement = async (seed: number, perNat?: number) => {
    const sim = new SimulatedNetwork({ seed })
    try {
      const [server] = await sim.createNodes(1)
      const heard = new Map<string, string>()
      server!.on('message', (from, data) => heard.set(data.toString(), from.address.host))
      const nodes = await sim.createNodes(200, { natMix: { ...mix, perNat } })
      for (let i = 0; i < nodes.length; i++) await nodes[i]!.send(server!.address, Buffer.from(String(i)))
      await sim.runFor(100)
      const types: Record<string, number> = {}
      for (const nat of sim.nats) types[nat.type] = (types[nat.type] ?? 0) + 1
      const behind = nodes.map((_, i) => !heard.get(String(i))!.startsWith('10.'))
      return { types, behind, heard: heard.size }
    } finally {
      await sim.close()
    }
  }
  const a = await placement(9)
  t.is(a.heard, 200)
  t.deepEqual(a.types, { 'full-cone': 20, 'port-restricted': 60, symmetric: 40 })
  t.is(a.behind.filter((x) => !x).length, 80, '80 public nodes')
  t.deepEqual((await placement(9)).behind, a.behind, 'the same seed places the same nodes')
  t.notDeepEqual((await placement(10)).behind, a.behind, 'another seed, another placement')
  const shared = await placement(9, 3)
  t.deepEqual(shared.types, { 'full-cone': 7, 'port-restricted': 20, symmetric: 14 })
  const err = await t.throwsAsync(new SimulatedNetwork().createNodes(2, { natMix: mix, behind: () => undefined }))
  t.is((err as DeccomError).code, ErrorCode.INVALID_ARGUMENT)
})

interface Line {
  t: number
  ev: string
  [k: string]: unknown
}

test('trace export: every line parses, the datagram lines match the network counters, user events are in order; the export does not change the run', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'deccom-trace-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'run.jsonl')
  const run = async (exportTo: string | undefined) => {
    const sim = new SimulatedNetwork({ seed: 31, defaultLink: { latency: 10, jitter: 10, loss: 0.03, duplicate: 0.02 } })
    try {
      const exp = exportTo !== undefined ? sim.exportTrace({ path: exportTo, chunkBytes: 4096 }) : undefined
      const kads = Array.from({ length: 30 }, (_, i) => new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], seed: i + 1 }))
      const nodes = await sim.createNodes(30, { stack: (i) => [kads[i]!], latency: GEO, bandwidth: { up: 200, down: 400 } })
      await sim.runFor(20_000)
      let done = 0
      for (let k = 0; k < 20; k++) {
        const from = k % 30
        const target = nodes[(k * 7 + 3) % 30]!.identity.id
        sim.traceEvent('lookup_start', { id: k, node: nodes[from]!.address.key })
        kads[from]!.lookup(target, { stopAtTarget: true }).then(
          (r) => {
            sim.traceEvent('lookup_end', { id: k, hops: r.hops, ms: r.elapsed, found: r.peer !== null })
            done++
          },
          () => done++,
        )
      }
      await sim.runUntil(() => done === 20, { timeout: 60_000 })
      // Close the nodes and let what is in flight land, so that every datagram sent has an outcome.
      await Promise.all(nodes.map((x) => x.close()))
      await sim.runFor(5000)
      const stats = sim.stats()
      const lines = exp?.lines
      await sim.close()
      return { stats, hash: sim.trace.hash, lines }
    } finally {
      await sim.close()
    }
  }
  const on = await run(file)
  const off = await run(undefined)
  t.is(on.hash, off.hash, 'the export does not change the simulation')
  const lines: Line[] = readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Line)
  t.is(lines.length, on.lines ?? -1)
  const count = (ev: string): number => lines.filter((l) => l.ev === ev).length
  const s = on.stats
  t.true(s.sent > 1000)
  t.is(count('send') + count('lost') + count('queue_drop') + count('uplink_drop'), s.sent)
  t.is(count('deliver'), s.delivered)
  t.is(count('lost'), s.lost)
  t.is(count('queue_drop'), s.dropped_queue)
  t.is(count('uplink_drop'), s.dropped_uplink)
  t.is(count('downlink_drop'), s.dropped_downlink)
  t.is(count('no_route'), s.dropped_no_route)
  t.is(count('send') + s.duplicated, count('deliver') + count('downlink_drop') + count('no_route'))
  const deliveredBytes = lines.filter((l) => l.ev === 'deliver').reduce((sum, l) => sum + (l.size as number), 0)
  t.is(deliveredBytes, s.bytes_delivered)
  for (let k = 1; k < lines.length; k++) t.true(lines[k]!.t >= lines[k - 1]!.t, `line ${k} goes back in time`)
  const dg = lines.find((l) => l.ev === 'send' && l.tag === 3)!
  t.regex(dg.from as string, /^10\.\d+\.\d+\.\d+:4000$/)
  t.regex(dg.p as string, /^01(01|02|03|04)$/) // Kademlia: version 1, then the type
  t.is(count('lookup_start'), 20)
  const ends = lines.filter((l) => l.ev === 'lookup_end')
  t.true(ends.length >= 18, `${ends.length} lookups answered`)
  t.true(ends.every((l) => typeof l.hops === 'number' && (l.hops as number) >= 0))

  // The report: an SVG with the three charts and a text summary that agrees with the trace.
  const svg = join(dir, 'run.svg')
  const r = spawnSync(process.execPath, [join(root, 'bench', 'sim-report.mjs'), file, '--svg', svg], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  t.regex(r.stdout, new RegExp(`lookups: ${ends.length}\\b`))
  t.regex(r.stdout, new RegExp(`datagrams sent: ${count('send') + count('lost') + count('queue_drop') + count('uplink_drop')}\\b`))
  t.regex(r.stdout, /kademlia FIND_NODE/)
  const text = readFileSync(svg, 'utf8')
  t.true(text.startsWith('<svg') || text.startsWith('<?xml'))
  t.regex(text, /lookup hops/)
  t.regex(text, /lookup latency/)
  t.regex(text, /traffic per message type/)
  t.true((text.match(/<polyline/g) ?? []).length >= 2)
})

test('trace export: a write sink gets the lines in chunks; closing stops it; a second export while one is active is refused', async (t) => {
  const sim = new SimulatedNetwork({ seed: 2 })
  t.teardown(() => sim.close())
  const chunks: string[] = []
  const exp = sim.exportTrace({ write: (c) => chunks.push(c), chunkBytes: 256 })
  t.throws(() => sim.exportTrace({ write: () => {} }), { code: ErrorCode.STACK_STATE })
  const [a, b] = await sim.createNodes(2)
  for (let k = 0; k < 20; k++) await a!.send(b!.address, Buffer.from('x'))
  sim.traceEvent('mark', { k: 1 })
  await sim.runFor(100)
  t.true(chunks.length >= 2, `${chunks.length} chunks`)
  t.true(chunks.every((c) => c.endsWith('\n')))
  exp.close()
  const all = chunks.join('').split('\n').filter(Boolean)
  t.is(all.length, 41)
  t.deepEqual(JSON.parse(all[20]!), { t: 0, ev: 'mark', k: 1 })
  await a!.send(b!.address, Buffer.from('y'))
  await sim.runFor(100)
  t.is(chunks.join('').split('\n').filter(Boolean).length, 41, 'nothing after close')
  sim.exportTrace({ write: () => {} }).close() // a new one may start
})

test('trace export: a stream sink that is not drained stops the run with ERR_DECCOM_SIM_TRACE_BACKLOG instead of growing', async (t) => {
  const sim = new SimulatedNetwork({ seed: 6 })
  t.teardown(() => sim.close())
  const stream = new PassThrough({ highWaterMark: 1024 }) // nobody reads it
  const exp = sim.exportTrace({ stream, maxBuffered: 8 * 1024, chunkBytes: 1024 })
  const [a, b] = await sim.createNodes(2)
  let sent = 0
  const pump = (): void => {
    void a!.send(b!.address, Buffer.alloc(10))
    sent++
    sim.clock.setTimeout(pump, 1)
  }
  sim.clock.setTimeout(pump, 1)
  const err = await t.throwsAsync(sim.runFor(60_000))
  t.is((err as DeccomError).code, SimErrorCode.SIM_TRACE_BACKLOG)
  t.true(stream.writableLength <= 8 * 1024 + 1024, `${stream.writableLength} bytes buffered`)
  t.true(sent < 1000, `${sent} datagrams before the stop`)
  t.true(exp.closed)
  t.is(exp.error, err)
  // The export is over; the simulation goes on without it.
  const held = stream.writableLength
  await sim.runFor(100)
  t.is(stream.writableLength, held)
})

test('regions behind NATs: the latency of a pair is found through the NAT mapping, in both directions', async (t) => {
  const sim = new SimulatedNetwork({ seed: 12, defaultLink: { latency: 1000 } })
  t.teardown(() => sim.close())
  const matrix = { eu: { eu: 5, us: 30 }, us: { eu: 40, us: 7 } }
  const [server] = await sim.createNodes(1, { latency: { matrix }, region: () => 'eu' })
  const homes = await sim.createNodes(4, { latency: { matrix }, region: () => 'us', natMix: { 'port-restricted': 1 }, bandwidth: { down: 100 } })
  t.is(sim.nats.length, 4)
  const times: Array<[string, number]> = []
  server!.on('message', (from, data) => {
    times.push(['at server', sim.now])
    void server!.send(from.address, data) // back to the NAT's mapped address
  })
  for (const h of homes) h.on('message', () => times.push(['at home', sim.now]))
  for (const h of homes) await h.send(server!.address, Buffer.alloc(99))
  await sim.runFor(5000)
  // us → eu: 40 ms; eu → us through the mapping: 30 ms, then the home's downlink (100 bytes / 100 per ms).
  t.deepEqual(times, [
    ['at server', 40],
    ['at server', 40],
    ['at server', 40],
    ['at server', 40],
    ['at home', 71],
    ['at home', 71],
    ['at home', 71],
    ['at home', 71],
  ])
})
