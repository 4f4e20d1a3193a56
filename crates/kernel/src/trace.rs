//! The kernel side of `berth trace`: the temporary trace table, the `NFT_MSG_TRACE` events
//! (what `nft monitor trace` reads: a `NETLINK_NETFILTER` socket subscribed to
//! `NFNLGRP_NFTRACE`), the rule set with handles, and orphan tables left by a crash.
//!
//! What the table holds and what the events mean is decided in `berth_plan::trace`; this module
//! only installs, reads and removes.

use std::path::Path;

use berth_plan::trace::{self as plan, Event, EventKind};

use crate::conntrack::{attrs, messages};
use crate::error::{KernelError, Result};
use crate::monitor::{subscribed, Monitor};

/// `NETLINK_NETFILTER` (linux/netlink.h).
const NETLINK_NETFILTER: isize = 12;
/// `NFNLGRP_NFTRACE` (linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTRACE: u32 = 9;
/// `NFNL_SUBSYS_NFTABLES`.
const SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_TRACE`.
const NFT_MSG_TRACE: u16 = 17;
/// `enum nft_trace_attributes` (linux/netfilter/nf_tables.h).
const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
/// In `NFTA_TRACE_VERDICT`: `NFTA_VERDICT_CODE` (be32), `NFTA_VERDICT_CHAIN` (string).
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// Receive buffer of the trace socket: a burst of events must not overrun it.
const RCVBUF: usize = 4 << 20;

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

fn string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// The trace events of one netlink datagram (other messages are skipped; garbage never
/// panics).
pub fn parse_datagram(buf: &[u8]) -> Vec<Event> {
    messages(buf)
        .into_iter()
        .filter(|(ty, _)| *ty == (SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE)
        .filter_map(|(_, payload)| parse_event(payload))
        .collect()
}

/// One `NFT_MSG_TRACE` payload: `nfgenmsg` (family, version, res_id) then attributes.
fn parse_event(payload: &[u8]) -> Option<Event> {
    let family = *payload.first()?;
    let mut e = Event {
        family: plan::family_name(family),
        ..Event::default()
    };
    let mut has_id = false;
    for (ty, v, _) in attrs(payload.get(4..)?) {
        match ty {
            NFTA_TRACE_TABLE => e.table = string(v),
            NFTA_TRACE_CHAIN => e.chain = string(v),
            NFTA_TRACE_RULE_HANDLE => {
                e.handle = v
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
            }
            NFTA_TRACE_TYPE => e.kind = be32(v).map(EventKind::from_code),
            NFTA_TRACE_VERDICT => {
                for (vt, vv, _) in attrs(v) {
                    match vt {
                        NFTA_VERDICT_CODE => e.verdict = be32(vv).map(|c| c as i32),
                        NFTA_VERDICT_CHAIN => e.target = Some(string(vv)),
                        _ => {}
                    }
                }
            }
            NFTA_TRACE_ID => {
                e.id = be32(v)?;
                has_id = true;
            }
            NFTA_TRACE_NETWORK_HEADER => e.network = v.to_vec(),
            NFTA_TRACE_TRANSPORT_HEADER => e.transport = v.to_vec(),
            NFTA_TRACE_IIF => e.iif = be32(v),
            NFTA_TRACE_OIF => e.oif = be32(v),
            NFTA_TRACE_MARK => e.mark = be32(v),
            NFTA_TRACE_NFPROTO => e.nfproto = be32(v),
            NFTA_TRACE_POLICY => e.policy = be32(v),
            _ => {}
        }
    }
    has_id.then_some(e)
}

/// A socket receiving the trace events of the caller's namespace (berthd's). Open it before
/// installing the trace table, so no event is missed. Must run inside the runtime.
pub struct TraceSocket {
    mon: Monitor,
}

impl TraceSocket {
    /// Subscribes to `NFNLGRP_NFTRACE`.
    pub fn open() -> Result<TraceSocket> {
        let sock = subscribed(NETLINK_NETFILTER, &[NFNLGRP_NFTRACE], "nftables trace")?;
        if let Err(e) = sock.set_rx_buf_sz(RCVBUF) {
            tracing::debug!("trace socket buffer: {e}");
        }
        Ok(TraceSocket {
            mon: Monitor::wrap(sock, "nftables trace")?,
        })
    }

    /// Subscribes to `NFNLGRP_NFTRACE` inside the namespace at `netns` (an overlay network's):
    /// the socket is made there, so it hears that namespace's events, and read from here.
    pub async fn open_in(netns: &Path) -> Result<TraceSocket> {
        let sock = crate::netns::run_in_netns_async(netns, || {
            subscribed(NETLINK_NETFILTER, &[NFNLGRP_NFTRACE], "nftables trace")
        })
        .await??;
        if let Err(e) = sock.set_rx_buf_sz(RCVBUF) {
            tracing::debug!("trace socket buffer: {e}");
        }
        Ok(TraceSocket {
            mon: Monitor::wrap(sock, "nftables trace")?,
        })
    }

    /// Waits for events, then returns those queued (of every trace in the namespace: the caller
    /// keeps its own) and whether the kernel dropped some (the socket overran).
    pub async fn next(&mut self) -> Result<(Vec<Event>, bool)> {
        let (grams, lost) = self.mon.datagrams().await?;
        Ok((grams.iter().flat_map(|g| parse_datagram(g)).collect(), lost))
    }
}

/// Installs trace `id`'s table in the caller's namespace (one transaction).
pub fn install(id: &str, filter: &plan::Filter, packets: u32) -> Result<()> {
    crate::nft::apply(None, &plan::table_script(id, filter, packets))
}

/// Removes a trace table; a table already gone is not an error.
pub fn remove(table: &str) -> Result<()> {
    match crate::nft::apply(None, &plan::delete_script(table)) {
        Ok(()) => Ok(()),
        Err(KernelError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Installs trace `id`'s tables in an overlay namespace (one transaction, run inside it).
pub fn install_in(netns: &Path, id: &str, filter: &plan::Filter, packets: u32) -> Result<()> {
    crate::nft::apply(Some(netns), &plan::ns_table_script(id, filter, packets))
}

/// Removes trace tables from an overlay namespace; tables (or a namespace) already gone are
/// not an error.
pub fn remove_in(netns: &Path, table: &str) -> Result<()> {
    if !netns.exists() {
        return Ok(());
    }
    match crate::nft::apply(Some(netns), &plan::ns_delete_script(table)) {
        Ok(()) => Ok(()),
        Err(KernelError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
            // One of the two was gone (a crash between them): delete the other alone.
            for fam in ["bridge", "inet"] {
                let _ = crate::nft::apply(Some(netns), &format!("delete table {fam} {table}\n"));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Removes every trace table from an overlay namespace (orphans of a crash). Returns their
/// names.
pub fn remove_orphans_in(netns: &Path) -> Result<Vec<String>> {
    // A trace leaves a `bridge` and an `inet` table of one name there: each name once.
    let found: std::collections::BTreeSet<String> =
        trace_tables_listed(&crate::nft::list_tables_json(Some(netns))?, None)
            .into_iter()
            .collect();
    for t in &found {
        remove_in(netns, t)?;
    }
    Ok(found.into_iter().collect())
}

/// The rule set with handles of an overlay namespace, parsed.
pub fn ruleset_in(netns: &Path) -> Result<plan::Rules> {
    Ok(plan::parse_ruleset(&crate::nft::list_ruleset_text(Some(
        netns,
    ))?))
}

/// Trace tables present in the caller's namespace (`inet` tables named `berth-trace-*`).
pub fn tables(netns: Option<&Path>) -> Result<Vec<String>> {
    if netns.is_none() && !crate::nft::exec_forced() {
        // One netlink dump of the table names (every berthd start looks), not nft's listing.
        match crate::nftnl::inet_tables() {
            Ok(names) => {
                return Ok(names
                    .into_iter()
                    .filter(|n| plan::is_trace_table(n))
                    .collect())
            }
            Err(e) => tracing::debug!("{e}: nft lists them"),
        }
    }
    Ok(trace_tables_listed(
        &crate::nft::list_tables_json(netns)?,
        Some("inet"),
    ))
}

/// The trace tables in `nft -j list tables` output, of `family` only when given.
fn trace_tables_listed(v: &serde_json::Value, family: Option<&str>) -> Vec<String> {
    v.get("nftables")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|o| o.get("table"))
                .filter(|t| {
                    family.is_none_or(|f| t.get("family").and_then(|x| x.as_str()) == Some(f))
                })
                .filter_map(|t| t.get("name").and_then(|n| n.as_str()))
                .filter(|n| plan::is_trace_table(n))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Removes every trace table (orphans of a crash: at berthd's start no trace runs). Returns
/// their names.
pub fn remove_orphans() -> Result<Vec<String>> {
    let found = tables(None)?;
    for t in &found {
        remove(t)?;
    }
    Ok(found)
}

/// The rule set with handles (`nft -a list ruleset`), parsed.
pub fn ruleset() -> Result<plan::Rules> {
    Ok(plan::parse_ruleset(&crate::nft::list_ruleset_text(None)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    }

    /// Captured from a 6.18 kernel (`NFNLGRP_NFTRACE`): a TCP SYN 10.77.0.2:42842 →
    /// 10.77.0.1:9, marked by `table inet berth-trace-1 chain pre` (rule handle 2, verdict
    /// continue), then its end-of-chain and policy events, then dropped by rule 2 of
    /// `table inet t chain inp`.
    const MARK: &str = "b4000000110a000000000000000000000100000008000f00000000020800040000000003080006000839fe2a08000200707265001200010062657274682d74726163652d310000000c00030000000000000000020c00050008000100ffffffff08000a000000000206000b0000010000180008004500003cf6e5400040062f3a0a4d00020a4d000118000900a75a000975b0995a00000000a002faf014cb0000120007001a2ae5ce87ed1e0ce216343108000000";
    const END: &str = "54000000110a000000000000000000000100000008000f00000000020800040000000003080006000839fe2a08000200707265001200010062657274682d74726163652d310000000c00050008000100ffffffff";
    const POLICY: &str = "50000000110a000000000000000000000100000008000f00000000020800040000000001080006000839fe2a08000200707265001200010062657274682d74726163652d310000000800100000000001";
    const DROP: &str = "a8000000110a000000000000000000000100000008000f00000000020800040000000003080006000839fe2a08000200696e700006000100740000000c00030000000000000000020c000500080001000000000008000a000000000206000b0000010000180008004500003cf6e5400040062f3a0a4d00020a4d000118000900a75a000975b0995a00000000a002faf014cb0000120007001a2ae5ce87ed1e0ce216343108000000";

    #[test]
    fn parses_captured_trace_events() {
        let mark = parse_datagram(&hex(MARK));
        assert_eq!(mark.len(), 1);
        let m = &mark[0];
        assert_eq!(m.id, 0x0839fe2a);
        assert_eq!(m.family, "inet");
        assert_eq!(m.table, "berth-trace-1");
        assert_eq!(m.chain, "pre");
        assert_eq!(m.handle, Some(2));
        assert_eq!(m.kind, Some(EventKind::Rule));
        assert_eq!(m.verdict, Some(-1));
        assert_eq!(m.nfproto, Some(2));
        assert_eq!(m.iif, Some(2));
        let h = plan::decode(&m.network, &m.transport).expect("header");
        assert_eq!(h.text(), "tcp 10.77.0.2:42842 → 10.77.0.1:9 [SYN]");

        let end = &parse_datagram(&hex(END))[0];
        assert_eq!((end.handle, end.verdict), (None, Some(-1)));
        let pol = &parse_datagram(&hex(POLICY))[0];
        assert_eq!(pol.kind, Some(EventKind::Policy));
        assert_eq!(pol.policy, Some(1));
        assert!(!pol.is_drop());
        let drop = &parse_datagram(&hex(DROP))[0];
        assert_eq!((drop.table.as_str(), drop.chain.as_str()), ("t", "inp"));
        assert_eq!(drop.handle, Some(2));
        assert!(drop.is_drop());
        assert_eq!(drop.id, m.id, "one packet, one trace id");

        // Several messages in one datagram, and garbage.
        let both = [hex(MARK), hex(DROP)].concat();
        assert_eq!(parse_datagram(&both).len(), 2);
        assert!(parse_datagram(&[]).is_empty());
        assert!(parse_datagram(&hex(&MARK[..60])).is_empty());
        let mut cut = hex(MARK);
        cut.truncate(70);
        assert!(parse_datagram(&cut).is_empty());
    }
}
