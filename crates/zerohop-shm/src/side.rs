//! The side path: a message too large for a slot and for the payload pool still takes
//! its place in the ring, in order, while its bytes travel beside it.
//!
//! The publisher writes the message into a memfd of its own and **seals** it (nobody
//! can write, grow or shrink it any more), then publishes an ordinary slot whose `len`
//! is the message's length (more than the pool holds: that is what says "side path")
//! and whose payload is its **side token**, a random number that names its side server:
//! a thread of the publisher's listening on `.zerohop-side-<token>` (`0600`) in the
//! segment's directory. A reader that meets the slot connects, sends the message's
//! sequence number, and gets the memfd (`SCM_RIGHTS`) if it runs as the publisher's user
//! ([`crate::fdpass`]); it reads the message from it, or maps it (the Node binding hands
//! JavaScript a view of the mapping: read in place, no copy).
//!
//! The publisher holds a message until every subscriber's cursor is past it (or the ring
//! has moved a whole lap past it), which its server thread looks at every [`POLL`], and
//! holds at most [`HELD`] messages and [`HELD_BYTES`] at once (always one): past that its
//! backpressure policy decides (`drop_old` lets the oldest go, `block` waits for
//! readers, see [`crate::ring::Publisher`]). A reader that asks for a message its
//! publisher let go, or whose publisher is gone, counts it as lapped.
//!
//! A server that died leaves its socket file behind: [`crate::segment::remove_stale`]
//! removes the ones nobody listens on ([`abandoned`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Result, ShmError};
use crate::fdpass;

/// How a side server's socket is named in the segment directory: this, then its
/// token in hex (and `.new` while it is being set up).
pub const SOCKET_PREFIX: &str = ".zerohop-side-";
/// How often a side server lets go of what every reader has passed.
pub const POLL: Duration = Duration::from_millis(10);
/// Most side-path messages a publisher holds at once (each is a descriptor).
pub const HELD: usize = 256;
/// Most bytes of side-path messages a publisher holds at once (unless it holds one).
pub const HELD_BYTES: usize = 1 << 30;
/// How long a reader waits for a server's answer (a stopped publisher does not give one).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a server waits for a caller's question.
const QUESTION_TIMEOUT: Duration = Duration::from_millis(100);
/// Answers: the message's descriptor follows; the message is not held (any more); the
/// caller is not of our user.
const YES: u8 = b'Y';
const GONE: u8 = b'G';
const NO: u8 = b'N';
/// What a side-path memfd is sealed with: its length is final (a reader's mapping never
/// loses its pages)...
const SIZE_SEALS: libc::c_int = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
/// ...and so are its bytes: `F_SEAL_WRITE`, or where that is refused because the kernel
/// still holds a reference to a page (`EBUSY`: seen with 4 MiB messages under load),
/// `F_SEAL_FUTURE_WRITE`, which checks for none; nobody writes it after either, and
/// the publisher never mapped it.
const WRITE_SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE;

/// Where the side server named `token` listens, in segment directory `dir`.
pub fn socket_path(dir: &Path, token: u64) -> PathBuf {
    dir.join(format!("{SOCKET_PREFIX}{token:016x}"))
}

/// The messages a publisher holds, oldest first (in sequence-number order), and their bytes.
#[derive(Default)]
struct Held {
    messages: VecDeque<(u64, File, usize)>,
    bytes: usize,
}

impl Held {
    fn pop_front(&mut self) {
        if let Some((_, _, len)) = self.messages.pop_front() {
            self.bytes -= len;
        }
    }
}
/// Whether every reader has passed a sequence number (the ring's to say).
type Passed = dyn Fn(u64) -> bool + Send + Sync;

/// A publisher's side server: the messages it holds and the thread that hands them out.
pub struct SideServer {
    token: u64,
    held: Arc<Mutex<Held>>,
    passed: Arc<Passed>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SideServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideServer").field("token", &self.token).field("held", &self.held()).finish()
    }
}

