/**
 * `Hub<T>`: publish and receive typed messages over the transport a URL names.
 *
 * ```ts
 * await using hub = await Hub.open<Order>('shm://orders', { codec: 'msgpack' })
 * hub.publish({ id: 1, qty: 5 })
 * for await (const order of hub) console.log(order)
 * ```
 *
 * The hub knows no transport: it holds a {@link Port} (one per transport, in
 * `transports/`) and does what every hub does the same way: the codec, receiving
 * (every transport's messages are read from a ring with the shared-memory layout),
 * waiting with a doorbell, iteration, status and metrics.
 */
import type { ChaosMetrics } from './chaos.js'
import { type Codec, type CodecOption, describe, raw, resolveCodec } from './codec.js'
import { type MessageInfo, Placement, placement } from './envelope.js'
import {
  AbortedError,
  BadOptionError,
  ClosedError,
  CodecError,
  InvalidStateError,
  TimeoutError,
  UnsupportedTransportError,
  ZerohopError,
} from './errors.js'
import { binding, native } from './native.js'
import type {
  AutoHubOptions,
  CommonHubOptions,
  HubOptions,
  KcpHubOptions,
  NatsHubOptions,
  QuicHubOptions,
  ShmHubOptions,
  TcpHubOptions,
  UdpHubOptions,
  UdsHubOptions,
} from './options.js'
import type { HubStatus, Loan, Port, Selection, StatusEvent, TransportName } from './port.js'
import { type SegmentInfo, type ListOptions, listSegments } from './registry.js'
import { type ListenerInfo, listListeners, register } from './listeners.js'
import { checkLogger, type Logged, type Logger, logHub } from './logging.js'
import { Latencies, timing } from './latency.js'
import { registerOpenTelemetry, type OtelMeter } from './otel.js'
import { hubNumber, metricsText, opened, type PromRegistry, registerPromClient } from './prometheus.js'
import type { ShmRing, ShmSubscriber, SubscriberCounters } from './shm-ring.js'
import { StructCodec, type StructView } from './struct.js'
import { available, selectorFor, transportFor } from './transports/index.js'
import type { KcpGroupMetrics, KcpMetrics } from './transports/kcp.js'
import type { NatsMetrics } from './transports/nats.js'
import type { QuicMetrics } from './transports/quic.js'
import type { StreamMetrics } from './transports/stream.js'
import type { UdpSocketMetrics } from './transports/udp.js'

export type {
  AutoHubOptions,
  BackpressurePolicy,
  CommonHubOptions,
  HubOptions,
  HubRole,
  KcpHubOptions,
  NatsHubOptions,
  QuicHubOptions,
  ShmHubOptions,
  TcpHubOptions,
  UdpHubOptions,
  UdsHubOptions,
} from './options.js'
export type { HubStatus, Loan, StatusEvent, TransportName } from './port.js'
export type { MessageInfo, RequestInfo } from './envelope.js'
export type { KcpGroupMetrics, KcpMetrics } from './transports/kcp.js'
export type { NatsMetrics, NatsOptions } from './transports/nats.js'
export type { QuicMetrics } from './transports/quic.js'
export type { TlsOptions, ReconnectOptions } from './transports/connection.js'
export type { StreamMetrics } from './transports/stream.js'
export type { UdpSocketMetrics } from './transports/udp.js'

/** The ring crossed a water mark; see `Hub.onWaterMark`. */
export interface WaterMarkEvent {
  /** `'high'`: the fill reached `highWater`; `'low'`: after that, it fell to `lowWater`. */
  mark: 'high' | 'low'
  /** The fill when it was seen (see `Hub.fill`). */
  fill: number
}

/** Options of {@link Hub.publish}. */
export interface PublishOptions {
  /**
   * The channel, 0..channels-1 (default 0), where the transport has several (QUIC: each
   * is its own stream, ordered within itself, so a slow channel does not hold up another).
   */
  channel?: number
  /**
   * Time to live, in milliseconds: a receiver that has not read the message this long
   * after it was published passes over it and counts it (`metrics().expired`), wherever
   * it waited (a send queue, a reconnect, the receive ring). Measured on the wall clock
   * (the expiry travels with the message), so across hosts their clocks must agree to
   * well within it. Every transport (over shared memory, at most 24 days).
   */
  ttlMs?: number
}

/** Options of {@link Hub.send}. */
export interface SendOptions extends PublishOptions {
  /** Reject with `ERR_TIMEOUT` if there is no room after this many milliseconds (default: the hub's `publishTimeoutMs`). */
  timeoutMs?: number
  /** Reject with `ERR_ABORTED` when aborted while waiting for room. */
  signal?: AbortSignal
}

/** Options of {@link Hub.close}. */
export interface CloseOptions {
  /**
   * Wait up to this long for what was published to reach its receivers before closing
   * (default 1000; over QUIC: until peers have read it). 0 closes at once.
   */
  lingerMs?: number
}

/** Options of {@link Hub.recv}. */
export interface RecvOptions {
  /** Reject with `ERR_TIMEOUT` after this many milliseconds. */
  timeoutMs?: number
  /** Reject with an `AbortError` (`ERR_ABORTED`) when aborted. */
  signal?: AbortSignal
}

/** A snapshot of a hub's counters. */
export interface HubMetrics {
  /** The transport in use. */
  transport: TransportName
  /** True when the transport was picked by smart selection (a bare name). */
  selectedAutomatically: boolean
  /** Why that transport. */
  selectionReason: string
  /**
   * How the transport was chosen: the one in use, why, and the ones tried (or wanted)
   * before it that could not be used, each with why (`auto://`, and `shm://` over its
   * Unix-socket stand-in).
   */
  selection: Selection
  /** Messages and bytes this hub published. */
  published: number
  publishedBytes: number
  /** Messages this hub discarded under `drop_new`. */
  dropped: number
  /** Times a `block` publish had to wait. */
  blocked: number
  /** Publishes discarded or refused for the rate limit (`rateLimit`, `rateLimitBytes`). */
  rateLimited: number
  /** Messages and bytes this hub received. */
  received: number
  receivedBytes: number
  /** Messages this hub missed because a publisher lapped it (`drop_old`). */
  lapped: number
  /** Times it skipped ahead. */
  lapEvents: number
  /** Messages it passed over unread because their time to live (`ttlMs`) had run out. */
  expired: number
  /** Messages published that this hub has not read yet. */
  lag: number
  /** Slots and slot size of the ring messages are read from, and its backing file ('' for a network hub's private ring). */
  capacity: number
  slotSize: number
  segment: string
  /** That ring's free bytes: the slots before its slowest reader is a whole ring behind, times the slot size. */
  bytesAvailable: number
  /** Shared memory: the credits this hub's subscriber has left, once it granted any (`grantCredits`). */
  credits?: number
  /**
   * UDP: the receive backend (`io_uring` or `recvmmsg`, and why io_uring is not in use),
   * packets, bytes, batches, send drops, malformed datagrams, sequence gaps (`lost`),
   * late and duplicate datagrams, reassembly failures, and what the kernel granted.
   */
  udp?: UdpSocketMetrics
  /**
   * QUIC: status, peers, reconnects, 0-RTT connections (and whether the latest used
   * it), RTT estimate (µs), congestion window, bytes, streams, datagrams lost,
   * handshake failures, slow consumers, protocol violations, unacknowledged bytes.
   */
  quic?: QuicMetrics
  /**
   * TCP and Unix sockets: status, peers, reconnects, heartbeat timeouts, slow
   * consumers, protocol violations, refused connections, unacknowledged bytes, bytes.
   */
  tcp?: StreamMetrics
  uds?: StreamMetrics
  /**
   * KCP: the reliable counters of `tcp://`, and KCP's own: conversations, RTT and RTO
   * estimates, retransmissions (fast, and after a timeout), window, duplicate segments,
   * datagrams dropped as bad or foreign.
   */
  kcp?: KcpMetrics | KcpGroupMetrics
  nats?: NatsMetrics
  /** With `chaos`: the faults in effect (and the seed that replays them), and what they did each way. */
  chaos?: ChaosMetrics
}

/** A received message with where it came from; see {@link Hub.recvMessage}. */
export interface Received<T> extends MessageInfo {
  readonly value: T
}

/** A received message read in place; see {@link Hub.borrow}. */
export interface Borrowed<T> extends MessageInfo {
  /** The payload, a view over shared memory. */
  readonly bytes: Uint8Array
  /** The value: with a `struct` codec a live view over the slot, otherwise decoded. */
  readonly value: T
  /** Sequence number. */
  readonly seq: number
  /** False once a publisher has overwritten the slot (possible only under `drop_old`). */
  valid(): boolean
  /** Moves past the message; returns whether it was still intact. */
  release(): boolean
}

