// nats:// through a real nats-server (Debian's, started by the tests on a free loopback
// port), and plain NATS clients (nats.js) on the same server: subjects and wildcards,
// queue groups, interoperation both ways, Rpc answering and asking plain NATS peers, a
// server restart, failing over within a cluster, a slow consumer, credentials (user and
// password, nkeys, credentials files), a publisher in another process, and
// bridges: between two hosts (network namespaces) through two clustered servers, loops
// cut by their origin, and the CLI's.
// What every transport does is in conformance.spec.ts.
import test from 'ava'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Bridge, Hub, Rpc, type StatusEvent } from 'zerohop'
import { child, pki, statusWhere, twoHosts, uniqueName } from './helpers.ts'
import { type NatsServer, freePort, natsServer } from './nats-server.ts'

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

const CLI = join(import.meta.dirname, '..', 'packages', 'zerohop', 'dist', 'cli.js')
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
  // No dispatcher of this host's: NATS shares the requests. (A dispatcher's registry is the
  // abstract socket `@zerohop-rpc-<key>`, the key a hash of the transport and port.)
  const key = createHash('sha256').update(`nats:${server.port}`).digest('hex').slice(0, 24)
  t.false(readFileSync('/proc/net/unix', 'utf8').includes(`@zerohop-rpc-${key}`))
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

test.serial("a hub fails over to another server of its server's cluster (told of in INFO) when its own goes", async (t) => {
  const [routeA, routeB] = [await freePort(), await freePort()]
  const a = await natsServer(['--cluster_name', 'fo', '--cluster', `nats://127.0.0.1:${routeA}`])
  t.teardown(() => a.stop())
  const b = await natsServer(['--cluster_name', 'fo', '--cluster', `nats://127.0.0.1:${routeB}`, '--routes', `nats://127.0.0.1:${routeA}`])
  t.teardown(() => b.stop())
  const onB = await natsjs(t, b)
  const seen: unknown[] = []
  onB.subscribe('failover', { callback: (_, m) => seen.push(JSON.parse(td.decode(m.data))) })
  await onB.flush()
  await using hub = await Hub.open<unknown>(a.url('failover'), { codec: 'json', reconnect: { initialMs: 20, maxMs: 200 } })
  // Once the route is up, server a tells its clients of b.
  for (let i = 0; i < 1000 && (hub.metrics().nats!.knownServers < 2 || seen.length === 0); i++) {
    hub.publish('routed?')
    await new Promise((r) => setTimeout(r, 10))
  }
  t.is(hub.metrics().nats!.knownServers, 2)
  const connected = statusWhere(hub, (e) => e.status === 'connected' && e.peer === `127.0.0.1:${b.port}`)
  await a.stop()
  t.is((await connected).peer, `127.0.0.1:${b.port}`, 'on b now (a stays down)')
  hub.publish({ after: 'failover' })
  for (let i = 0; i < 500 && !seen.some((m) => typeof m === 'object'); i++) await new Promise((r) => setTimeout(r, 10))
  t.deepEqual(seen.at(-1), { after: 'failover' })
})

