// Helpers shared by the stream and connect benchmarks (bench/streams.mjs, bench/connect.mjs) and
// their peer-side scripts (bench/peers/hyper/*.mjs, bench/peers/libp2p/*.mjs). Node built-ins
// only: the peer scripts run on other Node versions and with their own node_modules.
//
// The stream benchmarks run every implementation the same way: the orchestrator (bench/streams.mjs)
// forks a receiver and a sender process and talks to both over IPC:
//   receiver → {ready, addr}                 listening
//   sender   → {tell}                        (optional) forwarded to the receiver as {peer}
//   sender   → {ready}                       connected (and, for one stream, stream open)
//   orchestrator → sender {go}               the clock starts
//   receiver → {done, bytes, ...}            every byte counted / every stream checked: the clock stops
//   sender   → {sent}                        the sender finished writing
//   orchestrator → both {exit}               close and exit
// Each implementation supplies an adapter (see runStreamChild) and nothing else.
import { fork } from 'node:child_process'
import crypto from 'node:crypto'

export const HOST = '127.0.0.1'
export const MiB = 1024 * 1024
export const now = () => performance.now()
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export function parseFlags (argv = process.argv.slice(2)) {
  const out = {}
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a)
    if (m) out[m[1]] = m[2] ?? 'true'
  }
  return out
}

// Exits the process after `ms` whatever happens (unref'd: does not keep it alive).
export function hardLimit (ms, label) {
  setTimeout(() => {
    process.stderr.write(`${label}: time limit of ${ms} ms reached, exiting\n`)
    process.exit(3)
  }, ms).unref()
}

// Rejects after `ms` with a message naming `what`.
export function withTimeout (promise, ms, what) {
  let t
  const timeout = new Promise((resolve, reject) => { t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms) })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t))
}

// Nearest-rank quantile and median of an array of numbers.
export function quantile (xs, q) {
  const s = [...xs].sort((a, b) => a - b)
  if (!s.length) return NaN
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]
}
export function median (xs) {
  const s = [...xs].sort((a, b) => a - b)
  if (!s.length) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

// Inbox over a child's (or the parent's) IPC channel: next(pred, ms, what) resolves with the first
// message that matches, waiting at most `ms`.
export function inbox (channel) {
  const queue = []
  const waiters = []
  channel.on('message', (m) => {
    const i = waiters.findIndex((w) => w.pred(m))
    if (i >= 0) waiters.splice(i, 1)[0].resolve(m)
    else queue.push(m)
  })
  return {
    next (pred, ms, what) {
      const i = queue.findIndex(pred)
      if (i >= 0) return Promise.resolve(queue.splice(i, 1)[0])
      let waiter
      const p = new Promise((resolve) => { waiter = { pred, resolve }; waiters.push(waiter) })
      return withTimeout(p, ms, what).catch((err) => {
        const j = waiters.indexOf(waiter)
        if (j >= 0) waiters.splice(j, 1)
        throw err
      })
    },
  }
}

// ------------------------------------------------------------------------------------------------
// Content of the `many` part: stream i carries LEN bytes: its index (4 bytes, big-endian), then
// LEN - 4 bytes of a fixed pseudo-random pool starting at an offset that depends on i. The pool is
// the same in every process (seeded generator), so loss, corruption, truncation, extra bytes and
// streams swapped with each other are all seen by comparing each stream with the pool.
const POOL_SLACK = 1 << 16
export function makePool (len) {
  const pool = Buffer.allocUnsafe(len + POOL_SLACK)
  let s = 0x2545f491 >>> 0
  for (let i = 0; i < pool.length; i += 4) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0
    pool.writeUInt32LE(s, i)
  }
  return pool
}
const offsetOf = (i) => (i * 7919) % POOL_SLACK

