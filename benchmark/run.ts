// `npm run bench`: zerohop's shared-memory hub against Node `net` over a Unix domain
// socket (length-prefixed frames), and udp:// hubs against Node `dgram` and sockperf
// (the kernel's floor), side by side in one run, plus the Rust ring and UDP endpoint as
// floors. This process is pinned to CPU 0 and every peer to CPU 1; baseline and
// subject runs are interleaved, and every run reports its own percentiles. The awaiting
// round trips that have a Node baseline (udp:// against dgram, quic:// against tls) take
// turns with it within one run, 500 round trips at a time (`inTurns`): this VM's speed
// drifts within seconds, and runs seconds apart once gave ratios from 0.9 to 1.3.
//
// quic:// hubs run against Node `tls` over TCP (the secure stream a Node user has), with
// certificates from crates/zerohop-quic/examples/test_pki.rs.
//
// Environment: BENCH_RUNS (default 3) rounds of everything; BENCH_RUST=0 skips cargo
// bench; BENCH_SHM=cost,rtt,throughput picks parts of the shared-memory round;
// BENCH_ONLY=matrix|udp|shm|quic|stream|kcp|qos runs one part (matrix: `zerohop bench`,
// every transport against every alternative, the package's own benchmark; BENCH_HTML=FILE
// writes its plots); BENCH_QUIC=rtt,first,throughput picks
// parts of the QUIC round, BENCH_UDP=rtt,throughput of the UDP round,
// BENCH_STREAM=rtt,throughput,broadcast,tls of the TCP and Unix socket round, BENCH_QOS=cost,lz4
// of the round of what QoS, faults and compression cost. BENCH_BASELINE=<git revision> also measures that revision's
// build (made by scripts/baseline.mjs) side by side with this one: every zerohop row
// runs for both, interleaved (which goes first alternates by round), tagged [before]
// and [after], and a last table gives after against before, median against median.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { randomBytes } from 'node:crypto'
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { Bench } from 'tinybench'
import { Push, Request } from 'zeromq'
import * as current from 'zerohop'
import { Histogram, runBench, table as benchTable, html as benchHtml } from 'zerohop/bench'
import { onFrames } from './frames.ts'
import type { NodeFloor } from './peer.ts'
import { here, makePki, root, spawnHelper, type Helper } from './procs.ts'
import { ensure, NFT } from '../scripts/debian.ts'

const RUNS = Number(process.env.BENCH_RUNS ?? 3)
// (Fewer under packet loss, where a round trip can take a retransmission timeout.)
const RTT_SAMPLES = Number(process.env.BENCH_RTT_SAMPLES ?? 20_000)
const RTT_WARMUP = Number(process.env.BENCH_RTT_WARMUP ?? 2_000)

interface Row {
  bench: string
  run: number | string
  p50?: number
  p99?: number
  p999?: number
  rate?: number
  mbps?: number
  vsBaseline?: string
  target?: string
}
const rows: Row[] = []

// ---- what is measured: this build, and a baseline's ---------------------------------

type Zerohop = typeof current
interface Subject {
  label: 'before' | 'after'
  mod: Zerohop
  /** What peers need to load the same build. */
  env: Record<string, string>
}
const subjects: Subject[] = [{ label: 'after', mod: current, env: {} }]
if (process.env.BENCH_BASELINE) {
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'baseline.mjs'), process.env.BENCH_BASELINE], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  if (r.status !== 0) throw new Error(`cannot build the baseline ${process.env.BENCH_BASELINE}`)
  const entry = join(r.stdout.trim(), 'packages', 'zerohop', 'dist', 'index.js')
  subjects.unshift({ label: 'before', mod: (await import(pathToFileURL(entry).href)) as Zerohop, env: { ZEROHOP_PACKAGE: pathToFileURL(entry).href } })
}
// The build the benchmark functions use now (see `each`).
let { Hub } = current
let peerEnv: Record<string, string> = {}

/** The subjects, the first going first in odd rounds and last in even ones. */
const inRoundOrder = (run: number) => (run % 2 === 1 ? subjects : [...subjects].reverse())

/**
 * Runs `fn` once per subject, alternating which goes first from round to round so that
 * neither always runs on a warmer (or more tired) machine; `tag` names the subject in
 * the rows' names when there are two.
 */
async function each(run: number, fn: (tag: string) => Promise<void>): Promise<void> {
  for (const s of inRoundOrder(run)) {
    ;({ Hub } = s.mod)
    peerEnv = s.env
    await fn(subjects.length > 1 ? ` [${s.label}]` : '')
  }
  ;({ Hub } = current)
  peerEnv = {}
}

// ---- helpers -------------------------------------------------------------------

pinSelf(true)

/** Pins this process (every thread) to CPU 0, or lets it run on every CPU. */
function pinSelf(pinned: boolean): void {
  spawnSync('taskset', ['-a', '-cp', pinned ? '0' : '0-1023', String(process.pid)], { stdio: 'ignore' })
}

/** A benchmark/peer.ts process running `args`, on CPU 1. */
function peer(args: string[]): Helper {
  return spawnHelper(join(here, 'peer.ts'), args, 1, peerEnv)
}

const exited = (p: ChildProcess) => new Promise<void>((r) => (p.exitCode !== null ? r() : p.once('exit', () => r())))

function fmtRate(v?: number): string {
  return v === undefined ? '' : v >= 1e6 ? `${(v / 1e6).toFixed(2)} M` : v >= 1e4 ? `${(v / 1e3).toFixed(0)} K` : v.toFixed(0)
}

/** The middle of `xs` (the mean of the two middle ones for an even count). */
function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b)
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

/** The samples of `parts`, end to end. */
function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, a) => n + a.length, 0))
  parts.reduce((at, a) => (out.set(a, at), at + a.length), 0)
  return out
}

/** Percentiles (µs) of durations (ns), from the HDR histogram `zerohop bench` uses. */
function percentiles(ns: Float64Array): { p50: number; p99: number; p999: number } {
  const h = new Histogram()
  for (const x of ns) h.record(x)
  return { p50: h.percentile(0.5) / 1000, p99: h.percentile(0.99) / 1000, p999: h.percentile(0.999) / 1000 }
}

const unique = (tag: string) => `bench-${tag}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`

// ---- round-trip latency ----------------------------------------------------------

/** One side of a ping-pong: sends 64 bytes and resolves with the echo. */
interface Pinger {
  /** One round trip; a spinning pinger returns nothing, so that no await is timed with it. */
  ping(): Promise<void> | void
  /** Tells the echo process to end (`inTurns` calls the first pinger's: one echo process serves all). */
  end(): void
  close(): Promise<void> | void
  /**
   * After each of its turns: lets the echo rest (where echoes spin on one CPU, so that
   * the next pinger's has it). The first TURN_SKIP round trips of the next turn, the
   * echo waking, are not counted.
   */
  rest?(): void
}

/** Round trips per turn in `inTurns`. */
const TURN = 500
/** Round trips before a turn that follows a `rest()`, not counted. */
const TURN_SKIP = 100

/**
 * Round trips over every pinger, taking turns of TURN round trips (who goes first
 * rotates), until each has RTT_SAMPLES: a baseline and the hubs measured beside it see
 * the same moments of the machine, whose speed drifts within seconds. Each pinger warms
 * up first. The samples, in the pingers' order.
 */
async function inTurns(pingers: Pinger[]): Promise<Float64Array[]> {
  for (const p of pingers) for (let i = 0; i < RTT_WARMUP; i++) await p.ping()
  // An await costs a turn of the microtask queue: only a ping that waits is awaited.
  const out = pingers.map(() => new Float64Array(RTT_SAMPLES))
  for (let turn = 0; turn * TURN < RTT_SAMPLES; turn++) {
    const from = turn * TURN
    const to = Math.min(RTT_SAMPLES, from + TURN)
    for (let k = 0; k < pingers.length; k++) {
      const j = (turn + k) % pingers.length
      const [p, samples] = [pingers[j]!, out[j]!]
      if (p.rest) for (let i = 0; i < TURN_SKIP; i++) await p.ping()
      for (let i = from; i < to; i++) {
        const t = process.hrtime.bigint()
        const waits = p.ping()
        if (waits !== undefined) await waits
        samples[i] = Number(process.hrtime.bigint() - t)
      }
      p.rest?.()
    }
  }
  pingers[0]!.end()
  return out
}

/** Round trips in turns against one `echoes` peer serving every spec (see peer.ts). */
async function echoesInTurns(specs: string[], open: (address: string, spec: string) => Promise<Pinger>): Promise<Float64Array[]> {
  const p = peer(['echoes', ...specs])
  const { addresses } = (await p.next()) as { addresses: string[] }
  const pingers = await Promise.all(specs.map((spec, i) => open(addresses[i]!, spec)))
  const samples = await inTurns(pingers)
  await exited(p.proc)
  for (const pinger of pingers) await pinger.close()
  return samples
}

/** A hub publishing 64 bytes and awaiting the echo. */
function hubPinger(hub: Awaited<ReturnType<typeof Hub.open>>): Pinger {
  const msg = new Uint8Array(64)
  return {
    ping: async () => {
      hub.publish(msg)
      await hub.recv()
    },
    end: () => hub.publish(new Uint8Array(1)),
    close: () => hub.close({ lingerMs: 0 }),
  }
}


/**
 * Round trips over a socket-like pair: `send` sends a message, and `onEcho` is handed
 * the function to call when its echo is back; RTT_WARMUP then RTT_SAMPLES of them (ns).
 */
async function echoRoundTrips(send: () => void, onEcho: (echoed: () => void) => void): Promise<Float64Array> {
  const samples = new Float64Array(RTT_SAMPLES)
  let echoed: (() => void) | undefined
  onEcho(() => echoed?.())
  for (let i = 0; i < RTT_WARMUP + RTT_SAMPLES; i++) {
    const t = process.hrtime.bigint()
    const got = new Promise<void>((r) => (echoed = r))
    send()
    await got
    if (i >= RTT_WARMUP) samples[i - RTT_WARMUP] = Number(process.hrtime.bigint() - t)
  }
  return samples
}

async function rttUds(): Promise<Float64Array> {
  const path = join(tmpdir(), `${unique('uds')}.sock`)
  const p = peer(['uds-echo', path])
  await p.next()
  const sock = connect(path)
  sock.setNoDelay(true)
  await new Promise((r) => sock.once('connect', r))
  const frame = Buffer.alloc(4 + 64)
  frame.writeUInt32LE(64, 0)
  let pending: Buffer = Buffer.alloc(0)
  const samples = await echoRoundTrips(
    () => sock.write(frame),
    (echoed) =>
      sock.on('data', (d: Buffer) => {
        pending = pending.length ? Buffer.concat([pending, d]) : d
        while (pending.length >= 68) {
          pending = pending.subarray(68)
          echoed()
        }
      }),
  )
  sock.destroy()
  await exited(p.proc)
  return samples
}

/**
 * Node's in-process alternative to shared memory: a `worker_threads` worker that echoes
 * each message back over its `MessagePort` (a 64-byte Uint8Array, cloned each way), the
 * worker's thread moved to CPU 1 as the peers are.
 */
async function messagePortPinger(): Promise<Pinger> {
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads')
     const tid = require('node:fs').readlinkSync('/proc/thread-self').split('/').pop()
     require('node:child_process').spawnSync('taskset', ['-cp', '1', tid], { stdio: 'ignore' })
     parentPort.on('message', (m) => parentPort.postMessage(m))
     parentPort.postMessage('ready')`,
    { eval: true },
  )
  await new Promise((r) => worker.once('message', r))
  const msg = new Uint8Array(64)
  let echoed: (() => void) | undefined
  worker.on('message', () => echoed?.())
  return {
    ping: () => {
      const got = new Promise<void>((r) => (echoed = r))
      worker.postMessage(msg)
      return got
    },
    end: () => {},
    close: async () => void (await worker.terminate()),
  }
}

async function rttMessagePort(): Promise<Float64Array> {
  const port = await messagePortPinger()
  const samples = new Float64Array(RTT_SAMPLES)
  for (let i = 0; i < RTT_WARMUP + RTT_SAMPLES; i++) {
    const t = process.hrtime.bigint()
    await port.ping()
    if (i >= RTT_WARMUP) samples[i - RTT_WARMUP] = Number(process.hrtime.bigint() - t)
  }
  await port.close()
  return samples
}

/**
 * The parked shm:// round trip (`spinUs: 0` both sides) in turns with Node's Unix socket
 * and MessagePort ones: the three see the same moments of the machine, whose wake-ups
 * (most of each round trip here) drift within seconds. Samples: UDS, MessagePort, shm.
 */
async function parkedInTurns(): Promise<[Float64Array, Float64Array, Float64Array]> {
  const name = unique('rtt-turns')
  const p = peer(['echoes', `net:${join(tmpdir(), `${unique('net')}.sock`)}`, `shm:${name}:0`])
  const { addresses } = (await p.next()) as { addresses: string[] }
  const uds = await netPinger(addresses[0]!)
  const tx = await Hub.open(`shm://${name}-ping`, { role: 'publisher', slotSize: 64 })
  const rx = await Hub.open(`shm://${name}-pong`, { role: 'subscriber', slotSize: 64, spinUs: 0 })
  const msg = new Uint8Array(64)
  const shm: Pinger = {
    ping: async () => {
      tx.publish(msg)
      await rx.recv()
    },
    end: () => tx.publish(new Uint8Array(1)),
    close: async () => {
      await tx.close()
      await rx.close()
    },
  }
  const port = await messagePortPinger()
  // (The shm pinger first: its `end` ends the echo process.)
  const [s, u, m] = await inTurns([shm, uds, port])
  await exited(p.proc)
  for (const pinger of [shm, uds, port]) await pinger.close()
  return [u!, m!, s!]
}

/**
 * The Node floor's addon (node-floor/: recv(2) and send(2) through Node-API, nothing
 * else), built on first use; its path, or undefined if it does not build.
 */
let nodeFloorPath: string | undefined | null = null
function nodeFloorAddon(): string | undefined {
  if (nodeFloorPath !== null) return nodeFloorPath
  const target = join(root, 'target', 'node-floor')
  console.error('building the Node floor addon (benchmark/node-floor)…')
  const built = spawnSync('cargo', ['build', '--release', '--quiet', '--manifest-path', join(here, 'node-floor', 'Cargo.toml')], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: target },
  })
  nodeFloorPath = undefined
  if (built.status === 0) {
    const path = join(target, 'node_floor.node')
    copyFileSync(join(target, 'release', 'libzerohop_bench_node_floor.so'), path)
    nodeFloorPath = path
  }
  return nodeFloorPath
}

