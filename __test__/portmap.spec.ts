/**
 * Router port mapping on a real router: the namespaces of scripts/netns-nat.sh (router "ra" NATs
 * 192.168.1.0/24 behind 10.77.0.2; "rv" at 10.77.0.10 stands for the internet), with `miniupnpd`
 * (Debian package miniupnpd-iptables, legacy iptables tables) started in "ra" by the test with a
 * configuration it writes: UPnP-IGD, NAT-PMP and PCP on the LAN side. Its external address is
 * private, so miniupnpd learns it by STUN from a responder the test runs on "rv"
 * (helpers/stun-server.mjs). For each protocol: the node behind the router obtains a mapping, a
 * node outside reaches it at the mapped address directly (the inside node never sent it anything:
 * no punch, no relay), and `close()` deletes the router's forwarding rule. Skipped unless root with
 * ip, iptables, iptables-legacy and miniupnpd.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import test, { type ExecutionContext } from 'ava'
import { netnsTracker, netnsUnavailable, netnsUp, runInNetns } from './helpers/netns-proc.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const nodeScript = path.join(root, '__test__', 'helpers', 'portmap-node.mjs')
const stunScript = path.join(root, '__test__', 'helpers', 'stun-server.mjs')
const dist = path.join(root, 'dist', 'index.js')

function unavailable(): string | null {
  const why = netnsUnavailable()
  if (why) return why
  for (const [cmd, args] of [
    ['iptables-legacy', ['--version']],
    ['miniupnpd', ['--version']],
  ] as const) {
    try {
      execFileSync(cmd, args, { stdio: 'ignore' })
    } catch {
      return `\`${cmd}\` is unavailable (apt-get install -y miniupnpd-iptables)`
    }
  }
  return null
}

const why = unavailable()
const { children, prefixes } = netnsTracker()

/** Runs `cmd args` in namespace `ns` as a child process killed (by its PID) in the test's teardown. */
function daemon(t: ExecutionContext, ns: string, cmd: string, args: string[]): { child: ChildProcess; output: () => string; waitFor: (s: string, ms: number) => Promise<void> } {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGTERM')
  })
  let out = ''
  const waiters = new Set<() => void>()
  const take = (d: Buffer): void => {
    out += d.toString()
    if (out.length > 200_000) out = out.slice(-100_000)
    for (const w of waiters) w()
  }
  child.stdout!.on('data', take)
  child.stderr!.on('data', take)
  return {
    child,
    output: () => out,
    waitFor: (s, ms) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (!out.includes(s)) return
          waiters.delete(check)
          clearTimeout(timer)
          resolve()
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`${ns} ${cmd}: no "${s}" within ${ms} ms; output:\n${out}`))
        }, ms)
        waiters.add(check)
        check()
      }),
  }
}

function ipt(ns: string, ...args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'iptables-legacy', ...args], { encoding: 'utf8' })
}

