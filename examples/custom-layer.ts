// A typed user-defined layer: Chat sends short text messages with its own layer tag, and passes
// every other datagram (application data, pings) up unchanged. Its bindings are checked by the
// compiler: `this.lower.send(...)` has the registry's signature, and a binding the layer did not
// declare does not compile. Two real nodes on 127.0.0.1 chat, then close; the process exits.
// Run: npx ava __test__/examples.spec.ts  (compiles examples/*.ts strictly to .tmp/examples/*.mjs and
// runs them; afterwards: node .tmp/examples/custom-layer.mjs). Type-check only: npx tsc -p examples
import { type Address, type AddressLike, type BindingsOf, type LayerContext, Identity, Node, Peer, Protocol } from 'deccom'

// A new binding name, added to the typed registry by declaration merging: upper layers (or the
// application, through `node.stack.find(Chat)`) call `sendChat`.
declare module 'deccom' {
  interface Bindings {
    sendChat(to: AddressLike, text: string): Promise<void>
  }
}

const TAG_CHAT = 200
const MAX_CHAT_BYTES = 1024

class Chat
  extends Protocol<{ lower: 'send' | 'localAddress'; upper: 'onMessage' }>
  implements BindingsOf<'onMessage' | 'sendChat'>
{
  // The runtime declarations the Stack resolves: the same names as the type argument above.
  static override bindTo = ['send', 'localAddress']
  static override bindFrom = ['onMessage']
  static override provides = ['sendChat']
  static override emits = ['onMessage']

  readonly name = 'chat'
  override readonly tag = TAG_CHAT
  readonly #listeners = new Set<(from: Address, text: string) => void>()
  #self = ''

  override async start(_ctx: LayerContext): Promise<void> {
    this.#self = this.lower.localAddress().key // typed: returns an Address
  }

  async sendChat(to: AddressLike, text: string): Promise<void> {
    const bytes = Buffer.from(text, 'utf8')
    if (bytes.length > MAX_CHAT_BYTES) throw new RangeError(`chat messages are at most ${MAX_CHAT_BYTES} bytes`)
    await this.lower.send(to, bytes, TAG_CHAT)
    this.count('sent')
  }

  onChat(fn: (from: Address, text: string) => void): void {
    this.#listeners.add(fn)
  }

  onMessage(from: Address | Peer, data: Buffer, tag: number): void {
    if (tag !== TAG_CHAT) return this.upper.onMessage(from, data, tag) // not ours: pass it up
    if (data.length > MAX_CHAT_BYTES) return this.count('dropped_too_long')
    this.count('received')
    const address = from instanceof Peer ? from.address : from
    for (const fn of this.#listeners) fn(address, data.toString('utf8'))
  }

  describeSelf(): string {
    return `chat layer on ${this.#self}`
  }
}

const alice = await Node.create({ identity: Identity.fromString('alice'), host: '127.0.0.1', port: 0, stack: [new Chat()] })
const bob = await Node.create({ identity: Identity.fromString('bob'), host: '127.0.0.1', port: 0, stack: [new Chat()] })
const aliceChat = alice.stack.find(Chat)
const bobChat = bob.stack.find(Chat)
if (aliceChat === undefined || bobChat === undefined) throw new Error('the Chat layer is in both stacks')
console.log(bobChat.describeSelf())

// Bob answers every chat; Alice waits for the answer (at most 5 s).
bobChat.onChat((from, text) => {
  console.log(`bob   <- ${from.key}: ${text}`)
  void bobChat.sendChat(from, `hi, bob here (you said ${text.length} characters)`)
})
const answer = new Promise<string>((resolve, reject) => {
  aliceChat.onChat((from, text) => {
    console.log(`alice <- ${from.key}: ${text}`)
    resolve(text)
  })
  setTimeout(() => reject(new Error('no answer within 5 s')), 5000).unref()
})
await aliceChat.sendChat(bob.address, 'hello bob')
await answer

// Application messages (tag 0) and pings still pass through the layer.
const got = new Promise<string>((resolve) => bob.once('message', (_from, data) => resolve(data.toString())))
await alice.send(bob.address, Buffer.from('a plain message'))
console.log('bob got an application message through the layer:', await got)
console.log('alice -> bob ping:', (await alice.ping(bob.address)).toFixed(3), 'ms')
console.log('alice chat counters:', JSON.stringify(alice.stats().chat))

await alice.close()
await bob.close()
