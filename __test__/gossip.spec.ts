/**
 * Peer-list layers on the SimulatedNetwork (virtual time): Gossip, BigGossip, FixedPeers, KeepAlive.
 * Imports the BUILT package (dist/), as a user would.
 */
import test from 'ava'

import { BigGossip, FixedPeers, Gossip, Identity, Kademlia, KeepAlive, type Node, type Peer, SimulatedNetwork, TAG_GOSSIP, TAG_KEEPALIVE } from '../dist/index.js'

test('FixedPeers: everyone learns everyone, broadcast reaches all, sendToId, exit message on stop', async (t) => {
  const sim = new SimulatedNetwork({ seed: 3, defaultLink: { latency: 5, loss: 0.1 } })
  t.teardown(() => sim.close())
  const N = 10
  const addrs = Array.from({ length: N }, (_, i) => `10.0.0.${i + 1}:4000`)
  const nodes = await sim.createNodes(N, { stack: () => [new FixedPeers({ peers: addrs, helloInterval: 200, helloRetries: 50 })], identity: (i) => Identity.fromString(`fixed-${i}`) })
  const fp = (n: Node): FixedPeers => n.stack.find(FixedPeers)!
  await sim.runUntil(() => nodes.every((n) => fp(n).peers().length === N - 1), { timeout: 20_000 })
  t.log(`HELLO converged under 10 % loss at ${sim.now.toFixed(0)} virtual ms`)
  const sim2 = new SimulatedNetwork({ seed: 4 })
  t.teardown(() => sim2.close())
  const nodes2 = await sim2.createNodes(N, { stack: () => [new FixedPeers({ peers: addrs })], identity: (i) => Identity.fromString(`fixed-${i}`) })
  await sim2.runUntil(() => nodes2.every((n) => fp(n).peers().length === N - 1), { timeout: 20_000 })
  const got2 = new Map<Node, string[]>()
  for (const n of nodes2) n.on('message', (from, data) => got2.set(n, [...(got2.get(n) ?? []), `${from.id?.toString('hex').slice(0, 8)}:${data}`]))
  await fp(nodes2[0]).broadcast(Buffer.from('hello all'))
  await fp(nodes2[1]).sendToId(nodes2[2].id, Buffer.from('just you'))
  await sim2.runFor(100)
  const from0 = nodes2[0].id.toString('hex').slice(0, 8)
  for (const n of nodes2.slice(1)) t.true(got2.get(n)?.includes(`${from0}:hello all`), 'broadcast reached every peer, attributed to its id')
  t.true(got2.get(nodes2[2])!.includes(`${nodes2[1].id.toString('hex').slice(0, 8)}:just you`))
  t.is((await nodes2[4].findPeer(nodes2[7].id)).address, nodes2[7].address)
  await t.throwsAsync(fp(nodes2[1]).sendToId(Buffer.alloc(32, 1), Buffer.from('x')), { code: 'ERR_DECCOM_PEER_NOT_FOUND' })
  // Exit message.
  const gone: Peer[] = []
  fp(nodes2[3]).on('disconnected', (p) => gone.push(p))
  const addr5 = nodes2[5].address
  await nodes2[5].close()
  await sim2.runFor(100)
  t.is(gone.length, 1)
  t.is(gone[0].address, addr5)
  t.is(fp(nodes2[3]).peers().length, N - 2)
})

