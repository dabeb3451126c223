/**
 * Transport ping/pong, shared by every datagram transport (UdpTransport, SimTransport), so that
 * they speak the same wire format and behave the same way.
 *
 * | bytes after the transport tag | ping               | pong                  |
 * |-------------------------------|--------------------|-----------------------|
 * | 0                             | 0x01 (PING)        | 0x02 (PONG)           |
 * | 1..5                          | request id, u32 BE | the ping's id, echoed |
 *
 * A pong is exactly as large as its ping (no amplification), and one source prefix (IPv4 /24, IPv6
 * /48) gets at most REPLY_RATE pongs per second (burst REPLY_BURST; `dropped_reply_rate`); a pong is accepted only from the
 * address the ping went to. Other control datagrams are dropped and counted.
 * Byte layout and test vectors: docs/wire.md#udp-transport-ping-tag-1 (codec: ts/wire/ping.ts).
 */
import type { Address } from '../address'
import type { Clock, TimerHandle } from '../clock'
import { DeccomError, ErrorCode } from '../errors'
import { PING_LEN, decodePing, encodePing } from '../wire/ping'
import { ReplyLimiter } from './reply-limit'

/** Length of a control datagram after the transport tag. */
export const PING_BODY_LEN = PING_LEN
const MAX_PINGS = 4096

/** Options of a transport ping (`node.ping`, `UdpTransport.ping`). */
export interface PingOptions {
  /** Milliseconds before the ping rejects with ERR_DECCOM_PING_TIMEOUT (default 2000). */
  timeout?: number
  /** Aborting it rejects the ping with ERR_DECCOM_ABORTED. */
  signal?: AbortSignal
}

interface Pending {
  to: Address
  t0: number
  timer: TimerHandle
  resolve: (rtt: number) => void
  reject: (e: Error) => void
  onAbort?: () => void
  signal?: AbortSignal
}

/** The outstanding pings of one transport. */
export class Pinger {
  readonly #pending = new Map<number, Pending>()
  readonly #replies = new ReplyLimiter()
  #nextId: number

  /**
   * @param clock   time and timers (real or virtual)
   * @param count   the transport's counter function
   * @param sendControl sends a control body (PING_BODY_LEN bytes) to an address with the transport's tag; may throw
   */
  constructor(
    private readonly clock: () => Clock,
    private readonly count: (name: string) => void,
    private readonly sendControl: (to: Address, body: Buffer) => void,
    firstId: number,
  ) {
    this.#nextId = firstId >>> 0
  }

  /** Round-trip time in ms to `to`; see PingOptions. */
  ping(to: Address, opts: PingOptions = {}): Promise<number> {
    const { timeout = 2000, signal } = opts
    return new Promise<number>((resolve, reject) => {
      if (signal?.aborted) return reject(aborted(signal))
      if (this.#pending.size >= MAX_PINGS) {
        return reject(new DeccomError(ErrorCode.INVALID_ARGUMENT, `More than ${MAX_PINGS} pings outstanding; wait for some to finish`))
      }
      let id = this.#nextId
      while (this.#pending.has(id)) id = (id + 1) >>> 0
      this.#nextId = (id + 1) >>> 0
      try {
        this.sendControl(to, encodePing({ type: 'PING', id }))
      } catch (e) {
        return reject(e)
      }
      const clock = this.clock()
      const p: Pending = {
        to,
        t0: clock.now(),
        resolve,
        reject,
        timer: clock.setTimeout(() => {
          this.#settle(id)
          this.count('ping_timeouts')
          reject(new DeccomError(ErrorCode.PING_TIMEOUT, `No pong from ${to.key} within ${timeout} ms`, { details: { to: to.key, timeout } }))
        }, timeout),
      }
      if (signal) {
        p.signal = signal
        p.onAbort = () => {
          this.#settle(id)
          reject(aborted(signal))
        }
        signal.addEventListener('abort', p.onAbort, { once: true })
      }
      this.#pending.set(id, p)
      this.count('pings_sent')
    })
  }

  /** A control datagram (the bytes after the transport tag) from `from`: answers pings, settles pongs. */
  onControl(from: Address, body: Uint8Array): void {
    const m = decodePing(body)
    if (m === null) return this.count('dropped_malformed')
    if (m.type === 'PING') {
      if (!this.#replies.allow(from, this.clock().now())) return this.count('dropped_reply_rate')
      this.count('pings_answered')
      this.sendControl(from, encodePing({ type: 'PONG', id: m.id }))
    } else {
      const id = m.id
      const p = this.#pending.get(id)
      if (!p || p.to.key !== from.key) return this.count('dropped_unexpected_pong')
      this.#settle(id)
      p.resolve(this.clock().now() - p.t0)
    }
  }

  /** Rejects every outstanding ping with `error` (on stop). */
  rejectAll(error: () => Error): void {
    for (const id of [...this.#pending.keys()]) this.#settle(id)!.reject(error())
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id)
    if (!p) return undefined
    this.#pending.delete(id)
    this.clock().clearTimeout(p.timer)
    if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort)
    return p
  }
}

function aborted(signal: AbortSignal): DeccomError {
  return new DeccomError(ErrorCode.ABORTED, 'The operation was aborted', { cause: signal.reason })
}
