/**
 * What `zerohop bench` measures: each zerohop transport, and each alternative a Node
 * program could use instead (Node `net` over a Unix socket and TCP, `dgram`, `zeromq`,
 * `nats` with a nats-server), plus sockperf, the kernel's floor in C. A contender has two
 * sides: `serve` runs in the peer process (an echo for round trips, a sink for streams)
 * and `connect` in the benchmark's own; both sides of every contender are here, so that
 * one file says how each is driven.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net'
import { cpus, tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { Bridge, Hub } from '../index.js'

/** Round trips (`rtt`: a message and its echo, one at a time) or a one-way stream. */
export type WorkloadKind = 'rtt' | 'oneway'

export interface Workload {
  /** Its name in `--workload` and in `--json` rows. */
  id: string
  kind: WorkloadKind
  /** Bytes of each message. */
  size: number
  /** How the tables name it. */
  label: string
}

export const WORKLOADS: readonly Workload[] = [
  { id: 'rtt', kind: 'rtt', size: 64, label: 'round trip, 64 B' },
  { id: 'oneway', kind: 'oneway', size: 64, label: 'one-way stream, 64 B' },
  { id: 'oneway-4k', kind: 'oneway', size: 4096, label: 'one-way stream, 4 KiB' },
]

/** What a peer tells the benchmark once it serves: how to reach it. */
export type Ready = Record<string, string | number>

/** The peer's side of one run. */
export interface Serving {
  ready: Ready
  /** What the benchmark's side said back once it connected (udp:// peers need its address). */
  greeted?(greeting: Ready): void
  close(): Promise<void>
}

/** The benchmark's side of one run. */
export interface Client {
  /** What the peer needs to know of this side (see `Serving.greeted`). */
  greeting?: Ready
  /** Sends `message` and resolves when it is back; false when it did not come back (lost). */
  roundTrip(message: Uint8Array): Promise<boolean>
  /** Sends `message`; a promise only when the sender must wait for room. */
  send(message: Uint8Array): Promise<void> | void
  /** Once the last message is sent: pushes out what is buffered. */
  flush?(): Promise<void>
  close(): Promise<void>
}

/** A program outside Node that measures itself (sockperf). */
export interface External {
  /** Round trips of `size` bytes for `seconds`: percentiles (q → µs) and round trips a second. */
  rtt(size: number, seconds: number, cpus: [number, number] | undefined): Promise<{ percentiles: [number, number][]; msgsPerSec: number } | undefined>
}

export interface Contender {
  /** Its name on the command line (`zerohop bench shm net-uds`). */
  id: string
  /** The medium: shm, udp, kcp, quic, tcp, uds, nats (through a NATS server). */
  transport: string
  /** Who talks over it: `zerohop` or the alternative (`net`, `dgram`, `zeromq`, `nats`, `sockperf`). */
  peer: string
  /** zerohop; an alternative a Node program has; or a floor (not Node: what the kernel allows). */
  kind: 'zerohop' | 'alternative' | 'floor'
  workloads: readonly WorkloadKind[]
  /** Why it cannot run on this machine, or undefined when it can. */
  missing(): Promise<string | undefined>
  /** In the peer process: an echo (`rtt`) or a sink that hands each message to `sink`. */
  serve?(workload: Workload, sink: (message: Uint8Array) => void): Promise<Serving>
  /** Here: connects to a peer that is ready. */
  connect?(ready: Ready, workload: Workload): Promise<Client>
  external?: External
}

const unique = (what: string): string => `zerohop-bench-${what}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`

