/**
 * NAT models of the SimulatedNetwork (RFC 4787): mapping and filtering per type, expiry, hairpinning,
 * determinism, and a 200-node reachability scenario (direct / punched / relayed) with an in-test
 * strategy through a public rendezvous. Imports the BUILT package (dist/).
 */
import test from 'ava'

import {
  type Address,
  type LayerContext,
  NAT_TYPES,
  type NatType,
  type Node,
  Protocol,
  type SimNat,
  SimulatedNetwork,
  toAddress,
} from '../dist/index.js'

const TAG = 90 // a raw tag of this test (not a protocol's)

/** A raw layer: `send(to, text)` as one datagram with tag 9; records what arrives with that tag. */
class Raw extends Protocol {
  static override bindTo = ['send', 'localAddress']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'raw'
  readonly got: Array<[string, string]> = []
  sendText(to: Address | string, text: string): void {
    this.lower.send(typeof to === 'string' ? toAddress(to) : to, Buffer.from(text), TAG)
  }
  send(to: Address, data: Uint8Array, tag = 0): unknown {
    return this.lower.send(to, data, tag)
  }
  onMessage(from: Address, data: Buffer, tag: number): void {
    if (tag !== TAG) return this.upper.onMessage(from, data, tag)
    this.got.push([from.key, data.toString()])
  }
  /** Senders (address keys) of the messages with this text. */
  from(text: string): string[] {
    return this.got.filter(([, m]) => m === text).map(([f]) => f)
  }
}

async function rawNode(sim: SimulatedNetwork, opts: { address?: string; behind?: SimNat } = {}): Promise<[Node, Raw]> {
  const raw = new Raw()
  const node = await sim.createNode({ stack: [raw], ...opts })
  return [node, raw]
}

/** What a third party may send to a mapping created by A → S, per type (RFC 4787 §5). */
const EXPECT: Record<NatType, { otherHost: boolean; samehostOtherPort: boolean; eim: boolean }> = {
  'full-cone': { otherHost: true, samehostOtherPort: true, eim: true },
  'address-restricted': { otherHost: false, samehostOtherPort: true, eim: true },
  'port-restricted': { otherHost: false, samehostOtherPort: false, eim: true },
  symmetric: { otherHost: false, samehostOtherPort: false, eim: false },
}

for (const type of NAT_TYPES) {
  test(`NAT ${type}: mapping and filtering`, async (t) => {
    const sim = new SimulatedNetwork({ seed: 21, defaultLink: { latency: 5 } })
    t.teardown(() => sim.close())
    const nat = sim.createNat({ type })
    t.is(nat.type, type)
    t.regex(nat.publicAddress, /^198\.18\.\d+\.\d+$/)
    const [a, ra] = await rawNode(sim, { behind: nat })
    const [, rs] = await rawNode(sim, { address: '1.0.0.1:3478' })
    const [, rs2] = await rawNode(sim, { address: '1.0.0.1:3479' }) // same host as S, other port
    const [, rt] = await rawNode(sim, { address: '2.0.0.1:3478' }) // another host
    const S = toAddress('1.0.0.1:3478')
    const T = toAddress('2.0.0.1:3478')

    // A → S: S sees the NAT's public address and a mapped port, not A's private address.
    ra.sendText(S, 'probe')
    await sim.runFor(10)
    const [m1key] = rs.from('probe')
    t.truthy(m1key)
    const m1 = toAddress(m1key)
    t.is(m1.host, nat.publicAddress)
    t.not(m1.key, a.address.key)
    t.is(nat.mappingFor(a.address, S)?.key, m1.key)
    t.true(m1.port >= 1024 && m1.port <= 65535)

    // S answers the mapping: always delivered, with S's address as the source.
    rs.sendText(m1, 'reply')
    await sim.runFor(10)
    t.deepEqual(ra.from('reply'), [S.key])

    // Before A sends to T: T, and S from another port, are filtered or not per type.
    rt.sendText(m1, 'from-T')
    rs2.sendText(m1, 'from-S2')
    await sim.runFor(10)
    t.is(ra.from('from-T').length, EXPECT[type].otherHost ? 1 : 0, 'third party on another host')
    t.is(ra.from('from-S2').length, EXPECT[type].samehostOtherPort ? 1 : 0, "the server's host, other port")
    const filtered0 = (EXPECT[type].otherHost ? 0 : 1) + (EXPECT[type].samehostOtherPort ? 0 : 1)
    t.is(nat.stats().dropped_filtered, filtered0)

    // A → T: endpoint-independent mapping reuses m1; symmetric allocates a new port for T.
    ra.sendText(T, 'probe')
    await sim.runFor(10)
    const m2 = toAddress(rt.from('probe')[0])
    t.is(m2.host, nat.publicAddress)
    if (EXPECT[type].eim) t.is(m2.key, m1.key)
    else t.not(m2.key, m1.key)
    t.is(nat.stats().mappings_created, EXPECT[type].eim ? 1 : 2)

    // Now T is allowed on the mapping A used towards it; on m1 only if that is the same mapping.
    rt.sendText(m2, 'T-on-m2')
    rt.sendText(m1, 'T-on-m1')
    await sim.runFor(10)
    t.is(ra.from('T-on-m2').length, 1)
    t.is(ra.from('T-on-m1').length, EXPECT[type].eim ? 1 : 0)
    t.deepEqual(ra.from('T-on-m2'), [T.key])

    // Private addresses are not routable from the outside.
    const noRoute = sim.stats().dropped_no_route
    rt.sendText(a.address, 'to-private')
    await sim.runFor(10)
    t.is(sim.stats().dropped_no_route, noRoute + 1)
    t.is(ra.from('to-private').length, 0)
    t.is(sim.stats().dropped_nat, nat.stats().dropped_filtered + nat.stats().dropped_no_mapping + nat.stats().dropped_hairpin)
    t.log(type, JSON.stringify(nat.stats()))
  })
}

