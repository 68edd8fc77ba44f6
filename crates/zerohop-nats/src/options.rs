//! [`NatsOptions`]: what only `nats://` hubs have.

use std::time::Duration;

use ring::signature::{Ed25519KeyPair, KeyPair};
use zerohop_proto::lifecycle::Backoff;
use zerohop_proto::nkeys::{self, KeyKind};
use zerohop_tls::TlsOptions;
use zerohop_transport::{Error, FromOptions, Options, Result, TransportOptions};

/// The options of a `nats://` hub.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// The hub answers requests on its subject (`Rpc.serve`): a message that comes with
    /// a reply subject is a request, answered there.
    pub listen: bool,
    /// Subscribe to the URL's subject (false: only publish, request and take answers,
    /// as an `Rpc` client does).
    pub subscribe: bool,
    /// A queue group: each message on the subject goes to one member of the group
    /// rather than to each (`?group=workers`). A hub that answers requests is in one
    /// unless told otherwise: [`SERVING_GROUP`], as NATS services are, so that each
    /// request is answered once however many servers there are.
    pub group: Option<String>,
    /// Credentials: a user and password, a token, or an nkey (see [`NkeyAuth`]).
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    pub nkey: Option<NkeyAuth>,
    /// The client name the server lists (`/connz`).
    pub name: Option<String>,
    /// The reconnect schedule after a connection is lost or an attempt fails.
    pub reconnect: Backoff,
    /// How long one attempt may take, up to the server's answer to the first `PING`.
    pub connect_timeout: Duration,
    /// A `PING` this often; two unanswered and the connection is stale (lost).
    pub ping_interval: Duration,
    /// Bytes kept for the server at most: what the socket has not taken yet, and what
    /// was published while there was no connection (sent after the next one is made).
    pub send_queue_bytes: usize,
    /// The largest message (the server's own limit, `max_payload`, applies as well).
    pub max_message: usize,
    /// Bytes of received messages held for a reader whose ring is full, at most (as a
    /// NATS client's pending limit; 64 MiB): past it, messages are dropped and counted.
    pub receive_queue_bytes: usize,
    /// TLS (`tls: { ca, cert, key, serverName, dangerouslyAcceptAnyServer }`, as on
    /// `quic://` and `tcp://`): the connection turns to TLS after the server's `INFO`.
    pub tls: Option<TlsOptions>,
    /// This hub's origin (a bridge's): every message it publishes says so in a header,
    /// and one that comes back with it is dropped (see `engine::ORIGIN`).
    pub origin: Option<String>,
}

/// The queue group of a hub that answers requests, unless it names one (NATS services'
/// default too).
pub const SERVING_GROUP: &str = "q";

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            listen: false,
            subscribe: true,
            group: None,
            user: None,
            pass: None,
            token: None,
            nkey: None,
            name: None,
            reconnect: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(5),
            send_queue_bytes: 8 << 20,
            max_message: 1 << 20,
            receive_queue_bytes: 64 << 20,
            tls: None,
            origin: None,
        }
    }
}

impl TransportOptions for NatsOptions {
    fn scheme(&self) -> &'static str {
        "nats"
    }

    fn clone_boxed(&self) -> Box<dyn TransportOptions> {
        Box::new(self.clone())
    }
}

