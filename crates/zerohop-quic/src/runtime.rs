//! The async runtime the network transports share.
//!
//! One tokio runtime per process, made when the first hub needs it and shut down when
//! the last [`SharedRuntime`] handle drops. Its worker threads never keep a process
//! alive: shutting down does not wait for tasks (they are connection drivers, told to
//! close before their hub lets go), so closing the last hub, or a Node process
//! exiting, cannot hang on it.

use std::io;
use std::sync::{Arc, Mutex, Weak};

/// How many worker threads: network I/O is light next to the application's thread, so
/// one, or two on machines with more than four cores.
fn worker_threads() -> usize {
    match std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) {
        n if n > 4 => 2,
        _ => 1,
    }
}

/// A handle on the process's network runtime; clones share it.
#[derive(Clone, Debug)]
pub struct SharedRuntime(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Safe from any thread, including one of the runtime's own, and never blocks.
            rt.shutdown_background();
        }
    }
}

static SHARED: Mutex<Weak<Inner>> = Mutex::new(Weak::new());

impl SharedRuntime {
    /// The process's runtime, started if no handle exists.
    pub fn get() -> io::Result<SharedRuntime> {
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = slot.upgrade() {
            return Ok(SharedRuntime(inner));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("zerohop-net")
            .enable_all()
            .build()?;
        let inner = Arc::new(Inner { runtime: Some(runtime) });
        *slot = Arc::downgrade(&inner);
        Ok(SharedRuntime(inner))
    }

    /// The tokio handle, to spawn tasks or enter the runtime's context.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.runtime.as_ref().expect("present until dropped").handle()
    }

    /// Whether a runtime is running in this process now (for tests and metrics).
    pub fn is_running() -> bool {
        SHARED.lock().unwrap_or_else(|p| p.into_inner()).strong_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_while_handles_live_and_none_after() {
        // Tests in this binary run in parallel; this one owns the runtime's life cycle,
        // so it checks identity through the handles rather than the global flag.
        let a = SharedRuntime::get().unwrap();
        let b = SharedRuntime::get().unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a.handle().block_on(async { 40 + 2 }), 42);
        let weak = Arc::downgrade(&a.0);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "the last handle shut it down");
        // A new one starts on demand.
        let c = SharedRuntime::get().unwrap();
        assert_eq!(c.handle().block_on(async { 7 }), 7);
    }
}
