/**
 * DHT values: immutable (key = SHA-256(value)) and signed mutable ones (key = SHA-256(public key
 * || salt), BEP 44-style: highest seq wins, compare-and-swap). A put looks the key up (the k
 * closest nodes, and a token from each) and stores the value at each; a get looks it up and
 * returns what the nodes store, verified against the key (by the native decoder).
 */
import type { Address } from '../../address'
import { DeccomError, ErrorCode } from '../../errors'
import type { Identity } from '../../identity'
import { native } from '../../native'
import { ACK, type DhtCore, KIND_IMMUTABLE, KIND_MUTABLE, MAX_VALUE, toKey } from './core'

/** The outcome of a put. */
export interface PutResult {
  /** The key the value is stored under. */
  key: Buffer
  /** Nodes that stored it. */
  stored: number
  /** Refusals by reason (`cas_mismatch`, `lower_seq`, `rate_limited`, ...). */
  refused: Record<string, number>
}

export interface PutMutableOptions {
  /** Sequence number (default: the highest seq found + 1, or 1). */
  seq?: number
  /** Up to 64 bytes: one key can own several values. */
  salt?: Uint8Array
  /** Store only over this seq (compare-and-swap). */
  cas?: number
  signal?: AbortSignal
}

export interface GetMutableOptions {
  salt?: Uint8Array
  /** Ignore records with a lower seq. */
  minSeq?: number
  signal?: AbortSignal
}

/** A verified mutable value. */
export interface MutableValue {
  value: Buffer
  seq: number
  signature: Buffer
}

function checkValue(value: Uint8Array): Buffer {
  if (!(value instanceof Uint8Array)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'A value is a Buffer or Uint8Array')
  if (value.length > MAX_VALUE) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `A value is at most ${MAX_VALUE} bytes, got ${value.length}`)
  return Buffer.isBuffer(value) ? value : Buffer.from(value)
}

function checkSeq(seq: number, what: string): number {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `${what} must be an integer 0..2^53-1, got ${seq}`)
  return seq
}

/** Sends `build`'s put to every node in `to` that gave a token; tallies the ACKs. */
export async function putAll(core: DhtCore, to: Address[], build: (hi: number, lo: number, token: Buffer) => Buffer): Promise<{ stored: number; refused: Record<string, number> }> {
  const refused: Record<string, number> = {}
  let stored = 0
  await Promise.all(
    to.map(
      (a) =>
        new Promise<void>((resolve) => {
          const token = core.tokenOf(a)
          if (!token) return resolve()
          core.request(a, ACK, (hi, lo) => build(hi, lo, token), (m) => {
            if (m?.status === 0) stored++
            else if (m) {
              const name = native.dhtStatusName(m.status ?? 255)
              refused[name] = (refused[name] ?? 0) + 1
              core.count(`puts_refused_${name}`)
            }
            resolve()
          })
        }),
    ),
  )
  core.count('puts_stored', stored)
  return { stored, refused }
}

function failed(key: Buffer, r: { stored: number; refused: Record<string, number> }): DeccomError {
  const cas = (r.refused.cas_mismatch ?? 0) > 0
  return new DeccomError(cas ? ErrorCode.DHT_CAS_MISMATCH : ErrorCode.DHT_PUT_FAILED, cas ? 'The stored seq is not the compare-and-swap seq' : 'No node stored the value', {
    details: { key: key.toString('hex'), refused: r.refused },
  })
}

export async function putImmutable(core: DhtCore, value: Uint8Array): Promise<PutResult> {
  const v = checkValue(value)
  const key = native.dhtImmutableKey(v)
  const q = await core.query(KIND_IMMUTABLE, key, () => {})
  const r = await putAll(core, q.closest.map((n) => n.address), (hi, lo, token) => native.dhtEncodePut(hi, lo, token, v))
  if (r.stored === 0) throw failed(key, r)
  return { key, ...r }
}

export async function getImmutable(core: DhtCore, key: Buffer | string): Promise<Buffer | null> {
  const k = toKey(key)
  let found: Buffer | null = null
  // The first value whose hash is the key (the decoder checked it) ends the query.
  await core.query(KIND_IMMUTABLE, k, (m) => {
    if (found === null && m.value) found = Buffer.from(m.value)
    return found !== null
  })
  return found
}

/** The key of a mutable value of `publicKey` (32-byte Ed25519 key) and `salt`. */
export function mutableKey(publicKey: Uint8Array, salt: Uint8Array = Buffer.alloc(0)): Buffer {
  return native.dhtMutableKey(publicKey, salt)
}

export async function getMutable(core: DhtCore, publicKey: Uint8Array, opts: GetMutableOptions = {}): Promise<MutableValue | null> {
  const key = mutableKey(publicKey, opts.salt)
  const min = opts.minSeq ?? 0
  let best: MutableValue | null = null
  await core.query(KIND_MUTABLE, key, (m) => {
    if (!m.value || m.seq === null || m.seq === undefined || m.seq < min) return
    if (best === null || m.seq > best.seq) best = { value: Buffer.from(m.value), seq: m.seq, signature: Buffer.from(m.signature!) }
  })
  return best
}

export async function putMutable(core: DhtCore, identity: Identity, value: Uint8Array, opts: PutMutableOptions = {}): Promise<PutResult & { seq: number }> {
  const v = checkValue(value)
  if (!identity.publicKey) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'A mutable value needs an Ed25519 identity (a name identity cannot sign)')
  const salt = Buffer.from(opts.salt ?? Buffer.alloc(0))
  if (salt.length > 64) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `A salt is at most 64 bytes, got ${salt.length}`)
  const cas = opts.cas === undefined ? null : checkSeq(opts.cas, 'cas')
  const key = mutableKey(identity.publicKey, salt)
  let highest = -1
  const q = await core.query(KIND_MUTABLE, key, (m) => {
    if (m.value && typeof m.seq === 'number' && m.seq > highest) highest = m.seq
  })
  const seq = opts.seq === undefined ? highest + 1 || 1 : checkSeq(opts.seq, 'seq')
  const sig = identity.sign(native.dhtMutableMessage(salt, seq, v))
  const r = await putAll(core, q.closest.map((n) => n.address), (hi, lo, token) => native.dhtEncodePutMutable(hi, lo, token, identity.publicKey!, salt, seq, v, sig, cas))
  if (r.stored === 0) throw failed(key, r)
  return { key, seq, ...r }
}
