//! Bare socket calls for the benchmark's Node floor (see Cargo.toml): a listener, a
//! connection, and recv(2)/send(2) straight on its descriptor. Nothing is checked
//! beyond what the benchmark needs; failures panic.

use std::cell::RefCell;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;

thread_local! {
    static LISTENER: RefCell<Option<TcpListener>> = const { RefCell::new(None) };
    static STREAMS: RefCell<Vec<TcpStream>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `s` open (non-blocking, no Nagle) and returns its descriptor.
fn keep(s: TcpStream) -> i32 {
    s.set_nodelay(true).unwrap();
    s.set_nonblocking(true).unwrap();
    let fd = s.as_raw_fd();
    STREAMS.with(|v| v.borrow_mut().push(s));
    fd
}

/// Listens on 127.0.0.1; the port.
#[napi]
pub fn listen() -> u32 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    LISTENER.with(|x| *x.borrow_mut() = Some(l));
    u32::from(port)
}

/// Accepts one connection (blocking); its descriptor.
#[napi]
pub fn accept() -> i32 {
    let (s, _) = LISTENER.with(|x| x.borrow().as_ref().unwrap().accept().unwrap());
    keep(s)
}

/// Connects to 127.0.0.1:`port`; the descriptor.
#[napi]
pub fn connect(port: u32) -> i32 {
    keep(TcpStream::connect(("127.0.0.1", port as u16)).unwrap())
}

/// recv(2) into `buf`: bytes read, 0 at the end, -1 when nothing waits.
#[napi]
pub fn recv(fd: i32, mut buf: Uint8Array) -> i32 {
    // SAFETY: `buf` is valid for writes of its length during this call.
    let b = unsafe { buf.as_mut() };
    // SAFETY: as above; `fd` is a socket this addon keeps open.
    unsafe { libc::recv(fd as RawFd, b.as_mut_ptr().cast(), b.len(), 0) as i32 }
}

/// send(2) of the first `len` bytes of `buf`: bytes sent, or -1.
#[napi]
pub fn send(fd: i32, buf: Uint8Array, len: u32) -> i32 {
    let len = (len as usize).min(buf.len());
    // SAFETY: `buf` is valid for reads of `len` bytes during this call.
    unsafe { libc::send(fd as RawFd, buf.as_ptr().cast(), len, libc::MSG_NOSIGNAL) as i32 }
}

/// Ends the connection's sending side: the peer reads its end.
#[napi]
pub fn shutdown(fd: i32) {
    // SAFETY: shutdown(2) takes no pointers; `fd` is a socket this addon keeps open.
    unsafe { libc::shutdown(fd as RawFd, libc::SHUT_WR) };
}
