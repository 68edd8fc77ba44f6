//! Bells: a waiting reader is woken through a descriptor it polls, rather than on the
//! `notify` futex. A JavaScript reader's event loop (libuv) polls it itself, where a
//! thread parked on the futex on its behalf would then have to wake the loop: one
//! thread hop fewer between a publisher and the reader. And a publisher rings only the
//! readers that wait, never its own hub's (which does not read what the hub
//! publishes), where a futex wakes everyone parked on it: a bridge forwarding into a
//! segment does not wake its own reader of it.
//!
//! A reader's bell is a FIFO in the segment's directory
//! (`.zerohop-bell-<segment>.<entry>`, `0600`), which the reader holds open for reading
//! and writing. To wait, the reader counts itself in `bells`, marks its table entry
//! [`WAITING`] (in that order: a count is never taken back before it is there), and
//! looks at its cursor again: the publisher's side of the handshake is the `waiters` one
//! (a committed stamp, then the count and the marks, each `SeqCst`), so either the
//! reader sees the message or the publisher sees the mark. A publisher that sees
//! `bells > 0` looks through the subscriber table, takes each wait it finds
//! ([`WAITING`] → [`RUNG`], and the count back: the next publish skips the table) and
//! writes a byte into that reader's FIFO. Whoever moves an entry out of [`WAITING`]
//! takes its count back: the publisher that rang it, the reader that stopped waiting
//! unrung, or the publisher that found the reader dead (its FIFO held open by nobody).
//!
//! A FIFO of a reader that died stays behind until a segment of the directory is next
//! opened ([`crate::segment::remove_stale`]).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// What a bell's file name starts with.
pub const FILE_PREFIX: &str = ".zerohop-bell-";

/// [`offsets::SUB_PARKED`]: the reader waits on its bell, and nobody rang it yet.
pub(super) const WAITING: u32 = 2;
/// [`offsets::SUB_PARKED`]: a publisher rang the bell; the reader has not looked yet.
pub(super) const RUNG: u32 = 3;

/// Where entry `entry` of `seg` keeps its bell (`None`: a segment without a directory).
fn path_of(seg: &Segment, entry: u32) -> Option<PathBuf> {
    let dir = seg.dir()?;
    (!seg.name().is_empty()).then(|| dir.join(format!("{FILE_PREFIX}{}.{entry}", seg.name())))
}

/// Whether the bell at `path` has no reader any more (its FIFO refuses a writer).
pub fn abandoned(path: &Path) -> bool {
    let is_fifo = std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_fifo()
    });
    is_fifo && open_for_ringing(path).is_err_and(|e| e.raw_os_error() == Some(libc::ENXIO))
}

fn open_for_ringing(path: &Path) -> std::io::Result<File> {
    File::options().write(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(path)
}

/// What [`Bell::arm`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Armed {
    /// The message at the cursor is there: read it.
    Readable,
    /// The bell rings once it is.
    Waiting,
    /// At a hole: wait as [`Subscriber::wait`] does.
    AtHole,
}

/// A reader's bell (see the module docs): the reader polls [`fd`](Self::fd) while it
/// waits.
#[derive(Debug)]
pub struct Bell {
    mem: RingMemory,
    entry: u32,
    fifo: File,
    path: PathBuf,
}

