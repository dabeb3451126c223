// The simulator at scale: N Kademlia nodes join a SimulatedNetwork, then N random findPeer.
//
//   node bench/sim.mjs                       # N = 1,000, 2,000, 5,000, 10,000 (one child process each)
//   node bench/sim.mjs --n 100000            # one size (or a list: --n 1000,2000)
//   node bench/sim.mjs --n 2000 --json       # JSON lines only
//   node bench/sim.mjs --n 2000 --trace      # also hash the trace (determinism check; costs time)
//   node bench/sim.mjs --n 2000 --js         # without the native delivery lane (nativeDelivery)
//   node bench/sim.mjs --n 100000 --progress # also a line on stderr every 10,000 nodes joined
//   node bench/sim.mjs --n 10000 --threads 2  # the lane on 2 threads (windows of one latency)
//   node bench/sim.mjs --n 10000 --gap 20000 # virtual ms per batch (default 2000): a join as long
//                                            # as the 100,000-node one, at a tenth of the nodes
//
// Setup (the same for every N): Kademlia k = 20, alpha = 3 with default options and no per-layer
// seed (every random choice comes from the network's seed, 1); links 10 ms + [0, 40) ms jitter;
// node 0 is the bootstrap node; the others join in batches of 100, each batch given 2 s of virtual
// time, then 30 virtual s to settle. Then N findPeer (lookup with stopAtTarget) from node i % N to a
// random other node, all started at once.
// The network has the native delivery lane (nativeDelivery; --js: without it; --trace: without it,
// with the trace hashed). Both paths give the same events in the same order. --threads N runs the
// lane on N threads: another run (windows of one link latency, docs/simulation.md), the same for
// every N above 1; the "path" column says which ran.
//
// Each N runs in a child process (--max-old-space-size from N, --max-semi-space-size=64).
//
// Columns: join and lookup wall time (real; the JSON lines also give the process's CPU time, a
// steadier figure on a shared machine), simulated datagrams per real second over the whole
// run, datagrams per joining node (all, and by Kademlia message type from the layers' counters),
// peak RSS and RSS per node, found, hops (median / p99).
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(HERE, '..')
const argv = process.argv.slice(2)
const flag = (name) => {
  const i = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`))
  if (i < 0) return undefined
  const a = argv[i]
  return a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[i + 1] !== undefined && !argv[i + 1].startsWith('--') ? argv[i + 1] : 'true'
}
const JSON_ONLY = flag('json') !== undefined
const sizes = (flag('n') ?? '1000,2000,5000,10000').split(',').map(Number)

if (flag('child') !== undefined) {
  await runOne(sizes[0], flag('trace') !== undefined, flag('js') === undefined)
} else {
  const rows = []
  for (const n of sizes) {
    const args = [...process.execArgv, fileURLToPath(import.meta.url), '--child', '--n', String(n)]
    if (flag('trace') !== undefined) args.push('--trace')
    if (flag('js') !== undefined) args.push('--js')
    if (flag('progress') !== undefined) args.push('--progress')
    if (flag('gap') !== undefined) args.push('--gap', flag('gap'))
    if (flag('threads') !== undefined) args.push('--threads', flag('threads'))
    const heap = Math.max(4096, Math.ceil(n / 1000) * 600)
    // A larger young generation: fewer scavenges and fewer short-lived datagram objects promoted
    // (about 13 % less CPU at 2,000 nodes).
    const r = spawnSync(process.execPath, [`--max-old-space-size=${heap}`, '--max-semi-space-size=64', ...args], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' })
    const line = r.stdout.trim().split('\n').pop()
    if (r.status !== 0 || !line) {
      console.error(`N = ${n}: the run failed (exit ${r.status})`)
      continue
    }
    const row = JSON.parse(line)
    rows.push(row)
    console.log(JSON.stringify(row))
  }
  if (!JSON_ONLY) printTable(rows)
}

function printTable(rows) {
  const f = (x, d = 1) => x.toFixed(d)
  console.log('\n| N | path | join wall | lookups wall | datagrams/s | per joining node (PING/PONG/FIND_NODE/NODES) | found | hops med/p99 | peak RSS | RSS/node |')
  console.log('|---|---|---:|---:|---:|---|---:|---|---:|---:|')
  for (const r of rows) {
    const t = r.join_per_node_by_type
    console.log(
      `| ${r.n.toLocaleString('en')} | ${r.path} | ${f(r.join_s)} s | ${f(r.lookups_s)} s | ${Math.round(r.datagrams_per_s / 1000)}k | ${Math.round(r.join_per_node)} (${t.PING}/${t.PONG}/${t.FIND_NODE}/${t.NODES}) | ` +
        `${r.found.toLocaleString('en')} | ${r.hops_median}/${r.hops_p99} | ${f(r.peak_rss_gib, 2)} GiB | ${f(r.rss_per_node_mib, 3)} MiB |`,
    )
  }
}

async function runOne(N, trace, lane) {
  // The lane needs the trace off: a traced run takes the JavaScript path.
  const nativeDelivery = lane && !trace
  const { Kademlia, SimulatedNetwork } = await import(path.join(ROOT, 'dist', 'index.mjs'))
  let peak = 0
  const sample = () => (peak = Math.max(peak, process.memoryUsage().rss))
  const rss0 = process.memoryUsage().rss
  const threads = Number(flag('threads') ?? 1)
  const sim = new SimulatedNetwork({ seed: 1, defaultLink: { latency: 10, jitter: 40 }, traceLimit: 0, trace, nativeDelivery, threads })
  const kad = (node) => node.stack.find(Kademlia)
  const boot = '10.0.0.1:4000'
  const BATCH = 100
  const GAP = Number(flag('gap') ?? 2000)
  const cpu = () => {
    const u = process.cpuUsage()
    return (u.user + u.system) / 1e6
  }
  const c0 = cpu()
  const t0 = performance.now()
  const nodes = []
  for (let b = 0; b < N; b += BATCH) {
    const batch = await sim.createNodes(Math.min(BATCH, N - b), {
      stack: (i) => [new Kademlia({ bootstrap: b + i === 0 ? [] : [boot] })],
    })
    nodes.push(...batch)
    await sim.runFor(GAP)
    if ((b / BATCH) % 10 === 0) sample()
    if (flag('progress') !== undefined && (b + BATCH) % 10_000 === 0) {
      const rss = process.memoryUsage().rss
      console.error(`joined ${(b + BATCH).toLocaleString('en')} of ${N.toLocaleString('en')}: ${((performance.now() - t0) / 1000).toFixed(0)} s, ${sim.stats().sent.toLocaleString('en')} datagrams, RSS ${(rss / 2 ** 30).toFixed(2)} GiB`)
    }
  }
  await sim.runFor(30_000)
  sample()
  const joinS = (performance.now() - t0) / 1000
  const joinCpu = cpu() - c0
  const joinSent = sim.stats().sent
  const byType = { PING: 0, PONG: 0, FIND_NODE: 0, NODES: 0 }
  const counters = {}
  for (const node of nodes) {
    const c = kad(node).stats()
    for (const [k, v] of Object.entries(c)) if (typeof v === 'number') counters[k] = (counters[k] ?? 0) + v
    byType.PING += c.pings_sent ?? 0
    byType.PONG += c.pings_answered ?? 0
    byType.FIND_NODE += c.queries_sent ?? 0
    byType.NODES += c.nodes_sent ?? 0
  }
  const joined = nodes.filter((n) => kad(n).joined).length
  const rssJoined = process.memoryUsage().rss

  // Lookups: from node i % N to a random other node (a seeded stream of the network).
  const rnd = sim.random
  const hops = []
  let found = 0
  let settled = 0
  const t1 = performance.now()
  for (let i = 0; i < N; i++) {
    const from = nodes[i % N]
    let to = nodes[rnd.int(N)]
    while (to === from) to = nodes[rnd.int(N)]
    kad(from)
      .lookup(to.id, { stopAtTarget: true })
      .then(
        (r) => {
          if (r.peer && r.peer.id.equals(to.id)) {
            found++
            hops.push(r.hops)
          }
        },
        () => {},
      )
      .finally(() => settled++)
  }
  await sim.runUntil(() => settled === N, { timeout: 600_000 })
  sample()
  const lookupsS = (performance.now() - t1) / 1000
  const lookupsCpu = cpu() - c0 - joinCpu
  const totalSent = sim.stats().sent
  const q = (xs, p) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] : null)
  const per = (x) => Math.round(x / Math.max(1, N - 1))
  const row = {
    n: N,
    joined,
    join_s: +joinS.toFixed(2),
    lookups_s: +lookupsS.toFixed(2),
    join_cpu_s: +joinCpu.toFixed(2),
    lookups_cpu_s: +lookupsCpu.toFixed(2),
    datagrams: totalSent,
    datagrams_per_s: Math.round(totalSent / (joinS + lookupsS)),
    join_per_node: per(joinSent),
    join_per_node_by_type: Object.fromEntries(Object.entries(byType).map(([k, v]) => [k, per(v)])),
    join_counters_per_node: Object.fromEntries(Object.entries(counters).map(([k, v]) => [k, +(v / Math.max(1, N - 1)).toFixed(2)])),
    lookup_datagrams_per_lookup: +((totalSent - joinSent) / N).toFixed(1),
    found,
    hops_median: q(hops, 0.5),
    hops_p99: q(hops, 0.99),
    peak_rss_gib: +(peak / 2 ** 30).toFixed(3),
    rss_per_node_mib: +((rssJoined - rss0) / N / 2 ** 20).toFixed(3),
    events: sim.stats().events,
    trace: trace ? sim.trace.hash : null,
    path: nativeDelivery ? (threads > 1 ? `lane/${threads}` : 'lane') : 'js',
  }
  await sim.close()
  console.log(JSON.stringify(row))
}
