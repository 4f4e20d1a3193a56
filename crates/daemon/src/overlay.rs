//! Overlay networks in berthd: what ties the cluster store (crate::cluster) to this host's
//! store, reconciler and DNS.
//!
//! * The global networks live in etcd; each host keeps a copy in its own store, so listing,
//!   inspecting, connecting, the firewall and the reconciler treat them like any network. A
//!   watch keeps the copies equal to etcd (created and removed on every host).
//! * Addresses on an overlay network are claimed in etcd (compare-absent, under the host's
//!   lease) before the container document is stored: two hosts never hand out one address.
//! * Each host publishes its running containers' overlay endpoints (address, MAC, names, its
//!   tunnel address) under its lease; every host's reconciler programs the others' into its
//!   VXLAN ports, and its DNS answers their names.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use berth_plan::model::{ContainerSpec, Driver, EndpointSpec, NetworkSpec, Status};
use berth_plan::network::{self as planner, EndpointRequest};
use berth_plan::overlay::RemoteEndpoint;
use berth_store::{EventKind, Op, Store, StoreExt};

use crate::cluster::{self, ClusterClaim};
use crate::converge::Scope;
use crate::daemon::{keys, new_id, Daemon};

/// How often an allocation picks again after losing an address to another host.
const CLAIM_ATTEMPTS: usize = 16;
use crate::error::{ApiError, ApiResult};
use crate::reconcile::Trigger;

impl Daemon {
    /// Plans `c`'s endpoint on `net`; on an overlay network its addresses are also claimed
    /// cluster-wide, and an address another host claimed in the meantime makes it pick again
    /// (an address the user asked for is a 409 instead). `announce`: `c` is started right
    /// after its create, so the endpoint is published with the claim (see
    /// [`cluster::Cluster::claim`]).
    pub(crate) fn plan_endpoint_claimed(
        &self,
        net: &NetworkSpec,
        c: &ContainerSpec,
        req: &EndpointRequest,
        announce: bool,
    ) -> ApiResult<EndpointSpec> {
        // The addresses' holders from berthd's book. Every container's document only when
        // the planner reads them (a requested MAC or link-local address): taking the
        // index's snapshot after a change copies 1,000 shared pointers (a cache miss each).
        let all = if req.mac.is_some() || !req.link_local_ips.is_empty() {
            self.containers_shared()?
        } else {
            Arc::from([])
        };
        let plan = |elsewhere: &BTreeMap<_, _>| -> ApiResult<EndpointSpec> {
            self.with_lookup(|l| {
                planner::plan_endpoint_in(net, c, &all, &l.book, req, new_id(), elsewhere)
            })?
            .map_err(Into::into)
        };
        if net.driver != Driver::Overlay {
            let mut ep = plan(&BTreeMap::new())?;
            // Whether a neighbour may hold another MAC for its address (an overlay endpoint
            // always announces itself, see `berth_plan::network::endpoint_plan`).
            crate::ipam::mark_reused(self.store.as_ref(), std::slice::from_mut(&mut ep))?;
            return Ok(ep);
        }
        let fixed = req.ipv4.is_some() || req.ipv6.is_some();
        let mut last = None;
        for attempt in 0..CLAIM_ATTEMPTS {
            // The first pick from the watched copy of the claims; after a lost race (the copy
            // lagged), from etcd itself.
            let elsewhere = self.held_elsewhere(net, &c.id, attempt > 0)?;
            let ep = plan(&elsewhere)?;
            match self.cluster_claim(net, c, &ep, announce) {
                Ok(()) => return Ok(ep),
                Err(e) if e.status == StatusCode::CONFLICT && !fixed => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::conflict("could not claim an address; try again")))
    }

    /// Addresses of overlay network `net` held by containers of other hosts (address → who),
    /// for the allocator; empty for other networks. `fresh`: read from etcd, not from the
    /// watched copy.
    pub(crate) fn held_elsewhere(
        &self,
        net: &NetworkSpec,
        container: &str,
        fresh: bool,
    ) -> ApiResult<BTreeMap<IpAddr, String>> {
        match (&self.cluster, net.driver) {
            (Some(c), Driver::Overlay) => c.holders(&net.id, container, fresh),
            _ => Ok(BTreeMap::new()),
        }
    }

