/**
 * ReliableUdp.send progress and cancellation (`{ onProgress, signal }`), on real loopback sockets:
 * the native endpoint, the JavaScript-driven one (forceJs), and the native endpoint under native
 * Noise. A native bandwidth-limited Delay line keeps a 32 MiB message in flight long enough to be
 * watched and aborted half-way. Imports the BUILT package (dist/).
 */
import test from 'ava'
import crypto from 'node:crypto'

import { Delay, ErrorCode, Identity, Node, Noise, ReliableUdp } from '../dist/index.js'
import { n, until } from './helpers/wait'

type Mode = 'native' | 'js' | 'noise'
const MODES: Mode[] = ['native', 'js', 'noise']
const BIG = 32 << 20
/** 60 MB/s one way, 2 ms latency: 32 MiB take about half a second. */
const link = () => new Delay({ latency: () => 2, bandwidth: () => 60_000 })

async function pair(t: any, mode: Mode) {
  const mk = (name: string) =>
    Node.create({
      identity: mode === 'noise' ? Identity.generate() : Identity.fromString(`${name}-${mode}`),
      host: '127.0.0.1',
      recvBufferSize: 8 << 20,
      stack: mode === 'noise' ? [new ReliableUdp(), new Noise(), link()] : [new ReliableUdp({ forceJs: mode === 'js' }), link()],
    })
  const a = await mk('a')
  const b = await mk('b')
  t.teardown(() => Promise.all([a.close(), b.close()]))
  const rudp = a.stack.find(ReliableUdp)!
  t.is(rudp.mode, mode === 'js' ? 'js' : 'native')
  if (mode === 'noise') t.true(a.stack.find(Noise)!.native, 'Noise runs natively under ReliableUdp')
  const received: Buffer[] = []
  b.on('message', (_from: unknown, data: Buffer) => received.push(data))
  return { a, b, rudp, received }
}

/** The reliable-UDP counters of a node, wherever its endpoint runs. */
const rudpStats = (node: Node): Record<string, number> => ({ ...node.stats().udp, ...node.stats()['reliable-udp'] })

const digest = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex')

for (const mode of MODES) {
  test(`${mode}: a 32 MiB send reports increasing progress ending at (total, total) before it resolves`, async (t) => {
    const { a, b, rudp, received } = await pair(t, mode)
    const data = crypto.randomBytes(BIG)
    const calls: Array<[number, number]> = []
    let resolved = false
    await rudp.send(b.address, data, undefined, {
      onProgress: (acked, total) => {
        t.false(resolved, 'progress is reported before the promise resolves')
        calls.push([acked, total])
      },
    })
    resolved = true
    t.deepEqual(calls[calls.length - 1], [BIG, BIG])
    t.true(calls.every(([, total]) => total === BIG))
    t.true(calls.every(([acked], i) => i === 0 || acked > calls[i - 1][0]), 'strictly increasing')
    t.log(`${calls.length} progress reports`)
    t.true(calls.length >= 4, `${calls.length} reports over a transfer of about half a second`)
    t.true(calls.length <= BIG / (256 << 10) + 1, `bounded: ${calls.length} reports (at most one per 256 KiB, and the final one)`)
    t.true(await until(() => received.length === 1, 10_000))
    t.is(digest(received[0]), digest(data))
    // Sends without onProgress pay nothing and get no calls; bytes_sent counts acknowledged data.
    await rudp.send(b.address, Buffer.from('no progress asked'))
    t.is(rudpStats(a).bytes_sent, BIG + 17)
    t.is(rudpStats(a).bytes_queued, BIG + 17)
  })

  test(`${mode}: aborting mid-way rejects with ERR_DECCOM_ABORTED at once; the next message arrives and the receiver frees the partial`, async (t) => {
    const { a, b, rudp, received } = await pair(t, mode)
    // Warm up (and, under Noise, complete the handshake).
    await rudp.send(b.address, Buffer.from('hello'))
    const ac = new AbortController()
    let abortedAt = 0
    let lastProgress = 0
    const big = rudp.send(b.address, crypto.randomBytes(BIG), undefined, {
      signal: ac.signal,
      onProgress: (acked) => {
        lastProgress = acked
        if (acked >= BIG / 4 && abortedAt === 0) {
          abortedAt = performance.now()
          ac.abort(new Error('user gave up'))
        }
      },
    })
    const err = await t.throwsAsync(big)
    const latency = performance.now() - abortedAt
    t.true(abortedAt > 0, 'aborted from a progress report')
    t.is((err as { code?: string }).code, ErrorCode.ABORTED)
    t.true(latency < 100, `rejected ${latency.toFixed(1)} ms after abort()`)
    t.true(lastProgress < BIG, 'aborted before the end')
    const progressAtAbort = lastProgress
    t.log(`aborted at ${(progressAtAbort / 2 ** 20).toFixed(1)} MiB acknowledged; rejected after ${latency.toFixed(2)} ms`)

    // Another message to the same peer still goes through, and tells the receiver to free the partial.
    await rudp.send(b.address, Buffer.from('after the abort'))
    t.true(await until(() => received.some((m) => m.toString() === 'after the abort'), 10_000))
    t.true(
      await until(() => n(rudpStats(b).rudp_partials_abandoned) === 1 && n(rudpStats(b).rudp_reassembly_bytes) === 0, 5_000),
      `receiver: ${JSON.stringify({ abandoned: rudpStats(b).rudp_partials_abandoned, charged: rudpStats(b).rudp_reassembly_bytes })}`,
    )
    t.deepEqual(received.map((m) => m.toString()), ['hello', 'after the abort'], 'the aborted message was never delivered')
    t.true(await until(() => n(rudpStats(a).rudp_messages_cancelled) === 1, 2_000))
    t.is(rudpStats(a).messages_aborted, 1)
    t.is(lastProgress, progressAtAbort, 'no progress after the abort')
  })

  test(`${mode}: an already-aborted signal rejects before anything is queued`, async (t) => {
    const { b, rudp, a } = await pair(t, mode)
    const ac = new AbortController()
    ac.abort()
    const before = n(rudpStats(a).messages_sent)
    const err = await t.throwsAsync(rudp.send(b.address, Buffer.alloc(1000), undefined, { signal: ac.signal, onProgress: () => t.fail('no progress') }))
    t.is((err as { code?: string }).code, ErrorCode.ABORTED)
    t.is(n(rudpStats(a).messages_sent), before, 'nothing was queued')
    // Aborting after the promise settled changes nothing.
    const late = new AbortController()
    await rudp.send(b.address, Buffer.from('done'), undefined, { signal: late.signal })
    late.abort()
    t.is(n(rudpStats(a).messages_aborted), 0)
  })
}
