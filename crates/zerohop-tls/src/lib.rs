//! TLS for zerohop's transports (`quic://` always, `tcp://` with `tls` options): who a
//! server says it is, whom a client believes, and why a handshake failed.
//!
//! For development, [`Identity::SelfSigned`] makes a certificate at start-up (rcgen),
//! and a client accepts it only with the loudly named
//! [`Trust::DangerouslyAcceptAnyServer`]. For production, [`Identity::Files`] loads a
//! certificate chain and key (PEM), [`Trust::Ca`] verifies the server against a CA
//! bundle, and a server can require client certificates signed by a CA (mutual TLS).
//!
//! Both sides speak TLS 1.3 only and advertise the ALPN protocol [`ALPN`]; a transport
//! adds what is its own (QUIC turns on early data). [`TlsOptions`] is what users give
//! (the `tls` option group), the same names and errors on every transport, and
//! [`HandshakeFailure`] is a failed handshake, read from rustls or from a TLS alert,
//! with the stable error code users see for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use zerohop_transport::ErrorCode;

mod options;
pub use options::{TlsOptions, TlsSetup};

/// The application protocol both sides must agree on.
pub const ALPN: &[u8] = b"zerohop/1";

/// What can go wrong setting TLS up (not a failed handshake: that is the connection's).
#[derive(Debug)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read or parsed.
    File { path: PathBuf, why: String },
    /// rcgen could not make the development certificate.
    SelfSigned(String),
    /// rustls refused the configuration (a key that does not match its certificate, …).
    Config(String),
}

impl core::fmt::Display for TlsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::File { path, why } => write!(f, "{}: {why}", path.display()),
            Self::SelfSigned(why) => write!(f, "cannot make a self-signed certificate: {why}"),
            Self::Config(why) => write!(f, "TLS configuration refused: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Who a server (or a client, for mutual TLS) says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A certificate made now for these names (development only: nobody can verify it).
    SelfSigned { names: Vec<String> },
    /// A PEM certificate chain and its PEM private key.
    Files { cert_chain: PathBuf, key: PathBuf },
}

/// Whom a client believes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Servers whose chain ends at one of the CAs in this PEM bundle.
    Ca(PathBuf),
    /// Any server certificate at all, self-signed, expired or for another name. The
    /// handshake is still encrypted and its signature checked, but the server is not
    /// authenticated: for development against [`Identity::SelfSigned`] only.
    DangerouslyAcceptAnyServer,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::File { path: path.to_path_buf(), why };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File { path: path.to_path_buf(), why: e.to_string() })
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(ca)? {
        store.add(cert).map_err(|e| TlsError::File { path: ca.to_path_buf(), why: e.to_string() })?;
    }
    Ok(store)
}

/// A certificate chain and key for `identity`.
pub fn load_identity(identity: &Identity) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    match identity {
        Identity::SelfSigned { names } => {
            let made =
                rcgen::generate_simple_self_signed(names.clone()).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
            let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
            Ok((vec![made.cert.der().clone()], key))
        }
        Identity::Files { cert_chain, key } => Ok((read_certs(cert_chain)?, read_key(key)?)),
    }
}

