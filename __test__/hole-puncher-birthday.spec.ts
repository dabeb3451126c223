/**
 * Birthday-punch decisions of HolePuncher in virtual time (SimulatedNetwork, RFC 4787 NATs): which
 * mapping a node measures from two observers, and what the introduction tells each side (INTRO_NAT
 * and the target's INTRO_REQ_NAT back). The simulator's transport has no auxiliary sockets, so the
 * endpoint-dependent side counts `birthday_unsupported` and the punch ends as before; the punch
 * itself is tested across real NATs in nat-birthday.spec.ts. Imports the BUILT package (dist/).
 */
import test from 'ava'

import { HolePuncher, type NatType, SimulatedNetwork, toAddress } from '../dist/index.js'

const R1 = toAddress('1.0.0.1:3478')
const R2 = toAddress('1.0.0.2:3478')

async function world(typeA: NatType, typeB: NatType, opts: Record<string, unknown> = {}) {
  const sim = new SimulatedNetwork({ seed: 11, defaultLink: { latency: 5 } })
  for (const r of [R1, R2]) await sim.createNode({ address: r, stack: [new HolePuncher({ rendezvous: [] })] })
  const mk = (type: NatType) => sim.createNode({ behind: sim.createNat({ type }), stack: [new HolePuncher({ rendezvous: [R1, R2], punchTimeout: 1000, ...opts })] })
  const a = await mk(typeA)
  const b = await mk(typeB)
  await sim.runFor(200) // probes: both rendezvous servers observe both nodes
  const hp = (n: typeof a): any => n.stack.find(HolePuncher)
  const r1 = sim.nodes.find((n) => n.address.key === R1.key)!
  return { sim, a, b, hpA: hp(a), hpB: hp(b), hpR: hp(r1) }
}

test('natMapping: dependent behind a symmetric NAT, independent behind cone NATs, unknown with one observer', async (t) => {
  const { sim, hpA, hpB } = await world('port-restricted', 'symmetric')
  t.teardown(() => sim.close())
  t.is(hpA.natMapping(), 'independent')
  t.is(hpB.natMapping(), 'dependent')
  const one = new SimulatedNetwork({ seed: 2 })
  t.teardown(() => one.close())
  await one.createNode({ address: R1, stack: [new HolePuncher({ rendezvous: [] })] })
  const n = await one.createNode({ behind: one.createNat({ type: 'symmetric' }), stack: [new HolePuncher({ rendezvous: [R1] })] })
  await one.runFor(200)
  t.is((n.stack.find(HolePuncher) as any).natMapping(), 'unknown')
})

async function punch(sim: SimulatedNetwork, hp: any, target: unknown): Promise<any> {
  let r: any = null
  hp.connect(target, R1).then((x: unknown) => (r = x), (e: unknown) => (r = e))
  await sim.runUntil(() => r !== null, { timeout: 5000 })
  return r
}

test('a dependent requester asks with INTRO_REQ_NAT; the cone target learns its mapping and probes random ports (bounded)', async (t) => {
  const { sim, hpA, hpB, hpR } = await world('port-restricted', 'symmetric', { birthdayMaxProbes: 50, birthdayProbeRate: 500 })
  t.teardown(() => sim.close())
  const aMapped = hpR.introducible().find((x: any) => x.host !== R2.host && hpA.externalAddress()?.key === x.key)
  t.truthy(aMapped)
  const r = await punch(sim, hpB, aMapped)
  t.is(r.code, 'ERR_DECCOM_PUNCH_TIMEOUT', 'no auxiliary sockets in the simulator: the punch fails as before')
  const sa = hpA.stats()
  const sb = hpB.stats()
  t.is(sb.birthday_unsupported, 1, 'the dependent side would open auxiliary sockets')
  t.is(sa.birthday_probes_sent, 50, 'the cone side probed, up to birthdayMaxProbes')
  t.is(hpR.stats().introductions_made, 1)
})

test('a dependent target tells the cone requester its mapping through the introducer (INTRO_REQ_NAT back)', async (t) => {
  const { sim, hpA, hpB, hpR } = await world('port-restricted', 'symmetric', { birthdayMaxProbes: 30 })
  t.teardown(() => sim.close())
  const bMapped = hpR.introducible().find((x: any) => hpB.observations().some((o: any) => o.observer.key === R1.key && o.address.key === x.key))
  t.truthy(bMapped)
  await punch(sim, hpA, bMapped)
  t.is(hpR.stats().introductions_made, 2, "A's request, then B's request naming A")
  t.is(hpB.stats().intro_requests_sent >= 1, true)
  t.is(hpA.stats().birthday_probes_sent, 30, 'A learned that B maps per destination and probed')
})

test('two dependent sides: nobody probes, and birthday: false turns it all off', async (t) => {
  for (const birthday of [true, false]) {
    const { sim, hpA, hpB, hpR } = await world('symmetric', 'symmetric', { birthday })
    const bMapped = hpR.introducible().find((x: any) => hpB.observations().some((o: any) => o.observer.key === R1.key && o.address.key === x.key))
    await punch(sim, hpA, bMapped)
    const all = { ...hpA.stats(), ...hpB.stats() }
    t.is(hpA.stats().birthday_probes_sent ?? 0, 0)
    t.is(hpB.stats().birthday_probes_sent ?? 0, 0)
    if (!birthday) t.is(all.birthday_unsupported ?? 0, 0, 'birthday: false tries nothing')
    else t.is(hpR.stats().introductions_made, 2, 'the dependent target still tells the requester')
    sim.close()
  }
})
