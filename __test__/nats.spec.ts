// nats:// through a real nats-server (Debian's, started by the tests on a free loopback
// port), and plain NATS clients (nats.js) on the same server: subjects and wildcards,
// queue groups, interoperation both ways, Rpc answering and asking plain NATS peers, a
// server restart, a slow consumer, credentials, and a publisher in another process.
// What every transport does is in conformance.spec.ts.
import test from 'ava'
import { Hub, Rpc, type StatusEvent } from 'zerohop'
import { child } from './helpers.ts'
import { type NatsServer, natsServer } from './nats-server.ts'

// nats.js, by a name tsc does not resolve (its declarations need the DOM's types).
interface NatsMsg {
  data: Uint8Array
  headers?: { get(name: string): string }
  respond(data: Uint8Array, options?: { headers?: NatsHeaders }): boolean
}
interface NatsHeaders {
  set(name: string, value: string): void
}
interface NatsConnection {
  publish(subject: string, data: Uint8Array, options?: { headers?: NatsHeaders }): void
  subscribe(subject: string, options: { callback(err: unknown, msg: NatsMsg): void }): { unsubscribe(): void }
  request(subject: string, data: Uint8Array, options: { timeout: number }): Promise<NatsMsg>
  flush(): Promise<void>
  close(): Promise<void>
}
const NATS_JS = 'nats'
const { connect, headers: natsHeaders } = (await import(NATS_JS)) as {
  connect(options: object): Promise<NatsConnection>
  headers(): NatsHeaders
}

let server: NatsServer
test.before(async () => {
  server = await natsServer()
})
test.after.always(async () => {
  await server.stop()
})

/** A nats.js connection to `s`, closed after the test. */
async function natsjs(t: { teardown(f: () => Promise<void>): void }, s: NatsServer = server, options: object = {}): Promise<NatsConnection> {
  const nc = await connect({ servers: s.servers, ...options })
  t.teardown(async () => void (await nc.close()))
  return nc
}

const te = new TextEncoder()
const td = new TextDecoder()

test('a hub subscribes by pattern, gets each message with its subject, and never its own', async (t) => {
  await using all = await Hub.open<unknown>(server.url('prices.>'), { codec: 'json' })
  await using spot = await Hub.open<unknown>(server.url('prices.*.spot'), { codec: 'json' })
  await using eur = await Hub.open<unknown>(server.url('prices.eur.spot'), { codec: 'json' })
  await using usd = await Hub.open<unknown>(server.url('prices.usd'), { codec: 'json' })
  t.is(eur.status, 'connected', 'open resolves once the server confirmed the subscription')
  eur.publish({ bid: 1.08 })
  usd.publish({ bid: 1 })
  const got = [await all.recvMessage({ timeoutMs: 5000 }), await all.recvMessage({ timeoutMs: 5000 })]
  t.deepEqual(got.map((m) => [m.subject, m.value]).sort(), [['prices.eur.spot', { bid: 1.08 }], ['prices.usd', { bid: 1 }]])
  const m = await spot.recvMessage({ timeoutMs: 5000 })
  t.deepEqual([m.subject, m.value], ['prices.eur.spot', { bid: 1.08 }])
  t.is(eur.tryRecv(), undefined, 'no echo')
  t.throws(() => all.publish({ bid: 0 }), { code: 'ERR_BAD_OPTION', message: /wildcards/ })
  t.is(all.metrics().nats!.subjects, 2)
})

test('plain NATS clients read what a hub publishes, bare, and a hub decodes what they publish', async (t) => {
  const nc = await natsjs(t)
  const seen: string[] = []
  const sub = nc.subscribe('orders.new', { callback: (_e, msg) => seen.push(td.decode(msg.data)) })
  await nc.flush()
  await using hub = await Hub.open<unknown>(server.url('orders.new'), { codec: 'json' })
  hub.publish({ id: 7, qty: 2 })
  await hub.close({ lingerMs: 1000 })
  for (let i = 0; i < 500 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 5))
  t.deepEqual(seen, ['{"id":7,"qty":2}'], 'exactly the codec bytes')
  sub.unsubscribe()

  await using reader = await Hub.open<unknown>(server.url('orders.*'), { codec: 'json' })
  nc.publish('orders.paid', te.encode('{"id":7}'))
  const h = natsHeaders()
  h.set('X-Trace', 'abc')
  nc.publish('orders.shipped', te.encode('{"id":8}'), { headers: h })
  const a = await reader.recvMessage({ timeoutMs: 5000 })
  const b = await reader.recvMessage({ timeoutMs: 5000 })
  t.deepEqual([a.subject, a.value, b.subject, b.value], ['orders.paid', { id: 7 }, 'orders.shipped', { id: 8 }])
})

