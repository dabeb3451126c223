/**
 * `deccom chat`: a terminal chat over discovery. The node joins through a bootstrap node
 * ([Kademlia, ReliableUdp, Noise]) and greets every peer it meets; peers that greet back are in
 * the room. A typed line goes to everyone in the room, or to one node with `--to ID` / `/to`.
 *
 * Messages are application messages (`node.send`, Noise-encrypted, the sender authenticated by
 * its node id), each one UTF-8 JSON object of at most {@link MAX_MESSAGE} bytes:
 * `{"chat":1,"type":"hello"|"welcome"|"bye"|"text","name":"alice","text":"...","direct":true}`.
 * `hello` asks to join (answered by `welcome`), `bye` leaves. What does not parse, comes without an
 * authenticated id or exceeds the size is dropped and counted (`/peers` shows the count); names and
 * texts lose their control characters before they reach the terminal.
 */
import { randomBytes } from 'node:crypto'
import { clearLine, createInterface, cursorTo, type Interface } from 'node:readline'
import { Kademlia } from '../protocols/kademlia'
import { Noise } from '../protocols/noise'
import { ReliableUdp } from '../protocols/reliable'
import type { Peer } from '../peer'
import { Node } from '../node'
import { hostPort, identityFor } from './common'

/** The largest chat message (bytes of JSON) sent or accepted. */
export const MAX_MESSAGE = 8192
const MAX_TEXT = 2000
const MAX_NAME = 32
const MAX_ROOM = 256

/** Options of `deccom chat`. */
export interface ChatOptions {
  bootstrap: string
  listen: string
  key?: string
  name?: string
  to?: string
}

interface Member {
  peer: Peer
  name: string
}

type Wire = { chat: 1; type: 'hello' | 'welcome' | 'bye' | 'text'; name: string; text?: string; direct?: boolean }

/** `s` without control characters (C0, DEL, C1, bidi overrides), at most `max` characters. */
export function printable(s: string, max: number): string {
  return Array.from(s.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, ''))
    .slice(0, max)
    .join('')
}

/** Parses one received chat message; null when it is not one. */
function parse(data: Buffer): Wire | null {
  if (data.length > MAX_MESSAGE) return null
  let m: unknown
  try {
    m = JSON.parse(data.toString('utf8'))
  } catch {
    return null
  }
  if (typeof m !== 'object' || m === null) return null
  const w = m as Record<string, unknown>
  if (w.chat !== 1 || typeof w.name !== 'string') return null
  if (w.type === 'text') return typeof w.text === 'string' ? { chat: 1, type: 'text', name: w.name, text: w.text, direct: w.direct === true } : null
  if (w.type === 'hello' || w.type === 'welcome' || w.type === 'bye') return { chat: 1, type: w.type, name: w.name }
  return null
}

