/**
 * `node.connect()` through NATs in the SimulatedNetwork: the direct HELLO gets no answer, the
 * stack's HolePuncher punches (port-restricted cone pair) or falls back to its relay (symmetric
 * pair), and the connection's streams work over that path; `conn.path` says which. Virtual time,
 * JavaScript-driven ReliableUdp. Imports the BUILT package (dist/).
 */
import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'

import { type Address, type Connection, HolePuncher, type NatType, type Node, Relay, ReliableUdp, SimulatedNetwork, type Stream, toAddress } from '../dist/index.js'

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

for (const [type, expected] of [
  ['port-restricted', 'punched'],
  ['symmetric', 'relayed'],
] as Array<[NatType, string]>) {
  test(`connect through two ${type} NATs: conn.path is '${expected}' and a stream arrives byte-exact`, async (t) => {
    const sim = new SimulatedNetwork({ seed: 7, defaultLink: { latency: 5 } })
    t.teardown(() => sim.close())
    const R = toAddress('1.0.0.1:3478')
    await sim.createNode({ address: R, stack: [new HolePuncher({ relay: true, rendezvous: [] }), new Relay({ serve: { maxSessions: 8 } })] })
    const mk = (): Promise<Node> =>
      sim.createNode({
        behind: sim.createNat({ type }),
        connections: { directTimeout: 300 },
        stack: [new ReliableUdp({ seed: 3 }), new HolePuncher({ relay: true, punchTimeout: 1000, rendezvous: [R] }), new Relay()],
      })
    const a = await mk()
    const b = await mk()
    await sim.runFor(100) // probes: the rendezvous learns both mapped addresses
    const rhp = sim.nodes.find((n) => n.address.key === R.key)!.stack.find(HolePuncher)!
    const bMapped = rhp.introducible().find((m: Address) => m.host !== b.address.host && sim.nats.some((n) => n.publicAddress === m.host && n.mappingFor(b.address, R)?.key === m.key))
    t.truthy(bMapped, "the rendezvous knows b's mapped address")

    const got: Buffer[] = []
    let done = false
    let accepted = 0
    b.on('connection', () => accepted++)
    b.on('connection', (c: Connection) =>
      c.on('stream', (s: Stream) => {
        s.on('data', (d: Buffer) => got.push(d))
        s.on('end', () => {
          done = true
          s.end()
        })
      }),
    )
    let conn: Connection | undefined
    let err: unknown
    a.connect(bMapped!).then((c) => (conn = c), (e) => (err = e))
    await sim.runUntil(() => conn !== undefined || err !== undefined, { timeout: 20_000 })
    t.is(err, undefined)
    t.is(conn?.path, expected)
    const data = randomBytes(300_000)
    const s = await conn!.openStream()
    s.resume()
    s.end(data)
    await sim.runUntil(() => done, { timeout: 30_000 })
    t.is(sha(Buffer.concat(got)), sha(data))
    t.is(accepted, 1, 'the HELLO that went direct (and arrived) and the one after the punch open one connection')
    t.log(`${type}: ${conn?.path}, ${data.length} bytes at ${sim.now.toFixed(0)} virtual ms`)
  })
}