/**
 * The floor under one-way 4 KB over TCP for a design that copies each message once on
 * each side, as `tcp://` does (into the send queue that keeps it until it is read, into
 * the receive ring): `tcp_floor` with `COPY=1` (crates/zerohop-stream/examples), loopback
 * TCP with no messaging; MB/s, or undefined if it does not build.
 */
let tcpFloorPath: string | undefined | null = null
function tcpFloor(): number | undefined {
  if (tcpFloorPath === null) {
    console.error('building the TCP floor (cargo example tcp_floor)…')
    const built = spawnSync('cargo', ['build', '--release', '--quiet', '-p', 'zerohop-stream', '--example', 'tcp_floor'], {
      cwd: root,
      stdio: ['ignore', 'ignore', 'inherit'],
    })
    tcpFloorPath = built.status === 0 ? join(root, 'target', 'release', 'examples', 'tcp_floor') : undefined
  }
  if (tcpFloorPath === undefined) return undefined
  const r = spawnSync(tcpFloorPath, [], { encoding: 'utf8', env: { ...process.env, COPY: '1' } })
  const mbps = /: (\d+) MB\/s/.exec(r.stdout ?? '')?.[1]
  return mbps === undefined ? undefined : Number(mbps)
}

/** Runs `fn` with shared memory off (`ZEROHOP_SHM=off`, which the peers it starts inherit): `shm://` over its Unix-socket fallback. */
async function withoutShm<R>(fn: () => Promise<R>): Promise<R> {
  process.env.ZEROHOP_SHM = 'off'
  try {
    return await fn()
  } finally {
    delete process.env.ZEROHOP_SHM
  }
}

/** mode 'spin': both sides spin on tryRecv; otherwise both await recv() with that spinUs. */
async function rttZerohop(mode: 'spin' | number): Promise<Float64Array> {
  const name = unique('rtt')
  const tx = await Hub.open(`shm://${name}-ping`, { role: 'publisher', slotSize: 64 })
  const rx = await Hub.open(`shm://${name}-pong`, { role: 'subscriber', slotSize: 64, spinUs: mode === 'spin' ? 0 : mode })
  const p = peer(['zh-echo', name, String(RTT_WARMUP + RTT_SAMPLES), String(mode)])
  await p.next()
  const msg = new Uint8Array(64)
  const samples = new Float64Array(RTT_SAMPLES)
  for (let i = 0; i < RTT_WARMUP + RTT_SAMPLES; i++) {
    const t = process.hrtime.bigint()
    tx.publish(msg)
    if (mode === 'spin') while (rx.tryRecv() === undefined);
    else await rx.recv()
    if (i >= RTT_WARMUP) samples[i - RTT_WARMUP] = Number(process.hrtime.bigint() - t)
  }
  await exited(p.proc)
  await tx.close()
  await rx.close()
  return samples
}

/**
 * `Rpc` over shared memory, 64 B requests answered by a handler that returns them: each
 * side polls for `spinUs` before it parks (1 s: spinning).
 */
async function rttRpcShm(spinUs: number): Promise<Float64Array> {
  const name = unique('rpc')
  const p = peer(['rpc-echo', name, String(spinUs)])
  await p.next()
  const rpc = await current.Rpc.connect(`shm://${name}`, { spinUs })
  const msg = new Uint8Array(64)
  const samples = new Float64Array(RTT_SAMPLES)
  for (let i = 0; i < RTT_WARMUP + RTT_SAMPLES; i++) {
    const t = process.hrtime.bigint()
    await rpc.request(msg)
    if (i >= RTT_WARMUP) samples[i - RTT_WARMUP] = Number(process.hrtime.bigint() - t)
  }
  await rpc.request(new Uint8Array(1))
  await exited(p.proc)
  await rpc.close()
  return samples
}

/**
 * The spinning shm ping-pong and `Rpc` over shm://, in turns (see `inTurns`), each echo
 * sitting out the other's turns parked: the ping-pong's is told to, and the Rpc server
 * polls for 50 µs (a wait no round trip in a turn comes near) before it parks.
 */
async function rttPingPongAndRpc(): Promise<{ pingPong: Float64Array; rpc: Float64Array }> {
  const name = unique('turns')
  const tx = await Hub.open(`shm://${name}-ping`, { role: 'publisher', slotSize: 64 })
  const rx = await Hub.open(`shm://${name}-pong`, { role: 'subscriber', slotSize: 64, spinUs: 0 })
  const echo = peer(['zh-echo-turns', name])
  await echo.next()
  const rpcName = unique('rpc')
  const server = peer(['rpc-echo', rpcName, '50'])
  await server.next()
  const rpc = await current.Rpc.connect(`shm://${rpcName}`, { spinUs: 50 })
  const msg = new Uint8Array(64)
  const pingPong = (sent: Uint8Array) => {
    tx.publish(sent)
    while (rx.tryRecv() === undefined);
  }
  const [pp, rr] = await inTurns([
    {
      ping: () => pingPong(msg),
      rest: () => pingPong(new Uint8Array(1)), // the echo parks
      end: () => pingPong(new Uint8Array(2)), // and exits
      close: () => {},
    },
    {
      ping: () => rpc.request(msg) as Promise<unknown> as Promise<void>,
      rest: () => {
        // The server's poll ends, and it parks.
        const until = performance.now() + 0.2
        while (performance.now() < until);
      },
      end: () => {},
      close: () => {},
    },
  ])
  await rpc.request(new Uint8Array(1)) // the server exits
  await Promise.all([exited(echo.proc), exited(server.proc)])
  await tx.close()
  await rx.close()
  await rpc.close()
  return { pingPong: pp!, rpc: rr! }
}

// ---- one-way throughput across processes ------------------------------------------

/** Messages a turn of `streamInTurns`: half the ring. */
const STREAM_TURN = 32768

/**
 * One stream of 64 B messages (a `publishPacked` sender) read in turns of
 * {@link STREAM_TURN} messages by each of `ways` in turn (`copy`: the `tryRecv` loop,
 * `batch`: `tryRecvBatch()`, `drain`: `drain(fn)`), so that each meets the same phases of
 * this machine: each way's rate over its turns.
 */
async function streamInTurns(ways: ('copy' | 'batch' | 'drain')[], count: number): Promise<number[]> {
  const name = unique('turns')
  const tx = await Hub.open(`shm://${name}`, { role: 'publisher', backpressure: 'block', slotSize: 64, capacity: 65536 })
  const p = peer(['zh-sink-turns', name, String(count), ways.join(','), String(STREAM_TURN)])
  await p.next()
  const packed = new Uint8Array(64 * 64).fill(1)
  for (let i = 0; i < count; i += 64) tx.publishPacked(packed, 64)
  const result = await p.next()
  await exited(p.proc)
  await tx.close()
  return result.rates as number[]
}

async function streamZerohop(
  size: number,
  how: 'publish' | 'publishBatch' | 'publishPacked' | 'loan',
  sinkMode: 'copy' | 'borrow' | 'batch' | 'drain',
  count: number,
  place: 'slot' | 'pool' | 'side' = 'slot',
) {
  const name = unique('stream')
  // Pool: 64-byte slots, the messages in a 16 MiB payload pool (256 of 64 KB). Side:
  // 64-byte slots and no pool, the messages on the side path.
  const layout = {
    slot: { slotSize: size, capacity: size > 1024 ? 4096 : 65536 },
    pool: { slotSize: 64, capacity: 4096, poolSize: 16 << 20 },
    side: { slotSize: 64, capacity: 4096 },
  }[place]
  const pooled = place !== 'slot'
  const tx = await Hub.open(`shm://${name}`, { role: 'publisher', backpressure: 'block', ...layout })
  const p = peer(['zh-sink', name, String(count), sinkMode])
  await p.next()
  const msg = new Uint8Array(size).fill(1)
  const batch = Array.from({ length: 64 }, () => msg)
  const packed = new Uint8Array(size * 64).fill(1)
  const t = performance.now()
  if (how === 'publish') for (let i = 0; i < count; i++) tx.publish(msg)
  else if (how === 'publishBatch') for (let i = 0; i < count; i += 64) tx.publishBatch(batch)
  else if (how === 'publishPacked') for (let i = 0; i < count; i += 64) tx.publishPacked(packed, size)
  else
    for (let i = 0; i < count; i++) {
      const loan = pooled ? tx.loan(size) : tx.loan()
      loan.bytes[0] = 1 // produce the message in place: no copy of a prepared buffer
      loan.commit(size)
    }
  const publishSecs = (performance.now() - t) / 1000
  const result = await p.next()
  await exited(p.proc)
  await tx.close()
  return { sent: count / publishSecs, received: result.msgsPerSec as number, lapped: result.lapped as number }
}

/** Node net one way: frames to a sink over a Unix socket, or over TCP (`tcp`); the receiver's msg/s. */
async function streamNet(size: number, count: number, tcp = false): Promise<number> {
  const p = peer(['net-sink', tcp ? 'tcp' : join(tmpdir(), `${unique('uds-sink')}.sock`), String(count)])
  const { address } = (await p.next()) as { address: string }
  const [host, port] = address.split(':')
  const sock = tcp ? connect(Number(port), host) : connect(address)
  await new Promise((r) => sock.once('connect', r))
  const frame = Buffer.alloc(4 + size, 1)
  frame.writeUInt32LE(size, 0)
  for (let i = 0; i < count; i++) {
    if (!sock.write(frame)) await new Promise((r) => sock.once('drain', r))
  }
  const result = await p.next()
  sock.destroy()
  await exited(p.proc)
  return result.msgsPerSec as number
}

// ---- UDP: sockperf and Node dgram against udp:// hubs ------------------------------------

/** sockperf ping-pong, 64 B, full round trips (UDP, or `tcp`); `spinning` uses non-blocking sockets on both sides. */
function rttSockperf(spinning: boolean, tcp = false, seconds = 3): { p50: number; p99: number; p999: number } | undefined {
  if (spawnSync('sockperf', ['--version'], { stdio: 'ignore' }).error) return undefined
  const port = String(20000 + Math.floor(Math.random() * 20000))
  const extra = [...(spinning ? ['--nonblocked'] : []), ...(tcp ? ['--tcp'] : [])]
  const server = spawn('taskset', ['-c', '1', 'sockperf', 'server', '-i', '127.0.0.1', '-p', port, ...extra], { stdio: 'ignore' })
  spawnSync('sleep', ['0.3'])
  const r = spawnSync('taskset', ['-c', '0', 'sockperf', 'ping-pong', '-i', '127.0.0.1', '-p', port, '-m', '64', '-t', String(seconds), '--full-rtt', ...extra], { encoding: 'utf8' })
  server.kill()
  const pct = (q: string) => Number(new RegExp(`percentile ${q} =\\s*([0-9.]+)`).exec(r.stdout ?? '')?.[1])
  const out = { p50: pct('50.000'), p99: pct('99.000'), p999: pct('99.900') }
  return Number.isFinite(out.p50) ? out : undefined
}

/** mode 'spin': both sides spin on tryRecv; otherwise both await recv() with that spinUs. */
async function rttZerohopUdp(ioUring: 'force' | 'off', mode: 'spin' | number): Promise<Float64Array> {
  const spinUs = mode === 'spin' ? 0 : mode
  const hub = await Hub.open('udp://127.0.0.1:0', { ioUring, flushIntervalMs: 0, spinUs })
  const p = peer(['udp-echo', ioUring, String(mode), hub.localAddress!])
  const { address } = (await p.next()) as { address: string }
  hub.setPeers([address])
  const msg = new Uint8Array(64)
  const samples = new Float64Array(RTT_SAMPLES)
  for (let i = 0; i < RTT_WARMUP + RTT_SAMPLES; i++) {
    const t = process.hrtime.bigint()
    hub.publish(msg)
    if (mode === 'spin') while (hub.tryRecv() === undefined);
    else await hub.recv()
    if (i >= RTT_WARMUP) samples[i - RTT_WARMUP] = Number(process.hrtime.bigint() - t)
  }
  hub.publish(new Uint8Array(1))
  await exited(p.proc)
  await hub.close()
  return samples
}

async function streamDgram(count: number): Promise<{ rate: number; lost: number }> {
  const p = peer(['dgram-sink', String(count)])
  const { address } = (await p.next()) as { address: string }
  const port = Number(address.split(':')[1])
  const sock = createSocket({ type: 'udp4', sendBufferSize: 4 << 20 })
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
  const msg = Buffer.alloc(64)
  for (let i = 0; i < count; i += 1000) {
    for (let k = 1; k < 1000; k++) sock.send(msg, port, '127.0.0.1')
    await new Promise<void>((r) => sock.send(msg, port, '127.0.0.1', () => r()))
  }
  const result = await p.next()
  await exited(p.proc)
  sock.close()
  return { rate: result.msgsPerSec as number, lost: count - (result.received as number) }
}

/** How long a blasting sender of the UDP throughput rows sends, at least. */
const BLAST_MS = 500

async function streamZerohopUdp(
  count: number,
  ioUring: 'force' | 'off',
  threads: number,
  maxDatagram: number,
  how: 'publish' | 'publishPacked',
): Promise<{ rate: number; lost: number; sent: number }> {
  const p = peer(['udp-sink', String(count), ioUring, String(threads), String(maxDatagram)])
  const { address } = (await p.next()) as { address: string }
  // Several sending sockets, so that SO_REUSEPORT can spread them over the receive sockets.
  const txs = await Promise.all(Array.from({ length: 4 }, () => Hub.open('udp://127.0.0.1:0', { role: 'publisher', peers: [address], maxDatagram })))
  const msg = new Uint8Array(64)
  const packed = new Uint8Array(64 * 256)
  const t = performance.now()
  // `count` messages, and for `BLAST_MS` at least: the receiver's rate is over the time
  // it receives, and a sender that drops what the receiver has no room for (flow
  // control) got through its count in a quarter of the time, which left the receiver
  // its cold start to be measured by (12-07).
  let i = 0
  for (; i < count || performance.now() - t < BLAST_MS; i += 256) {
    const tx = txs[(i >> 8) & 3]!
    if (how === 'publishPacked') tx.publishPacked(packed, 64)
    else for (let k = 0; k < 256; k++) tx.publish(msg)
    tx.flush()
  }
  const sent = i / ((performance.now() - t) / 1000)
  const result = await p.next()
  await exited(p.proc)
  for (const tx of txs) await tx.close()
  return { rate: result.msgsPerSec as number, lost: i - (result.received as number), sent }
}

