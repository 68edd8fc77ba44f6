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
