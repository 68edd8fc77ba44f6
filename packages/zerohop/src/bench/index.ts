/**
 * The benchmark behind `zerohop bench` and `npm run bench`: each zerohop transport
 * against the alternatives this machine has (see `contenders.ts`), side by side.
 *
 * - **Interleaved**: a round runs every contender once per workload, in an order that
 *   turns from round to round, so that a machine that drifts (a shared VM does, within
 *   seconds) weighs on all of them alike; the rounds add up.
 * - **Pinned**: with two CPUs or more (and `taskset`), this process and every thread it
 *   starts run on CPU 0, the peer process on CPU 1.
 * - **Measured alike**: round trips are timed here, one at a time, after a warm-up; a
 *   stream's messages are counted where they arrive, and one in 16 carries the time it
 *   was sent (the host's monotonic clock), which gives the one-way latency under load.
 *   Percentiles come from an HDR histogram (0.8 % buckets).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { cpus as cpuList } from 'node:os'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { CONTENDERS, WORKLOADS, type Client, type Contender, type Workload } from './contenders.js'
import { Histogram, type HistogramJSON } from './histogram.js'

export { Histogram, type HistogramJSON } from './histogram.js'
export { CONTENDERS, WORKLOADS, type Contender, type Workload } from './contenders.js'
export { html, markdown, table } from './report.js'

export interface BenchOptions {
  /**
   * What runs: contender ids (`shm`, `udp`, `kcp`, `quic`, `tcp`, `uds`, `net-uds`,
   * `net-tcp`, `dgram`, `zeromq`, `nats-js`, `nats-bridge`, `sockperf-udp`, `sockperf-tcp`) or peers
   * (`zerohop`, `net`, `sockperf`…). Naming none of zerohop's runs all of zerohop's;
   * naming no alternative runs every alternative. Default: everything.
   */
  only?: readonly string[]
  /** Workload ids (`rtt`, `oneway`, `oneway-4k`; default all). */
  workloads?: readonly string[]
  /** Rounds (default 3; 1 with `quick`). */
  rounds?: number
  /** A short run: fewer messages, one round. */
  quick?: boolean
  /** Pins this process and the peers to different CPUs when there are two (default true). */
  pin?: boolean
  /** Called as each run starts (a progress bar). */
  onProgress?(done: number, total: number, what: string): void
}

/** One line of the results: a contender under a workload, all rounds together. */
export interface BenchRow {
  /** shm, udp, kcp, quic, tcp or uds. */
  transport: string
  /** `zerohop`, or the alternative: `net`, `dgram`, `zeromq`, `nats`, `sockperf`. */
  peer: string
  /** `zerohop`, `alternative` (a Node program can use it) or `floor` (sockperf: C, what the kernel allows). */
  kind: Contender['kind']
  /** `rtt`, `oneway` or `oneway-4k`. */
  workload: string
  sizeBytes: number
  /** Latency percentiles, µs: of round trips (rtt), of delivery under full load (oneway). */
  p50Us: number
  p90Us: number
  p99Us: number
  p999Us: number
  p9999Us: number
  maxUs: number
  /** Round trips a second (rtt), messages received a second (oneway). */
  msgsPerSec: number
  /** `msgsPerSec` × message size, in MB (10^6 bytes) a second. */
  mbPerSec: number
  /** Messages sent (round trips started). */
  sent: number
  /** Sent but never received (round trips never answered). */
  lost: number
  /**
   * Against the best alternative of the workload (lowest p50 for rtt, most msgs/s for
   * oneway), > 1 better: its p50 / this p50, or this msgs/s / its msgs/s. Null when no
   * alternative ran.
   */
  vsBest: number | null
}

export interface BenchReport {
  rows: BenchRow[]
  /** Contenders that could not run here, and why. */
  skipped: { id: string; reason: string }[]
  /** Latency (q, µs) for each row, in the order of `rows`: what the plots draw. */
  spectra: [number, number][][]
  machine: { cpus: number; pinned: boolean; node: string; rounds: number; quick: boolean; date: string }
}

/** The quantiles each row reports (and the plots draw). */
const SPECTRUM = [0, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1]

