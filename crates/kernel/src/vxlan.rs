//! Overlay networks' VXLAN ports and their remote entries, over rtnetlink.
//!
//! What `ip link add bvx-… type vxlan id VNI local ADDR dstport 4789 nolearning proxy master
//! BRIDGE`, `bridge fdb replace MAC dev bvx-… dst VTEP self permanent` and `ip neigh replace IP
//! lladdr MAC dev bvx-… nud permanent` do, as single netlink requests.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use berth_plan::overlay::{ObservedEntries, VxlanPlan};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo as NlLinkInfo,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{KernelError, Result};
use crate::link::{get_link_msg, Kernel, CHANGE, CREATE_EXCL, CREATE_REPLACE, DUMP};
use crate::nl::SyncNetlink;

fn mac_bytes(mac: &str) -> Result<Vec<u8>> {
    berth_plan::names::parse_mac(mac)
        .map(|m| m.to_vec())
        .ok_or_else(|| {
            KernelError::invalid("programming a VXLAN entry", format!("bad MAC {mac:?}"))
        })
}

pub(crate) fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

pub(crate) fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

impl Kernel {
    /// Creates an overlay network's VXLAN device as planned: learning off (remote MACs come
    /// only from berth's static entries), ARP proxy on (ARP for a remote container is answered
    /// here from the neighbour table: no broadcast crosses hosts), berth's owner MAC, a port
    /// of the network's bridge, up — one `RTM_NEWLINK` — then its mark (`IFLA_IFALIAS`).
    pub async fn create_vxlan(&self, plan: &VxlanPlan) -> Result<()> {
        self.create_vxlan_in(plan, self, None).await
    }

    /// Like [`Kernel::create_vxlan`], for a bridge that lives in another namespace: the
    /// device is created by this kernel's socket — so its UDP socket binds in *this*
    /// namespace, on the underlay (`vxlan_newlink` takes the requester's namespace as the
    /// socket's) — and placed in the namespace at `netns` by the same `RTM_NEWLINK`
    /// (`IFLA_NET_NS_FD`), where it is made a port of the bridge (`IFLA_MASTER` is looked up
    /// in the device's new namespace) and up; `there` (a kernel bound to `netns`) then marks
    /// it. Docker's classic overlay does the same in two steps (create, then `ip link set
    /// netns`); one request leaves no moment where the device is in the wrong namespace.
    pub async fn create_vxlan_into(
        &self,
        plan: &VxlanPlan,
        netns: &Path,
        there: &Kernel,
    ) -> Result<()> {
        let ns = File::open(netns).map_err(|e| {
            KernelError::io(
                format!(
                    "opening network namespace {} for vxlan {}",
                    netns.display(),
                    plan.name
                ),
                e,
            )
        })?;
        self.create_vxlan_in(plan, there, Some(&ns)).await
    }

