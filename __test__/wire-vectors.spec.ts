/**
 * The wire test vectors (test-vectors/*.json, specified in docs/wire.md), checked through the BUILT
 * package: Rust formats through the native binding (decoders, encoders, a seeded NoiseEndpoint
 * replaying the handshake transcripts, the endpoints' malformed-datagram counters), TypeScript
 * formats through their codecs in dist/wire/ and dist/protocols/tcp/codec.js — the functions the
 * layers themselves call to encode and decode — and a running TcpTransport. Every valid vector must
 * decode to its fields and re-encode byte-exact; every invalid one must be rejected the recorded way.
 */
import test from 'ava'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Identity, Node, TcpTransport, decodePeerRecord, encodePeerRecord, toAddress } from '../dist/index.js'
import { rng, sleep, until } from './helpers/wait.ts'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const requireRoot = createRequire(join(root, 'package.json'))
const native = requireRoot('./native/index.js')

interface Valid {
  name: string
  hex: string
  fields: Record<string, unknown>
}
interface Invalid {
  name: string
  hex: string
  error: string
  outcome: string
}
interface VectorFile {
  format: string
  spec: string
  valid: Valid[]
  invalid: Invalid[]
}

function load(name: string): VectorFile {
  const f = JSON.parse(readFileSync(join(root, 'test-vectors', `${name}.json`), 'utf8')) as VectorFile
  if (f.format !== name || f.valid.length === 0 || f.invalid.length === 0) throw new Error(`${name}.json is empty or misnamed`)
  return f
}
const bytes = (hex: string): Buffer => Buffer.from(hex, 'hex')

// ------------------------------------------------------------------------------------------------
// TypeScript-implemented formats

/** Decoded message → the vectors' field form: bytes as hex, addresses as their key; the decoded records (`decoded`) are left out. */
function fields(m: object): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(m)) {
    if (k === 'decoded') continue
    if (Buffer.isBuffer(v)) out[k] = v.toString('hex')
    else if (Array.isArray(v)) out[k] = v.map((x: unknown) => (Buffer.isBuffer(x) ? x.toString('hex') : x))
    else if (v !== null && typeof v === 'object' && 'key' in v) out[k] = (v as { key: string }).key
    else out[k] = v
  }
  return out
}

type Codec = { encode: (m: never) => Buffer; decode: (b: Buffer) => object | null }
const wire = (m: string): Record<string, (x: never) => unknown> => requireRoot(`./dist/wire/${m}.js`)
const ping = wire('ping')
const gossip = wire('gossip')
const big = wire('big-gossip')
const fixed = wire('fixed-peers')
const hp = wire('hole-punch')
const relay = wire('relay')
const mux = wire('mux')
const thp = wire('tcp-hole-punch')
const keepAlive = wire('keep-alive')
/**
 * Some decoders also return the decoded peer records (`decoded`) of the record bytes they return
 * (`records`, `record`, `origin`); they must be those bytes' records.
 */
function checked(decode: (b: Buffer) => object | null): (b: Buffer) => object | null {
  return (b) => {
    const m = decode(b) as null | { decoded?: { id: Buffer } | Array<{ id: Buffer }>; records?: Buffer[]; record?: Buffer; origin?: Buffer }
    if (m === null || m.decoded === undefined) return m
    const raw = m.records ?? [m.record ?? m.origin!]
    const decoded = Array.isArray(m.decoded) ? m.decoded : [m.decoded]
    if (decoded.length !== raw.length || decoded.some((r, i) => !r.id.equals(decodePeerRecord(raw[i]).id))) throw new Error('decoded records differ from their bytes')
    return m
  }
}
const tsFormats: Array<[string, Codec]> = [
  ['udp-ping', { encode: ping.encodePing, decode: ping.decodePing } as Codec],
  ['udp-ping', { encode: keepAlive.encodeKeepAlive, decode: keepAlive.decodeKeepAlive } as Codec],
  ['gossip', { encode: gossip.encodeGossip, decode: checked(gossip.decodeGossip as (b: Buffer) => object | null) } as Codec],
  ['big-gossip', { encode: big.encodeBigGossip, decode: checked(big.decodeBigGossip as (b: Buffer) => object | null) } as Codec],
  ['fixed-peers', { encode: fixed.encodeFixedPeers, decode: checked(fixed.decodeFixedPeers as (b: Buffer) => object | null) } as Codec],
  ['hole-punch', { encode: hp.encodeHolePunch, decode: hp.decodeHolePunch } as Codec],
  ['relay', { encode: relay.encodeRelay, decode: relay.decodeRelay } as Codec],
  ['tcp-hole-punch', { encode: thp.encodeTcpHolePunch, decode: thp.decodeTcpHolePunch } as Codec],
  ['connection', { encode: mux.encodeMux, decode: mux.decodeMux } as Codec],
]