const peerScript = join(__dirname, 'peer.js')
/** Whether processes can be pinned to CPUs 0 and 1 (taskset is there, and the CPU set of a container allows both). */
const canPin = (): boolean => ['0', '1'].every((cpu) => spawnSync('taskset', ['-c', cpu, 'true'], { stdio: 'ignore' }).status === 0)
const hrNs = (): number => Number(process.hrtime.bigint())
const nowMs = (): number => performance.timeOrigin + performance.now()

/** A peer process: its JSON lines one at a time, and a way to write to it. */
class Peer {
  private readonly lines: Record<string, unknown>[] = []
  private readonly waiting: Array<(line: Record<string, unknown>) => void> = []
  private readonly proc: ChildProcess
  private failed: Error | undefined
  /** Rejects when the peer exits before it was told to (`end`): what a run races against. */
  readonly died: Promise<never>
  /** Resolves when it exited, whenever that was. */
  private readonly closed: Promise<void>
  private ending = false

  constructor(args: string[], cpu: number | undefined) {
    const argv = [process.execPath, peerScript, ...args]
    this.proc = spawn(cpu === undefined ? argv[0]! : 'taskset', cpu === undefined ? argv.slice(1) : ['-c', String(cpu), ...argv], {
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    // (A peer that died says so on exit; what is written to it then goes nowhere.)
    this.proc.stdin!.on('error', () => undefined)
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      const line = JSON.parse(l) as Record<string, unknown>
      const w = this.waiting.shift()
      if (w) w(line)
      else this.lines.push(line)
    })
    // ('close', not 'exit': every line it printed has been read by then.)
    this.closed = new Promise<void>((resolve) =>
      this.proc.once('close', (code, signal) => {
        this.failed = new Error(`the peer of ${args.join(' ')} exited (${code ?? signal})`)
        for (const w of this.waiting.splice(0)) w({ error: this.failed.message })
        resolve()
      }),
    )
    this.died = this.closed.then(() => (this.ending ? new Promise<never>(() => undefined) : Promise.reject(this.failed)))
    this.died.catch(() => undefined)
  }

  async next(): Promise<Record<string, unknown>> {
    const line = this.lines.shift() ?? (this.failed ? { error: this.failed.message } : await new Promise<Record<string, unknown>>((r) => this.waiting.push(r)))
    if (typeof line.error === 'string') throw new Error(line.error)
    return line
  }

  tell(line: string): void {
    if (line === 'end') this.ending = true
    if (this.failed === undefined) this.proc.stdin!.write(`${line}\n`)
  }

  exited(): Promise<void> {
    return this.closed
  }

  kill(): void {
    this.proc.kill('SIGKILL')
  }
}

/** What the runs of one contender under one workload add up to. */
interface Tally {
  contender: Contender
  workload: Workload
  latency: Histogram
  /** Percentiles a program outside measured (sockperf), merged by mean over rounds. */
  external: [number, number][][]
  rates: number[]
  sent: number
  received: number
}

/** The contenders `only` names (see {@link BenchOptions.only}). */
function select(only: readonly string[] | undefined): Contender[] {
  if (only === undefined || only.length === 0) return [...CONTENDERS]
  for (const name of only) {
    if (!CONTENDERS.some((c) => c.id === name || c.peer === name)) throw new RangeError(`no contender '${name}' (there are ${CONTENDERS.map((c) => c.id).join(', ')})`)
  }
  const named = (c: Contender): boolean => only.includes(c.id) || only.includes(c.peer)
  const anyZerohop = CONTENDERS.some((c) => c.kind === 'zerohop' && named(c))
  const anyOther = CONTENDERS.some((c) => c.kind !== 'zerohop' && named(c))
  return CONTENDERS.filter((c) => named(c) || (c.kind === 'zerohop' ? !anyZerohop : !anyOther))
}

