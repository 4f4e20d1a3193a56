//! The daemon's state: the store, the reconcile loop, the runtime, DNS, and the lookups every
//! service shares. The operations live with their service: networks (`networks.rs`),
//! containers (`containers.rs`), the reconcile loop's wiring (`converge.rs`). Every mutation is
//! validate (plan) → store transaction → a reconcile pass scoped to what changed → answer.
//! Mutations and passes are serialized by one async lock.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_kernel::link::Kernel;
use berth_plan::model::{ContainerSpec, ContainerState, NetworkMode, NetworkSpec};
use berth_plan::names;
use berth_plan::network::{self as planner, EndpointRequest};
use berth_plan::remotes::RemoteDns;
use berth_store::{Op, RedbStore, Store, StoreExt};
use ipnet::IpNet;
use tokio::sync::{mpsc, watch, Mutex};

use crate::docindex::DocIndex;
use crate::error::{ApiError, ApiResult};
use crate::firewall::Firewall;
use crate::reconcile::{Reconciler, Wake};
use crate::runtime::Runtime;

/// Daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory (store, container files, logs).
    pub state_dir: PathBuf,
    /// RUNDIR, the API socket's directory (absolute; `/run/berth` by default): berthd's
    /// overlay namespaces are mounted under `RUNDIR/netns` — per berthd, so that several
    /// berthds on one host do not collide, and under `/run`, so they go with a reboot as the
    /// links in them do.
    pub rundir: PathBuf,
    /// The host's resolv.conf (upstreams of the embedded DNS resolver, containers' defaults).
    pub resolv_conf: PathBuf,
    /// Repair drift on kernel notifications and on the timer (off: only start-up and API
    /// calls converge; `berth system check` still reports).
    pub drift_repair: bool,
    /// Period of the full check.
    pub check_interval: Duration,
    /// The cluster this host joins (`--cluster-store`), if any.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// At most this many `[::1]` relay sockets ([`crate::ports_local6::Relays`]).
    pub relay_budget: usize,
}

/// Keys in the store.
pub mod keys {
    /// Prefix of network documents.
    pub const NETWORKS: &str = "networks/";
    /// Prefix of container documents.
    pub const CONTAINERS: &str = "containers/";
    /// Prefix of container state documents.
    pub const STATES: &str = "state/";
    /// Daemon-wide facts (the daemon id, what the host had before berth changed it).
    pub const META: &str = "meta/daemon";

    /// Key of a network.
    pub fn network(id: &str) -> String {
        format!("{NETWORKS}{id}")
    }
    /// Key of a container.
    pub fn container(id: &str) -> String {
        format!("{CONTAINERS}{id}")
    }
    /// Key of a container's state.
    pub fn state(id: &str) -> String {
        format!("{STATES}{id}")
    }
}

/// Facts the daemon must remember across restarts.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// Daemon id (64 hex).
    pub id: String,
    /// `net.ipv4.ip_forward` was 0 before berth first turned it on: berth then also drops
    /// forwarding that does not involve its bridges, so enabling forwarding opens nothing else.
    pub ipv4_forwarding_was_off: bool,
    /// Same for `net.ipv6.conf.all.forwarding`.
    #[serde(default)]
    pub ipv6_forwarding_was_off: bool,
    /// Whether the IPv6 value above has been recorded yet (v6 forwarding is turned on only once a
    /// dual-stack network exists, because it stops the host from accepting router adverts).
    #[serde(default)]
    pub ipv6_recorded: bool,
    /// The port of berthd's `[::1]` relay listener (`[::1]:R`, chosen by the kernel at first
    /// start, then kept): chain `output`'s redirect rule names it, so listening on the same
    /// port again leaves the rule as it is across restarts (0: not chosen yet).
    #[serde(default)]
    pub relay6_port: u16,
}

