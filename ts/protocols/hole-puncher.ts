/**
 * HolePuncher — external address discovery and UDP hole punching (docs/nat.md has the full
 * protocol, a sequence diagram and the rules; wire format: docs/wire.md#hole-punching-tag-9).
 *
 * Binds `send`, takes `onMessage`; provides `send` and emits `onMessage`. Transparent: datagrams of
 * other tags pass through untouched (from a peer reached at another mapped port, see "aliases", the
 * sender's address is rewritten to the address the application asked for).
 *
 * - **Observations**: any node answers a PROBE (and a PUNCH, and an introduction request) with the
 *   address it saw the sender at. `externalAddress()` is the address that at least 2 distinct
 *   observers agree on (the most agreed one), else null.
 * - **Introducer**: every node remembers the addresses it has heard from (bounded, expiring) and, on
 *   request, introduces two of them to each other: each gets the other's observed (mapped) address
 *   and a shared nonce.
 * - **Punching**: `connect(target, via)` asks `via` to introduce us to `target`; both sides then send
 *   PUNCH datagrams every `punchInterval` ms to the other's mapped address until a PUNCH or PUNCH_ACK
 *   arrives, or `punchTimeout` ms pass. Sends to a peer being punched are queued (bounded) and go out
 *   when the path opens, or reject with ERR_DECCOM_PUNCH_TIMEOUT — or, with `relay: true`, go through
 *   the Relay layer below (the relay is `relayAddress` if set, else the introducer `via`).
 *
 * ## Wire format (tag {@link TAG_HOLEPUNCH}): docs/wire.md#hole-punching-tag-9 (byte layout, vectors)
 * PROBE → OBSERVED (where I saw you); INTRO_REQ (or INTRO_REQ_NAT, with the requester's NAT
 * mapping) → INTRO_CHALLENGE (prove your address: echo the token), INTRO_FAIL, or INTRO (INTRO_NAT)
 * to both sides; PUNCH → PUNCH_ACK. Answers are never larger than the datagram they answer, except
 * the introduction (two datagrams of at most 44 B to a request of at least 28 B), which is rate
 * limited (`maxIntroductionsPerSecond`) and made only for a requester that echoed a
 * return-routability token (ts/protocols/address-token.ts): a spoofed request gets a 21-byte
 * challenge and makes nobody punch anything.
 * Birthday-paradox punching (ts/protocols/birthday.ts, docs/nat.md): a node whose NAT maps
 * endpoint-dependently asks with INTRO_REQ_NAT (as the target: sends one back naming the
 * requester), so the peer learns it; the dependent side then opens `birthdaySockets` auxiliary
 * sockets toward the peer (the transport's `openAuxiliary`), the endpoint-independent side probes
 * random ports of the dependent side's IP (`birthdayProbeRate`, at most `birthdayMaxProbes`).
 * Every datagram is encoded and decoded
 * by ts/wire/hole-punch.ts; malformed ones (trailing bytes included) are dropped: `dropped_malformed`.
 */
import type { AbortOptions } from '../abort'
import { abortable, throwIfAborted } from '../abort'
import type { Address, AddressLike } from '../address'
import { toAddress } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode, abortError } from '../errors'
import { Peer } from '../peer'
import { type LayerLog, silentLog } from '../log'
import type { LayerContext } from '../protocol'
import { Protocol } from '../protocol'
import { PADDED, decodeHolePunch, encodeHolePunch } from '../wire/hole-punch'
import { AddressTokens, NO_TOKEN } from './address-token'
import { ObservationTable } from './observations'
import { ReplyLimiter } from './reply-limit'
import type { NatMapping } from '../wire/hole-punch'
import { BirthdayProber, mappingOf } from './birthday'
import type { HolePuncherOptions, Observation, PunchMethod, PunchResult } from './punch-types'
export type { HolePuncherOptions, Observation, PathKind, PunchMethod, PunchResult } from './punch-types'
export type { NatMapping } from '../wire/hole-punch'

/** Milliseconds per introduction-token slot (a token lives 30 to 60 s). */
const INTRO_TOKEN_SLOT = 30_000

/** Tag of hole-punching datagrams. */
export const TAG_HOLEPUNCH = 9

type SessionState = 'introducing' | 'punching' | 'relaying' | 'open' | 'relayed'

interface Queued {
  data: Uint8Array
  tag: number
  resolve: (v: unknown) => void
  reject: (e: unknown) => void
}

