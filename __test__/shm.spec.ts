// What only shared memory does, within one process: struct layouts written and read in
// place (loans, borrows), packed publishing, lapping, segment files and layouts, and
// its error codes. Cross-process behaviour is in multiprocess.spec.ts.
import test from 'ava'
import { existsSync, statSync, writeFileSync } from 'node:fs'
import { Hub, Rpc, ZerohopError, isRetryable, struct, type ErrorCode, type StructView } from 'zerohop'
import { uniqueName } from './helpers.ts'

const shm = (tag: string) => `shm://${uniqueName(tag)}`

async function rejectsWith(t: import('ava').ExecutionContext, p: Promise<unknown> | (() => unknown), code: ErrorCode): Promise<ZerohopError> {
  let error: unknown
  try {
    await (typeof p === 'function' ? p() : p)
  } catch (e) {
    error = e
  }
  t.true(error instanceof ZerohopError, `expected ${code}, got ${String(error)}`)
  const z = error as ZerohopError
  t.is(z.code, code, z.message)
  t.is(z.retryable, isRetryable(code))
  return z
}

test('struct codec: every field type round-trips, loan writes in place, borrow reads in place', async (t) => {
  const All = struct({ a: 'u8', b: 'i8', c: 'u16', d: 'i16', e: 'u32', f: 'i32', g: 'f32', h: 'f64', i: 'u64', j: 'i64', k: 'bool' })
  t.is(All.size, 56) // C layout: 18 bytes of small fields, f64 aligned to 24, then 8+8+8, bool, padded to 8
  const v = { a: 255, b: -128, c: 65535, d: -32768, e: 4294967295, f: -2147483648, g: 1.5, h: Math.PI, i: 2n ** 64n - 1n, j: -(2n ** 63n), k: true }
  const url = shm('struct')
  await using p = await Hub.open(url, { codec: All })
  await using s = await Hub.open(url, { codec: All, role: 'subscriber' })
  p.publish(v)
  t.deepEqual(s.tryRecv(), v)

  const loan = p.loan()
  Object.assign(loan.value, { ...v, h: 2.5, k: false })
  loan.commit()
  const b = s.borrow()!
  t.truthy(b)
  t.is(b.value.h, 2.5)
  t.is(b.value.k, false)
  t.is(b.value.i, 2n ** 64n - 1n)
  t.deepEqual((b.value as unknown as StructView).toJSON(), { ...v, h: 2.5, k: false })
  // The borrow is a view into the whole mapped segment, not a copy of 48 bytes.
  t.true(b.bytes.buffer.byteLength > s.metrics().capacity * All.size)
  t.true(b.valid())
  t.true(b.release())
  t.is(s.tryRecv(), undefined)
})

test('loan and borrow with raw bytes are zero-copy views of one segment', async (t) => {
  const url = shm('zc')
  await using p = await Hub.open(url, { role: 'publisher', slotSize: 256 })
  await using s = await Hub.open(url, { role: 'subscriber' })
  const loan = p.loan()
  t.is(loan.bytes.byteLength, 256)
  loan.bytes.set([4, 5, 6])
  loan.commit(3)
  const b = s.borrow()!
  t.deepEqual([...b.bytes], [4, 5, 6])
  // Same memory: a byte written through the borrow's view is visible in the publisher's slot view.
  b.bytes[0] = 42
  t.is(loan.bytes[0], 42)
  t.true(b.release())
  t.throws(() => loan.commit(), { instanceOf: ZerohopError })
  const aborted = p.loan()
  aborted.abort()
  t.is(s.tryRecv(), undefined, 'an aborted loan publishes nothing')
  // An aborted sequence number is reused.
  p.publish(new Uint8Array([1]))
  t.deepEqual(s.tryRecv(), new Uint8Array([1]))
})

test('publishPacked: one native call publishes many messages that TypeScript readers receive one by one', async (t) => {
  const url = shm('packed')
  await using p = await Hub.open(url, { role: 'publisher', slotSize: 16, capacity: 8, backpressure: 'drop_new' })
  await using s = await Hub.open(url, { role: 'subscriber' })
  const packed = new Uint8Array(6 * 4).map((_, i) => Math.floor(i / 4))
  t.is(p.publishPacked(packed, 4), 6)
  t.is(p.publishPacked(packed, 4), 2, 'drop_new: only 2 more fit in an 8-slot ring')
  t.like(p.metrics(), { published: 8, publishedBytes: 32, dropped: 4 })
  for (let i = 0; i < 8; i++) t.deepEqual(s.tryRecv(), new Uint8Array(4).fill(i % 6))
  t.is(s.tryRecv(), undefined)
  // JavaScript and Rust publishers share the hub's claim line and the sequence.
  p.publish(new Uint8Array([42]))
  t.deepEqual(s.tryRecv(), new Uint8Array([42]))
  await rejectsWith(t, () => p.publishPacked(packed, 5), 'ERR_BAD_OPTION')
  await rejectsWith(t, () => p.publishPacked(new Uint8Array(34), 17), 'ERR_MESSAGE_TOO_LARGE')
})

test('a write given up half-way is never delivered, even to a hub that skipped the writing stamp', async (t) => {
  const Pair = struct({ a: 'f64', b: 'u64' })
  for (const giveUp of ['exception', 'abort'] as const) {
    const url = shm(`abandon-${giveUp}`)
    await using h = await Hub.open(url, { codec: Pair, capacity: 4, slotSize: 16 })
    await using r = await Hub.open(url, { codec: Pair, role: 'subscriber' })
    for (let i = 0; i < 4; i++) h.publish({ a: 10 + i, b: BigInt(i) })
    if (giveUp === 'exception') {
      // Field a lands in the slot of message 0 before field b fails to encode.
      await rejectsWith(t, () => h.publish({ a: 1, b: 'not a bigint' as never }), 'ERR_CODEC')
    } else {
      const loan = h.loan()
      loan.value.a = 2
      loan.abort()
    }
    const got: number[] = []
    for (let m = r.tryRecv(); m !== undefined; m = r.tryRecv()) got.push(m.a)
    t.true(got.length > 0, giveUp)
    t.true(got.every((a) => a >= 10), `${giveUp}: half-written messages were delivered: ${got}`)
  }
})

