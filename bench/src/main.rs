//! berth-bench: how long berth takes to give a container its network, next to netavark and
//! the CNI plugins, on this machine, in one run.
//!
//! Sections (see `docs/PERFORMANCE.md` for what each number means):
//! 1. **compare**: setup and teardown of one container while an anchor container keeps the
//!    bridge up, interleaved round by round: berth in-process (exactly berthd's calls),
//!    netavark warm and cold, CNI loopback+bridge+host-local. No port mappings.
//! 2. **scale**: berth's setup of container *i* while *i − 1* are attached, up to `--scale`,
//!    then teardown in reverse; optionally the same for the peers up to `--peer-scale`.
//! 3. **daemon**: whole `berth run --rm` through a private berthd, with a network vs `none`.
//!
//! Safety: nothing touches the root network namespace. Every link, rule and sysctl lands in
//! namespaces named `bb<pid>…` that the bench creates and deletes (guards, also on error and
//! Ctrl-C); the peers run inside them through `ip netns exec`.

mod berth;
mod daemon;
mod guard;
mod peers;
mod stats;
mod worker;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipnet::Ipv4Net;

use crate::berth::BerthNet;
use crate::guard::{check_stop, prefix, Budget, Netns, ScratchDir, PEER_PATH};
use crate::peers::{Cni, Netavark, PeerContainer};
use crate::stats::{median, ms, ms_opt, summarize};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "berth-bench",
    about = "Per-container network setup/teardown: berth vs netavark vs CNI, scaling, and berth run through berthd"
)]
struct Args {
    /// Containers per tool in the side-by-side comparison (after one discarded warm-up).
    #[arg(long, default_value_t = 50)]
    containers: usize,
    /// berth scaling: attach this many containers, timing each setup (then each teardown).
    #[arg(long, default_value_t = 500)]
    scale: usize,
    /// Peer scaling (netavark warm, CNI) up to this many containers; 0 skips it.
    #[arg(long, default_value_t = 200)]
    peer_scale: usize,
    /// `berth run` repetitions of each kind in the berthd section.
    #[arg(long, default_value_t = 30)]
    daemon_runs: usize,
    /// Smoke run: 10 containers, scale 100, no peer scaling, 5 daemon runs.
    #[arg(long)]
    quick: bool,
    /// Leave the peers out of the comparison (berth only).
    #[arg(long)]
    skip_peers: bool,
    /// Skip the berthd section.
    #[arg(long)]
    skip_daemon: bool,
    /// Time budget per section in seconds; a loop that runs out stops early and says so.
    #[arg(long, default_value_t = 900)]
    budget: u64,
    /// Experiment: disable IPv6 (sysctls, untimed) in berth's bench namespaces and in every
    /// berth container namespace, as Docker does on IPv4-only networks. berthd does not.
    #[arg(long)]
    no_ipv6: bool,
    /// Write every raw series (ms, one value per line) into this directory.
    #[arg(long, value_name = "DIR")]
    raw: Option<PathBuf>,
    /// berthd binary [default: next to this binary].
    #[arg(long)]
    berthd: Option<PathBuf>,
    /// berth CLI binary [default: next to this binary].
    #[arg(long)]
    berth: Option<PathBuf>,
}

/// Named series of samples (ms) in insertion order, and the markdown report.
#[derive(Debug, Default)]
struct Report {
    series: Vec<(String, Vec<f64>)>,
    md: String,
    failed: Vec<String>,
}

impl Report {
    fn push(&mut self, key: &str, v: f64) {
        match self.series.iter_mut().find(|(k, _)| k == key) {
            Some((_, vs)) => vs.push(v),
            None => self.series.push((key.to_string(), vec![v])),
        }
    }

