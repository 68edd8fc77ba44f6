// `zerohop bench` (packages/zerohop/src/bench) run as a subprocess: the shape of --json,
// that every row measured something, that zerohop's reliable transports lost nothing,
// the other outputs, and the errors. (It measures, it does not judge: speed is for
// `npm run bench`, not for a test.)
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { type BenchRow as Row, Histogram } from 'zerohop/bench'
import { ensure } from '../scripts/debian.ts'

const cli = join(import.meta.dirname, '..', 'packages', 'zerohop', 'dist', 'cli.js')

/** `zerohop bench …`: its exit code and output. */
function bench(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [cli, 'bench', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const timer = setTimeout(() => p.kill('SIGKILL'), 240_000)
  return new Promise((resolve) =>
    p.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, stdout, stderr })
    }),
  )
}

test.before(() => {
  // The alternatives the benchmark looks for: the project installs what it can.
  ensure.sockperf()
  ensure.natsServer()
})


test.serial('bench --quick --json: a row for every transport and alternative under every workload, each measured', async (t) => {
  t.timeout(300_000)
  const dir = mkdtempSync(join(tmpdir(), 'zerohop-bench-'))
  const html = join(dir, 'bench.html')
  const r = await bench('--quick', '--json', '--html', html)
  t.is(r.code, 0, r.stderr)
  const { rows, skipped, machine } = JSON.parse(r.stdout) as { rows: Row[]; skipped: { id: string; reason: string }[]; machine: { rounds: number; quick: boolean } }
  t.like(machine, { rounds: 1, quick: true })
  for (const s of skipped) t.true(s.reason.length > 0, `${s.id} says why it did not run`)
  const ran = (peer: string, transport: string, workload: string) => rows.some((x) => x.peer === peer && x.transport === transport && x.workload === workload)
  for (const workload of ['rtt', 'oneway', 'oneway-4k']) {
    for (const transport of ['shm', 'udp', 'kcp', 'quic', 'tcp', 'uds', 'nats']) t.true(ran('zerohop', transport, workload), `zerohop ${transport}:// ${workload}`)
    t.true(ran('zerohop bridge', 'nats', workload), `shm → bridge → NATS → bridge → shm ${workload}`)
    for (const [peer, transport] of [
      ['net', 'uds'],
      ['net', 'tcp'],
      ['dgram', 'udp'],
      ['zeromq', 'tcp'],
      ['nats', 'nats'],
    ]) {
      t.true(ran(peer!, transport!, workload), `${peer} over ${transport} ${workload}`)
    }
  }
  t.true(ran('sockperf', 'udp', 'rtt') && ran('sockperf', 'tcp', 'rtt'), 'the kernel floor, when the project could install sockperf')
  for (const row of rows) {
    const what = `${row.peer} ${row.transport} ${row.workload}`
    for (const k of ['p50Us', 'p90Us', 'p99Us', 'p999Us', 'p9999Us', 'maxUs', 'msgsPerSec', 'mbPerSec'] as const) t.true(Number.isFinite(row[k]) && row[k] > 0, `${what}: ${k} ${row[k]}`)
    t.true(row.p50Us <= row.p99Us && row.p99Us <= row.p999Us && row.p999Us <= row.maxUs, `${what}: percentiles in order`)
    t.is(row.mbPerSec, Math.round(((row.msgsPerSec * row.sizeBytes) / 1e6) * 100) / 100, what)
    if (row.peer !== 'sockperf') t.true(row.sent > 0 && row.lost >= 0 && row.lost < row.sent, `${what}: sent ${row.sent}, lost ${row.lost}`)
    // Nothing zerohop accepts on a reliable transport is lost, at any speed (UDP and
    // NATS, at most once, count what they lost).
    if (row.peer === 'zerohop' && row.transport !== 'udp' && row.transport !== 'nats') t.is(row.lost, 0, what)
    t.true(typeof row.vsBest === 'number' && row.vsBest > 0, `${what}: against the best alternative`)
  }
  const page = readFileSync(html, 'utf8')
  t.regex(page, /^<!doctype html>/)
  t.is(page.match(/<svg /g)?.length, 6, 'per workload: a latency plot and a rate plot')
  t.regex(page, /zerohop shm:\/\//)
})

test.serial('bench --markdown names what it ran; unknown contenders and workloads are exit 2', async (t) => {
  t.timeout(120_000)
  const md = await bench('--quick', '--markdown', 'uds', 'net-uds', '--workload', 'rtt')
  t.is(md.code, 0, md.stderr)
  t.regex(md.stdout, /^### round trip, 64 B$/m)
  t.regex(md.stdout, /^\| uds \| zerohop \|/m)
  t.regex(md.stdout, /^\| uds \| net \|/m)
  t.notRegex(md.stdout, /\| shm \|/, 'naming a transport runs only it')
  const noSuch = await bench('carrier-pigeon')
  t.is(noSuch.code, 2)
  t.regex(noSuch.stderr, /no contender 'carrier-pigeon'/)
  const noWorkload = await bench('--workload', 'marathon')
  t.is(noWorkload.code, 2)
  t.regex(noWorkload.stderr, /no workload 'marathon'/)
})

test.serial('bench on a terminal draws a progress bar on stderr (and none into a pipe)', async (t) => {
  t.timeout(120_000)
  // A terminal from util-linux's `script`: stdout and stderr both go to it.
  const command = `"${process.execPath}" "${cli}" bench --quick uds net-uds --workload rtt --markdown`
  const tty = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 100_000 })
  if (tty.error) return t.pass('no `script` here to stand in for a terminal')
  t.is(tty.status, 0, tty.stdout)
  t.regex(tty.stdout, /\[\.{30}\] 0\/2 uds rtt \(round 1 of 1\)/)
  t.regex(tty.stdout, /\[#{30}\] 2\/2/)
  const piped = await bench('--quick', 'uds', 'net-uds', '--workload', 'rtt', '--markdown')
  t.notRegex(piped.stderr, /\[[#.]+\]/)
})

test('the HDR histogram: percentiles within 1 % from a nanosecond to an hour, and histograms add up', (t) => {
  const h = new Histogram()
  for (let v = 1; v <= 100_000; v++) h.record(v * 1000) // 1 µs … 100 ms, evenly
  for (const q of [0.5, 0.9, 0.99, 0.999]) {
    const exact = Math.ceil(q * 100_000) * 1000
    t.true(Math.abs(h.percentile(q) - exact) / exact < 0.01, `p${q * 100}: ${h.percentile(q)} against ${exact}`)
  }
  t.is(h.percentile(1), 100_000_000)
  t.is(h.min, 1000)
  const small = new Histogram()
  for (const v of [0, 1, 2, 127, 128, 129]) small.record(v)
  t.deepEqual([small.percentile(1 / 6), small.percentile(4 / 6), small.percentile(1)], [0, 127, 129])
  const hour = new Histogram()
  hour.record(3.6e12)
  t.true(Math.abs(hour.percentile(0.5) - 3.6e12) / 3.6e12 < 0.01)
  const both = Histogram.fromJSON(JSON.parse(JSON.stringify(h.toJSON()))).add(small)
  t.is(both.count, 100_006)
  t.is(both.min, 0)
  t.is(both.max, 100_000_000)
  t.throws(() => Histogram.fromJSON({ buckets: [[-1, 1]], min: 0, max: 0, sum: 0 }), { instanceOf: RangeError })
})
