//! What benchmarks across processes share: pinning to a CPU, and the same binary
//! started again in another role (`ZEROHOP_BENCH_ROLE`), so that one file holds a
//! benchmark and its peers.

use std::process::{Child, Command, Stdio};

/// Pins the calling thread (and the threads it starts after) to `cpu`. Failure (fewer
/// CPUs) leaves it unpinned.
pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it, and
    // sched_setaffinity only reads `size_of` bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The role this process was started in ([`spawn_role`]), if any.
pub fn role() -> Option<String> {
    std::env::var("ZEROHOP_BENCH_ROLE").ok()
}

/// This executable again, in `role`, with `args`; its stdout as `stdout` says.
pub fn spawn_role(role: &str, args: &[String], stdout: Stdio) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args(args)
        .env("ZEROHOP_BENCH_ROLE", role)
        .stdout(stdout)
        .spawn()
        .expect("spawn a peer")
}
