/**
 * Node over the real native UDP socket, on loopback only (127.0.0.1 and ::1).
 * Imports the BUILT package (dist/), as a user would.
 */
import test, { type ExecutionContext } from 'ava'

import { DeccomError, ErrorCode, Node, type NodeOptions, type Peer } from '../dist/index.js'
import { n } from './helpers/wait.ts'

/** Creates a node that is closed when the test ends, whatever happens. */
async function open(t: ExecutionContext, opts: NodeOptions = {}): Promise<Node> {
  const node = await Node.create({ host: '127.0.0.1', ...opts })
  t.teardown(() => node.close())
  return node
}

/** Resolves with the next 'message' of `node`, or rejects after `ms`. */
function nextMessage(node: Node, ms = 2000): Promise<{ from: Peer; data: Buffer }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      node.off('message', on)
      reject(new Error(`no message within ${ms} ms`))
    }, ms)
    const on = (from: Peer, data: Buffer): void => {
      clearTimeout(timer)
      node.off('message', on)
      resolve({ from, data: Buffer.from(data) })
    }
    node.on('message', on)
  })
}


for (const host of ['127.0.0.1', '::1']) {
  test(`two nodes on ${host} exchange messages both ways`, async (t) => {
    const a = await open(t, { host })
    const b = await open(t, { host })
    t.is(a.address.host, host)
    t.is(a.address.family, host.includes(':') ? 6 : 4)
    t.not(a.address.port, 0)

    const atB = nextMessage(b)
    await a.send(b.address, Buffer.from('hello b'))
    const m1 = await atB
    t.is(m1.data.toString(), 'hello b')
    t.is(m1.from.address.host, host)
    t.is(m1.from.address.port, a.address.port)
    t.is(m1.from.address.key, a.address.key)

    // Reply to the Peer object we got, and also by "host:port" string form.
    const atA = nextMessage(a)
    await b.send(m1.from, Buffer.from('hello a'))
    const m2 = await atA
    t.is(m2.data.toString(), 'hello a')
    t.is(m2.from.address.port, b.address.port)
    t.is(m2.from.address.key, b.address.key)

    const atA2 = nextMessage(a)
    await b.send(a.address.key, new Uint8Array([0, 1, 2, 255]))
    t.deepEqual([...(await atA2).data], [0, 1, 2, 255])

    // An empty application message is a 1-byte datagram (the tag): delivered, empty.
    const atB2 = nextMessage(b)
    await a.send(b.address, Buffer.alloc(0))
    t.is((await atB2).data.length, 0)
  })
}

test('ping resolves with a positive finite RTT', async (t) => {
  const a = await open(t)
  const b = await open(t)
  for (const to of [b.address, b.address.key, { host: '127.0.0.1', port: b.address.port }]) {
    const rtt = await a.ping(to)
    t.true(Number.isFinite(rtt), `rtt ${rtt}`)
    t.true(rtt > 0, `rtt ${rtt}`)
    t.true(rtt < 1000, `rtt ${rtt} ms on loopback`)
  }
  // Concurrent pings each get their own answer.
  const rtts = await Promise.all(Array.from({ length: 20 }, () => a.ping(b.address)))
  t.is(rtts.length, 20)
  for (const r of rtts) t.true(r > 0 && r < 1000, `rtt ${r}`)
  t.is(n(a.stats().udp.pings_sent), 23)
  t.is(n(b.stats().udp.pings_answered), 23)
})

test('ping over ::1 works', async (t) => {
  const a = await open(t, { host: '::1' })
  const b = await open(t, { host: '::1' })
  const rtt = await a.ping(b.address)
  t.true(rtt > 0 && rtt < 1000, `rtt ${rtt}`)
})

