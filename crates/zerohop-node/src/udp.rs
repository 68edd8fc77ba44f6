//! `UdpHandle`: a [`zerohop::UdpTransport`] for JavaScript.
//!
//! Publishing enters Rust once per call (or once per packed buffer). Receiving does not
//! come through here: the transport's I/O thread writes messages into a private ring
//! with the shared-memory layout, which [`UdpHandle::ring`] hands to JavaScript as a
//! [`ShmHandle`], so the TypeScript receive path is the one `shm://` uses. The doorbell
//! is rung by the I/O thread itself, with no waiter thread between.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;
use zerohop::{Endpoint, ErrorCode, HubOptions, Role, UdpOptions, UdpTransport, UringMode};
use zerohop_shm::ring::table;

use crate::waiter::Doorbell;
use crate::{ShmHandle, closed, duration_ms, js_error, seq_from_js};

/// Options of [`UdpHandle::open`] (the TypeScript `HubOptions` that apply to UDP).
#[napi(object)]
#[derive(Default)]
pub struct UdpOpenOptions {
    /// `pubsub`, `publisher` or `subscriber`.
    pub role: Option<String>,
    /// Largest message (the receive ring's slot size).
    pub slot_size: Option<u32>,
    /// Receive ring slots.
    pub capacity: Option<u32>,
    pub peers: Option<Vec<String>>,
    pub flush_interval_ms: Option<f64>,
    pub batch: Option<u32>,
    pub max_datagram: Option<u32>,
    /// `auto`, `force` or `off`.
    pub io_uring: Option<String>,
    pub receive_threads: Option<u32>,
    pub pin_threads: Option<bool>,
    pub recv_buffer: Option<u32>,
    pub send_buffer: Option<u32>,
    pub busy_poll_us: Option<u32>,
    pub receive_timestamps: Option<bool>,
    pub multicast_interface: Option<String>,
    pub multicast_ttl: Option<u32>,
    pub multicast_loopback: Option<bool>,
}

fn bad_option(message: String) -> napi::Error {
    js_error(zerohop::Error::new(ErrorCode::BadOption, message))
}

fn hub_options(o: UdpOpenOptions) -> Result<HubOptions> {
    let d = UdpOptions::default();
    let role = match o.role.as_deref() {
        None | Some("pubsub") => Role::PubSub,
        Some("publisher") => Role::Publisher,
        Some("subscriber") => Role::Subscriber,
        Some(other) => return Err(bad_option(format!("unknown role '{other}'"))),
    };
    let io_uring = match o.io_uring.as_deref() {
        None | Some("auto") => UringMode::Auto,
        Some("force") => UringMode::Force,
        Some("off") => UringMode::Off,
        Some(other) => return Err(bad_option(format!("ioUring must be 'auto', 'force' or 'off', got '{other}'"))),
    };
    let multicast_interface = match o.multicast_interface {
        None => None,
        Some(s) => Some(s.parse().map_err(|_| bad_option(format!("multicastInterface '{s}' is not an IP address")))?),
    };
    Ok(HubOptions {
        role,
        slot_size: o.slot_size,
        capacity: o.capacity,
        udp: UdpOptions {
            peers: o.peers.unwrap_or_default(),
            flush_interval: o.flush_interval_ms.map(duration_ms).unwrap_or(d.flush_interval),
            batch: o.batch.map_or(d.batch, |b| b as usize),
            max_datagram: o.max_datagram.map_or(d.max_datagram, |b| b as usize),
            io_uring,
            receive_threads: o.receive_threads.map_or(d.receive_threads, |n| n as usize),
            pin_threads: o.pin_threads.unwrap_or(d.pin_threads),
            recv_buffer: o.recv_buffer.map_or(d.recv_buffer, |b| b as usize),
            send_buffer: o.send_buffer.map_or(d.send_buffer, |b| b as usize),
            busy_poll_us: o.busy_poll_us.unwrap_or(d.busy_poll_us),
            timestamps: o.receive_timestamps.unwrap_or(d.timestamps),
            multicast_interface,
            multicast_ttl: o.multicast_ttl.unwrap_or(d.multicast_ttl),
            multicast_loopback: o.multicast_loopback.unwrap_or(d.multicast_loopback),
        },
        ..HubOptions::default()
    })
}

