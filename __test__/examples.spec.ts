/**
 * The runnable examples in examples/ work as documented: each runs to completion in its own
 * process (real sockets on 127.0.0.1) and exits 0 by itself, so the README's pointers to them stay
 * true. `*.mjs` examples run as they are; every `*.ts` example is first compiled with
 * examples/tsconfig.json (strict, noUncheckedIndexedAccess, `deccom` = the BUILT package) to
 * .tmp/examples/<name>.mjs, and that output runs. Adding an example is adding a file.
 */
import test from 'ava'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import ts from 'typescript'
import { type CompileError, compile, format, outputOf, root, run } from './types/tsc'

const dir = join(root, 'examples')
const outDir = join(root, '.tmp', 'examples')
const files = readdirSync(dir)
const scripts = files.filter((f) => f.endsWith('.mjs'))
const typed = files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))

/** examples/tsconfig.json's compiler options (the ones users type-check the examples with). */
function options(): ts.CompilerOptions {
  const path = join(dir, 'tsconfig.json')
  const { config, error } = ts.readConfigFile(path, ts.sys.readFile)
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'))
  return ts.parseJsonConfigFileContent(config, ts.sys, dir).options
}

/** All typed examples compiled together, once. */
let compiled: Map<string, CompileError[]> | undefined
const compiledOnce = (): Map<string, CompileError[]> =>
  (compiled ??= compile(
    typed.map((f) => join(dir, f)),
    { outDir, rootDir: dir, options: { ...options(), noEmit: false } },
  ))

test('there are examples to run', (t) => {
  t.true(scripts.length >= 2, scripts.join(', '))
  t.true(typed.length >= 1, typed.join(', '))
})

test('examples/tsconfig.json compiles strictly', (t) => {
  const o = options()
  t.true(o.strict)
  t.true(o.noUncheckedIndexedAccess)
})

for (const file of scripts) {
  test(`examples/${file} runs to completion and exits 0 on its own`, async (t) => {
    const { code, out } = await run(join('examples', file), 60_000)
    if (code !== 0) t.log(out)
    t.is(code, 0)
  })
}

for (const file of typed) {
  test(`examples/${file} compiles under --strict --noUncheckedIndexedAccess, runs and exits 0 on its own`, async (t) => {
    const errors = compiledOnce().get(join(dir, file)) ?? []
    t.is(errors.length, 0, format(errors))
    if (errors.length > 0) return
    const { code, out, timedOut } = await run(outputOf(join(dir, file), outDir, dir), 60_000)
    if (code !== 0) t.log(out)
    t.false(timedOut, 'killed after 60 s: the example must exit by itself')
    t.is(code, 0)
  })
}
