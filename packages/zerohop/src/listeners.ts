/**
 * The listening hubs of this host (`Hub.list({ net: true })`, `zerohop ls --net`): each
 * listener writes a small file of its own into this user's runtime directory while it
 * listens, and removes it when it closes. One whose process died leaves its file
 * behind: the next look removes it (a process is known by its pid and its start time,
 * so a pid taken again by another process does not keep it).
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A listening hub of this host, as {@link listListeners} found it. */
export interface ListenerInfo {
  /** What a hub dials to reach it: its scheme and bound address (its URL where it has none). */
  url: string
  transport: string
  /** The URL it was opened with. */
  openedAs: string
  /** The process that listens. */
  pid: number
  /** When it started listening (ms since the Unix epoch). */
  since: number
}

/** What a listener's file holds: its info and its process's start time. */
interface Entry extends ListenerInfo {
  started: string
}

function dir(): string {
  return join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), `zerohop-${process.getuid?.() ?? 0}`, 'listeners')
}

/** When process `pid` started (field 22 of its stat), or undefined if there is none. */
function startOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // (The command name, field 2, may hold spaces: count from after its parenthesis.)
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

let made = 0

/**
 * Lists a listener (`transport`, opened as `openedAs`, reached at `url`) until the
 * returned function is called. Never throws: a host where the directory cannot be
 * written lists no listener.
 */
export function register(transport: string, openedAs: string, url: string): () => void {
  const file = join(dir(), `${process.pid}-${++made}.json`)
  const entry: Entry = { url, transport, openedAs, pid: process.pid, since: Date.now(), started: startOf(process.pid) ?? '' }
  try {
    mkdirSync(dir(), { recursive: true, mode: 0o700 })
    writeFileSync(file, JSON.stringify(entry), { mode: 0o600 })
  } catch {
    return () => {}
  }
  return () => rmSync(file, { force: true })
}

/** The listeners of this host whose process is alive; the files of the others are removed. */
export function listListeners(): ListenerInfo[] {
  let files: string[]
  try {
    files = readdirSync(dir()).filter((f) => f.endsWith('.json'))
  } catch {
    return []
  }
  const found: ListenerInfo[] = []
  for (const f of files) {
    const path = join(dir(), f)
    let e: Entry
    try {
      e = JSON.parse(readFileSync(path, 'utf8')) as Entry
    } catch {
      continue // (Being written, or gone meanwhile.)
    }
    if (startOf(e.pid) !== e.started) {
      rmSync(path, { force: true })
      continue
    }
    found.push({ url: e.url, transport: e.transport, openedAs: e.openedAs, pid: e.pid, since: e.since })
  }
  return found.sort((a, b) => a.since - b.since)
}
