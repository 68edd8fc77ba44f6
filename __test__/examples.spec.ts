// The README's example is a real file, and it runs.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

test('the README quick-start example is examples/quickstart.ts, and it prints what its comments say', (t) => {
  const code = readFileSync(join(root, 'examples', 'quickstart.ts'), 'utf8')
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  t.true(readme.includes('```ts\n' + code + '```'), 'README.md must show examples/quickstart.ts verbatim')
  t.true(code.split('\n').length <= 26)
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'examples', 'quickstart.ts')], {
    cwd: root,
    encoding: 'utf8',
  })
  t.deepEqual(out.trim().split('\n'), ['{ seq: 1n, price: 50000, volume: 100n }', '50001', '3'])
})

test('the README UDP example is examples/udp.ts, and it prints what its comments say', (t) => {
  const code = readFileSync(join(root, 'examples', 'udp.ts'), 'utf8')
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  t.true(readme.includes('```ts\n' + code + '```'), 'README.md must show examples/udp.ts verbatim')
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'examples', 'udp.ts')], {
    cwd: root,
    encoding: 'utf8',
  })
  t.deepEqual(out.trim().split('\n'), ["{ sym: 'BTC', px: 50000 } true", '50001'])
})

test('the README QUIC example is examples/quic.ts, and it prints what its comments say', (t) => {
  const code = readFileSync(join(root, 'examples', 'quic.ts'), 'utf8')
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  t.true(readme.includes('```ts\n' + code + '```'), 'README.md must show examples/quic.ts verbatim')
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'examples', 'quic.ts')], {
    cwd: root,
    encoding: 'utf8',
  })
  t.deepEqual(out.trim().split('\n'), ['hello 0', 'welcome connected', '42'])
})
