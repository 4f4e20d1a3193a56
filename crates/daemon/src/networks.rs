//! Network operations: create, remove, prune, connect, disconnect. Each writes the intent to the
//! store and runs a reconcile pass scoped to what changed; a pass that fails for a new object
//! takes the intent back and converges again, which removes whatever the first pass made (only
//! links carrying berth's mark are ever removed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_plan::host::{self, ObserveRequest};
use berth_plan::model::{ContainerSpec, Driver, NetworkMode, NetworkSpec, Status};
use berth_plan::names;
use berth_plan::network::{self as planner, EndpointRequest, NetworkRequest};
use berth_store::Op;
use ipnet::IpNet;

use crate::converge::Scope;
use crate::daemon::{keys, mode_name, new_id, now_rfc3339, Daemon};
use crate::error::{ApiError, ApiResult};
use crate::failpoint;

impl Daemon {
    /// `POST /networks/create`.
    pub async fn create_network(&self, req: NetworkRequest) -> ApiResult<NetworkSpec> {
        let _guard = self.lock.lock().await;
        let _op = failpoint::Op::begin("network_create");
        if req.driver.as_deref() == Some("overlay") && self.cluster.is_none() {
            return Err(self.overlay_refusal());
        }
        let existing = self.networks()?;
        let routes = self.kernel.routes().await?;
        // Our own bridges' routes are networks already; only the rest are "the host's".
        let own: BTreeSet<IpNet> = existing
            .iter()
            .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
            .collect();
        let host_routes: Vec<IpNet> = routes.into_iter().filter(|r| !own.contains(r)).collect();
        // An overlay network's MTU fits the smallest underlay among the cluster's hosts. Only
        // an overlay asks etcd: a bridge network's create is local work.
        let underlay = match (&self.cluster, req.driver.as_deref()) {
            (Some(c), Some("overlay")) => c.underlay(),
            _ => Default::default(),
        };
        let mut spec = planner::plan_network_on(
            &req,
            new_id(),
            now_rfc3339(),
            &existing,
            &host_routes,
            underlay,
        )?;
        let drv = berth_plan::driver::driver(spec.driver);
        if let Some(link) = drv.network_link(&spec) {
            self.check_network_link(&link, &mut spec, &existing).await?;
        }
        if let Some(module) = drv.kernel_module() {
            if !kind_supported(module).await? {
                return Err(ApiError::bad_request(format!(
                    "cannot create {} network {:?}: this kernel has no {module} support (the \
                     kernel module {module} is neither loaded nor loadable; try modprobe {module})",
                    drv.name(),
                    spec.name
                )));
            }
        }
        if let Some(parent) = drv.parent(&spec) {
            self.check_parent(&parent, &mut spec).await?;
        }
        if let (Some(cl), Driver::Overlay) = (&self.cluster, spec.driver) {
            // Cluster-wide first (name and VXLAN id claimed there); every other host's watch
            // builds it too.
            cl.create_network(&mut spec)?;
        }
        self.store
            .apply(vec![Op::put_json(keys::network(&spec.id), &spec)])?;
        failpoint::boundary("store network");
        let result = self
            .converge_api(Scope::Networks {
                ids: vec![spec.id.clone()],
                also: vec![],
            })
            .await;
        if let Err(e) = result {
            // Roll back: take the intent back and converge again; only what carries berth's
            // mark (what the failed pass made) is removed.
            self.store
                .apply(vec![Op::Delete(keys::network(&spec.id))])?;
            if let (Some(cl), Driver::Overlay) = (&self.cluster, spec.driver) {
                if let Err(e2) = cl.remove_network(&spec) {
                    tracing::warn!("cluster: taking back network {}: {}", spec.name, e2.message);
                }
            }
            self.release_network(&spec).await;
            return Err(e);
        }
        self.dns_refresh();
        tracing::info!(network = %spec.name, id = %names::short_id(&spec.id), "network created");
        Ok(spec)
    }

