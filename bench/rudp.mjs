// Reliable bulk transfer over 127.0.0.1, two processes: deccom ReliableUdp vs an udx-native
// stream vs node:net TCP, in one run, printing ratios. Also the same transfer with 5 % random
// loss on both deccom nodes (native FaultyTransport on receive), 10,000 small messages, and the
// encrypted transfer: deccom [ReliableUdp, Noise (encrypt)] — Noise sealing every segment in the socket thread — vs @hyperswarm/secret-stream over an
// udx-native stream and over TCP.
//
//   node bench/rudp.mjs [--mib=256] [--small=10000] [--loss=5] [--parts=bulk,lossy,lossy1,small,secure] [--impls=deccom,udx,tcp]
//                       [--runs=N] [--busy] [--warmup=2]
//
// --runs alternates the implementations N times (each run in the other order) and prints
// min/median/max of each figure and of the per-run ratios; --busy adds a CPU hog (a spinning child
// process) for the whole measurement. `lossy1` is the same transfer with 1 % loss.
// The small-message part first makes --warmup (2) uncounted runs of each implementation: the
// sending process is the same for every run, and its first 10,000-message runs measure its
// JavaScript compiler warming up (deccom's first runs were 15-25 % slower than its later ones)
// as much as the transport. Larger parts send enough for that not to matter and have none.
// Before every measurement the sending process collects its garbage (a full GC), so that no run
// pays for the buffers of the one before it (a 256 MiB part leaves 256 MiB to collect).
//
// Peers come from bench/package.json (`npm install --prefix bench`); missing peers are skipped.
// The sender's clock starts at the first send and stops when the receiver reports (over IPC) that
// it has every byte. Every wait is bounded; the receiver exits when its parent goes away.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import crypto from 'node:crypto'
import { fork } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(HERE, '..')
const HOST = '127.0.0.1'
const require = createRequire(path.join(HERE, 'package.json'))
const flags = Object.fromEntries(
  process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/.exec(a)).filter(Boolean).map((m) => [m[1], m[2] ?? 'true']),
)
const MIB = Number(flags.mib ?? 256)
const SMALL = Number(flags.small ?? 10_000)
const LOSS = Number(flags.loss ?? 5) / 100
const CHUNK = 64 * 1024
const now = () => performance.now()

function hardLimit (ms, label) {
  setTimeout(() => { process.stderr.write(`${label}: hard limit ${ms} ms\n`); process.exit(3) }, ms).unref()
}
const deccom = () => import(path.join(ROOT, 'dist', 'index.mjs'))
let SecretStream
function secretStream () {
  if (!SecretStream) SecretStream = require('@hyperswarm/secret-stream')
  return SecretStream
}
let udxInstance
function udx () {
  if (!udxInstance) { const UDX = require('udx-native'); udxInstance = new UDX() }
  return udxInstance
}

// ---------------- receiver (child) ----------------
async function receiver () {
  hardLimit(600_000, 'rudp bench receiver')
  process.on('disconnect', () => process.exit(0))
  const { impl, loss } = flags
  const expectBytes = Number(flags.bytes)
  const expectMessages = Number(flags.messages)
  let bytes = 0
  let messages = 0
  let doneSent = false
  let close = async () => {}
  let extra = () => ({})
  const progress = (n, isMessage) => {
    bytes += n
    if (isMessage) messages++
    if (!doneSent && (bytes >= expectBytes || (expectMessages > 0 && messages >= expectMessages))) {
      doneSent = true
      process.send({ done: true, bytes, messages, ...extra() })
    }
  }
  const secure = flags.secure === 'true'
  if (impl === 'deccom') {
    const { Node, Identity, ReliableUdp, FaultyTransport, Noise } = await deccom()
    const stack = secure ? [new ReliableUdp(), new Noise({ mode: 'encrypt' })] : [new ReliableUdp()]
    if (Number(loss) > 0) stack.push(new FaultyTransport({ seed: 2, drop: Number(loss), direction: 'receive' }))
    const node = await Node.create({ identity: secure ? Identity.generate() : Identity.fromString('receiver'), host: HOST, recvBufferSize: 8 << 20, sendBufferSize: 8 << 20, stack })
    node.on('message', (_from, data) => progress(data.length, true))
    close = () => node.close()
    extra = () => ({ mode: node.stack.find(ReliableUdp).mode, udp: pick(node.stats().udp) })
    process.send({ port: node.address.port })
  } else if (impl === 'udx') {
    const sock = udx().createSocket()
    sock.bind(0, HOST)
    const raw = udx().createStream(2)
    raw.on('error', () => {})
    const stream = secure ? new (secretStream())(false, raw) : raw
    stream.on('data', (d) => progress(d.byteLength, false))
    stream.on('error', () => {})
    close = async () => { stream.destroy(); await sock.close() }
    process.send({ port: sock.address().port, id: 2 })
    process.once('message', (m) => { if (m.peer) raw.connect(sock, m.peer.id, m.peer.port, HOST) })
  } else {
    const server = net.createServer((s) => {
      s.on('error', () => {})
      const stream = secure ? new (secretStream())(false, s) : s
      stream.on('data', (d) => progress(d.byteLength, false))
      stream.on('error', () => {})
    })
    await new Promise((resolve) => server.listen(0, HOST, resolve))
    close = async () => server.close()
    process.send({ port: server.address().port })
  }
  process.on('message', async (m) => { if (m === 'exit') { await close(); process.exit(0) } })
}

