//! What a hub is opened with: the options every hub has ([`HubOptions`]), and the way a
//! transport's own options reach it, typed ([`HubOptions::with`]) or by name
//! ([`Options`]).
//!
//! Options by name are what the Node binding passes (the JavaScript object, turned into
//! [`Value`]s) and what a URL's query carries (`udp://h:1?batch=64`, text only). They
//! use the names users write (`flushIntervalMs`). The hub takes the names it knows, the
//! transport takes its own, and a name nobody took is `ERR_BAD_OPTION` (or, from a URL,
//! `ERR_BAD_URL`): an option that is accepted always takes effect.
//!
//! ```
//! use zerohop_transport::options::{Options, Value};
//!
//! let mut o = Options::from_query(&[("batch".into(), "64".into()), ("loud".into(), "".into())]);
//! assert_eq!(o.take_u32("batch", 1..=1024).unwrap(), Some(64));
//! assert_eq!(o.take_bool("loud").unwrap(), Some(true)); // a bare flag
//! o.finish("udp").unwrap(); // everything was taken
//!
//! let mut o = Options::new(vec![("listen".into(), Value::Bool(true))]);
//! assert_eq!(o.finish("udp").unwrap_err().code(), zerohop_transport::ErrorCode::BadOption);
//! ```

use std::any::Any;
use std::ops::RangeInclusive;
use std::time::Duration;

use zerohop_proto::lifecycle::Backoff;
pub use zerohop_shm::Backpressure;

use crate::error::{Error, ErrorCode, Result};
use crate::rate::RateLimit;

/// One option's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
    List(Vec<Value>),
    /// Options grouped under one name (`tls: { ca }`).
    Map(Options),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Text(t) => format!("'{t}'"),
            Value::List(_) => "a list".into(),
            Value::Map(_) => "an object".into(),
        }
    }
}

/// Options by name, each taken at most once by whoever it is for; see the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    entries: Vec<(String, Value)>,
    /// The names that came from a URL's query: their values are text, and a wrong or
    /// leftover one is a bad URL rather than a bad option.
    from_url: Vec<String>,
    /// Where these sit (`tls.`), for messages.
    prefix: String,
    /// Every name asked for, given or not: the valid names, for the nearest one to a
    /// name nobody took.
    asked: Vec<String>,
}

impl Options {
    /// Options given by a program.
    pub fn new(entries: Vec<(String, Value)>) -> Options {
        Options { entries, from_url: Vec::new(), prefix: String::new(), asked: Vec::new() }
    }

    /// A URL's query parameters (`key=value`; a bare `key` is `true`).
    pub fn from_query(params: &[(String, String)]) -> Options {
        let entries = params.iter().map(|(k, v)| (k.clone(), Value::Text(v.clone()))).collect();
        Options {
            entries,
            from_url: params.iter().map(|(k, _)| k.clone()).collect(),
            prefix: String::new(),
            asked: Vec::new(),
        }
    }

    /// Whether no option is left.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names not taken yet.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The options not taken yet, in order, with their values.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    /// Adds the options of `other` (a URL's query after a program's options: a name
    /// given both ways is an error).
    pub fn merge(&mut self, other: Options) -> Result<()> {
        for (k, v) in other.entries {
            if self.entries.iter().any(|(name, _)| *name == k) {
                return Err(self.bad(&k, "is given twice (in the URL and in the options)"));
            }
            self.entries.push((k, v));
        }
        self.from_url.extend(other.from_url);
        for name in other.asked {
            self.note_asked(&name);
        }
        Ok(())
    }

    fn note_asked(&mut self, name: &str) {
        if !self.asked.iter().any(|n| n == name) {
            self.asked.push(name.to_owned());
        }
    }

    /// Every name asked for so far, given or not (after a transport took its own: all
    /// it knows).
    pub fn asked(&self) -> impl Iterator<Item = &str> {
        self.asked.iter().map(String::as_str)
    }

    /// The valid name nearest to `name` (by edit distance, ignoring case), if any was
    /// asked for.
    pub fn nearest(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.asked.iter().min_by_key(|n| edit_distance(&n.to_ascii_lowercase(), &name)).map(String::as_str)
    }

    pub(crate) fn bad(&self, name: &str, why: impl core::fmt::Display) -> Error {
        let code = if self.from_url.iter().any(|n| n == name) { ErrorCode::BadUrl } else { ErrorCode::BadOption };
        Error::new(code, format!("{}{name} {why}", self.prefix))
    }

