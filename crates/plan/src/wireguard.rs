//! Encrypted overlay networks (`--opt encrypted`): the pure decisions of berth's WireGuard
//! datapath — key encoding, each host's tunnel address, the MTU, the port numbers and which
//! peers a host talks to.
//!
//! The cross-host traffic of encrypted networks leaves each host through one tun device
//! ([`DEVICE`]) that berthd's userspace WireGuard reads and writes (the kernel of berth's test
//! machines has neither WireGuard nor IPsec ESP). Every host has a *tunnel address*: an IPv6
//! address inside [`TUNNEL_PREFIX`] whose last 32 bits are its advertised IPv4 address. It is
//! derived, not allocated: advertised addresses are already unique in a cluster (they are the
//! VXLAN endpoints), so no etcd round trip, no CAS and no lease can make two hosts share one,
//! and any host computes a peer's tunnel address from its node record alone. An encrypted
//! network's VXLAN device has `local` = the host's tunnel address and its forwarding entries
//! point at the peers' tunnel addresses; the prefix is routed into the tun device, so every
//! VXLAN packet of an encrypted network is handed to WireGuard, and only decrypted packets
//! from a known peer come back out of it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use base64::Engine as _;

use crate::cluster::NodeRecord;
use crate::error::PlanError;

/// The tun device carrying encrypted overlays' VXLAN traffic (one per host, berthd's own).
pub const DEVICE: &str = "berth-wg0";

/// Its ownership mark (`ifalias`).
pub const DEVICE_ALIAS: &str = "berth:wireguard";

/// WireGuard's UDP port unless `--wireguard-port` says otherwise (the protocol's usual one).
pub const DEFAULT_PORT: u16 = 51820;

/// The VXLAN UDP port of encrypted networks. Not 4789: the firewall drops this port unless it
/// arrives from [`DEVICE`], so a plaintext VXLAN frame sent by a LAN neighbour can never reach
/// an encrypted network, while unencrypted networks keep 4789 untouched.
pub const ENCRYPTED_VXLAN_PORT: u16 = 4792;

/// `fd62:6572:7468::/96` ("berth" in the ULA's global id): the tunnel addresses.
pub const TUNNEL_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd62, 0x6572, 0x7468, 0, 0, 0, 0, 0);

/// The prefix length of [`TUNNEL_PREFIX`].
pub const TUNNEL_PREFIX_LEN: u8 = 96;

/// What WireGuard adds to each packet on an IPv4 underlay: outer IPv4 20 + UDP 8 + the data
/// message header 16 (type, receiver index, counter) + the Poly1305 tag 16.
pub const WG_OVERHEAD: u32 = 60;

/// What VXLAN over IPv6 (the tunnel addresses) adds: inner Ethernet 14 + VXLAN 8 + UDP 8 +
/// IPv6 40.
pub use crate::network::VXLAN6_OVERHEAD;

/// The tun device's MTU on an underlay of MTU `underlay`.
pub fn tunnel_mtu(underlay: u32) -> u32 {
    underlay.saturating_sub(WG_OVERHEAD)
}

/// An encrypted overlay network's MTU on an underlay of MTU `underlay`: the largest frame that
/// still fits one underlay packet after VXLAN-over-IPv6 and WireGuard (1370 on 1500).
pub fn encrypted_mtu(underlay: u32) -> u32 {
    tunnel_mtu(underlay).saturating_sub(VXLAN6_OVERHEAD)
}

/// The tunnel address of the host advertising `vtep`; `None` for an IPv6 advertise address
/// (encrypted networks need an IPv4 underlay for now).
pub fn tunnel_addr(vtep: IpAddr) -> Option<Ipv6Addr> {
    match vtep {
        IpAddr::V4(v4) => {
            let p = TUNNEL_PREFIX.octets();
            let a = v4.octets();
            let mut o = [0u8; 16];
            o[..12].copy_from_slice(&p[..12]);
            o[12..].copy_from_slice(&a);
            Some(Ipv6Addr::from(o))
        }
        IpAddr::V6(_) => None,
    }
}

