//! `berth network prune`.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::NetworkPruneResponse;

use crate::format::{with_filters, write_raw};

/// Flags of `berth network prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Only prune matching networks: label=KEY[=VALUE], label!=…, until=… (repeatable).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
}

const WARNING: &str = "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ";

/// Asks, then removes unused networks and lists them.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let path = with_filters("/networks/prune", &args.filter)?;
    if !args.force && !confirm()? {
        return Ok(0);
    }
    let resp: NetworkPruneResponse = client.request_json_blocking(Method::POST, &path, NO_BODY)?;
    write_raw(false, render(&resp).as_bytes());
    Ok(0)
}

fn confirm() -> Result<bool> {
    let mut stdout = std::io::stdout();
    stdout.write_all(WARNING.as_bytes())?;
    stdout.flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer from stdin")?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

fn render(resp: &NetworkPruneResponse) -> String {
    if resp.networks_deleted.is_empty() {
        return String::new();
    }
    let mut s = String::from("Deleted Networks:\n");
    for n in &resp.networks_deleted {
        s.push_str(n);
        s.push('\n');
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_like_docker() {
        let r = NetworkPruneResponse {
            networks_deleted: vec!["n5".into()],
        };
        assert_eq!(render(&r), "Deleted Networks:\nn5\n\n");
        assert_eq!(render(&NetworkPruneResponse::default()), "");
    }
}
