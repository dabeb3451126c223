/**
 * The native Kademlia node (KadTable: deccom-core `kad::node`) driven by hand, as a hostile peer
 * would drive it: its lookups ask the nodes NODES answers name, at the addresses the records name
 * (not itself, not findPeer's target, which is asked apart), and remember who named whom; answers
 * it did not ask for, or from another address, change nothing; garbage never crashes it nor gets
 * an unvalidated address more bytes than it sent; a lookup fed endless answers keeps its records
 * bounded.
 */
import test from 'ava'
import { createRequire } from 'node:module'

import { Identity, encodePeerRecord, toAddress } from '../dist/index.js'
import { rng } from './helpers/wait.ts'

const require = createRequire(import.meta.url)
const native = require('../native/index.js')
const { fromRawAddress } = require('../dist/address.js')

function node(i: number, opts: { ext?: boolean; tcp?: boolean; v6?: boolean } = {}) {
  const seedBytes = Buffer.alloc(32, i & 255)
  if (i > 255) seedBytes[1] = i >> 8
  const identity = Identity.fromSeed(seedBytes)
  const address = opts.v6 ? toAddress(`2001:db8::${i.toString(16)}`, 4000 + i) : toAddress(`10.2.${i >> 8}.${i & 255}`, 4000 + i)
  const external = opts.ext ? toAddress(`198.51.100.${i & 255}`, 6000 + i) : undefined
  const record = encodePeerRecord({ publicIdentity: identity.publicIdentity, address, external, tcpPort: opts.tcp ? 5000 + i : undefined })
  return { id: identity.id as Buffer, identity, address, external, record }
}

const self = node(1)
const seed = node(2)
const OUT = Buffer.alloc(65_536)
const counter = (t: any, name: string): number => t.counters()[native.kadCounterNames().indexOf(name)]

/** A node whose table holds `seed` (inserted as a verified peer). */
function table() {
  const t = new native.KadTable(self.record, 20, 20, 0, { alpha: 1, seed: 7 })
  const r = t.insert(0, seed.identity.publicIdentity, seed.address.raw, 0, null, null)
  if (r.result !== 0) throw new Error('seed not inserted')
  return t
}

interface Frame {
  to: string
  toSource: boolean
  data: Buffer
}

/** The frames a call wrote into OUT (up to `end`), with their destinations. */
function frames(end: number): Frame[] {
  const out: Frame[] = []
  for (let at = 16; at < end; ) {
    const len = OUT.readUInt16LE(at)
    out.push({ to: fromRawAddress(OUT.subarray(at + 3, at + 21)).key, toSource: OUT[at + 2] === 1, data: Buffer.from(OUT.subarray(at + 21, at + 21 + len)) })
    at += 21 + len
  }
  return out
}

/** FIND_NODE fields: request id halves and the target. */
function findNode(f: Frame) {
  const m = native.kadDecode(f.data)
  if (m.kind !== 3) throw new Error(`not a FIND_NODE: ${m.kind}`)
  return m
}

test('a lookup asks the nodes an answer names at their record addresses; not itself, not the target as a query; tellers remembered', (t) => {
  const tab = table()
  const target = node(50)
  const others = [node(3, { ext: true }), node(4, { tcp: true }), self, target]
  const id = tab.startLookup(target.id, true, true, false, 1)
  t.true(id >= 0)
  const q = frames(tab.drain(OUT, 0))
  t.is(q.length, 1, 'alpha 1: one query')
  t.is(q[0]!.to, seed.address.key, 'the seed is asked at its record address')
  const m = findNode(q[0]!)
  t.deepEqual(m.target, target.id)
  const answer = native.kadEncodeNodes(m.requestHi, m.requestLo, seed.record, others.map((o) => o.record), false)
  const sent = frames(tab.onDatagram(seed.address.raw, answer, null, 20, OUT, 0))
  // The target is asked apart (a claim), the lookup pauses its other queries meanwhile.
  t.deepEqual(sent.map((f) => f.to), [target.address.key])
  t.deepEqual(findNode(sent[0]!).target, target.id)
  // Claim event, then the target answers at that address: found, verified.
  const ev = Buffer.alloc(1024)
  t.is(tab.pollEvent(ev), 4, 'a claim of the target')
  t.is(fromRawAddress(tab.tellerOf(target.address.raw)).key, seed.address.key, 'the node remembers who named the target')
  t.is(tab.tellerOf(others[0]!.address.raw), null, 'a record named but not asked: not yet')
  t.is(tab.tellerOf(self.address.raw), null, 'our own record is not a candidate')
  const c = findNode(sent[0]!)
  const end = tab.onDatagram(target.address.raw, native.kadEncodeNodes(c.requestHi, c.requestLo, target.record, [], false), null, 40, OUT, 0)
  t.is(OUT[8]! & 1, 1, 'an event waits')
  void end
  t.is(tab.pollEvent(ev), 3, 'the lookup ended')
  const o = tab.takeLookup(ev.readUInt32LE(0))
  t.true(o.verified)
  t.deepEqual(o.found.subarray(2, 34), target.id)
  t.is(counter(tab, 'claims_verified'), 1)
})

