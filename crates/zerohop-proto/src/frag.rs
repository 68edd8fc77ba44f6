//! Messages larger than one datagram: split into fragments that share the message's
//! key (session, channel, sequence) and carry `frag_index`/`frag_count`, and put back
//! together by a [`Reassembler`] whose memory is bounded whatever arrives.
//!
//! Every fragment but the last carries exactly the sender's fragment size, so fragments
//! land in place in any order. The receiver does not need to know that size: each
//! message's is learned from its first fragment before the last (any size up to
//! [`ReassemblyLimits::max_fragment`]), so peers whose datagrams differ in size still
//! talk. The message's buffer is allocated then, once. Time is passed in (`now_ms`):
//! no clock, no I/O.
//!
//! ```
//! use zerohop_proto::frag::{fragments, MessageKey, Reassembler, ReassemblyLimits};
//!
//! let message = vec![7u8; 3000];
//! let key = MessageKey { session: 1, channel: 0, seq: 42 };
//! let mut r = Reassembler::new(ReassemblyLimits::new(1200));
//! let mut parts: Vec<_> = fragments(&message, 1200).unwrap().collect();
//! parts.reverse(); // any order
//! let mut done = None;
//! for (index, count, bytes) in parts {
//!     done = r.insert(key, index, count, bytes, 0).unwrap().or(done);
//! }
//! assert_eq!(done.unwrap(), message);
//! ```

use std::collections::{HashMap, HashSet, VecDeque};

/// Identifies one message among everything a peer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub session: u32,
    pub channel: u16,
    pub seq: u64,
}

/// Why a message cannot be fragmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentError {
    /// More than `u16::MAX` fragments, or a zero fragment size.
    TooLarge { len: usize, fragment_size: usize },
}

impl core::fmt::Display for FragmentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self::TooLarge { len, fragment_size } = self;
        write!(f, "a message of {len} bytes needs more than 65535 fragments of {fragment_size} bytes")
    }
}

impl std::error::Error for FragmentError {}

/// How many fragments a message of `len` bytes needs (at least one).
pub fn fragment_count(len: usize, fragment_size: usize) -> Result<u16, FragmentError> {
    if fragment_size == 0 {
        return Err(FragmentError::TooLarge { len, fragment_size });
    }
    let count = len.div_ceil(fragment_size).max(1);
    u16::try_from(count).map_err(|_| FragmentError::TooLarge { len, fragment_size })
}

/// The fragments of `message`: `(index, count, bytes)`.
pub fn fragments(message: &[u8], fragment_size: usize) -> Result<Fragments<'_>, FragmentError> {
    let count = fragment_count(message.len(), fragment_size)?;
    Ok(Fragments { message, fragment_size, index: 0, count })
}

/// Iterator returned by [`fragments`].
#[derive(Debug, Clone)]
pub struct Fragments<'a> {
    message: &'a [u8],
    fragment_size: usize,
    index: u16,
    count: u16,
}

impl<'a> Iterator for Fragments<'a> {
    type Item = (u16, u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index == self.count {
            return None;
        }
        let start = self.index as usize * self.fragment_size;
        let end = (start + self.fragment_size).min(self.message.len());
        let item = (self.index, self.count, &self.message[start..end]);
        self.index += 1;
        Some(item)
    }
}

/// Bounds on what a [`Reassembler`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Longest fragment payload accepted (the receive buffer less a frame header): a
    /// sender fragments at any size up to this.
    pub max_fragment: usize,
    /// Largest message accepted.
    pub max_message: usize,
    /// Most bytes held for incomplete messages; the oldest is evicted beyond it.
    pub max_pending_bytes: usize,
    /// Most incomplete messages held; the oldest is evicted beyond it.
    pub max_pending_messages: usize,
    /// An incomplete message older than this is dropped.
    pub timeout_ms: u64,
}

impl ReassemblyLimits {
    /// Defaults: 16 MiB messages, 64 MiB and 1024 messages pending, 2 s timeout.
    pub fn new(max_fragment: usize) -> Self {
        Self {
            max_fragment,
            max_message: 16 << 20,
            max_pending_bytes: 64 << 20,
            max_pending_messages: 1024,
            timeout_ms: 2000,
        }
    }
}

