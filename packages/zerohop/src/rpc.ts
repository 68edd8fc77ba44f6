/**
 * Request/response over a transport with requests: `quic://` (one stream per request,
 * so a slow request holds up no other), `tcp://` and `uds://` (requests on the
 * connection's reliable channel), and `shm://` (a request segment every client writes
 * into, and a reply segment per client: see `transports/shm-rpc.ts`). A timeout or an
 * abort cancels the request (the server's handler sees its `signal` abort) and leaves
 * nothing behind on either side. It runs on the transport's {@link RequestPort} and a
 * hub over the same port for what arrives.
 *
 * ```ts
 * await using srv = await Rpc.serve<Req, Res>('quic://0.0.0.0:7000', async (req) => res, { codec: 'json' })
 * await using rpc = await Rpc.connect<Req, Res>('quic://127.0.0.1:7000', { codec: 'json', tls: { ca: 'ca.pem' } })
 * const res = await rpc.request(req, { timeoutMs: 50 })
 * ```
 */
import { type Codec, type CodecOption, describe, raw, resolveCodec } from './codec.js'
import {
  AbortedError,
  BadOptionError,
  ClosedError,
  CodecError,
  ConnectionLostError,
  errorFor,
  ProtocolError,
  ERROR_CODES,
  type ErrorCode,
  RemoteError,
  TimeoutError,
  UnsupportedTransportError,
  ZerohopError,
} from './errors.js'
import type { RequestInfo } from './envelope.js'
import { timing } from './latency.js'
import { checkLogger } from './logging.js'
import { addressInUse, Dispatcher, MemberLink, memberUrl, type ShareHost, shareKey } from './rpc-share.js'
import { type CloseOptions, Hub } from './hub.js'
import { binding, native } from './native.js'
import type { HubOptions } from './options.js'
import type { RequestPort } from './port.js'
import { available, requestTransportFor, selectorFor } from './transports/index.js'

/** Options of {@link Rpc.serve} and {@link Rpc.connect}: the hub's, and a codec for both ways. */
export interface RpcOptions<Req, Res> extends Omit<HubOptions<Uint8Array>, 'codec' | 'listen' | 'datagrams' | 'role' | 'relay' | 'memfd'> {
  /** How requests and replies become bytes: `'raw'` (default), `'json'`, `'msgpack'` or a custom codec. */
  codec?: CodecOption<Req | Res>
  /** Connecting: how long {@link Rpc.connect} waits for the first connection (default 10 000). */
  connectTimeoutMs?: number
}

/** Options of {@link RpcClient.request}. */
export interface RequestOptions {
  /** Reject with `ERR_TIMEOUT` (and cancel the request on the server) after this long. */
  timeoutMs?: number
  /** Reject with `ERR_ABORTED` (and cancel the request on the server) when aborted. */
  signal?: AbortSignal
}

/** What a handler gets besides the request. */
export interface RequestContext {
  /** Aborted when the client gave up (timeout, abort) or left, or the server closes. */
  signal: AbortSignal
  /** The client's address, `host:port`. */
  from: string
}

/** Answers one request; a throw becomes `ERR_REMOTE` on the client (or the error's own `code`). */
export type RpcHandler<Req, Res> = (request: Req, context: RequestContext) => Res | Promise<Res>

/** Requests a server takes in a row between looks at the clock (see `RpcServer.serve`). */
const SERVE_RUN = 64
const KIND_REQUEST = 1
const KIND_REPLY = 2
const KIND_FAILED = 3
const KIND_CANCELLED = 4
const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder()

/** Counters of an RPC server. */
export interface RpcServerMetrics {
  /** Requests whose handler is running now (here, or on the member they were handed to). */
  inFlight: number
  served: number
  failed: number
  /** Requests the client gave up on before the handler finished. */
  cancelled: number
  /** Requests handed to another server of the URL (see `Rpc.serve`), and answered. */
  forwarded: number
}

/**
 * Where a server's requests come from: the URL it listens on, or (a member of the
 * servers of a network URL: see `rpc-share.ts`) a socket of its own.
 */
class Source {
  readonly inFlight = new Map<number, Context>()
  loop: Promise<void> = Promise.resolve()
  constructor(
    readonly hub: Hub<Uint8Array>,
    readonly requests: RequestPort,
    /** The URL's own: its requests may be handed to members. */
    readonly listens: boolean,
  ) {}
}

