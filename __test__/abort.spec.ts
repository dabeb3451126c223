/**
 * AbortSignal on the async operations of the layers (TcpTransport, HolePuncher, TcpHolePuncher,
 * Relay, Gossip, BigGossip, FixedPeers), against real loopback peers that do not answer: an abort
 * rejects with ERR_DECCOM_ABORTED within 100 ms and leaves nothing open (sockets closed, timers
 * and retries stopped); an already-aborted signal sends nothing; listeners do not accumulate on a
 * long-lived signal. Imports the BUILT package (dist/), as a user would.
 */
import test, { type ExecutionContext } from 'ava'
import dgram from 'node:dgram'
import { getEventListeners, setMaxListeners } from 'node:events'
import net from 'node:net'

import {
  BigGossip,
  DeccomError,
  ErrorCode,
  FixedPeers,
  Gossip,
  HolePuncher,
  Node,
  Protocol,
  Relay,
  TcpHolePuncher,
  TcpTransport,
  type HolePuncherOptions,
  type TcpHolePuncherOptions,
} from '../dist/index.js'
import { n, sleep, until } from './helpers/wait.ts'

const TAG_HOLEPUNCH = 9

// ---- peers that do not answer ------------------------------------------------------------------

/** A TCP server that accepts and never says a word; records what it saw. */
async function silentTcp(t: ExecutionContext): Promise<{ addr: string; accepted: () => number; closed: () => number }> {
  let accepted = 0
  let closed = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    accepted++
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => {
      closed++
      sockets.delete(s)
    })
    s.resume()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return { addr: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, accepted: () => accepted, closed: () => closed }
}

/** A bound UDP socket that swallows every datagram; counts them. */
async function silentUdp(t: ExecutionContext): Promise<{ addr: string; received: () => number }> {
  let received = 0
  const sock = dgram.createSocket('udp4')
  sock.on('message', () => received++)
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve))
  t.teardown(() => sock.close())
  return { addr: `127.0.0.1:${sock.address().port}`, received: () => received }
}

/** Drops every incoming hole-punching datagram (a punch target behind nothing that answers); counts them. */
class SwallowPunches extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'swallow-punches'
  send(to: unknown, data: Uint8Array, tag: number): unknown {
    return this.lower.send(to, data, tag)
  }
  onMessage(from: unknown, data: Buffer, tag: number): void {
    if (tag === TAG_HOLEPUNCH) return this.count('swallowed')
    this.upper.onMessage(from, data, tag)
  }
}

async function node(t: ExecutionContext, stack: Protocol[]): Promise<Node> {
  const nd = await Node.create({ host: '127.0.0.1', stack })
  t.teardown(() => nd.close())
  return nd
}

/** Awaits `p`, which must reject with ERR_DECCOM_ABORTED (cause: `reason`); returns ms from `since`. */
async function aborted(t: ExecutionContext, p: Promise<unknown>, reason: unknown, since: number): Promise<number> {
  const err = await t.throwsAsync(p)
  const ms = performance.now() - since
  t.true(err instanceof DeccomError, String(err))
  t.is((err as DeccomError).code, ErrorCode.ABORTED)
  t.is((err as Error).cause, reason, 'the cause is the signal reason')
  t.true(ms < 100, `rejected ${ms.toFixed(1)} ms after the abort`)
  return ms
}

/** Aborts `ac` with a fresh reason; returns [reason, the time]. */
function abortNow(ac: AbortController): [Error, number] {
  const reason = new Error('stop')
  const at = performance.now()
  ac.abort(reason)
  return [reason, at]
}

// ---- TcpTransport ---------------------------------------------------------------------------

