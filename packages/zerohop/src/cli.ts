#!/usr/bin/env node
/**
 * `npx zerohop <command>`: try and operate zerohop from a shell, through the public API
 * only (as `nats pub/sub` and `iox2 service list` do for theirs).
 *
 * Exit codes: 0 done; 1 a zerohop error (its code and message on stderr, as
 * `error ERR_…: …`); 2 a command line this does not understand (with the usage).
 */
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { writeFileSync } from 'node:fs'
import { html, markdown, runBench, table, WORKLOADS } from './bench/index.js'
import { Bridge, diagnose, Hub, type ListenerInfo, Rpc, type SegmentInfo, ZerohopError, type CodecOption } from './index.js'

/** A command line this does not understand: exit 2 with the usage. */
class UsageError extends Error {}

interface Command {
  /** One line for the overview. */
  summary: string
  /** `--help`: what it does, its options and examples. */
  help: string
  run(args: string[]): Promise<void>
}

const CODEC_HELP = '  --codec raw|json|msgpack  how messages become bytes (default raw)'

const commands: Record<string, Command> = {
  pub: {
    summary: 'publish a message (or each line of stdin) to URL',
    help: `zerohop pub URL [MESSAGE|-] [options]

Publishes MESSAGE to URL (with -, each line of stdin; with neither, --size bytes).
A connecting hub waits (up to 10 s) to be connected first; the hub lingers on close
until what it published is delivered.

  --count N        publish it N times (default 1)
  --rate R         at most R messages a second
  --size BYTES     without MESSAGE: messages of BYTES bytes (default 16)
${CODEC_HELP} (json: MESSAGE is JSON)

  zerohop pub shm://prices '{"bid":1.5}' --codec json
  seq 1 100 | zerohop pub tcp://127.0.0.1:7000 -
  zerohop pub udp://127.0.0.1:0?peers=127.0.0.1:9000 --size 64 --count 1000 --rate 100`,
    run: pub,
  },
  sub: {
    summary: 'print each message received on URL, one a line',
    help: `zerohop sub URL [options]

Prints each message received on URL, one a line: raw bytes as UTF-8 text when they
are valid UTF-8 (hex otherwise), json and msgpack values as JSON. Prints "ready" on
stderr once it receives.

  --count N        exit after N messages
  --json           each line a JSON object: { "value", "from", "channel" }
  --hex            raw bytes always as hex
${CODEC_HELP}

  zerohop sub shm://prices --codec json
  zerohop sub 'tcp://0.0.0.0:7000?listen=true' --count 10 --json`,
    run: sub,
  },
  req: {
    summary: 'send a request (or each line of stdin) to the Rpc server at URL and print the reply',
    help: `zerohop req URL [REQUEST|-] [options]

Sends REQUEST (with -, each line of stdin) to the Rpc server at URL, and prints each
reply as sub prints a message. Exit 1 if a request fails (its error on stderr).

  --timeout MS     give up on connecting, and on each request, after MS milliseconds
                   (default 10000)
${CODEC_HELP} (json: REQUEST is JSON)

  zerohop req shm://calc 21 --codec json`,
    run: req,
  },
  reply: {
    summary: 'answer the requests sent to URL (Rpc): with each request, or with --text',
    help: `zerohop reply URL [options]

Serves Rpc on URL: answers each request with itself (an echo), or with --text. Prints
"serving URL" on stderr (with the bound address) once it does.

  --text TEXT      answer with TEXT (json: TEXT is JSON)
  --count N        exit after N requests
${CODEC_HELP}

  zerohop reply tcp://127.0.0.1:7000 --codec json --text '"pong"'`,
    run: reply,
  },
  ping: {
    summary: 'round trips to a pong on URL, with percentiles as they come',
    help: `zerohop ping URL [options]

Sends a message to URL and waits for it to come back from \`zerohop pong URL\`, again
and again, printing the round trips' percentiles (µs) every second and at the end.
Over the network one side listens (\`?listen=true\` on the pong's URL).

  --count N        N round trips (default 10000), after 100 to warm up
  --size BYTES     of each message (default 64, at least 8)
  --interval MS    wait MS milliseconds between round trips (default 0: back to back)
  --json           only the end, as one JSON object:
                   { "count", "p50Us", "p99Us", "p999Us", "maxUs", "lost" }

  zerohop pong shm://rtt &  zerohop ping shm://rtt --count 100000
  zerohop pong 'tcp://127.0.0.1:7000?listen=true' &  zerohop ping tcp://127.0.0.1:7000`,
    run: ping,
  },
  pong: {
    summary: 'send back every message received on URL (for zerohop ping)',
    help: `zerohop pong URL [options]

Sends back every message it receives on URL, for \`zerohop ping\`. Prints "ready URL"
on stderr once it receives (a listener's URL with its bound address: what ping dials).

  --count N        exit after N messages

  zerohop pong shm://rtt`,
    run: pong,
  },
  bridge: {
    summary: 'forward a local hub to a NATS subject (and back, with --both)',
    help: `zerohop bridge LOCAL REMOTE [options]

Forwards what LOCAL receives to REMOTE until stopped (Ctrl-C): typically a shared-memory
hub to a NATS subject, so that local processes publish through shared memory and one
bridge carries the stream across sites. Nothing it forwards comes back to it (no echo,
an origin header); bridges must form a tree (no cycles).
Prints "ready" on stderr once both sides are open, and on exit the counts as JSON.

  --both           forward both ways
  --in             forward REMOTE to LOCAL only
  --origin NAME    what the NATS side says it is (default: a hash of the host name and LOCAL)
  --every SECONDS  print the counts as JSON every SECONDS

  zerohop bridge shm://prices nats://127.0.0.1:4222/prices --both`,
    run: bridge,
  },
  bench: {
    summary: "every transport against this machine's alternatives (Node net, dgram, zeromq, nats, sockperf), side by side",
    help: `zerohop bench [CONTENDER…] [options]

Measures zerohop's transports (shm, udp, kcp, quic, tcp, uds) against the alternatives
this machine has: Node net over a Unix socket (net-uds) and TCP (net-tcp), dgram,
zeromq and nats (when the packages are installed; nats also needs a nats-server on the
PATH) and sockperf (sockperf-udp, sockperf-tcp: C, the kernel's floor). Rounds run
every contender in turn, interleaved; this process and the peer process it starts are
pinned to different CPUs where there are two. Percentiles come from an HDR histogram.
Naming contenders (or peers: zerohop, net, sockperf…) runs those; naming no zerohop
transport runs them all, naming no alternative runs every alternative.

Workloads: rtt (round trips of 64 B, one at a time), oneway (a stream of 64 B
messages as fast as the sender goes: the rate received, and the latency of delivery),
oneway-4k (the same with 4 KiB).

  --workload W,…   only these workloads
  --rounds N       rounds (default 3)
  --quick          a short run: fewer messages, one round
  --json           one JSON object: { "rows": [ { "transport", "peer", "kind",
                   "workload", "sizeBytes", "p50Us", "p90Us", "p99Us", "p999Us",
                   "p9999Us", "maxUs", "msgsPerSec", "mbPerSec", "sent", "lost",
                   "vsBest" } ], "skipped": [ { "id", "reason" } ], "machine": {…} }
  --markdown       the tables in Markdown
  --html FILE      also write FILE: a page with latency-distribution plots

  zerohop bench --quick
  zerohop bench shm udp --workload rtt --html bench.html`,
    run: bench,
  },
  doctor: {
    summary: "what this machine's kernel and limits allow zerohop, and how to fix what they do not",
    help: `zerohop doctor [options]

Looks at io_uring, the UDP socket buffers the kernel grants against what zerohop asks,
SO_BUSY_POLL, memfd, /dev/shm's free space, open files, CPUs and network namespaces:
each with a verdict (ok, or warn: zerohop works, slower or with less) and the command
that fixes it. Exit 0 when every look is ok, 3 when one warns.

  --json           one JSON object: { "checks": [ { "name", "status", "value", "detail", "fix" } ] }

  zerohop doctor`,
    run: doctor,
  },
  ls: {
    summary: 'list the shared-memory channels of this host, with who publishes and reads',
    help: `zerohop ls [options]

Lists the live shared-memory channels (Hub.list()): each with its publishers, and its
subscribers with how far behind they are and how fast they read.

  --net            the listening hubs of this host too (network transports, Rpc servers)
  --watch          again every second, until interrupted
  --json           the list as Hub.list() returns it, one JSON document (a line each with --watch)

  zerohop ls --net
  zerohop ls --watch`,
    run: ls,
  },
}

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length))
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`)
  return `zerohop <command> [options]   (zerohop <command> --help for its options and examples)\n\n${lines.join('\n')}`
}

function parse<O extends Record<string, { type: 'string' | 'boolean' }>>(args: string[], options: O, positionals: number) {
  let parsed
  try {
    parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean' } }, allowPositionals: true, strict: true })
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
  if (parsed.positionals.length > positionals) throw new UsageError(`unexpected argument '${parsed.positionals[positionals]}'`)
  return parsed as { values: { [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string }; positionals: string[] }
}

/** `--name`'s value as a whole number ≥ `min`, or `fallback`. */
function count(value: string | undefined, name: string, fallback: number, min = 1): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be a whole number ≥ ${min}, got '${value}'`)
  return n
}