/// Socket counters of a UDP hub (see `zerohop_udp::UdpMetrics`).
#[napi(object)]
pub struct UdpMetricsInfo {
    pub backend: String,
    pub io_uring_unavailable: Option<String>,
    pub messages_sent: f64,
    pub datagrams_sent: f64,
    pub bytes_sent: f64,
    pub send_batches: f64,
    pub send_dropped: f64,
    pub zerocopy_datagrams: f64,
    pub messages_received: f64,
    pub datagrams_received: f64,
    pub bytes_received: f64,
    pub recv_batches: f64,
    pub malformed: f64,
    pub lost: f64,
    pub late: f64,
    pub duplicates: f64,
    pub reassembly_failures: f64,
    pub recv_buffer: f64,
    pub send_buffer: f64,
    pub low_delay: bool,
    pub busy_poll_us: u32,
    pub reuse_port: bool,
    /// Whether the kernel timestamps received datagrams.
    pub timestamps: bool,
    pub multicast_group: Option<String>,
    pub receive_sockets: u32,
}

/// Byte offsets of the envelope before each message in a network transport's receive
/// ring (see `zerohop::udp::envelope`).
#[napi(object)]
pub struct EnvelopeLayout {
    pub len: u32,
    pub timestamp: u32,
    pub port: u32,
    pub family: u32,
    pub placement: u32,
    pub channel: u32,
    pub kind: u32,
    pub address: u32,
    pub peer: u32,
    pub spilled_len: u32,
    pub spill_key: u32,
    pub request: u32,
}

/// The envelope's layout, so TypeScript never hard-codes it.
#[napi]
pub fn envelope_layout() -> EnvelopeLayout {
    use zerohop::envelope;
    let u = |v: usize| v as u32;
    EnvelopeLayout {
        len: u(envelope::LEN),
        timestamp: u(envelope::TIMESTAMP),
        port: u(envelope::PORT),
        family: u(envelope::FAMILY),
        placement: u(envelope::PLACEMENT),
        channel: u(envelope::CHANNEL),
        kind: u(envelope::KIND),
        address: u(envelope::ADDRESS),
        peer: u(envelope::PEER),
        spilled_len: u(envelope::SPILLED_LEN),
        spill_key: u(envelope::SPILL_KEY),
        request: u(envelope::REQUEST),
    }
}

/// A UDP hub's socket(s) and I/O thread.
#[napi]
pub struct UdpHandle {
    transport: Option<UdpTransport>,
}

impl UdpHandle {
    fn udp(&self) -> Result<&UdpTransport> {
        self.transport.as_ref().ok_or_else(closed)
    }

    fn udp_mut(&mut self) -> Result<&mut UdpTransport> {
        self.transport.as_mut().ok_or_else(closed)
    }
}

#[napi]
impl UdpHandle {
    /// Binds `url` (`udp://host:port`, or a multicast group).
    #[napi(factory)]
    pub fn open(url: String, options: Option<UdpOpenOptions>) -> Result<UdpHandle> {
        let endpoint = Endpoint::parse(&url).map_err(js_error)?;
        let mut transport =
            UdpTransport::open(&endpoint, &hub_options(options.unwrap_or_default())?).map_err(js_error)?;
        // JavaScript reads the ring with a cursor of its own (claimed through `ring()`).
        transport.release_subscriber();
        Ok(UdpHandle { transport: Some(transport) })
    }

