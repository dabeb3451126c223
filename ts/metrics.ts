/**
 * `node.metrics()`: every layer's counters in the Prometheus text exposition format (version
 * 0.0.4, which OpenMetrics parsers read too), one name style across layers:
 * `deccom_<layer>_<counter>_total` for counters and `deccom_<layer>_<name>` for gauges (values that
 * go down as well as up: sizes, windows, RTTs, queues). Every sample carries the node's id as the
 * `node` label (its first 16 hex digits), so several nodes of one process can share an endpoint.
 */

/** Counter names that are gauges (a current value, not a running total), by their ending. */
const GAUGE = /(^|_)(peers|size|cwnd|srtt_us|in_flight|reassembly_bytes|unproven_bytes|sessions|half_open|queued_bytes|queued_frames|buffered_bytes|connections|pending_connections|open|running|pending_requests|segments)$/

/** A Prometheus metric name part in snake case: `rxDatagrams` → `rx_datagrams`, `reliable-udp` → `reliable_udp`. */
function part(s: string): string {
  return s
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_')
    .replace(/_+/g, '_')
    .replace(/^_|_$/g, '')
}

/** Whether counter `name` (as `stats()` names it) is a gauge (a current value such as a size, window, RTT or queue, not a running total). */
export function isGauge(name: string): boolean {
  return GAUGE.test(part(name))
}

/** Renders `stats` (layer → counter → value) for the node whose id is `idHex`. */
export function renderMetrics(stats: Record<string, Record<string, number>>, idHex: string): string {
  const label = `{node="${idHex.slice(0, 16)}"}`
  const lines: string[] = []
  for (const layer of Object.keys(stats).sort()) {
    const counters = stats[layer]!
    for (const key of Object.keys(counters).sort()) {
      const v = counters[key]
      if (typeof v !== 'number' || !Number.isFinite(v)) continue
      const gauge = GAUGE.test(part(key))
      const name = `deccom_${part(layer)}_${part(key)}${gauge ? '' : '_total'}`
      lines.push(`# TYPE ${name} ${gauge ? 'gauge' : 'counter'}`, `${name}${label} ${v}`)
    }
  }
  return lines.join('\n') + '\n'
}
