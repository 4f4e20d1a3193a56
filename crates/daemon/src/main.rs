//! berthd: the berth daemon.
//!
//! Wires the layers together: HTTP handlers convert and validate requests (via `berth-plan`),
//! write desired state in one store transaction, converge the kernel (via `berth-kernel`) and
//! only then answer. At start-up it converges everything: observe, diff, apply, remove orphans.

mod capacity;
mod cluster;
mod console;
mod containers;
mod converge;
mod daemon;
mod dns;
mod docindex;
mod error;
mod explain;
mod failpoint;
mod firewall;
mod http;
mod ids;
mod ipam;
mod links;
mod logtimes;
mod lookup;
mod netpool;
mod networks;
mod openapi;
mod overlay;
mod ports;
mod ports_local6;
mod reconcile;
mod runtime;
mod security;
mod spawner;
mod sysinfo;
mod topology;
mod trace;
mod wireguard;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Command-line options of berthd.
#[derive(Debug, Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth daemon: container networking for Linux"
)]
struct Args {
    /// Where the embedded store, container files and logs live.
    #[arg(long, default_value = "/var/lib/berth", env = "BERTH_STATE_DIR")]
    state_dir: PathBuf,
    /// The API socket (Docker-Engine-compatible for networks).
    #[arg(long, default_value = berth_api::DEFAULT_SOCKET, env = "BERTH_SOCKET")]
    socket: PathBuf,
    /// The host's resolv.conf: the embedded DNS resolver forwards to its nameservers (re-read
    /// when it changes) and containers inherit its search domains and options.
    #[arg(long, default_value = "/etc/resolv.conf", env = "BERTH_RESOLV_CONF")]
    resolv_conf: PathBuf,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info", env = "BERTH_LOG")]
    log_level: String,
    /// Do not repair drift when the kernel reports a change or on the periodic check (start-up
    /// and API calls still converge; `berth system check` shows what differs).
    #[arg(long)]
    no_drift_repair: bool,
    /// Seconds between periodic checks of the kernel against the stored intent: the sysctls and
    /// bridges each time, everything every 30th time (notifications catch most drift at once;
    /// this catches the rest).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    check_interval: u64,
    /// Join a cluster of berth hosts sharing state through etcd (Docker's classic flag):
    /// `etcd://HOST:PORT[,HOST:PORT…]`. Needed by `-d overlay` networks.
    #[arg(long, value_name = "etcd://HOST:PORT,…")]
    cluster_store: Option<String>,
    /// TLS for etcd: `kv.cacertfile=PATH`, `kv.certfile=PATH`, `kv.keyfile=PATH` (repeatable
    /// or comma-separated; https is used when given).
    #[arg(long, value_name = "KEY=VALUE", requires = "cluster_store")]
    cluster_store_opt: Vec<String>,
    /// The address other hosts reach this one at (its VXLAN tunnel endpoint), or the
    /// interface whose address that is. Required with --cluster-store.
    #[arg(long, value_name = "IP|IFACE", requires = "cluster_store")]
    advertise_addr: Option<String>,
    /// This host's name in the cluster (default: the host name).
    #[arg(long, requires = "cluster_store")]
    node_name: Option<String>,
    /// Seconds after which the other hosts forget this one once it stops renewing its lease.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(2..=300))]
    cluster_lease_ttl: u64,
    /// UDP port of this host's WireGuard (encrypted overlay networks), on the advertised
    /// address.
    #[arg(long, default_value_t = berth_plan::wireguard::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    wireguard_port: u16,
    /// At most this many `[::1]` UDP relays of published ports at once, each a socket (default:
    /// half of berthd's open-files limit, which berthd raises to its hard limit at start). TCP
    /// ports are not counted: they share one listener.
    #[arg(long, value_name = "N")]
    max_loopback_relays: Option<usize>,
    /// Let idle CPUs sleep while a request is answered. By default berthd asks the kernel for
    /// a CPU wake-up latency of 0 (`/dev/cpu_dma_latency`) from a request's arrival until its
    /// answer is written, at most 20 ms at a time, so that no hand-off of the request waits
    /// for a sleeping CPU to wake (docs/PERFORMANCE.md, stop 50).
    #[arg(long)]
    no_idle_poll: bool,
}

/// The cluster options, checked (a wrong one stops berthd before it changes anything).
fn cluster_config(args: &Args) -> anyhow::Result<Option<cluster::ClusterConfig>> {
    let Some(url) = &args.cluster_store else {
        return Ok(None);
    };
    let store = berth_plan::cluster::parse_cluster_store(url, &args.cluster_store_opt)?;
    let Some(adv) = &args.advertise_addr else {
        anyhow::bail!(
            "--cluster-store needs --advertise-addr IP|IFACE: the address other hosts reach              this one at"
        );
    };
    let advertise = berth_plan::cluster::parse_advertise(adv)?;
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("reading the host name (give --node-name)")?
            .to_string_lossy()
            .into_owned(),
    };
    berth_plan::cluster::validate_node_name(&node_name)?;
    Ok(Some(cluster::ClusterConfig {
        url: url.clone(),
        store,
        advertise,
        node_name,
        lease_ttl: std::time::Duration::from_secs(args.cluster_lease_ttl),
        key_file: args.state_dir.join("wireguard.key"),
        wg_port: args.wireguard_port,
    }))
}

