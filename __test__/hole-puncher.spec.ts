/**
 * HolePuncher and Relay over real UDP sockets on loopback (no NAT: the NAT cases are in nat.spec.ts).
 * Imports the BUILT package (dist/), as a user would.
 */
import test, { type ExecutionContext } from 'ava'

import { ErrorCode, HolePuncher, Node, Protocol, Relay, RelayedPeer, type HolePuncherOptions, type Peer, type RelayOptions } from '../dist/index.js'
import { n, sleep, until } from './helpers/wait.ts'

/** Drops PUNCH / PUNCH_ACK both ways: makes punching fail as between two symmetric NATs. */
class DropPunches extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'drop-punches'
  send(to: unknown, data: Uint8Array, tag: number): unknown {
    if (tag === 9 && (data[0] === 6 || data[0] === 7)) return this.count('dropped')
    return this.lower.send(to, data, tag)
  }
  onMessage(from: unknown, data: Buffer, tag: number): void {
    if (tag === 9 && (data[0] === 6 || data[0] === 7)) return this.count('dropped')
    this.upper.onMessage(from, data, tag)
  }
}

interface Opts {
  hp?: HolePuncherOptions
  relay?: RelayOptions
  dropPunches?: boolean
  noPuncher?: boolean
}

async function open(t: ExecutionContext, o: Opts = {}): Promise<{ node: Node; hp: HolePuncher; relay: Relay }> {
  const hp = new HolePuncher(o.hp)
  const relay = new Relay(o.relay)
  const stack: Protocol[] = o.noPuncher ? [relay] : [hp, relay]
  if (o.dropPunches) stack.push(new DropPunches())
  const node = await Node.create({ host: '127.0.0.1', stack })
  t.teardown(() => node.close())
  return { node, hp, relay }
}

