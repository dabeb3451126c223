// Checks the package manifests before packing: what `napi prepublish` and a provenance publish
// need from the main package and every npm/<platform>/package.json, plus what a packed tarball
// must and must not contain.
//
//   node scripts/check-package.mjs manifests
//   node scripts/check-package.mjs contents <npm pack --json output file>
//   node scripts/check-package.mjs bundle-contents <npm pack --json output file> <prebuilds/DIR/FILE>...
//     (a release tarball with the prebuilds/ bundle of scripts/prebuilds.mjs: binaries only
//     there, the named ones present)
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const readJson = (f) => JSON.parse(fs.readFileSync(f, 'utf8'))
const main = readJson(path.join(root, 'package.json'))
const problems = []
const check = (ok, msg) => {
  if (!ok) problems.push(msg)
}

/** napi-rs target triple -> platform directory suffix and the os/cpu/libc an npm manifest declares. */
function platformOf(triple) {
  const [cpu, , system, abi] = triple.split('-')
  const os = { linux: 'linux', darwin: 'darwin', windows: 'win32' }[system]
  const arch = { x86_64: 'x64', aarch64: 'arm64' }[cpu]
  const suffix = abi ? `${os}-${arch}-${abi}` : `${os}-${arch}`
  return { suffix, os, arch, libc: os === 'linux' ? (abi === 'musl' ? 'musl' : 'glibc') : undefined }
}

function manifests() {
  const repo = main.repository?.url
  check(main.name && main.version, 'package.json: name and version')
  check(main.license === 'MIT' && fs.existsSync(path.join(root, 'LICENSE')), 'package.json: license MIT and a LICENSE file')
  check(typeof repo === 'string' && /^git\+https:\/\/github\.com\/[^/]+\/[^/]+\.git$/.test(repo), `package.json: repository.url is a GitHub URL (${repo})`)
  check(main.engines?.node, 'package.json: engines.node')
  check(main.exports?.['.']?.import?.types?.endsWith('.d.mts'), 'package.json: exports["."].import.types is a .d.mts')
  check(main.exports?.['.']?.require?.types?.endsWith('.d.ts'), 'package.json: exports["."].require.types is a .d.ts')
  const targets = main.napi?.targets ?? []
  check(targets.length > 0 && main.napi?.packageName && main.napi?.binaryName, 'package.json: napi.targets, packageName, binaryName')
  const dirs = fs.readdirSync(path.join(root, 'npm')).sort()
  const expected = targets.map((t) => platformOf(t).suffix).sort()
  check(JSON.stringify(dirs) === JSON.stringify(expected), `npm/ holds one directory per napi target: ${dirs} vs ${expected}`)
  for (const triple of targets) {
    const { suffix, os, arch, libc } = platformOf(triple)
    const file = path.join(root, 'npm', suffix, 'package.json')
    if (!fs.existsSync(file)) continue
    const p = readJson(file)
    const where = `npm/${suffix}/package.json`
    const binary = `${main.napi.binaryName}.${suffix}.node`
    check(p.name === `${main.napi.packageName}-${suffix}`, `${where}: name ${p.name}`)
    check(p.version === main.version, `${where}: version ${p.version} != ${main.version}`)
    check(p.license === main.license, `${where}: license`)
    check(p.repository?.url === repo, `${where}: repository.url must equal the main package's (${repo}) for a provenance publish`)
    check(p.engines?.node === main.engines?.node, `${where}: engines.node ${p.engines?.node} != ${main.engines?.node}`)
    check(JSON.stringify(p.os) === JSON.stringify([os]), `${where}: os ${JSON.stringify(p.os)}`)
    check(JSON.stringify(p.cpu) === JSON.stringify([arch]), `${where}: cpu ${JSON.stringify(p.cpu)}`)
    check(JSON.stringify(p.libc) === JSON.stringify(libc ? [libc] : undefined), `${where}: libc ${JSON.stringify(p.libc)}`)
    check(p.main === binary && p.files?.includes(binary), `${where}: main and files name ${binary}`)
    check(p.description, `${where}: description`)
  }
  const opt = main.optionalDependencies ?? {}
  for (const [name, version] of Object.entries(opt)) {
    if (name.startsWith(`${main.napi.packageName}-`)) check(version === main.version, `package.json: optionalDependencies ${name}@${version} != ${main.version}`)
  }
  return `${targets.length + 1} manifests`
}

function contents(file, bundle = null) {
  const [packed] = readJson(file)
  const bundled = bundle ? packed.files.map((f) => f.path).filter((f) => /^prebuilds\/[a-z0-9]+-[a-z0-9]+\/deccom(-gnu|-musl)?\.node$/.test(f)) : []
  const files = packed.files.map((f) => f.path).filter((f) => !bundled.includes(f))
  const has = (f) => files.includes(f)
  for (const f of bundle ?? []) check(bundled.includes(f), `tarball lacks the prebuilt binary ${f} (it holds ${bundled.join(', ') || 'none'})`)
  for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/index.d.mts', 'native/index.js', 'native/index.d.ts', 'scripts/install.cjs', 'Cargo.toml', 'Cargo.lock', 'crates/deccom-core/Cargo.toml', 'crates/deccom-napi/Cargo.toml', 'crates/deccom-napi/build.rs', 'crates/deccom-core/src/lib.rs', 'crates/deccom-napi/src/lib.rs']) {
    check(has(f), `tarball lacks ${f}`)
  }
  const banned = [
    [/\.map$/, 'source maps (their ts/ sources are not shipped)'],
    [/^crates\/[^/]+\/(tests|benches)\//, 'crate tests or benches'],
    [/proptest-regressions/, 'proptest regression files'],
    [/^crates\/deccom-fuzz\//, 'the fuzz crate and its corpora'],
    [/(^|\/)target\//, 'a cargo target directory'],
    [/\.node$/, 'a native binary (they ship in the platform packages)'],
    [/^(ts|__test__|bench|examples|test-vectors|docs|\.ci|\.github)\//, 'development files'],
  ]
  for (const [re, what] of banned) {
    const hits = files.filter((f) => re.test(f))
    check(hits.length === 0, `tarball ships ${what}: ${hits.slice(0, 5).join(', ')}`)
  }
  for (const f of files.filter((f) => f.startsWith('dist/') && f.endsWith('.js'))) {
    check(has(f.replace(/\.js$/, '.d.ts')), `tarball: ${f} has no declarations`)
  }
  return `${packed.name}@${packed.version}: ${files.length} files, ${(packed.size / 1024).toFixed(0)} kB packed, ${(packed.unpackedSize / 1024).toFixed(0)} kB unpacked`
}

const [mode, arg] = process.argv.slice(2)
const summary = mode === 'manifests' ? manifests() : mode === 'contents' ? contents(arg) : mode === 'bundle-contents' ? contents(arg, process.argv.slice(4)) : null
if (summary === null) {
  console.error('usage: check-package.mjs manifests | contents <pack.json> | bundle-contents <pack.json> <prebuilds/DIR/FILE>...')
  process.exit(2)
}
if (problems.length) {
  for (const p of problems) console.error(`check-package: ${p}`)
  process.exit(1)
}
console.log(`check-package: ${mode} ok (${summary})`)