    /// Gives `name` its value (back, if it was taken to look at it), for a `take_…` to
    /// read; `name` must not be given already.
    pub fn put_back(&mut self, name: &str, value: Value) {
        self.entries.push((name.to_owned(), value));
    }

    /// Whether option `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == name)
    }

    /// Removes and returns the value of `name`.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.note_asked(name);
        let i = self.entries.iter().position(|(k, _)| k == name)?;
        Some(self.entries.remove(i).1)
    }

    pub fn take_bool(&mut self, name: &str) -> Result<Option<bool>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::Text(t)) if t.is_empty() || t == "true" || t == "1" => Ok(Some(true)),
            Some(Value::Text(t)) if t == "false" || t == "0" => Ok(Some(false)),
            Some(v) => Err(self.bad(name, format!("must be true or false, got {}", v.describe()))),
        }
    }

    /// A finite number.
    pub fn take_f64(&mut self, name: &str) -> Result<Option<f64>> {
        let n = match self.take(name) {
            None => return Ok(None),
            Some(Value::Number(n)) => n,
            Some(Value::Text(t)) if t.parse::<f64>().is_ok() => t.parse::<f64>().expect("checked"),
            Some(v) => return Err(self.bad(name, format!("must be a number, got {}", v.describe()))),
        };
        if !n.is_finite() {
            return Err(self.bad(name, format!("must be a finite number, got {n}")));
        }
        Ok(Some(n))
    }

    /// A number within `range` (inclusive).
    pub fn take_in(&mut self, name: &str, range: RangeInclusive<f64>) -> Result<Option<f64>> {
        match self.take_f64(name)? {
            Some(n) if !range.contains(&n) => {
                Err(self.bad(name, format!("must be within {}..={}, got {n}", range.start(), range.end())))
            }
            n => Ok(n),
        }
    }

    /// An integer within `range`.
    pub fn take_u64(&mut self, name: &str, range: RangeInclusive<u64>) -> Result<Option<u64>> {
        let Some(n) = self.take_f64(name)? else { return Ok(None) };
        if n.fract() != 0.0 || n < *range.start() as f64 || n > *range.end() as f64 {
            return Err(self.bad(name, format!("must be an integer in {}..={}, got {n}", range.start(), range.end())));
        }
        Ok(Some(n as u64))
    }

    pub fn take_u32(&mut self, name: &str, range: RangeInclusive<u32>) -> Result<Option<u32>> {
        let range = u64::from(*range.start())..=u64::from(*range.end());
        Ok(self.take_u64(name, range)?.map(|n| n as u32))
    }

    pub fn take_usize(&mut self, name: &str, range: RangeInclusive<usize>) -> Result<Option<usize>> {
        let range = *range.start() as u64..=*range.end() as u64;
        Ok(self.take_u64(name, range)?.map(|n| n as usize))
    }

    /// Milliseconds ≥ 0 (fractions allowed), as a duration.
    pub fn take_ms(&mut self, name: &str) -> Result<Option<Duration>> {
        let Some(ms) = self.take_f64(name)? else { return Ok(None) };
        if ms < 0.0 {
            return Err(self.bad(name, format!("must be ≥ 0, got {ms}")));
        }
        Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
    }

    /// An interval in milliseconds where 0 turns the thing off (`None`); `default` when
    /// not given (`heartbeatMs`, `keepAliveMs`).
    pub fn take_interval_ms(&mut self, name: &str, default: Option<Duration>) -> Result<Option<Duration>> {
        Ok(match self.take_ms(name)? {
            Some(ms) if ms.is_zero() => None,
            Some(ms) => Some(ms),
            None => default,
        })
    }

    /// Microseconds ≥ 0, as a duration.
    pub fn take_us(&mut self, name: &str) -> Result<Option<Duration>> {
        Ok(self.take_ms(name)?.map(|d| d / 1000))
    }

    pub fn take_text(&mut self, name: &str) -> Result<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(v) => Err(self.bad(name, format!("must be a string, got {}", v.describe()))),
        }
    }

    /// A connecting hub's work group (`group`): 1 to `MAX_GROUP_NAME` bytes; refused on
    /// a hub that `listen`s (its listener routes to groups, it is in none).
    pub fn take_work_group(&mut self, listen: bool) -> Result<Option<String>> {
        use zerohop_proto::records::MAX_GROUP_NAME;
        let group = self.take_text("group")?;
        if let Some(g) = &group {
            if listen {
                return Err(self
                    .bad("group", "is a connecting hub's: the listener sends each message to one hub of each group"));
            }
            if g.is_empty() || g.len() > MAX_GROUP_NAME {
                return Err(self.bad("group", format!("must be 1 to {MAX_GROUP_NAME} bytes, got {}", g.len())));
            }
        }
        Ok(group)
    }

    /// One of `choices`.
    pub fn take_choice(&mut self, name: &str, choices: &[&'static str]) -> Result<Option<&'static str>> {
        let Some(t) = self.take_text(name)? else { return Ok(None) };
        match choices.iter().find(|c| **c == t) {
            Some(c) => Ok(Some(*c)),
            None => {
                let list = choices.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ");
                Err(self.bad(name, format!("must be one of {list}, got '{t}'")))
            }
        }
    }

    /// A list of strings (from a URL: comma-separated).
    pub fn take_texts(&mut self, name: &str) -> Result<Option<Vec<String>>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Text(t)) if self.from_url.iter().any(|n| n == name) => {
                Ok(Some(t.split(',').map(str::to_owned).collect()))
            }
            Some(Value::List(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::Text(t) => out.push(t),
                        v => return Err(self.bad(name, format!("must hold strings, got {}", v.describe()))),
                    }
                }
                Ok(Some(out))
            }
            Some(v) => Err(self.bad(name, format!("must be a list of strings, got {}", v.describe()))),
        }
    }

    /// `priorities`: each channel's priority class, 0 (first) to 7 (empty: not given).
    pub fn take_priorities(&mut self) -> Result<Vec<u8>> {
        Ok(self.take_u32s("priorities", 0..=7)?.map(|c| c.into_iter().map(|c| c as u8).collect()).unwrap_or_default())
    }

    /// A list of integers in `range` (from a URL: comma-separated).
    pub fn take_u32s(&mut self, name: &str, range: RangeInclusive<u32>) -> Result<Option<Vec<u32>>> {
        let from_url = self.from_url.iter().any(|n| n == name);
        let items: Vec<Value> = match self.take(name) {
            None => return Ok(None),
            Some(Value::Text(t)) if from_url => {
                t.split(',').map(|x| x.trim().parse::<f64>().map_or(Value::Text(x.to_owned()), Value::Number)).collect()
            }
            Some(Value::List(items)) => items,
            Some(v) => return Err(self.bad(name, format!("must be a list of integers, got {}", v.describe()))),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::Number(n)
                    if n.fract() == 0.0 && n >= f64::from(*range.start()) && n <= f64::from(*range.end()) =>
                {
                    out.push(n as u32)
                }
                v => return Err(self.bad(name, format!("must hold integers in {range:?}, got {}", v.describe()))),
            }
        }
        Ok(Some(out))
    }

    /// A connecting hub's `reconnect` group (`{ initialMs, maxMs, multiplier, jitter,
    /// maxAttempts }`) over `default`; anything else in it is an error naming `scheme`.
    pub fn take_reconnect(&mut self, scheme: &str, default: Backoff) -> Result<Backoff> {
        let Some(mut r) = self.take_group("reconnect")? else { return Ok(default) };
        let mut b = default;
        b.initial = r.take_ms("initialMs")?.unwrap_or(b.initial);
        b.max = r.take_ms("maxMs")?.unwrap_or(b.max);
        b.multiplier = r.take_in("multiplier", 0.0..=f64::MAX)?.unwrap_or(b.multiplier);
        b.jitter = r.take_in("jitter", 0.0..=1.0)?.unwrap_or(b.jitter);
        b.max_attempts = r.take_u32("maxAttempts", 0..=u32::MAX)?.or(b.max_attempts);
        r.finish(scheme)?;
        Ok(b)
    }

    /// Options grouped under `name`; call [`finish`](Self::finish) on them too.
    pub fn take_group(&mut self, name: &str) -> Result<Option<Options>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Map(o)) => Ok(Some(self.group(name, o))),
            Some(v) => Err(self.bad(name, format!("must be an object, got {}", v.describe()))),
        }
    }

    /// Like [`finish`](Self::finish), for a group that is not a transport's (`chaos`).
    pub fn finish_group(self, group: &str) -> Result<()> {
        self.nothing_left(group)
    }

    /// Fails with the first option nobody took: it is not one of `whose`, and the
    /// message names the nearest one that is.
    fn nothing_left(self, whose: &str) -> Result<()> {
        let Some((name, _)) = self.entries.first() else { return Ok(()) };
        let nearest = self.nearest(name).map(|n| format!(" (the nearest is '{}{n}')", self.prefix));
        Err(self.bad(name, format!("is not an option of {whose}{}", nearest.unwrap_or_default())))
    }

    /// `o`, the value of `name`, as a group of these options (for its messages).
    pub(crate) fn group(&self, name: &str, mut o: Options) -> Options {
        o.prefix = format!("{}{name}.", self.prefix);
        if self.from_url.iter().any(|n| n == name) {
            o.from_url = o.entries.iter().map(|(k, _)| k.clone()).collect();
        }
        o
    }

    /// Fails with the first option nobody took: it is not one of `scheme`'s (the
    /// message names the nearest one that is).
    pub fn finish(self, scheme: &str) -> Result<()> {
        self.nothing_left(&format!("{scheme}:// hubs"))
    }
}

