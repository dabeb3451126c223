/**
 * Kademlia: driving the native node. A datagram goes in with one call (`onDatagram`); what the
 * node wants sent comes back in {@link KadState}'s output buffer, framed, with the time of its
 * next timer and whether events wait (see {@link flush}). The node has one timer on the layer's
 * clock, armed at its earliest deadline.
 */
import type { Address } from '../../address'
import { fromRawAddress } from '../../address'
import type { Peer } from '../../peer'
import { copyOf, peerOfRecord } from './message'
import { approve, emit } from './peers'
import { type KadState } from './state'
import { lookupDone } from './lookups'

/** Output header: next deadline (f64 LE) at 0, flags at 8 (bit 0 events, bit 1 more), end (u32 LE) at 12. */
const HEADER = 16
/** Per frame: length (u16 LE), 1 = to the source, the 18-byte destination. */
const FRAME = 21
/**
 * Where the node writes what to send: one buffer per depth of calls (a layer below that delivers
 * synchronously — a loopback in a test — makes a call while the previous one's output is read).
 */
const outs: Buffer[] = []
let depth = 0
/** Where the node writes an event (a record is at most 332 bytes). */
const ev = Buffer.alloc(1024)

/**
 * A Kademlia datagram from `from`: `source` is a Peer when an authenticating layer below proved
 * the sender's id.
 */
export function deliver(s: KadState, source: Address | Peer, from: Address, data: Buffer): void {
  refreshOwnRecord(s)
  const proven = source === from ? null : (source as Peer).id
  const out = (outs[depth] ??= Buffer.alloc(65_536))
  depth++
  try {
    flush(s, s.table!.onDatagram(from.raw, data, proven, s.clock.now(), out), from, out)
  } finally {
    depth--
  }
}

/** Sends what the node has waiting (after a call that may send: a lookup started, an approval). */
export function drainOut(s: KadState): void {
  if (!s.table) return
  const out = (outs[depth] ??= Buffer.alloc(65_536))
  depth++
  try {
    flush(s, s.table.drain(out), null, out)
  } finally {
    depth--
  }
}

/**
 * Sends the frames the last call wrote (up to `end`; a frame to the source goes to `source`),
 * re-arms the node's timer, and handles the events waiting.
 */
function flush(s: KadState, end: number, source: Address | null, out: Buffer): void {
  for (;;) {
    const deadline = out.readDoubleLE(0)
    const flags = out[8]!
    let at = HEADER
    while (at < end) {
      const len = out[at]! | (out[at + 1]! << 8)
      const to = out[at + 2] === 1 && source !== null ? source : fromRawAddress(out.subarray(at + 3, at + FRAME))
      s.sendControl(to, copyOf(out, at + FRAME, len))
      at += FRAME + len
    }
    arm(s, deadline)
    if (flags & 1) events(s)
    if (!(flags & 2) || !s.table) return
    end = s.table.drain(out)
    source = null
  }
}

/** Arms the node's timer at `at` (ms on the layer's clock; below 0: none), unless it fires earlier. */
function arm(s: KadState, at: number): void {
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
  const out = (outs[depth] ??= Buffer.alloc(65_536))
  depth++
  try {
    flush(s, s.table.onTimer(s.clock.now(), out), null, out)
  } finally {
    depth--
  }
}

/** The node's events, in order. */
function events(s: KadState): void {
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
        if (peer) emit(s, kind === 1 ? 'connected' : 'disconnected', peer)
        break
      }
      case 3:
        lookupDone(s, n)
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
        approve(s, Buffer.from(record))
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
