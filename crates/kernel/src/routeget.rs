//! The kernel's own routing decision for one packet (`ip route get`): `RTM_GETROUTE` with
//! `RTA_DST` (and `RTA_SRC`/`RTA_IIF` for a packet that came in on an interface, which makes
//! the kernel run its input lookup, forwarding checks included). `berth trace` shows it next
//! to the nftables trace.

use std::net::IpAddr;

use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::link::Kernel;

/// What the kernel decided for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAnswer {
    /// `unicast`, `local`, `blackhole`, `unreachable`, `prohibit`, …
    pub kind: String,
    /// The interface it leaves through.
    pub dev: Option<String>,
    /// The next hop, when not on-link.
    pub via: Option<IpAddr>,
    /// The source address the host would use.
    pub prefsrc: Option<IpAddr>,
}

impl RouteAnswer {
    /// As `ip route get` prints it: `10.1.0.2 dev berth-… src 10.1.0.1` (`local 192.0.2.1 dev
    /// lo`, `unreachable 10.9.9.9`).
    pub fn text(&self, dst: IpAddr) -> String {
        let mut s = if self.kind == "unicast" {
            dst.to_string()
        } else {
            format!("{} {dst}", self.kind)
        };
        if let Some(v) = self.via {
            s.push_str(&format!(" via {v}"));
        }
        if let Some(d) = &self.dev {
            s.push_str(&format!(" dev {d}"));
        }
        if let Some(p) = self.prefsrc {
            s.push_str(&format!(" src {p}"));
        }
        s
    }
}

/// The `RTM_GETROUTE` request for `dst` (from `src`, in on interface index `iif`).
pub fn route_get_msg(dst: IpAddr, src: Option<IpAddr>, iif: Option<u32>) -> RouteMessage {
    let mut m = RouteMessage::default();
    let (family, len) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    m.header = RouteHeader {
        address_family: family,
        destination_prefix_length: len,
        ..RouteHeader::default()
    };
    m.attributes.push(RouteAttribute::Destination(addr(dst)));
    if let Some(s) = src.filter(|s| s.is_ipv4() == dst.is_ipv4()) {
        m.header.source_prefix_length = len;
        m.attributes.push(RouteAttribute::Source(addr(s)));
    }
    if let Some(i) = iif {
        m.attributes.push(RouteAttribute::Iif(i));
    }
    m
}

fn addr(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v) => RouteAddress::Inet(v),
        IpAddr::V6(v) => RouteAddress::Inet6(v),
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

impl Kernel {
    /// `ip route get DST [from SRC iif IIF]` in berthd's namespace. `iif` is the name of the
    /// interface the packet came in on (`None`: a packet the host itself sends).
    pub async fn route_get(
        &self,
        dst: IpAddr,
        src: Option<IpAddr>,
        iif: Option<&str>,
    ) -> Result<RouteAnswer> {
        let iif_index = match iif {
            Some(name) => Some(
                self.link_by_name(name, || format!("looking up {name}"))
                    .await?
                    .header
                    .index,
            ),
            None => None,
        };
        // An input lookup needs the source; without one it is an output lookup.
        let iif_index = iif_index.filter(|_| src.is_some());
        let msg = route_get_msg(dst, src, iif_index);
        let answers = self
            .request(
                RouteNetlinkMessage::GetRoute(msg),
                rtnetlink::packet_core::NLM_F_REQUEST,
                || format!("looking up the route to {dst}"),
            )
            .await?;
        let r = answers
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| crate::error::KernelError::NotFound {
                what: format!("the route to {dst}"),
            })?;
        let mut a = RouteAnswer {
            kind: match r.header.kind {
                RouteType::Unicast => "unicast",
                RouteType::Local => "local",
                RouteType::Broadcast => "broadcast",
                RouteType::Multicast => "multicast",
                RouteType::BlackHole => "blackhole",
                RouteType::Unreachable => "unreachable",
                RouteType::Prohibit => "prohibit",
                _ => "other",
            }
            .to_string(),
            dev: None,
            via: None,
            prefsrc: None,
        };
        for at in &r.attributes {
            match at {
                RouteAttribute::Oif(i) => a.dev = self.link_name(*i).await.ok(),
                RouteAttribute::Gateway(g) => a.via = ip_of(g),
                RouteAttribute::PrefSource(p) => a.prefsrc = ip_of(p),
                _ => {}
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::Emitable;

    #[test]
    fn request_is_ip_route_get() {
        // ip route get 10.1.0.2 from 198.18.0.2 iif <3>
        let m = route_get_msg(
            "10.1.0.2".parse().expect("ip"),
            Some("198.18.0.2".parse().expect("ip")),
            Some(3),
        );
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        // struct rtmsg: family 2, dst_len 32, src_len 32, tos 0, table 0, protocol 0, scope 0,
        // type 0, flags 0 (u32).
        assert_eq!(&b[..12], &[2, 32, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // RTA_DST (1), RTA_SRC (2), RTA_IIF (3).
        assert_eq!(&b[12..20], &[8, 0, 1, 0, 10, 1, 0, 2]);
        assert_eq!(&b[20..28], &[8, 0, 2, 0, 198, 18, 0, 2]);
        assert_eq!(&b[28..32], &[8, 0, 3, 0]);
        assert_eq!(b.len(), 36);
        // An IPv6 destination ignores an IPv4 source.
        let m = route_get_msg(
            "fd00::1".parse().expect("ip"),
            Some("10.0.0.1".parse().expect("ip")),
            None,
        );
        assert_eq!(m.header.destination_prefix_length, 128);
        assert_eq!(m.header.source_prefix_length, 0);
        assert_eq!(m.attributes.len(), 1);
    }

    #[test]
    fn text_is_like_ip_route_get() {
        let a = RouteAnswer {
            kind: "unicast".into(),
            dev: Some("berth-1".into()),
            via: None,
            prefsrc: Some("10.1.0.1".parse().expect("ip")),
        };
        assert_eq!(
            a.text("10.1.0.2".parse().expect("ip")),
            "10.1.0.2 dev berth-1 src 10.1.0.1"
        );
        let u = RouteAnswer {
            kind: "unreachable".into(),
            dev: None,
            via: None,
            prefsrc: None,
        };
        assert_eq!(
            u.text("10.9.9.9".parse().expect("ip")),
            "unreachable 10.9.9.9"
        );
    }
}
