/**
 * The port-mapping clients against hostile or quirky routers on loopback (real UDP and HTTP
 * sockets; the routers here are small servers that answer what each test needs), their parsers on
 * crafted input, and how a Node wires a PortMapper into its stack. The real router (miniupnpd) is
 * in portmap.spec.ts.
 */
import dgram from 'node:dgram'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import test from 'ava'
import {
  DeccomError,
  ErrorCode,
  HolePuncher,
  Kademlia,
  Node,
  PortMapper,
  decodePcpMap,
  encodePcpMap,
  isPrivateV4,
  natpmpMap,
  parseDescription,
  parseSsdpAnswer,
  pcpMap,
  soapCall,
  upnpMap,
  type IgdService,
} from '../dist/index.js'

/** A UDP "router" on 127.0.0.1 that answers each request with `answer(req)` (a list of datagrams). */
async function udpRouter(answer: (req: Buffer) => Buffer[]): Promise<{ port: number; requests: Buffer[]; close: () => void }> {
  const s = dgram.createSocket('udp4')
  const requests: Buffer[] = []
  s.on('message', (msg, r) => {
    requests.push(msg)
    for (const a of answer(msg)) s.send(a, r.port, r.address)
  })
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve))
  let open = true
  const close = (): void => {
    if (open) s.close()
    open = false
  }
  return { port: (s.address() as AddressInfo).port, requests, close }
}

async function httpRouter(handler: http.RequestListener): Promise<{ url: URL; close: () => Promise<void> }> {
  const server = http.createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: new URL(`http://127.0.0.1:${port}/`),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

test('isPrivateV4: RFC 1918 ranges only', (t) => {
  for (const h of ['10.0.0.1', '10.77.0.2', '172.16.0.1', '172.31.255.255', '192.168.1.2']) t.true(isPrivateV4(h), h)
  for (const h of ['172.15.0.1', '172.32.0.1', '192.169.0.1', '127.0.0.1', '8.8.8.8', '100.64.0.1', '::1', 'nonsense']) t.false(isPrivateV4(h), h)
})

test('SSDP answers: LOCATION must be http:// on the answering host; size and status checked', (t) => {
  const ok = Buffer.from('HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLocation: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n')
  t.is(parseSsdpAnswer(ok, '192.168.1.1')?.href, 'http://192.168.1.1:5000/rootDesc.xml')
  t.is(parseSsdpAnswer(ok, '192.168.1.7'), null, 'pointing at another host')
  t.is(parseSsdpAnswer(Buffer.from(ok.toString().replace('http://', 'file://')), '192.168.1.1'), null)
  t.is(parseSsdpAnswer(Buffer.from(ok.toString().replace('200 OK', '404 Not Found')), '192.168.1.1'), null)
  t.is(parseSsdpAnswer(Buffer.from(ok.toString().replace(/Location[^\r]*\r\n/, '')), '192.168.1.1'), null)
  t.is(parseSsdpAnswer(Buffer.concat([ok, Buffer.alloc(3000, 0x20)]), '192.168.1.1'), null, 'oversized')
  t.is(parseSsdpAnswer(Buffer.from('HTTP/1.1 200 OK\r\nLOCATION: http://[::1\r\n\r\n'), '::1'), null, 'bad URL')
})

test('device description: the WAN connection control URL, resolved and kept on the router', (t) => {
  const loc = new URL('http://192.168.1.1:5000/rootDesc.xml')
  const svc = (type: string, ctl: string): string => `<service><serviceType>${type}</serviceType><serviceId>x</serviceId><controlURL>${ctl}</controlURL></service>`
  const doc = (services: string, base = ''): string => `<?xml version="1.0"?><root>${base}<device><serviceList>${services}</serviceList></device></root>`
  const wanip = 'urn:schemas-upnp-org:service:WANIPConnection:1'
  t.is(parseDescription(doc(svc('urn:schemas-upnp-org:service:Layer3Forwarding:1', '/L3F') + svc(wanip, '/ctl/IPConn')), loc)?.controlUrl.href, 'http://192.168.1.1:5000/ctl/IPConn')
  t.is(parseDescription(doc(svc(wanip, 'ctl?a=1&amp;b=2'), '<URLBase>http://192.168.1.1:6000/x/</URLBase>'), loc)?.controlUrl.href, 'http://192.168.1.1:6000/x/ctl?a=1&b=2')
  t.is(parseDescription(doc(svc(wanip, 'http://203.0.113.9/ctl')), loc), null, 'control URL on another host')
  t.is(parseDescription(doc(svc('urn:schemas-upnp-org:service:WANPPPConnection:1', '/ppp')), loc)?.serviceType, 'urn:schemas-upnp-org:service:WANPPPConnection:1')
  t.is(parseDescription(doc(''), loc), null)
  t.is(parseDescription('<'.repeat(100_000), loc), null)
})

test('PCP MAP answers: nonce, protocol, port, length and version checked', (t) => {
  const nonce = Buffer.alloc(12, 7)
  const req = encodePcpMap('192.168.1.2', nonce, 4000, 4000, '0.0.0.0', 120)
  t.is(req.length, 60)
  t.is(req[0], 2)
  t.is(req[1], 1)
  const answer = Buffer.from(req)
  answer[1] = 0x81
  answer.writeUInt32BE(120, 4)
  Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 2]).copy(answer, 44)
  answer.writeUInt16BE(4001, 42)
  t.deepEqual(decodePcpMap(answer, nonce, 4000), { result: 0, lifetime: 120, externalPort: 4001, externalHost: '10.77.0.2' })
  t.is(decodePcpMap(answer, Buffer.alloc(12, 8), 4000), null, 'someone else’s nonce')
  t.is(decodePcpMap(answer, nonce, 4002), null, 'another internal port')
  t.is(decodePcpMap(answer.subarray(0, 58), nonce, 4000), null, 'not a multiple of 4')
  t.is(decodePcpMap(Buffer.concat([answer, Buffer.alloc(1100)]), nonce, 4000), null, 'oversized')
  const refused = Buffer.from(answer)
  refused[3] = 2
  t.is(decodePcpMap(refused, nonce, 4000)?.result, 2)
  t.is(decodePcpMap(Buffer.from([0, 0x81, 0, 1, 0, 0, 0, 0]), nonce, 4000)?.result, 1, 'a NAT-PMP-only router: unsupported version')
})

