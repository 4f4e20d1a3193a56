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
    /// The network.
    network: String,
    /// The container.
    container: String,
}

/// Builds an endpoint request from `--ip`/`--ip6`/aliases (`None` when nothing was asked).
pub fn endpoint(
    ip: Option<&String>,
    ip6: Option<&String>,
    aliases: &[String],
) -> Option<EndpointSettings> {
    if ip.is_none() && ip6.is_none() && aliases.is_empty() {
        return None;
    }
    Some(EndpointSettings {
        ipam_config: (ip.is_some() || ip6.is_some()).then(|| EndpointIpamConfig {
            ipv4_address: ip.cloned(),
            ipv6_address: ip6.cloned(),
            link_local_ips: None,
        }),
        aliases: (!aliases.is_empty()).then(|| aliases.to_vec()),
        ..EndpointSettings::default()
    })
}

/// Connects the container.
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    let req = NetworkConnectRequest {
        container: args.container.clone(),
        endpoint_config: Some(
            endpoint(args.ip.as_ref(), args.ip6.as_ref(), &args.aliases).unwrap_or_default(),
        ),
    };
    client
        .request_empty(
            Method::POST,
            &obj_path("networks", &args.network, "/connect"),
            Some(&req),
        )
        .await?;
    Ok(0)
}
