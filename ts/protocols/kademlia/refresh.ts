/** Kademlia: joining through the bootstrap addresses, and the periodic self-lookup and bucket refresh. */
import { DeccomError, ErrorCode } from '../../errors'
import type { KadState, LookupOutcome } from './state'
import { maintenanceLookup } from './lookups'
import { drainOut } from './driver'
import { peersOfRecords } from './message'

/**
 * One join attempt, in the node: FIND_NODE(self) to every bootstrap address, then a self-lookup
 * through what they answered. At most one join runs at a time (`s.joining`, from the first attempt
 * until it joined or gave up): the refresh timer starts another only when none runs.
 */
export function join(s: KadState, attempt: number): void {
  s.joinTimer = null
  if (!s.running || !s.table) return
  const addrs = s.bootstrap.filter((a) => a.key !== s.self.key)
  if (addrs.length === 0) {
    s.log('no bootstrap address: this node starts a network')
    return markJoined(s)
  }
  s.joining = true
  const id = s.table.bootstrap(Buffer.concat(addrs.map((a) => a.raw)), s.clock.now())
  const run = { id, done: false, onClaim: undefined, onDone: (o: LookupOutcome) => afterBootstrap(s, attempt, o), onError: () => {} }
  s.runs.set(id, run)
  drainOut(s)
}

function afterBootstrap(s: KadState, attempt: number, o: LookupOutcome): void {
  if (!s.running) return
  if (o.seeds === 0) {
    if (attempt < s.bootstrapRetries) {
      s.count('bootstrap_retries')
      s.clock.clearTimeout(s.joinTimer ?? undefined)
      s.joinTimer = s.clock.setTimeout(() => join(s, attempt + 1), s.queryTimeout * 2 ** attempt)
      s.log('bootstrap attempt %d: no answer from %d bootstrap nodes, retrying', attempt + 1, s.bootstrap.length)
    } else {
      s.count('bootstrap_failed')
      s.joining = false
      s.joinFailed = true
      const e = new DeccomError(ErrorCode.NOT_READY, `Kademlia could not join: no bootstrap node answered (${s.bootstrap.map((a) => a.key).join(', ')}) after ${attempt + 1} attempts`, {
        details: { layer: 'kademlia', attempts: attempt + 1 },
      })
      s.joinWaiters.rejectAll(e)
      s.log('join failed: no bootstrap node answered (%d attempts)', attempt + 1)
    }
    return
  }
  void joined(s, o.closestIds)
}

async function joined(s: KadState, closest: Buffer): Promise<void> {
  s.joining = false
  s.count('joined')
  if (s.log.enabled) s.log('joined: %d peers in %d buckets', s.table?.size ?? 0, bucketsInUse(s))
  markJoined(s)
  const covered = coveredBelow(s, closest)
  // The application's first steps after ready() go first (see `joinRefreshDelay`).
  if (s.joinRefreshDelay > 0) {
    await new Promise<void>((resolve) => {
      s.joinRefreshTimer = s.clock.setTimeout(() => {
        s.joinRefreshTimer = null
        resolve()
      }, s.joinRefreshDelay)
    })
    if (!s.running) return
  }
  await refresh(s, true, covered)
  if (s.running && s.settleLookup > 0 && s.settleTimer === null) {
    s.settleTimer = s.clock.setTimeout(() => {
      s.settleTimer = null
      if (!s.running) return
      s.count('settle_lookups')
      void neighbourhoodLookup(s)
    }, s.settleLookup)
  }
}

/**
 * A self-lookup that keeps the neighbourhood current: the settling one after the join, and the
 * periodic one of every refresh. It is for nodes near us that joined since our last self-lookup:
 * our closest neighbours know them. When the first `alpha` answers (from our closest entries) name
 * no node closer to us than our k-th closest entry that is not in our table, there is none to
 * meet: the lookup ends there instead of asking all k closest again. (With fewer than k entries,
 * a whole self-lookup.)
 */
function neighbourhoodLookup(s: KadState): Promise<Buffer | null> {
  const table = s.table
  if (!table || table.size < s.k) return maintenanceLookup(s, s.selfId, { ids: true })
  return maintenanceLookup(s, s.selfId, { ids: true, enough: { kth: kthClosest(s) } })
}

