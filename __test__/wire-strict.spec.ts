/**
 * Every TypeScript-implemented format, end to end through the running layer: a valid datagram with
 * one byte appended is dropped and counted (`dropped_malformed`) and changes nothing else — no
 * answer, no state, no other counter — while the same datagram without that byte is acted upon
 * (docs/wire.md, "Versioning and unknown values"). Real UDP sockets on loopback; a bare node sends
 * the crafted datagrams through its UdpTransport. Imports the BUILT package (dist/).
 */
import test, { type ExecutionContext } from 'ava'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import {
  BigGossip, FixedPeers, Gossip, HolePuncher, KeepAlive, Node, Relay, TcpHolePuncher, TcpTransport, encodePeerRecord, type Protocol,
} from '../dist/index.js' // prettier-ignore
import { n, sleep, until } from './helpers/wait.ts'

const requireRoot = createRequire(join(dirname(fileURLToPath(import.meta.url)), '..', 'package.json'))
type Encode = (m: object) => Buffer
const wire = (m: string): Record<string, Encode> => requireRoot(`./dist/wire/${m}.js`)
const ping = wire('ping')
const keepAlive = wire('keep-alive')
const gossip = wire('gossip')
const big = wire('big-gossip')
const fixed = wire('fixed-peers')
const hp = wire('hole-punch')
const relay = wire('relay')
const thp = wire('tcp-hole-punch')



interface Setup {
  node: Node
  raw: Node
  /** Sends `body` with layer tag `tag` from the bare node to `node`. */
  send(tag: number, body: Buffer): void
  /** The raw node's own record (its identity at its address). */
  rawRecord: Buffer
}

async function setup(t: ExecutionContext, stack: (raw: Node) => Protocol[]): Promise<Setup> {
  const raw = await Node.create({ host: '127.0.0.1' })
  t.teardown(() => raw.close())
  const node = await Node.create({ host: '127.0.0.1', stack: stack(raw) })
  t.teardown(() => node.close())
  const udp = raw.stack.layers[raw.stack.layers.length - 1] as unknown as { send(to: unknown, d: Uint8Array, tag: number): void }
  return {
    node,
    raw,
    send: (tag, body) => udp.send(node.address, body, tag),
    rawRecord: encodePeerRecord({ publicIdentity: raw.identity.publicIdentity, address: raw.address }),
  }
}

function layerStats(s: Setup, layer: string): Record<string, number> {
  return { ...(s.node.stats() as unknown as Record<string, Record<string, number>>)[layer] }
}

/**
 * Sends `valid` with a trailing zero byte: the layer `layer` of `s.node` must count exactly one
 * `dropped_malformed` and no other counter may move (but those in `ignore`, which count every
 * datagram). Then sends `valid` itself: `acted` must grow.
 */
async function trailing(t: ExecutionContext, s: Setup, layer: string, tag: number, valid: Buffer, acted: string, ignore: string[] = []): Promise<void> {
  const stats = (): Record<string, number> => layerStats(s, layer)
  const label = `${layer} type ${valid[0]}`
  const before = stats()
  s.send(tag, Buffer.concat([valid, Buffer.from([0])]))
  t.true(await until(() => n(stats().dropped_malformed) === n(before.dropped_malformed) + 1), `${label} + 1 byte: dropped and counted`)
  await sleep(30) // an answer or a state change would show by now
  const after = stats()
  const changed: Record<string, number> = {}
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
    if (!ignore.includes(k) && n(after[k]) !== n(before[k])) changed[k] = n(after[k]) - n(before[k])
  }
  t.deepEqual(changed, { dropped_malformed: 1 }, `${label} + 1 byte: nothing but dropped_malformed changes`)
  s.send(tag, valid)
  t.true(await until(() => n(stats()[acted]) > n(after[acted])), `${label} without the byte: ${acted}`)
  t.is(n(stats().dropped_malformed), n(after.dropped_malformed), `${label} without the byte: not malformed`)
}

test('transport ping (tag 1)', async (t) => {
  const s = await setup(t, () => [])
  const udpStats = (): Record<string, number> => (s.node.stats() as unknown as Record<string, Record<string, number>>).udp
  const before = { ...udpStats() }
  s.send(1, Buffer.concat([ping.encodePing({ type: 'PING', id: 7 }), Buffer.from([0])]))
  t.true(await until(() => n(udpStats().dropped_malformed) === n(before.dropped_malformed) + 1))
  await sleep(30)
  t.is(n(udpStats().pings_answered), n(before.pings_answered), 'not answered')
  s.send(1, ping.encodePing({ type: 'PING', id: 7 }))
  t.true(await until(() => n(udpStats().pings_answered) === n(before.pings_answered) + 1), 'answered without the byte')
})