test('?group= shares a subject among a queue group; a hub outside it gets each message', async (t) => {
  const open = (url: `nats://${string}`) => Hub.open<number>(url, { codec: 'json' })
  await using w1 = await open(`${server.url('jobs')}?group=workers`)
  await using w2 = await open(`${server.url('jobs')}?group=workers`)
  await using audit = await open(server.url('jobs'))
  await using boss = await Hub.open<number>(server.url('jobs'), { codec: 'json', subscribe: false })
  for (let i = 0; i < 200; i++) boss.publish(i)
  const each: number[] = []
  for (let i = 0; i < 200; i++) each.push((await audit.recv({ timeoutMs: 5000 }))!)
  t.deepEqual(each, [...Array(200).keys()], 'in order, each')
  const shared: number[][] = [[], []]
  for (let i = 0; i < 500 && shared[0]!.length + shared[1]!.length < 200; i++) {
    for (const [k, w] of [w1, w2].entries()) for (let v = w.tryRecv(); v !== undefined; v = w.tryRecv()) shared[k]!.push(v)
    await new Promise((r) => setTimeout(r, 2))
  }
  t.deepEqual([...shared[0]!, ...shared[1]!].sort((x, y) => x - y), [...Array(200).keys()], 'each to one member')
  t.true(shared[0]!.length > 0 && shared[1]!.length > 0, `both members got some: ${shared[0]!.length}/${shared[1]!.length}`)
})

test('Rpc.serve answers a plain nats.js request, bare; a failure carries the NATS service error header', async (t) => {
  await using srv = await Rpc.serve<{ a: number; b: number }, number>(
    server.url('calc.add'),
    ({ a, b }) => {
      if (b === 0) throw new Error('b is zero')
      return a + b
    },
    { codec: 'json' },
  )
  const nc = await natsjs(t)
  const r = await nc.request('calc.add', te.encode('{"a":2,"b":3}'), { timeout: 5000 })
  t.is(td.decode(r.data), '5')
  const failed = await nc.request('calc.add', te.encode('{"a":2,"b":0}'), { timeout: 5000 })
  t.is(failed.headers?.get('Nats-Service-Error'), 'b is zero')
  t.is(srv.metrics().inFlight, 0)
})

test('Rpc.connect asks plain NATS responders; no responders and a timeout end the request', async (t) => {
  const nc = await natsjs(t)
  const sub = nc.subscribe('time.now', {
    callback: (_e, msg) => {
      const q = JSON.parse(td.decode(msg.data)) as { tz: string }
      if (q.tz === 'bad') {
        const h = natsHeaders()
        h.set('Nats-Service-Error', 'unknown zone')
        msg.respond(new Uint8Array(), { headers: h })
      } else if (q.tz !== 'silent') msg.respond(te.encode(JSON.stringify({ tz: q.tz, at: 1 })))
    },
  })
  await nc.flush()
  await using rpc = await Rpc.connect<{ tz: string }, { tz: string; at: number }>(server.url('time.now'), { codec: 'json' })
  t.deepEqual(await Promise.all([rpc.request({ tz: 'UTC' }), rpc.request({ tz: 'CET' })]), [
    { tz: 'UTC', at: 1 },
    { tz: 'CET', at: 1 },
  ])
  await t.throwsAsync(rpc.request({ tz: 'bad' }), { code: 'ERR_REMOTE', message: 'unknown zone' })
  await t.throwsAsync(rpc.request({ tz: 'silent' }, { timeoutMs: 100 }), { code: 'ERR_TIMEOUT' })
  sub.unsubscribe()
  await nc.flush()
  // Nobody serves the subject: the request could not complete (worth trying again later).
  const e = await t.throwsAsync(rpc.request({ tz: 'UTC' }), { code: 'ERR_CONNECTION_LOST', message: /no responders/ })
  t.true((e as { retryable?: boolean }).retryable)
})

test('zerohop Rpc on both sides: several servers share the requests (a queue group), each answered once', async (t) => {
  const calls = [0, 0]
  await using _s1 = await Rpc.serve<number, number>(server.url('sq'), (x) => (calls[0]!++, x * x), { codec: 'json' })
  await using _s2 = await Rpc.serve<number, number>(server.url('sq'), (x) => (calls[1]!++, x * x), { codec: 'json' })
  await using rpc = await Rpc.connect<number, number>(server.url('sq'), { codec: 'json' })
  const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => rpc.request(i)))
  t.deepEqual(answers, Array.from({ length: 100 }, (_, i) => i * i))
  t.is(calls[0]! + calls[1]!, 100, 'each once')
  t.true(calls[0]! > 0 && calls[1]! > 0, `both served: ${calls}`)
  t.is(rpc.metrics().pending, 0)
})