impl FromOptions for NatsOptions {
    fn take_from(o: &mut Options) -> Result<Self> {
        let d = NatsOptions::default();
        let group = o.take_text("group")?;
        if let Some(g) = &group
            && (g.is_empty() || g.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
        {
            return Err(Error::bad_option(format!("group '{g}' is not a NATS queue group name")));
        }
        let listen = o.take_bool("listen")?.unwrap_or(false);
        let group = group.or_else(|| listen.then(|| SERVING_GROUP.to_owned()));
        let s = NatsOptions {
            listen,
            subscribe: o.take_bool("subscribe")?.unwrap_or(true),
            group,
            user: o.take_text("user")?,
            pass: o.take_text("pass")?,
            token: o.take_text("token")?,
            nkey: match (o.take_text("nkey")?, o.take_text("creds")?) {
                (Some(_), Some(_)) => return Err(Error::bad_option("nkey or creds, not both")),
                (Some(path), None) => Some(NkeyAuth::from_seed_file(&path)?),
                (None, Some(path)) => Some(NkeyAuth::from_creds_file(&path)?),
                (None, None) => None,
            },
            name: o.take_text("name")?,
            reconnect: o.take_reconnect("nats", d.reconnect)?,
            connect_timeout: o.take_ms("connectTimeoutMs")?.unwrap_or(d.connect_timeout),
            ping_interval: o.take_interval_ms("heartbeatMs", Some(d.ping_interval))?.unwrap_or(d.ping_interval),
            send_queue_bytes: o.take_usize("sendQueueBytes", 1..=1 << 40)?.unwrap_or(d.send_queue_bytes),
            max_message: o.take_usize("maxMessageSize", 1..=64 << 20)?.unwrap_or(d.max_message),
            receive_queue_bytes: o.take_usize("receiveQueueBytes", 0..=1 << 40)?.unwrap_or(d.receive_queue_bytes),
            tls: TlsOptions::take(o, "nats")?,
            origin: o.take_text("origin")?,
        };
        if let Some(origin) = &s.origin
            && zerohop_proto::nats::Headers::default().insert("Zerohop-Origin", origin).is_err()
        {
            return Err(Error::bad_option(format!("origin '{origin}' cannot be a header value (a line break)")));
        }
        if s.listen && !s.subscribe {
            return Err(Error::bad_option("listen: true answers requests on the subject: it needs subscribe"));
        }
        if s.pass.is_some() != s.user.is_some() {
            return Err(Error::bad_option("user and pass go together"));
        }
        if [s.token.is_some(), s.user.is_some(), s.nkey.is_some()].into_iter().filter(|&given| given).count() > 1 {
            return Err(Error::bad_option("one kind of credentials: a user and pass, a token, nkey or creds"));
        }
        Ok(s)
    }
}

impl NatsOptions {
    /// The `CONNECT` JSON: headers, no echo (a hub never receives its own publishes),
    /// "no responders" answers for requests nobody serves, and the credentials.
    pub fn connect_json(&self) -> String {
        let mut j = String::from(r#"{"verbose":false,"pedantic":false,"lang":"rust-zerohop","version":""#);
        j.push_str(env!("CARGO_PKG_VERSION"));
        j.push_str(r#"","protocol":1,"headers":true,"no_responders":true,"echo":false"#);
        // (An nkey's signature of the server's nonce is added to it by the session.)
        let (nkey, jwt) = match &self.nkey {
            Some(n) if n.jwt.is_some() => (None, n.jwt.clone()),
            Some(n) => (Some(n.public.clone()), None),
            None => (None, None),
        };
        for (key, value) in [
            ("name", &self.name),
            ("user", &self.user),
            ("pass", &self.pass),
            ("auth_token", &self.token),
            ("nkey", &nkey),
            ("jwt", &jwt),
        ] {
            if let Some(v) = value {
                j.push_str(",\"");
                j.push_str(key);
                j.push_str("\":");
                push_json_string(&mut j, v);
            }
        }
        j.push('}');
        j
    }
}

/// A user's nkey, to sign each server's nonce with: `nkey` (a file holding the user's
/// seed, `SU…`, as `nk` makes it) or `creds` (a credentials file: the user's JWT, which
/// the server checks against its account, and seed). The seed is read when the hub
/// opens and never printed.
#[derive(Clone)]
pub struct NkeyAuth {
    seed: [u8; 32],
    /// The user's public key (`U…`), sent as `nkey` when there is no JWT.
    public: String,
    jwt: Option<String>,
}

impl core::fmt::Debug for NkeyAuth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NkeyAuth").field("public", &self.public).field("jwt", &self.jwt.is_some()).finish()
    }
}

impl NkeyAuth {
    fn from_seed_file(path: &str) -> Result<Self> {
        Self::from_seed(&read_secret("nkey", path)?, None).map_err(|e| Error::bad_option(format!("nkey {path}: {e}")))
    }

    fn from_creds_file(path: &str) -> Result<Self> {
        let text = read_secret("creds", path)?;
        let (jwt, seed) = nkeys::parse_creds(&text).map_err(|e| Error::bad_option(format!("creds {path}: {e}")))?;
        Self::from_seed(&seed, Some(jwt)).map_err(|e| Error::bad_option(format!("creds {path}: {e}")))
    }

