/**
 * Which transport opens which scheme: the one list a new transport joins. Network
 * transports all open through `net.ts` (the native side picks the transport from the
 * URL); shared memory publishes from JavaScript and has a port of its own.
 */
import type { Codec } from '../codec.js'
import type { Port, TransportName } from '../port.js'
import type { StructCodec } from '../struct.js'
import { openNet } from './net.js'
import { openShmOrFallback } from './shm-fallback.js'

/** Opens a transport's port for one hub. */
export type OpenPort = <T>(url: string, options: object, codec: Codec<T> | StructCodec<T>) => Port<T>

/** Every transport this version opens, by scheme. */
export const TRANSPORTS: Record<TransportName, OpenPort> = {
  shm: openShmOrFallback,
  udp: openNet,
  quic: openNet,
  tcp: openNet,
  uds: openNet,
}

/** The transport for `scheme`, if this version has it. */
export function transportFor(scheme: string): OpenPort | undefined {
  return Object.hasOwn(TRANSPORTS, scheme) ? TRANSPORTS[scheme as TransportName] : undefined
}

/** The schemes this version opens, for messages (`shm://, udp://, quic://, tcp:// and uds://`). */
export function available(): string {
  const names = Object.keys(TRANSPORTS).map((s) => `${s}://`)
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)}` : (names[0] ?? '')
}
