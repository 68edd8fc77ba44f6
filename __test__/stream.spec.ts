// What only tcp:// and uds:// do, through the public API, across real processes: a
// listener broadcasting to a slow client and fast ones, a thousand clients, bad peers
// (garbage, silence, oversize, truncated), allowUids, two hosts. What every connecting
// transport does is in connections.spec.ts; the same abuse from raw sockets, byte by
// byte, is in crates/zerohop-stream/tests/listener.rs.
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import test from 'ava'
import { Hub } from 'zerohop'
import { child, statusWhere, twoHosts, uniqueName } from './helpers.ts'
// @ts-expect-error: a plain ES module shared with the fixtures
import { payload } from './fixtures/payload.mjs'

const makePayload = payload as (tag: number, seq: number, size: number) => Uint8Array

/** Every child this file starts; a failed test must not leave one waiting forever. */
const children: ReturnType<typeof child>[] = []
const track = (c: ReturnType<typeof child>) => (children.push(c), c)
test.afterEach.always(() => {
  for (const c of children.splice(0)) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
})

// Each bound is well above what a fast reader in this busy process falls behind (it
// shares the event loop with the publisher, and the machine with the other test files:
// under that load a bound of 4000 messages was once a fast reader's lag too), and well
// below the N messages the slow one is sent.
const bounds = [
  ['bytes', { sendQueueBytes: 16 << 20 }],
  ['messages', { sendQueueMessages: 16_000 }],
] as const
for (const [scheme, [bound, limit]] of (['tcp', 'uds'] as const).flatMap((s) => bounds.map((b) => [s, b] as const))) {
  test.serial(`${scheme}: a slow client is disconnected as a slow consumer (a bound in ${bound}) and the fast one gets everything`, async (t) => {
    const url = scheme === 'tcp' ? 'tcp://127.0.0.1:0' : (`uds://@${uniqueName('slow')}` as const)
    await using server = await Hub.open(url as `tcp://${string}`, { listen: true, role: 'publisher', ...limit })
    const dial = (scheme === 'tcp' ? `tcp://${server.localAddress}` : url) as `tcp://${string}`
    // The slow one never reads (its ring, then its socket, then our queue for it fill up).
    await using _slow = await Hub.open(dial, { role: 'subscriber', capacity: 16 })
    await using fast = await Hub.open(dial, { role: 'subscriber' })
    const fastEvents: string[] = []
    // What it loses, if anything (its first events say it is connecting, then connected).
    fast.onStatus((e) => (e.status === 'disconnected' || e.status === 'reconnecting') && fastEvents.push(`${e.status} (${e.error?.code})`))
    for (let i = 0; i < 500 && (server.metrics().tcp ?? server.metrics().uds)!.peers < 2; i++) await new Promise((r) => setTimeout(r, 5))
    const gone = statusWhere(server as Hub<unknown>, (e) => e.status === 'disconnected' && e.error?.code === 'ERR_SLOW_CONSUMER', 20_000)
    const N = 40_000
    const msg = new Uint8Array(1024)
    let got = 0
    let inOrder = true
    const take = (m: Uint8Array) => {
      inOrder &&= new DataView(m.buffer, m.byteOffset).getUint32(0, true) === got
      got++
    }
    const reading = (async () => {
      while (got < N) {
        take(await fast.recv({ timeoutMs: 20_000 }))
        for (let m = fast.tryRecv(); m !== undefined; m = fast.tryRecv()) take(m)
      }
    })()
    for (let i = 0; i < N; i++) {
      new DataView(msg.buffer).setUint32(0, i, true)
      server.publish(msg)
      // Let the fast reader (in this process too) keep up.
      if (i % 64 === 63) await new Promise((r) => setImmediate(r))
    }
    const e = await gone
    t.truthy(e.peer)
    await reading.catch((why: unknown) => {
      const slow = (server.metrics().tcp ?? server.metrics().uds)!.slowConsumers
      throw new Error(`the fast client stopped at ${got} of ${N} (its events: ${fastEvents.join(', ') || 'none'}; slow consumers: ${slow})`, { cause: why })
    })
    t.deepEqual(fastEvents, [], 'the fast client never lost its connection')
    t.is(got, N)
    t.true(inOrder, 'in order, none missing')
    const m = (server.metrics().tcp ?? server.metrics().uds)!
    t.is(m.slowConsumers, 1)
    t.is(m.peers, 1)
  })
}