test('NAT-PMP against a router answering garbage: dropped and counted, then a typed timeout', async (t) => {
  const r = await udpRouter(() => [Buffer.alloc(3), Buffer.from([0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(1500)])
  t.teardown(r.close)
  let malformed = 0
  const started = Date.now()
  const err = await t.throwsAsync(natpmpMap('127.0.0.1', '127.0.0.1', 4000, 4000, 60, { port: r.port, onMalformed: () => malformed++ }))
  t.true(err instanceof DeccomError)
  t.is((err as DeccomError).code, ErrorCode.PORT_MAPPING_TIMEOUT)
  t.true(malformed >= 3, `malformed answers counted: ${malformed}`)
  t.true(Date.now() - started < 5000)
  t.is(r.requests.length, 3, 'three transmissions (0, 250, 750 ms)')
})

test('NAT-PMP: a refusal is ERR_DECCOM_PORT_MAPPING_FAILED with the result code; no listener fails at once', async (t) => {
  const r = await udpRouter((req) => {
    const a = Buffer.alloc(req[1] === 0 ? 12 : 16)
    a[1] = 128 + req[1]
    a.writeUInt16BE(2, 2) // not authorized
    return [a]
  })
  t.teardown(r.close)
  const err = await t.throwsAsync(natpmpMap('127.0.0.1', '127.0.0.1', 4000, 4000, 60, { port: r.port }))
  t.is((err as DeccomError).code, ErrorCode.PORT_MAPPING_FAILED)
  t.is((err as DeccomError).details?.reason, 'refused')
  t.is((err as DeccomError).details?.result, 2)
  r.close()
  const started = Date.now()
  const err2 = await t.throwsAsync(natpmpMap('127.0.0.1', '127.0.0.1', 4000, 4000, 60, { port: r.port }))
  t.is((err2 as DeccomError).details?.reason, 'unreachable')
  t.true(Date.now() - started < 1000, 'ICMP port unreachable ends the attempt')
})

test('PCP: an answer with another nonce is ignored; the right one maps; abort rejects ERR_DECCOM_ABORTED', async (t) => {
  const r = await udpRouter((req) => {
    const wrong = Buffer.from(req)
    wrong[1] = 0x81
    wrong[24] ^= 1
    const right = Buffer.from(req)
    right[1] = 0x81
    right.writeUInt32BE(300, 4)
    right.writeUInt16BE(4444, 42)
    Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]).copy(right, 44)
    return [wrong, right]
  })
  t.teardown(r.close)
  let malformed = 0
  const m = await pcpMap('127.0.0.1', '127.0.0.1', 4000, 4000, 300, { port: r.port, onMalformed: () => malformed++ })
  t.is(m.externalHost, '10.1.2.3', 'a private external address is accepted')
  t.is(m.externalPort, 4444)
  t.is(m.lifetime, 300)
  t.is(malformed, 1)
  const silent = await udpRouter(() => [])
  t.teardown(silent.close)
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 100)
  const err = await t.throwsAsync(pcpMap('127.0.0.1', '127.0.0.1', 4000, 4000, 300, { port: silent.port, signal: ac.signal }))
  t.is((err as DeccomError).code, ErrorCode.ABORTED)
})