/** Waits (up to 10 s) until `hub` is connected. */
async function connected(hub: Hub<Uint8Array>): Promise<void> {
  for (let i = 0; hub.status !== 'connected'; i++) {
    if (i > 1000) throw new Error(`${hub.url}: not connected within 10 s`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

// ---- zerohop ------------------------------------------------------------------------

/** How each zerohop transport's two sides open: the peer's URL and options, then this side's. */
const zerohopUrls: Record<
  string,
  {
    serve(w: Workload, server?: number): [string, object]
    dial(ready: Ready, w: Workload): [string, object]
    greets?: true
    /** A server the peer starts first (a NATS server): its port. */
    server?(): Promise<{ port: number; close(): Promise<void> }>
    missing?(): Promise<string | undefined>
  }
> = {
  shm: {
    // Streams do not lose messages: the publisher waits for room (`block`), in slots the size of a message.
    serve: (w) => [`shm://${unique('shm')}`, w.kind === 'rtt' ? {} : { role: 'subscriber', slotSize: Math.max(64, w.size) }],
    dial: (r, w) => [String(r.url), w.kind === 'rtt' ? {} : { role: 'publisher', backpressure: 'block' }],
  },
  udp: {
    serve: () => ['udp://127.0.0.1:0', {}],
    dial: (r) => ['udp://127.0.0.1:0', { peers: [String(r.address)] }],
    // (Datagrams go to the peers a hub is given: the peer's is this side's address.)
    greets: true,
  },
  kcp: { serve: () => ['kcp://127.0.0.1:0', { listen: true }], dial: (r) => [`kcp://${r.address}`, {}] },
  quic: {
    serve: () => ['quic://127.0.0.1:0', { listen: true }],
    dial: (r) => [`quic://${r.address}`, { tls: { dangerouslyAcceptAnyServer: true } }],
  },
  tcp: { serve: () => ['tcp://127.0.0.1:0', { listen: true }], dial: (r) => [`tcp://${r.address}`, {}] },
  uds: { serve: () => [`uds://@${unique('uds')}`, { listen: true }], dial: (r) => [String(r.url), {}] },
  // Both sides on one subject: a hub never receives its own messages.
  nats: { server: natsServer, missing: noNatsServer, serve: (_w, port) => [`nats://127.0.0.1:${port}/bench`, {}], dial: (r) => [String(r.url), {}] },
}

/**
 * The peer's side over `hub`: an echo (`rtt`: each message published back) or a sink
 * (a stream's drains what is there at once), until `stop` (which closes the hub).
 */
function pumpHub(hub: Hub<Uint8Array>, kind: WorkloadKind, sink: (message: Uint8Array) => void): { stop(): Promise<void> } {
  let closed = false
  const echo = (m: Uint8Array): void => {
    if (!hub.publish(m)) void hub.send(m.slice())
  }
  const take = kind === 'rtt' ? echo : sink
  const pump = (async () => {
    while (!closed) {
      if (kind === 'oneway' && hub.drain(sink) > 0) continue
      let m: Uint8Array
      try {
        m = await hub.recv()
      } catch (e) {
        if (closed) return
        throw e
      }
      take(m)
    }
  })()
  return {
    async stop() {
      closed = true
      await hub.close({ lingerMs: 0 })
      await pump.catch(() => undefined)
    },
  }
}

/** The benchmark's side over `hub`: a round trip is a publish and the next message back. */
function hubClient(hub: Hub<Uint8Array>, close: () => Promise<void>, greeting?: Ready): Client {
  return {
    greeting,
    async roundTrip(m) {
      if (!hub.publish(m)) await hub.send(m)
      try {
        await hub.recv({ timeoutMs: 1000 })
        return true
      } catch (e) {
        if ((e as { code?: string }).code === 'ERR_TIMEOUT') return false
        throw e
      }
    },
    send: (m) => (hub.publish(m) ? undefined : hub.send(m)),
    close,
  }
}

function zerohop(transport: string): Contender {
  const urls = zerohopUrls[transport]!
  return {
    id: transport,
    transport,
    peer: 'zerohop',
    kind: 'zerohop',
    workloads: ['rtt', 'oneway'],
    missing: async () => urls.missing?.(),
    async serve(workload, sink) {
      const server = await urls.server?.()
      const [url, options] = urls.serve(workload, server?.port)
      const hub = await withServer(server, () => Hub.open(url, options))
      const pump = pumpHub(hub, workload.kind, sink)
      return {
        ready: { url, address: hub.localAddress ?? '' },
        greeted: (g) => hub.setPeers([String(g.address)]),
        async close() {
          await pump.stop()
          await server?.close()
        },
      }
    },
    async connect(ready, workload) {
      const [url, options] = urls.dial(ready, workload)
      const hub = await Hub.open(url, options)
      await connected(hub)
      // (What a stream published is delivered before its hub closes: the peer counts it all.)
      return hubClient(hub, () => hub.close({ lingerMs: 10_000 }), urls.greets ? { address: hub.localAddress! } : undefined)
    },
  }
}

// ---- Node net: length-prefixed frames over a Unix socket or TCP ---------------------

/** A function that takes a stream's chunks and calls `onFrame` with each whole frame (a 4-byte length, then the bytes). */
function framer(onFrame: (frame: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer | undefined
  return (chunk) => {
    const buf = pending === undefined ? chunk : Buffer.concat([pending, chunk])
    let at = 0
    while (buf.length - at >= 4) {
      const len = buf.readUInt32LE(at)
      if (buf.length - at - 4 < len) break
      onFrame(buf.subarray(at + 4, at + 4 + len))
      at += 4 + len
    }
    pending = at === buf.length ? undefined : buf.subarray(at)
  }
}

/** `message` as a frame; the same frame again for the same message object (the benchmark resends one constant buffer). */
function framing(): (message: Uint8Array) => Buffer {
  let last: Uint8Array | undefined
  let frame = Buffer.alloc(0)
  return (m) => {
    if (m !== last) {
      frame = Buffer.allocUnsafe(4 + m.byteLength)
      frame.writeUInt32LE(m.byteLength, 0)
      frame.set(m, 4)
      last = m
    }
    return frame
  }
}

function nodeNet(transport: 'uds' | 'tcp'): Contender {
  return {
    id: `net-${transport}`,
    transport,
    peer: 'net',
    kind: 'alternative',
    workloads: ['rtt', 'oneway'],
    missing: async () => undefined,
    async serve({ kind }, sink) {
      const sockets = new Set<Socket>()
      const server: Server = createServer((sock) => {
        sock.setNoDelay(true)
        sockets.add(sock)
        const frame = framing()
        sock.on('data', framer(kind === 'rtt' ? (m) => void sock.write(frame(Buffer.from(m))) : sink))
        sock.on('error', () => undefined)
      })
      const path = join(tmpdir(), `${unique('net')}.sock`)
      await new Promise<void>((r) => (transport === 'uds' ? server.listen(path, r) : server.listen(0, '127.0.0.1', r)))
      const address = server.address()
      return {
        ready: { address: typeof address === 'string' ? address : `127.0.0.1:${address!.port}` },
        async close() {
          for (const s of sockets) s.destroy()
          await new Promise((r) => server.close(r))
        },
      }
    },
    async connect(ready) {
      const address = String(ready.address)
      const sock = transport === 'uds' ? netConnect(address) : netConnect(Number(address.split(':')[1]), '127.0.0.1')
      sock.setNoDelay(true)
      await once(sock, 'connect')
      // (A peer that dies resets the connection: the runner hears of it from the peer's exit.)
      sock.on('error', () => undefined)
      let echoed: (() => void) | undefined
      sock.on('data', framer(() => echoed?.()))
      const frame = framing()
      return {
        roundTrip: (m) =>
          new Promise<boolean>((r) => {
            echoed = () => r(true)
            sock.write(frame(m))
          }),
        send: (m) => (sock.write(frame(m)) ? undefined : once(sock, 'drain').then(() => undefined)),
        async close() {
          if (sock.closed) return
          sock.end()
          await once(sock, 'close')
        },
      }
    },
  }
}

// ---- Node dgram --------------------------------------------------------------------

const dgram: Contender = {
  id: 'dgram',
  transport: 'udp',
  peer: 'dgram',
  kind: 'alternative',
  workloads: ['rtt', 'oneway'],
  missing: async () => undefined,
  async serve({ kind }, sink) {
    const sock = createSocket('udp4')
    sock.on('message', kind === 'rtt' ? (m, from) => sock.send(m, from.port, from.address) : sink)
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
    return { ready: { port: sock.address().port }, close: () => new Promise((r) => sock.close(() => r())) }
  },
  async connect(ready) {
    const port = Number(ready.port)
    const sock = createSocket('udp4')
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
    let echoed: ((back: boolean) => void) | undefined
    let since = 0
    sock.on('message', () => echoed?.(true))
    // A datagram or its echo lost: the round trip ends after a second (one timer for all).
    const watchdog = setInterval(() => performance.now() - since > 1000 && echoed?.(false), 250)
    let sent = 0
    return {
      roundTrip: (m) =>
        new Promise<boolean>((r) => {
          echoed = r
          since = performance.now()
          sock.send(m, port, '127.0.0.1')
        }),
      // Every 256th send waits for the socket to take it: Node's send queue stays short.
      send: (m) => (++sent % 256 === 0 ? new Promise<void>((r) => sock.send(m, port, '127.0.0.1', () => r())) : sock.send(m, port, '127.0.0.1')),
      async close() {
        clearInterval(watchdog)
        await new Promise<void>((r) => sock.close(() => r()))
      },
    }
  },
}

// ---- zeromq, when the project has it ------------------------------------------------

interface ZmqSocket {
  bind(address: string): Promise<void>
  connect(address: string): void
  send(message: Uint8Array): Promise<void>
  receive(): Promise<Buffer[]>
  close(): void
  readonly lastEndpoint: string | null
  [Symbol.asyncIterator](): AsyncIterator<Buffer[]>
}
type ZmqModule = Record<'Request' | 'Reply' | 'Push' | 'Pull', new () => ZmqSocket>

/** A package the user's project has (not a dependency of zerohop's), or undefined. */
async function optional<M>(name: string): Promise<M | undefined> {
  try {
    return (await import(name)) as M
  } catch {
    return undefined
  }
}

const zeromq: Contender = {
  id: 'zeromq',
  transport: 'tcp',
  peer: 'zeromq',
  kind: 'alternative',
  workloads: ['rtt', 'oneway'],
  missing: async () => ((await optional('zeromq')) === undefined ? 'the zeromq package is not installed (npm install zeromq)' : undefined),
  async serve({ kind }, sink) {
    const zmq = (await optional<ZmqModule>('zeromq'))!
    const sock = kind === 'rtt' ? new zmq.Reply() : new zmq.Pull()
    await sock.bind('tcp://127.0.0.1:*')
    const pump = (async () => {
      for await (const [m] of sock) {
        if (kind === 'rtt') await sock.send(m!)
        else sink(m!)
      }
    })().catch(() => undefined)
    return {
      ready: { address: sock.lastEndpoint! },
      async close() {
        sock.close()
        await pump
      },
    }
  },
  async connect(ready, { kind }) {
    const zmq = (await optional<ZmqModule>('zeromq'))!
    const sock = kind === 'rtt' ? new zmq.Request() : new zmq.Push()
    sock.connect(String(ready.address))
    return {
      async roundTrip(m) {
        await sock.send(m)
        await sock.receive()
        return true
      },
      send: (m) => sock.send(m),
      close: async () => sock.close(),
    }
  },
}

// ---- nats, with a nats-server the peer starts --------------------------------------

interface NatsConnection {
  publish(subject: string, data: Uint8Array): void
  subscribe(subject: string, options: { callback(err: unknown, msg: { data: Uint8Array }): void }): unknown
  flush(): Promise<void>
  close(): Promise<void>
}
type NatsModule = { connect(options: { servers: string; maxReconnectAttempts?: number }): Promise<NatsConnection> }

/** An executable on PATH (or in the sbin directories, where Debian puts nats-server). */
function executable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin']
  return dirs.map((d) => join(d, name)).find((p) => p.startsWith('/') && existsSync(p))
}

/** Why nats-server cannot run here, or undefined. */
async function noNatsServer(): Promise<string | undefined> {
  return executable('nats-server') === undefined ? 'no nats-server (apt-get install nats-server)' : undefined
}

/** A nats-server on a free loopback port, listening once this resolves. */
async function natsServer(): Promise<{ port: number; close(): Promise<void> }> {
  // A free port for the server: bound and let go.
  const probe = createServer()
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
  const port = (probe.address() as { port: number }).port
  await new Promise((r) => probe.close(r))
  // The server is neither side's: free to run on any CPU (the peer that starts it is
  // pinned; `availableParallelism()` would count only the peer's CPU).
  const args = [executable('nats-server')!, '-a', '127.0.0.1', '-p', String(port)]
  const anyCpu = executable('taskset') === undefined ? [] : ['taskset', '-c', `0-${cpus().length - 1}`]
  const server: ChildProcess = spawn([...anyCpu, ...args][0]!, [...anyCpu, ...args].slice(1), { stdio: 'ignore' })
  const close = async (): Promise<void> => {
    if (server.exitCode !== null || server.signalCode !== null) return
    server.kill()
    await once(server, 'exit')
  }
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((r) => {
      const sock: Socket = netConnect(port, '127.0.0.1', () => (sock.destroy(), r(true)))
      sock.on('error', () => r(false))
    })
    if (up) break
    if (i > 200) {
      await close()
      throw new Error(`nats-server did not listen on ${port}`)
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  return { port, close }
}

/** What `open` makes with a server started for it; the server stopped if that fails. */
async function withServer<T>(server: { close(): Promise<void> } | undefined, open: () => Promise<T>): Promise<T> {
  try {
    return await open()
  } catch (e) {
    await server?.close()
    throw e
  }
}

const nats: Contender = {
  // (`nats` is zerohop's nats:// hub; this is nats.js, on the same kind of server.)
  id: 'nats-js',
  transport: 'nats',
  peer: 'nats',
  kind: 'alternative',
  workloads: ['rtt', 'oneway'],
  async missing() {
    if ((await optional('nats')) === undefined) return 'the nats package is not installed (npm install nats)'
    return noNatsServer()
  },
  async serve({ kind }, sink) {
    const { connect } = (await optional<NatsModule>('nats'))!
    const server = await natsServer()
    const conn = await withServer(server, () => connect({ servers: `127.0.0.1:${server.port}` }))
    conn.subscribe('bench.in', { callback: (_, m) => (kind === 'rtt' ? conn.publish('bench.out', m.data) : sink(m.data)) })
    await conn.flush()
    return {
      ready: { port: server.port },
      async close() {
        await conn.close()
        await server.close()
      },
    }
  },
  async connect(ready) {
    const { connect } = (await optional<NatsModule>('nats'))!
    const nc = await connect({ servers: `127.0.0.1:${ready.port}` })
    let echoed: (() => void) | undefined
    nc.subscribe('bench.out', { callback: () => echoed?.() })
    await nc.flush()
    let sent = 0
    return {
      roundTrip: (m) =>
        new Promise<boolean>((r) => {
          echoed = () => r(true)
          nc.publish('bench.in', m)
        }),
      // A flush (a round trip to the server) every 1,000 messages: the client's buffer stays bounded.
      send: (m) => {
        nc.publish('bench.in', m)
        return ++sent % 1000 === 0 ? nc.flush() : undefined
      },
      flush: () => nc.flush(),
      close: () => nc.close(),
    }
  },
}

// ---- zerohop's bridge: shared memory → bridge → NATS → bridge → shared memory ---------

/**
 * Each side a shared-memory hub and a `Bridge` between it and one NATS subject, both
 * ways: what the client publishes in its segment crosses its bridge, the server and the
 * peer's bridge into the peer's segment, and the echo comes back the same way. Against
 * nats.js on the same server: what a bridge adds to NATS's own round trip.
 */
const natsBridge: Contender = {
  id: 'nats-bridge',
  transport: 'nats',
  peer: 'zerohop bridge',
  kind: 'zerohop',
  workloads: ['rtt', 'oneway'],
  missing: noNatsServer,
  async serve({ kind, size }, sink) {
    const server = await natsServer()
    const shm = `shm://${unique('bridge-peer')}`
    // (Segments with slots the size of a message, as for shm://'s own rows.)
    const slotSize = Math.max(64, size)
    const [hub, bridge] = await withServer(server, async () => {
      const hub = await Hub.open(shm, kind === 'rtt' ? { backpressure: 'block', slotSize } : { role: 'subscriber', slotSize })
      try {
        return [hub, await Bridge.start(shm, `nats://127.0.0.1:${server.port}/bench`, { direction: kind === 'rtt' ? 'both' : 'in' })] as const
      } catch (e) {
        await hub.close()
        throw e
      }
    })
    const pump = pumpHub(hub, kind, sink)
    return {
      ready: { port: server.port },
      async close() {
        await bridge.close({ lingerMs: 0 })
        await pump.stop()
        await server.close()
      },
    }
  },
  async connect(ready, { kind, size }) {
    const shm = `shm://${unique('bridge-client')}`
    // (A stream waits for the bridge to take each message: \`block\`.)
    const hub = await Hub.open(shm, { backpressure: 'block', slotSize: Math.max(64, size) })
    const bridge = await Bridge.start(shm, `nats://127.0.0.1:${ready.port}/bench`, { direction: kind === 'rtt' ? 'both' : 'out' })
    return hubClient(hub, async () => {
      await bridge.close({ lingerMs: 10_000 })
      await hub.close()
    })
  },
}

// ---- sockperf: the kernel's floor, in C ---------------------------------------------

/** sockperf ping-pong over UDP or TCP (`--tcp`), blocking sockets: its own percentiles of full round trips. */
function sockperf(transport: 'udp' | 'tcp'): Contender {
  return {
    id: `sockperf-${transport}`,
    transport,
    peer: 'sockperf',
    kind: 'floor',
    workloads: ['rtt'],
    missing: async () => (spawnSync('sockperf', ['--version'], { stdio: 'ignore' }).error ? 'sockperf is not installed (apt-get install sockperf)' : undefined),
    external: {
      async rtt(size, seconds, cpus) {
        const extra = transport === 'tcp' ? ['--tcp'] : []
        const pinned = (cpu: number | undefined, argv: string[]): [string, string[]] => (cpu === undefined ? ['sockperf', argv] : ['taskset', ['-c', String(cpu), 'sockperf', ...argv]])
        // The server may take a while to start on a busy machine, or find its port taken
        // meanwhile (a free port is only free when asked): a client that found no server
        // measured nothing, and both go again, on another port.
        let out = ''
        for (let attempt = 0; attempt < 5 && !/RunTime=/.test(out); attempt++) {
          const port = String(await freePort(transport))
          const server = spawn(...pinned(cpus?.[1], ['server', '-i', '127.0.0.1', '-p', port, ...extra]), { stdio: 'ignore' })
          await new Promise((r) => setTimeout(r, 300 * (attempt + 1)))
          const client = spawn(...pinned(cpus?.[0], ['ping-pong', '-i', '127.0.0.1', '-p', port, '-m', String(size), '-t', String(seconds), '--full-rtt', ...extra]), {
            stdio: ['ignore', 'pipe', 'ignore'],
          })
          out = ''
          client.stdout.on('data', (c: Buffer) => (out += c.toString()))
          await once(client, 'exit')
          server.kill()
        }
        const percentiles: [number, number][] = []
        for (const m of out.matchAll(/percentile (\d+\.\d+) =\s*([0-9.]+)/g)) percentiles.push([Number(m[1]) / 100, Number(m[2])])
        const max = /<MAX> observation =\s*([0-9.]+)/.exec(out)
        if (max) percentiles.push([1, Number(max[1])])
        const run = /RunTime=([0-9.]+) sec.*?ReceivedMessages=(\d+)/.exec(out)
        if (percentiles.length === 0 || run === null) return undefined
        return { percentiles: percentiles.sort((a, b) => a[0] - b[0]), msgsPerSec: Number(run[2]) / Number(run[1]) }
      },
    },
  }
}

/** A port free on 127.0.0.1 for `transport` now (the kernel's pick for a socket bound to 0). */
async function freePort(transport: 'udp' | 'tcp'): Promise<number> {
  if (transport === 'tcp') {
    const server = createServer()
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const { port } = server.address() as { port: number }
    await new Promise<void>((r) => server.close(() => r()))
    return port
  }
  const probe = createSocket('udp4')
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r))
  const { port } = probe.address()
  await new Promise<void>((r) => probe.close(() => r()))
  return port
}

/** Every contender, zerohop's transports first. */
export const CONTENDERS: readonly Contender[] = [
  ...['shm', 'udp', 'kcp', 'quic', 'tcp', 'uds', 'nats'].map(zerohop),
  natsBridge,
  nodeNet('uds'),
  nodeNet('tcp'),
  dgram,
  zeromq,
  nats,
  sockperf('udp'),
  sockperf('tcp'),
]
