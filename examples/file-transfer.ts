// A file transfer over one stream. A sender and a receiver run real nodes on 127.0.0.1 with the
// stack [ReliableUdp, Noise] (encrypted, the receiver's identity authenticated). The sender writes a
// file of random bytes to a temporary directory, connects, opens a stream and pipes the file into
// it with stream/promises.pipeline; the receiver pipes the stream into a file, checks its SHA-256
// and answers with the digest on the same stream. Progress comes from `stream.bytesAcknowledged`
// (bytes the receiver's transport acknowledged): a one-line bar on stderr when it is a terminal, a
// line every 25 % otherwise. Prints the throughput, removes the temporary files, exits by itself.
//   node .tmp/examples/file-transfer.mjs [--size 32M]     (sizes in bytes, or with K, M or G: 1G)
// Run: npx ava __test__/examples.spec.ts  (compiles it to .tmp/examples/file-transfer.mjs and runs it
// with the default size, small enough for CI)
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, rmSync } from 'node:fs'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { type Connection, Node, Noise, ReliableUdp, type Stream } from 'deccom'

const MiB = 1024 * 1024

/** "32M", "1G", "500K" or a number of bytes. */
function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMG]?)i?B?$/i.exec(text.trim())
  const unit = { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[(m?.[2] ?? '').toUpperCase()]
  const n = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--size: not a size: ${JSON.stringify(text)} (try 32M or 1G)`)
  return n
}

let size: number
try {
  const { values } = parseArgs({ options: { size: { type: 'string', default: '32M' } } })
  size = parseSize(values.size ?? '32M')
} catch (e) {
  console.error(`${(e as Error).message}\nusage: file-transfer [--size 32M]`)
  process.exit(2)
}
const mib = (n: number): string => (n / MiB).toFixed(1)

/** SHA-256 of a file, hex. */
async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(createReadStream(path), hash)
  return hash.digest('hex')
}

/** Writes `bytes` random bytes to `path`; returns their SHA-256. */
async function writeRandomFile(path: string, bytes: number): Promise<string> {
  const hash = createHash('sha256')
  const file = await open(path, 'w')
  try {
    for (let left = bytes; left > 0; ) {
      const chunk = randomBytes(Math.min(left, 4 * MiB))
      hash.update(chunk)
      await file.write(chunk)
      left -= chunk.length
    }
  } finally {
    await file.close()
  }
  return hash.digest('hex')
}

/** Reports `stream.bytesAcknowledged` out of `total` on stderr until stopped; returns the stopper. */
function progress(stream: Stream, total: number): () => void {
  const started = performance.now()
  const tty = process.stderr.isTTY === true
  let nextQuarter = 25
  const draw = (): void => {
    const acked = stream.bytesAcknowledged
    const pct = total === 0 ? 100 : Math.floor((acked / total) * 100)
    const rate = acked / MiB / Math.max(1e-3, (performance.now() - started) / 1000)
    if (tty) {
      const width = 30
      const full = Math.round((pct / 100) * width)
      process.stderr.write(`\r[${'#'.repeat(full)}${'.'.repeat(width - full)}] ${String(pct).padStart(3)}%  ${mib(acked)}/${mib(total)} MiB  ${rate.toFixed(1)} MiB/s\x1b[K`)
    } else {
      // One line each time a quarter is passed (several quarters at once make one line).
      if (pct >= nextQuarter) {
        process.stderr.write(`${String(pct).padStart(3)}%  ${mib(acked)}/${mib(total)} MiB acknowledged  ${rate.toFixed(1)} MiB/s\n`)
        while (nextQuarter <= pct) nextQuarter += 25
      }
    }
  }
  const timer = setInterval(draw, 100)
  return () => {
    clearInterval(timer)
    draw()
    if (tty) process.stderr.write('\n')
  }
}

/** Resolves when `cond()` holds (checked every 10 ms), or rejects after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

const dir = await mkdtemp(join(tmpdir(), 'deccom-file-transfer-'))
const source = join(dir, 'source.bin')
const received = join(dir, 'received.bin')
// Interrupted (Ctrl-C) during a big transfer: the temporary files go too.
process.once('SIGINT', () => {
  rmSync(dir, { recursive: true, force: true })
  process.exit(130)
})
const net = { host: '127.0.0.1', port: 0, recvBufferSize: 4 * MiB, sendBufferSize: 4 * MiB }
const sender = await Node.create({ ...net, stack: [new ReliableUdp(), new Noise()] })
const receiver = await Node.create({ ...net, stack: [new ReliableUdp(), new Noise()] })
let failed = false
try {
  console.log(`writing ${mib(size)} MiB of random bytes to ${source}`)
  const digest = await writeRandomFile(source, size)

  // The receiver: every incoming stream is a file. It is written to disk, its SHA-256 computed
  // from the file, and the digest written back on the stream (which then ends in both directions).
  const done = new Promise<void>((resolve, reject) => {
    receiver.on('connection', (conn: Connection) => {
      conn.on('stream', (stream) => {
        void (async () => {
          // pipeline() ends the file when the stream ends; it leaves the stream's writable side open.
          await pipeline(stream, createWriteStream(received))
          const got = await sha256File(received)
          console.log(`receiver: ${mib(stream.bytesReceived)} MiB from ${conn.remote.id?.toString('hex').slice(0, 8)}, sha256 ${got}`)
          stream.end(`${got}\n`)
        })().then(resolve, reject)
      })
    })
  })
  done.catch(() => {}) // awaited below; a failure before that is not an unhandled rejection

  const conn = await sender.connect(receiver.address, { signal: AbortSignal.timeout(10_000) })
  console.log(`connected to ${conn.remote.id?.toString('hex').slice(0, 8)} at ${conn.remote.address.key}, path ${conn.path}, rtt ${conn.rtt.toFixed(1)} ms`)
  const stream = await conn.openStream()
  // The receiver's answer: collected as it comes, so reading does not end (destroy) the stream.
  let answer = ''
  stream.setEncoding('utf8')
  stream.on('data', (s: string) => (answer += s))
  const answered = new Promise<void>((resolve, reject) => {
    stream.once('end', resolve)
    stream.once('error', reject)
  })
  answered.catch(() => {})

  const started = performance.now()
  const stop = progress(stream, size)
  try {
    await pipeline(createReadStream(source), stream)
    await until(() => stream.bytesAcknowledged === size, 30_000, 'the last acknowledgements')
  } finally {
    stop()
  }
  const seconds = (performance.now() - started) / 1000
  await Promise.race([Promise.all([answered, done]), new Promise((_, reject) => setTimeout(() => reject(new Error('no answer from the receiver within 30 s')), 30_000).unref())])

  const theirs = answer.trim()
  console.log(`sent ${mib(stream.bytesSent)} MiB in ${seconds.toFixed(2)} s: ${(size / MiB / seconds).toFixed(1)} MiB/s (${((size * 8) / 1e6 / seconds).toFixed(0)} Mbit/s)`)
  console.log(`sender:   sha256 ${digest}`)
  if (theirs !== digest) throw new Error(`the receiver's SHA-256 ${theirs} differs from the file's ${digest}`)
  console.log('the digests match')
  await conn.close()
} catch (e) {
  failed = true
  console.error('file transfer failed:', e)
} finally {
  await sender.close()
  await receiver.close()
  await rm(dir, { recursive: true, force: true })
  console.log(`removed ${dir}`)
}
process.exitCode = failed ? 1 : 0