    /// Claims the addresses of `ep` cluster-wide when its network is an overlay network
    /// (`announce`: and publishes the endpoint in the same transaction).
    pub(crate) fn cluster_claim(
        &self,
        net: &NetworkSpec,
        c: &ContainerSpec,
        ep: &EndpointSpec,
        announce: bool,
    ) -> ApiResult<()> {
        match (&self.cluster, net.driver) {
            (Some(cl), Driver::Overlay) => {
                let addrs: Vec<IpAddr> = ep.addrs.iter().map(|a| a.addr()).collect();
                let published = announce.then(|| remote_endpoint(cl, c, ep)).flatten();
                cl.claim(&net.id, &c.id, &c.name, &addrs, published.as_ref())
            }
            (None, Driver::Overlay) => Err(ApiError::bad_request(format!(
                "network {:?} is an overlay network: this berthd has no cluster store",
                net.name
            ))),
            _ => Ok(()),
        }
    }

    /// Frees the cluster claims of `eps` that are on overlay networks (best effort: a claim
    /// left behind dies with this host's lease, or is re-checked at the next publication).
    pub(crate) fn cluster_release(&self, eps: &[&EndpointSpec]) {
        let Some(cl) = &self.cluster else { return };
        // Not pending any more, even if the store is not told now: a publication must not
        // put back a claim whose container let it go.
        let keys: Vec<String> = eps
            .iter()
            .flat_map(|ep| {
                ep.addrs
                    .iter()
                    .map(|a| cluster::claim_key(&ep.network_id, a.addr()))
            })
            .collect();
        cl.unpend(&keys);
        if !cl.healthy() {
            // etcd is away: no 5 s wait per container; the next publication, once etcd is
            // back, drops this host's claims nothing holds any more.
            return;
        }
        let Ok(nets) = self.networks() else { return };
        for ep in eps {
            let overlay = nets
                .iter()
                .any(|n| n.id == ep.network_id && n.driver == Driver::Overlay);
            if !overlay {
                continue;
            }
            let addrs: Vec<IpAddr> = ep.addrs.iter().map(|a| a.addr()).collect();
            if let Err(e) = cl.release(&ep.network_id, &addrs) {
                tracing::warn!(
                    "cluster: freeing {addrs:?} on {}: {}",
                    ep.network_id,
                    e.message
                );
                cl.mark_unhealthy(e.message);
                return;
            }
        }
    }

    /// Publishes this host's overlay endpoints (running containers) and address claims (every
    /// container) to the cluster store; nothing is written when nothing changed.
    /// Containers being started count as running from the moment their start announced them
    /// (see [`Daemon::early_publish`]).
    pub(crate) fn cluster_publish(&self) {
        let Some(cl) = &self.cluster else { return };
        if !cl.healthy() {
            // Published again from scratch when the sync reconnects.
            return;
        }
        // From the reads below to the store write: a publication that started from an
        // older snapshot of the local store never writes after this one.
        let _order = cl.publication_lock();
        let build = || -> ApiResult<_> {
            let nets: BTreeMap<String, NetworkSpec> = self
                .networks()?
                .into_iter()
                .filter(|n| n.driver == Driver::Overlay)
                .map(|n| (n.id.clone(), n))
                .collect();
            let mut eps = BTreeMap::new();
            let mut claims = BTreeMap::new();
            if nets.is_empty() {
                return Ok((eps, claims));
            }
            let announced = self.announced.lock().map(|a| a.clone()).unwrap_or_default();
            for c in self.containers()? {
                let running =
                    announced.contains(&c.id) || self.state(&c.id)?.status == Status::Running;
                for ep in c
                    .endpoints
                    .iter()
                    .filter(|e| nets.contains_key(&e.network_id))
                {
                    for a in &ep.addrs {
                        claims.insert(
                            cluster::claim_key(&ep.network_id, a.addr()),
                            ClusterClaim {
                                node: cl.node().to_string(),
                                container: c.id.clone(),
                                name: c.name.clone(),
                            },
                        );
                    }
                    if !running {
                        continue;
                    }
                    if let Some(r) = remote_endpoint(cl, &c, ep) {
                        eps.insert(cluster::endpoint_key(&ep.network_id, cl.node(), &c.id), r);
                    }
                }
            }
            Ok((eps, claims))
        };
        match build() {
            Ok((eps, claims)) => {
                if let Err(e) = cl.publish(eps, claims) {
                    tracing::warn!("cluster: publishing this host's endpoints: {e}");
                    cl.mark_unhealthy(e.to_string());
                }
            }
            Err(e) => tracing::warn!("cluster: reading the store: {}", e.message),
        }
    }

