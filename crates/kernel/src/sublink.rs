//! Container interfaces on a host interface (macvlan, ipvlan): one `RTM_NEWLINK` in berthd's
//! namespace creates the link on its parent (`IFLA_LINK`) directly inside the container's
//! namespace (`IFLA_NET_NS_FD`) with its name and MAC, so it never exists in berthd's
//! namespace; a thread that entered the container namespace meanwhile brings it up and gives
//! it its addresses and routes. berth never changes the parent.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_plan::model::{ParentKind, ParentPlan, ShimPlan, SublinkKind, SublinkPlan};
use ipnet::IpNet;
use rtnetlink::packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoVlan, IpVlanFlags, IpVlanMode, LinkAttribute,
    LinkInfo as NlLinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::error::{KernelError, Result};
use crate::gate::LinkGate;
use crate::link::{
    delete_quietly, endpoint_on_thread, get_link_msg, parse_mac, ContainerSide, Kernel, CHANGE,
    CREATE_EXCL, MAIN_TABLE,
};
use crate::netns;
use crate::nl::SyncNetlink;

/// The `RTM_NEWLINK` that creates `plan`'s interface on the parent with index `parent` inside
/// the namespace open as `ns_fd`.
pub fn sublink_msg(plan: &SublinkPlan, parent: u32, ns_fd: RawFd) -> Result<LinkMessage> {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(plan.ifname.clone()),
        LinkAttribute::Link(parent),
        LinkAttribute::NetNsFd(ns_fd),
    ];
    if let Some(mac) = plan.mac.as_deref() {
        if let Some(mac) = parse_mac(mac)? {
            msg.attributes.push(LinkAttribute::Address(mac));
        }
    }
    let info = match plan.kind {
        SublinkKind::Macvlan(mode) => vec![
            NlLinkInfo::Kind(InfoKind::MacVlan),
            NlLinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::from(mode),
            )])),
        ],
        SublinkKind::Ipvlan(mode, flags) => vec![
            NlLinkInfo::Kind(InfoKind::IpVlan),
            NlLinkInfo::Data(InfoData::IpVlan(vec![
                InfoIpVlan::Mode(IpVlanMode::from(mode)),
                InfoIpVlan::Flags(IpVlanFlags::from_bits_retain(flags)),
            ])),
        ],
    };
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    Ok(msg)
}

impl Kernel {
    /// Creates `plan`'s interface in its container namespace and configures it there (see the
    /// module doc). On a failure after the link exists, it is deleted again.
    pub async fn create_sublink(&self, plan: &SublinkPlan) -> Result<()> {
        self.create_sublink_gated(plan, None).await
    }