/// The daemon.
pub struct Daemon {
    /// Configuration.
    pub config: Config,
    /// Desired state.
    pub store: Arc<dyn Store>,
    /// The kernel, in the daemon's own network namespace.
    pub kernel: Kernel,
    /// Serializes every mutation.
    pub lock: Mutex<()>,
    /// berth's nftables table.
    pub firewall: Firewall,
    /// Running container processes.
    pub runtime: Runtime,
    /// Persistent facts.
    pub meta: std::sync::Mutex<Meta>,
    /// Warnings for `berth info` and the log (e.g. a host FORWARD DROP policy).
    pub warnings: std::sync::Mutex<Vec<String>>,
    /// Exit notifications per container id: the value is the exit code once exited.
    pub exits: std::sync::Mutex<HashMap<String, watch::Sender<Option<i32>>>>,
    /// Removed containers whose exit code is still kept (a `wait` may arrive just after a
    /// `--rm` removal), oldest first; forgotten after [`EXIT_MEMORY`].
    removed: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, String)>>,
    /// The embedded DNS resolver (see [`Daemon::dns_refresh`]).
    pub dns: crate::dns::DnsServer,
    /// berthd's own `[::1]:PORT` listeners for published ports (the kernel cannot DNAT `::1`).
    pub local6: crate::ports_local6::Relays,
    /// The reconcile loop (and through it the kernel seam).
    pub reconciler: Reconciler,
    /// The kernels (netlink and nf_tables sockets) kept per overlay network's namespace,
    /// shared with the reconciler's kernel.
    pub overlay_ns: Arc<berth_kernel::overlayns::Namespaces>,
    /// Containers being started: their network namespace (held by an fd) before their init
    /// runs; the desired state includes their endpoints from the moment it exists.
    pub starting: std::sync::Mutex<HashMap<String, String>>,
    /// Whether some stored container holds a legacy link (`--link` on the default bridge):
    /// [`crate::links::LINKS_UNKNOWN`] until first needed, then `LINKS_NONE` or `LINKS_SOME`
    /// (set before such a container is stored, never cleared), so a start scans every stored
    /// container for the ones linking to it only when there can be any.
    pub legacy_links: std::sync::atomic::AtomicU8,
    /// Containers whose start has published their overlay endpoints to the cluster before
    /// their state says running: every publication counts them as running meanwhile (a pass
    /// of their own start must not withdraw them).
    pub announced: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Wakes the reconcile loop (kernel notifications, the timer, container monitors).
    pub wake: mpsc::UnboundedSender<Wake>,
    /// The container namespaces' notifications (one subscription for all of them).
    pub ns_watch: crate::converge::NsWatch,
    /// This host's cluster membership (`--cluster-store`), if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    wake_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Wake>>>,
    /// Container documents, decoded, kept up to date from the store's change feed: a request
    /// looks at every container several times, and listing and decoding 1,000 documents each
    /// time was most of berthd's work per start at that scale.
    specs: DocIndex<ContainerSpec>,
    /// Container states the same way.
    state_docs: DocIndex<ContainerState>,
    /// Network documents the same way: every other host's endpoint event reads them (its
    /// VXLAN entries, the DNS table's check), and a list and decode per event was a visible
    /// share of a receiver's CPU with 20 hosts.
    network_docs: DocIndex<NetworkSpec>,
    /// The embedded DNS table, followed per container change (see [`Daemon::dns_refresh_with`]).
    dns_inputs: std::sync::Mutex<Option<DnsFollow>>,
    /// Every container's name and addresses, followed per container change (see
    /// [`Daemon::with_lookup`]).
    lookup: std::sync::Mutex<Option<crate::lookup::ContainerLookup>>,
}

/// How long the exit code of a removed container stays available to `wait`.
const EXIT_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

pub use crate::ids::{new_id, now_rfc3339};