const listenUrl = (scheme: 'tcp' | 'uds', tag: string) =>
  (scheme === 'tcp' ? 'tcp://127.0.0.1:0' : `uds://${tmpdir()}/${uniqueName(tag)}.sock`) as `tcp://${string}`
const dialUrl = (hub: Hub<unknown>, url: string) => (url.startsWith('tcp:') ? `tcp://${hub.localAddress}` : url) as `tcp://${string}`
const streamMetrics = (hub: Hub<unknown>) => (hub.metrics().tcp ?? hub.metrics().uds)!

for (const scheme of ['tcp', 'uds'] as const) {
  test.serial(`${scheme}: a thousand clients in four other processes, each heard and each sent the broadcast`, async (t) => {
    const N = 1000
    const PROCS = 4
    const url = listenUrl(scheme, 'many')
    await using server = await Hub.open(url, { listen: true })
    const dial = dialUrl(server, url)
    const procs = Array.from({ length: PROCS }, (_, k) => track(child('many-clients.mjs', [dial, String(N / PROCS), String((k * N) / PROCS)])))
    for (const p of procs) await p.next('ready')
    const numbers = new Set<number>()
    const senders = new Set<string>()
    while (numbers.size < N) {
      const m = await server.recvMessage({ timeoutMs: 20_000 })
      numbers.add(new DataView(m.value.buffer, m.value.byteOffset).getUint32(0, true))
      senders.add(m.from!)
    }
    t.is(senders.size, N, 'each message from a peer of its own')
    t.deepEqual([...numbers].sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i))
    for (let i = 0; i < 1000 && streamMetrics(server).peers < N; i++) await new Promise((r) => setTimeout(r, 10))
    t.is(streamMetrics(server).peers, N)
    server.publish(new Uint8Array([42]))
    for (const p of procs) t.is((await p.next('done')).got, N / PROCS, 'every client got the broadcast')
    for (const p of procs) p.send('close')
    for (const p of procs) t.is(await p.exited, 0, p.stderr())
    for (let i = 0; i < 1000 && streamMetrics(server).peers > 0; i++) await new Promise((r) => setTimeout(r, 10))
    t.is(streamMetrics(server).peers, 0, 'every client gone')
  })

  test.serial(`${scheme}: bad peers in other processes (garbage, silence, oversize, truncated) are closed and counted; a good one goes on`, async (t) => {
    const url = listenUrl(scheme, 'bad')
    const LIMIT = 64 << 10
    await using server = await Hub.open(url, { listen: true, heartbeatMs: 100, maxMessageSize: LIMIT })
    const dial = dialUrl(server, url)
    const lost: string[] = []
    server.onStatus((e) => e.status === 'disconnected' && e.error && lost.push(e.error.code))
    await using good = await Hub.open(dial)
    const goodEvents: string[] = []
    good.onStatus((e) => e.status !== 'connected' && e.status !== 'connecting' && goodEvents.push(e.status))
    good.publish(new TextEncoder().encode('first'))
    t.is(new TextDecoder().decode(await server.recv({ timeoutMs: 10_000 })), 'first')

    const garbage = track(child('bad-peer.mjs', ['garbage', dial]))
    t.true(((await garbage.next('done')).closedAfterMs as number) < 5000, 'garbage: closed')
    const silent = track(child('bad-peer.mjs', ['silent', dial]))
    t.true(((await silent.next('done')).closedAfterMs as number) < 5000, 'silence: closed after three heartbeats')
    const oversize = track(child('bad-peer.mjs', ['oversize', dial, String(LIMIT * 4)]))
    await oversize.next('done')
    oversize.send('close')
    t.is(await oversize.exited, 0, oversize.stderr())
    // 40 messages of 60 KB, the last cut in half, then the peer dies: the whole ones
    // arrive whole, the part not.
    const PART = 60_000
    const truncate = track(child('bad-peer.mjs', ['truncate', dial, String(PART), '40']))
    t.is(await truncate.exited, 'SIGKILL', truncate.stderr())
    let [whole, intact] = [0, true]
    for (const deadline = Date.now() + 20_000; Date.now() < deadline; ) {
      const m = server.tryRecv()
      if (m !== undefined) {
        whole++
        intact &&= m.byteLength === PART && m[0] === 7 && m[PART - 1] === 7
      } else if (streamMetrics(server).truncatedRecords > 0) {
        break
      } else {
        await new Promise((r) => setTimeout(r, 5))
      }
    }
    t.true(intact, 'every message of the killed peer that arrived is whole')
    t.is(whole, 39, 'every whole message of the killed peer arrived')

    const m = streamMetrics(server)
    // Garbage, no hello within three heartbeats, and the oversize message (and each
    // replay of it after a reconnect).
    t.true(m.protocolViolations >= 3, `protocol violations: ${m.protocolViolations}`)
    t.is(m.truncatedRecords, 1, 'the message cut short')
    t.true(lost.includes('ERR_PROTOCOL'), `the oversize peer's disconnect says why: ${lost.join(', ')}`)
    // Nothing of the bad peers was delivered, and the good one was never disturbed.
    good.publish(new TextEncoder().encode('second'))
    t.is(new TextDecoder().decode(await server.recv({ timeoutMs: 10_000 })), 'second')
    t.is(server.tryRecv(), undefined)
    t.deepEqual(goodEvents, [])
    for (const c of [garbage, silent]) c.send('exit')
  })
}

