//! `berth node ls`: the hosts of this berthd's cluster (those whose lease is alive).

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::NodeSummary;
use clap::{Args as ClapArgs, Subcommand};

use crate::format::out;
use crate::lazy::Lazy;

/// `berth node …`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the cluster's live hosts: name, advertised address, time since joining, lease
    /// TTL, endpoints on cluster-wide networks. `*` marks the host that answered.
    #[command(alias = "list")]
    Ls(Lazy<LsArgs>),
}

/// `berth node ls` flags.
#[derive(Debug, ClapArgs)]
pub struct LsArgs {
    /// `json` for the raw list.
    #[arg(long, default_value = "")]
    format: String,
    /// Only node names.
    #[arg(short, long)]
    quiet: bool,
}

/// Runs a `node` subcommand.
pub fn run(client: &Client, cmd: NodeCommand) -> Result<i32> {
    match cmd {
        NodeCommand::Ls(Lazy(a)) => {
            let nodes: Vec<NodeSummary> =
                client.request_json_blocking(Method::GET, "/cluster/nodes", NO_BODY)?;
            if a.format == "json" {
                out(&serde_json::to_string_pretty(&nodes)?);
            } else if a.quiet {
                for n in &nodes {
                    out(&n.name);
                }
            } else {
                out(&render(&nodes));
            }
            Ok(0)
        }
    }
}

/// `1h2m`, `3m4s`, `5s`.
fn age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn render(nodes: &[NodeSummary]) -> String {
    let mut lines = vec![format!(
        "{:<2}{:<20} {:<40} {:<8} {:<9} {:>9}",
        "", "NAME", "ADDRESS", "UP", "LEASE", "ENDPOINTS"
    )];
    for n in nodes {
        lines.push(format!(
            "{:<2}{:<20} {:<40} {:<8} {:<9} {:>9}",
            if n.is_self { "*" } else { "" },
            n.name,
            n.addr,
            age(n.age_secs),
            format!("{}s", n.lease_ttl_secs),
            n.endpoints
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_self_and_ages() {
        let nodes = vec![
            NodeSummary {
                name: "a".into(),
                addr: "10.0.0.1".into(),
                is_self: true,
                age_secs: 3725,
                lease_ttl_secs: 6,
                ..NodeSummary::default()
            },
            NodeSummary {
                name: "b".into(),
                addr: "10.0.0.2".into(),
                age_secs: 59,
                lease_ttl_secs: 6,
                ..NodeSummary::default()
            },
        ];
        let t = render(&nodes);
        let rows: Vec<&str> = t.lines().collect();
        assert!(rows[0].contains("NAME") && rows[0].contains("ENDPOINTS"));
        assert!(
            rows[1].starts_with("* a ") && rows[1].contains("1h2m"),
            "{t}"
        );
        assert!(
            rows[2].starts_with("  b ") && rows[2].contains("59s"),
            "{t}"
        );
    }
}
