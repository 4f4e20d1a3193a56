//! End-to-end fuzz of the `/networks` operations of the Engine API: random request bodies
//! shaped like Docker's (`NetworkCreateRequest`, connect and disconnect bodies, filters) with
//! random `null`s, wrong types, huge strings, control characters and unknown members, and
//! random path segments, sent to a real berthd over its socket.
//!
//! The generators follow moby's Engine API document (API 1.48), field for field; its
//! `/networks` part is vendored in `tests/moby_api/` (README there), and every answer's body is
//! checked against the schema it documents for that operation and status ([`Spec`]).
//!
//! Properties: berthd never answers 5xx; every error is a `{"message": "…"}` JSON object; a
//! 201 of create carries an `Id`; every body follows moby's schema; and after the run berthd
//! is alive and the kernel agrees with what it stored (`berth system check`). `BERTH_FUZZ_CASES` sets the number of cases (default
//! 200); a failing case is printed shrunk, nothing is written to disk.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::{percent_escape, World};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// moby's Engine API document (1.48), its `/networks` paths and the definitions they reach.
const MOBY_API: &str = include_str!("moby_api/v1.48-networks.json");

/// The vendored document, and checks of answers against it.
struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Spec {
        Spec {
            doc: serde_json::from_str(MOBY_API).expect("moby_api/v1.48-networks.json parses"),
        }
    }

    /// The schema the document gives the body of `method` `template` answering `status`:
    /// the documented one; `ErrorResponse` for an error status it does not list (dockerd
    /// answers errors in that shape whatever the status); `None` when it documents no body.
    fn response(&self, method: &str, template: &str, status: u16) -> Option<&Value> {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "the document has no {method} {template}");
        match op["responses"].get(status.to_string()) {
            Some(r) => r.get("schema"),
            None if status >= 400 => Some(&self.doc["definitions"]["ErrorResponse"]),
            None => None,
        }
    }

    /// Every way `v` departs from `schema` (OpenAPI 2.0: `$ref`, `allOf`, `type`, `enum`,
    /// `properties`, `required`, `additionalProperties`, `items`, `x-nullable`), each with
    /// its JSON path. `null` is accepted for objects and arrays, and where the document says
    /// `x-nullable`: Go encodes nil maps, slices and pointers as `null`, and dockerd answers
    /// that way itself (`"Options": null`, `"Containers": null`).
    fn violations(&self, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/definitions/");
            let def = &self.doc["definitions"][name];
            assert!(def.is_object(), "unresolved {r}");
            return self.violations(def, v, at, out);
        }
        for s in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.violations(s, v, at, out);
        }
        let ty = schema
            .get("type")
            .and_then(Value::as_str)
            .or_else(|| schema.get("properties").map(|_| "object"));
        if v.is_null() {
            let nullable = schema.get("x-nullable") == Some(&Value::Bool(true))
                || matches!(ty, None | Some("object") | Some("array"));
            if !nullable {
                out.push(format!(
                    "{at}: null, the schema wants {}",
                    ty.unwrap_or("?")
                ));
            }
            return;
        }
        let fits = match ty {
            Some("string") => v.is_string(),
            Some("boolean") => v.is_boolean(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("number") => v.is_number(),
            Some("array") => v.is_array(),
            Some("object") => v.is_object(),
            _ => true,
        };
        if !fits {
            out.push(format!("{at}: {v} is not of type {}", ty.unwrap_or("?")));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(v) {
                out.push(format!("{at}: {v} is not one of {allowed:?}"));
            }
        }
        if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
            for (i, x) in a.iter().enumerate() {
                self.violations(items, x, &format!("{at}[{i}]"), out);
            }
        }
        if let Some(o) = v.as_object() {
            let props = schema.get("properties").and_then(Value::as_object);
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(k) = req.as_str() {
                    if !o.contains_key(k) {
                        out.push(format!("{at}: required member {k:?} missing"));
                    }
                }
            }
            for (k, x) in o {
                let at = format!("{at}.{k}");
                match (
                    props.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => self.violations(s, x, &at, out),
                    (None, Some(Value::Bool(false))) => {
                        out.push(format!("{at}: not a member the schema allows"))
                    }
                    (None, Some(s)) if s.is_object() => self.violations(s, x, &at, out),
                    _ => {}
                }
            }
        }
    }

    /// The body of `method` `template` answering `status` follows the document.
    fn check(&self, method: &str, template: &str, status: u16, body: &[u8]) -> Result<(), String> {
        let Some(schema) = self.response(method, template, status) else {
            return Ok(());
        };
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "{method} {template} {status}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        })?;
        let mut out = Vec::new();
        self.violations(schema, &v, "$", &mut out);
        if out.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {template} {status} departs from moby's schema: {out:?} in {v}"
            ))
        }
    }
}

