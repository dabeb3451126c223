/**
 * Amplification toward unvalidated addresses: a raw `node:dgram` socket on 127.0.0.1 sends requests
 * to a node while claiming its own address (on loopback the "victim" is the attacker socket itself)
 * and counts the bytes that come back. Every reply path — alone and in the stack
 * [KeepAlive, Kademlia, ReliableUdp, Noise] — answers with at most as many bytes as it received
 * (1x), and a flood of fake Kademlia NODES records naming one victim yields a bounded number of
 * padded FIND_NODEs to it. Imports the BUILT package (dist/), as a user would.
 */
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import dgram from 'node:dgram'
import { createRequire } from 'node:module'


import {
  BigGossip,
  FixedPeers,
  Gossip,
  HolePuncher,
  Identity,
  KeepAlive,
  Kademlia,
  Node,
  Noise,
  type Protocol,
  ReliableUdp,
  TcpHolePuncher,
  TcpTransport,
  encodePeerRecord,
  toAddress,
} from '../dist/index.js'
import { rng, sleep, until } from './helpers/wait.ts'

const require = createRequire(import.meta.url)
const native = require('../native/index.js')
const gossipWire = require('../dist/wire/gossip.js')
const bigWire = require('../dist/wire/big-gossip.js')
const fixedWire = require('../dist/wire/fixed-peers.js')
const hpWire = require('../dist/wire/hole-punch.js')
const thpWire = require('../dist/wire/tcp-hole-punch.js')

const TAG = { udp: 1, kad: 3, noise: 4, big: 5, fixed: 6, keepAlive: 7, gossip: 8, hp: 9, thp: 11 }
/** Replies per source prefix a reply path sends in a burst (ts/protocols/reply-limit.ts). */
const REPLY_BURST = 400
const REPLY_RATE = 200
/** Kademlia's budget of queries to never-answered addresses (crates/deccom-core/src/kad/addrbook.rs). */
const UNVALIDATED_BURST_IP = 16
const UNVALIDATED_RATE = 1

const withTag = (tag: number, body: Uint8Array): Buffer => Buffer.concat([Buffer.from([tag]), body])
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0)
  return b
}

/** A raw UDP socket on 127.0.0.1 that counts what comes back. */
class Attacker {
  readonly sock = dgram.createSocket('udp4')
  readonly got: Buffer[] = []
  sent = 0
  onMessage: ((m: Buffer, from: dgram.RemoteInfo) => void) | null = null
  /**
   * When set, only datagrams from this port count (`measure` sets it to the node under test):
   * tests of this file run concurrently, and a node of another test may still send to a port this
   * socket reuses.
   */
  only: number | null = null
  strays = 0

  static async open(t: ExecutionContext): Promise<Attacker> {
    const a = new Attacker()
    a.sock.on('message', (m, r) => {
      if (a.only !== null && r.port !== a.only) {
        a.strays++
        return
      }
      a.got.push(m)
      a.onMessage?.(m, r)
    })
    await new Promise<void>((resolve) => a.sock.bind(0, '127.0.0.1', resolve))
    t.teardown(() => a.sock.close())
    return a
  }

  get port(): number {
    return this.sock.address().port
  }

  get received(): number {
    return this.got.reduce((n, b) => n + b.length, 0)
  }

  send(to: Node, d: Buffer): void {
    this.sent += d.length
    this.sock.send(d, to.address.port, '127.0.0.1')
  }

  reset(): void {
    this.got.length = 0
    this.sent = 0
  }
}

async function open(t: ExecutionContext, stack: Protocol[], tcp = false): Promise<Node> {
  const s = tcp ? [...stack, new TcpTransport({ host: '127.0.0.1' })] : stack
  // A large receive buffer: a flood reaches the node whole even when the machine is busy.
  const node = await Node.create({ identity: Identity.generate(), host: '127.0.0.1', recvBufferSize: 4 << 20, stack: s })
  t.teardown(() => node.close())
  return node
}

/**
 * Sends `requests` (in bursts of 50, 2 ms apart, so the node's socket buffer keeps up), waits until
 * `expect` datagrams came back (at most 5 s: a loaded machine is slow), then `wait` ms more for
 * anything else (retransmissions); returns bytes back / bytes sent.
 */