test.serial('a reader a whole ring behind, with nothing held for it, loses what comes meanwhile: counted, told once as ERR_SLOW_CONSUMER', async (t) => {
  await using slow = await Hub.open(server.url('flood'), { capacity: 16, receiveQueueBytes: 0 })
  await using fast = await Hub.open(server.url('flood'))
  const told: StatusEvent[] = []
  slow.onStatus((e) => e.error && told.push(e))
  for (let i = 0; i < 1000; i++) fast.publish(new Uint8Array(8))
  for (let i = 0; i < 1000 && slow.metrics().nats!.slowConsumerDrops < 1000 - 16; i++) await new Promise((r) => setTimeout(r, 5))
  let kept = 0
  while (slow.tryRecv() !== undefined) kept++
  t.is(kept + slow.metrics().nats!.slowConsumerDrops, 1000, 'each kept or counted')
  // (Status events come through the event loop: the first may come after the count.)
  for (let i = 0; i < 1000 && told.length === 0; i++) await new Promise((r) => setTimeout(r, 5))
  await new Promise((r) => setTimeout(r, 50))
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

test.serial('nkeys: a hub signs in with a user seed file (nkey), or a credentials file (creds) on a server in operator mode; a key the server does not know is refused', async (t) => {
  // Keys and JWTs made by nats.js's own nkeys library, not ours.
  const { createAccount, createOperator, createUser } = await import('nkeys.js')
  const dir = mkdtempSync(join(tmpdir(), 'zerohop-nkeys-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string, text: string): string => (writeFileSync(join(dir, name), text, { mode: 0o600 }), join(dir, name))
  const user = createUser()
  const stranger = createUser()
  const known = await natsServer(['-c', file('nkey.conf', `authorization { users = [ { nkey: ${user.getPublicKey()} } ] }\n`)])
  t.teardown(() => known.stop())
  const nkey = file('user.nk', `${td.decode(user.getSeed())}\n`)
  await using a = await Hub.open<unknown>(known.url('signed'), { nkey, codec: 'json' })
  await using b = await Hub.open<unknown>(known.url('signed'), { nkey, codec: 'json' })
  a.publish({ by: 'nkey' })
  t.deepEqual(await b.recv({ timeoutMs: 5000 }), { by: 'nkey' })
  await t.throwsAsync(Hub.open(known.url('signed'), { nkey: file('stranger.nk', td.decode(stranger.getSeed())) }), { message: /Authorization/i })
  await t.throwsAsync(Hub.open(known.url('signed'), { nkey: join(dir, 'missing.nk') }), { code: 'ERR_BAD_OPTION', message: /cannot read/ })
  await t.throwsAsync(Hub.open(known.url('signed'), { nkey, token: 'x' }), { code: 'ERR_BAD_OPTION' })

  // Operator mode: the operator signs the account, the account signs the user's JWT.
  type Key = ReturnType<typeof createUser>
  const b64 = (bytes: Uint8Array | string): string => Buffer.from(bytes).toString('base64url')
  const jwt = (issuer: Key, subject: Key, nats: object): string => {
    const head = b64(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }))
    const claims = { jti: b64(randomBytes(16)), iat: Math.floor(Date.now() / 1000), iss: issuer.getPublicKey(), sub: subject.getPublicKey(), name: 'zerohop-test', nats: { ...nats, version: 2 } }
    const body = b64(JSON.stringify(claims))
    return `${head}.${body}.${b64(issuer.sign(te.encode(`${head}.${body}`)))}`
  }
  const [operator, account] = [createOperator(), createAccount()]
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 }
  const conf = [
    `operator: ${jwt(operator, operator, { type: 'operator' })}`,
    'resolver: MEMORY',
    `resolver_preload: { ${account.getPublicKey()}: ${jwt(operator, account, { type: 'account', limits: unlimited })} }`,
  ]
  const trusting = await natsServer(['-c', file('operator.conf', `${conf.join('\n')}\n`)])
  t.teardown(() => trusting.stop())
  const creds = (owner: Key, issuer: Key): string =>
    [
      '-----BEGIN NATS USER JWT-----',
      jwt(issuer, owner, { type: 'user', pub: {}, sub: {}, subs: -1, data: -1, payload: -1 }),
      '------END NATS USER JWT------',
      '',
      '-----BEGIN USER NKEY SEED-----',
      td.decode(owner.getSeed()),
      '------END USER NKEY SEED------',
      '',
    ].join('\n')
  const credsFile = file('user.creds', creds(user, account))
  await using c = await Hub.open<unknown>(trusting.url('accounts'), { creds: credsFile, codec: 'json' })
  const plain = await natsjs(t, trusting, { authenticator: (await import(NATS_JS)).credsAuthenticator(te.encode(creds(stranger, account))) })
  const seen = new Promise<unknown>((r) => plain.subscribe('accounts', { callback: (_, m) => r(JSON.parse(td.decode(m.data))) }))
  await plain.flush()
  c.publish({ by: 'creds' })
  t.deepEqual(await seen, { by: 'creds' }, 'a nats.js client of the same account sees it')
  // A user signed by an account the operator never signed.
  await t.throwsAsync(Hub.open(trusting.url('accounts'), { creds: file('foreign.creds', creds(user, createAccount())) }), { message: /Authorization|authentication/i })
})

test.serial('TLS: hubs verify the server against their CA; a TLS server refuses a hub without tls options, saying why', async (t) => {
  const dir = pki()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const f = (name: string) => join(dir, name)
  const secure = await natsServer(['--tls', '--tlscert', f('server.pem'), '--tlskey', f('server.key')])
  t.teardown(() => secure.stop())
  const tls = { ca: f('ca.pem'), serverName: 'localhost' }
  await using a = await Hub.open<unknown>(secure.url('secret'), { codec: 'json', tls })
  await using b = await Hub.open<unknown>(secure.url('secret'), { codec: 'json', tls })
  b.publish({ pin: 1234 })
  t.deepEqual(await a.recv({ timeoutMs: 5000 }), { pin: 1234 }, 'through a server that takes nothing but TLS')
  await t.throwsAsync(Hub.open(secure.url('secret')), { code: 'ERR_BAD_OPTION', message: /requires TLS/ })
  await t.throwsAsync(Hub.open(server.url('plain'), { tls }), { code: 'ERR_BAD_OPTION', message: /offers no TLS/ })
  await t.throwsAsync(Hub.open(secure.url('secret'), { tls: { ca: f('other-ca.pem'), serverName: 'localhost' } }), { code: 'ERR_TLS_UNTRUSTED' })
  await t.throwsAsync(Hub.open(secure.url('secret'), { tls: { ca: f('ca.pem'), serverName: 'elsewhere' } }), { code: 'ERR_TLS_NAME_MISMATCH' })
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

test.serial('a bridge between two hosts through two clustered servers: every message once, none looping', async (t) => {
  const hosts = twoHosts(t, '10.204.0')
  if (hosts === undefined) return
  const [a, b] = hosts
  // One server a host, routed to the other's: a cluster of two.
  const servers = [
    [a, '10.204.0.2'],
    [b, '10.204.0.1'],
  ].map(([ns, other]) => {
    const args = ['-a', '0.0.0.0', '-p', '4222', '--cluster', 'nats://0.0.0.0:6222', '--routes', `nats://${other}:6222`, '--cluster_name', 'zh']
    const s = spawn('ip', ['netns', 'exec', ns!, '/usr/sbin/nats-server', ...args], { stdio: 'ignore' })
    t.teardown(() => void s.kill('SIGKILL'))
    return s
  })
  const shm = [uniqueName('site-a'), uniqueName('site-b')]
  const sites = [a, b].map((ns, i) => {
    const c = child('nats-site.mjs', [JSON.stringify({ shm: shm[i], tag: 'ab'[i] })], {}, [], ['ip', 'netns', 'exec', ns])
    t.teardown(() => void c.proc.kill('SIGKILL'))
    return c
  })
  for (const s of sites) await s.next('ready')
  type Report = { got: Record<string, number[]>; probes: string[]; bridge: { out: { forwarded: number }; in: { forwarded: number } } }
  const report = async (i: number): Promise<Report> => {
    sites[i]!.send('report')
    return (await sites[i]!.next('report')) as unknown as Report
  }
  // Until each site hears the other's probe: the servers are routed, the bridges subscribed.
  for (let i = 0; ; i++) {
    t.true(i < 200, 'the sites hear each other within 20 s')
    for (const s of sites) s.send('probe')
    await new Promise((r) => setTimeout(r, 100))
    const [ra, rb] = [await report(0), await report(1)]
    if (ra.probes.includes('b') && rb.probes.includes('a')) break
  }
  for (const s of sites) s.send('send 300')
  const all = [...Array(300).keys()]
  let reports: Report[] = []
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100))
    reports = [await report(0), await report(1)]
    if (reports.every((r) => (r.got.a?.length ?? 0) >= 300 && (r.got.b?.length ?? 0) >= 300)) break
  }
  await new Promise((r) => setTimeout(r, 500)) // a loop would bring more
  reports = [await report(0), await report(1)]
  for (const [i, r] of reports.entries()) {
    t.deepEqual(r.got.a, all, `site ${'ab'[i]} got a's messages once each, in order`)
    t.deepEqual(r.got.b, all, `site ${'ab'[i]} got b's messages once each, in order`)
    t.true(r.bridge.out.forwarded >= 300 && r.bridge.in.forwarded >= 300, JSON.stringify(r.bridge))
  }
  for (const s of sites) s.send('exit')
  for (const s of sites) t.is(await s.exited, 0, s.stderr())
  void servers
})

