//! The node's UDP socket, sending on it ([`Net`]), and the eventfd that wakes its I/O
//! thread.
//!
//! The socket goes through quinn-udp, which batches with GSO on send and GRO on receive
//! where the kernel has them, and carries ECN marks. Everything here is non-blocking:
//! whoever drives the node (its I/O thread, or the caller's thread) reads what is
//! there, sends what it can (a transmit the kernel has no room for waits in [`Net`]),
//! and returns.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, UdpSocketState};

/// Kernel socket buffers asked for: the default of about 200 KiB overflows under a
/// burst, and every loss costs QUIC a retransmission.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams (or GRO batches) per receive call.
const BATCH: usize = 16;
/// The largest UDP payload, and the most a GRO batch holds: one receive buffer.
const MAX_PAYLOAD: usize = 64 << 10;

/// A received datagram.
pub(super) struct Datagram {
    pub from: SocketAddr,
    pub local_ip: Option<std::net::IpAddr>,
    pub ecn: Option<quinn_udp::EcnCodepoint>,
    pub data: BytesMut,
}

/// The node's UDP socket.
pub(super) struct Socket {
    io: UdpSocket,
    state: UdpSocketState,
    /// Receive buffers, one per batch entry, each with room for a GRO batch.
    buffers: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

impl Socket {
    /// Binds a non-blocking UDP socket with large kernel buffers on `addr`.
    pub fn bind(addr: SocketAddr) -> io::Result<Socket> {
        let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
        let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        // What the kernel grants may be less (net.core.rmem_max); QUIC works with that.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        let io: UdpSocket = socket.into();
        let state = UdpSocketState::new((&io).into())?;
        Ok(Socket { buffers: vec![vec![0; MAX_PAYLOAD]; BATCH], meta: vec![RecvMeta::default(); BATCH], io, state })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    pub fn fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }

    /// Whether the kernel may fragment what we send (then path MTU discovery is off).
    pub fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    /// How many datagrams one transmit may carry (GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Reads one batch; calls `each` per datagram (GRO batches split). Returns how many
    /// datagrams were read (0: none waiting).
    pub fn recv(&mut self, mut each: impl FnMut(Datagram)) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = self.buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = match self.state.recv((&self.io).into(), &mut slices, &mut self.meta) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        drop(slices);
        let mut count = 0;
        for (meta, buf) in self.meta.iter().zip(&self.buffers).take(n) {
            let stride = meta.stride.max(1);
            for segment in buf[..meta.len].chunks(stride) {
                count += 1;
                each(Datagram { from: meta.addr, local_ip: meta.dst_ip, ecn: meta.ecn, data: BytesMut::from(segment) });
            }
        }
        Ok(count)
    }

    /// Sends one transmit (several datagrams with GSO). `WouldBlock` when the kernel
    /// buffer is full.
    pub fn send(&self, t: &quinn_proto::Transmit, contents: &[u8]) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: t.destination,
            ecn: t.ecn.map(|e| quinn_udp::EcnCodepoint::from_bits(e as u8).expect("a valid ECN codepoint")),
            contents: &contents[..t.size],
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        self.state.send((&self.io).into(), &transmit)
    }
}

/// Datagrams per GSO send at most (as quinn does), and bytes (UDP's limit, with room
/// for headers).
const MAX_GSO_SEGMENTS: usize = 10;
const GSO_BYTES: usize = 65_000;

/// The socket side: what sends, and what the kernel refused for now.
pub(super) struct Net {
    /// `None` once the node is closed: the port is free again at once, not when the last
    /// handle on the node goes.
    socket: Option<Socket>,
    pub tx: Vec<u8>,
    /// A transmit the kernel's buffer had no room for; nothing else goes before it.
    pub blocked: Option<(quinn_proto::Transmit, Vec<u8>)>,
    pub gso: usize,
}

