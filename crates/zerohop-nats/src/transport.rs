//! [`NatsProtocol`]: a `nats://` hub as the network-transport core sees it, and [`open`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerohop_net::address::resolve;
use zerohop_net::driver::{Driver, Guard};
use zerohop_net::ring::{ReceiveRing, RingOptions};
use zerohop_net::session_id;
use zerohop_net::transport::{DEFAULT_SPIN, NetTransport, Parts, Protocol, Reader};
use zerohop_proto::nats::valid_subject;
use zerohop_stream::{Address, SocketConfig, SocketWire, TlsContext};
use zerohop_transport::options::Role;
use zerohop_transport::{
    Backpressure, Batching, Delivery, Endpoint, Error, ErrorCode, ForwardCounts, HubOptions, Link, Requests, Result,
    Target, Transport, TransportKind, Value,
};

use crate::engine::{Engine, ROOM_POLL};
use crate::options::NatsOptions;

/// See the module docs.
pub struct NatsProtocol {
    driver: Arc<Driver<Engine>>,
    max_message: usize,
    backpressure: Backpressure,
    publish_timeout: Duration,
    /// The URL's subject takes publishes (it has no wildcard).
    publishable: bool,
    subject: String,
}

impl NatsProtocol {
    fn engine(&self) -> Result<Guard<'_, Engine>> {
        let g = self.driver.lock()?;
        if g.as_ref().is_none_or(|e| e.closing) {
            return Err(Error::closed());
        }
        Ok(g)
    }

    /// Waits, as the hub's `backpressure` says, until `len` more bytes may be kept for
    /// the server: the engine then, or `None` if the message is dropped (`counted` as
    /// such).
    fn room<'a>(&'a self, mut g: Guard<'a, Engine>, len: usize, counted: bool) -> Result<Option<Guard<'a, Engine>>> {
        let e = g.as_mut().expect("checked by engine()");
        if e.has_room(len) {
            return Ok(Some(g));
        }
        match self.backpressure {
            Backpressure::FailFast => {
                Err(Error::new(ErrorCode::Backpressure, "the bytes kept for the NATS server reached sendQueueBytes"))
            }
            Backpressure::DropNew | Backpressure::DropOld => {
                if counted {
                    e.count_dropped(len);
                }
                Ok(None)
            }
            Backpressure::Block => {
                e.flush();
                let deadline = Instant::now() + self.publish_timeout;
                loop {
                    let ready = g.as_ref().is_none_or(|e| e.closing || e.has_room(len));
                    if ready {
                        break;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::new(
                            ErrorCode::Timeout,
                            "the NATS server did not take what was published in time (sendQueueBytes full)",
                        ));
                    }
                    g = self.driver.wait(g, left.min(ROOM_POLL));
                }
                if g.as_ref().is_none_or(|e| e.closing) {
                    return Err(Error::closed());
                }
                Ok(Some(g))
            }
        }
    }

    /// Publishes `payload` on the hub's subject, with its expiry if it has one (`ttlMs`).
    fn publish_at(&self, channel: u16, payload: &[u8], expiry_ns: Option<u64>) -> Result<Delivery> {
        if channel != 0 {
            return Err(Error::bad_option(format!(
                "channel {channel}: a nats:// hub has one channel (0), its subject"
            )));
        }
        if !self.publishable {
            return Err(Error::bad_option(format!(
                "'{}' has wildcards: a hub publishes on one subject (open nats://…/subject to publish)",
                self.subject
            )));
        }
        self.check_size("message", payload.len())?;
        let Some(mut g) = self.room(self.engine()?, payload.len(), true)? else { return Ok(Delivery::Dropped) };
        let e = g.as_mut().expect("checked by room()");
        match expiry_ns {
            None => e.publish(payload)?,
            Some(at) => e.publish_expiring(payload, at)?,
        }
        self.driver.after(g);
        Ok(Delivery::Accepted)
    }

    fn check_size(&self, what: &str, len: usize) -> Result<()> {
        if len > self.max_message {
            return Err(Error::too_large(what, len, self.max_message));
        }
        Ok(())
    }
}

