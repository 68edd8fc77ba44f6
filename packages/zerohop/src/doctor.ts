/**
 * `zerohop doctor`: what this machine's kernel and limits allow zerohop, each with a
 * verdict and the command that fixes it. It looks through the public API where it can
 * (a UDP hub says which receive path it got and what the kernel granted, a memfd
 * segment opens or does not) and reads `/proc` and `/sys` for the rest.
 */
import { spawnSync } from 'node:child_process'
import { readFileSync, statfsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { Hub } from './hub.js'
import { binding } from './native.js'

/** One look: `ok`, or `warn` (zerohop works, slower or with less than it could). */
export interface Check {
  name: string
  status: 'ok' | 'warn'
  /** What it found, in a few words. */
  value: string
  /** What that means for zerohop. */
  detail: string
  /** The command that fixes it (absent when there is nothing to fix). */
  fix?: string
  /** io_uring's: each operation zerohop uses, and whether this kernel has it. */
  operations?: { name: string; usedFor: string; supported: boolean }[]
}

/** What zerohop asks of the kernel for a UDP socket's buffers by default (`recvBuffer`, `sendBuffer`: 4 MiB). */
const BUFFER_ASK = 4 << 20
/** Free space in /dev/shm below which shared-memory segments may not fit. */
const SHM_FREE_LOW = 64 << 20
/** Open files below which a listener with many clients runs out. */
const FILES_LOW = 4096

const MiB = (n: number): string => `${(n / (1 << 20)).toFixed(n % (1 << 20) === 0 ? 0 : 1)} MiB`

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim()
  } catch {
    return undefined
  }
}

async function ioUring(): Promise<Check> {
  const disabled = readText('/proc/sys/kernel/io_uring_disabled')
  let operations: Check['operations']
  try {
    operations = binding.ioUringOperations()
  } catch {
    // No ring at all: the receive path below says why.
  }
  const has = operations?.filter((o) => o.supported).map((o) => o.name.replace('IORING_OP_', '')) ?? []
  const lacks = operations?.filter((o) => !o.supported).map((o) => o.name.replace('IORING_OP_', '')) ?? []
  try {
    const hub = await Hub.open('udp://127.0.0.1:0', { ioUring: 'force' })
    await hub.close({ lingerMs: 0 })
    return {
      name: 'io_uring',
      status: lacks.length === 0 ? 'ok' : 'warn',
      value: `available: ${has.join(', ')}${lacks.length > 0 ? `; not ${lacks.join(', ')}` : ''}`,
      detail: `udp:// receives through io_uring (multishot, batched, one wake-up a batch)${lacks.length > 0 ? '; what needs the missing ones falls back to plain system calls' : ''}`,
      ...(lacks.length > 0 ? { fix: 'a kernel ≥ 6.0 has every operation zerohop uses' } : {}),
      operations,
    }
  } catch (e) {
    return {
      name: 'io_uring',
      status: 'warn',
      value: `unavailable${disabled !== undefined && disabled !== '0' ? ` (kernel.io_uring_disabled = ${disabled})` : ''}`,
      detail: `udp:// receives with recvmmsg instead: ${(e as Error).message}`,
      fix: disabled !== undefined && disabled !== '0' ? 'sudo sysctl -w kernel.io_uring_disabled=0' : 'a kernel ≥ 6.0 (multishot recvmsg into provided buffers)',
      ...(operations ? { operations } : {}),
    }
  }
}

async function udpSocket(): Promise<Check[]> {
  const hub = await Hub.open('udp://127.0.0.1:0', { busyPollUs: 50 })
  const m = hub.metrics().udp!
  await hub.close({ lingerMs: 0 })
  const rmem = Number(readText('/proc/sys/net/core/rmem_max') ?? 0)
  const wmem = Number(readText('/proc/sys/net/core/wmem_max') ?? 0)
  // (The kernel reports twice what it granted: its bookkeeping.)
  const buffers = (what: string, granted: number, max: number, sysctl: string): Check => {
    const got = granted / 2
    return got >= BUFFER_ASK
      ? { name: what, status: 'ok', value: `${MiB(got)} granted (${sysctl} ${MiB(max)})`, detail: `what zerohop asks for a UDP socket (${MiB(BUFFER_ASK)})` }
      : {
          name: what,
          status: 'warn',
          value: `${MiB(got)} granted (${sysctl} ${MiB(max)})`,
          detail: `less than zerohop asks (${MiB(BUFFER_ASK)}): a burst overflows the socket sooner and UDP loses it`,
          fix: `sudo sysctl -w ${sysctl}=${BUFFER_ASK}`,
        }
  }
  return [
    buffers('UDP receive buffer', m.recvBuffer, rmem, 'net.core.rmem_max'),
    buffers('UDP send buffer', m.sendBuffer, wmem, 'net.core.wmem_max'),
    m.busyPollUs >= 50
      ? { name: 'SO_BUSY_POLL', status: 'ok', value: 'allowed', detail: 'busyPollUs takes effect (the socket polls the device before it sleeps)' }
      : {
          name: 'SO_BUSY_POLL',
          status: 'warn',
          value: 'not allowed',
          detail: 'busyPollUs has no effect: raising it needs CAP_NET_ADMIN',
          fix: 'sudo setcap cap_net_admin+ep "$(command -v node)"',
        },
  ]
}

