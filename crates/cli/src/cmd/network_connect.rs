//! `berth network connect`.

use anyhow::Result;
use berth_api::client::{Client, Method};
use berth_api::types::{EndpointIpamConfig, EndpointSettings, NetworkConnectRequest};

use super::obj_path;

/// Flags of `berth network connect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Static IPv4 address on this network.
    #[arg(long)]
    ip: Option<String>,
    /// Static IPv6 address on this network.
    #[arg(long)]
    ip6: Option<String>,
    /// Extra DNS name of the container on this network (repeatable).
    #[arg(long = "alias")]
    aliases: Vec<String>,
    /// Link-local address (169.254.0.0/16, fe80::/10) on the container's interface, next to
    /// its address (repeatable).
    #[arg(long = "link-local-ip", value_name = "IP")]
    link_local_ip: Vec<String>,
    /// Link to a container as NAME[:ALIAS]: ALIAS resolves to it on this network, from this
    /// container only (repeatable).
    #[arg(long = "link", value_name = "NAME[:ALIAS]")]
    link: Vec<String>,
    /// The network.
    network: String,
    /// The container.
    container: String,
}

/// What the endpoint flags of `run` and `network connect` ask for.
#[derive(Debug, Default, Clone, Copy)]
pub struct EndpointFlags<'a> {
    /// `--ip`.
    pub ip: Option<&'a String>,
    /// `--ip6`.
    pub ip6: Option<&'a String>,
    /// `--alias` / `--network-alias`.
    pub aliases: &'a [String],
    /// `--link-local-ip`.
    pub link_local_ips: &'a [String],
    /// `--link` (on a user-defined network: the endpoint's links).
    pub links: &'a [String],
}

/// Builds an endpoint request from the endpoint flags (`None` when nothing was asked).
pub fn endpoint(f: EndpointFlags<'_>) -> Option<EndpointSettings> {
    let ipam = f.ip.is_some() || f.ip6.is_some() || !f.link_local_ips.is_empty();
    if !ipam && f.aliases.is_empty() && f.links.is_empty() {
        return None;
    }
    let some = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    Some(EndpointSettings {
        ipam_config: ipam.then(|| EndpointIpamConfig {
            ipv4_address: f.ip.cloned(),
            ipv6_address: f.ip6.cloned(),
            link_local_ips: some(f.link_local_ips),
        }),
        aliases: some(f.aliases),
        links: some(f.links),
        ..EndpointSettings::default()
    })
}

/// Connects the container.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let req = NetworkConnectRequest {
        container: args.container.clone(),
        endpoint_config: Some(
            endpoint(EndpointFlags {
                ip: args.ip.as_ref(),
                ip6: args.ip6.as_ref(),
                aliases: &args.aliases,
                link_local_ips: &args.link_local_ip,
                links: &args.link,
            })
            .unwrap_or_default(),
        ),
    };
    client.request_empty_blocking(
        Method::POST,
        &obj_path("networks", &args.network, "/connect"),
        Some(&req),
    )?;
    Ok(0)
}