test('TcpTransport.openConnection: an abort during the introduction rejects at once and closes the socket', async (t) => {
  const server = await silentTcp(t)
  const tcp = new TcpTransport()
  await node(t, [tcp])
  const ac = new AbortController()
  const p = tcp.openConnection(server.addr, { signal: ac.signal })
  t.true(await until(() => server.accepted() === 1))
  await sleep(20)
  t.is(tcp.stats().connections, 1)
  const [reason, at] = abortNow(ac)
  await aborted(t, p, reason, at)
  t.is(tcp.stats().connections, 0)
  t.deepEqual(tcp.peers(), [])
  t.is(tcp.stats().connects_aborted, 1)
  t.is(tcp.stats().connections_aborted, 1)
  t.true(await until(() => server.closed() === 1, 1000), 'the server saw the socket close')
  t.false(tcp.closeStream(server.addr), 'no reference left')
})

test('TcpTransport.sendStream: an aborted queued frame leaves the queue; the last one closes the connection', async (t) => {
  const server = await silentTcp(t)
  const tcp = new TcpTransport()
  await node(t, [tcp])
  const ac1 = new AbortController()
  const ac2 = new AbortController()
  const p1 = tcp.sendStream(server.addr, Buffer.alloc(100), 3, { signal: ac1.signal })
  const p2 = tcp.sendStream(server.addr, Buffer.alloc(50), { signal: ac2.signal }) // options in place of the tag
  t.true(await until(() => server.accepted() === 1))
  t.is(tcp.stats().queued_frames, 2)
  t.is(tcp.stats().queued_bytes, 150)
  const [r1, at1] = abortNow(ac1)
  await aborted(t, p1, r1, at1)
  t.is(tcp.stats().queued_frames, 1, 'the aborted frame left the queue')
  t.is(tcp.stats().queued_bytes, 50)
  t.is(tcp.stats().connections, 1, 'another frame still waits for the connection')
  await sleep(50)
  t.is(server.closed(), 0)
  const [r2, at2] = abortNow(ac2)
  await aborted(t, p2, r2, at2)
  t.is(tcp.stats().queued_frames, 0)
  t.is(tcp.stats().connections, 0)
  t.is(tcp.stats().sends_aborted, 2)
  t.true(await until(() => server.closed() === 1, 1000), 'the server saw the socket close')
})

test('TcpTransport: an abort drops only its own reference; other users of the connection are served', async (t) => {
  const a = new TcpTransport()
  const b = new TcpTransport()
  await node(t, [a])
  const nb = await node(t, [b])
  const ac = new AbortController()
  const frames: string[] = []
  b.on('frame', (_p, data) => frames.push(data.toString()))
  const p1 = a.openConnection(b.tcpAddress(), { signal: ac.signal })
  const p2 = a.openConnection(b.tcpAddress())
  const s1 = a.sendStream(b.tcpAddress(), Buffer.from('kept'))
  const s2 = a.sendStream(b.tcpAddress(), Buffer.from('dropped'), 0, { signal: ac.signal })
  ac.abort()
  await t.throwsAsync(p1, { code: ErrorCode.ABORTED })
  await t.throwsAsync(s2, { code: ErrorCode.ABORTED })
  const peer = await p2
  await s1
  t.deepEqual(peer.id, nb.id)
  t.true(await until(() => frames.length === 1))
  await sleep(50)
  t.deepEqual(frames, ['kept'], 'the aborted frame was never written')
  t.true(a.closeStream(b.tcpAddress()), 'the other reference is kept')
  t.false(a.closeStream(b.tcpAddress()), 'the aborted one was dropped')
  // A frame handed to the socket is not undone by a later abort.
  const ac2 = new AbortController()
  await a.sendStream(peer.id, Buffer.from('sent'), 0, { signal: ac2.signal })
  ac2.abort()
  t.true(await until(() => frames.length === 2))
  t.is(frames[1], 'sent')
})

