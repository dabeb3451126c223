/**
 * TcpTransport: the introduction of a connection. Each side sends HELLO (its node id, nonce, UDP
 * address and TCP port, public identity), then AUTH (a signature over both nonces and both ids)
 * when it can sign, and answers a HELLO that asks for it with OBSERVED (the address it sees the
 * connection come from). A connection opens once the peer's HELLO and announced AUTH checked out,
 * and a Noise layer below (if any) agrees on the peer's id. Duplicate connections to one peer are
 * resolved here too: both sides keep the one initiated by the smaller node id (then nonce); the
 * other says GOAWAY and hands its queue over.
 */
import { toAddress } from '../../address'
import { DeccomError, ErrorCode } from '../../errors'
import { Identity } from '../../identity'
import {
  MAX_PUBLIC_IDENTITY, SIG_LEN, T_AUTH, T_GOAWAY, T_HELLO, T_OBSERVED, ZERO_ADDR,
  authMessage, decodeHello, decodeObserved, decodeRaw, encodeHello, encodeObserved,
} from './codec' // prettier-ignore
import type { Conn, ConnState, TcpHost } from './connection'
import { flush, safeIdOf, writeRaw } from './connection'

export function sendHello(t: TcpHost, c: Conn): void {
  const id = t.identity
  const body = encodeHello({ id: id.id, nonce: c.nonce, publicIdentity: id.publicIdentity, canSign: id.canSign, udpRaw: t.udp ? t.udp.raw : null, tcpPort: t.local?.port ?? 0 })
  writeRaw(t, c, body, T_HELLO)
}

export function onHello(t: TcpHost, c: Conn, b: Buffer): void {
  const h = c.gotHello ? null : decodeHello(b)
  if (h === null) return malformed(t, c)
  const { id, publicIdentity: pub } = h
  c.gotHello = true
  c.peerId = id
  c.peerNonce = h.nonce
  c.peerPublicIdentity = pub
  c.peerWantsAuth = h.wantsAuth
  c.peerWantsObserved = h.wantsObserved
  if (pub !== null && !safeIdOf(pub)?.equals(id)) return authFail(t, c, 'the node id is not the SHA-256 of the announced public identity')
  if (id.equals(t.identity.id)) return authFail(t, c, 'the peer claims our own node id (a connection to ourselves?)')
  const host = c.remote.host
  if (!h.udpRaw.equals(ZERO_ADDR)) c.peerUdp = decodeRaw(h.udpRaw, host)
  const tcpPort = h.tcpPort
  if (tcpPort !== 0) {
    try {
      c.peerTcp = toAddress(host, tcpPort)
    } catch {
      c.peerTcp = null
    }
  }
  // Tell the peer where we see its connection come from (its mapped address, behind a NAT).
  if (c.peerWantsObserved) writeRaw(t, c, encodeObserved(c.remote), T_OBSERVED)
  const me = t.identity
  if (me.canSign && me.publicIdentity.length <= MAX_PUBLIC_IDENTITY) {
    const sig = me.sign(authMessage(c.peerNonce, c.nonce, me.id, id))
    writeRaw(t, c, sig, T_AUTH)
  }
  maybeOpen(t, c)
}

export function onAuth(t: TcpHost, c: Conn, sig: Buffer): void {
  if (!c.gotHello || !c.peerWantsAuth || c.peerAuthed || sig.length !== SIG_LEN) return malformed(t, c)
  const msg = authMessage(c.nonce, c.peerNonce!, c.peerId!, t.identity.id)
  let ok = false
  try {
    ok = Identity.verify(c.peerPublicIdentity!.subarray(1), msg, sig)
  } catch {
    ok = false
  }
  if (!ok) return authFail(t, c, 'the introduction signature does not verify')
  c.peerAuthed = true
  maybeOpen(t, c)
}

export function onObserved(t: TcpHost, c: Conn, body: Buffer): void {
  const a = !c.gotHello || c.gotObserved ? 'malformed' : decodeObserved(body)
  if (a === 'malformed') return malformed(t, c)
  c.gotObserved = true
  if (!a) return t.count('dropped_bad_observation')
  c.observed = a
  if (c.peer) observe(t, c)
}

/** Records what the peer of an open connection reported in its OBSERVED frame. */
export function observe(t: TcpHost, c: Conn): void {
  const localPort = c.socket.localPort
  if (!c.observed || !c.peer || localPort === undefined) return
  t.observations.set(c.peer.idHex, { observer: c.peer.id, observerHex: c.peer.idHex, address: c.observed, localPort, at: t.clock.now() })
  t.count('observations')
}

export function onGoaway(t: TcpHost, c: Conn): void {
  if (c.gotGoaway) return malformed(t, c)
  c.gotGoaway = true
  if (c.state === 'open') {
    // The peer chose another connection to us; it is being introduced. Send nothing more here.
    c.state = 'draining'
    t.clock.clearTimeout(c.timer)
    c.timer = t.clock.setTimeout(() => {
      c.timer = undefined
      if (c.state === 'draining') t.close(c, 'remote')
    }, t.opts.handshakeTimeout)
  }
}

export function malformed(t: TcpHost, c: Conn): void {
  t.count('dropped_malformed')
  t.destroy(c, 'malformed')
}

export function authFail(t: TcpHost, c: Conn, why: string): void {
  t.count('auth_failed')
  t.log('introduction from %s refused: %s', c.remote.key, why)
  c.error = new DeccomError(ErrorCode.TCP_AUTH_FAILED, `The TCP peer at ${c.remote.key} failed authentication: ${why}`)
  t.destroy(c, 'error')
}