test.serial('Bridge: what a bridge forwards to NATS never comes back through another of the same origin', async (t) => {
  const shm = `shm://${uniqueName('bridge')}`
  await using b1 = await Bridge.start(shm, server.url('loop'), { direction: 'both', origin: 'site-x' })
  await using b2 = await Bridge.start(shm, server.url('loop'), { direction: 'both', origin: 'site-x' })
  await using local = await Hub.open<number>(shm, { codec: 'json' })
  const nc = await natsjs(t)
  const seen: string[] = []
  nc.subscribe('loop', { callback: (_e, m) => seen.push(td.decode(m.data)) })
  await nc.flush()
  for (let i = 0; i < 10; i++) local.publish(i)
  await new Promise((r) => setTimeout(r, 500))
  // Each bridge forwards the local messages once (two bridges: twice on NATS); what one
  // put on NATS reaches the other, which drops it (its own origin) instead of putting it
  // back into shared memory, where the first would forward it again, and again.
  t.is(seen.length, 20)
  t.is(local.tryRecv(), undefined, 'nothing came back into shared memory')
  t.is(b1.metrics().in.forwarded + b2.metrics().in.forwarded, 0)
  t.is(b1.metrics().out.forwarded, 10)
  nc.publish('loop', te.encode('42'))
  t.is(await local.recv({ timeoutMs: 5000 }), 42, 'a plain NATS publisher reaches the local hub')
  await new Promise((r) => setTimeout(r, 200))
  t.is(local.tryRecv(), 42, 'through each bridge: two bridges of one hub, each forwards')
  t.is(local.tryRecv(), undefined)
})

