// A research run in virtual time: N Kademlia nodes (default 1,000; `--nodes N`) join a
// SimulatedNetwork through one bootstrap node, 100 at a time, then every node looks up a random
// other one. The network delivers the Kademlia nodes' datagrams natively (`nativeDelivery`): the
// same events in the same order as the JavaScript path, several times faster. Prints the join's
// real time, the traffic, the lookups found and their hops, and checks them (exit 1 if a lookup in
// a thousand fails).
// Run: npx ava __test__/examples.spec.ts  (compiles it to .tmp/examples/sim-swarm.mjs and runs it;
// afterwards: node .tmp/examples/sim-swarm.mjs --nodes 5000)
import { Kademlia, type Node, SimulatedNetwork } from 'deccom'

const arg = process.argv.indexOf('--nodes')
const N = arg >= 0 ? Number(process.argv[arg + 1]) : 1000
if (!Number.isInteger(N) || N < 2) {
  console.error('sim-swarm: --nodes takes a whole number >= 2')
  process.exit(2)
}

// 10 ms links with up to 40 ms of jitter; every random choice comes from the seed.
const sim = new SimulatedNetwork({ seed: 7, defaultLink: { latency: 10, jitter: 40 }, trace: false, nativeDelivery: true })
const kad = (n: Node): Kademlia => n.stack.find(Kademlia)!
const t0 = performance.now()
const nodes: Node[] = []
for (let b = 0; b < N; b += 100) {
  const batch = await sim.createNodes(Math.min(100, N - b), {
    stack: (i) => [new Kademlia({ bootstrap: b + i === 0 ? [] : ['10.0.0.1:4000'] })],
  })
  nodes.push(...batch)
  await sim.runFor(2000) // virtual ms
}
await sim.runFor(30_000)
const joined = nodes.filter((n) => kad(n).joined).length
const { sent = 0, events = 0, native_events: native = 0 } = sim.stats()
const seconds = (performance.now() - t0) / 1000
console.log(`${joined}/${N} joined in ${(sim.now / 1000).toFixed(0)} virtual s, ${seconds.toFixed(1)} real s`)
console.log(`${sent.toLocaleString('en')} datagrams (${Math.round(sent / (N - 1))} per joining node), ${Math.round(sent / seconds / 1000)}k per real second, ${Math.round((100 * native) / events)} % of the events run natively`)

// Every node looks up a random other one (findPeer: stop once the target answers).
const hops = new Map<number, number>()
let found = 0
let settled = 0
for (const from of nodes) {
  let to = nodes[sim.random.int(N)]!
  while (to === from) to = nodes[sim.random.int(N)]!
  kad(from)
    .lookup(to.id, { stopAtTarget: true })
    .then((r) => {
      if (r.peer?.id?.equals(to.id)) {
        found++
        hops.set(r.hops, (hops.get(r.hops) ?? 0) + 1)
      }
    })
    .catch(() => {})
    .finally(() => settled++)
}
await sim.runUntil(() => settled === N, { timeout: 120_000 })
console.log(`lookups: ${found}/${N} found; hops: ${[...hops].sort((a, b) => a[0] - b[0]).map(([h, c]) => `${h}: ${c}`).join(', ')}`)
await sim.close()
if (joined < N || found < N * 0.999) process.exit(1)