const udpParts = new Set((process.env.BENCH_UDP ?? 'rtt,throughput').split(','))

async function udpRound(run: number): Promise<void> {
  if (udpParts.has('rtt')) await udpRtt(run)
  if (udpParts.has('throughput')) await udpThroughput(run)
}

async function udpRtt(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: UDP RTT…`)
  const spf = rttSockperf(false)
  const spfSpin = rttSockperf(true)
  if (spf) rows.push({ bench: 'UDP RTT 64 B  sockperf ping-pong, blocking (kernel floor)', run, ...spf })
  if (spfSpin) rows.push({ bench: 'UDP RTT 64 B  sockperf ping-pong --nonblocked, spinning (kernel floor)', run, ...spfSpin })
  if (!spf || !spfSpin) rows.push({ bench: 'UDP RTT 64 B  sockperf: not installed (apt-get install sockperf failed)', run })
  await each(run, async (tag) => {
    // Node dgram and the awaiting hubs take turns (see inTurns).
    const parked = [
      ['force', 0],
      ['force', 50],
      ['off', 0],
      ['off', 50],
    ] as const
    const [dgSamples, ...hubSamples] = await echoesInTurns(['dgram', ...parked.map(([u, s]) => `udp:${u}:${s}`)], (address, spec) =>
      spec === 'dgram' ? dgramPinger(address) : udpPinger(address, spec),
    )
    const dg = percentiles(dgSamples!)
    rows.push({ bench: `UDP RTT 64 B  Node dgram (baseline, in turns with the rows below)${tag}`, run, ...dg })
    const vs = (r: { p50: number }, floor: { p50: number } | undefined, what: string) => `${(r.p50 / dg.p50).toFixed(2)}× dgram${floor ? `, ${(r.p50 / floor.p50).toFixed(2)}× sockperf ${what}` : ''}`
    for (const ioUring of ['force', 'off'] as const) {
      const backend = ioUring === 'force' ? 'io_uring' : 'recvmmsg'
      const spin = percentiles(await rttZerohopUdp(ioUring, 'spin'))
      rows.push({ bench: `UDP RTT 64 B  zerohop udp:// ${backend}, tryRecv spinning${tag}`, run, ...spin, vsBaseline: vs(spin, spfSpin, 'spin'), target: '≤ 0.5× dgram, ≤ 1.25× sockperf' })
      parked.forEach(([u, spinUs], i) => {
        if (u !== ioUring) return
        const park = percentiles(hubSamples[i]!)
        const how = spinUs === 0 ? 'parks (spinUs 0)' : 'spinUs 50 (default)'
        rows.push({ bench: `UDP RTT 64 B  zerohop udp:// ${backend}, await recv(), ${how}${tag}`, run, ...park, vsBaseline: vs(park, spf, 'block'), target: '≤ 1× dgram' })
      })
    }
  })
}

/** A Node dgram socket sending 64 bytes to `address` and awaiting the echo. */
async function dgramPinger(address: string): Promise<Pinger> {
  const port = Number(address.split(':')[1])
  const sock = createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
  let echoed: (() => void) | undefined
  sock.on('message', () => echoed?.())
  const msg = Buffer.alloc(64)
  return {
    ping: () =>
      new Promise<void>((r) => {
        echoed = r
        sock.send(msg, port, '127.0.0.1')
      }),
    end: () => sock.send(Buffer.alloc(1), port, '127.0.0.1'),
    close: () => void sock.close(),
  }
}

/** A udp:// hub (spec udp:<ioUring>:<spinUs>) talking to the echo at `address`. */
async function udpPinger(address: string, spec: string): Promise<Pinger> {
  const [, ioUring, spinUs] = spec.split(':')
  return hubPinger(await Hub.open('udp://127.0.0.1:0', { ioUring: ioUring as 'force' | 'off', flushIntervalMs: 0, spinUs: Number(spinUs), peers: [address] }))
}

async function udpThroughput(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: UDP throughput…`)
  const dgs = await streamDgram(300_000)
  rows.push({ bench: `UDP one-way 64 B  Node dgram (baseline, received), lost ${dgs.lost}`, run, rate: dgs.rate, mbps: (dgs.rate * 64) / 1e6 })
  const cases = [
    ['force', 1, 1472, 'publish'],
    ['off', 1, 1472, 'publish'],
    ['force', 1, 1472, 'publishPacked'],
    ['off', 1, 1472, 'publishPacked'],
    ['force', 2, 1472, 'publishPacked'],
    ['off', 2, 1472, 'publishPacked'],
    ['off', 1, 8972, 'publishPacked'],
  ] as const
  for (const [ioUring, threads, maxDatagram, how] of cases) {
    const backend = ioUring === 'force' ? 'io_uring' : 'recvmmsg'
    await each(run, async (tag) => {
      const z = await streamZerohopUdp(2_000_000, ioUring, threads, maxDatagram, how)
      rows.push({
        bench: `UDP one-way 64 B  zerohop ${how}, ${backend}, ${threads} socket${threads > 1 ? 's' : ''}, ${maxDatagram} B datagrams (received)${tag}`,
        run,
        rate: z.rate,
        mbps: (z.rate * 64) / 1e6,
        vsBaseline: `${(z.rate / dgs.rate).toFixed(1)}×, sent ${fmtRate(z.sent)}/s, lost ${z.lost}`,
        target: '≥ 1 M/s, ≥ 5× dgram',
      })
    })
  }
}

// ---- in-process publish cost (tinybench) ---------------------------------------------

/**
 * What publishing costs in-process (shared memory), for every subject at once: the
 * subjects' runs of each task are adjacent (their order flips from round to round), so
 * that a slow phase of the machine, which lasts seconds here, falls on both alike.
 */
async function publishCost(run: number): Promise<void> {
  const INNER = 10_000
  // Baseline: what sending costs a Node user, socket.write of a framed 64 B message to a
  // Unix socket whose reader (another process) discards it.
  const path = join(tmpdir(), `${unique('uds-cost')}.sock`)
  const sink = peer(['net-sink', path, String(Number.MAX_SAFE_INTEGER)])
  await sink.next()
  const sock = connect(path)
  await new Promise((r) => sock.once('connect', r))
  const frame = Buffer.alloc(68)
  frame.writeUInt32LE(64, 0)
  const bench = new Bench({ time: 400, warmupTime: 100 })
  bench.add('Node net socket.write 64 B (baseline)', async () => {
    for (let i = 1; i < INNER; i++) sock.write(frame)
    // The last write's callback runs once everything before it reached the socket.
    await new Promise((r) => sock.write(frame, r))
  })
  const m64 = new Uint8Array(64)
  const m4k = new Uint8Array(4096)
  const batch = Array.from({ length: 256 }, () => m64)
  const packed = new Uint8Array(64 * 256)
  const ticks = Array.from({ length: 256 }, (_, i) => ({ seq: BigInt(i), price: i + 0.5, volume: 100n }))
  const opened: Array<{ close(): Promise<void> }> = []
  const tasks: Array<[string, Array<[string, () => void]>]> = []
  for (const s of inRoundOrder(run)) {
    const { Hub: H, struct: st } = s.mod
    const tag = subjects.length > 1 ? ` [${s.label}]` : ''
    const name = unique('cost')
    const hub64 = await H.open(`shm://${name}-64`, { role: 'publisher', slotSize: 64, capacity: 65536 })
    const hub4k = await H.open(`shm://${name}-4k`, { role: 'publisher', slotSize: 4096, capacity: 1024 })
    const Tick = st({ seq: 'u64', price: 'f64', volume: 'u64' })
    const hubTick = await H.open(`shm://${name}-tick`, { role: 'publisher', codec: Tick, slotSize: 64, capacity: 65536 })
    opened.push(hub64, hub4k, hubTick)
    tasks.push([
      tag,
      [
        ['publish 64 B', () => {
          for (let i = 0; i < INNER; i++) hub64.publish(m64)
        }],
        ['publishBatch 64 B ×256', () => {
          for (let i = 0; i < INNER; i += 256) hub64.publishBatch(batch)
        }],
        ['publishPacked 64 B ×256', () => {
          for (let i = 0; i < INNER; i += 256) hub64.publishPacked(packed, 64)
        }],
        ['publishBatch struct{u64,f64,u64} ×256', () => {
          for (let i = 0; i < INNER; i += 256) hubTick.publishBatch(ticks)
        }],
        ['publish 4 KB (copy)', () => {
          for (let i = 0; i < INNER; i++) hub4k.publish(m4k)
        }],
        ['loan 4 KB (zero-copy)', () => {
          for (let i = 0; i < INNER; i++) {
            const l = hub4k.loan()
            l.bytes[0] = i
            l.commit(4096)
          }
        }],
      ],
    ])
  }
  for (let k = 0; k < tasks[0]![1].length; k++) {
    for (const [tag, list] of tasks) bench.add(`${list[k]![0]}${tag}`, list[k]![1])
  }
  await bench.run()
  sock.destroy()
  sink.proc.kill()
  let baseline = 0
  for (const task of bench.tasks) {
    const r = task.result as { throughput?: { mean: number }; latency?: { p50?: number } } | undefined
    const perSec = (r?.latency?.p50 ? 1000 / r.latency.p50 : 0) * INNER
    const size = task.name.includes('4 KB') ? 4096 : 64
    const plain = task.name.replace(/ \[(before|after)\]$/, '')
    const tag = task.name.slice(plain.length)
    const target = plain === 'publish 64 B' ? '≥ 10 M msg/s' : plain.startsWith('publish') && plain.includes('×') ? '≥ 50 M msg/s' : ''
    if (task.name.includes('baseline')) baseline = perSec
    const vsBaseline = baseline && !task.name.includes('baseline') && size === 64 ? `${(perSec / baseline).toFixed(1)}×` : undefined
    rows.push({ bench: `send cost ${plain} (tinybench p50)${tag}`, run, rate: perSec, mbps: (perSec * size) / 1e6, vsBaseline, target })
  }
  for (const h of opened) await h.close()
}

// ---- main ----------------------------------------------------------------------------

const ICEORYX2 = 'iceoryx2 ipc publish-subscribe (baseline)'
const ICEORYX2_RTT = `Rust RTT 64 B, spinning: ${ICEORYX2}`

