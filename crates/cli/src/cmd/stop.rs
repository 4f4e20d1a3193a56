//! `berth stop` and `berth restart` (the same flags).

use anyhow::Result;
use berth_api::client::{Client, Method};

use super::each_container;

/// Flags of `berth stop` and `berth restart`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to wait after SIGTERM before SIGKILL (daemon default when unset).
    #[arg(short = 't', long = "time", alias = "timeout", value_name = "SECS")]
    time: Option<u32>,
    /// Containers by name or id.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// Stops each container, printing its name; exit 1 if any failed.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    Ok(each_with(client, &args, "/stop"))
}

/// Restarts each container (`POST /containers/{id}/restart`: a stop, then a start), printing
/// its name; exit 1 if any failed.
pub fn restart(client: &Client, args: Args) -> Result<i32> {
    Ok(each_with(client, &args, "/restart"))
}

fn each_with(client: &Client, args: &Args, action: &str) -> i32 {
    let query = args.time.map(|t| format!("?t={t}")).unwrap_or_default();
    each_container(
        client,
        Method::POST,
        &args.containers,
        &format!("{action}{query}"),
    )
}
