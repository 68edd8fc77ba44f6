/**
 * Options every connection transport shares (`quic://`, `tcp://`, `uds://`), the same
 * names and meaning on each: TLS and the reconnect schedule.
 */

/** TLS settings: `quic://` (always on) and `tcp://` (on when given). */
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