/** The JSON lines of `cargo bench` of `pkg`'s `bench` (or of the crate at `manifest`, outside the workspace). */
function cargoBench(pkg: string, bench: string, manifest?: string): Array<Record<string, number | string>> {
  const where = manifest === undefined ? ['-p', pkg] : ['--manifest-path', join(root, manifest)]
  const r = spawnSync('cargo', ['bench', '-q', ...where, '--bench', bench], {
    cwd: root,
    encoding: 'utf8',
    // (A crate outside the workspace builds into a target directory of its own.)
    env: { ...process.env, ZEROHOP_BENCH_RUNS: String(RUNS), ...(manifest && { CARGO_TARGET_DIR: join(root, 'target', pkg) }) },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  // A bench that fails takes its rows with it: say so, rather than print a table without them.
  if (r.status !== 0) throw new Error(`cargo bench ${where.join(' ')} --bench ${bench} failed (${r.status ?? r.signal}): see above`)
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, number | string>)
}

if (process.env.BENCH_RUST !== '0' && process.env.BENCH_ONLY !== 'quic' && process.env.BENCH_ONLY !== 'kcp') {
  console.error('running cargo bench (Rust ring floor)…')
  const ring = cargoBench('zerohop-shm', 'ring')
  for (const j of ring) {
    if (j.bench === 'rust_rtt_64') rows.push({ bench: 'Rust ring RTT 64 B, spinning', run: j.run!, p50: j.p50_us as number, p99: j.p99_us as number, p999: j.p999_us as number })
    else {
      const kind =
        { rust_spsc_64: 'SPSC', rust_spmc3_64: 'SPMC ×3', rust_mpsc3_64: 'MPSC, 3 publisher processes sharing CPU 0,', rust_packed_64: 'SPSC, publish_packed 64 at a time,' }[j.bench as string] ??
        String(j.bench)
      // Three publishers at once, against one alone in the same run.
      const spsc = j.bench === 'rust_mpsc3_64' ? ring.find((k) => k.bench === 'rust_spsc_64' && k.run === j.run) : undefined
      const vs = spsc ? `${((j.msgs_per_sec as number) / (spsc.msgs_per_sec as number)).toFixed(2)}× SPSC` : undefined
      rows.push({ bench: `Rust ring ${kind} 64 B, block (slowest receiver)`, run: j.run!, rate: j.msgs_per_sec as number, vsBaseline: vs })
    }
  }
  console.error('running cargo bench (zerohop against iceoryx2)…')
  const versus = cargoBench('iceoryx2', 'versus', 'benchmark/iceoryx2/Cargo.toml')
  const iceoryx2 = (kind: string, run: number | string) => versus.find((j) => j.bench === `iceoryx2_${kind}_64` && j.run === run)
  for (const j of versus) {
    const [who, kind] = String(j.bench).split('_') as [string, string]
    const bench = `Rust ${kind === 'rtt' ? 'RTT 64 B, spinning' : 'one-way 64 B, lossless, 4096 slots (receiver)'}: ${who === 'zerohop' ? 'zerohop ring' : ICEORYX2}`
    const base = iceoryx2(kind, j.run!)
    if (kind === 'rtt') {
      const vs = who === 'zerohop' && base ? `${((j.p50_us as number) / (base.p50_us as number)).toFixed(2)}× p50` : undefined
      rows.push({ bench, run: j.run!, p50: j.p50_us as number, p99: j.p99_us as number, p999: j.p999_us as number, vsBaseline: vs, target: who === 'zerohop' ? '≤ 1× iceoryx2' : undefined })
    } else {
      const vs = who === 'zerohop' && base ? `${((j.msgs_per_sec as number) / (base.msgs_per_sec as number)).toFixed(2)}×` : undefined
      rows.push({ bench, run: j.run!, rate: j.msgs_per_sec as number, mbps: ((j.msgs_per_sec as number) * 64) / 1e6, vsBaseline: vs, target: who === 'zerohop' ? '≥ 1× iceoryx2' : undefined })
    }
  }
  console.error('running cargo bench (Rust UDP endpoint)…')
  const udpNames: Record<string, string> = {
    udp_rtt_std: 'Rust UDP RTT 64 B, blocking std sockets (floor)',
    udp_rtt_recvmmsg: 'Rust UDP RTT 64 B, UdpEndpoint recvmmsg, spinning',
    udp_rtt_io_uring: 'Rust UDP RTT 64 B, UdpEndpoint io_uring, spinning',
    udp_stream_recvmmsg: 'Rust UDP one-way 64 B, UdpEndpoint recvmmsg (received)',
    udp_stream_io_uring: 'Rust UDP one-way 64 B, UdpEndpoint io_uring (received)',
  }
  for (const j of cargoBench('zerohop-udp', 'udp')) {
    const bench = udpNames[j.bench as string] ?? String(j.bench)
    if (j.p50_us !== undefined) rows.push({ bench, run: j.run!, p50: j.p50_us as number, p99: j.p99_us as number, p999: j.p999_us as number })
    else rows.push({ bench: `${bench}, lost ${j.lost}`, run: j.run!, rate: j.msgs_per_sec as number, mbps: ((j.msgs_per_sec as number) * 64) / 1e6 })
  }
}

if (process.env.BENCH_RUST !== '0' && (process.env.BENCH_ONLY === undefined || process.env.BENCH_ONLY === 'kcp')) {
  console.error('running cargo bench (the KCP engine against ikcp.c)…')
  for (const j of cargoBench('zerohop-proto', 'kcp')) {
    const of = 'KCP engine 64 B, sent, delivered, acknowledged and received in one thread (fastest preset)'
    const [ours, theirs] = [j.oursNs as number, j.referenceNs as number]
    rows.push({ bench: `Rust ${of}: ikcp.c, the reference C (baseline)`, run: j.run!, rate: 1e9 / theirs })
    rows.push({ bench: `Rust ${of}: zerohop_proto::kcp`, run: j.run!, rate: 1e9 / ours, vsBaseline: `${(theirs / ours).toFixed(2)}× ikcp.c` })
  }
}

// ---- KCP: kcp:// against sockperf UDP, Node net over TCP and tcp:// ----------------------

const KCP_MODES = ['normal', 'fast', 'turbo', 'fastest'] as const

/** Node net over TCP, tcp:// and kcp:// in each mode: their round trips in turns, awaiting recv() (spinUs 50). */
async function kcpEchoesInTurns(): Promise<Float64Array[]> {
  const specs = ['net:tcp', 'stream:tcp://127.0.0.1:0:50', ...KCP_MODES.map((m) => `stream:kcp://127.0.0.1:0?mode=${m}:50`)]
  return echoesInTurns(specs, async (address, spec) => {
    if (spec.startsWith('net:')) return netPinger(address)
    const mode = /mode=(\w+)/.exec(spec)?.[1]
    return hubPinger(await Hub.open(address as `kcp://${string}`, { spinUs: 50, ...(mode && { mode: mode as 'fast' }) }))
  })
}

/**
 * Round trips on loopback, in turns (see inTurns): Node net over TCP, tcp:// and
 * kcp:// in each mode, all awaiting recv() with the default spin; beside them
 * sockperf's blocking UDP ping-pong, the floor of a UDP round trip with the default
 * wait (the target's baseline).
 */
async function kcpRtt(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: KCP RTT…`)
  const spf = rttSockperf(false)
  if (spf) rows.push({ bench: 'KCP RTT 64 B  sockperf UDP ping-pong, blocking (kernel floor)', run, ...spf })
  await eachWith('kcp', run, async (tag) => {
    const [netSamples, tcpSamples, ...kcpSamples] = await kcpEchoesInTurns()
    const net = percentiles(netSamples!)
    const tcp = percentiles(tcpSamples!)
    rows.push({ bench: `KCP RTT 64 B  Node net over TCP (baseline, in turns with the rows below)${tag}`, run, ...net })
    rows.push({ bench: `KCP RTT 64 B  zerohop tcp://, await recv() (spinUs 50, default)${tag}`, run, ...tcp, vsBaseline: `${(tcp.p50 / net.p50).toFixed(2)}× net` })
    KCP_MODES.forEach((mode, i) => {
      const k = percentiles(kcpSamples[i]!)
      const vs = `${(k.p50 / net.p50).toFixed(2)}× net, ${(k.p50 / tcp.p50).toFixed(2)}× tcp://` + (spf ? `, ${(k.p50 / spf.p50).toFixed(2)}× sockperf UDP` : '')
      const target = mode === 'fast' ? '≤ 1.5× sockperf UDP' : ''
      rows.push({ bench: `KCP RTT 64 B  zerohop kcp:// ${mode}${mode === 'fast' ? ' (default)' : ''}, await recv() (spinUs 50, default)${tag}`, run, ...k, vsBaseline: vs, target })
    })
  })
}

/** One way on loopback, 64 B: Node net over TCP before and after, tcp:// and kcp:// in each mode. */
async function kcpThroughput(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: KCP throughput…`)
  const count = 2_000_000
  const netBefore = await streamNet(64, count, true)
  const hubs: Array<{ bench: string; rate: number; target?: string }> = []
  await eachWith('kcp', run, async (tag) => {
    hubs.push({ bench: `zerohop tcp:// publish (receiver)${tag}`, rate: await streamHub('tcp://127.0.0.1:0', 64, count) })
    for (const mode of KCP_MODES) {
      const rate = await streamHub(`kcp://127.0.0.1:0?mode=${mode}`, 64, count)
      const dflt = mode === 'fast'
      hubs.push({ bench: `zerohop kcp:// ${mode}${dflt ? ' (default)' : ''} publish (receiver)${tag}`, rate, target: dflt ? '≥ 2× net, ≥ 300 K/s' : undefined })
    }
  })
  const net = (netBefore + (await streamNet(64, count, true))) / 2
  rows.push({ bench: 'KCP one-way 64 B  Node net over TCP (baseline, receiver; before and after the rows below)', run, rate: net, mbps: (net * 64) / 1e6 })
  for (const h of hubs) rows.push({ bench: `KCP one-way 64 B  ${h.bench}`, run, rate: h.rate, mbps: (h.rate * 64) / 1e6, vsBaseline: `${(h.rate / net).toFixed(2)}× net`, target: h.target })
}

/** Packet loss (%) the benchmark runs kcp:// and TCP under, and the samples it takes at each. */
const LOSSES = [
  { loss: 0, samples: 4000, messages: 1_000_000 },
  { loss: 1, samples: 2000, messages: 300_000 },
  { loss: 5, samples: 1000, messages: 200_000 },
  { loss: 10, samples: 600, messages: 100_000 },
]


/**
 * kcp:// against TCP (Node net and tcp://) under the same packet loss: a userspace proxy
 * cannot drop TCP segments, so both ends run in a network namespace of their own whose
 * nftables drops that share of the packets at random on the input hook (each packet on
 * its loopback passes it once, whichever way it goes). At each loss the part below runs
 * in the namespace (this script again, BENCH_INNER=kcp-loss) and hands its rows back.
 */
async function kcpLoss(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: KCP and TCP under packet loss…`)
  const missing = process.getuid?.() !== 0 ? 'root' : spawnSync('ip', ['netns', 'list'], { stdio: 'ignore' }).status !== 0 ? 'ip netns' : !ensure.nftables() ? 'nftables' : undefined
  if (missing) {
    rows.push({ bench: `KCP under loss: not run (needs ${missing})`, run })
    return
  }
  const ns = `zh-loss-${process.pid}`
  const inNs = (args: string[], input?: string) => spawnSync('ip', ['netns', 'exec', ns, ...args], { input, encoding: 'utf8' })
  spawnSync('ip', ['netns', 'add', ns])
  try {
    inNs(['ip', 'link', 'set', 'lo', 'up'])
    for (const { loss, samples, messages } of LOSSES) {
      const drop = loss > 0 ? `numgen random mod 100 < ${loss} drop` : ''
      inNs([NFT, 'flush', 'ruleset'])
      const set = inNs([NFT, '-f', '-'], `table inet zhloss {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ${drop}\n }\n}\n`)
      if (set.status !== 0) throw new Error(`nft: ${set.stderr}`)
      // (Certificates made here once, not by cargo inside each run.)
      const env = { ...process.env, BENCH_PKI: pki(), BENCH_INNER: 'kcp-loss', BENCH_LOSS: String(loss), BENCH_MESSAGES: String(messages), BENCH_RUN: String(run) }
      Object.assign(env, { BENCH_RTT_SAMPLES: String(samples), BENCH_RTT_WARMUP: '200', BENCH_RUST: '0', BENCH_ONLY: 'kcp-inner', BENCH_BASELINE: '' })
      const argv = [process.execPath, '--import', 'tsx', join(here, 'run.ts')]
      const r = spawnSync('taskset', ['-c', '0', 'ip', 'netns', 'exec', ns, ...argv], { cwd: root, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 })
      if (r.status !== 0) throw new Error(`the run at ${loss} % loss failed (${r.status})`)
      rows.push(...(JSON.parse(r.stdout) as Row[]))
    }
  } finally {
    spawnSync('ip', ['netns', 'del', ns])
  }
}

/** The part of `kcpLoss` that runs in the namespace, at `loss` %. */
async function kcpLossInner(loss: number, run: number, messages: number): Promise<void> {
  const at = `at ${loss} % loss`
  const stats = (s: Float64Array) => ({ ...percentiles(s), mean: s.reduce((a, b) => a + b, 0) / s.length / 1000, max: Math.max(...s) / 1000 })
  const [netSamples, tcpSamples, ...kcpSamples] = (await kcpEchoesInTurns()).map(stats)
  const net = netSamples!
  const tcp = tcpSamples!
  const ms = (us: number) => `${(us / 1000).toFixed(1)} ms`
  const shape = (r: { mean: number; max: number }) => `mean ${ms(r.mean)}, max ${ms(r.max)}`
  rows.push({ bench: `KCP RTT 64 B ${at}  Node net over TCP (baseline, in turns with the rows below)`, run, ...net, vsBaseline: shape(net) })
  rows.push({ bench: `KCP RTT 64 B ${at}  zerohop tcp://, await recv()`, run, ...tcp, vsBaseline: `${shape(tcp)}; ${(tcp.mean / net.mean).toFixed(2)}× net mean` })
  KCP_MODES.forEach((mode, i) => {
    const k = kcpSamples[i]!
    const vs = `${shape(k)}; mean ${(k.mean / tcp.mean).toFixed(2)}× tcp://, ${(k.mean / net.mean).toFixed(2)}× net; max ${(k.max / tcp.max).toFixed(2)}× tcp://, ${(k.max / net.max).toFixed(2)}× net`
    // The seed's claim for KCP against TCP under loss, against both TCPs here.
    const target = loss > 0 ? 'mean ≤ 0.7×, max ≤ 0.33× tcp:// and net' : ''
    rows.push({ bench: `KCP RTT 64 B ${at}  zerohop kcp:// ${mode}${mode === 'fast' ? ' (default)' : ''}, await recv()`, run, ...k, vsBaseline: vs, target })
  })
  const netRate = await streamNet(64, messages, true)
  rows.push({ bench: `KCP one-way 64 B ${at}  Node net over TCP (baseline, receiver)`, run, rate: netRate, mbps: (netRate * 64) / 1e6 })
  const tcpRate = await streamHub('tcp://127.0.0.1:0', 64, messages)
  rows.push({ bench: `KCP one-way 64 B ${at}  zerohop tcp:// publish (receiver)`, run, rate: tcpRate, mbps: (tcpRate * 64) / 1e6, vsBaseline: `${(tcpRate / netRate).toFixed(2)}× net` })
  for (const mode of KCP_MODES) {
    const rate = await streamHub(`kcp://127.0.0.1:0?mode=${mode}`, 64, messages)
    rows.push({ bench: `KCP one-way 64 B ${at}  zerohop kcp:// ${mode} publish (receiver)`, run, rate, mbps: (rate * 64) / 1e6, vsBaseline: `${(rate / netRate).toFixed(2)}× net, ${(rate / tcpRate).toFixed(2)}× tcp://` })
  }
  // At-least-once UDP against plain UDP and QUIC (reliable streams), the same messages.
  const small = new Uint8Array(64)
  for (const [what, url] of [
    ['udp:// (lossy)', 'udp://127.0.0.1:0'],
    ['udp:// at-least-once (reliableChannels=0, backpressure=block)', 'udp://127.0.0.1:0?reliableChannels=0&backpressure=block'],
  ] as const) {
    const r = await oneWay(url, small, messages)
    rows.push({ bench: `KCP one-way 64 B ${at}  zerohop ${what} publish (receiver)`, run, rate: r.rate, mbps: (r.rate * 64) / 1e6, vsBaseline: `${(r.rate / tcpRate).toFixed(2)}× tcp://, ${(r.got * 100).toFixed(1)} % arrived` })
  }
  const quic = await streamQuic(64, messages)
  rows.push({ bench: `KCP one-way 64 B ${at}  zerohop quic:// publish (receiver)`, run, rate: quic, mbps: (quic * 64) / 1e6, vsBaseline: `${(quic / tcpRate).toFixed(2)}× tcp://` })
}

// ---- Across transports: what QoS, faults and compression cost ------------------------

/**
 * One way, `count` messages of `payload` from a hub on `url` (its parameters on both
 * ends) to a sink in another process: the sink's msg/s, what share of the messages it
 * got (a lossy transport ends after 500 ms without one), and the bytes compression
 * saved at the publisher.
 */
