/**
 * The shared-memory ring, driven from JavaScript without crossing into Rust.
 *
 * This mirrors `crates/zerohop-shm/src/ring.rs` word for word (read its module docs
 * for the protocol): slots carry a stamp `2·(seq+1)` once message `seq` is committed
 * and one less while it is written; readers copy optimistically and re-check the
 * stamp. All shared words are accessed with `Atomics` on an `Int32Array` over the
 * segment's external `ArrayBuffer`, so the JavaScript memory model orders them like
 * the Rust side's SeqCst atomics. Rust is called only on slow paths: a slot whose
 * earlier lap is unfinished, the repair lock of an unlisted publisher, `block` waits,
 * futex wake-ups when a peer is parked, and messages longer than a slot (the payload
 * pool, and past it the side path: see `crates/zerohop-shm/src/side.rs`).
 *
 * Sequence numbers are JavaScript numbers (exact up to 2^53: decades at 10 M msg/s);
 * the 32-bit words in memory hold their low halves.
 */
import { copyInto } from './bytes.js'
import { type ShmHandle, type ShmLayoutInfo, type ShmOffsets, binding, native } from './native.js'
import { BackpressureError, MessageTooLargeError } from './errors.js'

/** `copyInto`, a constant of this module (see `bytes.ts`). */
const copy = copyInto

const TWO_32 = 4294967296
/** A committed slot's length word when it holds no message (`SKIP_LEN`, as an int32). */
const SKIP_LEN = -1
/** What a reader's look at a message outside its slot returns when it moved past it instead. */
const LAPPED = -2
/** Settled already: what a reader's deferred cursor store is chained to. */
const RESOLVED = Promise.resolve()

/**
 * On x86 (TSO) loads are not reordered with loads, nor stores with stores, so the
 * seqlock needs nothing beyond `Atomics`. On weaker CPUs (arm64) V8's `Atomics.load` is
 * a load-acquire, which lets earlier plain payload loads complete after it: a reader
 * there fences with a read-modify-write before it re-checks a stamp.
 */
const READER_FENCE = process.arch !== 'x64' && process.arch !== 'ia32'

/** What a publisher does when the slowest subscriber is a whole ring behind. */
export type BackpressurePolicy = 'drop_old' | 'drop_new' | 'block' | 'fail_fast'

let offsetsCache: ShmOffsets | undefined
function offsets(): ShmOffsets {
  return (offsetsCache ??= binding.shmOffsets())
}

/** Views over one mapping of a segment, shared by its publisher and subscriber. */
export class ShmRing {
  readonly handle: ShmHandle
  readonly buffer: ArrayBuffer
  readonly i32: Int32Array
  readonly u8: Uint8Array
  readonly dv: DataView
  readonly layout: ShmLayoutInfo
  readonly capacity: number
  readonly mask: number
  readonly slotSize: number
  readonly stride: number
  readonly headerLen: number
  // Word indexes (byte offset / 4) of header fields.
  readonly TAIL_LO: number
  readonly TAIL_HI: number
  readonly REPAIR_LOCK: number
  /** The payload pool: its bytes (0: none), its unit's bytes and its units, where it starts, and its head's word. */
  readonly poolSize: number
  readonly poolUnit: number
  readonly poolUnits: number
  readonly poolOffset: number
  readonly POOL_HEAD: number
  /** Word index of claim line 0, and words from one line to the next. */
  readonly CLAIMS: number
  readonly CLAIM_STRIDE: number
  readonly WAITERS: number
  readonly BELLS: number
  readonly SPACE_WAITERS: number
  readonly CREDIT_GEN: number
  readonly SUBS: number
  readonly SUB_STRIDE: number
  readonly SUB_PID: number
  readonly SUB_CURSOR: number
  readonly SUB_CREDITED: number
  readonly SUB_CREDIT_LIMIT: number
  /** Word offset of an entry's work-group word: > 0 for a member (publishers wait for its group instead). */
  readonly SUB_GROUP: number
  /** Byte offset of the payload in a slot, and word offsets of a slot's length and origin. */
  readonly PAYLOAD: number
  readonly LEN: number
  readonly ORIGIN: number
  /** Word offset of a slot's expiry (`ttlMs`: wall-clock ms modulo 2^32; 0: never). */
  readonly EXPIRY: number
  private slotViews: (Uint8Array | undefined)[]
  /** The last `payloadView` of each slot, and the bytes of the slot it spans. */
  private payloadViews: (Uint8Array | undefined)[]
  private payloadSpans: Int32Array | undefined

  constructor(handle: ShmHandle) {
    this.handle = handle
    this.layout = native(() => handle.layout())
    this.buffer = native(() => handle.buffer())
    this.i32 = new Int32Array(this.buffer)
    this.u8 = new Uint8Array(this.buffer)
    this.dv = new DataView(this.buffer)
    this.capacity = this.layout.capacity
    this.mask = this.capacity - 1
    this.slotSize = this.layout.slotSize
    this.stride = this.layout.slotStride
    this.headerLen = this.layout.headerLen
    const o = offsets()
    this.TAIL_LO = o.tailLo >> 2
    this.TAIL_HI = o.tailHi >> 2
    this.REPAIR_LOCK = o.repairLock >> 2
    this.poolSize = this.layout.poolSize
    this.poolUnit = o.poolUnit
    this.poolUnits = this.poolSize / o.poolUnit
    this.poolOffset = this.layout.poolOffset
    this.POOL_HEAD = o.poolHead >> 2
    this.CLAIMS = o.claims >> 2
    this.CLAIM_STRIDE = o.claimEntry >> 2
    this.WAITERS = o.waiters >> 2
    this.BELLS = o.bells >> 2
    this.SPACE_WAITERS = o.spaceWaiters >> 2
    this.CREDIT_GEN = o.creditGen >> 2
    this.SUBS = o.subscribers >> 2
    this.SUB_STRIDE = o.subEntry >> 2
    this.SUB_PID = o.subPid >> 2
    this.SUB_CURSOR = o.subCursorLo >> 2
    this.SUB_CREDITED = o.subCredited >> 2
    this.SUB_CREDIT_LIMIT = o.subCreditLimitLo >> 2
    this.SUB_GROUP = o.subGroup >> 2
    this.PAYLOAD = o.slotPayload
    this.LEN = o.slotLen >> 2
    this.ORIGIN = o.slotOrigin >> 2
    this.EXPIRY = o.slotExpiry >> 2
    // A holey array, filled lazily: `Array.from` would allocate every entry up front.
    // oxlint-disable-next-line unicorn/no-new-array
    this.slotViews = new Array(this.capacity)
    // oxlint-disable-next-line unicorn/no-new-array
    this.payloadViews = new Array(this.capacity)
  }

