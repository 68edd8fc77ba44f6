// The `logger` option, with pino itself: what a hub tells it (opened, fallbacks, its
// connections and peers, the first drop), once each and never per message.
import test from 'ava'
import { pino } from 'pino'
import { Hub, Rpc } from 'zerohop'
import { uniqueName } from './helpers.ts'

type Line = { level: number; msg: string; url?: string; transport?: string; peer?: string; code?: string; count?: number; wanted?: string }

function capture(): { logger: ReturnType<typeof pino>; lines: Line[] } {
  const lines: Line[] = []
  return { logger: pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) }), lines }
}

const until = async (ok: () => boolean): Promise<void> => {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 10))
}

test('shm://: opened with its reason, the first drop once (with its count), nothing per message, closed', async (t) => {
  const { logger, lines } = capture()
  const name = `shm://${uniqueName('log')}`
  const pub = await Hub.open(name, { role: 'publisher', capacity: 16, backpressure: 'drop_new', logger })
  await using sub = await Hub.open(name, { role: 'subscriber' })
  t.like(lines[0], { msg: 'zerohop hub opened', url: name, transport: 'shm' })
  for (let i = 0; i < 1000; i++) pub.publish(new Uint8Array(8))
  await pub.close()
  const drops = lines.filter((l) => /dropped/.test(l.msg))
  t.is(drops.length, 1, JSON.stringify(lines))
  t.true(drops[0]!.count! >= 900)
  t.is(drops[0]!.level, 40) // warn
  t.is(lines.at(-1)!.msg, 'zerohop hub closed')
  t.true(lines.length < 10, 'nothing per message')
  t.truthy(sub)
})

test.serial('a fallback is a warning saying what was wanted and why', async (t) => {
  const { logger, lines } = capture()
  const saved = process.env.ZEROHOP_SHM
  process.env.ZEROHOP_SHM = 'off'
  try {
    await using hub = await Hub.open(`shm://${uniqueName('log-fallback')}`, { logger })
    t.like(lines.find((l) => l.msg === 'zerohop fell back to another transport'), { level: 40, wanted: 'shm', transport: 'uds' })
    t.truthy(hub)
  } finally {
    if (saved === undefined) delete process.env.ZEROHOP_SHM
    else process.env.ZEROHOP_SHM = saved
  }
})

test('tcp://: a listener hears its peers come and go; a connecting hub that loses its server warns with the code; Rpc takes a logger too', async (t) => {
  const server = capture()
  const client = capture()
  const srv = await Hub.open('tcp://127.0.0.1:0', { listen: true, logger: server.logger })
  const cli = await Hub.open(`tcp://${srv.localAddress}`, { logger: client.logger, reconnect: { initialMs: 20, maxMs: 100 } })
  await until(() => server.lines.some((l) => l.msg === 'zerohop connected' && l.peer !== undefined))
  t.like(server.lines.find((l) => l.msg === 'zerohop connected'), { level: 30, url: 'tcp://127.0.0.1:0' })
  await srv.close({ lingerMs: 0 })
  await until(() => client.lines.some((l) => l.msg === 'zerohop reconnecting'))
  await new Promise((r) => setTimeout(r, 300)) // (attempts go on meanwhile: each is not told)
  const reconnecting = client.lines.filter((l) => l.msg === 'zerohop reconnecting')
  t.is(reconnecting.length, 1, 'once, not once per attempt')
  t.is(reconnecting[0]!.level, 40)
  t.regex(reconnecting[0]!.code!, /^ERR_/)
  await cli.close({ lingerMs: 0 })
  const rpc = capture()
  await using rs = await Rpc.serve('tcp://127.0.0.1:0', () => 1, { logger: rpc.logger })
  t.like(rpc.lines[0], { msg: 'zerohop hub opened', transport: 'tcp' })
  await t.throwsAsync(Hub.open(`shm://${uniqueName('log-bad')}`, { logger: console.log as never }), { code: 'ERR_BAD_OPTION', message: /logger must be/ })
  t.truthy(rs)
})
