// DHT benchmark: deccom beside hyperdht on 127.0.0.1, in the same run, in alternating trials.
//
//   npm install --prefix bench/peers/hyper      # hyperdht (once; without it only deccom runs)
//   node bench/dht.mjs [--runs=5] [--reps=10] [--warmup=2] [--nodes=30] [--settle=50 ms]
//                      [--impls=deccom,hyperdht] [--timeout=180 s per trial] [--hard-limit=1800 s] [--json=FILE]
//
// Every run makes one trial of each implementation, each in a child process of its own with a
// fresh network of --nodes (30) nodes; the order alternates from run to run (deccom first in odd
// runs, hyperdht first in even ones). A trial (bench/peers/dht-trial.mjs, the same procedure for
// both) does --warmup uncounted then --reps counted repetitions of:
//  - values, between two network nodes W and R, --settle (50) ms after the previous repetition:
//    immutable put (W) then get (R), mutable put (W, fresh key pair, seq 1) then get (R, the
//    highest seq ≥ 1); each round trip timed alone and its result checked.
//      deccom:   node.dht.put / get, putMutable / getMutable;
//      hyperdht: immutablePut / immutableGet, mutablePut / mutableGet;
//  - meet: a third network node A joins a fresh topic and its announce completes; a newcomer B is
//    made and bootstrapped, and --settle ms later (its bootstrap traffic is over) the clock starts:
//    the time from B's join to the first answer naming A, and the datagrams B sent and received
//    meanwhile (all of B's datagrams, DHT or not).
//      deccom:   node.join(topic).flushed() for A; B = a fresh [Dht, Kademlia] node after ready(),
//                ephemeral (Kademlia `ephemeral: true`: not added to routing tables, as hyperdht's B);
//                B.join(topic) until its 'peer' event for A; B's stats().udp datagram counters;
//      hyperdht: A.announce(topic, keyPair).finished(); B = a fresh ephemeral node after
//                fullyBootstrapped(); B.lookup(topic) until a reply lists A (bench/peers/hyper/dht.mjs);
//    B stays up until the trial ends: the network grows by one node per repetition.
// Printed per metric: the per-run medians and p95s, min / median / max over the runs, and the
// ratio deccom ÷ hyperdht of the medians within each run (min / median / max over the runs), with
// the goals: meet ≤ 0.5× hyperdht's time with fewer datagrams; each put / get ≤ 1× hyperdht's.
// Bounded: every step of a trial times out after 15 s, a trial after --timeout, the whole run
// after --hard-limit; children are killed on exit. Only 127.0.0.1 is used.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { HOST, hardLimit, median, parseFlags, quantile, sleep, spawnRole } from './peers/common.mjs'
import { DHT_METRICS, runDhtTrial } from './peers/dht-trial.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const THIS = fileURLToPath(import.meta.url)
// DECCOM_BENCH_DIST=/path/to/index.mjs benchmarks another build of deccom (children inherit it).
const DIST = pathToFileURL(process.env.DECCOM_BENCH_DIST ? path.resolve(process.env.DECCOM_BENCH_DIST) : path.join(HERE, '..', 'dist', 'index.mjs')).href
const f = parseFlags()