test('more than 32 publishers on one segment: the ones past the table publish too (under the repair lock), each in its own order', async (t) => {
  const url = shm('forty')
  await using r = await Hub.open(url, { role: 'subscriber', capacity: 1024, slotSize: 16 })
  const pubs = await Promise.all(Array.from({ length: 40 }, () => Hub.open(url, { role: 'publisher', backpressure: 'block' })))
  try {
    const listed = (await Hub.list({ sampleMs: 0 })).find((c) => c.url === url)
    t.is(listed?.publishers.length, 32, 'the table lists 32')
    const next = pubs.map(() => 0)
    const message = (p: number) => new Uint8Array([p, next[p]!++])
    for (let round = 0; round < 10; round++) {
      for (let p = 0; p < pubs.length; p++) t.true(pubs[p]!.publish(message(p)))
      t.is(pubs[round]!.publishBatch([message(round), message(round)]), 2)
    }
    const last = new Map<number, number>()
    let n = 0
    for (let m = r.tryRecv(); m !== undefined; m = r.tryRecv(), n++) {
      t.true((last.get(m[0]!) ?? -1) < m[1]!, `publisher ${m[0]}'s order`)
      last.set(m[0]!, m[1]!)
    }
    t.is(n, 40 * 10 + 2 * 10)
  } finally {
    for (const p of pubs) await p.close()
  }
})

test('publishBatch: a value that fails to encode ends the batch there; the slots it had claimed are passed over', async (t) => {
  const Pair = struct({ a: 'f64', b: 'u64' })
  const url = shm('batch-abandon')
  await using h = await Hub.open(url, { codec: Pair, role: 'publisher', capacity: 64, slotSize: 16 })
  await using r = await Hub.open(url, { codec: Pair, role: 'subscriber' })
  const values = [0, 1, 2, 3, 4].map((i) => ({ a: i, b: i === 3 ? ('bad' as never) : BigInt(i) }))
  await rejectsWith(t, () => h.publishBatch(values), 'ERR_CODEC')
  t.true(h.publish({ a: 9, b: 9n }))
  const got: number[] = []
  for (let m = r.tryRecv(); m !== undefined; m = r.tryRecv()) got.push(m.a)
  t.deepEqual(got, [0, 1, 2, 9], 'what came before the bad value, then the next publish')
  t.is(h.metrics().published, 4)
})

test('publishBatch (raw): a value that is not a Uint8Array ends the batch there with ERR_CODEC, whatever it looks like', async (t) => {
  const url = shm('batch-raw-bad')
  await using h = await Hub.open(url, { role: 'publisher', capacity: 64, slotSize: 16 })
  await using r = await Hub.open(url, { role: 'subscriber' })
  // Each has a length a slot takes, or none: the fast loop must not copy any of them.
  const bad = [undefined, null, 7, 'abcd', [1, 2, 3], { length: 3, 0: 1 }, new Int8Array(3), new DataView(new ArrayBuffer(3))]
  let n = 0
  for (const b of bad) {
    const values = [new Uint8Array([++n]), b, new Uint8Array([99])] as unknown as Uint8Array[]
    await rejectsWith(t, () => h.publishBatch(values), 'ERR_CODEC')
  }
  t.true(h.publish(Buffer.from([100])), 'a Buffer is a Uint8Array')
  t.is(h.publishBatch([Buffer.from([101]), new Uint8Array([102])]), 2)
  const got: number[] = []
  for (let m = r.tryRecv(); m !== undefined; m = r.tryRecv()) got.push(m[0]!)
  t.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 100, 101, 102], 'what came before each bad value, and nothing of it')
})

test('poolSize: messages longer than a slot go through the payload pool, published, loaned and borrowed, in order with short ones', async (t) => {
  const url = shm('pool')
  const pattern = (n: number, len: number) => Uint8Array.from({ length: len }, (_, i) => (n + i * 7) & 255)
  await using p = await Hub.open(url, { role: 'publisher', slotSize: 64, capacity: 64, poolSize: 64 * 1024 })
  await using r = await Hub.open(url, { role: 'subscriber' })
  t.is(p.maxMessageSize, 16 << 20, 'past the pool: the side path')
  t.is((await Hub.open(shm('pool-big'), { poolSize: 32 << 20 })).maxMessageSize, 32 << 20, 'a pool larger than the default largest message')
  // publish: copied into the pool, between short messages.
  t.true(p.publish(pattern(1, 10_000)))
  t.true(p.publish(new Uint8Array([2])))
  t.deepEqual(r.tryRecv(), pattern(1, 10_000))
  t.deepEqual(r.tryRecv(), new Uint8Array([2]))
  // loan(size): written in place in the pool; borrow(): read in place.
  const loan = p.loan(20_000)
  t.is(loan.bytes.length, 20_000)
  loan.bytes.set(pattern(3, 20_000))
  loan.commit()
  const b = r.borrow()!
  t.deepEqual(b.bytes, pattern(3, 20_000))
  t.true(b.valid())
  t.true(b.release())
  // A pooled loan committed short is a short message; one aborted is passed over.
  const short = p.loan(30_000)
  short.bytes.set([4, 4, 4])
  short.commit(3)
  p.loan(5000).abort()
  t.deepEqual(r.tryRecv(), new Uint8Array([4, 4, 4]))
  t.is(r.tryRecv(), undefined)
  // publishBatch mixes them, in order; drain() and tryRecvBatch() take pooled ones too.
  t.is(p.publishBatch([new Uint8Array([5]), pattern(6, 3000), new Uint8Array([7])]), 3)
  const drained: Uint8Array[] = []
  t.is(r.drain((m) => drained.push(m.slice())), 3)
  t.deepEqual(drained, [new Uint8Array([5]), pattern(6, 3000), new Uint8Array([7])])
  p.publishBatch([pattern(8, 100), new Uint8Array([9])])
  t.deepEqual(r.tryRecvBatch().map((m) => m.slice()), [pattern(8, 100), new Uint8Array([9])])
  t.like(p.metrics(), { published: 9 })
  t.like(r.metrics(), { received: 9, lapped: 0 })
  await rejectsWith(t, () => Hub.open(shm('pool-bad'), { poolSize: 100 }), 'ERR_BAD_OPTION')
})