    /// Publishes `c`'s overlay endpoints as running while its start is still under way, on a
    /// blocking thread (store calls block): the etcd write and the other hosts' watch delivery
    /// then overlap the start's own work. `None` when nothing is to be published (no cluster,
    /// etcd away, no overlay endpoint). The caller awaits the handle before any other
    /// publication of its own, and calls [`Daemon::end_announcement`] when the start is over.
    pub(crate) fn early_publish(
        self: &Arc<Self>,
        c: &ContainerSpec,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let cl = self.cluster.as_ref()?;
        if !cl.healthy() {
            return None;
        }
        let nets = self.networks().ok()?;
        let overlay = c.endpoints.iter().any(|e| {
            nets.iter()
                .any(|n| n.id == e.network_id && n.driver == Driver::Overlay)
        });
        if !overlay {
            return None;
        }
        if let Ok(mut a) = self.announced.lock() {
            a.insert(c.id.clone());
        }
        let d = self.clone();
        Some(tokio::task::spawn_blocking(move || d.cluster_publish()))
    }

    /// The start of `id` is over: waits for its early publication, stops counting it as
    /// running unless its state says so (also when it was announced with its claims by a
    /// `run`), and (`failed`) publishes again without it.
    pub(crate) async fn end_announcement(
        &self,
        id: &str,
        early: Option<tokio::task::JoinHandle<()>>,
        failed: bool,
    ) {
        let settled = self
            .cluster
            .as_ref()
            .is_some_and(|cl| cl.settle_endpoints(id));
        if early.is_none() && !settled {
            return;
        }
        if let Some(p) = early {
            // Two publications must not race: the later one is the truth.
            if let Err(e) = p.await {
                tracing::warn!("cluster: publishing a starting container's endpoints: {e}");
            }
        }
        if let Ok(mut a) = self.announced.lock() {
            a.remove(id);
        }
        if failed {
            self.cluster_publish();
        }
    }

    /// Withdraws the endpoints a `run`'s create published with its claims, when that create
    /// fails after them (the claims themselves go with [`Daemon::cluster_release`]).
    pub(crate) fn cluster_withdraw(&self, container: &str) {
        let Some(cl) = &self.cluster else { return };
        if let Err(e) = cl.withdraw_endpoints(container) {
            // Left in the store: the next publication compares with what it last wrote and
            // deletes it; a reconnected sync publishes from scratch.
            tracing::warn!("cluster: withdrawing the endpoints of {container}: {e}");
            cl.mark_unhealthy(e.to_string());
        }
    }