for (const scheme of ['tcp', 'uds'] as const) {
  test.serial(`${scheme}: relay: true passes each client's messages to the other clients, in another process too`, async (t) => {
    const url = scheme === 'tcp' ? 'tcp://127.0.0.1:0' : `uds://@${uniqueName('relay')}`
    await using relay = await Hub.open(url as 'tcp://x', { listen: true, relay: true })
    const dial = scheme === 'tcp' ? `tcp://${relay.localAddress}` : url
    await using a = await Hub.open(dial as 'tcp://x')
    const b = child('hub-peer.mjs', [JSON.stringify({ mode: 'client', url: dial, count: 0, expect: 20 })])
    t.teardown(() => b.proc.kill())
    await b.next('sent')
    // Both clients are the relay's peers once their hellos came.
    const peers = () => (relay.metrics()[scheme] as { peers: number } | undefined)?.peers
    for (let i = 0; i < 500 && peers() !== 2; i++) await new Promise((r) => setTimeout(r, 10))
    t.is(peers(), 2)
    for (let seq = 0; seq < 20; seq++) a.publish(makePayload(1, seq, 100 + seq))
    const tally = (await b.next('done')) as { received: number; corrupt: number; outOfOrder: number }
    t.like(tally, { received: 20, corrupt: 0, outOfOrder: 0 }, 'the other client got every message, in order')
    t.is(a.tryRecv(), undefined, 'nothing came back to the client that published it')
    await t.throwsAsync(Hub.open(dial as 'tcp://x', { relay: true }), { code: 'ERR_BAD_OPTION' })
  })
}

test.serial('uds: allowUids admits our own user and refuses the option on tcp://', async (t) => {
  const url = `uds://@${uniqueName('allow')}` as const
  await using server = await Hub.open(url, { listen: true, allowUids: [process.getuid!()] })
  await using client = await Hub.open(url)
  client.publish(new Uint8Array([7]))
  t.deepEqual(await server.recv({ timeoutMs: 5000 }), new Uint8Array([7]))
  t.is(server.metrics().uds!.refused, 0)
  await t.throwsAsync(Hub.open('tcp://127.0.0.1:0', { listen: true, allowUids: [0] }), { code: 'ERR_BAD_OPTION' })
})

test.serial("uds: metrics name each connected peer and say who it is (another process's pid, uid, gid)", async (t) => {
  const url = `uds://@${uniqueName('creds')}` as const
  await using server = await Hub.open(url, { listen: true })
  // A client in another process that waits for one message from us.
  const c = track(child('hub-peer.mjs', [JSON.stringify({ mode: 'client', url, count: 1, sizes: [8], tag: 1, expect: 1 })]))
  const first = await server.recvMessage({ timeoutMs: 10_000 })
  const peers = server.metrics().uds!.connectedPeers
  t.is(peers.length, 1)
  t.like(peers[0], { peer: first.from!, pid: c.proc.pid!, uid: process.getuid!(), gid: process.getgid!(), queuedMessages: 0, queuedBytes: 0 })
  t.is(typeof peers[0]!.kernelUnsentBytes, 'number')
  t.deepEqual(first.peer, { pid: c.proc.pid!, uid: process.getuid!(), gid: process.getgid!() })
  server.publish(new Uint8Array(8))
  t.is(await c.exited, 0, c.stderr())
  // And the client's side names its server the same way: this process.
  await using client = await Hub.open(url)
  await statusWhere(client, (e) => e.status === 'connected')
  t.like(client.metrics().uds!.connectedPeers[0], { pid: process.pid, uid: process.getuid!() })
  await using tcp = await Hub.open('tcp://127.0.0.1:0', { listen: true })
  await using tcpClient = await Hub.open(`tcp://${tcp.localAddress}`)
  await statusWhere(tcpClient, (e) => e.status === 'connected')
  const [server1] = tcpClient.metrics().tcp!.connectedPeers
  t.is(server1!.peer, tcp.localAddress!)
  t.false('pid' in server1!, 'over TCP, the address alone')
})

