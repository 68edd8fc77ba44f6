// The shared-memory hub across real processes: fan-out, backpressure, lapping,
// crashes, idle CPU, zero-copy in both directions, and Rpc's clients dying and
// servers coming and going. Serial: each test runs several
// busy processes, and together they would oversubscribe two cores.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Hub, Rpc, struct } from 'zerohop'
import { child, uniqueName } from './helpers.ts'

const seqOf = (m: Uint8Array) => new DataView(m.buffer, m.byteOffset, m.byteLength).getFloat64(0, true)

test.serial('block: 1 publisher → 3 subscribers (one at a time, drain, tryRecvBatch), 1 M messages, every subscriber gets all of them in order', async (t) => {
  const name = uniqueName('fanout')
  const N = 1_000_000
  // The segment is created with a small ring so that the publisher really has to block.
  await using keeper = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 1024, slotSize: 64 })
  // One reads one message at a time, the others in batches (which tell the ring where
  // they are once a batch: the publisher must still be woken).
  const subs = ['each', 'drain', 'batch'].map((mode) => child('subscriber.mjs', [name, String(N), mode]))
  await Promise.all(subs.map((s) => s.next('ready')))
  const pub = child('publisher.mjs', [name, String(N), 'block'])
  const published = await pub.next('done')
  t.is(published.published, N)
  t.true((published.blocked as number) > 0, 'a 1024-slot ring must have made the publisher wait')
  for (const s of subs) {
    const r = await s.next('done')
    t.is(r.received, N)
    t.is(r.last, N - 1)
    t.true(r.inOrder)
    t.is(r.gaps, 0)
    t.is(r.lapped, 0)
    t.is(await s.exited, 0, s.stderr())
  }
  t.is(await pub.exited, 0, pub.stderr())
  t.truthy(keeper)
})

test.serial('3 publishers × 2 subscribers under block, each in a process of its own: nothing lost, each publisher in its own order', async (t) => {
  const name = uniqueName('many')
  const N = 200_000
  await using _keeper = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 1024, slotSize: 64 })
  const subs = [0, 1].map(() => child('subscriber.mjs', [name, String(3 * N), 'tagged']))
  await Promise.all(subs.map((s) => s.next('ready')))
  const pubs = [1, 2, 3].map((tag) => child('publisher.mjs', [name, String(N), 'block', '', String(tag)]))
  for (const p of pubs) t.is((await p.next('done')).published, N)
  for (const s of subs) {
    const r = await s.next('done')
    t.like(r, { received: 3 * N, inOrder: true, gaps: 0, lapped: 0, lastOf: { 1: N - 1, 2: N - 1, 3: N - 1 } })
  }
})

/**
 * 2 publisher processes × 2 subscriber processes (one reading one at a time, one with
 * drain()) of `n` messages each under block, in a segment with 64-byte slots and a pool
 * of `poolSize`, the messages `sizes` long in turn: nothing lost or torn, in order.
 */
async function twoByTwo(t: import('ava').ExecutionContext, tag: string, n: number, poolSize: number, sizes: string): Promise<void> {
  const name = uniqueName(tag)
  await using _keeper = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 256, slotSize: 64, poolSize })
  const subs = ['tagged', 'drain'].map((mode) => child('subscriber.mjs', [name, String(2 * n), mode]))
  await Promise.all(subs.map((s) => s.next('ready')))
  const pubs = [1, 2].map((tag) => child('publisher.mjs', [name, String(n), 'block', '', String(tag), sizes]))
  for (const p of pubs) t.is((await p.next('done')).published, n)
  const [tagged, drained] = await Promise.all(subs.map((s) => s.next('done')))
  t.like(tagged, { received: 2 * n, inOrder: true, torn: 0, lapped: 0, lastOf: { 1: n - 1, 2: n - 1 } })
  t.like(drained, { received: 2 * n, torn: 0, lapped: 0 })
}

test.serial('poolSize: 2 publishers × 2 subscribers of 3000-byte messages through a 64 KB payload pool under block, in processes of their own: nothing lost or torn', async (t) => {
  await twoByTwo(t, 'pool', 20_000, 64 * 1024, '3000')
})

test.serial('side path: 2 publishers × 2 subscribers of messages longer than the pool (100 KB, 4 KB pool) between short and pooled ones, under block, in processes of their own: nothing lost or torn, in order', async (t) => {
  await twoByTwo(t, 'side', 1500, 4096, '16,100000,3000')
})