test('KeepAlive: a dead peer is reported after N missed pings and not before; traffic counts as life', async (t) => {
  const sim = new SimulatedNetwork({ seed: 5, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const interval = 1000
  const misses = 3
  const nodes = await sim.createNodes(3, { stack: () => [new KeepAlive({ interval, misses })], identity: (i) => Identity.fromString(`ka-${i}`) })
  const ka = (n: Node): KeepAlive => n.stack.find(KeepAlive)!
  const down: { peer: Peer; at: number }[] = []
  ka(nodes[0]).on('disconnected', (peer) => down.push({ peer, at: sim.now }))
  ka(nodes[0]).register(nodes[1].address)
  ka(nodes[0]).register(nodes[2].address)
  await sim.runFor(10 * interval)
  t.is(down.length, 0, 'live peers answer')
  t.is(ka(nodes[0]).missedOf(nodes[1].address), 0)
  const t0 = sim.now
  const addr1 = nodes[1].address
  await nodes[1].close()
  // Pings go out at t0 + k*interval (k >= 0 relative to the last tick). Misses are counted at the
  // ticks after the first unanswered ping: the report comes at the (misses+1)-th tick, not before.
  await sim.runFor(misses * interval - 1)
  t.is(down.length, 0, `not reported before ${misses} misses`)
  await sim.runFor(interval + 1)
  t.is(down.length, 1)
  t.is(down[0].peer.address, addr1)
  t.true(down[0].at - t0 <= (misses + 1) * interval)
  t.true(down[0].at - t0 >= misses * interval)
  t.is(ka(nodes[0]).peers().length, 1)

  // Any datagram counts as life: node 2 stops answering pings but sends application data.
  const quiet = await sim.createNode({ stack: [], identity: Identity.fromString('quiet') })
  ka(nodes[0]).register(quiet.address)
  const chatter = (): void => {
    void quiet.send(nodes[0].address, Buffer.from('still here')).catch(() => {})
    if (sim.now < 20_000 + t0) sim.clock.setTimeout(chatter, interval / 2)
  }
  chatter()
  await sim.runFor(10 * interval)
  t.false(down.some((d) => d.peer.address === quiet.address), 'application traffic kept it alive without pongs')
  t.is(ka(nodes[0]).stats().dropped_malformed ?? 0, 0)
  void TAG_KEEPALIVE
})

test('Gossip: 100 nodes converge to >= 20 known peers each in bounded virtual time; findPeer floods; junk is dropped', async (t) => {
  const sim = new SimulatedNetwork({ seed: 8, defaultLink: { latency: 10, jitter: 10, loss: 0.02 } })
  t.teardown(() => sim.close())
  const nodes = await sim.createNodes(100, {
    stack: (i) => [new Gossip({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], seed: i + 1, maxPeers: 60 })],
    identity: (i) => Identity.fromString(`gossip-${i}`),
  })
  const g = (n: Node): Gossip => n.stack.find(Gossip)!
  await sim.runUntil(() => nodes.every((n) => g(n).peers().length >= 20), { timeout: 30_000 })
  t.log(`converged at ${sim.now.toFixed(0)} virtual ms`)
  t.true(sim.now <= 30_000)
  // Flooding finds a peer that the asker does not know (with maxPeers 60 of 99, some are unknown).
  const asker = nodes[5]
  const unknown = nodes.find((n) => n !== asker && !g(asker).getPeer(n.id))!
  let found: Peer | undefined
  void asker.findPeer(unknown.id).then((p) => (found = p))
  await sim.runUntil(() => found !== undefined, { timeout: 5000 })
  t.is(found!.address, unknown.address)
  // Malformed and unsolicited datagrams are dropped and counted.
  const before = g(nodes[1]).stats()
  const outsider = await sim.createNode({ stack: [], identity: Identity.fromString('outsider') })
  const transport = outsider.stack.layers.at(-1) as unknown as { send(to: unknown, data: Buffer, tag: number): void }
  const raw = (data: Buffer): void => transport.send(nodes[1].address, data, TAG_GOSSIP)
  raw(Buffer.from([2, 1, 0]))
  raw(Buffer.from([99]))
  raw(Buffer.from([1, 5, 0, 9]))
  await sim.runFor(100)
  const after = g(nodes[1]).stats()
  t.is((after.dropped_unsolicited ?? 0) - (before.dropped_unsolicited ?? 0), 1)
  t.is((after.dropped_malformed ?? 0) - (before.dropped_malformed ?? 0), 2)
})

test('BigGossip: 100 nodes converge to >= 20 known peers each in bounded virtual time', async (t) => {
  const sim = new SimulatedNetwork({ seed: 9, defaultLink: { latency: 10, jitter: 10, loss: 0.02 } })
  t.teardown(() => sim.close())
  const nodes = await sim.createNodes(100, {
    stack: (i) => [new BigGossip({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], seed: i + 1 })],
    identity: (i) => Identity.fromString(`big-${i}`),
  })
  const g = (n: Node): BigGossip => n.stack.find(BigGossip)!
  await sim.runUntil(() => nodes.every((n) => g(n).peers().length >= 20), { timeout: 30_000 })
  t.log(`converged at ${sim.now.toFixed(0)} virtual ms; median known ${[...nodes.map((n) => g(n).peers().length)].sort((a, b) => a - b)[50]}`)
  t.true(sim.now <= 30_000)
  t.is((await nodes[3].findPeer(g(nodes[3]).peers()[0].id!)).address, g(nodes[3]).peers()[0].address)
})

test('A peer listener that throws is counted and never stops the other listeners or the layer (Gossip, BigGossip, FixedPeers, Kademlia)', async (t) => {
  const sim = new SimulatedNetwork({ seed: 12, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const boot = '10.0.0.1:4000'
  const kinds = [
    { name: 'Gossip', make: (i: number) => new Gossip({ bootstrap: i === 0 ? [] : [boot], seed: i + 1 }), of: (n: Node) => n.stack.find(Gossip)! },
    { name: 'BigGossip', make: (i: number) => new BigGossip({ bootstrap: i === 0 ? [] : [boot], seed: i + 1 }), of: (n: Node) => n.stack.find(BigGossip)! },
    { name: 'FixedPeers', make: () => new FixedPeers({ peers: Array.from({ length: 4 }, (_, i) => `10.0.0.${i + 1}:4000`) }), of: (n: Node) => n.stack.find(FixedPeers)! },
    { name: 'Kademlia', make: (i: number) => new Kademlia({ bootstrap: i === 0 ? [] : [boot] }), of: (n: Node) => n.stack.find(Kademlia)! },
  ]
  for (const [k, kind] of kinds.entries()) {
    const net = k === 0 ? sim : new SimulatedNetwork({ seed: 12 + k, defaultLink: { latency: 5 } })
    if (k > 0) t.teardown(() => net.close())
    const first = await net.createNode({ stack: [kind.make(0)], identity: Identity.fromString(`listen-${kind.name}-0`) })
    const heard: Peer[] = []
    const layer = kind.of(first) as unknown as { on(e: 'connected', fn: (p: Peer) => void): unknown; stats(): Record<string, number> }
    layer.on('connected', () => {
      throw new Error('a listener that throws')
    })
    layer.on('connected', (p) => heard.push(p))
    const others = await net.createNodes(3, { stack: (i) => [kind.make(i + 1)], identity: (i) => Identity.fromString(`listen-${kind.name}-${i + 1}`) })
    await net.runUntil(() => heard.length === 3, { timeout: 30_000 })
    t.deepEqual(new Set(heard.map((p) => p.address.key)), new Set(others.map((n) => n.address.key)), `${kind.name}: the second listener heard every peer`)
    t.is(layer.stats().listener_errors, 3, `${kind.name}: each throw counted`)
    // The layer runs on: a peer coming later is heard too.
    if (kind.name !== 'FixedPeers') {
      await net.createNode({ stack: [kind.make(4)], identity: Identity.fromString(`listen-${kind.name}-4`) })
      await net.runUntil(() => heard.length === 4, { timeout: 30_000 })
      t.is(layer.stats().listener_errors, 4)
    }
  }
})