test('mappings expire mappingTimeout virtual ms after the last outbound datagram; inbound does not refresh', async (t) => {
  const sim = new SimulatedNetwork({ seed: 22, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const nat = sim.createNat({ type: 'port-restricted', mappingTimeout: 1000 })
  const [a, ra] = await rawNode(sim, { behind: nat })
  const [, rs] = await rawNode(sim, { address: '1.0.0.1:3478' })
  const S = toAddress('1.0.0.1:3478')
  ra.sendText(S, 'p') // leaves at 0: the mapping lives until 1000 (exclusive)
  await sim.runFor(10)
  const m1 = toAddress(rs.from('p')[0])
  t.is(nat.mappings().length, 1)
  t.is(nat.mappings()[0].expires, 1000)
  // Inbound traffic at 500 ms does not refresh; a datagram arriving at 990 passes, one at 1005 does not.
  await sim.runFor(480) // now 490
  rs.sendText(m1, 'in-500')
  await sim.runFor(495) // now 985
  rs.sendText(m1, 'in-990')
  await sim.runFor(10) // now 995
  rs.sendText(m1, 'in-1000') // arrives at 1000: expired
  await sim.runFor(10)
  t.deepEqual(ra.got.map(([, m]) => m), ['in-500', 'in-990'])
  t.is(nat.stats().dropped_no_mapping, 1)
  t.is(nat.mappings().length, 0)
  t.is(nat.mappingFor(a.address, S), undefined)

  // A new outbound datagram creates a fresh mapping (a new random port).
  ra.sendText(S, 'p2')
  await sim.runFor(10)
  const m2 = toAddress(rs.from('p2')[0])
  t.not(m2.key, m1.key)
  t.is(nat.stats().mappings_created, 2)
  t.is(nat.stats().mappings_expired, 1)

  // Outbound keep-alives every 600 ms keep it (and its port) for 5 s.
  for (let i = 0; i < 9; i++) {
    ra.sendText(S, 'ka')
    await sim.runFor(600)
  }
  t.true(rs.from('ka').every((k) => k === m2.key))
  t.is(nat.stats().mappings_created, 2)
  rs.sendText(m2, 'still-open')
  await sim.runFor(10)
  t.is(ra.from('still-open').length, 1)
})

test('same NAT: LAN traffic stays private; hairpinning is off', async (t) => {
  const sim = new SimulatedNetwork({ seed: 23 })
  t.teardown(() => sim.close())
  const nat = sim.createNat({ type: 'full-cone', publicAddress: '203.0.113.7' })
  t.is(nat.publicAddress, '203.0.113.7')
  const [a, ra] = await rawNode(sim, { behind: nat })
  const [b, rb] = await rawNode(sim, { behind: nat })
  const [, rs] = await rawNode(sim, { address: '1.0.0.1:3478' })
  ra.sendText(b.address, 'lan')
  rb.sendText('1.0.0.1:3478', 'out')
  await sim.runFor(10)
  t.deepEqual(rb.got, [[a.address.key, 'lan']])
  const mb = rs.from('out')[0]
  t.regex(mb, /^203\.0\.113\.7:\d+$/)
  ra.sendText(mb, 'hairpin') // b's public mapping, from inside the same NAT
  await sim.runFor(10)
  t.is(rb.from('hairpin').length, 0)
  t.is(nat.stats().dropped_hairpin, 1)
  t.is(nat.stats().translated_out, 1) // the LAN datagram was not translated
  t.throws(() => sim.createNat({ type: 'symmetric', publicAddress: '203.0.113.7' }), { message: /already/ })
  t.throws(() => sim.createNat({ type: 'bogus' as NatType }), { message: /type must be/ })
})

// ---- the 200-node scenario -------------------------------------------------------------------

type Msg = { t: string; i?: number; j?: number; addr?: string; path?: string }

/**
 * One agent per node. Roles: 'rdv' (the public rendezvous), 'helper' (a second public host that
 * dials back, to tell open from filtered nodes) and 'client'. The strategy, decided by the
 * rendezvous for each pair (i < j):
 *   direct — if j is reachable (public or full cone) i dials j's observed address; else if i is,
 *            j dials i (connection reversal, asked through the rendezvous);
 *   punch  — otherwise both send to each other's observed address (and answer the source they see);
 *   relay  — if no ack arrived 1 s after the punch began, through the rendezvous.
 */
class Agent extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'agent'
  ctx!: LayerContext
  // rendezvous state
  readonly observed = new Map<number, Address>()
  readonly reachable = new Set<number>()
  // client state
  readonly confirmed = new Map<number, string>()
  constructor(
    readonly role: 'rdv' | 'helper' | 'client',
    readonly index: number,
    readonly env: { rdv: Address; helper: Address; paths: Map<string, string> },
  ) {
    super()
  }
  override async start(ctx: LayerContext): Promise<void> {
    this.ctx = ctx
  }
  send(to: Address, data: Uint8Array, tag = 0): unknown {
    return this.lower.send(to, data, tag)
  }
  #tx(to: Address, m: Msg): void {
    this.lower.send(to, Buffer.from(JSON.stringify(m)), TAG)
  }
  register(): void {
    this.#tx(this.env.rdv, { t: 'reg', i: this.index })
  }
  connect(j: number): void {
    this.#tx(this.env.rdv, { t: 'connect', i: this.index, j })
  }
  #done(peer: number, path: string): void {
    if (this.confirmed.has(peer)) return
    this.confirmed.set(peer, path)
    const [lo, hi] = this.index < peer ? [this.index, peer] : [peer, this.index]
    if (!this.env.paths.has(`${lo},${hi}`)) this.env.paths.set(`${lo},${hi}`, path)
  }
  #hello(peer: number, to: Address, path: string, times: number): void {
    for (let k = 0; k < times; k++) {
      this.ctx.clock.setTimeout(() => {
        if (!this.confirmed.has(peer)) this.#tx(to, { t: 'hi', i: this.index, path })
      }, k * 100)
    }
  }
  onMessage(from: Address, data: Buffer, tag: number): void {
    if (tag !== TAG) return this.upper.onMessage(from, data, tag)
    const m = JSON.parse(data.toString()) as Msg
    if (this.role === 'rdv') return this.#rdv(from, m)
    if (this.role === 'helper') {
      if (m.t === 'probe') this.#tx(toAddress(m.addr!), { t: 'dialback', i: m.i })
      return
    }
    switch (m.t) {
      case 'dialback': // the helper reached our observed address: we are reachable
        return this.#tx(this.env.rdv, { t: 'reachable', i: this.index })
      case 'dial': // direct (or reversed) connection to a reachable peer
        return this.#hello(m.j!, toAddress(m.addr!), 'direct', 1)
      case 'punch': {
        this.#hello(m.j!, toAddress(m.addr!), 'punch', 3)
        if (this.index < m.j!) {
          this.ctx.clock.setTimeout(() => {
            if (!this.confirmed.has(m.j!)) this.#tx(this.env.rdv, { t: 'relay', i: this.index, j: m.j })
          }, 1000)
        }
        return
      }
      case 'hi': // answer the source we see (the peer's mapping towards us)
        return this.#tx(from, { t: 'ack', i: this.index, path: m.path })
      case 'ack':
        this.#done(m.i!, m.path!)
        return this.#tx(from, { t: 'confirm', i: this.index, path: m.path })
      case 'confirm':
        return this.#done(m.i!, m.path!)
      case 'relayed': // a relayed hello: answer through the rendezvous
        this.#done(m.i!, 'relay')
        return this.#tx(this.env.rdv, { t: 'relay-ack', i: this.index, j: m.i })
      case 'relay-ack-fwd':
        return this.#done(m.i!, 'relay')
    }
  }
  #rdv(from: Address, m: Msg): void {
    const o = this.observed
    switch (m.t) {
      case 'reg':
        o.set(m.i!, from)
        return this.#tx(this.env.helper, { t: 'probe', i: m.i, addr: from.key })
      case 'reachable':
        this.reachable.add(m.i!)
        return
      case 'connect': {
        const [i, j] = [m.i!, m.j!]
        if (this.reachable.has(j)) return this.#tx(o.get(i)!, { t: 'dial', j, addr: o.get(j)!.key })
        if (this.reachable.has(i)) return this.#tx(o.get(j)!, { t: 'dial', j: i, addr: o.get(i)!.key })
        this.#tx(o.get(i)!, { t: 'punch', j, addr: o.get(j)!.key })
        return this.#tx(o.get(j)!, { t: 'punch', j: i, addr: o.get(i)!.key })
      }
      case 'relay':
        return this.#tx(o.get(m.j!)!, { t: 'relayed', i: m.i })
      case 'relay-ack':
        return this.#tx(o.get(m.j!)!, { t: 'relay-ack-fwd', i: m.i })
    }
  }
}

