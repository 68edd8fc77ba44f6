/**
 * `tcp://host:port` and `uds:///path` (or `uds://@name`, a Linux abstract socket):
 * reliable channels over byte streams. Both sides say hello first; messages are kept
 * until the peer's application has read them and go again after a reconnect, so the
 * guarantees are `quic://`'s. A network transport: it runs on the shared port of
 * `net.ts`; what is its own is its options and its counters.
 */
import type { ReconnectOptions, TlsOptions } from './connection.js'

/** The options of every hub with reliable channels over connections (`tcp://`, `uds://`, `kcp://`). */
export interface ReliableOptions {
  /** Accept peers on the URL's address (any number) instead of connecting to it. */
  listen?: boolean
  /**
   * `'lz4'` sends each message of 64 bytes or more that LZ4 shrinks compressed, flagged
   * as such (a record of its own), so a peer without it reads it all the same; the
   * others go as they are. `metrics().<transport>.bytesSaved` counts. Default `'none'`.
   */
  compression?: 'lz4' | 'none'
  /**
   * Each channel's priority class, 0 first (0..7; channels past the list are in class
   * 0): when several channels have messages waiting for the connection, the highest
   * class goes, and each lower class waiting keeps at least a share of the writes (a
   * quarter of a turn each time it is passed over), so none starves. Default: every
   * channel alike, in turns.
   */
  priorities?: number[]
  /**
   * A listener passes what each peer publishes on to every other peer, never back to
   * the one that published it (a broker, as `zmq_proxy` or a NATS server is), and
   * receives it itself too. A peer without room in its send queue for what it is
   * passed is a slow consumer, disconnected (`ERR_SLOW_CONSUMER`). Needs `listen: true`.
   */
  relay?: boolean
  /** The reconnect schedule of a connecting hub. */
  reconnect?: ReconnectOptions
  /** How long one connection attempt may take (default 10 000). */
  connectTimeoutMs?: number
  /**
   * Send a heartbeat after this long without sending (default 1000; 0: none). A peer
   * that sends nothing for three of them is lost: how a frozen or unplugged peer is noticed.
   */
  heartbeatMs?: number
  /** Channels, ordered streams of messages within a peer (default 16). */
  channels?: number
  /**
   * Bytes kept per peer and channel until the peer has read them (default 64 MiB; what
   * the kernel still holds for it counts). A full queue applies `backpressure`: under
   * `'block'` a listener disconnects that peer at once (`ERR_SLOW_CONSUMER`) and the
   * others go on, and a connecting hub waits up to `publishTimeoutMs`.
   */
  sendQueueBytes?: number
  /**
   * Messages kept per peer and channel, at most (default: bounded by `sendQueueBytes`
   * only); a full queue is treated as for `sendQueueBytes`.
   */
  sendQueueMessages?: number
  /**
   * Bytes of received messages larger than a slot (`slotSize`) the hub holds for its
   * reader at most (default: 8 MiB in the ring's aside area and 64 MiB more). Past it
   * the hub reads no more from the peers until the reader catches up, and they wait
   * (their send queues fill): a bound on a slow reader's memory. One message is always
   * taken, whatever its size.
   */
  receiveQueueBytes?: number
  /** Largest message (default 16 MiB). Messages above `slotSize` are fetched from the native side. */
  maxMessageSize?: number
  /** How long a listener keeps a disconnected peer's unread messages for its return (default 30 000). */
  peerLingerMs?: number
  /**
   * A connecting hub's work group (1 to 32 bytes): the hubs that connect to one listener
   * with the same `group` share what it publishes, each message going to one of them
   * (connected, with room, the fewest waiting), as ZeroMQ's PUSH/PULL and NATS queue
   * groups do. What a member that went away never got goes to the others at once, and
   * what it did not acknowledge (read) once the listener gives up on it
   * (`peerLingerMs`). A listener's `metrics().<transport>.groups` counts members, what
   * moved (`rerouted`) and what no member could take (`lost`).
   */
  group?: string
}

/** The options only `tcp://` and `uds://` hubs have, besides the reliable ones. */
export interface StreamOptions extends ReliableOptions {
  /**
   * A listening `uds://` hub admits only processes of these users (the kernel says who
   * connects); the others are closed at once and counted in `metrics().uds.refused`.
   * Refused on `tcp://`, where nobody says.
   */
  allowUids?: number[]
}

/** The options only `tcp://` hubs have, besides those of every stream hub. */
export interface TcpOptions extends StreamOptions {
  /**
   * TLS 1.3 on every connection, with `quic://`'s options and error codes (plain TCP
   * without). A listener without `cert` and `key` makes a self-signed certificate; a
   * connecting hub needs `ca`, or `dangerouslyAcceptAnyServer` for development. `ca`
   * on a listener requires client certificates (mutual TLS).
   */
  tls?: TlsOptions
}

/** What every hub with reliable channels over connections counts (`metrics().tcp`, `.uds`, `.kcp`). */
export interface ReliableMetrics {
  status: string
  peers: number
  reconnects: number
  protocolViolations: number
  slowConsumers: number
  heartbeatTimeouts: number
  dropped: number
  /** TLS handshakes that failed (a certificate refused, or a peer that does not speak TLS). */
  handshakeFailures: number
  /** Connections that ended in the middle of a record (a peer killed while it wrote one): the part is dropped. */
  truncatedRecords: number
  /** Bytes LZ4 saved of what was published (`compression: 'lz4'`). */
  bytesSaved: number
  unackedBytes: number
  requestsPending: number
  answersPending: number
  bytesSent: number
  bytesReceived: number
}

/** A stream hub's own metrics (`metrics().tcp`, `metrics().uds`). */
export interface StreamMetrics extends ReliableMetrics {
  acceptFailures: number
  refused: number
  /** Of `unackedBytes`, what the kernel holds in the sockets, not yet taken by the peers (`SIOCOUTQ`). */
  kernelUnsentBytes: number
  /**
   * The peers connected now: `peer` as `recvMessage().from` and status events name it,
   * and over a Unix socket who it is (the kernel says: `pid`, `uid`, `gid`).
   */
  connectedPeers: ConnectedPeer[]
  /** A listener's work groups (absent without one): see the `group` option. */
  groups?: WorkGroupMetrics[]
}

/** A listener's work group (`metrics().tcp.groups`, …). */
export interface WorkGroupMetrics {
  name: string
  /** Its members, connected or kept for their return (`peerLingerMs`). */
  members: number
  /** Messages moved from a member that went away to another. */
  rerouted: number
  /** Messages of a member given up on that no other member could take. */
  lost: number
}

/** A peer connected to a hub with reliable channels (`metrics().tcp.connectedPeers`, …). */
export interface ReliablePeer {
  peer: string
  /** What is kept for it until its application has read it: bytes and messages. */
  queuedBytes: number
  queuedMessages: number
  /** The work group it receives in, if any. */
  group?: string
}

/** A peer connected to a stream hub (`metrics().tcp.connectedPeers`, `metrics().uds.connectedPeers`). */
export interface ConnectedPeer extends ReliablePeer {
  /** Of what is kept, what the kernel holds in its socket, not yet taken by the peer (`SIOCOUTQ`). */
  kernelUnsentBytes: number
  pid?: number
  uid?: number
  gid?: number
}
