//! `berth network inspect`.

use anyhow::Result;
use berth_api::client::Client;

use super::inspect::{fetch, print};
use super::obj_path;
use crate::template::Template;

/// Flags of `berth network inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Go template, e.g. '{{.Id}}', '{{json .IPAM.Config}}',
    /// '{{range .IPAM.Config}}{{.Subnet}}{{end}}'.
    #[arg(short, long)]
    format: Option<String>,
    /// Networks by name or id.
    #[arg(required = true, value_name = "NETWORK")]
    names: Vec<String>,
}

/// Prints networks as JSON (docker's layout) or through the template.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &args.names {
        match fetch(client, &obj_path("networks", name, "")) {
            Ok(v) => found.push(v),
            Err(e) => errors.push(e.into()),
        }
    }
    Ok(print(&found, template.as_ref(), errors))
}