test.serial('tcp: two hosts, network namespaces joined by a veth pair, 10.202.0.1 ↔ 10.202.0.2', async (t) => {
  const hosts = twoHosts(t, '10.202.0')
  if (hosts === undefined) return
  const [a, b] = hosts
  // At least 8 bytes: each message carries its sender's tag and number (see payload.mjs).
  const sizes = [8, 64, 1400, 9000, 100_000]
  const server = track(child('hub-peer.mjs', [JSON.stringify({ mode: 'server', url: 'tcp://10.202.0.1:0', options: { listen: true }, count: 50 })], {}, [], ['ip', 'netns', 'exec', a]))
  const { address } = (await server.next('ready')) as { address: string }
  t.regex(address, /^10\.202\.0\.1:\d+$/)
  const client = track(child('hub-peer.mjs', [JSON.stringify({ mode: 'client', url: `tcp://${address}`, count: 50, sizes, tag: 3 })], {}, [], ['ip', 'netns', 'exec', b]))
  const s = (await server.next('done')) as { received: number; corrupt: number; outOfOrder: number; statuses: { status: string; peer?: string }[] }
  t.is(s.received, 50)
  t.is(s.corrupt + s.outOfOrder, 0)
  t.truthy(s.statuses.find((e) => e.status === 'connected' && e.peer?.startsWith('10.202.0.2:')), 'the peer, by its address on the other host')
  server.send('0')
  t.is(await client.exited, 0, client.stderr())
  t.is(await server.exited, 0, server.stderr())
})

test.serial('tcp: a cable pulled (the veth taken down) is noticed by heartbeats on both sides, and the connection comes back with it', async (t) => {
  const hosts = twoHosts(t, '10.203.0')
  if (hosts === undefined) return
  const [a, b, , vb] = hosts
  const heartbeatMs = 250
  const server = track(child('hub-peer.mjs', [JSON.stringify({ mode: 'server', url: 'tcp://10.203.0.1:0', options: { listen: true, heartbeatMs }, count: 1, log: true })], {}, [], ['ip', 'netns', 'exec', a]))
  const { address } = (await server.next('ready')) as { address: string }
  const options = { heartbeatMs, reconnect: { initialMs: 20, maxMs: 200 } }
  const client = track(child('hub-peer.mjs', [JSON.stringify({ mode: 'client', url: `tcp://${address}`, options, count: 1, tag: 3, expect: 1, log: true })], {}, [], ['ip', 'netns', 'exec', b]))
  await server.next('done') // it has the client's message
  const status = async (c: typeof client, want: string) => {
    for (;;) if (((await c.next('status')) as { status: string }).status === want) return performance.now()
  }
  await status(client, 'connected')
  const ip = (...args: string[]) => t.true(spawnSync('ip', args, { stdio: 'pipe' }).status === 0, `ip ${args.join(' ')}`)
  const pulled = performance.now()
  ip('-n', b, 'link', 'set', vb, 'down')
  const [serverNoticed, clientNoticed] = await Promise.all([status(server, 'disconnected'), status(client, 'reconnecting')])
  t.log(`noticed after ${(serverNoticed - pulled).toFixed(0)} ms (listener), ${(clientNoticed - pulled).toFixed(0)} ms (client); heartbeats every ${heartbeatMs} ms`)
  // By the heartbeats: TCP alone would retransmit for many minutes before giving up.
  t.true(Math.max(serverNoticed, clientNoticed) - pulled < 20 * heartbeatMs)
  ip('-n', b, 'link', 'set', vb, 'up')
  await status(client, 'connected')
  // The listener kept the peer's session: a message published now reaches it.
  server.send('1')
  const done = (await client.next('done')) as { received: number; corrupt: number }
  t.is(done.received, 1)
  t.is(done.corrupt, 0)
  t.is(await client.exited, 0, client.stderr())
  t.is(await server.exited, 0, server.stderr())
})