// ------------------------------------------------------------------------------------------------
// deccom trial (--role=trial)
async function deccomAdapter () {
  const d = await import(DIST)
  // Every node is on 127.0.0.1, one source IP: the per-IP storage and rate bounds are lifted.
  const dhtOpts = { putRate: 1_000_000, putBurst: 1_000_000, maxPerSource: 1_000_000 }
  const make = (bootstrap, ephemeral = false) => d.Node.create({ identity: d.Identity.generate(), host: HOST, port: 0, stack: [new d.Dht(dhtOpts), new d.Kademlia({ bootstrap, ephemeral })] })
  let boot = null
  return {
    async start (n) {
      const first = await make([])
      boot = `${HOST}:${first.address.port}`
      const nodes = [first]
      for (let i = 1; i < n; i++) nodes.push(await make([boot]))
      // The first node has nobody to join through; the others are ready once they joined through it.
      await Promise.all(nodes.slice(1).map((x) => x.ready({ timeout: 30_000 })))
      return nodes
    },
    async newcomer () {
      const node = await make([boot], true)
      await node.ready({ timeout: 15_000 })
      return node
    },
    announce: (node, topic) => node.join(topic).flushed(),
    meet: (node, topic, announcer) => new Promise((resolve) => {
      const t = node.join(topic)
      t.on('peer', (p) => { if (p.id.equals(announcer.id)) resolve() })
    }),
    counters (node) {
      const u = node.stats().udp ?? {}
      return { tx: Number(u.txDatagrams ?? NaN), rx: Number(u.rxDatagrams ?? NaN) }
    },
    put: async (node, value) => (await node.dht.put(value)).key,
    get: (node, key) => node.dht.get(key),
    keyPair: () => d.Identity.generate(),
    putMutable: (node, owner, value, seq) => node.dht.putMutable(owner, value, { seq }),
    getMutable: (node, owner, seq) => node.dht.getMutable(owner.publicKey, { minSeq: seq }),
    async close (nodes) {
      await Promise.all(nodes.map((n) => n.close()))
    },
  }
}

// ------------------------------------------------------------------------------------------------
// orchestrator
const IMPLS = {
  deccom: { script: THIS, node: process.execPath },
  hyperdht: { script: path.join(HERE, 'peers', 'hyper', 'dht.mjs'), node: process.execPath, dep: path.join(HERE, 'peers', 'hyper', 'node_modules', 'hyperdht') },
}
const children = new Set()
const running = (c) => c.exitCode === null && c.signalCode === null

async function trial (impl, o) {
  const t = spawnRole(children, IMPLS[impl], impl, 'trial', [`--nodes=${o.nodes}`, `--limit=${o.timeoutMs + 30_000}`])
  try {
    t.child.send({ reps: o.reps, warmup: o.warmup, settle: o.settle })
    const { result } = await t.next((m) => m.result, o.timeoutMs, 'trial')
    const row = { impl, failures: result.failures, errors: result.errors, n: result.meet_ms.length }
    for (const k of DHT_METRICS) row[k] = { median: median(result[k]), p95: quantile(result[k], 0.95) }
    const dg = result.meet_tx.map((x, i) => x + result.meet_rx[i])
    row.meet_datagrams = { median: median(dg), p95: quantile(dg, 0.95) }
    return row
  } finally {
    await Promise.race([running(t.child) ? new Promise((resolve) => t.child.once('exit', resolve)) : null, sleep(15_000)])
    if (running(t.child)) t.child.kill('SIGKILL')
  }
}

const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–')
const mm = (xs, d = 2) => {
  const v = xs.filter(Number.isFinite)
  return v.length ? `${fmt(Math.min(...v), d)} / ${fmt(median(v), d)} / ${fmt(Math.max(...v), d)}` : '–'
}

const ROWS = [
  ['meet_ms', 'meet: join → announcer met (ms)', 2, 0.5],
  ['meet_datagrams', 'meet: datagrams of the newcomer, sent + received', 0, 'fewer'],
  ['meet_tx', 'meet: datagrams sent', 0, null],
  ['meet_rx', 'meet: datagrams received', 0, null],
  ['iput_ms', 'immutable put (ms)', 2, 1],
  ['iget_ms', 'immutable get (ms)', 2, 1],
  ['mput_ms', 'mutable put (ms)', 2, 1],
  ['mget_ms', 'mutable get (ms)', 2, 1],
]

