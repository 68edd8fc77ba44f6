//! memfd segments handed over a Unix socket (`shm://name?memfd`): the segment is made
//! with `memfd_create`, so it has no name in `/dev/shm` and its memory goes when its
//! last holder does, however they die. Joiners get its file descriptor from a holder.
//!
//! Three files beside where named segments live (`.zerohop-<name>.memfd*`, hidden):
//!
//! - **`.live`**: every holder keeps `LOCK_SH` on it for as long as it holds the
//!   segment, so `LOCK_EX` succeeding means nobody holds it (make a new one).
//! - **`.serve`**: one holder at a time has `LOCK_EX` on it and serves: it listens on
//! - **the socket** (`0600`), checks each caller's credentials (`SO_PEERCRED`: the same
//!   user) and sends the descriptor with `SCM_RIGHTS`. Every other holder waits for the
//!   serve lock on a thread of its own, so when the server closes or dies the next one
//!   takes over within [`POLL`].
//!
//! The creator binds the socket before it lets go of `LOCK_EX` on `.live`, so a second
//! opener either finds the socket or cannot tell that nobody holds the segment: there is
//! never a second segment under one name. What is left when everyone is gone is three
//! empty files, which the next open of any segment in the directory removes
//! ([`crate::segment::remove_stale`]).

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Result, ShmError};
use crate::fdpass;
use crate::segment::{FILE_PREFIX, is_linked, try_lock};

/// How often a waiting holder looks whether it should serve, and a serving one for callers.
pub const POLL: Duration = Duration::from_millis(10);
/// How long an opener waits for a holder to hand the segment over.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The answers a holder gives before (`YES`, with the descriptor) or instead of (`NO`) it.
const YES: u8 = b'Y';
const NO: u8 = b'N';

/// Where the holders of memfd segment `name` meet (see the module docs).
#[derive(Clone, Debug)]
pub struct Rendezvous {
    pub socket: PathBuf,
    live: PathBuf,
    serve: PathBuf,
}

impl Rendezvous {
    pub fn new(dir: &Path, name: &str) -> Self {
        let base = format!(".{FILE_PREFIX}{name}.memfd");
        Rendezvous {
            socket: dir.join(&base),
            live: dir.join(format!("{base}.live")),
            serve: dir.join(format!("{base}.serve")),
        }
    }

    /// The rendezvous whose `.live` file is `live` (for [`crate::segment::remove_stale`]).
    pub(crate) fn of_live_file(live: &Path) -> Option<Self> {
        let base = live.to_str()?.strip_suffix(".live")?;
        Some(Rendezvous { socket: base.into(), live: live.into(), serve: format!("{base}.serve").into() })
    }

