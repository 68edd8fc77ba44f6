//! An io_uring receive path for UDP: one multishot `recvmsg` keeps delivering datagrams
//! into buffers the kernel picks from a provided-buffer ring, so a busy socket costs no
//! syscall per datagram and, once the ring is primed, no submission either.
//!
//! - The buffer ring is an anonymous page-aligned mapping of `entries` descriptors, each
//!   pointing at one `buf_size` slice of one allocation. The kernel consumes descriptors;
//!   we give them back (advance the ring's tail) after the caller has seen the datagram.
//! - Each buffer receives an `io_uring_recvmsg_out` header, the sender's address, and the
//!   payload; [`RecvMsgOut`] parses them.
//! - The multishot request stops (a completion without `IORING_CQE_F_MORE`) when the
//!   ring runs dry; it is re-armed after buffers are returned.
//!
//! Creating a ring fails with `EPERM` (io_uring disabled, seccomp), `ENOSYS` (old kernel)
//! or `ENOMEM` (memlock): callers then use `recvmmsg` ([`crate::RecvBatch`]) instead.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, RecvMsgOut};
use io_uring::{IoUring, Probe, cqueue, opcode, types};

use crate::batch::{CONTROL_LEN, from_storage_bytes, read_control, to_storage};

/// The io_uring operations zerohop uses: the kernel's name for each, and what for.
const OPERATIONS: [(&str, u8, &str); 3] = [
    ("IORING_OP_RECVMSG", opcode::RecvMsgMulti::CODE, "multishot receive into provided buffers (kernel ≥ 6.0)"),
    ("IORING_OP_SEND_ZC", opcode::SendZc::CODE, "zero-copy send of large datagrams (kernel ≥ 6.0)"),
    ("IORING_OP_ASYNC_CANCEL", opcode::AsyncCancel::CODE, "ending a multishot receive as a hub closes"),
];

/// One io_uring operation zerohop uses, and whether this kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringOperation {
    /// The kernel's name (`IORING_OP_RECVMSG`).
    pub name: &'static str,
    /// What zerohop uses it for.
    pub used_for: &'static str,
    pub supported: bool,
}

/// Which of the io_uring operations zerohop uses this kernel has (`IORING_REGISTER_PROBE`
/// on a ring of two entries); an error when no ring can be set up here at all (io_uring
/// disabled, seccomp, an old kernel).
pub fn probe_operations() -> io::Result<Vec<UringOperation>> {
    let ring = IoUring::new(2)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    Ok(OPERATIONS
        .iter()
        .map(|&(name, code, used_for)| UringOperation { name, used_for, supported: probe.is_supported(code) })
        .collect())
}

const BUFFER_GROUP: u16 = 0x5a48;
const USER_DATA_RECV: u64 = 1;
const USER_DATA_CANCEL: u64 = 2;
/// `struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags (four u32).
const RECVMSG_OUT_LEN: usize = 16;

/// Receives datagrams through io_uring. Fields drop in order: the ring (which cancels
/// the multishot request and releases the buffer ring) before the memory it used.
pub struct UringReceiver {
    ring: IoUring,
    /// The buffer-ring descriptors (an anonymous mapping of `ring_bytes`).
    descriptors: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    buf_size: usize,
    max_datagram: usize,
    bufs: Vec<u8>,
    /// The msghdr the multishot request was armed with (the kernel copies it when the
    /// request is issued); `RecvMsgOut::parse` needs the same name and control lengths.
    msghdr: Box<libc::msghdr>,
    /// Our copy of the buffer ring's tail.
    tail: u16,
    armed: bool,
    /// Buffers used during one `recv`, returned to the kernel before it ends.
    to_return: Vec<u16>,
    fd: i32,
    /// Times the multishot request had stopped and was submitted again.
    rearms: u64,
    /// Completions drained from the queue, reused between calls.
    completions: Vec<(i32, u32)>,
}

// SAFETY: the raw pointer is to a mapping owned by this struct and only touched through
// `&mut self`; the io_uring and buffers move with it.
unsafe impl Send for UringReceiver {}

impl core::fmt::Debug for UringReceiver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UringReceiver").field("entries", &self.entries).field("armed", &self.armed).finish()
    }
}

