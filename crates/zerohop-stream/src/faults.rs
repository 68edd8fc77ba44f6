//! Faults (`?chaos=`) on a byte stream's connections.
//!
//! A byte stream loses nothing and keeps its order (the kernel resends below it), so
//! what a lossy network does to it is time: each segment a connection writes, and each
//! it reads, meets a fate ([`StreamGate`]) that says when it may go on, and waits in
//! order until then (a lost one for a resend's time). `disconnect` shuts every
//! connection down now and then, as a reset would; they reconnect. The wire's readiness
//! descriptor then wakes also when something waiting is due ([`Waker`]).

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use zerohop_net::chaos::Disconnects;
use zerohop_net::waker::Waker;
use zerohop_transport::chaos::{ChaosConfig, ChaosReport, RECEIVED_SALT, StreamGate};

/// Bytes read from a connection's socket at a time while faults hold its reads.
const READ_CHUNK: usize = 64 << 10;

/// The faults of a wire: the fates each way, and the clock and waker of what waits.
pub struct StreamFaults {
    config: ChaosConfig,
    epoch: Instant,
    sent: StreamGate,
    received: StreamGate,
    disconnects: Disconnects,
    waker: Waker,
}

/// What waits on one connection: segments written and read, each with its time.
#[derive(Default)]
pub struct Held {
    out: VecDeque<(u64, Vec<u8>)>,
    /// Bytes of `out`'s first segment already written.
    out_at: usize,
    inp: VecDeque<(u64, Vec<u8>)>,
    inp_at: usize,
    /// The socket reached its end (after what `inp` holds).
    eof: bool,
}

impl StreamFaults {
    /// Faults as `config` says; `readiness` is what the wire waited on so far.
    pub fn new(config: ChaosConfig, readiness: RawFd) -> io::Result<StreamFaults> {
        let epoch = Instant::now();
        Ok(StreamFaults {
            sent: StreamGate::new(config.spec, config.seed),
            received: StreamGate::new(config.spec, config.seed ^ RECEIVED_SALT),
            disconnects: Disconnects::new(config.spec.disconnect, epoch),
            waker: Waker::new(readiness)?,
            config,
            epoch,
        })
    }

    fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The descriptor to wait on instead of the wire's.
    pub fn fd(&self) -> RawFd {
        self.waker.fd()
    }

    /// Writes `parts` on `fd` as faults let it: at once if nothing waits and the
    /// segment is not late, otherwise kept in `held` for its time. Returns what was
    /// taken (all of it, unless written at once in part).
    pub fn send(&mut self, held: &mut Held, fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
        let now = self.micros(Instant::now());
        let due = self.sent.due_us(now);
        if held.out.is_empty() && due <= now {
            return crate::socket::writev(fd, parts);
        }
        let mut segment = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            segment.extend_from_slice(p);
        }
        let n = segment.len();
        held.out.push_back((due, segment));
        Ok(n)
    }

    /// Reads `fd` as faults let it: what the socket has is taken and kept for its time;
    /// what is due goes into `into` (`WouldBlock` if nothing is yet, 0 at the end).
    pub fn recv(&mut self, held: &mut Held, fd: RawFd, into: &mut [u8]) -> io::Result<usize> {
        let now = self.micros(Instant::now());
        while !held.eof {
            let mut chunk = vec![0u8; READ_CHUNK];
            match crate::socket::read(fd, &mut chunk) {
                Ok(0) => held.eof = true,
                Ok(n) => {
                    chunk.truncate(n);
                    let due = self.received.due_us(now);
                    held.inp.push_back((due, chunk));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let mut n = 0;
        while n < into.len() {
            let Some((due, bytes)) = held.inp.front() else { break };
            if *due > now {
                break;
            }
            let take = (bytes.len() - held.inp_at).min(into.len() - n);
            into[n..n + take].copy_from_slice(&bytes[held.inp_at..held.inp_at + take]);
            n += take;
            held.inp_at += take;
            if held.inp_at == bytes.len() {
                held.inp.pop_front();
                held.inp_at = 0;
            }
        }
        match n {
            0 if held.eof && held.inp.is_empty() => Ok(0),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// Writes what waits on `fd` and is due; whether what was read and waits is due.
    pub fn release(&mut self, held: &mut Held, fd: RawFd, now: Instant) -> bool {
        let now = self.micros(now);
        while let Some((due, bytes)) = held.out.front() {
            if *due > now {
                break;
            }
            match crate::socket::writev(fd, &[&bytes[held.out_at..]]) {
                Ok(n) if held.out_at + n == bytes.len() => {
                    held.out.pop_front();
                    held.out_at = 0;
                }
                Ok(n) => {
                    held.out_at += n;
                    break; // the socket is full: the rest at the next look
                }
                Err(_) => break,
            }
        }
        held.inp.front().is_some_and(|(due, _)| *due <= now) || (held.eof && held.inp.is_empty())
    }

    /// When something held on any of `helds` is due, or the next disconnect.
    pub fn due<'a>(&self, helds: impl Iterator<Item = &'a Held>) -> Option<Instant> {
        let held = helds
            .flat_map(|h| [h.out.front().map(|(d, _)| *d), h.inp.front().map(|(d, _)| *d)])
            .flatten()
            .min()
            .map(|us| self.epoch + Duration::from_micros(us));
        [held, self.disconnects.next()].into_iter().flatten().min()
    }

    /// Takes the waker's expiry and sets it for `due`.
    pub fn rearm(&mut self, now: Instant, due: Option<Instant>) {
        let now_us = self.micros(now);
        self.waker.take_fired(now_us);
        self.waker.arm(due.map(|d| self.micros(d)), now_us);
    }

    /// Whether it is time to drop every connection (counted).
    pub fn disconnect_due(&mut self, now: Instant) -> bool {
        self.disconnects.due(now)
    }

    pub fn report(&self) -> ChaosReport {
        ChaosReport::new(&self.config, self.sent.stats(), self.received.stats(), self.disconnects.count())
    }
}

impl Held {
    /// Bytes written and waiting (part of what is unsent).
    pub fn unsent(&self) -> u64 {
        (self.out.iter().map(|(_, b)| b.len()).sum::<usize>() - self.out_at) as u64
    }
}
