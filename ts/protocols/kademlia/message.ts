/**
 * Kademlia: decoding a datagram without allocating on the native side. `native.kadParse` validates
 * the message in deccom-core (every record: its identity, whose Ed25519 key the core remembers once
 * checked, and its id = SHA-256 of the identity) and writes where its fields are into a
 * caller-owned layout; the fields are then read here from the datagram itself.
 *
 * Layout (u32 words): 0 kind, 1 request id high, 2 low, 3 truncated, 4 count (NODES records after
 * the sender), 5 target offset, 6 error index (kind 0), 7 flags (bit 0: an IPv6 address is in a
 * record; bit 1: a FIND_NODE from an ephemeral sender); then per record i (0 = the sender) at
 * 8 + 5i: record offset, identity length, UDP address offset, TCP port (0 none), external address
 * offset (0 none). A record's id is at
 * offset + 2, its identity at offset + 36; addresses are the socket address form of docs/wire.md.
 *
 * A message with an IPv6 address falls back to `native.kadDecode` (which formats the addresses).
 * Accessors read the datagram: use them while handling it; what is kept (identities, ids, the
 * target) is copied. A lookup hands the datagram and the layout (`parseLayout`) to the native
 * `KadLookup.onAnswer`, which reads the NODES records where the layout says.
 */
import type { Address } from '../../address'
import { ipv4Address, toAddress } from '../../address'
import { native } from '../../native'
import { Peer } from '../../peer'
import { readAddr } from '../nat-wire'

/** Reasons of malformed messages, indexed by layout word 6 (the core's WireError order). */
const REASONS = ['truncated', 'version', 'unknown_type', 'unknown_flags', 'too_many_nodes', 'trailing_bytes', 'record'] as const
/** 8 header words + 5 per record, up to 1 + 64 records. */
const LAYOUT_WORDS = 8 + 5 * 65
const layout = new Uint32Array(LAYOUT_WORDS)

/**
 * The layout the last `decodeKad` wrote (for `KadLookup.onAnswer`): valid for that message until
 * the next decode, so read it before anything else can decode a datagram.
 */
export function parseLayout(): Uint32Array {
  return layout
}

type NativeDecoded = ReturnType<typeof native.kadDecode>

/** A decoded Kademlia message (kind 0: malformed, `error` says why). */
export interface KadMessage {
  readonly kind: number
  /** The datagram (without the layer tag), for the native readers; valid while it is handled. */
  readonly bytes: Buffer
  readonly requestHi: number
  readonly requestLo: number
  readonly truncated: boolean
  /** FIND_NODE: the sender is ephemeral (not to be added to routing tables). */
  readonly ephemeral: boolean
  /** NODES records after the sender. */
  readonly count: number
  /** FIND_NODE's target (a copy). */
  readonly target: Buffer | null
  /** The records' ids, 32 bytes each, sender first (a copy, made when first read). */
  readonly ids: Buffer | null
  readonly error: string | null
  /**
   * Record `i`'s id and encoded identity, copied out of the message (a Peer that keeps them keeps
   * nothing of the message; the routing table copies them into a buffer of their own).
   */
  peerId(i: number): Buffer
  identity(i: number): Buffer
  /** Record `i`'s UDP address, or null if unusable. */
  address(i: number): Address | null
  /** Record `i`'s external address, or null. */
  external(i: number): Address | null
  /** Record `i`'s TCP port, or null. */
  tcpPort(i: number): number | null
  /** Whether record `i`'s id is `id` (32 bytes). */
  idIs(i: number, id: Buffer): boolean
}

const MALFORMED: Omit<KadMessage, 'error'> = {
  kind: 0,
  bytes: Buffer.alloc(0),
  requestHi: 0,
  requestLo: 0,
  truncated: false,
  ephemeral: false,
  count: 0,
  target: null,
  ids: null,
  peerId: () => Buffer.alloc(32),
  identity: () => Buffer.alloc(0),
  address: () => null,
  external: () => null,
  tcpPort: () => null,
  idIs: () => false,
}

