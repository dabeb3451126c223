// Summary of a SimulatedNetwork JSONL trace (sim.exportTrace): an SVG chart and a text summary.
//
//   node bench/sim-report.mjs run.jsonl [--svg run.svg] [--title "..."]
//
// The chart has three panels: the CDF of lookup hops, the CDF of lookup latency (virtual ms), and
// the traffic per message type (datagrams put on the network, bytes as labels). Lookups are the
// `lookup_end` user events (fields `hops`, `ms`, `found`; without `ms`, the latency is the time
// since the `lookup_start` with the same `id`). "Datagrams sent" counts every datagram put on a
// link: `send`, `lost`, `queue_drop` and `uplink_drop` lines (`nat_drop` is listed apart: it
// happens on the way out or in). The trace is read line by line (memory: the lookups and the
// per-type counters, not the trace). The SVG is written by this script; no plotting library.
import { createReadStream, writeFileSync } from 'node:fs'
import { createInterface } from 'node:readline'

const args = process.argv.slice(2)
const input = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')))
const opt = (name) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : undefined
}
if (input === undefined) {
  console.error('usage: node bench/sim-report.mjs trace.jsonl [--svg out.svg] [--title text]')
  process.exit(2)
}
const svgPath = opt('svg') ?? input.replace(/\.jsonl?$/, '') + '.svg'
const title = opt('title') ?? input

// ---- message types ----------------------------------------------------------------------------

const LAYERS = ['app', 'sim/udp', 'reliable-udp', 'kademlia', 'noise', 'big-gossip', 'fixed-peers', 'keep-alive', 'gossip', 'hole-punch', 'relay', 'tcp-hole-punch', 'connection']
const KAD = { 1: 'PING', 2: 'PONG', 3: 'FIND_NODE', 4: 'NODES' }
const UDP = { 1: 'PING', 2: 'PONG' }

/** A name for the message type of a datagram line: the layer, and the type where known. */
function typeOf(tag, p) {
  const layer = LAYERS[tag] ?? `tag ${tag}`
  const b0 = parseInt(p.slice(0, 2), 16)
  const b1 = parseInt(p.slice(2, 4), 16)
  if (tag === 3) return `${layer} ${KAD[b1] ?? `type ${b1}`}`
  if (tag === 1) return `${layer} ${UDP[b0] ?? `type ${b0}`}`
  return layer
}

// ---- read -------------------------------------------------------------------------------------

const OUT = new Set(['send', 'lost', 'queue_drop', 'uplink_drop'])
const verdicts = new Map()
const types = new Map() // name -> { n, bytes }
const starts = new Map() // lookup id -> t
const hops = []
const latency = []
let lookups = 0
let found = 0
let lines = 0
let bad = 0
let t0 = Infinity
let t1 = -Infinity
const other = new Map()

const rl = createInterface({ input: createReadStream(input), crlfDelay: Infinity })
for await (const line of rl) {
  if (line.length === 0) continue
  let e
  try {
    e = JSON.parse(line)
  } catch {
    bad++
    continue
  }
  lines++
  if (typeof e.t === 'number') {
    if (e.t < t0) t0 = e.t
    if (e.t > t1) t1 = e.t
  }
  if (typeof e.tag === 'number') {
    verdicts.set(e.ev, (verdicts.get(e.ev) ?? 0) + 1)
    if (OUT.has(e.ev)) {
      const name = typeOf(e.tag, String(e.p ?? ''))
      const x = types.get(name) ?? { n: 0, bytes: 0 }
      x.n++
      x.bytes += e.size
      types.set(name, x)
    }
  } else if (e.ev === 'lookup_start') {
    if (e.id !== undefined) starts.set(e.id, e.t)
  } else if (e.ev === 'lookup_end') {
    lookups++
    if (e.found !== false) found++
    if (typeof e.hops === 'number') hops.push(e.hops)
    const ms = typeof e.ms === 'number' ? e.ms : starts.has(e.id) ? e.t - starts.get(e.id) : undefined
    if (ms !== undefined) latency.push(ms)
    starts.delete(e.id)
  } else {
    other.set(e.ev, (other.get(e.ev) ?? 0) + 1)
  }
}

