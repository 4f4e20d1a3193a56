//! What `berth info` and `/metrics` say of the host's finite resources: the store's networks
//! and containers through `berth_plan::capacity`, and the conntrack table read from `/proc`.

use berth_api::types::{CapacityInfo, NetworkCapacity, SubnetCapacity};
use berth_plan::capacity::{self, NetworkUse};
use berth_plan::model::Status;

use crate::daemon::Daemon;
use crate::error::ApiResult;

/// The conntrack table's (entries, size), when it exists.
pub type Conntrack = Option<(u64, u64)>;

/// The capacity of every network and the conntrack table's (entries, size).
pub fn snapshot(d: &Daemon) -> ApiResult<(Vec<NetworkUse>, Conntrack)> {
    let nets = d.networks()?;
    let containers = d.containers()?;
    let running = |id: &str| {
        d.state(id)
            .map(|s| s.status == Status::Running)
            .unwrap_or(false)
    };
    Ok((
        capacity::networks(&nets, &containers, &running),
        conntrack(),
    ))
}

/// `nf_conntrack_count` and `nf_conntrack_max` of berthd's namespace: absent until the
/// conntrack module is loaded (the first NAT rule loads it).
fn conntrack() -> Conntrack {
    let read = |key: &str| {
        berth_kernel::sysctl::read(None, key)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        read("net.netfilter.nf_conntrack_count")?,
        read("net.netfilter.nf_conntrack_max")?,
    ))
}

/// The snapshot as `/info`'s `Capacity`.
pub fn info(nets: &[NetworkUse], conntrack: Conntrack) -> CapacityInfo {
    CapacityInfo {
        bridge_max_ports: capacity::BRIDGE_MAX_PORTS,
        networks: nets
            .iter()
            .map(|n| NetworkCapacity {
                network: n.network.clone(),
                driver: n.driver.clone(),
                bridge_ports: n.bridge_ports,
                subnets: n
                    .subnets
                    .iter()
                    .map(|s| SubnetCapacity {
                        subnet: s.subnet.clone(),
                        used: s.used,
                        usable: s.usable,
                    })
                    .collect(),
            })
            .collect(),
        conntrack_entries: conntrack.map(|c| c.0),
        conntrack_max: conntrack.map(|c| c.1),
    }
}
