// What only tcp:// and uds:// do, through the public API, across real processes: a
// listener broadcasting to a slow client and fast ones, allowUids, two hosts. What every connecting transport
// does is in connections.spec.ts; raw-socket abuse (garbage, silence, a thousand
// clients) is tested in crates/zerohop-stream/tests/listener.rs.
import test from 'ava'
import { Hub } from 'zerohop'
import { child, statusWhere, twoHosts, uniqueName } from './helpers.ts'

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