test('KeepAlive (tag 7)', async (t) => {
  const s = await setup(t, () => [new KeepAlive({ interval: 60_000 })])
  await trailing(t, s, 'keep-alive', 7, keepAlive.encodeKeepAlive({ type: 'PING', id: 9 }), 'pings_answered')
})

test('Gossip (tag 8): PING, FIND, FOUND', async (t) => {
  const s = await setup(t, () => [new Gossip({ interval: 60_000, pingInterval: 60_000 })])
  t.true(await until(() => n(layerStats(s, 'gossip').rounds) === 1), 'the first (empty) round ran')
  await trailing(t, s, 'gossip', 8, gossip.encodeGossip({ type: 'PING', id: 1 }), 'sent', ['received'])
  const find = gossip.encodeGossip({ type: 'FIND', queryHi: 1, queryLo: 2, hops: 3, target: s.node.identity.id, origin: s.rawRecord })
  await trailing(t, s, 'gossip', 8, find, 'found_sent', ['received'])
  const found = gossip.encodeGossip({ type: 'FOUND', queryHi: 5, queryLo: 6, record: s.rawRecord })
  await trailing(t, s, 'gossip', 8, found, 'dropped_unsolicited', ['received'])
})

test('BigGossip (tag 5): INTRO', async (t) => {
  const s = await setup(t, () => [new BigGossip({ interval: 60_000 })])
  t.true(await until(() => n(layerStats(s, 'big-gossip').rounds) === 1), 'the first (empty) round ran')
  await trailing(t, s, 'big-gossip', 5, big.encodeBigGossip({ type: 'INTRO', records: [s.rawRecord] }), 'peers_learned', ['received'])
})

test('FixedPeers (tag 6): HELLO, EXIT', async (t) => {
  const s = await setup(t, (raw) => [new FixedPeers({ peers: [raw.address], helloRetries: 0 })])
  await trailing(t, s, 'fixed-peers', 6, fixed.encodeFixedPeers({ type: 'HELLO', record: s.rawRecord }), 'acks_sent')
  await trailing(t, s, 'fixed-peers', 6, fixed.encodeFixedPeers({ type: 'EXIT' }), 'exits_received')
})

test('HolePuncher (tag 9): OBSERVED, INTRO_REQ, INTRO_CHALLENGE, INTRO_FAIL, PUNCH_ACK', async (t) => {
  const s = await setup(t, () => [new HolePuncher()])
  const at = s.raw.address
  await trailing(t, s, 'hole-puncher', 9, hp.encodeHolePunch({ type: 'OBSERVED', nonce: 1, addr: at }), 'observed_received')
  await trailing(t, s, 'hole-puncher', 9, hp.encodeHolePunch({ type: 'INTRO_REQ', nonce: 2, token: Buffer.alloc(16), addr: s.node.address }), 'intro_challenges_sent')
  await trailing(t, s, 'hole-puncher', 9, hp.encodeHolePunch({ type: 'INTRO_CHALLENGE', nonce: 2, token: Buffer.alloc(16, 1) }), 'dropped_unsolicited')
  await trailing(t, s, 'hole-puncher', 9, hp.encodeHolePunch({ type: 'INTRO_FAIL', nonce: 3, addr: at }), 'dropped_unsolicited')
  await trailing(t, s, 'hole-puncher', 9, hp.encodeHolePunch({ type: 'PUNCH_ACK', nonce: 4, addr: at }), 'dropped_unsolicited')
})

test('Relay (tag 10): ALLOCATE, QUERY', async (t) => {
  const s = await setup(t, () => [new Relay({ serve: {} })])
  await trailing(t, s, 'relay', 10, relay.encodeRelay({ type: 'ALLOCATE', nonce: 1, token: Buffer.alloc(16) }), 'challenges_sent')
  await trailing(t, s, 'relay', 10, relay.encodeRelay({ type: 'QUERY', nonce: 2, addr: s.raw.address }), 'dropped_no_session') // decoded; the raw node holds no session
})

test('TcpHolePuncher (tag 11): GO, FAIL', async (t) => {
  const s = await setup(t, () => [new TcpHolePuncher(), new TcpTransport()])
  const id = Buffer.alloc(32, 7)
  const go = thp.encodeTcpHolePunch({ type: 'GO', nonce: 1, initiator: true, delay: 0, punch: s.raw.address, listen: null, id })
  await trailing(t, s, 'tcp-hole-puncher', 11, go, 'dropped_unsolicited')
  await trailing(t, s, 'tcp-hole-puncher', 11, thp.encodeTcpHolePunch({ type: 'FAIL', nonce: 1 }), 'dropped_unsolicited')
})
