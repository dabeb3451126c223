/**
 * node.metrics(): the counters of node.stats() in the Prometheus text format, one name style
 * (snake case, `deccom_<layer>_<counter>_total` for counters, no suffix for gauges), every sample
 * labelled with the node, values equal to stats(). Imports the BUILT package (dist/).
 */
import test from 'ava'

import { Kademlia, Node, Noise, ReliableUdp, isGauge } from '../dist/index.js'

const host = '127.0.0.1'

test('metrics() renders every counter of stats() in the Prometheus text format', async (t) => {
  const a = await Node.create({ host, port: 0, stack: [new Kademlia(), new ReliableUdp(), new Noise()] })
  const b = await Node.create({ host, port: 0, stack: [new Kademlia({ bootstrap: [a.address] }), new ReliableUdp(), new Noise()] })
  try {
    await b.ready()
    await b.connect(a.id)
    const text = b.metrics()
    const stats = b.stats()
    const lines = text.trimEnd().split('\n')
    const label = `{node="${b.identity.idHex.slice(0, 16)}"}`
    const seen = new Set<string>()
    const values = new Map<string, number>()
    for (let i = 0; i < lines.length; i += 2) {
      const type = /^# TYPE (deccom_[a-z0-9_]+) (counter|gauge)$/.exec(lines[i]!)
      t.truthy(type, `line ${i}: ${lines[i]}`)
      const [, name, kind] = type!
      t.false(seen.has(name!), `${name} appears once`)
      seen.add(name!)
      t.is(kind === 'counter', name!.endsWith('_total'), `${name}: counters and only counters end in _total`)
      const sample = new RegExp(`^${name}\\{node="[0-9a-f]{16}"\\} (-?[0-9.e+]+)$`).exec(lines[i + 1]!)
      t.truthy(sample, lines[i + 1])
      values.set(name!, Number(sample![1]))
      t.true(lines[i + 1]!.includes(label))
    }
    // Every numeric counter of stats() is there, with its value.
    let count = 0
    for (const [layer, counters] of Object.entries(stats)) {
      for (const [key, v] of Object.entries(counters)) {
        if (typeof v !== 'number') continue
        count++
        const snake = (s: string) => s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase().replace(/[^a-z0-9_]/g, '_').replace(/_+/g, '_').replace(/^_|_$/g, '')
        const name = `deccom_${snake(layer)}_${snake(key)}${isGauge(key) ? '' : '_total'}`
        // Gauges may move between the two reads (RTT, cwnd); counters only grow.
        const got = values.get(name)
        t.not(got, undefined, `${layer}.${key} → ${name}`)
        if (!isGauge(key)) t.true(got! <= v, `${name}: ${got} then ${v}`)
      }
    }
    t.is(seen.size, count)
    // Names a dashboard relies on.
    for (const name of ['deccom_udp_tx_datagrams_total', 'deccom_udp_rudp_cwnd', 'deccom_udp_rudp_srtt_us', 'deccom_kademlia_table_size', 'deccom_app_connections_open', 'deccom_app_connections_opened_total', 'deccom_udp_noise_handshakes_completed_total']) {
      t.true(seen.has(name), name)
    }
    t.true(isGauge('rudp_cwnd') && isGauge('table_size') && isGauge('connections_open') && !isGauge('connections_opened') && !isGauge('rudp_messages_queued'))
  } finally {
    await b.close()
    await a.close()
  }
})
