//! The cluster backend: etcd v3, the distributed store a cluster of berth hosts shares.
//!
//! [`EtcdStore`] maps the [`Store`] contract one to one onto etcd's own model, which the
//! contract was shaped after: a transaction is one etcd `Txn` (compares, then puts and
//! deletes), revisions are etcd's revisions, a watch is an etcd watch from `from + 1`, and a
//! lease is an etcd lease (etcd itself deletes its keys on expiry and tells watchers).
//!
//! Every key lives under a prefix (`/berth/` by default), so berth shares an etcd cluster with
//! others without seeing their keys, and tests get private key spaces in one etcd.
//!
//! The [`Store`] trait is synchronous (the embedded backend answers in microseconds); the etcd
//! client is async. The store runs its own small tokio runtime on which every request is
//! spawned, and the caller waits on a channel for the answer, at most the configured request
//! timeout. A caller on a multi-threaded tokio runtime (berthd) waits with
//! `block_in_place`, so its runtime keeps serving other tasks meanwhile.

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, PutOptions, TlsOptions,
    Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use crate::{
    Compare, EventKind, LeaseId, Op, Result, Revision, Store, StoreError, TxnOutcome, Versioned,
    WatchEvent, Watcher,
};

/// How an [`EtcdStore`] reaches etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs: `http://10.0.0.10:2379` (or `https://…` with TLS).
    pub endpoints: Vec<String>,
    /// Every key is stored under this prefix (`/berth/`).
    pub prefix: String,
    /// PEM files for TLS: the CA that signed etcd's certificate, and the client certificate
    /// and key when etcd checks clients (`--client-cert-auth`).
    pub tls: Option<EtcdTls>,
    /// How long one request may take before it fails as "etcd unavailable".
    pub request_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

/// TLS material for etcd, as file paths (Docker's `--cluster-store-opt kv.cacertfile=…`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA certificate (PEM).
    pub ca_file: Option<String>,
    /// Client certificate (PEM).
    pub cert_file: Option<String>,
    /// Client key (PEM).
    pub key_file: Option<String>,
}

impl EtcdOptions {
    /// Options for `endpoints` with the default prefix and timeouts.
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: "/berth/".into(),
            tls: None,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// The etcd v3 backend of [`Store`].
pub struct EtcdStore {
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    opts: EtcdOptions,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // A runtime dropped inside another runtime's task panics ("cannot drop a runtime in a
        // context where blocking is not allowed"); shutting down in the background never
        // blocks, and the watch tasks on it end with it.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn io(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        op,
        msg: e.to_string(),
    }
}

impl EtcdStore {
    /// Connects to etcd and checks it answers (one read), so a wrong address fails here with
    /// a clear message rather than at the first write.
    pub fn connect(opts: EtcdOptions) -> Result<EtcdStore> {
        let store = EtcdStore::connect_lazy(opts)?;
        store.revision()?;
        Ok(store)
    }

