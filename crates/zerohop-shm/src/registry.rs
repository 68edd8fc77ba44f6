//! What runs over shared memory on this host: every live segment of a directory, its
//! shape, who publishes into it and who reads it, and how far behind each reader is.
//! Read from the segments' headers; a segment's lock says whether anyone still uses it
//! (see [`crate::segment`]), so stale ones are removed, not listed.
//!
//! Publishers enter themselves in their segment's publisher table
//! ([`PublisherEntry::join`]) for as long as they publish; subscribers are in the
//! subscriber table already. Either kind whose process died is left out. A hub follows
//! who comes and goes on its own segment with a [`MemberWatch`].

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::layout::{
    GROUP_ENTRY, LAYOUT_VERSION, LINE, Layout, MAGIC, MAX_LISTED_PUBLISHERS, STATE_READY, claim_offset, offsets,
};
use crate::ring::process_alive;
use crate::segment::{FILE_PREFIX, Segment, remove_stale};

/// A publisher's line in its segment's publisher table, given back when dropped.
#[derive(Debug)]
pub struct PublisherEntry {
    seg: Arc<Segment>,
    /// `None` when the table was full of live publishers: this one publishes unlisted.
    index: Option<u32>,
    pid: u32,
}

impl PublisherEntry {
    /// Enters this process in `seg`'s publisher table (taking the place of a dead
    /// publisher if the table is full).
    pub fn join(seg: Arc<Segment>) -> PublisherEntry {
        let pid = std::process::id();
        let word = |i: u32| seg.word(offsets::PUBLISHERS + 4 * i as usize);
        let mut index = None;
        'claim: for reap in [false, true] {
            for i in 0..MAX_LISTED_PUBLISHERS {
                let w = word(i);
                let held = w.load(Ordering::Relaxed);
                let free = held == 0 || (reap && !process_alive(held));
                if free && w.compare_exchange(held, pid, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    // A dead predecessor's last claim is no claim of ours.
                    seg.word(claim_offset(i) + offsets::CLAIM_FIRST).store(0, Ordering::Release);
                    index = Some(i);
                    break 'claim;
                }
            }
        }
        PublisherEntry { seg, index, pid }
    }

    /// Whether this publisher is in the table (false: more than
    /// [`MAX_LISTED_PUBLISHERS`] live ones publish).
    pub fn listed(&self) -> bool {
        self.index.is_some()
    }

    /// Its line in the table, if listed.
    pub fn index(&self) -> Option<u32> {
        self.index
    }
}

impl Drop for PublisherEntry {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            self.seg.word(claim_offset(i) + offsets::CLAIM_FIRST).store(0, Ordering::Release);
            let w = self.seg.word(offsets::PUBLISHERS + 4 * i as usize);
            let _ = w.compare_exchange(self.pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// A publisher or a subscriber of a segment, as its tables say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub role: Role,
    pub pid: u32,
    /// Its line in its table (which tells apart two hubs of one process).
    pub entry: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Subscriber,
}

impl core::fmt::Display for Member {
    /// `publisher:<pid>:<entry>` or `subscriber:<pid>:<entry>`: the `peer` of its status events.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let role = match self.role {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        };
        write!(f, "{role}:{}:{}", self.pid, self.entry)
    }
}

/// Who uses `seg` now: every publisher and subscriber entry taken (but work groups'
/// own entries: their members are there).
pub fn members(seg: &Segment) -> Vec<Member> {
    let layout = seg.layout();
    let pid = |off: usize| seg.word(off).load(Ordering::Acquire);
    let group_entry = |entry: u32| pid(layout.subscriber_offset(entry) + offsets::SUB_GROUP) == GROUP_ENTRY;
    let publishers = (0..MAX_LISTED_PUBLISHERS).map(|entry| Member {
        role: Role::Publisher,
        pid: pid(offsets::PUBLISHERS + 4 * entry as usize),
        entry,
    });
    let subscribers = (0..layout.max_subscribers).filter(|&e| !group_entry(e)).map(|entry| Member {
        role: Role::Subscriber,
        pid: pid(layout.subscriber_offset(entry) + offsets::SUB_PID),
        entry,
    });
    publishers.chain(subscribers).filter(|m| m.pid != 0).collect()
}

/// What changed about a segment's members between two looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Joined(Member),
    /// It closed its hub.
    Left(Member),
    /// Its process is gone (killed, crashed) without closing.
    Died(Member),
}

/// Follows the members of one segment from look to look; see [`MemberWatch::look`].
#[derive(Debug)]
pub struct MemberWatch {
    /// The watching hub's own entries, never reported.
    own: Vec<Member>,
    /// Every member seen, and whether its death was reported already.
    known: HashMap<Member, bool>,
}