test('ping to a dead port rejects with ERR_DECCOM_PING_TIMEOUT after the timeout', async (t) => {
  const a = await open(t)
  const dead = await Node.create({ host: '127.0.0.1' })
  const deadAddr = dead.address
  await dead.close()

  const t0 = performance.now()
  const err = await t.throwsAsync(a.ping(deadAddr, { timeout: 300 }), { instanceOf: DeccomError })
  const elapsed = performance.now() - t0
  t.is(err?.code, 'ERR_DECCOM_PING_TIMEOUT')
  t.is(err?.code, ErrorCode.PING_TIMEOUT)
  t.true(elapsed >= 250 && elapsed <= 2000, `rejected after ${elapsed.toFixed(1)} ms, expected ~300`)
  t.is(n(a.stats().udp.ping_timeouts), 1)
  // The node still works afterwards.
  const b = await open(t)
  t.true((await a.ping(b.address)) > 0)
})

test('ping with an already-aborted signal rejects with ERR_DECCOM_ABORTED', async (t) => {
  const a = await open(t)
  const b = await open(t)
  const err = await t.throwsAsync(a.ping(b.address, { signal: AbortSignal.abort() }), { instanceOf: DeccomError })
  t.is(err?.code, ErrorCode.ABORTED)

  // Aborting while pending rejects too, before the timeout.
  const dead = await Node.create({ host: '127.0.0.1' })
  const deadAddr = dead.address
  await dead.close()
  const ac = new AbortController()
  const p = a.ping(deadAddr, { signal: ac.signal, timeout: 10_000 })
  setTimeout(() => ac.abort(new Error('stop')), 20)
  const t0 = performance.now()
  const err2 = await t.throwsAsync(p, { instanceOf: DeccomError })
  t.is(err2?.code, ErrorCode.ABORTED)
  t.true(performance.now() - t0 < 2000)
})

test('binding a port in use rejects with ERR_DECCOM_ADDRESS_IN_USE', async (t) => {
  const a = await open(t)
  let extra: Node | undefined
  try {
    const err = await t.throwsAsync(
      Node.create({ host: '127.0.0.1', port: a.address.port }).then((n2) => {
        extra = n2
        return n2
      }),
      { instanceOf: DeccomError },
    )
    t.is(err?.code, ErrorCode.ADDRESS_IN_USE)
  } finally {
    await extra?.close()
  }
})

