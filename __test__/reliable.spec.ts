/**
 * ReliableUdp: exactly-once, byte-exact delivery of messages of any size over lossy datagrams,
 * on the native fast path (real loopback sockets) and on the JavaScript-driven path (forced, and
 * over the SimulatedNetwork in virtual time). Imports the BUILT package (dist/).
 */
import test from 'ava'
import crypto from 'node:crypto'

import { Delay, ErrorCode, FaultyTransport, Identity, Node, ReliableUdp, SimulatedNetwork } from '../dist/index.js'

const digest = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex')

/** A deterministic generator, so a failing case can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 15), z | 1)
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296
  }
}

/** How many times each content occurs (by digest). */
function counts(messages: Buffer[]): Map<string, number> {
  const m = new Map<string, number>()
  for (const b of messages) m.set(digest(b), (m.get(digest(b)) ?? 0) + 1)
  return m
}

/** Sizes log-uniform in 1 B .. max, from a seed. */
function sizes(count: number, max: number, seed: number): number[] {
  const r = rng(seed)
  return Array.from({ length: count }, () => Math.max(1, Math.floor(2 ** (r() * Math.log2(max)))))
}

async function lossyPair(t: any, opts: { forceJs?: boolean; drop: number; duplicate: number; reorder: number; peerTimeout?: number }) {
  const mk = (name: string, seed: number) =>
    Node.create({
      identity: Identity.fromString(name),
      host: '127.0.0.1',
      recvBufferSize: 4 << 20,
      stack: [
        new ReliableUdp({ forceJs: opts.forceJs, peerTimeout: opts.peerTimeout ?? 20_000 }),
        new FaultyTransport({ seed, drop: opts.drop, duplicate: opts.duplicate, reorder: opts.reorder, direction: 'receive' }),
      ],
    })
  const a = await mk('a', 11)
  const b = await mk('b', 12)
  t.teardown(() => Promise.all([a.close(), b.close()]))
  return { a, b }
}

/** Sends every message a→b at once; resolves with what b received (by digest → count). */
async function exchange(a: Node, b: Node, messages: Buffer[], timeoutMs: number) {
  const got = new Map<string, number>()
  let count = 0
  const all = new Promise<void>((resolve) => {
    b.on('message', (_from, data) => {
      const h = digest(data)
      got.set(h, (got.get(h) ?? 0) + 1)
      if (++count === messages.length) resolve()
    })
  })
  const timer = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`only ${count}/${messages.length} delivered in ${timeoutMs} ms`)), timeoutMs).unref())
  await Promise.race([Promise.all([Promise.all(messages.map((m) => a.send(b.address, m))), all]), timer])
  // Let late duplicates show up if there were any.
  await new Promise((r) => setTimeout(r, 100))
  return { got, count }
}

test('200 messages of 1 B – 4 MiB under 20% loss, 5% duplication and reordering arrive once, byte-exact (native path)', async (t) => {
  const { a, b } = await lossyPair(t, { drop: 0.2, duplicate: 0.05, reorder: 0.05 })
  t.is((a.stack.find(ReliableUdp) as ReliableUdp).mode, 'native')
  t.true((a.stack.find(FaultyTransport) as FaultyTransport).native, 'the fault layer runs natively under ReliableUdp')
  const messages = sizes(200, 4 * 1024 * 1024, 1).map((n) => crypto.randomBytes(n))
  const { got, count } = await exchange(a, b, messages, 100_000)
  t.is(count, 200)
  // Short random messages can repeat (two 1-byte messages with the same byte): compare multisets.
  const expected = counts(messages)
  for (const m of messages) t.is(got.get(digest(m)), expected.get(digest(m)), `a message of ${m.length} bytes arrived exactly once`)
  const s = a.stats().udp
  t.true(s.faults_rx_dropped > 0 && b.stats().udp.faults_rx_dropped > 0, 'faults were injected on both sides')
  t.true(s.rudp_retransmits > 0, 'losses were repaired by retransmission')
  t.true(b.stats().udp.rudp_duplicates > 0, 'duplicates reached the receiver and were suppressed')
})

