/**
 * The one interface behind which every transport sits: what a {@link Hub} (and `Rpc`)
 * asks of it. A hub holds a port and never asks which transport it is; what only some
 * transports can do is an optional member (`peers`, `requests`) or a method that
 * throws where it does not apply (`loan`).
 *
 * Received messages are always read from a ring with the shared-memory layout (for
 * `shm://` the segment itself, for network transports their receive ring), so the
 * receive side (`tryRecv`, `recv`, `borrow`, iteration) is the hub's own code for all
 * of them.
 */
import type { ChaosMetrics } from './chaos.js'
import type { MessageInfo } from './envelope.js'
import type { ZerohopError } from './errors.js'
import type { BackpressurePolicy, HubRole } from './options.js'
import type { ShmRing, ShmSubscriber } from './shm-ring.js'

/** The transports this version can open. */
export type TransportName = 'shm' | 'udp' | 'quic' | 'tcp' | 'uds' | 'kcp' | 'nats'

/**
 * How a hub's transport was chosen: the one in use, why, and the ones tried (or
 * wanted) before it that could not be used, each with why.
 */
export interface Selection {
  chosen: TransportName
  reason: string
  fallbacks: { transport: TransportName; reason: string }[]
}

/** A hub's (or a peer's) connection status. */
export type HubStatus = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed'

/** A change of status; see `Hub.onStatus`. */
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

/** A slot reserved for writing in place; see `Hub.loan`. */
export interface Loan<T> {
  /** The slot's payload bytes (a slot long, or the size asked for), in shared memory. */
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

/** The options every hub has, as its transport resolved them (defaults filled in). */
export interface PortSettings {
  role: HubRole
  backpressure: BackpressurePolicy
  publishTimeoutMs: number
  spinUs: number
  /** The rate limit (messages and bytes a second, the burst in ms at the rate), as resolved. */
  rateLimit?: number | null
  rateLimitBytes?: number | null
  rateBurstMs?: number | null
  /** The time to live of every message published without one of its own (`ttlMs`). */
  ttlMs?: number | null
}

/** What a hub counts of what it published. */
export interface PublishCounters {
  published: number
  publishedBytes: number
  dropped: number
  blocked: number
  /** Publishes discarded or refused for the rate limit. */
  rateLimited?: number
}

/** Requests with answers, each on a stream of its own (`Rpc` runs over these). */
export interface RequestPort {
  /** Sends a request; its answer arrives as a message of kind 2 (or 3, failed) with this key. */
  request(bytes: Uint8Array): number
  /** Gives up on a request (the other side sees it cancelled); false if it had ended. */
  cancel(key: number): boolean
  /** Answers a request received with kind 1; false if it is gone. */
  respond(key: number, ok: boolean, bytes: Uint8Array): boolean
  /** Requests sent and not answered yet, as the transport counts them. */
  pending(): number
  /**
   * Where a peer can go without a word (shared memory: its process died): calls
   * `listener` when one went, and every request for which `owned(key)` is true ends with
   * `error`. On a server, the requests of a client; on a client, all of them.
   */
  onGone?(listener: (owned: (key: number) => boolean, error: ZerohopError) => void): void
}

/** Flow control between publishers and subscribers of one ring (shared memory). */
export interface FlowPort {
  /** `[highWater, lowWater]`, as the hub's options resolved them. */
  readonly waterMarks: readonly [high: number, low: number]
  /**
   * Calls `onHigh` (with the fill) once a publish of this hub brings the slowest
   * subscriber to high water; once, until called again. False if this hub does not publish.
   */
  watchHighWater(onHigh: (fill: number) => void): boolean
  /** This hub's subscriber grants `n` more credits; returns what it has left. */
  grantCredits(n: number): number
  /** The credits it has left; `undefined` if it never granted any. */
  credits(): number | undefined
}

/** A transport, opened for one hub. */
export interface Port<T> {
  readonly transport: TransportName
  readonly settings: PortSettings
  /** Largest message in bytes. */
  readonly maxMessageSize: number
  /** The largest message of a `struct` codec (one written in place: at most a slot, over shared memory). */
  readonly maxStructSize: number
  /** The ring received messages are read from. */
  readonly ring: ShmRing
  /** This hub's cursor in it (`undefined` for role `'publisher'`). */
  readonly subscriber: ShmSubscriber | undefined
  /** Bytes before each message in the ring (network transports' envelope; 0 for shared memory). */
  readonly envelope: number
  /** Reads what the `envelope` bytes before the message at `off` say into `info`. */
  readInfo(dv: DataView, off: number, info: MessageInfo): void
  /**
   * Whether a waiting reader polls on the calling thread (with {@link pump}) for
   * `spinUs` before it parks; otherwise the doorbell's native side spins.
   */
  readonly pollsOnCallingThread: boolean

