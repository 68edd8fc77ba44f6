/**
 * `Rpc` over `shm://name`: requests go into one segment, `<name>.rpc`, that every
 * client publishes into and the servers read as one work group (`group`: each request
 * to one server, whichever takes it first); each client reads its replies from a
 * segment of its own, `<name>.rpc.<pid>.<n>`, that the servers publish into. So a
 * reply never waits behind another client's, and a client that stops reading slows
 * nobody: its ring laps (it can hold every reply the client waits for, since a client
 * waits for at most {@link REPLY_SLOTS} at once).
 *
 * Each message starts with a 16-byte header (little endian):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 1 | kind: 1 request, 2 reply, 3 failed request, 4 cancelled request (as the network envelope's) |
 * | 4 | 4 | requests and cancellations: the client's process id |
 * | 8 | 4 | and its number in that process (its reply segment is `<name>.rpc.<pid>.<n>`) |
 * | 12 | 4 | the request's key on its client |
 *
 * Neither side can be told when the other dies, so each looks: the server every
 * `heartbeatMs` at its clients (a client whose process died, or who closed its reply
 * segment, is gone: its requests end, and its reply segment goes with the server's
 * handle on it), a client at the request segment's reader (gone: its requests fail
 * with `ERR_CONNECTION_LOST`, and it looks for the next server every 10 ms). With
 * several servers a client cannot tell which one holds which request: when one dies,
 * every request in flight fails (retryable); one that closes fails its own (see
 * `RpcServer.close`), and a cancellation reaches only the server that takes it (the
 * others' handlers run to their end, their answers dropped). Where shared memory
 * cannot be used, the same `Rpc` runs over a Unix socket instead.
 */
import { describe, raw } from '../codec.js'
import { BackpressureError, BadOptionError, ClosedError, ConnectionLostError, InvalidStateError, type ZerohopError } from '../errors.js'
import type { MessageInfo, RequestInfo } from '../envelope.js'
import { binding, native } from '../native.js'
import type { HubStatus, Loan, Port, PortSettings, PublishCounters, RequestPort, StatusEvent } from '../port.js'
import { FRAME_HEADER, ShmPublisher, ShmRing, ShmSubscriber } from '../shm-ring.js'
import { openNet } from './net.js'
import { SegmentPort } from './shm.js'
import { fallbackUrl, streamOptions, unusable } from './shm-fallback.js'

const HEADER = FRAME_HEADER
const EMPTY = new Uint8Array(0)
const KIND = 0
const PID = 4
const CLIENT = 8
const KEY = 12
const REQUEST = 1
const REPLY = 2
const FAILED = 3
const CANCELLED = 4

/** Slots of a client's reply segment: the most requests it waits for at once. */
export const REPLY_SLOTS = 1024
/** The work group of a name's servers on its request segment. */
const SERVERS = 'rpc-servers'
/** How often a client without a server looks for one. */
const LOOK_MS = 10
const TWO_32 = 2 ** 32
/** `shm://` options that mean nothing to `Rpc`. */
const NOT_FOR_RPC = ['memfd', 'highWater', 'lowWater', 'role']

/** The clients this process made so far: numbers their reply segments. */
let clientsMade = 0

/**
 * Opens the server (`listen`) or a client of `Rpc` over `url` (`shm://name`), or over
 * a Unix socket where shared memory cannot be used.
 */
export function openShmRpc(url: string, options: object, listen: boolean): Port<Uint8Array> {
  const endpoint = native(() => binding.parseEndpoint(url))
  const name = endpoint.name ?? ''
  const own: Record<string, unknown> = { ...Object.fromEntries(endpoint.params), ...options }
  for (const k of NOT_FOR_RPC) if (k in own) throw new BadOptionError(`Rpc over shm:// has no option '${k}'`)
  let why = process.env.ZEROHOP_SHM === 'off' ? 'ZEROHOP_SHM=off' : undefined
  if (why === undefined) {
    try {
      return listen ? ShmRpcServer.open(name, own) : ShmRpcClient.open(name, own)
    } catch (e) {
      if (!unusable(e)) throw e
      why = (e as Error).message
    }
  }
  return openNet(fallbackUrl(`${name}.rpc.sock`, why), { ...streamOptions([], own), listen }, raw)
}

