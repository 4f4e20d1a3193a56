//! berth's tun device with offloads against the real kernel: two namespaces, each with a tun
//! opened by `sys::open_tun` and a VXLAN device over IPv6 through it (the shape of berth's
//! encrypted overlay), joined by a relay that does what berthd's WireGuard datapath does minus
//! the encryption: read, `vnet::split`, write each segment to the other tun. A TCP transfer
//! across must arrive whole (the receiving kernel verifies every checksum the split computed
//! and drops a segment whose checksum is wrong, which would stall the transfer), and on a
//! kernel with UDP tunnel GSO on tun devices (Linux ≥ 6.17) the relay must have been handed
//! whole aggregates, not segments.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_kernel::netns::run_in_netns;
use berth_kernel::sys::{open_tun, readable};
use berth_kernel::vnet;
use common::TestNs;

fn ip(ns: &TestNs, args: &[&str]) {
    let st = Command::new("ip")
        .arg("-n")
        .arg(&ns.name)
        .args(args)
        .status()
        .expect("run ip");
    assert!(st.success(), "ip -n {} {args:?}", ns.name);
}

/// Whether this kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let maj: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let min: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (maj, min) >= (major, minor)
}

#[derive(Default)]
struct Counts {
    reads: AtomicUsize,
    aggregates: AtomicUsize,
    segments: AtomicUsize,
    refused: AtomicUsize,
}

/// Moves packets from `from` to `to` until `stop`: each read split, each piece written behind
/// an all-zero header.
fn relay(from: Arc<File>, to: Arc<File>, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut buf = vec![0u8; vnet::HDR_LEN + (128 << 10)];
    let mut seg = Vec::new();
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n = match (&*from).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                readable(from.as_fd(), 50);
                continue;
            }
            Err(_) => continue,
        };
        let Some(hdr) = vnet::Header::parse(&buf[..n]) else {
            continue;
        };
        counts.reads.fetch_add(1, Ordering::Relaxed);
        let tunnel = hdr.gso_type & (vnet::GSO_UDP_TUNNEL_IPV4 | vnet::GSO_UDP_TUNNEL_IPV6) != 0;
        let r = vnet::split(&hdr, &mut buf[vnet::HDR_LEN..n], &mut seg, |p| {
            out.clear();
            out.resize(vnet::HDR_LEN, 0);
            out.extend_from_slice(p);
            // EIO while the other device is not up yet: TCP resends.
            let _ = (&*to).write(&out);
        });
        match r {
            Ok(k) => {
                counts.segments.fetch_add(k, Ordering::Relaxed);
                if tunnel && k > 1 {
                    counts.aggregates.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn tcp_crosses_a_tun_whose_aggregates_berth_cuts_itself() {
    require_root!();
    let a = TestNs::new("tuna");
    let b = TestNs::new("tunb");
    let open = |ns: &TestNs| {
        run_in_netns(&ns.path, || open_tun("bwt0"))
            .expect("enter netns")
            .expect("open tun")
    };
    let (ta, tb) = (open(&a), open(&b));
    if kernel_at_least(6, 17) {
        assert!(
            ta.offload && tb.offload,
            "Linux ≥ 6.17 has UDP tunnel GSO on tun devices: open_tun must enable it"
        );
    } else {
        eprintln!("kernel before 6.17: no tunnel offload on tun; checking the plain path");
    }
    let offload = ta.offload;
    let (fa, fb) = (Arc::new(ta.file), Arc::new(tb.file));
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let relays = [
        {
            let (f, t, s, c) = (fa.clone(), fb.clone(), stop.clone(), counts.clone());
            std::thread::spawn(move || relay(f, t, s, c))
        },
        {
            let (f, t, s, c) = (fb.clone(), fa.clone(), stop.clone(), counts.clone());
            std::thread::spawn(move || relay(f, t, s, c))
        },
    ];
    for (i, ns) in [(1, &a), (2, &b)] {
        let other = 3 - i;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("fd00:77::{i}/64"),
                "dev",
                "bwt0",
                "nodad",
            ],
        );
        ip(ns, &["link", "set", "bwt0", "mtu", "1440", "up"]);
        ip(
            ns,
            &[
                "link",
                "add",
                "vx0",
                "mtu",
                "1370",
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                &format!("fd00:77::{i}"),
                "remote",
                &format!("fd00:77::{other}"),
                "dstport",
                "4789",
                "nolearning",
            ],
        );
        ip(
            ns,
            &[
                "link",
                "set",
                "vx0",
                "address",
                &format!("02:00:00:00:00:0{i}"),
                "up",
            ],
        );
        ip(
            ns,
            &["addr", "add", &format!("10.77.0.{i}/24"), "dev", "vx0"],
        );
        ip(
            ns,
            &[
                "neigh",
                "add",
                &format!("10.77.0.{other}"),
                "lladdr",
                &format!("02:00:00:00:00:0{other}"),
                "dev",
                "vx0",
                "nud",
                "permanent",
            ],
        );
    }
    let addr: SocketAddr = "10.77.0.1:5077".parse().expect("addr");
    let listener: TcpListener = common::listen(&a.path, addr);
    // 8 MiB that no two segments share, so a segment out of place would show.
    let data: Vec<u8> = (0..8usize << 20)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[i % 4])
        .collect();
    let sent = data.clone();
    let client = std::thread::spawn({
        let path = b.path.clone();
        move || {
            let mut s = run_in_netns(&path, move || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            })
            .expect("enter netns")
            .expect("connect across the relay");
            s.set_write_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s.write_all(&sent).expect("send 8 MiB");
        }
    });
    listener.set_nonblocking(false).expect("blocking");
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let t0 = Instant::now();
    let mut got = Vec::with_capacity(data.len());
    let mut chunk = vec![0u8; 1 << 16];
    while got.len() < data.len() {
        let n = server
            .read(&mut chunk)
            .expect("receive (a stall means segments were dropped)");
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    let took = t0.elapsed();
    client.join().expect("client");
    stop.store(true, Ordering::Relaxed);
    for r in relays {
        r.join().expect("relay");
    }
    assert!(got == data, "the bytes arrived whole and in order");
    let (reads, aggs, segs, refused) = (
        counts.reads.load(Ordering::Relaxed),
        counts.aggregates.load(Ordering::Relaxed),
        counts.segments.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "8 MiB in {took:?}: {reads} reads, {aggs} tunnel aggregates, {segs} packets written, \
         {refused} refused"
    );
    assert_eq!(refused, 0, "every read was one split could handle");
    if offload {
        assert!(
            aggs > 0,
            "with the offloads the kernel handed over whole aggregates"
        );
        assert!(
            segs > reads,
            "aggregates were cut into more packets than reads"
        );
    }
}
