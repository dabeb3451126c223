// A deccom node for the real-NAT test (__test__/nat.spec.ts), run as
//   ip netns exec NS node scripts/nat-node.mjs /abs/dist/index.js '{"role":..., ...}'
// Reports JSON lines on stdout; takes JSON-line commands on stdin. Exits on stdin EOF, on
// {"cmd":"exit"}, or after `lifetime` ms, whatever comes first.
import { createInterface } from 'node:readline'

const [dist, cfgText] = process.argv.slice(2)
const cfg = JSON.parse(cfgText)
const { Node, HolePuncher, Relay } = await import(dist)
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const hp = new HolePuncher({ relay: cfg.role !== 'rendezvous', punchTimeout: cfg.punchTimeout ?? 2000, rendezvous: cfg.rendezvous ? [cfg.rendezvous] : [] })
const relay = new Relay(cfg.role === 'rendezvous' ? { serve: { maxSessions: 16, maxBytesPerSecond: 1 << 20 } } : {})
const node = await Node.create({ host: cfg.host, port: cfg.port ?? 0, stack: [hp, relay] })
let closing = false
const exit = async (code = 0) => {
  if (closing) return
  closing = true
  clearTimeout(life)
  clearInterval(heard)
  await node.close().catch(() => {})
  process.exit(code)
}
const life = setTimeout(() => {
  say({ event: 'lifetime' })
  exit(3)
}, cfg.lifetime ?? 20000)

node.on('message', (from, data) => {
  const text = Buffer.from(data).toString()
  say({ event: 'message', from: from.address.key, relayed: from.relayed === true, data: text })
  if (cfg.echo && !text.startsWith('echo:')) {
    node.send(from, Buffer.from('echo:' + text)).catch((e) => say({ event: 'error', op: 'echo', code: e.code, message: e.message }))
  }
})

let lastHeard = ''
const heard = setInterval(() => {
  const addrs = hp.introducible().map((a) => a.key).sort()
  if (addrs.join() !== lastHeard) {
    lastHeard = addrs.join()
    say({ event: 'heard', addrs })
  }
}, 50)

createInterface({ input: process.stdin }).on('line', async (line) => {
  let c
  try {
    c = JSON.parse(line)
  } catch {
    return
  }
  if (c.cmd === 'exit') return exit(0)
  if (c.cmd === 'connect') {
    try {
      const conn = hp.connect(c.target, c.via)
      const sent = node.send(c.target, Buffer.from(c.message)) // queued until the path opens
      const res = await conn
      await sent
      say({ event: 'connected', path: res.path, address: res.address.key })
    } catch (e) {
      say({ event: 'error', op: 'connect', code: e.code, message: e.message })
    }
  }
  if (c.cmd === 'stats') say({ event: 'stats', stats: node.stats(), observations: hp.observations().map((o) => [o.observer.key, o.address.key]), external: hp.externalAddress()?.key ?? null })
}).on('close', () => exit(0))

say({ event: 'ready', address: node.address.key })
