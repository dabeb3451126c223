/**
 * The Relay layer against hostile peers, over real UDP sockets on loopback. The attackers are raw
 * `node:dgram` sockets that write the relay wire format (docs/wire.md#relay-tag-10) by hand.
 *
 * A spoofed source address is emulated by sending through the victim's own socket: the datagram
 * then carries the victim's address, and the attacker never sees what comes back (the test reads
 * the victim's socket only to count the bytes it received). Several attacker hosts are several
 * loopback addresses (127.0.0.0/8). Imports the BUILT package (dist/).
 */
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import dgram from 'node:dgram'

import { ErrorCode, Node, Relay, RelayedPeer, type Peer, type RelayOptions } from '../dist/index.js'
import { n, sleep, until } from './helpers/wait.ts'

const TAG = 10


async function open(t: ExecutionContext, relay: RelayOptions = {}): Promise<{ node: Node; relay: Relay }> {
  const r = new Relay(relay)
  // A large receive buffer: the attack bursts reach the relay whole even when the machine is busy.
  const node = await Node.create({ host: '127.0.0.1', recvBufferSize: 4 << 20, stack: [r] })
  t.teardown(() => node.close())
  return { node, relay: r }
}

/** A raw UDP socket that records what it receives. */
interface Raw {
  sock: dgram.Socket
  port: number
  host: string
  got: Buffer[]
  bytes: number
  send(to: { host: string; port: number }, b: Buffer): Promise<void>
}

async function raw(t: ExecutionContext, host = '127.0.0.1'): Promise<Raw> {
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => sock.once('error', reject).bind(0, host, () => resolve()))
  t.teardown(() => new Promise<void>((resolve) => sock.close(() => resolve())))
  const r: Raw = {
    sock,
    host,
    port: sock.address().port,
    got: [],
    bytes: 0,
    send: (to, b) => new Promise<void>((resolve, reject) => sock.send(b, to.port, to.host, (e) => (e ? reject(e) : resolve()))),
  }
  sock.on('message', (m) => {
    r.got.push(m)
    r.bytes += m.length
  })
  return r
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v >>> 0)
  return b
}
/** `[tag 10][type][nonce u32][rest]`. */
const msg = (type: number, nonce: number, rest: Buffer = Buffer.alloc(0)): Buffer => Buffer.concat([Buffer.from([TAG, type]), u32(nonce), rest])
const ALLOCATE = (nonce: number, token = Buffer.alloc(16)): Buffer => msg(9, nonce, token)
/** The first version's token-less ALLOC (type 1): the relay must not act on it. */
const ALLOC_V1 = (nonce: number): Buffer => msg(1, nonce)
const addr = (host: string, port: number): Buffer => Buffer.from([4, ...host.split('.').map(Number), port >> 8, port & 0xff])
const DATA = (to: { host: string; port: number }, payload: Buffer): Buffer => Buffer.concat([Buffer.from([TAG, 4]), addr(to.host, to.port), Buffer.from([0]), payload])
const FWD = (from: { host: string; port: number }, payload: Buffer): Buffer => Buffer.concat([Buffer.from([TAG, 5]), addr(from.host, from.port), Buffer.from([0]), payload])

/**
 * A raw socket gets a session the way the protocol allows: ALLOCATE (and the first version's ALLOC),
 * then, on a CHALLENGE, ALLOCATE echoing its token. True once ALLOC_OK arrives.
 */
async function rawAllocate(r: Raw, relay: { host: string; port: number }): Promise<boolean> {
  const nonce = randomBytes(4).readUInt32BE()
  const from = r.got.length
  const find = (type: number): Buffer | undefined => r.got.slice(from).find((m) => m[0] === TAG && m[1] === type && m.readUInt32BE(2) === nonce)
  await r.send(relay, ALLOCATE(nonce))
  await r.send(relay, ALLOC_V1(nonce))
  if (!(await until(() => find(10) !== undefined || find(2) !== undefined || find(3) !== undefined, 2000))) return false
  const ch = find(10)
  if (ch) {
    await r.send(relay, ALLOCATE(nonce, ch.subarray(6, 22)))
    await until(() => find(2) !== undefined || find(3) !== undefined, 2000)
  }
  return find(2) !== undefined
}

