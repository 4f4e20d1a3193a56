//! The reconcile loop: one path for everything berth owns in the kernel.
//!
//! ```text
//! intent (store) ─▶ plan::driver::desired ┐
//!                                        ├─▶ plan::host::diff ─▶ steps ─▶ KernelOps::apply
//! KernelOps::observe(ObserveRequest) ────┘
//! ```
//!
//! Triggers: every API mutation (scoped to the objects it changed), start-up (everything),
//! change notifications from the kernel (links and addresses of berthd's namespace, nft
//! commits, links/addresses/routes inside each running container) and a timer. Passes run
//! under the daemon's mutation lock, so a pass never sees an operation half-done. Each step is
//! idempotent: whatever a crash interrupts, the next pass converges.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_kernel::gate::LinkGate;
use berth_kernel::ops::KernelOps;
use berth_plan::firewall::{Elements, FirewallConfig};
use berth_plan::host::{
    self, DesiredHost, ObserveRequest, ObservedFirewall, ObservedHost, ObservedNetns, Plan,
    Problem, Step, StepOp,
};

use crate::failpoint;

/// An endpoint's creation started before the pass that plans it. A `network connect` starts
/// its new endpoint's veth (on the endpoint's own thread) as soon as it has planned the
/// endpoint, while it stores the intent and its pass reads the store and plans (≈ 0.7 ms);
/// the pass takes it over where its plan
/// has that same creation ([`Prestart::takes`]) and opens its gate with the outcome of the
/// firewall elements that guard it, exactly as for a creation it starts itself. A creation
/// the pass does not take over is called off before anything observes the kernel
/// ([`Prestart::cancel`]): its gate opens with a refusal and the thread deletes the link.
pub struct Prestart {
    /// The creation as started (its plan without routes: see
    /// [`berth_plan::driver::endpoint_creation`]).
    op: StepOp,
    /// What holds its container side down until the guarding elements are in.
    gate: LinkGate,
    /// The creation, polled once already (its thread runs).
    run: berth_kernel::ops::BoxFut<'static, Result<(), berth_kernel::error::KernelError>>,
    /// Its outcome, when that first poll already had one (it failed before its thread).
    done: Option<Result<(), berth_kernel::error::KernelError>>,
}

impl Prestart {
    /// Starts `op` (a [`StepOp::CreateEndpoint`]) through `kernel`, gated: polled once here
    /// ([`poll_once`]), its thread runs while the caller goes on.
    pub async fn start(kernel: Arc<dyn KernelOps>, op: StepOp) -> Prestart {
        let gate = LinkGate::new();
        let (g, o) = (gate.clone(), op.clone());
        let mut run: berth_kernel::ops::BoxFut<'static, _> =
            Box::pin(async move { kernel.apply_gated(&o, &g).await });
        let done = poll_once(&mut run).await;
        Prestart {
            op,
            gate,
            run,
            done,
        }
    }

    /// When `op` is this creation ([`berth_plan::driver::taken_over`]): the steps to apply
    /// once it is done.
    pub fn takes(&self, op: &StepOp) -> Option<Vec<StepOp>> {
        berth_plan::driver::taken_over(&self.op, op)
    }

    /// Waits for the creation's outcome.
    async fn finish(self) -> Result<(), berth_kernel::error::KernelError> {
        match self.done {
            Some(r) => r,
            None => self.run.await,
        }
    }

    /// Calls the creation off (`why`: for the log): the gate refuses, so the thread deletes
    /// the link it made (or it failed already), and this returns once it has.
    pub async fn cancel(self, why: &str) {
        self.gate.open(Err(why.to_string()));
        let what = match &self.op {
            StepOp::CreateEndpoint { plan, .. } => format!("endpoint {}", plan.host_ifname),
            op => op.action().to_string(),
        };
        match self.finish().await {
            // Not expected: a refused gate fails a gated creation, whose thread then deletes
            // what it made. Said loudly should a kernel layer ever not.
            Ok(()) => tracing::warn!("{what}: done although called off ({why})"),
            Err(e) => tracing::debug!("{what}: called off ({why}): {e}"),
        }
    }
}

/// Polls `f` once, on the caller's task: its output if that was enough. A kernel step's first
/// poll opens what it needs and starts the thread that does the work, which then runs while
/// the caller goes on (a spawned task would wait in this worker's LIFO slot until the caller
/// yields).
pub(crate) async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// What started a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An API call changed the intent.
    Api,
    /// berthd started (after a crash or not).
    Startup,
    /// The kernel reported a change.
    Notification,
    /// The periodic check.
    Timer,
    /// `berth system check`: observe and diff only.
    Check,
    /// The cluster's intent changed (an overlay network or another host's endpoint came or
    /// went): carried out like a request, not counted as drift.
    Cluster,
}

impl Trigger {
    /// Whether steps applied by such a pass repair drift (as opposed to carrying out a request).
    fn repairs(self) -> bool {
        matches!(
            self,
            Trigger::Startup | Trigger::Notification | Trigger::Timer
        )
    }
}

/// Counters of the loop, shown in `berth info` (`Reconciler`) and `/metrics`: the API's own
/// type, kept up to date in place.
pub type Stats = berth_api::types::ReconcilerInfo;

/// The counters as Prometheus text lines.
pub fn metrics(s: &Stats) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in [
        ("passes_total", "counter", "Reconcile passes run.", s.passes),
        (
            "repairs_total",
            "counter",
            "Kernel steps that repaired drift.",
            s.repairs,
        ),
        (
            "steps_total",
            "counter",
            "Kernel steps applied.",
            s.steps_applied,
        ),
        (
            "errors_total",
            "counter",
            "Kernel steps that failed.",
            s.errors,
        ),
        (
            "problems",
            "gauge",
            "Objects in the way that are not berth's.",
            s.problems.len() as u64,
        ),
    ] {
        out.push_str(&format!(
            "# HELP berth_reconcile_{name} {help}\n# TYPE berth_reconcile_{name} {kind}\nberth_reconcile_{name} {value}\n"
        ));
    }
    out
}

/// The result of one pass.
#[derive(Debug, Clone)]
pub struct PassReport {
    /// The planned steps (all of them, applied or not).
    pub plan: Plan,
    /// Steps applied.
    pub applied: usize,
    /// Every step that failed, with its error (teardown collects every error).
    pub errors: Vec<String>,
    /// What was observed.
    pub observed: ObservedHost,
    /// Whether the firewall steps all succeeded (the daemon's element cache is then exact).
    pub firewall_ok: bool,
    /// The failed steps that hit a kernel limit (a full bridge): the user's to resolve (409),
    /// also listed in `errors`.
    pub full: Vec<String>,
    /// The overlay networks' namespaces' plan (its steps run before the host's, its late
    /// steps after them).
    pub overlay: berth_plan::overlayns::OverlayPlan,
}

