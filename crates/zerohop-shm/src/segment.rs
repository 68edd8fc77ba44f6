//! A named shared-memory segment: a `0600` file under `/dev/shm`, mapped shared.
//!
//! Life cycle, with `flock(2)` as the liveness record (the kernel drops a dead
//! process's locks, so nothing depends on a process exiting cleanly):
//!
//! - **create**: make a `0600` file under a private temporary name, take `LOCK_SH`,
//!   size and initialise it, then `link(2)` it to the segment's name. The name only
//!   ever points at a complete segment; if another creator linked first, join theirs.
//! - **open**: take `LOCK_SH`. If `LOCK_EX` can then be had, nobody else has the
//!   segment open: it is stale (its users died), so it is unlinked and created afresh.
//!   Otherwise the header must be ready and match.
//! - **close**: unmap; if `LOCK_EX` can be had we are the last user and unlink the name.
//!
//! A creator that crashes mid-initialisation leaves only a `.zerohop-*.tmp` file behind,
//! never a half-made segment under the real name.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Result, ShmError};
use crate::handoff::{self, Handoff, Rendezvous};
use crate::layout::{LAYOUT_VERSION, Layout, MAGIC, STATE_READY, offsets};

/// Where segments live unless `ZEROHOP_SHM_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/dev/shm";
/// Prefix of every segment file, so `ls /dev/shm/zerohop-*` lists ours.
pub const FILE_PREFIX: &str = "zerohop-";
const INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to open a segment.
#[derive(Clone, Debug, Default)]
pub struct SegmentOptions {
    /// The layout to create with. `None` adopts an existing segment's layout and
    /// creates with [`Layout::default`]; `Some` must match an existing segment in use.
    pub layout: Option<Layout>,
    /// Directory of the segment files; defaults to `$ZEROHOP_SHM_DIR` or `/dev/shm`.
    pub dir: Option<PathBuf>,
}

/// An open, mapped segment. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Segment {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
    file: File,
    path: PathBuf,
    created: bool,
    released: AtomicBool,
    /// A memfd segment's part in handing it to joiners ([`Segment::open_memfd`]).
    handoff: Option<std::sync::Mutex<Handoff>>,
    /// The directory the segment was opened in (`None`: a private one).
    dir: Option<PathBuf>,
    /// Its name (empty for a private one).
    name: String,
    /// The bells of other processes' readers this process rang, open for writing (see
    /// [`crate::ring::bell`]): by subscriber entry.
    pub(crate) rung_bells: std::sync::Mutex<Vec<(u32, File)>>,
}

// SAFETY: the mapping is process-wide memory that stays valid until `Drop`; all
// concurrent access to it goes through atomics or the ring's seqlock protocol, never
// through Rust references to non-atomic data.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only hands out atomics and raw pointers.
unsafe impl Sync for Segment {}