function codecOf(value: string | undefined): CodecOption<unknown> {
  if (value === undefined || value === 'raw') return 'raw'
  if (value === 'json' || value === 'msgpack') return value
  throw new UsageError(`--codec must be raw, json or msgpack, got '${value}'`)
}

/** The first positional: the URL. */
function urlOf(positionals: string[]): string {
  const url = positionals[0]
  if (url === undefined) throw new UsageError('a URL is needed')
  return url
}

const utf8 = new TextEncoder()
const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

/** What a command line's text is as a value of `codec`. */
function valueOf(text: string, codec: CodecOption<unknown>): unknown {
  if (codec === 'raw') return utf8.encode(text)
  try {
    return JSON.parse(text)
  } catch {
    throw new UsageError(`not JSON: ${text}`)
  }
}

/** How a value is printed: raw bytes as text when valid UTF-8 (else hex), others as JSON. */
function show(value: unknown, hex: boolean): string {
  if (value instanceof Uint8Array) {
    if (!hex) {
      try {
        const text = strictUtf8.decode(value)
        // (Text a line can show: no line breaks nor other control characters.)
        // oxlint-disable-next-line no-control-regex
        if (!/[\u0000-\u0008\u000a-\u001f\u007f]/.test(text)) return text
      } catch {
        // Not UTF-8: hex.
      }
    }
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')
  }
  return JSON.stringify(value)
}

