// Rpc on every transport with requests (quic://, tcp:// plain and with TLS, uds://,
// kcp://, shm://), across real processes, checked the same way for each: replies, a throwing
// handler, a timeout and an abort ending cleanly on both sides, and a server that dies
// with a request in flight. What only one of them does is in its own spec file.
// Serial: each test runs a busy server process beside the test's on two cores.
import test from 'ava'
import { Rpc } from 'zerohop'
import { type Connecting, connecting } from './connecting.ts'
import { child, uniqueName } from './helpers.ts'

interface Serving extends Pick<Connecting, 'label' | 'server' | 'listenUrl' | 'dialUrl' | 'client' | 'liveness'> {
  name: Connecting['name'] | 'shm'
  /** What makes a client give up when its server is gone (rather than wait for another). */
  once: Record<string, unknown>
}

const transports: Serving[] = [
  ...connecting.map((tr) => ({ ...tr, once: { reconnect: { maxAttempts: 0 } } })),
  {
    name: 'shm',
    listenUrl: () => `shm://${uniqueName('rpc')}`,
    dialUrl: (url) => url,
    client: {},
    liveness: { heartbeatMs: 250 },
    once: {},
  },
]

/** Every child this file starts; a failed test must not leave one waiting forever. */
const children: ReturnType<typeof child>[] = []
const track = (c: ReturnType<typeof child>) => (children.push(c), c)
test.afterEach.always(() => {
  for (const c of children.splice(0)) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
})

for (const tr of transports) {
  const name = (what: string) => `${tr.label ?? tr.name}: ${what}`

  test.serial(name('replies across processes; a throwing handler, a timeout and an abort each end cleanly on both sides'), async (t) => {
    const listen = tr.listenUrl()
    const srv = track(child('rpc-server.mjs', [listen, JSON.stringify(tr.server ?? {})]))
    const { address } = (await srv.next('ready')) as { address?: string }
    type Req = { op: string; x?: unknown; ms?: number }
    await using rpc = await Rpc.connect<Req, unknown>(tr.dialUrl(listen, address), { ...tr.client, codec: 'json' } as never)
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
      srv.send('metrics')
      m = (await srv.next('metrics')) as Record<string, number>
      if (m.cancelled === 2) break
      await new Promise((r) => setTimeout(r, 10))
    }
    t.like(m, { inFlight: 0, served: 200, failed: 1, cancelled: 2, stoppedEarly: 2 })
    t.is(await rpc.request({ op: 'echo', x: 'still fine' }), 'still fine')
    srv.send('close')
    t.is(await srv.exited, 0, srv.stderr())
  })

  test.serial(name('a request in flight when the server dies fails with ERR_CONNECTION_LOST'), async (t) => {
    const listen = tr.listenUrl()
    const srv = track(child('rpc-server.mjs', [listen, JSON.stringify(tr.server ?? {})]))
    const { address } = (await srv.next('ready')) as { address?: string }
    await using rpc = await Rpc.connect<{ op: string; ms?: number }, unknown>(tr.dialUrl(listen, address), {
      ...tr.client,
      ...tr.liveness,
      codec: 'json',
      ...tr.once,
    } as never)
    const pending = rpc.request({ op: 'sleep', ms: 60_000 })
    await new Promise((r) => setTimeout(r, 100))
    srv.proc.kill('SIGKILL')
    await t.throwsAsync(pending, { code: 'ERR_CONNECTION_LOST' })
    t.deepEqual(rpc.metrics(), { pending: 0, nativePending: 0 })
    await t.throwsAsync(rpc.request({ op: 'echo' }), { code: 'ERR_CONNECTION_LOST' })
  })
}

for (const tr of transports) {
  const name = (what: string) => `${tr.label ?? tr.name}: ${what}`
  test.serial(name("an async handler's answer goes out at once, not after the server's poll for the next request (spinUs 2 s)"), async (t) => {
    const listen = tr.listenUrl()
    const srv = track(child('rpc-server.mjs', [listen, JSON.stringify({ ...tr.server, spinUs: 2_000_000 })]))
    const { address } = (await srv.next('ready')) as { address?: string }
    await using rpc = await Rpc.connect<{ op: string; x: number }, number>(tr.dialUrl(listen, address), { ...tr.client, codec: 'json' } as never)
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now()
      t.is(await rpc.request({ op: 'echo', x: i }), i)
      // (A stall, not a speed: held back, the answer came after the 2 s poll.)
      t.true(performance.now() - t0 < 1500, `answer ${i} within the poll`)
    }
    srv.proc.kill('SIGKILL')
  })
}

