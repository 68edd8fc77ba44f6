// What every connecting transport (quic://, tcp://, uds://) does, through the public
// API, across real processes, checked the same way for each: many clients to one server
// both ways, 1 B to 16 MB messages, a server restart that loses no accepted message, a
// peer killed mid-stream, a frozen peer noticed (RPC is in rpc.spec.ts). What only one
// of them does is in its own spec file. Serial: each test runs several busy processes on two cores.
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { Hub, type WorkGroupMetrics } from 'zerohop'
import { connecting as transports, fast } from './connecting.ts'
import { child, statusWhere } from './helpers.ts'
// @ts-expect-error: a plain ES module shared with the fixtures
import { payload } from './fixtures/payload.mjs'

type Tally = {
  received: number
  corrupt: number
  outOfOrder: number
  senders: [number, number][]
  metrics: Record<string, { peers: number; reconnects: number }>
  statuses: { status: string; peer?: string; code?: string }[]
}

/** Every child this file starts; a failed test must not leave one waiting forever. */
const children: ReturnType<typeof child>[] = []
const track = (c: ReturnType<typeof child>) => (children.push(c), c)
test.afterEach.always(() => {
  for (const c of children.splice(0)) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
})
const peer = (cfg: object) => track(child('hub-peer.mjs', [JSON.stringify(cfg)]))
const makePayload = payload as (tag: number, seq: number, size: number) => Uint8Array

test.serial('a process waiting for its hub to connect, with only statusEvents(), stays alive until it does', async (t) => {
  // As a pending read of a Node socket does; a status listener alone would not. The
  // server comes only after the client started waiting.
  const probe = await Hub.open('tcp://127.0.0.1:0', { listen: true })
  const address = probe.localAddress!
  await probe.close({ lingerMs: 0 })
  const c = track(child('await-connected.mjs', [`tcp://${address}`, JSON.stringify(fast)]))
  t.not((await c.next('waiting')).status, 'connected')
  await new Promise((r) => setTimeout(r, 300))
  await using server = await Hub.open(`tcp://${address}`, { listen: true })
  await c.next('connected')
  t.is(await c.exited, 0, c.stderr())
  t.is(server.status, 'connected')
})

