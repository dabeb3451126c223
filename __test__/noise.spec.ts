/**
 * Noise: interop with an independent Noise implementation, the Noise layer on real loopback nodes,
 * and the loss / simultaneous-open cases on the SimulatedNetwork. Imports the BUILT package.
 */
import test, { type ExecutionContext } from 'ava'
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import {
  type Address,
  type AddressLike,
  Identity,
  Node,
  Noise,
  type NoiseOptions,
  type Peer,
  Protocol,
  ReliableUdp,
  SimulatedNetwork,
  TAG_NOISE,
} from '../dist/index.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const requireRoot = createRequire(join(root, 'package.json'))
const native = requireRoot('./native/index.js')
/** noise-handshake lives in bench/node_modules (`npm install --prefix bench`), not in the root package. */
function benchModule(name: string): any {
  try {
    return createRequire(join(root, 'bench', 'package.json'))(name)
  } catch {
    return null
  }
}
const NoiseHS = benchModule('noise-handshake')
const HSCipher = benchModule('noise-handshake/cipher')
const hsDh = benchModule('noise-handshake/dh')

const PROLOGUE = Buffer.from('deccom-noise-v1')
/**
 * Zero payload of an XX message 1 from a peer that predates transport suites (docs/wire.md): 8-byte
 * header + 32 + 196 = the 236-byte response it gets. Ours is one byte longer (the suite offer first),
 * and so is the response to it (the choice after the binding).
 */
const XX_INIT_PADDING = 196
const OFFER_AES_GCM = 0x01
const STATIC_SIG_DOMAIN = Buffer.from('deccom-noise-static-v1')
const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0)
  return b
}
const u64 = (n: number): Buffer => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return b
}

// ---------------------------------------------------------------------------------------------
// Interop with noise-handshake (Noise_XX/IK_25519_ChaChaPoly_BLAKE2b), at the Noise-message level

/** The identity binding payload a deccom peer sends (see crates/deccom-core/src/noise/mod.rs). */
function binding(id: Identity, x25519Public: Uint8Array, claimedId: Buffer = id.id): Buffer {
  const sig = id.sign(Buffer.concat([STATIC_SIG_DOMAIN, x25519Public]))
  return Buffer.concat([Buffer.from([1]), claimedId, Buffer.from([id.publicIdentity.length]), id.publicIdentity, sig])
}

/** Checks a binding received from our endpoint against the static key noise-handshake authenticated. */
function checkBinding(t: ExecutionContext, payload: Buffer, expected: Identity, remoteStatic: Buffer): void {
  t.is(payload[0], 1)
  const claimed = payload.subarray(1, 33)
  const n = payload[33]
  const ident = payload.subarray(34, 34 + n)
  const sig = payload.subarray(34 + n)
  t.deepEqual(ident, expected.publicIdentity)
  t.deepEqual(claimed, sha256(ident), 'claimed id is SHA-256 of the identity')
  t.deepEqual(claimed, expected.id)
  t.true(Identity.verify(ident.subarray(1), Buffer.concat([STATIC_SIG_DOMAIN, remoteStatic]), sig), 'signature covers the Noise static key')
}

function one(ep: any): Buffer {
  const t = ep.pollTransmit()
  if (!t || t.lens.length !== 1) throw new Error(`expected exactly one datagram, got ${t ? t.lens.length : 0}`)
  return Buffer.from(t.data)
}

const interop = NoiseHS ? test : test.skip
if (!NoiseHS) {
  test('interop with noise-handshake (skipped: run `npm install --prefix bench`)', (t) => {
    t.log('noise-handshake is not installed in bench/node_modules: the interop tests are skipped. Run `npm install --prefix bench`.')
    t.pass()
  })
}