test.serial('zerohop bridge (the CLI) forwards until stopped and prints its counts', async (t) => {
  const shm = `shm://${uniqueName('cli-bridge')}`
  const cli = spawn(process.execPath, [CLI, 'bridge', shm, server.url('cli.feed'), '--in'], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => void cli.kill('SIGKILL'))
  let err = ''
  cli.stderr.on('data', (d: Buffer) => (err += d.toString()))
  let out = ''
  cli.stdout.on('data', (d: Buffer) => (out += d.toString()))
  for (let i = 0; i < 1000 && !err.includes('ready'); i++) await new Promise((r) => setTimeout(r, 10))
  t.regex(err, /^ready shm:\/\/\S+ <- nats:\/\//)
  await using local = await Hub.open<number>(shm, { codec: 'json' })
  const nc = await natsjs(t)
  for (let i = 0; i < 5; i++) nc.publish('cli.feed', te.encode(String(i)))
  for (let i = 0; i < 5; i++) t.is(await local.recv({ timeoutMs: 5000 }), i)
  cli.kill('SIGINT')
  const [code] = (await once(cli, 'exit')) as [number]
  t.is(code, 0, err)
  t.like(JSON.parse(out.trim()), { in: { forwarded: 5, dropped: 0 }, out: { forwarded: 0 } })
})
