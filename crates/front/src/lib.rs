//! What `berth`'s front decides, without a C library: which command lines it answers itself
//! (`berth network connect` and `berth network disconnect` in the forms below), the request
//! it sends for them, byte for byte the one `berth-cli` sends, and what it prints for the
//! answer, as `berth-cli` prints it. Everything else is `berth-cli`'s: the front hands the
//! command line over unchanged ([`plan`] says `None`).
//!
//! Why a front at all: every `berth` command pays its process's start, and a program linked
//! with glibc starts by probing the CPU (≈ 55 `cpuid` instructions, each one a VM exit here,
//! ≈ 0.2 ms) before its `main`; `berth-cli` is also 27 MB of Rust and clap. A program with no C
//! library and a few pages of code starts in a fraction of that: `network connect` and
//! `disconnect` through the front took ≈ 1 ms less than through `berth-cli` in the same rounds
//! (docs/PERFORMANCE.md, stop 52). The two commands are a platform's per-container calls, so
//! they get the quick path; the rest pay one small `execve` more (≈ 0.1–0.2 ms).
//!
//! Parity rules. The front answers only command lines it understands completely; anything it
//! does not (another command, `--help`, an unknown or repeated flag, a value that starts with
//! `-` or is empty, `--`, text that is not UTF-8, a host that is not a unix socket) goes to
//! `berth-cli`, which parses it with clap as always. Anything that fails before the request is
//! sent (no berthd, a socket too long) goes there too: `berth-cli` then fails the same way and
//! says so in its own words. Only after the request is sent does the front answer for itself:
//! `Error response from daemon: …` from the body as `berth-cli` reads it (`{"message": …}`,
//! else the text, else the status), or `berth: talking to berthd at …` when the answer is cut
//! or broken. The crate's tests check both halves against `berth_api`'s own types and
//! functions, and `crates/cli/tests/front.rs` runs the two binaries against the same answers.
//!
//! The library is `no_std` and allocates nothing: the caller lends the buffers.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

/// The most arguments the front looks at; a longer command line goes to `berth-cli`.
pub const MAX_ARGS: usize = 64;

/// The socket berthd listens on unless `-H` or `BERTH_HOST` says otherwise (as `berth-cli`).
pub const DEFAULT_SOCKET: &[u8] = b"/run/berth/berth.sock";

/// The longest socket path a `sockaddr_un` holds (108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The `user-agent` both binaries send.
const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

/// Which of the two commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `berth network connect`.
    Connect,
    /// `berth network disconnect`.
    Disconnect,
}

/// A command line the front answers itself.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Connect or disconnect.
    pub verb: Verb,
    /// berthd's socket path (not NUL-terminated; at most [`MAX_SOCKET_PATH`] bytes).
    pub socket: &'a [u8],
    args: &'a [&'a [u8]],
    network: &'a str,
    container: &'a str,
    force: bool,
    ip: Option<&'a str>,
    ip6: Option<&'a str>,
}

/// One flag of `network connect` that takes a value, or `-H`/`--host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Host,
    Ip,
    Ip6,
    Alias,
    LinkLocalIp,
    Link,
}

/// What one argument is, in the grammar the front accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// A flag with its value (given inline after `=`, or as the next argument).
    Valued(Flag, &'a str),
    /// `-f` / `--force` of `disconnect`.
    Force,
    /// A positional argument.
    Word(&'a str),
}

/// Walks `args` (the command line after the program's name) as the front's grammar reads them;
/// `None` as soon as something falls outside it. The second word names the verb, from which on
/// the verb's flags are known.
struct Tokens<'a> {
    args: &'a [&'a [u8]],
    at: usize,
    words: usize,
    verb: Option<Verb>,
}

