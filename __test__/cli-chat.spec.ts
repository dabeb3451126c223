/**
 * `deccom chat` and `deccom bootstrap --metrics`, the BUILT dist/cli/index.js in child processes on
 * 127.0.0.1. Chat: two chatters run in pseudo terminals (__test__/helpers/run-in-pty.py, Python's
 * pty module: their stdin/stdout are TTYs, readline in terminal mode) and one on plain pipes; lines
 * typed in one terminal arrive on the others, a /to message reaches only its addressee, Ctrl-C
 * leaves and the others see it. Metrics: a real HTTP GET of /metrics on the address given.
 */
import test from 'ava'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { request } from 'node:http'
import { join } from 'node:path'

const cli = join(import.meta.dirname, '..', 'dist', 'cli', 'index.js')
const ptyHelper = join(import.meta.dirname, 'helpers', 'run-in-pty.py')
const hasPython = process.platform !== 'win32' && spawnSync('python3', ['-c', 'import pty'], { stdio: 'ignore' }).status === 0

interface Run {
  child: ChildProcess
  /** Everything written so far, as lines (see clean). */
  out: () => string
  /** Everything written so far, as written. */
  raw: () => string
  err: () => string
  exit: Promise<number | null>
  type: (s: string) => void
}

/** Terminal output as lines: control sequences, CRs and readline's "> " prompts removed. */
const clean = (s: string): string =>
  s
    .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
    .replace(/\r/g, '')
    .replace(/^(?:> )+/gm, '')

function start(args: string[], inPty = false): Run {
  const child = inPty ? spawn('python3', [ptyHelper, process.execPath, cli, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }) : spawn(process.execPath, [cli, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s))
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s))
  const exit = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  return { child, out: () => clean(out), raw: () => out, err: () => err, exit, type: (s) => child.stdin!.write(s) }
}

