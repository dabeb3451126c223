/**
 * Compiles TypeScript files the way an application would: strict, noUncheckedIndexedAccess,
 * `deccom` resolved to this package's BUILT declarations (a package self-reference: the files
 * live under the package root, whose package.json names it `deccom`), and runs the output.
 * Shared by the type-level test, the examples test and the docs test.
 */
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import ts from 'typescript'

export const root = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..')

/** The options every checked file is compiled with (examples/tsconfig.json says the same). */
export const strictOptions: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  moduleDetection: ts.ModuleDetectionKind.Force,
  lib: ['lib.es2022.d.ts'],
  types: ['node'],
  strict: true,
  noUncheckedIndexedAccess: true,
  noImplicitOverride: true,
  skipLibCheck: true,
  esModuleInterop: true,
}

/** One compile error, with its position in the source (1-based line and column). */
export interface CompileError {
  file: string
  line: number
  column: number
  message: string
}

/**
 * Type-checks `files` together and, when `outDir` is given, writes each one's JavaScript there as
 * `<name>.mjs` (an ES module whatever the package's own module type). Returns the errors by file
 * (every file has an entry, empty when it compiled).
 */
export function compile(files: string[], opts: { outDir?: string; rootDir?: string; options?: ts.CompilerOptions } = {}): Map<string, CompileError[]> {
  const options: ts.CompilerOptions = { ...strictOptions, ...opts.options, noEmit: opts.outDir === undefined }
  if (opts.outDir !== undefined) Object.assign(options, { outDir: opts.outDir, rootDir: opts.rootDir ?? root })
  const program = ts.createProgram(files.map((f) => resolve(f)), options)
  const errors = new Map<string, CompileError[]>(files.map((f) => [resolve(f), []]))
  const global: CompileError[] = []
  const diags = [...ts.getPreEmitDiagnostics(program)]
  if (opts.outDir !== undefined) {
    const emitted = program.emit(undefined, (name, text) => {
      const out = name.replace(/\.js$/, '.mjs')
      mkdirSync(dirname(out), { recursive: true })
      writeFileSync(out, text)
    })
    diags.push(...emitted.diagnostics)
  }
  for (const d of diags) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n')
    if (d.file === undefined || d.start === undefined) {
      global.push({ file: '', line: 0, column: 0, message })
      continue
    }
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start)
    const e = { file: d.file.fileName, line: line + 1, column: character + 1, message }
    const list = errors.get(resolve(d.file.fileName))
    if (list) list.push(e)
    else global.push(e)
  }
  // Errors outside the files (options, the built declarations) concern every file.
  if (global.length > 0) for (const list of errors.values()) list.push(...global)
  return errors
}

/** The output path `compile` writes for `file` (under `outDir`, relative to `rootDir`). */
export function outputOf(file: string, outDir: string, rootDir = root): string {
  const rel = resolve(file).slice(resolve(rootDir).length + 1)
  return join(outDir, rel.replace(/\.ts$/, '.mjs'))
}

/** Runs `node file` from the package root, killed after `ms`; resolves with its exit code and output. */
export function run(file: string, ms: number): Promise<{ code: number | null; out: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let timedOut = false
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, ms)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, out, timedOut })
    })
  })
}

/** `file:line:col message` lines for a report. */
export function format(errors: readonly CompileError[]): string {
  return errors.map((e) => `${e.file.startsWith(root) ? e.file.slice(root.length + 1) : e.file}:${e.line}:${e.column} ${e.message}`).join('\n')
}
