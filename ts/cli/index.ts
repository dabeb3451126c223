#!/usr/bin/env node
/** The `deccom` command line: `deccom --help` lists the subcommands. */
import { Command } from 'commander'
import { HolePuncher } from '../protocols/hole-puncher'
import { Kademlia } from '../protocols/kademlia'
import { Noise } from '../protocols/noise'
import { ReliableUdp } from '../protocols/reliable'
import { Relay } from '../protocols/relay'
import { Node } from '../node'
import { defaultKeyFile, hostPort, identityFor, loadOrCreateIdentity, onStopSignal } from './common'
import { chat } from './chat'
import { serveMetrics, type MetricsServer } from './metrics-http'
import { receive, send } from './transfer'

const program = new Command()
program.name('deccom').description('deccom peer-to-peer tools: node ids, a bootstrap node, chat and file transfer by node id, ping, NAT type, metrics').showHelpAfterError()

program
  .command('id')
  .description('print the node id of the key file, creating the key (mode 0600) if it is missing')
  .option('--key <file>', 'key file', defaultKeyFile())
  .action((o: { key: string }) => {
    const { identity, created } = loadOrCreateIdentity(o.key)
    if (created) console.error(`created ${o.key}`)
    console.log(identity.idHex)
  })

program
  .command('bootstrap')
  .description('run a bootstrap node ([Kademlia, ReliableUdp, Noise], also a HolePuncher rendezvous and a Relay) until SIGINT or SIGTERM')
  .requiredOption('--listen <host:port>', 'UDP address to listen on, e.g. 0.0.0.0:4000')
  .option('--key <file>', 'key file (created if missing); default: a new identity for this run')
  .option('--metrics <host:port>', 'serve the node\'s counters at http://HOST:PORT/metrics (Prometheus text format); ":PORT" alone listens on 127.0.0.1 only')
  .action(async (o: { listen: string; key?: string; metrics?: string }) => {
    const { host, port } = hostPort(o.listen, '--listen')
    const node = await Node.create({ host, port, identity: identityFor(o.key), stack: [new Kademlia(), new ReliableUdp(), new Noise(), new HolePuncher({ relay: true }), new Relay({ serve: { maxSessions: 64, maxBytesPerSecond: 1 << 20 } })] })
    let metrics: MetricsServer | undefined
    try {
      if (o.metrics !== undefined) metrics = await serveMetrics(node, o.metrics)
    } catch (e) {
      await node.close()
      throw e
    }
    console.log(`id ${node.id.toString('hex')}`)
    console.log(`address ${node.address.key}`)
    if (metrics) console.log(`metrics ${metrics.url}`)
    onStopSignal((signal) => {
      console.error(`${signal}: closing`)
      Promise.all([metrics?.close(), node.close()]).then(
        () => process.exit(0),
        (e: Error) => {
          console.error(`close failed: ${e.message}`)
          process.exit(1)
        },
      )
    })
  })

program
  .command('send')
  .description('send a file to a node by id, found through the bootstrap node; exits 0 once the receiver confirms its SHA-256')
  .argument('<file>', 'the file to send')
  .argument('<node-id>', "the receiver's node id (64 hex digits)")
  .requiredOption('--bootstrap <host:port>', 'a bootstrap node')
  .option('--listen <host:port>', 'local UDP address', '0.0.0.0:0')
  .option('--key <file>', 'key file (created if missing); default: a new identity for this run')
  .action(async (file: string, nodeId: string, o: { bootstrap: string; listen: string; key?: string }) => {
    process.exitCode = await send(file, nodeId, o)
  })

program
  .command('receive')
  .description('print this node id, receive one file (or many with --keep), verify and confirm its SHA-256')
  .requiredOption('--bootstrap <host:port>', 'a bootstrap node')
  .option('--out <dir>', 'directory the files are written to', '.')
  .option('--keep', 'keep receiving files until SIGINT or SIGTERM', false)
  .option('--listen <host:port>', 'local UDP address', '0.0.0.0:0')
  .option('--key <file>', 'key file (created if missing); default: a new identity for this run')
  .action(async (o: { bootstrap: string; out: string; keep: boolean; listen: string; key?: string }) => {
    process.exitCode = await receive(o)
  })

