/**
 * Codecs turn values into message bytes and back.
 *
 * Built in: `'raw'` (`Uint8Array` as is), `'json'`, `'msgpack'` (msgpackr), and fixed
 * layouts made with {@link struct}, which read and write straight in shared memory.
 * Any object with `encode`/`decode` works too.
 */
import { Packr } from 'msgpackr'
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

/** Raw bytes: publish `Uint8Array`s, receive copies of them. */
export const raw: Codec<Uint8Array> = {
  name: 'raw',
  encode(value: Uint8Array): Uint8Array {
    if (!(value instanceof Uint8Array)) {
      throw new CodecError(`the raw codec publishes Uint8Array (or Buffer), got ${describe(value)}`)
    }
    return value
  },
  decode(bytes: Uint8Array): Uint8Array {
    // A copy with a buffer of its own. The constructor costs less than `slice()`:
    // up to 64 bytes V8 keeps the copy on its heap (39 against 53 ns), and larger ones
    // skip `slice`'s species lookup (254 against 305 ns at 100 bytes, Node 20).
    return new Uint8Array(bytes)
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
