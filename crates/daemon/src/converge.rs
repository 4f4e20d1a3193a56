//! The reconcile loop's wiring in berthd: the desired host state from the store (for a scope),
//! start-up (adopt processes, converge, remove orphans), and the triggers that repair drift:
//! kernel notifications (berthd's links and addresses, nft commits, each running container's
//! links, addresses and routes) and a periodic full check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_plan::driver::{ForwardingIntent, RunningContainer};
use berth_plan::firewall::{self as fw, Elements, FirewallConfig};
use berth_plan::host::{self, ObserveRequest, ObservedFirewall, ObservedNetns};
use berth_plan::model::{ContainerSpec, NetworkMode, NetworkSpec, Status};
use berth_store::{Op, StoreExt};

use berth_api::types::{CheckCount, CheckStep, SystemCheck};

use crate::daemon::{keys, now_rfc3339, Daemon};
use crate::error::{ApiError, ApiResult};
use crate::reconcile::{firewall_after, PassReport, Prestart, Trigger, Wake, DEBOUNCE};

/// What a pass looks at.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Everything: every link, every running container's namespace, the nft table read back.
    Full,
    /// Every link of berthd's namespace (the namespaces of endpoints that need repair are then
    /// looked into); the nft table read back when `firewall`.
    Host {
        /// Read the nft table back.
        firewall: bool,
    },
    /// These containers (their endpoints, bridges and namespaces) and the links in `also`
    /// (e.g. the veth of an endpoint just removed).
    Containers {
        /// Container ids.
        ids: Vec<String>,
        /// More links to look at.
        also: Vec<String>,
    },
    /// These networks' bridges, and the links in `also` (a removed network's bridge).
    Networks {
        /// Network ids.
        ids: Vec<String>,
        /// More links to look at.
        also: Vec<String>,
    },
}

/// What start-up read before its full pass, which takes these reads as its observation of
/// them instead of reading again (the other passes know nothing beforehand).
#[derive(Default)]
pub(crate) struct Known {
    /// Container namespaces by path.
    netns: BTreeMap<String, ObservedNetns>,
    /// berth's nft tables.
    firewall: Option<ObservedFirewall>,
}

/// Work a pass waits for before it observes or changes the kernel (see
/// [`Daemon::converge_gated`]).
pub(crate) type Gate<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

impl Daemon {
    /// Whether any overlay namespace is mounted under berthd's run directory (a host that
    /// left its cluster, or a namespace left by a crash): a full pass removes them.
    fn overlay_leftovers(&self) -> bool {
        std::fs::read_dir(self.config.rundir.join(berth_plan::overlayns::NETNS_SUBDIR)).is_ok_and(
            |mut d| {
                d.any(|e| {
                    e.is_ok_and(|e| {
                        berth_plan::names::is_overlay_netns(&e.file_name().to_string_lossy())
                    })
                })
            },
        )
    }

    /// What the static rules depend on: which forwarding berth had to turn on.
    pub fn firewall_config(&self) -> FirewallConfig {
        let meta = self.meta();
        FirewallConfig {
            forwarding_was_off: meta.ipv4_forwarding_was_off,
            ipv6_forwarding_was_off: meta.ipv6_recorded && meta.ipv6_forwarding_was_off,
            relay6_port: self.local6.port(),
        }
    }

    /// Records what IPv6 forwarding was before berth first needs it (once a dual-stack network
    /// is wanted): the guard rule then keeps forwarding from opening anything else.
    fn record_ipv6_forwarding(&self, nets: &[NetworkSpec]) -> ApiResult<()> {
        let mut meta = self.meta();
        if meta.ipv6_recorded || !nets.iter().any(|n| n.enable_ipv6) {
            return Ok(());
        }
        let v6 = berth_kernel::sysctl::read(None, "net.ipv6.conf.all.forwarding").map_err(|e| {
            ApiError::internal(format!("reading net.ipv6.conf.all.forwarding: {e}"))
        })?;
        meta.ipv6_forwarding_was_off = v6.trim() == "0";
        meta.ipv6_recorded = true;
        self.set_meta(meta)
    }

    /// The containers whose network namespace exists: running ones (`/proc/PID/ns/net`) and
    /// the one being started (its namespace held by an fd).
    pub(crate) fn running(
        &self,
        containers: Vec<ContainerSpec>,
    ) -> ApiResult<Vec<(ContainerSpec, String)>> {
        let starting = self.starting.lock().map(|s| s.clone()).unwrap_or_default();
        // The states' index: no store read. A few containers (a scoped pass) look theirs up
        // one by one: the by-id snapshot is rebuilt after every state change, a copy of every
        // container's id (O(containers)) for a pass that needs one.
        let states = if containers.len() > 16 {
            Some(self.states_shared()?)
        } else {
            None
        };
        let mut out = Vec::new();
        for c in containers {
            if let Some(path) = starting.get(&c.id) {
                out.push((c, path.clone()));
                continue;
            }
            let (status, pid) = match &states {
                Some(all) => all
                    .get(&c.id)
                    .map(|st| (st.status, st.pid))
                    .unwrap_or_default(),
                None => {
                    let st = self.state(&c.id)?;
                    (st.status, st.pid)
                }
            };
            if status == Status::Running && pid > 0 {
                out.push((c, format!("/proc/{pid}/ns/net")));
            }
        }
        Ok(out)
    }

    /// One reconcile pass over `scope` (the caller holds the daemon's lock).
    pub async fn converge(
        &self,
        trigger: Trigger,
        scope: Scope,
        dry_run: bool,
    ) -> ApiResult<PassReport> {
        self.converge_from(trigger, scope, dry_run, None).await
    }

    /// One reconcile pass; with `before` (an API call that changed one running container's
    /// endpoints and nothing else, `network connect`/`disconnect`: its stored document before
    /// the change), the kernel is first assumed to hold what `before` made of it
    /// ([`host::assumed`], limited to what the scoped observation would have looked at), so
    /// the pass is the change's own steps without reading the kernel back (≈ 1 ms of
    /// namespace, link and sysctl reads per call). Any failed step or problem means the
    /// assumption was wrong: an observing pass over the same scope follows at once and
    /// decides from what the kernel really holds. Drift inside the scope that the assumption
    /// hides is repaired like drift anywhere else (kernel notifications, the periodic check).
    pub(crate) async fn converge_from(
        &self,
        trigger: Trigger,
        scope: Scope,
        dry_run: bool,
        before: Option<&ContainerSpec>,
    ) -> ApiResult<PassReport> {
        self.converge_gated(trigger, scope, dry_run, before, None)
            .await
    }

    /// [`Daemon::converge_from`] whose kernel work waits for `gate`: the pass reads the store
    /// and plans while `gate` runs (a disconnect's retire of the container side, on its own
    /// thread), and neither observes nor changes the kernel before it is done, so it sees and
    /// builds on what `gate` did.
    pub(crate) async fn converge_gated(
        &self,
        trigger: Trigger,
        scope: Scope,
        dry_run: bool,
        before: Option<&ContainerSpec>,
        gate: Option<Gate<'_>>,
    ) -> ApiResult<PassReport> {
        let mut gate = gate;
        let result = self
            .converge_inner(
                trigger,
                scope,
                dry_run,
                before,
                &mut gate,
                Known::default(),
                &mut None,
            )
            .await;
        // A pass that failed before its kernel work still lets the gate finish.
        if let Some(g) = gate.take() {
            g.await;
        }
        result
    }

    /// [`Daemon::converge_api_from`] for a `network connect` whose endpoint's creation already
    /// runs (`prestart`, started before the intent was stored): the pass takes it over when it
    /// plans that creation from the assumed state; otherwise it is called off (its link
    /// deleted) before anything observes the kernel, and the pass does its own.
    pub(crate) async fn converge_api_prestarted(
        &self,
        scope: Scope,
        before: &ContainerSpec,
        prestart: Prestart,
    ) -> ApiResult<PassReport> {
        let mut prestart = Some(prestart);
        let result = self
            .converge_inner(
                Trigger::Api,
                scope,
                false,
                Some(before),
                &mut None,
                Known::default(),
                &mut prestart,
            )
            .await;
        // Left only by a pass that failed before its kernel work.
        if let Some(p) = prestart.take() {
            p.cancel("the pass failed before its kernel work").await;
        }
        api_outcome(result?)
    }