// The pieces of stream i, at most `chunk` bytes each (views into the pool, plus the first one).
export function * streamPieces (pool, i, len, chunk) {
  const first = Buffer.allocUnsafe(Math.min(chunk, len))
  first.writeUInt32BE(i, 0)
  const off = offsetOf(i) - 4
  pool.copy(first, 4, off + 4, off + first.length)
  yield first
  for (let pos = first.length; pos < len; pos += chunk) yield pool.subarray(off + pos, off + Math.min(len, pos + chunk))
}

// Checks one inbound stream of the `many` part against the bytes it must carry: the index in its
// first 4 bytes names the stream, and every later byte is compared with the pool at that stream's
// offset as it arrives (a memory comparison: the receiver's check costs next to nothing beside the
// transport, as in the `single` part, which only counts).
export class StreamCheck {
  constructor (pool, n, len) {
    this.pool = pool
    this.n = n
    this.len = len
    this.head = Buffer.alloc(4)
    this.bytes = 0
    this.index = -1
    this.ok = true
  }

  push (d) {
    let from = 0
    if (this.bytes < 4) {
      from = Math.min(4 - this.bytes, d.length)
      d.copy(this.head, this.bytes, 0, from)
      if (this.bytes + from === 4) {
        this.index = this.head.readUInt32BE(0)
        if (this.index >= this.n) this.ok = false
      }
    }
    const pos = this.bytes + from
    this.bytes += d.length
    if (!this.ok || from === d.length || this.bytes > this.len) return
    const at = offsetOf(this.index) - 4 + pos
    if (!d.subarray(from).equals(this.pool.subarray(at, at + d.length - from))) this.ok = false
  }

  // 'intact' | 'short' | 'long' | 'corrupt'; index = the stream's claimed index (-1 if unknown).
  finish () {
    const index = this.bytes >= 4 ? this.index : -1
    if (this.bytes < this.len) return { verdict: 'short', index }
    if (this.bytes > this.len) return { verdict: 'long', index }
    return { verdict: this.ok ? 'intact' : 'corrupt', index }
  }
}

// Bytes of the `rss` part: an async generator of `total` bytes in 64 KiB chunks (a fresh Buffer
// each time, as a real producer would make them; nothing is kept).
export async function * generate (total, chunk = 64 * 1024) {
  const seed = crypto.randomBytes(chunk)
  for (let sent = 0; sent < total; sent += chunk) {
    const n = Math.min(chunk, total - sent)
    const b = Buffer.allocUnsafe(n)
    seed.copy(b, 0, 0, n)
    b.writeUInt32LE(sent >>> 0, 0)
    yield b
  }
}

// Resolves on the Node.js stream's next 'drain', rejects if it closes first (no listener left over).
export function nextDrain (s) {
  return new Promise((resolve, reject) => {
    const onDrain = () => { off(); resolve() }
    const onClose = () => { off(); reject(new Error('stream closed while waiting for drain')) }
    const off = () => { s.off('drain', onDrain); s.off('close', onClose) }
    s.on('drain', onDrain)
    s.on('close', onClose)
  })
}

// A writer (see runStreamChild) over a Node.js Writable / Duplex.
export function nodeWriter (s) {
  return {
    write: (b) => s.write(b),
    drain: () => nextDrain(s),
    end: () => new Promise((resolve) => { s.once('finish', resolve); s.once('close', resolve); s.end() }),
  }
}

// A thrown value as text (Error, or an Event carrying one as some stream APIs reject with).
export function describe (e) {
  const err = e?.error ?? e
  return String(err?.stack ?? err?.message ?? (e?.type ? `${e.constructor?.name ?? 'Event'} ${e.type}` : err)).slice(0, 400)
}

// Writes everything `source` yields to `w` ({ write(buf) → false when full, drain() → Promise }).
export async function pump (w, source) {
  for await (const b of source) if (!w.write(b)) await w.drain()
}

