//! A small HTTP/1.1 client for berthd over its unix socket.
//!
//! Every request opens its own connection, so requests can run concurrently (the CLI streams a
//! container's logs while it waits for the container to exit).
//!
//! Two transports, one request: the `async` methods go through hyper on a tokio runtime (what
//! streams, attaches and concurrent requests need); [`Client::request_json_blocking`] and
//! [`Client::request_empty_blocking`] send the same bytes on a plain blocking socket and read
//! the answer by hand (`crate::wire`), for a process that has no runtime at all. Both build
//! the request and read errors through the same functions here, so a command reads the same
//! answers and prints the same errors whichever it uses.

use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{HeaderName, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::awake::{Awake, AWAKE_CAP};
use crate::types::ErrorResponse;
use crate::wire::{self, Limits};
use crate::DEFAULT_SOCKET;

pub use hyper::Method;

/// Pass as `body` when a request has none: `client.request_json(Method::GET, "/info", NO_BODY)`.
pub const NO_BODY: Option<&'static ()> = None;

/// The environment variable naming berthd's socket (`unix:///path` or a plain path).
pub const HOST_ENV: &str = "BERTH_HOST";

/// What can go wrong talking to berthd.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The host is not a unix socket address.
    #[error("invalid host {host:?}: berth only speaks to berthd over a unix socket (unix:///path or /path)")]
    InvalidHost {
        /// What was given.
        host: String,
    },
    /// The socket could not be reached.
    #[error("cannot connect to berthd at {socket}: {reason} ({hint})")]
    Connect {
        /// Socket path.
        socket: String,
        /// The OS error, without Rust's `(os error N)` suffix.
        reason: String,
        /// What to do about it.
        hint: &'static str,
        /// The underlying error (already part of the message).
        error: io::Error,
    },
    /// berthd answered with a non-2xx status.
    #[error("Error response from daemon: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// berthd's `message`.
        message: String,
    },
    /// The connection broke or the HTTP exchange failed.
    #[error("talking to berthd at {socket}: {message}")]
    Http {
        /// Socket path.
        socket: String,
        /// What happened.
        message: String,
    },
    /// berthd's answer was not the JSON expected.
    #[error("unexpected answer from berthd to {method} {path}: {error}")]
    Decode {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// The parse error (already part of the message).
        error: serde_json::Error,
    },
    /// The request body could not be encoded.
    #[error("cannot encode the request body: {0}")]
    Encode(serde_json::Error),
}

impl ApiError {
    /// The HTTP status when berthd answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when berthd said 404 (no such network/container/exec).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// A client of berthd's API over a unix socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for `host`: `unix:///path/to.sock` or a plain path.
    pub fn new(host: &str) -> Result<Self, ApiError> {
        let path = match host.strip_prefix("unix://") {
            Some(path) => path,
            None if host.contains("://") => {
                return Err(ApiError::InvalidHost {
                    host: host.to_string(),
                })
            }
            None => host,
        };
        if path.is_empty() {
            return Err(ApiError::InvalidHost {
                host: host.to_string(),
            });
        }
        Ok(Client {
            socket: PathBuf::from(path),
        })
    }

    /// The client the user asked for: the `-H` flag, else `$BERTH_HOST`, else
    /// [`DEFAULT_SOCKET`]. `DOCKER_HOST` is deliberately ignored (it belongs to docker).
    pub fn from_env(flag: Option<&str>) -> Result<Self, ApiError> {
        if let Some(host) = flag.filter(|h| !h.is_empty()) {
            return Client::new(host);
        }
        match std::env::var(HOST_ENV) {
            Ok(host) if !host.is_empty() => Client::new(&host),
            _ => Client::new(DEFAULT_SOCKET),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends a request and decodes a 2xx JSON answer into `T`.
    pub async fn request_json<T, B>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let resp = self.send(method.clone(), path_and_query, body).await?;
        let bytes = self.collect(resp.into_body()).await?;
        decode(&method, path_and_query, &bytes)
    }

    /// Sends a request whose 2xx answer has no body worth reading.
    pub async fn request_empty<B>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<(), ApiError>
    where
        B: Serialize + ?Sized,
    {
        let resp = self.send(method, path_and_query, body).await?;
        self.collect(resp.into_body()).await?;
        Ok(())
    }

    /// [`Client::request_json`] without an async runtime: the calling thread blocks on its own
    /// connection until the whole answer is in. Same request bytes, same answers, same errors.
    pub fn request_json_blocking<T, B>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let bytes = self.exchange(&method, path_and_query, body)?;
        decode(&method, path_and_query, &bytes)
    }

