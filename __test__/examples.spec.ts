/**
 * The runnable examples in examples/ work as documented: each runs to completion in its own
 * process (real sockets on 127.0.0.1) and exits 0 by itself, so the README's pointers to them stay
 * true. Imports nothing: the examples import the BUILT package (dist/).
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..')
const examples = readdirSync(join(root, 'examples')).filter((f) => f.endsWith('.mjs'))

/** Runs `node file`, killing it after `ms`; resolves with its exit code and output. */
function run(file: string, ms: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, out })
    })
  })
}

test('there are examples to run', (t) => {
  t.true(examples.length >= 2, examples.join(', '))
})

for (const file of examples) {
  test(`examples/${file} runs to completion and exits 0 on its own`, async (t) => {
    const { code, out } = await run(join('examples', file), 60_000)
    if (code !== 0) t.log(out)
    t.is(code, 0)
  })
}
