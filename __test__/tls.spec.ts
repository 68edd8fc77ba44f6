// TLS as quic:// (always) and tcp:// (with `tls` options) share it, through the public
// API and across real processes: the same options, the same certificates and the same
// error codes on both. Mutual TLS accepted and refused, servers untrusted, expired and
// misnamed; on tcp://, a peer that does not speak TLS is counted and closed while the
// listener goes on. Serial: each test runs busy processes on a two-core machine.
import test from 'ava'
import { rmSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { type ErrorCode, Hub, type HubOptions } from 'zerohop'
import { child, pki, statusWhere } from './helpers.ts'
// @ts-expect-error: a plain ES module shared with the fixtures
import { payload } from './fixtures/payload.mjs'

const makePayload = payload as (tag: number, seq: number, size: number) => Uint8Array
const children: ReturnType<typeof child>[] = []
test.afterEach.always(() => {
  for (const c of children.splice(0)) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
})
const peer = (cfg: object) => {
  const c = child('hub-peer.mjs', [JSON.stringify(cfg)])
  children.push(c)
  return c
}

for (const scheme of ['quic', 'tcp'] as const) {
  test.serial(`${scheme}: mutual TLS accepted and refused; untrusted, expired and misnamed servers fail with their codes`, async (t) => {
    const dir = pki()
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const f = (name: string) => join(dir, name)
    const mtls = { cert: f('server.pem'), key: f('server.key'), ca: f('ca.pem') }
    const server = peer({ mode: 'server', url: `${scheme}://127.0.0.1:0`, options: { listen: true, tls: mtls }, count: 1, log: true })
    const { address } = (await server.next('ready')) as { address: string }
    const once = { reconnect: { maxAttempts: 0 } }
    const open = (url: string, options: HubOptions<Uint8Array>) => Hub.open(url as `tcp://${string}`, options)

    // Accepted: a client certificate from the CA, and the server verified against it.
    await using good = await open(`${scheme}://${address}`, {
      tls: { ca: f('ca.pem'), cert: f('client.pem'), key: f('client.key'), serverName: 'localhost' },
    })
    good.publish(makePayload(1, 0, 100))
    t.is(((await server.next('done')) as { received: number }).received, 1)

    const refusedWith = async (tls: HubOptions<Uint8Array>['tls'], code: ErrorCode, label: string) => {
      await using hub = await open(`${scheme}://${address}`, { tls, ...once })
      const e = await statusWhere(hub, (e) => e.status === 'disconnected')
      t.is(e.error?.code, code, label)
      t.is(hub.status, 'disconnected', `${label}: no retry, certificates do not fix themselves`)
    }
    await refusedWith({ ca: f('ca.pem'), serverName: 'localhost' }, 'ERR_TLS_REFUSED', 'no client certificate')
    await refusedWith(
      { ca: f('ca.pem'), cert: f('stranger.pem'), key: f('stranger.key'), serverName: 'localhost' },
      'ERR_TLS_REFUSED',
      'a client certificate from another CA',
    )
    await refusedWith({ ca: f('other-ca.pem'), serverName: 'localhost' }, 'ERR_TLS_UNTRUSTED', 'a server from an unknown CA')
    await refusedWith({ ca: f('ca.pem'), serverName: 'elsewhere.example' }, 'ERR_TLS_NAME_MISMATCH', 'a server for another name')
    await using expired = await open(`${scheme}://127.0.0.1:0`, { listen: true, tls: { cert: f('expired.pem'), key: f('expired.key') } })
    await using late = await open(`${scheme}://${expired.localAddress}`, { tls: { ca: f('ca.pem'), serverName: 'localhost' }, ...once })
    t.is((await statusWhere(late, (e) => e.status === 'disconnected')).error?.code, 'ERR_TLS_EXPIRED')
    server.send('0')
    await server.next('closed')
    t.is(await server.exited, 0, server.stderr())
  })
}

test.serial('tcp: a peer that does not speak TLS is counted and closed; the listener and its TLS peers go on', async (t) => {
  await using server = await Hub.open('tcp://127.0.0.1:0', { listen: true, tls: {} })
  await using good = await Hub.open(`tcp://${server.localAddress}`, { tls: { dangerouslyAcceptAnyServer: true } })
  await statusWhere(good, (e) => e.status === 'connected')
  // A plain zerohop hub, then raw garbage.
  await using plain = await Hub.open(`tcp://${server.localAddress}`, { reconnect: { maxAttempts: 0 } })
  await statusWhere(plain, (e) => e.status === 'disconnected')
  const raw = connect(Number(server.localAddress!.split(':')[1]), '127.0.0.1', () => raw.write(Buffer.alloc(300, 0)))
  raw.on('error', () => undefined)
  t.teardown(() => raw.destroy())
  for (let i = 0; i < 500 && server.metrics().tcp!.handshakeFailures < 2; i++) await new Promise((r) => setTimeout(r, 10))
  t.is(server.metrics().tcp!.handshakeFailures, 2)
  t.is(server.metrics().tcp!.peers, 1)
  good.publish(new Uint8Array([7, 7]))
  t.deepEqual(await server.recv({ timeoutMs: 5000 }), new Uint8Array([7, 7]))
  // And a TLS client against a plain listener fails, without a certificate code.
  await using plainServer = await Hub.open('tcp://127.0.0.1:0', { listen: true })
  await using tlsClient = await Hub.open(`tcp://${plainServer.localAddress}`, { tls: { dangerouslyAcceptAnyServer: true }, reconnect: { maxAttempts: 0 } })
  const e = await statusWhere(tlsClient, (e) => e.status === 'disconnected')
  t.false(e.error?.code?.startsWith('ERR_TLS') ?? false, e.error?.code)
  await t.throwsAsync(Hub.open('uds://@zerohop-tls-x', { tls: {} } as never), { code: 'ERR_BAD_OPTION' })
})
