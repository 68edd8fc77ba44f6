//! Handing a file descriptor to another process over a connected Unix socket: one
//! answer byte, with the descriptor attached (`SCM_RIGHTS`) when there is one. Both
//! the memfd segment hand-off ([`crate::handoff`]) and the side path ([`crate::side`])
//! answer so, and only to callers that run as their own user ([`same_user`]).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// Sends `answer`, with a duplicate of `fd` attached if given.
pub(crate) fn send(to: &UnixStream, answer: u8, fd: Option<RawFd>) -> std::io::Result<()> {
    let mut byte = [answer];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = vec![0u8; fd_space()];
    let mut msg = message(&mut iov, &mut control);
    if let Some(fd) = fd {
        // SAFETY: `msg` has a control buffer of CMSG_SPACE(one int) bytes, so the first
        // header exists and has room for one descriptor after it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        }
    } else {
        msg.msg_control = std::ptr::null_mut();
        msg.msg_controllen = 0;
    }
    // SAFETY: a connected socket and a fully initialised msghdr whose buffers live
    // until the call returns.
    if unsafe { libc::sendmsg(to.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one answer: the byte (`None` if the sender closed without one) and the
/// descriptor that came with it, now ours (close-on-exec).
pub(crate) fn receive(from: &UnixStream) -> std::io::Result<(Option<u8>, Option<File>)> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = vec![0u8; fd_space()];
    let mut msg = message(&mut iov, &mut control);
    // SAFETY: a connected socket and a msghdr whose buffers are ours.
    let n = unsafe { libc::recvmsg(from.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: recvmsg filled `msg`; CMSG_FIRSTHDR reads its control fields, and a
    // SCM_RIGHTS header carries (at least) one descriptor after it, now ours.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (!cmsg.is_null() && (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS)
            .then(|| std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()))
    };
    // SAFETY: the descriptor came with the message and nothing else owns it.
    let file = fd.map(|fd| unsafe { File::from_raw_fd(fd) });
    Ok(((n == 1).then_some(byte[0]), file))
}

/// Bytes of control data that carry one descriptor.
fn fd_space() -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize }
}

/// A message of the one byte `iov` points at, with `control` (of [`fd_space`] bytes)
/// for one descriptor. The caller keeps both buffers alive while the message is used.
fn message(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    msg
}

/// Whether the process at the other end of `s` runs as our (effective) user.
pub(crate) fn same_user(s: &UnixStream) -> std::io::Result<bool> {
    Ok(peer_uid(s)? == current_uid())
}

fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    // SAFETY: a zeroed ucred is valid; getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket, and `cred`/`len` describe a buffer of that size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// This process's effective user.
pub(crate) fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}