/// One HTTP/1.1 exchange on the unix socket: `(status, content type, body)`.
fn exchange(sock: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = UnixStream::connect(sock).expect("connect to berthd");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The server may answer and close before the whole request is written (a request-target
    // too long for hyper): what it said is read all the same.
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        body = dechunk(&body);
    }
    (status, header("content-type"), body)
}

/// Decodes a chunked body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if len == 0 || b.len() < eol + 2 + len {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[(eol + 4 + len).min(b.len())..];
    }
    out
}

/// Strings that break naive code: empty, blanks, control characters, quotes, unicode, long
/// and huge ones, names of things that exist.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        Just("bridge".to_string()),
        Just("host".to_string()),
        Just("default".to_string()),
        Just("c1".to_string()),
        Just("f1".to_string()),
        Just("test 01".to_string()),
        "[a-z]{1,8}",
        "[ -~]{0,40}",
        "\\PC{0,20}",
        "[\\x00-\\x1f\"\\\\]{1,8}",
        (1usize..3).prop_map(|n| "n".repeat(n * 300)),
        Just("x".repeat(70_000)),
    ]
}

/// Any JSON value, up to a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a field of the right type most of the time, else `null`, else anything (a
/// body has a dozen fields: one of the wrong type in every body would only test refusals).
fn field(right: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![40 => right, 6 => Just(Value::Null), 1 => any_json()].boxed()
}

/// A network name: mostly plain, sometimes one of [`nasty_string`].
fn name() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => "[a-z][a-z0-9 _.-]{0,12}",
        1 => nasty_string(),
    ]
    .prop_map(Value::String)
    .boxed()
}

