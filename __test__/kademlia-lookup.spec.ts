/**
 * The native lookup's candidates are peer records read out of NODES answers (KadLookup.onAnswer,
 * by the layout kadParse wrote): the records named become candidates at the addresses they name
 * (not our own, not findPeer's target, whose record index is returned), the table remembers who
 * named whom, a peer that was not asked adds nothing, and the closest records come back whole.
 * A layout that does not describe the datagram (garbage words) never crashes or reads outside it.
 */
import test from 'ava'
import { createRequire } from 'node:module'

import { Identity, encodePeerRecord, toAddress } from '../dist/index.js'
import { rng } from './helpers/wait.ts'

const require = createRequire(import.meta.url)
const native = require('../native/index.js')
const { decodeKad, parseLayout, peersOfRecords } = require('../dist/protocols/kademlia/message.js')

const QUERY = 0
const FINISHED = 2

function node(i: number, opts: { ext?: boolean; tcp?: boolean; v6?: boolean } = {}) {
  const seedBytes = Buffer.alloc(32, i & 255)
  if (i > 255) seedBytes[1] = i >> 8
  const identity = Identity.fromSeed(seedBytes)
  const address = opts.v6 ? toAddress(`2001:db8::${i.toString(16)}`, 4000 + i) : toAddress(`10.2.${i >> 8}.${i & 255}`, 4000 + i)
  const external = opts.ext ? toAddress(`198.51.100.${i}`, 6000 + i) : undefined
  const record = encodePeerRecord({ publicIdentity: identity.publicIdentity, address, external, tcpPort: opts.tcp ? 5000 + i : undefined })
  return { id: identity.id as Buffer, address, external, record }
}

const self = node(1)
const seed = node(2)
const table = () => {
  const t = new native.KadTable(self.record, 20, 20, 0)
  const r = t.insert(0, Identity.fromSeed(Buffer.alloc(32, 2)).publicIdentity, seed.address.raw, 0, null, null)
  if (r.result !== 0) throw new Error('seed not inserted')
  return t
}

/** The first query of a fresh lookup: its id and address. */
function firstQuery(lk: any): { id: Buffer; addr: Buffer } {
  const id = Buffer.alloc(32)
  const addr = Buffer.alloc(18)
  if (lk.next(1, id, addr) !== QUERY) throw new Error('no query')
  return { id, addr }
}

test('onAnswer: named records become candidates at their addresses; self and the target are not; tellers remembered', (t) => {
  const tab = table()
  const target = node(50)
  const others = [node(3, { ext: true }), node(4, { tcp: true }), node(5, { v6: true }), self, target]
  const lk = native.KadLookup.fromTable(tab, target.id, 1, 20, 1000, 0, target.id)
  const q = firstQuery(lk)
  t.deepEqual(q.id, seed.id)
  t.deepEqual(q.addr, seed.address.raw, 'the seed is asked at its record address')
  const answer = native.kadEncodeNodes(1, 2, seed.record, others.map((o) => o.record), false)
  const m = decodeKad(answer)
  t.is(m.kind, 4)
  const named = lk.onAnswer(tab, seed.id, m.bytes, parseLayout(), seed.address.raw, true)
  t.is(named, 5, 'the target is record 5')
  t.true(m.idIs(5, target.id))
  // The three others are asked next (alpha 1: one at a time), never self or the target.
  const asked = new Set<string>()
  for (let i = 0; i < 10; i++) {
    const id = Buffer.alloc(32)
    const addr = Buffer.alloc(18)
    const a = lk.next(1, id, addr)
    if (a !== QUERY) break
    const o = others.find((x) => x.id.equals(id))!
    t.truthy(o, 'a named node')
    t.deepEqual(addr, o.address.raw)
    asked.add(id.toString('hex'))
    const empty = decodeKad(native.kadEncodeNodes(3, 4, o.record, [], false))
    t.is(lk.onAnswer(tab, id, empty.bytes, parseLayout(), o.address.raw, true), 0)
  }
  t.deepEqual([...asked].sort(), [others[0], others[1], others[2]].map((o) => o.id.toString('hex')).sort())
  t.is(lk.next(1, Buffer.alloc(32), Buffer.alloc(18)), FINISHED)
  // Who named whom: the seed named each (and the external address of node 3); not ourselves.
  for (const o of [others[0], others[1], others[2], target]) t.deepEqual(tab.tellerOf(o.address.raw), seed.address.raw)
  t.deepEqual(tab.tellerOf(others[0].external!.raw), seed.address.raw)
  t.is(tab.tellerOf(self.address.raw), null)
  // The closest records come back whole (ids, addresses, TCP port, external address).
  const peers = peersOfRecords(lk.closestRecords())
  t.is(peers.length, 4)
  const byId = new Map(peers.map((p: any) => [p.id.toString('hex'), p]))
  t.is(byId.get(others[0].id.toString('hex')).external.key, others[0].external!.key)
  t.is(byId.get(others[1].id.toString('hex')).tcpPort, 5004)
  t.is(byId.get(others[2].id.toString('hex')).address.key, others[2].address.key)
  t.is(byId.get(seed.id.toString('hex')).address.key, seed.address.key)
})