    /// The link `name` of berthd's namespace as the kernel has it (with berth's marks), if any.
    async fn observe_link(&self, name: &str) -> ApiResult<Option<berth_plan::host::ObservedLink>> {
        let req = ObserveRequest {
            links: Some(BTreeSet::from([name.to_string()])),
            ..ObserveRequest::default()
        };
        let mut observed = self
            .reconciler
            .kernel()
            .observe(&req)
            .await
            .map_err(|e| ApiError::internal(format!("looking up link {name}: {e}")))?;
        Ok(observed.links.remove(name))
    }

    /// The parent of a macvlan/ipvlan network must exist and not be one of berth's own links.
    /// A parent `BASE.VID` that does not exist is an 802.1Q sub-interface berth would have to
    /// create: refused naming the module 8021q when the kernel lacks it.
    async fn check_parent(&self, parent: &str, spec: &mut NetworkSpec) -> ApiResult<()> {
        if let Some(seg) = &spec.owned_parent {
            // The isolated segment of an --internal network without -o parent= (the planner
            // named it): a dummy link, as Docker's. Without dummy there is no link that
            // keeps its carrier and drops everything (an empty bridge loses its carrier once
            // its MAC is set; a veth or a VXLAN device would hand the frames to the host).
            if !kind_supported("dummy").await? {
                return Err(ApiError::bad_request(format!(
                    "cannot create --internal {} network {:?} without -o parent=: its isolated \
                     segment is a dummy link, and this kernel has no dummy support (the kernel \
                     module dummy is neither loaded nor loadable; try modprobe dummy), or give \
                     an existing interface as -o parent=",
                    spec.driver.as_str(),
                    spec.name
                )));
            }
            if let Some(link) = self.observe_link(&seg.name).await? {
                if link.alias.as_deref() != Some(seg.alias.as_str()) {
                    return Err(ApiError::conflict(format!(
                        "network {:?}: the link {} berth would create as its isolated segment \
                         exists and is not berth's ({}): remove it",
                        spec.name,
                        seg.name,
                        link.kind.as_deref().unwrap_or("device")
                    )));
                }
            }
            return Ok(());
        }
        let Some(link) = self.observe_link(parent).await? else {
            if let Some(v) = planner::vlan_plan(parent) {
                if !kind_supported("vlan").await? {
                    return Err(ApiError::bad_request(format!(
                        "parent {parent:?} of network {:?} is the 802.1Q sub-interface for VLAN {} \
                         of {}, which does not exist, and this kernel has no 802.1Q support (the \
                         kernel module 8021q is neither loaded nor loadable): load 8021q, or give \
                         an existing interface as -o parent=",
                        spec.name, v.vid, v.base
                    )));
                }
                let Some(base) = self.observe_link(&v.base).await? else {
                    return Err(ApiError::not_found(format!(
                        "parent {parent:?} of network {:?} is the 802.1Q sub-interface for VLAN {} \
                         of {}, and {} does not exist in berthd's network namespace",
                        spec.name, v.vid, v.base, v.base
                    )));
                };
                if host::is_owned(&base) {
                    return Err(ApiError::conflict(format!(
                        "parent {parent:?}: its base {} is one of berth's own links: give a host \
                         interface that faces the LAN",
                        v.base
                    )));
                }
                // berth creates it with the network and removes it with the last network on
                // it (it carries berth's mark; one made by hand never does).
                spec.owned_parent = Some(planner::vlan_parent(&v));
                return Ok(());
            }
            return Err(ApiError::not_found(format!(
                "parent interface {parent:?} of network {:?} does not exist in berthd's network \
                 namespace",
                spec.name
            )));
        };
        let ours = link.alias.as_deref() == Some(planner::parent_alias(parent).as_str());
        if let (true, Some(v)) = (ours, planner::vlan_plan(parent)) {
            // A sub-interface berth created for another network: shared, removed with the
            // last network on it.
            spec.owned_parent = Some(planner::vlan_parent(&v));
        } else if host::is_owned(&link) {
            return Err(ApiError::conflict(format!(
                "parent interface {parent:?} is one of berth's own links ({}): give a host \
                 interface that faces the LAN",
                link.kind.as_deref().unwrap_or("device")
            )));
        }
        if planner::host_shim(spec) {
            // The shim's route needs a source: the host's own address on the LAN.
            let v4 = spec.subnets.iter().find(|s| s.subnet.addr().is_ipv4());
            let src = v4.and_then(|s| {
                host::significant(&link.addrs)
                    .into_iter()
                    .map(|a| a.addr())
                    .find(|a| s.subnet.contains(a))
            });
            let Some(src) = src else {
                return Err(ApiError::bad_request(format!(
                    "option {}=true needs an IPv4 address of the host on {parent} in {}: the \
                     host talks to the network's containers from that address",
                    planner::OPT_HOST_SHIM,
                    v4.map(|s| s.subnet.to_string()).unwrap_or_default()
                )));
            };
            spec.shim_src = Some(src);
        }
        Ok(())
    }

