/**
 * DEBUG logging per layer: each layer logs under its own namespace (`deccom:<layer>`) with the
 * node's short id, only the enabled namespaces print, and network input cannot flood the log (a
 * rate limit per message kind, with a "suppressed K similar lines" summary).
 *
 * `debug` reads DEBUG when it loads and writes to stderr, so every case runs real nodes on
 * 127.0.0.1 in a child process importing the BUILT package (dist/).
 */
import test from 'ava'
import createDebug from 'debug'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { format } from 'node:util'
import { type Clock, type TimerHandle, LogGroup, Protocol, Stack } from '../dist/index.js'

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
  // c is findable once the bootstrap node has verified it (a round trip after c joined).
  await new Promise((resolve) => { const poll = () => (a.stats().kademlia.table_size >= 2 ? resolve() : setTimeout(poll, 10)); poll() })
  const r = await b.stack.find(Kademlia).lookup(c.id)
  if (!r.closest.some((p) => p.id.equals(c.id))) throw new Error('lookup did not find c')
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
  has(new RegExp(`deccom:kademlia \\[${b}\\] lookup ${c} started`))
  has(new RegExp(`deccom:kademlia \\[${b}\\] lookup ${c} (found|done): \\d+ hops, [1-9]\\d* queries \\(\\d+ failed, \\d+ timed out\\) in \\d+ ms`))
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

const NATIVE = `
const { Node, Noise, ReliableUdp } = require(${dist})
;(async () => {
  const mk = () => Node.create({ host: '127.0.0.1', stack: [new ReliableUdp(), new Noise()] })
  const a = await mk()
  const b = await mk()
  const got = new Promise((resolve) => b.once('message', (from, data) => resolve(String(data))))
  await a.send(b.address, Buffer.from('hello'))
  if ((await got) !== 'hello') throw new Error('no message')
  await Promise.all([a.close(), b.close()])
  console.log(JSON.stringify({ ids: [a, b].map((n) => n.identity.idHex.slice(0, 8)) }))
})().catch((e) => { console.error('FAILED', e); process.exit(1) })
`

test('Noise and ReliableUdp running in the socket thread log their mode and the handshakes JavaScript sees', async (t) => {
  t.timeout(60_000)
  const r = await run(NATIVE, 'deccom:noise,deccom:reliable-udp', 50_000)
  t.is(r.code, 0, r.stderr.slice(-2000))
  const [a, b] = (JSON.parse(r.stdout.trim().split('\n').pop()!) as { ids: string[] }).ids
  const out = lines(r.stderr)
  const has = (re: RegExp) => t.true(out.some((l) => re.test(l)), `no line matching ${re}:\n${out.join('\n')}`)
  has(new RegExp(`deccom:noise \\[${a}\\] runs natively in the I/O thread of udp`))
  has(new RegExp(`deccom:reliable-udp \\[${a}\\] runs natively in the I/O thread of udp`))
  has(new RegExp(`deccom:reliable-udp \\[${a}\\] mode native`))
  has(new RegExp(`deccom:noise \\[${a}\\] handshake with 127\\.0\\.0\\.1:\\d+ completed \\(native\\): ${b}`))
  has(new RegExp(`deccom:noise \\[${b}\\] handshake with 127\\.0\\.0\\.1:\\d+ completed \\(native\\): ${a}`))
  t.false(out.some((l) => / deccom:(udp|app) /.test(` ${l}`)), out.join('\n'))
})

// ---------------------------------------------------------------------------------------------
// The rate limiter itself, in this process, on a manual clock (virtual time).
// ---------------------------------------------------------------------------------------------

/** A clock whose time moves only by `advance`; its timers fire in order. */
class ManualClock implements Clock {
  t = 0
  readonly timers = new Map<object, { at: number; fn: () => void }>()
  now(): number {
    return this.t
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const h = {}
    this.timers.set(h, { at: this.t + Math.max(0, ms), fn })
    return h
  }
  clearTimeout(h: TimerHandle | undefined): void {
    if (h) this.timers.delete(h)
  }
  advance(ms: number): void {
    const end = this.t + ms
    for (;;) {
      const due = [...this.timers].filter(([, x]) => x.at <= end).sort((p, q) => p[1].at - q[1].at)[0]
      if (!due) break
      this.timers.delete(due[0])
      this.t = due[1].at
      due[1].fn()
    }
    this.t = end
  }
}

/** Lines `debug` printed for the namespaces `deccom:unit-*`, captured (this worker only). */
const captured: string[] = []
createDebug.enable('deccom:unit-*')
createDebug.log = (...a: unknown[]) => void captured.push(format(...a))
const take = (ns: string): string[] => captured.filter((l) => l.includes(` deccom:${ns} `) || l.includes(`deccom:${ns} `)).map((l) => l.slice(l.indexOf(`deccom:${ns} `) + `deccom:${ns} `.length))

