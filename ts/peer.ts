/** Peers and peer records. */
import type { Address } from './address'
import { toAddress } from './address'
import { DeccomError, ErrorCode, fromNative } from './errors'
import { native } from './native'

/**
 * A remote node as the stack knows it. `id` and `publicIdentity` are null until a layer that
 * authenticates or discovers peers (Noise, Kademlia, ...) has learned them; `address` is always set.
 * `external` is the external (NAT-mapped) address the peer announced in its record, if any: where
 * others can reach or punch it when `address` (as the node that told us saw it) is a private one.
 * Sending to a Peer with an id through a stack with an authenticating layer (Noise in encrypt or
 * sign mode) succeeds only with a session that authenticated that id (see `Node.send`).
 */
export class Peer {
  constructor(
    /** Where the peer's datagrams come from (where it is sent to). */
    readonly address: Address,
    /** The 32-byte node id (the hash of the public identity), when a layer learned it. */
    readonly id: Buffer | null = null,
    /** The public identity (an Ed25519 public key, or a name identity's bytes), when known. */
    readonly publicIdentity: Buffer | null = null,
    /** The external (NAT-mapped) address the peer announced in its record, if any. */
    readonly external: Address | null = null,
    /**
     * True when `id` is known to be the node at `address`: a Noise handshake there authenticated
     * it, or (in a stack without an authenticating layer) the node answered there under that id.
     * A peer named only by third parties (an unverified discovery record) has `verified` false.
     */
    readonly verified: boolean = false,
    /**
     * The TCP port the peer listens on (same IP as `address`), when its record announced one: a
     * stack with a TcpTransport can `connect(peer, { transport: 'tcp' })` to it.
     */
    readonly tcpPort: number | null = null,
  ) {}

  /** `Peer(<first 16 hex digits of the id>… @ host:port)`, or `Peer(host:port)` without an id. */
  toString(): string {
    return this.id ? `Peer(${this.id.toString('hex').slice(0, 16)}… @ ${this.address.key})` : `Peer(${this.address.key})`
  }
}

/** A decoded peer record (see deccom-core `wire::peer_record` for the byte layout). */
export interface PeerRecord {
  /** The node id: the hash of `publicIdentity`. */
  id: Buffer
  /** The public identity (Ed25519 public key or name identity). */
  publicIdentity: Buffer
  /** The UDP address the record announces. */
  address: Address
  /** The TCP port the node listens on, same IP as `address`, if it has one. */
  tcpPort?: number
  /** The node's external (NAT-mapped) address, if it knows it. */
  external?: Address
}

/** Encodes a peer record; the id is recomputed from the identity. @throws ERR_DECCOM_INVALID_ADDRESS, ERR_DECCOM_BAD_IDENTITY */
export function encodePeerRecord(r: Omit<PeerRecord, 'id'> & { id?: Buffer }): Buffer {
  try {
    return native.encodePeerRecord({
      id: r.id ?? Buffer.alloc(32),
      identity: Buffer.from(r.publicIdentity),
      host: r.address.host,
      port: r.address.port,
      tcpPort: r.tcpPort,
      externalHost: r.external?.host,
      externalPort: r.external?.port,
    })
  } catch (e) {
    throw fromNative(e)
  }
}

/** Decodes a peer record; any malformed input throws a DeccomError with an ERR_DECCOM_RECORD_* code. */
export function decodePeerRecord(bytes: Uint8Array): PeerRecord {
  return decodePeerRecordPrefix(bytes).record
}

/** @internal Decodes the peer record at the start of `bytes`, and how many bytes it took. */
export function decodePeerRecordPrefix(bytes: Uint8Array): { record: PeerRecord; length: number } {
  if (!(bytes instanceof Uint8Array)) {
    throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `decodePeerRecord takes a Uint8Array or Buffer, got ${bytes === null ? 'null' : typeof bytes}`)
  }
  let o
  try {
    o = native.decodePeerRecord(bytes)
  } catch (e) {
    throw fromNative(e)
  }
  const rec: PeerRecord = { id: o.id, publicIdentity: o.identity, address: toAddress(o.host, o.port) }
  if (o.tcpPort != null) rec.tcpPort = o.tcpPort
  if (o.externalHost != null && o.externalPort != null) rec.external = toAddress(o.externalHost, o.externalPort)
  return { record: rec, length: o.length ?? bytes.length }
}
