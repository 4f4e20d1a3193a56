//! Golden tests of berth's nftables scripts, and a check of every script with the real `nft -c`
//! (check mode: parsed and validated by the kernel, nothing applied) when nft and root are
//! available.
//!
//! `BERTH_BLESS=1 cargo test -p berth-plan --test firewall` rewrites the golden files.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_plan::firewall::{base_script, desired_elements, diff_script, Elements, FirewallConfig};
use berth_plan::model::NetworkSpec;
use berth_plan::network::{
    plan_network, predefined_networks, IpamRequest, NetworkRequest, OPT_ENABLE_ICC,
    OPT_ENABLE_MASQUERADE,
};

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
    nets
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
    let base = base_script(&FirewallConfig::default());
    let base_off = base_script(&FirewallConfig {
        forwarding_was_off: true,
        ipv6_forwarding_was_off: true,
    });
    let all = desired_elements(&matrix());
    let elements = diff_script(&Elements::default(), &all);

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
    assert_eq!(bridges.len(), 6);
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
