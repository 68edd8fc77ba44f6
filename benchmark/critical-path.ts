// Where a parked receiver's time goes, per hop of a ping-pong: zerohop quic:// against
// Node tls, measured with the kernel's syscall tracepoints (perf), not with timers in the
// code under test.
//
//   node --import tsx benchmark/critical-path.ts [rounds]
//
// The echo side (benchmark/peer.ts) runs on CPU 1, the traced client on CPU 0, both
// parked between messages (`spinUs: 0`; Node's own sockets always are). For each hop the
// client's trace gives: the blocking `epoll_pwait` that returned with the answer, the
// system call that sends the next message, and their distance, the *critical path*:
// everything the receiving process does between waking up and sending (libuv, reading
// the socket, the protocol's work, the call into JavaScript, the application, building
// and encrypting the answer). The send's own duration includes waking the peer, and the
// time blocked in `epoll_pwait` is mostly the VM waking a halted vCPU, so neither is the
// transport's doing. Needs `perf` with tracepoints (root); prints why when it cannot.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { connect } from 'node:tls'
import { onFrames } from './frames.ts'
import { here, makePki, spawnHelper } from './procs.ts'

const [role, kind, address, pkiArg] = process.argv.slice(2)

if (role === 'client') {
  // Ping-pong until killed: publish 64 bytes, wait parked for the echo.
  if (kind === 'quic') {
    const { Hub } = await import('zerohop')
    const hub = await Hub.open(`quic://${address}`, { tls: { ca: join(pkiArg!, 'ca.pem'), serverName: 'localhost' }, spinUs: 0 })
    const msg = new Uint8Array(64)
    console.log(JSON.stringify({ ready: true }))
    for (;;) {
      hub.publish(msg)
      await hub.recv()
    }
  } else {
    const [host, port] = address!.split(':')
    const sock = await new Promise<ReturnType<typeof connect>>((resolve) => {
      const s = connect({ host, port: Number(port), ca: readFileSync(join(pkiArg!, 'ca.pem')), servername: 'localhost' }, () => resolve(s))
    })
    sock.setNoDelay(true)
    let answered: (() => void) | undefined
    onFrames(sock, () => answered?.())
    const msg = Buffer.alloc(68)
    msg.writeUInt32LE(64, 0)
    console.log(JSON.stringify({ ready: true }))
    for (;;) {
      const got = new Promise<void>((r) => (answered = r))
      sock.write(msg)
      await got
    }
  }
} else {
  await main(Number(role ?? 3))
}

async function main(rounds: number): Promise<void> {
  if (spawnSync('perf', ['list', 'syscalls:sys_enter_sendto'], { encoding: 'utf8' }).stdout?.includes('sys_enter_sendto') !== true) {
    console.log('critical-path: needs perf with syscall tracepoints (linux-perf, run as root); nothing measured')
    return
  }
  const pki = makePki()
  console.log('| round | transport | side | hops | wake → send p50 µs | p90 µs | send p50 µs | blocked p50 µs |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (let r = 1; r <= rounds; r++) {
    for (const k of r % 2 ? ['quic', 'tls'] : ['tls', 'quic']) {
      const sides = await measure(k, pki)
      for (const [side, s] of Object.entries(sides)) {
        console.log(`| ${r} | ${k === 'quic' ? 'zerohop quic://' : 'Node tls'} | ${side} | ${s.hops} | ${s.crit} | ${s.critP90} | ${s.send} | ${s.blocked} |`)
      }
    }
  }
}

interface Summary {
  hops: number
  crit: string
  critP90: string
  send: string
  blocked: string
}

async function measure(k: string, pki: string): Promise<{ client: Summary; peer: Summary }> {
  const peer = spawnHelper(join(here, 'peer.ts'), k === 'quic' ? ['quic-echo', pki, '0', '1'] : ['tls-echo', pki, '1'], 1)
  const { addresses } = (await peer.next()) as { addresses: string[] }
  const client = spawnHelper(fileURLToPath(import.meta.url), ['client', k, addresses[0]!, pki], 0)
  await client.next()
  await new Promise((r) => setTimeout(r, 1500)) // warm up
  // A connected client sends with send(2) (sendto), a listener with sendmsg(2).
  const sendCalls = k === 'quic' ? ['sendto', 'sendmsg'] : ['write']
  const data = join(pki, `${k}.perf`)
  const events = ['epoll_pwait', ...sendCalls].flatMap((c) => [`syscalls:sys_enter_${c}`, `syscalls:sys_exit_${c}`]).join(',')
  const pids = `${client.proc.pid},${peer.proc.pid}`
  spawnSync('perf', ['record', '-q', '-e', events, '-p', pids, '-o', data, '--', 'sleep', '2'], { stdio: 'ignore' })
  client.proc.kill('SIGKILL')
  peer.proc.kill('SIGKILL')
  const script = spawnSync('perf', ['script', '-i', data, '-F', 'tid,time,event,trace'], { encoding: 'utf8', maxBuffer: 1 << 28 }).stdout
  return { client: summarize(script, client.proc.pid!, sendCalls), peer: summarize(script, peer.proc.pid!, sendCalls) }
}

/** Per hop of a process's main thread: blocking epoll that returned events → the next send. */
function summarize(script: string, pid: number, sendCalls: string[]): Summary {
  const crit: number[] = []
  const sends: number[] = []
  const blocked: number[] = []
  let blocking = false
  let enteredEpoll = 0
  let woke: number | undefined
  let enteredSend: number | undefined
  for (const line of script.split('\n')) {
    const m = /^\s*(\d+)\s+([\d.]+):\s+syscalls:(\S+):\s*(.*)$/.exec(line)
    if (!m || Number(m[1]) !== pid) continue
    const t = Number(m[2]) * 1e6
    const event = m[3]!
    if (event === 'sys_enter_epoll_pwait') {
      // Node asks once with timeout 0 (its idle-time metrics), then blocks.
      blocking = !/timeout: 0x0+\b/.test(m[4]!)
      enteredEpoll = t
    } else if (event === 'sys_exit_epoll_pwait') {
      if (blocking && !/0x0+$/.test(m[4]!)) {
        woke = t
        blocked.push(t - enteredEpoll)
      }
    } else if (event.startsWith('sys_enter_') && sendCalls.includes(event.slice(10))) {
      if (woke !== undefined) crit.push(t - woke)
      woke = undefined
      enteredSend = t
    } else if (event.startsWith('sys_exit_') && sendCalls.includes(event.slice(9)) && enteredSend !== undefined) {
      sends.push(t - enteredSend)
      enteredSend = undefined
    }
  }
  const q = (a: number[], p: number) => (a.length ? a.sort((x, y) => x - y)[Math.floor(a.length * p)]!.toFixed(0) : '–')
  return { hops: crit.length, crit: q(crit, 0.5), critP90: q(crit, 0.9), send: q(sends, 0.5), blocked: q(blocked, 0.5) }
}
