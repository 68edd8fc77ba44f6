/**
 * `Hub<T>`: publish and receive typed messages over the transport a URL names.
 *
 * ```ts
 * await using hub = await Hub.open<Order>('shm://orders', { codec: 'msgpack' })
 * hub.publish({ id: 1, qty: 5 })
 * for await (const order of hub) console.log(order)
 * ```
 *
 * Over `udp://` and `quic://`, received messages land in a private ring with the
 * shared-memory layout (written by the transport's threads), so every receive method
 * below reads it exactly as it reads a `shm://` segment; only publishing differs.
 */
import { type CodecOption, type Codec, resolveCodec, describe, raw } from './codec.js'
import {
  AbortedError,
  errorFor,
  type ErrorCode,
  BadOptionError,
  ClosedError,
  CodecError,
  InvalidStateError,
  TimeoutError,
  UnsupportedTransportError,
  ZerohopError,
  fromNative,
} from './errors.js'
import {
  binding,
  fast,
  native,
  type ParsedEndpoint,
  type QuicHandle,
  type QuicMetricsInfo,
  type QuicStatusEvent,
  type ShmHandle,
  type UdpHandle,
  type UdpLink,
  type QuicLink,
  type UdpMetricsInfo,
} from './native.js'
import { type BackpressurePolicy, ShmPublisher, ShmRing, ShmSubscriber, tooLarge } from './shm-ring.js'
import { StructCodec, type StructView } from './struct.js'

/** The transports this version can open. */
export type TransportName = 'shm' | 'udp' | 'quic'

/** A hub's (or a peer's) connection status. */
export type HubStatus = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed'

/** A change of status; see {@link Hub.onStatus}. */
export interface StatusEvent {
  status: HubStatus
  /**
   * The peer it is about, `host:port`: a connecting hub's server, or one of a listening
   * hub's peers (then the event is about that peer, not the hub).
   */
  peer?: string
  /** `reconnecting`: the attempt scheduled or under way, from 1. */
  attempt?: number
  /** Why, when it is a loss or a failure (`ERR_TLS_UNTRUSTED`, `ERR_CONNECTION_LOST`, …). */
  error?: ZerohopError
}

/** TLS settings of a `quic://` hub. */
export interface TlsOptions {
  /** Our certificate chain and private key, PEM files. A listener without them makes a self-signed certificate. */
  cert?: string
  key?: string
  /**
   * A CA bundle (PEM file). Connecting: the server must chain to it. Listening: clients
   * must present a certificate that chains to it (mutual TLS).
   */
  ca?: string
  /** The name the server's certificate must be for (default: the URL's host). */
  serverName?: string
  /**
   * Development only: connect to any server whatever its certificate (self-signed,
   * expired, another name). Still encrypted, but not authenticated.
   */
  dangerouslyAcceptAnyServer?: boolean
}

/** When a connecting `quic://` hub tries again after losing its connection. */
export interface ReconnectOptions {
  /** First wait (default 100 ms), growing by `multiplier` (default 2) up to `maxMs` (default 10 000). */
  initialMs?: number
  maxMs?: number
  multiplier?: number
  /** Share of each wait that is random, 0..1 (default 0.5), so clients of a restarted server spread out. */
  jitter?: number
  /** Attempts before giving up with status `disconnected` (default: never give up). */
  maxAttempts?: number
}

/** Options of {@link Hub.publish}. */
export interface PublishOptions {
  /**
   * `quic://`: the channel, 0..channels-1 (default 0). Each channel is its own stream,
   * ordered within itself, so a slow channel does not hold up another.
   */
  channel?: number
}

/** Options of {@link Hub.close}. */
export interface CloseOptions {
  /**
   * `quic://`: wait up to this long for peers to read what was published before
   * closing (default 1000). 0 closes at once.
   */
  lingerMs?: number
}

/** Which ports a hub opens. */
export type HubRole = 'pubsub' | 'publisher' | 'subscriber'

export type { BackpressurePolicy }

/** Options of {@link Hub.open}. */
export interface HubOptions<T> {
  /** How values become bytes: `'raw'` (default), `'json'`, `'msgpack'`, a `struct(...)` or a custom codec. */
  codec?: CodecOption<T>
  /**
   * `'pubsub'` (default) publishes and receives; `'publisher'` only publishes and
   * holds no subscriber entry (so `block` publishers never wait for it);
   * `'subscriber'` only receives.
   */
  role?: HubRole
  /**
   * What `publish` does when the slowest subscriber is a whole ring behind:
   * `'drop_old'` (default; not for `quic://`, whose default is `'block'`) overwrites,
   * and the slow subscriber skips ahead and counts what it missed in `metrics().lapped`; `'drop_new'` discards the new message
   * (`publish` returns false); `'fail_fast'` throws `ERR_BACKPRESSURE`; `'block'`
   * waits, synchronously, up to `publishTimeoutMs`, for room.
   */
  backpressure?: BackpressurePolicy
  /** How long `publish` may wait for room or for another publisher (default 5000). */
  publishTimeoutMs?: number
  /**
   * How long a waiting receiver spins before it parks, in µs (default 20 for shared
   * memory, 50 for UDP and QUIC). Shared memory spins in a native thread. UDP and QUIC
   * poll the socket on the calling thread: a reply that comes within the spin skips the
   * wake-up of the event loop, which costs tens of µs, and a loopback round trip takes
   * 10–30 µs, hence the longer default. The event loop is then busy for at most this
   * long each time `recv()` finds nothing; 0 parks at once.
   */
  spinUs?: number
  /** Shared memory: largest message in bytes (default 1024). Fixed when the segment is created. */
  slotSize?: number
  /** Shared memory: number of slots, a power of two (default 4096). */
  capacity?: number
  /** Shared memory: how many subscribers may attach at once (default 64). */
  maxSubscribers?: number
  /**
   * UDP: ask the kernel for receive timestamps (`SO_TIMESTAMPNS`), reported by
   * {@link Hub.recvMessage} and {@link Hub.borrow} (default false).
   */
  receiveTimestamps?: boolean
  /**
   * UDP: where published messages go, as `host:port` (`[v6]:port`). With exactly one
   * peer the socket is connected (and receives only from it). A multicast URL sends
   * to its group. Change later with {@link Hub.setPeers}.
   */
  peers?: string[]
  /**
   * UDP: small messages are packed several to a datagram; a partly filled datagram
   * goes out at the end of the current tick, on {@link Hub.flush}, or after waiting
   * this long, whichever is first (default 1). 0 sends every message at once.
   */
  flushIntervalMs?: number
  /** UDP: datagrams per receive batch (default 32). */
  batch?: number
  /** UDP: largest datagram, header included (default 1472; loopback takes 65507). Senders and receivers must agree. */
  maxDatagram?: number
  /** UDP: receive with io_uring (`'auto'`, the default, falls back to recvmmsg), `'force'` it, or `'off'`. */
  ioUring?: 'auto' | 'force' | 'off'
  /** UDP: sockets receiving on the port with SO_REUSEPORT, each with its own thread (default 1). */
  receiveThreads?: number
  /** UDP: pin receive thread `i` to core `i` (default false). */
  pinThreads?: boolean
  /** UDP: kernel receive and send buffers asked for (default 4 MiB; `metrics().udp` shows what was granted). */
  recvBuffer?: number
  sendBuffer?: number
  /** UDP: SO_BUSY_POLL in µs (default 0, off; needs CAP_NET_ADMIN to raise). */
  busyPollUs?: number
  /** UDP multicast: the interface address to join and send on (default: the kernel's choice). */
  multicastInterface?: string
  /** UDP multicast: hops a datagram may travel (default 1). */
  multicastTtl?: number
  /** UDP multicast: whether members on this host hear what it sends (default true). */
  multicastLoopback?: boolean
  /** QUIC: accept peers on the URL's address (any number) instead of connecting to it. */
  listen?: boolean
  /** QUIC: certificates. TLS is always on. */
  tls?: TlsOptions
  /** QUIC: send a keep-alive after this long idle (default 2000; 0: never). */
  keepAliveMs?: number
  /**
   * QUIC: a connection that hears nothing this long is lost (default 10 000). This is
   * how a peer that vanished (killed, unplugged) is noticed.
   */
  idleTimeoutMs?: number
  /** QUIC: the reconnect schedule of a connecting hub. */
  reconnect?: ReconnectOptions
  /** QUIC: channels, each a stream of its own per peer (default 16). */
  channels?: number
  /**
   * QUIC: bytes kept per peer and channel until the peer has read them (default 64 MiB).
   * A full queue applies `backpressure`; a listener disconnects a peer that stays full
   * past `publishTimeoutMs` (`ERR_SLOW_CONSUMER`), and the others go on.
   */
  sendQueueBytes?: number
  /**
   * QUIC: publish unreliable datagrams (unordered, not resent, one path MTU each)
   * instead of reliable stream messages (default false).
   */
  datagrams?: boolean
  /** QUIC: largest message (default 16 MiB). Messages above `slotSize` are fetched from the native side. */
  maxMessageSize?: number
  /** QUIC: how long a listener keeps a disconnected peer's unread messages for its return (default 30 000). */
  peerLingerMs?: number
}

