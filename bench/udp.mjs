// UDP datagram rate, deccom vs node:dgram (and the kernel's own rate through a C
// sendmmsg/recvmmsg program when one is available), in one run, printing ratios.
//
//   node bench/udp.mjs [--seconds=3] [--sizes=1200,64] [--batch=32] [--rcvbuf=4194304] [--runs=1]
//                      [--mmsg=path/to/10-mmsg.c] [--json]
//
// Sender and receiver are separate processes (the receiver is forked). The sender is unpaced:
// it sends `batch` datagrams, yields with setImmediate, and repeats for `seconds`. The receiver
// counts datagrams in the JavaScript callback (`node.on('message')` for deccom, `socket.on('message')`
// for node:dgram) and reports count and first/last receive times. Rate = received / (last - first).
// Loss = 1 - received / sent. Only 127.0.0.1 is used. Every loop is bounded by time and count, and
// a hard limit ends the process whatever happens.
import dgram from 'node:dgram'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFileSync, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(HERE, '..')
const HOST = '127.0.0.1'
const MAX_DATAGRAMS = 50_000_000

const flags = Object.fromEntries(
  process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/.exec(a)).filter(Boolean).map((m) => [m[1], m[2] ?? 'true']),
)
const SECONDS = Number(flags.seconds ?? 3)
const BATCH = Number(flags.batch ?? 32)
const RCVBUF = Number(flags.rcvbuf ?? 4 * 1024 * 1024)
// Paced mode: the sender aims at RATE datagrams/s (0 = unpaced). --search finds, RFC 2544 style,
// the highest paced rate whose loss stays at or below --maxloss percent (1-second trials).
const RATE = Number(flags.rate ?? 0)
const SEARCH = flags.search !== undefined && flags.search !== 'false'
const MAX_LOSS = Number(flags.maxloss ?? 1)
const now = () => performance.now()

function hardLimit (ms, label) {
  setTimeout(() => {
    process.stderr.write(`${label}: hard time limit of ${ms} ms reached, exiting\n`)
    process.exit(3)
  }, ms).unref()
}

async function loadDeccom () {
  return import(path.join(ROOT, 'dist', 'index.mjs'))
}

// ---------- receiver (child process) ----------
async function receiver () {
  hardLimit(120_000, 'udp bench receiver')
  process.on('disconnect', () => process.exit(0))
  let count = 0
  let bytes = 0
  let tFirst = 0
  let tLast = 0
  const onMessage = (len) => {
    if (count === 0) tFirst = now()
    count++
    bytes += len
    tLast = now()
  }
  let port
  let close
  let extra = () => ({})
  if (flags.impl === 'deccom') {
    const { Node, Identity } = await loadDeccom()
    const node = await Node.create({ identity: Identity.fromString('receiver'), host: HOST, port: 0, recvBufferSize: RCVBUF })
    node.on('message', (_from, data) => onMessage(data.length))
    port = node.address.port
    close = () => node.close()
    extra = () => {
      const s = node.stats().udp
      return { rxBatches: s.rxBatches, rxSyscalls: s.rxSyscalls, rxDroppedQueueFull: s.rxDroppedQueueFull, recvBufferSize: s.recvBufferSize, groSegments: s.groSegments }
    }
  } else {
    const sock = dgram.createSocket('udp4')
    sock.on('message', (msg) => onMessage(msg.length))
    await new Promise((resolve) => sock.bind(0, HOST, resolve))
    sock.setRecvBufferSize(RCVBUF)
    port = sock.address().port
    close = () => new Promise((resolve) => sock.close(resolve))
    extra = () => ({ recvBufferSize: sock.getRecvBufferSize() })
  }
  process.send({ port })
  process.on('message', async (m) => {
    if (m === 'report') {
      const report = { count, bytes, tFirst, tLast, ...extra() }
      await close()
      process.send(report, () => process.exit(0))
    }
  })
}

