//! berth-kernel against the real kernel, inside throwaway namespaces (needs root).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use berth_kernel::link::Kernel;
use berth_kernel::netns::{create_netns, delete_netns, run_in_netns};
use berth_kernel::{nft, sysctl};
use berth_plan::model::{BridgePlan, RoutePlan};
use common::{endpoint, listen, tcp_exchange, TestNs};

fn bridge(name: &str, addrs: &[&str]) -> BridgePlan {
    BridgePlan {
        name: name.to_string(),
        mtu: 1450,
        addrs: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
    }
}

/// Non-link-local addresses of one link.
async fn addrs_of(k: &Kernel, link: &str) -> BTreeSet<IpAddr> {
    k.link_addrs()
        .await
        .expect("link_addrs")
        .into_iter()
        .filter(|(name, ip)| {
            name == link && !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] == 0xfe80)
        })
        .map(|(_, ip)| ip)
        .collect()
}

fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|i| i.parse().expect("ip")).collect()
}

async fn link_names(k: &Kernel) -> Vec<String> {
    k.list_links()
        .await
        .expect("list_links")
        .into_iter()
        .map(|l| l.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_lifecycle() {
    require_root!();
    let dir = std::env::temp_dir().join(format!("bk-{}-lifecycle", std::process::id()));
    let path = dir.join("ns");
    create_netns(&path).expect("create");
    // Guard for the namespace made by hand above.
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = delete_netns(&self.0);
            let _ = std::fs::remove_dir(self.0.parent().expect("parent"));
        }
    }
    let _cleanup = Cleanup(path.clone());
    assert!(
        create_netns(&path).is_err(),
        "a second create must not shadow the first"
    );

    let k = Kernel::new_in(&path).await.expect("kernel");
    assert_eq!(k.netns(), Some(path.as_path()));
    let links = k.list_links().await.expect("links");
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].name, "lo");
    assert!(links[0].up, "lo must be up");

    // A thread in the namespace sees only its lo.
    let names = run_in_netns(&path, || {
        std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev")
    })
    .expect("run");
    assert!(!names.contains("eth0"), "{names}");

    drop(k);
    delete_netns(&path).expect("delete");
    assert!(!path.exists());
    delete_netns(&path).expect("delete of a missing namespace is Ok");
}

/// A bridge's forward delay (`IFLA_BR_FORWARD_DELAY`, centiseconds) and MTU as the kernel
/// reports them.
fn delay_and_mtu(ns: &TestNs, bridge: &str) -> (Option<u32>, Option<u32>) {
    let links = run_in_netns(&ns.path, berth_kernel::observe::links_now)
        .expect("enter")
        .expect("links");
    let l = links.get(bridge);
    (l.and_then(|l| l.forward_delay), l.map(|l| l.mtu))
}

/// A bridge's multicast snooping (`IFLA_BR_MCAST_SNOOPING`) as the kernel reports it.
fn snooping(ns: &TestNs, bridge: &str) -> Option<bool> {
    let links = run_in_netns(&ns.path, berth_kernel::observe::links_now)
        .expect("enter")
        .expect("links");
    links.get(bridge).and_then(|l| l.mcast_snooping)
}