for (const tr of transports) {
  const name = (what: string) => `${tr.label ?? tr.name}: ${what}`
  /** A server process on a fresh URL; its URL for clients. */
  async function server(cfg: Record<string, unknown>): Promise<{ s: ReturnType<typeof peer>; url: string; address?: string }> {
    const listen = tr.listenUrl()
    const s = peer({ mode: 'server', url: listen, ...cfg, options: { listen: true, ...tr.server, ...(cfg.options as object) } })
    const { address } = (await s.next('ready')) as { address?: string }
    return { s, url: tr.dialUrl(listen, address), address }
  }

  test.serial(name('four clients to one server and back: every message, in order per sender, intact'), async (t) => {
    const sizes = [8, 100, 5000, 70_000]
    const { s, url } = await server({ count: 4 * 300 })
    const clients = [1, 2, 3, 4].map((tag) => peer({ mode: 'client', url, options: tr.client, count: 300, sizes, tag, expect: 100 }))
    for (const c of clients) await c.next('sent')
    const tally = (await s.next('done')) as Tally
    t.is(tally.received, 1200)
    t.is(tally.corrupt, 0)
    t.is(tally.outOfOrder, 0)
    t.deepEqual(
      tally.senders.sort((a, b) => a[0] - b[0]),
      [1, 2, 3, 4].map((tag) => [tag, 300]),
    )
    t.is(tally.metrics[tr.name]!.peers, 4)
    t.is(tally.statuses.filter((e) => e.status === 'connected' && e.peer).length, 4, 'a connected event per peer')
    s.send('100') // the server now publishes 100 messages to every peer
    for (const c of clients) {
      const r = (await c.next('done')) as Tally
      t.is(r.received, 100)
      t.is(r.corrupt + r.outOfOrder, 0)
      t.is(await c.exited, 0, c.stderr())
    }
    await s.next('closed')
    t.is(await s.exited, 0, s.stderr())
  })

  test.serial(name('idle hubs sleep: waiting in recv(), or with messages left unread, each wakes a few times a second'), async (t) => {
    const listen = tr.listenUrl()
    await using srv = await Hub.open(listen, { listen: true, ...tr.server })
    const count = 20
    const p = track(child('idle-hubs.mjs', [JSON.stringify({ url: tr.dialUrl(listen, srv.localAddress), count, options: tr.client, ms: 1500 })]))
    await p.next('ready')
    for (let i = 0; i < 500 && (srv.metrics()[tr.name] as { peers: number }).peers < count; i++) await new Promise((r) => setTimeout(r, 10))
    srv.publish(new Uint8Array([1]))
    srv.publish(new Uint8Array([2]))
    const { wakesPerHubPerSecond } = (await p.next('done')) as { wakesPerHubPerSecond: number }
    t.log(`${wakesPerHubPerSecond.toFixed(1)} wakes per idle hub per second`)
    // Heartbeats and keep-alives wake a hub a few times a second; a look every 10 ms
    // (100 a second) or every 2 ms at unread messages (500) is what this catches.
    t.true(wakesPerHubPerSecond < 30, `${wakesPerHubPerSecond.toFixed(1)} wakes per hub per second`)
    t.is(await p.exited, 0, p.stderr())
  })

  test.serial(name('a burst published in a synchronous loop arrives while the publisher polls without yielding'), async (t) => {
    // Bursts may wait for the end of the turn (tcp://, uds://); a caller that polls
    // instead never ends its turn, and what it published must still go.
    const n = 50
    const { s, url } = await server({ count: n, echo: true })
    await using hub = await Hub.open(url as `tcp://${string}`, tr.client)
    if (hub.status !== 'connected') await statusWhere(hub, (e) => e.status === 'connected')
    for (let i = 0; i < n; i++) hub.publish(makePayload(1, i, 100))
    let got = 0
    const until = Date.now() + 10_000
    while (got < n && Date.now() < until) if (hub.tryRecv() !== undefined) got++
    t.is(got, n, 'every echo came back without a turn of the event loop')
    s.send('0')
    t.is(await s.exited, 0, s.stderr())
  })

  test.serial(name('1 B to 16 MB, through an echo server in another process'), async (t) => {
    const sizes = [1, 7, 8, 1000, 16_336, 16_337, 70_000, 1 << 20, 16 << 20]
    const { s, url, address } = await server({ count: sizes.length, echo: true })
    await using hub = await Hub.open(url as `tcp://${string}`, tr.client)
    // Tag 0: messages under 8 bytes carry no tag, and the server checks them as tag 0's.
    for (const [seq, size] of sizes.entries()) hub.publish(makePayload(0, seq, size))
    for (const [seq, size] of sizes.entries()) {
      const m = await hub.recvMessage({ timeoutMs: 20_000 })
      t.is(m.value.byteLength, size)
      t.true(Buffer.from(m.value).equals(Buffer.from(makePayload(0, seq, size))), `message ${seq} (${size} B) intact`)
      t.is(m.channel, 0)
      const from = tr.from(address)
      if (typeof from === 'string') t.is(m.from, from)
      else t.regex(m.from ?? '', from)
    }
    const tally = (await s.next('done')) as Tally
    t.is(tally.corrupt, 0)
    t.throws(() => hub.publish(new Uint8Array((16 << 20) + 1)), { code: 'ERR_MESSAGE_TOO_LARGE' })
    t.is((hub.metrics()[tr.name] as { unackedBytes: number }).unackedBytes, 0, 'the echo server read everything')
    s.send('0')
    t.is(await s.exited, 0, s.stderr())
  })

  test.serial(name('what the application read is acknowledged when its code returns, with no further look at the hub'), async (t) => {
    const listenUrl = tr.listenUrl()
    await using server = await Hub.open(listenUrl as `tcp://${string}`, { listen: true, ...tr.server })
    await using client = await Hub.open(tr.dialUrl(listenUrl, server.localAddress) as `tcp://${string}`, tr.client)
    const metrics = (h: Hub<Uint8Array>) => h.metrics()[tr.name] as { unackedBytes: number }
    for (let i = 0; i < 10; i++) client.publish(new Uint8Array(100).fill(i))
    // All ten are in the ring (its own count, which moves no cursor), read with no look before.
    for (let i = 0; i < 2500 && server.metrics().lag < 10; i++) await new Promise((r) => setTimeout(r, 2))
    for (let i = 0; i < 10; i++) t.deepEqual(server.tryRecv(), new Uint8Array(100).fill(i))
    // Nothing more is read: the sender still learns that all ten were.
    for (let i = 0; i < 2500 && metrics(client).unackedBytes > 0; i++) await new Promise((r) => setTimeout(r, 2))
    t.is(metrics(client).unackedBytes, 0)
  })

  test.serial(name('a client back after the server forgot it (away past peerLingerMs) gets what is published from then on'), async (t) => {
    if (tr.name === 'kcp') return t.pass() // (no `disconnect` fault: KCP has no connection to drop)
    const listenUrl = tr.listenUrl()
    await using server = await Hub.open(listenUrl as `tcp://${string}`, { listen: true, ...tr.server, peerLingerMs: 20 })
    // Dropped once a second (a fault of its own); back 300 ms later, long after the server forgot it.
    await using client = await Hub.open(tr.dialUrl(listenUrl, server.localAddress) as `tcp://${string}`, {
      ...tr.client,
      reconnect: { initialMs: 300, maxMs: 300 },
      chaos: 'disconnect:1s',
    })
    const connected = () => statusWhere(server, (e) => e.peer !== undefined && e.status === 'connected')
    await connected()
    for (let i = 0; i < 5; i++) server.publish(Uint8Array.of(1, i))
    for (let i = 0; i < 5; i++) t.deepEqual([...(await client.recv({ timeoutMs: 5000 }))], [1, i])
    // Read, so acknowledged: the server's queue for it is empty when the connection drops.
    await statusWhere(server, (e) => e.peer !== undefined && e.status !== 'connected')
    await connected()
    for (let i = 0; i < 5; i++) server.publish(Uint8Array.of(2, i))
    for (let i = 0; i < 5; i++) t.deepEqual([...(await client.recv({ timeoutMs: 2000 }))], [2, i])
  })

  test.serial(name('messages held while the receive ring is full are acknowledged only as they are read'), async (t) => {
    const N = 200
    const listenUrl = tr.listenUrl()
    await using server = await Hub.open(listenUrl as `tcp://${string}`, { listen: true, capacity: 16, ...tr.server })
    await using client = await Hub.open(tr.dialUrl(listenUrl, server.localAddress) as `tcp://${string}`, tr.client)
    const unacked = () => (client.metrics()[tr.name] as { unackedBytes: number }).unackedBytes
    for (let i = 0; i < N; i++) client.publish(new Uint8Array(100).fill(i))
    // The ring fills; the rest waits in the server's transport (read from the socket, or not).
    for (let i = 0; i < 2500 && server.metrics().lag < 16; i++) await new Promise((r) => setTimeout(r, 2))
    await new Promise((r) => setTimeout(r, 20))
    for (let read = 1; read <= N; read++) {
      t.deepEqual(server.tryRecv() ?? (await server.recv()), new Uint8Array(100).fill(read - 1))
      // Time for an acknowledgement (by the clock, or because the reader caught up).
      await new Promise((r) => setTimeout(r, 3))
      const left = unacked()
      if (left < (N - read) * 100) return t.fail(`after ${read} read, ${left} bytes unacknowledged: less than the ${N - read} unread messages`)
    }
    for (let i = 0; i < 2500 && unacked() > 0; i++) await new Promise((r) => setTimeout(r, 2))
    t.is(unacked(), 0, 'and all of them once read')
  })

  test.serial(name('a server restart loses no accepted message: the new server gets what the old one had not handed over'), async (t) => {
    const N = 3000
    const listen = tr.listenUrl()
    const a = peer({ mode: 'server', url: listen, options: { listen: true, ...tr.server }, count: N, log: true })
    const { address } = (await a.next('ready')) as { address?: string }
    const url = tr.dialUrl(listen, address)
    await using hub = await Hub.open(url as `tcp://${string}`, { ...tr.client, ...tr.liveness })
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
    // The same address again (a port the kernel picked, or the same name).
    const again = tr.name === 'uds' ? listen : tr.dialUrl(listen, address)
    const b = peer({ mode: 'server', url: again, options: { listen: true, ...tr.server }, count: N, log: true })
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
    t.is((hub.metrics()[tr.name] as { reconnects: number }).reconnects, 1)
    b.proc.kill()
    await b.exited
  })

  test.serial(name('a peer killed mid-stream: the server and the other clients go on'), async (t) => {
    const { s, url } = await server({ options: tr.liveness, count: 50, countTag: 2, log: true })
    const doomed = peer({ mode: 'client', url, options: tr.client, count: 8, sizes: [12 << 20], tag: 1 })
    await s.next('status') // the doomed peer connected
    await new Promise((r) => setTimeout(r, 300)) // well into its first 12 MB message
    doomed.proc.kill('SIGKILL')
    await doomed.exited
    const good = peer({ mode: 'client', url, options: tr.client, count: 50, sizes: [1000], tag: 2 })
    await good.next('done')
    const tally = (await s.next('done')) as Tally
    t.is(tally.corrupt, 0)
    t.is(tally.outOfOrder, 0)
    t.deepEqual(
      tally.senders.find(([tag]) => tag === 2),
      [2, 50],
    )
    for (;;) {
      const e = (await s.next('status')) as { status: string; peer?: string }
      if (e.status === 'disconnected') break
    }
    t.pass('the killed peer was reported gone')
    s.send('0')
    t.is(await s.exited, 0, s.stderr())
  })

  test.serial(name('a frozen peer (SIGSTOP) is noticed, and the connection comes back when it thaws'), async (t) => {
    const { s, url } = await server({ options: tr.liveness, count: 1_000_000, log: true })
    await using hub = await Hub.open(url as `tcp://${string}`, { ...tr.client, ...tr.liveness })
    await statusWhere(hub, (e) => e.status === 'connected')
    s.proc.kill('SIGSTOP')
    const t0 = performance.now()
    const e = await statusWhere(hub, (e) => e.status === 'reconnecting', 10_000)
    const took = performance.now() - t0
    t.truthy(e.error, 'with why')
    t.log(`noticed after ${took.toFixed(0)} ms`)
    s.proc.kill('SIGCONT')
    await statusWhere(hub, (e) => e.status === 'connected', 10_000)
    hub.publish(makePayload(1, 0, 100))
    t.is(((await s.next('got')) as { seq: number }).seq, 0)
  })
}

