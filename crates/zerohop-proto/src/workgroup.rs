//! Work groups: the connecting hubs of one listener that opened with the same `group`,
//! which share what the listener publishes (each message goes to one member).
//!
//! What a listener keeps of them, and which member a message goes to; the engines
//! (records over TCP, Unix sockets and KCP; QUIC) keep their peers and queues, and ask
//! [`WorkGroups::pick`] with what each peer is to them now.
//!
//! ```
//! use zerohop_proto::workgroup::{Candidate, WorkGroups};
//!
//! let mut groups = WorkGroups::default();
//! let g = groups.named(b"workers").unwrap().unwrap();
//! // Three members: away, connected but full, connected with 5 waiting.
//! let peers = [
//!     Candidate { connected: false, has_room: true, queued: 0 },
//!     Candidate { connected: true, has_room: false, queued: 0 },
//!     Candidate { connected: true, has_room: true, queued: 5 },
//! ];
//! assert_eq!(groups.pick(g, peers.len(), |i| Some(peers[i])), Some(2));
//! ```

use crate::session::SendQueue;

/// The most work groups a listener keeps (each a name a peer said).
pub const MAX_GROUPS: usize = 1024;

/// Where a message goes: a peer (by its id), or one member of a work group (by its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    Peer(u32),
    Group(usize),
}

/// What a peer is to a message about to be routed: whether it is connected, whether
/// its queue has room for the message, and how many messages wait for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub connected: bool,
    pub has_room: bool,
    pub queued: usize,
}

/// What a listener's peer is to its work groups (each engine's peer type says it).
pub trait Member {
    fn id(&self) -> u32;
    /// The index of its work group, if it is in one.
    fn group(&self) -> Option<usize>;
    fn connected(&self) -> bool;
    /// Whether its queue for `channel` has room for a `len`-byte message.
    fn has_room(&self, channel: u16, len: usize) -> bool;
    /// Messages queued for it on `channel`.
    fn queued(&self, channel: u16) -> usize;
}

/// One work group.
#[derive(Debug)]
pub struct WorkGroup {
    pub name: Vec<u8>,
    /// Where the next look for a member starts (members equal otherwise take turns).
    turn: usize,
    /// Messages moved from a member to another (it went away, or was given up on).
    pub rerouted: u64,
    /// Messages of a member given up on that no other member could take.
    pub lost: u64,
}

/// A listener's work groups, by index (a peer keeps the index of its group).
#[derive(Debug, Default)]
pub struct WorkGroups {
    groups: Vec<WorkGroup>,
}

/// A peer named a group past [`MAX_GROUPS`].
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyGroups;