/** Our k-th closest entry's id (the table holds at least k). */
function kthClosest(s: KadState): Buffer {
  const ids = Buffer.alloc(32 * s.k)
  s.table!.closest(s.selfId, s.k, ids, new Uint32Array(s.k))
  return ids.subarray(32 * (s.k - 1))
}

/**
 * After a periodic self-lookup that heard answers: our k closest entries are the k nodes nearest
 * to us as far as our nearest neighbours know (the lookup went on while answers named anyone
 * closer that we lacked). A bucket closer than the k-th of them then holds only such nodes, and
 * a refresh lookup there would ask the same ones again. Returns the first bucket not covered
 * (0: none, with fewer than k entries).
 */
function neighbourhoodBelow(s: KadState): number {
  if (!s.table || s.table.size < s.k) return 0
  return s.table.bucketOf(kthClosest(s))
}

/** The node joined: `ready()` resolves from now on. */
function markJoined(s: KadState): void {
  s.joined = true
  s.joinFailed = false
  s.joinWaiters.resolveAll()
}

export function onRefreshTimer(s: KadState): void {
  s.refreshTimer = null
  if (!s.running) return
  if (s.table!.size === 0 && s.bootstrap.length > 0 && !s.joining) join(s, 0)
  void refresh(s, false).finally(() => {
    if (s.running && s.refreshTimer === null) s.refreshTimer = s.clock.setTimeout(s.refreshTick, s.refreshInterval)
  })
}

/** How many buckets of the table hold entries (for the log). */
function bucketsInUse(s: KadState): number {
  const buckets = new Set<number>()
  if (s.table) for (const p of peersOfRecords(s.table.records(null, 0))) buckets.add(s.table.bucketOf(p.id!))
  return buckets.size
}

/**
 * Buckets the self-lookup covered: it converged on the k nodes closest to us, so every node in a
 * bucket closer than the k-th of them is one of those k (and was asked): a refresh lookup there
 * would learn nothing. Returns the first bucket not covered (0: none covered).
 */
function coveredBelow(s: KadState, closest: Buffer | null): number {
  if (closest === null || closest.length < 32 * s.k || !s.table) return 0
  return Math.max(0, s.table.bucketOf(closest.subarray(32 * (s.k - 1), 32 * s.k)))
}

/**
 * At join, a refresh lookup fills its bucket to this share of k (and a bucket holding that many
 * needs none): the rest fills as nodes query us (each verified by a ping when it has room), which
 * costs no more datagrams per entry and asks nobody twice.
 */
const JOIN_FILL = 0.25

/** One lookup per stale bucket, one after the other; none for buckets the self-lookup covered. */
export async function refresh(s: KadState, all: boolean, covered = 0): Promise<void> {
  if (s.refreshing || !s.table) return
  s.refreshing = true
  try {
    if (!all) {
      // A periodic self-lookup keeps the closest neighbourhood current as the network grows.
      s.count('self_lookups')
      const answered = await neighbourhoodLookup(s)
      if (!s.table) return
      covered = answered !== null && answered.length > 0 ? neighbourhoodBelow(s) : 0
    }
    const stale = s.table.staleBuckets(s.clock.now(), all ? 0 : s.refreshInterval)
    for (const b of stale) {
      if (!s.running || !s.table) return
      // A bucket the self-lookup covered needs no lookup, nor, on join, one holding k/4 entries.
      const fill = all ? Math.ceil(s.k * JOIN_FILL) : s.k
      if (b < covered || (all && s.table.bucketLen(b) >= fill)) {
        if (b < covered) s.count('refresh_skipped_covered')
        s.table.markRefreshed(b, s.clock.now())
        continue
      }
      const target = s.table.randomIdIn(b)
      s.count('refresh_lookups')
      // A refresh is for its bucket: once the bucket is full, further answers would only wait in
      // its replacement cache.
      await maintenanceLookup(s, target, { enough: { bucket: b, fill } })
      if (!s.table) return
      s.table.markRefreshed(b, s.clock.now())
    }
  } finally {
    s.refreshing = false
  }
}