    #[allow(clippy::too_many_arguments)]
    async fn converge_inner(
        &self,
        trigger: Trigger,
        scope: Scope,
        dry_run: bool,
        before: Option<&ContainerSpec>,
        gate: &mut Option<Gate<'_>>,
        known: Known,
        prestart: &mut Option<Prestart>,
    ) -> ApiResult<PassReport> {
        let mut nets = self.networks()?;
        if let Some(cl) = &self.cluster {
            // Overlay networks' MTU follows the cluster's current underlay
            // (`overlay_mtu_now`): this host's underlay interface is read again at full and
            // host passes (a changed MTU is published for the other hosts).
            if !dry_run && matches!(scope, Scope::Full | Scope::Host { .. }) {
                cl.refresh_underlay();
            }
            let underlay = cl.live_underlay();
            for n in nets.iter_mut() {
                n.mtu = berth_plan::network::overlay_mtu_now(n, underlay);
            }
        }
        if !dry_run {
            self.record_ipv6_forwarding(&nets)?;
        }
        let meta = self.meta();
        let any_v6 = nets.iter().any(|n| n.enable_ipv6);
        let fwd = ForwardingIntent {
            ipv6: any_v6,
            ipv6_restore_off: !any_v6 && meta.ipv6_recorded && meta.ipv6_forwarding_was_off,
        };
        let cfg = self.firewall_config();
        // Exited containers' anti-spoofing elements first (the removal they were waiting
        // for, also before a check): the cache then holds no element this pass would call
        // unwanted.
        self.flush_released_guard();
        let read_fw = match &scope {
            Scope::Full => true,
            Scope::Host { firewall } => *firewall,
            _ => false,
        } || !self.firewall.known();
        let running = match &scope {
            // Only the containers in scope: their documents and states are all a scoped pass
            // needs (one store read each, not a list of every container on the host).
            Scope::Containers { ids, .. } if !read_fw => {
                let mut sel = Vec::new();
                for id in ids {
                    if let Some(c) = self.store.get_json::<ContainerSpec>(&keys::container(id))? {
                        sel.push(c);
                    }
                }
                self.running(sel)?
            }
            Scope::Networks { .. } if !read_fw => Vec::new(),
            _ => self.running(self.containers()?)?,
        };

        // Elements are global (a diff against only some networks would remove the others');
        // the published-port maps are included when the table is read back.
        let mut elements = fw::desired_elements(&nets);
        if read_fw {
            let docs = crate::ports::docs(self)?;
            for (c, _) in &running {
                if let Some(doc) = docs.get(&c.id) {
                    elements.extend(&fw::port_elements(&c.name, &doc.published));
                }
            }
        }
        let (sel_nets, sel_running, also): (
            Vec<NetworkSpec>,
            Vec<&(ContainerSpec, String)>,
            Vec<String>,
        ) = match &scope {
            Scope::Full | Scope::Host { .. } => (nets.clone(), running.iter().collect(), vec![]),
            Scope::Containers { ids, also } => {
                let sel: Vec<&(ContainerSpec, String)> = running
                    .iter()
                    .filter(|(c, _)| ids.contains(&c.id))
                    .collect();
                let wanted: BTreeSet<&str> = sel
                    .iter()
                    .flat_map(|(c, _)| c.endpoints.iter().map(|e| e.network_id.as_str()))
                    .collect();
                let n = nets
                    .iter()
                    .filter(|n| wanted.contains(n.id.as_str()))
                    .cloned()
                    .collect();
                (n, sel, also.clone())
            }
            Scope::Networks { ids, also } => (
                nets.iter()
                    .filter(|n| ids.contains(&n.id))
                    .cloned()
                    .collect(),
                vec![],
                also.clone(),
            ),
        };
        let rc: Vec<RunningContainer<'_>> = sel_running
            .iter()
            .map(|(c, ns)| RunningContainer {
                spec: c,
                netns: ns.clone(),
            })
            .collect();
        let mut desired = berth_plan::driver::desired(&sel_nets, &rc, cfg, fwd, elements, read_fw);
        // Anti-spoofing elements are the endpoints': a scoped pass decides only its own ports'.
        desired.guard_scope = match &scope {
            Scope::Full | Scope::Host { .. } => None,
            Scope::Containers { also, .. } | Scope::Networks { also, .. } => Some(
                desired
                    .endpoints
                    .keys()
                    .chain(also.iter())
                    .cloned()
                    .collect(),
            ),
        };
        if let (Some(cl), false) = (&self.cluster, dry_run) {
            // Encrypted overlay networks: berth's WireGuard datapath runs exactly while one
            // exists (before their VXLAN ports, which tunnel through it).
            let encrypted = nets.iter().any(|n| n.overlay.is_some_and(|o| o.encrypted));
            let was = cl.wireguard.running();
            cl.wireguard
                .ensure(
                    &self.kernel,
                    encrypted,
                    cl.record.addr,
                    cl.own_underlay().mtu,
                )
                .await
                .map_err(|e| {
                    ApiError::internal(format!(
                        "starting the WireGuard datapath of encrypted overlay networks: {e:#}"
                    ))
                })?;
            if encrypted && !was {
                cl.sync_wireguard_peers();
            }
        }
        if let Some(cl) = &self.cluster {
            // Overlay networks: their VXLAN ports and the other hosts' endpoints.
            let remotes = cl.remote_endpoints();
            berth_plan::overlay::contribute(
                &mut desired,
                &sel_nets,
                Some(cl.record.addr),
                &cl.record.name,
                &remotes,
            );
        }
        // Each overlay network's bridge, VXLAN port and endpoints' host sides live in a
        // namespace of its own (docs/OVERLAY.md), where the bridged frames skip the inet
        // hooks; the host keeps the uplink to it. A pass over every network (or over one
        // that is gone: `network rm`) also judges leftover namespaces.
        let overlay_all = match &scope {
            Scope::Full => true,
            // No ids: a network's removal (`release_network`).
            Scope::Networks { ids, .. } => {
                ids.is_empty()
                    || ids.iter().any(|id| {
                        nets.iter()
                            .find(|n| &n.id == id)
                            .is_none_or(|n| n.driver == berth_plan::model::Driver::Overlay)
                    })
            }
            _ => false,
        };
        let rundir = self.config.rundir.display().to_string();
        let mut overlay = berth_plan::overlayns::desired(&sel_nets, &rundir, &desired.vxlans);
        berth_plan::overlayns::place_endpoints(&mut desired, &mut overlay, &sel_nets);
        overlay.kept_networks = nets
            .iter()
            .filter(|n| {
                n.driver == berth_plan::model::Driver::Overlay
                    && !sel_nets.iter().any(|s| s.id == n.id)
            })
            .map(|n| n.id.clone())
            .collect();
        let overlay_wanted = !overlay.namespaces.is_empty()
            || (overlay_all && (self.cluster.is_some() || self.overlay_leftovers()));
        // What berth last applied stands in for the table when it is not read back. The
        // maps are left out: a pass that does not read the table back leaves them to
        // `Firewall::update_ports`, and one that does reads them from the kernel. A scoped
        // pass gets only its own bridge ports' anti-spoofing elements (O(scope), not three
        // per container on the host).
        let cache = if read_fw {
            None
        } else {
            self.firewall
                .cache_without_maps(desired.guard_scope.as_ref())
        };
        let mut req = match &scope {
            Scope::Full => ObserveRequest::full(&desired),
            Scope::Host { .. } => ObserveRequest {
                links: None,
                netns: BTreeSet::new(),
                fresh_netns: BTreeSet::new(),
                sysctls: desired.sysctls.keys().cloned().collect(),
                firewall: true,
                routes_of: desired.shims.keys().cloned().collect(),
                vxlan_entries_of: berth_plan::overlay::devices(&desired),
                overlay_netns: berth_plan::host::endpoint_namespaces(&desired),
            },
            _ => ObserveRequest::scoped(&desired, &also),
        };
        req.firewall = read_fw;
        // The overlay namespaces' endpoint host sides: of the networks in scope (orphans in a
        // full pass), and, when the pass names links it no longer wants (a disconnect), of
        // every overlay network (the one left is not in scope any more).
        req.overlay_netns
            .extend(overlay.namespaces.values().map(|d| d.path.clone()));
        if !also.is_empty() {
            req.overlay_netns.extend(
                nets.iter()
                    .filter(|n| n.driver == berth_plan::model::Driver::Overlay)
                    .map(|n| berth_plan::overlayns::netns_path(&rundir, &n.id)),
            );
        }
        req.fresh_netns = self
            .starting
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        let mut fw_cache = cache.map(|(c, el)| ObservedFirewall {
            rules: fw::static_rules(&c),
            elements: el,
        });
        if let (Some(read), true) = (known.firewall, read_fw) {
            // Read already (start-up, while it adopted the containers): the pass's observation.
            req.firewall = false;
            fw_cache = Some(read);
        }
        let refine = matches!(scope, Scope::Host { .. });
        let assumed = match (before, &fw_cache, &scope) {
            (Some(before), Some(cache), Scope::Containers { .. }) if !dry_run && !read_fw => self
                .assumed_before(before, &nets, &sel_running, cfg, fwd, &req)
                .map(|mut o| {
                    // The scope's part only (above): a copy of a few elements.
                    o.firewall = Some(cache.clone());
                    o
                }),
            _ => None,
        };
        if let Some(g) = gate.take() {
            g.await;
        }
        // The overlay namespaces first: the endpoints' host sides go into them.
        let mut overlay_report = PassReport::default();
        if overlay_wanted {
            let observed = berth_kernel::overlayns::observe(
                &self.kernel,
                &self.overlay_ns,
                &self.config.rundir,
                &overlay,
                overlay_all,
            )
            .await
            .map_err(|e| ApiError::internal(format!("observing the overlay namespaces: {e}")))?;
            overlay_report.overlay = berth_plan::overlayns::diff(&observed, &overlay);
            if !dry_run {
                let steps = std::mem::take(&mut overlay_report.overlay.steps);
                self.reconciler
                    .apply_overlay(
                        trigger,
                        &self.kernel,
                        &self.overlay_ns,
                        &steps,
                        &mut overlay_report,
                    )
                    .await;
                // Changes in these namespaces wake a pass (the all-namespaces subscription):
                // a namespace made in this pass has a new id.
                let made: BTreeSet<String> = steps
                    .iter()
                    .filter_map(|s| match &s.op {
                        berth_plan::overlayns::NsOp::CreateNetns { path } => Some(path.clone()),
                        _ => None,
                    })
                    .collect();
                overlay_report.overlay.steps = steps;
                let wanted: BTreeSet<String> = overlay
                    .namespaces
                    .values()
                    .map(|d| d.path.clone())
                    .collect();
                let keep = overlay_all.then(|| {
                    overlay
                        .kept_networks
                        .iter()
                        .map(|id| berth_plan::overlayns::netns_path(&rundir, id))
                        .chain(wanted.iter().cloned())
                        .collect()
                });
                self.watch_overlay_namespaces(wanted, &made, keep).await;
            }
        }
        let assumed_rep = match assumed {
            Some(o) => {
                let rep = self
                    .reconciler
                    .pass_assumed(trigger, &desired, o, prestart)
                    .await;
                if rep.errors.is_empty() && rep.plan.problems.is_empty() {
                    Some(rep)
                } else {
                    tracing::info!(
                        errors = ?rep.errors,
                        problems = rep.plan.problems.len(),
                        "the kernel did not hold what the intent before this call made: \
                         observing it"
                    );
                    None
                }
            }
            None => None,
        };
        // A started creation this pass did not take over goes before anything observes the
        // kernel (its half-made link would be drift to the observing pass).
        if let Some(p) = prestart.take() {
            p.cancel("the pass observes the kernel instead").await;
        }
        let rep = match assumed_rep {
            Some(rep) => rep,
            None => self
                .reconciler
                .pass_known(
                    trigger,
                    &desired,
                    req,
                    known.netns,
                    fw_cache,
                    refine,
                    dry_run,
                )
                .await
                .map_err(|e| ApiError::internal(format!("observing the kernel: {e}")))?,
        };
        let mut rep = rep;
        if !dry_run && !overlay_report.overlay.late.is_empty() {
            let late = std::mem::take(&mut overlay_report.overlay.late);
            self.reconciler
                .apply_overlay(
                    trigger,
                    &self.kernel,
                    &self.overlay_ns,
                    &late,
                    &mut overlay_report,
                )
                .await;
            overlay_report.overlay.late = late;
        }
        rep.applied += overlay_report.applied;
        rep.errors.extend(overlay_report.errors);
        rep.firewall_ok &= overlay_report.firewall_ok;
        rep.overlay = overlay_report.overlay;
        if dry_run {
            return Ok(rep);
        }
        match firewall_after(&rep, &desired) {
            Some((c, el)) if read_fw => self.firewall.set_cache(c, el),
            Some((c, el)) => {
                self.firewall
                    .set_cache_keeping_maps(c, el, desired.guard_scope.as_ref())
            }
            None => self.firewall.invalidate(),
        }
        if fwd.ipv6_restore_off && rep.errors.is_empty() {
            // IPv6 forwarding is back to what the host had; the guard rule goes with the next
            // rewrite of the static rules.
            let mut m = self.meta();
            m.ipv6_recorded = false;
            self.set_meta(m)?;
            self.firewall.invalidate();
        }
        // Overlay endpoints that appeared or went with this pass (connect, disconnect).
        self.cluster_publish();
        Ok(rep)
    }