impl WorkGroups {
    /// The index of the group named `name` (none for an empty name), made if new.
    pub fn named(&mut self, name: &[u8]) -> Result<Option<usize>, TooManyGroups> {
        if name.is_empty() {
            return Ok(None);
        }
        if let Some(g) = self.groups.iter().position(|g| g.name == name) {
            return Ok(Some(g));
        }
        if self.groups.len() >= MAX_GROUPS {
            return Err(TooManyGroups);
        }
        self.groups.push(WorkGroup { name: name.to_vec(), turn: 0, rerouted: 0, lost: 0 });
        Ok(Some(self.groups.len() - 1))
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &WorkGroup> {
        self.groups.iter()
    }

    /// Group `g`.
    pub fn get(&self, g: usize) -> &WorkGroup {
        &self.groups[g]
    }

    /// Whether `r` has room among `peers` for a `len`-byte message on `channel` (a work
    /// group: one of its members; one without members has nobody to wait for).
    pub fn has_room<P: Member>(peers: &[P], r: Recipient, channel: u16, len: usize) -> bool {
        match r {
            Recipient::Peer(id) => peers.iter().find(|p| p.id() == id).is_none_or(|p| p.has_room(channel, len)),
            Recipient::Group(g) => {
                let mut members = peers.iter().filter(|p| p.group() == Some(g)).peekable();
                members.peek().is_none() || members.any(|p| p.has_room(channel, len))
            }
        }
    }

    /// Whether every peer not in a work group, and one member of each group, has room
    /// for a `len`-byte message on `channel` (the usual case of a publish).
    pub fn all_have_room<P: Member>(&self, peers: &[P], channel: u16, len: usize) -> bool {
        peers.iter().all(|p| p.group().is_some() || p.has_room(channel, len))
            && (0..self.len()).all(|g| Self::has_room(peers, Recipient::Group(g), channel, len))
    }

    /// The peers (not in a work group) and the work groups without room for a
    /// `len`-byte message on `channel`: empty in the usual case, without allocating.
    pub fn full<P: Member>(&self, peers: &[P], channel: u16, len: usize) -> Vec<Recipient> {
        let alone =
            peers.iter().filter(|p| p.group().is_none() && !p.has_room(channel, len)).map(|p| Recipient::Peer(p.id()));
        let groups = (0..self.len()).map(Recipient::Group).filter(|&g| !Self::has_room(peers, g, channel, len));
        alone.chain(groups).collect()
    }

    /// The index in `peers` of the member of group `g` (but `not`) a `len`-byte message
    /// on `channel` goes to (see [`pick`](Self::pick)). `None`: no member.
    pub fn member_for<P: Member>(
        &mut self,
        peers: &[P],
        g: usize,
        channel: u16,
        len: usize,
        not: Option<u32>,
    ) -> Option<usize> {
        self.pick(g, peers.len(), |i| {
            let p = &peers[i];
            (p.group() == Some(g) && Some(p.id()) != not).then(|| Candidate {
                connected: p.connected(),
                has_room: p.has_room(channel, len),
                queued: p.queued(channel),
            })
        })
    }

    /// Whether member `id` of group `g` has another member that is connected (to take
    /// what it never got while it may still come back).
    pub fn others_connected<P: Member>(peers: &[P], g: usize, id: u32) -> bool {
        peers.iter().any(|p| p.group() == Some(g) && p.id() != id && p.connected())
    }

    /// What a member's `queues` (by channel) give up to the others, framed: what no
    /// connection carried whole, or (`given_up`) everything not acknowledged.
    pub fn taken<'q>(queues: impl Iterator<Item = (u16, &'q mut SendQueue)>, given_up: bool) -> Vec<(u16, Vec<u8>)> {
        let mut moved = Vec::new();
        for (channel, q) in queues {
            let mut take = |framed: &[u8]| moved.push((channel, framed.to_vec()));
            if given_up {
                q.take_unacknowledged(&mut take);
            } else {
                q.take_never_sent(&mut take);
            }
        }
        moved
    }

    /// The member of group `g` a message moved from member `from` goes to (see
    /// [`member_for`](Self::member_for)), counted as rerouted; `None` (counted as lost)
    /// when there is none.
    pub fn reroute_to<P: Member>(
        &mut self,
        peers: &[P],
        g: usize,
        channel: u16,
        len: usize,
        from: u32,
    ) -> Option<usize> {
        let to = self.member_for(peers, g, channel, len, Some(from));
        let group = &mut self.groups[g];
        if to.is_some() {
            group.rerouted += 1;
        } else {
            group.lost += 1;
        }
        to
    }

    /// Which of `n` peers a message for group `g` goes to: `candidate(i)` says what
    /// peer `i` is, or `None` when it is no member of `g` (or is left out). One that is
    /// connected and has room goes before one that is not, then the one with the fewest
    /// messages waiting; members equal take turns. `None`: no member.
    pub fn pick(&mut self, g: usize, n: usize, candidate: impl Fn(usize) -> Option<Candidate>) -> Option<usize> {
        let group = &mut self.groups[g];
        let best = (0..n)
            .map(|k| (group.turn + k) % n)
            .filter_map(|i| candidate(i).map(|c| (i, c)))
            .min_by_key(|&(_, c)| (!c.connected, !c.has_room, c.queued))?
            .0;
        group.turn = best + 1;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_kept_and_bounded() {
        let mut groups = WorkGroups::default();
        assert_eq!(groups.named(b""), Ok(None));
        assert_eq!(groups.named(b"a"), Ok(Some(0)));
        assert_eq!(groups.named(b"b"), Ok(Some(1)));
        assert_eq!(groups.named(b"a"), Ok(Some(0)));
        for i in 2..MAX_GROUPS {
            assert!(groups.named(format!("g{i}").as_bytes()).is_ok());
        }
        assert_eq!(groups.named(b"one too many"), Err(TooManyGroups));
        assert_eq!(groups.named(b"b"), Ok(Some(1)), "a known one still");
    }

    proptest! {
        /// Members alike share evenly (in turns); the preferred one is always taken;
        /// nobody outside the group is.
        #[test]
        fn picks_the_preferred_member_and_equals_take_turns(
            peers in proptest::collection::vec((any::<bool>(), any::<bool>(), 0usize..3, any::<bool>()), 0..12),
            rounds in 1usize..40,
        ) {
            let mut groups = WorkGroups::default();
            let g = groups.named(b"w").unwrap().unwrap();
            let member = |i: usize| {
                let (connected, has_room, queued, member) = peers[i];
                member.then_some(Candidate { connected, has_room, queued })
            };
            let best = (0..peers.len()).filter_map(|i| member(i).map(|c| (!c.connected, !c.has_room, c.queued))).min();
            let mut counts = vec![0usize; peers.len()];
            for _ in 0..rounds {
                let picked = groups.pick(g, peers.len(), member);
                prop_assert_eq!(picked.is_some(), best.is_some());
                if let Some(i) = picked {
                    let c = member(i).expect("a member");
                    prop_assert_eq!(Some((!c.connected, !c.has_room, c.queued)), best);
                    counts[i] += 1;
                }
            }
            // The best ones, equal as they are, were taken in turns: none twice before each once.
            let picked: Vec<usize> = counts.iter().copied().filter(|&c| c > 0).collect();
            if let (Some(max), Some(min)) = (picked.iter().max(), picked.iter().min()) {
                prop_assert!(max - min <= 1, "{counts:?}");
            }
        }
    }
}
