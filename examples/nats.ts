import { Hub, Rpc } from 'zerohop'

// Through a NATS server (`nats-server -p 4222`): the same Hub and Rpc, with a subject in the URL.
const server = process.env.NATS_SERVER ?? '127.0.0.1:4222'
await using prices = await Hub.open<{ bid: number }>(`nats://${server}/prices.>`, { codec: 'json' })
await using eur = await Hub.open<{ bid: number }>(`nats://${server}/prices.eur`, { codec: 'json' })
eur.publish({ bid: 1.08 }) // a plain NATS client sees {"bid":1.08}, as it is
const m = await prices.recvMessage({ timeoutMs: 5000 })
console.log(m.subject, m.value) // prices.eur { bid: 1.08 }

// Servers of a subject share its requests (a NATS queue group); nats.js can ask them too.
await using _square = await Rpc.serve<number, number>(`nats://${server}/square`, (x) => x * x, { codec: 'json' })
await using rpc = await Rpc.connect<number, number>(`nats://${server}/square`, { codec: 'json' })
console.log(await rpc.request(7)) // 49
