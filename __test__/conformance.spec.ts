// The contract every transport fulfils, checked from the public API the same way for
// each: one list of checks, run for every transport in `transports` (a pair of hubs
// that reach each other, and what the transport says of itself). A new transport adds
// its entry and passes them all; what only it does lives in its own spec file
// (shm.spec.ts, udp.spec.ts, quic.spec.ts, stream.spec.ts, kcp.spec.ts); tls.spec.ts holds what
// quic:// and tcp:// share, their certificates. The Rust side has the same contract in
// crates/zerohop/tests/conformance.rs.
import test from 'ava'
import { type BackpressurePolicy, type CodecOption, Hub, type HubOptions, type KcpMetrics, type TlsOptions, ZerohopError, struct } from 'zerohop'
import { uniqueName } from './helpers.ts'
import { type NatsServer, natsServer } from './nats-server.ts'

interface Transport {
  /** The transport's name (its URL scheme, and its key in `metrics()`). */
  name: string
  /** How its tests are named, when one transport is run two ways (tcp and tcp+tls). */
  label?: string
  /** Two hubs that reach each other: `a` receives what `b` publishes, and the other way. */
  pair<T>(a?: HubOptions<T>, b?: HubOptions<T>): Promise<[Hub<T>, Hub<T>]>
  /** A URL of this transport that opens alone (for option checks). */
  url(): string
  /** The policies it applies (the others are `ERR_BAD_OPTION`). */
  policies: BackpressurePolicy[]
  /** Whether received messages say where they came from. */
  addressed: boolean
  /** Whether received messages say the subject they came on (a broker's transport). */
  subjects?: boolean
  /**
   * At most once, as a broker's clients are: a reader that falls behind is held
   * `receiveQueueBytes` at most, and what comes past that is dropped and counted
   * (`slowConsumerDrops`), rather than its sender made to wait.
   */
  atMostOnce?: boolean
  /**
   * What `chaos` does: a reliable transport delivers everything once and in order
   * through it; an unreliable one counts what it lost; shared memory has no datagrams
   * to inject faults into and refuses it.
   */
  faults: 'reliable' | 'counted' | 'refused'
  /**
   * Options of a sending hub whose room runs out while its receiver reads slowly (a small
   * ring, a short send queue); none where there is always room (UDP drops instead).
   */
  tight?: HubOptions<Uint8Array>
  /** Whether it has `compression: 'lz4'` (the others refuse it). */
  compresses: boolean
  /**
   * Whether it queues what a connection cannot take yet, and so has priority channels
   * (`priorities`), a time to live (`ttlMs`) and a receive bound (`receiveQueueBytes`);
   * the others (shared memory's one ring, UDP that queues nothing) refuse them.
   */
  queues: boolean
}

/** Waits until `hub` has `n` connected peers (a listener's `metrics().<transport>.peers`). */
async function peers(hub: Hub<unknown>, n: number): Promise<void> {
  const count = () => {
    const m = hub.metrics()
    return (m.quic ?? m.tcp ?? m.uds ?? (m.kcp as KcpMetrics | undefined))?.peers ?? 0
  }
  for (let i = 0; i < 5000 && count() < n; i++) await new Promise((r) => setTimeout(r, 2))
}

/** What `poll` gives once it gives something, looking every 2 ms for up to 5 s. */
async function polled<T>(poll: () => T | undefined): Promise<T | undefined> {
  let v = poll()
  for (let i = 0; v === undefined && i < 2500; i++) {
    await new Promise((r) => setTimeout(r, 2))
    v = poll()
  }
  return v
}

/** tcp://, plain, or with TLS when the server's and the client's `tls` options are given. */
function tcp(label?: string, serverTls?: TlsOptions, clientTls?: TlsOptions): Transport {
  return {
    name: 'tcp',
    label,
    async pair<T>(a: HubOptions<T> = {}, b: HubOptions<T> = {}): Promise<[Hub<T>, Hub<T>]> {
      const ha = await Hub.open<T>('tcp://127.0.0.1:0', { ...a, listen: true, ...(serverTls && { tls: serverTls }) })
      const hb = await Hub.open<T>(`tcp://${ha.localAddress}`, { ...b, ...(clientTls && { tls: clientTls }) })
      await peers(ha as Hub<unknown>, 1)
      return [ha, hb]
    },
    url: () => 'tcp://127.0.0.1:0',
    policies: ['block', 'drop_new', 'fail_fast'],
    addressed: true,
    faults: 'reliable',
    compresses: true,
    queues: true,
    tight: { sendQueueMessages: 8 },
  }
}

