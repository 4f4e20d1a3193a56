//! End-to-end: berth and the rest of the host's firewall — the `user` chain is the
//! administrator's (evaluated first, never flushed, kept across restarts), and a foreign
//! forward chain with policy drop is reported in the log and in `berth info`.

mod common;

use common::{show, World};

/// A TCP server in the outside netns that answers with the peer address (port 7000).
fn outside_server(w: &World) {
    let helper = w.helper("peer_server.py");
    let out_ip = w.out_ip();
    w.spawn_in(&w.out_ns.clone(), &["python3", &helper, &out_ip, "7000"]);
    w.wait_port(&w.out_ns, &out_ip, 7000);
}

/// Proves: a rule the administrator puts in `chain user` applies to containers' traffic before
/// berth's own rules, and survives a berthd restart (graceful and kill -9) untouched; removing
/// it restores the traffic.
#[test]
fn user_chain_is_evaluated_first_and_never_flushed() {
    require_root!();
    let w = World::new();
    outside_server(&w);
    w.berth_ok(&["network", "create", "--subnet", "10.61.0.0/24", "uc"]);
    w.run_d("c", &["--network", "uc"], &["sleep", "300"]);
    w.wait_running("c");
    w.assert_reaches("c", &w.out_ip(), 7000);

    let out_ip = w.out_ip();
    let rule = format!("ip daddr {out_ip} tcp dport 7000 drop");
    let mut args = vec!["nft", "add", "rule", "inet", "berth", "user"];
    args.extend(rule.split(' '));
    w.ns_exec_ok(&w.host_ns, &args);
    w.assert_blocked("c", &out_ip, 7000);

    w.restart_daemon(false);
    assert!(
        w.nft_table()
            .contains(&format!("ip daddr {out_ip} tcp dport 7000 drop")),
        "the user rule must survive a graceful restart:\n{}",
        w.nft_table()
    );
    w.restart_daemon(true);
    let table = w.nft_table();
    assert_eq!(
        table
            .matches(&format!("ip daddr {out_ip} tcp dport 7000 drop"))
            .count(),
        1,
        "the user rule must be kept exactly once after kill -9 + restart:\n{table}"
    );
    w.assert_blocked("c", &out_ip, 7000);

    w.ns_exec_ok(
        &w.host_ns,
        &["nft", "flush", "chain", "inet", "berth", "user"],
    );
    w.assert_reaches("c", &out_ip, 7000);
}

/// Proves: when another table drops forwarded packets by policy (an iptables-style
/// `FORWARD DROP`), berthd says so in its log and in `berth info`, naming the chain.
#[test]
fn foreign_forward_drop_policy_is_reported() {
    require_root!();
    let w = World::new();
    let info = w.berth_ok(&["info"]);
    assert!(
        !info.contains("drops forwarded packets"),
        "no warning expected yet: {info}"
    );
    w.ns_exec_ok(&w.host_ns, &["nft", "add", "table", "ip", "hostfw"]);
    w.ns_exec_ok(
        &w.host_ns,
        &[
            "nft",
            "add chain ip hostfw FORWARD { type filter hook forward priority 0; policy drop; }",
        ],
    );
    w.restart_daemon(false);
    let o = w.berth(&["info"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && all.contains("FORWARD") && all.contains("hostfw"),
        "berth info must name the dropping chain: {}",
        show(&o)
    );
    assert!(
        w.log_text().contains("drops forwarded packets"),
        "berthd's log must carry the warning:\n{}",
        w.log_text()
    );
}