interface Session {
  peer: Address
  via: Address
  state: SessionState
  nonces: number[]
  queue: Queued[]
  waiters: { resolve: (r: PunchResult) => void; reject: (e: unknown) => void }[]
  /** Started by our connect() (not by someone else's introduction): it ends when every connect() gave up. */
  local: boolean
  /** Stops the relay fallback in progress ('relaying'). */
  relayAbort: AbortController | null
  punchTimer: TimerHandle | undefined
  timeout: TimerHandle | undefined
  introTimer: TimerHandle | undefined
  reqNonce: number
  /** The introducer's return-routability token for our address (zeros until it challenged us). */
  introToken: Buffer
  started: number
  /** The address the peer answered from (may differ from `peer` behind some NATs). */
  remote: Address | null
  /** The peer's NAT mapping, as its (or our) INTRO_NAT said. */
  peerMapping: NatMapping
  /** Auxiliary sockets opened toward the peer (birthday punch, endpoint-dependent side). */
  aux: number
  /** Random-port probes (birthday punch, endpoint-independent side). */
  prober: BirthdayProber | null
  /** As the target, we sent the introducer an INTRO_REQ_NAT naming the requester. */
  reverse: boolean
  /** How the path was punched. */
  method: PunchMethod
}

interface RelayLike {
  relayVia(relay: AddressLike, peers?: AddressLike[], opts?: { timeout?: number; signal?: AbortSignal }): Promise<void>
}

export class HolePuncher extends Protocol {
  static override bindTo = ['send', 'relayVia?', 'introducerOf?', 'openAuxiliary?', 'closeAuxiliary?']
  static override bindFrom = ['onMessage']
  static override provides = ['send', 'connect', 'externalAddress', 'observations', 'natMapping']
  /** `introducerOf(peer)`: asks the discovery layer above (Kademlia) who named `peer`. */
  static override emits = ['onMessage', 'introducerOf']

  readonly name = 'hole-puncher'
  override readonly tag = TAG_HOLEPUNCH

  readonly #o: Required<Omit<HolePuncherOptions, 'rendezvous' | 'relayAddress' | 'birthday'>>
  readonly #birthday: boolean
  readonly #rendezvous: Address[]
  readonly #relayAddress: Address | null
  #clock: Clock | null = null
  #log: LayerLog = silentLog
  /** Answers per source prefix (IPv4 /24, IPv6 /48): a flood of spoofed requests reflects a bounded number. */
  readonly #replies = new ReplyLimiter()
  /** Return-routability tokens an INTRO_REQ must echo (fresh secret per start). */
  #tokens = new AddressTokens(INTRO_TOKEN_SLOT)
  /** The stack's layers (a discovery layer among them may know introducers). */
  #relay: RelayLike | null = null
  /** Punch sessions by peer address key. */
  readonly #sessions = new Map<string, Session>()
  readonly #byNonce = new Map<number, Session>()
  /** Introducible addresses: key → [address, last heard]. Insertion order ≈ age. */
  readonly #heard = new Map<string, [Address, number]>()
  /** Addresses the layers above sent to (with the time): introducers this node may accept. */
  readonly #contacted = new Map<string, [Address, number]>()
  /** Observations by observer key. */
  readonly #obs: ObservationTable<Observation>
  /** Peer key → the address it actually answers from; and the reverse. */
  readonly #aliasOut = new Map<string, Address>()
  readonly #aliasIn = new Map<string, Address>()
  #queuedBytes = 0
  #introTokens = 0
  #introRefill = 0
  #probeTimer: TimerHandle | undefined
  #sweepTimer: TimerHandle | undefined
  readonly #nonceBuf = new Uint32Array(1)

  constructor(opts: HolePuncherOptions = {}) {
    super()
    this.#o = {
      punchInterval: opts.punchInterval ?? 50,
      punchTimeout: opts.punchTimeout ?? 3000,
      introRetry: opts.introRetry ?? 250,
      maxQueuedPerPeer: opts.maxQueuedPerPeer ?? 64,
      maxQueuedBytes: opts.maxQueuedBytes ?? 1 << 20,
      maxSessions: opts.maxSessions ?? 256,
      maxHeard: opts.maxHeard ?? 4096,
      heardTtl: opts.heardTtl ?? 60_000,
      maxObservations: opts.maxObservations ?? 32,
      maxIntroductionsPerSecond: opts.maxIntroductionsPerSecond ?? 200,
      probeInterval: opts.probeInterval ?? 15_000,
      relay: opts.relay ?? false,
      birthdaySockets: opts.birthdaySockets ?? 256,
      birthdayProbeRate: opts.birthdayProbeRate ?? 1000,
      birthdayMaxProbes: opts.birthdayMaxProbes ?? 4000,
      birthdaySprayInterval: opts.birthdaySprayInterval ?? 1000,
    }
    this.#birthday = opts.birthday ?? true
    for (const [k, v] of Object.entries(this.#o)) {
      if (typeof v === 'number' && !(v > 0)) throw new DeccomError(ErrorCode.INVALID_ARGUMENT, `HolePuncher option ${k} must be > 0, got ${v}`)
    }
    this.#obs = new ObservationTable(this.#o.maxObservations)
    this.#rendezvous = (opts.rendezvous ?? []).map((a) => toAddress(a))
    this.#relayAddress = opts.relayAddress === undefined ? null : toAddress(opts.relayAddress)
  }

