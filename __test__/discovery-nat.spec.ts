/**
 * Discovery meets NAT traversal, in virtual time: a peer found through Kademlia behind a
 * port-restricted NAT is reached by hole punching through the peer that told us about it
 * (HolePuncher.connect without an explicit introducer), and Kademlia's records carry the external
 * address a HolePuncher below learned. Imports the BUILT package (dist/).
 */
import test, { type ExecutionContext } from 'ava'

import { HolePuncher, Identity, Kademlia, SimulatedNetwork } from '../dist/index.js'

type SimNode = Awaited<ReturnType<SimulatedNetwork['createNode']>>

/** `a.findPeer(id)` run in virtual time: the Peer, or the error. */
async function find(sim: SimulatedNetwork, a: SimNode, id: Buffer): Promise<any> {
  let found: any = null
  a.findPeer(id, { timeout: 10_000 }).then((p) => (found = p), (e) => (found = e))
  await sim.runUntil(() => found !== null, { timeout: 20_000 })
  return found
}

/** A connects to `target` with its HolePuncher, naming no introducer; then a message reaches B. */
async function punchAndSend(t: ExecutionContext, sim: SimulatedNetwork, a: SimNode, b: SimNode, target: unknown, text: string): Promise<void> {
  const hp = a.stack.find(HolePuncher) as any
  let result: any = null
  hp.connect(target).then((x: unknown) => (result = x), (e: unknown) => (result = e))
  await sim.runUntil(() => result !== null, { timeout: 20_000 })
  t.is(result?.path, 'punched', `punched through the introducer Kademlia named (${String(result?.code ?? '')})`)
  let got: string | null = null
  b.on('message', (_from, data) => (got = data.toString()))
  await a.send(target as never, Buffer.from(text))
  await sim.runUntil(() => got !== null, { timeout: 5_000 })
  t.is(got, text)
}

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

  const found = await find(sim, a, b.id)
  t.true(found?.id?.equals(b.id), `A found B through Kademlia (${String(found)})`)
  const kad = a.stack.find(Kademlia) as any
  t.deepEqual(kad.introducerOf(found.address)?.key, r.address.key, 'the rendezvous told A about B')
  // Straight to B's mapped address nothing gets through: B's NAT has never seen A.
  await punchAndSend(t, sim, a, b, found.address, 'hello through the NAT')
})

test('HolePuncher.connect without an introducer and without discovery rejects with ERR_DECCOM_INTRODUCTION_FAILED', async (t) => {
  const sim = new SimulatedNetwork({ seed: 3 })
  t.teardown(() => sim.close())
  const [a] = await sim.createNodes(1, { stack: () => [new HolePuncher()] })
  const err = await t.throwsAsync((a.stack.find(HolePuncher) as any).connect('10.9.9.9:4000'))
  t.is((err as any).code, 'ERR_DECCOM_INTRODUCTION_FAILED')
})

// ---- the external address in Kademlia's records ------------------------------------------------

const withObservers = (bootstrap: unknown[], rendezvous: unknown[], withHp = true) => {
  const kad = new Kademlia({ bootstrap: bootstrap as never[] })
  return withHp ? [kad, new HolePuncher({ rendezvous: rendezvous as never[], probeInterval: 1_000 })] : [kad]
}

test('a NATed node is advertised by Kademlia at the external address its HolePuncher learned, and punched there', async (t) => {
  const sim = new SimulatedNetwork({ seed: 11, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const r1 = await sim.createNode({ identity: Identity.fromString('r1'), stack: withObservers([], []) })
  const r2 = await sim.createNode({ identity: Identity.fromString('r2'), stack: withObservers([r1.address], []) })
  const natA = sim.createNat({ type: 'port-restricted' })
  const natB = sim.createNat({ type: 'port-restricted' })
  const b = await sim.createNode({ identity: Identity.fromString('b'), stack: withObservers([r1.address], [r1.address, r2.address]), behind: natB })
  // C shares B's LAN: it talks to B at B's private address.
  const c = await sim.createNode({ identity: Identity.fromString('c'), stack: withObservers([r1.address, b.address], []), behind: natB })
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

  const a = await sim.createNode({ identity: Identity.fromString('a'), stack: withObservers([r1.address], []), behind: natA })
  await sim.runFor(3_000)
  const found = await find(sim, a, b.id)
  t.true(found?.id?.equals(b.id), String(found))
  t.is(found.external?.key, bExt.key, "the record A got carries B's external address")
  // Whoever named B can introduce A there: connect needs no introducer (it asks Kademlia).
  t.truthy((a.stack.find(Kademlia) as any).introducerOf(found.external))
  await punchAndSend(t, sim, a, b, found.external, 'hello at the external address')
})

test('without a layer that learns the external address, Kademlia records carry none (unchanged behaviour)', async (t) => {
  const sim = new SimulatedNetwork({ seed: 12, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const r = await sim.createNode({ identity: Identity.fromString('r'), stack: withObservers([], [], false) })
  const b = await sim.createNode({ identity: Identity.fromString('b'), stack: withObservers([r.address], [], false) })
  const a = await sim.createNode({ identity: Identity.fromString('a'), stack: withObservers([r.address], [], false) })
  await sim.runFor(3_000)
  const found = await find(sim, a, b.id)
  t.true(found?.id?.equals(b.id), String(found))
  t.is(found.external, null)
  const bKad = b.stack.find(Kademlia) as any
  t.is(bKad.ownExternalAddress(), null)
  t.is(bKad.stats().own_external_updates, undefined)
})
