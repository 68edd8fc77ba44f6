// metricsText(): the Prometheus text format, read back with a Prometheus text parser;
// the same numbers through prom-client and an OpenTelemetry MeterProvider.
import { createRequire } from 'node:module'
import { MeterProvider, MetricReader, type DataPoint, type Histogram } from '@opentelemetry/sdk-metrics'
import test from 'ava'
import { Registry } from 'prom-client'
import { Hub, Rpc } from 'zerohop'
import { uniqueName } from './helpers.ts'

type Family = { name: string; help: string; type: string; metrics: { value: string; labels?: Record<string, string> }[] }
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[]

test('hub.metricsText(): every number of metrics(), zerohop_ names, base units, _total counters, labelled by transport and endpoint', async (t) => {
  const name = `shm://${uniqueName('prom')}`
  await using pub = await Hub.open(name, { role: 'publisher' })
  await using sub = await Hub.open(name, { role: 'subscriber' })
  for (let i = 0; i < 5; i++) pub.publish(new Uint8Array(10))
  sub.tryRecvBatch(3)
  const families = new Map(parse(sub.metricsText()).map((f) => [f.name, f]))
  const one = (n: string) => {
    const f = families.get(n)
    t.truthy(f, `${n} is there`)
    t.like(f!.metrics[0]!.labels, { transport: 'shm', endpoint: name })
    t.regex(f!.metrics[0]!.labels!.hub!, /^\d+$/)
    return { type: f!.type, value: Number(f!.metrics[0]!.value) }
  }
  t.deepEqual(one('zerohop_received_total'), { type: 'COUNTER', value: 3 })
  t.deepEqual(one('zerohop_received_bytes_total'), { type: 'COUNTER', value: 30 })
  t.deepEqual(one('zerohop_lag'), { type: 'GAUGE', value: 2 })
  t.deepEqual(one('zerohop_slot_size_bytes'), { type: 'GAUGE', value: 1024 })
  for (const [n, f] of families) {
    t.regex(n, /^zerohop_[a-z0-9_]+$/)
    if (f.type === 'COUNTER') t.regex(n, /_total$/)
  }
  t.is(Number(parse(pub.metricsText()).find((f) => f.name === 'zerohop_published_total')!.metrics[0]!.value), 5)
})

test("a transport's own numbers, in base units; chaos by direction and fault; Hub.metricsText() has every open hub once", async (t) => {
  await using srv = await Hub.open('tcp://127.0.0.1:0?chaos=loss:0', { listen: true })
  await using cli = await Hub.open(`tcp://${srv.localAddress}`)
  for (let i = 0; i < 100 && srv.metrics().tcp!.peers === 0; i++) await new Promise((r) => setTimeout(r, 10))
  const families = new Map(parse(srv.metricsText()).map((f) => [f.name, f]))
  t.is(families.get('zerohop_tcp_peers')!.type, 'GAUGE')
  t.is(Number(families.get('zerohop_tcp_peers')!.metrics[0]!.value), 1)
  t.is(families.get('zerohop_tcp_sent_bytes_total')!.type, 'COUNTER')
  const faults = families.get('zerohop_chaos_faults_total')!
  t.deepEqual(new Set(faults.metrics.map((m) => m.labels!.direction)), new Set(['sent', 'received']))
  t.true(faults.metrics.some((m) => m.labels!.fault === 'dropped'))
  const all = parse(Hub.metricsText()).find((f) => f.name === 'zerohop_received_total')!
  const endpoints = all.metrics.map((m) => m.labels!.endpoint)
  t.true(endpoints.includes('tcp://127.0.0.1:0?chaos=loss:0') && endpoints.includes(`tcp://${srv.localAddress}`))
  const series = all.metrics.map((m) => JSON.stringify(m.labels))
  t.is(new Set(series).size, series.length, 'each hub once, a series of its own (two hubs of one URL too)')
  await cli.close({ lingerMs: 0 })
  t.false(parse(Hub.metricsText()).find((f) => f.name === 'zerohop_received_total')!.metrics.some((m) => m.labels!.endpoint === `tcp://${srv.localAddress}`), 'a closed hub is gone')
})

