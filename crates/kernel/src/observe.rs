//! Reads back what the kernel has, as `berth_plan::host::Observed*`: links (with the marks berth
//! judges ownership by), addresses, bridge-port flags, container namespaces' interfaces and
//! default routes, sysctls and berth's nft table. Decides nothing: the diff is in the plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use berth_plan::host::{ObservedFirewall, ObservedLink, ObservedNetns};
use berth_plan::model::RoutePlan;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoPortData, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::Socket;

use crate::error::{KernelError, Result};
use crate::link;
use crate::monitor::Monitor;
use crate::nl::SyncNetlink;

/// A link message as an [`ObservedLink`] (master as an index; addresses filled in later).
pub(crate) fn link_of(msg: &LinkMessage) -> (u32, Option<u32>, ObservedLink) {
    let mut l = ObservedLink {
        up: msg.header.flags.contains(LinkFlags::Up),
        ..ObservedLink::default()
    };
    let mut master = None;
    (l.forward_delay, l.mcast_snooping) = link::bridge_settings(msg);
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Controller(m) => master = Some(*m),
            LinkAttribute::Mtu(m) => l.mtu = *m,
            LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
            LinkAttribute::Address(mac) if mac.len() == 6 => {
                let mut b = [0u8; 6];
                b.copy_from_slice(mac);
                l.mac = Some(b);
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        NlLinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            let mut hairpin = false;
                            let mut isolated = false;
                            for p in port {
                                match p {
                                    InfoBridgePort::HairpinMode(h) => hairpin = *h,
                                    InfoBridgePort::Isolated(i) => isolated = *i,
                                    _ => {}
                                }
                            }
                            l.port_flags = Some((hairpin, isolated));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (msg.header.index, master, l)
}

/// Attaches addresses (IPv6 link-local ones left out) to links by index.
fn attach_addrs(addrs: &[AddressMessage], by_index: &mut HashMap<u32, ObservedLink>) {
    for a in addrs {
        let Some(ip) = link::address_of(a) else {
            continue;
        };
        if link::is_ipv6_link_local(&ip) {
            continue;
        }
        let Ok(net) = IpNet::new(ip, a.header.prefix_len) else {
            continue;
        };
        if let Some(l) = by_index.get_mut(&a.header.index) {
            l.addrs.push(net);
        }
    }
}

/// Links (by name) from link and address dumps, masters resolved to names.
pub(crate) fn assemble(
    links: Vec<LinkMessage>,
    addrs: Vec<AddressMessage>,
) -> BTreeMap<String, ObservedLink> {
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut masters: HashMap<u32, u32> = HashMap::new();
    let mut by_index: HashMap<u32, ObservedLink> = HashMap::new();
    for m in &links {
        let (index, master, l) = link_of(m);
        names.insert(index, l.name.clone());
        if let Some(mi) = master {
            masters.insert(index, mi);
        }
        by_index.insert(index, l);
    }
    attach_addrs(&addrs, &mut by_index);
    by_index
        .into_iter()
        .map(|(index, mut l)| {
            l.master = masters
                .get(&index)
                .map(|mi| names.get(mi).cloned().unwrap_or_else(|| format!("if{mi}")));
            (l.name.clone(), l)
        })
        .collect()
}

/// Default routes (main table) in route dump answers.
fn default_routes(routes: &[RouteMessage]) -> Vec<RoutePlan> {
    let mut out = Vec::new();
    for r in routes {
        if link::route_table(r) != u32::from(link::MAIN_TABLE)
            || r.header.destination_prefix_length != 0
        {
            continue;
        }
        let via = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
            _ => None,
        });
        let Some(via) = via else { continue };
        let dst = match r.header.address_family {
            AddressFamily::Inet => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            AddressFamily::Inet6 => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            _ => continue,
        };
        if let Ok(dst) = dst {
            out.push(RoutePlan { dst, via });
        }
    }
    out
}

/// Every address of the socket's namespace (`RTM_GETADDR` dump).
fn dump_addrs(nl: &mut SyncNetlink) -> Result<Vec<AddressMessage>> {
    Ok(nl
        .request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            link::DUMP,
            || "listing addresses".to_string(),
        )?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => Some(a),
            _ => None,
        })
        .collect())
}

fn dump_all(
    nl: &mut SyncNetlink,
) -> Result<(Vec<LinkMessage>, Vec<AddressMessage>, Vec<RouteMessage>)> {
    let links = nl
        .request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            link::DUMP,
            || "listing links".to_string(),
        )?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .collect();
    let addrs = dump_addrs(nl)?;
    let routes = nl
        .request(
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            link::DUMP,
            || "listing routes".to_string(),
        )?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })
        .collect();
    Ok((links, addrs, routes))
}