    /// [`Client::request_empty`] without an async runtime (see
    /// [`Client::request_json_blocking`]).
    pub fn request_empty_blocking<B>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<(), ApiError>
    where
        B: Serialize + ?Sized,
    {
        self.exchange(&method, path_and_query, body).map(drop)
    }

    /// One request and its whole 2xx body on a blocking `std` socket, in the order of
    /// [`Client::send_with`]'s steps (encode, connect, then the request's target), so an
    /// invalid body or an absent daemon is reported first as there.
    fn exchange<B>(
        &self,
        method: &Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<Vec<u8>, ApiError>
    where
        B: Serialize + ?Sized,
    {
        let payload = encode(body)?;
        let awake = Awake::ask();
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)
            .map_err(|source| connect_error(&self.socket, source))?;
        // The target as hyper's request builder checks and writes it (origin form).
        let uri: Uri = path_and_query
            .parse()
            .map_err(|e| self.http_error(format!("invalid request {path_and_query:?}: {e}")))?;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let headers: Vec<_> = request_headers(payload.is_some()).collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let request = wire::request(method.as_str(), target, &headers, payload.as_deref());
        let written = stream.write_all(&request);
        let mut reader = BufReader::new(&stream);
        if awake.held() {
            wait_awake(&stream, &mut reader);
        }
        drop(awake);
        let head = match wire::read_head(&mut reader, Limits::DEFAULT) {
            Ok(head) => head,
            // berthd may answer (an error) and close before it read the whole request; only
            // when no answer came is the failed write the error.
            Err(e) => {
                return Err(self.http_error(written.err().map_or(e.to_string(), |w| w.to_string())))
            }
        };
        let body = wire::read_body(&mut reader, head.framing, Limits::DEFAULT);
        if (200..300).contains(&head.status) {
            return body.map_err(|e| self.http_error(e));
        }
        // As with hyper: an error answer whose body cannot be read is still that error.
        Err(server_error(head.status, &body.unwrap_or_default()))
    }

    /// Sends a request and returns its 2xx body as a stream of chunks (logs, exec output).
    pub async fn request_stream<B>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<BodyStream, ApiError>
    where
        B: Serialize + ?Sized,
    {
        let resp = self.send(method, path_and_query, body).await?;
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(BodyStream {
            body: resp.into_body(),
            socket: self.socket_name(),
            content_type,
        })
    }