/// One datagram from [`UringReceiver::recv`].
#[derive(Clone, Copy, Debug)]
pub struct UringDatagram<'a> {
    pub bytes: &'a [u8],
    pub from: Option<SocketAddr>,
    pub truncated: bool,
    /// Kernel receive time (realtime clock, ns), if timestamps are enabled.
    pub timestamp_ns: Option<u64>,
    /// Datagrams the kernel dropped on this socket so far, once there were some.
    pub dropped: Option<u32>,
}

impl UringReceiver {
    /// Sets up a ring of `entries` buffers (a power of two, at most 32768) for datagrams
    /// of up to `max_datagram` bytes on `socket`, and arms the multishot receive.
    pub fn new(socket: &UdpSocket, entries: u16, max_datagram: usize) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "entries must be a power of two ≤ 32768"));
        }
        // COOP_TASKRUN + TASKRUN_FLAG: instead of interrupting this thread (an IPI, costly in
        // a VM) to post completions, the kernel raises a flag that `recv` checks, and runs
        // the pending work when we enter it. Older kernels (< 5.19) refuse the flags.
        let ring = IoUring::builder()
            .setup_cqsize(u32::from(entries) * 2)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(8)
            .or_else(|_| IoUring::builder().setup_cqsize(u32::from(entries) * 2).build(8))?;
        let name_len = std::mem::size_of::<libc::sockaddr_storage>();
        let buf_size = (RECVMSG_OUT_LEN + name_len + CONTROL_LEN + max_datagram).next_multiple_of(64);
        let ring_bytes = (usize::from(entries) * std::mem::size_of::<BufRingEntry>()).next_multiple_of(4096);
        // SAFETY: a fresh anonymous private mapping; the kernel picks the address.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: all-zero msghdr is valid; we set the two lengths the kernel reads.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        msghdr.msg_namelen = name_len as libc::socklen_t;
        msghdr.msg_controllen = CONTROL_LEN as _;
        let mut receiver = Self {
            ring,
            descriptors: mem.cast(),
            ring_bytes,
            entries,
            buf_size,
            max_datagram,
            bufs: vec![0; usize::from(entries) * buf_size],
            msghdr,
            tail: 0,
            armed: false,
            to_return: Vec::with_capacity(usize::from(entries)),
            fd: socket.as_raw_fd(),
            rearms: 0,
            completions: Vec::with_capacity(usize::from(entries) * 2),
        };
        // SAFETY: `descriptors` is a page-aligned mapping of `entries` descriptors that
        // lives as long as `receiver` (unmapped in Drop, after the ring is gone).
        unsafe {
            receiver.ring.submitter().register_buf_ring_with_flags(mem as u64, entries, BUFFER_GROUP, 0)?;
        }
        for bid in 0..entries {
            receiver.give_back(bid);
        }
        receiver.publish_tail();
        receiver.arm()?;
        Ok(receiver)
    }

    /// Puts buffer `bid` at our tail (made visible by `publish_tail`).
    fn give_back(&mut self, bid: u16) {
        let mask = self.entries - 1;
        // SAFETY: `tail & mask` < entries, inside the mapping; the kernel only reads
        // descriptors between its head and the published tail, and this one is past it.
        let entry = unsafe { &mut *self.descriptors.add(usize::from(self.tail & mask)) };
        // SAFETY: bid < entries, so the offset is inside `bufs`.
        entry.set_addr(unsafe { self.bufs.as_ptr().add(usize::from(bid) * self.buf_size) } as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish_tail(&mut self) {
        // SAFETY: the tail field lives in the first descriptor of the mapping; the kernel
        // reads it concurrently, hence an atomic store with release ordering so that the
        // descriptors written before it are visible first.
        unsafe {
            let tail = BufRingEntry::tail(self.descriptors) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn arm(&mut self) -> io::Result<()> {
        let sqe = opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.msghdr, BUFFER_GROUP)
            .build()
            .user_data(USER_DATA_RECV);
        // SAFETY: the SQE points at `msghdr`, heap-allocated and alive as long as the
        // ring; the buffers it selects belong to the registered group.
        unsafe {
            self.ring.submission().push(&sqe).map_err(|_| io::Error::other("submission queue full"))?;
        }
        self.ring.submit()?;
        self.armed = true;
        Ok(())
    }

    /// The ring's file descriptor: it polls readable when completions are waiting.
    pub fn ring_fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    /// Times the multishot receive ran out of buffers (or otherwise stopped) and was
    /// submitted again.
    pub fn rearms(&self) -> u64 {
        self.rearms
    }

    /// Hands every datagram that has arrived to `deliver`, without blocking, and returns
    /// how many. The buffers go back to the kernel before it returns.
    pub fn recv(&mut self, mut deliver: impl FnMut(UringDatagram<'_>)) -> io::Result<usize> {
        if self.ring.submission().taskrun() {
            // Completions are waiting to be posted: let the kernel run that work now.
            self.ring.submit()?;
        }
        if !self.armed {
            self.rearms += 1;
            self.arm()?;
        }
        let mut n = 0;
        let mut completions = std::mem::take(&mut self.completions);
        completions.clear();
        completions.extend(self.ring.completion().map(|cqe| (cqe.result(), cqe.flags())));
        let mut failure = None;
        for &(result, flags) in &completions {
            if !cqueue::more(flags) {
                self.armed = false;
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                if result < 0 && result != -libc::ENOBUFS && failure.is_none() {
                    failure = Some(io::Error::from_raw_os_error(-result));
                }
                continue;
            };
            let start = usize::from(bid) * self.buf_size;
            let len = (result.max(0) as usize).min(self.buf_size);
            let buffer = &self.bufs[start..start + len];
            if let Ok(out) = RecvMsgOut::parse(buffer, &self.msghdr) {
                // Buffers are rounded up; hold to the `max_datagram` contract regardless.
                let payload = out.payload_data();
                let kept = payload.len().min(self.max_datagram);
                let control = read_control(out.control_data());
                deliver(UringDatagram {
                    bytes: &payload[..kept],
                    from: from_storage_bytes(out.name_data(), out.incoming_name_len()),
                    truncated: out.is_payload_truncated() || kept < payload.len(),
                    timestamp_ns: control.timestamp_ns,
                    dropped: control.dropped,
                });
                n += 1;
            }
            self.to_return.push(bid);
        }
        self.completions = completions;
        // `deliver` has finished with every buffer: give them back now, and re-arm if
        // the request stopped, so that a caller waiting on `ring_fd` never stalls.
        if !self.to_return.is_empty() {
            let returning = std::mem::take(&mut self.to_return);
            for &bid in &returning {
                self.give_back(bid);
            }
            self.to_return = returning;
            self.to_return.clear();
            self.publish_tail();
        }
        if !self.armed {
            self.rearms += 1;
            self.arm()?;
        }
        failure.map_or(Ok(n), Err)
    }
}

impl UringReceiver {
    /// Cancels the multishot receive and waits for its last completion. A request in
    /// flight holds a reference to the socket; without this the kernel releases it only
    /// when it tears the ring down in the background, so the port stays bound for a
    /// moment after the endpoint is dropped (and a new bind to it can fail).
    fn cancel_receive(&mut self) {
        if !self.armed {
            return;
        }
        let sqe = opcode::AsyncCancel::new(USER_DATA_RECV).build().user_data(USER_DATA_CANCEL);
        // SAFETY: a cancel SQE holds no pointers.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            return;
        }
        let (mut receive_ended, mut cancel_answered) = (false, false);
        // The cancel always completes, and the receive's last completion comes with or
        // before it; a few rounds suffice (bounded, so a surprise cannot hang a close).
        for _ in 0..8 {
            if receive_ended && cancel_answered {
                break;
            }
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            for cqe in self.ring.completion() {
                match cqe.user_data() {
                    USER_DATA_RECV if !cqueue::more(cqe.flags()) => receive_ended = true,
                    USER_DATA_CANCEL => {
                        cancel_answered = true;
                        // Nothing to cancel: the receive had already ended.
                        receive_ended |= cqe.result() == -libc::ENOENT;
                    }
                    _ => {}
                }
            }
        }
        self.armed = false;
    }
}

impl Drop for UringReceiver {
    fn drop(&mut self) {
        self.cancel_receive();
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
        // SAFETY: the mapping was created in `new` with `ring_bytes`; the ring no longer
        // uses it after the unregister above (and closing the ring, which follows).
        unsafe {
            libc::munmap(self.descriptors.cast(), self.ring_bytes);
        }
    }
}

/// Sends datagrams with io_uring's zero-copy send (`IORING_OP_SEND_ZC`): the kernel
/// transmits from our buffers instead of copying them, and posts a second completion (a
/// notification) when it no longer needs them. [`UringSender::send_all`] returns only
/// after every notification, so callers may reuse their buffers at once. It pays off
/// for large datagrams (≳ 10 KB); on loopback the kernel copies anyway.
pub struct UringSender {
    ring: IoUring,
    fd: i32,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
}

impl core::fmt::Debug for UringSender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UringSender").field("fd", &self.fd).finish()
    }
}