test('TcpTransport.sendStream: a frame held back by backpressure is removed on abort; the others arrive whole', async (t) => {
  const a = new TcpTransport()
  const b = new TcpTransport()
  const na = await node(t, [a])
  await node(t, [b])
  const peer = await a.openConnection(b.tcpAddress())
  t.true(await until(() => b.peers().length === 1))
  b.pauseStream(na.id)
  const big = (mark: number): Buffer => Buffer.alloc(1 << 20, mark)
  const sends: Promise<void>[] = []
  for (let i = 0; i < 64 && a.stats().queued_frames < 2; i++) sends.push(a.sendStream(peer.id, big(1)))
  t.true(a.stats().queued_frames >= 2, 'the connection is blocked: frames queue')
  const queued = a.stats().queued_frames
  const ac = new AbortController()
  const dropped = a.sendStream(peer.id, big(2), 0, { signal: ac.signal })
  sends.push(a.sendStream(peer.id, big(3)))
  t.is(a.stats().queued_frames, queued + 2)
  const [reason, at] = abortNow(ac)
  await aborted(t, dropped, reason, at)
  t.is(a.stats().queued_frames, queued + 1, 'only the aborted frame left the queue')
  t.is(a.stats().connections, 1, 'an open connection stays open')
  const marks: number[] = []
  b.on('frame', (_p, data) => {
    t.is(data.length, 1 << 20, 'every frame arrives whole')
    marks.push(data[0])
  })
  b.resumeStream(na.id)
  await Promise.all(sends)
  t.true(await until(() => marks.length === sends.length, 5000))
  t.false(marks.includes(2), 'the aborted frame was never written')
  t.is(marks[marks.length - 1], 3)
})

test('TcpTransport: an already-aborted signal opens nothing', async (t) => {
  const server = await silentTcp(t)
  const tcp = new TcpTransport()
  await node(t, [tcp])
  const reason = new Error('before')
  const signal = AbortSignal.abort(reason)
  const e1 = await t.throwsAsync(tcp.openConnection(server.addr, { signal }), { code: ErrorCode.ABORTED })
  t.is(e1.cause, reason)
  await t.throwsAsync(tcp.sendStream(server.addr, Buffer.from('x'), 0, { signal }), { code: ErrorCode.ABORTED })
  await sleep(100)
  t.is(server.accepted(), 0)
  t.is(n(tcp.stats().connections_opened), 0)
})

// ---- HolePuncher ----------------------------------------------------------------------------

const fast: HolePuncherOptions = { introRetry: 40, punchInterval: 20, punchTimeout: 10_000 }

test('HolePuncher.connect: an abort while introducing stops the INTRO_REQ retries', async (t) => {
  const via = await silentUdp(t)
  const hp = new HolePuncher(fast)
  const a = await node(t, [hp])
  const ac = new AbortController()
  const p = hp.connect('127.0.0.1:9', via.addr, { signal: ac.signal })
  t.true(await until(() => via.received() >= 2), 'INTRO_REQs are retried')
  t.deepEqual(Object.values(hp.paths()), ['introducing'])
  const [reason, at] = abortNow(ac)
  await aborted(t, p, reason, at)
  t.deepEqual(hp.paths(), {}, 'the session is gone')
  await sleep(50) // datagrams sent before the abort may still be on their way
  const seen = via.received()
  await sleep(200)
  t.is(via.received(), seen, 'no INTRO_REQ after the abort')
  t.is(hp.stats().sessions_aborted, 1)
  const closing = performance.now()
  await a.close()
  t.true(performance.now() - closing < 100, 'the node closes at once')
})

