// udp:// hubs through the public API, across real processes: unicast both ways,
// fan-in, multicast, 1 B to 1 MB messages on both receive backends, hostile
// datagrams, and two hosts joined by a veth pair. Serial: each test runs several busy
// processes on a two-core machine.
import test from 'ava'
import { createSocket } from 'node:dgram'
import { createRequire } from 'node:module'
import { Hub } from 'zerohop'
import { child, inNamespace, twoHosts } from './helpers.ts'

type Done = {
  received: number
  bytes: number
  corrupt: number
  outOfOrder: number
  senders: [number, number][]
  sizes?: number[]
  metrics: { udp: { backend: string; malformed: number; lost: number; reassemblyFailures: number } }
}

const peer = (cfg: object, wrapper: string[] = []) => child('udp-peer.mjs', [JSON.stringify(cfg)], {}, [], wrapper)
const bytes = (s: string) => new TextEncoder().encode(s)

/** Whether io_uring can be set up here (the kernel allows it, no seccomp refusal). */
async function uringAvailable(): Promise<string | undefined> {
  try {
    const h = await Hub.open('udp://127.0.0.1:0', { ioUring: 'force' })
    await h.close()
    return undefined
  } catch (e) {
    return (e as Error).message
  }
}

test.serial('unicast both ways: 2000 messages to an echo process come back intact and in order', async (t) => {
  await using hub = await Hub.open('udp://127.0.0.1:0')
  const echo = peer({ mode: 'echo', url: 'udp://127.0.0.1:0', options: { peers: [hub.localAddress] }, count: 2000 })
  const { address } = (await echo.next('ready')) as { address: string }
  hub.setPeers([address])
  let got = 0
  for (let i = 0; i < 2000; i++) {
    hub.publish(bytes(`m${i}`))
    if (i % 50 === 49) {
      // Keep at most 50 in flight: UDP may drop what overflows a buffer, and this test
      // is about delivery, not flow control.
      while (got <= i) t.is(new TextDecoder().decode(await hub.recv({ timeoutMs: 5000 })), `m${got++}`)
    }
  }
  const m = hub.metrics()
  t.is(m.transport, 'udp')
  t.is(m.published, 2000)
  t.is(m.received, 2000)
  t.is(m.udp!.lost, 0)
  t.true(m.udp!.datagramsSent < 2000, 'messages published in one tick are packed into shared datagrams')
  t.is(await echo.exited, 0, echo.stderr())
})

for (const ioUring of ['force', 'off'] as const) {
  test.serial(`1 B to 1 MB messages, fragmented and reassembled, receive backend ${ioUring === 'force' ? 'io_uring' : 'recvmmsg'}`, async (t) => {
    if (ioUring === 'force') {
      const why = await uringAvailable()
      if (why) {
        t.log(`SKIPPED: io_uring is not available here (${why})`)
        t.pass()
        return
      }
    }
    const sizes = [1, 7, 8, 100, 1432, 1433, 5000, 65536, 300_000, 1 << 20]
    const options = { slotSize: 1 << 20, ioUring }
    const rx = peer({ mode: 'recv', url: 'udp://127.0.0.1:0', options, count: sizes.length * 3, sizes, idleMs: 5000 })
    const { address } = (await rx.next('ready')) as { address: string }
    const tx = peer({ mode: 'send', url: 'udp://127.0.0.1:0', options: { ...options, peers: [address] }, count: sizes.length * 3, sizes })
    await tx.next('done')
    const r = (await rx.next('done')) as Done
    t.is(r.received, sizes.length * 3)
    t.is(r.corrupt, 0)
    t.is(r.outOfOrder, 0)
    t.deepEqual(r.sizes, [...sizes, ...sizes, ...sizes])
    t.is(r.metrics.udp.backend, ioUring === 'force' ? 'io_uring' : 'recvmmsg')
    t.is(r.metrics.udp.reassemblyFailures, 0)
    t.is(await rx.exited, 0, rx.stderr())
    t.is(await tx.exited, 0, tx.stderr())
  })
}

