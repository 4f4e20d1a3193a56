//! Overlay networks' cluster part of the desired host state: on each host, the network's
//! VXLAN port on its bridge, and for every endpoint on *another* host a forwarding entry
//! (`bridge fdb add MAC dev VXLAN dst VTEP self permanent`) and a neighbour entry
//! (`ip neigh add IP lladdr MAC dev VXLAN nud permanent`). The VXLAN device is created with
//! learning off and ARP proxy on, so nothing floods across hosts: an ARP request for a remote
//! container is answered on the local host from the neighbour table, and frames for a remote
//! MAC go straight to that container's host. The bridge and the local veth endpoints come
//! from [`crate::driver::OverlayDriver`], exactly as on a bridge network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::host::{DesiredHost, ObservedHost, Plan, Problem, Step, StepOp};
use crate::model::{Driver, NetworkSpec};
use crate::names;

/// An endpoint of a container on another host, as that host published it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RemoteEndpoint {
    /// The overlay network's id.
    pub network_id: String,
    /// The host (node name) it lives on.
    pub node: String,
    /// That host's tunnel endpoint (its advertised address).
    pub vtep: IpAddr,
    /// The container's (IPv4) address on the network.
    pub ip: IpAddr,
    /// Its IPv6 address, on a network with IPv6. Absent in endpoints of older berthds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<IpAddr>,
    /// Its MAC (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
    /// Container name (DNS).
    pub name: String,
    /// Network aliases (DNS).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Container id.
    pub container_id: String,
}

impl RemoteEndpoint {
    /// Its addresses: the IPv4 one, and the IPv6 one if any.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.ip).chain(self.ip6)
    }
}

/// What the kernel layer needs to create an overlay network's VXLAN port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanPlan {
    /// Device name (`bvx-<9 hex of the network id>`).
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// This host's tunnel address (source of the encapsulated packets).
    pub local: IpAddr,
    /// MTU (the network's).
    pub mtu: u32,
    /// The bridge it is a port of.
    pub bridge: String,
    /// berth's ownership mark (`ifalias`).
    pub alias: String,
}

/// A VXLAN port berth wants, with the remote entries it must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVxlan {
    /// How to create it.
    pub plan: VxlanPlan,
    /// The network's name, for messages.
    pub network: String,
    /// Remote MAC → the VTEP of the host it lives on.
    pub fdb: BTreeMap<String, IpAddr>,
    /// Remote container address → its MAC.
    pub neigh: BTreeMap<IpAddr, String>,
}

/// The permanent entries found on one VXLAN device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedEntries {
    /// MAC → remote VTEP (`bridge fdb show dev X`, entries with a `dst`).
    pub fdb: BTreeMap<String, IpAddr>,
    /// Address → MAC (`ip neigh show dev X`, permanent entries).
    pub neigh: BTreeMap<IpAddr, String>,
}

/// Adds the VXLAN ports of the overlay networks among `networks` (with this host's tunnel
/// address `local`) and the forwarding entries of `remotes` (endpoints on other hosts; those
/// of `self_node` are skipped: they are local veths) to `d`. Without `local` (no cluster)
/// nothing is added.
pub fn contribute(
    d: &mut DesiredHost,
    networks: &[NetworkSpec],
    local: Option<IpAddr>,
    self_node: &str,
    remotes: &[RemoteEndpoint],
) {
    let Some(local) = local else { return };
    for net in networks.iter().filter(|n| n.driver == Driver::Overlay) {
        let Some(ov) = net.overlay.filter(|o| o.vni > 0) else {
            continue;
        };
        // An encrypted network's tunnels run between the hosts' tunnel addresses (inside
        // WireGuard); without one (an IPv6 advertise address) the network is left out here
        // and the daemon reports why.
        let tunnel = |a: IpAddr| -> Option<IpAddr> {
            if ov.encrypted {
                crate::wireguard::tunnel_addr(a).map(IpAddr::V6)
            } else {
                Some(a)
            }
        };
        let Some(src) = tunnel(local) else { continue };
        if ov.encrypted {
            d.kept_links.insert(crate::wireguard::DEVICE.to_string());
        }
        let name = names::vxlan_name(&net.id);
        let mut v = DesiredVxlan {
            plan: VxlanPlan {
                alias: format!("berth:vx:{}", net.name),
                name: name.clone(),
                vni: ov.vni,
                port: ov.port,
                local: src,
                mtu: net.mtu,
                bridge: net.bridge.clone(),
            },
            network: net.name.clone(),
            fdb: BTreeMap::new(),
            neigh: BTreeMap::new(),
        };
        for r in remotes
            .iter()
            .filter(|r| r.network_id == net.id && r.node != self_node && r.vtep != local)
        {
            let Some(dst) = tunnel(r.vtep) else { continue };
            let mac = r.mac.to_ascii_lowercase();
            v.fdb.insert(mac.clone(), dst);
            // ARP and NDP for it are answered on this host (the port's proxy flag) from
            // these entries: one per address family.
            for ip in r.ips() {
                v.neigh.insert(ip, mac.clone());
            }
        }
        d.vxlans.insert(name, v);
    }
}

