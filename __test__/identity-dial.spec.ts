/**
 * A dial is bound to an identity: sending to a Peer with an id (or to a node id) succeeds only over
 * a session that authenticated that id. An impostor at the peer's address — as a forged discovery
 * record puts it there — gets ERR_DECCOM_PEER_IDENTITY_MISMATCH for the sender and no application
 * byte, in clear or encrypted to it. findPeer prefers the address where the target itself answered.
 * Real sockets on loopback for the dials (JavaScript-driven Noise and Noise fused into the socket
 * under ReliableUdp), the SimulatedNetwork for discovery. Imports the BUILT package (dist/).
 */
import test from 'ava'
import { createRequire } from 'node:module'

import {
  type Address,
  Identity,
  Kademlia,
  Node,
  Noise,
  Peer,
  Protocol,
  ReliableUdp,
  SimulatedNetwork,
  TAG_KAD,
  encodePeerRecord,
} from '../dist/index.js'

const require = createRequire(import.meta.url)
const native = require('../native/index.js')

const host = '127.0.0.1'

const stacks = {
  'JavaScript-driven Noise': () => [new Noise({ handshakeTimeout: 50 })],
  'Noise fused under ReliableUdp': () => [new ReliableUdp(), new Noise({ handshakeTimeout: 50 })],
}

for (const [name, stack] of Object.entries(stacks)) {
  test.serial(`${name}: a dial to X that reaches M fails with ERR_DECCOM_PEER_IDENTITY_MISMATCH and M gets nothing`, async (t) => {
    const a = await Node.create({ host, port: 0, stack: stack() })
    const x = await Node.create({ host, port: 0, stack: stack() })
    const m = await Node.create({ host, port: 0, stack: stack() })
    t.teardown(() => Promise.all([a.close(), x.close(), m.close()]))
    if (name.includes('fused')) t.true(a.stack.find(Noise)!.native, 'Noise runs in the socket thread')
    const gotM: Buffer[] = []
    const gotX: Buffer[] = []
    m.on('message', (_f, d) => gotM.push(Buffer.from(d)))
    x.on('message', (_f, d) => gotX.push(Buffer.from(d)))

    // A forged record: X's id and identity at M's address.
    const forged = new Peer(m.address, x.id, x.identity.publicIdentity)
    const err = await t.throwsAsync(a.send(forged, Buffer.from('secret for X')), { code: 'ERR_DECCOM_PEER_IDENTITY_MISMATCH' })
    t.regex(err!.message, /nothing was sent/)
    await new Promise((r) => setTimeout(r, 100))
    t.deepEqual(gotM, [], 'the impostor got no application data')
    const mStats = m.stats()
    t.is(mStats.noise?.messages_received ?? 0, 0, 'no encrypted message reached the impostor')
    if (mStats['reliable-udp']) t.is(mStats['reliable-udp'].messages_received ?? 0, 0)

    // The real X at its own address: delivered.
    await a.send(new Peer(x.address, x.id, x.identity.publicIdentity), Buffer.from('hello X'))
    for (let i = 0; i < 50 && gotX.length === 0; i++) await new Promise((r) => setTimeout(r, 10))
    t.deepEqual(gotX.map(String), ['hello X'])

    // X's address now holds X's session: a dial to M's id there fails at once, nothing sent.
    await t.throwsAsync(a.send(new Peer(x.address, m.id), Buffer.from('for M')), { code: 'ERR_DECCOM_PEER_IDENTITY_MISMATCH' })
    await new Promise((r) => setTimeout(r, 50))
    t.deepEqual(gotX.map(String), ['hello X'])
    // An address without an id is not bound: it still reaches whoever is there.
    await a.send(m.address, Buffer.from('plain address'))
    for (let i = 0; i < 50 && gotM.length === 0; i++) await new Promise((r) => setTimeout(r, 10))
    t.deepEqual(gotM.map(String), ['plain address'])
  })
}

test('a dial with an AbortSignal rejects with ERR_DECCOM_ABORTED; sends to a node id go through discovery', async (t) => {
  const a = await Node.create({ host, port: 0, stack: [new Noise({ handshakeTimeout: 50 })] })
  t.teardown(() => a.close())
  const ac = new AbortController()
  ac.abort()
  const silent = new Peer((await import('../dist/index.js')).toAddress('127.0.0.1', 9), Buffer.alloc(32, 7))
  await t.throwsAsync(a.send(silent, Buffer.from('x'), { signal: ac.signal }), { code: 'ERR_DECCOM_ABORTED' })
  const ac2 = new AbortController()
  const p = a.send(silent, Buffer.from('x'), { signal: ac2.signal })
  setTimeout(() => ac2.abort(), 20)
  await t.throwsAsync(p, { code: 'ERR_DECCOM_ABORTED' })
  // A 32-byte node id needs a discovery layer.
  await t.throwsAsync(a.send(Buffer.alloc(32, 1), Buffer.from('x')), { code: 'ERR_DECCOM_STACK_INVALID' })
})

/**
 * Answers FIND_NODE as itself (its own record first, as it must to stay in anyone's table: under
 * Noise that record has to be the identity its session proved) and names the target at its own
 * address.
 */
