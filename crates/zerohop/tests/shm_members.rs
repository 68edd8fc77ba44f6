//! What only `shm://` does: its status events are about the other hubs on the segment,
//! who opened it and who closed it (deaths need another process: see the TypeScript
//! suite's `multiprocess.spec.ts`).

use std::sync::mpsc;
use std::time::Duration;

use zerohop::{Hub, HubOptions, Role, ShmOptions, Status};

fn name() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("shm://members-{}-{nanos}", std::process::id())
}

#[test]
fn status_events_say_who_opened_and_closed_the_segment() {
    let url = name();
    let fast = ShmOptions { heartbeat: Some(Duration::from_millis(20)), ..Default::default() };
    let watcher = Hub::open(&url, HubOptions { role: Role::Subscriber, ..Default::default() }.with(fast)).unwrap();
    let (tx, rx) = mpsc::channel();
    watcher.connection().unwrap().set_status_listener(Some(std::sync::Arc::new(move |e: &zerohop::StatusEvent| {
        let _ = tx.send((e.status, e.peer.clone(), e.error.as_ref().map(|e| e.code())));
    })));
    assert_eq!(watcher.status(), Status::Connected);
    let other = Hub::open(&url, HubOptions { role: Role::Publisher, ..Default::default() }).unwrap();
    let (status, peer, error) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let peer = peer.unwrap();
    assert_eq!((status, error), (Status::Connected, None));
    assert!(peer.starts_with(&format!("publisher:{}:", std::process::id())), "{peer}");
    drop(other);
    let left = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(left, (Status::Disconnected, Some(peer), None), "closed: left, not died");
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "never the watcher's own entry");

    let quiet = ShmOptions { heartbeat: None, ..Default::default() };
    let unwatched = Hub::open(&url, HubOptions::default().with(quiet)).unwrap();
    assert!(unwatched.connection().is_err(), "heartbeatMs 0: no status events");
}

/// The threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == name)
        .count()
}

#[test]
fn one_thread_watches_every_segment_each_at_its_own_interval_and_none_once_nobody_listens() {
    let watched: Vec<(String, Hub, mpsc::Receiver<Option<String>>)> = (0..20)
        .map(|i| {
            let url = format!("{}-{i}", name());
            let every = ShmOptions { heartbeat: Some(Duration::from_millis(10 + i)), ..Default::default() };
            let hub = Hub::open(&url, HubOptions { role: Role::Subscriber, ..Default::default() }.with(every)).unwrap();
            let (tx, rx) = mpsc::channel();
            hub.connection().unwrap().set_status_listener(Some(std::sync::Arc::new(
                move |e: &zerohop::StatusEvent| {
                    let _ = tx.send(e.peer.clone());
                },
            )));
            (url, hub, rx)
        })
        .collect();
    // (Other tests of this file may watch too: at most one thread for all of them.) A
    // thread takes its name once it runs, which a loaded machine may delay.
    let named = std::time::Instant::now() + Duration::from_secs(5);
    while threads_named("zerohop-shm-mem") == 0 && std::time::Instant::now() < named {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(threads_named("zerohop-shm-mem"), 1, "20 watched segments, one thread");
    // Each hears of a publisher on its own segment, and only of that one.
    let publishers: Vec<Hub> = watched
        .iter()
        .map(|(url, _, _)| Hub::open(url, HubOptions { role: Role::Publisher, ..Default::default() }).unwrap())
        .collect();
    for (_, _, rx) in &watched {
        let peer = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert!(peer.starts_with("publisher:"), "{peer}");
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "one event each");
    }
    drop(publishers);
    drop(watched);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while threads_named("zerohop-shm-mem") > 0 {
        assert!(std::time::Instant::now() < deadline, "the thread ends once nothing is watched");
        std::thread::sleep(Duration::from_millis(10));
    }
}