for (const [i, [name, codec]] of tsFormats.entries()) {
  const which = i === 1 ? ' (KeepAlive codec)' : ''
  test(`${name}${which}: valid vectors decode to their fields and re-encode byte-exact; invalid ones are dropped`, (t) => {
    const f = load(name)
    for (const v of f.valid) {
      const m = codec.decode(bytes(v.hex))
      t.not(m, null, v.name)
      t.deepEqual(fields(m!), v.fields, v.name)
      t.is(codec.encode(m as never).toString('hex'), v.hex, v.name)
    }
    for (const v of f.invalid) {
      t.is(codec.decode(bytes(v.hex)), null, v.name)
      t.is(v.error, 'dropped_malformed', v.name)
    }
  })
}

test('the ping vectors: a PONG answering a PING vector echoes its id, as the KeepAlive layer and the transport Pinger send it', (t) => {
  const f = load('udp-ping')
  const p = bytes(f.valid.find((v) => v.fields.type === 'PING')!.hex)
  const id = p.readUInt32BE(1)
  const pong = (keepAlive.encodeKeepAlive as (m: object) => Buffer)({ type: 'PONG', id })
  t.deepEqual(pong, Buffer.concat([Buffer.from([2]), p.subarray(1)]))
  t.deepEqual(fields((ping.decodePing as (b: Buffer) => object)(pong)), { type: 'PONG', id })
})

// ------------------------------------------------------------------------------------------------
// Rust-implemented formats through the native binding

function code(e: unknown): string {
  return String((e as { code?: string }).code ?? (e as Error).message).split(':')[0]
}

test('identity: public identities give their node ids; invalid ones are refused with their code', (t) => {
  const f = load('identity')
  for (const v of f.valid) {
    t.is(native.nodeId(bytes(v.hex)).toString('hex'), v.fields.node_id, v.name)
    if (v.fields.kind === 'ed25519') {
      const seed = Number(/seed 0x([0-9a-f]+)/.exec(v.name)![1])
      t.is(Identity.fromSeed(Buffer.alloc(32, seed)).publicIdentity.toString('hex'), v.hex, v.name)
    }
    // A record built with it re-encodes the identity byte-exact.
    const rec = decodePeerRecord(encodePeerRecord({ publicIdentity: bytes(v.hex), address: toAddress('127.0.0.1:1') }))
    t.is(rec.publicIdentity.toString('hex'), v.hex, v.name)
  }
  for (const v of f.invalid) {
    const err = t.throws(() => encodePeerRecord({ publicIdentity: bytes(v.hex), address: toAddress('127.0.0.1:1') }), undefined, v.name)
    t.is(code(err), v.error.split(' ')[0], v.name)
  }
})

test('peer-record: valid vectors decode to their fields and re-encode byte-exact; invalid ones throw their code', (t) => {
  const f = load('peer-record')
  for (const v of f.valid) {
    const r = decodePeerRecord(bytes(v.hex))
    t.deepEqual(
      { id: r.id.toString('hex'), identity: r.publicIdentity.toString('hex'), udp: r.address.key, tcp_port: r.tcpPort ?? null, external: r.external?.key ?? null },
      v.fields,
      v.name,
    )
    t.is(encodePeerRecord(r).toString('hex'), v.hex, v.name)
  }
  for (const v of f.invalid) {
    const err = t.throws(() => decodePeerRecord(bytes(v.hex)), undefined, v.name)
    t.is(code(err), v.error.split(' ')[0], v.name)
  }
})

function records(m: { ids: Buffer; identities: Buffer; identityEnds: Uint32Array; hosts: string }): Buffer[] {
  const hosts = m.hosts.split(' ')
  const out: Buffer[] = []
  for (let i = 0, start = 0; i < m.identityEnds.length; start = m.identityEnds[i], i++) {
    const publicIdentity = m.identities.subarray(start, m.identityEnds[i])
    out.push(encodePeerRecord({ publicIdentity, address: toAddress(hosts[2 * i], Number(hosts[2 * i + 1])) }))
  }
  return out
}