for (const receiveThreads of [1, 2]) {
  test.serial(`fan-in: 3 sender processes → 1 receiver (${receiveThreads} SO_REUSEPORT socket${receiveThreads > 1 ? 's' : ''}), each sender's stream whole and in order`, async (t) => {
    const N = 5000
    await using hub = await Hub.open('udp://127.0.0.1:0', { receiveThreads })
    const senders = [1, 2, 3].map((tag) =>
      peer({ mode: 'send', url: 'udp://127.0.0.1:0', options: { peers: [hub.localAddress] }, count: N, tag, sizes: [16, 200] }),
    )
    const next = new Map<number, number>()
    let bad = 0
    for (let i = 0; i < 3 * N; i++) {
      const m = await hub.recv({ timeoutMs: 10_000 }).catch((e: Error) => {
        // (What went missing where: the receiver's counts, and each sender's own.)
        const u = hub.metrics().udp!
        const said = senders.map((s) => s.stderr()).join(' ')
        throw new Error(`${e.message} after ${i} of ${3 * N}: lost ${u.lost}, kernelDropped ${u.kernelDropped}, next ${JSON.stringify([...next])} ${said}`)
      })
      const dv = new DataView(m.buffer, m.byteOffset, m.byteLength)
      const [tag, seq] = [dv.getUint32(0, true), dv.getUint32(4, true)]
      if (seq !== (next.get(tag) ?? 0)) bad++
      next.set(tag, seq + 1)
    }
    t.is(bad, 0)
    t.deepEqual([...next.entries()].sort(), [[1, N], [2, N], [3, N]])
    const m = hub.metrics()
    t.is(m.udp!.receiveSockets, receiveThreads)
    t.is(m.udp!.lost, 0)
    for (const s of senders) t.is(await s.exited, 0, s.stderr())
  })
}

test.serial('a reader that finds nothing first sends what its hub published in the turn (an echo that spins answers at once)', async (t) => {
  await using b = await Hub.open('udp://127.0.0.1:0')
  await using a = await Hub.open('udp://127.0.0.1:0', { peers: [b.localAddress!] })
  // The first goes at once; the next two wait in a datagram for the end of the turn…
  for (let i = 0; i < 3; i++) a.publish(new Uint8Array(8))
  t.is(a.metrics().udp!.datagramsSent, 1)
  // …unless this hub looks for a message and finds none: then they go first.
  t.is(a.tryRecv(), undefined)
  t.is(a.metrics().udp!.datagramsSent, 2)
  let got = 0
  while (got < 3) got += (await b.recvBatch(3, { timeoutMs: 5000 })).length
  t.is(got, 3)
})

test.serial('64 KB datagrams go out with io_uring zero-copy send and arrive whole', async (t) => {
  const why = await uringAvailable()
  if (why) {
    t.log(`SKIPPED: io_uring is not available here (${why})`)
    t.pass()
    return
  }
  const options = { slotSize: 1 << 20, maxDatagram: 65507, ioUring: 'force' as const }
  await using rx = await Hub.open('udp://127.0.0.1:0', options)
  await using tx = await Hub.open('udp://127.0.0.1:0', { ...options, peers: [rx.localAddress!] })
  const big = new Uint8Array(1 << 20).map((_, i) => (i * 31) & 255)
  tx.publish(big)
  tx.flush()
  t.deepEqual(await rx.recv({ timeoutMs: 5000 }), big)
  const m = tx.metrics().udp!
  t.true(m.zerocopyDatagrams >= 16, `zero-copy datagrams: ${m.zerocopyDatagrams}`)
  t.is(m.sendDropped, 0)
})

