/**
 * The native socket's stage commands, straight on `native.UdpSocket`: calls that concern a stage are
 * validated on the JavaScript thread (errors stay synchronous and typed) and then queued for the
 * I/O thread; ids and completions match; the counters snapshot is published before the batch.
 * Imports the BUILT package.
 */
import test from 'ava'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Identity } from '../dist/index.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const native = createRequire(join(root, 'package.json'))('./native/index.js')

const RUDP = 2
const NOISE = 4

interface Batch {
  messages?: Buffer[] | null
  completions?: Float64Array | null
}

/** A bound socket whose batches are collected. */
function open(): { sock: any; addr: Buffer; batches: Batch[]; wait: (pred: () => boolean, ms?: number) => Promise<boolean> } {
  const batches: Batch[] = []
  const sock = native.UdpSocket.bind('127.0.0.1', 0, {}, () => {
    for (let b = sock.take(); b !== null; b = sock.take()) batches.push(b)
  })
  const addr = native.encodeAddress('127.0.0.1', sock.localAddress().port)
  const wait = async (pred: () => boolean, ms = 5000): Promise<boolean> => {
    const end = Date.now() + ms
    while (!pred()) {
      if (Date.now() > end) return false
      await new Promise((r) => setTimeout(r, 5))
    }
    return true
  }
  return { sock, addr, batches, wait }
}

test('stage calls are validated on the JavaScript thread: errors are synchronous and typed', (t) => {
  const a = open()
  const b = open()
  try {
    t.throws(() => a.sock.rudpSendCopy(b.addr, 0, Buffer.from('x')), { message: /^ERR_DECCOM_INVALID_ARGUMENT/ })
    t.throws(() => a.sock.noiseConnect(b.addr), { message: /^ERR_DECCOM_INVALID_ARGUMENT/ })
    t.throws(() => a.sock.setDelayLink('send', b.addr, 1, 0), { message: /^ERR_DECCOM_INVALID_ARGUMENT/ })
    t.throws(() => a.sock.rudpSendCopy(Buffer.alloc(5), 0, Buffer.from('x')), { message: /^ERR_DECCOM_INVALID_ADDRESS/ })

    a.sock.attachRudp(RUDP, { maxMessageSize: 100 })
    t.throws(() => a.sock.attachRudp(RUDP, {}), { message: /^ERR_DECCOM_INVALID_ARGUMENT/ })
    t.throws(() => a.sock.rudpSendCopy(b.addr, 0, Buffer.alloc(101)), { message: /^ERR_DECCOM_MESSAGE_TOO_LARGE/ })
    t.throws(() => a.sock.rudpSend(b.addr, 0, Buffer.alloc(101)), { message: /^ERR_DECCOM_MESSAGE_TOO_LARGE/ })
    // Stages are composed bottom first: nothing goes under the reliable endpoint once it is there.
    t.throws(() => a.sock.attachNoise(Identity.generate().native, NOISE, {}), { message: /^ERR_DECCOM_INVALID_ARGUMENT.*before the reliable-UDP/ })
    t.throws(() => a.sock.setFaults('receive', { drop: 0.1 }), { message: /^ERR_DECCOM_INVALID_ARGUMENT.*bottom first/ })
    t.throws(() => a.sock.setDelay('send', 1024), { message: /^ERR_DECCOM_INVALID_ARGUMENT.*bottom first/ })
    t.throws(() => a.sock.setFaults('sideways', null), { message: /^ERR_DECCOM_INVALID_ARGUMENT/ })

    // The per-peer limit (1024 outstanding messages) is checked before queuing: b never answers.
    b.sock.close()
    const ids = new Set<number>()
    for (let i = 0; i < 1024; i++) ids.add(a.sock.rudpSendCopy(b.addr, 0, Buffer.alloc(100)))
    t.is(ids.size, 1024, 'every send has its own id')
    t.throws(() => a.sock.rudpSendCopy(b.addr, 0, Buffer.alloc(1)), { message: /^ERR_DECCOM_SEND_QUEUE_FULL/ })
    // Another peer has its own budget.
    t.notThrows(() => a.sock.rudpSendCopy(native.encodeAddress('127.0.0.1', 9), 0, Buffer.alloc(1)))
  } finally {
    a.sock.close()
    b.sock.close()
  }
  t.throws(() => a.sock.rudpSendCopy(b.addr, 0, Buffer.from('x')), { message: /^ERR_DECCOM_CLOSED/ })
})

test('a queued reliable send completes with the id it was given; the counters are published before the batch', async (t) => {
  const a = open()
  const b = open()
  try {
    a.sock.attachRudp(RUDP, {})
    b.sock.attachRudp(RUDP, {})
    const big = Buffer.alloc(200_000, 7)
    const id1 = a.sock.rudpSendCopy(b.addr, 0, Buffer.from('small'))
    const id2 = a.sock.rudpSend(b.addr, 9, big)
    t.not(id1, id2)
    const completions = (): number[] => a.batches.flatMap((x) => [...(x.completions ?? [])])
    // The first small send of a burst may leave at once on this thread; the sends behind it wait
    // on the JavaScript side until flush() hands them to the I/O thread together (UdpTransport
    // calls it in a microtask after the first send of a turn).
    await new Promise((r) => setTimeout(r, 50))
    t.false(completions().includes(id2), 'the large send did not leave before flush() (b answers within a millisecond)')
    a.sock.flush()
    t.true(await a.wait(() => completions().length >= 4), 'both sends complete')
    t.deepEqual(completions(), [id1, 0, id2, 0])
    // Every message in arrival order: small ones (<= 16 KiB) are views into the batch's packed
    // buffer, large ones come one buffer each.
    const messages = b.batches.flatMap((x) => {
      const out: Buffer[] = []
      let at = 0
      let large = 0
      for (const len of x.messageLens ?? []) {
        if (len === 0xffffffff) out.push(x.messages![large++])
        else {
          out.push(x.packedMessages!.subarray(at, at + len))
          at += len
        }
      }
      return out
    })
    t.is(messages.length, 2)
    t.is(b.batches.flatMap((x) => x.messages ?? []).length, 1, 'only the 200 kB message has a buffer of its own')
    t.deepEqual(messages[0], Buffer.from([0, ...Buffer.from('small')]))
    t.is(messages[1][0], 9)
    t.true(messages[1].subarray(1).equals(big))
    // Read at once, without waiting for anything: the snapshot is at least as new as the batches.
    t.is(a.sock.pipelineStats().rudp_messages_sent, 2)
    t.is(b.sock.pipelineStats().rudp_messages_delivered, 2)
  } finally {
    a.sock.close()
    b.sock.close()
  }
})
