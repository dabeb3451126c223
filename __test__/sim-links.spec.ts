/**
 * The delay-only links of a SimulatedNetwork run the impairment model in JavaScript: the same due
 * times as the native model for the same seed and datagrams, and the same stream after a change of
 * spec (to another delay-only spec, or to one the native model runs).
 */
import test from 'ava'

import { ImpairModel, linkParams, verdict } from '../dist/sim/impair.js'
import { LinkTable, MAX_LINK_STATES, delayOnly } from '../dist/sim/links.js'

const spec = (over: Record<string, number> = {}) => ({
  latency: 10,
  jitter: 40,
  bandwidth: Infinity,
  loss: 0,
  duplicate: 0,
  reorder: 0,
  corrupt: 0,
  maxQueueBytes: 1 << 24,
  ...over,
})

test('A delay-only link: the native model’s due times, for many seeds and parameters', (t) => {
  for (const seed of [0, 1, 7, 0x7fffffff, 0x80000000, 0xffffffff, 123456789]) {
    for (const s of [spec(), spec({ latency: 0, jitter: 0 }), spec({ latency: 0.5, jitter: 3.25 }), spec({ jitter: 1e-9 })]) {
      const js = new LinkTable<ReturnType<typeof spec>>(() => seed)
      const nat = new ImpairModel(seed, linkParams(s))
      for (let i = 0; i < 2000; i++) {
        const now = i * 0.37
        const a = js.offer('x', 'y', s, now, now, 100)
        const due = verdict[0]
        const b = nat.offer(now, 100)
        t.is(a, b & 3)
        if (verdict[0] !== due) return t.fail(`seed ${seed}, datagram ${i}: ${due} != ${verdict[0]}`)
      }
    }
  }
  t.pass()
})

test('delayOnly: loss, duplication, reordering, corruption or a bandwidth make a link native', (t) => {
  t.true(delayOnly(spec()))
  for (const k of ['loss', 'duplicate', 'reorder', 'corrupt']) t.false(delayOnly(spec({ [k]: 0.1 })))
  t.false(delayOnly(spec({ bandwidth: 1000 })))
  t.true(delayOnly(spec({ bandwidth: 0 })))
})

test('LinkTable: a spec change carries the stream on (delay-only and native), as one native model would', (t) => {
  const a = spec()
  const b = spec({ latency: 3, jitter: 7 })
  const c = spec({ loss: 0.3, duplicate: 0.2, jitter: 5 })
  const table = new LinkTable<ReturnType<typeof spec>>(() => 99)
  const ref = new ImpairModel(99, linkParams(a))
  const plan = [a, a, b, b, a, c, c, a, b, c]
  let n = 0
  for (const s of plan) {
    ref.configure(linkParams(s))
    for (let i = 0; i < 50; i++, n++) {
      const got = table.offer('x', 'y', s, n, n, 60)
      const g = [verdict[0], verdict[1]]
      const want = ref.offer(n, 60)
      t.is(got & 7, want & 7)
      if ((want & 3) >= 1) t.is(g[0], verdict[0])
      if ((want & 3) === 2) t.is(g[1], verdict[1])
    }
  }
  t.is(table.size, 1)
})

test('LinkTable: past the bound, idle links are forgotten and start afresh from their seed', (t) => {
  const table = new LinkTable<ReturnType<typeof spec>>((from, to) => (from.length * 31 + to.length) >>> 0)
  const s = spec()
  table.offer('a', 'b', s, 0, 0, 10)
  const first = verdict[0]
  table.offer('a', 'b', s, 0, 0, 10)
  t.not(verdict[0], first)
  for (let i = 0; table.size < MAX_LINK_STATES; i++) table.offer(`n${i}`, 'z', s, 0, 0, 10)
  table.offer('new', 'z', s, 0, 0, 10)
  t.is(table.size, 1)
  table.offer('a', 'b', s, 0, 0, 10)
  t.is(verdict[0], first)
})

test('LinkTable: past the bound, a native link with a backlog is kept (native at first or after a spec change)', (t) => {
  const s = spec()
  const slow = spec({ bandwidth: 1, jitter: 0 }) // 1 byte per ms: 10,000 bytes wait 10 s
  for (const turned of [false, true]) {
    const table = new LinkTable<ReturnType<typeof spec>>(() => 5)
    if (turned) table.offer('busy', 'z', s, 0, 0, 10)
    table.offer('busy', 'z', slow, 0, 0, 10_000)
    const fill = (tag: string, now: number) => {
      for (let i = 0; table.size < MAX_LINK_STATES; i++) table.offer(`${tag}${i}`, 'z', s, now, now, 10)
    }
    fill('a', 0)
    table.offer('new', 'z', s, 100, 100, 10)
    t.is(table.size, 2) // busy and new
    // The kept link still holds its backlog: a datagram now waits behind it.
    table.offer('busy', 'z', slow, 100, 100, 1)
    t.true(verdict[0] >= 10_000)
    // Once the backlog is sent, every link is idle: all are forgotten.
    fill('b', 20_000)
    table.offer('last', 'z', s, 20_000, 20_000, 10)
    t.is(table.size, 1)
  }
})

test('LinkTable: many links, offered in turn, each follow their own stream (as one native model per pair)', (t) => {
  const seedOf = (from: string, to: string) => (from.length * 7919 + Number(from.slice(1)) * 131 + Number(to.slice(1))) >>> 0
  const s = spec({ latency: 2, jitter: 9 })
  const table = new LinkTable<ReturnType<typeof spec>>(seedOf)
  const refs = new Map<string, InstanceType<typeof ImpairModel>>()
  let x = 12345
  for (let k = 0; k < 30_000; k++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    const from = `a${x % 97}`
    const to = `b${(x >>> 8) % 61}`
    let ref = refs.get(`${from}>${to}`)
    if (ref === undefined) refs.set(`${from}>${to}`, (ref = new ImpairModel(seedOf(from, to), linkParams(s))))
    table.offer(from, to, s, k, k, 50)
    const due = verdict[0]
    ref.offer(k, 50)
    if (verdict[0] !== due) return t.fail(`datagram ${k} on ${from}>${to}: ${due} != ${verdict[0]}`)
  }
  t.is(table.size, refs.size)
})
