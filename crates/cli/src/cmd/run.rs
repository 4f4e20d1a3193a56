//! `berth run`: create, start, then (unless `-d`) stream the output and exit with the command's
//! code. Failures before the command starts exit 125, like docker.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_api::client::{BodyStream, Client, Method, NO_BODY};
use berth_api::types::stream::{Decoder, CREATED, EXITED, STDERR};
use berth_api::types::{
    ContainerCreateRequest, ContainerCreateResponse, HostConfig, NetworkingConfig, PortBinding,
    WaitResponse,
};
use clap::ArgAction;

use super::network_connect::{endpoint, EndpointFlags};
use super::{env_entry, exit_code, obj_path};
use crate::format::{out, short_id, url_escape, write_raw};

/// Flags of `berth run`. Options go before the command; everything from the command on is
/// passed to it untouched (`berth run --network web curl -s http://x/`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep the command's stdin open and pass ours to it.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run the command on a pseudo-terminal (ours goes raw while attached).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keys that leave the session with the container running (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys", value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// Restart policy: no (default), always, unless-stopped, on-failure[:MAX-RETRIES].
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Namespaced kernel parameter KEY=VALUE for the container (net.*, kernel.shm*/msg*/sem,
    /// fs.mqueue.*; repeatable).
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Network: bridge (default), a network name, host, none or container:NAME (repeatable: the
    /// first is the network mode, all are joined).
    #[arg(long, alias = "net", value_name = "NETWORK")]
    pub network: Vec<String>,
    /// Static IPv4 address on the (first) network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Static IPv6 address on the (first) network.
    #[arg(long)]
    pub ip6: Option<String>,
    /// MAC address of the container's interface on the (first) network.
    #[arg(long = "mac-address", value_name = "MAC")]
    pub mac_address: Option<String>,
    /// Extra DNS name on the (first) network (repeatable).
    #[arg(long = "network-alias", alias = "net-alias", value_name = "ALIAS")]
    pub network_alias: Vec<String>,
    /// Link-local address (169.254.0.0/16, fe80::/10) on the container's interface on the
    /// (first) network, next to its address (repeatable).
    #[arg(long = "link-local-ip", value_name = "IP")]
    pub link_local_ip: Vec<String>,
    /// Link to another container as NAME[:ALIAS] (repeatable): on the default bridge, /etc/hosts
    /// entries and ALIAS_* environment variables; on a user-defined network, ALIAS resolves to
    /// it from this container only.
    #[arg(long = "link", value_name = "NAME[:ALIAS]")]
    pub link: Vec<String>,
    /// Container hostname (defaults to the name).
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// DNS server for the container's resolv.conf (repeatable).
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain (repeatable).
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// resolv.conf option, e.g. ndots:2 (repeatable).
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Extra /etc/hosts entry NAME:IP (repeatable).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Publish a container port on the host (repeatable): [IP:][HOSTPORT:]CPORT[/PROTO], ranges
    /// like 8000-8010:8000-8010, IPv6 as [::1]:8080:80; HOSTPORT omitted: any free port.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Environment variable KEY=VALUE, or KEY to pass berth's own value (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file: KEY=VALUE lines, # comments, a bare KEY takes
    /// berth's own value (repeatable; -e wins).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory of the command inside the container (absolute).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User the command runs as: UID[:GID] or NAME[:GROUP] (from the container's /etc/passwd).
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Set a label KEY=VALUE (repeatable).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Read labels from a file of KEY=VALUE lines (repeatable).
    #[arg(long = "label-file", value_name = "FILE")]
    pub label_file: Vec<PathBuf>,
    /// Root filesystem directory for the command (default: a read-only view of the host's).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Give every capability, no seccomp filter, no masked paths, the host's /dev.
    #[arg(long)]
    pub privileged: bool,
    /// Add a capability (NET_ADMIN or CAP_NET_ADMIN, ALL; repeatable, or comma-separated).
    #[arg(long = "cap-add", value_name = "CAP", value_delimiter = ',')]
    pub cap_add: Vec<String>,
    /// Drop a capability (repeatable, or comma-separated; ALL drops every one).
    #[arg(long = "cap-drop", value_name = "CAP", value_delimiter = ',')]
    pub cap_drop: Vec<String>,
    /// no-new-privileges[=true|false], seccomp=unconfined, systempaths=unconfined (repeatable).
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Bind-mount a host path: HOST:CONTAINER[:ro] (repeatable).
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volume: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS], e.g. /cache:size=64m,exec (repeatable).
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub cmd: Vec<String>,
}

