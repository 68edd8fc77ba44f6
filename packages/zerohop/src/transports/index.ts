/**
 * Which transport opens which scheme: the one list a new transport joins. Network
 * transports all open through `net.ts` (the native side picks the transport from the
 * URL); shared memory publishes from JavaScript and has a port of its own.
 */
import { type Codec, raw } from '../codec.js'
import type { Port, TransportName } from '../port.js'
import type { StructCodec } from '../struct.js'
import { type Selected, openAuto } from './auto.js'
import { openNet } from './net.js'
import { openShmOrFallback } from './shm-fallback.js'
import { openShmRpc } from './shm-rpc.js'

/** Opens a transport's port for one hub. */
export type OpenPort = <T>(url: string, options: object, codec: Codec<T> | StructCodec<T>) => Port<T>

/** Every transport this version opens, by scheme. */
export const TRANSPORTS: Record<TransportName, OpenPort> = {
  shm: openShmOrFallback,
  udp: openNet,
  quic: openNet,
  tcp: openNet,
  uds: openNet,
  kcp: openNet,
  nats: openNet,
}

/** Opens a transport's port for `Rpc`: a server (`listen`) or a client. */
export type OpenRequestPort = (url: string, options: object, listen: boolean) => Port<Uint8Array>

/** A network transport's requests are its hub's, listening or connecting. */
const overNet: OpenRequestPort = (url, options, listen) => openNet(url, { ...options, listen }, raw)

/** How each transport opens for `Rpc` (where it has no requests, the port says so). */
export const REQUEST_TRANSPORTS: Record<TransportName, OpenRequestPort> = {
  shm: openShmRpc,
  udp: overNet,
  quic: overNet,
  tcp: overNet,
  uds: overNet,
  kcp: overNet,
  // A client subscribes to nothing but its inbox (it would get other clients' requests).
  nats: (url, options, listen) => openNet(url, listen ? { ...options, listen } : { ...options, subscribe: false }, raw),
}

/**
 * Opens a URL whose scheme is not a transport but a way to choose one: the port, and
 * how it was chosen.
 */
export type Select = <T>(url: string, options: object, codec: Codec<T> | StructCodec<T>) => Promise<Selected<T>>

/** The schemes that choose a transport (`auto://host:port`: see `auto.ts`). */
export const SELECTORS: Record<string, Select> = { auto: openAuto }

/** How `url` chooses its transport, if its scheme is a selector's. */
export function selectorFor(url: string): Select | undefined {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase()
  return scheme !== undefined && Object.hasOwn(SELECTORS, scheme) ? SELECTORS[scheme] : undefined
}

/** The transport for `scheme`, if this version has it. */
export function transportFor(scheme: string): OpenPort | undefined {
  return Object.hasOwn(TRANSPORTS, scheme) ? TRANSPORTS[scheme as TransportName] : undefined
}

/** How `Rpc` opens `scheme`, if this version has it. */
export function requestTransportFor(scheme: string): OpenRequestPort | undefined {
  return Object.hasOwn(REQUEST_TRANSPORTS, scheme) ? REQUEST_TRANSPORTS[scheme as TransportName] : undefined
}

/** The schemes this version opens, for messages (`shm://, udp://, quic://, tcp://, uds://, kcp:// and nats://`). */
export function available(): string {
  const names = Object.keys(TRANSPORTS).map((s) => `${s}://`)
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)}` : (names[0] ?? '')
}