    /// Makes this host's copies of the overlay networks equal to the cluster's `global` ones:
    /// new ones stored (and built by the pass), removed ones deleted (their bridge and VXLAN
    /// port go as orphans). Returns whether anything changed.
    pub(crate) async fn mirror_networks(&self, global: Vec<NetworkSpec>) -> ApiResult<bool> {
        let _guard = self.lock.lock().await;
        let local: BTreeMap<String, NetworkSpec> = self
            .networks()?
            .into_iter()
            .filter(|n| n.driver == Driver::Overlay)
            .map(|n| (n.id.clone(), n))
            .collect();
        let global: BTreeMap<String, NetworkSpec> =
            global.into_iter().map(|n| (n.id.clone(), n)).collect();
        let mut ops = Vec::new();
        for (id, n) in &global {
            if local.get(id) != Some(n) {
                tracing::info!(network = %n.name, "cluster: overlay network appeared");
                ops.push(Op::put_json(keys::network(id), n));
            }
        }
        for (id, n) in &local {
            if global.contains_key(id) {
                continue;
            }
            // The list may predate a network this host created a moment ago (the list was
            // read, then the create committed, then this runs): ask etcd about this one now.
            if let Some(cl) = &self.cluster {
                match cl.store.get(&format!("{}{id}", cluster::NETWORKS)) {
                    Ok(None) => {}
                    Ok(Some(_)) => continue,
                    Err(e) => return Err(ApiError::from(e)),
                }
            }
            tracing::info!(network = %n.name, "cluster: overlay network removed");
            ops.push(Op::Delete(keys::network(id)));
        }
        if ops.is_empty() {
            return Ok(false);
        }
        self.store.apply(ops)?;
        self.converge(Trigger::Cluster, Scope::Full, false).await?;
        self.dns_refresh();
        Ok(true)
    }
}

/// What this host publishes for `c`'s endpoint `ep` on an overlay network (`None` without an
/// IPv4 address: the other hosts program and resolve endpoints by it).
fn remote_endpoint(
    cl: &cluster::Cluster,
    c: &ContainerSpec,
    ep: &EndpointSpec,
) -> Option<RemoteEndpoint> {
    let ip = ep.addrs.iter().map(|a| a.addr()).find(IpAddr::is_ipv4)?;
    Some(RemoteEndpoint {
        network_id: ep.network_id.clone(),
        node: cl.node().to_string(),
        vtep: cl.record.addr,
        ip,
        ip6: ep.addrs.iter().map(|a| a.addr()).find(IpAddr::is_ipv6),
        mac: ep.mac.clone(),
        name: c.name.clone(),
        aliases: ep.aliases.clone(),
        container_id: c.id.clone(),
    })
}