/** `heartbeatMs` of `options` (default 1000; 0: never look). */
function heartbeatOf(options: Record<string, unknown>): number {
  const ms = options.heartbeatMs ?? 1000
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new BadOptionError(`heartbeatMs must be a number of milliseconds, 0 or more, got ${describe(ms)}`)
  }
  return ms
}

/** Opens segment `name` with `options`, less those `Rpc` decides itself. */
function openSegment(name: string, options: Record<string, unknown>, own: Record<string, unknown>): ShmRing {
  const { heartbeatMs: _, ...rest } = options
  const handle = native(() => binding.ShmHandle.open(`shm://${name}`, { ...rest, ...own, heartbeatMs: 0 }))
  try {
    return new ShmRing(handle)
  } catch (e) {
    native(() => handle.close())
    throw e
  }
}

/** The live readers of `ring` (a work group's members, not its own entry), each as `subscriber:<pid>:<entry>`. */
function readersOf(ring: ShmRing): string[] {
  const readers: string[] = []
  for (let i = 0; i < ring.layout.maxSubscribers; i++) {
    const base = ring.SUBS + i * ring.SUB_STRIDE
    const pid = Atomics.load(ring.i32, base + ring.SUB_PID) >>> 0
    if (pid !== 0 && Atomics.load(ring.i32, base + ring.SUB_GROUP) !== -1 && binding.isProcessAlive(pid)) readers.push(`subscriber:${pid}:${i}`)
  }
  return readers
}

/** The process of a reader named as {@link readersOf} names it. */
const pidOf = (reader: string): number => Number(reader.split(':')[1])

/** What the server and a client have in common: a port whose hub reads one ring and never publishes. */
abstract class ShmRpcPort extends SegmentPort implements Port<Uint8Array> {
  readonly transport = 'shm'
  readonly envelope = HEADER
  /** A request's answer comes within microseconds: the hub polls for `spinUs` before it parks. */
  readonly pollsOnCallingThread = true
  readonly loanOpen = false
  readonly flow = undefined
  readonly statusOnDemand = false
  readonly maxMessageSize: number
  get maxStructSize(): number {
    return this.maxMessageSize
  }
  readonly subscriber: ShmSubscriber
  abstract readonly requests: RequestPort
  protected closed = false
  protected statusListener: ((event: StatusEvent, own: boolean) => void) | undefined
  protected gone: ((owned: (key: number) => boolean, error: ZerohopError) => void) | undefined
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    readonly ring: ShmRing,
    readonly settings: PortSettings,
  ) {
    super()
    this.maxMessageSize = ring.slotSize - HEADER
    this.subscriber = new ShmSubscriber(ring, HEADER)
  }

  abstract readInfo(dv: DataView, off: number, info: MessageInfo): void
  abstract status(): HubStatus
  abstract counters(): PublishCounters
  /** Looks at the other side; returns when to look next (undefined: no more). */
  protected abstract look(): number | undefined

  /** Looks now, and from then on as {@link look} says. */
  protected watch(): void {
    const next = this.look()
    if (next === undefined || this.closed) return
    this.timer = setTimeout(() => this.watch(), next)
    this.timer.unref()
  }

  publish(): never {
    throw new InvalidStateError('an Rpc port sends requests and replies, not messages')
  }

  publishBatch(): never {
    return this.publish()
  }

  hasRoom(): never {
    return this.publish()
  }

  publishPacked(): never {
    return this.publish()
  }

  loan(): Loan<Uint8Array> {
    return this.publish()
  }

  onStatus(listener: (event: StatusEvent, own: boolean) => void): void {
    this.statusListener = listener
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.timer)
    this.ring.close()
  }
}