test.serial('HolePuncher.connect: an abort while punching stops the punches and clears every timer', async (t) => {
  const r = await node(t, [new HolePuncher()])
  const swallow = new SwallowPunches()
  await node(t, [new HolePuncher({ rendezvous: [r.address] }), swallow])
  const hp = new HolePuncher(fast)
  await node(t, [hp])
  t.true(await until(() => n(r.stats()['hole-puncher'].probes_answered) >= 1), 'the rendezvous heard the target')
  const targetAddr = r.stack.find(HolePuncher)!.introducible()[0]
  const timers = (): number => process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length
  const baseline = timers()
  const ac = new AbortController()
  const p = hp.connect(targetAddr, r.address, { signal: ac.signal })
  t.true(await until(() => swallow.stats().swallowed >= 5), 'PUNCHes reach the target (and are swallowed)')
  t.deepEqual(Object.values(hp.paths()), ['punching'])
  t.true(timers() > baseline)
  const [reason, at] = abortNow(ac)
  t.is(timers(), baseline, 'no timer of the session is left')
  await aborted(t, p, reason, at)
  t.deepEqual(hp.paths(), {})
  await sleep(50) // datagrams sent before the abort may still be on their way
  const seen = swallow.stats().swallowed
  await sleep(150)
  t.is(swallow.stats().swallowed, seen, 'no PUNCH after the abort')
})

test('HolePuncher.connect: an abort during the relay fallback stops it and removes the route', async (t) => {
  const r = await node(t, [new HolePuncher(), new Relay({ serve: {} })])
  const swallow = new SwallowPunches()
  await node(t, [new HolePuncher({ rendezvous: [r.address] }), swallow]) // never punches back, never allocates
  const hp = new HolePuncher({ ...fast, punchTimeout: 1000, relay: true }) // 1 s punching, then 1 s relaying
  const rl = new Relay({ retryInterval: 20 })
  await node(t, [hp, rl])
  t.true(await until(() => r.stack.find(HolePuncher)!.introducible().length === 1))
  const targetAddr = r.stack.find(HolePuncher)!.introducible()[0]
  const ac = new AbortController()
  const p = hp.connect(targetAddr, r.address, { signal: ac.signal })
  p.catch(() => {}) // awaited below; keeps a failed wait from reporting it unhandled
  t.true(await until(() => hp.paths()[targetAddr.key] === 'relaying' && n(rl.stats().queries_sent) >= 2, 1800), 'punching timed out; the relay is asked for the peer')
  t.deepEqual(Object.keys(rl.routes()), [targetAddr.key])
  const [reason, at] = abortNow(ac)
  await aborted(t, p, reason, at)
  t.deepEqual(hp.paths(), {})
  t.deepEqual(rl.routes(), {}, 'the fallback route is removed')
  const q = rl.stats().queries_sent
  await sleep(150)
  t.is(rl.stats().queries_sent, q, 'no QUERY after the abort')
  t.is(n(hp.stats().relay_fallback_failed), 0)
})

test('HolePuncher.connect: an already-aborted signal sends nothing; messages queued for the path are rejected', async (t) => {
  const via = await silentUdp(t)
  const hp = new HolePuncher(fast)
  await node(t, [hp])
  const signal = AbortSignal.abort('no')
  await t.throwsAsync(hp.connect('127.0.0.1:9', via.addr, { signal }), { code: ErrorCode.ABORTED })
  await t.throwsAsync(hp.connect('127.0.0.1:9', { signal }), { code: ErrorCode.ABORTED }) // options in place of `via`
  await sleep(100)
  t.is(via.received(), 0, 'nothing was sent')
  t.deepEqual(hp.paths(), {})
  // A message queued while the path opens fails with the abort.
  const ac = new AbortController()
  const p = hp.connect('127.0.0.1:9', via.addr, { signal: ac.signal })
  const queued = hp.send('127.0.0.1:9', Buffer.from('waits'), 0) as Promise<unknown>
  ac.abort()
  await t.throwsAsync(p, { code: ErrorCode.ABORTED })
  await t.throwsAsync(queued, { code: ErrorCode.ABORTED })
})