  /** Byte offset of the slot holding sequence number `lo` (low 32 bits suffice). */
  /**
   * Whether a reader waits to be woken after a commit (parked on the futex, or on its
   * bell unrung): then the publisher calls `notify()`. A commit's stamp is stored first
   * (`Atomics.store`, sequentially consistent): the publisher's half of the handshake.
   */
  someoneWaits(i32: Int32Array): boolean {
    return Atomics.load(i32, this.WAITERS) !== 0 || Atomics.load(i32, this.BELLS) !== 0
  }

  slotOffset(lo: number): number {
    return this.headerLen + (lo & this.mask) * this.stride
  }

  /** A cached `Uint8Array` over the payload area of the slot of `lo`. */
  slotView(lo: number): Uint8Array {
    const i = lo & this.mask
    let v = this.slotViews[i]
    if (v === undefined) {
      const start = this.headerLen + i * this.stride + this.PAYLOAD
      v = this.slotViews[i] = this.u8.subarray(start, start + this.slotSize)
    }
    return v
  }

  /**
   * A `Uint8Array` over bytes `from` to `to` of the payload area of the slot of `lo`:
   * the one returned last time for this slot when the span is the same (as it is for
   * messages of one size), since making a view costs more than reading a small message.
   */
  payloadView(lo: number, from: number, to: number): Uint8Array {
    const i = lo & this.mask
    const spans = (this.payloadSpans ??= new Int32Array(this.capacity * 2))
    const at = 2 * i
    // (Both compared every time, also in the ring's first lap, where no view is there
    // yet: a comparison the JIT never saw run throws away the code it is inlined in, a
    // reader's whole loop, once the second lap reaches it.)
    const same = spans[at] === from
    const sameTo = spans[at + 1] === to
    const v = this.payloadViews[i]
    if (same && sameTo && v !== undefined) return v
    spans[at] = from
    spans[at + 1] = to
    return (this.payloadViews[i] = this.slotView(lo).subarray(from, to))
  }

  /**
   * One look at the subscriber table, leaving out entry `exclude`: how many messages
   * before `lo` (the tail's low 32 bits) the slowest subscriber has not read (`lag`),
   * and, with `credits`, how many from `lo` the subscribers that hold publishers to
   * credits still granted, the fewest of them (`credit`; `Infinity` if none does).
   */
  scan(lo: number, exclude: number | undefined, credits: boolean): { lag: number; credit: number } {
    const i32 = this.i32
    let lag = 0
    let credit = Infinity
    for (let i = 0; i < this.layout.maxSubscribers; i++) {
      if (i === exclude) continue
      const base = this.SUBS + i * this.SUB_STRIDE
      if (Atomics.load(i32, base + this.SUB_PID) === 0) continue
      // A work group's member: its group's entry is what holds back.
      if (Atomics.load(i32, base + this.SUB_GROUP) > 0) continue
      // (None if it is past `lo`, as when other publishers moved the tail on since.)
      const behind = Math.max(0, (lo - Atomics.load(i32, base + this.SUB_CURSOR)) | 0)
      if (behind > lag) lag = behind
      if (credits && Atomics.load(i32, base + this.SUB_CREDITED) !== 0) {
        // What is left of the grant (none once passed), compared in 32 bits.
        const left = Math.max(0, (Atomics.load(i32, base + this.SUB_CREDIT_LIMIT) - lo) | 0)
        if (left < credit) credit = left
      }
    }
    return { lag, credit }
  }

  /** The slowest reader's lag, at most the whole ring. */
  private fullSlots(): number {
    return Math.min(this.capacity, this.scan(Atomics.load(this.i32, this.TAIL_LO) >>> 0, undefined, false).lag)
  }

  /** The ring's free bytes: the slots before its slowest reader is a whole ring behind, times the slot size. */
  bytesAvailable(): number {
    return (this.capacity - this.fullSlots()) * this.slotSize
  }

  /** How full the ring is, 0 to 1: the slowest reader's lag as a share of its slots. */
  fill(): number {
    return this.fullSlots() / this.capacity
  }

  /**
   * The 64-bit tail as a number: every sequence number below it is claimed (not
   * necessarily committed yet). Publishers move both its words in one step (Rust's
   * 64-bit compare-and-swap), so a high word that did not change around the low
   * word's load goes with it.
   */
  tail(): number {
    const i32 = this.i32
    for (;;) {
      const hi = Atomics.load(i32, this.TAIL_HI)
      const lo = Atomics.load(i32, this.TAIL_LO)
      if (Atomics.load(i32, this.TAIL_HI) === hi) return (hi >>> 0) * TWO_32 + (lo >>> 0)
    }
  }

  /** Detaches the buffer and closes the handle (every view becomes empty). */
  close(): void {
    this.slotViews = []
    native(() => this.handle.close(this.buffer))
  }
}

/** Counters of a publisher. */
export interface PublisherCounters {
  published: number
  publishedBytes: number
  dropped: number
  blocked: number
}

/**
 * Writes messages into the ring (the JavaScript twin of `zerohop_shm::Publisher`): each
 * message claims its sequence number with a compare-and-swap of the tail, announced
 * first in the hub's claim line (so that readers can tell a live claim from a dead
 * publisher's hole), then takes its slot with a compare-and-swap of the stamp, writes,
 * and commits. No lock: publishers in other processes go on meanwhile. A hub without a
 * claim line (more than 32 publish) holds the repair lock from claim to commit instead.
 */
export class ShmPublisher {
  readonly counters: PublisherCounters = { published: 0, publishedBytes: 0, dropped: 0, blocked: 0 }
  /** The expiry word of what is published now (`ttlMs`: see {@link expiryWord}; 0: never). */
  expiry = 0
  /** A time to live for every message published without an expiry of its own (ms; 0: none). */
  ttlMs = 0
  /** The 64-bit sequence number of the last claim. */
  lastSeq = 0
  private readonly ring: ShmRing
  private readonly i32: Int32Array
  private readonly pid: number
  private readonly policy: BackpressurePolicy
  private readonly timeoutMs: number
  /** Subscriber entry of the same hub: backpressure does not wait for it. */
  private readonly ownEntry: number | undefined
  /** What each message's origin word says: the own entry plus one (0: none), so the hub skips its own. */
  private readonly origin: number
  /** Word indexes of this hub's claim line (first, count), -1 when it has none. */
  private readonly claimFirst: number
  private readonly claimCount: number
  /** An unlisted publisher holds the repair lock (from a claim to its commit). */
  private locked = false
  /**
   * The run of sequence numbers this publisher claimed last, one after another with
   * nobody else's between them: a slot whose previous lap lies in it was written, and
   * committed, by this publisher, so taking it needs no compare-and-swap (the
   * one-publisher path; see `run_start` in ring.rs).
   */
  private runStart = 0
  private runEnd = 0
  /** A scan proved every subscriber less than a ring behind the slots about to be taken. */
  private unmarked = false
  /** Sequence number (64-bit, as a number) below which the last scan proved there is room. */
  private roomUntil = 0
  private roomKnown = false
  /** The segment's credit generation when `roomUntil` was found (a first grant changes it). */
  private creditGen = 0
  /**
   * Watching the water marks ({@link watchHighWater}): the slowest subscriber's lag, in
   * slots, that counts as high water, and what is told when it is reached.
   */
  private highSlots = Infinity
  private onHighWater: ((fill: number) => void) | undefined

