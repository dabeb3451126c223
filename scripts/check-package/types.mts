// Type-checked (not run) against the installed package's declarations, from an ES module.
import deccom, { Node, Identity, Noise, ReliableUdp, DeccomError, ErrorCode } from 'deccom'
import type { NodeOptions, Peer } from 'deccom'

const opts: NodeOptions = { identity: Identity.generate(), host: '127.0.0.1', port: 0, stack: [new Noise(), new ReliableUdp()] }
export async function run(): Promise<number> {
  const node: Node = await Node.create(opts)
  node.on('message', (from: Peer, data: Buffer) => console.log(from.address.key, data.length))
  const same: typeof Node = deccom.Node
  const code: string = ErrorCode.ABORTED
  const err: DeccomError | undefined = undefined
  await node.close()
  return same === Node && code.length > 0 && err === undefined ? 1 : 0
}
