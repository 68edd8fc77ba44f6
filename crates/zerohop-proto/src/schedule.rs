//! One timer for many conversations: when each next needs a turn, and which are due.
//!
//! A KCP hub drives every session from one clock: after each turn a session says when
//! it next needs one ([`crate::kcp::Kcp::check`]), and the hub sleeps until the
//! earliest of them. [`Schedule`] keeps those deadlines in a min-heap. Setting a new
//! deadline for a key leaves the old entry in the heap, stale (recognised and skipped
//! when it surfaces), so that a session re-armed at every publish costs one push, not
//! a search; the heap is rebuilt when stale entries outnumber live ones.
//!
//! ```
//! use zerohop_proto::schedule::Schedule;
//!
//! let mut s = Schedule::new();
//! s.set(1, 30);
//! s.set(2, 10);
//! s.set(1, 5); // sooner: supersedes 30
//! assert_eq!(s.earliest(), Some(5));
//! assert_eq!(s.pop_due(20), Some(1));
//! assert_eq!(s.pop_due(20), Some(2));
//! assert_eq!(s.pop_due(20), None);
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Deadlines (in any monotonic unit, e.g. milliseconds) by key.
#[derive(Debug, Default)]
pub struct Schedule {
    /// (deadline, key), earliest first; entries whose deadline is not `live[key]` are stale.
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    live: HashMap<u32, u64>,
}

impl Schedule {
    pub fn new() -> Self {
        Self::default()
    }

    /// `key` next needs a turn at `at` (replacing any deadline it had).
    pub fn set(&mut self, key: u32, at: u64) {
        if self.live.insert(key, at) == Some(at) {
            return; // already so: no second entry
        }
        self.heap.push(Reverse((at, key)));
        self.trim();
    }

    /// `key` needs no turn (a session that ended).
    pub fn remove(&mut self, key: u32) {
        self.live.remove(&key);
        self.trim();
    }

    /// The deadline of `key`, if it has one.
    pub fn deadline(&self, key: u32) -> Option<u64> {
        self.live.get(&key).copied()
    }

    /// The earliest deadline.
    pub fn earliest(&mut self) -> Option<u64> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// A key whose deadline is `now` or earlier, the earliest first (its deadline is
    /// gone: set it again after its turn).
    pub fn pop_due(&mut self, now: u64) -> Option<u32> {
        self.drop_stale();
        let &Reverse((at, key)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.live.remove(&key);
        self.trim();
        Some(key)
    }

    /// How many keys have a deadline.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn drop_stale(&mut self) {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if self.live.get(&key) == Some(&at) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap when its stale entries outnumber the live ones (and a few):
    /// after keys were re-armed, or went (removed, or popped) while others stayed stale.
    /// Each rebuild follows as many changes as it costs.
    fn trim(&mut self) {
        if self.heap.len() > 2 * self.live.len() + 64 {
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        self.heap = self.live.iter().map(|(&key, &at)| Reverse((at, key))).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u32, u64),
        Remove(u32),
        PopDue(u64),
        Earliest,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..20, 0u64..1000).prop_map(|(k, at)| Op::Set(k, at)),
            1 => (0u32..20).prop_map(Op::Remove),
            3 => (0u64..1000).prop_map(Op::PopDue),
            1 => Just(Op::Earliest),
        ]
    }

    proptest! {
        /// Against a map searched in full each time: the same answers, in the same order.
        #[test]
        fn behaves_as_a_map_searched_for_its_earliest(ops in proptest::collection::vec(op(), 0..400)) {
            let mut s = Schedule::new();
            let mut model: HashMap<u32, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Set(k, at) => {
                        s.set(k, at);
                        model.insert(k, at);
                    }
                    Op::Remove(k) => {
                        s.remove(k);
                        model.remove(&k);
                    }
                    Op::PopDue(now) => {
                        let want = model.iter().map(|(&k, &at)| (at, k)).filter(|&(at, _)| at <= now).min().map(|(_, k)| k);
                        if let Some(k) = want {
                            model.remove(&k);
                        }
                        prop_assert_eq!(s.pop_due(now), want);
                    }
                    Op::Earliest => prop_assert_eq!(s.earliest(), model.values().min().copied()),
                }
                prop_assert_eq!(s.len(), model.len());
                prop_assert!(s.heap.len() <= 2 * s.live.len() + 65, "stale entries are bounded");
            }
        }
    }

    #[test]
    fn a_key_re_armed_a_million_times_keeps_the_heap_small() {
        let mut s = Schedule::new();
        for i in 0..1_000_000u64 {
            s.set((i % 3) as u32, i);
        }
        assert!(s.heap.len() <= 2 * 3 + 65);
        assert_eq!(s.earliest(), Some(999_997));
    }
}
