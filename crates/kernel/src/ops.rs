//! The kernel seam of the reconcile loop: [`KernelOps`] observes the host and applies one
//! [`StepOp`] at a time. [`HostKernel`] is the real one (netlink, nft, sysctls); [`FakeKernel`]
//! keeps an in-memory host and records every step, so the daemon's decisions (ordering,
//! rollback, repair after an interruption) are unit-tested without root, in milliseconds.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;

use berth_plan::host::{ObserveRequest, ObservedHost, ObservedLink, ObservedNetns, StepOp};

use crate::error::{KernelError, Result};
use crate::gate::LinkGate;
use crate::link::Kernel;

/// One container namespace (a fresh one, made for a container being started, holds nothing
/// yet: not read).
async fn observe_netns((path, fresh): (String, bool)) -> Result<(String, ObservedNetns)> {
    let ns = if fresh {
        ObservedNetns {
            reachable: true,
            ..Default::default()
        }
    } else {
        crate::observe::netns(&path).await?
    };
    Ok((path, ns))
}

/// How many container namespaces one observation reads at a time, each from a thread inside
/// it (a thread start and three dumps, mostly waiting under load): a full pass over 1,000
/// containers (start-up, the periodic check) must neither take seconds nor start 1,000
/// threads at once.
const NETNS_IN_FLIGHT: usize = 16;

/// A boxed, sendable future (the trait must stay object-safe: the daemon holds a
/// `Arc<dyn KernelOps>`).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the reconcile loop needs from the kernel.
pub trait KernelOps: Send + Sync {
    /// Reads back what `req` asks for.
    fn observe<'a>(&'a self, req: &'a ObserveRequest) -> BoxFut<'a, Result<ObservedHost>>;
    /// Executes one step. Steps are idempotent: applying one twice is harmless.
    fn apply<'a>(&'a self, op: &'a StepOp) -> BoxFut<'a, Result<()>>;
    /// Executes one step that must not let traffic through before `gate` is open (an
    /// endpoint whose guarding firewall elements are being applied at the same time, see
    /// [`crate::gate`]). By default it waits for the gate, then applies; a kernel that can
    /// do the step's work up to the link's `IFF_UP` meanwhile overrides it.
    fn apply_gated<'a>(&'a self, op: &'a StepOp, gate: &'a LinkGate) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            gate.wait().await?;
            self.apply(op).await
        })
    }
    /// Deletes link `name` (`Ok` when missing) for a caller that does not wait for it (a
    /// veth deleted in the background). By default the same as applying
    /// [`StepOp::DeleteLink`]; a kernel whose deletion blocks its sender overrides it.
    fn delete_link_detached(&self, name: String) -> BoxFut<'_, Result<()>> {
        Box::pin(async move { self.apply(&StepOp::DeleteLink { name, netns: None }).await })
    }
}

/// The real kernel of berthd's network namespace.
///
/// Steps on an endpoint whose host side is in an overlay network's namespace (their
/// `host_netns`, `netns` of a deletion or of a VXLAN port's entries) run through the kernel
/// kept for that namespace in [`crate::overlayns::Namespaces`].
#[derive(Debug, Clone)]
pub struct HostKernel {
    link: Kernel,
    namespaces: std::sync::Arc<crate::overlayns::Namespaces>,
}

impl HostKernel {
    /// Wraps the netlink connection of berthd's namespace.
    pub fn new(link: Kernel) -> HostKernel {
        HostKernel::with_namespaces(link, Default::default())
    }

    /// Wraps the netlink connection of berthd's namespace, with the kernels kept for the
    /// overlay networks' namespaces (shared with the overlay steps, which make them).
    pub fn with_namespaces(
        link: Kernel,
        namespaces: std::sync::Arc<crate::overlayns::Namespaces>,
    ) -> HostKernel {
        HostKernel { link, namespaces }
    }

    /// The kernel of berthd's namespace (`None`), or of the overlay namespace at `netns`.
    async fn kernel_of(&self, netns: Option<&String>) -> Result<Kernel> {
        match netns {
            None => Ok(self.link.clone()),
            Some(p) => self.namespaces.kernel(Path::new(p)).await,
        }
    }

