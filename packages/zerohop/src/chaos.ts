/**
 * Fault injection on any network endpoint: `udp://h:9000?chaos=loss:0.1,delay:2ms&seed=7`,
 * or the same as options. The transport applies the faults inside, below every
 * reliability layer, to every datagram it sends and receives (resends and
 * acknowledgements included), seeded so that a run replays exactly.
 */

/** The faults, as an object (the URL form is `'loss:0.1,reorder:0.05,dup:0.01,delay:2ms,jitter:1ms,disconnect:5s'`). */
export interface ChaosOptions {
  /** Probability that a datagram is dropped (0..1). */
  loss?: number
  /** Probability that a datagram is held back by `reorderByMs`, so later ones overtake it. */
  reorder?: number
  /** How long a reordered datagram is held back (default 1). */
  reorderByMs?: number
  /** Probability that a datagram is delivered twice. */
  dup?: number
  /** Every datagram's delay, and up to this much more, uniformly. */
  delayMs?: number
  jitterMs?: number
  /** Transports with connections (`quic://`, `tcp://`, `uds://`) drop them this often; they reconnect. */
  disconnectMs?: number
  /** The seed (the same as the option beside `chaos`). */
  seed?: number
}

/** The options that inject faults, on every network transport. */
export interface FaultOptions {
  /**
   * Faults to inject (`'loss:0.1,delay:2ms'` or a `ChaosOptions`). A fault a transport
   * cannot inject is `ERR_BAD_OPTION` (`ERR_BAD_URL` from a URL) saying why.
   */
  chaos?: string | ChaosOptions
  /** Seeds the faults so a run replays (default: drawn, and shown in `metrics().chaos.seed`). */
  seed?: number
}

/** What the faults did to one direction of traffic. */
export interface ChaosDirectionMetrics {
  /** Datagrams (or segments) that met a fate. */
  seen: number
  /** Dropped. */
  dropped: number
  /** Delivered twice. */
  duplicated: number
  /** Held back so later ones overtook them. */
  reordered: number
  /** Held for a delay. */
  delayed: number
}

/** `metrics().chaos`: the faults in effect and what they did. */
export interface ChaosMetrics {
  /** The faults, in the URL form. */
  spec: string
  /** The seed that replays them. */
  seed: number
  /** What happened to what the hub sent, and to what it received. */
  sent: ChaosDirectionMetrics
  received: ChaosDirectionMetrics
  /** Connections dropped by `disconnect`. */
  disconnects: number
}
