/**
 * Kademlia carries the external address a HolePuncher below learned (in its own record), keeps the
 * external addresses other peers announced (served with their records), and a node found through
 * it behind a NAT is punched at that address. In virtual time. Imports the BUILT package (dist/).
 */
import test from 'ava'

import { HolePuncher, Identity, Kademlia, SimulatedNetwork } from '../dist/index.js'

const stack = (bootstrap: unknown[], rendezvous: unknown[], withHp = true) => {
  const kad = new Kademlia({ bootstrap: bootstrap as never[] })
  return withHp ? [kad, new HolePuncher({ rendezvous: rendezvous as never[], probeInterval: 1_000 })] : [kad]
}

test('a NATed node is advertised by Kademlia at the external address its HolePuncher learned, and punched there', async (t) => {
  const sim = new SimulatedNetwork({ seed: 11, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const r1 = await sim.createNode({ identity: Identity.fromString('r1'), stack: stack([], []) })
  const r2 = await sim.createNode({ identity: Identity.fromString('r2'), stack: stack([r1.address], []) })
  const natA = sim.createNat({ type: 'port-restricted' })
  const natB = sim.createNat({ type: 'port-restricted' })
  const b = await sim.createNode({ identity: Identity.fromString('b'), stack: stack([r1.address], [r1.address, r2.address]), behind: natB })
  // C shares B's LAN: it talks to B at B's private address.
  const c = await sim.createNode({ identity: Identity.fromString('c'), stack: stack([r1.address, b.address], []), behind: natB })
  await sim.runFor(6_000)
  const bExt = (b.stack.find(HolePuncher) as any).externalAddress()
  t.is(bExt?.host, natB.publicAddress, "r1 and r2 agree on B's mapped address")
  const bKad = b.stack.find(Kademlia) as any
  t.is(bKad.ownExternalAddress()?.key, bExt.key, 'B put it into its own record')
  t.is(bKad.stats().own_external_updates, 1)
  // The record C holds (and serves) for B: the private address C sees, and the external address.
  const atC = (c.stack.find(Kademlia) as any).getPeer(b.id)
  t.is(atC?.address.key, b.address.key, 'C sees B at its private address')
  t.is(atC?.external?.key, bExt.key, "C's record of B carries B's external address")

  const a = await sim.createNode({ identity: Identity.fromString('a'), stack: stack([r1.address], []), behind: natA })
  await sim.runFor(3_000)
  let found: any = null
  a.findPeer(b.id, { timeout: 10_000 }).then((p) => (found = p), (e) => (found = e))
  await sim.runUntil(() => found !== null, { timeout: 20_000 })
  t.true(found?.id?.equals(b.id), String(found))
  t.is(found.external?.key, bExt.key, "the record A got carries B's external address")
  // Whoever named B can introduce A there: connect needs no introducer (it asks Kademlia).
  t.truthy((a.stack.find(Kademlia) as any).introducerOf(found.external))

  const hp = a.stack.find(HolePuncher) as any
  let result: any = null
  hp.connect(found.external).then((x: unknown) => (result = x), (e: unknown) => (result = e))
  await sim.runUntil(() => result !== null, { timeout: 20_000 })
  t.is(result?.path, 'punched', String(result?.code ?? ''))
  let got: string | null = null
  b.on('message', (_from, data) => (got = data.toString()))
  await a.send(found.external, Buffer.from('hello at the external address'))
  await sim.runUntil(() => got !== null, { timeout: 5_000 })
  t.is(got, 'hello at the external address')
})

test('without a layer that learns the external address, Kademlia records carry none (unchanged behaviour)', async (t) => {
  const sim = new SimulatedNetwork({ seed: 12, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const r = await sim.createNode({ identity: Identity.fromString('r'), stack: stack([], [], false) })
  const b = await sim.createNode({ identity: Identity.fromString('b'), stack: stack([r.address], [], false) })
  const a = await sim.createNode({ identity: Identity.fromString('a'), stack: stack([r.address], [], false) })
  await sim.runFor(3_000)
  let found: any = null
  a.findPeer(b.id, { timeout: 10_000 }).then((p) => (found = p), (e) => (found = e))
  await sim.runUntil(() => found !== null, { timeout: 20_000 })
  t.true(found?.id?.equals(b.id), String(found))
  t.is(found.external, null)
  const bKad = b.stack.find(Kademlia) as any
  t.is(bKad.ownExternalAddress(), null)
  t.is(bKad.stats().own_external_updates, undefined)
})
