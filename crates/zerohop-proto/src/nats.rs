//! The NATS client protocol (core NATS, text control lines), free of I/O: what a server
//! sends parsed in place from the bytes a connection has read, and what a client sends
//! written into a buffer. `nats://` and the bridge drive it over their own sockets.
//!
//! - [`parse`] takes the bytes read so far and returns the first whole operation
//!   ([`ServerOp`]: `INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`), borrowing
//!   its subject and payload from them, with how many bytes it took; or says more are
//!   needed. A line or a payload over the [`Limits`] is a [`NatsError`], never a wait
//!   for bytes that must not be buffered.
//! - [`write_pub`], [`write_hpub`], [`write_sub`], [`write_unsub`], [`write_connect`] and
//!   the pings append a client operation.
//! - [`Headers`] reads and writes a header block (`NATS/1.0`, an optional status, then
//!   `Name: value` lines): zerohop's own metadata travels there, so that a message's body
//!   is exactly the bytes its codec made and plain NATS clients read it as it is.
//! - [`valid_subject`] and [`subject_matches`]: subjects are tokens separated by `.`; a
//!   subscription may use `*` for one token and `>` (last) for one or more.
//!
//! Operation names are matched without regard to case and arguments may be separated by
//! spaces or tabs, as the protocol allows.
//!
//! ```
//! use zerohop_proto::nats::{parse, write_pub, Limits, Parsed, ServerOp};
//!
//! let mut out = Vec::new();
//! write_pub(&mut out, "prices.eur", None, b"1.08").unwrap();
//! assert_eq!(out, b"PUB prices.eur 4\r\n1.08\r\n");
//!
//! let read = b"MSG prices.eur 7 4\r\n1.08\r\nPING\r\n";
//! let Parsed::Op(op, used) = parse(read, &Limits::default()).unwrap() else { panic!() };
//! assert_eq!(op, ServerOp::Msg { subject: "prices.eur", sid: 7, reply: None, headers: None, payload: b"1.08" });
//! assert_eq!(parse(&read[used..], &Limits::default()).unwrap(), Parsed::Op(ServerOp::Ping, 6));
//! ```

use core::fmt;
use std::collections::VecDeque;

/// How much the parser accepts before it calls the connection broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest control line, `\r\n` included (the server's `max_control_line`: 4096).
    pub max_line: usize,
    /// The largest message, headers and payload together (the server's `max_payload`, from
    /// its `INFO`: 1 MiB by default).
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_line: 4096, max_payload: 1 << 20 }
    }
}

/// What a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// `INFO {…}`: the server's JSON (its id, `max_payload`, whether it takes headers,
    /// other servers of its cluster…), as it came.
    Info(&'a [u8]),
    /// `MSG` (or `HMSG`, with `headers`): a message for subscription `sid`.
    Msg {
        subject: &'a str,
        sid: u64,
        reply: Option<&'a str>,
        headers: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Ok,
    /// `-ERR 'text'`: the text without its quotes.
    Err(&'a str),
}

/// What [`parse`] found at the start of the bytes read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole operation, and how many bytes it took.
    Op(ServerOp<'a>, usize),
    /// Not a whole operation yet: at least this many bytes in all are needed (when known).
    Incomplete(Option<usize>),
}

/// Why bytes from a server are not the NATS protocol (the connection cannot go on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsError {
    /// A control line longer than [`Limits::max_line`].
    LineTooLong(usize),
    /// A message larger than [`Limits::max_payload`].
    PayloadTooLarge(usize),
    /// An operation this client does not know.
    UnknownOp(String),
    /// A known operation with arguments that do not fit it.
    BadArguments(&'static str),
    /// A payload not followed by `\r\n`.
    MissingTerminator,
    /// A subject a client may not send (empty, with white space, an empty token, or a
    /// wildcard where none may be).
    BadSubject(String),
    /// A header name or value that cannot be written (a line break, a `:` in a name).
    BadHeader(String),
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong(n) => write!(f, "a NATS control line of more than {n} bytes"),
            Self::PayloadTooLarge(n) => write!(f, "a NATS message of {n} bytes, over the limit"),
            Self::UnknownOp(op) => write!(f, "an unknown NATS operation '{op}'"),
            Self::BadArguments(op) => write!(f, "bad arguments to NATS {op}"),
            Self::MissingTerminator => f.write_str("a NATS payload not followed by CRLF"),
            Self::BadSubject(s) => write!(f, "not a NATS subject: '{s}'"),
            Self::BadHeader(h) => write!(f, "not a NATS header: '{h}'"),
        }
    }
}

impl std::error::Error for NatsError {}

/// The first whole server operation in `read` (see the module's docs).
pub fn parse<'a>(read: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, NatsError> {
    let Some(end) = read.windows(2).position(|w| w == b"\r\n") else {
        // No line end yet: wait, unless the line already cannot fit.
        return if read.len() >= limits.max_line {
            Err(NatsError::LineTooLong(limits.max_line))
        } else {
            Ok(Parsed::Incomplete(None))
        };
    };
    if end + 2 > limits.max_line {
        return Err(NatsError::LineTooLong(limits.max_line));
    }
    let line = &read[..end];
    let after = end + 2;
    let (op, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let is = |name: &[u8]| op.eq_ignore_ascii_case(name);
    if is(b"MSG") || is(b"HMSG") {
        return message(read, rest, after, is(b"HMSG"), limits);
    }
    let op = if is(b"PING") {
        ServerOp::Ping
    } else if is(b"PONG") {
        ServerOp::Pong
    } else if is(b"+OK") {
        ServerOp::Ok
    } else if is(b"-ERR") {
        let text = core::str::from_utf8(trim(rest)).map_err(|_| NatsError::BadArguments("-ERR"))?;
        ServerOp::Err(text.trim_matches('\''))
    } else if is(b"INFO") {
        ServerOp::Info(trim(rest))
    } else {
        return Err(NatsError::UnknownOp(String::from_utf8_lossy(op).into_owned()));
    };
    Ok(Parsed::Op(op, after))
}

/// `MSG <subject> <sid> [reply] <bytes>` or `HMSG <subject> <sid> [reply] <header bytes> <bytes>`.
fn message<'a>(
    read: &'a [u8],
    args: &'a [u8],
    after: usize,
    with_headers: bool,
    limits: &Limits,
) -> Result<Parsed<'a>, NatsError> {
    let name = if with_headers { "HMSG" } else { "MSG" };
    let bad = || NatsError::BadArguments(name);
    let mut words = args.split(|b| *b == b' ' || *b == b'\t').filter(|w| !w.is_empty());
    let mut next = || words.next();
    let parts: [Option<&[u8]>; 5] = [next(), next(), next(), next(), next()];
    if next().is_some() {
        return Err(bad());
    }
    let given = parts.iter().take_while(|p| p.is_some()).count();
    let (reply, numbers): (Option<&[u8]>, &[Option<&[u8]>]) = match (with_headers, given) {
        (false, 3) => (None, &parts[2..3]),
        (false, 4) => (parts[2], &parts[3..4]),
        (true, 4) => (None, &parts[2..4]),
        (true, 5) => (parts[2], &parts[3..5]),
        _ => return Err(bad()),
    };
    let subject = core::str::from_utf8(parts[0].ok_or_else(bad)?).map_err(|_| bad())?;
    let sid = number(parts[1].ok_or_else(bad)?).ok_or_else(bad)?;
    let reply = reply.map(core::str::from_utf8).transpose().map_err(|_| bad())?;
    let total = number(numbers.last().copied().flatten().ok_or_else(bad)?).ok_or_else(bad)? as usize;
    let header_len = if with_headers { number(numbers[0].ok_or_else(bad)?).ok_or_else(bad)? as usize } else { 0 };
    if header_len > total {
        return Err(bad());
    }
    if total > limits.max_payload {
        return Err(NatsError::PayloadTooLarge(total));
    }
    let need = after + total + 2;
    if read.len() < need {
        return Ok(Parsed::Incomplete(Some(need)));
    }
    if &read[after + total..need] != b"\r\n" {
        return Err(NatsError::MissingTerminator);
    }
    let body = &read[after..after + total];
    let headers = with_headers.then(|| &body[..header_len]);
    Ok(Parsed::Op(ServerOp::Msg { subject, sid, reply, headers, payload: &body[header_len..] }, need))
}