test('side path: messages longer than the pool are published, batched, loaned and received (borrowed in place) in order with the rest, up to maxMessageSize', async (t) => {
  const url = shm('side')
  const pattern = (n: number, len: number) => Uint8Array.from({ length: len }, (_, i) => (n + i * 7) & 255)
  await using p = await Hub.open(url, { role: 'publisher', slotSize: 64, capacity: 64, poolSize: 4096, maxMessageSize: 1 << 20 })
  await using r = await Hub.open(url, { role: 'subscriber' })
  t.is(p.maxMessageSize, 1 << 20)
  t.is(r.maxMessageSize, 16 << 20, "each hub's own limit")
  t.true(p.publish(pattern(1, 300_000)))
  t.true(p.publish(new Uint8Array([2])))
  t.true(p.publish(pattern(3, 3000)))
  t.deepEqual(r.tryRecv(), pattern(1, 300_000))
  t.deepEqual(r.tryRecv(), new Uint8Array([2]))
  t.deepEqual(r.tryRecv(), pattern(3, 3000))
  // borrow(): a view of the reader's own mapping of it; writing into it changes nothing for others.
  await using r2 = await Hub.open(url, { role: 'subscriber' })
  p.publish(pattern(4, 1 << 20))
  const b = r.borrow()!
  t.is(b.bytes.length, 1 << 20)
  t.deepEqual(b.bytes, pattern(4, 1 << 20))
  b.bytes[0] = 255 - b.bytes[0]!
  t.true(b.valid())
  t.true(b.release())
  t.deepEqual(r2.tryRecv(), pattern(4, 1 << 20))
  // loan(size) past the pool: a buffer of the hub's own, published as a copy on commit.
  const loan = p.loan(50_000)
  t.is(loan.bytes.length, 50_000)
  loan.bytes.set(pattern(5, 50_000))
  t.throws(() => p.publish(new Uint8Array([0])), { code: 'ERR_INVALID_STATE' })
  loan.commit()
  p.loan(60_000).abort()
  // publishBatch, drain() and tryRecvBatch() mix them in.
  t.is(p.publishBatch([new Uint8Array([6]), pattern(7, 20_000), new Uint8Array([8])]), 3)
  t.deepEqual(r.tryRecv(), pattern(5, 50_000))
  const drained: Uint8Array[] = []
  t.is(r.drain((m) => drained.push(m.slice())), 3)
  t.deepEqual(drained, [new Uint8Array([6]), pattern(7, 20_000), new Uint8Array([8])])
  p.publishBatch([pattern(9, 10_000), new Uint8Array([10])])
  t.deepEqual(r.tryRecvBatch().map((m) => m.slice()), [pattern(9, 10_000), new Uint8Array([10])])
  await rejectsWith(t, () => p.publish(new Uint8Array((1 << 20) + 1)), 'ERR_MESSAGE_TOO_LARGE')
  await rejectsWith(t, () => p.loan((1 << 20) + 1), 'ERR_MESSAGE_TOO_LARGE')
  t.like(p.metrics(), { published: 10 })
  t.like(r.metrics(), { received: 10, lapped: 0 })
  for (const bad of [0, 2 ** 30 + 1, 1.5, 'big']) await rejectsWith(t, () => Hub.open(shm('side-bad'), { maxMessageSize: bad as number }), 'ERR_BAD_OPTION')
  await rejectsWith(t, () => Hub.open(`${shm('side-bad')}?maxMessageSize=0`), 'ERR_BAD_URL')
})

test('side path: close() waits (up to lingerMs) until subscribers have read what went on it, since it goes with the publisher', async (t) => {
  const url = shm('side-linger')
  const p = await Hub.open(url, { role: 'publisher' })
  await using r = await Hub.open(url, { role: 'subscriber' })
  p.publish(new Uint8Array(100_000).fill(3))
  let closed = false
  const closing = p.close({ lingerMs: 10_000 }).then(() => (closed = true))
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.false(closed, 'still held for the reader')
  t.deepEqual(await r.recv({ timeoutMs: 1000 }), new Uint8Array(100_000).fill(3))
  await closing
  // Closed without waiting: the message goes, and the reader counts it lapped.
  const q = await Hub.open(url, { role: 'publisher' })
  q.publish(new Uint8Array(100_000))
  q.publish(new Uint8Array([1]))
  await q.close({ lingerMs: 0 })
  t.deepEqual(r.tryRecv(), new Uint8Array([1]))
  t.like(r.metrics(), { received: 2, lapped: 1 })
})

