//! A cluster of berth hosts sharing state through etcd: berthd's cluster options (Docker's
//! classic names `--cluster-store`, `--cluster-store-opt`, `--advertise-addr`), and the node
//! record each host publishes under its lease. Pure: parsing and validation only.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Why a cluster option was refused; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ClusterOptionError(pub String);

fn err(msg: impl Into<String>) -> ClusterOptionError {
    ClusterOptionError(msg.into())
}

/// TLS material for etcd (`--cluster-store-opt kv.cacertfile=…,kv.certfile=…,kv.keyfile=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTls {
    /// CA certificate that signed etcd's server certificate.
    pub ca_file: Option<String>,
    /// Client certificate.
    pub cert_file: Option<String>,
    /// Client key.
    pub key_file: Option<String>,
}

impl ClusterTls {
    /// Whether any TLS option was given (etcd is then reached over `https`).
    pub fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Parsed cluster options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStore {
    /// etcd client URLs (`http://10.0.0.10:2379`, or `https://…` with TLS options).
    pub endpoints: Vec<String>,
    /// TLS material, if any.
    pub tls: ClusterTls,
}

/// Parses `--cluster-store etcd://HOST:PORT[,HOST:PORT…]` with its `--cluster-store-opt`s.
/// Only etcd is a cluster store; `consul://` and `zk://` (Docker's others) are refused by
/// name. Hosts may be IPv4, `[IPv6]` or names; the port defaults to 2379.
pub fn parse_cluster_store(url: &str, opts: &[String]) -> Result<ClusterStore, ClusterOptionError> {
    let tls = parse_cluster_opts(opts)?;
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(err(format!(
            "--cluster-store {url:?}: write etcd://HOST:PORT[,HOST:PORT…]"
        )));
    };
    if scheme != "etcd" {
        return Err(err(format!(
            "--cluster-store {url:?}: berth's cluster store is etcd (etcd://HOST:PORT); \
             {scheme:?} is not supported"
        )));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(err(format!(
            "--cluster-store {url:?}: no etcd endpoint given (etcd://HOST:PORT)"
        )));
    }
    let http = if tls.any() { "https" } else { "http" };
    let mut endpoints = Vec::new();
    for part in rest.split(',') {
        let hostport = parse_hostport(part)
            .map_err(|why| err(format!("--cluster-store {url:?}: endpoint {part:?}: {why}")))?;
        endpoints.push(format!("{http}://{hostport}"));
    }
    Ok(ClusterStore { endpoints, tls })
}

/// `HOST[:PORT]` → `HOST:PORT` (2379 by default), with IPv6 in brackets.
fn parse_hostport(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c))
    {
        return Err("must be HOST or HOST:PORT");
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err("an IPv6 address needs its closing ']'");
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address inside [ ]");
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :PORT after ]")?),
        };
        (format!("[{h}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p)),
            Some(_) => return Err("write an IPv6 address as [ADDR]:PORT"),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    let port = match port {
        None => 2379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("the port must be 1-65535")?,
    };
    Ok(format!("{host}:{port}"))
}

/// Parses `--cluster-store-opt` values (each `k=v`, or several comma-separated as Docker
/// accepts): `kv.cacertfile`, `kv.certfile`, `kv.keyfile`. Anything else is refused by name.
pub fn parse_cluster_opts(opts: &[String]) -> Result<ClusterTls, ClusterOptionError> {
    let mut tls = ClusterTls::default();
    for item in opts.iter().flat_map(|o| o.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(err(format!(
                "--cluster-store-opt {item:?}: write KEY=VALUE"
            )));
        };
        if v.is_empty() {
            return Err(err(format!("--cluster-store-opt {k}: the value is empty")));
        }
        let slot = match k {
            "kv.cacertfile" => &mut tls.ca_file,
            "kv.certfile" => &mut tls.cert_file,
            "kv.keyfile" => &mut tls.key_file,
            _ => {
                return Err(err(format!(
                    "--cluster-store-opt {k:?} is not supported (berth knows kv.cacertfile, \
                     kv.certfile, kv.keyfile)"
                )))
            }
        };
        *slot = Some(v.to_string());
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(err(
            "--cluster-store-opt: kv.certfile and kv.keyfile go together (a client certificate \
             needs its key)",
        ));
    }
    Ok(tls)
}