async function measure(t: ExecutionContext, name: string, a: Attacker, node: Node, requests: Buffer[], wait = 300, expect = 0): Promise<number> {
  a.reset()
  a.only = node.address.port
  for (let i = 0; i < requests.length; i++) {
    a.send(node, requests[i]!)
    if (i % 50 === 49) await sleep(2)
  }
  for (const end = Date.now() + 5000; a.got.length < expect && Date.now() < end; ) await sleep(10)
  await sleep(wait)
  const f = a.received / a.sent
  t.log(`${name}: ${a.sent} B sent, ${a.received} B back (${a.got.length} datagrams): ${f.toFixed(2)}x`)
  t.true(a.received <= a.sent, `${name}: ${a.received} B back for ${a.sent} B`)
  return f
}

// ---- Kademlia messages ------------------------------------------------------------------------

const kadPing = (lo: number): Buffer => withTag(TAG.kad, native.kadEncodePing(false, 0x01020304, lo))

function record(id: Identity, host: string, port: number): Buffer {
  return encodePeerRecord({ publicIdentity: id.publicIdentity, address: toAddress(host, port) })
}

function findNode(lo: number, sender: Buffer, padTo = 0): Buffer {
  const head = Buffer.from([1, 3])
  const body = Buffer.concat([head, u32(0x0a0b0c0d), u32(lo), Buffer.alloc(32, 0xab), sender])
  const padded = padTo > body.length ? Buffer.concat([body, Buffer.alloc(padTo - body.length)]) : body
  return withTag(TAG.kad, padded)
}

// ---- Noise messages ---------------------------------------------------------------------------

/** An XX initiation: header, a 32-byte "ephemeral key", `padding` zero payload bytes. */
function xxInit(index: number, padding: number): Buffer {
  const e = Buffer.alloc(32)
  e.writeUInt32BE(index, 0)
  e[31] = 0x42
  return withTag(TAG.noise, Buffer.concat([Buffer.from([0x10, 1]), u32(index), Buffer.from([0, 0]), e, Buffer.alloc(padding)]))
}

// ---- single layers ----------------------------------------------------------------------------

test('UDP transport ping: PONG = PING, and one prefix gets a bounded number of PONGs', async (t) => {
  const node = await open(t, [])
  const a = await Attacker.open(t)
  const ping = (id: number): Buffer => withTag(TAG.udp, Buffer.concat([Buffer.from([1]), u32(id)]))
  t.is(await measure(t, 'udp ping', a, node, [ping(1)], 300, 1), 1)
  const t0 = Date.now()
  await measure(t, 'udp ping flood', a, node, Array.from({ length: 1000 }, (_, i) => ping(i)))
  const elapsed = (Date.now() - t0) / 1000
  t.true(a.got.length <= REPLY_BURST + REPLY_RATE * elapsed, `${a.got.length} pongs`)
  t.true((node.stats().udp?.dropped_reply_rate ?? 0) > 0, 'the flood went over the rate')
})

test('KeepAlive: PONG = PING to an unregistered source, rate-limited per prefix', async (t) => {
  const node = await open(t, [new KeepAlive()])
  const a = await Attacker.open(t)
  const ping = (id: number): Buffer => withTag(TAG.keepAlive, Buffer.concat([Buffer.from([1]), u32(id)]))
  t.is(await measure(t, 'keep-alive ping', a, node, [ping(1)], 300, 1), 1)
  const t0 = Date.now()
  await measure(t, 'keep-alive ping flood', a, node, Array.from({ length: 1000 }, (_, i) => ping(i)))
  const elapsed = (Date.now() - t0) / 1000
  t.true(a.got.length <= REPLY_BURST + REPLY_RATE * elapsed, `${a.got.length} pongs`)
  t.true((node.stats()['keep-alive']?.dropped_reply_rate ?? 0) > 0, 'the flood went over the rate')
})

test('Kademlia: PONG = PING; NODES and the verification PING together stay within the FIND_NODE', async (t) => {
  const node = await open(t, [new Kademlia()])
  const a = await Attacker.open(t)
  t.is(await measure(t, 'kademlia ping', a, node, [kadPing(1)], 300, 1), 1)
  const me = record(Identity.generate(), '127.0.0.1', a.port)
  await measure(t, 'kademlia find_node (unpadded)', a, node, [findNode(2, me)], 500)
  await measure(t, 'kademlia find_node (padded 1200)', a, node, [findNode(3, me, 1200)], 500)
  // A flood of PINGs from one prefix: bounded answers.
  const t0 = Date.now()
  await measure(t, 'kademlia ping flood', a, node, Array.from({ length: 1000 }, (_, i) => kadPing(100 + i)))
  const elapsed = (Date.now() - t0) / 1000
  t.true(a.got.length <= REPLY_BURST + REPLY_RATE * elapsed, `${a.got.length} pongs`)
  t.true((node.stats().kademlia?.dropped_reply_rate ?? 0) > 0, 'the flood went over the rate')
})

