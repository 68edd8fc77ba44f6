//! One error type for every transport, with a stable [`ErrorCode`].
//!
//! The codes are part of the public API: the TypeScript package exposes the same
//! strings as `ZerohopError.code`, and they never change meaning.

use zerohop_shm::ShmError;

/// Stable error codes, shared with TypeScript.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The endpoint URL is malformed or names an unknown scheme.
    BadUrl,
    /// An option is out of range or contradicts another.
    BadOption,
    /// The URL's transport is valid but not built into this version.
    UnsupportedTransport,
    /// The message does not fit the transport's maximum message size.
    MessageTooLarge,
    /// A shared-memory segment in use has another layout, or a header this build
    /// does not understand.
    LayoutMismatch,
    /// The hub was closed.
    Closed,
    /// An operation did not finish in time.
    Timeout,
    /// `fail_fast` backpressure: the receivers are a full queue behind.
    Backpressure,
    /// No free subscriber entry in the segment.
    NoCapacity,
    /// Aborted through an `AbortSignal`.
    Aborted,
    /// The operating system refused an operation.
    Io,
    /// The operation does not apply to this hub (e.g. `recv` on a publisher-only hub).
    InvalidState,
    /// A value could not be encoded, or received bytes could not be decoded.
    Codec,
    /// TLS: the peer's certificate does not chain to a trusted CA (or is otherwise invalid).
    TlsUntrusted,
    /// TLS: the peer's certificate has expired or is not valid yet.
    TlsExpired,
    /// TLS: the peer's certificate is for another name.
    TlsNameMismatch,
    /// TLS: the peer refused us (mutual TLS without an acceptable client certificate).
    TlsRefused,
    /// The connection was lost; a connecting hub reconnects by itself.
    ConnectionLost,
    /// The peer broke the protocol (garbage on a stream), so its connection was closed.
    Protocol,
    /// A peer did not read what it was sent in time and was disconnected.
    SlowConsumer,
    /// A request failed on the server (its handler threw); the message says why.
    Remote,
}