/** Runs the benchmark. */
export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const quick = options.quick === true
  const rounds = options.rounds ?? (quick ? 1 : 3)
  if (!(Number.isInteger(rounds) && rounds >= 1)) throw new RangeError(`rounds must be a whole number ≥ 1, got ${rounds}`)
  const workloads = options.workloads === undefined || options.workloads.length === 0 ? [...WORKLOADS] : options.workloads.map(workloadNamed)
  const candidates = select(options.only)
  const skipped: BenchReport['skipped'] = []
  const contenders: Contender[] = []
  for (const c of candidates) {
    const reason = await c.missing()
    if (reason === undefined) contenders.push(c)
    else skipped.push({ id: c.id, reason })
  }
  // (All the machine's: this process may be pinned to one of them already.)
  const cpus = cpuList().length
  const pinned = options.pin !== false && cpus >= 2 && canPin()
  const size = {
    rttSamples: quick ? 2_000 : 10_000,
    rttWarmup: quick ? 200 : 1_000,
    // Every stream 200,000 messages: long enough that a rate is the stream's, not its
    // start's. (At 40,000 messages of 4 KiB a run lasted 0.1-0.2 s, about half of it
    // the receiver's JIT warming up: V8's compiler threads took 45 % of its CPU in the
    // first 126 ms, and single rounds of one pair ranged 1.2-2.5×, 12-07.)
    oneway: (w: Workload) => (quick ? (w.size <= 256 ? 30_000 : 5_000) : 200_000),
    externalSeconds: quick ? 1 : 2,
  }
  const tallies: Tally[] = []
  for (const workload of workloads) {
    for (const contender of contenders) {
      if (contender.workloads.includes(workload.kind)) tallies.push({ contender, workload, latency: new Histogram(), external: [], rates: [], sent: 0, received: 0 })
    }
  }
  const total = tallies.length * rounds
  let done = 0
  const affinity = pinned ? affinityOf(process.pid) : undefined
  if (pinned) pinSelf('0')
  try {
    for (let round = 0; round < rounds; round++) {
      for (const workload of workloads) {
        const these = tallies.filter((t) => t.workload === workload)
        // Each round starts elsewhere in the list, and every other round walks it backwards.
        const turned = [...these.slice(round % these.length), ...these.slice(0, round % these.length)]
        for (const tally of round % 2 === 1 ? turned.reverse() : turned) {
          options.onProgress?.(done++, total, `${tally.contender.id} ${workload.id} (round ${round + 1} of ${rounds})`)
          await runOnce(tally, size, pinned)
        }
      }
    }
  } finally {
    if (pinned) pinSelf(affinity ?? `0-${cpus - 1}`)
  }
  options.onProgress?.(total, total, 'done')
  return report(tallies, skipped, { cpus, pinned, node: process.version, rounds, quick, date: new Date().toISOString() })
}

function workloadNamed(id: string): Workload {
  const w = WORKLOADS.find((x) => x.id === id)
  if (w === undefined) throw new RangeError(`no workload '${id}' (there are ${WORKLOADS.map((x) => x.id).join(', ')})`)
  return w
}

/** The CPUs process `pid` may run on, as a taskset list. */
function affinityOf(pid: number): string | undefined {
  return /list:\s*(\S+)/.exec(spawnSync('taskset', ['-cp', String(pid)], { encoding: 'utf8' }).stdout ?? '')?.[1]
}

/** Pins this process, every thread of it, to `cpus` (a taskset list). */
function pinSelf(cpus: string): void {
  spawnSync('taskset', ['-a', '-cp', cpus, String(process.pid)], { stdio: 'ignore' })
}