test('Kademlia: truncated and garbage PINGs and FIND_NODEs from an unverified address draw nothing and are counted', async (t) => {
  const node = await open(t, [new Kademlia()])
  const a = await Attacker.open(t)
  const me = record(Identity.generate(), '127.0.0.1', a.port)
  const ping = kadPing(7)
  const find = findNode(8, me)
  const corrupt = Buffer.from(find)
  corrupt[1 + 10 + 32 + 2] ^= 1 // the record's id no longer matches its identity
  const own = findNode(9, record(node.identity, '127.0.0.1', a.port))
  const bad = [
    ping.subarray(0, 5),
    Buffer.concat([ping, Buffer.from([0])]), // a PING has no trailing bytes
    Buffer.from([TAG.kad, 2, 1, 0, 0, 0, 0, 0, 0, 0, 7]), // version 2
    Buffer.from([TAG.kad, 1, 9, 0, 0, 0, 0, 0, 0, 0, 7]), // no such type
    find.subarray(0, 11),
    find.subarray(0, 1 + 10 + 20), // inside the target
    find.subarray(0, 1 + 10 + 32 + 40), // inside the record
    find.subarray(0, find.length - 1),
    corrupt,
    ...Array.from({ length: 40 }, (_, i) => withTag(TAG.kad, randomBytes(1 + i * 7))),
  ]
  const before = node.stats().kademlia ?? {}
  const n = (k: string, st: Record<string, number> = node.stats().kademlia ?? {}): number => st[k] ?? 0
  await measure(t, 'kademlia garbage', a, node, bad, 500)
  t.is(a.got.length, 0, 'nothing answers a malformed request')
  // Every one is dropped as malformed (no random length here is a PING's 10 bytes).
  t.is(n('dropped_malformed') - n('dropped_malformed', before), bad.length)
  t.is(n('pings_answered'), n('pings_answered', before))
  t.is(n('find_node_received'), n('find_node_received', before))
  // Our own id in the record: dropped, counted, not answered.
  await measure(t, 'kademlia find_node naming our id', a, node, [own], 300)
  t.is(a.got.length, 0)
  t.is(n('dropped_self') - n('dropped_self', before), 1)
  // The well-formed ones are answered, within their size.
  await measure(t, 'kademlia ping after garbage', a, node, [ping], 300, 1)
  t.is(a.got.length, 1)
  await measure(t, 'kademlia find_node after garbage', a, node, [find], 300, 1)
  t.is(n('nodes_sent_unverified') - n('nodes_sent_unverified', before), 1)
})

test('KadTable.answer: on any bytes, never more than a PING or FIND_NODE from an unvalidated address sent; nothing for the rest', (t) => {
  const own = record(Identity.generate(), '127.0.0.1', 4000)
  const table = new native.KadTable(own, 20, 20, 0)
  for (let i = 0; i < 30; i++) {
    const id = Identity.generate()
    table.insert(i, id.publicIdentity, toAddress('10.0.0.1', 5000 + i).raw, 0, null, null)
  }
  const from = toAddress('192.0.2.1', 9).raw
  const out = Buffer.alloc(65_536)
  const valid = [kadPing(1).subarray(1), findNode(2, record(Identity.generate(), '192.0.2.1', 9)).subarray(1), findNode(3, record(Identity.generate(), '192.0.2.1', 9), 1200).subarray(1)]
  const r = rng(0x2545f491)
  const rnd = (n: number): number => Math.floor(r() * n)
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => rnd(256)))
  const codes = new Map<number, number>()
  for (let i = 0; i < 3000; i++) {
    const base = valid[rnd(valid.length)]!
    let data: Buffer
    switch (rnd(4)) {
      case 0: // cut
        data = base.subarray(0, rnd(base.length + 1))
        break
      case 1: {
        // a few bytes flipped
        data = Buffer.from(base)
        for (let j = rnd(4); j >= 0; j--) data[rnd(data.length)] ^= 1 + rnd(255)
        break
      }
      case 2: // random bytes behind a PING or FIND_NODE header
        data = Buffer.concat([Buffer.from([1, rnd(2) === 0 ? 1 : 3]), bytes(rnd(200))])
        break
      default:
        data = bytes(rnd(120))
    }
    // 10 ms apart: the prefix's reply rate refills two answers per step.
    const r = table.answer(from, data, false, false, i * 10, out)
    codes.set(r < 0 ? r : r & 1, (codes.get(r < 0 ? r : r & 1) ?? 0) + 1)
    t.true(r >= -3, `code ${r}`)
    if (r >= 0) {
      t.is(r & 1, 0, 'not validated')
      t.true(r >>> 1 <= data.length, `${r >>> 1} bytes answer ${data.length}`)
    }
  }
  t.log([...codes].map(([c, k]) => `${c}: ${k}`).join(', '))
  t.true((codes.get(-3) ?? 0) > 0 && (codes.get(0) ?? 0) > 0, 'both malformed and answered inputs were seen')
  // A non-address is an error, not a crash.
  t.throws(() => table.answer(Buffer.alloc(3), valid[0]!, false, false, 0, out))
  // Too small an output: an error, nothing sent.
  t.throws(() => table.answer(from, valid[0]!, false, false, 1e9, Buffer.alloc(4)))
})