/// Why a fragment was dropped. Each is also counted in [`ReassemblyStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReassemblyError {
    /// Fragment fields or length that no sender with these limits produces.
    Malformed(&'static str),
    /// The message would exceed `max_message` or `max_pending_bytes`.
    TooLarge { count: u16 },
    /// The fragment count differs from earlier fragments of the same message.
    Inconsistent { expected: u16, got: u16 },
}

impl core::fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed fragment: {why}"),
            Self::TooLarge { count } => write!(f, "a message of {count} fragments exceeds the reassembly limits"),
            Self::Inconsistent { expected, got } => {
                write!(f, "fragment says {got} fragments, earlier ones said {expected}")
            }
        }
    }
}

impl std::error::Error for ReassemblyError {}

/// Counters of a [`Reassembler`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub fragments: u64,
    pub completed: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub too_large: u64,
    pub inconsistent: u64,
    pub timed_out: u64,
    pub evicted: u64,
}

#[derive(Debug)]
struct Partial {
    /// Fragment `i` at `i * fragment_size`; only the last fragment while the size is unknown.
    data: Vec<u8>,
    /// Payload bytes of each fragment before the last: 0 until one of them arrived.
    fragment_size: usize,
    have: Vec<u64>,
    got: u16,
    count: u16,
    last_len: usize,
    started_ms: u64,
}

/// How many recently completed messages are remembered to drop late duplicates.
const RECENT: usize = 256;