interop('interop XX: deccom initiator, noise-handshake responder; transport both ways', (t) => {
  const us = Identity.generate()
  const them = Identity.generate()
  const ep = new native.NoiseEndpoint(us.native, {}, 0)
  ep.connect(0, 7)
  const d1 = one(ep)
  t.is(d1[0], 0x10, 'initiation')
  t.is(d1[1], 1, 'version')
  t.is(d1[6], 0, 'pattern XX')
  t.is(d1[7], 0, 'no cookie MAC')
  const ourIndex = d1.readUInt32BE(2)
  const kp = hsDh.generateKeyPair()
  const r = new NoiseHS('XX', false, kp)
  r.initialise(PROLOGUE)
  // Message 1's payload is the suite offer byte and zero padding: the initiation is as long as
  // the response it asks for. noise-handshake answers as a peer that predates suites (its
  // payload is the binding alone): the session uses ChaCha20-Poly1305.
  const pad = Buffer.from(r.recv(d1.subarray(8)))
  t.is(pad.length, XX_INIT_PADDING + 1)
  t.true(pad[0] === 0 || pad[0] === OFFER_AES_GCM)
  t.true(pad.subarray(1).every((b) => b === 0))
  const msg2 = r.send(binding(them, kp.publicKey))
  const theirIndex = 0x01020304
  ep.handleDatagram(1, 7, Buffer.concat([Buffer.from([0x11]), u32(theirIndex), u32(ourIndex), msg2]))
  const d3 = one(ep)
  t.is(d3[0], 0x12, 'final')
  t.is(d3.readUInt32BE(1), theirIndex)
  const payload3 = Buffer.from(r.recv(d3.subarray(5)))
  t.true(r.complete)
  checkBinding(t, payload3, us, Buffer.from(r.rs))
  t.deepEqual(Buffer.from(r.rs), ep.localStaticPublicKey)
  const ev = ep.pollEvents(1)
  t.is(ev.connected.length, 1)
  t.deepEqual(ev.connected[0].remoteId, them.id)
  t.deepEqual(ev.connected[0].remoteIdentity, them.publicIdentity)
  t.deepEqual(ep.handshakeHash(7), Buffer.from(r.hash), 'same handshake hash')
  // noise-handshake → deccom: the plaintext is a whole-message frame [tag 0][kind 0][data]
  const tx = new HSCipher(r.tx)
  const ct = tx.encrypt(Buffer.concat([Buffer.from([0, 0]), Buffer.from('hello from noise-handshake')]))
  ep.handleDatagram(2, 7, Buffer.concat([Buffer.from([0x02]), u32(ourIndex), u64(0), ct]))
  const ev2 = ep.pollEvents(2)
  t.deepEqual(ev2.messages[0], Buffer.from('hello from noise-handshake'))
  t.is(ev2.messageModes[0], 2)
  t.is(ev2.messageTags[0], 0)
  // deccom → noise-handshake (an unframed Noise message through send)
  ep.send(3, 7, Buffer.from('hello from deccom'))
  const d = one(ep)
  t.is(d[0], 0x02)
  t.is(d.readUInt32BE(1), theirIndex)
  const rx = new HSCipher(r.rx)
  rx.setNonce(Number(d.readBigUInt64BE(5)))
  t.deepEqual(Buffer.from(rx.decrypt(d.subarray(13))), Buffer.from('hello from deccom'))
})

interop('interop XX: noise-handshake initiator, deccom responder; keepalive and transport both ways', (t) => {
  const us = Identity.generate()
  const them = Identity.generate()
  const ep = new native.NoiseEndpoint(us.native, {}, 0)
  const kp = hsDh.generateKeyPair()
  const i = new NoiseHS('XX', true, kp)
  i.initialise(PROLOGUE)
  const theirIndex = 0x0a0b0c0d
  // An unpadded message 1 (empty payload) gets only a cookie reply, shorter than it.
  const bare = new NoiseHS('XX', true, hsDh.generateKeyPair())
  bare.initialise(PROLOGUE)
  const unpadded = Buffer.concat([Buffer.from([0x10, 1]), u32(theirIndex), Buffer.from([0, 0]), bare.send()])
  ep.handleDatagram(0, 9, unpadded)
  const cookie = one(ep)
  t.is(cookie[0], 0x13, 'cookie reply')
  t.true(cookie.length <= unpadded.length)
  ep.handleDatagram(0, 9, Buffer.concat([Buffer.from([0x10, 1]), u32(theirIndex), Buffer.from([0, 0]), i.send(Buffer.alloc(XX_INIT_PADDING))]))
  const d2 = one(ep)
  t.is(d2[0], 0x11)
  const ourIndex = d2.readUInt32BE(1)
  t.is(d2.readUInt32BE(5), theirIndex)
  const payload2 = Buffer.from(i.recv(d2.subarray(9)))
  checkBinding(t, payload2, us, Buffer.from(i.rs))
  const msg3 = i.send(binding(them, kp.publicKey))
  t.true(i.complete)
  ep.handleDatagram(1, 9, Buffer.concat([Buffer.from([0x12]), u32(ourIndex), msg3]))
  t.deepEqual(ep.isAuthenticated(9), them.id)
  t.deepEqual(ep.handshakeHash(9), Buffer.from(i.hash))
  // The responder confirms with a keepalive: an empty transport message at counter 0.
  const ka = one(ep)
  t.is(ka[0], 0x02)
  const rx = new HSCipher(i.rx)
  rx.setNonce(Number(ka.readBigUInt64BE(5)))
  t.is(rx.decrypt(ka.subarray(13)).length, 0)
  const tx = new HSCipher(i.tx)
  tx.setNonce(5) // any counter: each datagram carries its nonce
  ep.handleDatagram(2, 9, Buffer.concat([Buffer.from([0x02]), u32(ourIndex), u64(5), tx.encrypt(Buffer.from([7, 0, ...Buffer.from('ping')]))]))
  const ev = ep.pollEvents(2)
  t.deepEqual(ev.messages[0], Buffer.from('ping'))
  t.is(ev.messageTags[0], 7)
  ep.send(3, 9, Buffer.from('pong'))
  const d = one(ep)
  rx.setNonce(Number(d.readBigUInt64BE(5)))
  t.deepEqual(Buffer.from(rx.decrypt(d.subarray(13))), Buffer.from('pong'))
})

