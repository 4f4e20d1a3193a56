//! `POST /system/trace`: the journey of a real packet through this host, from the kernel's own
//! trace (`berth_plan::trace` decides and explains; `berth_kernel::trace` installs, reads and
//! removes).
//!
//! One trace: open the trace socket; bind the probe's socket in its vantage point to learn its
//! source port; install `table inet berth-trace-ID` marking exactly that flow; send the probe (or,
//! with `watch`, wait for real traffic); read events until the probe ended (and a short drain),
//! `count` packets were seen, or the time is up; delete the table; read the rule set with handles
//! and the conntrack entry; build the journey. The table is deleted on every path: a guard
//! deletes it if the trace ends early (the client went away: every keep-alive line written to
//! the stream tells), and berthd deletes any `berth-trace-*` table at start (a crash).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use berth_api::types::TraceRequest;
use berth_kernel::probe::{self, Outcome};
use berth_kernel::trace::{self as kt, TraceSocket};
use berth_plan::model::NetworkMode;
use berth_plan::model::NetworkSpec;
use berth_plan::model::Status;
use berth_plan::ports::Proto;
use berth_plan::trace::{
    self as plan, EndpointInfo, Event, Filter, Journey, NetInfo, NsTrace, OverlayInfo, RemoteInfo,
    World,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};

/// Default length of a probe's trace.
const PROBE_TIMEOUT: f64 = 5.0;
/// Default length of a `watch`.
const WATCH_TIMEOUT: f64 = 30.0;
/// Longest trace.
const MAX_TIMEOUT: f64 = 600.0;
/// How long a TCP probe waits for the handshake (a dropped SYN is retransmitted after 1 s).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// After the probe ended: the last events (the reply's) are read for this long.
const DRAIN: Duration = Duration::from_millis(300);
/// Keep-alive period: a line to the client, which fails once it went away.
const KEEPALIVE: Duration = Duration::from_millis(500);

/// Where a probe is sent from.
#[derive(Debug, Clone)]
enum From {
    /// berthd's own namespace.
    Host,
    /// Another namespace (a container's, or one given by path).
    Netns(PathBuf),
    /// No probe (`watch`).
    Nowhere,
}

/// A validated trace request.
#[derive(Debug, Clone)]
pub struct Spec {
    filter: Filter,
    from: From,
    vantage: String,
    watch: bool,
    count: u32,
    timeout: Duration,
}

/// `HOST:PORT` / `[V6]:PORT`: (host, port).
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    Some((h, p.parse().ok()?))
}

/// Removes the trace tables if the trace ends before it did (the client went away, an error,
/// a panic): berthd's, and those in the overlay namespaces it looked into.
struct TableGuard(Option<String>, Vec<PathBuf>);

impl Drop for TableGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            if let Err(e) = kt::remove(&t) {
                tracing::warn!("removing trace table {t}: {e}");
            }
            for ns in self.1.drain(..) {
                if let Err(e) = kt::remove_in(&ns, &t) {
                    tracing::warn!("removing trace table {t} in {}: {e}", ns.display());
                }
            }
        }
    }
}

/// An overlay network whose namespace a trace looks into, and the namespace.
struct Look {
    net: NetworkSpec,
    path: PathBuf,
}

/// The readers of the overlay namespaces' trace sockets: ended (and their sockets closed)
/// when the trace ends, on every path.
struct Readers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for r in &self.0 {
            r.abort();
        }
    }
}

/// Reads one overlay namespace's trace events into `tx` (tagged with its index) until the
/// trace drops the receiver or aborts the task.
fn spawn_ns_reader(
    i: usize,
    mut sock: TraceSocket,
    tx: mpsc::UnboundedSender<(usize, Vec<Event>, bool)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match sock.next().await {
                Ok((evs, lost)) => {
                    if tx.send((i, evs, lost)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!("reading an overlay namespace's trace events: {e}");
                    return;
                }
            }
        }
    })
}