/// Puts fragmented messages back together, within [`ReassemblyLimits`].
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    pending: HashMap<MessageKey, Partial>,
    /// Pending keys with their start time, oldest first (entries of messages that
    /// completed meanwhile are skipped lazily).
    order: VecDeque<(MessageKey, u64)>,
    pending_bytes: usize,
    recent: VecDeque<MessageKey>,
    recent_set: HashSet<MessageKey>,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// An empty reassembler.
    ///
    /// # Panics
    /// If `limits.max_fragment` is zero.
    pub fn new(limits: ReassemblyLimits) -> Self {
        assert!(limits.max_fragment > 0, "max_fragment must be positive");
        Self {
            limits,
            pending: HashMap::new(),
            order: VecDeque::new(),
            pending_bytes: 0,
            recent: VecDeque::with_capacity(RECENT),
            recent_set: HashSet::with_capacity(RECENT),
            stats: ReassemblyStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Bytes held for incomplete messages.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Incomplete messages held.
    pub fn pending_messages(&self) -> usize {
        self.pending.len()
    }

    /// Adds one fragment received at `now_ms`. Returns the whole message when this
    /// fragment completes it, `None` while it is incomplete (or the fragment was a
    /// duplicate), or why the fragment was dropped. An unfragmented message
    /// (`count == 1`) passes straight through: filtering its duplicates is the job of
    /// the transport's sequence window, and this keeps the common case cheap.
    pub fn insert(
        &mut self,
        key: MessageKey,
        index: u16,
        count: u16,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, ReassemblyError> {
        self.stats.fragments += 1;
        self.expire(now_ms);
        if count == 0 || index >= count {
            return Err(self.malformed("index out of range"));
        }
        if count == 1 {
            if payload.len() > self.limits.max_message {
                self.stats.too_large += 1;
                return Err(ReassemblyError::TooLarge { count });
            }
            self.stats.completed += 1;
            return Ok(Some(payload.to_vec()));
        }
        let len = payload.len();
        if len == 0 || len > self.limits.max_fragment {
            return Err(self.malformed("a fragment is empty or longer than max_fragment"));
        }
        if self.recent_set.contains(&key) {
            self.stats.duplicates += 1;
            return Ok(None);
        }
        let last = index == count - 1;
        if !self.pending.contains_key(&key) {
            // What this fragment tells of the message: fragments before the last are as
            // long as it (if it is one of them) or at least as long (if it is the last).
            let (least, hold) =
                if last { (count as usize * len, len) } else { ((count as usize - 1) * len + 1, count as usize * len) };
            if least > self.limits.max_message || hold > self.limits.max_pending_bytes {
                self.stats.too_large += 1;
                return Err(ReassemblyError::TooLarge { count });
            }
            let fragment_size = if last { 0 } else { len };
            self.start(key, count, fragment_size, hold, now_ms)?;
        }
        let partial = self.pending.get_mut(&key).expect("inserted above");
        if partial.count != count {
            self.stats.inconsistent += 1;
            return Err(ReassemblyError::Inconsistent { expected: partial.count, got: count });
        }
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        if partial.have[word] & bit != 0 {
            self.stats.duplicates += 1;
            return Ok(None);
        }
        if last {
            if partial.fragment_size != 0 && len > partial.fragment_size {
                return Err(self.malformed("the last fragment is longer than the ones before it"));
            }
        } else if partial.fragment_size == 0 {
            // The last fragment came first: only now is the message's size known.
            if partial.last_len > len {
                return Err(self.malformed("the last fragment is longer than the ones before it"));
            }
            self.learn_size(key, len, now_ms)?;
        } else if len != partial.fragment_size {
            return Err(self.malformed("fragments before the last differ in length"));
        }
        let partial = self.pending.get_mut(&key).expect("still pending");
        partial.have[word] |= bit;
        partial.got += 1;
        let start = if last && partial.fragment_size == 0 { 0 } else { index as usize * partial.fragment_size };
        partial.data[start..start + len].copy_from_slice(payload);
        if last {
            partial.last_len = len;
        }
        if partial.got < count {
            return Ok(None);
        }
        let mut done = self.pending.remove(&key).expect("present");
        self.pending_bytes -= done.data.len();
        done.data.truncate((count as usize - 1) * done.fragment_size + done.last_len);
        self.remember(key);
        self.stats.completed += 1;
        Ok(Some(done.data))
    }

    /// Starts message `key` (at `now_ms`) with `hold` bytes, evicting the oldest
    /// incomplete messages to stay within the limits.
    fn start(
        &mut self,
        key: MessageKey,
        count: u16,
        fragment_size: usize,
        hold: usize,
        now_ms: u64,
    ) -> Result<(), ReassemblyError> {
        while (self.pending_bytes + hold > self.limits.max_pending_bytes
            || self.pending.len() >= self.limits.max_pending_messages)
            && !self.pending.is_empty()
        {
            self.evict_oldest();
        }
        if self.pending.len() >= self.limits.max_pending_messages {
            // Limits that allow no pending message at all.
            self.stats.too_large += 1;
            return Err(ReassemblyError::TooLarge { count });
        }
        let partial = Partial {
            data: vec![0; hold],
            fragment_size,
            have: vec![0; (count as usize).div_ceil(64)],
            got: 0,
            count,
            last_len: 0,
            started_ms: now_ms,
        };
        self.pending.insert(key, partial);
        self.order.push_back((key, now_ms));
        self.pending_bytes += hold;
        Ok(())
    }

    /// Gives message `key`, which so far held only its last fragment, its whole buffer
    /// for fragments of `fragment_size` bytes. It starts again at `now_ms` (last in
    /// line for eviction, so that the order stays oldest first).
    fn learn_size(&mut self, key: MessageKey, fragment_size: usize, now_ms: u64) -> Result<(), ReassemblyError> {
        let old = self.pending.remove(&key).expect("pending");
        self.pending_bytes -= old.data.len();
        let count = old.count;
        let hold = count as usize * fragment_size;
        if (count as usize - 1) * fragment_size + old.last_len > self.limits.max_message
            || hold > self.limits.max_pending_bytes
        {
            self.stats.too_large += 1;
            return Err(ReassemblyError::TooLarge { count });
        }
        self.start(key, count, fragment_size, hold, now_ms)?;
        let partial = self.pending.get_mut(&key).expect("started");
        let at = (count as usize - 1) * fragment_size;
        partial.data[at..at + old.last_len].copy_from_slice(&old.data[..old.last_len]);
        partial.have = old.have;
        partial.got = old.got;
        partial.last_len = old.last_len;
        Ok(())
    }

    /// Drops incomplete messages older than the timeout; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut dropped = 0;
        while let Some(&(key, started)) = self.order.front() {
            match self.pending.get(&key) {
                Some(p) if p.started_ms == started => {
                    if now_ms.saturating_sub(started) < self.limits.timeout_ms {
                        break;
                    }
                    self.drop_pending(key);
                    self.stats.timed_out += 1;
                    dropped += 1;
                }
                _ => {} // completed or evicted since; a stale entry
            }
            self.order.pop_front();
        }
        dropped
    }

    fn evict_oldest(&mut self) {
        while let Some((key, started)) = self.order.pop_front() {
            if self.pending.get(&key).is_some_and(|p| p.started_ms == started) {
                self.drop_pending(key);
                self.stats.evicted += 1;
                return;
            }
        }
    }

    fn drop_pending(&mut self, key: MessageKey) {
        if let Some(p) = self.pending.remove(&key) {
            self.pending_bytes -= p.data.len();
        }
    }

    fn remember(&mut self, key: MessageKey) {
        if self.recent.len() == RECENT
            && let Some(old) = self.recent.pop_front()
        {
            self.recent_set.remove(&old);
        }
        self.recent.push_back(key);
        self.recent_set.insert(key);
    }

    fn malformed(&mut self, why: &'static str) -> ReassemblyError {
        self.stats.malformed += 1;
        ReassemblyError::Malformed(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seq: u64) -> MessageKey {
        MessageKey { session: 1, channel: 0, seq }
    }

    proptest! {
        #[test]
        fn reordered_and_duplicated_fragments_reassemble(
            message in proptest::collection::vec(any::<u8>(), 0..20_000),
            fs in 1usize..1500,
            slack in 0usize..2000,
            shuffle in any::<u64>(),
            dup_every in 2usize..7,
        ) {
            let mut parts: Vec<_> = fragments(&message, fs).unwrap().collect();
            // A deterministic shuffle from the seed, then some duplicates.
            let mut s = shuffle | 1;
            for i in (1..parts.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                parts.swap(i, (s % (i as u64 + 1)) as usize);
            }
            // Single-fragment messages pass straight through (duplicates of those are the
            // sequence window's business), so only duplicate real fragments.
            if parts.len() > 1 {
                let dups: Vec<_> = parts.iter().step_by(dup_every).cloned().collect();
                parts.extend(dups);
            }
            // The receiver takes fragments up to its own size, whatever the sender's.
            let mut r = Reassembler::new(ReassemblyLimits::new(fs + slack));
            let mut out = Vec::new();
            for (i, c, b) in parts {
                if let Some(m) = r.insert(key(5), i, c, b, 0).unwrap() {
                    out.push(m);
                }
            }
            prop_assert_eq!(out, vec![message]);
            prop_assert_eq!(r.pending_bytes(), 0);
            prop_assert_eq!(r.pending_messages(), 0);
        }

        #[test]
        fn hostile_fragments_never_panic_and_memory_stays_bounded(
            inputs in proptest::collection::vec((0u64..8, any::<u16>(), any::<u16>(), 0usize..300, 0u64..10_000), 0..300),
        ) {
            let limits = ReassemblyLimits {
                max_fragment: 100,
                max_message: 5_000,
                max_pending_bytes: 20_000,
                max_pending_messages: 16,
                timeout_ms: 1_000,
            };
            let mut r = Reassembler::new(limits);
            let payload = vec![1u8; 300];
            let mut now = 0;
            for (seq, index, count, len, dt) in inputs {
                now += dt % 50;
                let _ = r.insert(key(seq), index % 80, count % 80, &payload[..len], now);
                prop_assert!(r.pending_bytes() <= limits.max_pending_bytes);
                prop_assert!(r.pending_messages() <= limits.max_pending_messages);
            }
        }
    }

    #[test]
    fn interleaved_messages_complete_independently() {
        let a = vec![1u8; 250];
        let b = vec![2u8; 130];
        let mut r = Reassembler::new(ReassemblyLimits::new(100));
        let fa: Vec<_> = fragments(&a, 100).unwrap().collect();
        let fb: Vec<_> = fragments(&b, 100).unwrap().collect();
        assert_eq!(r.insert(key(1), fa[0].0, fa[0].1, fa[0].2, 0), Ok(None));
        assert_eq!(r.insert(key(2), fb[1].0, fb[1].1, fb[1].2, 0), Ok(None));
        assert_eq!(r.insert(key(1), fa[2].0, fa[2].1, fa[2].2, 0), Ok(None));
        assert_eq!(r.insert(key(2), fb[0].0, fb[0].1, fb[0].2, 0), Ok(Some(b.clone())));
        assert_eq!(r.insert(key(1), fa[1].0, fa[1].1, fa[1].2, 0), Ok(Some(a.clone())));
        // A late duplicate of a completed message is dropped, not started again.
        assert_eq!(r.insert(key(1), fa[1].0, fa[1].1, fa[1].2, 0), Ok(None));
        assert_eq!(r.pending_messages(), 0);
        assert_eq!(r.stats().duplicates, 1);
    }

    #[test]
    fn the_fragment_size_is_learned_per_message() {
        let mut r = Reassembler::new(ReassemblyLimits::new(1000));
        // Two senders' sizes, one receiver; the last fragment first, then the others.
        for (seq, fs) in [(1, 300), (2, 700)] {
            let m: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
            let mut f: Vec<_> = fragments(&m, fs).unwrap().collect();
            f.rotate_right(1);
            let mut done = None;
            for (i, c, b) in f {
                done = r.insert(key(seq), i, c, b, 0).unwrap().or(done);
            }
            assert_eq!(done, Some(m));
        }
        assert_eq!(r.pending_bytes(), 0);
        // Fragments before the last that differ, or a last one longer than them: malformed.
        assert_eq!(r.insert(key(3), 0, 3, &[0; 200], 0), Ok(None));
        assert!(matches!(r.insert(key(3), 1, 3, &[0; 150], 0), Err(ReassemblyError::Malformed(_))));
        assert!(matches!(r.insert(key(3), 2, 3, &[0; 201], 0), Err(ReassemblyError::Malformed(_))));
        assert_eq!(r.insert(key(4), 2, 3, &[0; 300], 0), Ok(None));
        assert!(matches!(r.insert(key(4), 0, 3, &[0; 299], 0), Err(ReassemblyError::Malformed(_))));
        // A last fragment that came first is held at its own size until the size is known.
        assert_eq!(r.pending_bytes(), 3 * 200 + 300);
        assert_eq!(r.stats().malformed, 3);
    }

    #[test]
    fn a_lost_fragment_times_out_and_frees_its_memory() {
        let m = vec![3u8; 300];
        let mut r = Reassembler::new(ReassemblyLimits { timeout_ms: 50, ..ReassemblyLimits::new(100) });
        let f: Vec<_> = fragments(&m, 100).unwrap().collect();
        r.insert(key(9), f[0].0, f[0].1, f[0].2, 0).unwrap();
        r.insert(key(9), f[2].0, f[2].1, f[2].2, 10).unwrap();
        assert_eq!(r.pending_bytes(), 300);
        assert_eq!(r.expire(49), 0);
        assert_eq!(r.expire(50), 1);
        assert_eq!(r.pending_bytes(), 0);
        assert_eq!(r.stats().timed_out, 1);
    }

    #[test]
    fn limits_and_malformed_fragments_are_refused_and_counted() {
        let limits = ReassemblyLimits {
            max_fragment: 100,
            max_message: 1_000,
            max_pending_bytes: 400,
            max_pending_messages: 2,
            timeout_ms: 1_000,
        };
        let mut r = Reassembler::new(limits);
        let full = [0u8; 100];
        assert!(matches!(r.insert(key(1), 0, 11, &full, 0), Err(ReassemblyError::TooLarge { .. })));
        assert!(matches!(r.insert(key(1), 3, 3, &full, 0), Err(ReassemblyError::Malformed(_))));
        assert!(matches!(r.insert(key(1), 0, 3, &[0; 101], 0), Err(ReassemblyError::Malformed(_))));
        assert!(matches!(r.insert(key(1), 2, 3, &[], 0), Err(ReassemblyError::Malformed(_))));
        assert_eq!(r.insert(key(1), 0, 3, &full, 0), Ok(None));
        assert_eq!(r.insert(key(1), 1, 4, &full, 0), Err(ReassemblyError::Inconsistent { expected: 3, got: 4 }));
        // Two more messages of 300 bytes: the oldest is evicted to stay within 400 bytes.
        assert_eq!(r.insert(key(2), 0, 3, &full, 1), Ok(None));
        assert_eq!(r.pending_messages(), 1);
        assert_eq!(r.stats().evicted, 1);
        let s = r.stats();
        assert_eq!((s.too_large, s.malformed, s.inconsistent), (1, 3, 1));
        assert!(matches!(fragments(&[0; 100], 0), Err(FragmentError::TooLarge { .. })));
        assert!(matches!(fragment_count(70_000, 1), Err(FragmentError::TooLarge { .. })));
        assert_eq!(fragment_count(0, 10), Ok(1));
    }
}
