/**
 * `auto://host:port`: smart selection between hubs that may or may not share a host
 * (seed 003). Both ends open the same URL; they agree through a short hello.
 *
 * - The listener (`listen: true`) binds a network transport on host:port, chosen by the
 *   guarantee asked for and the class of the address it binds: reliable by default,
 *   KCP on loopback, private, link-local and unique-local addresses (and the
 *   unspecified one, a LAN server's usual bind), QUIC on any other (the internet's) or
 *   when `tls` is given; plain batched UDP (io_uring where it is available) with
 *   `reliable: false`. Beside it, a shared-memory rendezvous for hubs on its host
 *   (`shm://auto-<host>-<port>-<token>`, over its Unix-socket fallback where shared
 *   memory is off), and a TCP hello service on the same port number.
 * - A connecting hub says hello (what it asks for) and hears what the listener serves
 *   and where its rendezvous is. If that segment is on its host (it shares the
 *   listener's shared memory), it opens it; otherwise it goes by the class of the
 *   address it dialled, and takes what the listener serves when that is another
 *   transport that keeps the guarantee (noting what it wanted in
 *   `metrics().selection.fallbacks`); one that does not is an error.
 * - The listener is one hub over all of these (see `joined.ts`): what it publishes
 *   reaches its peers on every transport, and it receives from all of them. Hubs on
 *   its host share one segment, so they also hear each other (as on `shm://`).
 */
import { existsSync } from 'node:fs'
import { lookup } from 'node:dns/promises'
import { type Server, type Socket, createConnection, createServer, isIP } from 'node:net'
import { randomBytes } from 'node:crypto'
import { type Codec, describe } from '../codec.js'
import { BadOptionError, BadUrlError, IoError, ProtocolError, TimeoutError, UnsupportedTransportError, ZerohopError } from '../errors.js'
import { binding, native } from '../native.js'
import type { Port, Selection } from '../port.js'
import type { StructCodec } from '../struct.js'
import { JoinedPort } from './joined.js'
import { openNet } from './net.js'
import { fallbackUrl, openFallback, openShmOrFallback } from './shm-fallback.js'

/** What an address is, as smart selection sees it. */
export type AddressClass = 'loopback' | 'private' | 'link-local' | 'unique-local' | 'unspecified' | 'public'

/** The class of IP address `ip` (a literal, IPv6 without brackets). */
export function addressClass(ip: string): AddressClass {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)
  if (mapped) return addressClass(mapped[1]!)
  if (isIP(ip) === 4) {
    const [a, b] = ip.split('.').map(Number) as [number, number]
    if (a === 127) return 'loopback'
    if (a === 0) return 'unspecified'
    if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) return 'private'
    // The shared space of carrier-grade NAT: not the internet either.
    if (a === 100 && b >= 64 && b <= 127) return 'private'
    if (a === 169 && b === 254) return 'link-local'
    return 'public'
  }
  if (isIP(ip) === 6) {
    if (ip === '::1') return 'loopback'
    if (ip === '::') return 'unspecified'
    const first = ip.startsWith('::') ? 0 : Number.parseInt(ip.split(':')[0]!, 16)
    if ((first & 0xfe00) === 0xfc00) return 'unique-local'
    if ((first & 0xffc0) === 0xfe80) return 'link-local'
    return 'public'
  }
  throw new BadUrlError(`'${ip}' is not an IP address`)
}

/**
 * What an address of class `c` takes for what was `asked`, and why: plain UDP without
 * reliability; QUIC beyond a site, or where `tls` asks for encryption; KCP otherwise.
 */
function choose(ip: string, asked: Asked): { transport: 'kcp' | 'quic' | 'udp'; why: string } {
  const c = addressClass(ip)
  if (!asked.reliable) return { transport: 'udp', why: 'reliable: false' }
  if (c === 'public') return { transport: 'quic', why: `${ip} is a public address` }
  if (asked.tls !== undefined) return { transport: 'quic', why: 'tls asks for encryption' }
  return { transport: 'kcp', why: `${ip} is ${classWords(c)}` }
}

/** The options of an `auto://` hub beyond those every hub has. */
export interface AutoOptions {
  /** Listen on host:port for connecting `auto://` hubs (see the module docs). */
  listen?: boolean
  /**
   * Whether every message must arrive, in order (default true: KCP or QUIC between
   * hosts); false takes plain UDP, which counts what it loses. Shared memory between
   * hubs of one host either way.
   */
  reliable?: boolean
  /** TLS (see `quic://`): asks for encryption, so QUIC between hosts. */
  tls?: import('./connection.js').TlsOptions
}