test.serial('IPv6: udp://[::1] both ways', async (t) => {
  let a: Hub
  try {
    a = await Hub.open('udp://[::1]:0')
  } catch (e) {
    t.log(`SKIPPED: no IPv6 loopback here (${(e as Error).message})`)
    t.pass()
    return
  }
  await using b = await Hub.open('udp://[::1]:0', { peers: [a.localAddress!] })
  t.regex(b.localAddress!, /^\[::1\]:\d+$/)
  a.setPeers([b.localAddress!])
  b.publish(bytes('over v6'))
  const got = await a.recvMessage({ timeoutMs: 5000 })
  t.is(new TextDecoder().decode(got.value), 'over v6')
  t.is(got.from, b.localAddress, 'the sender, written as localAddress writes it')
  a.publish(bytes('back'))
  t.is(new TextDecoder().decode(await b.recv({ timeoutMs: 5000 })), 'back')
  await a.close()
})

test.serial('recvMessage and borrow() say who sent a message and, when asked, when it arrived', async (t) => {
  await using rx = await Hub.open('udp://127.0.0.1:0', { receiveTimestamps: true })
  const senders = await Promise.all([0, 1].map(() => Hub.open('udp://127.0.0.1:0', { peers: [rx.localAddress!] })))
  const before = BigInt(Date.now() - 1000) * 1_000_000n
  senders[0]!.publish(bytes('zero'))
  senders[0]!.flush()
  const first = await rx.recvMessage({ timeoutMs: 5000 })
  t.is(new TextDecoder().decode(first.value), 'zero')
  t.is(first.from, senders[0]!.localAddress)
  t.true(first.timestampNs! > before && first.timestampNs! < before + 60_000_000_000n, `${first.timestampNs}`)
  t.true(rx.metrics().udp!.timestamps)
  senders[1]!.publish(bytes('one'))
  senders[1]!.flush()
  let b = rx.borrow()
  for (let i = 0; b === undefined && i < 500; i++) {
    await new Promise((r) => setTimeout(r, 2))
    b = rx.borrow()
  }
  t.is(new TextDecoder().decode(b!.bytes), 'one')
  t.is(b!.from, senders[1]!.localAddress)
  t.true(b!.timestampNs! >= first.timestampNs!)
  b!.release()
  // Without receiveTimestamps: the sender, but no time.
  await using plain = await Hub.open('udp://127.0.0.1:0')
  senders[0]!.setPeers([plain.localAddress!])
  senders[0]!.publish(bytes('x'))
  senders[0]!.flush()
  const m = await plain.recvMessage({ timeoutMs: 5000 })
  t.is(m.from, senders[0]!.localAddress)
  t.is(m.timestampNs, undefined)
  for (const s of senders) await s.close()
  // Shared memory has neither.
  await using shm = await Hub.open(`shm://udp-spec-info-${process.pid}`)
  await using other = await Hub.open(`shm://udp-spec-info-${process.pid}`)
  other.publish(bytes('local'))
  t.deepEqual(shm.tryRecvMessage(), { value: bytes('local') })
})