function pick (s) {
  const keys = ['rxDatagrams', 'rxSyscalls', 'txDatagrams', 'txSyscalls', 'rudp_retransmits', 'rudp_packets_lost', 'rudp_pto_expirations', 'rudp_congestion_events', 'rudp_acks_sent', 'rudp_duplicates', 'rudp_dropped_backpressure', 'faults_rx_dropped', 'rudp_srtt_us', 'rudp_cwnd', 'rudp_slow_start_exits', 'rudp_isolated_losses']
  return Object.fromEntries(keys.filter((k) => k in s).map((k) => [k, s[k]]))
}

// ---------------- sender (parent) ----------------
async function runOne (impl, part) {
  const lossy = part === 'lossy' || part === 'lossy1'
  const lossRate = part === 'lossy1' ? 0.01 : LOSS
  const small = part === 'small'
  const secure = part === 'secure'
  const total = small ? SMALL * 1024 : MIB * 1024 * 1024
  const args = ['--role=recv', `--impl=${impl}`, `--bytes=${total}`, `--messages=${small && impl === 'deccom' ? SMALL : 0}`, `--loss=${lossy ? lossRate : 0}`, `--secure=${secure}`]
  const child = fork(fileURLToPath(import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const killer = setTimeout(() => child.kill('SIGKILL'), 300_000)
  const messages = []
  child.on('message', (m) => messages.push(m))
  const next = (pred, ms, what) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${impl} ${part}: ${what} timed out`)), ms)
    const check = () => { const i = messages.findIndex(pred); if (i >= 0) { clearTimeout(t); resolve(messages.splice(i, 1)[0]) } else setTimeout(check, 1) }
    check()
  })
  try {
    const ready = await next((m) => m.port, 20_000, 'receiver start')
    const data = crypto.randomBytes(small ? 1024 : CHUNK)
    let t0
    let senderStats = {}
    let closeSender
    if (impl === 'deccom') {
      const { Node, Identity, ReliableUdp, FaultyTransport, Noise } = await deccom()
      const stack = secure ? [new ReliableUdp(), new Noise({ mode: 'encrypt' })] : [new ReliableUdp()]
      if (lossy) stack.push(new FaultyTransport({ seed: 1, drop: lossRate, direction: 'receive' }))
      const node = await Node.create({ identity: secure ? Identity.generate() : Identity.fromString('sender'), host: HOST, recvBufferSize: 8 << 20, sendBufferSize: 8 << 20, stack })
      closeSender = () => node.close()
      const to = `${HOST}:${ready.port}`
      if (small) {
        t0 = now()
        let inflight = 0
        let sent = 0
        await new Promise((resolve, reject) => {
          const pump = () => {
            while (inflight < 1000 && sent < SMALL) {
              inflight++
              sent++
              node.send(to, data).then(() => { inflight--; if (sent === SMALL && inflight === 0) resolve(); else pump() }, reject)
            }
          }
          pump()
        })
      } else {
        const big = Buffer.allocUnsafe(total)
        for (let off = 0; off < total; off += data.length) data.copy(big, off)
        t0 = now()
        await node.send(to, big)
      }
      senderStats = pick(node.stats().udp)
    } else if (impl === 'udx') {
      const sock = udx().createSocket()
      sock.bind(0, HOST)
      const raw = udx().createStream(1)
      raw.on('error', () => {})
      child.send({ peer: { port: sock.address().port, id: 1 } })
      raw.connect(sock, ready.id, ready.port, HOST)
      const stream = secure ? new (secretStream())(true, raw) : raw
      stream.on('error', () => {})
      if (secure) await new Promise((resolve) => stream.once('connect', resolve))
      closeSender = async () => { stream.destroy(); raw.destroy(); await sock.close() }
      t0 = now()
      await pump(stream, data, total)
    } else {
      const s = net.connect(ready.port, HOST)
      s.setNoDelay(true)
      await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
      const stream = secure ? new (secretStream())(true, s) : s
      stream.on('error', () => {})
      if (secure) await new Promise((resolve) => stream.once('connect', resolve))
      closeSender = async () => { stream.destroy(); s.destroy() }
      t0 = now()
      await pump(stream, data, total)
    }
    const done = await next((m) => m.done, 240_000, 'transfer')
    const ms = now() - t0
    await closeSender()
    child.send('exit')
    return { impl, part, bytes: total, ms, mbps: total / 1e6 / (ms / 1000), msgps: small ? SMALL / (ms / 1000) : undefined, receiver: done, sender: senderStats }
  } finally {
    clearTimeout(killer)
    setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL') }, 3000).unref()
  }
}

async function pump (stream, chunk, total) {
  for (let sent = 0; sent < total; sent += chunk.length) {
    const piece = sent + chunk.length > total ? chunk.subarray(0, total - sent) : chunk
    if (!stream.write(piece)) await new Promise((resolve) => stream.once('drain', resolve))
  }
}

function available (impl) {
  if (impl !== 'udx') return true
  try { require.resolve('udx-native'); return true } catch { return false }
}

function secureAvailable () {
  try { require.resolve('@hyperswarm/secret-stream'); return true } catch { return false }
}

/** A CPU hog (`--busy`): a child process spinning on one core until told to stop (bounded). */
function startHog () {
  const child = fork(fileURLToPath(import.meta.url), ['--role=hog'], { stdio: 'ignore' })
  return () => child.kill('SIGKILL')
}

function hog () {
  hardLimit(1_800_000, 'rudp bench hog')
  process.on('disconnect', () => process.exit(0))
  const spin = () => { const end = Date.now() + 50; while (Date.now() < end) { /* spin */ } setImmediate(spin) }
  spin()
}

const stat = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return null
  return { min: v[0], median: v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2, max: v[v.length - 1], n: v.length }
}
const fmt = (x, d = 1) => (x === null || x === undefined ? '–' : x.toFixed(d))
const range = (st, d = 1, unit = '') => (st ? `${fmt(st.min, d)}${unit} / ${fmt(st.median, d)}${unit} / ${fmt(st.max, d)}${unit}` : '–')

/** A full garbage collection of this (the sending) process, between measurements. */
function collect () {
  v8.setFlagsFromString('--expose-gc')
  vm.runInNewContext('gc')()
}

async function main () {
  hardLimit(3_600_000, 'rudp bench')
  const runs = Number(flags.runs ?? 1)
  const parts = (flags.parts ?? 'bulk,lossy,small,secure').split(',')
  const impls = (flags.impls ?? 'deccom,udx,tcp').split(',').filter((i) => {
    if (available(i)) return true
    console.error(`(skipping ${i}: run "npm install --prefix bench" to install it)`)
    return false
  })
  const stopHog = flags.busy === 'true' ? startHog() : () => {}
  const results = []
  try {
    const warmup = parts.includes('small') ? Number(flags.warmup ?? 2) : 0
    for (let w = 0; w < warmup; w++) {
      for (const impl of impls.filter((i) => i !== 'tcp')) {
        try {
          collect()
          const r = await runOne(impl, 'small')
          console.error(`warm-up ${w + 1}/${warmup} ${impl} small: ${Math.round(r.msgps)} messages/s (not counted)`)
        } catch (e) {
          console.error(`warm-up ${w + 1}/${warmup} ${impl} small failed: ${e.message}`)
        }
      }
    }
    for (let run = 0; run < runs; run++) {
      // Alternate: each run visits the implementations in the other order.
      const order = run % 2 === 0 ? impls : [...impls].reverse()
      for (const part of parts) {
        for (const impl of order) {
          if ((part === 'lossy' || part === 'lossy1') && impl !== 'deccom') continue // peers have no built-in drop hook
          if (part === 'small' && impl === 'tcp') continue
          if (part === 'secure' && impl !== 'deccom' && !secureAvailable()) continue
          try {
            collect()
            const r = await runOne(impl, part)
            r.run = run
            results.push(r)
            console.error(`run ${run + 1}/${runs} ${impl} ${part}: ${r.mbps.toFixed(1)} MB/s${r.msgps ? `, ${Math.round(r.msgps)} messages/s` : ''} ${JSON.stringify({ receiver: r.receiver, sender: r.sender })}`)
          } catch (e) {
            console.error(`run ${run + 1}/${runs} ${impl} ${part} failed: ${e.message}`)
          }
        }
      }
    }
  } finally {
    stopHog()
  }
  const of = (impl, part) => results.filter((r) => r.impl === impl && r.part === part)
  const mbps = (impl, part) => stat(of(impl, part).map((r) => r.mbps))
  /** Per-run ratios a/b (same run index), then their min/median/max. */
  const ratios = (ia, pa, ib, pb, key = 'mbps') => stat(of(ia, pa).map((a) => { const b = of(ib, pb).find((x) => x.run === a.run); return b ? a[key] / b[key] : NaN }))
  console.log(`
${runs} run(s)${flags.busy === 'true' ? ', with a CPU hog on one core' : ''}${parts.includes('small') ? ` (small messages after ${Number(flags.warmup ?? 2)} uncounted warm-up runs of each implementation)` : ''}; figures are min / median / max; ratios are taken per run, then min / median / max.`)
  console.log(`
One ${MIB} MiB message over 127.0.0.1, sender and receiver in separate processes (MB/s)
`)
  console.log('| deccom ReliableUdp | udx-native stream | node:net TCP | deccom / udx | deccom / TCP |')
  console.log('| ---: | ---: | ---: | ---: | ---: |')
  console.log(`| ${range(mbps('deccom', 'bulk'))} | ${range(mbps('udx', 'bulk'))} | ${range(mbps('tcp', 'bulk'))} | ${range(ratios('deccom', 'bulk', 'udx', 'bulk'), 2, '×')} | ${range(ratios('deccom', 'bulk', 'tcp', 'bulk'), 2, '×')} |`)
  const dt = mbps('deccom', 'bulk')
  const tt = mbps('tcp', 'bulk')
  if (dt && tt) console.log(`
Slowest deccom run / slowest TCP run: ${(dt.min / tt.min).toFixed(2)}×`)
  const retx = stat(of('deccom', 'bulk').map((r) => (100 * (r.sender.rudp_retransmits ?? 0)) / (r.sender.txDatagrams || 1)))
  if (retx) console.log(`Retransmitted datagrams, loss-free deccom bulk: ${range(retx, 2, ' %')} of the datagrams sent`)
  for (const [part, pct] of [['lossy', LOSS * 100], ['lossy1', 1]]) {
    const l = mbps('deccom', part)
    if (l) console.log(`With ${pct}% random loss on receive at both deccom nodes: ${range(l)} MB/s; per run, of the loss-free figure: ${range(ratios('deccom', part, 'deccom', 'bulk'), 2, '×')}`)
  }
  if (of('deccom', 'secure').length + of('udx', 'secure').length + of('tcp', 'secure').length > 0) {
    console.log(`\nEncrypted: one ${MIB} MiB message, deccom [ReliableUdp, Noise encrypt] (native) vs @hyperswarm/secret-stream (MB/s)\n`)
    console.log('| deccom ReliableUdp over Noise | secret-stream over udx | secret-stream over TCP | deccom / ss-udx | deccom / ss-TCP |')
    console.log('| ---: | ---: | ---: | ---: | ---: |')
    console.log(`| ${range(mbps('deccom', 'secure'))} | ${range(mbps('udx', 'secure'))} | ${range(mbps('tcp', 'secure'))} | ${range(ratios('deccom', 'secure', 'udx', 'secure'), 2, '×')} | ${range(ratios('deccom', 'secure', 'tcp', 'secure'), 2, '×')} |`)
  }
  const ds = stat(of('deccom', 'small').map((r) => r.msgps))
  if (ds) console.log(`\n${SMALL} messages of 1 KiB: deccom ${range(ds, 0)} messages/s (each acknowledged); udx-native stream ${range(stat(of('udx', 'small').map((r) => r.msgps)), 0)} writes/s; ratio ${range(ratios('deccom', 'small', 'udx', 'small', 'msgps'), 2, '×')}`)
  if (flags.json) fs.writeFileSync(flags.json, JSON.stringify(results, null, 2))
}

if (flags.role === 'recv') await receiver()
else if (flags.role === 'hog') hog()
else { await main(); process.exit(0) }
