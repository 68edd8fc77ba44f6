/**
 * `shm://name`: shared memory, published and read from JavaScript with `Atomics` on
 * one external `ArrayBuffer` over the segment (see `shm-ring.ts`); Rust is called only
 * on slow paths (a contended lock, `block` waits, wake-ups of parked peers).
 */
import { copyInto } from '../bytes.js'
import { type Codec, raw } from '../codec.js'
import { BackpressureError, BadOptionError, ClosedError, InvalidStateError, ZerohopError } from '../errors.js'
import { binding, native, type ShmHandle, statusEvent } from '../native.js'
import type { FlowPort, HubStatus, Loan, Port, PortSettings, PublishCounters, StatusEvent } from '../port.js'
import { ShmPublisher, ShmRing, ShmSubscriber, expiryWord, tooLarge } from '../shm-ring.js'
import { RateLimiter } from '../rate.js'
import { StructCodec, type StructView } from '../struct.js'
import { CopyLoan } from './copy-loan.js'

/** The options only `shm://` hubs have. */
export interface ShmOptions {
  /** How many subscribers may attach at once (default 64). Fixed when the segment is created. */
  maxSubscribers?: number
  /**
   * Bytes of the segment's payload pool (a multiple of 64; default none), where
   * messages longer than a slot go, up to this size: `publish` copies them there,
   * `loan(size)` and `borrow()` are views of it. Fixed when the segment is created.
   */
  poolSize?: number
  /**
   * The largest message this hub publishes, in bytes (default 16 MiB, or a slot or the
   * pool if larger; at most 1 GiB). One longer than the pool (or a slot, without one)
   * takes the side path: the publisher keeps it in a sealed memfd of its own until every
   * subscriber has read it, in order with the rest; a reader fetches it over the
   * publisher's `0600` Unix socket and reads it in place (`borrow()`: a view of its own
   * mapping). `close()` lingers until such messages are read.
   */
  maxMessageSize?: number
  /**
   * How often, in milliseconds, the hub looks who opened, closed or died on the
   * segment, for its status events about them (default 1000; 0: no such events).
   */
  heartbeatMs?: number
  /**
   * The ring's fill (see `hub.fill()`) at which `onWaterMark` says `'high'` (default
   * 0.8), and at or below which it then says `'low'` (default 0.25, or half of
   * `highWater` when that is lower). Also what `batchHint()` scales by.
   */
  highWater?: number
  lowWater?: number
  /**
   * Make the segment with `memfd_create` (also `shm://name?memfd`): it has no file in
   * `/dev/shm`, and its memory goes with its last holder however they die. Joiners get
   * it from a holder over a `0600` Unix socket there, after a check that they run as
   * the same user. Every hub of the segment must ask for it; `Hub.list()` does not
   * list such segments.
   */
  memfd?: boolean
  /**
   * The work group this hub reads in (1 to 32 bytes): the hubs of a segment that open
   * it with the same `group` share its messages, each read by exactly one of them (the
   * others go on reading everything). A member takes a message from its group as it
   * reads it, so one that stops or dies holds nothing back: the next message goes to
   * another. Publishers wait for the group (`block`), not for each member. What a
   * member publishes on the same name is shared too (it may come back to it);
   * `borrow()` gives a member a copy, and it grants no credits.
   */
  group?: string
}

/**
 * A hub collected with a loan still open would keep its sequence number claimed, and
 * every reader of the segment would wait at it. The registry's held value is the loan (which
 * does not reference the port), so the loan can be aborted after the port is gone.
 */
const abandonedLoans = new FinalizationRegistry<{ loan: ShmLoan<unknown> | undefined }>((held) => {
  if (held.loan?.open) held.loan.abort()
})

/** Opens (or creates) the segment of `url` with `options` (the codec already taken out). */
export function openShm<T>(url: string, options: object, codec: Codec<T> | StructCodec<T>): Port<T> {
  const handle = native(() => binding.ShmHandle.open(url, options))
  try {
    return new ShmPort<T>(handle, codec)
  } catch (e) {
    native(() => handle.close())
    throw e
  }
}

/**
 * What a port over a shared-memory segment does whatever it carries (`ShmPort`'s
 * messages, `Rpc`'s requests): a reader's doorbell rung by the segment's own wake-ups,
 * no socket to pump or address to bind, nothing on its way once published.
 */
export abstract class SegmentPort {
  abstract readonly ring: ShmRing
  abstract readonly settings: PortSettings
  /** The reader's bell rings the doorbell on this loop (see `setDoorbell`), and holds the loop while armed. */
  armKeepsLoopAlive = false
  readonly peers = undefined

