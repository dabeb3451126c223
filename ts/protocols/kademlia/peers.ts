/**
 * Kademlia: peers entering and leaving the routing table, as the native node reports them. The
 * node admits a peer only at a validated address (it answered a request of ours there, or an
 * authenticating layer below proved its id); with a layer below that approves connections
 * (`approveConnection`), the node asks it first.
 */
import { Peer } from '../../peer'
import type { KadEvent, KadState } from './state'
import { peerOfRecord } from './message'
import { drainOut } from './driver'

/** Tells the layer above and the listeners that `peer` entered or left the table. */
export function emit(s: KadState, event: KadEvent, peer: Peer): void {
  if (event === 'connected') s.upper.onConnected(peer)
  else s.upper.onDisconnected(peer)
  s.listeners.emit(event, peer)
}

/**
 * The node asks whether the peer of `record` (at a validated address) may enter the table (the
 * node bounds the peers waiting for an answer).
 */
export function approve(s: KadState, record: Buffer): void {
  const peer = peerOfRecord(record)
  const approver = s.approver
  if (peer === null || approver === null) return answer(s, record, approver === null)
  let r: boolean | Promise<boolean>
  try {
    r = approver.approveConnection(peer)
  } catch {
    s.count('approval_errors')
    return answer(s, record, false)
  }
  if (typeof r === 'boolean') {
    if (!r) s.count('rejected_by_approval')
    return answer(s, record, r)
  }
  const table = s.table
  Promise.resolve(r).then(
    (ok) => {
      if (!s.running || s.table !== table) return
      if (!ok) s.count('rejected_by_approval')
      answer(s, record, ok)
    },
    () => {
      s.count('approval_errors')
      if (s.running && s.table === table) answer(s, record, false)
    },
  )
}

function answer(s: KadState, record: Buffer, ok: boolean): void {
  if (!s.table) return
  s.table.approved(record, ok, s.clock.now())
  drainOut(s)
}

/** The peer of a table entry (from its record), or undefined. */
export function entryPeer(s: KadState, id: Buffer, verified = false): Peer | undefined {
  const r = s.table?.recordOf(id)
  return (r && peerOfRecord(r, verified)) ?? undefined
}