    /// The bridge name must be free, berth's own orphan, or (opted in) an existing bridge to
    /// adopt. Refused with a 409 naming the link and its kind otherwise: berth never takes over
    /// (and later deletes) a link it did not create.
    async fn check_network_link(
        &self,
        name: &str,
        spec: &mut NetworkSpec,
        existing: &[NetworkSpec],
    ) -> ApiResult<()> {
        let name = name.to_string();
        let Some(link) = self.observe_link(&name).await? else {
            if planner::adopts_bridge(spec) {
                return Err(ApiError::not_found(format!(
                    "bridge {name:?} to adopt (-o {}=true) does not exist",
                    planner::OPT_ADOPT_BRIDGE
                )));
            }
            return Ok(());
        };
        let kind = link.kind.as_deref().unwrap_or("device");
        if planner::adopts_bridge(spec) {
            if kind != "bridge" {
                return Err(ApiError::conflict(format!(
                    "cannot adopt {name:?}: it is a {kind} link, not a bridge"
                )));
            }
            spec.adopted_addrs = host::significant(&link.addrs);
            return Ok(());
        }
        let orphan_of_ours = host::is_owned(&link)
            && (kind == "bridge" || (kind == "macvlan" && name.starts_with("bm")))
            && !existing.iter().any(|n| n.bridge == name);
        if orphan_of_ours {
            return Ok(());
        }
        let hint = if kind == "bridge" {
            format!(
                "; to use that bridge anyway, add -o {}=true (berth then never removes it or its addresses)",
                planner::OPT_ADOPT_BRIDGE
            )
        } else {
            String::new()
        };
        Err(ApiError::conflict(format!(
            "bridge name {name:?} is taken by an existing {kind} link that berth did not create: \
             choose another name with -o {}=NAME, or remove that link{hint}",
            planner::OPT_BRIDGE_NAME
        )))
    }

