//! KCP: reliable, ordered delivery over datagrams by automatic repeat request, free of
//! I/O and clocks, and on the wire the same as the reference C implementation
//! (skywind3000's `ikcp.c`), so that either end may be the other.
//!
//! A [`Kcp`] is one conversation (its `conv` id, chosen by the caller). The caller
//! hands it what the application sends ([`Kcp::send`]) and every datagram that arrives
//! ([`Kcp::input`]), tells it the time in milliseconds ([`Kcp::update`], when
//! [`Kcp::check`] says), and puts on the network what it emits; the application reads
//! whole messages back with [`Kcp::recv`]. KCP's interval is its retransmission clock:
//! a caller that wants a message out at once calls [`Kcp::flush`] after `send`.
//!
//! Every segment starts with a 24-byte little-endian header: conversation (u32),
//! command (u8: 81 data, 82 acknowledgement, 83 window probe, 84 window answer),
//! fragments still to come in this message (u8; 0 in stream mode), receive window
//! (u16), timestamp (u32), sequence number (u32), next sequence number expected (u32),
//! payload length (u32). A datagram holds as many segments as fit its MTU.
//!
//! What differs from `ikcp.c`, none of it on the wire: no input can panic it (a short,
//! garbled or foreign datagram is an error, counted by the caller); segment buffers
//! are recycled, not allocated per segment; a message longer than
//! [`Kcp::max_message`] is refused (the transport fragments larger ones itself).
//!
//! ```
//! use zerohop_proto::kcp::Kcp;
//!
//! let (mut a, mut b) = (Kcp::new(7), Kcp::new(7));
//! // "fastest": no delay, a 10 ms clock, resend after 2 later acks, no congestion window.
//! a.set_nodelay(1, 10, 2, true);
//! a.send(b"hello").unwrap();
//! let mut wire = Vec::new();
//! a.update(0, &mut |d: &[u8]| wire.push(d.to_vec()));
//! for d in &wire {
//!     b.input(d).unwrap();
//! }
//! let mut buf = [0u8; 16];
//! assert_eq!(b.recv(&mut buf), Ok(5));
//! assert_eq!(&buf[..5], b"hello");
//! ```

use std::collections::VecDeque;

/// Bytes of a segment's header.
pub const OVERHEAD: usize = 24;

const CMD_PUSH: u8 = 81;
const CMD_ACK: u8 = 82;
const CMD_WASK: u8 = 83;
const CMD_WINS: u8 = 84;
/// `probe` bits: ask the peer for its window; tell it ours.
const ASK_SEND: u32 = 1;
const ASK_TELL: u32 = 2;

const RTO_NODELAY_MIN: u32 = 30;
const RTO_MIN: u32 = 100;
const RTO_DEFAULT: u32 = 200;
const RTO_MAX: u32 = 60_000;
const WND_SND: u32 = 32;
const WND_RCV: u32 = 128;
const MTU_DEFAULT: usize = 1400;
const INTERVAL_DEFAULT: u32 = 100;
const DEAD_LINK: u32 = 20;
/// The shortest wait before a tail probe (see [`KcpConfig::tail_probe`]), in ms: above
/// the scheduling noise of a loaded host, far below any retransmission timeout.
pub const TAIL_PROBE_MIN_MS: u32 = 5;
/// Tail probes of one segment at most: a second, after twice the wait, covers a lost
/// first (at 5 % loss, one round trip in a hundred lost a segment and then its probe,
/// and waited out the timeout).
pub const TAIL_PROBES: u8 = 2;
const THRESH_INIT: u32 = 2;
const THRESH_MIN: u32 = 2;
const PROBE_INIT: u32 = 7_000;
const PROBE_LIMIT: u32 = 120_000;
const FASTACK_LIMIT: u32 = 5;
/// Segment buffers kept for reuse at most (beyond them, a freed buffer is dropped).
const POOL_MAX: usize = 1024;

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KcpError {
    /// A datagram shorter than a header, or a segment longer than what is left of it.
    Truncated,
    /// A segment of another conversation.
    WrongConversation(u32),
    /// A segment whose command is none of KCP's four.
    UnknownCommand(u8),
    /// A message of more fragments than the peer can reassemble (see [`Kcp::max_message`]).
    TooLarge { len: usize, max: usize },
    /// `recv`: no whole message waiting.
    NothingToReceive,
    /// `recv`: the buffer is shorter than the message waiting (its length inside).
    BufferTooSmall(usize),
    /// An MTU below 50 bytes or above 65,535.
    BadMtu(usize),
}

impl std::fmt::Display for KcpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => write!(f, "truncated KCP segment"),
            Self::WrongConversation(c) => write!(f, "segment of conversation {c}"),
            Self::UnknownCommand(c) => write!(f, "unknown KCP command {c}"),
            Self::TooLarge { len, max } => write!(f, "message of {len} bytes exceeds KCP's {max}"),
            Self::NothingToReceive => write!(f, "no whole message waiting"),
            Self::BufferTooSmall(n) => write!(f, "the message waiting is {n} bytes"),
            Self::BadMtu(m) => write!(f, "MTU {m} is outside 50..=65535"),
        }
    }
}

impl std::error::Error for KcpError {}

/// Counters of a conversation (what `metrics()` reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KcpStats {
    /// Segments sent again after their timeout.
    pub retransmits: u64,
    /// Segments sent again because later ones were acknowledged (`resend` of them).
    pub fast_retransmits: u64,
    /// Data segments that arrived twice, or outside the receive window.
    pub duplicates: u64,
    /// Datagrams emitted.
    pub datagrams_out: u64,
    /// Tail probes sent (see [`KcpConfig::tail_probe`]).
    pub tail_probes: u64,
}

/// KCP's four presets. Each is `ikcp_nodelay`'s four parameters (nodelay, interval,
/// resend, no congestion control), as kcptun and most KCP users name them:
///
/// | mode | nodelay | interval | resend | no congestion control | minimum RTO |
/// |---|---|---|---|---|---|
/// | `normal` | 0 | 40 ms | 0 (off) | no | 100 ms |
/// | `fast` (default) | 0 | 30 ms | 2 | yes | 100 ms |
/// | `turbo` | 1 | 20 ms | 2 | yes | 30 ms |
/// | `fastest` | 1 | 10 ms | 2 | yes | 10 ms |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Normal,
    #[default]
    Fast,
    Turbo,
    Fastest,
}

