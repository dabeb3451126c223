/**
 * Kademlia on the SimulatedNetwork (virtual time): 500 nodes join through one bootstrap node, find
 * each other without loss, with 5 % loss, and after 30 % of them are closed; unsolicited and
 * malformed datagrams are dropped and counted without touching the routing table.
 * Imports the BUILT package (dist/), as a user would.
 */
import test from 'ava'
import { createRequire } from 'node:module'

import {
  type Address,
  Identity,
  Kademlia,
  type LookupResult,
  type Node,
  Noise,
  type Peer,
  Protocol,
  SimulatedNetwork,
  TAG_KAD,
  encodePeerRecord,
  toAddress,
} from '../dist/index.js'
import { rng } from './helpers/wait.ts'

const require = createRequire(import.meta.url)
const native = require('../native/index.js')

const N = 500
const PER_NODE = 20
const REFRESH = 60_000

let loss = 0
const sim = new SimulatedNetwork({ seed: 7, defaultLink: { latency: 10, jitter: 10 }, link: () => (loss > 0 ? { loss } : undefined) })
let nodes: Node[] = []
const kad = (n: Node): Kademlia => n.stack.find(Kademlia)!

/** `count` Kademlia nodes on `s` (identities `${name}-${i}`), all bootstrapping through node 0. */
function kadNodes(s: SimulatedNetwork, count: number, name: string, opts: (i: number) => { seed?: number } = () => ({})): Promise<Node[]> {
  return s.createNodes(count, {
    stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], ...opts(i) })],
    identity: (i) => Identity.fromString(`${name}-${i}`),
  })
}

interface Round {
  total: number
  ok: number
  hops: number[]
  latency: number[]
}

/** Every node in `from` looks up PER_NODE random others of `to` (stopping at the target). */
async function findAll(from: Node[], to: Node[], seed: number): Promise<Round> {
  const r = rng(seed)
  const round: Round = { total: 0, ok: 0, hops: [], latency: [] }
  const done: Promise<void>[] = []
  for (const n of from) {
    for (let j = 0; j < PER_NODE; j++) {
      let target = to[Math.floor(r() * to.length)]
      while (target === n) target = to[Math.floor(r() * to.length)]
      round.total++
      done.push(
        kad(n)
          .lookup(target.id, { stopAtTarget: true, timeout: 30_000 })
          .then(
            (res: LookupResult) => {
              if (res.peer && res.peer.address === target.address) {
                round.ok++
                round.hops.push(res.hops)
                round.latency.push(res.elapsed)
              }
            },
            () => {},
          ),
      )
    }
  }
  let settled = 0
  for (const d of done) void d.finally(() => settled++)
  await sim.runUntil(() => settled === done.length, { timeout: 120_000 })
  return round
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]
const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)]

test.after.always(() => sim.close())

test.serial(`${N} nodes join through one bootstrap node`, async (t) => {
  const t0 = performance.now()
  for (let b = 0; b < N; b += 50) {
    const batch = await sim.createNodes(Math.min(50, N - b), {
      stack: (i) => [new Kademlia({ bootstrap: b + i === 0 ? [] : ['10.0.0.1:4000'], refreshInterval: REFRESH, seed: b + i + 1 })],
      identity: (i) => Identity.fromString(`kad-${b + i}`),
    })
    nodes.push(...batch)
    await sim.runFor(2000)
  }
  await sim.runFor(REFRESH) // one periodic refresh (self-lookup + stale buckets) everywhere
  const sizes = nodes.map((n) => kad(n).size).sort((a, b) => a - b)
  t.log(`join: ${(performance.now() - t0).toFixed(0)} ms real, ${sim.now.toFixed(0)} ms virtual; table sizes min ${sizes[0]} median ${median(sizes)} max ${sizes.at(-1)}`)
  t.true(nodes.every((n) => kad(n).joined))
  t.true(sizes[0] >= 20, 'every table holds at least k peers')
})

