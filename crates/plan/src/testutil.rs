//! Builders shared by the unit tests of the planner.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::model::{ContainerSpec, Driver, EndpointSpec, NetworkSpec, SubnetSpec};
use crate::names;

/// A bridge network whose id is `id_hex` repeated.
pub fn net(id_hex: char, name: &str, subnet: &str) -> NetworkSpec {
    let subnet: IpNet = subnet.parse().expect("subnet");
    let id: String = std::iter::repeat_n(id_hex, 64).collect();
    NetworkSpec {
        bridge: names::bridge_name(&id),
        id,
        name: name.into(),
        driver: Driver::Bridge,
        created: String::new(),
        subnets: vec![SubnetSpec {
            subnet,
            gateway: crate::ipam::gateway_for(&subnet),
            ip_range: None,
            aux_addresses: Default::default(),
        }],
        enable_ipv6: false,
        internal: false,
        attachable: false,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        adopted_addrs: Vec::new(),
        shim_src: None,
        overlay: None,
        owned_parent: None,
        icc: true,
        masquerade: true,
        mtu: 1500,
        dns: true,
        predefined: false,
        ipam_options: None,
        unused_ipam: Vec::new(),
    }
}

/// A container whose id is `id_hex` repeated, on `nets` with these addresses (`eth0`, …).
pub fn container(id_hex: char, name: &str, nets: &[(&NetworkSpec, &str)]) -> ContainerSpec {
    let id: String = std::iter::repeat_n(id_hex, 64).collect();
    let endpoints = nets
        .iter()
        .enumerate()
        .map(|(i, (n, addr))| {
            let ep_id: String = format!("{id_hex}{i}{}", "e".repeat(62));
            EndpointSpec {
                host_ifname: names::veth_name(&ep_id),
                id: ep_id,
                network_id: n.id.clone(),
                ifname: format!("eth{i}"),
                mac: "02:42:0a:01:00:02".into(),
                addrs: vec![addr.parse().expect("addr")],
                static_ipv4: None,
                static_ipv6: None,
                aliases: vec![],
                gw_priority: 0,
                driver_opts: Default::default(),
                links: Vec::new(),
                link_local_ips: Vec::new(),
                reused_mac: false,
            }
        })
        .collect();
    let mut c = ContainerSpec::new(id, name, vec!["sleep".into()]);
    c.endpoints = endpoints;
    c
}

/// A macvlan network `lan` on parent `lan0`, 192.168.1.0/24.
pub fn lan() -> NetworkSpec {
    let mut n = net('d', "lan", "192.168.1.0/24");
    n.driver = Driver::Macvlan;
    n.bridge = String::new();
    n.dns = false;
    n.options
        .insert(crate::network::OPT_PARENT.into(), "lan0".into());
    n
}
