/**
 * The `deccom` command line (the BUILT dist/cli/index.js) in child processes on 127.0.0.1: a
 * bootstrap node, a receiver and a sender move a 16 MiB random file by node id and agree on its
 * SHA-256; a receiver keeps hostile headers' files inside --out and answers bad ones with an error
 * line; `nat`, `ping` and `stats` answer against bootstrap nodes; `id` creates a 0600 key file and prints the same id twice; `--help` exits 0.
 */
import test from 'ava'
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Kademlia, Node, Noise, ReliableUdp, type Stream } from '../dist/index.js'

const cli = join(import.meta.dirname, '..', 'dist', 'cli', 'index.js')

interface Run {
  child: ChildProcess
  out: () => string
  err: () => string
  exit: Promise<number | null>
}

function start(args: string[]): Run {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s))
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s))
  const exit = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  return { child, out: () => out, err: () => err, exit }
}

/** Resolves with the first match of `re` in the run's stdout (checked every 20 ms), or rejects after `ms`. */
async function waitFor(run: Run, re: RegExp, ms = 15_000): Promise<RegExpExecArray> {
  const end = Date.now() + ms
  for (;;) {
    const m = re.exec(run.out())
    if (m) return m
    if (Date.now() > end || run.child.exitCode !== null) throw new Error(`no ${re} in stdout: ${run.out()} / stderr: ${run.err()}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

test('send and receive a 16 MiB file by node id through a bootstrap node', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'deccom-cli-'))
  const runs: Run[] = []
  try {
    const data = randomBytes(16 * 1024 * 1024)
    const file = join(dir, 'payload.bin')
    writeFileSync(file, data)
    const outDir = join(dir, 'out')
    mkdirSync(outDir)

    const boot = start(['bootstrap', '--listen', '127.0.0.1:0'])
    runs.push(boot)
    const bootAddr = (await waitFor(boot, /^address (\S+)$/m))[1]!
    const bootId = (await waitFor(boot, /^id ([0-9a-f]{64})$/m))[1]!

    const recv = start(['receive', '--bootstrap', bootAddr, '--listen', '127.0.0.1:0', '--out', outDir])
    runs.push(recv)
    const recvId = (await waitFor(recv, /^id ([0-9a-f]{64})$/m))[1]!
    t.not(recvId, bootId)

    const send = start(['send', file, recvId, '--bootstrap', bootAddr, '--listen', '127.0.0.1:0'])
    runs.push(send)
    const [sendCode, recvCode] = await Promise.all([send.exit, recv.exit])
    t.is(sendCode, 0, send.err())
    t.is(recvCode, 0, recv.err())
    t.regex(send.out(), new RegExp(`sha256 ${sha256(data)} confirmed`))
    t.regex(recv.out(), new RegExp(`received .*payload\\.bin .*sha256 ${sha256(data)}`))
    t.regex(send.err(), /100%/, 'the progress lines reach 100 %')
    t.deepEqual(readdirSync(outDir), ['payload.bin'])
    t.is(sha256(readFileSync(join(outDir, 'payload.bin'))), sha256(data))

    boot.child.kill('SIGTERM')
    t.is(await boot.exit, 0, boot.err())
  } finally {
    for (const r of runs) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
})

test('send to an id that is not a node id fails with exit code 1', async (t) => {
  const r = start(['send', cli, 'nothex', '--bootstrap', '127.0.0.1:9'])
  t.is(await r.exit, 1)
  t.regex(r.err(), /not a node id/)
})

test('nat, ping and stats against two bootstrap nodes', async (t) => {
  const boots = [start(['bootstrap', '--listen', '127.0.0.1:0']), start(['bootstrap', '--listen', '127.0.0.1:0'])]
  try {
    const addrs = await Promise.all(boots.map(async (b) => (await waitFor(b, /^address (\S+)$/m))[1]!))
    const nat = start(['nat', '--rendezvous', ...addrs, '--listen', '127.0.0.1:0'])
    t.is(await nat.exit, 0, nat.err())
    const local = /^local (\S+)$/m.exec(nat.out())?.[1]
    t.truthy(local, nat.out())
    for (const a of addrs) t.regex(nat.out(), new RegExp(`^seen by ${a} as ${local}$`, 'm'))
    t.regex(nat.out(), new RegExp(`^external ${local}$`, 'm'), 'two agreeing rendezvous nodes give the external address')

    const ping = start(['ping', addrs[0]!, '--count', '2'])
    t.is(await ping.exit, 0, ping.err())
    t.is(ping.out().match(/rtt \d+\.\d+ ms/g)?.length, 2, ping.out())

    const stats = start(['stats', '--bootstrap', addrs[0]!, '--listen', '127.0.0.1:0'])
    t.is(await stats.exit, 0, stats.err())
    const parsed = JSON.parse(stats.out()) as { kademlia?: { joined?: number } }
    t.is(parsed.kademlia?.joined, 1)

    for (const b of boots) b.child.kill('SIGINT')
    t.deepEqual(await Promise.all(boots.map((b) => b.exit)), [0, 0])
  } finally {
    for (const b of boots) if (b.child.exitCode === null && b.child.signalCode === null) b.child.kill('SIGKILL')
  }
})

test('ping of an address where nothing answers exits 1', async (t) => {
  const r = start(['ping', '127.0.0.1:9', '--count', '1'])
  t.is(await r.exit, 1)
  t.regex(r.out(), /no answer/)
})

/** Sends `header` then `body` on one stream to node `id`, found through `boot`; returns the answer line. */
async function rawSend(boot: string, id: string, header: string, body: Buffer): Promise<string> {
  const node = await Node.create({ host: '127.0.0.1', port: 0, stack: [new Kademlia({ bootstrap: [boot] }), new ReliableUdp(), new Noise()] })
  try {
    await node.ready({ signal: AbortSignal.timeout(10_000) })
    const conn = await node.connect(Buffer.from(id, 'hex'), { signal: AbortSignal.timeout(10_000) })
    const stream: Stream = await conn.openStream()
    let answer = ''
    stream.setEncoding('utf8')
    stream.on('data', (d: string) => (answer += d))
    const ended = new Promise<void>((resolve, reject) => {
      stream.once('end', resolve)
      stream.once('error', reject)
    })
    stream.write(header)
    stream.end(body)
    await ended
    return answer
  } finally {
    await node.close()
  }
}

test('receive keeps files inside --out and answers a size mismatch with an error line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'deccom-cli-hostile-'))
  const runs: Run[] = []
  try {
    const outDir = join(dir, 'out')
    mkdirSync(outDir)
    const boot = start(['bootstrap', '--listen', '127.0.0.1:0'])
    runs.push(boot)
    const bootAddr = (await waitFor(boot, /^address (\S+)$/m))[1]!
    const recv = start(['receive', '--keep', '--bootstrap', bootAddr, '--listen', '127.0.0.1:0', '--out', outDir])
    runs.push(recv)
    const recvId = (await waitFor(recv, /^id ([0-9a-f]{64})$/m))[1]!

    const body = Buffer.from('not where you think')
    const ok = await rawSend(bootAddr, recvId, `${JSON.stringify({ name: '../../escape.txt', size: body.length })}\n`, body)
    t.is(ok.trim(), `sha256 ${sha256(body)}`)
    const short = await rawSend(bootAddr, recvId, `${JSON.stringify({ name: 'short.bin', size: 1000 })}\n`, Buffer.from('tiny'))
    t.regex(short, /^error got 4 bytes, the header announced 1000/)
    const junk = await rawSend(bootAddr, recvId, 'this is not json\n', Buffer.alloc(0))
    t.regex(junk, /^error /)
    t.deepEqual(readdirSync(outDir), ['escape.txt'], 'only the good file, inside --out, no .part left')
    t.deepEqual(readFileSync(join(outDir, 'escape.txt')), body)

    recv.child.kill('SIGTERM')
    t.is(await recv.exit, 1, 'failed transfers make a non-zero exit code')
    boot.child.kill('SIGTERM')
    t.is(await boot.exit, 0)
  } finally {
    for (const r of runs) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
})

test('id creates a key file with mode 0600 and prints the same id twice', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'deccom-cli-id-'))
  try {
    const key = join(dir, 'sub', 'node.key')
    const first = start(['id', '--key', key])
    t.is(await first.exit, 0, first.err())
    const second = start(['id', '--key', key])
    t.is(await second.exit, 0, second.err())
    t.regex(first.out(), /^[0-9a-f]{64}\n$/)
    t.is(second.out(), first.out())
    t.regex(first.err(), /created/)
    t.notRegex(second.err(), /created/)
    if (process.platform !== 'win32') t.is(statSync(key).mode & 0o777, 0o600)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

for (const args of [['--help'], ['id', '--help'], ['bootstrap', '--help'], ['send', '--help'], ['receive', '--help'], ['ping', '--help'], ['nat', '--help'], ['stats', '--help'], ['chat', '--help']]) {
  test(`deccom ${args.join(' ')} exits 0 and prints usage`, async (t) => {
    const r = start(args)
    t.is(await r.exit, 0, r.err())
    t.regex(r.out(), /^Usage: deccom/)
  })
}

test('an unknown subcommand exits non-zero', async (t) => {
  const r = start(['frobnicate'])
  t.not(await r.exit, 0)
})