/// Builds the create request (and the name for `?name=`).
pub fn build(args: &Args) -> Result<(Option<String>, ContainerCreateRequest)> {
    for h in &args.add_host {
        match h.split_once(':') {
            Some((name, ip)) if !name.is_empty() && !ip.is_empty() => {}
            _ => bail!("invalid --add-host {h:?}: expected NAME:IP, e.g. db:10.1.0.5"),
        }
    }
    let mut endpoints = NetworkingConfig::default();
    let first = args.network.first().cloned();
    // As the docker CLI: --link is HostConfig.Links, and on a user-defined network also that
    // endpoint's Links (dockerd reads the latter there).
    let user_defined = first.as_deref().is_some_and(|n| {
        !matches!(n, "bridge" | "default" | "host" | "none") && !n.starts_with("container:")
    });
    let endpoint_links: &[String] = if user_defined { &args.link } else { &[] };
    let flags = EndpointFlags {
        ip: args.ip.as_ref(),
        ip6: args.ip6.as_ref(),
        aliases: &args.network_alias,
        link_local_ips: &args.link_local_ip,
        links: endpoint_links,
    };
    let wants_endpoint = endpoint(flags).is_some() || args.mac_address.is_some();
    let with_mac = |mut ep: berth_api::types::EndpointSettings| {
        if let Some(m) = &args.mac_address {
            ep.mac_address = m.clone();
        }
        ep
    };
    for (i, net) in args.network.iter().enumerate() {
        if net == "host" || net == "none" || net.starts_with("container:") {
            continue;
        }
        let settings = if i == 0 {
            with_mac(endpoint(flags).unwrap_or_default())
        } else {
            Default::default()
        };
        endpoints.endpoints_config.insert(net.clone(), settings);
    }
    if first.is_none() && wants_endpoint {
        let ep = endpoint(flags).unwrap_or_default();
        endpoints
            .endpoints_config
            .insert("bridge".to_string(), with_mac(ep));
    }
    let mut ports = Vec::new();
    for p in &args.publish {
        ports.extend(berth_plan::ports::parse_publish(p)?);
    }
    let port_bindings = berth_plan::ports::to_bindings(&ports)
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .into_iter()
                .map(|(host_ip, host_port)| PortBinding { host_ip, host_port })
                .collect();
            (k, v)
        })
        .collect();
    let rootfs = match &args.rootfs {
        Some(dir) => Some(
            std::path::absolute(dir)
                .with_context(|| format!("--rootfs {}", dir.display()))?
                .display()
                .to_string(),
        ),
        None => None,
    };
    let binds = args
        .volume
        .iter()
        .map(|v| volume(v))
        .collect::<Result<Vec<_>>>()?;
    let tmpfs = args
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((path, opts)) => (path.to_string(), opts.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();
    // As docker: the files first, then -e (a later entry for the same key wins).
    let mut env = super::kvfile::env_files(&args.env_file)?;
    env.extend(args.env.iter().filter_map(|e| env_entry(e)));
    let labels = super::kvfile::labels(&args.label_file, &args.label)?;
    let restart_policy = match args.restart.as_deref() {
        // The docker CLI's own check, before anything is sent.
        Some(p) if args.rm && !matches!(p, "" | "no") => {
            bail!("conflicting options: cannot specify both --restart and --rm")
        }
        Some(p) => {
            let (name, maximum_retry_count) = berth_plan::restart::parse_flag(p)?;
            berth_api::types::RestartPolicy {
                name,
                maximum_retry_count,
            }
        }
        None => Default::default(),
    };
    // The docker CLI's own check (its words); berthd checks the rest.
    let sysctls = args
        .sysctl
        .iter()
        .map(|kv| berth_plan::sysctl::cli_check(kv))
        .collect::<Result<_, _>>()?;
    let req = ContainerCreateRequest {
        hostname: args.hostname.clone().unwrap_or_default(),
        cmd: args.cmd.clone(),
        env,
        rootfs,
        host_config: HostConfig {
            network_mode: first.unwrap_or_else(|| "bridge".to_string()),
            dns: args.dns.clone(),
            dns_search: args.dns_search.clone(),
            dns_options: args.dns_option.clone(),
            extra_hosts: args.add_host.clone(),
            links: args.link.clone(),
            auto_remove: args.rm,
            port_bindings,
            privileged: args.privileged,
            cap_add: args.cap_add.clone(),
            cap_drop: args.cap_drop.clone(),
            security_opt: args.security_opt.clone(),
            readonly_rootfs: args.read_only,
            binds,
            tmpfs,
            restart_policy,
            sysctls,
            console_size: if args.tty {
                super::interactive::terminal_size().map(|(h, w)| vec![u32::from(h), u32::from(w)])
            } else {
                None
            },
        },
        networking_config: endpoints,
        mac_address: String::new(),
        tty: args.tty,
        open_stdin: args.interactive,
        // As the docker CLI: the attached client's end of input is the command's.
        stdin_once: args.interactive && !args.detach,
        attach_stdin: args.interactive && !args.detach,
        working_dir: args.workdir.clone().unwrap_or_default(),
        user: args.user.clone().unwrap_or_default(),
        labels,
    };
    Ok((args.name.clone(), req))
}

