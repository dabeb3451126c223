/**
 * A deccom node for the port-mapping tests (__test__/portmap.spec.ts), run inside a network
 * namespace: `node portmap-node.mjs DIST CONFIG_JSON`. It imports the BUILT package and reports
 * JSON lines on stdout: `ready` (local address), `mapped` (the PortMapper's outcome and
 * `node.nat()`), `message` (from, data), `sent`, `closed`, `error`. Commands on stdin:
 * `{"cmd":"send","to":"host:port","data":"..."}`, `{"cmd":"stats"}`, `{"cmd":"close"}`.
 * CONFIG: { host, port, portMapping (options or false), lifetime (ms before exiting on its own) }.
 */
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'

const [dist, cfgText] = process.argv.slice(2)
const cfg = JSON.parse(cfgText)
const { Node, PortMapper } = await import(pathToFileURL(dist).href)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const exitTimer = setTimeout(() => process.exit(3), cfg.lifetime ?? 25_000)

const node = await Node.create({ host: cfg.host ?? '0.0.0.0', port: cfg.port ?? 0, portMapping: cfg.portMapping, stack: [] })
node.on('message', (from, data) => out({ event: 'message', from: from.address.key, data: data.toString() }))
out({ event: 'ready', address: node.address.key })
const pm = node.stack.find(PortMapper)
if (pm) {
  const m = await pm.mapped()
  const err = pm.lastError()
  out({
    event: 'mapped',
    mapping: m && { protocol: m.protocol, external: m.external.key, internalPort: m.internalPort, lifetime: m.lifetime },
    error: err && { code: err.code, message: err.message },
    nat: JSON.parse(JSON.stringify(node.nat())),
    stats: node.stats()['port-mapper'],
  })
}
createInterface({ input: process.stdin }).on('line', async (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch {
    return
  }
  try {
    if (cmd.cmd === 'send') {
      await node.send(cmd.to, Buffer.from(cmd.data))
      out({ event: 'sent' })
    } else if (cmd.cmd === 'stats') {
      out({ event: 'stats', stats: node.stats()['port-mapper'], nat: JSON.parse(JSON.stringify(node.nat())) })
    } else if (cmd.cmd === 'close') {
      const stats = node.stats()['port-mapper']
      await node.close()
      out({ event: 'closed', stats })
      clearTimeout(exitTimer)
      process.exit(0)
    }
  } catch (e) {
    out({ event: 'error', code: e.code, message: e.message })
  }
})
