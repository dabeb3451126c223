// hyperdht side of bench/connect.mjs (--impl=hyperdht):
//  --role=net:    a hyperdht testnet of --nodes (30) DHT nodes on 127.0.0.1 plus a server node
//                 (ephemeral, its own key pair) that echoes what its connections send;
//  --role=client: per connect a fresh ephemeral DHT node bootstrapped from the testnet (joined
//                 before the clock starts), then dht.connect(serverPublicKey), write 1 byte, time
//                 until it comes back. The connect includes the DHT lookup of the server's key, the
//                 Noise handshake through the DHT and the udx stream setup.
// Datagrams per connect, of the client node: sent = DHT messages sent through udx's socket
// send/trySend (counted in JS) + udx's native transmit counter (stream packets); received = udx's
// native receive counter (every datagram).
// Loopback only: every node gets an explicit 127.0.0.1 bootstrap list and hyperdht's built-in list
// of public bootstrap nodes is emptied before any node is made.
import { createRequire } from 'node:module'
import { HOST, now, parseFlags, runConnectClient, runConnectNet, withTimeout } from '../common.mjs'

const require = createRequire(import.meta.url)
require('hyperdht/lib/constants.js').BOOTSTRAP_NODES.length = 0
const DHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const f = parseFlags()
const noop = () => {}

// Count the datagrams each UDX instance (one per DHT node) sends through udx's JS API.
const udxRequire = createRequire(require.resolve('dht-rpc'))
const UDXSocket = udxRequire('udx-native/lib/socket.js')
const counts = new WeakMap()
let blocked = 0
const bump = (udx) => counts.set(udx, (counts.get(udx) ?? 0) + 1)
for (const name of ['send', 'trySend']) {
  const orig = UDXSocket.prototype[name]
  UDXSocket.prototype[name] = function (buffer, port, host, ttl) {
    if (host && !String(host).startsWith('127.')) { // dropped: nothing leaves the loopback
      if (!blocked++) process.stderr.write(`hyperdht: dropped a datagram to ${host} (loopback only)\n`)
      return name === 'send' ? Promise.resolve(false) : undefined
    }
    bump(this.udx)
    return orig.call(this, buffer, port, host, ttl)
  }
}
const countersOf = (node) => {
  // udx's native receive counter sees every datagram; its transmit counter misses those sent
  // through the socket's JS API (send/trySend), which are counted above.
  return { tx: (counts.get(node.udx) ?? 0) + node.udx.packetsTransmitted, rx: node.udx.packetsReceived }
}

const net = {
  async start (f) {
    const testnet = await createTestnet(Number(f.nodes ?? 30), { host: HOST, bootstrap: [] })
    const bootstrap = testnet.bootstrap
    if (!bootstrap.length || !bootstrap.every((b) => b.host === HOST)) throw new Error('testnet bootstrap is not loopback')
    const node = new DHT({ ephemeral: true, bootstrap, host: HOST })
    await node.fullyBootstrapped()
    const keyPair = DHT.keyPair()
    const server = node.createServer((sock) => {
      sock.on('error', noop)
      sock.on('data', (d) => sock.write(d))
    })
    await server.listen(keyPair)
    return {
      info: { bootstrap, publicKey: keyPair.publicKey.toString('hex') },
      close: async () => { await server.close(); await node.destroy(); await testnet.destroy() },
    }
  },
}

const client = {
  async once (info) {
    if (!info.bootstrap.length) throw new Error('no bootstrap')
    const node = new DHT({ ephemeral: true, bootstrap: info.bootstrap, host: HOST })
    try {
      await withTimeout(node.fullyBootstrapped(), 15_000, 'bootstrap')
      const c0 = countersOf(node)
      const t0 = now()
      const sock = node.connect(Buffer.from(info.publicKey, 'hex'))
      sock.on('error', noop)
      const echoed = new Promise((resolve, reject) => {
        sock.once('data', resolve)
        sock.once('error', reject)
        sock.once('close', () => reject(new Error('closed before the echo')))
      })
      sock.write(Buffer.from([42]))
      await withTimeout(echoed, 15_000, 'connect + echo')
      const ms = now() - t0
      const c1 = countersOf(node)
      const closed = new Promise((resolve) => sock.once('close', resolve))
      sock.destroy()
      await withTimeout(closed, 5000, 'close').catch(noop)
      return { ms, tx: c1.tx - c0.tx, rx: c1.rx - c0.rx, path: sock.rawStream?.remoteHost === HOST ? 'direct' : 'other' }
    } finally {
      await withTimeout(node.destroy(), 5000, 'destroy').catch(noop)
    }
  },
}

if (f.role === 'net') await runConnectNet(net, f)
else if (f.role === 'client') await runConnectClient(client, f)
else throw new Error('--role=net|client')