impl SideServer {
    /// Starts serving in `dir`; `passed(seq)` says when every reader is past message
    /// `seq`, so that it can be let go.
    pub fn start(dir: &Path, passed: impl Fn(u64) -> bool + Send + Sync + 'static) -> Result<Self> {
        let token = random_token()?;
        let path = socket_path(dir, token);
        let listener = bind(&path)?;
        let held = Arc::new(Mutex::new(Held::default()));
        let passed: Arc<Passed> = Arc::new(passed);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (held, passed, stop) = (held.clone(), passed.clone(), stop.clone());
            std::thread::Builder::new()
                .name("zerohop-side".into())
                .spawn(move || serve(&listener, &path, &held, &*passed, &stop))
                .map_err(|source| ShmError::Io { op: "start the side-path server", source })?
        };
        Ok(SideServer { token, held, passed, stop, thread: Some(thread) })
    }

    /// The token readers find this server by.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Holds `file`, message `seq` of `len` bytes, until every reader has passed it.
    pub fn hold(&self, seq: u64, file: File, len: usize) {
        let mut held = self.lock();
        held.messages.push_back((seq, file, len));
        held.bytes += len;
    }

    /// Lets go of what every reader has passed; how many messages it still holds.
    pub fn release_passed(&self) -> usize {
        release_passed(&self.held, &*self.passed)
    }

    /// Lets go of what every reader has passed; whether it may hold one more message
    /// of `len` bytes, holding at most `limits` (messages, bytes; always one).
    pub fn has_room(&self, len: usize, limits: (usize, usize)) -> bool {
        self.release_passed();
        let held = self.lock();
        held.messages.is_empty() || (held.messages.len() < limits.0 && held.bytes + len <= limits.1)
    }

    /// How many messages it holds.
    pub fn held(&self) -> usize {
        self.lock().messages.len()
    }

    /// Lets go of the oldest message it holds (a reader that asks for it later counts
    /// it as lapped).
    pub fn let_go_oldest(&self) {
        self.lock().pop_front();
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SideServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lets go of the oldest messages while every reader has passed them (a reader past a
/// message is past every earlier one too); how many are left.
fn release_passed(held: &Mutex<Held>, passed: &Passed) -> usize {
    let mut held = held.lock().unwrap_or_else(PoisonError::into_inner);
    while held.messages.front().is_some_and(|&(seq, _, _)| passed(seq)) {
        held.pop_front();
    }
    held.messages.len()
}

/// The server thread: answers callers as they come, and lets go of what every reader
/// has passed, until stopped; then removes its socket.
fn serve(listener: &UnixListener, path: &Path, held: &Mutex<Held>, passed: &Passed, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let mut ready = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        if unsafe { libc::poll(&mut ready, 1, POLL.as_millis() as libc::c_int) } > 0 {
            while let Ok((caller, _)) = listener.accept() {
                let _ = answer(&caller, held);
            }
        }
        release_passed(held, passed);
    }
    let _ = std::fs::remove_file(path);
}

/// Reads a caller's question (a sequence number) and answers it.
fn answer(caller: &UnixStream, held: &Mutex<Held>) -> std::io::Result<()> {
    caller.set_nonblocking(false)?;
    if !fdpass::same_user(caller)? {
        return fdpass::send(caller, NO, None);
    }
    caller.set_read_timeout(Some(QUESTION_TIMEOUT))?;
    let mut seq = [0u8; 8];
    (&*caller).read_exact(&mut seq)?;
    let seq = u64::from_le_bytes(seq);
    let held = held.lock().unwrap_or_else(PoisonError::into_inner);
    match held.messages.binary_search_by_key(&seq, |&(s, _, _)| s) {
        Ok(i) => fdpass::send(caller, YES, Some(held.messages[i].1.as_raw_fd())),
        Err(_) => fdpass::send(caller, GONE, None),
    }
}

/// Binds the server's socket: under a temporary name first, `0600`, listening, then
/// renamed into place, so that nobody ever finds it under its name not listening
/// (which [`abandoned`] would take for a dead server's).
fn bind(path: &Path) -> Result<UnixListener> {
    let mut new = path.as_os_str().to_owned();
    new.push(".new");
    let listener = UnixListener::bind(&new).map_err(io("bind the side-path socket"))?;
    let placed = std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&new, path))
        .and_then(|()| listener.set_nonblocking(true));
    if let Err(source) = placed {
        let _ = std::fs::remove_file(&new);
        return Err(ShmError::Io { op: "set up the side-path socket", source });
    }
    Ok(listener)
}