/** The namespaces, a STUN responder on "rv" and miniupnpd on "ra"; returns the prefix. */
async function router(t: ExecutionContext, tag: string): Promise<string> {
  const P = netnsUp(t, prefixes, `pm${process.pid % 100000}${tag}`, 'cone', 'cone')
  const ra = `${P}-ra`
  // miniupnpd's own sockets on the public side (its STUN test) must get their answers.
  execFileSync('ip', ['netns', 'exec', ra, process.env.IPTABLES ?? 'iptables', '-D', 'INPUT', '-i', 'pub0', '-p', 'udp', '-j', 'DROP'])
  // The chains miniupnpd fills (in the legacy tables its libiptc writes).
  for (const table of ['nat', 'filter', 'mangle']) ipt(ra, '-t', table, '-N', 'MINIUPNPD')
  ipt(ra, '-t', 'nat', '-N', 'MINIUPNPD-POSTROUTING')
  ipt(ra, '-t', 'nat', '-A', 'PREROUTING', '-i', 'pub0', '-j', 'MINIUPNPD')
  ipt(ra, '-t', 'nat', '-A', 'POSTROUTING', '-o', 'pub0', '-j', 'MINIUPNPD-POSTROUTING')
  ipt(ra, '-t', 'mangle', '-A', 'PREROUTING', '-i', 'pub0', '-j', 'MINIUPNPD')
  ipt(ra, '-t', 'filter', '-A', 'FORWARD', '-i', 'pub0', '!', '-o', 'pub0', '-j', 'MINIUPNPD')

  const stun = daemon(t, `${P}-rv`, process.execPath, [stunScript, '10.77.0.10', '3478'])
  await stun.waitFor('"ready"', 10_000)

  const dir = mkdtempSync(path.join(tmpdir(), 'deccom-portmap-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const conf = path.join(dir, 'miniupnpd.conf')
  writeFileSync(
    conf,
    [
      'ext_ifname=pub0',
      'listening_ip=lan0',
      'port=5000',
      'enable_upnp=yes',
      'enable_natpmp=yes', // NAT-PMP and PCP
      'secure_mode=yes',
      'ext_perform_stun=yes',
      'ext_stun_host=10.77.0.10',
      'ext_stun_port=3478',
      `lease_file=${path.join(dir, 'leases')}`,
      'system_uptime=yes',
      'uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b',
      'allow 1024-65535 192.168.1.0/24 1024-65535',
      'deny 0-65535 0.0.0.0/0 0-65535',
      '',
    ].join('\n'),
  )
  const upnpd = daemon(t, ra, 'miniupnpd', ['-f', conf, '-d', '-P', path.join(dir, 'pid')])
  await upnpd.waitFor('Listening for NAT-PMP/PCP traffic', 15_000)
  t.true(upnpd.output().includes('Port forwarding is now enabled'), 'miniupnpd learned its external address by STUN')
  return P
}

/**
 * `lifetime`: seconds of mapping to ask for; when short, the test also waits for a renewal (at
 * half the lifetime) and checks the mapping still works after it.
 */
async function scenario(t: ExecutionContext, protocol: 'upnp' | 'nat-pmp' | 'pcp', tag: string, lifetime?: number): Promise<void> {
  const P = await router(t, tag)
  const portMapping = { protocols: [protocol], ...(lifetime ? { lifetime } : {}) }
  const inside = runInNetns(t, children, `${P}-ha`, nodeScript, dist, { host: '0.0.0.0', portMapping, lifetime: 60_000 })
  const ready = await inside.wait((e) => e.event === 'ready', 10_000, 'ready')
  const localPort = Number(String(ready.address).split(':')[1])
  const mapped = await inside.wait((e) => e.event === 'mapped', 15_000, 'mapping outcome')
  const mappedAt = Date.now()
  const m = mapped.mapping as { protocol: string; external: string; internalPort: number; lifetime: number } | null
  t.truthy(m, `a mapping: ${JSON.stringify(mapped)}`)
  t.is(m!.protocol, protocol)
  t.is(m!.internalPort, localPort)
  t.true(m!.external.startsWith('10.77.0.2:'), `the router's external address: ${m!.external}`)
  t.true(m!.lifetime > 0)
  const nat = mapped.nat as { type: string; mapping: string; external: { host: string; port: number } }
  t.is(nat.mapping, protocol)
  t.is(nat.type, 'open')
  t.is(`${nat.external.host}:${nat.external.port}`, m!.external)
  const extPort = Number(m!.external.split(':')[1])
  t.regex(ipt(`${P}-ra`, '-t', 'nat', '-S', 'MINIUPNPD'), new RegExp(`--dport ${extPort}\\b`), 'the router forwards the port')

  // A node outside sends to the mapped address: it arrives directly (no punch, no relay — the
  // inside node never sent anything to it, so no NAT state but the mapping lets it in).
  const outside = runInNetns(t, children, `${P}-rv`, nodeScript, dist, { host: '10.77.0.10', portMapping: false, lifetime: 60_000 })
  const outReady = await outside.wait((e) => e.event === 'ready', 10_000, 'ready')
  outside.send({ cmd: 'send', to: m!.external, data: `hello over ${protocol}` })
  const got = await inside.wait((e) => e.event === 'message', 5000, 'message from outside')
  t.is(got.data, `hello over ${protocol}`)
  t.is(got.from, outReady.address, 'the sender seen unchanged: no relay in between')

  if (protocol === 'pcp') {
    // Control: the same send to a node behind the same router without a mapping never arrives.
    const unmapped = runInNetns(t, children, `${P}-ha`, nodeScript, dist, { host: '0.0.0.0', portMapping: false, lifetime: 60_000 })
    const port = String((await unmapped.wait((e) => e.event === 'ready', 10_000, 'ready')).address).split(':')[1]
    outside.send({ cmd: 'send', to: `10.77.0.2:${port}`, data: 'not mapped' })
    await new Promise((r) => setTimeout(r, 1000))
    t.false(unmapped.events.some((e) => e.event === 'message'), 'no mapping, no way in')
  }

  if (lifetime) {
    // Renewed at half the lifetime: past the end of the first lease the router still forwards the
    // port (miniupnpd removes an expired lease's rule), and a new sender — a new socket, so no
    // conntrack entry of the first exchange carries it — reaches the node.
    let renewals = 0
    for (let i = 0; i < 40 && renewals < 1; i++) {
      await new Promise((r) => setTimeout(r, 250))
      inside.events.length = 0
      inside.send({ cmd: 'stats' })
      const st = await inside.wait((e) => e.event === 'stats', 5000, 'stats')
      renewals = (st.stats as Record<string, number>).renewals ?? 0
    }
    t.true(renewals >= 1, 'the mapping was renewed before it expired')
    await new Promise((r) => setTimeout(r, Math.max(0, mappedAt + lifetime * 1000 + 1500 - Date.now())))
    t.regex(ipt(`${P}-ra`, '-t', 'nat', '-S', 'MINIUPNPD'), new RegExp(`--dport ${extPort}\\b`), 'still forwarded after the first lease ended')
    const outside2 = runInNetns(t, children, `${P}-rv`, nodeScript, dist, { host: '10.77.0.10', portMapping: false, lifetime: 60_000 })
    const out2 = await outside2.wait((e) => e.event === 'ready', 10_000, 'ready')
    outside2.send({ cmd: 'send', to: m!.external, data: 'after renewal' })
    const again = await inside.wait((e) => e.event === 'message' && e.data === 'after renewal', 5000, 'message after renewal')
    t.is(again.from, out2.address)
  }

  // close() deletes the mapping: the forwarding rule is gone (with short leases, well before the
  // renewed lease would end by itself).
  inside.send({ cmd: 'close' })
  const closed = await inside.wait((e) => e.event === 'closed', 10_000, 'closed')
  t.is((closed.stats as Record<string, number>)[`mapped_${protocol.replace('-', '_')}`], 1)
  t.notRegex(ipt(`${P}-ra`, '-t', 'nat', '-S', 'MINIUPNPD'), new RegExp(`--dport ${extPort}\\b`), 'the mapping is removed on close()')
}

if (why) {
  test('router port mapping (skipped)', (t) => {
    t.log(`skipped: ${why}`)
    t.pass()
  })
} else {
  test('UPnP-IGD: mapping obtained and renewed, an outside node reaches the node directly, close() removes it', (t) => scenario(t, 'upnp', 'u', 6))
  test('NAT-PMP: mapping obtained and renewed, an outside node reaches the node directly, close() removes it', (t) => scenario(t, 'nat-pmp', 'n', 6))
  test('PCP: mapping obtained, an outside node reaches the node directly, close() removes it', (t) => scenario(t, 'pcp', 'p'))
}