/** Node i of the 200: even → public; odd → behind its own NAT of type NAT_TYPES[(i >> 1) % 4]. */
const kindOf = (i: number): 'public' | NatType => (i % 2 === 0 ? 'public' : NAT_TYPES[(i >> 1) % 4])

async function scenario(seed: number, N = 200): Promise<{ sim: SimulatedNetwork; agents: Agent[]; paths: Map<string, string>; nats: Array<SimNat | undefined> }> {
  const sim = new SimulatedNetwork({ seed, defaultLink: { latency: 5, jitter: 2 }, traceLimit: 0 })
  const env = { rdv: toAddress('1.0.0.1:3478'), helper: toAddress('1.0.0.2:3478'), paths: new Map<string, string>() }
  const rdv = new Agent('rdv', -1, env)
  await sim.createNode({ address: env.rdv, stack: [rdv] })
  await sim.createNode({ address: env.helper, stack: [new Agent('helper', -2, env)] })
  const nats = Array.from({ length: N }, (_, i) => (kindOf(i) === 'public' ? undefined : sim.createNat({ type: kindOf(i) as NatType })))
  const agents: Agent[] = []
  await sim.createNodes(N, {
    stack: (i) => [(agents[i] = new Agent('client', i, env))],
    behind: (i) => nats[i],
  })
  for (const a of agents) a.register()
  await sim.runFor(1000)
  if (rdv.observed.size !== N) throw new Error(`registered: ${rdv.observed.size}`)
  for (let i = 0; i < N; i++) for (let j = i + 1; j < N; j++) agents[i].connect(j)
  const pairs = (N * (N - 1)) / 2
  await sim.runUntil(() => env.paths.size === pairs, { timeout: 30_000 })
  await sim.runFor(1500) // the last confirms and the (then idle) relay timers
  return { sim, agents, paths: env.paths, nats }
}