    fn get(&self, key: &str) -> &[f64] {
        self.series
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    fn line(&mut self, s: impl AsRef<str>) {
        self.md.push_str(s.as_ref());
        self.md.push('\n');
    }
}

// Series names of the comparison.
const B_SETUP: &str = "berth setup (netns + endpoint)";
const B_NETNS: &str = "berth: create_netns_fd";
const B_EP: &str = "berth: setup_endpoint";
const B_TEAR: &str = "berth teardown (container gone: namespace released), synchronous part";
const B_GONE: &str = "&nbsp;&nbsp;berth: until the kernel has removed the veth (background)";
const B_DISC: &str = "berth disconnect of a running container (teardown_endpoint)";
const NVW_SETUP: &str = "netavark setup, warm";
const NVW_TEAR: &str = "netavark teardown, warm";
const NVK_SETUP: &str = "netavark setup, cold (creates the bridge)";
const NVK_TEAR: &str = "netavark teardown, cold (removes the bridge)";
const CNI_ADD: &str = "CNI ADD (loopback + bridge/host-local)";
const CNI_ADD_LO: &str = "CNI: loopback ADD";
const CNI_ADD_BR: &str = "CNI: bridge ADD";
const CNI_DEL: &str = "CNI DEL (bridge/host-local + loopback)";
const CNI_DEL_BR: &str = "CNI: bridge DEL";
const CNI_DEL_LO: &str = "CNI: loopback DEL";

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(worker::WORKER_ARG) {
        return worker::serve();
    }
    let mut args = Args::parse();
    if args.quick {
        args.containers = args.containers.min(10);
        args.scale = args.scale.min(100);
        args.peer_scale = 0;
        args.daemon_runs = args.daemon_runs.min(5);
    }
    if args.containers == 0 || args.containers > 5000 {
        bail!("--containers must be 1..=5000");
    }
    if args.scale > 5000 || args.peer_scale > 1000 {
        bail!("--scale must be at most 5000 and --peer-scale at most 1000");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("berth-bench must run as root (it creates network namespaces)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

/// Sets the stop flag on Ctrl-C or SIGTERM (the loops then unwind and the guards clean up).
fn install_signal_handler() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        guard::request_stop();
        eprintln!("berth-bench: stopping; cleaning up namespaces and processes");
    });
    Ok(())
}