/// Levenshtein distance: the fewest single-character edits that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Which parts of a hub it opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Publish and receive (the default).
    #[default]
    PubSub,
    /// Publish only: holds no receive cursor, so `block` publishers never wait for it.
    Publisher,
    /// Receive only.
    Subscriber,
}

impl Role {
    pub fn publishes(self) -> bool {
        self != Role::Subscriber
    }

    pub fn receives(self) -> bool {
        self != Role::Publisher
    }
}

/// The options every hub has, as the transport resolved them (its defaults filled in).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub role: Role,
    pub backpressure: Backpressure,
    pub publish_timeout: Duration,
    /// How long a waiting receiver spins (or polls the socket) before it parks.
    pub spin: Duration,
    /// The rate limit on publishing, if any.
    pub rate: Option<RateLimit>,
    /// The time to live of every message published without one of its own (`ttlMs`).
    pub ttl: Option<Duration>,
}

/// A transport's own options, given typed ([`HubOptions::with`]).
pub trait TransportOptions: Any + Send + Sync + core::fmt::Debug {
    /// The scheme they are for, for the error when they reach another transport.
    fn scheme(&self) -> &'static str;
    /// A copy (`HubOptions` is `Clone`).
    fn clone_boxed(&self) -> Box<dyn TransportOptions>;
}