test('Noise XX: an unpadded initiation gets only a shorter cookie reply; a padded one a response no longer than it', async (t) => {
  const node = await open(t, [new Noise({ native: false, handshakeTimeout: 20 })])
  const a = await Attacker.open(t)
  await measure(t, 'noise XX unpadded', a, node, [xxInit(1, 0)], 300, 1)
  t.true(a.got.length === 1 && a.got[0]![1] === 0x13, 'a cookie reply')
  await measure(t, 'noise XX padded', a, node, [xxInit(2, 196)], 300, 1)
  t.true(a.got.length === 1 && a.got[0]![1] === 0x11, 'a response')
  t.is(node.stats().noise.unpadded_initiations, 1)
})

test('Noise IK: the response is shorter than the initiation', async (t) => {
  const noise = new Noise({ native: false, handshakeTimeout: 20 })
  const node = await open(t, [noise])
  const a = await Attacker.open(t)
  const ep = new native.NoiseEndpoint(Identity.generate().native, {}, 0)
  ep.connect(0, 1, noise.localStaticKey)
  const tx = ep.pollTransmit()
  t.is(tx?.lens.length, 1, 'an IK initiation')
  await measure(t, 'noise IK', a, node, [withTag(TAG.noise, Buffer.from(tx.data))], 300, 1)
  t.true(a.got.length === 1 && a.got[0]![1] === 0x11, 'a response')
})

test('Noise: transport data for an unknown session starts a handshake only when at least as long, never retransmitted', async (t) => {
  const node = await open(t, [new Noise({ native: false, handshakeTimeout: 20 })])
  const a = await Attacker.open(t)
  const transport = (len: number): Buffer => withTag(TAG.noise, Buffer.concat([Buffer.from([2]), u32(0x55667788), Buffer.alloc(8), Buffer.alloc(len - 13, 0xcd)]))
  await measure(t, 'noise unknown session (29 B keepalive)', a, node, [transport(29)], 1500)
  t.is(a.got.length, 0)
  await measure(t, 'noise unknown session (300 B)', a, node, [transport(300)], 1500, 1)
  t.is(a.got.length, 1, 'one initiation, no retransmissions')
  const other = await open(t, [new Noise({ native: false, handshakeTimeout: 20 })])
  await measure(t, 'noise unknown session (60 B)', a, other, [transport(60)], 1500, 1)
  t.is(a.got.length, 1, 'one unpadded initiation, no retransmissions')
  t.is(a.got[0]!.length, 41)
})

