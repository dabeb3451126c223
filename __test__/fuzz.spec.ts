/**
 * A node under a flood of random and malformed datagrams from a raw `node:dgram` socket.
 *
 * Every generated datagram is classified by an independent model of the wire format documented in
 * ts/protocols/udp.ts (tag byte; tag 1 = transport: exactly 6 bytes, type 1 PING / 2 PONG), so each
 * drop counter can be checked exactly against what was sent.
 */
import test, { type ExecutionContext } from 'ava'
import { createHash } from 'node:crypto'
import dgram from 'node:dgram'
import { readFileSync } from 'node:fs'

import { Node, type NodeOptions } from '../dist/index.js'
import { n, sleep } from './helpers/wait.ts'

const TOTAL = 10_000
const CHUNK = 200
const SEED = Number(process.env.DECCOM_FUZZ_SEED ?? 0x5eed_f00d) >>> 0

/** mulberry32: small seeded PRNG so a failure can be replayed (DECCOM_FUZZ_SEED). */
function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let x = s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

type Kind = 'empty' | 'malformed' | 'ping' | 'unexpected_pong' | 'message' | 'unknown_tag'

/** What the node must do with `d`, per the documented wire format. */
function classify(d: Buffer): Kind {
  if (d.length === 0) return 'empty'
  const tag = d[0]
  if (tag === 0) return 'message'
  if (tag !== 1) return 'unknown_tag'
  if (d.length !== 6) return 'malformed'
  if (d[1] === 1) return 'ping'
  if (d[1] === 2) return 'unexpected_pong' // the node has no ping outstanding
  return 'malformed'
}

function generate(rand: () => number): Buffer[] {
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1)) // inclusive
  const bytes = (len: number): Buffer => {
    const b = Buffer.allocUnsafe(len)
    for (let i = 0; i < len; i++) b[i] = int(0, 255)
    return b
  }
  const out: Buffer[] = []
  // Crafted cases.
  for (let i = 0; i < 300; i++) out.push(Buffer.alloc(0))
  for (let i = 0; i < 800; i++) {
    // Transport tag with every wrong length (1..5 and 7..1500).
    let len = int(1, 1500)
    if (len === 6) len = i % 5 + 1
    const b = bytes(len)
    b[0] = 1
    out.push(b)
  }
  for (let i = 0; i < 500; i++) {
    // Transport tag, right length, unknown type (0 or 3..255); the first is the PING-shaped type 3.
    const b = bytes(6)
    b[0] = 1
    b[1] = i === 0 ? 3 : i % 10 === 0 ? 0 : int(3, 255)
    out.push(b)
  }
  for (let i = 0; i < 300; i++) {
    // A PONG with an id the node never sent.
    const b = Buffer.alloc(6)
    b[0] = 1
    b[1] = 2
    b.writeUInt32BE(int(0, 0xffff_ffff), 2)
    out.push(b)
  }
  for (let i = 0; i < 1000; i++) {
    // Tags 2..255 (no layer above the transport declares them) with random bodies.
    const b = bytes(int(1, 1500))
    b[0] = i < 254 ? i + 2 : int(2, 255)
    out.push(b)
  }
  for (let i = 0; i < 1000; i++) {
    // Application data (including the 1-byte "empty message").
    const b = bytes(i === 0 ? 1 : int(1, 1500))
    b[0] = 0
    out.push(b)
  }
  // Fully random datagrams for the rest, lengths 0..1500.
  while (out.length < TOTAL) out.push(bytes(int(0, 1500)))
  // Shuffle (Fisher-Yates).
  for (let i = out.length - 1; i > 0; i--) {
    const j = int(0, i)
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

function rcvbufErrors(): string {
  try {
    const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'))
    const [head, vals] = lines.map((l) => l.trim().split(/\s+/))
    const i = head.indexOf('RcvbufErrors')
    return i > 0 ? vals[i] : '?'
  } catch {
    return 'n/a'
  }
}

async function open(t: ExecutionContext, opts: NodeOptions = {}): Promise<Node> {
  const node = await Node.create({ host: '127.0.0.1', recvBufferSize: 4 << 20, ...opts })
  t.teardown(() => node.close())
  return node
}

async function rawSocket(t: ExecutionContext): Promise<dgram.Socket> {
  const sock = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 << 20, recvBufferSize: 1 << 20 })
  sock.on('error', () => {})
  sock.on('message', () => {}) // pongs to the rare random valid pings
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => sock.close(() => resolve())))
  return sock
}