/// `-v HOST:CONTAINER[:OPTS]` with a relative host path (`./data`, `../x`) made absolute, as the
/// docker CLI does; the daemon validates the rest.
fn volume(v: &str) -> Result<String> {
    match v.split_once(':') {
        Some((host, rest)) if host.starts_with('.') => {
            let abs = std::path::absolute(host).with_context(|| format!("-v {v}"))?;
            Ok(format!("{}:{rest}", abs.display()))
        }
        _ => Ok(v.to_string()),
    }
}

/// Runs the container; returns the exit code (125 when it could not be started).
pub async fn run(client: &Client, args: Args) -> i32 {
    if args.interactive && args.tty && !args.detach && !super::interactive::stdin_is_terminal() {
        eprintln!("berth: the input device is not a TTY (use -i without -t to pipe input)");
        return 125;
    }
    let detach_keys = match super::interactive::detach_keys(args.detach_keys.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            crate::report(&e);
            return 125;
        }
    };
    if args.detach {
        // One request: berthd creates and starts it (berth's `start=1`), so an overlay
        // network's other hosts learn the container with its address claim, not a client
        // round trip, a store commit and a second cluster write later. A failed start leaves
        // it created (removed with `--rm`), as the two requests did.
        return match create(client, &args, true).await {
            Ok((id, true)) => {
                out(&id);
                0
            }
            // A daemon without berth's `start=1` (dockerd, an older berthd) only created it.
            Ok((id, false)) => {
                if let Err(e) = start(client, &args, &id).await {
                    crate::report(&e);
                    return 125;
                }
                out(&id);
                0
            }
            Err(e) => {
                crate::report(&e);
                125
            }
        };
    }
    if !(args.interactive || args.tty) {
        return run_attached(client, &args).await;
    }
    let id = match create(client, &args, false).await {
        Ok((id, _)) => id,
        Err(e) => {
            crate::report(&e);
            return 125;
        }
    };
    attach_interactive(client, &args, &id, detach_keys).await
}

/// The content type of Docker's multiplexed stream.
const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";

/// `run` without `-d`, `-i`, `-t`: one request, berth's `create?start=1&attach=1`: berthd
/// creates the container, follows its output and exit from before it starts it, and answers
/// with all three in one stream (the create's answer, the output, the exit code), instead of
/// four requests (create; logs and wait; start) one after another, each a connection and a
/// round trip, and the create's own `fdatasync` (the start's commit makes it durable).
/// A daemon that does not know `attach=1` answers the create as JSON: dockerd (which knows
/// no `start=1` either) only created it, and the usual requests follow; an older berthd
/// started it too, and only its output and exit are left to follow.
async fn run_attached(client: &Client, args: &Args) -> i32 {
    let (path, req) = match build(args) {
        Ok((name, req)) => (create_path(name, "start=1&attach=1"), req),
        Err(e) => {
            crate::report(&e);
            return 125;
        }
    };
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut stream = match client.request_stream(Method::POST, &path, Some(&req)).await {
        Ok(s) => s,
        Err(e) => {
            crate::report(&e.into());
            return 125;
        }
    };
    if stream.content_type() != Some(MULTIPLEXED) {
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(e) => {
                    crate::report(&e.into());
                    return 125;
                }
            }
        }
        let created: ContainerCreateResponse = match serde_json::from_slice(&bytes) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("berth: the create's answer: {e}");
                return 125;
            }
        };
        for w in &created.warnings {
            eprintln!("WARNING: {w}");
        }
        if created.berth_started {
            let waiter = wait_for_exit(client, &created.id);
            let logs = obj_path(
                "containers",
                &created.id,
                "/logs?follow=1&stdout=1&stderr=1",
            );
            return follow(client, &created.id, waiter, interrupt, logs).await;
        }
        return attach(client, args, &created.id).await;
    }
    let mut id = None;
    match copy_output(client, &mut id, &mut stream, &mut interrupt).await {
        Copied::Exited(code) => exit_code(code),
        Copied::Left => 130,
        Copied::Ended => {
            eprintln!("berth: berthd ended the stream without the container's exit code");
            125
        }
    }
}

