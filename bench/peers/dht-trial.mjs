// One trial of the DHT benchmark (bench/dht.mjs), the same procedure for every implementation:
// the implementation's script (bench/dht.mjs --role=trial, bench/peers/hyper/dht.mjs) supplies an
// adapter and calls runDhtTrial. Node built-ins only (the peer scripts have their own node_modules).
//
// The trial starts a network of --nodes nodes, then runs `warmup` uncounted and `reps` counted
// repetitions of:
//  - values, between two network nodes W and R, after a pause of `settle` ms (the previous
//    repetition's traffic is over): W puts an immutable 100-byte value, R gets it; W puts a mutable
//    value (fresh key pair, seq 1), R gets it. Each round trip timed alone, each result checked (a
//    wrong or missing value fails the repetition);
//  - meet: a third network node A announces a fresh topic and its announce completes; a newcomer B
//    is made and bootstrapped, and `settle` ms later (its bootstrap traffic is over) the clock
//    starts: B joins / looks up the topic; the clock stops at the first answer that names A.
//    Datagrams: all that B sent (tx) and received (rx) meanwhile. B stays up until the trial ends
//    (closing it would leave a dead entry in the others' routing tables).
// Protocol: the orchestrator sends {reps, warmup, settle}; the trial answers {result} (or {error}) and exits.
import { randomBytes } from 'node:crypto'
import { hardLimit, inbox, now, sleep, withTimeout } from './common.mjs'

export const DHT_METRICS = ['meet_ms', 'meet_tx', 'meet_rx', 'iput_ms', 'iget_ms', 'mput_ms', 'mget_ms']

/**
 * adapter: {
 *   start(nodes) → network nodes (array, [0] the bootstrap node),
 *   newcomer() → a fresh node, bootstrapped,
 *   announce(node, topic) → resolves when the announce is complete,
 *   meet(node, topic, announcer) → resolves when an answer names announcer,
 *   counters(node) → { tx, rx },
 *   put(node, value) → key;  get(node, key) → value | null,
 *   keyPair() → owner;  putMutable(node, owner, value, seq);  getMutable(node, owner, seq) → { value, seq } | null,
 *   close(nodes) }
 */
export async function runDhtTrial (adapter, f) {
  hardLimit(Number(f.limit ?? 600_000), `${f.impl} dht trial`)
  process.on('disconnect', () => process.exit(0))
  const fail = (err) => { process.send({ error: String(err?.stack ?? err).slice(0, 600) }); setTimeout(() => process.exit(1), 100) }
  process.on('uncaughtException', fail)
  process.on('unhandledRejection', fail)
  const box = inbox(process)
  const { reps, warmup, settle } = await box.next((m) => m.reps !== undefined, 60_000, 'trial options')
  const step = (p, what) => withTimeout(Promise.resolve(p), 15_000, what)
  const nodes = await withTimeout(adapter.start(Number(f.nodes ?? 30)), 120_000, 'network start')
  const pick = (i) => nodes[1 + (i % (nodes.length - 1))]
  const out = Object.fromEntries(DHT_METRICS.map((k) => [k, []]))
  out.failures = 0
  out.errors = []
  const newcomers = []
  for (let i = -warmup; i < reps; i++) {
    const rep = i + warmup
    const r = {}
    try {
      await sleep(settle)
      const w = pick(3 * rep + 1)
      const rd = pick(3 * rep + 2)
      const value = randomBytes(100)
      let t = now()
      const key = await step(adapter.put(w, value), 'immutable put')
      r.iput_ms = now() - t
      t = now()
      const got = await step(adapter.get(rd, key), 'immutable get')
      r.iget_ms = now() - t
      if (!got || !Buffer.from(got).equals(value)) throw new Error('immutable get: wrong or no value')
      const owner = adapter.keyPair()
      t = now()
      await step(adapter.putMutable(w, owner, value, 1), 'mutable put')
      r.mput_ms = now() - t
      t = now()
      const m = await step(adapter.getMutable(rd, owner, 1), 'mutable get')
      r.mget_ms = now() - t
      if (!m || m.seq !== 1 || !Buffer.from(m.value).equals(value)) throw new Error('mutable get: wrong or no value')

      const a = pick(3 * rep)
      const topic = randomBytes(32)
      await step(adapter.announce(a, topic), 'announce')
      const b = await step(adapter.newcomer(), 'newcomer')
      newcomers.push(b)
      await sleep(settle)
      const c0 = adapter.counters(b)
      t = now()
      await step(adapter.meet(b, topic, a), 'meet')
      r.meet_ms = now() - t
      const c1 = adapter.counters(b)
      r.meet_tx = c1.tx - c0.tx
      r.meet_rx = c1.rx - c0.rx
    } catch (err) {
      if (i < 0) continue
      out.failures++
      if (out.errors.length < 3) out.errors.push(String(err?.message ?? err).slice(0, 300))
    }
    if (i < 0) continue
    for (const k of DHT_METRICS) if (r[k] !== undefined) out[k].push(r[k])
  }
  process.send({ result: out })
  await withTimeout(Promise.resolve(adapter.close([...newcomers, ...nodes])), 10_000, 'close').catch(() => {})
  process.exit(0)
}
