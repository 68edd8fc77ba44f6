/**
 * The native binding, loaded once. Everything that calls into Rust goes through
 * here so that native errors come out as {@link ZerohopError}s.
 */
import * as binding from '../native/binding.js'
import { fromNative } from './errors.js'

export type { ShmHandle, ShmLayoutInfo, ShmOffsets, ParsedEndpoint, UdpHandle, UdpMetricsInfo } from '../native/binding.js'
/** The hot-path handle of a UDP hub (an opaque native External). */
export type UdpLink = ReturnType<binding.UdpHandle['link']>
export { binding }

/** Runs `fn`, converting a native error into its `ZerohopError` class. */
export function native<R>(fn: () => R): R {
  try {
    return fn()
  } catch (e) {
    throw fromNative(e)
  }
}