  flush(): void {}

  pump(): number {
    return 0
  }

  spilled(): undefined {
    return undefined
  }

  /**
   * Where the segment has a directory, the reader's bell rings the doorbell from this
   * event loop, and nothing spins for the reader: the hub polls for `spinUs` itself
   * before it arms. Elsewhere a waiter thread spins, parks, and rings through a
   * threadsafe function.
   */
  setDoorbell(ring: () => void): void {
    native(() => this.ring.handle.setDoorbell(ring))
    this.armKeepsLoopAlive = this.ring.handle.ringsBell()
  }

  arm(cursor: number): void {
    native(() => this.ring.handle.arm(cursor, this.settings.spinUs))
  }

  disarm(): void {
    this.ring.handle.disarm()
  }

  localAddress(): undefined {
    return undefined
  }

  details(): undefined {
    return undefined
  }

  linger(_lingerMs: number): Promise<boolean> {
    return Promise.resolve(true) // in the segment already: nothing is on its way
  }
}

class ShmPort<T> extends SegmentPort implements Port<T> {
  readonly transport = 'shm'
  readonly settings: PortSettings
  readonly maxMessageSize: number
  readonly maxStructSize: number
  readonly ring: ShmRing
  readonly subscriber: ShmSubscriber | undefined
  readonly envelope = 0
  /** A reader with a bell polls for `spinUs` itself (see `setDoorbell`). */
  get pollsOnCallingThread(): boolean {
    return this.armKeepsLoopAlive
  }
  /** Shared memory says nothing of where a message came from. */
  readInfo(): void {}
  readonly requests = undefined
  readonly flow: FlowPort
  private readonly pub: ShmPublisher | undefined
  /** The rate limit, kept here since shared memory publishes from JavaScript. */
  private readonly limiter: RateLimiter | undefined
  private readonly codec: Codec<T> | StructCodec<T>
  private readonly struct: StructCodec<T> | undefined
  private nativePublisher = false
  private closed = false
  /** The port's one loan object, reused by every `loan()`. */
  private openLoan: ShmLoan<T> | undefined
  /** The port's loan of a message too long for the pool (see `CopyLoan`). */
  private copyLoan: CopyLoan<T> | undefined
  /** What the finalization registry sees of this port: only its loan. */
  private readonly gcState: { loan: ShmLoan<unknown> | undefined } = { loan: undefined }

  constructor(handle: ShmHandle, codec: Codec<T> | StructCodec<T>) {
    super()
    this.settings = native(() => handle.settings()) as PortSettings
    this.ring = new ShmRing(handle)
    // (Longer than a slot: through the payload pool, and longer than that the side path.)
    this.maxMessageSize = native(() => handle.maxMessageSize())
    this.maxStructSize = Math.min(this.ring.slotSize, this.maxMessageSize)
    this.codec = codec
    this.struct = codec instanceof StructCodec ? codec : undefined
    const role = this.settings.role
    this.subscriber = role === 'publisher' ? undefined : new ShmSubscriber(this.ring)
    this.pub =
      role === 'subscriber'
        ? undefined
        : new ShmPublisher(this.ring, this.settings.backpressure, this.settings.publishTimeoutMs, this.subscriber?.entry)
    this.limiter = RateLimiter.of(this.settings, this.settings.backpressure, this.settings.publishTimeoutMs)
    if (this.pub !== undefined) {
      this.pub.large = (bytes) => this.publishLarge(bytes)
      this.pub.ttlMs = this.settings.ttlMs ?? 0
      this.pub.inSlot = this.maxStructSize // (what a slot holds, within the limit)
    }
    const [high, low] = native(() => handle.waterMarks()) as [number, number]
    const pub = this.pub
    this.flow = {
      waterMarks: [high, low],
      watchHighWater: (onHigh) => {
        pub?.watchHighWater(high, onHigh)
        return pub !== undefined
      },
      grantCredits: (n) => {
        if (this.closed) throw new ClosedError('the hub is closed')
        if (this.subscriber === undefined) throw new InvalidStateError("this hub was opened with role 'publisher' and has no credits to grant")
        return native(() => handle.grantCredits(n))
      },
      credits: () => (this.closed ? undefined : (native(() => handle.credits()) ?? undefined)),
    }
  }

  private publisher(): ShmPublisher {
    const pub = this.pub
    if (pub === undefined || this.closed || this.loanOpen) return this.publisherError()
    return pub
  }

