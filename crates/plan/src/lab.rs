//! `berth lab`: the seed (`docker-networking-deep-dive.md`) turned into the step-by-step lab it
//! offers at its end — "try creating your own net namespaces and veth pairs manually — and then
//! compare with what Docker does under the hood".
//!
//! Nine lessons, one per section 1–9 of the seed. Each is data: the seed's idea, the commands a
//! learner types (run in the lab's *hand-made host*, a network namespace), the checks that prove
//! the result with real packets, and berth's side of the same thing (commands against a private
//! berthd running in a second namespace, the *berth host*, plus observations shown side by side).
//! This module only describes and renders; the CLI (`berth lab`) executes.
//!
//! # The sandbox
//!
//! Every name the lab creates starts with a prefix `P` (`blab` unless told otherwise), so the
//! lab finds — and `berth lab --clean` removes — exactly what it made:
//!
//! | namespace | role |
//! |---|---|
//! | `P-host` | the hand-made host: every lesson command runs here (`nsenter --net=/run/netns/P-host sh -c …`) |
//! | `P-out` | "the internet": joined to `P-host` by veth `uplink` (198.18.0.1) / `lan` (198.18.0.2); a server on 198.18.0.2:9000 answers every client with the address it sees |
//! | `P-red`, `P-blue`, `P-none` | the "containers" the lessons build by hand |
//! | `P-host2`, `P-lan` | lesson 9: a second host and the LAN between them |
//! | `P-bhost` | berth's host: a private berthd runs here (its own state dir and socket) |
//! | `P-bout` | the outside of berth's host (198.18.1.1 / 198.18.1.2, the same server on :9000) |
//! | `P-c1`, `P-c2`, `P-clan` | lesson 9, berth's side: two berth hosts (berthd each) on a LAN with etcd |
//!
//! In commands, `{P}` stands for the prefix and `{BERTH}` for the absolute path of the `berth`
//! binary (containers run it as their server: they see the host's filesystem, not its `PATH`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The default name prefix of everything the lab creates.
pub const DEFAULT_PREFIX: &str = "blab";
/// The port of the server in the outside namespaces.
pub const OUTSIDE_PORT: u16 = 9000;

/// What a check expects of its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Exit status 0 and, when not empty, this text in the output.
    Succeeds(&'static str),
    /// A non-zero exit status (a packet that must not get through).
    Fails,
}

/// A check of the learner's (or berth's) result: a command, usually sending real packets, run
/// inside a namespace of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What it proves, in words.
    pub what: &'static str,
    /// The namespace it runs in (a template: `{P}-red`).
    pub ns: &'static str,
    /// The command (a template).
    pub cmd: &'static str,
    /// The expected outcome.
    pub expect: Expect,
}

/// A command of a lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The command line (a template), as the learner types it.
    pub cmd: &'static str,
    /// Whether it keeps running (a server): started in the background, shown with ` &`.
    pub background: bool,
}

/// One aspect shown side by side: the hand-made host's view and berth's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Compare {
    /// What is compared.
    pub what: &'static str,
    /// The command in the hand-made host (`P-host`); empty when there is nothing to compare.
    pub hand: &'static str,
    /// The command in berth's host (`P-bhost`).
    pub berth: &'static str,
}

/// A lesson: one section of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lesson {
    /// 1–9, the seed's section.
    pub n: u8,
    /// Short title.
    pub title: &'static str,
    /// The seed's section heading.
    pub seed_section: &'static str,
    /// The seed's words this lesson is about (quoted).
    pub seed_quote: &'static str,
    /// What the learner does and sees, in a few lines.
    pub idea: &'static str,
    /// Commands that bring the hand-made host to the lesson's starting point (earlier lessons'
    /// results), run quietly before the lesson.
    pub setup: &'static [&'static [Step]],
    /// The lesson's commands.
    pub steps: &'static [Step],
    /// Checks of the hand-made result, with real packets.
    pub checks: &'static [Check],
    /// berth's side: commands run in berth's host (`berth` talks to the lab's private berthd).
    pub berth_steps: &'static [Step],
    /// Checks of berth's result, with real packets.
    pub berth_checks: &'static [Check],
    /// Side-by-side observations.
    pub compare: &'static [Compare],
    /// What to notice; where berth differs from Docker.
    pub notes: &'static str,
    /// berth's side runs on a cluster: two berth hosts `P-c1` and `P-c2` (each its berthd, with
    /// `--cluster-store`) on a LAN `P-clan` where etcd runs; its steps run in `P-c1`, and
    /// `$BERTH_C2` names host 2's socket.
    pub cluster: bool,
}

const fn run(cmd: &'static str) -> Step {
    Step {
        cmd,
        background: false,
    }
}

const fn bg(cmd: &'static str) -> Step {
    Step {
        cmd,
        background: true,
    }
}

const fn ok(what: &'static str, ns: &'static str, cmd: &'static str, out: &'static str) -> Check {
    Check {
        what,
        ns,
        cmd,
        expect: Expect::Succeeds(out),
    }
}

const fn fails(what: &'static str, ns: &'static str, cmd: &'static str) -> Check {
    Check {
        what,
        ns,
        cmd,
        expect: Expect::Fails,
    }
}

const fn cmp(what: &'static str, hand: &'static str, berth: &'static str) -> Compare {
    Compare { what, hand, berth }
}

// --- the hand-made building blocks, shared by later lessons' setup --------------------------

const RED_ONLY: &[Step] = &[
    run("ip netns add {P}-red"),
    run("ip -n {P}-red link set lo up"),
];

const RED_BLUE: &[Step] = &[
    run("ip netns add {P}-red"),
    run("ip -n {P}-red link set lo up"),
    run("ip netns add {P}-blue"),
    run("ip -n {P}-blue link set lo up"),
];