/** The socket side of a UDP hub's metrics. */
export type UdpSocketMetrics = UdpMetricsInfo

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
  /** Messages and bytes this hub published. */
  published: number
  publishedBytes: number
  /** Messages this hub discarded under `drop_new`. */
  dropped: number
  /** Times a `block` publish had to wait. */
  blocked: number
  /** Messages and bytes this hub received. */
  received: number
  receivedBytes: number
  /** Messages this hub missed because a publisher lapped it (`drop_old`). */
  lapped: number
  /** Times it skipped ahead. */
  lapEvents: number
  /** Messages published that this hub has not read yet. */
  lag: number
  /** Slots and slot size of the ring messages are read from, and its backing file ('' for UDP's private ring). */
  capacity: number
  slotSize: number
  segment: string
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
  quic?: QuicMetricsInfo
}

/** A slot reserved for writing in place; see {@link Hub.loan}. */
export interface Loan<T> {
  /** The slot's payload bytes (`maxMessageSize` long), in shared memory. */
  readonly bytes: Uint8Array
  /** With a `struct` codec: a view whose fields write straight into the slot. */
  readonly value: T
  /** Sequence number the message will have. */
  readonly seq: number
  /** Publishes it: `len` bytes of `bytes` (default: the struct size, or the whole slot). */
  commit(len?: number): void
  /** Gives the slot back without publishing. */
  abort(): void
}

/** Where a received message came from; see {@link Hub.recvMessage}. */
export interface MessageInfo {
  /** Network transports: the sender's address, `host:port` (`[v6]:port`). */
  from?: string
  /** Network transports: the channel it came on (always 0 over UDP). */
  channel?: number
  /**
   * UDP with `receiveTimestamps`: when the kernel received the datagram (the last
   * fragment's, for a fragmented message), in nanoseconds since the Unix epoch.
   */
  timestampNs?: bigint
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

const EMPTY: unique symbol = Symbol('empty')
/** The network transports' default `spinUs`: longer than a loopback round trip (see `HubOptions.spinUs`). */
const NET_SPIN_US = 50
/** QUIC's default `close({ lingerMs })`. */
const QUIC_LINGER_MS = 1000
/** QUIC's default largest message. */
const QUIC_MAX_MESSAGE = 16 << 20
const noop = (): void => {}

/** The QUIC node of a hub, for `Rpc` (package-internal: not exported from the index). */
export let quicOf: (hub: Hub<Uint8Array>) => QuicHandle | undefined

/**
 * A hub collected with a loan still open would keep the publisher lock, and every other
 * publisher of the segment would time out. The registry's held value is the loan (which
 * does not reference the hub), so the loan can be aborted after the hub is gone.
 */
const abandonedLoans = new FinalizationRegistry<{ loan: ShmLoan<unknown> | undefined }>((held) => {
  if (held.loan?.open) held.loan.abort()
})

/**
 * A hub: everyone who opens the same endpoint publishes to and receives from the
 * same stream of messages.
 */
export class Hub<T = Uint8Array> implements AsyncIterable<T>, AsyncDisposable {
  /** The URL this hub was opened with. */
  readonly url: string
  /** The transport in use. */
  readonly transport: TransportName
  /** Largest message in bytes. */
  readonly maxMessageSize: number
  private readonly endpoint: ParsedEndpoint
  private readonly codec: Codec<T> | StructCodec<T>
  private readonly struct: StructCodec<T> | undefined
  private readonly ring: ShmRing
  /** UDP: the socket side (publishing, flushing, the I/O thread). */
  private readonly udp: UdpHandle | undefined
  /** UDP: the handle `publish` and `tryRecv` call through (see `udpPublish` in the binding). */
  private readonly link: UdpLink | undefined
  /** QUIC: the node (publishing, status, spilled messages). */
  private readonly quic: QuicHandle | undefined
  /** QUIC: the handle `publish` and `tryRecv` call through (see `quicPublish` in the binding). */
  private readonly quicLink: QuicLink | undefined
  private statusNow: HubStatus = 'connected'
  private readonly statusListeners = new Set<(e: StatusEvent) => void>()
  /** Who rings the doorbell: the ring's waiter thread (shm) or the I/O thread (udp, quic). */
  private readonly waker: ShmHandle | UdpHandle | QuicHandle
  private flushQueued = false
  /** False for role 'subscriber' (shared memory checks through `pub` instead). */
  private readonly canPublish: boolean
  /** UDP, QUIC: what this hub published (shared memory counts in its publisher). */
  private published = 0
  private publishedBytes = 0
  /** Bytes before each message in the ring: the envelope (sender, timestamp) of network transports. */
  private readonly envelope: number
  private readonly flushEachTick: boolean
  /** UDP with a struct codec: where `publish` writes the value before sending it. */
  private scratch: DataView | undefined
  private readonly pub: ShmPublisher | undefined
  private readonly sub: ShmSubscriber | undefined
  private readonly spinUs: number
  private readonly policy: BackpressurePolicy
  private readonly publishTimeoutMs: number
  private nativePublisher = false
  private closed = false
  private armed = false
  private wakeups: Array<(readable: boolean) => void> = []
  private keepAlive: ReturnType<typeof setInterval> | undefined
  /** The hub's one loan object, reused by every `loan()`. */
  private openLoan: ShmLoan<T> | undefined
  /** What the finalization registry sees of this hub: only its loan. */
  private readonly gcState: { loan: ShmLoan<unknown> | undefined } = { loan: undefined }
  /** The hub's one borrow object, reused by every `borrow()`. */
  private openBorrow: ShmBorrowed<T> | undefined

