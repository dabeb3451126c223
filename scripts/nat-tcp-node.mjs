// A deccom node for the real-NAT TCP hole-punching test (__test__/nat-tcp.spec.ts), run as
//   ip netns exec NS node scripts/nat-tcp-node.mjs /abs/dist/index.js '{"role":..., ...}'
// Stack: TcpHolePuncher over TcpTransport over HolePuncher (whose rendezvous probes make the
// rendezvous hear us through the NAT). Lifecycle and I/O: scripts/nat-child.mjs.
import { runChild, say } from './nat-child.mjs'

const [dist, cfgText] = process.argv.slice(2)
const cfg = JSON.parse(cfgText)
const { Node, HolePuncher, TcpTransport, TcpHolePuncher } = await import(dist)

const hp = new HolePuncher({ rendezvous: cfg.rendezvous ? [cfg.rendezvous] : [], probeInterval: 2000 })
const tcp = new TcpTransport({ port: cfg.tcpPort ?? 0 })
const thp = new TcpHolePuncher({ punchTimeout: cfg.punchTimeout ?? 8000, punchInterval: cfg.punchInterval ?? 50, direct: cfg.direct ?? true })
const node = await Node.create({ host: cfg.host, port: cfg.port ?? 0, stack: [thp, tcp, hp] })

thp.onConnection((r) => say({ event: 'tcp-connection', path: r.path, remote: r.peer.remoteAddress.key }))
tcp.on('frame', (peer, data) => {
  const text = Buffer.from(data).toString()
  say({ event: 'frame', from: peer.remoteAddress.key, data: text })
  if (cfg.echo && !text.startsWith('echo:')) {
    tcp.sendStream(peer.id, Buffer.from('echo:' + text)).catch((e) => say({ event: 'error', op: 'echo', code: e.code, message: e.message }))
  }
})

runChild({
  node,
  hp,
  cfg,
  lifetime: 25000,
  ready: { address: node.address.key, tcp: tcp.tcpAddress().key },
  async onCommand (c) {
    if (c.cmd === 'connect') {
      try {
        const res = await thp.connect(c.target, c.via)
        say({ event: 'connected', path: res.path, remote: res.peer.remoteAddress.key })
        await tcp.sendStream(res.peer.id, Buffer.from(c.message))
      } catch (e) {
        say({ event: 'error', op: 'connect', code: e.code, message: e.message, stats: thp.stats() })
      }
    }
    if (c.cmd === 'observe') {
      // Connect to TCP observers; each reports where it sees our connection come from.
      try {
        for (const to of c.targets) await tcp.openConnection(to)
        const end = Date.now() + 3000
        while (tcp.tcpObservations().length < c.targets.length && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 20))
        say({
          event: 'mapping',
          mapping: tcp.tcpMapping(),
          external: tcp.externalTcpAddress()?.key ?? null,
          listen: tcp.tcpAddress().key,
          observations: tcp.tcpObservations().map((o) => ({ address: o.address.key, localPort: o.localPort })),
        })
      } catch (e) {
        say({ event: 'error', op: 'observe', code: e.code, message: e.message })
      }
    }
    if (c.cmd === 'stats') say({ event: 'stats', thp: thp.stats(), tcp: tcp.stats() })
  },
})