/** One run of a contender under a workload, added to its tally. */
async function runOnce(
  tally: Tally,
  size: { rttSamples: number; rttWarmup: number; oneway(w: Workload): number; externalSeconds: number },
  pinned: boolean,
): Promise<void> {
  const { contender, workload } = tally
  if (contender.external !== undefined) {
    const r = await contender.external.rtt(workload.size, size.externalSeconds, pinned ? [0, 1] : undefined)
    if (r === undefined) throw new Error(`${contender.id} measured nothing`)
    tally.external.push(r.percentiles)
    tally.rates.push(r.msgsPerSec)
    return
  }
  const count = workload.kind === 'rtt' ? size.rttSamples : size.oneway(workload)
  // How long a stream's peer waits for more before it counts the rest lost: a moment
  // for datagrams, long enough for a retransmission's back-off on connections.
  const idleMs = contender.transport === 'udp' ? 300 : 5000
  const peer = new Peer([contender.id, workload.id, String(count), String(idleMs)], pinned ? 1 : undefined)
  let client: Client | undefined
  const run = async (): Promise<void> => {
    const { ready } = (await peer.next()) as { ready: Record<string, string> }
    client = await contender.connect!(ready, workload)
    if (client.greeting !== undefined) {
      peer.tell(JSON.stringify({ greeting: client.greeting }))
      await peer.next()
    }
    const message = new Uint8Array(workload.size)
    if (workload.kind === 'rtt') {
      for (let i = 0; i < size.rttWarmup; i++) await client.roundTrip(message)
      const start = nowMs()
      let answered = 0
      for (let i = 0; i < count; i++) {
        const t = hrNs()
        if (await client.roundTrip(message)) {
          tally.latency.record(hrNs() - t)
          answered++
        }
      }
      tally.rates.push(count / ((nowMs() - start) / 1000))
      tally.sent += count
      tally.received += answered
    } else {
      const start = nowMs()
      for (let i = 0; i < count; i++) {
        let m = message
        if ((i & 15) === 0) {
          // One in 16 carries its send time (a buffer of its own: a sender may hold it).
          m = new Uint8Array(workload.size)
          m[0] = 1
          new DataView(m.buffer).setFloat64(8, hrNs(), true)
        }
        const wait = client.send(m)
        if (wait !== undefined) await wait
      }
      await client.flush?.()
      peer.tell('end')
      const r = (await peer.next()) as { received: number; lastMs: number; latency: HistogramJSON }
      tally.latency.add(Histogram.fromJSON(r.latency))
      tally.sent += count
      tally.received += r.received
      // (Nothing received: a rate of 0, not one over a clock that never moved.)
      tally.rates.push(r.received === 0 ? 0 : r.received / (Math.max(r.lastMs - start, 0.001) / 1000))
    }
  }
  try {
    // A peer that dies mid-run ends the run (one race a run: nothing a message).
    await Promise.race([run(), peer.died])
  } finally {
    try {
      const closed = client?.close()
      if (closed !== undefined) await Promise.race([closed, new Promise((r) => setTimeout(r, 15_000).unref())])
    } finally {
      peer.tell('end')
      const late = setTimeout(() => peer.kill(), 15_000)
      await peer.exited()
      clearTimeout(late)
    }
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const round2 = (x: number): number => Math.round(x * 100) / 100

function report(tallies: Tally[], skipped: BenchReport['skipped'], machine: BenchReport['machine']): BenchReport {
  const spectra = tallies.map((t): [number, number][] => {
    if (t.external.length > 0) {
      // sockperf's own percentiles, the mean of each over the rounds.
      return t.external[0]!.map(([q], i) => [q, t.external.reduce((s, r) => s + (r[i]?.[1] ?? 0), 0) / t.external.length])
    }
    // (Nothing measured, say every round trip lost: NaN, which tables print as – and plots leave out.)
    return SPECTRUM.map((q) => [q, t.latency.count === 0 ? NaN : (q === 0 ? t.latency.min : t.latency.percentile(q)) / 1000])
  })
  const at = (spectrum: [number, number][], q: number): number => {
    const hit = spectrum.find(([x]) => x >= q - 1e-9)
    return round2(hit?.[1] ?? spectrum.at(-1)?.[1] ?? NaN)
  }
  const rows: BenchRow[] = tallies.map((t, i) => {
    const spectrum = spectra[i]!
    const msgsPerSec = Math.round(median(t.rates))
    return {
      transport: t.contender.transport,
      peer: t.contender.peer,
      kind: t.contender.kind,
      workload: t.workload.id,
      sizeBytes: t.workload.size,
      p50Us: at(spectrum, 0.5),
      p90Us: at(spectrum, 0.9),
      p99Us: at(spectrum, 0.99),
      p999Us: at(spectrum, 0.999),
      p9999Us: at(spectrum, 0.9999),
      maxUs: at(spectrum, 1),
      msgsPerSec,
      mbPerSec: round2((msgsPerSec * t.workload.size) / 1e6),
      sent: t.sent,
      lost: Math.max(0, t.sent - t.received),
      vsBest: null,
    }
  })
  for (const w of new Set(rows.map((r) => r.workload))) {
    const alternatives = rows.filter((r) => r.workload === w && r.kind === 'alternative')
    if (alternatives.length === 0) continue
    const rtt = WORKLOADS.find((x) => x.id === w)!.kind === 'rtt'
    const best = rtt ? Math.min(...alternatives.map((r) => r.p50Us)) : Math.max(...alternatives.map((r) => r.msgsPerSec))
    for (const r of rows) if (r.workload === w) r.vsBest = round2(rtt ? best / r.p50Us : r.msgsPerSec / best)
  }
  return { rows, skipped, spectra, machine }
}
