/**
 * Connections and streams (docs/connections.md): `node.ready()`, `node.connect()` by address, by
 * node id through Kademlia (UDP and TCP), multiplexed streams byte-exact under loss, backpressure
 * from a slow reader, resets and aborts reaching the other side. Real sockets on 127.0.0.1.
 * Imports the BUILT package (dist/).
 */
import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'

import { type Connection, FaultyTransport, Gossip, Identity, Kademlia, Node, Noise, ReliableUdp, type Stream, TcpTransport } from '../dist/index.js'
import { n, sleep, until } from './helpers/wait.js'

const host = '127.0.0.1'
const big = { recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 }

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** Reads a stream to its end (without destroying it: the writable side may still be used). */
async function readAll(s: Stream): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of s.iterator({ destroyOnReturn: false })) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

/** Writes `data` in 64 KiB pieces honouring backpressure, then ends. */
async function writeAll(s: Stream, data: Buffer): Promise<void> {
  for (let o = 0; o < data.length; o += 65536) {
    if (!s.write(data.subarray(o, o + 65536))) await once(s, 'drain')
  }
  s.end()
}

/** Every incoming stream is echoed back (read to the end, then written back). */
function echo(node: Node): void {
  node.on('connection', (conn) => {
    conn.on('stream', (s) => {
      s.on('error', () => {})
      void readAll(s).then((d) => writeAll(s, d), () => {})
    })
    conn.on('message', (d) => void conn.send(Buffer.concat([Buffer.from('echo:'), d])).catch(() => {}))
  })
}

test.serial('buffered writes (writev) become frames without being joined: pieces spanning chunks and frames arrive byte-exact, in order', async (t) => {
  const a = await Node.create({ host, port: 0, ...big, stack: [new ReliableUdp()] })
  const b = await Node.create({ host, port: 0, ...big, stack: [new ReliableUdp()] })
  try {
    echo(b)
    const conn = await a.connect(b.address)
    const s = await conn.openStream()
    // Corked writes reach the stream as one _writev: 1-byte, 100 KiB and 300 KiB chunks, so that
    // 128 KiB frames start and end inside chunks and some frames hold pieces of several.
    const chunks = [1, 100 << 10, 3, 300 << 10, 7, 100 << 10, 5].map((len) => randomBytes(len))
    const data = Buffer.concat(chunks)
    const back = readAll(s)
    s.cork()
    for (const c of chunks) s.write(c)
    process.nextTick(() => {
      s.uncork()
      s.end()
    })
    t.is(sha(await back), sha(data))
    t.is(s.bytesSent, data.length)
  } finally {
    await a.close()
    await b.close()
  }
})

for (const [name, stack] of Object.entries({
  '[ReliableUdp]': () => [new ReliableUdp()],
  '[ReliableUdp, Noise]': () => [new ReliableUdp(), new Noise({ mode: 'encrypt' })],
})) {
  test.serial(`${name}: connect by address, a message and a 4 MiB stream round trip byte-exact`, async (t) => {
    const a = await Node.create({ host, port: 0, ...big, stack: stack() })
    const b = await Node.create({ host, port: 0, ...big, stack: stack() })
    try {
      echo(b)
      const accepted = once(b, 'connection')
      const conn = await a.connect(b.address)
      t.is(conn.path, 'direct')
      t.true(conn.rtt > 0)
      const [theirs] = (await accepted) as [Connection]
      if (name.includes('Noise')) {
        t.deepEqual(conn.remote.id, b.id, 'the connection names the authenticated peer')
        t.deepEqual(theirs.remote.id, a.id)
      }
      const msg = once(conn, 'message')
      await conn.send(Buffer.from('ping'))
      t.is(((await msg) as [Buffer])[0].toString(), 'echo:ping')
      const s = await conn.openStream()
      const data = randomBytes(4 << 20)
      const [back] = await Promise.all([readAll(s), writeAll(s, data)])
      t.is(sha(back), sha(data))
      await until(() => s.bytesAcknowledged === data.length, 2000)
      t.is(s.bytesSent, data.length)
      t.is(s.bytesAcknowledged, data.length)
      t.is(await a.connect(b.address), conn, 'a second connect reuses the connection')
      const closed = once(theirs, 'close')
      await conn.close()
      await closed
      t.true(theirs.closed)
      t.is(a.connections().length, 0)
    } finally {
      await a.close()
      await b.close()
    }
  })
}

