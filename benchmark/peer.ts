// The far side of each cross-process benchmark, started by run.ts on its own CPU.
// Roles (argv[2]):
//   zh-echo <name> <rounds> <spinUs|spin>  echo pings from <name>-ping to <name>-pong
//   uds-echo <path>                         Node net server echoing length-prefixed frames
//   rpc-echo <name> <spinUs>                Rpc server on shm://<name> answering each request with
//                                           itself; exits after a 1-byte request
//   zh-echo-turns <name>                    spinning echo of <name>-ping to <name>-pong in turns
//                                           (parks after a 1-byte ping, exits after a 2-byte one)
//   zh-sink-turns <name> <count> <ways> <turn>  read one stream in turns of <turn> messages, by
//                                           each of <ways> (copy: tryRecv, batch, drain) in turn;
//                                           msg/s each, and each one's polls of an empty ring
//   zh-sink <name> <count> <copy|borrow|batch|drain>  count messages (tryRecv, borrow,
//                                           tryRecvBatch or drain); msg/s when done
//   net-sink <path|tcp> <count>              count length-prefixed frames from a Unix or TCP socket
//   stream-sink <url> <count> [pki]         listening tcp://, uds:// or kcp:// hub borrowing messages (TLS
//                                           with the certificates in <pki>); msg/s
//   floor-echo <addon>                      the Node floor's echo: recv(2)/send(2) through the bare
//                                           addon (node-floor/) on 127.0.0.1; prints its port
//   stream-count <url> <count> [drain]      connecting tcp:// or uds:// hub counting messages (one
//                                           of a broadcast's clients; with drain(), in batches); msg/s
//   zmq-sink <count>                        zeromq.js PULL bound on 127.0.0.1 counting messages; msg/s
//   udp-echo <ioUring> <spin|spinUs> <peer> zerohop udp:// hub echoing to <peer>
//   udp-sink <count> <ioUring> <threads> <maxDatagram>  zerohop udp:// receiver; msg/s, loss
//   dgram-sink <count>                      Node dgram receiver; msg/s
//   quic-echo <pki> <spin|spinUs> <hubs>     <hubs> quic:// listeners echoing every message
//   tls-echo <pki> <hubs>                   <hubs> Node tls servers echoing length-prefixed frames
//   quic-sink <pki> <count>                 quic:// listener counting messages; msg/s
//   tls-sink <pki> <count>                  Node tls server counting length-prefixed frames; msg/s
//   echoes <spec>...                        one echo per spec (tls:<pki>, quic:<pki>:<spinUs>,
//                                           dgram, udp:<ioUring>:<spinUs>, net:…, stream:…,
//                                           tcptls:<pki>:<spinUs>, zmq); prints their addresses
import { readFileSync } from 'node:fs'
import { createSocket } from 'node:dgram'
import { createServer, type Socket } from 'node:net'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createServer as createTlsServer } from 'node:tls'
// The build under test: this checkout's, or (ZEROHOP_PACKAGE) a baseline's, so that
// run.ts can compare the two side by side.
const { Hub, Rpc } = (process.env.ZEROHOP_PACKAGE
  ? await import(process.env.ZEROHOP_PACKAGE)
  : await import('zerohop')) as typeof import('zerohop')
import { onFrames } from './frames.ts'
import { Pull, Reply } from 'zeromq'

const [role, a, b, c, d] = process.argv.slice(2)

/** The benchmark's bare socket addon (node-floor/). */
export interface NodeFloor {
  listen(): number
  accept(): number
  connect(port: number): number
  recv(fd: number, buf: Uint8Array): number
  send(fd: number, buf: Uint8Array, len: number): number
  shutdown(fd: number): void
}
const say = (msg: object) => process.stdout.write(JSON.stringify(msg) + '\n')

/** Where a hub listening on `url` is reached: its bound address (tcp://, kcp://), or the URL (uds://). */
const listened = (url: string, hub: { localAddress?: string }) => (url.startsWith('uds:') ? url : `${url.slice(0, url.indexOf(':'))}://${hub.localAddress}`)