/** A server: answers requests with its handler. */
export class RpcServer<Req, Res> implements AsyncDisposable {
  private readonly sources: Source[] = []
  private readonly counts = { served: 0, failed: 0, cancelled: 0, forwarded: 0 }
  /** Listening on a network URL that other servers share: hands them requests in turn. */
  private dispatcher: Dispatcher | undefined
  /** A member of the servers of a network URL: its link to their dispatcher. */
  private link: MemberLink | undefined
  private closed = false

  private constructor(
    private readonly url: string,
    private readonly options: RpcOptions<Req, Res>,
    private readonly codec: Codec<Req | Res>,
    private readonly handler: RpcHandler<Req, Res>,
    /** False for the registry of a URL's servers (see `rpc-share.ts`): plumbing, not listed. */
    private readonly shared: boolean,
  ) {}

  /** @internal (`shared`: false for the registry of a URL's servers, which no other shares.) */
  static async start<Req, Res>(url: string, handler: RpcHandler<Req, Res>, options: RpcOptions<Req, Res>, shared = true): Promise<RpcServer<Req, Res>> {
    if (typeof handler !== 'function') throw new BadOptionError(`Rpc.serve takes a handler function, got ${describe(handler)}`)
    const codec = resolveCodec(options.codec) as Codec<Req | Res>
    const server = new RpcServer<Req, Res>(url, options, codec, handler, shared)
    let opened: ReturnType<typeof openRpc>
    try {
      opened = openRpc(url, options, true)
    } catch (e) {
      // Served already: share it (a member, on this host).
      if (!shared || !addressInUse(e)) throw e
      if (!(await server.join())) throw e
      return server
    }
    server.add(opened, true)
    try {
      await opened.ready()
    } catch (e) {
      await server.close()
      throw e
    }
    // (Servers share a bound address through a dispatcher. Over shared memory the servers
    // of a name share its requests themselves, and those of a subject in the messaging
    // server's queue group: neither binds an address.)
    if (shared && opened.hub.transport !== 'shm' && !namesSubject(url)) await server.dispatch()
    return server
  }

  /** Reads requests from `opened` too. */
  private add(opened: { hub: Hub<Uint8Array>; requests: RequestPort }, listens: boolean): Source {
    const s = new Source(opened.hub, opened.requests, listens)
    // (On the host's list of listeners, as a listening hub is; shared memory's are its segments.)
    if (listens && this.shared && opened.hub.transport !== 'shm') opened.hub.listed(true)
    opened.requests.onGone?.((owned) => {
      for (const key of s.inFlight.keys()) if (owned(key)) this.cancelled(s, key)
    })
    s.loop = this.serve(s)
    this.sources.push(s)
    return s
  }

  /** Lets later servers of the URL join this one (its registry), to be handed requests. */
  private async dispatch(): Promise<void> {
    try {
      this.dispatcher = await Dispatcher.start(shareHost, shareKey(this.url, this.localAddress))
    } catch {
      // (Its registry taken: this server answers alone.)
    }
  }

  /** Joins the server that listens on the URL as a member; false when there is none to join (the address is someone else's). */
  private async join(): Promise<boolean> {
    const key = shareKey(this.url)
    const own = memberUrl(key)
    this.add(openRpc(own, {}, true), false)
    this.link = new MemberLink(shareHost, key, own, () => this.takeOver())
    try {
      await this.link.start()
      return true
    } catch {
      await this.close()
      return false
    }
  }

  /** The URL's dispatcher is gone: listen in its place; whether this one does now. */
  private takeOver(): boolean {
    if (this.closed) return false
    try {
      this.add(openRpc(this.url, this.options, true), true)
    } catch {
      return false
    }
    this.link = undefined
    void this.dispatch()
    return true
  }

  /** The bound address, `host:port` (a member's: undefined, it listens on no address of the URL's). */
  get localAddress(): string | undefined {
    return this.sources.find((s) => s.listens)?.hub.localAddress
  }

  metrics(): RpcServerMetrics {
    return { inFlight: this.sources.reduce((n, s) => n + s.inFlight.size, 0), ...this.counts }
  }

