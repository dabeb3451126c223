// DHT benchmark, deccom against hyperdht, side by side on 127.0.0.1, in alternating trials.
//
//   node bench/dht.mjs [--runs=3] [--reps=5] [--nodes=30]
//
// Each trial starts a fresh network of --nodes (30) nodes (deccom: [Dht, Kademlia] nodes bootstrapped
// from the first; hyperdht: hyperdht/testnet, in a child process: bench/peers/hyper/dht.mjs) and runs
// --reps repetitions of:
//  - meet: an announcer A joins a fresh topic and finishes its announce; a newcomer B (a fresh node,
//    joined before the clock starts) joins (deccom: node.join(topic), time to B's 'peer' event for A;
//    hyperdht: dht.lookup(topic), time to the first reply listing A); and the datagrams B sent until
//    then (deccom: B's DHT requests; hyperdht: B's udx sends counted in JS);
//  - values: immutable put then get (another node), mutable put (seq) then get, round trips in ms.
// Reported: min / median / max over all repetitions of all trials, and deccom / hyperdht ratios.
// hyperdht comes from bench/peers/hyper (`npm install --prefix bench/peers/hyper`).
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const flags = Object.fromEntries(process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/.exec(a)).filter(Boolean).map((m) => [m[1], m[2] ?? 'true']))
const RUNS = Number(flags.runs ?? 3)
const REPS = Number(flags.reps ?? 5)
const SIZE = Number(flags.nodes ?? 30)
const { Dht, Identity, Kademlia, Node } = await import(path.join(HERE, '..', 'dist', 'index.mjs'))
const host = '127.0.0.1'
const now = () => performance.now()
const keys = ['meet_ms', 'meet_datagrams', 'iput_ms', 'iget_ms', 'mput_ms', 'mget_ms']

async function deccomTrial() {
  const opts = { putRate: 100_000, putBurst: 100_000, maxPerSource: 100_000 }
  const make = async (bootstrap) => Node.create({ host, port: 0, stack: [new Dht(opts), new Kademlia({ bootstrap })] })
  const boot = await make([])
  const nodes = [boot]
  for (let i = 1; i < SIZE; i++) nodes.push(await make([boot.address]))
  await Promise.all(nodes.map((n) => n.ready({ timeout: 10_000 })))
  const out = Object.fromEntries(keys.map((k) => [k, []]))
  const extra = []
  for (let rep = 0; rep < REPS; rep++) {
    const [a, b, w, r] = await Promise.all([0, 1, 2, 3].map(() => make([boot.address])))
    extra.push(a, b, w, r)
    await Promise.all([a, b, w, r].map((n) => n.ready({ timeout: 10_000 })))
    const topic = randomBytes(32)
    await a.join(topic).flushed()
    const sent0 = b.stats().dht.sent ?? 0
    const t0 = now()
    const t = b.join(topic)
    const met = await new Promise((resolve) => t.on('peer', (p) => p.id.equals(a.id) && resolve(now() - t0)))
    out.meet_ms.push(met)
    out.meet_datagrams.push((b.stats().dht.sent ?? 0) - sent0)
    const value = randomBytes(100)
    let t1 = now()
    const { key } = await w.dht.put(value)
    out.iput_ms.push(now() - t1)
    t1 = now()
    const got = await r.dht.get(key)
    out.iget_ms.push(now() - t1)
    if (!got?.equals(value)) out.errors = (out.errors ?? 0) + 1
    const owner = Identity.generate()
    t1 = now()
    await w.dht.putMutable(owner, value, { seq: 1 })
    out.mput_ms.push(now() - t1)
    t1 = now()
    const m = await r.dht.getMutable(owner.publicKey)
    out.mget_ms.push(now() - t1)
    if (m?.seq !== 1) out.errors = (out.errors ?? 0) + 1
  }
  await Promise.all([...nodes, ...extra].map((n) => n.close()))
  return out
}

function hyperTrial() {
  const script = path.join(HERE, 'peers', 'hyper', 'dht.mjs')
  if (!existsSync(path.join(HERE, 'peers', 'hyper', 'node_modules', 'hyperdht'))) return null
  const r = spawnSync(process.execPath, [script, `--nodes=${SIZE}`, `--reps=${REPS}`], { encoding: 'utf8', timeout: 300_000 })
  if (r.status !== 0) {
    process.stderr.write(r.stderr)
    return null
  }
  return JSON.parse(r.stdout.trim().split('\n').pop())
}

const all = { deccom: Object.fromEntries(keys.map((k) => [k, []])), hyperdht: Object.fromEntries(keys.map((k) => [k, []])) }
const errors = { deccom: 0, hyperdht: 0 }
for (let run = 0; run < RUNS; run++) {
  const order = run % 2 === 0 ? ['deccom', 'hyperdht'] : ['hyperdht', 'deccom']
  for (const impl of order) {
    const r = impl === 'deccom' ? await deccomTrial() : hyperTrial()
    if (!r) continue
    errors[impl] += r.errors ?? 0
    for (const k of keys) all[impl][k].push(...r[k])
  }
}
const stat = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? { min: +s[0].toFixed(2), median: +s[s.length >> 1].toFixed(2), max: +s.at(-1).toFixed(2) } : null
}
const table = {}
for (const k of keys) {
  const d = stat(all.deccom[k])
  const h = stat(all.hyperdht[k])
  table[k] = { deccom: d, hyperdht: h, ratio_median: d && h ? +(d.median / h.median).toFixed(2) : null }
}
console.log(JSON.stringify({ nodes: SIZE, runs: RUNS, reps: REPS, errors, results: table }, null, 2))
