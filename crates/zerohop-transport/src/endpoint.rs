//! Endpoint URLs: the scheme picks the transport.
//!
//! | URL                        | transport                                   |
//! |----------------------------|---------------------------------------------|
//! | `shm://name`               | shared memory segment `name`                |
//! | `name`                     | smart selection: a bare local name → shm    |
//! | `udp://host:port`          | batched UDP (multicast for 224.0.0.0/4, ff00::/8) |
//! | `kcp://host:port`          | KCP reliable UDP                            |
//! | `quic://host:port`         | QUIC                                        |
//! | `tcp://host:port`          | framed TCP                                  |
//! | `uds:///absolute/path`     | framed Unix domain socket                   |
//! | `uds://@name`              | the same, Linux abstract name (no file)     |
//!
//! Any URL may carry `?key=value&…` parameters (e.g. `chaos=loss:0.1&seed=7`). Parsing
//! is pure and total: every input is either an [`Endpoint`] or an error that says what
//! is wrong with it.
//!
//! ```
//! use zerohop_transport::endpoint::{Endpoint, Target, TransportKind};
//!
//! let e = Endpoint::parse("udp://[::1]:9000?batch=32").unwrap();
//! assert_eq!(e.kind(), TransportKind::Udp);
//! assert_eq!(e.param("batch"), Some("32"));
//! let Target::Host { host, port } = e.target() else { unreachable!() };
//! assert_eq!((host.as_str(), *port), ("::1", 9000));
//! assert_eq!(Endpoint::parse("market-data").unwrap().kind(), TransportKind::Shm);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, ErrorCode, Result};

/// The transports a URL can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Shm,
    Udp,
    Kcp,
    Quic,
    Tcp,
    Uds,
    Nats,
}

impl TransportKind {
    /// Every transport.
    pub const ALL: [TransportKind; 7] = [
        TransportKind::Shm,
        TransportKind::Udp,
        TransportKind::Kcp,
        TransportKind::Quic,
        TransportKind::Tcp,
        TransportKind::Uds,
        TransportKind::Nats,
    ];

    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            TransportKind::Shm => "shm",
            TransportKind::Udp => "udp",
            TransportKind::Kcp => "kcp",
            TransportKind::Quic => "quic",
            TransportKind::Tcp => "tcp",
            TransportKind::Uds => "uds",
            TransportKind::Nats => "nats",
        }
    }

    fn from_scheme(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.scheme() == s)
    }
}

/// What the URL points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A shared-memory segment name.
    Name(String),
    /// A host (IP literal or DNS name, IPv6 without brackets) and port.
    Host { host: String, port: u16 },
    /// A filesystem path (Unix sockets).
    Path(String),
    /// A server (host and port, as [`Target::Host`]) and a subject on it (NATS).
    Subject { host: String, port: u16, subject: String },
}

/// A parsed endpoint URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    kind: TransportKind,
    target: Target,
    params: Vec<(String, String)>,
    selected_automatically: bool,
}

fn bad(url: &str, why: impl core::fmt::Display) -> Error {
    Error::new(ErrorCode::BadUrl, format!("'{url}': {why}"))
}