// ---- text summary -----------------------------------------------------------------------------

const v = (k) => verdicts.get(k) ?? 0
const sent = v('send') + v('lost') + v('queue_drop') + v('uplink_drop')
const q = (xs, p) => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}
const fmt = (x) => (Number.isFinite(x) ? (Number.isInteger(x) ? String(x) : x.toFixed(1)) : '-')
const byType = [...types.entries()].sort((a, b) => b[1].n - a[1].n)
const out = []
out.push(`trace: ${input}: ${lines} lines${bad ? ` (${bad} unparsable)` : ''}, virtual time ${fmt(t0)}–${fmt(t1)} ms`)
out.push(
  `datagrams sent: ${sent} (delivered ${v('deliver')}, lost ${v('lost')}, queue_drop ${v('queue_drop')}, uplink_drop ${v('uplink_drop')}, ` +
    `downlink_drop ${v('downlink_drop')}, no_route ${v('no_route')}, nat_drop ${v('nat_drop')})`,
)
out.push(
  `lookups: ${lookups} (found ${found}); hops median ${fmt(q(hops, 0.5))}, p90 ${fmt(q(hops, 0.9))}, max ${fmt(hops.length ? Math.max(...hops) : NaN)}; ` +
    `latency median ${fmt(q(latency, 0.5))} ms, p90 ${fmt(q(latency, 0.9))} ms, p99 ${fmt(q(latency, 0.99))} ms`,
)
for (const [k, n] of other) out.push(`event ${k}: ${n}`)
out.push('traffic per message type:')
for (const [name, x] of byType) out.push(`  ${name.padEnd(24)} ${String(x.n).padStart(10)} datagrams ${String(x.bytes).padStart(12)} bytes`)
console.log(out.join('\n'))

// ---- SVG --------------------------------------------------------------------------------------

const W = 400
const H = 280
const M = { l: 52, r: 16, t: 34, b: 40 }
const size = (b) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`)
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const text = (x, y, s, extra = '') => `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${extra}>${esc(s)}</text>`

/** Round tick values covering [0, max]. */
function ticks(max, n = 5) {
  if (!(max > 0)) return [0, 1]
  const raw = max / n
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)
  const out = []
  for (let x = 0; x <= max + step * 1e-9; x += step) out.push(+x.toFixed(10))
  if (out[out.length - 1] < max) out.push(+(out[out.length - 1] + step).toFixed(10))
  return out
}

function axes(x0, label, xLabel, xt, yt, xs, ys) {
  const g = []
  g.push(text(x0 + M.l, 20, label, 'font-weight="bold" font-size="14"'))
  for (const t of yt) {
    const y = ys(t)
    g.push(`<line x1="${x0 + M.l}" x2="${x0 + W - M.r}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#ddd"/>`)
    g.push(text(x0 + M.l - 6, y + 4, String(t), 'text-anchor="end" font-size="11"'))
  }
  for (const t of xt) {
    const x = xs(t)
    g.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${H - M.b}" y2="${H - M.b + 4}" stroke="#333"/>`)
    g.push(text(x, H - M.b + 16, fmt(t), 'text-anchor="middle" font-size="11"'))
  }
  g.push(`<line x1="${x0 + M.l}" x2="${x0 + W - M.r}" y1="${H - M.b}" y2="${H - M.b}" stroke="#333"/>`)
  g.push(`<line x1="${x0 + M.l}" x2="${x0 + M.l}" y1="${M.t}" y2="${H - M.b}" stroke="#333"/>`)
  g.push(text(x0 + (M.l + W - M.r) / 2, H - 6, xLabel, 'text-anchor="middle" font-size="12"'))
  return g
}

