/**
 * JSONL trace export of a {@link SimulatedNetwork}: one JSON object per line for every datagram
 * event and every user-level event, streamed out with bounded memory.
 *
 * ```ts
 * const exp = sim.exportTrace({ path: 'run.jsonl' })  // or { fd }, { write: (chunk) => ... }, { stream }
 * sim.traceEvent('lookup_start', { id: 1, node: a.address.key })
 * sim.traceEvent('lookup_end', { id: 1, hops: r.hops, ms: r.elapsed, found: r.peer !== null })
 * exp.close()                                         // flushes (sim.close() does too)
 * ```
 *
 * Datagram lines: `{"t":12.5,"ev":"deliver","from":"10.0.0.1:4000","to":"10.0.0.2:4000","tag":3,"size":52,"p":"0103"}`
 * — `t` virtual ms, `ev` the verdict (`send`, `deliver`, `lost`, `queue_drop`, `no_route`,
 * `nat_drop`, `uplink_drop`, `downlink_drop`), the addresses as on the link (a NATed sender's mapped
 * address), the layer tag (byte 0), the wire size and `p`: the first two payload bytes in hex (often
 * a version and a message type; e.g. Kademlia's type is the second). User lines:
 * `{"t":...,"ev":"<type>", ...fields}`.
 *
 * Lines are gathered in a buffer of `chunkBytes` (default 64 KiB) and then written: synchronously to
 * a `path` or `fd` (so memory stays bounded whatever the disk's speed), to `write`, or to a Node
 * `stream`, whose own buffer may hold at most `maxBuffered` bytes (default 64 MiB). A sink that
 * fails — beyond that bound (ERR_DECCOM_SIM_TRACE_BACKLOG: the simulation does not wait for a slow
 * stream; use a file), or a write error — ends the export (`error` is set, nothing more is kept)
 * and the run in progress rejects with that error (the datagram's sender is not affected). When no
 * export is active the simulator does one `undefined` check per datagram.
 */
import { closeSync, openSync, writeSync } from 'node:fs'
import type { Address } from '../address'
import { DeccomError, ErrorCode } from '../errors'

/** What every kind of {@link TraceSink} takes. */
export interface TraceSinkBase {
  /**
   * Lines are buffered until the buffer holds at least this many characters (UTF-16 code units:
   * bytes for ASCII lines), then handed to the sink in one chunk of whole lines (default 65 536;
   * below 1 counts as 1).
   */
  chunkBytes?: number
}

/** A trace sink that writes to a file. */
export interface TraceFileSink extends TraceSinkBase {
  /**
   * The file to write, created or truncated when the export starts; chunks are written
   * synchronously, and the file is closed when the export closes.
   */
  path: string
}

/** A trace sink that writes to an open file descriptor. */
export interface TraceFdSink extends TraceSinkBase {
  /** The file descriptor chunks are written to, synchronously; the export never closes it. */
  fd: number
}

/** A trace sink that hands the chunks to a function. */
export interface TraceWriteSink extends TraceSinkBase {
  /**
   * Called synchronously with each chunk (whole lines, each ending with a newline). A throw ends
   * the export: the error is its `error` and the run in progress rejects with it.
   */
  write: (chunk: string) => void
}

/**
 * A trace sink that writes to a Node writable stream. The simulation does not wait for the
 * stream: chunks are passed to `stream.write()` without waiting for `'drain'`, and the stream is
 * not ended when the export closes.
 */
export interface TraceStreamSink extends TraceSinkBase {
  /** The stream chunks are written to. */
  stream: NodeJS.WritableStream & {
    /** Bytes the stream holds unwritten (Node's Writable has it); without it `maxBuffered` is not checked. */
    writableLength?: number
  }
  /**
   * Most unwritten bytes the stream may hold (its `writableLength`) when a chunk is due; beyond,
   * the export fails with ERR_DECCOM_SIM_TRACE_BACKLOG (default 67 108 864, 64 MiB).
   */
  maxBuffered?: number
}

/** Where `sim.exportTrace` writes the JSON lines: a file path, a file descriptor, a function or a stream. */
export type TraceSink = TraceFileSink | TraceFdSink | TraceWriteSink | TraceStreamSink

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

/** An active export; made by `sim.exportTrace()`. */
export class TraceExport {
  readonly #write: (chunk: string) => void
  readonly #close: () => void
  readonly #chunk: number
  readonly #onClose: (() => void) | undefined
  readonly #onFail: ((e: unknown) => void) | undefined
  /** Why the sink failed, if it did (the export is then closed). */
  error: unknown
  #buf = ''
  #closed = false
  /** Lines written (or buffered) so far. */
  lines = 0
  /** Bytes handed to the sink so far. */
  bytes = 0