test('quic:// RTT in seconds (from µs)', async (t) => {
  await using srv = await Hub.open('quic://127.0.0.1:0', { listen: true })
  const f = parse(srv.metricsText()).find((x) => x.name === 'zerohop_quic_rtt_seconds')
  t.is(f?.type, 'GAUGE')
})

/** Every sample line of `name` in `text` whose labels include `endpoint`, as [labels, value]. */
function samples(text: string, name: string, endpoint: string): [string, number][] {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && l.includes(`endpoint="${endpoint}"`))
    .map((l) => [l.slice(name.length, l.lastIndexOf('}') + 1), Number(l.slice(l.lastIndexOf(' ') + 1))])
}

test('latency histograms in microsecond buckets: Rpc requests (client and server) and await send(), seconds, cumulative', async (t) => {
  Hub.metricsText() // (reading them starts the timing)
  const url = `shm://${uniqueName('prom-rpc')}`
  await using _srv = await Rpc.serve(url, async (x) => {
    await new Promise((r) => setTimeout(r, 2))
    return x
  })
  await using cli = await Rpc.connect(url)
  for (let i = 0; i < 20; i++) await cli.request(new Uint8Array(8))
  const name = `shm://${uniqueName('prom-send')}`
  await using tx = await Hub.open(name, { role: 'publisher' })
  await using rx = await Hub.open(name, { role: 'subscriber' })
  for (let i = 0; i < 7; i++) await tx.send(new Uint8Array(8))
  t.is(rx.tryRecvBatch(10).length, 7)
  const text = Hub.metricsText()
  const histogram = parse(text).find((f) => f.name === 'zerohop_rpc_request_duration_seconds') as unknown as { type: string; metrics: { buckets: Record<string, string> }[] }
  t.is(histogram.type, 'HISTOGRAM')
  for (const [metric, endpoint, count, atLeastS] of [
    ['zerohop_rpc_request_duration_seconds', url, 20, 0.002],
    ['zerohop_rpc_handle_duration_seconds', url, 20, 0.002],
    ['zerohop_send_duration_seconds', name, 7, 0],
  ] as const) {
    const buckets = samples(text, `${metric}_bucket`, endpoint)
    t.is(buckets.length, 23, `${metric}: 22 bounds from 1 µs to 10 s, and +Inf`)
    t.regex(buckets[0]![0], /le="0.000001"/)
    t.regex(buckets.at(-1)![0], /le="\+Inf"/)
    for (let i = 1; i < buckets.length; i++) t.true(buckets[i]![1] >= buckets[i - 1]![1], `${metric}: cumulative`)
    t.is(buckets.at(-1)![1], count, metric)
    t.is(samples(text, `${metric}_count`, endpoint)[0]![1], count)
    t.true(samples(text, `${metric}_sum`, endpoint)[0]![1] >= count * atLeastS, `${metric}: the sum in seconds`)
    // Requests that each took 2 ms or more are not in the buckets below 2 ms.
    if (atLeastS > 0) t.is(buckets.find(([labels]) => labels.includes('le="0.001"'))![1], 0, metric)
  }
})

