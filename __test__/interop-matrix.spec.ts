/**
 * Mixed-mode interop: every stack that can run both in the socket thread (native) and driven from
 * JavaScript speaks the same wire in both modes. For each stack, each also with FaultyTransport
 * and with Delay below, every pair of modes (native↔native, native↔JS, JS↔native, JS↔JS)
 * exchanges 1 B, 64 KiB and 16 MiB messages both ways over real loopback, byte-exact.
 *
 * The JavaScript-driven end runs the same driver code as the SimulatedNetwork (the endpoints
 * driven through the node's clock); only its transport carries real datagrams.
 * Imports the BUILT package (dist/).
 */
import test from 'ava'
import crypto from 'node:crypto'

import { Delay, FaultyTransport, Identity, Node, Noise, ReliableUdp } from '../dist/index.js'

type StackName = '[ReliableUdp]' | '[ReliableUdp, Noise]' | '[Noise, ReliableUdp]'
type Below = 'plain' | 'faulty' | 'delay'
type Mode = 'native' | 'js'

const SIZES = [1, 64 * 1024, 16 * 1024 * 1024]

function build(stack: StackName, below: Below, mode: Mode, seed: number): any[] {
  const js = mode === 'js'
  const rudp = new ReliableUdp({ forceJs: js })
  const extra: any[] = []
  if (below === 'faulty') extra.push(new FaultyTransport({ seed, drop: 0.01, duplicate: 0.01, reorder: 0.01, native: !js }))
  if (below === 'delay') extra.push(new Delay({ latency: () => 2, native: !js }))
  switch (stack) {
    case '[ReliableUdp]':
      return [rudp, ...extra]
    case '[ReliableUdp, Noise]':
      return [rudp, new Noise({ native: !js }), ...extra]
    case '[Noise, ReliableUdp]':
      return [new Noise(), rudp, ...extra]
  }
}

async function node(t: any, stack: StackName, below: Below, mode: Mode, seed: number): Promise<Node> {
  const n = await Node.create({ identity: Identity.generate(), host: '127.0.0.1', recvBufferSize: 4 << 20, stack: build(stack, below, mode, seed) })
  t.teardown(() => n.close())
  const r = n.stack.find(ReliableUdp) as ReliableUdp
  t.is(r.mode, mode, `${stack} ${below}: ReliableUdp runs ${mode}`)
  if (stack === '[ReliableUdp, Noise]') t.is((n.stack.find(Noise) as Noise).native, mode === 'native', `${stack} ${below}: Noise runs ${mode}`)
  return n
}

const digest = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex')

/** Sends each message from → to, one after the other; checks each arrives once, byte-exact. */
async function oneWay(t: any, from: Node, to: Node, what: string): Promise<void> {
  for (const size of SIZES) {
    const m = crypto.randomBytes(size)
    const got: Buffer[] = []
    const arrived = new Promise<void>((resolve) => {
      const on = (_peer: unknown, data: Buffer): void => {
        got.push(data)
        if (data.length === size) {
          to.off('message', on)
          resolve()
        }
      }
      to.on('message', on)
    })
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: a ${size}-byte message did not arrive in 30 s`)), 30_000)
    })
    try {
      await Promise.race([Promise.all([from.send(to.address, m), arrived]), timeout])
    } finally {
      clearTimeout(timer)
    }
    t.is(got.length, 1, `${what}: one message of ${size} B`)
    t.is(digest(got[0]), digest(m), `${what}: ${size} B byte-exact`)
  }
}

const STACKS: StackName[] = ['[ReliableUdp]', '[ReliableUdp, Noise]', '[Noise, ReliableUdp]']
const BELOW: Below[] = ['plain', 'faulty', 'delay']
const PAIRS: Array<[Mode, Mode]> = [
  ['native', 'native'],
  ['native', 'js'],
  ['js', 'native'],
  ['js', 'js'],
]

let seed = 1
for (const stack of STACKS) {
  for (const below of BELOW) {
    const title = below === 'plain' ? stack : `${stack} over ${below === 'faulty' ? 'FaultyTransport' : 'Delay'}`
    test.serial(`${title}: every pair of modes delivers 1 B, 64 KiB and 16 MiB both ways, byte-exact`, async (t) => {
      for (const [ma, mb] of PAIRS) {
        const a = await node(t, stack, below, ma, seed++)
        const b = await node(t, stack, below, mb, seed++)
        const started = Date.now()
        await oneWay(t, a, b, `${title} ${ma}→${mb}`)
        await oneWay(t, b, a, `${title} ${mb}→${ma}`)
        t.log(`${ma} ↔ ${mb}: ${Date.now() - started} ms`)
        await Promise.all([a.close(), b.close()])
      }
    })
  }
}