/// RUNDIR, the API socket's directory, absolute: containers are given its `netns` to detach
/// by path, from their own working directory.
fn rundir(socket: &std::path::Path) -> anyhow::Result<PathBuf> {
    let socket = std::path::absolute(socket)
        .with_context(|| format!("resolving the socket path {}", socket.display()))?;
    Ok(socket
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/")))
}

/// With a cluster store, berthd mounts its overlay networks' namespaces under RUNDIR/netns
/// (docs/OVERLAY.md): two berthds sharing RUNDIR would take each other's namespaces for
/// leftovers. An exclusive lock on `RUNDIR/netns/.berthd.lock` (flock(2), released when the
/// process ends, kill -9 included) refuses the second one with what to do. Held for the
/// process's life by the caller.
fn lock_rundir(rundir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let dir = rundir.join(berth_plan::overlayns::NETNS_SUBDIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".berthd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another berthd with a cluster store uses the run directory {} (its socket's \
             directory, where it mounts its overlay networks' namespaces): give each berthd a \
             --socket in a directory of its own",
            rundir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The async runtime's worker threads.
const WORKERS: usize = 2;

/// berthd's allocator: mimalloc instead of glibc's malloc, which took ~10 % of berthd's CPU
/// over connect/disconnect cycles (`_int_malloc`, `_int_free`, `unlink_chunk`: every pass
/// allocates and frees thousands of small strings, maps and JSON values). `connect_ab.sh`,
/// five runs, both slots (stop 48): connect 0.06–0.57 ms, disconnect 0.12–0.58 ms quicker.
/// Built with `no_thp`: with transparent huge pages behind its arenas berthd's RSS doubled at
/// one container (stop 43: 24.6 → 64.5 MiB); without them it is within 3 MiB of glibc's at
/// 100 and 1,000 (58.0–58.8 MiB), and with its freed pages purged at once (stop 49, below)
/// 57.4–58.0 MiB after a restart with 1,000 (glibc's: 51.8–56.0).
/// glibc's malloc still serves glibc's own allocations (`opendir`'s buffers, the resolver),
/// hence the `mallopt` settings below.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // The container init/enter stages are this same binary: they must run before any thread
    // exists (unshare(CLONE_NEWNS) and setns into a mount namespace need a single-threaded
    // process), so dispatch before the tokio runtime starts.
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = berth_kernel::container::dispatch(&argv) {
        std::process::exit(code);
    }

    // mimalloc (berthd's allocator) returns a freed page at once rather than 1 s later: the
    // pages freed in a burst stayed resident after it (see the function).
    berth_kernel::sys::purge_freed_pages_at_once();
    // Two arenas, one per runtime worker: with glibc's default (8 per core) the threads
    // that read container namespaces and the blocking pool each kept free memory in arenas
    // of their own (VmRSS after a restart with 500 containers: 45–50 MiB, 42 MiB with 2).
    let arenas_capped = berth_kernel::sys::limit_malloc_arenas(WORKERS as i32);
    // No fastbins: their deferred merging landed on the next request's path (see the
    // function; `connect_ab.sh`, both slots: connect 0.21–0.25 ms quicker).
    let fastbins_off = berth_kernel::sys::no_malloc_fastbins();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .with_context(|| format!("invalid --log-level {:?}", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();

    if !arenas_capped {
        tracing::debug!("malloc arenas not capped (not glibc, or it refused M_ARENA_MAX)");
    }
    if !fastbins_off {
        tracing::debug!("malloc fastbins left on (not glibc, or it refused M_MXFAST)");
    }
    // The spare threads' maker (`berth_kernel::spare`), started here by the main thread, so
    // that every spare has berthd's own namespaces and credentials whoever takes it first.
    berth_kernel::spare::global();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    security::set_socket(&args.socket);
    let cluster = cluster_config(&args)?;
    // Every published UDP port's [::1] relay and every relayed connection hold a descriptor:
    // the soft limit (often 1024) would run out long before the hard one.
    let nofile = match berth_kernel::sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("raising the open-files limit: {e}");
            1024
        }
    };
    let relay_budget = args
        .max_loopback_relays
        .unwrap_or((nofile / 2).try_into().unwrap_or(usize::MAX));
    tracing::info!(nofile, relay_budget, "open-files limit");
    let rundir = rundir(&args.socket)?;
    let _rundir_lock = match &cluster {
        Some(_) => Some(lock_rundir(&rundir)?),
        None => None,
    };
    let daemon = daemon::Daemon::start(daemon::Config {
        state_dir: args.state_dir.clone(),
        rundir,
        resolv_conf: args.resolv_conf.clone(),
        drift_repair: !args.no_drift_repair,
        check_interval: std::time::Duration::from_secs(args.check_interval),
        cluster,
        relay_budget,
    })
    .await?;
    converge::spawn_watchers(daemon.clone());
    overlay::spawn_sync(daemon.clone());
    // On a worker, not on this (the `block_on`) thread: there each connection's readiness went
    // worker (the I/O driver) → main thread (accept) → worker (the connection's task), two
    // cross-CPU wake-ups per request; on a worker, the one that reads the readiness accepts
    // and runs the connection's task itself.
    let socket = args.socket.clone();
    let latency = if args.no_idle_poll {
        berth_kernel::cpu_latency::CpuLatency::off()
    } else {
        berth_kernel::cpu_latency::CpuLatency::open()
    };
    tokio::spawn(async move { http::serve(daemon, &socket, latency).await })
        .await
        .context("the API server's task")?
}