test.serial('every node finds 20 random others: 100 % without loss, median hops <= log2(N)', async (t) => {
  const t0 = performance.now()
  const r = await findAll(nodes, nodes, 1)
  t.log(`${r.ok}/${r.total} found in ${(performance.now() - t0).toFixed(0)} ms real; hops median ${median(r.hops)} p99 ${p99(r.hops)}; virtual latency median ${median(r.latency).toFixed(0)} ms p99 ${p99(r.latency).toFixed(0)} ms`)
  t.is(r.ok, r.total)
  t.true(median(r.hops) <= Math.log2(N))
  // Node.findPeer delegates to the Kademlia layer.
  const p = nodes[3].findPeer(nodes[400].id.toString('hex'))
  let peer: Awaited<typeof p> | undefined
  void p.then((x) => (peer = x))
  await sim.runUntil(() => peer !== undefined)
  t.is(peer!.address, nodes[400].address)
  t.deepEqual(peer!.publicIdentity, nodes[400].identity.publicIdentity)
})

test.serial('>= 99 % with 5 % loss', async (t) => {
  loss = 0.05
  const t0 = performance.now()
  const r = await findAll(nodes, nodes, 2)
  loss = 0
  t.log(`${r.ok}/${r.total} found with 5 % loss in ${(performance.now() - t0).toFixed(0)} ms real; hops median ${median(r.hops)}; latency median ${median(r.latency).toFixed(0)} ms p99 ${p99(r.latency).toFixed(0)} ms`)
  t.true(r.ok >= 0.99 * r.total)
})

test.serial('after 30 % of the nodes are closed, lookups of live nodes succeed >= 99 % once refresh has run', async (t) => {
  const r0 = rng(3)
  const victims = new Set<Node>()
  while (victims.size < Math.floor(0.3 * N)) {
    const v = nodes[1 + Math.floor(r0() * (N - 1))]
    victims.add(v)
  }
  const disconnected = { n: 0 }
  for (const n of nodes) if (!victims.has(n)) kad(n).on('disconnected', () => disconnected.n++)
  await Promise.all([...victims].map((v) => v.close()))
  const live = nodes.filter((n) => !victims.has(n))
  const t0 = performance.now()
  await sim.runFor(2 * REFRESH + 5000)
  const t1 = performance.now()
  const r = await findAll(live, live, 4)
  t.log(`refresh: ${(t1 - t0).toFixed(0)} ms real, ${disconnected.n} dead entries removed; ${r.ok}/${r.total} found in ${(performance.now() - t1).toFixed(0)} ms real; hops median ${median(r.hops)}`)
  t.true(r.ok >= 0.99 * r.total)
  t.true(disconnected.n > 0)
})

/** A layer that records every datagram it sees and can send raw ones. */
class Capture extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override emits = ['onMessage']
  readonly name = 'capture'
  readonly got: { from: Address; data: Buffer; tag: number }[] = []
  onMessage(from: Address, data: Buffer, tag: number): void {
    this.got.push({ from, data: Buffer.from(data), tag })
    this.upper.onMessage(from, data, tag)
  }
  raw(to: Address, data: Uint8Array, tag: number): void {
    this.lower.send(to, data, tag)
  }
}

