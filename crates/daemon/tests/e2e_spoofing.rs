//! End-to-end: a container cannot spoof its neighbours (issue 8, "The network cannot be
//! spoofed").
//!
//! An attacker container with `--cap-add NET_ADMIN --cap-add NET_RAW` on a dual-stack bridge
//! network takes a neighbour's address, sends gratuitous ARP and an unsolicited neighbour
//! advertisement for the gateway, an IPv6 router advertisement, a DHCP server reply, and
//! frames with spoofed IPv4/IPv6 sources and a spoofed MAC, all built by hand on an
//! `AF_PACKET` socket. Real packets decide: a UDP listener in the victim and one in the host
//! count what arrives, the victim's and the host's neighbour tables and the victim's routes are
//! read back, and the victim's TCP service must keep answering. The very same attacks on a
//! network created with `-o berth.network.allow_spoofing=true` succeed, so the test proves the
//! protection and not a broken attack.

mod common;

use std::time::{Duration, Instant};

use common::{show, World};

/// Hand-built frames on `eth0` (needs CAP_NET_RAW). Every frame uses the attacker's own MAC as
/// Ethernet source unless told otherwise, so each attack is stopped by the rule it is about.
const SPOOF_PY: &str = r#"
import socket, struct, sys

DEV = 'eth0'
A6 = socket.AF_INET6

def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def mac(s):
    return bytes.fromhex(s.replace(':', ''))

def own_mac():
    return open('/sys/class/net/%s/address' % DEV).read().strip()

def link_local(m):
    b = bytearray(mac(m))
    b[0] ^= 2
    return socket.inet_ntop(A6, b'\xfe\x80' + b'\0' * 6 + bytes(b[:3]) + b'\xff\xfe' + bytes(b[3:]))

def send(frame):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((DEV, 0))
    s.send(frame)

def eth(dst, src, typ):
    return mac(dst) + mac(src) + struct.pack('!H', typ)

def ipv4(src, dst, proto, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload

def ipv6(src, dst, nh, payload, hlim=64):
    return (struct.pack('!IHBB', 6 << 28, len(payload), nh, hlim)
            + socket.inet_pton(A6, src) + socket.inet_pton(A6, dst) + payload)

def sum6(src, dst, nh, payload):
    ph = socket.inet_pton(A6, src) + socket.inet_pton(A6, dst) + struct.pack('!I3xB', len(payload), nh)
    return csum(ph + payload)

def udp(src, dst, sport, dport, data):
    u = struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data
    if ':' not in src:
        return 0x0800, ipv4(src, dst, 17, u)
    c = sum6(src, dst, 17, u) or 0xffff
    return 0x86dd, ipv6(src, dst, 17, u[:6] + struct.pack('!H', c) + u[8:])

def tcp(src, dst, sport, dport, data):
    # One PSH|ACK segment carrying DATA (no connection: the receiver's stack resets it, and
    # a raw socket there sees it first).
    t = struct.pack('!HHIIBBHHH', sport, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + data
    if ':' not in src:
        ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(t))
        return 0x0800, ipv4(src, dst, 6, t[:16] + struct.pack('!H', csum(ph + t)) + t[18:])
    c = sum6(src, dst, 6, t)
    return 0x86dd, ipv6(src, dst, 6, t[:16] + struct.pack('!H', c) + t[18:])

def icmp6(src, dst, body):
    c = sum6(src, dst, 58, body)
    return ipv6(src, dst, 58, body[:2] + struct.pack('!H', c) + body[4:], hlim=255)

cmd, args = sys.argv[1], sys.argv[2:]
me = own_mac()
if cmd == 'udp':
    # udp DSTMAC SRCMAC SRCIP DSTIP SPORT DPORT DATA
    dmac, smac, sip, dip, sport, dport, data = args
    typ, pkt = udp(sip, dip, int(sport), int(dport), data.encode())
    send(eth(dmac, me if smac == 'own' else smac, typ) + pkt)
elif cmd == 'tcp':
    # tcp DSTMAC SRCMAC SRCIP DSTIP SPORT DPORT DATA
    dmac, smac, sip, dip, sport, dport, data = args
    typ, pkt = tcp(sip, dip, int(sport), int(dport), data.encode())
    send(eth(dmac, me if smac == 'own' else smac, typ) + pkt)
elif cmd == 'arp':
    # arp OP DSTMAC SENDERIP TARGETMAC TARGETIP (sender hardware address: our own MAC)
    op, dmac, sip, tmac, tip = args
    body = (struct.pack('!HHBBH', 1, 0x0800, 6, 4, int(op)) + mac(me) + socket.inet_aton(sip)
            + mac(tmac) + socket.inet_aton(tip))
    send(eth(dmac, me, 0x0806) + body)
elif cmd == 'ra':
    # A router advertisement from our own link-local address: default router for 1800 s and
    # prefix 2001:db8:bad::/64 for address autoconfiguration.
    src = link_local(me)
    body = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 1800, 0, 0)
    body += struct.pack('!BB', 1, 1) + mac(me)
    body += struct.pack('!BBBBIII', 3, 4, 64, 0xc0, 86400, 14400, 0)
    body += socket.inet_pton(A6, '2001:db8:bad::')
    send(eth('33:33:00:00:00:01', me, 0x86dd) + icmp6(src, 'ff02::1', body))