impl<'a> Tokens<'a> {
    fn new(args: &'a [&'a [u8]]) -> Self {
        Tokens {
            args,
            at: 0,
            words: 0,
            verb: None,
        }
    }

    /// The next token: `Some(Ok(token))`, `Some(Err(()))` when the argument is outside the
    /// grammar, `None` at the end.
    fn next_token(&mut self) -> Option<Result<Token<'a>, ()>> {
        let arg = *self.args.get(self.at)?;
        self.at += 1;
        Some(self.token(arg))
    }

    fn token(&mut self, arg: &'a [u8]) -> Result<Token<'a>, ()> {
        let arg = core::str::from_utf8(arg).map_err(drop)?;
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let flag = match (name, self.verb) {
                ("host", _) => Flag::Host,
                ("ip", Some(Verb::Connect)) => Flag::Ip,
                ("ip6", Some(Verb::Connect)) => Flag::Ip6,
                ("alias", Some(Verb::Connect)) => Flag::Alias,
                ("link-local-ip", Some(Verb::Connect)) => Flag::LinkLocalIp,
                ("link", Some(Verb::Connect)) => Flag::Link,
                ("force", Some(Verb::Disconnect)) if inline.is_none() => return Ok(Token::Force),
                // `--`, `--help`, `--version`, and every other flag: berth-cli's.
                _ => return Err(()),
            };
            let value = match inline {
                Some(v) => v,
                None => self.value()?,
            };
            return plain(value).map(|v| Token::Valued(flag, v));
        }
        match arg {
            "-H" => self
                .value()
                .and_then(plain)
                .map(|v| Token::Valued(Flag::Host, v)),
            "-f" if self.verb == Some(Verb::Disconnect) => Ok(Token::Force),
            // Other short flags, bundles (`-fH`), `-Hvalue`, and `-` itself: berth-cli's.
            _ if arg.starts_with('-') => Err(()),
            // An empty name: berth-cli's (clap takes it, berthd refuses it; either way not
            // a call worth a second parser).
            "" => Err(()),
            word => {
                if self.words == 1 {
                    self.verb = match word {
                        "connect" => Some(Verb::Connect),
                        "disconnect" => Some(Verb::Disconnect),
                        _ => None,
                    };
                }
                self.words += 1;
                Ok(Token::Word(word))
            }
        }
    }

    /// The argument after a flag, as its value.
    fn value(&mut self) -> Result<&'a str, ()> {
        let arg = *self.args.get(self.at).ok_or(())?;
        self.at += 1;
        core::str::from_utf8(arg).map_err(drop)
    }
}

/// A value the front passes on as it is: not empty and not starting with `-` (clap's rules for
/// those differ by case; berth-cli applies them).
fn plain(v: &str) -> Result<&str, ()> {
    if v.is_empty() || v.starts_with('-') {
        Err(())
    } else {
        Ok(v)
    }
}

/// The call for the command line `args` (without the program's name), `host_env` being
/// `$BERTH_HOST` if set; `None` when `berth-cli` must run it.
pub fn plan<'a>(args: &'a [&'a [u8]], host_env: Option<&'a [u8]>) -> Option<Call<'a>> {
    if args.len() > MAX_ARGS {
        return None;
    }
    let mut tokens = Tokens::new(args);
    let (mut host, mut ip, mut ip6) = (None, None, None);
    let mut network = "";
    let mut container = "";
    let mut force = false;
    while let Some(token) = tokens.next_token() {
        // clap: a flag that takes one value, given twice, is an error (berth-cli's to say).
        let once = |slot: &mut Option<&'a str>, v| slot.replace(v).is_none().then_some(());
        match token.ok()? {
            Token::Valued(Flag::Host, h) => once(&mut host, h)?,
            Token::Valued(Flag::Ip, v) => once(&mut ip, v)?,
            Token::Valued(Flag::Ip6, v) => once(&mut ip6, v)?,
            Token::Valued(_, _) => {}
            Token::Force => {
                if core::mem::replace(&mut force, true) {
                    return None;
                }
            }
            // The word's number, counted by the walk (the verb, the second, it reads itself).
            Token::Word(w) => match (tokens.words, tokens.verb) {
                (1, _) if w == "network" => {}
                (2, Some(_)) => {}
                (3, Some(_)) => network = w,
                (4, Some(_)) => container = w,
                _ => return None,
            },
        }
    }
    let verb = tokens.verb?;
    if tokens.words != 4 {
        return None;
    }
    let host = match host {
        Some(h) => h,
        None => match host_env {
            // berth-cli reads an empty `BERTH_HOST` as unset; clap rejects one not in UTF-8.
            Some(env) if !env.is_empty() => core::str::from_utf8(env).ok()?,
            _ => "",
        },
    };
    let socket = if host.is_empty() {
        DEFAULT_SOCKET
    } else {
        socket_of(host)?
    };
    Some(Call {
        verb,
        socket,
        args,
        network,
        container,
        force,
        ip,
        ip6,
    })
}