  constructor(ring: ShmRing, policy: BackpressurePolicy, timeoutMs: number, ownEntry: number | undefined) {
    this.ring = ring
    this.i32 = ring.i32
    this.pid = process.pid
    this.policy = policy
    this.timeoutMs = timeoutMs
    this.ownEntry = ownEntry
    this.origin = ownEntry === undefined ? 0 : ownEntry + 1
    const line = native(() => ring.handle.publisherLine())
    this.claimFirst = line === null ? -1 : ring.CLAIMS + line * ring.CLAIM_STRIDE + (offsets().claimFirst >> 2)
    this.claimCount = line === null ? -1 : ring.CLAIMS + line * ring.CLAIM_STRIDE + (offsets().claimCount >> 2)
    this.inSlot = ring.slotSize
  }

  /**
   * Claims the next sequence numbers, up to `max` (as many as the room found allows, at
   * least one), and takes their slots; returns the first one's low 32 bits (the count
   * is in {@link claimed}), or -1 when `drop_new` dropped the message (counted).
   * Throws for `fail_fast` and a timed-out wait. The room is checked before the claim,
   * so no claim is given back for want of room; after it, the caller commits or
   * abandons each slot, then calls {@link done}.
   */
  claim(max = 1): number {
    const r = this.ring
    const i32 = this.i32
    for (;;) {
      const lo = Atomics.load(i32, r.TAIL_LO) >>> 0
      if (!this.hasRoom(lo)) {
        // Never wait for room holding the repair lock: readers may need it to go on.
        if (this.locked) this.unlockRepair()
        if (!this.room(lo)) return -1
      }
      if (this.claimFirst < 0 && !this.locked) {
        this.lockRepair()
        continue // the tail, and the room, under the lock
      }
      // (The high word read before the claim: had it changed, so would the low word.)
      const seq = (Atomics.load(i32, r.TAIL_HI) >>> 0) * TWO_32 + lo
      // (One at a time where the low word would wrap: the whole tail moves, in Rust.
      // At most a ring at once: every slot of a claim is taken before any is written.)
      const wraps = lo + max > 0xffffffff
      const room = this.policy === 'drop_old' ? r.capacity : this.roomUntil - seq
      const count = wraps ? 1 : Math.max(1, Math.min(max, room, r.capacity))
      if (this.claimFirst >= 0) {
        // Plain stores: the compare-and-swap below publishes them to whoever sees its tail.
        i32[this.claimCount] = count
        i32[this.claimFirst] = (((lo + 1) * 2) | 0) - 1
      }
      const won = wraps ? native(() => r.handle.claimWrapping(seq)) : Atomics.compareExchange(i32, r.TAIL_LO, lo | 0, (lo + count) | 0) === (lo | 0)
      if (!won) {
        // Another publisher claimed first: the announcement goes (this one may wait for
        // room next, and a reader at the winner's hole would wait for a live claim).
        if (this.claimFirst >= 0) Atomics.store(i32, this.claimFirst, 0)
        continue
      }
      this.lastSeq = seq
      this.claimed = count
      if (seq !== this.runEnd) this.runStart = seq
      this.runEnd = seq + count
      // Past this publisher's first lap of its run, with no reader a ring behind, a
      // slot's previous lap is its own and nothing marks it (see `take`): then for
      // every slot of the claim, since the first one's sequence number is the lowest.
      const ownLaps = this.unmarked && (this.runStart === 0 || seq >= this.runStart + r.capacity)
      if (!ownLaps) for (let i = 0; i < count; i++) this.take((lo + i) >>> 0, seq + i)
      return lo
    }
  }

  /** How many sequence numbers the last {@link claim} took. */
  claimed = 0

  /**
   * Publishes a message longer than {@link inSlot} through the payload pool or the side
   * path (the port's native publisher, which checks it against the largest message: one
   * call into Rust is nothing beside a copy that size).
   */
  large: ((bytes: Uint8Array) => boolean) | undefined

  /** The longest message written into a slot here: the slot size, or the largest message if less. */
  inSlot: number

  /**
   * Takes claimed slot `lo` (of sequence number `seq`): its stamp goes from the
   * previous lap's committed one (0 in the first lap) to `lo`'s odd one. If that lap is
   * unfinished, Rust waits for it.
   */
  private take(lo: number, seq: number): void {
    const r = this.ring
    const si = r.slotOffset(lo) >> 2
    if (this.runStart === 0 || seq >= this.runStart + r.capacity) {
      // Its previous lap is this publisher's own, committed: nobody else writes it.
      // The odd stamp only warns readers still reading that lap, and a scan that found
      // every subscriber less than a ring behind proves there is none.
      if (!this.unmarked) {
        Atomics.store(this.i32, si, (((lo + 1) * 2) | 0) - 1)
        // arm64: a store-release does not hold back later plain stores; a load-acquire does.
        if (READER_FENCE) Atomics.load(this.i32, si)
      }
      return
    }
    // The previous lap's committed stamp; 0 in the first lap.
    const prior = seq >= r.capacity ? ((lo - r.capacity + 1) * 2) | 0 : 0
    if (Atomics.compareExchange(this.i32, si, prior, (((lo + 1) * 2) | 0) - 1) !== prior) this.takeSlow(seq)
  }

  private takeSlow(seq: number): void {
    try {
      native(() => this.ring.handle.takeSlot(seq, this.timeoutMs))
    } catch (e) {
      // What it leaves is not committed (the slots of this claim, taken or not, are
      // holes for readers to repair: Rust stopped announcing the claim), and no
      // later lap of it is known free.
      this.runStart = this.runEnd
      this.unlockRepair()
      throw e
    }
  }

  private lockRepair(): void {
    if (Atomics.compareExchange(this.i32, this.ring.REPAIR_LOCK, 0, this.pid) !== 0) {
      native(() => this.ring.handle.lockRepair(this.pid, this.timeoutMs))
    }
    this.locked = true
  }

  private unlockRepair(): void {
    if (!this.locked) return
    this.locked = false
    Atomics.store(this.i32, this.ring.REPAIR_LOCK, 0)
  }

  /** After the last commit (or abandon) of a publish: `count` messages of `bytes` in all. */
  done(count: number, bytes: number): void {
    this.unlockRepair()
    if (count > 0) {
      this.counters.published += count
      this.counters.publishedBytes += bytes
      if (this.ring.someoneWaits(this.i32)) this.ring.handle.notify()
    }
  }