/** The process's open hubs (`Hub.metricsText()`), held weakly: a hub let go unclosed goes too. */
const openHubs = new Set<WeakRef<Hub<unknown>>>()

const EMPTY: unique symbol = Symbol('empty')
/** A message overwritten while it was read (and skipped). */
const TORN: unique symbol = Symbol('torn')
/** The default of `close({ lingerMs })`. */
const LINGER_MS = 1000
/** How many messages a batch receive takes at most unless told (see `batchLimit`). */
const BATCH_DEFAULT = 1024
const noop = (): void => {}

/** Calls each of `listeners` with `event`. */
function tellEach<E>(listeners: Set<(event: E) => void>, event: E): void {
  // A copy: a listener added by another listener waits for the next event.
  // oxlint-disable-next-line unicorn/no-useless-spread
  for (const l of [...listeners]) {
    try {
      l(event)
    } catch (e) {
      // A listener's bug must not stop the others, nor vanish.
      queueMicrotask(() => {
        throw e
      })
    }
  }
}

/**
 * A hub: everyone who opens the same endpoint publishes to and receives from the
 * same stream of messages. A hub receives what the others publish, never its own.
 */
export class Hub<T = Uint8Array> implements AsyncIterable<T>, AsyncDisposable {
  /** The URL this hub was opened with. */
  readonly url: string
  /** The transport in use. */
  readonly transport: TransportName
  /** Largest message in bytes. */
  readonly maxMessageSize: number
  private readonly selectedAutomatically: boolean
  private readonly port: Port<T>
  private readonly codec: Codec<T> | StructCodec<T>
  private readonly struct: StructCodec<T> | undefined
  /**
   * The port messages are read from now: `port`, or one of its `parts` (a hub over
   * several rings reads one at a time and moves on when it has nothing); the ring,
   * cursor and envelope below are its.
   */
  private source: Port<T>
  private ring: ShmRing
  private sub: ShmSubscriber | undefined
  /** Bytes before each message in the ring: a network transport's envelope. */
  private envelope: number
  /** `port.parts`, and the index of `source` in them. */
  private readonly parts: readonly Port<T>[] | undefined
  private partAt = 0
  /** How the transport was chosen, when the port was picked by a selector (`auto://`). */
  private readonly selection: Selection | undefined
  private readonly spinUs: number
  /** Spins in a row that ran out before a message came, and waits that skipped one since (see `spinNext`). */
  private spinMisses = 0
  private spinsSkipped = 0
  private statusNow: HubStatus
  private listeningToPort = false
  private readonly statusListeners = new Set<(e: StatusEvent) => void>()
  private readonly waterListeners = new Set<(e: WaterMarkEvent) => void>()
  /** While the ring is above low water after a `'high'`: the timer that looks for `'low'`. */
  private lowWaterTimer: ReturnType<typeof setInterval> | undefined
  private closed = false
  /** True while `close()` waits for receivers: publishing is over. */
  private closing = false
  /** Whether publishing may go on (the role publishes, not closing, not closed): one check on the hot path. */
  private sendable: boolean
  private armed = false
  /** Receives waiting for a message, first come first served. */
  private waiters: Waiter[] = []
  private keepAlive: ReturnType<typeof setInterval> | undefined
  /** The slot of the batch buffer the next run of a batch receive is copied to. */
  private batchSlot = 0
  /** What `tryRecvBatch` returns, refilled each time. */
  private readonly batch: T[] = []
  /** True while `drain` runs: its callback may not receive. */
  private draining = false
  /** Bytes outside the slot of the message `valueAt` read last (undefined: in its slot). */
  private outside: number | undefined = undefined
  /** `drain()`'s runs over shared memory (one run at a time). */
  private run: RunCopy | undefined
  /** A batch receive's runs over shared memory (the whole batch). */
  private batchCopy: RunCopy | undefined
  /** The hub's one borrow object, reused by every `borrow()`. */
  private openBorrow: ShmBorrowed<T> | undefined
  /** A listening hub: takes it off the host's list of listeners (`Hub.list({ net: true })`). */
  private unlist: (() => void) | undefined
  /** With a `logger`: ends what it is told (and tells it the hub closed). */
  private unlog: (() => void) | undefined
  /** This hub among the process's open hubs (`Hub.metricsText()`). */
  private readonly self = new WeakRef<Hub<unknown>>(this as Hub<unknown>)
  /**
   * How long what this hub waits for took (`send()`, and an Rpc's requests): see `latency.ts`.
   * @internal
   */
  readonly latencies: Latencies = new Latencies(this)

  private constructor(
    url: string,
    selectedAutomatically: boolean,
    port: Port<T>,
    codec: Codec<T> | StructCodec<T>,
    selection?: Selection,
  ) {
    this.url = url
    this.selectedAutomatically = selectedAutomatically
    this.selection = selection
    this.port = port
    this.source = port
    this.parts = port.parts
    this.transport = port.transport
    this.codec = codec
    this.struct = codec instanceof StructCodec ? codec : undefined
    this.ring = port.ring
    this.sub = port.subscriber
    this.envelope = port.envelope
    this.spinUs = port.settings.spinUs
    this.maxMessageSize = port.maxMessageSize
    this.statusNow = port.status()
    this.sendable = port.settings.role !== 'subscriber'
    if (this.struct && this.struct.size > port.maxStructSize) {
      port.close()
      throw new BadOptionError(`${this.struct.name} is ${this.struct.size} bytes; the largest struct message is ${port.maxStructSize}`)
    }
    if (!port.statusOnDemand) this.listenToPort()
    if (this.sub) port.setDoorbell(() => this.onDoorbell())
    openHubs.add(this.self)
    hubNumber(this)
    opened(this)
  }

  /**
   * Opens a hub on `url`:
   * - `shm://name` or a bare `name`: shared memory;
   * - `udp://host:port`: binds that local address (port 0 picks one, see
   *   {@link localAddress}), sends to `options.peers`, receives from anyone;
   * - `udp://239.x.y.z:port` (or `[ff..]`): joins the multicast group and sends to it;
   * - `quic://host:port`: connects to a server there (with `listen: true`, accepts any
   *   number of peers on that address). TLS is always on: a connecting hub needs
   *   `tls.ca`, or `tls.dangerouslyAcceptAnyServer` for a development server's
   *   self-signed certificate. Publishing reaches every connected peer; messages wait
   *   (and survive reconnects) until the peer's application has read them.
   * - `tcp://host:port`, `uds:///path` or `uds://@name` (Linux abstract): the same
   *   reliable channels, requests and reconnects over a TCP or Unix socket (a Unix
   *   socket file is 0600). `tcp://` is plain unless `tls` is given: then TLS 1.3,
   *   with `quic://`'s options. Heartbeats find a peer that froze.
   * - `kcp://host:port`: the same reliable channels over KCP on UDP, one conversation
   *   per peer (`listen: true` accepts any number on that address); `mode` picks KCP's
   *   preset (`'fast'` by default), each parameter can be set by itself. A multicast
   *   address (`kcp://239.x.y.z:port`) is a reliable group: `role: 'publisher'` sends,
   *   `'subscriber'` is a member; every member gets every message once, in order.
   * - `nats://host[:4222]/subject`: through a NATS server. Subscribes to the subject
   *   (`*` and `>` wildcards; `group` joins a queue group; `recvMessage` says each
   *   message's subject) and publishes on it; the body is the codec's bytes as they
   *   are, so plain NATS clients interoperate. At most once, as core NATS is; the
   *   connection comes back after it is lost, with status events.
   * - `auto://host:port`: picks the transport (smart selection). The hub opened with
   *   `listen: true` serves every other one: shared memory to those on its host, and
   *   between hosts what the guarantee asked for and the address's class give (KCP
   *   on private, link-local and unique-local addresses, QUIC beyond them or with
   *   `tls`, plain UDP with `reliable: false`). `metrics().selection` says why.
   *
   * The options are typed by the URL's scheme: another transport's option is a type
   * error, and at run time `ERR_BAD_OPTION` naming it (an unknown URL parameter is
   * `ERR_BAD_URL`). UDP is unreliable: what the network loses
   * is counted (`metrics().udp.lost`), never resent.
   */
  static open<T = Uint8Array>(url: `shm://${string}`, options?: ShmHubOptions<T>): Promise<Hub<T>>
  static open<T = Uint8Array>(url: `udp://${string}`, options?: UdpHubOptions<T>): Promise<Hub<T>>
  static open<T = Uint8Array>(url: `quic://${string}`, options?: QuicHubOptions<T>): Promise<Hub<T>>
  static open<T = Uint8Array>(url: `tcp://${string}`, options?: TcpHubOptions<T>): Promise<Hub<T>>
  static open<T = Uint8Array>(url: `uds://${string}`, options?: UdsHubOptions<T>): Promise<Hub<T>>
  static open<T = Uint8Array>(url: `kcp://${string}`, options?: KcpHubOptions<T>): Promise<Hub<T>>
  static open<T = Uint8Array>(url: `nats://${string}`, options?: NatsHubOptions<T>): Promise<Hub<T>>
  static open<T = Uint8Array>(url: `auto://${string}`, options?: AutoHubOptions<T>): Promise<Hub<T>>
  /** A URL only known at run time (or a bare name): the options every hub has, and shared memory's. */
  static open<T = Uint8Array>(url: string, options?: CommonHubOptions<T> & ShmHubOptions<T>): Promise<Hub<T>>
  static async open<T = Uint8Array>(url: string, options: HubOptions<T> = {}): Promise<Hub<T>> {
    if (typeof options !== 'object' || options === null) throw new BadOptionError(`options must be an object, got ${describe(options)}`)
    const { codec: codecOption, logger, ...rest } = options
    const codec = resolveCodec(codecOption as CodecOption<T> | undefined)
    const log = logger === undefined ? undefined : checkLogger(logger)
    const select = selectorFor(url)
    if (select !== undefined) {
      const { port, selection } = await select<T>(url, rest, codec)
      return new Hub<T>(url, true, port, codec, selection).listed(rest.listen === true).logTo(log)
    }
    const endpoint = native(() => binding.parseEndpoint(url))
    const open = transportFor(endpoint.transport)
    if (open === undefined) {
      throw new UnsupportedTransportError(`the ${endpoint.transport}:// transport is not available in this version of zerohop (${available()} are)`)
    }
    const port = open<T>(url, rest, codec)
    await port.ready?.()
    const listens = rest.listen === true || endpoint.params.some(([k, v]) => k === 'listen' && v !== 'false' && v !== '0')
    return new Hub<T>(url, endpoint.selectedAutomatically, port, codec).listed(listens && endpoint.transport !== 'shm').logTo(log)
  }