test.serial('side path: a publisher killed before its side-path message was read: the reader counts it lapped and goes on, and its socket is gone after one more open', async (t) => {
  const name = uniqueName('side-kill')
  await using sub = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  const sockets = () => readdirSync('/dev/shm').filter((f) => f.startsWith('.zerohop-side-'))
  const before = new Set(sockets())
  const crash = child('crash.mjs', [name, 'side'])
  await crash.next('dying')
  t.is(await crash.exited, 'SIGKILL')
  const left = sockets().filter((f) => !before.has(f))
  t.is(left.length, 1, 'a killed publisher leaves its socket behind')
  t.deepEqual(sub.tryRecv(), new Uint8Array([1]))
  t.deepEqual(sub.tryRecv(), new Uint8Array([2]), 'the side-path message went with its publisher')
  t.like(sub.metrics(), { received: 2, lapped: 1 })
  await using _other = await Hub.open(`shm://${uniqueName('after-side')}`)
  t.false(existsSync(`/dev/shm/${left[0]}`), 'removed by the next open')
})

test.serial('a reader killed with SIGKILL while it waits on its bell: publishing goes on, another reader gets everything, and the bell is gone after one more open', async (t) => {
  const name = uniqueName('bell-kill')
  await using pub = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 64, slotSize: 64 })
  await using other = await Hub.open(`shm://${name}`, { role: 'subscriber', capacity: 64, slotSize: 64 })
  const bells = () => readdirSync('/dev/shm').filter((f) => f.startsWith(`.zerohop-bell-${name}.`))
  const ours = bells()
  t.is(ours.length, 1, "a reader's bell (this process's)")
  const victim = child('subscriber.mjs', [name, '1000'])
  await victim.next('ready')
  // Its `for await` waits on its bell now (the FIFO its event loop polls).
  await new Promise((r) => setTimeout(r, 200))
  t.is(bells().length, 2, "and the waiting reader's")
  victim.proc.kill('SIGKILL')
  t.is(await victim.exited, 'SIGKILL')
  const got: number[] = []
  for (let i = 0; i < 200; i++) {
    const m = new Uint8Array(16)
    new DataView(m.buffer).setFloat64(0, i, true)
    t.true(pub.publish(m))
    got.push(seqOf(await other.recv({ timeoutMs: 5000 })))
  }
  t.deepEqual(got, Array.from({ length: 200 }, (_, i) => i), 'everything, in order, through a ring whose dead reader was rung')
  await using _again = await Hub.open(`shm://${uniqueName('after-bell')}`)
  t.deepEqual(bells(), ours, 'removed by the next open')
})

test.serial('credits: a block publisher in another process publishes only what the subscriber grants, and nothing is lost', async (t) => {
  const name = uniqueName('credits')
  const N = 300
  await using sub = await Hub.open(`shm://${name}`, { role: 'subscriber', capacity: 1024, slotSize: 64 })
  t.is(sub.metrics().credits, undefined, 'no credits until the first grant')
  t.is(sub.grantCredits(100), 100)
  const pub = child('publisher.mjs', [name, String(N), 'block'])
  const got: number[] = []
  while (got.length < 100) got.push(seqOf(await sub.recv({ timeoutMs: 10_000 })))
  // The publisher waits now (for a while: a publisher going on would be seen).
  await new Promise((r) => setTimeout(r, 150))
  t.is(sub.tryRecv(), undefined, 'nothing past the 100 granted')
  t.is(sub.metrics().credits, 0)
  t.is(sub.grantCredits(N - 100), N - 100)
  while (got.length < N) got.push(seqOf(await sub.recv({ timeoutMs: 10_000 })))
  t.deepEqual(got, [...got.keys()], 'every message once, in order')
  const done = await pub.next('done')
  t.is(done.published, N)
  t.true((done.blocked as number) > 0, 'it waited for the grant')
  t.is(await pub.exited, 0, pub.stderr())
})

