#!/usr/bin/env node
// Writes test-vectors/<format>.json for the formats implemented in TypeScript, from the built codecs
// in dist/wire/ (run `npm run build:ts` first). Run once per deliberate format change, then check a
// few fields by hand against docs/wire.md. The Rust formats are written by
// `cargo test -p deccom-core --test vectors -- --ignored generate_test_vectors`.
// Checked by __test__/wire-vectors.spec.ts.
import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(join(root, 'package.json'))
const { Identity, encodePeerRecord, toAddress } = require('./dist/index.js')
const ping = require('./dist/wire/ping.js')
const gossip = require('./dist/wire/gossip.js')
const big = require('./dist/wire/big-gossip.js')
const fixed = require('./dist/wire/fixed-peers.js')
const hp = require('./dist/wire/hole-punch.js')
const relay = require('./dist/wire/relay.js')
const thp = require('./dist/wire/tcp-hole-punch.js')

/** Decoded message → JSON fields: bytes as hex, addresses as `host:port` / `[host]:port`. */
export function fields(m) {
  const out = {}
  for (const [k, v] of Object.entries(m)) {
    if (Buffer.isBuffer(v)) out[k] = v.toString('hex')
    else if (Array.isArray(v)) out[k] = v.map((x) => (Buffer.isBuffer(x) ? x.toString('hex') : x))
    else if (v !== null && typeof v === 'object' && 'key' in v) out[k] = v.key
    else out[k] = v
  }
  return out
}

const seed = (b) => Identity.fromSeed(Buffer.alloc(32, b))
const rec = (b, addr) => encodePeerRecord({ publicIdentity: seed(b).publicIdentity, address: toAddress(addr) })
const A = rec(0x01, '192.0.2.1:4001')
const B = rec(0x02, '[2001:db8::2]:4002')
const C = rec(0x03, '198.51.100.3:4003')
const id = (b) => seed(b).id
const v4 = toAddress('203.0.113.7:40001')
const v6 = toAddress('[2001:db8::7]:40002')
const hex = (s) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

