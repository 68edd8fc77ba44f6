//! [`Subjects`]: the subjects received messages came on, numbered, so that a message's
//! envelope carries a number (4 bytes) instead of its subject, and a reader asks the
//! hub for the name when it wants it.
//!
//! Numbers are never reused (a `u32` that would take billions of new subjects to wrap),
//! so a reader may cache a name by its number for good. The table keeps the last
//! [`KEPT`] numbers given: a subject seen again gets its old number while that is
//! in the newer half, a new one after; so a message still unread after [`KEPT`] / 2 new
//! numbers loses its subject (the reader gets none), and the table's memory stays
//! bounded whatever the subjects.

use std::collections::HashMap;

/// Numbers the table keeps.
pub const KEPT: usize = 1 << 16;

/// See the module docs.
#[derive(Debug)]
pub struct Subjects {
    /// The subject numbered `n`, at `n % KEPT`, with its number.
    names: Vec<(u32, Box<str>)>,
    numbers: HashMap<Box<str>, u32>,
    /// The next number to give (0 is no subject).
    next: u32,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects { names: Vec::new(), numbers: HashMap::new(), next: 1 }
    }
}

impl Subjects {
    /// The number of `subject`, given now if it has none still fresh.
    pub fn number(&mut self, subject: &str) -> u32 {
        if let Some(&n) = self.numbers.get(subject)
            && (self.next.wrapping_sub(n) as usize) < KEPT / 2
        {
            return n;
        }
        let n = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        let slot = n as usize % KEPT;
        let name: Box<str> = subject.into();
        if slot < self.names.len() {
            let (old_n, old) = std::mem::replace(&mut self.names[slot], (n, name.clone()));
            if self.numbers.get(&old) == Some(&old_n) {
                self.numbers.remove(&old);
            }
        } else {
            self.names.resize(slot, (0, "".into()));
            self.names.push((n, name.clone()));
        }
        self.numbers.insert(name, n);
        n
    }

    /// The subject numbered `n`, while the table keeps it.
    pub fn name(&self, n: u32) -> Option<&str> {
        self.names.get(n as usize % KEPT).filter(|(m, _)| *m == n && n != 0).map(|(_, s)| &**s)
    }

    /// Subjects known now.
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_keeps_its_number_and_names_stay_bounded() {
        let mut t = Subjects::default();
        let a = t.number("prices.eur");
        assert_eq!(t.number("prices.eur"), a);
        let b = t.number("prices.usd");
        assert_ne!(a, b);
        assert_eq!(
            (t.name(a), t.name(b), t.name(0), t.name(999)),
            (Some("prices.eur"), Some("prices.usd"), None, None)
        );
        // Many distinct subjects: old numbers go, memory does not grow past KEPT.
        for i in 0..KEPT * 2 {
            t.number(&format!("s.{i}"));
        }
        assert!(t.len() <= KEPT && t.names.len() <= KEPT);
        assert_eq!(t.name(a), None, "forgotten, not misnamed");
        let again = t.number("prices.eur");
        assert!(again > b, "a new number, never an old one reused");
        assert_eq!(t.name(again), Some("prices.eur"));
    }

    #[test]
    fn a_subject_seen_all_along_is_renumbered_before_its_number_is_forgotten() {
        let mut t = Subjects::default();
        let mut n = t.number("hot");
        for i in 0..KEPT * 3 {
            t.number(&format!("cold.{i}"));
            let m = t.number("hot");
            assert_eq!(t.name(m), Some("hot"));
            if m != n {
                assert!(m > n);
                n = m;
            }
        }
    }
}
