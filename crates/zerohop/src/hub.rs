//! [`Hub`]: publish and receive byte messages over the transport a URL names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zerohop_transport::status::Status;
use zerohop_transport::{
    Batching, Connection, Delivery, Endpoint, Error, ErrorCode, ForwardCounts, HubOptions, Link, Loans, MessageInfo,
    Metrics, Options, Peers, ReadInPlace, Requests, Result, RingPlace, Settings, Transport,
};

use crate::transports;

/// A hub: publish to and receive from everyone else on the same endpoint.
///
/// ```
/// use zerohop::{Hub, HubOptions};
///
/// let name = format!("shm://doc-hub-{}", std::process::id());
/// let mut a = Hub::open(&name, HubOptions::default()).unwrap();
/// let mut b = Hub::open(&name, HubOptions::default()).unwrap();
/// a.publish(b"hello").unwrap();
/// let mut msg = Vec::new();
/// assert!(b.recv(&mut msg, Some(std::time::Duration::from_secs(1))).unwrap().is_some());
/// assert_eq!(msg, b"hello");
/// ```
pub struct Hub {
    endpoint: Endpoint,
    transport: Box<dyn Transport>,
}

impl core::fmt::Debug for Hub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hub").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Hub {
    /// Opens a hub on `url` (see [`zerohop_transport::endpoint`] for the forms). A URL's
    /// query parameters are options by name (`udp://h:1?batch=64`); one the transport
    /// does not know is `ERR_BAD_URL`.
    pub fn open(url: &str, mut options: HubOptions) -> Result<Hub> {
        let endpoint = Endpoint::parse(url)?;
        options.add_named(Options::from_query(endpoint.params()))?;
        let open = transports::find(endpoint.kind()).ok_or_else(|| unsupported(endpoint.kind().scheme()))?;
        let transport = open(&endpoint, options)?;
        Ok(Hub { endpoint, transport })
    }

    /// [`open`](Self::open) with every option by name (as the Node binding passes them).
    pub fn open_named(url: &str, options: Options) -> Result<Hub> {
        Hub::open(url, HubOptions::from_named(options)?)
    }

    /// The parsed endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn scheme(&self) -> &'static str {
        self.endpoint.kind().scheme()
    }

    /// Largest message in bytes.
    pub fn max_message_size(&self) -> usize {
        self.transport.max_message_size()
    }

    /// Publishes one message on channel 0.
    pub fn publish(&mut self, payload: &[u8]) -> Result<Delivery> {
        self.transport.publish_on(0, payload)
    }

    /// Publishes one message on `channel` (transports with one channel refuse others).
    pub fn publish_on(&mut self, channel: u16, payload: &[u8]) -> Result<Delivery> {
        self.transport.publish_on(channel, payload)
    }

    /// The next message into `out`, if one is waiting, and where it came from.
    pub fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<Option<MessageInfo>> {
        self.transport.try_recv(out)
    }

    /// Waits up to `timeout` (forever with `None`) for the next message.
    pub fn recv(&mut self, out: &mut Vec<u8>, timeout: Option<Duration>) -> Result<Option<MessageInfo>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(info) = self.transport.try_recv(out)? {
                return Ok(Some(info));
            }
            let remaining = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) => Some(r),
                    None => return Ok(None),
                },
                None => None,
            };
            self.transport.wait_readable(remaining)?;
        }
    }

    /// Counters.
    pub fn metrics(&self) -> Metrics {
        self.transport.metrics()
    }

    /// The options every hub has, as the transport resolved them.
    pub fn settings(&self) -> Settings {
        self.transport.settings()
    }

    /// The bound address (network transports).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.transport.local_addr()
    }

    /// The status now: of the connection, for transports that have one; otherwise
    /// connected until closed.
    pub fn status(&self) -> Status {
        self.transport.connection().map_or(Status::Connected, Connection::status)
    }

    /// Peers to set (`ERR_UNSUPPORTED_TRANSPORT` where the transport has none).
    pub fn peers(&self) -> Result<&dyn Peers> {
        self.transport.peers().ok_or_else(|| Error::unsupported(self.scheme(), "peers to set"))
    }

    /// Batches to flush (`ERR_UNSUPPORTED_TRANSPORT` where the transport has none).
    pub fn batching(&self) -> Result<&dyn Batching> {
        self.transport.batching().ok_or_else(|| Error::unsupported(self.scheme(), "batches to flush"))
    }

    /// Connection status and its events.
    pub fn connection(&self) -> Result<&dyn Connection> {
        self.transport.connection().ok_or_else(|| Error::unsupported(self.scheme(), "connections"))
    }

    /// Requests with answers.
    pub fn requests(&self) -> Result<&dyn Requests> {
        self.transport.requests().ok_or_else(|| Error::unsupported(self.scheme(), "requests"))
    }

    /// The subject numbered `id` in a received message's `MessageInfo::subject`
    /// (`nats://`), while the hub still knows it.
    pub fn subject(&self, id: u32) -> Option<String> {
        self.transport.subject(id)
    }

    /// This hub is a side of a bridge (see [`Transport::set_bridge_side`]); before
    /// [`link`](Self::link).
    pub fn set_bridge_side(&mut self) {
        self.transport.set_bridge_side();
    }

    /// From now on, delivers what it receives straight into `to` on the transport's own
    /// thread (see [`Transport::forward_to`]; `ERR_UNSUPPORTED_TRANSPORT` where it cannot).
    pub fn forward_to(&self, to: Arc<dyn Link>, counts: Arc<ForwardCounts>) -> Result<()> {
        self.transport.forward_to(to, counts)
    }

    /// The receive ring, for a reader with a cursor of its own.
    pub fn read_in_place(&self) -> Result<Arc<dyn ReadInPlace>> {
        self.transport.read_in_place().ok_or_else(|| Error::unsupported(self.scheme(), "receive ring to read"))
    }

    /// The per-message calls as a handle other threads may share.
    pub fn link(&self) -> Result<Arc<dyn Link>> {
        self.transport.link().ok_or_else(|| Error::unsupported(self.scheme(), "shareable link"))
    }

    /// Writing messages in place.
    pub fn loans(&mut self) -> Result<&mut dyn Loans> {
        let scheme = self.scheme();
        self.transport.loans().ok_or_else(|| Error::unsupported(scheme, "loans (write in place)"))
    }

    /// Stops receiving through [`try_recv`](Self::try_recv): another reader reads the
    /// receive ring ([`read_in_place`](Self::read_in_place)) from this one's place,
    /// which it returns (see [`Transport::detach_reader`]).
    pub fn detach_reader(&mut self) -> Option<RingPlace> {
        self.transport.detach_reader()
    }

    /// Waits up to `linger` for what this hub published to reach its receivers (over
    /// QUIC: to be read by their applications); true if it did. The hub stays open.
    pub fn linger(&mut self, linger: Duration) -> bool {
        self.transport.linger(linger)
    }

    /// Releases sockets, threads and segments now. Idempotent; dropping does it too.
    pub fn close(&mut self) {
        self.transport.close();
    }
}