/** A client as its server knows it. */
interface Client {
  /** Its number on this server: the high part of its requests' keys here. */
  index: number
  /** Its key in the server's table: `pid * 2^31 + n`. */
  tag: number
  pid: number
  n: number
  /** What `RequestContext.from` says of it. */
  from: string
  /** Its reply segment (undefined: it could not be joined, the client is gone). */
  ring: ShmRing | undefined
  pub: ShmPublisher | undefined
}

/** The server: reads `<name>.rpc`, answers into each client's reply segment. */
class ShmRpcServer extends ShmRpcPort {
  readonly requests: RequestPort
  /** By `pid * 2^31 + n`. */
  private readonly clients = new Map<number, Client>()
  private readonly byIndex: (Client | undefined)[] = []
  private readonly freeIndexes: number[] = []
  /** The client of the last request read (most come in runs from one). */
  private last: Client | undefined

  static open(name: string, options: Record<string, unknown>): ShmRpcServer {
    const heartbeatMs = heartbeatOf(options)
    const ring = openSegment(`${name}.rpc`, options, { role: 'subscriber', group: SERVERS })
    let server: ShmRpcServer | undefined
    try {
      server = new ShmRpcServer(ring, name, heartbeatMs, options.spinUs)
    } catch (e) {
      if (server) server.close()
      else ring.close()
      throw e
    }
    server.watch()
    return server
  }

  private constructor(
    ring: ShmRing,
    private readonly name: string,
    private readonly heartbeatMs: number,
    private readonly spinUs: unknown,
  ) {
    super(ring, native(() => ring.handle.settings()) as PortSettings)
    this.requests = {
      request: () => {
        throw new InvalidStateError('an Rpc server answers requests; it does not send them')
      },
      cancel: () => false,
      respond: (key, ok, bytes) => this.respond(key, ok, bytes),
      pending: () => 0,
      onGone: (listener) => {
        this.gone = listener
      },
    }
  }

  status(): HubStatus {
    return this.closed ? 'closed' : 'connected'
  }

  readInfo(dv: DataView, off: number, info: MessageInfo): void {
    const r = info as RequestInfo
    const kind = dv.getUint8(off + KIND)
    const client = this.client(dv.getUint32(off + PID, true), dv.getUint32(off + CLIENT, true))
    const key = dv.getUint32(off + KEY, true)
    r.kind = kind
    r.request = client.index * TWO_32 + key
    r.from = client.from
  }

  /** The client `n` of process `pid`: known, or joined now. */
  private client(pid: number, n: number): Client {
    const last = this.last
    if (last !== undefined && last.pid === pid && last.n === n) return last
    const tag = pid * 2 ** 31 + (n & 0x7fff_ffff)
    let c = this.clients.get(tag)
    if (c === undefined) {
      c = this.join(pid, n, tag)
      this.clients.set(tag, c)
    }
    this.last = c
    return c
  }

  private join(pid: number, n: number, tag: number): Client {
    const index = this.freeIndexes.pop() ?? this.byIndex.length
    const c: Client = { index, tag, pid, n, from: `client:${pid}:${n}`, ring: undefined, pub: undefined }
    this.byIndex[index] = c
    let ring: ShmRing | undefined
    try {
      const spin = this.spinUs === undefined ? {} : { spinUs: this.spinUs }
      ring = openSegment(`${this.name}.rpc.${pid}.${n}`, spin, { role: 'publisher', backpressure: 'drop_old' })
    } catch {
      // Gone already (or never there): the next look drops it.
    }
    if (ring?.layout.created) ring.close() // made just now: the client's went with it
    else if (ring !== undefined) {
      c.ring = ring
      c.pub = new ShmPublisher(ring, 'drop_old', this.settings.publishTimeoutMs, undefined)
    }
    this.statusListener?.({ status: 'connected', peer: c.from }, false)
    return c
  }

