//! This host as a node of a berth cluster: its record in etcd under a lease kept alive by a
//! thread of its own, the list of live nodes, and the store's health.
//!
//! A node's record (`nodes/<name>`, [`NodeRecord`]) is tied to its lease: when the host dies,
//! etcd deletes the record one TTL later and every other host's watch hears it. A stop, even a
//! graceful one, keeps the lease: containers keep running across a berthd restart, and the
//! next berthd adopts the lease if it comes back within the TTL, so other hosts see no gap. A
//! host that loses etcd for longer than its TTL registers again (new lease, same name) when
//! etcd is back.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_api::types::{ClusterInfo, NodeSummary};
use berth_plan::cluster::{self as pc, Advertise, ClusterStore, NodeRecord};
use berth_plan::model::ContainerSpec;
use berth_plan::overlay::RemoteEndpoint;
use berth_plan::remotes::{RemoteCache, RemoteDns};
use berth_store::{
    Compare, EtcdOptions, EtcdStore, EtcdTls, LeaseId, Op, Store, StoreError, StoreExt, TxnOutcome,
};

/// berthd's cluster options, parsed.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `--cluster-store` as given (shown by `/info` as Docker's `ClusterStore`).
    pub url: String,
    /// Endpoints and TLS.
    pub store: ClusterStore,
    /// `--advertise-addr`.
    pub advertise: Advertise,
    /// `--node-name` (default: the host name).
    pub node_name: String,
    /// The lease's TTL: how long after this host stops renewing the others forget it.
    pub lease_ttl: Duration,
    /// This host's WireGuard private key (in the state dir; made on first use).
    pub key_file: std::path::PathBuf,
    /// WireGuard's UDP port (`--wireguard-port`).
    pub wg_port: u16,
}

/// This host's membership.
pub struct Cluster {
    /// The cluster store.
    pub store: Arc<EtcdStore>,
    /// `--cluster-store` as given.
    pub url: String,
    /// What this host publishes (its `underlay_mtu` as read at start-up: the current one is
    /// [`Cluster::record_now`]'s).
    pub record: NodeRecord,
    /// `--advertise-addr`: which interface carries the underlay (read again by passes).
    advertise: Advertise,
    /// The underlay interface's MTU as last read (start-up, then full and host passes).
    underlay_mtu: Mutex<Option<u32>>,
    lease: Mutex<Option<LeaseId>>,
    health: Mutex<Result<(), String>>,
    /// Every endpoint published on the cluster's overlay networks (all hosts', by key), as
    /// the etcd watch last delivered them, with what the DNS table has not taken yet.
    remotes: Mutex<RemoteCache>,
    /// What this host last published (lease, endpoints, claims): a publication that changes
    /// nothing costs no store write.
    #[allow(clippy::type_complexity)]
    published: Mutex<(
        Option<LeaseId>,
        BTreeMap<String, RemoteEndpoint>,
        BTreeMap<String, ClusterClaim>,
    )>,
    /// Claims taken (or being taken) for containers whose local record may not be stored
    /// yet, with when: a publication built from a snapshot older than the claim must keep
    /// them, or it deletes a claim another host may then take (two containers, one address).
    /// An entry goes when a publication's own claims hold it (the record is stored), when
    /// the claim is released, or after [`PENDING_CLAIM_MAX`].
    pending: Mutex<BTreeMap<String, (ClusterClaim, Instant)>>,
    /// Endpoints published together with their address claims by a `run` (create and start
    /// in one request), before the container's record is stored: every publication keeps
    /// them until the start is over ([`Cluster::settle_endpoints`]), or it would withdraw
    /// them as belonging to no running container. Dropped after [`PENDING_CLAIM_MAX`] too.
    pending_eps: Mutex<BTreeMap<String, (RemoteEndpoint, Instant)>>,
    /// The cluster's address claims as the sync's watch last delivered them (`None` while
    /// that watch is not running): a create picks its address from this copy instead of
    /// listing etcd first; the claim's compare-absent still decides.
    claims_seen: Mutex<Option<BTreeMap<String, ClusterClaim>>>,
    /// Held (written) from the moment a publication reads the local store until its store
    /// write is done: publications are ordered, so a later one never starts from an older
    /// snapshot. A claim holds it (read; claims run side by side) from making its claims and
    /// endpoint pending until it has recorded them as published: a publication never sees
    /// a claim half-way (its claims pending but not its endpoint, or its transaction
    /// committed but not yet pending), see [`Cluster::claim`].
    publishing: RwLock<()>,
    /// The live nodes' records, as the etcd watch last delivered them (WireGuard peers).
    nodes: Mutex<Vec<NodeRecord>>,
    /// This host's WireGuard key and datapath (encrypted overlay networks).
    pub wireguard: crate::wireguard::WireGuard,
}

