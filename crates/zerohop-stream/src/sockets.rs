//! The wire of `tcp://` and `uds://`: a socket per connection, all in one epoll set
//! whose descriptor is the engine's readiness descriptor (under `?chaos=`, a waker
//! around it: see [`crate::faults`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use zerohop_transport::{Credentials, Value};

use crate::faults::{Held, StreamFaults};
use crate::socket::{self, Address, Epoll};
use crate::wire::{Interest, Lost, Origin, Wire, WireEvent, unspecified};

/// The epoll token of the listening socket (connections use their slab index).
const LISTENER: u64 = u64::MAX;

/// How a socket wire runs.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    pub addr: Address,
    pub listen: bool,
    /// A listening Unix socket file's permissions.
    pub socket_mode: u32,
    /// Unix sockets, listening: admit only these users.
    pub allow_uids: Option<Vec<u32>>,
    /// Faults on every connection (`?chaos=`).
    pub chaos: Option<zerohop_transport::chaos::ChaosConfig>,
}

/// One connection's socket.
struct Conn {
    fd: OwnedFd,
    /// A non-blocking connect under way.
    connecting: bool,
    interest: Interest,
    /// Under faults: what waits for its time.
    held: Held,
}

/// What only a socket wire counts.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    accept_failures: u64,
    /// Unix peers not among `allow_uids`, closed at once.
    refused: u64,
}

/// Sockets in one epoll set: see the module docs.
pub struct SocketWire {
    config: SocketConfig,
    epoll: Epoll,
    listener: Option<OwnedFd>,
    local: Option<SocketAddr>,
    conns: Vec<Option<Conn>>,
    free: Vec<u64>,
    counters: Counters,
    events: Vec<socket::Event>,
    /// A connection a reader spinning alone reads directly, taken out of epoll
    /// meanwhile: epoll hearing of each packet costs the sending CPU a callback, about
    /// 0.5 µs a round trip on this VM's loopback. Put back before anyone waits on
    /// epoll ([`Wire::watch_all`]).
    untracked: Option<u64>,
    /// A listener's spare descriptor, given up to close a connection it has no
    /// descriptor for (see `accept`).
    spare: Option<std::fs::File>,
    /// The Unix socket file this listener made: removed when it goes.
    socket_file: Option<std::path::PathBuf>,
    faults: Option<StreamFaults>,
}

