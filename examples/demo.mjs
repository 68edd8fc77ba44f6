#!/usr/bin/env node
// `npm run demo`: real processes exchanging messages over shm://, udp:// and quic://,
// then a short latency and throughput summary. Everything here uses the public API only.
//
//   main process ──ticks──▶ 2 subscriber processes      (fan-out, struct codec)
//   main process ◀──pong──▶ 1 echo process              (round-trip latency)
//   main process ──batches──▶ 1 counting process        (throughput, lossless)
//   main process ◀──udp://──▶ 1 echo process            (the same Hub over UDP)
//   main process ◀──quic://─▶ 1 echo process            (the same Hub over QUIC, and Rpc)
import { fork } from 'node:child_process'
import { Hub, Rpc, struct } from 'zerohop'

const Tick = struct({ seq: 'u64', price: 'f64', volume: 'u64' })
const [, , role, name, arg] = process.argv

if (role === 'subscriber') {
  const hub = await Hub.open(`shm://${name}`, { codec: Tick, role: 'subscriber' })
  process.send({ ready: true })
  for await (const t of hub) {
    console.log(`  [subscriber ${arg}, pid ${process.pid}] tick #${t.seq}  price ${t.price.toFixed(2)}  volume ${t.volume}`)
    if (t.seq === 9n) break
  }
  await hub.close()
  process.exit(0)
} else if (role === 'echo') {
  // Answers every ping on <name>-ping with a pong on <name>-pong, spinning on tryRecv.
  const rx = await Hub.open(`shm://${name}-ping`, { role: 'subscriber', slotSize: 64 })
  const tx = await Hub.open(`shm://${name}-pong`, { role: 'publisher', slotSize: 64 })
  process.send({ ready: true })
  for (let n = 0; n < Number(arg); ) {
    const m = rx.tryRecv()
    if (m !== undefined) {
      tx.publish(m)
      n++
    }
  }
  await rx.close()
  await tx.close()
  process.exit(0)
} else if (role === 'udp-echo') {
  // The same echo over udp://: binds a port of its own and answers whoever writes.
  const hub = await Hub.open('udp://127.0.0.1:0', { peers: [name], flushIntervalMs: 0 })
  process.send({ ready: true, address: hub.localAddress })
  for (let n = 0; n < Number(arg); n++) hub.publish(await hub.recv())
  await hub.close()
  process.exit(0)
} else if (role === 'quic-echo') {
  // The same echo over quic://, listening (self-signed certificate: development), and an
  // Rpc server on a second port, up until the main process says goodbye.
  const hub = await Hub.open('quic://127.0.0.1:0', { listen: true })
  const rpc = await Rpc.serve('quic://127.0.0.1:0', (n) => n * 2, { codec: 'json' })
  process.send({ ready: true, address: hub.localAddress, rpc: rpc.localAddress })
  for (let n = 0; n < Number(arg); n++) hub.publish(await hub.recv())
  await hub.recv() // goodbye
  await hub.close()
  await rpc.close()
  process.exit(0)
} else if (role === 'counter') {
  const rx = await Hub.open(`shm://${name}`, { role: 'subscriber' })
  process.send({ ready: true })
  let n = 0
  const total = Number(arg)
  while (n < total) {
    if (rx.borrow()?.release()) n++
    else await rx.recv().then(() => n++)
  }
  process.send({ received: n, lapped: rx.metrics().lapped })
  await rx.close()
  process.exit(0)
} else {
  await main()
}

