/**
 * `quic://host:port`: QUIC by quinn-proto on zerohop's own I/O. TLS always on,
 * reliable channels whose messages survive reconnects, datagrams, 0-RTT, requests. A
 * network transport: it runs on the shared port of `net.ts`; what is its own is its
 * options and its counters.
 */

import type { ReconnectOptions, TlsOptions } from './connection.js'
import type { WorkGroupMetrics } from './stream.js'

/** The options only `quic://` hubs have. */
export interface QuicOptions {
  /** Accept peers on the URL's address (any number) instead of connecting to it. */
  listen?: boolean
  /** Certificates. TLS is always on. */
  tls?: TlsOptions
  /** Send a keep-alive after this long idle (default 2000; 0: never). */
  keepAliveMs?: number
  /**
   * A connection that hears nothing this long is lost (default 10 000). This is how a
   * peer that vanished (killed, unplugged) is noticed.
   */
  idleTimeoutMs?: number
  /** The reconnect schedule of a connecting hub. */
  reconnect?: ReconnectOptions
  /** Channels, each a stream of its own per peer (default 16). */
  channels?: number
  /**
   * Bytes kept per peer and channel until the peer has read them (default 64 MiB). A
   * full queue applies `backpressure`; a listener disconnects a peer that stays full
   * past `publishTimeoutMs` (`ERR_SLOW_CONSUMER`), and the others go on.
   */
  sendQueueBytes?: number
  /** Messages kept per peer and channel, at most (default: bounded by `sendQueueBytes` only); a full queue is treated as for `sendQueueBytes`. */
  sendQueueMessages?: number
  /**
   * Bytes of received messages larger than a slot (`slotSize`) the hub holds for its
   * reader at most (default: 8 MiB in the ring's aside area and 64 MiB more). Past it
   * the hub reads no more from the peers until the reader catches up, and they wait
   * (their send queues fill): a bound on a slow reader's memory. One message is always
   * taken, whatever its size. The flow-control windows (what quinn holds unread, 8 MiB
   * a channel and 32 MiB a connection by default) are bounded by it too.
   */
  receiveQueueBytes?: number
  /**
   * Publish unreliable datagrams (unordered, not resent, one path MTU each) instead of
   * reliable stream messages (default false).
   */
  datagrams?: boolean
  /**
   * `'lz4'` sends each channel message of 64 bytes or more that LZ4 shrinks compressed,
   * flagged as such, so a peer without it reads it all the same (datagrams go as they
   * are). `metrics().quic.bytesSaved` counts. Default `'none'`.
   */
  compression?: 'lz4' | 'none'
  /**
   * Each channel's priority class, 0 first (0..7; channels past the list are in class
   * 0): when several channels have messages waiting for the connection, the highest
   * class's stream goes first, and each lower class waiting keeps at least a share (a
   * quarter of a turn each time it is passed over), so none starves. Default: every
   * channel alike.
   */
  priorities?: number[]
  /** Largest message (default 16 MiB). Messages above `slotSize` are fetched from the native side. */
  maxMessageSize?: number
  /** How long a listener keeps a disconnected peer's unread messages for its return (default 30 000). */
  peerLingerMs?: number
  /**
   * A connecting hub's work group (1 to 32 bytes): hubs connected to one listener with
   * the same `group` share what it publishes, each message (or datagram) to one of
   * them; see `tcp://`'s `group`.
   */
  group?: string
}

/** A QUIC hub's own metrics (`metrics().quic`). */
export interface QuicMetrics {
  status: string
  peers: number
  reconnects: number
  /** Connections whose first flight carried data, and whether the latest did. */
  zeroRttConnections: number
  lastZeroRtt: boolean
  handshakeFailures: number
  protocolViolations: number
  slowConsumers: number
  dropped: number
  datagramsSent: number
  datagramsReceived: number
  datagramsLost: number
  streamsOpened: number
  streamsAccepted: number
  unackedBytes: number
  requestsPending: number
  answersPending: number
  bytesSent: number
  /** Bytes LZ4 saved of what was published (`compression: 'lz4'`). */
  bytesSaved: number
  bytesReceived: number
  packetsLost: number
  rttUs: number
  cwnd: number
  mtu: number
  /** A listener's work groups (absent without one): see the `group` option. */
  groups?: WorkGroupMetrics[]
}
