//! What `berth info` and `/metrics` say of the host's finite resources: the store's networks
//! and containers through `berth_plan::capacity`, and the conntrack table read from `/proc`.

use berth_api::types::{CapacityInfo, NetworkCapacity, SubnetCapacity};
use berth_plan::capacity::{self, NetworkUse};
use std::collections::BTreeSet;

use berth_plan::model::{ContainerSpec, Status};

use crate::daemon::Daemon;
use crate::error::ApiResult;

/// The conntrack table's (entries, size), when it exists.
pub type Conntrack = Option<(u64, u64)>;

/// The capacity of every network and the conntrack table's (entries, size).
pub fn snapshot(d: &Daemon) -> ApiResult<(Vec<NetworkUse>, Conntrack)> {
    let containers = d.containers()?;
    let running = running_ids(d, &containers);
    snapshot_of(d, &containers, &running)
}

/// [`snapshot`] for containers already read, `running` the ids of those running.
pub fn snapshot_of(
    d: &Daemon,
    containers: &[ContainerSpec],
    running: &BTreeSet<String>,
) -> ApiResult<(Vec<NetworkUse>, Conntrack)> {
    let nets = d.networks()?;
    let is_running = |id: &str| running.contains(id);
    Ok((
        capacity::networks(&nets, containers, &is_running),
        conntrack(),
    ))
}

/// The ids of the running ones of `containers` (one state read each).
pub fn running_ids(d: &Daemon, containers: &[ContainerSpec]) -> BTreeSet<String> {
    containers
        .iter()
        .filter(|c| {
            d.state(&c.id)
                .map(|s| s.status == Status::Running)
                .unwrap_or(false)
        })
        .map(|c| c.id.clone())
        .collect()
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