/// Lesson 3's commands: a bridge, two "containers" on it, forwarding and masquerade.
const BRIDGE: &[Step] = &[
    run("ip link add br0 type bridge"),
    run("ip addr add 10.0.0.1/24 dev br0"),
    run("ip link set br0 up"),
    run("ip link add veth-red type veth peer name eth0 netns {P}-red"),
    run("ip link set veth-red master br0 up"),
    run("ip -n {P}-red addr add 10.0.0.2/24 dev eth0"),
    run("ip -n {P}-red link set eth0 up"),
    run("ip -n {P}-red route add default via 10.0.0.1"),
    run("ip link add veth-blue type veth peer name eth0 netns {P}-blue"),
    run("ip link set veth-blue master br0 up"),
    run("ip -n {P}-blue addr add 10.0.0.3/24 dev eth0"),
    run("ip -n {P}-blue link set eth0 up"),
    run("ip -n {P}-blue route add default via 10.0.0.1"),
    run("sysctl -w net.ipv4.ip_forward=1"),
    run("nft add table ip lab"),
    run("nft add chain ip lab postrouting '{ type nat hook postrouting priority srcnat; }'"),
    run("nft add rule ip lab postrouting ip saddr 10.0.0.0/24 oifname uplink masquerade"),
];

/// Lesson 4's commands: a server in red, published on the hand-made host's port 8080.
const PUBLISH: &[Step] = &[
    bg("ip netns exec {P}-red berth lab serve 80"),
    run("nft add chain ip lab prerouting '{ type nat hook prerouting priority dstnat; }'"),
    run("nft add rule ip lab prerouting iifname uplink tcp dport 8080 dnat to 10.0.0.2:80"),
];

/// berth's side of lessons 3–8: one network, red and blue on it.
const BERTH_NET: Step = run("berth network create --subnet 10.1.0.0/24 lab");
const BERTH_RED: Step = run("berth run -d --name red --network lab --ip 10.1.0.2 sleep 600");
const BERTH_BLUE: Step = run("berth run -d --name blue --network lab --ip 10.1.0.3 sleep 600");
const BERTH_WEB: Step =
    run("berth run -d --name web --network lab --ip 10.1.0.2 -p 8080:80 {BERTH} lab serve 80");

/// Docker's chains from the seed's §8 and berth's counterparts (`docs/FIREWALL.md`).
pub const CHAIN_MAP: &[(&str, &str)] = &[
    (
        "DOCKER-USER (filter)",
        "chain `user` of `table inet berth`: yours, jumped to first from `forward`, never edited by berth",
    ),
    (
        "DOCKER (nat)",
        "chains `prerouting` (traffic arriving) and `output` (the host's own connections): DNAT through the maps `publish4`, `publish4_any`, `publish6`, `publish6_any`, one element per published port, and their `_runs` maps, one element per run of 32+ ports published to the same container ports, and their `_runs` maps, one element per run of 32+ ports published to the same container ports",
    ),
    (
        "DOCKER (filter)",
        "chain `forward`, rule `oifname @bridges ct status dnat accept`: published ports get through",
    ),
    (
        "DOCKER-ISOLATION-STAGE-1/-2",
        "chain `forward`, rule `iifname @bridges oifname @bridges drop` (one rule, set `bridges`); `iifname @internal drop` / `oifname @internal drop` for --internal",
    ),
    (
        "POSTROUTING MASQUERADE",
        "chain `postrouting`: `ip saddr @masq4 oifname != @bridges masquerade`",
    ),
    (
        "DOCKER-INGRESS / DOCKER-ROUTER (swarm)",
        "none: berth has no routing mesh; an overlay network's `-p` publishes on the container's own host through the same `publish*` maps",
    ),
];

