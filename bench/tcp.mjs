// TcpTransport vs raw node:net, in one run: 256 MiB from this process (the sender) to a forked
// child (the receiver) over 127.0.0.1, printing MB/s and the ratio.
//  - raw:    node:net, 64 KiB writes, honouring write() === false / 'drain'; the child counts bytes;
//  - deccom: TcpTransport (above a UdpTransport, as in a Node), `await sendStream(id, frame)` of
//            64 KiB frames (and 1 MiB frames); the child counts bytes in its 'frame' listener,
//            i.e. after parsing and frame assembly.
// Each measurement runs --runs times (default 3, alternating raw/deccom); the median is reported.
// Time = from the first write until the child reports (over IPC) that it received every byte.
//
//   node bench/tcp.mjs [--mib=256] [--runs=3] [--json] [--prof=DIR  (CPU profile of the receiver)]
import { fork } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const DIST = pathToFileURL(path.join(HERE, '..', 'dist', 'index.mjs')).href
const flags = Object.fromEntries(
  process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/.exec(a)).filter(Boolean).map((m) => [m[1], m[2] ?? 'true']),
)
const TOTAL = Number(flags.mib ?? 256) * 1024 * 1024
const RUNS = Number(flags.runs ?? 3)
const now = () => performance.now()
const cpuMs = (c0) => {
  const c = process.cpuUsage(c0)
  return (c.user + c.system) / 1000
}

// ---------------------------------------------------------------------------------------------
// Child: the receiver.
if (process.argv.includes('--child')) {
  const { Node, TcpTransport } = await import(DIST)
  let node = null
  let server = null
  process.on('message', async (m) => {
    if (m.cmd === 'raw') {
      let got = 0
      const c0 = process.cpuUsage()
      server = net.createServer((s) => {
        s.on('data', (d) => {
          got += d.length
          if (got >= m.total) process.send({ done: got, cpu: cpuMs(c0) })
        })
        s.on('error', () => {})
      })
      server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }))
    } else if (m.cmd === 'deccom') {
      let got = 0
      let frames = 0
      let c0 = null
      const tcp = new TcpTransport()
      node = await Node.create({ host: '127.0.0.1', stack: [tcp] })
      tcp.on('frame', (_peer, data) => {
        c0 ??= process.cpuUsage()
        got += data.length
        frames++
        if (got >= m.total) process.send({ done: got, frames, cpu: cpuMs(c0) })
      })
      process.send({ port: tcp.tcpAddress().port, id: node.id.toString('hex') })
    } else if (m.cmd === 'reset') {
      if (server) await new Promise((r) => server.close(r))
      if (node) await node.close()
      server = null
      node = null
      process.send({ reset: true })
    } else if (m.cmd === 'exit') {
      process.exit(0)
    }
  })
  process.send({ ready: true })
} else {
  await main()
}

function ask(child, msg, key) {
  return new Promise((resolve) => {
    const on = (m) => {
      if (key in m) {
        child.off('message', on)
        resolve(m)
      }
    }
    child.on('message', on)
    if (msg) child.send(msg)
  })
}

async function raw(child, size) {
  const { port } = await ask(child, { cmd: 'raw', total: TOTAL }, 'port')
  const sock = net.connect({ host: '127.0.0.1', port })
  await new Promise((r) => sock.once('connect', r))
  const chunk = Buffer.alloc(size, 7)
  const done = ask(child, null, 'done')
  const t0 = now()
  const c0 = process.cpuUsage()
  for (let sent = 0; sent < TOTAL; sent += size) {
    if (!sock.write(chunk)) await new Promise((r) => sock.once('drain', r))
  }
  const reply = await done
  const ms = now() - t0
  const cpu = cpuMs(c0)
  sock.destroy()
  await ask(child, { cmd: 'reset' }, 'reset')
  return { ms, sender: cpu, receiver: reply.cpu }
}

async function deccom(child, size, Node, TcpTransport) {
  const { port, id } = await ask(child, { cmd: 'deccom', total: TOTAL }, 'port')
  const tcp = new TcpTransport()
  const node = await Node.create({ host: '127.0.0.1', stack: [tcp] })
  await tcp.openConnection(`127.0.0.1:${port}`)
  const frame = Buffer.alloc(size, 7)
  const done = ask(child, null, 'done')
  const t0 = now()
  const c0 = process.cpuUsage()
  for (let sent = 0; sent < TOTAL; sent += size) await tcp.sendStream(id, frame)
  const reply = await done
  const ms = now() - t0
  const cpu = cpuMs(c0)
  if (reply.frames !== TOTAL / size) throw new Error(`frames ${reply.frames} != ${TOTAL / size}`)
  await node.close()
  await ask(child, { cmd: 'reset' }, 'reset')
  return { ms, sender: cpu, receiver: reply.cpu }
}

async function main() {
  setTimeout(() => {
    process.stderr.write('tcp bench: hard limit reached\n')
    process.exit(3)
  }, 600_000).unref()
  const { Node, TcpTransport } = await import(DIST)
  const child = fork(fileURLToPath(import.meta.url), ['--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: flags.prof ? ['--cpu-prof', `--cpu-prof-dir=${flags.prof}`] : [] })
  await ask(child, null, 'ready')
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const mbps = (ms) => TOTAL / 1e6 / (ms / 1000)
  const cases = [
    ['raw node:net, 64 KiB writes', () => raw(child, 64 * 1024)],
    ['deccom TcpTransport, 64 KiB frames', () => deccom(child, 64 * 1024, Node, TcpTransport)],
    ['deccom TcpTransport, 1 MiB frames', () => deccom(child, 1024 * 1024, Node, TcpTransport)],
  ]
  const times = cases.map(() => [])
  await raw(child, 64 * 1024) // warm-up
  await deccom(child, 64 * 1024, Node, TcpTransport)
  for (let r = 0; r < RUNS; r++) for (const [i, [, fn]] of cases.entries()) times[i].push(await fn())
  child.send({ cmd: 'exit' })
  const rawMs = median(times[0].map((x) => x.ms))
  const results = cases.map(([name], i) => {
    const ms = median(times[i].map((x) => x.ms))
    return {
      name,
      ms,
      mbps: mbps(ms),
      ratio: rawMs / ms,
      senderCpuMs: median(times[i].map((x) => x.sender)),
      receiverCpuMs: median(times[i].map((x) => x.receiver)),
      runs: times[i].map((x) => Math.round(x.ms)),
    }
  })
  if (flags.json) {
    console.log(JSON.stringify({ totalBytes: TOTAL, runs: RUNS, results }, null, 2))
    return
  }
  console.log(`\n${TOTAL / 1024 / 1024} MiB, 127.0.0.1, sender = this process, receiver = forked child; median of ${RUNS} runs\n`)
  console.log('| case | time | throughput | vs raw | sender CPU | receiver CPU | runs (ms) |')
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | --- |')
  for (const r of results) {
    console.log(`| ${r.name} | ${r.ms.toFixed(0)} ms | ${r.mbps.toFixed(0)} MB/s | ${r.ratio.toFixed(2)}× | ${r.senderCpuMs.toFixed(0)} ms | ${r.receiverCpuMs.toFixed(0)} ms | ${r.runs.join(', ')} |`)
  }
}