// ---------- sender (parent) ----------
async function makeSender (impl, port) {
  if (impl === 'deccom') {
    const { Node, Identity, toAddress } = await loadDeccom()
    const node = await Node.create({ identity: Identity.fromString('sender'), host: HOST, port: 0, sendBufferSize: RCVBUF })
    const to = toAddress(HOST, port)
    return {
      send: (payload) => { node.send(to, payload) },
      close: () => node.close(),
      stats: () => { const s = node.stats().udp; return { txSyscalls: s.txSyscalls, txQueued: s.txQueued, txDropped: s.txDroppedQueueFull + s.txErrors, gsoSegments: s.gsoSegments } },
    }
  }
  const sock = dgram.createSocket('udp4')
  await new Promise((resolve) => sock.bind(0, HOST, resolve))
  sock.setSendBufferSize(RCVBUF)
  return {
    send: (payload) => sock.send(payload, port, HOST),
    close: () => new Promise((resolve) => sock.close(resolve)),
    stats: () => ({}),
  }
}

function udpCounters () {
  try {
    const lines = fs.readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'))
    const keys = lines[0].split(/\s+/).slice(1)
    const vals = lines[1].split(/\s+/).slice(1).map(Number)
    return Object.fromEntries(keys.map((k, i) => [k, vals[i]]))
  } catch { return {} }
}

