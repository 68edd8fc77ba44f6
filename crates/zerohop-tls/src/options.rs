//! The `tls` option group, as users give it: the same names, defaults and errors on
//! every transport that encrypts.

use std::path::PathBuf;

use zerohop_transport::{Error, Options, Result};

use crate::{Identity, Trust};

/// What users give as `tls: { cert, key, ca, serverName, dangerouslyAcceptAnyServer }`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Our certificate chain and its key (PEM files); they go together.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A CA bundle (PEM). Connecting: the server must chain to it. Listening: clients
    /// must present a certificate that chains to it (mutual TLS).
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must be for (default: the URL's host).
    pub server_name: Option<String>,
    /// Connect to any server whatever its certificate (development only).
    pub dangerously_accept_any_server: bool,
}

/// What a hub does with its [`TlsOptions`], checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSetup {
    /// A listener: who it is, and the CA its clients must chain to (mutual TLS).
    Listen { identity: Identity, client_ca: Option<PathBuf> },
    /// A connecting hub: whom it believes, who it is (mutual TLS), and the name the
    /// server's certificate must be for.
    Connect { trust: Trust, identity: Option<Identity>, server_name: String },
}

impl TlsOptions {
    /// Takes the `tls` group out of `o` (`None` if there is none); a name in it that is
    /// not one of ours is an error naming `scheme`.
    pub fn take(o: &mut Options, scheme: &str) -> Result<Option<TlsOptions>> {
        let Some(mut tls) = o.take_group("tls")? else { return Ok(None) };
        let t = TlsOptions {
            cert: tls.take_text("cert")?.map(Into::into),
            key: tls.take_text("key")?.map(Into::into),
            ca: tls.take_text("ca")?.map(Into::into),
            server_name: tls.take_text("serverName")?,
            dangerously_accept_any_server: tls.take_bool("dangerouslyAcceptAnyServer")?.unwrap_or(false),
        };
        tls.finish(scheme)?;
        Ok(Some(t))
    }

    /// The setup of a hub on `host` that listens or connects over `scheme`. A listener
    /// without a certificate makes a self-signed one (for `localhost` and `host`); a
    /// connecting hub must say whom it trusts.
    pub fn setup(&self, listen: bool, host: &str, scheme: &str) -> Result<TlsSetup> {
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some(Identity::Files { cert_chain: c.clone(), key: k.clone() }),
            (None, None) => None,
            _ => return Err(Error::bad_option("tls.cert and tls.key go together")),
        };
        if listen {
            let identity =
                identity.unwrap_or_else(|| Identity::SelfSigned { names: vec!["localhost".into(), host.to_owned()] });
            return Ok(TlsSetup::Listen { identity, client_ca: self.ca.clone() });
        }
        let trust = match (&self.ca, self.dangerously_accept_any_server) {
            (Some(ca), false) => Trust::Ca(ca.clone()),
            (None, true) => Trust::DangerouslyAcceptAnyServer,
            (Some(_), true) => {
                return Err(Error::bad_option("tls.ca and tls.dangerouslyAcceptAnyServer exclude each other"));
            }
            (None, false) => {
                return Err(Error::bad_option(format!(
                    "connecting over {scheme}:// with TLS needs tls.ca (the CA bundle to verify the server with) \
                     or, for development against a self-signed server, tls.dangerouslyAcceptAnyServer: true"
                )));
            }
        };
        let server_name = self.server_name.clone().unwrap_or_else(|| host.to_owned());
        Ok(TlsSetup::Connect { trust, identity, server_name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_transport::{ErrorCode, Value};

    fn group(entries: &[(&str, Value)]) -> Options {
        let inner = Options::new(entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
        Options::new(vec![("tls".into(), Value::Map(inner))])
    }

    #[test]
    fn setups_by_side() {
        let t = TlsOptions::default();
        assert!(matches!(
            t.setup(true, "0.0.0.0", "tcp"),
            Ok(TlsSetup::Listen { identity: Identity::SelfSigned { .. }, client_ca: None })
        ));
        assert_eq!(
            t.setup(false, "h", "tcp").unwrap_err().code(),
            ErrorCode::BadOption,
            "a client must say whom it trusts"
        );
        let dev = TlsOptions { dangerously_accept_any_server: true, ..TlsOptions::default() };
        assert_eq!(
            dev.setup(false, "example.org", "tcp").unwrap(),
            TlsSetup::Connect {
                trust: Trust::DangerouslyAcceptAnyServer,
                identity: None,
                server_name: "example.org".into()
            }
        );
        let half = TlsOptions { cert: Some("c.pem".into()), ..dev.clone() };
        assert_eq!(half.setup(false, "h", "tcp").unwrap_err().code(), ErrorCode::BadOption);
        let both = TlsOptions { ca: Some("ca.pem".into()), ..dev };
        assert_eq!(both.setup(false, "h", "tcp").unwrap_err().code(), ErrorCode::BadOption);
    }

    #[test]
    fn the_group_is_read_and_unknown_names_refused() {
        let mut o = group(&[("ca", Value::Text("ca.pem".into())), ("serverName", Value::Text("localhost".into()))]);
        let t = TlsOptions::take(&mut o, "tcp").unwrap().unwrap();
        assert_eq!(t.ca, Some("ca.pem".into()));
        assert_eq!(t.server_name.as_deref(), Some("localhost"));
        let mut bad = group(&[("cafile", Value::Text("ca.pem".into()))]);
        assert_eq!(TlsOptions::take(&mut bad, "tcp").unwrap_err().code(), ErrorCode::BadOption);
        assert_eq!(TlsOptions::take(&mut Options::new(vec![]), "tcp").unwrap(), None);
    }
}
