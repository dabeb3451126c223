/**
 * TcpHolePuncher on loopback (no NAT: the real-NAT case is in nat-tcp.spec.ts). Imports the BUILT
 * package (dist/), as a user would.
 */
import test, { type ExecutionContext } from 'ava'

import { ErrorCode, HolePuncher, Node, TcpHolePuncher, TcpTransport, type Protocol, type TcpHolePuncherOptions, type TcpPeer } from '../dist/index.js'

interface Opened {
  node: Node
  tcp: TcpTransport
  thp: TcpHolePuncher
  hp: HolePuncher
}

async function open(t: ExecutionContext, o: TcpHolePuncherOptions = {}, withPuncher = true): Promise<Opened> {
  const tcp = new TcpTransport({ host: '127.0.0.1' })
  const thp = new TcpHolePuncher(o)
  const hp = new HolePuncher()
  const stack: Protocol[] = withPuncher ? [thp, tcp, hp] : [tcp, hp]
  const node = await Node.create({ host: '127.0.0.1', stack })
  t.teardown(() => node.close())
  return { node, tcp, thp, hp }
}

function nextFrame(tcp: TcpTransport, ms = 3000): Promise<{ peer: TcpPeer; data: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no frame within ${ms} ms`)), ms)
    tcp.once('frame', (peer, data) => {
      clearTimeout(timer)
      resolve({ peer, data: data.toString() })
    })
  })
}

test('the introducer coordinates a TCP connection end to end; a frame arrives both ways', async (t) => {
  const r = await open(t)
  const a = await open(t, { punchTimeout: 4000 })
  const b = await open(t, { punchTimeout: 4000 })
  const seenAtB = new Promise<string>((resolve) => b.thp.onConnection((x) => resolve(x.path)))
  const res = await a.thp.connect(b.node.address, r.node.address)
  t.true(res.path === 'punched' || res.path === 'direct')
  t.deepEqual(res.peer.id, b.node.identity.id)
  t.true(['punched', 'direct'].includes(await seenAtB))
  const atB = nextFrame(b.tcp)
  await a.tcp.sendStream(res.peer.id, Buffer.from('hello B'))
  const fb = await atB
  t.is(fb.data, 'hello B')
  const atA = nextFrame(a.tcp)
  await b.tcp.sendStream(fb.peer.id, Buffer.from('hello A'))
  t.is((await atA).data, 'hello A')
  const rs = r.thp.stats()
  t.is(rs.introductions, 1)
  t.true(rs.offers_sent >= 1 && rs.go_sent >= 2)
  t.is(a.thp.stats().go_received, 1)
  t.is(b.thp.stats().go_received, 1)
  t.is(a.thp.stats().sessions, 0)
})

// On loopback there is no NAT to swallow the first SYN: a SYN reaching a punch port whose socket
// is not (yet) in SYN_SENT is answered by RST at once, so two connects from one process never
// overlap and a simultaneous open does not happen here. This test checks the coordination and
// the punching loop (GO reaches both sides, both dial from their punch ports, bounded retries,
// typed timeout); the successful simultaneous open is tested across real NATs in nat-tcp.spec.ts.
test('with direct dialling off, both sides get GO and punch (bounded) from their punch ports', async (t) => {
  const r = await open(t)
  const a = await open(t, { direct: false, punchTimeout: 600, punchInterval: 20 })
  const b = await open(t, { direct: false, punchTimeout: 600, punchInterval: 20 })
  const res = await a.thp.connect(b.node.address, r.node.address).then(
    (x) => x.path,
    (e: { code?: string }) => e.code,
  )
  const sa = a.thp.stats()
  const sb = b.thp.stats()
  t.log(`loopback: ${res}; attempts A ${sa.punch_attempts}, B ${sb.punch_attempts}`)
  t.true(res === ErrorCode.TCP_PUNCH_TIMEOUT || res === 'punched', String(res))
  t.is(sa.go_received, 1)
  t.is(sb.go_received, 1)
  t.true(sa.punch_attempts >= 2 && sb.punch_attempts >= 2)
  t.true(sa.punch_attempts < 200, 'bounded by punchTimeout / punchInterval')
  t.is(sa.direct_attempts ?? 0, 0)
  await new Promise((res2) => setTimeout(res2, 700))
  t.is(b.thp.stats().sessions, 0, "the responder's session is bounded too")
})

test('falls back to a direct connection when the target is reachable (even without a TcpHolePuncher)', async (t) => {
  const r = await open(t)
  const a = await open(t, { punchTimeout: 2000 })
  const b = await open(t, {}, false)
  const res = await a.thp.connect(b.node.address, r.node.address, { tcpAddress: b.tcp.tcpAddress() })
  t.is(res.path, 'direct')
  t.deepEqual(res.peer.id, b.node.identity.id)
  t.is(a.thp.stats().connected_direct, 1)
})

test('no answer: the connect fails with ERR_DECCOM_TCP_PUNCH_TIMEOUT and the session is cleared', async (t) => {
  const r = await open(t)
  const a = await open(t, { punchTimeout: 400, introRetry: 50 })
  const b = await open(t, {}, false) // no TcpHolePuncher: never accepts
  const err = await t.throwsAsync(a.thp.connect(b.node.address, r.node.address))
  t.is((err as { code?: string }).code, ErrorCode.TCP_PUNCH_TIMEOUT)
  t.is(a.thp.stats().timeouts, 1)
  t.is(a.thp.stats().sessions, 0)
  t.true(a.thp.stats().requests_sent >= 2, 'REQ is retried')
})

test('malformed and unsolicited datagrams are counted, not fatal; stop rejects open sessions', async (t) => {
  const r = await open(t)
  const x = await open(t, {}, false)
  const udp = x.node.stack.layers[x.node.stack.layers.length - 1] as unknown as { send(to: unknown, d: Uint8Array, tag: number): void }
  const send = (buf: Buffer): void => udp.send(r.node.address, buf, 11)
  // A REQ with every field well-formed but not padded to 96 bytes: refused (no amplification).
  const shortReq = Buffer.alloc(1 + 4 + 7 + 4 + 32)
  shortReq[0] = 1
  shortReq.set([4, 127, 0, 0, 1, 0, 9], 5)
  shortReq.writeUInt16BE(4000, 12)
  for (const b of [Buffer.from([1]), Buffer.from([1, 0, 0, 0, 1, 4, 127]), Buffer.from([9, 0, 0, 0, 1]), Buffer.from([4, 0, 0, 0, 1, 7, 0, 0]), Buffer.alloc(5 + 7 + 4 + 31, 1), shortReq]) send(b)
  // A well-formed GO nobody asked for.
  const go = Buffer.alloc(8 + 7 + 1 + 32)
  go[0] = 4
  go[8] = 4
  go.set([127, 0, 0, 1, 0, 9], 9)
  send(go)
  const deadline = Date.now() + 2000
  while (Date.now() < deadline && (r.thp.stats().dropped_malformed ?? 0) + (r.thp.stats().dropped_unsolicited ?? 0) < 7) await new Promise((res) => setTimeout(res, 20))
  t.is(r.thp.stats().dropped_malformed, 6)
  t.is(r.thp.stats().dropped_unsolicited, 1)
  t.is(r.thp.stats().offers_sent ?? 0, 0, 'the short REQ caused no OFFER')
  // Application datagrams still pass through the layer.
  const got = new Promise<string>((resolve) => r.node.once('message', (_f, d) => resolve(Buffer.from(d).toString())))
  await x.node.send(r.node.address, Buffer.from('app'))
  t.is(await got, 'app')
  const a = await open(t, { punchTimeout: 10_000 })
  const pending = a.thp.connect('127.0.0.1:9', r.node.address)
  await new Promise((res) => setTimeout(res, 50))
  await a.node.close()
  const err = await t.throwsAsync(pending)
  t.is((err as { code?: string }).code, ErrorCode.CLOSED)
})
