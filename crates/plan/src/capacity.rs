//! How full the host's finite resources are, before they run out: bridge ports per network,
//! addresses per subnet, the conntrack table. Pure: the daemon passes what it stores and what
//! it reads from `/proc`, and shows the result in `berth info` and `/metrics`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{ContainerSpec, NetworkSpec, SubnetSpec};

/// Ports one Linux bridge can hold: `BR_MAX_PORTS` is 1,024 port numbers, and number 0 is
/// never given to a port (`find_portno()` starts at 1). The 1,024th `RTM_NEWLINK` with this
/// bridge as master fails with `EXFULL`.
pub const BRIDGE_MAX_PORTS: u64 = 1023;

/// Share of a resource from which `berth info` warns (90 %).
pub const WARN_PERCENT: u64 = 90;

/// One subnet's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetUse {
    /// The subnet.
    pub subnet: String,
    /// Addresses held by containers of this host's store (created or running).
    pub used: u64,
    /// Addresses containers can get: the ip range (or the subnet) without the network,
    /// gateway, broadcast and auxiliary addresses; saturated at `u64::MAX` for IPv6.
    pub usable: u64,
}

/// One network's capacity on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkUse {
    /// Network name.
    pub network: String,
    /// Its driver.
    pub driver: String,
    /// Ports its bridge holds for running containers (and the VXLAN port of an overlay);
    /// `None` for networks without a bridge.
    pub bridge_ports: Option<u64>,
    /// Its subnets.
    pub subnets: Vec<SubnetUse>,
}

/// Addresses a container can get in `s`.
pub fn usable_addresses(s: &SubnetSpec) -> u64 {
    let range = s
        .ip_range
        .filter(|r| s.subnet.contains(r))
        .unwrap_or(s.subnet);
    let bits = u32::from(range.max_prefix_len() - range.prefix_len());
    let size: u128 = if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    };
    let mut reserved: BTreeSet<IpAddr> = BTreeSet::new();
    reserved.insert(s.subnet.network());
    reserved.insert(s.gateway);
    if s.subnet.addr().is_ipv4() {
        reserved.insert(s.subnet.broadcast());
    }
    reserved.extend(s.aux_addresses.values().copied());
    let taken = reserved.iter().filter(|a| range.contains(*a)).count() as u128;
    u64::try_from(size.saturating_sub(taken)).unwrap_or(u64::MAX)
}

/// The capacity of every network: `running(id)` says whether a container runs (its endpoints
/// are bridge ports then; every stored endpoint holds its address).
pub fn networks(
    nets: &[NetworkSpec],
    containers: &[ContainerSpec],
    running: &dyn Fn(&str) -> bool,
) -> Vec<NetworkUse> {
    nets.iter()
        .map(|n| {
            let eps = || {
                containers.iter().flat_map(move |c| {
                    c.endpoints
                        .iter()
                        .filter(move |e| e.network_id == n.id)
                        .map(move |e| (c, e))
                })
            };
            let bridge_ports = n.driver.has_bridge().then(|| {
                let veths = eps().filter(|(c, _)| running(&c.id)).count() as u64;
                let vxlan = u64::from(n.driver == crate::model::Driver::Overlay);
                veths + vxlan
            });
            let subnets = n
                .subnets
                .iter()
                .map(|s| SubnetUse {
                    subnet: s.subnet.to_string(),
                    used: eps()
                        .flat_map(|(_, e)| e.addrs.iter())
                        .filter(|a| s.subnet.contains(&a.addr()))
                        .count() as u64,
                    usable: usable_addresses(s),
                })
                .collect();
            NetworkUse {
                network: n.name.clone(),
                driver: n.driver.as_str().to_string(),
                bridge_ports,
                subnets,
            }
        })
        .collect()
}

/// Whether `used` of `max` is at or past [`WARN_PERCENT`].
fn nearly_full(used: u64, max: u64) -> bool {
    max > 0 && u128::from(used) * 100 >= u128::from(max) * u128::from(WARN_PERCENT)
}

