//! `zerohop_proto::kcp` against the reference C implementation itself (`ikcp.c`, as the
//! `kcp-io` crate bundles and compiles it): the same segments byte for byte, and whole
//! conversations, each end ours or the reference's, through a lossy, reordering,
//! duplicating link, in each of the four modes.

use std::ffi::{c_char, c_int, c_long, c_void};

use kcp_io::sys;
use zerohop_proto::chaos::{Chaos, ChaosSpec, Fate};
use zerohop_proto::kcp::{Kcp, Mode};

/// The datagrams a reference conversation emitted.
#[derive(Default)]
struct Emitted(Vec<Vec<u8>>);

/// The reference's conversation, emitting into a list of datagrams.
struct Reference {
    kcp: *mut sys::IKCPCB,
    /// Boxed, so that its address, which the C side holds, stays put.
    out: Box<Emitted>,
}

unsafe extern "C" fn collect(buf: *const c_char, len: c_int, _kcp: *mut sys::IKCPCB, user: *mut c_void) -> c_int {
    // SAFETY: `user` is the boxed `Emitted` of the `Reference` that made this
    // conversation, alive as long as it is (it releases the conversation first), and
    // the reference calls back with `len` readable bytes at `buf`.
    unsafe {
        let out = &mut *(user as *mut Emitted);
        out.0.push(std::slice::from_raw_parts(buf as *const u8, len as usize).to_vec());
    }
    0
}

impl Reference {
    fn new(conv: u32) -> Self {
        let mut out = Box::<Emitted>::default();
        let user = &mut *out as *mut Emitted as *mut c_void;
        // SAFETY: `ikcp_create` only stores `user`; `collect` is a valid callback for it.
        let kcp = unsafe { sys::ikcp_create(conv, user) };
        assert!(!kcp.is_null());
        // SAFETY: `kcp` was just created and is released only in `drop`.
        unsafe { sys::ikcp_setoutput(kcp, collect) };
        Self { kcp, out }
    }

    fn nodelay(&mut self, nodelay: i32, interval: i32, resend: i32, nc: i32) {
        // SAFETY: a live conversation (see `new`).
        unsafe { sys::ikcp_nodelay(self.kcp, nodelay, interval, resend, nc) };
    }

    fn window(&mut self, send: i32, receive: i32) {
        // SAFETY: a live conversation.
        unsafe { sys::ikcp_wndsize(self.kcp, send, receive) };
    }

    fn min_rto(&mut self, ms: u32) {
        // SAFETY: a live conversation; `rx_minrto` is a plain field of its control block.
        unsafe { (*self.kcp).rx_minrto = ms as i32 };
    }

    fn send(&mut self, data: &[u8]) -> i32 {
        // SAFETY: a live conversation; the reference copies `data.len()` bytes from it.
        unsafe { sys::ikcp_send(self.kcp, data.as_ptr() as *const c_char, data.len() as c_int) }
    }

    fn input(&mut self, data: &[u8]) -> i32 {
        // SAFETY: a live conversation; the reference reads at most `data.len()` bytes.
        unsafe { sys::ikcp_input(self.kcp, data.as_ptr() as *const c_char, data.len() as c_long) }
    }

    fn update(&mut self, now: u32) -> Vec<Vec<u8>> {
        // SAFETY: a live conversation; output lands in `self.out` through `collect`.
        unsafe { sys::ikcp_update(self.kcp, now) };
        std::mem::take(&mut self.out.0)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: a live conversation; the reference writes at most `buf.len()` bytes.
        let n = unsafe { sys::ikcp_recv(self.kcp, buf.as_mut_ptr() as *mut c_char, buf.len() as c_int) };
        (n >= 0).then_some(n as usize)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        // SAFETY: created in `new`, released once; `out` outlives this call.
        unsafe { sys::ikcp_release(self.kcp) };
    }
}

/// Either end of a conversation.
enum End {
    Ours(Box<Kcp>),
    Theirs(Reference),
}

impl End {
    fn send(&mut self, data: &[u8]) {
        match self {
            End::Ours(k) => assert_eq!(k.send(data), Ok(data.len())),
            End::Theirs(r) => assert!(r.send(data) >= 0, "ikcp_send refused {} bytes", data.len()),
        }
    }

