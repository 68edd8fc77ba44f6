/**
 * Codecs turn values into message bytes and back.
 *
 * Built in: `'raw'` (`Uint8Array` as is), `'json'`, `'msgpack'` (msgpackr), and fixed
 * layouts made with {@link struct}, which read and write straight in shared memory.
 * Any object with `encode`/`decode` works too.
 */
import { Packr } from 'msgpackr'
import { copyInto } from './bytes.js'
import { BadOptionError, CodecError } from './errors.js'
import { StructCodec } from './struct.js'

/** Converts values of type `T` to bytes and back. */
export interface Codec<T> {
  /** A name for metrics and errors. */
  readonly name: string
  /**
   * Bytes for `value`. The result may be a view that the next call reuses: the hub
   * copies it into the message at once.
   */
  encode(value: T): Uint8Array
  /**
   * The value in `bytes`. `bytes` may be a view over shared memory that is only valid
   * during the call: copy what you keep.
   */
  decode(bytes: Uint8Array): T
}

/**
 * Where received copies of more than 64 bytes go: slices of a shared pool, as Node's
 * own `Buffer`s and `net`'s received chunks are, rather than each into an `ArrayBuffer`
 * of its own. An `ArrayBuffer` each costs an allocation outside V8's heap and its share
 * of garbage collection: 330-350 ns a 100-byte copy against 100-120 pooled, 750-830 ns
 * a 4 KiB one against 320-470 (Node 20, 2026-12-05). Up to 64 bytes V8 keeps a copy on
 * its own heap, which costs less still; past 8 KiB a copy has its own buffer.
 */
const POOL_BYTES = 256 << 10
const POOLED_MAX = 8 << 10
let pool = new Uint8Array(0)
let poolUsed = 0

/** A copy of `bytes` in the pool (`bytes.byteLength` is 65 to `POOLED_MAX`). */
function pooledCopy(bytes: Uint8Array): Uint8Array {
  const n = bytes.length
  if (poolUsed + n > pool.length) {
    // Not zeroed: every byte handed out is written first (as `Buffer.allocUnsafe`'s pool).
    const fresh = Buffer.allocUnsafeSlow(POOL_BYTES)
    pool = new Uint8Array(fresh.buffer, fresh.byteOffset, fresh.byteLength)
    poolUsed = 0
  }
  copyInto.call(pool, bytes, poolUsed)
  const copy = pool.subarray(poolUsed, poolUsed + n)
  poolUsed = (poolUsed + n + 7) & ~7 // the next copy starts 8-byte aligned
  return copy
}

/**
 * Raw bytes: publish `Uint8Array`s, receive copies of them. A copy of more than 64
 * bytes may share its `ArrayBuffer` with other received messages, as a Node `Buffer`
 * may: read `.buffer` with `byteOffset` and `byteLength`, and do not transfer it.
 */
export const raw: Codec<Uint8Array> = {
  name: 'raw',
  encode(value: Uint8Array): Uint8Array {
    if (!(value instanceof Uint8Array)) {
      throw new CodecError(`the raw codec publishes Uint8Array (or Buffer), got ${describe(value)}`)
    }
    return value
  },
  decode(bytes: Uint8Array): Uint8Array {
    // Up to 64 bytes V8 keeps the copy on its heap; the constructor costs less than
    // `slice()` (39 against 53 ns, Node 20), and so it does past the pool's limit
    // (it skips `slice`'s species lookup).
    const n = bytes.length
    return n <= 64 || n > POOLED_MAX ? new Uint8Array(bytes) : pooledCopy(bytes)
  },
}

const utf8Encoder = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })

/** JSON text in UTF-8. */
export const json: Codec<unknown> = {
  name: 'json',
  encode(value: unknown): Uint8Array {
    let text: string | undefined
    try {
      text = JSON.stringify(value)
    } catch (e) {
      throw new CodecError(`value cannot be encoded as JSON: ${(e as Error).message}`, { cause: e })
    }
    if (text === undefined) throw new CodecError(`${describe(value)} has no JSON representation`)
    return utf8Encoder.encode(text)
  },
  decode(bytes: Uint8Array): unknown {
    try {
      return JSON.parse(utf8Decoder.decode(bytes))
    } catch (e) {
      throw new CodecError(`message is not valid JSON: ${(e as Error).message}`, { cause: e })
    }
  },
}

// copyBuffers: decoded binary fields must not alias the shared-memory slot.
const packr = new Packr({ useRecords: false, copyBuffers: true, moreTypes: true })

/** MessagePack, by msgpackr (Dates, Maps, Sets, typed arrays and bigints included). */
export const msgpack: Codec<unknown> = {
  name: 'msgpack',
  encode(value: unknown): Uint8Array {
    try {
      return packr.pack(value)
    } catch (e) {
      throw new CodecError(`value cannot be encoded as MessagePack: ${(e as Error).message}`, { cause: e })
    }
  },
  decode(bytes: Uint8Array): unknown {
    try {
      return packr.unpack(bytes)
    } catch (e) {
      throw new CodecError(`message is not valid MessagePack: ${(e as Error).message}`, { cause: e })
    }
  },
}

/** What `codec` accepts in hub options. */
export type CodecOption<T> = Codec<T> | StructCodec<T> | 'raw' | 'json' | 'msgpack'

/** Resolves a codec option (default: raw). */
export function resolveCodec<T>(option: CodecOption<T> | undefined): Codec<T> | StructCodec<T> {
  if (option === undefined || option === 'raw') return raw as unknown as Codec<T>
  if (option === 'json') return json as Codec<T>
  if (option === 'msgpack') return msgpack as Codec<T>
  if (option instanceof StructCodec) return option
  if (typeof option === 'object' && option !== null && typeof option.encode === 'function' && typeof option.decode === 'function') {
    return option
  }
  throw new BadOptionError(`codec must be 'raw', 'json', 'msgpack', a struct(...) or { encode, decode }, got ${describe(option)}`)
}

export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object'
  return typeof v
}
