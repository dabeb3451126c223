/** Kademlia: requests (PING, FIND_NODE) with random 64-bit ids, matched against their responses; small shared helpers. */
import type { Address } from '../../address'
import { copyOut, encodePing, encodeScratch } from './message'
import { KeyedBuckets, ReplyLimiter, prefixOf } from '../reply-limit'
import { type KadState, type NativeMessage, type Request, FIND_NODE, MAX_ADDR_SET, MAX_PENDING, PING, sampleQuery } from './state'

/**
 * Requests to addresses that never answered us (so nobody validated them: a NODES record may name
 * any victim) spend a token of the address's IP and of its prefix (IPv4 /24, IPv6 /48); the token
 * comes back when the address answers. So a flood of fake records naming one victim yields at most
 * UNVALIDATED_BURST_IP queries to its IP (UNVALIDATED_BURST_PREFIX to its prefix), then
 * UNVALIDATED_RATE per second; requests over the budget are not sent (`dropped_unvalidated_budget`).
 */
export const UNVALIDATED_BURST_IP = 16
export const UNVALIDATED_BURST_PREFIX = 64
export const UNVALIDATED_RATE = 1

export interface Budgets {
  ip: KeyedBuckets
  prefix: KeyedBuckets
  replies: ReplyLimiter
}

function budgetsOf(s: KadState): Budgets {
  return (s.budgets ??= {
    ip: new KeyedBuckets(UNVALIDATED_RATE, UNVALIDATED_BURST_IP),
    prefix: new KeyedBuckets(UNVALIDATED_RATE, UNVALIDATED_BURST_PREFIX),
    replies: new ReplyLimiter(),
  })
}

/** How many keys the request budgets and the reply limiter hold (for `stats()`). */
export function budgetSizes(s: KadState): { budget_ips: number; budget_prefixes: number; reply_limit_keys: number } {
  const b = s.budgets
  return { budget_ips: b?.ip.size ?? 0, budget_prefixes: b?.prefix.size ?? 0, reply_limit_keys: b?.replies.size ?? 0 }
}

/** True when a request to `to` may be sent now (spending the unvalidated budget if needed). */
function withinBudget(s: KadState, to: Address): boolean {
  if (s.verified.has(to.key) || s.byAddr.has(to.key)) return true
  const b = budgetsOf(s)
  const now = s.clock.now()
  const ip = b.ip.bucket(to.host, now)
  if (ip.tokens < 1) return false
  const prefix = b.prefix.bucket(prefixOf(to), now)
  if (prefix.tokens < 1) return false
  ip.tokens -= 1
  prefix.tokens -= 1
  return true
}

/** The address answered: give back the budget its request took; it is verified from now on. */
function answered(s: KadState, from: Address): void {
  if (s.verified.has(from.key)) return
  const b = budgetsOf(s)
  b.ip.refund(from.host)
  b.prefix.refund(prefixOf(from))
  addBounded(s.verified, from.key)
}

/**
 * Whether to answer a request from `from`: always for an address that answered us (validated),
 * else within the per-prefix reply rate ({@link withinReplyRate}).
 */
export function replyAllowed(s: KadState, from: Address): boolean {
  return s.verified.has(from.key) || s.byAddr.has(from.key) || withinReplyRate(s, from)
}

/** Whether to answer a request from an address that is not validated: within the per-prefix reply rate (`dropped_reply_rate`). */
export function withinReplyRate(s: KadState, from: Address): boolean {
  if (budgetsOf(s).replies.allow(from, s.clock.now())) return true
  s.count('dropped_reply_rate')
  return false
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
  if (!req || req.hi !== m.requestHi || req.to !== from || req.kind !== kind) return undefined
  s.pending.delete(m.requestLo)
  s.clock.clearTimeout(req.timer)
  answered(s, from)
  return req
}

/** FIND_NODE to `to`; `expect` is the id we believe lives there (null for bootstrap addresses). */
export function findNode(s: KadState, to: Address, target: Buffer, expect: Buffer | null, cb: (m: NativeMessage | null) => void): void {
  const pad = s.verifiedBy.has(to.key) ? 0 : s.padTo
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
        s.verifiedBy.delete(to.key)
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

export function remember(s: KadState, set: Set<string>, key: string): void {
  if (!set.has(key)) addBounded(set, key)
}

/** Adds `key` (absent from `set`), first forgetting the oldest key when the set is full. */
function addBounded(set: Set<string>, key: string): void {
  if (set.size >= MAX_ADDR_SET) set.delete(set.values().next().value as string)
  set.add(key)
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