/** The path a pair should take with the in-test strategy. */
function expectedPath(a: 'public' | NatType, b: 'public' | NatType): string {
  const open = (k: string) => k === 'public' || k === 'full-cone'
  if (open(a) || open(b)) return 'direct'
  const k = [a, b].sort().join('+')
  return k === 'port-restricted+symmetric' || k === 'symmetric+symmetric' ? 'relay' : 'punch'
}

test('simulated network: 200 nodes, half behind NATs of each type — all pairs connect (direct, punched or relayed)', async (t) => {
  const t0 = performance.now()
  const { sim, paths, nats, agents } = await scenario(31)
  t.teardown(() => sim.close())
  const N = 200
  t.is(paths.size, (N * (N - 1)) / 2)
  const byPath: Record<string, number> = {}
  const byClass: Record<string, Record<string, number>> = {}
  let mismatches = 0
  for (const [key, path] of paths) {
    const [i, j] = key.split(',').map(Number)
    byPath[path] = (byPath[path] ?? 0) + 1
    const cls = [kindOf(i), kindOf(j)].sort().join('+')
    ;(byClass[cls] ??= {})[path] = (byClass[cls][path] ?? 0) + 1
    if (path !== expectedPath(kindOf(i), kindOf(j))) mismatches++
  }
  // Both ends agree that the pair is connected.
  for (const [key] of paths) {
    const [i, j] = key.split(',').map(Number)
    if (!agents[i].confirmed.has(j) || !agents[j].confirmed.has(i)) mismatches++
  }
  const natStats = { dropped_filtered: 0, mappings_created: 0 }
  for (const n of nats) if (n) for (const k of Object.keys(natStats) as Array<keyof typeof natStats>) natStats[k] += n.stats()[k]
  t.log(`paths: ${JSON.stringify(byPath)}`)
  for (const cls of Object.keys(byClass).sort()) t.log(`  ${cls}: ${JSON.stringify(byClass[cls])}`)
  const s = sim.stats()
  t.log(
    `virtual ${s.now} ms, ${s.events} events, ${s.sent} datagrams, nat drops ${s.dropped_nat}, ` +
      `NATs: ${JSON.stringify(natStats)}; ${(performance.now() - t0).toFixed(0)} ms real`,
  )
  t.is(mismatches, 0)
  // 100 public + 25 full cone are reachable: every pair with one of them is direct (19900 − C(75,2)).
  // Of the C(75,2) = 2775 others, port-restricted–symmetric (625) and symmetric–symmetric (300) need the relay.
  t.deepEqual(byPath, { direct: 17125, punch: 1850, relay: 925 })
  t.is(byClass['full-cone+symmetric'].direct, 625)
  t.is(byClass['address-restricted+symmetric'].punch, 625)
  t.is(byClass['port-restricted+symmetric'].relay, 625)
  t.is(byClass['symmetric+symmetric'].relay, 300)
})