test('rate limit: a burst of 50, then 20 lines a second, the rest summarized once per second', (t) => {
  const clock = new ManualClock()
  const logs = new LogGroup('n1', clock, { timers: clock })
  const log = logs.layer('unit-rate')
  t.true(log.enabled)
  t.is(log.namespace, 'deccom:unit-rate')
  for (let i = 0; i < 100; i++) log('datagram %d from %s', i, 'x')
  let out = take('unit-rate')
  t.is(out.length, 50)
  t.is(out[0], '[n1] datagram 0 from x')
  t.is(out[49], '[n1] datagram 49 from x')
  t.is(clock.timers.size, 1) // the summary timer
  clock.advance(999)
  t.is(take('unit-rate').length, 50)
  clock.advance(1)
  out = take('unit-rate')
  t.is(out[50], '[n1] suppressed 50 similar lines: datagram %d from %s')
  t.is(clock.timers.size, 0)
  // One second later 20 more fit (the bucket refilled 20 tokens); the 21st is suppressed.
  for (let i = 0; i < 30; i++) log('datagram %d from %s', 100 + i, 'x')
  out = take('unit-rate')
  t.is(out.length, 51 + 20)
  t.is(out[70], '[n1] datagram 119 from x')
  // close() prints the pending summary at once and arms no timer.
  logs.close()
  t.is(take('unit-rate')[71], '[n1] suppressed 10 similar lines: datagram %d from %s')
  t.is(clock.timers.size, 0)
})

test('rate limit: each message kind has its own budget; kinds are bounded and the rest share one', (t) => {
  const clock = new ManualClock()
  const logs = new LogGroup('', clock, { rate: 1, burst: 2, timers: clock })
  const log = logs.layer('unit-kinds')
  for (let i = 0; i < 3; i++) {
    log('joined')
    log('dropped_x')
  }
  t.deepEqual(take('unit-kinds'), ['joined', 'dropped_x', 'joined', 'dropped_x'])
  // The summaries come from one timer, a second after the first suppressed line.
  clock.advance(500)
  log('joined') // still no token (0.5 refilled)
  clock.advance(500)
  t.deepEqual(take('unit-kinds').slice(4).sort(), ['suppressed 1 similar lines: dropped_x', 'suppressed 2 similar lines: joined'])
  // 1000 distinct format strings: 256 kinds are tracked, the others share one bucket (burst 2).
  const wide = logs.layer('unit-wide')
  for (let i = 0; i < 1000; i++) wide(`kind ${i}`)
  logs.close()
  const out = take('unit-wide')
  t.is(out.filter((l) => l.startsWith('kind ')).length, 256 + 2)
  t.deepEqual(out.filter((l) => l.startsWith('suppressed')), ['suppressed 742 similar lines: (other messages)'])
})

test('a disabled namespace formats nothing, stores nothing and arms no timer', (t) => {
  const clock = new ManualClock()
  const logs = new LogGroup('n2', clock, { timers: clock })
  const log = logs.layer('other-layer') // not enabled here: only deccom:unit-* is
  t.false(log.enabled)
  let formatted = 0
  const costly = { toString: () => String(++formatted) }
  for (let i = 0; i < 1000; i++) log('value %s', costly)
  t.is(formatted, 0)
  t.is(clock.timers.size, 0)
  t.false(captured.some((l) => l.includes('other-layer')))
  logs.close()
})

const SIM = `
const { SimulatedNetwork } = require(${dist})
;(async () => {
  const sim = new SimulatedNetwork({ seed: 7, defaultLink: { latency: 5, jitter: 2 } })
  const nodes = await sim.createNodes(3)
  const bottom = nodes[0].stack.layers[nodes[0].stack.layers.length - 1]
  // 1,000 datagrams of an unknown tag per virtual second at node 1, for 5 virtual seconds.
  const flood = (k) => {
    if (k === 5000) return
    bottom.send(nodes[1].address, Buffer.from([k & 0xff]), 77)
    sim.clock.setTimeout(() => flood(k + 1), 1)
  }
  flood(0)
  await sim.runFor(6000)
  const stats = nodes[1].stats().app
  const hash = sim.trace.hash
  await sim.close()
  console.log(JSON.stringify({ hash, dropped: stats.dropped_unknown_tag, id: nodes[1].identity.idHex.slice(0, 8) }))
})().catch((e) => { console.error('FAILED', e); process.exit(1) })
`

