import { Hub, Rpc } from 'zerohop'

// A listening hub accepts any number of peers. Without tls.cert and tls.key it makes a
// self-signed certificate, which only a client that says so will trust (development).
const dev = { tls: { dangerouslyAcceptAnyServer: true } }
await using server = await Hub.open<string>('quic://127.0.0.1:0', { listen: true, codec: 'json' })
await using client = await Hub.open<string>(`quic://${server.localAddress}`, { ...dev, codec: 'json' })

client.publish('hello') // kept until the server's application has read it, across reconnects
const { value, channel } = await server.recvMessage({ timeoutMs: 5000 })
console.log(value, channel) // hello 0
server.publish('welcome', { channel: 2 }) // each channel is a stream of its own
console.log(await client.recv({ timeoutMs: 5000 }), client.status) // welcome connected

// Request/response: one stream per request; a timeout or an abort cancels it on the server.
await using rpc = await Rpc.serve<number, number>('quic://127.0.0.1:0', (n) => n * 2, { codec: 'json' })
await using calc = await Rpc.connect<number, number>(`quic://${rpc.localAddress}`, { ...dev, codec: 'json' })
console.log(await calc.request(21, { timeoutMs: 1000 })) // 42