/// The VXLAN part of a pass: create missing ports (on bridges that exist or are created in
/// this pass), replace a port whose identity is wrong, and bring each port's remote entries to
/// exactly the desired ones. Steps go after the bridges' and before the endpoints'.
pub fn diff(observed: &ObservedHost, desired: &DesiredHost, plan: &mut Plan) {
    for (name, v) in &desired.vxlans {
        let object = format!("vxlan {name} of network {}", v.network);
        let create = Step {
            op: StepOp::CreateVxlan {
                plan: v.plan.clone(),
            },
            object: object.clone(),
            reason: "missing".into(),
        };
        let fresh = match observed.links.get(name) {
            None => {
                plan.steps.push(create);
                true
            }
            Some(link) if !crate::host::is_owned(link) => {
                plan.problems.push(Problem {
                    object,
                    message: format!(
                        "a {} link named {name} exists and is not berth's: berth leaves it alone",
                        link.kind.as_deref().unwrap_or("device")
                    ),
                });
                continue;
            }
            Some(link) => {
                let why = vxlan_faults(link, &v.plan);
                if why.is_empty() {
                    false
                } else {
                    // Recreated rather than patched: one idempotent step sets kind, VNI,
                    // port, master, MTU and up together.
                    plan.steps.push(Step {
                        op: StepOp::DeleteLink {
                            name: name.clone(),
                            netns: None,
                        },
                        object: object.clone(),
                        reason: why.join(", "),
                    });
                    plan.steps.push(Step {
                        reason: "replaced".into(),
                        ..create
                    });
                    true
                }
            }
        };
        let empty = ObservedEntries::default();
        let have = if fresh {
            &empty
        } else {
            observed.vxlan_entries.get(name).unwrap_or(&empty)
        };
        if let Some(step) = entries_step(name, v, have) {
            plan.steps.push(step);
        }
    }
}

/// What is wrong with `link` as the VXLAN port `plan` (empty: nothing the observation
/// shows): its kind, its bridge, its up state, its MTU.
pub(crate) fn vxlan_faults(link: &crate::host::ObservedLink, plan: &VxlanPlan) -> Vec<String> {
    let mut why = Vec::new();
    if link.kind.as_deref() != Some("vxlan") {
        why.push(format!(
            "is a {} link",
            link.kind.as_deref().unwrap_or("device")
        ));
    }
    if link.master.as_deref() != Some(plan.bridge.as_str()) {
        why.push(format!("not a port of {}", plan.bridge));
    }
    if !link.up {
        why.push("down".into());
    }
    if link.mtu != plan.mtu {
        why.push(format!("mtu {} instead of {}", link.mtu, plan.mtu));
    }
    why
}

