//! `berth network create`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Result};
use berth_api::client::{Client, Method};
use berth_api::types::{Ipam, IpamConfig, NetworkCreateRequest, NetworkCreateResponse};

use crate::format::out;

/// Flags of `berth network create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Driver: bridge (default), macvlan or ipvlan.
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form (repeatable: one IPv4 and/or one IPv6 subnet, …).
    #[arg(long, value_name = "CIDR")]
    subnet: Vec<String>,
    /// Gateway of the subnet that contains it (repeatable).
    #[arg(long, value_name = "IP")]
    gateway: Vec<String>,
    /// Allocate container addresses from this sub-range of a subnet (repeatable).
    #[arg(long = "ip-range", value_name = "CIDR")]
    ip_range: Vec<String>,
    /// Enable IPv6.
    #[arg(long)]
    ipv6: bool,
    /// No outside access: no default route, no NAT.
    #[arg(long)]
    internal: bool,
    /// Mark the network attachable (kept for docker compatibility).
    #[arg(long)]
    attachable: bool,
    /// Set a label KEY=VALUE (repeatable).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Set a driver option KEY=VALUE (repeatable).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opts: Vec<String>,
    /// IPAM driver: only `default` (others are refused by berthd).
    #[arg(long = "ipam-driver", default_value = "default", value_name = "DRIVER")]
    ipam_driver: String,
    /// IPAM driver option KEY=VALUE (repeatable; kept and shown by inspect).
    #[arg(long = "ipam-opt", value_name = "KEY=VALUE")]
    ipam_opts: Vec<String>,
    /// Auxiliary address NAME=IP of a subnet, never given to a container (repeatable).
    #[arg(long = "aux-address", value_name = "NAME=IP")]
    aux_addresses: Vec<String>,
    /// Scope: `local` (the default; `swarm` and `global` are refused by berthd).
    #[arg(long, value_name = "SCOPE")]
    scope: Option<String>,
    /// Copy the configuration of a configuration-only network (berth has none: refused).
    #[arg(long = "config-from", value_name = "NETWORK")]
    config_from: Option<String>,
    /// Create a configuration-only network (a swarm feature: refused).
    #[arg(long = "config-only")]
    config_only: bool,
    /// Create the swarm routing-mesh network (a swarm feature: refused).
    #[arg(long)]
    ingress: bool,
    /// The network's name.
    name: String,
}

/// Creates the network and prints its id.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let req = build(&args)?;
    let resp: NetworkCreateResponse =
        client.request_json_blocking(Method::POST, "/networks/create", Some(&req))?;
    if !resp.warning.is_empty() {
        eprintln!("WARNING: {}", resp.warning);
    }
    out(&resp.id);
    Ok(0)
}

fn build(args: &Args) -> Result<NetworkCreateRequest> {
    let aux = aux_addresses(&args.aux_addresses)?;
    let config = pair_ipam(&args.subnet, &args.ip_range, &args.gateway, &aux)?;
    Ok(NetworkCreateRequest {
        name: args.name.clone(),
        driver: args.driver.clone(),
        scope: args.scope.clone().unwrap_or_default(),
        enable_ipv4: None,
        enable_ipv6: args.ipv6.then_some(true),
        ipam: Some(Ipam {
            driver: args.ipam_driver.clone(),
            options: Some(key_values(&args.ipam_opts)),
            config: Some(config),
        }),
        internal: args.internal,
        attachable: args.attachable,
        ingress: args.ingress,
        config_only: args.config_only,
        config_from: args
            .config_from
            .clone()
            .map(|network| berth_api::types::ConfigReference { network }),
        options: Some(key_values(&args.opts)),
        labels: Some(key_values(&args.labels)),
        check_duplicate: Some(true),
    })
}

/// `--aux-address NAME=IP` flags, in order; a name given twice is refused (docker would keep
/// the last silently).
pub fn aux_addresses(items: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items {
        let Some((name, ip)) = item.split_once('=') else {
            bail!("invalid aux-address {item:?}: expected NAME=IP, e.g. router=10.1.0.254");
        };
        if out.iter().any(|(n, _)| n == name) {
            bail!("aux-address name {name:?} is given twice");
        }
        out.push((name.to_string(), ip.to_string()));
    }
    Ok(out)
}

