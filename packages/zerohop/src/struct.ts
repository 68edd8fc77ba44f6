/**
 * Fixed binary layouts that live in shared memory.
 *
 * ```ts
 * const Tick = struct({ seq: 'u64', price: 'f64', volume: 'u64' })
 * await using hub = await Hub.open('shm://ticks', { codec: Tick })
 * hub.publish({ seq: 1n, price: 50_000, volume: 100n })
 * const loan = hub.loan(); loan.value.price = 1; loan.commit()   // written in place
 * ```
 *
 * Fields are laid out in declaration order with natural alignment (as a C compiler
 * would), little-endian. `u64`/`i64` are `bigint`, `bool` is `boolean`, the rest are
 * `number`.
 */
import { CodecError, BadOptionError } from './errors.js'

export type FieldType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64' | 'u64' | 'i64' | 'bool'

type FieldValue<F extends FieldType> = F extends 'u64' | 'i64' ? bigint : F extends 'bool' ? boolean : number

/** The object type of a struct definition. */
export type StructValue<D extends Record<string, FieldType>> = { -readonly [K in keyof D]: FieldValue<D[K]> }

const SIZES: Record<FieldType, number> = { u8: 1, i8: 1, bool: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, f64: 8, u64: 8, i64: 8 }

interface Field {
  readonly name: string
  readonly type: FieldType
  readonly offset: number
}

/** A live view of one struct in a buffer: property reads and writes go to memory. */
export interface StructView {
  /** A plain-object copy of the fields. */
  toJSON(): Record<string, unknown>
}

type ViewCtor = new (dv: DataView, offset: number) => StructView & { _dv: DataView; _off: number }

/** A fixed-layout codec; create with {@link struct}. */
export class StructCodec<T> {
  readonly name: string
  /** Bytes per value. */
  readonly size: number
  readonly fields: readonly Field[]
  private readonly View: ViewCtor
  private readonly scratch: Uint8Array
  private readonly scratchView: DataView

  constructor(definition: Record<string, FieldType>) {
    const entries = Object.entries(definition)
    if (entries.length === 0) throw new BadOptionError('struct() needs at least one field')
    let offset = 0
    let align = 1
    const fields: Field[] = []
    for (const [name, type] of entries) {
      const size = SIZES[type as FieldType]
      if (size === undefined) {
        throw new BadOptionError(`struct field '${name}' has type '${String(type)}'; expected one of ${Object.keys(SIZES).join(', ')}`)
      }
      if (name === 'toJSON' || name.startsWith('_')) throw new BadOptionError(`struct field name '${name}' is reserved`)
      offset = Math.ceil(offset / size) * size
      fields.push({ name, type: type as FieldType, offset })
      offset += size
      align = Math.max(align, size)
    }
    this.size = Math.ceil(offset / align) * align
    this.fields = fields
    this.name = `struct{${entries.map(([n, t]) => `${n}:${t}`).join(',')}}`
    this.View = makeView(fields)
    this.scratch = new Uint8Array(this.size)
    this.scratchView = new DataView(this.scratch.buffer)
  }

  /** Writes `value` at `offset` of `dv`. */
  write(dv: DataView, offset: number, value: T): void {
    const v = value as Record<string, unknown>
    if (typeof value !== 'object' || value === null) throw new CodecError(`${this.name} encodes objects, got ${value === null ? 'null' : typeof value}`)
    for (const f of this.fields) writeField(dv, offset + f.offset, f, v[f.name])
  }

  /** Reads a plain object at `offset` of `dv`. */
  read(dv: DataView, offset: number): T {
    const out: Record<string, unknown> = {}
    for (const f of this.fields) out[f.name] = readField(dv, offset + f.offset, f.type)
    return out as T
  }

  /** A live view at `offset` of `dv`: reads and writes go straight to memory. */
  view(dv: DataView, offset: number): T & StructView {
    return new this.View(dv, offset) as unknown as T & StructView
  }

  /** Points an existing view elsewhere (no allocation). */
  retarget(view: StructView, offset: number): void {
    ;(view as unknown as { _off: number })._off = offset
  }

  /** Encodes into a scratch buffer reused by the next call. */
  encode(value: T): Uint8Array {
    this.write(this.scratchView, 0, value)
    return this.scratch
  }

  /** Decodes a plain object. */
  decode(bytes: Uint8Array): T {
    if (bytes.byteLength < this.size) throw new CodecError(`${this.name} needs ${this.size} bytes, message has ${bytes.byteLength}`)
    return this.read(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0)
  }
}

/** Defines a fixed layout. */
export function struct<const D extends Record<string, FieldType>>(definition: D): StructCodec<StructValue<D>> {
  return new StructCodec<StructValue<D>>(definition)
}

function writeField(dv: DataView, at: number, f: Field, v: unknown): void {
  switch (f.type) {
    case 'u64':
    case 'i64':
      if (typeof v !== 'bigint') throw new CodecError(`field '${f.name}' (${f.type}) needs a bigint, got ${typeof v}`)
      if (f.type === 'u64') dv.setBigUint64(at, v, true)
      else dv.setBigInt64(at, v, true)
      return
    case 'bool':
      dv.setUint8(at, v ? 1 : 0)
      return
    default:
      if (typeof v !== 'number') throw new CodecError(`field '${f.name}' (${f.type}) needs a number, got ${typeof v}`)
      setNumber(dv, at, f.type, v)
  }
}

function setNumber(dv: DataView, at: number, type: FieldType, v: number): void {
  switch (type) {
    case 'u8': dv.setUint8(at, v); break
    case 'i8': dv.setInt8(at, v); break
    case 'u16': dv.setUint16(at, v, true); break
    case 'i16': dv.setInt16(at, v, true); break
    case 'u32': dv.setUint32(at, v, true); break
    case 'i32': dv.setInt32(at, v, true); break
    case 'f32': dv.setFloat32(at, v, true); break
    case 'f64': dv.setFloat64(at, v, true); break
    default: throw new CodecError(`not a number field: ${type}`)
  }
}

function readField(dv: DataView, at: number, type: FieldType): unknown {
  switch (type) {
    case 'u8': return dv.getUint8(at)
    case 'i8': return dv.getInt8(at)
    case 'bool': return dv.getUint8(at) !== 0
    case 'u16': return dv.getUint16(at, true)
    case 'i16': return dv.getInt16(at, true)
    case 'u32': return dv.getUint32(at, true)
    case 'i32': return dv.getInt32(at, true)
    case 'f32': return dv.getFloat32(at, true)
    case 'f64': return dv.getFloat64(at, true)
    case 'u64': return dv.getBigUint64(at, true)
    case 'i64': return dv.getBigInt64(at, true)
  }
}

/** A class whose properties read and write the fields in place. */
function makeView(fields: readonly Field[]): ViewCtor {
  class View {
    _dv: DataView
    _off: number
    constructor(dv: DataView, offset: number) {
      this._dv = dv
      this._off = offset
    }
    toJSON(): Record<string, unknown> {
      const out: Record<string, unknown> = {}
      for (const f of fields) out[f.name] = readField(this._dv, this._off + f.offset, f.type)
      return out
    }
  }
  for (const f of fields) {
    Object.defineProperty(View.prototype, f.name, {
      enumerable: true,
      get(this: View) {
        return readField(this._dv, this._off + f.offset, f.type)
      },
      set(this: View, v: unknown) {
        writeField(this._dv, this._off + f.offset, f, v)
      },
    })
  }
  return View as unknown as ViewCtor
}
