//! `berth kill`.

use anyhow::Result;
use berth_api::client::{Client, Method};

use super::each_container;

/// Flags of `berth kill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Signal to send: a number or a name, with or without SIG (berthd's default: SIGKILL).
    #[arg(short = 's', long = "signal", value_name = "SIGNAL")]
    signal: Option<String>,
    /// Containers by name or id.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// Signals each container, printing its name; exit 1 if any failed.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let query = args
        .signal
        .as_deref()
        .map(|s| format!("?signal={}", crate::format::url_escape(s)))
        .unwrap_or_default();
    Ok(each_container(
        client,
        Method::POST,
        &args.containers,
        &format!("/kill{query}"),
    ))
}
