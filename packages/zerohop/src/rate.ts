/**
 * The rate limit of a shared-memory hub, which publishes from JavaScript (a network
 * hub's is kept in Rust, where its publishes go): token buckets of messages and bytes,
 * as `zerohop_transport::rate` keeps them, with the same meaning of the options and
 * the same policies.
 */
import { BackpressureError, TimeoutError } from './errors.js'
import type { BackpressurePolicy } from './options.js'

/** Tokens at a rate a second, up to a burst; a take larger than the burst passes when full and leaves it owing. */
class Bucket {
  private tokens: number
  private at = performance.now()

  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {
    this.tokens = burst
  }

  /** Milliseconds until `n` tokens are there (0: now). */
  waitMs(n: number, now: number): number {
    const tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate)
    const missing = Math.min(n, this.burst) - tokens
    return missing <= 0 ? 0 : (missing / this.rate) * 1000
  }

  take(n: number, now: number): void {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate) - n
    this.at = now
  }
}

/** What the native side resolved of the rate options. */
export interface RateSettings {
  rateLimit?: number | null
  rateLimitBytes?: number | null
  rateBurstMs?: number | null
}

/** See the module docs. */
export class RateLimiter {
  /** Publishes discarded or refused for the limit. */
  limited = 0
  private readonly messages: Bucket | undefined
  private readonly bytes: Bucket | undefined
  private readonly sleeper = new Int32Array(new SharedArrayBuffer(4))

  private constructor(
    s: RateSettings,
    private readonly policy: BackpressurePolicy,
    private readonly timeoutMs: number,
  ) {
    const burstS = (s.rateBurstMs ?? 50) / 1000
    this.messages = s.rateLimit ? new Bucket(s.rateLimit, Math.max(1, s.rateLimit * burstS)) : undefined
    this.bytes = s.rateLimitBytes ? new Bucket(s.rateLimitBytes, Math.max(1, s.rateLimitBytes * burstS)) : undefined
  }

  /** A limiter for these settings, or none when they set no limit. */
  static of(s: RateSettings, policy: BackpressurePolicy, timeoutMs: number): RateLimiter | undefined {
    return s.rateLimit || s.rateLimitBytes ? new RateLimiter(s, policy, timeoutMs) : undefined
  }

  private waitMs(len: number, now: number): number {
    return Math.max(this.messages?.waitMs(1, now) ?? 0, this.bytes?.waitMs(len, now) ?? 0)
  }

  /** Whether a `len`-byte message may go now (what `send()` waits for). */
  hasRoom(len: number): boolean {
    return this.waitMs(len, performance.now()) === 0
  }

  /**
   * Whether a `len`-byte message may go, as the policy says: true to publish it, false
   * if it is discarded; throws `ERR_BACKPRESSURE` (`fail_fast`) or, after the publish
   * timeout, `ERR_TIMEOUT` (`block`, which waits synchronously).
   */
  admit(len: number): boolean {
    let now = performance.now()
    let wait = this.waitMs(len, now)
    if (wait > 0) {
      if (this.policy !== 'block') {
        this.limited++
        if (this.policy === 'fail_fast') throw new BackpressureError("over the hub's rate limit")
        return false
      }
      const deadline = now + this.timeoutMs
      while (wait > 0) {
        if (now + wait > deadline) {
          this.limited++
          throw new TimeoutError("over the hub's rate limit for publishTimeoutMs")
        }
        Atomics.wait(this.sleeper, 0, 0, Math.ceil(wait))
        now = performance.now()
        wait = this.waitMs(len, now)
      }
    }
    this.messages?.take(1, now)
    this.bytes?.take(len, now)
    return true
  }
}
