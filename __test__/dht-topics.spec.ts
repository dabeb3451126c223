/**
 * DHT topics on real loopback sockets: 10 nodes that join one topic at the same moment meet each
 * other (all 45 pairs, both ways) within 1 s; 20 nodes that join with `connect: true` get a
 * 'connection' for every other member; a leave withdraws the record; a node that stores an
 * announcer's record itself meets it through a listener added after join(). Imports the BUILT package.
 */
import test from 'ava'
import { createHash } from 'node:crypto'

import { Dht, Kademlia, Node, Noise, ReliableUdp, Topic } from '../dist/index.js'

const host = '127.0.0.1'
const topicOf = (s: string): Buffer => createHash('sha256').update(s).digest()
const dhtOpts = { putRate: 10_000, putBurst: 10_000, maxPerSource: 100_000 }

async function network(n: number, stack: () => any[] = () => []): Promise<Node[]> {
  const boot = await Node.create({ host, port: 0, stack: [new Dht(dhtOpts), new Kademlia(), ...stack()] })
  const nodes = [boot]
  for (let i = 1; i < n; i++) {
    nodes.push(await Node.create({ host, port: 0, stack: [new Dht(dhtOpts), new Kademlia({ bootstrap: [boot.address] }), ...stack()] }))
  }
  await Promise.all(nodes.map((x) => x.ready({ signal: AbortSignal.timeout(10_000) })))
  return nodes
}

test.serial('10 nodes join one topic at the same moment: all 45 pairs meet within 1 s', async (t) => {
  const nodes = await network(12)
  try {
    const members = nodes.slice(2)
    const topic = topicOf('ten at once')
    const t0 = performance.now()
    const topics: Topic[] = members.map((m) => m.join(topic))
    const met = (): number => {
      let pairs = 0
      for (let i = 0; i < members.length; i++) {
        for (let j = i + 1; j < members.length; j++) {
          const a = topics[i]!.peers().some((p) => p.id!.equals(members[j]!.id))
          const b = topics[j]!.peers().some((p) => p.id!.equals(members[i]!.id))
          if (a && b) pairs++
        }
      }
      return pairs
    }
    let elapsed = Infinity
    while (performance.now() - t0 < 3000) {
      if (met() === 45) {
        elapsed = performance.now() - t0
        break
      }
      await new Promise((r) => setTimeout(r, 5))
    }
    const s = members.map((m) => m.stats().dht!)
    const sent = s.reduce((a, x) => a + (x.sent ?? 0) + (x.replies_sent ?? 0) + (x.notifies_sent ?? 0), 0)
    t.log(`45 pairs met after ${elapsed.toFixed(1)} ms; ${sent} DHT datagrams sent by the members; notifies ${s.reduce((a, x) => a + (x.notifies_received ?? 0), 0)}`)
    t.is(met(), 45)
    t.true(elapsed <= 1000, `met after ${elapsed} ms`)
    await Promise.all(topics.map((x) => x.flushed()))
    // Every record was verified and none refused.
    t.true(s.every((x) => (x.dropped_bad_records ?? 0) === 0))
    // Leave: the record is withdrawn; a fresh lookup no longer returns it.
    await topics[0]!.leave()
    const left = await nodes[0]!.dht.lookup(topic)
    t.false(left.some((p) => p.id!.equals(members[0]!.id)))
    t.is(left.length, 9)
  } finally {
    await Promise.all(nodes.map((x) => x.close()))
  }
})

test.serial('20 nodes join with connect: true: a connection between every pair, seen on both sides', async (t) => {
  const nodes = await network(21, () => [new ReliableUdp(), new Noise()])
  try {
    const members = nodes.slice(1)
    const topic = topicOf('twenty connect')
    const seen = members.map(() => new Set<string>())
    members.forEach((m, i) => m.on('connection', (c) => seen[i]!.add(c.remote.id!.toString('hex'))))
    const t0 = performance.now()
    for (const m of members) m.join(topic, { connect: true })
    const deadline = performance.now() + 10_000
    while (performance.now() < deadline && !seen.every((s) => s.size === 19)) await new Promise((r) => setTimeout(r, 10))
    t.log(`every member saw 19 connections after ${(performance.now() - t0).toFixed(0)} ms`)
    members.forEach((m, i) => {
      for (const o of members) if (o !== m) t.true(seen[i]!.has(o.id.toString('hex')), 'a connection both ways')
    })
  } finally {
    await Promise.all(nodes.map((x) => x.close()))
  }
})

test.serial("a node storing an announcer's record meets it through a 'peer' listener added right after join()", async (t) => {
  const nodes = await network(6)
  try {
    const [a, b] = [nodes[1]!, nodes[2]!]
    const topic = topicOf('stored here')
    await a.join(topic).flushed()
    t.true((b.stats().dht!.stored_records ?? 0) >= 1, 'b stores the record of a')
    const tb = b.join(topic)
    const met = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 2000)
      tb.on('peer', (p) => {
        if (p.id!.equals(a.id)) {
          clearTimeout(timer)
          resolve(true)
        }
      })
    })
    t.true(met, "b's listener heard of a")
  } finally {
    await Promise.all(nodes.map((x) => x.close()))
  }
})

test.serial('node.join and node.dht without a Dht layer throw ERR_DECCOM_STACK_INVALID', async (t) => {
  const n = await Node.create({ host, port: 0, stack: [new Kademlia()] })
  try {
    t.throws(() => n.join(Buffer.alloc(32)), { code: 'ERR_DECCOM_STACK_INVALID' })
    t.throws(() => n.dht, { code: 'ERR_DECCOM_STACK_INVALID' })
  } finally {
    await n.close()
  }
})