/// The server side: `identity`, and with `client_ca` mutual TLS (clients must present a
/// certificate signed by one of those CAs).
pub fn server_config(identity: &Identity, client_ca: Option<&Path>) -> Result<rustls::ServerConfig, TlsError> {
    let (chain, key) = load_identity(identity)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The client side: whom to `trust`, and for mutual TLS our own `identity`.
pub fn client_config(trust: &Trust, identity: Option<&Identity>) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = builder.dangerous().with_custom_certificate_verifier(shared_verifier(trust)?);
    let mut config = builder.with_client_cert_resolver(shared_client_cert(identity)?);
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The TLS session tickets of the server at `server`, shared by every connection of
/// this process, so that a hub connecting to a server another hub has seen resumes with
/// 0-RTT. Per address and not only per name (rustls keys tickets by name): many
/// development servers are all `localhost`.
pub fn session_cache_for(server: SocketAddr) -> Arc<dyn rustls::client::ClientSessionStore> {
    type ByServer = HashMap<SocketAddr, Arc<rustls::client::ClientSessionMemoryCache>>;
    static CACHES: OnceLock<Mutex<ByServer>> = OnceLock::new();
    let mut caches = CACHES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if caches.len() >= 1024 {
        caches.clear(); // bounded: tickets are an optimisation
    }
    caches.entry(server).or_insert_with(|| Arc::new(rustls::client::ClientSessionMemoryCache::new(4))).clone()
}

/// Our client certificate for `identity` (or none), one per identity for the whole
/// process, for the same reason as [`shared_verifier`]: rustls resumes a session only
/// with the very client-certificate resolver it began with.
fn shared_client_cert(identity: Option<&Identity>) -> Result<Arc<dyn ResolvesClientCert>, TlsError> {
    type Key = Option<(Vec<u8>, Vec<u8>)>;
    static RESOLVERS: OnceLock<Mutex<HashMap<Key, Arc<dyn ResolvesClientCert>>>> = OnceLock::new();
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::File { path: p.to_path_buf(), why: e.to_string() });
    let key: Key = match identity {
        None => None,
        Some(Identity::Files { cert_chain, key }) => Some((read(cert_chain)?, read(key)?)),
        // Made anew each time: nothing to resume with anyway.
        Some(id @ Identity::SelfSigned { .. }) => return ClientCert::of(id),
    };
    let mut resolvers = RESOLVERS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = resolvers.get(&key) {
        return Ok(r.clone());
    }
    let resolver = match identity {
        None => Arc::new(ClientCert(None)) as Arc<dyn ResolvesClientCert>,
        Some(id) => ClientCert::of(id)?,
    };
    resolvers.insert(key, resolver.clone());
    Ok(resolver)
}

/// A fixed client certificate, or none.
#[derive(Debug)]
struct ClientCert(Option<Arc<CertifiedKey>>);

impl ClientCert {
    fn of(identity: &Identity) -> Result<Arc<dyn ResolvesClientCert>, TlsError> {
        let (chain, key) = load_identity(identity)?;
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Arc::new(ClientCert(Some(Arc::new(certified)))))
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

/// The verifier for `trust`, one per trust anchor for the whole process: rustls resumes
/// a session only under the very verifier that checked it, so a hub's 0-RTT depends on
/// meeting the same instance. Keyed by the CA bundle's contents, not its path.
fn shared_verifier(trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    type ByCa = HashMap<Option<Vec<u8>>, Arc<dyn ServerCertVerifier>>;
    static VERIFIERS: OnceLock<Mutex<ByCa>> = OnceLock::new();
    let key = match trust {
        Trust::Ca(ca) => {
            Some(std::fs::read(ca).map_err(|e| TlsError::File { path: ca.to_path_buf(), why: e.to_string() })?)
        }
        Trust::DangerouslyAcceptAnyServer => None,
    };
    let mut verifiers = VERIFIERS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = verifiers.get(&key) {
        return Ok(v.clone());
    }
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Ca(ca) => rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?,
        Trust::DangerouslyAcceptAnyServer => Arc::new(AcceptAnyServer(provider())),
    };
    verifiers.insert(key, verifier.clone());
    Ok(verifier)
}

/// Why a TLS handshake failed, read from the connection error, so that transports can
/// report a stable error code instead of a library's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer's certificate does not chain to a trusted CA (or is self-signed).
    UnknownIssuer,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotValidYet,
    /// The peer's certificate is for another name.
    WrongName,
    /// The peer's certificate is otherwise invalid (bad signature, wrong usage, …).
    BadCertificate,
    /// The server requires a client certificate and none (or an untrusted one) was sent.
    ClientCertificateRequired,
    /// The peer refused the handshake for another reason (a TLS alert from its side).
    RefusedByPeer,
}

