/**
 * The connection layer (tag 12) against a hostile peer, on real loopback sockets: the attacker is a
 * real Node whose connection frames are written by hand (raw reliable messages of tag 12 through
 * its ReliableUdp) and whose incoming frames are recorded instead of handled. Each test asserts
 * the victim's behaviour (violations close with CLOSE code 1, memory and the shared budget come
 * back, nothing is amplified or answered that should not be) and its counters.
 * Imports the BUILT package (dist/).
 */
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { once } from 'node:events'
import v8 from 'node:v8'
import vm from 'node:vm'

import { type Address, type Connection, type ConnectionOptions, decodeMux, DeccomError, encodeMux, ErrorCode, type MuxFrame, Node, ReliableUdp, type Stream, TcpTransport } from '../dist/index.js'
import { n, sleep, until } from './helpers/wait.js'

const host = '127.0.0.1'
/** The attacker's nonce: the smallest there is, so the attacker opens odd stream ids. */
const LOW = Buffer.from('0000000000000001', 'hex')
const ZERO = Buffer.alloc(8)
const HELLO_SIZE = 30

/** A Node that speaks tag 12 by hand: sends raw frames, records what it gets. */
class Attacker {
  readonly frames: { frame: MuxFrame | null; size: number }[] = []
  readonly rudp: ReliableUdp

  constructor(
    readonly node: Node,
    readonly to: Address,
  ) {
    this.rudp = node.stack.find(ReliableUdp)!
    ;(node as unknown as { connectionFrame: (from: unknown, d: Buffer) => void }).connectionFrame = (_from, d) => {
      this.frames.push({ frame: decodeMux(d), size: d.length })
    }
  }

  static async create(victim: Node): Promise<Attacker> {
    return new Attacker(await Node.create({ host, port: 0, stack: [new ReliableUdp()] }), victim.address)
  }

  send(f: MuxFrame | Buffer): Promise<void> {
    return this.rudp.send(this.to, Buffer.isBuffer(f) ? f : encodeMux(f), 12)
  }

  of<T extends MuxFrame['type']>(type: T): Extract<MuxFrame, { type: T }>[] {
    return this.frames.map((x) => x.frame).filter((f): f is Extract<MuxFrame, { type: T }> => f?.type === type)
  }

  /** Sends HELLO and waits for the victim's answer (HELLO or CLOSE). */
  async hello(opts: { nonce?: Buffer; maxStreams?: number; maxData?: number; streamWindow?: number } = {}): Promise<MuxFrame> {
    const before = this.frames.length
    await this.send({ type: 'HELLO', nonce: opts.nonce ?? LOW, echo: ZERO, maxStreams: opts.maxStreams ?? 16, maxData: opts.maxData ?? 1 << 20, streamWindow: opts.streamWindow ?? 1 << 16 })
    await until(() => this.frames.slice(before).some((x) => x.frame?.type === 'HELLO' || x.frame?.type === 'CLOSE'), 3000)
    return this.frames.slice(before).find((x) => x.frame?.type === 'HELLO' || x.frame?.type === 'CLOSE')!.frame!
  }

  close(): Promise<void> {
    return this.node.close()
  }
}

/** `p`, or a rejection after `ms`: a test never waits open-ended on the victim. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer))
}

const stats = (node: Node): Record<string, number> => (node.stats() as unknown as Record<string, Record<string, number>>).app ?? {}
const data = (stream: number, offset: number, bytes: number | Buffer, fin = false): MuxFrame => ({ type: 'DATA', stream, offset, fin, data: Buffer.isBuffer(bytes) ? bytes : Buffer.alloc(bytes, 0x61) })

async function victimNode(connections: ConnectionOptions): Promise<Node> {
  return Node.create({ host, port: 0, stack: [new ReliableUdp()], connections })
}

/** Victim + attacker with an open connection; the victim's side of it. */
async function pair(connections: ConnectionOptions, hello: Parameters<Attacker['hello']>[0] = {}): Promise<{ victim: Node; evil: Attacker; conn: Connection; answer: MuxFrame }> {
  const victim = await victimNode(connections)
  const evil = await Attacker.create(victim)
  const accepted = once(victim, 'connection')
  const answer = await evil.hello(hello)
  const [conn] = (await accepted) as [Connection]
  return { victim, evil, conn, answer }
}

