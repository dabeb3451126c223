/**
 * Kademlia: joining, and keeping the table fresh. Both run in the native node (deccom-core
 * `kad::node::upkeep`): the join through the bootstrap addresses (with retries), the bucket
 * refresh after the join, the settling self-lookup, the periodic refresh. This part starts it
 * and turns its outcome into `joined`, `ready()` and the log.
 */
import { DeccomError, ErrorCode } from '../../errors'
import { drainOut } from './driver'
import { peersOfRecords } from './message'
import type { KadState } from './state'

/** Starts the node's join and upkeep (the layer started). */
export function startUpkeep(s: KadState): void {
  if (!s.table) return
  const raw = Buffer.concat(s.bootstrap.map((a) => a.raw))
  s.table.startUpkeep(raw, s.bootstrapRetries, s.joinRefreshDelay, s.settleLookup, s.refreshInterval, s.clock.now())
  drainOut(s)
}

/** The node joined: through a bootstrap node (`bootstrapped`), or with none to ask. */
export function onJoined(s: KadState, bootstrapped: boolean): void {
  if (!s.running) return
  if (!bootstrapped) s.log('no bootstrap address: this node starts a network')
  else if (s.log.enabled) s.log('joined: %d peers in %d buckets', s.table?.size ?? 0, bucketsInUse(s))
  s.joined = true
  s.joinFailed = false
  s.joinWaiters.resolveAll()
}

/** No bootstrap node answered: attempt `attempt` follows. */
export function onJoinRetry(s: KadState, attempt: number): void {
  s.log('bootstrap attempt %d: no answer from %d bootstrap nodes, retrying', attempt, s.bootstrap.length)
}

/** No bootstrap node answered in `attempts` attempts. */
export function onJoinFailed(s: KadState, attempts: number): void {
  if (!s.running) return
  s.joinFailed = true
  const e = new DeccomError(ErrorCode.NOT_READY, `Kademlia could not join: no bootstrap node answered (${s.bootstrap.map((a) => a.key).join(', ')}) after ${attempts} attempts`, {
    details: { layer: 'kademlia', attempts },
  })
  s.joinWaiters.rejectAll(e)
  s.log('join failed: no bootstrap node answered (%d attempts)', attempts)
}

/** How many buckets of the table hold entries (for the log): by the highest bit of each id's distance to ours. */
function bucketsInUse(s: KadState): number {
  const buckets = new Set<number>()
  if (s.table) {
    for (const p of peersOfRecords(s.table.records(null, 0))) {
      const id = p.id!
      let i = 0
      while (i < 32 && id[i] === s.selfId[i]) i++
      if (i < 32) buckets.add(255 - (i * 8 + Math.clz32(id[i]! ^ s.selfId[i]!) - 24))
    }
  }
  return buckets.size
}
