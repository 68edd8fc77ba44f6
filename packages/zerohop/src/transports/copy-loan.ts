/**
 * `loan()` where the message cannot be written in place: over shared memory's Unix-socket
 * fallback (no segment), and for a message longer than the payload pool (it takes the
 * side path, a copy in any case). The loan is a buffer of the port's own, kept for the
 * next loan, and `commit()` publishes a copy of it.
 */
import { BadOptionError, InvalidStateError } from '../errors.js'
import type { Loan } from '../port.js'
import { tooLarge } from '../shm-ring.js'
import type { StructCodec, StructView } from '../struct.js'

/** A loan of a buffer of the port's own, published as a copy on commit. */
export class CopyLoan<T> implements Loan<T> {
  bytes: Uint8Array
  readonly capacity: number
  private readonly buffer: Uint8Array
  seq = 0
  /** Messages committed through this loan so far. */
  private sent = 0
  /** Between `start` and `commit` or `abort`. */
  open = false
  private readonly view: (T & StructView) | undefined
  private readonly struct: StructCodec<T> | undefined

  /**
   * A loan of `size` bytes started: `previous` (the port's last) if it is large
   * enough, else a new one; throws if `previous` is still open.
   */
  static start<T>(
    previous: CopyLoan<T> | undefined,
    size: number,
    struct: StructCodec<T> | undefined,
    publish: (bytes: Uint8Array) => boolean,
  ): CopyLoan<T> {
    let loan = previous
    if (loan === undefined || loan.capacity < size) {
      loan?.start(0) // (throws if the old one is open)
      loan = new CopyLoan<T>(size, struct, publish)
    }
    loan.start(size)
    return loan
  }

  constructor(
    size: number,
    struct: StructCodec<T> | undefined,
    private readonly publish: (bytes: Uint8Array) => boolean,
  ) {
    this.buffer = this.bytes = new Uint8Array(size)
    this.capacity = size
    this.struct = struct
    this.view = struct?.view(new DataView(this.bytes.buffer), 0)
  }

  /** Opens it for `size` bytes (at most its capacity). */
  start(size: number): void {
    if (this.open) throw new InvalidStateError('a loan is open on this hub; commit or abort it first')
    if (size === 0) return
    this.open = true
    this.seq = this.sent
    if (this.bytes.length !== size) this.bytes = this.buffer.subarray(0, size)
  }

  get value(): T {
    if (this.view === undefined) throw new InvalidStateError('loan.value needs a struct codec; write loan.bytes instead')
    return this.view
  }

  commit(len?: number): void {
    if (!this.open) throw new InvalidStateError('this loan was already committed or aborted')
    const n = len ?? (this.struct ? this.struct.size : this.bytes.length)
    if (!Number.isInteger(n) || n < 0) throw new BadOptionError(`commit length must be a non-negative integer, got ${n}`)
    if (n > this.bytes.length) throw tooLarge(n, this.bytes.length)
    this.open = false
    this.sent++
    this.publish(this.bytes.subarray(0, n))
  }

  abort(): void {
    if (!this.open) throw new InvalidStateError('this loan was already committed or aborted')
    this.open = false
  }
}
