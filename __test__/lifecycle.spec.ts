/**
 * Resource lifecycle: after close() of every node nothing keeps the process alive.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { DeccomError, ErrorCode, Node } from '../dist/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const distUrl = pathToFileURL(join(here, '..', 'dist', 'index.mjs')).href

// The child: 3 nodes (two IPv4, one IPv6), messages and pings, a pending long ping to a dead port,
// close everything, check the pending ping rejected with ERR_DECCOM_CLOSED, print 'done', and
// return WITHOUT process.exit: the process must then exit by itself.
const CHILD = `
import { Node } from ${JSON.stringify(distUrl)}
const fail = (why) => { console.error('CHILD FAIL: ' + why); process.exitCode = 3 }
const a = await Node.create({ host: '127.0.0.1' })
const b = await Node.create({ host: '127.0.0.1' })
const c = await Node.create({ host: '::1' })
const got = (node, n) => new Promise((resolve, reject) => {
  const seen = []
  const timer = setTimeout(() => reject(new Error('timeout waiting for messages: ' + seen.length + '/' + n)), 3000)
  node.on('message', (from, data) => {
    seen.push(from.address.key + ' ' + data.toString())
    if (seen.length === n) { clearTimeout(timer); resolve(seen) }
  })
})
const atB = got(b, 2), atA = got(a, 1), atC = got(c, 1)
await a.send(b.address, Buffer.from('a->b'))
await a.send(b.address, Buffer.from('a->b 2'))
await b.send(a.address, Buffer.from('b->a'))
const dead = await Node.create({ host: '::1' })
const deadAddr = dead.address
await dead.close()
await c.send(deadAddr, Buffer.from('into the void'))
const rtts = [await a.ping(b.address), await b.ping(a.address), await a.ping(b.address, { timeout: 1000 })]
const other = await Node.create({ host: '::1' })
await other.send(c.address, Buffer.from('other->c'))
rtts.push(await c.ping(other.address))
await other.close()
const received = [...await atB, ...await atA, ...await atC]
if (received.length !== 4) fail('received ' + received.length)
if (!rtts.every((r) => r > 0 && Number.isFinite(r))) fail('bad rtts ' + rtts)
// A ping that will never be answered, with a long timeout: close() must settle it.
const pending = c.ping(deadAddr, { timeout: 60_000 }).then(
  () => 'resolved?!',
  (e) => e.code,
)
const signalPending = a.ping('127.0.0.1:' + deadAddr.port, { timeout: 60_000, signal: new AbortController().signal }).then(
  () => 'resolved?!',
  (e) => e.code,
)
await Promise.all([a.close(), b.close(), c.close(), c.close()])
const code = await pending
if (code !== 'ERR_DECCOM_CLOSED') fail('pending ping settled with ' + code)
const code2 = await signalPending
if (code2 !== 'ERR_DECCOM_CLOSED') fail('pending ping with a signal settled with ' + code2)
console.log('received ' + JSON.stringify(received.map((r) => r.split(' ').slice(1).join(' ')).sort()))
console.log('done')
`

test.serial('after close() of every node the process has no open handles: a child exits by itself', async (t) => {
  t.timeout(30_000)
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  })
  const started = performance.now()
  let doneAt = 0
  let timedOut = ''
  let exitAt = 0
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d
    if (doneAt === 0 && stdout.includes('done\n')) doneAt = performance.now()
  })
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    // 'exit' gives the time the process ended; 'close' waits for its output to be fully read.
    child.on('exit', () => (exitAt = performance.now())).on('close', (code, signal) => resolve({ code, signal })),
  )
  // Deadline 1: 'done' within 15 s of spawning. Deadline 2: exit within 5 s of 'done'.
  const killer = setInterval(() => {
    const now = performance.now()
    if (doneAt === 0 && now - started > 15_000) timedOut = 'never printed done within 15 s'
    if (doneAt !== 0 && now - doneAt > 5000) timedOut = 'still running 5 s after printing done: something keeps the event loop alive'
    if (timedOut && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }, 25)
  let result: { code: number | null; signal: NodeJS.Signals | null }
  try {
    result = await exited
  } finally {
    clearInterval(killer)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  if (doneAt === 0 && stdout.includes('done\n')) doneAt = performance.now()
  const report = `exit ${JSON.stringify(result)}; stdout: ${stdout.trim()}; stderr: ${stderr.trim()}`
  t.is(timedOut, '', report)
  t.true(stdout.includes('done\n'), report)
  t.is(result.signal, null, report)
  t.is(result.code, 0, report)
  t.is(stderr.trim(), '', report)
  t.regex(stdout, /received \["a->b","a->b 2","b->a","other->c"\]/, report)
  t.log(`child ran ${(exitAt - started).toFixed(0)} ms; exited ${Math.max(0, exitAt - doneAt).toFixed(0)} ms after 'done'`)
})

/** Counts of process.getActiveResourcesInfo() entries, by type. */
function resources(): Map<string, number> {
  const m = new Map<string, number>()
  for (const r of process.getActiveResourcesInfo()) m.set(r, (m.get(r) ?? 0) + 1)
  return m
}
const fmt = (m: Map<string, number>): string => JSON.stringify(Object.fromEntries(m))

test.serial('in-process: after closing nodes there are no more timers or UDP resources than before', async (t) => {
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
  await sleep(10) // let ava settle its own timers
  const before = resources()

  const nodes: Node[] = []
  try {
    for (const host of ['127.0.0.1', '127.0.0.1', '::1', '::1']) nodes.push(await Node.create({ host }))
    const [a, b, c, d] = nodes
    const got = new Promise<void>((resolve) => b.once('message', () => resolve()))
    await a.send(b.address, Buffer.from('x'))
    await got
    t.true((await a.ping(b.address)) > 0)
    t.true((await c.ping(d.address)) > 0)
    // Pending pings with long timers (to a dead port) must be cleared by close().
    const deadNode = await Node.create({ host: '127.0.0.1' })
    const dead = deadNode.address
    await deadNode.close()
    const pending = [a.ping(dead, { timeout: 60_000 }), b.ping(dead, { timeout: 60_000 }), a.ping(dead, { timeout: 45_000 })]
    const during = resources()
    t.true((during.get('Timeout') ?? 0) >= (before.get('Timeout') ?? 0) + 3, `during: ${fmt(during)}; before: ${fmt(before)}`)
    await Promise.all(nodes.map((n) => n.close()))
    for (const p of pending) {
      const e = await t.throwsAsync(p, { instanceOf: DeccomError })
      t.is(e?.code, ErrorCode.CLOSED)
    }
  } finally {
    await Promise.all(nodes.map((n) => n.close()))
  }

  // Bounded wait for anything asynchronous in close to finish.
  let after = resources()
  for (let i = 0; i < 50 && (after.get('Timeout') ?? 0) > (before.get('Timeout') ?? 0); i++) {
    await sleep(20)
    after = resources()
  }
  const report = `before: ${fmt(before)}; after: ${fmt(after)}`
  t.true((after.get('Timeout') ?? 0) <= (before.get('Timeout') ?? 0), report)
  for (const [type, count] of after) {
    if (/udp|timer|timeout|immediate/i.test(type)) t.true(count <= (before.get(type) ?? 0), `${type}: ${report}`)
  }
  t.log(report)
})
