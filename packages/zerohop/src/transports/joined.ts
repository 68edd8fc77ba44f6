/**
 * One port over several transports at once: what a listening `auto://` hub is (its
 * network transport for other hosts, shared memory for hubs on its own). Publishing
 * goes to every part; the hub reads the parts' rings in turn (see `Port.parts`).
 * Nothing here knows which transports the parts are.
 */
import type { ChaosMetrics } from '../chaos.js'
import { InvalidStateError } from '../errors.js'
import type { MessageInfo } from '../envelope.js'
import type { HubStatus, Loan, Port, PortSettings, PublishCounters, StatusEvent, TransportName } from '../port.js'
import type { ShmRing, ShmSubscriber } from '../shm-ring.js'

export class JoinedPort<T> implements Port<T> {
  readonly parts: readonly Port<T>[]
  /** The first part's: the transport the hub names, its settings, ring and cursor. */
  readonly transport: TransportName
  readonly settings: PortSettings
  readonly ring: ShmRing
  readonly subscriber: ShmSubscriber | undefined
  readonly envelope: number
  readonly maxMessageSize: number
  readonly maxStructSize: number
  readonly statusOnDemand = false
  readonly loanOpen = false
  readonly peers = undefined
  readonly requests = undefined
  readonly flow = undefined
  /** Closed with the port (a selector's own resources: the hello server). */
  private readonly extras: readonly { close(): void }[]
  private doorbell: () => void = () => {}

  constructor(parts: readonly Port<T>[], extras: readonly { close(): void }[] = []) {
    const first = parts[0]!
    this.parts = parts
    this.extras = extras
    this.transport = first.transport
    this.settings = first.settings
    this.ring = first.ring
    this.subscriber = first.subscriber
    this.envelope = first.envelope
    this.maxMessageSize = Math.min(...parts.map((p) => p.maxMessageSize))
    this.maxStructSize = Math.min(...parts.map((p) => p.maxStructSize))
  }

  /** (Asked each time: a part knows how it wakes once its doorbell is installed.) */
  get pollsOnCallingThread(): boolean {
    return this.parts.some((p) => p.pollsOnCallingThread)
  }

  get armKeepsLoopAlive(): boolean {
    return this.parts.every((p) => p.armKeepsLoopAlive)
  }

  readInfo(dv: DataView, off: number, info: MessageInfo): void {
    this.parts[0]!.readInfo(dv, off, info)
  }

  /** Published to every part: false if one of them dropped it (`drop_new`). */
  publish(value: T, channel: number): boolean {
    let all = true
    for (const p of this.parts) all = p.publish(value, channel) && all
    return all
  }

  publishExpiring(value: T, channel: number, expiresAtMs: number): boolean {
    let all = true
    for (const p of this.parts) {
      if (p.publishExpiring === undefined) throw new InvalidStateError(`${p.transport}:// has no per-message time to live`)
      all = p.publishExpiring(value, channel, expiresAtMs) && all
    }
    return all
  }

  hasRoom(value: T, channel: number): boolean {
    return this.parts.every((p) => p.hasRoom(value, channel))
  }

  /** How many every part accepted. */
  publishBatch(values: readonly T[]): number {
    let n = values.length
    for (const p of this.parts) n = Math.min(n, p.publishBatch(values))
    return n
  }

  publishPacked(packed: Uint8Array, messageSize: number): number {
    let n = packed.byteLength / messageSize
    for (const p of this.parts) n = Math.min(n, p.publishPacked(packed, messageSize))
    return n
  }

  loan(): Loan<T> {
    throw new InvalidStateError(`this hub publishes over ${this.parts.map((p) => `${p.transport}://`).join(' and ')}: a loan writes into one ring (publish instead)`)
  }

  flush(): void {
    for (const p of this.parts) p.flush()
  }

  /** The first part's: the hub pumps the part it reads through that part. */
  pump(): number {
    return this.parts[0]!.pump()
  }

  spilled(off: number): Uint8Array | undefined {
    return this.parts[0]!.spilled(off)
  }

  /** Any part's ring wakes the hub (and the others stop watching: the hub looks at them all). */
  setDoorbell(ring: () => void): void {
    this.doorbell = ring
    this.parts.forEach((p, i) =>
      p.setDoorbell(() => {
        this.parts.forEach((q, j) => j !== i && q.disarm())
        ring()
      }),
    )
  }

  arm(): void {
    if (this.parts.some((p) => p.subscriber?.readable())) {
      queueMicrotask(this.doorbell)
      return
    }
    for (const p of this.parts) if (p.subscriber !== undefined) p.arm(p.subscriber.cursor)
  }

  disarm(): void {
    for (const p of this.parts) p.disarm()
  }

  async ready(): Promise<void> {
    for (const p of this.parts) await p.ready?.()
  }

  status(): HubStatus {
    return this.parts[0]!.status()
  }

  onStatus(listener: (event: StatusEvent, own: boolean) => void): void {
    for (const p of this.parts) p.onStatus(listener)
  }

  localAddress(): string | undefined {
    return this.parts[0]!.localAddress()
  }

  /** Each message once (as the first part counted it); what any part dropped or waited for. */
  counters(): PublishCounters {
    const [first, ...rest] = this.parts.map((p) => p.counters())
    const sum = { ...first! }
    for (const c of rest) {
      sum.dropped += c.dropped
      sum.blocked += c.blocked
    }
    return sum
  }

  details(): Record<string, unknown> | undefined {
    return this.parts[0]!.details()
  }

  chaos(): ChaosMetrics | undefined {
    return this.parts[0]!.chaos?.()
  }

  async linger(lingerMs: number): Promise<boolean> {
    const all = await Promise.all(this.parts.map((p) => p.linger(lingerMs)))
    return all.every(Boolean)
  }

  close(): void {
    for (const x of this.extras) x.close()
    for (const p of this.parts) p.close()
  }
}