/// A memfd holding `payload`, sealed: what a publisher serves as a side-path message.
pub fn message_file(payload: &[u8]) -> Result<File> {
    // SAFETY: a valid NUL-terminated name; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"zerohop-side".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(ShmError::last_os("memfd_create"));
    }
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(payload).map_err(io("write a side-path message"))?;
    let seal = |seals: libc::c_int| {
        // SAFETY: fcntl on a valid fd we own.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals | SIZE_SEALS) };
        r == 0
    };
    if !seal(libc::F_SEAL_WRITE) && !seal(libc::F_SEAL_FUTURE_WRITE) {
        return Err(ShmError::last_os("seal a side-path message"));
    }
    Ok(file)
}

/// Asks the side server `token` (in segment directory `dir`) for message `seq`, `len`
/// bytes: `None` if it does not hold it (any more), is gone, does not answer in time,
/// or hands over something that is not a sealed message of that length.
pub fn fetch(dir: &Path, token: u64, seq: u64, len: usize) -> Option<SideMessage> {
    let stream = connect_now(&socket_path(dir, token)).ok()?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    (&stream).write_all(&seq.to_le_bytes()).ok()?;
    match fdpass::receive(&stream).ok()? {
        (Some(YES), Some(file)) => SideMessage::check(file, len),
        _ => None,
    }
}

/// A side-path message a reader was handed: a memfd sealed against writing, growing and
/// shrinking, at least as long as the message.
#[derive(Debug)]
pub struct SideMessage {
    file: File,
    len: usize,
}

impl SideMessage {
    fn check(file: File, len: usize) -> Option<Self> {
        // SAFETY: fcntl on a valid fd we own.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        let size = file.metadata().ok()?.len();
        let sealed = seals >= 0 && seals & SIZE_SEALS == SIZE_SEALS && seals & WRITE_SEALS != 0;
        (sealed && size >= len as u64 && len > 0).then_some(SideMessage { file, len })
    }

    /// Copies it into `out` (replacing its contents).
    pub fn read_into(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.clear();
        out.resize(self.len, 0);
        self.file.read_exact_at(out, 0)
    }

    /// Maps it: a private copy-on-write mapping, so that writes through it (JavaScript
    /// may write into any buffer) change nothing but the writer's own pages. (Kernels
    /// before 6.7 refuse such a mapping of a file sealed with `F_SEAL_FUTURE_WRITE`: read
    /// it into memory of your own then.)
    pub fn map(&self) -> Result<SideMapping> {
        // SAFETY: a fresh private mapping of `len` bytes of a file at least that long
        // (checked), which its seals keep from shrinking: every byte stays backed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                self.file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ShmError::last_os("map a side-path message"));
        }
        Ok(SideMapping { ptr: ptr.cast(), len: self.len })
    }
}

/// A side-path message mapped into this process; unmapped when dropped.
#[derive(Debug)]
pub struct SideMapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a private mapping owned by this value alone; unmapping it from another
// thread is fine.
unsafe impl Send for SideMapping {}

impl SideMapping {
    /// Where it starts.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SideMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping `map` made, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Whether `path` is a side server's socket that nobody listens on any more (its server
/// died): a connection is refused. One that is being set up (`.new`) is not, unless
/// `old`. Never waits: a server too busy to take a connection is not abandoned.
pub fn abandoned(path: &Path, old: bool) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    if !name.starts_with(SOCKET_PREFIX) || (name.ends_with(".new") && !old) {
        return false;
    }
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && connect_now(path).is_err_and(|e| e.raw_os_error() == Some(libc::ECONNREFUSED))
}