test.serial('memfd: no file in /dev/shm, the segment is handed over by whoever holds it, and only to its own user', async (t) => {
  const name = uniqueName('memfd')
  const first = child('streamer.mjs', [`${name}?memfd`, '0'])
  await first.next('started')
  await using sub = await Hub.open(`shm://${name}?memfd`, { role: 'subscriber' })
  const a = seqOf(await sub.recv({ timeoutMs: 5000 }))
  t.true(seqOf(await sub.recv({ timeoutMs: 5000 })) === a + 1, 'what the streamer publishes, in order')
  t.false(existsSync(`/dev/shm/zerohop-${name}`), 'no named file')
  t.true(existsSync(`/dev/shm/.zerohop-${name}.memfd`), 'the rendezvous socket')
  t.is(statSync(`/dev/shm/.zerohop-${name}.memfd`).mode & 0o777, 0o600)
  // The creator dies: this hub serves the segment from now on.
  first.proc.kill('SIGKILL')
  await first.exited
  const second = child('streamer.mjs', [`${name}?memfd`, '1000000'])
  await second.next('started')
  let seq = -1
  for (let i = 0; i < 1000 && seq < 1_000_000; i++) seq = seqOf(await sub.recv({ timeoutMs: 5000 }))
  t.true(seq >= 1_000_000, 'a hub that came after the creator died publishes into the same segment')
  second.proc.kill('SIGKILL')
  await second.exited
  if (process.getuid?.() === 0) {
    // Another user: the socket refuses it (0600, and the holder checks SO_PEERCRED).
    const foreign = child('open-error.mjs', [`shm://${name}?memfd`], {}, [], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'])
    const r = await foreign.next('result')
    t.is(r.code, 'ERR_IO', JSON.stringify(r))
    t.regex(String(r.message), /permission|denied|own user/i)
  } else t.log('SKIPPED the foreign user: not root')
})

// Where shared memory cannot be used, shm:// carries on over a Unix socket: forced
// three ways, with the same results as over shared memory.
const fallbacks: [string, Record<string, string>, string[]][] = [
  ['ZEROHOP_SHM=off', { ZEROHOP_SHM: 'off' }, []],
  ['an unusable ZEROHOP_SHM_DIR', { ZEROHOP_SHM_DIR: '/proc/zerohop-nowhere' }, []],
  ['a read-only /dev/shm (a mount namespace)', {}, ['unshare', '-m', 'sh', '-c', 'mount -t tmpfs -o ro tmpfs /dev/shm && exec "$@"', 'sh']],
]
for (const [how, env, wrapper] of fallbacks) {
  test.serial(`fallback to a Unix socket (${how}): a publisher and a subscriber in two other processes, every message once, in order`, async (t) => {
    if (wrapper.length > 0 && spawnSync('unshare', ['-m', 'true']).status !== 0) return t.pass('SKIPPED: no mount namespaces here')
    const name = uniqueName('fallback')
    const N = 20_000
    const sub = child('subscriber.mjs', [name, String(N)], env, [], wrapper)
    await sub.next('ready')
    const pub = child('publisher.mjs', [name, String(N), 'block'], env, [], wrapper)
    const published = await pub.next('done')
    t.like(published, { published: N, transport: 'uds' })
    const r = await sub.next('done')
    t.like(r, { received: N, last: N - 1, inOrder: true, gaps: 0, lapped: 0, transport: 'uds' })
    t.is(await sub.exited, 0, sub.stderr())
    t.is(await pub.exited, 0, pub.stderr())
  })
}

test.serial('drop_old: a slow subscriber is lapped and counts exactly what it missed', async (t) => {
  const name = uniqueName('lap')
  const N = 100_000
  await using keeper = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 1024, slotSize: 64 })
  const slow = child('subscriber.mjs', [name, String(N), 'slow'])
  await slow.next('ready')
  const pub = child('publisher.mjs', [name, String(N), 'drop_old'])
  const published = await pub.next('done')
  t.is(published.published, N)
  t.is(published.blocked, 0, 'drop_old never waits')
  slow.send('go')
  const r = await slow.next('done')
  t.true(r.inOrder as boolean)
  t.is(r.last, N - 1, 'it still gets the newest message')
  t.is((r.received as number) + (r.lapped as number), N, 'received + lapped = published')
  t.is(r.gaps, r.lapped, 'the gaps it saw are exactly what it counted')
  t.true((r.lapped as number) >= N - 1024)
  t.is(await slow.exited, 0, slow.stderr())
  t.truthy(keeper)
})

