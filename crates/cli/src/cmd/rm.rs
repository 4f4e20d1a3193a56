//! `berth rm`.

use anyhow::Result;
use berth_api::client::{Client, Method};

use super::each_container;

/// Flags of `berth rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stop (kill) running containers first.
    #[arg(short, long)]
    force: bool,
    /// Containers by name or id.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// Removes each container, printing its name; exit 1 if any failed.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let query = if args.force { "?force=1" } else { "" };
    Ok(each_container(
        client,
        Method::DELETE,
        &args.containers,
        query,
    ))
}
