//! The library against `berth_api`'s own client: the same request bytes for the same call, the
//! same words for the same answer. A fake berthd (a unix socket in a temporary directory)
//! records what `berth_api::client::Client` sends and answers what the test says.

use super::*;
use berth_api::client::{Client, Method};
use berth_api::types::{
    EndpointIpamConfig, EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

fn args(line: &[&str]) -> Vec<Vec<u8>> {
    line.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn plan_of(line: &[&str], env: Option<&str>) -> Option<(Verb, Vec<u8>, String, String, bool)> {
    let owned = args(line);
    let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    plan(&refs, env.map(str::as_bytes)).map(|c| {
        (
            c.verb,
            c.socket.to_vec(),
            c.network.to_string(),
            c.container.to_string(),
            c.force,
        )
    })
}

/// Proves: the forms the front takes, and that everything else goes to berth-cli.
#[test]
fn takes_only_the_command_lines_it_understands() {
    let d = DEFAULT_SOCKET.to_vec();
    assert_eq!(
        plan_of(&["network", "connect", "net", "web"], None),
        Some((Verb::Connect, d.clone(), "net".into(), "web".into(), false))
    );
    assert_eq!(
        plan_of(
            &[
                "-H",
                "unix:///tmp/s.sock",
                "network",
                "disconnect",
                "-f",
                "n",
                "c"
            ],
            None
        ),
        Some((
            Verb::Disconnect,
            b"/tmp/s.sock".to_vec(),
            "n".into(),
            "c".into(),
            true
        ))
    );
    // -H after the subcommand (clap's global flag), --host=, the environment, a plain path.
    assert_eq!(
        plan_of(&["network", "connect", "n", "c", "--host=/a.sock"], None).map(|p| p.1),
        Some(b"/a.sock".to_vec())
    );
    assert_eq!(
        plan_of(&["network", "connect", "n", "c"], Some("unix:///e.sock")).map(|p| p.1),
        Some(b"/e.sock".to_vec())
    );
    assert_eq!(
        plan_of(&["network", "connect", "n", "c"], Some("")).map(|p| p.1),
        Some(d.clone())
    );
    assert_eq!(
        plan_of(
            &["-H", "/f.sock", "network", "connect", "n", "c"],
            Some("/e.sock")
        )
        .map(|p| p.1),
        Some(b"/f.sock".to_vec())
    );
    assert!(plan_of(
        &[
            "network",
            "connect",
            "--alias",
            "a",
            "--alias=b",
            "--ip",
            "10.0.0.2",
            "n",
            "c",
            "--link",
            "x:y"
        ],
        None
    )
    .is_some());
    assert!(plan_of(&["network", "disconnect", "--force", "n", "c"], None).is_some());
    for line in [
        &["network", "connect", "n"][..],
        &["network", "connect", "n", "c", "d"],
        &["network", "connect", "--help"],
        &["network", "connect", "--", "n", "c"],
        &["network", "connect", "-h", "n", "c"],
        &["network", "connect", "--ip", "1", "--ip", "2", "n", "c"],
        &["network", "connect", "--ip6", "::1", "--ip6=::2", "n", "c"],
        &["network", "connect", "--alias", "-x", "n", "c"],
        &["network", "connect", "--alias=", "n", "c"],
        &["network", "connect", "--alias"],
        &["network", "connect", "--force", "n", "c"],
        &["network", "disconnect", "--alias", "a", "n", "c"],
        &["network", "disconnect", "-f", "-f", "n", "c"],
        &["network", "disconnect", "--force=true", "n", "c"],
        &["network", "disconnect", "-fH", "/s", "n", "c"],
        &["network", "connect", "-", "c"],
        &["network", "connect", "", "c"],
        &["network", "connect", "n", ""],
        &["network", "ls"],
        &["network", "--ip", "1", "connect", "n", "c"],
        &["net", "connect", "n", "c"],
        &["--version"],
        &["run", "--rm", "x"],
        &[],
        &["-H", "tcp://1.2.3.4:2375", "network", "connect", "n", "c"],
        &["-H", "unix://", "network", "connect", "n", "c"],
        &["-H", "/a", "-H", "/b", "network", "connect", "n", "c"],
        &["-Hfoo", "network", "connect", "n", "c"],
    ] {
        assert_eq!(plan_of(line, None), None, "{line:?} must go to berth-cli");
    }
    // A socket path no sockaddr_un holds, a BERTH_HOST clap cannot read: berth-cli's.
    let long = format!("/{}", "s".repeat(MAX_SOCKET_PATH));
    assert_eq!(
        plan_of(&["-H", &long, "network", "connect", "n", "c"], None),
        None
    );
    let bad: &[u8] = b"/s\xff";
    let owned = args(&["network", "connect", "n", "c"]);
    let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    assert!(plan(&refs, Some(bad)).is_none());
    let mut owned = args(&["network", "connect", "n"]);
    owned.push(b"c\xff".to_vec());
    let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    assert!(plan(&refs, None).is_none());
    // Up to MAX_ARGS arguments are the front's; one more is berth-cli's.
    let head: [&[u8]; 4] = [b"network", b"connect", b"n", b"c"];
    let mut many: Vec<&[u8]> = head.to_vec();
    many.extend(std::iter::repeat_n(
        &b"--alias=a"[..],
        MAX_ARGS - head.len(),
    ));
    assert!(plan(&many, None).is_some());
    many.push(b"--alias=a");
    assert!(plan(&many, None).is_none());
}

/// A fake berthd: answers each connection with the next of `answers` once it has read one
/// whole request (head, then a `content-length` body), and gives back the requests' bytes.
fn fake(answers: Vec<Vec<u8>>) -> (PathBuf, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "berth-front-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sock = dir.join("s.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let handle = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in answers {
            let (mut s, _) = listener.accept().expect("accept");
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = s.write_all(&answer);
            requests.push(req);
        }
        let _ = std::fs::remove_dir_all(dir);
        requests
    });
    (sock, handle)
}