impl Protocol for NatsProtocol {
    fn kind(&self) -> TransportKind {
        TransportKind::Nats
    }

    fn max_message_size(&self) -> usize {
        self.max_message
    }

    fn publish(&self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        self.publish_at(channel, payload, None)
    }

    fn publish_expiring(&self, channel: u16, payload: &[u8], expiry_ns: u64) -> Result<Delivery> {
        self.publish_at(channel, payload, Some(expiry_ns))
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }

    fn has_room(&self, _channel: u16, len: usize) -> bool {
        self.driver.with(|e| e.has_room(len)).unwrap_or(true)
    }

    /// Woken as the I/O thread writes (each write is a change the driver tells of).
    fn wait_room(&self, _channel: u16, len: usize, timeout: Duration) -> bool {
        self.driver.wait_until(timeout, |e| e.has_room(len), |e| e.closing)
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        let Ok((c, (pending, requests, answers, subjects), (server_id, max_payload, servers))) =
            self.driver.with(|e| (e.counters(), e.gauges(), e.server()))
        else {
            return Vec::new();
        };
        let n = |v: u64| Value::Number(v as f64);
        vec![
            ("reconnects", n(c.reconnects)),
            ("slowConsumerDrops", n(c.slow_consumer_drops)),
            ("dropped", n(c.dropped)),
            ("droppedBytes", n(c.dropped_bytes)),
            ("serverErrors", n(c.server_errors)),
            ("protocolViolations", n(c.protocol_violations)),
            ("strayAnswers", n(c.stray_answers)),
            ("ownReturned", n(c.own_returned)),
            ("unansweredForgotten", n(c.unanswered_forgotten)),
            ("bytesSent", n(c.bytes_sent)),
            ("bytesReceived", n(c.bytes_received)),
            ("pendingBytes", n(pending as u64)),
            ("requestsPending", n(requests as u64)),
            ("answersPending", n(answers as u64)),
            ("subjects", n(subjects as u64)),
            ("serverId", Value::Text(server_id)),
            ("serverMaxPayload", n(max_payload as u64)),
            ("knownServers", n(servers as u64)),
        ]
    }

    fn linger(&self, linger: Duration) -> bool {
        let _ = self.driver.with(Engine::flush);
        self.driver.wait_until(linger, Engine::drained, |e| e.closing)
    }

    fn waits_open(&self) -> bool {
        true
    }

    fn wait_open(&self) -> Result<()> {
        let patience = self.driver.with(|e| e.connect_timeout())? + Duration::from_secs(1);
        self.driver.wait_until(patience, |e| e.first.is_some(), |e| e.closing);
        match self.driver.with(|e| e.first.clone())? {
            Some(r) => r,
            None => Err(Error::new(ErrorCode::Timeout, "the NATS server did not answer within connectTimeoutMs")),
        }
    }

    fn close(&self) {
        self.driver.shutdown(|e| {
            if !e.closing {
                e.close();
            }
        });
    }

    fn requests(&self) -> Option<&dyn Requests> {
        Some(self)
    }

    fn batching(&self) -> Option<&dyn Batching> {
        Some(self)
    }

    fn subject(&self, id: u32) -> Option<String> {
        self.driver.with(|e| e.subject_name(id)).ok().flatten()
    }

    fn forward_to(&self, to: Arc<dyn Link>, counts: Arc<ForwardCounts>) -> Result<()> {
        self.driver.with(|e| e.forward_to(to, counts))
    }
}

impl Batching for NatsProtocol {
    fn flush(&self) -> Result<()> {
        self.driver.with(Engine::flush)
    }

    fn flushes_at_end_of_turn(&self) -> bool {
        true
    }

    fn set_caller_flushes(&self) {
        let _ = self.driver.with(Engine::flush_by_caller);
    }
}