    /// The veths of the overlay namespaces `paths` (endpoints' host sides; not their uplink
    /// peer), each marked with its namespace; only those named in `only` when given. A
    /// namespace that is not mounted (being made again) has none.
    async fn overlay_links(
        &self,
        paths: &std::collections::BTreeSet<String>,
        only: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<BTreeMap<String, ObservedLink>> {
        let mut out = BTreeMap::new();
        for path in paths {
            let there = match self.namespaces.kernel(Path::new(path)).await {
                Ok(k) => k,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let links = crate::observe::host_links(&there, only).await?;
            for (name, mut l) in links {
                if l.kind.as_deref() != Some("veth") || name == berth_plan::overlayns::UPLINK_PEER {
                    continue;
                }
                l.netns = Some(path.clone());
                out.insert(name, l);
            }
        }
        Ok(out)
    }

    async fn observe_impl(&self, req: &ObserveRequest) -> Result<ObservedHost> {
        use futures::{StreamExt, TryStreamExt};
        // The parts are independent reads: the host's links, routes and VXLAN entries over
        // berthd's rtnetlink socket, each container namespace on a short-lived thread of its
        // own, a few /proc/sys files, the nft table. Issued together, a scoped pass waits for
        // the slowest, not the sum (a connect's observation: 2.2 ms one after the other). The
        // reads on berthd's own socket stay one after the other: a netlink socket runs one
        // dump at a time (netlink_dump_start: EBUSY while another is in progress).
        let host = async {
            let mut links = crate::observe::host_links(&self.link, req.links.as_ref()).await?;
            for (name, l) in self
                .overlay_links(&req.overlay_netns, req.links.as_ref())
                .await?
            {
                // A name in both: the host's one is the old shape's, replaced first.
                links.entry(name).or_insert(l);
            }
            let link_routes = self.link.link_routes(&req.routes_of).await?;
            let vxlan_entries = self.link.vxlans_entries(&req.vxlan_entries_of).await?;
            Ok::<_, KernelError>((links, link_routes, vxlan_entries))
        };
        let paths: Vec<(String, bool)> = req
            .netns
            .iter()
            .map(|p| (p.clone(), req.fresh_netns.contains(p)))
            .collect();
        let netns = futures::stream::iter(paths)
            .map(observe_netns)
            .buffer_unordered(NETNS_IN_FLIGHT)
            .try_collect::<BTreeMap<_, _>>();
        // The nft process is blocking: off the runtime's workers.
        let firewall = async {
            if !req.firewall {
                return Ok(None);
            }
            tokio::task::spawn_blocking(crate::observe::firewall)
                .await
                .map_err(|e| KernelError::invalid("reading the nft table", e.to_string()))?
                .map(Some)
        };
        // A few reads of /proc/sys files: procfs answers from memory, no need to leave the
        // worker for them (they run while the requests above are in flight).
        let sysctls = async { crate::observe::sysctls(&req.sysctls) };
        let ((links, link_routes, vxlan_entries), netns, firewall, sysctls) =
            futures::try_join!(host, netns, firewall, sysctls)?;
        Ok(ObservedHost {
            links,
            all_links: req.links.is_none(),
            netns,
            sysctls,
            firewall,
            link_routes,
            vxlan_entries,
        })
    }

    async fn apply_impl(&self, op: &StepOp) -> Result<()> {
        match op {
            StepOp::FirewallBase { config } => {
                let script = berth_plan::firewall::base_script(config);
                blocking(move || crate::nft::apply(None, &script)).await
            }
            StepOp::FirewallElements { changes, .. } => {
                // A connect's or a disconnect's few elements are sent from this worker: one
                // `sendmsg` and its acknowledgements, ≈ 0.1 ms of kernel work, where the
                // hand-off to a blocking thread waited 0.3 ms median for a CPU (2 cores, the
                // endpoint's thread on the other; stop 39), and the endpoint's gate waits for
                // this. A bigger batch (a port range: milliseconds) or a socket in use by
                // another change goes to a blocking thread, as every change did before.
                let elements: usize = changes.iter().map(|c| c.add.len() + c.delete.len()).sum();
                if elements <= INLINE_ELEMENTS {
                    if let Some(result) = crate::nft::try_apply_changes_now(changes) {
                        return result;
                    }
                }
                let changes = changes.clone();
                blocking(move || crate::nft::apply_changes(&changes)).await
            }
            StepOp::SetSysctl { key, value } => {
                let (key, value) = (key.clone(), value.clone());
                blocking(move || match crate::sysctl::write(None, &key, &value) {
                    // A per-interface IPv6 key is missing when IPv6 is off in the kernel.
                    Err(e) if e.is_not_found() && berth_plan::host::is_link_sysctl(&key) => Ok(()),
                    other => other,
                })
                .await
            }
            StepOp::CreateBridge { plan, alias } => {
                self.link.configure_bridge(plan, Some(alias), false).await
            }
            StepOp::ConfigureBridge {
                plan,
                alias,
                keep_others,
            } => {
                self.link
                    .configure_bridge(plan, alias.as_deref(), *keep_others)
                    .await
            }
            StepOp::CreateEndpoint { plan, alias } => {
                self.kernel_of(plan.host_netns.as_ref())
                    .await?
                    .setup_endpoint_marked(plan, Some(alias))
                    .await
            }
            StepOp::AttachPort {
                veth,
                bridge,
                isolated,
                alias,
                host_netns,
            } => {
                self.kernel_of(host_netns.as_ref())
                    .await?
                    .attach_port(veth, bridge, *isolated, alias)
                    .await
            }
            StepOp::CreateSublink { plan } => self.link.create_sublink(plan).await,
            StepOp::EnsureShim { plan } => self.link.ensure_shim(plan).await,
            StepOp::EnsureParent { plan } => self.link.ensure_parent(plan).await,
            StepOp::DeleteContainerLink { netns, ifname } => {
                crate::sublink::delete_container_link(Path::new(netns), ifname).await
            }
            StepOp::ConfigureContainerSide {
                netns,
                ifname,
                addrs,
                announce,
                host_ifname,
                host_netns,
            } => {
                self.kernel_of(host_netns.as_ref())
                    .await?
                    .configure_container_side(
                        Path::new(netns),
                        ifname,
                        addrs,
                        *announce,
                        host_ifname.as_deref(),
                    )
                    .await
            }
            StepOp::SetEndpointMtu {
                veth,
                netns,
                ifname,
                mtu,
                host_netns,
            } => {
                self.kernel_of(host_netns.as_ref())
                    .await?
                    .set_endpoint_mtu(veth, Path::new(netns), ifname, *mtu)
                    .await
            }
            StepOp::ReplaceRoutes { netns, routes } => {
                self.link.replace_routes(Path::new(netns), routes).await
            }
            StepOp::RemoveAddrs { link, addrs } => self.link.remove_addrs(link, addrs).await,
            StepOp::RetireContainerSide {
                netns,
                ifname,
                rename_to,
            } => {
                self.link
                    .retire_container_side(Path::new(netns), ifname, rename_to.as_deref())
                    .await
            }
            StepOp::DeleteLink { name, netns } => {
                self.kernel_of(netns.as_ref())
                    .await?
                    .delete_link(name)
                    .await
            }
            StepOp::CreateVxlan { plan } => self.link.create_vxlan(plan).await,
            StepOp::SetVxlanEntries {
                dev,
                fdb_add,
                fdb_del,
                neigh_add,
                neigh_del,
                netns,
            } => {
                self.kernel_of(netns.as_ref())
                    .await?
                    .set_vxlan_entries(dev, fdb_add, fdb_del, neigh_add, neigh_del)
                    .await
            }
        }
    }
}

/// Element changes at most this big are sent from the calling worker (see
/// `StepOp::FirewallElements` in `apply_impl`): an endpoint's anti-spoofing elements are 3–4,
/// a container's on two networks with a few published ports a dozen or two.
const INLINE_ELEMENTS: usize = 32;

async fn blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KernelError::invalid("blocking kernel call", e.to_string()))?
}

