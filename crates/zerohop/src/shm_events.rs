//! Status events of an `shm://` hub: who comes and goes on its segment. A publisher or
//! subscriber that opens the segment is `connected`, one that closes it `disconnected`,
//! one whose process died `disconnected` with `ERR_CONNECTION_LOST`; each event's peer
//! is `publisher:<pid>:<entry>` or `subscriber:<pid>:<entry>`. The segment's tables are
//! looked at every `heartbeatMs` while a listener is set (by one thread for every
//! segment the process watches), and whenever events are taken.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use zerohop_shm::Segment;
use zerohop_shm::registry::{Change, Member, MemberWatch, members};
use zerohop_shm::ring::process_alive;
use zerohop_transport::{Connection, Error, ErrorCode, Status, StatusEvent, StatusListener};

/// What a change of a segment's members says to a status listener.
pub fn status_event(change: Change) -> StatusEvent {
    let (status, m, error) = match change {
        Change::Joined(m) => (Status::Connected, m, None),
        Change::Left(m) => (Status::Disconnected, m, None),
        Change::Died(m) => {
            let why = format!("process {} died without closing its hub", m.pid);
            (Status::Disconnected, m, Some(Error::new(ErrorCode::ConnectionLost, why)))
        }
    };
    StatusEvent { status, peer: Some(m.to_string()), error }
}

/// See the module docs.
pub struct MemberEvents {
    seg: Arc<Segment>,
    every: Duration,
    watch: Mutex<MemberWatch>,
    listener: Mutex<Option<StatusListener>>,
}

impl core::fmt::Debug for MemberEvents {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemberEvents").field("every", &self.every).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemberEvents {
    /// Events of `seg`'s members but `own` (the hub's entries), looked at every `every`.
    pub fn new(seg: Arc<Segment>, own: Vec<Member>, every: Duration) -> Arc<MemberEvents> {
        Arc::new(MemberEvents { seg, every, watch: Mutex::new(MemberWatch::new(own)), listener: Mutex::new(None) })
    }

    /// What changed since the last look, as status events.
    pub fn look(&self) -> Vec<StatusEvent> {
        let now = members(&self.seg);
        lock(&self.watch).look(&now, process_alive).into_iter().map(status_event).collect()
    }

    /// Sets (or with `None` removes) the listener; the process's watcher thread looks
    /// every `every` while one is set.
    pub fn set_listener(self: &Arc<Self>, listener: Option<StatusListener>) {
        let start = listener.is_some();
        *lock(&self.listener) = listener;
        if start {
            Watcher::get().add(self);
        } else {
            self.stop();
        }
    }

    /// Looks, and tells the listener (if any) what changed.
    fn tell(&self) {
        for e in self.look() {
            let listener = lock(&self.listener).clone();
            if let Some(l) = listener {
                l(&e);
            }
        }
    }

    /// Stops looking (the watcher forgets this segment).
    pub fn stop(self: &Arc<Self>) {
        *lock(&self.listener) = None;
        Watcher::get().remove(self);
    }
}

/// The one thread of a process that looks at every watched segment, each at its own
/// interval (a thread per hub was a thread per hub: a process with a hundred hubs
/// listening ran a hundred threads that slept). It runs while something is watched.
struct Watcher {
    state: Mutex<WatcherState>,
    /// Told when something is added or removed.
    changed: Condvar,
}

#[derive(Default)]
struct WatcherState {
    /// What is watched, and when it is looked at next.
    watched: Vec<(Weak<MemberEvents>, Instant)>,
    running: bool,
}

impl Watcher {
    fn get() -> &'static Watcher {
        static WATCHER: OnceLock<Watcher> = OnceLock::new();
        WATCHER.get_or_init(|| Watcher { state: Mutex::new(WatcherState::default()), changed: Condvar::new() })
    }

    /// Watches `events` (looked at once now); starts the thread if it is not running.
    fn add(&'static self, events: &Arc<MemberEvents>) {
        let mut state = lock(&self.state);
        let weak = Arc::downgrade(events);
        if !state.watched.iter().any(|(w, _)| w.ptr_eq(&weak)) {
            state.watched.push((weak, Instant::now()));
        }
        if !state.running {
            state.running = true;
            if std::thread::Builder::new().name("zerohop-shm-members".into()).spawn(move || self.run()).is_err() {
                state.running = false;
            }
        }
        self.changed.notify_all();
    }

    fn remove(&self, events: &Arc<MemberEvents>) {
        let weak = Arc::downgrade(events);
        lock(&self.state).watched.retain(|(w, _)| !w.ptr_eq(&weak) && w.strong_count() > 0);
        self.changed.notify_all();
    }

    fn run(&self) {
        let mut state = lock(&self.state);
        loop {
            state.watched.retain(|(w, _)| w.strong_count() > 0);
            if state.watched.is_empty() {
                state.running = false;
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            for (w, next) in &mut state.watched {
                if *next <= now
                    && let Some(events) = w.upgrade()
                {
                    *next = now + events.every;
                    due.push(events);
                }
            }
            if !due.is_empty() {
                // Told without the lock: a listener may add or remove watches.
                drop(state);
                for events in due {
                    events.tell();
                }
                state = lock(&self.state);
                continue;
            }
            let soonest = state.watched.iter().map(|(_, next)| *next).min().unwrap_or(now);
            state = self
                .changed
                .wait_timeout(state, soonest.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The hub of an `shm://` segment is connected until closed; its events are its
/// members' ([`MemberEvents`]).
#[derive(Debug)]
pub struct ShmConnection(pub Arc<MemberEvents>);

impl Connection for ShmConnection {
    fn status(&self) -> Status {
        Status::Connected
    }

    fn connects(&self) -> bool {
        false
    }

    fn take_status_events(&self) -> Vec<StatusEvent> {
        self.0.look()
    }

    fn set_status_listener(&self, listener: Option<StatusListener>) {
        self.0.set_listener(listener);
    }
}