/// Checks a segment name: 1–200 characters of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 200 {
        return Err(ShmError::BadName(format!("must be 1 to 200 characters, got {}", name.len())));
    }
    if name.starts_with('.') {
        return Err(ShmError::BadName(format!("'{name}' must not start with a dot")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(ShmError::BadName(format!("'{name}' contains '{c}'; use letters, digits, '.', '_' or '-'")));
    }
    Ok(())
}

/// The directory segments are created in.
pub fn segment_dir(options: &SegmentOptions) -> PathBuf {
    options
        .dir
        .clone()
        .or_else(|| std::env::var_os("ZEROHOP_SHM_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// The file that backs segment `name`.
pub fn segment_path(name: &str, options: &SegmentOptions) -> PathBuf {
    segment_dir(options).join(format!("{FILE_PREFIX}{name}"))
}

impl Segment {
    /// Opens segment `name`, creating it if it does not exist or is stale. Every stale
    /// segment of the directory goes first (see [`remove_stale`]).
    pub fn open(name: &str, options: &SegmentOptions) -> Result<Segment> {
        validate_name(name)?;
        if let Some(layout) = &options.layout {
            layout.validate().map_err(ShmError::BadLayout)?;
        }
        let dir = segment_dir(options);
        remove_stale(&dir);
        let path = segment_path(name, options);
        let deadline = Instant::now() + INIT_TIMEOUT;
        loop {
            if Instant::now() > deadline {
                return Err(ShmError::Timeout("a segment that is usable (it keeps being replaced)"));
            }
            // 1. Join the segment under this name, if there is one.
            match File::options().read(true).write(true).open(&path) {
                Ok(file) => {
                    if !lock_until(&file, libc::LOCK_SH, deadline)? {
                        continue;
                    }
                    if try_lock(&file, libc::LOCK_EX)? {
                        // Nobody else holds it: whoever used it is gone. Replace it.
                        unlink_if_same(&path, &file);
                        continue;
                    }
                    // The failed upgrade may have dropped our shared lock (conversions are
                    // not atomic); take it again, then check the name still points here.
                    if !lock_until(&file, libc::LOCK_SH, deadline)? || !is_linked(&file)? {
                        continue;
                    }
                    return Self::attach(file, path, options.layout).map(|s| s.in_dir(dir, name));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ShmError::Io { op: "open segment", source }),
            }
            // 2. Create one. It is built under a private name and linked into place only
            //    when complete, so nobody ever sees a half-made segment under `name`.
            if let Some(segment) = Self::create(&path, options.layout.unwrap_or_default())? {
                return Ok(segment.in_dir(dir, name));
            }
            // Someone else linked theirs first: join it.
        }
    }

    /// Opens segment `name` as a memfd (see [`crate::handoff`]): its descriptor from a
    /// process that holds it, or a new one if nobody does. It has no file under the
    /// segment directory, only a `0600` socket there (and two lock files) that holders
    /// hand it over on, to processes of their own user.
    pub fn open_memfd(name: &str, options: &SegmentOptions) -> Result<Segment> {
        validate_name(name)?;
        if let Some(layout) = &options.layout {
            layout.validate().map_err(ShmError::BadLayout)?;
        }
        let dir = segment_dir(options);
        remove_stale(&dir);
        let rendezvous = Rendezvous::new(&dir, name);
        let layout = options.layout.unwrap_or_default();
        let (memfd, created, handoff) = handoff::join_or_create(&rendezvous, || {
            let label = CString::new(format!("{FILE_PREFIX}{name}")).map_err(|_| ShmError::BadName(name.into()))?;
            // SAFETY: a valid NUL-terminated name; memfd_create returns a new fd or -1.
            let fd = unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(ShmError::last_os("memfd_create"));
            }
            // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
            let made = Self::initialise(unsafe { File::from_raw_fd(fd) }, PathBuf::new(), layout, 0)?;
            made.file.try_clone().map_err(|source| ShmError::Io { op: "dup memfd", source })
        })?;
        let mut segment = Self::attach(memfd, PathBuf::new(), if created { None } else { options.layout })?;
        segment.created = created;
        segment.handoff = Some(std::sync::Mutex::new(handoff));
        Ok(segment.in_dir(dir, name))
    }

    /// A segment only this process can see: anonymous memory (`memfd_create`), no name,
    /// nothing to clean up if the process dies. Transports that receive from the
    /// network use one as the ring between their I/O thread and the application, so
    /// that receiving works exactly as it does over shared memory.
    ///
    /// `extra` bytes follow the slots, for the owner's own use (a receive ring keeps
    /// messages larger than a slot there); [`len`](Self::len) counts them.
    pub fn private(layout: Layout, extra: usize) -> Result<Segment> {
        layout.validate().map_err(ShmError::BadLayout)?;
        // SAFETY: a valid NUL-terminated name; memfd_create returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(c"zerohop-private".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(ShmError::last_os("memfd_create"));
        }
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        Self::initialise(file, PathBuf::new(), layout, extra)
    }

    fn create(path: &Path, layout: Layout) -> Result<Option<Segment>> {
        static UNIQUE: AtomicU32 = AtomicU32::new(0);
        layout.validate().map_err(ShmError::BadLayout)?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(
            ".{file_name}.{}.{}.tmp",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = create_exclusive(&tmp).map_err(|source| ShmError::Io { op: "create segment", source })?;
        let result = Self::initialise(file, tmp.clone(), layout, 0).and_then(|mut segment| {
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => {
                    segment.path = path.to_path_buf();
                    Ok(Some(segment))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
                Err(source) => Err(ShmError::Io { op: "link segment into place", source }),
            }
        });
        let _ = std::fs::remove_file(&tmp);
        result
    }

    fn initialise(file: File, path: PathBuf, layout: Layout, extra: usize) -> Result<Segment> {
        // In use from birth: once linked, openers find a holder and do not replace it.
        if !try_lock(&file, libc::LOCK_SH)? {
            return Err(ShmError::Io { op: "lock new segment", source: std::io::ErrorKind::WouldBlock.into() });
        }
        let len = layout.segment_len() as usize + extra;
        file.set_len(len as u64).map_err(|source| ShmError::Io { op: "size segment", source })?;
        let ptr = map(&file, len)?;
        let segment = Segment {
            ptr,
            len,
            layout,
            file,
            path,
            created: true,
            released: AtomicBool::new(false),
            handoff: None,
            dir: None,
            name: String::new(),
            rung_bells: std::sync::Mutex::new(Vec::new()),
        };
        let w = |off: usize, v: u32| segment.word(off).store(v, Ordering::Relaxed);
        w(offsets::MAGIC_LO, MAGIC as u32);
        w(offsets::MAGIC_HI, (MAGIC >> 32) as u32);
        w(offsets::LAYOUT_VERSION, LAYOUT_VERSION);
        w(offsets::HEADER_LEN, layout.header_len() as u32);
        w(offsets::SLOT_SIZE, layout.slot_size);
        w(offsets::CAPACITY, layout.capacity);
        w(offsets::SLOT_STRIDE, layout.slot_stride() as u32);
        w(offsets::MAX_SUBSCRIBERS, layout.max_subscribers);
        w(offsets::CREATOR_PID, std::process::id());
        w(offsets::POOL_SIZE, layout.pool_size);
        segment.word(offsets::STATE).store(STATE_READY, Ordering::Release);
        Ok(segment)
    }

    fn attach(file: File, path: PathBuf, requested: Option<Layout>) -> Result<Segment> {
        let size = file.metadata().map_err(|source| ShmError::Io { op: "stat segment", source })?.len() as usize;
        if size < offsets::SUBSCRIBERS {
            return Err(ShmError::Incompatible(format!("{size} bytes is too small for a header")));
        }
        let ptr = map(&file, size)?;
        let mut segment = Segment {
            ptr,
            len: size,
            layout: Layout { slot_size: 0, capacity: 0, max_subscribers: 0, pool_size: 0 },
            file,
            path,
            created: false,
            released: AtomicBool::new(false),
            handoff: None,
            dir: None,
            name: String::new(),
            rung_bells: std::sync::Mutex::new(Vec::new()),
        };
        let r = |off: usize| segment.word(off).load(Ordering::Acquire);
        let magic = r(offsets::MAGIC_LO) as u64 | (r(offsets::MAGIC_HI) as u64) << 32;
        if magic != MAGIC {
            return Err(ShmError::Incompatible(format!("magic {magic:#018x} is not a zerohop segment")));
        }
        if r(offsets::STATE) != STATE_READY {
            return Err(ShmError::Incompatible("header was never finished by its creator".into()));
        }
        let version = r(offsets::LAYOUT_VERSION);
        if version != LAYOUT_VERSION {
            return Err(ShmError::Incompatible(format!(
                "layout version {version}, this build speaks version {LAYOUT_VERSION}"
            )));
        }
        let found = Layout {
            slot_size: r(offsets::SLOT_SIZE),
            capacity: r(offsets::CAPACITY),
            max_subscribers: r(offsets::MAX_SUBSCRIBERS),
            pool_size: r(offsets::POOL_SIZE),
        };
        let consistent = found.validate().is_ok()
            && r(offsets::HEADER_LEN) as usize == found.header_len()
            && r(offsets::SLOT_STRIDE) as usize == found.slot_stride()
            && found.segment_len() as usize <= size;
        if !consistent {
            return Err(ShmError::Incompatible(format!("header fields are inconsistent: {found:?} in {size} bytes")));
        }
        if let Some(requested) = requested
            && requested != found
        {
            return Err(ShmError::LayoutMismatch { requested, found });
        }
        segment.layout = found;
        Ok(segment)
    }

    /// The segment's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether this handle created the segment (as opposed to joining it).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Whether this is a [`Segment::private`] one (no file another process can open).
    pub fn is_private(&self) -> bool {
        self.path.as_os_str().is_empty() && self.handoff.is_none()
    }

    /// Whether this is a [`Segment::open_memfd`] one.
    pub fn is_memfd(&self) -> bool {
        self.handoff.is_some()
    }

    /// The directory it was opened in, where its side-path sockets live too
    /// ([`crate::side`]); `None` for a [`Segment::private`] one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Its name, as opened (empty for a [`Segment::private`] one).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn in_dir(mut self, dir: PathBuf, name: &str) -> Self {
        self.dir = Some(dir);
        self.name = name.to_owned();
        self
    }

    /// The backing file's path (empty for a [`Segment::private`] one).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: a segment has at least a header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `u32` at byte `offset`, as an atomic.
    ///
    /// # Panics
    /// If `offset` is unaligned or out of bounds: offsets come from [`Layout`], so
    /// that is a bug in this crate.
    pub fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len, "word offset {offset} outside segment");
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned) per the assert;
        // the memory lives as long as `self`; AtomicU32 has the layout of u32 and all
        // processes access these words atomically.
        unsafe { &*(self.ptr.add(offset) as *const AtomicU32) }
    }

    /// The `u64` at byte `offset` (8-aligned), as an atomic: the ring's tail, which
    /// publishers claim with one compare-and-swap of both its words.
    ///
    /// # Panics
    /// As [`word`](Self::word).
    pub fn word64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len, "u64 offset {offset} outside segment");
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned) per the assert;
        // the memory lives as long as `self`; AtomicU64 has the layout of u64 and all
        // processes access it atomically (JavaScript through its two u32 halves, loads
        // only, and compare-and-swaps of the low half that x86 and arm64 order with
        // this one: both are atomic read-modify-writes of the same cache line).
        unsafe { &*(self.ptr.add(offset) as *const AtomicU64) }
    }
}

