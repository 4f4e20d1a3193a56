//! The etcd backend passes the same conformance suite as the embedded one, against a real
//! etcd (Debian's `etcd-server`) started by the test on loopback with a private data dir, and
//! ended (by its PID) when the test ends, pass or fail.
#![cfg(feature = "etcd")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_store::conformance::{self, Backend};
use berth_store::{EtcdOptions, EtcdStore, Store, StoreError};

/// One etcd member on 127.0.0.1, killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The etcd binary, or `None` (with a message) where it is missing outside CI; in CI
/// (`.ci/run` sets `BERTH_CI=1` and installs etcd-server) a missing etcd is a failure.
fn etcd_bin() -> Option<&'static str> {
    let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if bin.is_none() {
        assert!(
            std::env::var_os("BERTH_CI").is_none(),
            "etcd is not installed (apt-get install etcd-server)"
        );
        eprintln!("skipped: etcd is not installed (apt-get install etcd-server)");
    }
    bin
}

/// Starts member `name` of the cluster `initial` (`NAME=PEER_URL,…`) on 127.0.0.1's ports
/// `client` and `peer`, with `extra` arguments; its log is `etcd.log` in its directory.
fn member(
    bin: &str,
    name: &str,
    (client, peer): (u16, u16),
    initial: &str,
    extra: &[&str],
) -> Etcd {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
    let child = Command::new(bin)
        .args(["--name", name])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", initial])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    Etcd {
        child,
        url,
        _dir: dir,
    }
}

/// Starts etcd, or `None` where it is missing outside CI (see [`etcd_bin`]).
fn etcd() -> Option<Etcd> {
    let bin = etcd_bin()?;
    let ports = (free_port(), free_port());
    let initial = format!("conformance=http://127.0.0.1:{}", ports.1);
    let etcd = member(bin, "conformance", ports, &initial, &[]);
    let start = Instant::now();
    loop {
        match EtcdStore::connect(EtcdOptions::new(vec![etcd.url.clone()])) {
            Ok(_) => return Some(etcd),
            Err(e) => {
                let log =
                    std::fs::read_to_string(etcd._dir.path().join("etcd.log")).unwrap_or_default();
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "etcd did not come up: {e}\n{log}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

struct EtcdBackend {
    url: String,
    n: usize,
    prefix: String,
}

impl EtcdBackend {
    fn open(&self) -> berth_store::Result<EtcdStore> {
        let mut o = EtcdOptions::new(vec![self.url.clone()]);
        o.prefix = self.prefix.clone();
        EtcdStore::connect(o)
    }
}

impl Backend for EtcdBackend {
    type Store = EtcdStore;

    fn fresh(&mut self) -> berth_store::Result<EtcdStore> {
        // A private key space per check: revisions are shared, keys are not.
        self.n += 1;
        self.prefix = format!("/conformance/{}/", self.n);
        self.open()
    }

    fn reopen(&mut self, store: EtcdStore) -> berth_store::Result<EtcdStore> {
        drop(store);
        self.open()
    }

    fn advance(&mut self, _store: &EtcdStore, by: Duration) {
        // etcd's lessor checks expiry every 500 ms and revokes through raft: wait that long
        // too, so "after the TTL" means after etcd acted on it.
        std::thread::sleep(by + Duration::from_millis(500));
    }

    fn lease_ttl(&self) -> Duration {
        // Above etcd's minimum TTL (1.5 × election timeout), and long enough that the 500 ms
        // margin of `advance` stays well inside 0.4 TTL.
        Duration::from_secs(5)
    }
}

#[test]
fn etcd_backend_passes_the_conformance_suite() {
    let Some(etcd) = etcd() else { return };
    let mut b = EtcdBackend {
        url: etcd.url.clone(),
        n: 0,
        prefix: String::new(),
    };
    conformance::run_all(&mut b).expect("conformance");
}

#[test]
fn a_stopped_etcd_is_reported_unavailable_within_the_timeout() {
    let Some(mut etcd) = etcd() else { return };
    let mut o = EtcdOptions::new(vec![etcd.url.clone()]);
    o.request_timeout = Duration::from_millis(800);
    let s = EtcdStore::connect(o).expect("connect");
    s.apply(vec![berth_store::Op::Put("k".into(), b"v".to_vec())])
        .expect("write while up");
    let _ = etcd.child.kill();
    let _ = etcd.child.wait();
    let t = Instant::now();
    let e = s.get("k").expect_err("etcd is down");
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains(&etcd.url), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// Three members on 127.0.0.1 (quick elections: 100 ms heartbeats, 500 ms election timeout),
/// or `None` where etcd is missing outside CI (see [`etcd_bin`]).
fn etcd_cluster() -> Option<Vec<Etcd>> {
    let bin = etcd_bin()?;
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let quick = [
        "--initial-cluster-state",
        "new",
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "500",
    ];
    let members: Vec<Etcd> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| member(bin, &format!("m{i}"), *p, &initial, &quick))
        .collect();
    let start = Instant::now();
    loop {
        let ok = EtcdStore::connect(EtcdOptions::new(vec![members[0].url.clone()]))
            .and_then(|s| s.apply(vec![berth_store::Op::Put("up".into(), b"1".to_vec())]));
        match ok {
            Ok(_) => return Some(members),
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the etcd cluster did not come up: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A watch served by a member that lost its leader (its two peers gone: no quorum) ends,
/// so that its consumer lists and watches again, through another member if it knows one,
/// instead of waiting on a member that will never see another write: berth's client asks
/// for a leader on every request (`hasleader`, which etcd's `monitorLeader` honours by
/// cancelling such streams after three election timeouts without one). Without it the
/// watch stayed open and silent for as long as the partition lasted.
#[test]
fn a_watch_on_a_member_without_a_leader_ends() {
    let Some(mut members) = etcd_cluster() else {
        return;
    };
    let mut o = EtcdOptions::new(vec![members[0].url.clone()]);
    o.request_timeout = Duration::from_millis(800);
    let s = EtcdStore::connect(o).expect("connect");
    let mut w = s.watch("w/", None).expect("watch");
    s.apply(vec![berth_store::Op::Put("w/a".into(), b"1".to_vec())])
        .expect("write");
    let e = conformance::next_event(&mut w);
    assert_eq!(e.key, "w/a");
    for m in members.iter_mut().skip(1) {
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
    let t = Instant::now();
    loop {
        match w.try_recv() {
            Err(berth_store::TryRecvError::Disconnected) => break,
            Ok(e) => panic!("an event after the quorum was lost: {e:?}"),
            Err(berth_store::TryRecvError::Empty) => {
                assert!(
                    t.elapsed() < Duration::from_secs(15),
                    "the watch on a member without a leader is still open after 15 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // Asked for a leader, a read fails at once instead of waiting for its timeout.
    let e = s.get("w/a").expect_err("no leader");
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
}
