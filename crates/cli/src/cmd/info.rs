//! `berth info`.

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::InfoResponse;

use crate::format::out;

/// Prints a human summary of berthd; warnings go to stderr like docker's.
pub fn run(client: &Client) -> Result<i32> {
    out("Client:");
    out(&format!(" Version:    {}", env!("CARGO_PKG_VERSION")));
    out(&format!(
        " Host:       unix://{}",
        client.socket().display()
    ));
    out("");
    let info: InfoResponse = client.request_json_blocking(Method::GET, "/info", NO_BODY)?;
    out(&render(&info));
    for w in &info.warnings {
        eprintln!("{}", warning_line(w));
    }
    Ok(0)
}

fn warning_line(w: &str) -> String {
    if w.starts_with("WARNING") {
        w.to_string()
    } else {
        format!("WARNING: {w}")
    }
}

fn render(info: &InfoResponse) -> String {
    let stopped = info.containers.saturating_sub(info.containers_running);
    let mut lines = vec![
        "Server:".to_string(),
        format!(" Containers: {}", info.containers),
        format!("  Running: {}", info.containers_running),
        format!("  Stopped: {stopped}"),
        format!(" Networks: {}", info.networks),
        format!(" Server Version: {}", info.server_version),
        format!(" Store: {}", info.store),
        format!(" State Dir: {}", info.state_dir),
        format!(" ID: {}", info.id),
    ];
    if info.ip_forward_enabled_by_berth {
        lines.push(" IPv4 Forwarding: enabled by berthd (it was off)".to_string());
    }
    let dns = &info.dns;
    if !dns.listen.is_empty() || dns.queries > 0 {
        lines.push(format!(" DNS: {}", dns.listen.join(", ")));
        lines.push(format!(
            "  Queries: {} ({} local, {} forwarded, {} failed, {} refused)",
            dns.queries, dns.answered_locally, dns.forwarded, dns.failures, dns.refused
        ));
        lines.push(format!(
            "  Latency: local p50 {} µs, p99 {} µs; forwarded p50 {} µs, p99 {} µs",
            dns.local_p50_us, dns.local_p99_us, dns.forward_p50_us, dns.forward_p99_us
        ));
    }
    let rc = &info.reconciler;
    lines.push(format!(
        " Reconciler: {} passes, {} drift repairs, {} errors",
        rc.passes, rc.repairs, rc.errors
    ));
    if let Some(l) = &rc.last_repair {
        lines.push(format!(
            "  Last repair: {l} ({})",
            rc.last_repair_at.as_deref().unwrap_or("?")
        ));
    }
    for p in &rc.problems {
        lines.push(format!("  Problem: {p}"));
    }
    let cap = &info.capacity;
    if !cap.networks.is_empty() || cap.conntrack_max.is_some() {
        lines.push(" Capacity:".to_string());
    }
    for n in &cap.networks {
        let mut parts = Vec::new();
        if let Some(p) = n.bridge_ports {
            parts.push(format!("{p}/{} bridge ports", cap.bridge_max_ports));
        }
        for s in &n.subnets {
            let usable = if s.usable == u64::MAX {
                "2^64+".to_string()
            } else {
                s.usable.to_string()
            };
            parts.push(format!("{} {}/{usable} addresses", s.subnet, s.used));
        }
        if !parts.is_empty() {
            lines.push(format!(
                "  {} ({}): {}",
                n.network,
                n.driver,
                parts.join(", ")
            ));
        }
    }
    if let (Some(e), Some(m)) = (cap.conntrack_entries, cap.conntrack_max) {
        lines.push(format!("  Conntrack: {e}/{m} entries"));
    }
    if let Some(c) = &info.cluster {
        lines.push(format!(" Cluster Store: {}", info.cluster_store));
        lines.push(format!("  Node: {} ({})", c.node, c.addr));
        if c.healthy {
            lines.push(format!("  Health: healthy, {} live node(s)", c.nodes));
        } else {
            lines.push(format!("  Health: UNREACHABLE: {}", c.error));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary() {
        let info = InfoResponse {
            containers: 3,
            containers_running: 1,
            networks: 4,
            warnings: vec!["FORWARD policy is DROP".into()],
            capacity: berth_api::types::CapacityInfo {
                bridge_max_ports: 1023,
                networks: vec![berth_api::types::NetworkCapacity {
                    network: "web".into(),
                    driver: "bridge".into(),
                    bridge_ports: Some(2),
                    subnets: vec![berth_api::types::SubnetCapacity {
                        subnet: "10.1.0.0/24".into(),
                        used: 3,
                        usable: 253,
                    }],
                }],
                conntrack_entries: Some(5),
                conntrack_max: Some(262144),
            },
            ..InfoResponse::default()
        };
        let s = render(&info);
        assert!(
            s.contains("\n Capacity:\n  web (bridge): 2/1023 bridge ports, 10.1.0.0/24 3/253 addresses\n  Conntrack: 5/262144 entries"),
            "{s}"
        );
        assert!(s.contains("\n  Stopped: 2\n"));
        assert!(s.contains(" Networks: 4"));
        assert_eq!(
            warning_line(&info.warnings[0]),
            "WARNING: FORWARD policy is DROP"
        );
        assert_eq!(warning_line("WARNING: x"), "WARNING: x");
    }
}