test('poolSize: block waits for room in the pool (its slowest reader), drop_new drops, fail_fast refuses', async (t) => {
  const url = shm('pool-room')
  const big = new Uint8Array(30_000)
  await using r = await Hub.open(url, { role: 'subscriber', slotSize: 64, capacity: 64, poolSize: 64 * 1024 })
  await using block = await Hub.open(url, { role: 'publisher', backpressure: 'block', publishTimeoutMs: 100 })
  t.true(block.publish(big))
  t.true(block.publish(big))
  await rejectsWith(t, () => block.publish(big), 'ERR_TIMEOUT')
  await using dropNew = await Hub.open(url, { role: 'publisher', backpressure: 'drop_new' })
  t.false(dropNew.publish(big))
  await using failFast = await Hub.open(url, { role: 'publisher', backpressure: 'fail_fast' })
  await rejectsWith(t, () => failFast.publish(big), 'ERR_BACKPRESSURE')
  t.is(r.tryRecv()?.length, 30_000)
  t.true(block.publish(big), 'room once the reader moved on')
})

test('poolSize under drop_old: a reader a whole pool behind is lapped, never handed torn bytes; a held borrow of a pooled message says when it was overwritten', async (t) => {
  const url = shm('pool-lap')
  const pattern = (n: number) => Uint8Array.from({ length: 1500 }, (_, i) => (n * 31 + i) & 255)
  await using p = await Hub.open(url, { role: 'publisher', slotSize: 64, capacity: 64, poolSize: 4096 })
  await using r = await Hub.open(url, { role: 'subscriber' })
  for (let n = 0; n < 20; n++) p.publish(pattern(n))
  const got: number[] = []
  for (let m = r.tryRecv(); m !== undefined; m = r.tryRecv()) {
    const n = [...Array(20).keys()].find((k) => Buffer.from(pattern(k)).equals(m))
    t.not(n, undefined, 'a torn pooled message')
    got.push(n!)
  }
  t.true(got.length > 0 && got.length < 20 && r.metrics().lapped > 0, `got ${got.join()}, lapped ${r.metrics().lapped}`)
  p.publish(pattern(20))
  const b = r.borrow()!
  t.true(b.valid())
  for (let n = 21; n < 25; n++) p.publish(pattern(n)) // a whole 4 KB pool past it
  t.false(b.valid(), 'overwritten')
  t.false(b.release())
})

test('under drop_old a held borrow reports that it was overwritten', async (t) => {
  const url = shm('borrow-lap')
  await using p = await Hub.open(url, { role: 'publisher', capacity: 4, slotSize: 16 })
  await using s = await Hub.open(url, { role: 'subscriber' })
  p.publish(new Uint8Array([1]))
  const b = s.borrow()!
  t.true(b.valid())
  for (let i = 0; i < 8; i++) p.publish(new Uint8Array([2]))
  t.false(b.valid())
  t.false(b.release())
  t.true(s.metrics().lapped >= 1)
})

test('segments are 0600, shared by name, and unlinked when the last hub closes', async (t) => {
  const name = uniqueName('life')
  const a = await Hub.open(`shm://${name}`)
  const b = await Hub.open(name)
  const path = a.metrics().segment
  t.is(statSync(path).mode & 0o777, 0o600)
  await a.close()
  t.true(existsSync(path))
  await b.close()
  t.false(existsSync(path))
})

test('a stale or garbage segment file is replaced on open', async (t) => {
  const name = uniqueName('stale')
  writeFileSync(`/dev/shm/zerohop-${name}`, 'not a segment at all')
  await using h = await Hub.open(`shm://${name}`)
  await using r = await Hub.open(`shm://${name}`)
  h.publish(new Uint8Array([1]))
  t.deepEqual(r.tryRecv(), new Uint8Array([1]))
})

test('ERR_MESSAGE_TOO_LARGE past maxMessageSize (a loan in a slot: past the slot)', async (t) => {
  await using h = await Hub.open(shm('large'), { slotSize: 8, maxMessageSize: 8 })
  await rejectsWith(t, () => h.publish(new Uint8Array(9)), 'ERR_MESSAGE_TOO_LARGE')
  await rejectsWith(t, () => h.publishBatch([new Uint8Array(1), new Uint8Array(9)]), 'ERR_MESSAGE_TOO_LARGE')
  t.is(h.metrics().published, 1, 'the batch prefix before the oversize message was published')
  const loan = h.loan()
  await rejectsWith(t, () => loan.commit(9), 'ERR_MESSAGE_TOO_LARGE')
  loan.abort()
})

test('ERR_LAYOUT_MISMATCH', async (t) => {
  const url = shm('layout')
  await using a = await Hub.open(url, { slotSize: 64 })
  const e = await rejectsWith(t, Hub.open(url, { slotSize: 128 }), 'ERR_LAYOUT_MISMATCH')
  t.regex(e.message, /slotSize 64/)
  // Without layout options, a joiner adopts the existing layout.
  await using b = await Hub.open(url)
  t.is(b.metrics().slotSize, 64)
  t.is(a.metrics().slotSize, 64)
})

test('ERR_CLOSED', async (t) => {
  const h = await Hub.open(shm('closed'))
  const pending = h.recv()
  await h.close()
  await rejectsWith(t, pending, 'ERR_CLOSED')
  await rejectsWith(t, () => h.publish(new Uint8Array(1)), 'ERR_CLOSED')
  await rejectsWith(t, h.recv(), 'ERR_CLOSED')
  await rejectsWith(t, () => h.tryRecv(), 'ERR_CLOSED')
})