impl HandshakeFailure {
    /// A failure from a TLS alert: one the peer sent us (`by_peer`: it refused us, a
    /// server checking our client certificate mostly), or one we sent it, where
    /// `text`, what our side said, refines the reason.
    pub fn of_alert(alert: u8, by_peer: bool, text: &str) -> HandshakeFailure {
        if by_peer {
            return match alert {
                // certificate_required, bad_certificate, unknown_ca, certificate_unknown
                116 | 42 | 48 | 46 => HandshakeFailure::ClientCertificateRequired,
                _ => HandshakeFailure::RefusedByPeer,
            };
        }
        match alert {
            48 => HandshakeFailure::UnknownIssuer,
            45 if text.contains("not valid yet") || text.contains("NotValidYet") => HandshakeFailure::NotValidYet,
            45 => HandshakeFailure::Expired,
            42 if text.contains("not valid for name") || text.contains("NotValidForName") => {
                HandshakeFailure::WrongName
            }
            _ => HandshakeFailure::BadCertificate,
        }
    }

    /// A failure read from rustls's own error (a connection over a byte stream); `None`
    /// if the error is not about certificates or a refusal (a malformed record, say).
    pub fn of_error(error: &rustls::Error) -> Option<HandshakeFailure> {
        use rustls::CertificateError as C;
        Some(match error {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => HandshakeFailure::UnknownIssuer,
                C::Expired | C::ExpiredContext { .. } => HandshakeFailure::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => HandshakeFailure::NotValidYet,
                C::NotValidForName | C::NotValidForNameContext { .. } => HandshakeFailure::WrongName,
                _ => HandshakeFailure::BadCertificate,
            },
            rustls::Error::NoCertificatesPresented => HandshakeFailure::ClientCertificateRequired,
            rustls::Error::AlertReceived(alert) => HandshakeFailure::of_alert(u8::from(*alert), true, ""),
            _ => return None,
        })
    }

    /// The stable error code users see for it.
    pub fn code(self) -> ErrorCode {
        match self {
            HandshakeFailure::UnknownIssuer | HandshakeFailure::BadCertificate => ErrorCode::TlsUntrusted,
            HandshakeFailure::Expired | HandshakeFailure::NotValidYet => ErrorCode::TlsExpired,
            HandshakeFailure::WrongName => ErrorCode::TlsNameMismatch,
            HandshakeFailure::ClientCertificateRequired | HandshakeFailure::RefusedByPeer => ErrorCode::TlsRefused,
        }
    }
}

/// Accepts any server certificate but still checks the handshake signature with it, so
/// the connection is encrypted to whoever holds that certificate's key.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_tls13_with_alpn() {
        let server = server_config(&Identity::SelfSigned { names: vec!["localhost".into()] }, None).unwrap();
        assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);
        let client = client_config(&Trust::DangerouslyAcceptAnyServer, None).unwrap();
        assert_eq!(client.alpn_protocols, vec![ALPN.to_vec()]);
    }

    #[test]
    fn rustls_errors_map_to_failures_and_codes() {
        use rustls::{AlertDescription, CertificateError};
        let of = |e: rustls::Error| HandshakeFailure::of_error(&e);
        assert_eq!(
            of(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            Some(HandshakeFailure::UnknownIssuer)
        );
        assert_eq!(of(rustls::Error::InvalidCertificate(CertificateError::Expired)), Some(HandshakeFailure::Expired));
        assert_eq!(
            of(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)),
            Some(HandshakeFailure::WrongName)
        );
        assert_eq!(
            of(rustls::Error::AlertReceived(AlertDescription::CertificateRequired)),
            Some(HandshakeFailure::ClientCertificateRequired)
        );
        assert_eq!(
            of(rustls::Error::AlertReceived(AlertDescription::HandshakeFailure)),
            Some(HandshakeFailure::RefusedByPeer)
        );
        assert_eq!(of(rustls::Error::DecryptError), None);
        assert_eq!(HandshakeFailure::WrongName.code(), ErrorCode::TlsNameMismatch);
        assert_eq!(HandshakeFailure::ClientCertificateRequired.code(), ErrorCode::TlsRefused);
    }

    #[test]
    fn missing_or_empty_files_are_typed_errors() {
        let missing =
            Identity::Files { cert_chain: "/nonexistent/cert.pem".into(), key: "/nonexistent/key.pem".into() };
        assert!(matches!(server_config(&missing, None), Err(TlsError::File { .. })));
        let empty = std::env::temp_dir().join(format!("zerohop-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(client_config(&Trust::Ca(empty.clone()), None), Err(TlsError::File { .. })));
        let _ = std::fs::remove_file(empty);
    }
}