test.serial('a publisher killed with SIGKILL mid-stream leaves subscribers working and the segment usable', async (t) => {
  const name = uniqueName('kill')
  await using sub = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  const first = child('streamer.mjs', [name, '0'])
  await first.next('started')
  let last = -1
  for (let i = 0; i < 500; i++) last = seqOf(await sub.recv({ timeoutMs: 5000 }))
  first.proc.kill('SIGKILL')
  t.is(await first.exited, 'SIGKILL')
  // Drain what it managed to publish; the subscriber neither hangs nor errors.
  for (let m = sub.tryRecv(); m !== undefined; m = sub.tryRecv()) last = seqOf(m)
  await t.throwsAsync(sub.recv({ timeoutMs: 50 }), { code: 'ERR_TIMEOUT' })
  // A new publisher joins the same segment and the subscriber carries on.
  const second = child('streamer.mjs', [name, '1000000000'])
  await second.next('started')
  const next = seqOf(await sub.recv({ timeoutMs: 5000 }))
  t.true(next >= 1_000_000_000, `got ${next} after ${last}`)
  second.proc.kill('SIGKILL')
  await second.exited
  t.is(sub.metrics().lapped, 0)
})

test.serial('a publisher that dies holding a loan (its number claimed, slot half-written) leaves a hole readers pass over', async (t) => {
  const name = uniqueName('loan-crash')
  await using sub = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  const crash = child('crash.mjs', [name, 'loan'])
  await crash.next('dying')
  t.is(await crash.exited, 'SIGKILL')
  t.is(sub.tryRecv(), undefined, 'the half-written message is never delivered')
  await using pub = await Hub.open(`shm://${name}`, { role: 'publisher', publishTimeoutMs: 5000 })
  t.true(pub.publish(new Uint8Array([1, 2, 3])), 'publishing never waited for the dead one')
  t.deepEqual(await sub.recv({ timeoutMs: 5000 }), new Uint8Array([1, 2, 3]), 'the reader repaired the hole while it waited')
  t.is(sub.tryRecv(), undefined)
})

test.serial('publishers take no lock: one process publishes on while another holds a loan open, and the reader gets both in order', async (t) => {
  const name = uniqueName('no-lock')
  await using sub = await Hub.open(`shm://${name}`, { role: 'subscriber', capacity: 256 })
  const holder = child('crash.mjs', [name, 'hold'])
  await holder.next('holding')
  await using pub = await Hub.open(`shm://${name}`, { role: 'publisher', publishTimeoutMs: 200 })
  for (let i = 0; i < 100; i++) t.true(pub.publish(new Uint8Array([i])), `publish ${i} went at once`)
  t.is(sub.tryRecv(), undefined, 'the reader waits at the loan, first in order')
  holder.send('commit')
  await holder.next('committed')
  t.deepEqual(await sub.recv({ timeoutMs: 5000 }), new Uint8Array([7, 7, 7]))
  for (let i = 0; i < 100; i++) t.deepEqual(sub.tryRecv(), new Uint8Array([i]))
  t.is(await holder.exited, 0, holder.stderr())
})

test.serial('a creator that dies without closing leaves a segment the next open recovers', async (t) => {
  const name = uniqueName('creator-crash')
  const crash = child('crash.mjs', [name, 'create'])
  await crash.next('dying')
  t.is(await crash.exited, 'SIGKILL')
  t.true(existsSync(`/dev/shm/zerohop-${name}`), 'the dead creator left its file')
  await using h = await Hub.open(`shm://${name}`, { slotSize: 32 })
  await using r = await Hub.open(`shm://${name}`)
  h.publish(new Uint8Array([5]))
  t.deepEqual(r.tryRecv(), new Uint8Array([5]))
  t.is(h.metrics().slotSize, 32, 'the stale segment was replaced with the requested layout')
})

test.serial('a hub collected with a loan open does not keep readers waiting at its claim', async (t) => {
  const name = uniqueName('gc-loan')
  await using keeper = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  const c = child('gc-loan.mjs', [name], {}, ['--expose-gc'])
  t.deepEqual(await c.next('done'), { type: 'done', outcome: 'published' })
  t.deepEqual(await keeper.recv({ timeoutMs: 1000 }), new Uint8Array([2]))
})

test.serial('an idle subscriber waiting in recv() uses no CPU', async (t) => {
  const name = uniqueName('idle')
  await using keeper = await Hub.open(`shm://${name}`, { role: 'publisher' })
  const idle = child('idle.mjs', [name, '1500'])
  const r = await idle.next('done')
  t.is(r.outcome, 'ERR_TIMEOUT')
  t.true((r.wallMs as number) >= 1400)
  // A spinning waiter would burn ~1500 ms of CPU here; a parked one wakes 20 times a second.
  t.true((r.cpuMs as number) < 150, `used ${r.cpuMs} ms of CPU in ${r.wallMs} ms`)
  t.truthy(keeper)
})