test.serial('ready() then findPeer succeeds on the first call, and connect(id) goes through discovery', async (t) => {
  const boot = await Node.create({ host, port: 0, stack: [new Kademlia(), new ReliableUdp(), new Noise()] })
  const nodes: Node[] = []
  try {
    for (let i = 0; i < 4; i++) {
      nodes.push(await Node.create({ host, port: 0, stack: [new Kademlia({ bootstrap: [boot.address] }), new ReliableUdp(), new Noise()] }))
    }
    let readyEvents = 0
    for (const node of nodes) node.once('ready', () => readyEvents++)
    await Promise.all(nodes.map((node) => node.ready({ signal: AbortSignal.timeout(5000) })))
    t.is(readyEvents, nodes.length)
    const [x, y] = nodes as [Node, Node]
    const found = await x.findPeer(boot.id)
    t.deepEqual(found.id, boot.id, 'the bootstrap node is found on the first call after ready()')
    echo(y)
    const conn = await x.connect(y.id, { signal: AbortSignal.timeout(5000) })
    t.deepEqual(conn.remote.id, y.id)
    t.is(conn.path, 'direct')
    const s = await conn.openStream()
    const [back] = await Promise.all([readAll(s), writeAll(s, Buffer.from('through discovery'))])
    t.is(back.toString(), 'through discovery')
  } finally {
    await Promise.all([boot, ...nodes].map((node) => node.close()))
  }
})

test.serial('connect(id, { transport: "tcp" }): the record carries the TCP port; the connection runs over TCP', async (t) => {
  const mk = (bootstrap: string[]) =>
    Node.create({ host, port: 0, stack: [new Kademlia({ bootstrap }), new TcpTransport({ port: 0 }), new ReliableUdp(), new Noise()] })
  const boot = await mk([])
  const x = await mk([boot.address.key])
  const y = await mk([boot.address.key])
  try {
    await Promise.all([x.ready(), y.ready()])
    echo(y)
    const peer = await x.findPeer(y.id)
    t.is(peer.tcpPort, y.stack.find(TcpTransport)!.tcpAddress().port, 'the Kademlia record announces the TCP port')
    const conn = await x.connect(y.id, { transport: 'tcp' })
    t.is(conn.path, 'tcp')
    t.deepEqual(conn.remote.id, y.id)
    const s = await conn.openStream()
    const data = randomBytes(3 << 20)
    const [back] = await Promise.all([readAll(s), writeAll(s, data)])
    t.is(sha(back), sha(data))
    t.true(n(y.stats().tcp?.frames_received) > 0, 'frames went over TCP')
  } finally {
    await Promise.all([boot, x, y].map((node) => node.close()))
  }
})

test.serial('64 streams in both directions, random sizes, 10 % loss: every byte arrives in order', async (t) => {
  const lossy = (seed: number) => [new ReliableUdp(), new FaultyTransport({ seed, drop: 0.1, direction: 'receive' })]
  const a = await Node.create({ host, port: 0, ...big, stack: lossy(1) })
  const b = await Node.create({ host, port: 0, ...big, stack: lossy(2) })
  try {
    const received = new Map<string, string>()
    const expect = new Map<string, string>()
    const collect = (who: string) => (s: Stream) => {
      void readAll(s).then((d) => {
        received.set(`${who}:${d.subarray(0, 8).toString('hex')}`, sha(d))
        s.end()
      })
    }
    b.on('connection', (c) => c.on('stream', collect('b')))
    const conn = await a.connect(b.address)
    const [theirs] = b.connections() as [Connection]
    conn.on('stream', collect('a'))
    const jobs: Promise<void>[] = []
    for (let i = 0; i < 64; i++) {
      const from = i % 2 === 0 ? conn : theirs
      const data = randomBytes(8 + Math.floor(Math.random() * 300_000))
      expect.set(`${from === conn ? 'b' : 'a'}:${data.subarray(0, 8).toString('hex')}`, sha(data))
      jobs.push(from.openStream().then(async (s) => {
        s.resume()
        await writeAll(s, data)
      }))
    }
    await Promise.all(jobs)
    t.true(await until(() => received.size === 64, 30_000), `${received.size} of 64 streams complete`)
    t.deepEqual(Object.fromEntries([...received].sort()), Object.fromEntries([...expect].sort()))
  } finally {
    await a.close()
    await b.close()
  }
})