test('kad: valid vectors decode to their fields and re-encode byte-exact; invalid ones are rejected with their reason', (t) => {
  const f = load('kad')
  const kinds = ['', 'PING', 'PONG', 'FIND_NODE', 'NODES']
  for (const v of f.valid) {
    const m = native.kadDecode(bytes(v.hex))
    t.is(m.error, undefined, v.name)
    t.is(kinds[m.kind], v.fields.type, v.name)
    const rid = (BigInt(m.requestHi) << 32n) | BigInt(m.requestLo)
    t.is(rid.toString(), v.fields.request_id, v.name)
    let again: Buffer
    if (m.kind <= 2) {
      again = native.kadEncodePing(m.kind === 2, m.requestHi, m.requestLo)
    } else {
      const recs = records(m)
      const brief = recs.map((r) => {
        const d = decodePeerRecord(r)
        return { id: d.id.toString('hex'), udp: d.address.key }
      })
      t.deepEqual(brief[0], v.fields.sender, v.name)
      if (m.kind === 3) {
        t.is(m.target.toString('hex'), v.fields.target, v.name)
        const table = new native.KadTable(recs[0], 20, 8, 0)
        t.is(m.ephemeral, v.fields.ephemeral, v.name)
        again = table.encodeFindNode(m.requestHi, m.requestLo, m.target, bytes(v.hex).length, m.ephemeral)
        t.is(bytes(v.hex).length - (10 + 32 + recs[0].length + (m.ephemeral ? 1 : 0)), v.fields.padding, v.name)
      } else {
        t.is(m.truncated, v.fields.truncated, v.name)
        t.deepEqual(brief.slice(1), v.fields.nodes, v.name)
        again = native.kadEncodeNodes(m.requestHi, m.requestLo, recs[0], recs.slice(1), m.truncated)
      }
    }
    t.is(again.toString('hex'), v.hex, v.name)
  }
  for (const v of f.invalid) {
    const m = native.kadDecode(bytes(v.hex))
    t.is(m.kind, 0, v.name)
    t.is(m.error, v.error.split(' ')[0], v.name)
  }
})

test('dht: valid vectors decode to their fields (records verified) and requests re-encode byte-exact; invalid ones are rejected with their reason', (t) => {
  const f = load('dht')
  const types = ['', 'GET', 'REPLY', 'ANNOUNCE', 'PUT', 'PUT_MUTABLE', 'ACK', 'NOTIFY']
  const statuses = ['ok', 'bad_token', 'bad_signature', 'lower_seq', 'cas_mismatch', 'too_large', 'full', 'rate_limited', 'address_mismatch']
  for (const v of f.valid) {
    const raw = bytes(v.hex)
    const m = native.dhtDecode(raw)
    const x = v.fields as Record<string, any>
    t.is(m.error, undefined, v.name)
    t.is(types[m.kind], x.type, v.name)
    if (m.kind !== 7) t.is(((BigInt(m.requestHi) << 32n) | BigInt(m.requestLo)).toString(), x.request_id, v.name)
    if (x.token) t.is(m.token.toString('hex'), x.token, v.name)
    // A withdrawal (ttl 0) is never a record a lookup returns: the decoder leaves it out.
    t.is(m.badRecords, x.record?.ttl === 0 ? 1 : 0, v.name)
    let again: Buffer | null = null
    switch (x.type) {
      case 'GET':
        t.is(m.key.toString('hex'), x.key, v.name)
        again = native.dhtEncodeGet(m.requestHi, m.requestLo, m.recordKind, m.key, m.token, m.offset, raw.length)
        break
      case 'REPLY':
        t.is(m.truncated, x.truncated, v.name)
        t.is(m.nodeCount, x.nodes.length, v.name)
        t.is(m.observed.toString('hex'), x.observed, v.name)
        if (m.recordKind === 1) {
          t.is(m.peerCount, x.records.length, v.name)
          t.is(m.peerAddrs.toString('hex'), x.records[0].slice(68, 104), v.name)
        } else t.is(m.seq, 7, v.name) // the mutable vector's record (seq 7, verified)
        break
      case 'ANNOUNCE':
      case 'NOTIFY': {
        const r = x.record
        t.is(m.peerCount, r.verifies && r.ttl > 0 ? 1 : 0, v.name)
        if (x.type === 'ANNOUNCE') {
          const sig = Buffer.from(r.signature, 'hex')
          again = native.dhtEncodeAnnounce(m.requestHi, m.requestLo, m.token, m.key, Buffer.from(r.identity, 'hex'), Buffer.from(r.addr, 'hex'), Number(r.seq), r.ttl, sig)
        }
        break
      }
      case 'PUT':
        again = native.dhtEncodePut(m.requestHi, m.requestLo, m.token, m.value)
        break
      case 'PUT_MUTABLE':
        t.is(m.key.toString('hex'), x.record.key, v.name)
        again = native.dhtEncodePutMutable(m.requestHi, m.requestLo, m.token, m.publicKey, m.salt, m.seq, m.value, m.signature, x.cas === null ? null : Number(x.cas))
        break
      case 'ACK':
        t.is(statuses[m.status], x.status, v.name)
        break
    }
    if (again) t.is(again.toString('hex'), v.hex, v.name)
  }
  for (const v of f.invalid) {
    const m = native.dhtDecode(bytes(v.hex))
    t.is(m.kind, 0, v.name)
    t.is(m.error, v.error.split(' ')[0], v.name)
  }
})