// Several servers of one URL on one host: the first listens and hands requests in turn
// to itself and to the others (members, joined over Unix sockets of the host).
for (const tr of connecting) {
  const name = (what: string) => `${tr.label ?? tr.name}: ${what}`
  test.serial(name('several Rpc.serve on one URL share its requests; a cancel reaches the one that holds it; one that dies fails only what it held; a member takes over from the listener'), async (t) => {
    type Req = { op: string; x?: unknown; ms?: number }
    const listen = tr.listenUrl()
    const first = track(child('rpc-server.mjs', [listen, JSON.stringify(tr.server ?? {})]))
    const { address } = (await first.next('ready')) as { address?: string }
    const url = tr.dialUrl(listen, address)
    const second = track(child('rpc-server.mjs', [url, JSON.stringify(tr.server ?? {})]))
    await second.next('ready')
    let stoppedHere = 0
    await using here = await Rpc.serve<Req, unknown>(url, async (req, { signal }) => {
      if (req.op === 'echo') return req.x
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, req.ms)
        signal.addEventListener('abort', () => {
          clearTimeout(timer)
          stoppedHere++
          reject(signal.reason)
        })
      })
      return 'slept'
    }, { ...tr.server, codec: 'json' } as never)
    t.is(here.localAddress, undefined, 'a member listens on no address of the URL')
    await using rpc = await Rpc.connect<Req, unknown>(url, { ...tr.client, ...tr.liveness, codec: 'json' } as never)
    const metrics = async (c: ReturnType<typeof child>) => {
      c.send('metrics')
      return (await c.next('metrics')) as unknown as { served: number; forwarded: number; inFlight: number; stoppedEarly: number }
    }
    // Each request answered once, by one of the three.
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => rpc.request({ op: 'echo', x: i })))
    t.deepEqual(answers, Array.from({ length: 200 }, (_, i) => i))
    const [a, b] = [await metrics(first), await metrics(second)]
    t.is(a.served + a.forwarded, 200, 'every request came through the listener')
    t.is(b.served + here.metrics().served, a.forwarded, 'what it handed on was answered by the members')
    t.true(a.served > 0 && b.served > 0 && here.metrics().served > 0, 'each had a share')
    // A request given up on is cancelled where it runs, whichever server that is.
    for (let i = 0; i < 3; i++) await t.throwsAsync(rpc.request({ op: 'sleep', ms: 10_000 }, { timeoutMs: 100 }), { code: 'ERR_TIMEOUT' })
    let stopped = 0
    for (let i = 0; i < 100 && stopped < 3; i++) {
      stopped = (await metrics(first)).stoppedEarly + (await metrics(second)).stoppedEarly + stoppedHere
      await new Promise((r) => setTimeout(r, 10))
    }
    t.is(stopped, 3, 'each handler saw its request cancelled')
    // A member that dies: what it held fails (retryable), nothing else.
    let held: Promise<unknown> | undefined
    const others: Promise<unknown>[] = []
    for (let i = 0; i < 6 && held === undefined; i++) {
      const p = rpc.request({ op: 'sleep', ms: 60_000 }).catch((e: { code: string }) => e.code)
      await new Promise((r) => setTimeout(r, 100))
      if ((await metrics(second)).inFlight > 0) held = p
      else others.push(p)
    }
    t.truthy(held, 'the second server took a request in turn')
    second.proc.kill('SIGKILL')
    t.is(await held, 'ERR_CONNECTION_LOST')
    await new Promise((r) => setTimeout(r, 100))
    t.deepEqual(await Promise.all(Array.from({ length: 20 }, (_, i) => rpc.request({ op: 'echo', x: i }))), [...Array(20).keys()])
    // The listener dies: this process's server takes the URL over, and the client finds it.
    first.proc.kill('SIGKILL')
    let answer: unknown
    for (let i = 0; i < 200 && answer === undefined; i++) {
      answer = await rpc.request({ op: 'echo', x: 'over' }, { timeoutMs: 500 }).catch(() => undefined)
      if (answer === undefined) await new Promise((r) => setTimeout(r, 25))
    }
    t.is(answer, 'over', 'the member left answers (it listens now)')
    await here.close()
    for (const p of others) void p
  })
}