/// Warnings for what is nearly full: each names the resource, the figures and what to do.
/// `conntrack` is (entries, table size) of berthd's namespace, when the table exists.
pub fn warnings(nets: &[NetworkUse], conntrack: Option<(u64, u64)>) -> Vec<String> {
    let mut out = Vec::new();
    for n in nets {
        if let Some(p) = n.bridge_ports.filter(|p| nearly_full(*p, BRIDGE_MAX_PORTS)) {
            out.push(format!(
                "network {:?}: its bridge holds {p} of the {BRIDGE_MAX_PORTS} ports a Linux \
                 bridge can hold (BR_MAX_PORTS); start further containers on another network",
                n.network
            ));
        }
        for s in &n.subnets {
            if nearly_full(s.used, s.usable) {
                out.push(format!(
                    "network {:?}: {} of the {} addresses of {} are taken; create the network \
                     with a larger --subnet or --ip-range, or use another network",
                    n.network, s.used, s.usable, s.subnet
                ));
            }
        }
    }
    if let Some((entries, max)) = conntrack.filter(|(e, m)| nearly_full(*e, *m)) {
        out.push(format!(
            "the conntrack table holds {entries} of {max} entries: new connections through \
             NAT and published ports are dropped when it is full; raise \
             net.netfilter.nf_conntrack_max"
        ));
    }
    out
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The capacity gauges in Prometheus' text format (`/metrics`).
pub fn metrics(nets: &[NetworkUse], conntrack: Option<(u64, u64)>) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, u64)>| {
        if samples.is_empty() {
            return;
        }
        out.push_str(&format!(
            "# HELP berth_{name} {help}\n# TYPE berth_{name} gauge\n"
        ));
        for (labels, v) in samples {
            out.push_str(&format!("berth_{name}{labels} {v}\n"));
        }
    };
    gauge(
        "bridge_ports_max",
        "Ports one Linux bridge can hold (BR_MAX_PORTS without port 0).",
        vec![(String::new(), BRIDGE_MAX_PORTS)],
    );
    gauge(
        "bridge_ports",
        "Ports of each network's bridge on this host.",
        nets.iter()
            .filter_map(|n| {
                let p = n.bridge_ports?;
                Some((format!("{{network=\"{}\"}}", label(&n.network)), p))
            })
            .collect(),
    );
    let per_subnet = |f: fn(&SubnetUse) -> u64| -> Vec<(String, u64)> {
        nets.iter()
            .flat_map(|n| {
                n.subnets.iter().map(move |s| {
                    let l = format!(
                        "{{network=\"{}\",subnet=\"{}\"}}",
                        label(&n.network),
                        label(&s.subnet)
                    );
                    (l, f(s))
                })
            })
            .collect()
    };
    gauge(
        "ipam_addresses_used",
        "Addresses of each subnet held by this host's containers.",
        per_subnet(|s| s.used),
    );
    gauge(
        "ipam_addresses_usable",
        "Addresses of each subnet a container can get.",
        per_subnet(|s| s.usable),
    );
    if let Some((entries, max)) = conntrack {
        gauge(
            "conntrack_entries",
            "Entries of the conntrack table of berthd's namespace.",
            vec![(String::new(), entries)],
        );
        gauge(
            "conntrack_max",
            "Size of that table (net.netfilter.nf_conntrack_max).",
            vec![(String::new(), max)],
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;
    use crate::model::Driver;

    fn subnet(net: &str, range: Option<&str>, aux: &[&str]) -> SubnetSpec {
        let subnet: ipnet::IpNet = net.parse().unwrap();
        SubnetSpec {
            subnet,
            gateway: crate::ipam::gateway_for(&subnet),
            ip_range: range.map(|r| r.parse().unwrap()),
            aux_addresses: aux
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("a{i}"), a.parse().unwrap()))
                .collect(),
        }
    }

    #[test]
    fn usable_addresses_leave_out_what_ipam_never_gives() {
        // /24: 256 − network − gateway − broadcast.
        assert_eq!(usable_addresses(&subnet("10.1.0.0/24", None, &[])), 253);
        // Two auxiliary addresses, one outside the range.
        let s = subnet(
            "10.1.0.0/24",
            Some("10.1.0.128/25"),
            &["10.1.0.200", "10.1.0.5"],
        );
        // 128 − broadcast − 10.1.0.200 (the gateway .1 and the network address lie outside).
        assert_eq!(usable_addresses(&s), 126);
        // IPv6: no broadcast; a /64 is 2^64 − 2, anything larger saturates.
        assert_eq!(usable_addresses(&subnet("fd00::/120", None, &[])), 254);
        assert_eq!(
            usable_addresses(&subnet("fd00::/64", None, &[])),
            u64::MAX - 1
        );
        assert_eq!(usable_addresses(&subnet("fd00::/48", None, &[])), u64::MAX);
        assert_eq!(usable_addresses(&subnet("10.1.0.0/31", None, &[])), 0);
    }

    #[test]
    fn ports_count_running_endpoints_addresses_count_every_endpoint() {
        use crate::testutil::{container, net};
        let a = net('a', "a", "10.1.0.0/24");
        let mut o = net('b', "o", "10.2.0.0/24");
        o.driver = Driver::Overlay;
        let mut m = net('c', "m", "10.3.0.0/24");
        m.driver = Driver::Macvlan;
        let cs = [
            container('1', "c1", &[(&a, "10.1.0.2/24"), (&o, "10.2.0.2/24")]),
            container('2', "c2", &[(&a, "10.1.0.3/24"), (&m, "10.3.0.2/24")]),
        ];
        let nets = [a, o, m];
        let c1 = cs[0].id.clone();
        let use_ = networks(&nets, &cs, &|id| id == c1);
        assert_eq!(use_[0].bridge_ports, Some(1), "c2 is not running");
        assert_eq!(use_[0].subnets[0].used, 2, "both hold an address");
        assert_eq!(use_[1].bridge_ports, Some(2), "c1 and the VXLAN port");
        assert_eq!(use_[2].bridge_ports, None, "macvlan has no bridge");
        assert!(warnings(&use_, Some((10, 100))).is_empty());
    }

    #[test]
    fn warnings_start_at_ninety_percent() {
        let full = |ports, used| NetworkUse {
            network: "web".into(),
            driver: "bridge".into(),
            bridge_ports: Some(ports),
            subnets: vec![SubnetUse {
                subnet: "10.1.0.0/24".into(),
                used,
                usable: 253,
            }],
        };
        assert!(warnings(&[full(920, 227)], None).is_empty());
        let w = warnings(&[full(921, 228)], Some((900, 1000)));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("921 of the 1023 ports"), "{}", w[0]);
        assert!(
            w[1].contains("228 of the 253 addresses of 10.1.0.0/24"),
            "{}",
            w[1]
        );
        assert!(w[2].contains("900 of 1000 entries"), "{}", w[2]);
    }

    #[test]
    fn metrics_are_prometheus_gauges_with_escaped_labels() {
        let n = NetworkUse {
            network: "we\"b".into(),
            driver: "bridge".into(),
            bridge_ports: Some(3),
            subnets: vec![SubnetUse {
                subnet: "10.1.0.0/24".into(),
                used: 3,
                usable: 253,
            }],
        };
        let m = metrics(&[n], Some((7, 65536)));
        assert!(m.contains("berth_bridge_ports_max 1023\n"), "{m}");
        assert!(
            m.contains("berth_bridge_ports{network=\"we\\\"b\"} 3\n"),
            "{m}"
        );
        assert!(
            m.contains(
                "berth_ipam_addresses_usable{network=\"we\\\"b\",subnet=\"10.1.0.0/24\"} 253\n"
            ),
            "{m}"
        );
        assert!(
            m.contains("# TYPE berth_conntrack_max gauge\nberth_conntrack_max 65536\n"),
            "{m}"
        );
        assert!(!metrics(&[], None).contains("conntrack"));
    }
}
