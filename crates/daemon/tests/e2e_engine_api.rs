//! End-to-end: berthd's Engine API for networks as clients written against dockerd use it —
//! the raw API (the way SDKs send it: nulls, empty bodies, swarm probes) and the stock docker
//! CLI's less common flags.

mod common;

use common::{show, stderr, World};
use serde_json::{json, Value};

const NOT_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \
     \"docker swarm join\" to connect this node to swarm and try again.";

/// `w.api` with a JSON body, the answer parsed (panics on a body that is not JSON).
fn call(w: &World, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, text) = w.api(method, path, body);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {status} {text:?}"))
    };
    (status, v)
}

/// Asserts an error answer: `status` and a `{"message": …}` body containing `needle`.
fn refused(w: &World, method: &str, path: &str, body: Option<&str>, status: u16, needle: &str) {
    let (got, v) = call(w, method, path, body);
    let msg = v["message"].as_str().unwrap_or_else(|| {
        panic!("{method} {path} {body:?}: no message in {v}");
    });
    assert_eq!(got, status, "{method} {path} {body:?}: {v}");
    assert!(
        msg.contains(needle),
        "{method} {path} {body:?}: message should contain {needle:?}: {msg:?}"
    );
}

/// Asserts a CLI command failed and said `why` on stderr.
fn fails_with(o: &std::process::Output, why: &str, what: &str) {
    assert!(!o.status.success(), "{what}: should fail: {}", show(o));
    assert!(
        stderr(o).contains(why),
        "{what}: should say {why:?}: {}",
        show(o)
    );
}

fn create(w: &World, body: Value) -> Value {
    let (status, v) = call(w, "POST", "/v1.47/networks/create", Some(&body.to_string()));
    assert_eq!(status, 201, "create {body}: {v}");
    v
}

fn inspect(w: &World, name: &str) -> Value {
    let path = format!("/v1.47/networks/{}", escape_all(name));
    let (status, v) = call(w, "GET", &path, None);
    assert_eq!(status, 200, "inspect {name}: {v}");
    v
}

/// Percent-encodes every byte that is not alphanumeric (for a name in a path).
fn escape_all(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .filter_map(|n| n["Name"].as_str().map(String::from))
        .collect();
    n.sort();
    n
}