/** The options every hub has: what an `auto://` hub hands to whichever transport it picks. */
const COMMON = [
  'role',
  'backpressure',
  'publishTimeoutMs',
  'spinUs',
  'slotSize',
  'capacity',
  'rateLimit',
  'rateLimitBytes',
  'rateBurstMs',
  'ttlMs',
]
const OWN = ['listen', 'reliable', 'tls']

/** How many ports a listener on port 0 tries before it gives up (each taken over UDP already). */
const PORT_TRIES = 16
/** How long a connecting hub tries to say hello before `ERR_TIMEOUT`, and how often. */
const HELLO_TIMEOUT_MS = 10_000
const HELLO_RETRY_MS = 100
/** The longest hello line either side reads. */
const HELLO_MAX = 4096
/** What both sides' hellos carry first, to tell a hello from a stray connection. */
const PROTOCOL = 'zerohop-auto/1'

/** What the listener answers a hello with. */
interface Answer {
  protocol: typeof PROTOCOL
  /** The transport it serves other hosts over, and on which port. */
  transport: 'kcp' | 'quic' | 'udp'
  port: number
  /** The shared-memory segment hubs on its host open. */
  rendezvous: string
}

/** What `Hub.open` gets from a selector: the port, and how its transport was chosen. */
export interface Selected<T> {
  port: Port<T>
  selection: Selection
}

