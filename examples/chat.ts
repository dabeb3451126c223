// A three-person chat on connections and streams. Alice, Bob and Carol run real nodes on
// 127.0.0.1 with the stack [Kademlia, ReliableUdp, Noise]: Alice is the bootstrap node, Bob and
// Carol join through her. Once every node is ready (joined the DHT), each one connects to the two
// others BY NODE ID: discovery finds the peer's address, Noise authenticates it, and a second
// connect to a peer that already connected to us reuses that connection. Then:
//   - short chat messages go over `conn.send` (the other side's connection emits 'message');
//   - the node that opened a connection opens a stream on it and asks questions, one line each;
//     the other side answers every line on the same stream; both ends then end their side.
// The conversation is printed with short node ids and each connection's path and rtt; everything
// is closed at the end and the process exits by itself.
// Run: npx ava __test__/examples.spec.ts  (compiles it to .tmp/examples/chat.mjs and runs it;
// afterwards: node .tmp/examples/chat.mjs)
import { createInterface } from 'node:readline'
import { type Connection, DeccomError, ErrorCode, Kademlia, Node, Noise, ReliableUdp, type Stream } from 'deccom'

const host = '127.0.0.1'
// Nothing here should take more than a few seconds: give up loudly instead of hanging.
const deadline = setTimeout(() => {
  console.error('chat: not finished within 30 s')
  process.exit(1)
}, 30_000)
deadline.unref()

interface Member {
  name: string
  node: Node
  /** The member's connections, by the other member's name. */
  conns: Map<string, Connection>
  /** Streams the member answered on (opened by the other side). */
  answering: Promise<void>[]
}

const short = (id: Buffer): string => id.toString('hex').slice(0, 8)

const alice = await Node.create({ host, port: 0, stack: [new Kademlia(), new ReliableUdp(), new Noise()] })
const others = await Promise.all(
  ['bob', 'carol'].map(() =>
    Node.create({ host, port: 0, stack: [new Kademlia({ bootstrap: [alice.address] }), new ReliableUdp(), new Noise()] }),
  ),
)
const members: Member[] = [alice, ...others].map((node, i) => ({ name: ['alice', 'bob', 'carol'][i] ?? '?', node, conns: new Map(), answering: [] }))
const byId = new Map(members.map((m) => [m.node.id.toString('hex'), m]))

/** "bob (5c1e9a0d)": who is at the other end of a connection (Noise authenticated the id). */
function who(conn: Connection): string {
  const id = conn.remote.id
  if (id === null) return `${conn.remote.address.key} (unauthenticated)`
  return `${byId.get(id.toString('hex'))?.name ?? '?'} (${short(id)})`
}
const nameOf = (conn: Connection): string => (conn.remote.id && byId.get(conn.remote.id.toString('hex'))?.name) || '?'
const pad = (s: string): string => s.padEnd(5)

/** Reads `stream` line by line. The stream is not destroyed at its end, so it can still be written. */
function lines(stream: Stream): AsyncIterable<string> {
  stream.setEncoding('utf8')
  return createInterface({ input: stream, crlfDelay: Infinity })
}

/** What every member does with a connection, whoever opened it: print its messages, answer its streams. */
function attach(me: Member, conn: Connection): void {
  const peer = nameOf(conn)
  me.conns.set(peer, conn)
  conn.on('message', (data) => console.log(`${pad(me.name)} <- ${pad(peer)} [message] ${data.toString('utf8')}`))
  conn.on('stream', (stream) => {
    me.answering.push(
      (async () => {
        let n = 0
        for await (const line of lines(stream)) {
          console.log(`${pad(me.name)} <- ${pad(peer)} [stream ${stream.id}] ${line}`)
          const answer = `${me.name} heard your question #${++n} (${line.split(' ').length} words)`
          if (!stream.write(`${answer}\n`)) await new Promise((r) => stream.once('drain', r))
        }
        stream.end() // the peer finished asking: finish answering
      })(),
    )
  })
  conn.on('close', (err) => {
    const byPeer = err instanceof DeccomError && err.code === ErrorCode.CONNECTION_CLOSED && err.details?.by === 'remote'
    console.log(`${pad(me.name)}    connection to ${peer} closed ${err === undefined ? 'by us' : byPeer ? `by ${peer}` : `(${err.message})`}`)
  })
}

