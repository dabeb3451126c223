/**
 * DHT: an answer (REPLY, ACK, NOTIFY) or a stored ANNOUNCE read in place. `native.dhtParse`
 * decodes it and checks its records (as `dhtDecode` does) into a table of offsets; the fields here
 * are views of the datagram made when read. A view is valid while the datagram is: what outlives
 * the handling of the datagram is copied (tokens, peers, values).
 */
import { native } from '../../native'

/** Words before the records in the parse table (see `dhtParse`). */
const HEAD = 19
/** A REPLY's node rows start here, each an id and a raw address. */
const NODES_AT = 81
const ROW = 50

/** Topic records one parse holds (a 1400-byte reply carries about 10); beyond: counted as failed. */
const MAX_RECORDS = 128

/** The parse table and ids of the last parse (copied out by each Answer: parsing is synchronous). */
const TABLE = new Uint32Array(HEAD + 2 * MAX_RECORDS)
const IDS = Buffer.allocUnsafeSlow(32 * MAX_RECORDS)
const NO_IDS = Buffer.alloc(0)

/** A parsed DHT answer (see the module docs); `kind` 0 when it did not parse. */
export class Answer {
  /** 2 REPLY, 3 ANNOUNCE, 6 ACK, 7 NOTIFY; 0 malformed (or another type). */
  readonly kind: number
  /** The table (see `dhtParse`): 19 words, then the records' offsets. */
  readonly #w: number[]
  /** The topic records' node ids, 32 bytes each (a buffer of this answer's). */
  readonly peerIds: Buffer

  constructor(
    /** The datagram (without the tag). */
    readonly data: Buffer,
  ) {
    this.kind = native.dhtParse(data, TABLE, IDS)
    const n = this.kind === 0 ? 0 : TABLE[7]!
    this.#w = Array.from(TABLE.subarray(0, HEAD + 2 * n))
    this.peerIds = n === 0 ? NO_IDS : Buffer.from(IDS.subarray(0, 32 * n))
  }

  get requestHi(): number {
    return this.#w[1]!
  }

  get requestLo(): number {
    return this.#w[2]!
  }

  get truncated(): boolean {
    return this.#w[3] === 1
  }

  /** 1 topic, 2 immutable, 3 mutable. */
  get recordKind(): number {
    return this.#w[4]!
  }

  /** Records the answering node stores for the key. */
  get total(): number {
    return this.#w[5]!
  }

  /** Verified topic records. */
  get peerCount(): number {
    return this.#w[7]!
  }

  /** Records that failed their checks (left out). */
  get badRecords(): number {
    return this.#w[8]!
  }

  /** An ACK's status. */
  get status(): number {
    return this.#w[9]!
  }

  /** A REPLY's key, a NOTIFY's or ANNOUNCE's topic. */
  get key(): Buffer {
    return this.data.subarray(this.#w[18]!, this.#w[18]! + 32)
  }

  /** A REPLY's token for our address (a view: copy it to keep it). */
  get token(): Buffer {
    return this.data.subarray(44, 60)
  }

  /** Our address as the answering node saw it, raw (a view: copy it to keep it). */
  get observed(): Buffer {
    return this.data.subarray(60, 78)
  }

  /** Nodes a REPLY lists. */
  get nodeCount(): number {
    return this.#w[6]!
  }

  /** Where node `i`'s row (id, then raw address) starts in {@link data}. */
  nodeAt(i: number): number {
    return NODES_AT + ROW * i
  }

  /** Topic record `i`'s encoded identity (33 bytes, a view). */
  peerIdentity(i: number): Buffer {
    const at = this.#w[HEAD + 2 * i]!
    return this.data.subarray(at, at + 33)
  }

  /** Topic record `i`'s raw address (18 bytes, a view). */
  peerAddr(i: number): Buffer {
    const at = this.#w[HEAD + 2 * i + 1]!
    return this.data.subarray(at, at + 18)
  }

  /** The value (immutable or mutable; a view), or null. */
  get value(): Buffer | null {
    return this.#w[10] === 0 ? null : this.data.subarray(this.#w[10]!, this.#w[10]! + this.#w[11]!)
  }

  /** A mutable record's seq (topic records: the last one's), or null without a value. */
  get seq(): number | null {
    return this.#w[10] === 0 && this.#w[7] === 0 ? null : this.#w[12]! * 0x1_0000_0000 + this.#w[13]!
  }

  /** A mutable record's signature (a view), or null. */
  get signature(): Buffer | null {
    return this.#w[14] === 0 ? null : this.data.subarray(this.#w[14]!, this.#w[14]! + 64)
  }

  /** Why it did not parse (`truncated`, `version`, ...), from the full decoder; null when it did. */
  get error(): string | null {
    return this.kind === 0 ? (native.dhtDecode(this.data).error ?? 'type') : null
  }
}
