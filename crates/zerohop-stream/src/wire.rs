//! What the engine's records ride on: a [`Wire`] carries the byte stream of each
//! connection, and the engine does the rest (peers and their channels, hellos,
//! acknowledgements, requests, heartbeats, reconnects).
//!
//! `tcp://` and `uds://` connections are sockets in one epoll set (`SocketWire`);
//! a `kcp://` connection is a KCP conversation on a shared UDP socket (the
//! `zerohop-kcp` crate). A wire names its connections by a token of its choosing (small
//! numbers, reused once closed), reports what happened to them as [`WireEvent`]s, and
//! moves their bytes as `read(2)` and `writev(2)` do ([`Wire::recv`], [`Wire::send`]);
//! TLS, where there is any, sits in the engine, between the wire and the records.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Instant;

use zerohop_proto::records::RecordError;
use zerohop_transport::{Credentials, ErrorCode, Value};

/// Who a connection's peer is: its address, or its credentials (Unix sockets, which
/// have no address worth reporting).
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub addr: SocketAddr,
    pub credentials: Option<Credentials>,
}

impl Origin {
    /// A peer known by its address.
    pub fn at(addr: SocketAddr) -> Origin {
        Origin { addr, credentials: None }
    }

    /// How status events name peer `id`: its address, or for Unix sockets `peer:<n>`
    /// (what `from` says of its messages too).
    pub fn name(self, id: u32) -> Option<String> {
        Some(if self.credentials.is_some() { format!("peer:{id}") } else { self.addr.to_string() })
    }
}

/// The address reported where there is none (a Unix socket's peer).
pub fn unspecified() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

/// Why a connection ended.
#[derive(Clone, Debug)]
pub struct Lost {
    pub code: ErrorCode,
    pub why: String,
    /// The peer said goodbye: nothing to keep for its return.
    pub by_peer: bool,
    /// Trying again cannot help (a certificate problem): a connecting hub gives up.
    pub permanent: bool,
}

impl Lost {
    pub fn new(code: ErrorCode, why: impl Into<String>) -> Lost {
        Lost { code, why: why.into(), by_peer: false, permanent: false }
    }

    pub fn io(e: &io::Error) -> Lost {
        Lost::new(ErrorCode::Io, e.to_string())
    }

    pub fn protocol(e: RecordError) -> Lost {
        Lost::new(ErrorCode::Protocol, e.to_string())
    }

    /// The peer closed its end.
    pub fn closed() -> Lost {
        Lost::new(ErrorCode::Io, "the peer closed the connection")
    }
}

/// What to watch a connection for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Report it readable (not while its messages wait for room in the receive ring).
    pub read: bool,
    /// Report it writable (while it took less than it was offered).
    pub write: bool,
}

/// What happened to a wire's connections, as [`Wire::poll`] reports it.
#[derive(Debug)]
pub enum WireEvent {
    /// A listener's new connection, from `from`.
    Accepted { token: u64, from: Origin },
    /// The connection [`Wire::connect`] started is up (`from`: the server, with its
    /// credentials on a Unix socket).
    Connected { token: u64, from: Origin },
    /// The connection has something to read, or its end (reading says which).
    Readable(u64),
    /// The connection has room to write again.
    Writable(u64),
    /// The connection ended (the engine closes it).
    Ended { token: u64, lost: Lost },
}

/// A carrier of connections' byte streams: see the module docs.
pub trait Wire: Send + 'static {
    /// Whether the wire reports a peer's end (a socket's end of file); without it (KCP),
    /// a peer's goodbye record ends its connection at once.
    const REPORTS_END: bool;

    /// Whether an answer carries the acknowledgement of what the application read (one
    /// segment where there would be two). Not on TCP: there the acknowledgement that
    /// goes on its own a moment later doubles as a probe that lets the kernel find a
    /// lost segment without waiting for its retransmission timeout (a ping-pong at 1 %
    /// loss: 0.9 ms mean with it, 4.7 without, 2026-12-06). KCP has no such kernel.
    const PIGGYBACK_ACKS: bool;

    /// Whether reading one connection without [`poll`](Self::poll) finds what came (a
    /// socket of its own: yes; a conversation fed by a shared socket: no). A polling
    /// reader then reads the connection that spoke last directly.
    const READS_DIRECTLY: bool;

    /// The descriptor that polls readable when something happened.
    fn readiness_fd(&self) -> RawFd;

    /// The address a listener is bound to.
    fn local_addr(&self) -> Option<SocketAddr>;

    /// The server a connecting hub talks to, as known before it is connected.
    fn server(&self) -> Origin;

    /// Starts connecting to the server: the new connection's token, watched for
    /// writing (a [`WireEvent::Connected`] or [`WireEvent::Ended`] follows).
    fn connect(&mut self, now: Instant) -> io::Result<u64>;

    /// Reports what happened into `events` (cleared first): `readable` if the readiness
    /// descriptor said so, else only what is due by the clock. True if there may be
    /// more to report at once.
    fn poll(&mut self, now: Instant, readable: bool, events: &mut Vec<WireEvent>) -> bool;

    /// When [`poll`](Self::poll) has something due by the clock.
    fn deadline(&mut self) -> Option<Instant> {
        None
    }

    /// Reads what connection `token` has into `into`, as `read(2)` does: 0 is its end,
    /// `WouldBlock` nothing now.
    fn recv(&mut self, token: u64, into: &mut [u8]) -> io::Result<usize>;

    /// Writes `parts` (at most three) to connection `token`, as `writev(2)` does: how
    /// much it took, `WouldBlock` if nothing.
    fn send(&mut self, token: u64, parts: &[&[u8]]) -> io::Result<usize>;

    /// Puts on the network what [`send`](Self::send) (and reading, which may open a
    /// window) left queued: the engine calls it after each round of writes, so that a
    /// wire that packs (KCP) packs a burst, and nothing waits for a timer.
    fn flush(&mut self) {}

    /// What connection `token` is watched for, from now on.
    fn watch(&mut self, token: u64, interest: Interest);

    /// Closes connection `token`; its token may be reused.
    fn close(&mut self, token: u64);

    /// A polling reader reads connection `token` directly now (see
    /// [`READS_DIRECTLY`](Self::READS_DIRECTLY)); `alone`: it has been reading nothing
    /// else for a while, so the wire may stop watching it until [`watch_all`](Self::watch_all).
    fn read_directly(&mut self, _token: u64, _alone: bool) {}

    /// Everything is watched again: someone is about to wait on the readiness descriptor.
    fn watch_all(&mut self) {}

    /// Bytes connection `token` took and its peer has not (the kernel's, or KCP's).
    fn unsent(&self, token: u64) -> u64;

    /// What metrics call [`unsent`](Self::unsent)'s bytes (`kernelUnsentBytes`).
    const UNSENT: &'static str;

    /// The wire's own counters, for metrics.
    fn details(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    /// What `?chaos=` did, if the wire injects faults.
    fn chaos(&self) -> Option<zerohop_transport::chaos::ChaosReport> {
        None
    }
}

/// Connection `token` of a wire as `std::io::Write` (what TLS writes its records to).
pub struct WireWriter<'a, W> {
    pub wire: &'a mut W,
    pub token: u64,
}

impl<W: Wire> io::Write for WireWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wire.send(self.token, &[buf])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let parts: [&[u8]; 3] = std::array::from_fn(|i| bufs.get(i).map_or(&[][..], |b| &b[..]));
        self.wire.send(self.token, &parts)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