  /**
   * Applies the backpressure policy before claiming sequence `lo`: true to claim,
   * false to drop (`drop_new`); throws for `fail_fast` and a timed-out `block`.
   */
  room(lo: number): boolean {
    if (this.hasRoom(lo)) return true
    const cap = this.ring.capacity
    const tail = (Atomics.load(this.i32, this.ring.TAIL_HI) >>> 0) * TWO_32 + lo
    // Credits hold back every publisher but a `drop_old` one, which never holds back.
    const credits = this.policy !== 'drop_old'
    this.creditGen = this.i32[this.ring.CREDIT_GEN]!
    let { lag, credit } = this.ring.scan(lo, this.ownEntry, credits)
    this.roomKnown = true
    this.roomUntil = tail
    if (lag >= cap || credit === 0) {
      if (this.policy === 'drop_old') {
        // Lapping: mark slots while writing, and look again a quarter ring later.
        this.reachedHighWater(cap)
        this.unmarked = false
        this.roomUntil = tail + (cap >>> 2)
        return true
      }
      if (this.policy === 'drop_new') {
        this.counters.dropped++
        return false
      }
      if (this.policy === 'fail_fast') {
        throw new BackpressureError(
          lag >= cap
            ? `ring is full: the slowest subscriber is ${lag} messages behind (capacity ${cap})`
            : 'a subscriber has no credits left (it grants more with grantCredits)',
        )
      }
      native(() => this.ring.handle.waitForSpace(tail, this.timeoutMs, this.ownEntry))
      this.counters.blocked++
      this.creditGen = this.i32[this.ring.CREDIT_GEN]!
      ;({ lag, credit } = this.ring.scan(lo, this.ownEntry, true))
    }
    this.unmarked = lag < cap
    // This message brings the ring to high water (unless it is read meanwhile).
    if (lag + 1 >= this.highSlots) this.reachedHighWater(lag + 1)
    // Look again where room or credits end, or at the message that would bring the
    // ring to high water.
    this.roomUntil = tail + Math.max(1, Math.min(cap - lag, credit, this.highSlots - lag - 1))
    return true
  }

  /**
   * Tells `onHigh` (with the fill) when a publish brings the slowest subscriber to
   * `high` of the ring or more; once, until {@link watchHighWater} is called again.
   */
  watchHighWater(high: number, onHigh: (fill: number) => void): void {
    this.highSlots = Math.max(1, Math.ceil(high * this.ring.capacity))
    this.onHighWater = onHigh
    this.roomKnown = false
  }

  private reachedHighWater(lag: number): void {
    const tell = this.onHighWater
    this.highSlots = Infinity
    this.onHighWater = undefined
    tell?.(Math.min(1, lag / this.ring.capacity))
  }

  /** Commits slot `lo` with `len` payload bytes. */
  commit(lo: number, len: number): void {
    const r = this.ring
    const si = r.slotOffset(lo) >> 2
    this.i32[si + r.LEN] = len
    this.i32[si + r.ORIGIN] = this.origin
    this.i32[si + r.EXPIRY] = this.expiryNow()
    Atomics.store(this.i32, si, ((lo + 1) * 2) | 0)
  }

  /**
   * Commits claimed slot `lo`, holding `len` bytes, as one of a run of slots claimed at
   * once (`publishBatch`), its expiry word `expiry`: everything but the stamp of the
   * run's first slot goes with plain stores, and {@link endRun} stores that stamp last,
   * one release store a run instead of one a message (a builtin call, a fifth of a
   * small message's cost). A reader reaches the run's slots through its first, in
   * order: once it sees that stamp it sees everything written before it.
   */
  commitInRun(lo: number, len: number, expiry: number, first: boolean): void {
    const r = this.ring
    const i32 = this.i32
    const si = r.slotOffset(lo) >> 2
    i32[si + r.LEN] = len
    i32[si + r.ORIGIN] = this.origin
    i32[si + r.EXPIRY] = expiry
    if (!first) i32[si] = ((lo + 1) * 2) | 0
  }

  /** Bytes {@link writeRawRun} wrote, and what stopped it, if something threw. */
  runBytes = 0
  runError: unknown = undefined

  /**
   * Writes raw messages `values[from]`, `values[from + 1]`… into the run of `count`
   * slots claimed from `first`, committed as {@link commitInRun} does (the first slot's
   * stamp is {@link endRun}'s), as long as each is a `Uint8Array` that fits a slot: the
   * whole per-message path of a batch in one loop, without a call a message but the
   * copy. How many it wrote (their bytes in `runBytes`); one that threw (a detached
   * buffer) is in `runError`, not written.
   */
  writeRawRun(values: readonly unknown[], from: number, first: number, count: number, expiry: number): number {
    const r = this.ring
    const { u8, mask, stride, headerLen, PAYLOAD, LEN, ORIGIN, EXPIRY } = r
    const i32 = this.i32
    const origin = this.origin
    const inSlot = this.inSlot
    let bytes = 0
    let i = 0
    try {
      for (; i < count; i++) {
        const b = values[from + i] as Uint8Array | null | undefined
        if (b == null) break
        // The length first: its load checks the value's shape once, and the type test
        // after it is then all but free (the other order cost 2-3 ns a message, an
        // eighth of it).
        const len = b.length
        if (!(len <= inSlot) || !(b instanceof Uint8Array)) break
        const lo = (first + i) >>> 0
        const base = headerLen + (lo & mask) * stride
        copy.call(u8, b, base + PAYLOAD)
        const si = base >> 2
        i32[si + LEN] = len
        i32[si + ORIGIN] = origin
        i32[si + EXPIRY] = expiry
        if (i !== 0) i32[si] = ((lo + 1) * 2) | 0
        bytes += len
      }
    } catch (e) {
      this.runError = e
    }
    this.runBytes = bytes
    return i
  }

  /** Ends a run of {@link commitInRun}: its first slot's stamp, `first` its sequence number. */
  endRun(first: number): void {
    Atomics.store(this.i32, this.ring.slotOffset(first) >> 2, ((first + 1) * 2) | 0)
  }

  /** The expiry word of the message being published (its own, the hub's `ttlMs`, or none). */
  expiryNow(): number {
    return this.expiry !== 0 || this.ttlMs === 0 ? this.expiry : expiryWord(Date.now() + this.ttlMs)
  }

  /**
   * Publishes one message of bytes: the whole fast path, written out in one function
   * (claim, copy, commit, wake) because every call layer shows at 10 M messages a
   * second.
   */
  publishBytes(bytes: Uint8Array): boolean {
    return this.publishFramed(bytes, -1, 0, 0, 0)
  }

