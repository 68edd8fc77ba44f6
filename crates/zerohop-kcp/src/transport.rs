//! `open`: a `kcp://` hub on the records engine.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use zerohop_net::address::resolve;
use zerohop_net::transport::NetTransport;
use zerohop_stream::{Config, StreamProtocol};
use zerohop_transport::{Endpoint, Error, ErrorCode, HubOptions, Result, Target, Transport, TransportKind};

use crate::options::KcpOptions;
use crate::wire::{KcpWire, KcpWireConfig};

/// Opens `kcp://host:port`: listens on it (`listen: true`) or connects to it.
pub fn open(endpoint: &Endpoint, mut options: HubOptions) -> Result<Box<dyn Transport>> {
    Ok(Box::new(open_kcp(endpoint, &mut options)?))
}

/// [`open`], typed (for tests and tools that want the protocol's own calls).
pub fn open_kcp(endpoint: &Endpoint, options: &mut HubOptions) -> Result<NetTransport<StreamProtocol<KcpWire>>> {
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
        return Err(Error::new(ErrorCode::BadUrl, "kcp:// to a multicast group is not supported yet"));
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
    };
    let wire = KcpWire::new(bind, config).map_err(|e| Error::io(&format!("kcp://{addr}"), e))?;
    zerohop_stream::start(TransportKind::Kcp, options, settings, Config { options: k.reliable, tls: None }, wire)
}