/** Decodes a Kademlia message (without the layer tag); never throws. */
export function decodeKad(data: Buffer): KadMessage {
  // The message read before, if its handling has not ended, keeps its words from here on.
  if (live !== null) {
    live.detach()
    live = null
  }
  const kind = native.kadParse(data, layout)
  if (kind === 0) return { ...MALFORMED, error: REASONS[layout[6]] ?? 'record' }
  if (layout[7] & 1) return new Decoded(native.kadDecode(data), data)
  return (live = new Parsed(kind, data))
}

/** The message last read in place, while it reads the shared layout (see {@link Parsed.detach}). */
let live: Parsed | null = null

/**
 * The handling of `m` ended (the layer's `onMessage` returned): it no longer needs its words
 * copied when the next message is read.
 */
export function doneWith(m: KadMessage): void {
  if (live === m) live = null
}

/**
 * Where the table's `*Into` encoders write (FIND_NODE pads to at most 65,000 bytes; NODES holds at
 * most 65 records of at most 332 bytes). The bytes are copied out before they are sent: a layer
 * below may keep what it is given.
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

/** A PING (or, with `pong`, a PONG): version 1, type, 8-byte request id (docs/wire.md). */
export function encodePing(pong: boolean, hi: number, lo: number): Buffer {
  const b = Buffer.allocUnsafe(10)
  b[0] = 1
  b[1] = pong ? 2 : 1
  b.writeUInt32BE(hi >>> 0, 2)
  b.writeUInt32BE(lo >>> 0, 6)
  return b
}

function ipv4At(data: Buffer, at: number): Address | null {
  if (data[at] !== 4) return null
  try {
    return ipv4Address(data[at + 1]!, data[at + 2]!, data[at + 3]!, data[at + 4]!, (data[at + 5]! << 8) | data[at + 6]!)
  } catch {
    return null
  }
}

/**
 * Copies `n` bytes of `src` from `at` into `dst` at `to`, byte by byte: for the few dozen bytes of
 * an id or an identity this is cheaper than `Buffer.copy`, which makes a typed-array view per call.
 */
function copyBytes(src: Buffer, at: number, dst: Buffer, to: number, n: number): void {
  for (let j = 0; j < n; j++) dst[to + j] = src[at + j]!
}

/** Read in place from the datagram, by the layout kadParse wrote (copied: the next parse reuses it). */
class Parsed implements KadMessage {
  readonly requestHi: number
  readonly requestLo: number
  readonly truncated: boolean
  readonly ephemeral: boolean
  readonly count: number
  readonly target: Buffer | null
  readonly error = null
  readonly bytes: Buffer
  /**
   * The per-record words: the shared layout (from word 8) while this is the message last read;
   * copied (from 0) if another is read before its handling ends ({@link detach}).
   */
  #words: ArrayLike<number> | null
  #base = 8
  #ids: Buffer | null = null
  #copies: Buffer[] | null = null

  constructor(
    readonly kind: number,
    data: Buffer,
  ) {
    this.bytes = data
    this.requestHi = layout[1]
    this.requestLo = layout[2]
    this.truncated = layout[3] !== 0
    this.ephemeral = (layout[7] & 2) !== 0
    this.count = layout[4]
    let target: Buffer | null = null
    if (kind === 3) {
      target = Buffer.allocUnsafe(32)
      copyBytes(data, layout[5], target, 0, 32)
    }
    this.target = target
    this.#words = kind < 3 ? null : layout
  }

  /** Another message is read (the shared layout is overwritten): keep a copy of the words. */
  detach(): void {
    if (this.#words !== layout) return
    const n = 5 * (this.count + 1)
    const own = new Array<number>(n)
    for (let i = 0; i < n; i++) own[i] = layout[8 + i]
    this.#words = own
    this.#base = 0
  }

  /** Word `k` of record `i`'s five (0 offset, 1 identity length, 2 UDP, 3 TCP port, 4 external). */
  #w(i: number, k: number): number {
    return this.#words![this.#base + 5 * i + k]
  }

