/**
 * Real NATs, many punches at once: 20 nodes behind one port-restricted cone NAT (MASQUERADE) punch
 * 20 nodes behind another at the same moment, through the same two routers and one introducer.
 * Nodes run as child processes (scripts/nat-multi.mjs: 20 nodes in one process per private host)
 * in the namespaces of scripts/netns-nat.sh. Needs root, `ip netns` and iptables; skips otherwise.
 * docs/nat.md ("Concurrent punches") says what breaks such punches and why these succeed.
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import test, { type ExecutionContext } from 'ava'
import { netnsTracker, netnsUnavailable, netnsUp, type Proc, runInNetns } from './helpers/netns-proc.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const dist = path.join(root, 'dist', 'index.js')
const why = netnsUnavailable()
const { children, prefixes } = netnsTracker()
const N = 20

function run(t: ExecutionContext, ns: string, script: string, cfg: Record<string, unknown>): Proc {
  return runInNetns(t, children, ns, path.join(root, 'scripts', script), dist, cfg)
}

interface Result {
  ok: boolean
  ms: number
  path?: string
  code?: string
}

/** Starts the rendezvous and N nodes on each side; returns them with the mapped addresses the rendezvous heard. */
async function setup(t: ExecutionContext, tag: string): Promise<{ a: Proc; b: Proc; aMapped: string[]; bMapped: string[] }> {
  const P = netnsUp(t, prefixes, `dc${process.pid % 100000}${tag}`, 'cone', 'cone')
  const rv = run(t, `${P}-rv`, 'nat-node.mjs', { role: 'rendezvous', host: '10.77.0.10', port: 4000 })
  await rv.wait((e) => e.event === 'ready', 10_000, 'ready')
  const R = '10.77.0.10:4000'
  const a = run(t, `${P}-ha`, 'nat-multi.mjs', { count: N, rendezvous: R })
  const b = run(t, `${P}-hb`, 'nat-multi.mjs', { count: N, rendezvous: R })
  const [ra, rb] = await Promise.all([a.wait((e) => e.event === 'ready', 15_000, 'ready'), b.wait((e) => e.event === 'ready', 15_000, 'ready')])
  const heard = await rv.wait((e) => e.event === 'heard' && (e.addrs as string[]).length === 2 * N, 10_000, 'every node heard')
  const addrs = heard.addrs as string[]
  // MASQUERADE keeps a node's port when it is free (it is: one host per router); map by port.
  const mapped = (local: string[], pub: string): string[] =>
    local.map((l) => {
      const m = addrs.find((x) => x === `${pub}:${l.split(':').pop()}`)
      if (!m) throw new Error(`no mapping of ${l} through ${pub} among ${addrs}`)
      return m
    })
  return { a, b, aMapped: mapped(ra.addresses as string[], '10.77.0.2'), bMapped: mapped(rb.addresses as string[], '10.77.0.3') }
}

function summary(results: Result[]): string {
  const ms = results.filter((r) => r.ok).map((r) => r.ms).sort((x, y) => x - y)
  return `${ms.length}/${results.length} punched, median ${ms[Math.floor(ms.length / 2)] ?? '-'} ms; failures: ${JSON.stringify(results.filter((r) => !r.ok).map((r) => r.code))}`
}

if (why) {
  test('real NATs, concurrent punches (network namespaces)', (t) => {
    t.log(`SKIPPED: ${why}`)
    t.pass()
  })
} else {
  test.serial(`real NATs: ${N} cone × cone punches started at the same moment between the same two routers succeed`, async (t) => {
    t.timeout(60_000)
    const { a, b, bMapped } = await setup(t, 'p')
    a.send({ cmd: 'punch', targets: bMapped, via: '10.77.0.10:4000' })
    const res = (await a.wait((e) => e.event === 'punched', 20_000, 'punch results')).results as Result[]
    t.log(summary(res))
    t.true(res.filter((r) => r.ok && r.path === 'punched').length >= N - 1, summary(res))
    a.send({ cmd: 'stats' })
    const st = (await a.wait((e) => e.event === 'stats', 5000, 'stats')).stats as Record<string, number>
    t.is(st.punch_timeouts ?? 0, res.filter((r) => !r.ok).length)
    for (const p of [a, b]) p.send({ cmd: 'exit' })
  })

  test.serial(`real NATs: ${N} punches at once in both directions (half started on each side) succeed`, async (t) => {
    t.timeout(60_000)
    const { a, b, aMapped, bMapped } = await setup(t, 'q')
    const half = N / 2
    const from = Array.from({ length: half }, (_, i) => half + i)
    a.send({ cmd: 'punch', targets: bMapped.slice(0, half), via: '10.77.0.10:4000' })
    b.send({ cmd: 'punch', targets: aMapped.slice(half), from, via: '10.77.0.10:4000' })
    const ra = (await a.wait((e) => e.event === 'punched', 20_000, 'punch results at A')).results as Result[]
    const rb = (await b.wait((e) => e.event === 'punched', 20_000, 'punch results at B')).results as Result[]
    const all = [...ra, ...rb]
    t.log(summary(all))
    t.true(all.filter((r) => r.ok && r.path === 'punched').length >= N - 1, summary(all))
    for (const p of [a, b]) p.send({ cmd: 'exit' })
  })
}