/** The victim closed with a protocol violation: counter, CLOSE code 1 sent, nothing left open. */
async function assertViolation(t: import('ava').ExecutionContext, victim: Node, evil: Attacker, conn: Connection, closed: Promise<unknown[]>): Promise<void> {
  const [err] = (await within(closed, 5000, 'the victim did not close the connection')) as [DeccomError]
  t.is(err?.code, ErrorCode.PROTOCOL_VIOLATION)
  t.is(n(stats(victim).connections_protocol_violations), 1)
  t.true(await until(() => evil.of('CLOSE').some((c) => c.code === 1), 2000), 'CLOSE code 1 reached the peer')
  t.true(conn.closed)
  t.is(conn.streamCount, 0, 'every stream is freed')
  t.false(victim.connections().includes(conn), 'the connection is gone')
}

/** After the attack the budget is whole again: a new connection (new nonce) gets the full window. */
async function assertBudgetBack(t: import('ava').ExecutionContext, evil: Attacker, window: number): Promise<void> {
  const again = await evil.hello({ nonce: Buffer.from('0000000000000002', 'hex') })
  t.is(again.type, 'HELLO', 'a new connection is accepted')
  t.is((again as Extract<MuxFrame, { type: 'HELLO' }>).maxData, window, 'with its full window: the budget came back')
}

// ---- 1. credit -------------------------------------------------------------------------------

test.serial('DATA beyond the connection credit: PROTOCOL_VIOLATION, CLOSE 1, the budget returns', async (t) => {
  // The node's whole budget is one connection window: a leak would refuse the next connection.
  const W = 65536
  const { victim, evil, conn, answer } = await pair({ connectionWindow: W, maxBufferedBytes: W, streamWindow: 1 << 20 })
  try {
    t.is((answer as Extract<MuxFrame, { type: 'HELLO' }>).maxData, W)
    const closed = once(conn, 'close')
    // Two streams, together one byte past the connection's credit (each within its stream window).
    await evil.send(data(1, 0, W / 2))
    await evil.send(data(3, 0, W / 2 + 1))
    await assertViolation(t, victim, evil, conn, closed)
    await assertBudgetBack(t, evil, W)
  } finally {
    await evil.close()
    await victim.close()
  }
})

test.serial('DATA beyond a stream credit (unread stream): PROTOCOL_VIOLATION, the stream and the budget are freed', async (t) => {
  const W = 65536
  const { victim, evil, conn } = await pair({ connectionWindow: W, maxBufferedBytes: W, streamWindow: 1024 })
  try {
    const streams: Stream[] = []
    conn.on('stream', (s) => streams.push(s))
    const closed = once(conn, 'close')
    await evil.send(data(1, 0, 1000))
    await evil.send(data(1, 1000, 24)) // exactly the window: fine
    await sleep(50)
    t.is(n(stats(victim).connections_protocol_violations), 0, 'data up to the window is allowed')
    await evil.send(data(1, 1024, 1)) // one byte past it
    await assertViolation(t, victim, evil, conn, closed)
    t.is(streams.length, 1)
    t.true(streams[0]!.destroyed)
    t.is((streams[0]!.closeError as DeccomError).code, ErrorCode.PROTOCOL_VIOLATION)
    await assertBudgetBack(t, evil, W)
  } finally {
    await evil.close()
    await victim.close()
  }
})

// ---- 2. stream limit -------------------------------------------------------------------------

test.serial('a DATA naming stream id 2^32-1 is a violation and allocates no stream', async (t) => {
  const { victim, evil, conn } = await pair({ maxStreams: 4 })
  try {
    let opened = 0
    conn.on('stream', () => opened++)
    const closed = once(conn, 'close')
    const started = Date.now()
    await evil.send(data(0xffff_ffff, 0, 1))
    await assertViolation(t, victim, evil, conn, closed)
    t.is(opened, 0, 'no stream was opened for the skipped ids')
    t.true(Date.now() - started < 2000, 'no allocation loop over 2^31 ids')
  } finally {
    await evil.close()
    await victim.close()
  }
})

