#!/usr/bin/env node
// Writes test-vectors/<format>.json for the formats implemented in TypeScript, from the built codecs
// in dist/wire/ (run `npm run build:ts` first). Run once per deliberate format change, then check a
// few fields by hand against docs/wire.md. The Rust formats are written by
// `cargo test -p deccom-core --test vectors -- --ignored generate_test_vectors`.
// Checked by __test__/wire-vectors.spec.ts. tcp.json's valid frames are captured from a running
// TcpTransport with `--capture` (its nonces, addresses and ports then differ on every run: capture
// only with a deliberate format change); without it, they are read back from tcp.json and only the
// invalid streams are rebuilt from them.
import { readFileSync, writeFileSync } from 'node:fs'
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
const mux = require('./dist/wire/mux.js')

/**
 * Decoded message → JSON fields: bytes as hex, addresses as `host:port` / `[host]:port`. The decoded
 * peer records some decoders add (`decoded`) are left out: the vectors hold their bytes.
 */
export function fields(m) {
  const out = {}
  for (const [k, v] of Object.entries(m)) {
    if (k === 'decoded') continue
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
const u16 = (n) => n.toString(16).padStart(4, '0')

const formats = [
  {
    file: 'udp-ping',
    anchor: 'udp-transport-ping-tag-1',
    notes: 'The bytes after the layer tag 1 (UdpTransport/SimTransport) or 7 (KeepAlive): the same format. Invalid ones are dropped and counted in dropped_malformed.',
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
      ['EXCHANGE_REPLY with a trailing byte', '02 01' + u16(C.length) + C.toString('hex') + '00'],
      ['EXCHANGE_REPLY, a record slot one byte longer than its record', '02 01' + u16(C.length + 1) + C.toString('hex') + '00'],
      ['FIND with a trailing byte', '05 00000001 00000002 06' + id(0x03).toString('hex') + u16(A.length) + A.toString('hex') + '00'],
      ['FIND, origin record length running past the end', '05 00000001 00000002 06' + id(0x03).toString('hex') + u16(A.length + 1) + A.toString('hex')],
      ['FOUND with a trailing byte', '06 00000001 00000002' + u16(C.length) + C.toString('hex') + '00'],
      ['FOUND, record length running past the end', '06 00000001 00000002' + u16(C.length + 1) + C.toString('hex')],
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
      ['SAMPLE with a trailing byte', '02 01' + u16(A.length) + A.toString('hex') + '00'],
      ['INTRO with a trailing byte', '03 01' + u16(B.length) + B.toString('hex') + '00'],
      ['INTRO, a record slot one byte longer than its record', '03 01' + u16(B.length + 1) + B.toString('hex') + '00'],
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
      ['HELLO with a trailing byte', '01' + A.toString('hex') + '00'],
      ['HELLO_ACK with a trailing byte', '02' + B.toString('hex') + '00'],
      ['EXIT with a trailing byte', '03 00'],
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
      ['INTRO_REQ without a token yet', { type: 'INTRO_REQ', nonce: 7, token: Buffer.alloc(16), addr: v4 }],
      ['INTRO_REQ echoing a token', { type: 'INTRO_REQ', nonce: 7, token: Buffer.from('00112233445566778899aabbccddeeff', 'hex'), addr: v6 }],
      ['INTRO_CHALLENGE', { type: 'INTRO_CHALLENGE', nonce: 7, token: Buffer.from('00112233445566778899aabbccddeeff', 'hex') }],
      ['INTRO', { type: 'INTRO', nonce: 8, peer: v4, you: v6 }],
      ['INTRO_FAIL', { type: 'INTRO_FAIL', nonce: 7, addr: v4 }],
      ['PUNCH (padded to 24 bytes)', { type: 'PUNCH', nonce: 8, padding: 19 }],
      ['PUNCH_ACK', { type: 'PUNCH_ACK', nonce: 8, addr: v6 }],
      ['INTRO_REQ_NAT from an endpoint-dependent NAT', { type: 'INTRO_REQ_NAT', nonce: 7, token: Buffer.from('00112233445566778899aabbccddeeff', 'hex'), mapping: 'dependent', addr: v4 }],
      ['INTRO_REQ_NAT without a token yet, mapping unknown', { type: 'INTRO_REQ_NAT', nonce: 7, token: Buffer.alloc(16), mapping: 'unknown', addr: v6 }],
      ['INTRO_NAT, the peer is behind an endpoint-dependent NAT', { type: 'INTRO_NAT', nonce: 8, mapping: 'dependent', peer: v4, you: v6 }],
      ['INTRO_NAT, the peer is behind an endpoint-independent NAT', { type: 'INTRO_NAT', nonce: 8, mapping: 'independent', peer: v6, you: v4 }],
    ],
    invalid: [
      ['empty', ''],
      ['4 bytes', '01112233'],
      ['PROBE of 23 bytes (no amplification)', '01 11223344' + '00'.repeat(18)],
      ['unknown type 12', '0c 11223344' + '00'.repeat(19)],
      ['INTRO_REQ_NAT, unknown mapping 3', '0a 00000007' + '00'.repeat(16) + '03 04 cb007107 9c41'],
      ['INTRO_REQ_NAT without the mapping byte', '0a 00000007' + '00'.repeat(16)],
      ['INTRO_REQ_NAT with a trailing byte', '0a 00000007' + '00'.repeat(16) + '02 04 cb007107 9c41 00'],
      ['INTRO_NAT, unknown mapping 3', '0b 00000008 03 04 cb007107 9c41 04 cb007107 9c42'],
      ['INTRO_NAT with one address', '0b 00000008 02 04 cb007107 9c41'],
      ['INTRO_NAT with a trailing byte', '0b 00000008 02 04 cb007107 9c41 04 cb007107 9c42 00'],
      ['retired type 3 (the INTRO_REQ without a token)', '03 00000007 04 cb007107 9c41'],
      ['INTRO_REQ with its token cut short', '08 00000007' + '00'.repeat(15)],
      ['INTRO_CHALLENGE of 20 bytes', '09 00000007' + '00'.repeat(15)],
      ['INTRO_CHALLENGE with a trailing byte', '09 00000007' + '00'.repeat(17)],
      ['OBSERVED without an address', '02 11223344'],
      ['OBSERVED, unknown family 5', '02 11223344 05 cb007107 9c41'],
      ['OBSERVED, port 0', '02 11223344 04 cb007107 0000'],
      ['OBSERVED, IPv4 address cut short', '02 11223344 04 cb0071'],
      ['INTRO with one address', '04 00000008 04 cb007107 9c41'],
      ['OBSERVED with a trailing byte', '02 11223344 04 cb007107 9c41 00'],
      ['INTRO_REQ with a trailing byte', '08 00000007' + '00'.repeat(16) + '04 cb007107 9c41 00'],
      ['INTRO with a trailing byte', '04 00000008 04 cb007107 9c41 06 20010db8000000000000000000000007 9c42 00'],
      ['INTRO_FAIL with a trailing byte', '05 00000007 04 cb007107 9c41 00'],
      ['PUNCH_ACK with a trailing byte', '07 00000008 06 20010db8000000000000000000000007 9c42 00'],
    ],
  },
  {
    file: 'relay',
    anchor: 'relay-tag-10',
    notes: 'The bytes after the layer tag 10; addresses in the nat-wire encoding. Invalid ones are dropped and counted in dropped_malformed.',
    encode: relay.encodeRelay,
    decode: relay.decodeRelay,
    valid: [
      ['ALLOCATE without a token (asks for a CHALLENGE)', { type: 'ALLOCATE', nonce: 0x01020304, token: Buffer.alloc(16) }],
      ['CHALLENGE', { type: 'CHALLENGE', nonce: 0x01020304, token: hex('00112233445566778899aabbccddeeff') }],
      ['ALLOCATE echoing the token', { type: 'ALLOCATE', nonce: 0x01020304, token: hex('00112233445566778899aabbccddeeff') }],
      ['ALLOC_OK', { type: 'ALLOC_OK', nonce: 0x01020304 }],
      ['ALLOC_REFUSED, not a relay', { type: 'ALLOC_REFUSED', nonce: 0x01020304, reason: 1 }],
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
      ['unknown type 11', '0b 01020304'],
      ['ALLOC (type 1, retired: no token)', '01 01020304'],
      ['ALLOCATE of 20 bytes', '09 01020304 00112233445566778899aabbccddee'],
      ['ALLOCATE with a trailing byte', '09 01020304 00112233445566778899aabbccddeeff 00'],
      ['CHALLENGE without the token', '0a 01020304'],
      ['RELEASE of 4 bytes', '08 010203'],
      ['ALLOC_OK of 4 bytes', '02 010203'],
      ['DATA without the tag byte', '04 04 cb007107 9c41'],
      ['DATA, port 0', '04 04 cb007107 0000 00 68'],
      ['QUERY without an address', '06 00000009'],
      ['QUERY_REPLY of 5 bytes', '07 00000009'],
      ['ALLOC_OK with a trailing byte', '02 01020304 00'],
      ['ALLOC_REFUSED with a trailing byte', '03 01020304 02 00'],
      ['ALLOC_REFUSED without a reason', '03 01020304'],
      ['ALLOC_REFUSED, unknown reason 3', '03 01020304 03'],
      ['QUERY with a trailing byte', '06 00000009 04 cb007107 9c41 00'],
      ['QUERY_REPLY, unknown present value 2', '07 00000009 02'],
    ],
  },
  {
    file: 'tcp-hole-punch',
    anchor: 'tcp-hole-punching-tag-11',
    notes: 'The bytes after the layer tag 11; addresses in the nat-wire encoding; ids are 32-byte node ids. Invalid ones are dropped and counted in dropped_malformed.',
    encode: thp.encodeTcpHolePunch,
    decode: thp.decodeTcpHolePunch,
    valid: [
      ['REQ without a token yet, padded to 96 bytes', { type: 'REQ', nonce: 0x01020304, token: Buffer.alloc(16), addr: v4, punchPort: 50001, listenPort: 4001, id: id(1), padding: 96 - (5 + 16 + 7 + 4 + 32) }],
      ['REQ echoing a token, padded to 96 bytes', { type: 'REQ', nonce: 0x01020304, token: Buffer.from('00112233445566778899aabbccddeeff', 'hex'), addr: v4, punchPort: 50001, listenPort: 4001, id: id(1), padding: 96 - (5 + 16 + 7 + 4 + 32) }],
      ['CHALLENGE', { type: 'CHALLENGE', nonce: 0x01020304, token: Buffer.from('00112233445566778899aabbccddeeff', 'hex') }],
      ['OFFER', { type: 'OFFER', nonce: 0x01020304, addr: v4, id: id(1) }],
      ['ACCEPT padded to 96 bytes, no listening port', { type: 'ACCEPT', nonce: 0x01020304, addr: v6, punchPort: 50002, listenPort: 0, id: id(2), padding: 96 - (5 + 19 + 4 + 32) }],
      ['GO to the initiator, with a listen address', { type: 'GO', nonce: 0x01020304, initiator: true, delay: 0, punch: toAddress('203.0.113.9:50002'), listen: toAddress('203.0.113.9:4002'), id: id(2) }],
      ['GO to the other side, no listen address', { type: 'GO', nonce: 0x01020304, initiator: false, delay: 250, punch: toAddress('203.0.113.7:50001'), listen: null, id: id(1) }],
      ['FAIL', { type: 'FAIL', nonce: 0x01020304 }],
    ],
    invalid: [
      ['empty', ''],
      ['4 bytes', '01010203'],
      ['unknown type 8', '08 01020304'],
      ['retired type 1 (the REQ without a token)', '01 01020304 04 cb007107 9c41 c351 0fa1' + id(1).toString('hex') + '00'.repeat(96 - 48)],
      ['REQ of 95 bytes (no amplification)', '06 01020304' + '00'.repeat(16) + '04 cb007107 9c41 c351 0fa1' + id(1).toString('hex') + '00'.repeat(95 - 64)],
      ['REQ with punch port 0', '06 01020304' + '00'.repeat(16) + '04 cb007107 9c41 0000 0fa1' + id(1).toString('hex') + '00'.repeat(96 - 64)],
      ['CHALLENGE of 20 bytes', '07 01020304' + '00'.repeat(15)],
      ['CHALLENGE with a trailing byte', '07 01020304' + '00'.repeat(17)],
      ['OFFER with a trailing byte', '02 01020304 04 cb007107 9c41' + id(1).toString('hex') + '00'],
      ['GO with role 2', '04 01020304 02 0000 04 cb007109 c352 00' + id(2).toString('hex')],
      ['GO without the id', '04 01020304 01 0000 04 cb007109 c352 00'],
      ['FAIL of 6 bytes', '05 01020304 00'],
      ['GO with a trailing byte', '04 01020304 01 0000 04 cb007109 c352 00' + id(2).toString('hex') + '00'],
    ],
  },
  {
    file: 'connection',
    anchor: 'connections-tag-12',
    notes: 'Connection frames: the bytes after the tag 12 of a reliable message or TCP data frame. Offsets above 2^53 - 1 are refused. Invalid ones are dropped and counted in the application layer\'s connections_dropped_malformed.',
    encode: mux.encodeMux,
    decode: mux.decodeMux,
    valid: [
      ['HELLO opening a connection', { type: 'HELLO', nonce: Buffer.from('0102030405060708', 'hex'), echo: Buffer.alloc(8), maxStreams: 1024, maxData: 16 << 20, streamWindow: 4 << 20 }],
      ['HELLO answering one', { type: 'HELLO', nonce: Buffer.from('a1a2a3a4a5a6a7a8', 'hex'), echo: Buffer.from('0102030405060708', 'hex'), maxStreams: 8, maxData: 65536, streamWindow: 1024 }],
      ['DATA opening stream 1 (empty)', { type: 'DATA', stream: 1, offset: 0, fin: false, data: Buffer.alloc(0) }],
      ['DATA on stream 2 at offset 2^40', { type: 'DATA', stream: 2, offset: 2 ** 40, fin: false, data: Buffer.from('hello') }],
      ['DATA with FIN', { type: 'DATA', stream: 3, offset: 5, fin: true, data: Buffer.from('!') }],
      ['MAX_DATA for the connection', { type: 'MAX_DATA', stream: 0, max: 2 ** 53 - 1 }],
      ['MAX_DATA for stream 7', { type: 'MAX_DATA', stream: 7, max: 4 << 20 }],
      ['MAX_STREAMS', { type: 'MAX_STREAMS', max: 1025 }],
      ['RESET, sender had not finished', { type: 'RESET', stream: 9, code: 42, finished: false, finalSize: 1000 }],
      ['RESET after the sender finished', { type: 'RESET', stream: 10, code: 0, finished: true, finalSize: 6 }],
      ['CLOSE, refused', { type: 'CLOSE', code: 2 }],
      ['MESSAGE', { type: 'MESSAGE', data: Buffer.from('ping') }],
      ['MESSAGE, empty', { type: 'MESSAGE', data: Buffer.alloc(0) }],
    ],
    invalid: [
      ['empty', ''],
      ['unknown type 8', '08 00000001'],
      ['unknown type 0', '00'],
      ['HELLO version 2', '01 02 0102030405060708 0000000000000000 00000400 01000000 00400000'],
      ['HELLO with an all-zero nonce', '01 01 0000000000000000 0000000000000000 00000400 01000000 00400000'],
      ['HELLO with a trailing byte', '01 01 0102030405060708 0000000000000000 00000400 01000000 00400000 00'],
      ['HELLO cut short', '01 01 0102030405060708 0000000000000000 00000400 01000000 004000'],
      ['DATA on stream 0', '02 00000000 0000000000000000 00 68'],
      ['DATA with an unknown flag', '02 00000001 0000000000000000 02 68'],
      ['DATA with an offset past 2^53 - 1', '02 00000001 0020000000000000 00'],
      ['DATA header cut short', '02 00000001 00000000000000'],
      ['MAX_DATA with a trailing byte', '03 00000000 0000000000010000 00'],
      ['MAX_DATA past 2^53 - 1', '03 00000000 ffffffffffffffff'],
      ['MAX_STREAMS cut short', '04 000004'],
      ['RESET on stream 0', '05 00000000 0000002a 00 0000000000000000'],
      ['RESET with an unknown flag', '05 00000001 0000002a 02 0000000000000000'],
      ['RESET without its final size (an older layout)', '05 00000001 0000002a'],
      ['CLOSE with a trailing byte', '06 00000000 00'],
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

// ------------------------------------------------------------------------------------------------
// TCP streams: frames captured from a running TcpTransport (with --capture; else the ones in
// tcp.json), plus invalid byte streams (each sent from the start of a fresh connection).
import net from 'node:net'

const { Node, TcpTransport } = require('./dist/index.js')

/** One TCP frame → fields (docs/wire.md#tcp-streams). */
export function tcpFields(f) {
  const len = f.readUInt32BE(0)
  const type = f[4]
  const body = f.subarray(5)
  if (body.length !== len) throw new Error('length mismatch')
  if (type <= 0xef) return { length: len, type: 'DATA', tag: type, data: body.toString('hex') }
  if (type === 0xf0) {
    const n = body.readUInt16BE(86)
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
  const names = { 0xf1: 'AUTH', 0xf2: 'GOAWAY', 0xf3: 'OBSERVED' }
  return { length: len, type: names[type], body: body.toString('hex') }
}

/** Splits a byte stream into frames. */
function frames(buf) {
  const out = []
  for (let o = 0; o + 5 <= buf.length; ) {
    const l = buf.readUInt32BE(o)
    if (o + 5 + l > buf.length) break
    out.push(buf.subarray(o, o + 5 + l))
    o += 5 + l
  }
  return out
}

async function capture() {
  const tcpS = new TcpTransport()
  const s = await Node.create({ host: '127.0.0.1', identity: Identity.fromSeed(Buffer.alloc(32, 5)), stack: [tcpS] })
  const tcpN = new TcpTransport()
  const n = await Node.create({ host: '127.0.0.1', identity: Identity.fromString('tcp-vectors'), stack: [tcpN] })
  const read = (addr, send) =>
    new Promise((resolve) => {
      const chunks = []
      const sock = net.connect(addr.port, addr.host, () => send && sock.write(send))
      sock.on('data', (d) => chunks.push(d))
      setTimeout(() => {
        sock.destroy()
        resolve(Buffer.concat(chunks))
      }, 300)
    })
  // The name node's HELLO (no AUTH flag), then the Ed25519 node's HELLO, OBSERVED and AUTH in
  // answer to it, and a data frame it sends on that connection.
  const helloN = frames(await read(tcpN.tcpAddress()))[0]
  const got = []
  const chunks = []
  await new Promise((resolve) => {
    const sock = net.connect(tcpS.tcpAddress().port, '127.0.0.1', () => sock.write(helloN))
    sock.on('data', (d) => {
      chunks.push(d)
    })
    setTimeout(async () => {
      await tcpS.sendStream(n.identity.id, Buffer.from('hello'), 0)
      await tcpS.sendStream(n.identity.id, Buffer.from('0102', 'hex'), 0xef)
      setTimeout(() => {
        sock.destroy()
        resolve()
      }, 200)
    }, 200)
  })
  got.push(...frames(Buffer.concat(chunks)))
  await s.close()
  await n.close()
  const [helloS, ...rest] = got
  const kind = (t) => rest.find((f) => f[4] === t)
  const data = rest.filter((f) => f[4] <= 0xef)
  return { helloN, helloS, observed: kind(0xf3), auth: kind(0xf1), data }
}

/** The frames of the last capture, read back from tcp.json. */
function recorded() {
  const old = JSON.parse(readFileSync(join(root, 'test-vectors', 'tcp.json'), 'utf8'))
  const by = (prefix) => Buffer.from(old.valid.find((v) => v.name.startsWith(prefix)).hex, 'hex')
  const exact = (name) => Buffer.from(old.valid.find((v) => v.name === name).hex, 'hex')
  return {
    helloN: by('HELLO from a name identity'),
    helloS: by('HELLO from an Ed25519 node'),
    observed: by('OBSERVED'),
    auth: by('AUTH'),
    data: [exact('data frame, stream tag 0'), exact('data frame, stream tag 0xEF')],
  }
}

const c = process.argv.includes('--capture') ? await capture() : recorded()
const frame = (type, body) => {
  const h = Buffer.alloc(5)
  h.writeUInt32BE(body.length, 0)
  h[4] = type
  return Buffer.concat([h, body])
}
const helloBody = c.helloN.subarray(5)
const v2 = Buffer.from(helloBody)
v2[0] = 2
const longer = Buffer.concat([helloBody, Buffer.from([0])])
const unknownFlag = Buffer.from(helloBody)
unknownFlag[1] |= 0x04
const tcpValid = [
  ['HELLO from an Ed25519 node (flags 0x03: AUTH follows, reads OBSERVED)', c.helloS],
  ['HELLO from a name identity (flags 0x02: no AUTH)', c.helloN],
  ['OBSERVED (the raw address the connection came from)', c.observed],
  ['AUTH (64-byte signature)', c.auth],
  ['data frame, stream tag 0', c.data[0]],
  ['data frame, stream tag 0xEF', c.data[1]],
  ['GOAWAY (written from the spec)', frame(0xf2, Buffer.alloc(0))],
]
const tcpInvalid = [
  ['data frame before HELLO', frame(0, Buffer.from('hi')), 'dropped_malformed'],
  ['HELLO version 2', frame(0xf0, v2), 'dropped_malformed'],
  ['HELLO longer than its identity length says', frame(0xf0, longer), 'dropped_malformed'],
  ['HELLO with an unknown flag bit (0x04)', frame(0xf0, unknownFlag), 'dropped_malformed'],
  ['HELLO announced longer than 512 bytes', Buffer.from('00000201f0', 'hex'), 'dropped_malformed'],
  ['unknown control type 0xF4', Buffer.concat([c.helloN, frame(0xf4, Buffer.alloc(0))]), 'dropped_malformed'],
  ['a second HELLO', Buffer.concat([c.helloN, c.helloN]), 'dropped_malformed'],
  ['OBSERVED of 17 bytes', Buffer.concat([c.helloN, frame(0xf3, Buffer.alloc(17, 1))]), 'dropped_malformed'],
  ['GOAWAY with a body', Buffer.concat([c.helloN, frame(0xf2, Buffer.alloc(1))]), 'dropped_malformed'],
  ['AUTH not announced by the HELLO', Buffer.concat([c.helloN, frame(0xf1, Buffer.alloc(64))]), 'dropped_malformed'],
  ['data frame announced above maxFrameSize (default)', Buffer.concat([c.helloN, Buffer.from('ffffffff00', 'hex')]), 'dropped_oversized'],
]
const tcpFile = {
  format: 'tcp',
  spec: 'docs/wire.md#tcp-streams',
  notes:
    'Whole frames ([length u32][type u8][body]). Valid frames were captured from a running TcpTransport (nonces, addresses and ports are those of that run). An invalid vector is a byte stream sent from the start of a fresh connection to a TcpTransport without Noise below: it closes the connection and counts the named counter.',
  valid: tcpValid.map(([name, b]) => ({ name, hex: b.toString('hex'), fields: tcpFields(b) })),
  invalid: tcpInvalid.map(([name, b, counter]) => ({ name, hex: b.toString('hex'), error: counter, outcome: `connection closed, ${counter} counted` })),
}
writeFileSync(join(root, 'test-vectors', 'tcp.json'), JSON.stringify(tcpFile, null, 2) + '\n')
console.log(`tcp: ${tcpFile.valid.length} valid, ${tcpFile.invalid.length} invalid`)