impl UringSender {
    /// A sender on `socket`; fails where io_uring or `SEND_ZC` (kernel ≥ 6.0) is missing.
    pub fn new(socket: &UdpSocket) -> io::Result<Self> {
        let ring = IoUring::builder().setup_cqsize(256).build(64)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::SendZc::CODE) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "this kernel has no IORING_OP_SEND_ZC"));
        }
        Ok(Self { ring, fd: socket.as_raw_fd(), addrs: Vec::new() })
    }

    /// Sends each datagram (to its address, or the connected peer) and waits until the
    /// kernel is done with every buffer. Returns how many were sent; a datagram the
    /// socket refused (e.g. `EAGAIN`) is not counted, and if none went out the first
    /// error is returned.
    pub fn send_all(&mut self, datagrams: &[(&[u8], Option<SocketAddr>)]) -> io::Result<usize> {
        /// At most half the completion queue in flight: each send posts up to two entries.
        const MAX_IN_FLIGHT: usize = 128;
        self.addrs.clear();
        for (_, to) in datagrams {
            // SAFETY: all-zero sockaddr_storage is valid (unused when the length is 0).
            self.addrs.push(to.map(to_storage).unwrap_or((unsafe { MaybeUninit::zeroed().assume_init() }, 0)));
        }
        let (mut submitted, mut outstanding, mut sent) = (0usize, 0usize, 0usize);
        let mut first_error = None;
        while submitted < datagrams.len() || outstanding > 0 {
            {
                let mut sq = self.ring.submission();
                while submitted < datagrams.len() && outstanding < MAX_IN_FLIGHT && !sq.is_full() {
                    let (bytes, _) = datagrams[submitted];
                    let (addr, addr_len) = &self.addrs[submitted];
                    let mut sqe = opcode::SendZc::new(types::Fd(self.fd), bytes.as_ptr(), bytes.len() as u32);
                    if *addr_len > 0 {
                        sqe = sqe.dest_addr((addr as *const libc::sockaddr_storage).cast()).dest_addr_len(*addr_len);
                    }
                    // SAFETY: the SQE points at `bytes` and `addrs[submitted]`; both stay
                    // alive and unmoved until this function returns, and it returns only
                    // when `outstanding` is 0, i.e. after the kernel's last completion
                    // (result and notification) for every submitted SQE.
                    unsafe { sq.push(&sqe.build().user_data(submitted as u64)) }.expect("checked not full");
                    submitted += 1;
                    outstanding += 1;
                }
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                // Interrupted, or the completion queue needs draining first: carry on.
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    // Buffers may still be in the kernel's hands: we cannot return yet.
                    // Stop submitting, and wait for what is in flight to complete.
                    first_error.get_or_insert(e);
                    submitted = datagrams.len();
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
            }
            for cqe in self.ring.completion() {
                if cqueue::notif(cqe.flags()) {
                    outstanding -= 1; // the kernel released this buffer
                    continue;
                }
                if cqe.result() >= 0 {
                    sent += 1;
                } else if first_error.is_none() {
                    first_error = Some(io::Error::from_raw_os_error(-cqe.result()));
                }
                if !cqueue::more(cqe.flags()) {
                    outstanding -= 1; // no notification follows
                }
            }
        }
        match first_error {
            Some(e) if sent == 0 && !datagrams.is_empty() => Err(e),
            _ => Ok(sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SendBatch, SocketOptions, bind};
    use std::time::{Duration, Instant};

    #[test]
    fn the_probe_agrees_with_what_the_receiver_can_set_up() {
        let receiver = || {
            let (socket, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
            UringReceiver::new(&socket, 16, 2048)
        };
        let Ok(ops) = probe_operations() else {
            assert!(receiver().is_err(), "no ring for the probe, and none for a receiver");
            return;
        };
        assert_eq!(
            ops.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["IORING_OP_RECVMSG", "IORING_OP_SEND_ZC", "IORING_OP_ASYNC_CANCEL"]
        );
        // Where the kernel lacks recvmsg, a receiver cannot be made either.
        if !ops[0].supported {
            assert!(receiver().is_err());
        }
    }

    #[test]
    fn multishot_receive_through_a_provided_buffer_ring() {
        let (rx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let (tx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let mut receiver = match UringReceiver::new(&rx, 16, 2048) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}); skipped");
                return;
            }
        };
        // 40 datagrams at a time into 16 buffers: the ring runs dry, the request stops,
        // the rest wait in the socket, and the request is re-armed after buffers return.
        let messages: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1 + i as usize * 10]).collect();
        let mut got: Vec<(Vec<u8>, Option<SocketAddr>)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        for chunk in messages.chunks(40) {
            let mut out = SendBatch::new();
            for m in chunk {
                out.push(m, Some(rx.local_addr().unwrap()));
            }
            assert_eq!(out.send(&tx).unwrap(), chunk.len());
            let target = got.len() + chunk.len();
            while got.len() < target {
                assert!(Instant::now() < deadline, "only {} datagrams arrived", got.len());
                receiver.recv(|d| got.push((d.bytes.to_vec(), d.from))).unwrap();
            }
        }
        assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), messages);
        assert!(got.iter().all(|g| g.1 == Some(tx.local_addr().unwrap())));
        assert!(receiver.rearms() > 0, "the ring ran dry and the receive was re-armed");
    }

    #[test]
    fn receive_timestamps_through_io_uring() {
        let opts = SocketOptions { timestamps: true, ..SocketOptions::default() };
        let (rx, _) = bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let (tx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let Ok(mut receiver) = UringReceiver::new(&rx, 4, 64) else { return };
        tx.send_to(b"t", rx.local_addr().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut ts = None;
        while ts.is_none() {
            assert!(Instant::now() < deadline);
            receiver.recv(|d| ts = Some(d.timestamp_ns)).unwrap();
        }
        assert!(ts.unwrap().is_some_and(|t| t > 1_600_000_000_000_000_000), "{ts:?}");
    }

    #[test]
    fn zero_copy_sends_of_large_datagrams_arrive_intact() {
        let (rx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let (tx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let mut sender = match UringSender::new(&tx) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("zero-copy send unavailable here ({e}); skipped");
                return;
            }
        };
        let payloads: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 60_000]).collect();
        let to = Some(rx.local_addr().unwrap());
        let datagrams: Vec<(&[u8], Option<SocketAddr>)> = payloads.iter().map(|p| (&p[..], to)).collect();
        assert_eq!(sender.send_all(&datagrams).unwrap(), 8);
        let mut batch = crate::RecvBatch::new(8, 65_507);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 8 {
            assert!(Instant::now() < deadline);
            batch.recv(&rx).unwrap();
            got.extend(batch.iter().map(|d| d.bytes.to_vec()));
        }
        assert_eq!(got, payloads);
        // A connected socket needs no address.
        tx.connect(rx.local_addr().unwrap()).unwrap();
        assert_eq!(sender.send_all(&[(&payloads[0][..], None)]).unwrap(), 1);
    }

    #[test]
    fn oversize_datagrams_are_flagged() {
        let (rx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let (tx, _) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let Ok(mut receiver) = UringReceiver::new(&rx, 4, 64) else { return };
        tx.send_to(&[1u8; 500], rx.local_addr().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = None;
        while seen.is_none() {
            assert!(Instant::now() < deadline);
            receiver.recv(|d| seen = Some((d.bytes.len(), d.truncated))).unwrap();
        }
        let (len, truncated) = seen.unwrap();
        assert!(truncated && len <= 64, "{len} {truncated}");
    }
}
