//! `berth explain CONTAINER`: who can reach a container, on which ports, from where, and where
//! it can go, as berth's rules decide it; `--verify` has berthd send real probes from every
//! vantage point on this host and flag any difference from the plan.

use anyhow::{bail, Result};
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::{ExplainEvent, Exposure, ExposureFlow};
use clap::Args as ClapArgs;
use std::fmt::Write as _;

use crate::cmd::{obj_path, read_ndjson};
use crate::format::out;

/// `berth explain` flags.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// `json` for the report as JSON.
    #[arg(long, default_value = "")]
    format: String,
    /// Send real TCP probes (from the host and from inside every other running container) and
    /// compare with the plan; progress goes to stderr. Exit status 1 on any difference.
    #[arg(long)]
    verify: bool,
    /// Container name or id.
    container: String,
}

/// Prints the exposure.
pub async fn run(client: &Client, a: Args) -> Result<i32> {
    let path = obj_path("containers", &a.container, "/explain");
    let x: Exposure = if a.verify {
        let mut report = None;
        read_ndjson(
            client,
            Method::GET,
            &format!("{path}?verify=1"),
            NO_BODY,
            |ev: ExplainEvent| {
                if let Some(p) = ev.progress {
                    eprintln!("probe {p}");
                }
                if let Some(e) = ev.error {
                    bail!("Error response from daemon: {e}");
                }
                if let Some(x) = ev.exposure {
                    report = Some(x);
                }
                Ok(())
            },
        )
        .await?;
        match report {
            Some(x) => x,
            None => bail!("berthd ended the verification without a report (see its log)"),
        }
    } else {
        client.request_json(Method::GET, &path, NO_BODY).await?
    };
    if a.format == "json" {
        out(&serde_json::to_string_pretty(&x)?);
    } else {
        out(render(&x).trim_end());
    }
    Ok(match &x.verify {
        Some(v) if !v.agrees => 1,
        _ => 0,
    })
}

fn flow_line(s: &mut String, f: &ExposureFlow, outbound: bool) {
    let mark = if f.allowed { "✔" } else { "✘" };
    let arrow = if outbound {
        format!("→ {}", f.peer)
    } else {
        format!("{} →", f.peer)
    };
    let _ = write!(s, "  {mark} {arrow} {} [{}]", f.target, f.ports);
    if !f.verified.is_empty() {
        let _ = write!(s, "  verify: {}", f.verified);
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "      {}", f.cause);
    if !f.rule.is_empty() {
        let _ = writeln!(s, "      rule: {}", f.rule);
    }
    if !f.fix.is_empty() {
        let _ = writeln!(s, "      to allow: {}", f.fix);
    }
}

/// The readable report.
pub fn render(x: &Exposure) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "container {} ({}{})",
        x.container,
        x.mode,
        if x.running {
            ", running"
        } else {
            ", not running"
        }
    );
    for a in &x.addresses {
        let _ = writeln!(s, "  address {a}");
    }
    if let Some(l) = &x.listening {
        let _ = writeln!(
            s,
            "  listening: {}",
            if l.is_empty() {
                "nothing (TCP)".to_string()
            } else {
                l.join(", ")
            }
        );
    }
    if !x.published.is_empty() {
        let _ = writeln!(s, "  published: {}", x.published.join(", "));
    }
    let _ = writeln!(s, "\nwho can reach it:");
    for f in &x.inbound {
        flow_line(&mut s, f, false);
    }
    let _ = writeln!(s, "\nwhere it can go:");
    for f in &x.outbound {
        flow_line(&mut s, f, true);
    }
    if !x.notes.is_empty() {
        let _ = writeln!(s, "\nnotes:");
        for n in &x.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    if let Some(v) = &x.verify {
        let _ = writeln!(
            s,
            "\nverify: {} probe(s), {}",
            v.probes.len(),
            if v.agrees {
                "the kernel agrees with the plan".to_string()
            } else {
                format!("{} DIFFERENCE(S)", v.differences.len())
            }
        );
        for d in &v.differences {
            let _ = writeln!(s, "  ✘ {d}");
        }
        for n in &v.not_probed {
            let _ = writeln!(s, "  not probed: {n}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::types::VerifyReport;

    #[test]
    fn blocked_flows_say_why_and_how_to_allow() {
        let x = Exposure {
            container: "api".into(),
            mode: "networks".into(),
            running: true,
            inbound: vec![ExposureFlow {
                peer: "container store".into(),
                target: "10.1.0.2 on network web".into(),
                ports: "80/tcp".into(),
                allowed: false,
                rule: "forward \"isolation: networks do not reach each other\"".into(),
                cause: "networks db and web are isolated".into(),
                fix: "berth network connect web store".into(),
                verified: "DIFFERS".into(),
                ..ExposureFlow::default()
            }],
            verify: Some(VerifyReport {
                agrees: false,
                differences: vec!["container store → 10.1.0.2:80: …".into()],
                ..VerifyReport::default()
            }),
            ..Exposure::default()
        };
        let s = render(&x);
        assert!(s.contains("✘ container store → 10.1.0.2 on network web [80/tcp]  verify: DIFFERS"));
        assert!(s.contains("rule: forward \"isolation"));
        assert!(s.contains("to allow: berth network connect web store"));
        assert!(s.contains("1 DIFFERENCE(S)"));
    }
}