/** Opens `auto://host:port` (a listener, or a hub that connects to one). */
export async function openAuto<T>(url: string, options: object, codec: Codec<T> | StructCodec<T>): Promise<Selected<T>> {
  const { host, port, params } = parseAuto(url)
  const asked = takeOptions(options as Record<string, unknown>, params)
  const hostPort = isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`
  const ip = isIP(host) ? host : (await lookup(host)).address
  return asked.listen ? listen<T>(hostPort, ip, asked, codec) : connect<T>(url, hostPort, ip, asked, codec)
}

/** The host, port and parameters of `auto://host:port?…` (the network schemes' form). */
function parseAuto(url: string): { host: string; port: number; params: [string, string][] } {
  // (Parsed by the Rust core as the network schemes are, so that every form agrees.)
  const asTcp = `tcp${url.slice(url.indexOf('://'))}`
  let e
  try {
    e = native(() => binding.parseEndpoint(asTcp))
  } catch (err) {
    throw err instanceof BadUrlError ? new BadUrlError(err.message.replace(asTcp, url)) : err
  }
  return { host: e.host!, port: e.port!, params: e.params as [string, string][] }
}

/** What an `auto://` hub was asked for: its own options, and those it hands on. */
interface Asked {
  listen: boolean
  reliable: boolean
  tls: object | undefined
  /** The options every hub has, as given (for whichever transport is picked). */
  common: Record<string, unknown>
  /** Those of them given as URL parameters, as `k=v&…` ('' if none). */
  query: string
}

function takeOptions(options: Record<string, unknown>, params: [string, string][]): Asked {
  const common: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(options)) {
    if (COMMON.includes(k)) common[k] = v
    else if (!OWN.includes(k)) throw new BadOptionError(`auto:// has no option '${k}'${nearest(k)}; it picks the transport (open kcp://, quic:// … for their own options)`)
  }
  const own: Record<string, string> = {}
  const query: string[] = []
  for (const [k, v] of params) {
    if (COMMON.includes(k)) query.push(`${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    else if (k === 'listen' || k === 'reliable') own[k] = v
    else throw new BadUrlError(`auto:// has no parameter '${k}'${nearest(k)}`)
  }
  const flag = (name: 'listen' | 'reliable', fallback: boolean): boolean => {
    const given = options[name]
    if (given !== undefined) {
      if (typeof given !== 'boolean') throw new BadOptionError(`${name} must be true or false, got ${describe(given)}`)
      return given
    }
    const p = own[name]
    if (p === undefined) return fallback
    if (p === 'true' || p === '1') return true
    if (p === 'false' || p === '0') return false
    throw new BadUrlError(`${name} must be true or false, got '${p}'`)
  }
  const tls = options.tls
  if (tls !== undefined && (typeof tls !== 'object' || tls === null)) throw new BadOptionError(`tls must be an object, got ${describe(tls)}`)
  const asked = { listen: flag('listen', false), reliable: flag('reliable', true), tls: tls as object | undefined, common, query: query.join('&') }
  if (!asked.reliable && tls !== undefined) throw new BadOptionError('tls asks for QUIC, which is reliable: it cannot go with reliable: false')
  return asked
}

/** ` (did you mean 'x'?)` for the option or parameter nearest to `name`, if one is near. */
function nearest(name: string): string {
  let best: string | undefined
  let bestDistance = 3
  for (const known of [...COMMON, ...OWN]) {
    const d = distance(name.toLowerCase(), known.toLowerCase())
    if (d < bestDistance) [best, bestDistance] = [known, d]
  }
  return best === undefined ? '' : ` (did you mean '${best}'?)`
}

/** Levenshtein distance. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) next.push(Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)))
    row = next
  }
  return row[b.length]!
}

/** `url` with the common options given as URL parameters added back. */
function withQuery(url: string, asked: Asked): string {
  return asked.query === '' ? url : `${url}?${asked.query}`
}

/** Why an address of class `c` picks what it picks. */
function classWords(c: AddressClass): string {
  return c === 'unspecified' ? 'the unspecified address (any interface)' : `a ${c} address`
}

// ---- the listener -----------------------------------------------------------------

async function listen<T>(hostPort: string, ip: string, asked: Asked, codec: Codec<T> | StructCodec<T>): Promise<Selected<T>> {
  const { transport, why } = choose(ip, asked)
  const netOptions = { ...asked.common, ...(transport === 'udp' ? {} : { listen: true }), ...(asked.tls ? { tls: asked.tls } : {}) }
  const asked0 = Number(/:(\d+)$/.exec(hostPort)![1])
  for (let attempt = 1; ; attempt++) {
    // The hello's TCP port first: with port 0 the kernel picks it, and the network
    // transport takes the same number over UDP (if another socket has it there, again).
    const hello = await helloService(ip, asked0)
    const at = isIP(ip) === 6 ? `[${ip}]:${hello.port}` : `${ip}:${hello.port}`
    let net: Port<T>
    try {
      net = openNet<T>(withQuery(`${transport}://${at}`, asked), netOptions, codec)
    } catch (e) {
      hello.close()
      if (asked0 === 0 && attempt < PORT_TRIES && inUse(e)) continue
      throw e
    }
    const parts: Port<T>[] = [net]
    try {
      const rendezvous = `auto-${ip.replaceAll(':', '_')}-${hello.port}-${randomBytes(6).toString('hex')}`
      const local = openShmOrFallback<T>(withQuery(`shm://${rendezvous}`, asked), { ...asked.common }, codec)
      parts.push(local)
      await local.ready?.()
      hello.serve({ protocol: PROTOCOL, transport, port: hello.port, rendezvous }, transport === 'udp' ? net.peers : undefined)
      const localWay = local.transport === 'shm' ? `shm://${rendezvous}` : `its Unix-socket stand-in (${local.transport}://)`
      return {
        port: new JoinedPort(parts, [hello]),
        selection: {
          chosen: transport,
          reason: `auto:// listener: ${why}: ${transport}:// on ${at}, and ${localWay} for hubs on this host`,
          fallbacks: [...(local.fallbacks ?? [])],
        },
      }
    } catch (e) {
      hello.close()
      for (const p of parts) p.close()
      throw e
    }
  }
}

/** Whether `e` says that an address is in use. */
function inUse(e: unknown): boolean {
  return e instanceof ZerohopError && /in use/i.test(e.message)
}

/** The hello service of a listener: its TCP port, until it serves, and for good once it does. */
interface HelloService {
  readonly port: number
  /**
   * Answers each hello with `answer`. Over plain UDP (`peers` given) a connecting hub
   * then says where it receives, and stays a peer while its hello connection is open.
   */
  serve(answer: Answer, peers: { setPeers(peers: string[]): void } | undefined): void
  close(): void
}

/** Listens for hellos on TCP `ip:port` (port 0: any); hellos before `serve` are turned away. */
function helloService(ip: string, port: number): Promise<HelloService> {
  const udpPeers = new Map<Socket, string>()
  let closed = false
  let answer: Answer | undefined
  let peers: { setPeers(peers: string[]): void } | undefined
  const server: Server = createServer((socket) => {
    socket.unref()
    socket.setNoDelay(true)
    socket.on('error', () => socket.destroy())
    if (answer === undefined) return socket.destroy()
    const lines = readLines(socket, (line) => {
      const msg = parseLine(line)
      if (msg === undefined) return socket.destroy()
      if (msg.udpPort !== undefined && peers !== undefined) {
        const p = Number(msg.udpPort)
        if (!Number.isInteger(p) || p < 1 || p > 65535) return socket.destroy()
        const addr = socket.remoteAddress ?? ''
        udpPeers.set(socket, `${isIP(addr) === 6 ? `[${addr}]` : addr}:${p}`)
        peers.setPeers([...udpPeers.values()])
        return
      }
      socket.write(`${JSON.stringify(answer)}\n`)
      if (peers === undefined) socket.end()
    })
    socket.on('close', () => {
      lines.stop()
      if (udpPeers.delete(socket) && !closed) peers?.setPeers([...udpPeers.values()])
    })
  })
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new IoError(`auto:// cannot listen for hellos on TCP ${ip}:${port}: ${e.message}`, { cause: e })))
    server.listen({ host: ip, port, ipv6Only: false }, () => {
      server.unref()
      resolve({
        port: (server.address() as { port: number }).port,
        serve: (a, p) => {
          answer = a
          peers = p
        },
        close: () => {
          closed = true
          server.close()
          for (const s of udpPeers.keys()) s.destroy()
        },
      })
    })
  })
}

