//! Golden tests of berth's nftables scripts, and a check of every script with the real `nft -c`
//! (check mode: parsed and validated by the kernel, nothing applied) when nft and root are
//! available.
//!
//! `BERTH_BLESS=1 cargo test -p berth-plan --test firewall` rewrites the golden files.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_plan::firewall::{
    base_script, delta, desired_elements, diff_script, guard_elements, guard_part, port_elements,
    Elements, FirewallConfig,
};
use berth_plan::model::{EndpointSpec, NetworkSpec};
use berth_plan::network::{
    plan_network, predefined_networks, IpamRequest, NetworkRequest, OPT_ALLOW_DIRECT,
    OPT_ALLOW_SPOOFING, OPT_ENABLE_ICC, OPT_ENABLE_MASQUERADE,
};
use berth_plan::ports::{self, Allocation, HostUse, Published, Target};

fn id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn network(
    name: &str,
    idc: char,
    subnets: &[&str],
    tweak: impl FnOnce(&mut NetworkRequest),
    existing: &[NetworkSpec],
) -> NetworkSpec {
    let mut r = NetworkRequest {
        name: name.into(),
        ipam: subnets
            .iter()
            .map(|s| IpamRequest {
                subnet: Some(s.to_string()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    tweak(&mut r);
    plan_network(&r, id(idc), "2026-01-01T00:00:00Z".into(), existing, &[]).unwrap()
}

/// The matrix: the default bridge, a plain network, internal, icc off, masquerade off, dual stack.
fn matrix() -> Vec<NetworkSpec> {
    let mut nets = predefined_networks(
        [id('1'), id('2'), id('3')],
        "2026-01-01T00:00:00Z".into(),
        "172.17.0.0/16".parse().unwrap(),
    );
    let add = |nets: &mut Vec<NetworkSpec>, n: NetworkSpec| nets.push(n);
    let n = network("web", 'a', &["10.1.0.0/24"], |_| {}, &nets);
    add(&mut nets, n);
    let n = network("intra", 'b', &["10.2.0.0/24"], |r| r.internal = true, &nets);
    add(&mut nets, n);
    let n = network(
        "quiet",
        'c',
        &["10.3.0.0/24"],
        |r| {
            r.options.insert(OPT_ENABLE_ICC.into(), "false".into());
        },
        &nets,
    );
    add(&mut nets, n);
    let n = network(
        "nomasq",
        'd',
        &["10.4.0.0/24"],
        |r| {
            r.options
                .insert(OPT_ENABLE_MASQUERADE.into(), "false".into());
        },
        &nets,
    );
    add(&mut nets, n);
    let n = network(
        "dual",
        'e',
        &["10.5.0.0/24", "fd00:5::/64"],
        |r| r.enable_ipv6 = true,
        &nets,
    );
    add(&mut nets, n);
    let n = network(
        "direct",
        'g',
        &["10.6.0.0/24"],
        |r| {
            r.options.insert(OPT_ALLOW_DIRECT.into(), "true".into());
        },
        &nets,
    );
    add(&mut nets, n);
    nets
}

/// Publishes `specs` (docker `-p` forms) for a container with these addresses.
fn publish(v4: Option<&str>, v6: Option<&str>, specs: &[&str]) -> Vec<Published> {
    let target = Target {
        network: "n".into(),
        v4: v4.map(|a| a.parse().unwrap()),
        v6: v6.map(|a| a.parse().unwrap()),
        default_host_v4: None,
    };
    let parsed: Vec<_> = specs
        .iter()
        .flat_map(|s| ports::parse_publish(s).unwrap())
        .collect();
    let alloc = Allocation {
        taken: &|_| None,
        ephemeral: (49153, 65535),
        start: 49153,
    };
    ports::allocate(&parsed, &target, &alloc, &mut |_, _, _| HostUse::Free).unwrap()
}

/// The port option matrix: tcp/udp/sctp; a v4-only, a v6-only and a dual-stack container; host
/// address wildcard, specific (v4, v6), loopback (v4, v6); a range; a random port.
fn port_matrix() -> Elements {
    let mut e = Elements::default();
    e.extend(&port_elements(
        "web",
        &publish(
            Some("10.1.0.2"),
            None,
            &[
                "8080:80",
                "127.0.0.1:8081:80/udp",
                "198.18.0.1:53:53/udp",
                "80",
            ],
        ),
    ));
    e.extend(&port_elements(
        "dualc",
        &publish(
            Some("10.5.0.2"),
            Some("fd00:5::2"),
            &[
                "443:443",
                "[::1]:9000:9000",
                "[2001:db8::1]:5353:53/udp",
                "0.0.0.0:36412:36412/sctp",
            ],
        ),
    ));
    e.extend(&port_elements(
        "v6only",
        &publish(None, Some("fd00:5::3"), &["[::]:7000-7002:7000-7002"]),
    ));
    // A run long enough to be one `relay6_tcp_runs` element (`::1 . 7100-7139`) and one
    // `publish4_any_runs` element (`tcp . 7100-7139 : 10.5.0.4`).
    e.extend(&port_elements(
        "run",
        &publish(Some("10.5.0.4"), None, &["7100-7139:7100-7139"]),
    ));
    // Runs of every other kind (one host address, IPv6, UDP), a run one port short and a range
    // with its container ports elsewhere (both one element per port).
    e.extend(&port_elements(
        "runs",
        &publish(
            Some("10.5.0.5"),
            Some("fd00:5::5"),
            &[
                "127.0.0.1:7200-7239:7200-7239/udp",
                "[2001:db8::1]:7300-7339:7300-7339",
                "7400-7439:7400-7439/udp",
                "7500-7530:7500-7530",
                "7600-7639:8600-8639",
            ],
        ),
    ));
    e
}

/// An endpoint on `net` with these addresses (its MAC derived from the first, like berth's).
fn endpoint(net: &NetworkSpec, veth: &str, mac: &str, addrs: &[&str]) -> EndpointSpec {
    EndpointSpec {
        id: id('e'),
        network_id: net.id.clone(),
        host_ifname: veth.into(),
        ifname: "eth0".into(),
        mac: mac.into(),
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        static_ipv4: None,
        static_ipv6: None,
        aliases: vec![],
        gw_priority: 0,
        driver_opts: Default::default(),
        links: Vec::new(),
        link_local_ips: Vec::new(),
        reused_mac: false,
    }
}

/// Anti-spoofing elements: a container on "web", one on "dual" (IPv6 adds its link-local
/// address and the advertisable targets), one on the default bridge with an upper-case MAC,
/// and one on a network with `allow_spoofing=true` (nothing).
fn guard_matrix() -> Elements {
    let nets = matrix();
    let by_name = |n: &str| nets.iter().find(|x| x.name == n).unwrap().clone();
    let open = network(
        "open",
        'h',
        &["10.7.0.0/24"],
        |r| {
            r.options.insert(OPT_ALLOW_SPOOFING.into(), "true".into());
        },
        &nets,
    );
    let mut e = Elements::default();
    let web = by_name("web");
    e.extend(&guard_elements(
        "w",
        &web,
        &endpoint(&web, "vethaaaa", "02:42:0a:01:00:02", &["10.1.0.2/24"]),
    ));
    let dual = by_name("dual");
    e.extend(&guard_elements(
        "d",
        &dual,
        &endpoint(
            &dual,
            "vethdddd",
            "02:42:0a:05:00:02",
            &["10.5.0.2/24", "fd00:5::2/64"],
        ),
    ));
    let def = by_name("bridge");
    e.extend(&guard_elements(
        "b",
        &def,
        &endpoint(&def, "vethbbbb", "02:42:AC:11:00:02", &["172.17.0.2/16"]),
    ));
    let only_open = guard_elements(
        "o",
        &open,
        &endpoint(&open, "vethoooo", "02:42:0a:07:00:02", &["10.7.0.2/24"]),
    );
    assert!(only_open.is_empty(), "{only_open:?}");
    e
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("BERTH_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with BERTH_BLESS=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs (run with BERTH_BLESS=1 to accept the new output)",
        path.display()
    );
}

/// The scripts under test, each as it would be loaded (a diff needs the table and, for
/// deletes, the elements to exist: those are prepended in the same transaction).
fn scripts() -> Vec<(&'static str, String, String)> {
    // With berthd's `[::1]` relay listener on port 40123 (its redirect rule), and without one.
    let base = base_script(&FirewallConfig {
        relay6_port: 40123,
        ..FirewallConfig::default()
    });
    let base_off = base_script(&FirewallConfig {
        forwarding_was_off: true,
        ipv6_forwarding_was_off: true,
        relay6_port: 0,
    });
    let all = desired_elements(&matrix());
    let elements = diff_script(&Elements::default(), &all);
    let ports_all = port_matrix();
    let port_script = diff_script(&Elements::default(), &ports_all);
    // Ports: "web" and "run" stop (their ports go, run's interval elements too), "late" starts
    // with 8080 again (a new value for the same key of publish4_any), a 3-port UDP range and
    // run's ports as a run of its own; the others stay untouched.
    let mut ports_after = ports_all.clone();
    ports_after.remove_all(&port_elements(
        "web",
        &publish(
            Some("10.1.0.2"),
            None,
            &[
                "8080:80",
                "127.0.0.1:8081:80/udp",
                "198.18.0.1:53:53/udp",
                "80",
            ],
        ),
    ));
    ports_after.remove_all(&port_elements(
        "run",
        &publish(Some("10.5.0.4"), None, &["7100-7139:7100-7139"]),
    ));
    ports_after.extend(&port_elements(
        "late",
        &publish(
            Some("10.1.0.9"),
            None,
            &[
                "8080:8000",
                "6000-6002:6000-6002/udp",
                "7100-7139:7100-7139",
            ],
        ),
    ));
    let port_diff = diff_script(&ports_all, &ports_after);
    // Anti-spoofing: the container on "web" exits (its port's elements go, found by port
    // name), another starts on "dual"; the others stay untouched.
    let guard_all = guard_matrix();
    let gone: std::collections::BTreeSet<String> = ["vethaaaa".to_string()].into();
    let dual = matrix().into_iter().find(|n| n.name == "dual").unwrap();
    let add = guard_elements(
        "late",
        &dual,
        &endpoint(&dual, "vetheeee", "02:42:0a:05:00:09", &["10.5.0.9/24"]),
    );
    let (current, desired) = delta(&guard_all, &guard_part(&guard_all, Some(&gone)), &add);
    let guard_script = diff_script(&Elements::default(), &guard_all);
    let guard_diff = diff_script(&current, &desired);

    // Diff: "web" and "intra" go, "late" arrives; the rest stays untouched.
    let before = matrix();
    let mut after: Vec<NetworkSpec> = before
        .iter()
        .filter(|n| n.name != "web" && n.name != "intra")
        .cloned()
        .collect();
    let late = network("late", 'f', &["10.1.0.0/24"], |_| {}, &after);
    after.push(late);
    let observed = desired_elements(&before);
    let diff = diff_script(&observed, &desired_elements(&after));
    let setup = format!("{base}{}", diff_script(&Elements::default(), &observed));
    vec![
        ("base.nft", base.clone(), base.clone()),
        ("base_forwarding_was_off.nft", base_off.clone(), base_off),
        (
            "elements_matrix.nft",
            elements.clone(),
            format!("{base}{elements}"),
        ),
        (
            "diff_add_remove.nft",
            diff.clone(),
            format!("{setup}{diff}"),
        ),
        (
            "ports_matrix.nft",
            port_script.clone(),
            format!("{base}{port_script}"),
        ),
        (
            "ports_diff.nft",
            port_diff.clone(),
            format!("{base}{port_script}{port_diff}"),
        ),
        (
            "guard_matrix.nft",
            guard_script.clone(),
            format!("{base}{guard_script}"),
        ),
        (
            "guard_diff.nft",
            guard_diff.clone(),
            format!("{base}{guard_script}{guard_diff}"),
        ),
    ]
}

#[test]
fn golden_scripts() {
    for (name, text, _) in scripts() {
        golden(name, &text);
    }
}

#[test]
fn desired_matches_observed_after_round_trip() {
    // What nft would print back for the desired elements parses to the same elements, so a
    // converged host diffs to nothing.
    let want = desired_elements(&matrix());
    let mut sets = Vec::new();
    for (set, elems) in &want.0 {
        let elem: Vec<serde_json::Value> = elems
            .iter()
            .map(|(text, comment)| {
                let val = if let Some((a, b)) = text.split_once(" . ") {
                    serde_json::json!({"concat": [a.trim_matches('"'), b.trim_matches('"')]})
                } else if let Some((addr, len)) = text.split_once('/') {
                    serde_json::json!({"prefix": {"addr": addr, "len": len.parse::<u8>().unwrap()}})
                } else {
                    serde_json::json!(text.trim_matches('"'))
                };
                serde_json::json!({"elem": {"val": val, "comment": comment}})
            })
            .collect();
        let ty = match set.as_str() {
            "masq4" => serde_json::json!("ipv4_addr"),
            "masq6" => serde_json::json!("ipv6_addr"),
            "same_bridge" => serde_json::json!(["ifname", "ifname"]),
            "hairpin4" => serde_json::json!(["ipv4_addr", "ifname"]),
            "hairpin6" => serde_json::json!(["ipv6_addr", "ifname"]),
            _ => serde_json::json!("ifname"),
        };
        sets.push(serde_json::json!({"set": {"family": "inet", "table": "berth", "name": set, "type": ty, "elem": elem}}));
    }
    let observed = berth_plan::firewall::parse_observed(&serde_json::json!({ "nftables": sets }));
    assert_eq!(observed, want);
    assert_eq!(diff_script(&observed, &want), "");
}

#[test]
fn every_element_has_a_comment_naming_its_network() {
    let want = desired_elements(&matrix());
    assert!(want.len() > 10);
    for elems in want.0.values() {
        for c in elems.values() {
            assert!(c.starts_with("network "), "{c}");
        }
    }
    // Host and none contribute nothing; the default bridge does.
    let bridges = &want.0["bridges"];
    assert!(bridges.contains_key("\"berth0\""));
    assert_eq!(bridges.len(), 7);
    assert_eq!(want.0["direct"].len(), 1);
    // Every port element names its container and port.
    for elems in port_matrix().0.values() {
        for c in elems.values() {
            assert!(c.starts_with("container "), "{c}");
            assert!(
                c.ends_with("/tcp") || c.ends_with("/udp") || c.ends_with("/sctp"),
                "{c}"
            );
        }
    }
}

/// Applies the base script and every element (networks and the port matrix) with the real nft
/// inside a throwaway network namespace (`unshare --net`: it vanishes with the process; the
/// machine's own rule set is never touched), reads the table back as JSON and checks it parses
/// to exactly what was applied, so a converged host diffs to nothing. Skipped without root, nft
/// or unshare.
#[test]
fn real_nft_round_trip() {
    let Some(nft) = nft_binary() else {
        eprintln!("SKIPPED real_nft_round_trip: nft is not installed");
        return;
    };
    if !is_root() || Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("SKIPPED real_nft_round_trip: needs root and unshare");
        return;
    }
    let mut want = desired_elements(&matrix());
    want.extend(&port_matrix());
    want.extend(&guard_matrix());
    let script = format!(
        "{}{}",
        base_script(&FirewallConfig::default()),
        diff_script(&Elements::default(), &want)
    );
    let dir = std::env::temp_dir().join(format!("berth-plan-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("all.nft");
    std::fs::write(&path, &script).unwrap();
    let out = Command::new("unshare")
        .args(["--net", "--", "sh", "-c"])
        .arg(format!(
            "{n} -f {p} && {n} -j list ruleset",
            n = nft.display(),
            p = path.display()
        ))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "nft failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let observed = berth_plan::firewall::parse_observed(&json);
    assert_eq!(
        diff_script(&observed, &want),
        "",
        "observed differs from applied"
    );
}

fn nft_binary() -> Option<PathBuf> {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs `nft -c -f` on every script: check mode validates against the kernel but applies
/// nothing. Skipped, with the reason printed, without nft or root.
#[test]
fn scripts_pass_nft_check() {
    let Some(nft) = nft_binary() else {
        eprintln!("SKIPPED scripts_pass_nft_check: nft is not installed");
        return;
    };
    if !is_root() {
        eprintln!("SKIPPED scripts_pass_nft_check: nft -c needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("berth-plan-nft-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, _, full) in scripts() {
        let path = dir.join(name);
        std::fs::write(&path, &full).unwrap();
        let out = Command::new(&nft)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft -c -f {name} failed:\n{}\n--- script:\n{full}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