/// How many packets of `events` this trace's table marked (its marking rules matched).
fn marked(events: &[Event], table: &str) -> usize {
    plan::packets_of(events, table)
        .iter()
        .filter(|(_, evs)| {
            evs.iter()
                .any(|e| e.table == table && e.handle.is_some() && e.chain.starts_with("mark_"))
        })
        .count()
}

impl Daemon {
    /// The first address of a container (of `v4` family if possible).
    fn container_addr(&self, name: &str, v4: Option<bool>) -> ApiResult<(IpAddr, String)> {
        let c = self.find_container(name)?;
        let addrs: Vec<IpAddr> = c
            .endpoints
            .iter()
            .flat_map(|e| e.addrs.iter().map(|a| a.addr()))
            .collect();
        addrs
            .iter()
            .find(|a| v4.is_none_or(|v| a.is_ipv4() == v))
            .or(addrs.first())
            .map(|a| (*a, c.name.clone()))
            .ok_or_else(|| {
                ApiError::bad_request(format!("container {} has no address of its own", c.name))
            })
    }

    /// Checks a request and resolves its names (400 for bad input, 404 for unknown names).
    pub fn trace_spec(&self, r: &TraceRequest) -> ApiResult<Spec> {
        let proto = match r.proto.as_str() {
            "" | "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            p => return Err(ApiError::bad_request(format!("protocol {p:?}: tcp or udp"))),
        };
        let (host, dport) = split_host_port(&r.to).ok_or_else(|| {
            ApiError::bad_request(format!(
                "destination {:?}: expected HOST:PORT (an address or a container name)",
                r.to
            ))
        })?;
        if dport == 0 {
            return Err(ApiError::bad_request("destination port 0"));
        }
        let dst = match host.parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => self.container_addr(host, None)?.0,
        };
        let mut src = None;
        let (from, vantage) = if r.from.is_empty() {
            if r.watch {
                (From::Nowhere, "any source".to_string())
            } else {
                (From::Host, "the host".to_string())
            }
        } else if let Ok(a) = r.from.parse::<IpAddr>() {
            src = Some(a);
            let f = if r.watch { From::Nowhere } else { From::Host };
            (f, format!("address {a}"))
        } else if r.from.starts_with('/')
            || std::path::Path::new("/run/netns").join(&r.from).exists()
        {
            let p = if r.from.starts_with('/') {
                PathBuf::from(&r.from)
            } else {
                PathBuf::from("/run/netns").join(&r.from)
            };
            if !p.exists() {
                return Err(ApiError::not_found(format!(
                    "no network namespace at {}",
                    p.display()
                )));
            }
            let f = if r.watch {
                From::Nowhere
            } else {
                From::Netns(p.clone())
            };
            (f, format!("netns {}", p.display()))
        } else {
            let c = self.find_container(&r.from).map_err(|_| {
                ApiError::not_found(format!(
                    "--from {}: no container, network namespace (/run/netns) or address of that name",
                    r.from
                ))
            })?;
            if c.mode != NetworkMode::Host {
                src = self
                    .container_addr(&c.id, Some(dst.is_ipv4()))
                    .ok()
                    .map(|a| a.0)
                    .filter(|a| a.is_ipv4() == dst.is_ipv4());
            }
            let st = self.state(&c.id)?;
            let f = if r.watch {
                From::Nowhere
            } else if c.mode == NetworkMode::Host {
                From::Host
            } else if st.status == Status::Running && st.pid > 0 {
                From::Netns(PathBuf::from(format!("/proc/{}/ns/net", st.pid)))
            } else {
                return Err(ApiError::conflict(format!(
                    "container {} is not running: start it, or trace its traffic with --watch",
                    c.name
                )));
            };
            (f, format!("container {}", c.name))
        };
        let default = if r.watch {
            WATCH_TIMEOUT
        } else {
            PROBE_TIMEOUT
        };
        let secs = if r.timeout > 0.0 { r.timeout } else { default };
        if !secs.is_finite() || secs > MAX_TIMEOUT {
            return Err(ApiError::bad_request(format!(
                "timeout {secs}: at most {MAX_TIMEOUT} seconds"
            )));
        }
        Ok(Spec {
            filter: Filter {
                proto,
                dst,
                dport,
                src,
                sport: None,
            },
            from,
            vantage,
            watch: r.watch,
            count: r.count.clamp(1, plan::MAX_PACKETS),
            timeout: Duration::from_secs_f64(secs),
        })
    }

    /// Berth's networks and endpoints, and the interface names, for the journey.
    async fn trace_world(&self, vantage: &str, looks: &[Look]) -> ApiResult<World> {
        let nets = self.networks()?;
        let links = self
            .kernel
            .list_links()
            .await
            .map(|l| l.into_iter().map(|l| (l.index, l.name)).collect())
            .unwrap_or_default();
        let mut endpoints = Vec::new();
        for c in self.containers()? {
            for e in &c.endpoints {
                let network = nets
                    .iter()
                    .find(|n| n.id == e.network_id)
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                endpoints.push(EndpointInfo {
                    container: c.name.clone(),
                    network,
                    host_ifname: e.host_ifname.clone(),
                    ifname: e.ifname.clone(),
                    addrs: e.addrs.iter().map(|a| a.addr()).collect(),
                });
            }
        }
        Ok(World {
            links,
            networks: nets
                .iter()
                .filter(|n| n.driver.has_bridge())
                .map(|n| NetInfo {
                    name: n.name.clone(),
                    bridge: n.bridge.clone(),
                    internal: n.internal,
                })
                .collect(),
            endpoints,
            vantage: vantage.to_string(),
            overlays: self.overlay_infos(looks).await,
        })
    }

    /// The overlay networks whose namespaces on this host a trace of `f` looks into: those
    /// whose subnets hold the flow's source or destination and, for a destination in no
    /// network of berth's (a host address: a published port), every overlay network with a
    /// container on this host.
    fn trace_looks(&self, f: &Filter) -> ApiResult<Vec<Look>> {
        let nets = self.networks()?;
        let in_net = |n: &NetworkSpec, a: IpAddr| n.subnets.iter().any(|s| s.subnet.contains(&a));
        let dst_in_any = nets.iter().any(|n| in_net(n, f.dst));
        let local: std::collections::BTreeSet<String> = self
            .containers()?
            .iter()
            .flat_map(|c| c.endpoints.iter().map(|e| e.network_id.clone()))
            .collect();
        let rundir = self.config.rundir.display().to_string();
        Ok(nets
            .into_iter()
            .filter(|n| n.driver == berth_plan::model::Driver::Overlay)
            .filter(|n| {
                in_net(n, f.dst)
                    || f.src.is_some_and(|s| in_net(n, s))
                    || (!dst_in_any && local.contains(&n.id))
            })
            .map(|n| {
                let path = PathBuf::from(berth_plan::overlayns::netns_path(&rundir, &n.id));
                Look { net: n, path }
            })
            .filter(|l| berth_kernel::overlayns::is_netns_mount(&l.path))
            .collect())
    }

    /// What the journey names in each overlay namespace: its devices, its links by index, the
    /// network's containers on other hosts.
    async fn overlay_infos(&self, looks: &[Look]) -> Vec<OverlayInfo> {
        let remotes = self
            .cluster
            .as_ref()
            .map(|c| c.remote_endpoints())
            .unwrap_or_default();
        let mut out = Vec::new();
        for l in looks {
            let links = match berth_kernel::link::Kernel::new_in(&l.path).await {
                Ok(k) => k
                    .list_links()
                    .await
                    .map(|v| v.into_iter().map(|l| (l.index, l.name)).collect())
                    .unwrap_or_default(),
                Err(e) => {
                    tracing::debug!("trace: listing links in {}: {e}", l.path.display());
                    Default::default()
                }
            };
            let id = &l.net.id;
            out.push(OverlayInfo {
                network: l.net.name.clone(),
                netns: berth_plan::names::overlay_netns_name(id),
                bridge: l.net.bridge.clone(),
                vxlan: berth_plan::names::vxlan_name(id),
                vni: l.net.overlay.map(|o| o.vni).unwrap_or_default(),
                uplink: (!l.net.internal).then(|| berth_plan::names::uplink_name(id)),
                links,
                remotes: remotes
                    .iter()
                    .filter(|r| &r.network_id == id)
                    .map(|r| RemoteInfo {
                        container: r.name.clone(),
                        node: r.node.clone(),
                        vtep: r.vtep,
                        addrs: r.ips().collect(),
                    })
                    .collect(),
            });
        }
        out
    }

    /// Runs one trace; `progress` gets a line per stage and keep-alives (an empty line): when it
    /// is closed (the client went away) the trace stops and its table is removed.
    pub async fn trace(
        &self,
        mut spec: Spec,
        progress: mpsc::Sender<String>,
    ) -> ApiResult<Journey> {
        let say = |s: String| {
            let p = progress.clone();
            async move { p.send(s).await.is_ok() }
        };
        let id: String = crate::ids::new_id().chars().take(12).collect();
        let table = plan::table_name(&id);
        let mut sock = TraceSocket::open()
            .map_err(|e| ApiError::internal(format!("opening the trace socket: {e}")))?;

        // The probe's socket first: its source port makes the marked flow exactly this one.
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let udp = spec.filter.proto == Proto::Udp;
        let dst = SocketAddr::new(spec.filter.dst, spec.filter.dport);
        let bind_src = match spec.from {
            From::Host => spec.filter.src,
            _ => None,
        };
        let probe_task = match &spec.from {
            From::Nowhere => None,
            From::Host => Some(tokio::task::spawn_blocking(move || {
                probe::staged(udp, bind_src, dst, CONNECT_TIMEOUT, port_tx, go_rx)
            })),
            From::Netns(p) => {
                let p = p.clone();
                Some(tokio::spawn(async move {
                    berth_kernel::netns::run_in_netns_async(&p, move || {
                        probe::staged(udp, None, dst, CONNECT_TIMEOUT, port_tx, go_rx)
                    })
                    .await
                    .unwrap_or_else(|e| Outcome::Error(e.to_string()))
                }))
            }
        };
        if probe_task.is_some() {
            match port_rx.await {
                Ok(Ok(p)) => spec.filter.sport = Some(p),
                Ok(Err(e)) => return Err(ApiError::bad_request(format!("the probe: {e}"))),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "the probe could not start from {}",
                        spec.vantage
                    )))
                }
            }
        }
        // The overlay namespaces the flow may cross: a socket in each (before its tables, so
        // no event is missed), read by a task of its own.
        let (ns_tx, mut ns_rx) = mpsc::unbounded_channel();
        let mut readers = Readers(Vec::new());
        let mut looks = Vec::new();
        for l in self.trace_looks(&spec.filter)? {
            match TraceSocket::open_in(&l.path).await {
                Ok(sock) => {
                    readers
                        .0
                        .push(spawn_ns_reader(looks.len(), sock, ns_tx.clone()));
                    looks.push(l);
                }
                // Removed meanwhile (a `network rm`): nothing of the flow crosses it any more.
                Err(e) => {
                    tracing::warn!("trace: not looking into {}: {e}", l.path.display());
                    say(format!(
                        "overlay network {}'s namespace could not be opened ({e}): not traced there",
                        l.net.name
                    ))
                    .await;
                }
            }
        }
        let mut ns_events: Vec<Vec<Event>> = vec![Vec::new(); looks.len()];
        drop(ns_tx);
        let f = spec.filter.clone();
        let t = id.clone();
        let count = spec.count;
        tokio::task::spawn_blocking(move || kt::install(&t, &f, count.max(8)))
            .await
            .map_err(|e| ApiError::internal(format!("installing the trace table: {e}")))?
            .map_err(|e| ApiError::internal(format!("installing the trace table: {e}")))?;
        let mut guard = TableGuard(Some(table.clone()), Vec::new());
        say(format!(
            "table inet {table} marks {} (from {})",
            spec.filter.text(),
            spec.vantage
        ))
        .await;
        for l in &looks {
            let (f, t, p) = (spec.filter.clone(), id.clone(), l.path.clone());
            tokio::task::spawn_blocking(move || kt::install_in(&p, &t, &f, count.max(8)))
                .await
                .map_err(|e| ApiError::internal(format!("installing the trace table: {e}")))?
                .map_err(|e| {
                    ApiError::internal(format!(
                        "installing the trace table in {}: {e}",
                        l.path.display()
                    ))
                })?;
            guard.1.push(l.path.clone());
            say(format!(
                "tables bridge and inet {table} mark it in overlay network {}'s namespace",
                l.net.name
            ))
            .await;
        }

        let mut events = Vec::new();
        let mut lost = false;
        let deadline = Instant::now() + spec.timeout;
        let mut drain_until: Option<Instant> = None;
        let mut outcome: Option<Outcome> = None;
        let mut probe_task = probe_task;
        if probe_task.is_some() {
            let _ = go_tx.send(());
            say(format!("probe sent to {dst}")).await;
        } else {
            say(format!(
                "waiting up to {}s for {} packet(s)",
                spec.timeout.as_secs_f64(),
                spec.count
            ))
            .await;
        }
        // A watch has seen its packets once this trace's chains marked `count` of them, in
        // berthd's namespace and the overlay namespaces together.
        let watch_count = spec.count as usize;
        let enough = |host: &[Event], ns: &[Vec<Event>]| {
            marked(host, &table) + ns.iter().map(|e| marked(e, &table)).sum::<usize>()
                >= watch_count
        };
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            let until = drain_until.map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                r = sock.next() => {
                    let (evs, l) = r.map_err(|e| ApiError::internal(format!("reading trace events: {e}")))?;
                    lost |= l;
                    events.extend(evs);
                    if spec.watch && drain_until.is_none() && enough(&events, &ns_events) {
                        drain_until = Some(Instant::now() + DRAIN);
                    }
                }
                Some((i, evs, l)) = ns_rx.recv() => {
                    lost |= l;
                    if let Some(v) = ns_events.get_mut(i) {
                        v.extend(evs);
                    }
                    if spec.watch && drain_until.is_none() && enough(&events, &ns_events) {
                        drain_until = Some(Instant::now() + DRAIN);
                    }
                }
                o = async { probe_task.as_mut().expect("guarded by the if").await }, if probe_task.is_some() => {
                    probe_task = None;
                    outcome = Some(o.unwrap_or_else(|e| Outcome::Error(e.to_string())));
                    drain_until = Some(Instant::now() + DRAIN);
                }
                _ = keepalive.tick() => {
                    if !say(String::new()).await {
                        tracing::info!("trace {id}: the client went away; removing {table}");
                        return Err(ApiError::bad_request("the client went away"));
                    }
                }
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        drop(probe_task);
        let t = guard.0.take().unwrap_or_default();
        let in_ns = std::mem::take(&mut guard.1);
        tokio::task::spawn_blocking(move || -> berth_kernel::error::Result<()> {
            kt::remove(&t)?;
            for p in in_ns {
                kt::remove_in(&p, &t)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ApiError::internal(format!("removing the trace table: {e}")))?
        .map_err(|e| ApiError::internal(format!("removing the trace table: {e}")))?;
        drop(guard);
        // Events already queued when the loop ended (the timer and the socket can be ready at
        // once; select picks one): no packet is marked any more, so this ends.
        for _ in 0..64 {
            match tokio::time::timeout(Duration::from_millis(20), sock.next()).await {
                Ok(Ok((evs, l))) => {
                    lost |= l;
                    events.extend(evs);
                }
                _ => break,
            }
        }

        // The namespaces' last events, then their readers end.
        let quiet_until = Instant::now() + Duration::from_millis(20);
        while let Ok(Some((i, evs, l))) = tokio::time::timeout_at(quiet_until, ns_rx.recv()).await {
            lost |= l;
            if let Some(v) = ns_events.get_mut(i) {
                v.extend(evs);
            }
        }
        drop(readers);

        let rules = tokio::task::spawn_blocking(kt::ruleset)
            .await
            .map_err(|e| ApiError::internal(format!("listing the rule set: {e}")))?
            .map_err(|e| ApiError::internal(format!("listing the rule set: {e}")))?;
        let mut ns_traces = Vec::new();
        for (l, evs) in looks.iter().zip(ns_events) {
            let p = l.path.clone();
            let rules = tokio::task::spawn_blocking(move || kt::ruleset_in(&p))
                .await
                .map_err(|e| ApiError::internal(format!("listing the rule set: {e}")))?
                .map_err(|e| {
                    ApiError::internal(format!("listing the rule set in {}: {e}", l.path.display()))
                })?;
            ns_traces.push(NsTrace {
                network: l.net.name.clone(),
                events: evs,
                rules,
            });
        }
        let conntrack = conntrack_text(&spec.filter).await;
        let world = self.trace_world(&spec.vantage, &looks).await?;
        let probe_text = outcome.map(|o| match (&o, udp) {
            (Outcome::Connected, true) => "answered".to_string(),
            _ => o.text(),
        });
        let mut j = plan::journey_with(
            &events,
            &table,
            &spec.filter,
            &rules,
            &world,
            probe_text.as_deref(),
            conntrack,
            &ns_traces,
        );
        if lost {
            j.result
                .push_str(" (some trace events were lost: the socket overran)");
        }
        if let Some(q) = plan::route_query(&j) {
            // The kernel's own decision for the flow's first packet, after NAT: an input
            // lookup (`ip route get DST from SRC iif IIF`) for a packet that came in on an
            // interface, an output lookup for one the host sent.
            let src = q.iif.as_ref().map(|_| q.src);
            match self.kernel.route_get(q.dst, src, q.iif.as_deref()).await {
                Ok(a) => {
                    j.route = Some(match &q.iif {
                        Some(i) => format!("{} (from {} in on {i})", a.text(q.dst), q.src),
                        None => a.text(q.dst),
                    })
                }
                Err(e) => tracing::debug!("trace: looking up the route to {}: {e}", q.dst),
            }
        }
        Ok(j)
    }
}