/** AES-256-GCM with the Noise AESGCM nonce (4 zero bytes, then the counter big-endian), by node:crypto. */
function aesNonce(n: number): Buffer {
  const nonce = Buffer.alloc(12)
  nonce.writeBigUInt64BE(BigInt(n), 4)
  return nonce
}
function aesSeal(key: Uint8Array, n: number, plaintext: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', key, aesNonce(n))
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()])
}
function aesOpen(key: Uint8Array, n: number, sealed: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, aesNonce(n))
  d.setAuthTag(sealed.subarray(sealed.length - 16))
  return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()])
}

interop('interop XX with the AES-256-GCM suite: noise-handshake initiator offers it, deccom responder chooses it; node:crypto opens and seals the transport', (t) => {
  const us = Identity.generate()
  const them = Identity.generate()
  const ep = new native.NoiseEndpoint(us.native, { aesGcm: true }, 0)
  const kp = hsDh.generateKeyPair()
  const i = new NoiseHS('XX', true, kp)
  i.initialise(PROLOGUE)
  const theirIndex = 0x05060708
  const offer = Buffer.alloc(XX_INIT_PADDING + 1)
  offer[0] = OFFER_AES_GCM
  const init = Buffer.concat([Buffer.from([0x10, 1]), u32(theirIndex), Buffer.from([0, 0]), i.send(offer)])
  ep.handleDatagram(0, 9, init)
  const d2 = one(ep)
  t.is(d2[0], 0x11)
  t.is(d2.length, init.length, 'the response is exactly as long as the initiation')
  const ourIndex = d2.readUInt32BE(1)
  const payload2 = Buffer.from(i.recv(d2.subarray(9)))
  t.is(payload2[payload2.length - 1], 1, 'the choice after the binding: AES-256-GCM')
  checkBinding(t, payload2.subarray(0, payload2.length - 1), us, Buffer.from(i.rs))
  ep.handleDatagram(1, 9, Buffer.concat([Buffer.from([0x12]), u32(ourIndex), i.send(binding(them, kp.publicKey))]))
  t.true(i.complete)
  t.deepEqual(ep.isAuthenticated(9), them.id)
  t.is(ep.stats().sessions_aes_gcm, 1)
  // The keepalive that confirms the session, sealed with AES-256-GCM under the responder's key.
  const ka = one(ep)
  t.is(ka[0], 0x02)
  t.is(aesOpen(i.rx, Number(ka.readBigUInt64BE(5)), ka.subarray(13)).length, 0)
  // node:crypto → deccom, and back.
  ep.handleDatagram(2, 9, Buffer.concat([Buffer.from([0x02]), u32(ourIndex), u64(3), aesSeal(i.tx, 3, Buffer.from([7, 0, ...Buffer.from('ping')]))]))
  const ev = ep.pollEvents(2)
  t.deepEqual(ev.messages[0], Buffer.from('ping'))
  ep.send(3, 9, Buffer.from('pong'))
  const d = one(ep)
  t.deepEqual(aesOpen(i.rx, Number(d.readBigUInt64BE(5)), d.subarray(13)), Buffer.from('pong'))
  // A datagram sealed with ChaCha20-Poly1305 under the same key does not open.
  const cha = new HSCipher(i.tx)
  cha.setNonce(4)
  ep.handleDatagram(4, 9, Buffer.concat([Buffer.from([0x02]), u32(ourIndex), u64(4), cha.encrypt(Buffer.from([7, 0, ...Buffer.from('x')]))]))
  t.is(ep.pollEvents(4)?.messages?.length ?? 0, 0)
  t.true(ep.stats().dropped_tampered >= 1)
})