impl Mode {
    /// Every mode, by its name.
    pub const ALL: [(&'static str, Mode); 4] =
        [("normal", Mode::Normal), ("fast", Mode::Fast), ("turbo", Mode::Turbo), ("fastest", Mode::Fastest)];

    /// The mode called `name` (`normal`, `fast`, `turbo`, `fastest`).
    pub fn parse(name: &str) -> Option<Mode> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|&(_, m)| m)
    }

    /// The mode's preset, with 128-segment windows, a 1400-byte MTU and message mode.
    pub fn config(self) -> KcpConfig {
        let (nodelay, interval_ms, resend, no_congestion_control, min_rto_ms) = match self {
            Mode::Normal => (0, 40, 0, false, RTO_MIN),
            Mode::Fast => (0, 30, 2, true, RTO_MIN),
            Mode::Turbo => (1, 20, 2, true, RTO_NODELAY_MIN),
            Mode::Fastest => (1, 10, 2, true, 10),
        };
        KcpConfig {
            nodelay,
            interval_ms,
            resend,
            no_congestion_control,
            min_rto_ms,
            send_window: WND_RCV,
            recv_window: WND_RCV,
            mtu: MTU_DEFAULT,
            stream: false,
            tail_probe: false,
        }
    }
}

/// Everything a conversation is set up with: a [`Mode`]'s preset, then any parameter
/// set by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KcpConfig {
    /// 0: the normal resend timer (each timeout doubles the RTO); 1: no delay (it grows by
    /// half); 2: by half of the current RTO.
    pub nodelay: u32,
    /// The retransmission clock's period, 10..=5000 ms.
    pub interval_ms: u32,
    /// Resend a segment once this many later ones were acknowledged (0: never early).
    pub resend: u32,
    pub no_congestion_control: bool,
    pub min_rto_ms: u32,
    /// Segments in flight at most.
    pub send_window: u32,
    /// Segments the receiver holds at most (at least 128).
    pub recv_window: u32,
    /// Bytes of a datagram, header included (50..=65535).
    pub mtu: usize,
    /// A byte stream rather than messages.
    pub stream: bool,
    /// Not in the reference: the newest segment in flight, unacknowledged for two
    /// round trips (at least [`TAIL_PROBE_MIN_MS`]) with nothing sent after it, is sent
    /// once more, as TCP's tail loss probe does (and again after twice as long, at most
    /// [`TAIL_PROBES`] times). A lost last segment (a request, the
    /// end of a burst) then costs milliseconds rather than a retransmission timeout,
    /// which fast resend cannot shorten (nothing after it is acknowledged). Only the
    /// timing of a resend changes: the wire is the same.
    pub tail_probe: bool,
}

impl Default for KcpConfig {
    fn default() -> Self {
        Mode::default().config()
    }
}

/// A data segment: what ordering and reassembly need, and the sender's bookkeeping
/// (the header's other fields are written as it goes out).
#[derive(Debug, Default)]
struct Segment {
    frg: u8,
    /// When it was last sent (an acknowledgement echoes it).
    ts: u32,
    sn: u32,
    resend_at: u32,
    rto: u32,
    fastack: u32,
    xmit: u32,
    /// Tail probes sent of it (at most [`TAIL_PROBES`]).
    probes: u8,
    data: Vec<u8>,
}

/// Signed distance from `earlier` to `later` on a clock that wraps at 2^32.
fn diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A datagram's first segment, read without a conversation: what a listener needs to
/// decide whether a datagram from an unknown address starts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstSegment<'a> {
    pub conv: u32,
    /// A data segment (not an acknowledgement or a window probe).
    pub is_data: bool,
    pub sn: u32,
    pub payload: &'a [u8],
}

/// The first segment of `datagram`, if it holds a whole one.
pub fn first_segment(datagram: &[u8]) -> Option<FirstSegment<'_>> {
    if datagram.len() < OVERHEAD {
        return None;
    }
    let len = read_u32(datagram, 20) as usize;
    let payload = datagram.get(OVERHEAD..OVERHEAD.checked_add(len)?)?;
    Some(FirstSegment {
        conv: read_u32(datagram, 0),
        is_data: datagram[4] == CMD_PUSH,
        sn: read_u32(datagram, 12),
        payload,
    })
}

/// A KCP conversation (see the module docs).
#[derive(Debug)]
pub struct Kcp {
    conv: u32,
    mtu: usize,
    mss: usize,
    dead: bool,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    ssthresh: u32,
    rx_rttval: u32,
    rx_srtt: u32,
    rx_rto: u32,
    rx_minrto: u32,
    snd_wnd: u32,
    rcv_wnd: u32,
    rmt_wnd: u32,
    cwnd: u32,
    incr: u32,
    probe: u32,
    current: u32,
    interval: u32,
    ts_flush: u32,
    nodelay: u32,
    updated: bool,
    ts_probe: u32,
    probe_wait: u32,
    dead_link: u32,
    fastresend: u32,
    fastlimit: u32,
    nocwnd: bool,
    stream: bool,
    tail_probe: bool,
    snd_queue: VecDeque<Segment>,
    snd_buf: VecDeque<Segment>,
    rcv_queue: VecDeque<Segment>,
    rcv_buf: VecDeque<Segment>,
    /// Acknowledgements to send: (sequence number, its timestamp).
    acks: Vec<(u32, u32)>,
    /// The datagram being assembled.
    out: Vec<u8>,
    pool: Vec<Vec<u8>>,
    stats: KcpStats,
}