impl MemberWatch {
    /// A watch that leaves out `own` (the watching hub's entries). Those present at the
    /// first look are reported as joined then.
    pub fn new(own: Vec<Member>) -> MemberWatch {
        MemberWatch { own, known: HashMap::new() }
    }

    /// What changed since the last look, given who is a member now and which processes
    /// live. An entry that vanished while its process lives was closed (left); one whose
    /// process is gone died, whether its entry is still there (nobody freed it yet) or
    /// not (a publisher reaped it). Pure: the caller reads the tables and the processes.
    pub fn look(&mut self, now: &[Member], alive: impl Fn(u32) -> bool) -> Vec<Change> {
        let mut changes = Vec::new();
        let now: Vec<Member> = now.iter().copied().filter(|m| !self.own.contains(m)).collect();
        for m in &now {
            match self.known.get(m).copied() {
                // Dead before it was ever seen alive: not a member this hub knew.
                None if !alive(m.pid) => {
                    self.known.insert(*m, true);
                }
                None => {
                    self.known.insert(*m, false);
                    changes.push(Change::Joined(*m));
                }
                Some(false) if !alive(m.pid) => {
                    self.known.insert(*m, true);
                    changes.push(Change::Died(*m));
                }
                Some(_) => {}
            }
        }
        self.known.retain(|m, reported_dead| {
            if now.contains(m) {
                return true;
            }
            if !*reported_dead {
                changes.push(if alive(m.pid) { Change::Left(*m) } else { Change::Died(*m) });
            }
            false
        });
        changes
    }
}

/// A live segment, as [`list`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSegment {
    /// The name an `shm://` URL gives it.
    pub name: String,
    pub path: PathBuf,
    pub layout: Layout,
    /// The segment's size in bytes.
    pub bytes: u64,
    pub creator_pid: u32,
    /// The next sequence number to publish: how many messages were published.
    pub tail: u64,
    /// Processes that publish (listed ones: see [`MAX_LISTED_PUBLISHERS`]), by pid.
    pub publishers: Vec<u32>,
    pub subscribers: Vec<SubscriberInfo>,
}

/// One reader of a [`LiveSegment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriberInfo {
    pub pid: u32,
    /// Its entry in the subscriber table (which tells apart two readers of one process).
    pub entry: u32,
    /// Messages published that it has not read (a reader that reads in batches stores
    /// its place once a batch, so this may run a batch ahead).
    pub lag: u64,
}

/// Every live segment in `dir`, by name, after removing the stale ones. Segments of a
/// layout this build does not read (an older zerohop) and another user's are left out.
pub fn list(dir: &Path) -> Vec<LiveSegment> {
    remove_stale(dir);
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut segments: Vec<LiveSegment> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_prefix(FILE_PREFIX)?.to_owned();
            let file = File::open(e.path()).ok()?;
            read_channel(&file, name, e.path())
        })
        .collect();
    segments.sort_by(|a, b| a.name.cmp(&b.name));
    segments
}