interop('interop IK: deccom initiator with the known static key of a noise-handshake responder', (t) => {
  const us = Identity.generate()
  const them = Identity.generate()
  const kp = hsDh.generateKeyPair()
  const ep = new native.NoiseEndpoint(us.native, {}, 0)
  ep.connect(0, 11, kp.publicKey)
  const d1 = one(ep)
  t.is(d1[6], 1, 'pattern IK')
  const ourIndex = d1.readUInt32BE(2)
  const r = new NoiseHS('IK', false, kp)
  r.initialise(PROLOGUE)
  checkBinding(t, Buffer.from(r.recv(d1.subarray(8))), us, Buffer.from(r.rs))
  const msg2 = r.send(binding(them, kp.publicKey))
  ep.handleDatagram(1, 11, Buffer.concat([Buffer.from([0x11]), u32(77), u32(ourIndex), msg2]))
  t.deepEqual(ep.isAuthenticated(11), them.id)
  t.deepEqual(ep.handshakeHash(11), Buffer.from(r.hash))
  const ka = one(ep) // the IK initiator's keepalive switches the responder over
  const rx = new HSCipher(r.rx)
  rx.setNonce(Number(ka.readBigUInt64BE(5)))
  t.is(rx.decrypt(ka.subarray(13)).length, 0)
})

interop('a peer claiming an id that is not SHA-256 of its identity, or signing another key, is rejected', (t) => {
  for (const [what, make, code] of [
    ['id mismatch', (id: Identity, pub: Uint8Array) => binding(id, pub, randomBytes(32)), 'ERR_DECCOM_NOISE_HANDSHAKE_ID_MISMATCH'],
    ['signature over another static key', (id: Identity) => binding(id, randomBytes(32)), 'ERR_DECCOM_NOISE_HANDSHAKE_BAD_SIGNATURE'],
  ] as const) {
    const ep = new native.NoiseEndpoint(Identity.generate().native, {}, 0)
    ep.connect(0, 7)
    const d1 = one(ep)
    const kp = hsDh.generateKeyPair()
    const r = new NoiseHS('XX', false, kp)
    r.initialise(PROLOGUE)
    r.recv(d1.subarray(8))
    const msg2 = r.send(make(Identity.generate(), kp.publicKey))
    ep.handleDatagram(1, 7, Buffer.concat([Buffer.from([0x11]), u32(5), u32(d1.readUInt32BE(2)), msg2]))
    t.is(ep.pollTransmit(), null, `${what}: no message 3`)
    t.is(ep.isAuthenticated(7), null, what)
    t.is(ep.stats().handshakes_failed_binding, 1, what)
    t.is(ep.pollEvents(1).failed[0].code, code, what)
  }
})

// ---------------------------------------------------------------------------------------------
// The Noise layer on loopback nodes

/** A transparent layer between Noise and the transport that can tamper with, drop and replay datagrams. */
class Tap extends Protocol {
  static override bindTo = ['send']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'tap'
  /** Incoming hook: return the (possibly changed) bytes, or null to drop. */
  onRecv: ((data: Buffer, tag: number) => Buffer | null) | null = null
  onSend: ((data: Buffer, tag: number) => Buffer | null) | null = null
  send(to: AddressLike, data: Uint8Array, tag = 0): unknown {
    let d = Buffer.from(data)
    if (this.onSend) {
      const r = this.onSend(d, tag)
      if (r === null) return undefined
      d = r
    }
    return this.lower.send(to, d, tag)
  }
  onMessage(from: Address, data: Buffer, tag: number): void {
    let d = Buffer.from(data)
    if (this.onRecv) {
      const r = this.onRecv(d, tag)
      if (r === null) return
      d = r
    }
    this.upper.onMessage(from, d, tag)
  }
  /** Delivers `data` upward as if it had just arrived from `from`. */
  inject(from: Address, data: Buffer, tag: number): void {
    this.upper.onMessage(from, Buffer.from(data), tag)
  }
}

