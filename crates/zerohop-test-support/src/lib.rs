//! What zerohop's tests share and the library does not ship.
//!
//! - [`chaos`]: [`chaos::ChaosProxy`], a userspace proxy that drops, duplicates, delays
//!   and reorders datagrams (seeded): the kernel here has no netem. The fault decisions
//!   themselves are pure and live in [`zerohop_proto::chaos`].
//! - [`bench`]: pinning to a CPU and starting the same binary in another role, for
//!   benchmarks across processes.
//! - [`nats`]: a real `nats-server` on a free loopback port.
//! - [`next_within`]: a transport's next message, waited for up to a bound.

pub mod bench;
pub mod chaos;
pub mod nats;

use std::time::{Duration, Instant};

/// The next message `t` receives within `within`, or `None` (a transport's own tests
/// wait on it this way).
pub fn next_within(t: &mut dyn zerohop_transport::Transport, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    loop {
        if t.try_recv(&mut out).unwrap().is_some() {
            return Some(out);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        t.wait_readable(Some(left.min(Duration::from_millis(50)))).unwrap();
    }
}