function nextMessage(node: Node, ms = 3000): Promise<{ from: Peer; data: string }> {
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


test('observations: a node learns its address from the peers it probes; 2 must agree', async (t) => {
  const a = await open(t)
  const r1 = await open(t)
  const r2 = await open(t)
  t.is(a.hp.externalAddress(), null)
  a.hp.probe(r1.node.address)
  await sleep(100)
  t.is(a.hp.observations().length, 1)
  t.is(a.hp.observations()[0].address.key, a.node.address.key)
  t.is(a.hp.externalAddress(), null, 'one observer is not enough')
  a.hp.probe(r2.node.address)
  await sleep(100)
  t.is(a.hp.externalAddress()?.key, a.node.address.key)
  t.is(n(r1.node.stats()['hole-puncher'].probes_answered), 1)
})

test('connect through an introducer punches a path; messages queued meanwhile arrive', async (t) => {
  const r = await open(t)
  const a = await open(t, { hp: { rendezvous: [] } })
  const b = await open(t, { hp: { rendezvous: [r.node.address] } })
  await sleep(100) // b's probe reached r: r can introduce b
  t.deepEqual(r.hp.introducible().map((x) => x.key), [b.node.address.key])
  const atB = nextMessage(b.node)
  const conn = a.hp.connect(b.node.address, r.node.address)
  t.is(a.hp.paths()[b.node.address.key], 'introducing')
  const sent = a.node.send(b.node.address, Buffer.from('queued hello'))
  const res = await conn
  t.is(res.path, 'punched')
  t.is(res.address.key, b.node.address.key)
  await sent
  const m = await atB
  t.is(m.data, 'queued hello')
  t.is(m.from.address.key, a.node.address.key)
  t.is(a.hp.paths()[b.node.address.key], 'open')
  // Both sides observed each other: a has observations from r (intro) and b (punch ack, or the
  // probe it sends when opened by b's punch: that answer may still be on its way).
  for (let i = 0; i < 40 && !a.hp.externalAddress(); i++) await sleep(25)
  t.is(a.hp.externalAddress()?.key, a.node.address.key)
  const sa = a.node.stats()['hole-puncher']
  t.is(n(sa.queued), 1)
  t.is(n(sa.flushed), 1)
  t.true(n(sa.punched) === 1)
  t.is(n(r.node.stats()['hole-puncher'].introductions_made), 1)
})

test('connect to a peer the introducer never heard of fails with INTRODUCTION_FAILED', async (t) => {
  const r = await open(t)
  const a = await open(t)
  const err = await t.throwsAsync(a.hp.connect('127.0.0.1:9', r.node.address))
  t.is((err as { code?: string }).code, ErrorCode.INTRODUCTION_FAILED)
  t.deepEqual(a.hp.paths(), {})
})

test('punching a peer that never answers fails with PUNCH_TIMEOUT and rejects queued sends', async (t) => {
  const r = await open(t)
  const a = await open(t, { hp: { punchTimeout: 400 } })
  const b = await open(t, { noPuncher: true }) // has no HolePuncher: never answers punches
  b.relay // keep the reference
  await b.node.send(r.node.address, Buffer.from('hi r')) // r hears from b
  await sleep(50)
  const conn = a.hp.connect(b.node.address, r.node.address)
  const queued = a.node.send(b.node.address, Buffer.from('never'))
  const e1 = await t.throwsAsync(conn)
  const e2 = await t.throwsAsync(queued)
  t.is((e1 as { code?: string }).code, ErrorCode.PUNCH_TIMEOUT)
  t.is((e2 as { code?: string }).code, ErrorCode.PUNCH_TIMEOUT)
  const s = a.node.stats()['hole-puncher']
  t.true(n(s.punches_sent) >= 3)
  t.is(n(s.punch_timeouts), 1)
  t.is(n(s.dropped_queued_failed), 1)
})

test('when punching fails, HolePuncher({ relay: true }) falls back to the relay; replies go back the same way', async (t) => {
  const r = await open(t, { relay: { serve: { maxSessions: 8, maxBytesPerSecond: 1 << 20 } } })
  const a = await open(t, { hp: { relay: true, punchTimeout: 300 }, dropPunches: true })
  const b = await open(t, { hp: { relay: true, punchTimeout: 300, rendezvous: [r.node.address] }, dropPunches: true })
  await sleep(100)
  const atB = nextMessage(b.node)
  const conn = a.hp.connect(b.node.address, r.node.address)
  const sent = a.node.send(b.node.address, Buffer.from('via relay'))
  const res = await conn
  t.is(res.path, 'relayed')
  t.is(res.address.key, r.node.address.key)
  await sent
  const m = await atB
  t.is(m.data, 'via relay')
  t.true(m.from instanceof RelayedPeer)
  t.is((m.from as InstanceType<typeof RelayedPeer>).relayed, true)
  t.is((m.from as InstanceType<typeof RelayedPeer>).relay.key, r.node.address.key)
  t.is(m.from.address.key, a.node.address.key)
  const atA = nextMessage(a.node)
  await b.node.send(m.from, Buffer.from('reply'))
  const back = await atA
  t.is(back.data, 'reply')
  t.true(back.from instanceof RelayedPeer)
  t.is(back.from.address.key, b.node.address.key)
  const rs = r.node.stats().relay
  t.true(n(rs.forwarded) >= 2)
  t.is(n(rs.sessions_opened), 2)
  t.is(n(a.node.stats()['hole-puncher'].relay_fallbacks), 1)
})

test('relay limits: sessions are capped, bandwidth per session is enforced and counted', async (t) => {
  const r = await open(t, { noPuncher: true, relay: { serve: { maxSessions: 2, maxBytesPerSecond: 4000 } } })
  const a = await open(t, { noPuncher: true })
  const b = await open(t, { noPuncher: true })
  const c = await open(t, { noPuncher: true })
  await Promise.all([a.relay.relayVia(r.node.address, [b.node.address]), b.relay.relayVia(r.node.address, [a.node.address])])
  const err = await t.throwsAsync(c.relay.relayVia(r.node.address))
  t.is((err as { code?: string }).code, ErrorCode.RELAY_REFUSED)
  t.is(n(r.node.stats().relay.alloc_refused_full), 1)
  let got = 0
  b.node.on('message', () => got++)
  for (let i = 0; i < 20; i++) await a.node.send(b.node.address, Buffer.alloc(1000, i))
  await sleep(200)
  const rs = r.node.stats().relay
  t.true(got >= 3 && got <= 6, `delivered ${got} of 20 kB at 4000 B/s`)
  t.is(n(rs.forwarded) + n(rs.dropped_rate_limited), 20)
  t.true(n(rs.dropped_rate_limited) >= 14)
  // A non-relay refuses.
  const e2 = await t.throwsAsync(c.relay.relayVia(a.node.address))
  t.is((e2 as { code?: string }).code, ErrorCode.RELAY_REFUSED)
})

test('malformed and unsolicited datagrams are dropped and counted', async (t) => {
  const a = await open(t)
  const raw = await Node.create({ host: '127.0.0.1' })
  t.teardown(() => raw.close())
  // Send raw datagrams with the hole-puncher (9) and relay (10) tags through a bare UdpTransport.
  const udp = raw.stack.layers[raw.stack.layers.length - 1] as unknown as { send(to: unknown, d: Uint8Array, tag: number): void }
  udp.send(a.node.address, Buffer.from([1, 0, 0]), 9) // short probe
  udp.send(a.node.address, Buffer.alloc(24, 0).fill(6, 0, 1), 9) // punch with no session
  udp.send(a.node.address, Buffer.from([99, 0, 0, 0, 0]), 9) // unknown type
  udp.send(a.node.address, Buffer.from([2, 0, 0, 0, 0, 4, 1]), 9) // truncated address
  udp.send(a.node.address, Buffer.from([5, 4, 1, 2, 3, 4, 0, 9, 0, 1]), 10) // FWD from a non-relay
  udp.send(a.node.address, Buffer.from([4, 4, 1, 2, 3, 4, 0, 9, 0, 1]), 10) // DATA to a non-relay
  // All six arrived (a busy machine can take a while), then a moment for anything counted twice.
  const seen = (): number => {
    const s = a.node.stats()
    const h = s['hole-puncher'] ?? {}
    const r = s.relay ?? {}
    return n(h.dropped_malformed) + n(h.dropped_unsolicited) + n(r.dropped_unsolicited) + n(r.dropped_not_relay)
  }
  await until(() => seen() >= 6, 5000)
  await sleep(50)
  const h = a.node.stats()['hole-puncher']
  t.is(n(h.dropped_malformed), 3)
  t.is(n(h.dropped_unsolicited), 1)
  const r = a.node.stats().relay
  t.is(n(r.dropped_unsolicited), 1)
  t.is(n(r.dropped_not_relay), 1)
})
