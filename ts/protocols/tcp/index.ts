/** TcpTransport: framed TCP streams between peers (see `transport.ts`), its types and wire codec. */
export { TcpTransport } from './transport'
export { TCP_HEADER_SIZE, TCP_MAX_TAG } from './codec'
export type { TcpTransportOptions, TcpPeer, TcpTarget, TcpCloseReason, TcpMapping, TcpObservation } from './connection'