    /// Converges after `net` left the store: its bridge goes if berth made it; an adopted
    /// bridge only loses the gateway addresses berth added. Errors are logged and counted (the
    /// next pass retries), never dropped silently.
    async fn release_network(&self, net: &NetworkSpec) {
        let mut also: Vec<String> = berth_plan::driver::driver(net.driver)
            .network_link(net)
            .into_iter()
            .collect();
        // The parent berth made goes with the last network on it (the pass deletes it only if
        // it carries berth's mark); if the store cannot be read, it stays for the next pass.
        if let Ok(others) = self.networks() {
            also.extend(planner::released_parent(net, &others).map(str::to_string));
        }
        match self
            .converge(
                crate::reconcile::Trigger::Api,
                Scope::Networks { ids: vec![], also },
                false,
            )
            .await
        {
            Ok(rep) => {
                for e in &rep.errors {
                    tracing::warn!(network = %net.name, "removing: {e}");
                }
            }
            Err(e) => tracing::warn!(network = %net.name, "removing: {}", e.message),
        }
        if planner::adopts_bridge(net) {
            let added: Vec<IpNet> = planner::bridge_plan(net)
                .map(|p| p.addrs)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| !net.adopted_addrs.contains(a))
                .collect();
            let op = host::StepOp::RemoveAddrs {
                link: net.bridge.clone(),
                addrs: added,
            };
            if let Err(e) = self.reconciler.kernel().apply(&op).await {
                tracing::warn!(network = %net.name, "removing berth's addresses from adopted bridge {}: {e}", net.bridge);
            }
        }
    }

    /// `DELETE /networks/{id}`.
    pub async fn remove_network(&self, query: &str) -> ApiResult<NetworkSpec> {
        let _guard = self.lock.lock().await;
        let _op = failpoint::Op::begin("network_rm");
        let net = self.find_network(query)?;
        self.remove_network_locked(&net).await?;
        Ok(net)
    }

    async fn remove_network_locked(&self, net: &NetworkSpec) -> ApiResult<()> {
        if net.predefined {
            return Err(ApiError::forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                net.name
            )));
        }
        let users: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| c.endpoints.iter().any(|e| e.network_id == net.id))
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            return Err(ApiError::forbidden(format!(
                "error while removing network: network {} id {} has active endpoints (containers: {}); \
                 disconnect or remove them first",
                net.name,
                net.id,
                users.join(", ")
            )));
        }
        if let (Some(cl), Driver::Overlay) = (&self.cluster, net.driver) {
            // Refused while any host has an endpoint on it; gone from every host after this.
            cl.remove_network(net)?;
        }
        // Intent first, then the kernel: a crash in between leaves a marked bridge no stored
        // network wants, which the next start-up pass removes as an orphan.
        let mut ops = vec![Op::Delete(keys::network(&net.id))];
        ops.extend(crate::ipam::forget_network(self.store.as_ref(), &net.id)?);
        self.store.apply(ops)?;
        failpoint::boundary("delete network");
        self.release_network(net).await;
        self.dns_refresh();
        tracing::info!(network = %net.name, "network removed");
        Ok(())
    }

    /// `POST /networks/prune`: removes unused user networks matching `filters`.
    pub async fn prune_networks(
        &self,
        filters: &BTreeMap<String, Vec<String>>,
    ) -> ApiResult<Vec<String>> {
        let _guard = self.lock.lock().await;
        let _op = failpoint::Op::begin("network_rm");
        let nets = self.networks()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let selected: Vec<NetworkSpec> = planner::prune_candidates(&nets, filters, now)?
            .into_iter()
            .cloned()
            .collect();
        let containers = self.containers()?;
        let mut removed = Vec::new();
        for net in selected {
            let used = containers
                .iter()
                .any(|c| c.endpoints.iter().any(|e| e.network_id == net.id));
            if net.predefined || used {
                continue;
            }
            self.remove_network_locked(&net).await?;
            removed.push(net.name);
        }
        Ok(removed)
    }

    /// Refreshes the DNS table, then rewrites `c`'s `/etc` files, on this worker, beside the
    /// caller's pass (joined with it): it first yields, so the pass plans and sends its first
    /// requests, then does its ~0.16 ms of synchronous work while the pass waits for the
    /// kernel and the endpoint's thread. On a blocking thread instead (until stop 44) it cost
    /// a connect 0.27–0.28 ms more, measured A/B through the CLI: on 2 cores the call is
    /// CPU-bound (the pass, the endpoint's thread, the store's flush), and a fourth thread to
    /// wake and schedule was worth more than the work it took off this one. A failure is
    /// logged (the files follow the intent again at the next change).
    async fn files_beside(&self, c: &ContainerSpec) {
        tokio::task::yield_now().await;
        // The resolver first (a macvlan network may give it one inside its namespace), then
        // the resolv.conf that names it.
        self.dns_refresh();
        if let Err(e) = self.runtime.write_files(self, c) {
            tracing::warn!(container = %c.name, "rewriting /etc files: {}", e.message);
        }
    }

    /// `POST /networks/{id}/connect`.
    pub async fn connect(
        self: &Arc<Self>,
        net_query: &str,
        container_query: &str,
        req: EndpointRequest,
    ) -> ApiResult<()> {
        let began = std::time::Instant::now();
        let _guard = self.lock.lock().await;
        let locked_us = began.elapsed().as_micros() as u64;
        let _op = failpoint::Op::begin("connect");
        let net = self.find_network(net_query)?;
        let mut c = self.find_container(container_query)?;
        if c.mode != NetworkMode::Networks {
            return Err(ApiError::forbidden(format!(
                "container {:?} uses network mode {}: it cannot be connected to other networks",
                c.name,
                mode_name(&c.mode)
            )));
        }
        let found_us = began.elapsed().as_micros() as u64;
        let ep = self.plan_endpoint_claimed(&net, &c, &req, false)?;
        let planned_us = began.elapsed().as_micros() as u64;
        let before = c.clone();
        c.endpoints.push(ep.clone());
        let st = match self.state(&c.id) {
            Ok(st) => st,
            Err(e) => {
                self.cluster_release(&[&ep]);
                return Err(e);
            }
        };
        // The endpoint's veth is started first, on its own thread, while this worker stores
        // the intent and the pass reads the store and plans (≈ 0.7 ms of its CPU; started
        // after them, the thread waited for a core behind them and the store's flush): the
        // pass takes the creation over when it plans it (from the state before the call, see
        // `converge_from`), and the container side goes up only once the pass's firewall
        // elements that guard it are in, as for any endpoint. Only when that is the pass it
        // will run: a running container on a local bridge network, berth's elements known (a
        // pass that must read the table back observes, and would call the creation off
        // first). A crash before the intent is stored leaves a berth-marked veth that the
        // restart removes, as it removes what a pass made of an unflushed commit (below).
        let netns = format!("/proc/{}/ns/net", st.pid);
        let mut prestart = match berth_plan::driver::endpoint_creation(&net, &c, &ep, &netns) {
            Some(op) if st.status == Status::Running && st.pid > 0 && self.firewall.known() => {
                Some(crate::reconcile::Prestart::start(self.reconciler.kernel().clone(), op).await)
            }
            _ => None,
        };
        let prestarted_us = began.elapsed().as_micros() as u64;
        let (cmp, mut ops) = crate::ipam::claim(&c, &[&ep]);
        ops.push(Op::put_json(keys::container(&c.id), &c));
        // The disk flush of this commit runs while the kernel is programmed; the answer waits
        // for both. A crash before the flush ends loses the endpoint's record, and the restart
        // removes what the pass made of it (berth-marked orphans), as for any unstored change.
        if let Err(e) = crate::ipam::commit_deferred(self.store.as_ref(), cmp, ops) {
            if let Some(p) = prestart.take() {
                p.cancel("the endpoint could not be stored").await;
            }
            self.cluster_release(&[&ep]);
            return Err(e);
        }
        // A running container's flush runs on this worker, beside the pass (below); a stopped
        // one's on a blocking thread while the DNS table is refreshed.
        let durable = (st.status != Status::Running).then(|| self.sync_store());
        let stored_us = began.elapsed().as_micros() as u64;
        let mut passed_us = 0;
        failpoint::boundary("store endpoint");
        let flushed = if let Some(durable) = durable {
            self.dns_refresh();
            durable.await?
        } else {
            let scope = Scope::Containers {
                ids: vec![c.id.clone()],
                also: vec![],
            };
            // The DNS table and the container's files follow the stored intent alone: they are
            // made while the pass programs the kernel, and put back if the pass fails.
            let pass = async {
                match prestart {
                    Some(p) => self.converge_api_prestarted(scope, &before, p).await,
                    None => self.converge_api_from(scope, Some(&before)).await,
                }
            };
            // Joined with the pass on this worker: see `files_beside` (the writes held up the
            // pass's netlink replies when they took ~0.6 ms; now a connect rewrites only
            // `hosts`, ~0.16 ms with the DNS table, and the worker would otherwise wait).
            // The store's flush follows the files there, while the pass waits for the
            // endpoint's thread: on a blocking thread it was a third thread to wake and place
            // on 2 busy CPUs (its start 84 µs median, 0.84 ms p90), and the answer waited for
            // it in half the calls. Here its `fdatasync` sleeps on this worker's CPU instead
            // (`connect_ab.sh`, both slots, two runs: connect 0.22–0.46 ms quicker, stop 47).
            let files = async {
                self.files_beside(&c).await;
                self.store.sync().map(|()| std::time::Instant::now())
            };
            let (result, flushed) = tokio::join!(pass, files);
            if let Err(e) = result {
                c.endpoints.retain(|x| x.id != ep.id);
                let mut ops = crate::ipam::release(&[&ep]);
                ops.push(Op::put_json(keys::container(&c.id), &c));
                self.store.apply(ops)?;
                self.cluster_release(&[&ep]);
                if let Err(e2) = self
                    .converge(
                        crate::reconcile::Trigger::Api,
                        Scope::Containers {
                            ids: vec![c.id.clone()],
                            also: vec![ep.host_ifname.clone()],
                        },
                        false,
                    )
                    .await
                {
                    tracing::warn!("rolling back the connect of {:?}: {}", c.name, e2.message);
                }
                self.dns_refresh();
                if let Err(e2) = self.runtime.write_files(self, &c) {
                    tracing::warn!(container = %c.name, "restoring /etc files: {}", e2.message);
                }
                return Err(e);
            }
            passed_us = began.elapsed().as_micros() as u64;
            flushed.map_err(ApiError::from)?
        };
        let synced_us = flushed.saturating_duration_since(began).as_micros() as u64;
        tracing::info!(
            network = %net.name,
            container = %c.name,
            locked_us,
            found_us,
            planned_us,
            prestarted_us,
            stored_us,
            passed_us,
            synced_us,
            elapsed_us = began.elapsed().as_micros() as u64,
            "connected"
        );
        Ok(())
    }

    /// `POST /networks/{id}/disconnect`.
    pub async fn disconnect(
        self: &Arc<Self>,
        net_query: &str,
        container_query: &str,
    ) -> ApiResult<()> {
        let began = std::time::Instant::now();
        let _guard = self.lock.lock().await;
        let locked_us = began.elapsed().as_micros() as u64;
        let _op = failpoint::Op::begin("disconnect");
        let net = self.find_network(net_query)?;
        let mut c = self.find_container(container_query)?;
        let Some(pos) = c.endpoints.iter().position(|e| e.network_id == net.id) else {
            return Err(ApiError::forbidden(format!(
                "container {} is not connected to network {}",
                c.name, net.name
            )));
        };
        let before = c.clone();
        let ep = c.endpoints.remove(pos);
        let mut ops = crate::ipam::release(&[&ep]);
        ops.push(Op::put_json(keys::container(&c.id), &c));
        // Flushed while the endpoint is retired (see `connect`); a crash before the flush ends
        // leaves the endpoint stored, and the restart puts it back.
        self.store.txn_deferred(Vec::new(), ops)?;
        let durable = self.sync_store();
        let stored_us = began.elapsed().as_micros() as u64;
        let (mut retired_us, mut passed_us) = (0, 0);
        self.cluster_release(&[&ep]);
        failpoint::boundary("store endpoint removal");
        let st = self.state(&c.id)?;
        if st.status == Status::Running {
            // The container stops using the endpoint at once (interface down, addresses gone);
            // the pass then deletes the veth (in the background) and moves the default route
            // if this was the gateway endpoint.
            // A macvlan/ipvlan link is also renamed: its deletion (the kernel's ~20 ms of RCU
            // grace periods) then runs in the background without holding its name. A veth is
            // not: a rename costs an RCU grace period of its own (`synchronize_net` in
            // `dev_change_name`), +10 ms per disconnect measured at load 10 (stop 28), to spare
            // only a reconnect that comes within the deletion's ~20 ms (EEXIST, then a pass
            // that observes and waits).
            let sublink = matches!(net.driver, Driver::Macvlan | Driver::Ipvlan);
            if !sublink {
                // Its removal, when the background deletion takes the host side, is ours.
                self.ns_watch.expect_gone(&c.id, &ep.ifname);
            }
            let retire = berth_plan::host::StepOp::RetireContainerSide {
                netns: format!("/proc/{}/ns/net", st.pid),
                ifname: ep.ifname.clone(),
                rename_to: sublink.then(|| host::retired_name(&ep.id)),
            };
            // The retire runs on its own thread while the pass reads the store and plans
            // (≈ 0.5 ms of CPU on this worker); the pass touches the kernel only after it.
            let kernel = self.reconciler.kernel().clone();
            let retired_at = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let retired_mark = retired_at.clone();
            let name = c.name.clone();
            let ifname = ep.ifname.clone();
            let mut retire: crate::converge::Gate<'static> = Box::pin(async move {
                if let Err(e) = kernel.apply(&retire).await {
                    tracing::warn!(container = %name, "taking {ifname} down: {e}");
                }
                failpoint::boundary("retire endpoint");
                retired_mark.store(
                    began.elapsed().as_micros() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            });
            // Started now (see `poll_once`), before the pass's planning.
            let done = crate::reconcile::poll_once(&mut retire).await.is_some();
            // The rest of the pass (anti-spoofing elements, the default route if this was the
            // gateway endpoint, the veth's deletion in the background) from the state the
            // container had before: a renamed macvlan/ipvlan link is not that state, so
            // such a pass observes.
            let pass = self.converge_gated(
                crate::reconcile::Trigger::Api,
                Scope::Containers {
                    ids: vec![c.id.clone()],
                    also: vec![ep.host_ifname.clone()],
                },
                false,
                (!sublink).then_some(&before),
                (!done).then_some(retire),
            );
            // The DNS table (the name stops resolving on that network) and the files, beside
            // the pass (see `connect`).
            let files = self.files_beside(&c);
            let (rep, _) = tokio::join!(pass, files);
            retired_us = retired_at.load(std::sync::atomic::Ordering::Relaxed);
            let rep = rep?;
            if !rep.errors.is_empty() {
                return Err(ApiError::internal(format!(
                    "disconnecting {:?} from {:?}: {}",
                    c.name,
                    net.name,
                    rep.errors.join("; ")
                )));
            }
            passed_us = began.elapsed().as_micros() as u64;
        } else {
            self.dns_refresh();
        }
        let synced_us = durable.await?.saturating_duration_since(began).as_micros() as u64;
        tracing::info!(
            network = %net.name,
            container = %c.name,
            locked_us,
            stored_us,
            retired_us,
            passed_us,
            synced_us,
            elapsed_us = began.elapsed().as_micros() as u64,
            "disconnected"
        );
        Ok(())
    }
}

/// Whether the kernel of berthd's namespace knows link kind `kind` (off the async workers).
async fn kind_supported(kind: &'static str) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || berth_kernel::sublink::kind_supported(kind))
        .await
        .map_err(|e| ApiError::internal(format!("probing link kind {kind}: {e}")))?
        .map_err(|e| ApiError::internal(format!("probing link kind {kind}: {e}")))
}

impl Daemon {
    /// Why `-d overlay` cannot be created here: it spans hosts and needs a cluster store.
    fn overlay_refusal(&self) -> ApiError {
        ApiError::bad_request(
            "network driver \"overlay\" spans hosts and needs a cluster store: start berthd \
             with --cluster-store etcd://HOST:2379 --advertise-addr IP|IFACE (docs/OVERLAY.md)",
        )
    }
}