/// A container namespace: its links with addresses and its default routes. A namespace that
/// cannot be opened (its last process just exited) is reported as not reachable, not as an
/// error.
pub async fn netns(path: &str) -> Result<ObservedNetns> {
    let p = Path::new(path);
    let result = crate::netns::run_in_netns_async(p, || -> Result<_> {
        let mut nl = SyncNetlink::open()?;
        dump_all(&mut nl)
    })
    .await;
    let (links, addrs, routes) = match result {
        Ok(inner) => inner?,
        Err(e) if gone(&e) => return Ok(ObservedNetns::default()),
        Err(e) => return Err(e),
    };
    Ok(ObservedNetns {
        reachable: true,
        links: assemble(links, addrs),
        default_routes: default_routes(&routes),
    })
}

/// [`netns`], and a [`Monitor`] of the namespace's link, address and route notifications
/// subscribed on the same thread inside it *before* the dumps (one thread start and `setns`
/// for both, where a subscription and a later observation took one each: 2,000 threads at a
/// restart with 1,000 containers). Any change made after the dumps began raises a
/// notification. The monitor is `None` when the namespace is gone (then not reachable) or the
/// subscription failed (logged): the observation stands either way.
pub async fn netns_watched(path: &str) -> Result<(ObservedNetns, Option<Monitor>)> {
    let p = Path::new(path);
    let result = crate::netns::run_in_netns_async(p, subscribe_and_dump).await;
    finish_watched(path, result.and_then(|inner| inner))
}

/// A namespace's observation and its monitor ([`netns_watched`]).
pub type Watched = Result<(ObservedNetns, Option<Monitor>)>;

/// What a thread inside a namespace reads for [`netns_watched`]: the notification socket,
/// subscribed first, then the dumps.
type WatchedRead = (
    Option<Result<Socket>>,
    (Vec<LinkMessage>, Vec<AddressMessage>, Vec<RouteMessage>),
);

fn subscribe_and_dump() -> Result<WatchedRead> {
    read_namespace(true)
}

/// [`subscribe_and_dump`], or only the dumps (no socket subscribed) when `!subscribe`.
fn read_namespace(subscribe: bool) -> Result<WatchedRead> {
    let sock = subscribe.then(crate::monitor::container_socket);
    let mut nl = SyncNetlink::open()?;
    Ok((sock, dump_all(&mut nl)?))
}

