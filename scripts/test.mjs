#!/usr/bin/env node
// `npm test`: every check, in the order that fails fastest, each printed with its
// time. Stops at the first failure with that step's exit code.
import { spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

const steps = [
  ['rustfmt', 'cargo', ['fmt', '--all', '--check']],
  ['clippy', 'cargo', ['clippy', '--workspace', '--all-targets', '--', '-D', 'warnings']],
  ['cargo test', 'cargo', ['test', '--workspace']],
  ['tsc --noEmit', 'npx', ['tsc', '--noEmit', '-p', '.']],
  ['oxlint', 'npx', ['oxlint', '--deny-warnings', 'packages/zerohop/src', '__test__', 'benchmark', 'examples', 'scripts']],
  ['ava', 'npx', ['ava']],
]

const only = process.argv.slice(2)
for (const [name, cmd, args] of steps) {
  if (only.length && !only.includes(name.split(' ')[0])) continue
  console.log(`\n=== ${name}: ${cmd} ${args.join(' ')}`)
  const t0 = Date.now()
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: process.env })
  const secs = ((Date.now() - t0) / 1000).toFixed(1)
  if (r.status !== 0) {
    console.error(`=== ${name} FAILED after ${secs}s (exit ${r.status ?? r.signal})`)
    process.exit(r.status ?? 1)
  }
  console.log(`=== ${name} ok (${secs}s)`)
}