test('onAnswer: a peer that was not asked adds nothing; a repeated answer adds nothing', (t) => {
  const tab = table()
  const lk = native.KadLookup.fromTable(tab, node(60).id, 3, 20, 1000, 0, null)
  const stranger = node(7)
  const answer = native.kadEncodeNodes(1, 2, stranger.record, [node(8).record], false)
  const m = decodeKad(answer)
  t.is(lk.onAnswer(tab, stranger.id, m.bytes, parseLayout(), stranger.address.raw, false), -1)
  const q = firstQuery(lk)
  const fromSeed = decodeKad(native.kadEncodeNodes(1, 2, seed.record, [node(8).record], false))
  t.is(lk.onAnswer(tab, q.id, fromSeed.bytes, parseLayout(), seed.address.raw, false), 0)
  t.is(lk.onAnswer(tab, q.id, fromSeed.bytes, parseLayout(), seed.address.raw, false), -1, 'answered once')
  const id = Buffer.alloc(32)
  t.is(lk.next(1, id, Buffer.alloc(18)), QUERY)
  t.deepEqual(id, node(8).id)
  t.is(lk.next(1, id, Buffer.alloc(18)), 1, 'then waits')
})

test('onAnswer with a layout that does not describe the datagram: no crash, nothing read outside it', (t) => {
  const r = rng(7)
  const rnd = (): number => Math.floor(r() * 0x1000000)
  const words = new Uint32Array(8 + 5 * 65)
  for (let trial = 0; trial < 2000; trial++) {
    const tab = table()
    const lk = native.KadLookup.fromTable(tab, node(61).id, 3, 20, 1000, 0, null)
    const q = firstQuery(lk)
    const data = Buffer.alloc(rnd() % 600)
    for (let i = 0; i < data.length; i++) data[i] = rnd() & 255
    // Sometimes real records at the offsets the garbage words name.
    if (trial % 3 === 0 && data.length > 120) node(9).record.copy(data, 40)
    for (let i = 0; i < words.length; i++) words[i] = trial % 2 ? rnd() % (data.length + 50) : rnd()
    words[4] = rnd() % 80
    const r = lk.onAnswer(tab, q.id, data, words, seed.address.raw, trial % 4 === 0)
    t.true(r >= 0 && r <= 64, `trial ${trial}: ${r}`)
    for (let i = 0; i < 30 && lk.next(1, Buffer.alloc(32), Buffer.alloc(18)) === QUERY; i++);
  }
})

test('a lookup fed many answers keeps its records bounded, and every candidate its own record', (t) => {
  const tab = table()
  const target = node(200).id
  const lk = native.KadLookup.fromTable(tab, target, 3, 2, 1000, 0, null)
  // Farthest from the target first: each answer names nodes closer than every candidate so far,
  // so the lookup goes on, and the candidates named before drop out.
  const dist = (id: Buffer) => Buffer.from(id.map((b, i) => b ^ target[i]!))
  const pool = Array.from({ length: 600 }, (_, i) => node(1000 + i)).sort((a, b) => Buffer.compare(dist(b.id), dist(a.id)))
  const byId = new Map(pool.map((p) => [p.id.toString('hex'), p]))
  byId.set(seed.id.toString('hex'), seed)
  let fed = 0
  let queries = 0
  for (let round = 0; round < 200 && fed < pool.length; round++) {
    const id = Buffer.alloc(32)
    const addr = Buffer.alloc(18)
    if (lk.next(1 + round, id, addr) !== QUERY) break
    queries++
    const asked = byId.get(id.toString('hex'))
    t.truthy(asked, 'a node the lookup was told of')
    t.deepEqual(addr, asked.address.raw, 'asked at its own record address')
    const named = pool.slice(fed, fed + 20)
    fed += named.length
    const m = decodeKad(native.kadEncodeNodes(1, 2, asked.record, named.map((p) => p.record), false))
    lk.onAnswer(tab, id, m.bytes, parseLayout(), asked.address.raw, false)
    t.true(lk.recordsKept <= 4 * 16 + 20, `records kept: ${lk.recordsKept}`)
  }
  t.true(queries > 20, `${queries} queries`)
  for (const p of peersOfRecords(lk.closestRecords())) t.is(byId.get(p.id.toString('hex'))?.address.key, p.address.key)
})

test('over IPv6 (::1): the nodes a lookup learns are asked at addresses their answers match', async (t) => {
  const { Node, Kademlia } = require('../dist/index.js')
  const nodes: any[] = []
  t.teardown(() => Promise.all(nodes.map((n) => n.close())))
  const first = await Node.create({ host: '::1', stack: [new Kademlia({ bootstrap: [] })] })
  nodes.push(first)
  for (let i = 0; i < 5; i++) {
    const n = await Node.create({ host: '::1', stack: [new Kademlia({ bootstrap: [first.address], queryTimeout: 300, joinRefreshDelay: 0 })] })
    nodes.push(n)
    await n.ready()
  }
  const last = nodes[nodes.length - 1].stack.find(Kademlia)
  const r = await last.lookup(Buffer.alloc(32, 0x5a))
  const st = last.stats()
  t.true(r.queries >= 3, `${r.queries} queries`)
  t.is(r.failures + r.timeouts, 0, 'every node asked answered')
  t.is(st.dropped_unsolicited ?? 0, 0)
  t.is(st.request_timeouts ?? 0, 0)
  t.is(last.size, 5)
})
