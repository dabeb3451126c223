/** Kademlia: iterative lookups (alpha queries in flight, the native KadLookup decides whom to ask next). */
import { native } from '../../native'
import { Peer } from '../../peer'
import { type KadState, type LookupResult, type NativeMessage, type Run, QUERY, WAIT, externalAt, identityAt, patience, tcpPortAt, withoutRecord } from './state'
import { findNode, told } from './rpc'

/** Addresses claimed for one findPeer target that are asked, at most. */
const MAX_CLAIMS = 8
import { consider, failed, sameRecord, seen } from './verification'
import { IdMap, sameId } from './id-map'

export function startLookup(
  s: KadState,
  target: Buffer,
  stopAt: string | null,
  extra: Peer[],
  onDone: (r: LookupResult) => void,
  onError: (e: Error) => void,
  onClaim?: (peer: Peer) => void,
  enough?: () => boolean,
  onAnswer?: (m: NativeMessage) => void,
): Run {
  const table = s.table!
  s.count('lookups')
  const cands = new IdMap<Peer>()
  const n = table.closest(target, s.k, s.ids, s.handles)
  let seeds: Buffer = s.ids.subarray(0, 32 * n)
  for (let i = 0; i < n; i++) cands.set(s.entries[s.handles[i]]!.peer)
  if (extra.length > 0) {
    const parts: Buffer[] = [Buffer.from(seeds)]
    for (const p of extra) {
      if (sameId(s.selfId, p.id!, 0) || cands.has(p.id!)) continue
      cands.set(p)
      parts.push(p.id!)
    }
    seeds = Buffer.concat(parts)
  }
  const run: Run = {
    target,
    stopAt,
    lk: new native.KadLookup(target, seeds, s.alpha, s.k, patience(s), s.clock.now()),
    cands,
    done: false,
    timer: null,
    timerAt: Infinity,
    found: null,
    foundHops: 0,
    claims: [],
    claimed: new Set(),
    unverified: null,
    verifying: false,
    pausedUntil: 0,
    converged: false,
    t0: s.clock.now(),
    onClaim,
    enough,
    onAnswer,
    onDone,
    onError,
  }
  s.runs.add(run)
  const seeded = stopAt !== null ? cands.get(target) : undefined
  if (seeded) {
    cands.delete(target)
    claim(s, run, seeded, 0)
  }
  drive(s, run)
  return run
}

export function drive(s: KadState, run: Run): void {
  const clock = s.clock
  if (run.verifying && clock.now() < run.pausedUntil) return waitUntil(s, run, run.pausedUntil)
  while (!run.done) {
    if (run.enough?.()) {
      // What the lookup was for is done: the queries in flight still count when they answer.
      s.count('lookups_ended_early')
      return finish(s, run)
    }
    const action = run.lk.next(clock.now(), s.qid)
    if (action === QUERY) {
      const peer = run.cands.get(s.qid)
      if (!peer) {
        run.lk.onFailure(s.qid)
        continue
      }
      // The candidate's own id (the same 32 bytes): no copy of s.qid, which the next query overwrites.
      const id = peer.id!
      findNode(s, peer.address, run.target, id, (m) => onReply(s, run, id, peer, m))
      continue
    }
    if (action === WAIT) {
      const at = run.lk.pollTimeout()
      if (at !== null) waitUntil(s, run, at)
      return
    }
    // Converged; a claim of the target still being asked decides the result.
    run.converged = true
    if (!run.verifying) finish(s, run)
    return
  }
}

/** Drives the lookup again at `at` (or earlier, when an earlier wake-up is already set). */
function waitUntil(s: KadState, run: Run, at: number): void {
  if (at >= run.timerAt) return
  s.clock.clearTimeout(run.timer ?? undefined)
  run.timerAt = at
  run.timer = s.clock.setTimeout(() => {
    run.timer = null
    run.timerAt = Infinity
    drive(s, run)
  }, at - s.clock.now())
}

/**
 * findPeer: a third party named the target at `peer.address`. Nobody's word is taken for it: the
 * target itself must answer there (under Noise, over a session that authenticated its id), so an
 * impostor's record costs one query and never becomes the result while the real one answers.
 */
function claim(s: KadState, run: Run, peer: Peer, hops: number): void {
  if (run.claimed.has(peer.address.key) || run.claimed.size >= MAX_CLAIMS) return
  run.claimed.add(peer.address.key)
  run.claims.push({ peer, hops })
  if (run.onClaim) {
    try {
      run.onClaim(peer)
    } catch {
      s.count('candidate_callback_errors')
    }
  }
  askClaim(s, run)
}

