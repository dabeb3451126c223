/**
 * DHT topics on the SimulatedNetwork (virtual time): N nodes (default 500, about 70 s on a busy
 * 2-core machine; DHT_SIM_NODES sets another size), 100 topics of 5–20 members each;
 * every member meets every other member of its topic (≥ 99 % of pairs); then 30 % of the nodes
 * close, the remaining members' rounds (lookup + announce) run, and a fresh lookup by every live
 * member returns every other live member (≥ 99 % of pairs). Imports the BUILT package.
 */
import test from 'ava'
import { createHash } from 'node:crypto'

import { Dht, Identity, Kademlia, type Node, SimulatedNetwork, type Topic } from '../dist/index.js'
import { rng } from './helpers/wait.ts'

const N = Number(process.env.DHT_SIM_NODES ?? 500)
const TOPICS = 100
const ROUND = 60_000
const sim = new SimulatedNetwork({ seed: 16, defaultLink: { latency: 10, jitter: 5 } })
test.after.always(() => sim.close())

test.serial(`${N} simulated nodes, ${TOPICS} topics of 5–20: members meet (>= 99 %), and again after 30 % leave`, async (t) => {
  const t0 = performance.now()
  const nodes: Node[] = []
  const dht = { announceTtl: 4 * ROUND, lookupInterval: ROUND, k: 10 }
  for (let b = 0; b < N; b += 50) {
    nodes.push(
      ...(await sim.createNodes(Math.min(50, N - b), {
        stack: (i) => [new Dht(dht), new Kademlia({ bootstrap: b + i === 0 ? [] : ['10.0.0.1:4000'], refreshInterval: ROUND, k: 10, seed: b + i + 1 })],
        identity: (i) => Identity.fromSeed(createHash('sha256').update(`dht-sim-${b + i}`).digest()),
      })),
    )
    await sim.runFor(2000)
  }
  await sim.runFor(ROUND)
  const r = rng(3)
  const groups: { topic: Buffer; members: number[]; joined: Topic[] }[] = []
  for (let g = 0; g < TOPICS; g++) {
    const size = 5 + Math.floor(r() * 16)
    const members = new Set<number>()
    while (members.size < size) members.add(Math.floor(r() * N))
    groups.push({ topic: createHash('sha256').update(`topic-${g}`).digest(), members: [...members], joined: [] })
  }
  for (const g of groups) for (const m of g.members) g.joined.push(nodes[m]!.join(g.topic))
  await sim.runFor(10_000)
  const pairs = (alive: (i: number) => boolean, peersOf: (g: (typeof groups)[number], k: number) => Set<string>): [number, number] => {
    let ok = 0
    let total = 0
    for (const g of groups) {
      g.members.forEach((a, ia) => {
        if (!alive(a)) return
        const seen = peersOf(g, ia)
        for (const b of g.members) {
          if (b === a || !alive(b)) continue
          total++
          if (seen.has(nodes[b]!.identity.idHex)) ok++
        }
      })
    }
    return [ok, total]
  }
  const [ok1, total1] = pairs(() => true, (g, k) => new Set(g.joined[k]!.peers().map((p) => p.id!.toString('hex'))))
  t.log(`joined: ${ok1}/${total1} ordered pairs met within 10 s virtual (${(performance.now() - t0).toFixed(0)} ms real)`)
  t.true(ok1 >= 0.99 * total1)

  // 30 % of the nodes close; the live members' rounds re-announce to the new closest nodes.
  const gone = new Set<number>()
  while (gone.size < Math.floor(0.3 * N)) gone.add(1 + Math.floor(r() * (N - 1)))
  await Promise.all([...gone].map((i) => nodes[i]!.close()))
  await sim.runFor(2 * ROUND + 5000)
  const fresh = new Map<string, Set<string>>()
  let settled = 0
  let asked = 0
  for (const g of groups) {
    g.members.forEach((a) => {
      if (gone.has(a)) return
      asked++
      void nodes[a]!.dht.lookup(g.topic).then(
        (peers) => {
          fresh.set(`${g.topic.toString('hex')}/${a}`, new Set(peers.map((p) => p.id!.toString('hex'))))
          settled++
        },
        () => settled++,
      )
    })
  }
  await sim.runUntil(() => settled === asked, { timeout: 60_000 })
  const [ok2, total2] = pairs((i) => !gone.has(i), (g, k) => fresh.get(`${g.topic.toString('hex')}/${g.members[k]}`) ?? new Set())
  t.log(`after 30 % left: ${ok2}/${total2} ordered pairs found by a fresh lookup (${(performance.now() - t0).toFixed(0)} ms real, ${sim.now.toFixed(0)} ms virtual)`)
  t.true(ok2 >= 0.99 * total2)
})