  publish(value: T, channel: number): boolean
  /**
   * `publish` with the time after which the message is not worth reading
   * (`expiresAtMs`, ms since the Unix epoch): receivers pass over it after that and
   * count it (`metrics().expired`). Absent where the transport cannot carry it.
   */
  publishExpiring?(value: T, channel: number, expiresAtMs: number): boolean
  /**
   * Whether publishing `value` on `channel` now would find room: it would neither wait
   * nor be dropped or refused for want of room (what `Hub.send` waits for).
   */
  hasRoom(value: T, channel: number): boolean
  /**
   * Resolves when the transport may have made room (at the latest after `maxMs`);
   * asked before the caller looks at `hasRoom`, so that room made in between counts.
   * Absent where the transport cannot tell: the caller looks by the clock.
   */
  roomMade?(maxMs: number): Promise<void> | undefined
  publishBatch(values: readonly T[]): number
  publishPacked(packed: Uint8Array, messageSize: number): number
  /** Writes the next message in place (throws `ERR_INVALID_STATE` where it cannot). */
  loan(size?: number): Loan<T>
  /** Whether a loan is open (publishing waits for it). */
  readonly loanOpen: boolean
  /** Sends what is batched now (a no-op where nothing batches). */
  flush(): void

  /** Reads the socket into the ring on this thread; how much was read (0 where there is no socket). */
  pump(): number
  /** The bytes of the message at `off` if they were too large for its slot. */
  spilled(off: number): Uint8Array | undefined
  /** Installs what runs when an armed reader may read. */
  setDoorbell(ring: () => void): void
  /** Whether an armed doorbell keeps the event loop alive by itself (else the hub holds it while it waits). */
  readonly armKeepsLoopAlive: boolean
  /** Rings the doorbell once the ring holds messages past `cursor`. */
  arm(cursor: number): void
  disarm(): void

  /** Replaces where published messages go (transports that send to peers they are told). */
  readonly peers: { setPeers(peers: string[]): void } | undefined
  readonly requests: RequestPort | undefined
  readonly flow: FlowPort | undefined
  /**
   * The transports tried before this one that could not be used, and why (`shm://`
   * over a Unix socket where shared memory cannot be used).
   */
  readonly fallbacks?: readonly { transport: TransportName; reason: string }[]
  /** Why this transport, when it stands in for another (see `fallbacks`). */
  readonly selectionReason?: string
  /**
   * Where the port is several transports at once (a listening `auto://` hub: its
   * network transport and shared memory): each part's own port. Publishing goes to
   * every part; the hub reads each part's ring in turn (the port's own `ring` and
   * `subscriber` are its first part's).
   */
  readonly parts?: readonly Port<T>[]
  /** Resolves once the port is ready to be handed to a hub (a fallback connects first). */
  ready?(): Promise<void>
  /** The status now. */
  status(): HubStatus
  /** Calls `listener` with each status event (`own`: about the hub itself, not a peer). */
  onStatus(listener: (event: StatusEvent, own: boolean) => void): void
  /**
   * Whether events cost a watcher of their own, so that the hub asks for them only once
   * someone listens (and a hub nobody listens to can still be garbage-collected).
   */
  readonly statusOnDemand: boolean
  /** The bound address (network transports). */
  localAddress(): string | undefined
  counters(): PublishCounters
  /** The transport's own counters (`metrics().udp`, `metrics().quic`); undefined where it has none. */
  details(): Record<string, unknown> | undefined
  /** What `chaos` did (`metrics().chaos`); undefined without faults. */
  chaos?(): ChaosMetrics | undefined
  /** Waits up to `lingerMs` for what was published to reach its receivers. */
  linger(lingerMs: number): Promise<boolean>
  /** Closes everything the transport holds, the ring included. Idempotent. */
  close(): void
}