impl Cluster {
    /// Connects to etcd and registers this host. An unreachable etcd is not fatal: berthd
    /// starts (its local containers need it), reports the cluster unhealthy, and the
    /// keep-alive thread registers as soon as etcd answers. A node name held by another live
    /// host, or unreadable TLS files, are fatal: they need the operator.
    pub fn join(cfg: ClusterConfig) -> anyhow::Result<Arc<Cluster>> {
        pc::validate_node_name(&cfg.node_name).map_err(|e| anyhow::anyhow!("{e}"))?;
        let addr = resolve_advertise(&cfg.advertise)?;
        let underlay_mtu = underlay_mtu(&cfg.advertise, addr);
        let mut opts = EtcdOptions::new(cfg.store.endpoints.clone());
        if cfg.store.tls.any() {
            opts.tls = Some(EtcdTls {
                ca_file: cfg.store.tls.ca_file.clone(),
                cert_file: cfg.store.tls.cert_file.clone(),
                key_file: cfg.store.tls.key_file.clone(),
            });
        }
        let wireguard = crate::wireguard::WireGuard::load_or_create(&cfg.key_file, cfg.wg_port)?;
        let store = EtcdStore::connect_lazy(opts)
            .with_context(|| format!("setting up the cluster store {}", cfg.url))?;
        let record = NodeRecord {
            name: cfg.node_name.clone(),
            addr,
            version: env!("CARGO_PKG_VERSION").into(),
            joined_at: String::new(),
            lease_ttl_secs: cfg.lease_ttl.as_secs().max(1),
            instance: crate::daemon::new_id(),
            wg_key: Some(berth_plan::wireguard::encode_key(&wireguard.public)),
            wg_port: Some(cfg.wg_port),
            underlay_mtu,
        };
        let c = Arc::new(Cluster {
            store: Arc::new(store),
            url: cfg.url,
            record,
            advertise: cfg.advertise.clone(),
            underlay_mtu: Mutex::new(underlay_mtu),
            lease: Mutex::new(None),
            health: Mutex::new(Err("not registered yet".into())),
            remotes: Mutex::new(RemoteCache::new(cfg.node_name.clone())),
            published: Mutex::new((None, BTreeMap::new(), BTreeMap::new())),
            pending: Mutex::new(BTreeMap::new()),
            pending_eps: Mutex::new(BTreeMap::new()),
            claims_seen: Mutex::new(None),
            publishing: RwLock::new(()),
            nodes: Mutex::new(Vec::new()),
            wireguard,
        });
        match c.register() {
            Ok(()) => {
                // The live nodes now (the node watch delivers them only after the start-up
                // pass): that pass then gives the overlay networks the MTU of the cluster's
                // current underlay, not the one decided at create, which would shrink running
                // containers' interfaces until the watch's first delivery grew them back.
                match c.store.list_json::<NodeRecord>(pc::NODES) {
                    Ok(nodes) => c.set_nodes(nodes),
                    Err(e) => tracing::warn!("cluster: listing the nodes: {e}"),
                }
                // The other hosts' endpoints too, for the same reason: without them the
                // start-up pass would take their forwarding and neighbour entries off this
                // host's VXLAN ports ("not wanted"), and the sync's first list would put them
                // back moments later: a cross-host outage at every restart.
                match c.store.list_versioned(ENDPOINTS) {
                    Ok((_, eps)) => c.set_remotes(eps),
                    Err(e) => tracing::warn!("cluster: listing the endpoints: {e}"),
                }
            }
            Err(JoinError::Store(e @ StoreError::Unavailable { .. })) => {
                tracing::warn!(
                    "cluster: {e}; berthd starts without the cluster and joins when etcd answers"
                );
                c.set_health(Err(e.to_string()));
            }
            Err(e) => return Err(anyhow::anyhow!("joining the cluster at {}: {e}", c.url)),
        }
        Ok(c)
    }

    /// Registers this host: its record is created, or taken over from this host's previous
    /// run (same address) — together with that run's lease when it is still alive, so a
    /// restarted berthd keeps everything the old one published (other hosts never see a gap).
    /// A live record of another host with the same name is refused.
    fn register(&self) -> Result<(), JoinError> {
        let ttl = Duration::from_secs(self.record.lease_ttl_secs);
        let key = pc::node_key(&self.record.name);
        let mut rec = self.record_now();
        rec.joined_at = crate::daemon::now_rfc3339();
        let mut granted = None;
        let result = (|| {
            for _ in 0..berth_store::MAX_TXN_ATTEMPTS {
                let current = self.store.get_versioned(&key)?;
                let (compare, previous) = match &current {
                    None => (Compare::Absent(key.clone()), None),
                    Some(v) => {
                        let old: Option<NodeRecord> = serde_json::from_slice(&v.value).ok();
                        if let Some(o) = old.filter(|o| o.addr != rec.addr) {
                            return Err(JoinError::NameTaken(Box::new(o)));
                        }
                        (Compare::ModRevision(key.clone(), v.mod_revision), v.lease)
                    }
                };
                // This host's previous run: adopt its lease if it is alive.
                let lease = match previous {
                    Some(l) if self.store.keep_alive(l).is_ok() => l,
                    _ => match granted {
                        Some(l) => l,
                        None => {
                            let l = self.store.grant_lease(ttl)?;
                            granted = Some(l);
                            l
                        }
                    },
                };
                let ops = vec![Op::put_json_lease(key.clone(), &rec, lease)];
                if let TxnOutcome::Committed(_) = self.store.txn(vec![compare], ops)? {
                    return Ok(lease);
                }
            }
            Err(JoinError::Store(StoreError::Contended {
                what: key.clone(),
                attempts: berth_store::MAX_TXN_ATTEMPTS,
            }))
        })();
        match result {
            Ok(lease) => {
                if let Some(g) = granted.filter(|g| *g != lease) {
                    let _ = self.store.revoke_lease(g);
                }
                if let Ok(mut l) = self.lease.lock() {
                    *l = Some(lease);
                }
                self.set_health(Ok(()));
                let adopted = granted != Some(lease);
                tracing::info!(node = %rec.name, addr = %rec.addr, lease = %lease, adopted, "cluster: joined");
                Ok(())
            }
            Err(e) => {
                if let Some(g) = granted {
                    let _ = self.store.revoke_lease(g);
                }
                Err(e)
            }
        }
    }

    /// Records a failed request (until the next keep-alive succeeds).
    pub fn mark_unhealthy(&self, why: String) {
        self.set_health(Err(why));
    }

    fn set_health(&self, h: Result<(), String>) {
        if let Ok(mut g) = self.health.lock() {
            *g = h;
        }
    }

    /// Whether the store answered the last request (keep-alives run every TTL/3).
    pub fn healthy(&self) -> bool {
        self.health.lock().map(|h| h.is_ok()).unwrap_or(false)
    }

    fn lease(&self) -> Option<LeaseId> {
        self.lease.lock().ok().and_then(|l| *l)
    }

    /// Keeps the lease alive every TTL/3 on a thread of its own (store calls block), and
    /// registers again when the lease was lost (etcd away for longer than the TTL).
    pub fn spawn_keepalive(self: &Arc<Self>) -> std::io::Result<()> {
        let c = self.clone();
        let period = Duration::from_secs(self.record.lease_ttl_secs).div_f64(3.0);
        std::thread::Builder::new()
            .name("berth-cluster".into())
            .spawn(move || {
                // Until the process ends: the lease outlives a graceful stop on purpose.
                loop {
                    std::thread::sleep(period);
                    let r = match c.lease() {
                        Some(l) => match c.store.keep_alive(l) {
                            Err(StoreError::LeaseNotFound { .. }) => {
                                tracing::warn!("cluster: lease {l} expired; registering again");
                                c.register().and_then(|()| {
                                    // Everything published under the old lease is gone:
                                    // publish it again under the new one.
                                    c.republish().map_err(JoinError::Store)
                                })
                            }
                            r => r.map_err(JoinError::Store),
                        },
                        None => c.register(),
                    };
                    match r {
                        Ok(()) => c.set_health(Ok(())),
                        Err(e) => {
                            tracing::warn!("cluster: {e}");
                            c.set_health(Err(e.to_string()));
                        }
                    }
                }
            })
            .map(|_| ())
    }

