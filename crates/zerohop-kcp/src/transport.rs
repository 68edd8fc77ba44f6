//! `open`: a `kcp://` hub on the records engine, or a multicast group's.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use zerohop_net::address::resolve;
use zerohop_net::driver::Driver;
use zerohop_net::ring::{ReceiveRing, RingOptions};
use zerohop_net::transport::{DEFAULT_SPIN, NetTransport, Parts, Protocol, Reader};
use zerohop_proto::kcp::{KcpConfig, Mode};
use zerohop_stream::{Config, ReliableOptions, StreamProtocol};
use zerohop_transport::chaos::Injects;
use zerohop_transport::{
    Backpressure, Delivery, Endpoint, Error, ErrorCode, HubOptions, Result, Role, Target, Transport, TransportKind,
    Value,
};

use crate::group::{GroupConfig, GroupEngine};
use crate::options::KcpOptions;
use crate::wire::{KcpWire, KcpWireConfig};

/// Opens `kcp://host:port`: listens on it (`listen: true`) or connects to it; or a
/// multicast group (`kcp://239.x.y.z:port`), as its sender or a member.
pub fn open(endpoint: &Endpoint, mut options: HubOptions) -> Result<Box<dyn Transport>> {
    let group = match endpoint.target() {
        Target::Host { host, .. } => host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_multicast()),
        _ => false,
    };
    if group {
        return Ok(Box::new(open_group(endpoint, &mut options)?));
    }
    Ok(Box::new(open_kcp(endpoint, &mut options)?))
}

/// The faults `?chaos=` injects into KCP: into every datagram; a conversation has
/// no connection of its own to drop.
const INJECTS: Injects = Injects { datagrams: true, disconnects: false };
const WHY: &str = "a conversation is not a connection: its datagrams are what chaos can lose";