/// `ip link set BRIDGE type bridge forward_delay CS mcast_snooping 1` inside the test
/// namespace (someone else's change, or a bridge made by an older berth: the kernel's
/// defaults).
fn set_forward_delay(ns: &TestNs, bridge: &str, cs: u32) {
    let st = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path_str()))
        .args([
            "ip",
            "link",
            "set",
            bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "1",
            "forward_delay",
        ])
        .arg(cs.to_string())
        .status()
        .expect("nsenter ip");
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berths_bridges_arm_no_forward_delay_timer_nor_snooping_adopted_ones_keep_theirs() {
    require_root!();
    let h = TestNs::new("fd");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    let plan = bridge("bkbrfd", &["10.76.0.1/24"]);
    k.configure_bridge(&plan, Some("berth:net:fd"), false)
        .await
        .expect("create");
    // Created with 0 and snooping off in the same RTM_NEWLINK.
    assert_eq!(delay_and_mtu(&h, "bkbrfd").0, Some(0));
    assert_eq!(snooping(&h, "bkbrfd"), Some(false));
    // Set back to the kernel's defaults by someone: berth's bridge is put right...
    set_forward_delay(&h, "bkbrfd", 1500);
    assert_eq!(delay_and_mtu(&h, "bkbrfd").0, Some(1500));
    assert_eq!(snooping(&h, "bkbrfd"), Some(true));
    k.configure_bridge(&plan, Some("berth:net:fd"), false)
        .await
        .expect("reconfigure");
    assert_eq!(delay_and_mtu(&h, "bkbrfd").0, Some(0));
    assert_eq!(snooping(&h, "bkbrfd"), Some(false));
    // ... in the same request as an MTU to change.
    set_forward_delay(&h, "bkbrfd", 1500);
    let smaller = BridgePlan {
        mtu: 1400,
        ..plan.clone()
    };
    k.configure_bridge(&smaller, Some("berth:net:fd"), false)
        .await
        .expect("reconfigure with an mtu");
    assert_eq!(delay_and_mtu(&h, "bkbrfd"), (Some(0), Some(1400)));
    assert_eq!(snooping(&h, "bkbrfd"), Some(false));
    // ... but an adopted bridge (no mark written, its other addresses kept) is the admin's.
    set_forward_delay(&h, "bkbrfd", 1500);
    k.configure_bridge(&plan, None, true)
        .await
        .expect("adopted");
    assert_eq!(delay_and_mtu(&h, "bkbrfd").0, Some(1500));
    assert_eq!(snooping(&h, "bkbrfd"), Some(true));
    k.delete_link("bkbrfd").await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_bridge_is_idempotent_and_exact() {
    require_root!();
    let h = TestNs::new("h");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    let plan = bridge("bkbr0", &["10.77.0.1/24", "fd77::1/64"]);
    k.ensure_bridge(&plan).await.expect("first ensure");
    k.ensure_bridge(&plan).await.expect("second ensure");
    assert_eq!(addrs_of(&k, "bkbr0").await, set(&["10.77.0.1", "fd77::1"]));
    let links = k.list_links().await.expect("links");
    let br = links
        .iter()
        .find(|l| l.name == "bkbr0")
        .expect("bridge exists");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up);
    assert_eq!(links.iter().filter(|l| l.name == "bkbr0").count(), 1);

    // Exactly the planned addresses: others are removed.
    let plan = bridge("bkbr0", &["10.78.0.1/24"]);
    k.ensure_bridge(&plan).await.expect("re-address");
    assert_eq!(addrs_of(&k, "bkbr0").await, set(&["10.78.0.1"]));
    let routes = k.routes().await.expect("routes");
    assert!(
        routes.contains(&"10.78.0.0/24".parse().expect("net")),
        "{routes:?}"
    );
    assert!(
        !routes.contains(&"10.77.0.0/24".parse().expect("net")),
        "{routes:?}"
    );

    // A link of another kind with the bridge's name is an error, not a silent reuse.
    let err = k
        .ensure_bridge(&bridge("lo", &[]))
        .await
        .expect_err("lo is no bridge");
    assert!(
        err.to_string().contains("not") || err.to_string().contains("kind"),
        "{err}"
    );

    k.delete_link("bkbr0").await.expect("delete");
    k.delete_link("bkbr0")
        .await
        .expect("delete of a missing link is Ok");
    assert!(!link_names(&k).await.contains(&"bkbr0".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_exchange_packets_over_the_bridge() {
    require_root!();
    let h = TestNs::new("h");
    let c1 = TestNs::new("c1");
    let c2 = TestNs::new("c2");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    k.ensure_bridge(&bridge("bkbr0", &["10.79.0.1/24", "fd79::1/64"]))
        .await
        .expect("bridge");
    let e1 = endpoint(
        "bkv1",
        "bkbr0",
        &c1,
        &["10.79.0.2/24", "fd79::2/64"],
        &["10.79.0.1", "fd79::1"],
        false,
    );
    let e2 = endpoint(
        "bkv2",
        "bkbr0",
        &c2,
        &["10.79.0.3/24", "fd79::3/64"],
        &["10.79.0.1", "fd79::1"],
        false,
    );
    k.setup_endpoint(&e1).await.expect("setup e1");
    k.setup_endpoint(&e2).await.expect("setup e2");

    // Host side: enslaved to the bridge, up; no eth0 ever in the host namespace.
    let links = k.list_links().await.expect("links");
    let br = links.iter().find(|l| l.name == "bkbr0").expect("bridge");
    for name in ["bkv1", "bkv2"] {
        let l = links.iter().find(|l| l.name == name).expect("veth");
        assert_eq!(l.master, Some(br.index));
        assert_eq!(l.kind.as_deref(), Some("veth"));
        assert!(l.up);
    }
    assert!(!links.iter().any(|l| l.name == "eth0"));

    // Container side: eth0 up with its addresses and default routes, lo up.
    let kc = Kernel::new_in(&c1.path).await.expect("kernel c1");
    let clinks = kc.list_links().await.expect("links c1");
    assert!(clinks
        .iter()
        .any(|l| l.name == "eth0" && l.up && l.kind.as_deref() == Some("veth")));
    assert!(clinks.iter().any(|l| l.name == "lo" && l.up));
    assert_eq!(addrs_of(&kc, "eth0").await, set(&["10.79.0.2", "fd79::2"]));
    let routes = kc.routes().await.expect("routes c1");
    for r in ["0.0.0.0/0", "::/0", "10.79.0.0/24", "fd79::/64"] {
        assert!(
            routes.contains(&r.parse().expect("net")),
            "{r} missing from {routes:?}"
        );
    }

    // Real traffic: container to container (v4 and v6), container to gateway.
    let v4: SocketAddr = "10.79.0.3:7001".parse().expect("sa");
    let l4 = listen(&c2.path, v4);
    assert!(tcp_exchange(&c1.path, v4, &l4), "c1 -> c2 over IPv4");
    let v6: SocketAddr = "[fd79::3]:7002".parse().expect("sa");
    let l6 = listen(&c2.path, v6);
    assert!(tcp_exchange(&c1.path, v6, &l6), "c1 -> c2 over IPv6");
    let gw: SocketAddr = "10.79.0.1:7003".parse().expect("sa");
    let lg = listen(&h.path, gw);
    assert!(tcp_exchange(&c2.path, gw, &lg), "c2 -> gateway");

    // replace_routes: defaults removed, then re-added.
    k.replace_routes(&c1.path, &[])
        .await
        .expect("remove defaults");
    let routes = kc.routes().await.expect("routes");
    assert!(
        !routes.contains(&"0.0.0.0/0".parse().expect("net")),
        "{routes:?}"
    );
    assert!(
        !routes.contains(&"::/0".parse().expect("net")),
        "{routes:?}"
    );
    assert!(routes.contains(&"10.79.0.0/24".parse().expect("net")));
    let defaults = [RoutePlan {
        dst: "0.0.0.0/0".parse().expect("net"),
        via: "10.79.0.1".parse().expect("ip"),
    }];
    k.replace_routes(&c1.path, &defaults)
        .await
        .expect("add default");
    k.replace_routes(&c1.path, &defaults)
        .await
        .expect("replace again");
    let routes = kc.routes().await.expect("routes");
    assert!(routes.contains(&"0.0.0.0/0".parse().expect("net")));

    // Teardown removes both ends; a second teardown is Ok.
    k.teardown_endpoint("bkv1").await.expect("teardown");
    k.teardown_endpoint("bkv1").await.expect("teardown again");
    assert!(!link_names(&k).await.contains(&"bkv1".to_string()));
    assert!(!link_names(&kc).await.contains(&"eth0".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_ports_reach_the_gateway_but_not_each_other() {
    require_root!();
    let h = TestNs::new("h");
    let c1 = TestNs::new("c1");
    let c2 = TestNs::new("c2");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    k.ensure_bridge(&bridge("bkbr1", &["10.80.0.1/24"]))
        .await
        .expect("bridge");
    let e1 = endpoint(
        "bkv1",
        "bkbr1",
        &c1,
        &["10.80.0.2/24"],
        &["10.80.0.1"],
        true,
    );
    let e2 = endpoint(
        "bkv2",
        "bkbr1",
        &c2,
        &["10.80.0.3/24"],
        &["10.80.0.1"],
        true,
    );
    k.setup_endpoint(&e1).await.expect("setup e1");
    k.setup_endpoint(&e2).await.expect("setup e2");

    let gw1: SocketAddr = "10.80.0.1:7101".parse().expect("sa");
    let lg1 = listen(&h.path, gw1);
    assert!(tcp_exchange(&c1.path, gw1, &lg1), "c1 -> gateway");
    let gw2: SocketAddr = "10.80.0.1:7102".parse().expect("sa");
    let lg2 = listen(&h.path, gw2);
    assert!(tcp_exchange(&c2.path, gw2, &lg2), "c2 -> gateway");
    let peer: SocketAddr = "10.80.0.3:7103".parse().expect("sa");
    let lp = listen(&c2.path, peer);
    assert!(
        !tcp_exchange(&c1.path, peer, &lp),
        "isolated ports must not reach each other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_setup_leaves_nothing_behind() {
    require_root!();
    let h = TestNs::new("h");
    let c = TestNs::new("c");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    let kc = Kernel::new_in(&c.path).await.expect("kernel c");

    // No bridge: fails before any veth exists.
    let e = endpoint(
        "bkv1",
        "bkmissing",
        &c,
        &["10.81.0.2/24"],
        &["10.81.0.1"],
        false,
    );
    let err = k.setup_endpoint(&e).await.expect_err("bridge is missing");
    assert!(err.to_string().contains("bkmissing"), "{err}");
    assert!(err.is_not_found(), "{err}");
    assert!(!link_names(&k).await.contains(&"bkv1".to_string()));
    assert!(!link_names(&kc).await.contains(&"eth0".to_string()));

    // Fails after the veth exists (gateway not on any connected subnet): rolled back.
    k.ensure_bridge(&bridge("bkbr2", &["10.81.0.1/24"]))
        .await
        .expect("bridge");
    let e = endpoint(
        "bkv1",
        "bkbr2",
        &c,
        &["10.81.0.2/24"],
        &["10.99.0.1"],
        false,
    );
    let err = k.setup_endpoint(&e).await.expect_err("unreachable gateway");
    let msg = err.to_string();
    assert!(
        msg.contains("adding route") && msg.contains("bkv1"),
        "{msg}"
    );
    assert!(
        !link_names(&k).await.contains(&"bkv1".to_string()),
        "veth must be rolled back"
    );
    assert!(!link_names(&kc).await.contains(&"eth0".to_string()));

    // Bad MAC: refused before anything is created.
    let mut e = endpoint("bkv1", "bkbr2", &c, &["10.81.0.2/24"], &[], false);
    e.mac = "nonsense".into();
    assert!(k.setup_endpoint(&e).await.is_err());

    // After all that, a good plan still works (names are free again).
    let e = endpoint(
        "bkv1",
        "bkbr2",
        &c,
        &["10.81.0.2/24"],
        &["10.81.0.1"],
        false,
    );
    k.setup_endpoint(&e).await.expect("setup after rollback");
    // Same host name again: EEXIST, and the existing endpoint is untouched.
    let err = k.setup_endpoint(&e).await.expect_err("duplicate");
    assert_eq!(err.raw_os_error(), Some(libc_eexist()), "{err}");
    assert!(link_names(&k).await.contains(&"bkv1".to_string()));
}

/// A gated endpoint (its firewall guard applied at the same time, `berth_kernel::gate`) is
/// made and configured while the gate is closed, but its container side stays down until the
/// gate opens; a gate opened with an error rolls the veth back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_endpoint_goes_up_only_when_its_gate_opens() {
    use berth_kernel::gate::LinkGate;
    require_root!();
    let h = TestNs::new("h");
    let c = TestNs::new("c");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    let kc = Kernel::new_in(&c.path).await.expect("kernel c");
    k.ensure_bridge(&bridge("bkbr3", &["10.82.0.1/24"]))
        .await
        .expect("bridge");
    let e = endpoint(
        "bkv3",
        "bkbr3",
        &c,
        &["10.82.0.2/24"],
        &["10.82.0.1"],
        false,
    );
    let eth0 = |links: Vec<berth_kernel::link::LinkInfo>| {
        links.into_iter().find(|l| l.name == "eth0").map(|l| l.up)
    };

    let gate = LinkGate::new();
    let setup = {
        let (k, e, gate) = (k.clone(), e.clone(), gate.clone());
        tokio::spawn(async move { k.setup_endpoint_gated(&e, None, Some(gate)).await })
    };
    // The container side exists (with its address) but stays down while the gate is closed.
    let mut seen_down = false;
    for _ in 0..200 {
        if eth0(kc.list_links().await.expect("links")) == Some(false) {
            seen_down = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(seen_down, "eth0 must exist, down, while the gate is closed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(eth0(kc.list_links().await.expect("links")), Some(false));
    assert!(!setup.is_finished());
    gate.open(Ok(()));
    setup.await.expect("task").expect("gated setup");
    assert_eq!(eth0(kc.list_links().await.expect("links")), Some(true));
    k.delete_link("bkv3").await.expect("delete");

    // A gate opened with an error: the veth is rolled back, the error says why.
    let gate = LinkGate::new();
    gate.open(Err("nft: injected".into()));
    let err = k
        .setup_endpoint_gated(&e, None, Some(gate))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("nft: injected"), "{err}");
    assert!(!link_names(&k).await.contains(&"bkv3".to_string()));
    assert_eq!(eth0(kc.list_links().await.expect("links")), None);
}

/// `network connect` right after `disconnect` of the same network (issue 10): the retired
/// interface keeps its name (`eth0` here) until its veth's deletion, which runs in the
/// background; the new endpoint of that name waits for it instead of failing with `EEXIST`.
/// A name that was not retired still fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_waits_for_the_retired_interface_of_its_name() {
    require_root!();
    let h = TestNs::new("h");
    let c = TestNs::new("c");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    let kc = Kernel::new_in(&c.path).await.expect("kernel c");
    k.ensure_bridge(&bridge("bkbr9", &["10.86.0.1/24"]))
        .await
        .expect("bridge");
    let old = endpoint(
        "bkv9a",
        "bkbr9",
        &c,
        &["10.86.0.2/24"],
        &["10.86.0.1"],
        false,
    );
    let new = endpoint(
        "bkv9b",
        "bkbr9",
        &c,
        &["10.86.0.3/24"],
        &["10.86.0.1"],
        false,
    );
    k.setup_endpoint(&old).await.expect("old endpoint");

    // Not retired: the name is someone's, the creation fails at once with EEXIST.
    let began = std::time::Instant::now();
    let err = k.setup_endpoint(&new).await.expect_err("eth0 is taken");
    assert!(err.to_string().contains("File exists"), "{err}");
    assert!(began.elapsed() < std::time::Duration::from_millis(500));

    // Retired (a disconnect), its veth deleted 100 ms later (the background deletion): the
    // new endpoint waits for the name and gets it.
    k.retire_container_side(&c.path, "eth0", None)
        .await
        .expect("retire");
    let deletion = {
        let k = k.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            k.delete_link("bkv9a").await
        })
    };
    k.setup_endpoint(&new)
        .await
        .expect("the new endpoint, once the retired eth0 is gone");
    deletion.await.expect("task").expect("deletion");
    let links = kc.list_links().await.expect("links");
    let eth0 = links.iter().find(|l| l.name == "eth0").expect("eth0");
    assert!(eth0.up);
    assert_eq!(addrs_of(&kc, "eth0").await, set(&["10.86.0.3"]));
    assert!(link_names(&k).await.contains(&"bkv9b".to_string()));
    assert!(!link_names(&k).await.contains(&"bkv9a".to_string()));
}

/// A restart reads many namespaces on a few long-lived threads that enter one after the
/// other: every namespace comes back with its own links and addresses (never a previous
/// one's), subscribed; one that does not exist is reported as not reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_namespaces_are_read_by_a_few_threads_in_turn() {
    require_root!();
    let nss: Vec<TestNs> = (0..7).map(|i| TestNs::new(&format!("m{i}"))).collect();
    for (i, ns) in nss.iter().enumerate() {
        let ok = std::process::Command::new("ip")
            .args([
                "-n",
                &ns.name,
                "link",
                "add",
                &format!("bkd{i}"),
                "type",
                "veth",
            ])
            .args(["peer", "name", &format!("bkp{i}")])
            .status()
            .expect("ip")
            .success();
        assert!(ok);
        let ok = std::process::Command::new("ip")
            .args(["-n", &ns.name, "addr", "add", &format!("10.83.{i}.2/24")])
            .args(["dev", &format!("bkd{i}")])
            .status()
            .expect("ip")
            .success();
        assert!(ok);
    }
    let mut paths: Vec<String> = nss.iter().map(|n| n.path_str()).collect();
    paths.insert(3, "/run/netns/bk-no-such-namespace".into());
    let reads = berth_kernel::observe::netns_watched_many(paths.clone(), 2, true, None).await;
    assert_eq!(
        reads.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        paths,
        "in the order asked"
    );
    for (path, read) in reads {
        let (ns, monitor) = read.expect("read");
        if path.ends_with("no-such-namespace") {
            assert!(!ns.reachable && monitor.is_none());
            continue;
        }
        let i = nss
            .iter()
            .position(|n| n.path_str() == path)
            .expect("one of ours");
        assert!(ns.reachable, "{path}");
        assert!(monitor.is_some(), "{path} subscribed");
        let mine = format!("bkd{i}");
        let names: Vec<&String> = ns.links.keys().filter(|n| n.starts_with("bk")).collect();
        assert_eq!(names.len(), 2, "{path}: {names:?}");
        let link = ns.links.get(&mine).expect("its own veth");
        let addrs: Vec<String> = link.addrs.iter().map(|a| a.to_string()).collect();
        assert!(
            addrs.contains(&format!("10.83.{i}.2/24")),
            "{path}: {addrs:?}"
        );
    }
}

fn libc_eexist() -> i32 {
    nix::errno::Errno::EEXIST as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysctl_inside_a_test_namespace() {
    require_root!();
    let h = TestNs::new("h");
    let root_before = sysctl::read(None, "net.ipv4.ip_forward").expect("read root (read-only)");
    assert_eq!(
        sysctl::read(Some(&h.path), "net.ipv4.ip_forward").expect("read"),
        "0"
    );
    sysctl::write(Some(&h.path), "net.ipv4.ip_forward", "1").expect("write");
    assert_eq!(
        sysctl::read(Some(&h.path), "net.ipv4.ip_forward").expect("read"),
        "1"
    );
    sysctl::write(Some(&h.path), "net/ipv4/conf/all/rp_filter", "2").expect("slash key");
    assert_eq!(
        sysctl::read(Some(&h.path), "net.ipv4.conf.all.rp_filter").expect("read"),
        "2"
    );
    let err = sysctl::read(Some(&h.path), "net.ipv4.no_such_key").expect_err("missing key");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("net.ipv4.no_such_key"), "{err}");
    assert_eq!(
        sysctl::read(None, "net.ipv4.ip_forward").expect("read root"),
        root_before,
        "the root namespace must be untouched"
    );
}

/// A spare thread made its procfs instance before it knew its namespace, and a thread that
/// entered one knows which without asking `/proc` (`sysctl::prepare_thread`,
/// `sysctl::entered`): each write still lands in the namespace its thread entered, one after
/// another on different spares. Each key names a link that exists only in its own test
/// namespace, so a write sent to any other namespace (the machine's included) would find no
/// file and fail the test, never change anything there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_sysctls_on_spare_threads_land_in_the_entered_namespace() {
    require_root!();
    let nss: Vec<TestNs> = (0..3).map(|i| TestNs::new(&format!("sp{i}"))).collect();
    let link = format!("bks{}", std::process::id() % 100_000);
    for ns in &nss {
        // A veth pair, both ends here (this kernel may have no `dummy`).
        ip_in(ns, &format!("link add {link} type veth peer name {link}p"));
    }
    let key = format!("ipv6/conf/{link}/disable_ipv6");
    for (i, ns) in nss.iter().enumerate() {
        let k = key.clone();
        // Alternate values, so a write that reached a namespace visited before would show.
        let v = if i % 2 == 0 { "1" } else { "0" };
        let wrote = berth_kernel::netns::run_in_netns_async(&ns.path, move || {
            sysctl::write_net(&k, v).map_err(|e| e.to_string())
        })
        .await
        .expect("spare thread");
        assert_eq!(wrote, Ok(()), "{}", ns.name);
    }
    for (i, ns) in nss.iter().enumerate() {
        let want = if i % 2 == 0 { "1" } else { "0" };
        assert_eq!(
            sysctl::read(Some(&ns.path), &format!("net/{key}")).expect("read back"),
            want,
            "{}",
            ns.name
        );
    }
}

/// A namespace berth makes gets its id in the maker's namespace at once, from the top of
/// berth's range down (`monitor::give_first_found_nsid`), so the kernel's ascending walk of
/// the ids meets the newest first. Left to the kernel, the ids would be the lowest free ones
/// (0, 1, … in this fresh namespace), which fails the test.
#[test]
fn new_namespaces_get_ids_counting_down_in_the_makers_namespace() {
    require_root!();
    use std::os::fd::AsRawFd;
    let h = TestNs::new("nsid");
    let ids = run_in_netns(&h.path, || {
        let a = berth_kernel::netns::create_netns_fd().expect("first namespace");
        let b = berth_kernel::netns::create_netns_fd().expect("second namespace");
        let id = |fd: &std::os::fd::OwnedFd| {
            let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            berth_kernel::monitor::nsid_of_path(std::path::Path::new(&path)).expect("its id")
        };
        // The namespaces are kept (returned) until the ids have been listed below.
        (id(&a), id(&b), a, b)
    })
    .expect("thread in the test namespace");
    let (first, second, _a, _b) = ids;
    assert!(
        first >= 1 << 29,
        "first id {first} is the kernel's, not berth's"
    );
    assert!(
        second < first,
        "ids {first} then {second}: not counting down"
    );
    // What `ip netns list-id` shows in the test namespace: both, nothing else.
    let listed = std::process::Command::new("ip")
        .args(["-n", &h.name, "netns", "list-id"])
        .output()
        .expect("ip netns list-id");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&format!("nsid {first} ")), "{text}");
    assert!(text.contains(&format!("nsid {second} ")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_apply_and_list_round_trip() {
    require_root!();
    if nft::check_available().is_err() {
        eprintln!("skipped: nft not installed");
        return;
    }
    let h = TestNs::new("h");
    assert_eq!(
        nft::list_table_json(Some(&h.path), "inet", "berth").expect("list"),
        None
    );
    nft::apply(
        Some(&h.path),
        "table inet berth {\n  chain forward {\n    type filter hook forward priority filter; policy accept;\n    ip saddr 10.82.0.0/24 counter accept\n  }\n}\n",
    )
    .expect("apply");
    let table = nft::list_table_json(Some(&h.path), "inet", "berth")
        .expect("list")
        .expect("table exists");
    let text = table.to_string();
    assert!(
        text.contains("\"forward\"") && text.contains("10.82.0.0"),
        "{text}"
    );

    // A failing script applies nothing: the first statement (a new table) is not kept.
    let err = nft::apply(
        Some(&h.path),
        "table inet partial { }\nadd rule inet berth nosuchchain accept\n",
    )
    .expect_err("bad script");
    assert!(
        err.to_string().contains("nosuchchain") || err.to_string().contains("No such file"),
        "{err}"
    );
    assert_eq!(
        nft::list_table_json(Some(&h.path), "inet", "partial").expect("list"),
        None
    );

    let ruleset = nft::list_ruleset_json(Some(&h.path)).expect("ruleset");
    assert!(ruleset.to_string().contains("\"berth\""));
}

/// Element changes sent over netlink by berth itself read back from `nft -j` exactly as
/// planned (keys, map values and comments of every per-container set and map), a removal
/// leaves the rest, and a failing batch applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftnl_elements_round_trip_through_nft() {
    use berth_kernel::netns::run_in_netns;
    use berth_kernel::nftnl::NftSocket;
    use berth_plan::firewall::{self as fw, Elements, FirewallConfig};
    require_root!();
    if nft::check_available().is_err() {
        eprintln!("skipped: nft not installed");
        return;
    }
    let h = TestNs::new("nl");
    nft::apply(Some(&h.path), &fw::base_script(&FirewallConfig::default())).expect("base");
    let read = |path: &std::path::Path| {
        let mut e = Elements::default();
        for (fam, t) in [("inet", "berth"), ("bridge", "berth")] {
            let j = nft::list_table_json(Some(path), fam, t)
                .expect("list")
                .expect("table");
            e.extend(&fw::parse_observed(&j));
        }
        e.0.retain(|_, v| !v.is_empty());
        e
    };
    let want = web_elements("fd00::2");
    let changes = fw::diff_changes(&Elements::default(), &want);
    let path = h.path.clone();
    let sent = run_in_netns(&h.path, move || {
        let mut s = NftSocket::open()?;
        s.apply(&changes)
    })
    .expect("netns")
    .expect("apply");
    assert!(sent, "every per-container set is encoded over netlink");
    assert_eq!(read(&path), want);

    // Removing the ports keeps the guard elements; a map key gets a new value in place.
    let mut after = want.only(&fw::guard_names());
    after.0.retain(|_, v| !v.is_empty());
    let moved: Vec<berth_plan::ports::Published> = serde_json::from_value(serde_json::json!([
        {"proto": "tcp", "host_ip": "0.0.0.0", "host_port": 8080, "container_ip": "10.1.0.9", "container_port": 81}
    ]))
    .expect("moved");
    after.extend(&fw::port_elements("other", &moved));
    let changes = fw::diff_changes(&want, &after);
    run_in_netns(&h.path, move || NftSocket::open()?.apply(&changes))
        .expect("netns")
        .expect("apply");
    assert_eq!(read(&path), after);

    // A batch whose second message fails (a set that does not exist) applies nothing.
    let mut bad = fw::diff_changes(&after, &Elements::default());
    let mut missing = bad[0].clone();
    missing.set = "no_such_set";
    bad.push(missing);
    let err = run_in_netns(&h.path, move || NftSocket::open()?.apply(&bad))
        .expect("netns")
        .expect_err("a missing set fails the batch");
    assert!(err.to_string().contains("no_such_set"), "{err}");
    assert_eq!(
        read(&path),
        after,
        "nothing of the failed batch was applied"
    );
}

/// berth's tables read over netlink (`nftnl::read_tables`) are exactly what `nft -j` shows of
/// them: the rules of berth's chains with their comments (not the administrator's chain
/// `user`), and the elements of every set and map, interval sets (prefixes, an address, a
/// range, concatenations) and per-container ones (map values, `typeof` keys) included; a
/// namespace without the tables reads as empty both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_read_over_netlink_as_nft_reads_them() {
    use berth_kernel::nftnl::{self, NftSocket};
    use berth_kernel::observe;
    use berth_plan::firewall::{self as fw, Elements, FirewallConfig};
    require_root!();
    if nft::check_available().is_err() {
        eprintln!("skipped: nft not installed");
        return;
    }
    let h = TestNs::new("rd");
    let both = |path: &std::path::Path| {
        let nl = run_in_netns(path, nftnl::read_tables)
            .expect("netns")
            .expect("netlink read")
            .expect("every element decoded");
        let by_nft = run_in_netns(path, observe::firewall_with_nft)
            .expect("netns")
            .expect("nft read");
        (nl, by_nft)
    };
    let (nl, by_nft) = both(&h.path);
    assert_eq!(nl, by_nft);
    assert!(nl.rules.is_empty() && nl.elements.is_empty(), "{nl:?}");

    nft::apply(Some(&h.path), &fw::base_script(&FirewallConfig::default())).expect("base");
    nft::apply(
        Some(&h.path),
        "add element inet berth masq4 { 10.80.0.0/22 comment \"network s0\", 172.17.0.0/16 comment \"network bridge\", 10.9.9.9 comment \"one\", 10.1.0.1-10.1.0.9 comment \"range\", 224.0.0.0/3 comment \"top\" }
add element inet berth masq6 { fd00:1::/64 comment \"network v6\", 2001:db8::1 comment \"one\" }
add element inet berth hairpin4 { 10.80.0.0/22 . \"berth-4ccc7b14a\" comment \"network s0\", 172.17.0.0/16 . \"berth0\" comment \"network bridge\" }
add element inet berth hairpin6 { fd00:1::/64 . \"berth-v6\" comment \"network v6\" }
add element inet berth bridges { \"berth0\" comment \"network bridge\", \"berth-v6\" }
add element inet berth same_bridge { \"berth0\" . \"berth0\" comment \"network bridge\" }
add rule inet berth user counter comment \"the administrator's\"
",
    )
    .expect("elements");
    let want = web_elements("fe80::42:aff:fe01:2");
    let changes = fw::diff_changes(&Elements::default(), &want);
    run_in_netns(&h.path, move || NftSocket::open()?.apply(&changes))
        .expect("netns")
        .expect("apply");

    let (nl, by_nft) = both(&h.path);
    assert_eq!(nl, by_nft);
    assert!(!nl.rules.iter().any(|(chain, _)| chain == "user"));
    assert!(nl
        .rules
        .iter()
        .any(|(chain, _)| chain.starts_with("bridge ")));
    let masq4 = nl.elements.0.get(fw::SET_MASQ4).expect("masq4");
    for e in [
        "10.80.0.0/22",
        "10.9.9.9",
        "10.1.0.1-10.1.0.9",
        "224.0.0.0/3",
    ] {
        assert!(masq4.contains_key(e), "{e} in {masq4:?}");
    }
    for (set, elems) in &want.0 {
        assert_eq!(nl.elements.0.get(set), Some(elems), "{set}");
    }
}

/// The trace tables a crash left behind are found by a netlink listing of the inet tables (not
/// other families' tables of the same name, not berth's own) and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_trace_tables_are_listed_over_netlink_and_removed() {
    use berth_kernel::{nftnl, trace};
    require_root!();
    if nft::check_available().is_err() {
        eprintln!("skipped: nft not installed");
        return;
    }
    let h = TestNs::new("tt");
    nft::apply(
        Some(&h.path),
        "add table inet berth\nadd table inet berth-trace-7\nadd table ip berth-trace-8\nadd table inet mine\n",
    )
    .expect("tables");
    let names = run_in_netns(&h.path, nftnl::inet_tables)
        .expect("netns")
        .expect("listing");
    let names: BTreeSet<String> = names.into_iter().collect();
    let want: BTreeSet<String> = ["berth", "berth-trace-7", "mine"]
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(names, want);
    let removed = run_in_netns(&h.path, trace::remove_orphans)
        .expect("netns")
        .expect("remove");
    assert_eq!(removed, vec!["berth-trace-7".to_string()]);
    let left = run_in_netns(&h.path, nftnl::inet_tables)
        .expect("netns")
        .expect("listing");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(nft::list_table_json(Some(&h.path), "ip", "berth-trace-8")
        .expect("list")
        .is_some());
}

/// With a registration, the namespace readers hand over each namespace's id (as the caller's
/// namespace numbers it, the id its notifications carry) once per namespace, with its place in
/// the paths, and read it as without.
#[test]
fn namespace_readers_register_each_namespace_id_before_reading_it() {
    use berth_kernel::monitor;
    use berth_kernel::observe::{self, Registration};
    use std::sync::{Arc, Mutex};
    require_root!();
    // berthd's namespace stands in a test namespace: the ids given are its own.
    let host = TestNs::new("reg");
    let nss: Vec<TestNs> = (0..4).map(|i| TestNs::new(&format!("rg{i}"))).collect();
    let mut sleepers: Vec<std::process::Child> = nss
        .iter()
        .map(|ns| {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns.name, "sleep", "60"])
                .spawn()
                .expect("sleep")
        })
        .collect();
    // `ip netns exec` has entered the namespace once it runs `sleep` (same pid).
    let pids: Vec<i32> = sleepers.iter().map(|c| c.id() as i32).collect();
    for p in &pids {
        let ns = format!("/proc/{p}/ns/net");
        for _ in 0..200 {
            let own = std::fs::read_link(&ns).ok();
            let ours = std::fs::read_link("/proc/self/ns/net").ok();
            if own.is_some() && own != ours {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let paths: Vec<String> = pids.iter().map(|p| format!("/proc/{p}/ns/net")).collect();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (paths2, pids2, got2) = (paths.clone(), pids.clone(), got.clone());
    let (reads, ids) = run_in_netns(&host.path, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let reg = Registration {
            pids: pids2.clone(),
            register: Box::new(move |i, nsid| {
                got2.lock().expect("lock").push((i, nsid.expect("an id")));
            }),
        };
        let reads = rt.block_on(observe::netns_watched_many(paths2, 2, false, Some(reg)));
        // The ids as the caller's namespace numbers them now.
        let ids: Vec<i32> = pids2
            .iter()
            .map(|p| monitor::nsid_of(*p).expect("nsid"))
            .collect();
        (reads, ids)
    })
    .expect("netns");
    for c in &mut sleepers {
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut got = got.lock().expect("lock").clone();
    got.sort();
    let want: Vec<(usize, i32)> = ids.iter().copied().enumerate().collect();
    assert_eq!(got, want, "each namespace registered once, with its id");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );
    assert_eq!(
        reads.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        paths
    );
    for (path, read) in reads {
        let (ns, _) = read.expect("read");
        assert!(ns.reachable && ns.links.contains_key("lo"), "{path}");
    }
}

/// A bridge takes 1,023 ports; berth's 1,024th endpoint is refused with a message naming the
/// limit (`KernelError::Full`, which the daemon answers with 409), and leaves no veth behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bridge_is_named_not_an_errno() {
    require_root!();
    let h = TestNs::new("full");
    let c = TestNs::new("fullc");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    k.ensure_bridge(&bridge("bkfull0", &["10.81.0.1/16"]))
        .await
        .expect("bridge");
    // 1,022 ports made by `ip -batch` (fast: ~1.5 s), then berth's own for the last one.
    let script: String = (1..=1022)
        .map(|i| format!("link add bkf{i} master bkfull0 type veth peer name bkp{i}\n"))
        .collect();
    let mut ip = std::process::Command::new("ip")
        .args(["-n", &h.name, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip");
    {
        use std::io::Write;
        ip.stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("script");
    }
    assert!(ip.wait().expect("ip").success());
    let mut last = endpoint("bkflast", "bkfull0", &c, &["10.81.4.1/16"], &[], false);
    last.ifname = "eth0".into();
    k.setup_endpoint(&last).await.expect("the 1,023rd port");
    let mut over = endpoint("bkfover", "bkfull0", &c, &["10.81.4.2/16"], &[], false);
    over.ifname = "eth1".into();
    let err = k.setup_endpoint(&over).await.expect_err("the 1,024th port");
    assert!(err.is_full(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("bridge bkfull0 already holds 1023 ports") && msg.contains("BR_MAX_PORTS"),
        "{msg}"
    );
    assert!(
        !link_names(&k).await.iter().any(|n| n == "bkfover"),
        "the refused veth does not exist"
    );
}

/// The overlay's underlay re-read finds its interface by name (one `RTM_GETLINK`) and by the
/// address it holds (an address dump, then the link by index) with its current MTU, and
/// nothing for a name or address that is not there. Checked against two links in a scratch
/// namespace, one of them given a new MTU between reads.
#[test]
fn underlay_link_is_read_by_name_and_by_address() {
    use berth_kernel::observe::underlay_link_now;
    require_root!();
    let h = TestNs::new("ul");
    let ip = |args: &str| {
        let st = std::process::Command::new("ip")
            .args(["-n", &h.name])
            .args(args.split_whitespace())
            .status()
            .expect("ip");
        assert!(st.success(), "ip {args}");
    };
    // veth pairs: the test kernel has no dummy driver.
    ip("link add ul0 mtu 1400 type veth peer name ul1");
    ip("link add other0 mtu 1500 type veth peer name other1");
    ip("addr add 10.66.0.1/24 dev ul0");
    ip("addr add 10.67.0.1/24 dev other0");
    let addr: IpAddr = "10.66.0.1".parse().expect("ip");
    let read = |name: Option<&'static str>, a: IpAddr| {
        run_in_netns(&h.path, move || underlay_link_now(name, a))
            .expect("netns")
            .expect("read")
    };
    let by_name = read(Some("ul0"), addr);
    assert_eq!(by_name.keys().collect::<Vec<_>>(), ["ul0"]);
    assert_eq!(by_name["ul0"].mtu, 1400);
    let by_addr = read(None, addr);
    assert_eq!(by_addr.keys().collect::<Vec<_>>(), ["ul0"]);
    assert!(by_addr["ul0"].addrs.iter().any(|a| a.addr() == addr));
    ip("link set ul0 mtu 1300");
    assert_eq!(read(None, addr)["ul0"].mtu, 1300);
    assert_eq!(read(Some("ul0"), addr)["ul0"].mtu, 1300);
    assert!(read(Some("missing0"), addr).is_empty());
    assert!(read(None, "10.99.0.1".parse().expect("ip")).is_empty());
}

/// Proves: one `sock_diag` dump finds every port of a range that a socket of the namespace is
/// bound to — listening, bound without listening (the case only Linux 6.6+ dumps), IPv4 or
/// IPv6, TCP or UDP — and no other; and it agrees with the bind probe port by port, so the
/// publish path may skip the probes of the ports it does not list.
#[test]
fn bound_ports_lists_what_a_bind_probe_would_find() {
    require_root!();
    use berth_kernel::hostport::{bound_ports, probe};
    use berth_plan::ports::Proto;
    use socket2::{Domain, Protocol, Socket, Type};
    let ns = TestNs::new("bound");
    let up = std::process::Command::new("ip")
        .args(["-n", &ns.name, "link", "set", "lo", "up"])
        .status()
        .expect("ip");
    assert!(up.success());
    let (first, last) = (41000u16, 41099u16);
    let found = run_in_netns(&ns.path, move || {
        let bind = |domain: Domain, ty: Type, p: Protocol, addr: &str| {
            let s = Socket::new(domain, ty, Some(p)).expect("socket");
            if domain == Domain::IPV6 {
                s.set_only_v6(true).expect("v6only");
            }
            let a: SocketAddr = addr.parse().expect("addr");
            s.bind(&a.into()).expect("bind");
            s
        };
        let listener = bind(Domain::IPV4, Type::STREAM, Protocol::TCP, "127.0.0.1:41010");
        listener.listen(8).expect("listen");
        // Bound, never listening: a bind probe of 41020 fails on it all the same.
        let _bound_only = bind(Domain::IPV6, Type::STREAM, Protocol::TCP, "[::1]:41020");
        let _udp = bind(Domain::IPV4, Type::DGRAM, Protocol::UDP, "0.0.0.0:41030");
        // Outside the range: never listed.
        let _outside = bind(Domain::IPV4, Type::STREAM, Protocol::TCP, "127.0.0.1:41100");
        let tcp = bound_ports(Proto::Tcp, first, last);
        let udp = bound_ports(Proto::Udp, first, last);
        let mut disagree = Vec::new();
        for (proto, set) in [(Proto::Tcp, &tcp), (Proto::Udp, &udp)] {
            let Some(set) = set else { continue };
            for port in first..=last {
                let held = probe(proto, "0.0.0.0".parse().expect("ip"), port).is_some()
                    || probe(proto, "::".parse().expect("ip"), port).is_some();
                if held && !set.contains(&port) {
                    disagree.push((proto, port));
                }
            }
        }
        (tcp, udp, disagree)
    })
    .expect("enter netns");
    let (tcp, udp, disagree) = found;
    // Bound-only TCP sockets are in dumps from Linux 6.6 (`TCP_BOUND_INACTIVE`); before, the
    // dump cannot answer for TCP and says so.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if (major, minor) >= (6, 6) {
        assert_eq!(tcp, Some(BTreeSet::from([41010, 41020])), "TCP");
    } else {
        assert_eq!(tcp, None, "TCP on a kernel before 6.6");
    }
    assert_eq!(udp, Some(BTreeSet::from([41030])), "UDP");
    assert!(disagree.is_empty(), "held but not listed: {disagree:?}");
    assert_eq!(bound_ports(Proto::Sctp, first, last), None);
}

/// Proves: a VXLAN port created by the host namespace's kernel into an overlay namespace
/// (`create_vxlan_into`) lives in that namespace — a marked, up port of the bridge there, absent
/// from the host's links — while its UDP socket (port 4789) is bound in the host namespace, on
/// the underlay; and two such overlay namespaces on two "hosts" joined by an underlay veth
/// exchange TCP through it, with the remote entries programmed by a kernel bound to the overlay
/// namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_created_in_the_host_lives_in_the_overlay_namespace() {
    use berth_plan::overlay::VxlanPlan;
    require_root!();
    let hosts = [TestNs::new("vh"), TestNs::new("vh")];
    let ovls = [TestNs::new("vo"), TestNs::new("vo")];
    let ip = ip_in;
    ip(
        &hosts[0],
        &format!(
            "link add ul0 type veth peer name ul0 netns {}",
            hosts[1].name
        ),
    );
    let macs = ["02:42:0a:50:00:01", "02:42:0a:50:00:02"];
    for i in 0..2 {
        ip(&hosts[i], &format!("addr add 10.79.0.{}/24 dev ul0", i + 1));
        ip(&hosts[i], "link set ul0 up");
        let kh = Kernel::new_in(&hosts[i].path).await.expect("host kernel");
        let ko = Kernel::new_in(&ovls[i].path).await.expect("overlay kernel");
        let mut br = bridge("bkov0", &[&format!("10.80.0.{}/24", i + 1)]);
        br.mtu = 1450;
        ko.ensure_bridge(&br).await.expect("bridge");
        ip(&ovls[i], &format!("link set bkov0 address {}", macs[i]));
        let plan = VxlanPlan {
            name: "bkvx0".into(),
            vni: 4242,
            port: 4789,
            local: format!("10.79.0.{}", i + 1).parse().expect("ip"),
            mtu: 1450,
            bridge: "bkov0".into(),
            alias: "berth:vx:test".into(),
        };
        kh.create_vxlan_into(&plan, &ovls[i].path, &ko)
            .await
            .expect("create vxlan into the overlay namespace");
        let there = ko.list_links().await.expect("overlay links");
        let vx = there
            .iter()
            .find(|l| l.name == "bkvx0")
            .expect("the vxlan port is in the overlay namespace");
        let br_index = there
            .iter()
            .find(|l| l.name == "bkov0")
            .expect("bridge")
            .index;
        assert_eq!(vx.kind.as_deref(), Some("vxlan"));
        assert_eq!(vx.master, Some(br_index), "a port of the bridge there");
        assert!(vx.up);
        assert!(
            !link_names(&kh).await.contains(&"bkvx0".to_string()),
            "nothing of it is left in the host namespace"
        );
        let alias = std::process::Command::new("ip")
            .args(["-n", &ovls[i].name, "-d", "link", "show", "bkvx0"])
            .output()
            .expect("ip");
        assert!(
            String::from_utf8_lossy(&alias.stdout).contains("alias berth:vx:test"),
            "marked: {}",
            String::from_utf8_lossy(&alias.stdout)
        );
        // The UDP socket is the host's (4789 = 0x12B5 in /proc/net/udp), not the overlay's.
        let udp = |ns: &TestNs| {
            run_in_netns(&ns.path, || {
                std::fs::read_to_string("/proc/thread-self/net/udp").expect("udp")
            })
            .expect("netns")
        };
        assert!(udp(&hosts[i]).contains(":12B5 "), "{}", udp(&hosts[i]));
        assert!(!udp(&ovls[i]).contains(":12B5 "), "{}", udp(&ovls[i]));
        // The other host's bridge, as berth programs a remote endpoint.
        let other = 1 - i;
        ko.set_vxlan_entries(
            "bkvx0",
            &[(
                macs[other].to_string(),
                format!("10.79.0.{}", other + 1).parse().expect("ip"),
            )],
            &[],
            &[(
                format!("10.80.0.{}", other + 1).parse().expect("ip"),
                macs[other].to_string(),
            )],
            &[],
        )
        .await
        .expect("remote entries");
    }
    let addr: SocketAddr = "10.80.0.1:7001".parse().expect("addr");
    let listener = listen(&ovls[0].path, addr);
    assert!(
        tcp_exchange(&ovls[1].path, addr, &listener),
        "TCP across the hosts through the moved VXLAN ports"
    );
}

/// Proves: a VXLAN port's remote entries go to the port that exists now, not to the index the
/// kernel cached for its name: the port is deleted and made again behind the cache's back (a
/// new index, no observation in between, as when someone deletes it and berth's repair makes
/// it again before the next event), and the next entries land on the new port (the stale
/// index's `ENODEV` drops it and the name is looked up again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_entries_follow_a_port_made_again() {
    use berth_plan::overlay::VxlanPlan;
    require_root!();
    let ns = TestNs::new("vi");
    let k = Kernel::new_in(&ns.path).await.expect("kernel");
    let ip = |args: &str| {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns.name])
            .args(args.split_whitespace())
            .output()
            .expect("ip");
        assert!(out.status.success(), "ip -n {} {args}", ns.name);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ip("link add ul0 type veth peer name ul1");
    ip("addr add 10.77.0.1/24 dev ul0");
    ip("link set ul0 up");
    let mut br = bridge("bkix0", &["10.78.0.1/24"]);
    br.mtu = 1450;
    k.ensure_bridge(&br).await.expect("bridge");
    let plan = VxlanPlan {
        name: "bkvi0".into(),
        vni: 4343,
        port: 4789,
        local: "10.77.0.1".parse().expect("ip"),
        mtu: 1450,
        bridge: "bkix0".into(),
        alias: "berth:vx:test".into(),
    };
    let entry = |n: u8| {
        (
            format!("02:42:0a:4e:00:{n:02x}"),
            format!("10.78.0.{n}")
                .parse::<std::net::IpAddr>()
                .expect("ip"),
        )
    };
    let set = |n: u8| {
        let (mac, addr) = entry(n);
        let k = &k;
        async move {
            k.set_vxlan_entries(
                "bkvi0",
                &[(mac.clone(), "10.77.0.2".parse().expect("ip"))],
                &[],
                &[(addr, mac)],
                &[],
            )
            .await
        }
    };
    k.create_vxlan(&plan).await.expect("vxlan");
    set(2).await.expect("entries on the first port");
    let first = ip("-o link show bkvi0");
    ip("link del bkvi0");
    k.create_vxlan(&plan).await.expect("vxlan again");
    let second = ip("-o link show bkvi0");
    assert_ne!(
        first.split(':').next(),
        second.split(':').next(),
        "made again under a new index"
    );
    set(3)
        .await
        .expect("entries on the port made again, through a stale cached index");
    let neigh = ip("neigh show dev bkvi0");
    assert!(
        neigh.contains("10.78.0.3") && neigh.contains("PERMANENT"),
        "the entry is on the new port: {neigh}"
    );
}

/// One socket in "berthd's" namespace (`home`) hears a change that someone else makes inside
/// a container's namespace, tagged with that namespace's id in `home` ([`nsid_of`]); a
/// namespace without an id there is not heard.
#[test]
fn one_subscription_hears_every_namespace_that_has_an_id() {
    use berth_kernel::monitor::{nsid_of, NamespacesMonitor, NsNotice};
    use std::time::Duration;
    require_root!();
    let home = TestNs::new("home");
    let c = TestNs::new("c");
    let other = TestNs::new("o");
    // A process of the container namespace (what berthd has: its init).
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &c.name, "sleep", "30"])
        .spawn()
        .expect("sleep in c");
    let pid = i32::try_from(sleeper.id()).expect("pid");
    // `ip netns exec` enters the namespace, then execs sleep (same pid).
    for _ in 0..200 {
        let ours = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let theirs = std::fs::metadata(&c.path).ok();
        let entered = match (ours, theirs) {
            (Some(l), Some(m)) => {
                use std::os::unix::fs::MetadataExt;
                l.to_string_lossy() == format!("net:[{}]", m.ino())
            }
            _ => false,
        };
        if entered {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let home_path = home.path.clone();
    let (c_name, o_name) = (c.name.clone(), other.name.clone());
    let heard = std::thread::spawn(move || {
        let ns = std::fs::File::open(&home_path).expect("open home");
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns home");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut m = NamespacesMonitor::open().expect("subscribe");
            let id = nsid_of(pid).expect("namespace id");
            assert_eq!(nsid_of(pid).expect("again"), id, "the same id each time");
            // A namespace without an id in home first: not heard.
            let ip = |ns: &str, addr: &str| {
                let ok = std::process::Command::new("ip")
                    .args(["-n", ns, "addr", "add", addr, "dev", "lo"])
                    .status()
                    .expect("ip")
                    .success();
                assert!(ok, "ip addr add in {ns}");
            };
            ip(&o_name, "10.84.0.1/32");
            ip(&c_name, "10.84.0.2/32");
            let notices = tokio::time::timeout(Duration::from_secs(5), m.next())
                .await
                .expect("a notice within 5 s")
                .expect("read");
            (id, notices)
        })
    })
    .join();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let (id, notices) = heard.expect("monitor thread");
    assert!(!notices.is_empty());
    assert!(
        notices.iter().all(|n| *n == NsNotice::Nsid(id)),
        "only c's namespace (id {id}) is heard: {notices:?}"
    );
}

/// A container's per-container elements: four published ports (every protocol and family, a
/// quoted name) and its guard elements, with `nd` as its neighbour-discovery address.
fn web_elements(nd: &str) -> berth_plan::firewall::Elements {
    use berth_plan::firewall as fw;
    let published: Vec<berth_plan::ports::Published> = serde_json::from_value(serde_json::json!([
        {"proto": "tcp", "host_ip": "0.0.0.0", "host_port": 8080, "container_ip": "10.1.0.2", "container_port": 80},
        {"proto": "udp", "host_ip": "127.0.0.1", "host_port": 53, "container_ip": "10.1.0.2", "container_port": 5353},
        {"proto": "tcp", "host_ip": "::", "host_port": 8080, "container_ip": "fd00::2", "container_port": 80},
        {"proto": "sctp", "host_ip": "fd00::1", "host_port": 9, "container_ip": "fd00::2", "container_port": 9}
    ]))
    .expect("published");
    // A range (one `relay6_tcp_runs` element `::1 . 30000-30039` and one `publish4_any_runs`
    // element `tcp . 30000-30039 : 10.1.0.2`, KEY and KEY_END over netlink) and a port alone
    // right after its gap; runs on one IPv4 address and on every IPv6 address (map values of
    // both families).
    let mut published = published;
    let port = |proto, host: &str, port, container: &str| berth_plan::ports::Published {
        proto,
        host_ip: host.parse().expect("host address"),
        host_port: port,
        container_ip: container.parse().expect("container address"),
        container_port: port,
    };
    use berth_plan::ports::Proto;
    for p in (30000..30040).chain([30041]) {
        published.push(port(Proto::Tcp, "0.0.0.0", p, "10.1.0.2"));
    }
    for p in 31000..31100 {
        published.push(port(Proto::Tcp, "127.0.0.1", p, "10.1.0.2"));
        published.push(port(Proto::Udp, "::", p, "fd00::2"));
    }
    let mut want = fw::port_elements("web \"quoted\"", &published);
    let runs = want.0.get(fw::SET_RELAY6_TCP_RUNS).expect("relay runs");
    assert!(runs.contains_key("::1 . 30000-30039"), "{runs:?}");
    for (map, run) in [
        (fw::MAP_PUBLISH4_ANY_RUNS, "tcp . 30000-30039 : 10.1.0.2"),
        (
            fw::MAP_PUBLISH4_RUNS,
            "127.0.0.1 . tcp . 31000-31099 : 10.1.0.2",
        ),
        (fw::MAP_PUBLISH6_ANY_RUNS, "udp . 31000-31099 : fd00::2"),
    ] {
        let elems = want.0.get(map).expect("runs map");
        assert_eq!(elems.len(), 1, "{map}: {elems:?}");
        assert!(elems.contains_key(run), "{map}: {elems:?}");
    }
    let singles = want.0.get(fw::SET_RELAY6_TCP).expect("relay ports");
    assert!(singles.contains_key("::1 . 30041"), "{singles:?}");
    let c = "container web on network n";
    want.insert(fw::SET_GUARDED, "\"ve-web1\"".into(), c.into());
    want.insert(
        fw::SET_PORT_MAC,
        "\"ve-web1\" . 02:42:0a:01:00:02".into(),
        c.into(),
    );
    want.insert(fw::SET_PORT_IP4, "\"ve-web1\" . 10.1.0.2".into(), c.into());
    want.insert(fw::SET_PORT_IP6, "\"ve-web1\" . fd00::2".into(), c.into());
    let nd = format!(
        "\"ve-web1\" . {:#x}",
        u128::from(nd.parse::<std::net::Ipv6Addr>().expect("v6"))
    );
    want.insert(fw::SET_PORT_ND, nd, c.into());
    want
}

/// Every address of one link, link-local ones included.
async fn all_addrs_of(k: &Kernel, link: &str) -> BTreeSet<IpAddr> {
    k.link_addrs()
        .await
        .expect("link_addrs")
        .into_iter()
        .filter(|(name, _)| name == link)
        .map(|(_, ip)| ip)
        .collect()
}

/// Proves that an endpoint of an IPv4-only network has no IPv6 address on either side once
/// both are up with carrier (the host side by `addrgenmode none` and `disable_ipv6=1`, no
/// multicast route of its own either; the container side by `disable_ipv6=1`), while a dual-stack endpoint on the same bridge gets its host side's
/// link-local address in the same time: the check would see one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_only_endpoint_has_no_ipv6_address_on_either_side() {
    require_root!();
    let h = TestNs::new("h");
    let c1 = TestNs::new("c1");
    let c2 = TestNs::new("c2");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    k.ensure_bridge(&bridge("bkbr6", &["10.78.0.1/24"]))
        .await
        .expect("bridge");
    let mut v4only = endpoint("bk6a", "bkbr6", &c1, &["10.78.0.2/24"], &[], false);
    v4only.disable_ipv6 = true;
    let dual = endpoint("bk6b", "bkbr6", &c2, &["10.78.0.3/24"], &[], false);
    k.setup_endpoint(&v4only).await.expect("setup v4-only");
    k.setup_endpoint(&dual).await.expect("setup dual");
    // The link-local address comes with the carrier (linkwatch: up to a second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while all_addrs_of(&k, "bk6b").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dual-stack endpoint's host side never got a link-local address"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Both endpoints were set up before that carrier came: the v4-only one had its chance.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(all_addrs_of(&k, "bk6a").await, BTreeSet::new());
    // IPv6 is off on the v4-only host side too, so its up added no `ff00::/8` route to the
    // local table (one per port otherwise, each insertion walking the others'), while the
    // dual-stack one's did.
    assert_eq!(
        sysctl::read(Some(&h.path), "net.ipv6.conf.bk6a.disable_ipv6").expect("read"),
        "1"
    );
    assert_eq!(
        sysctl::read(Some(&h.path), "net.ipv6.conf.bk6b.disable_ipv6").expect("read"),
        "0"
    );
    let local = std::process::Command::new("ip")
        .args(["-n", &h.name, "-6", "route", "show", "table", "local"])
        .output()
        .expect("ip route");
    let local = String::from_utf8_lossy(&local.stdout);
    let mroute = |dev: &str| {
        local
            .lines()
            .any(|l| l.starts_with("multicast ff00::/8") && l.contains(&format!("dev {dev} ")))
    };
    assert!(!mroute("bk6a") && mroute("bk6b"), "{local}");
    let kc = Kernel::new_in(&c1.path).await.expect("kernel c1");
    assert_eq!(all_addrs_of(&kc, "eth0").await, set(&["10.78.0.2"]));
    assert_eq!(
        sysctl::read(Some(&c1.path), "net.ipv6.conf.eth0.disable_ipv6").expect("read"),
        "1"
    );
    // Reachable over IPv4 all the same.
    let gw: SocketAddr = "10.78.0.1:7004".parse().expect("sa");
    let lg = listen(&h.path, gw);
    assert!(
        tcp_exchange(&c1.path, gw, &lg),
        "v4-only endpoint -> gateway"
    );
}