test.serial('a slow reader holds the writer: at most the stream window is in flight, then everything arrives', async (t) => {
  const window = 256 * 1024
  const opts = () => ({ host, port: 0, ...big, connections: { streamWindow: window }, stack: [new ReliableUdp()] })
  const a = await Node.create(opts())
  const b = await Node.create(opts())
  try {
    const incoming = once(b, 'connection')
    const conn = await a.connect(b.address)
    const [theirs] = (await incoming) as [Connection]
    const arrived = once(theirs, 'stream')
    const s = await conn.openStream({ highWaterMark: 64 * 1024 })
    const data = randomBytes(8 << 20)
    let writes = 0
    const writing = (async () => {
      for (let o = 0; o < data.length; o += 16384) {
        writes++
        if (!s.write(data.subarray(o, o + 16384))) await once(s, 'drain')
      }
      s.end()
    })()
    const [r] = (await arrived) as [Stream]
    r.pause()
    await sleep(300)
    t.true(s.bytesSent <= window, `the writer sent ${s.bytesSent} bytes past a paused reader (window ${window})`)
    t.true(s.writableLength <= 64 * 1024 + 16384, `the writer buffers ${s.writableLength} bytes`)
    t.true(writes * 16384 < data.length, 'write() stopped the writer')
    const [back] = await Promise.all([readAll(r), writing])
    t.is(sha(back), sha(data))
  } finally {
    await a.close()
    await b.close()
  }
})

test.serial('destroy on either side reaches the other with its code; a closed connection fails its streams', async (t) => {
  const a = await Node.create({ host, port: 0, stack: [new ReliableUdp(), new Noise()] })
  const b = await Node.create({ host, port: 0, stack: [new ReliableUdp(), new Noise()] })
  try {
    const streams: Stream[] = []
    b.on('connection', (c) => c.on('stream', (s) => streams.push(s.on('error', () => {}))))
    const conn = await a.connect(b.address)
    const s1 = await conn.openStream()
    s1.on('error', () => {})
    s1.write('x')
    await until(() => streams.length === 1)
    const err1 = new Promise((resolve) => streams[0]!.once('close', resolve))
    s1.reset(42)
    await err1
    t.is((streams[0]!.errored as { code?: string })?.code, 'ERR_DECCOM_STREAM_RESET')
    t.is(((streams[0]!.errored as { details?: { code?: number } })?.details)?.code, 42)
    // The other way round: the accepting side destroys with a coded error.
    const s2 = await conn.openStream()
    const s2Error = new Promise<Error>((resolve) => s2.on('error', resolve))
    s2.write('y')
    await until(() => streams.length === 2)
    streams[1]!.destroy(Object.assign(new Error('no thanks'), { resetCode: 7 }))
    const e2 = (await s2Error) as Error & { code?: string; details?: { code?: number; by?: string } }
    t.is(e2.code, 'ERR_DECCOM_STREAM_RESET')
    t.is(e2.details?.code, 7)
    t.is(e2.details?.by, 'remote')
    // Closing the connection fails the streams still open on both sides.
    const s3 = await conn.openStream()
    const s3Error = new Promise<Error>((resolve) => s3.on('error', resolve))
    s3.write('z')
    await until(() => streams.length === 3)
    const theirs3 = new Promise<Error>((resolve) => streams[2]!.on('error', resolve))
    await conn.close()
    t.is(((await s3Error) as { code?: string }).code, 'ERR_DECCOM_CONNECTION_CLOSED')
    t.is(((await theirs3) as { code?: string }).code, 'ERR_DECCOM_CONNECTION_CLOSED')
    await t.throwsAsync(conn.openStream(), { code: 'ERR_DECCOM_CONNECTION_CLOSED' })
  } finally {
    await a.close()
    await b.close()
  }
})