impl Endpoint {
    /// Parses an endpoint URL (see the module docs for the forms).
    pub fn parse(url: &str) -> Result<Endpoint> {
        if url.is_empty() {
            return Err(bad(url, "empty endpoint"));
        }
        if url.len() > 4096 {
            return Err(bad(&url[..32], "longer than 4096 bytes"));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(url, "contains whitespace or control characters"));
        }
        let (main, query) = match url.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (url, None),
        };
        let params = parse_query(url, query)?;
        let Some((scheme, rest)) = main.split_once("://") else {
            if main.contains(':') || main.contains('/') {
                return Err(bad(url, "expected scheme://… (shm, udp, kcp, quic, tcp, uds, nats) or a bare shm name"));
            }
            zerohop_shm::segment::validate_name(main).map_err(|e| bad(url, e))?;
            return Ok(Endpoint {
                kind: TransportKind::Shm,
                target: Target::Name(main.to_owned()),
                params,
                selected_automatically: true,
            });
        };
        let kind = TransportKind::from_scheme(&scheme.to_ascii_lowercase()).ok_or_else(|| {
            bad(url, format!("unknown scheme '{scheme}'; expected one of shm, udp, kcp, quic, tcp, uds, nats"))
        })?;
        let target = match kind {
            TransportKind::Shm => {
                zerohop_shm::segment::validate_name(rest).map_err(|e| bad(url, e))?;
                Target::Name(rest.to_owned())
            }
            TransportKind::Uds => {
                // `@name`: a Linux abstract socket (no file), same length limit.
                let is_abstract = rest.len() > 1 && rest.starts_with('@');
                if !rest.starts_with('/') && !is_abstract {
                    return Err(bad(
                        url,
                        "a Unix socket path must be absolute (uds:///path/to/socket) or an abstract @name",
                    ));
                }
                if rest.len() > 107 {
                    return Err(bad(url, format!("socket path is {} bytes; the limit is 107", rest.len())));
                }
                if rest.ends_with('/') {
                    return Err(bad(url, "socket path names a directory"));
                }
                Target::Path(rest.to_owned())
            }
            TransportKind::Nats => {
                let Some((server, subject)) = rest.split_once('/') else {
                    return Err(bad(url, "nats:// needs a subject: nats://host:4222/subject"));
                };
                if !zerohop_proto::nats::valid_subject(subject, true) {
                    return Err(bad(
                        url,
                        format!(
                            "'{subject}' is not a NATS subject (tokens separated by '.', '*' or a last '>' as wildcards)"
                        ),
                    ));
                }
                let with_port = if has_port(server) { server.to_owned() } else { format!("{server}:{NATS_PORT}") };
                let (host, port) = parse_host_port(url, &with_port)?;
                Target::Subject { host, port, subject: subject.to_owned() }
            }
            _ => {
                let (host, port) = parse_host_port(url, rest)?;
                Target::Host { host, port }
            }
        };
        Ok(Endpoint { kind, target, params, selected_automatically: false })
    }

    /// The transport.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// What the URL points at.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Query parameters in order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The last value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// True when the transport was chosen by smart selection (a bare name).
    pub fn selected_automatically(&self) -> bool {
        self.selected_automatically
    }

    /// Whether a UDP host is a multicast group.
    pub fn is_multicast(&self) -> bool {
        match &self.target {
            Target::Host { host, .. } => host.parse::<IpAddr>().map(|ip| ip.is_multicast()).unwrap_or(false),
            _ => false,
        }
    }
}

/// The port of a `nats://` URL that names none: the NATS client port.
pub const NATS_PORT: u16 = 4222;

/// Whether `server` (`host`, `host:port`, `[v6]` or `[v6]:port`) names a port.
fn has_port(server: &str) -> bool {
    match server.strip_prefix('[') {
        Some(inner) => inner.split_once(']').is_some_and(|(_, after)| after.starts_with(':')),
        None => server.contains(':'),
    }
}

fn parse_query(url: &str, query: Option<&str>) -> Result<Vec<(String, String)>> {
    let Some(query) = query else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k.is_empty() {
            return Err(bad(url, format!("query parameter '{pair}' has no name")));
        }
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
            return Err(bad(url, format!("query parameter name '{k}' has characters outside [A-Za-z0-9._-]")));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

fn parse_host_port(url: &str, rest: &str) -> Result<(String, u16)> {
    if rest.is_empty() {
        return Err(bad(url, "missing host:port"));
    }
    if rest.contains('/') {
        return Err(bad(url, "unexpected path after host:port"));
    }
    if rest.contains('@') {
        return Err(bad(url, "credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or_else(|| bad(url, "unclosed '[' in IPv6 address"))?;
        h.parse::<Ipv6Addr>().map_err(|_| bad(url, format!("'{h}' is not an IPv6 address")))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad(url, "missing :port after the IPv6 address"))?;
        (h.to_owned(), port)
    } else {
        let (h, port) = rest.rsplit_once(':').ok_or_else(|| bad(url, "missing :port"))?;
        if h.contains(':') {
            return Err(bad(url, "IPv6 addresses go in brackets: [::1]:9000"));
        }
        validate_host(url, h)?;
        (h.to_owned(), port)
    };
    if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad(url, format!("port '{port}' is not a number")));
    }
    let port: u16 = port.parse().map_err(|_| bad(url, format!("port {port} is out of range (0-65535)")))?;
    Ok((host, port))
}

