/**
 * Typed errors for deccom.
 *
 * Every error deccom throws on purpose is a {@link DeccomError} with a stable `code` string
 * (`ERR_DECCOM_...`, see {@link ErrorCode}) and a message a person can act on.
 * Code should branch on `err.code`, never on the message text.
 */

/**
 * The table of stable error codes. Values never change once released; new codes may be added.
 * Each value is `'ERR_DECCOM_' + key`.
 */
export const ErrorCode = Object.freeze({
  // --- stack building and lifecycle (ts/stack.ts) ---
  /** A `bindTo`/`bindFrom` name is not provided/emitted by any layer below. */
  BINDING_MISSING: 'ERR_DECCOM_BINDING_MISSING',
  /** A `bindFrom` slot already has a consumer (a slot has exactly one). */
  BINDING_TAKEN: 'ERR_DECCOM_BINDING_TAKEN',
  /** A `requires` name does not exist below the layer. */
  REQUIREMENT_MISSING: 'ERR_DECCOM_REQUIREMENT_MISSING',
  /** Two layers of one stack use the same tag. */
  TAG_CONFLICT: 'ERR_DECCOM_TAG_CONFLICT',
  /** The stack is malformed (empty, a layer used twice, a bad tag, a declared method missing...). */
  STACK_INVALID: 'ERR_DECCOM_STACK_INVALID',
  /** An operation in the wrong lifecycle state (build/start twice, use before build or after stop). */
  STACK_STATE: 'ERR_DECCOM_STACK_STATE',
  // --- native core, transports, identity, records ---
  /** No native binary loads for this platform (no local build, platform package or prebuilds/ entry). */
  NATIVE_MISSING: 'ERR_DECCOM_NATIVE_MISSING',
  /** The UDP or TCP port to bind is taken. */
  ADDRESS_IN_USE: 'ERR_DECCOM_ADDRESS_IN_USE',
  /** A datagram is larger than the transport sends in one piece. */
  DATAGRAM_TOO_LARGE: 'ERR_DECCOM_DATAGRAM_TOO_LARGE',
  /** An address does not parse (host, port or family), or cannot be sent to. */
  INVALID_ADDRESS: 'ERR_DECCOM_INVALID_ADDRESS',
  /** A transport ping got no answer in time. */
  PING_TIMEOUT: 'ERR_DECCOM_PING_TIMEOUT',
  /** The node, layer or socket is closed (or closed while the call was in progress). */
  CLOSED: 'ERR_DECCOM_CLOSED',
  /** The call's AbortSignal fired; `cause` is the signal's reason. */
  ABORTED: 'ERR_DECCOM_ABORTED',
  /** A key or seed has the wrong length or form. */
  BAD_KEY: 'ERR_DECCOM_BAD_KEY',
  /** An identity is malformed (e.g. an empty name, or one longer than 255 bytes). */
  BAD_IDENTITY: 'ERR_DECCOM_BAD_IDENTITY',
  /** The operating system's random generator failed. */
  RNG: 'ERR_DECCOM_RNG',
  /** A signature has the wrong length or form. */
  BAD_SIGNATURE: 'ERR_DECCOM_BAD_SIGNATURE',
  /** The identity has no secret key (a public or name identity) for signing or saving. */
  NO_SECRET_KEY: 'ERR_DECCOM_NO_SECRET_KEY',
  /** A key file cannot be read, written or parsed. */
  KEY_FILE: 'ERR_DECCOM_KEY_FILE',
  /** A peer record ends early. */
  RECORD_TRUNCATED: 'ERR_DECCOM_RECORD_TRUNCATED',
  /** A peer record has an unknown version. */
  RECORD_VERSION: 'ERR_DECCOM_RECORD_VERSION',
  /** A peer record has bad flag bits, identity kind or address family. */
  RECORD_MALFORMED: 'ERR_DECCOM_RECORD_MALFORMED',
  /** A peer record's id is not the hash of its identity. */
  RECORD_ID_MISMATCH: 'ERR_DECCOM_RECORD_ID_MISMATCH',
  /** A peer record's identity is longer than 256 bytes. */
  RECORD_TOO_LARGE: 'ERR_DECCOM_RECORD_TOO_LARGE',
  /** An operating system socket error other than a taken port. */
  SOCKET: 'ERR_DECCOM_SOCKET',
  /** An argument or option is out of range or of the wrong type. */
  INVALID_ARGUMENT: 'ERR_DECCOM_INVALID_ARGUMENT',
  /** The peer stopped answering (acknowledgements or session) while a message was in progress. */
  PEER_UNREACHABLE: 'ERR_DECCOM_PEER_UNREACHABLE',
  /**
   * A dial to a node id reached someone else: the session at the peer's address authenticated
   * another identity (or none could be verified). Nothing was sent to that node.
   */
  PEER_IDENTITY_MISMATCH: 'ERR_DECCOM_PEER_IDENTITY_MISMATCH',
  /** A message is larger than the layer's maximum message size. */
  MESSAGE_TOO_LARGE: 'ERR_DECCOM_MESSAGE_TOO_LARGE',
  /** Too much waits to be sent (or too many sessions are open); retry later. */
  SEND_QUEUE_FULL: 'ERR_DECCOM_SEND_QUEUE_FULL',
  /** The receiver refused the message (over its limits, or it had no reassembly memory for it in time). */
  MESSAGE_REFUSED: 'ERR_DECCOM_MESSAGE_REFUSED',
  /** No room for another peer (every peer slot is in use); retry later. */
  PEER_TABLE_FULL: 'ERR_DECCOM_PEER_TABLE_FULL',
  // --- TcpTransport (ts/protocols/tcp.ts) ---
  /** Too many frames or bytes wait for a blocked TCP connection (a slow reader); wait and retry. */
  TCP_QUEUE_FULL: 'ERR_DECCOM_TCP_QUEUE_FULL',
  /** A frame is larger than the TcpTransport's maxFrameSize. */
  TCP_FRAME_TOO_LARGE: 'ERR_DECCOM_TCP_FRAME_TOO_LARGE',
  /** The TCP connection could not be established (refused, unreachable, handshake timeout). */
  TCP_CONNECT_FAILED: 'ERR_DECCOM_TCP_CONNECT_FAILED',
  /** The peer's introduction failed authentication (signature, Noise id mismatch, own id). */
  TCP_AUTH_FAILED: 'ERR_DECCOM_TCP_AUTH_FAILED',
  /** No connection to this node id and no known TCP address for it. */
  TCP_UNKNOWN_PEER: 'ERR_DECCOM_TCP_UNKNOWN_PEER',
  /** The TCP connection closed before queued frames could be written. */
  TCP_CONNECTION_CLOSED: 'ERR_DECCOM_TCP_CONNECTION_CLOSED',
  // --- NAT traversal (ts/protocols/hole-puncher.ts, relay.ts) ---
  /** No punched (or relayed) path to the peer opened within the HolePuncher's punchTimeout. */
  PUNCH_TIMEOUT: 'ERR_DECCOM_PUNCH_TIMEOUT',
  /** The introducer has not heard from the target recently (or it is ourselves). */
  INTRODUCTION_FAILED: 'ERR_DECCOM_INTRODUCTION_FAILED',
  /** The relay refused a session (not a relay, or it serves its maximum of sessions). */
  RELAY_REFUSED: 'ERR_DECCOM_RELAY_REFUSED',
  /** The relay did not answer, or the peer never got a session on it, in time. */
  RELAY_TIMEOUT: 'ERR_DECCOM_RELAY_TIMEOUT',
  // --- TCP hole punching (ts/protocols/tcp-hole-puncher.ts) ---
  /** No TCP connection (punched or direct) to the peer opened within the TcpHolePuncher's punchTimeout. */
  TCP_PUNCH_TIMEOUT: 'ERR_DECCOM_TCP_PUNCH_TIMEOUT',
  // --- connections and streams (ts/connection/) ---
  /** `node.ready()` gave up: a layer could not join (no bootstrap node answered), or the timeout passed. */
  NOT_READY: 'ERR_DECCOM_NOT_READY',
  /** The connection closed (locally, by the peer, or because its transport failed); `details.code` is the CLOSE code. */
  CONNECTION_CLOSED: 'ERR_DECCOM_CONNECTION_CLOSED',
  /** No connection could be made: the peer did not answer HELLO in time on any path tried. */
  CONNECT_FAILED: 'ERR_DECCOM_CONNECT_FAILED',
  /** The peer refused the connection (it holds its maximum of connections or of buffer memory). */
  CONNECTION_REFUSED: 'ERR_DECCOM_CONNECTION_REFUSED',
  /** A stream was reset by either side; `details.code` is the reset code, `details.by` 'local' or 'remote'. */
  STREAM_RESET: 'ERR_DECCOM_STREAM_RESET',
  /** The peer broke the connection protocol (sent past its flow-control credit, opened too many streams). */
  PROTOCOL_VIOLATION: 'ERR_DECCOM_PROTOCOL_VIOLATION',
  /** A router refused a port mapping (UPnP-IGD, NAT-PMP, PCP) or answered nonsense; `details.protocol`, `details.reason`. */
  PORT_MAPPING_FAILED: 'ERR_DECCOM_PORT_MAPPING_FAILED',
  /** No router answered a port-mapping request in time; `details.protocol`. */
  PORT_MAPPING_TIMEOUT: 'ERR_DECCOM_PORT_MAPPING_TIMEOUT',
  /** DHT (ts/protocols/dht): no node stored the value (`details.refused` counts the reasons). */
  DHT_PUT_FAILED: 'ERR_DECCOM_DHT_PUT_FAILED',
  /** DHT: a compare-and-swap put was refused: the stored seq is not the one given. */
  DHT_CAS_MISMATCH: 'ERR_DECCOM_DHT_CAS_MISMATCH',
} as const)