/// Packets `ifname` in test namespace `ns` has sent (its `/proc/net/dev` line, read inside).
fn tx_packets(ns: &TestNs, ifname: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "cat", "/proc/net/dev"])
        .output()
        .expect("ip netns exec");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{ifname}:")))
        .unwrap_or_else(|| panic!("no {ifname} in {}'s /proc/net/dev:\n{text}", ns.name));
    // Receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets.
    line.split_whitespace()
        .nth(9)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unreadable /proc/net/dev line: {line}"))
}

/// Proves: a veth on a bridge announces its address ONCE when it is set up — a single
/// gratuitous ARP, sent after its bridge port forwards (the bridge learns its MAC from it) —
/// not also at link up, where it raced the port's enabling and, at scale, flooded every other
/// port of the bridge a second time. The container side's only frames are its announcements
/// (IPv6 is off on it), so its transmit counter counts them: 2 before the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_endpoint_announces_once_after_its_port_forwards() {
    require_root!();
    let h = TestNs::new("h");
    let c = TestNs::new("c");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    k.ensure_bridge(&bridge("bkbran", &["10.85.0.1/24"]))
        .await
        .expect("bridge");
    let mut ep = endpoint("bkana", "bkbran", &c, &["10.85.0.2/24"], &[], false);
    ep.disable_ipv6 = true;
    ep.announce = berth_plan::model::Announce {
        arp: true,
        na: false,
    };
    k.setup_endpoint(&ep).await.expect("setup");
    // The announcement is sent inside setup_endpoint; give a stray second one time to show.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(tx_packets(&c, "eth0"), 1, "announcements at set-up");
    let fdb = std::process::Command::new("bridge")
        .args(["-n", &h.name, "fdb", "show", "br", "bkbran"])
        .output()
        .expect("bridge fdb");
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(
        fdb.lines()
            .any(|l| l.starts_with(&format!("{} dev bkana", ep.mac)) && !l.contains("permanent")),
        "the bridge did not learn {} on its port from the announcement:\n{fdb}",
        ep.mac
    );
}

