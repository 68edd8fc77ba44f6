//! Sockets of a stream transport, TCP or Unix, and the epoll set that watches them.
//!
//! Everything is non-blocking: the engine reads what is there, writes what the kernel
//! takes, and learns from epoll when to come back.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::wire::Interest;

/// Where a stream hub listens or connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    /// A Unix socket file.
    Path(PathBuf),
    /// A Linux abstract Unix socket name (`uds://@name`): no file.
    Abstract(Vec<u8>),
}

impl Address {
    fn sock_addr(&self) -> io::Result<SockAddr> {
        match self {
            Address::Tcp(a) => Ok((*a).into()),
            Address::Path(p) => SockAddr::unix(p),
            Address::Abstract(name) => {
                let mut raw = vec![0u8];
                raw.extend_from_slice(name);
                SockAddr::unix(std::ffi::OsStr::from_bytes(&raw))
            }
        }
    }

    fn domain(&self) -> Domain {
        match self {
            Address::Tcp(a) if a.is_ipv4() => Domain::IPV4,
            Address::Tcp(_) => Domain::IPV6,
            _ => Domain::UNIX,
        }
    }

    /// Whether this is a Unix socket (file or abstract).
    pub fn is_unix(&self) -> bool {
        !matches!(self, Address::Tcp(_))
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Path(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

/// Unix socket buffers asked for (the default is about 200 KiB): a burst of small
/// messages fits, and a slow reader shows up as unsent bytes here rather than as a
/// stall. TCP's are left to the kernel, whose autotuning grows them further than a
/// process may ask for (`tcp_rmem` against `rmem_max`): 4 KB messages went 10-25 %
/// faster on loopback without a fixed size (2026-12-04).
const UNIX_SOCKET_BUFFER: usize = 4 << 20;

/// TCP keepalive: the kernel's own check of an idle connection (10 s idle, then 3
/// probes 2 s apart), for when heartbeats are off or the peer's stack is gone.
fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(10))
        .with_interval(std::time::Duration::from_secs(2))
        .with_retries(3)
}

/// What every connection's socket gets, dialled or accepted.
fn tune(s: &Socket, addr: &Address) -> io::Result<()> {
    if addr.is_unix() {
        let _ = s.set_send_buffer_size(UNIX_SOCKET_BUFFER);
        let _ = s.set_recv_buffer_size(UNIX_SOCKET_BUFFER);
    } else {
        s.set_tcp_nodelay(true)?;
        s.set_tcp_keepalive(&keepalive())?;
    }
    Ok(())
}

fn stream_socket(addr: &Address) -> io::Result<Socket> {
    let s = Socket::new(addr.domain(), Type::STREAM.nonblocking().cloexec(), None)?;
    tune(&s, addr)?;
    Ok(s)
}

/// A listening socket on `addr` (a stale Unix socket file, one nobody listens on, is
/// replaced; a live one is not).
pub fn listen(addr: &Address, mode: Option<u32>) -> io::Result<OwnedFd> {
    let s = Socket::new(addr.domain(), Type::STREAM.nonblocking().cloexec(), None)?;
    if let Address::Tcp(_) = addr {
        s.set_reuse_address(true)?;
    }
    if let Address::Path(p) = addr
        && p.exists()
    {
        // Someone listening answers a connect; a stale file refuses it.
        match std::os::unix::net::UnixStream::connect(p) {
            Ok(_) => return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{} is in use", p.display()))),
            Err(_) => std::fs::remove_file(p)?,
        }
    }
    s.bind(&addr.sock_addr()?)?;
    if let (Address::Path(p), Some(mode)) = (addr, mode) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    }
    s.listen(1024)?;
    Ok(s.into())
}

/// Starts connecting to `addr`; the socket becomes writable when the connection is
/// made (or failed: see [`take_error`]).
pub fn connect(addr: &Address) -> io::Result<OwnedFd> {
    let s = stream_socket(addr)?;
    match s.connect(&addr.sock_addr()?) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

/// The pending error of a socket (a failed non-blocking connect), if any.
pub fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    // SAFETY: borrows the descriptor for the call only; ManuallyDrop keeps it open.
    let s = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    s.take_error()
}

