//! Writes a small PKI for tests into a directory: `ca.pem` (a CA), `other-ca.pem` (a CA
//! that signed nothing we use), `server.pem`/`.key` (for `localhost`, signed by the CA),
//! `expired.pem`/`.key` (same, expired in 2020), `client.pem`/`.key` (a client
//! certificate signed by the CA) and `stranger.pem`/`.key` (a client certificate signed
//! by the other CA).
//!
//! ```text
//! cargo run -p zerohop-tls --example test_pki -- /tmp/pki
//! ```

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;

fn ca(dir: &Path, name: &str) -> Issuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    std::fs::write(dir.join(format!("{name}.pem")), params.self_signed(&key).expect("self-signed").pem())
        .expect("write");
    Issuer::new(params, key)
}

fn leaf(dir: &Path, file: &str, names: &[&str], ca: &Issuer<'_, KeyPair>, expired: bool) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    if expired {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("signed");
    std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).expect("write");
    std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).expect("write");
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: test_pki DIR");
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).expect("create the directory");
    let ca_ = ca(dir, "ca");
    let other = ca(dir, "other-ca");
    leaf(dir, "server", &["localhost"], &ca_, false);
    leaf(dir, "expired", &["localhost"], &ca_, true);
    leaf(dir, "client", &["client.zerohop.test"], &ca_, false);
    leaf(dir, "stranger", &["stranger.zerohop.test"], &other, false);
}