    /// Sets up the client without requiring etcd to answer now (a host that starts while etcd
    /// is down): requests fail with [`StoreError::Unavailable`] until it is reachable.
    pub fn connect_lazy(opts: EtcdOptions) -> Result<EtcdStore> {
        if opts.endpoints.is_empty() {
            return Err(io("connecting to etcd", "no endpoints given"));
        }
        if !opts.prefix.starts_with('/') || !opts.prefix.ends_with('/') {
            return Err(io(
                "connecting to etcd",
                format!(
                    "the key prefix {:?} must start and end with '/'",
                    opts.prefix
                ),
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-etcd")
            .enable_all()
            .build()
            .map_err(|e| io("starting the etcd client's runtime", e))?;
        let mut copts = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            // Every request asks for a leader (gRPC metadata `hasleader`): a member cut off
            // from its quorum then refuses reads at once instead of timing out, and cancels
            // our watches after three election timeouts without a leader, so the watch's
            // consumer lists and watches again (through another member when it knows one)
            // instead of waiting, silent, on a member that sees no more writes.
            .with_require_leader(true);
        if let Some(tls) = &opts.tls {
            copts = copts.with_tls(tls_options(tls)?);
        }
        let endpoints = opts.endpoints.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(Client::connect(endpoints, Some(copts)).await);
        });
        let client = wait(rx, opts.connect_timeout + opts.request_timeout, || {
            unavailable(&opts, "connecting", "no answer")
        })?
        .map_err(|e| unavailable(&opts, "connecting", e))?;
        Ok(EtcdStore {
            rt: Some(rt),
            client,
            opts,
        })
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &EtcdOptions {
        &self.opts
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.opts.prefix, key)
    }

    fn strip(&self, key: &[u8]) -> String {
        let s = String::from_utf8_lossy(key);
        s.strip_prefix(self.opts.prefix.as_str())
            .unwrap_or(&s)
            .to_string()
    }

    /// Runs one request on the store's runtime and waits for it, at most the request timeout,
    /// sending it again while that is safe:
    /// * [`Retry::Write`]: only when it could not even connect (one member of several is down
    ///   and the client's balancer picked it): it never reached etcd, so it cannot apply twice;
    /// * [`Retry::Read`]: also after a lost leader or a reset connection (a read or a
    ///   keep-alive does no harm twice).
    fn call<T, F, Fut>(&self, retry: Retry, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>
            + Send
            + 'static,
    {
        let again: fn(&etcd_client::Error) -> bool = match retry {
            Retry::Write => never_sent,
            Retry::Read => |e| never_sent(e) || transient_etcd(e),
        };
        let client = self.client.clone();
        let attempts = 4 * self.opts.endpoints.len().max(1) + 1;
        self.call_once(what, move |_| async move {
            let mut tries = 0;
            loop {
                tries += 1;
                match f(client.clone()).await {
                    Err(e) if tries < attempts && again(&e) => {
                        tokio::time::sleep(Duration::from_millis(20 * tries as u64)).await;
                    }
                    r => return r,
                }
            }
        })
    }

    /// [`EtcdStore::call`] without retries (a request that owns a stream).
    fn call_once<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>
            + Send
            + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| io(what, "the etcd client is shut down"))?;
        let fut = f(self.client.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        wait(rx, self.opts.request_timeout, || {
            unavailable(&self.opts, what, "no answer")
        })?
        .map_err(|e| map_err(&self.opts, what, e))
    }

    fn range_at(&self, key: &str, revision: Option<Revision>) -> Result<Option<Versioned>> {
        let full = self.full(key);
        let mut o = GetOptions::new();
        if let Some(r) = revision {
            o = o.with_revision(r as i64);
        }
        let mut resp = self.call(Retry::Read, "reading a key", move |mut c| {
            let (full, o) = (full.clone(), o.clone());
            async move { c.get(full, Some(o)).await }
        })?;
        Ok(resp.take_kvs().into_iter().next().map(|kv| versioned(&kv)))
    }

    /// The index of the first compare that does not hold at `revision` (what etcd does not
    /// report: its txn only says "failed").
    fn first_failed(&self, compares: &[Compare], revision: Revision) -> Result<usize> {
        for (i, c) in compares.iter().enumerate() {
            let current = match self.range_at(c.key(), Some(revision)) {
                Ok(v) => v,
                // Compacted meanwhile: the present is the best evidence left.
                Err(StoreError::Compacted { .. }) => self.range_at(c.key(), None)?,
                Err(e) => return Err(e),
            };
            if !c.holds(current.as_ref()) {
                return Ok(i);
            }
        }
        // All hold now: another writer restored them between the txn and this read.
        Ok(0)
    }

    /// Whether every op of a transaction is already in effect (its puts hold exactly its
    /// values with its leases, its deletes are absent): an earlier attempt committed.
    fn already_applied(&self, ops: &[Op]) -> Result<bool> {
        for op in ops {
            let now = self.range_at(op.key(), None)?;
            let ok = match (op, &now) {
                (Op::Put(_, v), Some(n)) => n.value == *v && n.lease.is_none(),
                (Op::PutLease(_, v, l), Some(n)) => n.value == *v && n.lease == Some(*l),
                (Op::Delete(_), None) => true,
                _ => false,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(!ops.is_empty())
    }

    /// Names the lease a refused transaction referred to.
    fn missing_lease(&self, ops: &[Op]) -> Result<Option<LeaseId>> {
        for op in ops {
            if let Op::PutLease(_, _, lease) = op {
                let id = lease.0 as i64;
                let resp =
                    self.call(Retry::Read, "looking up a lease", move |mut c| async move {
                        c.lease_time_to_live(id, None).await
                    })?;
                if resp.ttl() < 0 {
                    return Ok(Some(*lease));
                }
            }
        }
        Ok(None)
    }
}

/// Waits for a request's answer; a timeout is "etcd unavailable". A caller on a
/// multi-threaded tokio runtime lends its worker to the runtime's other tasks meanwhile.
fn wait<T>(
    rx: std::sync::mpsc::Receiver<T>,
    timeout: Duration,
    on_timeout: impl FnOnce() -> StoreError,
) -> Result<T> {
    let recv = || rx.recv_timeout(timeout);
    let r = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(recv)
        }
        _ => recv(),
    };
    r.map_err(|_| on_timeout())
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| io("reading etcd TLS material", format!("{path}: {e}")))
    };
    let mut t = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        t = t.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            t = t.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(io(
                "configuring TLS for etcd",
                "a client certificate needs both the certificate and the key file",
            ))
        }
    }
    Ok(t)
}

