//! berth-bench-ports: what a published port costs in berth, measured through a real berthd.
//!
//! Sections (results in docs/PERFORMANCE.md, "Published ports"):
//! 1. **scale**: `berth run -d -p HOST:80` (and `berth rm -f`) while 0, 100, 1,000 and 10,000
//!    ports are already published, against the same run without `-p` at each step; plus
//!    berthd's own time for the port work (choosing the port, the nft transaction, the UDP
//!    conntrack flush), read from its log.
//! 2. **range**: publishing and removing a 1,000-port range (`-p 30000-30999:30000-30999`).
//! 3. **conntrack**: the UDP conntrack flush with 0 and N entries in the table (in-process
//!    ctnetlink), next to `conntrack -D` (the CLI fallback).
//! 4. **throughput**: iperf3 from a LAN peer namespace to a container, through the published
//!    port (DNAT) and to the container address directly (routed, `allow_direct`), alternated;
//!    plus TCP request/response round trips of both paths.
//! 5. **peers** (same run): netavark (`port_mappings`) and the CNI `portmap` plugin: one more
//!    container with one port while a container holding N ports exists, and a 1,000-port range
//!    published and removed (see `ports_peers`), with the ratios to berth's figures of
//!    sections 1 and 2.
//!
//! Safety: everything runs in namespaces `bp<pid>h` (berthd's "host") and `bp<pid>o` (the LAN
//! peer) that this program creates and deletes (also on error); processes are stopped only
//! through the `Child` handles it spawned, by PID. Addresses: 198.19.0.0/24 between the two
//! namespaces, 10.240.0.0/16 for berth's networks; no traffic leaves them. The peers run only
//! inside their own host namespaces `bb<pid>pn` / `bb<pid>pc` (and container namespaces
//! `bb<pid>pX-N`), through `ip netns exec`, with `PATH=/usr/sbin:/usr/bin:/sbin:/bin` and
//! `DBUS_SYSTEM_BUS_ADDRESS=`; each peer process has a 15-minute watchdog and each peer a time
//! budget (`--peer-budget`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

// Shared with `berth-bench`: cleanup guards and the in-namespace timing worker.
#[allow(dead_code)]
mod guard;
mod ports_peers;
#[allow(dead_code)]
mod worker;

use ports_peers::{Kind, Peer, Ports};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "berth-bench-ports",
    about = "Published ports: cost at scale, ranges, conntrack, throughput"
)]
struct Args {
    /// Runs per measured point (after one discarded warm-up).
    #[arg(long, default_value_t = 15)]
    runs: usize,
    /// Published-port levels for the scale section.
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000,10000")]
    levels: Vec<usize>,
    /// Runs of the 1,000-port range.
    #[arg(long, default_value_t = 5)]
    range_runs: usize,
    /// Conntrack entries created for the flush measurement.
    #[arg(long, default_value_t = 2000)]
    conntrack_entries: usize,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    iperf_secs: u32,
    /// iperf3 runs per path (alternated).
    #[arg(long, default_value_t = 5)]
    iperf_runs: usize,
    /// Skip the throughput section.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the UDP conntrack section.
    #[arg(long)]
    skip_conntrack: bool,
    /// Skip netavark and CNI (section 5).
    #[arg(long)]
    skip_peers: bool,
    /// Ports already published for the peers (N = 10,000 is for berth only: netavark's cost
    /// per mapping grows with its rule count, 57.6 s for 1,000 in peers.md).
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000")]
    peer_levels: Vec<usize>,
    /// Probe runs per peer level (after one discarded warm-up).
    #[arg(long, default_value_t = 5)]
    peer_runs: usize,
    /// Seconds each peer may take for section 5; levels not started by then are skipped
    /// (and reported as such).
    #[arg(long, default_value_t = 900)]
    peer_budget: u64,
    /// berthd binary [default: next to this binary].
    #[arg(long)]
    berthd: Option<PathBuf>,
    /// berth CLI binary [default: next to this binary].
    #[arg(long)]
    berth: Option<PathBuf>,
}