    /// [`Kernel::create_sublink`], with the interface brought up only once `gate` is open (and
    /// deleted again if it opens with an error): see [`crate::gate`].
    pub async fn create_sublink_gated(
        &self,
        plan: &SublinkPlan,
        gate: Option<LinkGate>,
    ) -> Result<()> {
        let kind = plan.kind.kind();
        let what = || {
            format!(
                "creating {kind} {} on {} in {}",
                plan.ifname, plan.parent, plan.netns
            )
        };
        let started = std::time::Instant::now();
        let netns_path = PathBuf::from(&plan.netns);
        let ns = File::open(&netns_path).map_err(|e| {
            KernelError::io(format!("opening network namespace {}", plan.netns), e).context(&what())
        })?;
        let side = ContainerSide {
            netns: netns_path.clone(),
            disable_ipv6: plan.disable_ipv6,
            announce: plan.announce,
            // Its parent is up and forwarding already: the announcement at link up arrives.
            reannounce: false,
            host_up: None,
            ifname: plan.ifname.clone(),
            addrs: plan.addrs.clone(),
            routes: plan.routes.clone(),
            gate,
        };
        let host_nl = self.sync_socket().map_err(|e| e.context(&what()))?;
        // The rollback deletes the link in the container namespace, which it enters first
        // (the thread may not have yet): never a host link that has the same name.
        let undo_ns = ns.try_clone().map_err(|e| {
            KernelError::io(format!("duplicating fd of {}", plan.netns), e).context(&what())
        })?;
        let (undo_path, undo_name) = (netns_path.clone(), plan.ifname.clone());
        let sub = plan.clone();
        let (host_nl, times) = endpoint_on_thread(
            "berth-sublink",
            host_nl,
            ns,
            side,
            move |nl, ns, created| {
                let parent = nl.link_brief(get_link_msg(&sub.parent), true, || {
                    format!("looking up parent interface {}", sub.parent)
                })?;
                let msg = sublink_msg(&sub, parent.index, ns.as_raw_fd())?;
                nl.request(RouteNetlinkMessage::NewLink(msg), CREATE_EXCL, || {
                    format!(
                        "creating {} {} on {}",
                        sub.kind.kind(),
                        sub.ifname,
                        sub.parent
                    )
                })?;
                *created = true;
                Ok(())
            },
            move |_| {
                if crate::netns::enter(&undo_ns, &undo_path).is_ok() {
                    if let Ok(mut nl) = SyncNetlink::open() {
                        delete_quietly(&mut nl, &undo_name);
                    }
                }
            },
        )
        .await
        .map_err(|e| e.context(&what()))?;
        self.keep_socket(host_nl);
        tracing::debug!(
            ifname = %plan.ifname,
            parent = %plan.parent,
            kind,
            elapsed_us = started.elapsed().as_micros() as u64,
            thread_start_us = times.start_us,
            host_us = times.host_us,
            container_us = times.container_us,
            gate_wait_us = times.gate_wait_us,
            "container interface created"
        );
        Ok(())
    }
}

/// The `RTM_NEWLINK` that creates parent link `plan` (`base` is the index of an 802.1Q
/// sub-interface's base). A dummy link gets berth's owner MAC in the creating request (marked
/// from its first moment); a VLAN sub-interface keeps its base's MAC (the LAN knows the host
/// by it) and is marked by its alias right after.
pub fn parent_msg(plan: &ParentPlan, base: Option<u32>) -> Result<LinkMessage> {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![LinkAttribute::IfName(plan.name.clone())];
    let info = match &plan.kind {
        ParentKind::Vlan { vid, .. } => {
            let base = base.ok_or_else(|| KernelError::Invalid {
                what: format!("creating {}", plan.name),
                reason: "no base interface index".into(),
            })?;
            msg.attributes.push(LinkAttribute::Link(base));
            vec![
                NlLinkInfo::Kind(InfoKind::Vlan),
                NlLinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(*vid)])),
            ]
        }
        ParentKind::Dummy => {
            msg.attributes.push(LinkAttribute::Address(
                berth_plan::names::owner_mac(&plan.name).to_vec(),
            ));
            vec![NlLinkInfo::Kind(InfoKind::Dummy)]
        }
    };
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    Ok(msg)
}