/// A decimal number of at most 18 digits (more would not fit any limit).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Whether a client may send `subject`: tokens of printable characters (no white space),
/// none empty, separated by `.`; with `wildcards` (a subscription) a token may be `*`, and
/// the last may be `>`.
pub fn valid_subject(subject: &str, wildcards: bool) -> bool {
    if subject.is_empty() || subject.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return false;
    }
    // (Without collecting the tokens: every publish checks its subject.)
    let mut tokens = subject.split('.').peekable();
    while let Some(t) = tokens.next() {
        let ok = !t.is_empty()
            && match t {
                "*" => wildcards,
                ">" => wildcards && tokens.peek().is_none(),
                _ => true,
            };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether a message on `subject` reaches a subscription to `pattern` (`*` matches one
/// token, a last `>` one or more).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

fn check_subject(subject: &str, wildcards: bool) -> Result<(), NatsError> {
    if valid_subject(subject, wildcards) { Ok(()) } else { Err(NatsError::BadSubject(subject.to_owned())) }
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(decimal(n as u64, &mut [0; 20]).as_bytes());
}

/// `n` in decimal, written into `buf` (no allocation: subjects and headers carry numbers
/// on every message).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    core::str::from_utf8(&buf[i..]).expect("digits")
}

/// Appends `PUB <subject> [reply] <bytes>` and the payload.
pub fn write_pub(out: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) -> Result<(), NatsError> {
    write_message(out, subject, reply, None, payload)
}

/// Appends `HPUB <subject> [reply] <header bytes> <bytes>`, the header block and the payload.
pub fn write_hpub(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: &Headers,
    payload: &[u8],
) -> Result<(), NatsError> {
    write_message(out, subject, reply, Some(&headers.encode()), payload)
}

/// `PUB`, or with a header `block` (encoded), `HPUB`.
fn write_message(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    block: Option<&[u8]>,
    payload: &[u8],
) -> Result<(), NatsError> {
    check_subject(subject, false)?;
    if let Some(r) = reply {
        check_subject(r, false)?;
    }
    out.extend_from_slice(if block.is_some() { b"HPUB " } else { b"PUB " });
    out.extend_from_slice(subject.as_bytes());
    if let Some(r) = reply {
        out.push(b' ');
        out.extend_from_slice(r.as_bytes());
    }
    out.push(b' ');
    let block = block.unwrap_or_default();
    if !block.is_empty() {
        push_decimal(out, block.len());
        out.push(b' ');
    }
    push_decimal(out, block.len() + payload.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(block);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends `SUB <subject> [queue group] <sid>`.
pub fn write_sub(out: &mut Vec<u8>, subject: &str, queue: Option<&str>, sid: u64) -> Result<(), NatsError> {
    check_subject(subject, true)?;
    if let Some(q) = queue
        && (q.is_empty() || q.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
    {
        return Err(NatsError::BadSubject(q.to_owned()));
    }
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(q) = queue {
        out.push(b' ');
        out.extend_from_slice(q.as_bytes());
    }
    out.push(b' ');
    push_decimal(out, sid as usize);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends `UNSUB <sid> [max]` (with `max`: after that many more messages).
pub fn write_unsub(out: &mut Vec<u8>, sid: u64, max: Option<u64>) {
    out.extend_from_slice(b"UNSUB ");
    push_decimal(out, sid as usize);
    if let Some(m) = max {
        out.push(b' ');
        push_decimal(out, m as usize);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `CONNECT {json}` (the JSON is the caller's: options, credentials).
pub fn write_connect(out: &mut Vec<u8>, json: &str) {
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn write_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

pub fn write_pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// A header block: an optional status (`503 No Responders`) and `Name: value` lines in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// The status code after `NATS/1.0`, if any (`503`: no responders to a request).
    pub status: Option<u16>,
    /// Its description, if any.
    pub description: String,
    pub entries: Vec<(String, String)>,
}

impl Headers {
    /// Adds `name: value`; names are ASCII without white space or `:`, values without line breaks.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), NatsError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(NatsError::BadHeader(name.to_owned()));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(NatsError::BadHeader(value.to_owned()));
        }
        self.entries.push((name.to_owned(), value.to_owned()));
        Ok(())
    }

    /// The first value of `name` (names match without regard to case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The block as it goes on the wire, blank line included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"NATS/1.0".to_vec();
        if let Some(code) = self.status {
            out.push(b' ');
            push_decimal(&mut out, usize::from(code));
            if !self.description.is_empty() {
                out.push(b' ');
                out.extend_from_slice(self.description.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.entries {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Reads a block (`HMSG`'s headers).
    pub fn decode(block: &[u8]) -> Result<Self, NatsError> {
        let bad = || NatsError::BadHeader(String::from_utf8_lossy(block).into_owned());
        let text = core::str::from_utf8(block).map_err(|_| bad())?;
        let mut lines = text.split("\r\n");
        let first = lines.next().ok_or_else(bad)?;
        let status_part = first.strip_prefix("NATS/1.0").ok_or_else(bad)?.trim();
        let mut headers = Self::default();
        if !status_part.is_empty() {
            let (code, description) = status_part.split_once(' ').unwrap_or((status_part, ""));
            headers.status = Some(code.parse().map_err(|_| bad())?);
            headers.description = description.trim().to_owned();
        }
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let (name, value) = line.split_once(':').ok_or_else(bad)?;
            headers.entries.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(headers)
    }
}

/// The value of header `name` in an encoded header `block` (the first, names compared
/// without regard to case), without decoding the rest: what a receiver checks on every
/// message.
pub fn header_value<'a>(block: &'a [u8], name: &str) -> Option<&'a str> {
    // Line by line on the bytes: only the value found is checked as UTF-8.
    block.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (n, v) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if n.eq_ignore_ascii_case(name.as_bytes()) { core::str::from_utf8(v).ok() } else { None }
    })
}

/// What a server's `INFO` says that a client acts on (the rest of its JSON is skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub server_id: String,
    /// The largest message it takes (headers and payload).
    pub max_payload: usize,
    /// Whether it takes `HPUB` (and may send `HMSG`).
    pub headers: bool,
    /// Whether it requires TLS, or offers it to clients that want it.
    pub tls_required: bool,
    pub tls_available: bool,
    /// Other servers of its cluster, `host:port` (where a client could reconnect; the
    /// `nats://` transport reconnects to its URL's server).
    pub connect_urls: Vec<String>,
    /// What to sign, when the server wants a signature (nkeys).
    pub nonce: Option<String>,
}

impl ServerInfo {
    /// Reads an `INFO`'s JSON object; fields it does not know or cannot read keep their
    /// defaults (`max_payload`: 1 MiB).
    pub fn parse(json: &[u8]) -> Result<Self, NatsError> {
        let bad = || NatsError::BadArguments("INFO");
        let mut info = Self { max_payload: 1 << 20, ..Self::default() };
        let mut j = Json { s: json, at: 0 };
        j.expect(b'{').ok_or_else(bad)?;
        if j.peek() == Some(b'}') {
            return Ok(info);
        }
        loop {
            let key = j.string().ok_or_else(bad)?;
            j.expect(b':').ok_or_else(bad)?;
            match key.as_str() {
                "server_id" => info.server_id = j.string().ok_or_else(bad)?,
                "max_payload" => info.max_payload = j.number().ok_or_else(bad)? as usize,
                "headers" => info.headers = j.boolean().ok_or_else(bad)?,
                "tls_required" => info.tls_required = j.boolean().ok_or_else(bad)?,
                "tls_available" => info.tls_available = j.boolean().ok_or_else(bad)?,
                "nonce" => info.nonce = Some(j.string().ok_or_else(bad)?),
                "connect_urls" => info.connect_urls = j.strings().ok_or_else(bad)?,
                _ => j.skip(0).ok_or_else(bad)?,
            }
            match j.next() {
                Some(b',') => {}
                Some(b'}') => return Ok(info),
                _ => return Err(bad()),
            }
        }
    }
}

/// Just enough JSON for `INFO`: strings, numbers, booleans, arrays of strings, and
/// skipping any value (objects and arrays nested to a bounded depth).
struct Json<'a> {
    s: &'a [u8],
    at: usize,
}

impl Json<'_> {
    fn white(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.white();
        self.s.get(self.at).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }
    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.at)?;
            self.at += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.at)?;
                    self.at += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = core::str::from_utf8(self.s.get(self.at..self.at + 4)?).ok()?;
                            self.at += 4;
                            let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?).unwrap_or('\u{fffd}');
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                _ => out.push(b),
            }
        }
    }
    fn number(&mut self) -> Option<u64> {
        self.white();
        let start = self.at;
        while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        number(&self.s[start..self.at])
    }
    fn boolean(&mut self) -> Option<bool> {
        self.white();
        for (word, v) in [(&b"true"[..], true), (&b"false"[..], false)] {
            if self.s[self.at..].starts_with(word) {
                self.at += word.len();
                return Some(v);
            }
        }
        None
    }
    fn strings(&mut self) -> Option<Vec<String>> {
        self.expect(b'[')?;
        let mut out = Vec::new();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(out);
        }
        loop {
            out.push(self.string()?);
            match self.next()? {
                b',' => {}
                b']' => return Some(out),
                _ => return None,
            }
        }
    }
    /// Skips one value of any kind.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > 16 {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let close = if self.next()? == b'{' { b'}' } else { b']' };
                if self.peek()? == close {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    if close == b'}' {
                        self.string()?;
                        self.expect(b':')?;
                    }
                    self.skip(depth + 1)?;
                    match self.next()? {
                        b',' => {}
                        b if b == close => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => {
                // A number, true, false or null: up to the next delimiter.
                let start = self.at;
                while self.s.get(self.at).is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                {
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }
}

/// The string value of `key` at the top level of the JSON object `json`, if it has one.
pub fn json_string_field(json: &[u8], key: &str) -> Option<String> {
    let mut j = Json { s: json, at: 0 };
    j.expect(b'{')?;
    if j.peek() == Some(b'}') {
        return None;
    }
    loop {
        let k = j.string()?;
        j.expect(b':')?;
        if k == key {
            return j.string();
        }
        j.skip(0)?;
        match j.next()? {
            b',' => {}
            _ => return None,
        }
    }
}

/// What a [`Session`] hands its driver as it reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The server answered the first `PING` after `CONNECT`: subscribed, ready.
    Connected,
    /// A message for a subscription.
    Message { sid: u64, subject: &'a str, reply: Option<&'a str>, headers: Option<&'a [u8]>, payload: &'a [u8] },
    /// `-ERR`: the server's complaint (it closes the connection after most).
    ServerError(&'a str),
}

/// A subscription a session keeps across reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    sid: u64,
    subject: String,
    queue: Option<String>,
}

/// Where a session is on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server's `INFO`.
    Greeting,
    /// `CONNECT`, the subscriptions and a `PING` sent: waiting for its `PONG`.
    Confirming,
    Connected,
}

