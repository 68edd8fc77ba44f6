/**
 * Latency histograms of what a hub waits for, in microsecond buckets: how long an
 * awaited `send()` took, an Rpc request from sent to answered (the client's), and a
 * request from received to answered (the server's handler). `metricsText()`, prom-client
 * and OpenTelemetry read them.
 *
 * Nothing reads a clock for them until something reads them: the first
 * `metricsText()`, `Hub.registerPromClient()` or `Hub.registerOpenTelemetry()` turns
 * timing on for the process (a request costs two clock reads from then on; a `publish`
 * never does).
 */

/** The buckets' upper bounds, µs (1 µs … 10 s, at 1-2-5 steps). */
export const LATENCY_BUCKETS_US: readonly number[] = [
  1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
]

/** What is timed, and the names it is exported under. */
export const LATENCIES = {
  send: {
    metric: 'zerohop_send_duration_seconds',
    help: 'await send(): from the call until the message was accepted (waiting for room included)',
    otel: 'messaging.client.operation.duration',
    attributes: { 'messaging.operation.name': 'send', 'messaging.operation.type': 'send' },
  },
  request: {
    metric: 'zerohop_rpc_request_duration_seconds',
    help: 'Rpc requests (the client): from sent to answered',
    otel: 'rpc.client.call.duration',
    attributes: {},
  },
  handle: {
    metric: 'zerohop_rpc_handle_duration_seconds',
    help: 'Rpc requests (the server): from received to answered, the handler included',
    otel: 'rpc.server.call.duration',
    attributes: {},
  },
} as const
export type LatencyName = keyof typeof LATENCIES

/** Counts of durations in {@link LATENCY_BUCKETS_US} (the last count: above every bound). */
export class LatencyHistogram {
  readonly counts = new Float64Array(LATENCY_BUCKETS_US.length + 1)
  count = 0
  sumUs = 0

  observe(us: number): void {
    let i = 0
    while (i < LATENCY_BUCKETS_US.length && us > LATENCY_BUCKETS_US[i]!) i++
    this.counts[i]!++
    this.count++
    this.sumUs += us
  }
}

/** Whether durations are timed (see the module's docs), and who else hears of each. */
export const timing = {
  on: false,
  /** OpenTelemetry's histograms: told each duration as it is observed. */
  listeners: new Set<(name: LatencyName, us: number, hub: object) => void>(),
}

/** Turns timing on for the process (something reads the histograms now). */
export function startTiming(): void {
  timing.on = true
}

/** What a hub keeps its histograms in. */
export class Latencies {
  private readonly by = new Map<LatencyName, LatencyHistogram>()

  /** `hub`: whose they are (what listeners are told). */
  constructor(private readonly hub: object) {}

  /** Counts one duration of `us` µs under `name`. */
  observe(name: LatencyName, us: number): void {
    let h = this.by.get(name)
    if (h === undefined) this.by.set(name, (h = new LatencyHistogram()))
    h.observe(us)
    for (const l of timing.listeners) l(name, us, this.hub)
  }

  /** Counts under `name` the time since `start` (`performance.now()`). */
  since(name: LatencyName, start: number): void {
    this.observe(name, (performance.now() - start) * 1000)
  }

  entries(): IterableIterator<[LatencyName, LatencyHistogram]> {
    return this.by.entries()
  }
}