test.serial('a server restart: status events, the subscription restored, what was published meanwhile sent after', async (t) => {
  const own = await natsServer()
  t.teardown(() => own.stop())
  const reconnect = { initialMs: 20, maxMs: 200 }
  await using sub = await Hub.open<string>(own.url('events'), { codec: 'json', reconnect })
  await using pub = await Hub.open<string>(own.url('events'), { codec: 'json', reconnect })
  const events: StatusEvent[] = []
  sub.onStatus((e) => events.push(e))
  await own.stop()
  for (let i = 0; i < 500 && sub.status === 'connected'; i++) await new Promise((r) => setTimeout(r, 5))
  t.is(sub.status, 'reconnecting')
  pub.publish('while down')
  await own.start()
  for (let i = 0; i < 1000 && (sub.status !== 'connected' || pub.status !== 'connected'); i++) await new Promise((r) => setTimeout(r, 5))
  t.is(sub.status, 'connected')
  // (From the loss on: the listener may first be told how the hub connected.)
  const lost = events.findIndex((e) => e.status === 'reconnecting')
  t.deepEqual(
    events
      .slice(lost)
      .map((e) => e.status)
      .filter((s, i, all) => s !== all[i - 1]),
    ['reconnecting', 'connected'],
  )
  t.regex(events[lost]!.error!.message, /closed|reset|refused/)
  t.is(events[lost]!.peer, `127.0.0.1:${own.port}`)
  // What `pub` published while down went after its subscriptions, which may be before
  // `sub`'s came back: at most once. What is published now arrives.
  pub.publish('after')
  let v = await sub.recv({ timeoutMs: 5000 })
  if (v === 'while down') v = await sub.recv({ timeoutMs: 5000 })
  t.is(v, 'after')
  t.true(sub.metrics().nats!.reconnects >= 1)
})

test.serial('a reader a whole ring behind loses what comes meanwhile: counted, told once as ERR_SLOW_CONSUMER', async (t) => {
  await using slow = await Hub.open(server.url('flood'), { capacity: 16 })
  await using fast = await Hub.open(server.url('flood'))
  const told: StatusEvent[] = []
  slow.onStatus((e) => e.error && told.push(e))
  for (let i = 0; i < 1000; i++) fast.publish(new Uint8Array(8))
  for (let i = 0; i < 1000 && slow.metrics().nats!.slowConsumerDrops < 1000 - 16; i++) await new Promise((r) => setTimeout(r, 5))
  let kept = 0
  while (slow.tryRecv() !== undefined) kept++
  t.is(kept + slow.metrics().nats!.slowConsumerDrops, 1000, 'each kept or counted')
  t.deepEqual(
    told.map((e) => [e.status, e.error!.code]),
    [['connected', 'ERR_SLOW_CONSUMER']],
  )
})

test.serial('credentials: the right ones connect, the wrong ones fail to open, saying so', async (t) => {
  const guarded = await natsServer(['--user', 'ops', '--pass', 's3cret'])
  t.teardown(() => guarded.stop())
  await using ok = await Hub.open(guarded.url('x'), { user: 'ops', pass: 's3cret' })
  t.is(ok.status, 'connected')
  await t.throwsAsync(Hub.open(guarded.url('x'), { user: 'ops', pass: 'wrong' }), { message: /Authorization/i })
  await t.throwsAsync(Hub.open(guarded.url('x'), { user: 'ops' }), { code: 'ERR_BAD_OPTION' })
  await t.throwsAsync(Hub.open(`${guarded.url('x')}?bogus=1` as `nats://${string}`), { code: 'ERR_BAD_URL' })
})

test.serial('a publisher in another process reaches a hub and a plain NATS subscriber', async (t) => {
  const nc = await natsjs(t)
  const seen: string[] = []
  nc.subscribe('feed', { callback: (_e, m) => seen.push(td.decode(m.data)) })
  await nc.flush()
  await using hub = await Hub.open(server.url('feed'))
  const pub = child('url-publisher.mjs', [server.url('feed'), '50'])
  const got: string[] = []
  for (let i = 0; i < 50; i++) got.push(td.decode((await hub.recv({ timeoutMs: 10_000 })) as Uint8Array))
  t.is(await pub.exited, 0, pub.stderr())
  for (let i = 0; i < 500 && seen.length < 50; i++) await new Promise((r) => setTimeout(r, 5))
  t.deepEqual(seen, got)
  t.deepEqual(got, Array.from({ length: 50 }, (_, i) => `m${i}`), 'in order')
})