/// How [`copy_output`] ended.
enum Copied {
    /// With berth's exit frame: the container's exit code.
    Exited(i64),
    /// The stream ended (or failed, reported) without one.
    Ended,
    /// A second Ctrl-C: the user left the container to stop on its own.
    Left,
}

/// Copies a multiplexed stream's output to ours until it ends. Ctrl-C (`interrupt`) stops
/// the container `id` (learned from berth's create frame if `None`); a second one leaves.
async fn copy_output(
    client: &Client,
    id: &mut Option<String>,
    stream: &mut BodyStream,
    interrupt: &mut Option<tokio::signal::unix::Signal>,
) -> Copied {
    let mut decoder = Decoder::default();
    let mut interrupted = false;
    // Ctrl-Cs not acted on yet.
    let mut pending = 0u32;
    loop {
        let signal = async {
            match interrupt.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = stream.next() => match chunk {
                None => return Copied::Ended,
                Some(Ok(bytes)) => {
                    for (kind, payload) in decoder.push(&bytes) {
                        match kind {
                            CREATED => {
                                if let Ok(c) = serde_json::from_slice::<ContainerCreateResponse>(&payload) {
                                    for w in &c.warnings {
                                        eprintln!("WARNING: {w}");
                                    }
                                    *id = Some(c.id);
                                }
                            }
                            EXITED => {
                                return match serde_json::from_slice::<WaitResponse>(&payload) {
                                    Ok(w) => Copied::Exited(w.status_code),
                                    Err(_) => Copied::Ended,
                                };
                            }
                            _ => write_raw(kind == STDERR, &payload),
                        }
                    }
                }
                Some(Err(e)) => {
                    crate::report(&e.into());
                    return Copied::Ended;
                }
            },
            _ = signal => pending += 1,
        }
        // A Ctrl-C before berthd named the container (its create frame) waits for the name.
        let Some(id) = id.as_deref() else { continue };
        while pending > 0 {
            pending -= 1;
            if interrupted {
                eprintln!("berth: leaving {} to stop on its own", short_id(id, false));
                return Copied::Left;
            }
            interrupted = true;
            let client = client.clone();
            let stop = obj_path("containers", id, "/stop?t=10");
            tokio::spawn(async move {
                if let Err(e) = client.request_empty(Method::POST, &stop, NO_BODY).await {
                    crate::report(&e.into());
                }
            });
        }
    }
}

/// `berth create`: as `run`, but only creates the container (state `created`) and prints its
/// full id, as `docker create`; 125 when it could not be created.
pub async fn create_only(client: &Client, args: Args) -> i32 {
    match create(client, &args, false).await {
        Ok((id, _)) => {
            out(&id);
            0
        }
        Err(e) => {
            crate::report(&e);
            125
        }
    }
}