/// The socket path of a host as `berth_api::client::Client::new` reads it; `None` for a host
/// it refuses or a path no `sockaddr_un` holds (berth-cli then says why).
fn socket_of(host: &str) -> Option<&[u8]> {
    let path = match host.strip_prefix("unix://") {
        Some(p) => p,
        None if host.contains("://") => return None,
        None => host,
    };
    (!path.is_empty() && path.len() <= MAX_SOCKET_PATH).then_some(path.as_bytes())
}

/// `n` in decimal, written at the end of `buf`.
pub fn decimal_digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A byte buffer lent by the caller; writes past its end are dropped and remembered.
#[derive(Debug)]
pub struct Buf<'b> {
    bytes: &'b mut [u8],
    len: usize,
    overflow: bool,
}

impl<'b> Buf<'b> {
    /// An empty buffer over `bytes`.
    pub fn new(bytes: &'b mut [u8]) -> Self {
        Buf {
            bytes,
            len: 0,
            overflow: false,
        }
    }

    /// Appends `b` (or, if it does not fit, marks the buffer overflowed).
    pub fn put(&mut self, b: &[u8]) {
        match self.bytes.get_mut(self.len..self.len + b.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            _ => self.overflow = true,
        }
    }

    fn put_str(&mut self, s: &str) {
        self.put(s.as_bytes());
    }

    fn put_num(&mut self, n: u64) {
        self.put(decimal_digits(n, &mut [0; 20]));
    }

    /// What was written, `None` if something did not fit.
    pub fn done(&self) -> Option<&[u8]> {
        (!self.overflow).then(|| &self.bytes[..self.len])
    }

    fn mark(&self) -> usize {
        self.len
    }
}

