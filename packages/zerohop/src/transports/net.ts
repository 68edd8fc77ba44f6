/**
 * Every network transport (`udp://`, `quic://`, and those to come) behind one port:
 * the native `NetHandle` opens the hub with the options as given (the hub and its
 * transport each take their own and refuse the rest), publishing crosses into Rust
 * once per message through calls bound to the hub's link (a small message is copied
 * into the link's stage and named by its length, `publishStaged`, which costs less
 * than handing Rust a `Uint8Array`; a large one goes as it is, `publish`), and received
 * messages land in a receive ring read in place like a `shm://` segment, each after an
 * envelope.
 */
import { copyInto } from '../bytes.js'
import type { ChaosMetrics } from '../chaos.js'
import { type Codec, describe, raw } from '../codec.js'
import { CodecError, InvalidStateError, fromNative } from '../errors.js'
import { ENVELOPE, type MessageInfo, Placement, placement, readEnvelope, spillKey, spilledLength } from '../envelope.js'
import { binding, fast, native, type NetCalls, type NetHandle, type NetLink, type NetWaker, statusEvent } from '../native.js'
import type { HubStatus, Loan, Port, PortSettings, PublishCounters, RequestPort, StatusEvent } from '../port.js'
import { ShmRing, ShmSubscriber, tooLarge } from '../shm-ring.js'
import { StructCodec } from '../struct.js'

/** `copyInto`, a constant of this module (see `bytes.ts`). */
const copy = copyInto

/** Opens a network hub on `url` with `options` (the codec already taken out). */
export function openNet<T>(url: string, options: object, codec: Codec<T> | StructCodec<T>): Port<T> {
  const handle = native(() => binding.NetHandle.open(url, options))
  try {
    return new NetPort<T>(handle, codec)
  } catch (e) {
    handle.close()
    throw e
  }
}

export class NetPort<T> implements Port<T> {
  readonly transport
  readonly settings: PortSettings
  readonly maxMessageSize: number
  readonly maxStructSize: number
  readonly ring: ShmRing
  readonly subscriber: ShmSubscriber | undefined
  readonly envelope = ENVELOPE.len
  /** Subjects by their number in envelopes (`nats://`), as the native side named them. */
  private readonly subjects = new Map<number, string>()
  readonly pollsOnCallingThread = true
  armKeepsLoopAlive = false
  readonly loanOpen = false
  readonly peers: { setPeers(peers: string[]): void } | undefined
  readonly requests: RequestPort | undefined
  readonly flow = undefined
  private readonly handle: NetHandle
  /** The per-message calls, bound to the hub's link (see `fast.rs` in the binding). */
  private readonly calls: NetCalls
  /**
   * The link's stage: a message up to its size is copied here before `publishStaged`
   * (absent where Node-API cannot share memory: then `publish`).
   */
  private readonly stage: Uint8Array | undefined
  /** What `arm` calls through (`netArm`). */
  private readonly waker: NetWaker
  protected readonly codec: Codec<T> | StructCodec<T>
  protected readonly struct: StructCodec<T> | undefined
  /** With a struct codec: where `publish` writes the value before sending it. */
  private scratch: DataView | undefined
  private readonly connections: boolean
  /** `ready()` waits for the transport (a `nats://` hub's first connection). */
  private readonly waitsOpen: boolean
  /** The transport batches publishes: `flush` sends what waits. */
  private readonly batching: boolean
  /** Batches wait for the end of the turn: a flush is queued then. */
  private readonly flushAtEndOfTurn: boolean
  private flushQueued = false
  /**
   * Doorbell rings so far, and the ring after which a publish last went out at once:
   * the first publish after a ring (an answer, in a request and its reply) is sent
   * right away, later ones in that turn batch (see `send`).
   */
  private rings = 0
  private sentAtRing = -1
  private closed = false
  /** Whether the transport rings when it makes room (see `roomMade`), once asked. */
  private roomBell: boolean | undefined
  /** Sends waiting for room, resolved by the room bell. */
  private roomWaiters: Array<() => void> | undefined