impl Default for PassReport {
    /// Nothing planned, nothing failed: `firewall_ok` holds until a firewall step fails (a
    /// report that began `false` made the daemon forget its firewall cache after every pass
    /// without a firewall step of its own, stop 29).
    fn default() -> Self {
        PassReport {
            plan: Plan::default(),
            applied: 0,
            errors: Vec::new(),
            observed: ObservedHost::default(),
            firewall_ok: true,
            full: Vec::new(),
            overlay: Default::default(),
        }
    }
}

impl PassReport {
    /// Problems of the plan.
    pub fn problems(&self) -> &[Problem] {
        &self.plan.problems
    }
}

/// Runs passes against a [`KernelOps`].
pub struct Reconciler {
    kernel: Arc<dyn KernelOps>,
    stats: Mutex<Stats>,
    /// Veths whose deletion runs in the background: not drift while it lasts.
    deleting: Arc<Mutex<BTreeSet<String>>>,
    /// Links of [`Reconciler::deleting`] whose background deletion ended less than
    /// [`GONE_NOTICE`] ago: their removal's notification may still be on its way.
    deleted: Arc<Mutex<BTreeSet<String>>>,
}

/// How long a link berth deleted is remembered for its removal's notification.
const GONE_NOTICE: std::time::Duration = std::time::Duration::from_secs(2);

impl Reconciler {
    /// A loop over `kernel`.
    pub fn new(kernel: Arc<dyn KernelOps>) -> Reconciler {
        Reconciler {
            kernel,
            stats: Mutex::new(Stats::default()),
            deleting: Arc::new(Mutex::new(BTreeSet::new())),
            deleted: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// Whether berth expects link `name` to vanish (a background deletion in flight or just
    /// done, an exited container's veth): its removal is not drift for the notification loop.
    pub fn expects_gone(&self, name: &str) -> bool {
        let has = |set: &Mutex<BTreeSet<String>>| set.lock().is_ok_and(|s| s.contains(name));
        has(&self.deleting) || has(&self.deleted)
    }

    /// Links the kernel is about to remove by itself (the veths of a container that exited go
    /// with its namespace, ~40 ms later, in the kernel's own cleanup work): not drift for a
    /// while, so no pass deletes them synchronously meanwhile (a veth deletion holds the loop
    /// for ~20 ms). Still there after that, they are orphans like any other.
    pub fn expect_gone(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        if let Ok(mut d) = self.deleting.lock() {
            d.extend(names.iter().cloned());
        }
        let deleting = self.deleting.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            if let Ok(mut d) = deleting.lock() {
                for n in &names {
                    d.remove(n);
                }
            }
        });
    }

    /// The kernel.
    pub fn kernel(&self) -> &Arc<dyn KernelOps> {
        &self.kernel
    }

    /// A copy of the counters.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// [`Reconciler::pass_known`] with no namespace known beforehand (the tests' shorthand).
    #[cfg(test)]
    pub async fn pass(
        &self,
        trigger: Trigger,
        desired: &DesiredHost,
        req: ObserveRequest,
        fw_cache: Option<ObservedFirewall>,
        refine: bool,
        dry_run: bool,
    ) -> Result<PassReport, berth_kernel::error::KernelError> {
        self.pass_known(
            trigger,
            desired,
            req,
            BTreeMap::new(),
            fw_cache,
            refine,
            dry_run,
        )
        .await
    }

    /// One pass: observe what `req` asks for (with `fw_cache` standing in for the nft table
    /// when it is not read back), diff against `desired`, apply the steps in order unless
    /// `dry_run`. With `refine`, namespaces of endpoints the first diff wants to (re)create are
    /// observed too before the final diff (so their default routes come back with them).
    /// Container namespaces already observed (`known`, by path) are taken as they are instead
    /// of read again (start-up reads every adopted container's namespace as it subscribes to
    /// its notifications); other callers pass none.
    #[allow(clippy::too_many_arguments)]
    pub async fn pass_known(
        &self,
        trigger: Trigger,
        desired: &DesiredHost,
        mut req: ObserveRequest,
        mut known: BTreeMap<String, ObservedNetns>,
        fw_cache: Option<ObservedFirewall>,
        refine: bool,
        dry_run: bool,
    ) -> Result<PassReport, berth_kernel::error::KernelError> {
        let started = Instant::now();
        // Only what the request asks for (a namespace not asked for stays out of the diff).
        known.retain(|ns, _| req.netns.contains(ns));
        let wanted = req.netns.clone();
        req.netns.retain(|ns| !known.contains_key(ns));
        let mut observed = self.kernel.observe(&req).await?;
        observed.netns.extend(known.clone());
        let observed_us = started.elapsed().as_micros() as u64;
        if observed.firewall.is_none() {
            observed.firewall = fw_cache.clone();
        }
        let mut plan = host::diff(&observed, desired);
        if refine {
            let extra: BTreeSet<String> = plan
                .steps
                .iter()
                .filter_map(|s| match &s.op {
                    StepOp::CreateEndpoint { plan, .. } => Some(plan.netns.clone()),
                    StepOp::AttachPort { veth, .. } => {
                        desired.endpoints.get(veth).map(|e| e.plan.netns.clone())
                    }
                    _ => None,
                })
                .filter(|ns| !wanted.contains(ns))
                .collect();
            if !extra.is_empty() {
                req.netns.extend(extra);
                observed = self.kernel.observe(&req).await?;
                observed.netns.extend(known);
                if observed.firewall.is_none() {
                    observed.firewall = fw_cache;
                }
                plan = host::diff(&observed, desired);
            }
        }
        let mut report = PassReport {
            plan,
            observed,
            ..PassReport::default()
        };
        if dry_run {
            // A check right after a disconnect or an exit must not call the veth berth is
            // deleting in the background an orphan.
            self.leave_in_flight(&mut report.plan);
            return Ok(report);
        }
        let whole = req.links.is_none();
        Ok(self
            .execute(
                trigger,
                report,
                started,
                Some(observed_us),
                whole,
                &mut None,
            )
            .await)
    }

