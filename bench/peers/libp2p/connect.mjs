// js-libp2p side of bench/connect.mjs, on Node 24 (--impl=libp2p-quic or libp2p-tcp):
//  --role=net:    one listening node on 127.0.0.1 with an echo protocol;
//  --role=client: one dialing node; per connect a new connection to the listener's known
//                 multiaddr (no discovery): dial, newStream(echo), send 1 byte, time until it comes
//                 back; then the connection is closed and gone before the next dial.
// No datagram counts (QUIC runs inside the native quinn binding).
import { multiaddr } from '@multiformats/multiaddr'
import { now, parseFlags, runConnectClient, runConnectNet, sleep, withTimeout } from '../common.mjs'
import { makeNode, ownAddr, PROTO_ECHO } from './nodes.mjs'

const f = parseFlags()
const transport = { 'libp2p-tcp': 'tcp', 'libp2p-quic': 'quic' }[f.impl]
if (!transport) throw new Error('unknown --impl ' + f.impl)

const net = {
  async start () {
    const node = await makeNode(transport, { listen: true })
    await node.handle(PROTO_ECHO, (stream) => {
      stream.addEventListener('message', (evt) => { stream.send(evt.data) })
      stream.addEventListener('remoteCloseWrite', () => { stream.close().catch(() => {}) })
    })
    return { info: { addr: ownAddr(node, transport) }, close: () => node.stop() }
  },
}

let dialer = null
const client = {
  async setup () { dialer = await makeNode(transport) },
  async once (info) {
    if (dialer.getConnections().length) throw new Error('a connection is still open before the dial')
    const t0 = now()
    const conn = await dialer.dial(multiaddr(info.addr), { signal: AbortSignal.timeout(15_000) })
    const stream = await conn.newStream(PROTO_ECHO, { signal: AbortSignal.timeout(15_000) })
    const echoed = new Promise((resolve) => stream.addEventListener('message', resolve, { once: true }))
    stream.send(new Uint8Array([42]))
    await withTimeout(echoed, 15_000, 'echo')
    const ms = now() - t0
    await withTimeout(conn.close(), 5000, 'close')
    for (let i = 0; i < 200 && dialer.getConnections().length; i++) await sleep(5)
    return { ms, path: transport }
  },
  teardown: () => dialer?.stop(),
}

if (f.role === 'net') await runConnectNet(net, f)
else if (f.role === 'client') await runConnectClient(client, f)
else throw new Error('--role=net|client')
