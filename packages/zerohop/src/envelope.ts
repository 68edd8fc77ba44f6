/**
 * The envelope before each message in a network hub's receive ring (written by the
 * Rust core, `zerohop_net::envelope`): who sent it, when, on which channel, and where
 * its bytes are when they did not fit the slot. The offsets come from the native side.
 */
import { binding } from './native.js'

/** The envelope layout, from the native side (so the two cannot disagree). */
export const ENVELOPE = binding.envelopeLayout()

/** Where a received message came from; see `Hub.recvMessage`. */
export interface MessageInfo {
  /**
   * Network transports: the sender's address, `host:port` (`[v6]:port`). Unix sockets
   * have none: `peer:<n>`, the sender's number on this hub (see `peer` for who it is).
   */
  from?: string
  /** Unix sockets: the sending process, as the kernel says (`SO_PEERCRED`). */
  peer?: { pid: number; uid: number; gid: number }
  /**
   * `nats://`: the subject it was published on (one of those a wildcard subscription
   * matches). Absent for a message read so long after it came that the hub no longer
   * knows its subject (tens of thousands of other subjects since).
   */
  subject?: string
  /** Network transports: the channel it came on (0 for transports with one channel). */
  channel?: number
  /**
   * UDP with `receiveTimestamps`: when the kernel received the datagram (the last
   * fragment's, for a fragmented message), in nanoseconds since the Unix epoch.
   */
  timestampNs?: bigint
}

/** What `Rpc` reads from a received message's envelope besides {@link MessageInfo}. */
export interface RequestInfo extends MessageInfo {
  /** 1 request, 2 reply, 3 failed request, 4 cancelled request (absent: a message). */
  kind?: number
  /** The key pairing a request, its reply and its cancellation. */
  request?: number
}

/**
 * Reads the envelope at `off` into `info`; a message that came on a subject has its
 * number there, which `subjects` names.
 */
export function readEnvelope(dv: DataView, off: number, info: MessageInfo, subjects?: (id: number) => string | undefined): MessageInfo {
  const ts = dv.getBigUint64(off + ENVELOPE.timestamp, true)
  if (ts !== 0n) info.timestampNs = ts
  info.channel = dv.getUint16(off + ENVELOPE.channel, true)
  const kind = dv.getUint8(off + ENVELOPE.kind)
  if (kind !== 0) {
    const r = info as RequestInfo
    r.kind = kind
    r.request = Number(dv.getBigUint64(off + ENVELOPE.request, true))
  }
  const port = dv.getUint16(off + ENVELOPE.port, true)
  const family = dv.getUint8(off + ENVELOPE.family)
  const a = off + ENVELOPE.address
  if (family === 4) {
    info.from = `${dv.getUint8(a)}.${dv.getUint8(a + 1)}.${dv.getUint8(a + 2)}.${dv.getUint8(a + 3)}:${port}`
  } else if (family === 6) {
    const groups: number[] = []
    for (let i = 0; i < 8; i++) groups.push(dv.getUint16(a + 2 * i, false))
    info.from = `[${formatIpv6(groups)}]:${port}`
  } else if (family === 2) {
    const name = subjects?.(dv.getUint32(a, true))
    if (name !== undefined) info.subject = name
  } else if (family === 1) {
    info.from = `peer:${dv.getUint32(off + ENVELOPE.peer, true)}`
    info.peer = { pid: dv.getUint32(a, true), uid: dv.getUint32(a + 4, true), gid: dv.getUint32(a + 8, true) }
  }
  return info
}

/**
 * Where a message's bytes are: in its slot after the envelope, held natively (taken by
 * the key in the envelope), or in the ring's aside area (at the offset in the envelope).
 */
export const Placement = { Inline: 0, Spilled: 1, Aside: 2 } as const

/** Where the bytes of the message at `off` are (a {@link Placement}). */
export function placement(u8: Uint8Array, off: number): number {
  return u8[off + ENVELOPE.placement]!
}

/** The key a spilled message's bytes are taken by, or where an aside one's start in the ring. */
export function spillKey(dv: DataView, off: number): number {
  // Two halves rather than `getBigUint64`, which makes a BigInt each time (keys and
  // offsets stay below 2^53).
  const at = off + ENVELOPE.spillKey
  return dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 0x1_0000_0000
}

/** The length of a spilled or aside message. */
export function spilledLength(dv: DataView, off: number): number {
  return dv.getUint32(off + ENVELOPE.spilledLen, true)
}

/** RFC 5952 text of an IPv6 address (the longest run of two or more zero groups becomes `::`). */
function formatIpv6(groups: number[]): string {
  let [best, bestLen] = [-1, 1]
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) [best, bestLen] = [i, j - i]
    i = j
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(':')
  if (best < 0) return hex(groups)
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`
}