/// [`netns_watched`] for many namespaces (a restart's adopted containers) on `threads`
/// long-lived threads that each `setns()` into one namespace after the other, instead of a
/// thread started and ended per namespace: at 1,000 containers the thread starts and exits
/// (the kernel's task-list lock, glibc freeing the thread's arena and stack) cost more than the
/// dumps themselves (a system-wide profile of a restart). Results come back in `paths`' order.
/// Without `subscribe`, only the observations (every monitor `None`): berthd watches container
/// namespaces through one [`crate::monitor::NamespacesMonitor`]. With `registration`, each
/// namespace's id is looked up and handed over before it is read (see [`Registration`]).
pub async fn netns_watched_many(
    paths: Vec<String>,
    threads: usize,
    subscribe: bool,
    registration: Option<Registration>,
) -> Vec<(String, Watched)> {
    let n = paths.len();
    let registration = registration.map(std::sync::Arc::new);
    let queue = std::sync::Arc::new(std::sync::Mutex::new(
        paths
            .into_iter()
            .enumerate()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut started = 0;
    for _ in 0..threads.clamp(1, n.max(1)) {
        let (queue, tx, reg) = (queue.clone(), tx.clone(), registration.clone());
        let spawned = std::thread::Builder::new()
            .name("berth-nsread".into())
            .spawn(move || {
                // Opened before this thread leaves the caller's namespace: the ids it looks up
                // are the ones the caller's notifications carry.
                let mut own = reg.as_ref().map(|_| SyncNetlink::open());
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some((i, path)) = next else { break };
                    if let Some(r) = &reg {
                        r.register(i, own.as_mut());
                    }
                    let p = Path::new(&path);
                    // This thread moves on to the next namespace; the sockets it made here stay
                    // bound to this one.
                    let read = crate::netns::open_netns(p)
                        .and_then(|ns| crate::netns::enter(&ns, p))
                        .and_then(|()| read_namespace(subscribe));
                    if tx.send((i, path, read)).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::warn!("starting a namespace reader: {e}"),
        }
    }
    drop(tx);
    let mut out: Vec<Option<(String, Watched)>> = (0..n).map(|_| None).collect();
    if started > 0 {
        while let Some((i, path, read)) = rx.recv().await {
            let done = finish_watched(&path, read);
            if let Some(slot) = out.get_mut(i) {
                *slot = Some((path, done));
            }
        }
    }
    // Whatever no thread read (none could be started) is read one namespace at a time.
    let queue: Vec<(usize, String)> = queue
        .lock()
        .map(|mut q| q.drain(..).collect())
        .unwrap_or_default();
    for (i, path) in queue {
        if let Some(r) = &registration {
            let mut own = Some(SyncNetlink::open());
            r.register(i, own.as_mut());
        }
        let done = if subscribe {
            netns_watched(&path).await
        } else {
            netns(&path).await.map(|o| (o, None))
        };
        if let Some(slot) = out.get_mut(i) {
            *slot = Some((path, done));
        }
    }
    out.into_iter().flatten().collect()
}

/// What [`netns_watched_many`] does before it reads a namespace: looks up the namespace's id in
/// the caller's namespace (`RTM_GETNSID` of its process, one given if it has none) and hands it
/// to `register`, so a notification from the namespace is recognised from before the read on
/// and nothing after the read goes unseen. Each reader thread does it for the namespaces it
/// reads, on a socket it opened in the caller's namespace: the look-ups run beside the reads,
/// not all of them before the first read.
pub struct Registration {
    /// The process whose namespace each path is, in the order of the paths.
    pub pids: Vec<i32>,
    /// Takes a namespace's place in the paths and its id (or why there is none).
    pub register: Box<dyn Fn(usize, Result<i32>) + Send + Sync>,
}

impl Registration {
    /// Looks up the id of namespace `i` on `own` (a socket of the caller's namespace) and
    /// registers it.
    fn register(&self, i: usize, own: Option<&mut Result<SyncNetlink>>) {
        let nsid = match (own, self.pids.get(i)) {
            (Some(Ok(nl)), Some(&pid)) => crate::monitor::nsid_on(nl, pid),
            (Some(Err(e)), _) => Err(KernelError::invalid("namespace ids", e.to_string())),
            _ => Err(KernelError::invalid("namespace ids", "no process for it")),
        };
        (self.register)(i, nsid);
    }
}

/// The monitor and the observation from a namespace's [`WatchedRead`].
fn finish_watched(
    path: &str,
    result: Result<WatchedRead>,
) -> Result<(ObservedNetns, Option<Monitor>)> {
    let (sock, (links, addrs, routes)) = match result {
        Ok(read) => read,
        Err(e) if gone(&e) => return Ok((ObservedNetns::default(), None)),
        Err(e) => return Err(e),
    };
    let monitor = match sock.map(|s| s.and_then(Monitor::wrap_container)) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            tracing::debug!("no notifications from {path}: {e}");
            None
        }
    };
    let observed = ObservedNetns {
        reachable: true,
        links: assemble(links, addrs),
        default_routes: default_routes(&routes),
    };
    Ok((observed, monitor))
}

/// Whether an error opening a namespace means it no longer exists.
fn gone(e: &KernelError) -> bool {
    e.is_not_found() || matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::EINVAL))
}

/// The links of the caller's namespace (berthd's): all of them, or those named in `only`.
pub async fn host_links(
    kernel: &link::Kernel,
    only: Option<&BTreeSet<String>>,
) -> Result<BTreeMap<String, ObservedLink>> {
    let (links, addrs) = match only {
        // A handful of names: one get each beats a dump of every veth on the host.
        Some(only) if only.len() <= 16 => kernel.get_links_and_addrs(only).await?,
        _ => kernel.dump_links_and_addrs().await?,
    };
    let mut all = assemble(links, addrs);
    if let Some(only) = only {
        all.retain(|name, _| only.contains(name));
    }
    Ok(all)
}

