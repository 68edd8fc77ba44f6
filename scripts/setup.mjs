#!/usr/bin/env node
// Brings a fresh clone (or a stale tree) up to date, then exits quickly when nothing
// changed. Run by `npm test`, `npm run demo` and `npm run bench` before they start:
//   1. `npm ci` when node_modules is missing or older than package-lock.json;
//   2. the native addon through `napi build` (cargo decides what to rebuild);
//   3. the TypeScript package through `tsc` when a source is newer than its output.
// Uses only Node built-ins, because it runs before dependencies are installed.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = join(root, 'packages', 'zerohop')
const quiet = process.argv.includes('--quiet')

function run(cmd, args, cwd = root) {
  if (!quiet) console.log(`[setup] ${cmd} ${args.join(' ')}`)
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit', env: process.env })
  if (r.status !== 0) {
    console.error(`[setup] failed: ${cmd} ${args.join(' ')} (exit ${r.status ?? r.signal})`)
    process.exit(r.status ?? 1)
  }
}

function mtime(path) {
  try {
    return statSync(path).mtimeMs
  } catch {
    return 0
  }
}

function newest(dir, exts) {
  let t = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) t = Math.max(t, newest(p, exts))
    else if (exts.some((e) => entry.name.endsWith(e))) t = Math.max(t, mtime(p))
  }
  return t
}

// 1. JavaScript dependencies.
const marker = join(root, 'node_modules', '.package-lock.json')
if (!existsSync(marker) || mtime(marker) < mtime(join(root, 'package-lock.json'))) {
  run('npm', ['ci', '--no-audit', '--no-fund'])
}

// 2. The native addon. cargo's own fingerprints make this a no-op when nothing changed,
//    but spawning napi + cargo costs a second or two, so skip it when the addon is
//    newer than every Rust source and manifest.
const addon = join(pkg, 'native', 'zerohop.linux-x64-gnu.node')
const rustNewest = Math.max(newest(join(root, 'crates'), ['.rs', '.toml']), mtime(join(root, 'Cargo.toml')), mtime(join(root, 'Cargo.lock')))
if (mtime(addon) < rustNewest || process.env.ZEROHOP_FORCE_BUILD) {
  run(
    'npx',
    [
      'napi', 'build', '--platform', '--release',
      '--manifest-path', '../../crates/zerohop-node/Cargo.toml',
      '-p', 'zerohop-node', '-o', 'native', '--js', 'binding.js', '--dts', 'binding.d.ts',
    ],
    pkg,
  )
}

// 3. The TypeScript package.
const built = join(pkg, 'dist', 'index.js')
const tsNewest = Math.max(newest(join(pkg, 'src'), ['.ts']), mtime(join(pkg, 'tsconfig.json')), mtime(join(pkg, 'native', 'binding.d.ts')))
if (mtime(built) < tsNewest) {
  run('npx', ['tsc', '-p', 'packages/zerohop'])
}
