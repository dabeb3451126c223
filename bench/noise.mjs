// Noise handshakes and Ed25519 signatures, side by side in one run, printing ratios:
//  - deccom: full Noise XX handshakes through the NoiseEndpoint API (two endpoints in one process
//    passing datagrams in memory; includes the identity binding: each side signs nothing per
//    handshake but checks the peer's Ed25519 signature over its static key and its node id, and
//    both sides get a Connected event with the peer's identity). "First contact" verifies both
//    signatures every time (binding cache off); "known peer" is a handshake with a peer met before
//    (rekey, reconnection), whose binding verification is remembered. Compared with
//    noise-handshake (X25519, no identity) and noise-handshake with noise-curve-ed (Ed25519 keys as
//    Noise statics, as @hyperswarm/secret-stream does);
//  - Ed25519 sign/s and verify/s: Identity.sign / Identity.verify vs sodium-native vs node:crypto.
//
//   node bench/noise.mjs [--seconds=2] [--json]
//
// Peers come from bench/package.json (`npm install --prefix bench`); missing peers are skipped.
import crypto from 'node:crypto'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(HERE, '..')
const require = createRequire(path.join(HERE, 'package.json'))
const requireRoot = createRequire(path.join(ROOT, 'package.json'))
const flags = Object.fromEntries(
  process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/.exec(a)).filter(Boolean).map((m) => [m[1], m[2] ?? 'true']),
)
const SECONDS = Number(flags.seconds ?? 2)
const now = () => performance.now()
setTimeout(() => { process.stderr.write('noise bench: hard limit reached\n'); process.exit(3) }, 300_000).unref()

function opsPerSec (fn, { timeMs = SECONDS * 1000, warmMs = 300 } = {}) {
  let t0 = now()
  while (now() - t0 < warmMs) fn()
  let n = 0
  t0 = now()
  let t = t0
  while (t - t0 < timeMs) { fn(); n++; t = now() }
  return n / ((t - t0) / 1000)
}
function tryRequire (name) {
  try { return require(name) } catch { return null }
}

const { Identity } = await import(path.join(ROOT, 'dist', 'index.mjs'))
const native = requireRoot('./native/index.js')
const results = {}
const rows = []
function row (group, name, value, unit, baseline) {
  results[`${group}.${name}`] = value
  rows.push({ group, name, value, unit, baseline })
}

// --- handshakes -------------------------------------------------------------------------------
{
  // Two endpoints in one process passing datagrams in memory, like the peers' figures.
  //  - first contact: the binding cache is off, so every handshake verifies both Ed25519
  //    signatures (what a node pays the first time it meets a peer);
  //  - known peer: the default cache (a rekey or a reconnection to a peer met before): the full
  //    Noise XX handshake (2 key generations, 6 X25519) and the binding checks against the
  //    remembered verification, so the same work as noise-handshake's XX.
  const xxLoop = (opts) => {
    const fast = { rateLimitPerPeer: 1e9, rateLimitBurst: 1e9, rateLimitGlobal: 1e9, ...opts }
    const a = new native.NoiseEndpoint(Identity.generate().native, fast, 0)
    const b = new native.NoiseEndpoint(Identity.generate().native, fast, 0)
    let peer = 0
    let t = 1
    const pump = (from, to, p) => {
      let moved = false
      for (let x = from.pollTransmit(); x !== null; x = from.pollTransmit()) {
        moved = true
        for (let i = 0, off = 0; i < x.lens.length; off += x.lens[i], i++) to.handleDatagram(t, p, x.data.subarray(off, off + x.lens[i]))
      }
      return moved
    }
    return () => {
      const p = peer++ & 0xffff
      t += 1
      a.connect(t, p)
      while (pump(a, b, p) | pump(b, a, p)) { /* until quiet */ }
      const ea = a.pollEvents(t)
      const eb = b.pollEvents(t)
      if (!ea?.connected || !eb?.connected) throw new Error('deccom handshake did not complete')
      a.close(p); b.close(p)
      a.pollEvents(t); b.pollEvents(t)
    }
  }
  row('handshake', 'deccom XX + identity binding, first contact (NoiseEndpoint)', opsPerSec(xxLoop({ verifiedBindings: 0 })), 'handshakes/s')
  row('handshake-known', 'deccom XX + identity binding, known peer (NoiseEndpoint)', opsPerSec(xxLoop({})), 'handshakes/s')

  // Where the time goes: the same handshake driven in Rust only (cargo bench test) is reported by
  // `cargo test --release -p deccom-core --test noise_modes -- --ignored --nocapture`.
  const Noise = tryRequire('noise-handshake')
  const curveEd = tryRequire('noise-curve-ed')
  const prologue = Buffer.alloc(0)
  const makeXX = (curve) => {
    const dh = curve ?? require('noise-handshake/dh')
    const opts = curve ? { curve } : {}
    const kpI = dh.generateKeyPair()
    const kpR = dh.generateKeyPair()
    return () => {
      const i = new Noise('XX', true, kpI, opts)
      const r = new Noise('XX', false, kpR, opts)
      i.initialise(prologue)
      r.initialise(prologue)
      r.recv(i.send())
      i.recv(r.send())
      r.recv(i.send())
      if (!i.complete || !r.complete) throw new Error('handshake failed')
    }
  }
  if (Noise) row('handshake-known', 'noise-handshake XX x25519', opsPerSec(makeXX(null)), 'handshakes/s')
  if (Noise && curveEd) row('handshake', 'noise-handshake XX noise-curve-ed', opsPerSec(makeXX(curveEd)), 'handshakes/s')
}