/// The request `berth_api`'s client sends for `body` to `path`.
fn client_request<B: serde::Serialize>(path: &str, body: &B) -> Vec<u8> {
    let (sock, handle) = fake(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()
    ]);
    let client = Client::new(&sock.display().to_string()).expect("host");
    client
        .request_empty_blocking(Method::POST, path, Some(body))
        .expect("the fake answers 200");
    handle.join().expect("fake").remove(0)
}

/// The front's request for `line`.
fn front_request(line: &[&str]) -> Vec<u8> {
    let owned = args(line);
    let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let call = plan(&refs, None).expect("the front takes it");
    let (mut head, mut body) = (vec![0u8; 16384], vec![0u8; 16384]);
    let mut out = Buf::new(&mut head);
    call.request(&mut out, &mut Buf::new(&mut body))
        .expect("fits")
        .to_vec()
}

/// berth-cli's path escaping (`format::url_escape`), spelled out independently.
fn escaped(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Proves: byte for byte the request berth-cli's client sends, hostile names and values
/// included (quotes, backslashes, newlines and every other control byte, `/`, `%`, `?`,
/// non-ASCII), for connect with each flag and for disconnect with and without `-f`.
#[test]
fn sends_the_request_berth_cli_sends() {
    let hostile = "we\"b\\\n\r\t\u{1}\u{7f}/%?#é😀 x";
    for (net, ctr) in [("net", "web"), (hostile, hostile), ("a/b", "c%2Fd")] {
        // No flags: the default endpoint.
        let want = client_request(
            &format!("/networks/{}/connect", escaped(net)),
            &NetworkConnectRequest {
                container: ctr.into(),
                endpoint_config: Some(EndpointSettings::default()),
            },
        );
        assert_eq!(front_request(&["network", "connect", net, ctr]), want);
        // Every flag, repeated ones in order.
        let want = client_request(
            &format!("/networks/{}/connect", escaped(net)),
            &NetworkConnectRequest {
                container: ctr.into(),
                endpoint_config: Some(EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: Some("10.1.0.9".into()),
                        ipv6_address: Some(hostile.into()),
                        link_local_ips: Some(vec!["169.254.1.1".into(), "fe80::9".into()]),
                    }),
                    links: Some(vec!["db:d\"b".into()]),
                    aliases: Some(vec!["a1".into(), hostile.into()]),
                    ..EndpointSettings::default()
                }),
            },
        );
        let line = [
            "network",
            "connect",
            "--alias",
            "a1",
            "--ip=10.1.0.9",
            "--link-local-ip",
            "169.254.1.1",
            net,
            "--ip6",
            hostile,
            "--alias",
            hostile,
            "--link=db:d\"b",
            "--link-local-ip=fe80::9",
            ctr,
        ];
        assert_eq!(front_request(&line), want);
        for force in [false, true] {
            let want = client_request(
                &format!("/networks/{}/disconnect", escaped(net)),
                &NetworkDisconnectRequest {
                    container: ctr.into(),
                    force,
                },
            );
            let line: Vec<&str> = ["network", "disconnect", net, ctr]
                .into_iter()
                .chain(force.then_some("-f"))
                .collect();
            assert_eq!(front_request(&line), want);
        }
    }
    // Only --ip6 / only --link-local-ip: IPAMConfig with that field alone.
    for (flag, cfg) in [
        (
            "--ip6=fd00::5",
            EndpointIpamConfig {
                ipv6_address: Some("fd00::5".into()),
                ..Default::default()
            },
        ),
        (
            "--link-local-ip=169.254.0.7",
            EndpointIpamConfig {
                link_local_ips: Some(vec!["169.254.0.7".into()]),
                ..Default::default()
            },
        ),
    ] {
        let want = client_request(
            "/networks/n/connect",
            &NetworkConnectRequest {
                container: "c".into(),
                endpoint_config: Some(EndpointSettings {
                    ipam_config: Some(cfg),
                    ..EndpointSettings::default()
                }),
            },
        );
        assert_eq!(front_request(&["network", "connect", flag, "n", "c"]), want);
    }
}

