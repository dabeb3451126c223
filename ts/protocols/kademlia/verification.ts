/**
 * Kademlia: the routing table. FIND_NODE is answered (never larger than the request to an
 * unverified address); a peer enters the table only with a verified address and after approval.
 */
import type { Address } from '../../address'
import { Peer } from '../../peer'
import { type Entry, type KadEvent, type KadState, type NativeMessage, MAX_APPROVING, MAX_VERIFYING, externalAt, identityAt, tcpPortAt } from './state'
import { ping, refreshOwnRecord } from './rpc'
import { copyOut, encodeScratch } from './message'
import { sameId } from './id-map'

/** `KadTable.answer`: the FIND_NODE's record is our own id; over the reply rate (nothing sent). */
export const ANSWER_SELF = -1
export const ANSWER_REPLY_RATE = -2

/**
 * Answers a PING or FIND_NODE `data` from `from` in one native call (`KadTable.answer`: the reply
 * rate for an address nobody validated, the answer written into the scratch buffer, the requester
 * remembered as having verified us). `proven`: the sender proved the id its record names (a PING:
 * an authenticated session). Returns the call's code: below 0 nothing to send (see the constants
 * above), else twice the answer's length, plus 1 when the address is validated.
 */
export function answer(s: KadState, from: Address, data: Buffer, proven: boolean): number {
  return s.table!.answer(from.raw, data, proven, s.byAddr.has(from.key), s.clock.now(), encodeScratch)
}

/**
 * A FIND_NODE `data` (decoded: `m`) from `from`, answered (never larger than the query to an
 * unverified address: with the verification PING below, within its size). `proven`: an
 * authenticating layer below proved that the sender holds the id its record names (so its address
 * is validated and the record is its own).
 */
export function onFindNode(s: KadState, from: Address, data: Buffer, m: NativeMessage, proven = false): void {
  // Our record goes into the answer: its external address first.
  refreshOwnRecord(s)
  const r = answer(s, from, data, proven)
  if (r === ANSWER_SELF) return s.count('dropped_self')
  s.count('find_node_received')
  if (proven) s.count('find_node_authenticated')
  if (r === ANSWER_REPLY_RATE) return s.count('dropped_reply_rate')
  if (r < 0) return s.count('dropped_malformed')
  const verified = (r & 1) === 1
  const len = r >>> 1
  if (len === 0) {
    s.count('dropped_amplification')
  } else {
    s.count('nodes_sent')
    if (!verified) s.count('nodes_sent_unverified')
    s.sendControl(from, copyOut(len))
  }
  // An ephemeral requester is answered, never added (nor verified for the table).
  if (m.ephemeral) return s.count('find_node_ephemeral')
  const known = s.byId.get(m.ids!, 0)
  const ext = externalAt(m, 0)
  if (known !== undefined && (known.inTable || verified) && sameRecord(known, from, ext)) return seen(s, known)
  const peer = new Peer(from, m.peerId(0), identityAt(m, 0), ext, false, tcpPortAt(m, 0))
  if (known?.inTable || verified) consider(s, peer)
  // Verifying its address serves only the table: not when its bucket is full of fresh entries.
  else if (s.table!.wouldAdmit(peer.id!, s.clock.now())) verify(s, peer)
  else s.count('verify_skipped_full')
}

/** Any datagram from a table entry's address counts as a sign of life. */
export function alive(s: KadState, from: Address): void {
  const e = s.byAddr.get(from.key)
  if (e && s.table) {
    e.failures = 0
    s.table.touch(e.peer.id!, s.clock.now())
  }
}

/** Ping an unknown requester; consider it once it answers (its address is then verified). */
export function verify(s: KadState, peer: Peer): void {
  const addr = peer.address
  if (s.verifying.has(addr.key)) return
  if (s.verifying.size >= MAX_VERIFYING) return s.count('dropped_verify_busy')
  s.verifying.add(addr.key)
  ping(s, addr, (alive) => {
    s.verifying.delete(addr.key)
    if (alive && s.running) consider(s, peer)
  })
}

/**
 * Whether a known entry's peer, heard from at `addr` announcing `ext`, needs nothing but
 * {@link seen}: consider() replaces the peer only when its address is the same and the external
 * address changed.
 */
export function sameRecord(known: Entry, addr: Address, ext: Address | null): boolean {
  return known.peer.address.key !== addr.key || ext?.key === known.peer.external?.key
}

/** A known entry answered or asked: no failures, touched (in the table) or inserted again. */
export function seen(s: KadState, known: Entry): void {
  known.failures = 0
  if (known.inTable) s.table!.touch(known.peer.id!, s.clock.now())
  else insert(s, known)
}

/** A verified peer: touch it, or ask for approval and insert it. */
export function consider(s: KadState, peer: Peer): void {
  if (sameId(s.selfId, peer.id!, 0) || !s.table) return
  const known = s.byId.get(peer.id!)
  if (known) {
    if (!sameRecord(known, peer.address, peer.external)) {
      // It announced another external address: serve the new one (insert replaces the record).
      known.failures = 0
      known.peer = kept(peer)
      known.id = known.peer.id!
      if (known.inTable) {
        s.table.insert(known.handle, peer.publicIdentity!, peer.address.raw, s.clock.now(), peer.external?.raw ?? null, peer.tcpPort)
        return
      }
    }
    return seen(s, known)
  }
  const approver = s.approver
  if (approver === null) return admit(s, peer)
  const hex = peer.id!.toString('hex')
  if (s.approving.has(hex)) return
  let r: boolean | Promise<boolean>
  try {
    r = approver.approveConnection(peer)
  } catch {
    return s.count('approval_errors')
  }
  if (typeof r === 'boolean') {
    if (r) admit(s, peer)
    else s.count('rejected_by_approval')
    return
  }
  if (s.approving.size >= MAX_APPROVING) return s.count('dropped_approval_busy')
  s.approving.add(hex)
  Promise.resolve(r).then(
    (ok) => {
      s.approving.delete(hex)
      if (!s.running) return
      if (ok) admit(s, peer)
      else s.count('rejected_by_approval')
    },
    () => {
      s.approving.delete(hex)
      s.count('approval_errors')
    },
  )
}