// Work groups: connecting hubs that open with the same `group` share what the listener
// publishes, each message to one of them, and what a member that died had not read
// goes to the others. The kill comes where what it read is what it acknowledged: it
// stops reading (staying connected) after K messages, and its acknowledgements are let
// through before SIGKILL; every id it handed over is on disk by then.
for (const tr of transports) {
  const name = (what: string) => `${tr.label ?? tr.name}: ${what}`
  test.serial(name('a work group of 3 processes shares 30,000 messages, none lost or twice, while one is SIGKILLed midway'), async (t) => {
    const listenUrl = tr.listenUrl()
    // (The victim is noticed within a second, and given up on 200 ms later.)
    await using server = await Hub.open(listenUrl as `tcp://${string}`, { listen: true, ...tr.server, ...tr.liveness, peerLingerMs: 200 })
    const url = tr.dialUrl(listenUrl, server.localAddress)
    const dir = mkdtempSync(join(tmpdir(), 'zerohop-group-'))
    const options = { ...tr.client, ...tr.liveness, group: 'w' }
    const worker = (i: number, stopAfter?: number) =>
      track(child('group-worker.mjs', [JSON.stringify({ url, options, file: join(dir, `${i}`), stopAfter })]))
    const victim = worker(0, 2000)
    await victim.next('ready')
    const others = [worker(1), worker(2)]
    for (const w of others) await w.next('ready')
    const group = () => (server.metrics()[tr.name] as { groups?: WorkGroupMetrics[] }).groups?.[0]
    for (let i = 0; i < 2500 && (group()?.members ?? 0) < 3; i++) await new Promise((r) => setTimeout(r, 2))
    t.like(group(), { name: 'w', members: 3 })
    const n = 30_000
    const m = new Uint8Array(64)
    const dv = new DataView(m.buffer)
    let killed = false
    void victim.next('stopped').then(async (s) => {
      t.is(s.count, 2000)
      await new Promise((r) => setTimeout(r, 300)) // its acknowledgements reach the server
      victim.proc.kill('SIGKILL')
      killed = true
    })
    for (let id = 0; id < n; id++) {
      dv.setUint32(0, id, true)
      await server.send(m, { timeoutMs: 20_000 })
      if (id % 1000 === 999) await new Promise((r) => setTimeout(r, 20)) // paced: the kill comes midway
    }
    t.true(killed, 'the victim was killed before the last message was published')
    const ids = () => [0, 1, 2].flatMap((i) => readFileSync(join(dir, `${i}`), 'utf8').split('\n').filter(Boolean).map(Number))
    for (let i = 0; i < 1000 && ids().length < n; i++) await new Promise((r) => setTimeout(r, 20))
    const got = ids()
    t.is(got.length, n, 'every message handed over once')
    t.is(new Set(got).size, n, 'none twice')
    t.is(readFileSync(join(dir, '0'), 'utf8').split('\n').filter(Boolean).length, 2000, 'the victim had handed over what it read')
    for (const i of [1, 2]) t.true(readFileSync(join(dir, `${i}`), 'utf8').length > 0, `worker ${i} got a share`)
    t.true(group()!.rerouted > 0, 'what the victim held moved to the others')
    t.is(group()!.lost, 0)
    for (const w of others) w.send('exit')
    for (const w of others) t.is(await w.exited, 0, w.stderr())
  })
}

