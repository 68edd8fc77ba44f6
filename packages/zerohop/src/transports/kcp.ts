/**
 * `kcp://host:port`: the reliable channels of `tcp://` over KCP, reliable UDP by
 * automatic repeat request (wire-compatible with the reference `ikcp.c`), one
 * conversation per peer on one UDP socket. Lower latency than TCP when packets are
 * lost: KCP resends sooner and does not wait for a lost segment's turn. A network
 * transport: it runs on the shared port of `net.ts`; what is its own is its options and
 * its counters.
 */
import type { ReliableMetrics, ReliableOptions, ReliablePeer } from './stream.js'

/**
 * KCP's presets, each its four `ikcp_nodelay` parameters (nodelay, interval, resend,
 * no congestion control) and a minimum RTO:
 *
 * | mode | nodelay | intervalMs | resend | noCongestionControl | minRtoMs |
 * |---|---|---|---|---|---|
 * | `normal` | 0 | 40 | 0 | false | 100 |
 * | `fast` (default) | 0 | 30 | 2 | true | 100 |
 * | `turbo` | 1 | 20 | 2 | true | 30 |
 * | `fastest` | 1 | 10 | 2 | true | 10 |
 *
 * KCP's interval is its retransmission clock, not a send delay: a publish and an
 * arriving datagram go out at once in every mode.
 */
export type KcpMode = 'normal' | 'fast' | 'turbo' | 'fastest'

/**
 * The options only `kcp://` hubs have, besides the reliable ones. A multicast group
 * (`kcp://239.x.y.z:port`, opened with `role: 'publisher'` to send or `'subscriber'` to
 * be a member) takes `mtu`, `maxMessageSize`, and `sendQueueBytes` and
 * `sendQueueMessages` (the sender's repair window); the rest are a conversation's.
 */
export interface KcpOptions extends ReliableOptions {
  /** The preset the parameters below start from (default `'fast'`). */
  mode?: KcpMode
  /** 0: each timeout doubles the RTO; 1 (or `true`): it grows by half; 2: by half of the current RTO. Sets `minRtoMs` to 30 (with) or 100 (without) unless given. */
  nodelay?: 0 | 1 | 2 | boolean
  /** The retransmission clock's period, 10–5000 ms. */
  intervalMs?: number
  /** Resend a segment once this many later ones were acknowledged (0: only on its timeout). */
  resend?: number
  /** Send as fast as the windows allow, without KCP's congestion window. */
  noCongestionControl?: boolean
  /** The smallest retransmission timeout, in ms. */
  minRtoMs?: number
  /** Segments in flight at most (default 128). */
  sendWindow?: number
  /** Segments the receiver holds at most, 128 or more (default 128). */
  recvWindow?: number
  /** Bytes of a datagram, KCP's 24-byte header included (default 1400). */
  mtu?: number
  /**
   * KCP's stream mode: segments are filled up to the MTU, so many small messages share
   * one. By default (message mode) each write of the hub, a burst of messages, is one
   * KCP message, reassembled whole before it is read. Either way a hub's messages keep
   * their boundaries: they are framed above KCP.
   */
  stream?: boolean
  /**
   * Not in KCP itself (on by default): the newest segment in flight, unacknowledged for
   * two round trips (at least 5 ms) with nothing sent after it, is sent once more, as
   * TCP's tail loss probe does, so that a lost request or end of a burst costs
   * milliseconds, not a retransmission timeout (100 ms in `'fast'`). The wire is KCP's.
   */
  tailProbe?: boolean
  /** A conversation that hears nothing for this long ends (default 10 000; 0: never). Heartbeats find a silent peer sooner. */
  idleTimeoutMs?: number
  /** Conversations a listener keeps at most (default 1024): a new peer beyond them is counted (`refusedPeers`) and ignored. */
  maxPeers?: number
}

/** A `kcp://` hub's own metrics (`metrics().kcp`). */
export interface KcpMetrics extends ReliableMetrics {
  /** Of `unackedBytes`, what KCP holds, not yet acknowledged by the peer's KCP. */
  kcpUnackedBytes: number
  /** KCP conversations now. */
  sessions: number
  /** Smoothed round-trip time and retransmission timeout, averaged over the conversations (ms). */
  rttMs: number
  rtoMs: number
  /** The congestion window, averaged over the conversations (segments). */
  window: number
  /** Segments sent again; of them, `fastRetransmits` before their timeout because later ones were acknowledged, `lostSegments` after it, and `tailProbes`. */
  retransmits: number
  fastRetransmits: number
  lostSegments: number
  /** Segments that arrived twice (or outside the receive window). */
  duplicateSegments: number
  /** Tail probes sent (see `tailProbe`). */
  tailProbes: number
  datagramsIn: number
  datagramsOut: number
  /** Datagrams too short or garbled: dropped. */
  badDatagrams: number
  /** Datagrams of no conversation kept here that did not start one: dropped. */
  unknownConversation: number
  /** New peers beyond `maxPeers`: ignored. */
  refusedPeers: number
  /** Conversations ended for resending without an answer, or for silence (`idleTimeoutMs`). */
  deadLinks: number
  /** Datagrams dropped for want of room in the socket's send buffer (KCP sends them again). */
  sendDropped: number
  /** The peers connected now. */
  connectedPeers: KcpPeer[]
}

/** A peer connected to a `kcp://` hub (`metrics().kcp.connectedPeers`). */
export interface KcpPeer extends ReliablePeer {
  /** Of what is kept, what KCP holds, not yet acknowledged by the peer's KCP. */
  kcpUnackedBytes: number
}

/**
 * A multicast group hub's own metrics (`metrics().kcp` of `kcp://239.x.y.z:port`): the
 * sender's (`role: 'sender'`) or a member's (`role: 'member'`).
 */
export interface KcpGroupMetrics {
  role: 'sender' | 'member'
  status: string
  /** Messages published (the sender). */
  messages: number
  datagramsIn: number
  datagramsOut: number
  /** Datagrams not of the group's protocol, or of another sender: dropped. */
  ignored: number
  sendDropped: number
  /** The sender: NAKs it answered, messages it multicast again, and answers that what was asked for is gone. */
  naksReceived?: number
  repairs?: number
  goneAnswers?: number
  /** A member: NAKs it sent, messages it misses now, duplicates dropped. */
  naksSent?: number
  missing?: number
  duplicates?: number
  /** A member: times the sender's window left it behind, and the messages it lost then. */
  fellBehind?: number
  lostMessages?: number
  /** A member: fragments of messages whose start was lost, dropped. */
  fragmentsDropped?: number
}