/** An empirical CDF panel at x offset x0. */
function cdfPanel(x0, label, xLabel, values, discrete) {
  const s = [...values].sort((a, b) => a - b)
  const max = s.length ? s[s.length - 1] : 1
  const xt = discrete ? ticks(Math.max(max, 1), Math.min(Math.max(max, 1), 8)) : ticks(max)
  const xmax = xt[xt.length - 1]
  const xs = (x) => x0 + M.l + (x / xmax) * (W - M.l - M.r)
  const ys = (y) => H - M.b - y * (H - M.t - M.b)
  const g = axes(x0, label, xLabel, xt, [0, 0.25, 0.5, 0.75, 1], xs, ys)
  if (s.length === 0) {
    g.push(text(x0 + W / 2, H / 2, 'no lookups in the trace', 'text-anchor="middle" fill="#999"'))
    return g
  }
  // A step function: (x, F(x)) at each distinct value.
  const pts = [`${xs(s[0]).toFixed(1)},${ys(0).toFixed(1)}`]
  for (let i = 0; i < s.length; i++) {
    if (i + 1 < s.length && s[i + 1] === s[i]) continue
    const f = (i + 1) / s.length
    const prev = pts[pts.length - 1].split(',')[1]
    pts.push(`${xs(s[i]).toFixed(1)},${prev}`)
    pts.push(`${xs(s[i]).toFixed(1)},${ys(f).toFixed(1)}`)
  }
  g.push(`<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="${pts.join(' ')}"/>`)
  g.push(text(x0 + W - M.r - 4, H - M.b - 8, `n = ${s.length}, median ${fmt(q(s, 0.5))}`, 'text-anchor="end" font-size="11" fill="#555"'))
  return g
}

/** Horizontal bars of datagrams per message type at x offset x0. */
function barPanel(x0) {
  const rows = byType.slice(0, 12)
  const g = [text(x0 + 8, 20, 'traffic per message type', 'font-weight="bold" font-size="14"')]
  if (rows.length === 0) return [...g, text(x0 + W / 2, H / 2, 'no datagrams', 'text-anchor="middle" fill="#999"')]
  const labelW = 150
  const max = rows[0][1].n
  const rowH = (H - M.t - 16) / rows.length
  rows.forEach(([name, x], i) => {
    const y = M.t + i * rowH
    const w = (x.n / max) * (W - labelW - 120)
    g.push(text(x0 + labelW - 6, y + rowH * 0.65, name, 'text-anchor="end" font-size="11"'))
    g.push(`<rect x="${x0 + labelW}" y="${(y + rowH * 0.15).toFixed(1)}" width="${Math.max(1, w).toFixed(1)}" height="${(rowH * 0.7).toFixed(1)}" fill="#ff7f0e"/>`)
    g.push(text(x0 + labelW + w + 4, y + rowH * 0.65, `${x.n} (${size(x.bytes)})`, 'font-size="10"'))
  })
  g.push(text(x0 + W / 2, H - 4, 'datagrams sent (bytes)', 'text-anchor="middle" font-size="12"'))
  return g
}

const body = [
  ...cdfPanel(0, 'lookup hops (CDF)', 'hops', hops, true),
  ...cdfPanel(W, 'lookup latency (CDF)', 'virtual ms', latency, false),
  ...barPanel(2 * W),
]
const svg =
  `<svg xmlns="http://www.w3.org/2000/svg" width="${3 * W}" height="${H + 24}" viewBox="0 0 ${3 * W} ${H + 24}" font-family="sans-serif">\n` +
  `<rect width="100%" height="100%" fill="white"/>\n` +
  `<g transform="translate(0,20)">\n${body.join('\n')}\n</g>\n` +
  text(8, 14, `${title} — ${sent} datagrams, ${lookups} lookups`, 'font-size="12" fill="#333"') +
  '\n</svg>\n'
writeFileSync(svgPath, svg)
console.log(`chart: ${svgPath}`)
