// quic:// hubs through the public API, across real processes: many clients to one
// server both ways, 1 B to 16 MB messages, datagrams, certificates (mutual TLS accepted
// and refused, untrusted, expired, wrong name), 0-RTT on reconnect, a server restart
// that loses no accepted message, a peer killed mid-stream, RPC, and idle hubs that
// sleep and let their process exit. Serial: each test runs several busy processes on a
// two-core machine.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type ErrorCode, Hub, type HubOptions, Rpc, type StatusEvent } from 'zerohop'
import { child } from './helpers.ts'
// @ts-expect-error: a plain ES module shared with the fixtures
import { payload } from './fixtures/payload.mjs'

type Tally = {
  received: number
  corrupt: number
  outOfOrder: number
  senders: [number, number][]
  sizes: number[]
  metrics: { quic: { peers: number; lastZeroRtt: boolean; zeroRttConnections: number; reconnects: number } }
  statuses: { status: string; peer?: string; code?: string }[]
}

/** Every child this file starts; a failed test must not leave one waiting forever. */
const children: ReturnType<typeof child>[] = []
const track = (c: ReturnType<typeof child>) => (children.push(c), c)
test.afterEach.always(() => {
  for (const c of children.splice(0)) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
})
const peer = (cfg: object) => track(child('quic-peer.mjs', [JSON.stringify(cfg)]))
const dev: HubOptions<Uint8Array> = { tls: { dangerouslyAcceptAnyServer: true }, reconnect: { initialMs: 20, maxMs: 200 } }
const makePayload = payload as (tag: number, seq: number, size: number) => Uint8Array

/** Resolves with the first status event `pred` accepts (a hub hands a new listener the events it has not delivered yet). */
function statusWhere(hub: Hub<unknown>, pred: (e: StatusEvent) => boolean, timeoutMs = 10_000): Promise<StatusEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new Error(`no such status event within ${timeoutMs} ms (status ${hub.status})`))
    }, timeoutMs)
    const off = hub.onStatus((e) => {
      if (!pred(e)) return
      clearTimeout(timer)
      off()
      resolve(e)
    })
  })
}

test.serial('four clients to one server and back: every message, in order per sender, intact', async (t) => {
  const sizes = [8, 100, 5000, 70_000]
  const server = peer({ mode: 'server', url: 'quic://127.0.0.1:0', options: { listen: true }, count: 4 * 300 })
  const { address } = (await server.next('ready')) as { address: string }
  const clients = [1, 2, 3, 4].map((tag) =>
    peer({ mode: 'client', url: `quic://${address}`, options: dev, count: 300, sizes, tag, expect: 100 }),
  )
  for (const c of clients) await c.next('sent')
  const s = (await server.next('done')) as Tally
  t.is(s.received, 1200)
  t.is(s.corrupt, 0)
  t.is(s.outOfOrder, 0)
  t.deepEqual(
    s.senders.sort((a, b) => a[0] - b[0]),
    [1, 2, 3, 4].map((tag) => [tag, 300]),
  )
  t.is(s.metrics.quic.peers, 4)
  t.is(s.statuses.filter((e) => e.status === 'connected' && e.peer).length, 4, 'a connected event per peer')
  server.send('100') // the server now publishes 100 messages to every peer
  for (const c of clients) {
    const r = (await c.next('done')) as Tally
    t.is(r.received, 100)
    t.is(r.corrupt + r.outOfOrder, 0)
    t.is(await c.exited, 0, c.stderr())
  }
  await server.next('closed')
  t.is(await server.exited, 0, server.stderr())
})

test.serial('1 B to 16 MB, through an echo server in another process', async (t) => {
  const sizes = [1, 7, 8, 1000, 16_336, 16_337, 70_000, 1 << 20, 16 << 20]
  const server = peer({ mode: 'server', url: 'quic://127.0.0.1:0', options: { listen: true }, count: sizes.length, echo: true })
  const { address } = (await server.next('ready')) as { address: string }
  await using hub = await Hub.open(`quic://${address}`, dev)
  // Tag 0: messages under 8 bytes carry no tag, and the server checks them as tag 0's.
  for (const [seq, size] of sizes.entries()) hub.publish(makePayload(0, seq, size))
  for (const [seq, size] of sizes.entries()) {
    const m = await hub.recvMessage({ timeoutMs: 20_000 })
    t.is(m.value.byteLength, size)
    t.true(Buffer.from(m.value).equals(Buffer.from(makePayload(0, seq, size))), `message ${seq} (${size} B) intact`)
    t.is(m.channel, 0)
    t.is(m.from, address)
  }
  const s = (await server.next('done')) as Tally
  t.is(s.corrupt, 0)
  t.throws(() => hub.publish(new Uint8Array((16 << 20) + 1)), { code: 'ERR_MESSAGE_TOO_LARGE' })
  t.is(hub.metrics().quic!.unackedBytes, 0, 'the echo server read everything')
  server.send('0')
  t.is(await server.exited, 0, server.stderr())
})