impl Call<'_> {
    /// Writes the whole request into `out` as berth-cli writes it (hyper's HTTP/1.1 client's
    /// head, serde_json's body); `None` if it does not fit (berth-cli then runs the command).
    /// `body` is scratch space for the body, which must be known before the head's length.
    pub fn request<'o>(&self, out: &'o mut Buf<'_>, body: &mut Buf<'_>) -> Option<&'o [u8]> {
        match self.verb {
            Verb::Connect => self.connect_body(body),
            Verb::Disconnect => {
                body.put_str("{\"Container\":");
                json_string(body, self.container);
                body.put_str(",\"Force\":");
                body.put_str(if self.force { "true" } else { "false" });
                body.put_str("}");
            }
        }
        let body = body.done()?;
        out.put_str("POST /networks/");
        url_escape(out, self.network);
        out.put_str(match self.verb {
            Verb::Connect => "/connect",
            Verb::Disconnect => "/disconnect",
        });
        out.put_str(" HTTP/1.1\r\nhost: berth\r\nuser-agent: ");
        out.put_str(USER_AGENT);
        out.put_str("\r\ncontent-type: application/json\r\ncontent-length: ");
        out.put_num(body.len() as u64);
        out.put_str("\r\n\r\n");
        out.put(body);
        out.done()
    }

    /// The values of `flag` on the command line, in order.
    fn values(&self, flag: Flag) -> impl Iterator<Item = &str> + '_ {
        let mut tokens = Tokens::new(self.args);
        core::iter::from_fn(move || loop {
            if let Ok(Token::Valued(f, v)) = tokens.next_token()? {
                if f == flag {
                    return Some(v);
                }
            }
        })
    }

    /// serde_json's serialisation of `NetworkConnectRequest` with the endpoint berth-cli builds
    /// from the flags (`network_connect::endpoint`, or the default when no flag was given).
    fn connect_body(&self, b: &mut Buf<'_>) {
        b.put_str("{\"Container\":");
        json_string(b, self.container);
        b.put_str(",\"EndpointConfig\":{\"IPAMConfig\":");
        let link_local = self.values(Flag::LinkLocalIp).next().is_some();
        if self.ip.is_some() || self.ip6.is_some() || link_local {
            b.put_str("{");
            let mut first = true;
            let mut field = |b: &mut Buf<'_>, name: &str| {
                if !core::mem::replace(&mut first, false) {
                    b.put_str(",");
                }
                b.put_str(name);
            };
            if let Some(v) = self.ip {
                field(b, "\"IPv4Address\":");
                json_string(b, v);
            }
            if let Some(v) = self.ip6 {
                field(b, "\"IPv6Address\":");
                json_string(b, v);
            }
            if link_local {
                field(b, "\"LinkLocalIPs\":");
                self.json_array(b, Flag::LinkLocalIp);
            }
            b.put_str("}");
        } else {
            b.put_str("null");
        }
        b.put_str(",\"Links\":");
        self.json_array(b, Flag::Link);
        b.put_str(",\"Aliases\":");
        self.json_array(b, Flag::Alias);
        b.put_str(
            ",\"MacAddress\":\"\",\"DriverOpts\":null,\"GwPriority\":0,\"NetworkID\":\"\",\
             \"EndpointID\":\"\",\"Gateway\":\"\",\"IPAddress\":\"\",\"IPPrefixLen\":0,\
             \"IPv6Gateway\":\"\",\"GlobalIPv6Address\":\"\",\"GlobalIPv6PrefixLen\":0,\
             \"DNSNames\":null}}",
        );
    }

    /// `["a","b"]` of the flag's values, `null` when it was not given (berth-cli sends `None`).
    fn json_array(&self, b: &mut Buf<'_>, flag: Flag) {
        let start = b.mark();
        for v in self.values(flag) {
            b.put_str(if b.mark() == start { "[" } else { "," });
            json_string(b, v);
        }
        b.put_str(if b.mark() == start { "null" } else { "]" });
    }
}

/// A JSON string as serde_json writes it: `"` `\` and the C0 controls escaped (`\b` `\f` `\n`
/// `\r` `\t`, the others `\u00xx`), everything else as is.
fn json_string(b: &mut Buf<'_>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b.put_str("\"");
    for &c in s.as_bytes() {
        match c {
            b'"' => b.put_str("\\\""),
            b'\\' => b.put_str("\\\\"),
            0x08 => b.put_str("\\b"),
            0x0c => b.put_str("\\f"),
            b'\n' => b.put_str("\\n"),
            b'\r' => b.put_str("\\r"),
            b'\t' => b.put_str("\\t"),
            0..=0x1f => b.put(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]),
            _ => b.put(&[c]),
        }
    }
    b.put_str("\"");
}

/// A path segment as berth-cli escapes it (`format::url_escape`): unreserved bytes as they
/// are, every other byte `%XX`.
fn url_escape(b: &mut Buf<'_>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            b.put(&[c]);
        } else {
            b.put(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]);
        }
    }
}