impl Bell {
    /// A bell for the reader holding table `entry` of `seg`; `None` for a segment
    /// without a directory (a private one).
    pub fn new(seg: Arc<Segment>, entry: u32) -> Result<Option<Bell>> {
        let Some(path) = path_of(&seg, entry) else { return Ok(None) };
        let io = |op: &'static str| move |source| ShmError::Io { op, source };
        // Made under a name of its own, opened, then moved into place: nobody ever
        // finds the name with no reader behind it (see `abandoned`).
        let fresh = path.with_file_name(format!(
            "{}.{}.new",
            path.file_name().map_or_else(Default::default, |n| n.to_string_lossy()),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&fresh);
        let c = std::ffi::CString::new(fresh.as_os_str().as_bytes())
            .map_err(|_| ShmError::Io { op: "name a bell", source: std::io::ErrorKind::InvalidInput.into() })?;
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(io("make a bell")(std::io::Error::last_os_error()));
        }
        // Read and write: a FIFO with a writer (itself) never polls as hung up.
        let fifo = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&fresh)
            .map_err(io("open a bell"));
        let fifo = fifo.and_then(|f| std::fs::rename(&fresh, &path).map(|()| f).map_err(io("place a bell")));
        if fifo.is_err() {
            let _ = std::fs::remove_file(&fresh);
        }
        Ok(Some(Bell { mem: RingMemory::new(seg), entry, fifo: fifo?, path }))
    }

    /// The descriptor that polls readable once the bell was rung.
    pub fn fd(&self) -> RawFd {
        self.fifo.as_raw_fd()
    }

    /// Waits for the ring to hold messages past `cursor`, unless it does already, or
    /// the message at `cursor` is a hole (published past, not at: its publisher is
    /// writing it, or died) that a bell would not ring for: the reader waits for that
    /// one as [`Subscriber::wait`] does (which repairs it, if its publisher died). Until
    /// [`settle`](Self::settle), a reader that waits counts as waiting.
    pub fn arm(&self, cursor: u64) -> Armed {
        if readable_at(&self.mem, cursor) {
            return Armed::Readable;
        }
        same_cpu::note_parking(&self.mem, self.entry);
        // Counted before it is marked: a publisher that finds the mark takes back a
        // count that is there. (Marked first, a reader held up between the two could
        // have its count taken back before it was added: `bells` would read 0 meanwhile,
        // and publishers would ring nobody, missing the other readers that wait.)
        self.mem.word(offsets::BELLS).fetch_add(1, Ordering::SeqCst);
        self.mem.sub_parked(self.entry).store(WAITING, Ordering::SeqCst);
        // The reader's half of the handshake (see the module docs).
        let armed = if readable_at(&self.mem, cursor) {
            Armed::Readable
        } else if self.mem.tail() > cursor {
            Armed::AtHole
        } else {
            return Armed::Waiting;
        };
        self.settle();
        armed
    }

    /// Waits up to `timeout` for the bell to ring (a reader without an event loop).
    pub fn wait(&self, timeout: Duration) {
        let mut p = libc::pollfd { fd: self.fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: one valid pollfd and a valid timespec for the duration of the call; no
        // signal mask.
        unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    }

    /// Rings this bell (a reader that found its message as it armed, and wants the ring
    /// it would have had).
    pub fn ring_itself(&self) {
        use std::io::Write;
        let _ = (&self.fifo).write(&[1]);
    }

    /// What rings this bell from another thread (one that waited at a hole for it).
    pub fn ringer(&self) -> Result<impl Fn() + Send + 'static> {
        let fifo = self.fifo.try_clone().map_err(|source| ShmError::Io { op: "share a bell", source })?;
        Ok(move || {
            use std::io::Write;
            let _ = (&fifo).write(&[1]);
        })
    }

    /// The wait is over (rung, or given up): empties the FIFO, and takes the count back
    /// if nobody rang.
    pub fn settle(&self) {
        if self.mem.sub_parked(self.entry).swap(0, Ordering::SeqCst) == WAITING {
            take_count_back(&self.mem);
        }
        // A read that does not fill the sink emptied the FIFO: no second read to meet
        // `EAGAIN` (one system call a wake-up, as a socket's reader makes). A ring that
        // comes after it leaves the FIFO readable, as it should.
        let mut sink = [0u8; 64];
        while matches!((&self.fifo).read(&mut sink), Ok(n) if n == sink.len()) {}
    }
}