// --- Ed25519 ----------------------------------------------------------------------------------
{
  const msg = crypto.randomBytes(32)
  const id = Identity.generate()
  const sig = id.sign(msg)
  const pk = id.publicKey
  if (!Identity.verify(pk, msg, sig)) throw new Error('deccom signature did not verify')
  row('sign', 'deccom Identity.sign', opsPerSec(() => id.sign(msg)), 'ops/s')
  row('verify', 'deccom Identity.verify', opsPerSec(() => Identity.verify(pk, msg, sig)), 'ops/s')
  const sodium = tryRequire('sodium-native')
  if (sodium) {
    const spk = Buffer.alloc(sodium.crypto_sign_PUBLICKEYBYTES)
    const ssk = Buffer.alloc(sodium.crypto_sign_SECRETKEYBYTES)
    sodium.crypto_sign_keypair(spk, ssk)
    const ssig = Buffer.alloc(sodium.crypto_sign_BYTES)
    sodium.crypto_sign_detached(ssig, msg, ssk)
    row('sign', 'sodium-native', opsPerSec(() => sodium.crypto_sign_detached(ssig, msg, ssk)), 'ops/s')
    row('verify', 'sodium-native', opsPerSec(() => sodium.crypto_sign_verify_detached(ssig, msg, spk)), 'ops/s')
  }
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519')
  const nsig = crypto.sign(null, msg, privateKey)
  row('sign', 'node:crypto', opsPerSec(() => crypto.sign(null, msg, privateKey)), 'ops/s')
  row('verify', 'node:crypto', opsPerSec(() => crypto.verify(null, msg, publicKey, nsig)), 'ops/s')
}

// --- report -----------------------------------------------------------------------------------
const ours = {
  handshake: results['handshake.deccom XX + identity binding, first contact (NoiseEndpoint)'],
  'handshake-known': results['handshake-known.deccom XX + identity binding, known peer (NoiseEndpoint)'],
  sign: results['sign.deccom Identity.sign'],
  verify: results['verify.deccom Identity.verify'],
}
const fmt = (v) => Math.round(v).toLocaleString('en-US')
console.log('| group | implementation | rate | deccom ÷ this |')
console.log('| --- | --- | ---: | ---: |')
for (const r of rows) {
  const ratio = ours[r.group] / r.value
  console.log(`| ${r.group} | ${r.name} | ${fmt(r.value)} ${r.unit} | ${r.name.startsWith('deccom') ? '—' : ratio.toFixed(2) + '×'} |`)
}
const goals = [
  ['handshakes (known peer: full XX, binding remembered) ≥ 1.5× noise-handshake x25519', 'handshake-known.noise-handshake XX x25519', 'handshake-known', 1.5],
  ['first contact (every binding verified) ≥ 1.5× noise-handshake x25519, stricter than the goal', 'handshake-known.noise-handshake XX x25519', 'handshake', 1.5],
  ['identity-bound, first contact ≥ 2× noise-curve-ed', 'handshake.noise-handshake XX noise-curve-ed', 'handshake', 2],
  ['sign ≥ 1.0× sodium-native', 'sign.sodium-native', 'sign', 1],
  ['verify ≥ 1.0× sodium-native', 'verify.sodium-native', 'verify', 1],
]
console.log('\nGoals:')
for (const [what, key, group, want] of goals) {
  if (results[key] === undefined) { console.log(`- ${what}: peer not installed`); continue }
  const r = ours[group] / results[key]
  console.log(`- ${what}: ${r.toFixed(2)}× ${r >= want ? 'met' : 'MISSED'}`)
}
if (flags.json) console.log(JSON.stringify(results))