    /// The live nodes (their records exist while their leases do), by name.
    pub fn nodes(&self) -> Result<Vec<NodeSummary>, StoreError> {
        let r = self.store.list_json::<NodeRecord>(pc::NODES);
        self.set_health(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        let now = time::OffsetDateTime::now_utc();
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for e in self.remote_endpoints() {
            *per_node.entry(e.node).or_default() += 1;
        }
        Ok(r?
            .into_iter()
            .map(|n| {
                let age = time::OffsetDateTime::parse(
                    &n.joined_at,
                    &time::format_description::well_known::Rfc3339,
                )
                .map(|t| (now - t).whole_seconds().max(0) as u64)
                .unwrap_or(0);
                NodeSummary {
                    endpoints: per_node.get(&n.name).copied().unwrap_or(0),
                    is_self: n.name == self.record.name && n.instance == self.record.instance,
                    name: n.name,
                    addr: n.addr.to_string(),
                    version: n.version,
                    joined_at: n.joined_at,
                    age_secs: age,
                    lease_ttl_secs: n.lease_ttl_secs,
                }
            })
            .collect())
    }

    /// The cluster's underlay as the live nodes published it (this host's own record
    /// included, also before the watch delivered it): the smallest advertised interface MTU,
    /// and whether any host tunnels over IPv6. An overlay network created here fits it.
    pub fn underlay(&self) -> berth_plan::network::Underlay {
        // Read from etcd (a create talks to it anyway): a host that joined a moment ago
        // counts even before the watch delivered its record. The watch's copy when etcd is
        // marked unreachable (no second request timeout before the create's own 503) or
        // does not answer.
        let listed = if self.healthy() {
            self.store.list_json::<NodeRecord>(pc::NODES).ok()
        } else {
            None
        };
        let nodes = match listed {
            Some(n) => n,
            None => self.nodes.lock().map(|n| n.clone()).unwrap_or_default(),
        };
        berth_plan::network::Underlay::of_hosts(
            nodes
                .iter()
                .filter(|n| n.name != self.record.name)
                .chain(std::iter::once(&self.record))
                .map(|n| (n.addr, n.underlay_mtu)),
        )
    }

    /// This host's own underlay (its advertised interface's MTU and address family).
    pub fn own_underlay(&self) -> berth_plan::network::Underlay {
        berth_plan::network::Underlay::of_hosts([(self.record.addr, self.current_mtu())])
    }

    fn current_mtu(&self) -> Option<u32> {
        self.underlay_mtu
            .lock()
            .map(|m| *m)
            .unwrap_or(self.record.underlay_mtu)
    }

    /// This host's node record with its underlay's MTU as last read.
    pub fn record_now(&self) -> NodeRecord {
        NodeRecord {
            underlay_mtu: self.current_mtu(),
            ..self.record.clone()
        }
    }

    /// The cluster's underlay now, for the MTU of overlay networks on this host
    /// ([`berth_plan::network::overlay_mtu_now`]): the live nodes as the watch last delivered
    /// them, this host with its MTU as last read. `None` before the watch delivered any node
    /// (the networks keep the MTU decided at create).
    pub fn live_underlay(&self) -> Option<berth_plan::network::Underlay> {
        let nodes = self.nodes.lock().map(|n| n.clone()).unwrap_or_default();
        if nodes.is_empty() {
            return None;
        }
        let mine = self.current_mtu();
        Some(berth_plan::network::Underlay::of_hosts(
            nodes
                .iter()
                .filter(|n| n.name != self.record.name)
                .map(|n| (n.addr, n.underlay_mtu))
                .chain(std::iter::once((self.record.addr, mine))),
        ))
    }

    /// Reads the underlay interface's MTU again (one `RTM_GETLINK` of the interface, after an
    /// `RTM_GETADDR` dump when it is known by address: no link dump, which on a host with
    /// 1,000 veths is ~1 MB read on this worker at every full pass) and, when it changed, publishes it in this host's node record: every host's
    /// node watch then recomputes the MTU of the overlay networks (a smaller underlay shrinks
    /// them on every host, a larger one lets them grow). Returns whether it changed.
    pub fn refresh_underlay(self: &Arc<Self>) -> bool {
        let name = match &self.advertise {
            Advertise::Interface(n) => Some(n.as_str()),
            Advertise::Addr(_) => None,
        };
        let Ok(links) = berth_kernel::observe::underlay_link_now(name, self.record.addr) else {
            return false;
        };
        let Some(now) = pc::underlay_link(&self.advertise, self.record.addr, &links).map(|l| l.mtu)
        else {
            return false;
        };
        let before = self.current_mtu();
        if before == Some(now) {
            return false;
        }
        if let Ok(mut m) = self.underlay_mtu.lock() {
            *m = Some(now);
        }
        tracing::info!(
            before = ?before,
            mtu = now,
            "cluster: the underlay interface's MTU changed; publishing it"
        );
        // Store calls block: off the async runtime.
        let c = self.clone();
        std::thread::spawn(move || {
            if let Err(e) = c.publish_record() {
                tracing::warn!("cluster: publishing the underlay's MTU: {e}");
            }
        });
        true
    }

    /// Writes this host's record again under its lease (its current underlay MTU), keeping
    /// the rest of what is stored (`JoinedAt`). Nothing without a lease: the keep-alive's
    /// registration writes the current record then.
    fn publish_record(&self) -> Result<(), StoreError> {
        let Some(lease) = self.lease() else {
            return Ok(());
        };
        let key = pc::node_key(&self.record.name);
        let Some(mut rec) = self.store.get_json::<NodeRecord>(&key)? else {
            return Ok(());
        };
        if rec.instance != self.record.instance {
            return Ok(());
        }
        rec.underlay_mtu = self.current_mtu();
        self.store
            .txn(vec![], vec![Op::put_json_lease(key, &rec, lease)])?;
        Ok(())
    }

    /// Records the live nodes (from the watch) and gives the WireGuard datapath its peers.
    pub fn set_nodes(&self, nodes: Vec<NodeRecord>) {
        if let Ok(mut n) = self.nodes.lock() {
            *n = nodes;
        }
        self.sync_wireguard_peers();
    }

    /// Gives the WireGuard datapath (if it runs) the peers of the live nodes.
    pub fn sync_wireguard_peers(&self) {
        let nodes = self.nodes.lock().map(|n| n.clone()).unwrap_or_default();
        self.wireguard
            .set_peers(&berth_plan::wireguard::peers(&nodes, &self.record.name));
    }

    /// The endpoints published on the cluster's overlay networks (every host's).
    pub fn remote_endpoints(&self) -> Vec<RemoteEndpoint> {
        self.remotes
            .lock()
            .map(|r| r.endpoints().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs `f` over the published endpoints without copying them (an event's step reads
    /// the few it concerns). The cache stays locked meanwhile: `f` must be short.
    pub fn with_remotes<T>(&self, f: impl FnOnce(&RemoteCache) -> T) -> Option<T> {
        let r = self.remotes.lock().ok()?;
        Some(f(&r))
    }

    /// What the DNS table has not taken yet of the other hosts' containers (see
    /// [`RemoteCache::take_dns`]); everything again if the cache is unusable.
    pub fn take_remote_dns(&self) -> RemoteDns {
        match self.remotes.lock() {
            Ok(mut r) => r.take_dns(),
            Err(_) => RemoteDns::All(Vec::new()),
        }
    }

    /// Every other host's container as a DNS stand-in, as the cache holds them now.
    pub fn remote_stand_ins(&self) -> Vec<ContainerSpec> {
        self.remotes
            .lock()
            .map(|r| r.stand_ins())
            .unwrap_or_default()
    }

    /// `/info`'s `Cluster`.
    pub fn info(&self) -> ClusterInfo {
        let nodes = self.nodes().map(|n| n.len()).unwrap_or(0);
        let health = self
            .health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| Err("unknown".into()));
        ClusterInfo {
            store: self.store.describe(),
            healthy: health.is_ok(),
            error: health.err().unwrap_or_default(),
            node: self.record.name.clone(),
            addr: self.record.addr.to_string(),
            nodes,
        }
    }
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
enum JoinError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "node name {:?} is held by a live host at {} (joined {}): give this host another \
         --node-name, or wait {} s if that host is gone",
        .0.name, .0.addr, .0.joined_at, .0.lease_ttl_secs
    )]
    NameTaken(Box<NodeRecord>),
}

/// The address to advertise: the literal one, or the interface's first IPv4 address (else
/// its first global IPv6 one).
fn resolve_advertise(a: &Advertise) -> anyhow::Result<IpAddr> {
    match a {
        Advertise::Addr(ip) => Ok(*ip),
        Advertise::Interface(name) => {
            let addrs = berth_kernel::observe::interface_addresses(name)
                .with_context(|| format!("--advertise-addr {name}: reading its addresses"))?;
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or_else(|| addrs.iter().find(|a| !is_link_local(a)))
                .copied()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--advertise-addr {name}: the interface has no usable address; give \
                         the address itself"
                    )
                })
        }
    }
}

