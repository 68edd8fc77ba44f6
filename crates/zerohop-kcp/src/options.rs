//! [`KcpOptions`]: what a `kcp://` hub is opened with.

use std::time::Duration;

use zerohop_proto::kcp::{KcpConfig, Mode};
use zerohop_stream::ReliableOptions;
use zerohop_transport::{FromOptions, Options, Result, TransportOptions, Value};

/// The options only `kcp://` hubs have, besides the reliable ones (`listen`, channels,
/// queues, heartbeats, reconnecting).
#[derive(Clone, Debug)]
pub struct KcpOptions {
    pub reliable: ReliableOptions,
    /// The preset the KCP parameters start from (`mode`, default `fast`; see [`Mode`]).
    pub mode: Mode,
    /// Every conversation's parameters: the mode's preset, then each one given by
    /// itself (`nodelay`, `intervalMs`, `resend`, `noCongestionControl`, `minRtoMs`,
    /// `sendWindow`, `recvWindow`, `mtu`, `stream`), and `tailProbe` (on by default;
    /// see [`KcpConfig::tail_probe`]).
    pub kcp: KcpConfig,
    /// A conversation that hears nothing for this long ends (`idleTimeoutMs`, 0: never;
    /// heartbeats find a silent peer sooner, when they are on).
    pub idle_timeout: Option<Duration>,
    /// Conversations a listener keeps at most (`maxPeers`): a new peer beyond them is
    /// counted and ignored until one ends.
    pub max_peers: usize,
}

impl Default for KcpOptions {
    fn default() -> Self {
        Self {
            reliable: ReliableOptions::default(),
            mode: Mode::default(),
            kcp: KcpConfig { tail_probe: true, ..Mode::default().config() },
            idle_timeout: Some(Duration::from_secs(10)),
            max_peers: 1024,
        }
    }
}

impl From<ReliableOptions> for KcpOptions {
    fn from(reliable: ReliableOptions) -> Self {
        Self { reliable, ..Self::default() }
    }
}

impl TransportOptions for KcpOptions {
    fn scheme(&self) -> &'static str {
        "kcp"
    }

    fn clone_boxed(&self) -> Box<dyn TransportOptions> {
        Box::new(self.clone())
    }
}

impl FromOptions for KcpOptions {
    fn take_from(o: &mut Options) -> Result<Self> {
        let d = KcpOptions::default();
        let names: Vec<&'static str> = Mode::ALL.iter().map(|(n, _)| *n).collect();
        let mode = o.take_choice("mode", &names)?.and_then(Mode::parse).unwrap_or(d.mode);
        let mut kcp = mode.config();
        // `nodelay` is KCP's 0, 1 or 2; true and false stand for 1 and 0.
        let nodelay = match o.take("nodelay") {
            None => None,
            Some(Value::Bool(b)) => Some(u32::from(b)),
            // (From a URL: `nodelay`, `nodelay=true`, `=false`, or the number.)
            Some(Value::Text(t)) if matches!(t.as_str(), "" | "true" | "false") => Some(u32::from(t != "false")),
            Some(v) => {
                o.put_back("nodelay", v);
                o.take_u32("nodelay", 0..=2)?
            }
        };
        kcp.nodelay = nodelay.unwrap_or(kcp.nodelay);
        kcp.interval_ms = o.take_u32("intervalMs", 10..=5000)?.unwrap_or(kcp.interval_ms);
        kcp.resend = o.take_u32("resend", 0..=u32::MAX)?.unwrap_or(kcp.resend);
        kcp.no_congestion_control = o.take_bool("noCongestionControl")?.unwrap_or(kcp.no_congestion_control);
        // A minimum RTO given by itself stands; else a `nodelay` given sets its own floor
        // (30 ms with it, 100 without, as `ikcp_nodelay` does); else the preset's.
        kcp.min_rto_ms = match (o.take_u32("minRtoMs", 1..=60_000)?, nodelay) {
            (Some(ms), _) => ms,
            (None, Some(n)) => {
                if n != 0 {
                    30
                } else {
                    100
                }
            }
            (None, None) => kcp.min_rto_ms,
        };
        kcp.send_window = o.take_u32("sendWindow", 1..=65_535)?.unwrap_or(kcp.send_window);
        kcp.recv_window = o.take_u32("recvWindow", 128..=65_535)?.unwrap_or(kcp.recv_window);
        kcp.mtu = o.take_usize("mtu", 50..=65_507)?.unwrap_or(kcp.mtu);
        kcp.stream = o.take_bool("stream")?.unwrap_or(kcp.stream);
        kcp.tail_probe = o.take_bool("tailProbe")?.unwrap_or(d.kcp.tail_probe);
        Ok(KcpOptions {
            reliable: ReliableOptions::take(o, "kcp")?,
            mode,
            kcp,
            idle_timeout: o.take_interval_ms("idleTimeoutMs", d.idle_timeout)?,
            max_peers: o.take_usize("maxPeers", 1..=65_536)?.unwrap_or(d.max_peers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: Vec<(&str, Value)>) -> Result<KcpOptions> {
        let mut o = Options::new(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        KcpOptions::take_from(&mut o)
    }

    #[test]
    fn a_mode_is_its_preset_and_each_parameter_overrides_it() {
        let d = parse(vec![]).unwrap();
        assert_eq!((d.mode, d.kcp), (Mode::Fast, KcpConfig { tail_probe: true, ..Mode::Fast.config() }));
        assert!(!parse(vec![("tailProbe", Value::Bool(false))]).unwrap().kcp.tail_probe);
        let t = parse(vec![("mode", Value::Text("turbo".into()))]).unwrap();
        assert_eq!((t.kcp.nodelay, t.kcp.interval_ms, t.kcp.resend, t.kcp.min_rto_ms), (1, 20, 2, 30));
        let f = parse(vec![("mode", Value::Text("fastest".into())), ("intervalMs", Value::Number(15.0))]).unwrap();
        assert_eq!((f.kcp.interval_ms, f.kcp.min_rto_ms), (15, 10), "the rest of the preset stays");
        let n = parse(vec![("nodelay", Value::Bool(true)), ("sendWindow", Value::Number(512.0))]).unwrap();
        assert_eq!((n.kcp.nodelay, n.kcp.min_rto_ms, n.kcp.send_window), (1, 30, 512), "nodelay's own floor");
        let m = parse(vec![("nodelay", Value::Number(2.0)), ("minRtoMs", Value::Number(5.0))]).unwrap();
        assert_eq!((m.kcp.nodelay, m.kcp.min_rto_ms), (2, 5));
        assert!(parse(vec![("stream", Value::Bool(true))]).unwrap().kcp.stream);
    }

    #[test]
    fn what_is_out_of_range_or_unknown_is_refused() {
        for bad in [
            ("mode", Value::Text("ludicrous".into())),
            ("nodelay", Value::Number(3.0)),
            ("intervalMs", Value::Number(5.0)),
            ("recvWindow", Value::Number(64.0)),
            ("mtu", Value::Number(40.0)),
            ("maxPeers", Value::Number(0.0)),
        ] {
            let name = bad.0;
            assert!(parse(vec![bad]).is_err(), "{name}");
        }
    }
}