async function oneWay(url: string, payload: Uint8Array, count: number, options?: current.PublishOptions): Promise<{ rate: number; got: number; saved: number }> {
  const p = spawnHelper(join(here, 'peer.ts'), ['stream-sink', url, String(count)], 1, { ...peerEnv, BENCH_SINK_IDLE_MS: '500' })
  const { address } = (await p.next()) as { address: string }
  const query = url.includes('?') ? url.slice(url.indexOf('?')) : ''
  // (A udp:// hub binds its own address and names where it sends.)
  const [to, queue] = url.startsWith('udp:') ? ['udp://127.0.0.1:0', { peers: [address.slice('udp://'.length)] }] : [address, { sendQueueBytes: 16 << 20 }]
  const hub = await Hub.open(`${to}${query}` as `tcp://${string}`, { role: 'publisher', ...queue })
  for (let i = 0; i < count; i++) {
    try {
      hub.publish(payload, options)
    } catch (e) {
      // A reliable channel whose flight is full pushes back: wait for room.
      if ((e as { code?: string }).code !== 'ERR_BACKPRESSURE') throw e
      await hub.send(payload, options)
    }
    if ((i & 4095) === 4095) await new Promise((r) => setImmediate(r))
  }
  const details = (hub.metrics() as unknown as Record<string, Record<string, unknown> | undefined>)[hub.transport]
  const result = await p.next()
  await exited(p.proc)
  await hub.close({ lingerMs: 0 })
  return { rate: result.msgsPerSec as number, got: (result.received as number) / count, saved: Number(details?.bytesSaved ?? 0) }
}

/** A JSON-like message of about `size` bytes: quotes of a market-data feed. */
function jsonPayload(size: number): Uint8Array {
  const quotes: object[] = []
  let text = ''
  for (let i = 0; text.length < size; i++) {
    quotes.push({ symbol: `SYM${i % 50}`, bid: 100 + ((i * 37) % 1000) / 100, ask: 100.05 + ((i * 41) % 1000) / 100, size: 100 * (i % 9), venue: 'XNAS' })
    text = JSON.stringify(quotes)
  }
  return new TextEncoder().encode(text.slice(0, size))
}

const qosParts = new Set((process.env.BENCH_QOS ?? 'cost,lz4').split(','))

async function qosRound(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: the cost of QoS, faults and compression…`)
  const small = new Uint8Array(64)
  // Each variant against the plain hub run just before it, on the same transport.
  const ttl = { ttlMs: 60_000 }
  const variants: Array<[scheme: 'tcp' | 'udp', what: string, query: string, options?: current.PublishOptions]> = [
    ['tcp', 'rate limit on, never reached', 'rateLimit=1000000000'],
    ['tcp', 'faults on, none drawn (chaos=loss:0)', 'chaos=loss:0'],
    ['tcp', 'priority channels on (priorities=0,1)', 'priorities=0,1'],
    ['tcp', 'every message with a time to live (ttlMs: 60000)', '', ttl],
    ['udp', 'rate limit on, never reached', 'rateLimit=1000000000'],
    ['udp', 'faults on, none drawn (chaos=loss:0)', 'chaos=loss:0'],
    ['udp', 'every message with a time to live (ttlMs: 60000)', '', ttl],
    ['udp', 'at-least-once channel (reliableChannels=0, backpressure=block)', 'reliableChannels=0&backpressure=block'],
  ]
  const base = (scheme: string) => (scheme === 'tcp' ? 'tcp://127.0.0.1:0' : 'udp://127.0.0.1:0')
  for (const [scheme, what, query, options] of qosParts.has('cost') ? variants : []) {
    const count = 1_000_000
    const plain = await oneWay(base(scheme), small, count)
    const on = await oneWay(query === '' ? base(scheme) : `${base(scheme)}?${query}`, small, count, options)
    const got = (r: { got: number }) => (r.got < 1 ? `, ${(r.got * 100).toFixed(1)} % arrived` : '')
    rows.push({ bench: `QoS one-way 64 B  zerohop ${scheme}:// plain (receiver, against the row below)`, run, rate: plain.rate, mbps: (plain.rate * 64) / 1e6, vsBaseline: got(plain).slice(2) })
    rows.push({ bench: `QoS one-way 64 B  zerohop ${scheme}:// ${what} (receiver)`, run, rate: on.rate, mbps: (on.rate * 64) / 1e6, vsBaseline: `${(on.rate / plain.rate).toFixed(2)}× plain${got(on)}` })
  }
  // LZ4 on what compresses and on what does not, 1 KB messages over tcp://.
  if (!qosParts.has('lz4')) return
  for (const [what, payload] of [
    ['JSON-like', jsonPayload(1024)],
    ['random', new Uint8Array(randomBytes(1024))],
  ] as const) {
    const count = 300_000
    const plain = await oneWay('tcp://127.0.0.1:0', payload, count)
    const lz4 = await oneWay('tcp://127.0.0.1:0?compression=lz4', payload, count)
    const size = payload.length
    rows.push({ bench: `LZ4 one-way 1 KB ${what}  zerohop tcp:// plain (receiver)`, run, rate: plain.rate, mbps: (plain.rate * size) / 1e6 })
    const saved = `${((lz4.saved / (size * count)) * 100).toFixed(0)} % of the bytes saved`
    rows.push({ bench: `LZ4 one-way 1 KB ${what}  zerohop tcp:// compression=lz4 (receiver; MB/s of messages)`, run, rate: lz4.rate, mbps: (lz4.rate * size) / 1e6, vsBaseline: `${(lz4.rate / plain.rate).toFixed(2)}× plain, ${saved}` })
  }
}

// ---- QUIC: quic:// hubs against Node tls over TCP -------------------------------------

let pkiDir: string | undefined
/** Certificates for both: a CA and a server certificate for localhost. */
const pki = (): string => (pkiDir ??= process.env.BENCH_PKI ?? makePki())
const quicClient = () => ({ tls: { ca: join(pki(), 'ca.pem'), serverName: 'localhost' } })
const frame = (len: number) => {
  const b = Buffer.alloc(4 + len)
  b.writeUInt32LE(len, 0)
  return b
}

function tlsOpen(address: string, session?: Buffer): Promise<TLSSocket> {
  const [host, port] = address.split(':')
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({ host, port: Number(port), ca: readFileSync(join(pki(), 'ca.pem')), servername: 'localhost', session }, () => resolve(sock))
    sock.setNoDelay(true)
    sock.once('error', reject)
  })
}

/** mode 'spin': both sides spin on tryRecv; otherwise both await recv() with that spinUs. */
async function rttQuic(mode: 'spin' | number, datagrams: boolean): Promise<Float64Array> {
  const p = peer(['quic-echo', pki(), String(mode), '1'])
  const { addresses } = (await p.next()) as { addresses: string[] }
  const hub = await Hub.open(`quic://${addresses[0]}`, { ...quicClient(), spinUs: mode === 'spin' ? 0 : mode, datagrams })
  const msg = new Uint8Array(64)
  const samples = new Float64Array(RTT_SAMPLES)
  let lost = 0
  for (let i = 0; i < RTT_WARMUP + RTT_SAMPLES; i++) {
    const t = process.hrtime.bigint()
    hub.publish(msg)
    if (mode === 'spin') {
      const until = performance.now() + 100
      while (hub.tryRecv() === undefined && performance.now() < until);
    } else {
      try {
        await hub.recv({ timeoutMs: 100 })
      } catch {
        lost++ // a lost datagram (or its echo): publish the next one
      }
    }
    if (i >= RTT_WARMUP) samples[i - RTT_WARMUP] = Number(process.hrtime.bigint() - t)
  }
  if (lost > 0) console.error(`  (${lost} datagram round trips lost)`)
  await hub.close({ lingerMs: 0 })
  const done = await Hub.open(`quic://${addresses[0]}`, quicClient())
  done.publish(new Uint8Array(1))
  await done.close({ lingerMs: 2000 })
  await exited(p.proc)
  return samples
}

/** Time from opening a connection to the first echo: first contact with each of `n`
 * servers, then again (QUIC resumes with 0-RTT, Node tls with its session). */
async function firstMessage(n: number): Promise<{ quicFresh: Float64Array; quic0rtt: Float64Array; tlsFresh: Float64Array; tlsResumed: Float64Array }> {
  const out = { quicFresh: new Float64Array(n), quic0rtt: new Float64Array(n), tlsFresh: new Float64Array(n), tlsResumed: new Float64Array(n) }
  const q = peer(['quic-echo', pki(), '50', String(n)])
  const { addresses: qa } = (await q.next()) as { addresses: string[] }
  const msg = new Uint8Array(64)
  for (const [i, address] of qa.entries()) {
    for (const into of [out.quicFresh, out.quic0rtt]) {
      const t = process.hrtime.bigint()
      const hub = await Hub.open(`quic://${address}`, quicClient())
      hub.publish(msg)
      await hub.recv({ timeoutMs: 10_000 })
      into[i] = Number(process.hrtime.bigint() - t)
      await hub.close({ lingerMs: 1000 })
    }
  }
  const done = await Hub.open(`quic://${qa[0]}`, quicClient())
  done.publish(new Uint8Array(1))
  await done.close({ lingerMs: 2000 })
  await exited(q.proc)
  const tp = peer(['tls-echo', pki(), String(n)])
  const { addresses: ta } = (await tp.next()) as { addresses: string[] }
  for (const [i, address] of ta.entries()) {
    let session: Buffer | undefined
    for (const into of [out.tlsFresh, out.tlsResumed]) {
      const t = process.hrtime.bigint()
      const sock = await tlsOpen(address, session)
      sock.on('session', (s: Buffer) => (session = s))
      const got = new Promise<void>((r) => onFrames(sock, () => r()))
      sock.write(frame(64))
      await got
      into[i] = Number(process.hrtime.bigint() - t)
      sock.destroy()
    }
  }
  const last = await tlsOpen(ta[0]!)
  last.write(frame(1))
  await exited(tp.proc)
  last.destroy()
  return out
}

async function streamTls(size: number, count: number): Promise<number> {
  const p = peer(['tls-sink', pki(), String(count)])
  const { address } = (await p.next()) as { address: string }
  const sock = await tlsOpen(address)
  const msg = frame(size)
  for (let i = 0; i < count; i++) {
    if (!sock.write(msg)) await new Promise((r) => sock.once('drain', r))
  }
  const result = await p.next()
  await exited(p.proc)
  sock.destroy()
  return result.msgsPerSec as number
}

/** Publishes `count` messages of `size` bytes to a sink process; the sink's msg/s. */
async function publishToSink(hub: Awaited<ReturnType<typeof Hub.open<Uint8Array>>>, sink: Helper, size: number, count: number): Promise<number> {
  const msg = new Uint8Array(size)
  for (let i = 0; i < count; i++) {
    hub.publish(msg)
    // Yield now and then, so that timers and the status callback run.
    if ((i & 4095) === 4095) await new Promise((r) => setImmediate(r))
  }
  const result = await sink.next()
  await exited(sink.proc)
  await hub.close({ lingerMs: 0 })
  return result.msgsPerSec as number
}

async function streamQuic(size: number, count: number): Promise<number> {
  const p = peer(['quic-sink', pki(), String(count)])
  const { address } = (await p.next()) as { address: string }
  const hub = await Hub.open(`quic://${address}`, { ...quicClient(), role: 'publisher', sendQueueBytes: 16 << 20 })
  return publishToSink(hub, p, size, count)
}

const quicParts = new Set((process.env.BENCH_QUIC ?? 'rtt,first,throughput').split(','))

async function quicRound(run: number): Promise<void> {
  if (quicParts.has('rtt')) await quicRtt(run)
  if (quicParts.has('first')) await each(run, (tag) => quicFirst(run, tag))
  if (quicParts.has('throughput')) await quicThroughput(run)
}

async function quicRtt(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: QUIC RTT…`)
  await each(run, async (tag) => {
    // Node tls and the awaiting hubs take turns (see inTurns).
    const [tlsSamples, parked, dflt] = await echoesInTurns([`tls:${pki()}`, `quic:${pki()}:0`, `quic:${pki()}:50`], async (address, spec) =>
      spec.startsWith('tls:') ? framePinger(await tlsOpen(address)) : hubPinger(await Hub.open(`quic://${address}`, { ...quicClient(), spinUs: Number(spec.split(':').at(-1)) })),
    )
    const tls = percentiles(tlsSamples!)
    rows.push({ bench: `QUIC RTT 64 B  Node tls over TCP (baseline, in turns with the rows below)${tag}`, run, ...tls })
    const vs = (r: { p50: number }) => `${(r.p50 / tls.p50).toFixed(2)}× tls`
    const spin = percentiles(await rttQuic('spin', false))
    rows.push({ bench: `QUIC RTT 64 B  zerohop quic:// stream, tryRecv spinning${tag}`, run, ...spin, vsBaseline: vs(spin), target: 'p50 ≤ 1× tls' })
    for (const [spinUs, samples] of [[0, parked!], [50, dflt!]] as const) {
      const r = percentiles(samples)
      rows.push({ bench: `QUIC RTT 64 B  zerohop quic:// stream, await recv() (spinUs ${spinUs}${spinUs === 50 ? ', default' : ''})${tag}`, run, ...r, vsBaseline: vs(r), target: 'p50 ≤ 1× tls' })
    }
    const dgSpin = percentiles(await rttQuic('spin', true))
    rows.push({ bench: `QUIC RTT 64 B  zerohop quic:// datagrams, tryRecv spinning${tag}`, run, ...dgSpin, vsBaseline: vs(dgSpin) })
    const dg = percentiles(await rttQuic(0, true))
    rows.push({ bench: `QUIC RTT 64 B  zerohop quic:// datagrams, await recv() (spinUs 0)${tag}`, run, ...dg, vsBaseline: vs(dg) })
  })
}

/** A Node socket (net or tls) sending a 64-byte frame and awaiting the echo. */
function framePinger(sock: Socket): Pinger {
  let echoed: (() => void) | undefined
  onFrames(sock, () => echoed?.())
  const msg = frame(64)
  return {
    ping: () =>
      new Promise<void>((r) => {
        echoed = r
        sock.write(msg)
      }),
    end: () => sock.write(frame(1)),
    close: () => void sock.destroy(),
  }
}

async function quicFirst(run: number, tag: string): Promise<void> {
  console.error(`round ${run}/${RUNS}: QUIC time to first message…`)
  const f = await firstMessage(10)
  if (tag === '' || tag.includes('after')) {
    rows.push({ bench: 'QUIC first message  Node tls, new connection (connect + round trip)', run, ...percentiles(f.tlsFresh) })
    rows.push({ bench: 'QUIC first message  Node tls, resumed session', run, ...percentiles(f.tlsResumed) })
  }
  const fresh = percentiles(f.quicFresh)
  rows.push({ bench: `QUIC first message  zerohop quic://, first contact (full handshake)${tag}`, run, ...fresh })
  const zero = percentiles(f.quic0rtt)
  rows.push({ bench: `QUIC first message  zerohop quic://, reconnect (0-RTT)${tag}`, run, ...zero, vsBaseline: `${(zero.p50 / fresh.p50).toFixed(2)}× first contact` })
}

