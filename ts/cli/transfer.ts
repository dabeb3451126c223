/**
 * `deccom send` and `deccom receive`: one file per stream. The sender writes a header line, JSON
 * `{"name":"report.pdf","size":123}` and "\n" (at most 4 KiB), then the file's bytes, and ends its
 * side. The receiver writes the bytes to DIR, computes their SHA-256 and answers on the same
 * stream with one line, `sha256 <hex>` or `error <reason>`, then ends its side too.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, existsSync, renameSync, rmSync, statSync } from 'node:fs'
import { basename, join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { SingleBar } from 'cli-progress'
import type { Connection } from '../connection/connection'
import type { Stream } from '../connection/stream'
import { Kademlia } from '../protocols/kademlia'
import { Noise } from '../protocols/noise'
import { ReliableUdp } from '../protocols/reliable'
import { Node } from '../node'
import { hostPort, identityFor, mib, onStopSignal } from './common'

const MAX_HEADER = 4096
const BUFFERS = { recvBufferSize: 4 * 1024 * 1024, sendBufferSize: 4 * 1024 * 1024 }

export interface NetOptions {
  bootstrap: string
  listen: string
  key?: string
}

/** A node on `--listen` that joins the network through `--bootstrap`, ready. */
async function joinedNode(o: NetOptions): Promise<Node> {
  const { host, port } = hostPort(o.listen, '--listen')
  const boot = hostPort(o.bootstrap, '--bootstrap')
  const node = await Node.create({ host, port, ...BUFFERS, identity: identityFor(o.key), stack: [new Kademlia({ bootstrap: [`${boot.host}:${boot.port}`] }), new ReliableUdp(), new Noise()] })
  try {
    await node.ready({ signal: AbortSignal.timeout(15_000) })
  } catch (e) {
    await node.close()
    throw e
  }
  return node
}

/**
 * Reads one "\n"-terminated line (at most `max` bytes) from `stream`, puts back what follows it
 * and leaves the stream paused (the next consumer resumes it). It reads with 'data' events, like
 * pipeline() after it: a Stream read with 'readable' + read() was seen to hand out a later piece
 * before an earlier one when the two arrived close together.
 */
function readLine(stream: Stream, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let length = 0
    const cleanup = (): void => {
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('error', reject)
      stream.pause()
    }
    const onEnd = (): void => {
      cleanup()
      reject(new Error('the stream ended before its header line'))
    }
    const onData = (chunk: Buffer): void => {
      const nl = chunk.indexOf(10)
      if (nl >= 0) {
        cleanup()
        if (nl + 1 < chunk.length) stream.unshift(chunk.subarray(nl + 1))
        parts.push(chunk.subarray(0, nl))
        resolve(Buffer.concat(parts).toString('utf8'))
        return
      }
      parts.push(chunk)
      length += chunk.length
      if (length > max) {
        cleanup()
        reject(new Error(`header line longer than ${max} bytes`))
      }
    }
    stream.on('data', onData)
    stream.once('end', onEnd)
    stream.once('error', reject)
  })
}

/** A pass-through that hashes (SHA-256) and counts what goes through it. */
function hasher(): Transform & { digest(): string; bytes: number } {
  const hash = createHash('sha256')
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk)
      t.bytes += chunk.length
      cb(null, chunk)
    },
  }) as Transform & { digest(): string; bytes: number }
  t.bytes = 0
  t.digest = () => hash.digest('hex')
  return t
}

/** A file name from a header, safe to join to the output directory: no directories, no dot names. */
function safeName(name: unknown): string {
  if (typeof name !== 'string') throw new Error('header: no file name')
  const base = basename(name.replace(/\\/g, '/'))
  if (base === '' || base === '.' || base === '..' || /[\x00-\x1f]/.test(base)) throw new Error(`header: unusable file name ${JSON.stringify(name)}`)
  return base
}

/** `dir/name`, or `dir/name.1`, `dir/name.2`... when it exists. */
function freePath(dir: string, name: string): string {
  let path = join(dir, name)
  for (let i = 1; existsSync(path); i++) path = join(dir, `${name}.${i}`)
  return path
}

/** Receives one file from `stream` into `dir`; answers with its SHA-256. Returns the path. */
async function receiveFile(stream: Stream, dir: string): Promise<{ path: string; size: number; sha256: string }> {
  let part: string | undefined
  try {
    const header = JSON.parse(await readLine(stream, MAX_HEADER)) as { name?: unknown; size?: unknown }
    const name = safeName(header.name)
    const size = header.size
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new Error('header: no valid size')
    part = join(dir, `.${name}.${randomBytes(6).toString('hex')}.part`)
    const h = hasher()
    await pipeline(stream, h, createWriteStream(part, { flags: 'wx' }))
    if (h.bytes !== size) throw new Error(`got ${h.bytes} bytes, the header announced ${size}`)
    const sha256 = h.digest()
    // Chosen and taken in one synchronous step: two files of the same name do not overwrite each other.
    const path = freePath(dir, name)
    renameSync(part, path)
    part = undefined
    stream.end(`sha256 ${sha256}\n`)
    return { path, size, sha256 }
  } catch (e) {
    if (part !== undefined) rmSync(part, { force: true })
    if (!stream.writableEnded && !stream.destroyed) stream.end(`error ${(e as Error).message.replace(/\n/g, ' ')}\n`)
    throw e
  }
}

