// A deccom node for the real-NAT TCP hole-punching test (__test__/nat-tcp.spec.ts), run as
//   ip netns exec NS node scripts/nat-tcp-node.mjs /abs/dist/index.js '{"role":..., ...}'
// Stack: TcpHolePuncher over TcpTransport over HolePuncher (whose rendezvous probes make the
// rendezvous hear us through the NAT). Reports JSON lines on stdout; takes JSON-line commands on
// stdin. Exits on stdin EOF, on {"cmd":"exit"}, or after `lifetime` ms.
import { createInterface } from 'node:readline'

const [dist, cfgText] = process.argv.slice(2)
const cfg = JSON.parse(cfgText)
const { Node, HolePuncher, TcpTransport, TcpHolePuncher } = await import(dist)
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const hp = new HolePuncher({ rendezvous: cfg.rendezvous ? [cfg.rendezvous] : [], probeInterval: 2000 })
const tcp = new TcpTransport({ port: cfg.tcpPort ?? 0 })
const thp = new TcpHolePuncher({ punchTimeout: cfg.punchTimeout ?? 8000, punchInterval: cfg.punchInterval ?? 50, direct: cfg.direct ?? true })
const node = await Node.create({ host: cfg.host, port: cfg.port ?? 0, stack: [thp, tcp, hp] })
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
}, cfg.lifetime ?? 25000)

thp.onConnection((r) => say({ event: 'tcp-connection', path: r.path, remote: r.peer.remoteAddress.key }))
tcp.on('frame', (peer, data) => {
  const text = Buffer.from(data).toString()
  say({ event: 'frame', from: peer.remoteAddress.key, data: text })
  if (cfg.echo && !text.startsWith('echo:')) {
    tcp.sendStream(peer.id, Buffer.from('echo:' + text)).catch((e) => say({ event: 'error', op: 'echo', code: e.code, message: e.message }))
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

createInterface({ input: process.stdin })
  .on('line', async (line) => {
    let c
    try {
      c = JSON.parse(line)
    } catch {
      return
    }
    if (c.cmd === 'exit') return exit(0)
    if (c.cmd === 'connect') {
      try {
        const res = await thp.connect(c.target, c.via)
        say({ event: 'connected', path: res.path, remote: res.peer.remoteAddress.key })
        await tcp.sendStream(res.peer.id, Buffer.from(c.message))
      } catch (e) {
        say({ event: 'error', op: 'connect', code: e.code, message: e.message, stats: thp.stats() })
      }
    }
    if (c.cmd === 'stats') say({ event: 'stats', thp: thp.stats(), tcp: tcp.stats() })
  })
  .on('close', () => exit(0))

say({ event: 'ready', address: node.address.key, tcp: tcp.tcpAddress().key })