/// What the front does with the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'r> {
    /// The answer is not complete yet: read more.
    More,
    /// berthd said yes (2xx, body read whole): exit 0, print nothing.
    Done,
    /// berthd said no: `Error response from daemon: ` and [`Message`], exit 1.
    Refused(Message<'r>),
    /// The answer was cut or broken: `berth: talking to berthd at SOCKET: ` and this, exit 1.
    Broken(&'static str),
}

/// The message of an error answer, as berth-cli's `error_message` picks it.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'r> {
    /// The `message` of a JSON `{"message": "…"}` body: the string literal's inside, still
    /// escaped (written out by [`unescape_json`]).
    Json(&'r [u8]),
    /// The body as text, trimmed (invalid UTF-8 written as U+FFFD by [`write_lossy`]).
    Text(&'r [u8]),
    /// Neither: the status and its reason phrase, `403 Forbidden`.
    Status(u16, &'static str),
}

const CLOSED_EARLY: &str = "connection closed before message completed";
const BODY_CLOSED_EARLY: &str = "error reading a body from connection";
const MALFORMED: &str = "malformed HTTP answer";

/// Reads an answer from the bytes received so far (`closed`: berthd closed its side, no more
/// will come), as `berth_api::wire` and `Client::exchange` read it.
pub fn answer(bytes: &[u8], closed: bool) -> Answer<'_> {
    let mut rest = bytes;
    loop {
        let Some(end) = find(rest, b"\n") else {
            return more_or(closed, CLOSED_EARLY);
        };
        let Some(status) = status_line(&rest[..end]) else {
            return Answer::Broken(MALFORMED);
        };
        rest = &rest[end + 1..];
        let mut length: Option<u64> = None;
        // Transfer codings, as berth-cli reads them: `chunked` must come last and once.
        let (mut codings, mut chunked_count, mut last_chunked) = (0usize, 0usize, false);
        loop {
            let Some(end) = find(rest, b"\n") else {
                return more_or(closed, CLOSED_EARLY);
            };
            let line = trim_eol(&rest[..end]);
            rest = &rest[end + 1..];
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = header(line) else {
                return Answer::Broken(MALFORMED);
            };
            if name.eq_ignore_ascii_case(b"content-length") {
                for v in value.split(|b| *b == b',') {
                    let Some(n) = decimal(trim_blanks(v)) else {
                        return Answer::Broken(MALFORMED);
                    };
                    if length.is_some_and(|l| l != n) {
                        return Answer::Broken(MALFORMED);
                    }
                    length = Some(n);
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                for coding in value.split(|b| *b == b',').map(trim_blanks) {
                    if !coding.is_empty() {
                        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                        chunked_count += usize::from(last_chunked);
                        codings += 1;
                    }
                }
            }
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        if status == 101 {
            return Answer::Broken(MALFORMED);
        }
        let chunked = codings > 0;
        if chunked && (!last_chunked || chunked_count > 1) && status != 204 && status != 304 {
            return Answer::Broken(MALFORMED);
        }
        let body: Result<&[u8], &'static str> = if status == 204 || status == 304 {
            Ok(&rest[..0])
        } else if chunked {
            match dechunk(rest) {
                Ok(Some(body)) => Ok(body),
                Ok(None) if !closed => return Answer::More,
                Ok(None) => Err(BODY_CLOSED_EARLY),
                Err(()) => Err(MALFORMED),
            }
        } else if let Some(n) = length {
            match usize::try_from(n).ok().and_then(|n| rest.get(..n)) {
                Some(body) => Ok(body),
                None if !closed => return Answer::More,
                None => Err(BODY_CLOSED_EARLY),
            }
        } else if closed {
            Ok(rest)
        } else {
            return Answer::More;
        };
        return match (body, (200..300).contains(&status)) {
            (Ok(_), true) => Answer::Done,
            (Err(why), true) => Answer::Broken(why),
            (Ok(body), false) => Answer::Refused(message(status, body)),
            // berth-cli: "an error answer whose body cannot be read is still that error",
            // told by its status.
            (Err(_), false) => Answer::Refused(message(status, &[])),
        };
    }
}

fn more_or(closed: bool, why: &'static str) -> Answer<'static> {
    if closed {
        Answer::Broken(why)
    } else {
        Answer::More
    }
}

/// A chunked body that is complete in `rest`, as one slice when it is a single chunk (berthd's
/// error bodies); `Ok(None)` when more must come. Several chunks are refused as malformed:
/// joining them needs a copy this library does not make, and hyper, berthd's server, sends a
/// known-length body with a length.
fn dechunk(rest: &[u8]) -> Result<Option<&[u8]>, ()> {
    let mut at = rest;
    let mut body: Option<&[u8]> = None;
    loop {
        let Some(end) = find(at, b"\n") else {
            return Ok(None);
        };
        let size = chunk_size(trim_eol(&at[..end])).ok_or(())?;
        at = &at[end + 1..];
        if size == 0 {
            // Trailer lines up to an empty one.
            loop {
                let Some(end) = find(at, b"\n") else {
                    return Ok(None);
                };
                let line = trim_eol(&at[..end]);
                at = &at[end + 1..];
                if line.is_empty() {
                    return Ok(Some(body.unwrap_or(&rest[..0])));
                }
            }
        }
        if body.is_some() {
            return Err(());
        }
        let size = usize::try_from(size).map_err(drop)?;
        let Some(data) = at.get(..size) else {
            return Ok(None);
        };
        body = Some(data);
        at = &at[size..];
        let eol = match at {
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] => 1,
            [] | [b'\r'] => return Ok(None),
            _ => return Err(()),
        };
        at = &at[eol..];
    }
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = trim_blanks_start(&line[digits..]);
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = char::from(*d).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(v))
    })
}