  /**
   * Tells `logger` about this hub from now until it closes (the `logger` option); itself.
   * @internal
   */
  logTo(logger: Logger | undefined): this {
    if (logger !== undefined && this.unlog === undefined) this.unlog = logHub(logger, this as unknown as Logged)
    return this
  }

  /**
   * Puts a hub that `listens` on the host's list of listeners while it is open (see
   * `listeners.ts`); itself.
   * @internal
   */
  listed(listens: boolean): this {
    if (listens && this.unlist === undefined) {
      const address = this.localAddress
      this.unlist = register(this.transport, this.url, address === undefined ? this.url : `${this.url.slice(0, this.url.indexOf('://') + 3)}${address}`)
    }
    return this
  }

  /**
   * Every live shared-memory segment of this host (what `shm://name` opens), with their layout, the
   * processes that publish into them and read them, each reader's lag, and (watched for
   * `sampleMs`, default 100) their rates. Segments whose users all died are removed on
   * the way, not listed. What `zerohop ls` prints.
   *
   * ```ts
   * for (const c of await Hub.list()) console.log(c.url, c.publishers, c.subscribers)
   * ```
   */
  /** With `net: true`: the listening hubs of this host too (network transports, and `Rpc` servers), after the segments. */
  static list(options: ListOptions & { net: true }): Promise<(SegmentInfo | ListenerInfo)[]>
  static list(options?: ListOptions & { net?: false }): Promise<SegmentInfo[]>
  static async list(options: ListOptions = {}): Promise<(SegmentInfo | ListenerInfo)[]> {
    if (typeof options !== 'object' || options === null) return listSegments(options)
    const { net, ...rest } = options
    if (net !== undefined && typeof net !== 'boolean') throw new BadOptionError(`net must be true or false, got ${describe(net)}`)
    const segments = await listSegments(rest)
    return net ? [...segments, ...listListeners()] : segments
  }

  /**
   * Every open hub's metrics in the Prometheus text format (see {@link metricsText}):
   * what a `/metrics` endpoint serves.
   *
   * ```ts
   * http.createServer((_, res) => res.end(Hub.metricsText())).listen(9464)
   * ```
   */
  static metricsText(): string {
    return metricsText(Hub.live())
  }

  /** The process's open hubs. */
  private static live(): Hub<unknown>[] {
    const hubs: Hub<unknown>[] = []
    for (const ref of openHubs) {
      const hub = ref.deref()
      if (hub === undefined || hub.closed) openHubs.delete(ref)
      else hubs.push(hub)
    }
    return hubs
  }

  /**
   * Every open hub's metrics in a prom-client `Registry` (its default `register`, or
   * one of yours): the families of {@link metricsText}, read as prom-client scrapes.
   * Returns a function that takes them out again.
   *
   * ```ts
   * import client from 'prom-client'
   * Hub.registerPromClient(client.register)
   * ```
   */
  static registerPromClient(registry: PromRegistry): () => void {
    if (typeof (registry as Partial<PromRegistry> | null)?.registerMetric !== 'function') {
      throw new BadOptionError(`registerPromClient takes a prom-client Registry, got ${describe(registry)}`)
    }
    return registerPromClient(registry, () => Hub.live())
  }

  /**
   * Every open hub's metrics as instruments of an OpenTelemetry `meter`, under the
   * messaging semantic conventions' names (`messaging.client.sent.messages`,
   * `messaging.client.consumed.messages`, `messaging.client.operation.duration`, …;
   * see the README's "Metrics"). Returns a function that stops them.
   *
   * ```ts
   * Hub.registerOpenTelemetry(metrics.getMeter('zerohop'))
   * ```
   */
  static registerOpenTelemetry(meter: OtelMeter): () => void {
    if (typeof (meter as Partial<OtelMeter> | null)?.createObservableCounter !== 'function') {
      throw new BadOptionError(`registerOpenTelemetry takes an OpenTelemetry Meter, got ${describe(meter)}`)
    }
    return registerOpenTelemetry(meter, () => Hub.live())
  }

  /**
   * This hub's `metrics()` in the Prometheus text format: `zerohop_` names, base units,
   * `_total` counters, labelled by `transport`, `endpoint` (its URL) and `hub` (its
   * number in the process); a transport's own numbers as `zerohop_<transport>_<name>`.
   */
  metricsText(): string {
    return metricsText([this])
  }

  /**
   * A hub over a port opened elsewhere (`Rpc` opens one and keeps it).
   * @internal
   */
  static over<T>(url: string, port: Port<T>, codec: Codec<T>): Hub<T> {
    return new Hub<T>(url, false, port, codec)
  }

  /** Network transports: the bound address as `host:port` (`[v6]:port`); undefined for shared memory. */
  get localAddress(): string | undefined {
    return this.closed ? undefined : this.port.localAddress()
  }

  /**
   * The status now: of the connection for a hub that connects (a `quic://` client);
   * `connected` for one that listens and for hubs without connections; `closed` after
   * {@link close}.
   */
  get status(): HubStatus {
    // The native side knows first; its events reach JavaScript a moment later.
    return this.closed ? this.statusNow : this.port.status()
  }

  /**
   * Calls `listener` with every status event from now on: the hub's own and, for a
   * listening hub, each peer's (`event.peer` set). Returns a function that removes it.
   */
  onStatus(listener: (event: StatusEvent) => void): () => void {
    if (typeof listener !== 'function') throw new BadOptionError(`onStatus takes a function, got ${describe(listener)}`)
    this.statusListeners.add(listener)
    if (!this.closed) this.listenToPort()
    return () => this.statusListeners.delete(listener)
  }

  /**
   * How full the ring is, 0 to 1: the slowest reader's lag as a share of its slots. On
   * shared memory that is the slowest subscriber of the segment (a publisher slowing
   * down at, say, 0.8 keeps it from being lapped or blocked); on a network hub, its own
   * reader's. 0 once closed.
   */
  fill(): number {
    return this.closed ? 0 : this.port.ring.fill()
  }