const transports: Transport[] = [
  {
    name: 'shm',
    async pair<T>(a: HubOptions<T> = {}, b: HubOptions<T> = {}): Promise<[Hub<T>, Hub<T>]> {
      const url = `shm://${uniqueName('conf')}`
      return [await Hub.open<T>(url, a), await Hub.open<T>(url, b)]
    },
    url: () => `shm://${uniqueName('conf-opt')}`,
    policies: ['drop_old', 'drop_new', 'block', 'fail_fast'],
    addressed: false,
    faults: 'refused',
    compresses: false,
    queues: false,
    tight: { capacity: 16, backpressure: 'block' },
  },
  {
    name: 'udp',
    async pair<T>(a: HubOptions<T> = {}, b: HubOptions<T> = {}): Promise<[Hub<T>, Hub<T>]> {
      const ha = await Hub.open<T>('udp://127.0.0.1:0', a)
      const hb = await Hub.open<T>('udp://127.0.0.1:0', { ...b, peers: [ha.localAddress!] })
      ha.setPeers([hb.localAddress!])
      return [ha, hb]
    },
    url: () => 'udp://127.0.0.1:0',
    // (A full flow-control window waits or fails; nothing is ever overwritten.)
    policies: ['drop_new', 'block', 'fail_fast'],
    addressed: true,
    faults: 'counted',
    compresses: true,
    queues: false,
  },
  {
    name: 'quic',
    async pair<T>(a: HubOptions<T> = {}, b: HubOptions<T> = {}): Promise<[Hub<T>, Hub<T>]> {
      const ha = await Hub.open<T>('quic://127.0.0.1:0', { ...a, listen: true })
      const hb = await Hub.open<T>(`quic://${ha.localAddress}`, { ...b, tls: { dangerouslyAcceptAnyServer: true } })
      await peers(ha as Hub<unknown>, 1)
      return [ha, hb]
    },
    url: () => 'quic://127.0.0.1:0',
    policies: ['block', 'drop_new', 'fail_fast'],
    addressed: true,
    faults: 'reliable',
    compresses: true,
    queues: true,
    tight: { sendQueueMessages: 8 },
  },
  tcp(),
  tcp('tcp+tls', {}, { dangerouslyAcceptAnyServer: true }),
  {
    name: 'uds',
    async pair<T>(a: HubOptions<T> = {}, b: HubOptions<T> = {}): Promise<[Hub<T>, Hub<T>]> {
      const url = `uds://@${uniqueName('conf')}` as const
      const ha = await Hub.open<T>(url, { ...a, listen: true })
      const hb = await Hub.open<T>(url, b)
      await peers(ha as Hub<unknown>, 1)
      return [ha, hb]
    },
    url: () => `uds://@${uniqueName('conf-opt')}`,
    policies: ['block', 'drop_new', 'fail_fast'],
    addressed: true,
    faults: 'reliable',
    compresses: true,
    queues: true,
    tight: { sendQueueMessages: 8 },
  },
  {
    name: 'kcp',
    async pair<T>(a: HubOptions<T> = {}, b: HubOptions<T> = {}): Promise<[Hub<T>, Hub<T>]> {
      const ha = await Hub.open<T>('kcp://127.0.0.1:0', { ...a, listen: true })
      const hb = await Hub.open<T>(`kcp://${ha.localAddress}`, b)
      await peers(ha as Hub<unknown>, 1)
      return [ha, hb]
    },
    url: () => 'kcp://127.0.0.1:0',
    policies: ['block', 'drop_new', 'fail_fast'],
    addressed: true,
    faults: 'reliable',
    compresses: true,
    queues: true,
    tight: { sendQueueMessages: 8 },
  },
  {
    // Through a NATS server (started below): best effort, as core NATS is.
    name: 'nats',
    async pair<T>(a: HubOptions<T> = {}, b: HubOptions<T> = {}): Promise<[Hub<T>, Hub<T>]> {
      const url = nats!.url(uniqueName('conf'))
      return [await Hub.open<T>(url, a as object), await Hub.open<T>(url, b as object)]
    },
    url: () => nats!.url(uniqueName('conf-opt')),
    policies: ['block', 'drop_new', 'fail_fast'],
    addressed: false,
    subjects: true,
    atMostOnce: true,
    faults: 'refused',
    compresses: false,
    queues: false,
    // (No tight setting: the server takes what it is sent, whoever reads it.)
  },
]

let nats: NatsServer | undefined
test.before(async () => {
  nats = await natsServer()
})
test.after.always(async () => {
  await nats?.stop()
})

const Tick = struct({ seq: 'u64', price: 'f64' })