/// What `--advertise-addr` names: an address, or an interface whose address is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advertise {
    /// A literal address (an optional `:PORT` Docker allowed is accepted and ignored).
    Addr(IpAddr),
    /// An interface name: its first global IPv4 address (else IPv6) is used.
    Interface(String),
}

/// Parses `--advertise-addr IP|IFACE[:PORT]`.
pub fn parse_advertise(s: &str) -> Result<Advertise, ClusterOptionError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return check_ip(s, ip).map(Advertise::Addr);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return check_ip(s, sa.ip()).map(Advertise::Addr);
    }
    let name = match s.rsplit_once(':') {
        Some((n, p)) if p.parse::<u16>().is_ok() => n,
        _ => s,
    };
    if crate::names::validate_ifname(name).is_err() {
        return Err(err(format!(
            "--advertise-addr {s:?}: give this host's address on the underlay (e.g. 10.0.0.21) \
             or the name of its interface (e.g. eth0)"
        )));
    }
    Ok(Advertise::Interface(name.to_string()))
}

fn check_ip(s: &str, ip: IpAddr) -> Result<IpAddr, ClusterOptionError> {
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(err(format!(
            "--advertise-addr {s:?}: other hosts must reach this address; a loopback, \
             unspecified or multicast address cannot be advertised"
        )));
    }
    Ok(ip)
}

/// Checks a node name (`--node-name`, default the host name): it is a key segment in etcd and
/// shown in `berth node ls`.
pub fn validate_node_name(name: &str) -> Result<(), ClusterOptionError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "node name {name:?}: use 1-63 letters, digits, '-', '_' or '.' (give --node-name)"
        )))
    }
}

/// Prefix of the node records in the cluster store.
pub const NODES: &str = "nodes/";

/// Key of a node's record.
pub fn node_key(name: &str) -> String {
    format!("{NODES}{name}")
}

/// What a host publishes about itself, under its lease: gone when the host is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRecord {
    /// The node's name.
    pub name: String,
    /// The address other hosts reach it at (its VXLAN tunnel endpoint).
    pub addr: IpAddr,
    /// berth's version on that host.
    pub version: String,
    /// When this registration began (RFC 3339); a re-registration after a lost lease
    /// starts again.
    pub joined_at: String,
    /// The lease's TTL in seconds: the host is forgotten this long after it stops renewing.
    pub lease_ttl_secs: u64,
    /// The berthd instance (a random id per start): tells a restarted host from the old one.
    pub instance: String,
    /// Its WireGuard public key (base64) for encrypted overlay networks; the private key never
    /// leaves the host. Absent in records of berthds without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wg_key: Option<String>,
    /// The UDP port its WireGuard listens on (`--wireguard-port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wg_port: Option<u16>,
    /// The MTU of its advertised interface, read at start-up: an overlay network created
    /// anywhere in the cluster fits the smallest of them. Absent in records of older berthds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_mtu: Option<u32>,
}