  private respond(key: number, ok: boolean, bytes: Uint8Array): boolean {
    const index = Math.floor(key / TWO_32)
    const c = this.byIndex[index]
    if (c === undefined || c.pub === undefined) return false
    // (Not `key % TWO_32`: a double's remainder is a call into C in V8.)
    c.pub.publishFramed(bytes, ok ? REPLY : FAILED, 0, 0, key - index * TWO_32)
    return true
  }

  protected look(): number | undefined {
    for (const c of this.clients.values()) {
      if (c.ring !== undefined && binding.isProcessAlive(c.pid) && readersOf(c.ring).length > 0) continue
      this.drop(c)
    }
    return this.heartbeatMs > 0 ? this.heartbeatMs : undefined
  }

  /** Forgets client `c`: its requests end, its reply segment is let go. */
  private drop(c: Client): void {
    const died = !binding.isProcessAlive(c.pid)
    const why = new ConnectionLostError(died ? `process ${c.pid} died with requests in flight` : `${c.from} closed with requests in flight`)
    this.gone?.((key) => Math.floor(key / TWO_32) === c.index, why)
    c.ring?.close()
    this.clients.delete(c.tag)
    this.byIndex[c.index] = undefined
    this.freeIndexes.push(c.index)
    if (this.last === c) this.last = undefined
    this.statusListener?.({ status: 'disconnected', peer: c.from, ...(died ? { error: why } : {}) }, false)
  }

  counters(): PublishCounters {
    const sum: PublishCounters = { published: 0, publishedBytes: 0, dropped: 0, blocked: 0 }
    for (const c of this.clients.values()) {
      if (c.pub === undefined) continue
      sum.published += c.pub.counters.published
      sum.publishedBytes += c.pub.counters.publishedBytes
    }
    return sum
  }

  override close(): void {
    if (this.closed) return
    for (const c of this.clients.values()) c.ring?.close()
    this.clients.clear()
    super.close()
  }
}

/** A client: publishes into `<name>.rpc`, reads its replies from a segment of its own. */
class ShmRpcClient extends ShmRpcPort {
  readonly requests: RequestPort
  private readonly pub: ShmPublisher
  private readonly pid = process.pid
  /**
   * The requests sent and neither answered nor given up on: each key (never 0) at
   * `key % REPLY_SLOTS`, 0 where none (a `Set` costs a tenth of a round trip).
   */
  private readonly outstanding = new Uint32Array(REPLY_SLOTS)
  private waiting = 0
  private nextKey = 0
  /** The servers' readers, `subscriber:<pid>:<entry>` (the first is the one status events name). */
  private servers: string[] = []
  private state: HubStatus = 'connecting'

  static open(name: string, options: Record<string, unknown>): ShmRpcClient {
    const heartbeatMs = heartbeatOf(options)
    const policy = options.backpressure ?? 'fail_fast'
    if (policy !== 'fail_fast' && policy !== 'block') {
      throw new BadOptionError(
        `Rpc over shm:// sends requests with backpressure 'fail_fast' (the default: a request into a full ring fails) or 'block'; got ${describe(policy)}`,
      )
    }
    const n = ++clientsMade
    const requestRing = openSegment(`${name}.rpc`, options, { role: 'publisher', backpressure: policy })
    let replyRing: ShmRing | undefined
    let client: ShmRpcClient
    try {
      const spin = options.spinUs === undefined ? {} : { spinUs: options.spinUs }
      replyRing = openSegment(`${name}.rpc.${process.pid}.${n}`, spin, {
        role: 'subscriber',
        slotSize: requestRing.slotSize,
        capacity: REPLY_SLOTS,
        maxSubscribers: 1,
      })
      client = new ShmRpcClient(replyRing, requestRing, name, n, heartbeatMs, policy)
    } catch (e) {
      replyRing?.close()
      requestRing.close()
      throw e
    }
    client.watch()
    return client
  }

