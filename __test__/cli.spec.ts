// `zerohop <command>` (packages/zerohop/src/cli.ts) run as a subprocess, its exit code and
// output checked: pub to sub, req to reply, ls, help and the errors scripts rely on.
import { spawn, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import test from 'ava'
import { Hub, Rpc } from 'zerohop'
import { uniqueName } from './helpers.ts'

const cli = join(import.meta.dirname, '..', 'packages', 'zerohop', 'dist', 'cli.js')

interface Run {
  /** Resolves with the exit code once the output is read. */
  done: Promise<number>
  stdout(): string
  stderr(): string
  /** Resolves once stderr has a line matching `re` (the match). */
  said(re: RegExp): Promise<RegExpMatchArray>
  stdin: NodeJS.WritableStream
  kill(): void
  /** Ctrl-C. */
  interrupt(): void
}

function zerohop(...args: string[]): Run {
  const p = spawn(process.execPath, [cli, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  const watchers: Array<[RegExp, (m: RegExpMatchArray) => void]> = []
  p.stdout.on('data', (d: Buffer) => (out += d.toString()))
  p.stderr.on('data', (d: Buffer) => {
    err += d.toString()
    for (const [re, resolve] of watchers.splice(0)) {
      const m = err.match(re)
      if (m) resolve(m)
      else watchers.push([re, resolve])
    }
  })
  const closed = new Promise<number>((resolve) => p.on('close', (code) => resolve(code ?? -1)))
  const timer = setTimeout(() => p.kill('SIGKILL'), 30_000)
  return {
    done: closed.finally(() => clearTimeout(timer)),
    stdout: () => out,
    stderr: () => err,
    said: (re) => new Promise((resolve) => (err.match(re) ? resolve(err.match(re)!) : watchers.push([re, resolve]))),
    stdin: p.stdin,
    kill: () => p.kill('SIGKILL'),
    interrupt: () => p.kill('SIGINT'),
  }
}

test('--help names every command; each command has its own; an unknown command or option is exit 2', async (t) => {
  const help = zerohop('--help')
  t.is(await help.done, 0)
  for (const c of ['pub', 'sub', 'req', 'reply', 'ping', 'pong', 'bench', 'doctor', 'ls']) {
    t.regex(help.stdout(), new RegExp(`^  ${c} `, 'm'))
    const own = zerohop(c, '--help')
    t.is(await own.done, 0)
    t.regex(own.stdout(), new RegExp(`^zerohop ${c}`))
  }
  const none = zerohop('nope')
  t.is(await none.done, 2)
  t.regex(none.stderr(), /no command 'nope'/)
  const bad = zerohop('sub', 'shm://x', '--bogus')
  t.is(await bad.done, 2)
  t.regex(bad.stderr(), /--bogus/)
  const noUrl = zerohop('pub')
  t.is(await noUrl.done, 2)
})

test('pub to sub over shm://: text as text, bytes that are not text as hex, stdin lines, --json', async (t) => {
  const url = `shm://${uniqueName('cli')}`
  const sub = zerohop('sub', url, '--count', '6')
  const json = zerohop('sub', url, '--count', '6', '--json')
  await sub.said(/ready/)
  await json.said(/ready/)
  t.is(await zerohop('pub', url, 'hello', '--count', '2').done, 0)
  t.is(await zerohop('pub', url, '--size', '3').done, 0)
  const lines = zerohop('pub', url, '-')
  lines.stdin.end('one\ntwo\nthree\n')
  t.is(await lines.done, 0)
  t.is(await sub.done, 0, sub.stderr())
  t.deepEqual(sub.stdout().trim().split('\n'), ['hello', 'hello', '000000', 'one', 'two', 'three'])
  t.is(await json.done, 0)
  const first = JSON.parse(json.stdout().split('\n')[0]!) as { value: string }
  t.is(first.value, 'hello')
})

test('req to reply over tcp:// with JSON: an echo, then --text; reply exits after --count; a request with no server is exit 1 with its code', async (t) => {
  const echo = zerohop('reply', 'tcp://127.0.0.1:0', '--codec', 'json', '--count', '2')
  const [, url] = (await echo.said(/serving (\S+)/)) as unknown as [string, string]
  const a = zerohop('req', url, '{"a":[1,2]}', '--codec', 'json')
  t.is(await a.done, 0, a.stderr())
  t.is(a.stdout(), '{"a":[1,2]}\n')
  const b = zerohop('req', url, '-', '--codec', 'json')
  b.stdin.end('"x"\n')
  t.is(await b.done, 0, b.stderr())
  t.is(b.stdout(), '"x"\n')
  t.is(await echo.done, 0, echo.stderr())
  const text = zerohop('reply', `shm://${uniqueName('cli-rpc')}`, '--text', 'pong', '--count', '1')
  const [, shmUrl] = (await text.said(/serving (\S+)/)) as unknown as [string, string]
  const c = zerohop('req', shmUrl, 'ping')
  t.is(await c.done, 0, c.stderr())
  t.is(c.stdout(), 'pong\n')
  t.is(await text.done, 0)
  const nobody = zerohop('req', 'tcp://127.0.0.1:1', 'x', '--timeout', '300')
  t.is(await nobody.done, 1)
  t.regex(nobody.stderr(), /^error ERR_\w+: /)
})

test('ls lists the shared-memory channels of the host with who publishes and reads (--json as Hub.list() says)', async (t) => {
  const name = uniqueName('cli-ls')
  await using pub = await Hub.open(`shm://${name}`, { role: 'publisher' })
  await using sub = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  pub.publish(new Uint8Array(1))
  const json = zerohop('ls', '--json')
  t.is(await json.done, 0)
  const listed = (JSON.parse(json.stdout()) as { name: string; publishers: { pid: number }[]; subscribers: { pid: number; lag: number }[] }[]).find((s) => s.name === name)
  t.truthy(listed, json.stdout())
  t.deepEqual(listed!.publishers.map((p) => p.pid), [process.pid])
  t.like(listed!.subscribers[0], { pid: process.pid, lag: 1 })
  const text = zerohop('ls')
  t.is(await text.done, 0)
  t.regex(text.stdout(), new RegExp(`^${name}\\n  publishers:  ${process.pid}\\n  subscribers: ${process.pid} \\(1 behind`, 'm'))
  t.truthy(sub)
})

test('ls before and after a process dies: a subscriber of another process is listed while it lives, and gone once it was killed', async (t) => {
  const name = uniqueName('cli-ls-dies')
  await using pub = await Hub.open(`shm://${name}`, { role: 'publisher' })
  const other = spawn(process.execPath, [join(import.meta.dirname, 'fixtures', 'idle.mjs'), name, '60000'], { stdio: 'ignore' })
  const subscribers = async (): Promise<number[]> => {
    const run = zerohop('ls', '--json')
    t.is(await run.done, 0, run.stderr())
    const found = (JSON.parse(run.stdout()) as { name: string; subscribers: { pid: number }[] }[]).find((c) => c.name === name)
    return found?.subscribers.map((x) => x.pid) ?? []
  }
  let listed: number[] = []
  for (let i = 0; i < 100 && !listed.includes(other.pid!); i++) listed = await subscribers()
  t.deepEqual(listed, [other.pid!], 'listed while it lives')
  other.kill('SIGKILL')
  await new Promise((r) => other.once('exit', r))
  t.deepEqual(await subscribers(), [], 'gone once killed')
  t.truthy(pub)
})

test('ping to pong over shm:// and tcp://: the round trips, with percentiles (--json), none lost; pong exits after --count', async (t) => {
  for (const url of [`shm://${uniqueName('cli-rtt')}`, 'tcp://127.0.0.1:0?listen=true']) {
    const pong = zerohop('pong', url, '--count', '300')
    const [, where] = (await pong.said(/ready (\S+)/)) as unknown as [string, string]
    const ping = zerohop('ping', where, '--count', '200', '--json', '--size', '16')
    t.is(await ping.done, 0, ping.stderr())
    const r = JSON.parse(ping.stdout()) as { count: number; p50Us: number; p99Us: number; p999Us: number; maxUs: number; lost: number }
    t.like(r, { count: 200, lost: 0 })
    t.true(r.p50Us > 0 && r.p50Us <= r.p99Us && r.p99Us <= r.p999Us && r.p999Us <= r.maxUs, JSON.stringify(r))
    t.is(await pong.done, 0, pong.stderr())
  }
})

test('doctor: each look with a verdict and, where it warns, the command that fixes it; exit 3 when one warns', async (t) => {
  type Report = { checks: { name: string; status: string; value: string; detail: string; fix?: string; operations?: { name: string; usedFor: string; supported: boolean }[] }[] }
  const run = zerohop('doctor', '--json')
  const code = await run.done
  const { checks } = JSON.parse(run.stdout()) as Report
  t.deepEqual(
    checks.map((c) => c.name),
    ['io_uring', 'UDP receive buffer', 'UDP send buffer', 'SO_BUSY_POLL', 'memfd', '/dev/shm', 'open files', 'CPUs', 'network namespaces'],
  )
  for (const c of checks) {
    t.true(c.status === 'ok' || c.status === 'warn', c.name)
    t.true(c.value.length > 0 && c.detail.length > 0, c.name)
    if (c.status === 'warn' && c.name !== 'CPUs' && c.name !== 'memfd') t.truthy(c.fix, `${c.name} says how to fix it`)
  }
  t.is(code, checks.every((c) => c.status === 'ok') ? 0 : 3)
  // Which io_uring operations zerohop uses this kernel has (io_uring is enabled on the machines this runs on).
  const uring = checks.find((c) => c.name === 'io_uring')!
  t.deepEqual(
    uring.operations?.map((o) => o.name),
    ['IORING_OP_RECVMSG', 'IORING_OP_SEND_ZC', 'IORING_OP_ASYNC_CANCEL'],
  )
  for (const o of uring.operations!) {
    t.true(o.usedFor.length > 0)
    t.is(uring.value.includes(o.name.replace('IORING_OP_', '')), true, `${o.name} is named in the verdict`)
  }
  t.is(uring.status === 'ok', uring.operations!.every((o) => o.supported))
  // Fewer open files than a listener with many clients needs: a warning, and its fix.
  const low = spawnSync('sh', ['-c', `ulimit -n 1000 && exec "${process.execPath}" "${cli}" doctor --json`], { encoding: 'utf8' })
  t.is(low.status, 3, low.stderr)
  t.like((JSON.parse(low.stdout) as Report).checks.find((c) => c.name === 'open files'), { status: 'warn', value: 'ulimit -n 1000', fix: 'ulimit -n 65536' })
})

test('ls --net lists the listening hubs of this host, and forgets one that closed or was killed', async (t) => {
  type Listed = { url: string; transport: string; pid: number }
  const net = async (): Promise<Listed[]> => {
    const run = zerohop('ls', '--net', '--json')
    t.is(await run.done, 0, run.stderr())
    return (JSON.parse(run.stdout()) as Listed[]).filter((e) => e.transport !== 'shm')
  }
  const pong = zerohop('pong', 'tcp://127.0.0.1:0?listen=true')
  const [, url] = (await pong.said(/ready (\S+)/)) as unknown as [string, string]
  const server = await Rpc.serve('uds://@' + uniqueName('cli-ls'), () => 'x')
  const listed = await net()
  t.truthy(listed.find((e) => e.url === url && e.transport === 'tcp'), JSON.stringify(listed))
  t.truthy(listed.find((e) => e.transport === 'uds' && e.pid === process.pid), 'an Rpc server is listed')
  await server.close()
  t.falsy((await net()).find((e) => e.transport === 'uds' && e.pid === process.pid), 'gone once closed')
  pong.kill()
  await pong.done
  t.falsy((await net()).find((e) => e.url === url), 'gone once its process died')
  const text = zerohop('ls', '--net')
  t.is(await text.done, 0)
  t.regex(text.stdout(), /no shared-memory channels|publishers:/)
})

test('ls --watch looks again every second until interrupted (a JSON document a line with --json)', async (t) => {
  const watch = zerohop('ls', '--watch', '--json')
  for (let i = 0; i < 400 && watch.stdout().split('\n').filter(Boolean).length < 2; i++) await new Promise((r) => setTimeout(r, 10))
  watch.interrupt()
  t.is(await watch.done, 0, watch.stderr())
  const looks = watch.stdout().split('\n').filter(Boolean)
  t.true(looks.length >= 2, `${looks.length} looks`)
  for (const l of looks) t.true(Array.isArray(JSON.parse(l)))
})