test('the JavaScript-driven endpoint gives the same guarantees (forceJs)', async (t) => {
  const { a, b } = await lossyPair(t, { forceJs: true, drop: 0.2, duplicate: 0.05, reorder: 0.05 })
  t.is((a.stack.find(ReliableUdp) as ReliableUdp).mode, 'js')
  t.false((a.stack.find(FaultyTransport) as FaultyTransport).native)
  const messages = sizes(60, 1024 * 1024, 2).map((n) => crypto.randomBytes(n))
  const { got, count } = await exchange(a, b, messages, 100_000)
  t.is(count, 60)
  const expected = counts(messages)
  for (const m of messages) t.is(got.get(digest(m)), expected.get(digest(m)))
  t.true(a.stats()['reliable-udp'].rudp_retransmits > 0)
})

test('a message of more than 2^16 segments is delivered (no 16-bit cliff)', async (t) => {
  const mk = (name: string) => Node.create({ identity: Identity.fromString(name), recvBufferSize: 4 << 20, stack: [new ReliableUdp({ segmentSize: 64, loopbackSegmentSize: 64 })] })
  const a = await mk('big-a')
  const b = await mk('big-b')
  t.teardown(() => Promise.all([a.close(), b.close()]))
  const m = crypto.randomBytes(5_000_000) // 78,125 segments of 64 bytes
  const { got } = await exchange(a, b, [m], 60_000)
  t.is(got.get(digest(m)), 1)
  t.true(b.stats().udp.rudp_datagrams_received > 65_536)
})

