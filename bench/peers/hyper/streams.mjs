// Holepunch side of bench/streams.mjs: one @hyperswarm/secret-stream (Noise XX + libsodium
// secretstream) per connection, over a udx-native stream (--impl=ss-udx) or over a node:net TCP
// socket (--impl=ss-tcp), on 127.0.0.1. Forked by bench/streams.mjs with --role=recv|send; the
// IPC protocol is in ../common.mjs. secret-stream has no multiplexer: one stream per connection,
// so the `many` part does not apply to it.
import net from 'node:net'
import { createRequire } from 'node:module'
import { HOST, nodeWriter, parseFlags, runStreamChild } from '../common.mjs'

const require = createRequire(import.meta.url)
const SecretStream = require('@hyperswarm/secret-stream')
const UDX = require('udx-native')
const f = parseFlags()
const noop = () => {}

function attach (ss, onStream) {
  const h = onStream()
  ss.on('data', (d) => h.data(d))
  ss.on('end', () => { h.end(); ss.end() })
  ss.on('error', (err) => h.end(err))
}

const whenOpen = (ss) => new Promise((resolve, reject) => {
  ss.once('connect', resolve)
  ss.once('error', reject)
  ss.once('close', () => reject(new Error('closed during the handshake')))
})

const tcp = {
  async listen ({ onStream }) {
    const sockets = new Set()
    const server = net.createServer((s) => {
      sockets.add(s)
      s.setNoDelay(true)
      s.on('error', noop)
      attach(new SecretStream(false, s), onStream)
    })
    await new Promise((resolve) => server.listen(0, HOST, resolve))
    return { addr: { port: server.address().port }, close: () => { for (const s of sockets) s.destroy(); server.close() } }
  },
  async connect (addr) {
    const s = net.connect(addr.port, HOST)
    s.setNoDelay(true)
    s.on('error', noop)
    const ss = new SecretStream(true, s)
    ss.on('error', noop)
    await whenOpen(ss)
    let used = false
    return {
      async open () { if (used) throw new Error('one stream per secret-stream connection'); used = true; return nodeWriter(ss) },
      close: () => { ss.destroy(); s.destroy() },
    }
  },
}

// udx streams are connected from both ends: each side needs the other's socket port and stream id.
const udx = {
  async listen ({ onStream }) {
    const u = new UDX()
    const sock = u.createSocket()
    sock.bind(0, HOST)
    const raw = u.createStream(2)
    raw.on('error', noop)
    const ss = new SecretStream(false, raw)
    attach(ss, onStream)
    return {
      addr: { port: sock.address().port, id: 2 },
      onPeer: (p) => raw.connect(sock, p.id, p.port, HOST),
      close: async () => { ss.destroy(); raw.destroy(); await sock.close() },
    }
  },
  async connect (addr, { tell }) {
    const u = new UDX()
    const sock = u.createSocket()
    sock.bind(0, HOST)
    const raw = u.createStream(1)
    raw.on('error', noop)
    raw.connect(sock, addr.id, addr.port, HOST)
    const ss = new SecretStream(true, raw)
    ss.on('error', noop)
    tell({ port: sock.address().port, id: 1 })
    await whenOpen(ss)
    let used = false
    return {
      async open () { if (used) throw new Error('one stream per secret-stream connection'); used = true; return nodeWriter(ss) },
      close: async () => { ss.destroy(); raw.destroy(); await sock.close() },
    }
  },
}

const adapters = { 'ss-tcp': tcp, 'ss-udx': udx }
if (!adapters[f.impl]) throw new Error('unknown --impl ' + f.impl)
await runStreamChild(adapters[f.impl], f)