  static {
    // `Rpc` (rpc.ts) speaks through a QUIC hub's node; nothing outside this package does.
    quicOf = (hub) => hub.quic
  }

  private constructor(url: string, endpoint: ParsedEndpoint, options: HubOptions<T>) {
    this.url = url
    this.endpoint = endpoint
    this.transport = endpoint.transport as TransportName
    this.codec = resolveCodec(options.codec)
    this.struct = this.codec instanceof StructCodec ? this.codec : undefined
    const role = options.role ?? 'pubsub'
    const policy = (this.policy = options.backpressure ?? (this.transport === 'quic' ? 'block' : 'drop_old'))
    const timeoutMs = (this.publishTimeoutMs = options.publishTimeoutMs ?? 5000)
    this.spinUs = options.spinUs ?? (this.transport === 'shm' ? 20 : NET_SPIN_US)
    this.flushEachTick = options.flushIntervalMs !== 0
    let handle: ShmHandle
    let maxMessage: number | undefined
    if (this.transport === 'quic') {
      const quic = (this.quic = native(() => binding.QuicHandle.open(url, quicOptions(options, policy))))
      this.quicLink = quic.link() as QuicLink
      handle = native(() => quic.ring())
      this.waker = quic
      this.envelope = ENVELOPE.len
      this.statusNow = native(() => quic.status()) as HubStatus
      const own = (e: QuicStatusEvent): boolean => !options.listen || e.peer == null
      native(() => quic.onStatus((e) => this.emitStatus(statusEvent(e), own(e))))
      maxMessage = options.maxMessageSize ?? QUIC_MAX_MESSAGE
    } else if (this.transport === 'udp') {
      const udp = (this.udp = native(() => binding.UdpHandle.open(url, udpOptions(options))))
      this.link = udp.link() as UdpLink
      handle = native(() => udp.ring())
      this.waker = udp
      this.envelope = ENVELOPE.len
    } else {
      this.envelope = 0
      handle = native(() =>
        binding.ShmHandle.open(endpoint.name!, {
          slotSize: options.slotSize,
          capacity: options.capacity,
          maxSubscribers: options.maxSubscribers,
        }),
      )
      this.waker = handle
    }
    try {
      this.ring = new ShmRing(handle)
      this.maxMessageSize = maxMessage ?? this.ring.slotSize - this.envelope
      if (this.struct && this.struct.size > this.maxMessageSize) {
        throw new BadOptionError(`${this.struct.name} is ${this.struct.size} bytes; the largest message is ${this.maxMessageSize}`)
      }
      this.sub = role === 'publisher' ? undefined : new ShmSubscriber(this.ring)
      this.pub =
        role === 'subscriber' || this.transport !== 'shm'
          ? undefined
          : new ShmPublisher(this.ring, policy, timeoutMs, this.sub?.entry)
      this.canPublish = role !== 'subscriber'
      if (this.sub) native(() => this.waker.setDoorbell(() => this.onDoorbell()))
    } catch (e) {
      native(() => handle.close())
      this.udp?.close()
      this.quic?.close()
      throw e
    }
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
   *
   * Other schemes (`kcp`, `tcp`, `uds`) parse but are not built yet and reject with
   * `ERR_UNSUPPORTED_TRANSPORT`. UDP is unreliable: what the network loses is counted
   * (`metrics().udp.lost`), never resent.
   */
  static async open<T = Uint8Array>(url: string, options: HubOptions<T> = {}): Promise<Hub<T>> {
    validateOptions(options)
    const endpoint = native(() => binding.parseEndpoint(url))
    if (endpoint.transport !== 'shm' && endpoint.transport !== 'udp' && endpoint.transport !== 'quic') {
      throw new UnsupportedTransportError(
        `the ${endpoint.transport}:// transport is not available in this version of zerohop (shm://, udp:// and quic:// are)`,
      )
    }
    return new Hub<T>(url, endpoint, options)
  }

  /** UDP, QUIC: the bound address as `host:port` (`[v6]:port`); undefined for shared memory. */
  get localAddress(): string | undefined {
    if (this.closed) return undefined
    const net = this.udp ?? this.quic
    return net ? native(() => net.localAddress()) : undefined
  }

  /**
   * The status now: of the connection for a connecting `quic://` hub; `connected` for
   * a listening one and for local and UDP hubs (which have no connection to lose);
   * `closed` after {@link close}.
   */
  get status(): HubStatus {
    // The native side knows first; its events reach JavaScript a moment later.
    if (this.quic && !this.closed) return native(() => this.quic!.status()) as HubStatus
    return this.statusNow
  }

  /**
   * Calls `listener` with every status event from now on: the hub's own and, for a
   * listening `quic://` hub, each peer's (`event.peer` set). Returns a function that
   * removes it.
   */
  onStatus(listener: (event: StatusEvent) => void): () => void {
    if (typeof listener !== 'function') throw new BadOptionError(`onStatus takes a function, got ${describe(listener)}`)
    this.statusListeners.add(listener)
    return () => this.statusListeners.delete(listener)
  }

  /** The status events from now on, as an async iterator that ends after `closed`. */
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
        while (queue.length === 0 && !done) await new Promise<void>((r) => (wake = r))
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
    if (own) this.statusNow = event.status
    // A copy: a listener added by another listener waits for the next event.
    // oxlint-disable-next-line unicorn/no-useless-spread
    for (const l of [...this.statusListeners]) {
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

  /** UDP: replaces where published messages go (`host:port` each). */
  setPeers(peers: string[]): void {
    if (this.closed) throw new ClosedError('the hub is closed')
    if (!this.udp) throw new InvalidStateError('setPeers() is for udp:// hubs; shm:// and quic:// reach every subscriber or peer')
    if (!Array.isArray(peers) || !peers.every((p) => typeof p === 'string')) {
      throw new BadOptionError(`peers must be an array of 'host:port' strings, got ${describe(peers)}`)
    }
    native(() => this.udp!.setPeers(peers))
  }

  /**
   * Sends what is queued now. Over UDP, messages are packed into datagrams and a
   * partly filled one waits for the end of the tick (or `flushIntervalMs`); call this
   * when you know no more are coming. Shared memory publishes at once: a no-op there.
   */
  flush(): void {
    if (this.closed) throw new ClosedError('the hub is closed')
    if (this.udp) {
      this.flushQueued = false
      native(() => this.udp!.flush())
    }
  }

  /** Whether {@link close} was called. */
  get isClosed(): boolean {
    return this.closed
  }

  /**
   * Publishes one message to every subscriber. Returns false if the `drop_new` policy
   * discarded it. Throws `ERR_MESSAGE_TOO_LARGE`, `ERR_BACKPRESSURE` (`fail_fast`),
   * `ERR_TIMEOUT` (`block`), `ERR_CODEC`, `ERR_CLOSED`.
   */
  publish(value: T, options?: PublishOptions): boolean {
    if (this.quic) return this.publishQuic(value, options?.channel ?? 0)
    if (options?.channel) throw new BadOptionError(`channels are for quic:// hubs; this is ${this.transport}://`)
    if (this.udp) return this.publishUdp(value)
    const pub = this.publisher()
    if (this.struct) return this.publishStruct(pub, this.struct, value)
    // The raw codec inline: one call less on the hottest path (encode only validates).
    if (this.codec === raw && value instanceof Uint8Array) return pub.publishBytes(value)
    return pub.publishBytes(this.codec.encode(value))
  }

  /**
   * Publishes several messages under one lock and one wake-up. Returns how many were
   * accepted, in order (fewer than `values.length` only under `drop_new`/`fail_fast`
   * when the ring filled up).
   */
  publishBatch(values: readonly T[]): number {
    if (this.udp || this.quic) {
      if (!Array.isArray(values)) throw new CodecError(`publishBatch takes an array, got ${describe(values)}`)
      let n = 0
      for (let i = 0; i < values.length; i++) if (this.udp ? this.publishUdp(values[i]!) : this.publishQuic(values[i]!, 0)) n++
      return n
    }
    const pub = this.publisher()
    const ring = this.ring
    const codec = this.codec
    const struct = this.struct
    let lo = pub.lock()
    const first = lo
    let bytes = 0
    let writing = false
    try {
      for (let i = 0; i < values.length; i++) {
        if (!pub.room(lo)) {
          pub.counters.dropped += values.length - i - 1 // room() counted this one
          break
        }
        if (struct) {
          const off = pub.begin(lo)
          writing = true
          struct.write(ring.dv, off, values[i]!)
          pub.commit(lo, struct.size)
          bytes += struct.size
        } else {
          const b = codec.encode(values[i]!)
          if (b.byteLength > ring.slotSize) throw tooLarge(b.byteLength, ring.slotSize)
          const off = pub.begin(lo)
          writing = true
          ring.u8.set(b, off)
          pub.commit(lo, b.byteLength)
          bytes += b.byteLength
        }
        writing = false
        lo = (lo + 1) >>> 0
      }
    } catch (e) {
      if (writing) pub.abandon(lo)
      if (!(e instanceof ZerohopError && e.code === 'ERR_BACKPRESSURE')) {
        pub.unlock(lo, (lo - first) >>> 0, bytes)
        throw e
      }
    }
    const n = (lo - first) >>> 0
    pub.unlock(lo, n, bytes)
    return n
  }

  /**
   * Publishes `packed.byteLength / messageSize` messages of `messageSize` bytes each,
   * laid end to end in `packed` (raw bytes, whatever the hub's codec). It crosses into
   * Rust once for the whole buffer, so it is the fastest way to send many small
   * fixed-size messages. Returns how many were accepted, in order (fewer only under
   * `drop_new`/`fail_fast` when the ring filled up).
   */
  publishPacked(packed: Uint8Array, messageSize: number): number {
    const udp = this.udp
    const pub = udp || this.quic ? undefined : this.publisher()
    if (!(packed instanceof Uint8Array)) throw new CodecError(`publishPacked takes a Uint8Array, got ${describe(packed)}`)
    if (!Number.isInteger(messageSize) || messageSize < 1 || packed.byteLength % messageSize !== 0) {
      throw new BadOptionError(`messageSize must be a positive integer dividing ${packed.byteLength}, got ${messageSize}`)
    }
    if (this.quic) {
      if (messageSize > this.maxMessageSize) throw tooLarge(messageSize, this.maxMessageSize)
      let n = 0
      for (let at = 0; at < packed.byteLength; at += messageSize) {
        if (this.sendQuic(packed.subarray(at, at + messageSize), 0)) n++
      }
      return n
    }
    if (messageSize > this.ring.slotSize) throw tooLarge(messageSize, this.ring.slotSize)
    if (udp) {
      this.udpPublisher()
      const n = native(() => udp.publishPacked(packed, messageSize))
      this.published += n
      this.publishedBytes += n * messageSize
      this.queueFlush()
      return n
    }
    if (pub === undefined) return this.publisherError()
    if (!this.nativePublisher) {
      native(() => this.ring.handle.attachPublisher(this.policy, this.publishTimeoutMs, this.sub?.entry))
      this.nativePublisher = true
    }
    const n = native(() => this.ring.handle.publishPacked(packed, messageSize))
    pub.counters.published += n
    pub.counters.publishedBytes += n * messageSize
    if (this.policy === 'drop_new') pub.counters.dropped += packed.byteLength / messageSize - n
    return n
  }

  /**
   * Reserves the next slot to write a message in place (zero-copy). Fill `loan.bytes`
   * or, with a `struct` codec, set fields on `loan.value`; then `commit()`. The
   * publisher lock is held until then: keep loans short.
   */
  loan(): Loan<T> {
    if (this.udp || this.quic) {
      throw new InvalidStateError(
        `loan() writes in place into shared memory; over ${this.transport}:// use publish() (it copies once, into the send queue)`,
      )
    }
    const pub = this.publisher()
    if (!this.struct && this.codec.name !== 'raw') {
      throw new InvalidStateError(`loan() writes bytes in place; it needs the raw codec or a struct codec, not ${this.codec.name}`)
    }
    const lo = pub.lock()
    let room: boolean
    try {
      room = pub.room(lo)
    } catch (e) {
      pub.unlock(lo, 0, 0)
      throw e
    }
    if (!room) {
      pub.unlock(lo, 0, 0)
      throw new InvalidStateError('drop_new: the ring is full, no slot to loan')
    }
    const off = pub.begin(lo)
    if (this.openLoan === undefined) {
      this.openLoan = new ShmLoan<T>(pub, this.ring, this.struct)
      this.gcState.loan = this.openLoan as ShmLoan<unknown>
      abandonedLoans.register(this, this.gcState)
    }
    const loan = this.openLoan
    loan.start(lo, off)
    return loan
  }

  /** The next message, or `undefined` if none is waiting. Never blocks. */
  tryRecv(): T | undefined {
    const v = this.next()
    return v === EMPTY ? undefined : v
  }

  /** {@link tryRecv}, with where the message came from (network transports). */
  tryRecvMessage(): Received<T> | undefined {
    const info: MessageInfo = {}
    const v = this.next(info)
    return v === EMPTY ? undefined : { value: v, ...info }
  }

  /**
   * {@link recv}, with where the message came from: `from` (the sender's address) and,
   * with `receiveTimestamps`, `timestampNs`. Over shared memory both are absent.
   */
  async recvMessage(options: RecvOptions = {}): Promise<Received<T>> {
    const info: MessageInfo = {}
    const value = await this.recvInto(options, info)
    return { value, ...info }
  }

  /**
   * The next message. Waits without blocking the event loop: it spins for `spinUs`,
   * then parks a native thread on a futex; an idle subscriber uses no CPU.
   */
  async recv(options: RecvOptions = {}): Promise<T> {
    return this.recvInto(options, undefined)
  }

  private async recvInto(options: RecvOptions, info: MessageInfo | undefined): Promise<T> {
    const { timeoutMs, signal } = options
    if (signal?.aborted) throw abortError(signal)
    const first = this.transport === 'shm' ? this.next(info) : this.spinNext(info)
    if (first !== EMPTY) return first
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs
    for (;;) {
      if (this.closed) throw new ClosedError('the hub was closed while waiting in recv()')
      if (signal?.aborted) throw abortError(signal)
      const remaining = deadline === undefined ? undefined : deadline - Date.now()
      if (remaining !== undefined && remaining <= 0) throw new TimeoutError(`recv() timed out after ${timeoutMs} ms`)
      await this.waitReadable(remaining, signal)
      const v = this.next(info)
      if (v !== EMPTY) return v
    }
  }

  /** Iterates over messages until the hub is closed (then ends quietly). */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    this.subscriber()
    while (!this.closed) {
      const v = this.transport === 'shm' ? this.next() : this.spinNext()
      if (v !== EMPTY) {
        yield v
        continue
      }
      await this.waitReadable(undefined, undefined)
    }
  }

  /**
   * The next message in place (zero-copy), or `undefined`. `borrowed.bytes` views the
   * slot; with a `struct` codec `borrowed.value` reads fields straight from it. Call
   * `release()` to move on. Under `drop_old` a publisher may overwrite the slot while
   * you hold it: `valid()`/`release()` tell you; `block` publishers wait for you.
   */
  borrow(): Borrowed<T> | undefined {
    const sub = this.subscriber()
    const held = this.openBorrow
    if (held !== undefined && held.held) throw new InvalidStateError('a borrowed message is still held; release() it first')
    let off = sub.peek()
    while (off < 0 && this.pumpSocket() > 0) off = sub.peek()
    if (off < 0) return undefined
    const borrowed = (this.openBorrow ??= new ShmBorrowed<T>(sub, this.ring, this.codec, this.struct, this.envelope))
    borrowed.start(off, this.spilled(off))
    return borrowed
  }

  /** Counters and what the hub is connected to. */
  metrics(): HubMetrics {
    const p = this.pub?.counters
    const s = this.sub?.counters
    return {
      transport: this.transport,
      selectedAutomatically: this.endpoint.selectedAutomatically,
      selectionReason: this.endpoint.selectedAutomatically
        ? 'a bare name is a local endpoint: shared memory'
        : `${this.transport}:// URL`,
      published: p?.published ?? this.published,
      publishedBytes: p?.publishedBytes ?? this.publishedBytes,
      dropped: p?.dropped ?? 0,
      blocked: p?.blocked ?? 0,
      received: s?.received ?? 0,
      receivedBytes: s?.receivedBytes ?? 0,
      lapped: s?.lapped ?? 0,
      lapEvents: s?.lapEvents ?? 0,
      lag: this.closed || !this.sub ? 0 : this.sub.lag(),
      capacity: this.ring.capacity,
      slotSize: this.ring.slotSize,
      segment: this.ring.layout.path,
      ...(this.udp && !this.closed ? { udp: native(() => this.udp!.metrics()) } : {}),
      ...(this.quic && !this.closed ? { quic: native(() => this.quic!.metrics()) } : {}),
    }
  }

  /**
   * Closes the hub: pending `recv()` calls reject with `ERR_CLOSED`, iterators end,
   * an open loan is aborted, and the segment is unlinked if this was its last user.
   * A `quic://` hub first waits up to `lingerMs` (default 1000) for its peers to read
   * what it published. Idempotent.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    if (this.closed) return
    const lingerMs = options.lingerMs ?? QUIC_LINGER_MS
    if (!(lingerMs >= 0) || !Number.isFinite(lingerMs)) throw new BadOptionError(`lingerMs must be a finite number ≥ 0, got ${String(lingerMs)}`)
    if (this.quic && lingerMs > 0) {
      this.closing = true
      await native(() => this.quic!.drain(lingerMs))
      if (this.closed) return
    }
    this.closed = true
    if (this.openLoan?.open) this.openLoan.abort()
    if (this.openBorrow) this.openBorrow.held = false
    this.ringDoorbell(false)
    this.udp?.close() // sends what is queued first
    if (this.quic) {
      this.quic.close()
      if (this.statusNow !== 'closed') this.emitStatus({ status: 'closed' }, true)
    } else {
      this.emitStatus({ status: 'closed' }, true)
    }
    this.ring.close()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  // ---- internals ----------------------------------------------------------------

  private publisher(): ShmPublisher {
    const pub = this.pub
    if (pub === undefined || this.closed || (this.openLoan !== undefined && this.openLoan.open)) return this.publisherError()
    return pub
  }

  /** True while `close()` waits for peers: publishing is over. */
  private closing = false

  private publisherError(): never {
    if (this.closed) throw new ClosedError('the hub is closed')
    if (!this.pub) throw new InvalidStateError("this hub was opened with role 'subscriber' and cannot publish")
    throw new InvalidStateError('a loan is open on this hub; commit or abort it first')
  }

  // ---- UDP publishing ------------------------------------------------------------

  private udpPublisher(): UdpHandle {
    if (this.closed) throw new ClosedError('the hub is closed')
    if (!this.canPublish) throw new InvalidStateError("this hub was opened with role 'subscriber' and cannot publish")
    return this.udp!
  }

  private publishUdp(value: T): boolean {
    this.udpPublisher()
    const bytes = this.encodeToSend(value)
    try {
      fast.udpPublish(this.link!, bytes)
    } catch (e) {
      throw fromNative(e)
    }
    this.published++
    this.publishedBytes += bytes.byteLength
    this.queueFlush()
    return true
  }

  // ---- QUIC publishing -----------------------------------------------------------

  private publishQuic(value: T, channel: number): boolean {
    return this.sendQuic(this.encodeToSend(value), channel)
  }

  /** A network transport's bytes for `value` (a struct is written into one reused scratch buffer). */
  private encodeToSend(value: T): Uint8Array {
    const struct = this.struct
    if (struct) {
      const dv = (this.scratch ??= new DataView(new ArrayBuffer(struct.size)))
      struct.write(dv, 0, value)
      return new Uint8Array(dv.buffer)
    }
    const bytes = this.codec === raw && value instanceof Uint8Array ? value : this.codec.encode(value)
    if (!(bytes instanceof Uint8Array)) throw new CodecError(`the raw codec takes a Uint8Array, got ${describe(value)}`)
    if (bytes.byteLength > this.maxMessageSize) throw tooLarge(bytes.byteLength, this.maxMessageSize)
    return bytes
  }

  private sendQuic(bytes: Uint8Array, channel: number): boolean {
    if (this.closed || this.closing) throw new ClosedError('the hub is closed')
    if (!this.canPublish) throw new InvalidStateError("this hub was opened with role 'subscriber' and cannot publish")
    if (!Number.isInteger(channel) || channel < 0) throw new BadOptionError(`channel must be a non-negative integer, got ${String(channel)}`)
    let accepted: boolean
    try {
      accepted = fast.quicPublish(this.quicLink!, bytes, channel)
    } catch (e) {
      throw fromNative(e)
    }
    this.published++
    this.publishedBytes += bytes.byteLength
    return accepted
  }

  /** QUIC: the bytes of the message at `off` if they were too large for its slot. */
  private spilled(off: number): Uint8Array | undefined {
    if (this.quic === undefined || this.ring.u8[off + ENVELOPE.placement] !== 1) return undefined
    const key = Number(this.ring.dv.getBigUint64(off + ENVELOPE.spillKey, true))
    return native(() => this.quic!.takeSpilled(key))
  }

  /** A partly filled datagram goes out at the end of this tick. */
  private queueFlush(): void {
    if (this.flushQueued || !this.flushEachTick) return
    this.flushQueued = true
    process.nextTick(() => {
      if (!this.flushQueued || this.closed) return
      this.flushQueued = false
      native(() => this.udp!.flush())
    })
  }

  private subscriber(): ShmSubscriber {
    if (this.closed) throw new ClosedError('the hub is closed')
    if (!this.sub) throw new InvalidStateError("this hub was opened with role 'publisher' and cannot receive")
    return this.sub
  }

  private publishStruct(pub: ShmPublisher, struct: StructCodec<T>, value: T): boolean {
    const lo = pub.lock()
    try {
      if (!pub.room(lo)) {
        pub.unlock(lo, 0, 0)
        return false
      }
      const off = pub.begin(lo)
      struct.write(this.ring.dv, off, value)
      pub.commit(lo, struct.size)
    } catch (e) {
      // Nothing published: the sequence number is reused by the next publish.
      pub.abandon(lo)
      pub.unlock(lo, 0, 0)
      throw e
    }
    pub.unlock((lo + 1) >>> 0, 1, struct.size)
    return true
  }

  /** UDP, QUIC: reads the socket on this thread; datagrams read (0 for shared memory). */
  private pumpSocket(): number {
    if (this.link !== undefined) return fast.udpPump(this.link)
    if (this.quicLink !== undefined && !this.closed) return fast.quicPump(this.quicLink)
    return 0
  }

  /** UDP, QUIC: `next()`, polling the socket for up to `spinUs` before giving up. */
  private spinNext(info?: MessageInfo): T | typeof EMPTY {
    const v = this.next(info)
    if (v !== EMPTY || this.spinUs <= 0) return v
    const until = performance.now() + this.spinUs / 1000
    for (;;) {
      const w = this.next(info)
      if (w !== EMPTY || performance.now() >= until) return w
    }
  }

  /** The next decoded message, or EMPTY; fills `info` from its envelope when given. */
  private next(info?: MessageInfo): T | typeof EMPTY {
    const sub = this.subscriber()
    if (this.openBorrow?.held) throw new InvalidStateError('a borrowed message is still held; release() it first')
    const ring = this.ring
    for (;;) {
      const off = sub.peek()
      if (off < 0) {
        // UDP, QUIC: read the socket on this thread rather than wait for the I/O thread.
        if (this.pumpSocket() > 0) continue
        return EMPTY
      }
      let value: T
      const env = this.envelope
      try {
        const aside = this.spilled(off)
        if (aside !== undefined) {
          value = this.struct
            ? this.struct.read(new DataView(aside.buffer, aside.byteOffset, aside.byteLength), 0)
            : this.codec.decode(aside)
        } else {
          value = this.struct
            ? this.struct.read(ring.dv, off + env)
            : this.codec.decode(ring.slotView(sub.cursor >>> 0).subarray(env, sub.len))
        }
        if (info !== undefined && env !== 0) readEnvelope(ring.dv, off, info)
      } catch (e) {
        if (!sub.intact()) {
          sub.torn()
          continue
        }
        sub.advance() // skip the undecodable message so the stream goes on
        throw e instanceof ZerohopError ? e : new CodecError(`cannot decode message: ${(e as Error).message}`, { cause: e })
      }
      if (sub.intact()) {
        sub.advance()
        return value
      }
      sub.torn()
    }
  }

  /** Resolves when a message may be readable (true) or the hub closed (false). */
  private waitReadable(timeoutMs: number | undefined, signal: AbortSignal | undefined): Promise<boolean> {
    const sub = this.subscriber()
    if (sub.readable()) return Promise.resolve(true)
    if (signal?.aborted) return Promise.reject(abortError(signal))
    return new Promise<boolean>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const onAbort = (): void => {
        cleanup()
        reject(abortError(signal!))
      }
      const wake = (readable: boolean): void => {
        cleanup()
        resolve(readable)
      }
      const cleanup = (): void => {
        if (timer !== undefined) clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        const i = this.wakeups.indexOf(wake)
        if (i >= 0) this.wakeups.splice(i, 1)
        if (this.wakeups.length === 0) this.idle()
      }
      if (timeoutMs !== undefined) timer = setTimeout(() => wake(true), Math.max(0, timeoutMs))
      signal?.addEventListener('abort', onAbort, { once: true })
      this.wakeups.push(wake)
      // The doorbell does not hold the event loop open; a pending receive does.
      this.keepAlive ??= setInterval(noop, 1 << 30)
      if (!this.armed) {
        this.armed = true
        native(() => this.waker.arm(sub.cursor, this.spinUs))
      }
    })
  }

