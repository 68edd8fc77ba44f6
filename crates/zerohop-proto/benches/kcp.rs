//! KCP's cost per message, ours against the reference C (`ikcp.c`), in one thread: a
//! pair of conversations joined by an in-memory link, 64-byte messages in message mode
//! with the fastest preset, 64 sent a turn of 10 ms, delivered, acknowledged and
//! received. Both sides hand their datagrams over the same way (a `Vec` each), so the
//! harness costs them alike. Runs interleaved; one JSON line a run.
//!
//! Run with `cargo bench -p zerohop-proto --bench kcp`.

#[path = "../tests/reference/mod.rs"]
mod reference;

use std::hint::black_box;
use std::time::Instant;

use reference::Reference;
use zerohop_proto::kcp::{Kcp, Mode};

const TURNS: u32 = 20_000;
const PER_TURN: usize = 64;

fn ours() -> f64 {
    let config = Mode::Fastest.config();
    let (mut a, mut b) = (Kcp::with_config(1, &config).unwrap(), Kcp::with_config(1, &config).unwrap());
    let msg = [7u8; 64];
    let mut buf = [0u8; 256];
    let (mut wire, mut back): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    let mut got = 0usize;
    let start = Instant::now();
    for turn in 0..TURNS {
        let now = turn * 10;
        for _ in 0..PER_TURN {
            a.send(black_box(&msg)).unwrap();
        }
        a.update(now, &mut |d: &[u8]| wire.push(d.to_vec()));
        for d in wire.drain(..) {
            b.input(&d).unwrap();
        }
        b.update(now, &mut |d: &[u8]| back.push(d.to_vec()));
        for d in back.drain(..) {
            a.input(&d).unwrap();
        }
        while b.recv(&mut buf).is_ok() {
            got += 1;
        }
    }
    assert_eq!(got, TURNS as usize * PER_TURN);
    start.elapsed().as_nanos() as f64 / got as f64
}

fn theirs() -> f64 {
    let config = Mode::Fastest.config();
    let (mut a, mut b) = (Reference::with_config(1, &config), Reference::with_config(1, &config));
    let msg = [7u8; 64];
    let mut buf = [0u8; 256];
    let mut got = 0usize;
    let start = Instant::now();
    for turn in 0..TURNS {
        let now = turn * 10;
        for _ in 0..PER_TURN {
            assert!(a.send(black_box(&msg)) >= 0);
        }
        for d in a.update(now) {
            b.input(&d);
        }
        for d in b.update(now) {
            a.input(&d);
        }
        while b.recv(&mut buf).is_some() {
            got += 1;
        }
    }
    assert_eq!(got, TURNS as usize * PER_TURN);
    start.elapsed().as_nanos() as f64 / got as f64
}

fn main() {
    // (`npm run bench` asks for its number of runs; two turns of ours and the reference's each.)
    let runs: u32 = std::env::var("ZEROHOP_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    for run in 0..2 * runs {
        let (o, t) = if run % 2 == 0 { (ours(), theirs()) } else { ours_after(theirs()) };
        println!(
            "{{\"bench\":\"KCP 64 B, a message sent, delivered, acknowledged and received (one thread)\",\"run\":{},\"oursNs\":{o:.1},\"referenceNs\":{t:.1},\"ratio\":{:.2}}}",
            run + 1,
            o / t
        );
    }
}

/// The reference first, then ours (every other run, so neither always goes first).
fn ours_after(theirs: f64) -> (f64, f64) {
    (ours(), theirs)
}