    /// The hot paths: the value `udpPublish(link, bytes)` and `udpPump(link)` take (see
    /// [`crate::fast`]).
    #[napi(ts_return_type = "unknown")]
    pub fn link<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let value = crate::fast::link_external(env, self.udp()?.link())?;
        // SAFETY: `value` was just created in this env.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), value) })
    }

    /// The receive ring, for reading in place.
    #[napi]
    pub fn ring(&self) -> Result<ShmHandle> {
        Ok(ShmHandle::from_segment(self.udp()?.segment().clone()))
    }

    /// The bound address as `host:port` (`[v6]:port`).
    #[napi]
    pub fn local_address(&self) -> Result<String> {
        Ok(self.udp()?.local_addr().to_string())
    }

    /// Queues `data.len() / size` messages of `size` bytes laid end to end.
    #[napi]
    pub fn publish_packed(&mut self, data: &[u8], size: u32) -> Result<u32> {
        let size = size as usize;
        if size == 0 || !data.len().is_multiple_of(size) {
            return Err(bad_option(format!("messageSize {size} does not divide {} bytes", data.len())));
        }
        self.udp_mut()?.publish_all(data.chunks_exact(size)).map(|n| n as u32).map_err(js_error)
    }

    /// Sends what is queued now.
    #[napi]
    pub fn flush(&self) -> Result<()> {
        self.udp()?.flush().map_err(js_error)
    }

    /// Replaces where published messages go.
    #[napi]
    pub fn set_peers(&self, peers: Vec<String>) -> Result<()> {
        self.udp()?.set_peers(&peers).map_err(js_error)
    }

    /// Installs the doorbell: `callback` runs on the JS thread after messages arrive
    /// while armed. Does not keep the event loop alive by itself.
    #[napi]
    pub fn set_doorbell(&mut self, callback: Function<u32, ()>) -> Result<()> {
        let tsfn: Doorbell =
            callback.build_threadsafe_function::<u32>().weak::<true>().max_queue_size::<1>().build()?;
        let tsfn = Arc::new(tsfn);
        self.udp()?.set_on_receive(Some(Arc::new(move || {
            // QueueFull means a ring is already pending: that one suffices.
            let _ = tsfn.call(0, ThreadsafeFunctionCallMode::NonBlocking);
        })));
        Ok(())
    }

    /// Rings the doorbell once the ring's tail passes `cursor` (at once if it has).
    /// `_spin_us` is accepted for symmetry with `ShmHandle.arm`: the I/O thread rings.
    #[napi]
    pub fn arm(&self, cursor: f64, _spin_us: f64) -> Result<()> {
        let udp = self.udp()?;
        let cursor = seq_from_js(cursor);
        udp.arm(|| table::tail(udp.segment()) > cursor);
        Ok(())
    }

    /// Cancels an `arm`.
    #[napi]
    pub fn disarm(&self) {
        if let Some(u) = &self.transport {
            u.disarm();
        }
    }

    /// The socket's counters.
    #[napi]
    pub fn metrics(&self) -> Result<UdpMetricsInfo> {
        let udp = self.udp()?;
        let m = udp.udp_metrics();
        let n = |v: u64| v as f64;
        Ok(UdpMetricsInfo {
            backend: m.backend.to_owned(),
            io_uring_unavailable: m.io_uring_unavailable,
            messages_sent: n(m.messages_sent),
            datagrams_sent: n(m.datagrams_sent),
            bytes_sent: n(m.bytes_sent),
            send_batches: n(m.send_batches),
            send_dropped: n(m.send_dropped),
            zerocopy_datagrams: n(m.zerocopy_datagrams),
            messages_received: n(m.messages_received),
            datagrams_received: n(m.datagrams_received),
            bytes_received: n(m.bytes_received),
            recv_batches: n(m.recv_batches),
            malformed: n(m.malformed),
            lost: n(m.lost),
            late: n(m.late),
            duplicates: n(m.duplicates),
            reassembly_failures: n(m.reassembly_failures),
            recv_buffer: n(m.granted.recv_buffer as u64),
            send_buffer: n(m.granted.send_buffer as u64),
            low_delay: m.granted.low_delay,
            busy_poll_us: m.granted.busy_poll_us,
            reuse_port: m.granted.reuse_port,
            timestamps: m.granted.timestamps,
            multicast_group: m.granted.multicast_group.map(|g| g.to_string()),
            receive_sockets: udp.receive_sockets() as u32,
        })
    }

    /// Sends what is queued, stops the I/O threads and closes the sockets. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        if let Some(mut t) = self.transport.take() {
            t.shutdown();
        }
    }
}