test('to a loopback address, segments are loopbackSegmentSize (16,000 by default); segmentSize elsewhere', async (t) => {
  const run = async (opts: { loopbackSegmentSize?: number }, name: string) => {
    const mk = (n: string) => Node.create({ identity: Identity.fromString(n), recvBufferSize: 4 << 20, stack: [new ReliableUdp(opts)] })
    const a = await mk(`${name}-a`)
    const b = await mk(`${name}-b`)
    try {
      const m = crypto.randomBytes(1_000_000)
      const { got } = await exchange(a, b, [m], 30_000)
      t.is(got.get(digest(m)), 1)
      return b.stats().udp.rudp_datagrams_received
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  }
  // 1,000,001 bytes (the tag byte included): 63 segments of 16,000, or 834 of 1,200 (ACKs go the other way).
  const large = await run({}, 'seg-default')
  t.true(large >= 63 && large < 100, `${large} datagrams`)
  const small = await run({ loopbackSegmentSize: 1200 }, 'seg-1200')
  t.true(small >= 834 && small < 1000, `${small} datagrams`)
})

test('concurrent sends to 3 peers all arrive, each exactly once', async (t) => {
  const mk = (name: string) => Node.create({ identity: Identity.fromString(name), recvBufferSize: 4 << 20, stack: [new ReliableUdp()] })
  const a = await mk('fan-a')
  const peers = await Promise.all(['fan-b', 'fan-c', 'fan-d'].map(mk))
  t.teardown(() => Promise.all([a, ...peers].map((n) => n.close())))
  const per = new Map(peers.map((p) => [p, sizes(30, 512 * 1024, peers.indexOf(p) + 7).map((n) => crypto.randomBytes(n))]))
  const results = await Promise.all(peers.map((p) => exchange(a, p, per.get(p)!, 60_000)))
  results.forEach(({ got, count }, i) => {
    t.is(count, 30)
    const expected = counts(per.get(peers[i])!)
    for (const m of per.get(peers[i])!) t.is(got.get(digest(m)), expected.get(digest(m)))
  })
})

test('a peer that vanishes makes send reject with ERR_DECCOM_PEER_UNREACHABLE in bounded time', async (t) => {
  const mk = (name: string) => Node.create({ identity: Identity.fromString(name), stack: [new ReliableUdp({ peerTimeout: 1000 })] })
  const a = await mk('van-a')
  const b = await mk('van-b')
  t.teardown(() => a.close())
  await a.send(b.address, Buffer.from('hello'))
  await b.close()
  const t0 = performance.now()
  const err = await t.throwsAsync(a.send(b.address, crypto.randomBytes(100_000)))
  const ms = performance.now() - t0
  t.is((err as any).code, ErrorCode.PEER_UNREACHABLE)
  t.true(ms >= 900 && ms < 4000, `rejected after ${ms.toFixed(0)} ms (peerTimeout 1000)`)
})

test('typed errors: too large, and pending sends rejected on close', async (t) => {
  const a = await Node.create({ identity: Identity.fromString('err-a'), stack: [new ReliableUdp({ maxMessageSize: 1000 })] })
  const b = await Node.create({ identity: Identity.fromString('err-b'), stack: [new ReliableUdp()] })
  t.teardown(() => b.close())
  const e1 = await t.throwsAsync(a.send(b.address, Buffer.alloc(1001)))
  t.is((e1 as any).code, ErrorCode.MESSAGE_TOO_LARGE)
  await b.close()
  const pending = a.send(b.address, Buffer.alloc(500))
  await a.close()
  const e2 = await t.throwsAsync(pending)
  t.is((e2 as any).code, ErrorCode.CLOSED)
})

test('simulated network: 100 nodes, all-to-all messages under 10% loss, all delivered; same seed → same trace', async (t) => {
  const run = async (seed: number) => {
    const sim = new SimulatedNetwork({ seed, defaultLink: { latency: 5, loss: 0.1 } })
    const N = 100
    // 10% loss on every link, data and acks alike: give each pair a minute of virtual time before
    // declaring a peer unreachable (5 consecutive lost probes take ~10 s with backoff).
    const nodes = await sim.createNodes(N, { identity: (i) => Identity.fromString(`n${i}`), stack: (i) => [new ReliableUdp({ seed: i + 1, peerTimeout: 60_000 })] })
    let delivered = 0
    const seen = new Set<string>()
    let duplicates = 0
    for (const node of nodes) {
      node.on('message', (from, data) => {
        const key = `${from.address.key}>${node.address.key}:${data.toString()}`
        if (seen.has(key)) duplicates++
        seen.add(key)
        delivered++
      })
    }
    const sends: Promise<void>[] = []
    for (const a of nodes) for (const b of nodes) if (a !== b) sends.push(a.send(b.address, Buffer.from(`${a.address.key}->${b.address.key}`)))
    let acked = 0
    for (const s of sends) s.then(() => acked++, () => {})
    await sim.runUntil(() => delivered >= N * (N - 1) && acked === sends.length, { timeout: 120_000 })
    const hash = sim.trace.hash
    await sim.close()
    return { delivered, duplicates, acked, total: sends.length, hash }
  }
  const r1 = await run(5)
  t.is(r1.delivered, 100 * 99)
  t.is(r1.duplicates, 0)
  t.is(r1.acked, r1.total)
  const r2 = await run(5)
  t.is(r2.hash, r1.hash, 'same seed, same trace')
})

test.serial('Delay under ReliableUdp runs natively: latency and bandwidth apply, the fast path stays', async (t) => {
  const latencies: string[] = []
  const mk = (name: string) =>
    Node.create({
      identity: Identity.fromString(name),
      stack: [
        new ReliableUdp(),
        new Delay({
          latency: (from, to) => {
            latencies.push(`${from.port}->${to.port}`)
            return 25
          },
          bandwidth: () => 10_000, // bytes per ms = 10 MB/s
          on: 'send',
        }),
      ],
    })
  const a = await mk('delay-a')
  const b = await mk('delay-b')
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.is((a.stack.find(ReliableUdp) as ReliableUdp).mode, 'native')
  t.true((a.stack.find(Delay) as Delay).native)
  const got = new Promise<Buffer>((resolve) => b.once('message', (_f, d) => resolve(d)))
  const t0 = performance.now()
  await a.send(b.address, Buffer.from('hi'))
  const rtt = performance.now() - t0
  t.is((await got).toString(), 'hi')
  t.true(rtt >= 49, `acknowledged after ${rtt.toFixed(1)} ms: data 25 ms + ack 25 ms`)
  t.true(rtt < 5000, `acknowledged after ${rtt.toFixed(1)} ms (a sanity bound; the property is the lower one)`)
  // 1 MB at 10 MB/s takes >= 100 ms of serialization on a's link.
  const big = crypto.randomBytes(1_000_000)
  const t1 = performance.now()
  await a.send(b.address, big)
  const ms = performance.now() - t1
  t.true(ms >= 100, `1 MB over a 10 MB/s link took ${ms.toFixed(0)} ms`)
  t.true(ms < 10_000)
  // The user function is asked once per peer and direction, not per datagram.
  t.deepEqual([...new Set(latencies)].length, latencies.length)
  // 1,000,001 bytes in 16,000-byte segments (loopback): 63 datagrams through the native delay line.
  t.true(a.stats().udp.delay_tx_released >= 63)
})

test('ReliableUdp over Noise runs natively: every segment sealed in the socket thread, senders authenticated', async (t) => {
  const { Noise } = await import('../dist/index.js')
  const mk = () => Node.create({ identity: Identity.generate(), recvBufferSize: 4 << 20, stack: [new ReliableUdp(), new Noise()] })
  const a = await mk()
  const b = await mk()
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.is((a.stack.find(ReliableUdp) as ReliableUdp).mode, 'native')
  t.true((a.stack.find(Noise) as any).native)
  const got: Array<[any, Buffer]> = []
  b.on('message', (from, data) => got.push([from, data]))
  const big = crypto.randomBytes(16 * 1024 * 1024)
  await a.send(b.address, Buffer.from([7]))
  await a.send(b.address, big)
  await new Promise((r) => setTimeout(r, 50))
  t.is(got.length, 2)
  t.deepEqual(got[0][1], Buffer.from([7]), '1 byte, byte-exact')
  t.true(Buffer.compare(got[1][1], big) === 0, '16 MiB, byte-exact')
  t.true(got[0][0].id?.equals(a.id), 'the sender is named by its authenticated node id')
  const s = b.stats().udp
  t.true(s.noise_handshakes_completed >= 1)
  // 16 MiB in 16,000-byte segments (loopback): 1,049 segments, each a Noise transport message.
  t.true(s.noise_messages_received >= 1_049, 'the segments travelled inside Noise transport messages')
  t.is(s.noise_dropped_unprotected, 0)
  t.true(await (a.stack.find(Noise) as any).approveConnection(b.address), 'approval = a completed handshake')
  t.true((a.stack.find(Noise) as any).remoteId(b.address)?.equals(b.id))
})

test('under a native Noise stage, unencrypted reliable-UDP datagrams are dropped and counted', async (t) => {
  const { Noise } = await import('../dist/index.js')
  const secure = await Node.create({ identity: Identity.generate(), stack: [new ReliableUdp({ peerTimeout: 1500 }), new Noise()] })
  const plain = await Node.create({ identity: Identity.fromString('plain'), stack: [new ReliableUdp({ peerTimeout: 1500 })] })
  t.teardown(() => Promise.all([secure.close(), plain.close()]))
  let delivered = 0
  secure.on('message', () => delivered++)
  const err = await t.throwsAsync(plain.send(secure.address, Buffer.from('let me in')))
  t.is((err as any).code, ErrorCode.PEER_UNREACHABLE)
  t.is(delivered, 0)
  t.true(secure.stats().udp.noise_dropped_unprotected > 0)
})

test('JavaScript-driven ReliableUdp over JavaScript-driven Noise: acks go back to the authenticated Peer, senders are named', async (t) => {
  const { Noise } = await import('../dist/index.js')
  const mk = () => Node.create({ identity: Identity.generate(), stack: [new ReliableUdp({ forceJs: true }), new Noise({ native: false })] })
  const a = await mk()
  const b = await mk()
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.is((a.stack.find(ReliableUdp) as ReliableUdp).mode, 'js')
  t.false((a.stack.find(Noise) as any).native)
  const got = new Promise<[any, Buffer]>((resolve) => b.once('message', (from, data) => resolve([from, data])))
  const m = crypto.randomBytes(200_000)
  await a.send(b.address, m)
  const [from, data] = await got
  t.true(Buffer.compare(data, m) === 0)
  t.true(from.id?.equals(a.id), 'the sender is the authenticated Peer')
})
