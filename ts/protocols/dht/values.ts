/**
 * DHT values: immutable (key = SHA-256(value)) and signed mutable ones (key = SHA-256(public key
 * || salt), BEP 44-style: highest seq wins, compare-and-swap). A put looks the key up (the k
 * closest nodes, and a token from each) and stores the value at each; a get looks it up and
 * returns what the nodes store, verified against the key (by the native decoder).
 */
import type { Address } from '../../address'
import { type AbortOptions, abortable, throwIfAborted } from '../../abort'
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

/** Options of {@link Dht.putMutable}. */
export interface PutMutableOptions {
  /** Sequence number (default: the highest seq found + 1, or 1). */
  seq?: number
  /** Up to 64 bytes: one key can own several values. */
  salt?: Uint8Array
  /** Store only over this seq (compare-and-swap). */
  cas?: number
  /** Aborting it rejects the put with ERR_DECCOM_ABORTED (nodes asked already may store the value). */
  signal?: AbortSignal
}

/** The outcome of {@link Dht.putMutable}: a {@link PutResult} and the seq that was stored. */
export interface PutMutableResult extends PutResult {
  /** The sequence number of the value stored (the one given, or the one chosen). */
  seq: number
}

/** Options of {@link Dht.getMutable}. */
export interface GetMutableOptions {
  /** The salt the value was put with (up to 64 bytes; default empty): part of its key. */
  salt?: Uint8Array
  /** Ignore records with a lower seq. */
  minSeq?: number
  /** Aborting it rejects the get with ERR_DECCOM_ABORTED and stops its lookup. */
  signal?: AbortSignal
}

/** A verified mutable value. */
export interface MutableValue {
  /** The value (at most 1000 bytes). */
  value: Buffer
  /** Its sequence number: the highest found among the nodes that answered. */
  seq: number
  /** The owner's Ed25519 signature over the salt, the seq and the value (64 bytes). */
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

/**
 * Sends `build`'s put to every node in `to` that gave a token; tallies the ACKs. An abort rejects
 * at once; ACKs still on their way are counted but no longer awaited.
 */
export async function putAll(core: DhtCore, to: Address[], build: (hi: number, lo: number, token: Buffer) => Buffer, signal?: AbortSignal): Promise<{ stored: number; refused: Record<string, number> }> {
  throwIfAborted(signal)
  const refused: Record<string, number> = {}
  let stored = 0
  const all = Promise.all(
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
  await (signal ? abortable<unknown>(signal, (resolve, reject) => all.then(resolve, reject)) : all)
  core.count('puts_stored', stored)
  return { stored, refused }
}

function failed(key: Buffer, r: { stored: number; refused: Record<string, number> }): DeccomError {
  const cas = (r.refused.cas_mismatch ?? 0) > 0
  return new DeccomError(cas ? ErrorCode.DHT_CAS_MISMATCH : ErrorCode.DHT_PUT_FAILED, cas ? 'The stored seq is not the compare-and-swap seq' : 'No node stored the value', {
    details: { key: key.toString('hex'), refused: r.refused },
  })
}

export async function putImmutable(core: DhtCore, value: Uint8Array, opts: AbortOptions = {}): Promise<PutResult> {
  const v = checkValue(value)
  const key = native.dhtImmutableKey(v)
  const q = await core.query(KIND_IMMUTABLE, key, () => {}, opts.signal, core.valueAlpha)
  const r = await putAll(core, q.closest.map((n) => n.address), (hi, lo, token) => native.dhtEncodePut(hi, lo, token, v), opts.signal)
  if (r.stored === 0) throw failed(key, r)
  return { key, ...r }
}

export async function getImmutable(core: DhtCore, key: Buffer | string, opts: AbortOptions = {}): Promise<Buffer | null> {
  const k = toKey(key)
  let found: Buffer | null = null
  // The first value whose hash is the key (the decoder checked it) ends the query.
  await core.query(
    KIND_IMMUTABLE,
    k,
    (m) => {
      if (found === null && m.value) found = Buffer.from(m.value)
      return found !== null
    },
    opts.signal,
  )
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
  await core.query(
    KIND_MUTABLE,
    key,
    (m) => {
      if (!m.value || m.seq === null || m.seq === undefined || m.seq < min) return
      if (best === null || m.seq > best.seq) best = { value: Buffer.from(m.value), seq: m.seq, signature: Buffer.from(m.signature!) }
    },
    opts.signal,
    core.valueAlpha,
  )
  return best
}

export async function putMutable(core: DhtCore, identity: Identity, value: Uint8Array, opts: PutMutableOptions = {}): Promise<PutMutableResult> {
  const v = checkValue(value)
  if (!identity.publicKey) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, 'A mutable value needs an Ed25519 identity (a name identity cannot sign)')
  const salt = Buffer.from(opts.salt ?? Buffer.alloc(0))
  if (salt.length > 64) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `A salt is at most 64 bytes, got ${salt.length}`)
  const cas = opts.cas === undefined ? null : checkSeq(opts.cas, 'cas')
  const key = mutableKey(identity.publicKey, salt)
  let highest = -1
  const q = await core.query(
    KIND_MUTABLE,
    key,
    (m) => {
      if (m.value && typeof m.seq === 'number' && m.seq > highest) highest = m.seq
    },
    opts.signal,
    core.valueAlpha,
  )
  const seq = opts.seq === undefined ? highest + 1 || 1 : checkSeq(opts.seq, 'seq')
  const sig = identity.sign(native.dhtMutableMessage(salt, seq, v))
  const r = await putAll(core, q.closest.map((n) => n.address), (hi, lo, token) => native.dhtEncodePutMutable(hi, lo, token, identity.publicKey!, salt, seq, v, sig, cas), opts.signal)
  if (r.stored === 0) throw failed(key, r)
  return { key, seq, ...r }
}