impl Drop for Bell {
    fn drop(&mut self) {
        self.settle();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn take_count_back(mem: &RingMemory) {
    let _ = mem.word(offsets::BELLS).fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
}

/// Rings the bells of the readers that wait on theirs (a publisher that saw `bells > 0`),
/// but `own`'s (the publishing hub's own reader, which does not read what it publishes).
/// Whether it rang one that parked on `cpu`, the calling thread's (see [`same_cpu`]).
pub(super) fn ring_waiting(mem: &RingMemory, own: Option<u32>, cpu: u32) -> bool {
    let mut rang_here = false;
    for entry in (0..mem.layout.max_subscribers).filter(|e| Some(*e) != own) {
        let parked = mem.sub_parked(entry);
        if parked.load(Ordering::SeqCst) != WAITING
            || parked.compare_exchange(WAITING, RUNG, Ordering::SeqCst, Ordering::Relaxed).is_err()
        {
            continue;
        }
        take_count_back(mem);
        if ring(mem, entry) {
            rang_here |= same_cpu::parked_on(mem, entry, cpu);
        } else {
            // Nobody holds the FIFO open: its reader died waiting (the entry is reaped
            // with the others; a live reader would have it open).
            let pid = mem.sub_pid(entry).load(Ordering::Acquire);
            if !process_alive(pid) {
                let _ = parked.compare_exchange(RUNG, 0, Ordering::SeqCst, Ordering::Relaxed);
            }
        }
    }
    rang_here
}

/// Writes a byte into entry `entry`'s bell; false if it has no reader.
fn ring(mem: &RingMemory, entry: u32) -> bool {
    let seg = &mem.seg;
    let mut rung = seg.rung_bells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for attempt in 0..2 {
        let at = rung.iter().position(|(e, _)| *e == entry);
        let file = match at {
            Some(i) => &rung[i].1,
            None => {
                let Some(path) = path_of(seg, entry) else { return false };
                match open_for_ringing(&path) {
                    Ok(f) => {
                        rung.push((entry, f));
                        &rung.last().expect("just pushed").1
                    }
                    Err(_) => return false,
                }
            }
        };
        // SAFETY: one byte from a live buffer into a descriptor we hold open.
        let n = unsafe { libc::write(file.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        let error = (n < 0).then(std::io::Error::last_os_error);
        match error.and_then(|e| e.raw_os_error()) {
            // Full: rung already, and not read yet.
            None | Some(libc::EAGAIN) => return true,
            // The FIFO this descriptor is of lost its reader (another took the entry
            // since, with a bell of its own): open the one there now, once.
            _ => {
                if let Some(i) = rung.iter().position(|(e, _)| *e == entry) {
                    rung.swap_remove(i);
                }
                if attempt == 1 {
                    return false;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentOptions;

    fn segment(name: &str) -> Arc<Segment> {
        let dir = std::env::temp_dir().join(format!("zerohop-bell-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layout = Layout { slot_size: 64, capacity: 8, max_subscribers: 4, pool_size: 0 };
        Arc::new(Segment::open(name, &SegmentOptions { layout: Some(layout), dir: Some(dir) }).unwrap())
    }

    /// Whether `fd` polls readable within `ms`.
    fn rings(fd: RawFd, ms: i32) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    fn bells(seg: &Segment) -> u32 {
        seg.word(offsets::BELLS).load(Ordering::SeqCst)
    }

    #[test]
    fn a_publish_rings_a_waiting_readers_bell_once_and_takes_its_count_back() {
        let seg = segment("rings");
        let sub = Subscriber::new(seg.clone()).unwrap();
        let bell = Bell::new(seg.clone(), sub.index).unwrap().expect("a segment with a directory has bells");
        assert_eq!(bell.arm(sub.cursor()), Armed::Waiting);
        assert_eq!(bells(&seg), 1);
        assert!(!rings(bell.fd(), 0));
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        p.publish(b"a").unwrap();
        assert!(rings(bell.fd(), 1000), "the bell rang");
        assert_eq!(bells(&seg), 0, "the ringer took the count back: the next publish looks at no table");
        assert_eq!(mem_parked(&seg, sub.index), RUNG);
        p.publish(b"b").unwrap();
        bell.settle();
        assert!(!rings(bell.fd(), 0), "one byte per wait, drained");
        assert_eq!(mem_parked(&seg, sub.index), 0);
        // Readable at once: no wait, nothing counted.
        assert_eq!(bell.arm(sub.cursor()), Armed::Readable);
        assert_eq!(bells(&seg), 0);
    }

    fn mem_parked(seg: &Arc<Segment>, entry: u32) -> u32 {
        RingMemory::new(seg.clone()).sub_parked(entry).load(Ordering::SeqCst)
    }

    #[test]
    fn a_block_publisher_that_announces_later_announces_before_it_waits_for_room() {
        let seg = segment("block-later");
        let mut sub = Subscriber::new(seg.clone()).unwrap();
        let bell = Bell::new(seg.clone(), sub.index).unwrap().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut got = 0;
            while got < 20 {
                if sub.try_recv(&mut out).is_some() {
                    got += 1;
                } else if bell.arm(sub.cursor()) == Armed::Waiting {
                    // Only a ring wakes it: no time slice to look again by itself.
                    assert!(rings(bell.fd(), 10_000), "never rung");
                    bell.settle();
                }
            }
            got
        });
        let mut p = Publisher::new(seg.clone(), Backpressure::Block);
        p.set_announce_later(true);
        p.set_timeout(Duration::from_secs(5));
        // 20 messages into an 8-slot ring, announced only as the publisher waits for room.
        for i in 0..20u8 {
            p.publish(&[i]).unwrap();
        }
        p.announce();
        assert_eq!(reader.join().unwrap(), 20);
    }

    #[test]
    fn a_reader_that_stops_waiting_unrung_takes_its_count_back() {
        let seg = segment("unrung");
        let sub = Subscriber::new(seg.clone()).unwrap();
        let bell = Bell::new(seg.clone(), sub.index).unwrap().unwrap();
        assert_eq!(bell.arm(sub.cursor()), Armed::Waiting);
        bell.settle();
        assert_eq!(bells(&seg), 0);
        assert_eq!(mem_parked(&seg, sub.index), 0);
    }

    #[test]
    fn a_hole_is_not_waited_for_on_the_bell() {
        let seg = segment("hole");
        let sub = Subscriber::new(seg.clone()).unwrap();
        let bell = Bell::new(seg.clone(), sub.index).unwrap().unwrap();
        let mut writing = Publisher::new(seg.clone(), Backpressure::DropOld);
        let loan = writing.loan().unwrap().unwrap(); // claimed, not committed
        assert_eq!(bell.arm(sub.cursor()), Armed::AtHole);
        assert_eq!(bells(&seg), 0, "not counted: nobody would ring it");
        drop(loan);
    }

    #[test]
    fn a_hub_does_not_ring_its_own_readers_bell() {
        let seg = segment("own");
        let own = Subscriber::new(seg.clone()).unwrap();
        let other = Subscriber::new(seg.clone()).unwrap();
        let (own_bell, other_bell) = (
            Bell::new(seg.clone(), own.index).unwrap().unwrap(),
            Bell::new(seg.clone(), other.index).unwrap().unwrap(),
        );
        own_bell.arm(own.cursor());
        other_bell.arm(other.cursor());
        let mut p = Publisher::new(seg.clone(), Backpressure::DropOld);
        p.set_own_entry(Some(own.index));
        p.publish(b"a").unwrap();
        assert!(rings(other_bell.fd(), 1000));
        assert!(!rings(own_bell.fd(), 50), "its own reader skips what the hub publishes");
        own_bell.settle();
        assert_eq!(bells(&seg), 0);
    }

    #[test]
    fn a_bell_goes_with_its_reader_and_one_without_a_reader_is_abandoned() {
        let seg = segment("goes");
        let sub = Subscriber::new(seg.clone()).unwrap();
        let bell = Bell::new(seg.clone(), sub.index).unwrap().unwrap();
        let path = bell.path.clone();
        assert!(!abandoned(&path), "its reader holds it open");
        drop(bell);
        assert!(!path.exists(), "removed with its reader");
        // One a reader left behind (it died): no reader, so a writer is refused.
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(abandoned(&path));
        // Ringing it finds no reader: nothing hangs or breaks, and a new bell replaces it.
        let mem = RingMemory::new(seg.clone());
        assert!(!ring(&mem, sub.index));
        let bell = Bell::new(seg.clone(), sub.index).unwrap().unwrap();
        assert!(ring(&mem, sub.index));
        assert!(rings(bell.fd(), 1000));
        std::fs::remove_file(&path).ok();
        drop(bell);
    }
}