/// A network namespace this program created; deleted on drop.
struct Ns(String);

impl Ns {
    fn add(name: String) -> Result<Ns> {
        run("ip", &["netns", "add", &name])?;
        let ns = Ns(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A process this program spawned; SIGTERM by PID on drop, SIGKILL after 5 s.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command to completion; error with its stderr unless it succeeds.
fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The berth world: host and LAN namespaces, a berthd, its CLI.
struct World {
    host: Ns,
    out: Ns,
    dir: PathBuf,
    berth: PathBuf,
    daemon: Option<Proc>,
}

impl World {
    fn new(berthd: &Path, berth: &Path) -> Result<World> {
        let p = std::process::id();
        let host = Ns::add(format!("bp{p}h"))?;
        let out = Ns::add(format!("bp{p}o"))?;
        run(
            "ip",
            &[
                "-n", &host.0, "link", "add", "uplink", "type", "veth", "peer", "name", "lan",
                "netns", &out.0,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &host.0,
                "addr",
                "add",
                "198.19.0.1/24",
                "dev",
                "uplink",
            ],
        )?;
        run(
            "ip",
            &["-n", &out.0, "addr", "add", "198.19.0.2/24", "dev", "lan"],
        )?;
        run("ip", &["-n", &host.0, "link", "set", "uplink", "up"])?;
        run("ip", &["-n", &out.0, "link", "set", "lan", "up"])?;
        run(
            "ip",
            &[
                "-n",
                &out.0,
                "route",
                "add",
                "10.240.0.0/16",
                "via",
                "198.19.0.1",
            ],
        )?;
        let dir = std::env::temp_dir().join(format!("bp{p}"));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("berthd.log"))?;
        let sock = dir.join("berthd.sock");
        let child = Command::new("ip")
            .args(["netns", "exec", &host.0])
            .arg(berthd)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&sock)
            // `berthd::ports` also matches `berthd::ports_local6`, whose debug line per relay
            // (1,000 for a range) would be timed as port work: info for that one.
            .args([
                "--log-level",
                "warn,berthd::ports=debug,berthd::ports_local6=info",
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting berthd")?;
        let mut w = World {
            host,
            out,
            dir,
            berth: berth.to_path_buf(),
            daemon: Some(Proc(child)),
        };
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "berthd did not come up; see {}",
                    w.dir.join("berthd.log").display()
                );
            }
            if let Some(Proc(c)) = w.daemon.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!("berthd exited: {st}");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(w)
    }

    /// `berth ARGS…` → (milliseconds, stdout).
    fn berth(&self, args: &[&str]) -> Result<(f64, String)> {
        let sock = format!("unix://{}", self.dir.join("berthd.sock").display());
        let t = Instant::now();
        let out = Command::new(&self.berth)
            .arg("-H")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running berth")?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            bail!(
                "berth {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((ms, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// The `elapsed_us` of berthd's last "ports published" log line, in ms.
    fn last_publish_ms(&self) -> Option<f64> {
        self.last_log_ms("ports published")
    }

    /// The `elapsed_us` of berthd's last log line containing `needle`, in ms.
    fn last_log_ms(&self, needle: &str) -> Option<f64> {
        self.last_log_field_ms(needle, "elapsed_us")
    }

    /// The microseconds `field` of berthd's last log line containing `needle`, in ms (`None`
    /// when that line has no such field: a build without the per-step timings).
    fn last_log_field_ms(&self, needle: &str, field: &str) -> Option<f64> {
        let field = format!("{field}=");
        let f = std::fs::File::open(self.dir.join("berthd.log")).ok()?;
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(needle))
            .last()
            .and_then(|l| {
                l.split(field.as_str())
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .map(|us| us / 1000.0)
    }

    fn in_ns(&self, ns: &Ns, args: &[&str]) -> Result<String> {
        let mut a = vec!["netns", "exec", ns.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Containers outlive berthd (by design): remove them while it runs.
        if let Ok((_, ids)) = self.berth(&["ps", "-a", "-q"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut a = vec!["rm", "-f"];
                a.extend(ids);
                let _ = self.berth(&a);
            }
        }
        self.daemon = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match (s.first(), s.last()) {
        (Some(a), Some(b)) => format!("{a:.1}–{b:.1}"),
        _ => "-".into(),
    }
}

/// berth's medians at one level of section 1, for the peer ratios: (`run -d -p`, `rm -f`).
type BerthLevel = (usize, f64, f64);

/// Section 1: one more `-p` with N ports already published.
fn scale(w: &World, a: &Args) -> Result<(String, Vec<BerthLevel>)> {
    w.berth(&["network", "create", "--subnet", "10.240.0.0/16", "bench"])?;
    let mut out = String::from(
        "| ports already published | `run -d -p` median (min–max) | `run -d` without -p | difference | berthd: publish (choose + nft) | `rm -f` with -p | `rm -f` without | berthd: unpublish (nft delete) |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut published = 0usize;
    let mut filler = 0usize;
    let mut levels = Vec::new();
    for &level in &a.levels {
        // Fill up to `level` with containers holding up to 1,000 TCP ports each.
        while published < level {
            let n = (level - published).min(1000);
            let first = 1024 + published;
            let spec = format!("{}-{}:{}-{}", first, first + n - 1, first, first + n - 1);
            filler += 1;
            w.berth(&[
                "run",
                "-d",
                "--name",
                &format!("fill{filler}"),
                "--network",
                "bench",
                "-p",
                &spec,
                "sleep",
                "3600",
            ])?;
            published += n;
        }
        let (mut with, mut without, mut port_ms, mut rm_with, mut rm_without, mut unpub) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for i in 0..=a.runs {
            let port = (20000 + i).to_string();
            let spec = format!("{port}:80");
            let (t1, _) = w.berth(&[
                "run",
                "-d",
                "--name",
                "probe",
                "--network",
                "bench",
                "-p",
                &spec,
                "sleep",
                "600",
            ])?;
            let pm = w.last_publish_ms();
            let (r1, _) = w.berth(&["rm", "-f", "probe"])?;
            let um = w.last_log_ms("ports unpublished");
            let (t2, _) = w.berth(&[
                "run",
                "-d",
                "--name",
                "plain",
                "--network",
                "bench",
                "sleep",
                "600",
            ])?;
            let (r2, _) = w.berth(&["rm", "-f", "plain"])?;
            if i == 0 {
                continue; // warm-up
            }
            with.push(t1);
            without.push(t2);
            rm_with.push(r1);
            rm_without.push(r2);
            if let Some(pm) = pm {
                port_ms.push(pm);
            }
            if let Some(um) = um {
                unpub.push(um);
            }
        }
        let (mw, mo) = (median(&mut with.clone()), median(&mut without.clone()));
        levels.push((level, mw, median(&mut rm_with.clone())));
        out.push_str(&format!(
            "| {level} | {mw:.1} ({}) | {mo:.1} ({}) | {:+.1} | {:.2} ({}) | {:.1} | {:.1} | {:.1} ({}) |\n",
            spread(&with),
            spread(&without),
            mw - mo,
            median(&mut port_ms.clone()),
            spread(&port_ms),
            median(&mut rm_with),
            median(&mut rm_without),
            median(&mut unpub.clone()),
            spread(&unpub),
        ));
        eprintln!("scale: {level} ports done");
    }
    // Free the fillers for the next sections.
    for i in 1..=filler {
        w.berth(&["rm", "-f", &format!("fill{i}")])?;
    }
    Ok((out, levels))
}

/// Section 2: a 1,000-port range. Also returns berth's medians (`run -d -p`, `rm -f`).
fn range(w: &World, a: &Args) -> Result<(String, (f64, f64))> {
    let (mut run_ms, mut port_ms, mut rm_ms, mut plain, mut unpub) =
        (vec![], vec![], vec![], vec![], vec![]);
    // berthd's steps (builds that log them): publish = choose, nft, relays; unpublish =
    // relays, nft.
    let mut steps: [Vec<f64>; 5] = Default::default();
    for i in 0..=a.range_runs {
        let (t, _) = w.berth(&[
            "run",
            "-d",
            "--name",
            "range",
            "--network",
            "bench",
            "-p",
            "30000-30999:30000-30999",
            "sleep",
            "600",
        ])?;
        let pm = w.last_publish_ms();
        let mut got = [
            w.last_log_field_ms("ports published", "chosen_us"),
            w.last_log_field_ms("ports published", "nft_us"),
            w.last_log_field_ms("ports published", "relays_us"),
            None,
            None,
        ];
        let (r, _) = w.berth(&["rm", "-f", "range"])?;
        let um = w.last_log_ms("ports unpublished");
        got[3] = w.last_log_field_ms("ports unpublished", "relays_us");
        got[4] = w.last_log_field_ms("ports unpublished", "nft_us");
        let (p, _) = w.berth(&[
            "run",
            "-d",
            "--name",
            "plain",
            "--network",
            "bench",
            "sleep",
            "600",
        ])?;
        w.berth(&["rm", "-f", "plain"])?;
        if i == 0 {
            continue;
        }
        for (v, g) in steps.iter_mut().zip(got) {
            v.extend(g);
        }
        run_ms.push(t);
        rm_ms.push(r);
        plain.push(p);
        if let Some(um) = um {
            unpub.push(um);
        }
        if let Some(pm) = pm {
            port_ms.push(pm);
        }
    }
    let medians = (median(&mut run_ms.clone()), median(&mut rm_ms.clone()));
    let step = |i: usize| {
        let v = &steps[i];
        if v.is_empty() {
            "not logged by this build".to_string()
        } else {
            format!("{:.1} ({})", median(&mut v.clone()), spread(v))
        }
    };
    let mut table = format!(
        "| what | median (min–max) ms |\n|---|---|\n\
         | `run -d -p 30000-30999:30000-30999` | {:.1} ({}) |\n\
         | `run -d` without -p (same runs) | {:.1} ({}) |\n\
         | berthd port work for the range (choose 1,000 ports + one 1,000-element nft transaction) | {:.1} ({}) |\n\
         | `rm -f` of the range container (unpublish included) | {:.1} ({}) |\n\
         | berthd unpublish of the range (one 1,000-element nft delete) | {:.1} ({}) |\n",
        median(&mut run_ms.clone()),
        spread(&run_ms),
        median(&mut plain.clone()),
        spread(&plain),
        median(&mut port_ms.clone()),
        spread(&port_ms),
        median(&mut rm_ms.clone()),
        spread(&rm_ms),
        median(&mut unpub.clone()),
        spread(&unpub),
    );
    table.push_str(&format!(
        "| &nbsp;&nbsp;publish: choosing the ports (conflict checks, host-port probes) | {} |\n\
         | &nbsp;&nbsp;publish: the nft transaction (1,000 elements) | {} |\n\
         | &nbsp;&nbsp;publish: opening the `[::1]` relays | {} |\n\
         | &nbsp;&nbsp;unpublish: closing the `[::1]` relays | {} |\n\
         | &nbsp;&nbsp;unpublish: the nft transaction (1,000 deletions) | {} |\n",
        step(0),
        step(1),
        step(2),
        step(3),
        step(4),
    ));
    Ok((table, medians))
}

/// Section 3: the UDP conntrack flush with an empty and a filled table.
fn conntrack(w: &World, a: &Args) -> Result<String> {
    let mut out = String::from(
        "| conntrack entries in this namespace | berthd: UDP publish (choose + nft + flush) | of which the in-process flush (ctnetlink dump + deletes) | `conntrack -D -p udp --orig-port-dst` (the CLI fallback) |\n|---|---|---|---|\n",
    );
    for entries in [0usize, a.conntrack_entries] {
        if entries > 0 {
            // Entries created by the conntrack CLI: UDP 198.19.0.2:P → 198.19.0.1:9 (not the
            // published port), so the flush has to walk all of them and deletes none.
            for i in 0..entries {
                let sport = (10000 + i).to_string();
                w.in_ns(
                    &w.host,
                    &[
                        "conntrack",
                        "-I",
                        "-p",
                        "udp",
                        "-s",
                        "198.19.0.2",
                        "-d",
                        "198.19.0.1",
                        "--sport",
                        &sport,
                        "--dport",
                        "9",
                        "-t",
                        "600",
                    ],
                )?;
            }
        }
        let (mut pub_ms, mut cli_ms, mut flush_ms) = (vec![], vec![], vec![]);
        for i in 0..=a.runs.min(10) {
            w.berth(&[
                "run",
                "-d",
                "--name",
                "udp",
                "--network",
                "bench",
                "-p",
                "5353:53/udp",
                "sleep",
                "600",
            ])?;
            let pm = w.last_publish_ms();
            let fm = w.last_log_ms("UDP conntrack entries flushed");
            w.berth(&["rm", "-f", "udp"])?;
            let t = Instant::now();
            let _ = w.in_ns(
                &w.host,
                &["conntrack", "-D", "-p", "udp", "--orig-port-dst", "5353"],
            );
            let c = t.elapsed().as_secs_f64() * 1000.0;
            if i == 0 {
                continue;
            }
            if let Some(pm) = pm {
                pub_ms.push(pm);
            }
            if let Some(fm) = fm {
                flush_ms.push(fm);
            }
            cli_ms.push(c);
        }
        out.push_str(&format!(
            "| {entries} | {:.2} ({}) | {:.2} ({}) | {:.1} ({}) |\n",
            median(&mut pub_ms.clone()),
            spread(&pub_ms),
            median(&mut flush_ms.clone()),
            spread(&flush_ms),
            median(&mut cli_ms.clone()),
            spread(&cli_ms)
        ));
    }
    Ok(out)
}

/// Section 4: iperf3 through the published port vs to the container address directly.
fn throughput(w: &World, a: &Args) -> Result<String> {
    w.berth(&[
        "network",
        "create",
        "--subnet",
        "10.241.0.0/24",
        "-o",
        "berth.network.allow_direct=true",
        "direct",
    ])?;
    w.berth(&[
        "run",
        "-d",
        "--name",
        "iperf",
        "--network",
        "direct",
        "-p",
        "5201:5201",
        "iperf3",
        "-s",
    ])?;
    w.berth(&[
        "run",
        "-d",
        "--name",
        "rr",
        "--network",
        "direct",
        "-p",
        "7000:7000",
        "python3",
        "-c",
        RR_SERVER,
    ])?;
    let (_, ip) = w.berth(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.direct.IPAddress}}",
        "iperf",
    ])?;
    let (_, rr_ip) = w.berth(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.direct.IPAddress}}",
        "rr",
    ])?;
    let (ip, rr_ip) = (ip.trim().to_string(), rr_ip.trim().to_string());
    w.in_ns(
        &w.out,
        &["ip", "route", "add", "10.241.0.0/24", "via", "198.19.0.1"],
    )
    .ok();
    std::thread::sleep(Duration::from_millis(500));
    let secs = a.iperf_secs.to_string();
    let gbps = |target: &str| -> Result<f64> {
        let j = w.in_ns(
            &w.out,
            &["iperf3", "-c", target, "-p", "5201", "-t", &secs, "-J"],
        )?;
        let v: serde_json::Value = serde_json::from_str(&j)?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .context("no bits_per_second in iperf3's output")
    };
    let (mut published, mut direct) = (vec![], vec![]);
    for _ in 0..a.iperf_runs {
        published.push(gbps("198.19.0.1")?);
        direct.push(gbps(&ip)?);
    }
    let rr = |target: &str| -> Result<f64> {
        let o = w.in_ns(
            &w.out,
            &["python3", "-c", RR_CLIENT, target, "7000", "20000"],
        )?;
        o.trim().parse::<f64>().context("rr client output")
    };
    let (mut rr_pub, mut rr_dir) = (vec![], vec![]);
    for _ in 0..3 {
        rr_pub.push(rr("198.19.0.1")?);
        rr_dir.push(rr(&rr_ip)?);
    }
    let (mp, md) = (median(&mut published.clone()), median(&mut direct.clone()));
    let (rp, rd) = (median(&mut rr_pub.clone()), median(&mut rr_dir.clone()));
    Ok(format!(
        "| path (LAN peer namespace → container, TCP) | iperf3 Gbit/s, median of {} × {secs} s (min–max) | request/response round trip, µs (median of 3 × 20,000) |\n|---|---|---|\n\
         | published port (host address:5201, DNAT) | {mp:.2} ({}) | {rp:.1} |\n\
         | container address directly (routed, allow_direct) | {md:.2} ({}) | {rd:.1} |\n\
         | published / direct | {:.1} % | {:+.1} µs |\n",
        a.iperf_runs,
        spread(&published),
        spread(&direct),
        100.0 * mp / md,
        rp - rd
    ))
}