/** Opens the connection when the introduction is complete and checks out. */
export function maybeOpen(t: TcpHost, c: Conn): void {
  if (c.state !== 'hello' || !c.gotHello || (c.peerWantsAuth && !c.peerAuthed)) return
  if (t.requireAuth && !c.peerAuthed) return authFail(t, c, 'the introduction is not signed and requireAuthentication is set')
  const noise = t.noise
  if (!noise) return open(t, c, c.peerAuthed)
  const udp = c.peerUdp
  if (!udp) return authFail(t, c, 'no UDP address to check against the Noise session')
  c.state = 'checking'
  // Read nothing more until the check is done (the peer may already send data: it waits in the socket).
  c.socket.pause()
  const check = (): void => {
    if (c.state !== 'checking') return
    const nid = noise.remoteId(udp)
    if (!nid || !nid.equals(c.peerId!)) return authFail(t, c, `the Noise-authenticated id of ${udp.key} is ${nid ? nid.toString('hex').slice(0, 16) + '…' : 'unknown'}, not the claimed id`)
    c.state = 'hello'
    open(t, c, c.peerAuthed)
  }
  if (noise.remoteId(udp)) return check()
  noise.approveConnection(udp).then(check, check)
}

export function open(t: TcpHost, c: Conn, authenticated: boolean): void {
  const idHex = c.peerId!.toString('hex')
  t.pending.delete(c)
  c.peer = Object.freeze({ id: c.peerId!, idHex, authenticated, udpAddress: c.peerUdp, tcpAddress: c.peerTcp, remoteAddress: c.remote })
  observe(t, c)
  if (c.dialled && t.dialing.get(c.dialled.key) === c) t.dialing.delete(c.dialled.key)
  for (const a of [c.dialled, c.peerTcp]) {
    if (!a) continue
    const old = t.idOfAddr.get(a.key)
    if (old !== undefined && old !== idHex && t.addrOfId.get(old) === a) t.addrOfId.delete(old)
    t.idOfAddr.set(a.key, idHex)
    t.addrOfId.set(idHex, a)
  }
  t.clock.clearTimeout(c.timer)
  c.timer = undefined
  const existing = t.byId.get(idHex)
  if (existing && existing !== c) {
    t.count('duplicates_resolved')
    if (precedes(t, c, existing)) {
      t.byId.set(idHex, c)
      activate(t, c)
      supersede(t, existing, c)
    } else {
      c.state = 'open'
      supersede(t, c, existing)
    }
    return
  }
  t.byId.set(idHex, c)
  activate(t, c)
}

/** True when connection `a` must be kept over `b` (same peer): smaller initiator id, then nonce. */
export function precedes(t: TcpHost, a: Conn, b: Conn): boolean {
  const me = t.identity.id
  const ia = a.outbound ? me : a.peerId!
  const ib = b.outbound ? me : b.peerId!
  const cmp = Buffer.compare(ia, ib)
  if (cmp !== 0) return cmp < 0
  const na = a.outbound ? a.nonce : a.peerNonce!
  const nb = b.outbound ? b.nonce : b.peerNonce!
  return Buffer.compare(na, nb) < 0
}

/** `c` becomes the current connection of its peer. */
export function activate(t: TcpHost, c: Conn): void {
  c.state = c.gotGoaway ? 'draining' : 'open'
  t.log('connection to %s (%s) open', c.peer!.idHex.slice(0, 8), c.remote.key)
  const held = c.held
  c.held = []
  for (const [body, tag] of held) t.deliver(c, body, tag)
  if (!c.paused && (c.state as ConnState) !== 'closed') c.socket.resume()
  const waiters = c.waiters
  c.waiters = []
  for (const w of waiters) w.resolve(c.peer!)
  flush(t, c)
  if (c.refs === 0 && c.state === 'open') t.armIdle(c)
}

/** `loser` hands its queue, references and waiters to `winner`, says GOAWAY and half-closes. */
export function supersede(t: TcpHost, loser: Conn, winner: Conn): void {
  loser.state = 'superseded'
  t.clock.clearTimeout(loser.timer)
  winner.refs += loser.refs
  loser.refs = 0
  for (let i = loser.qhead; i < loser.queue.length; i++) {
    winner.queue.push(loser.queue[i])
    winner.queuedBytes += loser.queue[i].data.length
  }
  loser.queue.length = 0
  loser.qhead = 0
  loser.queuedBytes = 0
  const held = loser.held
  loser.held = []
  for (const [body, tag] of held) t.deliver(loser, body, tag)
  if (loser.waiters.length) {
    if (winner.state === 'open' || winner.state === 'draining') for (const w of loser.waiters) w.resolve(winner.peer!)
    else winner.waiters.push(...loser.waiters)
    loser.waiters = []
  }
  if (!loser.paused) loser.socket.resume()
  if (loser.ended) loser.socket.once('finish', () => t.destroy(loser, 'remote'))
  writeRaw(t, loser, Buffer.alloc(0), T_GOAWAY)
  loser.socket.end()
  // Read it to the end (the peer half-closes too); bounded by the handshake timeout.
  loser.timer = t.clock.setTimeout(() => {
    loser.timer = undefined
    t.destroy(loser, 'remote')
  }, t.opts.handshakeTimeout)
  if (winner.refs > 0) {
    t.clock.clearTimeout(winner.timer)
    winner.timer = undefined
  }
  flush(t, winner)
}