impl Requests for NatsProtocol {
    fn request(&self, body: &[u8]) -> Result<u64> {
        self.check_size("request", body.len())?;
        if !self.publishable {
            return Err(Error::bad_option(format!("'{}' has wildcards: a request goes to one subject", self.subject)));
        }
        // (A request refused for want of room is the caller's error, not a dropped message.)
        let Some(mut g) = self.room(self.engine()?, body.len(), false)? else {
            return Err(Error::new(ErrorCode::Backpressure, "no room to keep the request for the NATS server"));
        };
        let key = g.as_mut().expect("checked by room()").request(body);
        self.driver.after(g);
        key
    }

    fn cancel(&self, key: u64) -> bool {
        self.driver.with(|e| e.cancel(key)).unwrap_or(false)
    }

    fn respond(&self, key: u64, ok: bool, body: &[u8]) -> bool {
        let Ok(mut g) = self.engine() else { return false };
        let done = g.as_mut().expect("checked by engine()").respond(key, ok, body);
        self.driver.after(g);
        done
    }
}

impl Drop for NatsProtocol {
    fn drop(&mut self) {
        Protocol::close(self);
    }
}

/// Opens `nats://host:port/subject`: connects to the server, subscribes to the subject
/// (unless the hub only publishes), and reconnects when the connection is lost.
pub fn open(endpoint: &Endpoint, mut options: HubOptions) -> Result<Box<dyn Transport>> {
    Ok(Box::new(open_nats(endpoint, &mut options)?))
}

/// [`open`], typed.
pub fn open_nats(endpoint: &Endpoint, options: &mut HubOptions) -> Result<NetTransport<NatsProtocol>> {
    let Target::Subject { host, port, subject } = endpoint.target() else {
        return Err(Error::new(ErrorCode::BadUrl, "nats:// needs host[:port]/subject"));
    };
    let n: NatsOptions = options.take_specific("nats")?;
    let settings = options.settings(
        "nats",
        DEFAULT_SPIN,
        Backpressure::Block,
        &[Backpressure::Block, Backpressure::DropNew, Backpressure::FailFast],
        "what waits for the NATS server is kept in order: 'block' (the default), 'drop_new' or 'fail_fast'",
    )?;
    if n.group.is_some() && (settings.role == Role::Publisher || !n.subscribe) {
        return Err(Error::bad_option("group shares what a group receives: this hub subscribes to nothing"));
    }
    if *port == 0 {
        return Err(Error::new(ErrorCode::BadUrl, "cannot connect to port 0"));
    }
    let addr = resolve(host, *port, None)?;
    let tls = match &n.tls {
        Some(t) => {
            let setup = t.setup(false, host, "nats")?;
            Some(TlsContext::new(&setup).map_err(|e| Error::bad_option(format!("tls: {e}")))?)
        }
        None => None,
    };
    let wire = SocketWire::new(SocketConfig {
        addr: Address::Tcp(addr),
        listen: false,
        socket_mode: 0o600,
        allow_uids: None,
        chaos: None,
    })
    .map_err(|e| Error::io(&format!("nats://{addr}"), e))?;
    let ring_options = RingOptions::for_messages(options.slot_size, options.capacity, n.max_message, None);
    let ring = Arc::new(ReceiveRing::new(ring_options, true)?);
    let max_message = n.max_message;
    let engine = Engine::start(n, tls, subject, settings.role.receives(), wire, ring.clone(), session_id())
        .map_err(|e| Error::new(ErrorCode::BadUrl, e.to_string()))?;
    let driver = Arc::new(Driver::start("zerohop-nats-io", engine, || {})?);
    let protocol = Arc::new(NatsProtocol {
        driver: driver.clone(),
        max_message,
        backpressure: settings.backpressure,
        publish_timeout: settings.publish_timeout,
        publishable: valid_subject(subject, false),
        subject: subject.clone(),
    });
    let reader: Arc<dyn Reader> = driver;
    NetTransport::new(Parts { protocol, reader, ring, settings, connections: true })
}