  /**
   * Stops answering: running handlers see their signal abort, and their requests fail
   * (`ERR_CONNECTION_LOST`, retryable: another server of the name may take them).
   */
  async close(options: CloseOptions = {}): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.link?.close()
    for (const s of this.sources) {
      for (const [key, context] of s.inFlight) {
        context.abort(new ClosedError('the server is closing'))
        this.fail(s, key, new ConnectionLostError('the server closed while it handled the request'))
      }
      s.inFlight.clear()
    }
    await this.dispatcher?.close()
    for (const s of this.sources) {
      await s.hub.close(options)
      await s.loop
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  private async serve(s: Source): Promise<void> {
    // (Not in the constructor's turn: the first poll may spin for `spinUs`.)
    await new Promise(setImmediate)
    let run = 0
    let since = 0
    // One object for every request taken: each is done with before the next is taken.
    const m = taken()
    for (;;) {
      try {
        // What is there (or comes within the spin) at once; then wait. After a
        // millisecond of requests in a row, a turn of the event loop, so that handlers
        // waiting for I/O or timers go on under a steady stream of requests (the clock
        // is looked at every SERVE_RUN requests).
        if (++run >= SERVE_RUN) {
          run = 0
          const t = performance.now()
          if (since === 0) since = t
          else if (t - since >= 1) {
            await new Promise(setImmediate)
            since = 0
          }
        }
        m.kind = 0 // (not every envelope has one)
        if (s.hub.isClosed || !s.hub.pollMessage(m)) {
          run = 0
          since = 0
          await s.hub.parkMessage(m)
        }
      } catch (e) {
        if (s.hub.isClosed) return
        throw e
      }
      const key = m.request!
      if (m.kind === KIND_REQUEST) {
        if (s.listens && this.dispatcher !== undefined && this.forward(s, key, m.value!)) continue
        // A handler that returned a promise (an `async` one that finished at once, as
        // many do) is answered in the next microtask: let it run before the next request.
        if (this.answer(s, key, m.value!, m.from ?? '')) await undefined
      } else if (m.kind === KIND_CANCELLED) this.cancelled(s, key)
    }
  }

  /** The client gave up on request `key`, or is gone: its handler's signal aborts. */
  private cancelled(s: Source, key: number): void {
    const context = s.inFlight.get(key)
    if (context === undefined) return
    s.inFlight.delete(key)
    this.counts.cancelled++
    context.abort(new AbortedError('the client gave up on this request'))
  }

  /**
   * Hands request `key` to the member whose turn it is (a request of the dispatcher's
   * own to it, cancelled with the client's): false when it is this server's turn.
   */
  private forward(s: Source, key: number, bytes: Uint8Array): boolean {
    const member = this.dispatcher!.next()
    if (member === undefined) return false
    const context = new Context('')
    s.inFlight.set(key, context)
    member.request(bytes.slice(), { signal: context.signal }).then(
      (answer) => {
        if (!s.inFlight.delete(key)) return
        try {
          s.requests.respond(key, true, answer as Uint8Array)
          this.counts.forwarded++
        } catch (e) {
          this.fail(s, key, e)
        }
      },
      (e) => {
        if (s.inFlight.delete(key)) this.fail(s, key, e)
      },
    )
    return true
  }

  /** Runs the handler of request `key`; true if its answer comes later (a promise). */
  private answer(s: Source, key: number, bytes: Uint8Array, from: string): boolean {
    const context = new Context(from)
    const start = timing.on ? performance.now() : -1
    let res: Res | Promise<Res>
    try {
      res = this.handler(decodeOwned(this.codec, bytes) as Req, context)
    } catch (e) {
      this.fail(s, key, e)
      return false
    }
    // A handler that answers at once is answered at once (nothing can cancel it
    // meanwhile: no promise, no later turn, no entry in `inFlight`).
    if (!isThenable(res)) {
      this.reply(s, key, res)
      if (start >= 0) handled(s, start)
      return false
    }
    s.inFlight.set(key, context)
    res.then(
      (value) => {
        if (!s.inFlight.delete(key)) return
        this.reply(s, key, value)
        if (start >= 0) handled(s, start)
      },
      (e) => {
        if (s.inFlight.delete(key)) this.fail(s, key, e)
      },
    )
    return true
  }

  private reply(s: Source, key: number, res: Res): void {
    try {
      s.requests.respond(key, true, this.codec.encode(res))
    } catch (e) {
      return this.fail(s, key, e) // not encodable, or too large to send
    }
    this.counts.served++
  }

  private fail(s: Source, key: number, e: unknown): void {
    this.counts.failed++
    const code = e instanceof ZerohopError ? e.code : 'ERR_REMOTE'
    const message = e instanceof Error ? e.message : String(e)
    try {
      s.requests.respond(key, false, utf8.encode(JSON.stringify({ code, message })))
    } catch {
      // Too long to send (a small slot): the code alone, or, failing that, nothing (the
      // client's timeout ends the request).
      try {
        s.requests.respond(key, false, utf8.encode(JSON.stringify({ code, message: '' })))
      } catch {}
    }
  }
}

/** Times a request `s` received at `start` (`performance.now()`) and has just answered. */
function handled(s: Source, start: number): void {
  s.hub.latencies.since('handle', start)
}

/** What the servers of a network URL share through (see `rpc-share.ts`). */
const shareHost: ShareHost = {
  connect: (url, json) => RpcClient.start(url, { codec: json ? 'json' : 'raw', connectTimeoutMs: 2000 }),
  serve: (url, handler) => RpcServer.start(url, handler, { codec: 'json' }, false),
}

/** A request's {@link RequestContext}; its signal is made when the handler first asks for it. */
class Context implements RequestContext {
  private controller: AbortController | undefined
  private reason: unknown
  private aborted = false