interface Opened {
  node: Node
  noise: Noise
  tap: Tap
}

async function open(t: ExecutionContext, opts: NoiseOptions = {}, extra: Protocol[] = []): Promise<Opened> {
  const noise = new Noise(opts)
  const tap = new Tap()
  const node = await Node.create({ host: '127.0.0.1', stack: [noise, tap, ...extra] })
  t.teardown(() => node.close())
  return { node, noise, tap }
}

function nextMessage(node: Node, ms = 5000): Promise<{ from: Peer; data: Buffer }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      node.off('message', on)
      reject(new Error(`no message within ${ms} ms`))
    }, ms)
    const on = (from: Peer, data: Buffer): void => {
      clearTimeout(timer)
      node.off('message', on)
      resolve({ from, data: Buffer.from(data) })
    }
    node.on('message', on)
  })
}

const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Waits until `cond()` holds (checked every 10 ms), at most `ms`; a loaded machine may need more than one tick. */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await tick(10)
}

test('encrypt: messages both ways; from.id is the authenticated SHA-256 of from.publicIdentity', async (t) => {
  const a = await open(t)
  const b = await open(t)
  const got = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('secret'))
  const { from, data } = await got
  t.deepEqual(data, Buffer.from('secret'))
  t.deepEqual(from.id, a.node.id)
  t.deepEqual(from.publicIdentity, a.node.identity.publicIdentity)
  t.deepEqual(from.id, sha256(from.publicIdentity!))
  t.deepEqual(b.noise.remoteId(a.node.address), a.node.id)
  t.deepEqual(a.noise.remoteId(b.node.address), b.node.id)
  t.deepEqual(a.noise.handshakeHash(b.node.address), b.noise.handshakeHash(a.node.address))
  const back = nextMessage(a.node)
  await b.node.send(a.node.address, Buffer.from('reply'))
  t.deepEqual((await back).data, Buffer.from('reply'))
  // Nothing on the wire is the plaintext.
  const seen: Buffer[] = []
  a.tap.onSend = (d) => (seen.push(d), d)
  const again = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('top secret payload'))
  await again
  t.true(seen.length > 0 && seen.every((d) => d.indexOf('top secret') < 0))
  t.is(b.node.stats().noise.dropped_total, 0)
})

test('tampered handshake messages are dropped and counted; the handshake still completes', async (t) => {
  const a = await open(t)
  const b = await open(t)
  let flippedResponse = false
  a.tap.onRecv = (d, tag) => {
    if (tag === TAG_NOISE && d[0] === 0x11 && !flippedResponse) {
      flippedResponse = true
      d[d.length - 3] ^= 0x40
    }
    return d
  }
  let flippedFinal = false
  b.tap.onRecv = (d, tag) => {
    if (tag === TAG_NOISE && d[0] === 0x12 && !flippedFinal) {
      flippedFinal = true
      d[20] ^= 0x01
    }
    return d
  }
  t.true(await a.noise.approveConnection(b.node.address))
  // Over plain UDP, data sent on a session the peer does not hold is lost like any datagram: wait
  // until both ends hold the same session (the re-sent message 3 got through, or, on a slow
  // machine, B's own handshake toward A completed on both sides first).
  const same = (): boolean => {
    const ha = a.noise.handshakeHash(b.node.address)
    const hb = b.noise.handshakeHash(a.node.address)
    return ha !== null && hb !== null && ha.equals(hb)
  }
  for (let i = 0; i < 500 && !same(); i++) await tick()
  t.true(same(), 'both ends hold one session')
  t.deepEqual(b.noise.remoteId(a.node.address), a.node.id)
  const got = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('after tampering'))
  const arrived = await got.catch((e: Error) => {
    t.log('a noise', JSON.stringify(a.node.stats().noise))
    t.log('b noise', JSON.stringify(b.node.stats().noise))
    throw e
  })
  t.deepEqual(arrived.data, Buffer.from('after tampering'))
  t.true(flippedResponse && flippedFinal)
  t.true(a.node.stats().noise.handshakes_failed_decrypt >= 1, 'tampered response counted')
  t.true(b.node.stats().noise.handshakes_failed_decrypt >= 1, 'tampered final counted')
})