    /// Sends a request asking to take the connection over (`Connection: Upgrade`,
    /// `Upgrade: tcp`, as the docker CLI does for attach and exec start) and returns it once
    /// berthd answered `101`: raw bytes both ways from then on; shutting its write side down
    /// tells berthd the input ended.
    pub async fn hijack<B>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<Hijacked, ApiError>
    where
        B: Serialize + ?Sized,
    {
        let resp = self.send_with(method, path_and_query, body, true).await?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.http_error(format!(
                "berthd answered {} instead of taking the connection over",
                resp.status()
            )));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| self.http_error(e))?;
        Ok(TokioIo::new(upgraded))
    }

    fn socket_name(&self) -> String {
        self.socket.display().to_string()
    }

    fn http_error(&self, err: impl std::fmt::Display) -> ApiError {
        ApiError::Http {
            socket: self.socket_name(),
            message: err.to_string(),
        }
    }

    async fn collect(&self, body: Incoming) -> Result<Bytes, ApiError> {
        body.collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| self.http_error(e))
    }

    async fn send<B>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<Response<Incoming>, ApiError>
    where
        B: Serialize + ?Sized,
    {
        self.send_with(method, path_and_query, body, false).await
    }

    async fn send_with<B>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, ApiError>
    where
        B: Serialize + ?Sized,
    {
        let payload = encode(body)?;
        let mut awake = Awake::ask();
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| connect_error(&self.socket, source))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_error(e))?;
        tokio::spawn(async move {
            // The connection ends with the response body (or the server closing it); its error, if
            // any, already reached the request or the body stream. With upgrades, a 101 hands
            // the connection to `hyper::upgrade::on`.
            let _ = conn.with_upgrades().await;
        });

        let mut builder = Request::builder().method(method).uri(path_and_query);
        for (name, value) in request_headers(payload.is_some()) {
            builder = builder.header(name, value);
        }
        if upgrade {
            builder = builder
                .header(hyper::header::CONNECTION, "Upgrade")
                .header(hyper::header::UPGRADE, "tcp");
        }
        let req = builder
            .body(Full::new(Bytes::from(payload.unwrap_or_default())))
            .map_err(|e| self.http_error(format!("invalid request {path_and_query:?}: {e}")))?;
        let sent = sender.send_request(req);
        tokio::pin!(sent);
        // Awake until the answer's head came or [`AWAKE_CAP`] passed (see [`crate::awake`]).
        let resp = if awake.held() {
            match tokio::time::timeout(AWAKE_CAP, &mut sent).await {
                Ok(r) => r,
                Err(_) => {
                    awake.let_go();
                    sent.await
                }
            }
        } else {
            sent.await
        };
        drop(awake);
        let resp = resp.map_err(|e| self.http_error(e))?;
        let status = resp.status();
        if status.is_success() || (upgrade && status == hyper::StatusCode::SWITCHING_PROTOCOLS) {
            return Ok(resp);
        }
        let bytes = self.collect(resp.into_body()).await.unwrap_or_default();
        Err(server_error(status.as_u16(), &bytes))
    }
}

/// Waits for the first bytes of the answer on `stream` for at most [`AWAKE_CAP`] (what came
/// stays in `reader`'s buffer), so that the caller lets go of its [`Awake`] once the answer
/// is there or the cap passed. Anything but a time-out (bytes, the end of the stream, an
/// error) is left for the reads that follow to take up, as without this wait.
fn wait_awake(stream: &std::os::unix::net::UnixStream, reader: &mut impl io::BufRead) {
    if stream.set_read_timeout(Some(AWAKE_CAP)).is_err() {
        return;
    }
    let _ = reader.fill_buf();
    // A socket left with the time-out would fail a later, slower answer: that failure is the
    // error then (`read_head` reports it).
    let _ = stream.set_read_timeout(None);
}

/// The headers of every request, in the order both transports write them (hyper adds
/// `content-length` after them; [`wire::request`] does as hyper does).
fn request_headers(json_body: bool) -> impl Iterator<Item = (HeaderName, &'static str)> {
    [
        Some((HOST, "berth")),
        Some((USER_AGENT, concat!("berth/", env!("CARGO_PKG_VERSION")))),
        json_body.then_some((CONTENT_TYPE, "application/json")),
    ]
    .into_iter()
    .flatten()
}

/// The request body as JSON.
fn encode<B: Serialize + ?Sized>(body: Option<&B>) -> Result<Option<Vec<u8>>, ApiError> {
    body.map(|b| serde_json::to_vec(b).map_err(ApiError::Encode))
        .transpose()
}

/// A 2xx answer's body as `T`.
fn decode<T: DeserializeOwned>(
    method: &Method,
    path_and_query: &str,
    bytes: &[u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| ApiError::Decode {
        method: method.to_string(),
        path: path_and_query.to_string(),
        error,
    })
}

/// berthd's non-2xx answer as an error.
fn server_error(status: u16, body: &[u8]) -> ApiError {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    ApiError::Server {
        status,
        message: error_message(status, reason, body),
    }
}

/// A connection berthd handed over ([`Client::hijack`]).
pub type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

/// A streaming response body.
#[derive(Debug)]
pub struct BodyStream {
    body: Incoming,
    socket: String,
    content_type: Option<String>,
}

impl BodyStream {
    /// The answer's `Content-Type`, if it had one.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The next chunk, `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Result<Bytes, ApiError>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Some(Ok(data));
                        }
                    }
                }
                Err(e) => {
                    return Some(Err(ApiError::Http {
                        socket: self.socket.clone(),
                        message: e.to_string(),
                    }))
                }
            }
        }
    }
}

