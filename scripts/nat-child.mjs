// The lifecycle shared by the real-NAT test nodes (scripts/nat-node.mjs, scripts/nat-tcp-node.mjs):
// JSON lines out on stdout (`say`), JSON-line commands in on stdin, a report whenever the set of
// peers the HolePuncher has heard from changes, and an exit on stdin EOF, on {"cmd":"exit"}, or
// after `cfg.lifetime` ms, whatever comes first. The node is closed before exiting.
import { createInterface } from 'node:readline'

export const say = (o) => process.stdout.write(JSON.stringify(o) + '\n')

/** Runs `node` until told to stop; `onCommand(c)` handles every other command. */
export function runChild ({ node, hp, cfg, lifetime, onCommand, ready }) {
  let closing = false
  const exit = async (code = 0) => {
    if (closing) return
    closing = true
    clearTimeout(life)
    clearInterval(heard)
    await node.close().catch(() => {})
    process.exit(code)
  }
  const life = setTimeout(() => {
    say({ event: 'lifetime' })
    exit(3)
  }, cfg.lifetime ?? lifetime)

  let lastHeard = ''
  const heard = setInterval(() => {
    const addrs = hp.introducible().map((a) => a.key).sort()
    if (addrs.join() !== lastHeard) {
      lastHeard = addrs.join()
      say({ event: 'heard', addrs })
    }
  }, 50)

  createInterface({ input: process.stdin })
    .on('line', async (line) => {
      let c
      try {
        c = JSON.parse(line)
      } catch {
        return
      }
      if (c.cmd === 'exit') return exit(0)
      await onCommand(c)
    })
    .on('close', () => exit(0))

  say({ event: 'ready', ...ready })
}