/**
 * What `dhtParse` (the layer's in-place reader of answers) says of a datagram, in `dhtDecode`'s
 * field names: the two must agree on every answer-side message (REPLY, ACK, NOTIFY, ANNOUNCE).
 */
function dhtParsed(raw: Buffer): Record<string, unknown> {
  const w = new Uint32Array(19 + 2 * 128)
  const ids = Buffer.alloc(32 * 128)
  const kind = native.dhtParse(raw, w, ids) as number
  if (kind === 0) return { kind }
  const n = w[7]!
  const at = (i: number): number => w[19 + 2 * i]!
  const out: Record<string, unknown> = { kind, badRecords: w[8], recordKind: w[4] }
  if (kind !== 7) Object.assign(out, { requestHi: w[1], requestLo: w[2] })
  if (kind === 6) return { ...out, status: w[9] }
  out.key = raw.subarray(w[18], w[18]! + 32).toString('hex')
  out.peerCount = n
  if (w[4] === 1) {
    // Topic records (dhtDecode gives these buffers, empty when none verified).
    out.peerIds = ids.subarray(0, 32 * n).toString('hex')
    out.peerIdentities = Buffer.concat(Array.from({ length: n }, (_, i) => raw.subarray(at(i), at(i) + 33))).toString('hex')
    out.peerAddrs = Buffer.concat(Array.from({ length: n }, (_, i) => raw.subarray(at(i) + 33, at(i) + 51))).toString('hex')
  }
  if (kind === 2) {
    const rows = Array.from({ length: w[6]! }, (_, i) => raw.subarray(81 + 50 * i, 81 + 50 * i + 50))
    Object.assign(out, {
      truncated: w[3] === 1,
      total: w[5],
      token: raw.subarray(44, 60).toString('hex'),
      observed: raw.subarray(60, 78).toString('hex'),
      nodeCount: w[6],
      nodeIds: Buffer.concat(rows.map((r) => r.subarray(0, 32))).toString('hex'),
      nodeAddrs: Buffer.concat(rows.map((r) => r.subarray(32))).toString('hex'),
      value: w[10] === 0 ? undefined : raw.subarray(w[10], w[10]! + w[11]!).toString('hex'),
    })
    if (w[4] === 3 && w[10] !== 0) {
      Object.assign(out, {
        seq: w[12]! * 2 ** 32 + w[13]!,
        signature: raw.subarray(w[14], w[14]! + 64).toString('hex'),
        publicKey: raw.subarray(w[15], w[15]! + 32).toString('hex'),
        salt: raw.subarray(w[16], w[16]! + w[17]!).toString('hex'),
      })
    }
  }
  return out
}

/** `dhtDecode`'s fields that `dhtParsed` gives, as hex strings. */
function dhtDecodedFields(raw: Buffer, like: Record<string, unknown>): Record<string, unknown> {
  const m = native.dhtDecode(raw) as Record<string, unknown>
  if (m.kind === 0) return { kind: 0 }
  const out: Record<string, unknown> = {}
  for (const k of Object.keys(like)) {
    const v = m[k]
    out[k] = Buffer.isBuffer(v) ? v.toString('hex') : v === null ? undefined : v
  }
  if (m.kind === 2 && m.recordKind !== 3) delete out.seq
  return out
}

test('dht: the in-place reader of answers (dhtParse) agrees with dhtDecode on every vector and on thousands of corrupted answers', (t) => {
  const f = load('dht')
  const answers = f.valid.map((v) => bytes(v.hex)).filter((b) => [2, 3, 6, 7].includes(b[1]!))
  t.true(answers.length >= 4, 'vectors of REPLY, ANNOUNCE, ACK and NOTIFY')
  const check = (raw: Buffer, name: string): void => {
    const mine = dhtParsed(raw)
    t.deepEqual(mine, dhtDecodedFields(raw, mine), name)
  }
  for (const [i, raw] of answers.entries()) check(raw, `valid answer ${i}`)
  for (const v of f.invalid) t.is(dhtParsed(bytes(v.hex)).kind, 0, v.name)
  // Corrupted copies: a flipped byte, a cut, a byte appended (seeded, so a failure replays).
  const r = rng(0x2545f491)
  const rnd = (n: number): number => Math.floor(r() * n)
  for (let i = 0; i < 3000; i++) {
    const base = answers[rnd(answers.length)]!
    let raw = Buffer.from(base)
    const op = rnd(3)
    if (op === 0) raw[rnd(raw.length)] ^= 1 << rnd(8)
    else if (op === 1) raw = raw.subarray(0, rnd(raw.length))
    else raw = Buffer.concat([raw, Buffer.from([rnd(256)])])
    check(raw, `corrupted answer ${i}`)
  }
})

