// Kademlia benchmarks.
//
//   node bench/kad.mjs [--ids=10000] [--nodes=2000] [--lookups=2000] [--parts=table,sim]
//
// (a) table: the same 10,000 node ids inserted into deccom's routing table (Rust, through napi) and
//     into the `k-bucket` npm package (k = 20 both), then closest(target, 20) calls per second for
//     random targets, in one run, with the ratio. deccom's call writes ids into a caller-owned
//     Buffer and peer handles into a Uint32Array (no allocation per call); "+ contacts" also maps
//     the handles to JS objects, as k-bucket returns objects.
// (b) sim: a 2,000-node SimulatedNetwork (virtual time, 10 ms ± 5 ms links) joined through one
//     bootstrap node; then lookups of random nodes (findPeer semantics: stop when a node names the
//     target): median and p99 hops and virtual-time latency.
//
// Peers come from bench/package.json (`npm install --prefix bench`).
import path from 'node:path'
import crypto from 'node:crypto'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(HERE, '..')
const require = createRequire(path.join(HERE, 'package.json'))
const flags = Object.fromEntries(
  process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/.exec(a)).filter(Boolean).map((m) => [m[1], m[2] ?? 'true']),
)
const IDS = Number(flags.ids ?? 10_000)
const NODES = Number(flags.nodes ?? 2000)
const LOOKUPS = Number(flags.lookups ?? 2000)
const PARTS = new Set((flags.parts ?? 'table,sim').split(','))
const { Identity, Kademlia, SimulatedNetwork, encodePeerRecord, toAddress } = await import(path.join(ROOT, 'dist', 'index.mjs'))
const native = require(path.join(ROOT, 'native', 'index.js'))
const results = {}

function opsPerSec(fn, targets, ms = 1500) {
  for (let i = 0; i < 20_000; i++) fn(targets[i % targets.length]) // warm up
  let n = 0
  const t0 = performance.now()
  let t = t0
  while (t - t0 < ms) {
    for (let i = 0; i < 10_000; i++) fn(targets[(n + i) % targets.length])
    n += 10_000
    t = performance.now()
  }
  return (n / (t - t0)) * 1000
}

if (PARTS.has('table')) {
  const me = Identity.fromString('bench-self')
  const own = encodePeerRecord({ publicIdentity: me.publicIdentity, address: toAddress('10.0.0.1', 4000) })
  const table = new native.KadTable(own, 20, 20, 0)
  let KBucket
  try {
    KBucket = require('k-bucket')
  } catch {
    console.error('k-bucket is not installed (npm install --prefix bench): deccom only')
  }
  const kb = KBucket ? new KBucket({ localNodeId: new Uint8Array(me.id), numberOfNodesPerKBucket: 20 }) : null
  const contacts = []
  const addr = toAddress('10.0.0.2', 4000).raw
  for (let i = 0; i < IDS; i++) {
    const id = Identity.fromString(`bench-${i}`)
    table.insert(i, id.publicIdentity, addr, 0)
    contacts[i] = { id: new Uint8Array(id.id), i }
    kb?.add(contacts[i])
  }
  const targets = Array.from({ length: 4096 }, () => crypto.randomBytes(32))
  const ktargets = targets.map((t) => new Uint8Array(t))
  const ids = Buffer.alloc(32 * 20)
  const handles = new Uint32Array(20)
  // Correctness first: both return the same 20 ids.
  let same = 0
  for (let i = 0; kb && i < 200; i++) {
    const n = table.closest(targets[i], 20, ids, handles)
    const theirs = kb.closest(ktargets[i], 20).map((c) => Buffer.from(c.id).toString('hex')).join()
    const ours = Array.from({ length: n }, (_, j) => ids.toString('hex', 32 * j, 32 * j + 32)).join()
    if (ours === theirs) same++
  }
  const ours = opsPerSec((t) => table.closest(t, 20, ids, handles), targets)
  const oursObjects = opsPerSec((t) => {
    const n = table.closest(t, 20, ids, handles)
    const out = new Array(n)
    for (let j = 0; j < n; j++) out[j] = contacts[handles[j]]
    return out
  }, targets)
  const theirs = kb ? opsPerSec((t) => kb.closest(t, 20), ktargets) : NaN
  results.table = {
    ids: IDS,
    deccom_entries: table.size,
    kbucket_entries: kb ? kb.count() : null,
    same_results: kb ? `${same}/200` : null,
    deccom_closest_per_s: Math.round(ours),
    deccom_closest_with_contacts_per_s: Math.round(oursObjects),
    kbucket_closest_per_s: Math.round(theirs),
    ratio: +(ours / theirs).toFixed(2),
    ratio_with_contacts: +(oursObjects / theirs).toFixed(2),
  }
  console.log(JSON.stringify({ table: results.table }))
}