test.serial('the raw per-message native calls refuse anything but a live link and bytes', async (t) => {
  const require = createRequire(import.meta.url)
  type Calls = {
    publish(bytes?: unknown, channel?: unknown): boolean
    publishStaged(len?: unknown, channel?: unknown): boolean
    pump(): number
    stage: ArrayBuffer | undefined
  }
  const native = require('../packages/zerohop/native/binding.js') as {
    NetHandle: { open(url: string, o?: object): { link(): unknown; close(): void } }
    netBind(link: unknown): Calls
  }
  for (const bad of [undefined, null, 42, {}, new Uint8Array(4), () => {}]) {
    t.throws(() => native.netBind(bad), { instanceOf: TypeError })
  }
  const handle = native.NetHandle.open('udp://127.0.0.1:0')
  const calls = native.netBind(handle.link())
  t.throws(() => calls.publish('text', 0), { instanceOf: TypeError })
  t.throws(() => calls.publish(new Uint16Array(2), 0), { instanceOf: TypeError })
  t.throws(() => calls.publish(new Uint8Array(1), 70000), { instanceOf: TypeError })
  t.throws(() => calls.publish(), { instanceOf: TypeError })
  // The stage: a length beyond it, or not a length, is refused; one within it is sent.
  t.true(calls.stage instanceof ArrayBuffer)
  t.throws(() => calls.publishStaged(calls.stage!.byteLength + 1, 0), { instanceOf: TypeError })
  t.throws(() => calls.publishStaged('ten', 0), { instanceOf: TypeError })
  t.throws(() => calls.publishStaged(1, 70000), { instanceOf: TypeError })
  t.notThrows(() => calls.publishStaged(calls.stage!.byteLength, 0))
  t.is(calls.pump(), 0)
  // Detached from their object, the calls still know their link.
  const { pump } = calls
  t.is(pump(), 0)
  handle.close()
  t.throws(() => calls.pump(), { message: /^ERR_CLOSED/ })
  t.throws(() => calls.publish(new Uint8Array(1), 0), { message: /^ERR_CLOSED/ })
  t.throws(() => calls.publishStaged(1, 0), { message: /^ERR_CLOSED/ })
  // The stage outlives the hub while JavaScript holds it.
  new Uint8Array(calls.stage!).fill(7)
})

test.serial('bad options, peers and URLs are typed errors', async (t) => {
  await t.throwsAsync(Hub.open('udp://127.0.0.1:0', { peers: ['nope'] }), { code: 'ERR_BAD_OPTION' })
  await t.throwsAsync(Hub.open('udp://127.0.0.1:0', { ioUring: 'maybe' as never }), { code: 'ERR_BAD_OPTION' })
  await t.throwsAsync(Hub.open('udp://127.0.0.1:0', { receiveThreads: 0 }), { code: 'ERR_BAD_OPTION' })
  await t.throwsAsync(Hub.open('udp://239.1.2.3:0'), { code: 'ERR_BAD_URL' })
  await using a = await Hub.open('udp://127.0.0.1:0')
  await t.throwsAsync(Hub.open(`udp://${a.localAddress}`), { code: 'ERR_BAD_URL' })
  t.throws(() => a.setPeers(['127.0.0.1:x']), { code: 'ERR_BAD_OPTION' })
  t.throws(() => a.publish(new Uint8Array(a.maxMessageSize + 1)), { code: 'ERR_MESSAGE_TOO_LARGE' })
  const address = a.localAddress!
  await a.close()
  t.throws(() => a.publish(bytes('x')), { code: 'ERR_CLOSED' })
  t.throws(() => a.flush(), { code: 'ERR_CLOSED' })
  // close() releases the port at once, not when the hub object is collected.
  const again = await Hub.open(`udp://${address}`)
  t.is(again.localAddress, address)
  await again.close()
})