impl KernelOps for HostKernel {
    fn observe<'a>(&'a self, req: &'a ObserveRequest) -> BoxFut<'a, Result<ObservedHost>> {
        Box::pin(self.observe_impl(req))
    }
    /// On a blocking thread with a socket of its own: a veth's `RTM_DELLINK` holds its sender
    /// in the kernel for the whole unregistration (`netdev_run_todo`'s waits for the last
    /// references and RCU, after RTNL is released: 14 ms measured under `strace`). Sent on the
    /// shared async connection, it held a runtime worker that long and queued every later
    /// request of that connection behind it, the next disconnect's deletion included, whose
    /// interface then kept its name long enough for a connect right after to collide with it
    /// (stop 29).
    fn delete_link_detached(&self, name: String) -> BoxFut<'_, Result<()>> {
        let link = self.link.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || link.delete_link_blocking(&name))
                .await
                .map_err(|e| KernelError::invalid("deleting a link", e.to_string()))?
        })
    }
    fn apply<'a>(&'a self, op: &'a StepOp) -> BoxFut<'a, Result<()>> {
        Box::pin(self.apply_impl(op))
    }
    fn apply_gated<'a>(&'a self, op: &'a StepOp, gate: &'a LinkGate) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            match op {
                // The link is made and configured while the gate's step runs; its IFF_UP
                // waits for the gate.
                StepOp::CreateEndpoint { plan, alias } => {
                    self.kernel_of(plan.host_netns.as_ref())
                        .await?
                        .setup_endpoint_gated(plan, Some(alias), Some(gate.clone()))
                        .await
                }
                StepOp::CreateSublink { plan } => {
                    self.link
                        .create_sublink_gated(plan, Some(gate.clone()))
                        .await
                }
                _ => {
                    gate.wait().await?;
                    self.apply_impl(op).await
                }
            }
        })
    }
}

