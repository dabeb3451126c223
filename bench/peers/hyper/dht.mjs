// hyperdht side of bench/dht.mjs: one trial on a fresh hyperdht testnet of --nodes (30) DHT nodes
// on 127.0.0.1, printed as one JSON line:
//  - meet: an announcer A (fresh ephemeral node) announces a fresh topic (announce().finished());
//    a newcomer B (fresh, bootstrapped before the clock starts) runs lookup(topic): time to the first
//    reply that lists A, and the datagrams B sent until then (udx send/trySend, counted in JS);
//  - values: W.immutablePut / R.immutableGet, W.mutablePut(seq i) / R.mutableGet(latest) round trips (ms).
// Loopback only: explicit 127.0.0.1 bootstrap lists; hyperdht's public bootstrap list is emptied and
// any datagram to another host is dropped.
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'

const require = createRequire(import.meta.url)
require('hyperdht/lib/constants.js').BOOTSTRAP_NODES.length = 0
const DHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const udxRequire = createRequire(require.resolve('dht-rpc'))
const UDXSocket = udxRequire('udx-native/lib/socket.js')
const counts = new WeakMap()
for (const name of ['send', 'trySend']) {
  const orig = UDXSocket.prototype[name]
  UDXSocket.prototype[name] = function (buffer, port, host, ttl) {
    if (host && !String(host).startsWith('127.')) return name === 'send' ? Promise.resolve(false) : undefined
    counts.set(this.udx, (counts.get(this.udx) ?? 0) + 1)
    return orig.call(this, buffer, port, host, ttl)
  }
}
const flags = Object.fromEntries(process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/.exec(a)).filter(Boolean).map((m) => [m[1], m[2] ?? 'true']))
const SIZE = Number(flags.nodes ?? 30)
const REPS = Number(flags.reps ?? 5)
const now = () => performance.now()

const testnet = await createTestnet(SIZE, { host: '127.0.0.1', bootstrap: [] })
const bootstrap = testnet.bootstrap
const make = () => new DHT({ ephemeral: true, bootstrap, host: '127.0.0.1' })
const out = { meet_ms: [], meet_datagrams: [], iput_ms: [], iget_ms: [], mput_ms: [], mget_ms: [] }
const extra = []
for (let rep = 0; rep < REPS; rep++) {
  const a = make()
  const b = make()
  const w = make()
  const r = make()
  extra.push(a, b, w, r)
  await Promise.all([a, b, w, r].map((n) => n.fullyBootstrapped()))
  const topic = randomBytes(32)
  const kp = DHT.keyPair()
  await a.announce(topic, kp).finished()
  const d0 = counts.get(b.udx) ?? 0
  const t0 = now()
  let met = NaN
  for await (const reply of b.lookup(topic)) {
    if (reply.peers.some((p) => p.publicKey.equals(kp.publicKey))) {
      met = now() - t0
      break
    }
  }
  out.meet_ms.push(met)
  out.meet_datagrams.push((counts.get(b.udx) ?? 0) - d0)
  const value = randomBytes(100)
  let t = now()
  const { hash } = await w.immutablePut(value)
  out.iput_ms.push(now() - t)
  t = now()
  const got = await r.immutableGet(hash)
  out.iget_ms.push(now() - t)
  if (!got || !got.value.equals(value)) out.errors = (out.errors ?? 0) + 1
  const mkp = DHT.keyPair()
  t = now()
  await w.mutablePut(mkp, value, { seq: 1 })
  out.mput_ms.push(now() - t)
  t = now()
  const m = await r.mutableGet(mkp.publicKey, { seq: 1 })
  out.mget_ms.push(now() - t)
  if (!m || m.seq !== 1) out.errors = (out.errors ?? 0) + 1
}
process.stdout.write(JSON.stringify(out) + '\n')
await Promise.all(extra.map((n) => n.destroy()))
await testnet.destroy()
