/**
 * Real NATs: Linux network namespaces with iptables NAT routers (scripts/netns-nat.sh), deccom nodes
 * in them as child processes (scripts/nat-node.mjs) that import the BUILT package and report JSON
 * lines. Needs root, `ip netns` and iptables; skips (saying why) otherwise. Only addresses inside
 * the namespaces (10.77.0.0/24, 192.168.1.0/24, 192.168.2.0/24) are used. See docs/nat.md.
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import test, { type ExecutionContext } from 'ava'
import { netnsTracker, netnsUnavailable, netnsUp, type Proc, runInNetns } from './helpers/netns-proc.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const nodeScript = path.join(root, 'scripts', 'nat-node.mjs')
const dist = path.join(root, 'dist', 'index.js')


const why = netnsUnavailable()
const { children, prefixes } = netnsTracker()

function run(t: ExecutionContext, ns: string, cfg: Record<string, unknown>): Proc {
  return runInNetns(t, children, ns, nodeScript, dist, cfg)
}

async function scenario(t: ExecutionContext, tag: string, modeA: string, modeB: string): Promise<{ a: Proc; b: Proc; connected: Record<string, unknown>; aMapped: string; external: unknown }> {
  const P = netnsUp(t, prefixes, `dn${process.pid % 100000}${tag}`, modeA, modeB)
  const rv = run(t, `${P}-rv`, { role: 'rendezvous', host: '10.77.0.10', port: 4000 })
  await rv.wait((e) => e.event === 'ready', 10_000, 'ready')
  const R = '10.77.0.10:4000'
  const a = run(t, `${P}-ha`, { role: 'host', host: '0.0.0.0', rendezvous: R })
  const b = run(t, `${P}-hb`, { role: 'host', host: '0.0.0.0', rendezvous: R, echo: true })
  await Promise.all([a.wait((e) => e.event === 'ready', 10_000, 'ready'), b.wait((e) => e.event === 'ready', 10_000, 'ready')])
  // The rendezvous hears both through their NATs: the routers' public addresses, mapped ports.
  const heard = await rv.wait((e) => e.event === 'heard' && (e.addrs as string[]).length === 2, 5000, 'both hosts heard')
  const addrs = heard.addrs as string[]
  t.true(addrs.some((x) => x.startsWith('10.77.0.2:')) && addrs.some((x) => x.startsWith('10.77.0.3:')), `rendezvous sees the NATs: ${addrs}`)
  const bMapped = addrs.find((x) => x.startsWith('10.77.0.3:'))!
  const aMapped = addrs.find((x) => x.startsWith('10.77.0.2:'))!
  a.send({ cmd: 'connect', target: bMapped, via: R, message: `hello from A (${tag})` })
  const connected = await a.wait((e) => e.event === 'connected' || e.event === 'error', 10_000, 'connect result')
  t.is(connected.event, 'connected', JSON.stringify(connected))
  const atB = await b.wait((e) => e.event === 'message', 5000, 'message at B')
  t.is(atB.data, `hello from A (${tag})`)
  t.is(atB.from, aMapped, 'B sees A at its mapped address')
  const atA = await a.wait((e) => e.event === 'message', 5000, 'echo at A')
  t.is(atA.data, `echo:hello from A (${tag})`)
  t.is(atA.from, bMapped)
  t.is(atA.relayed, connected.path === 'relayed')
  t.is(atB.relayed, connected.path === 'relayed')
  a.send({ cmd: 'stats' })
  const st = await a.wait((e) => e.event === 'stats', 5000, 'stats')
  t.log(`${modeA}/${modeB}: path ${connected.path}; A observed as ${JSON.stringify(st.observations)}, external ${st.external}`)
  for (const p of [a, b, rv]) p.send({ cmd: 'exit' })
  return { a, b, connected, aMapped, external: st.external }
}

if (why) {
  test('real NATs (network namespaces)', (t) => {
    t.log(`SKIPPED: ${why}`)
    t.pass()
  })
} else {
  test.serial('real NATs: UDP hole punching succeeds between two port-restricted cone NATs (MASQUERADE)', async (t) => {
    t.timeout(40_000)
    const { connected, aMapped, external } = await scenario(t, 'c', 'cone', 'cone')
    t.is(connected.path, 'punched')
    t.is(external, aMapped, 'the rendezvous and B agree on A\'s mapped address')
  })

  test.serial('real NATs: two symmetric NATs (MASQUERADE --random-fully) fall back to the relay', async (t) => {
    t.timeout(40_000)
    const { connected } = await scenario(t, 's', 'symmetric', 'symmetric')
    t.is(connected.path, 'relayed')
    t.is(connected.address, '10.77.0.10:4000')
  })

  // The mixed pair. The symmetric side punches from a new random mapping, for which the cone
  // side's router has no conntrack entry. The cone side punches the symmetric side's rendezvous
  // mapping, which accepts packets only from the rendezvous. Both routers drop what they cannot
  // match, so no punch passes in either direction, whoever initiates: the NATs imply the relay.
  // A birthday punch could pass (nat-birthday.spec.ts), but it needs each side to know its NAT's
  // mapping, which takes two observers: here there is one rendezvous, so the mappings stay unknown.
  for (const [tag, modeA, modeB] of [
    ['m', 'cone', 'symmetric'],
    ['n', 'symmetric', 'cone'],
  ] as const) {
    test.serial(`real NATs: a port-restricted cone NAT and a symmetric NAT (${modeA} initiates) fall back to the relay; messages arrive both ways`, async (t) => {
      t.timeout(40_000)
      const { connected } = await scenario(t, tag, modeA, modeB)
      t.is(connected.path, 'relayed')
      t.is(connected.address, '10.77.0.10:4000')
    })
  }
}