test('unsolicited NODES, malformed datagrams and unverified queries: dropped, counted, no table change, no amplification', async (t) => {
  const s = new SimulatedNetwork({ seed: 11 })
  t.teardown(() => s.close())
  const ns = await kadNodes(s, 20, 'small', (i) => ({ seed: i + 1 }))
  await s.runFor(10_000)
  const victim = kad(ns[5])
  const snapshot = (): string[] => victim.peers().map((p) => p.id!.toString('hex')).sort()
  const before = snapshot()
  t.true(before.length > 0)
  const cap = new Capture()
  const evil = await s.createNode({ stack: [cap], identity: Identity.fromString('evil') })
  const evilRecord = encodePeerRecord({ publicIdentity: evil.identity.publicIdentity, address: evil.address })
  const fakes = Array.from({ length: 10 }, (_, i) =>
    encodePeerRecord({ publicIdentity: Identity.fromString(`fake-${i}`).publicIdentity, address: toAddress(`10.9.0.${i + 1}`, 4000) }),
  )
  const stats0 = victim.stats()
  // Unsolicited NODES (a random request id), and a PONG nobody asked for.
  cap.raw(ns[5].address, native.kadEncodeNodes(0x1234, 0x5678, evilRecord, fakes, false), TAG_KAD)
  cap.raw(ns[5].address, native.kadEncodePing(true, 1, 2), TAG_KAD)
  // Malformed: garbage, a truncated NODES, a bad version, an empty payload.
  const nodesMsg = native.kadEncodeNodes(1, 1, evilRecord, fakes, false)
  for (const bad of [Buffer.from('garbage!'), nodesMsg.subarray(0, nodesMsg.length - 3), Buffer.from([9, 1, 0, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(0)]) {
    cap.raw(ns[5].address, bad, TAG_KAD)
  }
  // An unpadded FIND_NODE from an unverified address: the answer is no larger than the query.
  const table = new native.KadTable(evilRecord, 20, 20, 0)
  const query = table.encodeFindNode(7, 7, Buffer.alloc(32, 1), 0)
  cap.raw(ns[5].address, query, TAG_KAD)
  await s.runFor(5000)
  const stats1 = victim.stats()
  const d = (k: string): number => (stats1[k] ?? 0) - (stats0[k] ?? 0)
  t.is(d('dropped_unsolicited'), 2)
  t.is(d('dropped_malformed'), 4)
  t.deepEqual(snapshot(), before, 'the routing table did not change')
  for (const f of fakes) t.is(victim.getPeer(native.decodePeerRecord(f).id), undefined)
  const answers = cap.got.filter((g) => g.tag === TAG_KAD && native.kadDecode(g.data).kind === 4)
  t.is(answers.length, 1)
  t.true(answers[0].data.length <= query.length, `answer ${answers[0].data.length} B <= query ${query.length} B`)
  t.true(native.kadDecode(answers[0].data).truncated)
  // The victim pinged the unverified requester to verify it (the capture layer does not answer).
  t.true(cap.got.some((g) => g.tag === TAG_KAD && native.kadDecode(g.data).kind === 1))
})

test('findPeer rejects on abort, timeout and bad ids; stop clears everything', async (t) => {
  const s = new SimulatedNetwork({ seed: 12 })
  const ns = await kadNodes(s, 5, 'api')
  await s.runFor(5000)
  const k = kad(ns[1])
  await t.throwsAsync(k.findPeer('nope'), { code: 'ERR_DECCOM_INVALID_ARGUMENT' })
  const ac = new AbortController()
  ac.abort()
  await t.throwsAsync(k.findPeer(Buffer.alloc(32, 3), { signal: ac.signal }), { code: 'ERR_DECCOM_ABORTED' })
  t.is(k.getPeer(ns[2].id)?.address, ns[2].address)
  t.is(k.closest(ns[2].id, 1)[0].address, ns[2].address)
  t.true(k.peers().length >= 3)
  const pending = k.findPeer(Buffer.alloc(32, 9))
  await s.close()
  await t.throwsAsync(pending, { code: 'ERR_DECCOM_CLOSED' })
  t.is(s.stats().pending_events, 0)
})

/** A transparent layer that approves every peer except those whose name identity ends in "-banned". */
class Gate extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send', 'approveConnection']
  static override emits = ['onMessage']
  readonly name = 'gate'
  asked = 0
  send(to: Address, data: Uint8Array, tag: number): unknown {
    return this.lower.send(to, data, tag)
  }
  onMessage(from: Address, data: Buffer, tag: number): void {
    this.upper.onMessage(from, data, tag)
  }
  approveConnection(peer: Peer): Promise<boolean> {
    this.asked++
    return Promise.resolve(!peer.publicIdentity!.toString().endsWith('-banned'))
  }
}

test('connection approval: the nearest layer below with approveConnection decides; Kademlia also runs over Noise', async (t) => {
  const s = new SimulatedNetwork({ seed: 13 })
  t.teardown(() => s.close())
  const ns = await s.createNodes(12, {
    stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], seed: i + 1 }), new Gate()],
    identity: (i) => Identity.fromString(i === 7 ? `gate-${i}-banned` : `gate-${i}`),
  })
  await s.runFor(15_000)
  const banned = ns[7].id
  for (const [i, n] of ns.entries()) {
    if (i === 7) continue
    t.is(kad(n).getPeer(banned), undefined, `node ${i} did not admit the banned peer`)
    t.true(kad(n).size >= 9)
    t.true(n.stack.find(Gate)!.asked > 0)
    t.true((kad(n).stats().rejected_by_approval ?? 0) >= 0)
  }
  t.true(ns.some((n) => (kad(n).stats().rejected_by_approval ?? 0) > 0))

  const s2 = new SimulatedNetwork({ seed: 14 })
  t.teardown(() => s2.close())
  const secure = await s2.createNodes(10, {
    stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], seed: i + 1 }), new Noise({ mode: 'encrypt' })],
    identity: (i) => Identity.fromSeed(Buffer.alloc(32, i + 1)),
  })
  await s2.runFor(15_000)
  let found: Peer | undefined
  void secure[3].findPeer(secure[8].id).then((p) => (found = p))
  await s2.runUntil(() => found !== undefined)
  t.is(found!.address, secure[8].address)
  t.true(secure.every((n) => kad(n).size >= 8))
})

