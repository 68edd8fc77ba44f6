// The public API apart from any one transport: codecs, smart selection, URLs, and the
// error codes (each transport's own behaviour is in conformance.spec.ts and its spec).
import test from 'ava'
import { createRequire } from 'node:module'
import { ERROR_CODES, Hub, ZerohopError, isRetryable, parseEndpoint, raw, struct, type ErrorCode, type Codec } from 'zerohop'
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

test('the raw codec hands out copies that stay as they were, however many follow (pooled or not)', (t) => {
  // One source reused for every message, as a ring's slot is; sizes on both sides of
  // V8's on-heap limit (64 B) and of the pool's (8 KiB), enough to refill the pool.
  const source = new Uint8Array(20_000)
  const sizes = [1, 64, 65, 100, 1000, 4096, 8192, 8193, 20_000]
  const copies: Uint8Array[] = []
  for (let i = 0; i < 600; i++) {
    const n = sizes[i % sizes.length]!
    source.fill(i & 255)
    copies.push(raw.decode(source.subarray(0, n)))
  }
  source.fill(0xee)
  for (const [i, c] of copies.entries()) {
    t.is(c.byteLength, sizes[i % sizes.length]!)
    t.true(c.every((b) => b === (i & 255)), `copy ${i} (${c.byteLength} bytes) kept its bytes`)
  }
})

test('a custom codec carries any type', async (t) => {
  const upper: Codec<string> = {
    name: 'upper',
    encode: (s) => new TextEncoder().encode(s.toUpperCase()),
    decode: (b) => new TextDecoder().decode(b),
  }
  const customUrl = shm('custom')
  await using c = await Hub.open(customUrl, { codec: upper })
  await using d = await Hub.open(customUrl, { codec: upper })
  c.publish('hello')
  t.is(d.tryRecv(), 'HELLO')
})

test('metrics count traffic and say why shm was chosen', async (t) => {
  const name = uniqueName('metrics')
  await using a = await Hub.open(name) // bare name: smart selection
  await using b = await Hub.open(name)
  a.publish(new Uint8Array(10))
  a.publishBatch([new Uint8Array(1), new Uint8Array(2)])
  b.tryRecv()
  const m = a.metrics()
  t.is(m.transport, 'shm')
  t.true(m.selectedAutomatically)
  t.regex(m.selectionReason, /shared memory/)
  t.deepEqual(m.selection, { chosen: 'shm', reason: m.selectionReason, fallbacks: [] })
  t.is(m.published, 3)
  t.is(m.publishedBytes, 13)
  t.is(m.segment, `/dev/shm/zerohop-${name}`)
  const r = b.metrics()
  t.is(r.received, 1)
  t.is(r.receivedBytes, 10)
  t.is(r.lag, 2)
})

test('native and TypeScript agree on the error codes and which are retryable', (t) => {
  // The binding is private to the package; load it the way the package does.
  const binding = createRequire(import.meta.url)('../packages/zerohop/native/binding.js') as {
    errorCodes(): Array<{ code: string; retryable: boolean }>
  }
  const native = binding.errorCodes()
  t.deepEqual(native.map((c) => c.code).sort(), [...ERROR_CODES].sort())
  for (const { code, retryable } of native) t.is(isRetryable(code as ErrorCode), retryable, code)
})

test('every URL scheme parses; malformed URLs say what is wrong', (t) => {
  for (const [url, transport] of [
    ['shm://a', 'shm'],
    ['udp://239.1.2.3:9000', 'udp'],
    ['kcp://127.0.0.1:1', 'kcp'],
    ['quic://[::1]:7000', 'quic'],
    ['tcp://localhost:80', 'tcp'],
    ['uds:///tmp/x.sock', 'uds'],
    ['nats://127.0.0.1/prices.>', 'nats'],
    ['market-data', 'shm'],
  ] as const) {
    t.is(parseEndpoint(url).transport, transport, url)
  }
  t.true(parseEndpoint('udp://239.1.2.3:9000').multicast)
  t.like(parseEndpoint('nats://h/a.*'), { host: 'h', port: 4222, subject: 'a.*' })
  t.throws(() => parseEndpoint('nats://h'), { code: 'ERR_BAD_URL', message: /needs a subject/ })
  t.deepEqual(parseEndpoint('udp://127.0.0.1:9000?chaos=loss:0.1&seed=7').params, [['chaos', 'loss:0.1'], ['seed', '7']])
  const e = t.throws(() => parseEndpoint('udp://127.0.0.1:99999'), { instanceOf: ZerohopError })
  t.is(e?.code, 'ERR_BAD_URL')
  t.regex(e!.message, /out of range/)
})

test('ERR_BAD_URL', async (t) => {
  const e = await rejectsWith(t, Hub.open('foo://bar:1'), 'ERR_BAD_URL')
  t.regex(e.message, /unknown scheme 'foo'/)
  await rejectsWith(t, Hub.open('shm://has/slash'), 'ERR_BAD_URL')
  await rejectsWith(t, Hub.open(''), 'ERR_BAD_URL')
})

test('ERR_BAD_OPTION', async (t) => {
  await rejectsWith(t, Hub.open(shm('opt'), { capacity: 1000 }), 'ERR_BAD_OPTION')
  await rejectsWith(t, Hub.open(shm('opt'), { slotSize: 0 }), 'ERR_BAD_OPTION')
  await rejectsWith(t, Hub.open(shm('opt'), { backpressure: 'sometimes' as never }), 'ERR_BAD_OPTION')
  await rejectsWith(t, Hub.open(shm('opt'), { codec: 'xml' as never }), 'ERR_BAD_OPTION')
  await rejectsWith(t, Hub.open(shm('opt'), { codec: struct({ a: 'f64' }), slotSize: 4 }), 'ERR_BAD_OPTION')
  t.throws(() => struct({ a: 'f128' as never }), { instanceOf: ZerohopError })
})

test('ERR_CODEC for values a codec cannot encode and bytes it cannot decode', async (t) => {
  const url = shm('codec')
  await using r = await Hub.open(url)
  await using j = await Hub.open(url, { codec: 'json', role: 'subscriber' })
  await rejectsWith(t, () => r.publish('not bytes' as never), 'ERR_CODEC')
  r.publish(new Uint8Array([0xff, 0xfe]))
  r.publish(new TextEncoder().encode('{"ok":1}'))
  await rejectsWith(t, () => j.tryRecv(), 'ERR_CODEC')
  t.deepEqual(j.tryRecv(), { ok: 1 }, 'the undecodable message is skipped, the stream goes on')
  const Tick = struct({ seq: 'u64' })
  const tickUrl = shm('codec2')
  await using s = await Hub.open(tickUrl, { codec: Tick })
  await using s2 = await Hub.open(tickUrl, { codec: Tick })
  await rejectsWith(t, () => s.publish({ seq: 1 as never }), 'ERR_CODEC')
  s.publish({ seq: 5n })
  t.deepEqual(s2.tryRecv(), { seq: 5n })
})

