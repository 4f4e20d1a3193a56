//! `berth network disconnect`.

use anyhow::Result;
use berth_api::client::{Client, Method};
use berth_api::types::NetworkDisconnectRequest;

use super::obj_path;

/// Flags of `berth network disconnect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Force the container to disconnect.
    #[arg(short, long)]
    force: bool,
    /// The network.
    network: String,
    /// The container.
    container: String,
}

/// Disconnects the container.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let req = NetworkDisconnectRequest {
        container: args.container,
        force: args.force,
    };
    client.request_empty_blocking(
        Method::POST,
        &obj_path("networks", &args.network, "/disconnect"),
        Some(&req),
    )?;
    Ok(0)
}