test('in a SimulatedNetwork the rate limit runs in virtual time and logging leaves the trace unchanged', async (t) => {
  t.timeout(60_000)
  const [quiet, loud] = await Promise.all([run(SIM, '', 50_000), run(SIM, 'deccom:*', 50_000)])
  t.is(quiet.code, 0, quiet.stderr.slice(-2000))
  t.is(loud.code, 0, loud.stderr.slice(-2000))
  const q = JSON.parse(quiet.stdout.trim().split('\n').pop()!) as { hash: string; dropped: number; id: string }
  const l = JSON.parse(loud.stdout.trim().split('\n').pop()!) as { hash: string; dropped: number; id: string }
  t.is(q.dropped, 5000)
  t.is(l.dropped, 5000)
  t.is(l.hash, q.hash) // same seed, same events, whatever DEBUG says
  t.deepEqual(lines(quiet.stderr), [])
  const out = lines(loud.stderr).filter((x) => x.includes(`deccom:app [${l.id}] `))
  // 5 virtual seconds: a burst of 50, then 20 a second, and the rest in summaries.
  const printed = out.filter((x) => x.endsWith(`[${l.id}] dropped_unknown_tag`)).length
  const suppressed = out.filter((x) => x.includes('similar lines: dropped_unknown_tag')).reduce((s, x) => s + Number(/suppressed (\d+)/.exec(x)![1]), 0)
  t.true(printed >= 50 && printed <= 50 + 20 * 5 + 1, `${printed} lines`)
  t.is(printed + suppressed, 5000)
  t.true(out.length - printed <= 5 + 1, `${out.length - printed} summaries: at most about one per second`)
})

const TCP = `
const { Node, TcpTransport } = require(${dist})
;(async () => {
  const mk = async () => { const tcp = new TcpTransport(); return { tcp, node: await Node.create({ host: '127.0.0.1', stack: [tcp] }) } }
  const a = await mk()
  const b = await mk()
  const peer = await a.tcp.openConnection(b.tcp.tcpAddress())
  const closed = new Promise((resolve) => b.tcp.once('close', resolve))
  a.tcp.disconnect(peer.id)
  await closed
  // A dial to a port nobody listens on fails; the failure is logged with its reason.
  const dead = require('node:net').createServer()
  await new Promise((r) => dead.listen(0, '127.0.0.1', r))
  const port = dead.address().port
  await new Promise((r) => dead.close(r))
  await a.tcp.openConnection('127.0.0.1:' + port).then(() => { throw new Error('connected?!') }, () => {})
  await Promise.all([a.node.close(), b.node.close()])
  console.log(JSON.stringify({ ids: [a, b].map((n) => n.node.identity.idHex.slice(0, 8)), port }))
})().catch((e) => { console.error('FAILED', e); process.exit(1) })
`

test('DEBUG=deccom:tcp logs dials, opened connections and closes with their reason', async (t) => {
  t.timeout(60_000)
  const r = await run(TCP, 'deccom:tcp', 50_000)
  t.is(r.code, 0, r.stderr.slice(-2000))
  const { ids, port } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ids: string[]; port: number }
  const [a, b] = ids
  const out = lines(r.stderr)
  const has = (re: RegExp) => t.true(out.some((l) => re.test(l)), `no line matching ${re}:\n${out.join('\n')}`)
  has(new RegExp(`deccom:tcp \\[${a}\\] dialing 127\\.0\\.0\\.1:\\d+`))
  has(new RegExp(`deccom:tcp \\[${a}\\] connection to ${b} \\(127\\.0\\.0\\.1:\\d+\\) open`))
  has(new RegExp(`deccom:tcp \\[${b}\\] connection to ${a} \\(127\\.0\\.0\\.1:\\d+\\) open`))
  has(new RegExp(`deccom:tcp \\[${a}\\] connection to node ${b}[0-9a-f]{8}… \\(127\\.0\\.0\\.1:\\d+\\) closed: local`))
  has(new RegExp(`deccom:tcp \\[${b}\\] connection to node ${a}[0-9a-f]{8}… \\(127\\.0\\.0\\.1:\\d+\\) closed: \\S+`))
  has(new RegExp(`deccom:tcp \\[${a}\\] connection to 127\\.0\\.0\\.1:${port} failed before opening \\(\\w+\\): .+`))
  t.true(out.every((l) => l.includes(' deccom:tcp ')), out.join('\n'))
})

test('Protocol: drop() and dropped_* counters are logged on the layer namespace, other counters are not', async (t) => {
  class Dropper extends Protocol {
    readonly name = 'unit-drops'
    run(): void {
      this.count('received')
      this.count('dropped_short')
      this.count('dropped_short', 3)
      this.drop('bad_tag', 'tag %d from %s', 77, '127.0.0.1:9')
    }
  }
  const layer = new Dropper()
  const stack = new Stack([layer])
  await stack.start({ identity: { idHex: 'feedc0de'.repeat(8) } })
  layer.run()
  t.deepEqual(layer.counters, { received: 1, dropped_short: 4, dropped_bad_tag: 1 })
  t.deepEqual(take('unit-drops'), ['[feedc0de] started', '[feedc0de] dropped_short', '[feedc0de] dropped_short (3)', '[feedc0de] dropped_bad_tag: tag 77 from 127.0.0.1:9'])
  await stack.stop()
})