test('ERR_TIMEOUT from recv and from a blocked publisher', async (t) => {
  const url = shm('timeout')
  await using h = await Hub.open(url, { capacity: 2, slotSize: 8 })
  await rejectsWith(t, h.recv({ timeoutMs: 30 }), 'ERR_TIMEOUT')
  await using sub = await Hub.open(url, { role: 'subscriber' })
  await using pub = await Hub.open(url, { role: 'publisher', backpressure: 'block', publishTimeoutMs: 50 })
  pub.publish(new Uint8Array(1))
  pub.publish(new Uint8Array(1))
  await rejectsWith(t, () => pub.publish(new Uint8Array(1)), 'ERR_TIMEOUT')
  sub.tryRecv()
  await rejectsWith(t, () => pub.publish(new Uint8Array(1)), 'ERR_TIMEOUT') // h has not read either
  h.tryRecv()
  t.true(pub.publish(new Uint8Array(1)), 'room again once every subscriber read')
})

test('fill() and metrics().bytesAvailable: how far the slowest reader is behind, and the room left', async (t) => {
  const name = uniqueName('room')
  await using pub = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 8, slotSize: 64 })
  t.is(pub.metrics().bytesAvailable, 8 * 64, 'no reader: all of it')
  t.is(pub.fill(), 0)
  await using sub = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  for (let i = 0; i < 3; i++) pub.publish(new Uint8Array([i]))
  t.is(pub.metrics().bytesAvailable, 5 * 64)
  t.is(pub.fill(), 3 / 8)
  t.is(sub.metrics().bytesAvailable, 5 * 64, 'the same ring, seen by its reader')
  t.is(sub.fill(), 3 / 8)
  sub.tryRecvBatch()
  await Promise.resolve() // (a reader stores its place once a batch)
  t.is(pub.metrics().bytesAvailable, 8 * 64)
  t.is(pub.fill(), 0)
  for (let i = 0; i < 10; i++) pub.publish(new Uint8Array([i]))
  t.is(pub.metrics().bytesAvailable, 0, 'lapped under drop_old: none')
  t.is(pub.fill(), 1)
  await sub.close()
  t.is(sub.fill(), 0, 'closed')
  t.is(pub.fill(), 0, 'its reader gone')
})

test('water marks: onWaterMark says high once the fill reaches highWater, then low once it fell to lowWater; batchHint follows the fill', async (t) => {
  const name = uniqueName('water')
  const opts = { capacity: 16, slotSize: 64, highWater: 0.5, lowWater: 0.25 }
  await using pub = await Hub.open(`shm://${name}`, { ...opts, role: 'publisher' })
  await using sub = await Hub.open(`shm://${name}`, { ...opts, role: 'subscriber' })
  const events: { mark: string; fill: number }[] = []
  const off = pub.onWaterMark((e) => events.push(e))
  t.is(pub.batchHint(64), 1, 'an empty ring: one at a time')
  for (let i = 0; i < 7; i++) pub.publish(new Uint8Array(8))
  await Promise.resolve()
  t.deepEqual(events, [], 'below half of 16 slots')
  pub.publish(new Uint8Array(8))
  await new Promise((r) => setTimeout(r, 0))
  t.deepEqual(events, [{ mark: 'high', fill: 0.5 }])
  t.is(pub.batchHint(64), 64, 'at high water: the most')
  t.is(pub.batchHint(8), 8)
  for (let i = 0; i < 3; i++) sub.tryRecv()
  await new Promise((r) => setTimeout(r, 20))
  t.is(events.length, 1, 'a fill of 5/16 is above lowWater')
  sub.tryRecv()
  for (let i = 0; i < 500 && events.length < 2; i++) await new Promise((r) => setTimeout(r, 2))
  t.deepEqual(events[1], { mark: 'low', fill: 0.25 })
  // And high again.
  for (let i = 0; i < 4; i++) pub.publish(new Uint8Array(8))
  await new Promise((r) => setTimeout(r, 0))
  t.deepEqual(events[2], { mark: 'high', fill: 0.5 })
  off()
  t.throws(() => sub.onWaterMark(() => {}), { code: 'ERR_INVALID_STATE' })
  await using udp = await Hub.open('udp://127.0.0.1:0')
  t.throws(() => udp.onWaterMark(() => {}), { code: 'ERR_UNSUPPORTED_TRANSPORT' })
  t.throws(() => udp.grantCredits(1), { code: 'ERR_UNSUPPORTED_TRANSPORT' })
  for (const bad of [{ highWater: 1.5 }, { highWater: 0.3, lowWater: 0.3 }, { lowWater: -1 }, { highWater: 0 }]) {
    await t.throwsAsync(Hub.open(`shm://${uniqueName('water-bad')}`, bad), { code: 'ERR_BAD_OPTION' }, JSON.stringify(bad))
  }
})

test('credits: drop_new drops and fail_fast refuses past them, drop_old never holds back; a grant lets them go on', async (t) => {
  const name = uniqueName('credit-policies')
  const opts = { capacity: 64, slotSize: 64 }
  await using sub = await Hub.open(`shm://${name}`, { ...opts, role: 'subscriber' })
  await using dropNew = await Hub.open(`shm://${name}`, { ...opts, role: 'publisher', backpressure: 'drop_new' })
  await using failFast = await Hub.open(`shm://${name}`, { ...opts, role: 'publisher', backpressure: 'fail_fast' })
  await using dropOld = await Hub.open(`shm://${name}`, { ...opts, role: 'publisher' })
  t.true(dropNew.publish(new Uint8Array([0])), 'no credits granted: no limit')
  t.is(sub.grantCredits(2), 2)
  t.true(dropNew.publish(new Uint8Array([1])))
  t.true(failFast.publish(new Uint8Array([2])))
  t.false(dropNew.publish(new Uint8Array([9])), 'none left: dropped')
  t.is(dropNew.metrics().dropped, 1)
  t.throws(() => failFast.publish(new Uint8Array([9])), { code: 'ERR_BACKPRESSURE', message: /credits/ })
  t.true(dropOld.publish(new Uint8Array([3])), 'drop_old publishes anyway')
  t.is(sub.metrics().credits, 0)
  t.is(sub.grantCredits(1), 1)
  t.true(failFast.publish(new Uint8Array([4])))
  t.deepEqual(
    sub.tryRecvBatch().map((m) => m[0]),
    [0, 1, 2, 3, 4],
  )
  t.throws(() => sub.grantCredits(-1), { code: 'ERR_BAD_OPTION' })
  t.throws(() => dropNew.grantCredits(1), { code: 'ERR_INVALID_STATE' }, 'a publisher has no subscriber to grant with')
})

