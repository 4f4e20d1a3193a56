//! `berth network rm`.

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};

use super::obj_path;
use crate::format::out;

/// Flags of `berth network rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not error when a network does not exist.
    #[arg(short, long)]
    force: bool,
    /// Networks by name or id.
    #[arg(required = true, value_name = "NETWORK")]
    names: Vec<String>,
}

/// Removes each network, printing its name; exit 1 if any failed.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let mut code = 0;
    for name in &args.names {
        match client.request_empty_blocking(
            Method::DELETE,
            &obj_path("networks", name, ""),
            NO_BODY,
        ) {
            Ok(()) => out(name),
            Err(e) if args.force && e.is_not_found() => {}
            Err(e) => {
                crate::report(&e.into());
                code = 1;
            }
        }
    }
    Ok(code)
}
