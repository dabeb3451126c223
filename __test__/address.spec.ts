import test from 'ava'
import { DeccomError, ErrorCode, toAddress } from '../dist/index.js'
import { ipv4Address } from '../dist/address.js'

test('toAddress interns: every spelling of one address gives the same object, texts included', (t) => {
  const a = toAddress('127.0.0.1:4000')
  t.is(toAddress('127.0.0.1:4000'), a, 'the same text twice (the second from the text cache)')
  t.is(toAddress('127.0.0.1', 4000), a)
  t.is(toAddress({ host: '127.0.0.1', port: 4000 }), a)
  t.is(toAddress({ address: a }), a)
  t.is(a.key, '127.0.0.1:4000')
  const v6 = toAddress('[::1]:5')
  t.is(toAddress('[::1]:5'), v6)
  t.is(toAddress('::1', 5), v6)
  t.is(v6.family, 6)
  t.not(toAddress('127.0.0.1:4001'), a)
})

test('toAddress rejects bad texts every time (nothing invalid is remembered)', (t) => {
  for (const bad of ['127.0.0.1', '127.0.0.1:70000', 'example.com:80', '127.0.0.1:-1', '1.2.3:4']) {
    for (let i = 0; i < 2; i++) {
      const e = t.throws(() => toAddress(bad))
      t.true(e instanceof DeccomError && e.code === ErrorCode.INVALID_ADDRESS, bad)
    }
  }
})

test('ipv4Address gives the object toAddress gives, also after the caches started over (the one in use)', (t) => {
  const a = toAddress('10.1.2.3:4000')
  t.is(ipv4Address(10, 1, 2, 3, 4000), a)
  t.is(ipv4Address(10, 1, 2, 3, 4000), a, 'again (from the number cache)')
  t.is(ipv4Address(10, 1, 2, 3, 4001).key, '10.1.2.3:4001')
  t.is(ipv4Address(255, 255, 255, 255, 65535), toAddress('255.255.255.255:65535'))
  t.is(ipv4Address(0, 0, 0, 0, 0).key, '0.0.0.0:0')
  // More addresses than the caches hold: they start over; `a` is still in use, so it is still the
  // object both give.
  for (let port = 0; port < 65_536; port++) toAddress('10.200.0.1', port)
  toAddress('10.200.0.2', 1)
  t.is(ipv4Address(10, 1, 2, 3, 4000), a, 'from the number cache, after the reset')
  t.is(toAddress('10.1.2.3', 4000), a, 'from the text, after the reset')
})

test('an Address in use stays the one its text gives, after the caches started over (more than 65,536 others)', (t) => {
  const held = toAddress('10.77.0.1', 4242)
  const held6 = toAddress('2001:db8::77', 4242)
  for (let i = 0; i < 70_000; i++) toAddress(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 1000 + (i % 50_000))
  t.is(toAddress('10.77.0.1', 4242), held)
  t.is(toAddress('10.77.0.1:4242'), held)
  t.is(toAddress('2001:db8::77', 4242), held6)
  t.is(toAddress({ host: '10.77.0.1', port: 4242 }), held)
})
