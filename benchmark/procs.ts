// What the benchmark scripts share: their helper processes and the QUIC/TLS certificates.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

export const here = dirname(fileURLToPath(import.meta.url))
export const root = join(here, '..')

/** A helper process and the JSON lines it prints, one at a time. */
export interface Helper {
  proc: ChildProcess
  next: () => Promise<Record<string, unknown>>
}

/**
 * Runs `script` (a TypeScript file, with `args`) in its own Node process, on CPU `cpu`
 * (unpinned when undefined), with `env` added to this process's environment.
 */
export function spawnHelper(script: string, args: string[], cpu: number | undefined, env: Record<string, string> = {}): Helper {
  const argv = [process.execPath, '--import', 'tsx', script, ...args]
  const proc = spawn(cpu === undefined ? argv[0]! : 'taskset', cpu === undefined ? argv.slice(1) : ['-c', String(cpu), ...argv], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  })
  const lines: Record<string, unknown>[] = []
  const waiters: Array<(m: Record<string, unknown>) => void> = []
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    const m = JSON.parse(l) as Record<string, unknown>
    const w = waiters.shift()
    if (w) w(m)
    else lines.push(m)
  })
  return { proc, next: () => (lines.length ? Promise.resolve(lines.shift()!) : new Promise((r) => waiters.push(r))) }
}

/** A fresh directory with a CA and a server certificate for localhost (PEM). */
export function makePki(): string {
  const dir = mkdtempSync(join(tmpdir(), 'zerohop-bench-pki-'))
  const r = spawnSync('cargo', ['run', '-q', '--release', '-p', 'zerohop-tls', '--example', 'test_pki', '--', dir], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  if (r.status !== 0) throw new Error('cannot make the benchmark certificates')
  return dir
}