  /**
   * Calls `listener` when the ring crosses a water mark (shared memory, a publishing
   * hub): `'high'` once a publish brings its fill to `highWater` or more, then `'low'`
   * once it fell to `lowWater` (looked at every millisecond meanwhile), and so on.
   * A publisher that slows down at `'high'` and speeds up at `'low'` is never lapped
   * or blocked. Returns a function that removes it.
   */
  onWaterMark(listener: (event: WaterMarkEvent) => void): () => void {
    if (typeof listener !== 'function') throw new BadOptionError(`onWaterMark takes a function, got ${describe(listener)}`)
    const flow = this.port.flow
    if (flow === undefined) throw new UnsupportedTransportError(`${this.transport}:// hubs have no water marks (shared memory has)`)
    if (this.closed) throw new ClosedError('the hub is closed')
    if (this.waterListeners.size === 0 && this.lowWaterTimer === undefined && !flow.watchHighWater(this.atHighWater)) {
      throw new InvalidStateError("this hub was opened with role 'subscriber': water marks are found by publishing")
    }
    this.waterListeners.add(listener)
    return () => {
      this.waterListeners.delete(listener)
      if (this.waterListeners.size === 0) this.stopLowWater()
    }
  }

  /** The publisher found high water (inside a publish: the listeners hear it after). */
  private readonly atHighWater = (fill: number): void => {
    if (this.waterListeners.size === 0 || this.closed) return
    queueMicrotask(() => this.emitWater({ mark: 'high', fill }))
    const low = this.port.flow!.waterMarks[1]
    this.lowWaterTimer = setInterval(() => {
      const now = this.fill()
      if (now > low || this.closed) return
      this.stopLowWater()
      this.emitWater({ mark: 'low', fill: now })
      if (this.waterListeners.size > 0) this.port.flow!.watchHighWater(this.atHighWater)
    }, 1)
  }

  private stopLowWater(): void {
    clearInterval(this.lowWaterTimer)
    this.lowWaterTimer = undefined
  }

  private emitWater(event: WaterMarkEvent): void {
    tellEach(this.waterListeners, event)
  }

  /**
   * How many messages to take (or send) at once for the ring's fill now: 1 while it is
   * nearly empty (for latency), growing with the fill to `max` at `highWater` (default
   * 0.8) and above (for throughput). E.g. `hub.tryRecvBatch(hub.batchHint())`.
   */
  batchHint(max = 64): number {
    if (!Number.isInteger(max) || max < 1) throw new BadOptionError(`batchHint takes an integer max ≥ 1, got ${describe(max)}`)
    const high = this.port.flow?.waterMarks[0] ?? 0.8
    return Math.max(1, Math.min(max, Math.ceil((max * this.fill()) / high)))
  }

  /**
   * Holds publishers to credits (shared memory, a receiving hub): they may publish `n`
   * more messages past what this hub granted before (its first grant: past what was
   * published so far). A publisher with none left does what its `backpressure` says:
   * `block` waits for a grant, `drop_new` drops, `fail_fast` throws `ERR_BACKPRESSURE`;
   * a `drop_old` publisher never holds back, for credits or room. Returns the credits
   * left (at most 2^30).
   */
  grantCredits(n: number): number {
    const flow = this.port.flow
    if (flow === undefined) throw new UnsupportedTransportError(`${this.transport}:// hubs have no credits (shared memory has)`)
    if (!Number.isInteger(n) || n < 0 || n > 2 ** 30) throw new BadOptionError(`grantCredits takes an integer from 0 to 2^30, got ${describe(n)}`)
    return flow.grantCredits(n)
  }

  /** Lets the port's status events reach this hub (once). */
  private listenToPort(): void {
    if (this.listeningToPort) return
    this.listeningToPort = true
    this.port.onStatus((e, own) => this.emitStatus(e, own))
  }

  /**
   * The status events from now on, as an async iterator that ends after `closed`. While
   * it waits for the next event it keeps the process alive (an `onStatus` listener
   * does not).
   */
  statusEvents(): AsyncIterableIterator<StatusEvent> {
    const queue: StatusEvent[] = []
    let wake: (() => void) | undefined
    let done = this.closed
    const off = this.onStatus((e) => {
      queue.push(e)
      if (e.status === 'closed' && e.peer === undefined) done = true
      wake?.()
    })
    const iterator: AsyncIterableIterator<StatusEvent> = {
      [Symbol.asyncIterator]: () => iterator,
      next: async (): Promise<IteratorResult<StatusEvent>> => {
        if (queue.length === 0 && !done) {
          // A pending wait for an event holds the process open, as a pending recv()
          // does (a status listener alone does not).
          const hold = setInterval(noop, 1 << 30)
          try {
            while (queue.length === 0 && !done) await new Promise<void>((r) => (wake = r))
          } finally {
            clearInterval(hold)
          }
        }
        wake = undefined
        const e = queue.shift()
        if (e !== undefined) return { value: e, done: false }
        off()
        return { value: undefined, done: true }
      },
      return: async (): Promise<IteratorResult<StatusEvent>> => {
        off()
        done = true
        queue.length = 0
        return { value: undefined, done: true }
      },
    }
    return iterator
  }

  private emitStatus(event: StatusEvent, own: boolean): void {
    if (own) {
      // The transport replays what happened before the hub listened, which may be the
      // status the hub already reported when it opened: that is no change.
      if (event.status === this.statusNow && event.attempt === undefined && event.error === undefined) return
      this.statusNow = event.status
    }
    tellEach(this.statusListeners, event)
  }

  /** Replaces where published messages go (`host:port` each), where the transport sends to peers it is told (UDP). */
  setPeers(peers: string[]): void {
    if (this.closed) throw new ClosedError('the hub is closed')
    const control = this.port.peers
    if (!control) {
      throw new InvalidStateError(`setPeers() does not apply to ${this.transport}:// hubs: they reach every subscriber or peer`)
    }
    if (!Array.isArray(peers) || !peers.every((p) => typeof p === 'string')) {
      throw new BadOptionError(`peers must be an array of 'host:port' strings, got ${describe(peers)}`)
    }
    control.setPeers(peers)
  }

  /**
   * Sends what is batched now. Over UDP, messages are packed into datagrams and a
   * partly filled one waits for the end of the tick (or `flushIntervalMs`); call this
   * when you know no more are coming. Elsewhere messages leave at once: a no-op.
   */
  flush(): void {
    if (this.closed) throw new ClosedError('the hub is closed')
    this.port.flush()
  }

  /** Whether {@link close} was called. */
  get isClosed(): boolean {
    return this.closed
  }

  private publishable(): void {
    if (this.sendable) return
    if (this.closed || this.closing) throw new ClosedError('the hub is closed')
    if (this.port.settings.role === 'subscriber') throw new InvalidStateError("this hub was opened with role 'subscriber' and cannot publish")
  }

  /**
   * Publishes one message to every receiver. Returns false if the `drop_new` policy
   * discarded it (for some receiver). Throws `ERR_MESSAGE_TOO_LARGE`, `ERR_BACKPRESSURE`
   * (`fail_fast`), `ERR_TIMEOUT` (`block`), `ERR_CODEC`, `ERR_CLOSED`.
   */
  publish(value: T, options?: PublishOptions): boolean {
    if (!this.sendable) this.publishable()
    if (options === undefined) return this.port.publish(value, 0)
    const channel = options.channel ?? 0
    if (!Number.isInteger(channel) || channel < 0 || channel > 65535) {
      throw new BadOptionError(`channel must be an integer in 0..65535, got ${String(channel)}`)
    }
    const ttlMs = options.ttlMs
    if (ttlMs === undefined) return this.port.publish(value, channel)
    if (typeof ttlMs !== 'number' || !(ttlMs > 0) || !Number.isFinite(ttlMs)) {
      throw new BadOptionError(`ttlMs must be a number of milliseconds above 0, got ${String(ttlMs)}`)
    }
    if (this.port.publishExpiring === undefined) {
      throw new BadOptionError(`${this.transport}:// hubs have no per-message time to live (ttlMs)`)
    }
    return this.port.publishExpiring(value, channel, Date.now() + ttlMs)
  }

  /**
   * Publishes one message once there is room for it, waiting without blocking the event
   * loop (where `publish` under `block` waits synchronously, and under `drop_new` or
   * `fail_fast` gives up): resolves once the message is accepted. Under `drop_old`
   * there is always room. Rejects with `ERR_TIMEOUT` when there is still no room after
   * `timeoutMs`, `ERR_ABORTED` when `signal` aborts, and as `publish` does otherwise.
   * While it waits, a network transport tells it when it makes room (a receiver
   * acknowledged, or its flow-control window opened); otherwise, and at the latest, it
   * looks again every millisecond.
   */
  send(value: T, options: SendOptions = {}): Promise<void> {
    // (Not an async function itself: untimed, the promise is sendWhenRoom's own.)
    return timing.on ? this.timedSend(value, options) : this.sendWhenRoom(value, options)
  }

  private async timedSend(value: T, options: SendOptions): Promise<void> {
    const start = performance.now()
    await this.sendWhenRoom(value, options)
    this.latencies.since('send', start)
  }

