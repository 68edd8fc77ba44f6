//! Binding a UDP socket with the options a low-latency transport wants.
//!
//! Every option is applied best-effort: the kernel may cap buffers at `rmem_max`, refuse
//! `SO_BUSY_POLL` without `CAP_NET_ADMIN`, and so on. [`Granted`] reports what actually
//! took effect, so metrics can show it instead of the request.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// What to ask of the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// `SO_RCVBUF` request in bytes (the kernel doubles it, capped at `rmem_max`).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` request in bytes.
    pub send_buffer: usize,
    /// Mark packets low-delay (`IP_TOS` / `IPV6_TCLASS` 0x10).
    pub low_delay: bool,
    /// `SO_BUSY_POLL` in microseconds (0 = leave alone); needs privileges to raise.
    pub busy_poll_us: u32,
    /// `SO_REUSEPORT`, so that several sockets (one per receive thread) share a port.
    pub reuse_port: bool,
    /// Non-blocking (the batch calls use `MSG_DONTWAIT` either way).
    pub nonblocking: bool,
    /// Join a multicast group (the bind address's port receives it).
    pub multicast: Option<Multicast>,
    /// Ask the kernel for a receive timestamp on every datagram (`SO_TIMESTAMPNS`).
    pub timestamps: bool,
}

/// Multicast membership and sending options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Multicast {
    /// The group (224.0.0.0/4 or ff00::/8).
    pub group: IpAddr,
    /// IPv4: the interface address to join and send on (`0.0.0.0` lets the kernel pick).
    pub interface_v4: Ipv4Addr,
    /// IPv6: the interface index (0 lets the kernel pick).
    pub interface_v6: u32,
    /// Hops a sent datagram may travel (1 = this link).
    pub ttl: u32,
    /// Whether this host's own members receive what it sends.
    pub loopback: bool,
}

impl Multicast {
    /// Membership of `group` on the default interface, TTL 1, loopback on.
    pub fn group(group: IpAddr) -> Self {
        Self { group, interface_v4: Ipv4Addr::UNSPECIFIED, interface_v6: 0, ttl: 1, loopback: true }
    }
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            recv_buffer: 4 << 20,
            send_buffer: 4 << 20,
            low_delay: true,
            busy_poll_us: 0,
            reuse_port: false,
            nonblocking: true,
            multicast: None,
            timestamps: false,
        }
    }
}

/// What the kernel granted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Granted {
    pub recv_buffer: usize,
    pub send_buffer: usize,
    pub low_delay: bool,
    pub busy_poll_us: u32,
    pub reuse_port: bool,
    /// The multicast group joined.
    pub multicast_group: Option<IpAddr>,
    /// Receive timestamps are on.
    pub timestamps: bool,
}

/// Binds a UDP socket to `addr` with `options`; returns it with what was granted.
/// Fails only if the socket cannot be created or bound.
pub fn bind(addr: SocketAddr, options: &SocketOptions) -> io::Result<(UdpSocket, Granted)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let mut granted = Granted::default();
    if options.reuse_port {
        granted.reuse_port = socket.set_reuse_port(true).is_ok();
    }
    // Buffers: ask, then read back what the kernel made of it.
    let _ = socket.set_recv_buffer_size(options.recv_buffer);
    let _ = socket.set_send_buffer_size(options.send_buffer);
    granted.recv_buffer = socket.recv_buffer_size().unwrap_or(0);
    granted.send_buffer = socket.send_buffer_size().unwrap_or(0);
    if options.low_delay {
        const IPTOS_LOWDELAY: u32 = 0x10;
        granted.low_delay = match addr {
            SocketAddr::V4(_) => socket.set_tos_v4(IPTOS_LOWDELAY).is_ok(),
            SocketAddr::V6(_) => socket.set_tclass_v6(IPTOS_LOWDELAY).is_ok(),
        };
    }
    if options.timestamps {
        granted.timestamps = set_int(&socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1);
    }
    // Each datagram after a drop says how many the kernel dropped for want of receive
    // buffer (`SO_RXQ_OVFL`): the loss the receiver's own metrics then show. Nothing is
    // attached while nothing was dropped.
    set_int(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
    if options.busy_poll_us > 0 && socket.set_busy_poll(options.busy_poll_us).is_ok() {
        granted.busy_poll_us = socket.busy_poll().unwrap_or(0);
    }
    if let Some(m) = &options.multicast {
        if !m.group.is_multicast() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a multicast group", m.group)));
        }
        // Several members on one host share the group's port.
        socket.set_reuse_address(true)?;
        granted.reuse_port = socket.set_reuse_port(true).is_ok();
    }
    socket.set_nonblocking(options.nonblocking)?;
    socket.bind(&addr.into())?;
    if let Some(m) = &options.multicast {
        match m.group {
            IpAddr::V4(group) => {
                socket.join_multicast_v4(&group, &m.interface_v4)?;
                socket.set_multicast_ttl_v4(m.ttl)?;
                socket.set_multicast_loop_v4(m.loopback)?;
                if !m.interface_v4.is_unspecified() {
                    socket.set_multicast_if_v4(&m.interface_v4)?;
                }
            }
            IpAddr::V6(group) => {
                socket.join_multicast_v6(&group, m.interface_v6)?;
                socket.set_multicast_hops_v6(m.ttl)?;
                socket.set_multicast_loop_v6(m.loopback)?;
                if m.interface_v6 != 0 {
                    socket.set_multicast_if_v6(m.interface_v6)?;
                }
            }
        }
        granted.multicast_group = Some(m.group);
    }
    Ok((socket.into(), granted))
}