for (const name of ['rudp', 'noise', 'noise-frame']) {
  test(`${name}: valid vectors decode to their fields and re-encode byte-exact; invalid ones are rejected with their error`, (t) => {
    const f = load(name)
    for (const v of f.valid) {
      const d = native.wireDecode(name, bytes(v.hex))
      t.is(d.error, undefined, v.name)
      t.deepEqual(JSON.parse(d.fields), v.fields, v.name)
      t.is(d.reencoded.toString('hex'), v.hex, v.name)
    }
    for (const v of f.invalid) {
      const d = native.wireDecode(name, bytes(v.hex))
      t.is(d.error, v.error, v.name)
      t.is(d.fields, undefined, v.name)
    }
  })
}

test('rudp: the endpoint drops and counts every invalid vector, and no valid one, as malformed', (t) => {
  const f = load('rudp')
  const ep = new native.RudpEndpoint({ seed: 1 }, 0)
  const malformed = (): number => ep.stats().rudp_dropped_malformed
  for (const v of f.invalid) {
    const before = malformed()
    ep.handleDatagram(1, 7, bytes(v.hex))
    t.is(malformed(), before + 1, v.name)
  }
  for (const v of f.valid) {
    const before = malformed()
    ep.handleDatagram(1, 8, bytes(v.hex))
    t.is(malformed(), before, v.name)
  }
})

test('noise: the endpoint drops and counts every invalid vector as malformed', (t) => {
  const f = load('noise')
  const ep = new native.NoiseEndpoint(native.NativeIdentity.fromSeed(Buffer.alloc(32, 9)), { seed: Buffer.alloc(32, 9) }, 0)
  for (const v of f.invalid) {
    const before = ep.stats().dropped_malformed
    ep.handleDatagram(1, 7, bytes(v.hex))
    t.is(ep.stats().dropped_malformed, before + 1, v.name)
  }
})

// ------------------------------------------------------------------------------------------------
// Noise handshake transcripts, regenerated with the recorded seeds

interface Party {
  role: string
  identity_seed: string
  endpoint_seed: string
  public_identity: string
  node_id: string
}
interface Transcript {
  aes_gcm: boolean
  datagrams: Array<{ from: string; type: string; hex: string }>
  delivered: Array<{ by: string; plaintext?: string; connected_to?: string }>
  handshake_hash: string
}

