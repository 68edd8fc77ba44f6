// Checked by `tsc --noEmit` (npm test), not run: a transport's options are typed by
// the URL's scheme, so another transport's option is a type error. Each
// `@ts-expect-error` fails the check if the error it expects goes away.
import { Hub } from 'zerohop'

type Quote = { px: number }

export async function typedByScheme(port: number, dynamic: string): Promise<void> {
  // @ts-expect-error a QUIC option on a udp:// URL
  await Hub.open<Quote>('udp://127.0.0.1:0', { codec: 'json', listen: true })
  // @ts-expect-error a UDP option on a quic:// URL (a template URL keeps its scheme)
  await Hub.open(`quic://127.0.0.1:${port}`, { peers: [] })
  // @ts-expect-error a QUIC option on a shm:// URL
  await Hub.open('shm://x', { tls: {} })
  // @ts-expect-error TLS on a uds:// URL (a Unix socket stays on the host)
  await Hub.open('uds:///run/x.sock', { tls: {} })
  // @ts-expect-error QUIC's datagrams on a tcp:// URL
  await Hub.open(`tcp://127.0.0.1:${port}`, { datagrams: true })
  // @ts-expect-error a UDP option on a uds:// URL
  await Hub.open('uds:///run/x.sock', { peers: [] })
  // @ts-expect-error a URL only known at run time takes the options every hub has (and shared memory's)
  await Hub.open(dynamic, { peers: [] })
  // Each transport's own, the common ones anywhere:
  await Hub.open<Quote>(`udp://127.0.0.1:${port}`, { codec: 'json', peers: [], slotSize: 64 })
  await Hub.open(`quic://127.0.0.1:${port}`, { listen: true, tls: { ca: 'ca.pem' }, backpressure: 'block' })
  await Hub.open(`tcp://127.0.0.1:${port}`, { listen: true, heartbeatMs: 250, reconnect: { maxAttempts: 3 } })
  await Hub.open(`tcp://127.0.0.1:${port}`, { tls: { ca: 'ca.pem', serverName: 'localhost' } })
  await Hub.open('uds://@broker', { listen: true, allowUids: [1000], backpressure: 'drop_new' })
  await Hub.open(dynamic, { slotSize: 64, maxSubscribers: 2, spinUs: 0 })
}