/// The nine lessons, in the seed's order.
pub const LESSONS: &[Lesson] = &[
    Lesson {
        n: 1,
        title: "a network namespace by hand",
        seed_section: "1. What Is a Network Namespace?",
        seed_quote: "A network namespace is an isolated copy of all network-related constructs: \
            interfaces, IP addresses and routing tables, ports, sockets, ARP tables, firewall rules.",
        idea: "Create a namespace, look inside (only a loopback, down), bring the loopback up and \
            ping it. Nothing else is reachable: the namespace has no other interface and no route.",
        setup: &[],
        steps: &[
            run("ip netns add {P}-red"),
            run("ip netns exec {P}-red ip -br link"),
            run("ip -n {P}-red link set lo up"),
            run("ip netns exec {P}-red ping -c1 -W1 127.0.0.1"),
            run("ip -br link"),
        ],
        checks: &[
            ok(
                "red has exactly one interface, its loopback",
                "{P}-red",
                "test \"$(ip -o link show | wc -l)\" = 1 && ip -o link show lo",
                "lo",
            ),
            ok(
                "red answers itself on 127.0.0.1 (its own loopback is up)",
                "{P}-red",
                "ping -c1 -W1 127.0.0.1",
                "1 received",
            ),
            fails(
                "red cannot reach the host's 198.18.0.1: it has no route, no link",
                "{P}-red",
                "ping -c1 -W1 198.18.0.1",
            ),
        ],
        berth_steps: &[run("berth run --rm --network none ip -br link")],
        berth_checks: &[fails(
            "a --network none container reaches nothing",
            "{P}-bhost",
            "berth run --rm --network none ping -c1 -W1 198.18.1.2",
        )],
        compare: &[cmp(
            "inside the namespace",
            "ip netns exec {P}-red ip -br link",
            "berth run --rm --network none ip -br link",
        )],
        notes: "Every berth container gets a namespace like red; with --network none that is all \
            it gets (lesson 5).",
        cluster: false,
    },
    Lesson {
        n: 2,
        title: "a veth pair",
        seed_section: "2. veth Pairs — The Tunnel Between Namespaces",
        seed_quote: "A veth pair acts like two ends of a virtual cable. Packets entering one end \
            come out the other.",
        idea: "Create a veth pair in the host, move one end into red and the other into blue, \
            address both ends and ping across the cable.",
        setup: &[RED_ONLY],
        steps: &[
            run("ip netns add {P}-blue"),
            run("ip link add veth-red type veth peer name veth-blue"),
            run("ip link set veth-red netns {P}-red"),
            run("ip link set veth-blue netns {P}-blue"),
            run("ip -n {P}-red addr add 10.0.0.1/24 dev veth-red"),
            run("ip -n {P}-blue addr add 10.0.0.2/24 dev veth-blue"),
            run("ip -n {P}-red link set veth-red up"),
            run("ip -n {P}-blue link set veth-blue up"),
            run("ip netns exec {P}-red ping -c1 -W1 10.0.0.2"),
        ],
        checks: &[
            ok(
                "red reaches blue through the cable",
                "{P}-red",
                "ping -c1 -W1 10.0.0.2",
                "1 received",
            ),
            ok(
                "blue reaches red back",
                "{P}-blue",
                "ping -c1 -W1 10.0.0.1",
                "1 received",
            ),
            ok(
                "red's end is a veth",
                "{P}-red",
                "ip -d link show veth-red",
                "veth",
            ),
        ],
        berth_steps: &[BERTH_NET, BERTH_RED],
        berth_checks: &[ok(
            "the container reaches its gateway through its veth",
            "{P}-bhost",
            "berth exec red ping -c1 -W1 10.1.0.1",
            "1 received",
        )],
        compare: &[
            cmp(
                "the namespace's end",
                "ip netns exec {P}-red ip -br addr show veth-red",
                "berth exec red ip -br addr show eth0",
            ),
            cmp(
                "the cable's other end: blue's by hand, the host's in berth",
                "ip netns exec {P}-blue ip -br link show type veth",
                "ip -br link show type veth",
            ),
        ],
        notes: "berth names the host end vb + 12 hex of the endpoint id (not Docker's random \
            vethXXXX), so a restarted berthd recognises its own links; the container end is eth0.",
        cluster: false,
    },
    Lesson {
        n: 3,
        title: "a bridge, and NAT to the outside",
        seed_section: "3. Docker's Default Bridge Network",
        seed_quote: "A Linux bridge acts like a virtual switch. The host attaches veth ends from \
            containers to docker0. IP forwarding and NAT allow containers to talk out to external \
            networks.",
        idea: "Build docker0 by hand: a bridge with the gateway address, a veth per container \
            plugged into it, a default route in each container, forwarding on and a masquerade \
            rule. red then reaches blue (switched) and the outside server, which sees the host's \
            address (NATed).",
        setup: &[RED_BLUE],
        steps: BRIDGE,
        checks: &[
            ok(
                "red reaches blue through the bridge",
                "{P}-red",
                "ping -c1 -W1 10.0.0.3",
                "1 received",
            ),
            ok(
                "red reaches the outside server, which sees the host's address (masquerade)",
                "{P}-red",
                "berth lab probe 198.18.0.2:9000",
                "you are 198.18.0.1",
            ),
        ],
        berth_steps: &[BERTH_NET, BERTH_RED, BERTH_BLUE],
        berth_checks: &[
            ok(
                "red reaches blue through berth's bridge",
                "{P}-bhost",
                "berth exec red ping -c1 -W1 10.1.0.3",
                "1 received",
            ),
            ok(
                "red reaches the outside server, masqueraded to the host's address",
                "{P}-bhost",
                "berth exec red {BERTH} lab probe 198.18.1.2:9000",
                "you are 198.18.1.1",
            ),
        ],
        compare: &[
            cmp(
                "the bridge",
                "ip -br addr show type bridge",
                "ip -br addr show type bridge",
            ),
            cmp("its ports", "bridge link", "bridge link"),
            cmp(
                "the masquerade",
                "nft list table ip lab",
                "nft list chain inet berth postrouting; nft list set inet berth masq4",
            ),
        ],
        notes: "berth's bridge is berth-<9 hex of the network id>; the masquerade is one static \
            rule reading set masq4, and a network adds one element (comment \"network lab\").",
        cluster: false,
    },
    Lesson {
        n: 4,
        title: "a published port (DNAT)",
        seed_section: "4. Port Mapping / NAT (Host ↔ Container)",
        seed_quote: "docker run -p 8080:80 nginx — through iptables PREROUTING rules, incoming \
            traffic to host:8080 is redirected to the container's :80.",
        idea: "Start a server in red on port 80 and add the DNAT rule that sends the host's port \
            8080 to it. The outside client connects to the host's 198.18.0.1:8080 and red's \
            server answers; it sees the client's own address (DNAT keeps the source).",
        setup: &[RED_BLUE, BRIDGE],
        steps: &[
            PUBLISH[0],
            PUBLISH[1],
            PUBLISH[2],
            run("ip netns exec {P}-out berth lab probe 198.18.0.1:8080"),
        ],
        checks: &[ok(
            "the outside reaches red's server through the host's port 8080",
            "{P}-out",
            "berth lab probe 198.18.0.1:8080",
            "you are 198.18.0.2",
        )],
        berth_steps: &[BERTH_NET, BERTH_WEB, run("berth port web")],
        berth_checks: &[ok(
            "the outside reaches web's server through berth's host port 8080",
            "{P}-bout",
            "berth lab probe 198.18.1.1:8080",
            "you are 198.18.1.2",
        )],
        compare: &[
            cmp(
                "the DNAT",
                "nft list chain ip lab prerouting",
                "nft list chain inet berth prerouting; nft list map inet berth publish4_any",
            ),
            cmp(
                "who listens on 8080",
                "ss -Hltn sport = :8080",
                "ss -Hltn sport = :8080",
            ),
        ],
        notes: "The hand-made host has no process on port 8080: the rule does it all. Nor has \
            berth one per port (no docker-proxy); the listener on [::1]:8080 is berthd's relay for \
            IPv6 loopback, which NAT cannot reach (docs/PORTS.md). berth's port is one element of \
            map publish4_any with a comment naming the container and port.",
        cluster: false,
    },
    Lesson {
        n: 5,
        title: "the network modes: none, host, bridge",
        seed_section: "5. Network Modes in Docker & Their Differences",
        seed_quote: "bridge: own namespace, host bridge, NAT. host: shares the host network \
            namespace (no veth, no NAT). none: a namespace with only loopback.",
        idea: "none is a namespace with nothing but lo (lesson 1). host mode is a process with no \
            namespace of its own: a server in the host itself, reached directly with no NAT. \
            bridge is lesson 3: the outside sees the host's address.",
        setup: &[RED_BLUE, BRIDGE],
        steps: &[
            run("ip netns add {P}-none"),
            run("ip -n {P}-none link set lo up"),
            run("ip netns exec {P}-none ip -br addr"),
            bg("berth lab serve 8081"),
            run("ip netns exec {P}-out berth lab probe 198.18.0.1:8081"),
            run("ip netns exec {P}-red berth lab probe 198.18.0.2:9000"),
        ],
        checks: &[
            fails(
                "none reaches nothing",
                "{P}-none",
                "ping -c1 -W1 198.18.0.2",
            ),
            ok(
                "host mode: the outside reaches a server of the host directly",
                "{P}-out",
                "berth lab probe 198.18.0.1:8081",
                "you are 198.18.0.2",
            ),
            ok(
                "bridge mode: red goes out masqueraded",
                "{P}-red",
                "berth lab probe 198.18.0.2:9000",
                "you are 198.18.0.1",
            ),
        ],
        berth_steps: &[
            BERTH_NET,
            BERTH_RED,
            run("berth run -d --name hostmode --network host {BERTH} lab serve 8081"),
        ],
        berth_checks: &[
            fails(
                "--network none reaches nothing",
                "{P}-bhost",
                "berth run --rm --network none ping -c1 -W1 198.18.1.2",
            ),
            ok(
                "--network host: the outside reaches the container's server on the host's address",
                "{P}-bout",
                "berth lab probe 198.18.1.1:8081",
                "you are 198.18.1.2",
            ),
            ok(
                "--network lab (bridge): red goes out masqueraded",
                "{P}-bhost",
                "berth exec red {BERTH} lab probe 198.18.1.2:9000",
                "you are 198.18.1.1",
            ),
        ],
        compare: &[
            cmp(
                "none",
                "ip netns exec {P}-none ip -br addr",
                "berth run --rm --network none ip -br addr",
            ),
            cmp(
                "host",
                "ip -br addr show uplink",
                "berth run --rm --network host ip -br addr show uplink",
            ),
            cmp(
                "bridge",
                "ip netns exec {P}-red ip -br addr show eth0",
                "berth exec red ip -br addr show eth0",
            ),
        ],
        notes: "overlay (lesson 9) and macvlan (berth network create -d macvlan -o parent=…, \
            docs/CLI.md) are the seed's other modes.",
        cluster: false,
    },
    Lesson {
        n: 6,
        title: "the packet journey, traced",
        seed_section: "6. Walkthrough: Packet Journey (Host → Container)",
        seed_quote: "Client → Host:8080; PREROUTING DNAT → container IP:80; the packet appears \
            on docker0; forwarded to the veth; arrives at the container's eth0; the response \
            goes the reverse path, SNAT / MASQUERADE applied.",
        idea: "Follow lesson 4's flow hop by hop: the routing decision after DNAT, the bridge's \
            forwarding table, the conntrack entry. Then let berth trace the same flow from the \
            kernel's own trace events: every hop, the rule that decided it and why.",
        setup: &[RED_BLUE, BRIDGE, PUBLISH],
        steps: &[
            run("ip netns exec {P}-out berth lab probe 198.18.0.1:8080"),
            run("ip route get 10.0.0.2 from 198.18.0.2 iif uplink"),
            run("bridge fdb show br br0 dynamic"),
            run("ip neigh show dev br0"),
        ],
        checks: &[ok(
            "the outside reaches red's server through port 8080",
            "{P}-out",
            "berth lab probe 198.18.0.1:8080",
            "you are 198.18.0.2",
        )],
        berth_steps: &[
            BERTH_NET,
            BERTH_WEB,
            run("berth trace --from {P}-bout --to 198.18.1.1:8080"),
        ],
        berth_checks: &[ok(
            "berth trace follows the flow to web's server and back",
            "{P}-bhost",
            "berth trace --from {P}-bout --to 198.18.1.1:8080",
            "delivered to 10.1.0.2:80",
        )],
        compare: &[cmp(
            "the route after DNAT",
            "ip route get 10.0.0.2 from 198.18.0.2 iif uplink",
            "ip route get 10.1.0.2 from 198.18.1.2 iif uplink",
        )],
        notes: "berth trace --format mermaid prints the journey as the seed's sequence diagram.",
        cluster: false,
    },
    Lesson {
        n: 7,
        title: "DNS and names",
        seed_section: "7. DNS & Container Name Resolution",
        seed_quote: "Each container gets an /etc/hosts and /etc/resolv.conf. Docker injects \
            entries for container names in the same network.",
        idea: "Give red its own /etc/hosts naming blue (ip netns exec mounts /etc/netns/NAME/* \
            over /etc for the command it runs), then ping blue by name. berth writes each \
            container's files and answers names on the network's gateway.",
        setup: &[RED_BLUE, BRIDGE],
        steps: &[
            run("mkdir -p /etc/netns/{P}-red"),
            run("printf '127.0.0.1 localhost\\n10.0.0.3 blue\\n' > /etc/netns/{P}-red/hosts"),
            run("ip netns exec {P}-red getent ahostsv4 blue"),
            run("ip netns exec {P}-red ping -4 -n -c1 -W1 blue"),
        ],
        checks: &[
            ok(
                "red resolves blue (ip netns exec mounts red's /etc/hosts)",
                "{P}-host",
                "ip netns exec {P}-red getent ahostsv4 blue",
                "10.0.0.3",
            ),
            ok(
                "red reaches blue by name",
                "{P}-host",
                "ip netns exec {P}-red ping -4 -n -c1 -W1 blue",
                "1 received",
            ),
        ],
        berth_steps: &[BERTH_NET, BERTH_RED, BERTH_BLUE],
        berth_checks: &[
            ok(
                "red resolves blue through berth's resolver",
                "{P}-bhost",
                "berth exec red getent hosts blue",
                "10.1.0.3",
            ),
            ok(
                "red reaches blue by name",
                "{P}-bhost",
                "berth exec red ping -n -c1 -W1 blue",
                "1 received",
            ),
        ],
        compare: &[
            cmp(
                "/etc/hosts",
                "ip netns exec {P}-red cat /etc/hosts",
                "berth exec red cat /etc/hosts",
            ),
            cmp(
                "/etc/resolv.conf",
                "ip netns exec {P}-red cat /etc/resolv.conf",
                "berth exec red cat /etc/resolv.conf",
            ),
        ],
        notes: "berth answers on the gateway (10.1.0.1:53), not on Docker's 127.0.0.11, and only \
            among containers that share a network (docs/DNS.md).",
        cluster: false,
    },
    Lesson {
        n: 8,
        title: "the firewall chains",
        seed_section: "8. Advanced: iptables Chains for Docker Networking",
        seed_quote: "DOCKER-USER — allows user to insert custom rules before Docker's rules; \
            DOCKER — main chain for NAT forwarding; DOCKER-ISOLATION-STAGE-1/-2 — isolate \
            multiple bridge networks; DOCKER-INGRESS — swarm.",
        idea: "Build a forward chain that jumps first to a chain of your own — DOCKER-USER's idea \
            — and drop blue's traffic there: red still goes out, blue no longer does. Then do the \
            same in berth's chain user and watch berth trace name the rule.",
        setup: &[RED_BLUE, BRIDGE],
        steps: &[
            run("nft add table inet lab"),
            run("nft add chain inet lab user"),
            run(
                "nft add chain inet lab forward '{ type filter hook forward priority filter; policy accept; }'",
            ),
            run("nft add rule inet lab forward jump user"),
            run("nft add rule inet lab user ip saddr 10.0.0.3 counter drop"),
            run("nft list table inet lab"),
        ],
        checks: &[
            ok(
                "red still goes out",
                "{P}-red",
                "berth lab probe 198.18.0.2:9000",
                "you are 198.18.0.1",
            ),
            fails(
                "blue is dropped by your chain",
                "{P}-blue",
                "berth lab probe 198.18.0.2:9000",
            ),
        ],
        berth_steps: &[
            BERTH_NET,
            BERTH_RED,
            BERTH_BLUE,
            run("nft add rule inet berth user ip saddr 10.1.0.3 counter drop"),
            run("nft list chain inet berth forward"),
        ],
        berth_checks: &[
            ok(
                "red still goes out",
                "{P}-bhost",
                "berth exec red {BERTH} lab probe 198.18.1.2:9000",
                "you are 198.18.1.1",
            ),
            fails(
                "blue is dropped by chain user",
                "{P}-bhost",
                "berth exec blue {BERTH} lab probe 198.18.1.2:9000",
            ),
            ok(
                "berth trace names the drop in chain user",
                "{P}-bhost",
                "berth trace blue --to 198.18.1.2:9000 --timeout 2; test $? = 1",
                "user",
            ),
        ],
        compare: &[cmp(
            "your chain",
            "nft list chain inet lab user",
            "nft list chain inet berth user",
        )],
        notes: "berth writes nftables only, in table inet berth; Docker's chains map to it as \
            in the table that follows (also in docs/FIREWALL.md).",
        cluster: false,
    },
    Lesson {
        n: 9,
        title: "an overlay between two hosts (VXLAN)",
        seed_section: "9. Overlay / Multi-Host Networking (Brief)",
        seed_quote: "Docker runs a vxlan or Geneve overlay. Each host has a bridge / veth inside \
            namespace, and overlay encapsulates container traffic across hosts.",
        idea: "Two hosts on a LAN (a bridge in a third namespace). Each host gets a bridge with a \
            VXLAN port (VNI 42, UDP 4789) and a container; a forwarding entry sends unknown \
            frames to the other host. red on host 1 then pings blue on host 2 in one L2 network.",
        setup: &[RED_BLUE],
        steps: &[
            run("ip netns add {P}-lan"),
            run("ip netns add {P}-host2"),
            run("ip -n {P}-host2 link set lo up"),
            run("ip -n {P}-lan link add lan0 type bridge"),
            run("ip -n {P}-lan link set lan0 up"),
            run("ip -n {P}-lan link add port1 type veth peer name eth1 netns {P}-host"),
            run("ip -n {P}-lan link add port2 type veth peer name eth1 netns {P}-host2"),
            run("ip -n {P}-lan link set port1 master lan0 up"),
            run("ip -n {P}-lan link set port2 master lan0 up"),
            run("ip addr add 192.168.50.1/24 dev eth1"),
            run("ip link set eth1 up"),
            run("ip -n {P}-host2 addr add 192.168.50.2/24 dev eth1"),
            run("ip -n {P}-host2 link set eth1 up"),
            run("ip link add br0 type bridge"),
            run("ip link set br0 up"),
            run("ip link add vxlan42 type vxlan id 42 local 192.168.50.1 dev eth1 dstport 4789"),
            run("bridge fdb append 00:00:00:00:00:00 dev vxlan42 dst 192.168.50.2"),
            run("ip link set vxlan42 master br0 up"),
            run("ip link add veth-red type veth peer name eth0 netns {P}-red"),
            run("ip link set veth-red master br0 up"),
            run("ip -n {P}-red addr add 10.0.9.2/24 dev eth0"),
            run("ip -n {P}-red link set eth0 up"),
            run("ip -n {P}-host2 link add br0 type bridge"),
            run("ip -n {P}-host2 link set br0 up"),
            run(
                "ip -n {P}-host2 link add vxlan42 type vxlan id 42 local 192.168.50.2 dev eth1 dstport 4789",
            ),
            run(
                "ip netns exec {P}-host2 bridge fdb append 00:00:00:00:00:00 dev vxlan42 dst 192.168.50.1",
            ),
            run("ip -n {P}-host2 link set vxlan42 master br0 up"),
            run("ip -n {P}-host2 link add veth-blue type veth peer name eth0 netns {P}-blue"),
            run("ip -n {P}-host2 link set veth-blue master br0 up"),
            run("ip -n {P}-blue addr add 10.0.9.3/24 dev eth0"),
            run("ip -n {P}-blue link set eth0 up"),
            run("ip netns exec {P}-red ping -c1 -W1 10.0.9.3"),
            run("bridge fdb show dev vxlan42"),
        ],
        checks: &[
            ok(
                "red on host 1 reaches blue on host 2 through the VXLAN",
                "{P}-red",
                "ping -c1 -W1 10.0.9.3",
                "1 received",
            ),
            ok(
                "host 1's VXLAN port learned blue's MAC behind host 2",
                "{P}-host",
                "ping -c1 -W1 -q 10.0.9.3 >/dev/null 2>&1; bridge fdb show dev vxlan42 | grep -v ^00:00:00:00:00:00",
                "dst 192.168.50.2",
            ),
            ok(
                "the packets crossed the LAN encapsulated (VXLAN port counters moved)",
                "{P}-host",
                "ip -s link show vxlan42 | awk '/TX:/ { getline; exit !($2 > 0) }'",
                "",
            ),
        ],
        berth_steps: &[
            run("berth node ls"),
            run("berth network create -d overlay --subnet 10.50.0.0/24 app"),
            run("berth run -d --name red --network app --ip 10.50.0.2 sleep 600"),
            run("BERTH_HOST=$BERTH_C2 berth run -d --name blue --network app --ip 10.50.0.3 sleep 600"),
        ],
        berth_checks: &[
            ok(
                "red on berth host 1 reaches blue on berth host 2 across the overlay",
                "{P}-c1",
                "berth exec red ping -c1 -W1 10.50.0.3",
                "1 received",
            ),
            ok(
                "red resolves blue, a container of the other host",
                "{P}-c1",
                "berth exec red getent hosts blue",
                "10.50.0.3",
            ),
        ],
        compare: &[
            cmp(
                "the VXLAN port",
                "ip -d link show vxlan42",
                "for n in \"$BERTH_NETNS\"/ov-*; do nsenter --net=\"$n\" ip -d link show type vxlan; done",
            ),
            cmp(
                "where frames for the other host go",
                "bridge fdb show dev vxlan42",
                "for n in \"$BERTH_NETNS\"/ov-*; do nsenter --net=\"$n\" sh -c 'bridge fdb show | grep bvx-; ip neigh show nud permanent'; done",
            ),
        ],
        notes: "berth's side runs on two berth hosts, {P}-c1 and {P}-c2, whose berthds share an \
            etcd (in the LAN namespace {P}-clan). On every host berth builds, in a network namespace \
            of the network's own (ov-<9 hex>, mounted under berthd's run directory, reached from \
            the host through the uplink bup-<9 hex>), the network's bridge \
            berth-<9 hex> with the gateway address and a VXLAN port bvx-<9 hex> (VNI from 4096, \
            UDP 4789, local = the advertised address, learning off, ARP proxy on, MTU 1450: the \
            underlay's 1500 − 50); for \
            every container on another host a static FDB entry (dst VTEP self permanent) and a \
            permanent neighbour entry, from etcd: no flooding and no default destination like the \
            00:00:00:00:00:00 entry built by hand (docs/OVERLAY.md).",
        cluster: true,
    },
];

