//! `QuicHandle`: a [`zerohop::QuicTransport`] for JavaScript.
//!
//! Publishing enters Rust once per message. Receiving does not come through here:
//! messages land in a private ring with the shared-memory layout, handed to
//! JavaScript by [`QuicHandle::ring`] and read (and waited on) exactly like a `shm://`
//! segment; a message too large for a slot is fetched with [`QuicHandle::take_spilled`].
//! Status events reach JavaScript through a threadsafe function, one call per event.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use zerohop::quic::failure_code;
use zerohop::{Backpressure, Endpoint, ErrorCode, HubOptions, QuicOptions, QuicTransport, Role};
use zerohop_proto::lifecycle::{Backoff, Status};
use zerohop_quic::QuicNode;

use zerohop_shm::ring::table;

use crate::waiter::Doorbell;
use crate::{ShmHandle, closed, duration_ms, js_error, seq_from_js};

/// The reconnect schedule (`HubOptions.reconnect`).
#[napi(object)]
#[derive(Default)]
pub struct ReconnectOptions {
    pub initial_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub multiplier: Option<f64>,
    pub jitter: Option<f64>,
    /// Attempts before giving up (`undefined`: forever).
    pub max_attempts: Option<u32>,
}

/// Options of [`QuicHandle::open`] (the TypeScript `HubOptions` that apply to QUIC).
#[napi(object)]
#[derive(Default)]
pub struct QuicOpenOptions {
    pub role: Option<String>,
    pub slot_size: Option<u32>,
    pub capacity: Option<u32>,
    pub backpressure: Option<String>,
    pub publish_timeout_ms: Option<f64>,
    pub listen: Option<bool>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub dangerously_accept_any_server: Option<bool>,
    /// 0 turns keep-alives off.
    pub keep_alive_ms: Option<f64>,
    pub idle_timeout_ms: Option<f64>,
    pub reconnect: Option<ReconnectOptions>,
    pub channels: Option<u32>,
    pub send_queue_bytes: Option<f64>,
    pub datagrams: Option<bool>,
    pub max_message_size: Option<u32>,
    pub peer_linger_ms: Option<f64>,
}

fn bad_option(message: String) -> napi::Error {
    js_error(zerohop::Error::new(ErrorCode::BadOption, message))
}

fn hub_options(o: QuicOpenOptions) -> Result<HubOptions> {
    let d = QuicOptions::default();
    let role = match o.role.as_deref() {
        None | Some("pubsub") => Role::PubSub,
        Some("publisher") => Role::Publisher,
        Some("subscriber") => Role::Subscriber,
        Some(other) => return Err(bad_option(format!("unknown role '{other}'"))),
    };
    let backpressure = match o.backpressure.as_deref() {
        None | Some("block") => Backpressure::Block,
        Some("drop_new") => Backpressure::DropNew,
        Some("fail_fast") => Backpressure::FailFast,
        Some("drop_old") => Backpressure::DropOld, // refused by the transport, with why
        Some(other) => return Err(bad_option(format!("unknown backpressure '{other}'"))),
    };
    let r = o.reconnect.unwrap_or_default();
    let reconnect = Backoff {
        initial: r.initial_ms.map_or(d.reconnect.initial, duration_ms),
        max: r.max_ms.map_or(d.reconnect.max, duration_ms),
        multiplier: r.multiplier.unwrap_or(d.reconnect.multiplier),
        jitter: r.jitter.unwrap_or(d.reconnect.jitter),
        max_attempts: r.max_attempts,
    };
    let channels = o.channels.map_or(Ok(d.channels), |c| {
        u16::try_from(c).map_err(|_| bad_option(format!("channels must be 1..=65535, got {c}")))
    })?;
    let quic = QuicOptions {
        listen: o.listen.unwrap_or(false),
        cert: o.cert.map(Into::into),
        key: o.key.map(Into::into),
        ca: o.ca.map(Into::into),
        server_name: o.server_name,
        dangerously_accept_any_server: o.dangerously_accept_any_server.unwrap_or(false),
        keep_alive: match o.keep_alive_ms {
            Some(ms) if ms <= 0.0 => None,
            Some(ms) => Some(duration_ms(ms)),
            None => d.keep_alive,
        },
        idle_timeout: o.idle_timeout_ms.map_or(d.idle_timeout, duration_ms),
        reconnect,
        channels,
        send_queue_bytes: o.send_queue_bytes.map_or(d.send_queue_bytes, |b| b as usize),
        datagrams: o.datagrams.unwrap_or(false),
        max_message: o.max_message_size.map_or(d.max_message, |m| m as usize),
        peer_linger: o.peer_linger_ms.map_or(d.peer_linger, duration_ms),
    };
    Ok(HubOptions {
        role,
        backpressure,
        publish_timeout: o.publish_timeout_ms.map_or(Duration::from_secs(5), duration_ms),
        slot_size: o.slot_size,
        capacity: o.capacity,
        quic,
        ..HubOptions::default()
    })
}

