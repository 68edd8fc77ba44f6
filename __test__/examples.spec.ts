// The README's examples are real files, and they run.
import test, { type ExecutionContext } from 'ava'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { natsServer } from './nats-server.ts'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/** Checks that README.md shows examples/<file> verbatim and returns its code and the lines it prints. */
function runExample(t: ExecutionContext, file: string, env: Record<string, string> = {}): { code: string; printed: string[] } {
  const code = readFileSync(join(root, 'examples', file), 'utf8')
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  t.true(readme.includes('```ts\n' + code + '```'), `README.md must show examples/${file} verbatim`)
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'examples', file)], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, ...env },
  })
  return { code, printed: out.trim().split('\n') }
}

test('the README quick-start example is examples/quickstart.ts, and it prints what its comments say', (t) => {
  const { code, printed } = runExample(t, 'quickstart.ts')
  t.true(code.split('\n').length <= 26)
  t.deepEqual(printed, ['{ seq: 1n, price: 50000, volume: 100n }', '50001', '3'])
})

test('the README UDP example is examples/udp.ts, and it prints what its comments say', (t) => {
  t.deepEqual(runExample(t, 'udp.ts').printed, ["{ sym: 'BTC', px: 50000 } true", '50001'])
})

test('the README QUIC example is examples/quic.ts, and it prints what its comments say', (t) => {
  t.deepEqual(runExample(t, 'quic.ts').printed, ['hello 0', 'welcome connected', '42'])
})

test('the README sockets example is examples/sockets.ts, and it prints what its comments say', (t) => {
  t.deepEqual(runExample(t, 'sockets.ts').printed, ['ready peer:1 true', '42'])
})

test('the README KCP example is examples/kcp.ts, and it prints what its comments say', (t) => {
  t.deepEqual(runExample(t, 'kcp.ts').printed, ['{ x: 3, y: 4 } true', '42'])
})

test('the README NATS example is examples/nats.ts, and it prints what its comments say', async (t) => {
  const server = await natsServer()
  try {
    t.deepEqual(runExample(t, 'nats.ts', { NATS_SERVER: server.servers }).printed, ['prices.eur { bid: 1.08 }', '49'])
  } finally {
    await server.stop()
  }
})

test('the README example of Rpc over shared memory is examples/rpc-shm.ts, and it prints what its comments say', (t) => {
  t.deepEqual(runExample(t, 'rpc-shm.ts').printed, ['42 1'])
})
