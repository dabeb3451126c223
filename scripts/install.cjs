#!/usr/bin/env node
// `npm install` hook: make sure a native binary for this platform exists.
//
// 1. If the addon already loads (a local build in native/, the platform package
//    @deccom/native-<platform> installed as an optionalDependency, or the prebuilds/ bundle of a
//    release tarball), nothing to do.
// 2. Otherwise build it from source with cargo (Rust from https://rustup.rs) and place it where
//    the loader looks first: native/deccom.<platform>.node. Installed as a dependency, the build
//    goes to a temporary target directory that is removed afterwards, so no target/ is left inside
//    node_modules/deccom; in a git clone it goes to ./target (or CARGO_TARGET_DIR), where later
//    builds reuse it.
// Environment: DECCOM_SKIP_BUILD=1 skips step 2; DECCOM_FORCE_BUILD=1 builds even when a binary
// loads; DECCOM_BUILD_PROFILE=debug builds faster, unoptimised; CARGO names the cargo to run.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.join(__dirname, '..')
const pkg = require(path.join(root, 'package.json'))

/** napi-rs platform suffix: linux-x64-gnu, darwin-arm64, win32-x64-msvc, ... */
function platformSuffix() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** The suffixes of the platform packages this release builds (from package.json's napi.targets). */
function publishedSuffixes() {
  const arch = { x86_64: 'x64', aarch64: 'arm64' }
  const osName = { linux: 'linux', darwin: 'darwin', windows: 'win32' }
  return (pkg.napi?.targets ?? []).map((triple) => {
    const [cpu, , system, abi] = triple.split('-')
    const suffix = `${osName[system]}-${arch[cpu] ?? cpu}`
    return abi === 'gnu' || abi === 'musl' || abi === 'msvc' ? `${suffix}-${abi}` : suffix
  })
}

function loads() {
  // The loader's order (ts/native.ts): native/ (local build, then the platform package), then the
  // prebuildify bundle of the release tarball: prebuilds/<platform>-<arch>/deccom.node, on Linux
  // deccom-gnu.node or deccom-musl.node (scripts/prebuilds.mjs writes it).
  const prebuilds = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)
  const libc = process.platform === 'linux' ? [`deccom-${platformSuffix().endsWith('-musl') ? 'musl' : 'gnu'}.node`] : []
  for (const candidate of [path.join(root, 'native', 'index.js'), path.join(prebuilds, 'deccom.node'), ...libc.map((f) => path.join(prebuilds, f))]) {
    try {
      require(candidate)
      return candidate
    } catch {
      // try the next
    }
  }
  return null
}

function optionalOmitted() {
  const omit = `${process.env.npm_config_omit ?? ''}`.split(/[\s,]+/)
  return omit.includes('optional') || process.env.npm_config_optional === 'false' || process.env.npm_config_no_optional === 'true'
}

/** Why no prebuilt binary was found, and what to run instead. */
function advice() {
  const suffix = platformSuffix()
  const platformPkg = `${pkg.napi?.packageName ?? '@deccom/native'}-${suffix}`
  const lines = []
  if (publishedSuffixes().includes(suffix)) {
    lines.push(`No prebuilt binary loaded: deccom expected the package ${platformPkg}@${pkg.version} (its optional dependency for ${suffix}), and it is not installed.`)
    lines.push(
      optionalOmitted()
        ? 'Likely cause: optional dependencies are omitted in this install (--omit=optional, --no-optional or omit=optional in .npmrc).'
        : 'Likely cause: optional dependencies were skipped (--omit=optional, some mirrors and lockfile tools), or the lockfile was made on another platform.',
    )
    lines.push(`Fix: install the platform package explicitly, next to deccom:`)
    lines.push(`    npm install ${pkg.name}@${pkg.version} ${platformPkg}@${pkg.version}`)
    lines.push('or install Rust (https://rustup.rs) and install deccom again; it then builds the addon from source.')
  } else {
    lines.push(`No prebuilt binary exists for this platform (${suffix}, ${os.type()} ${os.release()}); published platforms: ${publishedSuffixes().join(', ')}.`)
    lines.push('Fix: install Rust (https://rustup.rs), then install deccom again; it builds the addon from source:')
    lines.push(`    npm install ${pkg.name}@${pkg.version}`)
  }
  return lines.join('\n  ')
}

function fail(msg) {
  console.error(`deccom: ${msg}`)
  process.exit(1)
}

const found = process.env.DECCOM_FORCE_BUILD ? null : loads()
if (found) {
  console.log(`deccom: native binary found (${path.relative(root, found)})`)
  process.exit(0)
}
if (process.env.DECCOM_SKIP_BUILD) {
  console.warn(`deccom: no native binary for this platform and DECCOM_SKIP_BUILD is set; deccom will not load until one is built.\n  ${advice()}`)
  process.exit(0)
}
if (!fs.existsSync(path.join(root, 'crates', 'deccom-napi'))) {
  fail(`no Rust sources to build from.\n  ${advice()}`)
}
const cargo = process.env.CARGO || 'cargo'
if (spawnSync(cargo, ['--version'], { stdio: 'ignore' }).status !== 0) {
  fail(`cargo was not found to build the addon from source.\n  ${advice()}`)
}
const profile = process.env.DECCOM_BUILD_PROFILE === 'debug' ? 'debug' : 'release'
// A git clone keeps ./target between builds; an installed package builds in a temporary directory.
const gitClone = fs.existsSync(path.join(root, '.git'))
const tempTarget = !gitClone && !process.env.CARGO_TARGET_DIR ? fs.mkdtempSync(path.join(os.tmpdir(), 'deccom-build-')) : null
const targetDir = tempTarget ?? (process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target'))
function cleanup() {
  if (tempTarget) fs.rmSync(tempTarget, { recursive: true, force: true })
}
console.log(`deccom: building the native addon from source (cargo, ${profile}, target directory ${targetDir}); this takes a few minutes the first time`)
const args = ['build', '-p', 'deccom-napi', '--locked']
if (profile === 'release') args.push('--release')
const build = spawnSync(cargo, args, { cwd: root, stdio: 'inherit', env: { ...process.env, CARGO_TARGET_DIR: targetDir } })
if (build.status !== 0) {
  cleanup()
  fail(`cargo build failed (exit ${build.status}); see the output above`)
}

const libName = { win32: 'deccom_napi.dll', darwin: 'libdeccom_napi.dylib' }[process.platform] ?? 'libdeccom_napi.so'
const built = path.join(targetDir, profile, libName)
const dest = path.join(root, 'native', `deccom.${platformSuffix()}.node`)
fs.mkdirSync(path.dirname(dest), { recursive: true })
fs.copyFileSync(built, dest)
cleanup()
if (!loads()) fail(`built ${path.relative(root, dest)} but it does not load; please report this with your platform (${platformSuffix()}, Node ${process.version})`)
console.log(`deccom: built ${path.relative(root, dest)}`)