// ------------------------------------------------------------------------------------------------
// The child side of the stream benchmark for one implementation. `adapter`:
//   listen({ onStream }) → { addr, close(), onPeer?(msg) }   receiver; onStream() → { data(buf), end(err?) }
//   connect(addr, { tell }) → { open() → Promise<writer>, close() }
//     writer: { write(buf) → boolean, drain() → Promise, end() → Promise }
// f: parsed flags: role (recv | send), part (single | many | rss), bytes, streams, len, chunk.
export async function runStreamChild (adapter, f) {
  hardLimit(Number(f.limit ?? 900_000), `${f.impl} ${f.role}`)
  process.on('disconnect', () => process.exit(0)) // the orchestrator is gone
  const box = inbox(process)
  const part = f.part
  const total = Number(f.bytes)
  const N = Number(f.streams ?? 1)
  const LEN = Number(f.len ?? 0)
  const CHUNK = Number(f.chunk ?? 65536)
  const fail = (err) => { process.send({ error: String(err?.stack ?? err).slice(0, 600) }); setTimeout(() => process.exit(1), 100) }
  process.on('uncaughtException', fail)
  process.on('unhandledRejection', fail)

  if (f.role === 'recv') {
    const stats = { bytes: 0, streams: 0, ended: 0, errored: 0, intact: 0, short: 0, long: 0, corrupt: 0, duplicate: 0 }
    const pool = part === 'many' ? makePool(LEN) : null
    const seen = new Set()
    let reported = false
    const report = () => { if (!reported) { reported = true; process.send({ done: true, ...stats }) } }
    const onStream = () => {
      stats.streams++
      const check = part === 'many' ? new StreamCheck(pool, N, LEN) : null
      let over = false
      return {
        data (d) {
          stats.bytes += d.length
          if (check) check.push(d)
          else if (stats.bytes >= total) report()
        },
        end (err) {
          if (over) return
          over = true
          // the first stream that fails before the receiver is done (closing at exit is no failure)
          if (err && !reported && !stats.errored) process.stderr.write(`${f.impl} receiver: a stream failed: ${describe(err)}\n`)
          if (!check) return
          if (err) stats.errored++
          else {
            stats.ended++
            const { verdict, index } = check.finish()
            if (verdict === 'intact' && seen.has(index)) stats.duplicate++
            else stats[verdict]++
            if (verdict === 'intact') seen.add(index)
          }
          if (stats.ended + stats.errored >= N) report()
        },
      }
    }
    const l = await adapter.listen({ onStream, f })
    process.on('message', async (m) => {
      if (m.peer && l.onPeer) l.onPeer(m.peer)
      if (m.report) process.send({ partial: true, ...stats })
      if (m.exit) { await withTimeout(Promise.resolve(l.close()), 5000, 'close').catch(() => {}); process.exit(0) }
    })
    process.send({ ready: true, addr: l.addr })
    return
  }

  // sender
  const { addr } = await box.next((m) => 'addr' in m, 30_000, 'address')
  const conn = await adapter.connect(addr, { tell: (msg) => process.send({ tell: msg }), f })
  let single = null
  if (part !== 'many') single = await conn.open()
  process.send({ ready: true })
  await box.next((m) => m.go, 120_000, 'go')
  const t0 = now()
  if (part === 'many') {
    const pool = makePool(LEN)
    const one = async (i) => {
      const w = await conn.open()
      await pump(w, streamPieces(pool, i, LEN, CHUNK))
      await w.end()
    }
    const r = await Promise.allSettled(Array.from({ length: N }, (_, i) => one(i)))
    const bad = r.filter((x) => x.status === 'rejected')
    process.send({ sent: true, ms: now() - t0, failed: bad.length, firstError: bad[0] ? describe(bad[0].reason) : undefined })
  } else {
    const source = part === 'rss' ? generate(total, CHUNK) : (function * () {
      const b = crypto.randomBytes(CHUNK)
      for (let sent = 0; sent < total; sent += CHUNK) yield sent + CHUNK <= total ? b : b.subarray(0, total - sent)
    })()
    await pump(single, source)
    await single.end()
    process.send({ sent: true, ms: now() - t0 })
  }
  await box.next((m) => m.exit, 600_000, 'exit')
  await withTimeout(Promise.resolve(conn.close()), 5000, 'close').catch(() => {})
  process.exit(0)
}

