//! `GET /system/topology`: the networks, their devices, veths and containers as the kernel has
//! them, beside what berth wants, every difference marked. [`build`] is pure (unit-tested
//! below); [`Daemon::topology`] feeds it a dry-run reconcile pass's observation.

use std::collections::BTreeSet;

use berth_api::types::{TopoContainer, TopoEndpoint, TopoLink, TopoNetwork, Topology};
use berth_plan::host::{self, ObservedHost, ObservedLink, Plan};
use berth_plan::model::{ContainerSpec, Driver, NetworkSpec, Status};
use berth_plan::names::short_id;
use berth_plan::network as planner;
use berth_plan::ports::Published;

use crate::daemon::{mode_name, Daemon};
use crate::error::ApiResult;
use crate::reconcile::Trigger;

/// One container as the topology needs it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its spec.
    pub spec: ContainerSpec,
    /// Its status.
    pub status: Status,
    /// Its namespace path when running.
    pub netns: Option<String>,
    /// Its ports in force.
    pub published: Vec<Published>,
}

fn addr_texts(a: &[ipnet::IpNet]) -> Vec<String> {
    a.iter().map(ToString::to_string).collect()
}

/// A link as observed, with its state against what is wanted (`want_master`: the bridge it
/// must be a port of). `None`: it was not observed at all (the namespace was not looked at).
fn link(
    name: &str,
    kind: &str,
    seen: Option<&ObservedLink>,
    want_master: Option<&str>,
) -> TopoLink {
    let mut t = TopoLink {
        name: name.to_string(),
        kind: kind.to_string(),
        ..TopoLink::default()
    };
    let Some(l) = seen else {
        t.state = "missing".into();
        t.detail = format!("{kind} {name} missing in the kernel");
        return t;
    };
    t.addrs = addr_texts(&host::significant(&l.addrs));
    t.master = l.master.clone().unwrap_or_default();
    t.up = l.up;
    let (state, detail) = match want_master {
        Some(m) if l.master.as_deref() != Some(m) => {
            ("differs", format!("{kind} {name} is not a port of {m}"))
        }
        _ if !l.up => ("down", format!("{kind} {name} is down")),
        _ => ("ok", String::new()),
    };
    t.state = state.into();
    t.detail = detail;
    t
}