test.serial('zero-copy both ways across processes: loan → borrow → loan → borrow', async (t) => {
  const Tick = struct({ seq: 'u64', price: 'f64', volume: 'u64' })
  const there = uniqueName('zc-there')
  const back = uniqueName('zc-back')
  await using tx = await Hub.open(`shm://${there}`, { codec: Tick, role: 'publisher' })
  await using rx = await Hub.open(`shm://${back}`, { codec: Tick, role: 'subscriber' })
  const N = 2000
  const echo = child('zerocopy.mjs', [there, back, String(N)])
  await echo.next('ready')
  for (let i = 0; i < N; i++) {
    const loan = tx.loan()
    loan.value.seq = BigInt(i)
    loan.value.price = i + 0.5
    loan.value.volume = BigInt(i * 10)
    loan.commit()
    let b = rx.borrow()
    while (b === undefined) {
      await new Promise((r) => setImmediate(r))
      b = rx.borrow()
    }
    t.is(b.value.seq, BigInt(i))
    t.is(b.value.price, (i + 0.5) * 2)
    t.is(b.value.volume, BigInt(i * 10 + 1))
    t.true(b.release())
  }
  t.deepEqual(await echo.next('done'), { type: 'done', n: N })
})

test.serial('stress: a JS publisher and a Rust (publishPacked) publisher race on a 64-slot ring; readers (one at a time, drain() and tryRecvBatch()) never see a torn message', async (t) => {
  const name = uniqueName('stress')
  const PER = 20_000
  await using keeper = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 64, slotSize: 256 })
  const modes = ['each', 'drain', 'batch']
  const subs = modes.map((mode) => child('stress.mjs', ['sub', name, mode]))
  await Promise.all(subs.map((s) => s.next('ready')))
  const pubs = [child('stress.mjs', ['pub', name, '1', String(PER), 'js']), child('stress.mjs', ['pub', name, '2', String(PER), 'packed'])]
  for (const p of pubs) await p.next('done')
  // The sentinel: publisher id 0xffffffff, a valid 20-byte message.
  const sentinel = new Uint8Array(20)
  const dv = new DataView(sentinel.buffer)
  dv.setUint32(0, 0xffffffff, true)
  dv.setUint32(12, 20, true)
  let h = 0x811c9dc5
  for (const b of sentinel) h = Math.imul(h ^ b, 0x01000193) >>> 0
  dv.setUint32(16, h, true)
  keeper.publish(sentinel)
  let lapped = 0
  for (const [i, s] of subs.entries()) {
    const r = await s.next('done')
    t.log(`${modes[i]}: received ${r.received}, lapped ${r.lapped}`)
    t.deepEqual(r.problems, [])
    t.is((r.received as number) + (r.lapped as number), 2 * PER, 'received + lapped = everything published')
    lapped += r.lapped as number
  }
  // Validating readers are far slower than the publishers: overwrites raced with reads.
  t.true(lapped > 0, 'the readers were lapped, so reads and overwrites did race')
})

test.serial('five holders of distinct segments killed with SIGKILL leave nothing in /dev/shm after one more open', async (t) => {
  const names = Array.from({ length: 5 }, (_, i) => uniqueName(`leak${i}`))
  for (const name of names) {
    const c = child('crash.mjs', [name, 'create'])
    await c.next('dying')
    t.is(await c.exited, 'SIGKILL')
    t.true(existsSync(`/dev/shm/zerohop-${name}`), 'a killed holder leaves its segment behind')
  }
  await using other = await Hub.open(`shm://${uniqueName('after-leaks')}`)
  for (const name of names) t.false(existsSync(`/dev/shm/zerohop-${name}`), `${name} is still there`)
  t.truthy(other)
})