elif cmd == 'na':
    # na TARGET: an unsolicited, overriding neighbour advertisement claiming TARGET.
    (target,) = args
    src = link_local(me)
    body = struct.pack('!BBHI', 136, 0, 0, 0x20000000) + socket.inet_pton(A6, target)
    body += struct.pack('!BB', 2, 1) + mac(me)
    send(eth('33:33:00:00:00:01', me, 0x86dd) + icmp6(src, 'ff02::1', body))
else:
    sys.exit('unknown command ' + cmd)
"#;

/// `listen.py OUT PORT…`: prints (or appends to OUT, `-` for stdout) `PORT SRC DATA` for every
/// UDP datagram on each PORT (IPv4 and IPv6), `tcp SRC DATA` for every TCP segment whose data
/// says `spoofed` (a raw socket per family sees each one the stack receives, whatever its
/// port), and answers TCP on 8080 with `ok`.
const LISTEN_PY: &str = r#"
import socket, sys, threading

out = sys.argv[1]
def log(line):
    if out == '-':
        print(line, flush=True)
    else:
        with open(out, 'a') as f:
            f.write(line + '\n')

def udp(fam, addr, port):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.bind((addr, port))
    while True:
        data, src = s.recvfrom(2048)
        log('%d %s %s' % (port, src[0], data.decode(errors='replace')))

def raw_tcp(fam):
    s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
    while True:
        pkt, src = s.recvfrom(65535)
        if fam == socket.AF_INET:
            pkt = pkt[(pkt[0] & 0xf) * 4:]  # an IPv4 raw socket gets the IP header too
        data = pkt[(pkt[12] >> 4) * 4:]
        if b'spoofed' in data:
            log('tcp %s %s' % (src[0], data.decode(errors='replace')))

threading.Thread(target=raw_tcp, args=(socket.AF_INET,), daemon=True).start()
threading.Thread(target=raw_tcp, args=(socket.AF_INET6,), daemon=True).start()
for p in sys.argv[2:]:
    threading.Thread(target=udp, args=(socket.AF_INET, '0.0.0.0', int(p)), daemon=True).start()
    threading.Thread(target=udp, args=(socket.AF_INET6, '::', int(p)), daemon=True).start()
t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(('::', 8080))
t.listen(16)
log('ready')
while True:
    c, _ = t.accept()
    c.sendall(b'ok\n')
    c.close()
"#;