/// The lesson numbered `n`.
pub fn lesson(n: u8) -> Option<&'static Lesson> {
    LESSONS.iter().find(|l| l.n == n)
}

/// Fills a template: `{P}` is the prefix, `{BERTH}` the path of the berth binary.
pub fn fill(template: &str, prefix: &str, berth: &str) -> String {
    template.replace("{P}", prefix).replace("{BERTH}", berth)
}

/// Every namespace the lab may create, for a prefix: the hand-made ones first, berth's last.
pub fn namespaces(prefix: &str) -> Vec<String> {
    [
        "host", "out", "red", "blue", "none", "host2", "lan", "bhost", "bout", "c1", "c2", "clan",
    ]
    .iter()
    .map(|s| format!("{prefix}-{s}"))
    .collect()
}

/// The namespaces of the hand-made side (reset before every lesson).
pub fn hand_namespaces(prefix: &str) -> Vec<String> {
    namespaces(prefix)
        .into_iter()
        .filter(|n| {
            !["-bhost", "-bout", "-c1", "-c2", "-clan"]
                .iter()
                .any(|s| n.ends_with(s))
        })
        .collect()
}

/// Whether a prefix is safe: short, lower-case letters, digits and `-` only (it becomes part of
/// namespace names and file names; a slash or a dot must never reach a path).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 16
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && prefix.as_bytes()[0].is_ascii_lowercase()
}

