/**
 * Discovery meets NAT traversal: a peer found through Kademlia behind a port-restricted NAT is
 * reached by hole punching through the peer that told us about it (HolePuncher.connect without
 * an explicit introducer), in virtual time. Imports the BUILT package (dist/).
 */
import test from 'ava'

import { HolePuncher, Identity, Kademlia, SimulatedNetwork } from '../dist/index.js'

test('Kademlia records who told us about a NATed peer; HolePuncher punches through that peer', async (t) => {
  const sim = new SimulatedNetwork({ seed: 9, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const stack = (bootstrap: unknown[]) => [new Kademlia({ bootstrap: bootstrap as never[] }), new HolePuncher()]
  const r = await sim.createNode({ identity: Identity.fromString('rendezvous'), stack: stack([]) })
  const natA = sim.createNat({ type: 'port-restricted' })
  const natB = sim.createNat({ type: 'port-restricted' })
  const a = await sim.createNode({ identity: Identity.fromString('a'), stack: stack([r.address]), behind: natA })
  const b = await sim.createNode({ identity: Identity.fromString('b'), stack: stack([r.address]), behind: natB })
  await sim.runFor(3_000)

  let found: any = null
  a.findPeer(b.id, { timeout: 10_000 }).then((p) => (found = p), (e) => (found = e))
  await sim.runUntil(() => found !== null, { timeout: 20_000 })
  t.true(found?.id?.equals(b.id), `A found B through Kademlia (${String(found)})`)
  const kad = a.stack.find(Kademlia) as any
  t.deepEqual(kad.introducerOf(found.address)?.key, r.address.key, 'the rendezvous told A about B')

  // Straight to B's mapped address nothing gets through: B's NAT has never seen A.
  const hp = a.stack.find(HolePuncher) as any
  let result: any = null
  hp.connect(found.address).then((x: unknown) => (result = x), (e: unknown) => (result = e))
  await sim.runUntil(() => result !== null, { timeout: 20_000 })
  t.is(result?.path, 'punched', `punched through the introducer Kademlia named (${String(result?.code ?? '')})`)

  let got: string | null = null
  b.on('message', (_from, data) => (got = data.toString()))
  await a.send(found.address, Buffer.from('hello through the NAT'))
  await sim.runUntil(() => got !== null, { timeout: 5_000 })
  t.is(got, 'hello through the NAT')
})

test('HolePuncher.connect without an introducer and without discovery rejects with ERR_DECCOM_INTRODUCTION_FAILED', async (t) => {
  const sim = new SimulatedNetwork({ seed: 3 })
  t.teardown(() => sim.close())
  const [a] = await sim.createNodes(1, { stack: () => [new HolePuncher()] })
  const err = await t.throwsAsync((a.stack.find(HolePuncher) as any).connect('10.9.9.9:4000'))
  t.is((err as any).code, 'ERR_DECCOM_INTRODUCTION_FAILED')
})
