/**
 * Auxiliary sockets of the native UDP socket (UdpTransport.openAuxiliary; docs/nat.md, "Auxiliary
 * sockets"), on loopback with real sockets: before a win every send to the remote leaves from each
 * auxiliary socket; the first datagram the remote sends to one of them makes it the winner, the
 * others close; from then on the winner carries the remote's traffic both ways, native
 * ReliableUdp and connections included; the bound holds and every socket closes. Imports the
 * BUILT package (dist/). Serial: the tests count the process's socket fds.
 */
import dgram from 'node:dgram'
import { readdirSync, readlinkSync } from 'node:fs'
import { once } from 'node:events'
import test from 'ava'

import { Node, ReliableUdp, UdpTransport, toAddress } from '../dist/index.js'

function socketFds(): number {
  let n = 0
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) n++
    } catch {
      // closed meanwhile
    }
  }
  return n
}

const linux = process.platform === 'linux'
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function collect(sock: dgram.Socket, n: number, ms: number): Promise<{ port: number; data: Buffer }[]> {
  const got: { port: number; data: Buffer }[] = []
  const on = (data: Buffer, r: dgram.RemoteInfo): void => void got.push({ port: r.port, data })
  sock.on('message', on)
  for (let t = 0; t < ms / 5 && got.length < n; t++) await sleep(5)
  await sleep(30) // anything beyond n
  sock.off('message', on)
  return got
}

test.serial('sends fan out from every auxiliary socket until the remote answers one; then only the winner carries its traffic, both ways', async (t) => {
  const udp = new UdpTransport({ host: '127.0.0.1' })
  const a = await Node.create({ stack: [udp] })
  const b = dgram.createSocket('udp4')
  t.teardown(async () => {
    await a.close()
    b.close()
  })
  b.bind(0, '127.0.0.1')
  await once(b, 'listening')
  const B = toAddress('127.0.0.1', b.address().port)
  const fds = socketFds()

  t.is(udp.openAuxiliary(B, 4), 4)
  t.is(udp.stats().aux_open, 4)
  if (linux) t.is(socketFds(), fds + 4)
  a.send(B, Buffer.from('spray'))
  const sprayed = await collect(b, 4, 2000)
  const ports = new Set(sprayed.map((d) => d.port))
  t.is(sprayed.length, 4, 'one datagram from each auxiliary socket')
  t.is(ports.size, 4, 'from 4 different ports')
  t.false(ports.has(a.address.port), 'none from the main socket')
  t.true(sprayed.every((d) => d.data.equals(Buffer.from('\x00spray'))))

  // The remote answers one of them: it wins, the others close; the answer comes up as from B.
  const winner = sprayed[2].port
  const got = once(a, 'message')
  b.send(Buffer.from('\x00answer'), winner, '127.0.0.1')
  const [from, data] = (await got) as [{ address: { key: string } }, Buffer]
  t.is(from.address.key, B.key)
  t.is(data.toString(), 'answer')
  const st = udp.stats()
  t.is(st.aux_won, 1)
  t.is(st.aux_open, 1)
  t.is(st.aux_closed, 3)
  if (linux) t.is(socketFds(), fds + 1)

  a.send(B, Buffer.from('after'))
  const after = await collect(b, 1, 2000)
  t.deepEqual(after.map((d) => [d.port, d.data.toString()]), [[winner, '\x00after']], 'only the winner sends now')

  // Closing the group: the main socket carries B's traffic again.
  t.is(udp.closeAuxiliary(B), 1)
  t.is(udp.stats().aux_open, 0)
  a.send(B, Buffer.from('main'))
  const main = await collect(b, 1, 2000)
  t.deepEqual(main.map((d) => d.port), [a.address.port])
  if (linux) t.is(socketFds(), fds)
})

test.serial('native ReliableUdp and a connection run over the winning auxiliary socket', async (t) => {
  const udpA = new UdpTransport({ host: '127.0.0.1' })
  // Internet-sized segments (loopback would carry 16,000-byte ones): the counts below are of a path
  // like the ones auxiliary sockets serve.
  const a = await Node.create({ stack: [new ReliableUdp({ loopbackSegmentSize: 1200 }), udpA] })
  const b = await Node.create({ host: '127.0.0.1', stack: [new ReliableUdp({ loopbackSegmentSize: 1200 })] })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.is(udpA.openAuxiliary(b.address, 3), 3)
  // A transport ping sprays from the 3 sockets; B's transport answers each at its source port:
  // the first answer to arrive picks the winner.
  await udpA.ping(b.address, { timeout: 2000 })
  await sleep(50)
  t.is(udpA.stats().aux_won, 1)
  t.is(udpA.stats().aux_open, 1)

  let remote: string | null = null
  b.on('connection', (c: any) => {
    remote = c.remote.address.key
    c.on('stream', (s: any) => {
      const parts: Buffer[] = []
      s.on('data', (d: Buffer) => parts.push(d))
      s.on('end', () => s.end(Buffer.from(String(Buffer.concat(parts).length))))
    })
  })
  const conn = await a.connect(b.address)
  const s = await conn.openStream()
  const back: Buffer[] = []
  s.on('data', (d: Buffer) => back.push(d))
  const ended = once(s, 'end')
  s.end(Buffer.alloc(200_000, 7))
  await ended
  t.is(Buffer.concat(back).toString(), '200000', 'B received the whole stream')
  t.not(remote, null)
  t.not(remote, a.address.key, 'B sees A at the winning socket, not at its main socket')
  t.is(udpA.stats().aux_open, 1)
  t.true((udpA.stats().rudp_datagrams_sent ?? 0) > 100, 'ReliableUdp ran inside the socket (native)')
  t.true(udpA.stats().aux_rx_datagrams > 10 && udpA.stats().aux_tx_datagrams > 100, 'through the auxiliary socket')
})

test.serial('maxAuxSockets bounds the auxiliary sockets; stopping the transport closes them all', async (t) => {
  const udp = new UdpTransport({ host: '127.0.0.1', maxAuxSockets: 3 })
  await udp.start()
  const fds = socketFds()
  t.is(udp.openAuxiliary('127.0.0.1:9', 10), 3, 'only what fits')
  t.is(udp.openAuxiliary('127.0.0.1:10', 1), 0)
  t.is(udp.stats().aux_open, 3)
  t.is(udp.closeAuxiliary('127.0.0.1:9'), 3)
  t.is(udp.openAuxiliary('127.0.0.1:10', 2), 2, 'closed sockets make room')
  if (linux) t.is(socketFds(), fds + 2)
  await udp.stop()
  if (linux) t.is(socketFds(), fds - 1, 'the main socket and both auxiliary sockets are closed')
})
