/**
 * The native binding, loaded once. Everything that calls into Rust goes through
 * here so that native errors come out as {@link ZerohopError}s.
 */
import * as binding from '../native/binding.js'
import { type ErrorCode, errorFor, fromNative } from './errors.js'
import type { HubStatus, StatusEvent } from './port.js'

export type {
  BridgeDirectionMetrics,
  BridgeMetrics,
  ShmHandle,
  ShmLayoutInfo,
  ShmOffsets,
  ParsedEndpoint,
  NetHandle,
  NetStatusEvent,
} from '../native/binding.js'
/** The hot-path handle of a network hub (an opaque native value, from `NetHandle.link()`). */
export type NetLink = { readonly __brand: 'NetLink' }
/**
 * A network hub's per-message calls, bound to its link (`netBind(link)`), and its
 * stage: memory the addon reads a message of up to its size from, so that
 * `publishStaged` takes only a length (absent where Node-API cannot share memory).
 */
export type NetCalls = {
  /** `now`: send it at once, with what is batched before it (a flush). */
  publish(bytes: Uint8Array, channel: number, now?: boolean): boolean
  publishStaged(len: number, channel: number, now?: boolean): boolean
  /** `publishStaged` of a message that expires at `expiresAtMs` (ms since the Unix epoch: `ttlMs`). */
  publishStagedExpiring(len: number, channel: number, expiresAtMs: number): boolean
  pump(): number
  readonly stage: ArrayBuffer | undefined
}
/** What arms a network hub's doorbell (an opaque native value, from `NetHandle.waker()`). */
export type NetWaker = { readonly __brand: 'NetWaker' }

/**
 * The per-message calls of network hubs, written against Node-API directly
 * (`crates/zerohop-node/src/fast.rs`), so the generated declarations do not list them.
 * They throw native errors: wrap them in {@link native}.
 */
export const fast = binding as unknown as {
  netBind(link: NetLink): NetCalls
  netArm(waker: NetWaker, cursor: number): void
}
export { binding }

/** Runs `fn`, converting a native error into its `ZerohopError` class. */
export function native<R>(fn: () => R): R {
  try {
    return fn()
  } catch (e) {
    throw fromNative(e)
  }
}

/** A native status event, with its error as a `ZerohopError`. */
export function statusEvent(e: binding.NetStatusEvent): StatusEvent {
  const event: StatusEvent = { status: e.status as HubStatus }
  if (e.peer != null) event.peer = e.peer
  if (e.attempt != null) event.attempt = e.attempt
  if (e.code != null) event.error = errorFor(e.code as ErrorCode, e.message ?? '')
  return event
}