/// Accepts one connection, non-blocking; `None` when none waits.
pub fn accept(listener: RawFd, addr: &Address) -> io::Result<Option<(OwnedFd, Option<SocketAddr>)>> {
    // SAFETY: borrows the descriptor for the call only; ManuallyDrop keeps it open.
    let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(listener) });
    match l.accept() {
        Ok((s, from)) => {
            s.set_nonblocking(true)?;
            tune(&s, addr)?;
            Ok(Some((s.into(), from.as_socket())))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// The address a socket is bound to.
pub fn local_addr(fd: RawFd) -> io::Result<Option<SocketAddr>> {
    // SAFETY: borrows the descriptor for the call only; ManuallyDrop keeps it open.
    let s = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    Ok(s.local_addr()?.as_socket())
}

/// Reads what waits into `buf`: `Ok(0)` is the end of the stream. With recv(2), not
/// read(2): a spinning reader calls it between messages, and read(2)'s way through the
/// file layer costs about 50 ns more each time.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; the descriptor is ours.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Pieces of a write that together are at most this many bytes are copied into one
/// and sent with send(2): copying them costs less than sendmsg(2)'s message header and
/// vector (a message and the acknowledgement that rides with it, say).
const GATHER_MAX: usize = 512;

/// Writes the slices (up to three) in order with one system call; how many bytes the
/// kernel took.
pub fn writev(fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let mut slices = [io::IoSlice::new(&[]); 3];
    let mut n = 0;
    let mut total = 0;
    for p in parts.iter().filter(|p| !p.is_empty()).take(slices.len()) {
        slices[n] = io::IoSlice::new(p);
        n += 1;
        total += p.len();
    }
    match n {
        0 => Ok(0),
        1 => send(fd, &slices[0]),
        _ if total <= GATHER_MAX => {
            let mut one = [0u8; GATHER_MAX];
            let mut at = 0;
            for s in &slices[..n] {
                one[at..at + s.len()].copy_from_slice(s);
                at += s.len();
            }
            send(fd, &one[..at])
        }
        _ => sendmsg(fd, &slices[..n]),
    }
}

/// Writes `bytes` with send(2): for one piece, it costs less than sendmsg(2), which
/// copies in a message header and a vector.
pub fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of its length; the kernel only reads it.
    // MSG_NOSIGNAL turns a closed peer into EPIPE instead of a signal.
    let r = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Writes `slices` in order with one system call; how many bytes the kernel took.
pub fn sendmsg(fd: RawFd, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
    let msg = libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        // IoSlice is ABI-compatible with iovec on Unix (std guarantees it).
        msg_iov: slices.as_ptr() as *mut libc::iovec,
        msg_iovlen: slices.len().min(1024),
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: 0,
    };
    // SAFETY: `msg_iov` points at `msg_iovlen` slices valid for reads for the call, and
    // the kernel only reads them; MSG_NOSIGNAL turns a closed peer into EPIPE instead of
    // a signal.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// An epoll set; its descriptor polls readable when any socket in it is ready, so one
/// descriptor wakes the driver (or the reader's event loop) for every connection.
pub struct Epoll(OwnedFd);

impl Interest {
    fn bits(self) -> u32 {
        let mut e = (libc::EPOLLRDHUP) as u32;
        if self.read {
            e |= libc::EPOLLIN as u32;
        }
        if self.write {
            e |= libc::EPOLLOUT as u32;
        }
        e
    }
}

/// A socket's readiness, as epoll reported it.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// Hung up or failed: reading says how.
    pub closed: bool,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; a negative result is an error.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: interest.bits(), u64: token };
        // SAFETY: a valid event for the call; both descriptors are open.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    pub fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    pub fn delete(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `ctl`; a descriptor already gone is fine to fail on.
        unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// The sockets ready now (no waiting), into `out`.
    pub fn ready(&self, out: &mut Vec<Event>) -> io::Result<()> {
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; 64];
        out.clear();
        // SAFETY: `raw` has room for 64 events; a zero timeout does not block.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), raw.as_mut_ptr(), raw.len() as libc::c_int, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        for ev in &raw[..n as usize] {
            let bits = ev.events;
            out.push(Event {
                token: ev.u64,
                readable: bits & (libc::EPOLLIN as u32) != 0,
                writable: bits & (libc::EPOLLOUT as u32) != 0,
                closed: bits & ((libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32) != 0,
            });
        }
        Ok(())
    }
}

/// Bytes the kernel holds in a socket's send queue that the peer has not taken yet
/// (`SIOCOUTQ`: for TCP, written and not yet acknowledged by the peer's stack; for a
/// Unix socket, not yet read).
pub fn unsent_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer, valid for the call.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// A Unix socket peer's credentials (`SO_PEERCRED`: the process that connected, or
/// that listens); `None` for other sockets.
pub fn peer_credentials(fd: RawFd) -> Option<zerohop_transport::Credentials> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for writes of `len` bytes; the descriptor is open.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len)
    };
    (r == 0 && len as usize == std::mem::size_of::<libc::ucred>() && cred.pid != 0)
        .then_some(zerohop_transport::Credentials { pid: cred.pid as u32, uid: cred.uid, gid: cred.gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// Whatever the pieces (small ones gathered into one send, large ones sent as a
    /// vector), the peer reads them whole and in order.
    #[test]
    fn writev_sends_the_pieces_in_order_however_it_sends_them() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let big = vec![7u8; GATHER_MAX + 1];
        for parts in [
            vec![&b"ab"[..]],
            vec![&b""[..], &b"cd"[..], &b"e"[..]],
            vec![&b"fg"[..], &[9u8; GATHER_MAX - 2][..]],
            vec![&b"h"[..], &big[..], &b"i"[..]],
        ] {
            let want: Vec<u8> = parts.concat();
            assert_eq!(writev(a.as_raw_fd(), &parts).unwrap(), want.len());
            let mut got = vec![0u8; want.len()];
            std::io::Read::read_exact(&mut b, &mut got).unwrap();
            assert_eq!(got, want);
        }
    }
}