/// Keeps this host in step with the cluster: lists the overlay networks and the published
/// endpoints, then follows both with watches from the listed revision (nothing missed, nothing
/// seen twice); when a watch ends (etcd gone) it waits a second and starts over.
pub fn spawn_sync(d: Arc<Daemon>) {
    let Some(cl) = d.cluster.clone() else { return };
    tokio::spawn(async move {
        loop {
            if let Err(e) = sync_once(&d, &cl).await {
                tracing::debug!("cluster sync: {e}; again in 1 s");
            }
            // Not followed any more: creates read the claims from etcd until the next list.
            cl.set_claims_seen(None);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn sync_once(d: &Arc<Daemon>, cl: &Arc<cluster::Cluster>) -> anyhow::Result<()> {
    let store = cl.store.clone();
    let (net_rev, nets) = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.list_versioned(cluster::NETWORKS)).await??
    };
    let nets: Vec<NetworkSpec> = nets
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v.value).ok())
        .collect();
    d.mirror_networks(nets)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    // The live nodes: WireGuard peers of encrypted networks (a node's record goes with its
    // lease, and with it the peer).
    let (node_rev, nodes) = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.list_versioned(berth_plan::cluster::NODES)).await??
    };
    cl.set_nodes(
        nodes
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v.value).ok())
            .collect(),
    );
    let (ep_rev, eps) = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.list_versioned(cluster::ENDPOINTS)).await??
    };
    cl.set_remotes(eps);
    let (claim_rev, claims) = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.list_versioned(cluster::IPAM)).await??
    };
    cl.set_claims_seen(Some(claims));
    // A fresh start of the sync (etcd back, lease maybe lost): publish again from scratch.
    cl.forget_published();
    d.cluster_publish();
    d.dns_refresh();
    converge_all(d).await;
    // Where a sync that goes quiet stopped (a CI run once saw a host learn a network and then
    // no endpoint for 10 s after an etcd member was killed): the watches' start is four
    // etcd requests and four history checks, each bounded by the request timeout.
    let watching = std::time::Instant::now();
    tracing::debug!(
        net_rev,
        ep_rev,
        node_rev,
        claim_rev,
        "cluster sync: listed and converged; starting the watches"
    );
    let (mut wn, mut we, mut wk, mut wc) = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || -> berth_store::Result<_> {
            Ok((
                s.watch(cluster::NETWORKS, Some(net_rev))?,
                s.watch(cluster::ENDPOINTS, Some(ep_rev))?,
                s.watch(berth_plan::cluster::NODES, Some(node_rev))?,
                s.watch(cluster::IPAM, Some(claim_rev))?,
            ))
        })
        .await??
    };
    tracing::debug!(
        started_ms = watching.elapsed().as_millis() as u64,
        "cluster sync: watching"
    );
    loop {
        tokio::select! {
            ev = wc.recv() => {
                let Some(ev) = ev else {
                    anyhow::bail!("the claim watch ended");
                };
                let value = (ev.kind == EventKind::Put).then_some(ev.value.as_deref()).flatten();
                cl.apply_claim_event(&ev.key, value);
            }
            ev = wk.recv() => {
                if ev.is_none() {
                    anyhow::bail!("the node watch ended");
                }
                while wk.try_recv().is_ok() {}
                // Nodes change rarely: read them all again.
                let s = store.clone();
                let nodes: Vec<berth_plan::cluster::NodeRecord> =
                    tokio::task::spawn_blocking(move || s.list_json(berth_plan::cluster::NODES)).await??;
                let before = cl.live_underlay();
                cl.set_nodes(nodes);
                let after = cl.live_underlay();
                if after != before {
                    // A host joined, left or changed its underlay's MTU: the overlay
                    // networks' MTU follows (bridge, VXLAN port, every endpoint).
                    tracing::info!(?before, ?after, "cluster: the underlay changed");
                    converge_all(d).await;
                }
            }
            ev = wn.recv() => {
                if ev.is_none() {
                    anyhow::bail!("the network watch ended");
                }
                // Networks change rarely: read them all again.
                let s = store.clone();
                let nets: Vec<NetworkSpec> =
                    tokio::task::spawn_blocking(move || s.list_json(cluster::NETWORKS)).await??;
                d.mirror_networks(nets).await.map_err(|e| anyhow::anyhow!(e.message))?;
            }
            ev = we.recv() => {
                let Some(ev) = ev else {
                    anyhow::bail!("the endpoint watch ended");
                };
                // What else arrived with it is applied together (one DNS swap for a burst).
                let mut events = vec![ev];
                while let Ok(ev) = we.try_recv() {
                    events.push(ev);
                }
                apply_endpoint_events(d, cl, &events).await;
            }
        }
    }
}

