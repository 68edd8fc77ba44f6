/**
 * `nats://host[:4222]/subject`: hubs that publish and subscribe through a NATS server
 * (a cluster, leaf nodes, gateways: whatever the server reaches). A network transport:
 * it runs on the shared port of `net.ts`; what is its own is its options and its
 * counters.
 *
 * A message's body is exactly the bytes the codec made, so plain NATS clients (nats.js,
 * the `nats` CLI) read what a hub publishes and a hub decodes what they publish.
 * Delivery is what core NATS gives: at most once.
 */
import type { ReconnectOptions, TlsOptions } from './connection.js'

/** The options only `nats://` hubs have. */
export interface NatsOptions {
  /**
   * Answer requests on the subject (what `Rpc.serve` opens): a message that comes with
   * a reply subject is a request. Default false.
   */
  listen?: boolean
  /**
   * Subscribe to the URL's subject (default true). False: only publish (and request,
   * as `Rpc.connect` does, which takes its answers in an inbox of its own).
   */
  subscribe?: boolean
  /**
   * A NATS queue group: each message on the subject goes to one member of the group
   * instead of to each (`nats://…/jobs?group=workers`).
   */
  group?: string
  /**
   * TLS, with `quic://`'s and `tcp://`'s options (`ca`, `serverName`, a client `cert` and
   * `key`): the connection turns to TLS after the server's greeting, as NATS clients do.
   * A server that requires TLS refuses a hub without it.
   */
  tls?: TlsOptions
  /**
   * Credentials the server asks for: a user and password, a token, or an nkey (`nkey`
   * or `creds`), one kind at a time.
   */
  user?: string
  pass?: string
  token?: string
  /**
   * A file holding the user's nkey seed (`SU…`, as `nk -gen user` writes it): the hub
   * signs the server's nonce with it, and the server knows the user by its public key
   * (`authorization { users = [{ nkey: U… }] }`). Read as the hub opens; never printed.
   */
  nkey?: string
  /**
   * A credentials file (`.creds`: the user's JWT and nkey seed, as `nsc` writes it), for
   * servers in operator mode (accounts signed by an operator: NGS, Synadia Cloud).
   */
  creds?: string
  /** The name the server lists for this connection (`/connz`). */
  name?: string
  /** When to try again after the connection is lost or an attempt fails. */
  reconnect?: ReconnectOptions
  /** How long one attempt may take, up to the server's first answer (default 10 000). */
  connectTimeoutMs?: number
  /** A ping this often (default 5000); two unanswered and the connection is lost. */
  heartbeatMs?: number
  /**
   * Bytes kept for the server at most (default 8 MiB): what the socket has not taken
   * yet, and what was published while there was no connection (sent once it is back).
   * Past it, `backpressure` applies: `'block'` (default), `'drop_new'` or `'fail_fast'`.
   */
  sendQueueBytes?: number
  /** The largest message (default 1 MiB, the server's usual `max_payload`). */
  maxMessageSize?: number
  /**
   * Bytes of received messages held for a reader whose ring is full (default 64 MiB, as
   * a NATS client's pending limit): past it, what comes is dropped and counted
   * (`slowConsumerDrops`, and an `ERR_SLOW_CONSUMER` status event).
   */
  receiveQueueBytes?: number
  /**
   * What this hub says it is (a bridge's origin): everything it publishes carries it in a
   * `Zerohop-Origin` header, and a message that comes with it is dropped
   * (`metrics().nats.ownReturned`). `Bridge` sets it.
   */
  origin?: string
}

/** `metrics().nats`: the connection to the server, and what it dropped. */
export interface NatsMetrics {
  /** Connections lost and made again. */
  reconnects: number
  /**
   * Messages that came while this hub's reader was a whole ring and `receiveQueueBytes`
   * behind: dropped (a slow consumer, reported once per episode as `ERR_SLOW_CONSUMER`
   * in a status event).
   */
  slowConsumerDrops: number
  /** Publishes dropped (`drop_new` with `sendQueueBytes` full, or cut off by a lost connection), and their bytes. */
  dropped: number
  droppedBytes: number
  /** `-ERR` lines from the server. */
  serverErrors: number
  /** Bytes from the server that were not the protocol (the connection was dropped). */
  protocolViolations: number
  /** Answers for no request waiting (cancelled, or too late). */
  strayAnswers: number
  /** Messages that came with this hub's own `origin` (through another bridge): dropped. */
  ownReturned: number
  /** Requests a serving hub never answered whose reply subjects it forgot (past 65,536). */
  unansweredForgotten: number
  bytesSent: number
  bytesReceived: number
  /** Bytes kept for the server now. */
  pendingBytes: number
  requestsPending: number
  answersPending: number
  /** Subjects this hub knows received messages by. */
  subjects: number
  /** The server's id and its largest message, once connected. */
  serverId: string
  serverMaxPayload: number
  /**
   * Servers the hub may connect to: its URL's, and the others of the cluster its servers
   * told of (`connect_urls`), which it fails over to in turn after a loss.
   */
  knownServers: number
}