test('tryRecvBatch() takes at most 1024 unless told (a whole ring of copies held at once costs more than it saves)', async (t) => {
  const name = uniqueName('batch')
  await using pub = await Hub.open(`shm://${name}`, { role: 'publisher', capacity: 4096, slotSize: 64 })
  await using sub = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  for (let i = 0; i < 2000; i++) pub.publish(new Uint8Array([i & 255]))
  t.is(sub.tryRecvBatch().length, 1024)
  const rest = sub.tryRecvBatch(5000)
  t.is(rest.length, 976)
  t.deepEqual(rest.at(-1), new Uint8Array([1999 & 255]))
  t.is(sub.tryRecvBatch().length, 0)
})

test('ERR_BACKPRESSURE (fail_fast) and drop_new', async (t) => {
  const url = shm('bp')
  await using sub = await Hub.open(url, { role: 'subscriber', capacity: 2, slotSize: 8 })
  await using ff = await Hub.open(url, { role: 'publisher', backpressure: 'fail_fast' })
  ff.publish(new Uint8Array(1))
  ff.publish(new Uint8Array(1))
  await rejectsWith(t, () => ff.publish(new Uint8Array(1)), 'ERR_BACKPRESSURE')
  t.is(ff.publishBatch([new Uint8Array(1)]), 0)
  await using dn = await Hub.open(url, { role: 'publisher', backpressure: 'drop_new' })
  t.false(dn.publish(new Uint8Array(1)))
  t.is(dn.metrics().dropped, 1)
  t.is(sub.metrics().lag, 2)
})

test('ERR_INVALID_STATE for the wrong role or an open loan', async (t) => {
  const url = shm('state')
  await using sub = await Hub.open(url, { role: 'subscriber' })
  await using pub = await Hub.open(url, { role: 'publisher' })
  await rejectsWith(t, () => sub.publish(new Uint8Array(1)), 'ERR_INVALID_STATE')
  await rejectsWith(t, () => pub.tryRecv(), 'ERR_INVALID_STATE')
  const loan = pub.loan()
  await rejectsWith(t, () => pub.publish(new Uint8Array(1)), 'ERR_INVALID_STATE')
  await rejectsWith(t, () => pub.loan(), 'ERR_INVALID_STATE')
  loan.abort()
  await using j = await Hub.open(url, { codec: 'json' })
  await rejectsWith(t, () => j.loan(), 'ERR_INVALID_STATE')
})

test('ERR_NO_CAPACITY when every subscriber entry is taken', async (t) => {
  const url = shm('cap')
  await using a = await Hub.open(url, { maxSubscribers: 1 })
  await rejectsWith(t, Hub.open(url), 'ERR_NO_CAPACITY')
  await using p = await Hub.open(url, { role: 'publisher' })
  t.truthy(a && p)
})

// Serial: it changes the environment that every open in this process reads.
test.serial('the Unix-socket fallback: loan() and borrow() are copies, a hub never gets its own, and when the hub that relays closes another one takes over', async (t) => {
  const saved = process.env.ZEROHOP_SHM
  process.env.ZEROHOP_SHM = 'off'
  try {
    const name = shm('fallback')
    const a = await Hub.open(name)
    await using b = await Hub.open(name)
    t.is(a.metrics().transport, 'uds')
    t.deepEqual(a.metrics().selection.fallbacks, [{ transport: 'shm', reason: 'ZEROHOP_SHM=off' }])
    t.regex(a.metrics().selectionReason, /Unix socket/)
    const loan = a.loan()
    loan.bytes.set([1, 2, 3])
    loan.commit(3)
    const got = await b.recv({ timeoutMs: 5000 })
    t.deepEqual(got, new Uint8Array([1, 2, 3]))
    t.is(a.tryRecv(), undefined, 'not its own')
    // The largest message as over shared memory (where it would take the side path).
    t.is(a.maxMessageSize, 16 << 20)
    a.publish(new Uint8Array(100_000).fill(3))
    t.deepEqual(await b.recv({ timeoutMs: 5000 }), new Uint8Array(100_000).fill(3))
    a.publish(new Uint8Array([4]))
    for (let i = 0; i < 500 && b.metrics().lag === 0; i++) await new Promise((r) => setTimeout(r, 2))
    const borrowed = b.borrow()!
    t.deepEqual(borrowed.value, new Uint8Array([4]))
    borrowed.release()
    t.throws(() => a.onWaterMark(() => {}), { code: 'ERR_UNSUPPORTED_TRANSPORT' })
    // a made the relay (it came first); it goes with a, and b makes the next one.
    await a.close()
    b.publish(new Uint8Array([5])) // kept until a relay has read it (nobody else hears it)
    for (let i = 0; i < 100 && b.status === 'connected'; i++) await new Promise((r) => setTimeout(r, 10))
    for (let i = 0; i < 500 && b.status !== 'connected'; i++) await new Promise((r) => setTimeout(r, 10))
    t.is(b.status, 'connected', 'b made the next relay, and reconnected to it')
    await using c = await Hub.open(name)
    b.publish(new Uint8Array([7]))
    t.deepEqual(await c.recv({ timeoutMs: 5000 }), new Uint8Array([7]))
    c.publish(new Uint8Array([6]))
    t.deepEqual(await b.recv({ timeoutMs: 5000 }), new Uint8Array([6]))
  } finally {
    if (saved === undefined) delete process.env.ZEROHOP_SHM
    else process.env.ZEROHOP_SHM = saved
  }
})

