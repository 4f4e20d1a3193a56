//! Keeps berth's nftables table (`table inet berth`) converged: the static part once at start,
//! then only element diffs per change, each one atomic `nft -f -` transaction.

use std::sync::Mutex;

use anyhow::Context;
use berth_plan::firewall::{self as fw, Elements, FirewallConfig};
use berth_plan::model::NetworkSpec;

/// The daemon's view of what its table holds.
pub struct Firewall {
    /// Elements as last applied (or observed at start): diffs are computed against this, so a
    /// change costs O(what changed), not a read of the whole table.
    applied: Mutex<Option<Elements>>,
}

impl Firewall {
    /// A firewall that has not been initialized yet.
    pub fn new() -> Firewall {
        Firewall {
            applied: Mutex::new(None),
        }
    }

    /// Installs the table, its sets and the static chains (idempotent; never touches chain
    /// `user`), then reads back which elements the kernel has.
    pub fn init(&self, cfg: FirewallConfig) -> anyhow::Result<()> {
        berth_kernel::nft::apply(None, &fw::base_script(&cfg))
            .context("applying the base rule set")?;
        let observed = berth_kernel::nft::list_table_json(None, "inet", "berth")
            .context("reading table inet berth back")?
            .map(|json| fw::parse_observed(&json))
            .unwrap_or_default();
        if let Ok(mut slot) = self.applied.lock() {
            *slot = Some(observed);
        }
        Ok(())
    }

    /// Makes the table's elements exactly those `networks` need (one transaction, only the
    /// difference).
    pub fn sync(&self, networks: &[NetworkSpec]) -> anyhow::Result<()> {
        let desired = fw::desired_elements(networks);
        let mut slot = self
            .applied
            .lock()
            .map_err(|_| anyhow::anyhow!("firewall state lock poisoned"))?;
        let current = slot.clone().unwrap_or_default();
        let script = fw::diff_script(&current, &desired);
        if !script.is_empty() {
            tracing::debug!(%script, "nft transaction");
            berth_kernel::nft::apply(None, &script)?;
        }
        *slot = Some(desired);
        Ok(())
    }
}

/// Base chains of other tables hooked on `forward` with policy drop: `(family, table, chain)`.
pub fn forward_drop_chains(ruleset: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let Some(items) = ruleset.get("nftables").and_then(|v| v.as_array()) else {
        return out;
    };
    for item in items {
        let Some(chain) = item.get("chain") else {
            continue;
        };
        let s = |k: &str| {
            chain
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        if s("hook") == "forward"
            && s("policy") == "drop"
            && !(s("family") == "inet" && s("table") == "berth")
        {
            out.push((s("family"), s("table"), s("name")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_foreign_forward_drop_policies_only() {
        let json = serde_json::json!({"nftables": [
            {"metainfo": {}},
            {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "drop"}},
            {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "hook": "input", "policy": "drop"}},
            {"chain": {"family": "inet", "table": "berth", "name": "forward", "hook": "forward", "policy": "drop"}},
            {"chain": {"family": "inet", "table": "fw", "name": "fwd", "hook": "forward", "policy": "accept"}}
        ]});
        assert_eq!(
            forward_drop_chains(&json),
            vec![(
                "ip".to_string(),
                "filter".to_string(),
                "FORWARD".to_string()
            )]
        );
    }
}