/// `-i`/`-t`: attach (before the start, so nothing is missed), start, then the session; the
/// exit code is the container's (0 after the detach keys: it runs on).
async fn attach_interactive(client: &Client, args: &Args, id: &str, detach_keys: Vec<u8>) -> i32 {
    use super::interactive::{session, Options, Outcome};
    let stdin = if args.interactive { "1" } else { "0" };
    let path = obj_path(
        "containers",
        id,
        &format!(
            "/attach?stream=1&stdin={stdin}&stdout=1&stderr=1&detachKeys={}",
            url_escape(args.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))
        ),
    );
    let conn = match client.hijack(Method::POST, &path, NO_BODY).await {
        Ok(c) => c,
        Err(e) => {
            crate::report(&e.into());
            let _ = start(client, args, id).await;
            return 125;
        }
    };
    let waiter = match wait_for_next_exit(client, id).await {
        Ok(w) => w,
        Err(e) => {
            crate::report(&e.into());
            // Started all the same, as when the attach failed: with `--rm` its exit removes it.
            let _ = start(client, args, id).await;
            return 125;
        }
    };
    if let Err(e) = start(client, args, id).await {
        crate::report(&e);
        return 125;
    }
    let opts = Options {
        tty: args.tty,
        stdin: args.interactive,
        detach_keys,
        resize: Some(obj_path("containers", id, "/resize")),
        interrupt: Some(obj_path("containers", id, "/stop?t=10")),
    };
    match session(client, conn, &opts).await {
        Ok(Outcome::Ended) => {}
        Ok(Outcome::Detached) => return 0,
        Ok(Outcome::Signalled(sig)) => return 128 + sig,
        Err(e) => crate::report(&e),
    }
    waited(waiter).await
}

/// `POST /containers/create`; `start`: berthd starts it too (`start=1`, berth's own). Returns
/// the id and whether berthd said it started it.
async fn create(client: &Client, args: &Args, start: bool) -> Result<(String, bool)> {
    let (name, req) = build(args)?;
    let path = create_path(name, if start { "start=1" } else { "" });
    let created: ContainerCreateResponse =
        client.request_json(Method::POST, &path, Some(&req)).await?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    Ok((created.id, start && created.berth_started))
}

/// `/containers/create`, with the name and `extra` (query parameters) if any.
fn create_path(name: Option<String>, extra: &str) -> String {
    let mut path = match name {
        Some(n) => format!("/containers/create?name={}", url_escape(&n)),
        None => "/containers/create".to_string(),
    };
    if !extra.is_empty() {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(extra);
    }
    path
}

async fn start(client: &Client, args: &Args, id: &str) -> Result<()> {
    let started = client
        .request_empty(Method::POST, &obj_path("containers", id, "/start"), NO_BODY)
        .await;
    if let Err(e) = started {
        if args.rm {
            // Never started, so the daemon's auto-remove never fires: clean up ourselves.
            let _ = client
                .request_empty(
                    Method::DELETE,
                    &obj_path("containers", id, "?force=1"),
                    NO_BODY,
                )
                .await;
        }
        return Err(e.into());
    }
    Ok(())
}

/// Streams the output until the container exits; Ctrl-C stops it (a second Ctrl-C leaves).
///
/// The wait and the log stream are opened *before* the container starts, so even a command
/// that exits (and, with `--rm`, is removed) at once loses neither its output nor its code.
async fn attach(client: &Client, args: &Args, id: &str) -> i32 {
    let waiter = wait_for_exit(client, id);
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let logs = obj_path("containers", id, "/logs?follow=1&stdout=1&stderr=1");
    let stream = client.request_stream(Method::GET, &logs, NO_BODY).await;
    if let Err(e) = start(client, args, id).await {
        crate::report(&e);
        return 125;
    }
    follow_opened(client, id, waiter, interrupt, stream).await
}

/// Follows a started container's output (`logs`, the path) until it ends, then its exit.
async fn follow(
    client: &Client,
    id: &str,
    waiter: Waiter,
    interrupt: Option<tokio::signal::unix::Signal>,
    logs: String,
) -> i32 {
    let stream = client.request_stream(Method::GET, &logs, NO_BODY).await;
    follow_opened(client, id, waiter, interrupt, stream).await
}

/// Copies an opened log stream's output until it ends; then the exit code from `waiter`.
async fn follow_opened(
    client: &Client,
    id: &str,
    waiter: Waiter,
    mut interrupt: Option<tokio::signal::unix::Signal>,
    stream: Result<BodyStream, berth_api::client::ApiError>,
) -> i32 {
    match stream {
        Ok(mut stream) => {
            let mut known = Some(id.to_string());
            if let Copied::Left = copy_output(client, &mut known, &mut stream, &mut interrupt).await
            {
                return 130;
            }
        }
        // A command fast enough to be gone (and auto-removed) before we ask has no logs left.
        Err(e) if e.is_not_found() => {}
        Err(e) => crate::report(&e.into()),
    }
    waited(waiter).await
}

/// A pending `POST /containers/{id}/wait`.
pub type Waiter = tokio::task::JoinHandle<Result<WaitResponse, berth_api::client::ApiError>>;

