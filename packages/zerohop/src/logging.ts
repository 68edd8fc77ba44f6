/**
 * The `logger` option: a hub tells a pino-compatible logger what an operator wants to
 * know, once each with its context, and nothing per message: it opened (and over
 * what, with any fallback), its connections and peers came and went, and the first
 * time it dropped, lost to a lap, passed over for a time to live or held back for a
 * rate limit, or met a slow consumer or a protocol violation (the counts after that
 * are in `metrics()`). Counters are looked at once a second, off the hot path.
 */
import { describe } from './codec.js'
import { BadOptionError } from './errors.js'
import type { StatusEvent } from './port.js'

/** What the `logger` option takes: pino's shape (a pino logger, or a child of one). */
export interface Logger {
  info(context: object, message: string): void
  warn(context: object, message: string): void
  error(context: object, message: string): void
}

/** `logger`, checked. */
export function checkLogger(logger: unknown): Logger {
  const l = logger as Partial<Logger> | null
  if (typeof l !== 'object' || l === null || typeof l.info !== 'function' || typeof l.warn !== 'function' || typeof l.error !== 'function') {
    throw new BadOptionError(`logger must be an object with info, warn and error methods (a pino logger), got ${describe(logger)}`)
  }
  return l as Logger
}

/** What a hub shows its log (a part of `Hub`, to keep this module off its type). */
export interface Logged {
  readonly url: string
  readonly transport: string
  metrics(): { selection: { reason: string; fallbacks: { transport: string; reason: string }[] } } & Record<string, unknown>
  onStatus(listener: (event: StatusEvent) => void): () => void
}

/** The counters whose first count is logged, where they are in `metrics()`, and what they mean. */
const FIRSTS: Array<[path: string, message: string]> = [
  ['dropped', 'a message was dropped (backpressure drop_new: the ring or send queue was full)'],
  ['lapped', 'messages were lost to a lap (backpressure drop_old: this hub read too slowly)'],
  ['expired', 'a message was passed over unread: its time to live ran out'],
  ['rateLimited', 'a publish was held back, dropped or refused for the rate limit'],
  ['<transport>.slowConsumers', 'a slow consumer: a peer did not read in time'],
  ['<transport>.protocolViolations', 'a protocol violation: a peer sent what zerohop does not accept'],
]

/** How often the counters are looked at. */
const LOOK_MS = 1000

/** Tells `logger` about `hub` until the returned function is called (as it closes). */
export function logHub(logger: Logger, hub: Logged): () => void {
  const context = { url: hub.url, transport: hub.transport }
  const { selection } = hub.metrics()
  logger.info({ ...context, reason: selection.reason }, 'zerohop hub opened')
  for (const f of selection.fallbacks) logger.warn({ ...context, wanted: f.transport, why: f.reason }, 'zerohop fell back to another transport')
  // A connection's changes (a listener's peers', a connecting hub's to its server), each
  // once: of the attempts to reconnect, the first (the outcome follows as its own event).
  const off = hub.onStatus((e) => {
    if (e.status === 'reconnecting' && e.attempt !== undefined && e.attempt > 1) return
    const about = { ...context, status: e.status, ...(e.peer !== undefined ? { peer: e.peer } : {}) }
    if (e.error !== undefined) logger.warn({ ...about, code: e.error.code, error: e.error.message }, `zerohop ${e.status}`)
    else logger.info(about, `zerohop ${e.status}`)
  })
  const told = new Set<string>()
  const look = (): void => {
    const m = hub.metrics()
    for (const [path, message] of FIRSTS) {
      if (told.has(path)) continue
      const [first, second] = path.replace('<transport>', hub.transport).split('.')
      const at = second === undefined ? m : (m[first!] as Record<string, unknown> | undefined)
      const count = at?.[second ?? first!]
      if (typeof count === 'number' && count > 0) {
        told.add(path)
        logger.warn({ ...context, count }, `zerohop: ${message} (counted in metrics() from now on)`)
      }
    }
  }
  const timer = setInterval(look, LOOK_MS)
  timer.unref()
  return () => {
    clearInterval(timer)
    look()
    off()
    logger.info(context, 'zerohop hub closed')
  }
}