async function memfd(): Promise<Check> {
  try {
    const hub = await Hub.open(`shm://zerohop-doctor-${process.pid}?memfd`)
    await hub.close({ lingerMs: 0 })
    return { name: 'memfd', status: 'ok', value: 'available', detail: 'shm:// segments can live in memfd (memfd: true): no file, gone with their last holder' }
  } catch (e) {
    return { name: 'memfd', status: 'warn', value: 'unavailable', detail: `memfd: true fails: ${(e as Error).message}` }
  }
}

function devShm(): Check {
  try {
    const s = statfsSync('/dev/shm')
    const size = s.blocks * s.bsize
    const free = s.bavail * s.bsize
    const value = `${MiB(free)} free of ${MiB(size)}`
    return free >= SHM_FREE_LOW
      ? { name: '/dev/shm', status: 'ok', value, detail: 'room for shared-memory segments (a default one takes about 4.5 MiB)' }
      : {
          name: '/dev/shm',
          status: 'warn',
          value,
          detail: `under ${MiB(SHM_FREE_LOW)} free: a large segment may not fit (open fails with ERR_IO)`,
          fix: 'sudo mount -o remount,size=1G /dev/shm',
        }
  } catch (e) {
    return {
      name: '/dev/shm',
      status: 'warn',
      value: 'missing',
      detail: `shm:// carries on over a Unix socket (slower): ${(e as Error).message}`,
      fix: 'sudo mount -t tmpfs -o size=1G tmpfs /dev/shm',
    }
  }
}

function openFiles(): Check {
  const line = readText('/proc/self/limits')
    ?.split('\n')
    .find((l) => l.startsWith('Max open files'))
  const soft = line?.split(/\s{2,}/)[1]
  const n = soft === 'unlimited' ? Infinity : Number(soft)
  if (!(n >= 0)) return { name: 'open files', status: 'warn', value: 'unknown', detail: 'could not read /proc/self/limits' }
  return n >= FILES_LOW
    ? { name: 'open files', status: 'ok', value: `ulimit -n ${soft}`, detail: 'room for a listener with thousands of clients (a socket each)' }
    : {
        name: 'open files',
        status: 'warn',
        value: `ulimit -n ${soft}`,
        detail: `under ${FILES_LOW}: a listener runs out of sockets with that many clients`,
        fix: 'ulimit -n 65536',
      }
}

function cpus(): Check {
  const n = availableParallelism()
  const isolated = readText('/sys/devices/system/cpu/isolated') ?? ''
  const value = `${n} CPU${n === 1 ? '' : 's'}${isolated === '' ? '' : `, isolated: ${isolated}`}`
  return n >= 2
    ? { name: 'CPUs', status: 'ok', value, detail: 'a publisher and a reader can each spin on a CPU of its own (benchmarks pin them apart)' }
    : { name: 'CPUs', status: 'warn', value, detail: 'one CPU: spinning readers take turns with publishers (set spinUs: 0)' }
}

function namespaces(): Check {
  const tried = spawnSync('unshare', ['--net', 'true'], { stdio: 'ignore', timeout: 5000 })
  return tried.status === 0
    ? { name: 'network namespaces', status: 'ok', value: 'can be made', detail: 'hosts can be stood in for with namespaces and veth pairs (tests of several hosts)' }
    : {
        name: 'network namespaces',
        status: 'warn',
        value: 'cannot be made',
        detail: 'tests of several hosts (namespaces joined by veth pairs) are skipped',
        fix: 'run as root, or: sudo sysctl -w kernel.unprivileged_userns_clone=1',
      }
}

/** Every look, in the order printed. */
export async function diagnose(): Promise<Check[]> {
  return [await ioUring(), ...(await udpSocket()), await memfd(), devShm(), openFiles(), cpus(), namespaces()]
}