test('over Noise, a requester whose session proved its id is answered in full and enters the table without a verify PING', async (t) => {
  const s = new SimulatedNetwork({ seed: 15, defaultLink: { latency: 10 } })
  t.teardown(() => s.close())
  const [boot, joiner] = await s.createNodes(2, {
    stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], seed: i + 1 }), new Noise({ mode: 'encrypt' })],
    identity: (i) => Identity.fromSeed(Buffer.alloc(32, 40 + i)),
  })
  // Handshake (one round trip), then FIND_NODE: the bootstrap node admits the joiner as it answers.
  const t0 = s.now
  await s.runUntil(() => kad(boot!).getPeer(joiner!.id) !== undefined, { timeout: 200 })
  const st = kad(boot!).stats()
  t.true((st.find_node_authenticated ?? 0) >= 1)
  t.is(st.pings_sent ?? 0, 0, 'no PING verified the joiner: its handshake did')
  t.is(st.nodes_sent_unverified ?? 0, 0)
  t.true(s.now - t0 <= 60, `admitted within a few round trips of 20 ms (after ${s.now - t0} ms)`)
})

test('an ephemeral node joins, finds others and is in no routing table afterwards; a normal joiner is', async (t) => {
  const s = new SimulatedNetwork({ seed: 16, defaultLink: { latency: 5 } })
  t.teardown(() => s.close())
  const ns = await kadNodes(s, 20, 'eph-net')
  await s.runFor(15_000)
  const [client, normal] = await s.createNodes(2, {
    stack: (i) => [new Kademlia({ bootstrap: ['10.0.0.1:4000'], ephemeral: i === 0 })],
    identity: (i) => Identity.fromString(`eph-client-${i}`),
  })
  let ready = 0
  for (const c of [client!, normal!]) void c.ready().then(() => ready++)
  await s.runUntil(() => ready === 2)
  let found: Peer | undefined
  void client!.findPeer(ns[13]!.id).then((p) => (found = p))
  await s.runUntil(() => found !== undefined)
  t.is(found!.address.key, ns[13]!.address.key)
  await s.runFor(30_000) // the settling lookup and the bucket refresh ran
  t.true(kad(client!).size >= 10, 'the ephemeral node filled its own table')
  t.true(ns.every((n) => kad(n).getPeer(client!.id) === undefined), 'nobody added the ephemeral node')
  t.true(ns.reduce((a, n) => a + (kad(n).stats().find_node_ephemeral ?? 0), 0) > 0)
  t.true(ns.some((n) => kad(n).getPeer(normal!.id) !== undefined), 'a normal joiner is added')
})

