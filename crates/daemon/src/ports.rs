//! Published ports in the daemon: the requested ports of a container (stored beside it under
//! `ports/<id>`), choosing host ports at start, refusing ports already in use (by another
//! container, named, or by a host process, named when it can be found), the nft map elements,
//! UDP conntrack flushes, the kernel settings loopback access needs, and the `[::1]` relays
//! (`ports_local6`: the kernel cannot DNAT `::1`).
//!
//! The decisions are `berth_plan::ports` (pure); this module feeds it what only the host knows.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use berth_api::types::{HostConfig, PortBinding};
use berth_plan::firewall::Elements;
use berth_plan::model::{ContainerSpec, NetworkMode, NetworkSpec, Status};
use berth_plan::network::OPT_HOST_BINDING_IPV4;
use berth_plan::ports::{self, Allocation, HostUse, PortSpec, Proto, Published, Target};
use berth_store::{Op, StoreExt};

use crate::daemon::Daemon;
use crate::dns::PORT as DNS_PORT;
use crate::error::{ApiError, ApiResult};

/// Prefix of the stored ports of containers (`ports/<container id>` → [`PortsDoc`]). Kept
/// beside the container's spec and state rather than in them: a container with a 1,000-port
/// range would otherwise make every read of its state (DNS table builds, listings) parse 1,000
/// entries; only this module reads these documents.
pub const PREFIX: &str = "ports/";

/// A container's ports: what was asked for, and what is in force while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortsDoc {
    /// Requested (`-p`), one per container port.
    #[serde(default)]
    pub specs: Vec<PortSpec>,
    /// In force (host ports chosen at start); empty while not running.
    #[serde(default)]
    pub published: Vec<Published>,
}