fn validate_host(url: &str, host: &str) -> Result<()> {
    if host.is_empty() {
        return Err(bad(url, "missing host"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad(url, format!("'{host}' is not a valid IPv4 address")));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad(url, format!("'{host}' is not a valid host name")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_scheme_parses() {
        let cases = [
            ("shm://market-data", TransportKind::Shm),
            ("udp://127.0.0.1:9000", TransportKind::Udp),
            ("udp://239.1.2.3:9000", TransportKind::Udp),
            ("kcp://example.com:4000", TransportKind::Kcp),
            ("quic://0.0.0.0:7000", TransportKind::Quic),
            ("tcp://[::1]:80", TransportKind::Tcp),
            ("uds:///tmp/zerohop.sock", TransportKind::Uds),
            ("QUIC://localhost:1", TransportKind::Quic),
            ("nats://127.0.0.1/prices.>", TransportKind::Nats),
        ];
        for (url, kind) in cases {
            let e = Endpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(e.kind(), kind, "{url}");
            assert!(!e.selected_automatically());
        }
        assert!(Endpoint::parse("udp://239.1.2.3:9000").unwrap().is_multicast());
        assert!(!Endpoint::parse("udp://10.1.2.3:9000").unwrap().is_multicast());
        assert_eq!(Endpoint::parse("uds:///tmp/a").unwrap().target(), &Target::Path("/tmp/a".into()));
        assert_eq!(Endpoint::parse("uds://@app").unwrap().target(), &Target::Path("@app".into()));
        let nats =
            |host: &str, port, subject: &str| Target::Subject { host: host.into(), port, subject: subject.into() };
        assert_eq!(Endpoint::parse("nats://h/a.*.c").unwrap().target(), &nats("h", NATS_PORT, "a.*.c"));
        assert_eq!(Endpoint::parse("nats://[::1]:5000/x?group=w").unwrap().target(), &nats("::1", 5000, "x"));
        assert_eq!(Endpoint::parse("nats://[::1]/x").unwrap().target(), &nats("::1", NATS_PORT, "x"));
        for bad in ["nats://h", "nats://h/", "nats://h/a..b", "nats://h/a.>.b", "nats://h/a b", "nats://h:x/a"] {
            assert_eq!(Endpoint::parse(bad).unwrap_err().code(), ErrorCode::BadUrl, "{bad}");
        }
    }

    #[test]
    fn bare_names_select_shm() {
        let e = Endpoint::parse("market-data").unwrap();
        assert_eq!(e.kind(), TransportKind::Shm);
        assert!(e.selected_automatically());
        assert_eq!(e.target(), &Target::Name("market-data".into()));
    }

    #[test]
    fn parameters() {
        let e = Endpoint::parse("udp://127.0.0.1:9000?chaos=loss:0.1,reorder:0.05&seed=7&flag").unwrap();
        assert_eq!(e.param("chaos"), Some("loss:0.1,reorder:0.05"));
        assert_eq!(e.param("seed"), Some("7"));
        assert_eq!(e.param("flag"), Some(""));
        assert_eq!(e.param("missing"), None);
    }

    #[test]
    fn malformed_urls_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("foo://x:1", "unknown scheme 'foo'"),
            ("udp://127.0.0.1", "missing :port"),
            ("udp://127.0.0.1:99999", "out of range"),
            ("udp://127.0.0.1:abc", "not a number"),
            ("udp://::1:9000", "brackets"),
            ("udp://[::1:9000", "unclosed"),
            ("udp://[zz]:1", "not an IPv6"),
            ("udp://300.1.1.1:5", "not a valid IPv4"),
            ("tcp://-bad-.com:5", "not a valid host"),
            ("tcp://h:5/path", "unexpected path"),
            ("tcp://user@h:5", "credentials"),
            ("shm://a/b", "contains '/'"),
            ("shm://", "1 to 200"),
            ("uds://relative.sock", "absolute"),
            ("shm://x?=v", "no name"),
            ("has space", "whitespace"),
            ("a:b", "expected scheme"),
        ];
        for (url, fragment) in cases {
            let err = Endpoint::parse(url).expect_err(url);
            assert_eq!(err.code(), ErrorCode::BadUrl, "{url}");
            assert!(err.message().contains(fragment), "{url}: {} lacks {fragment}", err.message());
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = Endpoint::parse(&s);
        }

        #[test]
        fn host_port_roundtrip(a in any::<[u8; 4]>(), port in any::<u16>(), v6 in any::<[u16; 8]>()) {
            let v4 = Ipv4Addr::from(a);
            let e = Endpoint::parse(&format!("tcp://{v4}:{port}")).unwrap();
            prop_assert_eq!(e.target(), &Target::Host { host: v4.to_string(), port });
            let v6 = Ipv6Addr::from(v6);
            let e = Endpoint::parse(&format!("quic://[{v6}]:{port}")).unwrap();
            prop_assert_eq!(e.target(), &Target::Host { host: v6.to_string(), port });
        }
    }
}