    /// Body of both: the bridge is looked up and the device marked through `there`; with
    /// `ns` the creating request moves the device into it.
    async fn create_vxlan_in(
        &self,
        plan: &VxlanPlan,
        there: &Kernel,
        ns: Option<&File>,
    ) -> Result<()> {
        let bridge = there
            .link_by_name(&plan.bridge, || {
                format!("looking up bridge {}", plan.bridge)
            })
            .await?;
        let mut data = vec![
            InfoVxlan::Id(plan.vni),
            InfoVxlan::Port(plan.port),
            InfoVxlan::Learning(false),
            InfoVxlan::Proxy(true),
        ];
        match plan.local {
            IpAddr::V4(v4) => data.push(InfoVxlan::Local(v4)),
            IpAddr::V6(v6) => data.push(InfoVxlan::Local6(v6)),
        }
        let mut msg = crate::link::marked_port_msg(
            &plan.name,
            plan.mtu,
            bridge.header.index,
            vec![
                NlLinkInfo::Kind(InfoKind::Vxlan),
                NlLinkInfo::Data(InfoData::Vxlan(data)),
            ],
            true,
        );
        if let Some(ns) = ns {
            msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        self.request(RouteNetlinkMessage::NewLink(msg), CREATE_EXCL, || {
            format!(
                "creating vxlan {} (VNI {}, local {}, port {}) on bridge {}",
                plan.name, plan.vni, plan.local, plan.port, plan.bridge
            )
        })
        .await?;
        let link = there
            .link_by_name(&plan.name, || format!("looking up vxlan {}", plan.name))
            .await?;
        let mut set = crate::link::link_up_msg(link.header.index);
        set.attributes
            .push(LinkAttribute::IfAlias(plan.alias.clone()));
        there
            .request(RouteNetlinkMessage::SetLink(set), CHANGE, || {
                format!("marking vxlan {}", plan.name)
            })
            .await?;
        tracing::debug!(vxlan = %plan.name, vni = plan.vni, "created vxlan");
        Ok(())
    }

    /// The permanent remote entries of VXLAN device `dev`: forwarding entries with a
    /// destination (`bridge fdb show dev DEV` lines with `dst`) and permanent neighbours.
    pub async fn vxlan_entries(&self, dev: &str) -> Result<ObservedEntries> {
        let link = self
            .link_by_name(dev, || format!("looking up vxlan {dev}"))
            .await?;
        let index = link.header.index;
        // An observation (every pass, the drift repair's) refreshes the index the event path
        // uses.
        self.cache_vxlan_index(dev, Some(index));
        let mut out = ObservedEntries::default();
        // Neighbours of both families: a dual-stack network's remote containers have an
        // IPv4 (ARP) and an IPv6 (NDP) entry each.
        for fam in [
            AddressFamily::Bridge,
            AddressFamily::Inet,
            AddressFamily::Inet6,
        ] {
            for (dst, mac, flags) in self
                .permanent_neighbours(fam, index, || format!("listing entries of {dev}"))
                .await?
            {
                let m = berth_plan::names::fmt_mac(mac);
                match fam {
                    AddressFamily::Bridge if flags.contains(NeighbourFlags::Own) => {
                        out.fdb.insert(m, dst);
                    }
                    AddressFamily::Inet | AddressFamily::Inet6 => {
                        out.neigh.insert(dst, m);
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The permanent neighbour entries of family `fam` (`AF_BRIDGE`: forwarding entries) on
    /// link `index` that have a destination and a MAC: (destination, MAC, flags). `op` says
    /// what for, in errors.
    pub(crate) async fn permanent_neighbours(
        &self,
        fam: AddressFamily,
        index: u32,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<(IpAddr, [u8; 6], NeighbourFlags)>> {
        let mut req = NeighbourMessage::default();
        req.header.family = fam;
        let answers = self
            .request(RouteNetlinkMessage::GetNeighbour(req), DUMP, op)
            .await?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.ifindex != index || n.header.state != NeighbourState::Permanent {
                continue;
            }
            let mut dst = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        dst = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        dst = Some(IpAddr::V6(*v6))
                    }
                    // In an AF_BRIDGE message the parser cannot know the address family
                    // of NDA_DST (the VTEP): 4 bytes are IPv4, 16 IPv6.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = match b.len() {
                            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                            _ => None,
                        }
                    }
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if let (Some(d), Some(m)) = (dst, mac) {
                out.push((d, m, n.header.flags));
            }
        }
        Ok(out)
    }

    /// Adds, replaces and removes remote entries of VXLAN device `dev`: every request in one
    /// batch on a blocking socket (the kernel handles a request in the `sendmsg` that carries
    /// it, so this never sleeps but for the RTNL lock), to the port's cached index. Another
    /// host's endpoint event sets the entries of one MAC and one address: on the async
    /// connection its lookup and two requests were three round trips through the connection
    /// task, each a wake-up of another task on a busy host. A request that fails does not
    /// stop the others (as a batch does); the first error is returned.
    pub async fn set_vxlan_entries(
        &self,
        dev: &str,
        fdb_add: &[(String, IpAddr)],
        fdb_del: &[String],
        neigh_add: &[(IpAddr, String)],
        neigh_del: &[IpAddr],
    ) -> Result<()> {
        let mut nl = self.sync_socket()?;
        let entries = Entries {
            fdb_add,
            fdb_del,
            neigh_add,
            neigh_del,
        };
        let r = self.set_vxlan_entries_on(&mut nl, dev, &entries);
        // After a socket error an answer could be left unread in it: not kept then.
        if !matches!(
            &r,
            Err(KernelError::Netlink { .. }) | Err(KernelError::Invalid { .. })
        ) {
            self.keep_socket(nl);
        }
        r
    }

    fn set_vxlan_entries_on(&self, nl: &mut SyncNetlink, dev: &str, e: &Entries) -> Result<()> {
        let what = || format!("setting the remote entries of {dev}");
        let lookup = |nl: &mut SyncNetlink| -> Result<u32> {
            let index = nl
                .link_brief(get_link_msg(dev), true, || {
                    format!("looking up vxlan {dev}")
                })?
                .index;
            self.cache_vxlan_index(dev, Some(index));
            Ok(index)
        };
        let cached = self.cached_vxlan_index(dev);
        let index = match cached {
            Some(i) => i,
            None => lookup(nl)?,
        };
        let (msgs, meant) = e.requests(index, dev)?;
        let mut results = nl.batch(msgs, what)?;
        if cached.is_some()
            && results
                .iter()
                .any(|r| matches!(r, Err(e) if e.raw_os_error() == Some(libc::ENODEV)))
        {
            // The port is gone or was made again under a new index: look it up once more
            // (what a removal of a missing entry would not tell: ENODEV is "missing" to it).
            self.cache_vxlan_index(dev, None);
            let index = lookup(nl)?;
            let (msgs, _) = e.requests(index, dev)?;
            results = nl.batch(msgs, what)?;
        }
        for (r, (removal, op)) in results.into_iter().zip(meant) {
            let Err(err) = r else { continue };
            let err = KernelError::netlink(op, err);
            if !(removal && err.is_not_found()) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// The permanent entries of each of `devs` that exists.
    pub async fn vxlans_entries(
        &self,
        devs: &std::collections::BTreeSet<String>,
    ) -> Result<BTreeMap<String, ObservedEntries>> {
        let mut out = BTreeMap::new();
        for d in devs {
            match self.vxlan_entries(d).await {
                Ok(e) => {
                    out.insert(d.clone(), e);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// The remote entries one [`Kernel::set_vxlan_entries`] adds and removes.
struct Entries<'a> {
    fdb_add: &'a [(String, IpAddr)],
    fdb_del: &'a [String],
    neigh_add: &'a [(IpAddr, String)],
    neigh_del: &'a [IpAddr],
}

impl Entries<'_> {
    /// The requests for the port at `index`, in the order one by one would have them
    /// (removals first), each with whether it is a removal (a missing entry is no error) and
    /// what it does, for its error.
    #[allow(clippy::type_complexity)]
    fn requests(
        &self,
        index: u32,
        dev: &str,
    ) -> Result<(Vec<(RouteNetlinkMessage, u16)>, Vec<(bool, String)>)> {
        let fdb_msg = |mac: &str| -> Result<NeighbourMessage> {
            let mut m = NeighbourMessage::default();
            m.header.family = AddressFamily::Bridge;
            m.header.ifindex = index;
            m.header.state = NeighbourState::Permanent;
            // NTF_SELF: the entry belongs to the VXLAN device itself (its remote table), not
            // to the bridge it is a port of.
            m.header.flags = NeighbourFlags::Own;
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac_bytes(mac)?));
            Ok(m)
        };
        let neigh_msg = |ip: IpAddr| {
            let mut m = NeighbourMessage::default();
            m.header.family = family(ip);
            m.header.ifindex = index;
            m.header.state = NeighbourState::Permanent;
            m.attributes
                .push(NeighbourAttribute::Destination(neigh_addr(ip)));
            m
        };
        let mut msgs = Vec::new();
        let mut meant = Vec::new();
        for mac in self.fdb_del {
            msgs.push((RouteNetlinkMessage::DelNeighbour(fdb_msg(mac)?), CHANGE));
            meant.push((true, format!("removing forwarding entry {mac} from {dev}")));
            // The bridge's own entry for that MAC on this port, learned from the remote
            // container's frames, goes too: addresses are reused and a container's MAC derives
            // from its address, so the next holder may be a container on *this* host, and a
            // bridge that still believed the MAC lives behind the VXLAN port would drop every
            // frame for it until that container sends one (up to the bridge's ageing time).
            // The kernel removes it only if it is on this port (a MAC already learned on a
            // local veth stays).
            let mut m = fdb_msg(mac)?;
            m.header.flags = NeighbourFlags::Controller;
            m.header.state = NeighbourState::None;
            msgs.push((RouteNetlinkMessage::DelNeighbour(m), CHANGE));
            meant.push((true, format!("removing the bridge's entry {mac} on {dev}")));
        }
        for ip in self.neigh_del {
            msgs.push((RouteNetlinkMessage::DelNeighbour(neigh_msg(*ip)), CHANGE));
            meant.push((true, format!("removing neighbour {ip} from {dev}")));
        }
        for (mac, vtep) in self.fdb_add {
            let mut m = fdb_msg(mac)?;
            m.attributes
                .push(NeighbourAttribute::Destination(neigh_addr(*vtep)));
            msgs.push((RouteNetlinkMessage::NewNeighbour(m), CREATE_REPLACE));
            meant.push((false, format!("forwarding {mac} on {dev} to {vtep}")));
        }
        for (ip, mac) in self.neigh_add {
            let mut m = neigh_msg(*ip);
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac_bytes(mac)?));
            msgs.push((RouteNetlinkMessage::NewNeighbour(m), CREATE_REPLACE));
            meant.push((false, format!("neighbour {ip} → {mac} on {dev}")));
        }
        Ok((msgs, meant))
    }
}

impl Kernel {
    /// Configures berth's WireGuard tun device `name` (created by [`crate::sys::open_tun`]):
    /// its MTU, its ownership mark, up, and exactly the address `addr` (its prefix route sends
    /// every other host's tunnel address into the device).
    pub async fn configure_tunnel(
        &self,
        name: &str,
        addr: ipnet::IpNet,
        mtu: u32,
        alias: &str,
    ) -> Result<()> {
        let link = self
            .link_by_name(name, || format!("looking up tun device {name}"))
            .await?;
        let index = link.header.index;
        let mut set = crate::link::link_up_msg(index);
        set.attributes.push(LinkAttribute::Mtu(mtu));
        set.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.request(RouteNetlinkMessage::SetLink(set), CHANGE, || {
            format!("setting mtu {mtu}, mark and up on tun device {name}")
        })
        .await?;
        self.request(
            RouteNetlinkMessage::NewAddress(crate::link::addr_msg(index, &addr)),
            CREATE_REPLACE,
            || format!("adding address {addr} to tun device {name}"),
        )
        .await?;
        Ok(())
    }
}
