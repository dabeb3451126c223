// A deccom node for the real-NAT test (__test__/nat.spec.ts), run as
//   ip netns exec NS node scripts/nat-node.mjs /abs/dist/index.js '{"role":..., ...}'
// Stack: HolePuncher (relay fallback) over Relay. Lifecycle and I/O: scripts/nat-child.mjs.
import { runChild, say } from './nat-child.mjs'

const [dist, cfgText] = process.argv.slice(2)
const cfg = JSON.parse(cfgText)
const { Node, HolePuncher, Relay } = await import(dist)

const hp = new HolePuncher({ relay: cfg.role !== 'rendezvous', punchTimeout: cfg.punchTimeout ?? 2000, rendezvous: cfg.rendezvous ? [cfg.rendezvous] : [] })
const relay = new Relay(cfg.role === 'rendezvous' ? { serve: { maxSessions: 16, maxBytesPerSecond: 1 << 20 } } : {})
const node = await Node.create({ host: cfg.host, port: cfg.port ?? 0, stack: [hp, relay] })

node.on('message', (from, data) => {
  const text = Buffer.from(data).toString()
  say({ event: 'message', from: from.address.key, relayed: from.relayed === true, data: text })
  if (cfg.echo && !text.startsWith('echo:')) {
    node.send(from, Buffer.from('echo:' + text)).catch((e) => say({ event: 'error', op: 'echo', code: e.code, message: e.message }))
  }
})

runChild({
  node,
  hp,
  cfg,
  lifetime: 20000,
  ready: { address: node.address.key },
  async onCommand (c) {
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
  },
})