/// A transport's options that can be read by name.
pub trait FromOptions: TransportOptions + Default + Clone + Sized {
    /// Takes this transport's names from `options` (leaving the others).
    fn take_from(options: &mut Options) -> Result<Self>;
}

/// Options of every hub, and the transport's own.
#[derive(Debug)]
pub struct HubOptions {
    pub role: Role,
    /// What publishing does when receivers are a whole queue behind (`None`: the
    /// transport's default).
    pub backpressure: Option<Backpressure>,
    /// How long `publish` may wait (`block`, or a slot another publisher is still writing).
    pub publish_timeout: Duration,
    /// How long a waiting receiver spins before it parks (`None`: the transport's default).
    pub spin: Option<Duration>,
    /// The largest message a ring slot holds (shared memory: the segment's slots;
    /// network transports: their receive ring's).
    pub slot_size: Option<u32>,
    /// Slots in the ring, a power of two.
    pub capacity: Option<u32>,
    /// The rate limit on publishing.
    pub rate: Option<RateLimit>,
    /// The time to live of every message published without one of its own (`ttlMs`).
    pub ttl: Option<Duration>,
    /// The transport's own options, typed (see [`HubOptions::with`]); they take the
    /// place of its options by name.
    pub specific: Option<Box<dyn TransportOptions>>,
    /// Options by name not taken yet: the transport takes its own, the rest are errors.
    pub named: Options,
}

impl Clone for HubOptions {
    fn clone(&self) -> Self {
        HubOptions {
            role: self.role,
            backpressure: self.backpressure,
            publish_timeout: self.publish_timeout,
            spin: self.spin,
            slot_size: self.slot_size,
            capacity: self.capacity,
            rate: self.rate,
            ttl: self.ttl,
            specific: self.specific.as_ref().map(|t| t.clone_boxed()),
            named: self.named.clone(),
        }
    }
}