fn command_line(args: &Args) -> String {
    let mut s = "cargo run --release -p berth-bench --".to_string();
    let _ = write!(
        s,
        " --containers {} --scale {}",
        args.containers, args.scale
    );
    let _ = write!(
        s,
        " --peer-scale {} --daemon-runs {}",
        args.peer_scale, args.daemon_runs
    );
    if args.skip_peers {
        s.push_str(" --skip-peers");
    }
    if args.skip_daemon {
        s.push_str(" --skip-daemon");
    }
    if args.no_ipv6 {
        s.push_str(" --no-ipv6");
    }
    s
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Output of a read-only version query (`--version`, `dpkg-query`), first lines, or `?`.
fn version_of(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .env_clear()
        .env("PATH", PEER_PATH)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

async fn run(args: Args) -> Result<()> {
    install_signal_handler()?;
    let scratch = ScratchDir::create()?;
    let mut rep = Report::default();

    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    rep.line("# berth-bench results");
    rep.line("");
    rep.line(format!("* command: `{}`", command_line(&args)));
    rep.line(format!(
        "* date (UTC): {now}; kernel {kernel}; {cpus} CPUs; load average at start {}",
        loadavg()
    ));
    rep.line(format!(
        "* peers: {} | {} | {}",
        version_of(peers::NETAVARK, &["--version"]),
        version_of(
            "dpkg-query",
            &[
                "-W",
                "-f",
                "${Package} ${Version}\\n",
                "containernetworking-plugins",
                "iptables"
            ]
        ),
        version_of("iptables", &["--version"]),
    ));
    rep.line(format!(
        "* all work inside namespaces `{}*` (deleted at the end); times in ms",
        prefix()
    ));

    let sections: [(&str, bool); 5] = [
        ("compare", true),
        ("floor", true),
        ("scale", args.scale > 0),
        ("peer-scale", args.peer_scale > 0 && !args.skip_peers),
        ("daemon", !args.skip_daemon),
    ];
    for (name, enabled) in sections {
        if !enabled {
            continue;
        }
        eprintln!("berth-bench: section {name} (load {})", loadavg());
        let result = match name {
            "compare" => compare(&args, &scratch, &mut rep).await,
            "floor" => floor(&args, &mut rep).await,
            "scale" => scale(&args, &mut rep).await,
            "peer-scale" => peer_scale(&args, &scratch, &mut rep),
            _ => daemon_section(&args, &scratch, &mut rep),
        };
        if let Err(e) = result {
            eprintln!("berth-bench: section {name} failed: {e:#}");
            rep.line("");
            rep.line(format!("**Section {name} failed:** {e:#}"));
            rep.failed.push(name.to_string());
            if check_stop().is_err() {
                break;
            }
        }
    }
    rep.line("");
    rep.line(format!("Load average at the end: {}", loadavg()));

    if let Some(dir) = &args.raw {
        write_raw(dir, &rep)?;
    }
    println!("{}", rep.md);
    if !rep.failed.is_empty() {
        bail!("section(s) failed: {}", rep.failed.join(", "));
    }
    Ok(())
}

fn write_raw(dir: &std::path::Path, rep: &Report) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (key, values) in &rep.series {
        let slug: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let body: String = values.iter().map(|v| format!("{v:.4}\n")).collect();
        let path = dir.join(format!("{slug}.txt"));
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One table row: name, n, median, p90, min, max, ratio to `base` (median ÷ base median).
fn row(rep: &mut Report, key: &str, base: Option<f64>) {
    let Some(s) = summarize(rep.get(key)) else {
        rep.line(format!("| {key} | 0 | | | | | |"));
        return;
    };
    let ratio = match base {
        Some(b) if b > 0.0 => format!("{:.1}×", s.median / b),
        _ => String::new(),
    };
    rep.line(format!(
        "| {key} | {} | {} | {} | {} | {} | {ratio} |",
        s.n,
        ms(s.median),
        ms(s.p90),
        ms(s.min),
        ms(s.max)
    ));
}

/// Section 1: one container at a time, all tools interleaved round by round.
async fn compare(args: &Args, scratch: &ScratchDir, rep: &mut Report) -> Result<()> {
    let p = prefix();
    let budget = Budget::new(args.budget);
    let peers = !args.skip_peers;

    let hb = Netns::add(&format!("{p}b"))?;
    let mut berth = BerthNet::new(&hb, "bbnet", "10.77.0.0/16", args.no_ipv6).await?;
    let (anchor_b, _) = berth.setup().await?;

    let subnet_nv: Ipv4Net = "10.78.0.0/16".parse().context("subnet")?;
    let subnet_cni: Ipv4Net = "10.79.0.0/16".parse().context("subnet")?;
    // Declared in this order so that they drop before their host namespaces (reverse order).
    let mut hosts: Vec<Netns> = Vec::new();
    let mut nvw: Option<Netavark> = None;
    let mut nvk: Option<Netavark> = None;
    let mut cni: Option<Cni> = None;
    let mut anchors: Vec<PeerContainer> = Vec::new();
    let mut cni_anchor_result = serde_json::Value::Null;
    if peers {
        hosts.push(Netns::add(&format!("{p}w"))?);
        hosts.push(Netns::add(&format!("{p}k"))?);
        hosts.push(Netns::add(&format!("{p}c"))?);
        let mut w = Netavark::new(
            &hosts[0],
            &scratch.path().join("nv-warm"),
            "bbnv0",
            subnet_nv,
        )?;
        let k = Netavark::new(
            &hosts[1],
            &scratch.path().join("nv-cold"),
            "bbnv0",
            subnet_nv,
        )?;
        let mut c = Cni::new(
            &hosts[2],
            "bbcni0",
            subnet_cni,
            &scratch.path().join("cni-ipam"),
        )?;
        let aw = PeerContainer::new(&format!("{p}wa"), 0xa1, 0, subnet_nv)?;
        w.setup(&aw).context("netavark anchor")?;
        let ac = PeerContainer::new(&format!("{p}ca"), 0xa2, 0, subnet_cni)?;
        cni_anchor_result = c.add(&ac).context("CNI anchor")?.1;
        anchors.push(aw);
        anchors.push(ac);
        nvw = Some(w);
        nvk = Some(k);
        cni = Some(c);
    }

    let n = args.containers;
    let mut done = 0;
    for r in 0..=n {
        check_stop()?;
        if budget.spent() {
            eprintln!("  time budget spent after {done} rounds");
            break;
        }
        let keep = r > 0; // round 0 is a discarded warm-up
        let idx = u32::try_from(r + 1).context("too many containers")?;
        for k in 0..4 {
            match (r + k) % 4 {
                0 => {
                    // The explicit disconnect first: the namespace release below leaves the
                    // kernel's cleanup work running, which it waits out before returning, so
                    // neither measurement overlaps the other's background work.
                    let (a2, t2) = berth.setup().await?;
                    let disc = berth.disconnect(a2).await?;
                    let (a, t) = berth.setup().await?;
                    let (td, gone) = berth.teardown(a).await?;
                    if keep {
                        for t in [t, t2] {
                            rep.push(B_SETUP, t.total().as_secs_f64() * 1e3);
                            rep.push(B_NETNS, t.netns.as_secs_f64() * 1e3);
                            rep.push(B_EP, t.endpoint.as_secs_f64() * 1e3);
                        }
                        rep.push(B_TEAR, td.as_secs_f64() * 1e3);
                        rep.push(B_GONE, gone.as_secs_f64() * 1e3);
                        rep.push(B_DISC, disc.as_secs_f64() * 1e3);
                    }
                }
                1 | 2 => {
                    let (tool, tag, setup_key, tear_key) = if (r + k) % 4 == 1 {
                        (nvw.as_mut(), 'w', NVW_SETUP, NVW_TEAR)
                    } else {
                        (nvk.as_mut(), 'k', NVK_SETUP, NVK_TEAR)
                    };
                    let Some(nv) = tool else { continue };
                    let c = PeerContainer::new(&format!("{p}{tag}{r}"), 0xb1, idx, subnet_nv)?;
                    let s = nv.setup(&c)?;
                    let t = nv.teardown(&c)?;
                    if keep {
                        rep.push(setup_key, s);
                        rep.push(tear_key, t);
                    }
                }
                _ => {
                    let Some(cni) = cni.as_mut() else { continue };
                    let c = PeerContainer::new(&format!("{p}c{r}"), 0xb2, idx, subnet_cni)?;
                    let (add, res) = cni.add(&c)?;
                    let del = cni.del(&c, &res)?;
                    if keep {
                        rep.push(CNI_ADD, add.total());
                        rep.push(CNI_ADD_LO, add.lo);
                        rep.push(CNI_ADD_BR, add.bridge);
                        rep.push(CNI_DEL, del.total());
                        rep.push(CNI_DEL_BR, del.bridge);
                        rep.push(CNI_DEL_LO, del.lo);
                    }
                }
            }
        }
        if keep {
            done += 1;
        }
        if r % 10 == 0 {
            eprintln!("  round {r}/{n}");
        }
    }

    // Untimed cleanup of the anchors (the namespaces go anyway).
    berth.disconnect(anchor_b).await?;
    if let (Some(w), Some(a)) = (nvw.as_mut(), anchors.first()) {
        w.teardown(a).context("netavark anchor teardown")?;
    }
    if let (Some(c), Some(a)) = (cni.as_mut(), anchors.get(1)) {
        c.del(a, &cni_anchor_result).context("CNI anchor DEL")?;
    }

    let bs = median(rep.get(B_SETUP));
    let bt = median(rep.get(B_DISC));
    rep.line("");
    rep.line(format!(
        "## 1. One container's network setup and teardown ({done} containers per tool, bridge already up)"
    ));
    rep.line("");
    rep.line("| what | n | median | p90 | min | max | median ÷ berth's |");
    rep.line("|---|---|---|---|---|---|---|");
    for (key, base) in [
        (B_SETUP, bs),
        (B_NETNS, None),
        (B_EP, None),
        (NVW_SETUP, bs),
        (NVK_SETUP, bs),
        (CNI_ADD, bs),
        (CNI_ADD_LO, None),
        (CNI_ADD_BR, None),
        (B_TEAR, None),
        (B_GONE, None),
        (B_DISC, bt),
        (NVW_TEAR, bt),
        (NVK_TEAR, bt),
        (CNI_DEL, bt),
        (CNI_DEL_BR, None),
        (CNI_DEL_LO, None),
    ] {
        if !rep.get(key).is_empty() {
            row(rep, key, base);
        }
    }
    drop(anchors);
    drop(cni);
    drop(nvk);
    drop(nvw);
    drop(hosts);
    drop(berth);
    drop(hb);
    Ok(())
}

/// Kernel floors, same run: what the kernel itself takes for the operations berth cannot avoid.
/// The veths are made with `ip` (untimed); the timed part is one in-process netlink request.
async fn floor(args: &Args, rep: &mut Report) -> Result<()> {
    const RTT: &str = "one rtnetlink round trip (RTM_GETLINK dump, 3 links)";
    const DEL_LOCAL: &str = "delete a bare veth pair, both ends in one namespace";
    const DEL_PEER: &str = "delete a bare veth pair, peer in another namespace";
    let p = prefix();
    let host = Netns::add(&format!("{p}f"))?;
    let other = Netns::add(&format!("{p}fc"))?;
    let kernel = berth_kernel::link::Kernel::new_in(host.path())
        .await
        .context("binding berth-kernel to the floor namespace")?;
    let hn = host.name().to_string();
    for r in 0..=args.containers {
        check_stop()?;
        let t0 = std::time::Instant::now();
        kernel.list_links().await.context("listing links")?;
        let rtt = t0.elapsed();
        guard::run_ip(&[
            "-n", &hn, "link", "add", "bbf0", "type", "veth", "peer", "name", "bbf1",
        ])?;
        let t0 = std::time::Instant::now();
        kernel.delete_link("bbf0").await.context("deleting bbf0")?;
        let local = t0.elapsed();
        guard::run_ip(&[
            "-n",
            &hn,
            "link",
            "add",
            "bbf0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            other.name(),
        ])?;
        let t0 = std::time::Instant::now();
        kernel.delete_link("bbf0").await.context("deleting bbf0")?;
        let peer = t0.elapsed();
        if r > 0 {
            rep.push(RTT, rtt.as_secs_f64() * 1e3);
            rep.push(DEL_LOCAL, local.as_secs_f64() * 1e3);
            rep.push(DEL_PEER, peer.as_secs_f64() * 1e3);
        }
    }
    rep.line("");
    rep.line("## 1b. Kernel floors (same run, in-process netlink; the veths are created untimed with `ip`)");
    rep.line("");
    rep.line("| what | n | median | p90 | min | max | |");
    rep.line("|---|---|---|---|---|---|---|");
    for key in [RTT, DEL_LOCAL, DEL_PEER] {
        row(rep, key, None);
    }
    drop(kernel);
    drop(other);
    drop(host);
    Ok(())
}

/// Block medians of `v` (1-based container numbers `from..=to`), `None` outside the data.
fn block(v: &[f64], from: usize, to: usize) -> Option<f64> {
    if from == 0 || to > v.len() || from > to {
        return None;
    }
    median(&v[from - 1..to])
}

/// The blocks reported: 1–10, 91–100, 191–200, 491–500 (those inside `n`), and the last ten.
fn blocks(n: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = [(1, 10), (91, 100), (191, 200), (491, 500)]
        .into_iter()
        .filter(|&(_, to)| to <= n)
        .collect();
    if n >= 10 && !out.iter().any(|&(_, to)| to == n) {
        out.push((n - 9, n));
    }
    out
}

/// Section 2: berth with `i − 1` containers attached.
async fn scale(args: &Args, rep: &mut Report) -> Result<()> {
    let p = prefix();
    let budget = Budget::new(args.budget);
    let hs = Netns::add(&format!("{p}s"))?;
    let mut net = BerthNet::new(&hs, "bbscale", "10.77.0.0/16", args.no_ipv6).await?;
    // Discarded warm-up.
    let (a, _) = net.setup().await?;
    net.disconnect(a).await?;

    let mut attached = Vec::with_capacity(args.scale);
    let (mut setup, mut netns, mut ep) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=args.scale {
        check_stop()?;
        if budget.spent() {
            eprintln!("  time budget spent after {} containers", i - 1);
            break;
        }
        let (a, t) = net.setup().await?;
        attached.push(a);
        setup.push(t.total().as_secs_f64() * 1e3);
        netns.push(t.netns.as_secs_f64() * 1e3);
        ep.push(t.endpoint.as_secs_f64() * 1e3);
        if i % 100 == 0 {
            eprintln!("  {i} attached");
        }
    }
    let n = setup.len();
    let mut teardown = vec![f64::NAN; n];
    while let Some(a) = attached.pop() {
        check_stop()?;
        let i = attached.len(); // 0-based index of this container
        teardown[i] = net.disconnect(a).await?.as_secs_f64() * 1e3;
    }
    for (k, v) in [
        ("scale: berth setup", &setup),
        ("scale: berth create_netns_fd", &netns),
        ("scale: berth setup_endpoint", &ep),
        ("scale: berth teardown", &teardown),
    ] {
        for x in v.iter() {
            rep.push(k, *x);
        }
    }

    rep.line("");
    rep.line(format!(
        "## 2. berth scaling: setup of container i while i − 1 are attached (n = {n}); teardown in reverse (container i torn down while i − 1 remain)"
    ));
    rep.line("");
    rep.line("| containers i | setup median | create_netns_fd | setup_endpoint | setup max | teardown median |");
    rep.line("|---|---|---|---|---|---|");
    for (from, to) in blocks(n) {
        let max = setup[from - 1..to].iter().copied().fold(f64::NAN, f64::max);
        rep.line(format!(
            "| {from}–{to} | {} | {} | {} | {} | {} |",
            ms_opt(block(&setup, from, to)),
            ms_opt(block(&netns, from, to)),
            ms_opt(block(&ep, from, to)),
            ms(max),
            ms_opt(block(&teardown, from, to)),
        ));
    }
    if n >= 2 {
        rep.line("");
        rep.line(format!(
            "Single values: setup of container 1 = {}, of container {n} = {}; teardown of container {n} (first torn down, {} others attached) = {}, of container 1 (last, alone) = {}.",
            ms(setup[0]),
            ms(setup[n - 1]),
            n - 1,
            ms(teardown[n - 1]),
            ms(teardown[0])
        ));
    }
    drop(net);
    drop(hs);
    Ok(())
}

/// Section 2b: the peers with `i − 1` containers attached (no anchor: container 1 of
/// netavark creates the bridge).
fn peer_scale(args: &Args, scratch: &ScratchDir, rep: &mut Report) -> Result<()> {
    let p = prefix();
    let n = args.peer_scale;
    let subnet_nv: Ipv4Net = "10.78.0.0/16".parse().context("subnet")?;
    let subnet_cni: Ipv4Net = "10.79.0.0/16".parse().context("subnet")?;
    rep.line("");
    rep.line(format!(
        "## 2b. Peer scaling (up to {n}): setup of container i while i − 1 are attached; teardown in reverse"
    ));
    rep.line("");
    rep.line("| tool | containers i | setup median | teardown median |");
    rep.line("|---|---|---|---|");
    for tool in ["netavark", "CNI"] {
        let budget = Budget::new(args.budget);
        let host = Netns::add(&format!("{p}{}", if tool == "CNI" { "C" } else { "W" }))?;
        let mut setup = Vec::new();
        let mut teardown;
        let mut ctrs: Vec<(PeerContainer, serde_json::Value)> = Vec::new();
        if tool == "netavark" {
            let mut nv =
                Netavark::new(&host, &scratch.path().join("nv-scale"), "bbnv0", subnet_nv)?;
            for i in 1..=n {
                check_stop()?;
                if budget.spent() {
                    eprintln!("  {tool}: time budget spent after {} containers", i - 1);
                    break;
                }
                let idx = u32::try_from(i).context("too many containers")?;
                let c = PeerContainer::new(&format!("{p}W{i}"), 0xd1, idx, subnet_nv)?;
                setup.push(nv.setup(&c)?);
                ctrs.push((c, serde_json::Value::Null));
                if i % 50 == 0 {
                    eprintln!("  {tool}: {i} attached");
                }
            }
            teardown = vec![f64::NAN; ctrs.len()];
            while let Some((c, _)) = ctrs.pop() {
                check_stop()?;
                teardown[ctrs.len()] = nv.teardown(&c)?;
            }
        } else {
            let mut cni = Cni::new(
                &host,
                "bbcni0",
                subnet_cni,
                &scratch.path().join("cni-scale"),
            )?;
            for i in 1..=n {
                check_stop()?;
                if budget.spent() {
                    eprintln!("  {tool}: time budget spent after {} containers", i - 1);
                    break;
                }
                let idx = u32::try_from(i).context("too many containers")?;
                let c = PeerContainer::new(&format!("{p}C{i}"), 0xd2, idx, subnet_cni)?;
                let (t, res) = cni.add(&c)?;
                setup.push(t.total());
                ctrs.push((c, res));
                if i % 50 == 0 {
                    eprintln!("  {tool}: {i} attached");
                }
            }
            teardown = vec![f64::NAN; ctrs.len()];
            while let Some((c, res)) = ctrs.pop() {
                check_stop()?;
                teardown[ctrs.len()] = cni.del(&c, &res)?.total();
            }
        }
        for x in &setup {
            rep.push(&format!("peer scale: {tool} setup"), *x);
        }
        for x in &teardown {
            rep.push(&format!("peer scale: {tool} teardown"), *x);
        }
        for (from, to) in blocks(setup.len()) {
            rep.line(format!(
                "| {tool} | {from}–{to} | {} | {} |",
                ms_opt(block(&setup, from, to)),
                ms_opt(block(&teardown, from, to))
            ));
        }
        drop(host);
    }
    Ok(())
}

/// Section 3: whole `berth run --rm` through a private berthd.
fn daemon_section(args: &Args, scratch: &ScratchDir, rep: &mut Report) -> Result<()> {
    let p = prefix();
    let berthd_bin = match &args.berthd {
        Some(b) => b.clone(),
        None => daemon::sibling("berthd")?,
    };
    let berth_bin = match &args.berth {
        Some(b) => b.clone(),
        None => daemon::sibling("berth")?,
    };
    let host = Netns::add(&format!("{p}d"))?;
    let dir = scratch.path().join("berthd");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let d = daemon::Berthd::start(&host, &berthd_bin, &berth_bin, &dir)?;
    eprintln!("  berthd pid {}", d.pid());
    let t = daemon::measure(
        &d,
        "10.80.0.0/16",
        args.daemon_runs,
        Budget::new(args.budget),
    )?;
    drop(d);
    drop(host);
    for x in &t.with_net {
        rep.push("berth run --rm --network bbnet true", *x);
    }
    for x in &t.none {
        rep.push("berth run --rm --network none true", *x);
    }
    rep.line("");
    rep.line(format!(
        "## 3. Whole container start through berthd ({} runs each, alternating)",
        t.with_net.len()
    ));
    rep.line("");
    rep.line("| what | n | median | p90 | min | max | |");
    rep.line("|---|---|---|---|---|---|---|");
    row(rep, "berth run --rm --network bbnet true", None);
    row(rep, "berth run --rm --network none true", None);
    if let (Some(a), Some(b)) = (median(&t.with_net), median(&t.none)) {
        rep.line("");
        rep.line(format!(
            "Network share of a container start (difference of the medians): {} ms ({:.0} % of the networked run).",
            ms(a - b),
            100.0 * (a - b) / a
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_requested_ranges() {
        assert_eq!(
            blocks(500),
            vec![(1, 10), (91, 100), (191, 200), (491, 500)]
        );
        assert_eq!(blocks(120), vec![(1, 10), (91, 100), (111, 120)]);
        assert_eq!(blocks(5), Vec::<(usize, usize)>::new());
    }

    #[test]
    fn block_medians() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(block(&v, 1, 10), Some(5.5));
        assert_eq!(block(&v, 11, 30), None);
    }
}
