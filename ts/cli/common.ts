/** Helpers shared by the `deccom` subcommands: addresses, key files, stopping on signals. */
import { closeSync, chmodSync, existsSync, mkdirSync, openSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { Identity } from '../identity'

/** The key file used when `--key` is not given to `deccom id`. */
export const defaultKeyFile = (): string => join(homedir(), '.deccom', 'identity.key')

/** Splits "HOST:PORT" ("[v6]:PORT" too); exits with a usage error when it is not one. */
export function hostPort(text: string, what: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(text.trim())
  const port = m ? Number(m[2]) : NaN
  if (!m || m[1] === '' || !(port >= 0 && port <= 65535)) {
    throw new Error(`${what}: not HOST:PORT: ${JSON.stringify(text)}`)
  }
  return { host: m[1]!, port }
}

/**
 * The identity stored in `path`; when the file does not exist, a new identity is generated and
 * written there (the file is created with mode 0600 before the key goes into it).
 */
export function loadOrCreateIdentity(path: string): { identity: Identity; created: boolean } {
  if (existsSync(path)) return { identity: Identity.load(path), created: false }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  closeSync(openSync(path, 'wx', 0o600))
  const identity = Identity.generate()
  identity.save(path)
  chmodSync(path, 0o600)
  return { identity, created: true }
}

/** `--key FILE` given: that identity (created if missing); not given: a fresh one for this run. */
export const identityFor = (key: string | undefined): Identity => (key === undefined ? Identity.generate() : loadOrCreateIdentity(key).identity)

/** Calls `stop` once on the first SIGINT or SIGTERM; a second signal exits at once. */
export function onStopSignal(stop: (signal: string) => void): void {
  let stopping = false
  const handler = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(130)
    stopping = true
    stop(signal)
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
}

const MiB = 1024 * 1024
/** Bytes as MiB with one decimal. */
export const mib = (n: number): string => (n / MiB).toFixed(1)