async function main () {
  const o = {
    runs: Number(f.runs ?? 5),
    reps: Number(f.reps ?? 10),
    warmup: Number(f.warmup ?? 2),
    settle: Number(f.settle ?? 50),
    nodes: Number(f.nodes ?? 30),
    timeoutMs: Number(f.timeout ?? 180) * 1000,
  }
  hardLimit(Number(f['hard-limit'] ?? 1800) * 1000, 'dht bench')
  const kill = () => { for (const c of children) c.kill('SIGKILL') }
  process.on('exit', kill)
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { kill(); process.exit(130) })
  const impls = (f.impls ?? 'deccom,hyperdht').split(',').filter((impl) => {
    if (!IMPLS[impl]) { console.error(`unknown implementation ${impl}`); return false }
    const dep = IMPLS[impl].dep
    if (dep && !fs.existsSync(dep)) { console.error(`(skipping ${impl}: run "npm install --prefix bench/peers/hyper")`); return false }
    return true
  })
  const rows = []
  for (let run = 0; run < o.runs; run++) {
    const order = run % 2 === 0 ? impls : [...impls].reverse()
    for (const impl of order) {
      try {
        const r = await trial(impl, o)
        rows.push({ ...r, run })
        console.error(`run ${run + 1} ${impl}: meet median ${fmt(r.meet_ms.median)} ms (p95 ${fmt(r.meet_ms.p95)}), ${fmt(r.meet_datagrams.median, 0)} datagrams (${fmt(r.meet_tx.median, 0)} sent); ` +
          `put/get immutable ${fmt(r.iput_ms.median)} / ${fmt(r.iget_ms.median)} ms, mutable ${fmt(r.mput_ms.median)} / ${fmt(r.mget_ms.median)} ms; ${r.n} reps, ${r.failures} failed${r.errors.length ? ' ' + r.errors.join(' | ') : ''}`)
      } catch (err) {
        rows.push({ impl, run, error: String(err?.stack ?? err) })
        console.error(`run ${run + 1} ${impl} failed: ${String(err?.message ?? err).slice(0, 500)}`)
      }
    }
  }
  const ok = (impl) => rows.filter((r) => r.impl === impl && !r.error)
  const ratios = (k, q) => {
    const out = []
    for (const a of ok('deccom')) {
      const b = ok('hyperdht').find((x) => x.run === a.run)
      if (b) out.push(a[k][q] / b[k][q])
    }
    return out
  }
  console.log(`\n### DHT, ${o.nodes}-node networks on 127.0.0.1; ${o.reps} repetitions per trial after ${o.warmup} warm-up, ${o.settle} ms settle, ${o.runs} runs; min / median / max over the runs of the per-run median (p95)\n`)
  console.log(`| metric | ${impls.map((i) => `${i} median | ${i} p95`).join(' | ')} | deccom ÷ hyperdht, median (per run) | goal |`)
  console.log(`| --- | ${impls.map(() => '--- | ---').join(' | ')} | --- | --- |`)
  const goals = []
  for (const [k, label, d, goal] of ROWS) {
    const r = ratios(k, 'median')
    let g = '—'
    if (goal !== null && r.length) {
      const m = median(r)
      const met = goal === 'fewer' ? m < 1 : m <= goal
      g = `${goal === 'fewer' ? 'fewer' : `≤ ${goal}×`}: ${met ? 'met' : 'MISSED'}`
      goals.push(`- ${label}: deccom ÷ hyperdht ${m.toFixed(2)}× (median of ${r.length} runs, ${mm(r)} min / median / max), goal ${goal === 'fewer' ? '< 1×' : `≤ ${goal}×`}: ${met ? 'met' : 'MISSED'}`)
    }
    const cells = impls.flatMap((impl) => [mm(ok(impl).map((x) => x[k].median), d), mm(ok(impl).map((x) => x[k].p95), d)])
    console.log(`| ${label} | ${cells.join(' | ')} | ${r.length ? `${mm(r)}×` : '–'} | ${g} |`)
  }
  for (const impl of impls) {
    const failed = ok(impl).reduce((a, r) => a + r.failures, 0)
    const failedRuns = rows.filter((r) => r.impl === impl && r.error).length
    if (failed || failedRuns) console.log(`\n${impl}: ${failed} failed repetitions, ${failedRuns} failed trials`)
  }
  for (const r of rows.filter((x) => x.error)) console.log(`- run ${r.run + 1}, ${r.impl}: ${r.error.split('\n')[0].slice(0, 300)}`)
  if (goals.length) console.log('\nGoals (deccom):\n' + goals.join('\n'))
  if (f.json) fs.writeFileSync(f.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, options: o, rows }, null, 2))
}

if (f.role === 'trial') await runDhtTrial(await deccomAdapter(), f)
else { await main(); process.exit(0) }