    fn from_seed(text: &str, jwt: Option<String>) -> core::result::Result<Self, String> {
        let (kind, seed) = nkeys::decode_seed(text.trim()).map_err(|e| e.to_string())?;
        if kind != KeyKind::User {
            return Err(format!("a {kind:?} seed: a client signs in with a user's (SU…)"));
        }
        let public = *Self::key_pair(&seed).public_key().as_ref().first_chunk::<32>().expect("an Ed25519 public key");
        Ok(Self { seed, public: nkeys::encode_public(KeyKind::User, &public), jwt })
    }

    fn key_pair(seed: &[u8; 32]) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are an Ed25519 seed")
    }

    /// What signs a server's nonce (the signature base64url, as `CONNECT`'s `sig`).
    pub fn signer(&self) -> impl Fn(&[u8]) -> String + Send + 'static {
        let pair = Self::key_pair(&self.seed);
        move |nonce| nkeys::base64url(pair.sign(nonce).as_ref())
    }

    /// The user's public key (`U…`).
    pub fn public_key(&self) -> &str {
        &self.public
    }
}

fn read_secret(option: &str, path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::bad_option(format!("{option}: cannot read {path}: {e}")))
}

/// `s` as a JSON string.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_transport::Value;

    fn named(pairs: &[(&str, Value)]) -> Result<NatsOptions> {
        let mut o = Options::new(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect());
        let s = NatsOptions::take_from(&mut o)?;
        o.finish("nats")?;
        Ok(s)
    }

    #[test]
    fn credentials_go_into_connect_escaped() {
        let t = |s: &str| Value::Text(s.into());
        let o = named(&[("user", t("a\"b")), ("pass", t("p\\w\n"))]).unwrap();
        let j = o.connect_json();
        assert!(j.contains(r#""user":"a\"b","pass":"p\\w\u000a""#), "{j}");
        assert!(j.contains(r#""echo":false"#) && j.contains(r#""headers":true"#));
        assert!(named(&[("user", t("a"))]).is_err(), "a user without a password");
        assert!(named(&[("token", t("x")), ("user", t("a")), ("pass", t("b"))]).is_err());
        assert!(named(&[("group", t("two words"))]).is_err());
        assert!(named(&[("listen", Value::Bool(true)), ("subscribe", Value::Bool(false))]).is_err());
        assert!(named(&[("bogus", Value::Bool(true))]).is_err());
    }

    #[test]
    fn an_nkey_signs_the_nonce_so_that_its_public_key_verifies_it() {
        let dir = std::env::temp_dir().join(format!("zerohop-nkey-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            Value::Text(p.to_str().unwrap().into())
        };
        let seed = nkeys::encode_seed(KeyKind::User, &[5; 32]);
        let o = named(&[("nkey", path("user.nk", &format!("{seed}\n")))]).unwrap();
        let auth = o.nkey.clone().unwrap();
        let j = o.connect_json();
        assert!(j.contains(&format!(r#""nkey":"{}""#, auth.public_key())) && !j.contains("jwt"), "{j}");
        assert!(!format!("{o:?}").contains(&seed), "the seed is never printed");
        let (_, public) = nkeys::decode_public(auth.public_key()).unwrap();
        let sig = (auth.signer())(b"the nonce");
        let raw = sig_bytes(&sig);
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
        assert!(key.verify(b"the nonce", &raw).is_ok(), "signed by the seed's key");
        assert!(key.verify(b"another", &raw).is_err());

        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJ.a.b\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        let o = named(&[("creds", path("user.creds", &creds))]).unwrap();
        let j = o.connect_json();
        assert!(j.contains(r#""jwt":"eyJ.a.b""#) && !j.contains("\"nkey\""), "the JWT names the key: {j}");

        let missing = Value::Text(dir.join("none").to_str().unwrap().into());
        assert!(named(&[("nkey", missing)]).unwrap_err().to_string().contains("cannot read"));
        let account = path("account.nk", &nkeys::encode_seed(KeyKind::Account, &[1; 32]));
        assert!(named(&[("nkey", account)]).unwrap_err().to_string().contains("user's"));
        let both = [("nkey", path("a.nk", &seed)), ("creds", path("a.creds", &creds))];
        assert!(named(&both).is_err());
        let with_token = [("nkey", path("b.nk", &seed)), ("token", Value::Text("t".into()))];
        assert!(named(&with_token).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Base64url back to bytes (the test's own, to check a signature).
    fn sig_bytes(text: &str) -> Vec<u8> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
        for c in text.bytes() {
            acc = (acc << 6) | alphabet.iter().position(|&a| a == c).unwrap() as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}
