//! Many datagrams per system call.
//!
//! `recvmmsg`/`sendmmsg` take arrays of `mmsghdr`s that point into our buffers. Rather
//! than keep self-referential pointers, the headers are rebuilt from the buffers'
//! current addresses right before each call: a loop over at most a batch of entries,
//! far cheaper than the syscall it feeds, and it leaves nothing that a move of the
//! struct could invalidate.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// One received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Its bytes (at most the batch's `max_datagram`).
    pub bytes: &'a [u8],
    /// Who sent it.
    pub from: Option<SocketAddr>,
    /// It was longer than `max_datagram` and was cut (count it as malformed).
    pub truncated: bool,
    /// When the kernel received it (realtime clock, ns), if timestamps are enabled.
    pub timestamp_ns: Option<u64>,
    /// How many datagrams the kernel has dropped on this socket for want of receive
    /// buffer, said with a datagram once there were some (`SO_RXQ_OVFL`, wrapping).
    pub dropped: Option<u32>,
}

/// Control-message room per datagram: a `SCM_TIMESTAMPNS` (32 bytes) and a `SO_RXQ_OVFL` (24).
pub(crate) const CONTROL_LEN: usize = 64;

/// What the kernel said of a datagram in its control messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Control {
    /// `SCM_TIMESTAMPNS`, in ns since the Unix epoch.
    pub timestamp_ns: Option<u64>,
    /// `SO_RXQ_OVFL`: datagrams dropped on the socket so far.
    pub dropped: Option<u32>,
}

/// Reads raw control-message bytes (as the kernel lays them out: `cmsghdr` then data,
/// each record aligned to 8 bytes on 64-bit Linux).
pub(crate) fn read_control(control: &[u8]) -> Control {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    let mut found = Control::default();
    let mut off = 0;
    while off + HDR <= control.len() {
        // SAFETY: HDR bytes at `off` are inside `control`; read_unaligned copes with any
        // alignment of the caller's buffer.
        let h: libc::cmsghdr = unsafe { control.as_ptr().add(off).cast::<libc::cmsghdr>().read_unaligned() };
        #[allow(clippy::unnecessary_cast)] // usize on glibc, u32 on musl
        let len = h.cmsg_len as usize;
        if len < HDR || len > control.len() - off {
            break;
        }
        const TS: usize = std::mem::size_of::<libc::timespec>();
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS && len >= HDR + TS {
            // SAFETY: `HDR + TS <= len` bytes at `off` lie inside `control`.
            let ts: libc::timespec =
                unsafe { control.as_ptr().add(off + HDR).cast::<libc::timespec>().read_unaligned() };
            #[allow(clippy::unnecessary_cast)] // i64 on 64-bit targets, i32 on some 32-bit ones
            let (sec, nsec) = (ts.tv_sec as i64, ts.tv_nsec as i64);
            found.timestamp_ns = u64::try_from(sec)
                .ok()
                .and_then(|s| s.checked_mul(1_000_000_000)?.checked_add(u64::try_from(nsec).ok()?));
        }
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SO_RXQ_OVFL && len >= HDR + 4 {
            // SAFETY: `HDR + 4 <= len` bytes at `off` lie inside `control`.
            found.dropped = Some(unsafe { control.as_ptr().add(off + HDR).cast::<u32>().read_unaligned() });
        }
        off += len.next_multiple_of(std::mem::size_of::<usize>());
    }
    found
}