export async function chat(o: ChatOptions): Promise<number> {
  const { host, port } = hostPort(o.listen, '--listen')
  const boot = hostPort(o.bootstrap, '--bootstrap')
  if (o.to !== undefined && !/^[0-9a-f]{64}$/i.test(o.to)) throw new Error(`--to: not a node id (64 hex digits): ${o.to}`)
  const kad = new Kademlia({ bootstrap: [`${boot.host}:${boot.port}`] })
  const node = await Node.create({ host, port, identity: identityFor(o.key), stack: [kad, new ReliableUdp(), new Noise()] })
  try {
    await node.ready({ signal: AbortSignal.timeout(15_000) })
  } catch (e) {
    await node.close()
    throw e
  }
  const myId = node.id.toString('hex')
  const name = printable(o.name ?? `user-${myId.slice(0, 4)}`, MAX_NAME) || `user-${myId.slice(0, 4)}`
  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true
  const room = new Map<string, Member>()
  let target: string | null = o.to?.toLowerCase() ?? null
  let dropped = 0
  let closing = false

  process.stdout.write(`id ${myId}\naddress ${node.address.key}\n`)
  process.stdout.write(`chat: joined as ${name}@${myId.slice(0, 8)}; ${target ? `talking to ${target.slice(0, 8)} only` : 'talking to everyone in the room'}. /help lists the commands.\n`)
  const rl: Interface = createInterface({ input: process.stdin, output: process.stdout, terminal: tty, prompt: '> ' })
  const show = (line: string): void => {
    if (tty) {
      clearLine(process.stdout, 0)
      cursorTo(process.stdout, 0)
      process.stdout.write(`${line}\n`)
      if (!closing) rl.prompt(true)
    } else {
      process.stdout.write(`${line}\n`)
    }
  }
  const label = (idHex: string, n: string): string => `${n}@${idHex.slice(0, 8)}`
  const encode = (w: Wire): Buffer => Buffer.from(JSON.stringify(w))
  const sendTo = (peer: Peer, w: Wire): Promise<void> => node.send(peer, encode(w), { signal: AbortSignal.timeout(10_000) })

  const greet = (peer: Peer): void => {
    if (closing || !peer.id || peer.id.equals(node.id) || room.has(peer.id.toString('hex'))) return
    sendTo(peer, { chat: 1, type: 'hello', name }).catch(() => {
      // Not every node is a chatter (a bootstrap node does not answer); nothing to report.
    })
  }
  const admit = (peer: Peer, n: string): boolean => {
    const id = peer.id!.toString('hex')
    const known = room.get(id)
    if (known) {
      known.name = n
      known.peer = peer
      return false
    }
    if (room.size >= MAX_ROOM) return false
    room.set(id, { peer, name: n })
    show(`* ${label(id, n)} joined`)
    return true
  }

  node.on('message', (from: Peer, data: Buffer) => {
    const w = from.id ? parse(data) : null
    if (!w || !from.id) {
      dropped++
      return
    }
    const id = from.id.toString('hex')
    const n = printable(w.name, MAX_NAME) || id.slice(0, 8)
    switch (w.type) {
      case 'hello':
        admit(from, n)
        sendTo(from, { chat: 1, type: 'welcome', name }).catch((e: Error) => show(`! could not welcome ${label(id, n)}: ${e.message}`))
        break
      case 'welcome':
        admit(from, n)
        break
      case 'bye':
        if (room.delete(id)) show(`* ${label(id, n)} left`)
        break
      case 'text':
        admit(from, n)
        show(`${label(id, n)}${w.direct ? ' (to you)' : ''}: ${printable(w.text!, MAX_TEXT)}`)
        break
    }
  })
  node.on('peer:discovered', greet)
  for (const p of kad.peers()) greet(p)
  // Meet the nodes that joined after this one: a lookup of a random id every 10 s refreshes the table.
  const refresh = setInterval(() => {
    kad.lookup(randomBytes(32), { signal: AbortSignal.timeout(5_000) }).then(
      () => kad.peers().forEach(greet),
      () => {},
    )
  }, 10_000)

  const resolve = (word: string): string | null => {
    const w = word.toLowerCase()
    if (/^[0-9a-f]{64}$/.test(w)) return w
    const hits = [...room.entries()].filter(([id, m]) => id.startsWith(w) || m.name === word).map(([id]) => id)
    return hits.length === 1 ? hits[0]! : null
  }
  const say = async (text: string, to: string | null): Promise<void> => {
    if (Buffer.byteLength(text) > MAX_TEXT) return show(`! not sent: longer than ${MAX_TEXT} bytes`)
    if (to !== null) {
      const m = room.get(to)
      try {
        await (m ? sendTo(m.peer, { chat: 1, type: 'text', name, text, direct: true }) : node.send(Buffer.from(to, 'hex'), encode({ chat: 1, type: 'text', name, text, direct: true }), { signal: AbortSignal.timeout(15_000) }))
      } catch (e) {
        show(`! not delivered to ${to.slice(0, 8)}: ${(e as Error).message}`)
      }
      return
    }
    if (room.size === 0) return show('! nobody in the room yet (peers appear as "* name@id joined")')
    const members = [...room.entries()]
    const results = await Promise.allSettled(members.map(([, m]) => sendTo(m.peer, { chat: 1, type: 'text', name, text })))
    results.forEach((r, i) => {
      if (r.status === 'rejected') show(`! not delivered to ${label(members[i]![0], members[i]![1].name)}: ${(r.reason as Error).message}`)
    })
  }
  const help = (): void => {
    show('Type a line and press Enter to send it. Commands:')
    show('  /to ID|NAME   send the next lines to one node only (ID: 64 hex digits or a prefix of a member\'s id)')
    show('  /to all       send to everyone in the room again')
    show('  /msg ID|NAME TEXT   one message to one node')
    show('  /peers        who is in the room; /help this text; /quit (or Ctrl-D, Ctrl-C) leave')
  }

  const pending = new Set<Promise<void>>()
  let finish!: () => void
  const finished = new Promise<void>((r) => (finish = r))
  const command = async (line: string): Promise<void> => {
    const [cmd, arg = '', ...rest] = line.slice(1).split(/\s+/)
    switch (cmd) {
      case 'quit':
      case 'exit':
        return finish()
      case 'help':
        return help()
      case 'peers':
        if (room.size === 0) show('* nobody in the room yet')
        for (const [id, m] of room) show(`* ${label(id, m.name)} at ${m.peer.address.key}${id === target ? ' (current target)' : ''}`)
        if (dropped > 0) show(`* ${dropped} malformed messages dropped`)
        return
      case 'to': {
        if (arg === 'all' || arg === '') {
          target = null
          return show('* sending to everyone in the room')
        }
        const id = resolve(arg)
        if (!id) return show(`! no single member or node id matches "${printable(arg, 64)}"`)
        target = id
        return show(`* sending to ${room.has(id) ? label(id, room.get(id)!.name) : id.slice(0, 8)} only (/to all to undo)`)
      }
      case 'msg': {
        const id = resolve(arg)
        if (!id) return show(`! no single member or node id matches "${printable(arg, 64)}"`)
        return say(rest.join(' '), id)
      }
      default:
        return show(`! unknown command /${printable(cmd ?? '', 32)}; /help lists them`)
    }
  }

  rl.on('line', (raw: string) => {
    const line = raw.trim()
    const done = line === '' ? Promise.resolve() : line.startsWith('/') ? command(line) : say(line, target)
    pending.add(done)
    done.finally(() => {
      pending.delete(done)
      if (tty && !closing) rl.prompt()
    })
  })
  rl.on('close', () => finish())
  rl.on('SIGINT', () => finish())
  process.once('SIGTERM', () => finish())
  if (tty) rl.prompt()

  await finished
  // Lines typed before the end (a pipe's last lines, say) are delivered first.
  await Promise.allSettled([...pending])
  closing = true
  clearInterval(refresh)
  rl.close()
  await Promise.allSettled([...room.values()].map((m) => sendTo(m.peer, { chat: 1, type: 'bye', name })))
  await node.close()
  if (tty) process.stdout.write('\n')
  return 0
}