for (const pattern of ['xx', 'xx_aes', 'ik'] as const) {
  test(`noise-handshake: the ${pattern} transcript is regenerated byte-exact by seeded endpoints`, (t) => {
    const file = JSON.parse(readFileSync(join(root, 'test-vectors', 'noise-handshake.json'), 'utf8')) as { identities: Party[]; xx: Transcript; xx_aes: Transcript; ik: Transcript }
    const aesGcm = file[pattern].aes_gcm
    const [pi, pr] = file.identities
    const idI = native.NativeIdentity.fromSeed(bytes(pi.identity_seed))
    const idR = native.NativeIdentity.fromSeed(bytes(pr.identity_seed))
    t.is(idI.publicIdentity.toString('hex'), pi.public_identity)
    t.is(idR.id.toString('hex'), pr.node_id)
    // Peer handles: the initiator is 1 to the responder, the responder 2 to the initiator.
    const I = 1
    const R = 2
    const a = new native.NoiseEndpoint(idI, { seed: bytes(pi.endpoint_seed), aesGcm }, 0)
    const b = new native.NoiseEndpoint(idR, { seed: bytes(pr.endpoint_seed), aesGcm }, 0)
    const sent: Array<{ from: string; hex: string }> = []
    const got: Transcript['delivered'] = []
    const pump = (now: number): void => {
      for (;;) {
        let moved = false
        for (const [src, dst, from, who] of [
          [a, b, I, 'initiator'],
          [b, a, R, 'responder'],
        ] as const) {
          for (let tx = src.pollTransmit(); tx !== null; tx = src.pollTransmit()) {
            for (let i = 0, off = 0; i < tx.lens.length; off += tx.lens[i], i++) {
              const d = Buffer.from(tx.data.subarray(off, off + tx.lens[i]))
              sent.push({ from: who, hex: d.toString('hex') })
              dst.handleDatagram(now, from, d)
              moved = true
            }
          }
        }
        for (const [ep, who] of [
          [a, 'initiator'],
          [b, 'responder'],
        ] as const) {
          for (let e = ep.pollEvents(now); e !== null; e = ep.pollEvents(now)) {
            for (const c of e.connected ?? []) got.push({ by: who, connected_to: c.remoteId.toString('hex') })
            for (const m of e.messages ?? []) got.push({ by: who, plaintext: m.toString('hex') })
          }
        }
        if (!moved) return
      }
    }
    a.connect(0, R, pattern === 'ik' ? staticKeyOf(file, 'responder') : null)
    pump(0)
    const expected = file[pattern]
    t.is(a.stats().sessions_aes_gcm, pattern === 'xx_aes' ? 1 : 0, 'the suite the transcript says')
    t.is(b.stats().sessions_aes_gcm, pattern === 'xx_aes' ? 1 : 0)
    t.is(a.handshakeHash(R).toString('hex'), expected.handshake_hash)
    t.is(b.handshakeHash(I).toString('hex'), expected.handshake_hash)
    a.send(1, R, Buffer.concat([Buffer.from([0, 0]), Buffer.from('hello responder')]))
    pump(1)
    const chunk = Buffer.alloc(14)
    chunk.writeUInt32BE(1, 2)
    chunk.writeUInt32BE(40, 6)
    chunk[1] = 1
    b.send(1, I, Buffer.concat([chunk, Buffer.from('first 20 bytes of 40')]))
    pump(1)
    t.deepEqual(sent, expected.datagrams.map(({ from, hex }) => ({ from, hex })))
    // The vectors record each Noise plaintext (a frame); the endpoint delivers decoded frames: a
    // whole frame's data at once, a chunk only when its message is complete (here: never).
    const delivered = expected.delivered.flatMap((d) => {
      if (d.plaintext === undefined) return [d]
      const frame = bytes(d.plaintext)
      return frame[1] === 0 ? [{ by: d.by, plaintext: frame.subarray(2).toString('hex') }] : []
    })
    t.deepEqual(got, delivered)
    t.is(a.stats().reassembly_bytes, 40, 'the chunk waits in reassembly for the rest of its 40-byte message')
  })
}

function staticKeyOf(file: { identities: Array<Party & { x25519_static_public_key?: string }> }, role: string): Buffer {
  return bytes(file.identities.find((p) => p.role === role)!.x25519_static_public_key!)
}

// ------------------------------------------------------------------------------------------------
// TCP streams: checked against a running TcpTransport, and through its codec (ts/protocols/tcp/codec.ts)

/** One TCP frame → fields, read as docs/wire.md#tcp-streams specifies. */
function tcpFields(f: Buffer): Record<string, unknown> {
  const len = f.readUInt32BE(0)
  const type = f[4]
  const body = f.subarray(5)
  if (body.length !== len) throw new Error('length mismatch')
  if (type <= 0xef) return { length: len, type: 'DATA', tag: type, data: body.toString('hex') }
  if (type === 0xf0) {
    const n = body.readUInt16BE(86)
    if (body.length !== 88 + n) throw new Error('identity length mismatch')
    return {
      length: len,
      type: 'HELLO',
      version: body[0],
      flags: body[1],
      id: body.subarray(2, 34).toString('hex'),
      nonce: body.subarray(34, 66).toString('hex'),
      udp: body.subarray(66, 84).toString('hex'),
      tcp_port: body.readUInt16BE(84),
      identity: body.subarray(88, 88 + n).toString('hex'),
    }
  }
  const names: Record<number, string> = { 0xf1: 'AUTH', 0xf2: 'GOAWAY', 0xf3: 'OBSERVED' }
  return { length: len, type: names[type], body: body.toString('hex') }
}

function tcpFrames(buf: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let o = 0; o + 5 <= buf.length; ) {
    const l = buf.readUInt32BE(o)
    if (o + 5 + l > buf.length) break
    out.push(buf.subarray(o, o + 5 + l))
    o += 5 + l
  }
  return out
}