test('HolePuncher.connect: an abort leaves a path other callers still wait for', async (t) => {
  const via = await silentUdp(t)
  const hp = new HolePuncher({ ...fast, punchTimeout: 400 })
  await node(t, [hp])
  const ac = new AbortController()
  const p1 = hp.connect('127.0.0.1:9', via.addr, { signal: ac.signal })
  const p2 = hp.connect('127.0.0.1:9', via.addr)
  ac.abort()
  await t.throwsAsync(p1, { code: ErrorCode.ABORTED })
  t.deepEqual(Object.values(hp.paths()), ['introducing'], 'still opened for the other caller')
  await t.throwsAsync(p2, { code: ErrorCode.PUNCH_TIMEOUT })
})

// ---- TcpHolePuncher -------------------------------------------------------------------------

test('TcpHolePuncher.connect: an abort ends the session, its REQ retries and its direct dial', async (t) => {
  const server = await silentTcp(t)
  const r = await node(t, [new TcpHolePuncher(), new TcpTransport({ host: '127.0.0.1' }), new HolePuncher()])
  const b = await node(t, [new TcpTransport({ host: '127.0.0.1' }), new HolePuncher()]) // no TcpHolePuncher: never accepts
  const o: TcpHolePuncherOptions = { introRetry: 40, punchTimeout: 10_000 }
  const thp = new TcpHolePuncher(o)
  const tcp = new TcpTransport({ host: '127.0.0.1' })
  await node(t, [thp, tcp, new HolePuncher()])
  const ac = new AbortController()
  const p = thp.connect(b.address, r.address, { tcpAddress: server.addr, signal: ac.signal })
  t.true(await until(() => server.accepted() === 1 && n(thp.stats().requests_sent) >= 2), 'REQs retried, direct dial connected')
  t.is(thp.stats().sessions, 1)
  const [reason, at] = abortNow(ac)
  await aborted(t, p, reason, at)
  t.is(thp.stats().sessions, 0)
  t.is(tcp.stats().connections, 0, 'the direct dial was closed')
  t.true(await until(() => server.closed() === 1, 1000), 'the server saw it close')
  const sent = thp.stats().requests_sent
  await sleep(150)
  t.is(thp.stats().requests_sent, sent, 'no REQ after the abort')
  // Already aborted: no port, no REQ, no dial.
  await t.throwsAsync(thp.connect(b.address, r.address, { tcpAddress: server.addr, signal: AbortSignal.abort() }), { code: ErrorCode.ABORTED })
  await sleep(50)
  t.is(thp.stats().requests_sent, sent)
  t.is(server.accepted(), 1)
})

// ---- Relay ----------------------------------------------------------------------------------

test('Relay.relayVia: an abort while allocating stops the ALLOCATE retries and removes the routes', async (t) => {
  const relay = await silentUdp(t)
  const rl = new Relay({ retryInterval: 20 })
  await node(t, [rl])
  const ac = new AbortController()
  const p = rl.relayVia(relay.addr, ['127.0.0.1:9'], { timeout: 10_000, signal: ac.signal })
  t.true(await until(() => relay.received() >= 3), 'ALLOCATE retried')
  t.deepEqual(Object.keys(rl.routes()), ['127.0.0.1:9'])
  const [reason, at] = abortNow(ac)
  await aborted(t, p, reason, at)
  t.deepEqual(rl.routes(), {})
  await sleep(50) // datagrams sent before the abort may still be on their way
  const seen = relay.received()
  await sleep(150)
  t.is(relay.received(), seen, 'no ALLOCATE after the abort')
  // Already aborted: nothing sent, no route.
  await t.throwsAsync(rl.relayVia(relay.addr, ['127.0.0.1:9'], { signal: AbortSignal.abort() }), { code: ErrorCode.ABORTED })
  await sleep(50)
  t.is(relay.received(), seen)
  t.deepEqual(rl.routes(), {})
})