/** Lines of stdin, one at a time. */
async function* stdinLines(): AsyncGenerator<string> {
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) yield line
}

/** What a client dials to reach a listener opened on `url`: its scheme and bound address (`url` itself where there is none). */
function bound(url: string, localAddress: string | undefined): string {
  return localAddress === undefined ? url : `${url.slice(0, url.indexOf('://') + 3)}${localAddress}`
}

/** Waits (up to `ms`) until a hub that connects is connected. */
async function connected(hub: Hub<unknown>, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (hub.status !== 'connected') {
    if (Date.now() > deadline) throw new ZerohopError('ERR_TIMEOUT', `not connected to ${hub.url} within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

async function pub(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { count: { type: 'string' }, rate: { type: 'string' }, size: { type: 'string' }, codec: { type: 'string' } }, 2)
  const url = urlOf(positionals)
  const codec = codecOf(values.codec)
  const times = count(values.count, 'count', 1)
  const rate = values.rate === undefined ? undefined : Number(values.rate)
  if (rate !== undefined && !(rate > 0)) throw new UsageError(`--rate must be a number above 0, got '${values.rate}'`)
  const message = positionals[1]
  if (message !== undefined && values.size !== undefined) throw new UsageError('--size is for messages made up here: give a MESSAGE or --size, not both')
  if (message === undefined && codec !== 'raw') throw new UsageError(`a ${codec} message is needed (--size makes raw bytes)`)
  const hub = await Hub.open<unknown>(url, { codec, role: 'publisher' } as never)
  try {
    await connected(hub, 10_000)
    let sent = 0
    const start = performance.now()
    const send = async (value: unknown): Promise<void> => {
      for (let i = 0; i < times; i++) {
        if (rate !== undefined) {
          const due = start + (sent / rate) * 1000
          const wait = due - performance.now()
          if (wait > 0) await new Promise((r) => setTimeout(r, wait))
        }
        await hub.send(value)
        sent++
      }
    }
    if (message === '-') {
      for await (const line of stdinLines()) await send(valueOf(line, codec))
    } else if (message !== undefined) {
      await send(valueOf(message, codec))
    } else {
      await send(new Uint8Array(count(values.size, 'size', 16, 0)))
    }
  } finally {
    await hub.close()
  }
}

async function sub(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { count: { type: 'string' }, json: { type: 'boolean' }, hex: { type: 'boolean' }, codec: { type: 'string' } }, 1)
  const url = urlOf(positionals)
  const codec = codecOf(values.codec)
  const limit = count(values.count, 'count', Infinity)
  const hub = await Hub.open<unknown>(url, { codec, role: 'subscriber' } as never)
  const stop = (): void => void hub.close({ lingerMs: 0 })
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  process.stderr.write('ready\n')
  try {
    for (let n = 0; n < limit; n++) {
      let m
      try {
        m = await hub.recvMessage()
      } catch (e) {
        if (hub.isClosed) return
        throw e
      }
      const line = values.json
        ? JSON.stringify({ value: m.value instanceof Uint8Array ? show(m.value, values.hex === true) : m.value, from: m.from, channel: m.channel })
        : show(m.value, values.hex === true)
      process.stdout.write(`${line}\n`)
    }
  } finally {
    process.off('SIGINT', stop)
    process.off('SIGTERM', stop)
    await hub.close({ lingerMs: 0 })
  }
}

async function req(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { timeout: { type: 'string' }, codec: { type: 'string' } }, 2)
  const url = urlOf(positionals)
  const codec = codecOf(values.codec)
  const timeoutMs = count(values.timeout, 'timeout', 10_000)
  const request = positionals[1]
  if (request === undefined) throw new UsageError('a REQUEST (or -, for each line of stdin) is needed')
  const rpc = await Rpc.connect<unknown, unknown>(url, { codec, connectTimeoutMs: timeoutMs } as never)
  try {
    const ask = async (text: string): Promise<void> => {
      process.stdout.write(`${show(await rpc.request(valueOf(text, codec), { timeoutMs }), false)}\n`)
    }
    if (request === '-') {
      for await (const line of stdinLines()) await ask(line)
    } else {
      await ask(request)
    }
  } finally {
    await rpc.close()
  }
}

async function reply(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { text: { type: 'string' }, count: { type: 'string' }, codec: { type: 'string' } }, 1)
  const url = urlOf(positionals)
  const codec = codecOf(values.codec)
  const limit = count(values.count, 'count', Infinity)
  const answer = values.text === undefined ? undefined : valueOf(values.text, codec)
  let done: () => void = () => {}
  const finished = new Promise<void>((resolve) => (done = resolve))
  let answered = 0
  const server = await Rpc.serve<unknown, unknown>(
    url,
    (request) => {
      if (++answered >= limit) setImmediate(done)
      return answer ?? request
    },
    { codec } as never,
  )
  process.once('SIGINT', done)
  process.once('SIGTERM', done)
  process.stderr.write(`serving ${bound(url, server.localAddress)}\n`)
  await finished
  process.off('SIGINT', done)
  process.off('SIGTERM', done)
  await server.close()
}

/**
 * The next message of `hub`: looked for on this thread for a few tens of µs (an answer
 * often comes within them, a wake-up later), then waited for up to `timeoutMs`
 * (undefined: none came); without `timeoutMs`, for as long as it takes.
 */
async function answer(hub: Hub<Uint8Array>, timeoutMs?: number): Promise<Uint8Array | undefined> {
  const until = performance.now() + 0.05
  do {
    const m = hub.tryRecv()
    if (m !== undefined) return m
  } while (performance.now() < until)
  if (timeoutMs === undefined) return hub.recv()
  return hub.recv({ timeoutMs }).catch((e: unknown) => {
    if ((e as { code?: string }).code === 'ERR_TIMEOUT') return undefined
    throw e
  })
}

/** Percentiles (µs) of round trips (ns), and the most. */
function percentiles(ns: Float64Array): { p50Us: number; p99Us: number; p999Us: number; maxUs: number } {
  const s = ns.slice().sort()
  const at = (q: number): number => Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]! / 10) / 100
  return { p50Us: at(0.5), p99Us: at(0.99), p999Us: at(0.999), maxUs: at(1) }
}

async function ping(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { count: { type: 'string' }, size: { type: 'string' }, interval: { type: 'string' }, json: { type: 'boolean' } }, 1)
  const url = urlOf(positionals)
  const n = count(values.count, 'count', 10_000)
  const size = count(values.size, 'size', 64, 8)
  const interval = count(values.interval, 'interval', 0, 0)
  const hub = await Hub.open(url)
  const message = new Uint8Array(size)
  const tag = new DataView(message.buffer)
  const rtts = new Float64Array(n)
  let lost = 0
  let last = performance.now()
  try {
    await connected(hub, 10_000)
    for (let i = -100, done = 0; done < n; i++) {
      // Each message numbered, so that a late answer is not taken for the next one's.
      tag.setFloat64(0, i, true)
      const t0 = process.hrtime.bigint()
      if (!hub.publish(message)) await hub.send(message)
      let back: Uint8Array | undefined
      for (;;) {
        back = await answer(hub, 1000)
        if (back === undefined || (back.length >= 8 && new DataView(back.buffer, back.byteOffset, 8).getFloat64(0, true) === i)) break
      }
      if (back === undefined) {
        lost++
        continue
      }
      if (i >= 0) rtts[done++] = Number(process.hrtime.bigint() - t0)
      if (!values.json && performance.now() - last >= 1000 && done > 0) {
        last = performance.now()
        const p = percentiles(rtts.subarray(0, done))
        process.stdout.write(`${done} round trips: p50 ${p.p50Us} µs, p99 ${p.p99Us} µs, p99.9 ${p.p999Us} µs, max ${p.maxUs} µs\n`)
      }
      if (interval > 0) await new Promise((r) => setTimeout(r, interval))
    }
  } finally {
    await hub.close({ lingerMs: 0 })
  }
  const p = percentiles(rtts)
  process.stdout.write(
    values.json
      ? `${JSON.stringify({ count: n, ...p, lost })}\n`
      : `${n} round trips of ${size} B over ${hub.transport}://: p50 ${p.p50Us} µs, p99 ${p.p99Us} µs, p99.9 ${p.p999Us} µs, max ${p.maxUs} µs${lost > 0 ? `, ${lost} lost` : ''}\n`,
  )
}

async function pong(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { count: { type: 'string' } }, 1)
  const url = urlOf(positionals)
  const limit = count(values.count, 'count', Infinity)
  const hub = await Hub.open(url)
  const stop = (): void => void hub.close({ lingerMs: 0 })
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  process.stderr.write(`ready ${bound(url, hub.localAddress)}\n`)
  try {
    for (let n = 0; n < limit; n++) {
      let m
      try {
        m = (await answer(hub))!
      } catch (e) {
        if (hub.isClosed) return
        throw e
      }
      if (!hub.publish(m)) await hub.send(m)
    }
  } finally {
    process.off('SIGINT', stop)
    process.off('SIGTERM', stop)
    await hub.close()
  }
}

