/**
 * `quic://host:port`: QUIC by quinn-proto on zerohop's own I/O. TLS always on,
 * reliable channels whose messages survive reconnects, datagrams, 0-RTT, requests. A
 * network transport: it runs on the shared port of `net.ts`; what is its own is its
 * options and its counters.
 */

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

/** When a connecting hub tries again after losing its connection. */
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
  /**
   * Publish unreliable datagrams (unordered, not resent, one path MTU each) instead of
   * reliable stream messages (default false).
   */
  datagrams?: boolean
  /** Largest message (default 16 MiB). Messages above `slotSize` are fetched from the native side. */
  maxMessageSize?: number
  /** How long a listener keeps a disconnected peer's unread messages for its return (default 30 000). */
  peerLingerMs?: number
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
  bytesReceived: number
  packetsLost: number
  rttUs: number
  cwnd: number
  mtu: number
}