  private idle(): void {
    if (this.keepAlive !== undefined) {
      clearInterval(this.keepAlive)
      this.keepAlive = undefined
    }
    if (this.armed && !this.closed) {
      this.armed = false
      this.waker.disarm()
    }
  }

  private onDoorbell(): void {
    this.armed = false
    this.ringDoorbell(true)
  }

  /** Settles every waiter; each one's cleanup lets the loop go once none is left. */
  private ringDoorbell(readable: boolean): void {
    const wakeups = this.wakeups
    this.wakeups = []
    for (const w of wakeups) w(readable)
    if (wakeups.length === 0) this.idle()
  }
}

/** The envelope layout, from the native side (so the two cannot disagree). */
const ENVELOPE = binding.envelopeLayout()

/** What `Rpc` reads from a received message's envelope besides {@link MessageInfo}. */
export interface RequestInfo extends MessageInfo {
  /** 1 request, 2 reply, 3 failed request, 4 cancelled request (absent: a message). */
  kind?: number
  /** The key pairing a request, its reply and its cancellation. */
  request?: number
}


/** Reads the envelope at `off` (sender address and receive timestamp) into `info`. */
function readEnvelope(dv: DataView, off: number, info: MessageInfo): MessageInfo {
  const ts = dv.getBigUint64(off + ENVELOPE.timestamp, true)
  if (ts !== 0n) info.timestampNs = ts
  info.channel = dv.getUint16(off + ENVELOPE.channel, true)
  const kind = dv.getUint8(off + ENVELOPE.kind)
  if (kind !== 0) {
    const r = info as RequestInfo
    r.kind = kind
    r.request = Number(dv.getBigUint64(off + ENVELOPE.request, true))
  }
  const port = dv.getUint16(off + ENVELOPE.port, true)
  const family = dv.getUint8(off + ENVELOPE.family)
  const a = off + ENVELOPE.address
  if (family === 4) {
    info.from = `${dv.getUint8(a)}.${dv.getUint8(a + 1)}.${dv.getUint8(a + 2)}.${dv.getUint8(a + 3)}:${port}`
  } else if (family === 6) {
    const groups: number[] = []
    for (let i = 0; i < 8; i++) groups.push(dv.getUint16(a + 2 * i, false))
    info.from = `[${formatIpv6(groups)}]:${port}`
  }
  return info
}

