//! Yielding to a reader woken on the publisher's CPU.
//!
//! A publisher that wakes a parked reader makes it runnable, not running: when both
//! share a CPU (a process pinned to one, its bridge thread beside its JavaScript
//! thread; two processes pinned together), the reader runs only once the publisher
//! sleeps or its time slice ends, so whatever the publisher does after the publish
//! (a JavaScript thread going back through its event loop, say) adds to the reader's
//! latency. Found with `perf sched timehist -w` on the bridge's round trip: the bridge
//! thread, woken by the JavaScript publish beside it, waited 6–13 µs for the CPU every
//! time.
//!
//! So a reader notes the CPU it parks on ([`offsets::SUB_CPU`]), and a publisher that
//! woke one parked on its own CPU yields ([`sched_yield`](libc::sched_yield)) once the
//! wakes are done: the reader runs at once, the publisher after it. A reader on another
//! CPU costs the publisher only a look at its own CPU number (the vDSO's) and at the
//! parked readers' (which a wake looks through anyway).
//!
//! Not within a burst: a publisher that woke a reader on its CPU less than [`BURST`]
//! ago carries on. Handing over on every publish of a burst would cost two context
//! switches per message, the reader taking one message each time, where a reader left
//! to wait takes the whole burst at once when it runs.

use std::cell::Cell;

use super::*;

/// Wakes of readers on the publisher's CPU closer together than this are a burst:
/// only the first yields.
pub(super) const BURST: Duration = Duration::from_micros(50);

/// The CPU the calling thread runs on, plus one (0: not known), as
/// [`offsets::SUB_CPU`] holds it.
pub(super) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).map_or(0, |c| c.saturating_add(1))
}

/// Notes, as reader `entry` parks, the CPU it parks on.
pub(super) fn note_parking(mem: &RingMemory, entry: u32) {
    mem.sub_cpu(entry).store(current_cpu(), Ordering::Relaxed);
}

/// Whether reader `entry` parked on CPU `cpu` (a [`current_cpu`] value).
pub(super) fn parked_on(mem: &RingMemory, entry: u32, cpu: u32) -> bool {
    cpu != 0 && mem.sub_cpu(entry).load(Ordering::Relaxed) == cpu
}

thread_local! {
    /// When this thread last woke a reader on its own CPU.
    static LAST_WAKE_HERE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Whether a wake of a reader on the publisher's CPU at `now` yields to it, given
/// the previous such wake of the same thread: not within a [`BURST`].
pub(super) fn yields(previous: Option<Instant>, now: Instant) -> bool {
    previous.is_none_or(|at| now.saturating_duration_since(at) >= BURST)
}

/// The publisher woke a reader parked on its own CPU: yields to it, unless within a
/// burst.
pub(super) fn woke_here() {
    let now = Instant::now();
    if yields(LAST_WAKE_HERE.replace(Some(now)), now) {
        // SAFETY: sched_yield takes no arguments; it only reschedules the caller.
        unsafe { libc::sched_yield() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::segment::SegmentOptions;

    #[test]
    fn only_the_first_wake_of_a_burst_yields() {
        let t0 = Instant::now();
        assert!(yields(None, t0), "a thread's first wake");
        assert!(!yields(Some(t0), t0 + BURST / 2), "within a burst");
        assert!(yields(Some(t0), t0 + BURST), "after a pause");
    }

    /// The CPUs this thread may run on.
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; the size is the set's.
        assert_eq!(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) }, 0);
        // SAFETY: CPU_ISSET reads the set filled above.
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
    }

    /// Pins the calling thread to `cpu`.
    fn pin(cpu: usize) {
        // SAFETY: as in `allowed_cpus`; the set holds one CPU the thread may run on.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0);
        }
    }

    fn segment(name: &str) -> Arc<Segment> {
        let dir = std::env::temp_dir().join(format!("zerohop-same-cpu-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layout = Layout { slot_size: 64, capacity: 8, max_subscribers: 4, pool_size: 0 };
        Arc::new(Segment::open(name, &SegmentOptions { layout: Some(layout), dir: Some(dir) }).unwrap())
    }

    /// Parks a reader of `seg` on `cpu` (on its bell, or on the futex), lets `wake`
    /// wake it from `publisher_cpu` once it is parked, and gives back what `wake` said.
    fn woken_from(cpu: usize, publisher_cpu: usize, on_bell: bool, seg: &Arc<Segment>) -> bool {
        let mem = RingMemory::new(seg.clone());
        let sub = Subscriber::new(seg.clone()).unwrap();
        let entry = sub.index;
        let cancel = Arc::new(AtomicBool::new(false));
        let reader = std::thread::spawn({
            let (seg, cancel) = (seg.clone(), cancel.clone());
            move || {
                pin(cpu);
                if on_bell {
                    let bell = bell::Bell::new(seg, entry).unwrap().expect("a segment with a directory has bells");
                    assert_eq!(bell.arm(sub.cursor()), bell::Armed::Waiting);
                    while !cancel.load(Ordering::SeqCst) {
                        bell.wait(Duration::from_millis(10));
                    }
                    bell.settle();
                } else {
                    while !cancel.load(Ordering::SeqCst) {
                        RingWaiter::new(seg.clone(), Some(entry)).wait(
                            sub.cursor(),
                            Duration::ZERO,
                            Some(Duration::from_millis(10)),
                            &cancel,
                        );
                    }
                }
                drop(sub);
            }
        });
        let parked = if on_bell { bell::WAITING } else { 1 };
        while mem.sub_parked(entry).load(Ordering::SeqCst) != parked {
            std::thread::yield_now();
        }
        pin(publisher_cpu);
        let woke_here = wake_parked(&mem, None);
        cancel.store(true, Ordering::SeqCst);
        reader.join().unwrap();
        woke_here
    }

    #[test]
    fn a_publisher_tells_a_reader_woken_on_its_cpu_from_one_on_another() {
        let cpus = allowed_cpus();
        let seg = segment("cpus");
        for on_bell in [true, false] {
            assert!(woken_from(cpus[0], cpus[0], on_bell, &seg), "same CPU (bell: {on_bell})");
            if let Some(&other) = cpus.get(1) {
                assert!(!woken_from(other, cpus[0], on_bell, &seg), "another CPU (bell: {on_bell})");
            }
        }
    }
}