  constructor(handle: NetHandle, codec: Codec<T> | StructCodec<T>) {
    this.handle = handle
    this.transport = native(() => handle.transport()) as Port<T>['transport']
    this.settings = native(() => handle.settings()) as PortSettings
    this.maxMessageSize = native(() => handle.maxMessageSize())
    this.maxStructSize = this.maxMessageSize
    this.calls = fast.netBind(native(() => handle.link()) as NetLink)
    this.stage = this.calls.stage === undefined ? undefined : new Uint8Array(this.calls.stage)
    this.waker = native(() => handle.waker()) as NetWaker
    this.codec = codec
    this.struct = codec instanceof StructCodec ? codec : undefined
    const caps = native(() => handle.capabilities())
    this.connections = caps.connections
    this.waitsOpen = caps.waitsOpen
    this.batching = caps.batching
    this.flushAtEndOfTurn = caps.batching && native(() => handle.flushAtEndOfTurn())
    this.peers = caps.peers ? { setPeers: (peers) => native(() => handle.setPeers(peers)) } : undefined
    this.requests = caps.requests
      ? {
          request: (bytes) => native(() => handle.request(bytes)),
          cancel: (key) => native(() => handle.cancel(key)),
          respond: (key, ok, bytes) => native(() => handle.respond(key, ok, bytes)),
          pending: () => (this.closed ? 0 : Number(native(() => handle.metrics()).details.requestsPending ?? 0)),
        }
      : undefined
    this.ring = new ShmRing(native(() => handle.ring()))
    try {
      this.subscriber = this.settings.role === 'publisher' ? undefined : new ShmSubscriber(this.ring, ENVELOPE.len, true, ENVELOPE.expiry)
      // A message passed over for its expiry whose bytes are held natively: freed.
      if (this.subscriber) this.subscriber.onExpired = (off) => void (placement(this.ring.u8, off) === Placement.Spilled && this.outside(off))
    } catch (e) {
      this.ring.close()
      throw e
    }
  }

  /** Resolves once the hub receives what others publish (see `ready` in the binding); closes it if it never will. */
  async ready(): Promise<void> {
    if (!this.waitsOpen) return
    try {
      await this.handle.ready()
    } catch (e) {
      this.close()
      throw fromNative(e)
    }
  }

  readInfo(dv: DataView, off: number, info: MessageInfo): void {
    readEnvelope(dv, off, info, this.subjectName)
  }

  /** The subject numbered `id` (numbers are never reused: a name, once known, stays right). */
  private readonly subjectName = (id: number): string | undefined => {
    let name = this.subjects.get(id)
    if (name === undefined && !this.closed) {
      name = native(() => this.handle.subject(id)) ?? undefined
      if (name !== undefined) {
        if (this.subjects.size >= 4096) this.subjects.clear()
        this.subjects.set(id, name)
      }
    }
    return name
  }

  /** The bytes to send for `value` (a struct is written into one reused scratch buffer). */
  private encode(value: T): Uint8Array {
    const struct = this.struct
    if (struct) {
      const dv = (this.scratch ??= new DataView(new ArrayBuffer(struct.size)))
      struct.write(dv, 0, value)
      return new Uint8Array(dv.buffer)
    }
    const bytes = this.codec === raw && value instanceof Uint8Array ? value : this.codec.encode(value)
    if (!(bytes instanceof Uint8Array)) throw new CodecError(`the raw codec takes a Uint8Array, got ${describe(value)}`)
    if (bytes.length > this.maxMessageSize) throw tooLarge(bytes.length, this.maxMessageSize)
    return bytes
  }

  publish(value: T, channel: number): boolean {
    return this.send(this.encode(value), channel)
  }

  publishExpiring(value: T, channel: number, expiresAtMs: number): boolean {
    const bytes = this.encode(value)
    const stage = this.stage
    if (stage === undefined || bytes.length > stage.length) {
      return native(() => this.handle.publishExpiring(bytes, channel, expiresAtMs))
    }
    copy.call(stage, bytes)
    try {
      return this.calls.publishStagedExpiring(bytes.length, channel, expiresAtMs)
    } catch (e) {
      throw fromNative(e)
    }
  }

  hasRoom(value: T, channel: number): boolean {
    return native(() => this.handle.hasRoom(channel, this.encode(value).length))
  }

