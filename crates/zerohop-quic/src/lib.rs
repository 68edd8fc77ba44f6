//! zerohop over QUIC (quinn). **In progress** (issue 4): this crate has the pieces the
//! transport will stand on, and nothing behind `Hub` uses it yet, so `quic://` still
//! reports `ERR_UNSUPPORTED_TRANSPORT`.
//!
//! - [`runtime`]: the one async runtime a process's network hubs share.
//! - [`tls`]: server identities (self-signed for development, PEM files for production),
//!   client trust (a CA bundle, or a loudly named accept-anything for development),
//!   mutual TLS, TLS 1.3 with 0-RTT.
//!
//! Messages on streams use [`zerohop_proto::stream`] framing.

pub mod node;
pub mod runtime;
pub mod tls;

pub use node::{Inbound, Inbox, NodeConfig, NodeMetrics, Overflow, QuicNode, Role, StatusEvent};
pub use runtime::SharedRuntime;
pub use tls::{ALPN, HandshakeFailure, Identity, TlsError, Trust};