    /// Takes out of `plan` the deletions of links already on their way out (deleted in the
    /// background, or going with their container's namespace): they are left to that, unless
    /// the plan creates the name again (a restart right after the exit must delete the
    /// leftover first, or the creation fails with EEXIST). Returns the names it creates.
    fn leave_in_flight(&self, plan: &mut Plan) -> BTreeSet<String> {
        // Names this pass creates again (a leftover veth replaced by a restart's endpoint):
        // their deletion must finish before the creation, so it is neither skipped nor
        // deferred.
        let recreated: BTreeSet<String> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                StepOp::CreateEndpoint { plan, .. } => Some(plan.host_ifname.clone()),
                _ => None,
            })
            .collect();
        let in_flight = self.deleting.lock().map(|d| d.clone()).unwrap_or_default();
        plan.steps.retain(|s| match &s.op {
            StepOp::DeleteLink { name, .. } => {
                !in_flight.contains(name) || recreated.contains(name)
            }
            StepOp::DeleteContainerLink { netns, ifname } => {
                !in_flight.contains(&host::sublink_key(netns, ifname))
            }
            _ => true,
        });
        recreated
    }

    /// A pass that assumes the kernel holds `assumed` (what the intent before an API call's
    /// change made, [`host::assumed`]) instead of observing it: the diff is exactly the
    /// change's steps, applied as a pass's. The caller falls back to an observing pass when
    /// any step fails (the assumption was wrong). A creation already started for the call
    /// (`prestart`) is taken over where the plan has it (and left in `prestart` otherwise,
    /// for the caller to call off).
    pub async fn pass_assumed(
        &self,
        trigger: Trigger,
        desired: &DesiredHost,
        assumed: ObservedHost,
        prestart: &mut Option<Prestart>,
    ) -> PassReport {
        let started = Instant::now();
        let plan = host::diff(&assumed, desired);
        let report = PassReport {
            plan,
            observed: assumed,
            ..PassReport::default()
        };
        self.execute(trigger, report, started, None, false, prestart)
            .await
    }

    /// Applies a pass's planned steps in order (deferring veth deletions of API calls), counts
    /// and logs them. `whole`: the pass looked at every link (its problems are the host's).
    /// A step that `prestart` already runs is awaited instead of applied (see [`Prestart`]).
    async fn execute(
        &self,
        trigger: Trigger,
        mut report: PassReport,
        started: Instant,
        observed_us: Option<u64>,
        whole: bool,
        prestart: &mut Option<Prestart>,
    ) -> PassReport {
        let defer_deletes = trigger == Trigger::Api;
        let recreated = self.leave_in_flight(&mut report.plan);
        let steps = std::mem::take(&mut report.plan.steps);
        let mut i = 0;
        while i < steps.len() {
            let step = &steps[i];
            // An API call does not wait for a veth's deletion (~20 ms of RCU grace periods in
            // the kernel): its endpoint is already unusable (retired, or its container gone),
            // so the deletion runs in the background. If berthd dies first, the veth is an
            // orphan with berth's mark, and the next start-up pass deletes it.
            // The same for a retired macvlan/ipvlan link (down, without addresses, renamed).
            let deferred = match (defer_deletes, &step.op) {
                (true, StepOp::DeleteLink { name, .. }) => report
                    .observed
                    .links
                    .get(name)
                    .is_some_and(|l| l.kind.as_deref() == Some("veth") && !recreated.contains(name))
                    .then(|| name.clone()),
                (true, StepOp::DeleteContainerLink { netns, ifname }) => {
                    host::is_retired(ifname).then(|| host::sublink_key(netns, ifname))
                }
                _ => None,
            };
            if let Some(name) = deferred {
                let kernel = self.kernel.clone();
                let op = step.op.clone();
                let what = step.to_string();
                let deleting = self.deleting.clone();
                let deleted = self.deleted.clone();
                if let Ok(mut d) = deleting.lock() {
                    d.insert(name.clone());
                }
                tokio::spawn(async move {
                    // A veth's on a thread of its own (see `KernelOps::delete_link_detached`).
                    let result = match op {
                        StepOp::DeleteLink { name, netns: None } => {
                            kernel.delete_link_detached(name).await
                        }
                        op => kernel.apply(&op).await,
                    };
                    if let Err(e) = result {
                        tracing::warn!("background {what}: {e}");
                    }
                    if let Ok(mut d) = deleted.lock() {
                        d.insert(name.clone());
                    }
                    if let Ok(mut d) = deleting.lock() {
                        d.remove(&name);
                    }
                    tokio::time::sleep(GONE_NOTICE).await;
                    if let Ok(mut d) = deleted.lock() {
                        d.remove(&name);
                    }
                });
                report.applied += 1;
                log_step(trigger, step);
                self.note_applied(trigger, step);
                failpoint::boundary("deferred veth deletion");
                i += 1;
                continue;
            }
            let gated = gated_links(&steps[i..]);
            if gated.is_empty() {
                let result = match take_prestart(prestart, &step.op) {
                    // Nothing guards it in this pass: nothing to wait for.
                    Some((p, after)) => {
                        p.gate.open(Ok(()));
                        self.finish_prestart(p, after).await
                    }
                    None => self.kernel.apply(&step.op).await,
                };
                self.record(trigger, &mut report, step, result);
                i += 1;
                continue;
            }
            // The firewall elements that guard new endpoints, and those endpoints, at the
            // same time: each link is made and configured meanwhile and goes up only once
            // the transaction is in (`berth_kernel::gate`); a failed transaction rolls them
            // back. The links among themselves stay in order.
            let gate = LinkGate::new();
            // Links already started (a connect's endpoint): their own gates open with this one.
            let taken: Vec<Option<(Prestart, Vec<StepOp>)>> = gated
                .iter()
                .map(|link| take_prestart(prestart, &link.op))
                .collect();
            let started_gates: Vec<LinkGate> = taken
                .iter()
                .flatten()
                .map(|(p, _)| p.gate.clone())
                .collect();
            let firewall = async {
                let result = self.kernel.apply(&step.op).await;
                let outcome = result.as_ref().map(drop).map_err(|e| e.to_string());
                for g in &started_gates {
                    g.open(outcome.clone());
                }
                gate.open(outcome);
                result
            };
            let links = async {
                let mut results = Vec::with_capacity(gated.len());
                for (link, taken) in gated.iter().zip(taken) {
                    results.push(match taken {
                        Some((p, after)) => self.finish_prestart(p, after).await,
                        None => self.kernel.apply_gated(&link.op, &gate).await,
                    });
                }
                results
            };
            let (result, results) = tokio::join!(firewall, links);
            self.record(trigger, &mut report, step, result);
            for (link, result) in gated.iter().zip(results) {
                self.record(trigger, &mut report, link, result);
            }
            i += 1 + gated.len();
        }
        report.plan.steps = steps;
        if let Ok(mut s) = self.stats.lock() {
            s.passes += 1;
            s.errors += report.errors.len() as u64;
            if let Some(e) = report.errors.last() {
                s.last_error = Some(e.clone());
            }
            if whole {
                s.problems = report
                    .plan
                    .problems
                    .iter()
                    .map(|p| format!("{}: {}", p.object, p.message))
                    .collect();
            }
        }
        if !report.plan.steps.is_empty() {
            tracing::debug!(
                ?trigger,
                steps = report.plan.steps.len(),
                applied = report.applied,
                observed_us,
                elapsed_us = started.elapsed().as_micros() as u64,
                "reconcile pass"
            );
        }
        report
    }

    /// Waits for a started creation the pass took over, then applies what its plan adds to it
    /// (a gateway endpoint's routes: one trip into the namespace more than a creation that
    /// carries them).
    async fn finish_prestart(
        &self,
        p: Prestart,
        after: Vec<StepOp>,
    ) -> Result<(), berth_kernel::error::KernelError> {
        p.finish().await?;
        for op in &after {
            self.kernel.apply(op).await?;
        }
        Ok(())
    }

    /// Applies overlay namespace steps in order ([`berth_kernel::overlayns::apply`]; `host`
    /// is berthd's namespace's kernel, `held` the kernels kept per overlay namespace),
    /// counted and logged like a pass's steps; errors go to `report`.
    pub async fn apply_overlay(
        &self,
        trigger: Trigger,
        host: &berth_kernel::link::Kernel,
        held: &berth_kernel::overlayns::Namespaces,
        steps: &[berth_plan::overlayns::NsStep],
        report: &mut PassReport,
    ) {
        for step in steps {
            match berth_kernel::overlayns::apply(host, held, &step.op).await {
                Ok(()) => {
                    report.applied += 1;
                    match trigger {
                        Trigger::Api | Trigger::Check | Trigger::Cluster => {
                            tracing::debug!("applied: {step}")
                        }
                        Trigger::Startup => tracing::info!("repaired at start-up: {step}"),
                        Trigger::Notification | Trigger::Timer => {
                            tracing::warn!("repaired drift ({trigger:?}): {step}")
                        }
                    }
                    self.note_repair(trigger, step);
                    failpoint::boundary(step.op.action());
                }
                Err(e) => {
                    let msg = format!("{step}: {e}");
                    tracing::warn!("reconcile: {msg}");
                    if matches!(step.op, berth_plan::overlayns::NsOp::GuardElements { .. }) {
                        report.firewall_ok = false;
                    }
                    report.errors.push(msg);
                }
            }
        }
    }

    /// Applies steps decided without observing the kernel (another host's endpoint from the
    /// cluster's watch: its entries are known exactly), counted like a pass's steps but not
    /// as a pass, and logged at debug level: every host would log a line at info for each
    /// container started or removed anywhere in the cluster, and formatting and writing it
    /// was ≈ 4 % of a receiver's CPU with 20 hosts (a pass's steps, drift repairs included,
    /// keep their level). The caller holds the daemon's lock, as for a pass. Returns the
    /// failed steps with their errors.
    pub async fn apply_steps(&self, trigger: Trigger, steps: &[Step]) -> Vec<String> {
        let mut errors = Vec::new();
        for step in steps {
            match self.kernel.apply(&step.op).await {
                Ok(()) => {
                    tracing::debug!("applied ({trigger:?}): {step}");
                    self.note_applied(trigger, step);
                }
                Err(e) => {
                    let msg = format!("{step}: {e}");
                    tracing::debug!("reconcile: {msg}");
                    errors.push(msg);
                }
            }
        }
        errors
    }

    /// Counts, logs and marks the boundary of one applied step, or records its error.
    fn record(
        &self,
        trigger: Trigger,
        report: &mut PassReport,
        step: &Step,
        result: Result<(), berth_kernel::error::KernelError>,
    ) {
        match result {
            Ok(()) => {
                report.applied += 1;
                log_step(trigger, step);
                self.note_applied(trigger, step);
                failpoint::boundary(step.action());
            }
            Err(e) => {
                if matches!(
                    step.op,
                    StepOp::FirewallBase { .. } | StepOp::FirewallElements { .. }
                ) {
                    report.firewall_ok = false;
                }
                if e.is_full() {
                    report.full.push(e.to_string());
                }
                let msg = format!("{step}: {e}");
                tracing::warn!("reconcile: {msg}");
                report.errors.push(msg);
            }
        }
    }

    fn note_applied(&self, trigger: Trigger, step: &Step) {
        self.note_repair(trigger, step);
    }

    /// Counts an applied step (`what`: the step, for people), and a repair when `trigger`
    /// repairs.
    fn note_repair(&self, trigger: Trigger, what: &dyn std::fmt::Display) {
        if let Ok(mut s) = self.stats.lock() {
            s.steps_applied += 1;
            if trigger.repairs() {
                s.repairs += 1;
                s.last_repair = Some(what.to_string());
                s.last_repair_at = Some(crate::ids::now_rfc3339());
            }
        }
    }
}

