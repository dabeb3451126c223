// Per-hop latency of small messages on 127.0.0.1: a ping-pong round trip of a --size (32) byte
// payload between two processes, level by level up deccom's stack, beside node:dgram:
//  - dgram:  node:dgram socket to node:dgram socket (libuv, the JavaScript thread receives);
//  - udp:    deccom Node with the default stack (UdpTransport only): node.send / 'message';
//  - rudp:   [ReliableUdp]: a reliable message each way (the send's acknowledgement not awaited);
//  - noise:  [ReliableUdp, Noise encrypt]: as rudp, sealed (the handshake happens in the warm-up);
//  - kad:    [Kademlia, ReliableUdp, Noise encrypt]: as noise, through the Kademlia layer
//            (application messages pass it); the client bootstrapped from the server;
//  - stream: [ReliableUdp, Noise encrypt]: one stream of a connection (node.connect to the
//            address), each payload written and echoed back on it;
//  - ping:   (on request) node.ping() on the kad stack: the UDP transport's own ping (rate-limited
//            by the answering side, so keep --rounds small).
// The echo side (forked child) answers each message from its 'message' handler. Per run, every level
// in turn (the order rotates between runs) does --warmup (200) then --rounds (2000) sequential
// round trips; printed per level: min / median / p95 in µs, each as min–max over --runs (3).
//
//   node bench/hops.mjs [--levels=dgram,udp,rudp,noise,kad,stream] [--runs=3] [--rounds=2000]
//                       [--warmup=200] [--size=32] [--gap=0 ms] [--json=FILE]
// DECCOM_BENCH_DIST=/path/to/dist/index.mjs measures another build (the child inherits it).
import dgram from 'node:dgram'
import fs from 'node:fs'
import path from 'node:path'
import { fork } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { HOST, hardLimit, median, now, parseFlags, quantile, withTimeout } from './peers/common.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const DIST = pathToFileURL(process.env.DECCOM_BENCH_DIST ? path.resolve(process.env.DECCOM_BENCH_DIST) : path.join(HERE, '..', 'dist', 'index.mjs')).href
const f = parseFlags()
const LEVELS = (f.levels ?? 'dgram,udp,rudp,noise,kad,stream').split(',')
const RUNS = Number(f.runs ?? 3)
const ROUNDS = Math.min(Number(f.rounds ?? 2000), 100_000)
const WARMUP = Math.min(Number(f.warmup ?? 200), 10_000)
const SIZE = Number(f.size ?? 32)
// --gap=MS: idle time between round trips (0: back to back), to see what waking up idle threads costs.
const GAP = Number(f.gap ?? 0)

const stackFor = (d, level, bootstrap) => {
  switch (level) {
    case 'rudp': return [new d.ReliableUdp()]
    case 'noise': case 'stream': return [new d.ReliableUdp(), new d.Noise({ mode: 'encrypt' })]
    case 'kad': case 'ping': return [new d.Kademlia({ bootstrap }), new d.ReliableUdp(), new d.Noise({ mode: 'encrypt' })]
    default: return undefined
  }
}
const makeNode = (d, level, bootstrap = []) => {
  const stack = stackFor(d, level, bootstrap)
  return d.Node.create({ identity: d.Identity.generate(), host: HOST, port: 0, ...(stack ? { stack } : {}) })
}

// ---------- echo side (child) ----------
async function echo () {
  hardLimit(Number(f.limit ?? 600_000), 'hops echo')
  const d = await import(DIST)
  const info = {}
  const closers = []
  for (const level of LEVELS) {
    if (level === 'dgram') {
      const sock = dgram.createSocket('udp4')
      sock.on('message', (m, r) => sock.send(m, r.port, r.address))
      await new Promise((resolve) => sock.bind(0, HOST, resolve))
      info.dgram = sock.address().port
      closers.push(() => new Promise((resolve) => sock.close(resolve)))
    } else if (level !== 'ping' || !LEVELS.includes('kad')) {
      const node = await makeNode(d, level)
      node.on('message', (from, data) => { node.send(from, data).catch(() => {}) })
      node.on('connection', (conn) => conn.on('stream', (st) => { st.on('error', () => {}); st.on('data', (b) => st.write(b)) }))
      info[level] = node.address.port
      closers.push(() => node.close())
    }
  }
  if (info.ping === undefined && info.kad !== undefined && LEVELS.includes('ping')) info.ping = info.kad
  process.send({ info })
  process.on('message', async (m) => {
    if (m.exit) {
      for (const c of closers) await c().catch(() => {})
      process.exit(0)
    }
  })
}