impl Kcp {
    /// A conversation `conv` in message mode, with `ikcp_create`'s defaults (MTU 1400,
    /// windows 32/128, interval 100 ms, no fast resend, congestion control on).
    pub fn new(conv: u32) -> Self {
        Self {
            conv,
            mtu: MTU_DEFAULT,
            mss: MTU_DEFAULT - OVERHEAD,
            dead: false,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            ssthresh: THRESH_INIT,
            rx_rttval: 0,
            rx_srtt: 0,
            rx_rto: RTO_DEFAULT,
            rx_minrto: RTO_MIN,
            snd_wnd: WND_SND,
            rcv_wnd: WND_RCV,
            rmt_wnd: WND_RCV,
            cwnd: 0,
            incr: 0,
            probe: 0,
            current: 0,
            interval: INTERVAL_DEFAULT,
            ts_flush: INTERVAL_DEFAULT,
            nodelay: 0,
            updated: false,
            ts_probe: 0,
            probe_wait: 0,
            dead_link: DEAD_LINK,
            fastresend: 0,
            fastlimit: FASTACK_LIMIT,
            nocwnd: false,
            stream: false,
            tail_probe: false,
            snd_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            rcv_buf: VecDeque::new(),
            acks: Vec::new(),
            out: Vec::with_capacity(MTU_DEFAULT),
            pool: Vec::new(),
            stats: KcpStats::default(),
        }
    }

    /// A conversation `conv` set up by `config`.
    pub fn with_config(conv: u32, config: &KcpConfig) -> Result<Self, KcpError> {
        let mut k = Self::new(conv);
        k.set_mtu(config.mtu)?;
        k.set_nodelay(config.nodelay, config.interval_ms, config.resend, config.no_congestion_control);
        k.set_min_rto(config.min_rto_ms);
        k.set_window(config.send_window, config.recv_window);
        k.set_stream(config.stream);
        k.tail_probe = config.tail_probe;
        Ok(k)
    }

    /// Stream mode: message boundaries are not kept (a byte stream the caller frames).
    pub fn set_stream(&mut self, stream: bool) {
        self.stream = stream;
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// Sets the MTU (datagram size): at least 50 bytes, as `ikcp_setmtu` requires, and
    /// at most 65,535.
    pub fn set_mtu(&mut self, mtu: usize) -> Result<(), KcpError> {
        if !(50..=65_535).contains(&mtu) {
            return Err(KcpError::BadMtu(mtu));
        }
        self.mtu = mtu;
        self.mss = mtu - OVERHEAD;
        self.out = Vec::with_capacity(mtu);
        Ok(())
    }

    /// `ikcp_nodelay`: `nodelay` (0 off, 1 on, 2 on and resend steps of the current RTO),
    /// the update `interval_ms` (10..=5000), `resend` (fast resend after that many later
    /// acknowledgements; 0 off) and `no_congestion_control`.
    pub fn set_nodelay(&mut self, nodelay: u32, interval_ms: u32, resend: u32, no_congestion_control: bool) {
        self.nodelay = nodelay;
        self.rx_minrto = if nodelay != 0 { RTO_NODELAY_MIN } else { RTO_MIN };
        self.interval = interval_ms.clamp(10, 5000);
        self.fastresend = resend;
        self.nocwnd = no_congestion_control;
    }

    /// The smallest retransmission timeout (after `set_nodelay`, which sets 30 or 100).
    pub fn set_min_rto(&mut self, ms: u32) {
        self.rx_minrto = ms;
    }

    /// `ikcp_wndsize`: send and receive windows in segments (0 keeps one; the receive
    /// window is at least 128, as the reference's).
    pub fn set_window(&mut self, send: u32, receive: u32) {
        if send > 0 {
            self.snd_wnd = send;
        }
        if receive > 0 {
            self.rcv_wnd = receive.max(WND_RCV);
        }
    }

    /// How many resends of one segment make the link dead (default 20).
    pub fn set_dead_link(&mut self, resends: u32) {
        self.dead_link = resends.max(1);
    }

    /// Whether a segment was resent `dead_link` times without an acknowledgement.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The longest message `send` takes: as many fragments as a receive window of the
    /// reference's default holds, less one, and never more than the header can count.
    pub fn max_message(&self) -> usize {
        self.mss * (WND_RCV as usize - 1).min(256)
    }

    /// Segments waiting to be sent or acknowledged (`ikcp_waitsnd`).
    pub fn waiting(&self) -> usize {
        self.snd_buf.len() + self.snd_queue.len()
    }

    /// Bytes waiting to be sent or acknowledged.
    pub fn waiting_bytes(&self) -> usize {
        self.snd_buf.iter().chain(&self.snd_queue).map(|s| s.data.len()).sum()
    }

    /// Smoothed round-trip time and retransmission timeout, in milliseconds.
    pub fn rtt(&self) -> (u32, u32) {
        (self.rx_srtt, self.rx_rto)
    }

    /// The congestion window, in segments.
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// Counters since this conversation began.
    pub fn stats(&self) -> KcpStats {
        self.stats
    }

    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b
    }

    fn recycle(&mut self, seg: Segment) {
        if self.pool.len() < POOL_MAX {
            self.pool.push(seg.data);
        }
    }

    /// Queues `data` as one message (message mode) or as more of the stream. Nothing
    /// goes out until the next [`Kcp::flush`] or [`Kcp::update`].
    pub fn send(&mut self, mut data: &[u8]) -> Result<usize, KcpError> {
        let mss = self.mss;
        let total = data.len();
        if self.stream {
            // Fill the last segment queued first.
            if let Some(last) = self.snd_queue.back_mut()
                && last.data.len() < mss
            {
                let take = (mss - last.data.len()).min(data.len());
                last.data.extend_from_slice(&data[..take]);
                data = &data[take..];
            }
            if data.is_empty() {
                return Ok(total);
            }
        }
        // (An empty message is one empty segment, as in the reference.)
        let count = data.len().div_ceil(mss).max(1);
        if !self.stream && data.len() > self.max_message() {
            return Err(KcpError::TooLarge { len: data.len(), max: self.max_message() });
        }
        for i in 0..count {
            let take = mss.min(data.len());
            let mut buf = self.buffer();
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            let frg = if self.stream { 0 } else { (count - i - 1) as u8 };
            self.snd_queue.push_back(Segment { frg, data: buf, ..Segment::default() });
        }
        Ok(total)
    }

    /// The length of the next whole message waiting, if one is.
    pub fn peek_size(&self) -> Option<usize> {
        let first = self.rcv_queue.front()?;
        if first.frg == 0 {
            return Some(first.data.len());
        }
        if self.rcv_queue.len() < first.frg as usize + 1 {
            return None;
        }
        let mut len = 0;
        for seg in &self.rcv_queue {
            len += seg.data.len();
            if seg.frg == 0 {
                return Some(len);
            }
        }
        None
    }

