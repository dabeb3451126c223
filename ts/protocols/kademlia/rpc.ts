/** Kademlia: requests (PING, FIND_NODE) with random 64-bit ids, matched against their responses; small shared helpers. */
import type { Address } from '../../address'
import { copyOut, encodePing, encodeScratch } from './message'
import { type KadState, type NativeMessage, type Request, FIND_NODE, MAX_PENDING, PING, sampleQuery } from './state'

/**
 * The per-address state — who answered us (verified), whose requests we answered (verified by),
 * the unvalidated request budgets and the reply rate — lives with the routing table in deccom-core
 * (`kad::addrbook`); `KadTable.answer` reads it when answering. How many entries it holds (for
 * `stats()`):
 */
export function addrSizes(s: KadState): { verified_size: number; verified_by_size: number; budget_ips: number; budget_prefixes: number; reply_limit_keys: number } {
  const z = s.table?.addrSizes()
  return { verified_size: z?.verified ?? 0, verified_by_size: z?.verifiedBy ?? 0, budget_ips: z?.budgetIps ?? 0, budget_prefixes: z?.budgetPrefixes ?? 0, reply_limit_keys: z?.replyLimitKeys ?? 0 }
}

/**
 * True when a request to `to` may be sent now. A request to an address that never answered us (so
 * nobody validated it: a NODES record may name any victim) spends a token of the address's IP and
 * of its prefix (IPv4 /24, IPv6 /48); the token comes back when the address answers. So a flood of
 * fake records naming one victim yields at most 16 queries to its IP (64 to its prefix), then one
 * per second; requests over the budget are not sent (`dropped_unvalidated_budget`).
 */
function withinBudget(s: KadState, to: Address): boolean {
  if (s.table === null) return false
  // A table entry's address is validated: no native call needed to say so.
  return s.byAddr.has(to.key) || s.table.withinBudget(to.raw, false, s.clock.now())
}

/** Sends a request; `cb` gets the matching response, or null after `timeout`. */
export function request(s: KadState, to: Address, kind: number, build: (hi: number, lo: number) => Buffer, cb: (m: NativeMessage | null) => void, timeout: number): void {
  const clock = s.clock
  if (s.pending.size >= MAX_PENDING) {
    s.count('dropped_too_many_requests')
    clock.setTimeout(() => cb(null), 0)
    return
  }
  if (!withinBudget(s, to)) {
    s.count('dropped_unvalidated_budget')
    clock.setTimeout(() => cb(null), 0)
    return
  }
  let lo = (s.nextLo + 1) >>> 0
  while (s.pending.has(lo)) lo = (lo + 1) >>> 0
  s.nextLo = lo
  const hi = rand(s)
  const sent = s.sendControl(to, build(hi, lo))
  const timer = clock.setTimeout(
    () => {
      s.pending.delete(lo)
      if (sent) s.count('request_timeouts')
      cb(null)
    },
    sent ? timeout : 0,
  )
  s.pending.set(lo, { hi, to, kind, timer, cb })
}

export function match(s: KadState, m: NativeMessage, from: Address, kind: number): Request | undefined {
  const req = s.pending.get(m.requestLo)
  if (!req || req.hi !== m.requestHi || req.to.key !== from.key || req.kind !== kind) return undefined
  s.pending.delete(m.requestLo)
  s.clock.clearTimeout(req.timer)
  // The address answered: the budget its request took comes back; it is verified from now on.
  s.table?.answered(from.raw)
  return req
}

/** FIND_NODE to `to`; `expect` is the id we believe lives there (null for bootstrap addresses). */
export function findNode(s: KadState, to: Address, target: Buffer, expect: Buffer | null, cb: (m: NativeMessage | null) => void): void {
  // An address whose request we answered has verified us: no padding needed.
  const pad = s.table?.verifiedBy(to.raw) ? 0 : s.padTo
  s.count('queries_sent')
  const t0 = s.clock.now()
  request(
    s,
    to,
    FIND_NODE,
    (hi, lo) => {
      refreshOwnRecord(s)
      const len = s.table!.encodeFindNodeInto(hi, lo, target, pad, s.ephemeral, encodeScratch)
      return copyOut(len)
    },
    (m) => {
      if (m && expect !== null && !m.idIs(0, expect)) {
        s.count('dropped_wrong_sender')
        return cb(null)
      }
      if (m?.truncated) {
        s.count('nodes_truncated')
        s.table?.forgetVerifiedBy(to.raw)
      }
      if (m) sampleQuery(s, s.clock.now() - t0)
      cb(m)
    },
    2 * s.queryTimeout,
  )
}

export function ping(s: KadState, to: Address, cb: (alive: boolean) => void): void {
  s.count('pings_sent')
  request(s, to, PING, (hi, lo) => encodePing(false, hi, lo), (m) => cb(m !== null), s.queryTimeout)
}

/** Puts the external address the layers below agree on (if any, and not our own) into our record. */
export function refreshOwnRecord(s: KadState): void {
  const found = s.lower.externalAddress() as Address | null | undefined
  const ext = found && found.key !== s.self.key ? found : null
  if (ext?.key === s.ownExternal?.key || !s.table) return
  s.ownExternal = ext
  s.table.setOwnExternal(ext ? ext.raw : null)
  s.count('own_external_updates')
}

/** xorshift32: request ids and random targets (unpredictable unless `seed` is given). */
export function rand(s: KadState): number {
  let x = s.rng
  x ^= x << 13
  x ^= x >>> 17
  x ^= x << 5
  s.rng = x >>> 0
  return s.rng
}