/// Store key of a container's requested ports.
pub fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// Parses Docker's `HostConfig.PortBindings` into specs (400 with the reason on bad input).
pub fn specs_from_api(hc: &HostConfig) -> ApiResult<Vec<PortSpec>> {
    let mut out = Vec::new();
    for (k, bindings) in &hc.port_bindings {
        if bindings.is_empty() {
            // `"80/tcp": []`: exposed, not published (Docker's `-P` would pick a port).
            continue;
        }
        for b in bindings {
            out.push(PortSpec::from_binding(k, &b.host_ip, &b.host_port)?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Docker's `HostConfig.PortBindings` of stored specs.
pub fn bindings_view(specs: &[PortSpec]) -> std::collections::BTreeMap<String, Vec<PortBinding>> {
    ports::to_bindings(specs)
        .into_iter()
        .map(|(k, v)| (k, wire(v)))
        .collect()
}

/// Docker's `NetworkSettings.Ports`.
pub fn ports_view(
    specs: &[PortSpec],
    published: &[Published],
) -> std::collections::BTreeMap<String, Option<Vec<PortBinding>>> {
    ports::ports_view(specs, published)
        .into_iter()
        .map(|(k, v)| (k, v.map(wire)))
        .collect()
}

/// `(host ip, host port)` pairs as Docker's `PortBinding`s.
fn wire(v: Vec<(String, String)>) -> Vec<PortBinding> {
    v.into_iter()
        .map(|(host_ip, host_port)| PortBinding { host_ip, host_port })
        .collect()
}

/// A container's ports document (empty when it has no ports).
pub fn doc(d: &Daemon, id: &str) -> ApiResult<PortsDoc> {
    Ok(d.store.get_json(&key(id))?.unwrap_or_default())
}

/// Every container's ports document, by container id: one read of the store where a read
/// per container cost ~1,000 transactions at start-up (twice: the pass and the relays).
pub fn docs(d: &Daemon) -> ApiResult<std::collections::HashMap<String, PortsDoc>> {
    let mut out = std::collections::HashMap::new();
    for (key, bytes) in d.store.list(PREFIX)? {
        let Some(id) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let doc =
            serde_json::from_slice(&bytes).map_err(|source| berth_store::StoreError::Decode {
                key: key.clone(),
                source,
            })?;
        out.insert(id.to_string(), doc);
    }
    Ok(out)
}

/// The store operation that records `specs` for a container created with them (none when
/// there are none, so containers without ports leave no trace).
pub fn store_op(id: &str, specs: &[PortSpec]) -> Option<Op> {
    (!specs.is_empty()).then(|| {
        Op::put_json(
            key(id),
            &PortsDoc {
                specs: specs.to_vec(),
                published: Vec::new(),
            },
        )
    })
}

/// Every address of the host (berthd's network namespace).
async fn host_addrs(d: &Daemon) -> ApiResult<Vec<IpAddr>> {
    Ok(d.kernel
        .link_addrs()
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect())
}

/// Create-time checks, so a request that can never work stores nothing: the network mode
/// can publish, the container has an address of each family asked for, every host address is
/// the host's, and no fixed host port is already published by a running container (a port can
/// still be taken before start: start checks again, authoritatively).
pub async fn validate(d: &Daemon, c: &ContainerSpec, specs: &[PortSpec]) -> ApiResult<()> {
    if specs.is_empty() {
        return Ok(());
    }
    match &c.mode {
        NetworkMode::Networks => {}
        NetworkMode::Host => {
            return Err(ApiError::bad_request(
                "published ports are not used with --network host: the container shares the \
                 host's network stack, its ports are the host's ports already",
            ))
        }
        NetworkMode::None => {
            return Err(ApiError::bad_request(
                "cannot publish ports with --network none: the container has no network",
            ))
        }
        NetworkMode::Container(_) => {
            return Err(ApiError::bad_request(
                "cannot publish ports with --network container:NAME: publish them on the \
                 container whose network namespace is shared",
            ))
        }
    }
    // Only a port bound to an address needs the host's addresses: their dump walks every
    // interface (two per running container), so `-p 8080:80` does not pay for it.
    if specs.iter().any(|s| s.host_ip.is_some()) {
        let addrs = host_addrs(d).await?;
        for s in specs {
            if let Some(ip) = s.host_ip {
                ports::check_host_ip(ip, &addrs)?;
            }
        }
    }
    let nets = d.networks()?;
    let t = target(c, &nets)?;
    let fixed: Vec<PortSpec> = specs
        .iter()
        .filter(|s| s.host_port != 0 && s.host_port == s.host_port_end)
        .cloned()
        .collect();
    let lookup = |p: &Published| taken_by(d, p);
    let alloc = Allocation {
        taken: &lookup,
        ephemeral: ephemeral_range(),
        start: 0,
    };
    // Host processes are not probed here: that is start's job, when the port is taken. The
    // ports berthd serves itself are known now: refused before anything is stored.
    let dns = berth_plan::dns::listen_addrs(&nets);
    let mut berthd_use = |proto: Proto, ip: IpAddr, port: u16| {
        ports::held_by_berthd(proto, ip, port, &dns, DNS_PORT)
    };
    ports::allocate(&fixed, &t, &alloc, &mut berthd_use).map(drop)?;
    Ok(())
}

/// The running container's port that clashes with `p`, if any (from the firewall's index).
fn taken_by(d: &Daemon, p: &Published) -> Option<(String, Published)> {
    d.firewall
        .with_port_index(|idx| {
            idx.get(&(p.proto, p.host_port)).and_then(|v| {
                v.iter()
                    .find(|(_, o)| o.clashes_with(p))
                    .map(|(n, o)| (n.clone(), o.clone()))
            })
        })
        .ok()
        .flatten()
}

/// Where `c`'s ports point: the addresses of its gateway endpoint.
fn target(c: &ContainerSpec, nets: &[NetworkSpec]) -> ApiResult<Target> {
    let ep = berth_plan::network::gateway_endpoint(c, nets).ok_or_else(|| {
        ApiError::bad_request(format!(
            "cannot publish ports of container {:?}: it has no network with a way out \
             (ports are published on the network that gives the default route; internal \
             networks have none)",
            c.name
        ))
    })?;
    let net = nets.iter().find(|n| n.id == ep.network_id);
    let default_host_v4 = net
        .and_then(|n| n.options.get(OPT_HOST_BINDING_IPV4))
        .and_then(|v| v.parse().ok())
        .filter(|a: &std::net::Ipv4Addr| !a.is_unspecified());
    Ok(Target {
        network: net.map(|n| n.name.clone()).unwrap_or_default(),
        v4: ep.ipv4(),
        v6: ep.addrs.iter().find_map(|a| match a.addr() {
            IpAddr::V6(v) => Some(v),
            IpAddr::V4(_) => None,
        }),
        default_host_v4,
    })
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), Docker's pool for "any
/// free port"; 49153–65535 when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    berth_kernel::sysctl::read(None, "net.ipv4.ip_local_port_range")
        .ok()
        .and_then(|s| ports::parse_port_range(&s))
        .unwrap_or((49153, 65535))
}

/// Chooses host ports for `c`, installs its map elements (one transaction) and flushes stale
/// UDP conntrack entries. Called under the daemon's mutation lock, before the container's
/// process starts. Returns the store operation that records the ports in force, for the
/// caller's transaction that records the container as running.
pub async fn publish(d: &Arc<Daemon>, c: &ContainerSpec) -> ApiResult<Option<Op>> {
    publish_with(d, c, true).await.map(|(op, _)| op)
}

/// [`publish`]; with `guard_now` false, a container that publishes no port gets no
/// transaction here: its anti-spoofing elements are returned, left to [`install_guard`],
/// which its start calls while its init assembles the root, still before its veths exist.
/// Returns the store operation and the guard left to install (`None`: nothing left).
pub async fn publish_with(
    d: &Arc<Daemon>,
    c: &ContainerSpec,
    guard_now: bool,
) -> ApiResult<(Option<Op>, Option<Elements>)> {
    let mut doc = doc(d, &c.id)?;
    let specs = doc.specs.clone();
    let nets = d.networks()?;
    // Anti-spoofing for its bridge ports goes in the same transaction, in force before its
    // veths exist (a port's first frame is already checked).
    let guard = berth_plan::firewall::container_guard_elements(c, &nets);
    let veths = veths(c);
    if specs.is_empty() {
        if guard.is_empty() {
            return Ok((None, None));
        }
        if !guard_now {
            return Ok((None, Some(guard)));
        }
        install_guard(d, c, &guard)?;
        return Ok((None, None));
    }
    let started = Instant::now();
    let t = target(c, &nets)?;
    let range = ephemeral_range();
    let start = {
        use rand::Rng;
        rand::rng().random_range(range.0..=range.1)
    };
    // Long runs of fixed ports (a 1,000-port range): one `sock_diag` dump per run says which
    // of its ports any socket of berthd's namespace is bound to; only those are probed (a
    // bind probe is `socket`+`setsockopt`+`bind`+`close`: 4,000 syscalls for the range). A
    // run the kernel cannot answer for (`None`: TCP before Linux 6.6) is probed port by port.
    let bound: Vec<(Proto, u16, u16, BTreeSet<u16>)> = ports::probe_runs(&specs)
        .into_iter()
        .filter_map(|(proto, a, b)| {
            berth_kernel::hostport::bound_ports(proto, a, b).map(|set| (proto, a, b, set))
        })
        .collect();
    let unbound = |proto: Proto, port: u16| {
        bound
            .iter()
            .any(|(p, a, b, set)| *p == proto && (*a..=*b).contains(&port) && !set.contains(&port))
    };
    // In a block: the lookup is a `&dyn Fn` (not `Sync`) and must not live across an await.
    let published = {
        let taken_lookup = |p: &Published| taken_by(d, p);
        let alloc = Allocation {
            taken: &taken_lookup,
            ephemeral: range,
            start,
        };
        // `[::1]:PORT` held by berthd's own relay for another container, and berthd's DNS
        // port on the gateways: named as such.
        let dns = berth_plan::dns::listen_addrs(&nets);
        let mut host_use = |proto: Proto, ip: IpAddr, port: u16| {
            if let held @ HostUse::Held(_) = ports::held_by_berthd(proto, ip, port, &dns, DNS_PORT)
            {
                return held;
            }
            // Whether the port is reachable through `[::1]` (`loopback6_relays`): a TCP port
            // published on every address of either family is, through the one redirect, so
            // whoever holds `[::1]:PORT` refuses it — a redirect would take that holder's `::1`
            // connections away (UDP keeps a socket per port: its bind is the check, a
            // wildcard's failure a warning, see `Relays::open`).
            let v6_loopback = matches!(ip, IpAddr::V6(a) if a.is_loopback() || a.is_unspecified())
                || (proto == Proto::Tcp && ip.is_unspecified());
            let loopback6 = std::net::Ipv6Addr::LOCALHOST.into();
            match d.local6.holder(proto, port).filter(|_| v6_loopback) {
                Some(h) => HostUse::Held(h),
                // No socket of any family is bound to it: a bind cannot fail.
                None if unbound(proto, port) => HostUse::Free,
                None => match berth_kernel::hostport::probe(proto, ip, port) {
                    Some(holder) => HostUse::Held(holder),
                    // berthd's own relay port is not relayed (`Relays::open` warns), so
                    // its listener is no conflict for a wildcard publish.
                    None if v6_loopback
                        && proto == Proto::Tcp
                        && ip != loopback6
                        && port != d.local6.port() =>
                    {
                        match berth_kernel::hostport::probe(proto, loopback6, port) {
                            Some(holder) => HostUse::Held(format!("{holder} at [::1]:{port}")),
                            None => HostUse::Free,
                        }
                    }
                    None => HostUse::Free,
                },
            }
        };
        ports::allocate(&specs, &t, &alloc, &mut host_use)?
    };
    let chosen = started.elapsed();
    // `[::1]`: berthd's own relays (TCP: index entries for its one listener, the redirect's
    // `relay6_tcp`/`relay6_tcp_runs` elements being part of the commit; UDP: a socket per port), opened on a
    // blocking thread WHILE this one commits the map elements. A port published on `::1` that
    // cannot be relayed refuses the start (its map elements go again); a failed commit closes
    // the relays again.
    let relays6 = ports::loopback6_relays(&published);
    let opening = {
        let (d, id, name) = (d.clone(), c.id.clone(), c.name.clone());
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            (d.local6.open(&id, &name, &relays6), t.elapsed())
        })
    };
    // The commit blocks on the kernel (and runs `nft` when a change needs it): block this
    // worker in place (the runtime moves its other tasks away) rather than stall the tasks
    // queued behind it.
    let committed = tokio::task::block_in_place(|| {
        d.firewall
            .update_ports(&c.id, &c.name, &published, &veths, &guard)
    });
    let nft = started.elapsed() - chosen;
    let (relayed, relays) = match opening.await {
        Ok(r) => r,
        // The closure panicked: whatever it opened is closed below.
        Err(e) => (
            Err(format!("opening the [::1] relays: {e}")),
            Default::default(),
        ),
    };
    if let Err(e) = committed {
        d.local6.close(&c.id).await;
        return Err(ApiError::internal(format!(
            "publishing the ports of container {:?}: {e:#}",
            c.name
        )));
    }
    if let Err(e) = relayed {
        // `open` left nothing of its own open; a panic might have.
        d.local6.close(&c.id).await;
        if let Err(e2) = tokio::task::block_in_place(|| {
            d.firewall
                .update_ports(&c.id, &c.name, &[], &veths, &Elements::default())
        }) {
            tracing::warn!(
                "removing the ports of container {:?} after a refused relay: {e2:#}",
                c.name
            );
        }
        return Err(ApiError::conflict(e));
    }
    flush_udp(d, &published).await;
    // Per step (read by berth-bench-ports): choosing, then the commit and the relays side by
    // side (each its own duration; `elapsed_us` is the whole, from the start of the port work).
    tracing::info!(
        container = %c.name,
        ports = published.len(),
        chosen_us = chosen.as_micros() as u64,
        nft_us = nft.as_micros() as u64,
        relays_us = relays.as_micros() as u64,
        elapsed_us = started.elapsed().as_micros() as u64,
        "ports published"
    );
    doc.published = published;
    Ok((Some(Op::put_json(key(&c.id), &doc)), None))
}

/// Installs the anti-spoofing elements `guard` of `c`, a container that publishes no port
/// (as [`publish_with`] computed or left them): one transaction, before its veths exist.
pub fn install_guard(d: &Daemon, c: &ContainerSpec, guard: &Elements) -> ApiResult<()> {
    tokio::task::block_in_place(|| {
        d.firewall
            .update_ports(&c.id, &c.name, &[], &veths(c), guard)
    })
    .map(|_| ())
    .map_err(|e| {
        ApiError::internal(format!(
            "installing the anti-spoofing rules of container {:?}: {e:#}",
            c.name
        ))
    })
}

/// The host-side veth names of `c`'s endpoints (its bridge ports).
fn veths(c: &ContainerSpec) -> BTreeSet<String> {
    c.endpoints.iter().map(|e| e.host_ifname.clone()).collect()
}

/// Removes the map elements of container `id` (if it has any in force) and flushes the UDP
/// conntrack entries of those ports. Never fails the caller: a failure is logged (the next
/// start of berthd converges the maps). Returns the store operation that records "nothing in
/// force" when the container has ports, for the caller's transaction.
///
/// The anti-spoofing elements of its bridge ports are released: removed by the next pass or
/// the exit's follow-up ([`Daemon::flush_released_guard`]).
pub async fn unpublish(d: &Daemon, c: &ContainerSpec) -> Option<Op> {
    let (id, name) = (c.id.as_str(), c.name.as_str());
    let veths = veths(c);
    let started = Instant::now();
    // Its `[::1]` relays leave the index now and their sockets close on the runtime's other
    // workers while this one removes the map elements; both are done before this returns.
    let closing = d.local6.begin_close(id);
    let record = match doc(d, id) {
        Ok(mut doc) if !doc.published.is_empty() => {
            doc.published.clear();
            Some(Op::put_json(key(id), &doc))
        }
        _ => None,
    };
    // Its anti-spoofing elements go later, off this path (see `Firewall::release_guard`).
    d.firewall.release_guard(&veths);
    let before_nft = started.elapsed();
    let removed = tokio::task::block_in_place(|| {
        d.firewall
            .update_ports(id, name, &[], &BTreeSet::new(), &Elements::default())
    });
    let committed = started.elapsed();
    closing.done().await;
    // When the last listener was closed, from the start (overlapping the commit).
    let relays = started.elapsed();
    match removed {
        Ok(old) if !old.is_empty() => {
            flush_udp(d, &old).await;
            tracing::info!(
                container = %name,
                ports = old.len(),
                relays_us = relays.as_micros() as u64,
                nft_us = (committed - before_nft).as_micros() as u64,
                elapsed_us = started.elapsed().as_micros() as u64,
                "ports unpublished"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("unpublishing the ports of container {name:?}: {e:#}"),
    }
    record
}

/// Start-up: the published ports of every running container (their documents record them),
/// as (id, name, ports), those with any: their `[::1]` relays listen again ([`open_relays`]),
/// and the maps and the conflict index hold exactly them ([`replace`]).
pub fn running_published(d: &Daemon) -> ApiResult<Vec<(String, String, Vec<Published>)>> {
    let states = d.states_shared()?;
    let mut docs = docs(d)?;
    let mut all = Vec::new();
    for c in d.containers_shared()?.iter() {
        let running = states
            .get(&c.id)
            .is_some_and(|st| st.status == Status::Running);
        if !running {
            continue;
        }
        let published = docs.remove(&c.id).unwrap_or_default().published;
        if !published.is_empty() {
            all.push((c.id.clone(), c.name.clone(), published));
        }
    }
    Ok(all)
}

/// Opens the `[::1]` relays of `all` (from [`running_published`]); one that cannot listen is
/// a warning. berthd's own sockets: nothing a reconcile pass reads or changes, so start-up
/// opens them while it reads the namespaces and runs its pass. Must run inside the runtime
/// (a blocking thread of it will do).
pub fn open_relays(d: &Daemon, all: &[(String, String, Vec<Published>)]) {
    for (id, name, published) in all {
        if let Err(e) = d.local6.open(id, name, &ports::loopback6_relays(published)) {
            tracing::warn!("container {name:?}: {e}");
        }
    }
}

/// Makes the published-port maps and the port index hold exactly `all` (after the start-up
/// pass read the table back: see [`crate::firewall::Firewall::replace_ports`]).
pub fn replace(d: &Daemon, all: &[(String, String, Vec<Published>)]) -> ApiResult<()> {
    d.firewall
        .replace_ports(all)
        .map_err(|e| ApiError::internal(format!("converging published ports: {e:#}")))
}

/// Deletes the UDP conntrack entries whose original destination is one of `published` host
/// ports on a local address: a flow that was talking to the port before the change keeps its
/// entry (and its old path) for as long as packets keep flowing, black-holed otherwise.
async fn flush_udp(d: &Daemon, published: &[Published]) {
    let udp: BTreeSet<(IpAddr, u16)> = published
        .iter()
        .filter(|p| p.proto == Proto::Udp)
        .map(|p| (p.host_ip, p.host_port))
        .collect();
    if udp.is_empty() {
        return;
    }
    let local: BTreeSet<IpAddr> = match host_addrs(d).await {
        Ok(a) => a.into_iter().collect(),
        Err(e) => {
            tracing::warn!(
                "listing host addresses for a conntrack flush: {}",
                e.message
            );
            return;
        }
    };
    let started = Instant::now();
    // A conntrack dump walks every entry of the table: off the async path.
    let result = tokio::task::block_in_place(|| {
        berth_kernel::conntrack::delete_matching(|t| {
            t.proto == berth_kernel::conntrack::IPPROTO_UDP
                && udp.iter().any(|(ip, port)| {
                    *port == t.dport
                        && ip.is_ipv4() == t.dst.is_ipv4()
                        && if ip.is_unspecified() {
                            local.contains(&t.dst) || t.dst.is_loopback()
                        } else {
                            *ip == t.dst
                        }
                })
        })
    });
    match result {
        Ok(n) => tracing::debug!(
            deleted = n,
            elapsed_us = started.elapsed().as_micros() as u64,
            "UDP conntrack entries flushed"
        ),
        Err(e) => tracing::warn!("flushing UDP conntrack entries: {e}"),
    }
}