/// Asks berthd for the container's *next* exit (`/wait?condition=next-exit`) and returns once
/// berthd has registered the wait, which its answer's head says (dockerd's protocol, which the
/// docker CLI follows too). Only then may the caller send the start: a wait that arrived after
/// a quick command's start and exit would wait for the run after it, for ever.
pub async fn wait_for_next_exit(
    client: &Client,
    id: &str,
) -> Result<Waiter, berth_api::client::ApiError> {
    let path = obj_path("containers", id, "/wait?condition=next-exit");
    let mut body = client.request_stream(Method::POST, &path, NO_BODY).await?;
    Ok(tokio::spawn(async move {
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        serde_json::from_slice(&bytes).map_err(|error| berth_api::client::ApiError::Decode {
            method: Method::POST.to_string(),
            path,
            error,
        })
    }))
}

/// Asks berthd (now) to tell the container's exit (`/wait`), without waiting for the answer's
/// head: a finished run meets this condition too (berthd answers an exited container at once,
/// a removed `--rm` one from its remembered code), so a start sent first loses nothing.
fn wait_for_exit(client: &Client, id: &str) -> Waiter {
    let client = client.clone();
    let path = obj_path("containers", id, "/wait");
    tokio::spawn(async move {
        client
            .request_json::<WaitResponse, _>(Method::POST, &path, NO_BODY)
            .await
    })
}

