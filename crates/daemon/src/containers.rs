//! Container operations: create, start, stop, remove, and what happens when one exits. A
//! container's endpoints are part of the desired state from the moment its namespace exists
//! (see `Daemon::starting`); the reconcile pass of its start plumbs them before its command
//! runs. Its veths die with its namespace when it exits.

use std::path::Path;
use std::sync::Arc;

use berth_plan::model::{ContainerSpec, ContainerState, NetworkMode, Status};
use berth_plan::names;
use berth_plan::restart::{self as policy, RestartPolicy};
use berth_store::{Op, StoreExt};
use std::net::IpAddr;

use crate::daemon::{endpoint_request, keys, new_id, now_rfc3339, Daemon};
use crate::error::{ApiError, ApiResult};
use crate::failpoint;

impl Daemon {
    /// `POST /containers/create`. `announce`: the caller starts the container right after
    /// (`berth run -d`: `?start=1`), so its overlay endpoints are published to the cluster
    /// together with their address claims; they stay published only if the start succeeds.
    /// A container that is only created is never published (Docker's semantics: its name
    /// does not resolve anywhere until it runs).
    pub async fn create_container(
        &self,
        name: Option<String>,
        mut req: berth_api::types::ContainerCreateRequest,
        announce: bool,
    ) -> ApiResult<ContainerSpec> {
        // The docker CLI names the default network `default` (NetworkMode and its endpoint
        // settings' key): dockerd's default is the bridge network.
        if matches!(req.host_config.network_mode.as_str(), "" | "default") {
            if let Some(v) = req.networking_config.endpoints_config.remove("default") {
                req.networking_config
                    .endpoints_config
                    .entry("bridge".into())
                    .or_insert(v);
            }
        }
        let _guard = self.lock.lock().await;
        let _op = failpoint::Op::begin("create");
        if req.cmd.is_empty() {
            return Err(ApiError::bad_request(
                "no command given: berth runs a program from the host's filesystem (or --rootfs), e.g. `berth run sleep 60`",
            ));
        }
        let (id, name) = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(&n).to_string();
                names::validate_name("container", &n)?;
                (new_id(), n)
            }
            None => {
                // A generated name shows 24 bits of the id: at 1,000 containers two of them
                // match now and then, and an unnamed `run` must not fail for that.
                let free = self.with_lookup(|l| {
                    names::first_free_generated((0..16).map(|_| new_id()), |n| l.named(n).is_some())
                })?;
                free.unwrap_or_else(|| {
                    let id = new_id();
                    let short = names::short_id(&id).to_string();
                    (id, short)
                })
            }
        };
        if let Some(other) = self.container_named(&name)? {
            return Err(ApiError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". \
                 You have to remove (or rename) that container to be able to reuse that name.",
                other.id
            )));
        }
        if let Some(rootfs) = &req.rootfs {
            if !Path::new(rootfs).is_dir() {
                return Err(ApiError::bad_request(format!(
                    "--rootfs {rootfs:?} is not a directory on the host"
                )));
            }
        }
        let hc = &req.host_config;
        let dns = hc
            .dns
            .iter()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| ApiError::bad_request(format!("--dns {s:?} is not an IP address")))
            })
            .collect::<ApiResult<Vec<_>>>()?;
        let extra_hosts = hc
            .extra_hosts
            .iter()
            .map(|h| names::parse_extra_host(h))
            .collect::<Result<Vec<_>, _>>()?;
        let hostname = if req.hostname.is_empty() {
            name.clone()
        } else {
            req.hostname.clone()
        };
        let mode_str = hc.network_mode.as_str();
        let mode = match mode_str {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            m if m.starts_with("container:") => {
                let target = self.find_container(&m["container:".len()..])?;
                NetworkMode::Container(target.id)
            }
            _ => NetworkMode::Networks,
        };
        // dockerd's order and words: `--rm` with any policy first, then the policy itself.
        let rp = &hc.restart_policy;
        if hc.auto_remove && !matches!(rp.name.as_str(), "" | "no") {
            return Err(ApiError::bad_request(
                "can't create 'AutoRemove' container with restart policy",
            ));
        }
        let restart = RestartPolicy::from_docker(&rp.name, rp.maximum_retry_count)?;
        berth_plan::sysctl::validate(&hc.sysctls, mode == NetworkMode::Host)?;
        let mut spec = ContainerSpec {
            id: id.clone(),
            name,
            hostname,
            created: now_rfc3339(),
            cmd: req.cmd.clone(),
            env: req.env.clone(),
            mode: mode.clone(),
            endpoints: Vec::new(),
            dns,
            dns_search: hc.dns_search.clone(),
            dns_options: hc.dns_options.clone(),
            extra_hosts,
            rootfs: req.rootfs.clone(),
            auto_remove: hc.auto_remove,
            // issue 8: capabilities, seccomp, mounts (400 on bad input).
            security: crate::security::spec_from_api(hc)?,
            stdio: berth_plan::model::StdioSpec {
                tty: req.tty,
                open_stdin: req.open_stdin,
                stdin_once: req.stdin_once,
                console_size: console_size(hc.console_size.as_deref()),
            },
            process: berth_plan::model::ProcessSpec {
                working_dir: req.working_dir.clone(),
                user: req.user.clone(),
                labels: req.labels.clone(),
                sysctls: hc.sysctls.clone(),
            },
            restart,
            legacy_links: self.legacy_links(&hc.links, mode_str, &mode)?,
        };
        if !spec.legacy_links.is_empty() {
            // Before it is stored: see `Daemon::legacy_links`.
            self.legacy_links.store(
                crate::links::LINKS_SOME,
                std::sync::atomic::Ordering::SeqCst,
            );
        }
        // Every user-given string (hostname, DNS fields, env, labels, command, user, working
        // directory): 400 naming the field before anything is planned or stored, so that
        // none can add a line to the container's /etc files or fail its start later.
        berth_plan::input::validate_container_strings(&spec)?;
        // Published ports: parsed before anything is claimed.
        let port_specs = crate::ports::specs_from_api(hc)?;
        if mode == NetworkMode::Networks {
            // The networks to join: NetworkMode (default `bridge`) first, then any other
            // network named in EndpointsConfig, in name order.
            let mut wanted: Vec<String> = Vec::new();
            let first = if mode_str.is_empty() || mode_str == "default" {
                "bridge"
            } else {
                mode_str
            };
            wanted.push(first.to_string());
            for k in req.networking_config.endpoints_config.keys() {
                if !wanted.contains(k) {
                    wanted.push(k.clone());
                }
            }
            for q in wanted {
                let net = self.find_network(&q)?;
                if !berth_plan::driver::driver(net.driver).combinable() {
                    return Err(ApiError::bad_request(format!(
                        "network {:?} ({}) cannot be combined with other networks; use --network {}",
                        net.name,
                        net.driver.as_str(),
                        net.name
                    )));
                }
                let settings = req
                    .networking_config
                    .endpoints_config
                    .get(&q)
                    .or_else(|| req.networking_config.endpoints_config.get(&net.name))
                    .or_else(|| req.networking_config.endpoints_config.get(&net.id));
                let mut ep_req = endpoint_request(settings)?;
                if ep_req.mac.is_none() && spec.endpoints.is_empty() && !req.mac_address.is_empty()
                {
                    ep_req.mac = Some(req.mac_address.clone());
                }
                let planned = self.plan_endpoint_claimed(&net, &spec, &ep_req, announce);
                let ep = match planned {
                    Ok(ep) => ep,
                    Err(e) => {
                        self.cluster_withdraw(&spec.id);
                        self.cluster_release(&spec.endpoints.iter().collect::<Vec<_>>());
                        return Err(e);
                    }
                };
                spec.endpoints.push(ep);
            }
        } else if !req.networking_config.endpoints_config.is_empty()
            && !req
                .networking_config
                .endpoints_config
                .keys()
                .all(|k| k == mode_str)
        {
            return Err(ApiError::bad_request(format!(
                "network mode {mode_str} cannot be combined with other networks"
            )));
        }
        let state = ContainerState {
            status: Status::Created,
            ..Default::default()
        };
        // Published ports: checked before anything is stored.
        let stored = match crate::ports::validate(self, &spec, &port_specs).await {
            Ok(()) => {
                let (cmp, mut ops) =
                    crate::ipam::claim(&spec, &spec.endpoints.iter().collect::<Vec<_>>());
                ops.push(Op::put_json(keys::container(&spec.id), &spec));
                ops.push(Op::put_json(keys::state(&spec.id), &state));
                ops.extend(crate::ports::store_op(&spec.id, &port_specs));
                if announce {
                    // Started in the same request (`start=1`): the start's commit, or the
                    // failed start's flush, makes this one durable before the request is
                    // answered (see `create_and_start` in http.rs); one `fdatasync` less
                    // on the way to the container's command.
                    crate::ipam::commit_deferred(self.store.as_ref(), cmp, ops)
                } else {
                    crate::ipam::commit(self.store.as_ref(), cmp, ops)
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            // Overlay addresses were claimed cluster-wide while planning (and, for a `run`,
            // its endpoints published with them).
            self.cluster_withdraw(&spec.id);
            self.cluster_release(&spec.endpoints.iter().collect::<Vec<_>>());
            return Err(e);
        }
        failpoint::boundary("store container");
        // Known as an asker from now on: its first query may come before it counts as running.
        self.dns_refresh();
        tracing::info!(container = %spec.name, id = %names::short_id(&spec.id), "container created");
        Ok(spec)
    }

    /// `POST /containers/{id}/start`.
    pub async fn start_container(self: &Arc<Self>, query: &str) -> ApiResult<()> {
        self.start_container_by(query, StartBy::Client).await
    }

    /// Starts a container for a client, its restart policy or berthd's start-up.
    pub(crate) async fn start_container_by(
        self: &Arc<Self>,
        query: &str,
        by: StartBy,
    ) -> ApiResult<()> {
        let _guard = self.lock.lock().await;
        let _op = failpoint::Op::begin("start");
        let c = self.find_container(query)?;
        let st = self.state(&c.id)?;
        let pending = st.status == Status::Restarting;
        match by {
            // A stop, a removal or a start since the decision cancelled it.
            StartBy::Policy(n) if !pending || st.restart.count != n => return Ok(()),
            _ if st.status == Status::Running => return Ok(()),
            _ => {}
        }
        // Answered from the moment its command runs, not only once the state below is stored.
        self.dns_refresh_with(Some(&c.id));
        // Its overlay endpoints likewise, on the other hosts: published to the cluster store
        // while its ports, interfaces and process are set up here (an etcd write and the other
        // hosts' watch delivery overlap that work instead of following it), so they can reach
        // it and resolve its name by the time `run` returns.
        let early = self.early_publish(&c);
        // Ports first: a refused port fails the start before any process exists.
        // Without published ports, its anti-spoofing elements are left to the runtime, which
        // installs them while the init assembles the root, still before its veths exist.
        let (port_op, guard) = match crate::ports::publish_with(self, &c, false).await {
            Ok(op) => op,
            Err(e) => {
                self.end_announcement(&c.id, early, true).await;
                return Err(e);
            }
        };
        failpoint::boundary("publish ports");
        let (pid, init_pid, watched) = match self.runtime.start(self, &c, guard.as_ref()).await {
            Ok(p) => p,
            Err(e) => {
                self.dns.unpin(&c.id);
                self.dns_refresh();
                crate::ports::unpublish(self, &c).await;
                self.end_announcement(&c.id, early, true).await;
                return Err(e);
            }
        };
        let state = ContainerState {
            status: Status::Running,
            pid: init_pid,
            exit_code: 0,
            started_at: now_rfc3339(),
            finished_at: st.finished_at,
            // A start by a client or by berthd's start-up forgets the restarts and any stop,
            // as dockerd's does; a restart by the policy keeps counting.
            restart: match by {
                StartBy::Policy(_) => st.restart,
                StartBy::Client | StartBy::DaemonStart => Default::default(),
            },
        };
        let mut ops = vec![Op::put_json(keys::state(&c.id), &state)];
        ops.extend(port_op);
        let stored = self.store.apply(ops);
        // Running from here on (or not, if that failed: then published again without it).
        self.end_announcement(&c.id, early, stored.is_err()).await;
        stored?;
        failpoint::boundary("store running state");
        self.exit_channel(&c.id).send_replace(None);
        // Recorded as running: its in-namespace resolver (if any) now follows the state.
        self.dns.unpin(&c.id);
        self.dns_refresh();
        // Its overlay endpoints are normally published already (above); this writes them
        // when that could not (etcd was marked away), and is free otherwise.
        self.cluster_publish();
        crate::converge::watch_container(
            self.clone(),
            c.id.clone(),
            init_pid,
            // Kept only now: a start that failed before (its record not stored) forgets it.
            watched.map_or(crate::converge::WatchFrom::Start, |w| {
                crate::converge::WatchFrom::Registered(w.keep())
            }),
        )
        .await;
        // Containers linked to it on the default bridge name its (possibly new) address.
        self.refresh_link_parents(&c).await;
        tracing::info!(container = %c.name, pid, "container started");
        Ok(())
    }

    /// Called when a container's init exited: records the code, removes its endpoints' host
    /// sides (the netns is gone with the process; deleting explicitly makes it immediate), and
    /// removes the container if it was `--rm`.
    pub async fn container_exited(self: &Arc<Self>, id: &str, code: i32) {
        let begun = std::time::Instant::now();
        let _guard = self.lock.lock().await;
        let locked = begun.elapsed();
        let auto_remove = self
            .store
            .get_json::<ContainerSpec>(&keys::container(id))
            .ok()
            .flatten()
            .map(|c| c.auto_remove)
            .unwrap_or(false);
        let mut durable = None;
        if auto_remove {
            // Its exit and its removal in one commit: nobody could act on the exited state in
            // between (we hold the lock). The commit is flushed to disk once the waiter has
            // its answer (below), off the answer's path: a crash before the flush ends leaves
            // it running in the store with no process, and the restart removes such a `--rm`
            // container (converge.rs), so the answer (exited, removed) holds after a crash too.
            match self.remove_record_locked(id, true).await {
                Ok(()) => durable = Some(self.sync_store()),
                Err(e) => tracing::warn!("auto-removing container {id}: {}", e.message),
            }
        } else {
            if let Err(e) = self.mark_exited(id, code).await {
                tracing::warn!("recording the exit of container {id}: {}", e.message);
            }
            self.apply_restart_policy(id, code);
        }
        let marked = begun.elapsed();
        // Told once a `--rm` container is gone too: whoever waited (`berth run --rm`, docker's
        // `condition=removed`) finds it removed.
        self.exit_channel(id).send_replace(Some(code));
        tracing::debug!(
            container = %id,
            lock_wait_us = locked.as_micros() as u64,
            exit_recorded_us = marked.as_micros() as u64,
            told_us = begun.elapsed().as_micros() as u64,
            "exit handled"
        );
        drop(_guard);
        if let Some(durable) = durable {
            if let Err(e) = durable.await {
                tracing::warn!("flushing the removal of container {id}: {}", e.message);
            }
        }
        // Its files, once whoever waited has its answer: nothing refers to them any more (a
        // log stream still open reads through its own descriptors), and after a crash before
        // this the start-up removes the directories of containers the store no longer has.
        if auto_remove {
            self.runtime.remove_files_behind(id);
        }
        // Its anti-spoofing elements, once whoever waited for the exit has its answer.
        let d = self.clone();
        tokio::spawn(async move {
            let _guard = d.lock.lock().await;
            d.flush_released_guard();
        });
    }

    /// After an exit (the caller holds the daemon's lock): asks the plan whether the
    /// container's restart policy starts it again and when; if so it is `restarting` until a
    /// task starts it through the same path as `berth start` (same endpoints, addresses and
    /// names). A failure to record that is logged: the container stays exited.
    fn apply_restart_policy(self: &Arc<Self>, id: &str, code: i32) {
        let (Ok(c), Ok(mut st)) = (self.find_container(id), self.state(id)) else {
            return;
        };
        let ran = ran_for(&st.started_at, &st.finished_at);
        let policy::Decision::Restart { delay, memory } =
            policy::on_exit(c.restart, code, ran, st.restart)
        else {
            return;
        };
        st.status = Status::Restarting;
        st.restart = memory;
        if let Err(e) = self.store.apply(vec![Op::put_json(keys::state(id), &st)]) {
            tracing::warn!(container = %c.name, "recording its restart: {e}");
            return;
        }
        tracing::info!(container = %c.name, exit_code = code, restart_count = memory.count, delay_ms = delay.as_millis() as u64, "restarting by its restart policy");
        let d = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            d.start_by_policy(&id, memory.count).await;
        });
    }

    /// The delayed half of [`Daemon::apply_restart_policy`]: starts the container unless that
    /// restart was cancelled meanwhile; a start that fails leaves it exited.
    async fn start_by_policy(self: &Arc<Self>, id: &str, n: u32) {
        let Err(e) = self.start_container_by(id, StartBy::Policy(n)).await else {
            return;
        };
        tracing::warn!(container = %id, "restarting by its restart policy: {}", e.message);
        let _guard = self.lock.lock().await;
        if let Ok(mut st) = self.state(id) {
            if st.status == Status::Restarting && st.restart.count == n {
                st.status = Status::Exited;
                if let Err(e) = self.store.apply(vec![Op::put_json(keys::state(id), &st)]) {
                    tracing::warn!(container = %id, "recording its exit: {e}");
                }
                // Whoever waits for this restart learns that it ended.
                self.exit_channel(id).send_replace(Some(st.exit_code));
            }
        }
    }

    /// A stop or kill through the API: the restart policy no longer applies until the next
    /// start (dockerd's `HasBeenManuallyStopped`), and a pending restart is cancelled (the
    /// container is then exited). Returns the state from then on.
    async fn stopped_by_client(&self, id: &str) -> ApiResult<ContainerState> {
        let _guard = self.lock.lock().await;
        let mut st = self.state(id)?;
        if !matches!(st.status, Status::Running | Status::Restarting) {
            return Ok(st);
        }
        let cancelled = st.status == Status::Restarting;
        st.restart.manually_stopped = true;
        if cancelled {
            st.status = Status::Exited;
        }
        self.store.apply(vec![Op::put_json(keys::state(id), &st)])?;
        if cancelled {
            self.exit_channel(id).send_replace(Some(st.exit_code));
        }
        Ok(st)
    }

    /// Start-up: starts the exited containers whose restart policy says so when the daemon
    /// starts (`always`, `unless-stopped` not stopped through the API, ...), each in a task of
    /// its own so that one slow start delays nothing else.
    pub(crate) fn start_by_policy_at_startup(self: &Arc<Self>) -> ApiResult<()> {
        for c in self.containers()? {
            let st = self.state(&c.id)?;
            if !matches!(st.status, Status::Exited | Status::Restarting) {
                continue;
            }
            let started_before = !st.started_at.is_empty();
            // A restart decided before berthd stopped is still due (its task died with the
            // old berthd); otherwise the policy decides as at dockerd's start.
            let due = st.status == Status::Restarting
                || policy::at_daemon_start(c.restart, st.exit_code, started_before, st.restart);
            if !due {
                continue;
            }
            tracing::info!(container = %c.name, "starting it by its restart policy");
            let d = self.clone();
            tokio::spawn(async move {
                if let Err(e) = d.start_container_by(&c.id, StartBy::DaemonStart).await {
                    tracing::warn!(container = %c.name, "starting it at start-up: {}", e.message);
                }
            });
        }
        Ok(())
    }

    /// Removes the anti-spoofing elements of exited containers' ports, if any are left (the
    /// caller holds the daemon's lock). A failure is logged: the next full pass removes them.
    pub(crate) fn flush_released_guard(&self) {
        if !self.firewall.has_released() {
            return;
        }
        if let Err(e) = tokio::task::block_in_place(|| self.firewall.flush_released()) {
            tracing::warn!("removing the anti-spoofing elements of exited containers: {e:#}");
        }
    }

    pub(crate) async fn mark_exited(&self, id: &str, code: i32) -> ApiResult<()> {
        let Some(c) = self.store.get_json::<ContainerSpec>(&keys::container(id))? else {
            return Ok(());
        };
        // No explicit veth deletion here: the container's network namespace died with its
        // last process, and the kernel destroys every veth with an end in it (batched in its
        // netns cleanup work, off this path; a synchronous RTM_DELLINK costs ~20 ms of RCU
        // grace periods each on this kind of machine). A restart that finds a not-yet-destroyed
        // veth of the same name replaces it (runtime::start).
        // An exited container frees its ports at once.
        self.reconciler
            .expect_gone(c.endpoints.iter().map(|e| e.host_ifname.clone()).collect());
        let port_op = crate::ports::unpublish(self, &c).await;
        failpoint::boundary("unpublish ports of an exited container");
        let mut st = self.state(id)?;
        st.status = Status::Exited;
        st.pid = 0;
        st.exit_code = code;
        st.finished_at = now_rfc3339();
        let mut ops = vec![Op::put_json(keys::state(id), &st)];
        ops.extend(port_op);
        self.store.apply(ops)?;
        failpoint::boundary("store exited state");
        self.dns_refresh();
        self.cluster_publish();
        Ok(())
    }

    /// `POST /containers/{id}/stop`.
    pub async fn stop_container(&self, query: &str, timeout_secs: u64) -> ApiResult<()> {
        let _op = failpoint::Op::begin("stop");
        let c = self.find_container(query)?;
        let st = self.stopped_by_client(&c.id).await?;
        if st.status != Status::Running {
            return Ok(());
        }
        let mut rx = self.exit_channel(&c.id).subscribe();
        self.runtime
            .signal(&c.id, nix::sys::signal::Signal::SIGTERM);
        failpoint::boundary("SIGTERM sent");
        let stopped = tokio::time::timeout(
            std::time::Duration::from_secs(timeout_secs),
            rx.wait_for(|v| v.is_some()),
        )
        .await
        .is_ok();
        if !stopped {
            tracing::info!(container = %c.name, "did not stop in {timeout_secs}s, killing");
            self.runtime
                .signal(&c.id, nix::sys::signal::Signal::SIGKILL);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                rx.wait_for(|v| v.is_some()),
            )
            .await;
        }
        Ok(())
    }

    /// `POST /containers/{id}/update` with a `RestartPolicy`: validated as at create; the next
    /// exit follows the new policy (dockerd's `SetPolicy`).
    pub async fn update_restart_policy(&self, query: &str, name: &str, max: i64) -> ApiResult<()> {
        let restart = RestartPolicy::from_docker(name, max)?;
        let _guard = self.lock.lock().await;
        let mut c = self.find_container(query)?;
        if c.auto_remove && !restart.is_none() {
            // dockerd's words, and its 409.
            return Err(ApiError::conflict(format!(
                "Cannot update container {}: Restart policy cannot be updated because AutoRemove is enabled for the container",
                c.id
            )));
        }
        c.restart = restart;
        self.store
            .apply(vec![Op::put_json(keys::container(&c.id), &c)])?;
        tracing::info!(container = %c.name, policy = name, "restart policy updated");
        Ok(())
    }

    /// `POST /containers/{id}/kill?signal=`: sends `signal` (SIGKILL when unset) to the
    /// container's init, which forwards it to the command, as dockerd does; 409 when the
    /// container is not running.
    pub async fn kill_container(&self, query: &str, signal: Option<&str>) -> ApiResult<()> {
        let sig = parse_signal(signal.unwrap_or("SIGKILL"))?;
        let c = self.find_container(query)?;
        if self.state(&c.id)?.status == Status::Restarting {
            // dockerd: a kill of a restarting container only cancels the restart.
            self.stopped_by_client(&c.id).await?;
            return Ok(());
        }
        let st = self.state(&c.id)?;
        if st.status != Status::Running {
            return Err(ApiError::conflict(format!(
                "Cannot kill container: {query}: Container {} is not running",
                c.id
            )));
        }
        // Any kill through the API counts as a stop for the restart policy, as dockerd's.
        self.stopped_by_client(&c.id).await?;
        self.runtime.signal(&c.id, sig);
        Ok(())
    }

    /// `DELETE /containers/{id}`.
    pub async fn remove_container(&self, query: &str, force: bool) -> ApiResult<()> {
        let c = self.find_container(query)?;
        let st = self.state(&c.id)?;
        if st.status == Status::Restarting && !force {
            return Err(ApiError::conflict(format!(
                "You cannot remove a restarting container {}. Stop the container before attempting removal or force remove",
                c.id
            )));
        }
        if st.status == Status::Restarting {
            self.stopped_by_client(&c.id).await?;
        }
        if st.status == Status::Running {
            if !force {
                return Err(ApiError::conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                )));
            }
            // Its exit must not restart it.
            self.stopped_by_client(&c.id).await?;
            let mut rx = self.exit_channel(&c.id).subscribe();
            self.runtime
                .signal(&c.id, nix::sys::signal::Signal::SIGKILL);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                rx.wait_for(|v| v.is_some()),
            )
            .await;
        }
        let _guard = self.lock.lock().await;
        let _op = failpoint::Op::begin("rm");
        self.remove_container_locked(&c.id).await
    }

    async fn remove_container_locked(&self, id: &str) -> ApiResult<()> {
        self.remove_record_locked(id, false).await?;
        // Its files after the answer, as a `--rm` container's (`container_exited`).
        self.runtime.remove_files_behind(id);
        Ok(())
    }

    /// Removes a container from the store and everything berthd keeps for it but its files
    /// (the caller removes those). `exited`: it has just exited (an `--rm` container), which
    /// this records too (its endpoints are expected gone, its ports freed), in the same commit.
    /// `exited`: a `--rm` container's exit (or a dead one's at start-up); the commit is then
    /// deferred (`Store::txn_deferred`) and the caller flushes it ([`Daemon::sync_store`]).
    pub(crate) async fn remove_record_locked(&self, id: &str, exited: bool) -> ApiResult<()> {
        let Some(c) = self.store.get_json::<ContainerSpec>(&keys::container(id))? else {
            return Ok(());
        };
        if exited {
            // As `mark_exited`: its veths die with its network namespace.
            self.reconciler
                .expect_gone(c.endpoints.iter().map(|e| e.host_ifname.clone()).collect());
        }
        // Only exited (or never started) containers get here: their veths die with their
        // network namespace (see `mark_exited`), nothing to delete synchronously.
        crate::ports::unpublish(self, &c).await;
        failpoint::boundary("unpublish ports");
        let mut ops = crate::ipam::release(&c.endpoints.iter().collect::<Vec<_>>());
        ops.extend([
            Op::Delete(keys::container(id)),
            Op::Delete(keys::state(id)),
            Op::Delete(crate::ports::key(id)),
        ]);
        if exited {
            self.store.txn_deferred(Vec::new(), ops)?;
        } else {
            self.store.apply(ops)?;
        }
        failpoint::boundary("store removal");
        self.cluster_release(&c.endpoints.iter().collect::<Vec<_>>());
        self.forget_exits(id);
        self.dns_refresh();
        if exited {
            self.cluster_publish();
        }
        tracing::info!(container = %c.name, "container removed");
        Ok(())
    }
}

