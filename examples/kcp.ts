import { Hub, Rpc } from 'zerohop'

// A game server and a player over KCP: reliable, ordered, and quick to repair a loss.
await using server = await Hub.open<{ x: number; y: number }>('kcp://127.0.0.1:0', { listen: true, codec: 'json', mode: 'turbo' })
await using player = await Hub.open<{ x: number; y: number }>(`kcp://${server.localAddress}`, { codec: 'json', mode: 'turbo' })
player.publish({ x: 3, y: 4 }) // every message once, in order, whatever the network drops
const m = await server.recvMessage({ timeoutMs: 5000 })
console.log(m.value, m.from !== undefined) // { x: 3, y: 4 } true

// Requests too, on the default mode ('fast').
await using rpc = await Rpc.serve<number, number>('kcp://127.0.0.1:0', (n) => n * 2, { codec: 'json' })
await using calc = await Rpc.connect<number, number>(`kcp://${rpc.localAddress}`, { codec: 'json' })
console.log(await calc.request(21, { timeoutMs: 1000 })) // 42