test('a refresh while a bootstrap retry is pending starts no second join; a stopped node leaves no timer behind', async (t) => {
  const s = new SimulatedNetwork({ seed: 77 })
  t.teardown(() => s.close())
  // Nobody answers at the bootstrap address: attempts time out and are retried while the refresh
  // timer (much shorter here) finds the table empty.
  const [n] = await s.createNodes(1, {
    stack: () => [new Kademlia({ bootstrap: ['10.0.0.99:4000'], queryTimeout: 200, bootstrapRetries: 6, refreshInterval: 150 })],
  })
  await s.runFor(2_000)
  const st = kad(n).stats()
  // One join at a time: attempts start at 0, 400 and 1000 ms (each times out after 200 ms, then
  // waits 200, 400, 800 ms). Parallel joins (one per refresh tick) made dozens.
  t.true(st.bootstrap_attempts! >= 2 && st.bootstrap_attempts! <= 4, `${st.bootstrap_attempts} bootstrap attempts in 2 s`)
  await n.close()
  t.is(s.stats().pending_events, 0, 'stop cleared every timer')
  await t.notThrowsAsync(s.runFor(60_000))
})

/** A transparent layer that counts the FIND_NODEs its node sends for the node's own id. */
class SelfQueries extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'self-queries'
  own: Buffer | null = null
  sent = 0
  send(to: Address, data: Uint8Array, tag: number): unknown {
    if (tag === TAG_KAD && this.own !== null) {
      const m = native.kadDecode(Buffer.from(data))
      if (m.kind === 3 && m.target?.equals(this.own)) this.sent++
    }
    return this.lower.send(to, data, tag)
  }
  onMessage(from: Address, data: Buffer, tag: number): void {
    this.upper.onMessage(from, data, tag)
  }
}

test('a periodic self-lookup in a network where nobody new joined near a node asks alpha nodes, not k', async (t) => {
  const s = new SimulatedNetwork({ seed: 23, defaultLink: { latency: 5, jitter: 5 } })
  t.teardown(() => s.close())
  const taps: SelfQueries[] = []
  const ns = await s.createNodes(60, {
    stack: (i) => {
      const tap = new SelfQueries()
      taps.push(tap)
      return [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], seed: i + 1, refreshInterval: 40_000 }), tap]
    },
    identity: (i) => Identity.fromString(`neighbourhood-${i}`),
  })
  ns.forEach((n, i) => (taps[i].own = n.id))
  await s.runFor(30_000) // joined and settled, before the first periodic refresh
  const before = ns.map((n) => kad(n).stats().self_lookups ?? 0)
  for (const tap of taps) tap.sent = 0
  await s.runFor(40_000) // one periodic refresh everywhere
  ns.forEach((n, i) => t.is((kad(n).stats().self_lookups ?? 0) - before[i], 1, `node ${i} looked itself up once`))
  const sent = taps.map((tap) => tap.sent).sort((a, b) => a - b)
  t.log(`FIND_NODE(own id) per periodic refresh: min ${sent[0]} median ${median(sent)} max ${sent.at(-1)}`)
  // The first alpha (3) answers come from the node's closest entries and name nobody new: the
  // lookup ends there, with the alpha - 1 queries the first two answers let it send (5 in all). A
  // whole self-lookup asked 22 here (all k = 20 closest and more).
  t.true(median(sent) <= 2 * 3 - 1, `median ${median(sent)} self-queries`)
  t.true(sent.at(-1)! < 20, `max ${sent.at(-1)} self-queries`)
})

/** Records the targets of the FIND_NODEs a node sends for its own lookups (not for its own id). */
class RefreshTargets extends SelfQueries {
  override readonly name = 'refresh-targets'
  targets: Buffer[] = []
  override send(to: Address, data: Uint8Array, tag: number): unknown {
    if (tag === TAG_KAD && this.own !== null) {
      const m = native.kadDecode(Buffer.from(data))
      if (m.kind === 3 && m.target && !m.target.equals(this.own)) this.targets.push(Buffer.from(m.target))
    }
    return this.lower.send(to, data, tag)
  }
}