test.serial('opening one stream more than granted is a violation; the granted ones open', async (t) => {
  const { victim, evil, conn } = await pair({ maxStreams: 4 })
  try {
    const opened: number[] = []
    conn.on('stream', (s) => opened.push(s.id))
    const closed = once(conn, 'close')
    await evil.send(data(7, 0, 1)) // opens 1, 3, 5, 7: the grant
    t.true(await until(() => opened.length === 4, 2000))
    t.deepEqual(opened, [1, 3, 5, 7])
    t.is(n(stats(victim).connections_protocol_violations), 0)
    await evil.send(data(9, 0, 1))
    await assertViolation(t, victim, evil, conn, closed)
    t.deepEqual(opened, [1, 3, 5, 7])
  } finally {
    await evil.close()
    await victim.close()
  }
})

test.serial('a frame for a stream of the victim\'s parity it never opened is a violation', async (t) => {
  const { victim, evil, conn } = await pair({})
  try {
    const closed = once(conn, 'close')
    await evil.send({ type: 'RESET', stream: 4000, code: 1, finished: false, finalSize: 0 })
    await assertViolation(t, victim, evil, conn, closed)
  } finally {
    await evil.close()
    await victim.close()
  }
})

// ---- 3. final sizes, absurd credits ----------------------------------------------------------

for (const [name, frames] of Object.entries({
  'a FIN that changes': [data(1, 0, 3, true), data(1, 0, 4, true)],
  'data past the final size': [data(1, 0, 3, true), data(1, 3, 1)],
  'a FIN below data already received (reordered)': [data(1, 10, 5), data(1, 0, 3, true)],
  'RESET (finished) with a final size below data already received': [data(1, 10, 5), { type: 'RESET', stream: 1, code: 9, finished: true, finalSize: 5 } as MuxFrame],
  'RESET (finished) with a final size other than the FIN': [data(1, 0, 3, true), { type: 'RESET', stream: 1, code: 9, finished: true, finalSize: 2 } as MuxFrame],
  'RESET (finished) with a final size beyond the credit': [data(1, 0, 3), { type: 'RESET', stream: 1, code: 9, finished: true, finalSize: 2 ** 50 } as MuxFrame],
})) {
  test.serial(`${name}: PROTOCOL_VIOLATION`, async (t) => {
    const { victim, evil, conn } = await pair({})
    try {
      conn.on('stream', (s) => s.on('error', () => {}))
      const closed = once(conn, 'close')
      for (const f of frames as MuxFrame[]) await evil.send(f)
      await assertViolation(t, victim, evil, conn, closed)
    } finally {
      await evil.close()
      await victim.close()
    }
  })
}

test.serial('RESET (not finished) with a bogus final size: the stream fails with STREAM_RESET, the connection lives', async (t) => {
  const { victim, evil, conn } = await pair({})
  try {
    const errors: DeccomError[] = []
    conn.on('stream', (s) => s.on('error', (e) => errors.push(e as DeccomError)))
    await evil.send(data(1, 0, 10))
    await evil.send({ type: 'RESET', stream: 1, code: 7, finished: false, finalSize: 2 ** 53 - 1 })
    t.true(await until(() => errors.length === 1, 2000))
    t.is(errors[0]!.code, ErrorCode.STREAM_RESET)
    t.is(errors[0]!.details?.code, 7)
    t.false(conn.closed)
    t.is(conn.streamCount, 0)
    t.is(n(stats(victim).connections_protocol_violations), 0)
  } finally {
    await evil.close()
    await victim.close()
  }
})

