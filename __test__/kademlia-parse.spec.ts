/**
 * Kademlia's allocation-free decoder (native kadParse + reading the datagram in place) against the
 * allocating native decoder (kadDecode): the same fields for every record form (Ed25519 and name
 * identities, TCP ports, external addresses, IPv4 and IPv6), the same reasons for malformed input,
 * and PING/PONG bytes equal to the core's encoder.
 */
import test from 'ava'
import { createRequire } from 'node:module'

import { Identity, encodePeerRecord, toAddress } from '../dist/index.js'

const require = createRequire(import.meta.url)
const native = require('../native/index.js')
const { decodeKad, encodePing } = require('../dist/protocols/kademlia/message.js')

function record(i: number, opts: { v6?: boolean; tcp?: boolean; ext?: boolean; name?: boolean } = {}): Buffer {
  const id = opts.name ? Identity.fromString(`parse-${i}`) : Identity.fromSeed(Buffer.alloc(32, i + 1))
  return encodePeerRecord({
    publicIdentity: id.publicIdentity,
    address: opts.v6 ? toAddress(`2001:db8::${i.toString(16)}`, 4000 + i) : toAddress(`10.1.${i >> 8}.${i & 255}`, 4000 + i),
    tcpPort: opts.tcp ? 5000 + i : undefined,
    external: opts.ext ? toAddress(`198.51.100.${i & 255}`, 6000 + i) : undefined,
  })
}

/** Every field of record i as both decoders see it. */
function view(m: any, i: number): string {
  return JSON.stringify([m.ids.toString('hex', 32 * i, 32 * i + 32), m.identity(i).toString('hex'), m.address(i)?.key ?? null, m.external(i)?.key ?? null, m.tcpPort(i)])
}

function nativeView(m: any, i: number): string {
  const ends = m.identityEnds
  const hosts = m.hosts.split(' ')
  const ext = m.externals.split(' ')
  return JSON.stringify([
    m.ids.toString('hex', 32 * i, 32 * i + 32),
    m.identities.subarray(i === 0 ? 0 : ends[i - 1], ends[i]).toString('hex'),
    toAddress(hosts[2 * i], Number(hosts[2 * i + 1])).key,
    ext[2 * i] === '-' ? null : toAddress(ext[2 * i], Number(ext[2 * i + 1])).key,
    m.tcpPorts[i] || null,
  ])
}

test('NODES and FIND_NODE: the in-place decoder reads what the allocating decoder returns', (t) => {
  const variants = [{}, { tcp: true }, { ext: true }, { tcp: true, ext: true }, { name: true }, { name: true, tcp: true, ext: true }]
  for (const v6 of [false, true]) {
    const recs = variants.map((v, i) => record(i + 1, { ...v, v6: v6 && i % 2 === 1 }))
    for (const truncated of [false, true]) {
      const bytes = native.kadEncodeNodes(0xdeadbeef, 0x01020304, record(99, { tcp: true }), recs, truncated)
      const ours = decodeKad(bytes)
      const theirs = native.kadDecode(bytes)
      t.is(ours.kind, 4)
      t.is(ours.requestHi, 0xdeadbeef)
      t.is(ours.requestLo, 0x01020304)
      t.is(ours.truncated, truncated)
      t.is(ours.count, recs.length)
      t.is(ours.error, null)
      for (let i = 0; i <= recs.length; i++) t.is(view(ours, i), nativeView(theirs, i), `record ${i}${v6 ? ' (IPv6 in the message)' : ''}`)
    }
  }
  // FIND_NODE, padded: target and sender.
  const table = new native.KadTable(record(7, { ext: true, tcp: true }), 20, 20, 0)
  const target = Buffer.alloc(32, 0xab)
  const find = table.encodeFindNode(7, 9, target, 1200)
  const ours = decodeKad(find)
  const theirs = native.kadDecode(find)
  t.is(ours.kind, 3)
  t.deepEqual(ours.target, target)
  t.is(ours.count, 0)
  t.is(view(ours, 0), nativeView(theirs, 0))
  t.false(ours.ephemeral)
  t.false(theirs.ephemeral)
  // The ephemeral flag, read by both decoders (and not confused with the padding after it).
  const eph = table.encodeFindNode(7, 10, target, 1200, true)
  t.is(eph.length, 1200)
  t.true(decodeKad(eph).ephemeral)
  t.true(native.kadDecode(eph).ephemeral)
  t.false(decodeKad(table.encodeFindNode(7, 11, target, 0, false)).ephemeral)
  // What is kept is a copy: overwriting the datagram does not change it.
  const id = Buffer.from(ours.ids)
  const identity = ours.identity(0)
  find.fill(0)
  t.deepEqual(ours.ids, id)
  t.deepEqual(ours.target, target)
  t.true(identity.some((x: number) => x !== 0))
})

test('malformed input: kind 0 and the same reason as the allocating decoder', (t) => {
  const good = native.kadEncodeNodes(1, 2, record(1), [record(2), record(3)], false)
  const badRecord = Buffer.from(good)
  badRecord[12 + 2] ^= 1 // the sender's id no longer matches its identity
  const cases = [Buffer.alloc(0), Buffer.from([2, 1]), Buffer.from([1, 9, 0, 0, 0, 0, 0, 0, 0, 0]), good.subarray(0, good.length - 3), Buffer.concat([good, Buffer.from([0])]), badRecord, Buffer.from([1, 1, 0])]
  for (const c of cases) {
    const ours = decodeKad(c)
    t.is(ours.kind, 0)
    t.is(ours.error, native.kadDecode(c).error)
    t.truthy(ours.error)
  }
})

test('PING and PONG bytes equal the core encoder', (t) => {
  for (const [hi, lo] of [
    [0, 0],
    [1, 2],
    [0xffffffff, 0x80000000],
    [0x12345678, 0x9abcdef0],
  ]) {
    for (const pong of [false, true]) {
      t.deepEqual(encodePing(pong, hi, lo), native.kadEncodePing(pong, hi, lo))
      const m = decodeKad(encodePing(pong, hi, lo))
      t.is(m.kind, pong ? 2 : 1)
      t.is(m.requestHi, hi)
      t.is(m.requestLo, lo)
    }
  }
})

test('a message read in place keeps its fields when others are read before its handling ends', (t) => {
  const { doneWith } = require('../dist/protocols/kademlia/message.js')
  const a = native.kadEncodeNodes(5, 6, record(10, { tcp: true }), [record(11, { ext: true }), record(12)], false)
  const b = native.kadEncodeNodes(7, 8, record(20), [record(21), record(22, { tcp: true }), record(23)], true)
  const expect = (bytes: Buffer) => {
    const m = native.kadDecode(bytes)
    return Array.from({ length: m.count + 1 }, (_, i) => nativeView(m, i))
  }
  const ma = decodeKad(a)
  const mb = decodeKad(b) // overwrites the shared layout: ma keeps a copy of its words
  const mc = decodeKad(a)
  doneWith(mc) // handled: the next read copies nothing for it, and it is not read again
  decodeKad(b)
  t.deepEqual(Array.from({ length: ma.count + 1 }, (_, i) => view(ma, i)), expect(a))
  t.deepEqual(Array.from({ length: mb.count + 1 }, (_, i) => view(mb, i)), expect(b))
  t.is(ma.count, 2)
  t.is(mb.count, 3)
})