  private async sendWhenRoom(value: T, options: SendOptions): Promise<void> {
    if (!this.sendable) this.publishable()
    const { timeoutMs = this.port.settings.publishTimeoutMs, signal } = options
    if (!(timeoutMs >= 0)) throw new BadOptionError(`timeoutMs must be a number ≥ 0, got ${String(timeoutMs)}`)
    const publish = options.channel === undefined && options.ttlMs === undefined ? undefined : { channel: options.channel, ttlMs: options.ttlMs }
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (signal?.aborted) throw abortError(signal)
      if (!this.sendable) this.publishable()
      if (this.port.hasRoom(value, options.channel ?? 0)) {
        // Room now. Should another publisher (another process, on shared memory) take it
        // first, the policy applies as to `publish`, except that `fail_fast` waits again.
        try {
          this.publish(value, publish)
          return
        } catch (e) {
          if (!(e instanceof ZerohopError && e.code === 'ERR_BACKPRESSURE')) throw e
        }
      }
      if (Date.now() >= deadline) throw new TimeoutError(`send() found no room in ${timeoutMs} ms`)
      // Asked first, then looked: room made in between rings.
      const made = this.port.roomMade?.(1)
      if (made === undefined) await new Promise((resolve) => setTimeout(resolve, 1))
      else if (!this.port.hasRoom(value, options.channel ?? 0)) await made
    }
  }

  /**
   * Publishes several messages (shared memory: with one wake-up).
   * Returns how many were accepted, in order (fewer than `values.length` only under
   * `drop_new`/`fail_fast` when the receivers are a queue behind).
   */
  publishBatch(values: readonly T[]): number {
    this.publishable()
    if (!Array.isArray(values)) throw new CodecError(`publishBatch takes an array, got ${describe(values)}`)
    return this.port.publishBatch(values)
  }

  /**
   * Publishes `packed.byteLength / messageSize` messages of `messageSize` bytes each,
   * laid end to end in `packed` (raw bytes, whatever the hub's codec). It crosses into
   * Rust once for the whole buffer, so it is the fastest way to send many small
   * fixed-size messages. Returns how many were accepted, in order.
   */
  publishPacked(packed: Uint8Array, messageSize: number): number {
    this.publishable()
    if (!(packed instanceof Uint8Array)) throw new CodecError(`publishPacked takes a Uint8Array, got ${describe(packed)}`)
    if (!Number.isInteger(messageSize) || messageSize < 1 || packed.byteLength % messageSize !== 0) {
      throw new BadOptionError(`messageSize must be a positive integer dividing ${packed.byteLength}, got ${messageSize}`)
    }
    return this.port.publishPacked(packed, messageSize)
  }

  /**
   * Reserves the next slot to write a message in place (zero-copy, shared memory). Fill
   * `loan.bytes` or, with a `struct` codec, set fields on `loan.value`; then `commit()`.
   * With `size` (raw bytes), `loan.bytes` is that long: past a slot, up to the segment's
   * `poolSize`, it lies in the payload pool. Readers wait at the loan's message until it
   * is committed (other publishers go on): keep loans short.
   */
  loan(size?: number): Loan<T> {
    this.publishable()
    return this.port.loan(size)
  }

  /** The next message, or `undefined` if none is waiting. Never blocks. */
  tryRecv(): T | undefined {
    const v = this.next()
    return v === EMPTY ? undefined : v
  }

  /**
   * {@link tryRecvMessage} into `into` (its value and what the envelope says; true if a
   * message was there), polling for up to `spinUs` where the transport reads on this
   * thread. For `Rpc`, which reuses one object for every message it takes at once:
   * it answers, and reads answers, this way, a turn of the event loop sooner than
   * through {@link recvMessage}, with no object made per message.
   * @internal
   */
  pollMessage(into: { value: T | undefined } & MessageInfo): boolean {
    const v = this.spinNext(into)
    if (v === EMPTY) return false
    into.value = v
    return true
  }

  /**
   * {@link recvMessage} into `into`, without its spin (for a caller that just polled: `Rpc`).
   * @internal
   */
  async parkMessage(into: { value: T | undefined } & MessageInfo): Promise<void> {
    into.value = await this.receive({}, into, false)
  }

  /** {@link tryRecv}, with where the message came from (network transports). */
  tryRecvMessage(): Received<T> | undefined {
    // One object, the value set into it (a spread into a second costs more than a read).
    const m = { value: undefined } as { value: T | undefined } & MessageInfo
    const v = this.next(m)
    if (v === EMPTY) return undefined
    m.value = v
    return m as Received<T>
  }

  /**
   * The messages waiting, up to `max` (default: 1024, or the ring's slots if fewer),
   * oldest first; an empty array when none is. Never blocks. The array may be the one
   * this hub returned last time, refilled: its `length` is the count, and it changes at
   * the next call. So may its values: with the raw codec over shared memory they are
   * views of a copy of the ring's slots taken at once, valid until this hub's next
   * batch receive (copy what you keep).
   */
  tryRecvBatch(max?: number): T[] {
    const limit = this.batchLimit(max)
    const out = this.batch
    const n = this.takeInto(out, 0, limit)
    // (Only when it changed: V8 drops an array's storage at length 0 and trims it when
    // much shorter, which the next batch would grow back, a copy at a time.)
    if (out.length !== n) out.length = n
    return out
  }

  /**
   * {@link tryRecvBatch}, after waiting for at least one message as {@link recv} does
   * (with its `timeoutMs` and `signal`). An array of its own when it had to wait (its
   * values, as `tryRecvBatch`'s, valid until the next batch receive).
   */
  async recvBatch(max?: number, options: RecvOptions = {}): Promise<T[]> {
    const limit = this.batchLimit(max)
    const now = this.tryRecvBatch(limit)
    if (now.length > 0) return now
    const out = [await this.recv(options)]
    this.takeInto(out, 1, limit)
    return out
  }

  /**
   * Calls `fn(value)` once for each message waiting, oldest first, and returns how many
   * (at most a ring's worth a call, so that a sender that never pauses cannot keep the
   * caller here). The fastest way to take many messages: with the raw codec over a
   * network transport, `value` is a view of the message where it lies, valid only
   * during the call (copy what you keep); other codecs decode as {@link tryRecv} does.
   * `fn` must not receive from this hub itself (`ERR_INVALID_STATE`); an error it
   * throws ends the drain, its message taken.
   */
  drain(fn: (value: T) => void): number {
    if (typeof fn !== 'function') throw new BadOptionError(`drain takes a function, got ${describe(fn)}`)
    const max = this.port.ring.capacity
    let n = this.drainSource(fn, max)
    // Over several parts: the others' messages after this one's.
    for (let turns = 1; this.parts !== undefined && n < max && turns < this.parts.length && !this.closed && this.rotate(); turns++) {
      n += this.drainSource(fn, max - n)
    }
    return n
  }

  /** {@link drain}, at most `max` messages of the part read now. */
  private drainSource(fn: (value: T) => void, max: number): number {
    const sub = this.subscriber()
    if (this.openBorrow?.held) throw new InvalidStateError('a borrowed message is still held; release() it first')
    // In place only where nothing overwrites a message while it is read: a network
    // hub's ring, whose writer waits for its reader.
    const inPlace = this.codec === raw && sub.flowControlled
    // Shared memory, raw bytes: runs of messages copied at once into a buffer of the
    // hub's, each handed as a view of it (one copy of many slots, no allocation per message).
    const runs = this.codec === raw && !sub.flowControlled
    let n = 0
    this.draining = true
    sub.beginBatch()
    try {
      while (n < max && !this.closed) {
        if (runs) {
          const k = this.drainRun(sub, fn, max - n)
          if (k > 0) {
            n += k
            continue
          }
        }
        // (A network ring's peek straight away: the loop compiles smaller.)
        const off = inPlace ? sub.peekBelowTail() : sub.peek()
        if (off < 0) {
          if (this.source.pump() > 0) continue
          break
        }
        if (inPlace) {
          const value = this.viewAt(sub, off)
          const bytes = this.outside ?? sub.len - this.envelope
          n++
          try {
            fn(value)
          } finally {
            if (!this.closed) sub.pass(bytes)
          }
          continue
        }
        const value = this.valueAt(sub, off, undefined)
        if (value === TORN) continue
        const outside = this.outside
        n++
        try {
          fn(value)
        } finally {
          if (!this.closed) sub.advance(outside)
        }
      }
    } finally {
      this.draining = false
      sub.endBatch()
    }
    return n
  }

  /**
   * One run of `drain()` over shared memory (see `ShmSubscriber.takeRun`): calls `fn`
   * with a view of each message of the run (valid during the call); how many it
   * received (0 when there was no run: then one message at a time).
   */
  private drainRun(sub: ShmSubscriber, fn: (value: T) => void, max: number): number {
    const ring = this.ring
    let run = this.run
    if (run === undefined || run.stride !== ring.stride) {
      run = this.run = runCopy(Math.max(1, Math.min(RUN_SLOTS, Math.floor(RUN_BYTES / ring.stride))), ring)
    }
    const k = sub.takeRun(run.bytes, run.words, 0, max)
    let taken = 0
    let bytes = 0
    let i = 0
    try {
      for (; i < k && !this.closed; i++) {
        const len = sub.runLength(run.words, i)
        if (len < 0) continue // this hub's own
        taken++
        bytes += len
        fn(this.runView(run, i, len) as T)
      }
    } finally {
      // (A throwing `fn` took its message: the run goes on from the next one, later.)
      if (!this.closed && k > 0) sub.skip(Math.min(k, i + 1), bytes, taken)
    }
    return taken
  }

  /**
   * `max` of a batch receive, checked. The default is bounded: a whole ring of 65,536
   * copies held at once cost the collector more than the batch saved (a third of the
   * `tryRecv` loop's rate, 12-06; 64 to 1024 at a time were as fast as the loop).
   */
  private batchLimit(max: number | undefined): number {
    if (max === undefined) return Math.min(this.port.ring.capacity, BATCH_DEFAULT)
    if (!Number.isInteger(max) || max < 1) throw new BadOptionError(`max must be a positive integer, got ${describe(max)}`)
    return max
  }

  /**
   * Writes into `out`, from index `n` on, the messages waiting, until it holds `max`
   * (one batch: see `beginBatch`); how many it holds then.
   */
  private takeInto(out: T[], n: number, max: number): number {
    n = this.takeFromSource(out, n, max)
    // Over several parts: the others' messages after this one's, each a batch of its own.
    for (let turns = 1; this.parts !== undefined && n < max && turns < this.parts.length && this.rotate(); turns++) {
      n = this.takeFromSource(out, n, max)
    }
    return n
  }

  /** {@link takeInto} from the part read now. */
  private takeFromSource(out: T[], n: number, max: number): number {
    const sub = this.subscriber()
    // Shared memory, raw bytes: runs copied at once into the hub's batch buffer, each
    // message a view of it, valid until the next batch receive (the array's own life).
    const runs = this.codec === raw && !sub.flowControlled
    this.batchSlot = 0
    sub.beginBatch()
    try {
      while (n < max) {
        if (runs) {
          const m = this.batchRun(sub, out, n, max)
          if (m >= 0) {
            n = m
            continue
          }
        }
        const v = this.next(undefined, true, false)
        if (v === EMPTY) break
        out[n++] = v
      }
    } finally {
      sub.endBatch()
    }
    return n
  }

  /**
   * One run of a batch receive over shared memory (see `ShmSubscriber.takeRun`), copied
   * into the batch buffer from slot `batchSlot` on, its messages written into `out`
   * from index `n` on as views; how many `out` holds then, or -1 when there was no run
   * (none whole there, or the buffer is full).
   */
  private batchRun(sub: ShmSubscriber, out: T[], n: number, max: number): number {
    const ring = this.ring
    let run = this.batchCopy
    // (At most BATCH_BYTES of copies: past them, a batch takes copies one by one.)
    const slots = Math.min(max, Math.max(1, Math.floor(BATCH_BYTES / ring.stride)))
    if (run === undefined || run.lens.length < slots || run.stride !== ring.stride) run = this.batchCopy = runCopy(slots, ring)
    const slot = this.batchSlot
    const k = sub.takeRun(run.bytes, run.words, slot, max - n)
    if (k === 0) return -1
    let taken = 0
    let bytes = 0
    const { words, views, lens } = run
    for (let i = slot; i < slot + k; i++) {
      const len = sub.runLength(words, i)
      if (len < 0) continue // this hub's own
      // (The slot's view, unless this message's length differs: looked up here, in the
      // loop, which a call would cost a tenth of.)
      out[n++] = (lens[i] === len ? views[i]! : this.newRunView(run, i, len)) as T
      taken++
      bytes += len
    }
    sub.skip(k, bytes, taken)
    this.batchSlot = slot + k
    return n
  }

  /** The view of the payload of slot `i` of a run's copy, `len` bytes (kept from call to call). */
  private runView(run: RunCopy, i: number, len: number): Uint8Array {
    return run.lens[i] === len ? run.views[i]! : this.newRunView(run, i, len)
  }

  /** A view of `len` bytes for slot `i` of a run's copy, kept for the messages after it. */
  private newRunView(run: RunCopy, i: number, len: number): Uint8Array {
    const at = i * this.ring.stride + this.ring.PAYLOAD
    run.lens[i] = len
    return (run.views[i] = run.bytes.subarray(at, at + len))
  }

  /**
   * {@link recv}, with where the message came from: `from` (the sender's address),
   * `channel` and, with `receiveTimestamps`, `timestampNs`. Over shared memory they are
   * absent.
   */
  async recvMessage(options: RecvOptions = {}): Promise<Received<T>> {
    const m = { value: undefined } as { value: T | undefined } & MessageInfo
    m.value = await this.receive(options, m)
    return m as Received<T>
  }

  /**
   * The next message. Waits without blocking the event loop: it spins for `spinUs`,
   * then parks until a doorbell rings; an idle receiver uses no CPU.
   */
  recv(options: RecvOptions = {}): Promise<T> {
    return this.receive(options, undefined)
  }

  /**
   * The next message; when none is there yet, a promise the doorbell settles itself
   * with the message (one promise per wait, no async function around it).
   */
  private receive(options: RecvOptions, info: MessageInfo | undefined, spin = this.spinUs > 0): Promise<T> {
    const { timeoutMs, signal } = options
    let first: T | typeof EMPTY
    try {
      if (signal?.aborted) throw abortError(signal)
      // Without a spin the doorbell watches the socket: no read of it first, which would
      // cost a system call when (as in a request and its answer) nothing is there yet.
      first = spin ? this.spinNext(info) : this.next(info, false)
    } catch (e) {
      return Promise.reject(e)
    }
    if (first !== EMPTY) return Promise.resolve(first)
    return new Promise<T>((resolve, reject) => {
      this.park(
        (timedOut) => {
          let v: T | typeof EMPTY
          try {
            if (this.closed) throw new ClosedError('the hub was closed while waiting in recv()')
            v = this.next(info)
            if (v === EMPTY && timedOut) throw new TimeoutError(`recv() timed out after ${timeoutMs} ms`)
          } catch (e) {
            reject(e)
            return true
          }
          if (v === EMPTY) return false
          resolve(v)
          return true
        },
        timeoutMs,
        signal,
        reject,
      )
    })
  }

  /** Iterates over messages until the hub is closed (then ends quietly). */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    this.subscriber()
    while (!this.closed) {
      const v = this.spinNext()
      if (v !== EMPTY) {
        yield v
        continue
      }
      await this.waitReadable()
    }
  }

  /**
   * The next message in place (zero-copy), or `undefined`. `borrowed.bytes` views the
   * slot; with a `struct` codec `borrowed.value` reads fields straight from it. Call
   * `release()` to move on. Under `drop_old` a publisher may overwrite the slot while
   * you hold it: `valid()`/`release()` tell you; `block` publishers wait for you. A
   * work group's member (`group`) gets a copy: it takes the message from its group
   * when it borrows it, and publishers wait for the group, not for it.
   */
  borrow(): Borrowed<T> | undefined {
    const sub = this.subscriber()
    const held = this.openBorrow
    if (held !== undefined && held.held) throw new InvalidStateError('a borrowed message is still held; release() it first')
    for (;;) {
      let off = sub.peek()
      while (off < 0 && this.source.pump() > 0) off = sub.peek()
      if (off < 0) return this.parts !== undefined && this.rotate() ? this.borrow() : undefined
      const borrowed = (this.openBorrow ??= new ShmBorrowed<T>(sub, this.ring, this.codec, this.struct, this.source))
      if (!sub.member) {
        borrowed.start(off, this.source.spilled(off))
        return borrowed
      }
      const copy = (sub.largeView() ?? this.ring.payloadView(sub.cursor >>> 0, this.envelope, sub.len)).slice()
      if (sub.intact()) {
        borrowed.start(off, copy, true)
        return borrowed
      }
      sub.torn()
    }
  }

  private selectionReason(): string {
    if (this.selection !== undefined) return this.selection.reason
    if (this.port.selectionReason !== undefined) return this.port.selectionReason
    return this.selectedAutomatically ? 'a bare name is a local endpoint: shared memory' : `${this.transport}:// URL`
  }

  /** Messages published that this hub has not read yet (in every part it reads). */
  private lag(): number {
    if (this.parts === undefined) return this.sub!.lag()
    let lag = 0
    for (const p of this.parts) lag += p.subscriber?.lag() ?? 0
    return lag
  }

  /** The counters of what this hub received (summed over the parts it reads). */
  private received(): SubscriberCounters | undefined {
    if (this.parts === undefined) return this.sub?.counters
    const sum = { received: 0, receivedBytes: 0, lapped: 0, lapEvents: 0, expired: 0 }
    for (const p of this.parts) {
      const c = p.subscriber?.counters
      if (c === undefined) continue
      for (const k of Object.keys(sum) as (keyof SubscriberCounters)[]) sum[k] += c[k]
    }
    return sum
  }

  /** Counters and what the hub is connected to. */
  metrics(): HubMetrics {
    const s = this.received()
    const details = this.port.details()
    const reason = this.selectionReason()
    const credits = this.port.flow?.credits()
    const chaos = this.port.chaos?.()
    return {
      transport: this.transport,
      selectedAutomatically: this.selectedAutomatically,
      selectionReason: reason,
      selection: {
        chosen: this.transport,
        reason,
        fallbacks: [...(this.selection?.fallbacks ?? []), ...(this.port.fallbacks ?? [])],
      },
      rateLimited: 0,
      ...this.port.counters(),
      received: s?.received ?? 0,
      receivedBytes: s?.receivedBytes ?? 0,
      lapped: s?.lapped ?? 0,
      lapEvents: s?.lapEvents ?? 0,
      expired: s?.expired ?? 0,
      lag: this.closed || !this.sub ? 0 : this.lag(),
      capacity: this.port.ring.capacity,
      slotSize: this.port.ring.slotSize,
      segment: this.port.ring.layout.path,
      bytesAvailable: this.closed ? 0 : this.port.ring.bytesAvailable(),
      ...(credits !== undefined ? { credits } : {}),
      ...(details ? { [this.transport]: details } : {}),
      ...(chaos ? { chaos } : {}),
    }
  }

  /**
   * Closes the hub: pending `recv()` calls reject with `ERR_CLOSED`, iterators end,
   * an open loan is aborted, and the segment is unlinked if this was its last user.
   * First waits up to `lingerMs` (default 1000) for what it published to reach its
   * receivers (over QUIC: for peers to read it). Idempotent.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    if (this.closed) return
    const lingerMs = options.lingerMs ?? LINGER_MS
    if (!(lingerMs >= 0) || !Number.isFinite(lingerMs)) throw new BadOptionError(`lingerMs must be a finite number ≥ 0, got ${String(lingerMs)}`)
    this.sendable = false
    if (lingerMs > 0 && !this.closing) {
      this.closing = true
      await this.port.linger(lingerMs)
      if (this.closed) return
    }
    this.unlog?.()
    this.unlog = undefined
    openHubs.delete(this.self)
    this.closed = true
    this.unlist?.()
    this.stopLowWater()
    if (this.openBorrow) this.openBorrow.held = false
    this.ringDoorbell()
    this.port.close()
    if (this.statusNow !== 'closed') this.emitStatus({ status: 'closed' }, true)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  // ---- receiving -------------------------------------------------------------------

  /**
   * Over several parts (see `Port.parts`): reads from the next one after the part read
   * now that has a message; false (and the part stays) when none of the others has.
   */
  private rotate(): boolean {
    const parts = this.parts!
    for (let i = 1; i < parts.length; i++) {
      const at = (this.partAt + i) % parts.length
      const part = parts[at]!
      if (part.subscriber === undefined || !(part.subscriber.readable() || part.pump() > 0)) continue
      this.partAt = at
      this.source = part
      this.ring = part.ring
      this.sub = part.subscriber
      this.envelope = part.envelope
      // (The borrow object reads one part's ring: a new one for this part.)
      this.openBorrow = undefined
      return true
    }
    return false
  }

  private subscriber(): ShmSubscriber {
    if (this.closed) throw new ClosedError('the hub is closed')
    if (this.draining) throw new InvalidStateError('drain() is running: its callback is given the messages, it may not receive more')
    if (!this.sub) throw new InvalidStateError("this hub was opened with role 'publisher' and cannot receive")
    return this.sub
  }

  /**
   * `next()`, polling for up to `spinUs` where the transport reads on this thread, while
   * polling pays: after {@link SPIN_MISSES} spins in a row that ran out before a message
   * came (it comes later: a round trip through a server), it polls once and waits, and
   * spins again one time in {@link SPIN_PROBE_EVERY} to see whether messages come sooner
   * now. (A spin that misses only takes the CPU from whoever produces the message.)
   */
  private spinNext(info?: MessageInfo): T | typeof EMPTY {
    const v = this.next(info)
    if (v !== EMPTY || this.spinUs <= 0 || !this.port.pollsOnCallingThread) return v
    if (this.spinMisses >= SPIN_MISSES && ++this.spinsSkipped % SPIN_PROBE_EVERY !== 0) return v
    const until = now() + this.spinUs / 1000
    for (let polls = 1; ; polls++) {
      const w = this.next(info)
      if (w !== EMPTY) {
        this.spinMisses = 0
        return w
      }
      if ((polls & 7) === 0 && now() >= until) {
        this.spinMisses++
        return w
      }
    }
  }

  /**
   * The next decoded message, or EMPTY; fills `info` from its envelope when given. With
   * `pump`, an empty ring makes it read the socket on this thread (network transports).
   */
  private next(info?: MessageInfo, pump = true, rotate = true): T | typeof EMPTY {
    let sub = this.subscriber()
    if (this.openBorrow?.held) throw new InvalidStateError('a borrowed message is still held; release() it first')
    for (let turns = 1; ; ) {
      const off = sub.peek()
      if (off < 0) {
        // Network transports: read the socket on this thread rather than wait for another.
        if (pump && this.source.pump() > 0) continue
        // Over several parts: the next one with a message (each looked at once a call).
        if (rotate && this.parts !== undefined && turns++ < this.parts.length && this.rotate()) {
          sub = this.sub!
          continue
        }
        return EMPTY
      }
      const value = this.valueAt(sub, off, info)
      if (value === TORN) continue
      sub.advance(this.outside)
      return value
    }
  }

  /**
   * A drain's value over a network ring (raw codec): a view of the message `sub.peek()`
   * found at `off`, where it lies (its writer overwrites nothing unread: nothing to
   * check after). Apart from {@link valueAt}, and small, so that a drain's loop compiles
   * small and once: a branch of `valueAt` first taken after the loop was optimised
   * threw the loop's code away, and recompiling it cost a receiver tens of
   * milliseconds of its first hundred.
   */
  private viewAt(sub: ShmSubscriber, off: number): T {
    const ring = this.ring
    if (placement(ring.u8, off) === Placement.Inline) {
      this.outside = undefined
      return ring.payloadView(sub.cursor >>> 0, this.envelope, sub.len) as T
    }
    let aside: Uint8Array
    try {
      aside = this.source.spilled(off)!
    } catch (e) {
      sub.advance() // skip it so that the stream goes on
      throw messageError(e, 'cannot read message')
    }
    this.outside = aside.length
    return aside as T
  }

  /**
   * The value of the message `sub.peek()` found at `off`, decoded; `outside` says how
   * many of its bytes lie outside the slot. Fills `info` from its envelope when given.
   * `TORN` when it was overwritten while read (it was skipped); an undecodable message
   * is taken and its error thrown, so that the stream goes on.
   */
  private valueAt(sub: ShmSubscriber, off: number, info: MessageInfo | undefined): T | typeof TORN {
    const ring = this.ring
    const env = this.envelope
    let value: T
    let aside: Uint8Array | undefined
    try {
      aside = this.source.spilled(off)
      if (aside !== undefined) {
        value = this.struct ? this.struct.read(new DataView(aside.buffer, aside.byteOffset, aside.byteLength), 0) : this.codec.decode(aside)
      } else if (this.struct) {
        value = this.struct.read(ring.dv, off + env)
      } else {
        value = this.codec.decode(sub.largeView() ?? ring.payloadView(sub.cursor >>> 0, env, sub.len))
      }
      if (info !== undefined && env !== 0) this.source.readInfo(ring.dv, off, info)
    } catch (e) {
      if (!sub.intact()) {
        sub.torn()
        return TORN
      }
      sub.advance() // skip the undecodable message so the stream goes on
      throw messageError(e, 'cannot decode message')
    }
    if (!sub.intact()) {
      sub.torn()
      return TORN
    }
    this.outside = aside?.length
    return value
  }

  /** Resolves when a message may be readable (true) or the hub closed (false). */
  private waitReadable(): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.park(
        () => {
          resolve(!this.closed)
          return true
        },
        undefined,
        undefined,
        reject,
      )
    })
  }

  /**
   * Waits for a message: `attempt` runs whenever one may be readable (and once more with
   * `timedOut` after `timeoutMs`), and returns true once it settled its caller; until
   * then it stays in line. An abort rejects through `reject`.
   */
  private park(
    attempt: (timedOut: boolean) => boolean,
    timeoutMs: number | undefined,
    signal: AbortSignal | undefined,
    reject: (e: unknown) => void,
  ): void {
    const sub = this.subscriber()
    const waiter: Waiter = { attempt, done: noop }
    if (timeoutMs === undefined && signal === undefined) {
      // The common wait (a plain recv()): nothing to clean up after it.
      this.waiters.push(waiter)
      this.arm(sub)
      return
    }
    let timer: ReturnType<typeof setTimeout> | undefined
    const onAbort = (): void => {
      this.leave(waiter)
      reject(abortError(signal!))
    }
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        if (attempt(true)) this.leave(waiter)
      }, Math.max(0, timeoutMs))
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    waiter.done = () => {
      if (timer !== undefined) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    this.waiters.push(waiter)
    this.arm(sub)
  }

  /** Asks for the doorbell once the ring holds more than this hub has read. */
  private arm(sub: ShmSubscriber): void {
    if (this.armed || this.closed) return
    if (sub.readable()) {
      // Already there: settle the waiters on the next microtask, as a ring would.
      queueMicrotask(() => this.ringDoorbell())
      return
    }
    // A pending receive holds the event loop open (the doorbell alone may not).
    if (!this.port.armKeepsLoopAlive) this.keepAlive ??= setInterval(noop, 1 << 30)
    this.armed = true
    this.port.arm(sub.cursor)
  }

  /** Takes `waiter` out of line (settled, timed out or aborted). */
  private leave(waiter: Waiter): void {
    waiter.done()
    const i = this.waiters.indexOf(waiter)
    if (i >= 0) this.waiters.splice(i, 1)
    if (this.waiters.length === 0) this.idle()
  }

  private idle(): void {
    if (this.keepAlive !== undefined) {
      clearInterval(this.keepAlive)
      this.keepAlive = undefined
    }
    if (this.armed && !this.closed) {
      this.armed = false
      this.port.disarm()
    }
  }

  private onDoorbell(): void {
    this.armed = false
    this.ringDoorbell()
  }

  /**
   * Lets the waiters take what arrived, in line; those left (nothing was there for
   * them) wait on. On close every one is settled (rejected, or told it is over).
   */
  private ringDoorbell(): void {
    const waiters = this.waiters
    let taken = 0
    while (taken < waiters.length && waiters[taken]!.attempt(false)) waiters[taken++]!.done()
    if (taken > 0) waiters.splice(0, taken)
    if (waiters.length === 0) this.idle()
    else if (this.sub && !this.closed) this.arm(this.sub)
  }
}

