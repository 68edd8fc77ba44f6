// Smart selection, `auto://host:port`, through the public API: the address classes, the
// options it takes, shared memory on the listener's host, KCP, QUIC and UDP between
// hosts (a host here is what shares the listener's shared memory: another segment
// directory is another host, as is a network namespace with one of its own), the
// listener reading every transport at once, and two hosts joined by a veth pair for
// private, link-local and public addresses.
import { mkdtempSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { type AddressClass, Hub, Rpc, addressClass } from 'zerohop'
import { child, twoHosts } from './helpers.ts'
// @ts-expect-error: a plain ES module shared with the fixtures
import { payload } from './fixtures/payload.mjs'

const makePayload = payload as (tag: number, seq: number, size: number) => Uint8Array

const children: ReturnType<typeof child>[] = []
test.afterEach.always(() => {
  for (const c of children.splice(0)) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
})

/** A segment directory of its own: what another host would have. */
const anotherHost = () => mkdtempSync(join(tmpdir(), 'zerohop-host-'))

/** Runs `open` as a hub of another host would (this process's segments out of its sight). */
async function fromAnotherHost<T>(open: () => Promise<T>): Promise<T> {
  const before = process.env.ZEROHOP_SHM_DIR
  process.env.ZEROHOP_SHM_DIR = anotherHost()
  try {
    return await open()
  } finally {
    if (before === undefined) delete process.env.ZEROHOP_SHM_DIR
    else process.env.ZEROHOP_SHM_DIR = before
  }
}

/** The tag and sequence number a test payload starts with. */
function tagSeq(b: Uint8Array): [number, number] {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  return [dv.getUint32(0, true), dv.getUint32(4, true)]
}

test('address classes: loopback, private, link-local, unique-local, unspecified, public', (t) => {
  const cases: [string, AddressClass][] = [
    ['127.0.0.1', 'loopback'],
    ['127.9.9.9', 'loopback'],
    ['::1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.100', 'private'],
    ['100.64.0.1', 'private'],
    ['169.254.10.20', 'link-local'],
    ['fe80::1', 'link-local'],
    ['fc00::1', 'unique-local'],
    ['fd12:3456::9', 'unique-local'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['::ffff:10.0.0.1', 'private'],
    ['172.32.0.1', 'public'],
    ['172.15.0.1', 'public'],
    ['100.128.0.1', 'public'],
    ['8.8.8.8', 'public'],
    ['198.51.100.7', 'public'],
    ['2001:db8::1', 'public'],
  ]
  for (const [ip, want] of cases) t.is(addressClass(ip), want, ip)
  t.throws(() => addressClass('example.com'), { code: 'ERR_BAD_URL' })
})

test('options and URL parameters: only the common ones, listen, reliable and tls; the rest named with the nearest', async (t) => {
  await t.throwsAsync(Hub.open('auto://127.0.0.1:1', { mode: 'fast' } as object), { code: 'ERR_BAD_OPTION', message: /'mode'/ })
  await t.throwsAsync(Hub.open('auto://127.0.0.1:1', { reliabel: false } as object), { code: 'ERR_BAD_OPTION', message: /did you mean 'reliable'/ })
  await t.throwsAsync(Hub.open('auto://127.0.0.1:1?batch=3'), { code: 'ERR_BAD_URL', message: /'batch'/ })
  await t.throwsAsync(Hub.open('auto://127.0.0.1:1?reliable=maybe'), { code: 'ERR_BAD_URL', message: /reliable/ })
  await t.throwsAsync(Hub.open('auto://127.0.0.1:1', { reliable: 'no' } as object), { code: 'ERR_BAD_OPTION' })
  await t.throwsAsync(Hub.open('auto://127.0.0.1:1', { reliable: false, tls: {} }), { code: 'ERR_BAD_OPTION', message: /tls/ })
  await t.throwsAsync(Hub.open('auto://no-port'), { code: 'ERR_BAD_URL', message: /auto:\/\/no-port/ })
  // Requests take a transport's URL.
  await t.throwsAsync(async () => Rpc.serve('auto://127.0.0.1:0', (r) => r), { code: 'ERR_UNSUPPORTED_TRANSPORT', message: /hubs only/ })
  // A common option, given either way, reaches the transport picked.
  const lis = await Hub.open('auto://127.0.0.1:0?capacity=256', { listen: true, slotSize: 2048 })
  t.is(lis.metrics().capacity, 256)
  t.true(lis.metrics().slotSize >= 2048)
  await lis.close()
})

test('on the listener’s host: shared memory, both ways; the listener is kcp:// for other hosts', async (t) => {
  const lis = await Hub.open('auto://127.0.0.1:0', { listen: true })
  const url = `auto://${lis.localAddress}` as const
  const a = await Hub.open(url)
  const b = await Hub.open(url)
  for (const c of [a, b]) {
    const { transport, selection, selectedAutomatically } = c.metrics()
    t.is(transport, 'shm')
    t.true(selectedAutomatically)
    t.is(selection.chosen, 'shm')
    t.regex(selection.reason, /the listener is on this host/)
    t.deepEqual(selection.fallbacks, [])
  }
  const ls = lis.metrics().selection
  t.is(lis.metrics().transport, 'kcp')
  t.is(ls.chosen, 'kcp')
  t.regex(ls.reason, /127\.0\.0\.1 is a loopback address: kcp:\/\/ on 127\.0\.0\.1:\d+, and shm:\/\/auto-127\.0\.0\.1-\d+-[0-9a-f]+ for hubs on this host/)
  a.publish(makePayload(1, 0, 64))
  t.deepEqual(tagSeq(await lis.recv({ timeoutMs: 5000 })), [1, 0])
  lis.publish(makePayload(9, 0, 64))
  t.deepEqual(tagSeq(await a.recv({ timeoutMs: 5000 })), [9, 0])
  // Hubs of one host share one segment: b hears a, as on shm://.
  t.deepEqual(tagSeq(await b.recv({ timeoutMs: 5000 })), [1, 0])
  t.deepEqual(tagSeq(await b.recv({ timeoutMs: 5000 })), [9, 0])
  await Promise.all([a.close(), b.close()])
  await lis.close()
})

test.serial('the listener reads every transport at once: KCP from another host beside shared memory from its own', async (t) => {
  const lis = await Hub.open('auto://127.0.0.1:0', { listen: true, capacity: 1024 })
  const url = `auto://${lis.localAddress}` as const
  const remote = await fromAnotherHost(() => Hub.open(url))
  const local = await Hub.open(url)
  t.is(remote.metrics().transport, 'kcp')
  t.regex(remote.metrics().selection.reason, /127\.0\.0\.1 is a loopback address: kcp:\/\/127\.0\.0\.1:\d+/)
  t.is(local.metrics().transport, 'shm')
  const n = 3000
  const next = new Map<number, number>()
  let got = 0
  let outOfOrder = 0
  const take = (b: Uint8Array) => {
    const [tag, seq] = tagSeq(b)
    if (seq !== (next.get(tag) ?? 0)) outOfOrder++
    next.set(tag, seq + 1)
    got++
  }
  // Every way of receiving, in turn, while both publish (each a turn at a time).
  let sent = 0
  for (let round = 0; got < 2 * n; round++) {
    for (let i = 0; i < 50 && sent < n; i++, sent++) {
      remote.publish(makePayload(2, sent, 100))
      local.publish(makePayload(3, sent, 100))
    }
    switch (round % 4) {
      case 0:
        for (const m of await lis.recvBatch(64, { timeoutMs: 5000 })) take(m)
        break
      case 1:
        lis.drain(take)
        break
      case 2: {
        const m = lis.borrow()
        if (m) {
          take(m.bytes)
          m.release()
        }
        break
      }
      default:
        take(await lis.recv({ timeoutMs: 5000 }))
    }
  }
  t.is(got, 2 * n)
  t.is(outOfOrder, 0)
  t.deepEqual([...next.entries()].sort(), [
    [2, n],
    [3, n],
  ])
  t.is(lis.metrics().received, 2 * n)
  await Promise.all([remote.close(), local.close()])
  await lis.close()
})

test.serial('between hosts: reliable: false is plain UDP; tls (or a public address) is QUIC', async (t) => {
  for (const [listenOptions, connectOptions, transport, reason] of [
    [{ reliable: false }, { reliable: false }, 'udp', /reliable: false: udp:\/\//],
    [{ tls: {} }, { tls: { dangerouslyAcceptAnyServer: true } }, 'quic', /tls asks for encryption: quic:\/\//],
  ] as const) {
    const lis = await Hub.open('auto://127.0.0.1:0', { listen: true, ...listenOptions })
    t.is(lis.metrics().transport, transport)
    const c = await fromAnotherHost(() => Hub.open(`auto://${lis.localAddress}`, connectOptions))
    t.is(c.metrics().transport, transport)
    t.regex(c.metrics().selection.reason, reason)
    c.publish(makePayload(4, 0, 64))
    t.deepEqual(tagSeq(await lis.recv({ timeoutMs: 5000 })), [4, 0])
    // (Over UDP the listener sends to the hub once its hello said where it receives.)
    await new Promise((r) => setTimeout(r, 100))
    lis.publish(makePayload(5, 0, 64))
    t.deepEqual(tagSeq(await c.recv({ timeoutMs: 5000 })), [5, 0])
    await c.close()
    await lis.close()
  }
})

test.serial('a listener that cannot keep the guarantee asked for is refused; what asks for less takes more', async (t) => {
  const udp = await Hub.open('auto://127.0.0.1:0', { listen: true, reliable: false })
  await t.throwsAsync(
    fromAnotherHost(() => Hub.open(`auto://${udp.localAddress}`)),
    { code: 'ERR_UNSUPPORTED_TRANSPORT', message: /plain udp:\/\/.*reliable delivery/ },
  )
  await udp.close()
  const kcp = await Hub.open('auto://127.0.0.1:0', { listen: true })
  await t.throwsAsync(
    fromAnotherHost(() => Hub.open(`auto://${kcp.localAddress}`, { tls: { dangerouslyAcceptAnyServer: true } })),
    { code: 'ERR_UNSUPPORTED_TRANSPORT', message: /unencrypted; this hub asks for tls/ },
  )
  const lossy = await fromAnotherHost(() => Hub.open(`auto://${kcp.localAddress}`, { reliable: false }))
  t.is(lossy.metrics().transport, 'kcp')
  t.deepEqual(lossy.metrics().selection.fallbacks, [{ transport: 'udp', reason: `reliable: false, but the listener at ${kcp.localAddress} serves kcp://` }])
  await lossy.close()
  await kcp.close()
})

test('what answers the hello must be an auto:// listener (ERR_PROTOCOL at once)', async (t) => {
  const server = createServer((s) => s.end('SSH-2.0-OpenSSH\n'))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as { port: number }
  await t.throwsAsync(Hub.open(`auto://127.0.0.1:${port}`), { code: 'ERR_PROTOCOL', message: /not an auto:\/\/ listener/ })
  server.close()
})

test.serial('with shared memory off on the host: its Unix-socket stand-in', async (t) => {
  const env = { ZEROHOP_SHM: 'off' }
  const server = child('hub-peer.mjs', [JSON.stringify({ mode: 'server', url: 'auto://127.0.0.1:0', options: { listen: true }, count: 100 })], env)
  children.push(server)
  const { address } = (await server.next('ready')) as { address: string }
  const client = child('hub-peer.mjs', [JSON.stringify({ mode: 'client', url: `auto://${address}`, count: 100, tag: 6 })], env)
  children.push(client)
  const done = (await server.next('done')) as { received: number; outOfOrder: number; corrupt: number; metrics: { selection: { fallbacks: { transport: string }[] } } }
  t.is(done.received, 100)
  t.is(done.outOfOrder + done.corrupt, 0)
  t.deepEqual(
    done.metrics.selection.fallbacks.map((f) => f.transport),
    ['shm'],
  )
  const c = (await client.next('done')) as { metrics: { transport: string; selection: { reason: string } } }
  t.is(c.metrics.transport, 'uds')
  t.regex(c.metrics.selection.reason, /the listener is on this host/)
  server.send('0')
  t.is(await client.exited, 0, client.stderr())
  t.is(await server.exited, 0, server.stderr())
})

// Two hosts: network namespaces joined by a veth pair, each with a segment directory
// of its own (namespaces share the kernel's shared memory: without that, smart
// selection would rightly take it).
for (const [net, listenHost, transport, reason, fallbacks] of [
  ['10.212.0', '10.212.0.1', 'kcp', /10\.212\.0\.1 is a private address: kcp:\/\//, []],
  ['169.254.212', '169.254.212.1', 'kcp', /169\.254\.212\.1 is a link-local address: kcp:\/\//, []],
  ['198.51.100', '198.51.100.1', 'quic', /198\.51\.100\.1 is a public address: quic:\/\//, []],
  // A listener on every interface serves KCP (a LAN server's usual bind): a hub that dials
  // its public address wanted QUIC, and says so.
  ['203.0.113', '0.0.0.0', 'kcp', /the listener serves kcp:\/\//, ['quic']],
] as const) {
  test.serial(`two hosts, listener on ${listenHost} (${net}.1 ← ${net}.2): ${transport}`, async (t) => {
    const hosts = twoHosts(t, net)
    if (hosts === undefined) return
    const [a, b] = hosts
    const listenUrl = `auto://${listenHost}:0`
    const server = child(
      'hub-peer.mjs',
      [JSON.stringify({ mode: 'server', url: listenUrl, options: { listen: true }, count: 300 })],
      { ZEROHOP_SHM_DIR: anotherHost() },
      [],
      ['ip', 'netns', 'exec', a],
    )
    children.push(server)
    const { address } = (await server.next('ready')) as { address: string }
    const port = address.split(':').at(-1)
    // A public address's QUIC listener has a development certificate (no `tls` given).
    const options = transport === 'quic' ? { tls: { dangerouslyAcceptAnyServer: true } } : {}
    const client = child(
      'hub-peer.mjs',
      [JSON.stringify({ mode: 'client', url: `auto://${net}.1:${port}`, options, count: 300, tag: 8, expect: 200, sizes: [64, 5000] })],
      { ZEROHOP_SHM_DIR: anotherHost() },
      [],
      ['ip', 'netns', 'exec', b],
    )
    children.push(client)
    const s = (await server.next('done')) as { received: number; outOfOrder: number; corrupt: number; metrics: { transport: string } }
    t.is(s.received, 300)
    t.is(s.outOfOrder + s.corrupt, 0)
    t.is(s.metrics.transport, transport)
    server.send('200')
    const c = (await client.next('done')) as {
      received: number
      outOfOrder: number
      corrupt: number
      metrics: { transport: string; selection: { chosen: string; reason: string; fallbacks: { transport: string }[] } }
    }
    t.is(c.received, 200)
    t.is(c.outOfOrder + c.corrupt, 0)
    t.is(c.metrics.transport, transport)
    t.is(c.metrics.selection.chosen, transport)
    t.regex(c.metrics.selection.reason, reason)
    t.deepEqual(
      c.metrics.selection.fallbacks.map((f) => f.transport),
      [...fallbacks],
    )
    t.is(await client.exited, 0, client.stderr())
    t.is(await server.exited, 0, server.stderr())
  })
}