/// Addresses and MACs of one attack scene.
struct Scene {
    net: String,
    gw4: String,
    gw6: String,
    gw_mac: String,
    victim: String,
    victim4: String,
    victim6: String,
    victim_mac: String,
    attacker: String,
    attacker_mac: String,
    /// File the host's UDP listener appends to.
    host_log: String,
}

/// What the attacks achieved.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    /// Datagrams and TCP segments with a spoofed source (or MAC, or DHCP server port) that
    /// reached the victim.
    victim_got: Vec<String>,
    /// Datagrams from the victim's address that reached the host but came from the attacker.
    host_got: Vec<String>,
    /// The victim's neighbour entry for the gateway (IPv4) names the attacker's MAC.
    arp_poisoned: bool,
    /// Same for the gateway's IPv6 address.
    nd_poisoned: bool,
    /// The host's neighbour entry for the victim names the attacker's MAC.
    host_poisoned: bool,
    /// The victim learnt a route or address from the attacker's router advertisement.
    ra_taken: bool,
}

fn field(v: &serde_json::Value, net: &str, key: &str) -> String {
    v["NetworkSettings"]["Networks"][net][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} of {net} missing: {}", v["NetworkSettings"]))
        .to_string()
}

/// The link-layer address in `ip neigh show ADDR` output ("" when none).
fn lladdr(out: &str) -> String {
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "lladdr" {
            return words.next().unwrap_or("").to_lowercase();
        }
    }
    String::new()
}