/// `KEY=VALUE` (or `KEY`, meaning an empty value) into a map.
pub fn key_values(items: &[String]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn contains((net, len): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Pairs `--subnet`, `--ip-range`, `--gateway` and `--aux-address` like docker: each range,
/// gateway and auxiliary address goes to the subnet that contains it; at most one range and
/// one gateway per subnet.
pub fn pair_ipam(
    subnets: &[String],
    ranges: &[String],
    gateways: &[String],
    aux: &[(String, String)],
) -> Result<Vec<IpamConfig>> {
    if subnets.len() < ranges.len() || subnets.len() < gateways.len() {
        bail!("every ip-range or gateway must have a corresponding subnet");
    }
    let mut parsed = Vec::new();
    let mut configs: Vec<IpamConfig> = Vec::new();
    for s in subnets {
        let Some(net) = parse_cidr(s) else {
            bail!("invalid subnet {s}: expected CIDR like 10.1.0.0/24 or fd00:1::/64");
        };
        if parsed
            .iter()
            .any(|&other: &(IpAddr, u8)| contains(other, net.0) || contains(net, other.0))
        {
            bail!("multiple overlapping subnet configuration is not supported ({s})");
        }
        parsed.push(net);
        configs.push(IpamConfig {
            subnet: s.clone(),
            ..IpamConfig::default()
        });
    }
    for r in ranges {
        let Some((addr, _)) = parse_cidr(r) else {
            bail!("invalid ip-range {r}: expected CIDR like 10.1.0.128/25");
        };
        let Some(i) = parsed.iter().position(|&net| contains(net, addr)) else {
            bail!("no matching subnet for range {r}");
        };
        if !configs[i].ip_range.is_empty() {
            bail!(
                "cannot configure multiple ranges ({r}, {}) on the same subnet ({})",
                configs[i].ip_range,
                configs[i].subnet
            );
        }
        configs[i].ip_range = r.clone();
    }
    for g in gateways {
        let Ok(addr) = g.parse::<IpAddr>() else {
            bail!("invalid gateway {g}: expected an IP address like 10.1.0.1");
        };
        let Some(i) = parsed.iter().position(|&net| contains(net, addr)) else {
            bail!("no matching subnet for gateway {g}");
        };
        if !configs[i].gateway.is_empty() {
            bail!(
                "cannot configure multiple gateways ({g}, {}) for the same subnet ({})",
                configs[i].gateway,
                configs[i].subnet
            );
        }
        configs[i].gateway = g.clone();
    }
    for (name, a) in aux {
        let Some(i) = a
            .parse::<IpAddr>()
            .ok()
            .and_then(|addr| parsed.iter().position(|&net| contains(net, addr)))
        else {
            bail!("no matching subnet for aux-address {a}");
        };
        configs[i]
            .aux_addresses
            .get_or_insert_with(BTreeMap::new)
            .insert(name.clone(), a.clone());
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn cfg(subnet: &str, range: &str, gw: &str) -> IpamConfig {
        IpamConfig {
            subnet: subnet.into(),
            ip_range: range.into(),
            gateway: gw.into(),
            aux_addresses: None,
        }
    }

    #[test]
    fn pairs_by_containment_not_position() {
        let got = pair_ipam(
            &v(&["10.1.0.0/24", "fd00:cafe::/64"]),
            &v(&["10.1.0.128/25"]),
            &v(&["fd00:cafe::1", "10.1.0.1"]),
            &[],
        )
        .expect("valid");
        assert_eq!(
            got,
            vec![
                cfg("10.1.0.0/24", "10.1.0.128/25", "10.1.0.1"),
                cfg("fd00:cafe::/64", "", "fd00:cafe::1"),
            ]
        );
        assert_eq!(pair_ipam(&[], &[], &[], &[]).expect("empty"), vec![]);
    }

    #[test]
    fn pairing_errors() {
        let err = |s: &[&str], r: &[&str], g: &[&str]| {
            pair_ipam(&v(s), &v(r), &v(g), &[])
                .expect_err("must fail")
                .to_string()
        };
        assert_eq!(
            err(&[], &[], &["10.0.0.1"]),
            "every ip-range or gateway must have a corresponding subnet"
        );
        assert_eq!(
            err(&["10.1.0.0/24"], &[], &["10.2.0.1"]),
            "no matching subnet for gateway 10.2.0.1"
        );
        assert_eq!(
            err(&["10.1.0.0/24", "10.2.0.0/24"], &[], &["10.1.0.1", "10.1.0.2"]),
            "cannot configure multiple gateways (10.1.0.2, 10.1.0.1) for the same subnet (10.1.0.0/24)"
        );
        assert_eq!(
            err(&["10.1.0.0/24"], &["10.9.0.0/25"], &[]),
            "no matching subnet for range 10.9.0.0/25"
        );
        assert!(err(&["10.1.0.0/16", "10.1.2.0/24"], &[], &[]).contains("overlapping"));
        assert!(err(&["10.1.0.0"], &[], &[]).starts_with("invalid subnet"));
        assert!(err(&["10.1.0.0/24"], &[], &["10.1.0.1/24"]).starts_with("invalid gateway"));
    }

    #[test]
    fn request_looks_like_dockers() {
        let args = Args {
            driver: "bridge".into(),
            subnet: v(&["10.233.0.0/24"]),
            gateway: v(&["10.233.0.1"]),
            ip_range: v(&["10.233.0.128/25"]),
            ipv6: false,
            internal: false,
            attachable: true,
            labels: v(&["team=x"]),
            opts: v(&["com.docker.network.bridge.name=cpbr0"]),
            ipam_driver: "default".into(),
            ipam_opts: vec![],
            aux_addresses: vec![],
            scope: None,
            config_from: None,
            config_only: false,
            ingress: false,
            name: "n2".into(),
        };
        let json = serde_json::to_value(build(&args).expect("valid")).expect("json");
        assert_eq!(json["IPAM"]["Config"][0]["IPRange"], "10.233.0.128/25");
        assert_eq!(json["IPAM"]["Driver"], "default");
        assert_eq!(json["Labels"]["team"], "x");
        assert_eq!(json["Options"]["com.docker.network.bridge.name"], "cpbr0");
        assert_eq!(json["Attachable"], true);
        assert_eq!(json["CheckDuplicate"], true);
        assert_eq!(json["EnableIPv6"], serde_json::Value::Null);
        assert_eq!(json["IPAM"]["Options"], serde_json::json!({}));
        assert_eq!(json["ConfigFrom"], serde_json::Value::Null);
        assert!(json["IPAM"]["Config"][0]
            .get("AuxiliaryAddresses")
            .is_none());
    }

    #[test]
    fn aux_addresses_go_to_their_subnet() {
        let aux = aux_addresses(&v(&[
            "router=10.1.0.254",
            "r6=fd00:cafe::fe",
            "nas=10.1.0.5",
        ]))
        .expect("valid");
        let got = pair_ipam(&v(&["10.1.0.0/24", "fd00:cafe::/64"]), &[], &[], &aux).expect("ok");
        let a4 = got[0].aux_addresses.as_ref().expect("v4 aux");
        assert_eq!(a4["router"], "10.1.0.254");
        assert_eq!(a4["nas"], "10.1.0.5");
        assert_eq!(
            got[1].aux_addresses.as_ref().expect("v6 aux")["r6"],
            "fd00:cafe::fe"
        );
        let e = pair_ipam(&v(&["10.1.0.0/24"]), &[], &[], &aux).expect_err("v6 has no subnet");
        assert_eq!(
            e.to_string(),
            "no matching subnet for aux-address fd00:cafe::fe"
        );
        assert!(aux_addresses(&v(&["a=10.1.0.2", "a=10.1.0.3"]))
            .expect_err("twice")
            .to_string()
            .contains("given twice"));
        assert!(aux_addresses(&v(&["10.1.0.2"]))
            .expect_err("no name")
            .to_string()
            .contains("NAME=IP"));
        let e = pair_ipam(
            &v(&["10.1.0.0/24"]),
            &[],
            &[],
            &[("x".into(), "bad".into())],
        );
        assert!(e.is_err());
    }
}
