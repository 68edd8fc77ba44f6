/**
 * Several `Rpc.serve` on one network URL share its requests (over `shm://` the servers
 * are a work group of the request segment instead: see `transports/shm-rpc.ts`).
 *
 * The first server listens on the URL: it is the **dispatcher**. A later one, refused
 * the address (in use), is a **member**: it answers on a Unix socket of its own
 * (`uds://@zerohop-rpc-<url's hash>-<pid>-<n>`) and joins the dispatcher over another,
 * the dispatcher's **registry** (`uds://@zerohop-rpc-<url's hash>`). The dispatcher
 * hands each request in turn to itself or to a member, as a request of its own to that
 * member (so a cancellation reaches the member that holds the request, and a member
 * that dies fails just what it held, `ERR_CONNECTION_LOST`, retryable). When the
 * dispatcher goes, a member takes the URL over (and the others join it).
 *
 * Members are on the dispatcher's host (they found its address in use): abstract Unix
 * sockets reach them, and nothing else can.
 */
import { createHash } from 'node:crypto'
import { binding } from './native.js'

/** What the sharing needs of `Rpc` (given by `rpc.ts`, which imports this module). */
export interface ShareHost {
  /** A client of `url` (raw bytes, or JSON with `json`). */
  connect(url: string, json: boolean): Promise<ShareClient>
  /** Serves `url` with `handler` (JSON), unshared. */
  serve(url: string, handler: (req: unknown) => Promise<unknown>): Promise<{ close(): Promise<void> }>
}

/** The part of an `RpcClient` the sharing uses. */
export interface ShareClient {
  request(req: unknown, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<unknown>
  readonly status: string
  close(options?: { lingerMs?: number }): Promise<void>
}

/** Whether `e` is a listen refused because the address is taken. */
export function addressInUse(e: unknown): boolean {
  return (e as { code?: string }).code === 'ERR_BAD_URL' && /in use/i.test((e as Error).message)
}

/**
 * What the servers of `url` on this host share: its transport and port (or path), the
 * port the listener bound (`localAddress`) when the URL asked for any (0). Two
 * servers whose addresses collide have the same.
 */
export function shareKey(url: string, localAddress?: string): string {
  const e = binding.parseEndpoint(url)
  const port = e.port === 0 && localAddress !== undefined ? localAddress.slice(localAddress.lastIndexOf(':') + 1) : (e.port ?? e.path ?? e.name)
  return createHash('sha256').update(`${e.transport}:${port}`).digest('hex').slice(0, 24)
}

/** The registry of the dispatcher of the servers that share `key`. */
export function registryUrl(key: string): string {
  return `uds://@zerohop-rpc-${key}`
}

/** Members a process made so far: numbers their sockets. */
let membersMade = 0

/** A member's own socket: where its dispatcher sends it requests. */
export function memberUrl(key: string): string {
  return `uds://@zerohop-rpc-${key}-${process.pid}-${++membersMade}`
}

/** How often a member looks at its link to the dispatcher. */
const LOOK_MS = 50

/**
 * The dispatcher's side: its registry, its members, and whose turn it is.
 */
export class Dispatcher {
  private readonly members: { url: string; client: ShareClient }[] = []
  private turn = 0
  private constructor(private readonly registry: { close(): Promise<void> }) {}

  /** The dispatcher of the servers that share `key` (listening on their URL): serves its registry. */
  static async start(host: ShareHost, key: string): Promise<Dispatcher> {
    let d: Dispatcher | undefined
    const registry = await host.serve(registryUrl(key), async (req) => {
      const join = (req as { join?: unknown }).join
      if (typeof join !== 'string' || !join.startsWith('uds://@zerohop-rpc-')) throw new Error('not a member socket')
      const client = await host.connect(join, false)
      // (A member joins again after its link to the registry broke: its old client goes.)
      const again = d!.members.findIndex((m) => m.url === join)
      if (again >= 0) void d!.members.splice(again, 1)[0]!.client.close({ lingerMs: 0 })
      d!.members.push({ url: join, client })
      return 'joined'
    })
    d = new Dispatcher(registry)
    return d
  }

  /** Members now. */
  get size(): number {
    return this.members.length
  }

  /**
   * The member whose turn it is to take the next request, or undefined when it is the
   * dispatcher's own. A member no longer connected is let go on the way.
   */
  next(): ShareClient | undefined {
    for (;;) {
      const n = this.members.length + 1
      const at = this.turn++ % n
      if (at === 0) return undefined
      const m = this.members[at - 1]!.client
      if (m.status === 'connected') return m
      this.members.splice(at - 1, 1)
      void m.close({ lingerMs: 0 })
    }
  }

  async close(): Promise<void> {
    for (const m of this.members.splice(0)) await m.client.close({ lingerMs: 0 })
    await this.registry.close()
  }
}

/**
 * A member's link to its dispatcher: joins it, and when it goes, asks `takeOver` to
 * listen on the URL (true when it did: this member is the dispatcher now), or joins
 * whichever member did.
 */
export class MemberLink {
  private client: ShareClient | undefined
  private joined = false
  private closed = false
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly host: ShareHost,
    private readonly key: string,
    private readonly own: string,
    private readonly takeOver: () => boolean,
  ) {}

  /** Joins the dispatcher (rejects if there is none to join within 10 s). */
  async start(): Promise<void> {
    await this.join()
    this.watch()
  }

  private async join(): Promise<void> {
    this.client ??= await this.host.connect(registryUrl(this.key), true)
    await this.client.request({ join: this.own }, { timeoutMs: 10_000 })
    this.joined = true
  }

  private watch(): void {
    if (this.closed) return
    this.timer = setTimeout(() => void this.look(), LOOK_MS)
    this.timer.unref()
  }

  private async look(): Promise<void> {
    if (this.closed) return
    const client = this.client
    if (client === undefined || client.status !== 'connected') {
      // The dispatcher is gone: listen in its place, or join the member that did.
      this.joined = false
      if (this.takeOver()) {
        await this.close()
        return
      }
    } else if (!this.joined) {
      try {
        await this.join()
      } catch {
        // (Looked at again below.)
      }
    }
    this.watch()
  }

  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    const c = this.client
    this.client = undefined
    await c?.close({ lingerMs: 0 })
  }
}
