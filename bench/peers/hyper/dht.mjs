// hyperdht side of bench/dht.mjs (--role=trial --impl=hyperdht): one trial (see ../dht-trial.mjs)
// on a hyperdht testnet (hyperdht/testnet) of --nodes (30) DHT nodes on 127.0.0.1.
//  - announce: A.announce(topic, keyPair).finished();
//  - newcomer: a fresh ephemeral DHT node (hyperdht's default for a new node), fullyBootstrapped();
//  - meet: for await (reply of B.lookup(topic)) until a reply lists A's public key;
//  - values: immutablePut / immutableGet, mutablePut(keyPair, value, { seq }) / mutableGet(publicKey,
//    { seq }) (latest: the default, as deccom's getMutable: the highest seq).
// Datagrams of B: sent = udx socket send/trySend calls (counted in JS) + udx's native transmit
// counter; received = udx's native receive counter.
// Loopback only: every node gets an explicit 127.0.0.1 bootstrap list, hyperdht's built-in list of
// public bootstrap nodes is emptied before any node is made and a datagram to any address outside
// 127.0.0.0/8 is dropped.
import { createRequire } from 'node:module'
import { HOST, parseFlags } from '../common.mjs'
import { runDhtTrial } from '../dht-trial.mjs'

const require = createRequire(import.meta.url)
require('hyperdht/lib/constants.js').BOOTSTRAP_NODES.length = 0
const DHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const f = parseFlags()

const udxRequire = createRequire(require.resolve('dht-rpc'))
const UDXSocket = udxRequire('udx-native/lib/socket.js')
const counts = new WeakMap()
let blocked = 0
for (const name of ['send', 'trySend']) {
  const orig = UDXSocket.prototype[name]
  UDXSocket.prototype[name] = function (buffer, port, host, ttl) {
    if (host && !String(host).startsWith('127.')) { // dropped: nothing leaves the loopback
      if (!blocked++) process.stderr.write(`hyperdht: dropped a datagram to ${host} (loopback only)\n`)
      return name === 'send' ? Promise.resolve(false) : undefined
    }
    counts.set(this.udx, (counts.get(this.udx) ?? 0) + 1)
    return orig.call(this, buffer, port, host, ttl)
  }
}

let testnet = null
let bootstrap = null
const keyPairs = new WeakMap()

const adapter = {
  async start (n) {
    testnet = await createTestnet(n, { host: HOST, bootstrap: [] })
    bootstrap = testnet.bootstrap
    if (!bootstrap.length || !bootstrap.every((b) => b.host === HOST)) throw new Error('testnet bootstrap is not loopback')
    return [...testnet.nodes]
  },
  async newcomer () {
    const node = new DHT({ ephemeral: true, bootstrap, host: HOST })
    await node.fullyBootstrapped()
    return node
  },
  async announce (node, topic) {
    const kp = DHT.keyPair()
    keyPairs.set(node, kp)
    await node.announce(topic, kp).finished()
  },
  async meet (node, topic, announcer) {
    const pk = keyPairs.get(announcer).publicKey
    for await (const reply of node.lookup(topic)) {
      if (reply.peers.some((p) => p.publicKey.equals(pk))) return
    }
    throw new Error('lookup ended without the announcer')
  },
  counters (node) {
    return { tx: (counts.get(node.udx) ?? 0) + node.udx.packetsTransmitted, rx: node.udx.packetsReceived }
  },
  async put (node, value) {
    return (await node.immutablePut(value)).hash
  },
  async get (node, key) {
    return (await node.immutableGet(key))?.value ?? null
  },
  keyPair: () => DHT.keyPair(),
  async putMutable (node, owner, value, seq) {
    await node.mutablePut(owner, value, { seq })
  },
  async getMutable (node, owner, seq) {
    const m = await node.mutableGet(owner.publicKey, { seq })
    return m && { value: m.value, seq: m.seq }
  },
  async close (nodes) {
    for (const n of nodes) if (!testnet.nodes.includes(n)) await n.destroy()
    await testnet.destroy()
  },
}

if (f.role === 'trial') await runDhtTrial(adapter, f)
else throw new Error('--role=trial (run through bench/dht.mjs)')
