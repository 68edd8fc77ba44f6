//! The engine's UDP socket, and sending on it ([`Net`]).
//!
//! The socket goes through quinn-udp, which batches with GSO on send and GRO on receive
//! where the kernel has them, and carries ECN marks. A connecting hub's socket is
//! connected to its server, and a single datagram to it goes out with `send(2)` instead
//! (the kernel keeps the route; the ECN mark is the socket's own). Everything here is
//! non-blocking:
//! whoever drives the node (its I/O thread, or the caller's thread) reads what is
//! there, sends what it can (a transmit the kernel has no room for waits in [`Net`]),
//! and returns.
//!
//! Under `?chaos=` every datagram sent and received passes through [`Faults`] (GSO
//! batches are split, so each datagram meets its own fate), and the readiness
//! descriptor also wakes when what they held is due.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, UdpSocketState};
use zerohop_net::chaos::WakingFaults;
use zerohop_transport::chaos::{ChaosConfig, ChaosReport};

/// Where a datagram goes or came from, the local address it leaves from or arrived
/// at, and its ECN bits.
type Route = (SocketAddr, Option<std::net::IpAddr>, Option<u8>);

/// Kernel socket buffers asked for: the default of about 200 KiB overflows under a
/// burst, and every loss costs QUIC a retransmission.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams (or GRO batches) per receive call.
const BATCH: usize = 16;

/// The largest UDP payload, and the most a GRO batch holds: one receive buffer.
const MAX_PAYLOAD: usize = 64 << 10;

/// A received datagram.
pub(crate) struct Datagram {
    pub from: SocketAddr,
    pub local_ip: Option<std::net::IpAddr>,
    pub ecn: Option<quinn_udp::EcnCodepoint>,
    pub data: BytesMut,
}