test.serial('absurd MAX_DATA / MAX_STREAMS: the victim sends only what it writes, with bounded frames in flight, and stays up', async (t) => {
  const { victim, evil, conn } = await pair({}, { maxStreams: 0xffff_ffff, maxData: 0xffff_ffff, streamWindow: 0xffff_ffff })
  try {
    await evil.send({ type: 'MAX_DATA', stream: 0, max: 2 ** 53 - 1 })
    await evil.send({ type: 'MAX_STREAMS', max: 0xffff_ffff })
    await evil.send({ type: 'MAX_DATA', stream: 2, max: 2 ** 53 - 1 }) // a stream the victim has not opened
    await sleep(50)
    const s = await conn.openStream()
    await evil.send({ type: 'MAX_DATA', stream: s.id, max: 2 ** 53 - 1 })
    // 4 MiB in 1 KiB writes: far more frames than the reliable layer queues per peer at once.
    const chunk = Buffer.alloc(1024, 0x62)
    s.on('error', () => {})
    for (let i = 0; i < 4096 && !s.destroyed; i++) if (!s.write(chunk)) await within(once(s, 'drain'), 10_000, 'the stream did not drain')
    s.end()
    const got = (): number => evil.of('DATA').filter((f) => f.stream === s.id).reduce((a, f) => a + f.data.length, 0)
    t.true(await until(() => got() === 4 << 20, 20_000), `all bytes arrived (${got()})`)
    t.false(conn.closed, 'the connection survived (no send queue overflow)')
    t.is(s.bytesSent, 4 << 20)
  } finally {
    await evil.close()
    await victim.close()
  }
})

// ---- 4. HELLO floods -------------------------------------------------------------------------

test.serial('HELLO flood from many sources: maxConnections holds, refusals are smaller than the HELLO', async (t) => {
  const victim = await victimNode({ maxConnections: 3 })
  const evils = await Promise.all(Array.from({ length: 6 }, () => Attacker.create(victim)))
  try {
    let accepted = 0
    victim.on('connection', () => accepted++)
    const answers = await Promise.all(evils.map((e, i) => e.hello({ nonce: Buffer.from(`00000000000001${i.toString(16).padStart(2, '0')}`, 'hex') })))
    t.is(answers.filter((a) => a.type === 'HELLO').length, 3)
    t.is(answers.filter((a) => a.type === 'CLOSE' && a.code === 2).length, 3)
    t.is(accepted, 3)
    t.is(victim.connections().length, 3)
    t.is(n(stats(victim).connections_refused), 3)
    for (const e of evils) for (const f of e.frames) t.true(f.size <= HELLO_SIZE, 'no answer is larger than the HELLO')
    for (const e of evils) t.is(e.frames.length, 1, 'one answer per HELLO')
  } finally {
    await Promise.all(evils.map((e) => e.close()))
    await victim.close()
  }
})

test.serial('HELLO flood: maxBufferedBytes holds (a connection that cannot get its minimum window is refused)', async (t) => {
  const W = 65536
  const victim = await victimNode({ connectionWindow: W, maxBufferedBytes: 2 * W })
  const evils = await Promise.all(Array.from({ length: 4 }, () => Attacker.create(victim)))
  try {
    const answers: MuxFrame[] = []
    for (const e of evils) answers.push(await e.hello())
    t.deepEqual(answers.map((a) => a.type), ['HELLO', 'HELLO', 'CLOSE', 'CLOSE'])
    t.is(victim.connections().length, 2)
    // One accepted peer leaves: its window returns, a new one fits.
    await evils[0]!.send({ type: 'CLOSE', code: 0 })
    t.true(await until(() => victim.connections().length === 1, 2000))
    t.is((await evils[2]!.hello({ nonce: Buffer.from('0000000000000009', 'hex') })).type, 'HELLO')
  } finally {
    await Promise.all(evils.map((e) => e.close()))
    await victim.close()
  }
})