/// What a session has to send: operations end to end, and the length of each not yet
/// wholly written, so that a connection lost in the middle of one drops only that one
/// (the next connection cannot finish it) and keeps the rest for the next.
///
/// The bytes lie in chunks of about [`CHUNK`], each holding whole operations: a chunk
/// written goes (to be reused), so what waits is never moved to the front of a buffer
/// (which, with a queue of megabytes written a socket's worth at a time, copied every
/// byte once more).
#[derive(Debug, Default)]
struct Output {
    /// Oldest first; the last takes the next operation while it has room for it.
    chunks: VecDeque<Vec<u8>>,
    /// Bytes at the front of the first chunk already written.
    sent: usize,
    /// Bytes not yet written, in all the chunks.
    unsent: usize,
    /// The length of each operation not wholly written, oldest first.
    ops: VecDeque<usize>,
    /// Bytes of the oldest of them already written.
    front_sent: usize,
    /// Chunks written, emptied, to take operations again.
    spare: Vec<Vec<u8>>,
}

/// A chunk's room (an operation longer than that gets a chunk its own size)...
const CHUNK: usize = 128 << 10;
/// ...but the first's, while nothing else waits.
const FIRST_CHUNK: usize = 4 << 10;

/// Room for an operation's words around its subject and payload.
const SMALL_OP: usize = 64;

/// Spare chunks an output keeps (the rest of what a burst needed is given back).
const SPARE_CHUNKS: usize = 4;

impl Output {
    /// Appends one operation of about `size` bytes (a hint: the chunk it goes into has
    /// room for it), written by `write` (nothing if it fails).
    fn op<R>(&mut self, size: usize, write: impl FnOnce(&mut Vec<u8>) -> Result<R, NatsError>) -> Result<R, NatsError> {
        if self.chunks.back().is_none_or(|c| c.capacity() - c.len() < size) {
            // (A first chunk starts small: a hub that never sends much keeps little; after
            // a burst, at most `SPARE_CHUNKS` chunks stay.)
            let room = if self.chunks.is_empty() { FIRST_CHUNK } else { CHUNK };
            let mut chunk = self.spare.pop().unwrap_or_default();
            chunk.reserve(size.max(room));
            self.chunks.push_back(chunk);
        }
        let chunk = self.chunks.back_mut().expect("one was just made if there was none");
        let before = chunk.len();
        match write(chunk) {
            Ok(r) => {
                if chunk.len() > before {
                    self.ops.push_back(chunk.len() - before);
                    self.unsent += chunk.len() - before;
                }
                Ok(r)
            }
            Err(e) => {
                chunk.truncate(before);
                if chunk.is_empty() {
                    // (Made for this operation: no empty chunk stays in the queue.)
                    let chunk = self.chunks.pop_back().expect("the back chunk");
                    self.let_go(chunk);
                }
                Err(e)
            }
        }
    }

