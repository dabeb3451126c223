/**
 * Kademlia's IdMap (peers by node id, read in place): ids that share the 30-bit key are kept apart
 * (the second goes to the hex-keyed map), every lookup checks the whole id, and set/delete/values
 * behave like a Map keyed by the id's bytes, with ids read at any offset of a larger buffer.
 */
import test from 'ava'
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'

const require = createRequire(import.meta.url)
const { IdMap } = require('../dist/protocols/kademlia/id-map.js')

type V = { id: Buffer; n: number }

function id(prefix: number[], fill: number): Buffer {
  const b = Buffer.alloc(32, fill)
  prefix.forEach((x, i) => (b[i] = x))
  return b
}

test('ids with the same first 30 bits stay distinct; a lookup needs the whole id', (t) => {
  const m = new IdMap()
  // Same first 3 bytes and the same top 6 bits of the 4th: the same key.
  const a: V = { id: id([1, 2, 3, 0b1010_1000], 7), n: 1 }
  const b: V = { id: id([1, 2, 3, 0b1010_1011], 7), n: 2 }
  const c: V = { id: id([1, 2, 3, 0b1010_1000], 9), n: 3 }
  m.set(a)
  m.set(b)
  m.set(c)
  t.is(m.size, 3)
  t.is(m.get(a.id)?.n, 1)
  t.is(m.get(b.id)?.n, 2)
  t.is(m.get(c.id)?.n, 3)
  t.is(m.get(id([1, 2, 3, 0b1010_1000], 8)), undefined, 'same key, another id')
  // Read in place: the id at an offset of a larger buffer.
  const big = Buffer.concat([Buffer.alloc(5), b.id, Buffer.alloc(3)])
  t.is(m.get(big, 5)?.n, 2)
  t.true(m.has(big, 5))
  // Replacing a value keeps one entry per id.
  m.set({ id: Buffer.from(b.id), n: 20 })
  t.is(m.size, 3)
  t.is(m.get(b.id)?.n, 20)
  // Deleting the one in the fast map leaves the colliding ones reachable.
  m.delete(a.id)
  t.is(m.get(a.id), undefined)
  t.is(m.get(b.id)?.n, 20)
  t.is(m.get(c.id)?.n, 3)
  // An id moved from the collision map back to the free key is found once, not twice.
  m.set({ id: Buffer.from(c.id), n: 30 })
  t.is(m.get(c.id)?.n, 30)
  m.delete(c.id)
  t.is(m.get(c.id), undefined)
  t.is(m.get(b.id)?.n, 20)
  m.delete(big, 5)
  t.is(m.size, 0)
  t.deepEqual([...m.values()], [])
})

test('random ids: the same answers as a Map keyed by hex (get, size, every value once)', (t) => {
  const m = new IdMap()
  const ref = new Map<string, V>()
  const ids: Buffer[] = []
  for (let i = 0; i < 400; i++) {
    // A quarter share a 30-bit key with an earlier id.
    const b = i > 0 && i % 4 === 0 ? Buffer.concat([ids[i - 1]!.subarray(0, 4), randomBytes(28)]) : randomBytes(32)
    ids.push(b)
  }
  for (let step = 0; step < 3000; step++) {
    const b = ids[(step * 7919) % ids.length]!
    const hex = b.toString('hex')
    if (step % 5 === 4) {
      m.delete(b)
      ref.delete(hex)
    } else {
      const v = { id: Buffer.from(b), n: step }
      m.set(v)
      ref.set(hex, v)
    }
    if (step % 100 === 0) {
      for (const x of ids) t.is(m.get(x), ref.get(x.toString('hex')))
      t.is(m.size, ref.size)
      const byN = (a: V, b: V): number => a.n - b.n
      t.deepEqual([...m.values()].sort(byN), [...ref.values()].sort(byN))
    }
  }
})
