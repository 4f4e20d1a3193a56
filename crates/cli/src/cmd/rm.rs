//! `berth rm`.

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};

use super::obj_path;
use crate::format::out;

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
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    let query = if args.force { "?force=1" } else { "" };
    let mut code = 0;
    for c in &args.containers {
        let path = obj_path("containers", c, query);
        match client.request_empty(Method::DELETE, &path, NO_BODY).await {
            Ok(()) => out(c),
            Err(e) => {
                crate::report(&e.into());
                code = 1;
            }
        }
    }
    Ok(code)
}
