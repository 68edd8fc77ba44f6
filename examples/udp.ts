import { Hub } from 'zerohop'

type Quote = { sym: string; px: number }
// Port 0 lets the kernel pick; `localAddress` says which.
await using a = await Hub.open<Quote>('udp://127.0.0.1:0', { codec: 'json' })
await using b = await Hub.open<Quote>('udp://127.0.0.1:0', { codec: 'json', peers: [a.localAddress!] })

b.publish({ sym: 'BTC', px: 50_000 }) // packed into a datagram, sent at the end of this tick
const { value, from } = await a.recvMessage({ timeoutMs: 1000 })
console.log(value, from === b.localAddress) // { sym: 'BTC', px: 50000 } true

a.setPeers([from!]) // answer the sender
a.publish({ ...value, px: value.px + 1 })
console.log((await b.recv({ timeoutMs: 1000 })).px) // 50001