const hash = (b: Uint8Array): string => createHash('sha1').update(b).digest('hex')
const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

test('10,000 random and malformed datagrams: no crash, every drop counted by reason, node still works', async (t) => {
  t.timeout(60_000)
  const node = await open(t)
  const raw = await rawSocket(t)
  const port = node.address.port

  const datagrams = generate(prng(SEED))
  const expected: Record<Kind, number> = { empty: 0, malformed: 0, ping: 0, unexpected_pong: 0, message: 0, unknown_tag: 0 }
  const expectedPayloads = new Map<string, number>()
  for (const d of datagrams) {
    const k = classify(d)
    expected[k]++
    if (k === 'message') {
      const h = hash(d.subarray(1))
      expectedPayloads.set(h, (expectedPayloads.get(h) ?? 0) + 1)
    }
  }
  t.is(datagrams.length, TOTAL)
  t.true(expected.empty >= 300 && expected.malformed >= 1300 && expected.unexpected_pong >= 300 && expected.unknown_tag >= 1000)

  let events = 0
  const gotPayloads = new Map<string, number>()
  node.on('message', (from, data) => {
    events++
    if (from.address.port === raw.address().port) {
      const h = hash(data)
      gotPayloads.set(h, (gotPayloads.get(h) ?? 0) + 1)
    }
  })

  const expectedEmpties = expected.empty // see the KNOWN BUG note below: empties may not show in rxDatagrams
  const rcvbufBefore = rcvbufErrors()
  let sendErrors = 0
  let sendsDone = 0
  for (let i = 0; i < TOTAL; i += CHUNK) {
    for (const d of datagrams.slice(i, i + CHUNK)) {
      raw.send(d, port, '127.0.0.1', (err) => {
        sendsDone++
        if (err) sendErrors++
      })
    }
    await tick()
  }
  // Wait, bounded by time, until every send completed and the node has seen everything (or stopped
  // making progress for a second).
  const deadline = performance.now() + 15_000
  let last = -1
  let lastChange = performance.now()
  for (;;) {
    const rx = n(node.stats().udp.rxDatagrams)
    if (sendsDone === TOTAL && rx >= TOTAL - expectedEmpties) break
    if (rx !== last) {
      last = rx
      lastChange = performance.now()
    } else if (sendsDone === TOTAL && performance.now() - lastChange > 1000) break
    if (performance.now() > deadline) break
    await sleep(20)
  }
  await sleep(50) // the last batch's dispatch

  const s = node.stats()
  const udp = s.udp
  const app = s.app
  const rcvbufAfter = rcvbufErrors()
  const report =
    `seed ${SEED}; expected ${JSON.stringify(expected)}; sends done ${sendsDone} (errors ${sendErrors}); ` +
    `udp=${JSON.stringify(udp)} app=${JSON.stringify(app)}; /proc/net/snmp Udp RcvbufErrors ${rcvbufBefore} -> ${rcvbufAfter}`
  t.log(`expected per kind: ${JSON.stringify(expected)}`)

  t.is(sendErrors, 0, report)
  t.is(n(udp.rxDroppedQueueFull), 0, report)
  t.is(n(udp.handler_errors), 0, report)
  t.is(n(udp.dropped_empty), expected.empty, `dropped_empty — ${report}`)
  t.is(n(udp.rxDatagrams), TOTAL, `every datagram sent reached the node (if not: kernel drops, see RcvbufErrors) — ${report}`)
  t.is(n(udp.dropped_malformed), expected.malformed, `dropped_malformed — ${report}`)
  t.is(n(udp.dropped_unexpected_pong), expected.unexpected_pong, `dropped_unexpected_pong — ${report}`)
  t.is(n(udp.pings_answered), expected.ping, `pings_answered — ${report}`)
  t.is(n(udp.received), expected.message + expected.unknown_tag, `udp.received — ${report}`)
  t.is(n(app.dropped_unknown_tag), expected.unknown_tag, `app.dropped_unknown_tag — ${report}`)
  t.is(n(app.received), expected.message, `app.received — ${report}`)
  t.is(events, expected.message, `'message' events — ${report}`)
  t.deepEqual(
    [...gotPayloads.entries()].sort(),
    [...expectedPayloads.entries()].sort(),
    'exactly the tag-0 payloads were delivered, unchanged',
  )
  // The counters add up to everything received.
  t.is(
    n(udp.dropped_empty) + n(udp.dropped_malformed) + n(udp.dropped_unexpected_pong) + n(udp.pings_answered) + n(udp.received),
    n(udp.rxDatagrams),
    `drops + answered + passed up == rxDatagrams — ${report}`,
  )
  t.is(n(app.received) + n(app.dropped_unknown_tag), n(udp.received), report)

  // The node still works: another deccom node pings it and sends it a message.
  const other = await open(t)
  const rtt = await other.ping(node.address, { timeout: 2000 })
  t.true(rtt > 0 && rtt < 1000, `rtt ${rtt}`)
  const got = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message after the flood')), 2000)
    node.on('message', (from, data) => {
      if (from.address.key === other.address.key) {
        clearTimeout(timer)
        resolve(data.toString())
      }
    })
  })
  await other.send(node.address, Buffer.from('still alive?'))
  t.is(await got, 'still alive?')
  // And it can ping back.
  t.true((await node.ping(other.address)) > 0)
})