/// The step that brings the permanent entries `have` of VXLAN device `name` to exactly those
/// `v` wants; `None` when they already are.
pub(crate) fn entries_step(name: &str, v: &DesiredVxlan, have: &ObservedEntries) -> Option<Step> {
    let fdb_add: Vec<(String, IpAddr)> = v
        .fdb
        .iter()
        .filter(|(m, ip)| have.fdb.get(*m) != Some(*ip))
        .map(|(m, ip)| (m.clone(), *ip))
        .collect();
    let fdb_del: Vec<String> = have
        .fdb
        .keys()
        .filter(|m| !v.fdb.contains_key(*m))
        .cloned()
        .collect();
    let neigh_add: Vec<(IpAddr, String)> = v
        .neigh
        .iter()
        .filter(|(ip, m)| have.neigh.get(*ip) != Some(*m))
        .map(|(ip, m)| (*ip, m.clone()))
        .collect();
    let neigh_del: Vec<IpAddr> = have
        .neigh
        .keys()
        .filter(|ip| !v.neigh.contains_key(*ip))
        .copied()
        .collect();
    if fdb_add.is_empty() && fdb_del.is_empty() && neigh_add.is_empty() && neigh_del.is_empty() {
        return None;
    }
    let reason = format!(
        "{} forwarding and {} neighbour entries missing, {} and {} not wanted",
        fdb_add.len(),
        neigh_add.len(),
        fdb_del.len(),
        neigh_del.len()
    );
    Some(Step {
        op: StepOp::SetVxlanEntries {
            dev: name.to_string(),
            fdb_add,
            fdb_del,
            neigh_add,
            neigh_del,
            netns: None,
        },
        object: format!("remote endpoints on {name} of network {}", v.network),
        reason,
    })
}

/// The kernel change one watch event about a published endpoint makes on this host, without
/// a pass: the forwarding and neighbour entries of exactly that endpoint's MAC and address on
/// its network's VXLAN port, as [`contribute`] would want them now.
///
/// `before` is the endpoint as the cache held it before the event (if any), `after` what the
/// event says (`None`: deleted), and `remotes` every published endpoint after the event. Only
/// the MAC and address `before` and `after` name are touched: each is added (pointing at the
/// endpoint that wants it now — another endpoint may want it too, e.g. an address reused on
/// another host before the old holder's deletion arrived) or removed when nothing wants it any
/// more. Adds replace and removals of absent entries are no-ops in the kernel, so applying the
/// step twice, or after a pass that already did it, changes nothing. `None` when the event
/// needs nothing here: this host's own endpoint, a network this host does not have (yet: the
/// pass that builds its VXLAN port programs every endpoint), or no cluster address.
pub fn event_step<'r>(
    networks: &[NetworkSpec],
    local: Option<IpAddr>,
    self_node: &str,
    remotes: impl IntoIterator<Item = &'r RemoteEndpoint>,
    before: Option<&RemoteEndpoint>,
    after: Option<&RemoteEndpoint>,
) -> Option<Step> {
    let ep = after.or(before)?;
    let net = networks.iter().find(|n| n.id == ep.network_id)?;
    let macs: BTreeSet<String> = [before, after]
        .into_iter()
        .flatten()
        .filter(|e| e.node != self_node)
        .map(|e| e.mac.to_ascii_lowercase())
        .collect();
    let ips: BTreeSet<IpAddr> = [before, after]
        .into_iter()
        .flatten()
        .filter(|e| e.node != self_node)
        .flat_map(|e| e.ips())
        .collect();
    if macs.is_empty() && ips.is_empty() {
        return None;
    }
    // What a pass would want for these keys: the same contribution, restricted to the
    // endpoints that name one of them (O(those), not O(the network)).
    let concerned: Vec<RemoteEndpoint> = remotes
        .into_iter()
        .filter(|r| r.network_id == net.id)
        .filter(|r| {
            macs.contains(&r.mac.to_ascii_lowercase()) || r.ips().any(|ip| ips.contains(&ip))
        })
        .cloned()
        .collect();
    let mut d = DesiredHost::default();
    contribute(
        &mut d,
        std::slice::from_ref(net),
        local,
        self_node,
        &concerned,
    );
    let (dev, v) = d.vxlans.into_iter().next()?;
    let fdb_add: Vec<(String, IpAddr)> = macs
        .iter()
        .filter_map(|m| Some((m.clone(), *v.fdb.get(m)?)))
        .collect();
    let fdb_del: Vec<String> = macs
        .iter()
        .filter(|m| !v.fdb.contains_key(*m))
        .cloned()
        .collect();
    let neigh_add: Vec<(IpAddr, String)> = ips
        .iter()
        .filter_map(|ip| Some((*ip, v.neigh.get(ip)?.clone())))
        .collect();
    let neigh_del: Vec<IpAddr> = ips
        .iter()
        .filter(|ip| !v.neigh.contains_key(*ip))
        .copied()
        .collect();
    let what = match after {
        Some(_) => "published",
        None => "withdrawn",
    };
    Some(Step {
        object: format!(
            "remote endpoint {} ({}) of {} on {dev} of network {}",
            ep.name, ep.ip, ep.node, v.network
        ),
        reason: format!("{what} in the cluster store"),
        op: StepOp::SetVxlanEntries {
            dev,
            fdb_add,
            fdb_del,
            neigh_add,
            neigh_del,
            // The daemon places it in the network's namespace (it knows the run directory).
            netns: None,
        },
    })
}

