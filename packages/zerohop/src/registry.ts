/**
 * `Hub.list()`: the shared-memory segments that live on this host, read from their
 * headers (see `crates/zerohop-shm/src/registry.rs`). Segments whose users all died
 * are removed on the way, not listed.
 */
import { describe } from './codec.js'
import { BadOptionError } from './errors.js'
import { binding, native } from './native.js'

/** What {@link Hub.list} takes. */
export interface ListOptions {
  /**
   * How long to watch the segments, in milliseconds, to give their rates (default 100);
   * 0 lists at once, without rates.
   */
  sampleMs?: number
  /** The listening hubs of this host too (`ListenerInfo`: network transports and `Rpc` servers), after the segments. */
  net?: boolean
}

/** A live shared-memory segment of this host, as {@link Hub.list} found it. */
export interface SegmentInfo {
  /** The URL that opens it. */
  url: `shm://${string}`
  name: string
  transport: 'shm'
  /** The segment's file. */
  path: string
  layout: { slotSize: number; capacity: number; maxSubscribers: number }
  /** The segment's size in bytes. */
  bytes: number
  /** The process that created it. */
  creatorPid: number
  /** Messages published into it so far. */
  published: number
  /** Messages published per second over the sample (absent with `sampleMs: 0`). */
  rate?: number
  /** The processes that publish into it (up to 32 are listed). */
  publishers: { pid: number }[]
  /** Its readers: a process may have several (one per hub). */
  subscribers: { pid: number; lag: number; rate?: number }[]
}

const KNOWN = new Set(['sampleMs'])

/** See {@link Hub.list}. */
export async function listSegments(options: ListOptions = {}): Promise<SegmentInfo[]> {
  if (typeof options !== 'object' || options === null) throw new BadOptionError(`options must be an object, got ${describe(options)}`)
  for (const key of Object.keys(options)) if (!KNOWN.has(key)) throw new BadOptionError(`Hub.list() has no option '${key}'`)
  const sampleMs = options.sampleMs ?? 100
  if (typeof sampleMs !== 'number' || !Number.isFinite(sampleMs) || sampleMs < 0) {
    throw new BadOptionError(`sampleMs must be a number of milliseconds, 0 or more, got ${describe(sampleMs)}`)
  }
  const first = snapshot()
  if (sampleMs === 0) return first.segments.map((c) => segment(c))
  await new Promise((resolve) => setTimeout(resolve, sampleMs))
  const second = snapshot()
  const seconds = (second.at - first.at) / 1e9
  const before = new Map(first.segments.map((c) => [key(c), c]))
  return second.segments.map((c) => segment(c, before.get(key(c)), seconds))
}

type Native = ReturnType<typeof binding.listSegments>[number]

function snapshot(): { at: number; segments: Native[] } {
  const at = Number(process.hrtime.bigint())
  return { at, segments: native(() => binding.listSegments()) }
}

/** One segment's identity across two looks: a name taken again by a new segment is another one. */
function key(c: Native): string {
  return `${c.name}\u0000${c.creatorPid}`
}

function segment(c: Native, before?: Native, seconds = 0): SegmentInfo {
  const rate = (now: number, then: number): number => Math.max(0, now - then) / seconds
  const sampled = before !== undefined && seconds > 0
  const readBefore = new Map(before?.subscribers.map((s) => [`${s.pid}:${s.entry}`, before.tail - s.lag]))
  return {
    url: `shm://${c.name}`,
    name: c.name,
    transport: 'shm',
    path: c.path,
    layout: { slotSize: c.slotSize, capacity: c.capacity, maxSubscribers: c.maxSubscribers },
    bytes: c.bytes,
    creatorPid: c.creatorPid,
    published: c.tail,
    ...(sampled ? { rate: rate(c.tail, before.tail) } : {}),
    publishers: c.publishers.map((pid) => ({ pid })),
    subscribers: c.subscribers.map((s) => {
      const then = readBefore.get(`${s.pid}:${s.entry}`)
      return { pid: s.pid, lag: s.lag, ...(sampled && then !== undefined ? { rate: rate(c.tail - s.lag, then) } : {}) }
    }),
  }
}
