//! `zerohop_proto::kcp` against the reference C implementation itself (`ikcp.c`, as the
//! `kcp-io` crate bundles and compiles it): the same segments byte for byte, and whole
//! conversations, each end ours or the reference's, through a lossy, reordering,
//! duplicating link, in each of the four modes.

mod reference;

use zerohop_proto::chaos::{Chaos, ChaosSpec, Fate};
use zerohop_proto::kcp::{Kcp, Mode};

use reference::Reference;

/// Either end of a conversation.
enum End {
    Ours(Box<Kcp>),
    Theirs(Reference),
}

impl End {
    fn send(&mut self, data: &[u8]) {
        match self {
            End::Ours(k) => assert_eq!(k.send(data), Ok(data.len())),
            End::Theirs(r) => assert!(r.send(data) >= 0, "ikcp_send refused {} bytes", data.len()),
        }
    }

    fn input(&mut self, data: &[u8]) {
        match self {
            End::Ours(k) => k.input(data).unwrap(),
            End::Theirs(r) => assert_eq!(r.input(data), 0),
        }
    }

    fn update(&mut self, now: u32) -> Vec<Vec<u8>> {
        match self {
            End::Ours(k) => {
                let mut out = Vec::new();
                k.update(now, &mut |d: &[u8]| out.push(d.to_vec()));
                out
            }
            End::Theirs(r) => r.update(now),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self {
            End::Ours(k) => k.recv(buf).ok(),
            End::Theirs(r) => r.recv(buf),
        }
    }
}

/// Ours, set up by `mode`'s preset.
fn ours(mode: Mode) -> End {
    End::Ours(Box::new(Kcp::with_config(0xC0FFEE, &mode.config()).unwrap()))
}

/// The reference's, set up with the same parameters.
fn theirs(mode: Mode) -> End {
    End::Theirs(Reference::with_config(0xC0FFEE, &mode.config()))
}

/// Sends `messages` from `a` to `b` through a link with `spec`'s faults (both ways);
/// what `b` received.
fn converse(mut a: End, mut b: End, spec: &str, seed: u64, messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut chaos = Chaos::new(ChaosSpec::parse(spec).unwrap(), seed);
    let mut wire: Vec<(u32, bool, Vec<u8>)> = Vec::new();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut next = 0;
    let mut now = 0u32;
    for _ in 0..200_000 {
        // A few messages at a time: the reference's send queue has no bound of its own.
        if next < messages.len() && got.len() + 64 > next {
            a.send(&messages[next]);
            next += 1;
        }
        now += 5;
        let mut out: Vec<(bool, Vec<u8>)> = a.update(now).into_iter().map(|d| (true, d)).collect();
        out.extend(b.update(now).into_iter().map(|d| (false, d)));
        for (to_b, d) in out {
            if let Fate::Deliver { copies, delay, .. } = chaos.decide() {
                for _ in 0..copies {
                    wire.push((now + delay.as_millis() as u32, to_b, d.clone()));
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = wire.into_iter().partition(|(at, _, _)| *at <= now);
        wire = later;
        for (_, to_b, d) in due {
            if to_b { b.input(&d) } else { a.input(&d) }
        }
        while let Some(n) = b.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        if got.len() == messages.len() {
            break;
        }
    }
    got
}

fn messages() -> Vec<Vec<u8>> {
    (0..120).map(|i: usize| (0..(i * 997) % 20_000).map(|j| (i * 31 + j) as u8).collect()).collect()
}

#[test]
fn the_same_segments_byte_for_byte() {
    for (name, mode) in Mode::ALL {
        let (mut a, mut b) = (ours(mode), theirs(mode));
        for msg in [&b"hello"[..], &[7u8; 3000][..], &[][..]] {
            a.send(msg);
            b.send(msg);
        }
        for now in [1000, 1100, 1250] {
            assert_eq!(a.update(now), b.update(now), "{name}: what goes out at {now} ms");
        }
        // An answer to each: their acknowledgements, byte for byte too.
        let (mut c, mut d) = (ours(mode), theirs(mode));
        for dgram in b.update(5000) {
            c.input(&dgram);
            d.input(&dgram);
        }
        assert_eq!(c.update(5000), d.update(5000), "{name}: acknowledgements");
    }
}

#[test]
fn ours_to_theirs_and_theirs_to_ours_through_loss_reordering_and_duplication() {
    let spec = "loss:0.1,dup:0.05,reorder:0.1,reorder_by:30ms,delay:10ms,jitter:10ms";
    let sent = messages();
    for (name, mode) in Mode::ALL {
        for seed in 0..2 {
            let got = converse(ours(mode), theirs(mode), spec, seed, &sent);
            assert!(got == sent, "{name}, ours → theirs, seed {seed}: {} of {} messages", got.len(), sent.len());
            let got = converse(theirs(mode), ours(mode), spec, seed, &sent);
            assert!(got == sent, "{name}, theirs → ours, seed {seed}: {} of {} messages", got.len(), sent.len());
        }
    }
}