async function waitFor(run: Run, re: RegExp, ms = 20_000, text: 'out' | 'raw' = 'out'): Promise<RegExpExecArray> {
  const end = Date.now() + ms
  for (;;) {
    const m = re.exec(run[text]())
    if (m) return m
    if (Date.now() > end || run.child.exitCode !== null) throw new Error(`no ${re} in the output: ${JSON.stringify(run.out())} / stderr: ${run.err()}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const kill = (runs: Run[]): void => {
  for (const r of runs) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL')
}

test('chat: lines typed in a terminal reach the other chatters; /to reaches one; Ctrl-C leaves', async (t) => {
  if (!hasPython) return t.pass('no python3 with the pty module (or Windows): skipped')
  const runs: Run[] = []
  try {
    const boot = start(['bootstrap', '--listen', '127.0.0.1:0'])
    runs.push(boot)
    const bootAddr = (await waitFor(boot, /^address (\S+)$/m))[1]!
    const net = ['--bootstrap', bootAddr, '--listen', '127.0.0.1:0']
    const alice = start(['chat', ...net, '--name', 'alice'], true)
    const bob = start(['chat', ...net, '--name', 'bob'], true)
    const carol = start(['chat', ...net, '--name', 'carol'])
    runs.push(alice, bob, carol)
    const [a, b, c] = await Promise.all([alice, bob, carol].map(async (r) => (await waitFor(r, /^id ([0-9a-f]{64})$/m))[1]!.slice(0, 8)))
    await waitFor(alice, /\x1b\[0J> /, 20_000, 'raw') // alice runs in a terminal: readline draws its prompt
    t.notRegex(carol.raw(), /> |\x1b/, 'carol runs on pipes: no prompt, no control sequences')

    // Everyone meets everyone through the bootstrap node.
    await Promise.all([
      waitFor(alice, new RegExp(`^\\* bob@${b} joined$`, 'm')),
      waitFor(alice, new RegExp(`^\\* carol@${c} joined$`, 'm')),
      waitFor(bob, new RegExp(`^\\* carol@${c} joined$`, 'm')),
      waitFor(carol, new RegExp(`^\\* alice@${a} joined$`, 'm')),
    ])

    alice.type('hello everyone\r')
    await waitFor(bob, new RegExp(`^alice@${a}: hello everyone$`, 'm'))
    await waitFor(carol, new RegExp(`^alice@${a}: hello everyone$`, 'm'))

    alice.type(`/to ${b}\r`)
    await waitFor(alice, new RegExp(`^\\* sending to bob@${b} only`, 'm'))
    alice.type('just for bob\r')
    await waitFor(bob, new RegExp(`^alice@${a} \\(to you\\): just for bob$`, 'm'))
    await new Promise((r) => setTimeout(r, 500))
    t.notRegex(carol.out(), /just for bob/, 'a /to message reaches only its addressee')

    // An escape sequence in a message does not reach the other terminals.
    carol.type('hi from carol \x1b[2Jcleared?\n')
    await waitFor(alice, new RegExp(`^carol@${c}: hi from carol \\[2Jcleared\\?$`, 'm'))
    await waitFor(bob, new RegExp(`^carol@${c}: hi from carol \\[2Jcleared\\?$`, 'm'))
    t.false(alice.raw().includes('\x1b[2J'), "carol's escape sequence is not written to alice's terminal")

    bob.type('\x03')
    t.is(await bob.exit, 0, bob.err())
    await waitFor(alice, new RegExp(`^\\* bob@${b} left$`, 'm'))
    await waitFor(carol, new RegExp(`^\\* bob@${b} left$`, 'm'))

    alice.type('/quit\r')
    t.is(await alice.exit, 0, alice.err())
    carol.child.stdin!.end()
    t.is(await carol.exit, 0, carol.err())
    t.regex(carol.out(), new RegExp(`^\\* alice@${a} left$`, 'm'))
    boot.child.kill('SIGTERM')
    t.is(await boot.exit, 0)
  } finally {
    kill(runs)
  }
})

test('chat --to with a bad node id fails with exit code 1', async (t) => {
  const r = start(['chat', '--bootstrap', '127.0.0.1:9', '--to', 'nothex'])
  r.child.stdin!.end()
  t.is(await r.exit, 1)
  t.regex(r.err(), /--to: not a node id/)
})

function get(url: string, method = 'GET'): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (s: string) => (body += s))
      res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }))
    })
    req.on('error', reject)
    req.end()
  })
}

test('bootstrap --metrics serves node.metrics() over HTTP on the address given, and stops with the node', async (t) => {
  const boot = start(['bootstrap', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0'])
  try {
    const id = (await waitFor(boot, /^id ([0-9a-f]{64})$/m))[1]!
    const url = (await waitFor(boot, /^metrics (http:\/\/127\.0\.0\.1:\d+\/metrics)$/m))[1]!
    const bootAddr = (await waitFor(boot, /^address (\S+)$/m))[1]!
    // A node joins, so the counters are not all zero.
    const stats = start(['stats', '--bootstrap', bootAddr, '--listen', '127.0.0.1:0'])
    t.is(await stats.exit, 0, stats.err())

    const r = await get(url)
    t.is(r.status, 200)
    t.is(r.type, 'text/plain; version=0.0.4; charset=utf-8')
    const label = `{node="${id.slice(0, 16)}"}`
    const samples = r.body.trimEnd().split('\n').filter((l) => !l.startsWith('#'))
    t.true(samples.length > 10, r.body)
    for (const s of samples) t.regex(s, /^deccom_[a-z0-9_]+\{node="[0-9a-f]{16}"\} -?[0-9.e+]+$/)
    t.true(samples.every((s) => s.includes(label)), 'every sample carries the bootstrap node id')
    t.regex(r.body, /^deccom_kademlia_\w+_total\{[^}]*\} [1-9]\d*$/m, 'a node joined: some Kademlia counter is above 0')

    const head = await get(url, 'HEAD')
    t.is(head.status, 200)
    t.is(head.body, '')
    t.is((await get(url.replace('/metrics', '/'))).status, 404)
    t.is((await get(url.replace('/metrics', '/metricsx'))).status, 404)
    t.is((await get(url, 'POST')).status, 405)

    boot.child.kill('SIGTERM')
    t.is(await boot.exit, 0, boot.err())
    await t.throwsAsync(get(url), { code: 'ECONNREFUSED' }, 'the endpoint is gone with the node')
  } finally {
    kill([boot])
  }
})

test('bootstrap --metrics with a port alone listens on 127.0.0.1 only', async (t) => {
  const boot = start(['bootstrap', '--listen', '127.0.0.1:0', '--metrics', ':0'])
  try {
    const url = (await waitFor(boot, /^metrics (\S+)$/m))[1]!
    t.regex(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
    t.is((await get(url)).status, 200)
  } finally {
    boot.child.kill('SIGTERM')
    await boot.exit
    kill([boot])
  }
})

test('bootstrap --metrics on an address in use fails with exit code 1', async (t) => {
  const first = start(['bootstrap', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0'])
  try {
    const port = (await waitFor(first, /^metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics$/m))[1]!
    const second = start(['bootstrap', '--listen', '127.0.0.1:0', '--metrics', `127.0.0.1:${port}`])
    t.is(await second.exit, 1)
    t.regex(second.err(), /EADDRINUSE/)
  } finally {
    first.child.kill('SIGTERM')
    await first.exit
    kill([first])
  }
})