    /// Appends an operation made already.
    fn push(&mut self, op: &[u8]) {
        let _ = self.op(op.len(), |o| {
            o.extend_from_slice(op);
            Ok(())
        });
    }

    /// What waits to be written, in order: up to `parts.len()` pieces into `parts`, how
    /// many.
    fn pending<'a>(&'a self, parts: &mut [&'a [u8]]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let from = if i == 0 { self.sent } else { 0 };
            if n == parts.len() {
                break;
            }
            if from < chunk.len() {
                parts[n] = &chunk[from..];
                n += 1;
            }
        }
        n
    }

    /// The first piece of what waits (empty: nothing does).
    fn first(&self) -> &[u8] {
        let mut part: [&[u8]; 1] = [&[]];
        self.pending(&mut part);
        part[0]
    }

    fn written(&mut self, n: usize) {
        let n = n.min(self.unsent);
        self.skip(n);
        self.front_sent += n;
        while let Some(&len) = self.ops.front()
            && self.front_sent >= len
        {
            self.front_sent -= len;
            self.ops.pop_front();
        }
    }

    /// Passes over `n` bytes of what waits (written, or dropped), letting go of the
    /// chunks they empty.
    fn skip(&mut self, mut n: usize) {
        self.unsent -= n;
        while n > 0 {
            let front = self.chunks.front().expect("bytes unsent lie in a chunk");
            let left = front.len() - self.sent;
            if n < left {
                self.sent += n;
                return;
            }
            n -= left;
            self.sent = 0;
            let chunk = self.chunks.pop_front().expect("the front chunk");
            self.let_go(chunk);
        }
    }

    fn let_go(&mut self, mut chunk: Vec<u8>) {
        if self.spare.len() < SPARE_CHUNKS && chunk.capacity() <= 2 * CHUNK {
            chunk.clear();
            self.spare.push(chunk);
        }
    }

    /// Drops the operation the last connection wrote part of; its bytes so dropped.
    fn drop_partial(&mut self) -> usize {
        if self.front_sent == 0 {
            return 0;
        }
        let rest = self.ops.pop_front().expect("a partly written operation") - self.front_sent;
        self.skip(rest);
        self.front_sent = 0;
        rest
    }

    /// Bytes not yet written.
    fn len(&self) -> usize {
        self.unsent
    }

    /// Drops everything unsent: how many bytes.
    fn clear(&mut self) -> usize {
        let n = self.unsent;
        while let Some(chunk) = self.chunks.pop_front() {
            self.let_go(chunk);
        }
        (self.sent, self.unsent, self.front_sent) = (0, 0, 0);
        self.ops.clear();
        n
    }

    /// The operations not yet written, whole (none was begun: see `drop_partial`).
    fn unsent_ops(&self) -> impl Iterator<Item = &[u8]> {
        debug_assert_eq!(self.front_sent, 0);
        let (mut chunk, mut at) = (0, self.sent);
        self.ops.iter().map(move |&len| {
            // (Operations never straddle chunks: one that ends a chunk is followed by
            // the next chunk's first.)
            while at == self.chunks[chunk].len() {
                (chunk, at) = (chunk + 1, 0);
            }
            at += len;
            &self.chunks[chunk][at - len..at]
        })
    }
}

/// A client's side of a connection to a NATS server, free of I/O (the quinn-proto model):
/// the driver feeds it what the socket read ([`Session::read`]) and writes what it asks
/// ([`Session::output`]); timers are the driver's, given as ticks ([`Session::tick`]).
/// Subscriptions outlive a connection: after [`Session::reset`] the next `INFO` brings
/// them back on the new one, and what was published meanwhile follows them.
#[derive(Debug)]
pub struct Session {
    connect: String,
    phase: Phase,
    out: Output,
    /// Messages published before the server confirmed the connection: they go once it
    /// has (a server that refuses the connection has not taken them).
    backlog: Output,
    subs: Vec<Subscription>,
    next_sid: u64,
    /// `PING`s sent that no `PONG` answered yet.
    pings_out: u32,
    limits: Limits,
    info: ServerInfo,
    /// Signs the server's nonce (nkeys: see [`Session::sign_nonce_with`]).
    signer: Option<Signer>,
    /// `INFO`s read (a server sends more when its cluster changes).
    infos: u64,
}

/// What signs a server's nonce: the signature, base64url ([`crate::nkeys::base64url`]).
pub struct Signer(Box<SignFn>);

type SignFn = dyn Fn(&[u8]) -> String + Send;

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer")
    }
}

impl Session {
    /// A session that will send `connect` (the `CONNECT` JSON: name, credentials,
    /// `headers`, `no_responders`, `echo`) once the server greets it.
    pub fn new(connect: impl Into<String>) -> Self {
        Self {
            connect: connect.into(),
            phase: Phase::Greeting,
            out: Output::default(),
            backlog: Output::default(),
            subs: Vec::new(),
            next_sid: 1,
            pings_out: 0,
            limits: Limits::default(),
            info: ServerInfo::default(),
            signer: None,
            infos: 0,
        }
    }

    /// How many `INFO`s the session read (each replaces [`Session::server`]).
    pub fn infos(&self) -> u64 {
        self.infos
    }

    /// Signs the nonce of each server that sends one with `sign` (an nkey's Ed25519
    /// key): its `CONNECT` carries the signature as `sig` (the public key or the JWT it
    /// is checked against being in the `CONNECT` JSON already).
    pub fn sign_nonce_with(&mut self, sign: impl Fn(&[u8]) -> String + Send + 'static) {
        self.signer = Some(Signer(Box::new(sign)));
    }

    /// Whether the server confirmed the connection (and the subscriptions on it).
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Whether the server greeted this connection (and the session said `CONNECT`): only
    /// then may [`Session::output`] be written to it.
    pub fn greeted(&self) -> bool {
        self.phase != Phase::Greeting
    }

    /// The server's `INFO`, once it greeted this connection.
    pub fn server(&self) -> &ServerInfo {
        &self.info
    }

    /// Subscribes to `subject` (wildcards allowed), in `queue`'s group if given: its id.
    /// Sent now if connected, else as the connection is made.
    pub fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> Result<u64, NatsError> {
        let sid = self.next_sid;
        write_sub(&mut Vec::new(), subject, queue, sid)?;
        self.next_sid += 1;
        self.subs.push(Subscription { sid, subject: subject.to_owned(), queue: queue.map(str::to_owned) });
        if self.greeted() {
            self.out.op(SMALL_OP + subject.len(), |o| write_sub(o, subject, queue, sid))?;
        }
        Ok(sid)
    }

    /// Ends subscription `sid`.
    pub fn unsubscribe(&mut self, sid: u64) {
        let before = self.subs.len();
        self.subs.retain(|s| s.sid != sid);
        if self.subs.len() < before && self.greeted() {
            let _ = self.out.op(SMALL_OP, |o| {
                write_unsub(o, sid, None);
                Ok(())
            });
        }
    }