class LyingKad extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override emits = ['onMessage']
  readonly name = 'lying-kad'
  self: Buffer | null = null
  lie: Buffer | null = null
  also: Buffer[] = []
  answered = 0
  onMessage(from: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== TAG_KAD) return this.upper.onMessage(from, data, tag)
    const to = from instanceof Peer ? from.address : from
    const m = native.kadDecode(data)
    if (m.kind === 1) return void this.lower.send(to, native.kadEncodePing(true, m.requestHi, m.requestLo), TAG_KAD)
    if (m.kind !== 3) return
    this.answered++
    this.lower.send(to, native.kadEncodeNodes(m.requestHi, m.requestLo, this.self!, [this.lie!, ...this.also], false), TAG_KAD)
  }
}

test('findPeer through Noise: a forged record naming X at the impostor is not the result; the real X is, verified', async (t) => {
  const s = new SimulatedNetwork({ seed: 21, defaultLink: { latency: 10 } })
  t.teardown(() => s.close())
  const seed = (i: number): Buffer => Buffer.alloc(32, i + 1)
  const kadOpts = { k: 4, queryTimeout: 500, seed: 1 }
  const honest = await s.createNodes(24, {
    stack: (i) => [new Kademlia({ ...kadOpts, seed: i + 1, bootstrap: i === 0 ? [] : ['10.0.0.1:4000'] }), new Noise()],
    identity: (i) => Identity.fromSeed(seed(i)),
  })
  await s.runFor(20_000)
  const x = honest[17]
  // The impostor's id shares 10 leading bits with X's, so that it is among the first asked for X.
  let evilId: Identity | null = null
  for (let i = 0; i < 1 << 14 && evilId === null; i++) {
    const cand = Identity.fromSeed(Buffer.from(`evil-${i}`.padEnd(32, '.')))
    if (cand.id[0] === x.id[0] && cand.id[1] >> 6 === x.id[1] >> 6) evilId = cand
  }
  t.truthy(evilId)
  const liar = new LyingKad()
  const evil = await s.createNode({ stack: [liar, new Noise()], identity: evilId! })
  liar.self = encodePeerRecord({ publicIdentity: evil.identity.publicIdentity, address: evil.address })
  liar.lie = encodePeerRecord({ publicIdentity: x.identity.publicIdentity, address: evil.address })
  // Honest records too, so that the victim reaches the honest network through it.
  liar.also = [encodePeerRecord({ publicIdentity: honest[0].identity.publicIdentity, address: honest[0].address })]
  const victim = await s.createNode({
    stack: [new Kademlia({ ...kadOpts, seed: 99, bootstrap: [evil.address] }), new Noise()],
    identity: Identity.fromSeed(Buffer.alloc(32, 0xee)),
  })
  await s.runFor(20_000)
  const vk = victim.stack.find(Kademlia)!
  t.is(vk.getPeer(x.id), undefined, 'precondition: X is not in the victim\'s table')
  t.truthy(vk.getPeer(evil.id), 'precondition: the impostor is (it answered as itself)')
  const gotEvil: Buffer[] = []
  evil.on('message', (_f, d) => gotEvil.push(Buffer.from(d)))

  const found = vk.lookup(x.id, { stopAtTarget: true })
  await s.runFor(10_000)
  const r = await found
  t.truthy(r.peer)
  t.is(r.peer!.address, x.address, 'the real address, not the impostor\'s')
  t.true(r.peer!.verified)
  t.true(liar.answered >= 2, 'the impostor was asked (and lied)')
  t.true((vk.stats().claims_unverified ?? 0) >= 1)
  t.true((vk.stats().claims_verified ?? 0) >= 1)
  const gotX: Buffer[] = []
  x.on('message', (_f, d) => gotX.push(Buffer.from(d)))
  const sent = victim.send(r.peer!, Buffer.from('for X'))
  await s.runFor(5_000)
  await sent
  t.deepEqual(gotX.map(String), ['for X'])
  t.deepEqual(gotEvil, [])
})

test('findPeer when only the impostor names X: the result is marked unverified and a send to it fails typed', async (t) => {
  const s = new SimulatedNetwork({ seed: 22, defaultLink: { latency: 10 } })
  t.teardown(() => s.close())
  const x = await s.createNode({ stack: [new Kademlia({ seed: 1 }), new Noise()], identity: Identity.fromSeed(Buffer.alloc(32, 1)) })
  const liar = new LyingKad()
  const evil = await s.createNode({ stack: [liar, new Noise()], identity: Identity.fromSeed(Buffer.alloc(32, 2)) })
  liar.self = encodePeerRecord({ publicIdentity: evil.identity.publicIdentity, address: evil.address })
  liar.lie = encodePeerRecord({ publicIdentity: x.identity.publicIdentity, address: evil.address })
  const victim = await s.createNode({
    stack: [new Kademlia({ seed: 3, queryTimeout: 300, bootstrap: [evil.address] }), new Noise({ handshakeDeadline: 3000 })],
    identity: Identity.fromSeed(Buffer.alloc(32, 3)),
  })
  await s.runFor(10_000)
  const gotEvil: Buffer[] = []
  evil.on('message', (_f, d) => gotEvil.push(Buffer.from(d)))
  const vk = victim.stack.find(Kademlia)!
  const found = vk.findPeer(x.id)
  await s.runFor(10_000)
  const p = await found
  t.is(p.address, evil.address)
  t.false(p.verified, 'only a third party vouched for it')
  const sent = victim.send(p, Buffer.from('secret for X'))
  sent.catch(() => {})
  await s.runFor(5_000)
  await t.throwsAsync(sent, { code: 'ERR_DECCOM_PEER_IDENTITY_MISMATCH' })
  t.deepEqual(gotEvil, [])
})