/// The default of `publish_timeout`.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            role: Role::PubSub,
            backpressure: None,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            spin: None,
            slot_size: None,
            capacity: None,
            rate: None,
            ttl: None,
            specific: None,
            named: Options::default(),
        }
    }
}

impl HubOptions {
    /// These options with a transport's own (`UdpOptions { .. }`, …).
    pub fn with(mut self, specific: impl TransportOptions) -> Self {
        self.specific = Some(Box::new(specific));
        self
    }

    /// Reads the options every hub has from `named` (the rest stay for the transport).
    pub fn from_named(named: Options) -> Result<HubOptions> {
        let mut options = HubOptions::default();
        options.add_named(named)?;
        Ok(options)
    }

    /// Adds options by name (a URL's query, say): the ones every hub has set the fields
    /// here, the rest wait for the transport.
    pub fn add_named(&mut self, mut named: Options) -> Result<()> {
        match named.take_choice("role", &["pubsub", "publisher", "subscriber"])? {
            None => {}
            Some("pubsub") => self.role = Role::PubSub,
            Some("publisher") => self.role = Role::Publisher,
            _ => self.role = Role::Subscriber,
        }
        match named.take_choice("backpressure", &["drop_old", "drop_new", "block", "fail_fast"])? {
            None => {}
            Some("drop_old") => self.backpressure = Some(Backpressure::DropOld),
            Some("drop_new") => self.backpressure = Some(Backpressure::DropNew),
            Some("block") => self.backpressure = Some(Backpressure::Block),
            _ => self.backpressure = Some(Backpressure::FailFast),
        }
        if let Some(t) = named.take_ms("publishTimeoutMs")? {
            self.publish_timeout = t;
        }
        if let Some(s) = named.take_us("spinUs")? {
            self.spin = Some(s);
        }
        if let Some(s) = named.take_u32("slotSize", 1..=zerohop_shm::layout::MAX_SLOT_SIZE)? {
            self.slot_size = Some(s);
        }
        if let Some(c) = named.take_u32("capacity", 1..=zerohop_shm::layout::MAX_CAPACITY)? {
            if !c.is_power_of_two() {
                return Err(named.bad("capacity", format!("must be a power of two, got {c}")));
            }
            self.capacity = Some(c);
        }
        if let Some(rate) = RateLimit::take_from(&mut named)? {
            self.rate = Some(rate);
        }
        if let Some(ttl) = named.take_ms("ttlMs")? {
            if ttl.is_zero() {
                return Err(named.bad("ttlMs", "must be above 0"));
            }
            self.ttl = Some(ttl);
        }
        self.named.merge(named)
    }

    /// The transport's own options: the typed ones if given (an error if they are another
    /// transport's), else read from the named ones; then no named option may be left.
    pub fn take_specific<T: FromOptions>(&mut self, scheme: &str) -> Result<T> {
        let mut named = std::mem::take(&mut self.named);
        let out = match self.specific.as_ref() {
            Some(t) => match (t.as_ref() as &dyn Any).downcast_ref::<T>() {
                Some(t) => t.clone(),
                None => {
                    return Err(Error::new(
                        ErrorCode::BadOption,
                        format!("the options given are for {}:// hubs, not {scheme}://", t.scheme()),
                    ));
                }
            },
            None => T::take_from(&mut named)?,
        };
        named.finish(scheme)?;
        Ok(out)
    }

    /// For transports without options of their own: none may be given.
    pub fn no_specific(&mut self, scheme: &str) -> Result<()> {
        if let Some(t) = &self.specific {
            return Err(Error::new(
                ErrorCode::BadOption,
                format!("the options given are for {}:// hubs, not {scheme}://", t.scheme()),
            ));
        }
        std::mem::take(&mut self.named).finish(scheme)
    }

    /// The settings with the transport's defaults filled in and its policies checked:
    /// `backpressure` is `default` unless given, and must be one of `allowed` (`why`
    /// says what the transport does instead).
    pub fn settings(
        &self,
        scheme: &str,
        spin: Duration,
        default: Backpressure,
        allowed: &[Backpressure],
        why: &str,
    ) -> Result<Settings> {
        Ok(Settings {
            role: self.role,
            backpressure: self.backpressure_or(default, allowed, scheme, why)?,
            publish_timeout: self.publish_timeout,
            spin: self.spin.unwrap_or(spin),
            rate: self.rate,
            ttl: self.ttl,
        })
    }