impl Kernel {
    /// Whether link `name` exists in berthd's namespace.
    async fn link_exists(&self, name: &str) -> Result<bool> {
        match self
            .link_by_name(name, || format!("looking up {name}"))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ip link set NAME alias ALIAS up`: berth's mark and the up state in one request.
    async fn mark_up(&self, name: &str, alias: &str) -> Result<()> {
        let mut msg = get_link_msg(name);
        msg.header.flags = rtnetlink::packet_route::link::LinkFlags::Up;
        msg.header.change_mask = rtnetlink::packet_route::link::LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.request(RouteNetlinkMessage::NewLink(msg), CHANGE, || {
            format!("marking and bringing up {name}")
        })
        .await?;
        Ok(())
    }

    /// Makes a parent link berth owns exist (see [`berth_plan::host::StepOp::EnsureParent`]):
    /// `ip link add link BASE name BASE.VID type vlan id VID` (or `ip link add NAME address
    /// OWNER_MAC type dummy`), then `ip link set NAME alias berth:parent:NAME up`. An internal
    /// segment also loses IPv6 (no link-local address: the host has no business on it).
    pub async fn ensure_parent(&self, plan: &ParentPlan) -> Result<()> {
        let what = || format!("setting up parent link {}", plan.name);
        if !self
            .link_exists(&plan.name)
            .await
            .map_err(|e| e.context(&what()))?
        {
            let base = match &plan.kind {
                ParentKind::Vlan { base, .. } => Some(
                    self.link_by_name(base, || format!("looking up base interface {base}"))
                        .await
                        .map_err(|e| e.context(&what()))?
                        .header
                        .index,
                ),
                ParentKind::Dummy => None,
            };
            let msg = parent_msg(plan, base).map_err(|e| e.context(&what()))?;
            self.request(RouteNetlinkMessage::NewLink(msg), CREATE_EXCL, what)
                .await?;
            if plan.kind == ParentKind::Dummy {
                let key = format!("net.ipv6.conf.{}.disable_ipv6", plan.name);
                if let Err(e) = crate::sysctl::write(None, &key, "1") {
                    tracing::debug!(link = %plan.name, "{key}: {e}");
                }
            }
        }
        self.mark_up(&plan.name, &plan.alias).await?;
        Ok(())
    }
}

impl Kernel {
    /// Makes a macvlan network's host shim exist (see [`berth_plan::host::StepOp::EnsureShim`]).
    pub async fn ensure_shim(&self, plan: &ShimPlan) -> Result<()> {
        let what = || format!("setting up host shim {} on {}", plan.name, plan.parent);
        if !self
            .link_exists(&plan.name)
            .await
            .map_err(|e| e.context(&what()))?
        {
            let parent = self
                .link_by_name(&plan.parent, || {
                    format!("looking up parent interface {}", plan.parent)
                })
                .await
                .map_err(|e| e.context(&what()))?;
            let mut msg = LinkMessage::default();
            msg.attributes = vec![
                LinkAttribute::IfName(plan.name.clone()),
                LinkAttribute::Link(parent.header.index),
                // berth's owner MAC: marks the link as berth's in the request that creates it.
                LinkAttribute::Address(berth_plan::names::owner_mac(&plan.name).to_vec()),
                LinkAttribute::LinkInfo(vec![
                    NlLinkInfo::Kind(InfoKind::MacVlan),
                    NlLinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                        MacVlanMode::Bridge,
                    )])),
                ]),
            ];
            self.request(RouteNetlinkMessage::NewLink(msg), CREATE_EXCL, what)
                .await?;
        }
        self.mark_up(&plan.name, &plan.alias).await?;
        let link = self
            .link_by_name(&plan.name, || format!("looking up {}", plan.name))
            .await?;
        for r in &plan.routes {
            let mut m = RouteMessage::default();
            m.header.address_family = match r.dst {
                IpNet::V4(_) => AddressFamily::Inet,
                IpNet::V6(_) => AddressFamily::Inet6,
            };
            m.header.destination_prefix_length = r.dst.prefix_len();
            m.header.table = MAIN_TABLE;
            m.header.protocol = RouteProtocol::Boot;
            m.header.scope = RouteScope::Link;
            m.header.kind = RouteType::Unicast;
            m.attributes = vec![
                RouteAttribute::Destination(r.dst.trunc().addr().into()),
                RouteAttribute::PrefSource(r.src.into()),
                RouteAttribute::Oif(link.header.index),
            ];
            self.request(
                RouteNetlinkMessage::NewRoute(m),
                crate::link::CREATE_REPLACE,
                || format!("adding route {} dev {} src {}", r.dst, plan.name, r.src),
            )
            .await?;
        }
        Ok(())
    }

    /// Destinations of the main-table routes through each of `names` (links of this namespace).
    pub async fn link_routes(
        &self,
        names: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, Vec<IpNet>>> {
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return Ok(out);
        }
        let by_index: HashMap<u32, String> = self
            .list_links()
            .await?
            .into_iter()
            .filter(|l| names.contains(&l.name))
            .map(|l| (l.index, l.name))
            .collect();
        for r in self.main_routes().await? {
            let Some(name) = r.oif.and_then(|i| by_index.get(&i)) else {
                continue;
            };
            // Only routes with a destination of their own: a default route is not the shim's.
            if let Some(Ok(net)) = r.dst.map(|d| IpNet::new(d, r.prefix_len)) {
                out.entry(name.clone()).or_insert_with(Vec::new).push(net);
            }
        }
        Ok(out)
    }
}

