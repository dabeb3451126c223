/**
 * Loads the native addon. Order (first that loads wins):
 *  1. the napi-rs loader in `native/`: a local build (`native/deccom.<platform>.node`), then the
 *     platform package `@deccom/native-<platform>` (an optionalDependency of the published package);
 *  2. `prebuilds/<platform>-<arch>/deccom.node` (prebuildify layout, for bundlers and vendored copies).
 * When none fits, throws ERR_DECCOM_NATIVE_MISSING naming the platform and what to do.
 */
import path from 'node:path'
import { DeccomError, ErrorCode } from './errors'
import type * as Binding from '../native/index'

export type NativeBinding = typeof Binding

function libcSuffix(): string {
  if (process.platform !== 'linux') return ''
  const report = (process.report?.getReport?.() ?? {}) as { header?: { glibcVersionRuntime?: string } }
  return report.header?.glibcVersionRuntime ? '-gnu' : '-musl'
}

function load(): NativeBinding {
  const failures: unknown[] = []
  try {
    return require('../native/index.js') as NativeBinding
  } catch (e) {
    failures.push(e)
  }
  const dir = path.join(__dirname, '..', 'prebuilds', `${process.platform}-${process.arch}`)
  for (const file of ['deccom.node', `deccom${libcSuffix()}.node`]) {
    try {
      return require(path.join(dir, file)) as NativeBinding
    } catch (e) {
      failures.push(e)
    }
  }
  const platform = `${process.platform}-${process.arch}${libcSuffix()}`
  throw new DeccomError(
    ErrorCode.NATIVE_MISSING,
    `deccom has no native binary for ${platform} (Node ${process.version}). Tried: a local build in native/, ` +
      `the package @deccom/native-${platform}, and prebuilds/${process.platform}-${process.arch}/. ` +
      `Likely cause: optional dependencies were omitted at install (--omit=optional, some mirrors and lockfile tools). ` +
      `Fix: "npm install @deccom/native-${platform}" next to deccom; or install Rust (https://rustup.rs) and ` +
      'install deccom again, which builds the addon from source (in a clone of the repository: "npm run build:native").',
    { cause: new AggregateError(failures, 'every native loading attempt failed'), details: { platform } },
  )
}

/** The addon; loaded once, on first import. */
export const native: NativeBinding = load()
