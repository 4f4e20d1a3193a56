//! `GET /containers/{id}/explain`: a container's exposure from the plan
//! (`berth_plan::explain`), and with `verify=1` real TCP probes from every vantage point this
//! host has — berthd's own namespace (the host) and each other running container's — compared
//! with what the plan says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::types::{Exposure, ExposureFlow, ProbeResult, VerifyReport};
use berth_kernel::probe::{self, Outcome};
use berth_plan::explain::{self as plan, Context, Member, Vantage};
use berth_plan::model::{NetworkMode, Status};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};

/// How long one probe waits for the handshake.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Probes in flight at once (each is a short-lived thread while it waits).
const PARALLEL: usize = 16;

impl Daemon {
    /// The exposure of container `query`; with `verify`, also the probes' findings (each probe
    /// reported on `progress` as it ends).
    pub async fn explain(
        &self,
        query: &str,
        verify: bool,
        progress: Option<mpsc::Sender<String>>,
    ) -> ApiResult<Exposure> {
        let subject = self.find_container(query)?;
        let nets = self.networks()?;
        let specs = self.containers()?;
        let holder_id = match &subject.mode {
            NetworkMode::Container(o) => o.clone(),
            _ => subject.id.clone(),
        };
        let mut pids = std::collections::BTreeMap::new();
        let mut members = Vec::new();
        for c in &specs {
            let st = self.state(&c.id)?;
            let running = st.status == Status::Running && st.pid > 0;
            if running {
                pids.insert(c.name.clone(), st.pid);
            }
            let mine = c.id == subject.id || c.id == holder_id;
            let published = if mine && running {
                crate::ports::doc(self, &c.id)?.published
            } else {
                Vec::new()
            };
            // A host-mode container's sockets are the host's: berthd's own /proc/self/net.
            let listening = if mine && running {
                let pid = if c.mode == NetworkMode::Host {
                    std::process::id() as i32
                } else {
                    st.pid
                };
                berth_kernel::probe::listening_tcp(pid)
                    .map_err(|e| tracing::debug!(container = %c.name, "listening sockets: {e}"))
                    .ok()
            } else {
                None
            };
            members.push((c, running, published, listening));
        }
        let user_rules = tokio::task::spawn_blocking(|| {
            berth_kernel::nft::list_table_json(None, "inet", "berth")
                .ok()
                .flatten()
                .map_or(0, |j| berth_plan::firewall::user_rule_count(&j))
        })
        .await
        .unwrap_or(0);
        let ctx = Context {
            networks: &nets,
            containers: members
                .iter()
                .map(|(c, running, published, listening)| Member {
                    spec: c,
                    running: *running,
                    published: published.clone(),
                    listening: listening.clone(),
                })
                .collect(),
            firewall: self.firewall_config(),
            user_rules,
        };
        let x = plan::explain(&ctx, &subject.id)
            .ok_or_else(|| ApiError::not_found(format!("No such container: {query}")))?;
        let mut out = wire(&x);
        if verify {
            out.verify = Some(run_probes(&x, &mut out, &pids, user_rules, progress).await);
        }
        Ok(out)
    }
}

