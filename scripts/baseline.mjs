#!/usr/bin/env node
// Builds another revision of zerohop beside this checkout, for benchmarks that compare
// the two in one run (`BENCH_BASELINE=<rev> npm run bench`): a detached git worktree
// under target/bench-baseline/<commit>, set up with its own `scripts/setup.mjs` (its
// own node_modules and cargo target directory, so this checkout's build is untouched).
// Prints the worktree's directory. A second call with the same revision reuses it.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const rev = process.argv[2]
if (!rev) {
  console.error('usage: node scripts/baseline.mjs <git revision>')
  process.exit(2)
}

function run(cmd, args, cwd, env = process.env) {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', env })
  if (r.status !== 0) {
    console.error(`[baseline] failed: ${cmd} ${args.join(' ')}`)
    process.exit(r.status ?? 1)
  }
  return r.stdout.trim()
}

const commit = run('git', ['rev-parse', '--verify', `${rev}^{commit}`], root)
const dir = join(root, 'target', 'bench-baseline', commit.slice(0, 12))
if (!existsSync(join(dir, '.git'))) {
  mkdirSync(dirname(dir), { recursive: true })
  run('git', ['worktree', 'add', '--detach', '--force', dir, commit], root)
}
console.error(`[baseline] ${rev} = ${commit.slice(0, 12)} in ${dir}`)
run(process.execPath, [join(dir, 'scripts', 'setup.mjs'), '--quiet'], dir, { ...process.env, CARGO_TARGET_DIR: join(dir, 'target') })
console.log(dir)