/// The first VXLAN id berth allocates (Docker's classic overlay starts at 256; 4096 keeps
/// clear of VLAN-numbered hand-made ones).
pub const FIRST_VNI: u32 = 4096;

/// The VXLAN id a new overlay network gets: the lowest free one from [`FIRST_VNI`].
pub fn pick_vni(used: &BTreeSet<u32>) -> Option<u32> {
    (FIRST_VNI..=crate::network::MAX_VNI).find(|n| !used.contains(n))
}

/// The VXLAN devices to read entries of in a pass: those desired.
pub fn devices(desired: &DesiredHost) -> BTreeSet<String> {
    desired.vxlans.keys().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ObservedLink;
    use crate::model::OverlaySpec;

    fn net() -> NetworkSpec {
        let req = crate::network::NetworkRequest {
            name: "ov".into(),
            driver: Some("overlay".into()),
            ipam: vec![crate::network::IpamRequest {
                subnet: Some("10.50.0.0/24".into()),
                ..Default::default()
            }],
            options: [(crate::network::OPT_VXLANID.to_string(), "4097".to_string())].into(),
            ..Default::default()
        };
        let n = crate::network::plan_network(&req, "ab".repeat(32), "now".into(), &[], &[])
            .expect("overlay network");
        assert_eq!(
            n.overlay,
            Some(OverlaySpec {
                vni: 4097,
                port: 4789,
                encrypted: false,
            })
        );
        n
    }

    fn remote(node: &str, ip: &str, vtep: &str, mac: &str) -> RemoteEndpoint {
        RemoteEndpoint {
            network_id: net().id,
            node: node.into(),
            vtep: vtep.parse().expect("vtep"),
            ip: ip.parse().expect("ip"),
            ip6: None,
            mac: mac.into(),
            name: format!("c-{ip}"),
            aliases: vec![],
            container_id: "c".into(),
        }
    }

    fn local() -> Option<IpAddr> {
        Some("10.77.0.1".parse().expect("ip"))
    }

    #[test]
    fn vnis_are_the_lowest_free_from_4096() {
        assert_eq!(pick_vni(&BTreeSet::new()), Some(4096));
        assert_eq!(pick_vni(&BTreeSet::from([4096, 4097, 4099])), Some(4098));
        assert_eq!(pick_vni(&BTreeSet::from([1, 100])), Some(4096));
    }

    #[test]
    fn only_other_hosts_endpoints_become_entries() {
        let n = net();
        let mut d = DesiredHost::default();
        let remotes = vec![
            remote("b", "10.50.0.3", "10.77.0.2", "02:42:0A:32:00:03"),
            remote("a", "10.50.0.2", "10.77.0.1", "02:42:0a:32:00:02"),
        ];
        contribute(&mut d, std::slice::from_ref(&n), local(), "a", &remotes);
        let v = &d.vxlans[&names::vxlan_name(&n.id)];
        assert_eq!(v.plan.vni, 4097);
        assert_eq!(v.plan.bridge, n.bridge);
        assert_eq!(v.plan.mtu, 1450);
        assert_eq!(
            v.fdb,
            BTreeMap::from([("02:42:0a:32:00:03".into(), "10.77.0.2".parse().expect("ip"))])
        );
        assert_eq!(v.neigh.len(), 1);
        // Without a cluster there is no tunnel address and nothing to add.
        let mut d = DesiredHost::default();
        contribute(&mut d, &[n], None, "a", &remotes);
        assert!(d.vxlans.is_empty());
    }

    #[test]
    fn a_dual_stack_endpoint_gets_a_neighbour_entry_per_family() {
        let n = net();
        let mut r = remote("b", "10.50.0.3", "10.77.0.2", "02:42:0a:32:00:03");
        r.ip6 = Some("fd00:50::3".parse().expect("ip6"));
        let mut d = DesiredHost::default();
        contribute(
            &mut d,
            std::slice::from_ref(&n),
            local(),
            "a",
            std::slice::from_ref(&r),
        );
        let v = &d.vxlans[&names::vxlan_name(&n.id)];
        assert_eq!(v.fdb.len(), 1);
        assert_eq!(
            v.neigh,
            BTreeMap::from([
                ("10.50.0.3".parse().expect("ip"), "02:42:0a:32:00:03".into()),
                (
                    "fd00:50::3".parse().expect("ip"),
                    "02:42:0a:32:00:03".into()
                ),
            ])
        );
        // The watch event of that endpoint programs both; its withdrawal removes both.
        let step = event_step(
            std::slice::from_ref(&n),
            local(),
            "a",
            std::slice::from_ref(&r),
            None,
            Some(&r),
        )
        .expect("step");
        let StepOp::SetVxlanEntries { neigh_add, .. } = &step.op else {
            panic!("{step:?}")
        };
        assert_eq!(neigh_add.len(), 2, "{neigh_add:?}");
        let step = event_step(&[n], local(), "a", &[], Some(&r), None).expect("step");
        let StepOp::SetVxlanEntries { neigh_del, .. } = &step.op else {
            panic!("{step:?}")
        };
        assert_eq!(neigh_del.len(), 2, "{neigh_del:?}");
        // An endpoint published by an older berth (no "Ip6") still reads.
        let old = r#"{"NetworkId":"n","Node":"b","Vtep":"10.77.0.2","Ip":"10.50.0.3","Mac":"02:42:0a:32:00:03","Name":"x","ContainerId":"c"}"#;
        let e: RemoteEndpoint = serde_json::from_str(old).expect("old endpoint");
        assert_eq!(e.ip6, None);
    }

    #[test]
    fn the_encrypted_option_plans_port_and_mtu() {
        let req = |driver: &str, v: &str| crate::network::NetworkRequest {
            name: "sec".into(),
            driver: Some(driver.into()),
            ipam: vec![crate::network::IpamRequest {
                subnet: Some("10.60.0.0/24".into()),
                ..Default::default()
            }],
            options: [(crate::network::OPT_ENCRYPTED.to_string(), v.to_string())].into(),
            ..Default::default()
        };
        let plan = |r: &crate::network::NetworkRequest| {
            crate::network::plan_network(r, "cd".repeat(32), "now".into(), &[], &[])
        };
        let n = plan(&req("overlay", "")).expect("encrypted overlay");
        assert_eq!(
            n.overlay,
            Some(OverlaySpec {
                vni: 0,
                port: crate::wireguard::ENCRYPTED_VXLAN_PORT,
                encrypted: true
            })
        );
        assert_eq!(n.mtu, 1370);
        let n = plan(&req("overlay", "false")).expect("plain overlay");
        assert_eq!((n.mtu, n.overlay.map(|o| o.port)), (1450, Some(4789)));
        let e = plan(&req("bridge", "")).expect_err("bridge");
        assert!(e.to_string().contains("overlay networks"), "{e}");
        assert!(plan(&req("overlay", "perhaps")).is_err());
        // The spec of an older berth (no field) reads as unencrypted.
        let old: OverlaySpec = serde_json::from_str(r#"{"Vni":4096,"Port":4789}"#).expect("old");
        assert!(!old.encrypted);
    }

    #[test]
    fn encrypted_networks_tunnel_between_tunnel_addresses() {
        let mut n = net();
        n.overlay = Some(OverlaySpec {
            vni: 4097,
            port: crate::wireguard::ENCRYPTED_VXLAN_PORT,
            encrypted: true,
        });
        let remotes = vec![remote("b", "10.50.0.3", "10.77.0.2", "02:42:0a:32:00:03")];
        let mut d = DesiredHost::default();
        contribute(&mut d, std::slice::from_ref(&n), local(), "a", &remotes);
        let v = &d.vxlans[&names::vxlan_name(&n.id)];
        let t = |a: &str| {
            IpAddr::V6(crate::wireguard::tunnel_addr(a.parse().expect("ip")).expect("v4"))
        };
        assert_eq!(v.plan.local, t("10.77.0.1"));
        assert_eq!(v.plan.port, crate::wireguard::ENCRYPTED_VXLAN_PORT);
        assert_eq!(v.fdb["02:42:0a:32:00:03"], t("10.77.0.2"));
        assert!(d.kept_links.contains(crate::wireguard::DEVICE));
        // An unencrypted network keeps the advertised addresses and needs no tun device.
        let mut d = DesiredHost::default();
        contribute(&mut d, &[net()], local(), "a", &remotes);
        assert!(d.kept_links.is_empty());
        // An IPv6 underlay has no tunnel address: the encrypted network is left out.
        let mut d = DesiredHost::default();
        contribute(
            &mut d,
            &[n],
            Some("fd00::1".parse().expect("ip")),
            "a",
            &remotes,
        );
        assert!(d.vxlans.is_empty());
    }

    #[test]
    fn diff_creates_then_converges_entries() {
        let n = net();
        let mut d = DesiredHost::default();
        let remotes = vec![
            remote("b", "10.50.0.3", "10.77.0.2", "02:42:0a:32:00:03"),
            remote("c", "10.50.0.4", "10.77.0.3", "02:42:0a:32:00:04"),
        ];
        contribute(&mut d, std::slice::from_ref(&n), local(), "a", &remotes);
        let name = names::vxlan_name(&n.id);
        // Missing device: created, then every entry added.
        let mut p = Plan::default();
        diff(&ObservedHost::default(), &d, &mut p);
        assert!(matches!(p.steps[0].op, StepOp::CreateVxlan { .. }));
        match &p.steps[1].op {
            StepOp::SetVxlanEntries {
                fdb_add, neigh_add, ..
            } => assert_eq!((fdb_add.len(), neigh_add.len()), (2, 2)),
            other => panic!("{other:?}"),
        }
        // Present and right, one stale entry of a host that left, one missing.
        let mut o = ObservedHost::default();
        o.links.insert(
            name.clone(),
            ObservedLink {
                name: name.clone(),
                kind: Some("vxlan".into()),
                master: Some(n.bridge.clone()),
                up: true,
                mtu: 1450,
                alias: Some("berth:vx:ov".into()),
                mac: Some(names::owner_mac(&name)),
                ..ObservedLink::default()
            },
        );
        let mut have = ObservedEntries::default();
        have.fdb
            .insert("02:42:0a:32:00:03".into(), "10.77.0.2".parse().expect("ip"));
        have.fdb
            .insert("02:42:0a:32:00:09".into(), "10.77.0.9".parse().expect("ip"));
        have.neigh
            .insert("10.50.0.3".parse().expect("ip"), "02:42:0a:32:00:03".into());
        o.vxlan_entries.insert(name.clone(), have);
        let mut p = Plan::default();
        diff(&o, &d, &mut p);
        assert_eq!(p.steps.len(), 1, "{:?}", p.steps);
        match &p.steps[0].op {
            StepOp::SetVxlanEntries {
                fdb_add,
                fdb_del,
                neigh_add,
                neigh_del,
                ..
            } => {
                assert_eq!(fdb_add.len(), 1);
                assert_eq!(fdb_del, &vec!["02:42:0a:32:00:09".to_string()]);
                assert_eq!(neigh_add.len(), 1);
                assert!(neigh_del.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Detached from its bridge: replaced, entries re-added.
        o.links.get_mut(&name).expect("link").master = None;
        let mut p = Plan::default();
        diff(&o, &d, &mut p);
        assert!(matches!(p.steps[0].op, StepOp::DeleteLink { .. }));
        assert!(matches!(p.steps[1].op, StepOp::CreateVxlan { .. }));
        // A foreign link of that name: a problem, never touched.
        o.links.get_mut(&name).expect("link").mac = None;
        o.links.get_mut(&name).expect("link").alias = None;
        let mut p = Plan::default();
        diff(&o, &d, &mut p);
        assert!(p.steps.is_empty() && p.problems.len() == 1, "{p:?}");
    }

    /// The four lists of a `SetVxlanEntries` step: forwarding adds and removals, neighbour
    /// adds and removals.
    type Entries<'a> = (
        &'a [(String, IpAddr)],
        &'a [String],
        &'a [(IpAddr, String)],
        &'a [IpAddr],
    );

    fn entries(s: &Step) -> Entries<'_> {
        match &s.op {
            StepOp::SetVxlanEntries {
                fdb_add,
                fdb_del,
                neigh_add,
                neigh_del,
                ..
            } => (fdb_add, fdb_del, neigh_add, neigh_del),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_event_programs_exactly_its_endpoint() {
        let n = net();
        let dev = names::vxlan_name(&n.id);
        let other = remote("c", "10.50.0.4", "10.77.0.3", "02:42:0a:32:00:04");
        let new = remote("b", "10.50.0.3", "10.77.0.2", "02:42:0A:32:00:03");
        let remotes = vec![other.clone(), new.clone()];
        // A new endpoint of host b: its two entries, nothing about the others.
        let s = event_step(
            std::slice::from_ref(&n),
            local(),
            "a",
            &remotes,
            None,
            Some(&new),
        )
        .expect("step");
        assert!(matches!(&s.op, StepOp::SetVxlanEntries { dev: d, .. } if *d == dev));
        let vtep: IpAddr = "10.77.0.2".parse().expect("ip");
        let ip: IpAddr = "10.50.0.3".parse().expect("ip");
        let mac = "02:42:0a:32:00:03".to_string();
        assert_eq!(
            entries(&s),
            (
                &[(mac.clone(), vtep)][..],
                &[][..],
                &[(ip, mac.clone())][..],
                &[][..]
            )
        );
        // The same as the pass would add for it.
        let mut d = DesiredHost::default();
        contribute(&mut d, std::slice::from_ref(&n), local(), "a", &remotes);
        assert_eq!(d.vxlans[&dev].fdb.get(&mac), Some(&vtep));
        // Withdrawn: both entries go.
        let s = event_step(
            std::slice::from_ref(&n),
            local(),
            "a",
            std::slice::from_ref(&other),
            Some(&new),
            None,
        )
        .expect("step");
        assert_eq!(
            entries(&s),
            (&[][..], &[mac.clone()][..], &[][..], &[ip][..])
        );
        // Moved to another MAC (same key, new value): the old MAC goes, the address follows.
        let mut moved = new.clone();
        moved.mac = "02:42:0a:32:00:99".into();
        let s = event_step(
            std::slice::from_ref(&n),
            local(),
            "a",
            &[other.clone(), moved.clone()],
            Some(&new),
            Some(&moved),
        )
        .expect("step");
        let (fa, fd, na, nd) = entries(&s);
        assert_eq!(fa, &[("02:42:0a:32:00:99".to_string(), vtep)][..]);
        assert_eq!(fd, &[mac.clone()][..]);
        assert_eq!(na, &[(ip, "02:42:0a:32:00:99".to_string())][..]);
        assert!(nd.is_empty());
    }

    #[test]
    fn an_event_keeps_what_another_endpoint_still_wants() {
        let n = net();
        // Address 10.50.0.3 moved from host b to host c; b's deletion arrives after c's put.
        let old = remote("b", "10.50.0.3", "10.77.0.2", "02:42:0a:32:00:03");
        let new = remote("c", "10.50.0.3", "10.77.0.3", "02:42:0a:32:00:33");
        let s = event_step(
            std::slice::from_ref(&n),
            local(),
            "a",
            std::slice::from_ref(&new),
            Some(&old),
            None,
        )
        .expect("step");
        let (fa, fd, na, nd) = entries(&s);
        assert!(fa.is_empty());
        assert_eq!(fd, &["02:42:0a:32:00:03".to_string()][..]);
        // The neighbour entry is c's, not removed.
        assert_eq!(
            na,
            &[(
                "10.50.0.3".parse().expect("ip"),
                "02:42:0a:32:00:33".to_string()
            )][..]
        );
        assert!(nd.is_empty());
    }

    #[test]
    fn events_that_need_nothing_here() {
        let n = net();
        let mine = remote("a", "10.50.0.2", "10.77.0.1", "02:42:0a:32:00:02");
        let theirs = remote("b", "10.50.0.3", "10.77.0.2", "02:42:0a:32:00:03");
        let nets = std::slice::from_ref(&n);
        // This host's own endpoint: a local veth, no VXLAN entry.
        assert!(event_step(
            nets,
            local(),
            "a",
            std::slice::from_ref(&mine),
            None,
            Some(&mine)
        )
        .is_none());
        // A network this host does not have yet: its pass programs everything.
        assert!(event_step(
            &[],
            local(),
            "a",
            std::slice::from_ref(&theirs),
            None,
            Some(&theirs)
        )
        .is_none());
        // No cluster address.
        assert!(event_step(
            nets,
            None,
            "a",
            std::slice::from_ref(&theirs),
            None,
            Some(&theirs)
        )
        .is_none());
        // Nothing at all.
        assert!(event_step(nets, local(), "a", &[], None, None).is_none());
    }
}