test('Gossip, BigGossip, FixedPeers: answers never exceed the request', async (t) => {
  const a = await Attacker.open(t)
  const me = record(Identity.generate(), '127.0.0.1', a.port)
  const g = await open(t, [new Gossip()])
  await measure(t, 'gossip ping', a, g, [withTag(TAG.gossip, gossipWire.encodeGossipPing('PING', 7))])
  await measure(t, 'gossip exchange (unpadded)', a, g, [withTag(TAG.gossip, gossipWire.encodeExchange([me], 0))])
  const g2 = await open(t, [new Gossip()])
  await measure(t, 'gossip exchange (padded)', a, g2, [withTag(TAG.gossip, gossipWire.encodeExchange([me], 1200))])
  // BigGossip: the SAMPLE and the PULL that validates the source together stay within the PULL,
  // and a source that never answers is pulled no more (10 rounds of 100 ms).
  const b = await open(t, [new BigGossip({ interval: 100 })])
  const pull = withTag(TAG.big, bigWire.encodePull([me], 1200))
  await measure(t, 'big-gossip pull (SAMPLE + validation PULL, over 10 rounds)', a, b, [pull], 1000, 1)
  const samples = a.got.filter((d) => d[0] === TAG.big && d[1] === 2)
  const pulls = a.got.filter((d) => d[0] === TAG.big && d[1] === 1)
  t.is(samples.length, 1)
  t.true(pulls.length <= 1, 'a source that never answers is pulled once, then forgotten')
  t.true((b.stats()['big-gossip']?.peers_forgotten ?? 0) >= 1)
  const hello = withTag(TAG.fixed, fixedWire.encodeFixedPeers({ type: 'HELLO', record: me }))
  // A source that is not in the configured list gets nothing.
  const f1 = await open(t, [new FixedPeers({ peers: ['127.0.0.1:9'] })])
  await measure(t, 'fixed-peers hello from an unlisted source', a, f1, [hello])
  t.is(a.got.filter((d) => d[0] === TAG.fixed).length, 0)
  // A listed peer's HELLO gets a HELLO_ACK no longer than it (the node's own HELLOs to the peers it
  // is configured with are its own traffic, not answers, and are left out).
  const f2 = await open(t, [new FixedPeers({ peers: [`127.0.0.1:${a.port}`] })])
  await sleep(100)
  a.reset()
  a.only = f2.address.port
  a.send(f2, hello)
  const ackCount = (): number => a.got.filter((d) => d[0] === TAG.fixed && d[1] === 2).length
  for (const end = Date.now() + 5000; ackCount() < 1 && Date.now() < end; ) await sleep(10)
  await sleep(300)
  const acks = a.got.filter((d) => d[0] === TAG.fixed && d[1] === 2)
  t.log(`fixed-peers hello from a listed peer: ${hello.length} B sent, HELLO_ACK ${acks.map((d) => d.length).join(', ')} B`)
  t.is(acks.length, 1)
  t.true(acks[0]!.length <= hello.length)
})

test('HolePuncher and TcpHolePuncher: answers never exceed the request', async (t) => {
  const a = await Attacker.open(t)
  const hp = await open(t, [new HolePuncher()])
  await measure(t, 'hole-puncher probe', a, hp, [withTag(TAG.hp, hpWire.encodeHolePunch({ type: 'PROBE', nonce: 1, padding: 19 }))])
  await measure(t, 'hole-puncher intro_req', a, hp, [withTag(TAG.hp, hpWire.encodeHolePunch({ type: 'INTRO_REQ', nonce: 2, token: Buffer.alloc(16), addr: toAddress('127.0.0.1', 9) }))])
  const thp = await open(t, [new TcpHolePuncher(), new HolePuncher()], true)
  const req = thpWire.encodeTcpHolePunch({ type: 'REQ', nonce: 3, token: Buffer.alloc(16), addr: toAddress('127.0.0.1', 9), punchPort: 9, listenPort: 9, id: Buffer.alloc(32, 1), padding: 40 })
  await measure(t, 'tcp-hole-puncher req', a, thp, [withTag(TAG.thp, req)])
})