/** The bucket of `id` in `own`'s table: 255 for ids that differ from it in the first bit. */
function bucketOf(own: Buffer, id: Buffer): number {
  for (let i = 0; i < 32; i++) {
    const d = own[i]! ^ id[i]!
    if (d !== 0) return 255 - (i * 8 + Math.clz32(d) - 24)
  }
  return -1
}

test('a periodic refresh looks up no bucket the self-lookup before it covered', async (t) => {
  const s = new SimulatedNetwork({ seed: 29, defaultLink: { latency: 5, jitter: 5 } })
  t.teardown(() => s.close())
  const taps: RefreshTargets[] = []
  const ns = await s.createNodes(200, {
    stack: (i) => {
      const tap = new RefreshTargets()
      taps.push(tap)
      return [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], refreshInterval: 40_000 }), tap]
    },
    identity: (i) => Identity.fromString(`covered-${i}`),
  })
  ns.forEach((n, i) => (taps[i].own = n.id))
  await s.runFor(30_000) // joined and settled, before the first periodic refresh
  const skipped = ns.map((n) => kad(n).stats().refresh_skipped_covered ?? 0)
  for (const tap of taps) tap.targets = []
  await s.runFor(40_000) // one periodic refresh everywhere, nobody joining
  let below = 0
  let skippedNow = 0
  let refreshed = 0
  ns.forEach((n, i) => {
    const k = kad(n)
    // Our k-th closest entry: nobody new joined, so it is the one the self-lookup saw.
    const kth = k.closest(n.id, 20).at(-1)!.id
    const covered = bucketOf(n.id, kth)
    for (const target of taps[i].targets) if (bucketOf(n.id, target) < covered) below++
    refreshed += taps[i].targets.length
    skippedNow += (k.stats().refresh_skipped_covered ?? 0) - skipped[i]
  })
  t.log(`periodic refresh: ${refreshed} refresh FIND_NODEs, ${skippedNow} buckets skipped as covered`)
  t.is(below, 0, 'no FIND_NODE for a bucket closer than the k-th closest entry')
  t.true(skippedNow > 0, 'stale buckets were skipped as covered')
})

test('a lookup through dead contacts waits about a round trip of patience for each, not queryTimeout', async (t) => {
  // With patience = queryTimeout (the behaviour before minPatience) these lookups took 2.1-2.2 s.
  const s = new SimulatedNetwork({ seed: 21, defaultLink: { latency: 5, jitter: 5 } })
  t.teardown(() => s.close())
  const ns = await kadNodes(s, 40, 'patience')
  await s.runFor(20_000)
  for (const n of ns.slice(30)) await n.close() // still in everyone's table
  const k = kad(ns[1]!)
  t.true(k.stats().query_srtt_ms! > 0 && k.stats().query_srtt_ms! < 60, `answered FIND_NODEs take ${k.stats().query_srtt_ms} ms`)
  t.is(k.stats().lookup_patience_ms, 100, 'at least minPatience, far below queryTimeout')
  const r = rng(5)
  for (let i = 0; i < 5; i++) {
    const target = Buffer.alloc(32)
    for (let j = 0; j < 32; j++) target[j] = Math.floor(r() * 256)
    let res: any = null
    const t0 = s.now
    k.lookup(target).then((x) => (res = x), (e) => (res = e))
    await s.runUntil(() => res !== null, { timeout: 10_000 })
    const took = s.now - t0
    // The k closest it learned of, less the dead ones among them (10 of the 40 are dead).
    t.true(Array.isArray(res?.closest) && res.closest.length >= 10, `lookup ${i} found ${res?.closest?.length}`)
    t.true(res.closest.every((p: any) => !ns.slice(30).some((d) => d.id.equals(p.id))), 'no dead node among the closest that answered')
    t.true(took < 1000, `lookup ${i} took ${took} virtual ms (queryTimeout is 1000)`)
  }
})