impl Net {
    pub fn new(socket: Socket) -> Net {
        // GSO batches stay below UDP's 64 KiB limit (the kernel refuses a larger one, and
        // quinn-udp counts that as sent): see `transmit`.
        let gso = socket.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS);
        Net { socket: Some(socket), tx: Vec::new(), blocked: None, gso }
    }

    /// Reads one batch from the socket (see [`Socket::recv`]); 0 once closed.
    pub fn recv(&mut self, each: impl FnMut(Datagram)) -> usize {
        self.socket.as_mut().map_or(0, |s| s.recv(each).unwrap_or(0))
    }

    /// Closes the socket; what is sent afterwards goes nowhere.
    pub fn close(&mut self) {
        self.socket = None;
        self.blocked = None;
    }

    /// Sends what `q` has to send; false if the socket is full (the rest waits).
    pub fn transmit(&mut self, q: &mut quinn_proto::Connection, now: Instant) -> bool {
        if !self.unblock() {
            return false;
        }
        // A GSO batch is one UDP datagram to the kernel: at most 64 KiB in all.
        let segments = (GSO_BYTES / usize::from(q.current_mtu())).clamp(1, self.gso);
        loop {
            self.tx.clear();
            let Some(t) = q.poll_transmit(now, segments, &mut self.tx) else { return true };
            if !self.send(t) {
                return false;
            }
        }
    }

    /// Sends `t` (in `tx`); false if it had to wait for room.
    pub fn send(&mut self, t: quinn_proto::Transmit) -> bool {
        let Some(socket) = &self.socket else { return true };
        match socket.send(&t, &self.tx) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = Some((t, std::mem::take(&mut self.tx)));
                false
            }
            // Anything else (an unreachable destination, say) is a lost datagram, which
            // QUIC recovers from.
            _ => true,
        }
    }

    /// Sends the endpoint's answer to a datagram (in `tx`), unless a connection's
    /// transmit waits for room: such answers (a refusal, a version list) may be lost.
    pub fn respond(&mut self, t: quinn_proto::Transmit) {
        if self.blocked.is_none() {
            self.send(t);
        }
    }

    /// Retries a refused transmit; true if nothing is waiting any more.
    pub fn unblock(&mut self) -> bool {
        let Some((t, buf)) = self.blocked.take() else { return true };
        self.tx = buf;
        self.send(t)
    }
}

/// The ECN mark of a received datagram, as quinn-proto names it.
pub(super) fn ecn(e: Option<quinn_udp::EcnCodepoint>) -> Option<quinn_proto::EcnCodepoint> {
    e.and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8))
}

/// An eventfd: a counter another thread bumps to end an I/O thread's `poll`.
pub(super) struct Wake(OwnedFd);

impl Wake {
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd; failure (the counter is
        // saturated) means a wake-up is pending anyway.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter after a wake-up.
    pub fn clear(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// Waits until `socket` is readable (if given), `wake` is bumped, or `deadline`; returns
/// whether the socket is readable and whether it is writable (when asked).
pub(super) fn wait(socket: Option<RawFd>, want_write: bool, wake: &Wake, deadline: Option<Instant>) -> (bool, bool) {
    // ppoll(2), not poll(2): QUIC's timers (pacing, acknowledgement delays) are finer
    // than a millisecond.
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        libc::timespec {
            tv_sec: left.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
        }
    });
    let events = libc::POLLIN | if want_write { libc::POLLOUT } else { 0 };
    let mut fds = [
        libc::pollfd { fd: socket.unwrap_or(-1), events, revents: 0 },
        libc::pollfd { fd: wake.fd(), events: libc::POLLIN, revents: 0 },
    ];
    let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: two valid pollfds and an optional timespec, valid for the duration of the
    // call; a null signal mask leaves the mask alone.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, timeout_ptr, std::ptr::null()) };
    if r <= 0 {
        return (false, false); // timeout or EINTR
    }
    if fds[1].revents != 0 {
        wake.clear();
    }
    (fds[0].revents & libc::POLLIN != 0, fds[0].revents & libc::POLLOUT != 0)
}
