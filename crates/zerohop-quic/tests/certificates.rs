//! Production TLS with PEM files and a CA: a good certificate connects; an expired one,
//! one for another name, one from an unknown CA, and a missing client certificate under
//! mutual TLS each fail with their own [`HandshakeFailure`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use zerohop_quic::{HandshakeFailure, Identity, Trust, tls};

/// A directory of PEM files for one test, removed at the end.
struct Pki(PathBuf);

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("zerohop-pki-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Pki(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A CA named `name`: writes `<name>.pem` and returns what signs with it.
    fn ca(&self, name: &str) -> Issuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), params.self_signed(&key).unwrap().pem()).unwrap();
        Issuer::new(params, key)
    }

    /// A leaf for `names` signed by `ca`, optionally expired: writes `<file>.pem` and
    /// `<file>.key`, returns the identity.
    fn leaf(&self, file: &str, names: &[&str], ca: &Issuer<'_, KeyPair>, expired: bool) -> Identity {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        let (cert_chain, key_path) = (self.path(&format!("{file}.pem")), self.path(&format!("{file}.key")));
        std::fs::write(&cert_chain, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Identity::Files { cert_chain, key: key_path }
    }
}

/// Connects a client (`trust`, optional identity) to a server (`identity`, optional
/// client CA) and returns how the client's side of the handshake ended.
fn connect(
    server_identity: &Identity,
    client_ca: Option<&Path>,
    trust: &Trust,
    client_identity: Option<&Identity>,
) -> Result<(), quinn::ConnectionError> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server_tls = tls::server_config(server_identity, client_ca).unwrap();
    let client_tls = tls::client_config(trust, client_identity).unwrap();
    rt.block_on(async move {
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls).unwrap()));
        let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            if let Some(incoming) = server.accept().await
                && let Ok(conn) = incoming.await
            {
                // Mutual TLS is decided after the client's last flight: wait for the close.
                conn.closed().await;
            }
        });
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client_tls).unwrap(),
        )));
        let result = match client.connect(addr, "localhost").unwrap().await {
            // A refused client certificate shows only once the server has looked at it.
            Ok(conn) => match conn.open_uni().await {
                Ok(mut s) => {
                    let _ = s.write_all(b"hello").await;
                    let _ = s.finish();
                    match tokio::time::timeout(std::time::Duration::from_millis(500), conn.closed()).await {
                        Ok(e) if !matches!(e, quinn::ConnectionError::LocallyClosed) => Err(e),
                        _ => Ok(()),
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        serve.abort();
        result
    })
}

#[test]
fn a_certificate_from_the_trusted_ca_connects() {
    let pki = Pki::new("good");
    let ca = pki.ca("test-ca");
    let server = pki.leaf("server", &["localhost"], &ca, false);
    connect(&server, None, &Trust::Ca(pki.path("test-ca.pem")), None).unwrap();
}

#[test]
fn expired_wrong_name_and_unknown_ca_each_fail_with_their_reason() {
    let pki = Pki::new("bad");
    let ca = pki.ca("test-ca");
    let _other = pki.ca("other-ca");
    let trust = Trust::Ca(pki.path("test-ca.pem"));
    let cases = [
        (pki.leaf("expired", &["localhost"], &ca, true), trust.clone(), HandshakeFailure::Expired),
        (pki.leaf("elsewhere", &["elsewhere.example"], &ca, false), trust.clone(), HandshakeFailure::WrongName),
        (
            pki.leaf("good", &["localhost"], &ca, false),
            Trust::Ca(pki.path("other-ca.pem")),
            HandshakeFailure::UnknownIssuer,
        ),
    ];
    for (server, trust, want) in cases {
        let err = connect(&server, None, &trust, None).unwrap_err();
        assert_eq!(zerohop_quic::handshake_failure(&err), Some(want), "{err}");
    }
}

#[test]
fn mutual_tls_accepts_a_client_from_the_ca_and_refuses_one_without_a_certificate() {
    let pki = Pki::new("mtls");
    let ca = pki.ca("test-ca");
    let server = pki.leaf("server", &["localhost"], &ca, false);
    let client = pki.leaf("client", &["client"], &ca, false);
    let trust = Trust::Ca(pki.path("test-ca.pem"));
    let client_ca = pki.path("test-ca.pem");
    connect(&server, Some(&client_ca), &trust, Some(&client)).unwrap();
    let err = connect(&server, Some(&client_ca), &trust, None).unwrap_err();
    assert_eq!(zerohop_quic::handshake_failure(&err), Some(HandshakeFailure::ClientCertificateRequired), "{err}");
}