test.serial('garbage, truncated, corrupt and flooding datagrams are counted and dropped; the hub keeps working', async (t) => {
  await using rx = await Hub.open('udp://127.0.0.1:0')
  const [host, port] = [rx.localAddress!.split(':')[0]!, Number(rx.localAddress!.split(':')[1])]
  // A real frame to mutilate: what a zerohop sender puts on the wire.
  const tap = createSocket('udp4')
  await new Promise<void>((r) => tap.bind(0, '127.0.0.1', r))
  const frame = new Promise<Buffer>((r) => tap.once('message', r))
  await using tx = await Hub.open('udp://127.0.0.1:0', { peers: [`127.0.0.1:${tap.address().port}`], flushIntervalMs: 0 })
  tx.publish(bytes('a real message'))
  const real = await frame
  const corrupt = Buffer.from(real)
  corrupt[corrupt.length - 1]! ^= 0xff
  const hostile = [
    Buffer.alloc(0),
    Buffer.from([1, 2, 3]),
    real.subarray(0, 20), // truncated header
    real.subarray(0, real.length - 3), // truncated payload
    corrupt, // bad CRC
    Buffer.from('GET / HTTP/1.1\r\n\r\n'),
  ]
  const send = (b: Buffer) => new Promise<void>((r, j) => tap.send(b, port, host, (e) => (e ? j(e) : r())))
  for (const b of hostile) await send(b)
  for (let i = 0; i < 5000; i++) {
    const junk = Buffer.alloc(1 + (i % 1400))
    for (let j = 0; j < junk.length; j++) junk[j] = (i * 13 + j * 7) & 255
    await send(junk)
  }
  // Still serving: a real sender gets through.
  tx.setPeers([rx.localAddress!])
  tx.publish(bytes('after the flood'))
  t.is(new TextDecoder().decode(await rx.recv({ timeoutMs: 5000 })), 'after the flood')
  t.is(rx.tryRecv(), undefined, 'nothing from the garbage was delivered')
  const m = rx.metrics().udp!
  t.true(m.malformed >= hostile.length - 1 + 5000 - 20, `malformed ${m.malformed}`)
  t.true(m.datagramsReceived >= m.malformed)
  tap.close()
})

test.serial('multicast: three member processes each receive everything sent to the group (in a network namespace)', async (t) => {
  const port = 20000 + (process.pid % 20000)
  const options = { multicastInterface: '127.0.0.1', slotSize: 1 << 16 }
  const { code, done } = await inNamespace(t, 'multicast.mjs', [`udp://239.1.2.3:${port}`, '200', JSON.stringify(options)])
  if (done === undefined) return t.pass()
  const results = done.results as Done[]
  t.is(results.length, 3)
  for (const r of results) {
    t.is(r.received, 200)
    t.is(r.corrupt, 0)
    t.is(r.outOfOrder, 0)
  }
  t.is(code, 0)
})

test.serial('two hosts: network namespaces joined by a veth pair, 10.201.0.1 ↔ 10.201.0.2', async (t) => {
  const hosts = twoHosts(t, '10.201.0')
  if (hosts === undefined) return
  const [a, b] = hosts
  const sizes = [1, 64, 1400, 9000, 100_000]
  const rx = peer({ mode: 'recv', url: 'udp://10.201.0.1:0', options: { slotSize: 1 << 17 }, count: 50, sizes, idleMs: 5000 }, ['ip', 'netns', 'exec', a])
  const { address } = (await rx.next('ready')) as { address: string }
  t.regex(address, /^10\.201\.0\.1:\d+$/)
  const tx = peer({ mode: 'send', url: 'udp://10.201.0.2:0', options: { slotSize: 1 << 17, peers: [address] }, count: 50, sizes }, ['ip', 'netns', 'exec', b])
  await tx.next('done')
  const r = (await rx.next('done')) as Done
  t.is(r.received, 50)
  t.is(r.corrupt, 0)
  t.is(r.outOfOrder, 0)
  t.is(await rx.exited, 0, rx.stderr())
  t.is(await tx.exited, 0, tx.stderr())
})