test('tampered transport bytes are dropped and counted; replays and nonces older than the window are dropped', async (t) => {
  const a = await open(t)
  const b = await open(t, { replayWindowBits: 128 })
  t.true(await a.noise.approveConnection(b.node.address))
  await tick()
  const captured: Buffer[] = []
  let tamper = true
  b.tap.onRecv = (d, tag) => {
    if (tag !== TAG_NOISE || d[0] !== 0x02 || d.length <= 29) return d
    captured.push(Buffer.from(d))
    if (tamper) {
      tamper = false
      const bad = Buffer.from(d)
      bad[bad.length - 1] ^= 1
      return bad
    }
    return d
  }
  const received: string[] = []
  b.node.on('message', (_from, data) => received.push(data.toString()))
  await a.node.send(b.node.address, Buffer.from('m0'))
  await a.node.send(b.node.address, Buffer.from('m1'))
  await tick(50)
  t.deepEqual(received, ['m1'], 'the tampered m0 was dropped')
  t.is(b.node.stats().noise.dropped_tampered, 1)
  // Replay m1 (already accepted): dropped.
  b.tap.inject(a.node.address, captured[1], TAG_NOISE)
  t.is(b.node.stats().noise.dropped_replay, 1)
  // The untampered m0 is still fresh (its tag failed, so its counter was never accepted).
  b.tap.inject(a.node.address, captured[0], TAG_NOISE)
  t.deepEqual(received, ['m1', 'm0'])
  // 200 more messages move the 128-message window past m1's counter.
  for (let i = 0; i < 200; i++) a.node.send(b.node.address, Buffer.from(`x${i}`))
  await tick(100)
  t.is(received.length, 202)
  b.tap.inject(a.node.address, captured[1], TAG_NOISE)
  t.is(b.node.stats().noise.dropped_too_old, 1)
  t.is(received.length, 202)
})

test('encrypt and sign mode are strict by default: unprotected data never reaches the layers above', async (t) => {
  const plain = await open(t, { mode: 'plaintext' })
  const enc = await open(t, { mode: 'encrypt' })
  const sign = await open(t, { mode: 'sign' })
  const raw = await Node.create({ host: '127.0.0.1' })
  t.teardown(() => raw.close())
  for (const n of [enc, sign]) {
    await plain.node.send(n.node.address, Buffer.from('in the clear'))
    await raw.send(n.node.address, Buffer.from('raw app data'))
  }
  const seen = (n: Opened): boolean => (n.node.stats().noise.dropped_mode ?? 0) >= 1 && (n.node.stats().noise.dropped_unprotected ?? 0) >= 1
  await until(() => [enc, sign].every(seen))
  for (const n of [enc, sign]) {
    t.true(n.node.stats().noise.dropped_mode >= 1)
    t.is(n.node.stats().noise.dropped_unprotected, 1)
    t.is(n.node.stats().app.received ?? 0, 0)
  }
})

test('strict mode drops other modes and unprotected datagrams; non-strict accepts plaintext as unauthenticated', async (t) => {
  const plain = await open(t, { mode: 'plaintext' })
  const strict = await open(t, { mode: 'encrypt', strict: true })
  const lax = await open(t, { mode: 'encrypt', strict: false })
  const raw = await Node.create({ host: '127.0.0.1' })
  t.teardown(() => raw.close())
  await plain.node.send(strict.node.address, Buffer.from('in the clear'))
  await raw.send(strict.node.address, Buffer.from('raw app data'))
  await until(() => (strict.node.stats().noise.dropped_mode ?? 0) >= 1 && (strict.node.stats().noise.dropped_unprotected ?? 0) >= 1)
  t.true(strict.node.stats().noise.dropped_mode >= 1)
  t.is(strict.node.stats().noise.dropped_unprotected, 1)
  t.is(strict.node.stats().app.received ?? 0, 0)
  const got = nextMessage(lax.node)
  await plain.node.send(lax.node.address, Buffer.from('in the clear'))
  const { from, data } = await got
  t.deepEqual(data, Buffer.from('in the clear'))
  t.is(from.id, null, 'plaintext proves nothing about the sender')
})

