/**
 * connect(id) dials the first address discovery learns for the target while discovery still
 * verifies it (ts/connection/manager.ts): the HELLO leaves as soon as the authenticating layer
 * proved the id there, not after the lookup. A fake host stands in for the stack, so the order of
 * events is exact. Imports the BUILT package (dist/).
 */
import test from 'ava'
import crypto from 'node:crypto'

import { decodeMux, encodeMux, ErrorCode, Peer, toAddress } from '../dist/index.js'
import { Connections, type ConnectionHost } from '../dist/connection/manager.js'
import { realClock } from '../dist/clock.js'

interface Fake {
  host: ConnectionHost
  /** Frames sent, in order, with where they went. */
  sent: Array<{ to: string; type: string }>
  log: string[]
  counters: Record<string, number>
  /** Resolves the pending findPeer with `peer`. */
  found: (peer: Peer) => void
  /** Sets who authenticates at an address (a different id: a mismatch). */
  idAt: Map<string, Buffer>
}

function fake(candidate: Peer | null): Fake {
  const f: Partial<Fake> = { sent: [], log: [], counters: {}, idAt: new Map() }
  let resolveFind!: (p: Peer) => void
  f.found = (p) => {
    f.log!.push('findPeer resolved')
    resolveFind(p)
  }
  f.host = {
    clock: realClock,
    sendMessage: async (to, frame) => {
      const m = decodeMux(frame)
      f.sent!.push({ to: to.key, type: m?.type ?? '?' })
      f.log!.push(`sent ${m?.type} to ${to.key}`)
    },
    findPeer: (_id, _signal, onCandidate) =>
      new Promise<Peer>((resolve) => {
        resolveFind = resolve
        if (candidate) onCandidate?.(candidate)
      }),
    authenticate: async (peer) => {
      const id = f.idAt!.get(peer.address.key) ?? peer.id!
      if (!id.equals(peer.id!)) throw Object.assign(new Error('mismatch'), { code: ErrorCode.PEER_IDENTITY_MISMATCH })
      return new Peer(peer.address, id, null, null, true)
    },
    tcp: undefined,
    punch: undefined,
    accept: () => {},
    count: (name, n = 1) => void (f.counters![name] = (f.counters![name] ?? 0) + n),
  }
  return f as Fake
}

/** The nonce of the HELLO being answered next. */
let lastNonce: Buffer | null = null

/** `to` answers our HELLO (the one whose nonce is `lastNonce`). */
function answer(m: Connections, to: Peer): void {
  m.onMessage(to, encodeMux({ type: 'HELLO', nonce: crypto.randomBytes(8), echo: lastNonce!, maxStreams: 16, maxData: 1 << 20, streamWindow: 1 << 16 }))
}

const id = crypto.randomBytes(32)
const at = (port: number): Peer => new Peer(toAddress('127.0.0.1', port), id, null, null, false)

test('the HELLO goes to the first claimed address before discovery resolves; the dial after discovery joins it', async (t) => {
  const claim = at(4001)
  const f = fake(claim)
  const wrap = f.host.sendMessage!
  f.host.sendMessage = async (to, frame) => {
    const m = decodeMux(frame)
    if (m?.type === 'HELLO') lastNonce = m.nonce
    return wrap(to, frame)
  }
  const m = new Connections(f.host)
  const connecting = m.connect(id, { signal: AbortSignal.timeout(3000) })
  await new Promise((r) => setImmediate(r))
  t.deepEqual(f.log, ['sent HELLO to 127.0.0.1:4001'], 'the HELLO left while discovery was still verifying')
  f.found(new Peer(claim.address, id, null, null, true))
  await new Promise((r) => setImmediate(r))
  answer(m, new Peer(claim.address, id, null, null, true))
  const conn = await connecting
  t.is(conn.remote.address.key, '127.0.0.1:4001')
  t.is(f.sent.filter((s) => s.type === 'HELLO').length, 1, 'one HELLO: the dial after discovery joined the early one')
  t.is(f.counters.early_dials, 1)
  t.is(f.counters.dials, 1)
  t.is(f.counters.early_dials_discarded, undefined)
  await m.close(0)
})

test('a claim whose handshake proves another id gets no HELLO; the address discovery settles on does', async (t) => {
  const claim = at(4002)
  const f = fake(claim)
  f.idAt.set(claim.address.key, crypto.randomBytes(32)) // an impostor answers there
  const m = new Connections(f.host)
  const connecting = m.connect(id, { signal: AbortSignal.timeout(3000) })
  await new Promise((r) => setImmediate(r))
  t.deepEqual(f.sent, [], 'nothing sent to an address that did not prove the id')
  const real = new Peer(toAddress('127.0.0.1', 4003), id, null, null, true)
  f.found(real)
  await new Promise((r) => setImmediate(r))
  t.deepEqual(f.sent, [{ to: '127.0.0.1:4003', type: 'HELLO' }])
  connecting.catch(() => {})
  await m.close(0)
})