  roomMade(maxMs: number): Promise<void> | undefined {
    if (this.closed) return undefined
    if (this.roomBell === undefined) {
      const waiters = (this.roomWaiters = [] as Array<() => void>)
      this.roomBell = native(() =>
        this.handle.setRoomBell(() => {
          for (const done of waiters.splice(0)) done()
        }),
      )
    }
    if (!this.roomBell) return undefined
    const waiters = this.roomWaiters!
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        resolve()
      }
      const timer = setTimeout(() => {
        const i = waiters.indexOf(done)
        if (i >= 0) waiters.splice(i, 1)
        resolve()
      }, maxMs)
      waiters.push(done)
      this.handle.wantRoom()
    })
  }

  /** Sends `bytes` as one message on `channel`; false if the policy dropped it. */
  protected send(bytes: Uint8Array, channel: number): boolean {
    // The first publish after the doorbell rang goes out at once (with what waits
    // before it): an answer to what just arrived does not wait for the end of the turn,
    // nor costs a flush of its own. A burst's others wait for that flush.
    const now = this.flushAtEndOfTurn && this.sentAtRing !== this.rings
    let accepted: boolean
    const stage = this.stage
    try {
      const len = bytes.length
      // (`now` goes only when true: a third argument costs the call a conversion.)
      if (stage !== undefined && len <= stage.length) {
        copy.call(stage, bytes)
        accepted = now ? this.calls.publishStaged(len, channel, true) : this.calls.publishStaged(len, channel)
      } else {
        accepted = now ? this.calls.publish(bytes, channel, true) : this.calls.publish(bytes, channel)
      }
    } catch (e) {
      throw fromNative(e)
    }
    if (now) this.sentAtRing = this.rings
    else if (this.flushAtEndOfTurn) this.queueFlush()
    return accepted
  }

  publishBatch(values: readonly T[]): number {
    let n = 0
    for (let i = 0; i < values.length; i++) if (this.send(this.encode(values[i]!), 0)) n++
    return n
  }

  publishPacked(packed: Uint8Array, messageSize: number): number {
    if (messageSize > this.maxMessageSize) throw tooLarge(messageSize, this.maxMessageSize)
    const n = native(() => this.handle.publishPacked(packed, messageSize))
    if (this.flushAtEndOfTurn) this.queueFlush()
    return n
  }

  loan(): Loan<T> {
    throw new InvalidStateError(
      `loan() writes in place into shared memory; over ${this.transport}:// use publish() (it copies once, into the send queue)`,
    )
  }

  flush(): void {
    this.flushQueued = false
    if (this.batching) native(() => this.handle.flush())
  }

  /** A partly filled batch goes out at the end of this turn. */
  private queueFlush(): void {
    if (this.flushQueued) return
    this.flushQueued = true
    process.nextTick(() => {
      if (!this.flushQueued || this.closed) return
      this.flush()
    })
  }

  pump(): number {
    if (this.closed) return 0
    // A reader that found nothing is about to wait: what this hub published in the turn
    // goes out first (the answer it waits for may need it), not when the turn ends.
    if (this.flushQueued) this.flush()
    return this.calls.pump()
  }

  spilled(off: number): Uint8Array | undefined {
    // Small, so that it inlines into a reader's loop: most messages are in their slot.
    return placement(this.ring.u8, off) === Placement.Inline ? undefined : this.outside(off)
  }

  /** The bytes of the message at `off` that are not in its slot. */
  private outside(off: number): Uint8Array {
    const key = spillKey(this.ring.dv, off)
    if (placement(this.ring.u8, off) === Placement.Aside) {
      // In the ring's memory, which the writer leaves alone until the cursor moves past
      // the message: a view, read in place like a slot.
      const len = spilledLength(this.ring.dv, off)
      if (key + len > this.ring.u8.byteLength) throw new CodecError('a received message lies outside its ring')
      return this.ring.u8.subarray(key, key + len)
    }
    return native(() => this.handle.takeSpilled(key))
  }

  setDoorbell(ring: () => void): void {
    const handle = this.handle
    const rung = (): void => {
      this.rings++
      ring()
    }
    const threaded = (): void => {
      handle.rungElsewhere()
      rung()
    }
    native(() => handle.setDoorbell(rung, threaded))
    this.armKeepsLoopAlive = this.handle.armKeepsLoopAlive()
  }

  arm(cursor: number): void {
    try {
      fast.netArm(this.waker, cursor)
    } catch (e) {
      throw fromNative(e)
    }
  }

  disarm(): void {
    this.handle.disarm()
  }

  status(): HubStatus {
    return this.closed ? 'closed' : (native(() => this.handle.status()) as HubStatus)
  }

  readonly statusOnDemand = false

  onStatus(listener: (event: StatusEvent, own: boolean) => void): void {
    if (!this.connections) return
    const connects = native(() => this.handle.connects())
    // A listening hub's own events carry no peer; the others are its peers coming and going.
    native(() => this.handle.onStatus((e) => listener(statusEvent(e), connects || e.peer == null)))
  }

  localAddress(): string | undefined {
    return this.closed ? undefined : (native(() => this.handle.localAddress()) ?? undefined)
  }

  counters(): PublishCounters {
    if (this.closed) return this.last
    const m = native(() => this.handle.metrics())
    this.last = { published: m.published, publishedBytes: m.publishedBytes, dropped: m.dropped, blocked: m.blocked, rateLimited: m.rateLimited }
    return this.last
  }

  /** What the counters were when the port closed. */
  private last: PublishCounters = { published: 0, publishedBytes: 0, dropped: 0, blocked: 0 }

  /** What the faults did (kept from the last look once the port closed). */
  chaos(): ChaosMetrics | undefined {
    if (!this.closed) this.lastChaos = native(() => this.handle.metrics()).chaos as ChaosMetrics | undefined
    return this.lastChaos
  }

  private lastChaos: ChaosMetrics | undefined

  details(): Record<string, unknown> | undefined {
    if (this.closed) return undefined
    const details = native(() => this.handle.metrics()).details
    return this.connections ? { status: this.status(), ...details } : details
  }

  linger(lingerMs: number): Promise<boolean> {
    return native(() => this.handle.linger(lingerMs))
  }

  close(): void {
    if (this.closed) return
    this.counters()
    this.chaos()
    this.closed = true
    this.flushQueued = false
    this.handle.close() // sends what is queued first
    this.ring.close()
  }
}