/// Creates network `net` (`opts` added), a victim running the listener and an attacker with
/// NET_ADMIN and NET_RAW, and warms the neighbour tables on both sides.
fn scene(w: &World, net: &str, k: u8, opts: &[&str]) -> Scene {
    let (s4, s6) = (format!("10.{k}.0.0/24"), format!("fd00:{k}::/64"));
    let mut a = vec![
        "network", "create", "--ipv6", "--subnet", &s4, "--subnet", &s6,
    ];
    a.extend_from_slice(opts);
    a.push(net);
    w.berth_ok(&a);
    let listen = w.helper("listen.py");
    let victim = format!("victim{k}");
    let attacker = format!("attacker{k}");
    w.run_d(
        &victim,
        &["--network", net],
        &["python3", &listen, "-", "9999", "68"],
    );
    w.run_d(
        &attacker,
        &[
            "--network",
            net,
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "NET_RAW",
        ],
        &["sleep", "600"],
    );
    let br = w.bridge_of(net);
    let gw_mac = w
        .host_ip_cmd(&["-br", "link", "show", &br])
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .to_lowercase();
    let v = w.inspect(&victim);
    let at = w.inspect(&attacker);
    let sc = Scene {
        net: net.to_string(),
        gw4: format!("10.{k}.0.1"),
        gw6: format!("fd00:{k}::1"),
        gw_mac,
        victim4: field(&v, net, "IPAddress"),
        victim6: field(&v, net, "GlobalIPv6Address"),
        victim_mac: field(&v, net, "MacAddress").to_lowercase(),
        attacker_mac: field(&at, net, "MacAddress").to_lowercase(),
        victim,
        attacker,
        host_log: w.dir.join("host-udp.log").display().to_string(),
    };
    wait_log(w, &sc.victim, "ready");
    // Neighbour entries on every side: the victim talks to the gateway (both families), the
    // host to the victim.
    let poke = format!(
        "import socket\nfor f, a in ((socket.AF_INET, '{}'), (socket.AF_INET6, '{}')):\n    socket.socket(f, socket.SOCK_DGRAM).sendto(b'x', (a, 9))\n",
        sc.gw4, sc.gw6
    );
    w.exec_ok(&sc.victim, &["python3", "-c", &poke]);
    w.tcp_from_ns(&w.host_ns, &sc.victim4, 8080, 3.0)
        .unwrap_or_else(|e| panic!("host → victim before the attacks: {e}"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lladdr(&w.exec_ok(&sc.victim, &["ip", "neigh", "show", &sc.gw4])),
        sc.gw_mac,
        "the victim must know the gateway before the attacks"
    );
    sc
}

/// Waits (≤ 10 s) until the container's output holds `what`.
fn wait_log(w: &World, name: &str, what: &str) {
    let start = Instant::now();
    while !w.berth_ok(&["logs", name]).contains(what) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} never printed {what:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs every attack of the scene and reads back what it achieved.
fn attack(w: &World, s: &Scene) -> Outcome {
    let spoof = w.helper("spoof.py");
    let at = |args: &[&str]| {
        let mut a = vec!["python3", spoof.as_str()];
        a.extend_from_slice(args);
        w.exec_ok(&s.attacker, &a);
    };
    // 1. Take the victim's address and talk to the host from it (the kernel's own stack: its
    //    ARP announces the victim's address with the attacker's MAC too).
    let addr = format!("{}/24", s.victim4);
    w.exec_ok(&s.attacker, &["ip", "addr", "add", &addr, "dev", "eth0"]);
    let from_victim = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{}', 0))\nfor _ in range(3):\n    s.sendto(b'stolen-address', ('{}', 9998))\n",
        s.victim4, s.gw4
    );
    w.exec_ok(&s.attacker, &["python3", "-c", &from_victim]);
    // 2. Gratuitous ARP for the gateway (broadcast request, and a reply to the victim), and
    //    an ARP reply to the host claiming the victim's address.
    let bcast = "ff:ff:ff:ff:ff:ff";
    at(&["arp", "1", bcast, &s.gw4, "00:00:00:00:00:00", &s.gw4]);
    at(&["arp", "2", &s.victim_mac, &s.gw4, &s.victim_mac, &s.victim4]);
    at(&["arp", "2", &s.gw_mac, &s.victim4, &s.gw_mac, &s.gw4]);
    // 3. IPv6: an overriding neighbour advertisement for the gateway, a router advertisement.
    at(&["na", &s.gw6]);
    at(&["ra"]);
    // 4. Spoofed sources to the victim's listener: another IPv4 and IPv6 address, a foreign
    //    MAC with the attacker's own address, a DHCP server reply (source port 67).
    let attacker4 = field(&w.inspect(&s.attacker), &s.net, "IPAddress");
    at(&[
        "udp",
        &s.victim_mac,
        "own",
        &format!("{}9", s.gw4),
        &s.victim4,
        "4000",
        "9999",
        "spoofed-v4",
    ]);
    at(&[
        "udp",
        &s.victim_mac,
        "own",
        &s.gw6.replace("::1", "::99"),
        &s.victim6,
        "4000",
        "9999",
        "spoofed-v6",
    ]);
    at(&[
        "udp",
        &s.victim_mac,
        "02:42:de:ad:be:ef",
        &attacker4,
        &s.victim4,
        "4000",
        "9999",
        "spoofed-mac",
    ]);
    at(&[
        "udp",
        &s.victim_mac,
        "own",
        &attacker4,
        &s.victim4,
        "67",
        "68",
        "dhcp-offer",
    ]);
    // 5. The same spoofed sources over TCP: the guard accepts a container's TCP from its own
    //    MAC and address in one lookup (its fast path); these must not take it.
    for (smac, src, dst, what) in [
        (
            "own",
            format!("{}9", s.gw4),
            s.victim4.clone(),
            "spoofed-tcp4",
        ),
        (
            "own",
            s.gw6.replace("::1", "::99"),
            s.victim6.clone(),
            "spoofed-tcp6",
        ),
        (
            "02:42:de:ad:be:ef",
            attacker4.clone(),
            s.victim4.clone(),
            "spoofed-tcp-mac",
        ),
    ] {
        at(&["tcp", &s.victim_mac, smac, &src, &dst, "4000", "9997", what]);
    }
    w.exec_ok(&s.attacker, &["ip", "addr", "del", &addr, "dev", "eth0"]);
    std::thread::sleep(Duration::from_millis(500));

    let logs = w.berth_ok(&["logs", &s.victim]);
    let victim_got = logs
        .lines()
        .filter(|l| l.contains("spoofed") || l.contains("dhcp"))
        .map(str::to_string)
        .collect();
    let host_got = std::fs::read_to_string(&s.host_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("stolen-address") && l.contains(&format!(" {} ", s.victim4)))
        .map(str::to_string)
        .collect();
    let neigh = |addr: &str| lladdr(&w.exec_ok(&s.victim, &["ip", "neigh", "show", addr]));
    let br = w.bridge_of(&s.net);
    let host_neigh = lladdr(&w.host_ip_cmd(&["neigh", "show", &s.victim4, "dev", &br]));
    let routes = w.exec_ok(&s.victim, &["ip", "-6", "route", "show"]);
    let addrs = w.exec_ok(&s.victim, &["ip", "-6", "addr", "show"]);
    Outcome {
        victim_got,
        host_got,
        arp_poisoned: neigh(&s.gw4) == s.attacker_mac,
        nd_poisoned: neigh(&s.gw6) == s.attacker_mac,
        host_poisoned: host_neigh == s.attacker_mac,
        ra_taken: routes.contains("proto ra") || addrs.contains("2001:db8:bad"),
    }
}

/// Proves: on a default network none of the attacks reaches or poisons the victim or the host,
/// and the victim keeps serving; with `berth.network.allow_spoofing=true` every one of them
/// works (so the attacks are real). Also: `system check` is in sync with the anti-spoofing
/// elements in place, and they go with the containers.
#[test]
fn a_container_cannot_spoof_its_neighbours() {
    require_root!();
    let w = World::new();
    for (name, text) in [("spoof.py", SPOOF_PY), ("listen.py", LISTEN_PY)] {
        std::fs::write(w.dir.join(name), text).expect("write helper");
    }
    let listen = w.helper("listen.py");

    let guarded = scene(&w, "guarded", 201, &[]);
    let open = scene(
        &w,
        "open",
        202,
        &["-o", "berth.network.allow_spoofing=true"],
    );
    // One listener in the host for both scenes (its lines name the source).
    w.spawn_in(&w.host_ns, &["python3", &listen, &guarded.host_log, "9998"]);
    // The host's listener is up once a datagram to it is logged.
    let start = Instant::now();
    loop {
        let _ = w.ns_exec(
            &w.host_ns,
            &[
                "python3",
                "-c",
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hello', ('127.0.0.1', 9998))",
            ],
        );
        std::thread::sleep(Duration::from_millis(100));
        if std::fs::read_to_string(&guarded.host_log).is_ok_and(|t| t.contains("hello")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "host listener not up"
        );
    }
    let check = w.system_check(&[]);
    assert!(
        check.status.success() && common::stdout(&check).contains("in sync"),
        "system check before the attacks: {}",
        show(&check)
    );
    let table =
        common::stdout(&w.ns_exec(&w.host_ns, &["nft", "list", "table", "bridge", "berth"]));
    let veth = |c: &str, n: &str| w.host_veth_of(c, n);
    for c in [&guarded.victim, &guarded.attacker] {
        assert!(table.contains(&veth(c, "guarded")), "{table}");
    }
    for c in [&open.victim, &open.attacker] {
        assert!(!table.contains(&veth(c, "open")), "{table}");
    }

    let got = attack(&w, &guarded);
    assert_eq!(got, Outcome::default(), "attacks on a guarded network");
    // The victim keeps serving the host, and still knows the gateway.
    w.tcp_from_ns(&w.host_ns, &guarded.victim4, 8080, 3.0)
        .unwrap_or_else(|e| panic!("host → victim after the attacks: {e}"));
    w.tcp_from_ns(&w.host_ns, &guarded.victim6, 8080, 3.0)
        .unwrap_or_else(|e| panic!("host → victim over IPv6 after the attacks: {e}"));

    let got = attack(&w, &open);
    assert_eq!(
        got.victim_got.len(),
        7,
        "every spoofed datagram and segment arrives without the protection: {got:?}"
    );
    assert!(!got.host_got.is_empty(), "{got:?}");
    assert!(got.arp_poisoned, "{got:?}");
    assert!(got.nd_poisoned, "{got:?}");
    assert!(got.host_poisoned, "{got:?}");
    assert!(got.ra_taken, "{got:?}");

    // Drift: the whole bridge table deleted by hand is back (rules and elements) within
    // seconds, and the victim is protected again.
    w.ns_exec_ok(&w.host_ns, &["nft", "delete", "table", "bridge", "berth"]);
    let victim_veth = veth(&guarded.victim, "guarded");
    let start = Instant::now();
    loop {
        let t =
            common::stdout(&w.ns_exec(&w.host_ns, &["nft", "list", "table", "bridge", "berth"]));
        if t.contains(&victim_veth) && t.contains("jump guard") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "table bridge berth not repaired: {t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The elements follow the endpoints: gone after an exit, back with a restart, added and
    // removed with connect and disconnect of a running container.
    let bridge_table =
        || common::stdout(&w.ns_exec(&w.host_ns, &["nft", "list", "table", "bridge", "berth"]));
    let wait_table = |what: &str, present: bool| {
        let start = Instant::now();
        while bridge_table().contains(what) != present {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{what} present={present} expected: {}",
                bridge_table()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    w.berth_ok(&["stop", "-t", "1", &guarded.victim]);
    wait_table(&victim_veth, false);
    let (status, body) = w.api(
        "POST",
        &format!("/containers/{}/start", guarded.victim),
        None,
    );
    assert_eq!(status, 204, "start: {body}");
    w.wait_running(&guarded.victim);
    wait_table(&victim_veth, true);
    w.berth_ok(&["network", "connect", "guarded", &open.attacker]);
    let joined = veth(&open.attacker, "guarded");
    wait_table(&joined, true);
    let check = w.system_check(&[]);
    assert!(
        check.status.success() && common::stdout(&check).contains("in sync"),
        "system check after connect: {}",
        show(&check)
    );
    w.berth_ok(&["network", "disconnect", "guarded", &open.attacker]);
    wait_table(&joined, false);

    // The elements go with the containers; the tables stay in sync.
    for c in [&guarded.victim, &guarded.attacker] {
        w.berth_ok(&["rm", "-f", c]);
    }
    let table =
        common::stdout(&w.ns_exec(&w.host_ns, &["nft", "list", "table", "bridge", "berth"]));
    assert!(!table.contains("container victim201"), "{table}");
    let check = w.system_check(&[]);
    assert!(
        check.status.success() && common::stdout(&check).contains("in sync"),
        "system check after removal: {}",
        show(&check)
    );
}

/// Measures: `berth run --rm true` on a guarded network against one with
/// `allow_spoofing=true` (no anti-spoofing elements, so no nft transaction at start), in one
/// run, alternating; prints the medians. The bound is loose on purpose (a shared CI machine);
/// the printed numbers are what docs/SECURITY.md reports.
#[test]
fn start_latency_with_and_without_the_guard() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.203.0.0/24", "g"]);
    w.berth_ok(&[
        "network",
        "create",
        "--subnet",
        "10.204.0.0/24",
        "-o",
        "berth.network.allow_spoofing=true",
        "o",
    ]);
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..24 {
        for (k, net) in ["g", "o"].iter().enumerate() {
            let t = Instant::now();
            w.berth_ok(&["run", "--rm", "--network", net, "true"]);
            if i >= 4 {
                times[k].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (g, o) = (median(&mut times[0]), median(&mut times[1]));
    eprintln!("BENCH run --rm true median: guarded {g:.2} ms, allow_spoofing {o:.2} ms (20 each)");
    assert!(
        g < o + 25.0,
        "anti-spoofing made starts much slower: {g:.2} ms vs {o:.2} ms"
    );
}