async function bridge(args: string[]): Promise<void> {
  const { values, positionals } = parse(
    args,
    { both: { type: 'boolean' }, in: { type: 'boolean' }, origin: { type: 'string' }, every: { type: 'string' } },
    2,
  )
  if (positionals.length !== 2) throw new UsageError('give LOCAL and REMOTE')
  if (values.both && values.in) throw new UsageError('--both or --in, not both')
  const every = values.every === undefined ? undefined : count(values.every, 'every', 0)
  const b = await Bridge.start(positionals[0]!, positionals[1]!, {
    direction: values.both ? 'both' : values.in ? 'in' : 'out',
    ...(values.origin !== undefined && { origin: values.origin }),
  })
  process.stderr.write(`ready ${positionals[0]} ${values.both ? '<->' : values.in ? '<-' : '->'} ${positionals[1]}\n`)
  const print = (): void => void process.stdout.write(`${JSON.stringify(b.metrics())}\n`)
  const timer = every === undefined ? undefined : setInterval(print, every * 1000)
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  clearInterval(timer)
  await b.close()
  print()
}

async function bench(args: string[]): Promise<void> {
  const { values, positionals } = parse(
    args,
    { workload: { type: 'string' }, rounds: { type: 'string' }, quick: { type: 'boolean' }, json: { type: 'boolean' }, markdown: { type: 'boolean' }, html: { type: 'string' } },
    Infinity,
  )
  if (values.json && values.markdown) throw new UsageError('--json or --markdown, not both')
  const workloads = values.workload?.split(',').filter((w) => w !== '')
  for (const w of workloads ?? []) if (!WORKLOADS.some((x) => x.id === w)) throw new UsageError(`no workload '${w}' (there are ${WORKLOADS.map((x) => x.id).join(', ')})`)
  const rounds = values.rounds === undefined ? undefined : count(values.rounds, 'rounds', 1)
  let report
  try {
    report = await runBench({ only: positionals, workloads, rounds, quick: values.quick, onProgress: process.stderr.isTTY ? progressBar : undefined })
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(e.message)
    throw e
  }
  if (values.html !== undefined) writeFileSync(values.html, html(report))
  if (values.json) {
    const { rows, skipped, machine } = report
    process.stdout.write(`${JSON.stringify({ rows, skipped, machine }, null, 2)}\n`)
  } else process.stdout.write(values.markdown ? markdown(report) : table(report))
}