test('tcp: valid frames match the spec, and a running TcpTransport writes and reads them; invalid streams close the connection and are counted', async (t) => {
  const f = load('tcp')
  const byName = (prefix: string, exact = false): Buffer => bytes(f.valid.find((v) => (exact ? v.name === prefix : v.name.startsWith(prefix)))!.hex)
  for (const v of f.valid) t.deepEqual(tcpFields(bytes(v.hex)), v.fields, v.name)

  // The Ed25519 node of the capture (seed 0x05), again.
  const tcp = new TcpTransport()
  const node = await Node.create({ host: '127.0.0.1', identity: Identity.fromSeed(Buffer.alloc(32, 5)), stack: [tcp] })
  t.teardown(() => node.close())
  const port = tcp.tcpAddress()!.port
  const received: Array<[string, number]> = []
  tcp.on('frame', (_peer, data, tag) => received.push([data.toString('hex'), tag]))

  const helloName = byName('HELLO from a name identity')
  const nameId = tcpFields(helloName).id as string
  const chunks: Buffer[] = []
  const sock = net.connect(port, '127.0.0.1', () => sock.write(helloName))
  t.teardown(() => sock.destroy())
  sock.on('data', (d) => chunks.push(d))
  t.true(await until(() => tcpFrames(Buffer.concat(chunks)).length >= 3, 5000), 'HELLO, OBSERVED and AUTH arrive')
  await sleep(50) // nothing more may follow
  const [hello, ...rest] = tcpFrames(Buffer.concat(chunks))
  // Same HELLO as captured but for the per-connection nonce and this run's addresses and port.
  const mask = (b: Buffer): Buffer => Buffer.concat([b.subarray(0, 5 + 34), b.subarray(5 + 86)])
  t.deepEqual(mask(hello), mask(byName('HELLO from an Ed25519 node')))
  t.deepEqual(rest.map((r) => [r[4], r.length]), [
    [0xf3, 5 + 18],
    [0xf1, 5 + 64],
  ])
  t.deepEqual(rest[0].subarray(5 + 10, 5 + 16), Buffer.from('ffff7f000001', 'hex'), 'OBSERVED names 127.0.0.1')
  t.is(rest[0].readUInt16BE(5 + 16), sock.localPort!, 'OBSERVED names our port')
  // It writes the data frame vectors byte-exact, and reads them.
  chunks.length = 0
  await tcp.sendStream(Buffer.from(nameId, 'hex'), Buffer.from('hello'), 0)
  await tcp.sendStream(Buffer.from(nameId, 'hex'), Buffer.from('0102', 'hex'), 0xef)
  await until(() => tcpFrames(Buffer.concat(chunks)).length >= 2, 5000)
  t.deepEqual(Buffer.concat(chunks), Buffer.concat([byName('data frame, stream tag 0', true), byName('data frame, stream tag 0xEF')]))
  sock.write(Buffer.concat([byName('data frame, stream tag 0', true), byName('data frame, stream tag 0xEF')]))
  await until(() => received.length >= 2, 5000)
  t.deepEqual(received, [
    ['68656c6c6f', 0],
    ['0102', 0xef],
  ])
  sock.destroy()

  for (const v of f.invalid) {
    const before = tcp.stats()[v.error] ?? 0
    const closed = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(bytes(v.hex)))
      const timer = setTimeout(() => {
        s.destroy()
        resolve(false)
      }, 2000)
      s.on('error', () => {})
      s.on('close', () => {
        clearTimeout(timer)
        resolve(true)
      })
      s.resume()
    })
    t.true(closed, `${v.name}: the connection is closed`)
    t.is(tcp.stats()[v.error], before + 1, v.name)
  }
})

