// Smoke test of the installed package, as an ES module: `import` and `require` give the same
// module, and two nodes exchange a message over Noise (encrypted) and ReliableUdp on 127.0.0.1.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import deccom, { Node, Identity, Noise, ReliableUdp, DeccomError } from 'deccom'

const require = createRequire(import.meta.url)
const cjs = require('deccom')
assert.equal(cjs.Node, Node, 'import and require load the same module instance')
assert.equal(deccom.Node, Node, 'the default export is the CommonJS module object')
assert.equal(typeof DeccomError, 'function')

const timer = setTimeout(() => {
  console.error('smoke.mjs: no message within 20 s')
  process.exit(1)
}, 20_000)
const open = () => Node.create({ identity: Identity.generate(), host: '127.0.0.1', port: 0, stack: [new Noise(), new ReliableUdp()] })
const [a, b] = await Promise.all([open(), open()])
const payload = randomBytes(200_000) // several reliable-UDP datagrams, reassembled
const got = new Promise((resolve) => b.on('message', (from, data) => resolve({ from, data })))
await a.send(b.address, payload)
const { from, data } = await got
assert.ok(data.equals(payload), 'payload arrives byte-exact')
assert.ok(from.id.equals(a.id), 'the sender is authenticated as a')
const stats = b.stats()
assert.ok(stats.noise && stats['reliable-udp'], `stats have noise and reliable-udp counters: ${Object.keys(stats)}`)
await Promise.all([a.close(), b.close()])
clearTimeout(timer)
console.log(`smoke.mjs ok on Node ${process.version}: ${data.length} bytes over Noise + ReliableUdp`)