    fn input(&mut self, data: &[u8]) {
        match self {
            End::Ours(k) => k.input(data).unwrap(),
            End::Theirs(r) => assert_eq!(r.input(data), 0),
        }
    }

    fn update(&mut self, now: u32) -> Vec<Vec<u8>> {
        match self {
            End::Ours(k) => {
                let mut out = Vec::new();
                k.update(now, &mut |d: &[u8]| out.push(d.to_vec()));
                out
            }
            End::Theirs(r) => r.update(now),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self {
            End::Ours(k) => k.recv(buf).ok(),
            End::Theirs(r) => r.recv(buf),
        }
    }
}

/// Ours, set up by `mode`'s preset.
fn ours(mode: Mode) -> End {
    End::Ours(Box::new(Kcp::with_config(0xC0FFEE, &mode.config()).unwrap()))
}

/// The reference's, set up with the same parameters.
fn theirs(mode: Mode) -> End {
    let c = mode.config();
    let mut r = Reference::new(0xC0FFEE);
    r.nodelay(c.nodelay as i32, c.interval_ms as i32, c.resend as i32, c.no_congestion_control as i32);
    r.min_rto(c.min_rto_ms);
    r.window(c.send_window as i32, c.recv_window as i32);
    End::Theirs(r)
}

/// Sends `messages` from `a` to `b` through a link with `spec`'s faults (both ways);
/// what `b` received.
fn converse(mut a: End, mut b: End, spec: &str, seed: u64, messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut chaos = Chaos::new(ChaosSpec::parse(spec).unwrap(), seed);
    let mut wire: Vec<(u32, bool, Vec<u8>)> = Vec::new();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut next = 0;
    let mut now = 0u32;
    for _ in 0..200_000 {
        // A few messages at a time: the reference's send queue has no bound of its own.
        if next < messages.len() && got.len() + 64 > next {
            a.send(&messages[next]);
            next += 1;
        }
        now += 5;
        let mut out: Vec<(bool, Vec<u8>)> = a.update(now).into_iter().map(|d| (true, d)).collect();
        out.extend(b.update(now).into_iter().map(|d| (false, d)));
        for (to_b, d) in out {
            if let Fate::Deliver { copies, delay } = chaos.decide() {
                for _ in 0..copies {
                    wire.push((now + delay.as_millis() as u32, to_b, d.clone()));
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = wire.into_iter().partition(|(at, _, _)| *at <= now);
        wire = later;
        for (_, to_b, d) in due {
            if to_b { b.input(&d) } else { a.input(&d) }
        }
        while let Some(n) = b.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        if got.len() == messages.len() {
            break;
        }
    }
    got
}

fn messages() -> Vec<Vec<u8>> {
    (0..120).map(|i: usize| (0..(i * 997) % 20_000).map(|j| (i * 31 + j) as u8).collect()).collect()
}

#[test]
fn the_same_segments_byte_for_byte() {
    for (name, mode) in Mode::ALL {
        let (mut a, mut b) = (ours(mode), theirs(mode));
        for msg in [&b"hello"[..], &[7u8; 3000][..], &[][..]] {
            a.send(msg);
            b.send(msg);
        }
        for now in [1000, 1100, 1250] {
            assert_eq!(a.update(now), b.update(now), "{name}: what goes out at {now} ms");
        }
        // An answer to each: their acknowledgements, byte for byte too.
        let (mut c, mut d) = (ours(mode), theirs(mode));
        for dgram in b.update(5000) {
            c.input(&dgram);
            d.input(&dgram);
        }
        assert_eq!(c.update(5000), d.update(5000), "{name}: acknowledgements");
    }
}

#[test]
fn ours_to_theirs_and_theirs_to_ours_through_loss_reordering_and_duplication() {
    let spec = "loss:0.1,dup:0.05,reorder:0.1,reorder_by:30ms,delay:10ms,jitter:10ms";
    let sent = messages();
    for (name, mode) in Mode::ALL {
        for seed in 0..2 {
            let got = converse(ours(mode), theirs(mode), spec, seed, &sent);
            assert!(got == sent, "{name}, ours → theirs, seed {seed}: {} of {} messages", got.len(), sent.len());
            let got = converse(theirs(mode), ours(mode), spec, seed, &sent);
            assert!(got == sent, "{name}, theirs → ours, seed {seed}: {} of {} messages", got.len(), sent.len());
        }
    }
}