/// A status change, as JavaScript gets it.
#[napi(object)]
pub struct QuicStatusEvent {
    /// `connecting`, `connected`, `reconnecting`, `disconnected` or `closed`.
    pub status: String,
    /// The peer it is about (a listening hub's peers; a connecting hub's server).
    pub peer: Option<String>,
    /// `reconnecting`: the attempt under way or scheduled, from 1.
    pub attempt: Option<u32>,
    /// Why, as a stable error code and a message.
    pub code: Option<String>,
    pub message: Option<String>,
}

fn status_name(s: Status) -> (&'static str, Option<u32>) {
    match s {
        Status::Connecting => ("connecting", None),
        Status::Connected => ("connected", None),
        Status::Reconnecting { attempt } => ("reconnecting", Some(attempt)),
        Status::Disconnected => ("disconnected", None),
        Status::Closed => ("closed", None),
    }
}

/// A QUIC hub's counters.
#[napi(object)]
pub struct QuicMetricsInfo {
    pub status: String,
    pub peers: u32,
    pub reconnects: f64,
    pub zero_rtt_connections: f64,
    pub last_zero_rtt: bool,
    pub handshake_failures: f64,
    pub protocol_violations: f64,
    pub slow_consumers: f64,
    pub dropped: f64,
    pub datagrams_sent: f64,
    pub datagrams_received: f64,
    pub datagrams_lost: f64,
    pub streams_opened: f64,
    pub streams_accepted: f64,
    pub unacked_bytes: f64,
    pub requests_pending: f64,
    pub answers_pending: f64,
    pub bytes_sent: f64,
    pub bytes_received: f64,
    pub packets_lost: f64,
    pub rtt_us: f64,
    pub cwnd: f64,
    pub mtu: u32,
}

type StatusCallback = ThreadsafeFunction<QuicStatusEvent, (), QuicStatusEvent, Status2, false, true>;
type Status2 = napi::Status;

/// Waits for peers to read what was published (`drain`), off the JavaScript thread.
pub struct DrainTask {
    node: Arc<QuicNode>,
    linger: Duration,
}

impl Task for DrainTask {
    type Output = bool;
    type JsValue = bool;

    fn compute(&mut self) -> Result<bool> {
        Ok(self.node.drain(self.linger))
    }

    fn resolve(&mut self, _env: Env, output: bool) -> Result<bool> {
        Ok(output)
    }
}

/// A QUIC hub's node.
#[napi]
pub struct QuicHandle {
    transport: Option<QuicTransport>,
}

impl QuicHandle {
    fn quic(&self) -> Result<&QuicTransport> {
        self.transport.as_ref().ok_or_else(closed)
    }
}

#[napi]
impl QuicHandle {
    /// Listens on or connects to `url` (`quic://host:port`).
    #[napi(factory)]
    pub fn open(url: String, options: Option<QuicOpenOptions>) -> Result<QuicHandle> {
        let endpoint = Endpoint::parse(&url).map_err(js_error)?;
        let mut transport =
            QuicTransport::open(&endpoint, &hub_options(options.unwrap_or_default())?).map_err(js_error)?;
        transport.release_subscriber();
        Ok(QuicHandle { transport: Some(transport) })
    }