  override async start(ctx: LayerContext): Promise<void> {
    this.#clock = ctx.clock
    this.#log = ctx.log
    this.#tokens = new AddressTokens(INTRO_TOKEN_SLOT)
    this.#introTokens = this.#o.maxIntroductionsPerSecond
    this.#introRefill = ctx.clock.now()
    if (this.#o.relay) {
      if (this.hasLower('relayVia')) this.#relay = { relayVia: (relay, peers, opts) => this.lower.relayVia(relay, peers, opts) }
      if (!this.#relay) {
        throw new DeccomError(ErrorCode.STACK_INVALID, 'HolePuncher({ relay: true }) needs a Relay layer below it in the stack')
      }
    }
    if (this.#rendezvous.length > 0) this.#probeAll()
    this.#sweepTimer = ctx.clock.setTimeout(this.#sweep, Math.min(this.#o.heardTtl, 10_000))
  }

  override async stop(): Promise<void> {
    const clock = this.#clock
    this.#clock = null
    clock?.clearTimeout(this.#probeTimer)
    clock?.clearTimeout(this.#sweepTimer)
    const err = new DeccomError(ErrorCode.CLOSED, 'The HolePuncher layer stopped')
    for (const s of [...this.#sessions.values()]) {
      this.#clearTimers(s, clock)
      this.#endBirthday(s, false)
      this.#fail(s, err)
    }
    this.#sessions.clear()
    this.#byNonce.clear()
    this.#heard.clear()
    this.#contacted.clear()
  }

  // ---------------------------------------------------------------- public API

  /**
   * The address at least 2 distinct peers saw us at (the one most of them agree on), else null.
   * Behind a symmetric NAT observers disagree, so this stays null.
   */
  externalAddress(): Address | null {
    return this.#obs.agreed((o) => o.address.key)?.value.address ?? null
  }

  /**
   * Our NAT's mapping as the observations show it: 'dependent' (observers saw different ports:
   * a new mapping per destination), 'independent' (≥ 2 observers agree), else 'unknown'.
   */
  natMapping(): NatMapping {
    return mappingOf(this.#obs.values())
  }

  /** Every observation kept (one per observer). */
  observations(): Observation[] {
    return this.#obs.values().map((o) => ({ ...o }))
  }

  /** Asks `peer` which address it sees us at (answered with OBSERVED; see {@link observations}). */
  probe(peer: AddressLike): void {
    this.sendControl(toAddress(peer), encodeHolePunch({ type: 'PROBE', nonce: this.#nextNonce(), padding: PADDED - 5 }))
    this.count('probes_sent')
  }

  /** Addresses this node can introduce others to (heard from within `heardTtl`). */
  introducible(): Address[] {
    const now = this.#now()
    return [...this.#heard.values()].filter(([, t]) => now - t <= this.#o.heardTtl).map(([a]) => a)
  }

  /** State of the path to each peer with a session: 'introducing' | 'punching' | 'relaying' | 'open' | 'relayed'. */
  paths(): Record<string, SessionState> {
    const out: Record<string, SessionState> = {}
    for (const [k, s] of this.#sessions) out[k] = s.state
    return out
  }

  /**
   * Opens a path to `target` (its address as the introducer `via` knows it, i.e. its mapped
   * address) by asking `via` to introduce us, then punching. Without `via`, the introducer is the
   * peer a discovery layer in the stack (Kademlia's `introducerOf`) heard the target from. Resolves when the path is open
   * (punched, or relayed with `relay: true`). Aborting `opts.signal` rejects with ERR_DECCOM_ABORTED;
   * when no other connect() waits for that path, its introduction, probes, timers and relay
   * fallback stop, and messages queued for the peer are rejected. `connect(target, { signal })`
   * is the same as without `via`.
   * @throws ERR_DECCOM_PUNCH_TIMEOUT, ERR_DECCOM_INTRODUCTION_FAILED, ERR_DECCOM_RELAY_*, ERR_DECCOM_CLOSED, ERR_DECCOM_ABORTED
   */
  connect(target: AddressLike, via?: AddressLike | AbortOptions, opts: AbortOptions = {}): Promise<PunchResult> {
    if (isAbortOptions(via)) {
      opts = via
      via = undefined
    }
    const { signal } = opts
    let peer: Address
    let viaAddr: Address
    try {
      throwIfAborted(signal)
      peer = toAddress(target)
      if (!this.#clock) throw new DeccomError(ErrorCode.CLOSED, 'The HolePuncher layer is not running')
      const introducer = via !== undefined ? toAddress(via) : this.#discoveryIntroducer(peer)
      if (introducer === null) {
        throw new DeccomError(ErrorCode.INTRODUCTION_FAILED, `No introducer for ${peer.key}: pass one, or find the peer through a discovery layer (Kademlia) first`)
      }
      viaAddr = introducer
    } catch (e) {
      return Promise.reject(e)
    }
    let s: Session | undefined
    let w: Session['waiters'][number]
    return abortable<PunchResult>(
      signal,
      (resolve, reject) => {
        s = this.#sessions.get(peer.key)
        if (s && (s.state === 'open' || s.state === 'relayed')) return resolve(this.#result(s))
        if (!s) {
          s = this.#newSession(peer, viaAddr, 'introducing') ?? undefined
          if (!s) return reject(new DeccomError(ErrorCode.SEND_QUEUE_FULL, `More than ${this.#o.maxSessions} punch sessions at once`))
          s.local = true
          s.reqNonce = this.#nextNonce()
          this.#sendIntroReq(s)
        }
        s.waiters.push((w = { resolve, reject }))
      },
      () => this.#abortConnect(s!, w, abortError(signal!)),
    )
  }

  /**
   * Sends through the layer below. To a peer whose path is being opened the message is queued
   * (bounded) and the returned promise settles when it leaves or the path fails.
   * @throws ERR_DECCOM_SEND_QUEUE_FULL when the queue for the peer (or in total) is full
   */
  send(to: AddressLike, data: Uint8Array, tag = 0): unknown {
    const addr = toAddress(to)
    const s = this.#sessions.get(addr.key)
    if (s && (s.state === 'introducing' || s.state === 'punching' || s.state === 'relaying')) {
      if (s.queue.length >= this.#o.maxQueuedPerPeer || this.#queuedBytes + data.length > this.#o.maxQueuedBytes) {
        this.count('dropped_queue_full')
        throw new DeccomError(ErrorCode.SEND_QUEUE_FULL, `The send queue for ${addr.key} is full while its path is being opened; wait for connect()`, {
          details: { to: addr.key, queued: s.queue.length, maxQueuedPerPeer: this.#o.maxQueuedPerPeer },
        })
      }
      const copy = Buffer.from(data)
      this.#queuedBytes += copy.length
      this.count('queued')
      return new Promise((resolve, reject) => s.queue.push({ data: copy, tag, resolve, reject }))
    }
    const out = this.#aliasOut.get(addr.key) ?? addr
    this.#remember(this.#contacted, out, 'contacted_evicted')
    return this.lower.send(out, data, tag)
  }

  // ---------------------------------------------------------------- receiving

  /** A datagram from the layer below: handles this layer's tag, passes the rest up. */
  onMessage(source: Address | Peer, data: Buffer, tag: number): void {
    const from = source instanceof Peer ? source.address : source
    // Relayed datagrams did not come straight from `from`: they neither make it introducible nor punch.
    const direct = !(source instanceof Peer && (source as { relayed?: boolean }).relayed === true)
    if (direct) this.#hear(from)
    if (tag !== TAG_HOLEPUNCH) {
      const alias = this.#aliasIn.get(from.key)
      if (alias) {
        this.count('aliased_received')
        return this.upper.onMessage(source instanceof Peer ? new Peer(alias, source.id, source.publicIdentity) : alias, data, tag)
      }
      return this.upper.onMessage(source, data, tag)
    }
    if (!direct) return this.count('dropped_relayed_control')
    const m = decodeHolePunch(data)
    if (m === null) return this.count('dropped_malformed')
    switch (m.type) {
      case 'PROBE':
        if (!this.#replies.allow(from, this.#now())) return this.count('dropped_reply_rate')
        this.count('probes_answered')
        return this.#sendObserved(from, 'OBSERVED', m.nonce)
      case 'OBSERVED':
        this.count('observed_received')
        return this.#observe(from, m.addr)
      case 'PUNCH_ACK': {
        const s = this.#byNonce.get(m.nonce)
        if (!s) return this.count('dropped_unsolicited')
        this.count('punch_acks_received')
        this.#observe(from, m.addr)
        return this.#open(s, from)
      }
      case 'INTRO_REQ':
        return this.#introduce(from, m.addr, m.nonce, m.token, null)
      case 'INTRO_REQ_NAT':
        return this.#introduce(from, m.addr, m.nonce, m.token, m.mapping)
      case 'INTRO_CHALLENGE': {
        // The introducer asks us to prove our address: echo its token at once (once per token).
        let s: Session | undefined
        for (const x of this.#sessions.values()) {
          if ((x.state === 'introducing' || (x.reverse && x.state === 'punching')) && x.via.key === from.key && x.reqNonce === m.nonce) s = x
        }
        if (!s || s.introToken.equals(m.token)) return this.count('dropped_unsolicited')
        this.count('intro_challenges_received')
        s.introToken = m.token
        this.#clock?.clearTimeout(s.introTimer)
        return this.#sendIntroReq(s)
      }
      case 'INTRO':
        return this.#onIntro(from, m.peer, m.you, m.nonce, 'unknown')
      case 'INTRO_NAT':
        return this.#onIntro(from, m.peer, m.you, m.nonce, m.mapping)
      case 'INTRO_FAIL': {
        const s = this.#sessions.get(m.addr.key)
        if (!s || s.state !== 'introducing' || s.via.key !== from.key || s.reqNonce !== m.nonce) return this.count('dropped_unsolicited')
        this.count('introductions_failed')
        this.#log('punch to %s failed: %s cannot introduce us (it has not heard from it)', s.peer.key, from.key)
        this.#clearTimers(s, this.#clock)
        this.#remove(s)
        return this.#fail(
          s,
          new DeccomError(ErrorCode.INTRODUCTION_FAILED, `${from.key} cannot introduce us to ${s.peer.key}: it has not heard from it recently`, {
            details: { target: s.peer.key, via: from.key },
          }),
        )
      }
      case 'PUNCH': {
        const s = this.#byNonce.get(m.nonce)
        if (!s) return this.count('dropped_unsolicited')
        this.count('punches_received')
        this.#sendObserved(from, 'PUNCH_ACK', m.nonce)
        // Opened by their PUNCH, we get no PUNCH_ACK: ask for the observation explicitly.
        if (s.state !== 'open') this.probe(from)
        return this.#open(s, from)
      }
    }
  }

  // ---------------------------------------------------------------- introducer

  #hear(from: Address): void {
    this.#remember(this.#heard, from, 'heard_evicted')
  }

  /** Records `a` with the time in `map` (oldest first, at most `maxHeard`). */
  #remember(map: Map<string, [Address, number]>, a: Address, evicted: string): void {
    const now = this.#now()
    const e = map.get(a.key)
    if (e) {
      if (now - e[1] > 1000) {
        // Move to the end (youngest) now and then, not on every datagram.
        map.delete(a.key)
        e[1] = now
        map.set(a.key, e)
      }
      return
    }
    if (map.size >= this.#o.maxHeard) {
      const oldest = map.keys().next().value as string
      map.delete(oldest)
      this.count(evicted)
    }
    map.set(a.key, [a, now])
  }

  /** `mapping`: the requester's NAT mapping from an INTRO_REQ_NAT (answered with INTRO_NAT), or null (INTRO_REQ, INTRO). */
  #introduce(requester: Address, target: Address, reqNonce: number, token: Buffer, mapping: NatMapping | null): void {
    const now = this.#now()
    if (!this.#tokens.valid(requester, token, now)) {
      // Not proven to receive at its address: a challenge no larger than the request, nothing else
      // (no introduction makes the target punch an address someone merely claimed).
      if (!token.equals(NO_TOKEN)) this.count('dropped_bad_token')
      if (!this.#replies.allow(requester, now)) return this.count('dropped_reply_rate')
      this.count('intro_challenges_sent')
      return void this.sendControl(requester, encodeHolePunch({ type: 'INTRO_CHALLENGE', nonce: reqNonce, token: this.#tokens.token(requester, now) }))
    }
    const e = this.#heard.get(target.key)
    if (!e || now - e[1] > this.#o.heardTtl || target.key === requester.key) {
      this.count('introductions_refused')
      if (!this.#replies.allow(requester, now)) return this.count('dropped_reply_rate')
      return void this.sendControl(requester, encodeHolePunch({ type: 'INTRO_FAIL', nonce: reqNonce, addr: target }))
    }
    // Token bucket: at most maxIntroductionsPerSecond introductions.
    const rate = this.#o.maxIntroductionsPerSecond
    this.#introTokens = Math.min(rate, this.#introTokens + ((now - this.#introRefill) * rate) / 1000)
    this.#introRefill = now
    if (this.#introTokens < 1) return this.count('dropped_intro_rate')
    this.#introTokens -= 1
    const nonce = this.#nextNonce()
    if (mapping === null) {
      this.sendControl(requester, encodeHolePunch({ type: 'INTRO', nonce, peer: target, you: requester }))
      this.sendControl(target, encodeHolePunch({ type: 'INTRO', nonce, peer: requester, you: target }))
    } else {
      // The introducer knows only the requester's mapping: the target is told it.
      this.sendControl(requester, encodeHolePunch({ type: 'INTRO_NAT', nonce, mapping: 'unknown', peer: target, you: requester }))
      this.sendControl(target, encodeHolePunch({ type: 'INTRO_NAT', nonce, mapping, peer: requester, you: target }))
    }
    this.count('introductions_made')
  }

  // ---------------------------------------------------------------- punching

  #onIntro(from: Address, peer: Address, you: Address, nonce: number, peerMapping: NatMapping): void {
    let s = this.#sessions.get(peer.key)
    if (s) {
      if (s.via.key !== from.key) return this.count('dropped_unsolicited')
    } else {
      // We are the target of someone else's connect(): punch back — but only when the introducer
      // is one we chose (a rendezvous, a peer we probed or the layers above sent to within
      // heardTtl): anybody else could aim our PUNCHes, and a birthday punch's thousands of probes,
      // at a third party with one datagram.
      if (!this.#choseIntroducer(from)) return this.count('dropped_intro_unknown_introducer')
      s = this.#newSession(peer, from, 'punching') ?? undefined
      if (!s) return this.count('dropped_session_full')
      this.count('introductions_received_as_target')
    }
    this.count('introductions_received')
    this.#observe(from, you)
    if (s.nonces.includes(nonce)) return
    if (s.nonces.length >= 4) this.#byNonce.delete(s.nonces.shift()!)
    s.nonces.push(nonce)
    this.#byNonce.set(nonce, s)
    if (peerMapping !== 'unknown') s.peerMapping = peerMapping
    if (s.state === 'open' || s.state === 'relayed' || s.state === 'relaying') return
    if (s.state === 'introducing') {
      this.#clock?.clearTimeout(s.introTimer)
      s.introTimer = undefined
      s.state = 'punching'
    }
    this.#birthdayStep(s)
    if (s.punchTimer === undefined) this.#punch(s)
  }

  /** Whether `a` is an introducer this node chose: a rendezvous, a peer it probed or recently sent to. */
  #choseIntroducer(a: Address): boolean {
    const sent = this.#contacted.get(a.key)
    if (sent && this.#now() - sent[1] <= this.#o.heardTtl) return true
    if (this.#rendezvous.some((r) => r.key === a.key)) return true
    return this.#obs.values().some((o) => o.observer.key === a.key)
  }

  /**
   * Birthday-paradox punching, decided from our mapping and the peer's: the endpoint-dependent
   * side opens auxiliary sockets toward the peer (and, as the target, tells the peer its mapping
   * through the introducer); the other side probes random ports of the dependent side's IP.
   */
  #birthdayStep(s: Session): void {
    if (!this.#birthday || !this.#clock) return
    const mine = this.natMapping()
    if (mine === 'dependent') {
      if (!s.local && !s.reverse) {
        // The requester does not know our mapping: ask the introducer to tell it (INTRO_REQ_NAT).
        s.reverse = true
        s.reqNonce = this.#nextNonce()
        this.#sendIntroReq(s)
      }
      if (s.peerMapping === 'dependent') {
        // Both sides map per destination: no port to meet at (the relay is the way).
        if (s.aux > 0) this.#endBirthday(s, false)
        return
      }
      if (s.aux === 0 && !this.hasLower('openAuxiliary')) return this.count('birthday_unsupported')
      if (s.aux === 0) {
        s.aux = this.lower.openAuxiliary(s.peer, this.#o.birthdaySockets) as number
        this.count('birthday_sockets_opened', s.aux)
        this.#log('birthday punch to %s: %d auxiliary sockets', s.peer.key, s.aux)
        if (s.aux > 0) {
          this.#clock.clearTimeout(s.punchTimer)
          s.punchTimer = undefined // re-sent at once, from every auxiliary socket
        }
      }
    } else if (s.peerMapping === 'dependent' && s.prober === null) {
      const nonce = s.nonces[s.nonces.length - 1]
      s.prober = new BirthdayProber(this.#clock, s.peer, this.#o.birthdayProbeRate, this.#o.birthdayMaxProbes, (to) => {
        this.sendControl(to, encodeHolePunch({ type: 'PUNCH', nonce: s.nonces[s.nonces.length - 1] ?? nonce, padding: PADDED - 5 }))
        this.count('birthday_probes_sent')
      })
      this.#log('birthday punch to %s: probing random ports of %s', s.peer.key, s.peer.host)
      s.prober.start()
    }
  }

  /** Stops a birthday punch: the prober, and the auxiliary sockets unless `keep` (the path uses the winner). */
  #endBirthday(s: Session, keep: boolean): void {
    s.prober?.stop()
    if (s.aux > 0 && !keep) {
      s.aux = 0
      if (this.hasLower('closeAuxiliary')) this.count('birthday_sockets_closed', this.lower.closeAuxiliary(s.peer) as number)
    }
  }

  #newSession(peer: Address, via: Address, state: SessionState): Session | null {
    const clock = this.#clock
    if (!clock) return null
    if (this.#sessions.size >= this.#o.maxSessions) {
      // Forget the oldest finished session to make room; refuse if all are in progress.
      for (const old of this.#sessions.values()) {
        if (old.state === 'open' || old.state === 'relayed') {
          this.#remove(old)
          break
        }
      }
      if (this.#sessions.size >= this.#o.maxSessions) return null
    }
    const s: Session = {
      peer,
      via,
      state,
      nonces: [],
      queue: [],
      waiters: [],
      punchTimer: undefined,
      timeout: undefined,
      introTimer: undefined,
      local: false,
      relayAbort: null,
      reqNonce: 0,
      introToken: NO_TOKEN,
      started: clock.now(),
      remote: null,
      peerMapping: 'unknown',
      aux: 0,
      prober: null,
      reverse: false,
      method: 'simultaneous',
    }
    s.timeout = clock.setTimeout(() => this.#onTimeout(s), this.#o.punchTimeout)
    this.#sessions.set(peer.key, s)
    this.count('sessions')
    this.#log('punch to %s started (%s, introducer %s)', peer.key, state, via.key)
    return s
  }

  #sendIntroReq(s: Session): void {
    // Behind an endpoint-dependent NAT the introducer passes our mapping on (INTRO_NAT): the peer probes for us.
    const mapping = this.#birthday ? this.natMapping() : 'unknown'
    const req = { nonce: s.reqNonce, token: s.introToken, addr: s.peer }
    this.sendControl(s.via, encodeHolePunch(mapping === 'dependent' ? { type: 'INTRO_REQ_NAT', mapping, ...req } : { type: 'INTRO_REQ', ...req }))
    this.count('intro_requests_sent')
    const clock = this.#clock
    // A reverse request (the target's, while punching) is sent once, and again only for a challenge.
    if (clock && !s.reverse) s.introTimer = clock.setTimeout(() => s.state === 'introducing' && this.#sendIntroReq(s), this.#o.introRetry)
  }

  #punch(s: Session): void {
    s.punchTimer = undefined
    if (s.state !== 'punching' || !this.#clock) return
    // With auxiliary sockets open toward the peer, the transport sends this from each of them.
    this.sendControl(s.peer, encodeHolePunch({ type: 'PUNCH', nonce: s.nonces[s.nonces.length - 1], padding: PADDED - 5 }))
    this.count('punches_sent')
    s.punchTimer = this.#clock.setTimeout(() => this.#punch(s), s.aux > 0 ? this.#o.birthdaySprayInterval : this.#o.punchInterval)
  }

  #open(s: Session, from: Address): void {
    if (s.state === 'open') return
    if (s.state === 'relayed' || s.state === 'relaying') return this.count('punch_after_relay')
    this.#clearTimers(s, this.#clock)
    s.state = 'open'
    s.remote = from
    s.method = s.aux > 0 || s.prober !== null ? 'birthday' : 'simultaneous'
    this.#endBirthday(s, true)
    if (s.method === 'birthday') this.count('birthday_punched')
    if (from.key !== s.peer.key) {
      // The peer answers from another mapped port than the introducer saw: talk to that one.
      this.#aliasOut.set(s.peer.key, from)
      this.#aliasIn.set(from.key, s.peer)
      if (this.#aliasOut.size > this.#o.maxSessions * 4) {
        this.#aliasOut.clear()
        this.#aliasIn.clear()
      }
      this.count('aliases')
    }
    this.count('punched')
    this.#log('punch to %s succeeded in %d ms (%s): direct path to %s', s.peer.key, Math.round((this.#clock?.now() ?? s.started) - s.started), s.method, from.key)
    this.#flush(s, from)
    for (const w of s.waiters.splice(0)) w.resolve({ path: 'punched', address: from, punch: s.method })
  }

  #onTimeout(s: Session): void {
    s.timeout = undefined
    if (s.state === 'open' || s.state === 'relayed' || s.state === 'relaying') return
    this.#clearTimers(s, this.#clock)
    this.#endBirthday(s, false)
    this.count('punch_timeouts')
    this.#log('punch to %s timed out after %d ms (%s)%s', s.peer.key, this.#o.punchTimeout, s.state, this.#relay ? ': falling back to a relay' : '')
    if (this.#relay) {
      s.state = 'relaying'
      const relay = this.#relayAddress ?? s.via
      this.count('relay_fallbacks')
      s.relayAbort = new AbortController()
      this.#relay.relayVia(relay, [s.peer], { timeout: this.#o.punchTimeout, signal: s.relayAbort.signal }).then(
        () => {
          s.relayAbort = null
          if (this.#sessions.get(s.peer.key) !== s) return
          s.state = 'relayed'
          s.remote = relay
          this.count('relayed')
          this.#log('path to %s: relayed through %s', s.peer.key, relay.key)
          this.#flush(s, s.peer) // the Relay layer below routes s.peer through the relay
          for (const w of s.waiters.splice(0)) w.resolve({ path: 'relayed', address: relay })
        },
        (e: unknown) => {
          s.relayAbort = null
          if (this.#sessions.get(s.peer.key) !== s) return
          this.count('relay_fallback_failed')
          this.#log('relay fallback to %s through %s failed: %s', s.peer.key, relay.key, (e as Error)?.message)
          this.#remove(s)
          this.#fail(s, e)
        },
      )
      return
    }
    this.#remove(s)
    this.#fail(
      s,
      new DeccomError(ErrorCode.PUNCH_TIMEOUT, `No path to ${s.peer.key} through NATs within ${this.#o.punchTimeout} ms (introducer ${s.via.key})`, {
        details: { target: s.peer.key, via: s.via.key, state: s.state, timeout: this.#o.punchTimeout },
      }),
    )
  }

  /** A connect() gave up: forget its waiter; a path only we wanted stops being opened. */
  #abortConnect(s: Session, w: Session['waiters'][number], err: DeccomError): void {
    this.count('connects_aborted')
    const i = s.waiters.indexOf(w)
    if (i >= 0) s.waiters.splice(i, 1)
    if (s.waiters.length > 0 || !s.local || s.state === 'open' || s.state === 'relayed' || this.#sessions.get(s.peer.key) !== s) return
    this.count('sessions_aborted')
    s.relayAbort?.abort(err)
    this.#remove(s)
    this.#fail(s, err)
  }

  #flush(s: Session, to: Address): void {
    for (const q of s.queue.splice(0)) {
      this.#queuedBytes -= q.data.length
      try {
        const r: unknown = this.lower.send(to, q.data, q.tag)
        this.count('flushed')
        if (r instanceof Promise) r.then(q.resolve, q.reject)
        else q.resolve(r)
      } catch (e) {
        q.reject(e)
      }
    }
  }

  #fail(s: Session, err: unknown): void {
    for (const q of s.queue.splice(0)) {
      this.#queuedBytes -= q.data.length
      this.count('dropped_queued_failed')
      q.reject(err)
    }
    for (const w of s.waiters.splice(0)) w.reject(err)
  }

  #clearTimers(s: Session, clock: Clock | null): void {
    clock?.clearTimeout(s.punchTimer)
    clock?.clearTimeout(s.timeout)
    clock?.clearTimeout(s.introTimer)
    s.punchTimer = s.timeout = s.introTimer = undefined
  }

  #remove(s: Session): void {
    this.#clearTimers(s, this.#clock)
    this.#endBirthday(s, false)
    if (this.#sessions.get(s.peer.key) === s) this.#sessions.delete(s.peer.key)
    for (const n of s.nonces) if (this.#byNonce.get(n) === s) this.#byNonce.delete(n)
  }

  #result(s: Session): PunchResult {
    return s.state === 'relayed' ? { path: 'relayed', address: s.remote ?? s.peer } : { path: 'punched', address: s.remote ?? s.peer, punch: s.method }
  }

  // ---------------------------------------------------------------- observations, timers

  #observe(observer: Address, address: Address): void {
    this.#obs.set(observer.key, { observer, address, at: this.#now() })
    this.count('observations')
  }

  #sendObserved(to: Address, type: 'OBSERVED' | 'PUNCH_ACK', nonce: number): void {
    this.sendControl(to, encodeHolePunch({ type, nonce, addr: to }))
  }

  readonly #probeAll = (): void => {
    for (const r of this.#rendezvous) this.probe(r)
    if (this.#clock) this.#probeTimer = this.#clock.setTimeout(this.#probeAll, this.#o.probeInterval)
  }

  readonly #sweep = (): void => {
    const clock = this.#clock
    if (!clock) return
    const now = clock.now()
    for (const [k, [, t]] of this.#heard) {
      if (now - t <= this.#o.heardTtl) break // insertion order ≈ age
      this.#heard.delete(k)
      this.count('heard_expired')
    }
    this.#sweepTimer = clock.setTimeout(this.#sweep, Math.min(this.#o.heardTtl, 10_000))
  }

  /**
   * The introducer a discovery layer knows for `peer` (Kademlia: who named it), or null: the layer
   * above that takes the `introducerOf` slot, else the nearest layer below providing `introducerOf`.
   */
  #discoveryIntroducer(peer: Address): Address | null {
    const above = this.hasUpper('introducerOf') ? (this.upper.introducerOf(peer) as Address | null | undefined) : null
    // Without a discovery layer that knows one, the first rendezvous server introduces.
    return above ?? (this.lower.introducerOf(peer) as Address | null | undefined) ?? this.#rendezvous[0] ?? null
  }

  #now(): number {
    return this.#clock ? this.#clock.now() : 0
  }

  /** Unpredictable nonces: a PUNCH is only accepted with the nonce of a live introduction. */
  #nextNonce(): number {
    crypto.getRandomValues(this.#nonceBuf)
    return this.#nonceBuf[0]
  }

}

/** True when `x` is an options object (`{ signal }`) rather than an address. */
function isAbortOptions(x: unknown): x is AbortOptions {
  return typeof x === 'object' && x !== null && !('host' in x) && !('address' in x)
}