  /**
   * {@link publishBytes}, the bytes after a 16-byte header of four words when `w0` is
   * not -1 (`Rpc` over shared memory frames its messages so).
   */
  publishFramed(bytes: Uint8Array, w0: number, w1: number, w2: number, w3: number): boolean {
    const r = this.ring
    const i32 = this.i32
    const framed = w0 !== -1
    const len = framed ? FRAME_HEADER + bytes.length : bytes.length
    if (len > this.inSlot) {
      // Longer than a slot: through the payload pool or the side path, in Rust (see `large`).
      if (!framed && this.large !== undefined) return this.large(bytes)
      throw framed ? tooLarge(bytes.length, r.slotSize - FRAME_HEADER) : tooLarge(len, this.inSlot)
    }
    const lo = this.claim()
    if (lo < 0) return false
    const base = r.headerLen + (lo & r.mask) * r.stride
    const si = base >> 2
    try {
      let at = base + r.PAYLOAD
      if (framed) {
        // (A payload starts 16-byte aligned.)
        const w = at >> 2
        i32[w] = w0
        i32[w + 1] = w1
        i32[w + 2] = w2
        i32[w + 3] = w3
        at += FRAME_HEADER
      }
      copy.call(r.u8, bytes, at)
    } catch (e) {
      this.abandon(lo) // e.g. the caller's buffer was detached
      this.done(0, 0)
      throw e
    }
    i32[si + r.LEN] = len
    i32[si + r.ORIGIN] = this.origin
    i32[si + r.EXPIRY] = this.expiryNow()
    Atomics.store(i32, si, ((lo + 1) * 2) | 0)
    if (this.locked) this.unlockRepair()
    const c = this.counters
    c.published++
    c.publishedBytes += len
    if (r.someoneWaits(i32)) r.handle.notify()
    return true
  }

  /** Whether the last scan already proved room for sequence `lo` (compared in 64 bits). */
  /** Whether a publish now would find room (it would neither wait, drop nor fail), whatever the policy. */
  roomNow(): boolean {
    if (this.policy === 'drop_old') return true
    const lo = Atomics.load(this.i32, this.ring.TAIL_LO) >>> 0
    if (this.hasRoom(lo)) return true
    const { lag, credit } = this.ring.scan(lo, this.ownEntry, true)
    return lag < this.ring.capacity && credit > 0
  }

  hasRoom(lo: number): boolean {
    // (A plain load: a stale generation only means one more scan.)
    if (!this.roomKnown || this.i32[this.ring.CREDIT_GEN] !== this.creditGen) return false
    const tail = (Atomics.load(this.i32, this.ring.TAIL_HI) >>> 0) * TWO_32 + lo
    return tail < this.roomUntil
  }

  /**
   * A write into claimed slot `lo` was given up (an exception, an aborted loan): the
   * slot is committed as holding no message, which readers pass over.
   */
  abandon(lo: number): void {
    const r = this.ring
    const si = r.slotOffset(lo) >> 2
    this.i32[si + r.LEN] = SKIP_LEN
    this.i32[si + r.ORIGIN] = 0
    this.i32[si + r.EXPIRY] = 0
    Atomics.store(this.i32, si, ((lo + 1) * 2) | 0)
    if (r.someoneWaits(this.i32)) r.handle.notify()
  }
}

/** The publishing hub's entry (plus one) in a slot's origin word; its top bit says a bridge brought the message (what a bridge's reader passes over). */
const ORIGIN_ENTRY = 0x7fffffff

/** A slot's expiry word for a message that expires at `expiresAtMs` (ms since the Unix epoch): its low 32 bits, never 0. */
export function expiryWord(expiresAtMs: number): number {
  return Math.floor(expiresAtMs) >>> 0 || 1
}

/** Whether expiry word `word` (not 0) has passed: compared modulo 2^32, as the Rust readers do. */
export function expiredWord(word: number): boolean {
  return (((Date.now() >>> 0) - word) | 0) > 0
}

/** Bytes of the header {@link ShmPublisher.publishFramed} writes before a message. */
export const FRAME_HEADER = 16

export function tooLarge(len: number, max: number): MessageTooLargeError {
  return new MessageTooLargeError(`message of ${len} bytes exceeds the limit of ${max} bytes (maxMessageSize; a loan or a Rpc message: the slot size)`)
}

/** Counters of a subscriber. */
export interface SubscriberCounters {
  received: number
  receivedBytes: number
  lapped: number
  lapEvents: number
  /** Messages passed over unread: their time to live had run out (`ttlMs`). */
  expired: number
}

/**
 * Reads messages from the ring (the JavaScript twin of `zerohop_shm::Subscriber`).
 *
 * A member of a work group (a hub opened with `group`) reads at its group's cursor
 * and claims each message with a compare-and-swap of it once read (`intact()`): the
 * one whose swap succeeds has it, the others look again (see
 * `crates/zerohop-shm/src/ring/group.rs`).
 */
export class ShmSubscriber {
  readonly counters: SubscriberCounters = { received: 0, receivedBytes: 0, lapped: 0, lapEvents: 0, expired: 0 }
  /**
   * A network ring's: where a message's expiry lies after its payload offset (in its
   * envelope), or -1 (shared memory's messages do not expire).
   */
  private readonly expiryAt: number
  /** Told the payload offset of each message passed over for its expiry (to free what it holds outside the ring). */
  onExpired: ((off: number) => void) | undefined
  readonly entry: number
  /** The origin word of what this subscriber's own hub published: skipped. */
  private readonly own: number
  /** Next sequence number to read. */
  cursor: number
  /** Payload length of the message found by the last successful `peek`. */
  len = 0
  private readonly ring: ShmRing
  /** Bytes before each message that are not its own (a network ring's envelope). */
  private readonly envelope: number
  private readonly i32: Int32Array
  private readonly cursorIdx: number
  private peekIdx = 0
  private peekStamp = 0
  /** The pool unit of the message `peek` found, -1 when it lies in its slot, and its byte offset. */
  private peekUnit = -1
  private peekOff = 0
  /** The side-path message `peek` found: a view of its mapping (undefined: none). */
  private peekSide: Uint8Array | undefined
  /** Word index of this reader's pool cursor in its table entry. */
  private readonly poolCursorIdx: number
  /** Peeks since the cursor was last compared with the tail (see `peek`). */
  private sinceTailCheck = 0
  /**
   * The ring's writer writes only where there is room and never parks for it (a
   * network hub's receive ring): a message cannot be overwritten while it is read, and
   * there is no writer to wake when room is made.
   */
  readonly flowControlled: boolean
  /**
   * The cursor as the ring's memory last said (flow-controlled rings): it is stored
   * once a batch, not per message (`Atomics.store` is a builtin call of about 20 ns
   * in Node 20 and 24, not one instruction), and whenever a peek finds the ring empty or
   * the code that read returns (a microtask).
   */
  private shared: number
  /** The tail a flow-controlled ring's peek read last (low 32 bits): what is below it is whole. */
  private readyTo: number
  private storeQueued = false
  /** Within a batch receive (see {@link beginBatch}). */
  private batching = false
  private readonly storeLater = (): void => {
    this.storeQueued = false
    // (Unless the hub closed meanwhile: its ring's memory is gone.)
    if (this.i32.length !== 0) this.storeCursor()
  }
  private readonly storeEvery: number
  /** A work group's member: the word index of its group's cursor; -1 for a reader on its own. */
  private readonly groupCursorIdx: number
  /** A member: `intact()` claimed the message `peek` found (`advance()` moves past it). */
  private claimed = false
  /** A member: `intact()` found the message `peek` found claimed by another member. */
  private raced = false