async function quicThroughput(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: QUIC throughput…`)
  const tls64 = await streamTls(64, 500_000)
  rows.push({ bench: 'QUIC one-way 64 B  Node tls over TCP (baseline, receiver)', run, rate: tls64, mbps: (tls64 * 64) / 1e6 })
  await each(run, async (tag) => {
    const q64 = await streamQuic(64, 1_000_000)
    rows.push({ bench: `QUIC one-way 64 B  zerohop quic:// publish (receiver)${tag}`, run, rate: q64, mbps: (q64 * 64) / 1e6, vsBaseline: `${(q64 / tls64).toFixed(2)}× tls`, target: '≥ 300 K/s' })
  })
  const tls64k = await streamTls(64 << 10, 20_000)
  rows.push({ bench: 'QUIC one-way 64 KB  Node tls over TCP (baseline, receiver)', run, rate: tls64k, mbps: (tls64k * 65536) / 1e6 })
  await each(run, async (tag) => {
    const q64k = await streamQuic(64 << 10, 20_000)
    rows.push({ bench: `QUIC one-way 64 KB  zerohop quic:// publish (receiver)${tag}`, run, rate: q64k, mbps: (q64k * 65536) / 1e6, vsBaseline: `${(q64k / tls64k).toFixed(2)}× tls`, target: '≥ 125 MB/s (1 Gbit/s), ≥ 1× tls' })
  })
}

// ---- TCP and Unix sockets: tcp:// and uds:// hubs against Node net ------------------------

/** A Node net socket to `address` (TCP `host:port`, or a Unix socket path), pinging with frames. */
async function netPinger(address: string): Promise<Pinger> {
  const [host, port] = address.split(':')
  const sock = port === undefined ? connect(address) : connect(Number(port), host)
  sock.setNoDelay(true)
  await new Promise((r) => sock.once('connect', r))
  return framePinger(sock)
}

/** A zeromq.js REQ socket to `address` (`tcp://host:port`): 64 bytes, then the reply. */
async function zmqPinger(address: string): Promise<Pinger> {
  const req = new Request()
  req.connect(address)
  const msg = Buffer.alloc(64)
  return {
    ping: async () => {
      await req.send(msg)
      await req.receive()
    },
    end: () => void req.send(Buffer.alloc(1)),
    close: () => req.close(),
  }
}

/** `each`, for the subjects that have `scheme` (a baseline may predate it). */
async function eachWith(scheme: string, run: number, fn: (tag: string) => Promise<void>): Promise<void> {
  await each(run, async (tag) => {
    const probe = await Hub.open(`${scheme}://127.0.0.1:0` as `tcp://${string}`, { listen: true }).catch(() => undefined)
    if (probe === undefined) return
    await probe.close({ lingerMs: 0 })
    await fn(tag)
  })
}

async function streamRtt(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: TCP and Unix socket RTT…`)
  const spf = rttSockperf(false, true)
  if (spf) rows.push({ bench: 'TCP RTT 64 B  sockperf ping-pong --tcp, blocking (kernel floor)', run, ...spf })
  await eachWith('tcp', run, async (tag) => {
    for (const kind of ['tcp', 'uds'] as const) {
      const KIND = kind.toUpperCase()
      const url = () => (kind === 'tcp' ? 'tcp://127.0.0.1:0' : `uds://@${unique('uds')}`)
      const net = kind === 'tcp' ? 'net:tcp' : `net:${join(tmpdir(), `${unique('net')}.sock`)}`
      // Node net (and over TCP zeromq.js) and the awaiting hubs take turns (see inTurns).
      const specs = [net, `stream:${url()}:0`, `stream:${url()}:50`, ...(kind === 'tcp' ? ['zmq'] : [])]
      const [netSamples, parked, dflt, zmqSamples] = await echoesInTurns(specs, async (address, spec) =>
        spec.startsWith('net:')
          ? netPinger(address)
          : spec === 'zmq'
            ? zmqPinger(address)
            : hubPinger(await Hub.open(address as `tcp://${string}`, { spinUs: Number(spec.slice(spec.lastIndexOf(':') + 1)) })),
      )
      const base = percentiles(netSamples!)
      rows.push({ bench: `${KIND} RTT 64 B  Node net over ${kind === 'tcp' ? 'TCP' : 'a Unix socket'} (baseline, in turns with the rows below)${tag}`, run, ...base })
      const zmq = zmqSamples && percentiles(zmqSamples)
      if (zmq) rows.push({ bench: `${KIND} RTT 64 B  zeromq.js REQ/REP over TCP (in turns)${tag}`, run, ...zmq, vsBaseline: `${(zmq.p50 / base.p50).toFixed(2)}× net` })
      const vs = (r: { p50: number }) => `${(r.p50 / base.p50).toFixed(2)}× net` + (zmq ? `, ${(r.p50 / zmq.p50).toFixed(2)}× zeromq` : '')
      const turns = kind === 'tcp' ? SPIN_TURNS : 1
      const { samples: spinSamples, floors, nodeFloors, ratios } = await spinningAgainstFloor(url, turns)
      const spin = percentiles(spinSamples)
      let floor = ''
      let nodeFloorVs = ''
      if (nodeFloors.length > 0 && nodeFloors.length === floors.length) {
        // Each Node floor right after its sockperf floor: their ratio, pair by pair.
        const nf = percentiles(concat(nodeFloors))
        const p50s = nodeFloors.map((f) => percentiles(f).p50)
        const pairs = p50s.map((p50, i) => p50 / floors[i]!.p50)
        const listed = pairs.map((r) => r.toFixed(2)).join(', ')
        rows.push({
          bench: `TCP RTT 64 B  Node + Node-API recv(2)/send(2) only, spinning (the Node floor, right after each sockperf floor; p50 ${p50s.map((x) => x.toFixed(1)).join(', ')})${tag}`,
          run,
          ...nf,
          vsBaseline: `${median(pairs).toFixed(2)}× sockperf spin (median of ${listed})`,
        })
        nodeFloorVs = `, ${(spin.p50 / nf.p50).toFixed(2)}× the Node floor`
      }
      if (floors.length > turns) {
        const mean = (k: 'p50' | 'p99' | 'p999') => floors.reduce((a, f) => a + f[k], 0) / floors.length
        const p50s = floors.map((f) => f.p50.toFixed(1)).join(', ')
        rows.push({ bench: `TCP RTT 64 B  sockperf ping-pong --tcp --nonblocked, spinning (kernel floor, before, between and after the turns below; p50 ${p50s})${tag}`, run, p50: mean('p50'), p99: mean('p99'), p999: mean('p999') })
        const steady = ratios.filter((r) => r.steady)
        const counted = (steady.length > 0 ? steady : ratios).map((r) => r.ratio)
        const listed = ratios.map((r) => `${r.ratio.toFixed(2)}${r.steady ? '' : '?'}`).join(', ')
        const of = steady.length > 0 ? `the steady turns of ${listed}; ? the floor moved` : `${listed}, no turn steady`
        floor = `, ${median(counted).toFixed(2)}× sockperf spin (median of ${of})`
      }
      rows.push({ bench: `${KIND} RTT 64 B  zerohop ${kind}://, tryRecv spinning${turns > 1 ? ` (${turns} turns)` : ''}${tag}`, run, ...spin, vsBaseline: vs(spin) + floor + nodeFloorVs, target: kind === 'tcp' ? '≤ 1.25× sockperf spin' : '' })
      const d = percentiles(dflt!)
      rows.push({ bench: `${KIND} RTT 64 B  zerohop ${kind}://, await recv() (spinUs 50, default)${tag}`, run, ...d, vsBaseline: vs(d), target: '≤ 0.6× net' })
      const p = percentiles(parked!)
      rows.push({ bench: `${KIND} RTT 64 B  zerohop ${kind}://, await recv() (spinUs 0)${tag}`, run, ...p, vsBaseline: vs(p), target: '≤ 1× net' })
    }
  })
}

/** Turns of spinning round trips against sockperf's spinning floor (TCP), and round trips in each. */
const SPIN_TURNS = 7
const SPIN_TURN_SAMPLES = 10_000
/** How far apart (as a ratio) the floors on either side of a turn may be for the turn to count. */
const STEADY_FLOOR = 1.1

/**
 * Round trips with both sides spinning on `tryRecv`, in `turns` turns with sockperf's
 * spinning TCP floor measured before, between and after them (A-B-A-B-A…) when there
 * are several. The VM's latency flips between states every few seconds, so a turn and
 * the floor around it can be in different ones. To keep them close, one echo serves
 * every turn and is stopped (SIGSTOP: it spins on CPU 1, where sockperf's server runs)
 * while each floor is measured, so a floor is taken within a second of the turns on
 * either side. Each turn's ratio to the mean of those floors is kept, and the median
 * of the turns whose two floors agree (within `STEADY_FLOOR`: the machine stayed in
 * one state) is what the row says; a turn whose floors disagree says nothing either way.
 *
 * Beside each sockperf floor, the Node floor: the same round trip between two Node
 * processes that spin on recv(2) and send(2) through a bare Node-API addon
 * (node-floor/), with no framing, protocol or ring: what any Node library stands on.
 */
async function spinningAgainstFloor(
  url: () => string,
  turns: number,
): Promise<{
  samples: Float64Array
  floors: Array<{ p50: number; p99: number; p999: number }>
  nodeFloors: Float64Array[]
  ratios: Array<{ ratio: number; steady: boolean }>
}> {
  const floors: Array<{ p50: number; p99: number; p999: number }> = []
  const nodeFloors: Float64Array[] = []
  const ratios: Array<{ ratio: number; steady: boolean }> = []
  const all: Float64Array[] = []
  const p = peer(['echoes', `stream:${url()}:spin`])
  const { addresses } = (await p.next()) as { addresses: string[] }
  const hub = await Hub.open(addresses[0] as `tcp://${string}`, { spinUs: 0 })
  const msg = new Uint8Array(64)
  const ping = () => {
    hub.publish(msg)
    while (hub.tryRecv() === undefined);
  }
  const addon = turns > 1 ? nodeFloorAddon() : undefined
  const nodeFloor = addon === undefined ? undefined : await nodeFloorPinger(addon)
  const perTurn = turns > 1 ? SPIN_TURN_SAMPLES : RTT_SAMPLES
  const floor = () => {
    if (turns === 1) return undefined
    p.proc.kill('SIGSTOP')
    const f = rttSockperf(true, true, 1)
    // Paired with the sockperf floor just taken (none without it).
    const nf = f && nodeFloor ? nodeFloor.turn(SPIN_TURN_SAMPLES) : undefined
    p.proc.kill('SIGCONT')
    if (f) floors.push(f)
    if (nf) nodeFloors.push(nf)
    return f
  }
  let before = floor()
  for (let t = 0; t < turns; t++) {
    for (let i = 0; i < RTT_WARMUP; i++) ping()
    const samples = new Float64Array(perTurn)
    for (let i = 0; i < perTurn; i++) {
      const t0 = process.hrtime.bigint()
      ping()
      samples[i] = Number(process.hrtime.bigint() - t0)
    }
    all.push(samples)
    const after = floor()
    if (before && after) {
      const steady = Math.max(before.p50, after.p50) / Math.min(before.p50, after.p50) <= STEADY_FLOOR
      ratios.push({ ratio: percentiles(samples).p50 / ((before.p50 + after.p50) / 2), steady })
    }
    before = after
  }
  hub.publish(new Uint8Array(1)) // ends the echo
  await exited(p.proc)
  await hub.close({ lingerMs: 0 })
  await nodeFloor?.close()
  return { samples: concat(all), floors, nodeFloors, ratios }
}

/**
 * The Node floor's client, connected to its echo (peer.ts `floor-echo`, stopped
 * between turns so that it does not spin on CPU 1 meanwhile): `turn(n)` times n round
 * trips of 64 bytes (after a warm-up), in nanoseconds.
 */
async function nodeFloorPinger(addon: string): Promise<{ turn(n: number): Float64Array; close(): Promise<void> }> {
  const floor = createRequire(import.meta.url)(addon) as NodeFloor
  const echo = peer(['floor-echo', addon])
  const { port } = (await echo.next()) as { port: number }
  const fd = floor.connect(port)
  const msg = new Uint8Array(64)
  const buf = new Uint8Array(65536)
  const ping = () => {
    floor.send(fd, msg, 64)
    let got = 0
    while (got < 64) {
      const n = floor.recv(fd, buf)
      if (n > 0) got += n
    }
  }
  echo.proc.kill('SIGSTOP')
  return {
    turn(n: number): Float64Array {
      echo.proc.kill('SIGCONT')
      for (let i = 0; i < RTT_WARMUP; i++) ping()
      const samples = new Float64Array(n)
      for (let i = 0; i < n; i++) {
        const t0 = process.hrtime.bigint()
        ping()
        samples[i] = Number(process.hrtime.bigint() - t0)
      }
      echo.proc.kill('SIGSTOP')
      return samples
    },
    async close(): Promise<void> {
      echo.proc.kill('SIGCONT')
      floor.shutdown(fd)
      await exited(echo.proc)
    },
  }
}

/** zerohop one way: `count` messages of `size` bytes to a stream-sink over `url`; the receiver's msg/s. */
async function streamHub(url: string, size: number, count: number): Promise<number> {
  const p = peer(['stream-sink', url, String(count)])
  const { address } = (await p.next()) as { address: string }
  // The publisher takes the listener's URL parameters too (kcp://…?mode=turbo).
  const query = url.includes('?') ? url.slice(url.indexOf('?')) : ''
  const hub = await Hub.open(`${address}${query}` as `tcp://${string}`, { role: 'publisher', sendQueueBytes: 16 << 20 })
  return publishToSink(hub, p, size, count)
}

/** zeromq.js one way: PUSH to a PULL sink in another process, over TCP; the receiver's msg/s. */
async function streamZmq(size: number, count: number): Promise<number> {
  const p = peer(['zmq-sink', String(count)])
  const { address } = (await p.next()) as { address: string }
  const push = new Push()
  push.connect(address)
  const msg = Buffer.alloc(size)
  for (let i = 0; i < count; i++) await push.send(msg)
  const result = await p.next()
  await exited(p.proc)
  push.close()
  return result.msgsPerSec as number
}