test('UPnP: a port taken (718) is retried on another one; oversized, silent and dripping answers are typed errors', async (t) => {
  const ports: number[] = []
  const r = await httpRouter((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c.toString()))
    req.on('end', () => {
      const action = /#(\w+)"/.exec(String(req.headers.soapaction))?.[1]
      if (action === 'GetExternalIPAddress') {
        res.end('<s:Envelope><s:Body><u:GetExternalIPAddressResponse><NewExternalIPAddress>10.77.0.2</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>')
      } else if (action === 'AddPortMapping') {
        ports.push(Number(/<NewExternalPort>(\d+)</.exec(body)?.[1]))
        if (ports.length === 1) {
          res.statusCode = 500
          res.end('<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>')
        } else res.end('<s:Envelope><s:Body><u:AddPortMappingResponse/></s:Body></s:Envelope>')
      } else if (action === 'Huge') {
        res.end('x'.repeat(100_000))
      } else if (action === 'Silent') {
        // never answers
      } else if (action === 'Drip') {
        // a byte every 100 ms: each within a socket timeout, the whole far beyond the deadline
        res.writeHead(200)
        const drip = setInterval(() => (res.destroyed ? clearInterval(drip) : res.write('x')), 100)
        res.on('close', () => clearInterval(drip))
      } else {
        res.statusCode = 500
        res.end()
      }
    })
  })
  t.teardown(r.close)
  const svc: IgdService = { serviceType: 'urn:schemas-upnp-org:service:WANIPConnection:1', controlUrl: new URL('/ctl', r.url) }
  const m = await upnpMap(svc, '127.0.0.1', 4000, 4000, 60, 2000)
  t.is(ports.length, 2)
  t.is(ports[0], 4000)
  t.not(ports[1], 4000)
  t.is(m.externalPort, ports[1])
  t.is(m.externalHost, '10.77.0.2')

  const huge = await t.throwsAsync(soapCall(svc, 'Huge', [], 2000))
  t.is((huge as DeccomError).code, ErrorCode.PORT_MAPPING_FAILED)
  t.is((huge as DeccomError).details?.reason, 'malformed')
  const silent = await t.throwsAsync(soapCall(svc, 'Silent', [], 300))
  t.is((silent as DeccomError).code, ErrorCode.PORT_MAPPING_TIMEOUT)
  const started = Date.now()
  const drip = await t.throwsAsync(soapCall(svc, 'Drip', [], 500))
  t.is((drip as DeccomError).code, ErrorCode.PORT_MAPPING_TIMEOUT)
  t.true(Date.now() - started < 1500, 'the deadline covers the whole exchange')
})

test('Node: a PortMapper is added above the HolePuncher (Kademlia advertises its address), not without NAT traversal, not with portMapping: false', async (t) => {
  const a = await Node.create({ host: '127.0.0.1', port: 0, stack: [new Kademlia(), new HolePuncher()] })
  t.teardown(() => a.close())
  const names = a.stack.layers.map((l) => l.name)
  t.deepEqual(names.slice(1, 4), ['kademlia', 'port-mapper', 'hole-puncher'])
  const kad = a.stack.describe().find((d) => d.layer === 'kademlia')!
  t.is(kad.bindTo.externalAddress, 'port-mapper')
  const pm = a.stack.find(PortMapper)!
  t.is(await pm.mapped(), null)
  t.is(a.stats()['port-mapper'].skipped_not_private, 1, 'a loopback node asks no router')
  t.is(pm.portMapping(), null)

  const b = await Node.create({ host: '127.0.0.1', port: 0, stack: [new HolePuncher()], portMapping: false })
  t.teardown(() => b.close())
  t.is(b.stack.find(PortMapper), undefined)
  const c = await Node.create({ host: '127.0.0.1', port: 0 })
  t.teardown(() => c.close())
  t.is(c.stack.find(PortMapper), undefined)
  const d = await Node.create({ host: '127.0.0.1', port: 0, portMapping: { protocols: ['pcp'], retryInterval: 0 } })
  t.teardown(() => d.close())
  t.is(d.stack.layers[1].name, 'port-mapper')
  t.throws(() => new PortMapper({ protocols: ['smtp' as 'pcp'] }), { code: ErrorCode.INVALID_ARGUMENT })
})

test('node.nat(): unknown without observations, open when two observers see the bound address', async (t) => {
  const r1 = await Node.create({ host: '127.0.0.1', port: 0, stack: [new HolePuncher()], portMapping: false })
  const r2 = await Node.create({ host: '127.0.0.1', port: 0, stack: [new HolePuncher()], portMapping: false })
  const a = await Node.create({ host: '127.0.0.1', port: 0, stack: [new HolePuncher({ rendezvous: [r1.address, r2.address] })] })
  t.teardown(() => Promise.all([a, r1, r2].map((n) => n.close())).then(() => {}))
  t.is(r1.nat().type, 'unknown')
  t.is(r1.nat().mapping, null)
  for (let i = 0; i < 100 && a.nat().udp.observers < 2; i++) await new Promise((res) => setTimeout(res, 20))
  const nat = a.nat()
  t.is(nat.type, 'open')
  t.is(nat.udp.external?.key, a.address.key)
  t.is(nat.external?.key, a.address.key)
  t.is(nat.udp.observers, 2)
  t.is(nat.mapping, null)
  t.is(nat.tcp, null)
})
