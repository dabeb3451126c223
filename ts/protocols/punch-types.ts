/**
 * Result and option types of the NAT-traversal layers (HolePuncher, TcpHolePuncher), in a module of their
 * own so that the binding registry (`layer-types.ts`) can name them without importing the layers.
 */
import type { Address, AddressLike } from '../address'
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
  /** How the path was made (punched, relayed, direct). */
  path: PathKind
  /** The address datagrams to the peer go to (the punched mapped address, or the relay). */
  address: Address
  /** For a punched path: how it was punched. */
  punch?: PunchMethod
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

/** Options of the HolePuncher layer (see docs/nat.md). */
export interface HolePuncherOptions {
  /** Milliseconds between PUNCH datagrams (default 50). */
  punchInterval?: number
  /** Milliseconds from `connect` (or from receiving an introduction) until punching gives up (default 3000). */
  punchTimeout?: number
  /** Milliseconds between INTRO_REQ retries while no introduction arrived (default 250). */
  introRetry?: number
  /** Messages queued per peer while its path is being opened (default 64). */
  maxQueuedPerPeer?: number
  /** Bytes queued over all peers (default 1 MiB). */
  maxQueuedBytes?: number
  /** Punch sessions at once (default 256). */
  maxSessions?: number
  /** Addresses remembered for introductions (default 4096). */
  maxHeard?: number
  /** Milliseconds after which a silent address is forgotten as introducible (default 60000). */
  heardTtl?: number
  /** Observations kept, one per observer (default 32). */
  maxObservations?: number
  /** Introductions (INTRO pairs) this node makes per second at most (default 200). */
  maxIntroductionsPerSecond?: number
  /** Peers to PROBE at start and every `probeInterval` ms (keeps NAT mappings and observations fresh). */
  rendezvous?: AddressLike[]
  /** Milliseconds between rendezvous probes (default 15000). */
  probeInterval?: number
  /** After a punch timeout, go through the Relay layer below instead of failing (default false). */
  relay?: boolean
  /** The relay to use on fallback (default: the introducer of the session). */
  relayAddress?: AddressLike
  /** Birthday-paradox punching between endpoint-dependent and -independent NATs (default true). */
  birthday?: boolean
  /** Auxiliary sockets the endpoint-dependent side opens toward the peer (default 256; the transport's `maxAuxSockets` bounds them too). */
  birthdaySockets?: number
  /** Probes per second the endpoint-independent side sends to random ports (default 1000). */
  birthdayProbeRate?: number
  /** Probes per punch at most (default 4000). */
  birthdayMaxProbes?: number
  /** Milliseconds between PUNCHes from the auxiliary sockets, each one a datagram per socket (default 1000). */
  birthdaySprayInterval?: number
}
