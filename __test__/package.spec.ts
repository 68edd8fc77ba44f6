// The prebuilt-binary path, as a user meets it: pack the platform package and the
// main package the way the release workflow does (`napi create-npm-dirs`, copy the
// binary in, write `optionalDependencies` as `napi pre-publish` would), install both
// into an empty project with no Rust toolchain on PATH, and use the library from
// CommonJS, from ESM, and from TypeScript with types.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkgDir = join(root, 'packages', 'zerohop')
const platform = 'linux-x64-gnu'

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  return execFileSync(cmd, args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

test('npm-packed platform + main packages install without Rust and work from CJS, ESM and TypeScript', (t) => {
  const work = mkdtempSync(join(tmpdir(), 'zerohop-pack-'))
  try {
    // 1. Stage the package as the release workflow sees it.
    const stage = join(work, 'stage')
    cpSync(pkgDir, stage, {
      recursive: true,
      filter: (src) => !src.includes(`${pkgDir}/npm`) && !src.endsWith('.node'),
    })
    const napi = join(root, 'node_modules', '.bin', 'napi')
    sh(napi, ['create-npm-dirs'], stage)
    const platformDir = join(stage, 'npm', platform)
    cpSync(join(pkgDir, 'native', `zerohop.${platform}.node`), join(platformDir, `zerohop.${platform}.node`))
    const manifest = JSON.parse(readFileSync(join(stage, 'package.json'), 'utf8')) as Record<string, unknown>
    manifest.optionalDependencies = { [`zerohop-${platform}`]: manifest.version }
    writeFileSync(join(stage, 'package.json'), JSON.stringify(manifest, null, 2))

    const tarballs = join(work, 'tarballs')
    mkdirSync(tarballs)
    sh('npm', ['pack', '--silent', '--pack-destination', tarballs], platformDir)
    sh('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', tarballs], stage)
    const files = readdirSync(tarballs).sort()
    t.deepEqual(files, [`zerohop-0.1.0.tgz`, `zerohop-${platform}-0.1.0.tgz`])
    const mainListing = sh('tar', ['-tzf', join(tarballs, 'zerohop-0.1.0.tgz')], work)
    t.false(mainListing.includes('.node'), 'the main package ships no binary')
    t.true(mainListing.includes('package/dist/index.d.ts'))

    // 2. An empty project, and a PATH without cargo or rustc.
    const app = join(work, 'app')
    mkdirSync(app)
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
    const path = (process.env.PATH ?? '')
      .split(delimiter)
      .filter((p) => !existsSync(join(p, 'cargo')) && !existsSync(join(p, 'rustc')))
    path.unshift(dirname(process.execPath))
    const env = { ...process.env, PATH: path.join(delimiter), npm_config_audit: 'false', npm_config_fund: 'false' }
    t.throws(() => sh('sh', ['-c', 'command -v cargo || command -v rustc'], app, env), undefined, 'no Rust toolchain on PATH')
    sh('npm', ['install', '--prefer-offline', join(tarballs, `zerohop-${platform}-0.1.0.tgz`), join(tarballs, 'zerohop-0.1.0.tgz')], app, env)
    t.true(existsSync(join(app, 'node_modules', `zerohop-${platform}`, `zerohop.${platform}.node`)))
    t.false(readdirSync(join(app, 'node_modules', 'zerohop', 'native')).some((f) => f.endsWith('.node')))

    // 3. CommonJS.
    const name = `pack-${process.pid}`
    const cjs = `
      const { Hub, ZerohopError } = require('zerohop')
      ;(async () => {
        const a = await Hub.open('shm://${name}-cjs'), b = await Hub.open('shm://${name}-cjs')
        a.publish(Buffer.from('cjs'))
        console.log(Buffer.from(b.tryRecv()).toString(), typeof ZerohopError)
        await a.close(); await b.close()
      })()`
    t.is(sh(process.execPath, ['-e', cjs], app, env).trim(), 'cjs function')

    // 4. ESM.
    const esm = `
      import { Hub, struct } from 'zerohop'
      const Tick = struct({ seq: 'u64', price: 'f64' })
      await using a = await Hub.open('shm://${name}-esm', { codec: Tick })
      const b = await Hub.open('shm://${name}-esm', { codec: Tick })
      a.publish({ seq: 3n, price: 1.5 })
      console.log(JSON.stringify(b.tryRecv(), (k, v) => typeof v === 'bigint' ? String(v) : v))`
    writeFileSync(join(app, 'esm.mjs'), esm.replace('await using a =', 'const a =') + '\nawait a.close()\nawait b.close()\n')
    t.is(sh(process.execPath, ['esm.mjs'], app, env).trim(), '{"seq":"3","price":1.5}')

    // 5. TypeScript: the published .d.ts type-check from ESM and from CommonJS.
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, lib: ['ES2023', 'ESNext.Disposable'], types: ['node'], skipLibCheck: false },
        files: ['check.mts', 'check.cts'],
      }),
    )
    const typed = `
      import { Hub, struct, ZerohopError, type HubMetrics, type ErrorCode } from 'zerohop'
      const Tick = struct({ seq: 'u64', price: 'f64' })
      export async function f(): Promise<number> {
        await using hub = await Hub.open('shm://x', { codec: Tick, backpressure: 'block' })
        hub.publish({ seq: 1n, price: 2 })
        const t = hub.tryRecv()
        const seq: bigint | undefined = t?.seq
        const m: HubMetrics = hub.metrics()
        const code: ErrorCode = new ZerohopError('ERR_TIMEOUT', 'x').code
        return m.published + (seq === undefined ? 0 : 1) + code.length
      }
      // @ts-expect-error a struct field must be a bigint
      export const bad = async () => (await Hub.open('shm://x', { codec: Tick })).publish({ seq: 1, price: 2 })
    `
    writeFileSync(join(app, 'check.mts'), typed)
    writeFileSync(join(app, 'check.cts'), typed.replace(/^\s*import (.*) from 'zerohop'$/m, "import $1 from 'zerohop'"))
    mkdirSync(join(app, 'node_modules', '@types'), { recursive: true })
    cpSync(join(root, 'node_modules', '@types', 'node'), join(app, 'node_modules', '@types', 'node'), { recursive: true })
    cpSync(join(root, 'node_modules', 'undici-types'), join(app, 'node_modules', 'undici-types'), { recursive: true })
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
    t.notThrows(() => sh(process.execPath, [tsc, '-p', 'tsconfig.json'], app, env))
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
})