function nextMessage(node: Node, ms = 2000): Promise<{ from: Peer; data: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      node.off('message', on)
      reject(new Error(`no message within ${ms} ms`))
    }, ms)
    const on = (from: Peer, data: Buffer): void => {
      clearTimeout(timer)
      node.off('message', on)
      resolve({ from, data: data.toString() })
    }
    node.on('message', on)
  })
}

test('a forged ALLOCATE from a spoofed address gets no session; the victim receives at most what was sent in its name', async (t) => {
  const r = await open(t, { serve: { maxSessions: 64, maxBytesPerSecond: 1 << 20 } })
  const R = r.node.address
  const victim = await raw(t)
  const attacker = await raw(t)
  t.true(await rawAllocate(attacker, R), 'the attacker itself gets a session: its address is real')
  // Forged in the victim's name (through the victim's socket; the attacker never reads it): the
  // token-less ALLOCATE, the first version's ALLOC, and ALLOCATEs with guessed tokens.
  let forged = 0
  const inVictimsName = async (b: Buffer): Promise<void> => {
    forged += b.length
    await victim.send(R, b)
  }
  await inVictimsName(ALLOCATE(1))
  await inVictimsName(ALLOC_V1(2))
  for (let i = 0; i < 8; i++) await inVictimsName(ALLOCATE(3 + i, randomBytes(16)))
  const rs = (): Record<string, number> => r.node.stats().relay
  t.true(await until(() => n(rs().dropped_bad_token) === 8 && n(rs().dropped_malformed) === 2), 'the relay has read them')
  t.false(
    r.relay.sessions().some((a) => a.port === victim.port),
    'no session for the spoofed address',
  )
  // The attacker streams to the victim through the relay.
  const payload = Buffer.alloc(1000, 0x41)
  for (let i = 0; i < 100; i++) await attacker.send(R, DATA({ host: victim.host, port: victim.port }, payload))
  t.true(await until(() => n(rs().dropped_no_dest_session) === 100, 10_000), 'the relay has read them')
  await sleep(50) // anything forwarded would have arrived by now
  t.true(victim.bytes <= forged, `the victim received ${victim.bytes} bytes for ${forged} forged in its name`)
  t.true(victim.got.every((m) => m[1] === 10 && m.length === 22), 'it received CHALLENGEs only, each as long as the ALLOCATE that caused it')
  const s = r.node.stats().relay
  t.is(n(s.dropped_no_dest_session), 100)
  t.is(n(s.forwarded), 0)
  t.is(n(s.sessions_opened), 1)
  t.is(n(s.dropped_bad_token), 8)
  t.is(n(s.dropped_malformed), 2, 'the token-less ALLOCs of the first version (the attacker sent one too)')
})

test('a spoofed RELEASE (without the session nonce) does not end a session', async (t) => {
  const r = await open(t, { serve: {} })
  const a = await open(t)
  await a.relay.relayVia(r.node.address)
  t.is(r.relay.sessions().length, 1)
  // Sent from A's own socket (as a spoofed datagram would look), with a guessed nonce.
  const udp = a.node.stack.layers[a.node.stack.layers.length - 1] as unknown as { send(to: unknown, d: Uint8Array, tag: number): void }
  for (let i = 0; i < 16; i++) udp.send(r.node.address, Buffer.concat([Buffer.from([8]), randomBytes(4)]), TAG)
  t.true(await until(() => n(r.node.stats().relay.dropped_unsolicited) === 16))
  t.is(r.relay.sessions().length, 1, 'the session is still there')
  t.is(n(r.node.stats().relay.sessions_released), 0)
  t.is(n(r.node.stats().relay.dropped_unsolicited), 16)
  // Our own RELEASE on stop carries the nonce and ends it.
  await a.node.close()
  t.true(await until(() => r.relay.sessions().length === 0))
  t.is(n(r.node.stats().relay.sessions_released), 1)
})