/// Sysctls of the caller's namespace; a key that does not exist is left out.
pub fn sysctls(keys: &BTreeSet<String>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for k in keys {
        match crate::sysctl::read(None, k) {
            Ok(v) => {
                out.insert(k.clone(), v.trim().to_string());
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// berth's nft tables (`inet berth` and the anti-spoofing `bridge berth`): the rules of its own
/// chains and its elements (empty for a table that does not exist). Dumped over nf_tables
/// netlink ([`crate::nftnl::read_tables`]), or by `nft` when that cannot read them: call from
/// a blocking context.
pub fn firewall() -> Result<ObservedFirewall> {
    // Over netlink from this thread (a few ms for 10,000 published ports); nft for what is not
    // read there, and with `BERTH_NFT_EXEC=1`.
    if !crate::nft::exec_forced() {
        match crate::nftnl::read_tables() {
            Ok(Some(fw)) => return Ok(fw),
            Ok(None) => tracing::debug!(
                "berth's nft tables hold what is read with nft only (or kept changing): nft reads them"
            ),
            Err(e) => tracing::debug!("{e}: nft reads them"),
        }
    }
    firewall_with_nft()
}

/// [`firewall`] read by `nft -j list table` (the netlink read's fallback, and its reference in
/// the tests).
pub fn firewall_with_nft() -> Result<ObservedFirewall> {
    let mut items = Vec::new();
    for family in ["inet", "bridge"] {
        if let Some(mut json) = crate::nft::list_table_json(None, family, "berth")? {
            // Moved, not copied: 10,000 published ports are ~1 MB of JSON values.
            if let Some(serde_json::Value::Array(a)) =
                json.get_mut("nftables").map(serde_json::Value::take)
            {
                items.extend(a);
            }
        }
    }
    let json = serde_json::json!({ "nftables": items });
    Ok(ObservedFirewall {
        rules: berth_plan::firewall::observed_static_rules(&json),
        elements: berth_plan::firewall::parse_observed(&json),
    })
}

/// The link an overlay host's underlay is, read again without a link dump (a host with
/// 1,000 veths answers an `RTM_GETLINK` dump with ~1 MB): `Some(name)` is one `RTM_GETLINK` of
/// that interface; otherwise one `RTM_GETADDR` dump (addresses only) finds the interface holding
/// `addr`, and one `RTM_GETLINK` of its index reads it. The map holds that link alone (with its
/// addresses when found by address), or nothing when no link fits: what
/// [`berth_plan::cluster::underlay_link`] selects from, as from [`links_now`].
pub fn underlay_link_now(
    name: Option<&str>,
    addr: IpAddr,
) -> Result<BTreeMap<String, ObservedLink>> {
    let mut nl = SyncNetlink::open()?;
    if let Some(name) = name {
        let link = match nl.request(
            RouteNetlinkMessage::GetLink(link::get_link_msg(name)),
            link::GET,
            || format!("looking up {name}"),
        ) {
            Ok(answers) => link::first_link(answers, name)?,
            Err(e) if e.is_not_found() => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        return Ok(assemble(vec![link], Vec::new()));
    }
    let addrs = dump_addrs(&mut nl)?;
    let Some(index) = addrs
        .iter()
        .find(|a| link::address_of(a) == Some(addr))
        .map(|a| a.header.index)
    else {
        return Ok(BTreeMap::new());
    };
    let mut get = LinkMessage::default();
    get.header.index = index;
    let link = match nl.request(RouteNetlinkMessage::GetLink(get), link::GET, || {
        format!("looking up link {index}")
    }) {
        Ok(answers) => answers.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        }),
        // Deleted between the two requests.
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let own: Vec<AddressMessage> = addrs
        .into_iter()
        .filter(|a| a.header.index == index)
        .collect();
    Ok(link.map(|l| assemble(vec![l], own)).unwrap_or_default())
}

/// Every link of the calling thread's namespace with its MTU and addresses, read on a blocking
/// socket (`RTM_GETLINK` and `RTM_GETADDR` dumps): what berthd finds its advertised interface,
/// and so the underlay's MTU, in at start-up.
pub fn links_now() -> Result<BTreeMap<String, ObservedLink>> {
    let mut nl = SyncNetlink::open()?;
    let (links, addrs, _) = dump_all(&mut nl)?;
    Ok(assemble(links, addrs))
}

/// The addresses of interface `name` in the calling thread's namespace (what
/// `ip addr show dev NAME` lists), in the kernel's order; an error names a missing interface.
pub fn interface_addresses(name: &str) -> Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| KernelError::Io {
        op: "listing interface addresses".into(),
        error: std::io::Error::from(e),
    })?;
    let mut seen = false;
    let mut out = Vec::new();
    for a in addrs.filter(|a| a.interface_name == name) {
        seen = true;
        let Some(sa) = a.address else { continue };
        if let Some(v4) = sa.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    if !seen {
        return Err(KernelError::Io {
            op: "reading an interface's addresses".into(),
            error: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no interface {name:?} in this network namespace"),
            ),
        });
    }
    Ok(out)
}