    /// The policy: the one given, or `default`; an error if it is not in `allowed`
    /// (`why` says what the transport does instead).
    pub fn backpressure_or(
        &self,
        default: Backpressure,
        allowed: &[Backpressure],
        scheme: &str,
        why: &str,
    ) -> Result<Backpressure> {
        let policy = self.backpressure.unwrap_or(default);
        if !allowed.contains(&policy) {
            return Err(Error::new(
                ErrorCode::BadOption,
                format!("backpressure '{}' does not apply to {scheme}:// ({why})", policy_name(policy)),
            ));
        }
        Ok(policy)
    }
}

/// The name users write for a policy.
pub fn policy_name(p: Backpressure) -> &'static str {
    match p {
        Backpressure::DropOld => "drop_old",
        Backpressure::DropNew => "drop_new",
        Backpressure::Block => "block",
        Backpressure::FailFast => "fail_fast",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(entries: &[(&str, Value)]) -> Options {
        Options::new(entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    #[test]
    fn the_hub_takes_its_own_and_leaves_the_rest() {
        let o = named(&[
            ("role", Value::Text("subscriber".into())),
            ("spinUs", Value::Number(5.0)),
            ("capacity", Value::Number(64.0)),
            ("peers", Value::List(vec![Value::Text("h:1".into())])),
        ]);
        let mut h = HubOptions::from_named(o).unwrap();
        assert_eq!((h.role, h.spin, h.capacity), (Role::Subscriber, Some(Duration::from_micros(5)), Some(64)));
        assert_eq!(h.named.names().collect::<Vec<_>>(), ["peers"]);
        assert_eq!(h.named.take_texts("peers").unwrap(), Some(vec!["h:1".to_owned()]));
    }

    #[test]
    fn wrong_values_say_which_option_and_why() {
        let cases = [
            ("role", Value::Text("boss".into()), "role must be one of"),
            ("capacity", Value::Number(3.0), "capacity must be a power of two"),
            ("slotSize", Value::Number(0.0), "slotSize must be an integer in 1..="),
            ("spinUs", Value::Number(-1.0), "spinUs must be ≥ 0"),
            ("publishTimeoutMs", Value::Text("soon".into()), "publishTimeoutMs must be a number"),
        ];
        for (name, value, says) in cases {
            let err = HubOptions::from_named(named(&[(name, value)])).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadOption);
            assert!(err.message().contains(says), "{}", err.message());
        }
    }

    #[test]
    fn leftovers_are_errors_and_urls_are_text() {
        let err = named(&[("listen", Value::Bool(true))]).finish("udp").unwrap_err();
        assert_eq!(err.message(), "listen is not an option of udp:// hubs");
        // Once names were asked for, the nearest of them is named.
        let mut o = named(&[("bach", Value::Number(1.0))]);
        for name in ["batch", "peers", "ioUring"] {
            assert!(o.take(name).is_none());
        }
        assert_eq!(
            o.finish("udp").unwrap_err().message(),
            "bach is not an option of udp:// hubs (the nearest is 'batch')"
        );
        let mut o = Options::from_query(&[("iouring".into(), "force".into())]);
        let _ = o.take("ioUring");
        let _ = o.take("mode");
        let err = o.finish("udp").unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (ErrorCode::BadUrl, "iouring is not an option of udp:// hubs (the nearest is 'ioUring')")
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        let mut q = Options::from_query(&[("peers".into(), "a:1,b:2".into()), ("x".into(), "1".into())]);
        assert_eq!(q.take_texts("peers").unwrap().unwrap(), ["a:1", "b:2"]);
        assert_eq!(q.finish("udp").unwrap_err().code(), ErrorCode::BadUrl);
        let mut tls = named(&[("tls", Value::Map(named(&[("ca", Value::Number(1.0))])))]);
        let mut group = tls.take_group("tls").unwrap().unwrap();
        assert_eq!(group.take_text("ca").unwrap_err().message(), "tls.ca must be a string, got 1");
    }

    #[test]
    fn a_name_in_the_url_and_the_options_is_an_error() {
        let mut o = named(&[("batch", Value::Number(1.0))]);
        let q = Options::from_query(&[("batch".into(), "2".into())]);
        assert!(o.merge(q).unwrap_err().message().contains("batch is given twice"));
    }
}