async function streamThroughput(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: TCP and Unix socket throughput…`)
  for (const kind of ['tcp', 'uds'] as const) {
    const KIND = kind.toUpperCase()
    const url = () => (kind === 'tcp' ? 'tcp://127.0.0.1:0' : `uds://@${unique('sink')}`)
    // Long enough that zerohop's start-up (the first acknowledgements, JIT) is a small part.
    for (const [size, count] of [
      [64, 3_000_000],
      [4096, 500_000],
    ] as const) {
      const label = size === 64 ? '64 B' : '4 KB'
      // Node net before and after the hubs (A-B-A): a drift of the machine's speed
      // during the round falls on both sides alike; its mean is the baseline.
      const netBefore = await streamNet(size, count, kind === 'tcp')
      const zmq = kind === 'tcp' ? await streamZmq(size, Math.min(count, 300_000)) : undefined
      const floor = kind === 'tcp' && size === 4096 ? tcpFloor() : undefined
      const hubs: Array<{ tag: string; rate: number }> = []
      await eachWith('tcp', run, async (tag) => {
        hubs.push({ tag, rate: await streamHub(url(), size, count) })
      })
      const net = (netBefore + (await streamNet(size, count, kind === 'tcp'))) / 2
      rows.push({ bench: `${KIND} one-way ${label}  Node net (baseline, receiver; before and after the rows below)`, run, rate: net, mbps: (net * size) / 1e6 })
      if (zmq) rows.push({ bench: `${KIND} one-way ${label}  zeromq.js PUSH/PULL (receiver)`, run, rate: zmq, mbps: (zmq * size) / 1e6, vsBaseline: `${(zmq / net).toFixed(2)}× net` })
      if (floor !== undefined) {
        const rate = (floor * 1e6) / size
        rows.push({ bench: `${KIND} one-way ${label}  loopback TCP, a copy a side, no messaging (tcp_floor COPY=1: the floor of that design)`, run, rate, mbps: floor, vsBaseline: `${(rate / net).toFixed(2)}× net` })
      }
      for (const { tag, rate: z } of hubs) {
        const target = size === 64 ? `≥ 3× net${zmq ? ', ≥ 3× zeromq' : ''}` : '≥ 1.5× net (MB/s)'
        const vsZmq = zmq ? `, ${(z / zmq).toFixed(2)}× zeromq` : ''
        const vsFloor = floor !== undefined ? `, ${Math.round((100 * z * size) / 1e6 / floor)} % of the floor` : ''
        rows.push({ bench: `${KIND} one-way ${label}  zerohop ${kind}:// publish (receiver)${tag}`, run, rate: z, mbps: (z * size) / 1e6, vsBaseline: `${(z / net).toFixed(2)}× net${vsZmq}${vsFloor}`, target })
      }
    }
  }
}

/** Clients of the broadcast benchmark, each its own process. */
const BROADCAST_CLIENTS = 8

/**
 * One tcp:// listener publishing 64 B messages to `clients` client processes (all on
 * CPU 1, as every peer here), each reading one message at a time with `borrow()`, or
 * (`drain`) in batches with `drain()`; the slowest and the fastest client's rate. Its send
 * queues hold the whole run, so that the clients' share of one core, not the policy
 * for slow consumers, is what is measured.
 */
async function broadcastTo(clients: number, count: number, drain = false): Promise<number[]> {
  const hub = await Hub.open('tcp://127.0.0.1:0', { listen: true, role: 'publisher', sendQueueBytes: count * 80 })
  const procs = Array.from({ length: clients }, () => peer(['stream-count', `tcp://${hub.localAddress}`, String(count), ...(drain ? ['drain'] : [])]))
  for (const c of procs) await c.next()
  while (hub.metrics().tcp!.peers < clients) await new Promise((r) => setTimeout(r, 5))
  const msg = new Uint8Array(64)
  for (let i = 0; i < count; i++) {
    hub.publish(msg)
    if ((i & 4095) === 4095) await new Promise((r) => setImmediate(r))
  }
  const rates = (await Promise.all(procs.map(async (c) => (await c.next()).msgsPerSec as number))).sort((a, b) => a - b)
  await Promise.all(procs.map((c) => exited(c.proc)))
  if (hub.metrics().tcp!.slowConsumers > 0) throw new Error('a broadcast client was disconnected as a slow consumer')
  await hub.close({ lingerMs: 0 })
  return rates
}

/**
 * Broadcast to 8 client processes, beside the same harness with one client (what one
 * core receives). Each client counts as many messages as Node net's one-way run does.
 */
async function streamBroadcast(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: TCP broadcast to ${BROADCAST_CLIENTS} processes…`)
  await eachWith('tcp', run, async (tag) => {
    // Node net to one, before and after the broadcasts (A-B-A), as the throughput's
    // baselines: the machine's speed drifts within a round.
    const netBefore = await streamNet(64, 3_000_000, true)
    const [one] = await broadcastTo(1, 4_000_000)
    const rates = await broadcastTo(BROADCAST_CLIENTS, 3_000_000)
    // (A baseline from before drain() has only the row above.)
    const drained = 'drain' in Hub.prototype ? await broadcastTo(BROADCAST_CLIENTS, 3_000_000, true) : undefined
    const net = (netBefore + (await streamNet(64, 3_000_000, true))) / 2
    rows.push({ bench: `TCP broadcast 64 B  Node net to 1 client process (baseline, receiver; before and after the rows below)${tag}`, run, rate: net, mbps: (net * 64) / 1e6 })
    rows.push({ bench: `TCP broadcast 64 B  zerohop tcp:// to 1 client process (what one core receives)${tag}`, run, rate: one, mbps: (one! * 64) / 1e6, vsBaseline: `${(one! / net).toFixed(2)}× net to one` })
    // The slowest client of a broadcast (`how` the clients read), against net to one.
    const slowestRow = (rates: number[], how: string) => {
      const [slowest, fastest] = [rates[0]!, rates[rates.length - 1]!]
      rows.push({
        bench: `TCP broadcast 64 B  zerohop tcp:// to ${BROADCAST_CLIENTS} client processes on one core, ${how}slowest client (fastest ${fmtRate(fastest)})${tag}`,
        run,
        rate: slowest,
        mbps: (slowest * 64) / 1e6,
        vsBaseline: `${(slowest / net).toFixed(2)}× net to one, ${((slowest * BROADCAST_CLIENTS) / one!).toFixed(2)}× one client's core`,
        target: '≥ 1× Node net to one',
      })
    }
    slowestRow(rates, '')
    if (drained) slowestRow(drained, 'each with drain(), ')
  })
}

/** tcp:// with TLS against Node tls: round trips in turns, and one way. */
async function streamTlsRound(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: TCP with TLS…`)
  const tlsClient = { tls: { ca: join(pki(), 'ca.pem'), serverName: 'localhost' } }
  await eachWith('tcp', run, async (tag) => {
    const specs = [`tls:${pki()}`, `tcptls:${pki()}:0`, `tcptls:${pki()}:50`]
    const [tlsSamples, parked, dflt] = await echoesInTurns(specs, async (address, spec) =>
      spec.startsWith('tls:')
        ? framePinger(await tlsOpen(address))
        : hubPinger(await Hub.open(address as `tcp://${string}`, { ...tlsClient, spinUs: Number(spec.slice(spec.lastIndexOf(':') + 1)) })),
    )
    const base = percentiles(tlsSamples!)
    rows.push({ bench: `TCP+TLS RTT 64 B  Node tls (baseline, in turns with the rows below)${tag}`, run, ...base })
    const vs = (r: { p50: number }) => `${(r.p50 / base.p50).toFixed(2)}× tls`
    const d = percentiles(dflt!)
    rows.push({ bench: `TCP+TLS RTT 64 B  zerohop tcp:// with tls, await recv() (spinUs 50, default)${tag}`, run, ...d, vsBaseline: vs(d) })
    const p = percentiles(parked!)
    rows.push({ bench: `TCP+TLS RTT 64 B  zerohop tcp:// with tls, await recv() (spinUs 0)${tag}`, run, ...p, vsBaseline: vs(p) })
  })
  // Long enough that the handshake and the start-up are a small part of the run.
  for (const [size, count] of [
    [64, 3_000_000],
    [4096, 300_000],
  ] as const) {
    const label = size === 64 ? '64 B' : '4 KB'
    const tls = await streamTls(size, count)
    rows.push({ bench: `TCP+TLS one-way ${label}  Node tls (baseline, receiver)`, run, rate: tls, mbps: (tls * size) / 1e6 })
    await eachWith('tcp', run, async (tag) => {
      const p = peer(['stream-sink', 'tcp://127.0.0.1:0', String(count), pki()])
      const { address } = (await p.next()) as { address: string }
      const hub = await Hub.open(address as `tcp://${string}`, { ...tlsClient, role: 'publisher', sendQueueBytes: 16 << 20 })
      const z = await publishToSink(hub, p, size, count)
      rows.push({ bench: `TCP+TLS one-way ${label}  zerohop tcp:// with tls publish (receiver)${tag}`, run, rate: z, mbps: (z * size) / 1e6, vsBaseline: `${(z / tls).toFixed(2)}× tls` })
    })
  }
}

if (process.env.BENCH_INNER === 'kcp-loss') {
  await kcpLossInner(Number(process.env.BENCH_LOSS), Number(process.env.BENCH_RUN), Number(process.env.BENCH_MESSAGES))
  process.stdout.write(JSON.stringify(rows))
  process.exit(0)
}

const streamParts = new Set((process.env.BENCH_STREAM ?? 'rtt,throughput,broadcast,tls').split(','))
const only = process.env.BENCH_ONLY // 'matrix', 'udp', 'shm', 'quic', 'stream' or 'kcp' to run one part
if (only === undefined || only === 'udp' || only === 'stream' || only === 'kcp' || only === 'matrix') ensure.sockperf()
// Every transport against every alternative: the benchmark of `zerohop bench`, the same code.
let matrix: string | undefined
if ((only === undefined || only === 'matrix') && subjects.length === 1) {
  ensure.natsServer()
  const report = await runBench({ rounds: RUNS, onProgress: (done, total, what) => console.error(`zerohop bench ${done}/${total}: ${what}`) })
  matrix = benchTable(report)
  if (process.env.BENCH_HTML) writeFileSync(process.env.BENCH_HTML, benchHtml(report))
} else if (only === undefined || only === 'matrix') {
  // With a baseline: each build's own `zerohop bench`, a round at a time, taking turns
  // (the baseline's runs its own peers); every row goes to the after-against-before table.
  ensure.natsServer()
  const benchOf = async (s: Subject): Promise<typeof runBench> =>
    s.label === 'after' ? runBench : ((await import(s.env.ZEROHOP_PACKAGE!.replace(/index\.js$/, 'bench/index.js'))) as { runBench: typeof runBench }).runBench
  const tables: string[] = []
  for (let run = 1; run <= RUNS; run++) {
    for (const s of inRoundOrder(run)) {
      const tag = ` [${s.label}]`
      const report = await (await benchOf(s))({ rounds: 1, onProgress: (done, total, what) => console.error(`zerohop bench${tag} ${done}/${total}: ${what} (round ${run} of ${RUNS})`) })
      tables.push(`round ${run}${tag}\n${benchTable(report)}`)
      for (const r of report.rows) {
        const bench = `matrix ${r.workload} ${r.transport} ${r.peer}`
        const latency = r.workload === 'rtt'
        rows.push({ bench: `${bench}${r.kind === 'zerohop' ? tag : ` (alternative, with the ${s.label} build)`}`, run, ...(latency ? { p50: r.p50Us, p99: r.p99Us, p999: r.p999Us } : {}), rate: r.msgsPerSec, mbps: r.mbPerSec, vsBaseline: r.vsBest === null ? undefined : `${r.vsBest.toFixed(2)}× best alternative`, target: r.lost > 0 ? `lost ${r.lost}` : undefined })
      }
    }
  }
  matrix = tables.join('\n')
}
const kcpParts = new Set((process.env.BENCH_KCP ?? 'rtt,throughput,loss').split(','))
const shmParts = new Set((process.env.BENCH_SHM ?? 'cost,rtt,throughput').split(','))
for (let run = 1; run <= RUNS; run++) {
  if (only === undefined || only === 'quic') await quicRound(run)
  if (only === undefined || only === 'udp') await udpRound(run)
  if (only === undefined || only === 'stream') {
    if (streamParts.has('rtt')) await streamRtt(run)
    if (streamParts.has('throughput')) await streamThroughput(run)
    if (streamParts.has('broadcast')) await streamBroadcast(run)
    if (streamParts.has('tls')) await streamTlsRound(run)
  }
  if (only === undefined || only === 'kcp') {
    if (kcpParts.has('rtt')) await kcpRtt(run)
    if (kcpParts.has('throughput')) await kcpThroughput(run)
    if (kcpParts.has('loss')) await kcpLoss(run)
  }
  if (only === undefined || only === 'qos') await qosRound(run)
  if (only !== undefined && only !== 'shm') continue
  console.error(`round ${run}/${RUNS}: send cost (tinybench)…`)
  if (shmParts.has('cost')) await publishCost(run)
  if (shmParts.has('rtt')) await shmRtt(run)
  if (shmParts.has('throughput')) await shmThroughput(run)
}

