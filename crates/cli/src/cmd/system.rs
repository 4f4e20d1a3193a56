//! `berth system check`: the kernel against berthd's stored intent, and the steps a reconcile
//! pass would take — computed by berthd without applying anything (a dry run).

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::SystemCheck;
use clap::{Args as ClapArgs, Subcommand};

use crate::format::out;
use crate::lazy::Lazy;

/// `berth system …`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Compare what berth wants with what the kernel has; print the steps that would repair
    /// the difference, without applying them. Exit status 0 when in sync, 1 otherwise.
    Check(Lazy<CheckArgs>),
}

/// `berth system check` flags.
#[derive(Debug, ClapArgs)]
pub struct CheckArgs {
    /// `json` for the raw report.
    #[arg(long, default_value = "")]
    format: String,
}

/// Runs a `system` subcommand.
pub fn run(client: &Client, cmd: SystemCommand) -> Result<i32> {
    match cmd {
        SystemCommand::Check(Lazy(a)) => check(client, a),
    }
}

fn check(client: &Client, a: CheckArgs) -> Result<i32> {
    let report: SystemCheck =
        client.request_json_blocking(Method::GET, "/system/check", NO_BODY)?;
    if a.format == "json" {
        out(&serde_json::to_string_pretty(&report)?);
    } else {
        out(&render(&report));
    }
    Ok(if report.in_sync && report.problems.is_empty() {
        0
    } else {
        1
    })
}

fn render(r: &SystemCheck) -> String {
    let mut lines = vec!["KIND                DESIRED   OBSERVED".to_string()];
    for (kind, c) in &r.summary {
        lines.push(format!("{kind:<19} {:>7}   {:>8}", c.desired, c.observed));
    }
    lines.push(String::new());
    if r.steps.is_empty() {
        lines.push("in sync: the kernel has what berth wants, nothing to do".to_string());
    } else {
        lines.push(format!(
            "{} step(s) would bring the kernel in line (not applied):",
            r.steps.len()
        ));
        for (i, s) in r.steps.iter().enumerate() {
            lines.push(format!(
                "{:>3}. {} {}: {}",
                i + 1,
                s.action,
                s.object,
                s.reason
            ));
        }
    }
    for p in &r.problems {
        lines.push(format!("problem: {p}"));
    }
    let rc = &r.reconciler;
    lines.push(format!(
        "reconciler: {} passes, {} repairs, {} errors{}",
        rc.passes,
        rc.repairs,
        rc.errors,
        rc.last_repair
            .as_ref()
            .map(|l| format!("; last repair: {l}"))
            .unwrap_or_default()
    ));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::types::CheckStep;

    #[test]
    fn in_sync_and_steps() {
        let mut r = SystemCheck {
            in_sync: true,
            ..SystemCheck::default()
        };
        assert!(render(&r).contains("in sync"));
        r.in_sync = false;
        r.steps.push(CheckStep {
            action: "CreateEndpoint".into(),
            object: "veth vb1 of container a on network n".into(),
            reason: "missing".into(),
        });
        let s = render(&r);
        assert!(s.contains("1. CreateEndpoint veth vb1 of container a on network n: missing"));
        assert!(!s.contains("in sync"));
    }
}
