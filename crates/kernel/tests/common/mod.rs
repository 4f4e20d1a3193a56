//! Test harness: throwaway network namespaces, removed even when a test panics.
//!
//! Everything a test does happens inside namespaces it created itself (`bk-<pid>-<n>-<tag>`
//! under `/run/netns`, so `ip netns exec` works for debugging); the machine's own namespace is
//! never changed.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_kernel::netns::{create_netns, delete_netns, run_in_netns};
use berth_plan::model::{EndpointPlan, RoutePlan};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether the tests can run (they need CAP_SYS_ADMIN and CAP_NET_ADMIN).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns early from a test that cannot run without root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// A network namespace deleted on drop (also while unwinding from a panic).
pub struct TestNs {
    /// Bind-mount path.
    pub path: PathBuf,
    /// Name under /run/netns.
    pub name: String,
}

impl TestNs {
    /// Creates `bk-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("bk-{}-{}-{}", std::process::id(), n, tag);
        let path = Path::new("/run/netns").join(&name);
        create_netns(&path).expect("create test netns");
        TestNs { path, name }
    }

    /// The path as a string, for plans.
    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = delete_netns(&self.path) {
            eprintln!("cleanup of {} failed: {e}", self.name);
        }
    }
}

/// A TCP listener created inside `ns` (the socket stays in that namespace).
pub fn listen(ns: &Path, addr: SocketAddr) -> TcpListener {
    run_in_netns(ns, move || TcpListener::bind(addr))
        .expect("enter netns")
        .expect("bind listener")
}

/// Connects from inside `ns` to `addr`, where `listener` listens, and exchanges a message
/// both ways. `false` when the connection cannot be made within the timeout.
pub fn tcp_exchange(ns: &Path, addr: SocketAddr, listener: &TcpListener) -> bool {
    let stream = run_in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
    })
    .expect("enter netns");
    let Ok(mut client) = stream else {
        return false;
    };
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").expect("write back");
    client.read_exact(&mut buf).expect("read back");
    assert_eq!(&buf, b"pong");
    true
}

/// An endpoint plan on bridge `bridge`, with default routes via the given gateways.
pub fn endpoint(
    host_ifname: &str,
    bridge: &str,
    ns: &TestNs,
    addrs: &[&str],
    gateways: &[&str],
    isolated: bool,
) -> EndpointPlan {
    let addrs: Vec<ipnet::IpNet> = addrs.iter().map(|a| a.parse().expect("addr")).collect();
    let mac = match addrs.first() {
        Some(ipnet::IpNet::V4(v4)) => {
            let o = v4.addr().octets();
            format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
        }
        _ => String::new(),
    };
    EndpointPlan {
        disable_ipv6: false,
        announce: Default::default(),
        host_ifname: host_ifname.to_string(),
        bridge: bridge.to_string(),
        host_netns: None,
        netns: ns.path_str(),
        ifname: "eth0".to_string(),
        mac,
        mtu: 1450,
        addrs,
        routes: gateways
            .iter()
            .map(|g| {
                let via: std::net::IpAddr = g.parse().expect("gw");
                RoutePlan {
                    dst: if via.is_ipv4() {
                        "0.0.0.0/0".parse().expect("net")
                    } else {
                        "::/0".parse().expect("net")
                    },
                    via,
                }
            })
            .collect(),
        isolated,
    }
}