/// `setsockopt` of an `int` option; whether the kernel took it.
fn set_int(socket: &Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&value`, valid here.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// The largest UDP payload: an IPv4 packet's 65,535 bytes less its headers.
pub const MAX_DATAGRAM: usize = 65_507;

/// The largest datagram that reaches every one of `peers` without IP fragmentation: the
/// MTU of the route to each (as the kernel's routing table says: 65,536 on loopback,
/// 9,000 with jumbo frames) less the IP and UDP headers, at most [`MAX_DATAGRAM`]. A
/// route the kernel cannot tell (none yet) counts as an Ethernet MTU's; no peers, as
/// loopback's (nothing is sent until there are some).
pub fn path_datagram(peers: &[SocketAddr]) -> usize {
    peers.iter().map(|&p| route_datagram(p)).min().unwrap_or(MAX_DATAGRAM)
}

fn route_datagram(peer: SocketAddr) -> usize {
    let (headers, level, name) = match peer {
        SocketAddr::V4(_) => (20 + 8, libc::IPPROTO_IP, libc::IP_MTU),
        SocketAddr::V6(_) => (40 + 8, libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mtu = || -> io::Result<usize> {
        // A socket connected to the peer (no packet is sent) knows its route's MTU.
        let s = Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP))?;
        s.connect(&peer.into())?;
        let mut mtu: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `mtu`, an int that outlives the call.
        let r = unsafe {
            libc::getsockopt(std::os::fd::AsRawFd::as_raw_fd(&s), level, name, (&raw mut mtu).cast(), &mut len)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(mtu.max(0) as usize)
    };
    match mtu() {
        Ok(mtu) if mtu > headers + 64 => (mtu - headers).min(MAX_DATAGRAM),
        _ => 1500 - headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datagram_size_follows_the_route() {
        let lo: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(path_datagram(&[lo]), MAX_DATAGRAM, "loopback's MTU is 65536");
        assert_eq!(path_datagram(&[]), MAX_DATAGRAM);
        // A real interface's route (this machine's eth0 has an MTU of 1400: 1372), or
        // none (an Ethernet MTU's 1472 is assumed): never loopback's size.
        let far: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let d = path_datagram(&[far]);
        assert!((500..=9000).contains(&d), "{d}");
        assert_eq!(path_datagram(&[lo, far]), d, "the smallest of the peers'");
    }

    #[test]
    fn binds_and_reports_what_was_granted() {
        let (s, g) = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        assert_ne!(s.local_addr().unwrap().port(), 0);
        // Linux doubles the request and caps it at rmem_max; either way it is not tiny.
        assert!(g.recv_buffer >= 64 << 10, "{g:?}");
        assert!(g.send_buffer >= 64 << 10, "{g:?}");
        assert!(g.low_delay);
    }

    #[test]
    fn reuse_port_lets_two_sockets_share_a_port() {
        let opts = SocketOptions { reuse_port: true, ..SocketOptions::default() };
        let (a, ga) = bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        assert!(ga.reuse_port);
        let (b, _) = bind(a.local_addr().unwrap(), &opts).unwrap();
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        // Without it, the same port is refused.
        let plain = SocketOptions::default();
        assert!(bind(a.local_addr().unwrap(), &plain).is_err());
    }

    #[test]
    fn ipv6_loopback_when_available() {
        match bind("[::1]:0".parse().unwrap(), &SocketOptions::default()) {
            Ok((s, g)) => {
                assert!(s.local_addr().unwrap().is_ipv6());
                assert!(g.low_delay);
            }
            Err(e) => eprintln!("no IPv6 loopback here ({e}); skipped"),
        }
    }
}