test.serial('Hub.list() names who publishes into a segment and who reads it, with lag and rates, and forgets a process killed with SIGKILL', async (t) => {
  const name = uniqueName('list')
  const sub = await Hub.open(`shm://${name}`, { role: 'subscriber', capacity: 1 << 16 })
  const pub = child('streamer.mjs', [name, '0'])
  await pub.next('started')
  await sub.recv({ timeoutMs: 5000 })
  const mine = (list: Awaited<ReturnType<typeof Hub.list>>) => list.find((s) => s.name === name)
  const listed = mine(await Hub.list({ sampleMs: 50 }))
  if (listed === undefined) return t.fail("the segment is not listed")
  t.is(listed.url, `shm://${name}`)
  t.is(listed.transport, 'shm')
  t.deepEqual(listed.layout, { slotSize: 1024, capacity: 1 << 16, maxSubscribers: 64 })
  t.is(listed.creatorPid, process.pid)
  t.deepEqual(listed.publishers, [{ pid: pub.proc.pid! }])
  t.deepEqual(
    listed.subscribers.map((s) => s.pid),
    [process.pid],
  )
  t.true(listed.published > 0)
  t.true(listed.rate! > 0, 'the streamer publishes all along')
  t.true(listed.subscribers[0]!.lag > 0, 'this reader took one message and stopped')
  t.is(listed.subscribers[0]!.rate, 0, 'and reads nothing meanwhile')
  pub.proc.kill('SIGKILL')
  await pub.exited
  const after = mine(await Hub.list({ sampleMs: 0 }))
  t.deepEqual(after?.publishers, [], 'a killed publisher is not listed')
  t.deepEqual(
    after?.subscribers.map((s) => s.pid),
    [process.pid],
  )
  t.is(after?.rate, undefined, 'no rates without a sample')
  await sub.close()
  t.is(mine(await Hub.list({ sampleMs: 0 })), undefined, 'closed by its last user: gone')
  await t.throwsAsync(Hub.list({ sampleMs: -1 }), { code: 'ERR_BAD_OPTION' })
  await t.throwsAsync(Hub.list({ every: 1 } as never), { code: 'ERR_BAD_OPTION' })
})

test.serial('status events name the publishers and subscribers that open, close or die on a segment', async (t) => {
  const name = uniqueName('members')
  await using hub = await Hub.open(`shm://${name}`, { role: 'subscriber', heartbeatMs: 50 })
  const events: Array<{ status: string; peer?: string; code?: string }> = []
  hub.onStatus((e) => events.push({ status: e.status, peer: e.peer, ...(e.error ? { code: e.error.code } : {}) }))
  const until = async (what: string, done: () => boolean) => {
    for (let i = 0; i < 200 && !done(); i++) await new Promise((r) => setTimeout(r, 10))
    t.true(done(), `${what}: ${JSON.stringify(events)}`)
  }
  const streamer = child('streamer.mjs', [name, '0'])
  await streamer.next('started')
  const publisher = `publisher:${streamer.proc.pid}:`
  await until('the publisher joined', () => events.some((e) => e.status === 'connected' && e.peer?.startsWith(publisher)))
  streamer.proc.kill('SIGKILL')
  await streamer.exited
  await until('the publisher died', () => events.some((e) => e.peer?.startsWith(publisher) && e.code === 'ERR_CONNECTION_LOST'))
  // One that opens and closes cleanly: joined, then left without an error.
  await using other = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  const reader = /^subscriber:\d+:\d+$/
  await until('a subscriber joined', () => events.some((e) => e.status === 'connected' && reader.test(e.peer ?? '')))
  await other.close()
  await until('it left', () => events.some((e) => e.status === 'disconnected' && reader.test(e.peer ?? '') && e.code === undefined))
  t.is(hub.status, 'connected', 'the hub itself stays connected')
  t.is(events.filter((e) => e.status === 'connected' && reader.test(e.peer ?? '')).length, 1, 'the hub never reports its own entry')
  t.false(
    events.some((e) => e.peer === undefined),
    'every event is about another member',
  )
  await using quiet = await Hub.open(`shm://${name}`, { role: 'subscriber', heartbeatMs: 0 })
  const heard: unknown[] = []
  quiet.onStatus((e) => heard.push(e))
  await using late = await Hub.open(`shm://${name}`, { role: 'publisher' })
  await new Promise((r) => setTimeout(r, 200))
  t.deepEqual(heard, [], 'heartbeatMs: 0 turns them off')
  t.truthy(late)
})

/** Resolves once `done()` holds (looked at every 10 ms), or rejects after `ms`. */
async function until(done: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !done(); ) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** The files of `/dev/shm` a segment name starts. */
const segmentFiles = (prefix: string) => readdirSync('/dev/shm').filter((f) => f.startsWith(`zerohop-${prefix}`))