  constructor(readonly from: string) {}

  // (Making an `AbortSignal` costs more than a round trip over shared memory.)
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController()
      if (this.aborted) this.controller.abort(this.reason)
    }
    return this.controller.signal
  }

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.controller?.abort(reason)
  }
}

/** Counters of an RPC client. */
export interface RpcClientMetrics {
  /** Requests waiting for their reply. */
  pending: number
  /** The same, as the native side counts them (both are 0 when nothing is left behind). */
  nativePending: number
}

interface Pending<Res> {
  /** When it was sent (`performance.now()`), or -1 when nothing times requests. */
  start: number
  resolve(v: Res): void
  reject(e: unknown): void
  timer: ReturnType<typeof setTimeout> | undefined
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

/** A client: sends requests to one server. */
export class RpcClient<Req, Res> implements AsyncDisposable {
  private readonly pending = new Map<number, Pending<Res>>()
  /**
   * Ends the reply pump's wait when the last request ends while it waits, so that an
   * idle client holds no event-loop handle. Kept until then (an `AbortSignal` takes
   * microseconds to make: not one per request).
   */
  private pumpStop: AbortController | undefined
  private pumping = false
  /** True while the pump handles a reply (it is not waiting then). */
  private handling = false
  /** What `request` takes an answer into when it polls for it (one object for all). */
  private readonly taken = taken()

  private constructor(
    private readonly hub: Hub<Uint8Array>,
    private readonly requests: RequestPort,
    private readonly codec: Codec<Req | Res>,
  ) {
    requests.onGone?.((owned, error) => {
      for (const key of this.pending.keys()) if (owned(key)) this.settle(key)?.reject(error)
    })
  }

  /** @internal */
  static async start<Req, Res>(url: string, options: RpcOptions<Req, Res>): Promise<RpcClient<Req, Res>> {
    const codec = resolveCodec(options.codec) as Codec<Req | Res>
    const { hub, requests } = openRpc(url, options, false)
    const timeoutMs = options.connectTimeoutMs ?? 10_000
    const failed = await connected(hub, timeoutMs)
    if (failed !== undefined) {
      await hub.close({ lingerMs: 0 })
      throw failed
    }
    return new RpcClient<Req, Res>(hub, requests, codec)
  }

  /** Counters; `pending` and `nativePending` are 0 once every request has ended. */
  metrics(): RpcClientMetrics {
    return { pending: this.pending.size, nativePending: this.hub.isClosed ? 0 : this.requests.pending() }
  }

  /** The connection's status (see {@link Hub.status}). */
  get status(): Hub<Uint8Array>['status'] {
    return this.hub.status
  }

