/**
 * ReliableUdp against hostile peers, on real loopback sockets (native path): attackers on raw
 * node:dgram sockets that try to hold the reassembly budget with crafted first segments, forge
 * ACKs under random epochs, or flip bits in transit (through a relay between the two nodes).
 * Crafted datagrams are written in both wire versions (1: no checksum, 2: CRC32C trailer), so the
 * attacks are the same against an endpoint of either version. Imports the BUILT package (dist/).
 */
import test from 'ava'
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import fs from 'node:fs'
import path from 'node:path'

import { ErrorCode, Identity, Node, ReliableUdp } from '../dist/index.js'
import { sleep, until } from './helpers/wait.ts'

const TAG = 2
const LOCAL = '127.0.0.1'

const CRC_TABLE = (() => {
  const t = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    t[n] = c >>> 0
  }
  return t
})()

/** CRC32C (Castagnoli), the reliable-UDP checksum. */
function crc32c(b: Uint8Array): number {
  let c = 0xffffffff
  for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

/** `[tag][datagram]`, version 1 (no trailer) or 2 (CRC32C trailer). */
function seal(version: 1 | 2, body: Buffer): Buffer {
  body[0] = version
  const parts = [Buffer.from([TAG]), body]
  if (version === 2) {
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32c(body))
    parts.push(crc)
  }
  return Buffer.concat(parts)
}

interface DataFields { src: bigint; dst: bigint; pn: bigint; msgId: bigint; floorDelta: number; len: number; segSize: number; index: number; payload: Buffer }

function dataDatagram(version: 1 | 2, f: DataFields): Buffer {
  const b = Buffer.alloc(48 + f.payload.length)
  b[1] = 0x11
  b.writeBigUInt64BE(f.src, 2)
  b.writeBigUInt64BE(f.dst, 10)
  b.writeBigUInt64BE(f.pn, 18)
  b.writeBigUInt64BE(f.msgId, 26)
  b.writeUInt16BE(f.floorDelta, 34)
  b.writeUInt32BE(f.len, 36)
  b.writeUInt32BE(f.segSize, 40)
  b.writeUInt32BE(f.index, 44)
  f.payload.copy(b, 48)
  return seal(version, b)
}

function ackDatagram(version: 1 | 2, src: bigint, dst: bigint, ranges: Array<[bigint, bigint]>): Buffer {
  const b = Buffer.alloc(28 + 16 * ranges.length)
  b[1] = 0x02
  b.writeBigUInt64BE(src, 2)
  b.writeBigUInt64BE(dst, 10)
  b.writeUInt32BE(0, 18)
  b.writeUInt32BE(65_536, 22)
  b[26] = ranges.length
  ranges.forEach(([start, end], i) => {
    b.writeBigUInt64BE(end, 27 + 16 * i)
    b.writeBigUInt64BE(start, 35 + 16 * i)
  })
  b[27 + 16 * ranges.length] = 0
  return seal(version, b)
}

const randomEpoch = (): bigint => crypto.randomBytes(8).readBigUInt64BE() | 1n

async function socket(t: any): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((resolve) => s.bind(0, LOCAL, resolve))
  t.teardown(() => s.close())
  return s
}


async function node(t: any, name: string, opts: ConstructorParameters<typeof ReliableUdp>[0] = {}): Promise<Node> {
  const n = await Node.create({ identity: Identity.fromString(name), host: LOCAL, stack: [new ReliableUdp(opts)] })
  t.teardown(() => n.close())
  return n
}

/** Resolves with what `p` settled to, or 'pending' after `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<'pending' | { ok: T } | { err: any }> {
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([
    p.then((ok) => ({ ok }), (err) => ({ err })),
    new Promise<'pending'>((resolve) => { timer = setTimeout(() => resolve('pending'), ms) }),
  ])
  clearTimeout(timer)
  return r
}

/**
 * A relay between A and B: A sends to `aSide`, B sees the relay's other socket as A. `tamper`
 * may change a datagram in either direction or drop it (return null).
 */
async function relay(t: any, bPort: number, tamper: (dir: 'ab' | 'ba', msg: Buffer) => Buffer | null) {
  const aSide = await socket(t)
  const bSide = await socket(t)
  let a: dgram.RemoteInfo | undefined
  aSide.on('message', (msg, rinfo) => {
    a = rinfo
    const out = tamper('ab', msg)
    if (out) bSide.send(out, bPort, LOCAL)
  })
  bSide.on('message', (msg) => {
    const out = tamper('ba', msg)
    if (out && a) aSide.send(out, a.port, a.address)
  })
  return {
    aSide,
    bSide,
    /** Sends `msg` to A as if it came from B (A's view of B is the relay). */
    toA: (msg: Buffer) => { if (a) aSide.send(msg, a.port, a.address) },
    /** Sends `msg` to B as if it came from A. */
    toB: (msg: Buffer) => bSide.send(msg, bPort, LOCAL),
  }
}