/** Calls `onLine` with each line `socket` sends (at most HELLO_MAX bytes each). */
function readLines(socket: Socket, onLine: (line: string) => void): { stop(): void } {
  let buffered = ''
  const onData = (chunk: Buffer): void => {
    buffered += chunk.toString('utf8')
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      onLine(line)
    }
    if (buffered.length > HELLO_MAX) socket.destroy()
  }
  socket.on('data', onData)
  return { stop: () => socket.off('data', onData) }
}

/** A hello line, or undefined if it is not one. */
function parseLine(line: string): Record<string, unknown> | undefined {
  try {
    const msg = JSON.parse(line) as unknown
    if (typeof msg === 'object' && msg !== null && (msg as { protocol?: unknown }).protocol === PROTOCOL) return msg as Record<string, unknown>
  } catch {
    // not JSON: not a hello
  }
  return undefined
}

// ---- the connecting hub -----------------------------------------------------------

async function connect<T>(url: string, hostPort: string, ip: string, asked: Asked, codec: Codec<T> | StructCodec<T>): Promise<Selected<T>> {
  const [socket, answer] = await hello(ip, Number(/:(\d+)$/.exec(hostPort)![1]), asked)
  let keep = false
  try {
    const host = hostPort.slice(0, hostPort.lastIndexOf(':'))
    // On the listener's host: its rendezvous is here.
    let local = onThisHost(answer.rendezvous)
    const fallbacks: Selection['fallbacks'] = []
    if (local === 'shm' && process.env.ZEROHOP_SHM === 'off') {
      // (Its stand-in would be a socket of this hub's own, which the listener never reads.)
      fallbacks.push({ transport: 'shm', reason: `the listener is on this host, but shared memory is off here (ZEROHOP_SHM=off)` })
      local = undefined
    }
    if (local !== undefined) {
      const port =
        local === 'shm'
          ? openShmOrFallback<T>(withQuery(`shm://${answer.rendezvous}`, asked), { ...asked.common }, codec)
          : openFallback<T>(answer.rendezvous, [], { ...asked.common }, codec, 'the listener has shared memory off')
      await readied(port)
      return {
        port,
        selection: {
          chosen: port.transport,
          reason: `${url}: the listener is on this host (its rendezvous shm://${answer.rendezvous} is here)`,
          fallbacks: [],
        },
      }
    }
    const { transport: wanted, why } = choose(ip, asked)
    const served = answer.transport
    if (served !== wanted) {
      if (asked.reliable && served === 'udp') {
        throw new UnsupportedTransportError(`${url}: the listener serves plain udp:// (reliable: false); this hub asks for reliable delivery`)
      }
      if (asked.tls !== undefined && served !== 'quic') {
        throw new UnsupportedTransportError(`${url}: the listener serves ${served}://, unencrypted; this hub asks for tls`)
      }
      fallbacks.push({ transport: wanted, reason: `${why}, but the listener at ${hostPort} serves ${served}://` })
    }
    const target = `${host}:${answer.port}`
    let port: Port<T>
    if (served === 'udp') {
      const any = isIP(ip) === 6 ? '[::]' : '0.0.0.0'
      port = openNet<T>(withQuery(`udp://${any}:0`, asked), { ...asked.common, peers: [target] }, codec)
      // Where this hub receives: the listener sends to it while the hello connection lasts.
      const udpPort = Number(/:(\d+)$/.exec(port.localAddress() ?? '')?.[1])
      socket.write(`${JSON.stringify({ protocol: PROTOCOL, udpPort })}\n`)
      keep = true
      port = new JoinedPort([port], [{ close: () => socket.destroy() }])
    } else {
      port = openNet<T>(withQuery(`${served}://${target}`, asked), { ...asked.common, ...(asked.tls ? { tls: asked.tls } : {}) }, codec)
    }
    await readied(port)
    return {
      port,
      selection: { chosen: served, reason: `${url}: ${served === wanted ? why : `the listener serves ${served}://`}: ${served}://${target}`, fallbacks },
    }
  } finally {
    if (!keep) socket.destroy()
  }
}

/** Waits for `port` to be ready (a fallback connects first); closes it if it never is. */
async function readied<T>(port: Port<T>): Promise<void> {
  try {
    await port.ready?.()
  } catch (e) {
    port.close()
    throw e
  }
}

/**
 * Says hello to the listener at TCP `ip:port` (trying again while nobody listens, up to
 * HELLO_TIMEOUT_MS): the connection, and the listener's answer.
 */
async function hello(ip: string, port: number, asked: Asked): Promise<[Socket, Answer]> {
  const deadline = Date.now() + HELLO_TIMEOUT_MS
  let last = ''
  while (Date.now() < deadline) {
    try {
      return await helloOnce(ip, port, asked, deadline - Date.now())
    } catch (e) {
      if (e instanceof ProtocolError) throw e
      last = (e as Error).message
      await new Promise((r) => setTimeout(r, HELLO_RETRY_MS))
    }
  }
  throw new TimeoutError(`no auto:// listener answered at ${ip}:${port} in ${HELLO_TIMEOUT_MS} ms (${last})`)
}

function helloOnce(ip: string, port: number, asked: Asked, timeoutMs: number): Promise<[Socket, Answer]> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: ip, port })
    socket.unref()
    socket.setNoDelay(true)
    const fail = (why: string): void => {
      socket.destroy()
      clearTimeout(timer)
      reject(new IoError(why))
    }
    const timer = setTimeout(() => fail('no answer'), timeoutMs)
    socket.on('error', (e) => fail(e.message))
    socket.on('close', () => fail('closed before it answered'))
    socket.on('connect', () => socket.write(`${JSON.stringify({ protocol: PROTOCOL, reliable: asked.reliable, tls: asked.tls !== undefined })}\n`))
    const lines = readLines(socket, (line) => {
      lines.stop()
      clearTimeout(timer)
      socket.removeAllListeners('close')
      socket.removeAllListeners('error')
      socket.on('error', () => socket.destroy())
      const msg = parseLine(line)
      const transports = ['kcp', 'quic', 'udp']
      if (msg === undefined || !transports.includes(msg.transport as string) || typeof msg.rendezvous !== 'string' || !Number.isInteger(msg.port)) {
        socket.destroy()
        reject(new ProtocolError(`what answered at ${ip}:${port} is not an auto:// listener`))
        return
      }
      resolve([socket, msg as unknown as Answer])
    })
  })
}

/**
 * Whether the listener's rendezvous is on this host: `'shm'` when its segment is here,
 * `'uds'` when its Unix-socket stand-in is (the listener has shared memory off).
 */
function onThisHost(rendezvous: string): 'shm' | 'uds' | undefined {
  // (A name the listener sent: only a valid segment name is looked up.)
  if (!/^[\w.-]+$/.test(rendezvous)) return undefined
  if (native(() => binding.listSegments()).some((s) => s.name === rendezvous)) return 'shm'
  const socket = fallbackUrl(`${rendezvous}.sock`, 'looking for an auto:// rendezvous').slice('uds://'.length)
  return existsSync(socket) ? 'uds' : undefined
}
