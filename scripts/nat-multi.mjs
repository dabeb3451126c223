// Several deccom nodes in one process for the real-NAT tests (__test__/nat-concurrent.spec.ts), run as
//   ip netns exec NS node scripts/nat-multi.mjs /abs/dist/index.js '{"count":N, "rendezvous":..., ...}'
// Each node: HolePuncher (no relay fallback: a lost punch is an error). Commands:
//   {"cmd":"punch","targets":[mapped addresses], "from"?:[node index per target], "via": R}: node from[i]
//   (default i) punches targets[i], all at once;
//   reports {"event":"punched", results:[{ok, ms, path|code}]}.
//   {"cmd":"stats"}: the summed hole-puncher counters.
import { runChild, say } from './nat-child.mjs'

const [dist, cfgText] = process.argv.slice(2)
const cfg = JSON.parse(cfgText)
const { Node, HolePuncher } = await import(dist)

const count = cfg.count ?? 1
const hps = []
const nodes = []
for (let i = 0; i < count; i++) {
  const hp = new HolePuncher({ punchTimeout: cfg.punchTimeout ?? 3000, rendezvous: cfg.rendezvous ? [cfg.rendezvous] : [] })
  hps.push(hp)
  nodes.push(await Node.create({ host: cfg.host ?? '0.0.0.0', port: 0, stack: [hp] }))
}
const group = { close: () => Promise.all(nodes.map((n) => n.close())) }
const heardAll = { introducible: () => hps.flatMap((h) => h.introducible()) }

runChild({
  node: group,
  hp: heardAll,
  cfg,
  lifetime: 25000,
  ready: { addresses: nodes.map((n) => n.address.key) },
  async onCommand (c) {
    if (c.cmd === 'punch') {
      const t0 = performance.now()
      const results = await Promise.all(c.targets.map((target, i) => hps[c.from?.[i] ?? i].connect(target, c.via).then(
        (r) => ({ ok: true, ms: Math.round(performance.now() - t0), path: r.path, address: r.address.key }),
        (e) => ({ ok: false, ms: Math.round(performance.now() - t0), code: e.code }),
      )))
      say({ event: 'punched', results })
    }
    if (c.cmd === 'stats') {
      const sum = {}
      for (const n of nodes) for (const [k, v] of Object.entries(n.stats()['hole-puncher'] ?? {})) if (typeof v === 'number') sum[k] = (sum[k] ?? 0) + v
      say({ event: 'stats', stats: sum })
    }
  },
})
