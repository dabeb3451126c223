/**
 * The Stack with real layers and sockets: the native-fusion decision it makes from the layers'
 * declared capabilities, and the peer tables of the JavaScript-driven endpoints (keyed by
 * host:port, bounded). The Stack's resolution rules are in stack.spec.ts. Imports the BUILT
 * package (dist/).
 */
import test from 'ava'

import { FaultyTransport, Identity, Node, Noise as RealNoise, Protocol, ReliableUdp as RealReliableUdp, UdpTransport, toAddress } from '../dist/index.js'

/** A user-defined transparent layer: JavaScript only (it declares no native role). */
class PassThrough extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'pass'
  send(to: unknown, data: Uint8Array, tag: number): unknown {
    this.count('down')
    return this.lower.send(to, data, tag)
  }
  onMessage(from: unknown, data: Uint8Array, tag: number): void {
    this.count('up')
    this.upper.onMessage(from, data, tag)
  }
}

test('native fusion is decided by the Stack from declared capabilities', async (t) => {
  const nodes: Array<InstanceType<typeof Node>> = []
  t.teardown(() => Promise.all(nodes.map((n) => n.close())))
  const make = async (stack: Protocol[], identity = false) => {
    const n = await Node.create({ host: '127.0.0.1', port: 0, stack, ...(identity ? { identity: Identity.generate() } : {}) } as never)
    nodes.push(n)
    const native = Object.fromEntries(n.stack.describe().map((r) => [r.layer, r.native]))
    return { n, native, rudp: n.stack.find(RealReliableUdp)! }
  }
  t.is(RealReliableUdp.nativeRole, 'endpoint')
  t.is(UdpTransport.nativeRole, 'socket')
  t.is(FaultyTransport.nativeRole, 'stage')

  // Directly on the socket, and with one stage in between that can: native.
  const plain = await make([new RealReliableUdp()])
  t.is(plain.rudp.mode, 'native')
  t.deepEqual(plain.native, { app: false, 'reliable-udp': true, udp: true })
  const faulty = await make([new RealReliableUdp(), new FaultyTransport({ seed: 1 })])
  t.is(faulty.rudp.mode, 'native')
  t.true(faulty.n.stack.find(FaultyTransport)!.native)
  t.deepEqual(faulty.native, { app: false, 'reliable-udp': true, faulty: true, udp: true })
  const noise = await make([new RealReliableUdp(), new RealNoise()], true)
  t.is(noise.rudp.mode, 'native')
  t.true(noise.native.noise)

  // forceJs on the endpoint, native: false on a stage: JavaScript-driven, stages stay in JS.
  const forced = await make([new RealReliableUdp({ forceJs: true }), new FaultyTransport({ seed: 1 })])
  t.is(forced.rudp.mode, 'js')
  t.false(forced.n.stack.find(FaultyTransport)!.native)
  t.deepEqual(forced.native, { app: false, 'reliable-udp': false, faulty: false, udp: false })
  const declined = await make([new RealReliableUdp(), new FaultyTransport({ seed: 1, native: false })])
  t.is(declined.rudp.mode, 'js')
  t.false(declined.n.stack.find(FaultyTransport)!.native)
  const noiseJs = await make([new RealReliableUdp(), new RealNoise({ native: false })], true)
  t.is(noiseJs.rudp.mode, 'js')
  t.false(noiseJs.n.stack.find(RealNoise)!.native)

  // A user-defined layer between ReliableUdp and the socket: JavaScript-driven, and the messages
  // really pass through it.
  const user = await make([new RealReliableUdp(), new PassThrough()])
  t.is(user.rudp.mode, 'js')
  t.deepEqual(user.native, { app: false, 'reliable-udp': false, pass: false, udp: false })
  const peer = await make([new RealReliableUdp(), new PassThrough()])
  const got = new Promise<string>((resolve) => peer.n.on('message', (_from: unknown, data: Buffer) => resolve(data.toString())))
  await user.n.send(peer.n.address, Buffer.from('through the user layer'))
  t.is(await got, 'through the user layer')
  t.true(user.n.stack.stats().pass.down > 0)
  t.true(peer.n.stack.stats().pass.up > 0)

  // The socket thread runs impairments before Noise: Noise over FaultyTransport fuses too.
  const two = await make([new RealReliableUdp(), new RealNoise(), new FaultyTransport({ seed: 1 })], true)
  t.is(two.rudp.mode, 'native')
  t.true(two.native.noise)
  t.true(two.native.faulty)
  // The other order (faults applied to Noise's plaintext) has no native form: JavaScript-driven.
  const inverted = await make([new RealReliableUdp(), new FaultyTransport({ seed: 1 }), new RealNoise()], true)
  t.is(inverted.rudp.mode, 'js')
  t.false(inverted.native.noise)
  t.false(inverted.native.faulty)
})

