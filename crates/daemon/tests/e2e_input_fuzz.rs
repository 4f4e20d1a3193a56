//! End-to-end property test of hostile input (issue 8): random hostile strings (newlines, CR,
//! NUL and other controls, `#`, `;`, quotes, backslashes, unicode, long ones, and sane ones)
//! go into one user-given string field of `POST /containers/create` at a time, through the
//! real API of a real berthd. Each create either
//! - is refused with a 4xx whose `{"message"}` names the field, and nothing is stored (the
//!   container is not in `/containers/json?all=1`), or
//! - succeeds: inspect gives the value back, and the container, started, prints its
//!   `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` with exactly the expected lines and
//!   none injected.
//!
//! Afterwards berthd is alive and `berth system check` is clean. Every field is first tried
//! once with the classic injection (`a\n6.6.6.6 bank.example`), then `BERTH_FUZZ_CASES`
//! (default 40) random cases run; a failing case is printed shrunk, nothing is written to disk.
//! The generator is berth-plan's (`input::testing`), the one its own property test uses.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use berth_plan::input::testing::{hostile, MARKER};
use common::{percent_escape, show, World};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

/// The user-defined network every container joins (embedded DNS, aliases).
const NET: &str = "fz";

/// Prints the three generated files, split by a marker no accepted field can hold (`#` is
/// refused in every field that reaches them). PATH is set by the script: an `Env` case may set
/// any variable.
const SCRIPT: &str = "PATH=/usr/bin:/bin; cat /etc/hostname; echo '#SPLIT#'; cat /etc/hosts; \
                      echo '#SPLIT#'; cat /etc/resolv.conf";

/// Which field of the create request a hostile value goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Name,
    Hostname,
    DnsSearch,
    DnsOption,
    ExtraHostName,
    ExtraHostRaw,
    Dns,
    EnvName,
    EnvValue,
    LabelKey,
    LabelValue,
    CmdArg,
    User,
    WorkingDir,
    Alias,
    DriverOpt,
    MacAddress,
    IPv4Address,
    HostIp,
    NetworkMode,
}

const FIELDS: [Field; 20] = [
    Field::Name,
    Field::Hostname,
    Field::DnsSearch,
    Field::DnsOption,
    Field::ExtraHostName,
    Field::ExtraHostRaw,
    Field::Dns,
    Field::EnvName,
    Field::EnvValue,
    Field::LabelKey,
    Field::LabelValue,
    Field::CmdArg,
    Field::User,
    Field::WorkingDir,
    Field::Alias,
    Field::DriverOpt,
    Field::MacAddress,
    Field::IPv4Address,
    Field::HostIp,
    Field::NetworkMode,
];

impl Field {
    /// What a refusal's message must say to name the field.
    fn named(self) -> &'static [&'static str] {
        match self {
            Field::Name => &["container name"],
            Field::Hostname => &["hostname"],
            Field::DnsSearch => &["--dns-search"],
            Field::DnsOption => &["--dns-option"],
            Field::ExtraHostName | Field::ExtraHostRaw => &["--add-host"],
            Field::Dns => &["--dns"],
            Field::EnvName | Field::EnvValue => &["(Env)"],
            Field::LabelKey | Field::LabelValue => &["(Labels)"],
            Field::CmdArg => &["(Cmd)"],
            Field::User => &["(User)"],
            Field::WorkingDir => &["working directory"],
            Field::Alias => &["alias"],
            // Only stored and given back as JSON: never refused.
            Field::DriverOpt => &[],
            Field::MacAddress => &["MAC address"],
            Field::IPv4Address => &["IPv4 address"],
            Field::HostIp => &["port binding"],
            // A `container:X` mode names the container it did not find.
            Field::NetworkMode => &["network", "container"],
        }
    }

    /// Whether an accepted container is started and its files read: not for the fields that
    /// only decide whether it can start at all (a user or directory that does not exist, a
    /// published port, another network mode).
    fn started(self) -> bool {
        !matches!(
            self,
            Field::User
                | Field::WorkingDir
                | Field::MacAddress
                | Field::IPv4Address
                | Field::HostIp
                | Field::NetworkMode
        )
    }
}

/// The classic injection: a line of its own, led by the marker.
fn injection() -> String {
    format!("a\n{MARKER} bank.example")
}