/** A receive waiting in line; see `Hub.park`. */
interface Waiter {
  attempt(timedOut: boolean): boolean
  done(): void
}

/** Runs of slots copied out of a shared-memory ring: the copy, its words, and a view per slot (with its length). */
interface RunCopy {
  /** The stride of the ring it copies (a hub over several parts may read rings of several). */
  stride: number
  bytes: Uint8Array
  words: Int32Array
  views: Uint8Array[]
  lens: Int32Array
}

/**
 * Room for the copies of `slots` slots of `ring`, with a view of each slot's whole
 * payload made at once (one after another in memory: a batch's reader goes through
 * them in order; a message of another length gets a view of its own when it comes).
 */
function runCopy(slots: number, ring: ShmRing): RunCopy {
  const bytes = new Uint8Array(slots * ring.stride)
  const views: Uint8Array[] = []
  for (let i = 0, at = ring.PAYLOAD; i < slots; i++, at += ring.stride) views.push(bytes.subarray(at, at + ring.slotSize))
  return { stride: ring.stride, bytes, words: new Int32Array(bytes.buffer), views, lens: new Int32Array(slots).fill(ring.slotSize) }
}

/** Spins that ran out in a row before a receiver stops spinning; then one wait in so many spins again (as shared memory's waiter thread). */
const SPIN_MISSES = 4
const SPIN_PROBE_EVERY = 32

