// Puts every platform's native binary into the prebuildify layout inside the package:
//
//   prebuilds/linux-x64/deccom-gnu.node     prebuilds/linux-x64/deccom-musl.node
//   prebuilds/linux-arm64/deccom-gnu.node   prebuilds/linux-arm64/deccom-musl.node
//   prebuilds/darwin-x64/deccom.node        prebuilds/darwin-arm64/deccom.node
//   prebuilds/win32-x64/deccom.node
//
// where the loader (ts/native.ts) and the install script (scripts/install.cjs) look when neither a
// local build nor the platform package @deccom/native-<platform> is there (an install with
// --omit=optional, a mirror without the platform packages, a vendored copy). The release job runs
// it on the same binaries the platform packages are made of, so the main tarball carries them all.
//
//   node scripts/prebuilds.mjs [--from DIR]... [--out DIR] [--only SUFFIX,...] [--require-all]
//
// --from: where the binaries are, named deccom.<suffix>.node (suffix as napi-rs names platforms:
//   linux-x64-gnu, darwin-arm64, win32-x64-msvc, ...), directly in DIR or in DIR/<suffix>/ (the
//   npm/ layout after `npm run artifacts`); several --from are searched in order. Default: npm.
// --out: the prebuilds directory to (re)create. Default: prebuilds (at the package root).
// --only: take just these suffixes (a local check with this machine's binary).
// --require-all: fail unless every target of package.json's napi.targets has a binary.
// A binary for this machine is loaded once as a check that it is a working addon.
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const binaryName = pkg.napi?.binaryName ?? 'deccom'

/** napi-rs target triple → { suffix: 'linux-x64-gnu', dir: 'linux-x64', file: 'deccom-gnu.node' }. */
export function layoutOf(triple) {
  const [cpu, , system, abi] = triple.split('-')
  const os = { linux: 'linux', darwin: 'darwin', windows: 'win32' }[system]
  const arch = { x86_64: 'x64', aarch64: 'arm64' }[cpu]
  if (!os || !arch) throw new Error(`prebuilds: unknown target ${triple}`)
  const suffix = abi ? `${os}-${arch}-${abi}` : `${os}-${arch}`
  const file = os === 'linux' ? `${binaryName}-${abi === 'musl' ? 'musl' : 'gnu'}.node` : `${binaryName}.node`
  return { suffix, dir: `${os}-${arch}`, file }
}

function parseArgs(argv) {
  const o = { from: [], out: path.join(root, 'prebuilds'), only: null, requireAll: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`prebuilds: ${a} needs a value`)
      return argv[++i]
    }
    if (a === '--from') o.from.push(path.resolve(value()))
    else if (a === '--out') o.out = path.resolve(value())
    else if (a === '--only') o.only = value().split(',').filter(Boolean)
    else if (a === '--require-all') o.requireAll = true
    else throw new Error(`prebuilds: unknown argument ${a}\nusage: node scripts/prebuilds.mjs [--from DIR]... [--out DIR] [--only SUFFIX,...] [--require-all]`)
  }
  if (o.from.length === 0) o.from.push(path.join(root, 'npm'))
  return o
}

/** The file of `suffix`'s binary in the first --from directory that has it, or null. */
function find(from, suffix) {
  const name = `${binaryName}.${suffix}.node`
  for (const dir of from) {
    for (const p of [path.join(dir, name), path.join(dir, suffix, name)]) {
      if (fs.statSync(p, { throwIfNoEntry: false })?.isFile()) return p
    }
  }
  return null
}

/** This machine's prebuilds directory and file name, as the loader computes them. */
function here() {
  const dir = `${process.platform}-${process.arch}`
  if (process.platform !== 'linux') return { dir, file: `${binaryName}.node` }
  const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
  return { dir, file: `${binaryName}-${glibc ? 'gnu' : 'musl'}.node` }
}

function main() {
  const o = parseArgs(process.argv.slice(2))
  const targets = (pkg.napi?.targets ?? []).map(layoutOf)
  if (o.only) {
    const unknown = o.only.filter((s) => !targets.some((t) => t.suffix === s))
    if (unknown.length) throw new Error(`prebuilds: --only names no napi target: ${unknown.join(', ')} (targets: ${targets.map((t) => t.suffix).join(', ')})`)
  }
  const wanted = o.only ? targets.filter((t) => o.only.includes(t.suffix)) : targets
  const found = wanted.map((t) => ({ ...t, src: find(o.from, t.suffix) }))
  const missing = found.filter((t) => !t.src)
  if (missing.length && (o.requireAll || o.only)) {
    throw new Error(`prebuilds: no binary for ${missing.map((t) => t.suffix).join(', ')} in ${o.from.join(', ')}`)
  }
  fs.rmSync(o.out, { recursive: true, force: true })
  const me = here()
  const show = (p) => (p.startsWith(root + path.sep) ? path.relative(root, p) : p)
  const lines = []
  for (const t of found.filter((t) => t.src)) {
    const dest = path.join(o.out, t.dir, t.file)
    fs.mkdirSync(path.dirname(dest), { recursive: true })
    fs.copyFileSync(t.src, dest)
    const size = fs.statSync(dest).size
    if (size === 0) throw new Error(`prebuilds: ${t.src} is empty`)
    let note = ''
    if (t.dir === me.dir && t.file === me.file) {
      const addon = createRequire(import.meta.url)(dest)
      if (typeof addon !== 'object' || addon === null || Object.keys(addon).length === 0) throw new Error(`prebuilds: ${dest} loads but exports nothing`)
      note = ' (loads on this machine)'
    }
    lines.push(`  ${show(dest)}  ${(size / 1048576).toFixed(1)} MB  from ${show(t.src)}${note}`)
  }
  if (lines.length === 0) throw new Error(`prebuilds: no binaries found in ${o.from.join(', ')}`)
  console.log(`prebuilds: ${lines.length} of ${targets.length} platforms${missing.length ? ` (missing: ${missing.map((t) => t.suffix).join(', ')})` : ''}\n${lines.join('\n')}`)
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main()
  } catch (e) {
    console.error(e.message)
    process.exit(1)
  }
}
