/** Noise: the layer's options, error codes and tag, and the endpoint configuration built from them. */
import type * as Binding from '../../../native/index'

/** Tag of Noise datagrams on the wire. */
export const TAG_NOISE = 4

/** Error codes specific to the Noise layer (values are stable). */
export const NoiseErrorCode = Object.freeze({
  /** No answer to the handshake in time. */
  HANDSHAKE_TIMEOUT: 'ERR_DECCOM_NOISE_HANDSHAKE_TIMEOUT',
  /** The peer's handshake failed a check (decrypt, identity binding, id mismatch, signature). */
  HANDSHAKE_DECRYPT: 'ERR_DECCOM_NOISE_HANDSHAKE_DECRYPT',
  /** A handshake message does not parse. */
  HANDSHAKE_MALFORMED: 'ERR_DECCOM_NOISE_HANDSHAKE_MALFORMED',
  /** The peer presented a name identity, which cannot be authenticated. */
  HANDSHAKE_NAME_IDENTITY: 'ERR_DECCOM_NOISE_HANDSHAKE_NAME_IDENTITY',
  /** The peer authenticated another node id than the one dialled. */
  HANDSHAKE_ID_MISMATCH: 'ERR_DECCOM_NOISE_HANDSHAKE_ID_MISMATCH',
  /** The signature binding the peer's static key to its identity does not verify. */
  HANDSHAKE_BAD_SIGNATURE: 'ERR_DECCOM_NOISE_HANDSHAKE_BAD_SIGNATURE',
  /** Too many messages wait for a handshake with this peer. */
  QUEUE_FULL: 'ERR_DECCOM_NOISE_QUEUE_FULL',
  /** The node identity is a name identity, which cannot bind a Noise static key. */
  NAME_IDENTITY: 'ERR_DECCOM_NOISE_NAME_IDENTITY',
  /** A Noise option is out of range. */
  CONFIG: 'ERR_DECCOM_NOISE_CONFIG',
} as const)

/** How {@link Noise} protects messages: encrypted (AEAD), signed per message, or not at all. */
export type NoiseMode = 'plaintext' | 'sign' | 'encrypt'

/** Options of {@link Noise}. */
export interface NoiseOptions {
  /** `'encrypt'` (default): AEAD; `'sign'`: Ed25519 signature per message; `'plaintext'`. */
  mode?: NoiseMode
  /**
   * Drop data of any other mode and datagrams that bypass Noise (and, in plaintext mode, handshakes)
   * instead of accepting them. Default true in `'encrypt'` and `'sign'` mode (unauthenticated data
   * would reach the layers above, whose replies start handshakes toward an unvalidated address),
   * false in `'plaintext'` mode.
   */
  strict?: boolean
  /** First handshake retransmission timeout in ms, doubled on each retry (default 200). */
  handshakeTimeout?: number
  /** Handshake retransmissions before the handshake fails (default 5: 12.6 s with 200 ms). */
  handshakeRetries?: number
  /** Longest wait of a queued message or an approval for a handshake, ms (default 15,000). */
  handshakeDeadline?: number
  /**
   * Run inside the socket's I/O thread when ReliableUdp sits directly above and a UdpTransport
   * directly below (encrypt mode only; default true). See "Native mode" in the module docs.
   */
  native?: boolean
  /** Rekey after this many messages (default 2^32) or this many ms (default 120,000). */
  rekeyAfterMessages?: number
  /** See `rekeyAfterMessages`: rekey after this many ms (default 120,000). */
  rekeyAfterTime?: number
  /** Discard sessions older than this, ms (default 360,000). */
  rejectAfterTime?: number
  /** Replay window in bits (default 2048). */
  replayWindowBits?: number
  /** Most peers with Noise state (default 1024). */
  maxSessions?: number
  /** Half-open handshakes kept (default 256); from `cookieThreshold` (128) on, initiators must echo a cookie. */
  maxHalfOpen?: number
  /** Half-open handshakes from which initiators must echo a cookie (default 128). */
  cookieThreshold?: number
  /** Initiations per second per source (default 10, burst 10) and in total before cookies (500). */
  rateLimitPerPeer?: number
  /** Burst of the per-source initiation limit (default 10). */
  rateLimitBurst?: number
  /** Initiations per second in total before cookies are required (default 500). */
  rateLimitGlobal?: number
  /** Verified identity bindings remembered, so a peer met again (rekey, reconnection) costs no Ed25519 verification (default 1024; 0: off). */
  verifiedBindings?: number
  /**
   * Prefer AES-256-GCM for the transport messages of sessions (default: when this CPU has AES
   * instructions). The handshake offers it; a session uses AES-256-GCM only when both sides
   * prefer it, else ChaCha20-Poly1305. `stats().sessions_aes_gcm` counts the sessions that use it.
   */
  aesGcm?: boolean
  /** Largest message in bytes (default 256 MiB). Larger messages are split into frames. */
  maxMessageSize?: number
  /** Largest frame (one Noise message's plaintext), bytes (default 60,000; at most 65,519). */
  maxFrameSize?: number
  /** Messages waiting for a handshake per peer (default 256). */
  maxQueuedPerPeer?: number
  /** Bytes of partial messages kept per peer (default 320 MiB) and in total (default 1 GiB). */
  maxReassemblyPerPeer?: number
  /** Bytes of partial messages kept in total (default 1 GiB). */
  maxReassemblyTotal?: number
  /** A partial message without progress for this long is dropped, ms (default 30,000). */
  reassemblyTimeout?: number
  /** Sign-mode epoch; must grow across restarts (default: Unix time in ms at start). */
  signEpoch?: number
  /** 32 bytes seeding the endpoint's randomness (default: from the OS). Tests only. */
  seed?: Uint8Array
}

/** The native endpoint's configuration for the JavaScript-driven layer (every option it reads). */
export function endpointConfig(o: NoiseOptions, mode: NoiseMode): Binding.NoiseEndpointOptions {
  return {
    ...stageConfig(o),
    mode,
    signEpoch: o.signEpoch,
    seed: o.seed ? Buffer.from(o.seed) : undefined,
    maxFrameSize: o.maxFrameSize,
    maxMessageSize: o.maxMessageSize,
    maxReassemblyPerPeer: o.maxReassemblyPerPeer,
    maxReassemblyTotal: o.maxReassemblyTotal,
    reassemblyTimeout: o.reassemblyTimeout,
  }
}

/** The socket thread's Noise stage configuration (encrypt mode; the stage frames whole datagrams). */
export function stageConfig(o: NoiseOptions): Binding.NoiseEndpointOptions {
  return {
    mode: 'encrypt',
    strict: o.strict,
    handshakeTimeout: o.handshakeTimeout,
    handshakeRetries: o.handshakeRetries,
    rekeyAfterMessages: o.rekeyAfterMessages,
    rekeyAfterTime: o.rekeyAfterTime,
    rejectAfterTime: o.rejectAfterTime,
    replayWindowBits: o.replayWindowBits,
    maxSessions: o.maxSessions,
    maxHalfOpen: o.maxHalfOpen,
    cookieThreshold: o.cookieThreshold,
    rateLimitPerPeer: o.rateLimitPerPeer,
    rateLimitBurst: o.rateLimitBurst,
    rateLimitGlobal: o.rateLimitGlobal,
    verifiedBindings: o.verifiedBindings,
    aesGcm: o.aesGcm,
  }
}