/** Any value of {@link ErrorCode}. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode]

/** Options of {@link DeccomError}. */
export interface DeccomErrorOptions {
  /** The underlying error (e.g. the original native error), exposed as `err.cause`. */
  cause?: unknown
  /** Machine-readable context (addresses, sizes, layer names...). */
  details?: Record<string, unknown>
}

/** Base class of every error deccom throws on purpose. */
export class DeccomError extends Error {
  /** Stable code, `ERR_DECCOM_...` (see {@link ErrorCode}). Branch on this, not on the message. */
  readonly code: string
  /** Optional machine-readable context; absent (not even an own property) when not given. */
  declare readonly details?: Record<string, unknown>

  /**
   * @param code a stable code, normally a value of {@link ErrorCode}
   * @param message what went wrong and, where possible, what to do about it
   */
  constructor(code: string, message: string, options?: DeccomErrorOptions) {
    super(message, options && 'cause' in options ? { cause: options.cause } : undefined)
    this.code = code
    if (options?.details !== undefined) (this as { details?: Record<string, unknown> }).details = options.details
  }
}
// On the prototype (not a field) so that `err.stack`, captured inside super(), already shows the name.
DeccomError.prototype.name = 'DeccomError'

/** Options of {@link StackError}. */
export interface StackErrorOptions extends DeccomErrorOptions {
  /** Name of the layer at fault ('' when the error is about the stack as a whole). */
  layer: string
  /** The binding/requirement name involved ('' when none). */
  binding?: string
  /** Names of the layers searched, nearest first. */
  searched?: string[]
}

