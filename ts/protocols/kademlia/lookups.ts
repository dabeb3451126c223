/**
 * Kademlia: iterative lookups. The native KadLookup keeps the candidates (their peer records,
 * read out of the NODES answers) and decides whom to ask next; this part sends the queries,
 * admits the nodes that answer, and asks findPeer's claims of the target.
 */
import type { Address } from '../../address'
import { fromRawAddress } from '../../address'
import { native } from '../../native'
import { Peer, encodePeerRecord } from '../../peer'
import { parseLayout, peersOfRecords } from './message'
import { type KadState, type LookupResult, type NativeLookup, type NativeMessage, type Run, QUERY, WAIT, externalAt, identityAt, patience, tcpPortAt } from './state'
import { findNode } from './rpc'
import { consider, failed, sameRecord, seen } from './verification'

/** Addresses claimed for one findPeer target that are asked, at most. */
const MAX_CLAIMS = 8
const EMPTY = Buffer.alloc(0)

/** What a lookup reports besides its result (see {@link startLookup}). */
export interface LookupHooks {
  /** findPeer: told each claimed address of the target. */
  onClaim?: (peer: Peer) => void
  /** A maintenance lookup ends (sends no further query) once this is true. */
  enough?: () => boolean
  /** Told of every answer, with the lookup (see `Run.onAnswer`). */
  onAnswer?: (m: NativeMessage, lk: NativeLookup) => void
  /**
   * A maintenance lookup (no result object): `onDone` gets null and, when `ids` is true, the ids
   * of the closest peers that answered (32 bytes each, closest first; else an empty Buffer).
   * Absent: `onDone` gets a result.
   */
  maintenance?: { ids: boolean }
  /** The result lists the closest peers (default true; findPeer returns only the target). */
  closest?: boolean
}

/**
 * Starts a lookup of `target` from the table's closest entries and the `extra` peers.
 * `stop`: findPeer (the lookup stops once the target answers).
 */
export function startLookup(
  s: KadState,
  target: Buffer,
  stop: boolean,
  extra: Peer[],
  onDone: (r: LookupResult | null, closestIds: Buffer) => void,
  onError: (e: Error) => void,
  hooks: LookupHooks = {},
): Run {
  s.count('lookups')
  const run: Run = {
    target,
    stop,
    maintenance: hooks.maintenance !== undefined,
    ids: hooks.maintenance?.ids === true,
    closest: hooks.closest !== false,
    lk: native.KadLookup.fromTable(s.table!, target, s.alpha, s.k, patience(s), s.clock.now(), stop ? target : null),
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
    onClaim: hooks.onClaim,
    enough: hooks.enough,
    onAnswer: hooks.onAnswer,
    onDone,
    onError,
  }
  s.runs.add(run)
  let seeded: Peer | undefined
  if (stop) {
    const e = s.byId.get(target)
    if (e?.inTable) seeded = e.peer
  }
  for (const p of extra) {
    if (stop && p.id!.equals(target)) {
      seeded ??= p
      continue
    }
    try {
      run.lk.addSeed(encodePeerRecord({ publicIdentity: p.publicIdentity!, address: p.address, tcpPort: p.tcpPort ?? undefined, external: p.external ?? undefined }))
    } catch {
      s.count('dropped_bad_record')
    }
  }
  if (seeded) claim(s, run, seeded, 0)
  drive(s, run)
  return run
}

export function drive(s: KadState, run: Run): void {
  const clock = s.clock
  if (run.verifying && clock.now() < run.pausedUntil) return waitUntil(s, run, run.pausedUntil)
  // Asked once per drive: nothing in the loop below changes the table (queries only leave).
  if (!run.done && run.enough?.()) {
    // What the lookup was for is done: the queries in flight still count when they answer.
    s.count('lookups_ended_early')
    return finish(s, run)
  }
  while (!run.done) {
    const action = run.lk.next(clock.now(), s.qid, s.qaddr)
    if (action === QUERY) {
      const id = Buffer.from(s.qid)
      let to: Address
      try {
        to = fromRawAddress(s.qaddr)
      } catch {
        run.lk.onFailure(id)
        continue
      }
      findNode(s, to, run.target, id, (m) => onReply(s, run, id, to, m))
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

/** The answer (or null: none) of the node with id `id` at `from` to one of the lookup's queries. */
export function onReply(s: KadState, run: Run, id: Buffer, from: Address, m: NativeMessage | null): void {
  if (m === null) {
    failed(s, id)
    if (run.done) return
    run.lk.onFailure(id)
    return drive(s, run)
  }
  // First, while the parse layout still describes this answer: the records it names become
  // candidates (and the table remembers who named whom); `named` is the first naming the target.
  let named = 0
  if (!run.done) {
    named = run.lk.onAnswer(s.table!, id, m.bytes, parseLayout(), from.raw, run.stop)
    run.onAnswer?.(m, run.lk)
  }
  const ext = externalAt(m, 0)
  const tcp = tcpPortAt(m, 0)
  const known = s.byId.get(id)
  if (known !== undefined && sameRecord(known, from, ext)) seen(s, known)
  else consider(s, new Peer(from, m.peerId(0), identityAt(m, 0), ext, known?.peer.verified ?? false, tcp))
  if (run.done) return
  // The target named (possibly at several addresses): each address is a claim to ask.
  for (let i = named; i > 0 && i <= m.count; i++) {
    if (!m.idIs(i, run.target)) continue
    const addr = m.address(i)
    if (addr === null) continue
    claim(s, run, new Peer(addr, m.peerId(i), identityAt(m, i), externalAt(m, i), false, tcpPortAt(m, i)), run.lk.depth(id) + 1)
    if (run.done) return
  }
  drive(s, run)
}

export function finish(s: KadState, run: Run): void {
  if (run.done) return
  run.done = true
  s.clock.clearTimeout(run.timer ?? undefined)
  s.runs.delete(run)
  if (run.maintenance) {
    // A maintenance lookup: it wants no result object (at most the ids of the closest).
    const ids = run.ids ? run.lk.closest() : EMPTY
    run.lk.dispose()
    return run.onDone(null, ids)
  }
  const st = run.lk.stats()
  const ids = run.lk.closest()
  const closest = run.closest ? peersOfRecords(run.lk.closestRecords()) : []
  run.lk.dispose()
  const result = run.found ?? run.unverified?.peer ?? run.claims[0]?.peer ?? null
  const hops = run.found ? run.foundHops : (run.unverified ?? run.claims[0])?.hops
  if (run.stop) s.count(run.found ? 'lookups_found' : result ? 'lookups_found_unverified' : 'lookups_not_found')
  run.onDone(
    {
      peer: result,
      closest,
      hops: hops ?? st.rounds,
      queries: st.queries,
      failures: st.failures,
      timeouts: st.timeouts,
      elapsed: s.clock.now() - run.t0,
    },
    ids,
  )
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
 * maintenance): of the ids of the closest peers that answered (32 bytes each, closest first) when
 * `ids`, else of an empty Buffer; of null when the layer stopped.
 */
export function maintenanceLookup(
  s: KadState,
  target: Buffer,
  opts: { extra?: Peer[]; enough?: () => boolean; onAnswer?: (m: NativeMessage, lk: NativeLookup) => void; ids?: boolean } = {},
): Promise<Buffer | null> {
  return new Promise((resolve) => {
    if (!s.running) return resolve(null)
    startLookup(s, target, false, opts.extra ?? [], (_, ids) => resolve(ids), () => resolve(null), {
      enough: opts.enough,
      onAnswer: opts.onAnswer,
      maintenance: { ids: opts.ids ?? false },
    })
  })
}
