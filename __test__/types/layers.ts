/**
 * Type-level test of typed layers, compiled (never run) by __test__/types/types.spec.ts with
 * --strict --noUncheckedIndexedAccess against the built package. Every `@ts-expect-error` line
 * must be an error: if one compiled, the directive itself would fail the compilation.
 */
import {
  type Address,
  type AddressLike,
  type BindingsOf,
  type LowerBindings,
  BigGossip,
  Delay,
  FaultyTransport,
  FixedPeers,
  Gossip,
  HolePuncher,
  Kademlia,
  KeepAlive,
  Node,
  Noise,
  Peer,
  Protocol,
  Relay,
  ReliableUdp,
  SimTransport,
  Stack,
  TcpHolePuncher,
  TcpTransport,
  UdpTransport,
} from 'deccom'

// An application binding, added to the registry by declaration merging.
declare module 'deccom' {
  interface Bindings {
    sendChat(to: AddressLike, text: string): Promise<void>
    onChat(from: Peer, text: string): void
  }
}

/** A typed layer: `lower` has send and the optional externalAddress, `upper` the onChat slot. */
class Chat
  extends Protocol<{ lower: 'send' | 'externalAddress?'; upper: 'onChat' }>
  implements BindingsOf<'onMessage' | 'sendChat'>
{
  static override bindTo = ['send', 'externalAddress?']
  static override bindFrom = ['onMessage']
  static override provides = ['sendChat']
  static override emits = ['onChat']
  readonly name = 'chat'
  override readonly tag = 200

  async sendChat(to: AddressLike, text: string): Promise<void> {
    // No `!` needed under noUncheckedIndexedAccess: `send` is a declared member, not an index.
    await this.lower.send(to, Buffer.from(text), this.tag)
    // An optional binding may be absent: its result includes undefined.
    const ext: Address | null | undefined = this.lower.externalAddress()
    // @ts-expect-error the optional binding's result may be undefined
    const strict: Address | null = this.lower.externalAddress()
    void ext
    void strict
  }

  onMessage(from: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== this.tag) return
    this.upper.onChat(from instanceof Peer ? from : new Peer(from), data.toString())
  }

  wrongCalls(to: Address): void {
    // @ts-expect-error send takes (to, data, tag?): a string is not a Uint8Array
    this.lower.send(to, 'text')
    // @ts-expect-error too few arguments
    this.lower.send(to)
    // @ts-expect-error localAddress is a registered binding, but this layer did not declare it
    this.lower.localAddress()
    // @ts-expect-error not a binding at all
    this.lower.sendMessage(to, Buffer.alloc(0))
    // @ts-expect-error onMessage is not among this layer's upper slots
    this.upper.onMessage(to, Buffer.alloc(0), 0)
    // @ts-expect-error the onChat slot takes (Peer, string)
    this.upper.onChat(to, 42)
    // @ts-expect-error bindings are read-only: a layer does not rewire them
    this.lower.send = () => undefined
  }
}

// @ts-expect-error a spec may only name registered bindings
class Unknown extends Protocol<{ lower: 'noSuchBinding' }> {
  readonly name = 'unknown'
}

class BadHandler extends Protocol<{ upper: 'onMessage' }> implements BindingsOf<'onMessage'> {
  readonly name = 'bad'
  // @ts-expect-error `implements BindingsOf` checks the offered method against the registry
  onMessage(from: Address, data: string): void {
    void from
    void data
  }
}

/** A layer with only upper slots has no lower bindings at all. */
class UpOnly extends Protocol<{ upper: 'onConnected' }> {
  readonly name = 'up-only'
  fire(p: Peer): void {
    this.upper.onConnected(p)
    // @ts-expect-error no lower bindings declared
    this.lower.send(p.address, Buffer.alloc(0))
  }
}

/** The untyped form is unchanged: records of any function (an index, so `!` under noUncheckedIndexedAccess). */
class Untyped extends Protocol {
  static override bindTo = ['send', 'anything']
  readonly name = 'untyped'
  go(to: Address): void {
    this.lower.send!(to, Buffer.alloc(0), 0)
    this.lower.anything!(1, 2, 3)
    // @ts-expect-error an index access may be undefined under noUncheckedIndexedAccess
    this.lower.anything(1)
  }
}

// The resolved types are nameable.
const probe: LowerBindings<{ lower: 'localAddress' }> = { localAddress: () => ({}) as Address }
void probe

// Typed and untyped layers go in the same stacks.
const stack = new Stack([new Chat(), new UpOnly(), new Untyped()])
void stack
async function build(): Promise<void> {
  const node = await Node.create({ stack: [new Chat(), new Untyped()] })
  const chat = node.stack.find(Chat)
  await chat?.sendChat('127.0.0.1:1', 'hi')
  await node.close()
}
void build
void Unknown
void BadHandler

// The registry matches the built-in layers: each one's methods are assignable to the signatures of
// the bindings it provides (`provides`) and takes (`bindFrom`).
function registryMatchesBuiltInLayers(l: {
  udp: UdpTransport
  sim: SimTransport
  delay: Delay
  faulty: FaultyTransport
  reliable: ReliableUdp
  noise: Noise
  kad: Kademlia
  gossip: Gossip
  big: BigGossip
  fixed: FixedPeers
  keepAlive: KeepAlive
  puncher: HolePuncher
  relay: Relay
  tcp: TcpTransport
  tcpPuncher: TcpHolePuncher
}): void {
  const checks: unknown[] = [
    l.udp satisfies BindingsOf<'send' | 'ping' | 'localAddress'>,
    l.sim satisfies BindingsOf<'send' | 'ping' | 'localAddress'>,
    l.delay satisfies BindingsOf<'send' | 'onMessage'>,
    l.faulty satisfies BindingsOf<'send' | 'onMessage'>,
    l.reliable satisfies BindingsOf<'send' | 'onMessage'>,
    l.noise satisfies BindingsOf<'send' | 'onMessage' | 'approveConnection' | 'authenticate' | 'remoteId' | 'remotePeer'>,
    l.kad satisfies BindingsOf<'onMessage' | 'findPeer' | 'getPeer' | 'peers' | 'closest' | 'lookup' | 'introducerOf'>,
    l.gossip satisfies BindingsOf<'onMessage' | 'findPeer' | 'getPeer' | 'peers'>,
    l.big satisfies BindingsOf<'onMessage' | 'findPeer' | 'getPeer' | 'peers'>,
    l.fixed satisfies BindingsOf<'onMessage' | 'sendToId' | 'broadcast' | 'peers' | 'findPeer'>,
    l.keepAlive satisfies BindingsOf<'onMessage' | 'onConnected' | 'register' | 'unregister'>,
    l.puncher satisfies BindingsOf<'onMessage' | 'send' | 'connect' | 'externalAddress' | 'observations'>,
    l.relay satisfies BindingsOf<'onMessage' | 'send' | 'relayVia'>,
    l.tcp satisfies BindingsOf<
      | 'openConnection' | 'sendStream' | 'closeStream' | 'disconnect' | 'tcpAddress' | 'pauseStream' | 'resumeStream'
      | 'tcpMapping' | 'externalTcpAddress' | 'adoptSocket' | 'tcpPeers'
    >,
    l.tcpPuncher satisfies BindingsOf<'onMessage' | 'tcpPunch'>,
  ]
  void checks
}
void registryMatchesBuiltInLayers