/// The MTU of the interface carrying the underlay: the one `--advertise-addr` names, or the
/// one holding the advertised address, read over netlink in berthd's namespace. `None` (with a
/// warning; overlay networks then assume 1500) when no local interface holds the address.
fn underlay_mtu(a: &Advertise, addr: IpAddr) -> Option<u32> {
    let links = match berth_kernel::observe::links_now() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cluster: reading this host's links for the underlay's MTU: {e}");
            return None;
        }
    };
    match pc::underlay_link(a, addr, &links) {
        Some(l) => {
            tracing::info!(interface = %l.name, mtu = l.mtu, "cluster: underlay interface");
            Some(l.mtu)
        }
        None => {
            tracing::warn!(
                "cluster: no interface of this host holds the advertised address {addr}; \
                 overlay networks assume a {}-byte underlay",
                berth_plan::network::DEFAULT_MTU
            );
            None
        }
    }
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

// ---------------------------------------------------------------------------------------------
// Overlay networks in the cluster store.
//
// Keys (under etcd's `/berth/`):
//   networks/<id>                 the global network (a NetworkSpec), until `network rm`
//   netnames/<name>               → id: names are unique cluster-wide
//   vni/<n>                       → id: VXLAN ids are unique cluster-wide
//   ipam/<net>/<addr>             → Claim: the address's holder, under the holder's node lease
//   endpoints/<net>/<node>/<ctr>  → RemoteEndpoint, under the node lease: what the other
//                                   hosts program into their VXLAN ports and their DNS

/// Prefix of the global networks.
pub const NETWORKS: &str = "networks/";
const NETNAMES: &str = "netnames/";
const VNIS: &str = "vni/";
/// Prefix of the published endpoints.
pub const ENDPOINTS: &str = "endpoints/";
/// Prefix of the address claims.
pub const IPAM: &str = "ipam/";

use berth_plan::model::NetworkSpec;

use crate::error::{ApiError, ApiResult};

fn store_err(e: StoreError) -> ApiError {
    ApiError::from(e)
}

/// An address claim in the cluster store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterClaim {
    /// The node holding it.
    pub node: String,
    /// The container (id).
    pub container: String,
    /// Its name, for messages.
    pub name: String,
}