impl Drop for SocketWire {
    fn drop(&mut self) {
        if let Some(path) = self.socket_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl SocketWire {
    /// Binds (listening), or gets ready to connect.
    pub fn new(config: SocketConfig) -> io::Result<SocketWire> {
        let epoll = Epoll::new()?;
        let faults = config.chaos.map(|c| StreamFaults::new(c, epoll.fd())).transpose()?;
        let mut w = SocketWire {
            faults,
            epoll,
            listener: None,
            local: None,
            conns: Vec::new(),
            free: Vec::new(),
            counters: Counters::default(),
            events: Vec::with_capacity(64),
            untracked: None,
            spare: None,
            socket_file: None,
            config,
        };
        if w.config.listen {
            let l = socket::listen(&w.config.addr, Some(w.config.socket_mode))?;
            w.local = socket::local_addr(l.as_raw_fd())?;
            w.epoll.add(l.as_raw_fd(), LISTENER, Interest { read: true, write: false })?;
            w.listener = Some(l);
            w.spare = std::fs::File::open("/dev/null").ok();
            if let Address::Path(p) = &w.config.addr {
                w.socket_file = Some(p.clone());
            }
        }
        Ok(w)
    }

    /// Connects to `addr` from the next [`Wire::connect`] on (a client that fails over to
    /// another server of a cluster).
    pub fn retarget(&mut self, addr: SocketAddr) {
        self.config.addr = Address::Tcp(addr);
    }

    fn conn(&mut self, token: u64) -> Option<&mut Conn> {
        self.conns.get_mut(token as usize).and_then(Option::as_mut)
    }

    /// Puts `fd` in the slab and in epoll: its token.
    fn insert(&mut self, fd: OwnedFd, connecting: bool) -> io::Result<u64> {
        let interest = Interest { read: !connecting, write: connecting };
        let token = match self.free.pop() {
            Some(t) => t,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u64
            }
        };
        if let Err(e) = self.epoll.add(fd.as_raw_fd(), token, interest) {
            self.free.push(token);
            return Err(e);
        }
        self.conns[token as usize] = Some(Conn { fd, connecting, interest, held: Held::default() });
        Ok(token)
    }

    /// Tells epoll what connection `token` waits for; an untracked one (see
    /// `untracked`) goes back into epoll, since what it waits for now (room to write,
    /// say) nobody else would notice.
    fn set_interest(&mut self, token: u64, interest: Interest) {
        let Some(c) = self.conns.get_mut(token as usize).and_then(Option::as_mut) else { return };
        if c.interest == interest {
            return;
        }
        c.interest = interest;
        if self.untracked == Some(token) {
            self.untracked = None;
            let _ = self.epoll.add(c.fd.as_raw_fd(), token, interest);
        } else {
            let _ = self.epoll.modify(c.fd.as_raw_fd(), token, interest);
        }
    }

    fn accept(&mut self, events: &mut Vec<WireEvent>) {
        let Some(l) = self.listener.as_ref().map(|l| l.as_raw_fd()) else { return };
        loop {
            match socket::accept(l, &self.config.addr) {
                Ok(Some((fd, from))) => {
                    let credentials = socket::peer_credentials(fd.as_raw_fd());
                    if let Some(allowed) = &self.config.allow_uids
                        && !credentials.is_some_and(|c| allowed.contains(&c.uid))
                    {
                        self.counters.refused += 1;
                        continue; // dropping the descriptor closes it
                    }
                    let from = Origin { addr: from.unwrap_or_else(unspecified), credentials };
                    match self.insert(fd, false) {
                        Ok(token) => events.push(WireEvent::Accepted { token, from }),
                        Err(_) => self.counters.accept_failures += 1,
                    }
                }
                Ok(None) => return,
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
                    // Out of descriptors. Left in the backlog, the connection would keep
                    // the listener readable and this thread spinning: the spare
                    // descriptor makes room to take it and close it (the peer sees the
                    // connection end, and retries), then is taken back. Counted.
                    self.counters.accept_failures += 1;
                    let Some(spare) = self.spare.take() else { return };
                    drop(spare);
                    // Closed as soon as taken: its descriptor goes back before the spare's.
                    let taken = matches!(socket::accept(l, &self.config.addr), Ok(Some(_)));
                    self.spare = std::fs::File::open("/dev/null").ok();
                    if !taken || self.spare.is_none() {
                        return;
                    }
                }
                Err(_) => {
                    self.counters.accept_failures += 1;
                    return;
                }
            }
        }
    }

    /// The connect under way on `token` finished, one way or the other.
    fn finish_connect(&mut self, token: u64, events: &mut Vec<WireEvent>) {
        let Some(c) = self.conn(token) else { return };
        match socket::take_error(c.fd.as_raw_fd()) {
            Ok(None) => {
                c.connecting = false;
                let fd = c.fd.as_raw_fd();
                let mut from = self.server();
                // (A Unix server says who it is; a TCP one has its address.)
                if from.credentials.is_some() {
                    from.credentials = socket::peer_credentials(fd);
                }
                events.push(WireEvent::Connected { token, from });
            }
            Ok(Some(e)) | Err(e) => events.push(WireEvent::Ended { token, lost: Lost::io(&e) }),
        }
    }
}

impl Wire for SocketWire {
    const REPORTS_END: bool = true;
    const PIGGYBACK_ACKS: bool = false;
    const UNSENT: &'static str = "kernelUnsentBytes";
    const READS_DIRECTLY: bool = true;

    fn readiness_fd(&self) -> RawFd {
        self.faults.as_ref().map_or_else(|| self.epoll.fd(), StreamFaults::fd)
    }

