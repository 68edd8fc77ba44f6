/**
 * `shm://name` where shared memory cannot be used (no usable segment directory, a
 * runtime that copies external buffers, or `ZEROHOP_SHM=off`): the same hub over a
 * Unix socket, `zerohop-<uid>/<name>.sock` (0600) in `$XDG_RUNTIME_DIR` or the
 * temporary directory.
 *
 * Every hub of the name is a client of one relay (a `uds://` listener with `relay:
 * true`, so what one hub publishes reaches every other one and never itself, as on
 * shared memory). The relay lives in the process of a hub that found nobody listening
 * and made it, and goes when that hub closes; a hub whose relay went away makes the
 * next one (the first to bind the socket wins) and reconnects to it, sending again
 * what the old relay had not read.
 */
import { mkdirSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Codec, raw } from '../codec.js'
import { IoError, UnsupportedTransportError, ZerohopError } from '../errors.js'
import { binding, native, type NetHandle } from '../native.js'
import type { Loan, Port } from '../port.js'
import type { StructCodec } from '../struct.js'
import { CopyLoan } from './copy-loan.js'
import { NetPort, openNet } from './net.js'
import { loanSize, openShm } from './shm.js'

/** Options of `shm://` that a Unix socket has no use for (its hubs keep no segment). */
const SEGMENT_ONLY = ['maxSubscribers', 'highWater', 'lowWater', 'poolSize']

/** How often a hub whose relay went away tries to become the relay. */
const ELECTION_MS = 50

/** Opens `shm://` (or a bare name), or its fallback where shared memory cannot be used. */
export function openShmOrFallback<T>(url: string, options: object, codec: Codec<T> | StructCodec<T>): Port<T> {
  const endpoint = native(() => binding.parseEndpoint(url))
  const memfd =
    (options as { memfd?: unknown }).memfd === true || endpoint.params.some(([k, v]) => k === 'memfd' && v !== 'false' && v !== '0')
  // A memfd segment is asked for by name: no quiet fallback from it.
  if (process.env.ZEROHOP_SHM === 'off') {
    if (memfd) throw new UnsupportedTransportError('shared memory is off (ZEROHOP_SHM=off), and a memfd segment has no fallback')
    return openFallback(endpoint.name ?? '', endpoint.params, options, codec, 'ZEROHOP_SHM=off')
  }
  try {
    return openShm(url, options, codec)
  } catch (e) {
    if (memfd || !unusable(e)) throw e
    return openFallback(endpoint.name ?? '', endpoint.params, options, codec, (e as Error).message)
  }
}

/** Whether `e` says that shared memory cannot be used here (not that it was misused). */
export function unusable(e: unknown): boolean {
  if (!(e instanceof ZerohopError)) return false
  return e.code === 'ERR_IO' || (e.code === 'ERR_UNSUPPORTED_TRANSPORT' && /external ArrayBuffers/.test(e.message))
}

/**
 * The `uds://` URL standing in for `shm://` where shared memory cannot be used (`why`):
 * the socket `file` in this user's `0700` directory for them.
 */
export function fallbackUrl(file: string, why: string): string {
  const uid = process.getuid?.() ?? 0
  const dir = join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), `zerohop-${uid}`)
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    chmodSync(dir, 0o700)
  } catch (e) {
    throw new IoError(`shared memory cannot be used (${why}), nor ${dir} for its Unix-socket fallback: ${(e as Error).message}`)
  }
  return `uds://${join(dir, file)}`
}

/** What a hub's `shm://` URL parameters and options become over its Unix-socket fallback. */
export function streamOptions(params: string[][], options: object): Record<string, unknown> {
  const own: Record<string, unknown> = Object.fromEntries(params.map(([k, v]) => [k, v]))
  Object.assign(own, options)
  // The largest message as over shared memory (whose pool and side path take what a slot does not).
  const { defaultMaxMessage, maxMessageLimit } = binding.shmOffsets()
  own.maxMessageSize ??= Math.min(maxMessageLimit, Math.max(defaultMaxMessage, Number(own.slotSize) || 0, Number(own.poolSize) || 0))
  for (const k of SEGMENT_ONLY) delete own[k]
  // Lapping has no meaning on a stream: the stream's own policy (a slow reader is a slow consumer).
  if (own.backpressure === 'drop_old') delete own.backpressure
  return own
}

export function openFallback<T>(name: string, params: string[][], options: object, codec: Codec<T> | StructCodec<T>, why: string): Port<T> {
  const url = fallbackUrl(`${name}.sock`, why)
  const own = streamOptions(params, options)
  const relay = becomeRelay(url)
  let handle: NetHandle | undefined
  try {
    handle = native(() => binding.NetHandle.open(url, { ...own, reconnect: { initialMs: 10, maxMs: 200 } }))
    return new FallbackPort<T>(handle, codec, url, relay, why)
  } catch (e) {
    handle?.close()
    relay?.close()
    throw e
  }
}

/** Opens the relay of `url`, unless another hub has it (or it cannot be made now). */
function becomeRelay(url: string): Port<Uint8Array> | undefined {
  try {
    return openNet(url, { listen: true, relay: true, role: 'publisher' }, raw)
  } catch (e) {
    if (e instanceof ZerohopError) return undefined
    throw e
  }
}

/** A `uds://` client that stands in for `shm://`, with the relay it may host. */
class FallbackPort<T> extends NetPort<T> {
  readonly fallbacks: readonly { transport: 'shm'; reason: string }[]
  readonly selectionReason: string
  private relay: Port<Uint8Array> | undefined
  private readonly election: ReturnType<typeof setInterval>
  private copyLoan: CopyLoan<T> | undefined

  constructor(handle: NetHandle, codec: Codec<T> | StructCodec<T>, url: string, relay: Port<Uint8Array> | undefined, why: string) {
    super(handle, codec)
    this.relay = relay
    this.fallbacks = [{ transport: 'shm', reason: why }]
    this.selectionReason = `shared memory cannot be used here: shm:// over a Unix socket (${url})`
    this.election = setInterval(() => {
      if (this.relay === undefined && this.status() === 'reconnecting') this.relay = becomeRelay(url)
    }, ELECTION_MS)
    this.election.unref()
  }

  /** Connected to a relay (within a few seconds: else the hub goes on connecting). */
  override async ready(): Promise<void> {
    await super.ready()
    for (let i = 0; i < 500 && this.status() !== 'connected'; i++) await new Promise((r) => setTimeout(r, 10))
  }

  /** A loan of a buffer of this port's own (a slot's size, or `size`), sent as a copy on commit. */
  override loan(size?: number): Loan<T> {
    const need = loanSize(size, this.ring.slotSize, this.maxMessageSize)
    return (this.copyLoan = CopyLoan.start(this.copyLoan, need, this.struct, (bytes) => this.send(bytes, 0)))
  }

  override close(): void {
    clearInterval(this.election)
    super.close()
    this.relay?.close()
    this.relay = undefined
  }
}