/// Proves: both ends of an endpoint's veth are made with one TX and one RX queue (what a
/// veth ends up using anyway), so the kernel does not lower the counts after the creation,
/// which waits for an RCU grace period per end (`veth_init_queues`); and the host side is up
/// and forwarding once the set-up returns (it is created down and brought up after its peer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veth_is_made_with_one_queue_each_way_and_comes_up() {
    require_root!();
    let h = TestNs::new("h");
    let c = TestNs::new("c");
    let k = Kernel::new_in(&h.path).await.expect("kernel");
    k.ensure_bridge(&bridge("bkbrq", &["10.86.0.1/24"]))
        .await
        .expect("bridge");
    let ep = endpoint("bkq", "bkbrq", &c, &["10.86.0.2/24"], &[], false);
    k.setup_endpoint(&ep).await.expect("setup");
    for (ns, dev) in [(&h, "bkq"), (&c, "eth0")] {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns.name, "-d", "link", "show", dev])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("numtxqueues 1 numrxqueues 1"),
            "{dev} in {}: {text}",
            ns.name
        );
        assert!(
            text.contains("state UP"),
            "{dev} in {} not up: {text}",
            ns.name
        );
    }
    let port = std::process::Command::new("bridge")
        .args(["-n", &h.name, "link", "show", "dev", "bkq"])
        .output()
        .expect("bridge link");
    let port = String::from_utf8_lossy(&port.stdout);
    assert!(port.contains("state forwarding"), "port bkq: {port}");
}

