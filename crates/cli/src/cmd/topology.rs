//! `berth topology`: networks, their bridges or parents, veths and containers as the kernel has
//! them (berthd's observation), intent alongside, drift marked.

use anyhow::{bail, Result};
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::Topology;
use clap::Args as ClapArgs;

use crate::format::out;
use crate::graph;

/// `berth topology` flags.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// `text` (default: a tree), `json`, `dot` (Graphviz), `mermaid`, `svg`.
    #[arg(long, default_value = "text")]
    format: String,
}

/// Prints the topology; exit status 0 when the kernel has what berth wants, 1 with drift.
pub fn run(client: &Client, a: Args) -> Result<i32> {
    if !matches!(
        a.format.as_str(),
        "text" | "json" | "dot" | "mermaid" | "svg"
    ) {
        bail!(
            "unknown format {:?}: use text, json, dot, mermaid or svg",
            a.format
        );
    }
    let t: Topology = client.request_json_blocking(Method::GET, "/system/topology", NO_BODY)?;
    let text = match a.format.as_str() {
        "json" => serde_json::to_string_pretty(&t)?,
        "dot" => graph::dot(&graph::build(&t)),
        "mermaid" => graph::mermaid(&graph::build(&t)),
        "svg" => graph::svg(&graph::build(&t)).map_err(anyhow::Error::msg)?,
        _ => graph::text(&t),
    };
    out(text.trim_end());
    Ok(if t.in_sync { 0 } else { 1 })
}