  /** @internal */
  constructor(sink: TraceSink, backlogCode: string, onClose?: () => void, onFail?: (e: unknown) => void) {
    this.#onClose = onClose
    this.#onFail = onFail
    this.#chunk = Math.max(1, sink.chunkBytes ?? 64 * 1024)
    if ('path' in sink) {
      const fd = openSync(sink.path, 'w')
      this.#write = (c) => writeAll(fd, c)
      this.#close = () => closeSync(fd)
    } else if ('fd' in sink) {
      const fd = sink.fd
      this.#write = (c) => writeAll(fd, c)
      this.#close = () => {}
    } else if ('write' in sink) {
      this.#write = sink.write
      this.#close = () => {}
    } else {
      const s = sink.stream
      const max = sink.maxBuffered ?? 64 * 1024 * 1024
      this.#write = (c) => {
        if ((s.writableLength ?? 0) > max) {
          throw new DeccomError(backlogCode, `The trace stream holds more than ${max} unwritten bytes: it cannot keep up (export to a file instead)`, {
            details: { maxBuffered: max },
          })
        }
        s.write(c)
      }
      this.#close = () => {}
    }
  }

  /**
   * True once the export has stopped: after `close()` (also called by the network's close) or
   * after a sink failure (then `error` is set). A closed export ignores further events.
   */
  get closed(): boolean {
    return this.#closed
  }

  /** @internal One datagram event. */
  datagram(t: number, ev: string, from: Address, to: Address, bytes: Uint8Array): void {
    if (this.#closed) return
    const p = bytes.length > 2 ? HEX[bytes[1]!]! + HEX[bytes[2]!]! : bytes.length > 1 ? HEX[bytes[1]!]! : ''
    this.#line(
      `{"t":${round(t)},"ev":"${ev}","from":"${from.key}","to":"${to.key}","tag":${bytes.length > 0 ? bytes[0] : -1},"size":${bytes.length},"p":"${p}"}\n`,
    )
  }

  /** A user-level event: `{"t", "ev": type, ...fields}` (fields must be JSON-serializable). */
  event(t: number, type: string, fields?: Record<string, unknown>): void {
    const rest = fields === undefined ? '' : JSON.stringify(fields).slice(1, -1)
    this.#line(`{"t":${round(t)},"ev":${JSON.stringify(type)}${rest.length > 0 ? ',' + rest : ''}}\n`)
  }

  #line(s: string): void {
    if (this.#closed) return
    this.lines++
    this.#buf += s
    if (this.#buf.length >= this.#chunk) this.flush()
  }

  /** Hands the buffered lines to the sink. */
  flush(): void {
    if (this.#buf.length === 0) return
    const c = this.#buf
    this.#buf = ''
    const n = Buffer.byteLength(c)
    if (this.#onFail === undefined) {
      this.#write(c)
      this.bytes += n
      return
    }
    try {
      this.#write(c)
      this.bytes += n
    } catch (e) {
      this.error = e
      this.#closed = true
      try {
        this.#close()
      } catch {
        // the first error is the one reported
      }
      this.#onClose?.()
      this.#onFail(e)
    }
  }

  /** Flushes and stops the export (closes the file of a `path`). Idempotent. */
  close(): void {
    if (this.#closed) return
    try {
      this.flush()
    } finally {
      this.#closed = true
      this.#close()
      this.#onClose?.()
    }
  }
}

/** @internal The network's export slot: `active` is the open export, if any (one at a time). */
export class TraceExporter {
  active: TraceExport | undefined
  readonly #now: () => number
  readonly #backlogCode: string

  readonly #fail: (e: unknown) => void

  /** `fail` reports a sink's failure (the network: by an event that throws it into the run). */
  constructor(now: () => number, backlogCode: string, fail: (e: unknown) => void) {
    this.#now = now
    this.#backlogCode = backlogCode
    this.#fail = fail
  }

  start(sink: TraceSink): TraceExport {
    if (this.active !== undefined) throw new DeccomError(ErrorCode.STACK_STATE, 'A trace export is already active: close it first')
    const x = new TraceExport(
      sink,
      this.#backlogCode,
      () => {
        if (this.active === x) this.active = undefined
      },
      this.#fail,
    )
    this.active = x
    return x
  }

  event(type: string, fields?: Record<string, unknown>): void {
    this.active?.event(this.#now(), type, fields)
  }
}

function round(t: number): number {
  return Math.round(t * 1000) / 1000
}

function writeAll(fd: number, s: string): void {
  const b = Buffer.from(s)
  let off = 0
  while (off < b.length) off += writeSync(fd, b, off, b.length - off)
}