const formats = [
  {
    file: 'udp-ping',
    anchor: 'udp-transport-ping-tag-1',
    notes: 'The bytes after the layer tag 1 (UdpTransport/SimTransport) or 7 (KeepAlive): the same format. Invalid ones are dropped and counted in dropped_malformed.',
    codec: ping,
    encode: ping.encodePing,
    decode: ping.decodePing,
    valid: [
      ['PING', { type: 'PING', id: 0x01020304 }],
      ['PONG', { type: 'PONG', id: 0xffffffff }],
    ],
    invalid: [
      ['empty', ''],
      ['4 bytes', '0101020304'.slice(0, 8)],
      ['6 bytes', '010102030400'],
      ['unknown type 3', '0301020304'],
      ['type 0', '0001020304'],
    ],
  },
  {
    file: 'gossip',
    anchor: 'gossip-tag-8',
    notes: 'The bytes after the layer tag 8. Records are peer records (peer-record.json). Invalid ones are dropped and counted in dropped_malformed.',
    encode: gossip.encodeGossip,
    decode: gossip.decodeGossip,
    valid: [
      ['EXCHANGE with two records, padded to 200 bytes', { type: 'EXCHANGE', records: [A, B], padding: 200 - 1 - 1 - 2 - A.length - 2 - B.length }],
      ['EXCHANGE_REPLY with one record', { type: 'EXCHANGE_REPLY', records: [C] }],
      ['EXCHANGE_REPLY, empty list', { type: 'EXCHANGE_REPLY', records: [] }],
      ['PING', { type: 'PING', id: 0x0a0b0c0d }],
      ['PONG', { type: 'PONG', id: 0x0a0b0c0d }],
      ['FIND', { type: 'FIND', queryHi: 1, queryLo: 2, hops: 6, target: id(0x03), origin: A }],
      ['FOUND', { type: 'FOUND', queryHi: 1, queryLo: 2, record: C }],
    ],
    invalid: [
      ['empty', ''],
      ['unknown type 7', '07'],
      ['EXCHANGE without a count', '01'],
      ['EXCHANGE count 65', '0141'],
      ['EXCHANGE record slot past the end', '02 01 0100' + A.toString('hex').slice(0, 40)],
      ['EXCHANGE_REPLY with a bad record (version 2)', '02 01 ' + A.length.toString(16).padStart(4, '0') + '02' + A.toString('hex').slice(2)],
      ['PING of 4 bytes', '03010203'],
      ['PONG of 6 bytes', '040102030405'],
      ['FIND cut inside the target', '05 00000001 00000002 06' + '00'.repeat(10)],
      ['FOUND with a truncated record', '06 00000001 00000002 ' + C.length.toString(16).padStart(4, '0') + C.toString('hex').slice(0, 60)],
    ],
  },
  {
    file: 'big-gossip',
    anchor: 'biggossip-tag-5',
    notes: 'The bytes after the layer tag 5; record lists as in gossip.json. Invalid ones are dropped and counted in dropped_malformed.',
    encode: big.encodeBigGossip,
    decode: big.decodeBigGossip,
    valid: [
      ['PULL padded to 120 bytes', { type: 'PULL', records: [A], padding: 120 - 1 - 1 - 2 - A.length }],
      ['SAMPLE with three records', { type: 'SAMPLE', records: [A, B, C] }],
      ['INTRO', { type: 'INTRO', records: [B] }],
    ],
    invalid: [
      ['empty', ''],
      ['unknown type 4', '0400'],
      ['SAMPLE without a count', '02'],
      ['INTRO record slot past the end', '03 01 0200' + B.toString('hex')],
    ],
  },
  {
    file: 'fixed-peers',
    anchor: 'fixedpeers-tag-6',
    notes: 'The bytes after the layer tag 6. Invalid ones are dropped and counted in dropped_malformed.',
    encode: fixed.encodeFixedPeers,
    decode: fixed.decodeFixedPeers,
    valid: [
      ['HELLO', { type: 'HELLO', record: A }],
      ['HELLO_ACK', { type: 'HELLO_ACK', record: B }],
      ['EXIT', { type: 'EXIT' }],
    ],
    invalid: [
      ['empty', ''],
      ['unknown type 4', '04' + A.toString('hex')],
      ['HELLO without a record', '01'],
      ['HELLO with a truncated record', '01' + A.toString('hex').slice(0, 80)],
    ],
  },
  {
    file: 'hole-punch',
    anchor: 'hole-punching-tag-9',
    notes: 'The bytes after the layer tag 9; addresses in the nat-wire encoding. Invalid ones are dropped and counted in dropped_malformed.',
    encode: hp.encodeHolePunch,
    decode: hp.decodeHolePunch,
    valid: [
      ['PROBE (padded to 24 bytes)', { type: 'PROBE', nonce: 0x11223344, padding: 19 }],
      ['OBSERVED, IPv4', { type: 'OBSERVED', nonce: 0x11223344, addr: v4 }],
      ['OBSERVED, IPv6', { type: 'OBSERVED', nonce: 0x11223344, addr: v6 }],
      ['INTRO_REQ', { type: 'INTRO_REQ', nonce: 7, addr: v4 }],
      ['INTRO', { type: 'INTRO', nonce: 8, peer: v4, you: v6 }],
      ['INTRO_FAIL', { type: 'INTRO_FAIL', nonce: 7, addr: v4 }],
      ['PUNCH (padded to 24 bytes)', { type: 'PUNCH', nonce: 8, padding: 19 }],
      ['PUNCH_ACK', { type: 'PUNCH_ACK', nonce: 8, addr: v6 }],
    ],
    invalid: [
      ['empty', ''],
      ['4 bytes', '01112233'],
      ['PROBE of 23 bytes (no amplification)', '01 11223344' + '00'.repeat(18)],
      ['unknown type 8', '08 11223344' + '00'.repeat(19)],
      ['OBSERVED without an address', '02 11223344'],
      ['OBSERVED, unknown family 5', '02 11223344 05 cb007107 9c41'],
      ['OBSERVED, port 0', '02 11223344 04 cb007107 0000'],
      ['OBSERVED, IPv4 address cut short', '02 11223344 04 cb0071'],
      ['INTRO with one address', '04 00000008 04 cb007107 9c41'],
    ],
  },
  {
    file: 'relay',
    anchor: 'relay-tag-10',
    notes: 'The bytes after the layer tag 10; addresses in the nat-wire encoding. Invalid ones are dropped and counted in dropped_malformed.',
    encode: relay.encodeRelay,
    decode: relay.decodeRelay,
    valid: [
      ['ALLOC', { type: 'ALLOC', nonce: 0x01020304 }],
      ['ALLOC_OK (6 bytes, as the relay sends it)', { type: 'ALLOC_OK', nonce: 0x01020304 }],
      ['ALLOC_REFUSED, full', { type: 'ALLOC_REFUSED', nonce: 0x01020304, reason: 2 }],
      ['DATA to an IPv4 peer, application tag 0', { type: 'DATA', addr: v4, tag: 0, payload: Buffer.from('hello') }],
      ['FWD from an IPv6 peer, tag 3', { type: 'FWD', addr: v6, tag: 3, payload: Buffer.from('0102', 'hex') }],
      ['DATA with an empty payload', { type: 'DATA', addr: v4, tag: 0, payload: Buffer.alloc(0) }],
      ['QUERY', { type: 'QUERY', nonce: 9, addr: v4 }],
      ['QUERY_REPLY, present', { type: 'QUERY_REPLY', nonce: 9, present: true }],
      ['RELEASE', { type: 'RELEASE', nonce: 0x01020304 }],
    ],
    invalid: [
      ['empty', ''],
      ['unknown type 9', '09 01020304'],
      ['ALLOC of 6 bytes', '01 01020304 00'],
      ['RELEASE of 4 bytes', '08 010203'],
      ['ALLOC_OK of 4 bytes', '02 010203'],
      ['DATA without the tag byte', '04 04 cb007107 9c41'],
      ['DATA, port 0', '04 04 cb007107 0000 00 68'],
      ['QUERY without an address', '06 00000009'],
      ['QUERY_REPLY of 5 bytes', '07 00000009'],
    ],
  },
  {
    file: 'tcp-hole-punch',
    anchor: 'tcp-hole-punching-tag-11',
    notes: 'The bytes after the layer tag 11; addresses in the nat-wire encoding; ids are 32-byte node ids. Invalid ones are dropped and counted in dropped_malformed.',
    encode: thp.encodeTcpHolePunch,
    decode: thp.decodeTcpHolePunch,
    valid: [
      ['REQ padded to 96 bytes', { type: 'REQ', nonce: 0x01020304, addr: v4, punchPort: 50001, listenPort: 4001, id: id(1), padding: 96 - (5 + 7 + 4 + 32) }],
      ['OFFER', { type: 'OFFER', nonce: 0x01020304, addr: v4, id: id(1) }],
      ['ACCEPT padded to 96 bytes, no listening port', { type: 'ACCEPT', nonce: 0x01020304, addr: v6, punchPort: 50002, listenPort: 0, id: id(2), padding: 96 - (5 + 19 + 4 + 32) }],
      ['GO to the initiator, with a listen address', { type: 'GO', nonce: 0x01020304, initiator: true, delay: 0, punch: toAddress('203.0.113.9:50002'), listen: toAddress('203.0.113.9:4002'), id: id(2) }],
      ['GO to the other side, no listen address', { type: 'GO', nonce: 0x01020304, initiator: false, delay: 250, punch: toAddress('203.0.113.7:50001'), listen: null, id: id(1) }],
      ['FAIL', { type: 'FAIL', nonce: 0x01020304 }],
    ],
    invalid: [
      ['empty', ''],
      ['4 bytes', '01010203'],
      ['unknown type 6', '06 01020304'],
      ['REQ of 95 bytes (no amplification)', '01 01020304 04 cb007107 9c41 c351 0fa1' + id(1).toString('hex') + '00'.repeat(95 - 48)],
      ['REQ with punch port 0', '01 01020304 04 cb007107 9c41 0000 0fa1' + id(1).toString('hex') + '00'.repeat(96 - 48)],
      ['OFFER with a trailing byte', '02 01020304 04 cb007107 9c41' + id(1).toString('hex') + '00'],
      ['GO with role 2', '04 01020304 02 0000 04 cb007109 c352 00' + id(2).toString('hex')],
      ['GO without the id', '04 01020304 01 0000 04 cb007109 c352 00'],
      ['FAIL of 6 bytes', '05 01020304 00'],
    ],
  },
]

for (const f of formats) {
  const valid = f.valid.map(([name, m]) => {
    const bytes = f.encode(m)
    const d = f.decode(bytes)
    if (d === null) throw new Error(`${f.file}/${name}: does not decode`)
    if (!f.encode(d).equals(bytes)) throw new Error(`${f.file}/${name}: does not round-trip`)
    return { name, hex: bytes.toString('hex'), fields: fields(d) }
  })
  const invalid = f.invalid.map(([name, h]) => {
    const bytes = hex(h)
    if (f.decode(bytes) !== null) throw new Error(`${f.file}/${name}: accepted`)
    return { name, hex: bytes.toString('hex'), error: 'dropped_malformed', outcome: 'dropped and counted in dropped_malformed' }
  })
  const file = { format: f.file, spec: `docs/wire.md#${f.anchor}`, notes: f.notes, valid, invalid }
  writeFileSync(join(root, 'test-vectors', `${f.file}.json`), JSON.stringify(file, null, 2) + '\n')
  console.log(`${f.file}: ${valid.length} valid, ${invalid.length} invalid`)
}
