//! Docker's legacy links on the default `bridge` network (`--link NAME[:ALIAS]`,
//! `HostConfig.Links`): the linked container is found at create (moby's `registerLinks`), and
//! at start the linking container's `/etc/hosts` names it and its environment gets the link's
//! variables (moby's `setupLinkedContainers`, `addLegacyLinks`). The default bridge has
//! inter-container communication on, so a link opens nothing in the firewall. On user-defined
//! networks links are the endpoint's `Links`, answered by the resolver (`berth_plan::dns`).

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use berth_plan::links::Linked;
use berth_plan::model::{ContainerSpec, LegacyLink, NetworkMode, Status};

use crate::daemon::Daemon;

/// [`Daemon::legacy_links`]: not known yet.
pub const LINKS_UNKNOWN: u8 = 0;
/// [`Daemon::legacy_links`]: no stored container has a legacy link.
pub const LINKS_NONE: u8 = 1;
/// [`Daemon::legacy_links`]: some container may have one.
pub const LINKS_SOME: u8 = 2;
use crate::error::{ApiError, ApiResult};

/// What a linking container sees of one linked container (owned; [`Owned::view`] gives the
/// planner's shape).
pub struct Owned {
    alias: String,
    child: ContainerSpec,
    addrs: Vec<IpAddr>,
    ports: Vec<(u16, berth_plan::ports::Proto)>,
}

impl Owned {
    /// The planner's view.
    pub fn view(&self) -> Linked<'_> {
        Linked {
            alias: &self.alias,
            name: &self.child.name,
            hostname: &self.child.hostname,
            env: &self.child.env,
            addrs: self.addrs.clone(),
            ports: self.ports.clone(),
        }
    }
}

impl Daemon {
    /// `HostConfig.Links` at create, as moby: refused with `host` and `container:` network
    /// modes (its words), ignored on a user-defined network (the endpoint's `Links` count
    /// there), else each `NAME[:ALIAS]` must name an existing container (400), followed through
    /// `container:` modes to the one whose namespace it shares, which must not use the host's.
    pub(crate) fn legacy_links(
        &self,
        links: &[String],
        mode_str: &str,
        mode: &NetworkMode,
    ) -> ApiResult<Vec<LegacyLink>> {
        if links.is_empty() {
            return Ok(Vec::new());
        }
        match mode {
            NetworkMode::Host => return Err(ApiError::bad_request(
                "conflicting options: host type networking can't be used with links. This would result in undefined behavior",
            )),
            NetworkMode::Container(_) => return Err(ApiError::bad_request(
                "conflicting options: container type network can't be used with links. This would result in undefined behavior",
            )),
            NetworkMode::None => {}
            NetworkMode::Networks if !matches!(mode_str, "" | "default" | "bridge") => {
                return Ok(Vec::new())
            }
            NetworkMode::Networks => {}
        }
        let mut out: Vec<LegacyLink> = Vec::new();
        for l in links {
            let (name, alias) = berth_plan::network::parse_link(l)?;
            let find = |q: &str| {
                self.find_container(q).map_err(|e| {
                    ApiError::bad_request(format!("could not get container for {q}: {}", e.message))
                })
            };
            let mut child = find(&name)?;
            // A bounded walk: a cycle of container: modes cannot be created, but a hand-edited
            // store must not hang berthd.
            for _ in 0..16 {
                let NetworkMode::Container(target) = &child.mode else {
                    break;
                };
                child = find(target)?;
            }
            if child.mode == NetworkMode::Host {
                return Err(ApiError::bad_request(
                    "conflicting options: host type networking can't be used with links. This would result in undefined behavior",
                ));
            }
            if let Some(dup) = out.iter().find(|o| o.alias == alias) {
                return Err(ApiError::conflict(format!(
                    "link alias {alias:?} is given twice (to {} and {name}): an alias names one container",
                    dup.child
                )));
            }
            out.push(LegacyLink {
                child: child.id,
                alias,
            });
        }
        Ok(out)
    }

    /// The linked containers of `c` as its files and environment see them: those that exist
    /// (a removed one's link is gone, as with moby) and run with an endpoint on the default
    /// bridge. `starting`: `c` is being started, and a linked container that is not running or
    /// not on the bridge fails the start with moby's words (409).
    pub(crate) fn linked(&self, c: &ContainerSpec, starting: bool) -> ApiResult<Vec<Owned>> {
        if c.legacy_links.is_empty() {
            return Ok(Vec::new());
        }
        let nets = self.networks()?;
        let Some(bridge) = berth_plan::links::default_bridge_of(c, &nets) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for l in &c.legacy_links {
            let Ok(child) = self.find_container(&l.child) else {
                continue;
            };
            let running = self.state(&child.id)?.status == Status::Running;
            let ep = child.endpoints.iter().find(|e| e.network_id == bridge.id);
            let (true, Some(ep)) = (running, ep) else {
                if starting && !running {
                    return Err(ApiError::conflict(format!(
                        "Cannot link to a non running container: /{} AS /{}/{}",
                        child.name, c.name, l.alias
                    )));
                }
                if starting {
                    return Err(ApiError::conflict(format!(
                        "container {} not attached to default bridge network",
                        child.id
                    )));
                }
                continue;
            };
            let mut addrs: Vec<IpAddr> = ep.addrs.iter().map(|a| a.addr()).collect();
            addrs.sort_by_key(|a| a.is_ipv6());
            let ports = crate::ports::doc(self, &child.id)?
                .specs
                .iter()
                .map(|p| (p.container_port, p.proto))
                .collect();
            out.push(Owned {
                alias: l.alias.clone(),
                child,
                addrs,
                ports,
            });
        }
        Ok(out)
    }

    /// The environment `c`'s command starts with: the variables of its links first, then its
    /// own (which win), as moby's `CreateDaemonEnvironment`.
    pub(crate) fn env_with_links(&self, c: &ContainerSpec) -> ApiResult<Vec<String>> {
        let mut env: Vec<String> = self
            .linked(c, true)?
            .iter()
            .flat_map(|l| berth_plan::links::env_vars(&c.name, &l.view()))
            .collect();
        env.extend(c.env.iter().cloned());
        Ok(env)
    }

    /// After `child` started: rewrites `/etc/hosts` of the running containers linked to it
    /// (its address may be a new one), as moby's `addLegacyLinks` does for parents.
    pub(crate) async fn refresh_link_parents(&self, child: &ContainerSpec) {
        // A start reads every stored container only when some container can link to it (a
        // start must not cost O(containers) for a feature nobody uses).
        if self.legacy_links.load(Ordering::SeqCst) == LINKS_NONE {
            return;
        }
        let on_bridge = self
            .networks()
            .is_ok_and(|nets| berth_plan::links::default_bridge_of(child, &nets).is_some());
        if !on_bridge {
            return;
        }
        let child = child.id.as_str();
        let Ok(all) = self.containers() else {
            return;
        };
        if !all.iter().any(|p| !p.legacy_links.is_empty()) {
            // None stored: later starts skip the scan until a container with links is
            // created (which sets LINKS_SOME before it is stored, so this cannot hide it).
            let _ = self.legacy_links.compare_exchange(
                LINKS_UNKNOWN,
                LINKS_NONE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            return;
        }
        for p in all
            .iter()
            .filter(|p| p.legacy_links.iter().any(|l| l.child == child))
        {
            let running = self
                .state(&p.id)
                .is_ok_and(|st| st.status == Status::Running);
            if running {
                if let Err(e) = self.runtime.write_files(self, p) {
                    tracing::warn!(container = %p.name, "updating /etc/hosts for its links: {}", e.message);
                }
            }
        }
    }
}