/// Inside the namespace at `netns`: deletes `ifname`. `Ok` when it does not exist.
pub async fn delete_container_link(netns: &Path, ifname: &str) -> Result<()> {
    let name = ifname.to_string();
    let shown = netns.display().to_string();
    netns::run_in_netns_async(netns, move || -> Result<()> {
        let mut nl = SyncNetlink::open()?;
        match nl.request(
            RouteNetlinkMessage::DelLink(get_link_msg(&name)),
            CHANGE,
            || format!("deleting {name}"),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await?
    .map_err(|e| e.context(&format!("in {shown}")))
}

/// Whether the kernel of the calling thread's namespace knows link kind `kind` (`macvlan`,
/// `ipvlan`): an `RTM_NEWLINK` of that kind without a parent fails with `EOPNOTSUPP` when the
/// kind is unknown (no module) and with another error (`EINVAL`: no parent) when it is known.
/// Nothing is ever created.
pub fn kind_supported(kind: &str) -> Result<bool> {
    let mut nl = SyncNetlink::open()?;
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName("berthprobe0".into()),
        LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::from(kind))]),
    ];
    match nl.request(RouteNetlinkMessage::NewLink(msg), CREATE_EXCL, || {
        format!("probing link kind {kind}")
    }) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(_) => Ok(true),
        Ok(_) => {
            // Cannot happen for macvlan/ipvlan (they need a parent); never leave it behind.
            let _ = nl.request(
                RouteNetlinkMessage::DelLink(get_link_msg("berthprobe0")),
                CHANGE,
                || "removing probe link".to_string(),
            );
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plan::model::SublinkKind;
    use rtnetlink::packet_core::Emitable;

    fn plan(kind: SublinkKind, mac: Option<&str>) -> SublinkPlan {
        SublinkPlan {
            parent: "lan0".into(),
            kind,
            netns: "/proc/1/ns/net".into(),
            ifname: "eth0".into(),
            mac: mac.map(str::to_string),
            addrs: vec![],
            routes: vec![],
            disable_ipv6: true,
            announce: Default::default(),
        }
    }

    fn bytes(msg: &LinkMessage) -> Vec<u8> {
        let mut b = vec![0u8; msg.buffer_len()];
        msg.emit(&mut b);
        b
    }

    /// An rtattr: u16 length (header + payload, unpadded), u16 type, payload, padding to 4.
    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(((4 + payload.len()) as u16).to_ne_bytes());
        v.extend(ty.to_ne_bytes());
        v.extend(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// struct ifinfomsg, all zero: family 0, pad, type 0, index 0, flags 0, change 0.
    fn ifinfomsg() -> Vec<u8> {
        vec![0u8; 16]
    }

    // linux/if_link.h
    const IFLA_ADDRESS: u16 = 1;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINK: u16 = 5;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_NET_NS_FD: u16 = 28;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const IFLA_MACVLAN_MODE: u16 = 1;
    const IFLA_IPVLAN_MODE: u16 = 1;
    const IFLA_IPVLAN_FLAGS: u16 = 2;

    fn head(mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut v = ifinfomsg();
        v.extend(nla(IFLA_IFNAME, b"eth0\0"));
        v.extend(nla(IFLA_LINK, &7u32.to_ne_bytes()));
        v.extend(nla(IFLA_NET_NS_FD, &9i32.to_ne_bytes()));
        if let Some(m) = mac {
            v.extend(nla(IFLA_ADDRESS, &m));
        }
        v
    }

    /// `IFLA_LINKINFO { IFLA_INFO_KIND "kind\0", IFLA_INFO_DATA { data } }`. The nests are sent
    /// without `NLA_F_NESTED` and the kind NUL-terminated, as iproute2 does: rtnetlink parses
    /// both with the deprecated (lenient) nest parser and `IFLA_INFO_KIND` is an `NLA_STRING`.
    fn linkinfo(kind: &[u8], data: Vec<u8>) -> Vec<u8> {
        let mut k = kind.to_vec();
        k.push(0);
        let mut inner = nla(IFLA_INFO_KIND, &k);
        inner.extend(nla(IFLA_INFO_DATA, &data));
        nla(IFLA_LINKINFO, &inner)
    }

    #[test]
    fn macvlan_message_is_byte_exact() {
        let p = plan(SublinkKind::Macvlan(4), Some("02:42:c0:a8:01:c8"));
        let got = bytes(&sublink_msg(&p, 7, 9).expect("message"));
        let mut want = head(Some([0x02, 0x42, 0xc0, 0xa8, 0x01, 0xc8]));
        want.extend(linkinfo(
            b"macvlan",
            nla(IFLA_MACVLAN_MODE, &4u32.to_ne_bytes()),
        ));
        assert_eq!(got, want);
    }

    #[test]
    fn parent_messages_are_byte_exact() {
        const IFLA_VLAN_ID: u16 = 1;
        // ip link add link <7> name eth0.10 type vlan id 10
        let p = ParentPlan {
            name: "eth0.10".into(),
            kind: ParentKind::Vlan {
                base: "eth0".into(),
                vid: 10,
            },
            alias: "berth:parent:eth0.10".into(),
        };
        let got = bytes(&parent_msg(&p, Some(7)).expect("message"));
        let mut want = ifinfomsg();
        want.extend(nla(IFLA_IFNAME, b"eth0.10\0"));
        want.extend(nla(IFLA_LINK, &7u32.to_ne_bytes()));
        want.extend(linkinfo(b"vlan", nla(IFLA_VLAN_ID, &10u16.to_ne_bytes())));
        assert_eq!(got, want);
        assert!(parent_msg(&p, None).is_err(), "a VLAN needs its base");

        // ip link add dm-0123456789ab address <owner MAC> type dummy
        let p = ParentPlan {
            name: "dm-0123456789ab".into(),
            kind: ParentKind::Dummy,
            alias: "berth:parent:dm-0123456789ab".into(),
        };
        let got = bytes(&parent_msg(&p, None).expect("message"));
        let mut want = ifinfomsg();
        want.extend(nla(IFLA_IFNAME, b"dm-0123456789ab\0"));
        want.extend(nla(
            IFLA_ADDRESS,
            &berth_plan::names::owner_mac("dm-0123456789ab"),
        ));
        let mut k = b"dummy".to_vec();
        k.push(0);
        want.extend(nla(IFLA_LINKINFO, &nla(IFLA_INFO_KIND, &k)));
        assert_eq!(got, want);
    }

    #[test]
    fn ipvlan_message_is_byte_exact() {
        // l3 mode (1), private flag (1); ipvlan has its parent's MAC: no IFLA_ADDRESS.
        let p = plan(SublinkKind::Ipvlan(1, 1), None);
        let got = bytes(&sublink_msg(&p, 7, 9).expect("message"));
        let mut data = nla(IFLA_IPVLAN_MODE, &1u16.to_ne_bytes());
        data.extend(nla(IFLA_IPVLAN_FLAGS, &1u16.to_ne_bytes()));
        let mut want = head(None);
        want.extend(linkinfo(b"ipvlan", data));
        assert_eq!(got, want);

        // l2 (0), bridge (no flag bits).
        let p = plan(SublinkKind::Ipvlan(0, 0), None);
        let got = bytes(&sublink_msg(&p, 7, 9).expect("message"));
        let mut data = nla(IFLA_IPVLAN_MODE, &0u16.to_ne_bytes());
        data.extend(nla(IFLA_IPVLAN_FLAGS, &0u16.to_ne_bytes()));
        let mut want = head(None);
        want.extend(linkinfo(b"ipvlan", data));
        assert_eq!(got, want);
    }
}
