/**
 * `metricsText()`: hubs' metrics in the Prometheus text format (version 0.0.4): the
 * `zerohop_` prefix, base units (seconds, bytes), `_total` on counters, and the labels
 * `transport`, `endpoint` (the URL the hub was opened with) and `hub` (its number in the
 * process, in the order hubs were opened: two hubs of one URL are two series). Every number of
 * `metrics()` is there: what every hub counts as `zerohop_<name>`, a transport's own
 * as `zerohop_<transport>_<name>`, the faults of `chaos` as `zerohop_chaos_faults_total`
 * by `direction` and `fault` (and what it looked at as `zerohop_chaos_seen_total`); and
 * latency histograms in microsecond buckets (`latency.ts`): `zerohop_send_duration_seconds`,
 * `zerohop_rpc_request_duration_seconds`, `zerohop_rpc_handle_duration_seconds`.
 * The same families go to prom-client (`registerPromClient`) and OpenTelemetry (`otel.ts`).
 */
import { LATENCIES, LATENCY_BUCKETS_US, type LatencyHistogram, type LatencyName, startTiming } from './latency.js'

/** What a hub gives this module (a part of `Hub`, to keep this module off its type). */
export interface Measured {
  readonly url: string
  readonly transport: string
  metrics(): object
  readonly latencies?: { entries(): Iterable<[LatencyName, LatencyHistogram]> }
}

/** Each hub's number, in the order they were first measured or opened. */
const numbered = new WeakMap<Measured, number>()
let hubs = 0

/** The number of `hub` in this process (given at its first call: `Hub` calls it as it opens). */
export function hubNumber(hub: Measured): number {
  let n = numbered.get(hub)
  if (n === undefined) numbered.set(hub, (n = ++hubs))
  return n
}

/** Numbers that go up and down (the rest of `metrics()`'s numbers only go up: counters). */
const GAUGES = new Set([
  'lag',
  'capacity',
  'slotSize',
  'bytesAvailable',
  'credits',
  'peers',
  'unackedBytes',
  'kcpUnackedBytes',
  'kernelUnsentBytes',
  'requestsPending',
  'answersPending',
  'recvBuffer',
  'sendBuffer',
  'busyPollUs',
  'receiveSockets',
  'inFlight',
  'sessions',
  'rttMs',
  'rtoMs',
  'rttUs',
  'window',
  'cwnd',
  'mtu',
])

/** Fields whose name does not say their unit. */
const UNITS: Record<string, string> = { slotSize: 'slotSizeBytes', recvBuffer: 'recvBufferBytes', sendBuffer: 'sendBufferBytes', cwnd: 'cwndBytes', mtu: 'mtuBytes' }

/** A series: its name (a histogram's `_bucket`, `_sum` and `_count` are three), labels and value. */
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** A metric family, as Prometheus's text format has them. */
export interface Family {
  type: 'counter' | 'gauge' | 'histogram'
  help: string
  /** Its OpenTelemetry name (see `otel.ts`). */
  otel: string
  samples: Sample[]
}

/** `camelCase` as `snake_case`. */
const snake = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

/** A field's metric name (base unit last, before `_total`) and the factor to its base unit. */
function named(field: string): { name: string; factor: number } {
  let f = UNITS[field] ?? field
  let factor = 1
  if (f.endsWith('Us')) [f, factor] = [`${f.slice(0, -2)}Seconds`, 1e-6]
  else if (f.endsWith('Ms')) [f, factor] = [`${f.slice(0, -2)}Seconds`, 1e-3]
  // `bytesSent` → `sent_bytes`: the unit last.
  if (f.startsWith('bytes') && f.length > 5) f = `${f[5]!.toLowerCase()}${f.slice(6)}Bytes`
  return { name: snake(f), factor }
}

/** Counters that OpenTelemetry's messaging conventions name. */
const OTEL_NAMES: Record<string, string> = {
  zerohop_published_total: 'messaging.client.sent.messages',
  zerohop_received_total: 'messaging.client.consumed.messages',
}

function add(families: Map<string, Family>, name: string, type: Family['type'], help: string, otel: string, sample: Sample): void {
  let f = families.get(name)
  if (f === undefined) families.set(name, (f = { type, help, otel, samples: [] }))
  f.samples.push(sample)
}

/** The numbers of `values` (a part of `metrics()` at `path`), as metrics `prefix…`. */
function numbers(families: Map<string, Family>, values: object, prefix: string, path: string, labels: Record<string, string>): void {
  for (const [field, value] of Object.entries(values)) {
    if (typeof value !== 'number') continue
    const { name, factor } = named(field)
    const gauge = GAUGES.has(field)
    const full = `${prefix}${name}${gauge ? '' : '_total'}`
    const otel = OTEL_NAMES[full] ?? `${prefix.replace(/_/g, '.')}${name}`
    add(families, full, gauge ? 'gauge' : 'counter', `metrics()${path}.${field}`, otel, { name: full, labels, value: Number.isFinite(value) ? value * factor : 0 })
  }
}