    fn deadline(&mut self) -> Option<Instant> {
        let f = self.faults.as_ref()?;
        f.due(self.conns.iter().flatten().map(|c| &c.held))
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    fn server(&self) -> Origin {
        // A Unix server's credentials come when connected; until then it has neither.
        let credentials = self.config.addr.is_unix().then_some(Credentials::default());
        let addr = match &self.config.addr {
            Address::Tcp(a) => *a,
            _ => unspecified(),
        };
        Origin { addr, credentials }
    }

    fn connect(&mut self, _now: Instant) -> io::Result<u64> {
        let fd = socket::connect(&self.config.addr)?;
        self.insert(fd, true)
    }

    fn poll(&mut self, now: Instant, readable: bool, events: &mut Vec<WireEvent>) -> bool {
        events.clear();
        if let Some(f) = &mut self.faults {
            let disconnect = f.disconnect_due(now);
            for (token, c) in self.conns.iter_mut().enumerate() {
                let Some(c) = c.as_mut().filter(|c| !c.connecting) else { continue };
                if disconnect {
                    // SAFETY: no pointers; shuts down our own socket (as a reset would).
                    unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR) };
                }
                if f.release(&mut c.held, c.fd.as_raw_fd(), now) {
                    events.push(WireEvent::Readable(token as u64));
                }
            }
            let due = f.due(self.conns.iter().flatten().map(|c| &c.held));
            f.rearm(now, due);
        }
        if !readable {
            return false;
        }
        let mut ready = std::mem::take(&mut self.events);
        if self.epoll.ready(&mut ready).is_err() {
            ready.clear();
        }
        for ev in &ready {
            if ev.token == LISTENER {
                self.accept(events);
                continue;
            }
            let Some(c) = self.conn(ev.token) else { continue };
            if c.connecting {
                if ev.writable || ev.closed {
                    self.finish_connect(ev.token, events);
                }
                continue;
            }
            if ev.readable || ev.closed {
                events.push(WireEvent::Readable(ev.token));
            }
            if ev.writable {
                events.push(WireEvent::Writable(ev.token));
            }
        }
        let more = ready.len() == 64; // as many as one look takes
        self.events = ready;
        more
    }

    fn recv(&mut self, token: u64, into: &mut [u8]) -> io::Result<usize> {
        let c = self.conns.get_mut(token as usize).and_then(Option::as_mut).ok_or(io::ErrorKind::NotConnected)?;
        match &mut self.faults {
            None => socket::read(c.fd.as_raw_fd(), into),
            Some(f) => f.recv(&mut c.held, c.fd.as_raw_fd(), into),
        }
    }

    fn send(&mut self, token: u64, parts: &[&[u8]]) -> io::Result<usize> {
        let c = self.conns.get_mut(token as usize).and_then(Option::as_mut).ok_or(io::ErrorKind::NotConnected)?;
        match &mut self.faults {
            None => socket::writev(c.fd.as_raw_fd(), parts),
            Some(f) => f.send(&mut c.held, c.fd.as_raw_fd(), parts),
        }
    }

    fn watch(&mut self, token: u64, interest: Interest) {
        self.set_interest(token, interest);
    }

    fn close(&mut self, token: u64) {
        let Some(c) = self.conns.get_mut(token as usize).and_then(Option::take) else { return };
        if self.untracked == Some(token) {
            self.untracked = None;
        } else {
            self.epoll.delete(c.fd.as_raw_fd());
        }
        self.free.push(token);
    }

    fn read_directly(&mut self, token: u64, alone: bool) {
        if self.faults.is_some() {
            return; // (what waits for its time needs the waker's wake-ups)
        }
        if self.untracked.is_some_and(|u| u != token) {
            self.watch_all(); // no longer read directly
        }
        if alone
            && self.untracked.is_none()
            && let Some(c) = self.conns.get(token as usize).and_then(Option::as_ref)
        {
            self.epoll.delete(c.fd.as_raw_fd());
            self.untracked = Some(token);
        }
    }

    fn watch_all(&mut self) {
        // Put back into epoll, which reports it at once if it is readable: nothing that
        // came meanwhile goes unnoticed.
        if let Some(t) = self.untracked.take()
            && let Some(c) = self.conns.get(t as usize).and_then(Option::as_ref)
        {
            let _ = self.epoll.add(c.fd.as_raw_fd(), t, c.interest);
        }
    }

    fn unsent(&self, token: u64) -> u64 {
        self.conns
            .get(token as usize)
            .and_then(Option::as_ref)
            .map_or(0, |c| socket::unsent_bytes(c.fd.as_raw_fd()).unwrap_or(0) as u64 + c.held.unsent())
    }

    fn chaos(&self) -> Option<zerohop_transport::chaos::ChaosReport> {
        self.faults.as_ref().map(StreamFaults::report)
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        let c = self.counters;
        let n = |v: u64| Value::Number(v as f64);
        vec![("acceptFailures", n(c.accept_failures)), ("refused", n(c.refused))]
    }
}