    /// What the scoped observation `req` would show if the kernel held exactly what the
    /// intent before the call made (`before` in place of the container's document): `None`
    /// when that cannot be modelled exactly (overlay networks) and the pass must observe.
    fn assumed_before(
        &self,
        before: &ContainerSpec,
        nets: &[NetworkSpec],
        sel_running: &[&(ContainerSpec, String)],
        cfg: FirewallConfig,
        fwd: ForwardingIntent,
        req: &ObserveRequest,
    ) -> Option<host::ObservedHost> {
        // The networks of the scope after the call and before it (a disconnected network's
        // bridge is modelled, then left out: the scoped observation never looks at it).
        let wanted: BTreeSet<&str> = sel_running
            .iter()
            .flat_map(|(c, _)| c.endpoints.iter())
            .chain(before.endpoints.iter())
            .map(|e| e.network_id.as_str())
            .collect();
        let sel_nets: Vec<NetworkSpec> = nets
            .iter()
            .filter(|n| wanted.contains(n.id.as_str()))
            .cloned()
            .collect();
        if sel_nets
            .iter()
            .any(|n| n.driver == berth_plan::model::Driver::Overlay)
        {
            return None;
        }
        let rc: Vec<RunningContainer<'_>> = sel_running
            .iter()
            .map(|(c, ns)| RunningContainer {
                spec: if c.id == before.id { before } else { c },
                netns: ns.clone(),
            })
            .collect();
        if !rc.iter().any(|r| r.spec.id == before.id) {
            return None;
        }
        let was = berth_plan::driver::desired(&sel_nets, &rc, cfg, fwd, Elements::default(), false);
        host::assumed_for(&was, req)
    }

    /// A pass that must succeed for an API call: kernel errors become a 500 naming every
    /// failed step, a foreign link in the way a 409.
    pub async fn converge_api(&self, scope: Scope) -> ApiResult<PassReport> {
        self.converge_api_from(scope, None).await
    }

    /// [`Daemon::converge_api`] for a change of one running container's endpoints, from the
    /// state its document `before` the change made (see [`Daemon::converge_from`]).
    pub async fn converge_api_from(
        &self,
        scope: Scope,
        before: Option<&ContainerSpec>,
    ) -> ApiResult<PassReport> {
        let rep = self
            .converge_from(Trigger::Api, scope, false, before)
            .await?;
        api_outcome(rep)
    }

