//! `berth trace`: the journey of a real packet through this host, from the kernel's own trace:
//! each hop, the rule that decided it and the berth object behind it; on a drop, why the rule
//! exists and what would allow the flow. berthd marks the flow with a temporary nftables table
//! (removed afterwards), sends a probe from the vantage point (or, with `--watch`, waits for real
//! traffic) and reads the kernel's trace events.

use anyhow::{bail, Result};
use berth_api::client::{Client, Method};
use berth_api::types::{TraceEvent, TraceRequest};
use berth_plan::trace::{render_mermaid, render_text, Journey};
use clap::Args as ClapArgs;

use crate::cmd::read_ndjson;
use crate::format::out;

/// `berth trace` flags.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Trace from inside this container (the same as `--from CONTAINER`).
    container: Option<String>,
    /// Destination `HOST:PORT` (`[V6]:PORT`); HOST an address or a container name.
    #[arg(long)]
    to: String,
    /// Send the probe from a container, a network namespace (`/run/netns/NAME`, or NAME) or,
    /// with `--watch`, only trace packets from this address. Default: the host.
    #[arg(long, default_value = "")]
    from: String,
    /// `tcp` or `udp`.
    #[arg(long, default_value = "tcp")]
    proto: String,
    /// Send no probe: trace the next `--count` packets of real traffic matching the flow.
    #[arg(long)]
    watch: bool,
    /// With `--watch`: how many packets (at most 100).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Seconds the trace may last (default 5, or 30 with `--watch`).
    #[arg(long, default_value_t = 0.0)]
    timeout: f64,
    /// `text` (default), `json` or `mermaid` (a sequence diagram).
    #[arg(long, default_value = "text")]
    format: String,
}

/// Runs the trace; exit status 0 when the flow got through, 1 when it did not.
pub async fn run(client: &Client, a: Args) -> Result<i32> {
    if !["text", "json", "mermaid", ""].contains(&a.format.as_str()) {
        bail!("--format {}: text, json or mermaid", a.format);
    }
    let from = match (&a.container, a.from.is_empty()) {
        (Some(_), false) => bail!("give either CONTAINER or --from, not both"),
        (Some(c), true) => c.clone(),
        (None, _) => a.from.clone(),
    };
    let req = TraceRequest {
        to: a.to.clone(),
        from,
        proto: a.proto.clone(),
        watch: a.watch,
        count: a.count,
        timeout: a.timeout,
    };
    let mut journey = None;
    read_ndjson(
        client,
        Method::POST,
        "/system/trace",
        Some(&req),
        |ev: TraceEvent| {
            if let Some(p) = ev.progress.filter(|p| !p.is_empty()) {
                eprintln!("trace: {p}");
            }
            if let Some(e) = ev.error {
                bail!("Error response from daemon: {e}");
            }
            if let Some(j) = ev.journey {
                journey = Some(j);
            }
            Ok(())
        },
    )
    .await?;
    let Some(raw) = journey else {
        bail!("berthd ended the trace without a journey (see its log)");
    };
    let j: Journey = serde_json::from_value(raw.clone())?;
    match a.format.as_str() {
        "json" => out(&serde_json::to_string_pretty(&raw)?),
        "mermaid" => out(render_mermaid(&j).trim_end()),
        _ => out(render_text(&j).trim_end()),
    }
    Ok(if j.delivered { 0 } else { 1 })
}