  private constructor(
    ring: ShmRing,
    private readonly requestRing: ShmRing,
    private readonly name: string,
    private readonly n: number,
    private readonly heartbeatMs: number,
    policy: 'fail_fast' | 'block',
  ) {
    super(ring, native(() => requestRing.handle.settings()) as PortSettings)
    this.pub = new ShmPublisher(requestRing, policy, this.settings.publishTimeoutMs, undefined)
    this.requests = {
      request: (bytes) => this.request(bytes),
      cancel: (key) => this.cancel(key),
      respond: () => false,
      pending: () => this.waiting,
      onGone: (listener) => {
        this.gone = listener
      },
    }
  }

  status(): HubStatus {
    return this.closed ? 'closed' : this.state
  }

  override onStatus(listener: (event: StatusEvent, own: boolean) => void): void {
    super.onStatus(listener)
    if (this.servers.length > 0) listener({ status: 'connected', peer: this.servers[0] }, true)
  }

  readInfo(dv: DataView, off: number, info: MessageInfo): void {
    const r = info as RequestInfo
    const key = dv.getUint32(off + KEY, true)
    r.kind = dv.getUint8(off + KIND)
    r.request = key
    this.settled(key)
  }

  /** Request `key` waits no more: true if it did. */
  private settled(key: number): boolean {
    const at = key & (REPLY_SLOTS - 1)
    if (key === 0 || this.outstanding[at] !== key) return false
    this.outstanding[at] = 0
    this.waiting--
    return true
  }

  private request(bytes: Uint8Array): number {
    if (this.closed) throw new ClosedError('the client is closed')
    if (this.state !== 'connected') throw new ConnectionLostError(`no server serves shm://${this.name}`)
    if (this.waiting >= REPLY_SLOTS) {
      throw new BackpressureError(`${REPLY_SLOTS} requests wait for their replies already (the most one client may)`)
    }
    // The next key whose place is free (there is one: fewer than REPLY_SLOTS wait).
    let key = this.nextKey
    do key = (key + 1) >>> 0 || 1
    while (this.outstanding[key & (REPLY_SLOTS - 1)] !== 0)
    this.pub.publishFramed(bytes, REQUEST, this.pid, this.n, key)
    this.nextKey = key
    this.outstanding[key & (REPLY_SLOTS - 1)] = key
    this.waiting++
    return key
  }

  private cancel(key: number): boolean {
    if (!this.settled(key)) return false
    try {
      this.pub.publishFramed(EMPTY, CANCELLED, this.pid, this.n, key)
    } catch {
      // No room to say so: the handler runs to its end, and its reply is dropped here.
    }
    return true
  }

  protected look(): number | undefined {
    if (this.closed) return undefined
    const servers = readersOf(this.requestRing)
    const before = this.servers
    this.servers = servers
    // Gone: every server (what waits in the ring would wait for the next one, which
    // starts past it), or one that died (which of the requests it held, nobody knows).
    const died = before.find((s) => !servers.includes(s) && !binding.isProcessAlive(pidOf(s)))
    const lost = servers.length === 0 ? before[0] : died
    if (lost !== undefined) {
      const why = new ConnectionLostError(`the server of shm://${this.name} (${lost}) is gone`)
      this.outstanding.fill(0)
      this.waiting = 0
      this.gone?.(() => true, why)
      if (servers.length === 0) {
        this.state = 'reconnecting'
        this.statusListener?.({ status: 'reconnecting', peer: lost, error: why }, true)
      }
    }
    if (servers.length > 0 && this.state !== 'connected') {
      this.state = 'connected'
      this.statusListener?.({ status: 'connected', peer: servers[0] }, true)
    }
    if (this.state !== 'connected') return LOOK_MS
    return this.heartbeatMs > 0 ? this.heartbeatMs : undefined
  }

  counters(): PublishCounters {
    return this.pub.counters
  }

  override close(): void {
    if (this.closed) return
    super.close()
    this.requestRing.close()
  }
}