/// The interface whose MTU is the underlay's: the one `--advertise-addr` names, or the one
/// holding the advertised address `addr`, among `links` (this host's, as observed). `None`
/// when no link fits (an address that is not this host's, e.g. behind NAT).
pub fn underlay_link<'a>(
    advertise: &Advertise,
    addr: IpAddr,
    links: &'a std::collections::BTreeMap<String, crate::host::ObservedLink>,
) -> Option<&'a crate::host::ObservedLink> {
    match advertise {
        Advertise::Interface(name) => links.get(name),
        Advertise::Addr(_) => links
            .values()
            .find(|l| l.addrs.iter().any(|a| a.addr() == addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_underlay_link_is_named_or_holds_the_address() {
        use crate::host::ObservedLink;
        let link = |name: &str, mtu: u32, addr: &str| ObservedLink {
            name: name.into(),
            mtu,
            addrs: vec![addr.parse().expect("test value")],
            ..ObservedLink::default()
        };
        let links: std::collections::BTreeMap<String, ObservedLink> = [
            link("eth0", 1500, "192.168.1.5/24"),
            link("ul0", 1400, "10.77.0.1/24"),
        ]
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
        let ip: IpAddr = "10.77.0.1".parse().expect("test value");
        let by_addr = underlay_link(&Advertise::Addr(ip), ip, &links);
        assert_eq!(
            by_addr.map(|l| (l.name.as_str(), l.mtu)),
            Some(("ul0", 1400))
        );
        let by_name = underlay_link(&Advertise::Interface("ul0".into()), ip, &links);
        assert_eq!(by_name.map(|l| l.mtu), Some(1400));
        let nat: IpAddr = "203.0.113.7".parse().expect("test value");
        assert!(underlay_link(&Advertise::Addr(nat), nat, &links).is_none());
        // An old record without the field still parses.
        let old = r#"{"Name":"a","Addr":"10.0.0.1","Version":"0","JoinedAt":"","LeaseTtlSecs":6,"Instance":"x"}"#;
        let r: NodeRecord = serde_json::from_str(old).expect("test value");
        assert_eq!(r.underlay_mtu, None);
    }

    #[test]
    fn cluster_store_urls() {
        let c = parse_cluster_store("etcd://10.0.0.10:2379,10.0.0.11,[fd00::1]:2400", &[])
            .expect("valid");
        assert_eq!(
            c.endpoints,
            [
                "http://10.0.0.10:2379",
                "http://10.0.0.11:2379",
                "http://[fd00::1]:2400"
            ]
        );
        let c =
            parse_cluster_store("etcd://etcd.lan/", &s(&["kv.cacertfile=/ca.pem"])).expect("valid");
        assert_eq!(c.endpoints, ["https://etcd.lan:2379"]);
        assert_eq!(c.tls.ca_file.as_deref(), Some("/ca.pem"));
        for (bad, says) in [
            ("10.0.0.10:2379", "etcd://HOST:PORT"),
            ("consul://10.0.0.10:8500", "\"consul\" is not supported"),
            ("etcd://", "no etcd endpoint"),
            ("etcd://a:0", "1-65535"),
            ("etcd://a:99999", "1-65535"),
            ("etcd://a,,b", "empty"),
            ("etcd://fd00::1:2379", "[ADDR]:PORT"),
            ("etcd://[fd00::1", "closing"),
            ("etcd://a b:1", "HOST or HOST:PORT"),
            ("etcd://user@a:1", "HOST or HOST:PORT"),
            ("etcd://a:1/\n", "HOST or HOST:PORT"),
        ] {
            let e = parse_cluster_store(bad, &[]).expect_err(bad);
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn cluster_store_opts() {
        let t = parse_cluster_opts(&s(&[
            "kv.certfile=/c.pem,kv.keyfile=/k.pem",
            "kv.cacertfile=/ca",
        ]))
        .expect("valid");
        assert_eq!(t.cert_file.as_deref(), Some("/c.pem"));
        assert_eq!(t.key_file.as_deref(), Some("/k.pem"));
        assert!(t.any());
        for (bad, says) in [
            ("kv.path=/x", "not supported"),
            ("kv.certfile=/c", "go together"),
            ("kv.cacertfile=", "empty"),
            ("novalue", "KEY=VALUE"),
        ] {
            let e = parse_cluster_opts(&s(&[bad])).expect_err(bad);
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn advertise_addresses() {
        assert_eq!(
            parse_advertise("10.0.0.21"),
            Ok(Advertise::Addr("10.0.0.21".parse().expect("ip")))
        );
        assert_eq!(
            parse_advertise("10.0.0.21:2376"),
            Ok(Advertise::Addr("10.0.0.21".parse().expect("ip")))
        );
        assert_eq!(
            parse_advertise("fd00::21"),
            Ok(Advertise::Addr("fd00::21".parse().expect("ip")))
        );
        assert_eq!(
            parse_advertise("eth0"),
            Ok(Advertise::Interface("eth0".into()))
        );
        assert_eq!(
            parse_advertise("eth0:2376"),
            Ok(Advertise::Interface("eth0".into()))
        );
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "",
            "bad name",
            "x\ny",
        ] {
            assert!(parse_advertise(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_names() {
        for ok in ["host-a", "h1", "node_3.lan"] {
            assert!(validate_node_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "a\nb", &"x".repeat(64)] {
            assert!(validate_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_record_round_trips_in_docker_case() {
        let r = NodeRecord {
            name: "a".into(),
            addr: "10.0.0.1".parse().expect("ip"),
            version: "0.1.0".into(),
            joined_at: "2026-11-30T12:00:00Z".into(),
            lease_ttl_secs: 6,
            instance: "abc".into(),
            wg_key: None,
            wg_port: None,
            underlay_mtu: Some(1400),
        };
        let j = serde_json::to_value(&r).expect("json");
        assert_eq!(j["Addr"], "10.0.0.1");
        assert_eq!(j["UnderlayMtu"], 1400);
        assert_eq!(serde_json::from_value::<NodeRecord>(j).expect("back"), r);
    }
}
