import { Hub, struct } from 'zerohop'

const Tick = struct({ seq: 'u64', price: 'f64', volume: 'u64' }) // fixed layout in shared memory

// Any number of processes open the same name: publishers and subscribers meet there.
await using pub = await Hub.open('shm://market-data', { codec: Tick, role: 'publisher' })
await using sub = await Hub.open('shm://market-data', { codec: Tick, role: 'subscriber' })

pub.publish({ seq: 1n, price: 50_000, volume: 100n }) // copy in
const loan = pub.loan() // or write in place
loan.value.seq = 2n
loan.value.price = 50_001
loan.commit()

console.log(await sub.recv({ timeoutMs: 100 })) // { seq: 1n, price: 50000, volume: 100n }
const b = sub.borrow()! // read in place, no copy
console.log(b.value.price) // 50001
b.release()

pub.publishBatch([{ seq: 3n, price: 1, volume: 1n }])
for await (const tick of sub) if (tick.seq === 3n) break // async iteration
console.log(sub.metrics().received) // 3