/// Runs `ip -n NS ARGS…` in test namespace `ns`, which must succeed.
fn ip_in(ns: &TestNs, args: &str) {
    let st = std::process::Command::new("ip")
        .args(["-n", &ns.name])
        .args(args.split_whitespace())
        .status()
        .expect("ip");
    assert!(st.success(), "ip -n {} {args}", ns.name);
}

/// Removes the overlay namespaces a test left under its run directory, then the directory.
struct RunDir(std::path::PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let netns = self.0.join(berth_plan::overlayns::NETNS_SUBDIR);
        if let Ok(entries) = std::fs::read_dir(&netns) {
            for e in entries.flatten() {
                let _ = delete_netns(&e.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Proves: the overlay namespace of `berth_plan::overlayns` built from an empty host by its
/// own plan's steps (in a test "host" namespace) is what its observation reads back — a
/// second pass plans nothing (adoption without writes); the bridge and VXLAN port are in the
/// overlay namespace and not the host's, `bridge-nf-call-iptables` is 0 there (where
/// `br_netfilter` is loaded), and TCP runs both ways between the host and a container on the
/// bridge through the uplink's on-link routes and permanent neighbours (no address on
/// either side of it). Then drift is repaired by the same steps (the bridge deleted; the
/// namespace unmounted) back to a pass with nothing to do, and a removed network leaves
/// neither uplink nor mount behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_namespace_built_observed_repaired_and_removed_by_its_plan() {
    use berth_kernel::overlayns;
    use berth_plan::overlayns as plan;
    require_root!();
    let host = TestNs::new("oh");
    let container = TestNs::new("oc");
    let rundir = RunDir(std::env::temp_dir().join(format!("bk-{}-ovns", std::process::id())));
    let run_ip = |args: &str| ip_in(&host, args);
    // The host's underlay and an address of its own for the container to reach.
    run_ip("link add ul0 type veth peer name ul1");
    run_ip("addr add 10.79.3.1/24 dev ul0");
    run_ip("link set ul0 up");
    run_ip("link set ul1 up");
    let req = berth_plan::network::NetworkRequest {
        name: "ovt".into(),
        driver: Some("overlay".into()),
        ipam: vec![berth_plan::network::IpamRequest {
            subnet: Some("10.81.0.0/24".into()),
            ..Default::default()
        }],
        options: [(
            berth_plan::network::OPT_VXLANID.to_string(),
            "4444".to_string(),
        )]
        .into(),
        ..Default::default()
    };
    let net = berth_plan::network::plan_network(&req, "cd".repeat(32), "now".into(), &[], &[])
        .expect("overlay network");
    let remote = berth_plan::overlay::RemoteEndpoint {
        network_id: net.id.clone(),
        node: "h2".into(),
        vtep: "10.79.3.2".parse().expect("vtep"),
        ip: "10.81.0.9".parse().expect("ip"),
        ip6: None,
        mac: "02:42:0a:51:00:09".into(),
        name: "far".into(),
        aliases: vec![],
        container_id: "e".repeat(64),
    };
    let mut dh = berth_plan::host::DesiredHost::default();
    berth_plan::overlay::contribute(
        &mut dh,
        std::slice::from_ref(&net),
        Some("10.79.3.1".parse().expect("local")),
        "h1",
        &[remote],
    );
    let rd = rundir.0.display().to_string();
    let desired = plan::desired(std::slice::from_ref(&net), &rd, &dh.vxlans);
    let d = desired
        .namespaces
        .values()
        .next()
        .expect("one namespace")
        .clone();
    let nspath = std::path::PathBuf::from(&d.path);
    let kh = Kernel::new_in(&host.path).await.expect("host kernel");
    // berthd's sockets per overlay namespace, kept across passes.
    let held = overlayns::Namespaces::new();
    let held = &held;

    let converge = |want: plan::DesiredOverlay| {
        let kh = kh.clone();
        let rundir = rundir.0.clone();
        async move {
            let o = overlayns::observe(&kh, held, &rundir, &want, true)
                .await
                .expect("observe");
            let p = plan::diff(&o, &want);
            assert!(p.problems.is_empty(), "{:?}", p.problems);
            for s in &p.steps {
                overlayns::apply(&kh, held, &s.op)
                    .await
                    .unwrap_or_else(|e| panic!("{} {}: {e}", s.object, s.reason));
            }
            let o = overlayns::observe(&kh, held, &rundir, &want, true)
                .await
                .expect("observe again");
            let again = plan::diff(&o, &want);
            assert!(
                again.steps.is_empty(),
                "a second pass plans nothing, got {:?}",
                again.steps
            );
            p.steps.len()
        }
    };

    assert!(converge(desired.clone()).await > 0);
    assert!(overlayns::is_netns_mount(&nspath));
    assert_eq!(held.held(), vec![nspath.clone()], "one kernel kept there");
    let ko = held.kernel(&nspath).await.expect("overlay kernel");
    let inside = link_names(&ko).await;
    for l in [&net.bridge, &berth_plan::names::vxlan_name(&net.id), "up0"] {
        assert!(inside.contains(&l.to_string()), "{l} in {inside:?}");
    }
    let outside = link_names(&kh).await;
    assert!(!outside.contains(&net.bridge), "{outside:?}");
    assert!(outside.contains(&berth_plan::names::uplink_name(&net.id)));
    if let Ok(v) = sysctl::read(Some(&nspath), "net.bridge.bridge-nf-call-iptables") {
        assert_eq!(v, "0");
    }
    assert_eq!(
        sysctl::read(Some(&nspath), "net.ipv4.ip_forward").expect("ip_forward"),
        "1"
    );

    // A container on the bridge, as berth's endpoints will be: the veth's bridge side in the
    // overlay namespace.
    ko.setup_endpoint(&endpoint(
        "vbovt0",
        &net.bridge,
        &container,
        &["10.81.0.5/24"],
        &["10.81.0.1"],
        false,
    ))
    .await
    .expect("endpoint");
    let to_container: SocketAddr = "10.81.0.5:7001".parse().expect("addr");
    let l = listen(&container.path, to_container);
    assert!(
        tcp_exchange(&host.path, to_container, &l),
        "host → container through the uplink"
    );
    let to_host: SocketAddr = "10.79.3.1:7002".parse().expect("addr");
    let l = listen(&host.path, to_host);
    assert!(
        tcp_exchange(&container.path, to_host, &l),
        "container → host through the uplink"
    );

    // Anti-spoofing in the overlay namespace: `table bridge berth` there, with the port's
    // elements, drops a source address the container does not own; once the port is out of
    // `guarded` the same connection passes (so the check can fail).
    overlayns::apply_guard_base(&nspath).expect("guard base");
    let ep = berth_plan::model::EndpointSpec {
        id: "f".repeat(64),
        network_id: net.id.clone(),
        host_ifname: "vbovt0".into(),
        ifname: "eth0".into(),
        mac: "02:42:0a:51:00:05".into(),
        addrs: vec!["10.81.0.5/24".parse().expect("addr")],
        static_ipv4: None,
        static_ipv6: None,
        aliases: vec![],
        gw_priority: 0,
        driver_opts: Default::default(),
        links: vec![],
        link_local_ips: vec![],
        reused_mac: false,
    };
    let guard = berth_plan::firewall::guard_elements("c", &net, &ep);
    let none = berth_plan::firewall::Elements::default();
    held.apply_guard_changes(&nspath, &berth_plan::firewall::diff_changes(&none, &guard))
        .await
        .expect("guard elements");
    let cip = |args: &str| ip_in(&container, args);
    cip("addr add 10.81.0.66/32 dev eth0");
    let to_host: SocketAddr = "10.79.3.1:7003".parse().expect("addr");
    let l = listen(&host.path, to_host);
    let spoofed = |l: &std::net::TcpListener| {
        let ns = container.path.clone();
        let stream = berth_kernel::netns::run_in_netns(&ns, move || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.bind(&"10.81.0.66:0".parse::<SocketAddr>().expect("src").into())?;
            s.connect_timeout(&to_host.into(), std::time::Duration::from_millis(1500))?;
            Ok::<_, std::io::Error>(())
        })
        .expect("netns");
        let _ = l;
        stream.is_ok()
    };
    assert!(
        !spoofed(&l),
        "a spoofed source is dropped in the overlay namespace"
    );
    assert!(
        tcp_exchange(&container.path, to_host, &l),
        "the container's own address still passes the guard"
    );
    // Through the socket kept by the first change.
    held.apply_guard_changes(&nspath, &berth_plan::firewall::diff_changes(&guard, &none))
        .await
        .expect("unguard");
    assert!(spoofed(&l), "unguarded, the same source passes");
    cip("addr del 10.81.0.66/32 dev eth0");

    // Drift: the bridge deleted.
    ko.delete_link(&net.bridge).await.expect("delete bridge");
    assert!(converge(desired.clone()).await > 0);
    drop(ko);
    // Drift: the namespace unmounted (it goes once nothing holds it: its uplink with it).
    // The kept sockets would hold it, and its VXLAN port's identity with it (the new port
    // refused with EEXIST): the pass forgets them when it finds the namespace unmounted.
    delete_netns(&nspath).expect("unmount");
    assert!(converge(desired.clone()).await > 0);
    assert!(overlayns::is_netns_mount(&nspath));
    assert_eq!(
        held.held(),
        vec![nspath.clone()],
        "the new namespace's kernel"
    );

    // The network removed: uplink, the VXLAN port (its VNI free at once), then namespace.
    assert_eq!(converge(plan::DesiredOverlay::default()).await, 3);
    assert!(!nspath.exists());
    assert!(
        held.held().is_empty(),
        "nothing kept in a removed namespace"
    );
    assert!(!link_names(&kh)
        .await
        .contains(&berth_plan::names::uplink_name(&net.id)));
}
