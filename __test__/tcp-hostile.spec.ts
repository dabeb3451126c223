/**
 * TcpTransport against hostile peers before the introduction, over real loopback sockets: raw
 * `node:net` clients that skip or stall the HELLO. Data before a verified HELLO closes the
 * connection at its header; unintroduced connections are bounded (the oldest is evicted), so they
 * neither hold memory nor lock out a legitimate peer. Imports the BUILT package (dist/).
 */
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import net from 'node:net'

import { Identity, Node, TcpTransport, type TcpTransportOptions } from '../dist/index.js'
import { n, sleep, until } from './helpers/wait.ts'



async function open(t: ExecutionContext, opts: TcpTransportOptions = {}): Promise<{ node: Node; tcp: TcpTransport }> {
  const tcp = new TcpTransport(opts)
  const node = await Node.create({ host: '127.0.0.1', stack: [tcp] })
  t.teardown(() => node.close())
  return { node, tcp }
}

function frame(type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(5)
  h.writeUInt32BE(body.length, 0)
  h[4] = type
  return Buffer.concat([h, body])
}

function header(len: number, type: number): Buffer {
  const h = Buffer.alloc(5)
  h.writeUInt32BE(len, 0)
  h[4] = type
  return h
}

/** A HELLO frame for `identity` (flag bit 0 when it announces an AUTH). */
function hello(identity: Identity, wantsAuth: boolean): Buffer {
  const pub = identity.publicIdentity
  const b = Buffer.alloc(88 + pub.length)
  b[0] = 1
  b[1] = wantsAuth ? 1 : 0
  identity.id.copy(b, 2)
  randomBytes(32).copy(b, 34)
  b.writeUInt16BE(pub.length, 86)
  pub.copy(b, 88)
  return frame(0xf0, b)
}

interface Raw {
  sock: net.Socket
  closed: Promise<void>
  isClosed: () => boolean
}

async function rawConnect(port: number): Promise<Raw> {
  const sock = net.connect({ host: '127.0.0.1', port })
  sock.on('error', () => {})
  sock.resume() // read (and drop) what the transport sends
  let done = false
  const closed = new Promise<void>((resolve) => sock.once('close', () => ((done = true), resolve())))
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject))
  return { sock, closed, isClosed: () => done }
}

const closedWithin = (r: Raw, ms: number): Promise<boolean> => Promise.race([r.closed.then(() => true), sleep(ms).then(() => false)])

test('a data frame before the HELLO closes the connection at its header; nothing is delivered or buffered', async (t) => {
  const a = await open(t)
  const frames: Buffer[] = []
  a.tcp.on('frame', (_p, d) => frames.push(d))
  const port = a.tcp.tcpAddress().port
  // A 16 MiB data frame (the largest allowed) without any HELLO, its body streaming in.
  const body = Buffer.alloc(1024 * 1024, 1)
  const before = process.memoryUsage().arrayBuffers
  const big = await rawConnect(port)
  big.sock.write(header(16 * 1024 * 1024, 0))
  big.sock.write(body)
  t.true(await closedWithin(big, 3000), 'closed without waiting for the body')
  t.true(process.memoryUsage().arrayBuffers - before < 4 * 1024 * 1024, 'no body buffer was reserved')
  // A small complete one.
  const small = await rawConnect(port)
  small.sock.write(frame(0, Buffer.from('not introduced')))
  t.true(await closedWithin(small, 3000))
  // After a HELLO that announces an AUTH, but before the AUTH: the HELLO is not verified yet.
  const unsigned = await rawConnect(port)
  unsigned.sock.write(Buffer.concat([hello(Identity.fromSeed(randomBytes(32)), true), frame(0, Buffer.from('before auth'))]))
  t.true(await closedWithin(unsigned, 3000), 'closed before the handshake timeout')
  const s = a.tcp.stats()
  t.is(n(s.dropped_before_hello), 3)
  t.is(n(s.dropped_malformed), 3)
  t.is(n(s.frames_received), 0)
  t.deepEqual(frames, [])
  t.true(await until(() => a.tcp.stats().connections === 0))
  t.is(a.tcp.stats().buffered_bytes, 0)
  t.is(a.tcp.stats().pending_connections, 0)
})

test('1,024 connections that never introduce themselves do not lock out a legitimate peer', async (t) => {
  const a = await open(t) // maxConnections 1024, maxPendingConnections 128
  const port = a.tcp.tcpAddress().port
  const raws: Raw[] = []
  t.teardown(() => raws.forEach((r) => r.sock.destroy()))
  for (let i = 0; i < 1024; i += 64) {
    const batch = await Promise.all(Array.from({ length: 64 }, () => rawConnect(port)))
    // Half send a partial HELLO header, half nothing.
    batch.forEach((r, j) => j % 2 === 0 && r.sock.write(Buffer.from([0, 0, 1])))
    raws.push(...batch)
  }
  t.true(await until(() => n(a.tcp.stats().connections_accepted) === 1024, 15_000), 'all accepted')
  t.true(a.tcp.stats().pending_connections <= 128)
  t.true(n(a.tcp.stats().pending_evicted) >= 1024 - 128)
  // A legitimate peer connects and its frame arrives.
  const b = await open(t)
  const got = new Promise<string>((resolve) => a.tcp.once('frame', (_p, d) => resolve(d.toString())))
  await b.tcp.sendStream(a.tcp.tcpAddress(), Buffer.from('hello through the flood'))
  t.is(await got, 'hello through the flood')
  t.is(a.tcp.peers().length, 1)
  t.is(n(a.tcp.stats().dropped_connection_limit), 0)
  // The evicted attackers were closed.
  t.true(await until(() => raws.filter((r) => r.isClosed()).length >= 1024 - 128, 15_000))
})

test('buffered bytes of unintroduced connections stay bounded and return to zero after close', async (t) => {
  const a = await open(t, { maxPendingConnections: 64 })
  const port = a.tcp.tcpAddress().port
  const body = Buffer.alloc(1024 * 1024, 1) // one buffer for every attacker (measured below: the transport's memory)
  const before = process.memoryUsage().arrayBuffers
  const raws: Raw[] = []
  t.teardown(() => raws.forEach((r) => r.sock.destroy()))
  for (let i = 0; i < 48; i++) {
    const r = await rawConnect(port)
    raws.push(r)
    if (i % 2 === 0) {
      // No HELLO, a 16 MiB data frame streaming in.
      r.sock.write(header(16 * 1024 * 1024, 0))
      r.sock.write(body)
    } else {
      // A HELLO announced at its maximum (512 bytes), then stalled after 300: its buffer is 512 + 5
      // (room for the next header), allocated when the header arrived.
      r.sock.write(Buffer.concat([header(512, 0xf0), Buffer.alloc(300, 1)]))
    }
  }
  t.true(await until(() => raws.filter((r, i) => i % 2 === 0 && r.isClosed()).length === 24), 'every HELLO-less data sender was closed')
  const s = a.tcp.stats()
  t.is(n(s.dropped_before_hello), 24)
  t.true(s.pending_connections <= 24)
  t.true(s.buffered_bytes <= 24 * (512 + 5), `${s.buffered_bytes} bytes buffered for 24 stalled HELLOs`)
  const grown = process.memoryUsage().arrayBuffers - before
  t.true(grown < 8 * 1024 * 1024, `arrayBuffers grew by ${grown} bytes while 24 MiB of bodies were sent`)
  for (const r of raws) r.sock.destroy()
  t.true(await until(() => a.tcp.stats().connections === 0))
  t.is(a.tcp.stats().buffered_bytes, 0)
  t.is(a.tcp.stats().pending_connections, 0)
})
