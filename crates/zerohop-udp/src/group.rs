//! Several receive threads on one port: `SO_REUSEPORT` sockets, one per thread (one
//! per core by default, each pinned to its core when asked). The kernel spreads flows
//! over the sockets by source address, so every peer's datagrams reach one thread,
//! whose per-peer [`Inbox`](zerohop_proto::datagram::Inbox) sees them in order.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often receive threads publish their counters.
pub const METRICS_EVERY: Duration = Duration::from_millis(100);
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::pipeline::{PipelineConfig, Received, UdpMetrics, UdpPipeline};

/// A message handler: `(thread, message)`, called on the receiving thread.
pub type Deliver = Arc<dyn Fn(usize, Received<'_>) + Send + Sync>;

/// Flow control, asked by thread `i` before each receive: waits up to the given time
/// until the consumer of `Deliver` has room for another batch; false if it still has
/// none (the thread then leaves datagrams in the socket's buffer and asks again).
pub type Gate = Arc<dyn Fn(usize, Duration) -> bool + Send + Sync>;

/// Receive threads sharing one port.
#[derive(Debug)]
pub struct ReceiverGroup {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Each thread's counters, refreshed every [`METRICS_EVERY`].
    snapshots: Arc<Vec<Mutex<UdpMetrics>>>,
    threads: Vec<JoinHandle<io::Result<UdpMetrics>>>,
}

/// How many cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Pins the calling thread to core `cpu` (best effort: failure leaves it unpinned).
pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it, and
    // sched_setaffinity only reads it. Failing to pin is harmless (it only schedules).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl ReceiverGroup {
    /// Binds `threads` sockets (0 = one per core) to `config.bind` with `SO_REUSEPORT`
    /// and starts a thread on each, pinned to core `i` when `pin`. Each thread creates its
    /// own pipeline (io_uring runs a request's work on the thread that issued it) and
    /// reports the bind result before this returns, so errors reach the caller.
    pub fn start(config: PipelineConfig, threads: usize, pin: bool, deliver: Deliver) -> io::Result<Self> {
        Self::start_from(config, threads, pin, 0, deliver, None)
    }

    /// [`ReceiverGroup::start`], with thread `i` pinned to core `first_core + i` (so that
    /// a group can join a socket whose thread already has core 0), and a `gate` asked
    /// before each receive.
    pub fn start_from(
        mut config: PipelineConfig,
        threads: usize,
        pin: bool,
        first_core: usize,
        deliver: Deliver,
        gate: Option<Gate>,
    ) -> io::Result<Self> {
        let threads = if threads == 0 { available_cores() } else { threads };
        config.socket.reuse_port = true;
        config.peers.clear();
        let stop = Arc::new(AtomicBool::new(false));
        let cores = available_cores();
        let snapshots: Arc<Vec<Mutex<UdpMetrics>>> =
            Arc::new((0..threads).map(|_| Mutex::new(UdpMetrics::default())).collect());
        let mut handles = Vec::with_capacity(threads);
        let mut local: Option<SocketAddr> = None;
        for i in 0..threads {
            let mut config = config.clone();
            if let Some(addr) = local {
                config.bind = addr; // the port the first socket got
            }
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
            let (stop_flag, deliver, snapshots, gate) =
                (stop.clone(), deliver.clone(), snapshots.clone(), gate.clone());
            let handle = std::thread::Builder::new().name(format!("zerohop-udp-rx-{i}")).spawn(move || {
                if pin {
                    pin_to((first_core + i) % cores);
                }
                let mut pipeline = match UdpPipeline::bind(config) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                let _ = ready_tx.send(pipeline.local_addr());
                let mut published = Instant::now();
                let snapshot = |pipeline: &UdpPipeline| {
                    *snapshots[i].lock().unwrap_or_else(|p| p.into_inner()) = pipeline.metrics();
                };
                snapshot(&pipeline);
                while !stop_flag.load(Ordering::Relaxed) {
                    if let Some(gate) = &gate
                        && !gate(i, Duration::from_millis(50))
                    {
                        continue;
                    }
                    if pipeline.wait(50)? {
                        pipeline.poll_recv(|r| deliver(i, r))?;
                    }
                    if published.elapsed() >= METRICS_EVERY {
                        published = Instant::now();
                        snapshot(&pipeline);
                    }
                }
                // Whatever arrived before the stop.
                while pipeline.poll_recv(|r| deliver(i, r))? > 0 {}
                Ok(pipeline.metrics())
            })?;
            let ready = ready_rx.recv().unwrap_or_else(|_| Err(io::Error::other("receive thread died while binding")));
            match ready {
                Ok(addr) => {
                    local.get_or_insert(addr);
                    handles.push(handle);
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    let _ = handle.join();
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e);
                }
            }
        }
        let local = local.expect("at least one thread");
        Ok(Self { local, stop, snapshots, threads: handles })
    }

    /// The shared address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Each thread's counters as of at most [`METRICS_EVERY`] ago.
    pub fn metrics(&self) -> Vec<UdpMetrics> {
        self.snapshots.iter().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect()
    }

    /// How many sockets (threads) receive.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether the group has no threads (never: `start` makes at least one).
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Stops the threads; returns each one's metrics.
    pub fn stop(self) -> io::Result<Vec<UdpMetrics>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().map_err(|_| io::Error::other("receive thread panicked"))?).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    #[test]
    fn flows_spread_over_threads_and_each_arrives_whole_and_in_order() {
        for mode in [crate::UringMode::Off, crate::UringMode::Auto] {
            run(mode);
        }
    }

    /// (thread, from, seq, message)
    type Received = (usize, SocketAddr, u64, Vec<u8>);

    fn run(mode: crate::UringMode) {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = got.clone();
        let deliver: Deliver = Arc::new(move |t, r| sink.lock().unwrap().push((t, r.from, r.seq, r.message.to_vec())));
        let config = PipelineConfig { io_uring: mode, ..PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![]) };
        let group = ReceiverGroup::start(config, 2, true, deliver).unwrap();
        let mut senders: Vec<UdpPipeline> = (0..6)
            .map(|_| {
                UdpPipeline::bind(PipelineConfig::new("127.0.0.1:0".parse().unwrap(), vec![group.local_addr()]))
                    .unwrap()
            })
            .collect();
        for round in 0..50u8 {
            for (i, s) in senders.iter_mut().enumerate() {
                s.publish(&[i as u8, round]).unwrap();
                s.flush().unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.lock().unwrap().len() < 300 {
            assert!(Instant::now() < deadline, "{} of 300 arrived", got.lock().unwrap().len());
            std::thread::sleep(Duration::from_millis(2));
        }
        let metrics = group.stop().unwrap();
        assert_eq!(metrics.len(), 2);
        assert!(metrics.iter().all(|m| m.granted.reuse_port));
        assert_eq!(metrics.iter().map(|m| m.messages_received).sum::<u64>(), 300);
        let got = got.lock().unwrap();
        let mut by_sender: HashMap<SocketAddr, Vec<(usize, u64, Vec<u8>)>> = HashMap::new();
        for (t, from, seq, m) in got.iter() {
            by_sender.entry(*from).or_default().push((*t, *seq, m.clone()));
        }
        assert_eq!(by_sender.len(), 6);
        for (i, s) in senders.iter().enumerate() {
            let mine = &by_sender[&s.local_addr().unwrap()];
            assert!(mine.iter().all(|m| m.0 == mine[0].0), "one flow, one thread");
            let expected: Vec<(u64, Vec<u8>)> = (0..50u8).map(|r| (r as u64, vec![i as u8, r])).collect();
            assert_eq!(mine.iter().map(|m| (m.1, m.2.clone())).collect::<Vec<_>>(), expected);
        }
    }
}
