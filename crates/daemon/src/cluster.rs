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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use berth_api::types::{ClusterInfo, NodeSummary};
use berth_plan::cluster::{self as pc, Advertise, ClusterStore, NodeRecord};
use berth_plan::overlay::RemoteEndpoint;
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
}

/// This host's membership.
pub struct Cluster {
    /// The cluster store.
    pub store: Arc<EtcdStore>,
    /// `--cluster-store` as given.
    pub url: String,
    /// What this host publishes.
    pub record: NodeRecord,
    lease: Mutex<Option<LeaseId>>,
    health: Mutex<Result<(), String>>,
    /// Every endpoint published on the cluster's overlay networks (all hosts', by key), as
    /// the etcd watch last delivered them.
    remotes: Mutex<BTreeMap<String, RemoteEndpoint>>,
}

impl Cluster {
    /// Connects to etcd and registers this host. An unreachable etcd is not fatal: berthd
    /// starts (its local containers need it), reports the cluster unhealthy, and the
    /// keep-alive thread registers as soon as etcd answers. A node name held by another live
    /// host, or unreadable TLS files, are fatal: they need the operator.
    pub fn join(cfg: ClusterConfig) -> anyhow::Result<Arc<Cluster>> {
        pc::validate_node_name(&cfg.node_name).map_err(|e| anyhow::anyhow!("{e}"))?;
        let addr = resolve_advertise(&cfg.advertise)?;
        let mut opts = EtcdOptions::new(cfg.store.endpoints.clone());
        if cfg.store.tls.any() {
            opts.tls = Some(EtcdTls {
                ca_file: cfg.store.tls.ca_file.clone(),
                cert_file: cfg.store.tls.cert_file.clone(),
                key_file: cfg.store.tls.key_file.clone(),
            });
        }
        let store = EtcdStore::connect_lazy(opts)
            .with_context(|| format!("setting up the cluster store {}", cfg.url))?;
        let record = NodeRecord {
            name: cfg.node_name.clone(),
            addr,
            version: env!("CARGO_PKG_VERSION").into(),
            joined_at: String::new(),
            lease_ttl_secs: cfg.lease_ttl.as_secs().max(1),
            instance: crate::daemon::new_id(),
        };
        let c = Arc::new(Cluster {
            store: Arc::new(store),
            url: cfg.url,
            record,
            lease: Mutex::new(None),
            health: Mutex::new(Err("not registered yet".into())),
            remotes: Mutex::new(BTreeMap::new()),
        });
        match c.register() {
            Ok(()) => {}
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
        let mut rec = self.record.clone();
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

    fn set_health(&self, h: Result<(), String>) {
        if let Ok(mut g) = self.health.lock() {
            *g = h;
        }
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
                                c.register()
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
                    is_self: n.name == self.record.name && n.instance == self.record.instance,
                    name: n.name,
                    addr: n.addr.to_string(),
                    version: n.version,
                    joined_at: n.joined_at,
                    age_secs: age,
                    lease_ttl_secs: n.lease_ttl_secs,
                    // No cluster-wide network has endpoints yet (overlay data plane: next).
                    endpoints: 0,
                }
            })
            .collect())
    }

    /// The endpoints published on the cluster's overlay networks (every host's).
    pub fn remote_endpoints(&self) -> Vec<RemoteEndpoint> {
        self.remotes
            .lock()
            .map(|r| r.values().cloned().collect())
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

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}