/** The latency histograms of a hub: cumulative buckets in seconds, `_sum` and `_count`. */
function histograms(families: Map<string, Family>, hub: Measured, labels: Record<string, string>): void {
  for (const [which, h] of hub.latencies?.entries() ?? []) {
    const { metric, help, otel } = LATENCIES[which]
    let cumulative = 0
    const samples: Sample[] = LATENCY_BUCKETS_US.map((us, i) => {
      cumulative += h.counts[i]!
      return { name: `${metric}_bucket`, labels: { ...labels, le: String(us / 1e6) }, value: cumulative }
    })
    samples.push({ name: `${metric}_bucket`, labels: { ...labels, le: '+Inf' }, value: h.count })
    samples.push({ name: `${metric}_sum`, labels, value: h.sumUs / 1e6 }, { name: `${metric}_count`, labels, value: h.count })
    for (const sample of samples) add(families, metric, 'histogram', help, otel, sample)
  }
}

/** The metrics of `hubs`, by family. */
export function families(measured: Iterable<Measured>): Map<string, Family> {
  startTiming()
  const families = new Map<string, Family>()
  for (const hub of measured) {
    const m = hub.metrics() as Record<string, unknown>
    const labels = { transport: hub.transport, endpoint: hub.url, hub: String(hubNumber(hub)) }
    numbers(families, m, 'zerohop_', '', labels)
    const own = m[hub.transport]
    if (typeof own === 'object' && own !== null) numbers(families, own, `zerohop_${hub.transport}_`, `.${hub.transport}`, labels)
    const chaos = m.chaos as Record<string, unknown> | undefined
    for (const direction of ['sent', 'received'] as const) {
      const faults = chaos?.[direction] as Record<string, number> | undefined
      for (const [fault, count] of Object.entries(faults ?? {})) {
        const by = { ...labels, direction }
        if (fault === 'seen') add(families, 'zerohop_chaos_seen_total', 'counter', 'metrics().chaos.<direction>.seen: what fault injection looked at', 'zerohop.chaos.seen', { name: 'zerohop_chaos_seen_total', labels: by, value: count })
        else add(families, 'zerohop_chaos_faults_total', 'counter', 'metrics().chaos.<direction>.<fault>: what fault injection did', 'zerohop.chaos.faults', { name: 'zerohop_chaos_faults_total', labels: { ...by, fault }, value: count })
      }
    }
    histograms(families, hub, labels)
  }
  return families
}

/** A label value, escaped. */
const quoted = (v: string): string => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`

/** The metrics of `hubs` in the Prometheus text format. */
export function metricsText(measured: Iterable<Measured>): string {
  let text = ''
  for (const [name, f] of families(measured)) {
    const lines = f.samples.map((s) => `${s.name}{${Object.entries(s.labels).map(([k, v]) => `${k}=${quoted(v)}`).join(',')}} ${s.value}`)
    text += `# HELP ${name} ${f.help}\n# TYPE ${name} ${f.type}\n${lines.join('\n')}\n`
  }
  return text
}

/** What prom-client's `Registry` is to this module (prom-client itself is not a dependency). */
export interface PromRegistry {
  registerMetric(metric: object): void
  getSingleMetric(name: string): unknown
  removeSingleMetric(name: string): void
}

/**
 * Registers the families of `read()`'s hubs in prom-client's `registry`, each a metric
 * whose `get()` reads the hubs as prom-client scrapes (all of one scrape from one
 * reading). A family first seen after this call (a transport opened later) is
 * registered as a hub opens and at every scrape, so it is in the next one. Returns a
 * function that takes them out again.
 */
export function registerPromClient(registry: PromRegistry, read: () => Iterable<Measured>): () => void {
  const registered: string[] = []
  const watch = watchFamilies(read, (name, { type, help }) => {
    if (registry.getSingleMetric(name) !== undefined) return // (someone else's of that name)
    registered.push(name)
    registry.registerMetric({
      name,
      help,
      type,
      aggregator: 'sum',
      reset() {},
      async get() {
        const values = (watch.current().get(name)?.samples ?? []).map((s) => ({ metricName: s.name, labels: s.labels, value: s.value }))
        return { name, help, type, aggregator: 'sum', values }
      },
    })
  })
  return () => {
    watch.stop()
    for (const name of registered) registry.removeSingleMetric(name)
  }
}

/**
 * Tells `onNew` of each family of `read()`'s hubs once: those there now, those a hub
 * brings as it opens, and any first seen in a reading. `current()` reads the hubs once
 * for everything that asks before the current task ends (a scrape asks family by
 * family, all at once); `stop()` ends the watch.
 */
export function watchFamilies(read: () => Iterable<Measured>, onNew: (name: string, family: Family) => void): { current(): Map<string, Family>; stop(): void } {
  const seen = new Set<string>()
  const look = (reading: Map<string, Family>): void => {
    for (const [name, f] of reading) {
      if (seen.has(name)) continue
      seen.add(name)
      onNew(name, f)
    }
  }
  let reading: Map<string, Family> | undefined
  const current = (): Map<string, Family> => {
    if (reading === undefined) {
      reading = families(read())
      queueMicrotask(() => (reading = undefined))
      look(reading)
    }
    return reading
  }
  const opening = (hub: Measured): void => look(families([hub]))
  look(families(read()))
  watchers.add(opening)
  return { current, stop: () => void watchers.delete(opening) }
}

/** What learns of each hub as it opens (prom-client's and OpenTelemetry's registrations). */
const watchers = new Set<(hub: Measured) => void>()

/** `hub` opened: registrations look for families they do not have yet. */
export function opened(hub: Measured): void {
  for (const w of watchers) w(hub)
}