test('HolePuncher: a spoofed INTRO_REQ gets a challenge no larger than itself and makes nobody punch', async (t) => {
  const intro = await open(t, [new HolePuncher()])
  const target = await open(t, [new HolePuncher({ rendezvous: [intro.address] })])
  const victim = await Attacker.open(t) // the address the attacker claims; it runs no deccom
  const hs = (n: Node): Record<string, number> => n.stats()['hole-puncher'] ?? {}
  await until(() => (hs(target).observed_received ?? 0) > 0) // the introducer has heard from the target
  // The attacker sends INTRO_REQs in the victim's name (emulated: through the victim's socket),
  // without a token and with guessed ones.
  const reqs = [Buffer.alloc(16), ...Array.from({ length: 8 }, () => randomBytes(16))].map((token, i) =>
    withTag(TAG.hp, hpWire.encodeHolePunch({ type: 'INTRO_REQ', nonce: 100 + i, token, addr: target.address })),
  )
  const factor = await measure(t, 'hole-puncher spoofed intro_req', victim, intro, reqs, 300, reqs.length)
  t.true(factor <= 1, `factor ${factor}`)
  t.true(victim.got.every((m) => m.length === 22 && m[1] === 9), 'INTRO_CHALLENGEs only (tag + 21 bytes)')
  t.is(hs(intro).introductions_made ?? 0, 0)
  t.is(hs(intro).dropped_bad_token ?? 0, 8)
  await sleep(200)
  t.is(hs(target).sessions ?? 0, 0, 'the target was introduced to nobody and punches nothing')
  // Echoing the token proves the address: now the introduction is made.
  const challenge = hpWire.decodeHolePunch(victim.got[0]!.subarray(1))
  victim.reset()
  victim.send(intro, withTag(TAG.hp, hpWire.encodeHolePunch({ type: 'INTRO_REQ', nonce: 100, token: challenge.token, addr: target.address })))
  t.true(await until(() => (hs(intro).introductions_made ?? 0) === 1), 'a proven requester is introduced')
})

test('HolePuncher: an INTRO (or INTRO_NAT) from an introducer the node did not choose makes it punch nobody', async (t) => {
  const node = await open(t, [new HolePuncher({ rendezvous: [] })])
  const attacker = await Attacker.open(t)
  const victim = await Attacker.open(t) // the third party the introduction names
  const hs = (n: Node): Record<string, number> => n.stats()['hole-puncher'] ?? {}
  const you = node.address
  attacker.send(node, withTag(TAG.hp, hpWire.encodeHolePunch({ type: 'INTRO', nonce: 7, peer: toAddress('127.0.0.1', victim.port), you })))
  attacker.send(node, withTag(TAG.hp, hpWire.encodeHolePunch({ type: 'INTRO_NAT', nonce: 8, mapping: 'dependent', peer: toAddress('127.0.0.1', victim.port), you })))
  t.true(await until(() => (hs(node).dropped_intro_unknown_introducer ?? 0) === 2))
  await sleep(300)
  t.is(victim.got.length, 0, 'no PUNCH and no birthday probe reached the named peer')
  t.is(hs(node).sessions ?? 0, 0)
  t.is(hs(node).birthday_probes_sent ?? 0, 0)
})

test('TcpHolePuncher: a spoofed REQ gets a challenge no larger than itself; no OFFER, GO or connection toward the claimed address', async (t) => {
  const intro = await open(t, [new TcpHolePuncher(), new HolePuncher()], true)
  const target = await open(t, [new TcpHolePuncher(), new HolePuncher()], true)
  const victim = await Attacker.open(t)
  const ts = (n: Node): Record<string, number> => n.stats()['tcp-hole-puncher'] ?? {}
  const req = (i: number, token: Buffer): Buffer =>
    withTag(TAG.thp, thpWire.encodeTcpHolePunch({ type: 'REQ', nonce: 200 + i, token, addr: target.address, punchPort: 9, listenPort: 9, id: Buffer.alloc(32, 1), padding: 40 }))
  const reqs = [Buffer.alloc(16), ...Array.from({ length: 8 }, () => randomBytes(16))].map((tok, i) => req(i, tok))
  const factor = await measure(t, 'tcp-hole-puncher spoofed req', victim, intro, reqs, 300, reqs.length)
  t.true(factor <= 1, `factor ${factor}`)
  t.true(victim.got.every((m) => m.length === 22 && m[1] === 7), 'CHALLENGEs only (tag + 21 bytes)')
  t.is(ts(intro).offers_sent ?? 0, 0, 'the target was offered nothing')
  t.is(ts(intro).dropped_bad_token ?? 0, 8)
  t.is(ts(target).sessions ?? 0, 0)
  const challenge = thpWire.decodeTcpHolePunch(victim.got[0]!.subarray(1))
  victim.send(intro, req(0, challenge.token))
  t.true(await until(() => (ts(intro).offers_sent ?? 0) === 1), 'a proven requester is served')
})