test('Relay.relayVia: an abort while waiting for the peer stops the QUERYs', async (t) => {
  const relayLayer = new Relay({ serve: {} })
  const r = await node(t, [relayLayer])
  const rl = new Relay({ retryInterval: 20 })
  await node(t, [rl])
  const ac = new AbortController()
  const p = rl.relayVia(r.address, ['127.0.0.1:9'], { timeout: 10_000, signal: ac.signal })
  t.true(await until(() => n(rl.stats().queries_sent) >= 3), 'the peer holds no session: QUERYs repeat')
  const [reason, at] = abortNow(ac)
  await aborted(t, p, reason, at)
  t.deepEqual(rl.routes(), {})
  const q = rl.stats().queries_sent
  await sleep(150)
  t.is(rl.stats().queries_sent, q, 'no QUERY after the abort')
})

// ---- discovery layers -----------------------------------------------------------------------

test('Gossip.findPeer: an abort mid-search rejects at once; an aborted signal rejects before searching', async (t) => {
  const g = new Gossip()
  await node(t, [g])
  const ac = new AbortController()
  const p = g.findPeer(Buffer.alloc(32, 7), { timeout: 10_000, signal: ac.signal })
  await sleep(20)
  const [reason, at] = abortNow(ac)
  await aborted(t, p, reason, at)
  const finds = n(g.stats().finds)
  await t.throwsAsync(g.findPeer(Buffer.alloc(32, 7), { signal: AbortSignal.abort() }), { code: ErrorCode.ABORTED })
  t.is(n(g.stats().finds), finds, 'no search started')
})

test('BigGossip and FixedPeers: an aborted signal rejects findPeer, sendToId and broadcast', async (t) => {
  const bg = new BigGossip()
  await node(t, [bg])
  const fp = new FixedPeers({ peers: [] })
  await node(t, [fp])
  const signal = AbortSignal.abort()
  await t.throwsAsync(bg.findPeer(Buffer.alloc(32, 1), { signal }), { code: ErrorCode.ABORTED })
  await t.throwsAsync(fp.findPeer(Buffer.alloc(32, 1), { signal }), { code: ErrorCode.ABORTED })
  await t.throwsAsync(fp.sendToId(Buffer.alloc(32, 1), Buffer.from('x'), { signal }), { code: ErrorCode.ABORTED })
  await t.throwsAsync(fp.broadcast(Buffer.from('x'), { signal }), { code: ErrorCode.ABORTED })
  t.is(n(fp.stats().broadcasts), 0)
})

// ---- listener leaks -------------------------------------------------------------------------

test('a long-lived signal keeps no listener of settled operations', async (t) => {
  const a = new TcpTransport()
  const b = new TcpTransport()
  const hpA = new HolePuncher(fast)
  const relayA = new Relay({ retryInterval: 20 })
  await node(t, [a, hpA, relayA])
  const rl = new Relay({ serve: {} })
  const r = await node(t, [new HolePuncher(), rl])
  await node(t, [b])
  const ac = new AbortController()
  const { signal } = ac
  setMaxListeners(1000, signal) // 250 operations wait on it at once below (not a leak: they settle)
  const listeners = (): number => getEventListeners(signal, 'abort').length
  // 200 frames queued before the connection opens: each waits with a listener, then each is written.
  const sends = Array.from({ length: 200 }, (_, i) => a.sendStream(b.tcpAddress(), Buffer.from(String(i)), 0, { signal }))
  const opens = Array.from({ length: 50 }, () => a.openConnection(b.tcpAddress(), { signal }))
  t.is(listeners(), 250)
  await Promise.all([...sends, ...opens])
  t.is(listeners(), 0)
  // Punch sessions that fail (the introducer never heard of the target) and relay sessions that open.
  const fails = Array.from({ length: 20 }, (_, i) => hpA.connect(`127.0.0.1:${40000 + i}`, r.address, { signal }).catch((e: { code: string }) => e.code))
  t.true((await Promise.all(fails)).every((c) => c === ErrorCode.INTRODUCTION_FAILED))
  for (let i = 0; i < 20; i++) await relayA.relayVia(r.address, [], { signal })
  t.is(listeners(), 0)
  t.false(signal.aborted)
})