/// The topology of `nets` and `containers` as `observed` (a full observation), with the
/// steps and problems of the dry-run `plan` as the drift list.
pub fn build(
    nets: &[NetworkSpec],
    containers: &[Entry],
    observed: &ObservedHost,
    plan: &Plan,
) -> Topology {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut networks = Vec::new();
    let mut nets: Vec<&NetworkSpec> = nets.iter().collect();
    nets.sort_by(|a, b| a.name.cmp(&b.name));
    for n in nets.iter().copied() {
        let mut t = TopoNetwork {
            name: n.name.clone(),
            id: short_id(&n.id).to_string(),
            driver: n.driver.as_str().to_string(),
            subnets: n.subnets.iter().map(|s| s.subnet.to_string()).collect(),
            gateways: n.subnets.iter().map(|s| s.gateway.to_string()).collect(),
            internal: n.internal,
            icc: n.icc,
            allow_direct: planner::allow_direct(n),
            ..TopoNetwork::default()
        };
        match n.driver {
            Driver::Overlay => {
                // Its bridge and VXLAN port are in its namespace (`ov-…`); the host holds the
                // uplink to it (none for an internal network: nothing outside reaches it).
                if let Some(uplink) = berth_plan::overlayns::firewall_key(n) {
                    wanted.insert(uplink.clone());
                    let mut dev = link(&uplink, "uplink", observed.links.get(&uplink), None);
                    if dev.state == "ok" {
                        dev.detail = format!(
                            "to the network's namespace {} (its bridge {} and VXLAN port {})",
                            berth_plan::names::overlay_netns_name(&n.id),
                            n.bridge,
                            berth_plan::names::vxlan_name(&n.id)
                        );
                    }
                    t.device = Some(dev);
                }
            }
            Driver::Bridge => {
                wanted.insert(n.bridge.clone());
                let seen = observed.links.get(&n.bridge);
                let mut dev = link(&n.bridge, "bridge", seen, None);
                if let Some(l) = seen {
                    let adopted = planner::adopts_bridge(n);
                    let want = planner::bridge_plan(n).map(|p| p.addrs).unwrap_or_default();
                    let lacks: Vec<String> = want
                        .iter()
                        .filter(|a| !l.addrs.contains(a))
                        .map(ToString::to_string)
                        .collect();
                    if !adopted && !host::is_owned(l) {
                        dev.state = "not berth's".into();
                        dev.detail = format!(
                            "link {} is not berth's: it holds the bridge's name",
                            n.bridge
                        );
                    } else if l.kind.as_deref() != Some("bridge") {
                        dev.state = "differs".into();
                        dev.detail = format!(
                            "{} is a {}, not a bridge",
                            n.bridge,
                            l.kind.as_deref().unwrap_or("device")
                        );
                    } else if !lacks.is_empty() {
                        dev.state = "differs".into();
                        dev.detail = format!("bridge {} lacks {}", n.bridge, lacks.join(", "));
                    }
                }
                t.device = Some(dev);
            }
            Driver::Macvlan | Driver::Ipvlan => {
                if let Some(p) = planner::parent_of(n) {
                    let mut dev = link(p, "parent", observed.links.get(p), None);
                    if dev.state == "ok" || dev.state == "down" {
                        dev.detail = format!(
                            "the LAN's interface; not berth's, never changed{}",
                            if dev.state == "down" { " (down)" } else { "" }
                        );
                    } else {
                        dev.detail = format!("parent {p} does not exist");
                    }
                    t.device = Some(dev);
                }
                if let Some(s) = planner::shim_plan(n) {
                    wanted.insert(s.name.clone());
                    t.shim = Some(link(
                        &s.name,
                        "macvlan shim",
                        observed.links.get(&s.name),
                        None,
                    ));
                }
            }
            Driver::Host | Driver::Null => {}
        }
        for c in containers {
            let Some(ns) = c.netns.as_deref() else {
                continue;
            };
            for ep in c.spec.endpoints.iter().filter(|e| e.network_id == n.id) {
                let mut e = TopoEndpoint {
                    container: c.spec.name.clone(),
                    ifname: ep.ifname.clone(),
                    addrs: addr_texts(&ep.addrs),
                    dns_names: if berth_plan::dns::serves(n) {
                        berth_plan::dns::names_of(&c.spec, ep, n)
                    } else {
                        Vec::new()
                    },
                    ..TopoEndpoint::default()
                };
                if matches!(n.driver, Driver::Bridge | Driver::Overlay) {
                    wanted.insert(ep.host_ifname.clone());
                    e.veth = Some(link(
                        &ep.host_ifname,
                        "veth",
                        observed.links.get(&ep.host_ifname),
                        Some(&n.bridge),
                    ));
                }
                match observed.netns.get(ns) {
                    Some(o) if o.reachable => match o.links.get(&ep.ifname) {
                        Some(l) => {
                            e.observed_addrs = addr_texts(&host::significant(&l.addrs));
                            let lacks: Vec<String> = ep
                                .addrs
                                .iter()
                                .filter(|a| !l.addrs.contains(a))
                                .map(ToString::to_string)
                                .collect();
                            if !lacks.is_empty() {
                                e.state = "differs".into();
                                e.detail = format!(
                                    "{} in {} lacks {}",
                                    ep.ifname,
                                    c.spec.name,
                                    lacks.join(", ")
                                );
                            } else if !l.up {
                                e.state = "down".into();
                                e.detail = format!("{} in {} is down", ep.ifname, c.spec.name);
                            } else {
                                e.state = "ok".into();
                            }
                        }
                        None => {
                            e.state = "missing".into();
                            e.detail =
                                format!("{} missing in container {}", ep.ifname, c.spec.name);
                        }
                    },
                    _ => e.state = "not observed".into(),
                }
                t.endpoints.push(e);
            }
        }
        networks.push(t);
    }
    let orphans = if observed.all_links {
        observed
            .links
            .values()
            .filter(|l| host::is_owned(l) && !wanted.contains(&l.name))
            .map(|l| {
                let kind = l.kind.clone().unwrap_or_else(|| "link".into());
                let mut t = link(&l.name, &kind, Some(l), None);
                t.state = "not wanted".into();
                t.detail = format!("{kind} {} is berth's but nothing wants it", l.name);
                t
            })
            .collect()
    } else {
        Vec::new()
    };
    let containers = containers
        .iter()
        .map(|c| TopoContainer {
            name: c.spec.name.clone(),
            id: short_id(&c.spec.id).to_string(),
            mode: match &c.spec.mode {
                berth_plan::model::NetworkMode::Container(id) => format!(
                    "container:{}",
                    containers
                        .iter()
                        .find(|o| &o.spec.id == id)
                        .map_or(short_id(id), |o| o.spec.name.as_str())
                ),
                berth_plan::model::NetworkMode::Networks => {
                    let names: Vec<&str> = c
                        .spec
                        .endpoints
                        .iter()
                        .filter_map(|e| nets.iter().find(|n| n.id == e.network_id))
                        .map(|n| n.name.as_str())
                        .collect();
                    if names.is_empty() {
                        "no network".into()
                    } else {
                        names.join(",")
                    }
                }
                m => mode_name(m),
            },
            status: c.status.as_str().to_string(),
            ports: c
                .published
                .iter()
                .map(|p| format!("{}->{}", p.host_text(), p.key()))
                .collect(),
        })
        .collect();
    let mut drift: Vec<String> = plan.steps.iter().map(ToString::to_string).collect();
    drift.extend(
        plan.problems
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message)),
    );
    Topology {
        in_sync: drift.is_empty(),
        networks,
        containers,
        orphans,
        drift,
    }
}

impl Daemon {
    /// The topology: a dry-run full pass (under the lock) and what it observed.
    pub async fn topology(&self) -> ApiResult<Topology> {
        let _guard = self.lock.lock().await;
        let rep = self
            .converge(Trigger::Check, crate::converge::Scope::Full, true)
            .await?;
        let nets = self.networks()?;
        let mut entries = Vec::new();
        for c in self.containers()? {
            let st = self.state(&c.id)?;
            let netns = (st.status == Status::Running && st.pid > 0)
                .then(|| format!("/proc/{}/ns/net", st.pid));
            let published = crate::ports::doc(self, &c.id)?.published;
            entries.push(Entry {
                spec: c,
                status: st.status,
                netns,
                published,
            });
        }
        Ok(build(&nets, &entries, &rep.observed, &rep.plan))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
