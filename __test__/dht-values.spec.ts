/**
 * DHT values on real loopback sockets: 1,000 mutable updates from 50 owners, each read back by
 * another node (the latest seq ≥ 99 %); immutable put/get; forged signatures, lower seqs, oversized
 * values, wrong CAS and puts without a valid token are refused and counted; a GET from an address
 * that proved nothing is never answered with more bytes than it sent. Imports the BUILT package.
 */
import test from 'ava'
import dgram from 'node:dgram'
import { createRequire } from 'node:module'

import { Dht, Identity, Kademlia, Node, TAG_DHT } from '../dist/index.js'

const require = createRequire(import.meta.url)
const native = require('../native/index.js')
const host = '127.0.0.1'
const dhtOpts = { putRate: 100_000, putBurst: 100_000, maxPerSource: 100_000 }
let nodes: Node[] = []

test.before(async () => {
  const boot = await Node.create({ host, port: 0, stack: [new Dht(dhtOpts), new Kademlia()] })
  nodes = [boot]
  for (let i = 1; i < 12; i++) nodes.push(await Node.create({ host, port: 0, stack: [new Dht(dhtOpts), new Kademlia({ bootstrap: [boot.address] })] }))
  await Promise.all(nodes.map((x) => x.ready({ signal: AbortSignal.timeout(10_000) })))
})

test.after.always(async () => {
  await Promise.all(nodes.map((x) => x.close()))
})

test.serial('immutable put/get: verified against the key; an unknown key is null', async (t) => {
  const value = Buffer.from('hello, dht')
  const r = await nodes[1]!.dht.put(value)
  t.true(r.stored >= 10)
  const sent = nodes[7]!.stats().dht!.gets_sent ?? 0
  t.deepEqual(await nodes[7]!.dht.get(r.key), value)
  // The value ends the get: 3 GETs in flight and a few more at most, where a query that went on
  // to the k closest would ask all 11 other nodes.
  const gets = (nodes[7]!.stats().dht!.gets_sent ?? 0) - sent
  t.true(gets <= 5, `a get stops at the first value (${gets} GETs)`)
  t.is(await nodes[7]!.dht.get(Buffer.alloc(32, 1)), null)
  await t.throwsAsync(nodes[1]!.dht.put(Buffer.alloc(1001)), { code: 'ERR_DECCOM_INVALID_ARGUMENT' })
})

test.serial('1,000 mutable updates from 50 owners: readers see the latest seq (>= 99 %)', async (t) => {
  const owners = Array.from({ length: 50 }, () => Identity.generate())
  let fresh = 0
  let total = 0
  const t0 = performance.now()
  await Promise.all(
    owners.map(async (owner, o) => {
      for (let seq = 1; seq <= 20; seq++) {
        const writer = nodes[(o + seq) % nodes.length]!
        const reader = nodes[(o + seq + 5) % nodes.length]!
        await writer.dht.putMutable(owner, Buffer.from(`owner ${o} update ${seq}`), { seq })
        const got = await reader.dht.getMutable(owner.publicKey!)
        total++
        if (got && got.seq === seq && got.value.toString() === `owner ${o} update ${seq}`) fresh++
      }
    }),
  )
  t.log(`${fresh}/${total} reads saw the latest seq; ${(performance.now() - t0).toFixed(0)} ms`)
  t.is(total, 1000)
  t.true(fresh >= 990)
  // Highest seq wins; a put with a lower seq is refused; CAS against the wrong seq is refused.
  const owner = owners[0]!
  await t.throwsAsync(nodes[2]!.dht.putMutable(owner, Buffer.from('old'), { seq: 3 }), { code: 'ERR_DECCOM_DHT_PUT_FAILED' })
  await t.throwsAsync(nodes[2]!.dht.putMutable(owner, Buffer.from('cas'), { seq: 21, cas: 7 }), { code: 'ERR_DECCOM_DHT_CAS_MISMATCH' })
  const ok = await nodes[2]!.dht.putMutable(owner, Buffer.from('cas ok'), { seq: 21, cas: 20 })
  t.true(ok.stored >= 10)
  const salted = await nodes[3]!.dht.putMutable(owner, Buffer.from('salted'), { salt: Buffer.from('s1') })
  t.is(salted.seq, 1)
  t.is((await nodes[4]!.dht.getMutable(owner.publicKey!, { salt: Buffer.from('s1') }))!.value.toString(), 'salted')
  t.is(await nodes[4]!.dht.getMutable(owner.publicKey!, { minSeq: 22 }), null)
  const refused = nodes.reduce((a, n) => a + (n.stats().dht!.refused_lower_seq ?? 0), 0)
  const cas = nodes.reduce((a, n) => a + (n.stats().dht!.refused_cas_mismatch ?? 0), 0)
  t.true(refused >= 10 && cas >= 10, `refused_lower_seq ${refused}, refused_cas_mismatch ${cas}`)
})

/** A raw socket that talks tag 13 to a node. */
async function raw(): Promise<{ ask: (to: Node, body: Buffer) => Promise<Buffer | null>; close: () => void }> {
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, host, () => r()))
  let waiter: ((b: Buffer) => void) | null = null
  sock.on('message', (m) => {
    if (m[0] === TAG_DHT) waiter?.(m.subarray(1))
  })
  return {
    ask: (to, body) =>
      new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiter = null
          resolve(null)
        }, 300)
        waiter = (b) => {
          clearTimeout(timer)
          waiter = null
          resolve(b)
        }
        sock.send(Buffer.concat([Buffer.from([TAG_DHT]), body]), to.address.port, host)
      }),
    close: () => sock.close(),
  }
}