/// Receives up to `batch` datagrams per call into buffers it owns and reuses.
pub struct RecvBatch {
    bufs: Vec<u8>,
    max_datagram: usize,
    addrs: Vec<libc::sockaddr_storage>,
    controls: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
    /// The last call found nothing waiting.
    idle: bool,
    /// Whether the last `recv` filled every header it offered (more may be waiting).
    full: bool,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` are scratch, rebuilt before every call
// from buffers this struct owns; they are never dereferenced outside `recv`, so moving
// the struct to another thread is sound.
unsafe impl Send for RecvBatch {}

impl core::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvBatch").field("batch", &self.hdrs.len()).field("received", &self.received).finish()
    }
}

impl RecvBatch {
    /// Room for `batch` datagrams of up to `max_datagram` bytes each.
    ///
    /// # Panics
    /// If `batch` or `max_datagram` is zero.
    pub fn new(batch: usize, max_datagram: usize) -> Self {
        assert!(batch > 0 && max_datagram > 0, "batch and max_datagram must be positive");
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which
        // all-zero bytes are a valid value.
        let (addr, iov, hdr) = unsafe {
            (
                MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init(),
                MaybeUninit::<libc::iovec>::zeroed().assume_init(),
                MaybeUninit::<libc::mmsghdr>::zeroed().assume_init(),
            )
        };
        Self {
            bufs: vec![0; batch * max_datagram],
            max_datagram,
            addrs: vec![addr; batch],
            controls: vec![0; batch * CONTROL_LEN],
            iovs: vec![iov; batch],
            hdrs: vec![hdr; batch],
            received: 0,
            idle: true,
            full: false,
        }
    }

    /// Receives what is waiting, up to the batch size, without blocking. Returns how
    /// many datagrams arrived (0 when none was waiting).
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.received = 0;
        // After a poll that found nothing, ask for one datagram: when one arrives alone
        // (a ping-pong), recvmmsg would otherwise try the socket again for the next one,
        // which costs as much as the first. A full batch follows once traffic flows.
        let n = if self.idle { 1 } else { self.hdrs.len() };
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                // SAFETY: `i * max_datagram` is within `bufs` (it has n * max_datagram bytes).
                iov_base: unsafe { self.bufs.as_mut_ptr().add(i * self.max_datagram) }.cast(),
                iov_len: self.max_datagram,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            // SAFETY: `i * CONTROL_LEN` is within `controls` (batch * CONTROL_LEN bytes).
            h.msg_control = unsafe { self.controls.as_mut_ptr().add(i * CONTROL_LEN) }.cast();
            h.msg_controllen = CONTROL_LEN as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: `hdrs` holds `n` headers whose name and iovec pointers point into
        // `addrs`, `iovs` and `bufs`, all owned by `self`, alive and unmoved for the
        // duration of the call, with the lengths set above. The kernel writes at most
        // those lengths.
        let r = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            self.idle = true;
            self.full = false;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.received = r as usize;
        self.idle = false;
        self.full = self.received == n;
        Ok(self.received)
    }

    /// Whether the last `recv` took fewer datagrams than it asked for: the socket had no
    /// more then, and asking again at once would most likely find nothing.
    pub fn drained(&self) -> bool {
        !self.full
    }

    /// Datagrams from the last `recv`.
    pub fn len(&self) -> usize {
        self.received
    }

    /// Whether the last `recv` got nothing.
    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// Datagram `i` of the last `recv`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> Datagram<'_> {
        assert!(i < self.received, "datagram {i} of {}", self.received);
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.max_datagram);
        let start = i * self.max_datagram;
        #[allow(clippy::unnecessary_cast)] // usize on glibc, u32 on musl
        let control_len = (h.msg_hdr.msg_controllen as usize).min(CONTROL_LEN);
        let control = read_control(&self.controls[i * CONTROL_LEN..i * CONTROL_LEN + control_len]);
        Datagram {
            bytes: &self.bufs[start..start + len],
            from: from_storage(&self.addrs[i], h.msg_hdr.msg_namelen),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            timestamp_ns: control.timestamp_ns,
            dropped: control.dropped,
        }
    }

    /// The datagrams from the last `recv`, in order.
    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> {
        (0..self.received).map(|i| self.get(i))
    }
}

/// Queues datagrams and sends them with one `sendmmsg`.
#[derive(Default)]
pub struct SendBatch {
    data: Vec<u8>,
    spans: Vec<(usize, usize)>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    has_addr: Vec<bool>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Payload bytes the kernel has accepted, over the batch's life.
    sent_bytes: u64,
}

// SAFETY: as for RecvBatch, the pointers in `iovs`/`hdrs` are rebuilt before each call
// from owned buffers and never used elsewhere.
unsafe impl Send for SendBatch {}

impl core::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendBatch").field("queued", &self.spans.len()).field("bytes", &self.data.len()).finish()
    }
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a datagram to `to` (`None` on a connected socket).
    pub fn push(&mut self, payload: &[u8], to: Option<SocketAddr>) {
        self.spans.push((self.data.len(), payload.len()));
        self.data.extend_from_slice(payload);
        match to {
            Some(addr) => {
                self.addrs.push(to_storage(addr));
                self.has_addr.push(true);
            }
            None => {
                // SAFETY: all-zero sockaddr_storage is valid (and unused: namelen 0).
                self.addrs.push((unsafe { MaybeUninit::zeroed().assume_init() }, 0));
                self.has_addr.push(false);
            }
        }
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
        self.addrs.clear();
        self.has_addr.clear();
    }

    /// Sends what is queued without blocking; returns how many went out and keeps the
    /// rest queued (the socket buffer was full: try again when it is writable).
    pub fn send(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let n = self.spans.len();
        if n == 0 {
            return Ok(0);
        }
        if n == 1 {
            return self.send_one(socket);
        }
        // SAFETY: all-zero iovec and mmsghdr are valid values.
        let (iov, hdr) = unsafe {
            (MaybeUninit::<libc::iovec>::zeroed().assume_init(), MaybeUninit::<libc::mmsghdr>::zeroed().assume_init())
        };
        self.iovs.resize(n, iov);
        self.hdrs.resize(n, hdr);
        for i in 0..n {
            let (start, len) = self.spans[i];
            self.iovs[i] = libc::iovec {
                // SAFETY: start..start+len lies within `data` (recorded by `push`).
                iov_base: unsafe { self.data.as_mut_ptr().add(start) }.cast(),
                iov_len: len,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            if self.has_addr[i] {
                h.msg_name = (&mut self.addrs[i].0 as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = self.addrs[i].1;
            } else {
                h.msg_name = std::ptr::null_mut();
                h.msg_namelen = 0;
            }
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: headers sent..n point into `addrs`, `iovs` and `data`, owned by
            // `self` and unmoved during the call; the kernel only reads them (and writes
            // msg_len of each header).
            let r = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr().add(sent),
                    (n - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock if sent > 0 => break,
                    io::ErrorKind::WouldBlock => return Ok(0),
                    _ if sent > 0 => break,
                    _ => return Err(e),
                }
            }
            sent += r as usize;
        }
        self.sent_bytes += self.spans[..sent].iter().map(|&(_, len)| len as u64).sum::<u64>();
        self.drain_front(sent);
        Ok(sent)
    }

    /// A lone datagram (the common case of a latency-bound sender) with `sendto`, which
    /// skips the header arrays `sendmmsg` copies in.
    fn send_one(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let (start, len) = self.spans[0];
        let (name, namelen) = if self.has_addr[0] {
            ((&self.addrs[0].0 as *const libc::sockaddr_storage).cast::<libc::sockaddr>(), self.addrs[0].1)
        } else {
            (std::ptr::null(), 0)
        };
        loop {
            // SAFETY: start..start+len lies within `data`; `name` is null or points at a
            // sockaddr of `namelen` bytes in `addrs`; the kernel only reads both.
            let r = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    self.data.as_ptr().add(start).cast(),
                    len,
                    libc::MSG_DONTWAIT,
                    name,
                    namelen,
                )
            };
            if r >= 0 {
                self.sent_bytes += len as u64;
                self.clear();
                return Ok(1);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// Payload bytes the kernel has accepted from this batch, over its life.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Forgets the first `sent` queued datagrams.
    pub(crate) fn drain_front(&mut self, sent: usize) {
        if sent == self.spans.len() {
            self.clear();
            return;
        }
        let cut = self.spans[sent].0;
        self.data.drain(..cut);
        self.spans.drain(..sent);
        for span in &mut self.spans {
            span.0 -= cut;
        }
        self.addrs.drain(..sent);
        self.has_addr.drain(..sent);
    }
}

pub(crate) fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero sockaddr_storage is valid; we then write a sockaddr_in or
    // sockaddr_in6 into its first bytes, which it is large and aligned enough to hold.
    unsafe {
        let mut storage: libc::sockaddr_storage = MaybeUninit::zeroed().assume_init();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
                sin6.sin6_scope_id = a.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }
}

/// The address in raw sockaddr bytes (as io_uring's recvmsg output carries it).
pub(crate) fn from_storage_bytes(bytes: &[u8], len: u32) -> Option<SocketAddr> {
    // SAFETY: all-zero sockaddr_storage is valid; we copy at most its size into it.
    let mut storage: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let n = bytes.len().min(std::mem::size_of::<libc::sockaddr_storage>()).min(len as usize);
    // SAFETY: `n` bytes fit in both the source slice and the storage.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(), n)
    };
    from_storage(&storage, n as libc::socklen_t)
}

fn from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and the length
            // covers it; sockaddr_storage is aligned for every sockaddr type.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::{SocketOptions, bind};
    use std::time::{Duration, Instant};

    fn pair(ip: &str) -> Option<(std::net::UdpSocket, std::net::UdpSocket)> {
        let a = bind(format!("{ip}:0").parse().unwrap(), &SocketOptions::default()).ok()?.0;
        let b = bind(format!("{ip}:0").parse().unwrap(), &SocketOptions::default()).ok()?.0;
        Some((a, b))
    }

    fn recv_all(
        rx: &std::net::UdpSocket,
        batch: &mut RecvBatch,
        want: usize,
    ) -> Vec<(Vec<u8>, Option<SocketAddr>, bool)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < want {
            assert!(Instant::now() < deadline, "only {} of {want} datagrams arrived", got.len());
            if batch.recv(rx).unwrap() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            got.extend(batch.iter().map(|d| (d.bytes.to_vec(), d.from, d.truncated)));
        }
        got
    }

    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_back_in_order() {
        for ip in ["127.0.0.1", "[::1]"] {
            let Some((tx, rx)) = pair(ip) else {
                eprintln!("{ip} unavailable; skipped");
                continue;
            };
            let to = rx.local_addr().unwrap();
            let mut out = SendBatch::new();
            let messages: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + i as usize * 30]).collect();
            for m in &messages {
                out.push(m, Some(to));
            }
            assert_eq!(out.send(&tx).unwrap(), 40);
            assert!(out.is_empty());
            let mut batch = RecvBatch::new(16, 2048);
            let got = recv_all(&rx, &mut batch, 40);
            assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), messages, "{ip}");
            assert!(got.iter().all(|g| g.1 == Some(tx.local_addr().unwrap()) && !g.2));
        }
    }

    #[test]
    fn connected_sockets_send_without_addresses() {
        let (tx, rx) = pair("127.0.0.1").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut out = SendBatch::new();
        out.push(b"a", None);
        out.push(b"bc", None);
        assert_eq!(out.send(&tx).unwrap(), 2);
        let got = recv_all(&rx, &mut RecvBatch::new(4, 64), 2);
        assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), [b"a".to_vec(), b"bc".to_vec()]);
    }

    #[test]
    fn oversize_datagrams_are_cut_and_flagged() {
        let (tx, rx) = pair("127.0.0.1").unwrap();
        let mut out = SendBatch::new();
        out.push(&[9u8; 100], Some(rx.local_addr().unwrap()));
        out.send(&tx).unwrap();
        let got = recv_all(&rx, &mut RecvBatch::new(2, 64), 1);
        assert_eq!(got[0].0.len(), 64);
        assert!(got[0].2, "MSG_TRUNC reported");
    }

    #[test]
    fn nothing_waiting_is_zero_not_an_error() {
        let (_, rx) = pair("127.0.0.1").unwrap();
        let mut batch = RecvBatch::new(4, 64);
        assert_eq!(batch.recv(&rx).unwrap(), 0);
        assert!(batch.is_empty());
        assert_eq!(SendBatch::new().send(&rx).unwrap(), 0);
    }

    fn realtime_ns() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }

    #[test]
    fn kernel_receive_timestamps_when_asked() {
        let opts = SocketOptions { timestamps: true, ..SocketOptions::default() };
        let (rx, granted) = bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        assert!(granted.timestamps);
        let (tx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let before = realtime_ns();
        tx.send_to(b"t", rx.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(2, 64);
        let deadline = Instant::now() + Duration::from_secs(5);
        while batch.recv(&rx).unwrap() == 0 {
            assert!(Instant::now() < deadline);
        }
        let after = realtime_ns();
        let ts = batch.get(0).timestamp_ns.expect("a timestamp");
        assert!(before <= ts && ts <= after, "{before} <= {ts} <= {after}");
        // Without the option there is none.
        let (plain, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        tx.send_to(b"t", plain.local_addr().unwrap()).unwrap();
        while batch.recv(&plain).unwrap() == 0 {
            assert!(Instant::now() < deadline);
        }
        assert_eq!(batch.get(0).timestamp_ns, None);
    }

    #[test]
    fn control_parser_reads_a_timestamp_and_a_drop_count_and_survives_garbage() {
        const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
        let mut c = vec![0u8; HDR + 16 + HDR + 8];
        c[..8].copy_from_slice(&((HDR + 16) as u64).to_ne_bytes());
        c[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[12..16].copy_from_slice(&libc::SCM_TIMESTAMPNS.to_ne_bytes());
        c[HDR..HDR + 8].copy_from_slice(&3i64.to_ne_bytes());
        c[HDR + 8..HDR + 16].copy_from_slice(&5i64.to_ne_bytes());
        let d = HDR + 16;
        c[d..d + 8].copy_from_slice(&((HDR + 4) as u64).to_ne_bytes());
        c[d + 8..d + 12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[d + 12..d + 16].copy_from_slice(&libc::SO_RXQ_OVFL.to_ne_bytes());
        c[d + HDR..d + HDR + 4].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(read_control(&c), Control { timestamp_ns: Some(3_000_000_005), dropped: Some(7) });
        assert_eq!(read_control(&c[..d]).dropped, None);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = read_control(&bytes);
        }
        assert_eq!(read_control(&[]), Control::default());
    }

    #[test]
    fn addresses_convert_both_ways() {
        for a in ["127.0.0.1:9", "10.1.2.3:65535", "[::1]:7", "[fe80::1%1]:80"] {
            let addr: SocketAddr = a.parse().unwrap();
            let (s, len) = to_storage(addr);
            assert_eq!(from_storage(&s, len), Some(addr), "{a}");
        }
        // SAFETY: all-zero sockaddr_storage is valid.
        let empty: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        assert_eq!(from_storage(&empty, 0), None);
    }
}
