/**
 * `deccom bootstrap --metrics HOST:PORT`: `node.metrics()` over HTTP for a Prometheus-compatible
 * scraper. `GET /metrics` (and `HEAD`) answers the Prometheus text format (version 0.0.4); any
 * other path is 404, any other method on /metrics 405. The server listens only on the address it
 * is given (`:PORT` alone means 127.0.0.1, not every interface) and is closed with the node.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Node } from '../node'
import { hostPort } from './common'

/** The Content-Type of the Prometheus text exposition format. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** A running metrics endpoint. */
export interface MetricsServer {
  /** The URL it serves the metrics at, e.g. `http://127.0.0.1:9464/metrics`. */
  readonly url: string
  /** Stops listening and ends open keep-alive connections. */
  close(): Promise<void>
}

/** `--metrics` text → where to listen: "HOST:PORT", "[v6]:PORT", or ":PORT" (loopback). */
export function metricsAddress(text: string): { host: string; port: number } {
  return text.trim().startsWith(':') ? hostPort(`127.0.0.1${text.trim()}`, '--metrics') : hostPort(text, '--metrics')
}

function handle(node: Node, req: IncomingMessage, res: ServerResponse): void {
  const path = new URL(req.url ?? '/', 'http://x').pathname
  if (path !== '/metrics') {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found; the metrics are at /metrics\n')
    return
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n')
    return
  }
  let body: string
  try {
    body = node.metrics()
  } catch (e) {
    res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' }).end(`metrics unavailable: ${(e as Error).message}\n`)
    return
  }
  res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' })
  res.end(req.method === 'HEAD' ? undefined : body)
}

/** Serves `node.metrics()` at http://HOST:PORT/metrics (see the module comment). */
export async function serveMetrics(node: Node, listen: string): Promise<MetricsServer> {
  const { host, port } = metricsAddress(listen)
  const server: Server = createServer((req, res) => handle(node, req, res))
  // A scraper sends small requests; bound what one client can hold.
  server.maxHeadersCount = 64
  server.headersTimeout = 10_000
  server.requestTimeout = 10_000
  server.keepAliveTimeout = 5_000
  server.maxConnections = 64
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const a = server.address() as AddressInfo
  const url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`
  let closing: Promise<void> | undefined
  return {
    url,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })),
  }
}
