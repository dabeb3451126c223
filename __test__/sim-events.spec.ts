/**
 * The simulator's event queue: events come out in (time, scheduling order) whatever the mix of
 * schedules, cancellations (with compactions) and datagram events, as a sorted list would give them.
 */
import test from 'ava'

import { EventQueue } from '../dist/sim/event-queue.js'

test('EventQueue: (time, sequence) order through schedules, cancellations, compactions and growth', (t) => {
  const q = new EventQueue()
  const ref: { time: number; seq: number; cancelled: boolean }[] = []
  const handles: ReturnType<EventQueue['schedule']>[] = []
  let x = 7
  const rnd = (n: number) => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8) % n
  let seq = 0
  let now = 0
  const ran: number[] = []
  const want: number[] = []
  for (let step = 0; step < 60_000; step++) {
    const op = rnd(10)
    if (op < 5) {
      // Ties are frequent: times on a 0.5 ms grid, sometimes now itself.
      const time = rnd(4) === 0 ? now : now + rnd(200) / 2
      const s = seq++
      ref.push({ time, seq: s, cancelled: false })
      if (rnd(2) === 0) handles.push(q.schedule(time, () => ran.push(s)))
      else q.datagram(time, null as never, null as never, Buffer.from([s & 255]))
    } else if (op < 7 && handles.length > 0) {
      const h = handles.splice(rnd(handles.length), 1)[0]
      const r = ref.find((e) => e.seq === h.seq)!
      if (h.state === 0) r.cancelled = true
      q.cancel(h)
      q.cancel(h) // a second cancel is a no-op
    } else {
      const e = q.peek()
      const live = ref.filter((r) => !r.cancelled).sort((a, b) => a.time - b.time || a.seq - b.seq)
      if (live.length === 0) {
        t.is(e, undefined)
        continue
      }
      t.truthy(e)
      q.pop()
      e!.state = 1 // as the network marks an event it runs
      now = e!.time
      const r = live[0]
      r.cancelled = true
      want.push(r.seq)
      if (e!.fn !== null) e!.fn()
      else ran.push(r.seq === e!.seq && e!.bytes![0] === (e!.seq & 255) ? e!.seq : -1)
      t.is(q.pending, live.length - 1)
    }
  }
  t.true(want.length > 10_000)
  t.deepEqual(ran, want)
})

test('EventQueue: cancelling most events compacts the heap; the others still come out in order', (t) => {
  const q = new EventQueue()
  const timers: ReturnType<EventQueue['schedule']>[] = []
  for (let i = 0; i < 6000; i++) timers.push(q.schedule(1000 + ((i * 7919) % 3001) / 4, () => {}))
  for (let i = 0; i < 3000; i++) q.datagram(((i * 104729) % 5003) / 2, null as never, null as never, Buffer.alloc(1))
  const kept = new Set<number>()
  for (const e of timers) {
    if (e.seq % 5 === 0) kept.add(e.seq)
    else q.cancel(e)
  }
  t.is(q.pending, 3000 + kept.size)
  const out: { time: number; seq: number }[] = []
  for (let e = q.peek(); e !== undefined; e = q.peek()) {
    q.pop()
    e.state = 1
    out.push({ time: e.time, seq: e.seq })
  }
  t.is(out.length, 3000 + kept.size)
  t.is(out.filter((e) => e.seq < 6000).length, kept.size)
  for (let i = 1; i < out.length; i++) {
    const a = out[i - 1]
    const b = out[i]
    if (!(a.time < b.time || (a.time === b.time && a.seq < b.seq))) return t.fail(`out of order at ${i}`)
  }
})
