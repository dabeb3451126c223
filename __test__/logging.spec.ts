/**
 * DEBUG logging per layer: each layer logs under its own namespace (`deccom:<layer>`) with the
 * node's short id, only the enabled namespaces print, and network input cannot flood the log (a
 * rate limit per message kind, with a "suppressed K similar lines" summary).
 *
 * `debug` reads DEBUG when it loads and writes to stderr, so every case runs real nodes on
 * 127.0.0.1 in a child process importing the BUILT package (dist/).
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { join } from 'node:path'

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..')
const dist = JSON.stringify(join(root, 'dist', 'index.js'))

/** Runs `script` (CommonJS) with `DEBUG=debug`; resolves with its exit code, stdout and stderr. */
function run(script: string, debug: string, ms: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', script], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '', DEBUG: debug, DEBUG_COLORS: 'no' },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** The `debug` lines of `stderr` (namespace first, after the timestamp debug adds when not on a TTY). */
function lines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => / deccom:\S+ /.test(` ${l}`))
}

const THREE_NODES = `
const { Node, Kademlia, Noise, ReliableUdp } = require(${dist})
const mk = (bootstrap) => Node.create({ host: '127.0.0.1', stack: [new Kademlia({ bootstrap }), new Noise(), new ReliableUdp()] })
;(async () => {
  const a = await mk([])
  const b = await mk([a.address])
  const c = await mk([a.address])
  const joined = (n) => new Promise((resolve) => {
    const k = n.stack.find(Kademlia)
    const poll = () => (n.stats().kademlia.joined ? resolve() : setTimeout(poll, 20))
    poll()
  })
  await Promise.all([joined(b), joined(c)])
  const peer = await b.stack.find(Kademlia).findPeer(c.id)
  const got = new Promise((resolve) => c.once('message', (from, data) => resolve(String(data))))
  await b.send(peer, Buffer.from('hello'))
  if ((await got) !== 'hello') throw new Error('no message')
  await Promise.all([a.close(), b.close(), c.close()])
  console.log(JSON.stringify({ ids: [a, b, c].map((n) => n.identity.idHex.slice(0, 8)) }))
})().catch((e) => { console.error('FAILED', e); process.exit(1) })
`

test('DEBUG=deccom:kademlia,deccom:noise prints the joins, lookups and handshakes of those layers only, tagged per node', async (t) => {
  t.timeout(60_000)
  const r = await run(THREE_NODES, 'deccom:kademlia,deccom:noise', 50_000)
  t.is(r.code, 0, r.stderr.slice(-2000))
  const { ids } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ids: string[] }
  const out = lines(r.stderr)
  const [a, b, c] = ids
  // Only the enabled namespaces print.
  const namespaces = new Set(out.map((l) => / (deccom:\S+) /.exec(` ${l}`)![1]))
  t.deepEqual([...namespaces].sort(), ['deccom:kademlia', 'deccom:noise'], out.join('\n'))
  // Every line names its node.
  t.true(out.every((l) => ids.some((id) => l.includes(`[${id}] `))), out.join('\n'))
  const has = (re: RegExp) => t.true(out.some((l) => re.test(l)), `no line matching ${re}:\n${out.join('\n')}`)
  has(new RegExp(`deccom:kademlia \\[${a}\\] no bootstrap address`))
  has(new RegExp(`deccom:kademlia \\[${b}\\] joined: [1-9]\\d* peers in [1-9]\\d* buckets`))
  has(new RegExp(`deccom:kademlia \\[${c}\\] joined: [1-9]\\d* peers in [1-9]\\d* buckets`))
  has(new RegExp(`deccom:kademlia \\[${b}\\] lookup ${c} (started|found)`))
  has(new RegExp(`deccom:noise \\[${b}\\] mode encrypt`))
  // Both ends report the handshake, with the authenticated id of the other.
  has(new RegExp(`deccom:noise \\[${b}\\] handshake with 127\\.0\\.0\\.1:\\d+ started`))
  has(new RegExp(`deccom:noise \\[${b}\\] handshake with 127\\.0\\.0\\.1:\\d+ completed: ${a}`))
  has(new RegExp(`deccom:noise \\[${a}\\] handshake with 127\\.0\\.0\\.1:\\d+ completed: ${b}`))
  has(new RegExp(`deccom:noise \\[${b}\\] handshake with 127\\.0\\.0\\.1:\\d+ completed: ${c}`))
})

test('without DEBUG nothing is printed', async (t) => {
  t.timeout(60_000)
  const r = await run(THREE_NODES, '', 50_000)
  t.is(r.code, 0, r.stderr.slice(-2000))
  t.deepEqual(lines(r.stderr), [])
})

const FLOOD = `
const dgram = require('node:dgram')
const { Node, Kademlia, TAG_KAD } = require(${dist})
;(async () => {
  const node = await Node.create({ host: '127.0.0.1', recvBufferSize: 8 << 20, stack: [new Kademlia()] })
  const sock = dgram.createSocket('udp4')
  await new Promise((r) => sock.bind(0, '127.0.0.1', r))
  const bad = Buffer.alloc(40, 0xee)
  bad[0] = TAG_KAD
  const t0 = performance.now()
  for (let sent = 0; sent < 10000; ) {
    const batch = []
    for (let i = 0; i < 200; i++, sent++) batch.push(new Promise((r) => sock.send(bad, node.address.port, '127.0.0.1', r)))
    await Promise.all(batch)
    await new Promise((r) => setImmediate(r))
  }
  // Wait until the node has taken in everything that arrived.
  let last = -1
  for (;;) {
    await new Promise((r) => setTimeout(r, 200))
    const n = node.stats().kademlia.received ?? 0
    if (n === last) break
    last = n
  }
  const elapsed = performance.now() - t0
  const stats = node.stats()
  await node.close()
  sock.close()
  console.log(JSON.stringify({ stats: stats.kademlia, elapsed, id: node.identity.idHex.slice(0, 8) }))
})().catch((e) => { console.error('FAILED', e); process.exit(1) })
`

test('10,000 malformed datagrams with DEBUG=deccom:* print a bounded number of lines and account for every drop', async (t) => {
  t.timeout(60_000)
  const r = await run(FLOOD, 'deccom:*', 50_000)
  t.is(r.code, 0, r.stderr.slice(-2000))
  const { stats, elapsed, id } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { stats: Record<string, number>; elapsed: number; id: string }
  const out = lines(r.stderr)
  t.log(`${stats.received} datagrams taken in ${elapsed.toFixed(0)} ms; ${out.length} lines`)
  // Most of the flood arrived (loopback may drop some) and was dropped as malformed.
  t.true(stats.dropped_malformed >= 5000, JSON.stringify(stats))
  t.true(out.length < 200, `${out.length} lines:\n${out.slice(0, 40).join('\n')}`)
  // Every drop is either printed or counted in a summary line, none is lost from the log's account.
  const printed = out.filter((l) => new RegExp(`deccom:kademlia \\[${id}\\] dropped_malformed$`).test(l)).length
  const summaries = out.filter((l) => l.includes(`deccom:kademlia [${id}] suppressed `) && l.endsWith(' similar lines: dropped_malformed'))
  t.true(summaries.length >= 1, out.join('\n'))
  const suppressed = summaries.reduce((sum, l) => sum + Number(/suppressed (\d+) similar/.exec(l)![1]), 0)
  t.is(printed + suppressed, stats.dropped_malformed)
  t.true(printed <= 50 + Math.ceil((20 * elapsed) / 1000) + 1, `${printed} lines in ${elapsed} ms`)
})
