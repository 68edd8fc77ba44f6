//! Work groups: subscribers that share a ring's messages, each message read by one of
//! them (ZeroMQ's PUSH/PULL, NATS queue groups).
//!
//! A group is a subscriber entry of its own, the **group entry** (see
//! [`offsets::SUB_GROUP`]): publishers hold back for its cursor as for any subscriber's.
//! Its members read at that cursor and **claim** what they read with a compare-and-swap
//! of it, *after* copying the message: the one whose swap succeeds delivers it, the
//! others drop their copy and look again. So a message is claimed exactly when an
//! application gets it, and nothing is ever claimed but unread: a member that dies
//! leaves nothing behind for the others to recover, and the next message it would have
//! read is simply read by another.
//!
//! Each member also holds an entry of its own (its pid, its parking), which publishers
//! pass over. Joining, leaving and freeing a group whose members are all gone happen
//! under the segment's repair lock, so that a group entry is never freed while a
//! member names it, nor two entries made for one name.

use super::*;
use crate::layout::{GROUP_ENTRY, MAX_GROUP_NAME};

/// How long joining or leaving waits for the repair lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

impl RingMemory {
    pub(super) fn sub_group(&self, index: u32) -> &AtomicU32 {
        self.word(self.layout.subscriber_offset(index) + offsets::SUB_GROUP)
    }

    /// Whether entry `index` is a work group's member (publishers wait for its group,
    /// not for it).
    pub(super) fn is_member(&self, index: u32) -> bool {
        is_member_word(self.sub_group(index).load(Ordering::Acquire))
    }

    /// The name of group entry `index`.
    fn group_name(&self, index: u32) -> Vec<u8> {
        let at = self.layout.subscriber_offset(index);
        let len = (self.word(at + offsets::SUB_NAME_LEN).load(Ordering::Acquire) as usize).min(MAX_GROUP_NAME);
        (0..len)
            .map(|i| {
                let w = self.word(at + offsets::SUB_NAME + i / 4 * 4).load(Ordering::Relaxed);
                (w >> (8 * (i % 4))) as u8
            })
            .collect()
    }

    fn set_group_name(&self, index: u32, name: &[u8]) {
        let at = self.layout.subscriber_offset(index);
        for (i, chunk) in name.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.word(at + offsets::SUB_NAME + 4 * i).store(u32::from_le_bytes(word), Ordering::Relaxed);
        }
        self.word(at + offsets::SUB_NAME_LEN).store(name.len() as u32, Ordering::Release);
    }

    /// A live member of group entry `group` other than entry `but`: its pid.
    fn live_member(&self, group: u32, but: Option<u32>) -> Option<u32> {
        (0..self.layout.max_subscribers)
            .filter(|&i| Some(i) != but && self.sub_group(i).load(Ordering::Acquire) == group + 1)
            .map(|i| self.sub_pid(i).load(Ordering::Acquire))
            .find(|&pid| process_alive(pid))
    }
}

/// Whether a `group` word names a member (not a subscriber of its own, not a group entry).
pub(super) fn is_member_word(group: u32) -> bool {
    group != 0 && group != GROUP_ENTRY
}

/// Checks a group name: 1 to [`MAX_GROUP_NAME`] bytes.
pub(super) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME {
        return Err(ShmError::BadName(format!(
            "a work group's name is 1 to {MAX_GROUP_NAME} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

/// Makes entry `own` (claimed, at the tail) a member of the group `name` (checked by
/// the caller, before it claimed `own`), made if no entry holds it yet: returns the
/// group entry and the group's cursor.
pub(super) fn join(mem: &RingMemory, own: u32, name: &str) -> Result<(u32, u64)> {
    let pid = std::process::id();
    acquire_repair_lock(mem, pid, LOCK_TIMEOUT)?;
    let found = (0..mem.layout.max_subscribers).find(|&i| {
        mem.sub_group(i).load(Ordering::Acquire) == GROUP_ENTRY
            && mem.sub_pid(i).load(Ordering::Acquire) != 0
            && mem.group_name(i) == name.as_bytes()
    });
    let group = match found {
        Some(g) => {
            // Kept by a live process: a reaper would otherwise look for members.
            let keeper = mem.sub_pid(g).load(Ordering::Acquire);
            if !process_alive(keeper) {
                let _ = mem.sub_pid(g).compare_exchange(keeper, pid, Ordering::AcqRel, Ordering::Relaxed);
            }
            g
        }
        None => match claim_subscriber_entry(mem) {
            Ok(g) => {
                mem.set_group_name(g, name.as_bytes());
                mem.sub_group(g).store(GROUP_ENTRY, Ordering::SeqCst);
                g
            }
            Err(e) => {
                release_repair_lock(mem);
                return Err(e);
            }
        },
    };
    mem.sub_group(own).store(group + 1, Ordering::SeqCst);
    release_repair_lock(mem);
    // The group's cursor: a little-endian low word, at most 2^31 behind the tail.
    let tail = mem.tail();
    let behind = (tail as u32).wrapping_sub(mem.sub_cursor(group).load(Ordering::SeqCst));
    notify_publishers(mem);
    Ok((group, tail.saturating_sub(behind as u64)))
}

/// Entry `own`, a member of group entry `group`, leaves it (its entry is freed); the
/// group entry goes too if no live member is left. Without the lock in time, only the
/// member's entry is freed: the group goes once a publisher that waits for it finds
/// its members gone.
pub(super) fn leave(mem: &RingMemory, own: u32, group: u32) {
    let locked = acquire_repair_lock(mem, std::process::id(), LOCK_TIMEOUT).is_ok();
    mem.sub_credited(own).store(0, Ordering::Release);
    mem.sub_pid(own).store(0, Ordering::SeqCst);
    if locked {
        mem.sub_group(own).store(0, Ordering::SeqCst);
        settle(mem, group, Some(own));
        release_repair_lock(mem);
    }
    notify_publishers(mem);
}

/// Group entry `group`, kept by `pid` (gone): hands it to a live member, or frees it if
/// none is left; true when freed. Under the repair lock only (false without it).
pub(super) fn reap(mem: &RingMemory, group: u32, pid: u32) -> bool {
    if !try_repair_lock(mem) {
        return false;
    }
    let freed = mem.sub_pid(group).load(Ordering::Acquire) == pid
        && mem.sub_group(group).load(Ordering::Acquire) == GROUP_ENTRY
        && settle(mem, group, None);
    release_repair_lock(mem);
    freed
}

/// Under the repair lock: frees group entry `group` if it has no live member but `but`,
/// or else makes sure a live one keeps it. True when freed.
fn settle(mem: &RingMemory, group: u32, but: Option<u32>) -> bool {
    match mem.live_member(group, but) {
        Some(member) => {
            let keeper = mem.sub_pid(group).load(Ordering::Acquire);
            if !process_alive(keeper) || keeper == std::process::id() && but.is_some() {
                let _ = mem.sub_pid(group).compare_exchange(keeper, member, Ordering::AcqRel, Ordering::Relaxed);
            }
            false
        }
        None => {
            mem.sub_group(group).store(0, Ordering::SeqCst);
            mem.word(mem.layout.subscriber_offset(group) + offsets::SUB_NAME_LEN).store(0, Ordering::SeqCst);
            mem.sub_pid(group).store(0, Ordering::SeqCst);
            true
        }
    }
}
