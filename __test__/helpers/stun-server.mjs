/**
 * A STUN binding responder (RFC 5389 Binding requests answered with XOR-MAPPED-ADDRESS) for the
 * port-mapping tests: miniupnpd learns its external address from it (`ext_perform_stun`). It
 * answers every Binding request from the socket it arrived on, CHANGE-REQUEST or not (the router
 * only checks that each answer arrives). Usage: `node stun-server.mjs HOST PORT`; prints
 * `{"event":"ready"}` once bound and one `{"event":"binding"}` line per answered request.
 */
import dgram from 'node:dgram'

const [host, port] = [process.argv[2] ?? '0.0.0.0', Number(process.argv[3] ?? 3478)]
const MAGIC = 0x2112a442
const sock = dgram.createSocket('udp4')
sock.on('message', (msg, rinfo) => {
  // Header: type u16 (0x0001 Binding request), length u16, magic u32, transaction id 12 B.
  if (msg.length < 20 || msg.length > 548 || msg.readUInt16BE(0) !== 0x0001 || msg.readUInt32BE(4) !== MAGIC) return
  if (rinfo.family !== 'IPv4') return
  const res = Buffer.alloc(32)
  res.writeUInt16BE(0x0101, 0) // Binding success response
  res.writeUInt16BE(12, 2) // one attribute of 4 + 8 bytes
  res.writeUInt32BE(MAGIC, 4)
  msg.copy(res, 8, 8, 20)
  res.writeUInt16BE(0x0020, 20) // XOR-MAPPED-ADDRESS
  res.writeUInt16BE(8, 22)
  res.writeUInt8(0, 24)
  res.writeUInt8(1, 25) // IPv4
  res.writeUInt16BE(rinfo.port ^ (MAGIC >>> 16), 26)
  const ip = rinfo.address.split('.').reduce((a, b) => ((a << 8) | Number(b)) >>> 0, 0)
  res.writeUInt32BE((ip ^ MAGIC) >>> 0, 28)
  sock.send(res, rinfo.port, rinfo.address)
  console.log(JSON.stringify({ event: 'binding', from: `${rinfo.address}:${rinfo.port}` }))
})
sock.bind(port, host, () => console.log(JSON.stringify({ event: 'ready' })))
