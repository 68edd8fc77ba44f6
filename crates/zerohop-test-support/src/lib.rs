//! What zerohop's tests share and the library does not ship.
//!
//! - [`chaos`]: [`chaos::ChaosProxy`], a userspace proxy that drops, duplicates, delays
//!   and reorders datagrams (seeded): the kernel here has no netem. The fault decisions
//!   themselves are pure and live in [`zerohop_proto::chaos`].
//! - [`bench`]: pinning to a CPU and starting the same binary in another role, for
//!   benchmarks across processes.

pub mod bench;
pub mod chaos;
