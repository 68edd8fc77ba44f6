/**
 * `metricsText()`: hubs' metrics in the Prometheus text format (version 0.0.4): the
 * `zerohop_` prefix, base units (seconds, bytes), `_total` on counters, and the labels
 * `transport`, `endpoint` (the URL the hub was opened with) and `hub` (its number in the
 * process, in the order hubs were opened: two hubs of one URL are two series). Every number of
 * `metrics()` is there: what every hub counts as `zerohop_<name>`, a transport's own
 * as `zerohop_<transport>_<name>`, the faults of `chaos` as `zerohop_chaos_faults_total`
 * by `direction` and `fault` (and what it looked at as `zerohop_chaos_seen_total`).
 */

/** What a hub gives this module (a part of `Hub`, to keep this module off its type). */
export interface Measured {
  readonly url: string
  readonly transport: string
  metrics(): object
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

interface Family {
  type: 'counter' | 'gauge'
  help: string
  samples: string[]
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

/** A label value, escaped. */
const quoted = (v: string): string => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`

function add(families: Map<string, Family>, name: string, type: Family['type'], help: string, labels: string, value: number): void {
  let f = families.get(name)
  if (f === undefined) families.set(name, (f = { type, help, samples: [] }))
  f.samples.push(`${name}{${labels}} ${Number.isFinite(value) ? value : 0}`)
}

/** The numbers of `values` (a part of `metrics()` at `path`), as metrics `prefix…`. */
function numbers(families: Map<string, Family>, values: object, prefix: string, path: string, labels: string): void {
  for (const [field, value] of Object.entries(values)) {
    if (typeof value !== 'number') continue
    const { name, factor } = named(field)
    const gauge = GAUGES.has(field)
    add(families, `${prefix}${name}${gauge ? '' : '_total'}`, gauge ? 'gauge' : 'counter', `metrics()${path}.${field}`, labels, value * factor)
  }
}

/** The metrics of `hubs` in the Prometheus text format. */
export function metricsText(measured: Iterable<Measured>): string {
  const families = new Map<string, Family>()
  for (const hub of measured) {
    const m = hub.metrics() as Record<string, unknown>
    const labels = `transport=${quoted(hub.transport)},endpoint=${quoted(hub.url)},hub=${quoted(String(hubNumber(hub)))}`
    numbers(families, m, 'zerohop_', '', labels)
    const own = m[hub.transport]
    if (typeof own === 'object' && own !== null) numbers(families, own, `zerohop_${hub.transport}_`, `.${hub.transport}`, labels)
    const chaos = m.chaos as Record<string, unknown> | undefined
    for (const direction of ['sent', 'received'] as const) {
      const faults = chaos?.[direction] as Record<string, number> | undefined
      for (const [fault, count] of Object.entries(faults ?? {})) {
        const by = `${labels},direction=${quoted(direction)}`
        if (fault === 'seen') add(families, 'zerohop_chaos_seen_total', 'counter', 'metrics().chaos.<direction>.seen: what fault injection looked at', by, count)
        else add(families, 'zerohop_chaos_faults_total', 'counter', 'metrics().chaos.<direction>.<fault>: what fault injection did', `${by},fault=${quoted(fault)}`, count)
      }
    }
  }
  let text = ''
  for (const [name, f] of families) text += `# HELP ${name} ${f.help}\n# TYPE ${name} ${f.type}\n${f.samples.join('\n')}\n`
  return text
}