/// One peer's figures at one level of section 5 (ms).
struct PeerLevel {
    level: usize,
    /// Setting up / tearing down the container holding the `level` ports (one run).
    bulk: Option<(f64, f64)>,
    setup: Vec<f64>,
    teardown: Vec<f64>,
}

/// What one peer measured in section 5.
struct PeerRun {
    kind: Kind,
    levels: Vec<PeerLevel>,
    skipped: Vec<usize>,
    /// Publishing and removing a 1,000-port range (ms), and how.
    range: Option<(f64, f64, &'static str)>,
}

/// Section 5 for one peer: one more container with one port at each level (a container
/// holding the level's ports exists meanwhile), then a 1,000-port range; bounded by
/// `--peer-budget`.
fn peer_section(kind: Kind, scratch: &Path, a: &Args) -> Result<PeerRun> {
    let end = Instant::now() + Duration::from_secs(a.peer_budget);
    let mut p = Peer::new(kind, scratch)?;
    let mut run = PeerRun {
        kind,
        levels: Vec::new(),
        skipped: Vec::new(),
        range: None,
    };
    let mut probe = p.container()?;
    for &level in &a.peer_levels {
        if Instant::now() >= end {
            eprintln!(
                "peers: {}: time budget spent, skipping N = {level}",
                kind.name()
            );
            run.skipped.push(level);
            continue;
        }
        let count = u16::try_from(level).context("peer level above 65,535 ports")?;
        let bulk_ports = Ports::Each { first: 1024, count };
        let mut bulk = None;
        if level > 0 {
            let t = Instant::now();
            let mut c = p.container()?;
            let up = p.setup(&mut c, bulk_ports)?;
            eprintln!(
                "peers: {}: {level} ports set up in {:.1} s",
                kind.name(),
                t.elapsed().as_secs_f64()
            );
            bulk = Some((c, up));
        }
        let (mut setup, mut teardown) = (vec![], vec![]);
        for i in 0..=a.peer_runs {
            let port = u16::try_from(20000 + i).context("too many peer runs")?;
            let ports = Ports::Each {
                first: port,
                count: 1,
            };
            let s = p.setup(&mut probe, ports)?;
            let t = p.teardown(&probe, ports)?;
            if i > 0 {
                setup.push(s);
                teardown.push(t);
            }
        }
        let bulk = match bulk {
            Some((c, up)) => {
                let down = p.teardown(&c, bulk_ports)?;
                eprintln!("peers: {}: {level} ports torn down", kind.name());
                if kind == Kind::Cni && level == 1000 {
                    run.range = Some((up, down, "1,000 `portMappings` entries"));
                }
                Some((up, down))
            }
            None => None,
        };
        run.levels.push(PeerLevel {
            level,
            bulk,
            setup,
            teardown,
        });
    }
    // A 1,000-port range: netavark's `range` field; CNI has none (1,000 entries, the same
    // operation as the N = 1,000 container above when that ran).
    if run.range.is_none() {
        if Instant::now() >= end {
            eprintln!(
                "peers: {}: time budget spent, skipping the range",
                kind.name()
            );
        } else {
            let ports = Ports::Range {
                first: 30000,
                count: 1000,
            };
            let mut c = p.container()?;
            let up = p.setup(&mut c, ports)?;
            let down = p.teardown(&c, ports)?;
            let how = match kind {
                Kind::Netavark => "one mapping, `range: 1000`",
                Kind::Cni => "1,000 `portMappings` entries",
            };
            run.range = Some((up, down, how));
        }
    }
    Ok(run)
}

fn ratio(peer: f64, berth: f64) -> String {
    if peer.is_finite() && berth > 0.0 {
        format!("{:.1}×", peer / berth)
    } else {
        "-".into()
    }
}

/// `r`'s figures at `level`, if it ran.
fn find_level(r: &PeerRun, level: usize) -> Option<&PeerLevel> {
    r.levels.iter().find(|l| l.level == level)
}

/// The side-by-side tables of section 5.
fn peer_report(runs: &[PeerRun], berth: &[BerthLevel], berth_range: (f64, f64)) -> String {
    let mut out = String::from(
        "One more container with one TCP port, N ports already published. berth: the whole \
         `berth run -d -p` / `berth rm -f` CLI call (container process included); peers: their \
         network setup / teardown processes only (netavark; CNI loopback + bridge + portmap). \
         Medians (min–max) in ms; ratio = peer / berth.\n\n\
         | N | berth `run -d -p` |",
    );
    for r in runs {
        out.push_str(&format!(" {} setup | ratio |", r.kind.name()));
    }
    out.push_str(" berth `rm -f` |");
    for r in runs {
        out.push_str(&format!(" {} teardown | ratio |", r.kind.name()));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|---|".repeat(runs.len()));
    out.push_str("---|");
    out.push_str(&"---|---|".repeat(runs.len()));
    out.push('\n');
    for &(level, b_run, b_rm) in berth {
        out.push_str(&format!("| {level} | {b_run:.1} |"));
        for r in runs {
            match find_level(r, level) {
                Some(l) => {
                    let m = median(&mut l.setup.clone());
                    out.push_str(&format!(
                        " {m:.1} ({}) | {} |",
                        spread(&l.setup),
                        ratio(m, b_run)
                    ));
                }
                None if r.skipped.contains(&level) => out.push_str(" skipped (time budget) | |"),
                None => out.push_str(" not run | |"),
            }
        }
        out.push_str(&format!(" {b_rm:.1} |"));
        for r in runs {
            match find_level(r, level) {
                Some(l) => {
                    let m = median(&mut l.teardown.clone());
                    out.push_str(&format!(
                        " {m:.1} ({}) | {} |",
                        spread(&l.teardown),
                        ratio(m, b_rm)
                    ));
                }
                None => out.push_str(" - | |"),
            }
        }
        out.push('\n');
    }
    out.push_str(
        "\nThe container holding the N ports (one run each; berth's fillers are not timed):\n\n\
         | tool | N | set up (ms) | torn down (ms) |\n|---|---|---|---|\n",
    );
    for r in runs {
        for l in &r.levels {
            if let Some((up, down)) = l.bulk {
                out.push_str(&format!(
                    "| {} | {} | {up:.0} | {down:.0} |\n",
                    r.kind.name(),
                    l.level
                ));
            }
        }
    }
    out.push_str(&format!(
        "\nA 1,000-port range, published and removed (berth: `run -d -p 30000-30999:30000-30999` \
         and its `rm -f`, medians of section 2; peers: one run):\n\n\
         | tool | how | publish (ms) | ratio | remove (ms) | ratio |\n|---|---|---|---|---|---|\n\
         | berth | one `-p` range, one nft transaction | {:.1} | 1 | {:.1} | 1 |\n",
        berth_range.0, berth_range.1
    ));
    for r in runs {
        match r.range {
            Some((up, down, how)) => out.push_str(&format!(
                "| {} | {how} | {up:.0} | {} | {down:.0} | {} |\n",
                r.kind.name(),
                ratio(up, berth_range.0),
                ratio(down, berth_range.1)
            )),
            None => out.push_str(&format!(
                "| {} | skipped (time budget) | | | | |\n",
                r.kind.name()
            )),
        }
    }
    out
}

/// A TCP echo server for 1-byte request/response round trips.
const RR_SERVER: &str = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(16)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(1)
        if not d:
            return
        c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `rr HOST PORT N`: N one-byte round trips on one connection; prints the median in µs.
const RR_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n = int(sys.argv[3]); t = []
for _ in range(n):
    a = time.perf_counter(); s.sendall(b"x"); s.recv(1); t.append(time.perf_counter() - a)
t.sort(); print("%.1f" % (t[n // 2] * 1e6))
"#;

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("no parent dir")?.join(name))
}

fn main() -> Result<()> {
    // The in-namespace timing worker of section 5 is this same binary.
    if std::env::args().nth(1).as_deref() == Some(worker::WORKER_ARG) {
        return worker::serve();
    }
    let a = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (it creates network namespaces)");
    }
    let berthd = a.berthd.clone().map_or_else(|| sibling("berthd"), Ok)?;
    let berth = a.berth.clone().map_or_else(|| sibling("berth"), Ok)?;
    for b in [&berthd, &berth] {
        if !b.exists() {
            bail!(
                "{} not found: cargo build --release -p berthd && crates/front/install.sh release",
                b.display()
            );
        }
    }
    let w = World::new(&berthd, &berth)?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "## Published ports (berth-bench-ports, kernel {}, {} runs per point)\n",
        kernel.trim(),
        a.runs
    );
    let (table, berth_levels) = scale(&w, &a)?;
    println!("### One more `-p` with N ports already published\n\n{table}");
    let (table, berth_range) = range(&w, &a)?;
    println!("### A 1,000-port range\n\n{table}");
    if !a.skip_conntrack {
        println!("### UDP conntrack flush\n\n{}", conntrack(&w, &a)?);
    }
    if !a.skip_throughput {
        println!("### Throughput and latency\n\n{}", throughput(&w, &a)?);
    }
    drop(w);
    if !a.skip_peers {
        for bin in [ports_peers::NETAVARK, ports_peers::CNI_PATH] {
            if !Path::new(bin).exists() {
                bail!("{bin} not found (apt-get install netavark containernetworking-plugins iptables), or pass --skip-peers");
            }
        }
        let scratch = guard::ScratchDir::create()?;
        let mut runs = Vec::new();
        for kind in [Kind::Netavark, Kind::Cni] {
            let t = Instant::now();
            runs.push(peer_section(kind, scratch.path(), &a)?);
            eprintln!(
                "peers: {} done in {:.0} s",
                kind.name(),
                t.elapsed().as_secs_f64()
            );
        }
        println!(
            "### Peers side by side (same run)\n\n{}",
            peer_report(&runs, &berth_levels, berth_range)
        );
    }
    Ok(())
}
