//! [`NatsOptions`]: what only `nats://` hubs have.

use std::time::Duration;

use zerohop_proto::lifecycle::Backoff;
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
    /// Credentials: a user and password, or a token.
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
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
        if s.token.is_some() && s.user.is_some() {
            return Err(Error::bad_option("a token or a user and pass, not both"));
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
        for (key, value) in
            [("name", &self.name), ("user", &self.user), ("pass", &self.pass), ("auth_token", &self.token)]
        {
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
}