impl ErrorCode {
    /// Every code, for tests and generated docs.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::BadUrl,
        ErrorCode::BadOption,
        ErrorCode::UnsupportedTransport,
        ErrorCode::MessageTooLarge,
        ErrorCode::LayoutMismatch,
        ErrorCode::Closed,
        ErrorCode::Timeout,
        ErrorCode::Backpressure,
        ErrorCode::NoCapacity,
        ErrorCode::Aborted,
        ErrorCode::Io,
        ErrorCode::InvalidState,
        ErrorCode::Codec,
        ErrorCode::TlsUntrusted,
        ErrorCode::TlsExpired,
        ErrorCode::TlsNameMismatch,
        ErrorCode::TlsRefused,
        ErrorCode::ConnectionLost,
        ErrorCode::Protocol,
        ErrorCode::SlowConsumer,
        ErrorCode::Remote,
    ];

    /// The stable string, e.g. `"ERR_BAD_URL"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadUrl => "ERR_BAD_URL",
            ErrorCode::BadOption => "ERR_BAD_OPTION",
            ErrorCode::UnsupportedTransport => "ERR_UNSUPPORTED_TRANSPORT",
            ErrorCode::MessageTooLarge => "ERR_MESSAGE_TOO_LARGE",
            ErrorCode::LayoutMismatch => "ERR_LAYOUT_MISMATCH",
            ErrorCode::Closed => "ERR_CLOSED",
            ErrorCode::Timeout => "ERR_TIMEOUT",
            ErrorCode::Backpressure => "ERR_BACKPRESSURE",
            ErrorCode::NoCapacity => "ERR_NO_CAPACITY",
            ErrorCode::Aborted => "ERR_ABORTED",
            ErrorCode::Io => "ERR_IO",
            ErrorCode::InvalidState => "ERR_INVALID_STATE",
            ErrorCode::Codec => "ERR_CODEC",
            ErrorCode::TlsUntrusted => "ERR_TLS_UNTRUSTED",
            ErrorCode::TlsExpired => "ERR_TLS_EXPIRED",
            ErrorCode::TlsNameMismatch => "ERR_TLS_NAME_MISMATCH",
            ErrorCode::TlsRefused => "ERR_TLS_REFUSED",
            ErrorCode::ConnectionLost => "ERR_CONNECTION_LOST",
            ErrorCode::Protocol => "ERR_PROTOCOL",
            ErrorCode::SlowConsumer => "ERR_SLOW_CONSUMER",
            ErrorCode::Remote => "ERR_REMOTE",
        }
    }

    /// Whether trying the same operation again later can succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Timeout
                | ErrorCode::Backpressure
                | ErrorCode::NoCapacity
                | ErrorCode::Io
                | ErrorCode::ConnectionLost
                | ErrorCode::SlowConsumer
        )
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A zerohop error: a stable code and a message that says what went wrong.
#[derive(Clone, Debug)]
pub struct Error {
    code: ErrorCode,
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), source: None }
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message (without the code).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying can succeed.
    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }

    /// `ERR_CLOSED`.
    pub fn closed() -> Self {
        Error::new(ErrorCode::Closed, "the hub is closed")
    }

    /// `ERR_BAD_OPTION` saying why.
    pub fn bad_option(why: impl Into<String>) -> Self {
        Error::new(ErrorCode::BadOption, why)
    }

    /// `ERR_MESSAGE_TOO_LARGE`: a `what` (message, request) of `len` bytes, over `max`.
    pub fn too_large(what: &str, len: usize, max: usize) -> Self {
        Error::new(ErrorCode::MessageTooLarge, format!("{what} of {len} bytes exceeds the limit of {max} bytes"))
    }

    /// `ERR_UNSUPPORTED_TRANSPORT`: `scheme`:// hubs cannot do `what`.
    pub fn unsupported(scheme: &str, what: &str) -> Self {
        Error::new(ErrorCode::UnsupportedTransport, format!("{scheme}:// hubs have no {what}"))
    }

    /// `ERR_INVALID_STATE` for a hub opened without the role an operation needs.
    pub fn role(needs: &str) -> Self {
        let opened = if needs == "publish" { "subscriber" } else { "publisher" };
        Error::new(ErrorCode::InvalidState, format!("this hub was opened with role '{opened}' and cannot {needs}"))
    }

    /// An operating-system error while doing `what`, with the code it deserves: an
    /// address in use or not ours is the URL's fault, a refused argument an option's.
    pub fn io(what: &str, e: std::io::Error) -> Self {
        let code = match e.kind() {
            std::io::ErrorKind::AddrInUse
            | std::io::ErrorKind::AddrNotAvailable
            | std::io::ErrorKind::PermissionDenied => ErrorCode::BadUrl,
            std::io::ErrorKind::InvalidInput => ErrorCode::BadOption,
            _ => ErrorCode::Io,
        };
        Error { code, message: format!("{what}: {e}"), source: Some(std::sync::Arc::new(e)) }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ShmError> for Error {
    fn from(e: ShmError) -> Self {
        let code = match &e {
            ShmError::BadName(_) => ErrorCode::BadUrl,
            ShmError::BadLayout(_) => ErrorCode::BadOption,
            ShmError::LayoutMismatch { .. } | ShmError::Incompatible(_) => ErrorCode::LayoutMismatch,
            ShmError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            ShmError::RingFull | ShmError::NoCredits | ShmError::SideFull { .. } => ErrorCode::Backpressure,
            ShmError::Timeout(_) => ErrorCode::Timeout,
            ShmError::NoSubscriberSlot { .. } => ErrorCode::NoCapacity,
            ShmError::Io { .. } => ErrorCode::Io,
        };
        Error { code, message: e.to_string(), source: Some(std::sync::Arc::new(e)) }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(c.as_str().starts_with("ERR_"));
            assert!(seen.insert(c.as_str()), "duplicate {c}");
        }
    }

    #[test]
    fn shm_errors_map_to_codes() {
        let e: Error = ShmError::MessageTooLarge { len: 10, max: 5 }.into();
        assert_eq!(e.code(), ErrorCode::MessageTooLarge);
        assert!(!e.retryable());
        assert_eq!(e.to_string(), "ERR_MESSAGE_TOO_LARGE: message of 10 bytes exceeds the limit of 5 bytes");
        let e: Error = ShmError::RingFull.into();
        assert!(e.retryable());
    }
}
