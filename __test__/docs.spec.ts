/**
 * Docs that run: every ```ts block of README.md and docs/*.md is compiled (--strict, `deccom` =
 * the BUILT package) and executed in its own process, which
 * must exit 0 by itself within BLOCK_TIMEOUT ms. A failure names the Markdown file and line.
 *
 * A block preceded by the line `<!-- fragment -->` (API listings, excerpts that need context) is
 * not run. It is type-checked when it compiles alone; otherwise it is skipped. Both kinds are
 * listed, with counts, in the test output.
 */
import test from 'ava'
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type CompileError, compile, outputOf, root, run } from './types/tsc'

const BLOCK_TIMEOUT = 20_000
const FRAGMENT = '<!-- fragment -->'
/** Strict, but without noUncheckedIndexedAccess: the docs show ordinary application code. */
const options = { noUncheckedIndexedAccess: false }
const srcDir = join(root, '.tmp', 'docs', 'src')
const outDir = join(root, '.tmp', 'docs', 'out')

interface Block {
  /** `README.md:59`: the Markdown file and the line of the opening fence. */
  where: string
  md: string
  /** Line of the opening fence (1-based). */
  fence: number
  fragment: boolean
  code: string
  /** The block as a TypeScript file. */
  file: string
}

/** Every ```ts block of one Markdown file. */
function blocksOf(md: string): Block[] {
  const lines = readFileSync(join(root, md), 'utf8').split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i] ?? '')) continue
    const start = i
    const body: string[] = []
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i] ?? ''); i++) body.push(lines[i] ?? '')
    if (i >= lines.length) throw new Error(`${md}:${start + 1}: unterminated code block`)
    const name = `${md.replace(/[/.]/g, '_')}_${start + 1}`
    blocks.push({
      where: `${md}:${start + 1}`,
      md,
      fence: start + 1,
      fragment: (lines[start - 1] ?? '').trim() === FRAGMENT,
      code: body.join('\n') + '\n',
      file: join(srcDir, `${name}.ts`),
    })
  }
  return blocks
}

const docs = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)]
const blocks = docs.flatMap(blocksOf)
const runnable = blocks.filter((b) => !b.fragment)
const fragments = blocks.filter((b) => b.fragment)

/** An error's position in the Markdown file (block line n is fence line + n). */
const at = (b: Block, e: CompileError): string => `${b.md}:${b.fence + e.line}:${e.column} ${e.message}`

/** Every block compiled once, in one program (each block is a module of its own). */
let compiled: Map<string, CompileError[]> | undefined
function compileAll(): Map<string, CompileError[]> {
  if (compiled) return compiled
  rmSync(join(root, '.tmp', 'docs'), { recursive: true, force: true })
  mkdirSync(srcDir, { recursive: true })
  for (const b of blocks) writeFileSync(b.file, b.code)
  compiled = compile(
    blocks.map((b) => b.file),
    { outDir, rootDir: srcDir, options },
  )
  return compiled
}

test('the docs have ts blocks, and every one is either runnable or marked a fragment', (t) => {
  t.true(blocks.length >= 10, `${blocks.length} blocks`)
  t.true(runnable.length >= 5, `${runnable.length} runnable blocks`)
})

for (const b of runnable) {
  test(`${b.where} compiles under --strict, runs and exits 0 within ${BLOCK_TIMEOUT / 1000} s`, async (t) => {
    const errors = compileAll().get(b.file) ?? []
    t.is(errors.length, 0, `${b.where}: the block does not compile:\n${errors.map((e) => at(b, e)).join('\n')}`)
    if (errors.length > 0) return
    const { code, out, timedOut } = await run(outputOf(b.file, outDir, srcDir), BLOCK_TIMEOUT)
    t.false(timedOut, `${b.where}: still running after ${BLOCK_TIMEOUT} ms (a block must close what it opens and exit)\n${out}`)
    t.is(code, 0, `${b.where}: exited with ${code}\n${out}`)
  })
}

test('fragments: type-checked when they compile alone, otherwise listed as skipped', (t) => {
  const results = compileAll()
  const checked: string[] = []
  const skipped: string[] = []
  for (const b of fragments) {
    const errors = results.get(b.file) ?? []
    if (errors.length === 0) checked.push(b.where)
    else skipped.push(`${b.where} (${errors.length} errors, first: ${errors[0] ? at(b, errors[0]).split('\n')[0] : ''})`)
  }
  t.log(`${runnable.length} runnable blocks, ${fragments.length} fragments: ${checked.length} type-checked, ${skipped.length} skipped`)
  if (checked.length > 0) t.log(`type-checked fragments:\n  ${checked.join('\n  ')}`)
  if (skipped.length > 0) t.log(`skipped fragments (do not compile alone):\n  ${skipped.join('\n  ')}`)
  t.is(checked.length + skipped.length, fragments.length)
})