fn string_map() -> BoxedStrategy<Value> {
    prop::collection::btree_map(nasty_string(), nasty_string().prop_map(Value::String), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

fn cidr() -> BoxedStrategy<Value> {
    prop_oneof![
        (0u8..8).prop_map(|i| format!("10.{}.0.0/24", 200 + i)),
        (0u8..4).prop_map(|i| format!("10.{}.0.0/29", 210 + i)),
        (0u8..4).prop_map(|i| format!("fd00:{i}::/64")),
        Just("10.220.0.5/24".to_string()),
        Just("127.0.0.0/8".to_string()),
        Just("0.0.0.0/0".to_string()),
        Just("fe80::/10".to_string()),
        nasty_string(),
    ]
    .prop_map(Value::String)
    .boxed()
}

fn address() -> BoxedStrategy<Value> {
    prop_oneof![
        (0u8..8, 0u8..=255).prop_map(|(i, h)| format!("10.{}.0.{h}", 200 + i)),
        (0u8..4, 0u16..20).prop_map(|(i, h)| format!("fd00:{i}::{h:x}")),
        nasty_string(),
    ]
    .prop_map(Value::String)
    .boxed()
}

/// Builds an object from optional members (`None` = left out).
fn object(members: Vec<(&'static str, Option<Value>)>) -> Value {
    let mut m = Map::new();
    for (k, v) in members {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn opt(s: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.7, field(s))
}

fn ipam_config() -> BoxedStrategy<Value> {
    let aux = prop::collection::btree_map(nasty_string(), address(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed();
    (opt(cidr()), opt(cidr()), opt(address()), opt(aux))
        .prop_map(|(s, r, g, a)| {
            object(vec![
                ("Subnet", s),
                ("IPRange", r),
                ("Gateway", g),
                ("AuxiliaryAddresses", a),
            ])
        })
        .boxed()
}

/// A `NetworkCreateRequest` (moby's swagger: every member, plus the odd unknown one).
fn create_body() -> impl Strategy<Value = Value> {
    let name = name();
    let bool_ = any::<bool>().prop_map(Value::Bool).boxed();
    // The first word is the usual one.
    let word = |w: &'static [&'static str]| {
        prop_oneof![
            6 => Just(Value::String(w[0].to_string())),
            2 => prop::sample::select(w).prop_map(|s| Value::String(s.to_string())),
            1 => nasty_string().prop_map(Value::String),
        ]
        .boxed()
    };
    let configs = prop::collection::vec(ipam_config(), 0..3)
        .prop_map(Value::Array)
        .boxed();
    let ipam = (
        opt(word(&["default", "", "dhcp"])),
        opt(string_map()),
        opt(configs),
    )
        .prop_map(|(d, o, c)| object(vec![("Driver", d), ("Options", o), ("Config", c)]))
        .boxed();
    let opts = prop_oneof![
        Just(json!({})),
        string_map(),
        prop::sample::select(
            &[
                ("com.docker.network.bridge.name", "fuzzbr0"),
                ("com.docker.network.driver.mtu", "1400"),
                ("com.docker.network.driver.mtu", "99999999"),
                ("com.docker.network.bridge.enable_icc", "false"),
                ("com.docker.network.enable_ipv6", "maybe"),
                ("parent", "lo"),
                ("berth.bridge.adopt", "true"),
            ][..]
        )
        .prop_map(|(k, v)| json!({ k: v })),
    ]
    .boxed();
    // Swarm-only switches are mostly off: each on refuses the whole body.
    let rarely_true = prop_oneof![9 => Just(json!(false)), 1 => Just(json!(true))].boxed();
    let config_from = prop_oneof![
        3 => Just(json!({ "Network": "" })),
        1 => nasty_string().prop_map(|n| json!({ "Network": n })),
    ]
    .boxed();
    (
        (
            opt(name),
            opt(word(&[
                "bridge", "macvlan", "ipvlan", "overlay", "host", "null",
            ])),
            opt(word(&["local", "swarm", "global", ""])),
            opt(prop_oneof![9 => Just(json!(true)), 1 => Just(json!(false))].boxed()),
            opt(bool_.clone()),
            opt(ipam),
        ),
        (
            opt(bool_.clone()),
            opt(bool_.clone()),
            opt(rarely_true.clone()),
            opt(rarely_true.clone()),
            opt(config_from),
            opt(opts),
            opt(string_map()),
            opt(bool_.clone()),
            prop::option::weighted(0.2, any_json()),
        ),
    )
        .prop_map(
            |((n, d, s, v4, v6, ipam), (i, a, ing, co, cf, o, l, dup, unknown))| {
                object(vec![
                    ("Name", n),
                    ("Driver", d),
                    ("Scope", s),
                    ("EnableIPv4", v4),
                    ("EnableIPv6", v6),
                    ("IPAM", ipam),
                    ("Internal", i),
                    ("Attachable", a),
                    ("Ingress", ing),
                    ("ConfigOnly", co),
                    ("ConfigFrom", cf),
                    ("Options", o),
                    ("Labels", l),
                    ("CheckDuplicate", dup),
                    // Unknown members are ignored, as Go ignores them.
                    ("XBerthFuzzUnknown", unknown),
                ])
            },
        )
}

/// A connect or disconnect body.
fn endpoint_body() -> impl Strategy<Value = Value> {
    let container = prop_oneof![
        4 => Just(json!("c1")),
        2 => prop::sample::select(&["c2", "nosuch", ""][..]).prop_map(|s| json!(s)),
        1 => nasty_string().prop_map(Value::String),
    ]
    .boxed();
    let ipam = (opt(address()), opt(address()))
        .prop_map(|(a, b)| object(vec![("IPv4Address", a), ("IPv6Address", b)]))
        .boxed();
    let aliases = prop::collection::vec(nasty_string().prop_map(Value::String), 0..3)
        .prop_map(Value::Array)
        .boxed();
    let ep = (
        opt(ipam),
        opt(aliases),
        opt(prop_oneof![
            Just(json!("")),
            Just(json!("02:42:0a:00:00:09")),
            nasty_string().prop_map(Value::String)
        ]
        .boxed()),
        opt(prop_oneof![Just(json!(0)), any::<i64>().prop_map(|n| json!(n))].boxed()),
    )
        .prop_map(|(i, a, m, g)| {
            object(vec![
                ("IPAMConfig", i),
                ("Aliases", a),
                ("MacAddress", m),
                ("GwPriority", g),
            ])
        })
        .boxed();
    (
        opt(container),
        opt(ep),
        opt(any::<bool>().prop_map(Value::Bool).boxed()),
    )
        .prop_map(|(c, e, f)| object(vec![("Container", c), ("EndpointConfig", e), ("Force", f)]))
}

/// A `filters` query value (Docker's JSON, or anything).
fn filters() -> impl Strategy<Value = String> {
    let key = prop::sample::select(
        &[
            "dangling", "driver", "id", "name", "label", "label!", "scope", "type", "until", "x",
        ][..],
    );
    let values = prop::collection::vec(
        prop_oneof![
            prop::sample::select(
                &["true", "false", "1", "0", "bridge", "custom", "builtin", "24h", "0s", "team"][..]
            )
            .prop_map(String::from),
            nasty_string(),
        ],
        0..3,
    );
    prop_oneof![
        4 => prop::collection::btree_map(key, values, 0..3).prop_map(|m| {
            let obj: Map<String, Value> = m
                .into_iter()
                .map(|(k, vs)| {
                    let set: Map<String, Value> =
                        vs.into_iter().map(|v| (v, Value::Bool(true))).collect();
                    (k.to_string(), Value::Object(set))
                })
                .collect();
            Value::Object(obj).to_string()
        }),
        1 => any_json().prop_map(|v| v.to_string()),
        1 => nasty_string(),
    ]
}

/// One API operation on `/networks`.
#[derive(Debug, Clone)]
enum Op {
    Create(Value),
    Connect(String, Value),
    Disconnect(String, Value),
    Inspect(String),
    Remove(String),
    List(String),
    Prune(String),
    /// A body that is not JSON at all, to create.
    Garbage(Vec<u8>),
}

fn net_ref() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("f1".to_string()),
        2 => prop::sample::select(&["bridge", "none", "host", "nosuch"][..]).prop_map(String::from),
        1 => nasty_string(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => create_body().prop_map(Op::Create),
        2 => (net_ref(), endpoint_body()).prop_map(|(n, b)| Op::Connect(n, b)),
        2 => (net_ref(), endpoint_body()).prop_map(|(n, b)| Op::Disconnect(n, b)),
        // Plain, valid connects and disconnects of the fixtures, so a run reliably has
        // successes between the refusals (a random body is rarely valid, and c1 stays
        // connected after its first success until something disconnects it).
        1 => Just(Op::Connect("f1".into(), json!({"Container": "c1"}))),
        1 => Just(Op::Disconnect("f1".into(), json!({"Container": "c1"}))),
        1 => net_ref().prop_map(Op::Inspect),
        1 => net_ref().prop_map(Op::Remove),
        1 => filters().prop_map(Op::List),
        1 => filters().prop_map(Op::Prune),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Op::Garbage),
    ]
}

/// How many answers of each (operation, status) the run got: printed, and checked so that the
/// run is known to have made networks and connected containers, not only been refused.
type Tally = std::sync::Mutex<std::collections::BTreeMap<(&'static str, u16), usize>>;

/// Sends `op`; checks the answer's properties.
fn check(sock: &Path, spec: &Spec, op: &Op, tally: &Tally) -> Result<(), TestCaseError> {
    let kind = match op {
        Op::Create(_) => "create",
        Op::Connect(..) => "connect",
        Op::Disconnect(..) => "disconnect",
        Op::Inspect(_) => "inspect",
        Op::Remove(_) => "remove",
        Op::List(_) => "list",
        Op::Prune(_) => "prune",
        Op::Garbage(_) => "garbage",
    };
    // The operation as moby's document names it.
    let (doc_method, template) = match op {
        Op::Create(_) | Op::Garbage(_) => ("post", "/networks/create"),
        Op::Connect(..) => ("post", "/networks/{id}/connect"),
        Op::Disconnect(..) => ("post", "/networks/{id}/disconnect"),
        Op::Inspect(_) => ("get", "/networks/{id}"),
        Op::Remove(_) => ("delete", "/networks/{id}"),
        Op::List(_) => ("get", "/networks"),
        Op::Prune(_) => ("post", "/networks/prune"),
    };
    let (method, path, body) = match op {
        Op::Create(b) => ("POST", "/v1.47/networks/create".to_string(), b.to_string()),
        Op::Connect(n, b) => (
            "POST",
            format!("/v1.47/networks/{}/connect", percent_escape(n)),
            b.to_string(),
        ),
        Op::Disconnect(n, b) => (
            "POST",
            format!("/v1.47/networks/{}/disconnect", percent_escape(n)),
            b.to_string(),
        ),
        Op::Inspect(n) => (
            "GET",
            format!("/networks/{}", percent_escape(n)),
            String::new(),
        ),
        Op::Remove(n) => (
            "DELETE",
            format!("/networks/{}", percent_escape(n)),
            String::new(),
        ),
        Op::List(f) => (
            "GET",
            format!("/networks?filters={}", percent_escape(f)),
            String::new(),
        ),
        Op::Prune(f) => (
            "POST",
            format!("/networks/prune?filters={}", percent_escape(f)),
            String::new(),
        ),
        Op::Garbage(b) => {
            let (status, ct, out) = exchange(sock, "POST", "/networks/create", b);
            *tally
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((kind, status))
                .or_default() += 1;
            answer_ok(status, &ct, &out, "garbage create")?;
            return spec
                .check(doc_method, template, status, &out)
                .map_err(TestCaseError::fail);
        }
    };
    let (status, ct, out) = exchange(sock, method, &path, body.as_bytes());
    *tally
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((kind, status))
        .or_default() += 1;
    if status == 414 && path.len() > 65_000 {
        // hyper refuses a request-target over 64 KiB itself, before berthd's router sees it
        // (a bare 414; dockerd's Go server would take up to 1 MiB). docs/API.md says so.
        return Ok(());
    }
    let what = format!(
        "{method} {} {}",
        path.chars().take(300).collect::<String>(),
        body.chars().take(300).collect::<String>()
    );
    answer_ok(status, &ct, &out, &what)?;
    spec.check(doc_method, template, status, &out)
        .map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
    if matches!(op, Op::Create(_)) && status == 201 {
        let v: Value =
            serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(
            v["Id"].as_str().is_some_and(|i| i.len() == 64),
            "{what}: 201 without Id: {v}"
        );
    }
    Ok(())
}

fn answer_ok(status: u16, ct: &str, out: &[u8], what: &str) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(out);
    prop_assert!(
        (200..500).contains(&status),
        "{what}: status {status}: {text}"
    );
    if status >= 400 {
        prop_assert!(
            ct.starts_with("application/json"),
            "{what}: {status} as {ct:?}: {text}"
        );
        let v: Value = serde_json::from_slice(out).map_err(|e| {
            TestCaseError::fail(format!("{what}: {status} body not JSON ({e}): {text}"))
        })?;
        prop_assert!(
            v.get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty()),
            "{what}: {status} without a message: {text}"
        );
    }
    Ok(())
}

/// Proves: no request built from the Engine API's `/networks` schema with random nulls, wrong
/// types, huge and control-character strings, unknown members and garbage bodies makes berthd
/// answer 5xx or an error that is not `{"message": …}` JSON; berthd stays up and in sync.
#[test]
fn networks_api_survives_fuzzing() {
    require_root!();
    let w = World::new();
    // Something to connect to and a network to connect it to, so connects can succeed.
    w.berth_ok(&["network", "create", "--subnet", "10.199.0.0/24", "f1"]);
    // f1 stays in use, so a random remove or prune cannot take the fixture away (after which
    // every connect would be a 404).
    w.run_d("keeper", &["--network", "f1"], &["sleep", "600"]);
    w.run_d("c1", &[], &["sleep", "600"]);
    w.run_d("c2", &["--network", "none"], &["sleep", "600"]);
    let cases = std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let sock = w.socket.clone();
    let tally = Tally::default();
    let spec = Spec::load();
    let result = runner.run(&prop::collection::vec(op(), 1..5), |ops| {
        for op in &ops {
            check(&sock, &spec, op, &tally)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        let e: String = e.to_string().chars().take(4000).collect();
        panic!("{e}\nberthd log tail:\n{}", tail(&w.log_text(), 20));
    }
    assert!(w.daemon_alive(), "berthd died");
    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!("answers (operation, status) -> count: {tally:?}");
    if cases >= 100 {
        for (kind, status) in [("create", 201), ("connect", 200), ("list", 200)] {
            assert!(
                tally.get(&(kind, status)).is_some_and(|n| *n > 0),
                "no {kind} answered {status} in {cases} cases: the generators only make refusals"
            );
        }
    }
    w.assert_in_sync("the fuzz");
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Proves: berthd's answers to every `/networks` operation follow the schema of moby's own
/// Engine API document (1.48) for rich networks too — dual stack, IPAM ranges and auxiliary
/// addresses, labels, options, internal, containers attached with aliases, a static address
/// and a MAC — and for created, pruned and refused requests. (The fuzz above checks the same
/// on random requests, where a rich network's inspect is rare.)
#[test]
fn network_answers_follow_mobys_schema() {
    require_root!();
    let w = World::new();
    let spec = Spec::load();
    let ok = |method: &str, template: &str, path: &str, body: Option<&str>| -> (u16, String) {
        let (status, out) = w.api(&method.to_uppercase(), path, body);
        if let Err(e) = spec.check(method, template, status, out.as_bytes()) {
            panic!("{e}");
        }
        (status, out)
    };
    let (st, out) = ok(
        "post",
        "/networks/create",
        "/networks/create",
        Some(
            r#"{"Name": "rich", "Driver": "bridge", "EnableIPv6": true, "Internal": true,
                "Labels": {"tier": "db"}, "Options": {"com.docker.network.bridge.enable_icc": "true"},
                "IPAM": {"Driver": "default", "Options": {"o": "1"}, "Config": [
                  {"Subnet": "10.201.0.0/24", "IPRange": "10.201.0.128/25", "Gateway": "10.201.0.1",
                   "AuxiliaryAddresses": {"router": "10.201.0.2"}},
                  {"Subnet": "fd00:201::/64", "Gateway": "fd00:201::1"}]}}"#,
        ),
    );
    assert_eq!(st, 201, "{out}");
    let (st, out) = ok(
        "post",
        "/networks/create",
        "/networks/create",
        Some(r#"{"Name": "plain"}"#),
    );
    assert_eq!(st, 201, "{out}");
    w.run_d(
        "a",
        &["--network", "rich", "--network-alias", "db"],
        &["sleep", "600"],
    );
    w.run_d(
        "b",
        &[
            "--network",
            "rich",
            "--ip",
            "10.201.0.200",
            "--mac-address",
            "02:42:0a:c9:00:c8",
        ],
        &["sleep", "600"],
    );
    let (st, out) = ok(
        "post",
        "/networks/{id}/connect",
        "/networks/plain/connect",
        Some(r#"{"Container": "a", "EndpointConfig": {"Aliases": ["x"]}}"#),
    );
    assert_eq!(st, 200, "{out}");
    for name in ["rich", "plain", "bridge", "host", "none"] {
        let (st, out) = ok("get", "/networks/{id}", &format!("/networks/{name}"), None);
        assert_eq!(st, 200, "{name}: {out}");
    }
    let (st, out) = ok("get", "/networks", "/networks", None);
    assert_eq!(st, 200, "{out}");
    // Refusals: not found, duplicate name, bad subnet, bad connect, in use.
    for (method, template, path, body, want) in [
        ("get", "/networks/{id}", "/networks/nope", None, 404),
        (
            "post",
            "/networks/create",
            "/networks/create",
            Some(r#"{"Name": "plain"}"#),
            409,
        ),
        (
            "post",
            "/networks/create",
            "/networks/create",
            Some(r#"{"Name": "bad", "IPAM": {"Config": [{"Subnet": "10.1.0.0/33"}]}}"#),
            400,
        ),
        (
            "post",
            "/networks/{id}/connect",
            "/networks/plain/connect",
            Some(r#"{"Container": "nope"}"#),
            404,
        ),
        ("delete", "/networks/{id}", "/networks/rich", None, 403),
    ] {
        let (st, out) = ok(method, template, path, body);
        assert_eq!(st, want, "{method} {path}: {out}");
    }
    let (st, out) = ok(
        "post",
        "/networks/{id}/disconnect",
        "/networks/plain/disconnect",
        Some(r#"{"Container": "a", "Force": true}"#),
    );
    assert_eq!(st, 200, "{out}");
    let (st, out) = ok("post", "/networks/prune", "/networks/prune", None);
    assert_eq!(st, 200, "{out}");
    assert!(
        out.contains("plain"),
        "plain was unused and is pruned: {out}"
    );
    let (st, out) = ok("post", "/networks/prune", "/networks/prune", None);
    assert_eq!(st, 200, "nothing to prune: {out}");
}

/// Proves the schema check itself catches departures (no root needed): wrong types, a
/// missing required member, a null scalar, a bad array item and an error without its message.
#[test]
fn the_schema_check_catches_departures() {
    let spec = Spec::load();
    let inspect = |body: &str| spec.check("get", "/networks/{id}", 200, body.as_bytes());
    assert!(inspect(r#"{"Name": "n", "EnableIPv6": false, "IPAM": {"Options": null}}"#).is_ok());
    for bad in [
        r#"{"Name": 7}"#,
        r#"{"EnableIPv6": "yes"}"#,
        r#"{"Name": null}"#,
        r#"{"IPAM": {"Config": [{"Subnet": 10}]}}"#,
        r#"{"Containers": {"x": {"IPv4Address": false}}}"#,
        r#"[]"#,
        "not json",
    ] {
        assert!(inspect(bad).is_err(), "accepted {bad}");
    }
    assert!(
        spec.check("post", "/networks/create", 201, br#"{"Warning": ""}"#)
            .is_err(),
        "a create answer without Id"
    );
    assert!(
        spec.check("get", "/networks/{id}", 404, br#"{"msg": "x"}"#)
            .is_err(),
        "an error without message"
    );
    assert!(
        spec.check("post", "/networks/{id}/connect", 200, b"")
            .is_ok(),
        "no body documented"
    );
}