test.serial('datagram mode: unreliable messages, counted when lost, at most one path MTU', async (t) => {
  await using server = await Hub.open('quic://127.0.0.1:0', { listen: true })
  await using client = await Hub.open(`quic://${server.localAddress}`, { ...dev, datagrams: true })
  await statusWhere(client, (e) => e.status === 'connected').catch(() => undefined)
  if (client.status !== 'connected') await statusWhere(client, (e) => e.status === 'connected')
  for (let i = 0; i < 300; i++) client.publish(makePayload(9, i, 200), { channel: 3 })
  let got = 0
  try {
    for (;;) {
      const m = await server.recvMessage({ timeoutMs: 1000 })
      t.is(m.channel, 3)
      t.is(m.value.byteLength, 200)
      got++
    }
  } catch (e) {
    t.is((e as { code?: string }).code, 'ERR_TIMEOUT')
  }
  const q = server.metrics().quic!
  t.is(q.datagramsReceived, got)
  t.is(got + q.datagramsLost, 300, 'every datagram arrived or was counted lost')
  t.true(got >= 270, `loopback loses few (${got} of 300 arrived)`)
  t.throws(() => client.publish(new Uint8Array(20_000)), { code: 'ERR_MESSAGE_TOO_LARGE' }, 'above the path MTU')
})

/** A CA, server and client certificates, made by crates/zerohop-quic/examples/test_pki.rs. */
function pki(): string {
  const dir = mkdtempSync(join(tmpdir(), 'zerohop-pki-'))
  const r = spawnSync('cargo', ['run', '-q', '--release', '-p', 'zerohop-quic', '--example', 'test_pki', '--', dir], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`test_pki failed: ${r.stderr}`)
  return dir
}

test.serial('certificates: mutual TLS accepted and refused; untrusted, expired and misnamed servers fail with their codes', async (t) => {
  const dir = pki()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const f = (name: string) => join(dir, name)
  const mtls = { cert: f('server.pem'), key: f('server.key'), ca: f('ca.pem') }
  const server = peer({ mode: 'server', url: 'quic://127.0.0.1:0', options: { listen: true, tls: mtls }, count: 1, log: true })
  const { address } = (await server.next('ready')) as { address: string }
  const once = { reconnect: { maxAttempts: 0 } }

  // Accepted: a client certificate from the CA, and the server verified against it.
  await using good = await Hub.open(`quic://${address}`, {
    tls: { ca: f('ca.pem'), cert: f('client.pem'), key: f('client.key'), serverName: 'localhost' },
  })
  good.publish(makePayload(1, 0, 100))
  t.is(((await server.next('done')) as Tally).received, 1)

  const refusedWith = async (tls: HubOptions<Uint8Array>['tls'], code: ErrorCode, label: string) => {
    await using hub = await Hub.open(`quic://${address}`, { tls, ...once })
    const e = await statusWhere(hub, (e) => e.status === 'disconnected')
    t.is(e.error?.code, code, label)
    t.is(hub.status, 'disconnected')
  }
  await refusedWith({ ca: f('ca.pem'), serverName: 'localhost' }, 'ERR_TLS_REFUSED', 'no client certificate')
  await refusedWith(
    { ca: f('ca.pem'), cert: f('stranger.pem'), key: f('stranger.key'), serverName: 'localhost' },
    'ERR_TLS_REFUSED',
    'a client certificate from another CA',
  )
  await refusedWith({ ca: f('other-ca.pem'), serverName: 'localhost' }, 'ERR_TLS_UNTRUSTED', 'a server from an unknown CA')
  await refusedWith({ ca: f('ca.pem'), serverName: 'elsewhere.example' }, 'ERR_TLS_NAME_MISMATCH', 'a server for another name')
  await using expired = await Hub.open('quic://127.0.0.1:0', { listen: true, tls: { cert: f('expired.pem'), key: f('expired.key') } })
  await using late = await Hub.open(`quic://${expired.localAddress}`, { tls: { ca: f('ca.pem'), serverName: 'localhost' }, ...once })
  t.is((await statusWhere(late, (e) => e.status === 'disconnected')).error?.code, 'ERR_TLS_EXPIRED')
  server.send('0')
  await server.next('closed')
  t.is(await server.exited, 0, server.stderr())
})