/**
 * Receives `count` messages on `hub`, prints the msg/s, and exits. `drain`: in batches
 * with `drain()`, in place; else one at a time with `borrow()`. With BENCH_SINK_IDLE_MS
 * (over a lossy transport) it also ends once nothing came for that long, and the rate
 * is of what came, up to the last one.
 */
async function countMessages(hub: Awaited<ReturnType<typeof Hub.open<Uint8Array>>>, count: number, drain = false): Promise<never> {
  const idleMs = process.env.BENCH_SINK_IDLE_MS === undefined ? undefined : Number(process.env.BENCH_SINK_IDLE_MS)
  let n = 0
  let start = 0
  let last = 0
  let touched = 0
  const touch = (m: Uint8Array) => {
    touched += m[0] ?? 0
  }
  while (n < count) {
    if (drain) {
      const k = hub.drain(touch)
      if (k > 0) {
        if (n === 0) start = performance.now()
        n += k
        continue
      }
    } else {
      // In place, as a receiver that wants the most of it reads (shm's zh-sink does too).
      const m = hub.borrow()
      if (m !== undefined) {
        if (n++ === 0) start = performance.now()
        touched += m.bytes[0] ?? 0
        m.release()
        continue
      }
    }
    if (idleMs !== undefined && n > 0) last = performance.now()
    const first = await hub.recv(idleMs === undefined || n === 0 ? {} : { timeoutMs: idleMs }).catch((e: { code?: string }) => {
      if (e.code === 'ERR_TIMEOUT') return undefined
      throw e
    })
    if (first === undefined) break
    if (n++ === 0) start = performance.now()
    touched += first[0] ?? 0
  }
  const end = n < count ? last : performance.now()
  say({ done: true, received: n, msgsPerSec: n / ((end - start) / 1000), touched })
  await hub.close({ lingerMs: 0 })
  process.exit(0)
}

