/**
 * TcpTransport over real loopback sockets (127.0.0.1): framing, introduction and authentication,
 * duplicate resolution, reference counting, backpressure, hostile peers, lifecycle.
 * Imports the BUILT package (dist/), as a user would.
 */
import test, { type ExecutionContext } from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import net from 'node:net'

import { DeccomError, ErrorCode, Identity, Node, Noise, TcpTransport, type TcpPeer, type TcpTransportOptions } from '../dist/index.js'
import { sleep, until } from './helpers/wait.ts'


interface TcpNode {
  node: Node
  tcp: TcpTransport
}

/** A node with a TcpTransport above its UDP transport (and optionally Noise), closed at teardown. */
async function open(t: ExecutionContext, opts: TcpTransportOptions = {}, withNoise = false): Promise<TcpNode> {
  const tcp = new TcpTransport(opts)
  const stack = withNoise ? [tcp, new Noise({ mode: 'encrypt' })] : [tcp]
  const node = await Node.create({ host: '127.0.0.1', stack })
  t.teardown(() => node.close())
  return { node, tcp }
}


function nextClose(tcp: TcpTransport, ms = 3000): Promise<{ peer: TcpPeer; reason: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no 'close' within ${ms} ms`)), ms)
    tcp.once('close', (peer, reason) => {
      clearTimeout(timer)
      resolve({ peer, reason })
    })
  })
}

// ---- a raw client speaking the wire format (for hostile and truncated peers) ----------------

function frame(type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(5)
  h.writeUInt32BE(body.length, 0)
  h[4] = type
  return Buffer.concat([h, body])
}

function hello(identity: Identity, opts: { wantsAuth?: boolean; wantsObserved?: boolean; udpRaw?: Buffer; nonce?: Buffer } = {}): { frame: Buffer; nonce: Buffer } {
  const pub = identity.publicIdentity
  const nonce = opts.nonce ?? randomBytes(32)
  const b = Buffer.alloc(88 + pub.length)
  b[0] = 1
  b[1] = (opts.wantsAuth ? 1 : 0) | (opts.wantsObserved ? 2 : 0)
  identity.id.copy(b, 2)
  nonce.copy(b, 34)
  ;(opts.udpRaw ?? Buffer.alloc(18)).copy(b, 66)
  b.writeUInt16BE(0, 84)
  b.writeUInt16BE(pub.length, 86)
  pub.copy(b, 88)
  return { frame: frame(0xf0, b), nonce }
}

/** Connects a raw socket and collects the frames the transport sends back. */
async function rawConnect(port: number): Promise<{ sock: net.Socket; frames: Array<{ type: number; body: Buffer }>; closed: Promise<void> }> {
  const sock = net.connect({ host: '127.0.0.1', port })
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject))
  const frames: Array<{ type: number; body: Buffer }> = []
  let buf = Buffer.alloc(0)
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d])
    while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(0)) {
      const len = buf.readUInt32BE(0)
      frames.push({ type: buf[4], body: buf.subarray(5, 5 + len) })
      buf = buf.subarray(5 + len)
    }
  })
  sock.on('error', () => {})
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()))
  return { sock, frames, closed }
}

// ---- tests --------------------------------------------------------------------------------------

test('many frames of random sizes (1 B .. 1 MiB) both ways arrive byte-exact and in order', async (t) => {
  t.timeout(60_000)
  const a = await open(t)
  const b = await open(t)
  const N = 120
  const sizes = (seed: number): number[] =>
    Array.from({ length: N }, (_, i) => {
      const r = createHash('sha256').update(`${seed}/${i}`).digest().readUInt32BE(0) / 2 ** 32
      return Math.max(1, Math.floor(2 ** (r * 20))) // log-uniform 1 B .. 1 MiB
    })
  const make = (sz: number[]): Buffer[] => sz.map((n) => randomBytes(n))
  const aToB = make([...sizes(1), 1, 1024 * 1024])
  const bToA = make([...sizes(2), 1024 * 1024, 1])
  const digest = (bufs: Buffer[]): string[] => bufs.map((x) => createHash('sha256').update(x).digest('hex'))
  const gotB: Buffer[] = []
  const gotA: Buffer[] = []
  const tagsB: number[] = []
  b.tcp.on('frame', (_p, d, tag) => {
    gotB.push(Buffer.from(d))
    tagsB.push(tag)
  })
  a.tcp.on('frame', (_p, d) => gotA.push(Buffer.from(d)))

  const peer = await a.tcp.openConnection(b.tcp.tcpAddress())
  t.true(peer.id.equals(b.node.id))
  t.true(peer.authenticated)
  t.is(peer.udpAddress?.key, b.node.address.key)
  t.is(peer.tcpAddress?.key, b.tcp.tcpAddress().key)
  // b answers by node id over the connection a opened.
  await until(() => b.tcp.peers().length === 1)
  await Promise.all([
    (async () => {
      for (const [i, d] of aToB.entries()) await a.tcp.sendStream(b.node.id, d, i % 7)
    })(),
    (async () => {
      for (const d of bToA) await b.tcp.sendStream(a.node.id.toString('hex'), d)
    })(),
  ])
  t.true(await until(() => gotB.length === aToB.length && gotA.length === bToA.length, 20_000), `${gotB.length} ${gotA.length}`)
  t.deepEqual(digest(gotB), digest(aToB))
  t.deepEqual(digest(gotA), digest(bToA))
  t.deepEqual(tagsB, aToB.map((_, i) => i % 7))
  const sa = a.tcp.stats()
  const sb = b.tcp.stats()
  t.is(sa.connections, 1)
  t.is(sb.connections, 1)
  t.is(sa.connections_opened, 1)
  t.is(sb.connections_accepted, 1)
  t.is(sa.frames_sent, aToB.length)
  t.is(sb.frames_received, aToB.length)
  t.is(sb.bytes_received, aToB.reduce((s, x) => s + x.length, 0))
  t.is(sa.frames_received, bToA.length)
})

test('a peer that disconnects mid-frame is detected: the stream closes and the callback fires', async (t) => {
  const a = await open(t)
  const raw = await rawConnect(a.tcp.tcpAddress().port)
  const evil = Identity.fromString('half-a-frame')
  const closing = nextClose(a.tcp)
  const frames: Buffer[] = []
  a.tcp.on('frame', (_p, d) => frames.push(Buffer.from(d)))
  // A name identity cannot sign: accepted unauthenticated (no Noise below, requireAuthentication off).
  raw.sock.write(hello(evil).frame)
  raw.sock.write(frame(0, Buffer.from('one whole frame')))
  const partial = frame(0, Buffer.alloc(1000, 9)).subarray(0, 505) // header + 500 of 1000 bytes
  raw.sock.write(partial)
  await until(() => frames.length === 1)
  await sleep(20)
  raw.sock.destroy()
  const { peer, reason } = await closing
  t.is(reason, 'truncated')
  t.true(peer.id.equals(evil.id))
  t.false(peer.authenticated)
  t.is(frames.length, 1)
  t.is(frames[0].toString(), 'one whole frame')
  const s = a.tcp.stats()
  t.is(s.connections, 0)
  t.is(s.connections_closed, 1)
  t.is(s.dropped_truncated, 1)
  // Sends to it now fail with a typed error (no known address to redial for a peer without a port).
  const e = await t.throwsAsync(a.tcp.sendStream(evil.id, Buffer.from('x')), { instanceOf: DeccomError })
  t.is(e?.code, ErrorCode.TCP_UNKNOWN_PEER)
})

test.serial('an oversized frame header is refused without allocating: connection closed, counted', async (t) => {
  const a = await open(t) // maxFrameSize 16 MiB
  const closes: string[] = []
  a.tcp.on('close', (_p, reason) => closes.push(reason))
  for (const len of [0xffff_fff0, 16 * 1024 * 1024 + 1]) {
    const before = process.memoryUsage().arrayBuffers
    const raw = await rawConnect(a.tcp.tcpAddress().port)
    raw.sock.write(hello(Identity.fromString(`big-${len}`)).frame)
    const h = Buffer.alloc(5)
    h.writeUInt32BE(len, 0)
    raw.sock.write(h)
    raw.sock.write(Buffer.alloc(1024, 1)) // some body: the transport must not wait for (or reserve) the rest
    await raw.closed
    const grown = process.memoryUsage().arrayBuffers - before
    t.true(grown < 8 * 1024 * 1024, `arrayBuffers grew by ${grown} bytes after a ${len}-byte header`)
  }
  t.is(a.tcp.stats().dropped_oversized, 2)
  t.true(await until(() => closes.length === 2))
  t.deepEqual(closes, ['oversized', 'oversized'])
  // Before the introduction, too; and an oversized control frame counts as malformed.
  const raw = await rawConnect(a.tcp.tcpAddress().port)
  raw.sock.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xf0]))
  await raw.closed
  t.is(a.tcp.stats().dropped_malformed, 1)
  t.is(a.tcp.stats().connections, 0)
  // Our own oversized send is refused with a typed error before anything is written.
  const small = await open(t, { maxFrameSize: 1024 })
  const e = await t.throwsAsync(small.tcp.sendStream(a.tcp.tcpAddress(), Buffer.alloc(1025)), { instanceOf: DeccomError })
  t.is(e?.code, ErrorCode.TCP_FRAME_TOO_LARGE)
})

/** An OBSERVED frame body: `host:port` as 16 bytes IPv4-mapped + port u16. */
function observedBody(host: string, port: number): Buffer {
  const b = Buffer.alloc(18)
  b[10] = b[11] = 0xff
  host.split('.').forEach((x, i) => (b[12 + i] = Number(x)))
  b.writeUInt16BE(port, 16)
  return b
}

test('external TCP address: each peer reports where it sees our connection come from; 2 agreeing peers give the mapping', async (t) => {
  const [a, b, c] = [await open(t), await open(t), await open(t)]
  const ab = await a.tcp.openConnection(b.tcp.tcpAddress())
  t.true(await until(() => a.tcp.tcpObservations().length === 1))
  t.is(a.tcp.tcpMapping(), null, 'one observer is not an agreement')
  t.is(a.tcp.externalTcpAddress(), null)
  await a.tcp.openConnection(c.tcp.tcpAddress())
  t.true(await until(() => a.tcp.tcpObservations().length === 2))
  for (const o of a.tcp.tcpObservations()) {
    // On loopback nothing rewrites ports: the peer saw our ephemeral source port.
    t.is(o.address.host, '127.0.0.1')
    t.is(o.address.port, o.localPort)
    t.not(o.localPort, a.tcp.tcpAddress().port)
  }
  t.deepEqual(new Set(a.tcp.tcpObservations().map((o) => o.observerHex)), new Set([ab.idHex, c.node.identity.idHex]))
  t.deepEqual(a.tcp.tcpMapping(), { host: '127.0.0.1', portPreserving: true, observers: 2 })
  t.is(a.tcp.externalTcpAddress()?.key, a.tcp.tcpAddress().key)
  // The dialled side is observed too: A saw B at B's listening address.
  t.true(await until(() => b.tcp.tcpObservations().length === 1))
  t.is(b.tcp.tcpObservations()[0].address.key, b.tcp.tcpAddress().key)
  t.is(b.tcp.tcpObservations()[0].observerHex, a.node.identity.idHex)
  t.is(a.tcp.stats().observations, 2)
})

test('external TCP address: peers that saw our ports rewritten agree on portPreserving false (no external address); hostile OBSERVED frames are dropped', async (t) => {
  const a = await open(t)
  const port = a.tcp.tcpAddress().port
  // Two peers (distinct ids) report our connections from 10.9.8.7 with ports other than ours.
  const raws = []
  for (const name of ['obs-1', 'obs-2']) {
    const raw = await rawConnect(port)
    raw.sock.write(hello(Identity.fromString(name), { wantsObserved: true }).frame)
    // A answers our HELLO's flag with an OBSERVED naming this raw socket's own address.
    t.true(await until(() => raw.frames.some((f) => f.type === 0xf3)))
    t.deepEqual(raw.frames.find((f) => f.type === 0xf3)!.body, observedBody('127.0.0.1', raw.sock.localPort!))
    raw.sock.write(frame(0xf3, observedBody('10.9.8.7', 40000 + raws.length)))
    raws.push(raw)
  }
  t.true(await until(() => a.tcp.tcpObservations().length === 2))
  t.deepEqual(a.tcp.tcpMapping(), { host: '10.9.8.7', portPreserving: false, observers: 2 })
  t.is(a.tcp.externalTcpAddress(), null)
  // A peer that does not set the flag gets no OBSERVED.
  const quiet = await rawConnect(port)
  quiet.sock.write(hello(Identity.fromString('quiet')).frame)
  t.true(await until(() => quiet.frames.some((f) => f.type === 0xf0)))
  await sleep(50)
  t.false(quiet.frames.some((f) => f.type === 0xf3))
  // Port 0 is ignored and counted; the connection stays.
  quiet.sock.write(frame(0xf3, observedBody('10.9.8.7', 0)))
  t.true(await until(() => a.tcp.stats().dropped_bad_observation === 1))
  t.is(a.tcp.tcpObservations().length, 2)
  t.false(quiet.sock.destroyed)
  // A second OBSERVED on one connection, one before HELLO, and a wrong length close the connection as malformed.
  const before = a.tcp.stats().dropped_malformed ?? 0
  quiet.sock.write(frame(0xf3, observedBody('10.9.8.7', 1)))
  await quiet.closed
  const early = await rawConnect(port)
  early.sock.write(frame(0xf3, observedBody('10.9.8.7', 1)))
  await early.closed
  const long = await rawConnect(port)
  long.sock.write(hello(Identity.fromString('long')).frame)
  long.sock.write(frame(0xf3, Buffer.alloc(19)))
  await long.closed
  t.is(a.tcp.stats().dropped_malformed, before + 3)
  t.deepEqual(a.tcp.tcpMapping(), { host: '10.9.8.7', portPreserving: false, observers: 2 })
  for (const r of raws) r.sock.destroy()
})

test('adoptSocket: bytes the socket read before it was adopted are parsed first; frames of every size then arrive both ways', async (t) => {
  const [a, b] = [await open(t), await open(t)]
  const sock = net.connect({ host: '127.0.0.1', port: b.tcp.tcpAddress().port })
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject))
  // B (the acceptor) sends its HELLO at once; let it land in the socket's own read buffer.
  t.true(await until(() => sock.readableLength > 0))
  const peer = await a.tcp.adoptSocket(sock, true)
  t.is(peer.idHex, b.node.identity.idHex)
  const sizes = [0, 1, 4096, 65531, 65536, 65541, 200_000, 1 << 20]
  const atB: Buffer[] = []
  const atA: Buffer[] = []
  b.tcp.on('frame', (_p, d) => atB.push(d))
  a.tcp.on('frame', (_p, d) => atA.push(d))
  const frames = sizes.map((n) => randomBytes(n))
  for (const f of frames) void a.tcp.sendStream(peer, f)
  t.true(await until(() => atB.length === frames.length))
  for (const f of frames) void b.tcp.sendStream(a.node.identity.id, f)
  t.true(await until(() => atA.length === frames.length))
  t.deepEqual(atB.map((d) => d.toString('hex')), frames.map((f) => f.toString('hex')))
  t.deepEqual(atA.map((d) => d.toString('hex')), frames.map((f) => f.toString('hex')))
})

test('a stream cut into random pieces (reads ending anywhere: in headers, in bodies read in place, in gathered bodies) is parsed byte-exact', async (t) => {
  const a = await open(t)
  const got: Buffer[] = []
  a.tcp.on('frame', (_p, d) => got.push(d))
  const raw = await rawConnect(a.tcp.tcpAddress().port)
  raw.sock.setNoDelay(true)
  raw.sock.write(hello(Identity.fromString('slicer')).frame)
  const sizes = [0, 1, 5, 100, 4096, 65531, 65536, 65541, 70_000, 200_000, 3, 65536, 0, 1 << 20, 7]
  const frames = sizes.map((n) => randomBytes(n))
  const stream = Buffer.concat(frames.map((f) => frame(1, f)))
  let seed = 12345
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0
    return seed % n
  }
  for (let off = 0; off < stream.length; ) {
    // Mostly small pieces (reads end in headers and early in bodies), sometimes large ones.
    const len = Math.min(stream.length - off, 1 + (rand(4) === 0 ? rand(150_000) : rand(40)))
    raw.sock.write(stream.subarray(off, off + len))
    off += len
    if (rand(3) === 0) await new Promise((r) => setImmediate(r))
  }
  t.true(await until(() => got.length === frames.length, 10_000), `${got.length} of ${frames.length} frames`)
  t.deepEqual(got.map((d) => d.toString('hex')), frames.map((f) => f.toString('hex')))
  raw.sock.destroy()
})

test('simultaneous connect from both sides ends with exactly one connection (initiated by the smaller id)', async (t) => {
  for (let round = 0; round < 5; round++) {
    const a = await open(t)
    const b = await open(t)
    const atA: string[] = []
    const atB: string[] = []
    a.tcp.on('frame', (_p, d) => atA.push(d.toString()))
    b.tcp.on('frame', (_p, d) => atB.push(d.toString()))
    const [pb, pa] = await Promise.all([a.tcp.openConnection(b.tcp.tcpAddress()), b.tcp.openConnection(a.tcp.tcpAddress())])
    t.true(pb.id.equals(b.node.id))
    t.true(pa.id.equals(a.node.id))
    t.true(await until(() => a.tcp.stats().connections === 1 && b.tcp.stats().connections === 1), JSON.stringify([a.tcp.stats(), b.tcp.stats()]))
    t.is(a.tcp.stats().duplicates_resolved, 1)
    t.is(b.tcp.stats().duplicates_resolved, 1)
    // The survivor is the connection the smaller id dialled: its remote end is the larger id's listening port.
    const [small, large] = Buffer.compare(a.node.id, b.node.id) < 0 ? [a, b] : [b, a]
    t.is(small.tcp.peers()[0].remoteAddress.port, large.tcp.tcpAddress().port)
    await Promise.all([a.tcp.sendStream(b.node.id, Buffer.from('a1')), b.tcp.sendStream(a.node.id, Buffer.from('b1'))])
    await Promise.all([a.tcp.sendStream(b.node.id, Buffer.from('a2')), b.tcp.sendStream(a.node.id, Buffer.from('b2'))])
    t.true(await until(() => atA.length === 2 && atB.length === 2))
    t.deepEqual(atB, ['a1', 'a2'])
    t.deepEqual(atA, ['b1', 'b2'])
    t.is(a.tcp.stats().connections_closed ?? 0, 0, 'the duplicate is not reported as a closed stream')
    await Promise.all([a.node.close(), b.node.close()])
  }
})

test('reference counting: two opens share one socket; two closes let it close after the idle timeout', async (t) => {
  const a = await open(t, { idleTimeout: 300 })
  const b = await open(t, { idleTimeout: 60_000 })
  const [p1, p2] = await Promise.all([a.tcp.openConnection(b.tcp.tcpAddress()), a.tcp.openConnection(b.tcp.tcpAddress().key)])
  t.is(p1, p2)
  const p3 = await a.tcp.openConnection(b.node.id) // by id: the same connection
  t.is(p3, p1)
  t.is(a.tcp.stats().connections_opened, 1)
  t.is(b.tcp.stats().connections_accepted, 1)
  t.true(a.tcp.closeStream(b.node.id))
  t.true(a.tcp.closeStream(p1))
  await sleep(500) // still one reference
  t.is(a.tcp.stats().connections, 1)
  const closedA = nextClose(a.tcp)
  const closedB = nextClose(b.tcp)
  t.true(a.tcp.closeStream(b.tcp.tcpAddress()))
  t.false(a.tcp.closeStream(b.node.id), 'no reference left')
  const t0 = Date.now()
  t.is((await closedA).reason, 'idle')
  t.true(Date.now() - t0 >= 250, `closed after ${Date.now() - t0} ms`)
  t.is((await closedB).reason, 'remote')
  t.true(await until(() => a.tcp.stats().connections === 0 && b.tcp.stats().connections === 0))
  t.is(a.tcp.stats().idle_closed, 1)
  // A new send redials the known address.
  const got = new Promise<string>((resolve) => b.tcp.once('frame', (_p, d) => resolve(d.toString())))
  await a.tcp.sendStream(b.node.id, Buffer.from('again'))
  t.is(await got, 'again')
  t.is(a.tcp.stats().connections_opened, 2)
})

test('backpressure: a slow reader bounds the sender queue; sends wait, overflow is rejected, then all complete', async (t) => {
  t.timeout(60_000)
  const MAXQ = 8
  const a = await open(t, { maxQueuedFrames: MAXQ, maxQueuedBytes: 64 * 1024 * 1024 })
  const b = await open(t)
  const FRAME = 1024 * 1024
  const TOTAL = 200
  await a.tcp.openConnection(b.tcp.tcpAddress())
  t.true(await until(() => b.tcp.peers().length === 1))
  t.true(b.tcp.pauseStream(a.node.id))
  const received: number[] = []
  let bad = 0
  b.tcp.on('frame', (_p, d) => {
    const i = d.readUInt32LE(0)
    if (d.length !== FRAME || d[FRAME - 1] !== (i & 0xff)) bad++
    received.push(i)
  })
  const mk = (i: number): Buffer => {
    const x = Buffer.alloc(FRAME, i & 0xff)
    x.writeUInt32LE(i, 0)
    return x
  }
  let sent = 0
  const loop = (async () => {
    for (let i = 0; i < TOTAL; i++) {
      await a.tcp.sendStream(b.node.id, mk(i))
      sent++
    }
  })()
  await sleep(600)
  const stalledAt = sent
  t.true(stalledAt < TOTAL, `the sender should wait for the paused reader (sent ${stalledAt})`)
  t.true(a.tcp.stats().queued_frames <= MAXQ)
  // A burst while blocked: the queue fills up to its bound and the rest is rejected, typed.
  const burst = Array.from({ length: 3 * MAXQ }, (_, k) => a.tcp.sendStream(b.node.id, mk(TOTAL + k)).then(() => 'ok', (e: DeccomError) => e.code))
  await sleep(50)
  t.true(a.tcp.stats().queued_frames <= MAXQ, JSON.stringify(a.tcp.stats()))
  t.true(a.tcp.stats().dropped_queue_full >= 2 * MAXQ - 1, JSON.stringify(a.tcp.stats()))
  t.is(sent, stalledAt, 'still waiting')
  t.true(b.tcp.resumeStream(a.node.id))
  await loop
  const outcomes = await Promise.all(burst)
  t.true(outcomes.every((o) => o === 'ok' || o === ErrorCode.TCP_QUEUE_FULL), JSON.stringify(outcomes))
  const accepted = outcomes.filter((o) => o === 'ok').length
  t.true(accepted >= 1 && accepted <= MAXQ, `accepted ${accepted}`)
  t.true(await until(() => received.length === TOTAL + accepted, 20_000), `${received.length}`)
  t.is(bad, 0)
  // In order: the loop's frames first, interleaved with the accepted burst frames in send order.
  const loopFrames = received.filter((i) => i < TOTAL)
  t.deepEqual(loopFrames, Array.from({ length: TOTAL }, (_, i) => i))
  t.true(a.tcp.stats().backpressure_waits > 0)
})

test('with Noise below: introductions are authenticated against the Noise session; impostors are refused', async (t) => {
  t.timeout(30_000)
  const a = await open(t, {}, true)
  const b = await open(t, {}, true)
  const p = await a.tcp.openConnection(b.tcp.tcpAddress())
  t.true(p.authenticated)
  t.true(p.id.equals(b.node.id))
  t.true(await until(() => b.tcp.peers().length === 1))
  t.true(b.tcp.peers()[0].authenticated)

  // 1. An unsigned introduction (a name identity) is refused when Noise is below.
  let raw = await rawConnect(a.tcp.tcpAddress().port)
  raw.sock.write(hello(Identity.fromString('nobody')).frame)
  await raw.closed
  t.is(a.tcp.stats().auth_failed, 1)

  // 2. Claiming b's id without b's key: the signature cannot verify.
  raw = await rawConnect(a.tcp.tcpAddress().port)
  raw.sock.write(hello(b.node.identity, { wantsAuth: true, udpRaw: b.node.address.raw }).frame)
  await until(() => raw.frames.some((f) => f.type === 0xf0))
  raw.sock.write(frame(0xf1, randomBytes(64)))
  await raw.closed
  t.is(a.tcp.stats().auth_failed, 2)

  // 3. A real key, a valid signature, but someone else's UDP address: Noise knows better.
  const c = Identity.generate()
  raw = await rawConnect(a.tcp.tcpAddress().port)
  const h = hello(c, { wantsAuth: true, udpRaw: b.node.address.raw })
  raw.sock.write(h.frame)
  t.true(await until(() => raw.frames.some((f) => f.type === 0xf0)))
  const theirs = raw.frames.find((f) => f.type === 0xf0)!.body
  const sig = c.sign(Buffer.concat([Buffer.from('deccom-tcp-auth-v1'), theirs.subarray(34, 66), h.nonce, c.id, a.node.id]))
  raw.sock.write(frame(0xf1, sig))
  await raw.closed
  t.is(a.tcp.stats().auth_failed, 3)
  t.is(a.tcp.peers().length, 1)
})

test('errors are typed: unknown peer, refused connection, bad tag, use after stop', async (t) => {
  const a = await open(t, { handshakeTimeout: 2000 })
  let e = await t.throwsAsync(a.tcp.sendStream(randomBytes(32), Buffer.from('x')), { instanceOf: DeccomError })
  t.is(e?.code, ErrorCode.TCP_UNKNOWN_PEER)
  // A port nobody listens on.
  const srv = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => srv.once('listening', r))
  const port = (srv.address() as net.AddressInfo).port
  await new Promise((r) => srv.close(r))
  e = await t.throwsAsync(a.tcp.openConnection(`127.0.0.1:${port}`), { instanceOf: DeccomError })
  t.is(e?.code, ErrorCode.TCP_CONNECT_FAILED)
  e = await t.throwsAsync(a.tcp.sendStream(`127.0.0.1:${port}`, Buffer.from('x'), 0xf0), { instanceOf: DeccomError })
  t.is(e?.code, ErrorCode.INVALID_ARGUMENT)
  e = await t.throwsAsync(a.tcp.openConnection(a.tcp.tcpAddress()), { instanceOf: DeccomError })
  t.is(e?.code, ErrorCode.INVALID_ADDRESS)
  await a.node.close()
  e = await t.throwsAsync(a.tcp.sendStream(`127.0.0.1:${port}`, Buffer.from('x')), { instanceOf: DeccomError })
  t.is(e?.code, ErrorCode.CLOSED)
})

/** Counts of process.getActiveResourcesInfo() entries, by type. */
function resources(): Map<string, number> {
  const m = new Map<string, number>()
  for (const r of process.getActiveResourcesInfo()) m.set(r, (m.get(r) ?? 0) + 1)
  return m
}

test.serial('stop() closes the server, every socket and timer: no open handles afterwards', async (t) => {
  await sleep(20)
  const before = resources()
  const a = new TcpTransport({ idleTimeout: 60_000, handshakeTimeout: 60_000 })
  const b = new TcpTransport({ idleTimeout: 60_000 })
  const na = await Node.create({ host: '127.0.0.1', stack: [a] })
  const nb = await Node.create({ host: '127.0.0.1', stack: [b] })
  try {
    await a.openConnection(b.tcpAddress())
    b.pauseStream(na.id)
    // A blocked connection with queued frames, a half-open raw connection (handshake timer), idle timers.
    const pending = Array.from({ length: 12 }, () => a.sendStream(nb.id, Buffer.alloc(2 * 1024 * 1024)).then(() => 'ok', (e: DeccomError) => e.code))
    const raw = await rawConnect(a.tcpAddress().port)
    await sleep(100)
    const during = resources()
    t.true((during.get('TCPSocketWrap') ?? 0) >= (before.get('TCPSocketWrap') ?? 0) + 3)
    const closes: string[] = []
    a.on('close', (_p, reason) => closes.push(reason))
    await Promise.all([na.close(), nb.close()])
    const outcomes = await Promise.all(pending)
    t.true(outcomes.some((o) => o === ErrorCode.TCP_CONNECTION_CLOSED), JSON.stringify(outcomes))
    t.deepEqual(closes, ['stopped'])
    await raw.closed
  } finally {
    await Promise.all([na.close(), nb.close()])
  }
  let after = resources()
  const extra = (): string[] =>
    [...after].filter(([type, n]) => /tcp|timeout|timer|immediate|udp/i.test(type) && n > (before.get(type) ?? 0)).map(([type]) => type)
  for (let i = 0; i < 50 && extra().length > 0; i++) {
    await sleep(20)
    after = resources()
  }
  t.deepEqual(extra(), [], `before ${JSON.stringify(Object.fromEntries(before))}; after ${JSON.stringify(Object.fromEntries(after))}`)
})