test('FWD is accepted only from the relay chosen for that sender; a relay cannot reroute a direct path', async (t) => {
  const a = await open(t)
  const b = await open(t) // talks to A directly
  const evil = await raw(t) // a malicious relay A uses for one other peer, Z
  const z = { host: '127.0.0.1', port: 9 }
  // The malicious relay grants sessions and says every peer is present.
  evil.sock.on('message', (m, rinfo) => {
    if (m[0] !== TAG) return
    if (m[1] === 9 || m[1] === 1) void evil.send({ host: rinfo.address, port: rinfo.port }, msg(2, m.readUInt32BE(2)))
    if (m[1] === 6) void evil.send({ host: rinfo.address, port: rinfo.port }, Buffer.concat([msg(7, m.readUInt32BE(2)), Buffer.from([1])]))
  })
  await a.relay.relayVia(`127.0.0.1:${evil.port}`, [`${z.host}:${z.port}`])
  const B = { host: b.node.address.host, port: b.node.address.port }
  const A = { host: a.node.address.host, port: a.node.address.port }
  const atB = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('direct'))
  t.is((await atB).data, 'direct')
  // The relay claims to forward a message from B.
  const atA: string[] = []
  a.node.on('message', (from: Peer, d: Buffer) => atA.push(`${from instanceof RelayedPeer ? 'relayed' : 'direct'} ${from.address.port} ${d.toString()}`))
  await evil.send(A, FWD(B, Buffer.from('injected')))
  t.true(await until(() => n(a.node.stats().relay.dropped_unrouted) === 1))
  await sleep(20)
  t.deepEqual(atA, [], 'the forged FWD is not delivered')
  t.is(n(a.node.stats().relay.dropped_unrouted), 1)
  t.false(`${B.host}:${B.port}` in a.relay.routes(), 'B is not routed through the relay')
  // A's next send to B still goes straight to B, and the malicious relay sees nothing of it.
  const before = evil.got.length
  const atB2 = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('still direct'))
  const m = await atB2
  t.is(m.data, 'still direct')
  t.false(m.from instanceof RelayedPeer)
  await sleep(50)
  t.is(evil.got.slice(before).filter((x) => x[1] === 4).length, 0, 'no DATA reached the malicious relay')
  // The relay does forward what it was chosen for: Z's messages.
  await evil.send(A, FWD(z, Buffer.from('from z')))
  t.true(await until(() => atA.length === 1))
  t.deepEqual(atA, [`relayed ${z.port} from z`])
  // After unroute(Z), not even those.
  a.relay.unroute(`${z.host}:${z.port}`)
  await evil.send(A, FWD(z, Buffer.from('late')))
  t.true(await until(() => n(a.node.stats().relay.dropped_unrouted) === 2))
  await sleep(20)
  t.is(atA.length, 1)
  t.is(n(a.node.stats().relay.dropped_unrouted), 2)
})