test.serial('Rpc: a client killed with a request in flight ends it on the server (its handler sees the abort) and leaves no segment behind; the next client is answered', async (t) => {
  const name = uniqueName('rpc-kill')
  let aborted = 0
  await using server = await Rpc.serve<{ op: string }, string>(
    `shm://${name}`,
    async (req, { signal }) => {
      if (req.op !== 'sleep') return 'ok'
      await new Promise((resolve) => signal.addEventListener('abort', resolve))
      aborted++
      return 'aborted'
    },
    { codec: 'json', heartbeatMs: 100 },
  )
  const c = child('rpc-client.mjs', [`shm://${name}`])
  await c.next('ready')
  c.send('sleep')
  await c.next('sent')
  await until(() => server.metrics().inFlight === 1)
  t.is(segmentFiles(`${name}.rpc.${c.proc.pid}.`).length, 1, 'the client has its reply segment')
  c.proc.kill('SIGKILL')
  await c.exited
  await until(() => aborted === 1)
  t.like(server.metrics(), { inFlight: 0, cancelled: 1, served: 0 })
  t.deepEqual(segmentFiles(`${name}.rpc.${c.proc.pid}.`), [], "its reply segment went with the server's handle on it")
  await using rpc = await Rpc.connect<{ op: string }, string>(`shm://${name}`, { codec: 'json' })
  t.is(await rpc.request({ op: 'echo' }), 'ok')
})

test.serial('Rpc: a client goes on with the next server when one closes or is killed', async (t) => {
  const name = uniqueName('rpc-restart')
  const url = `shm://${name}`
  const first = await Rpc.serve(url, () => 'first', { codec: 'json' })
  await using rpc = await Rpc.connect<unknown, unknown>(url, { codec: 'json', heartbeatMs: 50 })
  t.is(await rpc.request(1), 'first')
  await first.close()
  await until(() => rpc.status === 'reconnecting')
  await t.throwsAsync(rpc.request(2), { code: 'ERR_CONNECTION_LOST' })
  const killed = child('rpc-server.mjs', [url])
  await killed.next('ready')
  await until(() => rpc.status === 'connected')
  t.is(await rpc.request({ op: 'echo', x: 3 }), 3, "the server process's echo")
  const pending = rpc.request({ op: 'sleep', ms: 60_000 })
  killed.proc.kill('SIGKILL')
  await t.throwsAsync(pending, { code: 'ERR_CONNECTION_LOST' })
  await using _last = await Rpc.serve(url, (n: number) => `last ${n}`, { codec: 'json' })
  await until(() => rpc.status === 'connected')
  t.is(await rpc.request(4), 'last 4')
  t.deepEqual(rpc.metrics(), { pending: 0, nativePending: 0 })
})

test.serial('Rpc: several servers of one name share its requests, each answered once; one that closes fails its own (retryable), one that dies fails what is in flight, and the others go on', async (t) => {
  const url = `shm://${uniqueName('rpc-servers')}`
  const servers = [child('rpc-server.mjs', [url]), child('rpc-server.mjs', [url])]
  for (const s of servers) await s.next('ready')
  await using here = await Rpc.serve(url, async (req: { op: string; x?: unknown }) => {
    await new Promise((r) => setTimeout(r, 1))
    return req.op === 'echo' ? req.x : 'here'
  }, { codec: 'json' })
  await using rpc = await Rpc.connect<{ op: string; x?: unknown; ms?: number }, unknown>(url, { codec: 'json', heartbeatMs: 50 })
  // Each request answered once, by one of them (the processes' own share shows in their metrics).
  const answers = await Promise.all(Array.from({ length: 600 }, (_, i) => rpc.request({ op: 'echo', x: i }, { timeoutMs: 20_000 })))
  t.deepEqual(answers, Array.from({ length: 600 }, (_, i) => i))
  const served: number[] = []
  for (const s of servers) {
    s.send('metrics')
    served.push((await s.next('metrics')).served as number)
  }
  served.push(here.metrics().served)
  t.is(served.reduce((a, b) => a + b), 600)
  t.true(served.filter((n) => n > 0).length >= 2, `shared: ${served}`)
  // One that closes: what it was handling fails, retryable; the others answer on.
  // (Until a server process takes it: ours answers at once.)
  let slow: Promise<unknown> = Promise.resolve()
  for (let i = 0; i < 50; i++) {
    slow = rpc.request({ op: 'sleep', ms: 60_000 })
    if ((await Promise.race([slow, new Promise((r) => setTimeout(() => r('pending'), 200))])) === 'pending') break
  }
  const holder = []
  for (const s of servers) {
    s.send('metrics')
    holder.push((await s.next('metrics')).inFlight as number)
  }
  const closing = holder.indexOf(1)
  t.not(closing, -1, 'a server process took the slow request (ours answers every request)')
  servers[closing]!.send('close')
  t.is(await servers[closing]!.exited, 0)
  await t.throwsAsync(slow, { code: 'ERR_CONNECTION_LOST' })
  t.is(rpc.status, 'connected')
  t.is(await rpc.request({ op: 'echo', x: 'on' }), 'on')
  // One that dies: the requests in flight fail (retryable: which it held, nobody
  // knows), and the one left answers on.
  await here.close()
  const third = child('rpc-server.mjs', [url])
  await third.next('ready')
  const other = servers[1 - closing]!
  const pending = Array.from({ length: 20 }, () => rpc.request({ op: 'sleep', ms: 60_000 }).catch((e: { code: string }) => e.code))
  await new Promise((r) => setTimeout(r, 200))
  other.proc.kill('SIGKILL')
  t.deepEqual(new Set(await Promise.all(pending)), new Set(['ERR_CONNECTION_LOST']))
  t.is(await rpc.request({ op: 'echo', x: 'still' }), 'still')
  third.send('close')
  t.is(await third.exited, 0, third.stderr())
})