/// What the front prints for `answer` (stderr), or `None` for a success.
fn front_says(answer_bytes: &[u8], socket: &str) -> Option<String> {
    match answer(answer_bytes, true) {
        Answer::Done => None,
        Answer::Refused(m) => {
            let mut out = b"Error response from daemon: ".to_vec();
            write_message(&m, &mut |b| out.extend_from_slice(b));
            Some(String::from_utf8(out).expect("UTF-8"))
        }
        Answer::Broken(why) => Some(format!("berth: talking to berthd at {socket}: {why}")),
        Answer::More => Some("incomplete".into()),
    }
}

/// What berth-cli prints for the same answer (`main::report`: a daemon error as it is, any
/// other error after `berth: `).
fn client_says(answer_bytes: &[u8]) -> Option<String> {
    let (sock, handle) = fake(vec![answer_bytes.to_vec()]);
    let client = Client::new(&sock.display().to_string()).expect("host");
    let r = client.request_empty_blocking(
        Method::POST,
        "/networks/n/connect",
        Some(&NetworkDisconnectRequest::default()),
    );
    let _ = handle.join();
    r.err().map(|e| match e {
        e @ berth_api::client::ApiError::Server { .. } => e.to_string(),
        e => format!("berth: {e}").replace(&sock.display().to_string(), "SOCK"),
    })
}

