// The far side of each cross-process benchmark, started by run.ts on its own CPU.
// Roles (argv[2]):
//   zh-echo <name> <rounds> <spinUs|spin>  echo pings from <name>-ping to <name>-pong
//   uds-echo <path>                         Node net server echoing length-prefixed frames
//   zh-sink <name> <count> <copy|borrow>    count messages; print msg/s when done
//   uds-sink <path> <count>                 count length-prefixed frames from a socket
import { createServer, type Socket } from 'node:net'
import { Hub } from 'zerohop'

const [role, a, b, c] = process.argv.slice(2)
const say = (msg: object) => process.stdout.write(JSON.stringify(msg) + '\n')

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
} else if (role === 'uds-echo') {
  const server = createServer((sock: Socket) => {
    sock.setNoDelay?.(true)
    let pending: Buffer = Buffer.alloc(0)
    sock.on('data', (d: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, d]) : d
      let off = 0
      while (pending.length - off >= 4) {
        const len = pending.readUInt32LE(off)
        if (pending.length - off < 4 + len) break
        sock.write(pending.subarray(off, off + 4 + len))
        off += 4 + len
      }
      pending = pending.subarray(off)
    })
    sock.on('close', () => server.close())
  })
  server.listen(a, () => say({ ready: true }))
} else if (role === 'zh-sink') {
  const count = Number(b)
  const rx = await Hub.open(`shm://${a}`, { role: 'subscriber', spinUs: 50 })
  say({ ready: true })
  let n = 0
  let bytes = 0
  let start = 0
  while (n < count) {
    if (c === 'borrow') {
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
} else if (role === 'uds-sink') {
  const count = Number(b)
  let n = 0
  let start = 0
  const server = createServer((sock: Socket) => {
    let pending: Buffer = Buffer.alloc(0)
    sock.on('data', (d: Buffer) => {
      if (n === 0 && start === 0) start = performance.now()
      pending = pending.length ? Buffer.concat([pending, d]) : d
      let off = 0
      while (pending.length - off >= 4) {
        const len = pending.readUInt32LE(off)
        if (pending.length - off < 4 + len) break
        off += 4 + len
        n++
      }
      pending = pending.subarray(off)
      if (n >= count) {
        say({ done: true, received: n, msgsPerSec: n / ((performance.now() - start) / 1000), lapped: 0 })
        sock.destroy()
        server.close()
      }
    })
  })
  server.listen(a, () => say({ ready: true }))
} else {
  throw new Error(`unknown role ${role}`)
}