/** Shared memory's round trips, against Node's Unix socket and MessagePort. */
async function shmRtt(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: RTT…`)
  const uds = percentiles(await rttUds())
  rows.push({ bench: 'RTT 64 B  Node net over UDS (baseline)', run, ...uds })
  const port = percentiles(await rttMessagePort())
  rows.push({ bench: 'RTT 64 B  Node worker_threads MessagePort, in-process (baseline)', run, ...port })
  await each(run, async (tag) => {
    const spin = percentiles(await rttZerohop('spin'))
    rows.push({ bench: `RTT 64 B  zerohop shm, tryRecv spinning${tag}`, run, ...spin, vsBaseline: `${(spin.p50 / uds.p50).toFixed(3)}× p50`, target: '≤ 0.1× p50' })
    const park = percentiles(await rttZerohop(0))
    const vs = `${(park.p50 / uds.p50).toFixed(2)}× UDS p50, ${(park.p50 / port.p50).toFixed(2)}× MessagePort`
    rows.push({ bench: `RTT 64 B  zerohop shm, await recv(), parks (spinUs 0)${tag}`, run, ...park, vsBaseline: vs })
    // The target's comparison: the same three in turns.
    const [udsTurns, portTurns, shmTurns] = await parkedInTurns()
    const [tu, tp, ts] = [percentiles(udsTurns), percentiles(portTurns), percentiles(shmTurns)]
    const turnsOf = `in turns of ${TURN} (shm, UDS, MessagePort)`
    rows.push({ bench: `RTT 64 B  Node net over UDS, ${turnsOf}${tag}`, run, ...tu })
    rows.push({ bench: `RTT 64 B  Node worker_threads MessagePort, ${turnsOf}${tag}`, run, ...tp })
    const tvs = `${(ts.p50 / tu.p50).toFixed(2)}× UDS p50, ${(ts.p50 / tp.p50).toFixed(2)}× MessagePort`
    rows.push({ bench: `RTT 64 B  zerohop shm, await recv(), parks (spinUs 0), ${turnsOf}${tag}`, run, ...ts, vsBaseline: tvs, target: '≤ 1× both' })
    const dflt = percentiles(await rttZerohop(20))
    rows.push({ bench: `RTT 64 B  zerohop shm, await recv(), spinUs 20 (default)${tag}`, run, ...dflt, vsBaseline: `${(dflt.p50 / uds.p50).toFixed(2)}× p50` })
  })
  // Rpc over shared memory (this checkout only), between two spinning ping-pongs it is
  // compared with.
  const pp1 = percentiles(await rttZerohop('spin'))
  const rpcSpin = percentiles(await rttRpcShm(1_000_000))
  const pp2 = percentiles(await rttZerohop('spin'))
  const pp = (pp1.p50 + pp2.p50) / 2
  rows.push({ bench: 'RTT 64 B  zerohop shm ping-pong, tryRecv spinning (before and after the Rpc row, p50 mean)', run, p50: pp, p99: Math.max(pp1.p99, pp2.p99), p999: Math.max(pp1.p999, pp2.p999) })
  rows.push({ bench: 'RTT 64 B  zerohop Rpc over shm://, request → reply, spinning', run, ...rpcSpin, vsBaseline: `${(rpcSpin.p50 / pp).toFixed(2)}× ping-pong p50, ${(rpcSpin.p50 / uds.p50).toFixed(3)}× UDS` })
  // The same two in turns of TURN round trips, alternating: the target's comparison.
  const turns = await rttPingPongAndRpc()
  const turnPp = percentiles(turns.pingPong)
  const turnRpc = percentiles(turns.rpc)
  rows.push({ bench: `RTT 64 B  zerohop shm ping-pong, tryRecv spinning, in turns of ${TURN} with the Rpc row below`, run, ...turnPp })
  rows.push({ bench: `RTT 64 B  zerohop Rpc over shm://, request → reply, both sides polling (spinUs 50, never reached within a turn), in turns with the ping-pong above`, run, ...turnRpc, vsBaseline: `${(turnRpc.p50 / turnPp.p50).toFixed(2)}× ping-pong p50`, target: '≤ 2× ping-pong' })
  const rpcDefault = percentiles(await rttRpcShm(20))
  rows.push({ bench: 'RTT 64 B  zerohop Rpc over shm://, request → reply, spinUs 20 (default)', run, ...rpcDefault, vsBaseline: `${(rpcDefault.p50 / uds.p50).toFixed(2)}× UDS p50` })
  // Where shared memory cannot be used (this checkout only: a baseline may not fall back).
  const fallback = percentiles(await withoutShm(() => rttZerohop('spin')))
  rows.push({ bench: 'RTT 64 B  zerohop shm:// fallback over UDS (through a relay), tryRecv spinning', run, ...fallback, vsBaseline: `${(fallback.p50 / uds.p50).toFixed(2)}× p50` })
}

/** Shared memory's streams, against Node's Unix socket. */
async function shmThroughput(run: number): Promise<void> {
  console.error(`round ${run}/${RUNS}: throughput…`)
  const udsRate = await streamNet(64, 1_000_000)
  rows.push({ bench: 'one-way 64 B  Node net over UDS (baseline, receiver)', run, rate: udsRate, mbps: (udsRate * 64) / 1e6 })
  await each(run, async (tag) => {
    const one = await streamZerohop(64, 'publish', 'copy', 4_000_000)
    rows.push({ bench: `one-way 64 B  zerohop publish → tryRecv (receiver)${tag}`, run, rate: one.received, mbps: (one.received * 64) / 1e6, vsBaseline: `${(one.received / udsRate).toFixed(1)}×` })
    const bat = await streamZerohop(64, 'publishBatch', 'copy', 4_000_000)
    rows.push({ bench: `one-way 64 B  zerohop publishBatch → tryRecv (receiver)${tag}`, run, rate: bat.received, mbps: (bat.received * 64) / 1e6, vsBaseline: `${(bat.received / udsRate).toFixed(1)}×` })
    const pk = await streamZerohop(64, 'publishPacked', 'copy', 4_000_000)
    rows.push({ bench: `one-way 64 B  zerohop publishPacked → tryRecv (receiver)${tag}`, run, rate: pk.received, mbps: (pk.received * 64) / 1e6, vsBaseline: `${(pk.received / udsRate).toFixed(1)}×` })
    // Batch receive against the tryRecv loop just above, from the same fast publisher.
    for (const [mode, call] of [
      ['batch', 'tryRecvBatch()'],
      ['drain', 'drain(fn)'],
    ] as const) {
      const r = await streamZerohop(64, 'publishPacked', mode, 4_000_000)
      const vs = `${(r.received / udsRate).toFixed(1)}×, ${(r.received / pk.received).toFixed(2)}× the tryRecv loop`
      rows.push({ bench: `one-way 64 B  zerohop publishPacked → ${call} (receiver)${tag}`, run, rate: r.received, mbps: (r.received * 64) / 1e6, vsBaseline: vs })
    }
  })
  // The tryRecv loop and batch receive in turns on one stream (this checkout only): the
  // targets' comparison.
  const [loopRate = 0, batchRate = 0, drainRate = 0] = await streamInTurns(['copy', 'batch', 'drain'], 6_000_000)
  const turnsOf = `in turns of ${STREAM_TURN.toLocaleString('en')} messages on one stream (receiver)`
  rows.push({ bench: `one-way 64 B  zerohop publishPacked → tryRecv loop, ${turnsOf}`, run, rate: loopRate, mbps: (loopRate * 64) / 1e6, vsBaseline: `${(loopRate / udsRate).toFixed(1)}×` })
  for (const [rate, call] of [
    [batchRate, 'tryRecvBatch()'],
    [drainRate, 'drain(fn)'],
  ] as const) {
    rows.push({ bench: `one-way 64 B  zerohop publishPacked → ${call}, ${turnsOf}`, run, rate, mbps: (rate * 64) / 1e6, vsBaseline: `${(rate / udsRate).toFixed(1)}×, ${(rate / loopRate).toFixed(2)}× the tryRecv loop`, target: '≥ 3× the tryRecv loop' })
  }
  const fallbackOne = await withoutShm(() => streamZerohop(64, 'publish', 'copy', 1_000_000))
  rows.push({ bench: 'one-way 64 B  zerohop shm:// fallback over UDS (through a relay, receiver)', run, rate: fallbackOne.received, mbps: (fallbackOne.received * 64) / 1e6, vsBaseline: `${(fallbackOne.received / udsRate).toFixed(2)}×` })
  const uds4k = await streamNet(4096, 200_000)
  rows.push({ bench: 'one-way 4 KB  Node net over UDS (baseline, receiver)', run, rate: uds4k, mbps: (uds4k * 4096) / 1e6 })
  await each(run, async (tag) => {
    const copy4k = await streamZerohop(4096, 'publish', 'copy', 400_000)
    rows.push({ bench: `one-way 4 KB  zerohop publish → tryRecv (copies)${tag}`, run, rate: copy4k.received, mbps: (copy4k.received * 4096) / 1e6, vsBaseline: `${(copy4k.received / uds4k).toFixed(1)}×` })
    const zc4k = await streamZerohop(4096, 'loan', 'borrow', 400_000)
    rows.push({ bench: `one-way 4 KB  zerohop loan → borrow (zero-copy)${tag}`, run, rate: zc4k.received, mbps: (zc4k.received * 4096) / 1e6, vsBaseline: `${(zc4k.received / uds4k).toFixed(1)}×` })
  })
  // Large messages: 64 KB through the payload pool (64-byte slots), against net.
  const uds64k = await streamNet(65536, 40_000)
  rows.push({ bench: 'one-way 64 KB  Node net over UDS (baseline, receiver)', run, rate: uds64k, mbps: (uds64k * 65536) / 1e6 })
  await each(run, async (tag) => {
    const copy = await streamZerohop(65536, 'publish', 'copy', 40_000, 'pool')
    rows.push({ bench: `one-way 64 KB  zerohop publish → tryRecv through the payload pool (copies)${tag}`, run, rate: copy.received, mbps: (copy.received * 65536) / 1e6, vsBaseline: `${(copy.received / uds64k).toFixed(1)}×` })
    const zc = await streamZerohop(65536, 'loan', 'borrow', 100_000, 'pool')
    rows.push({ bench: `one-way 64 KB  zerohop loan(size) → borrow through the payload pool (zero-copy)${tag}`, run, rate: zc.received, mbps: (zc.received * 65536) / 1e6, vsBaseline: `${(zc.received / uds64k).toFixed(1)}×` })
  })
  // Larger than the pool (here none): 4 MiB on the side path, against net.
  const MIB4 = 4 << 20
  const uds4m = await streamNet(MIB4, 1000)
  rows.push({ bench: 'one-way 4 MiB  Node net over UDS (baseline, receiver)', run, rate: uds4m, mbps: (uds4m * MIB4) / 1e6 })
  await each(run, async (tag) => {
    const copy = await streamZerohop(MIB4, 'publish', 'copy', 1000, 'side')
    rows.push({ bench: `one-way 4 MiB  zerohop publish → tryRecv on the side path (no pool)${tag}`, run, rate: copy.received, mbps: (copy.received * MIB4) / 1e6, vsBaseline: `${(copy.received / uds4m).toFixed(2)}×` })
    const zc = await streamZerohop(MIB4, 'publish', 'borrow', 1000, 'side')
    rows.push({ bench: `one-way 4 MiB  zerohop publish → borrow on the side path (no pool)${tag}`, run, rate: zc.received, mbps: (zc.received * MIB4) / 1e6, vsBaseline: `${(zc.received / uds4m).toFixed(2)}×` })
  })
}

// TypeScript against iceoryx2's Rust: the medians over the rounds (they ran minutes apart).
const tsSpin = rows
  .filter((r) => r.bench.startsWith('RTT 64 B  zerohop shm, tryRecv spinning') && !r.bench.includes('[before]') && r.p50 !== undefined)
  .map((r) => r.p50!)
const iceSpin = rows.filter((r) => r.bench === ICEORYX2_RTT && r.p50 !== undefined).map((r) => r.p50!)
if (tsSpin.length > 0 && iceSpin.length > 0) {
  const ts = median(tsSpin)
  rows.push({ bench: 'RTT 64 B  zerohop shm from TypeScript, tryRecv spinning (median p50 of the rounds) against iceoryx2 from Rust', run: 'all', p50: ts, vsBaseline: `${(ts / median(iceSpin)).toFixed(2)}× iceoryx2 p50`, target: '≤ 2× iceoryx2' })
}

// ---- the table ---------------------------------------------------------------------------

const fmtUs = (v?: number) => (v === undefined ? '' : v.toFixed(2))
const fmtMb = (v?: number) => (v === undefined ? '' : v.toFixed(0))
const header = ['benchmark', 'run', 'p50 µs', 'p99 µs', 'p99.9 µs', 'msg/s', 'MB/s', 'vs baseline', 'target']
const table = rows.map((r) => [r.bench, String(r.run), fmtUs(r.p50), fmtUs(r.p99), fmtUs(r.p999), fmtRate(r.rate), fmtMb(r.mbps), r.vsBaseline ?? '', r.target ?? ''])
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)))
const line = (cells: string[]) => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |'
console.log(`\nzerohop benchmark — node ${process.version}, ${RUNS} interleaved runs, this process on CPU 0, peers on CPU 1\n`)
console.log(line(header))
console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|')
for (const row of table) console.log(line(row))
if (matrix !== undefined) console.log(`\nzerohop bench: every transport against the alternatives on this machine\n\n${matrix}`)

// ---- after against before ----------------------------------------------------------

if (subjects.length > 1) {
  const names = [...new Set(rows.filter((r) => r.bench.endsWith(' [after]')).map((r) => r.bench.slice(0, -' [after]'.length)))]
  const out: string[][] = []
  for (const name of names) {
    const of = (label: string) => rows.filter((r) => r.bench === `${name} [${label}]`)
    const [before, after] = [of('before'), of('after')]
    const latency = after[0]?.p50 !== undefined
    const value = (r: Row) => (latency ? r.p50! : r.rate!)
    if (!before.length || !after.length) continue
    const [b, a] = [median(before.map(value)), median(after.map(value))]
    // How much better after is: > 1 faster (lower latency, higher rate).
    const better = latency ? b / a : a / b
    const fmt = (v: number) => (latency ? `${v.toFixed(2)} µs` : `${fmtRate(v)}/s`)
    out.push([name, fmt(b), fmt(a), `${better.toFixed(2)}×`, better >= 0.9 ? 'ok' : 'BELOW 0.9×'])
  }
  const head = ['benchmark (median over runs; p50 for latency)', 'before', 'after', 'after vs before (> 1: better)', '≥ 0.9×']
  const w = head.map((h, i) => Math.max(h.length, ...out.map((r) => r[i]!.length)))
  const l = (cells: string[]) => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join(' | ') + ' |'
  console.log(`\nafter (this checkout) against before (${process.env.BENCH_BASELINE}), interleaved in this run\n`)
  console.log(l(head))
  console.log('|' + w.map((x) => '-'.repeat(x + 2)).join('|') + '|')
  for (const r of out) console.log(l(r))
}
