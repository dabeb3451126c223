/**
 * Kademlia: iterative lookups. They run in the native node (deccom-core `kad::node`: candidates
 * from the table and the NODES answers, α queries in flight, findPeer's claims of the target asked
 * apart); this part starts them, ends them (timeout, abort, stop) and turns their outcome into a
 * {@link LookupResult}.
 */
import { DeccomError } from '../../errors'
import type { Peer } from '../../peer'
import { drainOut } from './driver'
import { peerOfRecord, peersOfRecords } from './message'
import { type KadState, type LookupOutcome, type LookupResult, type Run, DiscoveryErrorCode } from './state'

const EMPTY = Buffer.alloc(0)

/** What a lookup is for (see {@link startLookup}). */
export interface LookupKind {
  /** findPeer: the lookup stops once the target answers (it is asked apart, as a claim). */
  stop?: boolean
  /** findPeer: told each claimed address of the target. */
  onClaim?: (peer: Peer) => void
  /** The outcome lists the closest peers' records. */
  records?: boolean
}

/** Starts a lookup of `target` in the node; `onDone` gets its outcome, `onError` why it was ended. */
export function startLookup(s: KadState, target: Buffer, kind: LookupKind, onDone: (o: LookupOutcome) => void, onError: (e: Error) => void): Run {
  const id = s.table!.startLookup(target, kind.stop === true, kind.onClaim !== undefined, kind.records === true, s.clock.now())
  const run: Run = { id, done: false, onClaim: kind.onClaim, onDone, onError }
  if (id < 0) {
    run.done = true
    onError(new DeccomError(DiscoveryErrorCode.TOO_MANY_LOOKUPS, 'The node runs as many lookups as it may (4,096)'))
    return run
  }
  s.runs.set(id, run)
  drainOut(s)
  return run
}

/** The node reported that lookup `id` ended. */
export function lookupDone(s: KadState, id: number): void {
  const run = s.runs.get(id)
  const o = s.table?.takeLookup(id)
  if (!run) return
  s.runs.delete(id)
  if (run.done || !o) return
  run.done = true
  run.onDone(o)
}

/** Ends a running lookup with `err`. */
export function abort(s: KadState, run: Run, err: Error): void {
  if (run.done) return
  run.done = true
  s.runs.delete(run.id)
  s.table?.abortLookup(run.id)
  run.onError(err)
}

/**
 * A lookup's outcome as a result (`closest`: it lists the closest peers). The list is decoded when
 * first read: a `lookup({ stopAtTarget })` whose caller wants only the target makes no peer
 * objects for it.
 */
export function resultOf(o: LookupOutcome, closest: boolean): LookupResult {
  const records = closest ? o.closestRecords : EMPTY
  let peers: Peer[] | undefined
  return {
    peer: o.found ? peerOfRecord(o.found, o.verified) : null,
    get closest(): Peer[] {
      return (peers ??= peersOfRecords(records))
    },
    set closest(list: Peer[]) {
      peers = list
    },
    hops: o.hops,
    queries: o.queries,
    failures: o.failures,
    timeouts: o.timeouts,
    elapsed: o.elapsed,
  }
}
