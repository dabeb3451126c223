// Smoke test of the installed package, as CommonJS: two nodes exchange a message over Noise
// (encrypted) and ReliableUdp on 127.0.0.1.
'use strict'
const assert = require('node:assert/strict')
const { randomBytes } = require('node:crypto')
const { Node, Identity, Noise, ReliableUdp } = require('deccom')

async function main() {
  const timer = setTimeout(() => {
    console.error('smoke.cjs: no message within 20 s')
    process.exit(1)
  }, 20_000)
  const open = () => Node.create({ identity: Identity.generate(), host: '127.0.0.1', port: 0, stack: [new Noise(), new ReliableUdp()] })
  const [a, b] = await Promise.all([open(), open()])
  const got = new Promise((resolve) => b.on('message', (from, data) => resolve({ from, data })))
  const payload = randomBytes(50_000)
  await a.send(b.address, payload)
  const { from, data } = await got
  assert.ok(data.equals(payload), 'payload arrives byte-exact')
  assert.ok(from.id.equals(a.id), 'the sender is authenticated as a')
  await Promise.all([a.close(), b.close()])
  clearTimeout(timer)
  console.log(`smoke.cjs ok on Node ${process.version}: ${data.length} bytes over Noise + ReliableUdp`)
}
main().catch((err) => {
  console.error(err)
  process.exit(1)
})
