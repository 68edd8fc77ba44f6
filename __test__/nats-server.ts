// A real nats-server for the tests (Debian's, installed by scripts/debian.ts when
// missing), on a free loopback port; restartable on the same port.
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, connect as tcpConnect } from 'node:net'
import { ensure } from '../scripts/debian.ts'

const BINARY = '/usr/sbin/nats-server'

export interface NatsServer {
  port: number
  /** `nats://127.0.0.1:<port>/<subject>`. */
  url(subject: string): `nats://${string}`
  /** `127.0.0.1:<port>`, for nats.js. */
  servers: string
  /** Kills the server (and waits for it). */
  stop(): Promise<void>
  /** Starts it again on the same port. */
  start(): Promise<void>
}

export async function freePort(): Promise<number> {
  const probe = createServer()
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
  const port = (probe.address() as { port: number }).port
  await new Promise((r) => probe.close(r))
  return port
}

async function listening(port: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const up = await new Promise<boolean>((r) => {
      const s = tcpConnect(port, '127.0.0.1', () => (s.destroy(), r(true)))
      s.on('error', () => r(false))
    })
    if (up) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`nats-server did not listen on ${port}`)
}

/** A server with `args` besides its address (`--user a --pass b`, say). */
export async function natsServer(args: string[] = []): Promise<NatsServer> {
  if (!ensure.natsServer()) throw new Error('nats-server is missing and apt-get could not install it')
  const port = await freePort()
  let proc: ChildProcess | undefined
  const server: NatsServer = {
    port,
    servers: `127.0.0.1:${port}`,
    url: (subject) => `nats://127.0.0.1:${port}/${subject}`,
    async stop() {
      if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
      const exited = once(proc, 'exit')
      proc.kill('SIGKILL')
      await exited
    },
    async start() {
      proc = spawn(BINARY, ['-a', '127.0.0.1', '-p', String(port), ...args], { stdio: 'ignore' })
      await listening(port)
    },
  }
  await server.start()
  return server
}