/// A key as `wg` writes it: standard base64 of its 32 bytes.
pub fn encode_key(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Parses a key written by [`encode_key`] (a private key file, a published public key).
pub fn decode_key(s: &str) -> Result<[u8; 32], PlanError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| {
            PlanError::Invalid(format!("WireGuard key {:?}: not base64: {e}", s.trim()))
        })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        PlanError::Invalid(format!(
            "WireGuard key {:?}: {} bytes instead of 32",
            s.trim(),
            bytes.len()
        ))
    })
}

/// Another host this one exchanges encrypted traffic with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its public key.
    pub key: [u8; 32],
    /// Where its WireGuard listens (advertised address, its WireGuard port).
    pub endpoint: SocketAddr,
    /// Its tunnel address: the only inner source address accepted from it.
    pub tunnel: Ipv6Addr,
}

/// The peers of the host named `self_name` among the live node records: every other host that
/// published a valid public key and has an IPv4 advertise address. A record without a key (an
/// older berthd, or one with no cluster key yet) is no peer.
pub fn peers(nodes: &[NodeRecord], self_name: &str) -> BTreeMap<String, Peer> {
    nodes
        .iter()
        .filter(|n| n.name != self_name)
        .filter_map(|n| {
            let key = decode_key(n.wg_key.as_deref()?).ok()?;
            let tunnel = tunnel_addr(n.addr)?;
            let port = n.wg_port.unwrap_or(DEFAULT_PORT);
            Some((
                n.name.clone(),
                Peer {
                    key,
                    endpoint: SocketAddr::new(n.addr, port),
                    tunnel,
                },
            ))
        })
        .collect()
}

/// How the datapath's peers change: peers to drop, and peers to (re)create — a new host, or a
/// known one whose key (rotation) or endpoint changed gets a fresh WireGuard session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChanges {
    /// Node names whose sessions go.
    pub remove: Vec<String>,
    /// Sessions to create (replacing any of the same name).
    pub set: BTreeMap<String, Peer>,
}

/// The changes that turn the peers `have` into `want`; empty when equal.
pub fn diff_peers(have: &BTreeMap<String, Peer>, want: &BTreeMap<String, Peer>) -> PeerChanges {
    PeerChanges {
        remove: have
            .keys()
            .filter(|n| !want.contains_key(*n))
            .cloned()
            .collect(),
        set: want
            .iter()
            .filter(|(n, p)| have.get(*n) != Some(*p))
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect(),
    }
}

