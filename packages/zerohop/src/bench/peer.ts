/**
 * The peer process of `zerohop bench` (one a run, pinned to the CPU the benchmark leaves
 * free): serves one contender's workload and talks to the benchmark in JSON lines, on
 * stdout, and on stdin:
 *
 *   → { "ready": {…} }                 listening: how to reach it
 *   ← { "greeting": {…} }              the benchmark's side connected (udp:// needs its address)
 *   → { "greeted": true }
 *   ← "end"                            everything is sent
 *   → { "received", "bytes", "lastMs", "latency" }   (a stream's sink: what arrived; then it exits)
 *
 * Usage: node peer.js <contender id> <workload id> <messages the stream sends> <ms a stream may be idle>
 */
import { createInterface } from 'node:readline'
import { CONTENDERS, WORKLOADS, type Contender, type Workload } from './contenders.js'
import { Histogram } from './histogram.js'

const [id, workloadId, expectedArg, idleArg] = process.argv.slice(2)
const serve = CONTENDERS.find((c) => c.id === id)?.serve
const workload = WORKLOADS.find((w) => w.id === workloadId)
if (serve === undefined || workload === undefined) throw new Error(`peer: no contender '${id}' with workload '${workloadId}'`)
const expected = Number(expectedArg)
/** How long a stream waits for more before what did not come counts as lost. */
const idleMs = Number(idleArg ?? 300)

const say = (line: object): void => void process.stdout.write(`${JSON.stringify(line)}\n`)
const nowMs = (): number => performance.timeOrigin + performance.now()

// The stream's sink. A message whose first byte is 1 carries, after it, when it was sent
// (CLOCK_MONOTONIC ns, the same clock in every process of the host): its one-way latency.
const latency = new Histogram()
let received = 0
let bytes = 0
let lastMs = 0
let all: (() => void) | undefined
const sink = (m: Uint8Array): void => {
  lastMs = nowMs()
  received++
  bytes += m.byteLength
  if (m[0] === 1) latency.record(Number(process.hrtime.bigint()) - new DataView(m.buffer, m.byteOffset, 16).getFloat64(8, true))
  if (received === expected) all?.()
}

async function main(serve: NonNullable<Contender['serve']>, workload: Workload): Promise<void> {
  const serving = await serve(workload, sink)
  say({ ready: serving.ready })

  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'end') break
    const { greeting } = JSON.parse(line) as { greeting?: Record<string, string> }
    if (greeting !== undefined) serving.greeted?.(greeting)
    say({ greeted: true })
  }
  if (workload.kind === 'oneway') {
    // Everything, or nothing more for `idleMs` (what a datagram transport lost stays lost).
    await new Promise<void>((resolve) => {
      let seen = -1
      const idle = setInterval(() => {
        if (received === seen) done()
        seen = received
      }, idleMs)
      const done = (): void => {
        clearInterval(idle)
        resolve()
      }
      all = done
      if (received >= expected) done()
    })
    say({ received, bytes, lastMs, latency: latency.toJSON() })
  }
  await serving.close()
  process.exit(0)
}

void main(serve, workload)
