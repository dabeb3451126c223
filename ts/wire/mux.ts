/**
 * Connection frames (docs/wire.md#connections-tag-12): what a {@link Connection} sends inside
 * reliable messages (ReliableUdp, through Noise or not) or TCP data frames, all with tag 12.
 * `[type u8][body]`, integers big-endian. The connection layer (ts/connection/) encodes and
 * decodes every frame here; decoders return null for anything it drops as malformed (unknown
 * type, wrong length, unknown flag bits, stream id 0 where a stream is named, version ≠ 1).
 */

/** The layer tag connection frames travel under (a reliable message's or TCP frame's tag). */
export const TAG_CONN = 12
/** HELLO version. */
export const CONN_VERSION = 1

export const HELLO = 1
export const DATA = 2
export const MAX_DATA = 3
export const MAX_STREAMS = 4
export const RESET = 5
export const CLOSE = 6
export const MESSAGE = 7

/** DATA flag: the last bytes (also RESET's flag: the resetter had sent all its bytes) of the stream (its final size is offset + length). */
export const FLAG_FIN = 0x01
/** Bytes before a DATA frame's payload. */
export const DATA_HEADER = 14
export const HELLO_LEN = 1 + 1 + 8 + 8 + 4 + 4 + 4
export const RESET_LEN = 1 + 4 + 4 + 1 + 8

/** A HELLO frame: opens a connection and gives the peer its initial credit. */
export interface Hello {
  /** The frame type. */
  type: 'HELLO'
  /** Random per connection instance, never all zeros. */
  nonce: Buffer
  /** The peer's nonce as the sender knows it (zeros: not yet known). */
  echo: Buffer
  /** Streams the receiver of this HELLO may open (cumulative count), initially. */
  maxStreams: number
  /** Stream payload bytes the receiver may send on the connection, initially (sum over streams). */
  maxData: number
  /** Bytes the receiver may send on each stream, initially. */
  streamWindow: number
}
/** A decoded connection frame, by its `type`. */
export type MuxFrame =
  | Hello
  | {
      /** Stream bytes. */
      type: 'DATA'
      /** The stream id (never 0). */
      stream: number
      /** Where `data` starts in the stream. */
      offset: number
      /** The stream's last bytes: its final size is `offset + data.length`. */
      fin: boolean
      /** The payload. */
      data: Buffer
    }
  | {
      /** More credit: the sender may send up to `max` bytes (stream 0: on the whole connection). */
      type: 'MAX_DATA'
      /** The stream id, or 0 for the connection. */
      stream: number
      /** The new cumulative limit in bytes. */
      max: number
    }
  | {
      /** More streams: the receiver may open up to `max` streams in all. */
      type: 'MAX_STREAMS'
      /** The new cumulative stream count. */
      max: number
    }
  | {
      /** Abandons a stream. */
      type: 'RESET'
      /** The stream id (never 0). */
      stream: number
      /** Why (an application code; see RESET_CANCEL, RESET_ERROR). */
      code: number
      /** The resetter had sent all its bytes (`finalSize` of them). */
      finished: boolean
      /** The bytes the resetter sent on the stream. */
      finalSize: number
    }
  | {
      /** Closes the connection. */
      type: 'CLOSE'
      /** Why (CLOSE_NORMAL, CLOSE_PROTOCOL, ...). */
      code: number
    }
  | {
      /** A message on the connection, outside any stream. */
      type: 'MESSAGE'
      /** The message. */
      data: Buffer
    }

/** Offsets are below 2^53 (9 PB): a u64 above that is malformed. */
const MAX_SAFE = Number.MAX_SAFE_INTEGER

function writeU64(b: Buffer, v: number, at: number): void {
  b.writeUInt32BE(Math.floor(v / 0x1_0000_0000), at)
  b.writeUInt32BE(v >>> 0, at + 4)
}

function readU64(b: Uint8Array, at: number): number {
  const v = Buffer.from(b.buffer, b.byteOffset, b.byteLength)
  const hi = v.readUInt32BE(at)
  return hi > 0x1f_ffff ? -1 : hi * 0x1_0000_0000 + v.readUInt32BE(at + 4)
}

/** The header of a DATA frame; the payload follows it (see {@link encodeData} for one buffer). */
export function dataHeader(b: Buffer, stream: number, offset: number, fin: boolean): Buffer {
  b[0] = DATA
  b.writeUInt32BE(stream, 1)
  writeU64(b, offset, 5)
  b[13] = fin ? FLAG_FIN : 0
  return b
}

/**
 * A whole DATA frame: header and a copy of `data` — one buffer, or the bytes of several back to
 * back (a stream's buffered writes become one frame without being joined first).
 */