impl Segment {
    /// Stops being a user of the segment: if nobody else has it open, unlinks its name.
    /// The mapping stays valid until the last `Arc<Segment>` drops (JavaScript views
    /// may be collected later than a hub is closed). Idempotent; `Drop` calls it too.
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(h) = &self.handoff {
            h.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stop();
        }
        if !self.path.as_os_str().is_empty() && matches!(try_lock(&self.file, libc::LOCK_EX), Ok(true)) {
            unlink_if_same(&self.path, &self.file);
        }
        // SAFETY: flock on our own valid fd; dropping our lock is always allowed.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }

    /// Whether [`Segment::release`] was called.
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.release();
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no reference into the
        // mapping outlives `self` (every user holds an Arc<Segment>).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// How old a creator's temporary file must be before it counts as left by a creator
/// that died: it is unlocked for a moment after it is made, and a creator that lives
/// links it into place within milliseconds.
const TEMPORARY_FILE_AGE: Duration = Duration::from_secs(60);

/// Removes the segments in `dir` that nobody uses any more (every process that had one
/// open died without closing it: the kernel dropped their locks, the files stayed), and
/// what creators that died half-way left. Returns the file names removed. Another
/// user's segments are left alone: their `0600` files do not open for us.
pub fn remove_stale(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else { continue };
        let hidden = name.strip_prefix('.').is_some_and(|n| n.starts_with(FILE_PREFIX));
        if name.starts_with(crate::side::SOCKET_PREFIX) {
            // A side-path server's socket: gone with its server.
            let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if crate::side::abandoned(&entry.path(), old.is_some_and(|age| age >= TEMPORARY_FILE_AGE)) {
                let _ = std::fs::remove_file(entry.path());
                removed.push(name.to_owned());
            }
            continue;
        }
        if name.starts_with(crate::ring::bell::FILE_PREFIX) {
            // A reader's bell: gone with its reader (nobody holds it open). One still
            // being made (`.new`, not opened yet) only once it is old.
            let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            let settled = !name.ends_with(".new") || old.is_some_and(|age| age >= TEMPORARY_FILE_AGE);
            if settled && crate::ring::bell::abandoned(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
                removed.push(name.to_owned());
            }
            continue;
        }
        if hidden && name.ends_with(".memfd.live") {
            // A memfd segment's rendezvous: gone with its last holder.
            let path = entry.path();
            if let Ok(live) = File::options().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(&path)
                && matches!(try_lock(&live, libc::LOCK_EX), Ok(true))
                && matches!(is_linked(&live), Ok(true))
                && let Some(rendezvous) = Rendezvous::of_live_file(&path)
            {
                rendezvous.remove();
                removed.push(name.to_owned());
            }
            continue;
        }
        let temporary = name.strip_prefix('.').is_some_and(|n| n.starts_with(FILE_PREFIX)) && name.ends_with(".tmp");
        if !name.starts_with(FILE_PREFIX) && !temporary {
            continue;
        }
        let path = entry.path();
        if temporary {
            let young = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if young.is_none_or(|age| age < TEMPORARY_FILE_AGE) {
                continue;
            }
        }
        // Opened as a user opens it: a file we may not write is not ours to remove.
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(file) = File::options().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(&path) else {
            continue;
        };
        // Every user holds LOCK_SH for as long as it has the segment open.
        if matches!(try_lock(&file, libc::LOCK_EX), Ok(true)) {
            unlink_if_same(&path, &file);
            removed.push(name.to_owned());
        }
    }
    removed
}