/// Whether `output` (with exit status `success`) meets `expect`.
pub fn expectation_met(expect: Expect, success: bool, output: &str) -> bool {
    match expect {
        Expect::Succeeds(text) => success && (text.is_empty() || output.contains(text)),
        Expect::Fails => !success,
    }
}

/// The learner's progress, kept in `progress.json` in the lab's state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Lessons whose checks passed.
    #[serde(default)]
    pub done: BTreeSet<u8>,
    /// The lesson last shown or run (what `--check` checks).
    #[serde(default)]
    pub current: Option<u8>,
}

impl Progress {
    /// The lesson `--next` goes to: the first one not done after the current one, else the
    /// first one not done at all; `None` when every lesson is done.
    pub fn next(&self) -> Option<u8> {
        let after = self.current.unwrap_or(0);
        LESSONS
            .iter()
            .map(|l| l.n)
            .find(|n| *n > after && !self.done.contains(n))
            .or_else(|| LESSONS.iter().map(|l| l.n).find(|n| !self.done.contains(n)))
    }
}

/// Renders a lesson's text part: the seed, the idea and the commands (as typed in `berth lab
/// shell`, the hand-made host), for a prefix and a berth path.
pub fn render_lesson(l: &Lesson, prefix: &str, berth: &str) -> String {
    let mut s = format!(
        "Lesson {}/{}: {}\nseed §{}\n  \"{}\"\n\n{}\n\n",
        l.n,
        LESSONS.len(),
        l.title,
        l.seed_section,
        squash(l.seed_quote),
        wrap(&squash(l.idea), 96)
    );
    s.push_str(&format!(
        "The sandbox: {prefix}-host is your host (uplink 198.18.0.1); {prefix}-out plays the \
         outside world (198.18.0.2, a server on :{OUTSIDE_PORT} that answers each client with \
         the address it sees).\n\n"
    ));
    if !l.setup.is_empty() {
        s.push_str(&format!(
            "Starting point ({} commands of earlier lessons, run for you).\n\n",
            l.setup.iter().map(|s| s.len()).sum::<usize>()
        ));
    }
    s.push_str(&format!(
        "Commands, in the hand-made host {prefix}-host (`berth lab shell`):\n"
    ));
    for st in l.steps {
        s.push_str(&format!("  {}\n", step_line(st, prefix, berth)));
    }
    if !l.berth_steps.is_empty() {
        s.push_str(&format!(
            "\nberth's side, in berth's host {prefix}-bhost (a private berthd):\n"
        ));
        for st in l.berth_steps {
            s.push_str(&format!("  {}\n", step_line(st, prefix, berth)));
        }
    }
    s
}