test('who named a node is remembered once the node is asked (at its address and its external one)', (t) => {
  const tab = table()
  const named = node(3, { ext: true })
  tab.startLookup(Buffer.alloc(32, 0x33), false, false, false, 1)
  const q = findNode(frames(tab.drain(OUT, 0))[0]!)
  const sent = frames(tab.onDatagram(seed.address.raw, native.kadEncodeNodes(q.requestHi, q.requestLo, seed.record, [named.record], false), null, 5, OUT, 0))
  t.deepEqual(sent.filter((f) => native.kadDecode(f.data).kind === 3).map((f) => f.to), [named.address.key])
  t.is(fromRawAddress(tab.tellerOf(named.address.raw)).key, seed.address.key)
  t.is(fromRawAddress(tab.tellerOf(named.external!.raw)).key, seed.address.key)
})

test('answers nobody asked for change nothing: an unknown request id, a right id from another address, a NODES to a PING', (t) => {
  const tab = table()
  tab.startLookup(Buffer.alloc(32, 0x77), false, false, false, 1)
  const q = findNode(frames(tab.drain(OUT, 0))[0]!)
  const named = [node(10), node(11)].map((n) => n.record)
  const bad = [
    { from: seed.address, bytes: native.kadEncodeNodes(q.requestHi, (q.requestLo + 1) >>> 0, seed.record, named, false) },
    { from: seed.address, bytes: native.kadEncodeNodes((q.requestHi ^ 1) >>> 0, q.requestLo, seed.record, named, false) },
    { from: node(9).address, bytes: native.kadEncodeNodes(q.requestHi, q.requestLo, seed.record, named, false) },
    { from: seed.address, bytes: native.kadEncodePing(true, q.requestHi, q.requestLo) },
  ]
  for (const b of bad) t.deepEqual(frames(tab.onDatagram(b.from.raw, b.bytes, null, 5, OUT, 0)), [])
  t.is(counter(tab, 'dropped_unsolicited'), 4)
  t.is(tab.tellersSize, 0)
  t.is(tab.pendingRequests, 1, 'the real query still waits')
  // The real answer still counts.
  const sent = frames(tab.onDatagram(seed.address.raw, native.kadEncodeNodes(q.requestHi, q.requestLo, seed.record, named, false), null, 6, OUT, 0))
  t.is(sent.length, 1)
})

test('garbage and mutated datagrams from anywhere: no throw, and never more bytes to an unvalidated address than it sent', (t) => {
  const tab = table()
  const r = rng(0xdecc0)
  const next = (): number => Math.floor(r() * 0x1_0000_0000)
  const valid = [
    native.kadEncodeNodes(1, 2, seed.record, [node(12).record, node(13, { ext: true }).record], false),
    new native.KadTable(node(14).record, 20, 20, 0).encodeFindNode(3, 4, Buffer.alloc(32, 9), 0),
    new native.KadTable(node(15).record, 20, 20, 0).encodeFindNode(5, 6, Buffer.alloc(32, 9), 1200),
    native.kadEncodePing(false, 7, 8),
  ]
  let answered = 0
  for (let i = 0; i < 3000; i++) {
    const base = valid[i % valid.length]!
    let data: Buffer
    if (i % 5 === 0) {
      data = Buffer.alloc(next() % 1400)
      for (let j = 0; j < data.length; j++) data[j] = next() & 255
    } else {
      data = Buffer.from(base)
      for (let k = next() % 4; k >= 0; k--) data[next() % data.length] = next() & 255
      if (i % 7 === 0) data = data.subarray(0, next() % data.length)
    }
    const from = toAddress(`10.9.${next() & 255}.${next() & 255}`, 1 + (next() % 60000))
    const out = frames(tab.onDatagram(from.raw, data, null, i * 10, OUT, 0))
    for (const f of out.filter((f) => f.toSource)) {
      answered++
      t.true(f.data.length <= data.length, `${f.data.length} bytes answered to ${data.length}`)
    }
    for (;;) if (tab.pollEvent(Buffer.alloc(1024)) === 0) break
  }
  t.true(answered > 100, `${answered} answers`)
  t.true(tab.pendingRequests <= 8192)
})

test('a lookup fed endless ever-closer answers keeps its records bounded, and asks each at its own address', (t) => {
  const tab = table()
  const target = Buffer.alloc(32, 0)
  // 1,500 nodes handed out farthest first: every answer names nodes closer than all before.
  const dist = (id: Buffer) => Buffer.from(id.map((b, i) => b ^ target[i]!))
  const pool = Array.from({ length: 1500 }, (_, i) => node(100 + i)).sort((x, y) => Buffer.compare(dist(y.id), dist(x.id)))
  const id = tab.startLookup(target, false, false, true, 1)
  const byAddr = new Map<string, ReturnType<typeof node>>([[seed.address.key, seed]])
  let pending = frames(tab.drain(OUT, 0))
  let queries = 0
  let maxKept = 0
  for (let round = 0; round < 100 && pending.length > 0 && pool.length > 0; round++) {
    const next: Frame[] = []
    for (const f of pending) {
      const asked = byAddr.get(f.to)
      // (PINGs verify or evict entries: not the lookup's.)
      if (!asked || native.kadDecode(f.data).kind !== 3) continue
      queries++
      const m = findNode(f)
      const named = pool.splice(0, 30)
      for (const p of named) byAddr.set(p.address.key, p)
      next.push(...frames(tab.onDatagram(asked.address.raw, native.kadEncodeNodes(m.requestHi, m.requestLo, asked.record, named.map((p) => p.record), false), null, 10 + round, OUT, 0)))
      maxKept = Math.max(maxKept, tab.lookupRecords(id) ?? 0)
    }
    pending = next
  }
  t.true(queries >= 40, `${queries} queries`)
  t.true(maxKept > 100 && maxKept <= 4 * 8 * 20, `at most ${maxKept} records kept`)
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