    /// The hot paths: the value `quicPublish(link, bytes, channel)` and `quicPump(link)`
    /// take (see [`crate::fast`]).
    #[napi(ts_return_type = "unknown")]
    pub fn link<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let value = crate::fast::link_external(env, self.quic()?.link())?;
        // SAFETY: `value` was just created in this env.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), value) })
    }

    /// The receive ring, for reading in place.
    #[napi]
    pub fn ring(&self) -> Result<ShmHandle> {
        Ok(ShmHandle::from_segment(self.quic()?.segment().clone()))
    }

    /// The bound address as `host:port`.
    #[napi]
    pub fn local_address(&self) -> Result<String> {
        self.quic()?.local_addr().map(|a| a.to_string()).ok_or_else(closed)
    }

    /// Sends a request (connecting hubs); returns its key. The reply arrives in the ring
    /// with envelope kind 2 (or 3: failed) and that key.
    #[napi]
    pub fn request(&self, data: &[u8]) -> Result<f64> {
        self.quic()?.request(data).map(|k| k as f64).map_err(js_error)
    }

    /// Gives up on request `key`; false if it had ended.
    #[napi]
    pub fn cancel(&self, key: f64) -> bool {
        self.transport.as_ref().is_some_and(|q| q.cancel(key as u64))
    }

    /// Answers request `key` (received with envelope kind 1); false if it is gone.
    #[napi]
    pub fn respond(&self, key: f64, ok: bool, data: &[u8]) -> bool {
        self.transport.as_ref().is_some_and(|q| q.respond(key as u64, ok, data))
    }

    /// The bytes of a message too large for its slot (the envelope gives the key).
    #[napi]
    pub fn take_spilled(&self, key: f64) -> Result<Buffer> {
        let bytes = self.quic()?.take_spilled(key as u64).ok_or_else(|| {
            js_error(zerohop::Error::new(ErrorCode::InvalidState, "that large message was already taken"))
        })?;
        Ok(bytes.into())
    }

    /// Installs the doorbell: `callback` runs on the JS thread after messages arrive
    /// while armed (rung by the I/O thread that delivered them). Does not keep the event
    /// loop alive by itself.
    #[napi]
    pub fn set_doorbell(&mut self, callback: Function<u32, ()>) -> Result<()> {
        let tsfn: Doorbell =
            callback.build_threadsafe_function::<u32>().weak::<true>().max_queue_size::<1>().build()?;
        let tsfn = Arc::new(tsfn);
        self.quic()?.set_on_receive(Some(Arc::new(move || {
            // QueueFull means a ring is already pending: that one suffices.
            let _ = tsfn.call(0, ThreadsafeFunctionCallMode::NonBlocking);
        })));
        Ok(())
    }

    /// Rings the doorbell once the ring's tail passes `cursor` (at once if it has).
    /// `_spin_us` is accepted for symmetry with `ShmHandle.arm`: the I/O thread rings.
    #[napi]
    pub fn arm(&self, cursor: f64, _spin_us: f64) -> Result<()> {
        let q = self.quic()?;
        let cursor = seq_from_js(cursor);
        q.arm(|| table::tail(q.segment()) > cursor);
        Ok(())
    }

    /// Cancels an `arm`.
    #[napi]
    pub fn disarm(&self) {
        if let Some(q) = &self.transport {
            q.disarm();
        }
    }

    /// Calls `callback` with every status event from now on (and the ones so far).
    #[napi]
    pub fn on_status(&self, callback: Function<QuicStatusEvent, ()>) -> Result<()> {
        let tsfn: StatusCallback = callback.build_threadsafe_function().weak::<true>().build()?;
        let tsfn = Arc::new(tsfn);
        let q = self.quic()?;
        let send = move |e: &zerohop_quic::StatusEvent| {
            let (status, attempt) = status_name(e.status);
            let event = QuicStatusEvent {
                status: status.to_owned(),
                peer: e.peer.map(|p| p.to_string()),
                attempt,
                code: e.error.as_ref().map(|f| failure_code(f).as_str().to_owned()),
                message: e.error.as_ref().map(|f| f.message.clone()),
            };
            let _ = tsfn.call(event, ThreadsafeFunctionCallMode::NonBlocking);
        };
        // Events from before the listener existed first, then the live ones.
        for e in q.take_status_events() {
            send(&e);
        }
        q.set_status_listener(Some(Arc::new(send)));
        Ok(())
    }

    /// The status now.
    #[napi]
    pub fn status(&self) -> String {
        self.transport.as_ref().map_or("closed", |q| status_name(q.status()).0).to_owned()
    }

    /// Counters of the node and its connections.
    #[napi]
    pub fn metrics(&self) -> Result<QuicMetricsInfo> {
        let q = self.quic()?;
        let m = q.quic_metrics();
        let n = |v: u64| v as f64;
        Ok(QuicMetricsInfo {
            status: status_name(q.status()).0.to_owned(),
            peers: m.peers,
            reconnects: n(m.reconnects),
            zero_rtt_connections: n(m.zero_rtt_connections),
            last_zero_rtt: m.last_zero_rtt,
            handshake_failures: n(m.handshake_failures),
            protocol_violations: n(m.protocol_violations),
            slow_consumers: n(m.slow_consumers),
            dropped: n(m.dropped),
            datagrams_sent: n(m.datagrams_sent),
            datagrams_received: n(m.datagrams_received),
            datagrams_lost: n(m.datagrams_lost),
            streams_opened: n(m.streams_opened),
            streams_accepted: n(m.streams_accepted),
            unacked_bytes: n(m.unacked_bytes),
            requests_pending: n(m.requests_pending),
            answers_pending: n(m.answers_pending),
            bytes_sent: n(m.bytes_sent),
            bytes_received: n(m.bytes_received),
            packets_lost: n(m.packets_lost),
            rtt_us: m.rtt.as_secs_f64() * 1e6,
            cwnd: n(m.cwnd),
            mtu: u32::from(m.mtu),
        })
    }

    /// Resolves true once every peer has read what was published, or false after `linger_ms`.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn drain(&self, linger_ms: f64) -> Result<AsyncTask<DrainTask>> {
        Ok(AsyncTask::new(DrainTask { node: self.quic()?.node(), linger: duration_ms(linger_ms) }))
    }

    /// Closes every connection and the socket. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        if let Some(t) = self.transport.take() {
            t.set_status_listener(None);
            t.set_on_receive(None);
            t.close();
        }
    }
}