/**
 * An invalid stack, found by {@link Stack.build}. `code` is one of BINDING_MISSING, BINDING_TAKEN,
 * REQUIREMENT_MISSING, TAG_CONFLICT, STACK_INVALID.
 */
export class StackError extends DeccomError {
  /** Name of the layer at fault, e.g. `'kademlia'` ('' when about the stack as a whole). */
  readonly layer: string
  /** The binding or requirement name involved, e.g. `'sendDatagram'` ('' when none). */
  readonly binding: string
  /** Names of the layers that were searched for the binding, nearest first (empty when none). */
  readonly searched: string[]

  constructor(code: string, message: string, options: StackErrorOptions) {
    super(code, message, options)
    this.layer = options.layer
    this.binding = options.binding ?? ''
    this.searched = options.searched ?? []
  }
}
StackError.prototype.name = 'StackError'

const NATIVE_MESSAGE = /^(ERR_DECCOM_[A-Z0-9_]+):\s*([\s\S]*)$/

/**
 * Convert an error thrown by the native (Rust) side into a {@link DeccomError}.
 *
 * Recognised: an object whose `code` is already `ERR_DECCOM_...`, or whose `message` starts with
 * `ERR_DECCOM_SOMETHING: human message`. The result has that code, the human message (without
 * the code prefix) and `cause` = the original error. A `DeccomError` and every other value are
 * returned unchanged, so `throw fromNative(err)` is always safe in a catch block.
 */
export function fromNative(err: unknown): unknown {
  if (err instanceof DeccomError || typeof err !== 'object' || err === null) return err
  const { code, message } = err as { code?: unknown; message?: unknown }
  const text = typeof message === 'string' ? message : ''
  const parsed = NATIVE_MESSAGE.exec(text)
  if (typeof code === 'string' && code.startsWith('ERR_DECCOM_')) {
    // Strip a redundant "CODE: " prefix if the message repeats the code.
    const human = parsed && parsed[1] === code ? parsed[2] : text
    return new DeccomError(code, human, { cause: err })
  }
  if (parsed) return new DeccomError(parsed[1], parsed[2], { cause: err })
  return err
}

/** The error an operation rejects with when its AbortSignal fires (`cause`: the signal's reason). */
export function abortError(signal: AbortSignal): DeccomError {
  return new DeccomError(ErrorCode.ABORTED, 'The operation was aborted', { cause: signal.reason })
}
