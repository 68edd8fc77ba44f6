// What only quic:// does, through the public API, across real processes: datagrams, 0-RTT
// on reconnect, and idle hubs that sleep and let their process exit. What every
// connecting transport does (many clients, 1 B to 16 MB, restarts, killed and frozen
// peers, RPC) is in connections.spec.ts; certificates, which tcp:// shares, in tls.spec.ts. Serial: each test runs several busy processes
// on a two-core machine.
import test from 'ava'
import { Hub, type HubOptions } from 'zerohop'
import { child, statusWhere } from './helpers.ts'
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
const peer = (cfg: object) => track(child('hub-peer.mjs', [JSON.stringify(cfg)]))
const dev: HubOptions<Uint8Array> = { tls: { dangerouslyAcceptAnyServer: true }, reconnect: { initialMs: 20, maxMs: 200 } }
const makePayload = payload as (tag: number, seq: number, size: number) => Uint8Array

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

test.serial('datagram mode: a time to live goes along, and a datagram left unread past it is passed over and counted', async (t) => {
  await using server = await Hub.open('quic://127.0.0.1:0', { listen: true })
  await using client = await Hub.open(`quic://${server.localAddress}`, { ...dev, datagrams: true, ttlMs: 60_000 })
  if (client.status !== 'connected') await statusWhere(client, (e) => e.status === 'connected')
  client.publish(Uint8Array.of(1), { ttlMs: 40, channel: 2 })
  client.publish(Uint8Array.of(2)) // the hub's 60 s
  client.publish(Uint8Array.of(3), { ttlMs: 40 })
  // Wait until both arrived (unread) and the short ones' time ran out.
  const deadline = Date.now() + 5000
  while (server.metrics().quic!.datagramsReceived + server.metrics().quic!.datagramsLost < 3 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5))
  }
  await new Promise((r) => setTimeout(r, 60))
  const lost = server.metrics().quic!.datagramsLost
  const m = await server.recvMessage({ timeoutMs: 1000 })
  t.deepEqual([...m.value], [2])
  t.is(server.tryRecv(), undefined)
  t.is(server.metrics().expired + lost, 2, 'both short-lived datagrams expired unread (or were lost on the way)')
})

test.serial('datagram mode: a work group shares the datagrams, each to one member; a hub without a group gets them all', async (t) => {
  await using server = await Hub.open('quic://127.0.0.1:0', { listen: true, datagrams: true })
  const url = `quic://${server.localAddress}` as const
  await using a = await Hub.open(url, { ...dev, group: 'w' })
  await using b = await Hub.open(url, { ...dev, group: 'w' })
  await using all = await Hub.open(url, dev)
  for (const h of [a, b, all]) if (h.status !== 'connected') await statusWhere(h, (e) => e.status === 'connected')
  for (let i = 0; i < 2500 && server.metrics().quic!.peers < 3; i++) await new Promise((r) => setTimeout(r, 2))
  for (let i = 0; i < 200; i++) server.publish(Uint8Array.of(i))
  const take = async (h: Hub<Uint8Array>) => {
    const got: number[] = []
    try {
      for (;;) got.push((await h.recv({ timeoutMs: 500 }))[0]!)
    } catch {
      return got
    }
  }
  const [ga, gb, gall] = await Promise.all([take(a), take(b), take(all)])
  t.true(gall.length >= 180, `the hub without a group got (nearly) every one: ${gall.length}`)
  t.is(ga.filter((i) => gb.includes(i)).length, 0, 'no datagram went to both members')
  t.true(ga.length + gb.length >= 180, `the members got (nearly) every one between them: ${ga.length} + ${gb.length}`)
  t.true(ga.length > 50 && gb.length > 50, `in turns: ${ga.length} and ${gb.length}`)
  t.like(server.metrics().quic!.groups?.[0], { name: 'w', members: 2 })
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