if (PARTS.has('sim')) {
  const sim = new SimulatedNetwork({ seed: 1, defaultLink: { latency: 10, jitter: 10 } })
  const kad = (n) => n.stack.find(Kademlia)
  const t0 = performance.now()
  const nodes = []
  for (let b = 0; b < NODES; b += 100) {
    nodes.push(
      ...(await sim.createNodes(Math.min(100, NODES - b), {
        stack: (i) => [new Kademlia({ bootstrap: b + i === 0 ? [] : ['10.0.0.1:4000'], refreshInterval: 60_000, seed: b + i + 1 })],
        identity: (i) => Identity.fromString(`sim-${b + i}`),
      })),
    )
    await sim.runFor(2000)
  }
  await sim.runFor(60_000)
  const joinMs = performance.now() - t0
  let x = 12345
  const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) / 0x1_0000_0000)
  const hops = []
  const lat = []
  let ok = 0
  let settled = 0
  const t1 = performance.now()
  for (let i = 0; i < LOOKUPS; i++) {
    const from = nodes[i % NODES]
    let to = nodes[Math.floor(rnd() * NODES)]
    while (to === from) to = nodes[Math.floor(rnd() * NODES)]
    kad(from)
      .lookup(to.id, { stopAtTarget: true })
      .then((r) => {
        if (r.peer) {
          ok++
          hops.push(r.hops)
          lat.push(r.elapsed)
        }
      })
      .finally(() => settled++)
  }
  await sim.runUntil(() => settled === LOOKUPS, { timeout: 600_000 })
  const q = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]
  const sizes = nodes.map((n) => kad(n).size)
  results.sim = {
    nodes: NODES,
    lookups: LOOKUPS,
    found: ok,
    hops_median: q(hops, 0.5),
    hops_p99: q(hops, 0.99),
    hops_mean: +(hops.reduce((a, b) => a + b, 0) / hops.length).toFixed(2),
    latency_virtual_ms_median: +q(lat, 0.5).toFixed(1),
    latency_virtual_ms_p99: +q(lat, 0.99).toFixed(1),
    table_size_median: q(sizes, 0.5),
    join_real_ms: Math.round(joinMs),
    lookups_real_ms: Math.round(performance.now() - t1),
  }
  console.log(JSON.stringify({ sim: results.sim }))
  await sim.close()
}

console.log('\n| benchmark | deccom | k-bucket | ratio |\n| --- | ---: | ---: | ---: |')
if (results.table) {
  const r = results.table
  console.log(`| closest(target, 20), ${r.ids} ids inserted | ${(r.deccom_closest_per_s / 1e3).toFixed(0)}k/s | ${(r.kbucket_closest_per_s / 1e3).toFixed(0)}k/s | ${r.ratio}× |`)
  console.log(`| same, handles mapped to contact objects | ${(r.deccom_closest_with_contacts_per_s / 1e3).toFixed(0)}k/s | | ${r.ratio_with_contacts}× |`)
}
if (results.sim) {
  const s = results.sim
  console.log(`\nfindPeer in a ${s.nodes}-node simulated network: ${s.found}/${s.lookups} found; hops median ${s.hops_median}, p99 ${s.hops_p99}; virtual latency median ${s.latency_virtual_ms_median} ms, p99 ${s.latency_virtual_ms_p99} ms`)
}