  get ids(): Buffer | null {
    if (this.#words === null || this.#ids !== null) return this.#ids
    const records = this.count + 1
    const ids = Buffer.allocUnsafe(32 * records)
    for (let i = 0; i < records; i++) copyBytes(this.bytes, this.#w(i, 0) + 2, ids, 32 * i, 32)
    return (this.#ids = ids)
  }

  /** Whether record `i`'s id is `id` (read in place). */
  idIs(i: number, id: Buffer): boolean {
    const at = this.#w(i, 0) + 2
    const d = this.bytes
    for (let j = 0; j < 32; j++) if (d[at + j] !== id[j]) return false
    return true
  }

  peerId(i: number): Buffer {
    return this.#own(i).subarray(0, 32)
  }

  identity(i: number): Buffer {
    return this.#own(i).subarray(32)
  }

  /** Id and identity of record i, copied (from the pool: the routing table keeps its own copy). */
  #own(i: number): Buffer {
    const have = (this.#copies ??= [])[i]
    if (have !== undefined) return have
    const at = this.#w(i, 0)
    const len = this.#w(i, 1)
    const b = Buffer.allocUnsafe(32 + len)
    copyBytes(this.bytes, at + 2, b, 0, 32)
    copyBytes(this.bytes, at + 36, b, 32, len)
    return (this.#copies[i] = b)
  }

  address(i: number): Address | null {
    return ipv4At(this.bytes, this.#w(i, 2))
  }

  external(i: number): Address | null {
    const at = this.#w(i, 4)
    return at === 0 ? null : ipv4At(this.bytes, at)
  }

  tcpPort(i: number): number | null {
    return this.#w(i, 3) || null
  }
}

/** The allocating native decoder's result (messages with IPv6 addresses). */
class Decoded implements KadMessage {
  readonly kind: number
  readonly requestHi: number
  readonly requestLo: number
  readonly truncated: boolean
  readonly ephemeral: boolean
  readonly count: number
  readonly target: Buffer | null
  readonly ids: Buffer | null
  readonly error: string | null
  readonly bytes: Buffer
  readonly #m: NativeDecoded
  #hosts: string[] | null = null
  #externals: string[] | null = null

  constructor(m: NativeDecoded, data: Buffer) {
    this.#m = m
    this.bytes = data
    this.kind = m.kind
    this.requestHi = m.requestHi
    this.requestLo = m.requestLo
    this.truncated = m.truncated
    this.ephemeral = m.ephemeral
    this.count = m.count
    this.target = m.target ?? null
    this.ids = m.ids ?? null
    this.error = m.error ?? null
  }

  peerId(i: number): Buffer {
    return this.ids!.subarray(32 * i, 32 * i + 32)
  }

  idIs(i: number, id: Buffer): boolean {
    return this.ids!.compare(id, 0, 32, 32 * i, 32 * i + 32) === 0
  }

  identity(i: number): Buffer {
    const ends = this.#m.identityEnds!
    return this.#m.identities!.subarray(i === 0 ? 0 : ends[i - 1], ends[i])
  }

  address(i: number): Address | null {
    return wordsAddress((this.#hosts ??= this.#m.hosts?.split(' ') ?? []), i)
  }

  external(i: number): Address | null {
    return wordsAddress((this.#externals ??= this.#m.externals?.split(' ') ?? []), i)
  }

  tcpPort(i: number): number | null {
    return this.#m.tcpPorts?.[i] || null
  }
}

function wordsAddress(words: string[], i: number): Address | null {
  const host = words[2 * i]
  if (!host || host === '-') return null
  try {
    return toAddress(host, Number(words[2 * i + 1]))
  } catch {
    return null
  }
}

/**
 * The peers of encoded peer records back to back (`KadLookup.closestRecords`: records this process
 * decoded and validated), read from their layout (docs/wire.md, "Peer record"); a record whose
 * address this reader does not take is left out.
 */
export function peersOfRecords(bytes: Buffer): Peer[] {
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
    out.push(new Peer(udp[0], id, identity, external ?? null, false, tcpPort || null))
    at = next
  }
  return out
}
