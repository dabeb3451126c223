// Three nodes on 127.0.0.1: each greets the others, answers what it hears, and pings them.
// Run: npm run demo   (or: node examples/demo.mjs)
import { Node, Identity } from '../dist/index.mjs'

const names = ['alice', 'bob', 'carol']
const nodes = await Promise.all(names.map((name) => Node.create({ identity: Identity.fromString(name), host: '127.0.0.1', port: 0 })))
const nameOf = new Map(nodes.map((n, i) => [n.address.key, names[i]]))

let replies = 0
const allReplies = new Promise((resolve) => {
  nodes.forEach((node, i) => {
    node.on('message', (from, data) => {
      const text = data.toString()
      console.log(`${names[i].padEnd(5)} <- ${nameOf.get(from.address.key).padEnd(5)} ${JSON.stringify(text)}`)
      if (text.startsWith('hello')) node.send(from, Buffer.from(`hi ${nameOf.get(from.address.key)}, ${names[i]} here`))
      else if (++replies === nodes.length * (nodes.length - 1)) resolve()
    })
  })
})

for (const [i, node] of nodes.entries()) {
  console.log(`${names[i].padEnd(5)} id ${node.id.toString('hex').slice(0, 16)}… listening on ${node.address.key}`)
}
for (const node of nodes) {
  for (const other of nodes) if (other !== node) await node.send(other.address, Buffer.from(`hello from ${nameOf.get(node.address.key)}`))
}
await Promise.race([allReplies, new Promise((_, reject) => setTimeout(() => reject(new Error('demo: replies did not arrive within 5 s')), 5000).unref())])

for (const node of nodes) {
  const rtts = await Promise.all(nodes.filter((o) => o !== node).map((o) => node.ping(o.address)))
  console.log(`${nameOf.get(node.address.key).padEnd(5)} ping RTTs: ${rtts.map((r) => r.toFixed(3) + ' ms').join(', ')}`)
}
const s = nodes[0].stats()
console.log(`alice's counters: udp sent ${s.udp.sent}, received ${s.udp.received}, pings answered ${s.udp.pings_answered ?? 0}; app received ${s.app.received}`)
await Promise.all(nodes.map((n) => n.close()))
console.log('all nodes closed; the process exits on its own')