  /**
   * Sends `request` and resolves with the reply. Rejects with `ERR_TIMEOUT` after
   * `timeoutMs`, `ERR_ABORTED` when `signal` aborts (both cancel the request on the
   * server), `ERR_REMOTE` (or the handler's own code) when the handler threw,
   * `ERR_CONNECTION_LOST` when the connection broke first.
   */
  request(request: Req, options?: RequestOptions): Promise<Res> {
    // (No default object: one a request costs more than reading two fields of none.)
    const timeoutMs = options?.timeoutMs
    const signal = options?.signal
    if (timeoutMs !== undefined && !(timeoutMs >= 0 && Number.isFinite(timeoutMs))) {
      return Promise.reject(new BadOptionError(`timeoutMs must be a finite number ≥ 0, got ${String(timeoutMs)}`))
    }
    if (this.hub.isClosed) return Promise.reject(new ClosedError('the client is closed'))
    if (signal?.aborted) return Promise.reject(new AbortedError('the request was aborted', { cause: signal.reason }))
    let key: number
    const start = timing.on ? performance.now() : -1
    try {
      key = this.requests.request(this.codec.encode(request))
    } catch (e) {
      return Promise.reject(e)
    }
    // Nothing else waits: wait for this answer right here, for up to `spinUs` (the
    // hub polls on this thread where its transport can), and settle at once.
    if (!this.pumping && this.pending.size === 0) {
      const m = this.taken
      m.kind = 0 // (not every envelope has one)
      if (this.hub.pollMessage(m)) {
        if (m.request === key) {
          if (start >= 0) this.hub.latencies.since('request', start)
          return this.answerOf(m as Answer)
        }
        this.handle(m as Answer) // an answer to a request given up on
      }
    }
    return new Promise<Res>((resolve, reject) => {
      const entry: Pending<Res> = { start, resolve, reject, timer: undefined, signal, onAbort: undefined }
      if (timeoutMs !== undefined) {
        entry.timer = setTimeout(() => this.giveUp(key, new TimeoutError(`no reply within ${timeoutMs} ms`)), timeoutMs)
      }
      if (signal) {
        entry.onAbort = () => this.giveUp(key, new AbortedError('the request was aborted', { cause: signal.reason }))
        signal.addEventListener('abort', entry.onAbort, { once: true })
      }
      this.pending.set(key, entry)
      this.pump()
    })
  }

  /** Cancels every pending request (`ERR_CLOSED`) and closes the connection. */
  async close(options: CloseOptions = {}): Promise<void> {
    for (const key of this.pending.keys()) this.giveUp(key, new ClosedError('the client was closed'))
    await this.hub.close(options)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  private settle(key: number): Pending<Res> | undefined {
    const entry = this.pending.get(key)
    if (entry === undefined) return undefined
    this.pending.delete(key)
    if (entry.timer !== undefined) clearTimeout(entry.timer)
    if (entry.onAbort) entry.signal!.removeEventListener('abort', entry.onAbort)
    if (this.pending.size === 0 && !this.handling && this.pumpStop !== undefined) {
      this.pumpStop.abort()
      this.pumpStop = undefined
    }
    return entry
  }

  private giveUp(key: number, error: ZerohopError): void {
    const entry = this.settle(key)
    if (entry === undefined) return
    this.requests.cancel(key)
    entry.reject(error)
  }

  /** Reads replies while requests are pending. */
  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    void (async () => {
      while (this.pending.size > 0 && !this.hub.isClosed) {
        const stop = (this.pumpStop ??= new AbortController())
        let m: Awaited<ReturnType<Hub<Uint8Array>['recvMessage']>> & RequestInfo
        try {
          m = await this.hub.recvMessage({ signal: stop.signal })
        } catch {
          break // stopped (nothing pending) or closed
        }
        this.handling = true
        try {
          this.handle(m)
        } finally {
          this.handling = false
        }
      }
      this.pumping = false
      if (this.pending.size > 0 && !this.hub.isClosed) this.pump()
    })()
  }

  /** Settles the request `m` answers (if it still waits). */
  private handle(m: Answer): void {
    const entry = this.settle(m.request ?? -1)
    if (entry === undefined) return
    if (entry.start >= 0) this.hub.latencies.since('request', entry.start)
    this.answerOf(m).then(entry.resolve, entry.reject)
  }