fn unavailable(opts: &EtcdOptions, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: format!("etcd at {}", opts.endpoints.join(",")),
        msg: format!("{what}: {e}"),
    }
}

/// When [`EtcdStore::call`] may send a request again.
#[derive(Debug, Clone, Copy)]
enum Retry {
    /// A change: only if it never left this host.
    Write,
    /// A read or a keep-alive: also after a passing condition of etcd's cluster.
    Read,
}

/// etcd's errors in the contract's terms.
fn map_err(opts: &EtcdOptions, what: &'static str, e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    match &e {
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            if m.contains("required revision has been compacted") {
                // The caller fills in which revision it asked for.
                StoreError::Compacted {
                    requested: 0,
                    oldest: 0,
                }
            } else if m.contains("duplicate key") {
                StoreError::DuplicateKey { key: String::new() }
            } else if m.contains("requested lease not found") {
                StoreError::LeaseNotFound { lease: LeaseId(0) }
            } else if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ) {
                unavailable(opts, what, m)
            } else {
                io(what, text)
            }
        }
        // The client's own keep-alive check (a response with TTL 0 for an unknown lease).
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
            StoreError::LeaseNotFound { lease: LeaseId(0) }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            unavailable(opts, what, text)
        }
        _ => io(what, text),
    }
}

fn versioned(kv: &etcd_client::KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        create_revision: kv.create_revision() as u64,
        mod_revision: kv.mod_revision() as u64,
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease() as u64)),
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision().max(0) as u64)
}

impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!(
            "etcd:{} (keys under {})",
            self.opts.endpoints.join(","),
            self.opts.prefix
        )
    }

    fn revision(&self) -> Result<Revision> {
        let key = self.full("");
        let resp = self.call(Retry::Read, "reading the revision", move |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })?;
        Ok(header_rev(resp.header()))
    }

    fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        self.range_at(key, None)
    }

    fn list_versioned(&self, prefix: &str) -> Result<(Revision, Vec<(String, Versioned)>)> {
        let full = self.full(prefix);
        let mut resp = self.call(Retry::Read, "listing keys", move |mut c| {
            let full = full.clone();
            async move { c.get(full, Some(GetOptions::new().with_prefix())).await }
        })?;
        let rev = header_rev(resp.header());
        let items = resp
            .take_kvs()
            .iter()
            .map(|kv| (self.strip(kv.key()), versioned(kv)))
            .collect();
        Ok((rev, items))
    }

    fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        let mut seen = std::collections::BTreeSet::new();
        for op in &ops {
            if !seen.insert(op.key()) {
                return Err(StoreError::DuplicateKey {
                    key: op.key().to_string(),
                });
            }
        }
        let when: Vec<EtcdCompare> = compares
            .iter()
            .map(|c| {
                let k = self.full(c.key());
                match c {
                    // etcd's "absent": a missing key has version 0.
                    Compare::Absent(_) => EtcdCompare::version(k, CompareOp::Equal, 0),
                    Compare::Present(_) => EtcdCompare::version(k, CompareOp::Greater, 0),
                    Compare::ModRevision(_, r) => {
                        EtcdCompare::mod_revision(k, CompareOp::Equal, *r as i64)
                    }
                    // etcd fails a value compare on a missing key, as `holds` does.
                    Compare::Value(_, v) => EtcdCompare::value(k, CompareOp::Equal, v.clone()),
                }
            })
            .collect();
        let then: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                // A put without a lease detaches the key from any lease, as the contract says.
                Op::Put(k, v) => TxnOp::put(self.full(k), v.clone(), None),
                Op::PutLease(k, v, l) => TxnOp::put(
                    self.full(k),
                    v.clone(),
                    Some(PutOptions::new().with_lease(l.0 as i64)),
                ),
                Op::Delete(k) => TxnOp::delete(self.full(k), None),
            })
            .collect();
        let txn = Txn::new().when(when).and_then(then);
        // A member lost mid-request (leader changed, connection reset) leaves the outcome
        // unknown: send it again, and if the compares then fail, check whether the first
        // attempt did commit (every written key holds what this transaction wrote).
        let mut ambiguous = false;
        let started = std::time::Instant::now();
        let resp = loop {
            let txn = txn.clone();
            match self.call(Retry::Write, "committing a transaction", move |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            }) {
                Ok(r) => break r,
                Err(StoreError::LeaseNotFound { .. }) => {
                    let lease = self.missing_lease(&ops)?.unwrap_or(LeaseId(0));
                    return Err(StoreError::LeaseNotFound { lease });
                }
                Err(e) if transient(&e) && started.elapsed() < self.opts.request_timeout => {
                    ambiguous = true;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        let rev = header_rev(resp.header());
        if resp.succeeded() || (ambiguous && self.already_applied(&ops)?) {
            Ok(TxnOutcome::Committed(rev))
        } else {
            Ok(TxnOutcome::Failed {
                revision: rev,
                failed: self.first_failed(&compares, rev)?,
            })
        }
    }

    fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Watcher> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| io("watching", "the etcd client is shut down"))?;
        let full = self.full(prefix);
        let mut wo = WatchOptions::new().with_prefix();
        if let Some(from) = from {
            wo = wo.with_start_revision(from as i64 + 1);
        }
        let (mut handle, mut stream) = self.call(Retry::Read, "starting a watch", {
            let full = full.clone();
            move |mut c| {
                let (full, wo) = (full.clone(), wo.clone());
                async move { c.watch(full, Some(wo)).await }
            }
        })?;
        // A watch from compacted history is created, then cancelled with the compact revision:
        // wait for that verdict only when history before `from` may be gone (a range at
        // `from + 1` fails), so a healthy watch costs one round trip.
        if let Some(from) = from {
            let probe = self.call(Retry::Read, "checking watch history", {
                let full = full.clone();
                move |mut c| {
                    let full = full.clone();
                    async move {
                        c.get(
                            full,
                            Some(
                                GetOptions::new()
                                    .with_count_only()
                                    .with_revision(from as i64 + 1),
                            ),
                        )
                        .await
                    }
                }
            });
            if let Err(StoreError::Compacted { .. }) = probe {
                let first = self.call_once("reading the watch's verdict", move |_| async move {
                    stream.message().await
                })?;
                let oldest = first.map_or(0, |r| r.compact_revision().max(0) as u64);
                return Err(StoreError::Compacted {
                    requested: from,
                    oldest,
                });
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let prefix_len = self.opts.prefix.len();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    msg = stream.message() => {
                        let resp = match msg {
                            Ok(Some(r)) => r,
                            // The stream ended or broke (etcd gone): the watch ends; the
                            // consumer lists again and watches from that list's revision.
                            _ => return,
                        };
                        if resp.canceled() {
                            return;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let key = String::from_utf8_lossy(kv.key());
                            let key = key.get(prefix_len..).unwrap_or_default().to_string();
                            let put = matches!(ev.event_type(), etcd_client::EventType::Put);
                            let e = WatchEvent {
                                revision: kv.mod_revision().max(0) as u64,
                                key,
                                kind: if put { EventKind::Put } else { EventKind::Delete },
                                value: put.then(|| kv.value().to_vec()),
                            };
                            if tx.send(e).is_err() {
                                let _ = handle.cancel().await;
                                return;
                            }
                        }
                    }
                    _ = tx.closed() => {
                        let _ = handle.cancel().await;
                        return;
                    }
                }
            }
        });
        Ok(Watcher::new(rx))
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let rev = revision as i64;
        match self.call(
            Retry::Write,
            "compacting history",
            move |mut c| async move { c.compact(rev, None).await },
        ) {
            // Already compacted at or past it: nothing to do.
            Ok(_) | Err(StoreError::Compacted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl < Duration::from_secs(1) {
            return Err(StoreError::LeaseTtl { ttl });
        }
        // etcd counts whole seconds; round up so the lease never lives shorter than asked.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let resp = self.call(Retry::Write, "granting a lease", move |mut c| async move {
            c.lease_grant(secs as i64, None).await
        })?;
        if !resp.error().is_empty() {
            return Err(io("granting a lease", resp.error()));
        }
        Ok(LeaseId(resp.id() as u64))
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let id = lease.0 as i64;
        let resp = self.call(
            Retry::Read,
            "keeping a lease alive",
            move |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                stream.message().await
            },
        );
        // etcd answers a keep-alive of an expired or revoked lease with TTL 0, not an error
        // (the client turns that into "lease not found").
        match resp {
            Ok(Some(r)) if r.ttl() > 0 => Ok(()),
            Ok(_) | Err(StoreError::LeaseNotFound { .. }) => {
                Err(StoreError::LeaseNotFound { lease })
            }
            Err(e) => Err(e),
        }
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let id = lease.0 as i64;
        match self.call(Retry::Write, "revoking a lease", move |mut c| async move {
            c.lease_revoke(id).await
        }) {
            Ok(_) => Ok(()),
            Err(StoreError::LeaseNotFound { .. }) => Err(StoreError::LeaseNotFound { lease }),
            Err(e) => Err(e),
        }
    }

    fn expire_leases(&self) -> Result<usize> {
        // etcd's lessor expires leases itself and publishes the deletes.
        Ok(0)
    }
}