test('an early connection at an address discovery did not settle on is closed', async (t) => {
  const claim = at(4004)
  const f = fake(claim)
  let nonceByKey = new Map<string, Buffer>()
  const wrap = f.host.sendMessage!
  f.host.sendMessage = async (to, frame) => {
    const m = decodeMux(frame)
    if (m?.type === 'HELLO') nonceByKey.set(to.key, m.nonce)
    return wrap(to, frame)
  }
  const m = new Connections(f.host)
  const connecting = m.connect(id, { signal: AbortSignal.timeout(3000) })
  await new Promise((r) => setImmediate(r))
  const other = new Peer(toAddress('127.0.0.1', 4005), id, null, null, true)
  f.found(other)
  await new Promise((r) => setImmediate(r))
  t.is(f.counters.early_dials_discarded, 1)
  // Both peers answer: the early connection completes and is closed; the chosen one is returned.
  for (const p of [new Peer(claim.address, id, null, null, true), other]) {
    lastNonce = nonceByKey.get(p.address.key)!
    answer(m, p)
  }
  const conn = await connecting
  t.is(conn.remote.address.key, '127.0.0.1:4005')
  await new Promise((r) => setTimeout(r, 20))
  t.deepEqual(m.list().map((c) => c.remote.address.key), ['127.0.0.1:4005'])
  t.true(f.sent.some((s) => s.to === '127.0.0.1:4004' && s.type === 'CLOSE'), 'the early connection was closed')
  nonceByKey = new Map()
  await m.close(0)
})


/** Records the nonce of the HELLO `f` sends (per test: tests run concurrently). */
function helloNonce(f: Fake): () => Buffer {
  let n: Buffer | null = null
  const wrap = f.host.sendMessage!
  f.host.sendMessage = async (to, frame) => {
    const m = decodeMux(frame)
    if (m?.type === 'HELLO') n = m.nonce
    return wrap(to, frame)
  }
  return () => n!
}

/** `to` answers the HELLO whose nonce is `echo`. */
function answerWith(m: Connections, to: Peer, echo: Buffer): void {
  m.onMessage(to, encodeMux({ type: 'HELLO', nonce: crypto.randomBytes(8), echo, maxStreams: 16, maxData: 1 << 20, streamWindow: 1 << 16 }))
}

test('an early connection whose handshake proved the id is returned at once: the lookup is ended, not awaited', async (t) => {
  const claim = at(4006)
  const f = fake(claim)
  let lookupSignal: AbortSignal | undefined
  const find = f.host.findPeer
  f.host.findPeer = (i, signal, onCandidate) => {
    lookupSignal = signal
    return find(i, signal, onCandidate)
  }
  const ours = helloNonce(f)
  const m = new Connections(f.host)
  const connecting = m.connect(id, { signal: AbortSignal.timeout(3000) })
  await new Promise((r) => setImmediate(r))
  t.false(lookupSignal!.aborted, 'the lookup runs while the early dial does')
  answerWith(m, new Peer(claim.address, id, null, null, true), ours()) // discovery never resolves
  const conn = await connecting
  t.is(conn.remote.address.key, '127.0.0.1:4006')
  t.true(conn.remote.id!.equals(id))
  t.true(lookupSignal!.aborted, 'the lookup was ended')
  t.is(f.counters.early_dials_won, 1)
  t.is(f.log.includes('findPeer resolved'), false)
  await m.close(0)
})

test('discovery fails while an early dial proves the id: connect returns the early connection', async (t) => {
  const claim = at(4007)
  const f = fake(claim)
  let failFind!: (e: Error) => void
  f.host.findPeer = (_i, _signal, onCandidate) =>
    new Promise<Peer>((_resolve, reject) => {
      failFind = reject
      onCandidate?.(claim)
    })
  const ours = helloNonce(f)
  const m = new Connections(f.host)
  const connecting = m.connect(id, { signal: AbortSignal.timeout(3000) })
  await new Promise((r) => setImmediate(r))
  failFind(Object.assign(new Error('lookup timed out'), { code: 'ERR_DECCOM_LOOKUP_TIMEOUT' }))
  await new Promise((r) => setImmediate(r))
  answerWith(m, new Peer(claim.address, id, null, null, true), ours())
  const conn = await connecting
  t.is(conn.remote.address.key, '127.0.0.1:4007')
  t.is(f.counters.early_dials_won, 1)
  await m.close(0)
})

test('discovery fails and the early dial proves nothing: the lookup error is what connect rejects with', async (t) => {
  const claim = at(4008)
  const f = fake(claim)
  f.idAt.set(claim.address.key, crypto.randomBytes(32)) // an impostor answers there
  f.host.findPeer = (_i, _signal, onCandidate) =>
    new Promise<Peer>((_resolve, reject) => {
      onCandidate?.(claim)
      setImmediate(() => reject(Object.assign(new Error('lookup timed out'), { code: 'ERR_DECCOM_LOOKUP_TIMEOUT' })))
    })
  const m = new Connections(f.host)
  await t.throwsAsync(m.connect(id, { signal: AbortSignal.timeout(3000) }), { code: 'ERR_DECCOM_LOOKUP_TIMEOUT' })
  t.deepEqual(f.sent, [], 'nothing sent to the impostor')
  t.is(f.counters.early_dials_won, undefined)
  await m.close(0)
})