/// The conntrack entry of a traced flow: `orig ⇄ reply` (NAT shows in the reply tuple).
async fn conntrack_text(f: &Filter) -> Option<String> {
    let f = f.clone();
    let found = tokio::task::spawn_blocking(move || {
        let proto = match f.proto {
            Proto::Udp => berth_kernel::conntrack::IPPROTO_UDP,
            _ => berth_kernel::conntrack::IPPROTO_TCP,
        };
        berth_kernel::conntrack::entries_matching(|t| {
            t.proto == proto
                && t.dst == f.dst
                && t.dport == f.dport
                && f.sport.is_none_or(|p| p == t.sport)
                && f.src.is_none_or(|s| s == t.src)
        })
    })
    .await
    .ok()?
    .ok()?;
    let (o, r) = found.first()?;
    let s = |a: IpAddr, p: u16| SocketAddr::new(a, p).to_string();
    Some(format!(
        "{} {} → {} ⇄ reply {} → {}",
        if o.proto == berth_kernel::conntrack::IPPROTO_UDP {
            "udp"
        } else {
            "tcp"
        },
        s(o.src, o.sport),
        s(o.dst, o.dport),
        s(r.src, r.sport),
        s(r.dst, r.dport)
    ))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(split_host_port("10.0.0.1:80"), Some(("10.0.0.1", 80)));
        assert_eq!(split_host_port("[fd00::1]:53"), Some(("fd00::1", 53)));
        assert_eq!(split_host_port("web:8080"), Some(("web", 8080)));
        assert_eq!(split_host_port("web"), None);
        assert_eq!(split_host_port("web:99999"), None);
    }
}