    /// Publishes `payload` on `subject` (with `headers`, when given and not empty). Refused
    /// when larger than the server takes, or with headers it does not take.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&Headers>,
        payload: &[u8],
    ) -> Result<(), NatsError> {
        let block = headers.filter(|h| h.status.is_some() || !h.entries.is_empty()).map(Headers::encode);
        self.publish_with_block(subject, reply, block.as_deref(), payload)
    }

    /// [`Session::publish`] with a header block encoded already ([`Headers::encode`]): for
    /// headers that are the same on every message, encoded once.
    pub fn publish_with_block(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        block: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), NatsError> {
        let greeted = self.greeted();
        if block.is_some() && greeted && !self.info.headers {
            return Err(NatsError::BadHeader("the server takes no headers".to_owned()));
        }
        let size = payload.len() + block.map_or(0, <[u8]>::len);
        if greeted && size > self.info.max_payload {
            return Err(NatsError::PayloadTooLarge(size));
        }
        let to = if self.phase == Phase::Connected { &mut self.out } else { &mut self.backlog };
        let hint = SMALL_OP + subject.len() + reply.map_or(0, str::len) + size;
        to.op(hint, |o| write_message(o, subject, reply, block, payload))
    }

    /// The first piece of what waits to be written to the socket (empty: nothing does);
    /// call [`Session::written`] with how much was.
    pub fn output(&self) -> &[u8] {
        self.out.first()
    }

    /// What waits to be written to the socket, in order: up to `parts.len()` pieces
    /// into `parts` (for one vectored write), how many.
    pub fn output_parts<'a>(&'a self, parts: &mut [&'a [u8]]) -> usize {
        self.out.pending(parts)
    }

    /// `n` bytes of [`Session::output_parts`] were written.
    pub fn written(&mut self, n: usize) {
        self.out.written(n);
    }

    /// Handles what the socket read, `read` (from where the last call left off): each
    /// event goes to `on`. Returns how many bytes it took (the rest is an unfinished
    /// operation: keep it and append to it), or why the connection cannot go on.
    pub fn read(&mut self, read: &[u8], mut on: impl FnMut(Event<'_>)) -> Result<usize, NatsError> {
        let mut at = 0;
        loop {
            let (op, n) = match parse(&read[at..], &self.limits)? {
                Parsed::Op(op, n) => (op, n),
                Parsed::Incomplete(_) => return Ok(at),
            };
            at += n;
            match op {
                ServerOp::Info(json) => {
                    self.info = ServerInfo::parse(json)?;
                    self.infos += 1;
                    self.limits.max_payload = self.info.max_payload;
                    if self.phase == Phase::Greeting {
                        self.greet();
                    }
                }
                ServerOp::Ping => {
                    let _ = self.out.op(SMALL_OP, |o| {
                        write_pong(o);
                        Ok(())
                    });
                }
                ServerOp::Pong => {
                    self.pings_out = self.pings_out.saturating_sub(1);
                    if self.phase == Phase::Confirming {
                        self.phase = Phase::Connected;
                        for op in self.backlog.unsent_ops() {
                            self.out.push(op);
                        }
                        self.backlog.clear();
                        on(Event::Connected);
                    }
                }
                ServerOp::Ok => {}
                ServerOp::Err(text) => on(Event::ServerError(text)),
                ServerOp::Msg { subject, sid, reply, headers, payload } => {
                    on(Event::Message { sid, subject, reply, headers, payload })
                }
            }
        }
    }

    /// `CONNECT`, every subscription, and a `PING` whose `PONG` says they were taken;
    /// what was published while there was no connection waits for that `PONG`.
    fn greet(&mut self) {
        self.out.clear();
        let signed = match (&self.signer, &self.info.nonce) {
            (Some(Signer(sign)), Some(nonce)) => {
                let sig = sign(nonce.as_bytes());
                let base = self.connect.trim_end().strip_suffix('}').unwrap_or(&self.connect);
                let comma = if base.trim_end().ends_with('{') { "" } else { "," };
                Some(format!("{base}{comma}\"sig\":\"{sig}\"}}"))
            }
            _ => None,
        };
        let connect = signed.as_ref().unwrap_or(&self.connect);
        let _ = self.out.op(SMALL_OP + connect.len(), |o| {
            write_connect(o, connect);
            Ok(())
        });
        for s in &self.subs {
            self.out
                .op(SMALL_OP + s.subject.len(), |o| write_sub(o, &s.subject, s.queue.as_deref(), s.sid))
                .expect("checked as it was subscribed");
        }
        self.ping();
        self.phase = Phase::Confirming;
    }

    fn ping(&mut self) {
        let _ = self.out.op(SMALL_OP, |o| {
            write_ping(o);
            Ok(())
        });
        self.pings_out += 1;
    }

    /// A ping interval passed: sends a `PING`. False when `max_out` were sent before it
    /// without an answer (the connection is stale: reset it and reconnect).
    pub fn tick(&mut self, max_out: u32) -> bool {
        if self.phase == Phase::Greeting {
            return true;
        }
        if self.pings_out >= max_out {
            return false;
        }
        self.ping();
        true
    }

    /// The connection is gone: the next one starts from its greeting. What was published
    /// and not yet written stays, to go out on the next connection (`keep_pending`), or
    /// is dropped; how many bytes were dropped (an operation the lost connection wrote
    /// only part of is dropped either way: the next cannot finish it). Control operations
    /// waiting (pongs, subscriptions, pings) go too: the next greeting says what it must.
    pub fn reset(&mut self, keep_pending: bool) -> usize {
        let was = self.phase;
        self.phase = Phase::Greeting;
        self.pings_out = 0;
        let partial = self.out.drop_partial();
        if !keep_pending {
            return partial + self.out.clear() + self.backlog.clear();
        }
        if was == Phase::Connected {
            // Only messages go on to the next connection: the rest is this one's.
            for op in self.out.unsent_ops().filter(|op| op.starts_with(b"PUB ") || op.starts_with(b"HPUB ")) {
                self.backlog.push(op);
            }
        }
        // (Greeting, nothing was written; confirming, what was published is the backlog.)
        self.out.clear();
        partial
    }

    /// Bytes waiting to be written (messages held for the connection's confirmation too).
    pub fn pending_bytes(&self) -> usize {
        self.out.len() + self.backlog.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(read: &[u8]) -> (ServerOp<'_>, usize) {
        match parse(read, &Limits::default()).unwrap() {
            Parsed::Op(op, n) => (op, n),
            Parsed::Incomplete(_) => panic!("incomplete: {:?}", String::from_utf8_lossy(read)),
        }
    }

    #[test]
    fn every_server_operation() {
        assert_eq!(
            op(b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n").0,
            ServerOp::Info(b"{\"server_id\":\"x\",\"max_payload\":1048576}")
        );
        assert_eq!(op(b"PING\r\n"), (ServerOp::Ping, 6));
        assert_eq!(op(b"pong\r\n"), (ServerOp::Pong, 6), "names in any case");
        assert_eq!(op(b"+OK\r\n"), (ServerOp::Ok, 5));
        assert_eq!(op(b"-ERR 'Unknown Protocol Operation'\r\n").0, ServerOp::Err("Unknown Protocol Operation"));
        assert_eq!(
            op(b"MSG a.b 9 _INBOX.x 3\r\nabc\r\n"),
            (ServerOp::Msg { subject: "a.b", sid: 9, reply: Some("_INBOX.x"), headers: None, payload: b"abc" }, 27)
        );
        assert_eq!(
            op(b"MSG\ta.b\t9\t0\r\n\r\n").0,
            ServerOp::Msg { subject: "a.b", sid: 9, reply: None, headers: None, payload: b"" },
            "tabs"
        );
        let hmsg = b"HMSG a 1 23 26\r\nNATS/1.0\r\nK: vvvvvv\r\n\r\nabc\r\n";
        let (m, n) = op(hmsg);
        assert_eq!(n, hmsg.len());
        let ServerOp::Msg { headers: Some(h), payload, reply: None, .. } = m else { panic!("{m:?}") };
        assert_eq!(payload, b"abc");
        assert_eq!(Headers::decode(h).unwrap().get("k"), Some("vvvvvv"));
    }

    #[test]
    fn refuses_what_is_not_nats() {
        let l = Limits::default();
        assert_eq!(parse(b"HELLO\r\n", &l), Err(NatsError::UnknownOp("HELLO".into())));
        assert_eq!(parse(b"MSG a 1\r\n", &l), Err(NatsError::BadArguments("MSG")));
        assert_eq!(parse(b"MSG a x 1\r\nz\r\n", &l), Err(NatsError::BadArguments("MSG")));
        assert_eq!(parse(b"MSG a 1 2 3 4\r\n", &l), Err(NatsError::BadArguments("MSG")));
        assert_eq!(
            parse(b"HMSG a 1 5 3\r\n", &l),
            Err(NatsError::BadArguments("HMSG")),
            "headers longer than the whole"
        );
        assert_eq!(parse(b"MSG a 1 3\r\nabcXY", &l), Err(NatsError::MissingTerminator));
        let small = Limits { max_line: 16, max_payload: 8 };
        assert_eq!(parse(b"MSG a 1 9\r\n", &small), Err(NatsError::PayloadTooLarge(9)));
        assert_eq!(
            parse(b"INFO 0123456789abcdef", &small),
            Err(NatsError::LineTooLong(16)),
            "no line end within the limit"
        );
        assert_eq!(parse(b"INFO 0123456789\r\n", &small), Err(NatsError::LineTooLong(16)));
        assert_eq!(parse(b"MSG a 1 99999999999999999999\r\n", &l), Err(NatsError::BadArguments("MSG")));
    }

    #[test]
    fn waits_for_the_rest() {
        let l = Limits::default();
        assert_eq!(parse(b"PIN", &l), Ok(Parsed::Incomplete(None)));
        assert_eq!(parse(b"MSG a 1 3\r\nab", &l), Ok(Parsed::Incomplete(Some(16))));
    }

    #[test]
    fn client_operations() {
        let mut out = Vec::new();
        write_connect(&mut out, r#"{"verbose":false,"headers":true}"#);
        write_sub(&mut out, "prices.>", Some("workers"), 12).unwrap();
        write_unsub(&mut out, 12, Some(5));
        write_pub(&mut out, "a.b", Some("_INBOX.1"), b"hi").unwrap();
        write_ping(&mut out);
        write_pong(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB prices.> workers 12\r\nUNSUB 12 5\r\nPUB a.b _INBOX.1 2\r\nhi\r\nPING\r\nPONG\r\n"
        );
        let mut out = Vec::new();
        assert_eq!(
            write_pub(&mut out, "a.*", None, b""),
            Err(NatsError::BadSubject("a.*".into())),
            "no wildcards in a publish"
        );
        assert_eq!(write_pub(&mut out, "a b", None, b""), Err(NatsError::BadSubject("a b".into())));
        assert_eq!(write_sub(&mut out, "a.>.b", None, 1), Err(NatsError::BadSubject("a.>.b".into())));
        assert_eq!(write_sub(&mut out, "a", Some("w x"), 1), Err(NatsError::BadSubject("w x".into())));
        assert!(out.is_empty(), "nothing written for what was refused");
    }

    #[test]
    fn headers_round_trip_and_statuses() {
        let mut h = Headers::default();
        h.insert("Zerohop-Origin", "host-a/17").unwrap();
        h.insert("Nats-Msg-Id", "42").unwrap();
        assert!(h.insert("Bad Name", "x").is_err());
        assert!(h.insert("Name", "line\r\nbreak").is_err());
        let mut out = Vec::new();
        write_hpub(&mut out, "a", None, &h, b"body").unwrap();
        let block = h.encode();
        assert!(out.starts_with(format!("HPUB a {} {}\r\nNATS/1.0\r\n", block.len(), block.len() + 4).as_bytes()));
        // What a subscriber gets: the same block and body, as HMSG.
        let delivered = [b"HMSG a 1".as_slice(), &out[b"HPUB a".len()..]].concat();
        let (m, n) = op(&delivered);
        assert_eq!(n, delivered.len());
        let ServerOp::Msg { headers: Some(block), payload, .. } = m else { panic!() };
        assert_eq!(payload, b"body");
        assert_eq!(Headers::decode(block).unwrap(), h);
        let no_responders = Headers::decode(b"NATS/1.0 503\r\n\r\n").unwrap();
        assert_eq!((no_responders.status, no_responders.entries.len()), (Some(503), 0));
        assert_eq!(Headers::decode(b"NATS/1.0 408 Request Timeout\r\n\r\n").unwrap().description, "Request Timeout");
        assert!(Headers::decode(b"HTTP/1.1 200\r\n\r\n").is_err());
    }

    #[test]
    fn subjects_and_wildcards() {
        for (pattern, subject, hit) in [
            ("a.b", "a.b", true),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            ("*.b", "a.b", true),
            (">", "anything.at.all", true),
            ("a.b", "a.c", false),
            ("a.b.c", "a.b", false),
        ] {
            assert_eq!(subject_matches(pattern, subject), hit, "{pattern} ~ {subject}");
        }
        assert!(valid_subject("prices.eur.usd", false));
        assert!(!valid_subject("prices..usd", false));
        assert!(!valid_subject("", true));
        assert!(!valid_subject("a.>", false));
        assert!(valid_subject("a.*.>", true));
    }

    #[test]
    fn server_info_reads_what_a_client_needs_and_skips_the_rest() {
        let json = br#"{"server_id":"NDX","server_name":"a","version":"2.9.10","proto":1,"go":"go1.19","host":"0.0.0.0","port":4222,"headers":true,"max_payload":1048576,"client_id":5,"client_ip":"127.0.0.1","cluster":"c","connect_urls":["10.0.0.1:4222","10.0.0.2:4222"],"nested":{"a":[1,{"b":"\"}"}],"c":null},"tls_required":false,"tls_available":true,"nonce":"ab\u0041"}"#;
        let info = ServerInfo::parse(json).unwrap();
        assert_eq!(
            info,
            ServerInfo {
                server_id: "NDX".into(),
                max_payload: 1_048_576,
                headers: true,
                tls_required: false,
                tls_available: true,
                connect_urls: vec!["10.0.0.1:4222".into(), "10.0.0.2:4222".into()],
                nonce: Some("abA".into()),
            }
        );
        assert_eq!(ServerInfo::parse(b"{}").unwrap().max_payload, 1 << 20);
        assert!(ServerInfo::parse(b"{\"max_payload\":\"x\"}").is_err());
        assert!(ServerInfo::parse(b"[1]").is_err());
        assert!(ServerInfo::parse(b"{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}").is_err(), "nesting is bounded");
    }

    /// What a session writes, as text.
    fn out(s: &mut Session) -> String {
        String::from_utf8(written(s, usize::MAX)).unwrap()
    }

    /// What a session writes, at most `max` bytes, as one vectored write of three pieces
    /// would.
    fn written(s: &mut Session, max: usize) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let mut parts: [&[u8]; 3] = [&[]; 3];
            let n = s.output_parts(&mut parts);
            let before = all.len();
            for p in &parts[..n] {
                all.extend_from_slice(&p[..p.len().min(max - all.len())]);
            }
            s.written(all.len() - before);
            if n == 0 || all.len() == max {
                return all;
            }
        }
    }

    #[test]
    fn a_session_greets_subscribes_confirms_and_comes_back_after_a_reset() {
        let mut s = Session::new(r#"{"headers":true}"#);
        let prices = s.subscribe("prices.>", None).unwrap();
        let work = s.subscribe("jobs", Some("workers")).unwrap();
        s.publish("early", None, None, b"x").unwrap();
        assert_eq!(out(&mut s), "", "published before a connection: held for it");
        s.reset(true);
        assert_eq!(s.pending_bytes(), "PUB early 1\r\nx\r\n".len(), "and across a reset");
        let mut events = Vec::new();
        let read = b"INFO {\"server_id\":\"a\",\"headers\":true,\"max_payload\":64}\r\n";
        assert_eq!(s.read(read, |e| events.push(format!("{e:?}"))).unwrap(), read.len());
        assert_eq!(out(&mut s), "CONNECT {\"headers\":true}\r\nSUB prices.> 1\r\nSUB jobs workers 2\r\nPING\r\n");
        s.publish("early2", None, None, b"y").unwrap();
        assert_eq!(out(&mut s), "", "until the server confirms the connection");
        assert!(!s.is_connected());
        let read = b"+OK\r\nPONG\r\nMSG prices.eur 1 2\r\nhi\r\nPING\r\nMSG jo";
        let took = s.read(read, |e| events.push(format!("{e:?}"))).unwrap();
        assert_eq!(took, read.len() - 6, "the unfinished MSG stays for the next read");
        assert!(s.is_connected());
        assert_eq!(out(&mut s), "PUB early 1\r\nx\r\nPUB early2 1\r\ny\r\nPONG\r\n", "then, in order");
        assert_eq!(
            events,
            [
                "Connected",
                format!(
                    "{:?}",
                    Event::Message { sid: prices, subject: "prices.eur", reply: None, headers: None, payload: b"hi" }
                )
                .as_str()
            ]
        );
        assert_eq!(
            s.publish("big", None, None, &[0; 65]),
            Err(NatsError::PayloadTooLarge(65)),
            "the server's max_payload"
        );
        s.unsubscribe(work);
        assert_eq!(out(&mut s), "UNSUB 2\r\n");
        // Pings: two unanswered and the connection is stale.
        assert!(s.tick(2) && s.tick(2));
        assert!(!s.tick(2));
        s.reset(false);
        assert!(s.read(b"INFO {}\r\n", |_| ()).is_ok());
        assert_eq!(
            out(&mut s),
            "CONNECT {\"headers\":true}\r\nSUB prices.> 1\r\nPING\r\n",
            "only what is still subscribed comes back"
        );
        let mut h = Headers::default();
        h.insert("A", "b").unwrap();
        assert!(
            matches!(s.publish("x", None, Some(&h), b""), Err(NatsError::BadHeader(_))),
            "this server said nothing of headers"
        );
        assert!(
            s.read(b"-ERR 'Authorization Violation'\r\n", |e| assert_eq!(
                e,
                Event::ServerError("Authorization Violation")
            ))
            .is_ok()
        );
    }

    #[test]
    fn numbers_in_decimal() {
        assert_eq!(decimal(0, &mut [0; 20]), "0");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), u64::MAX.to_string());
    }

    #[test]
    fn one_header_read_without_decoding_the_block() {
        let mut h = Headers::default();
        h.insert("Zerohop-Origin", "site-a").unwrap();
        h.insert("X", "y: z").unwrap();
        let block = h.encode();
        assert_eq!(header_value(&block, "zerohop-origin"), Some("site-a"));
        assert_eq!(header_value(&block, "X"), Some("y: z"));
        assert_eq!(header_value(&block, "NATS/1.0"), None);
        assert_eq!(header_value(b"NATS/1.0 503\r\n\r\n", "Status"), None);
    }

    #[test]
    fn a_string_field_of_a_json_object() {
        let j = br#"{"code":"ERR_REMOTE","n":[1,{"x":"y"}],"message":"b \"is\" zero"}"#;
        assert_eq!(json_string_field(j, "message").as_deref(), Some("b \"is\" zero"));
        assert_eq!(json_string_field(j, "code").as_deref(), Some("ERR_REMOTE"));
        assert_eq!(json_string_field(j, "x"), None, "top level only");
        assert_eq!(json_string_field(b"not json", "x"), None);
    }

    #[test]
    fn a_publish_refused_leaves_nothing_in_the_way_of_the_next() {
        let mut s = Session::new("{}");
        assert!(s.read(b"INFO {}\r\nPONG\r\n", |_| ()).is_ok());
        out(&mut s);
        assert!(s.publish("two words", None, None, b"x").is_err());
        assert_eq!(s.pending_bytes(), 0);
        s.publish("big", None, None, &[b'x'; 10_000]).unwrap();
        assert!(s.output().starts_with(b"PUB big 10000\r\n"), "the first piece is the message");
        assert_eq!(out(&mut s).len(), "PUB big 10000\r\n\r\n".len() + 10_000);
    }

    #[test]
    fn a_server_that_sends_a_nonce_gets_it_signed_in_connect() {
        let mut s = Session::new(r#"{"nkey":"UABC"}"#);
        s.sign_nonce_with(|nonce| format!("signed-{}", String::from_utf8_lossy(nonce)));
        assert!(s.read(b"INFO {\"nonce\":\"n0nce\"}\r\n", |_| ()).is_ok());
        assert_eq!(out(&mut s), "CONNECT {\"nkey\":\"UABC\",\"sig\":\"signed-n0nce\"}\r\nPING\r\n");
        s.reset(true);
        assert!(s.read(b"INFO {}\r\n", |_| ()).is_ok());
        assert_eq!(out(&mut s), "CONNECT {\"nkey\":\"UABC\"}\r\nPING\r\n", "no nonce, nothing to sign");
        let mut empty = Session::new("{}");
        empty.sign_nonce_with(|_| "x".to_owned());
        assert!(empty.read(b"INFO {\"nonce\":\"a\"}\r\n", |_| ()).is_ok());
        assert_eq!(out(&mut empty), "CONNECT {\"sig\":\"x\"}\r\nPING\r\n");
    }

    #[test]
    fn a_connection_refused_before_its_confirmation_took_none_of_the_messages() {
        let mut s = Session::new("{}");
        s.publish("m", None, None, b"1").unwrap();
        assert!(s.read(b"INFO {}\r\n", |_| ()).is_ok());
        assert_eq!(out(&mut s), "CONNECT {}\r\nPING\r\n");
        s.publish("m", None, None, b"2").unwrap();
        // -ERR 'Authorization Violation', and the server closes: nothing was taken.
        assert_eq!(s.reset(true), 0);
        assert!(s.read(b"INFO {}\r\nPONG\r\n", |_| ()).is_ok());
        assert_eq!(out(&mut s), "CONNECT {}\r\nPING\r\nPUB m 1\r\n1\r\nPUB m 1\r\n2\r\n");
    }

    #[test]
    fn a_connection_lost_mid_operation_drops_that_one_and_keeps_the_messages_after_it() {
        let mut s = Session::new("{}");
        s.subscribe("in", None).unwrap();
        assert!(s.read(b"INFO {}\r\nPONG\r\n", |_| ()).is_ok());
        out(&mut s);
        s.publish("a", None, None, b"first").unwrap();
        s.publish("b", None, None, b"second").unwrap();
        assert!(s.read(b"PING\r\n", |_| ()).is_ok());
        s.publish("c", None, None, b"third").unwrap();
        s.written(5); // "PUB a" of the first: the rest of it cannot go on another connection
        assert_eq!(s.reset(true), "PUB a 5\r\nfirst\r\n".len() - 5);
        assert_eq!(
            s.pending_bytes(),
            "PUB b 6\r\nsecond\r\nPUB c 5\r\nthird\r\n".len(),
            "the PONG was that connection's"
        );
        assert!(s.read(b"INFO {}\r\nPONG\r\n", |_| ()).is_ok());
        assert_eq!(out(&mut s), "CONNECT {}\r\nSUB in 1\r\nPING\r\nPUB b 6\r\nsecond\r\nPUB c 5\r\nthird\r\n");
        // Written a byte at a time, every operation is accounted for.
        for i in 0..3 {
            s.publish("d", None, None, &[b'0' + i]).unwrap();
        }
        for _ in 0..("PUB d 1\r\n0\r\n".len() + 3) {
            s.written(1);
        }
        assert_eq!(s.reset(false), 2 * "PUB d 1\r\n0\r\n".len() - 3, "the rest of the second, and the third");
        assert_eq!(s.pending_bytes(), 0);
    }

    proptest! {
        /// Messages of any size (in chunks of their own, or many to a chunk), written a
        /// piece at a time, go out whole and in order; a connection lost after any byte
        /// drops the message it cut, and the next one sends the rest.
        #[test]
        fn what_is_published_goes_out_in_order_across_chunks_and_a_lost_connection(
            sizes in prop::collection::vec(prop_oneof![0usize..2000, 100_000usize..300_000], 1..12),
            writes in prop::collection::vec(1usize..400_000, 1..12),
            lost_after in 0usize..2_000_000,
        ) {
            let mut s = Session::new("{}");
            let greeted = s.read(b"INFO {}\r\nPONG\r\n", |_| ()).is_ok();
            prop_assert!(greeted);
            out(&mut s);
            let ops: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| {
                let payload: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
                s.publish(&format!("m.{i}"), None, None, &payload).unwrap();
                let mut op = format!("PUB m.{i} {n}\r\n").into_bytes();
                op.extend_from_slice(&payload);
                op.extend_from_slice(b"\r\n");
                op
            }).collect();
            let total: usize = ops.iter().map(Vec::len).sum();
            prop_assert_eq!(s.pending_bytes(), total);
            // Written in pieces until the connection is lost.
            let mut sent = Vec::new();
            for w in writes {
                let room = lost_after.min(total) - sent.len();
                sent.extend(written(&mut s, w.min(room)));
            }
            prop_assert_eq!(&sent[..], &ops.concat()[..sent.len()]);
            prop_assert_eq!(s.pending_bytes(), total - sent.len());
            // Lost: the message cut short goes, the rest follow the next greeting.
            let (mut whole, mut at) = (0, 0);
            while whole < ops.len() && at + ops[whole].len() <= sent.len() {
                at += ops[whole].len();
                whole += 1;
            }
            let cut = if at < sent.len() { ops[whole].len() - (sent.len() - at) } else { 0 };
            prop_assert_eq!(s.reset(true), cut);
            let rest = ops[whole + usize::from(cut > 0)..].concat();
            prop_assert_eq!(s.pending_bytes(), rest.len());
            let greeted = s.read(b"INFO {}\r\nPONG\r\n", |_| ()).is_ok();
            prop_assert!(greeted);
            let mut again = b"CONNECT {}\r\nPING\r\n".to_vec();
            again.extend_from_slice(&rest);
            prop_assert_eq!(written(&mut s, usize::MAX), again);
            prop_assert_eq!(s.pending_bytes(), 0);
        }

        /// A run of operations, cut anywhere, parses to the same operations: none is
        /// taken before it is whole, and each takes exactly its bytes.
        #[test]
        fn any_cut_parses_the_same(
            msgs in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..200), any::<bool>(), 0u64..1_000_000), 1..8),
            cut in 0usize..2000,
        ) {
            let mut wire = Vec::new();
            for (payload, headers, sid) in &msgs {
                if *headers {
                    let mut h = Headers::default();
                    h.insert("K", &sid.to_string()).unwrap();
                    let block = h.encode();
                    wire.extend_from_slice(format!("HMSG s.{sid} {sid} {} {}\r\n", block.len(), block.len() + payload.len()).as_bytes());
                    wire.extend_from_slice(&block);
                } else {
                    wire.extend_from_slice(format!("MSG s.{sid} {sid} r.x {}\r\n", payload.len()).as_bytes());
                }
                wire.extend_from_slice(payload);
                wire.extend_from_slice(b"\r\nPING\r\n");
            }
            let cut = cut.min(wire.len());
            // Everything that parses from the first `cut` bytes, then from all of them.
            let mut at = 0;
            let mut seen = 0;
            for end in [cut, wire.len()] {
                loop {
                    match parse(&wire[at..end], &Limits::default()).unwrap() {
                        Parsed::Op(ServerOp::Ping, n) => at += n,
                        Parsed::Op(ServerOp::Msg { sid, payload, headers, reply, .. }, n) => {
                            let (p, h, s) = &msgs[seen];
                            prop_assert_eq!(sid, *s);
                            prop_assert_eq!(payload, &p[..]);
                            prop_assert_eq!(headers.is_some(), *h);
                            prop_assert_eq!(reply.is_some(), !*h);
                            seen += 1;
                            at += n;
                        }
                        Parsed::Op(other, _) => panic!("{other:?}"),
                        Parsed::Incomplete(need) => {
                            if let Some(need) = need { prop_assert!(at + need > end) }
                            break;
                        }
                    }
                }
            }
            prop_assert_eq!(seen, msgs.len());
            prop_assert_eq!(at, wire.len());
        }

        /// Arbitrary bytes: an operation, a wait or an error, never a panic, and never
        /// more bytes taken than there are.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Parsed::Op(_, n)) = parse(&bytes, &Limits { max_line: 128, max_payload: 64 }) {
                prop_assert!(n <= bytes.len());
            }
        }
    }
}
