/**
 * Test helper for the real-NAT tests: runs a node script inside a network namespace as a child
 * process that speaks JSON lines (events on stdout, commands on stdin).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { ExecutionContext } from 'ava'

/** The namespace builder: `bash NETNS_SCRIPT up PREFIX modeA modeB` / `down PREFIX`. */
export const NETNS_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts', 'netns-nat.sh')

/** Why the real-NAT tests cannot run here, or null. */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return 'not Linux'
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not running as root (network namespaces need root)'
  for (const [cmd, args] of [
    ['ip', ['netns', 'list']],
    ['iptables', ['--version']],
  ] as const) {
    try {
      execFileSync(cmd, args, { stdio: 'ignore' })
    } catch {
      return `\`${cmd} ${args.join(' ')}\` is unavailable (apt-get install -y --no-install-recommends iproute2 iptables)`
    }
  }
  return null
}

/**
 * The child processes and namespace prefixes of one test file; whatever is left is killed and
 * torn down when the process exits, even after a failure.
 */
export function netnsTracker(): { children: Set<ChildProcess>; prefixes: Set<string> } {
  const children = new Set<ChildProcess>()
  const prefixes = new Set<string>()
  process.on('exit', () => {
    for (const c of children) c.kill('SIGKILL')
    for (const p of prefixes) {
      try {
        execFileSync('bash', [NETNS_SCRIPT, 'down', p], { stdio: 'ignore' })
      } catch {
        // best effort
      }
    }
  })
  return { children, prefixes }
}

/**
 * Builds the namespaces `prefix-*` (NETNS_SCRIPT up, NAT A in `modeA`, NAT B in `modeB`) for one
 * test and tears them down in its teardown, even when it fails (and, failing that, at exit:
 * `prefixes` comes from {@link netnsTracker}).
 */
export function netnsUp(t: ExecutionContext, prefixes: Set<string>, prefix: string, modeA: string, modeB: string): string {
  prefixes.add(prefix)
  t.teardown(() => {
    execFileSync('bash', [NETNS_SCRIPT, 'down', prefix], { stdio: 'ignore' })
    prefixes.delete(prefix)
  })
  execFileSync('bash', [NETNS_SCRIPT, 'up', prefix, modeA, modeB], { stdio: 'pipe' })
  return prefix
}

export interface Proc {
  events: Record<string, unknown>[]
  wait(pred: (e: Record<string, unknown>) => boolean, ms: number, what: string): Promise<Record<string, unknown>>
  send(cmd: Record<string, unknown>): void
}

/**
 * Spawns `node script dist cfg` in namespace `ns`; the child is tracked in `children` (for a
 * last-resort kill) and killed in the test's teardown.
 */
export function runInNetns(
  t: ExecutionContext,
  children: Set<ChildProcess>,
  ns: string,
  script: string,
  dist: string,
  cfg: Record<string, unknown>,
): Proc {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, script, dist, JSON.stringify({ lifetime: 25_000, ...cfg })], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  children.add(child)
  child.on('exit', () => children.delete(child))
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  const events: Record<string, unknown>[] = []
  const waiters = new Set<() => void>()
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      events.push(JSON.parse(line) as Record<string, unknown>)
    } catch {
      t.log(`${ns}: ${line}`)
    }
    for (const w of waiters) w()
  })
  child.stderr!.on('data', (d: Buffer) => t.log(`${ns} stderr: ${d.toString().trim()}`))
  return {
    events,
    send: (cmd) => child.stdin!.write(JSON.stringify(cmd) + '\n'),
    wait: (pred, ms, what) =>
      new Promise((resolve, reject) => {
        const check = (): boolean => {
          const e = events.find(pred)
          if (!e) return false
          waiters.delete(check as () => void)
          clearTimeout(timer)
          resolve(e)
          return true
        }
        const timer = setTimeout(() => {
          waiters.delete(check as () => void)
          reject(new Error(`${ns}: no ${what} within ${ms} ms; events: ${JSON.stringify(events)}`))
        }, ms)
        if (!check()) waiters.add(check as () => void)
      }),
  }
}
