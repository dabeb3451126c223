#!/usr/bin/env node
// `npm install` hook: make sure a native binary for this platform exists.
//
// 1. If the addon already loads (a local build in native/, the platform package
//    @deccom/native-<platform> installed as an optionalDependency, or prebuilds/), nothing to do.
// 2. Otherwise build it from source with cargo (Rust from https://rustup.rs) and place it where
//    the loader looks first: native/deccom.<platform>.node.
// Environment: DECCOM_SKIP_BUILD=1 skips step 2; DECCOM_BUILD_PROFILE=debug builds faster, unoptimised.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')

function platformSuffix() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

function loads() {
  for (const candidate of [path.join(root, 'native', 'index.js'), path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'deccom.node')]) {
    try {
      require(candidate)
      return candidate
    } catch {
      // try the next
    }
  }
  return null
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
  console.warn('deccom: no native binary for this platform and DECCOM_SKIP_BUILD is set; deccom will not load until one is built')
  process.exit(0)
}
if (!fs.existsSync(path.join(root, 'crates', 'deccom-napi'))) {
  fail(`no prebuilt binary for ${platformSuffix()} and no Rust sources to build from. Install on a supported platform, or from a git clone.`)
}
const cargo = process.env.CARGO || 'cargo'
if (spawnSync(cargo, ['--version'], { stdio: 'ignore' }).status !== 0) {
  fail(`no prebuilt binary for ${platformSuffix()}, and cargo was not found to build one. Install Rust (https://rustup.rs) and run "npm rebuild deccom".`)
}
const profile = process.env.DECCOM_BUILD_PROFILE === 'debug' ? 'debug' : 'release'
console.log(`deccom: building the native addon from source (cargo, ${profile}); this takes a few minutes the first time`)
const args = ['build', '-p', 'deccom-napi', '--locked']
if (profile === 'release') args.push('--release')
const build = spawnSync(cargo, args, { cwd: root, stdio: 'inherit' })
if (build.status !== 0) fail(`cargo build failed (exit ${build.status}); see the output above`)

const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target')
const libName = { win32: 'deccom_napi.dll', darwin: 'libdeccom_napi.dylib' }[process.platform] ?? 'libdeccom_napi.so'
const built = path.join(targetDir, profile, libName)
const dest = path.join(root, 'native', `deccom.${platformSuffix()}.node`)
fs.mkdirSync(path.dirname(dest), { recursive: true })
fs.copyFileSync(built, dest)
if (!loads()) fail(`built ${path.relative(root, dest)} but it does not load; please report this with your platform (${platformSuffix()}, Node ${process.version})`)
console.log(`deccom: built ${path.relative(root, dest)}`)