  constructor(ring: ShmRing, envelope = 0, flowControlled = false, expiryAt = -1) {
    this.ring = ring
    this.envelope = envelope
    this.expiryAt = expiryAt
    this.flowControlled = flowControlled
    this.storeEvery = Math.max(1, Math.min(64, ring.capacity >> 2))
    this.i32 = ring.i32
    const [entry, start, group] = native(() => ring.handle.claimSubscriber()) as [number, number, number?]
    this.entry = entry
    // (A member takes what its own hub published too: someone in its group must.)
    this.own = group === undefined ? entry + 1 : -1
    this.cursor = start
    // (As if stored a batch ago: the first message read stores the cursor at once, so
    // that the store of `pass` and `moveTo` has run before a drain's loop is optimised.
    // A path first taken after that throws the loop's code away: 10-20 ms of
    // recompiling for a receiver's CPU at the start of a stream.)
    this.shared = start - this.storeEvery
    this.readyTo = start >>> 0
    this.cursorIdx = ring.SUBS + entry * ring.SUB_STRIDE + ring.SUB_CURSOR
    const reads = group ?? entry
    this.groupCursorIdx = group === undefined ? -1 : ring.SUBS + group * ring.SUB_STRIDE + ring.SUB_CURSOR
    this.poolCursorIdx = ring.SUBS + reads * ring.SUB_STRIDE + (offsets().subPoolCursor >> 2)
  }

  /** Whether this reader is a work group's member (it claims what it reads). */
  get member(): boolean {
    return this.groupCursorIdx >= 0
  }

  /** A member: reads where its group is now (only ever forward, by less than 2^32). */
  private lookAtGroup(): void {
    if (this.groupCursorIdx >= 0) this.cursor += (Atomics.load(this.i32, this.groupCursorIdx) - (this.cursor >>> 0)) >>> 0
  }

  /**
   * Finds the message at the cursor: the byte offset of its payload (length in
   * `len`), or -1 if nothing new is there. Skips ahead (and counts) when lapped.
   * The caller reads the payload, then calls `intact()` and `advance()`.
   */
  peek(): number {
    if (this.flowControlled) return this.peekBelowTail()
    const r = this.ring
    const i32 = this.i32
    for (;;) {
      if (this.groupCursorIdx >= 0) this.lookAtGroup()
      const lo = this.cursor >>> 0
      const base = r.slotOffset(lo)
      const si = base >> 2
      const stamp = Atomics.load(i32, si)
      const want = ((lo + 1) * 2) | 0
      // Stamps hold 31 bits of the sequence number, so a reader stopped for a multiple
      // of 2^31 messages could take a newer message for its own. Once a ring's worth of
      // peeks, compare the cursor with the tail.
      if (++this.sinceTailCheck >= r.capacity) {
        this.sinceTailCheck = 0
        if (r.tail() > this.cursor + r.capacity) {
          this.skipAhead()
          continue
        }
      }
      if (stamp === want) {
        if ((i32[si + r.ORIGIN]! & ORIGIN_ENTRY) === this.own || i32[si + r.LEN] === SKIP_LEN) {
          // Our own hub published it, or it holds no message (a loan given up, a dead
          // publisher's hole repaired): not ours to receive (unless it was overwritten
          // meanwhile: then we were lapped).
          if (READER_FENCE) Atomics.add(i32, this.cursorIdx, 0)
          if (Atomics.load(i32, si) !== stamp) this.skipAhead()
          else this.moveTo(this.cursor + 1)
          continue
        }
        const len = i32[si + r.LEN]!
        this.peekIdx = si
        this.peekStamp = stamp
        this.peekUnit = -1
        if (i32[si + r.EXPIRY] !== 0 && expiredWord(i32[si + r.EXPIRY]!)) {
          // Its time to live ran out: passed over, and counted (unless the slot was
          // overwritten meanwhile: a lap).
          if (READER_FENCE) Atomics.add(i32, this.cursorIdx, 0)
          if (Atomics.load(i32, si) !== stamp) {
            this.skipAhead()
            continue
          }
          const pooled = len > r.slotSize && len <= r.poolSize && this.pooledAt(si, len) >= 0
          if (this.moveTo(this.cursor + 1)) {
            if (pooled) this.passPooled()
            this.counters.expired++
          }
          this.peekUnit = -1
          continue
        }
        if (len > r.slotSize) {
          const at = len > r.poolSize ? this.sideAt(si, len, stamp) : this.pooledAt(si, len)
          if (at >= 0) return at
          if (at === LAPPED) continue
          // No message a pool this size holds: passed over (unless torn: a lap).
          if (READER_FENCE) Atomics.add(i32, this.cursorIdx, 0)
          if (Atomics.load(i32, si) !== stamp) this.skipAhead()
          else this.moveTo(this.cursor + 1)
          continue
        }
        this.len = len
        return base + r.PAYLOAD
      }
      const becoming = (stamp + (stamp & 1)) | 0
      if (((becoming - want) | 0) > 0) {
        this.skipAhead()
        continue
      }
      // Caught up: the writer learns it now (it acknowledges, and makes room, from it).
      if (this.shared !== this.cursor) this.storeCursor()
      return -1
    }
  }

  /**
   * `peek` of a flow-controlled ring. Its one writer moves the tail (a releasing store)
   * after each message is whole and overwrites nothing unread, so every message below
   * the tail it read last is there to read with plain loads: one `Atomics.load` (a
   * builtin call of about 20 ns) a run of messages, not one a message.
   */
  peekBelowTail(): number {
    for (;;) {
      const lo = this.cursor >>> 0
      if (((this.readyTo - lo) | 0) <= 0) {
        const tail = Atomics.load(this.i32, this.ring.TAIL_LO) >>> 0
        if (((tail - lo) | 0) <= 0) {
          // Caught up: the writer learns it now (it acknowledges, and makes room, from it).
          if (this.shared !== this.cursor) this.storeCursor()
          return -1
        }
        this.readyTo = tail
      }
      const base = this.ring.slotOffset(lo)
      const si = base >> 2
      let len = this.i32[si + this.ring.LEN]!
      if (len < 0 || len > this.ring.slotSize) len = this.ring.slotSize
      const at = base + this.ring.PAYLOAD
      if (this.expiryAt >= 0) {
        // Passed over once its time to live ran out (two loads, for the rest: most
        // messages have none).
        const w = (at + this.expiryAt) >> 2
        const expiryLo = this.i32[w]!
        const expiryHi = this.i32[w + 1]!
        if ((expiryLo | expiryHi) !== 0 && (expiryHi >>> 0) * 4294967296 + (expiryLo >>> 0) < Date.now() * 1e6) {
          this.counters.expired++
          this.onExpired?.(at)
          this.moveTo(this.cursor + 1)
          continue
        }
      }
      this.len = len
      return at
    }
  }