test.serial('forged, lower seq, oversized, wrong CAS and token-less puts are refused and counted', async (t) => {
  const r = await raw()
  const target = nodes[5]!
  const before = { ...target.stats().dht }
  const delta = (name: string): number => (target.stats().dht![name] ?? 0) - (before[name] ?? 0)
  try {
    // No token: refused.
    const noToken = native.dhtEncodePut(0, 1, Buffer.alloc(16), Buffer.from('x'))
    t.is(native.dhtDecode((await r.ask(target, noToken))!).status, 1)
    t.is(delta('refused_bad_token'), 1)
    // A padded GET yields a token for our address; an unpadded one without a token gets nothing (amplification).
    const key = Buffer.alloc(32, 3)
    t.is(await r.ask(target, native.dhtEncodeGet(0, 2, 2, key, Buffer.alloc(16), 0, 0)), null)
    t.is(delta('dropped_amplification'), 1)
    const get = native.dhtEncodeGet(0, 3, 2, key, Buffer.alloc(16), 0, 1200)
    const reply = (await r.ask(target, get))!
    t.true(reply.length <= get.length)
    const token = native.dhtDecode(reply).token as Buffer
    // Forged signature.
    const owner = Identity.generate()
    const sig = owner.sign(native.dhtMutableMessage(Buffer.alloc(0), 5, Buffer.from('v')))
    const forged = native.dhtEncodePutMutable(0, 4, token, owner.publicKey, Buffer.alloc(0), 5, Buffer.from('w'), sig, null)
    t.is(native.dhtDecode((await r.ask(target, forged))!).status, 2)
    t.is(delta('refused_bad_signature'), 1)
    const good = native.dhtEncodePutMutable(0, 5, token, owner.publicKey, Buffer.alloc(0), 5, Buffer.from('v'), sig, null)
    t.is(native.dhtDecode((await r.ask(target, good))!).status, 0)
    // Lower seq.
    const sig4 = owner.sign(native.dhtMutableMessage(Buffer.alloc(0), 4, Buffer.from('u')))
    t.is(native.dhtDecode((await r.ask(target, native.dhtEncodePutMutable(0, 6, token, owner.publicKey, Buffer.alloc(0), 4, Buffer.from('u'), sig4, null)))!).status, 3)
    t.is(delta('refused_lower_seq'), 1)
    // Wrong CAS.
    const sig6 = owner.sign(native.dhtMutableMessage(Buffer.alloc(0), 6, Buffer.from('z')))
    t.is(native.dhtDecode((await r.ask(target, native.dhtEncodePutMutable(0, 7, token, owner.publicKey, Buffer.alloc(0), 6, Buffer.from('z'), sig6, 9)))!).status, 4)
    t.is(delta('refused_cas_mismatch'), 1)
    // Oversized: 1001 bytes do not parse; dropped and counted, nothing stored.
    const big = Buffer.concat([native.dhtEncodePut(0, 8, token, Buffer.alloc(1000)), Buffer.alloc(1)])
    big.writeUInt16BE(1001, 26)
    t.is(await r.ask(target, big), null)
    t.is(delta('dropped_malformed_too_large'), 1)
    // A token is bound to its address: another socket cannot use it.
    const r2 = await raw()
    try {
      t.is(native.dhtDecode((await r2.ask(target, native.dhtEncodePut(0, 9, token, Buffer.from('y'))))!).status, 1)
    } finally {
      r2.close()
    }
    t.is(delta('refused_bad_token'), 2)
  } finally {
    r.close()
  }
})

test.serial('AbortSignal: an aborted signal sends nothing; an abort while a put or get runs rejects at once', async (t) => {
  const dht = nodes[2]!.dht
  const queries = (): number => nodes[2]!.stats().dht?.queries ?? 0
  const before = queries()
  const gone = AbortSignal.abort()
  await t.throwsAsync(dht.get(Buffer.alloc(32, 2), { signal: gone }), { code: 'ERR_DECCOM_ABORTED' })
  await t.throwsAsync(dht.put(Buffer.from('never'), { signal: gone }), { code: 'ERR_DECCOM_ABORTED' })
  await t.throwsAsync(dht.putMutable(Identity.generate(), Buffer.from('never'), { signal: gone }), { code: 'ERR_DECCOM_ABORTED' })
  await t.throwsAsync(dht.getMutable(Identity.generate().publicKey!, { signal: gone }), { code: 'ERR_DECCOM_ABORTED' })
  await t.throwsAsync(dht.lookup(Buffer.alloc(32, 3), { signal: gone }), { code: 'ERR_DECCOM_ABORTED' })
  t.is(queries(), before, 'no query ran')
  // Aborted while its requests are on the wire (their answers need I/O, which cannot come before).
  for (const op of [(s: AbortSignal) => dht.get(Buffer.alloc(32, 4), { signal: s }), (s: AbortSignal) => dht.putMutable(Identity.generate(), Buffer.from('late'), { signal: s })]) {
    const ac = new AbortController()
    const p = op(ac.signal)
    const t0 = performance.now()
    ac.abort()
    await t.throwsAsync(p, { code: 'ERR_DECCOM_ABORTED' })
    t.true(performance.now() - t0 < 100)
  }
  t.is(await dht.get(Buffer.alloc(32, 4)), null, 'the layer still works after aborts')
})
