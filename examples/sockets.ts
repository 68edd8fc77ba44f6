import { Hub, Rpc } from 'zerohop'

// A broker and a worker over a Unix socket (a file, 0600; '@name' is an abstract one).
const path = `/tmp/zerohop-example-${process.pid}.sock`
await using broker = await Hub.open<string>(`uds://${path}`, { listen: true, codec: 'json' })
await using worker = await Hub.open<string>(`uds://${path}`, { codec: 'json' })
worker.publish('ready') // kept until the broker's application has read it, across reconnects
const m = await broker.recvMessage({ timeoutMs: 5000 })
console.log(m.value, m.from, m.peer?.pid === process.pid) // ready peer:1 true

// The same over TCP with TLS (a self-signed server here), with requests.
await using rpc = await Rpc.serve<number, number>('tcp://127.0.0.1:0', (n) => n * 2, { codec: 'json', tls: {} })
const dev = { codec: 'json', tls: { dangerouslyAcceptAnyServer: true } } as const
await using calc = await Rpc.connect<number, number>(`tcp://${rpc.localAddress}`, dev)
console.log(await calc.request(21, { timeoutMs: 1000 })) // 42