fn create_exclusive(path: &Path) -> std::io::Result<File> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path; open returns a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // open(2) applies the umask; make the mode exactly 0600 regardless.
    // SAFETY: fd was just returned by open and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: fchmod on a valid fd we own.
    unsafe { libc::fchmod(file.as_raw_fd(), 0o600) };
    Ok(file)
}

fn map(file: &File, len: usize) -> Result<*mut u8> {
    // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks the
    // address, so no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, file.as_raw_fd(), 0)
    };
    if ptr == libc::MAP_FAILED {
        return Err(ShmError::last_os("mmap segment"));
    }
    Ok(ptr.cast())
}

/// `flock(op | LOCK_NB)`: true if taken, false if someone else holds a conflicting lock.
pub(crate) fn try_lock(file: &File, op: libc::c_int) -> Result<bool> {
    loop {
        // SAFETY: flock on a valid fd.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(ShmError::last_os("flock segment")),
        }
    }
}

/// Retries `try_lock` until `deadline`; false if it could not be had in time.
fn lock_until(file: &File, op: libc::c_int, deadline: Instant) -> Result<bool> {
    loop {
        if try_lock(file, op)? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub(crate) fn is_linked(file: &File) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata().map_err(|source| ShmError::Io { op: "stat segment", source })?.nlink() > 0)
}

