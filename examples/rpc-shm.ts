import { Rpc } from 'zerohop'

await using srv = await Rpc.serve<number, number>('shm://calc', (n) => n * 2, { codec: 'json' })
await using calc = await Rpc.connect<number, number>('shm://calc', { codec: 'json' })
console.log(await calc.request(21), srv.metrics().served) // 42 1
