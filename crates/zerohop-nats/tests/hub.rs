//! `nats://` hubs through a real server (`zerohop_test_support::nats`): subjects and
//! wildcards, queue groups, requests (answered, failed, unanswered), a server restart,
//! and a reader that falls behind.

use std::time::{Duration, Instant};

use zerohop_nats::{NatsOptions, open};
use zerohop_test_support::nats::NatsServer;
use zerohop_transport::status::Status;
use zerohop_transport::{Endpoint, ErrorCode, HubOptions, Kind, MessageInfo, Transport, Value};

fn hub(url: &str, options: NatsOptions) -> Box<dyn Transport> {
    hub_with(url, HubOptions::default().with(options))
}

fn hub_with(url: &str, options: HubOptions) -> Box<dyn Transport> {
    let t = open(&Endpoint::parse(url).unwrap(), options).unwrap();
    wait_for(|| t.connection().unwrap().status() == Status::Connected, "the hub connected");
    t
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The next message within a few seconds, with its info.
fn next(t: &mut dyn Transport) -> Option<(Vec<u8>, MessageInfo)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    loop {
        if let Some(info) = t.try_recv(&mut out).unwrap() {
            return Some((out, info));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        t.wait_readable(Some(left.min(Duration::from_millis(50)))).unwrap();
    }
}

fn detail(t: &dyn Transport, name: &str) -> f64 {
    match t.metrics().details.iter().find(|(n, _)| *n == name) {
        Some((_, Value::Number(v))) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn wildcards_deliver_each_subject_by_its_number_and_a_pattern_does_not_publish() {
    let server = NatsServer::start(&[]);
    let mut all = hub(&server.url("prices.>"), NatsOptions::default());
    let mut one = hub(&server.url("prices.*.spot"), NatsOptions::default());
    let mut eur = hub(&server.url("prices.eur.spot"), NatsOptions::default());
    let mut usd = hub(&server.url("prices.usd"), NatsOptions::default());
    eur.publish_on(0, b"1.08").unwrap();
    usd.publish_on(0, b"1.00").unwrap();
    let mut subjects = Vec::new();
    for _ in 0..2 {
        let (body, info) = next(all.as_mut()).unwrap();
        subjects.push((all.subject(info.subject).unwrap(), body));
    }
    subjects.sort();
    assert_eq!(subjects, [("prices.eur.spot".into(), b"1.08".to_vec()), ("prices.usd".into(), b"1.00".to_vec())]);
    let (body, info) = next(one.as_mut()).unwrap();
    assert_eq!((one.subject(info.subject).as_deref(), &body[..]), (Some("prices.eur.spot"), &b"1.08"[..]));
    assert!(next(eur.as_mut()).is_none(), "a hub never receives its own publishes");
    assert_eq!(all.publish_on(0, b"x").unwrap_err().code(), ErrorCode::BadOption, "a pattern is not a subject");
    assert_eq!(eur.publish_on(1, b"x").unwrap_err().code(), ErrorCode::BadOption, "one channel");
}

#[test]
fn a_queue_group_shares_the_messages_and_others_get_each() {
    let server = NatsServer::start(&[]);
    let grouped = || NatsOptions { group: Some("workers".into()), ..NatsOptions::default() };
    let mut workers = [hub(&server.url("jobs"), grouped()), hub(&server.url("jobs"), grouped())];
    let mut audit = hub(&server.url("jobs"), NatsOptions::default());
    let mut boss = hub(&server.url("jobs"), NatsOptions { subscribe: false, ..NatsOptions::default() });
    for i in 0..100u32 {
        boss.publish_on(0, &i.to_le_bytes()).unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..100 {
        let (body, _) = next(audit.as_mut()).unwrap();
        seen.push(u32::from_le_bytes(body.try_into().unwrap()));
    }
    assert_eq!(seen, (0..100).collect::<Vec<_>>(), "a plain subscriber gets each, in order");
    let mut shared = Vec::new();
    let mut each = [0; 2];
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared.len() < 100 && Instant::now() < deadline {
        for (i, w) in workers.iter_mut().enumerate() {
            let mut out = Vec::new();
            while w.try_recv(&mut out).unwrap().is_some() {
                shared.push(u32::from_le_bytes(out[..].try_into().unwrap()));
                each[i] += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    shared.sort();
    assert_eq!(shared, (0..100).collect::<Vec<_>>(), "each message to one member of the group");
    assert!(each.iter().all(|&n| n > 0), "both members got some: {each:?}");
}

#[test]
fn requests_are_answered_failed_or_have_no_responders() {
    let server = NatsServer::start(&[]);
    let mut serving = hub(&server.url("calc"), NatsOptions { listen: true, ..NatsOptions::default() });
    let mut client = hub(&server.url("calc"), NatsOptions { subscribe: false, ..NatsOptions::default() });
    let requests = client.requests().unwrap();
    let a = requests.request(b"2+2").unwrap();
    let b = requests.request(b"1/0").unwrap();
    for expected in [(a, &b"2+2"[..]), (b, b"1/0")] {
        let (body, info) = next(serving.as_mut()).unwrap();
        assert_eq!((info.kind, &body[..]), (Kind::Request, expected.1));
        assert_eq!(serving.subject(info.subject).as_deref(), Some("calc"));
        let answered = if body == b"2+2" {
            serving.requests().unwrap().respond(info.request, true, b"4")
        } else {
            serving.requests().unwrap().respond(info.request, false, b"division by zero")
        };
        assert!(answered);
        assert!(!serving.requests().unwrap().respond(info.request, true, b"again"), "answered once");
    }
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (body, info) = next(client.as_mut()).unwrap();
        answers.push((info.request, info.kind, body));
    }
    answers.sort_by_key(|a| a.0);
    let failed = br#"{"code":"ERR_REMOTE","message":"division by zero"}"#.to_vec();
    assert_eq!(
        answers,
        [(a, Kind::Response, b"4".to_vec()), (b, Kind::Failed, failed)],
        "a failure as zerohop's Rpc says it"
    );

    let mut lonely = hub(&server.url("nobody.home"), NatsOptions { subscribe: false, ..NatsOptions::default() });
    let c = lonely.requests().unwrap().request(b"anyone?").unwrap();
    let (body, info) = next(lonely.as_mut()).unwrap();
    assert_eq!((info.request, info.kind), (c, Kind::Failed));
    assert!(String::from_utf8(body).unwrap().contains("no responders"));

    // A cancelled request's answer is dropped, and counted.
    let d = client.requests().unwrap().request(b"2+2").unwrap();
    assert!(client.requests().unwrap().cancel(d));
    let (_, info) = next(serving.as_mut()).unwrap();
    serving.requests().unwrap().respond(info.request, true, b"4");
    wait_for(|| detail(client.as_ref(), "strayAnswers") == 1.0, "the stray answer counted");
    assert!(next(client.as_mut()).is_none());
}

#[test]
fn a_server_restart_is_reported_and_the_hubs_come_back_subscribed() {
    let mut server = NatsServer::start(&[]);
    let fast = || NatsOptions {
        reconnect: zerohop_proto::lifecycle::Backoff { initial: Duration::from_millis(20), ..Default::default() },
        ..NatsOptions::default()
    };
    let mut sub = hub(&server.url("events"), fast());
    let mut publisher = hub(&server.url("events"), fast());
    sub.connection().unwrap().take_status_events();
    server.restart();
    wait_for(|| detail(sub.as_ref(), "reconnects") >= 1.0, "the loss noticed");
    wait_for(|| sub.connection().unwrap().status() == Status::Connected, "the subscriber back");
    wait_for(|| publisher.connection().unwrap().status() == Status::Connected, "the publisher back");
    let events: Vec<Status> = sub.connection().unwrap().take_status_events().iter().map(|e| e.status).collect();
    assert!(matches!(events[..], [Status::Reconnecting { .. }, .., Status::Connected]), "{events:?}");
    publisher.publish_on(0, b"after").unwrap();
    assert_eq!(next(sub.as_mut()).map(|m| m.0), Some(b"after".to_vec()), "subscribed again");
}

#[test]
fn a_hub_that_gave_up_refuses_to_publish_and_to_request() {
    let mut server = NatsServer::start(&[]);
    let once = NatsOptions {
        reconnect: zerohop_proto::lifecycle::Backoff {
            max_attempts: Some(1),
            initial: Duration::from_millis(10),
            ..Default::default()
        },
        ..NatsOptions::default()
    };
    let mut t = hub(&server.url("x"), once);
    drop(std::mem::replace(&mut server, NatsServer::start(&[])));
    wait_for(|| t.connection().unwrap().status() == Status::Disconnected, "given up");
    assert_eq!(t.publish_on(0, b"x").unwrap_err().code(), ErrorCode::ConnectionLost);
    assert_eq!(t.requests().unwrap().request(b"x").unwrap_err().code(), ErrorCode::ConnectionLost);
}

#[test]
fn a_reader_behind_a_full_ring_is_held_what_comes_within_its_pending_bytes() {
    let server = NatsServer::start(&[]);
    let mut slow = hub_with(
        &server.url("burst"),
        HubOptions { capacity: Some(16), ..HubOptions::default() }.with(NatsOptions::default()),
    );
    let mut fast = hub(&server.url("burst"), NatsOptions::default());
    for i in 0..1000u32 {
        fast.publish_on(0, &i.to_le_bytes()).unwrap();
    }
    for i in 0..1000u32 {
        let (body, _) = next(slow.as_mut()).unwrap_or_else(|| panic!("message {i}"));
        assert_eq!(body, i.to_le_bytes(), "in order, none lost");
    }
    assert_eq!(detail(slow.as_ref(), "slowConsumerDrops"), 0.0);
}

#[test]
fn a_reader_that_falls_behind_loses_what_comes_meanwhile_counted_and_told() {
    let server = NatsServer::start(&[]);
    let mut slow = hub_with(
        &server.url("flood"),
        HubOptions { capacity: Some(16), ..HubOptions::default() }
            .with(NatsOptions { receive_queue_bytes: 0, ..NatsOptions::default() }),
    );
    let mut fast = hub(&server.url("flood"), NatsOptions::default());
    for i in 0..1000u32 {
        fast.publish_on(0, &i.to_le_bytes()).unwrap();
    }
    wait_for(|| detail(slow.as_ref(), "slowConsumerDrops") >= 1000.0 - 16.0, "the overflow counted");
    let events = slow.connection().unwrap().take_status_events();
    let told: Vec<_> = events.iter().filter_map(|e| e.error.as_ref()).map(|e| e.code()).collect();
    assert_eq!(told, [ErrorCode::SlowConsumer], "once per episode");
    let mut got = Vec::new();
    while let Some(info) = slow.try_recv(&mut Vec::new()).unwrap() {
        got.push(info);
    }
    assert_eq!(got.len() as f64 + detail(slow.as_ref(), "slowConsumerDrops"), 1000.0, "each kept or counted");
}