/// The node's UDP socket.
pub(crate) struct Socket {
    io: UdpSocket,
    state: UdpSocketState,
    /// Receive buffers, one per batch entry, each with room for a GRO batch.
    buffers: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// Whether the last `recv` filled every buffer (more may be waiting).
    full: bool,
    /// The one peer the socket is connected to (see [`Socket::connect`]).
    connected: Option<SocketAddr>,
    /// The ECN mark the socket sets on plain sends (its IP_TOS / IPV6_TCLASS).
    ecn_set: std::cell::Cell<u8>,
    /// Bound to one address (not a wildcard): replies leave from it without saying so,
    /// so received datagrams need not report where they arrived (no `IP_PKTINFO` on
    /// each send).
    bound_to_one: bool,
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
        Ok(Socket {
            buffers: vec![vec![0; MAX_PAYLOAD]; BATCH],
            meta: vec![RecvMeta::default(); BATCH],
            io,
            state,
            full: false,
            connected: None,
            ecn_set: std::cell::Cell::new(0),
            bound_to_one: !addr.ip().is_unspecified(),
        })
    }

    /// Connects the socket to `peer` (a connecting hub's server, its only peer): only
    /// its datagrams are received, and single datagrams to it go out with `send(2)`.
    pub fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.io.connect(peer)?;
        self.connected = Some(peer);
        Ok(())
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
        // On the stack: a poll allocates nothing.
        let mut buffers = self.buffers.iter_mut();
        let mut slices: [IoSliceMut<'_>; BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(buffers.next().expect("BATCH buffers")));
        self.full = false;
        let n = match self.state.recv((&self.io).into(), &mut slices, &mut self.meta) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        self.full = n == BATCH;
        let mut count = 0;
        let bound_to_one = self.bound_to_one;
        for (meta, buf) in self.meta.iter().zip(&self.buffers).take(n) {
            let stride = meta.stride.max(1);
            for segment in buf[..meta.len].chunks(stride) {
                count += 1;
                let local_ip = if bound_to_one { None } else { meta.dst_ip };
                each(Datagram { from: meta.addr, local_ip, ecn: meta.ecn, data: BytesMut::from(segment) });
            }
        }
        Ok(count)
    }

    /// Sends one transmit (several datagrams with GSO). `WouldBlock` when the kernel
    /// buffer is full.
    pub fn send(&self, t: &quinn_proto::Transmit, contents: &[u8]) -> io::Result<()> {
        if t.segment_size.is_none() && t.src_ip.is_none() && self.connected == Some(t.destination) {
            return self.send_connected(t.ecn.map_or(0, |e| e as u8), &contents[..t.size]);
        }
        let transmit = quinn_udp::Transmit {
            destination: t.destination,
            ecn: t.ecn.map(|e| quinn_udp::EcnCodepoint::from_bits(e as u8).expect("a valid ECN codepoint")),
            contents: &contents[..t.size],
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        self.state.send((&self.io).into(), &transmit)
    }

    /// One datagram to the peer the socket is connected to, with `send(2)`: the kernel
    /// uses the route it keeps for the socket (with an address, `sendmsg` looks it up
    /// for every datagram), and the ECN mark is the socket's own, set when it changes,
    /// rather than a control message per datagram.
    fn send_connected(&self, ecn: u8, contents: &[u8]) -> io::Result<()> {
        if ecn != self.ecn_set.get() {
            let v6 = self.connected.is_some_and(|a| a.is_ipv6());
            let (level, name) =
                if v6 { (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) } else { (libc::IPPROTO_IP, libc::IP_TOS) };
            let value = libc::c_int::from(ecn);
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: an int option, passed by a pointer valid for `len` bytes, on our own socket.
            let r = unsafe { libc::setsockopt(self.fd(), level, name, (&value as *const libc::c_int).cast(), len) };
            if r == 0 {
                self.ecn_set.set(ecn);
            }
        }
        // SAFETY: `contents` is valid for its length; the socket is ours and non-blocking.
        let r = unsafe { libc::send(self.fd(), contents.as_ptr().cast(), contents.len(), 0) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

/// Datagrams per GSO send at most (as quinn does), and bytes (UDP's limit, with room
/// for headers).
const MAX_GSO_SEGMENTS: usize = 10;
const GSO_BYTES: usize = 65_000;

/// The socket side: what sends, and what the kernel refused for now.
pub(crate) struct Net {
    socket: Socket,
    pub tx: Vec<u8>,
    /// A transmit the kernel's buffer had no room for; nothing else goes before it.
    pub blocked: Option<(quinn_proto::Transmit, Vec<u8>)>,
    pub gso: usize,
    /// Under `?chaos=`.
    chaos: Option<Box<WakingFaults<Route>>>,
}

impl Net {
    pub fn new(socket: Socket, chaos: Option<ChaosConfig>) -> io::Result<Net> {
        // GSO batches stay below UDP's 64 KiB limit (the kernel refuses a larger one, and
        // quinn-udp counts that as sent): see `transmit`. Under faults, one datagram per
        // transmit.
        let gso = if chaos.is_some() { 1 } else { socket.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS) };
        let chaos = chaos.map(|c| WakingFaults::new(c, socket.fd())).transpose()?;
        Ok(Net { socket, tx: Vec::new(), blocked: None, gso, chaos })
    }

    /// The descriptor to wait on: the socket's, or under faults one that also wakes
    /// when what they hold is due.
    pub fn fd(&self) -> RawFd {
        self.chaos.as_ref().map_or_else(|| self.socket.fd(), |c| c.fd())
    }

    /// Reads one batch from the socket (see [`Socket::recv`]), after what faults held
    /// that is due; how many datagrams were read.
    pub fn recv(&mut self, mut each: impl FnMut(Datagram)) -> usize {
        let Some(c) = &mut self.chaos else { return self.socket.recv(each).unwrap_or(0) };
        let now = Instant::now();
        c.take_fired(now);
        let mut hand_on = |bytes: &[u8], (from, local_ip, ecn): Route| {
            let ecn = ecn.and_then(quinn_udp::EcnCodepoint::from_bits);
            each(Datagram { from, local_ip, ecn, data: BytesMut::from(bytes) });
        };
        c.faults.release_received(now, &mut hand_on);
        let n = self
            .socket
            .recv(|d| c.faults.receive(now, &d.data, (d.from, d.local_ip, d.ecn.map(|e| e as u8)), &mut hand_on))
            .unwrap_or(0);
        c.arm(now);
        n
    }

    /// Whether faults hold a received datagram due by `now`.
    pub fn received_due(&self, now: Instant) -> bool {
        self.chaos.as_ref().is_some_and(|c| c.faults.received_due(now))
    }

    /// When faults need the engine next.
    pub fn chaos_due(&self) -> Option<Instant> {
        self.chaos.as_ref().and_then(|c| c.faults.due())
    }

    /// Whether faults drop the connections now.
    pub fn disconnect_due(&mut self, now: Instant) -> bool {
        self.chaos.as_mut().is_some_and(|c| c.faults.disconnect_due(now))
    }

    /// Sends what faults held that is due.
    pub fn release_sent(&mut self, now: Instant) {
        let Some(c) = &mut self.chaos else { return };
        let socket = &self.socket;
        c.faults.release_sent(now, |bytes, route| send_datagram(socket, bytes, route));
        c.arm(now);
    }

    /// What faults did, if any were asked for.
    pub fn chaos(&self) -> Option<ChaosReport> {
        self.chaos.as_ref().map(|c| c.faults.report())
    }

    /// Whether the last `recv` took fewer datagrams than it had room for: the socket was
    /// empty then, and reading again at once would most likely find nothing.
    pub fn drained(&self) -> bool {
        !self.socket.full
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
        let socket = &self.socket;
        if let Some(c) = &mut self.chaos {
            // Each datagram meets its fate; one the kernel has no room for is lost, as
            // on a congested link (QUIC resends it).
            let now = Instant::now();
            let route = (t.destination, t.src_ip, t.ecn.map(|e| e as u8));
            let size = t.segment_size.unwrap_or(t.size).max(1);
            for d in self.tx[..t.size].chunks(size) {
                c.faults.send(now, d, route, |bytes, route| send_datagram(socket, bytes, route));
            }
            c.arm(now);
            return true;
        }
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

/// Sends one datagram as faults let it go (what the kernel refuses is lost).
fn send_datagram(socket: &Socket, bytes: &[u8], (destination, src_ip, ecn): Route) {
    let t = quinn_proto::Transmit {
        destination,
        ecn: ecn.and_then(quinn_proto::EcnCodepoint::from_bits),
        size: bytes.len(),
        segment_size: None,
        src_ip,
    };
    let _ = socket.send(&t, bytes);
}

/// The ECN mark of a received datagram, as quinn-proto names it.
pub(crate) fn ecn(e: Option<quinn_udp::EcnCodepoint>) -> Option<quinn_proto::EcnCodepoint> {
    e.and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8))
}