/// An in-memory kernel: observation returns its state, every applied step is recorded and
/// changes the state as the real kernel would. `fail_at` makes the n-th apply (0-based, over
/// the fake's life) fail without changing anything, like an interrupted pass.
#[derive(Debug, Default)]
pub struct FakeKernel {
    /// The host as the fake kernel has it (links of berthd's namespace, container namespaces,
    /// sysctls, the nft table).
    pub state: Mutex<ObservedHost>,
    /// Every step applied so far, in order.
    pub log: Mutex<Vec<StepOp>>,
    /// Fail the apply with this index (counting every apply call).
    pub fail_at: Mutex<Option<usize>>,
    /// The links deleted through [`KernelOps::delete_link_detached`] (also in `log`).
    pub detached: Mutex<Vec<String>>,
    calls: Mutex<usize>,
}

impl FakeKernel {
    /// A fake host with nothing of berth's on it.
    pub fn new() -> FakeKernel {
        FakeKernel::default()
    }

    /// The steps applied so far (and clears the record).
    pub fn take_log(&self) -> Vec<StepOp> {
        self.log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    /// Changes the fake host (to inject drift).
    pub fn with_state<T>(&self, f: impl FnOnce(&mut ObservedHost) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    fn apply_to(state: &mut ObservedHost, op: &StepOp) {
        match op {
            StepOp::FirewallBase { config } => {
                let fw = state.firewall.get_or_insert_with(Default::default);
                fw.rules = berth_plan::firewall::static_rules(config);
            }
            StepOp::FirewallElements { after, .. } => {
                let fw = state.firewall.get_or_insert_with(Default::default);
                fw.elements = after.clone();
            }
            StepOp::SetSysctl { key, value } => {
                state.sysctls.insert(key.clone(), value.clone());
            }
            StepOp::CreateBridge { plan, alias }
            | StepOp::ConfigureBridge {
                plan,
                alias: Some(alias),
                ..
            } => {
                let l = state.links.entry(plan.name.clone()).or_default();
                l.name = plan.name.clone();
                l.kind = Some("bridge".into());
                l.up = true;
                l.mtu = plan.mtu;
                l.alias = Some(alias.clone());
                l.forward_delay = Some(0);
                l.mcast_snooping = Some(false);
                if l.mac.is_none() {
                    l.mac = Some(berth_plan::names::owner_mac(&plan.name));
                }
                l.addrs = plan.addrs.clone();
            }
            StepOp::ConfigureBridge {
                plan, alias: None, ..
            } => {
                let l = state.links.entry(plan.name.clone()).or_default();
                l.up = true;
                l.mtu = plan.mtu;
                for a in &plan.addrs {
                    if !l.addrs.contains(a) {
                        l.addrs.push(*a);
                    }
                }
            }
            StepOp::CreateEndpoint { plan, alias } => {
                state.links.insert(
                    plan.host_ifname.clone(),
                    ObservedLink {
                        name: plan.host_ifname.clone(),
                        kind: Some("veth".into()),
                        master: Some(plan.bridge.clone()),
                        up: true,
                        mtu: plan.mtu,
                        alias: Some(alias.clone()),
                        mac: Some(berth_plan::names::owner_mac(&plan.host_ifname)),
                        addrs: Vec::new(),
                        port_flags: Some((true, plan.isolated)),
                        forward_delay: None,
                        mcast_snooping: None,
                        netns: plan.host_netns.clone(),
                    },
                );
                let ns = state.netns.entry(plan.netns.clone()).or_default();
                ns.reachable = true;
                ns.links.insert(
                    plan.ifname.clone(),
                    ObservedLink {
                        name: plan.ifname.clone(),
                        kind: Some("veth".into()),
                        up: true,
                        mtu: plan.mtu,
                        addrs: plan.addrs.clone(),
                        ..ObservedLink::default()
                    },
                );
                if !plan.routes.is_empty() {
                    ns.default_routes = plan.routes.clone();
                }
            }
            StepOp::CreateSublink { plan } => {
                let ns = state.netns.entry(plan.netns.clone()).or_default();
                ns.reachable = true;
                ns.links.insert(
                    plan.ifname.clone(),
                    ObservedLink {
                        name: plan.ifname.clone(),
                        kind: Some(plan.kind.kind().into()),
                        up: true,
                        mtu: 1500,
                        mac: plan.mac.as_deref().and_then(berth_plan::names::parse_mac),
                        addrs: plan.addrs.clone(),
                        ..ObservedLink::default()
                    },
                );
                if !plan.routes.is_empty() {
                    ns.default_routes = plan.routes.clone();
                }
            }
            StepOp::EnsureParent { plan } => {
                let l = state.links.entry(plan.name.clone()).or_default();
                l.name = plan.name.clone();
                l.kind = Some(plan.kind.kind().into());
                l.up = true;
                l.mtu = 1500;
                l.alias = Some(plan.alias.clone());
            }
            StepOp::EnsureShim { plan } => {
                let l = state.links.entry(plan.name.clone()).or_default();
                l.name = plan.name.clone();
                l.kind = Some("macvlan".into());
                l.up = true;
                l.mtu = 1500;
                l.alias = Some(plan.alias.clone());
                if l.mac.is_none() {
                    l.mac = Some(berth_plan::names::owner_mac(&plan.name));
                }
                let routes = state.link_routes.entry(plan.name.clone()).or_default();
                for r in &plan.routes {
                    if !routes.contains(&r.dst) {
                        routes.push(r.dst);
                    }
                }
            }
            StepOp::DeleteContainerLink { netns, ifname } => {
                if let Some(n) = state.netns.get_mut(netns) {
                    n.links.remove(ifname);
                    // Routes through it go with it (the fake has one gateway interface).
                    if n.links.is_empty() {
                        n.default_routes.clear();
                    }
                }
            }
            StepOp::AttachPort {
                veth,
                bridge,
                isolated,
                alias,
                ..
            } => {
                if let Some(l) = state.links.get_mut(veth) {
                    l.master = Some(bridge.clone());
                    l.up = true;
                    l.alias = Some(alias.clone());
                    l.port_flags = Some((true, *isolated));
                }
            }
            StepOp::ConfigureContainerSide {
                netns,
                ifname,
                addrs,
                ..
            } => {
                if let Some(l) = state
                    .netns
                    .get_mut(netns)
                    .and_then(|n| n.links.get_mut(ifname))
                {
                    l.up = true;
                    for a in addrs {
                        if !l.addrs.contains(a) {
                            l.addrs.push(*a);
                        }
                    }
                }
            }
            StepOp::SetEndpointMtu {
                veth,
                netns,
                ifname,
                mtu,
                ..
            } => {
                if let Some(l) = state.links.get_mut(veth) {
                    l.mtu = *mtu;
                }
                if let Some(l) = state
                    .netns
                    .get_mut(netns)
                    .and_then(|n| n.links.get_mut(ifname))
                {
                    l.mtu = *mtu;
                }
            }
            StepOp::ReplaceRoutes { netns, routes } => {
                if let Some(n) = state.netns.get_mut(netns) {
                    n.default_routes = routes.clone();
                }
            }
            StepOp::RemoveAddrs { link, addrs } => {
                if let Some(l) = state.links.get_mut(link) {
                    l.addrs.retain(|a| !addrs.contains(a));
                }
            }
            StepOp::RetireContainerSide {
                netns,
                ifname,
                rename_to,
            } => {
                if let Some(n) = state.netns.get_mut(netns) {
                    if let Some(l) = n.links.get_mut(ifname) {
                        l.up = false;
                        l.addrs.clear();
                    }
                    if let Some(to) = rename_to {
                        if let Some(mut l) = n.links.remove(ifname) {
                            l.name = to.clone();
                            n.links.insert(to.clone(), l);
                        }
                    }
                }
            }
            StepOp::CreateVxlan { plan } => {
                let l = state.links.entry(plan.name.clone()).or_default();
                l.name = plan.name.clone();
                l.kind = Some("vxlan".into());
                l.master = Some(plan.bridge.clone());
                l.up = true;
                l.mtu = plan.mtu;
                l.alias = Some(plan.alias.clone());
                l.mac = Some(berth_plan::names::owner_mac(&plan.name));
                state.vxlan_entries.remove(&plan.name);
            }
            StepOp::SetVxlanEntries {
                dev,
                fdb_add,
                fdb_del,
                neigh_add,
                neigh_del,
                ..
            } => {
                let e = state.vxlan_entries.entry(dev.clone()).or_default();
                for m in fdb_del {
                    e.fdb.remove(m);
                }
                for ip in neigh_del {
                    e.neigh.remove(ip);
                }
                e.fdb.extend(fdb_add.iter().cloned());
                e.neigh.extend(neigh_add.iter().cloned());
            }
            StepOp::DeleteLink { name, .. } => {
                state.link_routes.remove(name);
                state.vxlan_entries.remove(name);
                if let Some(l) = state.links.remove(name) {
                    if l.kind.as_deref() == Some("bridge") {
                        for other in state.links.values_mut() {
                            if other.master.as_deref() == Some(name.as_str()) {
                                other.master = None;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl KernelOps for FakeKernel {
    fn delete_link_detached(&self, name: String) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            if let Ok(mut d) = self.detached.lock() {
                d.push(name.clone());
            }
            self.apply(&StepOp::DeleteLink { name, netns: None }).await
        })
    }
    fn observe<'a>(&'a self, req: &'a ObserveRequest) -> BoxFut<'a, Result<ObservedHost>> {
        Box::pin(async move {
            let state = self
                .state
                .lock()
                .map_err(|_| KernelError::invalid("fake kernel", "state lock poisoned"))?;
            let mut o = ObservedHost {
                all_links: req.links.is_none(),
                ..ObservedHost::default()
            };
            for (name, l) in &state.links {
                if req.links.as_ref().is_none_or(|only| only.contains(name)) {
                    o.links.insert(name.clone(), l.clone());
                }
            }
            for path in &req.netns {
                // A namespace the fake has not seen is a fresh one (only `lo`); a test marks a
                // dead container's namespace `reachable: false`.
                let ns = state.netns.get(path).cloned().unwrap_or(ObservedNetns {
                    reachable: true,
                    ..ObservedNetns::default()
                });
                o.netns.insert(path.clone(), ns);
            }
            for k in &req.sysctls {
                if let Some(v) = state.sysctls.get(k) {
                    o.sysctls.insert(k.clone(), v.clone());
                }
            }
            if req.firewall {
                o.firewall = Some(state.firewall.clone().unwrap_or_default());
            }
            for name in &req.routes_of {
                if let Some(r) = state.link_routes.get(name) {
                    o.link_routes.insert(name.clone(), r.clone());
                }
            }
            Ok(o)
        })
    }

    fn apply<'a>(&'a self, op: &'a StepOp) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let n = {
                let mut c = self
                    .calls
                    .lock()
                    .map_err(|_| KernelError::invalid("fake kernel", "lock poisoned"))?;
                *c += 1;
                *c - 1
            };
            if self.fail_at.lock().ok().and_then(|f| *f) == Some(n) {
                return Err(KernelError::invalid(
                    "fake kernel",
                    format!("injected failure at step {n}"),
                ));
            }
            let mut state = self
                .state
                .lock()
                .map_err(|_| KernelError::invalid("fake kernel", "state lock poisoned"))?;
            // As the kernel: a veth cannot be made a port of a bridge that does not exist
            // (`RTM_NEWLINK` with `IFLA_MASTER` of a missing index: ENODEV).
            if let StepOp::CreateEndpoint { plan, .. } = op {
                if !state.links.contains_key(&plan.bridge) {
                    return Err(KernelError::invalid(
                        "fake kernel",
                        format!("bridge {} does not exist", plan.bridge),
                    ));
                }
            }
            Self::apply_to(&mut state, op);
            if let Ok(mut log) = self.log.lock() {
                log.push(op.clone());
            }
            Ok(())
        })
    }
}