test.serial('HELLO flood: the first connections cannot take the memory every later one needs (up to maxConnections fit)', async (t) => {
  const K = 1024
  const victim = await victimNode({ maxConnections: 8, connectionWindow: 1 << 20, maxBufferedBytes: 4 << 20 })
  const evils = await Promise.all(Array.from({ length: 9 }, () => Attacker.create(victim)))
  try {
    const answers: MuxFrame[] = []
    for (const e of evils) answers.push(await e.hello())
    const grants = answers.slice(0, 8).map((a) => (a.type === 'HELLO' ? a.maxData : -1))
    // Whole windows while the budget has them beyond 64 KiB for each connection still to come, then 64 KiB each.
    t.deepEqual(grants, [1024 * K, 1024 * K, 1024 * K, 768 * K, 64 * K, 64 * K, 64 * K, 64 * K])
    t.is(grants.reduce((a, b) => a + b, 0), 4 << 20, 'maxBufferedBytes holds')
    t.deepEqual(answers[8], { type: 'CLOSE', code: 2 }, 'maxConnections holds')
    t.is(victim.connections().length, 8)
  } finally {
    await Promise.all(evils.map((e) => e.close()))
    await victim.close()
  }
})

test.serial('over TCP: a refused HELLO does not pin the TCP connection (it closes when idle)', async (t) => {
  const victim = await Node.create({ host, port: 0, stack: [new TcpTransport({ port: 0, idleTimeout: 300 })], connections: { maxConnections: 1 } })
  const mk = (): Promise<Node> => Node.create({ host, port: 0, stack: [new TcpTransport({ port: 0, idleTimeout: 60_000 })] })
  const [first, second] = await Promise.all([mk(), mk()])
  try {
    const to = victim.stack.find(TcpTransport)!.tcpAddress()
    const hello = (nonce: string): Buffer => encodeMux({ type: 'HELLO', nonce: Buffer.from(nonce, 'hex'), echo: ZERO, maxStreams: 4, maxData: 1 << 20, streamWindow: 1 << 16 })
    const accepted = once(victim, 'connection')
    await first.stack.find(TcpTransport)!.sendStream(to, hello('0000000000000001'), 12)
    await within(accepted, 3000, 'the first HELLO was not accepted')
    const closed = new Promise<void>((resolve) => second.stack.find(TcpTransport)!.on('close', () => resolve()))
    await second.stack.find(TcpTransport)!.sendStream(to, hello('0000000000000002'), 12)
    t.true(await until(() => n(stats(victim).connections_refused) === 1, 3000), 'the second is refused')
    await within(closed, 5000, 'the refused peer\'s TCP connection stayed open')
    t.is(victim.connections().length, 1)
    t.pass()
  } finally {
    await Promise.all([first.close(), second.close(), victim.close()])
  }
})

for (const maxConnections of [2, 1024]) {
  test.serial(`a small budget (maxConnections ${maxConnections}), half of it held by a silent peer: a connection still re-grants what it read (no stall)`, async (t) => {
    const victim = await victimNode({ connectionWindow: 65536, maxBufferedBytes: 131072, streamWindow: 16384, maxConnections })
    const honest = await Node.create({ host, port: 0, stack: [new ReliableUdp()] })
    const evil = await Attacker.create(victim)
    try {
      t.is((await evil.hello()).type, 'HELLO', 'the silent peer holds its grant')
      const got = new Promise<number>((resolve) => {
        victim.on('connection', (c) =>
          c.on('stream', (st) => {
            let total = 0
            st.on('data', (d: Buffer) => (total += d.length))
            st.on('end', () => resolve(total))
          }),
        )
      })
      const conn = await honest.connect(victim.address)
      const s = await conn.openStream()
      s.end(Buffer.alloc(1 << 20, 0x65))
      t.is(await within(got, 10_000, 'the transfer stalled'), 1 << 20)
    } finally {
      await evil.close()
      await honest.close()
      await victim.close()
    }
  })
}

