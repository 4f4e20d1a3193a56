//! One HTTP/1.1 exchange on a blocking stream: the request written as hyper's client writes it,
//! the answer read back by hand (status line, headers, then a body framed by `Content-Length`,
//! `Transfer-Encoding: chunked`, or the end of the connection).
//!
//! Why by hand: the CLI's one-request commands (`network connect`, `ps`, …) spent more of their
//! own time building a tokio runtime and driving hyper's connection task than talking to berthd
//! (docs/PERFORMANCE.md, "The CLI's own cost"). Streams, attaches and concurrent requests keep
//! hyper ([`crate::client::Client::request_stream`], [`crate::client::Client::hijack`]).
//!
//! The reader trusts nothing it reads: every line, the head and the body have a size limit
//! ([`Limits`]), sizes are parsed with overflow checks and never used to allocate up front, and
//! anything malformed, contradictory or cut short is an [`WireError`], never a panic.

use std::io::{self, BufRead};

/// What an answer may weigh before the reader refuses it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The status line, headers and a chunked body's trailers, in bytes (each counted alone).
    pub head: usize,
    /// Header lines (hyper's client takes 100).
    pub headers: usize,
    /// The body, in bytes.
    pub body: usize,
}

impl Limits {
    /// The limits the client reads berthd's answers with: far above any answer berthd gives
    /// (a `ps` of 10,000 containers is ~10 MB), low enough that a broken or hostile peer cannot
    /// take the machine's memory.
    pub(crate) const DEFAULT: Limits = Limits {
        head: 64 * 1024,
        headers: 100,
        body: 256 * 1024 * 1024,
    };
}

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The connection ended before the answer's head did (hyper's words for it).
    #[error("connection closed before message completed")]
    ClosedEarly,
    /// The connection ended inside the body (hyper's words for it).
    #[error("error reading a body from connection")]
    BodyClosedEarly,
    /// Reading from the connection failed.
    #[error("reading the answer: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not an HTTP/1.x answer.
    #[error("malformed HTTP answer: {0}")]
    Malformed(String),
    /// The answer is larger than [`Limits`] allows.
    #[error("HTTP answer too large: {0}")]
    TooLarge(String),
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length: N`, or no body at all (`N` = 0: 204, 304).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body is everything until the peer closes the connection.
    UntilClose,
}

/// An answer's status and how its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The status code, 200…999 (informational answers are skipped).
    pub status: u16,
    /// How the body that follows ends.
    pub framing: Framing,
}

/// The bytes of a request, as hyper's HTTP/1.1 client writes the same request: the request
/// line, then `headers` in order with their names as given (hyper writes them lowercase), then
/// `content-length` where hyper adds one, then the body. `target` must already be a valid
/// origin-form target (the caller checks it).
pub(crate) fn request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let body = body.unwrap_or_default();
    let mut out = Vec::with_capacity(128 + body.len());
    for part in [method, " ", target, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        for part in [name, ": ", value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    // hyper's client sends a length only for a body with bytes in it: an empty body (hyper's
    // `Full` of nothing is at its end before it starts) goes as no body at all, whatever the
    // method (`POST /containers/x/stop` has no `content-length`), which HTTP/1.1 reads as
    // length 0 (RFC 9112 §6.3, rule 7).
    if !body.is_empty() {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Reads an answer's status line and headers, skipping informational (1xx) answers before it.
pub(crate) fn read_head(r: &mut impl BufRead, limits: Limits) -> Result<Head, WireError> {
    loop {
        let line = read_line(r, limits.head, "status line", limits.head)?;
        let status = parse_status_line(&line)?;
        let mut head_bytes = line.len();
        let mut content_length: Option<u64> = None;
        let mut transfer_encoding: Vec<String> = Vec::new();
        let mut count = 0;
        loop {
            let line = read_line(
                r,
                limits.head.saturating_sub(head_bytes),
                "header section",
                limits.head,
            )?;
            head_bytes += line.len();
            let line = trim_eol(&line);
            if line.is_empty() {
                break;
            }
            count += 1;
            if count > limits.headers {
                return Err(WireError::TooLarge(format!(
                    "more than {} header lines",
                    limits.headers
                )));
            }
            let (name, value) = parse_header(line)?;
            if name.eq_ignore_ascii_case("content-length") {
                for v in value.split(',') {
                    let n = parse_length(v.trim())?;
                    if content_length.is_some_and(|c| c != n) {
                        return Err(malformed("conflicting Content-Length headers"));
                    }
                    content_length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding.extend(
                    value
                        .split(',')
                        .map(|c| c.trim().to_ascii_lowercase())
                        .filter(|c| !c.is_empty()),
                );
            }
        }
        // 101 is an answer to an upgrade this client never asks for: not skippable.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        if status == 101 {
            return Err(malformed(
                "101 Switching Protocols to a request that asked no upgrade",
            ));
        }
        let framing = if status == 204 || status == 304 {
            Framing::Length(0)
        } else if let Some(last) = transfer_encoding.last() {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a coding other than
            // `chunked` last would need decoding this client never asked for (no TE header).
            if last != "chunked" || transfer_encoding.iter().filter(|c| *c == "chunked").count() > 1
            {
                return Err(malformed(format!(
                    "unsupported Transfer-Encoding {:?}",
                    transfer_encoding.join(", ")
                )));
            }
            Framing::Chunked
        } else if let Some(n) = content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        return Ok(Head { status, framing });
    }
}

/// Reads the body that follows `head`, whole.
pub(crate) fn read_body(
    r: &mut impl BufRead,
    framing: Framing,
    limits: Limits,
) -> Result<Vec<u8>, WireError> {
    read_framed(r, framing, limits).map_err(|e| match e {
        WireError::ClosedEarly => WireError::BodyClosedEarly,
        e => e,
    })
}

fn read_framed(
    r: &mut impl BufRead,
    framing: Framing,
    limits: Limits,
) -> Result<Vec<u8>, WireError> {
    let mut body = Vec::new();
    match framing {
        Framing::Length(n) => {
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= limits.body)
                .ok_or_else(|| too_large_body(n, limits))?;
            read_exact_into(r, n, &mut body)?;
        }
        Framing::Chunked => loop {
            let line = read_line(r, limits.head, "chunk size line", limits.head)?;
            let size = parse_chunk_size(trim_eol(&line))?;
            if size == 0 {
                // The trailer section: header lines up to an empty one, none of them needed.
                let mut trailers = 0;
                loop {
                    let line = read_line(
                        r,
                        limits.head.saturating_sub(trailers),
                        "trailer section",
                        limits.head,
                    )?;
                    trailers += line.len();
                    if trim_eol(&line).is_empty() {
                        return Ok(body);
                    }
                }
            }
            let room = limits.body - body.len();
            let size = usize::try_from(size)
                .ok()
                .filter(|s| *s <= room)
                .ok_or_else(|| too_large_body(size.saturating_add(body.len() as u64), limits))?;
            read_exact_into(r, size, &mut body)?;
            expect_eol(r)?;
        },
        Framing::UntilClose => loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(body);
            }
            if buf.len() > limits.body - body.len() {
                return Err(WireError::TooLarge(format!(
                    "a body without a length longer than {} bytes",
                    limits.body
                )));
            }
            body.extend_from_slice(buf);
            let n = buf.len();
            r.consume(n);
        },
    }
    Ok(body)
}

fn too_large_body(n: u64, limits: Limits) -> WireError {
    WireError::TooLarge(format!(
        "a body of {n} bytes (berth reads at most {})",
        limits.body
    ))
}

/// The `\r\n` (or bare `\n`) after a chunk's data.
fn expect_eol(r: &mut impl BufRead) -> Result<(), WireError> {
    let mut seen_cr = false;
    loop {
        let byte = match r.fill_buf()?.first() {
            Some(b) => *b,
            None => return Err(WireError::ClosedEarly),
        };
        r.consume(1);
        match byte {
            b'\r' if !seen_cr => seen_cr = true,
            b'\n' => return Ok(()),
            _ => return Err(malformed("chunk data longer than its chunk size")),
        }
    }
}

/// Reads one line, its `\n` (and any `\r` before it) included, of at most `limit` bytes;
/// `what` and `total` (the limit it is part of) name it in the error when it is longer.
fn read_line(
    r: &mut impl BufRead,
    limit: usize,
    what: &str,
    total: usize,
) -> Result<Vec<u8>, WireError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(WireError::ClosedEarly);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > limit {
            return Err(WireError::TooLarge(format!(
                "{what} longer than {total} bytes"
            )));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(line);
        }
    }
}

/// Appends exactly `n` bytes from `r` to `out`, growing it as the bytes arrive (a length read
/// from the peer never sizes an allocation by itself).
fn read_exact_into(r: &mut impl BufRead, n: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let mut left = n;
    while left > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(WireError::ClosedEarly);
        }
        let take = buf.len().min(left);
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        left -= take;
    }
    Ok(())
}

/// `line` without its `\r\n` (or bare `\n`, which HTTP/1.1 readers accept).
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `HTTP/1.1 404 Not Found` → 404. The version must be 1.0 or 1.1, the code three digits, and
/// the reason phrase (which may be empty or absent) is not needed.
fn parse_status_line(line: &[u8]) -> Result<u16, WireError> {
    let line = trim_eol(line);
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(|| malformed(format!("status line {:?}", shown(line))))?;
    match rest {
        [a, b, c, tail @ ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit())
                && (tail.is_empty() || tail[0] == b' ')
                && *a != b'0' =>
        {
            Ok(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => Err(malformed(format!("status line {:?}", shown(line)))),
    }
}

/// `Name: value` → (name, value without surrounding blanks). Names are tokens (RFC 9110 §5.1):
/// no blank before the colon, no folded continuation lines.
fn parse_header(line: &[u8]) -> Result<(&str, &str), WireError> {
    let bad = || malformed(format!("header line {:?}", shown(line)));
    let colon = line.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || !name.iter().all(token) {
        return Err(bad());
    }
    if value
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return Err(bad());
    }
    // Header names are ASCII tokens (checked above); values may carry any other byte, and only
    // those berth reads (lengths, codings) need to be text.
    let name = std::str::from_utf8(name).map_err(|_| bad())?;
    let value = std::str::from_utf8(value).unwrap_or("");
    Ok((name, value.trim_matches([' ', '\t'])))
}

/// A decimal `Content-Length`: digits only (no sign, no blanks inside), within u64.
fn parse_length(v: &str) -> Result<u64, WireError> {
    let bad = || malformed(format!("Content-Length {v:?}"));
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    v.parse().map_err(|_| bad())
}

/// A chunk-size line: hexadecimal digits, then optional blanks and `;extensions` (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let bad = || malformed(format!("chunk size line {:?}", shown(line)));
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    if digits == 0 || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return Err(bad());
    }
    let after_blanks = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .map_or(&[][..], |i| &rest[i..]);
    if !(after_blanks.is_empty() || after_blanks[0] == b';') {
        return Err(bad());
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = char::from(*d).to_digit(16).ok_or_else(bad)?;
        n.checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(v)))
            .ok_or_else(|| WireError::TooLarge(format!("chunk size {:?}", shown(line))))
    })
}

/// At most 80 bytes of `bytes`, for an error message.
fn shown(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(80)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > cut.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read};

    use super::*;

    /// Small limits, so the limit tests need no megabytes.
    const SMALL: Limits = Limits {
        head: 256,
        headers: 8,
        body: 1024,
    };

    /// Hands out its bytes `step` at a time: every split of a line, a size or a chunk the
    /// socket could produce.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(self.step).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The status and body of `raw` read `step` bytes at a time.
    fn read_with(raw: &[u8], step: usize, limits: Limits) -> Result<(u16, Vec<u8>), WireError> {
        let mut r = BufReader::with_capacity(64, Trickle { data: raw, step });
        let head = read_head(&mut r, limits)?;
        let body = read_body(&mut r, head.framing, limits)?;
        Ok((head.status, body))
    }

    fn read(raw: &[u8]) -> Result<(u16, Vec<u8>), WireError> {
        read_with(raw, usize::MAX, SMALL)
    }

    fn err(raw: &[u8]) -> String {
        match read(raw) {
            Ok(got) => panic!("{:?} read as {got:?}", String::from_utf8_lossy(raw)),
            Err(e) => e.to_string(),
        }
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
        transfer-encoding: chunked\r\ndate: Tue, 01 Dec 2026 07:00:00 GMT\r\n\r\n\
        5\r\n[{\"a\"\r\n7;ext=1;q=\"x\"\r\n:1},{}]\r\n0\r\nx-trailer: 1\r\n\r\n";
    const LENGTH: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
        Content-Length: 33\r\n\r\n{\"message\":\"network x not found\"}";

    #[test]
    fn reads_each_framing_at_every_split() {
        for step in [1, 2, 3, 7, 64, usize::MAX] {
            let got = read_with(CHUNKED, step, SMALL).expect("chunked");
            assert_eq!(got, (200, b"[{\"a\":1},{}]".to_vec()), "step {step}");
            let got = read_with(LENGTH, step, SMALL).expect("length");
            assert_eq!(got.0, 404);
            assert_eq!(got.1, br#"{"message":"network x not found"}"#);
            let close = b"HTTP/1.0 200 OK\nServer: x\n\nuntil the end";
            assert_eq!(
                read_with(close, step, SMALL).expect("close-delimited"),
                (200, b"until the end".to_vec())
            );
        }
    }

    #[test]
    fn no_body_skipped_interim_and_precedence() {
        // 204 and 304 have no body whatever their headers say.
        assert_eq!(
            read(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n").expect("204"),
            (204, vec![])
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").expect("empty"),
            (200, vec![])
        );
        // 100 Continue (and 103) come before the answer.
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n\
            HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(read(raw).expect("interim"), (201, b"{}".to_vec()));
        // chunked overrides a Content-Length (RFC 9112 §6.3); the same length twice is one.
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n\
            2\r\nok\r\n0\r\n\r\n";
        assert_eq!(read(raw).expect("te wins"), (200, b"ok".to_vec()));
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(read(raw).expect("same length"), (200, b"ok".to_vec()));
        // Hex sizes in either case, blanks before extensions, an empty reason phrase.
        let raw = b"HTTP/1.1 200 \r\nTransfer-Encoding: Chunked\r\n\r\nA \r\n0123456789\r\n\
            a;x\r\nabcdefghij\r\n0\r\n\r\n";
        assert_eq!(read(raw).expect("hex").1, b"0123456789abcdefghij".to_vec());
        assert_eq!(read(b"HTTP/1.1 500\r\n\r\n").expect("no reason").0, 500);
    }

    /// Every strict prefix of an answer whose end is known is an early close, never a
    /// success or a panic.
    #[test]
    fn every_truncation_is_an_early_close() {
        for raw in [CHUNKED, LENGTH] {
            for cut in 0..raw.len() {
                match read(&raw[..cut]) {
                    Err(WireError::ClosedEarly | WireError::BodyClosedEarly) => {}
                    other => panic!(
                        "cut at {cut} of {:?}: {other:?}",
                        String::from_utf8_lossy(raw)
                    ),
                }
            }
        }
        assert_eq!(
            err(b""),
            "connection closed before message completed",
            "no answer at all"
        );
    }

    #[test]
    fn refuses_malformed_heads() {
        for (raw, want) in [
            (&b"HTTP/2 200 OK\r\n\r\n"[..], "malformed HTTP answer: status line \"HTTP/2 200 OK\""),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
            (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
            (b"HTTP/1.1 099 Low\r\n\r\n", "status line"),
            (b"HTTP/1.1 abc OK\r\n\r\n", "status line"),
            (b"http/1.1 200 OK\r\n\r\n", "status line"),
            (b"SSH-2.0-OpenSSH_9.2\r\n", "status line \"SSH-2.0-OpenSSH_9.2\""),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header line \"no colon\""),
            (b"HTTP/1.1 200 OK\r\nName : v\r\n\r\n", "header line"),
            (b"HTTP/1.1 200 OK\r\n: v\r\n\r\n", "header line"),
            (b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n", "header line"),
            (b"HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n", "header line"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "Content-Length \"abc\""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length \"-1\""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", "Content-Length \"+5\""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", "Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", "Content-Length \"\""),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
                "conflicting Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "unsupported Transfer-Encoding \"gzip\"",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                "unsupported Transfer-Encoding",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "unsupported Transfer-Encoding",
            ),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
        ] {
            let got = err(raw);
            assert!(
                got.contains(want),
                "{:?}: {got:?} lacks {want:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn refuses_malformed_chunks() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (chunks, want) in [
            ("zz\r\nab\r\n0\r\n\r\n", "chunk size line \"zz\""),
            ("\r\n", "chunk size line \"\""),
            ("-1\r\nx\r\n0\r\n\r\n", "chunk size line \"-1\""),
            ("0x2\r\nab\r\n0\r\n\r\n", "chunk size line \"0x2\""),
            ("2 3\r\nab\r\n0\r\n\r\n", "chunk size line \"2 3\""),
            (
                "2\r\nabc\r\n0\r\n\r\n",
                "chunk data longer than its chunk size",
            ),
            (
                "2\r\nab\rX0\r\n\r\n",
                "chunk data longer than its chunk size",
            ),
            // More hex digits than a u64 holds: refused before any arithmetic overflows.
            (
                "ffffffffffffffffff\r\nab\r\n",
                "HTTP answer too large: chunk size",
            ),
            // A size within u64 but past the body limit: refused before reading (or
            // allocating) any of it.
            (
                "7fffffffffffffff\r\nab\r\n",
                "HTTP answer too large: a body of",
            ),
            ("401\r\n", "HTTP answer too large"),
        ] {
            let raw = format!("{head}{chunks}");
            let got = err(raw.as_bytes());
            assert!(got.contains(want), "{chunks:?}: {got:?} lacks {want:?}");
        }
        // Chunks that add up past the limit, each under it.
        let mut raw = head.to_string();
        for _ in 0..3 {
            raw.push_str(&format!("200\r\n{}\r\n", "x".repeat(0x200)));
        }
        assert!(err(raw.as_bytes()).contains("too large"));
    }

    #[test]
    fn limits_hold_against_endless_or_huge_input() {
        // An endless status line, an endless header, endless headers, an endless body without
        // a length, endless trailers: each refused at its limit, none read to the end.
        let endless = |prefix: &'static [u8], fill: u8| {
            let mut r = BufReader::new(prefix.chain(io::repeat(fill)));
            read_head(&mut r, SMALL).and_then(|h| read_body(&mut r, h.framing, SMALL))
        };
        for (prefix, fill, want) in [
            (&b""[..], b'H', "status line longer than 256 bytes"),
            (
                b"HTTP/1.1 200 OK\r\nX: ",
                b'a',
                "header section longer than 256 bytes",
            ),
            // Bare LFs: the first ends the head, the rest is a body without a length.
            (
                b"HTTP/1.1 200 OK\r\n",
                b'\n',
                "a body without a length longer than 1024",
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                b'z',
                "a body without a length longer than 1024",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
                b'x',
                "trailer section longer than 256 bytes",
            ),
        ] {
            match endless(prefix, fill) {
                Ok(got) => panic!("{prefix:?}+endless {fill}: {got:?}"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains(want), "{prefix:?}: {e:?} lacks {want:?}");
                }
            }
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..9 {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(err(&many).contains("more than 8 header lines"));
        // A length past the limit is refused before anything of the body is read.
        assert!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n")
                .contains("a body of 18446744073709551615 bytes (berth reads at most 1024)")
        );
    }

    /// Seeded byte flips, insertions and cuts of valid answers: each reads as an answer or
    /// an error, never a panic, and never a body past the limit.
    #[test]
    fn mutated_answers_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"0123456789abcdefABCDEF\r\n:; \t-+,xX\x00\xff";
        for round in 0..4000 {
            let mut raw = if round % 2 == 0 { CHUNKED } else { LENGTH }.to_vec();
            for _ in 0..=(next() % 4) {
                let at = (next() % raw.len() as u64) as usize;
                let byte = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => raw[at] = byte,
                    1 => raw.insert(at, byte),
                    _ => raw.truncate(at.max(1)),
                }
            }
            let step = 1 + (next() % 9) as usize;
            if let Ok((_, body)) = read_with(&raw, step, SMALL) {
                assert!(body.len() <= SMALL.body);
            }
        }
    }

    #[test]
    fn writes_requests_as_hyper_does() {
        let headers = [("host", "berth"), ("user-agent", "berth/1")];
        assert_eq!(
            String::from_utf8_lossy(&request("GET", "/networks?filters=%7B%7D", &headers, None)),
            "GET /networks?filters=%7B%7D HTTP/1.1\r\nhost: berth\r\nuser-agent: berth/1\r\n\r\n"
        );
        assert_eq!(
            String::from_utf8_lossy(&request("POST", "/containers/a/stop", &headers, None)),
            "POST /containers/a/stop HTTP/1.1\r\nhost: berth\r\nuser-agent: berth/1\r\n\r\n"
        );
        let json = [("host", "berth"), ("content-type", "application/json")];
        assert_eq!(
            String::from_utf8_lossy(&request("POST", "/n/connect", &json, Some(b"{\"a\":1}"))),
            "POST /n/connect HTTP/1.1\r\nhost: berth\r\ncontent-type: application/json\r\n\
             content-length: 7\r\n\r\n{\"a\":1}"
        );
    }
}