impl Cluster {
    /// Writes a new overlay network to the cluster: a VXLAN id is allocated (the lowest free
    /// from 4096, unless `-o …vxlanid_list=` gave one) and the name and id claimed, all in one
    /// compare-and-swap transaction, so two hosts creating at once never share either.
    pub fn create_network(&self, spec: &mut NetworkSpec) -> ApiResult<()> {
        let Some(mut ov) = spec.overlay else {
            return Err(ApiError::internal(
                "an overlay network without its VXLAN spec",
            ));
        };
        let given = ov.vni > 0;
        for _ in 0..berth_store::MAX_TXN_ATTEMPTS {
            if !given {
                let (_, used) = self.store.list_versioned(VNIS).map_err(store_err)?;
                let used: std::collections::BTreeSet<u32> = used
                    .iter()
                    .filter_map(|(k, _)| k.strip_prefix(VNIS)?.parse().ok())
                    .collect();
                ov.vni = berth_plan::overlay::pick_vni(&used)
                    .ok_or_else(|| ApiError::conflict("every VXLAN id is in use"))?;
            }
            spec.overlay = Some(ov);
            let name_key = format!("{NETNAMES}{}", spec.name);
            let vni_key = format!("{VNIS}{}", ov.vni);
            let compares = vec![
                Compare::Absent(name_key.clone()),
                Compare::Absent(vni_key.clone()),
            ];
            let ops = vec![
                Op::Put(name_key, spec.id.clone().into_bytes()),
                Op::Put(vni_key, spec.id.clone().into_bytes()),
                Op::put_json(format!("{NETWORKS}{}", spec.id), &*spec),
            ];
            match self.store.txn(compares, ops).map_err(store_err)? {
                TxnOutcome::Committed(_) => return Ok(()),
                TxnOutcome::Failed { failed: 0, .. } => {
                    return Err(ApiError::conflict(format!(
                        "network with name {} already exists (on another host of the cluster)",
                        spec.name
                    )))
                }
                TxnOutcome::Failed { .. } if given => {
                    return Err(ApiError::conflict(format!(
                        "VXLAN id {} is used by another overlay network of the cluster",
                        ov.vni
                    )))
                }
                // Another host took that VNI meanwhile: pick again.
                TxnOutcome::Failed { .. } => continue,
            }
        }
        Err(ApiError::conflict(
            "the cluster's overlay networks kept changing; try again",
        ))
    }

