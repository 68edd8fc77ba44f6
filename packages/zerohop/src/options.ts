/**
 * What a hub is opened with: the options every hub has, and each transport's own,
 * typed by the URL's scheme so that an option of one transport on another's URL is a
 * type error (and, at run time, `ERR_BAD_OPTION` naming it).
 */
import type { Logger } from './logging.js'
import type { FaultOptions } from './chaos.js'
import type { CodecOption } from './codec.js'
import type { AutoOptions } from './transports/auto.js'
import type { KcpOptions } from './transports/kcp.js'
import type { NatsOptions } from './transports/nats.js'
import type { QuicOptions } from './transports/quic.js'
import type { ShmOptions } from './transports/shm.js'
import type { StreamOptions, TcpOptions } from './transports/stream.js'
import type { UdpOptions } from './transports/udp.js'

/** What a publisher does when the slowest receiver is a whole queue behind. */
export type BackpressurePolicy = 'drop_old' | 'drop_new' | 'block' | 'fail_fast'

/** Which parts of a hub it opens. */
export type HubRole = 'pubsub' | 'publisher' | 'subscriber'

/** The options every hub has, whatever its transport. */
export interface CommonHubOptions<T> {
  /** How values become bytes: `'raw'` (default), `'json'`, `'msgpack'`, a `struct(...)` or a custom codec. */
  codec?: CodecOption<T>
  /**
   * `'pubsub'` (default) publishes and receives; `'publisher'` only publishes and
   * holds no receive cursor (so `block` publishers never wait for it);
   * `'subscriber'` only receives.
   */
  role?: HubRole
  /**
   * What `publish` does when the slowest receiver is a whole queue behind:
   * `'drop_old'` (shared memory's default) overwrites, and the slow subscriber skips
   * ahead and counts what it missed in `metrics().lapped`; `'drop_new'` discards the
   * new message (`publish` returns false; UDP's only policy, since a full socket buffer
   * drops datagrams); `'fail_fast'` throws `ERR_BACKPRESSURE`; `'block'` (QUIC's
   * default) waits, synchronously, up to `publishTimeoutMs`, for room. A policy a
   * transport cannot apply is `ERR_BAD_OPTION`.
   */
  backpressure?: BackpressurePolicy
  /** How long `publish` may wait for room or for another publisher (default 5000). */
  publishTimeoutMs?: number
  /**
   * How long a waiting receiver spins before it parks, in µs (default 20 for shared
   * memory, 50 for network transports), on the calling thread: a message that comes
   * within the spin skips the wake-up of the event loop. Network transports poll the
   * socket meanwhile (a loopback round trip takes 10–30 µs, hence the longer default).
   * The event loop is then busy for at most this long each time `recv()` finds
   * nothing, and only while spinning pays: after four spins in a row that ran out, a
   * receiver spins one wait in 32. 0 parks at once. (Over a segment without a
   * directory, a native thread spins instead.)
   */
  spinUs?: number
  /**
   * The largest message a slot of the ring holds: shared memory's segment (default
   * 1024, fixed when it is created), UDP's receive ring (the largest message, 64 KiB by
   * default), QUIC's, TCP's and Unix sockets' (4 KiB by default; larger messages are
   * fetched from the native side).
   */
  slotSize?: number
  /** Slots in the ring, a power of two (default 4096). */
  capacity?: number
  /**
   * A rate limit on publishing, in messages a second (and `rateLimitBytes`, in bytes a
   * second), with token buckets that save up `rateBurstMs` of unused rate (default 50).
   * A publish over it meets `backpressure` as a publish with no room does: `block` waits
   * (synchronously; `send()` waits without blocking), `drop_new` (and `drop_old`, which
   * has nothing to overwrite here) discards it, `fail_fast` throws `ERR_BACKPRESSURE`.
   * Counted in `metrics().rateLimited`.
   */
  rateLimit?: number
  rateLimitBytes?: number
  rateBurstMs?: number
  /**
   * A time to live for every message this hub publishes without one of its own
   * (`publish(v, { ttlMs })` overrides it): see `PublishOptions.ttlMs`.
   */
  ttlMs?: number
  /**
   * A pino-compatible logger (`info`, `warn`, `error`; a child logger is fine): told
   * once each, with context, that the hub opened (and any fallback), that it or its
   * peers connected or went, and the first drop, lap, expiry, rate limiting, slow
   * consumer or protocol violation; never anything per message. See `logging.ts`.
   */
  logger?: Logger
}

/** Options of a `shm://name` hub (or a bare name). */
export type ShmHubOptions<T> = CommonHubOptions<T> & ShmOptions
/** Options of a `udp://host:port` hub. */
export type UdpHubOptions<T> = CommonHubOptions<T> & UdpOptions & FaultOptions
/** Options of a `quic://host:port` hub. */
export type QuicHubOptions<T> = CommonHubOptions<T> & QuicOptions & FaultOptions

/** Options of a `tcp://host:port` hub. */
export type TcpHubOptions<T> = CommonHubOptions<T> & TcpOptions & FaultOptions
/** Options of a `uds:///path` (or `uds://@name`) hub. */
export type UdsHubOptions<T> = CommonHubOptions<T> & StreamOptions & FaultOptions
/** Options of a `kcp://host:port` hub. */
export type KcpHubOptions<T> = CommonHubOptions<T> & KcpOptions & FaultOptions
/** Options of a `nats://host[:port]/subject` hub. */
export type NatsHubOptions<T> = CommonHubOptions<T> & NatsOptions

/**
 * Options of an `auto://host:port` hub: those every hub has (handed to the transport
 * it picks), `listen`, `reliable` and `tls`.
 */
export type AutoHubOptions<T> = CommonHubOptions<T> & AutoOptions

/** Every option of every transport, for code that types its options before it knows the URL. */
export type HubOptions<T> = CommonHubOptions<T> & ShmOptions & UdpOptions & QuicOptions & TcpOptions & KcpOptions & FaultOptions
