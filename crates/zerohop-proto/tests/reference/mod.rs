//! The reference C KCP (`ikcp.c`, as `kcp-io` compiles it) behind a small safe wrapper,
//! for the tests and the benchmark that compare `zerohop_proto::kcp` with it.

// (Each of them takes what it needs of it.)
#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_long, c_void};

use kcp_io::sys;
use zerohop_proto::kcp::KcpConfig;

/// The datagrams a reference conversation emitted.
#[derive(Default)]
pub struct Emitted(Vec<Vec<u8>>);

/// The reference's conversation, emitting into a list of datagrams.
pub struct Reference {
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
    pub fn new(conv: u32) -> Self {
        let mut out = Box::<Emitted>::default();
        let user = &mut *out as *mut Emitted as *mut c_void;
        // SAFETY: `ikcp_create` only stores `user`; `collect` is a valid callback for it.
        let kcp = unsafe { sys::ikcp_create(conv, user) };
        assert!(!kcp.is_null());
        // SAFETY: `kcp` was just created and is released only in `drop`.
        unsafe { sys::ikcp_setoutput(kcp, collect) };
        Self { kcp, out }
    }

    pub fn nodelay(&mut self, nodelay: i32, interval: i32, resend: i32, nc: i32) {
        // SAFETY: a live conversation (see `new`).
        unsafe { sys::ikcp_nodelay(self.kcp, nodelay, interval, resend, nc) };
    }

    pub fn window(&mut self, send: i32, receive: i32) {
        // SAFETY: a live conversation.
        unsafe { sys::ikcp_wndsize(self.kcp, send, receive) };
    }

    pub fn min_rto(&mut self, ms: u32) {
        // SAFETY: a live conversation; `rx_minrto` is a plain field of its control block.
        unsafe { (*self.kcp).rx_minrto = ms as i32 };
    }

    pub fn send(&mut self, data: &[u8]) -> i32 {
        // SAFETY: a live conversation; the reference copies `data.len()` bytes from it.
        unsafe { sys::ikcp_send(self.kcp, data.as_ptr() as *const c_char, data.len() as c_int) }
    }

    pub fn input(&mut self, data: &[u8]) -> i32 {
        // SAFETY: a live conversation; the reference reads at most `data.len()` bytes.
        unsafe { sys::ikcp_input(self.kcp, data.as_ptr() as *const c_char, data.len() as c_long) }
    }

    pub fn update(&mut self, now: u32) -> Vec<Vec<u8>> {
        // SAFETY: a live conversation; output lands in `self.out` through `collect`.
        unsafe { sys::ikcp_update(self.kcp, now) };
        std::mem::take(&mut self.out.0)
    }

    pub fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
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

impl Reference {
    /// A conversation set up with `config`'s parameters (as `Kcp::with_config` sets ours).
    pub fn with_config(conv: u32, c: &KcpConfig) -> Self {
        let mut r = Reference::new(conv);
        r.nodelay(c.nodelay as i32, c.interval_ms as i32, c.resend as i32, c.no_congestion_control as i32);
        r.min_rto(c.min_rto_ms);
        r.window(c.send_window as i32, c.recv_window as i32);
        r
    }

    /// `ikcp_flush`: what is due now, into the datagrams `update` returns next.
    pub fn flush(&mut self) -> Vec<Vec<u8>> {
        // SAFETY: a live conversation (see `new`).
        unsafe { sys::ikcp_flush(self.kcp) };
        std::mem::take(&mut self.out.0)
    }
}
