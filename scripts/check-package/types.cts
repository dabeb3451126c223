// Type-checked (not run) against the installed package's declarations, from CommonJS.
import deccom = require('deccom')

export async function run(): Promise<void> {
  const node: deccom.Node = await deccom.Node.create({ identity: deccom.Identity.generate(), host: '127.0.0.1', stack: [new deccom.Noise(), new deccom.ReliableUdp()] })
  const peer: deccom.Peer | undefined = undefined
  node.on('message', (from: deccom.Peer, data: Buffer) => console.log(from.address.key, data.length, peer))
  await node.close()
}