test.serial('AbortSignal: connect to a silent address and openStream past the stream limit abort within 100 ms', async (t) => {
  const a = await Node.create({ host, port: 0, stack: [new ReliableUdp()] })
  const b = await Node.create({ host, port: 0, connections: { maxStreams: 1 }, stack: [new ReliableUdp()] })
  const silent = await Node.create({ host, port: 0, stack: [] })
  try {
    const ctl = new AbortController()
    const t0 = Date.now()
    const dial = a.connect(silent.address, { signal: ctl.signal })
    setTimeout(() => ctl.abort(), 50)
    await t.throwsAsync(dial, { code: 'ERR_DECCOM_ABORTED' })
    t.true(Date.now() - t0 < 150, `aborted after ${Date.now() - t0} ms`)
    t.is(a.connections().length, 0, 'nothing left open')
    await t.throwsAsync(a.connect(b.address, { signal: AbortSignal.abort() }), { code: 'ERR_DECCOM_ABORTED' })

    const peerStreams: Stream[] = []
    b.on('connection', (c) => c.on('stream', (s) => peerStreams.push(s)))
    const conn = await a.connect(b.address)
    const first = await conn.openStream()
    first.write('hold')
    const ctl2 = new AbortController()
    const t1 = Date.now()
    const second = conn.openStream({ signal: ctl2.signal })
    setTimeout(() => ctl2.abort(), 30)
    await t.throwsAsync(second, { code: 'ERR_DECCOM_ABORTED' })
    t.true(Date.now() - t1 < 130, `aborted after ${Date.now() - t1} ms`)
    // Once the first stream is finished on both sides, the peer lets us open another.
    await until(() => peerStreams.length === 1)
    const theirs = peerStreams[0]!
    theirs.resume()
    theirs.end()
    first.resume()
    first.end()
    const third = await conn.openStream({ signal: AbortSignal.timeout(2000) })
    t.is(third.id, first.id + 2)
  } finally {
    await Promise.all([a, b, silent].map((node) => node.close()))
  }
})

test.serial('a Node honours an aborted signal in create and ready, and implements Symbol.asyncDispose', async (t) => {
  await t.throwsAsync(Node.create({ host, port: 0, signal: AbortSignal.abort() }), { code: 'ERR_DECCOM_ABORTED' })
  const lonely = await Node.create({ host, port: 0, stack: [new Kademlia({ bootstrap: ['127.0.0.1:9'], bootstrapRetries: 0, queryTimeout: 100 }), new ReliableUdp()] })
  try {
    await t.throwsAsync(lonely.ready({ signal: AbortSignal.timeout(5000) }), { code: 'ERR_DECCOM_NOT_READY' })
  } finally {
    await lonely.close()
  }
  let node: Node | undefined
  {
    await using n2 = await Node.create({ host, port: 0, identity: Identity.generate() })
    node = n2
    await n2.ready()
  }
  await t.throwsAsync(node!.ready(), { code: 'ERR_DECCOM_CLOSED' })
})

test.serial('node.send(to, data, { onProgress, signal }) reports acknowledged bytes and cancels through ReliableUdp', async (t) => {
  const a = await Node.create({ host, port: 0, ...big, stack: [new ReliableUdp(), new Noise()] })
  const b = await Node.create({ host, port: 0, ...big, stack: [new ReliableUdp(), new Noise()] })
  try {
    const data = randomBytes(8 << 20)
    const seen: number[] = []
    const arrived = once(b, 'message')
    await a.send(b.address, data, { onProgress: (acked, total) => (t.is(total, data.length), seen.push(acked)) })
    t.true(seen.length >= 2, `${seen.length} progress reports`)
    t.deepEqual(seen, [...seen].sort((x, y) => x - y), 'increasing')
    t.is(seen.at(-1), data.length)
    t.is(sha(((await arrived) as [unknown, Buffer])[1]), sha(data))
    await t.throwsAsync(a.send(b.address, data, { signal: AbortSignal.abort() }), { code: 'ERR_DECCOM_ABORTED' })
  } finally {
    await a.close()
    await b.close()
  }
})