/// A step as printed: the filled command, with ` &` when it runs in the background.
pub fn step_line(st: &Step, prefix: &str, berth: &str) -> String {
    let c = fill(st.cmd, prefix, berth);
    if st.background {
        format!("{c} &")
    } else {
        c
    }
}

/// Docker's chains and berth's, as a text table (lesson 8, `docs/FIREWALL.md`).
pub fn render_chain_map() -> String {
    let w = CHAIN_MAP.iter().map(|(d, _)| d.len()).max().unwrap_or(0);
    let mut s = format!("{:w$}  berth\n", "Docker (seed §8)");
    for (d, b) in CHAIN_MAP {
        s.push_str(&format!("{d:w$}  {b}\n"));
    }
    s
}

/// Two outputs side by side under headings, when both fit in `width` columns; else one under
/// the other.
pub fn side_by_side(
    left_title: &str,
    left: &str,
    right_title: &str,
    right: &str,
    width: usize,
) -> String {
    // nft indents with tabs: expanded, so the columns line up.
    let (left, right) = (expand_tabs(left), expand_tabs(right));
    let (left, right) = (left.as_str(), right.as_str());
    let (lw, rw) = (columns(left_title, left), columns(right_title, right));
    if lw + 3 + rw > width {
        return format!(
            "{left_title}\n{}\n{right_title}\n{}\n",
            indent(left),
            indent(right)
        );
    }
    let l: Vec<&str> = std::iter::once(left_title).chain(left.lines()).collect();
    let r: Vec<&str> = std::iter::once(right_title).chain(right.lines()).collect();
    let mut s = String::new();
    for i in 0..l.len().max(r.len()) {
        let a = l.get(i).copied().unwrap_or("");
        let b = r.get(i).copied().unwrap_or("");
        let pad = lw - a.chars().count();
        let line = format!("{a}{} │ {b}", " ".repeat(pad));
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// Replaces tabs with spaces up to the next multiple of 8 columns.
fn expand_tabs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut col = 0;
    for c in text.chars() {
        match c {
            '\t' => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            '\n' => {
                out.push(c);
                col = 0;
            }
            _ => {
                out.push(c);
                col += 1;
            }
        }
    }
    out
}

/// The widest line of a title and its text, in characters.
fn columns(title: &str, text: &str) -> usize {
    text.lines()
        .chain(std::iter::once(title))
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collapses the runs of spaces the multi-line string literals leave.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Wraps text at word boundaries.
fn wrap(s: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in s.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + w.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out.push_str(&line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_lessons_follow_the_seeds_sections_in_order() {
        assert_eq!(LESSONS.len(), 9);
        for (i, l) in LESSONS.iter().enumerate() {
            assert_eq!(usize::from(l.n), i + 1);
            assert!(
                l.seed_section.starts_with(&format!("{}. ", l.n)),
                "lesson {} points to {}",
                l.n,
                l.seed_section
            );
            assert!(
                !l.steps.is_empty() && !l.checks.is_empty(),
                "lesson {}",
                l.n
            );
        }
        assert_eq!(
            lesson(3).map(|l| l.title),
            Some("a bridge, and NAT to the outside")
        );
        assert!(lesson(10).is_none());
    }

    /// Lesson 4 is lesson 3's result plus its own commands (its setup uses the same consts).
    #[test]
    fn later_lessons_start_from_earlier_results() {
        let l4: Vec<_> = lesson(4)
            .map(|l| l.steps)
            .unwrap_or_default()
            .iter()
            .take(3)
            .collect();
        assert_eq!(l4, PUBLISH.iter().collect::<Vec<_>>());
        assert_eq!(lesson(3).map(|l| l.steps), Some(BRIDGE));
        assert_eq!(lesson(4).map(|l| l.setup.concat().len()), Some(21));
    }

    /// Every namespace a lesson names is one the lab knows (and so removes), and every command
    /// that changes something names the hand-made host's or a lab namespace: nothing can reach
    /// the machine's own namespace, since every command runs inside `P-host`.
    #[test]
    fn every_namespace_named_is_the_labs() {
        let known = namespaces("P");
        for l in LESSONS {
            let all = l
                .setup
                .iter()
                .flat_map(|s| s.iter())
                .chain(l.steps)
                .chain(l.berth_steps)
                .map(|s| s.cmd)
                .chain(
                    l.checks
                        .iter()
                        .chain(l.berth_checks)
                        .flat_map(|c| [c.ns, c.cmd]),
                )
                .chain(l.compare.iter().flat_map(|c| [c.hand, c.berth]));
            for t in all {
                let filled = fill(t, "P", "/b");
                for word in filled.split_whitespace() {
                    if let Some(rest) = word.strip_prefix("P-") {
                        let name = format!("P-{}", rest.split('/').next().unwrap_or(rest));
                        assert!(
                            known.contains(&name),
                            "lesson {}: unknown {name} in {t}",
                            l.n
                        );
                    }
                }
                assert!(
                    !filled.contains("{P}") && !filled.contains("{BERTH}"),
                    "unfilled placeholder? {filled}"
                );
            }
        }
    }

    #[test]
    fn checks_send_real_packets_and_expect_both_ways() {
        for l in LESSONS {
            let packets = l
                .checks
                .iter()
                .filter(|c| c.cmd.contains("ping") || c.cmd.contains("lab probe"))
                .count();
            assert!(packets > 0, "lesson {} checks no packets", l.n);
        }
        assert!(LESSONS
            .iter()
            .any(|l| l.checks.iter().any(|c| c.expect == Expect::Fails)));
    }

    #[test]
    fn expectations() {
        assert!(expectation_met(
            Expect::Succeeds("1 received"),
            true,
            "1 packets transmitted, 1 received"
        ));
        assert!(!expectation_met(
            Expect::Succeeds("1 received"),
            true,
            "0 received"
        ));
        assert!(!expectation_met(Expect::Succeeds(""), false, ""));
        assert!(expectation_met(Expect::Succeeds(""), true, ""));
        assert!(expectation_met(Expect::Fails, false, "anything"));
        assert!(!expectation_met(Expect::Fails, true, ""));
    }

    #[test]
    fn progress_resumes_after_the_current_lesson() {
        let mut p = Progress::default();
        assert_eq!(p.next(), Some(1));
        p.done.insert(1);
        p.current = Some(1);
        assert_eq!(p.next(), Some(2));
        p.current = Some(4); // jumped ahead with `berth lab 4`, not passed
        assert_eq!(p.next(), Some(5));
        p.current = Some(9);
        assert_eq!(p.next(), Some(2), "wraps to the first lesson not done");
        p.done.extend(1..=9);
        assert_eq!(p.next(), None);
        let json = serde_json::to_string(&p).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Progress>(&json).ok(), Some(p));
        assert_eq!(
            serde_json::from_str::<Progress>("{}").ok(),
            Some(Progress::default())
        );
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("blab"));
        assert!(valid_prefix("blt123-4"));
        for bad in [
            "",
            "Blab",
            "a/b",
            "..",
            "a.b",
            "1ab",
            "a-very-long-prefix-x",
        ] {
            assert!(!valid_prefix(bad), "{bad}");
        }
        assert_eq!(hand_namespaces("x").len(), namespaces("x").len() - 5);
    }

    #[test]
    fn rendering() {
        let l = lesson(4).expect("lesson 4");
        let s = render_lesson(l, "blab", "/usr/bin/berth");
        assert!(s.starts_with("Lesson 4/9: a published port (DNAT)\nseed §4. Port Mapping"));
        assert!(s.contains("  ip netns exec blab-red berth lab serve 80 &\n"));
        assert!(s.contains("berth run -d --name web --network lab --ip 10.1.0.2 -p 8080:80 /usr/bin/berth lab serve 80"));
        assert!(s.contains("Starting point (21 commands"));
        let t = render_chain_map();
        for d in [
            "DOCKER-USER",
            "DOCKER-ISOLATION-STAGE-1/-2",
            "DOCKER-INGRESS",
            "`user`",
            "@bridges",
        ] {
            assert!(t.contains(d), "{d}");
        }
    }

    #[test]
    fn side_by_side_fits_or_stacks() {
        let s = side_by_side("hand", "a\nbb", "berth", "x", 40);
        assert_eq!(s, "hand │ berth\na    │ x\nbb   │\n");
        let s = side_by_side("hand", &"a".repeat(30), "berth", &"b".repeat(30), 40);
        assert_eq!(
            s,
            format!("hand\n  {}\nberth\n  {}\n", "a".repeat(30), "b".repeat(30))
        );
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("aa bb cc", 5), "aa bb\ncc");
        assert_eq!(expand_tabs("\ta\n12\tb"), "        a\n12      b");
        assert_eq!(squash("a \n   b"), "a b");
    }
}