/// The create request (path, body) with `v` in `field`; every other field sane.
fn request(field: Field, v: &str, n: usize) -> (String, Value) {
    let mut name = format!("fz{n}");
    let mut body = json!({
        "Cmd": ["/bin/sh", "-c", SCRIPT],
        "Hostname": "fz",
        "HostConfig": {"NetworkMode": NET},
        "NetworkingConfig": {"EndpointsConfig": {NET: {}}},
    });
    let endpoint = &mut body["NetworkingConfig"]["EndpointsConfig"][NET];
    match field {
        Field::Alias => endpoint["Aliases"] = json!([v]),
        Field::DriverOpt => endpoint["DriverOpts"] = json!({ "k": v }),
        Field::IPv4Address => endpoint["IPAMConfig"] = json!({ "IPv4Address": v }),
        _ => {}
    }
    let hc = &mut body["HostConfig"];
    match field {
        Field::DnsSearch => hc["DnsSearch"] = json!([v]),
        Field::DnsOption => hc["DnsOptions"] = json!([v]),
        Field::ExtraHostName => hc["ExtraHosts"] = json!([format!("{v}:10.9.0.2")]),
        Field::ExtraHostRaw => hc["ExtraHosts"] = json!([v]),
        Field::Dns => hc["Dns"] = json!([v]),
        Field::HostIp => {
            hc["PortBindings"] = json!({"80/tcp": [{"HostIp": v, "HostPort": ""}]});
        }
        Field::NetworkMode => hc["NetworkMode"] = json!(v),
        _ => {}
    }
    match field {
        Field::Name => name = v.to_string(),
        Field::Hostname => body["Hostname"] = json!(v),
        Field::EnvName => body["Env"] = json!([format!("{v}=1")]),
        Field::EnvValue => body["Env"] = json!([format!("X={v}")]),
        Field::LabelKey => body["Labels"] = json!({ v: "x" }),
        Field::LabelValue => body["Labels"] = json!({ "k": v }),
        Field::CmdArg => body["Cmd"] = json!(["/bin/sh", "-c", SCRIPT, v]),
        Field::User => body["User"] = json!(v),
        Field::WorkingDir => body["WorkingDir"] = json!(format!("/{v}")),
        Field::MacAddress => body["MacAddress"] = json!(v),
        Field::NetworkMode => body["NetworkingConfig"] = json!({}),
        _ => {}
    }
    (
        format!("/containers/create?name={}", percent_escape(&name)),
        body,
    )
}

/// Removes a container when dropped, so that a failing case leaves nothing behind.
struct Created<'a> {
    w: &'a World,
    id: String,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        let (status, text) =
            self.w
                .api("DELETE", &format!("/containers/{}?force=1", self.id), None);
        if status != 204 && status != 404 {
            eprintln!("removing {}: {status} {text}", self.id);
        }
    }
}

/// How the cases ended: (field, accepted) → count.
type Tally = Mutex<BTreeMap<(Field, bool), usize>>;

/// Whether `line` is one an attacker added: it starts with the marker and a field separator.
fn injected(line: &str) -> bool {
    line.strip_prefix(MARKER)
        .is_some_and(|rest| rest.starts_with([' ', '\t']))
}