  /** What answer `m` says: the reply, or why the request failed. */
  private answerOf(m: Answer): Promise<Res> {
    if (m.kind === KIND_FAILED) return Promise.reject(failure(m.value))
    if (m.kind !== KIND_REPLY) return Promise.reject(new ProtocolError(`an answer of kind ${String(m.kind)}`))
    try {
      return Promise.resolve(decodeOwned(this.codec, m.value) as Res)
    } catch (e) {
      return Promise.reject(e instanceof ZerohopError ? e : new CodecError(String(e)))
    }
  }
}

/** A message `Rpc` took: its bytes, and what its envelope said. */
type Answer = RequestInfo & { value: Uint8Array }

/** An object to take messages into, shaped as every one it will hold. */
function taken(): RequestInfo & { value: Uint8Array | undefined } {
  return { value: undefined, kind: 0, request: 0, from: undefined }
}

/**
 * The value of `bytes`, a message the Rpc's hub received (with the raw codec: a copy of
 * its own already), by `codec`: the raw codec's would be a second copy, so it is skipped.
 */
function decodeOwned<V>(codec: Codec<V>, bytes: Uint8Array): V {
  return codec === (raw as Codec<unknown>) ? (bytes as V) : codec.decode(bytes)
}

function isThenable<V>(v: V | PromiseLike<V>): v is PromiseLike<V> {
  return typeof (v as { then?: unknown } | null)?.then === 'function'
}

/** Waits for `hub` to connect: undefined once it has, or why it will not. */
function connected(hub: Hub<Uint8Array>, timeoutMs: number): Promise<ZerohopError | undefined> {
  if (hub.status === 'connected') return Promise.resolve(undefined)
  return new Promise((resolve) => {
    const done = (failure: ZerohopError | undefined): void => {
      clearTimeout(timer)
      off()
      resolve(failure)
    }
    const timer = setTimeout(() => done(new TimeoutError(`no connection to ${hub.url} within ${timeoutMs} ms`)), timeoutMs)
    const off = hub.onStatus((e) => {
      if (e.peer !== undefined && e.status === 'connected') done(undefined)
      else if (e.status === 'disconnected') done(e.error ?? new ConnectionLostError(`cannot connect to ${hub.url}`))
    })
    if (hub.status === 'connected') done(undefined)
  })
}

/** Why a request failed: the server's `{ code, message }`, or the transport's own words. */
function failure(bytes: Uint8Array): ZerohopError {
  const text = fromUtf8.decode(bytes)
  try {
    const { code, message } = JSON.parse(text) as { code?: string; message?: string }
    if (typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code)) {
      return errorFor(code as ErrorCode, message ?? '')
    }
    return new RemoteError(message ?? text)
  } catch {
    return new ConnectionLostError(`the request did not complete: ${text}`)
  }
}

/** Whether `url` names a subject of a messaging server (`nats://`), not an address or a segment. */
function namesSubject(url: string): boolean {
  return native(() => binding.parseEndpoint(url)).subject != null
}

/** Opens the transport of `url` and a hub over it; its requests are what `Rpc` runs on. */
function openRpc<Req, Res>(
  url: string,
  options: RpcOptions<Req, Res>,
  listen: boolean,
): { hub: Hub<Uint8Array>; requests: RequestPort; ready: () => Promise<void> } {
  if (typeof options !== 'object' || options === null) throw new BadOptionError(`options must be an object, got ${describe(options)}`)
  // (`listen` is the call's: serve or connect.)
  const { codec: _codec, connectTimeoutMs: _timeout, listen: _listen, logger, ...hubOptions } = options as RpcOptions<Req, Res> & { listen?: unknown }
  const log = logger === undefined ? undefined : checkLogger(logger)
  if (selectorFor(url) !== undefined) {
    throw new UnsupportedTransportError(`Rpc takes a transport's URL (shm://, quic://, tcp://, uds://, kcp:// or nats://); ${url} chooses one for hubs only`)
  }
  const endpoint = native(() => binding.parseEndpoint(url))
  const open = requestTransportFor(endpoint.transport)
  if (open === undefined) {
    throw new UnsupportedTransportError(`the ${endpoint.transport}:// transport is not available in this version of zerohop (${available()} are)`)
  }
  const port = open(url, hubOptions, listen)
  if (port.requests === undefined) {
    port.close()
    throw new BadOptionError(`Rpc runs over a transport with requests (shm://, quic://, tcp://, uds://, kcp:// or nats://); ${url} is ${port.transport}://`)
  }
  return { hub: Hub.over(url, port, raw).logTo(log), requests: port.requests, ready: async () => port.ready?.() }
}

/** Request/response (over `quic://` in this version). */
export const Rpc = {
  /**
   * Listens on `url` and answers each request with `handler`. Several servers of one
   * `shm://` name, or of one network URL on one host, share its requests: each request
   * is answered by one of them (see the README's "Work groups").
   */
  serve<Req = Uint8Array, Res = Uint8Array>(
    url: string,
    handler: RpcHandler<Req, Res>,
    options: RpcOptions<Req, Res> = {},
  ): Promise<RpcServer<Req, Res>> {
    return RpcServer.start(url, handler, options)
  },
  /** Connects to the server at `url`; resolves once connected. */
  connect<Req = Uint8Array, Res = Uint8Array>(url: string, options: RpcOptions<Req, Res> = {}): Promise<RpcClient<Req, Res>> {
    return RpcClient.start(url, options)
  },
}
