/**
 * `udp://host:port`: batched UDP (sendmmsg/recvmmsg or io_uring), small messages packed
 * into datagrams, large ones fragmented, multicast. A network transport: it runs on
 * the shared port of `net.ts`; what is its own is its options and its counters.
 */

/** The options only `udp://` hubs have. */
export interface UdpOptions {
  /**
   * Ask the kernel for receive timestamps (`SO_TIMESTAMPNS`), reported by
   * `Hub.recvMessage` and `Hub.borrow` (default false).
   */
  receiveTimestamps?: boolean
  /**
   * Where published messages go, as `host:port` (`[v6]:port`). With exactly one peer
   * the socket is connected (and receives only from it). A multicast URL sends to its
   * group. Change later with `Hub.setPeers`.
   */
  peers?: string[]
  /**
   * Small messages are packed several to a datagram; a partly filled datagram goes out
   * at the end of the current tick, on `Hub.flush`, or after waiting this long,
   * whichever is first (default 1). 0 sends every message at once.
   */
  flushIntervalMs?: number
  /**
   * Channels whose messages are delivered at least once (default none): each datagram
   * is kept until every peer acknowledged it and resent on a timeout (doubling from
   * twice the measured round trip, 16 tries at most; given up after that, counted in
   * `metrics().udp.givenUp`), or at once when a peer acknowledges the same hole again;
   * the receiver drops duplicates. The other channels stay
   * lossy, so realtime and critical messages share a hub: `publish(v, { channel: 1 })`.
   * Every channel numbers its messages apart. Only the sending hub lists them: a
   * receiver acknowledges whatever asks to be.
   */
  reliableChannels?: number[]
  /** Channels, numbered from 0, each numbering its messages apart (default 16). */
  channels?: number
  /**
   * Messages a reliable channel may have in flight (default 1024, at most 4000). A
   * publish beyond meets `backpressure`: `drop_new` (the default) discards it, `block`
   * waits for acknowledgements, `fail_fast` throws; `send()` waits without blocking.
   */
  maxInFlight?: number
  /**
   * `'lz4'` compresses each datagram whose payload LZ4 shrinks (a packed datagram of
   * small messages, or a fragment), flagged so that a peer without it reads it all the
   * same; one that does not shrink goes as it is. `metrics().udp.bytesSaved` counts.
   * Default `'none'`.
   */
  compression?: 'lz4' | 'none'
  /**
   * Flow control (default true): the unreliable channels keep at most a window of bytes
   * in flight to each unicast peer, as large as the peer's socket buffer allows (the peer
   * says how far it read), so that a sender faster than its receiver does not overflow
   * the receiver's socket buffer, where the kernel would drop what it cannot hold. A
   * publish into a full window meets `backpressure` (`drop_new` drops it and counts it in
   * `metrics().udp.flowRefused`, `block` waits, `fail_fast` throws; `send()` waits). A peer
   * that says nothing for a second while bytes are in flight (gone, or stopped) no longer
   * holds the sender back until it speaks again (`flowSilentPeers`). Multicast groups and
   * reliable channels (which have their own window) are not flow controlled. `false`
   * sends as fast as the sender can, as plain UDP does.
   */
  flowControl?: boolean
  /**
   * The largest message, reassembled from fragments (default 64 KiB, or `slotSize` if
   * that is larger; at most 16 MiB). A message larger than a ring slot (`slotSize`, 184
   * bytes by default) lies aside in the ring and is read in place all the same.
   */
  maxMessageSize?: number
  /** Datagrams per receive batch (default 32). */
  batch?: number
  /**
   * Largest datagram sent, header included: `'auto'` (the default) follows the route to
   * the peers (its MTU less the IP and UDP headers: 65507 on loopback, 1472 across a
   * 1500-byte Ethernet MTU, 8972 with jumbo frames), or a number of bytes (45 to 65507).
   * Receivers take datagrams of any size, so peers need not agree;
   * `metrics().udp.maxDatagram` shows the size in use.
   */
  maxDatagram?: number | 'auto'
  /** Receive with io_uring (`'auto'`, the default, falls back to recvmmsg), `'force'` it, or `'off'`. */
  ioUring?: 'auto' | 'force' | 'off'
  /** Sockets receiving on the port with SO_REUSEPORT, each with its own thread (default 1). */
  receiveThreads?: number
  /** Pin receive thread `i` to core `i` (default false). */
  pinThreads?: boolean
  /** Kernel receive and send buffers asked for (default 4 MiB; `metrics().udp` shows what was granted). */
  recvBuffer?: number
  sendBuffer?: number
  /** SO_BUSY_POLL in µs (default 0, off; needs CAP_NET_ADMIN to raise). */
  busyPollUs?: number
  /** Multicast: the interface address to join and send on (default: the kernel's choice). */
  multicastInterface?: string
  /** Multicast: hops a datagram may travel (default 1). */
  multicastTtl?: number
  /** Multicast: whether members on this host hear what it sends (default true; a hub never hears its own). */
  multicastLoopback?: boolean
}

/** The socket side of a UDP hub's metrics (`metrics().udp`). */
export interface UdpSocketMetrics {
  /** `io_uring` or `recvmmsg`, and why io_uring is not in use when it was wanted. */
  backend: string
  ioUringUnavailable?: string
  messagesSent: number
  datagramsSent: number
  bytesSent: number
  sendBatches: number
  /** Datagrams dropped because the socket's send buffer was full. */
  sendDropped: number
  /**
   * Datagrams the kernel dropped on arrival because the socket's receive buffer was full
   * (SO_RXQ_OVFL): a receiver slower than its senders. Counted once a datagram after
   * the first drop arrived.
   */
  kernelDropped: number
  /** The largest datagram sent now, header included (see the option `maxDatagram`). */
  maxDatagram: number
  /** Flow control: messages refused because a peer's window was full (under `drop_new`: dropped). */
  flowRefused: number
  /** Flow control: peers that stopped reporting while bytes were in flight (they no longer hold the sender back). */
  flowSilentPeers: number
  zerocopyDatagrams: number
  messagesReceived: number
  datagramsReceived: number
  bytesReceived: number
  recvBatches: number
  /** Datagrams that were not ours, corrupt, truncated, or held invalid records. */
  malformed: number
  /** Messages missing by sequence gaps. */
  lost: number
  late: number
  duplicates: number
  /** Fragmented messages given up (timed out, evicted, too large). */
  reassemblyFailures: number
  /** Our own datagrams that came back (multicast loopback), dropped. */
  own: number
  /** What the kernel granted. */
  recvBuffer: number
  sendBuffer: number
  lowDelay: boolean
  busyPollUs: number
  reusePort: boolean
  /** Whether the kernel timestamps received datagrams. */
  timestamps: boolean
  multicastGroup?: string
  receiveSockets: number
  /**
   * Reliable channels (`reliableChannels`): datagrams resent, messages given up after
   * every try, acknowledgements sent and taken, and messages in flight now.
   */
  resent: number
  /** Of `resent`, those resent at once because a peer acknowledged the same hole again. */
  fastResent: number
  givenUp: number
  acksSent: number
  acksReceived: number
  inFlight: number
  /** Bytes LZ4 saved of what was sent (`compression: 'lz4'`). */
  bytesSaved: number
}
