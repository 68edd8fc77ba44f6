// The transports that connect (quic://, tcp:// plain and with TLS, uds://, kcp://), as the
// tests that run on each of them open servers and clients: connections.spec.ts and
// rpc.spec.ts.
import type { HubOptions } from 'zerohop'
import { uniqueName } from './helpers.ts'

export interface Connecting {
  name: 'quic' | 'tcp' | 'uds' | 'kcp'
  /** How its tests are named, when one transport is run two ways (tcp and tcp+tls). */
  label?: string
  /** What every server of the tests needs besides `listen: true`. */
  server?: HubOptions<Uint8Array>
  /** Where a server listens: a fresh URL. */
  listenUrl(): string
  /** Where a client connects, given the server's listen URL and `localAddress`. */
  dialUrl(listenUrl: string, address: string | undefined): string
  /** What every client of the tests needs (QUIC: to accept the test server's certificate). */
  client: HubOptions<Uint8Array>
  /** Options that notice a dead or frozen peer within about a second. */
  liveness: Record<string, number>
  /** What `recvMessage().from` says of the server. */
  from(address: string | undefined): RegExp | string
}

export const fast = { reconnect: { initialMs: 20, maxMs: 200 } }
const tcp: Connecting = {
  name: 'tcp',
  listenUrl: () => 'tcp://127.0.0.1:0',
  dialUrl: (_, address) => `tcp://${address}`,
  client: fast,
  liveness: { heartbeatMs: 250 },
  from: (address) => address!,
}
export const connecting: Connecting[] = [
  {
    name: 'quic',
    listenUrl: () => 'quic://127.0.0.1:0',
    dialUrl: (_, address) => `quic://${address}`,
    client: { tls: { dangerouslyAcceptAnyServer: true }, ...fast },
    liveness: { idleTimeoutMs: 1000, keepAliveMs: 250 },
    from: (address) => address!,
  },
  tcp,
  { ...tcp, label: 'tcp+tls', server: { tls: {} }, client: { tls: { dangerouslyAcceptAnyServer: true }, ...fast } },
  {
    name: 'uds',
    listenUrl: () => `uds://@${uniqueName('conn')}`,
    dialUrl: (url) => url,
    client: fast,
    liveness: { heartbeatMs: 250 },
    from: () => /^peer:\d+$/,
  },
  { ...tcp, name: 'kcp', listenUrl: () => 'kcp://127.0.0.1:0', dialUrl: (_, address) => `kcp://${address}` },
]