test.serial('repeated identical HELLOs get at most one equal-size answer each; frames for no connection are never answered', async (t) => {
  const victim = await victimNode({})
  const evil = await Attacker.create(victim)
  const stranger = await Attacker.create(victim)
  try {
    let accepted = 0
    victim.on('connection', () => accepted++)
    await evil.hello()
    for (let i = 0; i < 20; i++) await evil.hello()
    await sleep(100)
    t.is(accepted, 1, 'one connection')
    t.true(evil.frames.length <= 21, `at most one answer per HELLO (${evil.frames.length} for 21)`)
    for (const f of evil.frames) t.is(f.size, HELLO_SIZE)
    // Frames of every kind from a peer without a connection: dropped, counted, never answered.
    const before = n(stats(victim).connections_dropped_no_connection)
    for (const f of [data(1, 0, 5), { type: 'MAX_DATA', stream: 0, max: 5 }, { type: 'MAX_STREAMS', max: 9 }, { type: 'RESET', stream: 1, code: 1, finished: false, finalSize: 0 }, { type: 'CLOSE', code: 0 }, { type: 'MESSAGE', data: Buffer.from('hi') }] as MuxFrame[]) {
      await stranger.send(f)
    }
    t.true(await until(() => n(stats(victim).connections_dropped_no_connection) === before + 6, 2000))
    // A HELLO answering a dial nobody made (non-zero echo): dropped as stale.
    await stranger.send({ type: 'HELLO', nonce: LOW, echo: Buffer.from('0102030405060708', 'hex'), maxStreams: 1, maxData: 1, streamWindow: 1 })
    t.true(await until(() => n(stats(victim).connections_dropped_stale_hello) === 1, 2000))
    await sleep(100)
    t.is(stranger.frames.length, 0, 'nothing was answered')
  } finally {
    await evil.close()
    await stranger.close()
    await victim.close()
  }
})

// ---- 5. silent peers, slow readers -----------------------------------------------------------

test.serial('a silent peer holding credit and a slow-loris reader stall neither the victim nor its other connections', async (t) => {
  const victim = await victimNode({ connectionWindow: 65536, streamWindow: 16384 })
  const honest = await Node.create({ host, port: 0, stack: [new ReliableUdp()] })
  const evil = await Attacker.create(victim)
  try {
    // The attacker opens streams, fills their windows, never reads what the victim sends, then goes quiet.
    const accepted = once(victim, 'connection')
    await evil.hello({ maxData: 4096, streamWindow: 1024 })
    const [bad] = (await accepted) as [Connection]
    for (const id of [1, 3, 5]) await evil.send(data(id, 0, 16384))
    await until(() => bad.streamCount === 3, 2000)
    const s = await bad.openStream()
    s.on('error', () => {})
    const big = Buffer.alloc(1 << 20, 0x63)
    s.write(big) // stalls: the attacker granted 1024 bytes on the stream
    await sleep(200)
    t.is(s.bytesSent, 1024, 'the victim sent exactly the credit it was given, no more')
    t.false(bad.closed)
    // Meanwhile an honest peer moves 2 MiB through the same victim.
    const echoed = new Promise<Buffer>((resolve) => {
      victim.on('connection', (c) => {
        if (c === bad) return
        c.on('stream', (st) => {
          const parts: Buffer[] = []
          st.on('data', (d: Buffer) => parts.push(d))
          st.on('end', () => resolve(Buffer.concat(parts)))
        })
      })
    })
    const good = await honest.connect(victim.address)
    const gs = await good.openStream()
    const payload = Buffer.alloc(2 << 20, 0x64)
    gs.end(payload)
    const back = await echoed
    t.is(back.length, payload.length, 'the other connection is not stalled')
    t.is(s.bytesSent, 1024)
    // A further byte from the silent peer past its credit is still refused.
    const closed = once(bad, 'close')
    await evil.send(data(1, 16384, 1))
    await assertViolation(t, victim, evil, bad, closed)
    t.is(victim.connections().length, 1)
  } finally {
    await evil.close()
    await honest.close()
    await victim.close()
  }
})

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