/** A `drain()` run over shared memory takes at most this many slots, and bytes of them. */
const RUN_SLOTS = 256
const RUN_BYTES = 1 << 18
/** A batch receive's copy of runs over shared memory is at most this large. */
const BATCH_BYTES = 4 << 20

/**
 * The clock of a spin, looked at every 8 polls: `performance.now()` costs more than a
 * poll of a shared-memory ring (the global's getter and a brand check each call, in
 * Node 20); bound once, the getter goes.
 */
const now = performance.now.bind(performance)

function abortError(signal: AbortSignal): AbortedError {
  return new AbortedError('the operation was aborted', { cause: signal.reason })
}

/** The borrow object of a hub (reused: valid until `release()`). */
class ShmBorrowed<T> implements Borrowed<T> {
  bytes: Uint8Array = new Uint8Array(0)
  seq = 0
  held = false
  /** `bytes.byteLength`, kept (the getter costs more than the field). */
  private size = 0
  private decoded: T | undefined
  private view: (T & StructView) | undefined
  private readonly sub: ShmSubscriber
  private readonly ring: ShmRing
  private readonly codec: Codec<T> | StructCodec<T>
  private readonly struct: StructCodec<T> | undefined
  private readonly envelope: number
  private readonly port: Pick<Port<T>, 'envelope' | 'readInfo'>
  private envelopeAt = 0
  /** Whether `view` reads the ring (or a spilled message's own buffer). */
  private viewOnRing = false
  /** The message is a copy its work group's member claimed already. */
  private claimed = false

