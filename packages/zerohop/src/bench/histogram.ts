/**
 * A high-dynamic-range histogram of durations (as HdrHistogram does it): every power of
 * two is split into 128 buckets of equal width, so a value's bucket is within 0.8 % of
 * it from a nanosecond to hours, in a few thousand counters, and recording is a shift
 * and an increment (no allocation). Percentiles are read from the buckets; histograms of
 * several processes or rounds add up (`add`, `toJSON`/`fromJSON`).
 */

/** Buckets per power of two, as bits: 2^7 = 128 (a bucket's width is under 1/128 of its values). */
const SUB_BITS = 7
const SUB = 1 << SUB_BITS
/** Up to 2^42 ns (73 minutes); longer durations count as that. */
const TOP_SHIFT = 42 - SUB_BITS
const BUCKETS = (TOP_SHIFT + 2) * SUB

/** The bucket of `v` (a whole number ≥ 0). */
function indexOf(v: number): number {
  if (v < SUB) return v
  const e = v < 2 ** 32 ? 31 - Math.clz32(v) : Math.floor(Math.log2(v))
  const shift = Math.min(e - SUB_BITS, TOP_SHIFT)
  const sub = Math.min(Math.floor(v / 2 ** shift), 2 * SUB - 1)
  return (shift + 1) * SUB + (sub - SUB)
}

/** The lowest and highest value of bucket `i`. */
function rangeOf(i: number): [number, number] {
  if (i < SUB) return [i, i]
  const shift = Math.floor(i / SUB) - 1
  const sub = (i % SUB) + SUB
  return [sub * 2 ** shift, (sub + 1) * 2 ** shift - 1]
}

/** The form a histogram travels in between processes: its non-empty buckets. */
export interface HistogramJSON {
  buckets: [index: number, count: number][]
  min: number
  max: number
  sum: number
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS)
  count = 0
  min = Infinity
  max = 0
  sum = 0

  /** Counts one duration of `ns` nanoseconds. */
  record(ns: number): void {
    const v = ns > 0 ? Math.round(ns) : 0
    this.counts[indexOf(v)]!++
    this.count++
    this.sum += v
    if (v < this.min) this.min = v
    if (v > this.max) this.max = v
  }

  /** Adds what `other` counted. */
  add(other: Histogram): this {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!
    this.count += other.count
    this.sum += other.sum
    this.min = Math.min(this.min, other.min)
    this.max = Math.max(this.max, other.max)
    return this
  }

  /**
   * The value at or below which a share `q` (0..1) of the durations lie: the highest
   * value of that bucket (as HdrHistogram reports it), but never above the largest seen.
   */
  percentile(q: number): number {
    if (this.count === 0) return NaN
    const rank = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!
      if (seen >= rank) return Math.min(rangeOf(i)[1], this.max)
    }
    return this.max
  }

  /** The mean, in ns. */
  get mean(): number {
    return this.count === 0 ? NaN : this.sum / this.count
  }

  toJSON(): HistogramJSON {
    const buckets: [number, number][] = []
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i]! > 0) buckets.push([i, this.counts[i]!])
    return { buckets, min: this.min, max: this.max, sum: this.sum }
  }

  static fromJSON(json: HistogramJSON): Histogram {
    const h = new Histogram()
    for (const [i, n] of json.buckets) {
      if (!(Number.isInteger(i) && i >= 0 && i < BUCKETS && n >= 0)) throw new RangeError(`not a histogram bucket: ${i}`)
      h.counts[i]! += n
      h.count += n
    }
    h.min = h.count === 0 ? Infinity : json.min
    h.max = json.max
    h.sum = json.sum
    return h
  }
}