test.serial('0-RTT: a client that has seen the server sends its first messages in the first flight', async (t) => {
  const server = peer({ mode: 'server', url: 'quic://127.0.0.1:0', options: { listen: true }, count: 2 })
  const { address } = (await server.next('ready')) as { address: string }
  const first = await Hub.open(`quic://${address}`, dev)
  first.publish(makePayload(1, 0, 64))
  await first.close({ lingerMs: 5000 }) // read by the server, and the session ticket is in
  const firstMetrics = first.metrics()
  const again = await Hub.open(`quic://${address}`, dev)
  again.publish(makePayload(2, 0, 64))
  const s = (await server.next('done')) as Tally
  t.is(s.received, 2)
  const q = again.metrics().quic!
  t.true(q.lastZeroRtt, 'the second connection resumed with 0-RTT')
  t.is(q.zeroRttConnections, 1)
  t.is(firstMetrics.quic, undefined, 'a closed hub has no transport metrics')
  await again.close()
  server.send('0')
  t.is(await server.exited, 0, server.stderr())
})

test.serial('a server restart loses no accepted message: the new server gets what the old one had not handed over', async (t) => {
  const N = 3000
  const a = peer({ mode: 'server', url: 'quic://127.0.0.1:0', options: { listen: true }, count: N, log: true })
  const { address } = (await a.next('ready')) as { address: string }
  // A killed server sends no goodbye: the client notices by the idle timeout.
  await using hub = await Hub.open(`quic://${address}`, { ...dev, idleTimeoutMs: 1000, keepAliveMs: 250 })
  let published = 0
  const publishing = (async () => {
    while (published < N) {
      for (let i = 0; i < 10 && published < N; i++) hub.publish(makePayload(1, published++, 100))
      await new Promise((r) => setTimeout(r, 1))
    }
  })()
  const seen: number[] = []
  while (seen.length < 500) seen.push(((await a.next('got')) as { seq: number }).seq)
  a.proc.kill('SIGKILL')
  await a.exited
  for (;;) {
    try {
      seen.push(((await a.next('got')) as { seq: number }).seq) // lines already in the pipe
    } catch {
      break
    }
  }
  t.deepEqual(seen, [...seen.keys()], 'the first server handed over a prefix, in order')
  await statusWhere(hub, (e) => e.status === 'reconnecting')
  const b = peer({ mode: 'server', url: `quic://${address}`, options: { listen: true }, count: N, log: true })
  await b.next('ready')
  const rest: number[] = []
  while (rest.at(-1) !== N - 1) rest.push(((await b.next('got')) as { seq: number }).seq)
  await publishing
  // What the old server read but had not acknowledged when it died comes again: at
  // least once across a receiver crash, never lost.
  const first = rest[0]!
  t.true(first <= seen.length, `the new server starts at or before ${seen.length} (at ${first})`)
  t.deepEqual(rest, [...Array(N - first).keys()].map((i) => first + i), 'then every message once, in order')
  t.log(`${seen.length - first} message(s) read by the killed server came again`)
  t.is(hub.metrics().quic!.reconnects, 1)
  b.proc.kill()
  await b.exited
})

test.serial('a peer killed mid-stream: the server and the other clients go on', async (t) => {
  const options = { listen: true, idleTimeoutMs: 1000, keepAliveMs: 250 }
  const server = peer({ mode: 'server', url: 'quic://127.0.0.1:0', options, count: 50, countTag: 2, log: true })
  const { address } = (await server.next('ready')) as { address: string }
  const doomed = peer({ mode: 'client', url: `quic://${address}`, options: dev, count: 8, sizes: [12 << 20], tag: 1 })
  await server.next('status') // the doomed peer connected
  await new Promise((r) => setTimeout(r, 300)) // well into its first 12 MB message
  doomed.proc.kill('SIGKILL')
  await doomed.exited
  const good = peer({ mode: 'client', url: `quic://${address}`, options: dev, count: 50, sizes: [1000], tag: 2 })
  await good.next('done')
  const s = (await server.next('done')) as Tally
  t.is(s.corrupt, 0)
  t.is(s.outOfOrder, 0)
  t.deepEqual(
    s.senders.find(([tag]) => tag === 2),
    [2, 50],
  )
  // The killed peer is reported gone once its connection idles out.
  for (;;) {
    const e = (await server.next('status')) as { status: string; peer?: string }
    if (e.status === 'disconnected' && e.peer) break
  }
  t.pass('the killed peer was reported gone')
  server.send('0')
  t.is(await server.exited, 0, server.stderr())
})