test.serial('Rpc over the Unix-socket fallback (ZEROHOP_SHM=off on both sides): the same answers, no segment', async (t) => {
  const name = uniqueName('rpc-fallback')
  const srv = child('rpc-server.mjs', [`shm://${name}`], { ZEROHOP_SHM: 'off' })
  await srv.next('ready')
  process.env.ZEROHOP_SHM = 'off'
  let rpc: Awaited<ReturnType<typeof Rpc.connect<{ op: string; x?: unknown }, unknown>>>
  try {
    rpc = await Rpc.connect(`shm://${name}`, { codec: 'json' })
  } finally {
    delete process.env.ZEROHOP_SHM
  }
  t.deepEqual(await rpc.request({ op: 'echo', x: [1, 'two'] }), [1, 'two'])
  await t.throwsAsync(rpc.request({ op: 'fail' }), { code: 'ERR_REMOTE', message: 'boom' })
  t.deepEqual(segmentFiles(name), [])
  await rpc.close()
  srv.send('close')
  t.is(await srv.exited, 0, srv.stderr())
})

test.serial('group: a work group of 3 processes shares 30,000 messages, none lost or twice, while one is SIGKILLed midway', async (t) => {
  // A member takes a message from its group as it reads it, so the victim holds
  // nothing when it dies: it stops reading after 2000 (still attached), and is killed.
  const name = uniqueName('group')
  const dir = mkdtempSync(join(tmpdir(), 'zerohop-group-'))
  await using pub = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 256, backpressure: 'block', publishTimeoutMs: 20_000 })
  const worker = (i: number, stopAfter?: number) =>
    child('group-worker.mjs', [JSON.stringify({ url: `shm://${name}`, options: { group: 'w', role: 'subscriber' }, file: join(dir, `${i}`), stopAfter })])
  const victim = worker(0, 2000)
  const others = [worker(1), worker(2)]
  for (const w of [victim, ...others]) await w.next('ready')
  const n = 30_000
  const m = new Uint8Array(64)
  const dv = new DataView(m.buffer)
  let killed = false
  void victim.next('stopped').then((s) => {
    t.is(s.count, 2000)
    victim.proc.kill('SIGKILL')
    killed = true
  })
  for (let id = 0; id < n; id++) {
    dv.setUint32(0, id, true)
    await pub.send(m)
    if (id % 1000 === 999) await new Promise((r) => setTimeout(r, 20)) // paced: the kill comes midway
  }
  t.true(killed, 'the victim was killed before the last message was published')
  const ids = () => [0, 1, 2].flatMap((i) => readFileSync(join(dir, `${i}`), 'utf8').split('\n').filter(Boolean).map(Number))
  for (let i = 0; i < 1000 && ids().length < n; i++) await new Promise((r) => setTimeout(r, 20))
  const got = ids()
  t.is(got.length, n, 'every message read once')
  t.is(new Set(got).size, n, 'none twice')
  t.is(readFileSync(join(dir, '0'), 'utf8').split('\n').filter(Boolean).length, 2000, 'the victim had what it read')
  for (const i of [1, 2]) t.true(readFileSync(join(dir, `${i}`), 'utf8').length > 0, `worker ${i} got a share`)
  for (const w of others) w.send('exit')
  for (const w of others) t.is(await w.exited, 0, w.stderr())
})