test('a PONG with the right id from the wrong address is dropped; from the right one it settles the ping', async (t) => {
  const node = await open(t)
  const pinged = await rawSocket(t)
  const impostor = await rawSocket(t)
  const pingReceived = new Promise<Buffer>((resolve) => pinged.once('message', (m) => resolve(Buffer.from(m))))
  const p = node.ping({ host: '127.0.0.1', port: pinged.address().port }, { timeout: 3000 })
  const ping = await pingReceived
  t.is(ping.length, 6)
  t.is(ping[0], 1)
  t.is(ping[1], 1)
  const pong = Buffer.from(ping)
  pong[1] = 2

  const send = (s: dgram.Socket, d: Buffer): Promise<void> =>
    new Promise((resolve, reject) => s.send(d, node.address.port, '127.0.0.1', (e) => (e ? reject(e) : resolve())))
  await send(impostor, pong)
  // Wait (bounded) for the impostor's pong to be counted before sending the real one.
  for (let i = 0; i < 100 && n(node.stats().udp.dropped_unexpected_pong) < 1; i++) await sleep(10)
  t.is(n(node.stats().udp.dropped_unexpected_pong), 1)
  await send(pinged, pong)
  const rtt = await p
  t.true(rtt > 0 && rtt < 3000)
  // A second copy of the same pong is now unexpected.
  await send(pinged, pong)
  for (let i = 0; i < 100 && n(node.stats().udp.dropped_unexpected_pong) < 2; i++) await sleep(10)
  t.is(n(node.stats().udp.dropped_unexpected_pong), 2)
})

// 0-byte datagrams are legal UDP: each must be counted as received and as dropped_empty.
test('0-byte datagrams are counted in rxDatagrams and udp.dropped_empty', async (t) => {
  const node = await open(t)
  const raw = await rawSocket(t)
  const EMPTIES = 20
  const send = (d: Buffer): Promise<void> =>
    new Promise((resolve, reject) => raw.send(d, node.address.port, '127.0.0.1', (e) => (e ? reject(e) : resolve())))
  for (let i = 0; i < EMPTIES; i++) await send(Buffer.alloc(0))
  // A normal message after them: once it has arrived, the empties (sent before it) have too.
  const got = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('marker message not received')), 2000)
    node.once('message', () => {
      clearTimeout(timer)
      resolve()
    })
  })
  await send(Buffer.from([0, 0x42]))
  await got
  const udp = node.stats().udp
  t.is(n(udp.dropped_empty), EMPTIES, JSON.stringify(udp))
  t.is(n(udp.rxDatagrams), EMPTIES + 1, JSON.stringify(udp))
})