/** A progress bar on stderr (a terminal's): done of total, and what runs now. */
function progressBar(done: number, total: number, what: string): void {
  const width = 30
  const full = Math.round((done / total) * width)
  process.stderr.write(`\r\x1b[K[${'#'.repeat(full)}${'.'.repeat(width - full)}] ${done}/${total} ${done === total ? '\n' : what}`)
}

async function doctor(args: string[]): Promise<void> {
  const { values } = parse(args, { json: { type: 'boolean' } }, 0)
  const checks = await diagnose()
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ checks }, null, 2)}\n`)
  } else {
    const width = Math.max(...checks.map((c) => c.name.length))
    for (const c of checks) {
      process.stdout.write(`${c.status === 'ok' ? 'ok  ' : 'warn'}  ${c.name.padEnd(width)}  ${c.value}: ${c.detail}\n`)
      if (c.fix !== undefined) process.stdout.write(`      ${' '.repeat(width)}  fix: ${c.fix}\n`)
    }
  }
  if (checks.some((c) => c.status !== 'ok')) process.exitCode = 3
}

async function ls(args: string[]): Promise<void> {
  const { values } = parse(args, { json: { type: 'boolean' }, net: { type: 'boolean' }, watch: { type: 'boolean' } }, 0)
  let stopped = false
  const stop = (): void => {
    stopped = true
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  try {
    do {
      // (Watched for a second: the rates are over it.)
      const sampleMs = values.watch ? 1000 : 100
      const found = values.net ? await Hub.list({ net: true, sampleMs }) : await Hub.list({ sampleMs })
      if (values.json) process.stdout.write(`${JSON.stringify(found, null, values.watch ? undefined : 2)}\n`)
      else process.stdout.write(`${values.watch ? `${new Date().toISOString()}\n` : ''}${listing(found, values.net === true)}`)
    } while (values.watch && !stopped)
  } finally {
    process.off('SIGINT', stop)
    process.off('SIGTERM', stop)
  }
}

/** `ls`'s text: each channel with who publishes and reads it, then each listener. */
function listing(found: (SegmentInfo | ListenerInfo)[], net: boolean): string {
  let text = ''
  for (const s of found) {
    if (s.transport !== 'shm') continue
    const c = s as SegmentInfo
    const pubs = c.publishers.map((p) => p.pid).join(', ') || 'none'
    const subs = c.subscribers.map((x) => `${x.pid} (${x.lag} behind${x.rate === undefined ? '' : `, ${Math.round(x.rate)}/s`})`).join(', ') || 'none'
    text += `${c.name}\n  publishers:  ${pubs}\n  subscribers: ${subs}\n`
  }
  if (text === '') text = 'no shared-memory channels\n'
  if (!net) return text
  const listeners = found.filter((l): l is ListenerInfo => l.transport !== 'shm')
  for (const l of listeners) text += `${l.url}  listening (pid ${l.pid}, since ${new Date(l.since).toISOString()})\n`
  return listeners.length === 0 ? `${text}no listening hubs\n` : text
}

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${usage()}\n`)
    return name === undefined ? 2 : 0
  }
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined
  if (command === undefined) {
    process.stderr.write(`zerohop: no command '${name}'\n\n${usage()}\n`)
    return 2
  }
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${command.help}\n`)
    return 0
  }
  try {
    await command.run(args)
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`zerohop ${name}: ${e.message}\n\n${command.help}\n`)
      return 2
    }
    if (e instanceof ZerohopError) {
      process.stderr.write(`error ${e.code}: ${e.message}\n`)
      return 1
    }
    throw e
  }
}

// Output piped into a program that stopped reading (`zerohop doctor | head -1`): done, quietly.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e
  process.exit(process.exitCode ?? 0)
})

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    process.stderr.write(`zerohop: ${(e as Error).stack ?? String(e)}\n`)
    process.exitCode = 1
  },
)
