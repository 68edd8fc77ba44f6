//! Multi-process stress test of the ring protocol.
//!
//! Why not loom: the ring lives in a `MAP_SHARED` file mapping that several processes
//! touch through raw pointers, and its readers copy payloads optimistically (a seqlock).
//! Loom models threads with its own atomic types and cannot stand in for memory another
//! process writes, so the protocol is checked here instead, under real contention:
//!
//! - 3 publisher processes share one ring (they race to claim sequence numbers on every
//!   message, and to take slots a lap behind each other) and publish messages of random
//!   length whose every byte is derived from (publisher, sequence), plus a checksum:
//!   one with `publish` (every seventh message longer than a slot, through the
//!   payload pool, and every 500th longer than the pool, on the side path), one with `publish_packed` batches of random size, one with loans of
//!   which it abandons some (slots readers must pass over);
//! - 3 subscriber processes validate every message they receive: the checksum and the
//!   pattern must be intact (no torn read is ever delivered), each publisher's sequence
//!   must strictly increase, and `received + lapped` must equal everything published
//!   since they joined;
//! - `drop_old` runs on a 64-slot ring so that subscribers are lapped constantly
//!   (overwrites race with reads); `block` runs on the same ring and must deliver
//!   every message of every publisher, in order, with nothing lapped;
//! - `sigkill`: as `block`, while publisher processes (listed ones, and unlisted ones
//!   that publish under the repair lock) are SIGKILLed one after another, each halfway
//!   through writing a loan: the survivors' messages all arrive, in order, nothing
//!   torn, and the holes the dead left are repaired (nothing wedges).
//!
//! - `group`: as `block`, read by 3 members of one work group, the first of which
//!   stops after a few thousand messages and is SIGKILLed: every message of every
//!   publisher is read by exactly one member, whole.
//!
//! The parent re-executes this test binary for each role (`ZEROHOP_STRESS_ROLE`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zerohop_shm::ring::table;
use zerohop_shm::{Backpressure, Layout, Published, Publisher, Segment, SegmentOptions, Subscriber};

const PUBLISHERS: u32 = 3;
/// Publishers SIGKILLed in turn by `stress_sigkill`; their ids start here.
const VICTIMS: u32 = 6;
const VICTIM_BASE: u32 = 100;
const SUBSCRIBERS: u32 = 3;
const PER_PUBLISHER: u64 = 120_000;
const SLOT: usize = 256;
/// The payload pool: messages up to `LONG` bytes, longer than a slot, go there. Small
/// enough that under `drop_old` it laps before the ring does (its check is tested).
const POOL: u32 = 4 << 10;
const LONG: usize = 1200;
const HEADER: usize = 4 + 8 + 4 + 4; // publisher, seq, len, checksum
/// The last message of a run: publisher id u32::MAX.
const SENTINEL: u32 = u32::MAX;

fn open(name: &str) -> Arc<Segment> {
    let dir = std::env::temp_dir().join("zerohop-stress");
    std::fs::create_dir_all(&dir).unwrap();
    let layout = Layout { slot_size: SLOT as u32, capacity: 64, max_subscribers: 8, pool_size: POOL };
    Arc::new(Segment::open(name, &SegmentOptions { layout: Some(layout), dir: Some(dir) }).unwrap())
}

