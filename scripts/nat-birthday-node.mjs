// Nodes for the birthday-punch real-NAT test (__test__/nat-birthday.spec.ts), run as
//   ip netns exec NS node scripts/nat-birthday-node.mjs /abs/dist/index.js '{"count":N,"rendezvous":[R1,R2],...}'
// `count` nodes, each: Node.connect over ReliableUdp + Noise + HolePuncher (relay fallback) + Relay,
// probing both rendezvous servers (two observers tell whether the NAT maps per destination).
// Every node accepts connections and answers each stream with the SHA-256 of what it received.
// Commands:
//   {"cmd":"mapped"}: → {"event":"mapped", nodes:[{mapped (as R1 sees it), mapping}]} once all know both;
//   {"cmd":"connect","from":i,"target":addr,"via":R1,"bytes":n}: node i connects, sends n random
//     bytes on a stream and checks the digest → {"event":"connected"|"error", ms, path, punch, digestOk};
//   {"cmd":"stats"}: per-node hole-puncher and udp counters, the process's socket fds now, and the
//     most auxiliary sockets of one node and socket fds seen since the last "stats" (sampled every 5 ms);
//   {"cmd":"close"}: closes every node → {"event":"closed", fds}.
import { createHash, randomBytes } from 'node:crypto'
import { readdirSync, readlinkSync } from 'node:fs'
import { runChild, say } from './nat-child.mjs'

const [dist, cfgText] = process.argv.slice(2)
const cfg = JSON.parse(cfgText)
const { Node, HolePuncher, Relay, ReliableUdp, Noise } = await import(dist)

/** Sockets this process holds (UDP and others), from /proc/self/fd. */
function socketFds () {
  let n = 0
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) n++
    } catch {}
  }
  return n
}

const R = cfg.rendezvous
const baseFds = socketFds()
const nodes = []
const hps = []
for (let i = 0; i < (cfg.count ?? 1); i++) {
  const hp = new HolePuncher({ birthday: cfg.birthday, relay: true, punchTimeout: cfg.punchTimeout ?? 3000, rendezvous: R, birthdaySockets: cfg.birthdaySockets, birthdayProbeRate: cfg.birthdayProbeRate, birthdayMaxProbes: cfg.birthdayMaxProbes })
  const node = await Node.create({ host: '0.0.0.0', port: 0, connections: { directTimeout: 300 }, stack: cfg.noise === false ? [new ReliableUdp(), hp, new Relay()] : [new ReliableUdp(), new Noise(), hp, new Relay()] })
  node.on('connection', (conn) => conn.on('stream', (s) => {
    const h = createHash('sha256')
    s.on('data', (d) => h.update(d))
    s.on('end', () => s.end(h.digest()))
  }))
  nodes.push(node)
  hps.push(hp)
}
const group = { close: () => Promise.all(nodes.map((n) => n.close())) }
const heardAll = { introducible: () => hps.flatMap((h) => h.introducible()) }

// The most auxiliary sockets one node had open and the most socket fds of the process seen, sampled every 5 ms; reset by "stats".
let maxAux = 0
let maxFds = 0
const sampler = setInterval(() => {
  for (const node of nodes) maxAux = Math.max(maxAux, node.stats().udp?.aux_open ?? 0)
  maxFds = Math.max(maxFds, socketFds())
}, 5)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

runChild({
  node: group,
  hp: heardAll,
  cfg,
  lifetime: 120000,
  ready: { count: nodes.length, fds: baseFds },
  async onCommand (c) {
    if (c.cmd === 'mapped') {
      // Wait until every node has an observation from each rendezvous server.
      for (let t = 0; t < 100 && !hps.every((h) => R.every((r) => h.observations().some((o) => o.observer.key === r))); t++) await sleep(50)
      say({ event: 'mapped', nodes: hps.map((h) => ({ mapped: h.observations().find((o) => o.observer.key === R[0])?.address.key ?? null, mapping: h.natMapping() })) })
    }
    if (c.cmd === 'connect') {
      const node = nodes[c.from]
      const t0 = performance.now()
      try {
        const conn = await node.connect(c.target, { via: c.via })
        const ms = Math.round(performance.now() - t0)
        const data = randomBytes(c.bytes ?? 0)
        const s = await conn.openStream()
        const back = []
        s.on('data', (d) => back.push(d))
        const ended = new Promise((resolve) => s.on('end', resolve))
        s.end(data)
        await ended
        const digestOk = Buffer.concat(back).equals(createHash('sha256').update(data).digest())
        say({ event: 'connected', ms, path: conn.path, punch: conn.punch, digestOk })
      } catch (e) {
        say({ event: 'error', code: e.code, message: e.message })
      }
    }
    if (c.cmd === 'stats') {
      say({ event: 'stats', fds: socketFds(), maxAux, maxFds, auxOpen: nodes.reduce((n, node) => n + (node.stats().udp?.aux_open ?? 0), 0), nodes: nodes.map((n) => ({ hp: n.stats()['hole-puncher'], udp: n.stats().udp })) })
      maxAux = maxFds = 0
    }
    if (c.cmd === 'close') {
      clearInterval(sampler)
      await group.close()
      say({ event: 'closed', fds: socketFds() })
    }
  },
})