test.serial('20 000 one-byte DATA frames on a stream nobody reads cost the victim about their bytes, not a Buffer each', async (t) => {
  const { victim, evil, conn } = await pair({ streamWindow: 1 << 20 })
  try {
    let stream: Stream | undefined
    conn.on('stream', (s) => {
      stream = s
      s.read(0) // the readable side asked once (then nobody reads)
    })
    await evil.send(data(1, 0, 1))
    t.true(await until(() => stream !== undefined, 2000))
    gc()
    const before = process.memoryUsage().heapUsed
    const N = 20_000
    for (let b = 0; b < N / 500; b++) {
      const sends: Promise<void>[] = []
      for (let i = 0; i < 500; i++) sends.push(evil.send(data(1, 1 + b * 500 + i, 1)))
      await Promise.all(sends)
    }
    t.true(await until(() => stream!.bytesReceived === N + 1, 3000), `every byte arrived (${stream!.bytesReceived})`)
    gc()
    const perFrame = (process.memoryUsage().heapUsed - before) / N
    t.log(`victim heap: ${perFrame.toFixed(1)} bytes per one-byte frame`)
    t.true(perFrame < 64, `held bytes are coalesced (${perFrame.toFixed(1)} B per 1-byte frame)`)
    t.false(conn.closed)
  } finally {
    await evil.close()
    await victim.close()
  }
})

for (const [how, consume] of Object.entries({
  "read(n) across a held piece ('readable')": (s: Stream, want: number): Promise<Buffer> =>
    new Promise((resolve) => {
      const tryRead = (): void => {
        const b = s.read(want) as Buffer | null
        if (b) resolve(b)
      }
      s.on('readable', tryRead)
    }),
  'for await': async (s: Stream, want: number): Promise<Buffer> => {
    const parts: Buffer[] = []
    let got = 0
    for await (const c of s.iterator({ destroyOnReturn: false })) {
      parts.push(c as Buffer)
      if ((got += (c as Buffer).length) >= want) break
    }
    return Buffer.concat(parts)
  },
  "'data' after a pause": async (s: Stream, want: number): Promise<Buffer> => {
    s.pause()
    await sleep(150)
    const parts: Buffer[] = []
    let got = 0
    return new Promise((resolve) => {
      s.on('data', (c: Buffer) => {
        parts.push(c)
        if ((got += c.length) >= want) resolve(Buffer.concat(parts))
      })
      s.resume()
    })
  },
})) {
  test.serial(`small pieces held back for merging never stall a reader: ${how}`, async (t) => {
    const { victim, evil, conn } = await pair({})
    try {
      const got = new Promise<Buffer>((resolve) => conn.on('stream', (s) => void consume(s, 2010).then(resolve)))
      await evil.send(data(1, 0, 2000))
      await sleep(100)
      await evil.send(data(1, 2000, 10)) // small, arriving while the reader still holds bytes; nothing follows
      const b = await within(got, 3000, 'the reader stalled')
      t.is(b.length, 2010)
    } finally {
      await evil.close()
      await victim.close()
    }
  })
}

test.serial('more out-of-order ranges than any honest sender leaves is a violation (bounded memory per connection)', async (t) => {
  const { victim, evil, conn } = await pair({ streamWindow: 1 << 20 })
  try {
    conn.on('stream', (s) => s.on('error', () => {}))
    const closed = once(conn, 'close')
    // One-byte pieces with a gap before each: every one a separate range, never joined.
    for (let b = 0; b < 3 && !conn.closed; b++) {
      const sends: Promise<void>[] = []
      for (let i = 0; i < 500; i++) sends.push(evil.send(data(1, 2 * (b * 500 + i) + 2, 1)).catch(() => {}))
      await Promise.all(sends)
    }
    await assertViolation(t, victim, evil, conn, closed)
  } finally {
    await evil.close()
    await victim.close()
  }
})

test.serial('empty DATA frames at scattered offsets are not stored and do not disturb the stream', async (t) => {
  const { victim, evil, conn } = await pair({ streamWindow: 1 << 20 })
  try {
    let stream: Stream | undefined
    conn.on('stream', (s) => (stream = s))
    // 2000 empty frames at distinct offsets past a hole: none of them carries a byte.
    for (let b = 0; b < 4; b++) {
      const sends: Promise<void>[] = []
      for (let i = 1; i <= 500; i++) sends.push(evil.send(data(1, (b * 500 + i) * 10, 0)))
      await Promise.all(sends)
    }
    await until(() => stream !== undefined, 1000)
    t.false(conn.closed)
    const held = (stream as unknown as { readableLength: number }).readableLength
    t.is(held, 0)
    // The hole fills: the stream still reads in order, nothing stored for the empty frames.
    await evil.send(data(1, 0, 5, true))
    const parts: Buffer[] = []
    stream!.on('data', (d: Buffer) => parts.push(d))
    await once(stream!, 'end')
    t.is(Buffer.concat(parts).length, 5)
    t.is(n(stats(victim).connections_protocol_violations), 0)
  } finally {
    await evil.close()
    await victim.close()
  }
})