/// `prestart`'s creation with the steps to apply after it, when it is `op` (taken out).
fn take_prestart(prestart: &mut Option<Prestart>, op: &StepOp) -> Option<(Prestart, Vec<StepOp>)> {
    let after = prestart.as_ref()?.takes(op)?;
    prestart.take().map(|p| (p, after))
}

/// The endpoints that follow `steps[0]` when it is a firewall-elements step and may be made
/// while it is applied, brought up only after it (the run of `CreateEndpoint`/`CreateSublink`
/// right after it: the diff puts the new elements just before the endpoints that need them).
fn gated_links(steps: &[Step]) -> &[Step] {
    let Some((first, rest)) = steps.split_first() else {
        return &[];
    };
    if !matches!(first.op, StepOp::FirewallElements { .. }) {
        return &[];
    }
    let n = rest
        .iter()
        .take_while(|s| {
            matches!(
                s.op,
                StepOp::CreateEndpoint { .. } | StepOp::CreateSublink { .. }
            )
        })
        .count();
    &rest[..n]
}

fn log_step(trigger: Trigger, step: &Step) {
    if let StepOp::FirewallElements { script, .. } = &step.op {
        // What the elements' step changed (its start: a range of ports is thousands), for
        // whoever reads the debug log; not built at all otherwise (every connect has one).
        if tracing::enabled!(tracing::Level::DEBUG) {
            let head: String = script.trim().chars().take(300).collect();
            tracing::debug!(script = %head, bytes = script.len(), "firewall elements");
        }
    }
    match trigger {
        Trigger::Api | Trigger::Check => tracing::debug!("applied: {step}"),
        Trigger::Cluster => tracing::info!("applied for the cluster: {step}"),
        Trigger::Startup => tracing::info!("repaired at start-up: {step}"),
        Trigger::Notification | Trigger::Timer => {
            tracing::warn!("repaired drift ({trigger:?}): {step}")
        }
    }
}

/// The element cache after a pass: what the table holds now, as far as berth knows.
pub fn firewall_after(
    report: &PassReport,
    desired: &DesiredHost,
) -> Option<(FirewallConfig, Elements)> {
    if !report.firewall_ok {
        return None;
    }
    let observed = report.observed.firewall.as_ref()?;
    Some((
        desired.firewall,
        host::elements_after(&observed.elements, desired),
    ))
}