program
  .command('chat')
  .description('a terminal chat: join through a bootstrap node and talk to every chat peer you meet, or to one node (--to, /to); /help inside lists the commands')
  .requiredOption('--bootstrap <host:port>', 'a bootstrap node')
  .option('--name <name>', 'the name others see (default: user-<first 4 hex digits of the id>)')
  .option('--to <node-id>', 'talk to this node only (64 hex digits); default: everyone in the room')
  .option('--listen <host:port>', 'local UDP address', '0.0.0.0:0')
  .option('--key <file>', 'key file (created if missing); default: a new identity for this run')
  .action(async (o: { bootstrap: string; listen: string; key?: string; name?: string; to?: string }) => {
    process.exitCode = await chat(o)
  })

program
  .command('ping')
  .description('measure the round trip time to a deccom node (UDP transport ping)')
  .argument('<host:port>', 'the node address')
  .option('--count <n>', 'number of pings', '3')
  .action(async (target: string, o: { count: string }) => {
    const { host, port } = hostPort(target, 'ping')
    const count = Math.max(1, Math.min(1000, Number.parseInt(o.count, 10) || 1))
    const node = await Node.create({ host: host === '127.0.0.1' || host === 'localhost' ? '127.0.0.1' : '0.0.0.0', port: 0, stack: [] })
    let lost = 0
    try {
      for (let i = 0; i < count; i++) {
        try {
          const rtt = await node.ping(`${host}:${port}`)
          console.log(`${host}:${port}: rtt ${rtt.toFixed(2)} ms`)
        } catch (e) {
          lost++
          console.log(`${host}:${port}: no answer (${(e as Error).message})`)
        }
      }
    } finally {
      await node.close()
    }
    process.exitCode = lost === count ? 1 : 0
  })

program
  .command('nat')
  .description('ask rendezvous nodes (e.g. deccom bootstrap nodes) which address they see this node at')
  .requiredOption('--rendezvous <host:port...>', 'one or more rendezvous nodes (2 that agree give the external address)')
  .option('--listen <host:port>', 'local UDP address', '0.0.0.0:0')
  .option('--timeout <ms>', 'how long to wait for the answers', '3000')
  .action(async (o: { rendezvous: string[]; listen: string; timeout: string }) => {
    const { host, port } = hostPort(o.listen, '--listen')
    const rendezvous = o.rendezvous.map((r) => {
      const a = hostPort(r, '--rendezvous')
      return `${a.host}:${a.port}`
    })
    const hp = new HolePuncher({ rendezvous })
    const node = await Node.create({ host, port, stack: [hp] })
    try {
      const end = Date.now() + Math.max(100, Number.parseInt(o.timeout, 10) || 3000)
      while (hp.observations().length < rendezvous.length && Date.now() < end) await new Promise((r) => setTimeout(r, 50))
      console.log(`local ${node.address.key}`)
      for (const ob of hp.observations()) console.log(`seen by ${ob.observer.key} as ${ob.address.key}`)
      const ext = hp.externalAddress()
      console.log(ext ? `external ${ext.key}` : 'external unknown (needs 2 rendezvous nodes that agree)')
      process.exitCode = hp.observations().length > 0 ? 0 : 1
    } finally {
      await node.close()
    }
  })

program
  .command('stats')
  .description("join the network through a bootstrap node and print the short-lived node's counters as JSON")
  .requiredOption('--bootstrap <host:port>', 'a bootstrap node')
  .option('--listen <host:port>', 'local UDP address', '0.0.0.0:0')
  .action(async (o: { bootstrap: string; listen: string }) => {
    const { host, port } = hostPort(o.listen, '--listen')
    const boot = hostPort(o.bootstrap, '--bootstrap')
    const node = await Node.create({ host, port, stack: [new Kademlia({ bootstrap: [`${boot.host}:${boot.port}`] }), new ReliableUdp(), new Noise()] })
    try {
      await node.ready({ signal: AbortSignal.timeout(15_000) })
      console.log(JSON.stringify(node.stats(), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Map ? Object.fromEntries(v) : v), 2))
    } finally {
      await node.close()
    }
  })

program.parseAsync(process.argv).catch((e: Error) => {
  console.error(`deccom: ${e.message}`)
  process.exitCode = 1
})