export function admit(s: KadState, peer: Peer): void {
  if (s.byId.has(peer.id!)) return consider(s, peer)
  const handle = s.free.pop() ?? s.entries.length
  const own = kept(peer)
  const e: Entry = { handle, id: own.id!, peer: own, failures: 0, inTable: false }
  s.entries[handle] = e
  s.byId.set(e)
  insert(s, e)
}

/**
 * Entries' ids and identities are copied into slabs of their own: not the shared pool (whose 8 KiB
 * slabs the datagrams fill: one kept slice would hold one), and not an ArrayBuffer each (each
 * allocation of one counts as external memory and, in a large simulation, drives the collector).
 * A slab holds about 60 entries (Ed25519 identities) and lives while one of them does.
 */
const SLAB = 4096
const slabs = new WeakSet<ArrayBufferLike>()
let slab = newSlab()
let slabUsed = 0

function newSlab(): Buffer {
  const b = Buffer.allocUnsafeSlow(SLAB)
  slabs.add(b.buffer)
  return b
}

/** The peer as an entry (in the table or a replacement cache) keeps it (see {@link SLAB}). */
function kept(peer: Peer): Peer {
  const id = peer.id!
  const identity = peer.publicIdentity!
  if (slabs.has(id.buffer) && identity.buffer === id.buffer && identity.byteOffset === id.byteOffset + 32) return peer
  const n = 32 + identity.length
  let own: Buffer
  if (n > SLAB / 8) {
    own = Buffer.allocUnsafeSlow(n)
  } else {
    if (slabUsed + n > SLAB) {
      slab = newSlab()
      slabUsed = 0
    }
    own = slab.subarray(slabUsed, slabUsed + n)
    slabUsed += n
  }
  id.copy(own, 0)
  identity.copy(own, 32)
  return new Peer(peer.address, own.subarray(0, 32), own.subarray(32), peer.external, peer.verified, peer.tcpPort)
}

export function insert(s: KadState, e: Entry): void {
  let r
  try {
    r = s.table!.insert(e.handle, e.peer.publicIdentity!, e.peer.address.raw, s.clock.now(), e.peer.external?.raw ?? null, e.peer.tcpPort)
  } catch {
    s.count('dropped_bad_record')
    return release(s, e)
  }
  switch (r.result) {
    case 0:
      entered(s, e)
      break
    case 2: {
      s.count('bucket_full')
      const old = r.toPing == null ? undefined : s.entries[r.toPing]
      if (old) {
        s.count('eviction_pings')
        ping(s, old.peer.address, (alive) => {
          if (!s.table || s.entries[old.handle] !== old) return
          const ev = s.table.onPingResult(old.peer.id!, alive, s.clock.now())
          if (ev) evicted(s, ev)
        })
      }
      break
    }
    case 3:
      s.count('bucket_full')
      break
    case 4:
      release(s, e)
      break
  }
}

export function entered(s: KadState, e: Entry): void {
  e.inTable = true
  e.failures = 0
  s.byAddr.set(e.peer.address.key, e)
  s.count('peers_added')
  emit(s, 'connected', e.peer)
}

export function evicted(s: KadState, ev: { removed: number; promoted?: number | null }): void {
  const r = s.entries[ev.removed]
  if (r) {
    if (s.byAddr.get(r.peer.address.key) === r) s.byAddr.delete(r.peer.address.key)
    r.inTable = false
    release(s, r)
    s.count('peers_removed')
    emit(s, 'disconnected', r.peer)
  }
  const p = ev.promoted == null ? undefined : s.entries[ev.promoted]
  if (p) entered(s, p)
}

export function release(s: KadState, e: Entry): void {
  if (s.entries[e.handle] !== e) return
  s.entries[e.handle] = undefined
  s.free.push(e.handle)
  if (s.byId.get(e.id) === e) s.byId.delete(e.id)
}

/** A table entry did not answer a query: remove it after `maxFailures` in a row. */
export function failed(s: KadState, id: Buffer): void {
  const e = s.byId.get(id)
  if (!e?.inTable || !s.table) return
  if (++e.failures < s.maxFailures) return
  const ev = s.table.remove(e.peer.id!)
  if (ev) evicted(s, ev)
}

export function emit(s: KadState, event: KadEvent, peer: Peer): void {
  if (event === 'connected') s.upper.onConnected(peer)
  else s.upper.onDisconnected(peer)
  const set = s.listeners.get(event)
  if (set) {
    for (const fn of set) {
      try {
        fn(peer)
      } catch {
        s.count('listener_errors')
      }
    }
  }
}

/** Forget handles the table no longer holds (replacement-cache entries that fell out). */
export function sweep(s: KadState): void {
  if (!s.table || s.byId.size < 2 * s.table.size + 1024) return
  const live = new Set(s.table.handles())
  for (const e of [...s.byId.values()]) if (!live.has(e.handle) && !e.inTable) release(s, e)
}
