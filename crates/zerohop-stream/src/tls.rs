//! TLS between a connection's socket and its records (`tcp://` with `tls` options).
//!
//! rustls sits in the middle with its own buffers: what is read from the socket goes
//! in, and the plaintext it yields goes on to the record reader as on a plain
//! connection; what the record writer plans goes in as plaintext, and the TLS records
//! it makes go out to the socket. The handshake needs nothing of the engine: our hello
//! waits in rustls until the handshake is done, and the peer's hello is the first
//! plaintext that comes out.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use zerohop_tls::{TlsError, TlsSetup};

/// Plaintext (and TLS records) rustls may hold per connection before it pushes back.
const BUFFER_LIMIT: usize = 1 << 20;

/// Why a connection ends for TLS error `e`: a certificate problem (permanent: trying
/// again cannot help) with its own code, or a protocol error.
pub fn tls_lost(e: &rustls::Error) -> crate::wire::Lost {
    match zerohop_tls::HandshakeFailure::of_error(e) {
        Some(h) => crate::wire::Lost { permanent: true, ..crate::wire::Lost::new(h.code(), format!("TLS: {e}")) },
        None => crate::wire::Lost::new(zerohop_transport::ErrorCode::Protocol, format!("TLS: {e}")),
    }
}

/// What every TLS connection of a hub is made from.
#[derive(Clone, Debug)]
pub enum TlsContext {
    Server(Arc<rustls::ServerConfig>),
    Client(Arc<rustls::ClientConfig>, ServerName<'static>),
}

impl TlsContext {
    /// The rustls configuration for `setup` (certificates read, CAs loaded).
    pub fn new(setup: &TlsSetup) -> Result<TlsContext, TlsError> {
        Ok(match setup {
            TlsSetup::Listen { identity, client_ca } => {
                TlsContext::Server(Arc::new(zerohop_tls::server_config(identity, client_ca.as_deref())?))
            }
            TlsSetup::Connect { trust, identity, server_name } => {
                let name = ServerName::try_from(server_name.clone())
                    .map_err(|e| TlsError::Config(format!("server name {server_name:?}: {e}")))?;
                TlsContext::Client(Arc::new(zerohop_tls::client_config(trust, identity.as_ref())?), name)
            }
        })
    }

    /// A session for one new connection.
    pub fn session(&self) -> Result<TlsSession, rustls::Error> {
        let mut conn: rustls::Connection = match self {
            TlsContext::Server(c) => rustls::ServerConnection::new(c.clone())?.into(),
            TlsContext::Client(c, name) => rustls::ClientConnection::new(c.clone(), name.clone())?.into(),
        };
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsSession(conn))
    }
}

/// One connection's TLS.
pub struct TlsSession(rustls::Connection);

impl TlsSession {
    /// Takes `raw` bytes read from the socket; `each` gets the plaintext they carry, a
    /// piece at a time (through `plain`, a scratch buffer).
    pub fn received(&mut self, raw: &[u8], plain: &mut [u8], mut each: impl FnMut(&[u8])) -> Result<(), rustls::Error> {
        let mut raw = raw;
        while !raw.is_empty() {
            let taken = self.0.read_tls(&mut raw).map_err(|e| rustls::Error::General(e.to_string()))?;
            if taken == 0 {
                // It takes bytes whenever it has room, and it has room once what it
                // decrypted was read (below): never expected, but never a busy loop.
                return Err(rustls::Error::General("TLS took no bytes".into()));
            }
            let state = self.0.process_new_packets()?;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                let n = self.0.reader().read(plain).map_err(|e| rustls::Error::General(e.to_string()))?;
                if n == 0 {
                    break;
                }
                each(&plain[..n]);
                left = left.saturating_sub(n);
            }
        }
        Ok(())
    }

    /// Offers plaintext to send: how much of `parts` rustls took (it holds a bounded
    /// amount until [`flush`](Self::flush) writes it out).
    pub fn send(&mut self, parts: &[&[u8]]) -> usize {
        let slices: [io::IoSlice<'_>; 3] =
            std::array::from_fn(|i| io::IoSlice::new(parts.get(i).copied().unwrap_or(&[])));
        self.0.writer().write_vectored(&slices[..parts.len().min(3)]).unwrap_or(0)
    }

    /// Writes the TLS records rustls holds to `out` (the connection): the bytes written,
    /// and whether everything went (`false`: it is full, wait until it is writable).
    pub fn flush(&mut self, out: &mut dyn Write) -> io::Result<(usize, bool)> {
        let mut sent = 0;
        while self.0.wants_write() {
            match self.0.write_tls(out) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((sent, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((sent, true))
    }

    /// Whether records wait to be written ([`flush`](Self::flush)).
    pub fn wants_write(&self) -> bool {
        self.0.wants_write()
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.0.is_handshaking()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use zerohop_tls::{Identity, Trust};

    /// Moves what `from` holds through the socket pair into `to`; the plaintext `to` got.
    fn carry(from: &mut TlsSession, a: &UnixStream, to: &mut TlsSession, b: &mut UnixStream) -> Vec<u8> {
        from.flush(&mut &*a).unwrap();
        let mut raw = vec![0u8; 1 << 20];
        let mut plain = vec![0u8; 4096];
        let mut got = Vec::new();
        b.set_nonblocking(true).unwrap();
        loop {
            match std::io::Read::read(b, &mut raw) {
                Ok(0) => break,
                Ok(n) => to.received(&raw[..n], &mut plain, |p| got.extend_from_slice(p)).unwrap(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn a_handshake_then_plaintext_both_ways_and_garbage_is_an_error() {
        let server =
            TlsSetup::Listen { identity: Identity::SelfSigned { names: vec!["localhost".into()] }, client_ca: None };
        let client = TlsSetup::Connect {
            trust: Trust::DangerouslyAcceptAnyServer,
            identity: None,
            server_name: "localhost".into(),
        };
        let (mut s, mut c) = (
            TlsContext::new(&server).unwrap().session().unwrap(),
            TlsContext::new(&client).unwrap().session().unwrap(),
        );
        let (mut a, mut b) = UnixStream::pair().unwrap();
        // Plaintext offered before the handshake waits in rustls until it is done.
        assert_eq!(c.send(&[b"hello ", b"server"]), 12);
        assert!(c.is_handshaking());
        let mut from_client = Vec::new();
        let mut from_server = Vec::new();
        for _ in 0..4 {
            from_client.extend(carry(&mut c, &a, &mut s, &mut b));
            from_server.extend(carry(&mut s, &b, &mut c, &mut a));
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(from_client, b"hello server");
        assert_eq!(s.send(&[b"hi"]), 2);
        from_server.extend(carry(&mut s, &b, &mut c, &mut a));
        assert_eq!(from_server, b"hi");
        // Bytes that are not TLS records: an error, not a panic or a hang.
        let mut fresh = TlsContext::new(&server).unwrap().session().unwrap();
        let mut plain = [0u8; 64];
        assert!(fresh.received(&[0u8; 300], &mut plain, |_| {}).is_err());
    }
}
