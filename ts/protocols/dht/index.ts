/**
 * Dht — topics (meet the peers that share an interest) and values (immutable, and signed mutable)
 * stored at the nodes closest to a key; above Kademlia, whose routing table it uses. Protocol:
 * docs/dht.md; wire format: docs/wire.md#dht-tag-13.
 *
 * ```ts
 * const node = await Node.create({ stack: [new Dht(), new Kademlia({ bootstrap: ['10.0.0.1:4000'] })] })
 * const t = node.join(topic)            // or dht.join(topic)
 * t.on('peer', (peer) => console.log(peer.address.key))
 * const { key } = await node.dht.put(Buffer.from('hello'))
 * ```
 *
 * ## Bindings
 * - bindTo `send` (the layer below Kademlia: Noise, ReliableUdp or the transport) and `closestRows`
 *   (Kademlia's routing table: the seeds of every query and the nodes a GET's reply names).
 * - bindFrom `onMessage`: datagrams of tag {@link TAG_DHT} are the DHT's; every other one is passed
 *   up unchanged.
 *
 * ## The parts
 * The answering side (decode, tokens, rate limits, signature checks, the bounded store, NOTIFY) is
 * one native call per datagram (`DhtServer`, `deccom-core::dht`); the iterative query reuses the
 * native Kademlia lookup state machine (`core.ts`); answers are read in place (`answer.ts`);
 * `topic.ts` joins topics, `values.ts` puts and gets values. On a plain [Dht, Kademlia,
 * UdpTransport] stack the socket answers GETs itself (`attachNativeResponder`, docs/dht.md).
 */
export { Dht } from './layer'
export { Topic } from './topic'
export type { JoinOptions, TopicEvents } from './topic'
export { TAG_DHT, MAX_VALUE } from './core'
export type { DhtOptions } from './core'
export { mutableKey } from './values'
export type { PutResult, PutMutableOptions, PutMutableResult, GetMutableOptions, MutableValue } from './values'