    /// Removes an overlay network from the cluster, refused while any host has an endpoint
    /// on it (naming the hosts).
    pub fn remove_network(&self, net: &NetworkSpec) -> ApiResult<()> {
        let prefix = format!("{ENDPOINTS}{}/", net.id);
        let (_, eps) = self.store.list_versioned(&prefix).map_err(store_err)?;
        if !eps.is_empty() {
            let hosts: std::collections::BTreeSet<String> = eps
                .iter()
                .filter_map(|(k, _)| k.strip_prefix(&prefix)?.split('/').next().map(String::from))
                .collect();
            return Err(ApiError::forbidden(format!(
                "error while removing network: network {} id {} has active endpoints on \
                 host(s) {}; disconnect or remove those containers first",
                net.name,
                net.id,
                hosts.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let mut ops = vec![
            Op::Delete(format!("{NETWORKS}{}", net.id)),
            Op::Delete(format!("{NETNAMES}{}", net.name)),
        ];
        if let Some(ov) = net.overlay {
            ops.push(Op::Delete(format!("{VNIS}{}", ov.vni)));
        }
        // Claims of stopped containers on other hosts go with the network.
        let (_, claims) = self
            .store
            .list_versioned(&format!("{IPAM}{}/", net.id))
            .map_err(store_err)?;
        ops.extend(claims.into_iter().map(|(k, _)| Op::Delete(k)));
        self.store.apply(ops).map_err(store_err)
    }

    /// Addresses of `net` held anywhere in the cluster → holder name (except `container`).
    /// `fresh`: read from etcd; otherwise from the watched copy of the claims when the sync
    /// keeps one (no etcd round trip on a create's path). The copy may lag a claim another
    /// host just made: the claim's compare-absent then fails and the caller asks again with
    /// `fresh` (two containers never get one address either way).
    pub fn holders(
        &self,
        net: &str,
        container: &str,
        fresh: bool,
    ) -> ApiResult<BTreeMap<IpAddr, String>> {
        let prefix = format!("{IPAM}{net}/");
        let holder = |k: &str, c: &ClusterClaim| {
            let addr: IpAddr = k.strip_prefix(&prefix)?.parse().ok()?;
            (c.container != container).then(|| (addr, format!("{} on {}", c.name, c.node)))
        };
        if !fresh {
            if let Ok(seen) = self.claims_seen.lock() {
                if let Some(seen) = seen.as_ref() {
                    return Ok(seen
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .filter_map(|(k, c)| holder(k, c))
                        .collect());
                }
            }
        }
        let (_, claims) = self.store.list_versioned(&prefix).map_err(store_err)?;
        Ok(claims
            .into_iter()
            .filter_map(|(k, v)| holder(&k, &serde_json::from_slice(&v.value).ok()?))
            .collect())
    }

    /// Replaces the watched copy of the cluster's address claims (`ipam/` keys) with a fresh
    /// list; `None`: no copy (the sync's watch ended), creates read etcd.
    pub fn set_claims_seen(&self, listed: Option<Vec<(String, berth_store::Versioned)>>) {
        let copy = listed.map(|l| {
            l.into_iter()
                .filter_map(|(k, v)| Some((k, serde_json::from_slice(&v.value).ok()?)))
                .collect()
        });
        if let Ok(mut s) = self.claims_seen.lock() {
            *s = copy;
        }
    }

    /// Applies one watch event of the `ipam/` keys to the watched copy.
    pub fn apply_claim_event(&self, key: &str, value: Option<&[u8]>) {
        let Ok(mut s) = self.claims_seen.lock() else {
            return;
        };
        let Some(seen) = s.as_mut() else { return };
        match value.and_then(|v| serde_json::from_slice::<ClusterClaim>(v).ok()) {
            Some(c) => {
                seen.insert(key.to_string(), c);
            }
            None => {
                seen.remove(key);
            }
        }
    }

    /// Claims `addrs` on `net` for a container of this host, under this host's lease (they
    /// are freed when the host is gone for a TTL). A claim taken meanwhile by another host is
    /// a 409 naming the address. With `announce` (a `run`: the container is started right
    /// after its create) the container's endpoint is published in the same transaction, so
    /// the other hosts learn its name and address one etcd commit after its address was
    /// chosen, instead of after the create's store commit, the client's start request and a
    /// second etcd commit; it stays pending until [`Cluster::settle_endpoints`].
    pub fn claim(
        &self,
        net: &str,
        container: &str,
        name: &str,
        addrs: &[IpAddr],
        announce: Option<&RemoteEndpoint>,
    ) -> ApiResult<()> {
        let Some(lease) = self.lease() else {
            return Err(ApiError::from(StoreError::Unavailable {
                store: self.store.describe(),
                msg: "this host has not joined the cluster yet".into(),
            }));
        };
        let claim = ClusterClaim {
            node: self.record.name.clone(),
            container: container.to_string(),
            name: name.to_string(),
        };
        let keys: Vec<String> = addrs.iter().map(|a| format!("{IPAM}{net}/{a}")).collect();
        let compares = keys.iter().map(|k| Compare::Absent(k.clone())).collect();
        let mut ops: Vec<Op> = keys
            .iter()
            .map(|k| Op::put_json_lease(k.clone(), &claim, lease))
            .collect();
        let ep_key = announce.map(|_| endpoint_key(net, &self.record.name, container));
        if let (Some(k), Some(e)) = (&ep_key, announce) {
            ops.push(Op::put_json_lease(k.clone(), e, lease));
        }
        // No publication from here until this claim is recorded as published below. One
        // that ran in between read the pending endpoints before its listing and the pending
        // claims after it, so it could put this claim without its endpoint (the transaction
        // then finds its claims committed and records the endpoint as published: never
        // written), or delete the endpoint just committed as no running container's, after
        // which the record below said it was published (never written again). Either way
        // the other hosts never learnt the endpoint; seen in CI when an etcd member's loss
        // restarted the sync, whose publication from scratch met a `run`.
        let _claiming = self.claim_lock();
        // Pending *before* the transaction: a publication that lists the store after it
        // committed then always finds the claim pending too (see `publication_ops`).
        let now = Instant::now();
        if let Ok(mut p) = self.pending.lock() {
            for k in &keys {
                p.insert(k.clone(), (claim.clone(), now));
            }
        }
        if let (Some(k), Some(e)) = (&ep_key, announce) {
            if let Ok(mut p) = self.pending_eps.lock() {
                p.insert(k.clone(), (e.clone(), now));
            }
        }
        let outcome = match self.store.txn(compares, ops).map_err(store_err) {
            // Every address already holding this very claim (this host, this container: ids
            // are never reused) is this claim committed, not another host's: an attempt that
            // committed before its answer was lost (the etcd client asks another member when
            // one dies mid-request). Seen in CI with one etcd member of three killed. (No
            // publication can have put the pending claims meanwhile: see `_claiming`.)
            Ok(TxnOutcome::Failed { revision, .. }) if self.holds_claims(&keys, &claim) => {
                tracing::debug!(container, "claims found committed by an earlier attempt");
                Ok(TxnOutcome::Committed(revision))
            }
            other => other,
        };
        if !matches!(outcome, Ok(TxnOutcome::Committed(_))) {
            self.unpend(&keys);
            if let Some(k) = &ep_key {
                self.unpend_endpoints(std::slice::from_ref(k));
            }
        }
        match outcome? {
            TxnOutcome::Committed(_) => {
                // Published now: the next publication (the start's pass) must not write them
                // again (one etcd write, with its fsync, on every start).
                if let Ok(mut p) = self.published.lock() {
                    if p.0 == Some(lease) {
                        for k in keys {
                            p.2.insert(k, claim.clone());
                        }
                        if let (Some(k), Some(e)) = (ep_key, announce) {
                            p.1.insert(k, e.clone());
                        }
                    }
                }
                Ok(())
            }
            TxnOutcome::Failed { failed, .. } => Err(ApiError::conflict(format!(
                "address {} was allocated on another host of the cluster at the same time; \
                 try again",
                addrs
                    .get(failed)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ))),
        }
    }

    /// Whether every one of `keys` holds `claim` in the cluster store (a read of each).
    fn holds_claims(&self, keys: &[String], claim: &ClusterClaim) -> bool {
        all_hold(keys.iter().map(|k| self.store.get(k).ok().flatten()), claim)
    }

    /// Forgets pending endpoints of `keys`: publications no longer keep them.
    fn unpend_endpoints(&self, keys: &[String]) {
        if let Ok(mut p) = self.pending_eps.lock() {
            for k in keys {
                p.remove(k);
            }
        }
    }

    /// The start of `container` (announced with its claims) is over: its endpoints are
    /// published from now on only if it runs. Returns whether any was pending.
    pub fn settle_endpoints(&self, container: &str) -> bool {
        let Ok(mut p) = self.pending_eps.lock() else {
            return false;
        };
        let before = p.len();
        p.retain(|_, (e, _)| e.container_id != container);
        p.len() != before
    }

    /// Withdraws the endpoints `container` announced with its claims (its create failed
    /// after them): no longer pending, deleted from the store.
    pub fn withdraw_endpoints(&self, container: &str) -> Result<(), StoreError> {
        let keys: Vec<String> = match self.pending_eps.lock() {
            Ok(p) => p
                .iter()
                .filter(|(_, (e, _))| e.container_id == container)
                .map(|(k, _)| k.clone())
                .collect(),
            Err(_) => return Ok(()),
        };
        if keys.is_empty() {
            return Ok(());
        }
        self.unpend_endpoints(&keys);
        self.store
            .apply(keys.iter().cloned().map(Op::Delete).collect())?;
        if let Ok(mut p) = self.published.lock() {
            for k in &keys {
                p.1.remove(k);
            }
        }
        Ok(())
    }

    /// Forgets pending claims of `keys` (released, or never committed): publications no
    /// longer keep them.
    pub fn unpend(&self, keys: &[String]) {
        if let Ok(mut p) = self.pending.lock() {
            for k in keys {
                p.remove(k);
            }
        }
    }

    /// Held by a publication from reading the local store to writing the cluster store.
    pub fn publication_lock(&self) -> RwLockWriteGuard<'_, ()> {
        match self.publishing.write() {
            Ok(g) => g,
            // A publication panicked: the lock guards no data, only the order.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Held by a claim from making its keys pending to recording them as published: no
    /// publication runs meanwhile (other claims may).
    fn claim_lock(&self) -> RwLockReadGuard<'_, ()> {
        match self.publishing.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Frees claims of this host's containers.
    pub fn release(&self, net: &str, addrs: &[IpAddr]) -> ApiResult<()> {
        let keys: Vec<String> = addrs.iter().map(|a| format!("{IPAM}{net}/{a}")).collect();
        self.unpend(&keys);
        self.store
            .apply(keys.iter().cloned().map(Op::Delete).collect())
            .map_err(store_err)?;
        // Gone from the store: the next publication need not delete them again.
        if let Ok(mut p) = self.published.lock() {
            for k in &keys {
                p.2.remove(k);
            }
        }
        Ok(())
    }

    /// Makes this host's published endpoints and address claims exactly `eps` / `claims`
    /// (keys relative to the store; values under this host's lease): one transaction with
    /// what changed since the last publication, nothing when nothing did.
    pub fn publish(
        &self,
        eps: BTreeMap<String, RemoteEndpoint>,
        claims: BTreeMap<String, ClusterClaim>,
    ) -> Result<(), StoreError> {
        let Some(lease) = self.lease() else {
            return Ok(());
        };
        let mut last = self.published.lock().map_err(|_| StoreError::Io {
            op: "publishing endpoints",
            msg: "lock poisoned".into(),
        })?;
        let eps = self.with_pending_endpoints(eps);
        let (claims, ops) = if last.0 == Some(lease) {
            // Same lease as the last publication, which is in the store: only the difference
            // (a container start costs one transaction, no listing of the cluster's keys).
            let claims = self.with_pending(claims);
            if last.1 == eps && last.2 == claims {
                return Ok(());
            }
            let mut ops = changed_ops(&last.1, &eps, lease);
            ops.extend(changed_ops(&last.2, &claims, lease));
            (claims, ops)
        } else {
            self.publication_ops(&eps, claims, lease)?
        };
        if !ops.is_empty() {
            self.store.apply(ops)?;
        }
        *last = (Some(lease), eps, claims);
        Ok(())
    }

    /// Forgets what was last published, so the next publication compares with the store
    /// itself (the sync reconnected: etcd may have lost or kept anything).
    pub fn forget_published(&self) {
        if let Ok(mut p) = self.published.lock() {
            p.0 = None;
        }
    }

    /// What makes the store hold exactly `eps` and `claims` for this host, from what it holds
    /// now (a restart, a lost lease, a reconnection: the store is the truth).
    /// Returns the claims to publish (`claims` and the pending ones) with the ops.
    fn publication_ops(
        &self,
        eps: &BTreeMap<String, RemoteEndpoint>,
        claims: BTreeMap<String, ClusterClaim>,
        lease: LeaseId,
    ) -> Result<(BTreeMap<String, ClusterClaim>, Vec<Op>), StoreError> {
        let mine = |k: &str| k.split('/').nth(2) == Some(self.record.name.as_str());
        let (_, have_eps) = self.store.list_versioned(ENDPOINTS)?;
        let mut ops = Vec::new();
        for (k, _) in have_eps.iter().filter(|(k, _)| mine(k)) {
            if !eps.contains_key(k) {
                ops.push(Op::Delete(k.clone()));
            }
        }
        for (k, e) in eps {
            let current = have_eps.iter().find(|(hk, _)| hk == k);
            let same = current.is_some_and(|(_, v)| {
                serde_json::to_vec(e).ok().as_deref() == Some(v.value.as_slice())
                    && v.lease == Some(lease)
            });
            if !same {
                ops.push(Op::put_json_lease(k.clone(), e, lease));
            }
        }
        let (_, have_claims) = self.store.list_versioned(IPAM)?;
        // Pending claims are read after the listing: a claim the listing holds committed
        // after it was made pending, so it is not mistaken for a freed one below.
        let claims = self.with_pending(claims);
        for (k, v) in &have_claims {
            let theirs: Option<ClusterClaim> = serde_json::from_slice(&v.value).ok();
            // This host's claims that no container holds any more (freed while etcd was away).
            if theirs.is_some_and(|t| t.node == self.record.name) && !claims.contains_key(k) {
                ops.push(Op::Delete(k.clone()));
            }
        }
        for (k, c) in &claims {
            let current = have_claims.iter().find(|(hk, _)| hk == k);
            match current {
                Some((_, v)) => {
                    let theirs: Option<ClusterClaim> = serde_json::from_slice(&v.value).ok();
                    if theirs.as_ref() == Some(c) && v.lease != Some(lease) {
                        // Ours, from before a lost lease: re-attach.
                        ops.push(Op::put_json_lease(k.clone(), c, lease));
                    }
                }
                None => ops.push(Op::put_json_lease(k.clone(), c, lease)),
            }
        }
        Ok((claims, ops))
    }

    /// `claims` (built from the local store) with the pending claims it lacks; pending
    /// entries that `claims` now holds, or that are too old, are dropped.
    fn with_pending(
        &self,
        claims: BTreeMap<String, ClusterClaim>,
    ) -> BTreeMap<String, ClusterClaim> {
        match self.pending.lock() {
            Ok(mut p) => merge_pending(claims, &mut p, Instant::now(), same_holder),
            Err(_) => claims,
        }
    }

    /// `eps` (built from the local store) with the endpoints announced by starts still under
    /// way that it lacks; pending entries older than [`PENDING_CLAIM_MAX`] are dropped.
    fn with_pending_endpoints(
        &self,
        eps: BTreeMap<String, RemoteEndpoint>,
    ) -> BTreeMap<String, RemoteEndpoint> {
        match self.pending_eps.lock() {
            // They leave `pending_eps` when their start ends, not by being published.
            Ok(mut p) => merge_pending(eps, &mut p, Instant::now(), |_, _| false),
            Err(_) => eps,
        }
    }

    /// Publishes again what was last published (after a new lease).
    fn republish(&self) -> Result<(), StoreError> {
        // Ordered with the other publications and the claims, like theirs.
        let _order = self.publication_lock();
        let (eps, claims) = match self.published.lock() {
            Ok(p) => (p.1.clone(), p.2.clone()),
            Err(_) => return Ok(()),
        };
        self.publish(eps, claims)
    }

    /// Replaces the cache of published endpoints with a fresh list of the store's
    /// `endpoints/` keys (entries that do not decode are left out).
    pub fn set_remotes(&self, listed: Vec<(String, berth_store::Versioned)>) {
        let all: BTreeMap<String, RemoteEndpoint> = listed
            .into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::from_slice(&v.value).ok()?)))
            .collect();
        if let Ok(mut r) = self.remotes.lock() {
            r.replace(all);
        }
    }

    /// Applies one watch event to the cache of published endpoints: returns what the cache
    /// held for that key before and what it holds now (the event path programs exactly that
    /// difference).
    pub fn apply_remote(
        &self,
        key: &str,
        value: Option<&[u8]>,
    ) -> (Option<RemoteEndpoint>, Option<RemoteEndpoint>) {
        // Decoded before the lock: the DNS refresh and the other events wait less.
        let value = value.and_then(|v| serde_json::from_slice::<RemoteEndpoint>(v).ok());
        let Ok(mut r) = self.remotes.lock() else {
            return (None, None);
        };
        r.apply(key, value)
    }

    /// This host's name.
    pub fn node(&self) -> &str {
        &self.record.name
    }
}

/// A pending claim is settled once the local store gives its key to the same container.
fn same_holder(stored: &ClusterClaim, pending: &ClusterClaim) -> bool {
    stored.container == pending.container
}

/// How long a claim stays pending at most: longer than any create or connect takes between
/// its claim and its stored record (a failed one releases it sooner).
pub const PENDING_CLAIM_MAX: Duration = Duration::from_secs(60);

/// `built` (what the local store says to publish: claims or endpoints) plus the `pending`
/// entries it does not hold yet. A pending entry that `built` holds and `settled(built's,
/// pending)` accepts (a claim's record is stored) leaves `pending`, as does one older than
/// [`PENDING_CLAIM_MAX`].
pub fn merge_pending<V: Clone>(
    mut built: BTreeMap<String, V>,
    pending: &mut BTreeMap<String, (V, Instant)>,
    now: Instant,
    settled: impl Fn(&V, &V) -> bool,
) -> BTreeMap<String, V> {
    pending.retain(|k, (c, since)| {
        if built.get(k).is_some_and(|b| settled(b, c)) {
            return false;
        }
        if now.saturating_duration_since(*since) > PENDING_CLAIM_MAX {
            return false;
        }
        built.entry(k.clone()).or_insert_with(|| c.clone());
        true
    });
    built
}

/// The ops that turn keys published as `last` (under `lease`) into `want`.
fn changed_ops<V: serde::Serialize + PartialEq>(
    last: &BTreeMap<String, V>,
    want: &BTreeMap<String, V>,
    lease: LeaseId,
) -> Vec<Op> {
    let gone = last
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(|k| Op::Delete(k.clone()));
    let new = want
        .iter()
        .filter(|(k, v)| last.get(*k) != Some(*v))
        .map(|(k, v)| Op::put_json_lease(k.clone(), v, lease));
    gone.chain(new).collect()
}

/// The key of a published endpoint.
pub fn endpoint_key(net: &str, node: &str, container: &str) -> String {
    format!("{ENDPOINTS}{net}/{node}/{container}")
}

/// Whether every value read (a key's, `None` when absent or unreadable) is `claim`, and there
/// is at least one: a failed claim transaction whose keys all hold this very claim committed
/// in an earlier attempt. Pure.
fn all_hold(values: impl Iterator<Item = Option<Vec<u8>>>, claim: &ClusterClaim) -> bool {
    let mut any = false;
    for v in values {
        let ours = v
            .and_then(|v| serde_json::from_slice::<ClusterClaim>(&v).ok())
            .is_some_and(|c| c == *claim);
        if !ours {
            return false;
        }
        any = true;
    }
    any
}

/// The key of an address claim.
pub fn claim_key(net: &str, addr: IpAddr) -> String {
    format!("{IPAM}{net}/{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(container: &str) -> ClusterClaim {
        ClusterClaim {
            node: "host-a".into(),
            container: container.into(),
            name: container.into(),
        }
    }

    /// A claim transaction retried by the etcd client after a member died finds its own
    /// keys: ours when every address holds this very claim; another container's (or an
    /// absent key, or one not readable) is a real conflict.
    #[test]
    fn a_claim_retried_after_its_commit_is_told_from_a_conflict() {
        let v = |c: &ClusterClaim| Some(serde_json::to_vec(c).expect("a claim serializes"));
        let mine = claim("db");
        assert!(all_hold([v(&mine), v(&mine)].into_iter(), &mine));
        assert!(!all_hold([v(&mine), v(&claim("web"))].into_iter(), &mine));
        assert!(!all_hold([v(&mine), None].into_iter(), &mine));
        assert!(!all_hold([Some(b"not json".to_vec())].into_iter(), &mine));
        let other_host = ClusterClaim {
            node: "host-b".into(),
            ..mine.clone()
        };
        assert!(!all_hold([v(&other_host)].into_iter(), &mine));
        assert!(!all_hold(std::iter::empty(), &mine));
    }

    /// The race CI found: a publication built before `db`'s record was stored must not
    /// drop the claim `db` took meanwhile (another host would then take its address).
    #[test]
    fn a_pending_claim_survives_a_publication_built_before_it() {
        let now = Instant::now();
        let mut pending = BTreeMap::from([("ipam/n/10.50.0.2".to_string(), (claim("db"), now))]);
        let built = BTreeMap::from([("ipam/n/10.50.0.3".to_string(), claim("other"))]);
        let out = merge_pending(built, &mut pending, now, same_holder);
        assert_eq!(out.get("ipam/n/10.50.0.2"), Some(&claim("db")));
        assert_eq!(out.get("ipam/n/10.50.0.3"), Some(&claim("other")));
        assert_eq!(
            pending.len(),
            1,
            "still pending until a publication holds it"
        );
    }

    #[test]
    fn a_pending_claim_settles_once_a_publication_holds_it() {
        let now = Instant::now();
        let mut pending = BTreeMap::from([("ipam/n/10.50.0.2".to_string(), (claim("db"), now))]);
        let built = BTreeMap::from([("ipam/n/10.50.0.2".to_string(), claim("db"))]);
        let out = merge_pending(built, &mut pending, now, same_holder);
        assert_eq!(out.len(), 1);
        assert!(pending.is_empty());
        // A later publication without it (db removed) then drops the claim.
        let out = merge_pending(BTreeMap::new(), &mut pending, now, same_holder);
        assert!(out.is_empty());
    }

    #[test]
    fn a_stale_pending_claim_is_dropped() {
        let then = Instant::now();
        let mut pending = BTreeMap::from([("ipam/n/10.50.0.2".to_string(), (claim("db"), then))]);
        let later = then + PENDING_CLAIM_MAX + Duration::from_secs(1);
        let out = merge_pending(BTreeMap::new(), &mut pending, later, same_holder);
        assert!(out.is_empty());
        assert!(pending.is_empty());
    }

    /// A key the local store gives to another container keeps the store's holder.
    #[test]
    fn the_local_store_wins_over_a_pending_claim() {
        let now = Instant::now();
        let mut pending = BTreeMap::from([("ipam/n/10.50.0.2".to_string(), (claim("db"), now))]);
        let built = BTreeMap::from([("ipam/n/10.50.0.2".to_string(), claim("web"))]);
        let out = merge_pending(built, &mut pending, now, same_holder);
        assert_eq!(out.get("ipam/n/10.50.0.2"), Some(&claim("web")));
    }
}