/// Proves: for each answer, success or the same message, word for word, as berth-cli: JSON
/// messages with every kind of escape, extra keys, bodies that are not that JSON (text,
/// duplicate keys, a `null` message, invalid UTF-8), empty bodies (the status and its reason),
/// 1xx answers skipped, a chunked body, a body until close, and answers cut short.
#[test]
fn says_what_berth_cli_says_for_each_answer() {
    // An answer with a correct content-length (`at` = `None`) or the one given.
    let with = |head: &str, body: &[u8], length: Option<usize>| {
        let mut a = head
            .replace("LEN", &length.unwrap_or(body.len()).to_string())
            .into_bytes();
        a.extend_from_slice(body);
        a
    };
    let cl = |status: &str, body: &[u8]| {
        with(
            &format!("HTTP/1.1 {status}\r\ncontent-length: LEN\r\n\r\n"),
            body,
            None,
        )
    };
    let answers: Vec<Vec<u8>> = vec![
        cl("200 OK", b""),
        b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        cl("200 OK", b"abc"),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        with(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: LEN\r\n\r\n",
            b"{\"message\":\"container s is not connected to network c\"}",
            None,
        ),
        cl(
            "404 Not Found",
            br#" {"message":"a \"q\" \\ \/ \b\f\n\r\t \u00e9 \ud83d\ude00 \u0001 end", "x": [1, {"y": null}], "z": -1.5e3} "#,
        ),
        cl("409 Conflict", br#"{"message":"a","message":"b"}"#),
        cl("409 Conflict", br#"{"message":null}"#),
        cl("409 Conflict", br#"{"x":1}"#),
        cl("409 Conflict", br#"{"message":"x"} trailing"#),
        cl("409 Conflict", br#"{"message":"bad \ud800 surrogate"}"#),
        cl("409 Conflict", b"{\"message\":\"raw \xff byte\"}"),
        cl("500 Internal Server Error", b"  boom\xff\n \t\n"),
        cl("500 Internal Server Error", "\u{2003}text\u{a0}".as_bytes()),
        cl("500 Internal Server Error", b""),
        cl("599 Odd", b""),
        b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n11\r\n{\"message\":\"bad\"}\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.1 400 Bad Request\r\n\r\n{\"message\":\"until close\"}".to_vec(),
        with("HTTP/1.1 400 Bad Request\r\ncontent-length: LEN\r\n\r\n", b"{\"m", Some(5)),
        with("HTTP/1.1 200 OK\r\ncontent-length: LEN\r\n\r\n", b"ab", Some(5)),
        b"HTTP/1.1 400 Bad".to_vec(),
        b"".to_vec(),
        b"HTTP/1.1 4x0 Bad\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(),
        b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.1 204 No Content\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(),
    ];
    for a in answers {
        let front = front_says(&a, "SOCK");
        let cli = client_says(&a);
        match (&front, &cli) {
            // A broken answer: the front gives the kind of failure, berth-cli its detail.
            (Some(f), Some(c)) if f.starts_with("berth: talking to berthd at SOCK: malformed") => {
                assert!(
                    c.starts_with(f.as_str()),
                    "{:?}: front {f:?}, berth-cli {c:?}",
                    String::from_utf8_lossy(&a)
                );
            }
            _ => assert_eq!(front, cli, "answer {:?}", String::from_utf8_lossy(&a)),
        }
    }
}

/// Proves: an answer that is not complete asks for more until berthd closes.
#[test]
fn waits_for_the_whole_answer() {
    let whole = b"HTTP/1.1 404 Not Found\r\ncontent-length: 19\r\n\r\n{\"message\":\"gone\"} ";
    for cut in 0..whole.len() {
        assert_eq!(answer(&whole[..cut], false), Answer::More, "cut at {cut}");
    }
    assert!(matches!(
        answer(whole, false),
        Answer::Refused(Message::Json(b"gone"))
    ));
    assert_eq!(answer(b"HTTP/1.1 200 OK\r\n\r\n", false), Answer::More);
    assert_eq!(answer(b"HTTP/1.1 200 OK\r\n\r\n", true), Answer::Done);
}

/// Proves: the reason phrases are `http`'s (what berth-cli prints for an empty error body).
#[test]
fn reason_phrases_are_https() {
    for status in 300..1000u16 {
        let want = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        assert_eq!(reason(status), want, "status {status}");
    }
}

/// Proves: a request that does not fit the lent buffers is refused (berth-cli then runs it),
/// not cut.
#[test]
fn a_request_too_big_for_its_buffer_is_refused() {
    let long = "a".repeat(600);
    let owned = args(&["network", "connect", &long, &long]);
    let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let call = plan(&refs, None).expect("taken");
    let (mut head, mut body) = (vec![0u8; 512], vec![0u8; 4096]);
    let mut out = Buf::new(&mut head);
    assert!(call.request(&mut out, &mut Buf::new(&mut body)).is_none());
    let (mut head, mut body) = (vec![0u8; 4096], vec![0u8; 512]);
    let mut out = Buf::new(&mut head);
    assert!(call.request(&mut out, &mut Buf::new(&mut body)).is_none());
}

/// Proves: with no `-H` and no `BERTH_HOST` the front talks to the socket berth-cli talks to.
#[test]
fn the_default_socket_is_berth_clis() {
    assert_eq!(DEFAULT_SOCKET, berth_api::DEFAULT_SOCKET.as_bytes());
    let client = Client::new(berth_api::DEFAULT_SOCKET).expect("the default host parses");
    assert_eq!(
        client.socket().as_os_str().as_encoded_bytes(),
        DEFAULT_SOCKET
    );
}