test.serial('ready() waits for Gossip to hold a peer; with nobody answering it rejects ERR_DECCOM_NOT_READY at its timeout', async (t) => {
  const first = await Node.create({ host, port: 0, stack: [new Gossip({ interval: 50 })] })
  const second = await Node.create({ host, port: 0, stack: [new Gossip({ bootstrap: [first.address], interval: 50 })] })
  const lonely = await Node.create({ host, port: 0, stack: [new Gossip({ bootstrap: ['127.0.0.1:9'], interval: 50 })] })
  try {
    await first.ready()
    const discovered = once(second, 'peer:discovered')
    await second.ready({ timeout: 5000 })
    t.deepEqual(((await discovered) as [{ id: Buffer }])[0].id, first.id)
    const t0 = Date.now()
    await t.throwsAsync(lonely.ready({ timeout: 300 }), { code: 'ERR_DECCOM_NOT_READY' })
    t.true(Date.now() - t0 < 1000)
  } finally {
    await Promise.all([first, second, lonely].map((node) => node.close()))
  }
})

test.serial("a listener that throws on network input reaches 'error', and the node keeps working", async (t) => {
  const a = await Node.create({ host, port: 0, stack: [new ReliableUdp()] })
  const b = await Node.create({ host, port: 0, stack: [new ReliableUdp()] })
  try {
    const errors: Error[] = []
    b.on('error', (e) => errors.push(e))
    b.once('message', () => {
      throw new Error('listener bug')
    })
    b.once('connection', () => {
      throw new Error('another listener bug')
    })
    await a.send(b.address, Buffer.from('one'))
    const conn = await a.connect(b.address)
    const second = once(b, 'message')
    await a.send(b.address, Buffer.from('two'))
    t.is(((await second) as [unknown, Buffer])[1].toString(), 'two')
    t.deepEqual(errors.map((e) => e.message), ['listener bug', 'another listener bug'])
    t.is(b.stats().app?.handler_errors, 2)
    const s = await conn.openStream()
    s.end('still works')
    t.pass()
  } finally {
    await a.close()
    await b.close()
  }
})

test.serial("a reader with 'readable' and read() gets the bytes in order (small pieces held for merging are released after read returns)", async (t) => {
  const a = await Node.create({ host, port: 0, stack: [new ReliableUdp(), new Noise()] })
  const b = await Node.create({ host, port: 0, stack: [new ReliableUdp(), new Noise()] })
  try {
    const got: string[] = []
    b.on('connection', (c) =>
      c.on('stream', (s) => {
        let d = ''
        s.on('readable', () => {
          for (let ch = s.read() as Buffer | null; ch !== null; ch = s.read() as Buffer | null) d += ch.toString()
        })
        s.on('end', () => {
          got.push(d)
          s.end()
        })
      }),
    )
    const conn = await a.connect(b.address)
    for (let i = 0; i < 40; i++) {
      const s = await conn.openStream()
      s.resume()
      const done = once(s, 'end')
      s.write(`{"name":"x","n":${i}}\n`)
      s.end(Buffer.from('the body comes second'))
      await done
    }
    t.is(got.length, 40)
    t.deepEqual(got.filter((d, i) => d !== `{"name":"x","n":${i}}\nthe body comes second`), [])
  } finally {
    await a.close()
    await b.close()
  }
})

test.serial('a stream written in the turn it opens costs one reliable message; one opened without writing still reaches the peer', async (t) => {
  const a = await Node.create({ host, port: 0, stack: [new ReliableUdp()] })
  const b = await Node.create({ host, port: 0, stack: [new ReliableUdp()] })
  try {
    const got: Stream[] = []
    b.on('connection', (conn) => conn.on('stream', (s) => got.push(s)))
    const conn = await a.connect(b.address)
    const received = (): number => b.stats()['reliable-udp']!.messages_received!
    await until(() => received() === 1)
    // Opened and written in the same turn: the first DATA frame (1 byte) opens the stream.
    const s1 = await conn.openStream()
    s1.write(Buffer.from([7]))
    await until(() => got.length === 1)
    const first = (await once(got[0]!, 'data')) as [Buffer]
    t.deepEqual(first[0], Buffer.from([7]))
    await sleep(50)
    t.is(received(), 2, 'the HELLO and one DATA frame: no separate empty opening frame')
    // Opened and not written: an empty DATA frame announces it after the turn.
    await conn.openStream()
    await until(() => got.length === 2)
    t.is(received(), 3)
    t.is(got[1]!.id, s1.id + 2)
  } finally {
    await a.close()
    await b.close()
  }
})