test('a reliable channel delivers every message once through loss, beside a lossy one that counts what it lost', async (t) => {
  // 10 % loss each way on both hubs (acknowledgements and resends meet it too).
  const faults = { chaos: 'loss:0.1,dup:0.02,reorder:0.05', seed: 11 }
  const rx = await Hub.open('udp://127.0.0.1:0', faults)
  const tx = await Hub.open('udp://127.0.0.1:0', { ...faults, peers: [rx.localAddress!], reliableChannels: [1], maxInFlight: 64, flushIntervalMs: 0 })
  const n = 400
  const sending = (async () => {
    for (let i = 0; i < n; i++) {
      const m = new Uint8Array(4)
      new DataView(m.buffer).setUint32(0, i, true)
      tx.publish(m) // channel 0: lossy
      await tx.send(m, { channel: 1, timeoutMs: 10_000 }) // waits while the flight is full
    }
  })()
  const reliable: number[] = []
  let lossy = 0
  while (reliable.length < n) {
    const m = await rx.recvMessage({ timeoutMs: 10_000 })
    const i = new DataView(m.value.buffer, m.value.byteOffset).getUint32(0, true)
    if (m.channel === 1) reliable.push(i)
    else lossy++
  }
  await sending
  t.deepEqual(
    [...reliable].sort((a, b) => a - b),
    [...Array(n).keys()],
    'every message of the reliable channel, once',
  )
  const sent = tx.metrics().udp!
  t.true(sent.resent > 0 && sent.acksReceived > 0, JSON.stringify(sent))
  t.is(sent.givenUp, 0)
  t.true(lossy < n, `the lossy channel lost some (${lossy} of ${n} arrived)`)
  t.true(rx.metrics().udp!.lost > 0)
  // Only the channels listed are reliable, and the policies a full flight may meet are three.
  await t.throwsAsync(Hub.open('udp://127.0.0.1:0', { backpressure: 'block', flowControl: false }), { code: 'ERR_BAD_OPTION' })
  const blocking = await Hub.open('udp://127.0.0.1:0', { backpressure: 'block', reliableChannels: [1] })
  await blocking.close()
  await tx.close({ lingerMs: 0 })
  await rx.close({ lingerMs: 0 })
})

test("compression: 'lz4' shrinks what shrinks, and a peer without it reads it all the same", async (t) => {
  const rx = await Hub.open<unknown>('udp://127.0.0.1:0', { codec: 'json' })
  const tx = await Hub.open<unknown>('udp://127.0.0.1:0', { codec: 'json', peers: [rx.localAddress!], compression: 'lz4', flushIntervalMs: 0 })
  const order = (i: number) => ({ id: i, sym: 'BTC-USD', side: 'buy', qty: 1.5, venue: 'primary', account: 'desk-7', tags: ['a', 'a', 'a', 'a'] })
  for (let i = 0; i < 50; i++) {
    tx.publish(order(i))
    t.deepEqual(await rx.recv({ timeoutMs: 5000 }), order(i))
  }
  const saved = tx.metrics().udp!.bytesSaved
  t.true(saved > 0, `saved ${saved} bytes`)
  // Random bytes do not shrink: they go as they are, and nothing is saved on them.
  const raw = await Hub.open('udp://127.0.0.1:0', { peers: [rx.localAddress!], compression: 'lz4', flushIntervalMs: 0 })
  const noise = Uint8Array.from({ length: 1000 }, () => Math.floor(Math.random() * 256))
  const sink = await Hub.open('udp://127.0.0.1:0')
  raw.setPeers([sink.localAddress!])
  raw.publish(noise)
  t.deepEqual(await sink.recv({ timeoutMs: 5000 }), noise)
  t.is(raw.metrics().udp!.bytesSaved, 0)
  await Promise.all([rx, tx, raw, sink].map((h) => h.close({ lingerMs: 0 })))
})