test('a lookup result lists its closest peers when read: closest first, the same list on every read, copied by a spread', async (t) => {
  const s = new SimulatedNetwork({ seed: 22, defaultLink: { latency: 5, jitter: 5 } })
  t.teardown(() => s.close())
  const ns = await kadNodes(s, 30, 'closest')
  await s.runFor(20_000)
  const target = ns[7]!.id
  let res: any = null
  kad(ns[1]!).lookup(target).then((x) => (res = x), (e) => (res = e))
  await s.runUntil(() => res !== null, { timeout: 10_000 })
  const list = res.closest
  t.is(list.length, 20, 'k peers')
  t.true(list[0].id.equals(target), 'the target is the closest')
  const dist = (id: Buffer): bigint => BigInt('0x' + Buffer.from(id.map((b, i) => b ^ target[i]!)).toString('hex'))
  for (let i = 1; i < list.length; i++) t.true(dist(list[i - 1].id) < dist(list[i].id), `closest first (${i})`)
  t.is(res.closest, list, 'decoded once')
  const copy = { ...res }
  t.is(copy.closest, list, 'a spread copies the list')
  t.is(JSON.parse(JSON.stringify(res)).closest.length, 20, 'JSON has the list')
  res.closest = []
  t.is(res.closest.length, 0, 'assignable')
  const found = await kad(ns[1]!).lookup(target, { stopAtTarget: true })
  t.true(found.peer!.id.equals(target))
  t.true(found.closest.some((p) => p.id.equals(target)))
})

test('findPeer asks no one else while the node that was named as the target is asked', async (t) => {
  const s = new SimulatedNetwork({ seed: 31, defaultLink: { latency: 5, jitter: 5 } })
  t.teardown(() => s.close())
  const ns = await kadNodes(s, 200, 'pause')
  await s.runFor(30_000)
  const counts: number[] = []
  for (let i = 1; i < 200 && counts.length < 60; i++) {
    const a = ns[i]!
    const b = ns[(i * 7 + 13) % 200]!
    if (a === b || kad(a).getPeer(b.id)) continue // not from the table: a lookup
    const q0 = kad(a).stats().queries_sent ?? 0
    let r: any = null
    kad(a).findPeer(b.id).then((x) => (r = x), (e) => (r = e))
    await s.runUntil(() => r !== null, { timeout: 10_000 })
    t.true(r?.id?.equals(b.id), `found ${i}: ${r}`) // every node found: the nodes started at once learned of each other (settleLookup)
    counts.push((kad(a).stats().queries_sent ?? 0) - q0)
  }
  const mean = counts.reduce((x, y) => x + y, 0) / counts.length
  // alpha (3) queries, then the claim of the target: 4. Without the pause the answers that came
  // in while the claim was asked drew 7-12 (mean 8.4 on this network).
  t.true(mean < 5.5, `${mean.toFixed(2)} queries per findPeer: ${JSON.stringify(counts)}`)
})

test('times far beyond any wait (1e300 ms) are cut, not a crash: nodes join and find each other', async (t) => {
  const s = new SimulatedNetwork({ seed: 41, defaultLink: { latency: 5, jitter: 5 } })
  t.teardown(() => s.close())
  const far = 1e300
  const opts = { queryTimeout: far, minPatience: far, refreshInterval: far, joinRefreshDelay: far, settleLookup: far, pingInterval: far }
  const ns = await s.createNodes(5, { stack: (i) => [new Kademlia({ bootstrap: i === 0 ? [] : ['10.0.0.1:4000'], ...opts })] })
  await s.runFor(5_000)
  ns.forEach((n, i) => t.true(kad(n).joined, `node ${i} joined`))
  const found = kad(ns[4]!).findPeer(ns[1]!.id)
  await s.runFor(5_000)
  t.true((await found).id!.equals(ns[1]!.id))
})