test.serial('an unusable segment directory: shm:// carries on over a Unix socket, and a memfd segment (asked for by name) is ERR_IO', async (t) => {
  const saved = process.env.ZEROHOP_SHM_DIR
  process.env.ZEROHOP_SHM_DIR = '/nonexistent/zerohop'
  try {
    await using hub = await Hub.open(shm('io'))
    const m = hub.metrics()
    t.is(m.transport, 'uds')
    t.is(m.selection.chosen, 'uds')
    t.is(m.selection.fallbacks.length, 1)
    t.is(m.selection.fallbacks[0]!.transport, 'shm')
    t.regex(m.selection.fallbacks[0]!.reason, /create segment/)
    await rejectsWith(t, Hub.open(`${shm('io')}?memfd`), 'ERR_IO')
  } finally {
    if (saved === undefined) delete process.env.ZEROHOP_SHM_DIR
    else process.env.ZEROHOP_SHM_DIR = saved
  }
})

test('Rpc over shm://: a request or a reply too large for the slot is ERR_MESSAGE_TOO_LARGE; options that mean nothing to Rpc are ERR_BAD_OPTION; no server is ERR_TIMEOUT', async (t) => {
  const url = shm('rpc-size')
  await using server = await Rpc.serve(url, (req: Uint8Array) => new Uint8Array(req[0] === 1 ? 2000 : 10), { slotSize: 1024 })
  await using rpc = await Rpc.connect(url)
  t.is((await rpc.request(new Uint8Array(1024 - 16))).length, 10, 'a slot holds the 16-byte header and the rest')
  await rejectsWith(t, rpc.request(new Uint8Array(1024 - 15)), 'ERR_MESSAGE_TOO_LARGE')
  await rejectsWith(t, rpc.request(new Uint8Array([1])), 'ERR_MESSAGE_TOO_LARGE')
  t.like(server.metrics(), { served: 1, failed: 1, inFlight: 0 })
  t.deepEqual(rpc.metrics(), { pending: 0, nativePending: 0 })
  for (const bad of [{ memfd: true }, { highWater: 0.5 }, { backpressure: 'drop_old' }, { tls: {} }]) {
    await rejectsWith(t, Rpc.connect(url, bad as never), 'ERR_BAD_OPTION')
  }
  await rejectsWith(t, Rpc.connect(`${url}?memfd`), 'ERR_BAD_OPTION')
  await rejectsWith(t, Rpc.connect(shm('rpc-nobody'), { connectTimeoutMs: 50 }), 'ERR_TIMEOUT')
})

test('Rpc over shm://: a client waits for 1024 answers at most (its reply segment holds that many); more is ERR_BACKPRESSURE', async (t) => {
  const url = shm('rpc-many')
  const held: (() => void)[] = []
  await using server = await Rpc.serve(url, (req: Uint8Array) => new Promise<Uint8Array>((resolve) => held.push(() => resolve(req))))
  await using rpc = await Rpc.connect(url)
  const answers = Array.from({ length: 1024 }, (_, i) => rpc.request(new Uint8Array([i & 255])))
  await rejectsWith(t, rpc.request(new Uint8Array(1)), 'ERR_BACKPRESSURE')
  while (held.length < 1024) await new Promise((r) => setTimeout(r, 5))
  for (const release of held) release()
  const got = await Promise.all(answers)
  t.true(got.every((b, i) => b[0] === (i & 255)))
  t.is(server.metrics().served, 1024)
})

test('Rpc over shm://: a request that waits while thousands after it are answered gets its own answer (request keys never collide)', async (t) => {
  const url = shm('rpc-keys')
  let release: (() => void) | undefined
  await using server = await Rpc.serve(url, (req: Uint8Array) =>
    req[0] === 1 ? new Promise<Uint8Array>((resolve) => (release = () => resolve(Uint8Array.of(1, 1)))) : req,
  )
  await using rpc = await Rpc.connect(url)
  const slow = rpc.request(Uint8Array.of(1))
  // Keys go round the client's table of 1024 three times past the one still waiting.
  for (let i = 0; i < 3000; i++) {
    const got = await rpc.request(Uint8Array.of(2, i & 255))
    if (got[1] !== (i & 255)) return t.fail(`request ${i} got the answer of another`)
  }
  t.is(rpc.metrics().nativePending, 1)
  while (release === undefined) await new Promise((r) => setTimeout(r, 5))
  release()
  t.deepEqual(await slow, Uint8Array.of(1, 1))
  t.like(rpc.metrics(), { pending: 0, nativePending: 0 })
  t.is(server.metrics().served, 3001)
})

test('drain() takes runs of messages, each a view while its call lasts, and never what the hub published itself', async (t) => {
  const url = shm('drain-runs')
  await using a = await Hub.open(url, { slotSize: 64, capacity: 1024 })
  await using b = await Hub.open(url)
  const N = 900 // more than a run (256), fewer than the ring
  for (let i = 0; i < N; i++) (i % 3 === 0 ? a : b).publish(new Uint8Array([i & 255, i >> 8, 7]))
  const got: number[] = []
  const seen = new Set<Uint8Array>()
  t.is(
    a.drain((v) => {
      got.push(v[0]! | (v[1]! << 8))
      t.is(v.length, 3)
      seen.add(v)
    }),
    (2 * N) / 3,
  )
  t.deepEqual(got, Array.from({ length: N }, (_, i) => i).filter((i) => i % 3 !== 0))
  t.true(seen.size < got.length, 'views are reused from run to run')
  t.like(a.metrics(), { received: (2 * N) / 3, lag: 0 })
  t.is(a.drain(() => t.fail('nothing is left')), 0)
})