/// Reads a segment's header; `None` if it is not one this build reads.
fn read_channel(file: &File, name: String, path: PathBuf) -> Option<LiveSegment> {
    let bytes = file.metadata().ok()?.len();
    let mut line = [0u8; LINE];
    file.read_exact_at(&mut line, 0).ok()?;
    let word = |b: &[u8], off: usize| u32::from_le_bytes(b[off..off + 4].try_into().expect("four bytes"));
    let magic = word(&line, offsets::MAGIC_LO) as u64 | (word(&line, offsets::MAGIC_HI) as u64) << 32;
    if magic != MAGIC
        || word(&line, offsets::LAYOUT_VERSION) != LAYOUT_VERSION
        || word(&line, offsets::STATE) != STATE_READY
    {
        return None;
    }
    let layout = Layout {
        slot_size: word(&line, offsets::SLOT_SIZE),
        capacity: word(&line, offsets::CAPACITY),
        max_subscribers: word(&line, offsets::MAX_SUBSCRIBERS),
        pool_size: word(&line, offsets::POOL_SIZE),
    };
    if layout.validate().is_err() || word(&line, offsets::HEADER_LEN) as usize != layout.header_len() {
        return None;
    }
    let mut header = vec![0u8; layout.header_len()];
    file.read_exact_at(&mut header, 0).ok()?;
    let w = |off: usize| word(&header, off);
    let tail = (w(offsets::TAIL_HI) as u64) << 32 | w(offsets::TAIL_LO) as u64;
    let publishers = (0..MAX_LISTED_PUBLISHERS)
        .map(|i| w(offsets::PUBLISHERS + 4 * i as usize))
        .filter(|&pid| pid != 0 && process_alive(pid))
        .collect();
    let subscribers = (0..layout.max_subscribers)
        .filter_map(|entry| {
            let at = layout.subscriber_offset(entry);
            let pid = w(at + offsets::SUB_PID);
            let group = w(at + offsets::SUB_GROUP);
            // A work group's member is as far behind as its group (whose own entry is
            // no process's).
            let reads_at = match group {
                GROUP_ENTRY => return None,
                0 => at,
                g => layout.subscriber_offset((g - 1).min(layout.max_subscribers - 1)),
            };
            let lag = (tail as u32).wrapping_sub(w(reads_at + offsets::SUB_CURSOR_LO)) as u64;
            (pid != 0 && process_alive(pid)).then_some(SubscriberInfo { pid, entry, lag })
        })
        .collect();
    Some(LiveSegment { name, path, layout, bytes, creator_pid: w(offsets::CREATOR_PID), tail, publishers, subscribers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentOptions;
    use crate::{Backpressure, Publisher, Subscriber};

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zerohop-registry-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn open(dir: &Path, name: &str) -> Arc<Segment> {
        Arc::new(Segment::open(name, &SegmentOptions { dir: Some(dir.to_path_buf()), layout: None }).unwrap())
    }

    #[test]
    fn lists_publishers_subscribers_and_their_lag() {
        let dir = tempdir("list");
        let seg = open(&dir, "quotes");
        let mut sub = Subscriber::new(seg.clone()).unwrap();
        let mut publisher = Publisher::new(seg.clone(), Backpressure::DropOld);
        for _ in 0..5 {
            publisher.publish(b"x").unwrap();
        }
        assert!(sub.try_recv(&mut Vec::new()).is_some());
        let me = std::process::id();
        let listed = list(&dir);
        assert_eq!(listed.len(), 1);
        let c = &listed[0];
        assert_eq!((c.name.as_str(), c.tail, c.creator_pid), ("quotes", 5, me));
        assert_eq!(c.layout, Layout::default());
        assert_eq!(c.publishers, vec![me]);
        assert_eq!(c.subscribers, vec![SubscriberInfo { pid: me, entry: sub.index(), lag: 4 }]);
        drop(publisher);
        assert!(list(&dir)[0].publishers.is_empty(), "a publisher that left is not listed");
        drop(sub);
        seg.release();
        assert!(list(&dir).is_empty(), "the last user closed it");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn member(role: Role, pid: u32, entry: u32) -> Member {
        Member { role, pid, entry }
    }

    #[test]
    fn a_watch_reports_joins_leaves_and_deaths_once_each() {
        let me = member(Role::Subscriber, 1, 0);
        let (p, s) = (member(Role::Publisher, 2, 0), member(Role::Subscriber, 3, 1));
        let ghost = member(Role::Subscriber, 9, 2);
        let mut w = MemberWatch::new(vec![me]);
        let alive = |dead: &'static [u32]| move |pid: u32| !dead.contains(&pid);
        assert_eq!(
            w.look(&[me, p, ghost], alive(&[9])),
            vec![Change::Joined(p)],
            "a dead entry never seen alive is not news"
        );
        assert_eq!(w.look(&[me, p, s, ghost], alive(&[9])), vec![Change::Joined(s)]);
        assert_eq!(w.look(&[me, p, s], alive(&[9])), vec![]);
        assert_eq!(w.look(&[me, s], alive(&[9])), vec![Change::Left(p)], "its entry went, its process lives");
        assert_eq!(w.look(&[me, s], alive(&[3, 9])), vec![Change::Died(s)], "its entry stays, its process is gone");
        assert_eq!(w.look(&[me], alive(&[3, 9])), vec![], "reported once, even when its entry is freed later");
        assert_eq!(w.look(&[me, p], alive(&[3, 9])), vec![Change::Joined(p)], "back again");
        assert_eq!(w.look(&[me], alive(&[2, 3, 9])), vec![Change::Died(p)], "entry reaped and process gone: died");
    }

    /// What a step of [`the_list_follows_a_model_of_who_came_went_and_died`] does.
    #[derive(Clone, Debug)]
    enum Op {
        JoinPublisher,
        LeavePublisher(usize),
        KillPublisher(usize),
        Subscribe,
        Unsubscribe(usize),
        KillSubscriber(usize),
        Publish(u64),
        Read(usize, u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Op::JoinPublisher),
            any::<usize>().prop_map(Op::LeavePublisher),
            any::<usize>().prop_map(Op::KillPublisher),
            Just(Op::Subscribe),
            any::<usize>().prop_map(Op::Unsubscribe),
            any::<usize>().prop_map(Op::KillSubscriber),
            (0u64..40).prop_map(Op::Publish),
            (any::<usize>(), 0u64..40).prop_map(|(i, n)| Op::Read(i, n)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// `list()` after every step of a random history of publishers joining, leaving
        /// and dying, subscribers coming, reading, going and dying: exactly the live
        /// ones, with the lag a model of the tail and each reader's place says.
        #[test]
        fn the_list_follows_a_model_of_who_came_went_and_died(ops in proptest::collection::vec(op(), 1..40)) {
            const DEAD: u32 = i32::MAX as u32 - 1;
            let dir = tempdir("model");
            let seg = open(&dir, "model");
            let me = std::process::id();
            let mut writer = Publisher::with_line(seg.clone(), Backpressure::DropOld, None);
            let (mut publishers, mut subscribers, mut tail) = (Vec::new(), Vec::<Subscriber>::new(), 0u64);
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::JoinPublisher => publishers.push(PublisherEntry::join(seg.clone())),
                    Op::LeavePublisher(i) if !publishers.is_empty() => drop(publishers.remove(i % publishers.len())),
                    Op::KillPublisher(i) if !publishers.is_empty() => {
                        let gone = publishers.remove(i % publishers.len());
                        seg.word(offsets::PUBLISHERS + 4 * gone.index().unwrap() as usize).store(DEAD, Ordering::SeqCst);
                        std::mem::forget(gone); // (a dead process frees nothing)
                    }
                    Op::Subscribe => subscribers.push(Subscriber::new(seg.clone()).unwrap()),
                    Op::Unsubscribe(i) if !subscribers.is_empty() => drop(subscribers.remove(i % subscribers.len())),
                    Op::KillSubscriber(i) if !subscribers.is_empty() => {
                        let gone = subscribers.remove(i % subscribers.len());
                        seg.word(seg.layout().subscriber_offset(gone.index()) + offsets::SUB_PID).store(DEAD, Ordering::SeqCst);
                        std::mem::forget(gone);
                    }
                    Op::Publish(n) => {
                        for _ in 0..n {
                            writer.publish(b"m").unwrap();
                        }
                        tail += n;
                    }
                    Op::Read(i, n) if !subscribers.is_empty() => {
                        let len = subscribers.len();
                        for _ in 0..n {
                            subscribers[i % len].try_recv(&mut out);
                        }
                    }
                    _ => {}
                }
                let listed = list(&dir);
                proptest::prop_assert_eq!(listed.len(), 1);
                let c = &listed[0];
                proptest::prop_assert_eq!(c.tail, tail);
                proptest::prop_assert_eq!(&c.publishers, &vec![me; publishers.len()], "the live publishers, no dead one");
                let mut want: Vec<_> = subscribers
                    .iter()
                    .map(|s| SubscriberInfo { pid: me, entry: s.index(), lag: tail - s.cursor() })
                    .collect();
                want.sort_by_key(|s| s.entry);
                proptest::prop_assert_eq!(&c.subscribers, &want, "the live subscribers and their lag, no dead one");
            }
            drop((publishers, subscribers, writer));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn members_are_read_from_both_tables() {
        let dir = tempdir("members");
        let seg = open(&dir, "both");
        let entry = PublisherEntry::join(seg.clone());
        let sub = Subscriber::new(seg.clone()).unwrap();
        let me = std::process::id();
        assert_eq!(
            members(&seg),
            vec![member(Role::Publisher, me, entry.index().unwrap()), member(Role::Subscriber, me, sub.index())]
        );
        assert_eq!(member(Role::Subscriber, 7, 3).to_string(), "subscriber:7:3");
        drop((entry, sub));
        seg.release();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_publisher_table_takes_the_place_of_a_dead_publisher() {
        let dir = tempdir("full");
        let seg = open(&dir, "busy");
        // Every line taken: one by a process that is gone, the rest by live ones (this one).
        let me = std::process::id();
        for i in 0..MAX_LISTED_PUBLISHERS {
            let pid = if i == 7 { i32::MAX as u32 } else { me };
            seg.word(offsets::PUBLISHERS + 4 * i as usize).store(pid, Ordering::Relaxed);
        }
        let entry = PublisherEntry::join(seg.clone());
        assert_eq!(entry.index, Some(7));
        let unlisted = PublisherEntry::join(seg.clone());
        assert!(!unlisted.listed(), "all live: this one publishes unlisted");
        drop(unlisted);
        assert_eq!(seg.word(offsets::PUBLISHERS + 4 * 7).load(Ordering::Relaxed), me, "an unlisted one frees nothing");
        drop(entry);
        assert_eq!(seg.word(offsets::PUBLISHERS + 4 * 7).load(Ordering::Relaxed), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
