/**
 * Result types of the NAT-traversal layers (HolePuncher, TcpHolePuncher), in a module of their
 * own so that the binding registry (`layer-types.ts`) can name them without importing the layers.
 */
import type { Address } from '../address'
import type { TcpPeer } from './tcp/connection'

/** How a HolePuncher path reaches the peer. */
export type PathKind = 'punched' | 'relayed'

/** The result of `HolePuncher.connect`. */
export interface PunchResult {
  /** How the path was made (punched, relayed, direct). */
  path: PathKind
  /** The address datagrams to the peer go to (the punched mapped address, or the relay). */
  address: Address
}

/** One observation: `observer` saw us at `address`. */
export interface Observation {
  /** The rendezvous node that reported it. */
  observer: Address
  /** The address it saw this node at. */
  address: Address
  /** When, in ms on the layer's clock. */
  at: number
}

/** The result of `TcpHolePuncher.connect` / `tcpPunch`. */
export interface TcpPunchResult {
  /** Whether the connection was punched (simultaneous open) or a direct dial. */
  path: 'punched' | 'direct'
  /** The peer at the other end. */
  peer: TcpPeer
}