// ------------------------------------------------------------------------------------------------
// The connect benchmark (bench/connect.mjs). Two children per measurement:
//   net    → {ready, info}     the network (and the server) is up; `info` tells the client how to reach it
//   client ← {info, reps, warmup}; → {result: {ms: [...], tx: [...], rx: [...], failures, errors, extra}}
// Net adapter: start(f) → { info, close() }. Client adapter: once(info, f) → { ms, tx?, rx?, path? }
// (one timed connect on a fresh client: from the connect call to the first byte echoed on a new
// stream); optional setup(info, f) / teardown().
export async function runConnectNet (adapter, f) {
  hardLimit(Number(f.limit ?? 900_000), `${f.impl} net`)
  process.on('disconnect', () => process.exit(0))
  const fail = (err) => { process.send({ error: String(err?.stack ?? err).slice(0, 600) }); setTimeout(() => process.exit(1), 100) }
  process.on('uncaughtException', fail)
  process.on('unhandledRejection', fail)
  const net = await adapter.start(f)
  process.on('message', async (m) => {
    if (m.exit) { await withTimeout(Promise.resolve(net.close()), 5000, 'close').catch(() => {}); process.exit(0) }
  })
  process.send({ ready: true, info: net.info })
}

export async function runConnectClient (adapter, f) {
  hardLimit(Number(f.limit ?? 900_000), `${f.impl} client`)
  process.on('disconnect', () => process.exit(0))
  const fail = (err) => { process.send({ error: String(err?.stack ?? err).slice(0, 600) }); setTimeout(() => process.exit(1), 100) }
  process.on('uncaughtException', fail)
  process.on('unhandledRejection', fail)
  const box = inbox(process)
  const { info, reps, warmup } = await box.next((m) => m.info, 120_000, 'network info')
  if (adapter.setup) await adapter.setup(info, f)
  const out = { ms: [], tx: [], rx: [], paths: {}, failures: 0, errors: [] }
  for (let i = -warmup; i < reps; i++) {
    try {
      const r = await adapter.once(info, f)
      if (i < 0) continue
      out.ms.push(r.ms)
      if (r.tx !== undefined) out.tx.push(r.tx)
      if (r.rx !== undefined) out.rx.push(r.rx)
      if (r.path) out.paths[r.path] = (out.paths[r.path] ?? 0) + 1
    } catch (err) {
      if (i < 0) continue
      out.failures++
      if (out.errors.length < 3) out.errors.push(String(err?.message ?? err).slice(0, 300))
    }
  }
  if (adapter.teardown) await withTimeout(Promise.resolve(adapter.teardown()), 5000, 'teardown').catch(() => {})
  process.send({ result: out })
  await box.next((m) => m.exit, 60_000, 'exit').catch(() => {})
  process.exit(0)
}

/**
 * Forks `script` (with the Node binary `node`) in `role` for `impl`, keeping it in `children`
 * until it exits. `next(pred, ms, what)` waits for a matching IPC message, or fails as soon as the
 * child reports an error or exits.
 */
export function spawnRole (children, { script, node }, impl, role, args) {
  const child = fork(script, [`--role=${role}`, `--impl=${impl}`, ...args], { execPath: node, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  child.on('error', () => {}) // a send on a closed channel: the exit is what counts
  const box = inbox(child)
  const failed = new Promise((resolve, reject) => {
    child.on('message', (m) => { if (m.error) reject(new Error(`${impl} ${role}: ${m.error}`)) })
    child.on('exit', (code) => reject(new Error(`${impl} ${role} exited (${code})`)))
  })
  failed.catch(() => {})
  const next = (pred, ms, what) => Promise.race([box.next(pred, ms, `${impl} ${role}: ${what}`), failed])
  return { child, next }
}