/// The plan's exposure in the API's shape.
fn wire(x: &plan::Exposure) -> Exposure {
    let flow = |f: &plan::Flow| ExposureFlow {
        peer_kind: serde_json::to_value(f.peer_kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        peer: f.peer.clone(),
        target: f.target.clone(),
        ports: f.ports.clone(),
        allowed: f.allowed,
        rule: f.rule.clone(),
        cause: f.cause.clone(),
        fix: f.fix.clone().unwrap_or_default(),
        verified: String::new(),
    };
    Exposure {
        container: x.container.clone(),
        netns_of: x.netns_of.clone().unwrap_or_default(),
        mode: x.mode.clone(),
        running: x.running,
        addresses: x
            .addresses
            .iter()
            .map(|a| format!("{} on {} ({}, {})", a.addr, a.network, a.driver, a.ifname))
            .collect(),
        listening: x
            .listening
            .as_ref()
            .map(|l| l.iter().map(|s| format!("{s}/tcp")).collect()),
        published: x
            .published
            .iter()
            .map(|p| format!("{}->{}", p.host_text(), p.key()))
            .collect(),
        inbound: x.inbound.iter().map(flow).collect(),
        outbound: x.outbound.iter().map(flow).collect(),
        notes: x.notes.clone(),
        verify: None,
    }
}

fn vantage_text(v: &Vantage) -> String {
    match v {
        Vantage::Host => "the host".into(),
        Vantage::Container(n) => format!("container {n}"),
    }
}

/// Runs every probe of the inbound flows, marks each flow `agrees`/`DIFFERS`/…, and reports.
async fn run_probes(
    x: &plan::Exposure,
    out: &mut Exposure,
    pids: &std::collections::BTreeMap<String, i32>,
    user_rules: usize,
    progress: Option<mpsc::Sender<String>>,
) -> VerifyReport {
    let jobs: Vec<(usize, Vantage, SocketAddr, bool, Option<PathBuf>)> = x
        .inbound
        .iter()
        .enumerate()
        .flat_map(|(i, f)| {
            f.probes.iter().map(move |p| {
                let ns = match &p.from {
                    Vantage::Host => None,
                    Vantage::Container(n) => pids
                        .get(n)
                        .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net"))),
                };
                (i, p.from.clone(), p.dst, f.allowed, ns)
            })
        })
        .collect();
    let total = jobs.len();
    let done = Arc::new(AtomicUsize::new(0));
    let results: Vec<ProbeResult> =
        futures::stream::iter(jobs.into_iter().map(|(i, from, dst, allowed, ns)| {
            let progress = progress.clone();
            let done = done.clone();
            async move {
                let start = Instant::now();
                let outcome = match (&from, ns) {
                    (Vantage::Container(n), None) => {
                        Outcome::Error(format!("container {n} is not running"))
                    }
                    (_, ns) => probe::tcp_probe(ns, dst, PROBE_TIMEOUT).await,
                };
                let agrees = outcome.conclusive() && outcome.reached() == allowed;
                let r = ProbeResult {
                    from: vantage_text(&from),
                    to: dst.to_string(),
                    flow: i,
                    expected: if allowed { "open" } else { "blocked" }.into(),
                    outcome: outcome.text(),
                    agrees,
                    millis: start.elapsed().as_millis() as u64,
                };
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(tx) = &progress {
                    let _ = tx
                        .send(format!("{n}/{total} {} → {}: {}", r.from, r.to, r.outcome))
                        .await;
                }
                r
            }
        }))
        .buffered(PARALLEL)
        .collect()
        .await;

    let mut differences = Vec::new();
    for (i, f) in out.inbound.iter_mut().enumerate() {
        let mine: Vec<&ProbeResult> = results.iter().filter(|r| r.flow == i).collect();
        f.verified = if mine.is_empty() {
            "not probed".into()
        } else if mine
            .iter()
            .any(|r| !r.agrees && r.outcome.starts_with("error"))
        {
            "inconclusive".into()
        } else if mine.iter().all(|r| r.agrees) {
            "agrees".into()
        } else {
            "DIFFERS".into()
        };
        for r in mine
            .iter()
            .filter(|r| !r.agrees && !r.outcome.starts_with("error"))
        {
            let hint = if user_rules > 0 {
                " (chain user holds rules of yours: nft list chain inet berth user)"
            } else {
                " (nft list table inet berth; berth system check)"
            };
            differences.push(format!(
                "{} → {} ({} {}): the plan says {} ({}), the kernel: {}{hint}",
                r.from,
                r.to,
                f.target,
                f.ports,
                r.expected,
                if f.rule.is_empty() { &f.cause } else { &f.rule },
                r.outcome
            ));
        }
    }
    let mut not_probed = vec![
        "the outside (LAN): berthd cannot send from beyond the host; flows from the outside are \
         the plan's word only"
            .to_string(),
    ];
    if x.listening.as_ref().is_some_and(Vec::is_empty) {
        not_probed.push("its own addresses: nothing listens on TCP in its namespace".into());
    }
    if x.published
        .iter()
        .any(|p| p.proto != berth_plan::ports::Proto::Tcp)
    {
        not_probed.push("UDP and SCTP ports: a probe cannot tell a drop from silence".into());
    }
    if !x.running {
        not_probed.push("it is not running".into());
    }
    VerifyReport {
        agrees: differences.is_empty(),
        probes: results,
        differences,
        not_probed,
    }
}