export function encodeData(stream: number, offset: number, fin: boolean, data: Uint8Array | readonly Uint8Array[]): Buffer {
  if (!Array.isArray(data)) {
    const one = data as Uint8Array
    const b = Buffer.allocUnsafe(DATA_HEADER + one.length)
    dataHeader(b, stream, offset, fin)
    b.set(one, DATA_HEADER)
    return b
  }
  let n = 0
  for (const d of data) n += d.length
  const b = Buffer.allocUnsafe(DATA_HEADER + n)
  dataHeader(b, stream, offset, fin)
  let at = DATA_HEADER
  for (const d of data) {
    b.set(d, at)
    at += d.length
  }
  return b
}

/** The bytes of a connection frame (the inverse of {@link decodeMux}). */
export function encodeMux(f: MuxFrame): Buffer {
  switch (f.type) {
    case 'HELLO': {
      if (f.nonce.length !== 8 || f.echo.length !== 8) throw new RangeError('HELLO nonces are 8 bytes')
      const b = Buffer.alloc(HELLO_LEN)
      b[0] = HELLO
      b[1] = CONN_VERSION
      b.set(f.nonce, 2)
      b.set(f.echo, 10)
      b.writeUInt32BE(f.maxStreams, 18)
      b.writeUInt32BE(f.maxData, 22)
      b.writeUInt32BE(f.streamWindow, 26)
      return b
    }
    case 'DATA':
      return encodeData(f.stream, f.offset, f.fin, f.data)
    case 'MAX_DATA': {
      const b = Buffer.alloc(13)
      b[0] = MAX_DATA
      b.writeUInt32BE(f.stream, 1)
      writeU64(b, f.max, 5)
      return b
    }
    case 'MAX_STREAMS': {
      const b = Buffer.alloc(5)
      b[0] = MAX_STREAMS
      b.writeUInt32BE(f.max, 1)
      return b
    }
    case 'RESET': {
      const b = Buffer.alloc(RESET_LEN)
      b[0] = RESET
      b.writeUInt32BE(f.stream, 1)
      b.writeUInt32BE(f.code, 5)
      b[9] = f.finished ? FLAG_FIN : 0
      writeU64(b, f.finalSize, 10)
      return b
    }
    case 'CLOSE': {
      const b = Buffer.alloc(5)
      b[0] = CLOSE
      b.writeUInt32BE(f.code, 1)
      return b
    }
    case 'MESSAGE': {
      const b = Buffer.allocUnsafe(1 + f.data.length)
      b[0] = MESSAGE
      b.set(f.data, 1)
      return b
    }
  }
}

/** Decodes one frame (the bytes after the tag); null when malformed. Payloads are views into `data`. */
export function decodeMux(data: Uint8Array): MuxFrame | null {
  if (data.length === 0) return null
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  switch (b[0]) {
    case HELLO: {
      if (b.length !== HELLO_LEN || b[1] !== CONN_VERSION) return null
      const nonce = Buffer.from(b.subarray(2, 10))
      if (nonce.every((x) => x === 0)) return null
      return { type: 'HELLO', nonce, echo: Buffer.from(b.subarray(10, 18)), maxStreams: b.readUInt32BE(18), maxData: b.readUInt32BE(22), streamWindow: b.readUInt32BE(26) }
    }
    case DATA: {
      if (b.length < DATA_HEADER) return null
      const stream = b.readUInt32BE(1)
      const offset = readU64(b, 5)
      const flags = b[13]
      const len = b.length - DATA_HEADER
      if (stream === 0 || offset < 0 || (flags & ~FLAG_FIN) !== 0 || offset + len > MAX_SAFE) return null
      return { type: 'DATA', stream, offset, fin: flags === FLAG_FIN, data: b.subarray(DATA_HEADER) }
    }
    case MAX_DATA: {
      if (b.length !== 13) return null
      const max = readU64(b, 5)
      return max < 0 ? null : { type: 'MAX_DATA', stream: b.readUInt32BE(1), max }
    }
    case MAX_STREAMS:
      return b.length === 5 ? { type: 'MAX_STREAMS', max: b.readUInt32BE(1) } : null
    case RESET: {
      if (b.length !== RESET_LEN || (b[9] & ~FLAG_FIN) !== 0) return null
      const stream = b.readUInt32BE(1)
      const finalSize = readU64(b, 10)
      return stream === 0 || finalSize < 0 ? null : { type: 'RESET', stream, code: b.readUInt32BE(5), finished: b[9] === FLAG_FIN, finalSize }
    }
    case CLOSE:
      return b.length === 5 ? { type: 'CLOSE', code: b.readUInt32BE(1) } : null
    case MESSAGE:
      return { type: 'MESSAGE', data: b.subarray(1) }
    default:
      return null
  }
}