for (const tr of transports) {
  const name = (what: string) => `${tr.label ?? tr.name}: ${what}`

  test.serial(name('every codec round-trips both ways'), async (t) => {
    const value = { id: 7, name: 'order', tags: ['a', 'b'], nested: { ok: true, n: null } }
    const codecs: Array<[CodecOption<unknown>, unknown]> = [
      ['raw', new Uint8Array([1, 2, 3])],
      ['json', value],
      ['msgpack', { ...value, when: new Date(1700000000000), big: 2n ** 70n }],
      [Tick, { seq: 2n ** 63n, price: 1.5 }],
    ]
    for (const [codec, v] of codecs) {
      const [a, b] = await tr.pair<unknown>({ codec }, { codec })
      b.publish(v)
      t.deepEqual(await a.recv({ timeoutMs: 5000 }), v, String(codec))
      a.publish(v)
      t.deepEqual(await b.recv({ timeoutMs: 5000 }), v, String(codec))
      await a.close()
      await b.close()
    }
  })

  test.serial(name('borrow() reads a struct in place and release() moves on'), async (t) => {
    const [a, b] = await tr.pair({ codec: Tick }, { codec: Tick })
    b.publish({ seq: 5n, price: 2.5 })
    const m = await polled(() => a.borrow())
    t.is(m!.value.seq, 5n)
    t.is(m!.value.price, 2.5)
    t.true(m!.valid())
    t.throws(() => a.tryRecv(), { code: 'ERR_INVALID_STATE' }, 'one borrow at a time')
    t.true(m!.release())
    t.is(a.tryRecv(), undefined)
    await a.close()
    await b.close()
  })

  test.serial(name('borrow() and tryRecv() give messages of every size whole and in order'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    // Network rings keep up to 184 bytes in a slot and larger messages in their aside area.
    const sizes = [1, 184, 185, 1000, 5000, 70_000].filter((n) => n <= a.maxMessageSize)
    const bytes = (n: number, k: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + k) & 255)
    for (let round = 0; round < 3; round++) {
      for (const [k, n] of sizes.entries()) b.publish(bytes(n, k + round))
      for (const [k, n] of sizes.entries()) {
        const m = await polled(() => a.borrow())
        t.deepEqual(m!.bytes, bytes(n, k + round), `${n} bytes borrowed, round ${round}`)
        t.true(m!.release())
      }
      for (const [k, n] of sizes.entries()) b.publish(bytes(n, k + round))
      for (const [k, n] of sizes.entries()) {
        const v = await polled(() => a.tryRecv())
        t.deepEqual(v, bytes(n, k + round), `${n} bytes received, round ${round}`)
      }
    }
    await a.close()
    await b.close()
  })

  test.serial(name('tryRecvBatch, recvBatch and drain take what waits, in order and whole'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    const sizes = [1, 64, 185, 5000].filter((n) => n <= a.maxMessageSize)
    const bytes = (i: number) => Uint8Array.from({ length: sizes[i % sizes.length]! }, (_, k) => (i * 31 + k) & 255)
    const expect = (got: Uint8Array[], from: number, what: string) => {
      for (const [k, v] of got.entries()) t.deepEqual(v, bytes(from + k), `${what}: message ${from + k}`)
    }
    t.deepEqual(a.tryRecvBatch(), [], 'nothing waits')
    t.is(a.drain(() => t.fail('no message')), 0)
    await t.throwsAsync(a.recvBatch(4, { timeoutMs: 20 }), { code: 'ERR_TIMEOUT' })
    for (let i = 0; i < 40; i++) b.publish(bytes(i))
    // Waits for the first, then takes what is there (at most 4).
    const first = await a.recvBatch(4, { timeoutMs: 5000 })
    t.true(first.length >= 1 && first.length <= 4, `${first.length} in the first batch`)
    expect(first, 0, 'recvBatch')
    let taken = first.length
    // Then batches of at most 3, which may be one reused array: its values are read at once.
    while (taken < 20) {
      const batch = await polled(() => {
        const got = a.tryRecvBatch(3)
        return got.length > 0 ? got : undefined
      })
      t.truthy(batch, `messages after ${taken}`)
      t.true(batch!.length <= 3)
      expect(batch!, taken, 'tryRecvBatch')
      taken += batch!.length
    }
    // drain: each once, in order; its values are copied as they come (they may be views).
    const drained: Uint8Array[] = []
    while (taken + drained.length < 40) {
      const n = a.drain((v) => drained.push(v.slice()))
      if (n === 0) await new Promise((r) => setTimeout(r, 2))
    }
    t.is(drained.length, 40 - taken, 'nothing more than was sent')
    expect(drained, taken, 'drain')
    // Its callback takes what it is given, no more; an error it throws ends it.
    b.publish(bytes(40))
    b.publish(bytes(41))
    await polled(() => (a.metrics().lag >= 2 ? true : undefined))
    let inner: unknown
    const thrown = t.throws(() =>
      a.drain(() => {
        try {
          a.tryRecv()
        } catch (e) {
          inner = e
        }
        throw new Error('stop')
      }),
    )
    t.is(thrown?.message, 'stop')
    t.is((inner as ZerohopError).code, 'ERR_INVALID_STATE')
    t.deepEqual(await a.recv({ timeoutMs: 5000 }), bytes(41), 'the message its callback threw on was taken')
    t.throws(() => a.tryRecvBatch(0), { code: 'ERR_BAD_OPTION' })
    t.throws(() => a.drain(42 as never), { code: 'ERR_BAD_OPTION' })
    await a.close()
    await b.close()
  })

  test.serial(name('recvMessage says where a message came from'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    b.publish(new Uint8Array([9]))
    const m = await a.recvMessage({ timeoutMs: 5000 })
    t.deepEqual(m.value, new Uint8Array([9]))
    if (tr.name === 'uds') {
      // No address: the sender's number on this hub, and who the process is.
      t.regex(m.from ?? '', /^peer:\d+$/)
      t.deepEqual(m.peer, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() })
      t.is(m.channel, 0)
    } else if (tr.addressed) {
      t.regex(m.from ?? '', /^127\.0\.0\.1:\d+$/)
      t.is(m.channel, 0)
      if (tr.name === 'udp') t.is(m.from, b.localAddress)
    } else if (tr.subjects) {
      t.deepEqual(m, { value: new Uint8Array([9]), subject: a.url.slice(a.url.lastIndexOf('/') + 1), channel: 0 })
    } else {
      t.deepEqual(m, { value: new Uint8Array([9]) })
    }
    await a.close()
    await b.close()
  })

  test.serial(name('an answer published after recv() goes out at once, not at the end of the turn'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>({ spinUs: 0 }, { spinUs: 0 })
    // Warm up: the pair may still be meeting (a handshake, a first message).
    b.publish(new Uint8Array([0]))
    await a.recv({ timeoutMs: 5000 })
    a.publish(new Uint8Array([0]))
    await b.recv({ timeoutMs: 5000 })
    for (let i = 1; i <= 20; i++) {
      const question = a.recv({ timeoutMs: 5000 })
      b.publish(new Uint8Array([i]))
      t.deepEqual(await question, new Uint8Array([i]))
      // Still in the turn the doorbell began: the answer must be on its way already, so
      // that a reader polling on this same thread finds it without the loop turning.
      a.publish(new Uint8Array([i + 100]))
      // (Polled without yielding: on a busy machine the packet may take a moment.)
      let answer: Uint8Array | undefined
      for (const until = Date.now() + 500; answer === undefined && Date.now() < until; ) answer = b.tryRecv()
      t.deepEqual(answer, new Uint8Array([i + 100]), `answer ${i}`)
    }
    await a.close()
    await b.close()
  })

  test.serial(name('recv() times out and aborts with their codes'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    await t.throwsAsync(a.recv({ timeoutMs: 20 }), { code: 'ERR_TIMEOUT' })
    const ac = new AbortController()
    const pending = a.recv({ signal: ac.signal })
    setTimeout(() => ac.abort(new Error('stop')), 10)
    const e = await t.throwsAsync(pending, { code: 'ERR_ABORTED' })
    t.is(e?.name, 'AbortError')
    await t.throwsAsync(a.recv({ signal: AbortSignal.abort() }), { code: 'ERR_ABORTED' })
    // The hub goes on after both.
    b.publish(new Uint8Array([1]))
    t.deepEqual(await a.recv({ timeoutMs: 5000 }), new Uint8Array([1]))
    await a.close()
    await b.close()
  })

  test.serial(name('iteration yields in order and ends quietly on close'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    const seen: number[] = []
    const loop = (async () => {
      for await (const m of a) seen.push(m[0]!)
      return 'ended'
    })()
    for (let i = 0; i < 5; i++) {
      b.publish(new Uint8Array([i]))
      await new Promise((r) => setTimeout(r, 2))
    }
    for (let i = 0; i < 2500 && seen.length < 5; i++) await new Promise((r) => setTimeout(r, 2))
    await a.close()
    t.is(await loop, 'ended')
    t.deepEqual(seen, [0, 1, 2, 3, 4])
    await b.close()
  })

  test.serial(name('roles refuse what they do not open; a hub never receives its own publishes'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>({ role: 'subscriber' }, { role: 'publisher' })
    t.throws(() => a.publish(new Uint8Array(1)), { code: 'ERR_INVALID_STATE' })
    t.throws(() => b.tryRecv(), { code: 'ERR_INVALID_STATE' })
    await b.close()
    await a.close()
    const [c, d] = await tr.pair<Uint8Array>()
    c.publish(new Uint8Array([1]))
    t.deepEqual(await d.recv({ timeoutMs: 5000 }), new Uint8Array([1]))
    await t.throwsAsync(c.recv({ timeoutMs: 30 }), { code: 'ERR_TIMEOUT' }, 'no echo of its own')
    await c.close()
    await d.close()
  })

  test.serial(name('an oversize message is ERR_MESSAGE_TOO_LARGE and the hub goes on'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>({ slotSize: 1024 }, { slotSize: 1024 })
    t.throws(() => b.publish(new Uint8Array(b.maxMessageSize + 1)), { code: 'ERR_MESSAGE_TOO_LARGE' })
    t.throws(() => b.publish(new Uint8Array(1), { channel: 70_000 }), { code: 'ERR_BAD_OPTION' })
    b.publish(new Uint8Array([2]))
    t.deepEqual(await a.recv({ timeoutMs: 5000 }), new Uint8Array([2]))
    await a.close()
    await b.close()
  })

  test.serial(name('each backpressure policy applies, or is refused saying why'), async (t) => {
    for (const policy of ['drop_old', 'drop_new', 'block', 'fail_fast'] as const) {
      if (tr.policies.includes(policy)) {
        const [a, b] = await tr.pair<Uint8Array>({ backpressure: policy }, { backpressure: policy })
        b.publish(new Uint8Array([3]))
        t.deepEqual(await a.recv({ timeoutMs: 5000 }), new Uint8Array([3]), policy)
        await a.close()
        await b.close()
      } else {
        const e = await t.throwsAsync(Hub.open(tr.url(), { backpressure: policy }), { code: 'ERR_BAD_OPTION' })
        t.regex(e?.message ?? '', /does not apply/, policy)
      }
    }
  })

  test.serial(name('metrics count what went and came, with the transport and its ring'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    for (let i = 0; i < 3; i++) b.publish(new Uint8Array(5))
    for (let i = 0; i < 3; i++) await a.recv({ timeoutMs: 5000 })
    const ma = a.metrics()
    const mb = b.metrics()
    t.like(mb, { transport: tr.name, published: 3, publishedBytes: 15, dropped: 0 })
    t.like(ma, { transport: tr.name, received: 3, receivedBytes: 15, lapped: 0, lag: 0 })
    t.true(ma.capacity > 0 && ma.slotSize > 0)
    // Its reader is done; a publisher sharing the ring (shm) may not have moved past its own three.
    t.true(ma.bytesAvailable <= ma.capacity * ma.slotSize && ma.bytesAvailable >= (ma.capacity - 3) * ma.slotSize, `${ma.bytesAvailable}`)
    t.is(typeof ma.selectedAutomatically, 'boolean')
    t.like(ma.selection, { chosen: tr.name, reason: `${tr.name}:// URL`, fallbacks: [] })
    // The transport's own counters, under its name.
    t.is(ma[tr.name as 'udp' | 'quic'] !== undefined, tr.name !== 'shm')
    await a.close()
    await b.close()
  })

  test.serial(name('status is connected until closed, and the events end with closed'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    t.is(a.status, 'connected')
    const events: string[] = []
    a.onStatus((e) => {
      if (e.peer === undefined) events.push(e.status)
    })
    const iterated = (async () => {
      const seen: string[] = []
      for await (const e of a.statusEvents()) if (e.peer === undefined) seen.push(e.status)
      return seen
    })()
    await a.close()
    t.is(a.status, 'closed')
    t.deepEqual(events, ['closed'])
    t.deepEqual(await iterated, ['closed'])
    await b.close()
  })

  test.serial(name('close is idempotent, rejects what waits, and refuses what comes after'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    const pending = a.recv()
    await a.close()
    await a.close()
    await t.throwsAsync(pending, { code: 'ERR_CLOSED' })
    t.throws(() => a.publish(new Uint8Array(1)), { code: 'ERR_CLOSED' })
    t.throws(() => a.tryRecv(), { code: 'ERR_CLOSED' })
    t.true(a.isClosed)
    await b.close()
  })

  test.serial(name('close({ lingerMs }) lets what was published reach its receiver'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    b.publish(new Uint8Array([4]))
    const closed = b.close({ lingerMs: 2000 })
    t.deepEqual(await a.recv({ timeoutMs: 5000 }), new Uint8Array([4]))
    await closed
    t.true(b.isClosed)
    await t.throwsAsync(a.close({ lingerMs: -1 }), { instanceOf: ZerohopError, code: 'ERR_BAD_OPTION' })
    await a.close()
  })

  test.serial(name('an unknown option or URL parameter is a typed error naming it and the nearest valid name'), async (t) => {
    const e = await t.throwsAsync(Hub.open(tr.url(), { noSuchOption: 1 } as never), { code: 'ERR_BAD_OPTION' })
    t.regex(e?.message ?? '', /noSuchOption/)
    const near = await t.throwsAsync(Hub.open(tr.url(), { capacty: 8 } as never), { code: 'ERR_BAD_OPTION' })
    t.regex(near?.message ?? '', /capacty is not an option of \w+:\/\/ hubs \(the nearest is 'capacity'\)/)
    const nearUrl = await t.throwsAsync(Hub.open(`${tr.url()}?rol=publisher`), { code: 'ERR_BAD_URL' })
    t.regex(nearUrl?.message ?? '', /the nearest is 'role'/)
    const u = await t.throwsAsync(Hub.open(`${tr.url()}?noSuchParameter=1`), { code: 'ERR_BAD_URL' })
    t.regex(u?.message ?? '', /noSuchParameter/)
    // Another transport's option: UDP's `peers`, or the listening transports' `listen`.
    const other = tr.name === 'shm' || tr.name === 'udp' ? { listen: true } : { peers: [] }
    const o = await t.throwsAsync(Hub.open(tr.url(), other as never), { code: 'ERR_BAD_OPTION' })
    t.regex(o?.message ?? '', new RegExp(`is not an option of ${tr.name}:// hubs`))
  })

  test.serial(name('chaos injects seeded faults below the transport, counted in metrics().chaos'), async (t) => {
    if (tr.faults === 'refused') {
      const e = await t.throwsAsync(Hub.open(`${tr.url()}?chaos=loss:0.1`), { code: 'ERR_BAD_URL' })
      t.regex(e?.message ?? '', new RegExp(`chaos is not an option of ${tr.name}:// hubs`))
      return
    }
    // 10 % loss. Unreliable: on the sender only, one message per datagram, so what it
    // dropped is exactly what did not arrive. Reliable: on both sides (acknowledgements
    // and resends meet faults too), and everything arrives once, in order.
    const counted = tr.faults === 'counted'
    const faults = { chaos: 'loss:0.1', seed: 2 }
    const [a, b] = await tr.pair<Uint8Array>(counted ? {} : faults, counted ? { ...faults, flushIntervalMs: 0 } : faults)
    const n = 300
    const message = (i: number) => Uint8Array.from({ length: 100 }, (_, k) => (i + k) & 255)
    const got: Uint8Array[] = []
    // In rounds, so the reliable transports send and acknowledge many times.
    for (let round = 0; round < 10; round++) {
      for (let i = round * 30; i < (round + 1) * 30; i++) b.publish(message(i))
      b.flush()
      for (;;) {
        const v = counted ? await a.recv({ timeoutMs: 200 }).catch(() => undefined) : await a.recv({ timeoutMs: 10_000 })
        if (v === undefined) break
        got.push(v)
        if (got.length === (round + 1) * 30) break
      }
    }
    const sent = b.metrics().chaos!
    t.is(sent.spec, 'loss:0.1')
    t.is(sent.seed, 2)
    if (counted) {
      t.is(sent.sent.seen, n, 'one datagram a message')
      t.is(got.length + sent.sent.dropped, n, 'what arrived and what chaos dropped make up what was sent')
      t.true(sent.sent.dropped > 0)
      const expected = [...Array(n).keys()].map(message)
      t.true(got.every((v) => expected.some((e) => Buffer.from(e).equals(v))), 'nothing but what was sent')
    } else {
      t.is(got.length, n, 'everything arrived')
      t.true(got.every((v, i) => Buffer.from(v).equals(message(i))), 'once, and in order')
      const received = a.metrics().chaos!
      const dropped = sent.sent.dropped + sent.received.dropped + received.sent.dropped + received.received.dropped
      t.true(dropped > 0, `chaos dropped ${dropped}`)
      t.true(sent.sent.seen > 0 && received.received.seen > 0)
    }
    await a.close({ lingerMs: 0 })
    await b.close({ lingerMs: 0 })
  })

  test.serial(name('await send() waits for room without blocking the event loop'), async (t) => {
    const message = (i: number) => Uint8Array.from({ length: 100 }, (_, k) => (i * 3 + k) & 255)
    if (!tr.tight) {
      // Never out of room: send() resolves at once.
      // (UDP batches: flushed at once, so the one message goes now.)
      const [a, b] = await tr.pair<Uint8Array>({}, (tr.name === 'udp' ? { flushIntervalMs: 0 } : {}) as HubOptions<Uint8Array>)
      await b.send(message(1), { timeoutMs: 1000 })
      t.deepEqual(await a.recv({ timeoutMs: 5000 }), message(1))
      await a.close()
      await b.close()
      return
    }
    const [a, b] = await tr.pair<Uint8Array>(tr.tight, tr.tight)
    // A timer that must go on firing while the sender waits (a publish that blocked
    // would stop it, and, the receiver being on this event loop too, never return).
    let last = performance.now()
    let longestGap = 0
    const timer = setInterval(() => {
      const now = performance.now()
      longestGap = Math.max(longestGap, now - last)
      last = now
    }, 2)
    const n = 200
    let waited = 0
    const sending = (async () => {
      for (let i = 0; i < n; i++) {
        const before = performance.now()
        await b.send(message(i), { timeoutMs: 20_000 })
        if (performance.now() - before > 2) waited++
      }
    })()
    const got: Uint8Array[] = []
    for (let i = 0; i < n; i++) {
      got.push(await a.recv({ timeoutMs: 20_000 }))
      if (i % 8 === 0) await new Promise((r) => setTimeout(r, 3)) // a slow reader
    }
    await sending
    clearInterval(timer)
    t.true(got.every((v, i) => Buffer.from(v).equals(message(i))), 'everything, in order')
    t.true(waited > 0, 'some sends waited for room')
    t.true(longestGap < 1000, `the timer went on firing (longest gap ${longestGap.toFixed(0)} ms)`)
    const e = await t.throwsAsync(b.send(message(0), { signal: AbortSignal.abort() }), { code: 'ERR_ABORTED' })
    t.truthy(e)
    await a.close({ lingerMs: 0 })
    await b.close({ lingerMs: 0 })
  })

  test.serial(name('a rate limit paces publishing: over it, the policy applies; send() waits for tokens'), async (t) => {
    // 20 a second, saving up half a second: a burst of 10, then one every 50 ms.
    const limit = { rateLimit: 20, rateBurstMs: 500, backpressure: 'drop_new' as const }
    const [a, b] = await tr.pair<Uint8Array>({}, { ...limit, ...(tr.name === 'udp' ? { flushIntervalMs: 0 } : {}) } as HubOptions<Uint8Array>)
    const start = performance.now()
    let accepted = 0
    for (let i = 0; i < 40; i++) if (b.publish(new Uint8Array([i]))) accepted++
    // The burst, and what refilled while the loop ran (no timing assumed).
    const most = 10 + Math.ceil(((performance.now() - start) / 1000) * 20)
    t.true(accepted >= 10 && accepted <= most, `${accepted} accepted (10..${most})`)
    t.is(b.metrics().rateLimited, 40 - accepted)
    for (let i = 0; i < accepted; i++) await a.recv({ timeoutMs: 5000 })
    // send() waits for each token without blocking: 5 more take at least 4 refills.
    const sending = performance.now()
    for (let i = 0; i < 5; i++) await b.send(new Uint8Array([100 + i]), { timeoutMs: 5000 })
    t.true(performance.now() - sending >= 4 * 50 * 0.9, 'paced by the refills')
    for (let i = 0; i < 5; i++) t.deepEqual(await a.recv({ timeoutMs: 5000 }), new Uint8Array([100 + i]))
    t.is(b.metrics().rateLimited, 40 - accepted, 'send() waited rather than dropped')
    await a.close({ lingerMs: 0 })
    await b.close({ lingerMs: 0 })
  })

  test.serial(name("compression: 'lz4' sends what shrinks compressed, and a peer without it reads it"), async (t) => {
    if (!tr.compresses) {
      const e = await t.throwsAsync(Hub.open(tr.url(), { compression: 'lz4' } as HubOptions<unknown>), { code: 'ERR_BAD_OPTION' })
      t.regex(e?.message ?? '', /compression/)
      return
    }
    const [a, b] = await tr.pair<unknown>({ codec: 'json' }, { codec: 'json', compression: 'lz4' } as HubOptions<unknown>)
    const order = (i: number) => ({ id: i, sym: 'BTC-USD', side: 'buy', venue: 'primary', account: 'desk-7', note: 'x'.repeat(200) })
    for (let i = 0; i < 20; i++) b.publish(order(i))
    b.flush()
    for (let i = 0; i < 20; i++) t.deepEqual(await a.recv({ timeoutMs: 5000 }), order(i))
    const saved = (b.metrics() as unknown as Record<string, { bytesSaved: number }>)[tr.name]!.bytesSaved
    t.true(saved > 0, `saved ${saved} bytes`)
    await a.close({ lingerMs: 0 })
    await b.close({ lingerMs: 0 })
  })

  test.serial(name('ttlMs: a message not read within its time to live is passed over and counted; the rest arrive'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>()
    t.throws(() => b.publish(Uint8Array.of(1), { ttlMs: 0 }), { code: 'ERR_BAD_OPTION' })
    b.publish(Uint8Array.of(1), { ttlMs: 60_000 })
    for (let i = 0; i < 10; i++) b.publish(Uint8Array.of(2, i), { ttlMs: 50 })
    b.publish(Uint8Array.of(3))
    // (Held outside the ring's slots: aside or spilled, in shared memory's payload pool
    // or on its side path; over UDP, fragments.)
    const large = tr.name === 'udp' ? 20_000 : 100_000
    b.publish(new Uint8Array(large).fill(4), { ttlMs: 50 })
    b.publish(new Uint8Array(large).fill(5), { ttlMs: 60_000 })
    b.flush()
    await new Promise((r) => setTimeout(r, 250)) // unread while the 50 ms ones expire
    const got: number[] = []
    for (let i = 0; i < 3; i++) got.push((await a.recv({ timeoutMs: 5000 }))[0]!)
    t.deepEqual(got, [1, 3, 5], 'the unexpired ones, in order')
    t.is(a.tryRecv(), undefined)
    t.is(a.metrics().expired, 11)
    t.is(a.metrics().received, 3)
    // Batch receives pass over them too (shared memory copies runs of slots).
    for (let i = 0; i < 5; i++) b.publish(Uint8Array.of(6, i), { ttlMs: 50 })
    b.publish(Uint8Array.of(7))
    b.flush()
    await new Promise((r) => setTimeout(r, 250))
    const batch: Uint8Array[] = []
    for (let tries = 0; batch.length === 0 && tries < 100; tries++) {
      batch.push(...a.tryRecvBatch().map((m) => Uint8Array.from(m)))
      if (batch.length === 0) await new Promise((r) => setTimeout(r, 10))
    }
    t.deepEqual(batch, [Uint8Array.of(7)])
    t.is(a.metrics().expired, 16)
    await a.close({ lingerMs: 0 })
    await b.close({ lingerMs: 0 })
  })

  test.serial(name('ttlMs as a hub option: every message gets it unless it has its own'), async (t) => {
    const [a, b] = await tr.pair<Uint8Array>({}, { ttlMs: 50 } as HubOptions<Uint8Array>)
    for (let i = 0; i < 3; i++) b.publish(Uint8Array.of(1, i))
    b.publishBatch([Uint8Array.of(2), Uint8Array.of(3)])
    b.publish(Uint8Array.of(4), { ttlMs: 60_000 })
    b.flush()
    await new Promise((r) => setTimeout(r, 250))
    t.deepEqual(await a.recv({ timeoutMs: 5000 }), Uint8Array.of(4))
    t.is(a.tryRecv(), undefined)
    t.is(a.metrics().expired, 5)
    await t.throwsAsync(Hub.open(tr.url(), { ttlMs: 0 } as HubOptions<unknown>), { code: 'ERR_BAD_OPTION' })
    await a.close({ lingerMs: 0 })
    await b.close({ lingerMs: 0 })
  })

  test.serial(name('receiveQueueBytes bounds what a slow reader holds; the sender waits, and nothing is lost'), async (t) => {
    /** Publishes `count` messages of `size` bytes, each numbered in its first four, then flushes. */
    const publishNumbered = (b: Hub<Uint8Array>, size: number, count: number): void => {
      for (let i = 0; i < count; i++) {
        const m = new Uint8Array(size)
        new DataView(m.buffer).setUint32(0, i, true)
        b.publish(m)
      }
      b.flush()
    }
    if (tr.atMostOnce) {
      // The reader holds 1 MiB beyond its ring; what comes past that is dropped, counted;
      // what it holds comes in order.
      const [size, count] = [4096, 2000]
      const [a, b] = await tr.pair<Uint8Array>({ slotSize: 64, capacity: 16, receiveQueueBytes: 1 << 20 } as HubOptions<Uint8Array>)
      publishNumbered(b, size, count)
      const drops = () => Number((a.metrics() as unknown as Record<string, { slowConsumerDrops: number }>)[tr.name]!.slowConsumerDrops)
      const got: number[] = []
      for (let quiet = 0; quiet < 50 && got.length + drops() < count; ) {
        const m = a.tryRecv()
        if (m === undefined) {
          quiet++
          await new Promise((r) => setTimeout(r, 20))
          continue
        }
        if (got.length === 0) await new Promise((r) => setTimeout(r, 300)) // (all sent meanwhile: the reader is behind)
        got.push(new DataView(m.buffer, m.byteOffset).getUint32(0, true))
      }
      t.is(got.length + drops(), count, 'each held or counted')
      t.true(drops() > 0 && got.length * size < 3 << 20, `held ${got.length}, dropped ${drops()}`)
      t.true(got.every((v, i) => i === 0 || v > got[i - 1]!), 'in order')
      await a.close({ lingerMs: 0 })
      await b.close({ lingerMs: 0 })
      return
    }
    if (!tr.queues) {
      // (Shared memory's ring and UDP's slots hold whole messages: capacity × slotSize.)
      await t.throwsAsync(Hub.open(tr.url(), { receiveQueueBytes: 1 << 20 } as HubOptions<unknown>), { code: 'ERR_BAD_OPTION' })
      return
    }
    // 4 KB messages go aside (the slots hold 64 bytes): the reader holds 1 MiB of them at
    // most, and reads no more from the connection until its application catches up
    // (by default it would take all 24 MiB, its sender's queue holding 64).
    const [size, count] = [4096, 6000]
    const [a, b] = await tr.pair<Uint8Array>({ slotSize: 64, receiveQueueBytes: 1 << 20 } as HubOptions<Uint8Array>)
    publishNumbered(b, size, count)
    const read = () => Number((a.metrics() as unknown as Record<string, { bytesReceived: number }>)[tr.name]!.bytesReceived)
    let [before, now] = [-1, read()]
    while (now !== before) {
      await new Promise((r) => setTimeout(r, 100))
      ;[before, now] = [now, read()]
    }
    // (QUIC's flow-control windows are bounded by it too: up to twice over QUIC.)
    t.true(now < 3 << 20, `the reader took ${(now / 2 ** 20).toFixed(2)} MiB from the connection, then waited`)
    for (let i = 0; i < count; i++) {
      const m = await a.recv({ timeoutMs: 10_000 })
      if (new DataView(m.buffer, m.byteOffset).getUint32(0, true) !== i) return t.fail(`message ${i} out of order`)
    }
    t.pass('then everything, in order')
    await a.close({ lingerMs: 0 })
    await b.close({ lingerMs: 0 })
  })

  test.serial(name('priorities: on a congested connection the higher class goes first'), async (t) => {
    if (!tr.queues) {
      const e = await t.throwsAsync(Hub.open(tr.url(), { priorities: [1, 0] } as HubOptions<unknown>), { code: 'ERR_BAD_OPTION' })
      t.regex(e?.message ?? '', /priorities/)
      return
    }
    // Channel 0 in class 1, channel 1 in class 0 (first). The reader reads nothing until
    // all is published: 24 MB on channel 0, more than the kernel's buffers and a receive
    // ring of 64 slots hold, then 500 messages on channel 1, all queued behind them.
    const [low, high, size] = [6000, 500, 4096]
    const body = new Uint8Array(size)
    const run = async (): Promise<number[]> => {
      const [a, b] = await tr.pair<Uint8Array>({ capacity: 64, slotSize: 8192 }, { priorities: [1, 0], sendQueueBytes: 64 << 20 } as HubOptions<Uint8Array>)
      for (let i = 0; i < low; i++) b.publish(body, { channel: 0 })
      for (let i = 0; i < high; i++) b.publish(body, { channel: 1 })
      b.flush()
      const got: number[] = []
      while (got.length < low + high) got.push((await a.recvMessage({ timeoutMs: 20_000 })).channel!)
      await a.close({ lingerMs: 0 })
      await b.close({ lingerMs: 0 })
      return got
    }
    const spread = (c: number[]) => c.lastIndexOf(1) - c.indexOf(1)
    let channels = await run()
    // QUIC: a turn of the lower class writes into quinn's stream what quinn then sends at
    // its own pace, so on a loaded machine (the full suite, 1 run in 5 on 12-07) a turn
    // may carry more than its share: measured once more before the check fails.
    if (tr.name === 'quic' && spread(channels) >= 1.6 * high) channels = await run()
    const [firstHigh, lastHigh] = [channels.indexOf(1), channels.lastIndexOf(1)]
    t.is(channels.filter((c) => c === 1).length, high, 'every message came')
    // In the order published, the last of channel 1 would come last of all.
    t.true(lastHigh < 0.75 * channels.length, `the last of class 0 came ${lastHigh + 1}th of ${channels.length}`)
    // And close together: the lower class's share of the turns, not one for one (as
    // channels without classes take turns).
    t.true(lastHigh - firstHigh < 1.6 * high, `class 0 came from the ${firstHigh + 1}th to the ${lastHigh + 1}th`)
    t.is(channels.lastIndexOf(0), channels.length - 1, 'the lower class finished last')
  })

  test.serial(name('chaos disconnect drops connections now and then, and nothing is lost or repeated'), async (t) => {
    // Transports with connections drop them (and reconnect); the others say they have none.
    if (!['quic', 'tcp', 'uds'].includes(tr.name)) {
      const e = await t.throwsAsync(Hub.open(`${tr.url()}?chaos=disconnect:1s`), { code: 'ERR_BAD_URL' })
      t.regex(e?.message ?? '', /chaos/)
      return
    }
    const faults = { chaos: 'disconnect:150ms', seed: 1, reconnect: { initialMs: 10, maxMs: 50 } } as HubOptions<Uint8Array>
    const [a, b] = await tr.pair<Uint8Array>({}, faults)
    const n = 300
    const got: number[] = []
    const sending = (async () => {
      for (let i = 0; i < n; i++) {
        await b.send(Uint8Array.of(i & 255, i >> 8), { timeoutMs: 10_000 })
        if (i % 10 === 0) await new Promise((r) => setTimeout(r, 40)) // over a second in all
      }
    })()
    while (got.length < n) {
      const m = await a.recv({ timeoutMs: 10_000 })
      got.push(m[0]! | (m[1]! << 8))
    }
    await sending
    t.deepEqual(got, [...Array(n).keys()], 'everything, once, in order, across the reconnects')
    t.true(b.metrics().chaos!.disconnects >= 2, `${b.metrics().chaos!.disconnects} disconnects`)
    await a.close({ lingerMs: 0 })
    await b.close({ lingerMs: 0 })
  })
}