/// Why the loop should look again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wake {
    /// Links or addresses of berthd's namespace changed.
    Host,
    /// An nft commit happened (any table).
    Nft,
    /// Something changed inside a container's namespace.
    Container(String),
    /// The periodic full check.
    Timer,
}

/// How long notifications are gathered before a pass runs: a burst (a container's start, an
/// `ip link del` of a bridge with many ports) becomes one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(15);

#[cfg(test)]
mod tests {
    use super::*;
    use berth_kernel::ops::FakeKernel;
    use berth_plan::driver::{desired, ForwardingIntent, RunningContainer};
    use berth_plan::firewall::FirewallConfig;
    use berth_plan::model::{ContainerSpec, NetworkSpec};

    /// A planned network `name` with id `id` × 64 on `subnet`, next to `existing`.
    fn network(name: &str, id: char, subnet: &str, existing: &[NetworkSpec]) -> NetworkSpec {
        let req = berth_plan::network::NetworkRequest {
            name: name.into(),
            ipam: vec![berth_plan::network::IpamRequest {
                subnet: Some(subnet.into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        berth_plan::network::plan_network(
            &req,
            id.to_string().repeat(64),
            String::new(),
            existing,
            &[],
        )
        .expect("plan network")
    }

    /// `c` with one more endpoint, on `net`, with id `ep_id` × 64.
    fn joined(c: &ContainerSpec, net: &NetworkSpec, ep_id: char) -> ContainerSpec {
        let mut c = c.clone();
        let ep = berth_plan::network::plan_endpoint(
            net,
            &c,
            std::slice::from_ref(&c),
            &Default::default(),
            ep_id.to_string().repeat(64),
        )
        .expect("plan endpoint");
        c.endpoints.push(ep);
        c
    }

    fn world() -> (Vec<NetworkSpec>, Vec<ContainerSpec>) {
        let web = network("web", 'a', "10.1.0.0/24", &[]);
        let c = ContainerSpec::new("c".repeat(64), "api", vec!["sleep".into()]);
        let c = joined(&c, &web, 'e');
        (vec![web], vec![c])
    }

    fn desired_of(nets: &[NetworkSpec], cs: &[ContainerSpec]) -> DesiredHost {
        let running: Vec<RunningContainer<'_>> = cs
            .iter()
            .map(|c| RunningContainer {
                spec: c,
                netns: "/proc/4242/ns/net".into(),
            })
            .collect();
        desired(
            nets,
            &running,
            FirewallConfig::default(),
            ForwardingIntent::default(),
            berth_plan::firewall::desired_elements(nets),
            true,
        )
    }

    fn full(d: &DesiredHost) -> ObserveRequest {
        ObserveRequest::full(d)
    }

    fn rt() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        }
    }

    /// A pass whose guarding elements failed: the endpoint is reported as not applied and
    /// was never made.
    fn assert_withheld_without_its_guard(rep: &PassReport, k: &FakeKernel) {
        assert!(!rep.firewall_ok);
        assert!(
            rep.errors
                .iter()
                .any(|e| e.starts_with("CreateEndpoint") && e.contains("were not applied")),
            "{:?}",
            rep.errors
        );
        assert!(
            !applied_kinds(k).contains(&"CreateEndpoint".to_string()),
            "the endpoint must not be made without its guard"
        );
    }

    /// The kinds of the steps the fake applied since the last call (`CreateEndpoint`, …).
    fn applied_kinds(k: &FakeKernel) -> Vec<String> {
        k.take_log()
            .iter()
            .map(|op| {
                format!("{op:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    fn fresh_fake() -> Arc<FakeKernel> {
        let k = FakeKernel::new();
        k.with_state(|s| {
            s.sysctls.insert("net.ipv4.ip_forward".into(), "0".into());
        });
        Arc::new(k)
    }

    #[test]
    fn converges_then_does_nothing() {
        let rt = rt();
        let (nets, cs) = world();
        let d = desired_of(&nets, &cs);
        let k = fresh_fake();
        let r = Reconciler::new(k.clone());
        let first = rt
            .block_on(r.pass(Trigger::Api, &d, full(&d), None, false, false))
            .expect("pass");
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        let log = applied_kinds(&k);
        // Static rules before forwarding is turned on; the bridge before its port.
        let pos = |n: &str| log.iter().position(|x| x == n).unwrap_or(usize::MAX);
        assert!(pos("FirewallBase") < pos("SetSysctl"), "{log:?}");
        assert!(pos("CreateBridge") < pos("CreateEndpoint"), "{log:?}");
        let second = rt
            .block_on(r.pass(Trigger::Timer, &d, full(&d), None, false, false))
            .expect("pass");
        assert!(second.plan.steps.is_empty(), "{:#?}", second.plan.steps);
        assert_eq!(r.stats().repairs, 0);
    }

    /// [`world`] converged by one pass on a fresh fake: its containers, the desired state, the
    /// fake and the reconciler.
    fn converged_world(
        rt: &tokio::runtime::Runtime,
    ) -> (Vec<ContainerSpec>, DesiredHost, Arc<FakeKernel>, Reconciler) {
        let (nets, cs) = world();
        let d = desired_of(&nets, &cs);
        let k = fresh_fake();
        let r = Reconciler::new(k.clone());
        rt.block_on(r.pass(Trigger::Api, &d, full(&d), None, false, false))
            .expect("pass");
        (cs, d, k, r)
    }

    /// Proves: a container namespace read beforehand (start-up reads each adopted container's
    /// as it subscribes to its notifications) stands in for the kernel's: read without its
    /// default route, the pass puts the route back although the kernel has it; a known
    /// namespace the request does not ask for stays out of the observation.
    #[test]
    fn known_namespaces_stand_in_for_the_kernels() {
        let rt = rt();
        let (_, d, k, r) = converged_world(&rt);
        let ns = "/proc/4242/ns/net";
        let now = rt.block_on(k.observe(&full(&d))).expect("observe");
        let Some(mut read) = now.netns.get(ns).cloned() else {
            panic!("the fake has no {ns}: {:?}", now.netns.keys());
        };
        assert!(!read.default_routes.is_empty(), "{read:?}");
        read.default_routes.clear();
        let other = "/proc/1/ns/net".to_string();
        let known = BTreeMap::from([
            (ns.to_string(), read),
            (other.clone(), ObservedNetns::default()),
        ]);
        let rep = rt
            .block_on(r.pass_known(Trigger::Startup, &d, full(&d), known, None, false, true))
            .expect("pass");
        let routes: Vec<&Step> = rep
            .plan
            .steps
            .iter()
            .filter(|s| matches!(&s.op, StepOp::ReplaceRoutes { netns, .. } if netns == ns))
            .collect();
        assert_eq!(routes.len(), 1, "{:#?}", rep.plan.steps);
        assert!(
            !rep.observed.netns.contains_key(&other),
            "{:?}",
            rep.observed.netns.keys()
        );
        // Read from the kernel, the same namespace needs nothing.
        let rep = rt
            .block_on(r.pass(Trigger::Check, &d, full(&d), None, false, true))
            .expect("pass");
        assert!(rep.plan.steps.is_empty(), "{:#?}", rep.plan.steps);
    }

    /// Interrupts a pass from nothing at each of its first `steps` steps in turn: the next
    /// pass always finishes the job, and the one after has nothing left to do.
    fn converges_whatever_the_interruption(d: &DesiredHost, steps: usize) {
        for k_fail in 0..steps {
            let rt = rt();
            let k = fresh_fake();
            if let Ok(mut f) = k.fail_at.lock() {
                *f = Some(k_fail);
            }
            let r = Reconciler::new(k.clone());
            let first = rt
                .block_on(r.pass(Trigger::Api, d, full(d), None, false, false))
                .expect("pass");
            let second = rt
                .block_on(r.pass(Trigger::Startup, d, full(d), None, false, false))
                .expect("pass");
            assert!(second.errors.is_empty(), "{:?}", second.errors);
            let third = rt
                .block_on(r.pass(Trigger::Timer, d, full(d), None, false, false))
                .expect("pass");
            assert!(
                third.plan.steps.is_empty(),
                "fail at {k_fail}: first {:?}, left {:#?}",
                first.errors,
                third.plan.steps
            );
        }
    }

    #[test]
    fn an_interrupted_pass_converges_on_the_next() {
        let (nets, cs) = world();
        let d = desired_of(&nets, &cs);
        converges_whatever_the_interruption(&d, 6);
    }

    /// The endpoint made at the same time as the firewall elements that guard it (its
    /// `IFF_UP` gated on them) is not applied when they fail: it stays down and is rolled
    /// back, and the next pass does both.
    #[test]
    fn a_failed_guard_keeps_its_endpoint_from_coming_up() {
        let rt = rt();
        let (nets, cs) = world();
        let d = desired_of(&nets, &cs);
        let k = fresh_fake();
        let r = Reconciler::new(k.clone());
        let dry = rt
            .block_on(r.pass(Trigger::Api, &d, full(&d), None, false, true))
            .expect("dry run");
        let at = (0..dry.plan.steps.len())
            .find(|&i| !gated_links(&dry.plan.steps[i..]).is_empty())
            .expect("the new elements come right before the endpoint that needs them");
        assert!(matches!(
            dry.plan.steps[at + 1].op,
            StepOp::CreateEndpoint { .. }
        ));
        if let Ok(mut f) = k.fail_at.lock() {
            *f = Some(at);
        }
        let first = rt
            .block_on(r.pass(Trigger::Api, &d, full(&d), None, false, false))
            .expect("pass");
        assert_withheld_without_its_guard(&first, &k);
        let second = rt
            .block_on(r.pass(Trigger::Startup, &d, full(&d), None, false, false))
            .expect("pass");
        assert!(second.errors.is_empty(), "{:?}", second.errors);
        assert!(applied_kinds(&k).contains(&"CreateEndpoint".to_string()));
        let third = rt
            .block_on(r.pass(Trigger::Timer, &d, full(&d), None, false, false))
            .expect("pass");
        assert!(third.plan.steps.is_empty(), "{:#?}", third.plan.steps);
    }

    #[test]
    fn drift_is_repaired_and_counted() {
        let rt = rt();
        let (cs, d, k, r) = converged_world(&rt);
        let veth = cs[0].endpoints[0].host_ifname.clone();
        k.with_state(|s| {
            s.links.remove(&veth);
            if let Some(ns) = s.netns.get_mut("/proc/4242/ns/net") {
                ns.links.clear();
                ns.default_routes.clear();
            }
        });
        k.take_log();
        // A host-scope pass (no namespace observed) refines into the container's namespace,
        // so the default route comes back with the veth.
        let mut req = full(&d);
        req.netns.clear();
        let rep = rt
            .block_on(r.pass(Trigger::Notification, &d, req, None, true, false))
            .expect("pass");
        assert_eq!(rep.applied, 1, "{:#?}", rep.plan.steps);
        let log = k.take_log();
        assert!(
            matches!(&log[0], StepOp::CreateEndpoint { plan, .. } if !plan.routes.is_empty()),
            "{log:?}"
        );
        assert_eq!(r.stats().repairs, 1);
        // Dry run: the same drift is reported, nothing applied.
        k.with_state(|s| {
            s.links.remove(&veth);
        });
        let rep = rt
            .block_on(r.pass(Trigger::Check, &d, full(&d), None, false, true))
            .expect("pass");
        assert_eq!(rep.applied, 0);
        assert!(!rep.plan.steps.is_empty());
        assert!(k.take_log().is_empty());
    }

    /// A macvlan network with a host shim and a container on it.
    fn macvlan_world() -> (Vec<NetworkSpec>, Vec<ContainerSpec>) {
        let req = berth_plan::network::NetworkRequest {
            name: "lan".into(),
            driver: Some("macvlan".into()),
            ipam: vec![berth_plan::network::IpamRequest {
                subnet: Some("192.168.1.0/24".into()),
                gateway: Some("192.168.1.1".into()),
                ip_range: Some("192.168.1.192/27".into()),
                ..Default::default()
            }],
            options: [
                ("parent".to_string(), "eth0".to_string()),
                ("berth.macvlan.host_shim".to_string(), "true".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let mut lan =
            berth_plan::network::plan_network(&req, "b".repeat(64), String::new(), &[], &[])
                .expect("plan lan");
        lan.shim_src = Some("192.168.1.2".parse().expect("ip"));
        let mut c = ContainerSpec::new("c".repeat(64), "printer", vec!["sleep".into()]);
        let ep = berth_plan::network::plan_endpoint(
            &lan,
            &c,
            std::slice::from_ref(&c),
            &Default::default(),
            "e".repeat(64),
        )
        .expect("plan endpoint");
        c.endpoints.push(ep);
        (vec![lan], vec![c])
    }

    #[test]
    fn macvlan_converges_survives_interruptions_and_drift() {
        let (nets, cs) = macvlan_world();
        let d = desired_of(&nets, &cs);
        converges_whatever_the_interruption(&d, 5);
        let rt = rt();
        let k = fresh_fake();
        let r = Reconciler::new(k.clone());
        rt.block_on(r.pass(Trigger::Api, &d, full(&d), None, false, false))
            .expect("pass");
        let log = k.take_log();
        assert!(
            log.iter().any(|op| matches!(op, StepOp::EnsureShim { .. })),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|op| matches!(op, StepOp::CreateSublink { plan } if plan.routes.len() == 1)),
            "{log:?}"
        );
        // Nothing of the container's in berthd's namespace but the shim.
        let links = k.with_state(|s| s.links.keys().cloned().collect::<Vec<_>>());
        assert_eq!(links, Some(vec![format!("bm{}", "b".repeat(12))]));

        // Drift: the container's link deleted (its route goes with it).
        k.with_state(|s| {
            if let Some(ns) = s.netns.get_mut("/proc/4242/ns/net") {
                ns.links.clear();
                ns.default_routes.clear();
            }
        });
        let rep = rt
            .block_on(r.pass(Trigger::Notification, &d, full(&d), None, false, false))
            .expect("pass");
        assert_eq!(rep.applied, 1, "{:#?}", rep.plan.steps);
        assert!(matches!(
            &k.take_log()[0],
            StepOp::CreateSublink { plan } if !plan.routes.is_empty()
        ));

        // Disconnect: the link goes from the namespace.
        let mut left = cs.clone();
        left[0].endpoints.clear();
        let d2 = desired_of(&nets, &left);
        rt.block_on(r.pass(Trigger::Api, &d2, full(&d2), None, false, false))
            .expect("pass");
        assert!(k.take_log().iter().any(
            |op| matches!(op, StepOp::DeleteContainerLink { ifname, .. } if ifname == "eth0")
        ));
        let again = rt
            .block_on(r.pass(Trigger::Timer, &d2, full(&d2), None, false, false))
            .expect("pass");
        assert!(again.plan.steps.is_empty(), "{:#?}", again.plan.steps);
    }

    /// `world()` plus a second network `db`; the container before and after `network connect
    /// db api`.
    fn connect_world() -> (Vec<NetworkSpec>, ContainerSpec, ContainerSpec) {
        let (mut nets, cs) = world();
        let db = network("db", 'b', "10.2.0.0/24", &nets);
        let before = cs[0].clone();
        let after = joined(&before, &db, 'f');
        nets.push(db);
        (nets, before, after)
    }

    /// What an API pass assumes: the state `before` made, with the element cache.
    fn assumed_of(before: &DesiredHost) -> ObservedHost {
        let mut o = host::assumed(before).expect("no overlay");
        o.firewall = Some(ObservedFirewall {
            rules: berth_plan::firewall::static_rules(&before.firewall),
            elements: before.elements.clone(),
        });
        o
    }

    /// A fake kernel converged to `connect_world()`'s "before", its log emptied; both
    /// desired states.
    fn converged_before_connect() -> (
        tokio::runtime::Runtime,
        Arc<FakeKernel>,
        Reconciler,
        DesiredHost,
        DesiredHost,
    ) {
        let (nets, before, after) = connect_world();
        let (rt, k, r, d_before, d_after, _) = converged_before(&nets, &before, &after);
        (rt, k, r, d_before, d_after)
    }

    /// A fake kernel converged to `before` on `nets`, its log emptied; the desired states of
    /// `before` and `after`, and how many steps (each one apply) that took.
    fn converged_before(
        nets: &[NetworkSpec],
        before: &ContainerSpec,
        after: &ContainerSpec,
    ) -> (
        tokio::runtime::Runtime,
        Arc<FakeKernel>,
        Reconciler,
        DesiredHost,
        DesiredHost,
        usize,
    ) {
        let rt = rt();
        let d_before = desired_of(nets, std::slice::from_ref(before));
        let d_after = desired_of(nets, std::slice::from_ref(after));
        let k = fresh_fake();
        let r = Reconciler::new(k.clone());
        let first = rt
            .block_on(r.pass(Trigger::Api, &d_before, full(&d_before), None, false, false))
            .expect("pass");
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        k.take_log();
        let steps = first.plan.steps.len();
        (rt, k, r, d_before, d_after, steps)
    }

    /// An observing dry run over everything finds nothing to do for `d`.
    fn nothing_left(rt: &tokio::runtime::Runtime, r: &Reconciler, d: &DesiredHost) {
        let check = rt
            .block_on(r.pass(Trigger::Check, d, full(d), None, false, true))
            .expect("pass");
        assert!(check.plan.steps.is_empty(), "{:#?}", check.plan.steps);
    }

    #[test]
    fn a_pass_from_the_assumed_state_brings_the_kernel_where_an_observing_pass_would() {
        let (rt, k, r, d_before, d_after) = converged_before_connect();

        // The connect: exactly its endpoint (and its elements), nothing read back.
        let rep =
            rt.block_on(r.pass_assumed(Trigger::Api, &d_after, assumed_of(&d_before), &mut None));
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        let log = applied_kinds(&k);
        assert_eq!(
            log.iter().filter(|x| *x == "CreateEndpoint").count(),
            1,
            "{log:?}"
        );
        assert!(
            !log.iter().any(|x| x == "CreateBridge" || x == "DeleteLink"),
            "{log:?}"
        );
        // An observing pass finds nothing left to do.
        nothing_left(&rt, &r, &d_after);
    }

    #[test]
    fn a_wrong_assumption_fails_a_step_and_the_observing_pass_repairs_it() {
        let (rt, k, r, d_before, d_after) = converged_before_connect();
        // Someone deleted db's bridge behind berth's back: the assumed state still has it, so
        // the endpoint's creation fails (no such master) and is reported, not hidden.
        let bridge = d_after
            .bridges
            .iter()
            .find(|(_, b)| b.network == "db")
            .map(|(n, _)| n.clone())
            .expect("db bridge");
        k.with_state(|s| s.links.remove(&bridge));
        let rep =
            rt.block_on(r.pass_assumed(Trigger::Api, &d_after, assumed_of(&d_before), &mut None));
        assert!(
            !rep.errors.is_empty(),
            "the fake must refuse a port of a missing bridge"
        );
        // The daemon then observes: the bridge comes back, then the endpoint.
        let obs = rt
            .block_on(r.pass(Trigger::Api, &d_after, full(&d_after), None, false, false))
            .expect("pass");
        assert!(obs.errors.is_empty(), "{:?}", obs.errors);
        nothing_left(&rt, &r, &d_after);
    }

    /// `connect_world()`'s new endpoint's creation, as `network connect` starts it.
    fn connect_creation(alias: Option<&str>) -> StepOp {
        let (nets, _, after) = connect_world();
        let ep = after.endpoints.last().expect("db's endpoint");
        let op = berth_plan::driver::endpoint_creation(&nets[1], &after, ep, "/proc/4242/ns/net");
        match (op, alias) {
            (Some(StepOp::CreateEndpoint { plan, .. }), Some(a)) => StepOp::CreateEndpoint {
                plan,
                alias: a.into(),
            },
            (Some(op), None) => op,
            (op, _) => panic!("a bridge endpoint's creation: {op:?}"),
        }
    }

    #[test]
    fn a_pass_takes_over_the_creation_its_call_started() {
        let (rt, k, r, d_before, d_after) = converged_before_connect();
        let kernel: Arc<dyn KernelOps> = k.clone();
        let mut pre = Some(rt.block_on(Prestart::start(kernel, connect_creation(None))));
        // The fake does a gated step's work only once its gate is open.
        assert!(
            k.take_log().is_empty(),
            "nothing before the guarding elements"
        );
        let rep =
            rt.block_on(r.pass_assumed(Trigger::Api, &d_after, assumed_of(&d_before), &mut pre));
        assert!(pre.is_none(), "the pass took the creation over");
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        let log = applied_kinds(&k);
        let at = |kind: &str| log.iter().position(|x| x == kind);
        assert_eq!(
            log.iter().filter(|x| *x == "CreateEndpoint").count(),
            1,
            "{log:?}"
        );
        assert!(
            at("FirewallElements") < at("CreateEndpoint"),
            "the guarding elements first: {log:?}"
        );
        // Counted as the pass's own step.
        assert!(rep.applied >= 2, "{}", rep.applied);
        nothing_left(&rt, &r, &d_after);
    }

    #[test]
    fn a_started_creation_the_pass_does_not_plan_is_left_to_be_called_off() {
        let (rt, k, r, d_before, d_after) = converged_before_connect();
        let kernel: Arc<dyn KernelOps> = k.clone();
        // Another mark than the pass's: not the creation it plans.
        let op = connect_creation(Some("berth:ep:0:0"));
        let mut pre = Some(rt.block_on(Prestart::start(kernel, op)));
        let rep =
            rt.block_on(r.pass_assumed(Trigger::Api, &d_after, assumed_of(&d_before), &mut pre));
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        let p = pre.take().expect("left to the caller");
        rt.block_on(p.cancel("not planned"));
        // The pass made its own; the one called off never went further than its gate.
        let log = applied_kinds(&k);
        assert_eq!(
            log.iter().filter(|x| *x == "CreateEndpoint").count(),
            1,
            "{log:?}"
        );
        nothing_left(&rt, &r, &d_after);
    }

    /// The guarding elements of a taken-over creation fail: its gate refuses, so the link
    /// never comes up (the fake never makes it), and the pass reports it.
    #[test]
    fn a_taken_over_creation_stays_down_when_its_guard_fails() {
        let (nets, before, after) = connect_world();
        let (rt, k, r, d_before, d_after, applied) = converged_before(&nets, &before, &after);
        // Every step so far was one apply; the connect's first is its elements' transaction.
        if let Ok(mut f) = k.fail_at.lock() {
            *f = Some(applied);
        }
        let kernel: Arc<dyn KernelOps> = k.clone();
        let mut pre = Some(rt.block_on(Prestart::start(kernel, connect_creation(None))));
        let rep =
            rt.block_on(r.pass_assumed(Trigger::Api, &d_after, assumed_of(&d_before), &mut pre));
        assert!(pre.is_none(), "taken over");
        assert_withheld_without_its_guard(&rep, &k);
    }

    /// A container without endpoints connected: the new endpoint is its gateway, whose routes
    /// the started creation leaves out; the pass replaces them once it is done.
    #[test]
    fn a_taken_over_gateway_endpoint_gets_its_routes_after() {
        let (nets, cs) = world();
        let after = cs[0].clone();
        let mut before = after.clone();
        before.endpoints.clear();
        let (rt, k, r, d_before, d_after, _) = converged_before(&nets, &before, &after);
        let ep = &after.endpoints[0];
        let op = berth_plan::driver::endpoint_creation(&nets[0], &after, ep, "/proc/4242/ns/net")
            .expect("a bridge endpoint");
        let kernel: Arc<dyn KernelOps> = k.clone();
        let mut pre = Some(rt.block_on(Prestart::start(kernel, op)));
        let rep =
            rt.block_on(r.pass_assumed(Trigger::Api, &d_after, assumed_of(&d_before), &mut pre));
        assert!(pre.is_none(), "taken over");
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        let log = applied_kinds(&k);
        let at = |kind: &str| log.iter().position(|x| x == kind);
        assert!(at("CreateEndpoint") < at("ReplaceRoutes"), "{log:?}");
        assert!(at("ReplaceRoutes").is_some(), "{log:?}");
        nothing_left(&rt, &r, &d_after);
    }

    /// An API pass (a disconnect's) deletes a veth in the background through
    /// `delete_link_detached`, which the real kernel runs on a blocking thread of its own: a
    /// veth's `RTM_DELLINK` holds its sender for the kernel's whole unregistration, and on the
    /// shared connection it held a runtime worker and every later request (stop 29).
    #[test]
    fn an_api_pass_deletes_a_veth_in_the_background_detached() {
        let (rt, k, r, d_before, _) = converged_before_connect();
        let (nets, _, _) = connect_world();
        let d_gone = desired_of(&nets, &[]);
        let veth = d_before.endpoints.keys().next().expect("a veth").clone();
        let detached = |k: &FakeKernel| k.detached.lock().map(|d| d.clone()).unwrap_or_default();
        let rep = rt.block_on(async {
            let rep = r
                .pass(Trigger::Api, &d_gone, full(&d_gone), None, false, false)
                .await;
            // The deletion is a task of its own on this (one-thread) runtime: let it run.
            for _ in 0..100 {
                if detached(&k).contains(&veth) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            rep
        });
        let rep = rep.expect("pass");
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(detached(&k), vec![veth]);
    }

    #[test]
    fn a_check_does_not_call_a_veth_being_deleted_an_orphan() {
        let (rt, k, r, d_before, _) = converged_before_connect();
        // The container is gone from the intent; its veth is still in the kernel, on its way
        // out (deleted in the background, or going with the namespace).
        let (nets, _, _) = connect_world();
        let d_gone = desired_of(&nets, &[]);
        let veth = d_before.endpoints.keys().next().expect("a veth").clone();
        let deletes = |rep: &PassReport| {
            rep.plan
                .steps
                .iter()
                .filter(|s| matches!(&s.op, StepOp::DeleteLink { name, .. } if *name == veth))
                .count()
        };
        let before = rt
            .block_on(r.pass(Trigger::Check, &d_gone, full(&d_gone), None, false, true))
            .expect("check");
        assert_eq!(
            deletes(&before),
            1,
            "an orphan like any other: {:#?}",
            before.plan
        );
        let during = rt.block_on(async {
            r.expect_gone(vec![veth.clone()]);
            r.pass(Trigger::Check, &d_gone, full(&d_gone), None, false, true)
                .await
        });
        let during = during.expect("check");
        assert_eq!(deletes(&during), 0, "{:#?}", during.plan);
        assert!(k.take_log().is_empty(), "a check applies nothing");
    }
}