/** Another Address object for the same host:port (toAddress would give the one in use). */
function twin(a: ReturnType<typeof toAddress>): ReturnType<typeof toAddress> {
  const Ctor = a.constructor as new (host: string, port: number, family: 4 | 6) => ReturnType<typeof toAddress>
  return new Ctor(a.host, a.port, a.family)
}

test('ReliableUdp keys peers by host:port: one peer, not two, for a second Address object of one host:port', async (t) => {
  const a = await Node.create({ host: '127.0.0.1', port: 0, stack: [new RealReliableUdp({ forceJs: true })] } as never)
  const b = await Node.create({ host: '127.0.0.1', port: 0, stack: [new RealReliableUdp({ forceJs: true })] } as never)
  t.teardown(() => Promise.all([a.close(), b.close()]))
  const received: string[] = []
  b.on('message', (_from: unknown, data: Buffer) => received.push(data.toString()))
  const ra = a.stack.find(RealReliableUdp)!
  const rb = b.stack.find(RealReliableUdp)!
  t.is(ra.mode, 'js')
  const key = b.address.key
  const before = toAddress(key)
  await a.send(before, Buffer.from('one'))
  t.is(ra.peerCount, 1)
  // A second object for the same host:port (toAddress gives the one in use: constructed directly).
  const after = twin(before)
  t.not(after, before, 'another object')
  t.is(after.key, before.key)
  await a.send(after, Buffer.from('two'))
  t.is(ra.peerCount, 1, 'the sender keeps one peer for one host:port')
  t.is(rb.peerCount, 1, 'the receiver keeps one peer for one host:port')
  t.deepEqual(received.sort(), ['one', 'two'])
  t.is(a.stack.stats()['reliable-udp'].peers, 1)
})

test('Noise (JavaScript-driven) keys peers by host:port: its session is found for a second Address object of one host:port', async (t) => {
  const mk = () => Node.create({ host: '127.0.0.1', port: 0, identity: Identity.generate(), stack: [new RealReliableUdp({ forceJs: true }), new RealNoise({ native: false })] } as never)
  const a = await mk()
  const b = await mk()
  t.teardown(() => Promise.all([a.close(), b.close()]))
  const got: string[] = []
  b.on('message', (_from: unknown, data: Buffer) => got.push(data.toString()))
  const noise = a.stack.find(RealNoise)!
  const key = b.address.key
  const before = toAddress(key)
  await a.send(before, Buffer.from('one'))
  const id = noise.remoteId(before)
  t.truthy(id, 'a session with b')
  const after = twin(before)
  t.not(after, before, 'another object')
  t.deepEqual(noise.remoteId(after), id, 'the same session, found by host:port')
  const handshakes = a.stack.stats().noise.connected
  await a.send(after, Buffer.from('two'))
  t.is(a.stack.stats().noise.connected, handshakes, 'no new handshake for the same host:port')
  t.deepEqual(got.sort(), ['one', 'two'])
  t.is(a.stack.find(RealReliableUdp)!.peerCount, 1)
})

test('PeerTable: bounded, least recently used evicted first, numbers never reused while held', async (t) => {
  // Internal (not exported by the package): loaded from the built module.
  const mod = (await import('../dist/protocols/peer-table.js')) as any
  const PeerTable: typeof import('../ts/protocols/peer-table').PeerTable = mod.PeerTable ?? mod.default.PeerTable
  const evicted: number[] = []
  const table = new PeerTable(3, { onEvict: (id) => evicted.push(id), canEvict: (id) => id !== 1 })
  const addr = (i: number) => toAddress('127.0.0.1', 5000 + i)
  const ids = [0, 1, 2].map((i) => table.id(addr(i)))
  t.deepEqual(ids, [0, 1, 2])
  t.is(table.id(toAddress(`127.0.0.1:${5000}`)), 0, 'the same host:port, the same number')
  // Order of use now: 1, 2, 0. Peer 1 may not be evicted, so 2 goes.
  t.is(table.id(addr(3)), 3)
  t.deepEqual(evicted, [2])
  t.is(table.size, 3)
  t.is(table.address(2), undefined)
  t.is(table.address(1)!.key, addr(1).key)
  // Order: 0, 3, 1 → 0 goes next.
  t.is(table.id(addr(4)), 4)
  t.deepEqual(evicted, [2, 0])
  t.is(table.peek(addr(0)), undefined)
  t.is(table.evicted, 2)
})