test('prom-client: registerPromClient() puts every family in a Registry, read at each scrape; a hub opened later is in the next one; the function it returns takes them out', async (t) => {
  const registry = new Registry()
  const name = `shm://${uniqueName('promclient')}`
  await using pub = await Hub.open(name, { role: 'publisher' })
  await using sub = await Hub.open(name, { role: 'subscriber' })
  const unregister = Hub.registerPromClient(registry)
  for (let i = 0; i < 4; i++) pub.publish(new Uint8Array(16))
  sub.tryRecvBatch(10)
  const scraped = await registry.metrics()
  t.deepEqual(samples(scraped, 'zerohop_published_total', name).map(([, v]) => v).sort(), [0, 4])
  t.deepEqual(samples(scraped, 'zerohop_received_total', name).map(([, v]) => v).sort(), [0, 4])
  t.is(parse(scraped).find((f) => f.name === 'zerohop_lag')!.type, 'GAUGE')
  const json = await registry.getMetricsAsJSON()
  t.true(json.some((m) => m.name === 'zerohop_published_total' && String(m.type) === 'counter'))
  // A tcp:// hub brings families of its own: registered as it opens.
  await using tcp = await Hub.open('tcp://127.0.0.1:0', { listen: true })
  t.is(samples(await registry.metrics(), 'zerohop_tcp_peers', 'tcp://127.0.0.1:0').length, 1, tcp.url)
  t.throws(() => Hub.registerPromClient({} as never), { code: 'ERR_BAD_OPTION' })
  unregister()
  t.false((await registry.metrics()).includes('zerohop_'))
})

/** An OpenTelemetry reader that collects when asked. */
class Collector extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

test('OpenTelemetry: a MeterProvider reads the counters under the messaging semantic-convention names, and the durations as histograms', async (t) => {
  const reader = new Collector()
  const provider = new MeterProvider({ readers: [reader] })
  const stop = Hub.registerOpenTelemetry(provider.getMeter('zerohop'))
  const name = `shm://${uniqueName('otel')}`
  await using pub = await Hub.open(name, { role: 'publisher' })
  await using sub = await Hub.open(name, { role: 'subscriber' })
  for (let i = 0; i < 5; i++) await pub.send(new Uint8Array(8))
  t.is(sub.tryRecvBatch(3).length, 3)
  const url = `shm://${uniqueName('otel-rpc')}`
  await using _srv = await Rpc.serve(url, (x) => x)
  await using cli = await Rpc.connect(url)
  for (let i = 0; i < 6; i++) await cli.request(new Uint8Array(8))
  // (Twice: instruments of families first seen in a collection report from the next.)
  await reader.collect()
  const { resourceMetrics } = await reader.collect()
  const metrics = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
  const points = (metric: string, endpoint: string) =>
    (metrics.find((m) => m.descriptor.name === metric)?.dataPoints ?? []).filter((p: DataPoint<unknown>) => p.attributes['messaging.destination.name'] === endpoint)
  const values = (metric: string) => points(metric, name).map((p) => p.value as number).sort()
  t.deepEqual(values('messaging.client.sent.messages'), [0, 5])
  t.deepEqual(values('messaging.client.consumed.messages'), [0, 3])
  t.like(points('messaging.client.sent.messages', name)[0]!.attributes, { 'messaging.system': 'zerohop', 'zerohop.transport': 'shm' })
  t.is(metrics.find((m) => m.descriptor.name === 'messaging.client.sent.messages')!.descriptor.unit, '{message}')
  t.true(values('zerohop.lag').includes(2), 'the rest under zerohop.*: the subscriber is 2 behind')
  const sends = points('messaging.client.operation.duration', name) as DataPoint<Histogram>[]
  t.is(sends.reduce((n, p) => n + p.value.count, 0), 5)
  t.is(sends[0]!.attributes['messaging.operation.name'], 'send')
  t.regex(String(sends[0]!.attributes['zerohop.hub']), /^\d+$/, 'each hub a series of its own')
  for (const metric of ['rpc.client.call.duration', 'rpc.server.call.duration']) {
    const h = points(metric, url) as DataPoint<Histogram>[]
    t.is(h.reduce((n, p) => n + p.value.count, 0), 6, metric)
    t.is(metrics.find((m) => m.descriptor.name === metric)!.descriptor.unit, 's')
  }
  stop()
  await provider.shutdown()
  t.throws(() => Hub.registerOpenTelemetry({} as never), { code: 'ERR_BAD_OPTION' })
})
