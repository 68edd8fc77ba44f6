/** Endpoint URLs, parsed by the Rust core so every language agrees on them. */
import { binding, native } from './native.js'

/** A parsed endpoint URL. */
export interface Endpoint {
  /** `'shm' | 'udp' | 'kcp' | 'quic' | 'tcp' | 'uds'` */
  transport: string
  /** True when smart selection picked the transport (a bare name). */
  selectedAutomatically: boolean
  /** shm: the segment name. */
  name?: string
  /** udp/kcp/quic/tcp: host (IPv6 without brackets) and port. */
  host?: string
  port?: number
  /** uds: the socket path. */
  path?: string
  /** udp: the host is a multicast group. */
  multicast: boolean
  /** Query parameters, in order. */
  params: Array<[string, string]>
}

/** Parses an endpoint URL; throws `ERR_BAD_URL` saying what is wrong. */
export function parseEndpoint(url: string): Endpoint {
  if (typeof url !== 'string') {
    return native(() => binding.parseEndpoint(String(url))) as Endpoint
  }
  return native(() => binding.parseEndpoint(url)) as Endpoint
}