test('the checksum helper agrees with the wire vectors', (t) => {
  const f = JSON.parse(fs.readFileSync(path.join(process.cwd(), 'test-vectors', 'rudp.json'), 'utf8'))
  for (const v of f.valid) {
    const b = Buffer.from(v.hex, 'hex')
    t.is(crc32c(b.subarray(0, b.length - 4)), b.readUInt32BE(b.length - 4), v.name)
  }
})

test('(a) crafted first segments cannot hold the reassembly budget: a legit 1 MiB send completes, RSS does not grow by the announced totals', async (t) => {
  const peerTimeout = 4000
  const b = await node(t, 'hostile-a-b', { peerTimeout })
  const a = await node(t, 'hostile-a-a', { peerTimeout })
  const stats = () => b.stats().udp
  await a.send(b.address, Buffer.from('warm up'))
  global.gc?.()
  const rss0 = process.memoryUsage().rss
  const announced = 256 << 20
  // 40 sources that never answer anything, 15 first segments each at scattered offsets of one
  // announced 256 MiB message, in both versions: 40 × 256 MiB announced.
  const sources = await Promise.all(Array.from({ length: 40 }, () => socket(t)))
  let sentBytes = 0
  for (const [i, s] of sources.entries()) {
    const src = BigInt(1000 + i)
    for (let k = 0; k < 15; k++) {
      for (const v of [1, 2] as const) {
        const d = dataDatagram(v, { src, dst: 0n, pn: BigInt(k), msgId: 0n, floorDelta: 0, len: announced, segSize: 1200, index: (k * 7919 + i * 104_729) % 200_000, payload: Buffer.alloc(1200, 0x55) })
        sentBytes += d.length
        s.send(d, b.address.port, LOCAL)
      }
    }
    await sleep(2) // not faster than the receive buffer drains
  }
  // One attacker that does read B's answers and echoes B's epoch, then scatters segments over
  // eight announced 256 MiB messages.
  const proven = await socket(t)
  const epoch = new Promise<{ version: 1 | 2; epoch: bigint }>((resolve) => {
    proven.on('message', (msg) => {
      if (msg[0] === TAG && (msg[2] & 0x0f) === 2) resolve({ version: msg[1] as 1 | 2, epoch: msg.readBigUInt64BE(3) })
    })
  })
  for (let tries = 0; tries < 5; tries++) {
    for (const v of [1, 2] as const) {
      proven.send(dataDatagram(v, { src: 5555n, dst: 0n, pn: BigInt(tries), msgId: 0n, floorDelta: 0, len: 5, segSize: 1200, index: 0, payload: Buffer.from('hello') }), b.address.port, LOCAL)
    }
    if ((await within(epoch, 200)) !== 'pending') break
  }
  const learned = await within(epoch, 2000)
  t.not(learned, 'pending', 'B answered the attacker')
  if (learned !== 'pending' && 'ok' in learned) {
    const { version, epoch: bEpoch } = learned.ok
    for (let k = 1; k < 400; k++) {
      const msgId = BigInt(1 + (k % 8))
      const d = dataDatagram(version, { src: 5555n, dst: bEpoch, pn: BigInt(k), msgId, floorDelta: Number(msgId), len: announced, segSize: 1200, index: (k * 874) % 223_000, payload: Buffer.alloc(1200, 1) })
      sentBytes += d.length
      proven.send(d, b.address.port, LOCAL)
      if (k % 50 === 0) await sleep(1)
    }
  }
  await sleep(300)
  // The legitimate sender is served (or refused with a typed error within its peer timeout).
  const msg = crypto.randomBytes(1 << 20)
  const got = new Promise<Buffer>((resolve) => b.on('message', (_from, data) => { if (data.length === msg.length) resolve(data) }))
  const t0 = performance.now()
  const r = await within(a.send(b.address, msg), peerTimeout + 3000)
  const ms = performance.now() - t0
  t.not(r, 'pending', `the 1 MiB send neither completed nor failed in ${ms.toFixed(0)} ms`)
  if (r !== 'pending' && 'err' in r) {
    t.true([ErrorCode.MESSAGE_REFUSED, ErrorCode.PEER_UNREACHABLE].includes(r.err.code), String(r.err))
    t.true(ms < peerTimeout + 2000, `typed error after ${ms.toFixed(0)} ms`)
  } else if (r !== 'pending') {
    t.true((await got).equals(msg))
  }
  await sleep(500)
  const grew = process.memoryUsage().rss - rss0
  const s = stats()
  t.log(`attacker sent ${(sentBytes / 1e6).toFixed(1)} MB announcing ${41 * 256} MiB+; RSS +${(grew / 2 ** 20).toFixed(0)} MiB; charged ${(s.rudp_reassembly_bytes / 2 ** 20).toFixed(1)} MiB; refused busy ${s.rudp_dropped_reassembly_full}; send ${r === 'pending' ? 'pending' : 'ok' in r ? 'completed' : 'failed'} in ${ms.toFixed(0)} ms`)
  t.true(grew < 160 * 2 ** 20, `RSS grew by ${(grew / 2 ** 20).toFixed(0)} MiB`)
  t.true(s.rudp_reassembly_bytes < 96 * 2 ** 20, `charged ${s.rudp_reassembly_bytes}`)
  t.true(s.rudp_dropped_reassembly_full > 0, 'attack segments were refused')
})