// ---------- client side (parent) ----------
async function clientFor (d, level, port) {
  if (level === 'dgram') {
    const sock = dgram.createSocket('udp4')
    await new Promise((resolve) => sock.bind(0, HOST, resolve))
    let waiter = null
    sock.on('message', () => { const w = waiter; waiter = null; w?.() })
    return {
      round: (payload) => new Promise((resolve) => { waiter = resolve; sock.send(payload, port, HOST) }),
      close: () => new Promise((resolve) => sock.close(resolve)),
    }
  }
  const to = d.toAddress(HOST, port)
  const node = await makeNode(d, level, [`${HOST}:${port}`])
  if (level === 'kad' || level === 'ping') await node.ready({ signal: AbortSignal.timeout(10_000) })
  if (level === 'ping') {
    return { round: () => node.ping(to), close: () => node.close() }
  }
  let waiter = null
  if (level === 'stream') {
    const conn = await node.connect(to, { signal: AbortSignal.timeout(10_000) })
    const st = await conn.openStream()
    st.on('error', () => {})
    st.on('data', () => { const w = waiter; waiter = null; w?.() })
    return {
      round: (payload) => new Promise((resolve) => { waiter = resolve; st.write(payload) }),
      close: async () => { st.destroy(); await conn.close().catch(() => {}); await node.close() },
    }
  }
  node.on('message', () => { const w = waiter; waiter = null; w?.() })
  return {
    round: (payload) => new Promise((resolve) => { waiter = resolve; node.send(to, payload).catch(() => {}) }),
    close: () => node.close(),
  }
}

async function measure (c, payload) {
  for (let i = 0; i < WARMUP; i++) await withTimeout(c.round(payload), 5000, 'warm-up round trip')
  const us = new Float64Array(ROUNDS)
  for (let i = 0; i < ROUNDS; i++) {
    if (GAP > 0) await new Promise((resolve) => setTimeout(resolve, GAP))
    const t0 = now()
    await withTimeout(c.round(payload), 5000, 'round trip')
    us[i] = (now() - t0) * 1000
  }
  const a = Array.from(us)
  return { min: Math.min(...a), median: median(a), p95: quantile(a, 0.95) }
}

async function main () {
  hardLimit(Number(f['hard-limit'] ?? 900) * 1000, 'hops bench')
  const child = fork(fileURLToPath(import.meta.url), ['--role=echo', `--levels=${LEVELS.join(',')}`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  process.on('exit', () => child.kill('SIGKILL'))
  const { info } = await withTimeout(new Promise((resolve, reject) => { child.once('message', resolve); child.once('exit', (c) => reject(new Error(`echo side exited (${c})`))) }), 60_000, 'echo start')
  const d = await import(DIST)
  const clients = {}
  for (const level of LEVELS) clients[level] = await clientFor(d, level, info[level])
  const payload = Buffer.alloc(SIZE, 7)
  const rows = {}
  for (let run = 0; run < RUNS; run++) {
    const order = LEVELS.map((_, i) => LEVELS[(i + run) % LEVELS.length])
    for (const level of order) {
      const r = await measure(clients[level], payload)
      ;(rows[level] ??= []).push(r)
      console.error(`run ${run + 1} ${level}: min ${r.min.toFixed(0)} µs, median ${r.median.toFixed(0)} µs, p95 ${r.p95.toFixed(0)} µs`)
    }
  }
  for (const c of Object.values(clients)) await c.close().catch(() => {})
  child.send({ exit: true })
  const rng = (xs) => { const v = xs.map((x) => x.toFixed(0)); const lo = Math.min(...xs); const hi = Math.max(...xs); return lo === hi ? v[0] : `${lo.toFixed(0)}–${hi.toFixed(0)}` }
  console.log(`\n### round trip of a ${SIZE}-byte message, 127.0.0.1, two processes; ${ROUNDS} round trips per run after ${WARMUP} warm-up, ${RUNS} runs (µs, min–max over the runs)\n`)
  console.log('| level | min | median | p95 |')
  console.log('| --- | --- | --- | --- |')
  for (const level of LEVELS) {
    const rs = rows[level]
    console.log(`| ${level} | ${rng(rs.map((r) => r.min))} | ${rng(rs.map((r) => r.median))} | ${rng(rs.map((r) => r.p95))} |`)
  }
  if (f.json) fs.writeFileSync(f.json, JSON.stringify({ date: new Date().toISOString(), dist: DIST, size: SIZE, rounds: ROUNDS, rows }, null, 2))
}

if (f.role === 'echo') await echo()
else { await main(); process.exit(0) }