test('tryRecvBatch() takes runs too: its values are views of a copy, whole after the ring has been overwritten, until the next batch receive', async (t) => {
  const url = shm('batch-runs')
  await using a = await Hub.open(url, { slotSize: 64, capacity: 256 })
  await using b = await Hub.open(url)
  const msg = (i: number) => new Uint8Array([i & 255, i >> 8, 9])
  for (let i = 0; i < 200; i++) (i % 4 === 0 ? a : b).publish(msg(i))
  const batch = a.tryRecvBatch(1000)
  const want = Array.from({ length: 200 }, (_, i) => i).filter((i) => i % 4 !== 0)
  t.is(batch.length, want.length)
  // The publisher laps the whole ring (drop_old): what was taken stays as it was.
  for (let i = 0; i < 600; i++) b.publish(new Uint8Array([0xee, 0xee, 0xee]))
  t.deepEqual(
    batch.map((v) => v[0]! | (v[1]! << 8)),
    want,
  )
  t.true(batch.every((v) => v.length === 3 && v[2] === 9))
  t.like(a.metrics(), { received: want.length })
})

test('group: the members of a work group share its messages, each read once, by every way of reading; others read everything; publishers wait for the group, not for a member that stopped', async (t) => {
  const name = shm('group')
  await using pub = await Hub.open(name, { role: 'publisher', capacity: 64, backpressure: 'fail_fast' })
  await using a = await Hub.open(name, { group: 'w', role: 'subscriber' })
  await using b = await Hub.open(name, { group: 'w', role: 'subscriber' })
  await using stopped = await Hub.open(name, { group: 'w', role: 'subscriber' })
  await using all = await Hub.open(name, { role: 'subscriber' })
  const id = (m: Uint8Array) => new DataView(m.buffer, m.byteOffset, m.byteLength).getUint32(0, true)
  const message = (i: number) => new Uint8Array(new Uint32Array([i]).buffer)
  const got: number[] = []
  // Every way of reading, members taking turns.
  for (let i = 0; i < 40; i++) pub.publish(message(i))
  got.push(id(a.tryRecv()!), id(b.tryRecv()!), id((await a.recv({ timeoutMs: 1000 }))!))
  for (const m of b.tryRecvBatch(5)) got.push(id(m))
  const borrowed = b.borrow()!
  got.push(id(borrowed.bytes))
  t.true(borrowed.valid())
  t.true(borrowed.release())
  for (const m of await a.recvBatch(5, { timeoutMs: 1000 })) got.push(id(m))
  t.is(b.drain((m) => got.push(id(m))), 40 - 14)
  t.is(a.tryRecv(), undefined)
  t.deepEqual(got.sort((x, y) => x - y), [...Array(40).keys()], 'each message to one member, none lost')
  t.is(all.tryRecvBatch(100).length, 40, 'a hub outside the group reads everything')
  // The group holds publishers back; a member that stopped (`stopped`) does not.
  for (let i = 0; i < 64; i++) pub.publish(message(i))
  t.throws(() => pub.publish(message(64)), { code: 'ERR_BACKPRESSURE' })
  all.tryRecvBatch(100)
  t.is(a.tryRecvBatch(30).length + b.tryRecvBatch(100).length, 64)
  pub.publish(message(65))
  t.is(id(all.tryRecv()!), 65)
  t.is(id(a.tryRecv()!), 65)
  t.is(stopped.metrics().received, 0)
  t.throws(() => a.grantCredits(1), { code: 'ERR_INVALID_STATE', message: /work group/ })
  t.is((await Hub.list()).find((s) => name.endsWith(s.name))?.subscribers.length, 4, 'its members are listed, its own entry not')
})

test.serial('group over the Unix-socket fallback: its relay shares the messages among the members too', async (t) => {
  const saved = process.env.ZEROHOP_SHM
  process.env.ZEROHOP_SHM = 'off'
  try {
    const name = shm('group-fallback')
    await using pub = await Hub.open(name, { role: 'publisher' })
    await using a = await Hub.open(name, { group: 'w', role: 'subscriber' })
    await using b = await Hub.open(name, { group: 'w', role: 'subscriber' })
    await using all = await Hub.open(name, { role: 'subscriber' })
    t.is(a.metrics().transport, 'uds')
    for (let i = 0; i < 200 && [a, b, all].some((h) => h.status !== 'connected'); i++) await new Promise((r) => setTimeout(r, 5))
    await new Promise((r) => setTimeout(r, 100)) // (the relay hears their hellos)
    for (let i = 0; i < 10; i++) pub.publish(new Uint8Array([i]))
    const got: number[] = []
    const seen: number[] = []
    for (let i = 0; i < 500 && (got.length < 10 || seen.length < 10); i++) {
      for (const h of [a, b]) for (const m of h.tryRecvBatch(100)) got.push(m[0]!)
      for (const m of all.tryRecvBatch(100)) seen.push(m[0]!)
      await new Promise((r) => setTimeout(r, 5))
    }
    t.deepEqual(got.sort((x, y) => x - y), [...Array(10).keys()])
    t.is(seen.length, 10)
    t.true(a.metrics().received > 0 && b.metrics().received > 0, 'both had a share')
  } finally {
    if (saved === undefined) delete process.env.ZEROHOP_SHM
    else process.env.ZEROHOP_SHM = saved
  }
})