  private publisherError(): never {
    if (this.closed) throw new ClosedError('the hub is closed')
    if (!this.pub) throw new InvalidStateError("this hub was opened with role 'subscriber' and cannot publish")
    throw new InvalidStateError('a loan is open on this hub; commit or abort it first')
  }

  get loanOpen(): boolean {
    return this.openLoan?.open === true || this.copyLoan?.open === true
  }

  /** Until subscribers have read what went on the side path (this publisher holds it till then). */
  override async linger(lingerMs: number): Promise<boolean> {
    const until = Date.now() + lingerMs
    while (this.nativePublisher && !this.closed && !native(() => this.ring.handle.linger(0))) {
      if (Date.now() >= until) return false
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
    return true
  }

  publish(value: T, channel: number): boolean {
    if (channel !== 0) throw new BadOptionError(`shm:// hubs have one channel, 0; got ${String(channel)}`)
    const pub = this.publisher()
    if (this.limiter) return this.publishLimited(pub, this.limiter, value)
    if (this.struct) return this.publishStruct(pub, this.struct, value)
    // The raw codec inline: one call less on the hottest path (encode only validates).
    if (this.codec === raw && value instanceof Uint8Array) return pub.publishBytes(value)
    return pub.publishBytes(this.codec.encode(value))
  }

  publishExpiring(value: T, channel: number, expiresAtMs: number): boolean {
    // (A slot's expiry word is compared modulo 2^32 ms.)
    if (expiresAtMs - Date.now() >= 2 ** 31) throw new BadOptionError('ttlMs over shm:// is at most 2^31 - 1 ms (24 days)')
    const pub = this.publisher()
    pub.expiry = expiryWord(expiresAtMs)
    try {
      return this.publish(value, channel)
    } finally {
      pub.expiry = 0
    }
  }

  /** `publish` under a rate limit: the message meets it with its size first. */
  private publishLimited(pub: ShmPublisher, limiter: RateLimiter, value: T): boolean {
    if (this.struct) return limiter.admit(this.struct.size) && this.publishStruct(pub, this.struct, value)
    const bytes = this.codec === raw && value instanceof Uint8Array ? value : this.codec.encode(value)
    return limiter.admit(bytes.length) && pub.publishBytes(bytes)
  }

  /** `value`'s size (encoding it only for a byte limit). */
  private sizeOf(value: T): number {
    if (this.struct) return this.struct.size
    if (value instanceof Uint8Array) return value.length
    return this.settings.rateLimitBytes ? this.codec.encode(value).length : 0
  }

  hasRoom(value: T): boolean {
    const pub = this.publisher()
    return (!this.limiter || this.limiter.hasRoom(this.sizeOf(value))) && pub.roomNow()
  }

  /** Each message of a batch meets the rate limit: how many were accepted. */
  private eachLimited(count: number, publishOne: (i: number) => boolean): number {
    let n = 0
    for (let i = 0; i < count; i++) {
      try {
        if (publishOne(i)) n++
      } catch (e) {
        if (e instanceof ZerohopError && e.code === 'ERR_BACKPRESSURE') break
        throw e
      }
    }
    return n
  }

  private publishStruct(pub: ShmPublisher, struct: StructCodec<T>, value: T): boolean {
    const lo = pub.claim()
    if (lo < 0) return false
    try {
      struct.write(this.ring.dv, this.ring.slotOffset(lo) + this.ring.PAYLOAD, value)
    } catch (e) {
      // Nothing published: the slot is passed over.
      pub.abandon(lo)
      pub.done(0, 0)
      throw e
    }
    pub.commit(lo, struct.size)
    pub.done(1, struct.size)
    return true
  }

  publishBatch(values: readonly T[]): number {
    const pub = this.publisher()
    if (this.limiter) return this.eachLimited(values.length, (i) => this.publish(values[i]!, 0))
    const ring = this.ring
    const codec = this.codec
    const struct = this.struct
    const bytesOnly = codec === raw && !struct
    let n = 0
    let bytes = 0
    try {
      while (n < values.length) {
        // As many numbers at once as there is room for: one claim for the run.
        const first = pub.claim(values.length - n)
        if (first < 0) {
          pub.counters.dropped += values.length - n - 1 // claim() counted one
          break
        }
        const count = pub.claimed
        const expiry = pub.expiryNow()
        // Slots committed so far of this run (the first's stamp goes last, in `endRun`).
        let committed = 0
        // Passes the run's slots from `from` over, and ends it.
        const passOver = (from: number): void => {
          for (let j = from; j < count; j++) pub.abandon((first + j) >>> 0)
          if (committed > 0) pub.endRun(first)
          committed = 0
        }
        let i = 0
        if (bytesOnly) {
          // Byte messages that fit a slot, in one loop; the general path below takes
          // over at the first that does not (or at the end of the run).
          i = pub.writeRawRun(values, n, first, count, expiry)
          n += i
          committed = i
          bytes += pub.runBytes
          if (pub.runError !== undefined) {
            const e = pub.runError
            pub.runError = undefined
            passOver(i)
            throw e
          }
        }
        for (; i < count; i++, n++) {
          const lo = (first + i) >>> 0
          const off = ring.slotOffset(lo) + ring.PAYLOAD
          let len: number
          try {
            if (struct) {
              struct.write(ring.dv, off, values[n]!)
              len = struct.size
            } else {
              const b = codec.encode(values[n]!)
              if (b.length > pub.inSlot) {
                if (b.length > this.maxMessageSize) throw tooLarge(b.length, this.maxMessageSize)
                // Longer than a slot: the rest of the run is passed over, this one goes
                // through the pool or the side path (after them, so in order), and a new
                // run starts.
                passOver(i)
                if (!this.largeRaw(b)) {
                  pub.counters.dropped += values.length - n // (drop_new: this one and the rest)
                  pub.done(n, bytes)
                  return n
                }
                n++
                bytes += b.length
                break
              }
              copyInto.call(ring.u8, b, off)
              len = b.length
            }
          } catch (e) {
            // This slot and the rest of the run are passed over.
            passOver(i)
            throw e
          }
          pub.commitInRun(lo, len, expiry, i === 0)
          committed++
          bytes += len
        }
        if (committed > 0) pub.endRun(first)
      }
    } catch (e) {
      pub.done(n, bytes)
      if (!(e instanceof ZerohopError && e.code === 'ERR_BACKPRESSURE')) throw e
      return n
    }
    pub.done(n, bytes)
    return n
  }

  /** The Rust publisher of this hub (`publishPacked`, the payload pool), set up once. */
  private attachNative(): void {
    if (this.nativePublisher) return
    native(() => this.ring.handle.attachPublisher(this.subscriber?.entry))
    this.nativePublisher = true
  }

  /** One message longer than a slot, through the payload pool or the side path; counted by the caller. */
  private largeRaw(bytes: Uint8Array): boolean {
    this.attachNative()
    // (Its own expiry, if it has one; the Rust publisher applies the hub's `ttlMs` itself.)
    return native(() => this.ring.handle.publishLarge(bytes, this.pub?.expiry))
  }

  /** One message longer than a slot, through the payload pool or the side path. */
  private publishLarge(bytes: Uint8Array): boolean {
    const c = this.pub!.counters
    const sent = this.largeRaw(bytes)
    if (sent) {
      c.published++
      c.publishedBytes += bytes.length
    } else {
      c.dropped++
    }
    return sent
  }

  publishPacked(packed: Uint8Array, messageSize: number): number {
    const pub = this.publisher()
    if (messageSize > this.ring.slotSize) throw tooLarge(messageSize, this.ring.slotSize)
    const limiter = this.limiter
    if (limiter) {
      const each = (i: number) => limiter.admit(messageSize) && pub.publishBytes(packed.subarray(i * messageSize, (i + 1) * messageSize))
      return this.eachLimited(packed.byteLength / messageSize, each)
    }
    this.attachNative()
    const n = native(() => this.ring.handle.publishPacked(packed, messageSize))
    pub.counters.published += n
    pub.counters.publishedBytes += n * messageSize
    if (this.settings.backpressure === 'drop_new') pub.counters.dropped += packed.byteLength / messageSize - n
    return n
  }

  loan(size?: number): Loan<T> {
    const pub = this.publisher()
    if (!this.struct && this.codec.name !== 'raw') {
      throw new InvalidStateError(`loan() writes bytes in place; it needs the raw codec or a struct codec, not ${this.codec.name}`)
    }
    const ring = this.ring
    const need = loanSize(size, ring.slotSize, this.maxMessageSize)
    // A loan meets the rate limit as the message it is for (at most `need` bytes); one
    // it drops cannot be written: ERR_BACKPRESSURE, as a full ring under `fail_fast`.
    if (this.limiter && !this.limiter.admit(need)) throw new BackpressureError("over the hub's rate limit: the message is dropped")
    if (this.openLoan === undefined) {
      this.openLoan = new ShmLoan<T>(pub, ring, this.struct)
      this.gcState.loan = this.openLoan as ShmLoan<unknown>
      abandonedLoans.register(this, this.gcState)
    }
    const loan = this.openLoan
    if (need > ring.poolSize && need > ring.slotSize) {
      // On the side path: a copy in any case, so a buffer of the port's own.
      const copy = (this.copyLoan = CopyLoan.start(this.copyLoan, need, this.struct, (bytes) => this.publishLarge(bytes)))
      return copy
    }
    if (need > ring.slotSize) {
      // In the payload pool: Rust claims it, the bytes are written here.
      this.attachNative()
      const got = native(() => ring.handle.loanPooled(need))
      if (got === null) throw new InvalidStateError('drop_new: the payload pool is full, no room to loan')
      loan.startPooled(got[0]!, got[1]!, need)
      return loan
    }
    const lo = pub.claim()
    if (lo < 0) throw new InvalidStateError('drop_new: the ring is full, no slot to loan')
    loan.start(lo, ring.slotOffset(lo) + ring.PAYLOAD)
    return loan
  }

  status(): HubStatus {
    return this.closed ? 'closed' : 'connected'
  }

  readonly statusOnDemand = true

  onStatus(listener: (event: StatusEvent, own: boolean) => void): void {
    // Connected until closed, which the hub reports itself; the events are about the
    // segment's other members (see `zerohop::shm_events`).
    native(() => this.ring.handle.onStatus((e) => listener(statusEvent(e), false)))
  }

  counters(): PublishCounters {
    const c = this.pub?.counters ?? { published: 0, publishedBytes: 0, dropped: 0, blocked: 0 }
    return this.limiter ? { ...c, rateLimited: this.limiter.limited } : c
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    if (this.openLoan?.open) this.openLoan.abort()
    if (this.copyLoan?.open) this.copyLoan.abort()
    this.ring.close()
  }
}

/**
 * The bytes a `loan(size)` asks for, checked: `size` (an integer from 0 up to `max`),
 * or a slot's when not given.
 */
export function loanSize(size: number | undefined, slot: number, max: number): number {
  if (size === undefined) return slot
  if (!Number.isInteger(size) || size < 0) throw new BadOptionError(`loan size must be a non-negative integer, got ${String(size)}`)
  if (size > max) throw tooLarge(size, max)
  return size
}

/** The loan object of a port (reused: valid until `commit()` or `abort()`). */
class ShmLoan<T> implements Loan<T> {
  bytes: Uint8Array = new Uint8Array(0)
  seq = 0
  open = false
  private lo = 0
  /** In the payload pool (longer than a slot): Rust holds the claim. */
  private pooled = false
  private view: (T & StructView) | undefined
  private readonly pub: ShmPublisher
  private readonly ring: ShmRing
  private readonly struct: StructCodec<T> | undefined