test('plaintext mode works both ways', async (t) => {
  const a = await open(t, { mode: 'plaintext', strict: true })
  const b = await open(t, { mode: 'plaintext', strict: true })
  const got = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('hello'))
  t.deepEqual((await got).data, Buffer.from('hello'))
  t.true(await b.noise.approveConnection(a.node.address), 'nothing to authenticate in plaintext mode')
  const back = nextMessage(a.node)
  await b.node.send(a.node.address, Buffer.from('hi'))
  t.deepEqual((await back).data, Buffer.from('hi'))
})

test('sign mode works, names the signer, and rejects a forged signature', async (t) => {
  const a = await open(t, { mode: 'sign', strict: true })
  const b = await open(t, { mode: 'sign', strict: true })
  const seen: Buffer[] = []
  a.tap.onSend = (d) => (seen.push(d), d)
  const got = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from('signed hello'))
  const { from, data } = await got
  t.deepEqual(data, Buffer.from('signed hello'))
  t.deepEqual(from.id, a.node.id)
  const signed = seen.find((d) => d[0] === 0x01)!
  t.truthy(signed, 'a signed datagram went out')
  t.true(signed.includes(Buffer.from('signed hello')), 'sign mode does not encrypt')
  // Forge: change the payload of a signed datagram in flight.
  b.tap.onRecv = (d, tag) => {
    if (tag === TAG_NOISE && d[0] === 0x01) d[d.length - 1] ^= 1
    return d
  }
  const received: string[] = []
  b.node.on('message', (_f, d) => received.push(d.toString()))
  await a.node.send(b.node.address, Buffer.from('pay 10'))
  await until(() => b.node.stats().noise.dropped_bad_signature > 0)
  await tick(50)
  t.deepEqual(received, [])
  t.is(b.node.stats().noise.dropped_bad_signature, 1)
  b.tap.onRecv = null
  await a.node.send(b.node.address, Buffer.from('pay 11'))
  await until(() => received.length > 0)
  t.deepEqual(received, ['pay 11'])
})

test('a name identity cannot run Noise: typed error', async (t) => {
  const err = await t.throwsAsync(Node.create({ host: '127.0.0.1', identity: Identity.fromString('alice'), stack: [new Noise()] }))
  t.is((err as { code?: string }).code, 'ERR_DECCOM_NOISE_NAME_IDENTITY')
})

test('[Noise, ReliableUdp] delivers encrypted messages of 1 B and 16 MiB byte-exact', async (t) => {
  const a = await open(t, {}, [new ReliableUdp()])
  const b = await open(t, {}, [new ReliableUdp()])
  const seen: number[] = []
  a.tap.onSend = (d) => (seen.push(d.length), d)
  const small = nextMessage(b.node)
  await a.node.send(b.node.address, Buffer.from([0x5a]))
  const s = await small
  t.deepEqual(s.data, Buffer.from([0x5a]))
  t.deepEqual(s.from.id, a.node.id)
  const big = randomBytes(16 * 1024 * 1024)
  const got = nextMessage(b.node, 60_000)
  const t0 = performance.now()
  await a.node.send(b.node.address, big)
  const { data } = await got
  t.log(`16 MiB through Noise + ReliableUdp in ${(performance.now() - t0).toFixed(0)} ms`)
  t.is(data.length, big.length)
  t.true(data.equals(big), 'byte-exact')
  t.true(seen.every((n) => n <= 60_100), 'every Noise message fits one frame')
  t.is(b.node.stats().noise.reassembly_bytes, 0)
  t.is(b.node.stats().noise.dropped_total, 0)
})

/** A small discovery layer (stand-in for Kademlia): approves peers through Noise before adding them. */
class Directory extends Protocol {
  static override bindTo = ['send', 'approveConnection', 'remoteId']
  static override bindFrom = ['onMessage']
  static override provides = ['send']
  static override emits = ['onMessage']
  readonly name = 'directory'
  readonly table = new Map<string, Buffer>()
  async add(addr: Address): Promise<boolean> {
    if (!(await this.lower.approveConnection(addr))) return false
    this.table.set(addr.key, this.lower.remoteId(addr))
    return true
  }
  send(to: AddressLike, data: Uint8Array, tag = 0): unknown {
    return this.lower.send(to, data, tag)
  }
  onMessage(from: Peer, data: Buffer, tag: number): void {
    this.upper.onMessage(from, data, tag)
  }
}

