/**
 * deccom — decentralised communication: compose a peer-to-peer application from small protocol
 * layers (bindTo: calls going down, bindFrom: events going up) on a native Rust core.
 */
export { Address, toAddress } from './address'
export type { AddressLike } from './address'
export { DeccomError, StackError, ErrorCode, fromNative } from './errors'
export type { ErrorCodeValue } from './errors'
export { Identity } from './identity'
export { Node } from './node'
export type { NodeOptions, NodeStats } from './node'
export { Peer, encodePeerRecord, decodePeerRecord } from './peer'
export type { PeerRecord } from './peer'
export { Protocol, bindTo, bindFrom, provides, emits, requires } from './protocol'
export type { LayerContext, Fn } from './protocol'
export { Stack } from './stack'
export { UdpTransport, TAG_APP, TAG_UDP } from './protocols/udp'
export type { UdpOptions, PingOptions } from './protocols/udp'