/// The message of an error answer: `{"message": ...}`, else the text, else the status.
fn error_message(status: u16, reason: Option<&str>, body: &[u8]) -> String {
    if let Ok(err) = serde_json::from_slice::<ErrorResponse>(body) {
        return err.message;
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if !text.is_empty() {
        return text;
    }
    match reason {
        Some(reason) => format!("{status} {reason}"),
        None => format!("HTTP status {status}"),
    }
}

fn connect_error(socket: &Path, source: io::Error) -> ApiError {
    let hint = match source.kind() {
        io::ErrorKind::PermissionDenied => "berthd's socket is root-only: try again with sudo",
        _ => "is berthd running? start it with: sudo berthd",
    };
    let full = source.to_string();
    let reason = match full.find(" (os error") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    ApiError::Connect {
        socket: socket.display().to_string(),
        reason,
        hint,
        error: source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(
            Client::new("unix:///tmp/b.sock").map(|c| c.socket).ok(),
            Some(PathBuf::from("/tmp/b.sock"))
        );
        assert_eq!(
            Client::new("/x/y.sock").map(|c| c.socket).ok(),
            Some(PathBuf::from("/x/y.sock"))
        );
        assert!(Client::new("tcp://1.2.3.4:2375").is_err());
        assert!(Client::new("unix://").is_err());
        assert_eq!(
            Client::from_env(Some("/f.sock")).map(|c| c.socket).ok(),
            Some(PathBuf::from("/f.sock"))
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(
                404,
                Some("Not Found"),
                br#"{"message":"network x not found"}"#
            ),
            "network x not found"
        );
        assert_eq!(error_message(500, None, b"boom\n"), "boom");
        assert_eq!(
            error_message(502, Some("Bad Gateway"), b""),
            "502 Bad Gateway"
        );
    }

    #[tokio::test]
    async fn connect_failure_is_for_people() {
        let c = Client::new("/nonexistent/berth-test.sock").expect("valid host");
        let err = c
            .request_empty(Method::GET, "/info", NO_BODY)
            .await
            .expect_err("no daemon there");
        assert_eq!(
            err.to_string(),
            "cannot connect to berthd at /nonexistent/berth-test.sock: No such file or directory \
             (is berthd running? start it with: sudo berthd)"
        );
    }

    /// A unix socket that answers its connections in turn with `answers`, each after reading
    /// one whole request (head, then a `content-length` body); gives back the requests' bytes.
    fn answering(sock: &Path, answers: Vec<Vec<u8>>) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
        use std::io::Read;
        let _ = std::fs::remove_file(sock);
        let listener = std::os::unix::net::UnixListener::bind(sock).expect("bind");
        std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().expect("accept");
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).expect("read");
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if n == 0 || req.len() >= end + 4 + len {
                            break;
                        }
                    } else if n == 0 {
                        break;
                    }
                }
                requests.push(req);
                let _ = s.write_all(&answer);
            }
            requests
        })
    }

    /// The blocking transport sends the bytes hyper sends and reads every answer (JSON,
    /// empty, chunked, berthd's errors, bodies that are no JSON, a connection cut short) into
    /// the same result, error messages included.
    #[tokio::test]
    async fn blocking_transport_reads_as_hyper() {
        let dir = std::env::temp_dir().join(format!("berth-client-ab-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("s.sock");
        let c = Client::new(&format!("unix://{}", sock.display())).expect("host");
        let create =
            serde_json::json!({"Name": "web", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}]}});
        let cases: Vec<(Method, &str, Option<&serde_json::Value>, &str)> = vec![
            (Method::GET, "/networks?filters=%7B%22name%22%3A%5B%22a%22%5D%7D", None,
             "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n[{\"Name\":\"a\"}]"),
            (Method::POST, "/networks/b/connect", Some(&create),
             "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            (Method::POST, "/containers/s/stop?t=1", None, "HTTP/1.1 204 No Content\r\n\r\n"),
            (Method::DELETE, "/networks/nosuch", None,
             "HTTP/1.1 404 Not Found\r\ncontent-length: 39\r\n\r\n{\"message\":\"network nosuch not found\"}\n\n"),
            (Method::POST, "/networks/create", Some(&create),
             "HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
              10\r\n{\"message\":\"netw\r\n20\r\nork with name web already exists\r\n2\r\n\"}\r\n0\r\n\r\n"),
            (Method::POST, "/networks/create", Some(&create),
             "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 26\r\n\r\ninvalid subnet 10.0.0.0/33"),
            (Method::GET, "/info", None, "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"),
            (Method::GET, "/info", None, "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 10\r\n\r\ncut"),
            (Method::GET, "/version", None,
             "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"),
            (Method::GET, "/version", None, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{\"a\":"),
            (Method::GET, "/version", None, "HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n[1,2]"),
            (Method::GET, "/version", None, "HTTP/1.1 200 OK\r\ncontent-le"),
            (Method::GET, "/version", None, ""),
        ];
        let show = |r: Result<serde_json::Value, ApiError>| match r {
            Ok(v) => format!("ok {v}"),
            Err(e) => format!("err {e}"),
        };
        for (method, path, body, answer) in cases {
            let answers = vec![answer.as_bytes().to_vec(); 2];
            let server = answering(&sock, answers);
            let by_hyper = show(c.request_json(method.clone(), path, body).await);
            let blocking = show(c.request_json_blocking(method.clone(), path, body));
            let requests = server.join().expect("server");
            assert_eq!(
                String::from_utf8_lossy(&requests[0]),
                String::from_utf8_lossy(&requests[1]),
                "the request bytes of {method} {path}"
            );
            assert_eq!(by_hyper, blocking, "{method} {path} answered {answer:?}");
        }
        // And an absent daemon, and an invalid target, as hyper's path says them.
        let gone = Client::new("/nonexistent/berth-test.sock").expect("host");
        assert_eq!(
            show(gone.request_json(Method::GET, "/info", NO_BODY).await),
            show(gone.request_json_blocking(Method::GET, "/info", NO_BODY))
        );
        // (A listener that never accepts: the connections succeed, nothing is read.)
        let _ = std::fs::remove_file(&sock);
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let invalid = show(c.request_json(Method::GET, "/a b", NO_BODY).await);
        assert!(invalid.contains("invalid request \"/a b\""), "{invalid}");
        assert_eq!(
            invalid,
            show(c.request_json_blocking(Method::GET, "/a b", NO_BODY))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The blocking transport reads an answer whole however late it comes: one that starts
    /// late, and one whose body comes after its head. Both come after [`AWAKE_CAP`], so as
    /// root the wait awake times out first and hands over to the blocking read (a socket left
    /// with its time-out would fail the read with `WouldBlock`).
    #[test]
    fn blocking_transport_reads_late_answers_whole() {
        use std::io::Read;
        let dir = std::env::temp_dir().join(format!("berth-client-late-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let late = AWAKE_CAP + std::time::Duration::from_millis(20);
        let server = std::thread::spawn(move || {
            let parts: [(&[u8], &[u8]); 2] = [
                (
                    b"",
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
                ),
                (
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n",
                    b"{\"a\":2}\n",
                ),
            ];
            for (first, rest) in parts {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).expect("read");
                s.write_all(first).expect("write");
                std::thread::sleep(late);
                s.write_all(rest).expect("write");
            }
        });
        let c = Client::new(&format!("unix://{}", sock.display())).expect("host");
        for want in [1, 2] {
            let t = std::time::Instant::now();
            let got: serde_json::Value = c
                .request_json_blocking(Method::GET, "/version", NO_BODY)
                .expect("the whole answer");
            assert_eq!(got, serde_json::json!({ "a": want }));
            assert!(t.elapsed() >= late, "the answer was {late:?} late");
        }
        server.join().expect("server");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn round_trip_over_a_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = std::env::temp_dir().join(format!("berth-client-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let server = tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"Id\":\"abc\"}\n",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 33\r\n\r\n{\"message\":\"network x not found\"}",
            ] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        let c = Client::new(&format!("unix://{}", sock.display())).expect("host");
        let got: crate::types::IdResponse = c
            .request_json(
                Method::POST,
                "/containers/x/exec",
                Some(&serde_json::json!({})),
            )
            .await
            .expect("json");
        assert_eq!(got.id, "abc");
        let err = c
            .request_empty(Method::DELETE, "/networks/x", NO_BODY)
            .await
            .expect_err("404");
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            "Error response from daemon: network x not found"
        );
        let _ = server.await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