/// Whether etcd answered with a passing condition of its cluster (a leader election, a member
/// that went away mid-request).
fn transient_etcd(e: &etcd_client::Error) -> bool {
    let t = e.to_string();
    t.contains("leader changed")
        || t.contains("no leader")
        || t.contains("transport error")
        || t.contains("onnection reset")
}

/// The same judgement on an error already in the contract's terms.
fn transient(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable { msg, .. } | StoreError::Io { msg, .. } => {
            msg.contains("leader changed")
                || msg.contains("no leader")
                || msg.contains("transport error")
                || msg.contains("onnection reset")
                || msg.contains("connect")
        }
        _ => false,
    }
}

/// Whether a request failed before it left this host (no connection to the member the
/// balancer picked): safe to send again.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable
                && (s.message().contains("connect") || s.message().contains("Connection refused"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_refuses_bad_options_before_dialling() {
        let e = EtcdStore::connect(EtcdOptions::new(vec![])).expect_err("no endpoints");
        assert!(e.to_string().contains("no endpoints"), "{e}");
        let mut o = EtcdOptions::new(vec!["http://127.0.0.1:1".into()]);
        o.prefix = "berth".into();
        let e = EtcdStore::connect(o).expect_err("bad prefix");
        assert!(e.to_string().contains("must start and end with '/'"), "{e}");
    }

    #[test]
    fn an_unreachable_etcd_is_unavailable_not_a_hang() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let mut o = EtcdOptions::new(vec!["http://127.0.0.1:1".into()]);
        o.connect_timeout = Duration::from_millis(500);
        o.request_timeout = Duration::from_millis(500);
        let t = std::time::Instant::now();
        let e = EtcdStore::connect(o).expect_err("nothing listens");
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