test('[KeepAlive, Kademlia, ReliableUdp] without Noise: a spoofed KeepAlive or Kademlia PING draws nothing reliable (at most 1x)', async (t) => {
  for (const native of [true, false]) {
    const node = await open(t, [new KeepAlive(), new Kademlia(), new ReliableUdp({ forceJs: !native })])
    const a = await Attacker.open(t)
    const mode = native ? 'native' : 'js'
    await measure(t, `reliable stack (${mode}) keep-alive ping`, a, node, [withTag(TAG.keepAlive, Buffer.concat([Buffer.from([1]), u32(1)]))], 1500)
    await measure(t, `reliable stack (${mode}) kademlia ping`, a, node, [kadPing(1)], 1500)
    t.true((node.stats()['reliable-udp']?.dropped_unreliable ?? 0) >= 2)
  }
})

// ---- the stack --------------------------------------------------------------------------------

test('[KeepAlive, Kademlia, ReliableUdp, Noise]: KeepAlive PING, Kademlia PING and XX initiation draw at most 1x', async (t) => {
  for (const native of [true, false]) {
    const node = await open(t, [new KeepAlive(), new Kademlia(), new ReliableUdp({ forceJs: !native }), new Noise({ native, handshakeTimeout: 20 })])
    const a = await Attacker.open(t)
    const mode = native ? 'native' : 'js'
    await measure(t, `stack (${mode}) keep-alive ping`, a, node, [withTag(TAG.keepAlive, Buffer.concat([Buffer.from([1]), u32(1)]))], 1500)
    await measure(t, `stack (${mode}) kademlia ping`, a, node, [kadPing(1)], 1500)
    await measure(t, `stack (${mode}) noise XX unpadded`, a, node, [xxInit(3, 0)], 1500)
    await measure(t, `stack (${mode}) noise XX padded`, a, node, [xxInit(4, 196)], 1500)
  }
})

// ---- fake NODES -------------------------------------------------------------------------------

test('fake NODES records naming one victim yield a bounded number of FIND_NODEs to it', async (t) => {
  const attacker = await Attacker.open(t)
  const victim = await Attacker.open(t)
  const attackerId = Identity.generate()
  const own = record(attackerId, '127.0.0.1', attacker.port)
  // 64 fake peers, every one at the victim's address (different ports of the victim's IP too).
  const fakes = Array.from({ length: 64 }, (_, i) => record(Identity.generate(), '127.0.0.1', i < 32 ? victim.port : victim.port + 1 + i))
  attacker.onMessage = (m, r) => {
    if (m[0] !== TAG.kad) return
    const q = native.kadDecode(m.subarray(1))
    if (q.kind !== 3) return
    const nodes = native.kadEncodeNodes(q.requestHi, q.requestLo, own, fakes, false)
    attacker.sock.send(withTag(TAG.kad, nodes), r.port, r.address)
  }
  const node = await open(t, [new Kademlia({ bootstrap: [`127.0.0.1:${attacker.port}`], queryTimeout: 50 })])
  const t0 = Date.now()
  await sleep(3000)
  const elapsed = (Date.now() - t0) / 1000
  const queries = victim.got.filter((d) => d[0] === TAG.kad && d[2] === 3)
  const bytes = queries.reduce((n, d) => n + d.length, 0)
  t.log(`fake NODES: ${queries.length} FIND_NODEs (${bytes} B) reached the victim in ${elapsed.toFixed(1)} s`)
  t.true(queries.length <= UNVALIDATED_BURST_IP + UNVALIDATED_RATE * elapsed + 1, `${queries.length} FIND_NODEs`)
  t.true(attacker.got.length > 0, 'the node did query the attacker')
  t.true((node.stats().kademlia?.dropped_unvalidated_budget ?? 0) > 0)
})

// ---- the prefix limiter -----------------------------------------------------------------------