impl Daemon {
    /// Opens the store, adopts the containers still running, converges the kernel to the
    /// stored intent (removing orphans) and starts watching for drift.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Daemon>> {
        let relay_budget = config.relay_budget;
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
        std::fs::create_dir_all(config.state_dir.join("containers"))
            .with_context(|| format!("creating {}/containers", config.state_dir.display()))?;
        // berthd's state is root's alone: the store (intent, container specs with their
        // environment) and every container's files and logs stay unreadable to other users.
        for dir in [
            config.state_dir.clone(),
            config.state_dir.join("containers"),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("chmod 0700 {}", dir.display()))?;
        }
        berth_kernel::nft::check_available()?;
        // Trace tables left by a crash mid-trace (none runs yet): a trace costs nothing once over.
        match berth_kernel::trace::remove_orphans() {
            Ok(t) if !t.is_empty() => tracing::info!("removed orphan trace tables: {t:?}"),
            Ok(_) => {}
            Err(e) => tracing::warn!("looking for orphan trace tables: {e}"),
        }
        // … and in the overlay namespaces this berthd's run directory holds.
        if let Ok(dir) = std::fs::read_dir(config.rundir.join(berth_plan::overlayns::NETNS_SUBDIR))
        {
            for p in dir.flatten().map(|e| e.path()) {
                if !berth_kernel::overlayns::is_netns_mount(&p) {
                    continue;
                }
                match berth_kernel::trace::remove_orphans_in(&p) {
                    Ok(t) if !t.is_empty() => {
                        tracing::info!("removed orphan trace tables in {}: {t:?}", p.display())
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("looking for orphan trace tables in {}: {e}", p.display())
                    }
                }
            }
        }
        let db = config.state_dir.join("state.redb");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&db)?);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", db.display()))?;
        let kernel = Kernel::new()
            .await
            .context("opening a netlink socket in the daemon's network namespace")?;

        let mut meta: Meta = store.get_json(keys::META)?.unwrap_or_default();
        if meta.id.is_empty() {
            meta.id = new_id();
            // What the host had before berth: recorded once, on the very first start, so a
            // restart does not mistake berth's own setting for the host's.
            let v4 = berth_kernel::sysctl::read(None, "net.ipv4.ip_forward")
                .context("reading net.ipv4.ip_forward")?;
            meta.ipv4_forwarding_was_off = v4.trim() == "0";
            store.apply(vec![Op::put_json(keys::META, &meta)])?;
        }

        let cluster = match config.cluster.clone() {
            Some(cfg) => {
                let c = tokio::task::spawn_blocking(move || crate::cluster::Cluster::join(cfg))
                    .await
                    .context("joining the cluster")??;
                c.spawn_keepalive()
                    .context("starting the cluster keep-alive thread")?;
                Some(c)
            }
            None => None,
        };
        let dns = crate::dns::DnsServer::new(config.resolv_conf.clone());
        let overlay_ns = Arc::new(berth_kernel::overlayns::Namespaces::new());
        let ops = Arc::new(berth_kernel::ops::HostKernel::with_namespaces(
            kernel.clone(),
            overlay_ns.clone(),
        ));
        let (wake, wake_rx) = mpsc::unbounded_channel();
        let daemon = Arc::new(Daemon {
            runtime: Runtime::new(config.state_dir.join("containers")),
            config,
            store,
            kernel,
            lock: Mutex::new(()),
            firewall: Firewall::new(),
            meta: std::sync::Mutex::new(meta),
            warnings: std::sync::Mutex::new(Vec::new()),
            exits: std::sync::Mutex::new(HashMap::new()),
            removed: std::sync::Mutex::new(std::collections::VecDeque::new()),
            dns,
            local6: crate::ports_local6::Relays::new(relay_budget),
            reconciler: Reconciler::new(ops),
            overlay_ns,
            starting: std::sync::Mutex::new(HashMap::new()),
            legacy_links: std::sync::atomic::AtomicU8::new(crate::links::LINKS_UNKNOWN),
            announced: std::sync::Mutex::new(std::collections::HashSet::new()),
            wake,
            ns_watch: Default::default(),
            cluster,
            wake_rx: std::sync::Mutex::new(Some(wake_rx)),
            specs: DocIndex::new(keys::CONTAINERS),
            state_docs: DocIndex::new(keys::STATES),
            network_docs: DocIndex::new(keys::NETWORKS),
            dns_inputs: std::sync::Mutex::new(None),
            lookup: std::sync::Mutex::new(None),
        });
        // The `[::1]` relay listener before the start-up pass: the static rules redirect to
        // its port.
        let wanted = daemon.meta().relay6_port;
        match daemon.local6.listen(wanted) {
            Ok(port) if port != wanted => {
                let mut meta = daemon.meta();
                meta.relay6_port = port;
                daemon.set_meta(meta).map_err(|e| {
                    anyhow::anyhow!("recording the [::1] relay port: {}", e.message)
                })?;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "[::1] relay: cannot listen on [::1] ({e}): published TCP ports are not \
                 reachable through [::1]"
            ),
        }
        daemon.ensure_predefined().await?;
        daemon.startup().await?;
        daemon.dns_refresh();
        Ok(daemon)
    }

    /// The receiver of wake-ups, taken once by the loop's task.
    pub fn take_wake_rx(&self) -> Option<mpsc::UnboundedReceiver<Wake>> {
        self.wake_rx.lock().ok().and_then(|mut r| r.take())
    }

    /// Starts flushing the store's deferred commits ([`Store::txn_deferred`]) on a blocking
    /// thread right away, not when awaited: the caller programs the kernel meanwhile and
    /// awaits the flush before it answers (the fdatasync, ~1 ms here, then costs nothing).
    pub(crate) fn sync_store(
        &self,
    ) -> impl std::future::Future<Output = ApiResult<std::time::Instant>> + use<> {
        let store = self.store.clone();
        // The flush's end, as its thread saw it (not when the caller came to await it): the
        // answer's timing log tells a flush that was the tail from one that was done.
        let task =
            tokio::task::spawn_blocking(move || store.sync().map(|()| std::time::Instant::now()));
        async move {
            task.await
                .map_err(|e| ApiError::internal(format!("flushing the store: {e}")))?
                .map_err(ApiError::from)
        }
    }

    /// A copy of the persistent facts.
    pub fn meta(&self) -> Meta {
        self.meta.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Replaces the persistent facts (store first, then memory).
    pub fn set_meta(&self, meta: Meta) -> ApiResult<()> {
        self.store.apply(vec![Op::put_json(keys::META, &meta)])?;
        if let Ok(mut m) = self.meta.lock() {
            *m = meta;
        }
        Ok(())
    }

    /// Every stored network.
    pub fn networks(&self) -> ApiResult<Vec<NetworkSpec>> {
        Ok(self
            .network_docs
            .all(self.store.as_ref())?
            .iter()
            .map(|n| NetworkSpec::clone(n))
            .collect())
    }

    /// Every stored container, in id order (a copy: see [`Daemon::containers_shared`]).
    pub fn containers(&self) -> ApiResult<Vec<ContainerSpec>> {
        Ok(self
            .containers_shared()?
            .iter()
            .map(|c| ContainerSpec::clone(c))
            .collect())
    }

    /// Every stored container, in id order, shared with the index (no copy of 1,000 specs).
    pub fn containers_shared(&self) -> ApiResult<Arc<[Arc<ContainerSpec>]>> {
        Ok(self.specs.all(self.store.as_ref())?)
    }

    /// The stored container named `name`, if any.
    pub fn container_named(&self, name: &str) -> ApiResult<Option<Arc<ContainerSpec>>> {
        self.with_lookup(|l| l.named(name).cloned())
    }

    /// Runs `f` on every container's name and addresses as of every write committed before
    /// this call ([`crate::lookup::ContainerLookup`]): caught up from the container index's
    /// changes since the last call, or built from every document when the index no longer
    /// reaches back that far.
    pub fn with_lookup<R>(
        &self,
        f: impl FnOnce(&crate::lookup::ContainerLookup) -> R,
    ) -> ApiResult<R> {
        let mut slot = match self.lookup.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let store = self.store.as_ref();
        let caught_up = match slot.take() {
            Some(mut l) => match self.specs.changes_since(store, l.generation)? {
                Some((generation, changes)) => {
                    for (id, doc) in changes {
                        match doc {
                            Some(c) => l.insert(c),
                            None => l.remove(&id),
                        }
                    }
                    l.generation = generation;
                    Some(l)
                }
                None => None,
            },
            None => None,
        };
        let l = match caught_up {
            Some(l) => l,
            None => {
                // The generation first: a change made while the documents are read comes
                // again in the next catch-up (applying it twice is harmless).
                let generation = self.specs.generation(store)?;
                let mut l = crate::lookup::ContainerLookup::new(generation);
                for c in self.containers_shared()?.iter() {
                    l.insert(c.clone());
                }
                l
            }
        };
        let out = f(&l);
        *slot = Some(l);
        Ok(out)
    }

    /// A container's state.
    pub fn state(&self, id: &str) -> ApiResult<ContainerState> {
        Ok(self
            .state_docs
            .get(self.store.as_ref(), id)?
            .map(|s| ContainerState::clone(&s))
            .unwrap_or_default())
    }

    /// Every container's state by container id (a copy: see [`Daemon::states_shared`]).
    pub fn states(&self) -> ApiResult<HashMap<String, ContainerState>> {
        Ok(self
            .states_shared()?
            .iter()
            .map(|(id, st)| (id.clone(), ContainerState::clone(st)))
            .collect())
    }

    /// Every container's state by container id, shared with the index.
    pub fn states_shared(
        &self,
    ) -> ApiResult<Arc<std::collections::BTreeMap<String, Arc<ContainerState>>>> {
        Ok(self.state_docs.all_keyed(self.store.as_ref())?)
    }

    /// Finds a network by name, id or unique id prefix (Docker's rules and messages).
    pub fn find_network(&self, query: &str) -> ApiResult<NetworkSpec> {
        let nets = self.networks()?;
        names::resolve(query, &nets, |n| n.id.as_str(), |n| n.name.as_str())
            .cloned()
            .map_err(|e| e.for_network().into())
    }

    /// Finds a container by name, id or unique id prefix.
    pub fn find_container(&self, query: &str) -> ApiResult<ContainerSpec> {
        if query.is_empty() {
            // dockerd's answer to a missing `Container` (e.g. a connect with an empty body).
            return Err(ApiError::bad_request("invalid name or ID supplied: \"\""));
        }
        let query = query.strip_prefix('/').unwrap_or(query);
        // A full id (what the CLI sends after a create) is one read, not a list of every
        // container.
        if names::is_full_id(query) {
            if let Some(c) = self
                .store
                .get_json::<ContainerSpec>(&keys::container(query))?
            {
                return Ok(c);
            }
        }
        // An exact name (what users type) from the lookup; else Docker's rules over the
        // shared documents (no copy of each).
        if let Some(c) = self.container_named(query)? {
            return Ok(ContainerSpec::clone(&c));
        }
        let cs = self.containers_shared()?;
        names::resolve(query, &cs, |c| c.id.as_str(), |c| c.name.as_str())
            .map(|c| ContainerSpec::clone(c))
            .map_err(|e| e.for_container().into())
    }

    /// Creates `bridge`, `host` and `none` on the first start.
    async fn ensure_predefined(&self) -> anyhow::Result<()> {
        let nets = self.networks().map_err(|e| anyhow::anyhow!(e.message))?;
        if nets.iter().any(|n| n.predefined) {
            return Ok(());
        }
        let mut used: Vec<IpNet> = nets
            .iter()
            .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
            .collect();
        used.extend(self.kernel.routes().await.context("listing host routes")?);
        let subnet = berth_plan::ipam::allocate_subnet(&used)
            .context("no free subnet for the default bridge network in the default pools")?;
        let predefined =
            planner::predefined_networks([new_id(), new_id(), new_id()], now_rfc3339(), subnet);
        let ops = predefined
            .iter()
            .map(|n| Op::put_json(keys::network(&n.id), n))
            .collect();
        self.store.apply(ops)?;
        Ok(())
    }

    /// Looks for other tables whose forward hook drops by policy: their verdict applies to
    /// berth's traffic too (a drop in any base chain wins), so say so loudly. `chains` is
    /// `berth_kernel::nft::list_chains_json(None)`: the chains only, the whole rule set holds
    /// every published port's element (10,000 of them cost the `nft` process and its JSON
    /// seconds at start-up); start-up reads them while it adopts the containers.
    pub fn check_host_forward_policy(
        &self,
        chains: berth_kernel::error::Result<serde_json::Value>,
    ) {
        let mut warnings = Vec::new();
        match chains {
            Ok(json) => {
                for (family, table, chain) in crate::firewall::forward_drop_chains(&json) {
                    warnings.push(format!(
                        "the host's firewall chain {chain} in table {family} {table} drops forwarded \
                         packets by default: containers will not reach the outside or each other \
                         through the host unless it accepts traffic from/to berth's bridges \
                         (e.g. iptables -I FORWARD -i berth0 -j ACCEPT)"
                    ));
                }
            }
            Err(e) => warnings.push(format!("could not read the host's firewall rules: {e}")),
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        if let Ok(mut slot) = self.warnings.lock() {
            *slot = warnings;
        }
    }

    /// Remembers that `id` was removed and forgets the exit codes of containers removed more
    /// than [`EXIT_MEMORY`] ago, so the table does not grow with every container ever run.
    pub(crate) fn forget_exits(&self, id: &str) {
        let now = std::time::Instant::now();
        let Ok(mut removed) = self.removed.lock() else {
            return;
        };
        removed.push_back((now, id.to_string()));
        let mut stale = Vec::new();
        while let Some((at, _)) = removed.front() {
            if now.duration_since(*at) < EXIT_MEMORY {
                break;
            }
            if let Some((_, old)) = removed.pop_front() {
                stale.push(old);
            }
        }
        drop(removed);
        if let Ok(mut exits) = self.exits.lock() {
            for old in stale {
                exits.remove(&old);
            }
        }
    }

    /// The exit notification channel of a container.
    pub fn exit_channel(&self, id: &str) -> watch::Sender<Option<i32>> {
        let mut map = match self.exits.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }

    /// The `--dns`-less resolv.conf source: the host's.
    pub fn host_resolv_conf(&self) -> String {
        std::fs::read_to_string(&self.config.resolv_conf).unwrap_or_default()
    }

    /// Rebuilds the embedded DNS resolver's table from the store and makes its listeners match
    /// the networks. Called after every change that can change an answer (network create and
    /// remove, container create, start, exit and remove, connect, disconnect). Cheap: a table
    /// build and a pointer swap; sockets are opened or closed only for networks that appeared
    /// or went, so no query is dropped.
    pub fn dns_refresh(&self) {
        self.dns_refresh_with(None);
    }

    /// [`Daemon::dns_refresh`] with the networks the caller just read from the store (an
    /// endpoint event of another host reads them for its entries: not read and decoded twice
    /// per event).
    pub fn dns_refresh_nets(&self, nets: Vec<NetworkSpec>) {
        self.dns_follow_and_apply(None, Some(nets));
    }

    /// [`Daemon::dns_refresh`], counting container `starting` as running.
    ///
    /// The table follows the containers' documents and states: only the containers whose
    /// document or state changed since the last refresh (the index's change log says which),
    /// and the one starting or no longer starting, are taken out and put back, so a start
    /// costs the same at 1,000 containers as at 10. Other hosts' containers are followed the
    /// same way: only those whose published endpoints changed since the last refresh (the
    /// cluster's cache says which, [`berth_plan::remotes::RemoteCache::take_dns`]). It is
    /// built from every container again when the networks changed, when the change log no
    /// longer reaches back, and when the cluster's cache was listed afresh.
    pub(crate) fn dns_refresh_with(&self, starting: Option<&str>) {
        self.dns_follow_and_apply(starting, None);
    }

    /// Follows the changes and publishes the result under one hold of the followed table's
    /// lock: two refreshes (a start's on its worker, another host's endpoint event on the
    /// watch task) publish their tables in the order they computed them. Published after
    /// the lock was dropped, the older table could land last and answer a name that is gone
    /// (another host's failed start) until the next change.
    fn dns_follow_and_apply(&self, starting: Option<&str>, nets: Option<Vec<NetworkSpec>>) {
        let mut slot = match self.dns_inputs.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let followed = self.dns_follow(&mut slot, starting, nets);
        self.dns_apply(followed);
    }

    /// Publishes what [`Daemon::dns_follow`] found.
    fn dns_apply(&self, followed: ApiResult<(Option<berth_plan::dns::Table>, LocalResolvers)>) {
        match followed {
            Ok((table, local)) => {
                if let Some(table) = table {
                    self.dns.update(table);
                }
                self.dns.sync_local(&local);
            }
            // The previous table stays: better slightly old answers than none.
            Err(e) => tracing::warn!("embedded DNS: reading the store: {}", e.message),
        }
    }

    /// Brings the followed table up to date: the table to publish (`None`: unchanged) and
    /// where the running containers that need a resolver inside their own namespace
    /// (macvlan/ipvlan networks only) have it. `nets`: the stored networks if the caller has
    /// just read them.
    ///
    /// `slot`: the followed table, whose lock the caller holds until it has published the
    /// result.
    fn dns_follow(
        &self,
        slot: &mut Option<DnsFollow>,
        starting: Option<&str>,
        nets: Option<Vec<NetworkSpec>>,
    ) -> ApiResult<(Option<berth_plan::dns::Table>, LocalResolvers)> {
        let nets = match nets {
            Some(n) => n,
            None => self.networks()?,
        };
        // Taken under the slot's lock: refreshes take the other hosts' changes in turn, and
        // each change once.
        let remote = match &self.cluster {
            Some(cl) => cl.take_remote_dns(),
            None => RemoteDns::Changed(Vec::new()),
        };
        let running_now = |id: &str| -> ApiResult<bool> {
            Ok(starting == Some(id)
                || self
                    .state_docs
                    .get(self.store.as_ref(), id)?
                    .is_some_and(|st| st.status == berth_plan::model::Status::Running))
        };
        let followed = match (slot.take(), &remote) {
            (Some(f), RemoteDns::Changed(changes)) if *f.table.networks() == *nets => {
                self.dns_catch_up(f, starting, &running_now, changes)?
            }
            _ => None,
        };
        let (follow, changed) = match followed {
            Some(caught_up) => caught_up,
            None => {
                // From scratch: the generations first, so a change made while every document
                // is read comes again in the next catch-up (applying it twice is harmless).
                let spec_gen = self.specs.generation(self.store.as_ref())?;
                let state_gen = self.state_docs.generation(self.store.as_ref())?;
                let specs = self.containers_shared()?;
                let mut members = HashMap::with_capacity(specs.len());
                let mut table = berth_plan::dns::Table::new(&nets);
                for c in specs.iter() {
                    let running = running_now(&c.id)?;
                    table.insert(c, running);
                    members.insert(c.id.clone(), (c.clone(), running));
                }
                // Containers of other hosts on the shared overlay networks (never in place of
                // one of this host's: its store answers those). All of them as the cache
                // holds them now, which includes any change just taken.
                let stand_ins = match remote {
                    RemoteDns::All(all) => all,
                    RemoteDns::Changed(_) => self
                        .cluster
                        .as_ref()
                        .map(|cl| cl.remote_stand_ins())
                        .unwrap_or_default(),
                };
                for c in stand_ins.iter().filter(|c| !members.contains_key(&c.id)) {
                    table.insert(c, true);
                }
                let follow = DnsFollow {
                    table,
                    spec_gen,
                    state_gen,
                    members,
                    starting: starting.map(str::to_string),
                };
                (follow, true)
            }
        };
        let mut local = Vec::new();
        for id in follow.table.local() {
            let Some(st) = self.state_docs.get(self.store.as_ref(), id)? else {
                continue;
            };
            if st.status == berth_plan::model::Status::Running && st.pid > 0 {
                local.push((
                    id.clone(),
                    PathBuf::from(format!("/proc/{}/ns/net", st.pid)),
                ));
            }
        }
        let table = changed.then(|| follow.table.clone());
        *slot = Some(follow);
        Ok((table, local))
    }

    /// Applies to `f` the containers whose document or state changed since it last caught
    /// up, the one starting (or no longer starting), and the other hosts' containers whose
    /// endpoints changed (`remote`). `None`: the change log no longer reaches back to `f`;
    /// the caller builds the table from scratch.
    fn dns_catch_up(
        &self,
        mut f: DnsFollow,
        starting: Option<&str>,
        running_now: &dyn Fn(&str) -> ApiResult<bool>,
        remote: &[(String, Option<ContainerSpec>)],
    ) -> ApiResult<Option<(DnsFollow, bool)>> {
        let store = self.store.as_ref();
        let Some((spec_gen, specs)) = self.specs.changes_since(store, f.spec_gen)? else {
            return Ok(None);
        };
        let Some((state_gen, states)) = self.state_docs.changes_since(store, f.state_gen)? else {
            return Ok(None);
        };
        let mut dirty: std::collections::BTreeSet<String> =
            states.into_iter().map(|(id, _)| id).collect();
        let mut docs: HashMap<String, Option<Arc<ContainerSpec>>> = HashMap::new();
        for (id, doc) in specs {
            dirty.insert(id.clone());
            docs.insert(id, doc);
        }
        dirty.extend(starting.map(str::to_string));
        dirty.extend(f.starting.take());
        let mut changed = false;
        for id in dirty {
            let doc = match docs.remove(&id) {
                Some(doc) => doc,
                None => self.specs.get(store, &id)?,
            };
            match doc {
                Some(c) => {
                    let running = running_now(&id)?;
                    let same = f
                        .members
                        .get(&id)
                        .is_some_and(|(was, r)| Arc::ptr_eq(was, &c) && *r == running);
                    if !same {
                        f.table.insert(&c, running);
                        f.members.insert(id, (c, running));
                        changed = true;
                    }
                }
                None => {
                    if f.members.remove(&id).is_some() {
                        f.table.remove(&id);
                        changed = true;
                    }
                }
            }
        }
        let members = &f.members;
        changed |= f.table.apply_remote(remote, |id| members.contains_key(id));
        f.spec_gen = spec_gen;
        f.state_gen = state_gen;
        f.starting = starting.map(str::to_string);
        Ok(Some((f, changed)))
    }
}

/// Containers that need a resolver inside their own namespace, with a path to it.
type LocalResolvers = Vec<(String, PathBuf)>;

/// The embedded DNS table as the daemon keeps it (see [`Daemon::dns_refresh_with`]): changed
/// per container, a clone of it published after each change.
struct DnsFollow {
    table: berth_plan::dns::Table,
    /// The container documents' and states' generations it has caught up to.
    spec_gen: u64,
    state_gen: u64,
    /// Each container in the table: the document it was put in from and whether it was
    /// answered for (running, or starting).
    members: HashMap<String, (Arc<ContainerSpec>, bool)>,
    /// The container counted as running while it starts, at the last refresh.
    starting: Option<String>,
}

/// Converts Docker's `EndpointSettings` into the planner's request (which checks `Links` and
/// `LinkLocalIPs`).
pub fn endpoint_request(
    s: Option<&berth_api::types::EndpointSettings>,
) -> ApiResult<EndpointRequest> {
    let ipam = s.and_then(|s| s.ipam_config.clone()).unwrap_or_default();
    Ok(EndpointRequest {
        ipv4: ipam.ipv4_address.filter(|a| !a.is_empty()),
        ipv6: ipam.ipv6_address.filter(|a| !a.is_empty()),
        aliases: s.and_then(|s| s.aliases.clone()).unwrap_or_default(),
        gw_priority: s.map(|s| s.gw_priority).unwrap_or(0),
        mac: s
            .map(|s| s.mac_address.trim().to_string())
            .filter(|m| !m.is_empty()),
        driver_opts: s.and_then(|s| s.driver_opts.clone()).unwrap_or_default(),
        links: s.and_then(|s| s.links.clone()).unwrap_or_default(),
        link_local_ips: ipam.link_local_ips.unwrap_or_default(),
    })
}

/// How a network mode reads on the wire.
pub fn mode_name(m: &NetworkMode) -> String {
    match m {
        NetworkMode::Networks => "bridge".into(),
        NetworkMode::Host => "host".into(),
        NetworkMode::None => "none".into(),
        NetworkMode::Container(id) => format!("container:{id}"),
    }
}
