// Shared helpers for the ava suite: unique segment names and child processes that
// talk to the test in JSON lines on stdout.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import type { ExecutionContext } from 'ava'
import type { Hub, StatusEvent } from 'zerohop'

export const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures')

/** A segment name no other test (or test run) uses. */
export function uniqueName(tag: string): string {
  return `test-${tag}-${process.pid}-${randomBytes(4).toString('hex')}`
}

export interface Child {
  proc: ChildProcess
  /** Resolves with the next JSON line the child prints that has `type === type`. */
  next(type: string): Promise<Record<string, unknown>>
  /** Writes a line to the child's stdin. */
  send(line: string): void
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>
  stderr(): string
}

/**
 * Runs `fixtures/<script>` with `args`; stdout lines must be JSON objects with a `type`.
 * `wrapper` is a command that runs node (`['unshare', '-n']`, `['ip', 'netns', 'exec', ns]`).
 */
export function child(
  script: string,
  args: string[],
  env: Record<string, string> = {},
  nodeArgs: string[] = [],
  wrapper: string[] = [],
): Child {
  const argv = [...wrapper, process.execPath, ...nodeArgs, join(fixtures, script), ...args]
  const proc = spawn(argv[0]!, argv.slice(1), {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  })
  const queued: Record<string, unknown>[] = []
  const waiting: Array<{ type: string; resolve: (m: Record<string, unknown>) => void; reject: (e: Error) => void }> = []
  let err = ''
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  // Exited once its output is read too: the exit is often seen before the last lines
  // in the pipe (a test that kills a child reads what it printed before it died).
  let over = false
  const outputRead = new Promise<void>((resolve) => proc.stdout!.on('close', () => resolve()))
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1))).then(
    async (code) => {
      // (A grandchild holding the pipe open must not hold this up for long.)
      await Promise.race([outputRead, new Promise((r) => setTimeout(r, 2000))])
      over = true
      return code
    },
  )
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    let msg: Record<string, unknown>
    try {
      msg = JSON.parse(line) as Record<string, unknown>
    } catch {
      return
    }
    const i = waiting.findIndex((w) => w.type === msg.type)
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(msg)
    else queued.push(msg)
  })
  void exited.then((code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`${script} exited (${code}) before '${w.type}': ${err}`))
  })
  return {
    proc,
    exited,
    stderr: () => err,
    send: (line) => proc.stdin!.write(line + '\n'),
    next(type) {
      const i = queued.findIndex((m) => m.type === type)
      if (i >= 0) return Promise.resolve(queued.splice(i, 1)[0]!)
      if (over) return Promise.reject(new Error(`${script} already exited before '${type}': ${err}`))
      return new Promise((resolve, reject) => waiting.push({ type, resolve, reject }))
    },
  }
}

/**
 * Runs `fixtures/<script>` in a fresh network namespace (`unshare -n`) and returns its
 * `done` line, or undefined (logged as skipped) where namespaces cannot be made here or
 * the script says it cannot do its part (`{ type: 'skipped' }`). `started` gets the
 * child, for a test's clean-up.
 */
export async function inNamespace(
  t: ExecutionContext,
  script: string,
  args: string[],
  started: (c: Child) => void = () => {},
): Promise<{ code: number | string; done: Record<string, unknown> | undefined }> {
  const driver = child(script, args, {}, [], ['unshare', '-n'])
  started(driver)
  const code = await driver.exited
  const done = await driver.next('done').catch(() => undefined)
  if (done === undefined) t.log(`SKIPPED: cannot run ${script} in a network namespace here (exited ${code}): ${driver.stderr().slice(0, 300)}`)
  return { code, done }
}

/** Resolves with the first status event `pred` accepts (a hub hands a new listener the events it has not delivered yet). */
export function statusWhere(hub: Hub<unknown>, pred: (e: StatusEvent) => boolean, timeoutMs = 10_000): Promise<StatusEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new Error(`no such status event within ${timeoutMs} ms (status ${hub.status})`))
    }, timeoutMs)
    const off = hub.onStatus((e) => {
      if (!pred(e)) return
      clearTimeout(timer)
      off()
      resolve(e)
    })
  })
}

/**
 * Two hosts: network namespaces joined by a veth pair, `<net>.1` in the first and
 * `<net>.2` in the second (a /30); run a child in one with the wrapper
 * `['ip', 'netns', 'exec', name]`; also the names of the pair's two ends (`ip -n <ns>
 * link set <end> down` pulls the cable). Removed when the test ends. Undefined (the test
 * passes, saying why) where namespaces cannot be made.
 */
export function twoHosts(t: ExecutionContext, net: string): [a: string, b: string, aLink: string, bLink: string] | undefined {
  const id = process.pid % 100000
  const tag = net.split('.').at(-1)
  const [a, b, va, vb] = [`zhn${id}${tag}a`, `zhn${id}${tag}b`, `zhv${id}${tag}a`, `zhv${id}${tag}b`]
  const ip = (...args: string[]) => spawnSync('ip', args, { stdio: 'pipe' }).status === 0
  if (!ip('netns', 'add', a)) {
    t.log('SKIPPED: cannot create network namespaces here (ip netns add failed)')
    t.pass()
    return undefined
  }
  t.teardown(() => {
    ip('netns', 'del', a)
    ip('netns', 'del', b)
  })
  for (const args of [
    ['netns', 'add', b],
    ['link', 'add', va, 'type', 'veth', 'peer', 'name', vb],
    ['link', 'set', va, 'netns', a],
    ['link', 'set', vb, 'netns', b],
    ['-n', a, 'addr', 'add', `${net}.1/30`, 'dev', va],
    ['-n', b, 'addr', 'add', `${net}.2/30`, 'dev', vb],
    ['-n', a, 'link', 'set', va, 'up'],
    ['-n', b, 'link', 'set', vb, 'up'],
    ['-n', a, 'link', 'set', 'lo', 'up'],
    ['-n', b, 'link', 'set', 'lo', 'up'],
  ]) {
    t.true(ip(...args), `ip ${args.join(' ')}`)
  }
  return [a, b, va, vb]
}

/** A CA, server and client certificates in a new directory, made by crates/zerohop-tls/examples/test_pki.rs. */
export function pki(): string {
  const dir = mkdtempSync(join(tmpdir(), 'zerohop-pki-'))
  const r = spawnSync('cargo', ['run', '-q', '--release', '-p', 'zerohop-tls', '--example', 'test_pki', '--', dir], {
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`test_pki failed: ${r.stderr}`)
  return dir
}