async function runJs (impl, size, { rate = RATE, seconds = SECONDS } = {}) {
  const child = fork(fileURLToPath(import.meta.url), ['--role=recv', `--impl=${impl}`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const killer = setTimeout(() => child.kill('SIGKILL'), (seconds + 30) * 1000)
  try {
    const ready = await new Promise((resolve, reject) => { child.once('message', resolve); child.once('exit', (c) => reject(new Error(`receiver exited ${c}`))) })
    const sender = await makeSender(impl, ready.port)
    const payload = Buffer.alloc(size, 7)
    const before = udpCounters()
    const t0 = now()
    const deadline = t0 + seconds * 1000
    let sent = 0
    await new Promise((resolve) => {
      const pump = () => {
        const t = now()
        // Unpaced: BATCH per turn. Paced: catch up to rate × elapsed, at most 4 × BATCH per turn.
        const n = rate > 0 ? Math.min(4 * BATCH, Math.floor((rate * (t - t0)) / 1000) - sent) : BATCH
        for (let i = 0; i < n; i++) sender.send(payload)
        if (n > 0) sent += n
        if (t < deadline && sent < MAX_DATAGRAMS) setImmediate(pump)
        else resolve()
      }
      pump()
    })
    const sendMs = now() - t0
    const senderStats = sender.stats()
    await new Promise((resolve) => setTimeout(resolve, 300)) // drain
    const after = udpCounters()
    const rep = await new Promise((resolve) => { child.once('message', resolve); child.send('report') })
    await sender.close()
    return {
      impl,
      size,
      rate,
      sent,
      received: rep.count,
      recvRate: rep.count / ((rep.tLast - rep.tFirst) / 1000),
      sendRate: sent / (sendMs / 1000),
      loss: 100 * (1 - rep.count / sent),
      rcvbufErrors: (after.RcvbufErrors ?? NaN) - (before.RcvbufErrors ?? NaN),
      receiver: Object.fromEntries(Object.entries(rep).filter(([k]) => !['count', 'bytes', 'tFirst', 'tLast'].includes(k))),
      sender: senderStats,
    }
  } finally {
    clearTimeout(killer)
    if (child.exitCode === null) setTimeout(() => child.kill('SIGKILL'), 2000).unref()
  }
}

function findMmsg () {
  const candidates = [flags.mmsg, process.env.DECCOM_MMSG_C, path.join(ROOT, '..', 'shared', 'peers', '10-mmsg.c')].filter(Boolean)
  return candidates.find((p) => fs.existsSync(p))
}

function runC (src, size) {
  const bin = path.join(os.tmpdir(), `deccom-bench-mmsg-${process.pid}`)
  if (!fs.existsSync(bin)) execFileSync('gcc', ['-O2', '-pthread', '-o', bin, src])
  const out = execFileSync(bin, [String(size), '64', String(SECONDS), String(RCVBUF)], { encoding: 'utf8', timeout: (SECONDS + 20) * 1000 })
  const lines = out.trim().split('\n').map((l) => { try { return JSON.parse(l) } catch { return null } }).filter(Boolean)
  const rate = lines.find((l) => /recv_rate$/.test(l.name))
  const loss = lines.find((l) => /loss$/.test(l.name))
  return { impl: 'C sendmmsg/recvmmsg', size, recvRate: rate?.value ?? NaN, loss: loss?.value ?? NaN }
}

// Highest paced rate with loss <= MAX_LOSS, by bisection between 0 and the unpaced send rate.
async function searchRate (impl, size, unpaced) {
  let lo = 0
  let hi = unpaced.sendRate
  let best = null
  if (unpaced.loss <= MAX_LOSS) return unpaced
  for (let i = 0; i < 7 && hi - lo > hi * 0.03; i++) {
    const mid = Math.round((lo + hi) / 2)
    const r = await runJs(impl, size, { rate: mid, seconds: 1 })
    if (r.loss <= MAX_LOSS) { lo = mid; best = r } else hi = mid
  }
  return best
}

const fmt = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–')

async function main () {
  hardLimit(600_000, 'udp bench')
  const sizes = (flags.sizes ?? '1200,64').split(',').map(Number)
  const runs = Number(flags.runs ?? 1)
  const mmsg = findMmsg()
  const results = []
  for (let r = 0; r < runs; r++) {
    for (const size of sizes) {
      for (const impl of ['deccom', 'node:dgram']) {
        const r = await runJs(impl, size)
        results.push(r)
        if (SEARCH) {
          const best = await searchRate(impl, size, r)
          if (best) results.push({ ...best, impl: impl + ' (paced, loss <= ' + MAX_LOSS + '%)' })
        }
      }
      if (mmsg && process.platform === 'linux') {
        try { results.push(runC(mmsg, size)) } catch (e) { process.stderr.write(`C reference failed: ${e.message}\n`) }
      }
    }
  }
  if (flags.json) for (const r of results) process.stdout.write(JSON.stringify(r) + '\n')
  const median = (xs) => { const s = xs.filter(Number.isFinite).sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN }
  console.log(`\nUDP datagrams/s delivered to a JS callback, 127.0.0.1, two processes, ${SECONDS} s, batch ${BATCH}, rcvbuf ${RCVBUF} B, ${runs} run(s) (median)\n`)
  console.log('| payload | deccom recv/s | loss % | node:dgram recv/s | loss % | C mmsg recv/s | deccom / dgram | deccom / C |')
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const size of sizes) {
    const pick = (impl, k) => median(results.filter((r) => r.impl === impl && r.size === size).map((r) => r[k]))
    const d = pick('deccom', 'recvRate')
    const g = pick('node:dgram', 'recvRate')
    const c = pick('C sendmmsg/recvmmsg', 'recvRate')
    console.log(`| ${size} B | ${fmt(d)} | ${pick('deccom', 'loss').toFixed(2)} | ${fmt(g)} | ${pick('node:dgram', 'loss').toFixed(2)} | ${fmt(c)} | ${(d / g).toFixed(2)}× | ${Number.isFinite(c) ? (d / c).toFixed(2) + '×' : '–'} |`)
  }
  if (SEARCH) {
    console.log(`\nHighest paced rate with loss <= ${MAX_LOSS}% (bisection, 1 s trials)\n`)
    console.log('| payload | deccom recv/s | loss % | node:dgram recv/s | loss % | C mmsg (unpaced) | deccom / dgram | deccom / C |')
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    for (const size of sizes) {
      const pick = (impl, k) => median(results.filter((r) => r.impl === impl && r.size === size).map((r) => r[k]))
      const tag = ' (paced, loss <= ' + MAX_LOSS + '%)'
      const d = pick('deccom' + tag, 'recvRate')
      const g = pick('node:dgram' + tag, 'recvRate')
      const c = pick('C sendmmsg/recvmmsg', 'recvRate')
      console.log(`| ${size} B | ${fmt(d)} | ${pick('deccom' + tag, 'loss').toFixed(2)} | ${fmt(g)} | ${pick('node:dgram' + tag, 'loss').toFixed(2)} | ${fmt(c)} | ${(d / g).toFixed(2)}× | ${Number.isFinite(c) ? (d / c).toFixed(2) + '×' : '–'} |`)
    }
  }
  for (const r of results.filter((x) => x.impl === 'deccom')) {
    console.log(`deccom ${r.size} B: sent ${r.sent.toLocaleString('en-US')} at ${fmt(r.sendRate)}/s, received ${r.received.toLocaleString('en-US')}, kernel RcvbufErrors ${r.rcvbufErrors}, receiver ${JSON.stringify(r.receiver)}, sender ${JSON.stringify(r.sender)}`)
  }
  if (!mmsg) console.log('\n(C reference skipped: pass --mmsg=path/to/sendmmsg-recvmmsg.c to include the kernel rate)')
}

if (flags.role === 'recv') await receiver()
else {
  await main()
  process.exit(0)
}