/// Unlinks `path` only if it still names `file` (not a newer segment of the same name).
fn unlink_if_same(path: &Path, file: &File) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(ours), Ok(named)) = (file.metadata(), std::fs::metadata(path)) else { return };
    if ours.ino() == named.ino() && ours.dev() == named.dev() {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, layout: Option<Layout>) -> SegmentOptions {
        SegmentOptions { layout, dir: Some(dir.to_path_buf()) }
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "zerohop-seg-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// memfd segments: a second open gets the first one's memory (no file under the
    /// directory), another layout is refused, the next holder serves when the first
    /// closes, a new one is made once nobody holds it, and the next open of anything
    /// removes what their rendezvous left.
    #[test]
    fn memfd_segments_are_handed_over_and_leave_nothing() {
        let dir = tempdir();
        let layout = Layout { slot_size: 64, capacity: 8, max_subscribers: 2, pool_size: 0 };
        let tail = |s: &Segment| s.word(offsets::TAIL_LO).load(Ordering::SeqCst);
        let a = Segment::open_memfd("m", &opts(&dir, Some(layout))).unwrap();
        assert!(a.created() && a.is_memfd() && !a.is_private());
        let b = Segment::open_memfd("m", &opts(&dir, None)).unwrap();
        assert!(!b.created());
        assert_eq!(*b.layout(), layout);
        a.word(offsets::TAIL_LO).store(42, Ordering::SeqCst);
        assert_eq!(tail(&b), 42, "one memory");
        assert!(!segment_path("m", &opts(&dir, None)).exists(), "no named segment file");
        let other = Layout { capacity: 16, ..layout };
        assert!(matches!(Segment::open_memfd("m", &opts(&dir, Some(other))), Err(ShmError::LayoutMismatch { .. })));
        drop(a);
        let c = Segment::open_memfd("m", &opts(&dir, None)).unwrap();
        assert!(!c.created());
        assert_eq!(tail(&c), 42, "handed over by the second holder");
        drop((b, c));
        let d = Segment::open_memfd("m", &opts(&dir, Some(layout))).unwrap();
        assert!(d.created() && tail(&d) == 0, "nobody held it: a new one");
        drop(d);
        drop(Segment::open("other", &opts(&dir, Some(layout))).unwrap());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("memfd"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// Opens `names` in a child process that exits without closing them (as a killed
    /// one would): the files stay, and nobody holds them.
    fn orphan(dir: &Path, names: &[&str]) {
        // SAFETY: the child only opens segments and exits; the parent waits for it.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let opened: Vec<_> = names.iter().map(|n| Segment::open(n, &opts(dir, None))).collect();
            let code = i32::from(opened.iter().any(Result::is_err));
            // SAFETY: ends the child without running anything of the parent's (nor the
            // segments' Drop, which would close them cleanly).
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert_eq!(status, 0, "the child opened the segments");
    }

    #[test]
    fn segments_whose_users_died_go_at_the_next_open_of_any_name() {
        let dir = tempdir();
        orphan(&dir, &["gone-1", "gone-2"]);
        for name in ["gone-1", "gone-2"] {
            assert!(segment_path(name, &opts(&dir, None)).exists());
        }
        let live = Segment::open("live", &opts(&dir, None)).unwrap();
        for name in ["gone-1", "gone-2"] {
            assert!(!segment_path(name, &opts(&dir, None)).exists(), "{name} left behind");
        }
        assert!(remove_stale(&dir).is_empty(), "a segment in use stays");
        assert!(live.path().exists());
        // A creator's temporary file: kept while it may still be at work, removed once old.
        let young = dir.join(".zerohop-young.1.0.tmp");
        let old = dir.join(".zerohop-old.1.0.tmp");
        for path in [&young, &old] {
            File::create(path).unwrap();
        }
        let long_ago = std::time::SystemTime::now() - TEMPORARY_FILE_AGE * 2;
        File::options().write(true).open(&old).unwrap().set_modified(long_ago).unwrap();
        assert_eq!(remove_stale(&dir), vec![".zerohop-old.1.0.tmp".to_owned()]);
        assert!(young.exists());
        drop(live);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("market-data.v1_x").is_ok());
        for bad in ["", ".hidden", "a/b", "sp ace", "ü", &"x".repeat(201)] {
            assert!(matches!(validate_name(bad), Err(ShmError::BadName(_))), "{bad}");
        }
    }

    #[test]
    fn create_join_and_unlink_on_last_close() {
        let dir = tempdir();
        let a = Segment::open("s1", &opts(&dir, None)).unwrap();
        assert!(a.created());
        let path = a.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = Segment::open("s1", &opts(&dir, Some(Layout::default()))).unwrap();
        assert!(!b.created());
        assert_eq!(b.layout(), a.layout());
        drop(a);
        assert!(path.exists(), "b still holds it");
        drop(b);
        assert!(!path.exists(), "last close unlinks");
    }

    #[test]
    fn layout_mismatch_is_an_error_while_in_use() {
        let dir = tempdir();
        let _a = Segment::open("s2", &opts(&dir, None)).unwrap();
        let other = Layout { capacity: 64, ..Layout::default() };
        let err = Segment::open("s2", &opts(&dir, Some(other))).unwrap_err();
        assert!(matches!(err, ShmError::LayoutMismatch { .. }), "{err}");
    }

    #[test]
    fn stale_and_garbage_files_are_replaced() {
        let dir = tempdir();
        let path = dir.join(format!("{FILE_PREFIX}s3"));
        // A file nobody holds: a crashed creator, or garbage. It is replaced.
        std::fs::write(&path, b"definitely not a segment").unwrap();
        let s = Segment::open("s3", &opts(&dir, None)).unwrap();
        assert!(s.created());
    }

    #[test]
    fn concurrent_creators_all_end_up_on_one_segment() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempdir();
        for round in 0..20 {
            let name = format!("race{round}");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (dir, name, barrier) = (dir.clone(), name.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Segment::open(&name, &opts(&dir, None)).unwrap()
                    })
                })
                .collect();
            let segments: Vec<Segment> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let inodes: std::collections::HashSet<u64> =
                segments.iter().map(|s| s.file.metadata().unwrap().ino()).collect();
            assert_eq!(inodes.len(), 1, "round {round}: openers split across {} segments", inodes.len());
            assert_eq!(segments.iter().filter(|s| s.created()).count(), 1, "exactly one creator");
            let path = segments[0].path().to_path_buf();
            drop(segments);
            assert!(!path.exists(), "the last close unlinks");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).collect();
        assert!(
            leftovers.iter().all(|e| !e.file_name().to_string_lossy().starts_with(".zerohop-race")),
            "temporary files left"
        );
    }

    #[test]
    fn corrupt_header_in_use_is_incompatible() {
        let dir = tempdir();
        let a = Segment::open("s4", &opts(&dir, None)).unwrap();
        a.word(offsets::LAYOUT_VERSION).store(99, Ordering::SeqCst);
        let err = Segment::open("s4", &opts(&dir, None)).unwrap_err();
        assert!(matches!(err, ShmError::Incompatible(_)), "{err}");
    }
}
