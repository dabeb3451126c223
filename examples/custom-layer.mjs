// A user-defined layer stacked between the application and the built-in UDP transport:
// it compresses application messages (tag 0) with deflate, passes every other datagram through
// untouched (a *transparent* layer), and counts what it did. Run: node examples/custom-layer.mjs
import zlib from 'node:zlib'
import { Node, Identity, Protocol } from '../dist/index.mjs'

class Deflate extends Protocol {
  static bindTo = ['send'] //       calls going down: the nearest layer below that provides send()
  static bindFrom = ['onMessage'] // events going up: takes the onMessage slot of the layer below
  static provides = ['send'] //     upper layers bind their send() to ours
  static emits = ['onMessage'] //   and we call theirs upward

  name = 'deflate'

  send (to, data, tag = 0) {
    if (tag !== 0) return this.lower.send(to, data, tag)
    const packed = zlib.deflateRawSync(data)
    this.count('bytes_in', data.length)
    this.count('bytes_out', packed.length)
    return this.lower.send(to, packed, tag)
  }

  onMessage (from, data, tag) {
    if (tag !== 0) return this.upper.onMessage(from, data, tag)
    let plain
    try {
      plain = zlib.inflateRawSync(data, { maxOutputLength: 1 << 20 }) // bounded: no zip bombs
    } catch {
      return this.count('dropped_corrupt')
    }
    this.upper.onMessage(from, plain, tag)
  }
}

const a = await Node.create({ identity: Identity.fromString('a'), stack: [new Deflate()] })
const b = await Node.create({ identity: Identity.fromString('b'), stack: [new Deflate()] })
console.log('b binds:', JSON.stringify(b.stack.describe()))

const text = 'deccom stacks small protocols. '.repeat(40)
const got = new Promise((resolve) => b.once('message', (from, data) => resolve(data.toString())))
await a.send(b.address, Buffer.from(text))
console.log('b received the message intact:', (await got) === text)
console.log('b still answers pings through the layer:', (await a.ping(b.address)).toFixed(3), 'ms')
const s = a.stats().deflate
console.log(`a's deflate layer: ${s.bytes_in} bytes in, ${s.bytes_out} bytes on the wire`)
await a.close()
await b.close()