function askClaim(s: KadState, run: Run): void {
  if (run.verifying || run.done) return
  const c = run.claims.shift()
  if (!c) {
    if (run.converged) finish(s, run)
    return
  }
  run.verifying = true
  run.pausedUntil = s.clock.now() + patience(s)
  findNode(s, c.peer.address, run.target, run.target, (m) => {
    run.verifying = false
    if (run.done) return
    if (m !== null) {
      const p = c.peer
      run.found = new Peer(p.address, p.id, p.publicIdentity, externalAt(m, 0) ?? p.external, true, tcpPortAt(m, 0) ?? p.tcpPort)
      run.foundHops = c.hops
      s.count('claims_verified')
      consider(s, run.found)
      return finish(s, run)
    }
    s.count('claims_unverified')
    run.unverified ??= c
    askClaim(s, run)
    if (!run.verifying) drive(s, run) // the lookup goes on (it paused while the claim was asked)
  })
}

export function onReply(s: KadState, run: Run, id: Buffer, peer: Peer, m: NativeMessage | null): void {
  if (m === null) {
    failed(s, id)
    if (run.done) return
    run.lk.onFailure(id)
    return drive(s, run)
  }
  const ext = externalAt(m, 0)
  const tcp = tcpPortAt(m, 0)
  const known = s.byId.get(id)
  if (known !== undefined && sameRecord(known, peer.address, ext)) seen(s, known)
  else consider(s, ext?.key === peer.external?.key && tcp === peer.tcpPort ? peer : new Peer(peer.address, peer.id, peer.publicIdentity, ext, peer.verified, tcp))
  if (run.done) return
  run.onAnswer?.(m)
  const ids = m.ids!
  let closer = ids.subarray(32, 32 * (m.count + 1))
  let removed = 0
  const stop = run.stopAt !== null
  for (let i = 1; i <= m.count; i++) {
    const at = 32 * i
    const isSelf = sameId(s.selfId, ids, at)
    const isTarget = stop && sameId(run.target, ids, at)
    if (isSelf || isTarget) {
      // Neither we nor the target are lookup candidates (the target is asked as a claim, below).
      closer = withoutRecord(closer, i - 1 - removed++)
      if (isSelf) continue
    }
    let p = run.cands.get(ids, at)
    if (!p) {
      const addr = m.address(i)
      if (addr === null) continue
      p = new Peer(addr, m.peerId(i), identityAt(m, i), externalAt(m, i), false, tcpPortAt(m, i))
      run.cands.set(p)
      // Who told us about whom: a peer behind a NAT is reached through the one that named it,
      // at the address that node saw it at or at the external address it announced.
      told(s, addr, peer.address)
      if (p.external && p.external !== addr) told(s, p.external, peer.address)
    }
    if (isTarget) {
      run.cands.delete(ids, at)
      claim(s, run, p, run.lk.depth(id) + 1)
      if (run.done) return
    }
  }
  run.lk.onSuccess(id, closer)
  drive(s, run)
}

export function finish(s: KadState, run: Run): void {
  if (run.done) return
  run.done = true
  s.clock.clearTimeout(run.timer ?? undefined)
  s.runs.delete(run)
  const st = run.lk.stats()
  const ids = run.lk.closest()
  run.lk.dispose()
  const closest: Peer[] = []
  for (let i = 0; i + 32 <= ids.length; i += 32) {
    const p = run.cands.get(ids, i)
    if (p) closest.push(p)
  }
  const result = run.found ?? run.unverified?.peer ?? run.claims[0]?.peer ?? null
  const hops = run.found ? run.foundHops : (run.unverified ?? run.claims[0])?.hops
  if (run.stopAt !== null) s.count(run.found ? 'lookups_found' : result ? 'lookups_found_unverified' : 'lookups_not_found')
  run.onDone({
    peer: result,
    closest,
    hops: hops ?? st.rounds,
    queries: st.queries,
    failures: st.failures,
    timeouts: st.timeouts,
    elapsed: s.clock.now() - run.t0,
  })
}

export function abort(s: KadState, run: Run, err: Error): void {
  if (run.done) return
  run.done = true
  s.clock.clearTimeout(run.timer ?? undefined)
  s.runs.delete(run)
  run.lk.dispose()
  run.onError(err)
}

/**
 * A lookup run to convergence (or until `enough()`), as a promise that never rejects (internal
 * maintenance).
 */
export function maintenanceLookup(
  s: KadState,
  target: Buffer,
  extra: Peer[] = [],
  enough?: () => boolean,
  onAnswer?: (m: NativeMessage) => void,
): Promise<LookupResult | null> {
  return new Promise((resolve) => {
    if (!s.running) return resolve(null)
    startLookup(s, target, null, extra, resolve, () => resolve(null), undefined, enough, onAnswer)
  })
}