  constructor(
    sub: ShmSubscriber,
    ring: ShmRing,
    codec: Codec<T> | StructCodec<T>,
    struct: StructCodec<T> | undefined,
    port: Pick<Port<T>, 'envelope' | 'readInfo'>,
  ) {
    this.sub = sub
    this.ring = ring
    this.codec = codec
    this.struct = struct
    this.port = port
    this.envelope = port.envelope
  }

  /**
   * Holds the message at `off`; `aside` are its bytes when they were too large for the
   * slot, or a copy of them `claimed` already (a work group's member).
   */
  start(off: number, aside: Uint8Array | undefined, claimed = false): void {
    this.claimed = claimed
    this.seq = this.sub.cursor
    this.envelopeAt = off
    const at = off + this.envelope
    this.bytes = aside ?? this.sub.largeView() ?? this.ring.payloadView(this.seq >>> 0, this.envelope, this.sub.len)
    this.size = aside?.length ?? this.sub.len - this.envelope
    this.decoded = undefined
    this.held = true
    if (this.struct) {
      if (aside !== undefined) {
        this.view = this.struct.view(new DataView(aside.buffer, aside.byteOffset, aside.byteLength), 0)
        this.viewOnRing = false
      } else if (this.view && this.viewOnRing) {
        this.struct.retarget(this.view, at)
      } else {
        this.view = this.struct.view(this.ring.dv, at)
        this.viewOnRing = true
      }
    }
  }

  private info(): MessageInfo {
    const info: MessageInfo = {}
    if (this.envelope !== 0) this.port.readInfo(this.ring.dv, this.envelopeAt, info)
    return info
  }

  get from(): string | undefined {
    return this.info().from
  }

  get timestampNs(): bigint | undefined {
    return this.info().timestampNs
  }

  get channel(): number | undefined {
    return this.info().channel
  }

  get value(): T {
    if (this.view !== undefined) return this.view
    return (this.decoded ??= this.codec.decode(this.bytes))
  }

  valid(): boolean {
    if (this.claimed) return this.held
    return this.held && this.sub.cursor === this.seq && this.sub.intact()
  }

  release(): boolean {
    if (!this.held) return false
    this.held = false
    if (this.claimed) {
      this.sub.advance(this.size)
      return true
    }
    if (this.sub.cursor !== this.seq) return false
    if (this.sub.intact()) {
      this.sub.advance(this.size)
      return true
    }
    this.sub.torn()
    return false
  }
}

/** What reading a message threw: a zerohop error as it is, anything else a `CodecError` (`what` failed). */
function messageError(e: unknown, what: string): ZerohopError {
  return e instanceof ZerohopError ? e : new CodecError(`${what}: ${(e as Error).message}`, { cause: e })
}
