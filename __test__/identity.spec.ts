/**
 * Identity (keys, ids, signatures, key files) and the peer-record codec, through the built package.
 */
import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { DeccomError, ErrorCode, Identity, decodePeerRecord, encodePeerRecord, toAddress } from '../dist/index.js'

const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

/** Runs `f`, which must throw a DeccomError; returns it (fails the test otherwise). */
function deccomError(t: import('ava').ExecutionContext, f: () => unknown, what: string): DeccomError | undefined {
  try {
    f()
  } catch (e) {
    if (!(e instanceof DeccomError)) {
      t.fail(`${what}: threw ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)}, not a DeccomError`)
      return undefined
    }
    return e
  }
  t.fail(`${what}: did not throw`)
  return undefined
}

function tempDir(t: import('ava').ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'deccom-identity-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('generate: id is SHA-256 of the public identity, which is 0x01 + the 32-byte key', (t) => {
  const a = Identity.generate()
  const b = Identity.generate()
  for (const id of [a, b]) {
    t.is(id.publicIdentity.length, 33)
    t.is(id.publicIdentity[0], 0x01)
    t.truthy(id.publicKey)
    t.is(id.publicKey!.length, 32)
    t.true(id.publicIdentity.subarray(1).equals(id.publicKey!))
    t.is(id.id.length, 32)
    t.true(id.id.equals(sha256(id.publicIdentity)))
    t.true(Identity.idOf(id.publicIdentity).equals(id.id))
    t.is(id.idHex, id.id.toString('hex'))
    t.is(id.name, null)
    t.true(id.canSign)
    t.regex(String(id), /^Identity\(ed25519 [0-9a-f]{16}…\)$/)
  }
  t.false(a.id.equals(b.id), 'two generated identities differ')
})

test('fromSeed is deterministic and needs exactly 32 bytes', (t) => {
  const seed = Buffer.alloc(32, 0x2a)
  const a = Identity.fromSeed(seed)
  const b = Identity.fromSeed(new Uint8Array(seed))
  t.true(a.id.equals(b.id))
  t.true(a.publicKey!.equals(b.publicKey!))
  t.true(a.id.equals(sha256(a.publicIdentity)))
  t.false(Identity.fromSeed(Buffer.alloc(32, 0x2b)).id.equals(a.id))
  // Deterministic signatures too (Ed25519).
  t.true(a.sign(Buffer.from('m')).equals(b.sign(Buffer.from('m'))))
  for (const len of [0, 1, 31, 33, 64]) {
    const e = deccomError(t, () => Identity.fromSeed(Buffer.alloc(len, 1)), `seed of ${len} bytes`)
    t.is(e?.code, ErrorCode.BAD_KEY, `seed of ${len} bytes`)
  }
})