for (const m of members) {
  m.node.on('connection', (conn) => {
    console.log(`${pad(m.name)} accepted a connection from ${who(conn)}, path ${conn.path}`)
    attach(m, conn)
  })
  console.log(`${pad(m.name)} id ${short(m.node.id)} on ${m.node.address.key}${m.node === alice ? ' (bootstrap)' : ''}`)
}

await Promise.all(members.map((m) => m.node.ready({ signal: AbortSignal.timeout(10_000) })))
console.log('every node joined the DHT (node.ready() resolved)\n')

// Each member connects to the two others by node id. Where the other one connected first, connect()
// returns that connection (one connection per pair of peers).
const opened = new Set<Connection>()
for (const m of members) {
  for (const other of members) {
    if (other === m) continue
    const conn = await m.node.connect(other.node.id, { signal: AbortSignal.timeout(10_000) })
    if (m.conns.get(other.name) === conn) {
      console.log(`${pad(m.name)} -> ${pad(other.name)} connect(${short(other.node.id)}): reuses the connection ${other.name} opened`)
      continue
    }
    opened.add(conn)
    attach(m, conn)
    console.log(`${pad(m.name)} -> ${pad(other.name)} connect(${short(other.node.id)}): ${who(conn)}, path ${conn.path}, rtt ${conn.rtt.toFixed(1)} ms`)
  }
}
console.log('')

// Messages: everyone greets everyone.
for (const m of members) {
  for (const [peer, conn] of m.conns) await conn.send(Buffer.from(`hi ${peer}, ${m.name} here`))
}

// Streams: on each connection, the side that opened it asks its questions, one line each, and
// prints the answers; the other side answers in attach() above.
const questions = ['how is the weather on your port?', 'did discovery find you quickly?', 'see you on the next stream?']
const asking: Promise<void>[] = []
for (const m of members) {
  for (const [peer, conn] of m.conns) {
    if (!opened.has(conn)) continue
    asking.push(
      (async () => {
        const stream = await conn.openStream()
        const answers = lines(stream)
        for (const q of questions) stream.write(`${q}\n`)
        stream.end() // no more questions; the answers still come back
        let n = 0
        for await (const a of answers) {
          console.log(`${pad(m.name)} <- ${pad(peer)} [stream ${stream.id}] ${a}`)
          n++
        }
        if (n !== questions.length) throw new Error(`${m.name} got ${n} answers from ${peer}, expected ${questions.length}`)
        console.log(`${pad(m.name)}    stream ${stream.id} to ${peer} done: ${stream.bytesSent} bytes sent (${stream.bytesAcknowledged} acknowledged), ${stream.bytesReceived} received`)
      })(),
    )
  }
}
await Promise.all(asking)
await Promise.all(members.flatMap((m) => m.answering))
console.log('')

// Goodbye: whoever opened a connection closes it (the other side's connection emits 'close'), then
// the nodes close.
const hungUp = members.flatMap((m) => [...m.conns.values()].map((conn) => (conn.closed ? Promise.resolve() : new Promise((r) => conn.once('close', r)))))
for (const conn of opened) await conn.close()
await Promise.all(hungUp)
for (const m of members) {
  const c = m.node.stats().app ?? {}
  console.log(`${pad(m.name)} connections dialled ${c.connections_dials ?? 0}, accepted ${c.connections_accepted ?? 0}; open now ${m.node.connections().length}`)
}
await Promise.all(members.map((m) => m.node.close()))
clearTimeout(deadline)
console.log('all nodes closed; the process exits on its own')
