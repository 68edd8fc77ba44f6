/**
 * `Hub.registerOpenTelemetry(meter)`: the numbers of `metricsText()` as OpenTelemetry
 * instruments, under the semantic conventions' names where they have one:
 *
 * - `messaging.client.sent.messages`, `messaging.client.consumed.messages`: counters of
 *   what hubs published and received;
 * - `messaging.client.operation.duration` (an awaited `send()`), `rpc.client.call.duration`
 *   and `rpc.server.call.duration` (Rpc requests): histograms, seconds, in the buckets
 *   of `latency.ts`;
 * - every other number as `zerohop.<name>` (`zerohop.dropped`, `zerohop.lag`, a
 *   transport's own as `zerohop.<transport>.<name>`): counters and gauges.
 *
 * Attributes: `messaging.system` = `zerohop`, `messaging.destination.name` = the hub's
 * URL, `zerohop.transport`, `zerohop.hub` (its number in the process).
 */
import { LATENCIES, LATENCY_BUCKETS_US, type LatencyName, timing } from './latency.js'
import { hubNumber, type Measured, watchFamilies } from './prometheus.js'

type Attributes = Record<string, string>

/** An observable instrument, as `@opentelemetry/api` has them (not a dependency of zerohop). */
interface Observable {
  addCallback(callback: (result: { observe(value: number, attributes?: Attributes): void }) => void): void
  removeCallback(callback: (result: { observe(value: number, attributes?: Attributes): void }) => void): void
}

/** What an OpenTelemetry `Meter` is to this module. */
export interface OtelMeter {
  createObservableCounter(name: string, options?: { description?: string; unit?: string }): Observable
  createObservableGauge(name: string, options?: { description?: string; unit?: string }): Observable
  createHistogram(
    name: string,
    options?: { description?: string; unit?: string; advice?: { explicitBucketBoundaries?: number[] } },
  ): { record(value: number, attributes?: Attributes): void }
}

/** A Prometheus label set as OpenTelemetry attributes. */
function attributesOf(labels: Record<string, string>): Attributes {
  const out: Attributes = { 'messaging.system': 'zerohop' }
  for (const [k, v] of Object.entries(labels)) out[k === 'endpoint' ? 'messaging.destination.name' : `zerohop.${k}`] = v
  return out
}

/** The unit of a family, from its Prometheus name. */
function unitOf(name: string, otel: string): string | undefined {
  if (otel.startsWith('messaging.')) return '{message}'
  if (/_bytes(_total)?$/.test(name)) return 'By'
  if (/_seconds(_total)?$/.test(name)) return 's'
  return undefined
}

export function registerOpenTelemetry(meter: OtelMeter, read: () => Iterable<Measured>): () => void {
  const made: Array<[Observable, Parameters<Observable['addCallback']>[0]]> = []
  const names = new Set<string>()
  const watch = watchFamilies(read, (name, f) => {
    if (f.type === 'histogram' || names.has(f.otel)) return
    names.add(f.otel)
    const options = { description: f.help, unit: unitOf(name, f.otel) }
    const instrument = f.type === 'counter' ? meter.createObservableCounter(f.otel, options) : meter.createObservableGauge(f.otel, options)
    const callback: Parameters<Observable['addCallback']>[0] = (result) => {
      for (const s of watch.current().get(name)?.samples ?? []) result.observe(s.value, attributesOf(s.labels))
    }
    instrument.addCallback(callback)
    made.push([instrument, callback])
  })
  const histograms = new Map<LatencyName, ReturnType<OtelMeter['createHistogram']>>()
  for (const [which, l] of Object.entries(LATENCIES) as [LatencyName, (typeof LATENCIES)[LatencyName]][]) {
    histograms.set(which, meter.createHistogram(l.otel, { description: l.help, unit: 's', advice: { explicitBucketBoundaries: LATENCY_BUCKETS_US.map((us) => us / 1e6) } }))
  }
  const listener = (which: LatencyName, us: number, hub: object): void => {
    const { url, transport } = hub as Measured
    const about = attributesOf({ endpoint: url, transport, hub: String(hubNumber(hub as Measured)) })
    histograms.get(which)!.record(us / 1e6, { ...about, ...LATENCIES[which].attributes })
  }
  timing.listeners.add(listener)
  return () => {
    timing.listeners.delete(listener)
    watch.stop()
    for (const [instrument, callback] of made) instrument.removeCallback(callback)
  }
}