/// Whether the option value of `encrypted` (Docker's `--opt encrypted`, given without a value)
/// turns encryption on.
pub fn parse_encrypted(v: &str) -> Result<bool, PlanError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(PlanError::Invalid(format!(
            "invalid value {v:?} for option encrypted: give it without a value (--opt encrypted) or true/false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addr: &str, key: Option<[u8; 32]>, port: Option<u16>) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            addr: addr.parse().expect("addr"),
            version: "0".into(),
            joined_at: String::new(),
            lease_ttl_secs: 6,
            instance: "i".into(),
            wg_key: key.map(|k| encode_key(&k)),
            wg_port: port,
            underlay_mtu: None,
        }
    }

    #[test]
    fn keys_round_trip_and_bad_ones_are_refused() {
        let k = [7u8; 32];
        let s = encode_key(&k);
        assert_eq!(s.len(), 44);
        assert_eq!(decode_key(&s).expect("key"), k);
        assert_eq!(decode_key(&format!(" {s}\n")).expect("key"), k);
        assert!(decode_key("not base64!").is_err());
        assert!(decode_key(&encode_key(&[1; 32])[..20]).is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let e = decode_key(&short).expect_err("16 bytes");
        assert!(e.to_string().contains("16 bytes"), "{e}");
    }

    #[test]
    fn node_records_carry_keys_and_old_ones_still_parse() {
        let n = node("a", "10.77.0.1", Some([3; 32]), Some(51000));
        let j = serde_json::to_string(&n).expect("json");
        assert!(
            j.contains("\"WgKey\"") && j.contains("\"WgPort\":51000"),
            "{j}"
        );
        let back: NodeRecord = serde_json::from_str(&j).expect("parse");
        assert_eq!(back, n);
        // A record written before encryption existed has neither field.
        let old = r#"{"Name":"b","Addr":"10.77.0.2","Version":"0","JoinedAt":"","LeaseTtlSecs":6,"Instance":"x"}"#;
        let o: NodeRecord = serde_json::from_str(old).expect("old record");
        assert_eq!((o.wg_key, o.wg_port), (None, None));
        let j = serde_json::to_string(&node("c", "10.77.0.3", None, None)).expect("json");
        assert!(!j.contains("Wg"), "{j}");
    }

    #[test]
    fn tunnel_addresses_embed_the_advertised_address() {
        assert_eq!(
            tunnel_addr("10.77.0.2".parse().expect("ip")),
            Some("fd62:6572:7468::a4d:2".parse().expect("ip"))
        );
        assert_ne!(
            tunnel_addr("10.77.0.2".parse().expect("ip")),
            tunnel_addr("10.77.0.3".parse().expect("ip"))
        );
        assert_eq!(tunnel_addr("fd00::1".parse().expect("ip")), None);
        let t = tunnel_addr("192.168.1.9".parse().expect("ip")).expect("v4");
        let net = ipnet::Ipv6Net::new(TUNNEL_PREFIX, TUNNEL_PREFIX_LEN).expect("net");
        assert!(net.contains(&t));
    }

    #[test]
    fn mtu_leaves_room_for_vxlan_over_ipv6_and_wireguard() {
        assert_eq!(tunnel_mtu(1500), 1440);
        assert_eq!(encrypted_mtu(1500), 1370);
        // One full frame: inner 1370 + VXLAN/IPv6 70 = the tun's 1440; + WireGuard 60 = 1500.
        assert_eq!(encrypted_mtu(1500) + VXLAN6_OVERHEAD + WG_OVERHEAD, 1500);
        assert_eq!(encrypted_mtu(9000), 8870);
        assert_eq!(encrypted_mtu(100), 0);
        // IPv6 needs 1280 on the tun device.
        assert!(tunnel_mtu(1500) >= 1280);
    }

    #[test]
    fn peers_are_other_hosts_with_keys() {
        let nodes = vec![
            node("a", "10.77.0.1", Some([1; 32]), None),
            node("b", "10.77.0.2", Some([2; 32]), Some(51000)),
            node("c", "10.77.0.3", None, None),
            node("d", "fd00::4", Some([4; 32]), None),
        ];
        let p = peers(&nodes, "a");
        assert_eq!(p.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(p["b"].endpoint, "10.77.0.2:51000".parse().expect("sa"));
        assert_eq!(
            p["b"].tunnel,
            tunnel_addr("10.77.0.2".parse().expect("ip")).expect("t")
        );
        assert_eq!(p["b"].key, [2; 32]);
        let mut bad = node("e", "10.77.0.5", None, None);
        bad.wg_key = Some("garbage".into());
        assert!(peers(&[bad], "a").is_empty());
        assert_eq!(
            peers(&nodes, "b")["a"].endpoint.port(),
            DEFAULT_PORT,
            "no port published: the default"
        );
    }

    #[test]
    fn peer_diff_adds_drops_and_rekeys() {
        let nodes = vec![
            node("b", "10.77.0.2", Some([2; 32]), None),
            node("c", "10.77.0.3", Some([3; 32]), None),
        ];
        let have = peers(&nodes, "a");
        assert_eq!(diff_peers(&have, &have), PeerChanges::default());
        let ch = diff_peers(&BTreeMap::new(), &have);
        assert_eq!(ch.set.len(), 2);
        // c died (lease expired), b rotated its key, d joined.
        let want = peers(
            &[
                node("b", "10.77.0.2", Some([9; 32]), None),
                node("d", "10.77.0.4", Some([4; 32]), None),
            ],
            "a",
        );
        let ch = diff_peers(&have, &want);
        assert_eq!(ch.remove, vec!["c".to_string()]);
        assert_eq!(ch.set.keys().collect::<Vec<_>>(), ["b", "d"]);
        assert_eq!(ch.set["b"].key, [9; 32]);
    }

    #[test]
    fn the_encrypted_option() {
        for v in ["", "true", "1", "TRUE"] {
            assert!(parse_encrypted(v).expect(v));
        }
        assert!(!parse_encrypted("false").expect("false"));
        assert!(parse_encrypted("maybe").is_err());
    }
}