test('reply limiter: prefixes are IPv4 /24 and IPv6 /48; buckets refill at their rate; the table is bounded', (t) => {
  const { prefixOf, KeyedBuckets, ReplyLimiter } = require('../dist/protocols/reply-limit.js')
  t.is(prefixOf(toAddress('192.0.2.77', 1)), '192.0.2.0/24')
  t.is(prefixOf(toAddress('::ffff:192.0.2.77', 1)), '192.0.2.0/24', 'IPv4-mapped IPv6 counts as IPv4')
  t.is(prefixOf(toAddress('2001:db8:1:2::5', 1)), '2001:db8:1::/48')
  t.is(prefixOf(toAddress('2001:db8::1', 1)), '2001:db8:0::/48')
  t.is(prefixOf(toAddress('2001:0db8:0000:ffff::1', 1)), prefixOf(toAddress('2001:db8:0:1234::9', 1)))
  const b = new KeyedBuckets(10, 5, 3)
  let ok = 0
  for (let i = 0; i < 20; i++) ok += b.take('x', 0) ? 1 : 0
  t.is(ok, 5, 'the burst')
  t.true(b.take('x', 100), 'one token after 100 ms at 10/s')
  t.false(b.take('x', 100))
  b.refund('x')
  t.true(b.take('x', 100), 'a refunded token')
  const full = new KeyedBuckets(10, 2, 3)
  t.true(full.take('y', 0))
  t.is(full.size, 1)
  full.refund('y')
  t.is(full.size, 0, 'a key refunded to its full burst takes no memory')
  t.true(full.take('y', 0) && full.take('y', 0) && !full.take('y', 0), 'and has its burst again')
  for (const k of ['a', 'b', 'c', 'd']) b.take(k, 0)
  t.is(b.size, 3, 'least recently used keys are forgotten')
  const r = new ReplyLimiter(1, 2)
  const a = toAddress('198.51.100.1', 1)
  const same = toAddress('198.51.100.200', 9)
  t.true(r.allow(a, 0))
  t.true(r.allow(same, 0))
  t.false(r.allow(a, 0), 'the same /24 shares the budget')
  t.true(r.allow(toAddress('198.51.101.1', 1), 0), 'another /24 has its own')
})

test('keyed buckets forget the least recently used key: the same tokens as a reference that re-inserts each used key', (t) => {
  const { KeyedBuckets } = require('../dist/protocols/reply-limit.js')
  // The reference: a Map whose order is recency (a used key is deleted and set again).
  class Reference {
    readonly m = new Map<string, { tokens: number; at: number }>()
    constructor(
      readonly rate: number,
      readonly burst: number,
      readonly maxKeys: number,
    ) {}
    take(key: string, now: number): boolean {
      let b = this.m.get(key)
      if (b) {
        this.m.delete(key)
        b.tokens = Math.min(this.burst, b.tokens + (Math.max(0, now - b.at) * this.rate) / 1000)
        b.at = now
      } else {
        if (this.m.size >= this.maxKeys) this.m.delete(this.m.keys().next().value as string)
        b = { tokens: this.burst, at: now }
      }
      this.m.set(key, b)
      if (b.tokens < 1) return false
      b.tokens -= 1
      return true
    }
  }
  const b = new KeyedBuckets(5, 3, 8)
  const ref = new Reference(5, 3, 8)
  let x = 12345
  let mismatches = 0
  let denied = 0
  for (let step = 0; step < 20_000; step++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    // 12 keys over a table of 8: keys are forgotten and come back with a full burst.
    const key = `k${(x >>> 8) % 12}`
    const now = step * 20
    const got = b.take(key, now)
    if (got !== ref.take(key, now)) mismatches++
    if (!got) denied++
    if (step % 97 === 0) {
      const k = `k${(x >>> 16) % 12}`
      b.refund(k)
      const r = ref.m.get(k)
      if (r) r.tokens = Math.min(3, r.tokens + 1)
      // A key back at its full burst is forgotten (a new key starts with the same tokens).
      if (r && r.tokens >= 3) ref.m.delete(k)
    }
  }
  t.is(mismatches, 0)
  t.true(denied > 100, `some takes are refused (${denied})`)
  t.is(b.size, ref.m.size)
  t.true(b.size <= 8)
})

test('RecencyMap: the entries and order of a Map where each use deletes and sets the key again; bounded', (t) => {
  const { RecencyMap } = require('../dist/protocols/reply-limit.js')
  const m = new RecencyMap(8)
  const ref = new Map<string, number>()
  let x = 777
  for (let step = 0; step < 20_000; step++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    const key = `k${(x >>> 8) % 13}`
    // As Kademlia's toldBy: a use moves the key to the newest end with a new value.
    const e = m.use(key)
    if (e) e.v = step
    else m.add({ key, v: step, prev: null, next: null })
    ref.delete(key)
    if (ref.size >= 8) ref.delete(ref.keys().next().value as string)
    ref.set(key, step)
    if (step % 89 === 0) t.is(m.peek(`k${(x >>> 16) % 13}`)?.v, ref.get(`k${(x >>> 16) % 13}`))
  }
  t.is(m.size, ref.size)
  t.true(m.size <= 8)
  for (const [k, v] of ref) t.is(m.peek(k)?.v, v)
})