  /**
   * A message of `len` bytes in the payload pool, whose slot is at word `si`: the byte
   * offset where it lies (`len` and `peekUnit` set), or -1 if the slot names no range
   * of a pool this size (torn, or not zerohop's).
   */
  private pooledAt(si: number, len: number): number {
    const r = this.ring
    if (r.poolSize === 0 || len > r.poolSize) return -1
    const unit = this.i32[si + (r.PAYLOAD >> 2)]! >>> 0
    const first = unit % r.poolUnits
    if (first * r.poolUnit + len > r.poolSize) return -1
    this.len = len
    this.peekUnit = unit
    this.peekOff = r.poolOffset + first * r.poolUnit
    return this.peekOff
  }

  /**
   * A side-path message of `len` bytes, whose slot is at word `si` with stamp `stamp`:
   * fetches it from its publisher (see `crates/zerohop-shm/src/side.rs`) and returns
   * the byte offset of its slot's payload (`len` and `peekSide` set). `LAPPED` when its
   * publisher no longer has it (counted lapped, moved past) or the slot was overwritten
   * while its token was read (skipped ahead).
   */
  private sideAt(si: number, len: number, stamp: number): number {
    const r = this.ring
    const i32 = this.i32
    const lo = i32[si + (r.PAYLOAD >> 2)]! >>> 0
    const hi = i32[si + (r.PAYLOAD >> 2) + 1]! >>> 0
    if (READER_FENCE) Atomics.add(i32, this.cursorIdx, 0)
    if (Atomics.load(i32, si) !== stamp) {
      this.skipAhead()
      return LAPPED
    }
    const got = native(() => r.handle.fetchSide(this.cursor, lo, hi, len))
    if (got === null) {
      if (this.moveTo(this.cursor + 1)) {
        this.counters.lapped++
        this.counters.lapEvents++
      }
      return LAPPED
    }
    this.peekSide = new Uint8Array(got)
    this.len = len
    return (si << 2) + r.PAYLOAD
  }

  /**
   * The message `peek` found, when it lies outside its slot (in the payload pool, or
   * on the side path): a view of it; `undefined` when it lies in its slot.
   */
  largeView(): Uint8Array | undefined {
    if (this.peekSide !== undefined) return this.peekSide
    return this.peekUnit < 0 ? undefined : this.ring.u8.subarray(this.peekOff, this.peekOff + this.len)
  }

  /**
   * Shared memory: copies the run of whole messages at the cursor (up to `max`, and
   * not past the ring's last slot) into `into` from its slot `from` on (`words` a view
   * of the same bytes), laid out slot by slot as in the ring, and returns how many are
   * there whole (checked after the copy, as `intact()` does: one overwritten meanwhile
   * ends the run before it, as does one outside its slot, in the payload pool or on the
   * side path). 0 where a message needs more than a copy (the ring's memory is the
   * network writer's own, a lap, the stamps' periodic look at the tail): then `peek()`.
   * Each message's payload starts at `PAYLOAD` of its slot in `into`; `runLength(words,
   * i)` is its length, -1 for one this hub published itself. Moves nothing: `skip(n,
   * bytes, taken)` does.
   */
  takeRun(into: Uint8Array, words: Int32Array, from: number, max: number): number {
    const r = this.ring
    // (A member claims message by message.)
    if (this.flowControlled || this.groupCursorIdx >= 0) return 0
    const i32 = this.i32
    const lo = this.cursor >>> 0
    const first = lo & r.mask
    const n = Math.min(max, r.capacity - first, Math.floor(into.length / r.stride) - from)
    if (n <= 0) return 0
    if (this.sinceTailCheck + n >= r.capacity) {
      // (`peek()`'s look at the tail once a ring's worth: see there.)
      if (r.tail() > this.cursor + r.capacity) return 0
      this.sinceTailCheck = 0
    }
    const w = r.stride >> 2
    const base = (r.headerLen >> 2) + first * w
    // Which are there: plain loads on x86 (where every load acquires, and `Atomics.load`,
    // a call in Node 20, costs 22 ns against 9), `Atomics.load` elsewhere.
    let k = 0
    if (READER_FENCE) while (k < n && Atomics.load(i32, base + k * w) === (((lo + k + 1) * 2) | 0)) k++
    else while (k < n && i32[base + k * w] === (((lo + k + 1) * 2) | 0)) k++
    if (k === 0) return 0
    const start = r.headerLen + first * r.stride
    copy.call(into, r.u8.subarray(start, start + k * r.stride), from * r.stride)
    if (READER_FENCE) Atomics.add(i32, this.cursorIdx, 0)
    // Whole: its stamp unchanged since the copy, and in its slot (its length, in the
    // copy). The stamps are loaded after the copy's loads: on x86 plain loads are (loads
    // are not reordered with loads, and the compiler keeps loads after the call that
    // copies), and `Atomics.load` behind the fence above elsewhere.
    const len = from * w + r.LEN
    let whole = 0
    if (READER_FENCE) {
      while (whole < k && Atomics.load(i32, base + whole * w) === (((lo + whole + 1) * 2) | 0) && words[len + whole * w]! <= r.slotSize) {
        whole++
      }
    } else {
      while (whole < k && i32[base + whole * w] === (((lo + whole + 1) * 2) | 0) && words[len + whole * w]! <= r.slotSize) whole++
    }
    this.sinceTailCheck += whole
    return whole
  }

  /** The length of message `i` of a run `takeRun` copied into `into` (-1: this hub's own, no message, or expired: counted). */
  runLength(into: Int32Array, i: number): number {
    const r = this.ring
    const at = (i * r.stride) >> 2
    if ((into[at + r.ORIGIN]! & ORIGIN_ENTRY) === this.own || into[at + r.LEN] === SKIP_LEN) return -1
    if (into[at + r.EXPIRY] !== 0 && expiredWord(into[at + r.EXPIRY]!)) {
      this.counters.expired++ // (its time to live ran out)
      return -1
    }
    const len = into[at + r.LEN]!
    return len < 0 || len > r.slotSize ? r.slotSize : len
  }