export async function receive(o: NetOptions & { out: string; keep: boolean }): Promise<number> {
  if (!statSync(o.out, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`--out: not a directory: ${o.out}`)
  const node = await joinedNode(o)
  console.log(`id ${node.id.toString('hex')}`)
  console.log(`address ${node.address.key}`)
  let failures = 0
  let finish!: () => void
  const finished = new Promise<void>((resolve) => (finish = resolve))
  onStopSignal(() => finish())
  node.on('connection', (conn: Connection) => {
    conn.on('stream', (stream: Stream) => {
      const from = conn.remote.id?.toString('hex').slice(0, 16) ?? conn.remote.address.key
      receiveFile(stream, o.out).then(
        (r) => {
          console.log(`received ${r.path} (${mib(r.size)} MiB) from ${from}, sha256 ${r.sha256}`)
          if (!o.keep) finish()
        },
        (e: Error) => {
          failures++
          console.error(`receive from ${from} failed: ${e.message}`)
          if (!o.keep) finish()
        },
      )
    })
  })
  await finished
  // Let the answer line reach the sender before the node goes.
  await new Promise((r) => setTimeout(r, 500))
  await node.close()
  return failures === 0 ? 0 : 1
}

/** Progress of `acked()` out of `total` bytes on stderr: a bar with rate and ETA on a terminal, else a line per 10 %. */
function progress(acked: () => number, total: number): () => void {
  const started = performance.now()
  const rate = (): string => (acked() / (1024 * 1024) / Math.max(1e-3, (performance.now() - started) / 1000)).toFixed(1)
  if (process.stderr.isTTY === true) {
    const bar = new SingleBar({ stream: process.stderr, hideCursor: true, etaBuffer: 50, format: '[{bar}] {percentage}% | {done}/{size} MiB | {rate} MiB/s | ETA {eta_formatted}' })
    bar.start(total, 0, { done: mib(0), size: mib(total), rate: '0.0' })
    const timer = setInterval(() => bar.update(acked(), { done: mib(acked()), rate: rate() }), 100)
    return () => {
      clearInterval(timer)
      bar.update(acked(), { done: mib(acked()), rate: rate() })
      bar.stop()
    }
  }
  let next = 10
  const line = (): void => {
    const pct = total === 0 ? 100 : Math.floor((acked() / total) * 100)
    if (pct < next) return
    const secs = (performance.now() - started) / 1000
    const eta = acked() > 0 ? ((total - acked()) * secs) / acked() : 0
    process.stderr.write(`${String(pct).padStart(3)}%  ${mib(acked())}/${mib(total)} MiB  ${rate()} MiB/s  ETA ${eta.toFixed(0)} s\n`)
    while (next <= pct) next += 10
  }
  const timer = setInterval(line, 100)
  return () => {
    clearInterval(timer)
    line()
  }
}

export async function send(file: string, nodeId: string, o: NetOptions): Promise<number> {
  if (!/^[0-9a-f]{64}$/i.test(nodeId)) throw new Error(`not a node id (64 hex digits): ${nodeId}`)
  const st = statSync(file, { throwIfNoEntry: false })
  if (!st?.isFile()) throw new Error(`not a file: ${file}`)
  const size = st.size
  const node = await joinedNode(o)
  let stopped = false
  onStopSignal(() => {
    stopped = true
    void node.close().finally(() => process.exit(130))
  })
  try {
    const conn = await node.connect(Buffer.from(nodeId, 'hex'), { signal: AbortSignal.timeout(20_000) })
    console.error(`connected to ${nodeId.slice(0, 16)} at ${conn.remote.address.key} (${conn.path}, rtt ${conn.rtt.toFixed(1)} ms)`)
    const stream = await conn.openStream()
    let answer = ''
    stream.setEncoding('utf8')
    const answered = new Promise<void>((resolve, reject) => {
      stream.on('data', (s: string) => {
        if (answer.length < MAX_HEADER) answer += s
      })
      stream.once('end', resolve)
      stream.once('error', reject)
    })
    answered.catch(() => {})
    const header = Buffer.from(`${JSON.stringify({ name: basename(file), size })}\n`)
    stream.write(header)
    const h = hasher()
    const started = performance.now()
    const stop = progress(() => Math.max(0, stream.bytesAcknowledged - header.length), size)
    try {
      await pipeline(createReadStream(file), h, stream)
      await Promise.race([answered, new Promise((_, reject) => setTimeout(() => reject(new Error('no answer from the receiver within 60 s')), 60_000).unref())])
    } finally {
      stop()
    }
    const secs = (performance.now() - started) / 1000
    const ours = h.digest()
    const theirs = answer.trim()
    if (theirs !== `sha256 ${ours}`) {
      console.error(`the receiver answered ${JSON.stringify(theirs)}; the file's sha256 is ${ours}`)
      return 1
    }
    console.log(`sent ${file}: ${mib(size)} MiB in ${secs.toFixed(2)} s (${(size / (1024 * 1024) / secs).toFixed(1)} MiB/s), sha256 ${ours} confirmed`)
    await conn.close()
    return 0
  } finally {
    if (!stopped) await node.close()
  }
}