test('tcp: the codec the transport calls decodes every valid frame to its fields and re-encodes it byte-exact; it refuses every invalid stream it can judge without connection state', (t) => {
  const codec = requireRoot('./dist/protocols/tcp/codec.js') as {
    VERSION: number
    FLAG_AUTH: number
    FLAG_OBSERVED: number
    T_HELLO: number
    T_AUTH: number
    T_GOAWAY: number
    T_OBSERVED: number
    SIG_LEN: number
    TCP_MAX_TAG: number
    checkFrameHeader(type: number, length: number, maxFrameSize: number): 'ok' | 'oversized' | 'malformed'
    encodeFrame(type: number, body: Uint8Array): Buffer
    encodeHello(h: { id: Buffer; nonce: Buffer; publicIdentity: Buffer; canSign: boolean; udpRaw: Buffer | null; tcpPort: number }): Buffer
    decodeHello(b: Buffer): null | { id: Buffer; nonce: Buffer; publicIdentity: Buffer | null; wantsAuth: boolean; wantsObserved: boolean; udpRaw: Buffer; tcpPort: number }
    encodeObserved(a: unknown): Buffer
    decodeObserved(b: Buffer): unknown
    authMessage(peerNonce: Buffer, ownNonce: Buffer, ownId: Buffer, peerId: Buffer): Buffer
  }
  const maxFrameSize = 16 * 1024 * 1024 // the TcpTransport default
  const f = load('tcp')
  const hellos: Record<string, NonNullable<ReturnType<typeof codec.decodeHello>>> = {}
  let auth: Buffer | null = null
  for (const v of f.valid) {
    const b = bytes(v.hex)
    const len = b.readUInt32BE(0)
    const type = b[4]
    const body = b.subarray(5)
    t.is(codec.checkFrameHeader(type, len, maxFrameSize), 'ok', v.name)
    if (type <= codec.TCP_MAX_TAG) {
      t.deepEqual(codec.encodeFrame(type, body), b, v.name)
    } else if (type === codec.T_HELLO) {
      const h = codec.decodeHello(body)
      if (h === null) return t.fail(`${v.name}: refused`)
      t.deepEqual(
        {
          length: len,
          type: 'HELLO',
          version: codec.VERSION,
          flags: (h.wantsAuth ? codec.FLAG_AUTH : 0) | (h.wantsObserved ? codec.FLAG_OBSERVED : 0),
          id: h.id.toString('hex'),
          nonce: h.nonce.toString('hex'),
          udp: h.udpRaw.toString('hex'),
          tcp_port: h.tcpPort,
          identity: (h.publicIdentity ?? Buffer.alloc(0)).toString('hex'),
        },
        v.fields,
        v.name,
      )
      const again = codec.encodeHello({ id: h.id, nonce: h.nonce, publicIdentity: h.publicIdentity ?? Buffer.alloc(0), canSign: h.wantsAuth, udpRaw: h.udpRaw, tcpPort: h.tcpPort })
      t.deepEqual(codec.encodeFrame(codec.T_HELLO, again), b, v.name)
      hellos[v.name] = h
    } else if (type === codec.T_OBSERVED) {
      const a = codec.decodeObserved(body)
      t.true(a !== null && a !== 'malformed', v.name)
      t.deepEqual(codec.encodeFrame(codec.T_OBSERVED, codec.encodeObserved(a)), b, v.name)
    } else if (type === codec.T_AUTH) {
      auth = body
    } else {
      t.is(type, codec.T_GOAWAY, v.name)
      t.deepEqual(codec.encodeFrame(codec.T_GOAWAY, Buffer.alloc(0)), b, v.name)
    }
  }
  // The AUTH was the Ed25519 node's (seed 0x05) answer to the name node's HELLO: signing the same
  // authMessage again gives the same bytes (Ed25519 signatures are deterministic).
  const s = Object.entries(hellos).find(([n]) => n.startsWith('HELLO from an Ed25519 node'))![1]
  const n = Object.entries(hellos).find(([n]) => n.startsWith('HELLO from a name identity'))![1]
  const signer = Identity.fromSeed(Buffer.alloc(32, 5))
  t.deepEqual(s.id, signer.id)
  t.deepEqual(codec.encodeFrame(codec.T_AUTH, signer.sign(codec.authMessage(n.nonce, s.nonce, s.id, n.id))), codec.encodeFrame(codec.T_AUTH, auth!))

  /** The counter the codec alone names for a byte stream, or null when every frame passes it. */
  const refusal = (stream: Buffer): string | null => {
    for (let o = 0; o + 5 <= stream.length; ) {
      const len = stream.readUInt32BE(o)
      const type = stream[o + 4]
      const verdict = codec.checkFrameHeader(type, len, maxFrameSize)
      if (verdict !== 'ok') return `dropped_${verdict}`
      const body = stream.subarray(o + 5, o + 5 + len)
      if (type === codec.T_HELLO && codec.decodeHello(body) === null) return 'dropped_malformed'
      if (type === codec.T_OBSERVED && codec.decodeObserved(body) === 'malformed') return 'dropped_malformed'
      if (type === codec.T_AUTH && body.length !== codec.SIG_LEN) return 'dropped_malformed'
      o += 5 + len
    }
    return null
  }
  // These depend on the connection's state (what came before), which the transport checks.
  const stateful = new Set(['data frame before HELLO', 'a second HELLO', 'AUTH not announced by the HELLO'])
  for (const v of f.invalid) t.is(refusal(bytes(v.hex)), stateful.has(v.name) ? null : v.error, v.name)
  t.true(f.invalid.some((v) => v.name.includes('unknown flag')), 'the unknown-flag vector is there')
})