/// Proves: unknown paths and wrong methods get dockerd's 404 `page not found` JSON, swarm
/// endpoints dockerd's 503 messages; JSON `null` wherever Go takes it, empty connect and
/// disconnect bodies read as `{}` and a missing `Container` gets dockerd's 400; names with a
/// space work end to end; predefined and blank names are refused; scope swarm/global,
/// `ConfigFrom` naming no network, `ConfigOnly`, `EnableIPv4: false` and other IPAM drivers are
/// refused with a clear message; bad JSON is a 400 with a JSON body; `IPAM.Options` is `null`
/// when not given and kept when given; nothing of all that leaves berth out of sync.
#[test]
fn raw_api_answers_like_dockerd() {
    require_root!();
    let w = World::new();

    for (m, p) in [
        ("GET", "/nosuch"),
        ("GET", "/v1.47/nosuch/path"),
        ("POST", "/networks/bridge"),
        ("PUT", "/networks"),
        ("DELETE", "/v1.41/networks/create"),
    ] {
        refused(&w, m, p, None, 404, "page not found");
    }
    refused(
        &w,
        "POST",
        "/swarm/leave",
        None,
        503,
        "This node is not part of a swarm",
    );
    refused(
        &w,
        "POST",
        "/v1.47/swarm/init",
        Some("{}"),
        503,
        "swarm mode",
    );
    refused(&w, "POST", "/swarm/join", Some("{}"), 503, "swarm mode");
    for (m, p) in [
        ("GET", "/swarm"),
        ("GET", "/v1.47/services"),
        ("POST", "/services/create"),
        ("GET", "/nodes"),
        ("GET", "/tasks"),
        ("GET", "/secrets"),
        ("DELETE", "/secrets/x"),
        ("GET", "/configs"),
        ("POST", "/configs/create"),
    ] {
        let (status, v) = call(&w, m, p, Some("{}"));
        assert_eq!(
            (status, v["message"].as_str()),
            (503, Some(NOT_MANAGER)),
            "{m} {p}"
        );
    }

    // A body as a Go or Python client may send it: nulls everywhere.
    let v = create(
        &w,
        json!({"Name": "nulls", "Driver": null, "Scope": null, "EnableIPv6": null,
            "IPAM": {"Driver": null, "Options": null, "Config": [
                {"Subnet": "10.70.0.0/24", "IPRange": null, "Gateway": null,
                 "AuxiliaryAddresses": null}]},
            "Internal": null, "Attachable": null, "Ingress": null, "ConfigOnly": null,
            "ConfigFrom": null, "Options": null, "Labels": null, "CheckDuplicate": null}),
    );
    assert_eq!(v["Id"].as_str().map(str::len), Some(64), "{v}");
    let n = inspect(&w, "nulls");
    assert_eq!(n["IPAM"]["Options"], Value::Null, "{n}");
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.70.0.0/24", "{n}");
    assert_eq!(n["EnableIPv4"], true, "{n}");
    create(&w, json!({"Name": "noipam", "IPAM": null}));
    create(
        &w,
        json!({"Name": "ipamopts", "IPAM": {"Driver": "default", "Options": {"foo": "bar"}}}),
    );
    assert_eq!(
        inspect(&w, "ipamopts")["IPAM"]["Options"],
        json!({"foo": "bar"})
    );
    create(&w, json!({"Name": "emptyopts", "IPAM": {"Options": {}}}));
    assert_eq!(inspect(&w, "emptyopts")["IPAM"]["Options"], json!({}));

    // Names: a space is fine (dockerd's rule); blank and predefined names are not.
    create(&w, json!({"Name": "test 01"}));
    assert_eq!(inspect(&w, "test 01")["Name"], "test 01");
    // ...and what berth cannot make is refused, saying why.
    for (body, status, why) in [
        (r#"{"Name":"default"}"#, 403, "predefined"),
        (r#"{"Name":"host"}"#, 403, "predefined"),
        (r#"{"Name":"  "}"#, 400, "invalid name"),
        ("{}", 400, "invalid name"),
        (r#"{"Name":"test 01"}"#, 409, "already exists"),
        (r#"{"Name":"s","Scope":"swarm"}"#, 400, "swarm"),
        (r#"{"Name":"g","Scope":"global"}"#, 400, "cluster store"),
        (r#"{"Name":"g","Scope":"planet"}"#, 400, "scope"),
        (
            r#"{"Name":"cf","ConfigFrom":{"Network":"nosuch"}}"#,
            404,
            "configuration network \"nosuch\" does not exist",
        ),
        (
            r#"{"Name":"cf","ConfigFrom":{"Network":"nulls"}}"#,
            400,
            "not a configuration-only network",
        ),
        (r#"{"Name":"co","ConfigOnly":true}"#, 400, "config-only"),
        (r#"{"Name":"v6","EnableIPv4":false}"#, 400, "IPv6-only"),
        (
            r#"{"Name":"ip","IPAM":{"Driver":"dhcp"}}"#,
            400,
            "IPAM driver \"dhcp\"",
        ),
        (r#"{"Name":5}"#, 400, "invalid network create request"),
        ("{", 400, "invalid network create request"),
        (r#"{"Name":"x"} {}"#, 400, "invalid network create request"),
    ] {
        refused(&w, "POST", "/networks/create", Some(body), status, why);
    }

    // Connect and disconnect: an empty body is {}; no Container is dockerd's 400.
    w.run_d("c1", &[], &["sleep", "120"]);
    for body in [
        None,
        Some("{}"),
        Some(r#"{"Container":null,"EndpointConfig":null}"#),
    ] {
        refused(
            &w,
            "POST",
            "/networks/nulls/connect",
            body,
            400,
            "invalid name or ID supplied",
        );
        refused(
            &w,
            "POST",
            "/networks/nulls/disconnect",
            body,
            400,
            "invalid name or ID supplied",
        );
    }
    let (st, v) = call(
        &w,
        "POST",
        "/networks/test%2001/connect",
        Some(
            r#"{"Container":"c1","EndpointConfig":{"IPAMConfig":null,"Aliases":null,"MacAddress":null,"GwPriority":null}}"#,
        ),
    );
    assert_eq!(st, 200, "connect with nulls: {v}");
    assert!(
        !w.ip_of("c1", "test 01").is_empty(),
        "c1 on \"test 01\": {}",
        w.inspect("c1")
    );
    let (st, v) = call(
        &w,
        "POST",
        "/networks/test%2001/disconnect",
        Some(r#"{"Container":"c1","Force":null}"#),
    );
    assert_eq!(st, 200, "disconnect with nulls: {v}");
    let (st, _) = call(&w, "DELETE", "/networks/test%2001", None);
    assert_eq!(st, 204);

    // moby 27: an IPv6 pool without EnableIPv6 is kept, not used.
    let v = create(
        &w,
        json!({"Name": "v6off", "IPAM": {"Config": [
            {"Subnet": "10.71.0.0/24"}, {"Subnet": "fd00:71::/64", "Gateway": "fd00:71::1"}]}}),
    );
    assert!(
        v["Warning"].as_str().unwrap_or("").contains("fd00:71::/64"),
        "create should warn: {v}"
    );
    let n = inspect(&w, "v6off");
    assert_eq!(n["EnableIPv6"], false, "{n}");
    let subnets: Vec<&str> = n["IPAM"]["Config"]
        .as_array()
        .expect("Config")
        .iter()
        .filter_map(|c| c["Subnet"].as_str())
        .collect();
    assert_eq!(subnets, ["10.71.0.0/24", "fd00:71::/64"], "{n}");
    w.run_d("c6", &["--network", "v6off"], &["sleep", "120"]);
    let ep = &w.inspect("c6")["NetworkSettings"]["Networks"]["v6off"];
    assert!(
        ep["IPAddress"]
            .as_str()
            .unwrap_or("")
            .starts_with("10.71.0."),
        "{ep}"
    );
    assert_eq!(
        ep["GlobalIPv6Address"], "",
        "no IPv6 on a network without IPv6: {ep}"
    );
    let addrs = w.exec_ok("c6", &["ip", "-6", "addr", "show", "scope", "global"]);
    assert!(!addrs.contains("fd00:71"), "{addrs}");

    // The filters of `network ls` and `network prune`.
    let (_, l) = call(
        &w,
        "GET",
        "/networks?filters=%7B%22dangling%22%3A%7B%22false%22%3Atrue%7D%7D",
        None,
    );
    assert_eq!(
        names(&l),
        ["bridge", "host", "none", "v6off"],
        "dangling=false"
    );
    let (_, l) = call(
        &w,
        "GET",
        "/networks?filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D",
        None,
    );
    assert_eq!(
        names(&l),
        ["emptyopts", "ipamopts", "noipam", "nulls"],
        "dangling=true"
    );
    refused(
        &w,
        "GET",
        "/networks?filters=%7B%22dangling%22%3A%5B%22maybe%22%5D%7D",
        None,
        400,
        "dangling",
    );
    create(&w, json!({"Name": "keepme", "Labels": {"keep": "1"}}));
    // Nothing is a day old; the filter is read, not ignored.
    let (st, v) = call(
        &w,
        "POST",
        "/networks/prune?filters=%7B%22until%22%3A%5B%2224h%22%5D%7D",
        None,
    );
    assert_eq!(
        (st, &v["NetworksDeleted"]),
        (200, &json!([])),
        "until=24h: {v}"
    );
    refused(
        &w,
        "POST",
        "/networks/prune?filters=%7B%22until%22%3A%5B%22someday%22%5D%7D",
        None,
        400,
        "failed to parse value as time or duration",
    );
    refused(
        &w,
        "POST",
        "/networks/prune?filters=%7B%22driver%22%3A%5B%22bridge%22%5D%7D",
        None,
        400,
        "invalid filter",
    );
    let (st, v) = call(
        &w,
        "POST",
        "/networks/prune?filters=%7B%22label!%22%3A%5B%22keep%22%5D%2C%22until%22%3A%5B%220s%22%5D%7D",
        None,
    );
    assert_eq!(st, 200, "{v}");
    let mut deleted: Vec<String> =
        serde_json::from_value(v["NetworksDeleted"].clone()).expect("list");
    deleted.sort();
    assert_eq!(
        deleted,
        ["emptyopts", "ipamopts", "noipam", "nulls"],
        "label!=keep"
    );
    let (_, l) = call(&w, "GET", "/networks", None);
    assert_eq!(names(&l), ["bridge", "host", "keepme", "none", "v6off"]);

    // A long name with a quote: its firewall comments are cut and quoted the way nft keeps
    // them, so the check below finds nothing to repair.
    let long = format!("q\"uote {}", "n".repeat(245));
    create(
        &w,
        json!({"Name": long, "IPAM": {"Config": [{"Subnet": "10.69.0.0/24"}]}}),
    );
    assert_eq!(inspect(&w, &long)["Name"], long.as_str());

    // /info in Docker's shape.
    let (st, i) = call(&w, "GET", "/v1.47/info", None);
    assert_eq!(st, 200);
    assert!(i["NCPU"].as_u64().unwrap_or(0) >= 1, "{i}");
    assert!(i["MemTotal"].as_u64().unwrap_or(0) > 0, "{i}");
    assert_eq!(i["Swarm"]["LocalNodeState"], "inactive", "{i}");
    assert_eq!(i["Driver"], "none", "{i}");
    assert_eq!(i["OSType"], "linux", "{i}");
    let plugins = i["Plugins"]["Network"].to_string();
    for d in ["bridge", "host", "macvlan", "null"] {
        assert!(plugins.contains(d), "{plugins}");
    }

    let o = w.system_check(&[]);
    assert!(
        o.status.success(),
        "berth out of sync after all that: {}",
        show(&o)
    );
}

/// Proves: auxiliary addresses are kept, returned by inspect (berth's CLI and docker's), and
/// never handed to a container — a /29 with two of them holds exactly three containers, on
/// the other addresses — nor given by `--ip`; bad ones are refused with the reason.
#[test]
fn aux_addresses_are_reserved() {
    require_root!();
    let w = World::new();
    w.berth_ok(&[
        "network",
        "create",
        "--subnet",
        "10.72.0.0/29",
        "--aux-address",
        "router=10.72.0.3",
        "--aux-address",
        "nas=10.72.0.5",
        "--ipam-opt",
        "color=blue",
        "tiny",
    ]);
    let n = w.network_inspect("tiny");
    assert_eq!(
        n["IPAM"]["Config"][0]["AuxiliaryAddresses"],
        json!({"nas": "10.72.0.5", "router": "10.72.0.3"}),
        "{n}"
    );
    assert_eq!(n["IPAM"]["Options"], json!({"color": "blue"}), "{n}");
    let f = w.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{json (index .IPAM.Config 0).AuxiliaryAddresses}} {{json .IPAM.Options}}",
        "tiny",
    ]);
    assert_eq!(
        f.trim(),
        r#"{"nas":"10.72.0.5","router":"10.72.0.3"} {"color":"blue"}"#
    );

    let mut ips = Vec::new();
    for i in 0..3 {
        let name = format!("t{i}");
        w.run_d(&name, &["--network", "tiny"], &["sleep", "120"]);
        ips.push(w.ip_of(&name, "tiny"));
    }
    ips.sort();
    assert_eq!(ips, ["10.72.0.2", "10.72.0.4", "10.72.0.6"]);
    let o = w.berth(&["run", "-d", "--network", "tiny", "sleep", "120"]);
    fails_with(&o, "no free address", "a 4th container on the /29");
    w.berth_ok(&["rm", "-f", "t1"]);
    let o = w.berth(&[
        "run",
        "-d",
        "--network",
        "tiny",
        "--ip",
        "10.72.0.5",
        "sleep",
        "120",
    ]);
    fails_with(&o, "auxiliary address \"nas\"", "--ip of an aux address");

    for (aux, why) in [
        ("x=10.99.0.1", "no matching subnet"),
        ("x=10.73.0.1", "gateway"),
        ("x=10.73.0.0", "network or broadcast"),
    ] {
        let o = w.berth(&[
            "network",
            "create",
            "--subnet",
            "10.73.0.0/24",
            "--aux-address",
            aux,
            "bad",
        ]);
        fails_with(&o, why, aux);
    }
    // Through docker's CLI too.
    w.docker_ok(&[
        "network",
        "create",
        "--subnet",
        "10.74.0.0/24",
        "--aux-address",
        "gw2=10.74.0.254",
        "d1",
    ]);
    let f = w.docker_ok(&["network", "inspect", "-f", "{{json .IPAM.Config}}", "d1"]);
    assert!(
        f.contains(r#""AuxiliaryAddresses":{"gw2":"10.74.0.254"}"#),
        "{f}"
    );
    let o = w.docker(&[
        "network",
        "create",
        "--subnet",
        "10.75.0.0/24",
        "--aux-address",
        "a=10.75.0.1",
        "d2",
    ]);
    fails_with(&o, "gateway", "docker --aux-address of the gateway");
    let o = w.system_check(&[]);
    assert!(o.status.success(), "{}", show(&o));
}

/// Proves: with the stock docker CLI, `docker info` prints the host's CPUs and memory, swarm
/// inactive and berth's network drivers; `network ls --format` shows the IPv4/IPv6 columns;
/// a name with a space works; `--scope swarm|global`, `--config-from` of a missing network,
/// `--config-only` and another `--ipam-driver` are refused with their reason; `--ipam-opt` is
/// kept; `--filter dangling=false|true`, `prune --filter until=` and `label!=` behave as
/// dockerd's; `docker swarm leave` and `docker service ls` get dockerd's swarm messages.
#[test]
fn stock_docker_cli_beyond_the_happy_path() {
    require_root!();
    let w = World::new();

    let info = w.docker(&["info"]);
    let out = common::stdout(&info);
    assert!(info.status.success(), "docker info: {}", show(&info));
    for needle in [
        "Swarm: inactive",
        "Network: bridge host ipvlan macvlan null",
        "Storage Driver: none",
        "Total Memory:",
        "Live Restore Enabled: true",
    ] {
        assert!(out.contains(needle), "docker info lacks {needle:?}:\n{out}");
    }
    let cpus = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("CPUs: "))
        .and_then(|n| n.trim().parse::<u32>().ok());
    assert!(cpus.is_some_and(|n| n >= 1), "CPUs:\n{out}");
    assert!(
        !stderr(&info).to_lowercase().contains("error"),
        "{}",
        show(&info)
    );

    let ls = w.docker_ok(&["network", "ls", "--format", "{{.Name}} {{.IPv4}} {{.IPv6}}"]);
    let lines: Vec<&str> = ls.lines().collect();
    for want in ["bridge true false", "host false false", "none false false"] {
        assert!(lines.contains(&want), "{want:?} in:\n{ls}");
    }
    let ls = w.berth_ok(&["network", "ls", "--format", "{{.Name}} {{.IPv4}} {{.IPv6}}"]);
    assert!(ls.lines().any(|l| l == "bridge true false"), "{ls}");

    w.docker_ok(&["network", "create", "--subnet", "10.76.0.0/24", "test 01"]);
    let f = w.docker_ok(&["network", "inspect", "-f", "{{.Name}}", "test 01"]);
    assert_eq!(f.trim(), "test 01");

    for (args, why) in [
        (&["--scope", "swarm", "s1"][..], "swarm"),
        (&["--scope", "global", "g1"][..], "cluster store"),
        (
            &["--config-from", "nosuch", "cf"][..],
            "configuration network \"nosuch\" does not exist",
        ),
        (&["--config-only", "co"][..], "config-only"),
        (&["--ipam-driver", "dhcp", "ip"][..], "IPAM driver \"dhcp\""),
    ] {
        let mut a = vec!["network", "create"];
        a.extend_from_slice(args);
        let o = w.docker(&a);
        fails_with(&o, why, &format!("docker {args:?}"));
        fails_with(&w.berth(&a), why, &format!("berth {args:?}"));
    }

    w.docker_ok(&[
        "network",
        "create",
        "--ipam-opt",
        "foo=bar",
        "--label",
        "keep=1",
        "opts",
    ]);
    let f = w.docker_ok(&["network", "inspect", "-f", "{{json .IPAM.Options}}", "opts"]);
    assert_eq!(f.trim(), r#"{"foo":"bar"}"#);
    w.docker_ok(&["network", "create", "spare"]);
    w.run_d("u", &["--network", "test 01"], &["sleep", "120"]);

    let ls = w.docker_ok(&[
        "network",
        "ls",
        "--filter",
        "dangling=false",
        "--format",
        "{{.Name}}",
    ]);
    let mut got: Vec<&str> = ls.lines().collect();
    got.sort();
    assert_eq!(got, ["bridge", "host", "none", "test 01"], "dangling=false");
    let ls = w.docker_ok(&[
        "network",
        "ls",
        "--filter",
        "dangling=true",
        "--format",
        "{{.Name}}",
    ]);
    let mut got: Vec<&str> = ls.lines().collect();
    got.sort();
    assert_eq!(got, ["opts", "spare"], "dangling=true");

    let out = w.docker_ok(&["network", "prune", "-f", "--filter", "until=1h"]);
    assert!(
        !out.contains("spare"),
        "until=1h pruned a new network: {out}"
    );
    let out = w.docker_ok(&["network", "prune", "-f", "--filter", "label!=keep"]);
    assert!(
        out.contains("spare") && !out.contains("opts"),
        "label!=keep: {out}"
    );
    let out = w.berth_ok(&["network", "prune", "-f", "--filter", "until=0s"]);
    assert!(out.contains("opts"), "berth prune until=0s: {out}");

    let o = w.docker(&["swarm", "leave"]);
    fails_with(&o, "This node is not part of a swarm", "docker swarm leave");
    let o = w.docker(&["service", "ls"]);
    fails_with(&o, "This node is not a swarm manager", "docker service ls");
}
