/**
 * Kademlia — peer discovery over the XOR metric (docs/discovery.md; wire format: docs/wire.md#kademlia-tag-3).
 *
 * ```ts
 * const node = await Node.create({ stack: [new Kademlia({ bootstrap: ['10.0.0.1:4000'] })] })
 * const peer = await node.findPeer(idHex, { timeout: 5000, signal })
 * ```
 *
 * The routing table (256 k-buckets, least-recently-seen order, "ping the oldest before evicting",
 * replacement caches), the iterative lookup (α parallel queries, converging on the k closest, its
 * candidates the peer records read out of the answers), the answers to PING and FIND_NODE with the
 * per-address state they read (addresses verified each way, request budgets, the reply rate), and
 * the wire codec are Rust (`deccom-core::kad`, driven through `KadTable`/`KadLookup`). This layer
 * owns the datagrams, the timers (always `ctx.clock`, so it runs in virtual time), the requests
 * and their matching, admission into the table, and the API.
 *
 * ## Bindings
 * - bindTo `send`, `localAddress`, and optionally `externalAddress` (a HolePuncher below provides it):
 *   our own record, sent in every FIND_NODE and NODES, carries the external (NAT-mapped) address
 *   that layer learned (agreed by 2 observers), so that a node behind a NAT is advertised where
 *   others can reach or punch it. Records of other peers keep the external address they announced,
 *   and found peers carry it as `Peer.external`. Without such a layer, records carry none.
 * - bindFrom `onMessage`: datagrams with tag {@link TAG_KAD} are
 *   Kademlia's; every other datagram is passed up unchanged (emits `onMessage`) — and counts as a
 *   sign of life of the table entry at that address.
 * - provides `findPeer`, `getPeer`, `peers`, `closest`, `lookup`.
 * - emits `onConnected(peer)` when a peer enters the routing table and `onDisconnected(peer)` when
 *   it leaves it. The node's application layer does not take these slots, so by default they are
 *   no-ops counted as `dropped_no_consumer`; a layer above may bindFrom them. The same events are
 *   also available on the layer itself: `kad.on('connected' | 'disconnected', (peer) => ...)`.
 *
 * ## Connection approval
 * Before a new peer enters the table (or its replacement cache), the layer asks the nearest layer
 * *below* it that provides `approveConnection(peer): boolean | Promise<boolean>` (e.g. Noise,
 * which authenticates the peer), through the optional binding `approveConnection?`; without such
 * a layer every verified peer is approved. Rejections are counted (`rejected_by_approval`).
 *
 * ## Verification and amplification (see `deccom-core/src/kad/wire.rs` for the wire format)
 * - Responses (PONG, NODES) are accepted only when they answer a request we sent: same 64-bit
 *   random request id, same type, from the address we sent to (`dropped_unsolicited` otherwise);
 *   a NODES from another node than the one queried is dropped (`dropped_wrong_sender`).
 * - A peer enters the table only with a verified address: it answered one of our requests. An
 *   unknown peer that queries us is answered, then pinged; it is considered when the PONG arrives.
 *   Peers named in NODES answers are only lookup candidates until they answer a query themselves.
 * - A response to an unverified address is never larger than its request: NODES is cut to the
 *   FIND_NODE's size (flag "truncated"), or not sent (`dropped_amplification`). On first contact
 *   with a peer (one whose requests we never answered) FIND_NODE is padded to `padTo` bytes (default
 *   1200) so that the answer can still carry about k records.
 *
 * ## Lifecycle
 * On start: self-lookup through the bootstrap peers (retried `bootstrapRetries` times with
 * exponential backoff while none answers), then a refresh of every bucket from the closest
 * non-empty one up that is not yet full. Every `refreshInterval` ms: a self-lookup (so that the
 * neighbourhood stays current as the network grows), then a lookup of a random id in the range of
 * every bucket without activity for that long. A table entry that fails `maxFailures` queries in a
 * row is removed (a replacement takes its place). All timers are cleared on stop and pending
 * `findPeer` calls reject with ERR_DECCOM_CLOSED.
 */
export { Kademlia } from './layer'
export { DiscoveryErrorCode, TAG_KAD, toId } from './state'
export type { FindPeerOptions, KademliaOptions, LookupOptions, LookupResult } from './state'