test('sending a datagram above the UDP limit rejects with ERR_DECCOM_DATAGRAM_TOO_LARGE', async (t) => {
  const a = await open(t, { recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  const b = await open(t, { recvBufferSize: 4 << 20 })
  for (const size of [65_507, 65_508, 100_000]) {
    const err = await t.throwsAsync(a.send(b.address, Buffer.alloc(size)), { instanceOf: DeccomError })
    t.is(err?.code, ErrorCode.DATAGRAM_TOO_LARGE, `size ${size}`)
  }
  // The largest allowed payload (65,506 bytes + 1 tag byte = 65,507) goes through on loopback.
  const got = nextMessage(b)
  const big = Buffer.alloc(65_506, 7)
  await a.send(b.address, big)
  const m = await got
  t.is(m.data.length, 65_506)
  t.true(m.data.equals(big))
})

test('a host that is not an IP literal rejects with ERR_DECCOM_INVALID_ADDRESS', async (t) => {
  const err = await t.throwsAsync(Node.create({ host: 'localhost' }), { instanceOf: DeccomError })
  t.is(err?.code, ErrorCode.INVALID_ADDRESS)

  const a = await open(t)
  for (const to of ['localhost:1234', 'example.com:80', '1.2.3:4', '127.0.0.1', '127.0.0.1:70000', { host: 'nope', port: 1 }]) {
    const e = await t.throwsAsync(a.send(to, Buffer.from('x')), { instanceOf: DeccomError })
    t.is(e?.code, ErrorCode.INVALID_ADDRESS, JSON.stringify(to))
  }
  const e2 = await t.throwsAsync(a.ping('localhost:1234'), { instanceOf: DeccomError })
  t.is(e2?.code, ErrorCode.INVALID_ADDRESS)
})

test('a burst of 5,000 small messages arrives (>= 99%) and the counters agree', async (t) => {
  const COUNT = 5000
  const a = await open(t, { recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  const b = await open(t, { recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  const seen = new Set<string>()
  let events = 0
  let strays = 0
  b.on('message', (from, data) => {
    events++
    if (from.address.key !== a.address.key) strays++
    seen.add(data.toString())
  })

  const sends: Promise<void>[] = []
  for (let i = 0; i < COUNT; i++) sends.push(a.send(b.address, Buffer.from(`msg-${i}`)))
  await Promise.all(sends)

  // Wait (bounded by time and by count) for the stragglers.
  const deadline = performance.now() + 5000
  while (seen.size < COUNT && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20))

  const sa = a.stats()
  const sb = b.stats()
  const report = `received ${seen.size}/${COUNT} (events ${events}); a.udp=${JSON.stringify(sa.udp)} b.udp=${JSON.stringify(sb.udp)}`
  t.true(seen.size >= COUNT * 0.99, report)
  t.is(strays, 0)
  t.is(events, seen.size, `no duplicates: ${report}`)
  for (const m of seen) t.regex(m, /^msg-\d+$/)

  t.is(n(sa.udp.sent) + n(sa.udp.dropped_send), COUNT, report)
  t.true(n(sa.udp.txDatagrams) <= COUNT, report)
  t.true(n(sb.udp.rxDatagrams) >= events, report)
  t.is(n(sb.udp.received), events, report)
  t.is(n(sb.app.received), events, report)
  t.true(n(sb.udp.rxBytes) >= events * 'msg-0'.length + events, report)
  t.true(n(sb.udp.rxBatches) >= 1 && n(sb.udp.rxBatches) <= n(sb.udp.rxDatagrams), report)
})

test('send and ping after close() reject with ERR_DECCOM_CLOSED; close() twice is fine', async (t) => {
  const a = await Node.create({ host: '127.0.0.1' })
  const b = await open(t)
  try {
    await a.send(b.address, Buffer.from('before'))
  } finally {
    await a.close()
  }
  const e1 = await t.throwsAsync(a.send(b.address, Buffer.from('after')), { instanceOf: DeccomError })
  t.is(e1?.code, ErrorCode.CLOSED)
  const e2 = await t.throwsAsync(a.ping(b.address), { instanceOf: DeccomError })
  t.is(e2?.code, ErrorCode.CLOSED)
  await t.notThrowsAsync(a.close())
  const p1 = a.close()
  const p2 = a.close()
  t.is(p1, p2)
  await t.notThrowsAsync(p1)
})

test('close() while a send is staged, then close() again concurrently', async (t) => {
  const a = await Node.create({ host: '127.0.0.1' })
  const b = await open(t)
  const s = a.send(b.address, Buffer.from('x'))
  const c1 = a.close()
  const c2 = a.close()
  await t.notThrowsAsync(Promise.all([c1, c2]))
  await t.notThrowsAsync(s)
})

test('stats() has per-layer objects app and udp', async (t) => {
  const a = await open(t)
  const b = await open(t)
  const got = nextMessage(b)
  await a.send(b.address, Buffer.from('count me'))
  await got
  const sa = a.stats()
  const sb = b.stats()
  for (const s of [sa, sb]) {
    t.is(typeof s.app, 'object')
    t.is(typeof s.udp, 'object')
    for (const layer of [s.app, s.udp]) for (const [k, v] of Object.entries(layer)) t.is(typeof v, 'number', k)
    t.is(typeof s.udp.rxDatagrams, 'number')
    t.is(typeof s.udp.txDatagrams, 'number')
  }
  t.is(n(sa.udp.sent), 1)
  t.is(n(sa.udp.txDatagrams), 1)
  t.is(n(sb.udp.rxDatagrams), 1)
  t.is(n(sb.udp.received), 1)
  t.is(n(sb.app.received), 1)
})