/// The container's exit code from a [`wait_for_exit`] (125 if berthd could not tell it).
pub async fn waited(waiter: Waiter) -> i32 {
    match waiter.await {
        Ok(Ok(w)) => exit_code(w.status_code),
        Ok(Err(e)) => {
            crate::report(&e.into());
            125
        }
        Err(e) => {
            eprintln!("berth: waiting for the container: {e}");
            125
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;
    use clap::Parser;

    fn parse(argv: &[&str]) -> Args {
        let mut full = vec!["berth", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).expect("parses").command {
            crate::Command::Run(a) => *a.0,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn options_before_the_command_rest_goes_to_it() {
        let a = parse(&[
            "--rm",
            "--network",
            "web",
            "curl",
            "-s",
            "http://x/",
            "--rm",
        ]);
        assert!(a.rm);
        assert_eq!(a.network, vec!["web"]);
        assert_eq!(a.cmd, vec!["curl", "-s", "http://x/", "--rm"]);

        let a = parse(&["-d", "--name", "c1", "-h", "box", "sh", "-c", "echo hi"]);
        assert!(a.detach);
        assert_eq!(a.hostname.as_deref(), Some("box"));
        assert_eq!(a.cmd, vec!["sh", "-c", "echo hi"]);
    }

    #[test]
    fn double_dash() {
        let a = parse(&["--rm", "--", "-weird", "-x"]);
        assert_eq!(a.cmd, vec!["-weird", "-x"]);
        assert!(build(&a).is_ok());
        let a = parse(&["--", "ls", "-l"]);
        assert_eq!(a.cmd, vec!["ls", "-l"]);
    }

    #[test]
    fn unknown_option_before_the_command_is_an_error() {
        assert!(Cli::try_parse_from(["berth", "run", "--bogus", "ls"]).is_err());
        assert!(Cli::try_parse_from(["berth", "run", "--rm"]).is_err());
        let exec = Cli::try_parse_from(["berth", "exec", "-e", "A=1", "c1", "ls", "-l", "-e"])
            .expect("parses");
        match exec.command {
            crate::Command::Exec(_) => {}
            other => panic!("not exec: {other:?}"),
        }
    }

    #[test]
    fn request_from_flags() {
        let a = parse(&[
            "--rm",
            "--name",
            "c2",
            "--network",
            "n2",
            "--network",
            "n3",
            "--network",
            "host",
            "--ip",
            "10.233.0.11",
            "--network-alias",
            "db",
            "--dns",
            "1.1.1.1",
            "--dns-option",
            "ndots:2",
            "--add-host",
            "gw:10.0.0.1",
            "-e",
            "A=1",
            "sleep",
            "600",
        ]);
        let (name, req) = build(&a).expect("valid");
        assert_eq!(name.as_deref(), Some("c2"));
        assert_eq!(req.host_config.network_mode, "n2");
        assert!(req.host_config.auto_remove);
        assert_eq!(req.host_config.dns, vec!["1.1.1.1"]);
        assert_eq!(req.host_config.dns_options, vec!["ndots:2"]);
        assert_eq!(req.host_config.extra_hosts, vec!["gw:10.0.0.1"]);
        assert_eq!(req.env, vec!["A=1"]);
        assert_eq!(req.cmd, vec!["sleep", "600"]);
        let eps = &req.networking_config.endpoints_config;
        assert_eq!(eps.keys().collect::<Vec<_>>(), vec!["n2", "n3"]);
        let n2 = &eps["n2"];
        assert_eq!(
            n2.ipam_config
                .as_ref()
                .and_then(|c| c.ipv4_address.as_deref()),
            Some("10.233.0.11")
        );
        assert_eq!(n2.aliases.as_deref(), Some(&["db".to_string()][..]));
        assert_eq!(eps["n3"].ipam_config, None);

        let (_, plain) = build(&parse(&["true"])).expect("valid");
        assert_eq!(plain.host_config.network_mode, "bridge");
        assert!(plain.networking_config.endpoints_config.is_empty());
        assert!(build(&parse(&["--add-host", "nocolon", "true"])).is_err());
    }

    #[test]
    fn security_flags_become_docker_host_config() {
        let (_, req) = build(&parse(&[
            "--privileged",
            "--cap-add",
            "NET_ADMIN,net_raw",
            "--cap-add",
            "CAP_SYS_TIME",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges=false",
            "--security-opt",
            "seccomp=unconfined",
            "--read-only",
            "-v",
            "/srv:/data:ro",
            "--volume",
            "./rel:/rel",
            "--tmpfs",
            "/cache:size=64m,exec",
            "--tmpfs",
            "/scratch",
            "true",
        ]))
        .expect("valid");
        let hc = &req.host_config;
        assert!(hc.privileged && hc.readonly_rootfs);
        assert_eq!(hc.cap_add, vec!["NET_ADMIN", "net_raw", "CAP_SYS_TIME"]);
        assert_eq!(hc.cap_drop, vec!["ALL"]);
        assert_eq!(
            hc.security_opt,
            vec!["no-new-privileges=false", "seccomp=unconfined"]
        );
        assert_eq!(hc.binds[0], "/srv:/data:ro");
        assert!(hc.binds[1].starts_with('/') && hc.binds[1].ends_with("/rel:/rel"));
        assert_eq!(hc.tmpfs["/cache"], "size=64m,exec");
        assert_eq!(hc.tmpfs["/scratch"], "");
        // Docker's wire names.
        let json = serde_json::to_value(hc).expect("json");
        for k in [
            "Privileged",
            "CapAdd",
            "CapDrop",
            "SecurityOpt",
            "ReadonlyRootfs",
            "Binds",
            "Tmpfs",
        ] {
            assert!(json.get(k).is_some(), "{k} missing in {json}");
        }
        let (_, plain) = build(&parse(&["true"])).expect("valid");
        assert!(!plain.host_config.privileged && plain.host_config.cap_add.is_empty());
    }

    #[test]
    fn publish_flags_become_docker_port_bindings() {
        let (_, req) = build(&parse(&[
            "-p",
            "8080:80",
            "--publish",
            "127.0.0.1::53/udp",
            "-p",
            "[::1]:9000-9001:9000-9001",
            "sleep",
            "1",
        ]))
        .expect("valid");
        let pb = &req.host_config.port_bindings;
        assert_eq!(
            pb.keys().collect::<Vec<_>>(),
            vec!["53/udp", "80/tcp", "9000/tcp", "9001/tcp"]
        );
        assert_eq!(pb["80/tcp"][0].host_port, "8080");
        assert_eq!(pb["80/tcp"][0].host_ip, "");
        assert_eq!(pb["53/udp"][0].host_ip, "127.0.0.1");
        assert_eq!(pb["53/udp"][0].host_port, "");
        assert_eq!(pb["9001/tcp"][0].host_ip, "::1");
        assert_eq!(pb["9001/tcp"][0].host_port, "9001");
        let e = build(&parse(&["-p", "8000-8010:9000-9005", "true"])).expect_err("bad");
        assert!(e.to_string().contains("differ in length"), "{e}");
        // `-p` before the command only: after it, it is the command's.
        let a = parse(&["sh", "-p", "80"]);
        assert!(a.publish.is_empty());
    }
}