/// The error for a scheme that parses but is not built into this version.
pub fn unsupported(scheme: &str) -> Error {
    Error::new(
        ErrorCode::UnsupportedTransport,
        format!(
            "the {scheme}:// transport is not available in this version of zerohop ({} are)",
            transports::available()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_transport::{Role, TransportKind};

    fn name(tag: &str) -> String {
        format!("shm://hub-test-{tag}-{}", std::process::id())
    }

    #[test]
    fn every_scheme_has_its_transport() {
        for kind in TransportKind::ALL {
            assert!(crate::transports::find(kind).is_some(), "{kind:?}");
        }
        assert_eq!(crate::transports::available(), "shm://, udp://, quic://, tcp://, uds://, kcp:// and nats://");
    }

    #[test]
    fn roles_and_metrics() {
        let url = name("roles");
        let mut p = Hub::open(&url, HubOptions { role: Role::Publisher, ..Default::default() }).unwrap();
        let mut s = Hub::open(&url, HubOptions { role: Role::Subscriber, ..Default::default() }).unwrap();
        let mut out = Vec::new();
        assert_eq!(p.try_recv(&mut out).unwrap_err().code(), ErrorCode::InvalidState);
        assert_eq!(s.publish(b"x").unwrap_err().code(), ErrorCode::InvalidState);
        p.publish(b"abc").unwrap();
        assert!(s.recv(&mut out, Some(Duration::from_secs(1))).unwrap().is_some());
        assert!(s.recv(&mut out, Some(Duration::from_millis(5))).unwrap().is_none());
        let (pm, sm) = (p.metrics(), s.metrics());
        assert_eq!((pm.published, pm.published_bytes), (1, 3));
        assert_eq!((sm.received, sm.received_bytes, sm.lapped), (1, 3, 0));
        assert_eq!(pm.transport, TransportKind::Shm);
    }

    #[test]
    fn layout_mismatch_and_oversize() {
        let url = name("layout");
        let mut a = Hub::open(&url, HubOptions { slot_size: Some(16), ..Default::default() }).unwrap();
        let err = Hub::open(&url, HubOptions { slot_size: Some(32), ..Default::default() }).unwrap_err();
        assert_eq!(err.code(), ErrorCode::LayoutMismatch);
        // Longer than a slot (and a pool, here none): the side path.
        assert_eq!(a.max_message_size(), 16 << 20);
        let mut r = Hub::open(&url, HubOptions::default()).unwrap();
        a.publish(&[7; 17]).unwrap();
        let mut out = Vec::new();
        assert!(r.recv(&mut out, Some(Duration::from_secs(5))).unwrap().is_some());
        assert_eq!(out, [7; 17]);
        let mut c = Hub::open(&format!("{url}?maxMessageSize=16"), HubOptions::default()).unwrap();
        assert_eq!(c.publish(&[0; 17]).unwrap_err().code(), ErrorCode::MessageTooLarge);
        assert_eq!(c.max_message_size(), 16);
    }

    #[test]
    fn url_parameters_are_options_and_unknown_ones_are_bad_urls() {
        let url = format!("{}?maxSubscribers=3", name("params"));
        let h = Hub::open(&url, HubOptions::default()).unwrap();
        drop(h);
        let err = Hub::open(&format!("{}?spin=1", name("params2")), HubOptions::default()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadUrl);
        assert!(err.message().contains("spin is not an option of shm:// hubs"), "{}", err.message());
    }

    #[test]
    fn capabilities_a_transport_lacks_are_unsupported() {
        let mut h = Hub::open(&name("caps"), HubOptions::default()).unwrap();
        assert_eq!(h.peers().err().unwrap().code(), ErrorCode::UnsupportedTransport);
        assert_eq!(h.requests().err().unwrap().code(), ErrorCode::UnsupportedTransport);
        assert_eq!(h.status(), Status::Connected);
        assert!(h.loans().is_ok());
    }
}
