/**
 * Kademlia: Peers of the encoded peer records the native node reports (docs/wire.md, "Peer
 * record"), and copies of what native encoders write (the DHT's messages), cut from slabs.
 */
import type { Address } from '../../address'
import { Peer } from '../../peer'
import { readAddr } from '../nat-wire'

/**
 * Where native encoders write (the DHT's messages). The bytes are copied out before they are
 * sent: a layer below may keep what it is given.
 */
export const encodeScratch = Buffer.alloc(65_536)

/**
 * Outgoing copies are cut from slabs of this size rather than from Node's 8 KiB buffer pool: a
 * NODES answer or a padded FIND_NODE takes about 1.2 KB, so the pool needed a new ArrayBuffer
 * (external memory, swept by the collector) every six or so datagrams. The copies are short-lived
 * (the layer below copies or sends them; one that holds them, e.g. a delay, for as long as it
 * delays): a slab is freed once all of its copies are.
 */
const OUT_SLAB = 65_536
let outSlab = Buffer.allocUnsafeSlow(OUT_SLAB)
let outUsed = 0

/** The first `len` bytes of {@link encodeScratch}, copied out to be sent (see {@link OUT_SLAB}). */
export function copyOut(len: number): Buffer {
  if (len > OUT_SLAB / 8) return Buffer.from(encodeScratch.subarray(0, len))
  if (outUsed + len > OUT_SLAB) {
    outSlab = Buffer.allocUnsafeSlow(OUT_SLAB)
    outUsed = 0
  }
  const b = outSlab.subarray(outUsed, outUsed + len)
  encodeScratch.copy(b, 0, 0, len)
  outUsed = (outUsed + len + 7) & ~7
  return b
}

/**
 * The peers of encoded peer records back to back (what the native node reports: records this
 * process encoded or decoded and validated), read from their layout; a record whose address this
 * reader does not take ends the list. `verified`: the Peers' flag (see `Peer.verified`).
 */
export function peersOfRecords(bytes: Uint8Array, verified = false): Peer[] {
  const out: Peer[] = []
  let at = 0
  while (at + 36 <= bytes.length) {
    const flags = bytes[at + 1]!
    const idLen = (bytes[at + 34]! << 8) | bytes[at + 35]!
    const id = Buffer.from(bytes.subarray(at + 2, at + 34))
    const identity = Buffer.from(bytes.subarray(at + 36, at + 36 + idLen))
    const udp = readAddr(bytes, at + 36 + idLen)
    if (udp === null) break
    let next = udp[1]
    let tcpPort: number | undefined
    if (flags & 1) {
      tcpPort = (bytes[next]! << 8) | bytes[next + 1]!
      next += 2
    }
    let external: Address | undefined
    if (flags & 2) {
      const ext = readAddr(bytes, next)
      if (ext === null) break
      external = ext[0]
      next = ext[1]
    }
    out.push(new Peer(udp[0], id, identity, external ?? null, verified, tcpPort || null))
    at = next
  }
  return out
}

/** The Peer of one encoded record, or null (see {@link peersOfRecords}). */
export function peerOfRecord(bytes: Uint8Array, verified = false): Peer | null {
  return peersOfRecords(bytes, verified)[0] ?? null
}