/// `HTTP/1.x NNN …` → NNN (100–999).
fn status_line(line: &[u8]) -> Option<u16> {
    let line = trim_eol(line);
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
    match rest {
        [a, b, c, tail @ ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit())
                && (tail.is_empty() || tail[0] == b' ')
                && *a != b'0' =>
        {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// `Name: value` with a token name and no control bytes in the value.
fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|b| *b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || !name.iter().all(token) {
        return None;
    }
    if value
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return None;
    }
    Some((name, trim_blanks(value)))
}

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        let d = char::from(*d).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_blanks_start(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    start.map_or(&v[..0], |s| &v[s..])
}

fn trim_blanks(v: &[u8]) -> &[u8] {
    let v = trim_blanks_start(v);
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    end.map_or(&v[..0], |e| &v[..=e])
}

/// berth-cli's `error_message`: the JSON `message`, else the trimmed text, else the status.
fn message(status: u16, body: &[u8]) -> Message<'_> {
    if let Some(m) = json_message(body) {
        return Message::Json(m);
    }
    let text = trim_text(body);
    if !text.is_empty() {
        return Message::Text(text);
    }
    Message::Status(status, reason(status))
}

/// `body` without the white space `str::trim` takes off the text it decodes to (invalid UTF-8
/// is never white space, so trimming the bytes is trimming the text).
fn trim_text(body: &[u8]) -> &[u8] {
    let mut b = body;
    while let Some(c) = first_char(b) {
        if !c.0.is_whitespace() {
            break;
        }
        b = &b[c.1..];
    }
    while let Some(c) = last_char(b) {
        if !c.0.is_whitespace() {
            break;
        }
        b = &b[..b.len() - c.1];
    }
    b
}

/// The first character of `b` if it starts with a valid one, and its length.
fn first_char(b: &[u8]) -> Option<(char, usize)> {
    let n = b.len().min(4);
    (1..=n).find_map(|l| {
        core::str::from_utf8(&b[..l])
            .ok()
            .and_then(|s| s.chars().next())
            .map(|c| (c, l))
    })
}

/// The last character of `b` if it ends with a valid one, and its length.
fn last_char(b: &[u8]) -> Option<(char, usize)> {
    let n = b.len().min(4);
    (1..=n).find_map(|l| {
        core::str::from_utf8(&b[b.len() - l..])
            .ok()
            .and_then(|s| s.chars().next_back())
            .map(|c| (c, l))
    })
}

/// The inside of `message`'s string literal when `body` is what serde_json reads as
/// `ErrorResponse { message: String }`: one JSON object (white space around it), a `message`
/// key exactly once with a string value, any other keys with any values.
fn json_message(body: &[u8]) -> Option<&[u8]> {
    let mut p = Json { b: body, at: 0 };
    p.ws();
    p.eat(b'{')?;
    let mut message = None;
    p.ws();
    if p.peek() == Some(b'}') {
        p.at += 1;
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            if key == b"message" {
                if message.is_some() || p.peek() != Some(b'"') {
                    return None;
                }
                message = Some(p.string()?);
            } else {
                p.value(0)?;
            }
            p.ws();
            match p.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    p.ws();
    (p.at == body.len()).then_some(())?;
    message
}

/// A JSON reader that checks syntax and UTF-8 as serde_json does, without building values.
struct Json<'j> {
    b: &'j [u8],
    at: usize,
}

