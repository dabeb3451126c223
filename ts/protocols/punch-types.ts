/**
 * Result types of the NAT-traversal layers (HolePuncher, TcpHolePuncher), in a module of their
 * own so that the binding registry (`layer-types.ts`) can name them without importing the layers.
 */
import type { Address } from '../address'
import type { TcpPeer } from './tcp/connection'

/** How a HolePuncher path reaches the peer. */
export type PathKind = 'punched' | 'relayed'

/**
 * How a punched path was opened: 'simultaneous' (both sides punched each other's mapped address)
 * or 'birthday' (auxiliary sockets on the endpoint-dependent side met random-port probes).
 */
export type PunchMethod = 'simultaneous' | 'birthday'

/** The result of `HolePuncher.connect`. */
export interface PunchResult {
  path: PathKind
  /** The address datagrams to the peer go to (the punched mapped address, or the relay). */
  address: Address
  /** For a punched path: how it was punched. */
  punch?: PunchMethod
}

/** One observation: `observer` saw us at `address`. */
export interface Observation {
  observer: Address
  address: Address
  at: number
}

/** The result of `TcpHolePuncher.connect` / `tcpPunch`. */
export interface TcpPunchResult {
  path: 'punched' | 'direct'
  peer: TcpPeer
}
