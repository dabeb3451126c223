/**
 * Kademlia: driving the native node. A datagram goes in with one call (`onDatagram`); what the
 * node wants sent comes back framed in a slab (see {@link SLAB}), with the time of its next timer
 * and whether events wait (see {@link flush}). The node has one timer on the layer's clock, armed
 * at its earliest deadline.
 */
import type { Address } from '../../address'
import { fromRawAddress } from '../../address'
import type { Peer } from '../../peer'
import { peerOfRecord } from './message'
import { type KadState } from './state'

/** Output header: next deadline (f64 LE) at 0, flags at 8 (bit 0 events, bit 1 more), end (u32 LE) at 12. */
const HEADER = 16
/** Per frame: length (u16 LE), 1 = to the source, the 18-byte destination. */
const FRAME = 21
/**
 * The node writes what to send into a slab, each call after the previous one's output, and the
 * datagrams go to the layer below as views of it (no copy): a slab is never written twice, and is
 * freed once every datagram cut from it is. A call starts with at least {@link ROOM} bytes (a new
 * slab when less is left), which holds what one datagram or timer makes; more (a join through
 * dozens of bootstrap addresses) waits in the node and follows, in order, before its events.
 * Calls nest (a layer below that delivers synchronously, a loopback in a test): each reserves its
 * output before it sends. A frame names its destination; one to the source of the datagram being
 * handled says so, and goes to the caller's Address of it.
 */
const SLAB = 256 * 1024
const ROOM = 66 * 1024
let slab = Buffer.allocUnsafeSlow(SLAB)
let used = 0
/** Where the node writes an event (a record is at most 332 bytes). */
const ev = Buffer.alloc(1024)

/** The offset where the next call writes (in {@link slab}, which it may replace). */
function room(fresh = false): number {
  if (fresh || SLAB - used < ROOM) {
    slab = Buffer.allocUnsafeSlow(SLAB)
    used = 0
  }
  return used
}

/** Reserves the output a call wrote (from `at` up to `end`) and sends it (see {@link flush}). */
function took(s: KadState, at: number, end: number, source: Address | null): void {
  used = (end + 7) & ~7
  flush(s, at, end, source)
}

/**
 * A Kademlia datagram from `from`: `source` is a Peer when an authenticating layer below proved
 * the sender's id.
 */
export function deliver(s: KadState, source: Address | Peer, from: Address, data: Buffer): void {
  refreshOwnRecord(s)
  const proven = source === from ? null : (source as Peer).id
  const at = room()
  took(s, at, s.table!.onDatagram(from.raw, data, proven, s.clock.now(), slab, at), from)
}

/** Sends what the node has waiting (after a call that may send: a lookup started, an approval). */
export function drainOut(s: KadState): void {
  if (!s.table) return
  // In a simulator's native lane, the lane sends it (as it does after a datagram).
  if (s.lane !== null) {
    if (s.lane.kick(s.clock.now())) events(s)
    return
  }
  const at = room()
  took(s, at, s.table.drain(slab, at), null)
}

/**
 * Sends the frames a call wrote into the slab from `at` (up to `end`; a frame to the source goes
 * to `source`) and those still waiting in the node, in order; then re-arms the node's timer and
 * handles the events waiting.
 */
function flush(s: KadState, at: number, end: number, source: Address | null): void {
  let out = slab
  for (;;) {
    let i = at + HEADER
    while (i < end) {
      const len = out[i]! | (out[i + 1]! << 8)
      const to = out[i + 2] === 1 && source !== null ? source : fromRawAddress(out.subarray(i + 3, i + FRAME))
      s.sendControl(to, out.subarray(i + FRAME, i + FRAME + len))
      i += FRAME + len
    }
    if (!(out[at + 8]! & 2) || !s.table) break
    // More waits: into a new slab when nothing fitted in this one's rest.
    const fresh = end === at + HEADER
    at = room(fresh)
    end = s.table.drain(slab, at)
    used = (end + 7) & ~7
    out = slab
  }
  arm(s, out.readDoubleLE(at))
  if (out[at + 8]! & 1) events(s)
}

/**
 * Arms the node's timer at `at` (ms on the layer's clock; below 0: none), unless it fires earlier.
 * In a simulator's native lane, the lane keeps the node's timer.
 */
function arm(s: KadState, at: number): void {
  if (s.lane !== null) return s.lane.arm(at, s.clock.now())
  if (at < 0 || at >= s.timerAt) return
  s.clock.clearTimeout(s.timer ?? undefined)
  s.timerAt = at
  s.timer = s.clock.setTimeout(s.timerTick, Math.max(0, at - s.clock.now()))
}

/** The node's timer fired: its due timers run; it says when the next one is. */
export function onTimer(s: KadState): void {
  s.timer = null
  s.timerAt = Infinity
  if (!s.table) return
  refreshOwnRecord(s)
  const at = room()
  took(s, at, s.table.onTimer(s.clock.now(), slab, at), null)
}

/** The node's events, in order (also when a simulator's native lane hands them over). */
export function events(s: KadState): void {
  for (;;) {
    const table = s.table
    if (!table) return
    const kind = table.pollEvent(ev)
    if (kind === 0) return
    const n = ev.readUInt32LE(0)
    const record = ev.subarray(8, 8 + ev.readUInt32LE(4))
    switch (kind) {
      case 1:
      case 2: {
        const peer = peerOfRecord(record)
        if (peer) s.onPeer(kind === 1 ? 'connected' : 'disconnected', peer)
        break
      }
      case 3:
        s.onLookupDone(n)
        break
      case 4: {
        const run = s.runs.get(n)
        const peer = run?.onClaim ? peerOfRecord(record) : null
        if (peer) {
          try {
            run!.onClaim!(peer)
          } catch {
            s.count('candidate_callback_errors')
          }
        }
        break
      }
      case 5:
        s.onApprove(Buffer.from(record))
        break
      case 6:
      case 7:
      case 8:
        s.onJoin(kind, n)
        break
    }
  }
}

/** Puts the external address the layers below agree on (if any, and not our own) into our record. */
export function refreshOwnRecord(s: KadState): void {
  if (!s.hasExternal) return
  const found = s.lower.externalAddress() as Address | null | undefined
  const ext = found && found.key !== s.self.key ? found : null
  if (ext?.key === s.ownExternal?.key || !s.table) return
  s.ownExternal = ext
  s.table.setOwnExternal(ext ? ext.raw : null)
  s.count('own_external_updates')
}
