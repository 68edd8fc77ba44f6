/**
 * `Bridge`: forwards what one hub receives to another, and back if asked: local hubs to
 * a NATS subject (`Bridge.start('shm://prices', 'nats://server:4222/prices', { direction:
 * 'both' })`), so that several local processes publish through shared memory and one
 * bridge carries the stream across sites. The forwarding runs in Rust, a thread each way,
 * batched, off the event loop; see `zerohop::bridge` for how loops are prevented.
 */
import { BadOptionError, fromNative } from './errors.js'
import { type BridgeMetrics, binding, native } from './native.js'

/** Which way a bridge forwards, from its local side: `out` (to the remote; the default), `in`, or `both`. */
export type BridgeDirection = 'out' | 'in' | 'both'

export interface BridgeOptions {
  direction?: BridgeDirection
  /** Options of the local hub (those of its URL's transport). */
  local?: object
  /**
   * Options of the remote hub. A `nats://` side drops what finds no room
   * (`backpressure: 'drop_new'`, within `sendQueueBytes`), counted, unless told otherwise.
   */
  remote?: object
  /**
   * What a `nats://` side says it is, in a header on everything it forwards: what comes
   * back with it is dropped (default: a hash of this host's name and the local URL).
   */
  origin?: string
}

/** A bridge's counters, each way (the native side's, as it reports them). */
export type { BridgeDirectionMetrics, BridgeMetrics } from './native.js'

const DIRECTIONS: readonly BridgeDirection[] = ['out', 'in', 'both']

export class Bridge {
  private closing: Promise<void> | undefined
  /** The counts when it closed. */
  private final: BridgeMetrics | undefined
  /** Keeps the process up while the bridge runs, as a listening server does (its work is on its own threads). */
  private readonly alive = setInterval(() => {}, 1 << 30)

  private constructor(
    readonly local: string,
    readonly remote: string,
    readonly direction: BridgeDirection,
    private readonly handle: binding.BridgeHandle,
  ) {}

  /** Opens both hubs (waiting for a `nats://` side's server) and starts forwarding. */
  static async start(local: string, remote: string, options: BridgeOptions = {}): Promise<Bridge> {
    const direction = options.direction ?? 'out'
    if (!DIRECTIONS.includes(direction)) throw new BadOptionError(`direction must be 'out', 'in' or 'both', got ${String(direction)}`)
    for (const k of Object.keys(options)) {
      if (!['direction', 'local', 'remote', 'origin'].includes(k)) throw new BadOptionError(`${k} is not an option of Bridge.start`)
    }
    const starting = native(() => binding.startBridge(local, options.local, remote, options.remote, direction, options.origin))
    try {
      return new Bridge(local, remote, direction, await starting)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** What it forwarded and dropped so far (at close, for good). */
  metrics(): BridgeMetrics {
    return this.final ?? native(() => this.handle.metrics())
  }

  /** Stops forwarding; what was forwarded gets up to `lingerMs` (default 1000) to go. */
  close(options: { lingerMs?: number } = {}): Promise<void> {
    if (this.closing === undefined) {
      this.final = this.metrics() // (until the final counts come)
      clearInterval(this.alive)
    }
    return (this.closing ??= this.handle.close(options.lingerMs ?? 1000).then((m) => {
      this.final = m ?? this.final
    }))
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}