/// Why a container is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartBy {
    /// A client (`start`, `restart`, `run`): its restart count and any stop are forgotten,
    /// as dockerd's.
    Client,
    /// Its restart policy, for restart number `n` decided at its exit: only if that restart is
    /// still pending (a stop, a removal or another start since cancels it).
    Policy(u32),
    /// berthd's start-up, for a policy that says so.
    DaemonStart,
}

/// How long a run lasted, from its state's RFC 3339 times (zero if either is unreadable: the
/// shortest run, so the delay grows rather than resets).
fn ran_for(started_at: &str, finished_at: &str) -> std::time::Duration {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    match (parse(started_at), parse(finished_at)) {
        (Some(a), Some(b)) => (b - a).try_into().unwrap_or_default(),
        _ => std::time::Duration::ZERO,
    }
}

/// A `ConsoleSize` (`[rows, columns]`) as a terminal size; `[0, 0]`, a zero or a value beyond a
/// terminal's range means none (dockerd ignores a zero size too).
pub fn console_size(v: Option<&[u32]>) -> Option<(u16, u16)> {
    match v? {
        [h, w] if *h > 0 && *w > 0 => Some((u16::try_from(*h).ok()?, u16::try_from(*w).ok()?)),
        _ => None,
    }
}

/// A signal as dockerd's API takes it (`signal.ParseSignal` in moby): a number, or a name with
/// or without `SIG`, in any case. 0 and unknown names are a 400 "Invalid signal".
pub(crate) fn parse_signal(raw: &str) -> ApiResult<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    let invalid = || ApiError::bad_request(format!("Invalid signal: {raw}"));
    if let Ok(n) = raw.parse::<i32>() {
        return if n == 0 {
            Err(invalid())
        } else {
            Signal::try_from(n).map_err(|_| invalid())
        };
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    format!("SIG{name}")
        .parse::<Signal>()
        .map_err(|_| invalid())
}

#[cfg(test)]
mod signal_tests {
    use super::parse_signal;
    use nix::sys::signal::Signal;

    #[test]
    fn signals_parse_as_dockerd_takes_them() {
        for (raw, sig) in [
            ("SIGKILL", Signal::SIGKILL),
            ("KILL", Signal::SIGKILL),
            ("9", Signal::SIGKILL),
            ("hup", Signal::SIGHUP),
            ("SigTerm", Signal::SIGTERM),
            ("usr1", Signal::SIGUSR1),
        ] {
            assert_eq!(parse_signal(raw).ok(), Some(sig), "{raw}");
        }
        for raw in ["0", "", "SIG", "NOPE", "999", "-1", "KILL\n"] {
            let e = parse_signal(raw).err().map(|e| e.message);
            assert_eq!(e, Some(format!("Invalid signal: {raw}")), "{raw:?}");
        }
    }
}
