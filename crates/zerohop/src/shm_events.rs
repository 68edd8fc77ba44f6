//! Status events of an `shm://` hub: who comes and goes on its segment. A publisher or
//! subscriber that opens the segment is `connected`, one that closes it `disconnected`,
//! one whose process died `disconnected` with `ERR_CONNECTION_LOST`; each event's peer
//! is `publisher:<pid>:<entry>` or `subscriber:<pid>:<entry>`. The segment's tables are
//! looked at every `heartbeatMs` while a listener is set (on a thread of its own), and
//! whenever events are taken.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

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
    /// Set to stop the thread; the condvar ends its wait at once.
    stop: Mutex<bool>,
    stopped: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        Arc::new(MemberEvents {
            seg,
            every,
            watch: Mutex::new(MemberWatch::new(own)),
            listener: Mutex::new(None),
            stop: Mutex::new(false),
            stopped: Condvar::new(),
            thread: Mutex::new(None),
        })
    }

    /// What changed since the last look, as status events.
    pub fn look(&self) -> Vec<StatusEvent> {
        let now = members(&self.seg);
        lock(&self.watch).look(&now, process_alive).into_iter().map(status_event).collect()
    }

    /// Sets (or with `None` removes) the listener; a thread looks every `every` while
    /// one is set.
    pub fn set_listener(self: &Arc<Self>, listener: Option<StatusListener>) {
        let start = listener.is_some();
        *lock(&self.listener) = listener;
        if start && lock(&self.thread).is_none() {
            *lock(&self.stop) = false;
            let me = self.clone();
            let thread = std::thread::Builder::new().name("zerohop-shm-members".into()).spawn(move || me.run());
            *lock(&self.thread) = thread.ok();
        } else if !start {
            self.stop();
        }
    }

    fn run(&self) {
        loop {
            for e in self.look() {
                let listener = lock(&self.listener).clone();
                if let Some(l) = listener {
                    l(&e);
                }
            }
            let stop = lock(&self.stop);
            let (stop, _) =
                self.stopped.wait_timeout_while(stop, self.every, |s| !*s).unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
    }

    /// Stops the thread (if any) and waits for it.
    pub fn stop(&self) {
        *lock(&self.stop) = true;
        self.stopped.notify_all();
        let thread = lock(&self.thread).take();
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
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
