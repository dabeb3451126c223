// Reliable bulk transfer over 127.0.0.1, two processes: deccom ReliableUdp vs an udx-native
// stream vs node:net TCP, in one run, printing ratios. Also the same transfer with 5 % random
// loss on both deccom nodes (native FaultyTransport on receive), 10,000 small messages, and the
// encrypted transfer: deccom [ReliableUdp, Noise (encrypt)] — Noise sealing every segment in the socket thread — vs @hyperswarm/secret-stream over an
// udx-native stream and over TCP.
//
//   node bench/rudp.mjs [--mib=256] [--small=10000] [--loss=5] [--parts=bulk,lossy,small,secure] [--impls=deccom,udx,tcp]
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
async function run (impl, part) {
  const lossy = part === 'lossy'
  const small = part === 'small'
  const secure = part === 'secure'
  const total = small ? SMALL * 1024 : MIB * 1024 * 1024
  const args = ['--role=recv', `--impl=${impl}`, `--bytes=${total}`, `--messages=${small && impl === 'deccom' ? SMALL : 0}`, `--loss=${lossy ? LOSS : 0}`, `--secure=${secure}`]
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
      if (lossy) stack.push(new FaultyTransport({ seed: 1, drop: LOSS, direction: 'receive' }))
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

async function main () {
  hardLimit(1_800_000, 'rudp bench')
  const parts = (flags.parts ?? 'bulk,lossy,small,secure').split(',')
  const impls = (flags.impls ?? 'deccom,udx,tcp').split(',').filter((i) => {
    if (available(i)) return true
    console.error(`(skipping ${i}: run "npm install --prefix bench" to install it)`)
    return false
  })
  const results = []
  for (const part of parts) {
    for (const impl of impls) {
      if (part === 'lossy' && impl !== 'deccom') continue // peers have no built-in drop hook
      if (part === 'small' && impl === 'tcp') continue
      if (part === 'secure' && impl !== 'deccom' && !secureAvailable()) continue
      try {
        const r = await run(impl, part)
        results.push(r)
        console.error(`${impl} ${part}: ${r.mbps.toFixed(1)} MB/s${r.msgps ? `, ${Math.round(r.msgps)} messages/s` : ''} ${JSON.stringify({ receiver: r.receiver, sender: r.sender })}`)
      } catch (e) {
        console.error(`${impl} ${part} failed: ${e.message}`)
      }
    }
  }
  const get = (impl, part) => results.find((r) => r.impl === impl && r.part === part)
  const d = get('deccom', 'bulk')
  const u = get('udx', 'bulk')
  const t = get('tcp', 'bulk')
  const l = get('deccom', 'lossy')
  const ratio = (a, b) => (a && b ? (a.mbps / b.mbps).toFixed(2) + '×' : '–')
  console.log(`\nOne ${MIB} MiB message over 127.0.0.1, sender and receiver in separate processes (MB/s)\n`)
  console.log('| deccom ReliableUdp | udx-native stream | node:net TCP | deccom / udx | deccom / TCP |')
  console.log('| ---: | ---: | ---: | ---: | ---: |')
  console.log(`| ${d?.mbps.toFixed(1) ?? '–'} | ${u?.mbps.toFixed(1) ?? '–'} | ${t?.mbps.toFixed(1) ?? '–'} | ${ratio(d, u)} | ${ratio(d, t)} |`)
  if (l) console.log(`\nWith ${LOSS * 100}% random loss on receive at both deccom nodes: ${l.mbps.toFixed(1)} MB/s = ${ratio(l, d)} of the loss-free figure`)
  const de = get('deccom', 'secure')
  const ue = get('udx', 'secure')
  const te = get('tcp', 'secure')
  if (de || ue || te) {
    console.log(`\nEncrypted: one ${MIB} MiB message, deccom [ReliableUdp, Noise encrypt] (native) vs @hyperswarm/secret-stream (MB/s)\n`)
    console.log('| deccom ReliableUdp over Noise | secret-stream over udx | secret-stream over TCP | deccom / ss-udx | deccom / ss-TCP |')
    console.log('| ---: | ---: | ---: | ---: | ---: |')
    console.log(`| ${de?.mbps.toFixed(1) ?? '–'} | ${ue?.mbps.toFixed(1) ?? '–'} | ${te?.mbps.toFixed(1) ?? '–'} | ${ratio(de, ue)} | ${ratio(de, te)} |`)
  }
  const ds = get('deccom', 'small')
  const us = get('udx', 'small')
  if (ds) console.log(`\n${SMALL} messages of 1 KiB: deccom ${Math.round(ds.msgps)} messages/s (each acknowledged); udx-native stream ${us ? Math.round(us.msgps) + ' writes/s' : '–'}; ratio ${us ? (ds.msgps / us.msgps).toFixed(2) + '×' : '–'}`)
  if (flags.json) fs.writeFileSync(flags.json, JSON.stringify(results, null, 2))
}

if (flags.role === 'recv') await receiver()
else { await main(); process.exit(0) }
