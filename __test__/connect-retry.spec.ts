/**
 * connect(id) to a node that joins while the first lookup is running: the lookup finds nothing,
 * connect asks discovery once more 100 ms later and connects. In virtual time, so the order of
 * events is fixed.
 */
import test from 'ava'
import { Identity, Kademlia, Noise, ReliableUdp, SimulatedNetwork } from '../dist/index.js'

test('connect(id): a lookup that found nothing is asked once more, and a node that joined meanwhile is connected', async (t) => {
  const sim = new SimulatedNetwork({ seed: 11, latency: 5 })
  t.teardown(() => sim.close())
  const boot = await sim.createNode({ stack: [new Kademlia(), new ReliableUdp(), new Noise()] })
  const x = await sim.createNode({ stack: [new Kademlia({ bootstrap: [boot.address] }), new ReliableUdp(), new Noise()] })
  await sim.runFor(2000)
  const identity = Identity.fromSeed(Buffer.alloc(32, 0x5e))
  let result: unknown = null
  const dial = x.connect(identity.id, { signal: AbortSignal.timeout(60_000) }).then(
    (c) => (result = c),
    (e: unknown) => (result = e),
  )
  // The first lookup asks what x knows (a few 10 ms round trips) and finds nobody.
  await sim.runFor(40)
  t.is(x.stats().app?.connections_find_retries, 1, 'the first lookup found nothing and a retry is pending')
  t.is(result, null)
  // The target joins before the retry.
  const y = await sim.createNode({ identity, stack: [new Kademlia({ bootstrap: [boot.address] }), new ReliableUdp(), new Noise()] })
  await sim.runFor(2000)
  await dial
  t.true(result !== null && !(result instanceof Error), `connected (got ${String(result)})`)
  t.deepEqual((result as { remote: { id: Buffer } }).remote.id, y.id)
})
