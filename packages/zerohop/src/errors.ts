/**
 * Errors: every failure is a {@link ZerohopError} with a stable `code` and a
 * `retryable` flag. The same codes exist in the Rust crates (`zerohop::ErrorCode`).
 *
 * ```ts
 * try { await Hub.open('nope://x') } catch (e) {
 *   if (e instanceof ZerohopError && e.code === 'ERR_BAD_URL') { … }
 * }
 * ```
 */

/** Every stable error code. */
export const ERROR_CODES = [
  'ERR_BAD_URL',
  'ERR_BAD_OPTION',
  'ERR_UNSUPPORTED_TRANSPORT',
  'ERR_MESSAGE_TOO_LARGE',
  'ERR_LAYOUT_MISMATCH',
  'ERR_CLOSED',
  'ERR_TIMEOUT',
  'ERR_BACKPRESSURE',
  'ERR_NO_CAPACITY',
  'ERR_ABORTED',
  'ERR_IO',
  'ERR_INVALID_STATE',
  'ERR_CODEC',
  'ERR_TLS_UNTRUSTED',
  'ERR_TLS_EXPIRED',
  'ERR_TLS_NAME_MISMATCH',
  'ERR_TLS_REFUSED',
  'ERR_CONNECTION_LOST',
  'ERR_PROTOCOL',
  'ERR_SLOW_CONSUMER',
  'ERR_REMOTE',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'ERR_TIMEOUT',
  'ERR_BACKPRESSURE',
  'ERR_NO_CAPACITY',
  'ERR_IO',
  'ERR_CONNECTION_LOST',
  'ERR_SLOW_CONSUMER',
])

/** Whether retrying an operation that failed with `code` can succeed. */
export function isRetryable(code: ErrorCode): boolean {
  return RETRYABLE.has(code)
}

/** The base class of every error zerohop throws. */
export class ZerohopError extends Error {
  /** A stable code, e.g. `'ERR_TIMEOUT'`. */
  readonly code: ErrorCode
  /** Whether the same operation may succeed if tried again later. */
  readonly retryable: boolean

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.retryable = isRetryable(code)
    this.name = new.target.name
  }
}

/** The endpoint URL is malformed or names an unknown scheme. */
export class BadUrlError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BAD_URL', message, options)
  }
}
/** An option is out of range or contradicts another. */
export class BadOptionError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BAD_OPTION', message, options)
  }
}
/** The URL's transport is valid but not built into this version. */
export class UnsupportedTransportError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_UNSUPPORTED_TRANSPORT', message, options)
  }
}
/** The message is larger than the transport's maximum message size. */
export class MessageTooLargeError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_MESSAGE_TOO_LARGE', message, options)
  }
}
/** A shared-memory segment in use has another layout or an unknown header. */
export class LayoutMismatchError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_LAYOUT_MISMATCH', message, options)
  }
}
/** The hub is closed. */
export class ClosedError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CLOSED', message, options)
  }
}
/** An operation did not finish in time. */
export class TimeoutError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TIMEOUT', message, options)
  }
}
/** `fail_fast` backpressure: the receivers are a whole ring behind. */
export class BackpressureError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BACKPRESSURE', message, options)
  }
}
/** No free subscriber entry in the segment. */
export class NoCapacityError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NO_CAPACITY', message, options)
  }
}
/** Aborted through an `AbortSignal`; `cause` is the signal's reason. Named `AbortError` like Node's. */
export class AbortedError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_ABORTED', message, options)
    this.name = 'AbortError'
  }
}
/** The operating system refused an operation. */
export class IoError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_IO', message, options)
  }
}
/** The operation does not apply in the hub's current state or role. */
export class InvalidStateError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_STATE', message, options)
  }
}
/** A value could not be encoded, or received bytes could not be decoded. */
export class CodecError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CODEC', message, options)
  }
}

/** TLS: the peer's certificate does not chain to a trusted CA (or is otherwise invalid). */
export class TlsUntrustedError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TLS_UNTRUSTED', message, options)
  }
}
/** TLS: the peer's certificate has expired or is not valid yet. */
export class TlsExpiredError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TLS_EXPIRED', message, options)
  }
}
/** TLS: the peer's certificate is for another name. */
export class TlsNameMismatchError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TLS_NAME_MISMATCH', message, options)
  }
}
/** TLS: the peer refused us (mutual TLS without an acceptable client certificate). */
export class TlsRefusedError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TLS_REFUSED', message, options)
  }
}
/** The connection was lost; a connecting hub reconnects by itself. */
export class ConnectionLostError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CONNECTION_LOST', message, options)
  }
}
/** The peer broke the protocol, so its connection was closed. */
export class ProtocolError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PROTOCOL', message, options)
  }
}
/** A peer did not read what it was sent in time and was disconnected. */
export class SlowConsumerError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SLOW_CONSUMER', message, options)
  }
}

/** A request failed on the server (its handler threw); the message says why. */
export class RemoteError extends ZerohopError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_REMOTE', message, options)
  }
}

const CLASSES: Record<ErrorCode, new (message: string, options?: { cause?: unknown }) => ZerohopError> = {
  ERR_BAD_URL: BadUrlError,
  ERR_BAD_OPTION: BadOptionError,
  ERR_UNSUPPORTED_TRANSPORT: UnsupportedTransportError,
  ERR_MESSAGE_TOO_LARGE: MessageTooLargeError,
  ERR_LAYOUT_MISMATCH: LayoutMismatchError,
  ERR_CLOSED: ClosedError,
  ERR_TIMEOUT: TimeoutError,
  ERR_BACKPRESSURE: BackpressureError,
  ERR_NO_CAPACITY: NoCapacityError,
  ERR_ABORTED: AbortedError,
  ERR_IO: IoError,
  ERR_INVALID_STATE: InvalidStateError,
  ERR_CODEC: CodecError,
  ERR_TLS_UNTRUSTED: TlsUntrustedError,
  ERR_TLS_EXPIRED: TlsExpiredError,
  ERR_TLS_NAME_MISMATCH: TlsNameMismatchError,
  ERR_TLS_REFUSED: TlsRefusedError,
  ERR_CONNECTION_LOST: ConnectionLostError,
  ERR_PROTOCOL: ProtocolError,
  ERR_SLOW_CONSUMER: SlowConsumerError,
  ERR_REMOTE: RemoteError,
}

/** The error class for `code`. */
export function errorFor(code: ErrorCode, message: string, cause?: unknown): ZerohopError {
  return new CLASSES[code](message, cause === undefined ? undefined : { cause })
}

const NATIVE_MESSAGE = /^(ERR_[A-Z_]+): ([\s\S]*)$/

/** Turns an error thrown by the native binding ("ERR_X: message") into its class. */
export function fromNative(e: unknown): unknown {
  if (e instanceof ZerohopError || !(e instanceof Error)) return e
  const m = NATIVE_MESSAGE.exec(e.message)
  if (m && (ERROR_CODES as readonly string[]).includes(m[1]!)) {
    return errorFor(m[1] as ErrorCode, m[2]!)
  }
  return new IoError(e.message, { cause: e })
}