test('[discovery layer, Noise, ReliableUdp]: binds, approves peers by handshake, delivers', async (t) => {
  const dirA = new Directory()
  const dirB = new Directory()
  const a = await Node.create({ host: '127.0.0.1', stack: [dirA, new Noise(), new ReliableUdp()] })
  const b = await Node.create({ host: '127.0.0.1', stack: [dirB, new Noise(), new ReliableUdp()] })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.deepEqual(a.stack.describe().find((r) => r.layer === 'directory')!.bindTo, { send: 'noise', approveConnection: 'noise', remoteId: 'noise' })
  t.true(await dirA.add(b.address))
  t.deepEqual(dirA.table.get(b.address.key), b.id)
  const got = nextMessage(b)
  await a.send(b.address, Buffer.from('via directory'))
  const { from } = await got
  t.deepEqual(from.id, a.id)
  // A peer that does not speak Noise is not approved.
  const mute = await Node.create({ host: '127.0.0.1' })
  t.teardown(() => mute.close())
  const quick = new Directory()
  const c = await Node.create({ host: '127.0.0.1', stack: [quick, new Noise({ handshakeTimeout: 20, handshakeRetries: 2 })] })
  t.teardown(() => c.close())
  t.false(await quick.add(mute.address))
  const err = await t.throwsAsync(c.send(mute.address, Buffer.from('x')))
  t.is((err as { code?: string }).code, 'ERR_DECCOM_NOISE_HANDSHAKE_TIMEOUT')
})

// ---------------------------------------------------------------------------------------------
// SimulatedNetwork: loss and simultaneous open

test('the handshake completes under 30% loss (several seeds)', async (t) => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const sim = new SimulatedNetwork({ seed, defaultLink: { latency: 10, loss: 0.3 } })
    const layers: Noise[] = []
    const [a, b] = await sim.createNodes(2, {
      stack: () => {
        const n = new Noise({ handshakeRetries: 8, handshakeDeadline: 120_000 })
        layers.push(n)
        return [n]
      },
    })
    let result: boolean | undefined
    layers[0].approveConnection(b.address).then((ok) => (result = ok))
    await sim.runUntil(() => result !== undefined && layers[1].remoteId(a.address) !== null, { timeout: 120_000 })
    t.true(result, `seed ${seed}`)
    t.deepEqual(layers[1].remoteId(a.address), a.id)
    t.deepEqual(layers[0].handshakeHash(b.address), layers[1].handshakeHash(a.address))
    const lost = sim.stats().lost
    t.log(`seed ${seed}: handshake done at ${sim.now} virtual ms, ${lost} datagrams lost`)
    await sim.close()
  }
})

test('both sides initiating at once yields one working session', async (t) => {
  const sim = new SimulatedNetwork({ seed: 3, defaultLink: { latency: 5 } })
  const layers: Noise[] = []
  const [a, b] = await sim.createNodes(2, {
    stack: () => {
      const n = new Noise()
      layers.push(n)
      return [n]
    },
  })
  const got: string[] = []
  a.on('message', (_f, d) => got.push(`a:${d}`))
  b.on('message', (_f, d) => got.push(`b:${d}`))
  a.send(b.address, Buffer.from('from a'))
  b.send(a.address, Buffer.from('from b'))
  await sim.runFor(1000)
  t.deepEqual(got.sort(), ['a:from b', 'b:from a'])
  const sa = a.stats().noise
  const sb = b.stats().noise
  t.is(sa.simultaneous_open_ignored + sb.simultaneous_open_ignored, 1)
  t.is(sa.simultaneous_open_yielded + sb.simultaneous_open_yielded, 1)
  t.is(sa.sessions, 1)
  t.is(sb.sessions, 1)
  t.deepEqual(layers[0].handshakeHash(b.address), layers[1].handshakeHash(a.address), 'one session: same handshake hash')
  t.is(sa.handshakes_completed, 1)
  t.is(sb.handshakes_completed, 1)
  await sim.close()
})