/// Runs one case; see the module's comment for what it proves.
fn case(w: &World, field: Field, v: &str, n: usize, tally: &Tally) -> Result<(), TestCaseError> {
    let (path, body) = request(field, v, n);
    let (status, text) = w.api("POST", &path, Some(&body.to_string()));
    prop_assert!(
        status == 201 || (400..500).contains(&status),
        "{field:?} {v:?}: {status} {text}"
    );
    if let Ok(mut t) = tally.lock() {
        *t.entry((field, status == 201)).or_default() += 1;
    }
    if status != 201 {
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = answer["message"].as_str().unwrap_or("");
        prop_assert!(
            field.named().iter().any(|f| message.contains(f)),
            "{field:?} {v:?}: the refusal does not name the field: {status} {text}"
        );
        let (_, list) = w.api("GET", "/containers/json?all=1", None);
        let list: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
        prop_assert_eq!(list, json!([]), "{:?} {:?}: refused but stored", field, v);
        return Ok(());
    }
    let created: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let id = created["Id"].as_str().unwrap_or("").to_string();
    prop_assert!(!id.is_empty(), "201 without an Id: {}", text);
    let c = Created { w, id };

    // Inspect gives the value back as sent.
    let (status, text) = w.api("GET", &format!("/containers/{}/json", c.id), None);
    prop_assert_eq!(status, 200, "{}", text);
    let i: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let ep = &i["NetworkSettings"]["Networks"][NET];
    let hostname = i["Config"]["Hostname"].as_str().unwrap_or("").to_string();
    match field {
        Field::Name if !v.is_empty() => prop_assert_eq!(
            &i["Name"],
            &json!(format!("/{}", v.strip_prefix('/').unwrap_or(v)))
        ),
        // An empty hostname is the container's name.
        Field::Hostname if v.is_empty() => prop_assert_eq!(&hostname, &format!("fz{n}")),
        Field::Hostname => prop_assert_eq!(&hostname, v),
        Field::DnsSearch | Field::DnsOption | Field::ExtraHostName => {
            let key = match field {
                Field::DnsSearch => "DnsSearch",
                Field::DnsOption => "DnsOptions",
                _ => "ExtraHosts",
            };
            prop_assert_eq!(&i["HostConfig"][key], &body["HostConfig"][key]);
        }
        Field::Dns => prop_assert_eq!(
            &i["HostConfig"]["Dns"],
            &json!([v
                .parse::<std::net::IpAddr>()
                .map(|a| a.to_string())
                .unwrap_or_default()])
        ),
        Field::EnvName | Field::EnvValue => prop_assert_eq!(&i["Config"]["Env"], &body["Env"]),
        Field::LabelKey | Field::LabelValue => {
            prop_assert_eq!(&i["Config"]["Labels"], &body["Labels"]);
        }
        Field::CmdArg => prop_assert_eq!(&i["Config"]["Cmd"], &body["Cmd"]),
        Field::User => prop_assert_eq!(&i["Config"]["User"], &body["User"]),
        Field::WorkingDir => prop_assert_eq!(&i["Config"]["WorkingDir"], &body["WorkingDir"]),
        Field::Alias => prop_assert!(
            ep["Aliases"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(v))),
            "{}",
            ep
        ),
        Field::DriverOpt => prop_assert_eq!(&ep["DriverOpts"]["k"], &json!(v)),
        _ => {}
    }
    if !field.started() {
        return Ok(());
    }

    // Started, it prints its generated files: exactly the expected lines.
    let (status, text) = w.api("POST", &format!("/containers/{}/start", c.id), None);
    prop_assert_eq!(status, 204, "{:?} {:?}: start: {}", field, v, text);
    let (status, text) = w.api("POST", &format!("/containers/{}/wait", c.id), None);
    prop_assert_eq!(status, 200, "{}", text);
    let o = w.berth(&["logs", &c.id]);
    let out = common::stdout(&o);
    prop_assert!(
        text.contains("\"StatusCode\":0"),
        "{field:?} {v:?}: the script failed: {text} {}",
        show(&o)
    );
    let parts: Vec<&str> = out.split("#SPLIT#\n").collect();
    prop_assert_eq!(parts.len(), 3, "{:?} {:?}: {}", field, v, out);
    for line in out.lines() {
        prop_assert!(
            !injected(line),
            "{field:?} {v:?}: injected line {line:?} in {out}"
        );
    }
    prop_assert_eq!(parts[0], format!("{hostname}\n"));
    let hosts: Vec<&str> = parts[1].lines().collect();
    let extra = usize::from(matches!(field, Field::ExtraHostName | Field::ExtraHostRaw));
    // Loopback and the IPv6 names, the --add-host entry, the container's one address.
    prop_assert_eq!(
        hosts.len(),
        6 + extra + 1,
        "{:?} {:?}: {}",
        field,
        v,
        parts[1]
    );
    for line in &hosts {
        let (addr, names) = line.split_once('\t').unwrap_or(("", ""));
        prop_assert!(addr.parse::<std::net::IpAddr>().is_ok(), "{line:?}");
        prop_assert!(!names.is_empty() && !names.contains('\t'), "{line:?}");
    }
    if field == Field::ExtraHostName {
        prop_assert_eq!(hosts[6], format!("10.9.0.2\t{v}"));
    }
    prop_assert_eq!(hosts[6 + extra].split('\t').nth(1), Some(hostname.as_str()));
    for line in parts[2].lines() {
        prop_assert!(
            ["# ", "nameserver ", "search ", "options "]
                .iter()
                .any(|p| line.starts_with(p)),
            "{field:?} {v:?}: unexpected line {line:?} in {}",
            parts[2]
        );
    }
    if field == Field::DnsSearch {
        prop_assert!(
            parts[2].contains(&format!("\nsearch {v}\n")),
            "{}",
            parts[2]
        );
    }
    if field == Field::DnsOption {
        prop_assert!(parts[2].contains(&format!("\noptions {v}")), "{}", parts[2]);
    }
    Ok(())
}

/// Proves: no hostile string in any user-given field of a container create reaches a
/// generated file as a line of its own; each is refused with a 4xx naming the field and
/// nothing stored, or accepted, given back by inspect and written as one field; berthd stays
/// up and in sync.
#[test]
fn hostile_strings_in_every_create_field() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.198.0.0/24", NET]);
    let started = Instant::now();
    let tally = Tally::default();
    let counter = AtomicUsize::new(0);
    let next = || counter.fetch_add(1, Ordering::SeqCst);
    let fail = |e: String| -> ! {
        let e: String = e.chars().take(4000).collect();
        let log = w.log_text();
        let lines: Vec<&str> = log.lines().collect();
        panic!(
            "{e}\nberthd log tail:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    };
    // Every field once with the classic injection.
    for field in FIELDS {
        if let Err(e) = case(&w, field, &injection(), next(), &tally) {
            fail(format!("{field:?}: {e}"));
        }
    }
    let cases = std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 50,
        ..Config::default()
    });
    let result = runner.run(
        &(prop::sample::select(FIELDS.to_vec()), hostile()),
        |(field, v)| case(&w, field, &v, next(), &tally),
    );
    if let Err(e) = result {
        fail(e.to_string());
    }
    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "{} creates in {:?}; (field, accepted) -> count: {tally:?}",
        counter.into_inner(),
        started.elapsed()
    );
    for accepted in [true, false] {
        assert!(
            tally.iter().any(|((_, a), n)| *a == accepted && *n > 0),
            "no create was {}: the generators are broken",
            if accepted { "accepted" } else { "refused" }
        );
    }
    assert!(w.daemon_alive(), "berthd died");
    w.assert_in_sync("the fuzz");
}