test('NAT scenario is deterministic: same seed → same trace and same mapped ports', async (t) => {
  const run = async (seed: number) => {
    const { sim, nats } = await scenario(seed, 24)
    const out = { hash: sim.trace.hash, ports: nats.map((n) => n?.mappings().map((m) => m.external.key).join(' ')).join('|') }
    await sim.close()
    return out
  }
  const a = await run(5)
  const b = await run(5)
  const c = await run(6)
  t.deepEqual(a, b)
  t.not(a.hash, c.hash)
  t.not(a.ports, c.ports)
})

// ---- the HolePuncher and Relay layers over simulated NATs ------------------------------------

test('HolePuncher + Relay in the simulator: port-restricted pair punched, symmetric pair relayed', async (t) => {
  const { HolePuncher, Relay } = await import('../dist/index.js')
  const sim = new SimulatedNetwork({ seed: 41, defaultLink: { latency: 5 } })
  t.teardown(() => sim.close())
  const R = toAddress('1.0.0.1:3478')
  const mk = (behind?: SimNat, serve = false) => {
    const hp = new HolePuncher({ relay: true, punchTimeout: 1000, rendezvous: serve ? [] : [R] })
    const relay = new Relay(serve ? { serve: { maxSessions: 8 } } : {})
    return sim.createNode({ stack: [hp, relay], behind, address: serve ? R : undefined }).then((node) => ({ node, hp }))
  }
  const r = await mk(undefined, true)
  const cases: Array<[NatType, string]> = [
    ['port-restricted', 'punched'],
    ['symmetric', 'relayed'],
  ]
  for (const [type, expected] of cases) {
    const a = await mk(sim.createNat({ type }))
    const b = await mk(sim.createNat({ type }))
    await sim.runFor(100) // probes: r learns the mapped addresses
    const mapped = (x: { node: Node }) => r.hp.introducible().find((m: Address) => m.host !== x.node.address.host && sim.nats.some((n) => n.publicAddress === m.host && n.mappingFor(x.node.address, R)?.key === m.key))
    const bAddr = mapped(b)
    t.truthy(bAddr, `${type}: r knows b's mapped address`)
    const got: string[] = []
    b.node.on('message', (_f, d) => got.push(d.toString()))
    let res: { path: string } | undefined
    let err: unknown
    a.hp.connect(bAddr, R).then((x: { path: string }) => (res = x), (e: unknown) => (err = e))
    const sent = a.node.send(bAddr, Buffer.from(`hello over ${type}`))
    await sim.runUntil(() => res !== undefined || err !== undefined, { timeout: 10_000 })
    t.is(err, undefined)
    t.is(res?.path, expected, type)
    await sim.runFor(100)
    await sent
    t.deepEqual(got, [`hello over ${type}`])
    t.log(`${type} pair: ${res?.path} at ${sim.now} virtual ms`)
  }
})