    /// Start-up: adopt the containers whose processes survived (also those a crash caught
    /// before their state was stored), end berth's orphan processes, converge everything.
    pub(crate) async fn startup(self: &Arc<Self>) -> anyhow::Result<()> {
        let began = std::time::Instant::now();
        // berth's nft tables, dumped over netlink (a few tens of ms at 10,000 published
        // ports; `nft -j` was ~0.4 s of CPU beside the adoption) while berthd adopts the
        // containers: the pass below takes the read as its observation unless an adoption
        // below changed the tables.
        let fw_read = tokio::task::spawn_blocking(move || {
            let read = berth_kernel::observe::firewall();
            (read, began.elapsed())
        });
        // The host's chains (an `nft` process, ~10 ms), for the forward-policy warning at the end.
        let host_chains = tokio::task::spawn_blocking(|| berth_kernel::nft::list_chains_json(None));
        let mut fw_changed = false;
        let containers = self.containers().map_err(|e| anyhow::anyhow!(e.message))?;
        let states = self.states().map_err(|e| anyhow::anyhow!(e.message))?;
        let fixed = crate::ipam::repair(self.store.as_ref(), &containers)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        if fixed > 0 {
            tracing::info!(
                claims = fixed,
                "address claims made consistent with the endpoints"
            );
        }
        // The records of the processes berthd started, checked; when one cannot be trusted,
        // a walk of /proc (and records written for next time).
        let (alive, mut pidfds) = match self.runtime.recorded_processes() {
            Some(r) => (r.procs, r.pidfds),
            None => {
                let alive = self.runtime.scan_processes();
                self.runtime.rewrite_records(&alive);
                (alive, HashMap::new())
            }
        };
        // Where the start-up's time goes (its log line): the parts overlap.
        let records_at = began.elapsed();
        // Every adopted container's namespace: registered with the one all-namespaces
        // subscription and then its links, addresses and routes read, from a thread inside it. A
        // few long-lived threads go through them all, entering one after the other (a thread per
        // namespace cost more in its start and exit than the reads), from here on while this
        // thread adopts the containers. The pass below takes these reads as its observation of
        // them, so a change after a read raises a notification and nothing goes unseen.
        let ns_reads = self.config.drift_repair.then(|| {
            let running: Vec<(String, i32)> = containers
                .iter()
                .filter(|c| {
                    states
                        .get(&c.id)
                        .is_some_and(|st| st.status == Status::Running)
                })
                .filter_map(|c| Some((c.id.clone(), alive.get(&c.id)?.first()?.init)))
                .collect();
            let d = self.clone();
            tokio::spawn(async move {
                // Each namespace registered with the one subscription (all namespaces' ids)
                // before it is read, so a change after the read raises a notification: by the
                // reader threads, each just before its read (the look-ups beside the reads).
                let nsids = Arc::new(std::sync::Mutex::new(HashMap::new()));
                let registration = d.ns_watch.ensure_started(&d.wake).then(|| {
                    let (d, nsids) = (d.clone(), nsids.clone());
                    let ids: Vec<String> = running.iter().map(|(id, _)| id.clone()).collect();
                    berth_kernel::observe::Registration {
                        pids: running.iter().map(|(_, p)| *p).collect(),
                        register: Box::new(move |i, nsid| {
                            let Some(id) = ids.get(i) else { return };
                            match nsid {
                                Ok(nsid) => {
                                    d.ns_watch.watch(nsid, id);
                                    if let Ok(mut m) = nsids.lock() {
                                        m.insert(id.clone(), nsid);
                                    }
                                }
                                Err(e) => tracing::debug!(
                                    container = %id,
                                    "no notifications from its namespace: {e}"
                                ),
                            }
                        }),
                    }
                });
                let paths = running
                    .iter()
                    .map(|(_, p)| format!("/proc/{p}/ns/net"))
                    .collect();
                let reads = berth_kernel::observe::netns_watched_many(
                    paths,
                    NAMESPACE_READERS,
                    false,
                    registration,
                )
                .await;
                let nsids = nsids
                    .lock()
                    .map(|mut m| std::mem::take(&mut *m))
                    .unwrap_or_default();
                (nsids, reads, began.elapsed())
            })
        });
        let known: BTreeSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        self.runtime.remove_orphan_dirs(&known);
        for (id, pids) in &alive {
            if !known.contains(id.as_str()) {
                // A container removed from the store whose process a crash left behind.
                tracing::warn!(container = %id, "ending the process of a removed container");
                for p in pids {
                    let _ = berth_kernel::container::signal(
                        p.stage1,
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        // The namespaces of adopted containers whose notifications to subscribe to (below).
        let mut watched = Vec::new();
        for c in &containers {
            let st = states.get(&c.id).cloned().unwrap_or_default();
            let proc_ = alive.get(&c.id).and_then(|v| v.first()).copied();
            match (st.status, proc_) {
                (Status::Running, Some(p)) => {
                    self.runtime.adopt(self, c, p, pidfds.remove(&c.id));
                    if p.init != st.pid {
                        let mut st = st.clone();
                        st.pid = p.init;
                        self.store
                            .apply(vec![Op::put_json(keys::state(&c.id), &st)])?;
                    }
                    watched.push((c.id.clone(), p.init));
                }
                (Status::Running, None) if c.auto_remove => {
                    // A `--rm` container's exit and removal are one commit, flushed after its
                    // waiter was told (containers.rs): gone while berthd was down, or told and
                    // then a crash before the flush, it is removed, as dockerd's restore does.
                    fw_changed = true;
                    self.remove_record_locked(&c.id, true)
                        .await
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                    self.sync_store()
                        .await
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                    self.runtime.remove_files(&c.id);
                }
                (Status::Running, None) => {
                    // Its ports are unpublished.
                    fw_changed = true;
                    let code = self.runtime.read_exit_code(&c.id).unwrap_or(-1);
                    self.mark_exited(&c.id, code)
                        .await
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                }
                (_, Some(p)) => {
                    // Started, but berthd died before it recorded so: it runs, so it is running.
                    tracing::warn!(container = %c.name, pid = p.init, "adopting a container started before a crash");
                    // Its ports are published.
                    fw_changed = true;
                    let port_op = crate::ports::publish(self, c)
                        .await
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                    let state = berth_plan::model::ContainerState {
                        status: Status::Running,
                        pid: p.init,
                        exit_code: 0,
                        started_at: now_rfc3339(),
                        finished_at: st.finished_at.clone(),
                        restart: st.restart,
                    };
                    let mut ops = vec![Op::put_json(keys::state(&c.id), &state)];
                    ops.extend(port_op);
                    self.store.apply(ops)?;
                    self.runtime.adopt(self, c, p, pidfds.remove(&c.id));
                    self.exit_channel(&c.id).send_replace(None);
                    crate::converge::watch_container(
                        self.clone(),
                        c.id.clone(),
                        p.init,
                        WatchFrom::Adoption,
                    )
                    .await;
                }
                (_, None) => {}
            }
        }
        let loop_at = began.elapsed();
        // Published ports' `[::1]` relays (10,000 sockets at 1,000 containers, ~0.4 s): berthd's
        // own listeners, nothing the pass below reads or changes, so they open on a blocking
        // thread while the namespaces are read and the pass runs.
        let published =
            crate::ports::running_published(self).map_err(|e| anyhow::anyhow!(e.message))?;
        let relays = {
            let (d, published) = (self.clone(), published.clone());
            tokio::task::spawn_blocking(move || crate::ports::open_relays(&d, &published))
        };
        // The namespace reads begun above.
        let adopted = watched.len();
        let mut known = BTreeMap::new();
        let mut reads_at = Duration::ZERO;
        if let Some(ns_reads) = ns_reads {
            let (nsids, reads, r_at) = ns_reads.await.unwrap_or_else(|e| {
                // The pass reads them itself.
                tracing::debug!("reading the adopted namespaces: {e}");
                (HashMap::new(), Vec::new(), Duration::ZERO)
            });
            reads_at = r_at;
            for (id, pid) in &watched {
                if let Some(nsid) = nsids.get(id) {
                    spawn_watch(self.clone(), id.clone(), *pid, Some(*nsid));
                }
            }
            let mut ids: BTreeMap<String, String> = watched
                .into_iter()
                .map(|(id, pid)| (format!("/proc/{pid}/ns/net"), id))
                .collect();
            for (path, read) in reads {
                let Some(id) = ids.remove(&path) else {
                    continue;
                };
                match read {
                    Ok((ns, _)) => {
                        known.insert(path, ns);
                    }
                    // The pass reads it again, and reports what it finds.
                    Err(e) => tracing::debug!(container = %id, "reading its namespace: {e}"),
                }
            }
        }
        let (fw_read, fw_at) = match fw_read.await {
            Ok((read, at)) => (Ok(read), at),
            Err(e) => (Err(e), Duration::ZERO),
        };
        let firewall = match fw_read {
            Ok(Ok(read)) if !fw_changed => Some(read),
            Ok(Ok(_)) => None,
            // The pass reads the tables itself, and reports what fails.
            Ok(Err(e)) => {
                tracing::debug!("reading berth's nft tables: {e}");
                None
            }
            Err(e) => {
                tracing::debug!("reading berth's nft tables: {e}");
                None
            }
        };
        let adopted_at = began.elapsed();
        let mut no_gate = None;
        let rep = self
            .converge_inner(
                Trigger::Startup,
                Scope::Full,
                false,
                None,
                &mut no_gate,
                Known {
                    netns: known,
                    firewall,
                },
                &mut None,
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let passed_at = began.elapsed();
        for e in &rep.errors {
            tracing::error!("start-up: {e}");
        }
        for p in rep.problems() {
            tracing::warn!("start-up: {}: {}", p.object, p.message);
        }
        if rep.errors.iter().any(|e| e.starts_with("FirewallBase")) {
            anyhow::bail!(
                "installing berth's nftables table: {}",
                rep.errors.join("; ")
            );
        }
        // Published ports: the maps (the pass read the table back) and the conflict index,
        // once the relays are open.
        relays
            .await
            .map_err(|e| anyhow::anyhow!("opening the [::1] relays: {e}"))?;
        crate::ports::replace(self, &published).map_err(|e| anyhow::anyhow!(e.message))?;
        let ported_at = began.elapsed();
        match host_chains.await {
            Ok(chains) => self.check_host_forward_policy(chains),
            Err(e) => tracing::warn!("could not read the host's firewall rules: {e}"),
        }
        // Restart policies last: their starts need the networks converged above.
        self.start_by_policy_at_startup()
            .map_err(|e| anyhow::anyhow!(e.message))?;
        tokio::task::spawn_blocking(berth_kernel::sys::release_free_memory);
        tracing::info!(
            containers = containers.len(),
            adopted,
            steps = rep.applied,
            adopted_ms = adopted_at.as_millis() as u64,
            records_ms = records_at.as_millis() as u64,
            loop_ms = loop_at.as_millis() as u64,
            reads_ms = reads_at.as_millis() as u64,
            fw_ms = fw_at.as_millis() as u64,
            pass_ms = (passed_at - adopted_at).as_millis() as u64,
            ports_ms = (ported_at - passed_at).as_millis() as u64,
            total_ms = began.elapsed().as_millis() as u64,
            "start-up converged"
        );
        Ok(())
    }
}

/// One periodic check in this many looks at everything (every link, every running container's
/// namespace, the nft table read back); the others look at what drifts without a notification:
/// the sysctls, and the networks' bridges. Links, addresses, routes and nft commits notify the
/// loop the moment they change. A full check over 1,000 containers and 10,000 published ports
/// costs a second or more of CPU: every 10 s, that was most of an idle berthd's CPU.
const FULL_CHECK_EVERY: u64 = 30;

/// How many threads read the adopted containers' namespaces at start-up: the reads are mostly
/// the kernel building dumps, so on the 2-core machines measured more threads only queue.
const NAMESPACE_READERS: usize = 3;

/// Starts the loop's triggers: the wake-up consumer, berthd's link and nft monitors, the timer.
pub fn spawn_watchers(d: Arc<Daemon>) {
    let Some(mut rx) = d.take_wake_rx() else {
        return;
    };
    // Without the link or nft notifications, only the periodic check finds drift: then every
    // check is a full one.
    let mut notified = true;
    if d.config.drift_repair {
        let tx = d.wake.clone();
        match berth_kernel::monitor::Monitor::host() {
            Ok(mut m) => {
                let d = d.clone();
                tokio::spawn(async move {
                    // A veth berth deletes, or one that goes with an exited container's
                    // namespace, is not drift: no pass over the host's links for it.
                    while m
                        .next_except(|name| d.reconciler.expects_gone(name))
                        .await
                        .is_ok()
                    {
                        if tx.send(Wake::Host).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => {
                notified = false;
                tracing::warn!("no link notifications, drift found by the timer only: {e}")
            }
        }
        let tx = d.wake.clone();
        match berth_kernel::monitor::Monitor::nftables() {
            Ok(mut m) => {
                tokio::spawn(async move {
                    while let Ok(commits) = m.next_commits().await {
                        // berth's own commits are not drift; anyone else's (or lost
                        // notifications) make the loop read the table back.
                        let foreign = commits
                            .iter()
                            .any(|p| p.is_none_or(|pid| !berth_kernel::nft::is_own_commit(pid)));
                        if foreign && tx.send(Wake::Nft).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => {
                notified = false;
                tracing::warn!("no nftables notifications, drift found by the timer only: {e}")
            }
        }
        let tx = d.wake.clone();
        let period = d.config.check_interval;
        tokio::spawn(async move {
            let mut t = tokio::time::interval(period);
            t.tick().await;
            loop {
                t.tick().await;
                if tx.send(Wake::Timer).is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut ticks: u64 = 0;
        while let Some(first) = rx.recv().await {
            // Gather a burst into one pass.
            tokio::time::sleep(DEBOUNCE).await;
            let mut wakes = BTreeSet::from([first]);
            while let Ok(w) = rx.try_recv() {
                wakes.insert(w);
            }
            if !d.config.drift_repair {
                continue;
            }
            let _guard = d.lock.lock().await;
            let held = std::time::Instant::now();
            let timer = wakes.contains(&Wake::Timer);
            if timer {
                ticks += 1;
            }
            let full = timer && (!notified || ticks.is_multiple_of(FULL_CHECK_EVERY));
            let nft = wakes.contains(&Wake::Nft);
            let host = wakes.contains(&Wake::Host);
            let trigger = if timer {
                Trigger::Timer
            } else {
                Trigger::Notification
            };
            let result = if full {
                d.converge(trigger, Scope::Full, false).await.map(|_| ())
            } else {
                let mut r = Ok(());
                if timer {
                    // The light check: sysctls and bridges (a pass scoped to every network).
                    r = match d.networks() {
                        Ok(nets) => {
                            let ids = nets.into_iter().map(|n| n.id).collect();
                            d.converge(trigger, Scope::Networks { ids, also: vec![] }, false)
                                .await
                                .map(|_| ())
                        }
                        Err(e) => Err(e),
                    };
                }
                if r.is_ok() && (nft || host) {
                    r = d
                        .converge(trigger, Scope::Host { firewall: nft }, false)
                        .await
                        .map(|_| ());
                }
                let ids: Vec<String> = wakes
                    .iter()
                    .filter_map(|w| match w {
                        Wake::Container(id) => Some(id.clone()),
                        _ => None,
                    })
                    .collect();
                if r.is_ok() && !ids.is_empty() {
                    r = d
                        .converge(trigger, Scope::Containers { ids, also: vec![] }, false)
                        .await
                        .map(|_| ());
                }
                r
            };
            if let Err(e) = result {
                tracing::warn!("reconcile ({trigger:?}): {}", e.message);
            }
            // Requests wait for this lock: which wake-ups hold it, and how long (a pass with
            // nothing to do logs nothing else).
            tracing::debug!(
                ?wakes,
                held_us = held.elapsed().as_micros() as u64,
                "drift loop: looked"
            );
            drop(_guard);
            // What the pass (and the requests before it) freed goes back to the kernel: glibc's
            // malloc kept it (berthd's resident memory grew to 400 MB over 1,000 container
            // starts against 70 MB in use), and mimalloc's heaps and pending purges are
            // collected here (its freed pages go back at once since stop 49; this call was
            // kept, not measured again without it).
            tokio::task::spawn_blocking(berth_kernel::sys::release_free_memory);
        }
    });
}

/// How long after a container's start its namespace starts being watched.
const CONTAINER_MONITOR_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// When a container's namespace watch begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// A container berthd just started: subscribe after [`CONTAINER_MONITOR_DELAY`], then run
    /// one pass over the container so a change made before the subscription is not missed.
    Start,
    /// A running container adopted at start-up: subscribe now, before the start-up pass, so
    /// every change after that pass's observation raises a notification.
    Adoption,
    /// A container berthd just started in a namespace it made and watched, with this id,
    /// before anything happened in it ([`watch_from_start`]): every change since raised a
    /// notification, so there is no window to cover and no pass to run.
    Registered(i32),
}

/// A container namespace watched from its start ([`watch_from_start`]): dropped without
/// [`EarlyWatch::keep`] (the start failed), it is forgotten.
pub struct EarlyWatch {
    table: Arc<std::sync::Mutex<NsWatchTable>>,
    nsid: i32,
    id: String,
    kept: bool,
}

impl EarlyWatch {
    /// The start succeeded: the watch stays (until the container exits, see
    /// [`WatchFrom::Registered`]); returns the namespace's id.
    pub fn keep(mut self) -> i32 {
        self.kept = true;
        self.nsid
    }
}

impl Drop for EarlyWatch {
    fn drop(&mut self) {
        if !self.kept {
            if let Ok(mut t) = self.table.lock() {
                t.unwatch(self.nsid, &self.id);
            }
        }
    }
}

/// Watches the namespace whose id in berthd's is `nsid` — one berthd has just made and given
/// that id ([`berth_kernel::netns::make_netns`]), where nothing happened yet — as container
/// `id`'s, from now on: a table entry, no system call. Done before the start plumbs its
/// endpoints, it replaces the watch [`WatchFrom::Start`] registers 200 ms after the start and
/// the pass over the container that covers the window before it (≈ 0.8 ms of the daemon's
/// lock and CPU per start, in the minutes of back-to-back starts where the CPUs are short).
/// `None` without drift repair or notifications.
pub fn watch_from_start(d: &Daemon, id: &str, nsid: i32) -> Option<EarlyWatch> {
    if !d.config.drift_repair || !d.ns_watch.ensure_started(&d.wake) {
        return None;
    }
    d.ns_watch.table.lock().ok()?.watch(nsid, id);
    Some(EarlyWatch {
        table: d.ns_watch.table.clone(),
        nsid,
        id: id.to_string(),
        kept: false,
    })
}

/// Watches a running container's namespace for changes (a deleted link, address or default
/// route) until the container exits, through the one [`NsWatch`] subscription: its namespace's
/// id in berthd's is registered, and forgotten when it exits.
pub async fn watch_container(d: Arc<Daemon>, id: String, pid: i32, from: WatchFrom) {
    if !d.config.drift_repair || pid <= 0 {
        return;
    }
    let adopted = match from {
        WatchFrom::Adoption => match register_watch(&d, &id, pid).await {
            Some(nsid) => Some(nsid),
            None => return,
        },
        WatchFrom::Registered(nsid) => Some(nsid),
        WatchFrom::Start => None,
    };
    spawn_watch(d, id, pid, adopted);
}

/// The watch itself: with `adopted`, that namespace id is registered already (an adopted
/// container's, or one watched from its start); else it is
/// registered [`CONTAINER_MONITOR_DELAY`] after the start. Either way it is forgotten when the
/// container exits.
fn spawn_watch(d: Arc<Daemon>, id: String, pid: i32, adopted: Option<i32>) {
    let mut exit = d.exit_channel(&id).subscribe();
    let tx = d.wake.clone();
    let task = async move {
        let nsid = match adopted {
            Some(n) => n,
            None => {
                // Not on the start's critical path: a container's first moments compete for
                // the same cores, and a short-lived one (`run --rm true`) is gone before this
                // would be useful.
                tokio::select! {
                    _ = tokio::time::sleep(CONTAINER_MONITOR_DELAY) => {}
                    _ = exit.wait_for(|v| v.is_some()) => return,
                }
                let Some(n) = register_watch(&d, &id, pid).await else {
                    return;
                };
                // Drift in the window before the registration raised no wake-up: one pass
                // over this container covers it.
                let _ = tx.send(Wake::Container(id.clone()));
                n
            }
        };
        // Until it exits (or berthd's exit channels go).
        let _ = exit.wait_for(|v| v.is_some()).await;
        d.ns_watch.unwatch(nsid, &id);
    };
    tokio::spawn(task);
}

impl Daemon {
    /// Subscribes to the changes in the overlay namespaces `paths` that are not watched yet, or
    /// were made again (`made`: a new namespace has a new id); with `keep`, forgets every
    /// other one. Their changes wake a pass over the host, which plans every overlay
    /// namespace: drift there (a VXLAN port or an endpoint's veth deleted by someone) is
    /// repaired at once instead of at the next full check.
    async fn watch_overlay_namespaces(
        &self,
        paths: BTreeSet<String>,
        made: &BTreeSet<String>,
        keep: Option<BTreeSet<String>>,
    ) {
        let new: Vec<String> = match self.ns_watch.table.lock() {
            Ok(mut t) => {
                if let Some(keep) = &keep {
                    t.unwatch_overlay_except(keep);
                }
                paths
                    .into_iter()
                    .filter(|p| made.contains(p) || !t.watches_overlay(p))
                    .collect()
            }
            Err(_) => return,
        };
        if new.is_empty() || !self.ns_watch.ensure_started(&self.wake) {
            return;
        }
        for path in new {
            let p = std::path::PathBuf::from(&path);
            let nsid = tokio::task::spawn_blocking(move || berth_kernel::monitor::nsid_of_path(&p))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match nsid {
                Ok(nsid) => {
                    if let Ok(mut t) = self.ns_watch.table.lock() {
                        t.watch_overlay(nsid, &path);
                    }
                }
                Err(e) => {
                    tracing::debug!(netns = %path, "no notifications from the overlay namespace: {e}")
                }
            }
        }
    }
}

/// Registers container `id`'s namespace (that of `pid`) with the daemon's [`NsWatch`], opening
/// its subscription at the first call. `None` (logged) when there are no notifications to have.
async fn register_watch(d: &Arc<Daemon>, id: &str, pid: i32) -> Option<i32> {
    if !d.ns_watch.ensure_started(&d.wake) {
        return None;
    }
    let nsid = tokio::task::spawn_blocking(move || berth_kernel::monitor::nsid_of(pid)).await;
    match nsid {
        Ok(Ok(nsid)) => {
            d.ns_watch.watch(nsid, id);
            Some(nsid)
        }
        Ok(Err(e)) => {
            tracing::debug!(container = %id, "no notifications from its namespace: {e}");
            None
        }
        Err(e) => {
            tracing::debug!(container = %id, "no notifications from its namespace: {e}");
            None
        }
    }
}

/// Which container each watched namespace is, by the id the namespace has in berthd's
/// (`nsid`): what a notification of the all-namespaces subscription wakes. Pure.
#[derive(Debug, Default)]
pub struct NsWatchTable {
    by_nsid: std::collections::HashMap<i32, String>,
    /// Container interfaces berth retired (a disconnect), by (container id, name), with when:
    /// the kernel deletes each with its host side in the background deletion, and that
    /// removal's notification is berth's own doing, not drift (see [`RETIRED_NOTICE`]).
    retired: std::collections::HashMap<(String, String), std::time::Instant>,
    /// The overlay networks' namespaces (`RUNDIR/netns/ov-…`) by their id in berthd's: a
    /// change there wakes a pass over the host (which plans every overlay namespace).
    overlay: std::collections::HashMap<i32, String>,
}

/// How long a retired container interface's removal is expected: the background deletion
/// takes ≈ 20 ms of RCU grace periods, seconds under load.
pub const RETIRED_NOTICE: std::time::Duration = std::time::Duration::from_secs(5);

impl NsWatchTable {
    /// Container `id`'s namespace has id `nsid` (a namespace gone gives its id to a later
    /// one: the newest registration holds it).
    pub fn watch(&mut self, nsid: i32, id: &str) {
        self.by_nsid.insert(nsid, id.to_string());
    }

    /// Container `id` exited: its namespace is no longer watched, unless the id went to a
    /// later container's namespace meanwhile.
    pub fn unwatch(&mut self, nsid: i32, id: &str) {
        if self.by_nsid.get(&nsid).is_some_and(|v| v == id) {
            self.by_nsid.remove(&nsid);
        }
    }

    /// Container `id`'s interface `ifname` was retired at `now`: its removal is expected for
    /// [`RETIRED_NOTICE`]. Older entries are forgotten here (the table stays as small as the
    /// disconnects of the last seconds).
    pub fn expect_gone(&mut self, id: &str, ifname: &str, now: std::time::Instant) {
        self.retired
            .retain(|_, at| now.saturating_duration_since(*at) < RETIRED_NOTICE);
        self.retired
            .insert((id.to_string(), ifname.to_string()), now);
    }

    /// Whether the removal of link `name` in the namespace with id `nsid` is one berth expects
    /// (see [`NsWatchTable::expect_gone`]), at `now`.
    pub fn expects_gone(&self, nsid: i32, name: &str, now: std::time::Instant) -> bool {
        self.by_nsid.get(&nsid).is_some_and(|id| {
            self.retired
                .get(&(id.clone(), name.to_string()))
                .is_some_and(|at| now.saturating_duration_since(*at) < RETIRED_NOTICE)
        })
    }

    /// Overlay namespace `path` has id `nsid` (the newest registration of an id holds it).
    pub fn watch_overlay(&mut self, nsid: i32, path: &str) {
        self.overlay.retain(|_, p| p != path);
        self.overlay.insert(nsid, path.to_string());
    }

    /// Overlay namespaces no longer watched: those not in `keep` (paths).
    pub fn unwatch_overlay_except(&mut self, keep: &BTreeSet<String>) {
        self.overlay.retain(|_, p| keep.contains(p));
    }

    /// Whether overlay namespace `path` is watched.
    pub fn watches_overlay(&self, path: &str) -> bool {
        self.overlay.values().any(|p| p == path)
    }

    /// Whether these notices call for a pass over the host: a change in an overlay network's
    /// namespace (its bridge, VXLAN port, uplink peer or endpoints' host sides), or lost
    /// notifications while any is watched.
    pub fn wakes_host(&self, notices: &[berth_kernel::monitor::NsNotice]) -> bool {
        use berth_kernel::monitor::NsNotice;
        notices.iter().any(|n| match n {
            NsNotice::Nsid(k) => self.overlay.contains_key(k),
            NsNotice::Lost => !self.overlay.is_empty(),
        })
    }

    /// The containers to look at for these notices, each once, in id order: the namespace's
    /// for a change in a watched one, every watched one for lost notifications, none for a
    /// namespace that is not watched (a container still starting, or not berth's).
    pub fn wakes(&self, notices: &[berth_kernel::monitor::NsNotice]) -> Vec<String> {
        use berth_kernel::monitor::NsNotice;
        let mut ids = BTreeSet::new();
        for n in notices {
            match n {
                NsNotice::Nsid(k) => ids.extend(self.by_nsid.get(k).cloned()),
                NsNotice::Lost => ids.extend(self.by_nsid.values().cloned()),
            }
        }
        ids.into_iter().collect()
    }
}

/// The container namespaces' notifications: one [`berth_kernel::monitor::NamespacesMonitor`]
/// for all of them (opened at the first watch) and the [`NsWatchTable`] that tells whose a
/// notification is.
#[derive(Default)]
pub struct NsWatch {
    table: Arc<std::sync::Mutex<NsWatchTable>>,
    /// Whether the subscription is open (set once, at the first watch).
    started: std::sync::OnceLock<bool>,
}

impl NsWatch {
    /// Opens the subscription and starts its reader (once); whether it is open. Must run
    /// inside the runtime.
    fn ensure_started(&self, wake: &tokio::sync::mpsc::UnboundedSender<Wake>) -> bool {
        *self.started.get_or_init(|| {
            let mut m = match berth_kernel::monitor::NamespacesMonitor::open() {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(
                        "no notifications from container namespaces, drift there found by the timer only: {e}"
                    );
                    return false;
                }
            };
            let (table, tx) = (self.table.clone(), wake.clone());
            let expected = self.table.clone();
            tokio::spawn(async move {
                // A disconnected veth's container side goes with its host side in the
                // background deletion: that removal looked like drift, and the pass it woke
                // waited for RTNL behind the deletion's grace periods holding the daemon's lock
                // (7–42 ms, which the next connect waited for: stop 28).
                let gone = move |nsid: i32, name: &str| {
                    expected.lock().is_ok_and(|t| {
                        t.expects_gone(nsid, name, std::time::Instant::now())
                    })
                };
                while let Ok(notices) = m.next_except(&gone).await {
                    let (ids, host) = table
                        .lock()
                        .map(|t| (t.wakes(&notices), t.wakes_host(&notices)))
                        .unwrap_or_default();
                    if host && tx.send(Wake::Host).is_err() {
                        return;
                    }
                    for id in ids {
                        if tx.send(Wake::Container(id)).is_err() {
                            return;
                        }
                    }
                }
            });
            true
        })
    }

    fn watch(&self, nsid: i32, id: &str) {
        if let Ok(mut t) = self.table.lock() {
            t.watch(nsid, id);
        }
    }

    fn unwatch(&self, nsid: i32, id: &str) {
        if let Ok(mut t) = self.table.lock() {
            t.unwatch(nsid, id);
        }
    }

    /// Container `id`'s interface `ifname` is being retired (see [`NsWatchTable::expect_gone`]).
    pub(crate) fn expect_gone(&self, id: &str, ifname: &str) {
        if let Ok(mut t) = self.table.lock() {
            t.expect_gone(id, ifname, std::time::Instant::now());
        }
    }
}

impl Daemon {
    /// A dry-run full pass (under the lock, so it never sees an operation half-done).
    pub async fn check(&self) -> ApiResult<SystemCheck> {
        let _guard = self.lock.lock().await;
        let rep = self.converge(Trigger::Check, Scope::Full, true).await?;
        let mut summary: BTreeMap<String, CheckCount> = BTreeMap::new();
        let nets = self.networks()?;
        let running = self.running(self.containers()?)?;
        // An overlay network's link in the host is its namespace's uplink (none when internal).
        let links: Vec<String> = nets
            .iter()
            .filter_map(|n| match n.driver {
                berth_plan::model::Driver::Overlay => berth_plan::overlayns::firewall_key(n),
                d => berth_plan::driver::driver(d).network_link(n),
            })
            .collect();
        let b = summary.entry("NetworkLinks".into()).or_default();
        b.desired = links.len();
        b.observed = links
            .iter()
            .filter(|n| rep.observed.links.contains_key(n.as_str()))
            .count();
        let driver_of = |id: &str| nets.iter().find(|n| n.id == id).map(|n| n.driver);
        let veths: Vec<&str> = running
            .iter()
            .filter(|(c, _)| c.mode == NetworkMode::Networks)
            .flat_map(|(c, _)| c.endpoints.iter())
            .filter(|e| driver_of(&e.network_id).is_some_and(|d| d.has_bridge()))
            .map(|e| e.host_ifname.as_str())
            .collect();
        // Container interfaces on a host interface (macvlan, ipvlan), in their namespaces.
        let sublinks: Vec<(&str, &str)> = running
            .iter()
            .filter(|(c, _)| c.mode == NetworkMode::Networks)
            .flat_map(|(c, ns)| c.endpoints.iter().map(move |e| (e, ns.as_str())))
            .filter(|(e, _)| {
                matches!(
                    driver_of(&e.network_id),
                    Some(berth_plan::model::Driver::Macvlan | berth_plan::model::Driver::Ipvlan)
                )
            })
            .map(|(e, ns)| (ns, e.ifname.as_str()))
            .collect();
        if !sublinks.is_empty() {
            let s = summary.entry("ContainerSublinks".into()).or_default();
            s.desired = sublinks.len();
            s.observed = sublinks
                .iter()
                .filter(|(ns, ifname)| {
                    rep.observed.netns.get(*ns).is_some_and(|n| {
                        n.links.get(*ifname).is_some_and(|l| {
                            matches!(l.kind.as_deref(), Some("macvlan" | "ipvlan"))
                        })
                    })
                })
                .count();
        }
        let e = summary.entry("Endpoints".into()).or_default();
        e.desired = veths.len();
        e.observed = veths
            .iter()
            .filter(|n| rep.observed.links.contains_key(**n))
            .count();
        let owned = rep
            .observed
            .links
            .values()
            .filter(|l| host::is_owned(l))
            .count();
        summary.entry("OwnedLinks".into()).or_default().observed = owned;
        if let Some(fwo) = &rep.observed.firewall {
            let el = summary.entry("FirewallElements".into()).or_default();
            el.observed = fwo.elements.len();
            el.desired = desired_element_count(self, &nets, &running)?;
        }
        // The overlay namespaces' steps come first (a pass applies them first), their late
        // ones (anti-spoofing elements of retired ports) last.
        let ov = &rep.overlay;
        let ns_step = |s: &berth_plan::overlayns::NsStep| CheckStep {
            action: s.op.action().to_string(),
            object: s.object.clone(),
            reason: s.reason.clone(),
        };
        let steps: Vec<CheckStep> = ov
            .steps
            .iter()
            .map(ns_step)
            .chain(rep.plan.steps.iter().map(|s| CheckStep {
                action: s.action().to_string(),
                object: s.object.clone(),
                reason: s.reason.clone(),
            }))
            .chain(ov.late.iter().map(ns_step))
            .collect();
        Ok(SystemCheck {
            in_sync: steps.is_empty(),
            steps,
            problems: ov
                .problems
                .iter()
                .chain(rep.plan.problems.iter())
                .map(|p| format!("{}: {}", p.object, p.message))
                .collect(),
            summary,
            reconciler: self.reconciler.stats(),
        })
    }
}

/// An API call's pass report as its outcome: a problem (a foreign link in the way) or a full
/// bridge is a 409, failed kernel steps a 500 naming each.
fn api_outcome(rep: PassReport) -> ApiResult<PassReport> {
    if let Some(p) = rep.problems().first() {
        return Err(ApiError::conflict(format!("{}: {}", p.object, p.message)));
    }
    if let Some(full) = rep.full.first() {
        return Err(ApiError::conflict(full.clone()));
    }
    if !rep.errors.is_empty() {
        return Err(ApiError::internal(rep.errors.join("; ")));
    }
    Ok(rep)
}

fn desired_element_count(
    d: &Daemon,
    nets: &[NetworkSpec],
    running: &[(ContainerSpec, String)],
) -> ApiResult<usize> {
    let mut e: Elements = fw::desired_elements(nets);
    let mut in_overlay_ns = BTreeSet::new();
    for (c, _) in running {
        let doc = crate::ports::doc(d, &c.id)?;
        e.extend(&fw::port_elements(&c.name, &doc.published));
        e.extend(&fw::container_guard_elements(c, nets));
        in_overlay_ns.extend(
            c.endpoints
                .iter()
                .filter(|ep| {
                    nets.iter().any(|n| {
                        n.id == ep.network_id && n.driver == berth_plan::model::Driver::Overlay
                    })
                })
                .map(|ep| ep.host_ifname.clone()),
        );
    }
    // Those are in the overlay networks' namespaces' tables, not in the host's.
    fw::remove_guard_ports(&mut e, &in_overlay_ns);
    Ok(e.len())
}

#[cfg(test)]
mod tests {
    use super::NsWatchTable;
    use berth_kernel::monitor::NsNotice;

    #[test]
    fn a_retired_interface_is_expected_gone_in_its_own_namespace_for_a_while() {
        let mut t = NsWatchTable::default();
        t.watch(3, "c1");
        t.watch(4, "c2");
        let t0 = std::time::Instant::now();
        t.expect_gone("c1", "eth1", t0);
        assert!(t.expects_gone(3, "eth1", t0));
        // Another interface, another container's namespace, an unwatched namespace: not ours.
        assert!(!t.expects_gone(3, "eth0", t0));
        assert!(!t.expects_gone(4, "eth1", t0));
        assert!(!t.expects_gone(9, "eth1", t0));
        // Only for a while.
        let later = t0 + super::RETIRED_NOTICE;
        assert!(!t.expects_gone(3, "eth1", later));
        // Old entries go when a new one comes.
        t.expect_gone("c2", "eth2", later);
        assert_eq!(t.retired.len(), 1);
    }

    #[test]
    fn a_notification_wakes_the_container_whose_namespace_it_came_from() {
        let mut t = NsWatchTable::default();
        t.watch(3, "a");
        t.watch(7, "b");
        assert_eq!(t.wakes(&[NsNotice::Nsid(7)]), vec!["b".to_string()]);
        assert_eq!(
            t.wakes(&[NsNotice::Nsid(3), NsNotice::Nsid(7), NsNotice::Nsid(3)]),
            vec!["a".to_string(), "b".to_string()]
        );
        // A namespace nobody registered (a container still starting, someone else's).
        assert!(t.wakes(&[NsNotice::Nsid(9)]).is_empty());
    }

    #[test]
    fn lost_notifications_wake_every_watched_container() {
        let mut t = NsWatchTable::default();
        t.watch(1, "a");
        t.watch(2, "b");
        assert_eq!(
            t.wakes(&[NsNotice::Lost]),
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn an_exited_container_does_not_take_its_namespace_id_from_a_newer_one() {
        let mut t = NsWatchTable::default();
        t.watch(4, "old");
        // The old namespace went; the kernel gave its id to the new container's.
        t.watch(4, "new");
        t.unwatch(4, "old");
        assert_eq!(t.wakes(&[NsNotice::Nsid(4)]), vec!["new".to_string()]);
        t.unwatch(4, "new");
        assert!(t.wakes(&[NsNotice::Nsid(4)]).is_empty());
    }

    /// A change in an overlay network's namespace wakes a pass over the host (no container);
    /// a namespace made again takes its new id; one no longer kept wakes nothing.
    #[test]
    fn an_overlay_namespace_change_wakes_the_host() {
        let mut t = NsWatchTable::default();
        t.watch(3, "a");
        assert!(!t.wakes_host(&[NsNotice::Nsid(3)]));
        assert!(!t.wakes_host(&[NsNotice::Lost]));
        t.watch_overlay(5, "/run/berth/netns/ov-aaaaaaaaa");
        t.watch_overlay(6, "/run/berth/netns/ov-bbbbbbbbb");
        assert!(t.wakes_host(&[NsNotice::Nsid(5)]));
        assert!(t.wakes(&[NsNotice::Nsid(5)]).is_empty());
        assert!(t.wakes_host(&[NsNotice::Lost]));
        // Made again: the new id wakes, the old one no more.
        t.watch_overlay(9, "/run/berth/netns/ov-aaaaaaaaa");
        assert!(!t.wakes_host(&[NsNotice::Nsid(5)]));
        assert!(t.wakes_host(&[NsNotice::Nsid(9)]));
        t.unwatch_overlay_except(&["/run/berth/netns/ov-bbbbbbbbb".to_string()].into());
        assert!(!t.wakes_host(&[NsNotice::Nsid(9)]));
        assert!(t.watches_overlay("/run/berth/netns/ov-bbbbbbbbb"));
    }
}
