//! The daemon's state and its operations: every mutation is validate (plan) → store transaction →
//! converge the kernel → answer. Mutations are serialized by one async lock, which is what makes
//! IPAM allocation free of duplicates under concurrent requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use berth_kernel::link::Kernel;
use berth_plan::model::{
    ContainerSpec, ContainerState, Driver, EndpointSpec, NetworkMode, NetworkSpec,
};
use berth_plan::names;
use berth_plan::network::{self as planner, EndpointRequest, NetworkRequest};
use berth_store::{Op, RedbStore, Store, StoreExt};
use ipnet::IpNet;
use tokio::sync::{watch, Mutex};

use crate::error::{ApiError, ApiResult};
use crate::firewall::Firewall;
use crate::runtime::Runtime;

/// Daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory (store, container files, logs).
    pub state_dir: PathBuf,
    /// The host's resolv.conf (upstreams of the embedded DNS resolver, containers' defaults).
    pub resolv_conf: PathBuf,
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
}

/// How long the exit code of a removed container stays available to `wait`.
const EXIT_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

/// Current time, RFC 3339 with nanoseconds (Docker's format).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// A fresh 64-hex id.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Daemon {
    /// Opens the store, converges the kernel to it, removes orphans.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Daemon>> {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
        std::fs::create_dir_all(config.state_dir.join("containers"))
            .with_context(|| format!("creating {}/containers", config.state_dir.display()))?;
        berth_kernel::nft::check_available()?;
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&config.state_dir.join("state.redb"))?);
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

        let dns = crate::dns::DnsServer::new(config.resolv_conf.clone());
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
            local6: crate::ports_local6::Relays::new(),
        });
        daemon.ensure_predefined().await?;
        daemon.converge_all().await?;
        daemon.dns_refresh();
        Ok(daemon)
    }

    fn meta(&self) -> Meta {
        self.meta.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Every stored network.
    pub fn networks(&self) -> ApiResult<Vec<NetworkSpec>> {
        Ok(self.store.list_json(keys::NETWORKS)?)
    }

    /// Every stored container.
    pub fn containers(&self) -> ApiResult<Vec<ContainerSpec>> {
        Ok(self.store.list_json(keys::CONTAINERS)?)
    }

    /// A container's state.
    pub fn state(&self, id: &str) -> ApiResult<ContainerState> {
        Ok(self.store.get_json(&keys::state(id))?.unwrap_or_default())
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
        let query = query.strip_prefix('/').unwrap_or(query);
        let cs = self.containers()?;
        names::resolve(query, &cs, |c| c.id.as_str(), |c| c.name.as_str())
            .cloned()
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

    /// Start-up (and drift) convergence: base rule set, bridges, firewall elements, containers,
    /// orphans. Idempotent.
    async fn converge_all(self: &Arc<Self>) -> anyhow::Result<()> {
        let nets = self.networks().map_err(|e| anyhow::anyhow!(e.message))?;
        self.firewall
            .init(self.firewall_config())
            .context("installing berth's nftables table")?;
        // Forwarding is turned on only after the rules that keep it from opening anything else
        // are in place (the guard rule in the forward chain above).
        berth_kernel::sysctl::write(None, "net.ipv4.ip_forward", "1")
            .context("enabling net.ipv4.ip_forward")?;
        if nets.iter().any(|n| n.enable_ipv6) {
            self.enable_ipv6_forwarding()?;
        }
        for net in &nets {
            if let Some(plan) = planner::bridge_plan(net) {
                self.kernel
                    .ensure_bridge(&plan)
                    .await
                    .with_context(|| format!("creating bridge of network {:?}", net.name))?;
                crate::ports::bridge_sysctls(&plan.name);
            }
        }
        self.firewall
            .sync(&nets)
            .context("applying berth's nftables elements")?;

        // Containers: adopt the ones still running, mark the others exited.
        let containers = self.containers().map_err(|e| anyhow::anyhow!(e.message))?;
        let mut live_veths = BTreeSet::new();
        for c in &containers {
            let st = self.state(&c.id).map_err(|e| anyhow::anyhow!(e.message))?;
            if st.status == "running" && self.runtime.adopt(self, c, &st) {
                live_veths.extend(c.endpoints.iter().map(|e| e.host_ifname.clone()));
                continue;
            }
            if st.status == "running" {
                let code = self.runtime.read_exit_code(&c.id).unwrap_or(-1);
                self.mark_exited(&c.id, code)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.message))?;
            }
        }
        // Published ports: exactly those of the running containers.
        crate::ports::converge(self).map_err(|e| anyhow::anyhow!(e.message))?;
        // Orphans: berth-named links nothing stored wants.
        let wanted_bridges: BTreeSet<String> = nets
            .iter()
            .filter(|n| n.driver == Driver::Bridge)
            .map(|n| n.bridge.clone())
            .collect();
        for link in self.kernel.list_links().await.context("listing links")? {
            let ours_veth = names::is_berth_veth(&link.name);
            let ours_bridge = names::is_berth_bridge(&link.name);
            if (ours_veth && !live_veths.contains(&link.name))
                || (ours_bridge && !wanted_bridges.contains(&link.name))
            {
                tracing::info!(link = %link.name, "removing orphan link");
                self.kernel.delete_link(&link.name).await.ok();
            }
        }
        self.check_host_forward_policy();
        Ok(())
    }

    /// What the static rules depend on: which forwarding berth had to turn on.
    fn firewall_config(&self) -> berth_plan::firewall::FirewallConfig {
        let meta = self.meta();
        berth_plan::firewall::FirewallConfig {
            forwarding_was_off: meta.ipv4_forwarding_was_off,
            ipv6_forwarding_was_off: meta.ipv6_recorded && meta.ipv6_forwarding_was_off,
        }
    }

    fn enable_ipv6_forwarding(&self) -> anyhow::Result<()> {
        let mut meta = self.meta();
        if !meta.ipv6_recorded {
            let v6 = berth_kernel::sysctl::read(None, "net.ipv6.conf.all.forwarding")
                .context("reading net.ipv6.conf.all.forwarding")?;
            meta.ipv6_forwarding_was_off = v6.trim() == "0";
            meta.ipv6_recorded = true;
            self.store.apply(vec![Op::put_json(keys::META, &meta)])?;
            if let Ok(mut m) = self.meta.lock() {
                *m = meta;
            }
            // The guard rule for IPv6 goes in before forwarding is turned on.
            self.firewall
                .init(self.firewall_config())
                .context("updating berth's static rules for IPv6 forwarding")?;
        }
        berth_kernel::sysctl::write(None, "net.ipv6.conf.all.forwarding", "1")
            .context("enabling net.ipv6.conf.all.forwarding")?;
        Ok(())
    }

    /// Looks for other tables whose forward hook drops by policy: their verdict applies to
    /// berth's traffic too (a drop in any base chain wins), so say so loudly.
    fn check_host_forward_policy(&self) {
        let mut warnings = Vec::new();
        match berth_kernel::nft::list_ruleset_json(None) {
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

    // ---------------------------------------------------------------- networks

    /// `POST /networks/create`.
    pub async fn create_network(&self, req: NetworkRequest) -> ApiResult<NetworkSpec> {
        let _guard = self.lock.lock().await;
        let existing = self.networks()?;
        let routes = self.kernel.routes().await?;
        // Our own bridges' routes are networks already; only the rest are "the host's".
        let own: BTreeSet<IpNet> = existing
            .iter()
            .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
            .collect();
        let host_routes: Vec<IpNet> = routes.into_iter().filter(|r| !own.contains(r)).collect();
        let spec = planner::plan_network(&req, new_id(), now_rfc3339(), &existing, &host_routes)?;
        if spec.enable_ipv6 {
            self.enable_ipv6_forwarding()
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
        }
        self.store
            .apply(vec![Op::put_json(keys::network(&spec.id), &spec)])?;
        if let Err(e) = self.converge_network(&spec, &existing).await {
            // Roll back: nothing half-applied survives a failure.
            self.unconverge_network(&spec, &existing).await;
            self.store
                .apply(vec![Op::Delete(keys::network(&spec.id))])?;
            return Err(e);
        }
        self.dns_refresh();
        tracing::info!(network = %spec.name, id = %names::short_id(&spec.id), "network created");
        Ok(spec)
    }

    async fn converge_network(&self, spec: &NetworkSpec, others: &[NetworkSpec]) -> ApiResult<()> {
        if let Some(plan) = planner::bridge_plan(spec) {
            self.kernel.ensure_bridge(&plan).await.map_err(|e| {
                ApiError::internal(format!(
                    "creating bridge {} for network {:?}: {e}",
                    plan.name, spec.name
                ))
            })?;
            crate::ports::bridge_sysctls(&plan.name);
        }
        let mut all = others.to_vec();
        all.push(spec.clone());
        self.firewall.sync(&all).map_err(|e| {
            ApiError::internal(format!(
                "applying firewall rules for network {:?}: {e:#}",
                spec.name
            ))
        })
    }

    async fn unconverge_network(&self, spec: &NetworkSpec, others: &[NetworkSpec]) {
        if spec.driver == Driver::Bridge {
            if let Err(e) = self.kernel.delete_link(&spec.bridge).await {
                tracing::warn!("removing bridge {}: {e}", spec.bridge);
            }
        }
        if let Err(e) = self.firewall.sync(others) {
            tracing::warn!(
                "removing firewall elements of network {:?}: {e:#}",
                spec.name
            );
        }
    }

    /// `DELETE /networks/{id}`.
    pub async fn remove_network(&self, query: &str) -> ApiResult<NetworkSpec> {
        let _guard = self.lock.lock().await;
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
        let others: Vec<NetworkSpec> = self
            .networks()?
            .into_iter()
            .filter(|n| n.id != net.id)
            .collect();
        // Kernel first, then the store: a crash in between leaves the network stored, and the
        // next start converges it back (never an orphan bridge nobody can name).
        self.unconverge_network(net, &others).await;
        self.store.apply(vec![Op::Delete(keys::network(&net.id))])?;
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
        let nets = self.networks()?;
        let selected: Vec<NetworkSpec> = planner::filter_networks(&nets, filters)?
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

    /// `POST /networks/{id}/connect`.
    pub async fn connect(
        &self,
        net_query: &str,
        container_query: &str,
        req: EndpointRequest,
    ) -> ApiResult<()> {
        let _guard = self.lock.lock().await;
        let net = self.find_network(net_query)?;
        let mut c = self.find_container(container_query)?;
        if c.mode != NetworkMode::Networks {
            return Err(ApiError::forbidden(format!(
                "container {:?} uses network mode {}: it cannot be connected to other networks",
                c.name,
                mode_name(&c.mode)
            )));
        }
        let all = self.containers()?;
        let ep = planner::plan_endpoint(&net, &c, &all, &req, new_id())?;
        let old_gateway = self.gateway_network_id(&c)?;
        c.endpoints.push(ep.clone());
        self.store
            .apply(vec![Op::put_json(keys::container(&c.id), &c)])?;
        let st = self.state(&c.id)?;
        if st.status == "running" {
            if let Err(e) = self
                .plumb_running(&c, &st, &ep, old_gateway.as_deref())
                .await
            {
                c.endpoints.retain(|x| x.id != ep.id);
                self.store
                    .apply(vec![Op::put_json(keys::container(&c.id), &c)])?;
                return Err(e);
            }
            self.runtime.write_files(self, &c).await.ok();
        }
        self.dns_refresh();
        tracing::info!(network = %net.name, container = %c.name, "connected");
        Ok(())
    }

    /// Wires a new endpoint into a running container (and moves the default route if this
    /// endpoint now gives it).
    async fn plumb_running(
        &self,
        c: &ContainerSpec,
        st: &ContainerState,
        ep: &EndpointSpec,
        old_gateway: Option<&str>,
    ) -> ApiResult<()> {
        let nets = self.networks()?;
        let netns = format!("/proc/{}/ns/net", st.pid);
        let new_gateway = self.gateway_network_id(c)?;
        let net = nets
            .iter()
            .find(|n| n.id == ep.network_id)
            .ok_or_else(|| ApiError::internal("network vanished while connecting"))?;
        let is_gw = new_gateway.as_deref() == Some(ep.network_id.as_str());
        let mut plan = planner::endpoint_plan(net, ep, &netns, is_gw);
        if is_gw && old_gateway.is_some() {
            // The default route moves: replace it after the link exists.
            let routes = std::mem::take(&mut plan.routes);
            self.kernel.setup_endpoint(&plan).await?;
            self.kernel
                .replace_routes(Path::new(&netns), &routes)
                .await?;
        } else {
            self.kernel.setup_endpoint(&plan).await?;
        }
        Ok(())
    }

    /// The network whose endpoint gives `c` its default route.
    pub fn gateway_network_id(&self, c: &ContainerSpec) -> ApiResult<Option<String>> {
        let nets = self.networks()?;
        Ok(planner::gateway_endpoint(c, &nets).map(|e| e.network_id.clone()))
    }

    /// `POST /networks/{id}/disconnect`.
    pub async fn disconnect(&self, net_query: &str, container_query: &str) -> ApiResult<()> {
        let _guard = self.lock.lock().await;
        let net = self.find_network(net_query)?;
        let mut c = self.find_container(container_query)?;
        let Some(pos) = c.endpoints.iter().position(|e| e.network_id == net.id) else {
            return Err(ApiError::forbidden(format!(
                "container {} is not connected to network {}",
                c.name, net.name
            )));
        };
        let old_gateway = self.gateway_network_id(&c)?;
        let ep = c.endpoints.remove(pos);
        let st = self.state(&c.id)?;
        if st.status == "running" {
            self.kernel.teardown_endpoint(&ep.host_ifname).await?;
            let new_gateway = self.gateway_network_id(&c)?;
            if new_gateway != old_gateway {
                if let Some(gw_net) = new_gateway {
                    let nets = self.networks()?;
                    let netns = format!("/proc/{}/ns/net", st.pid);
                    if let (Some(n), Some(e)) = (
                        nets.iter().find(|n| n.id == gw_net),
                        c.endpoints.iter().find(|e| e.network_id == gw_net),
                    ) {
                        let plan = planner::endpoint_plan(n, e, &netns, true);
                        self.kernel
                            .replace_routes(Path::new(&netns), &plan.routes)
                            .await?;
                    }
                }
            }
        }
        self.store
            .apply(vec![Op::put_json(keys::container(&c.id), &c)])?;
        if st.status == "running" {
            self.runtime.write_files(self, &c).await.ok();
        }
        self.dns_refresh();
        tracing::info!(network = %net.name, container = %c.name, "disconnected");
        Ok(())
    }

    // ---------------------------------------------------------------- containers

    /// `POST /containers/create`.
    pub async fn create_container(
        &self,
        name: Option<String>,
        req: berth_api::types::ContainerCreateRequest,
    ) -> ApiResult<ContainerSpec> {
        let _guard = self.lock.lock().await;
        if req.cmd.is_empty() {
            return Err(ApiError::bad_request(
                "no command given: berth runs a program from the host's filesystem (or --rootfs), e.g. `berth run sleep 60`",
            ));
        }
        let id = new_id();
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(&n).to_string();
                names::validate_name("container", &n)?;
                n
            }
            None => names::generated_name(&id),
        };
        let all = self.containers()?;
        if let Some(other) = all.iter().find(|c| c.name == name) {
            return Err(ApiError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". \
                 You have to remove (or rename) that container to be able to reuse that name.",
                other.id
            )));
        }
        if let Some(rootfs) = &req.rootfs {
            if !Path::new(rootfs).is_dir() {
                return Err(ApiError::bad_request(format!(
                    "--rootfs {rootfs:?} is not a directory on the host"
                )));
            }
        }
        let hc = &req.host_config;
        let dns = hc
            .dns
            .iter()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| ApiError::bad_request(format!("--dns {s:?} is not an IP address")))
            })
            .collect::<ApiResult<Vec<_>>>()?;
        let extra_hosts = hc
            .extra_hosts
            .iter()
            .map(|h| names::parse_extra_host(h))
            .collect::<Result<Vec<_>, _>>()?;
        let hostname = if req.hostname.is_empty() {
            name.clone()
        } else {
            req.hostname.clone()
        };
        if hostname.len() > 64 {
            return Err(ApiError::bad_request(format!(
                "hostname {hostname:?} is longer than 64 characters"
            )));
        }
        let mode_str = hc.network_mode.as_str();
        let mode = match mode_str {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            m if m.starts_with("container:") => {
                let target = self.find_container(&m["container:".len()..])?;
                NetworkMode::Container(target.id)
            }
            _ => NetworkMode::Networks,
        };
        let mut spec = ContainerSpec {
            id: id.clone(),
            name,
            hostname,
            created: now_rfc3339(),
            cmd: req.cmd.clone(),
            env: req.env.clone(),
            mode: mode.clone(),
            endpoints: Vec::new(),
            dns,
            dns_search: hc.dns_search.clone(),
            dns_options: hc.dns_options.clone(),
            extra_hosts,
            rootfs: req.rootfs.clone(),
            auto_remove: hc.auto_remove,
            // issue 8: capabilities, seccomp, mounts (400 on bad input).
            security: crate::security::spec_from_api(hc)?,
        };
        if mode == NetworkMode::Networks {
            // The networks to join: NetworkMode (default `bridge`) first, then any other
            // network named in EndpointsConfig, in name order.
            let mut wanted: Vec<String> = Vec::new();
            let first = if mode_str.is_empty() || mode_str == "default" {
                "bridge"
            } else {
                mode_str
            };
            wanted.push(first.to_string());
            for k in req.networking_config.endpoints_config.keys() {
                if !wanted.contains(k) {
                    wanted.push(k.clone());
                }
            }
            let mut all_with_self = all.clone();
            for q in wanted {
                let net = self.find_network(&q)?;
                if net.driver != Driver::Bridge {
                    return Err(ApiError::bad_request(format!(
                        "network {:?} ({}) cannot be combined with other networks; use --network {}",
                        net.name,
                        net.driver.as_str(),
                        net.name
                    )));
                }
                let settings = req
                    .networking_config
                    .endpoints_config
                    .get(&q)
                    .or_else(|| req.networking_config.endpoints_config.get(&net.name))
                    .or_else(|| req.networking_config.endpoints_config.get(&net.id));
                let ep_req = endpoint_request(settings);
                all_with_self.retain(|c| c.id != spec.id);
                all_with_self.push(spec.clone());
                let ep = planner::plan_endpoint(&net, &spec, &all_with_self, &ep_req, new_id())?;
                spec.endpoints.push(ep);
            }
        } else if !req.networking_config.endpoints_config.is_empty()
            && !req
                .networking_config
                .endpoints_config
                .keys()
                .all(|k| k == mode_str)
        {
            return Err(ApiError::bad_request(format!(
                "network mode {mode_str} cannot be combined with other networks"
            )));
        }
        let state = ContainerState {
            status: "created".into(),
            ..Default::default()
        };
        // Published ports: parsed and checked before anything is stored.
        let port_specs = crate::ports::specs_from_api(hc)?;
        crate::ports::validate(self, &spec, &port_specs).await?;
        let mut ops = vec![
            Op::put_json(keys::container(&spec.id), &spec),
            Op::put_json(keys::state(&spec.id), &state),
        ];
        ops.extend(crate::ports::store_op(&spec.id, &port_specs));
        self.store.apply(ops)?;
        // Known as an asker from now on: its first query may come before it counts as running.
        self.dns_refresh();
        tracing::info!(container = %spec.name, id = %names::short_id(&spec.id), "container created");
        Ok(spec)
    }

    /// `POST /containers/{id}/start`.
    pub async fn start_container(self: &Arc<Self>, query: &str) -> ApiResult<()> {
        let _guard = self.lock.lock().await;
        let c = self.find_container(query)?;
        let st = self.state(&c.id)?;
        if st.status == "running" {
            return Ok(());
        }
        // Answered from the moment its command runs, not only once the state below is stored.
        self.dns_refresh_with(Some(&c.id));
        // Ports first: a refused port fails the start before any process exists.
        let port_op = crate::ports::publish(self, &c).await?;
        let started = self.runtime.start(self, &c).await;
        if started.is_err() {
            self.dns_refresh();
            crate::ports::unpublish(self, &c.id, &c.name).await;
        }
        let (pid, init_pid) = started?;
        let state = ContainerState {
            status: "running".into(),
            pid: init_pid,
            exit_code: 0,
            started_at: now_rfc3339(),
            finished_at: st.finished_at,
        };
        let mut ops = vec![Op::put_json(keys::state(&c.id), &state)];
        ops.extend(port_op);
        self.store.apply(ops)?;
        self.exit_channel(&c.id).send_replace(None);
        self.dns_refresh();
        tracing::info!(container = %c.name, pid, "container started");
        Ok(())
    }

    /// Remembers that `id` was removed and forgets the exit codes of containers removed more
    /// than [`EXIT_MEMORY`] ago, so the table does not grow with every container ever run.
    fn forget_exits(&self, id: &str) {
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

    /// Called when a container's init exited: records the code, removes its endpoints' host
    /// sides (the netns is gone with the process; deleting explicitly makes it immediate), and
    /// removes the container if it was `--rm`.
    pub async fn container_exited(self: &Arc<Self>, id: &str, code: i32) {
        let _guard = self.lock.lock().await;
        if let Err(e) = self.mark_exited(id, code).await {
            tracing::warn!("recording the exit of container {id}: {}", e.message);
        }
        self.exit_channel(id).send_replace(Some(code));
        let auto_remove = self
            .store
            .get_json::<ContainerSpec>(&keys::container(id))
            .ok()
            .flatten()
            .map(|c| c.auto_remove)
            .unwrap_or(false);
        if auto_remove {
            if let Err(e) = self.remove_container_locked(id).await {
                tracing::warn!("auto-removing container {id}: {}", e.message);
            }
        }
    }

    async fn mark_exited(&self, id: &str, code: i32) -> ApiResult<()> {
        let Some(c) = self.store.get_json::<ContainerSpec>(&keys::container(id))? else {
            return Ok(());
        };
        // No explicit veth deletion here: the container's network namespace died with its
        // last process, and the kernel destroys every veth with an end in it (batched in its
        // netns cleanup work, off this path; a synchronous RTM_DELLINK costs ~20 ms of RCU
        // grace periods each on this kind of machine). A restart that finds a not-yet-destroyed
        // veth of the same name replaces it (runtime::start).
        // An exited container frees its ports at once.
        let port_op = crate::ports::unpublish(self, id, &c.name).await;
        let mut st = self.state(id)?;
        st.status = "exited".into();
        st.pid = 0;
        st.exit_code = code;
        st.finished_at = now_rfc3339();
        let mut ops = vec![Op::put_json(keys::state(id), &st)];
        ops.extend(port_op);
        self.store.apply(ops)?;
        self.dns_refresh();
        Ok(())
    }

    /// `POST /containers/{id}/stop`.
    pub async fn stop_container(&self, query: &str, timeout_secs: u64) -> ApiResult<()> {
        let c = self.find_container(query)?;
        let st = self.state(&c.id)?;
        if st.status != "running" {
            return Ok(());
        }
        let mut rx = self.exit_channel(&c.id).subscribe();
        self.runtime
            .signal(&c.id, nix::sys::signal::Signal::SIGTERM);
        let stopped = tokio::time::timeout(
            std::time::Duration::from_secs(timeout_secs),
            rx.wait_for(|v| v.is_some()),
        )
        .await
        .is_ok();
        if !stopped {
            tracing::info!(container = %c.name, "did not stop in {timeout_secs}s, killing");
            self.runtime
                .signal(&c.id, nix::sys::signal::Signal::SIGKILL);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                rx.wait_for(|v| v.is_some()),
            )
            .await;
        }
        Ok(())
    }

    /// `DELETE /containers/{id}`.
    pub async fn remove_container(&self, query: &str, force: bool) -> ApiResult<()> {
        let c = self.find_container(query)?;
        let st = self.state(&c.id)?;
        if st.status == "running" {
            if !force {
                return Err(ApiError::conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                )));
            }
            let mut rx = self.exit_channel(&c.id).subscribe();
            self.runtime
                .signal(&c.id, nix::sys::signal::Signal::SIGKILL);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                rx.wait_for(|v| v.is_some()),
            )
            .await;
        }
        let _guard = self.lock.lock().await;
        self.remove_container_locked(&c.id).await
    }

    async fn remove_container_locked(&self, id: &str) -> ApiResult<()> {
        let Some(c) = self.store.get_json::<ContainerSpec>(&keys::container(id))? else {
            return Ok(());
        };
        // Only exited (or never started) containers get here: their veths die with their
        // network namespace (see `mark_exited`), nothing to delete synchronously.
        crate::ports::unpublish(self, id, &c.name).await;
        self.store.apply(vec![
            Op::Delete(keys::container(id)),
            Op::Delete(keys::state(id)),
            Op::Delete(crate::ports::key(id)),
        ])?;
        self.runtime.remove_files(id);
        self.forget_exits(id);
        self.dns_refresh();
        tracing::info!(container = %c.name, "container removed");
        Ok(())
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

    /// [`Daemon::dns_refresh`], counting container `starting` as running.
    fn dns_refresh_with(&self, starting: Option<&str>) {
        let build = || -> ApiResult<berth_plan::dns::Table> {
            let nets = self.networks()?;
            let mut containers = Vec::new();
            for c in self.containers()? {
                let running =
                    starting == Some(c.id.as_str()) || self.state(&c.id)?.status == "running";
                containers.push((c, running));
            }
            Ok(berth_plan::dns::Table::build(&nets, &containers))
        };
        match build() {
            Ok(table) => {
                self.dns.update(table);
            }
            // The previous table stays: better slightly old answers than none.
            Err(e) => tracing::warn!("embedded DNS: reading the store: {}", e.message),
        }
    }
}

/// Converts Docker's `EndpointSettings` into the planner's request.
pub fn endpoint_request(s: Option<&berth_api::types::EndpointSettings>) -> EndpointRequest {
    let ipam = s.and_then(|s| s.ipam_config.clone()).unwrap_or_default();
    EndpointRequest {
        ipv4: ipam.ipv4_address.filter(|a| !a.is_empty()),
        ipv6: ipam.ipv6_address.filter(|a| !a.is_empty()),
        aliases: s.and_then(|s| s.aliases.clone()).unwrap_or_default(),
        gw_priority: s.map(|s| s.gw_priority).unwrap_or(0),
    }
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