/// Connects to the Unix socket at `path` without waiting: a server whose backlog is
/// full (a stopped process's) is `EAGAIN` at once, where `UnixStream::connect` would
/// wait for it. The stream it returns blocks.
fn connect_now(path: &Path) -> std::io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is a valid empty one.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: socket returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made and is owned here alone.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un of the size given.
    let r = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn random_token() -> Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(ShmError::last_os("getrandom"));
    }
    Ok(u64::from_le_bytes(bytes))
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> ShmError {
    move |source| ShmError::Io { op, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zerohop-side-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A reader gets what the server holds, sealed, and nothing once it is let go; a
    /// dead server's socket is found abandoned, a live one's is not.
    #[test]
    fn a_server_hands_out_what_it_holds_until_every_reader_passed_it() {
        let dir = tempdir("serve");
        let passed_below = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let below = passed_below.clone();
        let server = SideServer::start(&dir, move |seq| seq < below.load(Ordering::Acquire)).unwrap();
        let message: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        server.hold(7, message_file(&message).unwrap(), message.len());
        assert!(server.has_room(100, (2, 200_000)) && !server.has_room(100, (1, 200_000)));
        assert!(!server.has_room(100_001, (2, 200_000)));
        let got = fetch(&dir, server.token(), 7, message.len()).expect("held");
        let mut out = Vec::new();
        got.read_into(&mut out).unwrap();
        assert_eq!(out, message);
        let mapped = got.map().unwrap();
        // SAFETY: the mapping is `len` bytes long and lives while `mapped` does.
        let view = unsafe { std::slice::from_raw_parts(mapped.as_ptr(), mapped.len()) };
        assert_eq!(view, &message[..]);
        // SAFETY: as above; a private mapping: the write stays in this process's pages.
        unsafe { *mapped.as_ptr() = 0xAA };
        let again = fetch(&dir, server.token(), 7, message.len()).expect("still held");
        again.read_into(&mut out).unwrap();
        assert_eq!(out[0], message[0], "a write through a mapping changes nobody else's message");
        assert!(fetch(&dir, server.token(), 8, message.len()).is_none(), "not held");
        assert!(fetch(&dir, server.token(), 7, message.len() + 1).is_none(), "shorter than it says");
        let path = socket_path(&dir, server.token());
        assert!(!abandoned(&path, true));
        passed_below.store(8, Ordering::Release);
        std::thread::sleep(POLL * 5);
        assert_eq!(server.held(), 0, "let go once passed");
        assert!(fetch(&dir, server.token(), 7, message.len()).is_none());
        drop(server);
        assert!(!path.exists(), "a server that stops removes its socket");
        // A socket nobody listens on: a server that died.
        let dead = socket_path(&dir, 1);
        drop(UnixListener::bind(&dead).unwrap());
        assert!(abandoned(&dead, false));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A message file cannot be changed once made, nor shrunk under a reader's mapping.
    #[test]
    fn a_message_file_is_sealed() {
        let file = message_file(b"side").unwrap();
        assert!((&file).write_all(b"x").is_err());
        assert!(file.set_len(1).is_err());
        let m = SideMessage::check(file, 4).expect("sealed");
        let mut out = Vec::new();
        m.read_into(&mut out).unwrap();
        assert_eq!(out, b"side");
        // One sealed against future writes (what a publisher falls back to) is taken.
        // SAFETY: a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"future".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        // SAFETY: fd was just returned and is owned here alone.
        let mut future = unsafe { File::from_raw_fd(fd) };
        future.write_all(b"later").unwrap();
        // SAFETY: fcntl on a valid fd we own.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_FUTURE_WRITE | SIZE_SEALS) }, 0);
        assert!(future.write_all(b"x").is_err());
        let m = SideMessage::check(future, 5).expect("sealed against future writes");
        m.read_into(&mut out).unwrap();
        assert_eq!(out, b"later");
        // An unsealed memfd is refused.
        // SAFETY: a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
        // SAFETY: fd was just returned and is owned here alone.
        let unsealed = unsafe { File::from_raw_fd(fd) };
        unsealed.set_len(4).unwrap();
        assert!(SideMessage::check(unsealed, 4).is_none());
    }
}
