//! Turning the host of a URL and the peers of an option into socket addresses.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use zerohop_transport::{Error, ErrorCode, Result};

/// Resolves `host:port` (an IP literal or a name) to one address, preferring the family
/// of `like` when given.
///
/// ```
/// let a = zerohop_net::address::resolve("127.0.0.1", 9, None).unwrap();
/// assert_eq!(a.to_string(), "127.0.0.1:9");
/// ```
pub fn resolve(host: &str, port: u16, like: Option<&SocketAddr>) -> Result<SocketAddr> {
    let bad = |why: String| Error::new(ErrorCode::BadUrl, why);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (host, port).to_socket_addrs().map_err(|e| bad(format!("cannot resolve {host}: {e}")))?.collect(),
    };
    let pick = like.and_then(|l| addrs.iter().find(|a| a.is_ipv4() == l.is_ipv4())).or(addrs.first());
    pick.copied().ok_or_else(|| bad(format!("{host} resolves to no address")))
}

/// Parses a peer written `host:port` or `[v6]:port` (`ERR_BAD_OPTION` if it is not one).
///
/// ```
/// let a = zerohop_net::address::parse_peer("[::1]:7000", None).unwrap();
/// assert_eq!(a.port(), 7000);
/// assert!(zerohop_net::address::parse_peer("nope", None).is_err());
/// ```
pub fn parse_peer(peer: &str, like: Option<&SocketAddr>) -> Result<SocketAddr> {
    let bad = || Error::new(ErrorCode::BadOption, format!("peer '{peer}' is not host:port"));
    let (host, port) = peer.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    resolve(host, port, like).map_err(|e| Error::new(ErrorCode::BadOption, e.message().to_owned()))
}