  /** Past the pooled message `pooledAt` found: what is left to read lies after its units. */
  private passPooled(): void {
    Atomics.store(this.i32, this.poolCursorIdx, (this.peekUnit + Math.ceil(this.len / this.ring.poolUnit)) | 0)
    this.peekUnit = -1
  }

  /** Moves past `n` messages of a run, `taken` of them received (`bytes` in all). */
  skip(n: number, bytes: number, taken: number): void {
    this.counters.received += taken
    this.counters.receivedBytes += bytes
    this.moveTo(this.cursor + n)
  }

  /**
   * Whether the message found by `peek` is this reader's to take: not overwritten while
   * it was read, and, for a work group's member, claimed by it (once read: the others
   * look again). Then `advance()`; else `torn()`.
   */
  intact(): boolean {
    if (this.flowControlled) return true
    // (A side-path message is this reader's own mapping of a sealed file.)
    if (this.peekSide === undefined) {
      if (READER_FENCE) Atomics.add(this.i32, this.cursorIdx, 0)
      if (Atomics.load(this.i32, this.peekIdx) !== this.peekStamp) return false
      // A pooled message: also not if pool units were handed out a whole pool past its
      // first (the head moves before anything is written there).
      if (this.peekUnit >= 0 && ((Atomics.load(this.i32, this.ring.POOL_HEAD) - this.peekUnit) >>> 0) > this.ring.poolUnits) return false
    }
    if (this.groupCursorIdx < 0 || this.claimed) return true
    const lo = this.cursor | 0
    if (Atomics.compareExchange(this.i32, this.groupCursorIdx, lo, (lo + 1) | 0) === lo) return (this.claimed = true)
    this.raced = true
    return false
  }

  /** Moves past the message found by `peek`, of `bytes` bytes (default: what its slot holds). */
  advance(bytes = this.len - this.envelope): void {
    this.peekSide = undefined
    // (A member claims it here if `intact()` did not: an undecodable message.)
    if (!this.moveTo(this.cursor + 1)) {
      this.peekUnit = -1
      return
    }
    if (this.peekUnit >= 0) this.passPooled()
    this.counters.received++
    this.counters.receivedBytes += bytes
  }

  /**
   * {@link advance} of a network ring's reader (flow-controlled, on its own): the same
   * for such a ring, apart from it and small, so that a drain's loop, where it is
   * inlined, compiles small (the part of `advance` for shared memory and work groups
   * made the loop's optimised code a few hundred bytecodes larger, compiled again in
   * each caller: V8's compiler took about half a receiver's CPU in a stream's first
   * 35 ms, 12-07).
   */
  pass(bytes: number): void {
    const next = (this.cursor = this.cursor + 1)
    if (next - this.shared >= this.storeEvery) this.storeCursor()
    this.counters.received++
    this.counters.receivedBytes += bytes
  }

  /**
   * The message found by `peek` is not this reader's: it was torn by an overwrite
   * (counted, and skipped ahead), or another member of its work group claimed it.
   */
  torn(): void {
    this.peekSide = undefined
    this.peekUnit = -1
    if (this.raced) this.raced = false
    else this.skipAhead()
  }

  /** True if `peek` would find something (or skip ahead). Also catches lags so long the stamps wrapped. */
  readable(): boolean {
    this.lookAtGroup()
    const lo = this.cursor >>> 0
    const stamp = Atomics.load(this.i32, this.ring.slotOffset(lo) >> 2)
    const want = ((lo + 1) * 2) | 0
    if (stamp === want || ((stamp + (stamp & 1) - want) | 0) > 0) return true
    if (this.ring.tail() > this.cursor + this.ring.capacity) {
      this.skipAhead()
      return true
    }
    return false
  }

  /** Messages published but not read yet. */
  lag(): number {
    this.lookAtGroup()
    return Math.max(0, this.ring.tail() - this.cursor)
  }

  private skipAhead(): void {
    const cap = this.ring.capacity
    const from = this.cursor
    const next = Math.max(from + 1, this.ring.tail() - (cap - Math.floor(cap / 4)))
    if (this.moveTo(next)) {
      this.counters.lapped += next - from
      this.counters.lapEvents++
    }
  }

  /**
   * A batch receive begins: until {@link endBatch}, shared memory's cursor is stored
   * once, at the end, instead of after every message (its `Atomics.store` was a tenth
   * of a drain's time, 12-06); a network ring's, every `storeEvery` messages and at the
   * end (not a microtask later).
   */
  beginBatch(): void {
    this.batching = true
  }

  /** The batch receive ended: where this reader is goes into the ring now. */
  endBatch(): void {
    this.batching = false
    // (Unless the hub closed meanwhile: its ring's memory is gone.)
    if (this.shared === this.cursor || this.i32.length === 0) return
    if (this.flowControlled) this.storeCursor()
    else this.tellPlace()
  }

  /** Stores the cursor, and wakes a publisher waiting for room (shared memory). */
  private tellPlace(): void {
    this.storeCursor()
    if (Atomics.load(this.i32, this.ring.SPACE_WAITERS) !== 0) this.ring.handle.notifySpace()
  }

  /**
   * Moves the cursor to `next`. A work group's member moves its group's, with a
   * compare-and-swap unless `intact()` claimed the message already: false when another
   * member moved it first (what was read is that one's).
   */
  private moveTo(next: number): boolean {
    if (this.groupCursorIdx >= 0) {
      const lo = this.cursor | 0
      if (!this.claimed && Atomics.compareExchange(this.i32, this.groupCursorIdx, lo, next | 0) !== lo) return false
      this.claimed = false
      this.cursor = next
      if (Atomics.load(this.i32, this.ring.SPACE_WAITERS) !== 0) this.ring.handle.notifySpace()
      return true
    }
    this.cursor = next
    if (!this.flowControlled) {
      // Shared memory: a publisher may wait for this very slot (a batch tells it once).
      if (!this.batching) this.tellPlace()
    } else if (next - this.shared >= this.storeEvery) {
      this.storeCursor()
    } else if (!this.batching && !this.storeQueued) {
      // (A batch stores it when it ends: a drain's loop, whose next turn may be far off
      // while messages keep coming, never takes this path, which would throw its
      // optimised code away when first taken.)
      this.storeQueued = true
      // A promise reaction, not `queueMicrotask` (which makes an async resource and a
      // bound function each time: about 1 µs of a round trip's wake-up on this VM).
      RESOLVED.then(this.storeLater)
    }
    return true
  }

  private storeCursor(): void {
    this.shared = this.cursor
    // (A member's own cursor is nobody's business: it reads at its group's.)
    if (this.groupCursorIdx >= 0) return
    Atomics.store(this.i32, this.cursorIdx, this.cursor >>> 0)
  }
}