/// Other hosts' endpoints came, changed or went: the cache, then each one's forwarding and
/// neighbour entries straight from the event (decided by `berth_plan::overlay::event_step`:
/// no observation, no pass), then the DNS table. The reconcile pass stays the safety net: a
/// step that fails (e.g. the network's VXLAN port is not there yet) is left to a scoped pass
/// at once, and the periodic check, start-up and a reconnected watch converge everything.
async fn apply_endpoint_events(
    d: &Arc<Daemon>,
    cl: &Arc<cluster::Cluster>,
    events: &[berth_store::WatchEvent],
) {
    let started = std::time::Instant::now();
    // This host's own endpoints need no entry and no DNS change (its DNS answers them from
    // its own store): only the cache (`node ls` counts). They arrive while this host's start
    // still holds the lock (it publishes early), so they must not wait for it, nor hold up
    // the other hosts' events queued behind them.
    let own = |key: &str| key.split('/').nth(2) == Some(cl.node());
    let (mine, theirs): (Vec<_>, Vec<_>) = events.iter().partition(|ev| own(&ev.key));
    for ev in mine {
        let value = (ev.kind == EventKind::Put)
            .then_some(ev.value.as_deref())
            .flatten();
        cl.apply_remote(&ev.key, value);
    }
    if theirs.is_empty() {
        return;
    }
    // Under the mutation lock, like a pass: a pass reads the cache, then observes the kernel;
    // entries added between the two would look unwanted to it and be removed.
    let _guard = d.lock.lock().await;
    let waited = started.elapsed();
    let changes: Vec<_> = theirs
        .iter()
        .map(|ev| {
            let value = (ev.kind == EventKind::Put)
                .then_some(ev.value.as_deref())
                .flatten();
            cl.apply_remote(&ev.key, value)
        })
        .collect();
    let nets = match d.networks() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cluster: reading the store: {}", e.message);
            return;
        }
    };
    // Read in the cache, not copied out of it: a step concerns a few endpoints of thousands.
    let steps: Vec<_> = cl
        .with_remotes(|cache| {
            changes
                .iter()
                .filter_map(|(before, after)| {
                    berth_plan::overlay::event_step(
                        &nets,
                        Some(cl.record.addr),
                        &cl.record.name,
                        cache.endpoints(),
                        before.as_ref(),
                        after.as_ref(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // Each VXLAN port is in its network's namespace.
    let rundir = d.config.rundir.display().to_string();
    let steps: Vec<_> = steps
        .into_iter()
        .map(|mut step| {
            if let berth_plan::host::StepOp::SetVxlanEntries { dev, netns, .. } = &mut step.op {
                *netns = nets
                    .iter()
                    .find(|n| berth_plan::names::vxlan_name(&n.id) == *dev)
                    .map(|n| berth_plan::overlayns::netns_path(&rundir, &n.id));
            }
            step
        })
        .collect();
    // The data path first: a name must not resolve before its address answers.
    let errors = d.reconciler.apply_steps(Trigger::Cluster, &steps).await;
    let programmed = started.elapsed();
    // The networks just read (under the lock: no network changed since).
    d.dns_refresh_nets(nets);
    tracing::debug!(
        events = theirs.len(),
        steps = steps.len(),
        failed = errors.len(),
        lock_wait_us = waited.as_micros() as u64,
        entries_us = (programmed - waited).as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "cluster: remote endpoints applied from the watch"
    );
    if !errors.is_empty() {
        tracing::info!(
            "cluster: {} endpoint step(s) failed ({}); converging the overlay networks",
            errors.len(),
            errors.join("; ")
        );
        converge_overlays_locked(d).await;
    }
}

/// A pass over everything (the remote entries of every VXLAN port may have changed), under
/// the mutation lock like every change.
async fn converge_all(d: &Arc<Daemon>) {
    converge_scope(d, Scope::Full).await;
}

/// A pass over the overlay networks only (another host's endpoint came or went: only their
/// VXLAN ports' entries change), as a network create's pass is scoped. The caller holds the
/// daemon's lock.
async fn converge_overlays_locked(d: &Arc<Daemon>) {
    let ids: Vec<String> = match d.networks() {
        Ok(nets) => nets
            .into_iter()
            .filter(|n| n.driver == Driver::Overlay)
            .map(|n| n.id)
            .collect(),
        Err(e) => {
            tracing::warn!("cluster: reading the store: {}", e.message);
            return;
        }
    };
    if !ids.is_empty() {
        converge_locked(d, Scope::Networks { ids, also: vec![] }).await;
    }
}

async fn converge_scope(d: &Arc<Daemon>, scope: Scope) {
    let _guard = d.lock.lock().await;
    converge_locked(d, scope).await;
}

async fn converge_locked(d: &Arc<Daemon>, scope: Scope) {
    if let Err(e) = d.converge(Trigger::Cluster, scope, false).await {
        tracing::warn!(
            "cluster: programming the other hosts' endpoints: {}",
            e.message
        );
    }
}
