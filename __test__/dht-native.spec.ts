/**
 * The socket's DHT GET responder on real loopback sockets: on a plain [Dht, Kademlia,
 * UdpTransport] stack the socket answers GETs itself (counted as the layer's `answered` and
 * `answered_natively`), with the same answers; hostile GETs are dropped and counted, never
 * answered beyond their size; a layer between Kademlia and the transport, or the layer's stop,
 * leaves the answering to JavaScript. Imports the BUILT package.
 */
import test from 'ava'
import dgram from 'node:dgram'
import { createRequire } from 'node:module'

import { type Address, Dht, Kademlia, Node, Protocol, TAG_DHT } from '../dist/index.js'

const require = createRequire(import.meta.url)
const native = require('../native/index.js')
const host = '127.0.0.1'
const dhtOpts = { putRate: 100_000, putBurst: 100_000, maxPerSource: 100_000 }

/** A transparent layer between Kademlia and the transport that counts the DHT datagrams it passes up. */
class Tap extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'tap'
  dht = 0
  send(to: Address, data: Uint8Array, tag: number): unknown {
    return this.lower.send(to, data, tag)
  }
  onMessage(from: Address, data: Buffer, tag: number): void {
    if (tag === TAG_DHT) this.dht++
    this.upper.onMessage(from, data, tag)
  }
}

async function network(n: number, tap = false): Promise<{ nodes: Node[]; taps: Tap[] }> {
  const taps: Tap[] = []
  const make = (bootstrap: Address[]): Promise<Node> => {
    const stack: Protocol[] = [new Dht(dhtOpts), new Kademlia({ bootstrap })]
    if (tap) {
      const t = new Tap()
      taps.push(t)
      stack.push(t)
    }
    return Node.create({ host, port: 0, stack })
  }
  const boot = await make([])
  const nodes = [boot]
  for (let i = 1; i < n; i++) nodes.push(await make([boot.address]))
  await Promise.all(nodes.map((x) => x.ready({ signal: AbortSignal.timeout(10_000) })))
  return { nodes, taps }
}

const total = (nodes: Node[], name: string): number => nodes.reduce((a, x) => a + (x.stats().dht?.[name] ?? 0), 0)

/** A raw socket that talks tag 13 to a node and collects what comes back. */
async function raw(): Promise<{ send: (to: Node, body: Buffer) => void; got: Buffer[]; close: () => void }> {
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, host, () => r()))
  const got: Buffer[] = []
  sock.on('message', (m) => got.push(m))
  return { send: (to, body) => sock.send(Buffer.concat([Buffer.from([TAG_DHT]), body]), to.address.port, host), got, close: () => sock.close() }
}

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

test('a plain [Dht, Kademlia, UdpTransport] node answers GETs in its socket, with the same answers', async (t) => {
  const { nodes } = await network(8)
  t.teardown(() => Promise.all(nodes.map((x) => x.close())))
  const value = Buffer.from('answered without JavaScript')
  const { key } = await nodes[1]!.dht.put(value)
  t.deepEqual(await nodes[6]!.dht.get(key), value)
  const topic = Buffer.alloc(32, 9)
  await nodes[2]!.join(topic).flushed()
  const met = await new Promise<Buffer>((resolve) => nodes[5]!.join(topic).on('peer', (p) => resolve(p.id!)))
  t.deepEqual(met, nodes[2]!.id)
  const natively = total(nodes, 'answered_natively')
  // Every GET was answered by a socket: the layers' own handler answered none (their `answered`
  // counts are the sockets' ones).
  t.true(natively >= 5, `${natively} GETs answered natively`)
  t.is(total(nodes, 'answered'), natively)
  t.true(total(nodes, 'replies_sent') >= natively)
  // Puts still reach the layer (stored there, in JavaScript).
  t.true(total(nodes, 'stored_immutable') >= 5)
})

test('hostile GETs to the socket: malformed ones are dropped and counted, an unvalidated one is not amplified', async (t) => {
  const { nodes } = await network(3)
  const r = await raw()
  t.teardown(async () => {
    r.close()
    await Promise.all(nodes.map((x) => x.close()))
  })
  const target = nodes[1]!
  const before = { ...target.stats().dht }
  const delta = (name: string): number => (target.stats().dht![name] ?? 0) - (before[name] ?? 0)
  // A GET whose body is garbage (version 9), one cut short, and random bytes with the GET type.
  const good = native.dhtEncodeGet(0, 7, 1, Buffer.alloc(32, 4), Buffer.alloc(16), 0, 1200) as Buffer
  const badVersion = Buffer.from(good)
  badVersion[0] = 9
  r.send(target, badVersion)
  r.send(target, good.subarray(0, 50))
  for (let i = 0; i < 50; i++) {
    const junk = Buffer.alloc(44 + ((i * 37) % 1200))
    for (let j = 0; j < junk.length; j++) junk[j] = (i * 131 + j * 29) & 255
    junk[1] = 1
    r.send(target, junk)
  }
  // An unpadded GET without a token from an address that proved nothing: no answer.
  r.send(target, native.dhtEncodeGet(0, 8, 1, Buffer.alloc(32, 4), Buffer.alloc(16), 0, 0))
  await settle(300)
  t.is(r.got.length, 0, 'nothing answered')
  t.true(delta('dropped_malformed_version') >= 1)
  t.true(delta('dropped_malformed_truncated') >= 1)
  t.is(delta('dropped_amplification'), 1)
  t.true(delta('answered_natively') >= 53, 'the socket handled them')
  // The node still answers a good (padded) GET, no larger than it.
  r.send(target, good)
  await settle(200)
  t.is(r.got.length, 1)
  t.true(r.got[0]!.length <= good.length + 1)
  t.is(native.dhtDecode(r.got[0]!.subarray(1)).kind, 2)
  // And works as a DHT node.
  const { key } = await nodes[0]!.dht.put(Buffer.from('still here'))
  t.deepEqual(await nodes[2]!.dht.get(key), Buffer.from('still here'))
})

test('a layer between Kademlia and the transport sees every GET: no native answering there', async (t) => {
  const { nodes, taps } = await network(6, true)
  t.teardown(() => Promise.all(nodes.map((x) => x.close())))
  const { key } = await nodes[1]!.dht.put(Buffer.from('through the tap'))
  t.deepEqual(await nodes[4]!.dht.get(key), Buffer.from('through the tap'))
  t.is(total(nodes, 'answered_natively'), 0)
  t.true(total(nodes, 'answered') >= 3)
  t.true(taps.reduce((a, x) => a + x.dht, 0) >= total(nodes, 'answered'))
})

test('after the DHT layer stops, its socket no longer answers GETs', async (t) => {
  const { nodes } = await network(2)
  const r = await raw()
  t.teardown(async () => {
    r.close()
    await Promise.all(nodes.map((x) => x.close()))
  })
  const target = nodes[1]!
  const get = native.dhtEncodeGet(0, 9, 1, Buffer.alloc(32, 5), Buffer.alloc(16), 0, 1200) as Buffer
  r.send(target, get)
  await settle(200)
  t.is(r.got.length, 1, 'answered while running')
  await target.stack.find(Dht)!.stop()
  r.send(target, get)
  await settle(200)
  t.is(r.got.length, 1, 'not answered once stopped')
})