test.serial('flow control: a sender far faster than a slow reader in another process loses nothing; without it the kernel drops, and the receiver says how many', async (t) => {
  const N = 40_000
  const sizes = [1000, 64, 3000]
  const run = async (flowControl: boolean) => {
    const rx = peer({ mode: 'recv', url: 'udp://127.0.0.1:0', options: { flowControl }, count: N, sizes, slowMs: 5, idleMs: flowControl ? 10_000 : 1000 })
    const { address } = (await rx.next('ready')) as { address: string }
    const blast = flowControl ? 'send' : 'publish'
    const tx = peer({ mode: 'send', url: 'udp://127.0.0.1:0', options: { flowControl, peers: [address] }, count: N, sizes, blast })
    const sent = (await tx.next('done')) as { published: number; metrics: { udp: { flowRefused: number; flowSilentPeers: number } } }
    const got = (await rx.next('done')) as Done & { metrics: { udp: { kernelDropped: number } } }
    t.is(await rx.exited, 0, rx.stderr())
    t.is(await tx.exited, 0, tx.stderr())
    return { sent, got }
  }
  const paced = await run(true)
  t.is(paced.got.received, N, 'every message arrived')
  t.is(paced.got.corrupt + paced.got.outOfOrder, 0)
  t.is(paced.got.metrics.udp.lost, 0)
  t.is(paced.got.metrics.udp.kernelDropped, 0)
  t.true(paced.sent.metrics.udp.flowRefused > 0, 'the sender was held back')
  t.is(paced.sent.metrics.udp.flowSilentPeers, 0)
  const flood = await run(false)
  t.true(flood.got.received < N, `without flow control some were lost (${flood.got.received} of ${N} arrived)`)
  t.true(flood.got.metrics.udp.kernelDropped > 0, 'the kernel said it dropped datagrams')
  t.true(flood.got.metrics.udp.lost > 0)
})

test.serial('flow control: a peer that never reports holds the sender back for a second, then no more', async (t) => {
  // A plain socket that reads nothing and says nothing: not a zerohop receiver.
  const mute = createSocket('udp4')
  await new Promise<void>((r) => mute.bind(0, '127.0.0.1', r))
  await using tx = await Hub.open('udp://127.0.0.1:0', { peers: [`127.0.0.1:${mute.address().port}`], flushIntervalMs: 0 })
  const m = new Uint8Array(1000)
  let accepted = 0
  while (tx.publish(m)) accepted++
  const udp = () => tx.metrics().udp!
  t.true(accepted > 100 && accepted < 1000, `the first window went (${accepted} messages), then no more`)
  t.is(udp().flowRefused, 1)
  t.is(udp().flowSilentPeers, 0)
  const waited = performance.now()
  await tx.send(m, { timeoutMs: 5000 })
  t.true(performance.now() - waited >= 900, 'send() waited for the silence to last a second')
  t.is(udp().flowSilentPeers, 1)
  t.true(tx.publish(m), 'a silent peer holds nothing back')
  mute.close()
})

test.serial('peers with different datagram sizes talk: each sends what its setting or its route allows, and takes any size', async (t) => {
  const messages = [1, 900, 5000, 100_000].map((n) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 255))
  const options = { maxMessageSize: 200_000, flushIntervalMs: 0 }
  await using small = await Hub.open('udp://127.0.0.1:0', { ...options, maxDatagram: 1200 })
  await using auto = await Hub.open('udp://127.0.0.1:0', options)
  small.setPeers([auto.localAddress!])
  auto.setPeers([small.localAddress!])
  t.is(small.metrics().udp!.maxDatagram, 1200)
  t.is(auto.metrics().udp!.maxDatagram, 65507, "loopback's route: the largest UDP datagram")
  for (const [from, to] of [
    [small, auto],
    [auto, small],
  ] as const) {
    for (const m of messages) from.publish(m)
    for (const m of messages) t.deepEqual(await to.recv({ timeoutMs: 5000 }), m)
    t.is(to.metrics().udp!.malformed, 0)
  }
  t.true(small.metrics().udp!.datagramsSent > auto.metrics().udp!.datagramsSent * 10, 'the small side fragments more')
  await t.throwsAsync(Hub.open('udp://127.0.0.1:0', { maxDatagram: 44 }), { code: 'ERR_BAD_OPTION' })
  await t.throwsAsync(Hub.open('udp://127.0.0.1:0', { maxDatagram: 'huge' as never }), { code: 'ERR_BAD_OPTION' })
  await t.throwsAsync(Hub.open('udp://127.0.0.1:0', { maxMessageSize: (16 << 20) + 1 }), { code: 'ERR_BAD_OPTION' })
})