test('RFC 8032 test vector 1: the seed gives the documented public key and signature', (t) => {
  const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex')
  const id = Identity.fromSeed(seed)
  t.is(id.publicKey!.toString('hex'), 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a')
  t.is(
    id.sign(Buffer.alloc(0)).toString('hex'),
    'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  )
})

test('fromString: public identity is 0x02 + UTF-8 name, id its SHA-256; it cannot sign', (t) => {
  for (const name of ['alice', 'ü-名前', 'x', 'n'.repeat(255)]) {
    const id = Identity.fromString(name)
    t.is(id.name, name)
    t.is(id.publicKey, null)
    t.false(id.canSign)
    t.true(id.publicIdentity.equals(Buffer.concat([Buffer.from([0x02]), Buffer.from(name, 'utf8')])))
    t.true(id.id.equals(sha256(id.publicIdentity)))
    t.true(Identity.fromString(name).id.equals(id.id), 'deterministic')
  }
  t.false(Identity.fromString('alice').id.equals(Identity.fromString('bob').id))

  const e = deccomError(t, () => Identity.fromString('alice').sign(Buffer.from('m')), 'name identity sign')
  t.is(e?.code, ErrorCode.NO_SECRET_KEY)
  const e2 = deccomError(t, () => Identity.fromString('alice').toKeyFile(), 'name identity toKeyFile')
  t.is(e2?.code, ErrorCode.NO_SECRET_KEY)

  // Invalid names: empty, longer than 255 bytes (the docs disagree on the code: BAD_KEY in
  // native/index.d.ts, BAD_IDENTITY in ts/identity.ts; only the prefix is checked here).
  for (const bad of ['', 'n'.repeat(256), 'é'.repeat(128)]) {
    const e3 = deccomError(t, () => Identity.fromString(bad), `name of ${Buffer.byteLength(bad)} bytes`)
    t.regex(e3?.code ?? '', /^ERR_DECCOM_/)
  }
})

test('sign/verify round trip; a tampered message or signature verifies false', (t) => {
  const id = Identity.generate()
  const msg = Buffer.from('the quick brown fox')
  const sig = id.sign(msg)
  t.is(sig.length, 64)
  t.true(Identity.verify(id.publicKey!, msg, sig))
  t.true(Identity.verify(new Uint8Array(id.publicKey!), new Uint8Array(msg), new Uint8Array(sig)))

  const tampered = Buffer.from(msg)
  tampered[0] ^= 1
  t.false(Identity.verify(id.publicKey!, tampered, sig))
  t.false(Identity.verify(id.publicKey!, Buffer.concat([msg, Buffer.from([0])]), sig))
  const badSig = Buffer.from(sig)
  badSig[10] ^= 0x80
  t.false(Identity.verify(id.publicKey!, msg, badSig))
  t.false(Identity.verify(Identity.generate().publicKey!, msg, sig), 'another key')

  const empty = id.sign(Buffer.alloc(0))
  t.true(Identity.verify(id.publicKey!, Buffer.alloc(0), empty))
  const big = randomBytes(1 << 20)
  t.true(Identity.verify(id.publicKey!, big, id.sign(big)))
})

test('malformed key / signature lengths throw ERR_DECCOM_BAD_KEY / ERR_DECCOM_BAD_SIGNATURE', (t) => {
  const id = Identity.generate()
  const msg = Buffer.from('m')
  const sig = id.sign(msg)
  for (const len of [0, 1, 31, 33, 64]) {
    const e = deccomError(t, () => Identity.verify(Buffer.alloc(len, 9), msg, sig), `key of ${len} bytes`)
    t.is(e?.code, ErrorCode.BAD_KEY, `key of ${len} bytes`)
    t.is(e?.name, 'DeccomError')
  }
  for (const len of [0, 1, 63, 65, 128]) {
    const e = deccomError(t, () => Identity.verify(id.publicKey!, msg, Buffer.alloc(len)), `signature of ${len} bytes`)
    t.is(e?.code, ErrorCode.BAD_SIGNATURE, `signature of ${len} bytes`)
  }
  // The 33-byte public identity is not a key.
  t.is(deccomError(t, () => Identity.verify(id.publicIdentity, msg, sig), 'public identity as key')?.code, ErrorCode.BAD_KEY)
})

test('save/load round trip in a temp dir; the file is mode 0600', (t) => {
  const dir = tempDir(t)
  const id = Identity.generate()
  const path = join(dir, 'node.key')
  id.save(path)
  const back = Identity.load(path)
  t.true(back.id.equals(id.id))
  t.true(back.publicKey!.equals(id.publicKey!))
  const msg = Buffer.from('signed by the loaded key')
  t.true(Identity.verify(id.publicKey!, msg, back.sign(msg)))
  if (process.platform !== 'win32') t.is(statSync(path).mode & 0o777, 0o600)

  // fromKeyFile / toKeyFile agree with the file.
  const text = id.toKeyFile()
  t.regex(text, /^deccom-ed25519-v1\r?\n[0-9a-f]{64}\s*$/)
  t.true(Identity.fromKeyFile(text).id.equals(id.id))

  // Overwriting an existing, world-readable file resets its mode to 0600.
  if (process.platform !== 'win32') {
    const other = join(dir, 'other.key')
    writeFileSync(other, 'x')
    chmodSync(other, 0o644)
    id.save(other)
    t.is(statSync(other).mode & 0o777, 0o600)
    t.true(Identity.load(other).id.equals(id.id))
  }

  // A name identity cannot be saved.
  t.is(deccomError(t, () => Identity.fromString('n').save(join(dir, 'n.key')), 'save name')?.code, ErrorCode.NO_SECRET_KEY)
})

test('loading garbage or a missing file throws ERR_DECCOM_KEY_FILE', (t) => {
  const dir = tempDir(t)
  const cases: Array<[string, string | Buffer]> = [
    ['empty', ''],
    ['text', 'hello world\n'],
    ['header only', 'deccom-ed25519-v1\n'],
    ['short hex', 'deccom-ed25519-v1\n' + 'ab'.repeat(31) + '\n'],
    ['long hex', 'deccom-ed25519-v1\n' + 'ab'.repeat(33) + '\n'],
    ['not hex', 'deccom-ed25519-v1\n' + 'zz'.repeat(32) + '\n'],
    ['wrong header', 'deccom-ed25519-v2\n' + 'ab'.repeat(32) + '\n'],
    ['binary', randomBytes(200)],
    ['invalid utf-8', Buffer.from([0xff, 0xfe, 0xfd, 0x00, 0x80])],
  ]
  for (const [what, content] of cases) {
    const path = join(dir, `${what.replace(/\W/g, '_')}.key`)
    writeFileSync(path, content)
    t.is(deccomError(t, () => Identity.load(path), `load ${what}`)?.code, ErrorCode.KEY_FILE, what)
    if (typeof content === 'string') {
      t.is(deccomError(t, () => Identity.fromKeyFile(content), `fromKeyFile ${what}`)?.code, ErrorCode.KEY_FILE, what)
    }
  }
  t.is(deccomError(t, () => Identity.load(join(dir, 'missing.key')), 'missing file')?.code, ErrorCode.KEY_FILE)
  t.is(deccomError(t, () => Identity.load(dir), 'a directory')?.code, ErrorCode.KEY_FILE)
  // Tolerated variants of a valid file still load (CRLF, upper-case hex, trailing blank lines).
  const id = Identity.generate()
  const hex = id.toKeyFile().split(/\r?\n/)[1]
  t.true(Identity.fromKeyFile(`deccom-ed25519-v1\r\n${hex.toUpperCase()}\r\n\r\n`).id.equals(id.id))
})

// ---------------------------------------------------------------------------------------------
// Peer records
// ---------------------------------------------------------------------------------------------

const identities = [Identity.generate(), Identity.fromString('a'), Identity.fromString('n'.repeat(255))]
const variants = [
  { address: toAddress('127.0.0.1', 4000) },
  { address: toAddress('::1', 65535), tcpPort: 4001 },
  { address: toAddress('10.1.2.3', 1), external: toAddress('203.0.113.7', 50000) },
  { address: toAddress('2001:db8::1', 9000), tcpPort: 0, external: toAddress('2001:db8::ff', 9001) },
  { address: toAddress('192.168.0.1', 5000), tcpPort: 65535, external: toAddress('fe80::1', 1) },
]

function validEncodings(): Buffer[] {
  const out: Buffer[] = []
  for (const id of identities) for (const v of variants) out.push(encodePeerRecord({ publicIdentity: id.publicIdentity, ...v }))
  return out
}

test('encodePeerRecord/decodePeerRecord round trip (IPv4, IPv6, tcpPort, external)', (t) => {
  for (const id of identities) {
    for (const v of variants) {
      const bytes = encodePeerRecord({ publicIdentity: id.publicIdentity, ...v })
      t.true(Buffer.isBuffer(bytes))
      t.is(bytes[0], 1, 'version 1')
      const r = decodePeerRecord(bytes)
      t.true(r.id.equals(id.id), 'the id is SHA-256 of the identity')
      t.true(r.publicIdentity.equals(id.publicIdentity))
      t.is(r.address, v.address, 'decoded addresses are the interned Address objects')
      t.is(r.address.family, v.address.family)
      t.is(r.tcpPort, v.tcpPort)
      t.is(r.external, v.external)
      // Re-encoding gives the same bytes; the passed-in id is ignored (recomputed).
      t.true(encodePeerRecord(r).equals(bytes))
      t.true(encodePeerRecord({ ...r, id: Buffer.alloc(32, 0xee) }).equals(bytes))
      // Decoding reads one record from the front: trailing bytes are ignored.
      t.true(decodePeerRecord(Buffer.concat([bytes, Buffer.from([1, 2, 3])])).id.equals(id.id))
    }
  }
  // Sizes from the documented layout: 36 + L + 7 (IPv4) [+ 2 tcp] [+ 7|19 external].
  const small = encodePeerRecord({ publicIdentity: Identity.fromString('a').publicIdentity, address: toAddress('127.0.0.1', 1) })
  t.is(small.length, 45)
})

test('encodePeerRecord rejects bad inputs with DeccomErrors', (t) => {
  const pub = Identity.generate().publicIdentity
  const cases: Array<[string, () => unknown]> = [
    ['empty identity', () => encodePeerRecord({ publicIdentity: Buffer.alloc(0), address: toAddress('127.0.0.1', 1) })],
    ['unknown kind', () => encodePeerRecord({ publicIdentity: Buffer.from([9, 1, 2]), address: toAddress('127.0.0.1', 1) })],
    ['short key', () => encodePeerRecord({ publicIdentity: pub.subarray(0, 20), address: toAddress('127.0.0.1', 1) })],
    ['tcp port', () => encodePeerRecord({ publicIdentity: pub, address: toAddress('127.0.0.1', 1), tcpPort: 70000 })],
  ]
  for (const [what, f] of cases) t.regex(deccomError(t, f, what)?.code ?? '', /^ERR_DECCOM_/, what)
})

test('every truncation of a valid encoding is rejected with an ERR_DECCOM_ DeccomError', (t) => {
  let checked = 0
  for (const bytes of validEncodings()) {
    for (let len = 0; len < bytes.length; len++) {
      const e = deccomError(t, () => decodePeerRecord(bytes.subarray(0, len)), `truncated to ${len}/${bytes.length}`)
      if (!e) return
      t.is(e.code, ErrorCode.RECORD_TRUNCATED, `truncated to ${len}/${bytes.length}: ${e.message}`)
      checked++
    }
  }
  t.true(checked > 1000)
})

test('2,000 random byte strings and single-byte corruptions are rejected with ERR_DECCOM_ DeccomErrors', (t) => {
  const codes = new Map<string, number>()
  const tally = (e: DeccomError | undefined): void => {
    t.regex(e?.code ?? '', /^ERR_DECCOM_/)
    if (e) codes.set(e.code, (codes.get(e.code) ?? 0) + 1)
  }
  let failures = 0
  for (let i = 0; i < 2000; i++) {
    const len = i < 400 ? i : Math.floor(Math.random() * 400)
    const bytes = randomBytes(len)
    // Half of them start like a version-1 record so they get past the first check.
    if (i % 2 === 0 && len > 0) bytes[0] = 1
    if (i % 4 === 0 && len > 1) bytes[1] &= 3
    const e = deccomError(t, () => decodePeerRecord(bytes), `random ${bytes.toString('hex')}`)
    if (!e) failures++
    tally(e)
    if (failures > 5) return
  }
  // Flipping any single byte of a valid record either still decodes (e.g. a port or address byte)
  // or is rejected with a DeccomError; it never throws anything else.
  let decoded = 0
  for (const valid of validEncodings()) {
    for (let i = 0; i < valid.length; i++) {
      const bytes = Buffer.from(valid)
      bytes[i] ^= 1 << (i % 8)
      try {
        decodePeerRecord(bytes)
        decoded++
      } catch (e) {
        if (!(e instanceof DeccomError)) {
          t.fail(`flip byte ${i} of ${valid.toString('hex')}: ${String(e)}`)
          return
        }
        tally(e)
      }
    }
  }
  t.log(`rejections by code: ${JSON.stringify(Object.fromEntries(codes))}; corruptions still decoding: ${decoded}`)
  for (const code of ['ERR_DECCOM_RECORD_TRUNCATED', 'ERR_DECCOM_RECORD_VERSION', 'ERR_DECCOM_RECORD_ID_MISMATCH']) {
    t.true((codes.get(code) ?? 0) > 0, `some inputs were rejected with ${code}`)
  }
  // Non-byte inputs are rejected too, never crash.
  for (const bad of [undefined, null, 'string', 42, {}]) {
    t.throws(() => decodePeerRecord(bad as unknown as Uint8Array))
  }
})