/// [`open`], typed (for tests and tools that want the protocol's own calls).
pub fn open_kcp(endpoint: &Endpoint, options: &mut HubOptions) -> Result<NetTransport<StreamProtocol<KcpWire>>> {
    let chaos = options.take_chaos("kcp", INJECTS, WHY)?;
    let k: KcpOptions = options.take_specific("kcp")?;
    let settings = zerohop_stream::settings(options, "kcp")?;
    let Target::Host { host, port } = endpoint.target() else {
        return Err(Error::new(ErrorCode::BadUrl, "kcp:// needs host:port"));
    };
    let listen = k.reliable.listen;
    if !listen && *port == 0 {
        return Err(Error::new(ErrorCode::BadUrl, "cannot connect to port 0; listen: true to accept peers"));
    }
    let addr = resolve(host, *port, None)?;
    if addr.ip().is_multicast() {
        return Err(Error::new(ErrorCode::BadUrl, "a multicast group is not a conversation: open it with open_group"));
    }
    let bind = match (listen, addr) {
        (true, a) => a,
        (false, SocketAddr::V4(_)) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        (false, SocketAddr::V6(_)) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let config = KcpWireConfig {
        kcp: k.kcp,
        server: (!listen).then_some(addr),
        idle_timeout: k.idle_timeout,
        max_peers: k.max_peers,
        chaos,
    };
    let wire = KcpWire::new(bind, config).map_err(|e| Error::io(&format!("kcp://{addr}"), e))?;
    zerohop_stream::start(TransportKind::Kcp, options, settings, Config { options: k.reliable, tls: None }, wire)
}

/// A group hub's protocol: the sender publishes, a member only receives.
pub struct GroupProtocol {
    driver: Arc<Driver<GroupEngine>>,
    local: Option<SocketAddr>,
    max_message: usize,
}

impl Protocol for GroupProtocol {
    fn kind(&self) -> TransportKind {
        TransportKind::Kcp
    }

    fn max_message_size(&self) -> usize {
        self.max_message
    }

    fn publish(&self, channel: u16, message: &[u8]) -> Result<Delivery> {
        if message.len() > self.max_message {
            return Err(Error::too_large("message", message.len(), self.max_message));
        }
        if channel != 0 {
            return Err(Error::bad_option("a multicast group has one channel, 0"));
        }
        self.driver.with(|e| {
            if e.closing {
                return Err(Error::closed());
            }
            e.publish(message);
            Ok(Delivery::Accepted)
        })?
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        self.driver.with(|e| e.details()).unwrap_or_default()
    }

    /// The sender stays to repair what members ask for, until nobody asked for a while.
    fn linger(&self, linger: Duration) -> bool {
        self.driver.wait_until(linger, GroupEngine::quiet, |e| e.closing)
    }

    fn close(&self) {
        self.driver.shutdown(|e| e.closing = true);
    }
}

impl Drop for GroupProtocol {
    fn drop(&mut self) {
        Protocol::close(self);
    }
}

/// Opens a multicast group: its sender (`role: 'publisher'`) or a member (`'subscriber'`).
pub fn open_group(endpoint: &Endpoint, options: &mut HubOptions) -> Result<NetTransport<GroupProtocol>> {
    options.take_chaos(
        "kcp",
        Injects { datagrams: false, disconnects: false },
        "a multicast group takes no faults: drop its datagrams with nftables in a network namespace",
    )?;
    let k: KcpOptions = options.take_specific("kcp")?;
    let sender = match options.role {
        Role::Publisher => true,
        Role::Subscriber => false,
        _ => {
            return Err(Error::bad_option(
                "a multicast group has one sender: open it with role 'publisher' (the sender) or 'subscriber' (a member)",
            ));
        }
    };
    // What only conversations have does not apply to a group: refused rather than ignored.
    let d = KcpOptions::default();
    let r = &k.reliable;
    let dr = ReliableOptions::default();
    let kcp_only = k.mode != Mode::default()
        || k.kcp != (KcpConfig { mtu: k.kcp.mtu, ..d.kcp })
        || k.idle_timeout != d.idle_timeout
        || k.max_peers != d.max_peers
        || r.listen
        || r.relay
        || r.channels != dr.channels
        || r.peer_linger != dr.peer_linger
        || r.connect_timeout != dr.connect_timeout
        || r.heartbeat != dr.heartbeat
        || r.reconnect != dr.reconnect
        || r.group.is_some();
    if kcp_only {
        return Err(Error::bad_option(
            "a multicast group takes mtu, maxMessageSize, sendQueueBytes and sendQueueMessages (the sender's repair \
             window) and receiveQueueBytes; the other kcp:// options are a conversation's",
        ));
    }
    let settings = options.settings(
        "kcp",
        DEFAULT_SPIN,
        Backpressure::DropOld,
        &[Backpressure::DropOld],
        "a multicast group never waits for a member: the sender's repair window lets its oldest go ('drop_old')",
    )?;
    let Target::Host { host, port } = endpoint.target() else { unreachable!("a group has a host") };
    if *port == 0 {
        return Err(Error::new(ErrorCode::BadUrl, "a multicast group needs a port"));
    }
    let group = resolve(host, *port, None)?;
    let config = GroupConfig {
        group,
        sender,
        mtu: k.kcp.mtu,
        max_message: r.max_message,
        window_bytes: r.send_queue_bytes.max(1),
        window_messages: r.send_queue_messages.max(1),
    };
    let ring = Arc::new(ReceiveRing::new(
        RingOptions::for_messages(options.slot_size, options.capacity, r.max_message, r.receive_queue_bytes),
        false,
    )?);
    let engine = GroupEngine::new(config, ring.clone(), zerohop_net::session_id() as u32)
        .map_err(|e| Error::io(&format!("kcp://{group}"), e))?;
    let local = engine.local_addr();
    let driver = Arc::new(Driver::start("zerohop-kcp-group", engine, || {})?);
    let protocol = Arc::new(GroupProtocol { driver: driver.clone(), local, max_message: r.max_message });
    let reader: Arc<dyn Reader> = driver;
    // (Status events: a member says when it fell behind.)
    NetTransport::new(Parts { protocol, reader, ring, settings, connections: true })
}
