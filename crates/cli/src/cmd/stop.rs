//! `berth stop`.

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};

use super::obj_path;
use crate::format::out;

/// Flags of `berth stop`.
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
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    let query = args.time.map(|t| format!("?t={t}")).unwrap_or_default();
    let mut code = 0;
    for c in &args.containers {
        let path = obj_path("containers", c, &format!("/stop{query}"));
        match client.request_empty(Method::POST, &path, NO_BODY).await {
            Ok(()) => out(c),
            Err(e) => {
                crate::report(&e.into());
                code = 1;
            }
        }
    }
    Ok(code)
}