/// A cheap deterministic byte stream for (publisher, seq).
fn pattern(publisher: u32, seq: u64, i: usize) -> u8 {
    let x = (publisher as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ i as u64;
    (x ^ (x >> 29) ^ (x >> 47)) as u8
}

fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

fn encode(publisher: u32, seq: u64, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&publisher.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend((0..len - HEADER).map(|i| pattern(publisher, seq, i)));
    let sum = checksum(&out[..]);
    out[16..20].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a received message; returns (publisher, seq).
fn validate(msg: &[u8]) -> (u32, u64) {
    assert!(msg.len() >= HEADER, "message of {} bytes is shorter than its header", msg.len());
    let publisher = u32::from_le_bytes(msg[0..4].try_into().unwrap());
    let seq = u64::from_le_bytes(msg[4..12].try_into().unwrap());
    let len = u32::from_le_bytes(msg[12..16].try_into().unwrap()) as usize;
    assert_eq!(len, msg.len(), "length field disagrees with the delivered length");
    let mut copy = msg.to_vec();
    copy[16..20].copy_from_slice(&[0; 4]);
    assert_eq!(checksum(&copy), u32::from_le_bytes(msg[16..20].try_into().unwrap()), "torn message delivered");
    for (i, &b) in msg[HEADER..].iter().enumerate() {
        assert_eq!(b, pattern(publisher, seq, i), "payload byte {i} of ({publisher}, {seq}) corrupted");
    }
    (publisher, seq)
}

fn policy(name: &str) -> Backpressure {
    match name {
        "block" | "sigkill" => Backpressure::Block,
        _ => Backpressure::DropOld,
    }
}

/// A xorshift step.
fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// Publishes `count` messages (forever if `None`) as publisher `id`, in the style its id
/// picks (see the module docs); victims alternate between listed and unlisted.
fn publisher_role(seg_name: &str, id: u32, policy_name: &str, count: Option<u64>) {
    let seg = open(seg_name);
    let mut p = if id >= VICTIM_BASE && id % 2 == 1 {
        Publisher::with_line(seg, policy(policy_name), None)
    } else {
        Publisher::new(seg, policy(policy_name))
    };
    p.set_timeout(Duration::from_secs(60));
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ id as u64;
    let mut buf = Vec::with_capacity(SLOT);
    let mut packed = Vec::new();
    let mut seq = 0;
    while count.is_none_or(|c| seq < c) {
        let len = HEADER + (next(&mut rng) % (SLOT - HEADER + 1) as u64) as usize;
        match id % 3 {
            0 => {
                // Every seventh longer than a slot: through the pool; every 500th longer
                // than the pool: on the side path.
                let len = if seq % 500 == 250 {
                    POOL as usize + 1 + (next(&mut rng) % 6000) as usize
                } else if seq % 7 == 3 {
                    SLOT + 1 + (next(&mut rng) % (LONG - SLOT) as u64) as usize
                } else {
                    len
                };
                encode(id, seq, len, &mut buf);
                assert!(matches!(p.publish(&buf).unwrap(), Published::Sent(_)));
                seq += 1;
            }
            1 => {
                let n = (1 + next(&mut rng) % 8).min(count.map_or(u64::MAX, |c| c - seq));
                packed.clear();
                for i in 0..n {
                    encode(id, seq + i, SLOT, &mut buf);
                    packed.extend_from_slice(&buf);
                }
                assert_eq!(p.publish_packed(&packed, SLOT).unwrap() as u64, n);
                seq += n;
            }
            _ => {
                let mut loan = p.loan().unwrap().unwrap();
                if next(&mut rng).is_multiple_of(5) {
                    loan.as_mut_slice()[..4].copy_from_slice(&[0xEE; 4]);
                    continue; // abandoned: readers pass over its slot
                }
                encode(id, seq, len, &mut buf);
                loan.as_mut_slice()[..len / 2].copy_from_slice(&buf[..len / 2]);
                if count.is_none() && seq >= 50 + 100 * (id % 7) as u64 {
                    // A victim: half a message written, it tells the parent, which kills it.
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "HOLDING").unwrap();
                    out.flush().unwrap();
                    std::thread::sleep(Duration::from_secs(600));
                }
                loan.as_mut_slice()[len / 2..len].copy_from_slice(&buf[len / 2..]);
                loan.commit(len);
                seq += 1;
            }
        }
    }
    // What it sent on the side path goes with it: not before every subscriber read it.
    assert!(p.linger(Duration::from_secs(60)), "subscribers did not read the side path's messages");
}

fn subscriber_role(seg_name: &str, policy_name: &str) {
    let seg = open(seg_name);
    let mut s = Subscriber::new(seg.clone()).unwrap();
    println!("READY");
    let cancel = AtomicBool::new(false);
    let mut next_seq = std::collections::HashMap::<u32, u64>::new();
    let mut seen = [0u64; PUBLISHERS as usize];
    let mut buf = Vec::new();
    let sentinel_seq = loop {
        if s.try_recv(&mut buf).is_none() {
            if !s.wait(Duration::from_micros(20), Some(Duration::from_secs(60)), &cancel) {
                // What the ring and its claim lines say, and the claimers' states: a wedge
                // (readers waiting at a hole nobody repairs) shows here.
                use zerohop_shm::layout::offsets as o;
                let c = s.cursor();
                let slot = seg.layout().slot_offset(c);
                let w = |off: usize| seg.word(off).load(std::sync::atomic::Ordering::SeqCst);
                let lines: Vec<_> = (0..32u32)
                    .map(|i| {
                        (
                            w(o::PUBLISHERS + 4 * i as usize),
                            w(o::CLAIMS + 64 * i as usize),
                            w(o::CLAIMS + 64 * i as usize + 4),
                        )
                    })
                    .filter(|l| l.0 != 0 || l.1 != 0)
                    .collect();
                eprintln!(
                    "STALL cursor {c} tail {} stamp {} want {} len {} origin {} repair {} lines {lines:?}",
                    table::tail(&seg),
                    w(slot),
                    zerohop_shm::ring::committed_stamp(c),
                    w(slot + 4),
                    w(slot + 8),
                    w(o::REPAIR_LOCK)
                );
                for (pid, _, _) in &lines {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                    let cmd = std::fs::read_to_string(format!("/proc/{pid}/environ")).unwrap_or_default();
                    let role: Vec<_> = cmd.split('\0').filter(|v| v.starts_with("ZEROHOP_STRESS_")).collect();
                    eprintln!("STALL pid {pid}: {} wchan {wchan} {role:?}", stat.split(' ').nth(2).unwrap_or("gone"));
                }
                panic!("stalled");
            }
            continue;
        }
        let (publisher, seq) = validate(&buf);
        if publisher == SENTINEL {
            break s.cursor() - 1;
        }
        let expected = next_seq.entry(publisher).or_default();
        assert!(seq >= *expected, "publisher {publisher} went backwards: {seq} after {expected}");
        if policy_name != "drop_old" {
            // A victim's messages end where it was killed; until then none is lost.
            assert_eq!(seq, *expected, "block must not lose publisher {publisher}'s messages");
        }
        *expected = seq + 1;
        if publisher < PUBLISHERS {
            seen[publisher as usize] += 1;
        }
    };
    let st = s.stats();
    // Every sequence number claimed since it joined (at 0), up to the sentinel's, was
    // received, lapped, or passed over (abandoned, or left by a killed publisher).
    let (received, lapped, passed) = (st.received, st.lapped, st.passed);
    assert_eq!(received + lapped + passed, sentinel_seq + 1, "received {received} + lapped {lapped} + passed {passed}");
    if policy_name != "sigkill" {
        // (+ 1: the sentinel.)
        assert!(received + lapped > PUBLISHERS as u64 * PER_PUBLISHER, "every message published is counted");
    }
    if policy_name != "drop_old" {
        assert_eq!(st.lapped, 0);
        assert_eq!(seen, [PER_PUBLISHER; PUBLISHERS as usize]);
    }
    println!("RESULT received={received} lapped={lapped} passed={passed} lap_events={}", st.lap_events);
}

/// How many messages the member that is killed reads first.
const VICTIM_READS: usize = 5000;

/// A member of work group `w`: prints what it read (`publisher seq` lines, then
/// `DONE`) once it reads a sentinel; the victim prints its first [`VICTIM_READS`] and
/// `PAUSED`, and waits to be killed.
fn member_role(seg_name: &str, victim: bool) {
    use std::io::Write;
    let mut s = Subscriber::join(open(seg_name), "w").unwrap();
    let cancel = AtomicBool::new(false);
    let mut got = Vec::new();
    let mut buf = Vec::new();
    loop {
        if s.try_recv(&mut buf).is_none() {
            assert!(s.wait(Duration::from_micros(20), Some(Duration::from_secs(60)), &cancel), "stalled");
            continue;
        }
        let (publisher, seq) = validate(&buf);
        if publisher == SENTINEL {
            break;
        }
        got.push((publisher, seq));
        if victim && got.len() == VICTIM_READS {
            break;
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // (On a line of its own: the test harness's "test stress_group ... " has none.)
    writeln!(out).unwrap();
    for (p, seq) in &got {
        writeln!(out, "{p} {seq}").unwrap();
    }
    writeln!(out, "{}", if victim { "PAUSED" } else { "DONE" }).unwrap();
    out.flush().unwrap();
    drop(out);
    if victim {
        std::thread::sleep(Duration::from_secs(600));
    }
}

/// A line `member_role` prints for a message it read (not the test harness's own).
fn is_read(line: &str) -> bool {
    line.split(' ').count() == 2 && line.split(' ').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
}

fn run(policy_name: &str) -> Vec<String> {
    let name = format!("stress-{policy_name}-{}", std::process::id());
    let seg = open(&name);
    let exe = std::env::current_exe().unwrap();
    let spawn = |role: &str, id: u32| {
        Command::new(&exe)
            .args(["--exact", &format!("stress_{}", policy_name), "--nocapture", "--test-threads", "1"])
            .env("ZEROHOP_STRESS_ROLE", role)
            .env("ZEROHOP_STRESS_SEGMENT", &name)
            .env("ZEROHOP_STRESS_ID", id.to_string())
            .env("ZEROHOP_STRESS_POLICY", policy_name)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let subs: Vec<_> = (0..SUBSCRIBERS).map(|i| spawn("subscriber", i)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while table::subscriber_count(&seg) < SUBSCRIBERS {
        assert!(Instant::now() < deadline, "subscribers did not attach");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pubs: Vec<_> = (0..PUBLISHERS).map(|i| spawn("publisher", i)).collect();
    if policy_name == "sigkill" {
        // One victim at a time, killed while it holds a loan (and, if unlisted, the
        // repair lock): its slot's stamp odd, half a message written. A kill before the
        // odd stamp is `ring::tests::a_dead_claimers_holes_are_passed_over…`.
        use std::io::BufRead;
        for v in 0..VICTIMS {
            let id = VICTIM_BASE + 3 * v + 1;
            assert_eq!(id % 3, 2, "a victim writes through loans");
            let mut victim = spawn("victim", id);
            let mut lines = std::io::BufReader::new(victim.stdout.take().unwrap()).lines();
            assert!(lines.any(|l| l.unwrap().contains("HOLDING")), "victim {v} never held a loan");
            victim.kill().unwrap();
            victim.wait().unwrap();
        }
    }
    for p in pubs {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "publisher failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let mut sentinel = Publisher::new(seg.clone(), policy(policy_name));
    let mut buf = Vec::new();
    encode(SENTINEL, 0, HEADER, &mut buf);
    sentinel.publish(&buf).unwrap();
    subs.into_iter()
        .map(|s| {
            let out = s.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "subscriber failed:\n{stdout}");
            stdout.lines().find(|l| l.starts_with("RESULT")).expect("a RESULT line").to_owned()
        })
        .collect()
}

fn child_role() -> bool {
    let Ok(role) = std::env::var("ZEROHOP_STRESS_ROLE") else { return false };
    let seg = std::env::var("ZEROHOP_STRESS_SEGMENT").unwrap();
    let policy_name = std::env::var("ZEROHOP_STRESS_POLICY").unwrap();
    match role.as_str() {
        "publisher" | "victim" => {
            let id = std::env::var("ZEROHOP_STRESS_ID").unwrap().parse().unwrap();
            let count = (role == "publisher").then_some(PER_PUBLISHER);
            publisher_role(&seg, id, &policy_name, count)
        }
        "subscriber" => subscriber_role(&seg, &policy_name),
        "member" => member_role(&seg, std::env::var("ZEROHOP_STRESS_ID").unwrap() == "0"),
        other => panic!("unknown role {other}"),
    }
    true
}

#[test]
fn stress_drop_old() {
    if child_role() {
        return;
    }
    let results = run("drop_old");
    // With a 64-slot ring and three publishers racing, every subscriber gets lapped.
    for r in &results {
        assert!(!r.contains("lapped=0 "), "expected lapping under drop_old: {r}");
    }
    eprintln!("drop_old: {results:?}");
}

#[test]
fn stress_block() {
    if child_role() {
        return;
    }
    let results = run("block");
    eprintln!("block: {results:?}");
}

#[test]
fn stress_sigkill() {
    if child_role() {
        return;
    }
    let results = run("sigkill");
    eprintln!("sigkill: {results:?}");
}

#[test]
fn stress_group() {
    if child_role() {
        return;
    }
    use std::io::BufRead;
    let name = format!("stress-group-{}", std::process::id());
    let seg = open(&name);
    let exe = std::env::current_exe().unwrap();
    let spawn = |role: &str, id: u32| {
        Command::new(&exe)
            .args(["--exact", "stress_group", "--nocapture", "--test-threads", "1"])
            .env("ZEROHOP_STRESS_ROLE", role)
            .env("ZEROHOP_STRESS_SEGMENT", &name)
            .env("ZEROHOP_STRESS_ID", id.to_string())
            .env("ZEROHOP_STRESS_POLICY", "block")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut members: Vec<_> = (0..SUBSCRIBERS).map(|i| spawn("member", i)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while table::subscriber_count(&seg) < SUBSCRIBERS {
        assert!(Instant::now() < deadline, "members did not join");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pubs: Vec<_> = (0..PUBLISHERS).map(|i| spawn("publisher", i)).collect();
    // The victim: what it read before it paused is its share; then it dies.
    let mut victim = members.remove(0);
    let mut read = Vec::new();
    for line in std::io::BufReader::new(victim.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "PAUSED" {
            break;
        }
        if is_read(&line) {
            read.push(line);
        }
    }
    assert_eq!(read.len(), VICTIM_READS, "the victim read its share");
    victim.kill().unwrap();
    victim.wait().unwrap();
    for p in pubs {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "publisher failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    // One sentinel a survivor: each stops reading at its first.
    let mut sentinel = Publisher::new(seg.clone(), Backpressure::Block);
    let mut buf = Vec::new();
    encode(SENTINEL, 0, HEADER, &mut buf);
    for _ in &members {
        sentinel.publish(&buf).unwrap();
    }
    let mut shares = vec![read.len()];
    for m in members {
        let out = m.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && stdout.contains("DONE\n"), "member failed:\n{stdout}");
        let lines: Vec<_> = stdout.lines().filter(|l| is_read(l)).map(str::to_owned).collect();
        shares.push(lines.len());
        read.extend(lines);
    }
    let mut seen = std::collections::HashSet::new();
    for line in &read {
        assert!(seen.insert(line.as_str()), "read twice: {line}");
    }
    for p in 0..PUBLISHERS {
        for seq in 0..PER_PUBLISHER {
            assert!(seen.contains(format!("{p} {seq}").as_str()), "never read: publisher {p} message {seq}");
        }
    }
    assert_eq!(seen.len() as u64, PUBLISHERS as u64 * PER_PUBLISHER);
    assert!(shares[1..].iter().all(|&n| n > 0), "both survivors read a share: {shares:?}");
    // The survivors left, and the group's entry with the last of them (the victim's
    // entry waits for a reaper).
    use zerohop_shm::layout::{GROUP_ENTRY, offsets as o};
    let word = |entry: u32, at: usize| seg.word(seg.layout().subscriber_offset(entry) + at).load(Ordering::SeqCst);
    let taken: Vec<_> = (0..seg.layout().max_subscribers).filter(|&e| word(e, o::SUB_PID) != 0).collect();
    assert!(taken.len() <= 1, "left behind: {taken:?}");
    assert!(taken.iter().all(|&e| word(e, o::SUB_GROUP) != GROUP_ENTRY), "the group's entry went");
    eprintln!("group shares: {shares:?}");
}

#[test]
fn validator_catches_corruption() {
    // The checks above are only worth something if they can fail.
    let mut buf = Vec::new();
    encode(1, 7, 100, &mut buf);
    assert_eq!(validate(&buf), (1, 7));
    for i in [0usize, 5, 13, 17, 60, 99] {
        let mut bad = buf.clone();
        bad[i] ^= 0x40;
        assert!(std::panic::catch_unwind(|| validate(&bad)).is_err(), "flip at {i} undetected");
    }
}