test('64+ sessions held from one host, or a table filled by 15 hosts, do not lock out legitimate clients', async (t) => {
  const r = await open(t, { serve: { maxSessions: 64, maxSessionsPerHost: 8 } })
  const R = r.node.address
  // One host (127.0.0.2) opens 72 sessions.
  const one: Raw[] = []
  for (let i = 0; i < 72; i++) one.push(await raw(t, '127.0.0.2'))
  const granted = await Promise.all(one.map((x) => rawAllocate(x, R)))
  t.is(granted.filter(Boolean).length, 72, 'each ALLOCATE is granted, at the expense of the same host')
  const held = (host: string): number => r.relay.sessions().filter((s) => s.host === host).length
  t.is(held('127.0.0.2'), 8, 'one host holds at most maxSessionsPerHost')
  t.is(n(r.node.stats().relay.sessions_evicted_host), 64)
  // 14 more hosts fill the table: 56 sessions (+ the 8 of 127.0.0.2).
  const many: Raw[] = []
  for (let h = 1; h <= 14; h++) for (let i = 0; i < 4; i++) many.push(await raw(t, `127.0.1.${h}`))
  t.true((await Promise.all(many.map((x) => rawAllocate(x, R)))).every(Boolean))
  t.is(r.relay.sessions().length, 64, 'the table is full')
  // Two legitimate clients (another host) still get sessions and talk through the relay.
  const a = await open(t)
  const b = await open(t)
  await Promise.all([a.relay.relayVia(R, [b.node.address]), b.relay.relayVia(R, [a.node.address])])
  const atB = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('through a full relay'))
  const m = await atB
  t.is(m.data, 'through a full relay')
  t.true(m.from instanceof RelayedPeer)
  t.is(r.relay.sessions().length, 64)
  t.is(held('127.0.0.2'), 6, 'the biggest host gave up its idlest sessions')
  t.is(n(r.node.stats().relay.sessions_evicted_fair), 2)
  // A full table of hosts holding one session each refuses a newcomer instead of churning.
  const refused = await raw(t, '127.0.2.1')
  const eq = await open(t, { serve: { maxSessions: 2, maxSessionsPerHost: 8 } })
  const x1 = await raw(t, '127.0.3.1')
  const x2 = await raw(t, '127.0.3.2')
  t.true(await rawAllocate(x1, eq.node.address))
  t.true(await rawAllocate(x2, eq.node.address))
  t.false(await rawAllocate(refused, eq.node.address), 'one session per host in a full table: refused, nobody evicted')
  t.is(n(eq.node.stats().relay.alloc_refused_full), 1)
  const e = await t.throwsAsync(open(t).then((c) => c.relay.relayVia(eq.node.address)))
  t.is((e as { code?: string }).code, ErrorCode.RELAY_REFUSED)
})

test('the bytes forwarded to one destination are limited, however many senders', async (t) => {
  const r = await open(t, { serve: { maxBytesPerSecond: 100_000, maxBytesPerSecondTo: 4000 } })
  const R = r.node.address
  const victim = await raw(t)
  t.true(await rawAllocate(victim, R))
  const senders: Raw[] = []
  for (let i = 0; i < 5; i++) senders.push(await raw(t, `127.0.4.${i + 1}`))
  t.true((await Promise.all(senders.map((s) => rawAllocate(s, R)))).every(Boolean))
  const before = victim.bytes
  const payload = Buffer.alloc(1000, 7)
  const rs = (): Record<string, number> => r.node.stats().relay
  const t0 = Date.now()
  for (let i = 0; i < 4; i++) for (const s of senders) await s.send(R, DATA({ host: victim.host, port: victim.port }, payload))
  t.true(await until(() => n(rs().forwarded) + n(rs().dropped_rate_limited) === 20))
  // One second of burst (4 kB), then 4 bytes per ms of the time the sends took.
  const allowed = 4 + Math.floor(((Date.now() - t0) * 4) / 1000)
  await sleep(50)
  const got = victim.got.filter((m) => m[1] === 5).length
  t.true(got >= 4 && got <= allowed, `the destination received ${got} of 20 kB at 4000 B/s (at most ${allowed} in this time)`)
  t.is(victim.bytes - before, got * (2 + 7 + 1 + 1000), "FWDs only: tag, type, address, inner tag, payload")
  t.is(n(rs().dropped_rate_limited_to), 20 - got)
})

test('tokens expire with their time slot: refreshes are challenged again and the session lives on', async (t) => {
  const r = await open(t, { serve: { tokenSlot: 150, sessionTtl: 1000 } })
  const a = await open(t, { refreshInterval: 200 })
  const b = await open(t, { refreshInterval: 200 })
  await Promise.all([a.relay.relayVia(r.node.address, [b.node.address]), b.relay.relayVia(r.node.address, [a.node.address])])
  await sleep(1500) // several slots: a token is accepted in its own slot and the next only
  const s = r.node.stats().relay
  t.true(n(s.challenges_sent) >= 4, `${n(s.challenges_sent)} challenges`)
  t.is(n(s.sessions_opened), 2)
  t.is(n(s.sessions_expired), 0)
  t.is(r.relay.sessions().length, 2)
  t.true(n(a.node.stats().relay.alloc_refreshed) >= 3)
  const atB = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('still relayed'))
  t.is((await atB).data, 'still relayed')
})
