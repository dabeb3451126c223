/**
 * TcpTransport — framed TCP streams between peers, as a layer above the UDP transport
 * (docs/tcp.md).
 *
 * ```ts
 * const tcp = new TcpTransport({ port: 0 })
 * const node = await Node.create({ stack: [tcp] })          // UdpTransport added below it
 * tcp.on('frame', (peer, data, tag) => { ... })              // or take the onStream slot in a layer above
 * await tcp.sendStream(otherTcpAddress, data)                // an Address / "host:port", or a node id
 * ```
 *
 * The layer opens its own `node:net` server. It provides `openConnection(to)`, `sendStream(to,
 * data, tag = 0)`, `closeStream(to)`, `disconnect(to)`, `tcpAddress()` and emits
 * `onStream(from: TcpPeer, data, tag)` (each frame) and `onStreamClosed(peer: TcpPeer, reason)`.
 * A Node's application layer does not take those slots, so the layer is also an event source:
 * `tcp.on('frame', (peer, data, tag) => ...)`, `tcp.on('close', (peer, reason) => ...)`.
 * `to` is a node id (32-byte Buffer or 64 hex digits; needs a connection or a TCP address learned
 * from an earlier introduction) or the peer's TCP listening Address (`"host:port"`).
 *
 * ## Wire format (version 1)
 * A connection is a sequence of frames, each a 5-byte header and a body:
 *
 * | bytes | field                                                                 |
 * |-------|-----------------------------------------------------------------------|
 * | 0..4  | body length, u32 big-endian (data frames: at most `maxFrameSize`)     |
 * | 4     | type: 0x00..0xEF a data frame on that stream tag; 0xF0 HELLO; 0xF1 AUTH; 0xF2 GOAWAY; 0xF3 OBSERVED |
 * | 5..   | body                                                                  |
 *
 * The length is checked against the limit of its type BEFORE anything is allocated: a larger
 * header closes the connection (`dropped_oversized` for data frames, `dropped_malformed` for
 * control frames and unknown types). Reads go through `onread` into buffers the transport picks: a
 * body of at most 64 KiB that spans reads is read straight into its own buffer; a larger one is
 * gathered in pieces until half of it is here, then read into its own buffer. Memory never runs
 * ahead of the bytes received by more than 64 KiB + 5 per connection, or, for a larger body, by
 * more than what arrived of it (docs/tcp.md, "Receiving").
 *
 * HELLO (the first frame both sides send, at most 512 bytes):
 *
 * | bytes  | field                                                                   |
 * |--------|-------------------------------------------------------------------------|
 * | 0      | version = 1                                                             |
 * | 1      | flags: bit 0 = an AUTH frame follows (the sender can sign); bit 1 = the sender reads OBSERVED |
 * | 2..34  | node id (SHA-256 of the public identity)                                |
 * | 34..66 | nonce: 32 random bytes, fresh per connection                            |
 * | 66..84 | the sender's UDP address: 16 bytes IPv6 (IPv4-mapped) + port u16; zeros = unknown |
 * | 84..86 | the sender's TCP listening port u16 (0 = none)                          |
 * | 86..88 | public identity length n, u16 (0..256)                                   |
 * | 88..   | public identity (n bytes; its SHA-256 must equal the node id)           |
 *
 * AUTH (64 bytes): the sender's Ed25519 signature over
 * `"deccom-tcp-auth-v1" || receiver's nonce || sender's nonce || sender's id || receiver's id`,
 * sent after the peer's HELLO arrived. It proves the sender holds the key of the id it claims, on
 * this connection (fresh nonces: no replay). GOAWAY (empty): "this connection lost a duplicate
 * resolution; I send no more data on it" (see below). OBSERVED (18 bytes: 16 bytes IPv6 or
 * IPv4-mapped + port u16) is sent, once, in answer to a HELLO with flag bit 1: the address the
 * sender sees the connection come from. A second one, or one before HELLO, closes the connection
 * (`dropped_malformed`); port 0 or an unspecified IP is ignored (`dropped_bad_observation`).
 *
 * ## External address
 * Each OBSERVED becomes an observation once the connection is open (one per peer id, at most
 * `maxObservations`). `tcpMapping()` is the IP and the port behaviour (source port kept or
 * rewritten) that at least 2 distinct peers agree on; `externalTcpAddress()` is that IP with our
 * listening port when ports are kept. See docs/tcp.md.
 *
 * ## Introduction and authentication
 * A data frame before the peer's HELLO (and its announced AUTH) checked out closes the connection at
 * its header (`dropped_before_hello`); at most `maxPendingConnections` accepted connections wait for
 * their introduction, a newer one evicts the oldest (`pending_evicted`). See docs/tcp.md, "Before
 * the introduction".
 *
 * A connection is open once the peer's HELLO (and, if announced, its AUTH) arrived and checked out.
 * `TcpPeer.authenticated` is true when the signature verified. When a Noise layer is below in the
 * stack (the optional bindings `remoteId?` and `approveConnection?` resolve), the introduction must also agree with
 * Noise: the layer runs `approveConnection(peer's UDP address)` (a handshake if there is none) and
 * requires `remoteId(that address)` to equal the claimed id; otherwise the connection is refused
 * (`auth_failed`). `requireAuthentication` (default: true when Noise is below) refuses peers that
 * do not sign; without it, a name identity's id is accepted unauthenticated (`authenticated: false`).
 * The stream itself is neither encrypted nor integrity-protected: an active on-path attacker can
 * still tamper with it after the introduction. Protect the payloads (or use Noise over UDP) when
 * that matters.
 *
 * ## One connection per peer pair; duplicates
 * Connections are keyed by the peer's node id once open. If two connections to the same peer open
 * (both sides dialled at once), both sides keep the one initiated by the smaller node id (if the
 * same node initiated both: the one with the smaller initiator nonce) — a rule both sides evaluate
 * identically. The loser gets GOAWAY and a half-close: each side still reads it to the end, so no
 * frame already written is lost; frames queued for it move to the winner (their order across the
 * switch is not guaranteed), as do its references and waiters.
 *
 * ## References, idle close
 * `openConnection(to)` adds a reference (resolving with the {@link TcpPeer} once open);
 * `closeStream(to)` removes one. A connection without references (accepted ones start at 0, as do
 * connections opened implicitly by `sendStream`) closes after `idleTimeout` ms without frames.
 *
 * ## Backpressure
 * `sendStream` resolves when the frame has been handed to the socket (`socket.write`). When
 * `write()` reports a full socket buffer, later frames wait in a per-connection queue until
 * 'drain'; beyond `maxQueuedFrames` / `maxQueuedBytes` they are rejected with
 * ERR_DECCOM_TCP_QUEUE_FULL. Like `socket.write`, the socket may read `data` after the promise
 * resolved: do not modify it. On the receiving side, `pauseStream(peer)`/`resumeStream(peer)`
 * stop and restart reading (TCP flow control then slows the sender).
 */
export { TcpTransport } from './transport'
export { TCP_HEADER_SIZE, TCP_MAX_TAG } from './codec'
export type { TcpTransportOptions, TcpPeer, TcpTarget, TcpCloseReason, TcpMapping, TcpObservation } from './connection'