test('group: a receiving hub of shm:// or a connecting one of tcp://, uds://, kcp:// and quic://; refused elsewhere, saying why', async (t) => {
  for (const [url, options, message] of [
    ['tcp://127.0.0.1:0', { listen: true, group: 'w' }, /a connecting hub's/],
    ['quic://127.0.0.1:0', { listen: true, group: 'w' }, /a connecting hub's/],
    ['quic://127.0.0.1:1', { group: 'w', role: 'publisher', tls: { dangerouslyAcceptAnyServer: true } }, /receives nothing/],
    ['tcp://127.0.0.1:1', { group: '' }, /1 to 32 bytes/],
    ['kcp://127.0.0.1:1', { group: 'x'.repeat(33) }, /1 to 32 bytes/],
    ['uds://@zerohop-group-refused', { group: 'w', role: 'publisher' }, /receives nothing/],
    ['shm://group-refused', { group: 'w', role: 'publisher' }, /receives nothing/],
    ['shm://group-refused', { group: 'x'.repeat(33) }, /1 to 32 bytes/],
    ['udp://127.0.0.1:0', { group: 'w' }, /receivers do not say they share/],
    ['kcp://239.1.2.9:5000', { group: 'w', role: 'subscriber' }, /multicast group takes/],
  ] as const) {
    await t.throwsAsync(Hub.open(url as string, options as object), { code: 'ERR_BAD_OPTION', message }, url)
  }
})