// ---- 6. malformed frames ---------------------------------------------------------------------

test.serial('every invalid vector of test-vectors/connection.json is dropped and counted, on a connection and without one', async (t) => {
  const vectors = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '..', 'test-vectors', 'connection.json'), 'utf8')) as { invalid: { name: string; hex: string }[] }
  const { victim, evil, conn } = await pair({})
  const stranger = await Attacker.create(victim)
  try {
    for (const v of vectors.invalid) {
      await evil.send(Buffer.from(v.hex, 'hex'))
      await stranger.send(Buffer.from(v.hex, 'hex'))
    }
    t.true(await until(() => n(stats(victim).connections_dropped_malformed) === 2 * vectors.invalid.length, 3000), `${n(stats(victim).connections_dropped_malformed)}`)
    t.false(conn.closed, 'malformed frames do not close the connection')
    t.is(n(stats(victim).connections_protocol_violations), 0)
    await sleep(100)
    t.is(stranger.frames.length, 0, 'never answered')
    t.is(evil.frames.length, 1, 'only the HELLO answer')
    const msg = once(conn, 'message')
    await evil.send({ type: 'MESSAGE', data: Buffer.from('still here') })
    t.is(((await msg) as [Buffer])[0].toString(), 'still here')
  } finally {
    await stranger.close()
    await evil.close()
    await victim.close()
  }
})

// ---- 7. restarts -----------------------------------------------------------------------------

test.serial('a peer restarting mid-transfer: old streams fail with a typed error, the new connection works; a stale HELLO kills nothing', async (t) => {
  const { victim, evil, conn } = await pair({})
  try {
    const s = await conn.openStream()
    const failed = new Promise<DeccomError>((resolve) => s.on('error', (e) => resolve(e as DeccomError)))
    s.write(Buffer.alloc(1000))
    await evil.send(data(s.id, 0, 500))
    await until(() => evil.of('DATA').some((f) => f.stream === s.id && f.data.length > 0), 2000)
    // A stale answer (another nonce, echoing a nonce the victim never had): dropped, the connection lives.
    await evil.send({ type: 'HELLO', nonce: Buffer.from('00000000000000ff', 'hex'), echo: Buffer.from('1111111111111111', 'hex'), maxStreams: 1, maxData: 1, streamWindow: 1 })
    t.true(await until(() => n(stats(victim).connections_dropped_stale_hello) === 1, 2000))
    t.false(conn.closed, 'a stale HELLO does not end the connection')
    // The restart: a fresh nonce, zero echo.
    const next = once(victim, 'connection')
    const answer = await evil.hello({ nonce: Buffer.from('0000000000000003', 'hex') })
    t.is(answer.type, 'HELLO')
    const err = await failed
    t.is(err.code, ErrorCode.CONNECTION_CLOSED)
    t.is(err.details?.reason, 'restart')
    t.true(conn.closed)
    const [fresh] = (await next) as [Connection]
    t.not(fresh, conn)
    t.deepEqual(victim.connections(), [fresh])
    const msg = once(fresh, 'message')
    await evil.send({ type: 'MESSAGE', data: Buffer.from('new') })
    t.is(((await msg) as [Buffer])[0].toString(), 'new')
    const streams: Stream[] = []
    fresh.on('stream', (st) => streams.push(st))
    await evil.send(data(1, 0, Buffer.from('abc'), true))
    t.true(await until(() => streams.length === 1, 2000))
    const parts: Buffer[] = []
    streams[0]!.on('data', (d: Buffer) => parts.push(d))
    await once(streams[0]!, 'end')
    t.is(Buffer.concat(parts).toString(), 'abc')
  } finally {
    await evil.close()
    await victim.close()
  }
})
