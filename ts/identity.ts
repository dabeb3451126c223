/**
 * Node identity: an Ed25519 key pair (or a plain name, for tests). The node id is the SHA-256 of
 * the encoded public identity (kind byte 0x01 + 32-byte key, or 0x02 + UTF-8 name). Keys live in
 * Rust; the secret leaves it only through {@link Identity.save} / {@link Identity.toKeyFile}.
 */
import { fromNative } from './errors'
import { native } from './native'

type NativeIdentity = InstanceType<typeof native.NativeIdentity>

function call<T>(f: () => T): T {
  try {
    return f()
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * A node's identity: an Ed25519 key pair ({@link Identity.generate}, {@link Identity.fromSeed},
 * {@link Identity.load}) or a name identity for tests ({@link Identity.fromString}). Its `id` is the
 * node id others find and authenticate it by.
 */
export class Identity {
  /** 32-byte node id. */
  readonly id: Buffer
  /** The id in hex. */
  readonly idHex: string
  /** Encoded public identity (what peers hash to get the id). */
  readonly publicIdentity: Buffer
  /** Raw Ed25519 public key, or null for a name identity. */
  readonly publicKey: Buffer | null
  /** The name of a name identity, or null. */
  readonly name: string | null
  /** @internal */
  readonly native: NativeIdentity

  private constructor(n: NativeIdentity) {
    this.native = n
    this.id = n.id
    this.idHex = this.id.toString('hex')
    this.publicIdentity = n.publicIdentity
    this.publicKey = n.publicKey
    this.name = n.name
  }

  /** A new random Ed25519 key pair. */
  static generate(): Identity {
    return new Identity(call(() => native.NativeIdentity.generate()))
  }

  /** A key pair from a 32-byte seed (deterministic). @throws ERR_DECCOM_BAD_KEY */
  static fromSeed(seed: Uint8Array): Identity {
    return new Identity(call(() => native.NativeIdentity.fromSeed(seed)))
  }

  /** A name identity, for tests and small known groups; it cannot sign. @throws ERR_DECCOM_BAD_IDENTITY */
  static fromString(name: string): Identity {
    return new Identity(call(() => native.NativeIdentity.fromName(name)))
  }

  /** Reads a key file written by {@link save}. @throws ERR_DECCOM_KEY_FILE */
  static load(path: string): Identity {
    return new Identity(call(() => native.NativeIdentity.load(path)))
  }

  /** Parses key file text. @throws ERR_DECCOM_KEY_FILE */
  static fromKeyFile(text: string): Identity {
    return new Identity(call(() => native.NativeIdentity.fromKeyFile(text)))
  }

  /** Verifies an Ed25519 signature. @throws ERR_DECCOM_BAD_KEY / ERR_DECCOM_BAD_SIGNATURE on malformed inputs */
  static verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    return call(() => native.verify(publicKey, message, signature))
  }

  /** The node id of an encoded public identity. */
  static idOf(publicIdentity: Uint8Array): Buffer {
    return native.nodeId(publicIdentity)
  }

  /** True for a key pair (a name identity cannot sign). */
  get canSign(): boolean {
    return this.publicKey !== null
  }

  /** Writes the key file, mode 0600. @throws ERR_DECCOM_NO_SECRET_KEY / ERR_DECCOM_KEY_FILE */
  save(path: string): void {
    call(() => this.native.save(path))
  }

  /** The key file text. Keep it secret. @throws ERR_DECCOM_NO_SECRET_KEY */
  toKeyFile(): string {
    return call(() => this.native.toKeyFile())
  }

  /** A 64-byte Ed25519 signature. @throws ERR_DECCOM_NO_SECRET_KEY */
  sign(message: Uint8Array): Buffer {
    return call(() => this.native.sign(message))
  }

  /** `Identity(ed25519 <first 16 hex digits of the id>…)` or `Identity("name" …)`; never the secret. */
  toString(): string {
    return `Identity(${this.name !== null ? JSON.stringify(this.name) : 'ed25519'} ${this.idHex.slice(0, 16)}…)`
  }
}