if (role === 'zh-echo') {
  const rounds = Number(b)
  const spin = c === 'spin'
  const rx = await Hub.open(`shm://${a}-ping`, { role: 'subscriber', slotSize: 64, spinUs: spin ? 0 : Number(c) })
  const tx = await Hub.open(`shm://${a}-pong`, { role: 'publisher', slotSize: 64 })
  say({ ready: true })
  for (let n = 0; n < rounds; n++) {
    let m: Uint8Array | undefined
    if (spin) while ((m = rx.tryRecv()) === undefined);
    else m = await rx.recv()
    tx.publish(m!)
  }
  await rx.close()
  await tx.close()
} else if (role === 'zh-echo-turns') {
  // run.ts's turns of ping-pong and Rpc: spins on tryRecv while a turn lasts; a 1-byte
  // ping ends the turn (echoed, then it parks until the next turn's first ping, so that
  // the Rpc server has the CPU meanwhile); a 2-byte one ends it all.
  const rx = await Hub.open(`shm://${a}-ping`, { role: 'subscriber', slotSize: 64, spinUs: 0 })
  const tx = await Hub.open(`shm://${a}-pong`, { role: 'publisher', slotSize: 64 })
  say({ ready: true })
  let parked = false
  for (;;) {
    let m: Uint8Array | undefined
    if (parked) m = await rx.recv()
    else while ((m = rx.tryRecv()) === undefined);
    tx.publish(m!)
    if (m!.length === 2) break
    parked = m!.length === 1
  }
  await rx.close()
  await tx.close()
} else if (role === 'rpc-echo') {
  const server = await Rpc.serve(
    `shm://${a}`,
    (req: Uint8Array) => {
      if (req.length === 1) setImmediate(() => void server.close().then(() => process.exit(0)))
      return req
    },
    { spinUs: Number(b), slotSize: 128 },
  )
  say({ ready: true })
} else if (role === 'uds-echo') {
  const server = createServer((sock: Socket) => {
    sock.setNoDelay?.(true)
    onFrames(sock, (frame) => sock.write(frame))
    sock.on('close', () => server.close())
  })
  server.listen(a, () => say({ ready: true }))
} else if (role === 'zh-sink-turns') {
  // run.ts's interleaved reading: one stream read in turns of <d> messages, each turn by
  // the next of the ways in <c> (copy: the tryRecv loop; batch; drain), each started once
  // that many messages wait; each way's msg/s over its turns, the first round of turns
  // not counted (warm-up), and how often it found the ring empty all the same.
  const count = Number(b)
  const ways = c!.split(',')
  const turn = Number(d)
  const rx = await Hub.open(`shm://${a}`, { role: 'subscriber', spinUs: 50 })
  say({ ready: true })
  let bytes = 0
  const touch = (m: Uint8Array) => {
    bytes += m[0]!
  }
  const spent = ways.map(() => 0)
  const taken = ways.map(() => 0)
  let n = 0
  const empties = ways.map(() => 0)
  // (The first message waited for, untimed: the stream has begun.)
  bytes += (await rx.recv())[0]!
  n++
  for (let t = 0; n < count; t++) {
    const k = t % ways.length
    const way = ways[k]
    const want = Math.min(turn, count - n)
    // (Untimed: the turn starts with all it will read waiting, so that it never waits for
    // the sender, whichever way read before it.)
    while (rx.metrics().lag < want);
    let got = 0
    const start = performance.now()
    while (got < want) {
      let r = 0
      if (way === 'batch') {
        const some = rx.tryRecvBatch(Math.min(1024, want - got))
        for (let i = 0; i < some.length; i++) bytes += some[i]![0]!
        r = some.length
      } else if (way === 'drain') r = rx.drain(touch)
      else {
        const m = rx.tryRecv()
        if (m !== undefined) {
          bytes += m[0]!
          r = 1
        }
      }
      if (r === 0) empties[k]!++
      got += r
    }
    if (t >= ways.length) {
      spent[k]! += performance.now() - start
      taken[k]! += got
    }
    n += got
  }
  const rates = ways.map((_, k) => taken[k]! / (spent[k]! / 1000))
  say({ done: true, received: n, rates, empties, lapped: rx.metrics().lapped, touched: bytes })
  await rx.close()
} else if (role === 'zh-sink') {
  const count = Number(b)
  const rx = await Hub.open(`shm://${a}`, { role: 'subscriber', spinUs: 50 })
  say({ ready: true })
  let n = 0
  let bytes = 0
  let start = 0
  const touch = (m: Uint8Array) => {
    bytes += m[0]!
  }
  while (n < count) {
    if (c === 'batch') {
      // Every message waiting, as an array (refilled each call).
      const got = rx.tryRecvBatch()
      if (got.length > 0) {
        if (n === 0) start = performance.now()
        for (let i = 0; i < got.length; i++) bytes += got[i]![0]!
        n += got.length
        continue
      }
    } else if (c === 'drain') {
      const k = rx.drain(touch)
      if (k > 0) {
        if (n === 0) start = performance.now()
        n += k
        continue
      }
    } else if (c === 'borrow') {
      const m = rx.borrow()
      if (m !== undefined) {
        if (n === 0) start = performance.now()
        bytes += m.bytes[0]! // touch the payload in place
        m.release()
        n++
        continue
      }
    } else {
      const m = rx.tryRecv()
      if (m !== undefined) {
        if (n === 0) start = performance.now()
        bytes += m[0]!
        n++
        continue
      }
    }
    await rx.recv().then((m) => {
      if (n === 0) start = performance.now()
      bytes += m[0]!
      n++
    })
  }
  const secs = (performance.now() - start) / 1000
  say({ done: true, received: n, msgsPerSec: n / secs, lapped: rx.metrics().lapped, touched: bytes })
  await rx.close()
} else if (role === 'net-sink') {
  // A Unix socket path, or 'tcp' (127.0.0.1, a port the kernel picks).
  const count = Number(b)
  let n = 0
  let start = 0
  const server = createServer((sock: Socket) => {
    sock.once('data', () => (start = performance.now()))
    onFrames(sock, () => {
      if (++n !== count) return
      say({ done: true, received: n, msgsPerSec: n / ((performance.now() - start) / 1000), lapped: 0 })
      sock.destroy()
      server.close()
    })
  })
  if (a === 'tcp') server.listen(0, '127.0.0.1', () => say({ ready: true, address: `127.0.0.1:${(server.address() as { port: number }).port}` }))
  else server.listen(a, () => say({ ready: true, address: a }))
} else if (role === 'stream-sink') {
  // A listening tcp:// or uds:// hub counting `count` messages; msg/s.
  const count = Number(b)
  const tls = c === undefined ? {} : { tls: { cert: join(c, 'server.pem'), key: join(c, 'server.key') } }
  // (A udp:// hub has nothing to listen for: it binds, and takes from anyone.)
  const listen = a!.startsWith('udp:') ? {} : { listen: true }
  const hub = await Hub.open(a as `tcp://${string}`, { ...listen, role: 'subscriber', ...tls })
  say({ ready: true, address: listened(a!, hub) })
  await countMessages(hub, count)
} else if (role === 'floor-echo') {
  // The Node floor's echo (see node-floor/): spins on recv(2) through the bare addon at
  // path `a`, sends each read back; ends when the client closes.
  const floor = createRequire(import.meta.url)(a!) as NodeFloor
  say({ port: floor.listen() })
  const fd = floor.accept()
  const buf = new Uint8Array(65536)
  for (;;) {
    let n: number
    while ((n = floor.recv(fd, buf)) < 0);
    if (n === 0) process.exit(0)
    floor.send(fd, buf, n)
  }
} else if (role === 'stream-count') {
  const drain = c === 'drain'
  const hub = await Hub.open(a as `tcp://${string}`, { role: 'subscriber' })
  // Its iterator (unlike a status listener) keeps this process alive while it waits.
  if (hub.status !== 'connected') for await (const e of hub.statusEvents()) if (e.status === 'connected') break
  say({ ready: true })
  await countMessages(hub, Number(b), drain)
} else if (role === 'zmq-sink') {
  const count = Number(a)
  const pull = new Pull()
  await pull.bind('tcp://127.0.0.1:*')
  say({ ready: true, address: pull.lastEndpoint })
  let n = 0
  let start = 0
  for await (const [m] of pull) {
    if (n++ === 0) start = performance.now()
    if (m!.byteLength === 0 || n === count) break
  }
  say({ done: true, received: n, msgsPerSec: n / ((performance.now() - start) / 1000) })
  process.exit(0)
} else if (role === 'udp-echo') {
  const spinUs = b === 'spin' ? 0 : Number(b)
  const hub = await Hub.open('udp://127.0.0.1:0', { ioUring: a as 'off' | 'force', flushIntervalMs: 0, peers: [c!], spinUs })
  say({ ready: true, address: hub.localAddress })
  for (;;) {
    let m: Uint8Array | undefined
    if (b === 'spin') while ((m = hub.tryRecv()) === undefined);
    else m = await hub.recv()
    if (m!.byteLength === 1) break // the client's "done"
    hub.publish(m!)
  }
  await hub.close()
} else if (role === 'udp-sink' || role === 'dgram-sink') {
  // Counts until `count` messages or 300 ms without any; the rate runs from the first
  // message to the last.
  const count = Number(a)
  let n = 0
  let start = 0
  let last = 0
  const finish = (extra: object) => say({ done: true, received: n, msgsPerSec: n / ((last - start) / 1000), ...extra })
  if (role === 'udp-sink') {
    const hub = await Hub.open('udp://127.0.0.1:0', { ioUring: b as 'off' | 'force', receiveThreads: Number(c), role: 'subscriber', maxDatagram: Number(d) })
    say({ ready: true, address: hub.localAddress })
    for (;;) {
      let m = hub.tryRecv()
      if (m === undefined) {
        try {
          m = await hub.recv({ timeoutMs: n === 0 ? 30_000 : 300 })
        } catch {
          break
        }
      }
      if (n++ === 0) start = performance.now()
      last = performance.now()
      if (n >= count) break
    }
    const u = hub.metrics().udp!
    finish({ lost: u.lost, backend: u.backend, sockets: u.receiveSockets })
    await hub.close()
  } else {
    const sock = createSocket({ type: 'udp4', recvBufferSize: 4 << 20 })
    let idle: ReturnType<typeof setTimeout> | undefined
    const done = () => {
      finish({})
      sock.close()
    }
    sock.on('message', () => {
      if (n++ === 0) start = performance.now()
      last = performance.now()
      if (idle) clearTimeout(idle)
      if (n >= count) done()
      else idle = setTimeout(done, 300)
    })
    sock.bind(0, '127.0.0.1', () => say({ ready: true, address: `127.0.0.1:${sock.address().port}` }))
  }
} else if (role === 'quic-echo') {
  const tls = { cert: join(a!, 'server.pem'), key: join(a!, 'server.key') }
  const spin = b === 'spin'
  const hubs = await Promise.all(
    Array.from({ length: Number(c) }, () => Hub.open('quic://127.0.0.1:0', { listen: true, tls, spinUs: spin ? 0 : Number(b) })),
  )
  say({ ready: true, addresses: hubs.map((h) => h.localAddress) })
  // Echo on every hub until one gets a 1-byte "done"; spinning polls them all.
  await Promise.all(
    hubs.map(async (hub) => {
      for (;;) {
        let m: Uint8Array | undefined
        if (spin) {
          while ((m = hub.tryRecv()) === undefined) if (hubs.length > 1) await new Promise((r) => setImmediate(r))
        } else m = await hub.recv()
        if (m.byteLength === 1) process.exit(0) // the client's "done"

        hub.publish(m)
      }
    }),
  )
} else if (role === 'echoes') {
  // Several echo servers in one process, for run.ts's round trips in turns; one spec each:
  // tls:<pki>, quic:<pki>:<spinUs>, dgram, udp:<ioUring>:<spinUs>, net:<tcp|path> (Node net,
  // length-prefixed frames, on 127.0.0.1 or a Unix socket), stream:<url>:<spinUs> (a
  // listening tcp:// or uds:// hub), shm:<name>:<spinUs> (a shm:// pair). Any 1-byte
  // message ends it.
  const specs = process.argv.slice(3)
  const addresses: string[] = []
  const echoHub = async (hub: Awaited<ReturnType<typeof Hub.open<Uint8Array>>>, learnPeer: boolean, spin = false) => {
    if (spin) {
      // Alone in its process (it holds the event loop): both sides spin.
      for (;;) {
        let m: Uint8Array | undefined
        while ((m = hub.tryRecv()) === undefined);
        if (m.byteLength === 1) process.exit(0)
        hub.publish(m)
      }
    }
    if (learnPeer) {
      const { value, from } = await hub.recvMessage()
      hub.setPeers([from!])
      hub.publish(value)
    }
    for (;;) {
      const m = await hub.recv()
      if (m.byteLength === 1) process.exit(0)
      hub.publish(m)
    }
  }
  for (const spec of specs) {
    const [kind, x, y] = spec.split(':')
    if (kind === 'tls') {
      const options = { cert: readFileSync(join(x!, 'server.pem')), key: readFileSync(join(x!, 'server.key')) }
      const server = createTlsServer(options, (sock) => {
        sock.setNoDelay(true)
        onFrames(sock, (frame, len) => (len === 1 ? process.exit(0) : sock.write(frame)))
        sock.on('error', () => {})
      })
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
      addresses.push(`127.0.0.1:${(server.address() as { port: number }).port}`)
    } else if (kind === 'quic') {
      const hub = await Hub.open('quic://127.0.0.1:0', { listen: true, tls: { cert: join(x!, 'server.pem'), key: join(x!, 'server.key') }, spinUs: Number(y) })
      addresses.push(hub.localAddress!)
      void echoHub(hub, false)
    } else if (kind === 'dgram') {
      const sock = createSocket('udp4')
      sock.on('message', (m, from) => (m.length === 1 ? process.exit(0) : sock.send(m, from.port, from.address)))
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
      addresses.push(`127.0.0.1:${sock.address().port}`)
    } else if (kind === 'udp') {
      const hub = await Hub.open('udp://127.0.0.1:0', { ioUring: x as 'off' | 'force', flushIntervalMs: 0, spinUs: Number(y) })
      addresses.push(hub.localAddress!)
      void echoHub(hub, true)
    } else if (kind === 'net') {
      const server = createServer((sock: Socket) => {
        sock.setNoDelay?.(true)
        onFrames(sock, (frame, len) => (len === 1 ? process.exit(0) : sock.write(frame)))
        sock.on('error', () => {})
      })
      if (x === 'tcp') {
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
        addresses.push(`127.0.0.1:${(server.address() as { port: number }).port}`)
      } else {
        await new Promise<void>((r) => server.listen(x, r))
        addresses.push(x!)
      }
    } else if (kind === 'zmq') {
      const rep = new Reply()
      await rep.bind('tcp://127.0.0.1:*')
      addresses.push(rep.lastEndpoint!)
      void (async () => {
        for await (const [m] of rep) {
          if (m!.byteLength === 1) process.exit(0)
          await rep.send(m!)
        }
      })()
    } else if (kind === 'tcptls') {
      const hub = await Hub.open('tcp://127.0.0.1:0', { listen: true, tls: { cert: join(x!, 'server.pem'), key: join(x!, 'server.key') }, spinUs: Number(y) })
      addresses.push(`tcp://${hub.localAddress}`)
      void echoHub(hub, false)
    } else if (kind === 'shm') {
      // shm:<name>:<spinUs>: pings on <name>-ping, echoes on <name>-pong (rttZerohop's pair).
      const rx = await Hub.open(`shm://${x}-ping`, { role: 'subscriber', slotSize: 64, spinUs: Number(y) })
      const tx = await Hub.open(`shm://${x}-pong`, { role: 'publisher', slotSize: 64 })
      addresses.push(`shm://${x}`)
      void (async () => {
        for (;;) {
          const m = await rx.recv()
          if (m.byteLength === 1) process.exit(0)
          tx.publish(m)
        }
      })()
    } else if (kind === 'stream') {
      // stream:<url>:<spinUs>, the URL itself holding colons: the last field is the spin.
      const url = spec.slice('stream:'.length, spec.lastIndexOf(':'))
      const spin = spec.endsWith(':spin')
      const hub = await Hub.open(url as `tcp://${string}`, { listen: true, spinUs: spin ? 0 : Number(spec.slice(spec.lastIndexOf(':') + 1)) })
      addresses.push(listened(url, hub))
      // Echo once the list is printed: a spinning echo holds the event loop for good.
      setImmediate(() => void echoHub(hub, false, spin))
    } else throw new Error(`unknown echo ${spec}`)
  }
  say({ ready: true, addresses })
} else if (role === 'tls-echo') {
  const options = { cert: readFileSync(join(a!, 'server.pem')), key: readFileSync(join(a!, 'server.key')) }
  const servers = Array.from({ length: Number(b) }, () =>
    createTlsServer(options, (sock) => {
      sock.setNoDelay(true)
      onFrames(sock, (frame, len) => {
        if (len === 1) process.exit(0) // the client's "done"
        sock.write(frame)
      })
      sock.on('error', () => {})
    }),
  )
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))))
  say({ ready: true, addresses: servers.map((s) => `127.0.0.1:${(s.address() as { port: number }).port}`) })
} else if (role === 'quic-sink') {
  const count = Number(b)
  const hub = await Hub.open('quic://127.0.0.1:0', { listen: true, role: 'subscriber', tls: { cert: join(a!, 'server.pem'), key: join(a!, 'server.key') } })
  say({ ready: true, address: hub.localAddress })
  let n = 0
  let bytes = 0
  let start = 0
  // Each message as a view where it lies, as the tls sink's frames are (`drain`).
  const take = (m: Uint8Array): void => {
    if (n++ === 0) start = performance.now()
    bytes += m.byteLength
  }
  while (n < count) if (hub.drain(take) === 0) take(await hub.recv())
  say({ done: true, received: n, bytes, msgsPerSec: n / ((performance.now() - start) / 1000) })
  await hub.close({ lingerMs: 0 })
  process.exit(0)
} else if (role === 'tls-sink') {
  const count = Number(b)
  let n = 0
  let start = 0
  const options = { cert: readFileSync(join(a!, 'server.pem')), key: readFileSync(join(a!, 'server.key')) }
  const server = createTlsServer(options, (sock) => {
    sock.once('data', () => (start = performance.now()))
    onFrames(sock, () => {
      if (++n !== count) return
      say({ done: true, received: n, msgsPerSec: n / ((performance.now() - start) / 1000) })
      process.exit(0)
    })
  })
  server.listen(0, '127.0.0.1', () => say({ ready: true, address: `127.0.0.1:${(server.address() as { port: number }).port}` }))
} else {
  throw new Error(`unknown role ${role}`)
}
