/**
 * Value queries that must hear from all k closest nodes (put, putMutable, getMutable) keep
 * `valueAlpha` (10) queries in flight, topic queries and immutable gets `alpha` (3): on a
 * SimulatedNetwork with a fixed 10 ms link latency, a put takes a few round trips, not about
 * k / 3 of them, and its datagrams do not grow. Imports the BUILT package.
 */
import test from 'ava'
import { createHash } from 'node:crypto'

import { Dht, Identity, Kademlia, type Node, SimulatedNetwork } from '../dist/index.js'

/** Virtual ms and datagrams (sent by `node`) a DHT operation takes. */
async function timed<T>(sim: SimulatedNetwork, node: Node, op: () => Promise<T>): Promise<{ ms: number; sent: number; value: T }> {
  const sent0 = Number(node.stats().sim?.sent ?? 0)
  const t0 = sim.now
  let value: T | undefined
  let done = false
  void op().then((v) => {
    value = v
    done = true
  })
  await sim.runUntil(() => done, { timeout: 30_000 })
  return { ms: sim.now - t0, sent: Number(node.stats().sim?.sent ?? 0) - sent0, value: value as T }
}

async function network(valueAlpha: number | undefined): Promise<{ sim: SimulatedNetwork; nodes: Node[] }> {
  const sim = new SimulatedNetwork({ seed: 7, defaultLink: { latency: 10 } })
  const dht = { maxPerSource: 1_000_000, putRate: 1_000_000, putBurst: 1_000_000, ...(valueAlpha === undefined ? {} : { valueAlpha }) }
  const nodes = await sim.createNodes(40, {
    stack: (i) => [new Dht(dht), new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], seed: i + 1 })],
    identity: (i) => Identity.fromSeed(createHash('sha256').update(`dht-alpha-${i}`).digest()),
  })
  await sim.runFor(20_000)
  return { sim, nodes }
}

const OWNERS = [0, 1, 2, 3, 4].map((i) => Identity.fromSeed(createHash('sha256').update(`dht-alpha-owner-${i}`).digest()))

test.serial('put, putMutable and getMutable converge in a few round trips with valueAlpha 10; alpha 3 takes several times longer', async (t) => {
  const runs: Record<string, { put: number; putSent: number; mput: number; mget: number }> = {}
  for (const [name, valueAlpha] of [['default', undefined], ['3', 3]] as const) {
    const { sim, nodes } = await network(valueAlpha)
    try {
      const [w, r] = [nodes[5]!, nodes[17]!]
      const put = await timed(sim, w, () => w.dht.put(Buffer.from('a value')))
      t.true(put.value.stored > 0)
      const got = await timed(sim, r, () => r.dht.get(put.value.key))
      t.deepEqual(got.value, Buffer.from('a value'))
      // Mutable values of the same five owners in both networks (one key's route is a small
      // sample: the times are summed over the five).
      let [mputMs, mgetMs] = [0, 0]
      for (const owner of OWNERS) {
        const mput = await timed(sim, w, () => w.dht.putMutable(owner, Buffer.from('v1'), { seq: 1 }))
        const mget = await timed(sim, r, () => r.dht.getMutable(owner.publicKey!, { minSeq: 1 }))
        t.is(mget.value?.seq, 1)
        mputMs += mput.ms
        mgetMs += mget.ms
      }
      runs[name] = { put: put.ms, putSent: put.sent, mput: mputMs, mget: mgetMs }
    } finally {
      await sim.close()
    }
  }
  t.log(JSON.stringify(runs))
  const a = runs.default!
  const b = runs['3']!
  // One round trip is 20 virtual ms: a put is a query plus the puts, a few round trips in all.
  t.true(a.put <= 120, `put took ${a.put} virtual ms`)
  t.true(a.put * 2 <= b.put, `valueAlpha 10: ${a.put} ms, 3: ${b.put} ms`)
  t.true(a.mput * 2 <= b.mput, `putMutable: ${a.mput} ms vs ${b.mput} ms`)
  t.true(a.mget * 2 <= b.mget, `getMutable: ${a.mget} ms vs ${b.mget} ms`)
  t.true(a.putSent <= b.putSent * 1.25, `datagrams of a put: ${a.putSent} vs ${b.putSent}`)
})