  constructor(pub: ShmPublisher, ring: ShmRing, struct: StructCodec<T> | undefined) {
    this.pub = pub
    this.ring = ring
    this.struct = struct
  }

  start(lo: number, off: number): void {
    this.lo = lo
    this.pooled = false
    this.open = true
    this.bytes = this.ring.slotView(lo)
    this.seq = this.pub.lastSeq
    if (this.struct) {
      if (this.view) this.struct.retarget(this.view, off)
      else this.view = this.struct.view(this.ring.dv, off)
    }
  }

  /** A loan of `size` bytes at byte `off` of the payload pool, message `seq` (Rust holds the claim). */
  startPooled(seq: number, off: number, size: number): void {
    this.pooled = true
    this.open = true
    this.seq = seq
    this.bytes = this.ring.u8.subarray(off, off + size)
  }

  get value(): T {
    if (this.view === undefined || this.pooled) throw new InvalidStateError('loan.value needs a struct codec; write loan.bytes instead')
    return this.view
  }

  commit(len?: number): void {
    if (!this.open) throw new InvalidStateError('this loan was already committed or aborted')
    const max = this.bytes.length
    const n = len ?? (this.struct && !this.pooled ? this.struct.size : max)
    if (!Number.isInteger(n) || n < 0) throw new BadOptionError(`commit length must be a non-negative integer, got ${n}`)
    if (n > max) throw tooLarge(n, max)
    this.open = false
    if (this.pooled) {
      native(() => this.ring.handle.commitPooled(n))
      this.pub.counters.published++
      this.pub.counters.publishedBytes += n
      return
    }
    this.pub.commit(this.lo, n)
    this.pub.done(1, n)
  }

  abort(): void {
    if (!this.open) throw new InvalidStateError('this loan was already committed or aborted')
    this.open = false
    if (this.pooled) {
      native(() => this.ring.handle.abortPooled())
      return
    }
    this.pub.abandon(this.lo) // nothing published: readers pass over its slot
    this.pub.done(0, 0)
  }
}