impl<'j> Json<'j> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string literal; its inside (escapes as written). Checks every escape, that `\u`
    /// surrogates pair up, that no control byte is raw and that the text is UTF-8.
    fn string(&mut self) -> Option<&'j [u8]> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let u = self.hex4()?;
                        if (0xDC00..0xE000).contains(&u) {
                            return None;
                        }
                        if (0xD800..0xDC00).contains(&u) {
                            self.eat(b'\\')?;
                            self.eat(b'u')?;
                            if !(0xDC00..0xE000).contains(&self.hex4()?) {
                                return None;
                            }
                        }
                    }
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => {}
            }
        }
        let inside = &self.b[start..self.at - 1];
        core::str::from_utf8(inside).ok()?;
        Some(inside)
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            v = v * 16 + char::from(self.next()?).to_digit(16)?;
        }
        Some(v)
    }

    /// Any JSON value, nested at most 128 deep (serde_json's recursion limit).
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth >= 128 {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let close = if self.next()? == b'{' { b'}' } else { b']' };
                self.ws();
                if self.peek() == Some(close) {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    if close == b'}' {
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        c if c == close => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number(),
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        let end = self.at + w.len();
        (self.b.get(self.at..end)? == w).then(|| self.at = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digit()?;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digit()?;
            self.digits();
        }
        Some(())
    }

    fn digit(&mut self) -> Option<()> {
        self.next().filter(u8::is_ascii_digit).map(drop)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
    }
}

/// Writes a JSON string literal's inside (as [`Json::string`] checked it) unescaped, piece by
/// piece, through `out`.
pub fn unescape_json(inside: &[u8], out: &mut dyn FnMut(&[u8])) {
    let mut i = 0;
    while i < inside.len() {
        let start = i;
        while i < inside.len() && inside[i] != b'\\' {
            i += 1;
        }
        if i > start {
            out(&inside[start..i]);
        }
        if i >= inside.len() {
            break;
        }
        let esc = inside.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let simple = match esc {
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            other => Some(other),
        };
        if let Some(c) = simple {
            out(&[c]);
            continue;
        }
        let hex = |at: usize| {
            inside
                .get(at..at + 4)
                .and_then(|h| core::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or(0xFFFD)
        };
        let mut u = hex(i);
        i += 4;
        if (0xD800..0xDC00).contains(&u) {
            let low = hex(i + 2);
            i += 6;
            u = 0x10000 + ((u - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
        }
        let c = char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut utf8 = [0u8; 4];
        out(c.encode_utf8(&mut utf8).as_bytes());
    }
}

/// Writes `text` as `String::from_utf8_lossy` decodes it: each invalid sequence as U+FFFD.
pub fn write_lossy(text: &[u8], out: &mut dyn FnMut(&[u8])) {
    for chunk in text.utf8_chunks() {
        out(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out("\u{FFFD}".as_bytes());
        }
    }
}

/// The canonical reason phrase of a status, as `http::StatusCode::canonical_reason` gives it
/// (the ones berthd answers with and their neighbours); "" for the others, which berth-cli
/// then writes as `HTTP status N` ([`Message::Status`] with "").
pub fn reason(status: u16) -> &'static str {
    match status {
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// Writes the message of a refused call, as berth-cli's `Error response from daemon: …` has it.
pub fn write_message(m: &Message<'_>, out: &mut dyn FnMut(&[u8])) {
    match m {
        Message::Json(inside) => unescape_json(inside, out),
        Message::Text(text) => write_lossy(text, out),
        Message::Status(status, reason) => {
            let mut buf = [0; 20];
            let digits = decimal_digits(u64::from(*status), &mut buf);
            if reason.is_empty() {
                out(b"HTTP status ");
                out(digits);
            } else {
                out(digits);
                out(b" ");
                out(reason.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests;