test.serial('RPC: replies across processes; a throwing handler, a timeout and an abort each end cleanly on both sides', async (t) => {
  const server = track(child('rpc-server.mjs', []))
  const { address } = (await server.next('ready')) as { address: string }
  type Req = { op: string; x?: unknown; ms?: number }
  await using rpc = await Rpc.connect<Req, unknown>(`quic://${address}`, { ...dev, codec: 'json' })
  t.is(rpc.status, 'connected')

  const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => rpc.request({ op: 'echo', x: { i } })))
  t.deepEqual(replies, Array.from({ length: 200 }, (_, i) => ({ i })), '200 concurrent requests, each its own reply')

  await t.throwsAsync(rpc.request({ op: 'fail' }), { code: 'ERR_REMOTE', message: 'boom' })

  const t0 = performance.now()
  await t.throwsAsync(rpc.request({ op: 'sleep', ms: 10_000 }, { timeoutMs: 50 }), { code: 'ERR_TIMEOUT' })
  t.true(performance.now() - t0 < 5000, 'the timeout fired, not the handler')
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 20)
  await t.throwsAsync(rpc.request({ op: 'sleep', ms: 10_000 }, { signal: ac.signal }), { code: 'ERR_ABORTED' })
  await t.throwsAsync(rpc.request({ op: 'echo' }, { signal: AbortSignal.abort() }), { code: 'ERR_ABORTED' })

  // Nothing left behind: no pending request here, no running handler there.
  t.deepEqual(rpc.metrics(), { pending: 0, nativePending: 0 })
  let m: Record<string, number> = {}
  for (let i = 0; i < 200; i++) {
    server.send('metrics')
    m = (await server.next('metrics')) as Record<string, number>
    if (m.cancelled === 2) break
    await new Promise((r) => setTimeout(r, 10))
  }
  t.like(m, { inFlight: 0, served: 200, failed: 1, cancelled: 2, stoppedEarly: 2 })
  t.is(await rpc.request({ op: 'echo', x: 'still fine' }), 'still fine')
  server.send('close')
  t.is(await server.exited, 0, server.stderr())
})

test.serial('RPC: a request in flight when the server dies fails with ERR_CONNECTION_LOST', async (t) => {
  const server = track(child('rpc-server.mjs', []))
  const { address } = (await server.next('ready')) as { address: string }
  await using rpc = await Rpc.connect<{ op: string; ms?: number }, unknown>(`quic://${address}`, {
    ...dev,
    codec: 'json',
    idleTimeoutMs: 1000,
    keepAliveMs: 250,
    reconnect: { maxAttempts: 0 },
  })
  const pending = rpc.request({ op: 'sleep', ms: 60_000 })
  await new Promise((r) => setTimeout(r, 100))
  server.proc.kill('SIGKILL')
  await t.throwsAsync(pending, { code: 'ERR_CONNECTION_LOST' })
  t.deepEqual(rpc.metrics(), { pending: 0, nativePending: 0 })
  await t.throwsAsync(rpc.request({ op: 'echo' }), { code: 'ERR_CONNECTION_LOST' })
})

test.serial('a process waiting in recv() alone stays alive until a burst of large messages has all come', async (t) => {
  // Large messages are also delivered by the hub's I/O thread, whose doorbell reaches
  // the event loop through a threadsafe function that does not hold the loop by itself.
  const count = 6000
  const sink = track(child('recv-burst.mjs', [String(count)]))
  const { address } = (await sink.next('ready')) as { address: string }
  await using client = await Hub.open(`quic://${address}`, { ...dev, role: 'publisher', sendQueueBytes: 16 << 20 })
  const msg = new Uint8Array(64 << 10)
  for (let i = 0; i < count; i++) {
    client.publish(msg)
    if (i % 256 === 255) await new Promise((r) => setImmediate(r))
  }
  t.like(await sink.next('done'), { received: count, bytes: count * msg.byteLength })
  t.is(await sink.exited, 0, sink.stderr())
})

test.serial('idle hubs sleep: a client waiting in recv() uses next to no CPU, and open hubs do not keep a process alive', async (t) => {
  const idle = track(child('quic-idle.mjs', ['1500']))
  const r = await idle.next('done')
  t.is(r.outcome, 'ERR_TIMEOUT')
  t.true((r.wallMs as number) >= 1400)
  // Two I/O threads and a parked event loop: keep-alives and timers only.
  t.true((r.cpuMs as number) < 150, `used ${r.cpuMs} ms of CPU in ${r.wallMs} ms`)
  const exited = await Promise.race([idle.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))])
  t.is(exited, 0, idle.stderr())
})