function start(role, name, arg) {
  const child = fork(new URL(import.meta.url).pathname, [role, name, String(arg)], { stdio: 'inherit' })
  const ready = new Promise((resolve) => child.once('message', resolve))
  const done = new Promise((resolve) => child.once('exit', resolve))
  return { child, ready, done }
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

async function main() {
  const name = `demo-${process.pid}`
  const t0 = Date.now()
  console.log('zerohop demo: one Hub across processes, over shared memory and UDP\n')

  // 1. Fan-out: one publisher, two subscriber processes, a typed struct codec.
  console.log(`1. publishing 10 ticks on shm://${name} to 2 subscriber processes`)
  const pub = await Hub.open(`shm://${name}`, { codec: Tick, role: 'publisher' })
  const subs = [start('subscriber', name, 1), start('subscriber', name, 2)]
  await Promise.all(subs.map((s) => s.ready))
  for (let i = 0; i < 10; i++) {
    if (i % 2 === 0) pub.publish({ seq: BigInt(i), price: 50_000 + i * 0.25, volume: BigInt(100 + i) })
    else {
      const loan = pub.loan() // zero-copy: write the fields straight into shared memory
      loan.value.seq = BigInt(i)
      loan.value.price = 50_000 + i * 0.25
      loan.value.volume = BigInt(100 + i)
      loan.commit()
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  await Promise.all(subs.map((s) => s.done))

  // 2. Round-trip latency, 64-byte messages, both sides spinning.
  const rounds = 50_000
  console.log(`\n2. ping-pong: ${rounds} round trips of 64 bytes with an echo process`)
  const ping = await Hub.open(`shm://${name}-ping`, { role: 'publisher', slotSize: 64 })
  const pong = await Hub.open(`shm://${name}-pong`, { role: 'subscriber', slotSize: 64 })
  const echo = start('echo', name, rounds)
  await echo.ready
  const msg = new Uint8Array(64)
  const rtt = new Float64Array(rounds)
  for (let i = 0; i < rounds; i++) {
    const s = process.hrtime.bigint()
    ping.publish(msg)
    while (pong.tryRecv() === undefined);
    rtt[i] = Number(process.hrtime.bigint() - s)
  }
  await echo.done
  const sorted = rtt.slice(rounds / 10).sort() // drop the warm-up tenth
  const us = (ns) => (ns / 1000).toFixed(2)

  // 3. Throughput: batches of 64 B into a lossless (block) ring, counted by another process.
  const total = 2_000_000
  console.log(`\n3. throughput: ${total.toLocaleString()} messages of 64 bytes, publishBatch, block policy`)
  const bulk = await Hub.open(`shm://${name}-bulk`, { role: 'publisher', backpressure: 'block', slotSize: 64, capacity: 65536 })
  const counter = start('counter', `${name}-bulk`, total)
  await counter.ready
  const result = new Promise((resolve) => counter.child.on('message', (m) => m.received !== undefined && resolve(m)))
  const batch = Array.from({ length: 64 }, () => msg)
  const s = performance.now()
  for (let sent = 0; sent < total; sent += batch.length) bulk.publishBatch(batch)
  const { received, lapped } = await result
  const secs = (performance.now() - s) / 1000
  await counter.done

  // 4. The same round trip over udp:// on loopback: a different URL, the same API.
  const udpRounds = 20_000
  const udp = await Hub.open('udp://127.0.0.1:0', { flushIntervalMs: 0 })
  console.log(`\n4. ping-pong over udp:// (${udp.localAddress}): ${udpRounds} round trips, await recv()`)
  const udpEcho = start('udp-echo', udp.localAddress, udpRounds)
  const { address } = await udpEcho.ready
  udp.setPeers([address])
  const udpRtt = new Float64Array(udpRounds)
  for (let i = 0; i < udpRounds; i++) {
    const s = process.hrtime.bigint()
    udp.publish(msg)
    await udp.recv()
    udpRtt[i] = Number(process.hrtime.bigint() - s)
  }
  await udpEcho.done
  const udpSorted = udpRtt.slice(udpRounds / 10).sort()
  const { backend, lost } = udp.metrics().udp

  // 5. And over quic://: TLS, a reliable stream, reconnects; plus one Rpc call.
  const quicRounds = 5_000
  const quicEcho = start('quic-echo', 'quic', quicRounds)
  const { address: quicAddress, rpc: rpcAddress } = await quicEcho.ready
  const dev = { tls: { dangerouslyAcceptAnyServer: true } } // the echo's self-signed certificate
  const quic = await Hub.open(`quic://${quicAddress}`, dev)
  console.log(`\n5. ping-pong over quic:// (${quicAddress}, TLS 1.3): ${quicRounds} round trips, await recv()`)
  const quicRtt = new Float64Array(quicRounds)
  for (let i = 0; i < quicRounds; i++) {
    const s = process.hrtime.bigint()
    quic.publish(msg)
    await quic.recv()
    quicRtt[i] = Number(process.hrtime.bigint() - s)
  }
  const { rttUs } = quic.metrics().quic // read while the echo is still connected
  const calc = await Rpc.connect(`quic://${rpcAddress}`, { ...dev, codec: 'json' })
  console.log(`   Rpc over quic://: request(21) → ${await calc.request(21, { timeoutMs: 5000 })}`)
  await calc.close()
  const quicSorted = quicRtt.slice(quicRounds / 10).sort()
  quic.publish(msg) // goodbye: the echo stops serving
  await quic.close()
  await quicEcho.done

  console.log('\nsummary')
  console.table({
    'ping-pong RTT, 64 B, shm://': { p50: `${us(percentile(sorted, 0.5))} µs`, p99: `${us(percentile(sorted, 0.99))} µs`, 'p99.9': `${us(percentile(sorted, 0.999))} µs` },
    [`ping-pong RTT, 64 B, udp:// (${backend}, lost ${lost})`]: {
      p50: `${us(percentile(udpSorted, 0.5))} µs`,
      p99: `${us(percentile(udpSorted, 0.99))} µs`,
      'p99.9': `${us(percentile(udpSorted, 0.999))} µs`,
    },
    [`ping-pong RTT, 64 B, quic:// (QUIC's own estimate ${rttUs.toFixed(0)} µs)`]: {
      p50: `${us(percentile(quicSorted, 0.5))} µs`,
      p99: `${us(percentile(quicSorted, 0.99))} µs`,
      'p99.9': `${us(percentile(quicSorted, 0.999))} µs`,
    },
  })
  console.table({
    'publishBatch → other process, 64 B': {
      'msg/s': Math.round(received / secs).toLocaleString(),
      'MB/s': ((received * 64) / secs / 1e6).toFixed(0),
      received: received.toLocaleString(),
      lost: lapped,
    },
  })
  for (const hub of [pub, ping, pong, bulk, udp]) await hub.close()
  console.log(`\ndone in ${((Date.now() - t0) / 1000).toFixed(1)} s. Full side-by-side numbers: npm run bench`)
}