test('(b) a forged ACK under a random epoch does not break the session: later sends work both ways', async (t) => {
  const b = await node(t, 'hostile-b-b', { peerTimeout: 5000 })
  const a = await node(t, 'hostile-b-a', { peerTimeout: 5000 })
  const r = await relay(t, b.address.port, (_dir, msg) => msg)
  const bSeen = `${LOCAL}:${r.aSide.address().port}`
  let aAsSeenByB: any
  const atB: string[] = []
  const atA: string[] = []
  b.on('message', (from, data) => { aAsSeenByB = from; atB.push(data.toString()) })
  a.on('message', (_from, data) => { atA.push(data.toString()) })
  await a.send(bSeen, Buffer.from('a1'))
  // A's send resolves on B's acknowledgement, which leaves B's socket thread before B's
  // JavaScript has handled the message: wait for the event.
  t.true(await until(() => aAsSeenByB !== undefined, 3000), "B's 'message' event for a1")
  await b.send(aAsSeenByB, Buffer.from('b1'))
  // Forged ACKs, in both versions, from "B" to A and from "A" to B.
  for (const v of [1, 2] as const) {
    for (const dst of [0n, randomEpoch()]) {
      r.toA(ackDatagram(v, randomEpoch(), dst, [[0n, 3n]]))
      r.toB(ackDatagram(v, randomEpoch(), dst, [[0n, 3n]]))
    }
  }
  await sleep(200)
  for (let i = 2; i <= 4; i++) {
    const ra = await within(a.send(bSeen, Buffer.from(`a${i}`)), 4000)
    t.true(ra !== 'pending' && 'ok' in ra, `A→B send ${i} after the forgery: ${JSON.stringify(ra)}`)
    const rb = await within(b.send(aAsSeenByB, Buffer.from(`b${i}`)), 4000)
    t.true(rb !== 'pending' && 'ok' in rb, `B→A send ${i} after the forgery: ${JSON.stringify(rb)}`)
  }
  await until(() => atB.length >= 4 && atA.length >= 4, 3000)
  t.deepEqual(atB, ['a1', 'a2', 'a3', 'a4'])
  t.deepEqual(atA, ['b1', 'b2', 'b3', 'b4'])
  t.is(a.stats().udp.rudp_peer_resets, 0)
  t.is(b.stats().udp.rudp_peer_resets, 0)
  t.true(a.stats().udp.rudp_dropped_unproven_epoch >= 2, 'the version-2 forgeries were counted')
})

test('(c) a flipped bit in a message id is dropped and counted; send() does not resolve for a message that was not delivered', async (t) => {
  const b = await node(t, 'hostile-c-b', { peerTimeout: 10_000 })
  const a = await node(t, 'hostile-c-a', { peerTimeout: 10_000 })
  let flipping = false
  let flipped = 0
  const r = await relay(t, b.address.port, (dir, msg) => {
    // DATA from A: flip the lowest bit of the message id (message 1 then reads as 0, delivered).
    if (flipping && dir === 'ab' && msg[0] === TAG && (msg[2] & 0x0f) === 1) {
      msg[1 + 33] ^= 1
      flipped++
    }
    return msg
  })
  const bSeen = `${LOCAL}:${r.aSide.address().port}`
  const atB: string[] = []
  b.on('message', (_from, data) => atB.push(data.toString()))
  await a.send(bSeen, Buffer.from('first'))
  await until(() => atB.length >= 1, 3000)
  flipping = true
  const second = a.send(bSeen, Buffer.from('second'))
  const during = await within(second, 1500)
  flipping = false
  t.true(flipped > 0)
  t.is(during, 'pending', 'send resolved while every copy of the message was corrupted')
  t.deepEqual(atB, ['first'])
  const s = b.stats().udp
  t.true(s.rudp_dropped_checksum >= flipped, `${s.rudp_dropped_checksum} of ${flipped} counted`)
  const after = await within(second, 8000)
  t.true(after !== 'pending' && 'ok' in after, 'delivered once the link is clean')
  // (acknowledged by B's socket thread; B's JavaScript may handle the message a moment later)
  await until(() => atB.length >= 2, 3000)
  t.deepEqual(atB, ['first', 'second'])
})
