// metricsText(): the Prometheus text format, read back with a Prometheus text parser.
import { createRequire } from 'node:module'
import test from 'ava'
import { Hub } from 'zerohop'
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