/** RFC 5952 text of an IPv6 address (the longest run of two or more zero groups becomes `::`). */
function formatIpv6(groups: number[]): string {
  let [best, bestLen] = [-1, 1]
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) [best, bestLen] = [i, j - i]
    i = j
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(':')
  if (best < 0) return hex(groups)
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`
}

function abortError(signal: AbortSignal): AbortedError {
  return new AbortedError('the operation was aborted', { cause: signal.reason })
}

/** A native status event, with its error as a `ZerohopError`. */
function statusEvent(e: QuicStatusEvent): StatusEvent {
  const event: StatusEvent = { status: e.status as HubStatus }
  if (e.peer != null) event.peer = e.peer
  if (e.attempt != null) event.attempt = e.attempt
  if (e.code != null) event.error = errorFor(e.code as ErrorCode, e.message ?? '')
  return event
}

function quicOptions<T>(o: HubOptions<T>, backpressure: BackpressurePolicy): Parameters<typeof binding.QuicHandle.open>[1] {
  const tls = o.tls ?? {}
  return {
    role: o.role,
    slotSize: o.slotSize,
    capacity: o.capacity,
    backpressure,
    publishTimeoutMs: o.publishTimeoutMs,
    listen: o.listen,
    cert: tls.cert,
    key: tls.key,
    ca: tls.ca,
    serverName: tls.serverName,
    dangerouslyAcceptAnyServer: tls.dangerouslyAcceptAnyServer,
    keepAliveMs: o.keepAliveMs,
    idleTimeoutMs: o.idleTimeoutMs,
    reconnect: o.reconnect,
    channels: o.channels,
    sendQueueBytes: o.sendQueueBytes,
    datagrams: o.datagrams,
    maxMessageSize: o.maxMessageSize,
    peerLingerMs: o.peerLingerMs,
  }
}

function udpOptions<T>(o: HubOptions<T>): Parameters<typeof binding.UdpHandle.open>[1] {
  return {
    role: o.role,
    slotSize: o.slotSize,
    capacity: o.capacity,
    peers: o.peers,
    flushIntervalMs: o.flushIntervalMs,
    batch: o.batch,
    maxDatagram: o.maxDatagram,
    ioUring: o.ioUring,
    receiveThreads: o.receiveThreads,
    pinThreads: o.pinThreads,
    recvBuffer: o.recvBuffer,
    receiveTimestamps: o.receiveTimestamps,
    sendBuffer: o.sendBuffer,
    busyPollUs: o.busyPollUs,
    multicastInterface: o.multicastInterface,
    multicastTtl: o.multicastTtl,
    multicastLoopback: o.multicastLoopback,
  }
}

function validateOptions<T>(o: HubOptions<T>): void {
  if (typeof o !== 'object' || o === null) throw new BadOptionError(`options must be an object, got ${describe(o)}`)
  const positiveInt = (name: keyof HubOptions<T>, max: number): void => {
    const v = o[name]
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max)) {
      throw new BadOptionError(`${String(name)} must be an integer in 1..${max}, got ${String(v)}`)
    }
  }
  positiveInt('slotSize', 16 << 20)
  positiveInt('capacity', 1 << 24)
  positiveInt('maxSubscribers', 1024)
  positiveInt('batch', 1024)
  positiveInt('maxDatagram', 65507)
  positiveInt('receiveThreads', 64)
  positiveInt('recvBuffer', 1 << 30)
  positiveInt('sendBuffer', 1 << 30)
  positiveInt('multicastTtl', 255)
  positiveInt('channels', 65535)
  positiveInt('maxMessageSize', 1 << 30)
  positiveInt('sendQueueBytes', 2 ** 40)
  for (const name of ['keepAliveMs', 'idleTimeoutMs', 'peerLingerMs'] as const) {
    const v = o[name]
    if (v !== undefined && (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v))) {
      throw new BadOptionError(`${name} must be a finite number ≥ 0, got ${String(v)}`)
    }
  }
  if (o.tls !== undefined) {
    if (typeof o.tls !== 'object' || o.tls === null) throw new BadOptionError(`tls must be an object, got ${describe(o.tls)}`)
    for (const k of ['cert', 'key', 'ca', 'serverName'] as const) {
      const v = o.tls[k]
      if (v !== undefined && typeof v !== 'string') throw new BadOptionError(`tls.${k} must be a string, got ${describe(v)}`)
    }
  }
  const r = o.reconnect
  if (r !== undefined) {
    if (typeof r !== 'object' || r === null) throw new BadOptionError(`reconnect must be an object, got ${describe(r)}`)
    for (const k of ['initialMs', 'maxMs', 'multiplier', 'jitter'] as const) {
      const v = r[k]
      if (v !== undefined && (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v))) {
        throw new BadOptionError(`reconnect.${k} must be a finite number ≥ 0, got ${String(v)}`)
      }
    }
    if (r.jitter !== undefined && r.jitter > 1) throw new BadOptionError(`reconnect.jitter must be within 0..1, got ${r.jitter}`)
    if (r.maxAttempts !== undefined && (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 0)) {
      throw new BadOptionError(`reconnect.maxAttempts must be a non-negative integer, got ${String(r.maxAttempts)}`)
    }
  }
  if (o.busyPollUs !== undefined && (!Number.isInteger(o.busyPollUs) || o.busyPollUs < 0)) {
    throw new BadOptionError(`busyPollUs must be a non-negative integer, got ${String(o.busyPollUs)}`)
  }
  if (o.ioUring !== undefined && !['auto', 'force', 'off'].includes(o.ioUring)) {
    throw new BadOptionError(`ioUring must be 'auto', 'force' or 'off', got ${String(o.ioUring)}`)
  }
  if (o.peers !== undefined && (!Array.isArray(o.peers) || !o.peers.every((p) => typeof p === 'string'))) {
    throw new BadOptionError(`peers must be an array of 'host:port' strings, got ${describe(o.peers)}`)
  }
  if (o.capacity !== undefined && (o.capacity & (o.capacity - 1)) !== 0) {
    throw new BadOptionError(`capacity must be a power of two, got ${o.capacity}`)
  }
  const nonNegative = (name: 'publishTimeoutMs' | 'spinUs' | 'flushIntervalMs'): void => {
    const v = o[name]
    if (v !== undefined && (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v))) {
      throw new BadOptionError(`${name} must be a finite number ≥ 0, got ${String(v)}`)
    }
  }
  nonNegative('publishTimeoutMs')
  nonNegative('spinUs')
  nonNegative('flushIntervalMs')
  if (o.role !== undefined && !['pubsub', 'publisher', 'subscriber'].includes(o.role)) {
    throw new BadOptionError(`role must be 'pubsub', 'publisher' or 'subscriber', got ${String(o.role)}`)
  }
  if (o.backpressure !== undefined && !['drop_old', 'drop_new', 'block', 'fail_fast'].includes(o.backpressure)) {
    throw new BadOptionError(`backpressure must be 'drop_old', 'drop_new', 'block' or 'fail_fast', got ${String(o.backpressure)}`)
  }
}

/** The loan object of a hub (reused: valid until `commit()` or `abort()`). */
class ShmLoan<T> implements Loan<T> {
  bytes: Uint8Array = new Uint8Array(0)
  seq = 0
  open = false
  private lo = 0
  private view: (T & StructView) | undefined
  private readonly pub: ShmPublisher
  private readonly ring: ShmRing
  private readonly struct: StructCodec<T> | undefined

  constructor(pub: ShmPublisher, ring: ShmRing, struct: StructCodec<T> | undefined) {
    this.pub = pub
    this.ring = ring
    this.struct = struct
  }

  start(lo: number, off: number): void {
    this.lo = lo
    this.open = true
    this.bytes = this.ring.slotView(lo)
    this.seq = (Atomics.load(this.ring.i32, this.ring.TAIL_HI) >>> 0) * 4294967296 + lo
    if (this.struct) {
      if (this.view) this.struct.retarget(this.view, off)
      else this.view = this.struct.view(this.ring.dv, off)
    }
  }

  get value(): T {
    if (this.view === undefined) throw new InvalidStateError('loan.value needs a struct codec; write loan.bytes instead')
    return this.view
  }

  commit(len?: number): void {
    if (!this.open) throw new InvalidStateError('this loan was already committed or aborted')
    const max = this.ring.slotSize
    const n = len ?? (this.struct ? this.struct.size : max)
    if (!Number.isInteger(n) || n < 0) throw new BadOptionError(`commit length must be a non-negative integer, got ${n}`)
    if (n > max) throw tooLarge(n, max)
    this.open = false
    this.pub.commit(this.lo, n)
    this.pub.unlock((this.lo + 1) >>> 0, 1, n)
  }

  abort(): void {
    if (!this.open) throw new InvalidStateError('this loan was already committed or aborted')
    this.open = false
    this.pub.abandon(this.lo) // nothing published; the next publish reuses the number
    this.pub.unlock(this.lo, 0, 0)
  }
}

/** The borrow object of a hub (reused: valid until `release()`). */
class ShmBorrowed<T> implements Borrowed<T> {
  bytes: Uint8Array = new Uint8Array(0)
  seq = 0
  held = false
  private decoded: T | undefined
  private view: (T & StructView) | undefined
  private readonly sub: ShmSubscriber
  private readonly ring: ShmRing
  private readonly codec: Codec<T> | StructCodec<T>
  private readonly struct: StructCodec<T> | undefined
  private readonly envelope: number
  private envelopeAt = 0
  /** Whether `view` reads the ring (or a spilled message's own buffer). */
  private viewOnRing = false

  constructor(
    sub: ShmSubscriber,
    ring: ShmRing,
    codec: Codec<T> | StructCodec<T>,
    struct: StructCodec<T> | undefined,
    envelope: number,
  ) {
    this.sub = sub
    this.ring = ring
    this.codec = codec
    this.struct = struct
    this.envelope = envelope
  }

  /** Holds the message at `off`; `aside` are its bytes when they were too large for the slot. */
  start(off: number, aside: Uint8Array | undefined): void {
    this.seq = this.sub.cursor
    this.envelopeAt = off
    const at = off + this.envelope
    this.bytes = aside ?? this.ring.u8.subarray(at, off + this.sub.len)
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

  get from(): string | undefined {
    return this.envelope === 0 ? undefined : readEnvelope(this.ring.dv, this.envelopeAt, {}).from
  }

  get timestampNs(): bigint | undefined {
    return this.envelope === 0 ? undefined : readEnvelope(this.ring.dv, this.envelopeAt, {}).timestampNs
  }

  get channel(): number | undefined {
    return this.envelope === 0 ? undefined : readEnvelope(this.ring.dv, this.envelopeAt, {}).channel
  }

  get value(): T {
    if (this.view !== undefined) return this.view
    return (this.decoded ??= this.codec.decode(this.bytes))
  }

  valid(): boolean {
    return this.held && this.sub.cursor === this.seq && this.sub.intact()
  }

  release(): boolean {
    if (!this.held) return false
    this.held = false
    if (this.sub.cursor !== this.seq) return false
    if (this.sub.intact()) {
      this.sub.advance()
      return true
    }
    this.sub.torn()
    return false
  }
}