    /// Takes the next whole message into `buf`: its length.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, KcpError> {
        let size = self.peek_size().ok_or(KcpError::NothingToReceive)?;
        if size > buf.len() {
            return Err(KcpError::BufferTooSmall(size));
        }
        let recover = self.rcv_queue.len() >= self.rcv_wnd as usize;
        let mut at = 0;
        while let Some(seg) = self.rcv_queue.pop_front() {
            buf[at..at + seg.data.len()].copy_from_slice(&seg.data);
            at += seg.data.len();
            let last = seg.frg == 0;
            self.recycle(seg);
            if last {
                break;
            }
        }
        self.move_to_queue();
        // The window was full and is not: tell the peer at the next flush.
        if recover && self.rcv_queue.len() < self.rcv_wnd as usize {
            self.probe |= ASK_TELL;
        }
        Ok(at)
    }

    /// Moves segments that are next in order from the receive buffer to the queue.
    fn move_to_queue(&mut self) {
        while let Some(seg) = self.rcv_buf.front() {
            if seg.sn != self.rcv_nxt || self.rcv_queue.len() >= self.rcv_wnd as usize {
                break;
            }
            let seg = self.rcv_buf.pop_front().expect("front exists");
            self.rcv_queue.push_back(seg);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
    }

    /// A datagram from the peer: every segment in it. Segments before a bad one are
    /// taken; the bad one and what follows are not (as the reference does).
    pub fn input(&mut self, mut data: &[u8]) -> Result<(), KcpError> {
        if data.len() < OVERHEAD {
            return Err(KcpError::Truncated);
        }
        let prev_una = self.snd_una;
        let mut max_ack: Option<(u32, u32)> = None;
        let mut outcome = Ok(());
        while data.len() >= OVERHEAD {
            let conv = read_u32(data, 0);
            if conv != self.conv {
                outcome = Err(KcpError::WrongConversation(conv));
                break;
            }
            let cmd = data[4];
            let frg = data[5];
            let wnd = u16::from_le_bytes([data[6], data[7]]);
            let ts = read_u32(data, 8);
            let sn = read_u32(data, 12);
            let una = read_u32(data, 16);
            let len = read_u32(data, 20) as usize;
            data = &data[OVERHEAD..];
            if data.len() < len {
                outcome = Err(KcpError::Truncated);
                break;
            }
            if !matches!(cmd, CMD_PUSH | CMD_ACK | CMD_WASK | CMD_WINS) {
                outcome = Err(KcpError::UnknownCommand(cmd));
                break;
            }
            self.rmt_wnd = wnd as u32;
            self.parse_una(una);
            self.shrink_buf();
            match cmd {
                CMD_ACK => {
                    if diff(self.current, ts) >= 0 {
                        self.update_ack(diff(self.current, ts) as u32);
                    }
                    self.parse_ack(sn);
                    self.shrink_buf();
                    // The latest acknowledgement, by sequence number and by when its
                    // segment was sent (the reference's conservative fast-ack).
                    max_ack = match max_ack {
                        Some((m, t)) if diff(sn, m) <= 0 || diff(ts, t) <= 0 => Some((m, t)),
                        _ => Some((sn, ts)),
                    };
                }
                CMD_PUSH => {
                    if diff(sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        // (Bounded: a flood between two flushes must not grow it without
                        // end. An acknowledgement left out costs a resend, acknowledged then.)
                        if self.acks.len() < 4 * self.rcv_wnd as usize {
                            self.acks.push((sn, ts));
                        }
                        if diff(sn, self.rcv_nxt) >= 0 {
                            let mut buf = self.buffer();
                            buf.extend_from_slice(&data[..len]);
                            self.parse_data(Segment { frg, ts, sn, data: buf, ..Segment::default() });
                        } else {
                            self.stats.duplicates += 1;
                        }
                    } else {
                        self.stats.duplicates += 1;
                    }
                }
                CMD_WASK => self.probe |= ASK_TELL,
                _ => {} // CMD_WINS: the window, read above
            }
            data = &data[len..];
        }
        if let Some((sn, ts)) = max_ack {
            self.parse_fastack(sn, ts);
        }
        if diff(self.snd_una, prev_una) > 0 && self.cwnd < self.rmt_wnd {
            // (In 64 bits: an MTU near 64 KiB squares past 2^32.)
            let mss = self.mss as u64;
            let mut incr = u64::from(self.incr);
            if self.cwnd < self.ssthresh {
                self.cwnd += 1;
                incr += mss;
            } else {
                incr = incr.max(mss);
                incr += (mss * mss) / incr + mss / 16;
                if (u64::from(self.cwnd) + 1) * mss <= incr {
                    self.cwnd = ((incr + mss - 1) / mss.max(1)).min(u64::from(u32::MAX)) as u32;
                }
            }
            if self.cwnd > self.rmt_wnd {
                self.cwnd = self.rmt_wnd;
                incr = u64::from(self.rmt_wnd) * mss;
            }
            self.incr = incr.min(u64::from(u32::MAX)) as u32;
        }
        outcome
    }

    /// A round trip of `rtt` ms measured: the smoothed RTT, its variation and the
    /// RTO (as the reference computes them; in 64 bits, since a peer's timestamp may
    /// make `rtt` anything up to 2^31).
    fn update_ack(&mut self, rtt: u32) {
        let rtt = u64::from(rtt);
        let (srtt, rttval) = if self.rx_srtt == 0 {
            (rtt, rtt / 2)
        } else {
            let (srtt, rttval) = (u64::from(self.rx_srtt), u64::from(self.rx_rttval));
            ((7 * srtt + rtt) / 8, (3 * rttval + rtt.abs_diff(srtt)) / 4)
        };
        self.rx_srtt = srtt.clamp(1, u64::from(u32::MAX)) as u32;
        self.rx_rttval = rttval.min(u64::from(u32::MAX)) as u32;
        let rto = u64::from(self.rx_srtt) + u64::from(self.interval).max(4 * u64::from(self.rx_rttval));
        self.rx_rto = rto.clamp(u64::from(self.rx_minrto), u64::from(RTO_MAX)) as u32;
    }

    fn shrink_buf(&mut self) {
        self.snd_una = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
    }

    fn parse_ack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        // (Ordered by sequence number: the first at or past `sn` is it, or it is gone.)
        if let Some(i) = self.snd_buf.iter().position(|s| diff(s.sn, sn) >= 0)
            && self.snd_buf[i].sn == sn
        {
            let seg = self.snd_buf.remove(i).expect("index found");
            self.recycle(seg);
        }
    }

    fn parse_una(&mut self, una: u32) {
        while let Some(seg) = self.snd_buf.front() {
            if diff(una, seg.sn) <= 0 {
                break;
            }
            let seg = self.snd_buf.pop_front().expect("front exists");
            self.recycle(seg);
        }
    }

    /// Segment `sn`, sent at `ts`, was acknowledged: each earlier one still waiting,
    /// sent no later than it, was skipped once more.
    fn parse_fastack(&mut self, sn: u32, ts: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        for seg in self.snd_buf.iter_mut() {
            if diff(sn, seg.sn) < 0 {
                break;
            }
            if sn != seg.sn && diff(ts, seg.ts) >= 0 {
                seg.fastack += 1;
            }
        }
    }

    fn parse_data(&mut self, seg: Segment) {
        let sn = seg.sn;
        if diff(sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0 || diff(sn, self.rcv_nxt) < 0 {
            self.stats.duplicates += 1;
            self.recycle(seg);
            return;
        }
        // Where it goes, from the back (most arrive in order).
        let mut at = self.rcv_buf.len();
        let mut repeat = false;
        while at > 0 {
            let other = self.rcv_buf[at - 1].sn;
            if other == sn {
                repeat = true;
                break;
            }
            if diff(sn, other) > 0 {
                break;
            }
            at -= 1;
        }
        if repeat {
            self.stats.duplicates += 1;
            self.recycle(seg);
        } else {
            self.rcv_buf.insert(at, seg);
        }
        self.move_to_queue();
    }

    fn window_unused(&self) -> u16 {
        (self.rcv_wnd as usize).saturating_sub(self.rcv_queue.len()).min(u16::MAX as usize) as u16
    }

    /// Appends a segment's header (and `payload`) to the datagram being assembled,
    /// emitting that datagram first if the segment would not fit it.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        emit: &mut dyn FnMut(&[u8]),
        cmd: u8,
        frg: u8,
        wnd: u16,
        ts: u32,
        sn: u32,
        una: u32,
        payload: &[u8],
    ) {
        if self.out.len() + OVERHEAD + payload.len() > self.mtu {
            self.emit(emit);
        }
        let o = &mut self.out;
        o.extend_from_slice(&self.conv.to_le_bytes());
        o.push(cmd);
        o.push(frg);
        o.extend_from_slice(&wnd.to_le_bytes());
        o.extend_from_slice(&ts.to_le_bytes());
        o.extend_from_slice(&sn.to_le_bytes());
        o.extend_from_slice(&una.to_le_bytes());
        o.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        o.extend_from_slice(payload);
    }

    fn emit(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.out.is_empty() {
            emit(&self.out);
            self.stats.datagrams_out += 1;
            self.out.clear();
        }
    }

    /// Sends what is due now: acknowledgements, window probes, new data the windows
    /// allow, and resends (timed out, or fast); each datagram goes to `emit`.
    pub fn flush(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.updated {
            return;
        }
        let current = self.current;
        let wnd = self.window_unused();
        let rcv_nxt = self.rcv_nxt;
        let acks = std::mem::take(&mut self.acks);
        for &(sn, ts) in &acks {
            self.put(emit, CMD_ACK, 0, wnd, ts, sn, rcv_nxt, &[]);
        }
        self.acks = acks;
        self.acks.clear();

        // A peer with no window is asked for it, less and less often.
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT;
                self.ts_probe = current.wrapping_add(self.probe_wait);
            } else if diff(current, self.ts_probe) >= 0 {
                self.probe_wait = self.probe_wait.max(PROBE_INIT);
                self.probe_wait += self.probe_wait / 2;
                self.probe_wait = self.probe_wait.min(PROBE_LIMIT);
                self.ts_probe = current.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        if self.probe & ASK_SEND != 0 {
            self.put(emit, CMD_WASK, 0, wnd, 0, 0, rcv_nxt, &[]);
        }
        if self.probe & ASK_TELL != 0 {
            self.put(emit, CMD_WINS, 0, wnd, 0, 0, rcv_nxt, &[]);
        }
        self.probe = 0;

        let mut cwnd = self.snd_wnd.min(self.rmt_wnd);
        if !self.nocwnd {
            cwnd = cwnd.min(self.cwnd);
        }
        while diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let Some(mut seg) = self.snd_queue.pop_front() else { break };
            seg.ts = current;
            seg.sn = self.snd_nxt;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            seg.resend_at = current;
            seg.rto = self.rx_rto;
            seg.fastack = 0;
            seg.xmit = 0;
            self.snd_buf.push_back(seg);
        }

        let resent = if self.fastresend > 0 { self.fastresend } else { u32::MAX };
        let rtomin = if self.nodelay == 0 { self.rx_rto >> 3 } else { 0 };
        let (mut lost, mut change) = (false, false);
        for i in 0..self.snd_buf.len() {
            let seg = &mut self.snd_buf[i];
            let mut send = false;
            if seg.xmit == 0 {
                send = true;
                seg.xmit += 1;
                seg.rto = self.rx_rto;
                seg.resend_at = current.wrapping_add(seg.rto.saturating_add(rtomin));
            } else if diff(current, seg.resend_at) >= 0 {
                send = true;
                seg.xmit += 1;
                self.stats.retransmits += 1;
                if self.nodelay == 0 {
                    seg.rto = seg.rto.saturating_add(seg.rto.max(self.rx_rto));
                } else {
                    let step = if self.nodelay < 2 { seg.rto } else { self.rx_rto };
                    seg.rto = seg.rto.saturating_add(step / 2);
                }
                seg.resend_at = current.wrapping_add(seg.rto);
                lost = true;
            } else if seg.fastack >= resent && (seg.xmit <= self.fastlimit || self.fastlimit == 0) {
                send = true;
                seg.xmit += 1;
                seg.fastack = 0;
                seg.resend_at = current.wrapping_add(seg.rto);
                self.stats.fast_retransmits += 1;
                change = true;
            }
            if send {
                seg.ts = current;
                if seg.xmit >= self.dead_link {
                    self.dead = true;
                }
                // (Taken out for the write, put back: `put` needs all of self.)
                let data = std::mem::take(&mut seg.data);
                let (frg, ts, sn) = (seg.frg, seg.ts, seg.sn);
                self.put(emit, CMD_PUSH, frg, wnd, ts, sn, rcv_nxt, &data);
                self.snd_buf[i].data = data;
            }
        }
        if let Some(at) = self.tail_probe_at()
            && diff(current, at) >= 0
        {
            let seg = self.snd_buf.back_mut().expect("a probe has a tail");
            seg.probes += 1;
            seg.ts = current;
            self.stats.tail_probes += 1;
            let data = std::mem::take(&mut seg.data);
            let (frg, ts, sn) = (seg.frg, seg.ts, seg.sn);
            self.put(emit, CMD_PUSH, frg, wnd, ts, sn, rcv_nxt, &data);
            self.snd_buf.back_mut().expect("still there").data = data;
        }
        self.emit(emit);

        let mss = self.mss as u32;
        if change {
            let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
            self.ssthresh = (inflight / 2).max(THRESH_MIN);
            self.cwnd = self.ssthresh.saturating_add(resent);
            self.incr = self.cwnd.saturating_mul(mss);
        }
        if lost {
            self.ssthresh = (cwnd / 2).max(THRESH_MIN);
            self.cwnd = 1;
            self.incr = mss;
        }
        if self.cwnd < 1 {
            self.cwnd = 1;
            self.incr = mss;
        }
    }

    /// When the tail probe is due (see [`KcpConfig::tail_probe`]): two round trips after
    /// the newest segment in flight was last sent (twice that after a first probe), if
    /// it was not probed [`TAIL_PROBES`] times yet and its own resend does not come first.
    fn tail_probe_at(&self) -> Option<u32> {
        let seg = self.snd_buf.back().filter(|s| self.tail_probe && s.probes < TAIL_PROBES && s.xmit > 0)?;
        let wait = self.rx_srtt.saturating_mul(2).max(TAIL_PROBE_MIN_MS) << seg.probes;
        let at = seg.ts.wrapping_add(wait);
        (diff(seg.resend_at, at) > 0).then_some(at)
    }

    /// Tells the conversation the time (`now`, milliseconds on any clock that wraps at
    /// 2^32) and flushes when its interval has passed.
    pub fn update(&mut self, now: u32, emit: &mut dyn FnMut(&[u8])) {
        self.set_now(now);
        let mut slap = diff(now, self.ts_flush);
        if !(-10_000..10_000).contains(&slap) {
            self.ts_flush = now;
            slap = 0;
        }
        if slap >= 0 {
            self.ts_flush = self.ts_flush.wrapping_add(self.interval);
            if diff(now, self.ts_flush) >= 0 {
                self.ts_flush = now.wrapping_add(self.interval);
            }
            self.flush(emit);
        }
    }

    /// Sets the time without flushing (for a caller that flushes itself, at once).
    pub fn set_now(&mut self, now: u32) {
        self.current = now;
        if !self.updated {
            self.updated = true;
            self.ts_flush = now;
        }
    }

    /// Whether nothing is due until something is sent or arrives: nothing queued or in
    /// flight, no acknowledgement owed, no window to ask for or tell. An idle conversation
    /// needs no timer (`check` still answers the next interval, as the reference's does);
    /// the caller sets the time and flushes when it sends or a datagram arrives.
    pub fn is_idle(&self) -> bool {
        self.snd_queue.is_empty() && self.snd_buf.is_empty() && self.acks.is_empty() && self.probe == 0
    }

    /// When [`Kcp::update`] should next be called, given the time now: the next flush
    /// or the earliest resend, whichever comes first (`ikcp_check`).
    pub fn check(&self, now: u32) -> u32 {
        if !self.updated {
            return now;
        }
        let mut ts_flush = self.ts_flush;
        if !(-10_000..10_000).contains(&diff(now, ts_flush)) {
            ts_flush = now;
        }
        if diff(now, ts_flush) >= 0 {
            return now;
        }
        let mut soonest = diff(ts_flush, now) as u32;
        let probe = self.tail_probe_at().into_iter();
        for resend_at in self.snd_buf.iter().map(|s| s.resend_at).chain(probe) {
            let d = diff(resend_at, now);
            if d <= 0 {
                return now;
            }
            soonest = soonest.min(d as u32);
        }
        now.wrapping_add(soonest.min(self.interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::{Chaos, ChaosSpec, Fate};

    /// Two conversations joined by a link that loses, duplicates, reorders and delays
    /// datagrams as `settings` say; `rounds` steps of 10 ms.
    struct Pair {
        a: Kcp,
        b: Kcp,
        chaos: Chaos,
        /// In flight: (due at, to b?, bytes).
        wire: Vec<(u32, bool, Vec<u8>)>,
        now: u32,
    }

    impl Pair {
        fn new(spec: &str, seed: u64, tune: impl Fn(&mut Kcp)) -> Self {
            let (mut a, mut b) = (Kcp::new(0x1234), Kcp::new(0x1234));
            tune(&mut a);
            tune(&mut b);
            Self { a, b, chaos: Chaos::new(ChaosSpec::parse(spec).unwrap(), seed), wire: Vec::new(), now: 0 }
        }

        fn step(&mut self, ms: u32) {
            self.now = self.now.wrapping_add(ms);
            let now = self.now;
            let mut sent = Vec::new();
            self.a.update(now, &mut |d: &[u8]| sent.push((true, d.to_vec())));
            self.b.update(now, &mut |d: &[u8]| sent.push((false, d.to_vec())));
            for (to_b, d) in sent {
                if let Fate::Deliver { copies, delay, .. } = self.chaos.decide() {
                    for _ in 0..copies {
                        self.wire.push((now.wrapping_add(delay.as_millis() as u32), to_b, d.clone()));
                    }
                }
            }
            // Deliver what is due, in the (possibly reordered) order it became due.
            let mut due: Vec<_> = Vec::new();
            self.wire.retain(|(at, to_b, d)| {
                if diff(now, *at) >= 0 {
                    due.push((*to_b, d.clone()));
                    false
                } else {
                    true
                }
            });
            for (to_b, d) in due {
                let k = if to_b { &mut self.b } else { &mut self.a };
                k.input(&d).unwrap();
            }
        }
    }

    fn messages(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| (0..(1 + i * 37 % 5000)).map(|j| (i + j) as u8).collect()).collect()
    }

    fn deliver(pair: &mut Pair, sent: &[Vec<u8>], max_steps: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut next = 0;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..max_steps {
            while next < sent.len() && pair.a.waiting() < 256 {
                pair.a.send(&sent[next]).unwrap();
                next += 1;
            }
            pair.step(10);
            while let Ok(n) = pair.b.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
            if got.len() == sent.len() {
                break;
            }
        }
        got
    }

    #[test]
    fn messages_arrive_whole_once_and_in_order_through_a_clean_link() {
        let sent = messages(200);
        let mut pair = Pair::new("", 1, |_| {});
        let got = deliver(&mut pair, &sent, 10_000);
        assert_eq!(got, sent);
        assert_eq!(pair.a.stats().retransmits, 0);
    }

    #[test]
    fn loss_reordering_and_duplication_lose_nothing_in_every_mode() {
        let spec = "loss:0.2,dup:0.1,reorder:0.2,reorder_by:40ms,delay:30ms,jitter:20ms";
        for (mode, preset) in Mode::ALL {
            for (seed, tail_probe) in (0..8).map(|s| (s, s % 2 == 1)) {
                let sent = messages(150);
                let config = KcpConfig { tail_probe, ..preset.config() };
                let mut pair = Pair::new(spec, seed, |k| *k = Kcp::with_config(k.conv(), &config).unwrap());
                let got = deliver(&mut pair, &sent, 200_000);
                let of = format!("{mode}, seed {seed}, tail probe {tail_probe}");
                assert_eq!(got.len(), sent.len(), "{of}: {} of {}", got.len(), sent.len());
                assert_eq!(got, sent, "{of}");
                let s = pair.a.stats();
                assert!(s.retransmits + s.fast_retransmits + s.tail_probes > 0, "{of}: the link lost nothing?");
            }
        }
    }

    #[test]
    fn each_mode_is_its_documented_preset_and_a_parameter_set_by_itself_wins() {
        assert_eq!(Mode::parse("fast"), Some(Mode::default()));
        assert_eq!(Mode::parse("warp"), None);
        let fastest = Mode::parse("fastest").unwrap().config();
        assert_eq!(
            (fastest.nodelay, fastest.interval_ms, fastest.resend, fastest.no_congestion_control, fastest.min_rto_ms),
            (1, 10, 2, true, 10)
        );
        let normal = Mode::Normal.config();
        assert_eq!(
            (normal.nodelay, normal.interval_ms, normal.resend, normal.no_congestion_control),
            (0, 40, 0, false)
        );
        let k = Kcp::with_config(9, &KcpConfig { interval_ms: 3, min_rto_ms: 50, mtu: 576, ..fastest }).unwrap();
        assert_eq!(
            (k.interval, k.rx_minrto, k.mtu, k.mss),
            (10, 50, 576, 576 - OVERHEAD),
            "the interval is clamped to 10..=5000"
        );
        assert_eq!(Kcp::with_config(9, &KcpConfig { mtu: 20, ..fastest }).unwrap_err(), KcpError::BadMtu(20));
    }

    #[test]
    fn a_lost_tail_is_probed_long_before_its_timeout() {
        // (probe, datagrams lost: the segment, and then its first probe too)
        for (probe, lost) in [(false, 1), (true, 1), (true, 2)] {
            let config = KcpConfig { tail_probe: probe, ..Mode::Fast.config() };
            let (mut a, mut b) = (Kcp::with_config(1, &config).unwrap(), Kcp::with_config(1, &config).unwrap());
            let mut wire: Vec<Vec<u8>> = Vec::new();
            let mut dropped = 0;
            a.send(b"ping").unwrap();
            // A caller that turns the conversation when `check` says (as the transport does).
            let arrived = (0..1000).find(|&now| {
                a.update(now, &mut |d: &[u8]| wire.push(d.to_vec()));
                if a.check(now) == now {
                    a.flush(&mut |d: &[u8]| wire.push(d.to_vec()));
                }
                for d in wire.drain(..) {
                    if dropped < lost {
                        dropped += 1;
                        continue;
                    }
                    b.input(&d).unwrap();
                }
                b.peek_size().is_some()
            });
            let arrived = arrived.expect("it arrives");
            match (probe, lost) {
                (false, _) => {
                    assert!(arrived >= 100, "only its timeout (at least 100 ms in this mode) resends it: {arrived} ms");
                    assert_eq!(a.stats().tail_probes, 0);
                }
                (true, 1) => {
                    assert!(arrived <= 2 * TAIL_PROBE_MIN_MS, "probed at {arrived} ms");
                    assert_eq!(a.stats().tail_probes, 1);
                }
                _ => {
                    assert!(arrived <= 4 * TAIL_PROBE_MIN_MS, "probed again at {arrived} ms");
                    assert_eq!(a.stats().tail_probes, 2);
                }
            }
        }
    }

    #[test]
    fn stream_mode_keeps_the_bytes_not_the_boundaries() {
        let mut pair = Pair::new("loss:0.1", 9, |k| k.set_stream(true));
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        for chunk in sent.chunks(777) {
            pair.a.send(chunk).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        for _ in 0..100_000 {
            pair.step(10);
            while let Ok(n) = pair.b.recv(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            if got.len() == sent.len() {
                break;
            }
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn bad_datagrams_are_errors_and_change_nothing_after_them() {
        let mut k = Kcp::new(5);
        assert_eq!(k.input(&[0; 23]), Err(KcpError::Truncated));
        let mut seg = [0u8; 24];
        seg[..4].copy_from_slice(&6u32.to_le_bytes());
        assert_eq!(k.input(&seg), Err(KcpError::WrongConversation(6)));
        seg[..4].copy_from_slice(&5u32.to_le_bytes());
        seg[4] = 99;
        assert_eq!(k.input(&seg), Err(KcpError::UnknownCommand(99)));
        seg[4] = CMD_PUSH;
        seg[20..24].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(k.input(&seg), Err(KcpError::Truncated));
        assert_eq!(k.peek_size(), None);
    }

    #[test]
    fn a_message_too_large_to_reassemble_is_refused_and_an_empty_one_arrives() {
        let mut pair = Pair::new("", 2, |_| {});
        let max = pair.a.max_message();
        assert_eq!(pair.a.send(&vec![0; max + 1]), Err(KcpError::TooLarge { len: max + 1, max }));
        let sent = vec![vec![], vec![7; max], vec![]];
        assert_eq!(deliver(&mut pair, &sent, 10_000), sent);
    }

    #[test]
    fn a_link_that_never_answers_is_dead_after_dead_link_resends() {
        let mut k = Kcp::new(1);
        k.set_nodelay(1, 10, 0, true);
        k.set_dead_link(5);
        k.send(b"x").unwrap();
        let mut t = 0;
        while !k.is_dead() && t < 600_000 {
            k.update(t, &mut |_| {});
            t += 10;
        }
        assert!(k.is_dead());
    }

    #[test]
    fn a_conversation_is_idle_once_everything_is_acknowledged_and_not_before() {
        let mut pair = Pair::new("", 3, |k| *k = Kcp::with_config(k.conv(), &Mode::Fastest.config()).unwrap());
        assert!(pair.a.is_idle() && pair.b.is_idle());
        pair.a.send(b"one").unwrap();
        assert!(!pair.a.is_idle(), "a message queued");
        pair.step(10); // out, in at b (an acknowledgement owed), acknowledged at the next step
        pair.step(10);
        pair.step(10);
        assert_eq!(pair.b.recv(&mut [0u8; 8]), Ok(3));
        assert!(pair.a.is_idle() && pair.b.is_idle(), "acknowledged and read");
        // A window that reopened is told at the next flush: not idle until then.
        let mut k = Kcp::with_config(5, &Mode::Fastest.config()).unwrap();
        k.set_now(0);
        for sn in 0..128 {
            k.input(&segment(CMD_PUSH, sn, 0, b"w")).unwrap();
        }
        k.flush(&mut |_| {});
        assert!(k.is_idle());
        k.recv(&mut [0u8; 4]).unwrap();
        assert!(!k.is_idle(), "the window reopened: tell the peer");
    }

    #[test]
    fn first_segment_reads_a_datagram_without_a_conversation() {
        let d = segment(CMD_PUSH, 0, 7, b"hello");
        assert_eq!(first_segment(&d), Some(FirstSegment { conv: 5, is_data: true, sn: 0, payload: b"hello" }));
        assert_eq!(first_segment(&segment(CMD_ACK, 3, 7, &[])).map(|f| (f.is_data, f.sn)), Some((false, 3)));
        assert_eq!(first_segment(&d[..d.len() - 1]), None, "its payload cut short");
        assert_eq!(first_segment(&d[..OVERHEAD - 1]), None);
        let mut huge = d.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(first_segment(&huge), None);
    }

    #[test]
    fn check_says_when_to_update() {
        let mut k = Kcp::new(1);
        k.set_nodelay(0, 50, 0, false);
        assert_eq!(k.check(1000), 1000);
        k.update(1000, &mut |_| {});
        let next = k.check(1000);
        assert!(next > 1000 && next <= 1050, "{next}");
    }

    /// A segment of conversation 5: `cmd`, sequence number `sn`, timestamp `ts`, and `payload`.
    fn segment(cmd: u8, sn: u32, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&5u32.to_le_bytes());
        d.extend_from_slice(&[cmd, 0, 128, 0]);
        for w in [ts, sn, 0, payload.len() as u32] {
            d.extend_from_slice(&w.to_le_bytes());
        }
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn a_flood_between_two_flushes_grows_nothing_without_bound() {
        let mut k = Kcp::new(5);
        k.set_now(1000);
        for i in 0..100_000u32 {
            // The same segments again and again, and ones far outside the window.
            let sn = if i % 2 == 0 { (i / 2) % 300 } else { i.wrapping_mul(7919) };
            k.input(&segment(CMD_PUSH, sn, 1000, b"flood")).unwrap();
        }
        let mut acks = 0;
        k.flush(&mut |d: &[u8]| acks += d.chunks(OVERHEAD).filter(|s| s.len() == OVERHEAD && s[4] == CMD_ACK).count());
        assert!(acks <= 4 * 128, "{acks} acknowledgements");
        assert!(k.stats().duplicates > 0);
        let mut buf = [0u8; 8];
        let mut got = 0;
        while k.recv(&mut buf) == Ok(5) {
            got += 1;
        }
        // What the queue held (a window) and the buffer behind it (the next window).
        assert_eq!(got, 256);
    }

    #[test]
    fn an_acknowledgement_with_any_timestamp_keeps_the_timeout_in_bounds() {
        let mut k = Kcp::new(5);
        k.set_nodelay(1, 10, 2, true);
        k.send(b"x").unwrap();
        k.update(2_000_000_000, &mut |_| {});
        for ts in [0, 1, 2_000_000_000, 2_000_000_001, u32::MAX] {
            k.input(&segment(CMD_ACK, 0, ts, &[])).unwrap();
            let (srtt, rto) = k.rtt();
            assert!(srtt >= 1 && (RTO_NODELAY_MIN..=RTO_MAX).contains(&rto), "{srtt} {rto}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), conv_match in proptest::prelude::any::<bool>()) {
            let mut k = Kcp::new(3);
            let mut d = data.clone();
            if conv_match && d.len() >= 4 {
                d[..4].copy_from_slice(&3u32.to_le_bytes());
            }
            let _ = k.input(&d);
            k.update(0, &mut |_| {});
            let mut buf = [0u8; 64];
            let _ = k.recv(&mut buf);
        }
    }
}