    /// Removes the three files (nobody holds the segment: the caller has `LOCK_EX` on `.live`).
    pub(crate) fn remove(&self) {
        for p in [&self.socket, &self.serve, &self.live] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// This process's part in handing a memfd segment over: it holds `.live`, and serves
/// (or waits to) on a thread until stopped.
#[derive(Debug)]
pub struct Handoff {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// `LOCK_SH` for as long as this process holds the segment.
    live: Option<File>,
}

impl Handoff {
    /// Stops serving (another holder takes over) and waiting to serve, and stops
    /// counting as a holder. Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.live = None;
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Joins memfd segment `rv` (its descriptor from a holder), or makes it with `create`
/// when nobody holds it. Returns the memfd, whether this call made it, and the handoff
/// that serves it from now on.
pub fn join_or_create(rv: &Rendezvous, create: impl FnOnce() -> Result<File>) -> Result<(File, bool, Handoff)> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut create = Some(create);
    // Joined: one descriptor for the caller, the other for serving it in turn.
    let joined = |live: File, memfd: File| {
        Ok((memfd.try_clone().map_err(io("dup memfd"))?, false, start(rv, live, memfd, None)))
    };
    loop {
        if Instant::now() > deadline {
            return Err(ShmError::Timeout("a holder of the memfd segment to hand it over"));
        }
        let live = open_lock_file(&rv.live)?;
        if try_lock(&live, libc::LOCK_SH)? && is_linked(&live)? {
            if let Some(memfd) = fetch(&rv.socket)? {
                return joined(live, memfd);
            }
            // Nobody serves. Nobody holds it either if this converts to LOCK_EX.
            if try_lock(&live, libc::LOCK_EX)? && is_linked(&live)? {
                // (A holder that began serving since: join it after all.)
                if let Some(memfd) = fetch(&rv.socket)? {
                    relock_shared(&live)?;
                    return joined(live, memfd);
                }
                let serve = open_lock_file(&rv.serve)?;
                if try_lock(&serve, libc::LOCK_EX)? {
                    let listener = bind(&rv.socket)?;
                    let memfd = (create.take().expect("created once"))()?;
                    // Joiners find the socket from now on: others may hold it too.
                    relock_shared(&live)?;
                    let served = memfd.try_clone().map_err(io("dup memfd"))?;
                    return Ok((memfd, true, start(rv, live, served, Some((serve, listener)))));
                }
            }
        }
        drop(live);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs the serving thread (serving now if `serving` is given, else waiting to).
fn start(rv: &Rendezvous, live: File, memfd: File, serving: Option<(File, UnixListener)>) -> Handoff {
    let stop = Arc::new(AtomicBool::new(false));
    let (rv, flag) = (rv.clone(), stop.clone());
    let thread =
        std::thread::Builder::new().name("zerohop-memfd".into()).spawn(move || serve(&rv, &memfd, &flag, serving)).ok();
    Handoff { stop, thread, live: Some(live) }
}

fn serve(rv: &Rendezvous, memfd: &File, stop: &AtomicBool, mut serving: Option<(File, UnixListener)>) {
    while !stop.load(Ordering::Acquire) {
        match &serving {
            None => {
                let won = open_lock_file(&rv.serve)
                    .ok()
                    .filter(|f| matches!(try_lock(f, libc::LOCK_EX), Ok(true)) && matches!(is_linked(f), Ok(true)));
                match won.map(|serve| bind(&rv.socket).map(|l| (serve, l))) {
                    Some(Ok(s)) => serving = Some(s),
                    _ => std::thread::sleep(POLL),
                }
            }
            Some((_, listener)) => match listener.accept() {
                Ok((caller, _)) => {
                    let _ = hand_over(&caller, memfd);
                }
                Err(_) => std::thread::sleep(POLL),
            },
        }
    }
    if serving.is_some() {
        // We hold the serve lock, so the socket under that name is ours: gone before
        // the lock is, so that the next server binds a fresh one.
        let _ = std::fs::remove_file(&rv.socket);
    }
}

/// Gives `caller` the descriptor, if it runs as our user.
fn hand_over(caller: &UnixStream, memfd: &File) -> std::io::Result<()> {
    caller.set_nonblocking(false)?;
    if !fdpass::same_user(caller)? {
        return fdpass::send(caller, NO, None);
    }
    fdpass::send(caller, YES, Some(memfd.as_raw_fd()))
}

/// Asks the holder serving at `socket` for the descriptor: `None` if nobody serves
/// there now (or the server went away mid-answer: ask again).
fn fetch(socket: &Path) -> Result<Option<File>> {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => return Ok(None),
        Err(source) => return Err(ShmError::Io { op: "connect to the memfd segment's holder", source }),
    };
    stream.set_read_timeout(Some(Duration::from_secs(1))).map_err(io("set a timeout"))?;
    let (answer, file) = match fdpass::receive(&stream) {
        Ok(got) => got,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionReset) => {
            return Ok(None);
        }
        Err(source) => return Err(ShmError::Io { op: "receive the memfd segment", source }),
    };
    match (answer, file) {
        (Some(YES), Some(file)) => Ok(Some(file)),
        (Some(NO), _) => Err(ShmError::Io {
            op: "join the memfd segment",
            source: std::io::Error::new(
                ErrorKind::PermissionDenied,
                "its holder hands it only to processes of its own user",
            ),
        }),
        // Closed without an answer: the server is going away.
        _ => Ok(None),
    }
}

/// Binds the rendezvous socket, `0600`, non-blocking (a socket left by a server that
/// died is replaced: the caller holds the serve lock).
fn bind(socket: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(io("bind the memfd segment's socket"))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod the socket"))?;
    listener.set_nonblocking(true).map_err(io("set the socket non-blocking"))?;
    Ok(listener)
}

/// Opens (creating, `0600`) one of the rendezvous' lock files.
fn open_lock_file(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io("open the memfd segment's lock file"))
}

/// Back from `LOCK_EX` to `LOCK_SH` (a conversion: never refused while we hold EX).
fn relock_shared(live: &File) -> Result<()> {
    if try_lock(live, libc::LOCK_SH)? {
        Ok(())
    } else {
        Err(ShmError::Io { op: "keep the memfd segment's lock", source: ErrorKind::WouldBlock.into() })
    }
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> ShmError {
    move |source| ShmError::Io { op, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Segment, SegmentOptions};

    /// A holder hands the segment only to its own user: another one that reaches the
    /// socket (here made reachable on purpose) is told no, by `SO_PEERCRED`.
    #[test]
    fn another_user_is_refused_by_its_credentials() {
        if fdpass::current_uid() != 0 {
            return; // (needs root, to be another user)
        }
        let dir = std::env::temp_dir().join(format!("zerohop-handoff-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let options = SegmentOptions { layout: None, dir: Some(dir.clone()) };
        let held = Segment::open_memfd("creds", &options).unwrap();
        let rv = Rendezvous::new(&dir, "creds");
        std::fs::set_permissions(&rv.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        // SAFETY: the child only changes its user, asks the holder, and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: plain syscalls in the child; _exit runs nothing of the parent's.
            unsafe {
                let code = if libc::setresgid(65534, 65534, 65534) != 0 || libc::setresuid(65534, 65534, 65534) != 0 {
                    3
                } else {
                    match fetch(&rv.socket) {
                        Err(ShmError::Io { source, .. }) if source.kind() == ErrorKind::PermissionDenied => 0,
                        Ok(Some(_)) => 1,
                        _ => 2,
                    }
                };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0, "1: handed over, 2: no answer, 3: setresuid failed");
        // Its own user still gets it.
        assert!(fetch(&rv.socket).unwrap().is_some());
        drop(held);
    }
}
