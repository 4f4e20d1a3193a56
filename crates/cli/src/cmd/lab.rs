//! `berth lab`: the seed's step-by-step lab (lessons in `berth_plan::lab`), run in a sandbox of
//! network namespaces that this command creates and removes. Nothing in the machine's own
//! network namespace changes: every lesson command runs inside the hand-made host `P-host`
//! (`ip netns exec P-host sh -c …`), berth's side inside `P-bhost` with a private berthd.
//!
//! State (the lab directory: `--state-dir`, `$BERTH_LAB_DIR`, else
//! `$XDG_STATE_HOME/berth/lab`, else `~/.local/state/berth/lab`):
//! `progress.json` (lessons done, the current one), `sandbox.json` (the record of what the lab
//! created: namespaces, background processes, berthd's PID), and the private berthd's state dir,
//! socket and log. `--clean` removes the namespaces of the lab's prefix (a closed list of names),
//! after ending the processes inside them by PID, and the private berthd with its containers.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_plan::lab::{self, Check, Lesson, Progress, Step};
use clap::Args as ClapArgs;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::format::out;

/// `berth lab` flags.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// A lesson number (1–9); `shell` (a shell in the hand-made host); `serve PORT` and `probe
    /// HOST:PORT` (the lab's tiny TCP server and client, used by the lessons).
    what: Vec<String>,
    /// List the lessons and your progress.
    #[arg(long)]
    list: bool,
    /// Go on with the next lesson not done yet.
    #[arg(long)]
    next: bool,
    /// Only prepare the lesson's starting point and print its commands: type them yourself in
    /// `berth lab shell`, then `berth lab --check`.
    #[arg(long)]
    show: bool,
    /// Check the current lesson's result with real packets, then show berth's side.
    #[arg(long)]
    check: bool,
    /// Remove everything the lab created: namespaces, processes, the private berthd.
    #[arg(long)]
    clean: bool,
    /// `text` (default) or `json`.
    #[arg(long, default_value = "text")]
    format: String,
    /// The lab's state directory.
    #[arg(long, env = "BERTH_LAB_DIR")]
    state_dir: Option<PathBuf>,
    /// Prefix of every name the lab creates.
    #[arg(long, env = "BERTH_LAB_PREFIX", default_value = lab::DEFAULT_PREFIX)]
    prefix: String,
    /// The berthd binary for berth's side [default: next to berth, else on PATH].
    #[arg(long, env = "BERTH_LAB_BERTHD")]
    berthd: Option<PathBuf>,
}

/// Bound for one command of a lesson.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a check may retry before it counts as failed (a server starting, a route settling).
const CHECK_PATIENCE: Duration = Duration::from_secs(6);

/// What the lab created, kept in `sandbox.json` so `--clean` finds it from any later process.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default)]
    namespaces: BTreeSet<String>,
    #[serde(default)]
    pids: BTreeSet<u32>,
    #[serde(default)]
    berthd_pid: Option<u32>,
    /// The berthds of lesson 9's two berth hosts.
    #[serde(default)]
    cluster_pids: BTreeSet<u32>,
}

/// etcd's address on lesson 9's berth LAN.
const ETCD_ADDR: &str = "192.168.60.254";

struct Lab {
    prefix: String,
    dir: PathBuf,
    berth: PathBuf,
    berthd: PathBuf,
    json: bool,
    record: Record,
}

/// Runs `berth lab`.
pub fn run(a: Args) -> Result<i32> {
    match a.what.first().map(String::as_str) {
        Some("serve") => return serve(a.what.get(1)),
        Some("probe") => return probe(a.what.get(1)),
        _ => {}
    }
    if !matches!(a.format.as_str(), "text" | "json") {
        bail!("--format {}: text or json", a.format);
    }
    if !lab::valid_prefix(&a.prefix) {
        bail!(
            "--prefix {:?}: lower-case letters, digits and '-', at most 16",
            a.prefix
        );
    }
    let dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => default_dir()?,
    };
    let progress_path = dir.join("progress.json");
    let mut progress: Progress = read_json(&progress_path).unwrap_or_default();
    let json = a.format == "json";
    if a.list {
        return list(&progress, json);
    }
    if !rustix::process::geteuid().is_root() {
        bail!(
            "berth lab needs root: it creates network namespaces (never changing the host's own)"
        );
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("locating the berth binary")?;
    // The lab's commands go through `berth`, the front beside this binary, as a user's do.
    let berth = Some(exe.with_file_name("berth"))
        .filter(|front| front.exists())
        .unwrap_or(exe);
    let berthd = a.berthd.clone().unwrap_or_else(|| {
        let sibling = berth.with_file_name("berthd");
        if sibling.exists() {
            sibling
        } else {
            PathBuf::from("berthd")
        }
    });
    let mut lab = Lab {
        record: read_json(&dir.join("sandbox.json")).unwrap_or_default(),
        prefix: a.prefix.clone(),
        dir,
        berth,
        berthd,
        json,
    };
    if a.clean {
        return lab.clean();
    }
    if a.what.first().map(String::as_str) == Some("shell") {
        return lab.shell(&progress);
    }
    let n = match (a.what.first(), a.next, a.check) {
        (Some(w), false, _) => w
            .parse::<u8>()
            .ok()
            .filter(|n| lab::lesson(*n).is_some())
            .ok_or_else(|| anyhow!("{w:?}: a lesson number 1–9, shell, or --list"))?,
        (None, true, false) => match progress.next() {
            Some(n) => n,
            None => {
                lab.emit_note("every lesson is done; `berth lab N` runs one again");
                return Ok(0);
            }
        },
        (None, false, true) => progress
            .current
            .ok_or_else(|| anyhow!("no current lesson: `berth lab N --show` first"))?,
        (None, false, false) => return list(&progress, json),
        _ => bail!("give a lesson number, --next or --check, not several"),
    };
    let lesson = lab::lesson(n).ok_or_else(|| anyhow!("no lesson {n}"))?;
    progress.current = Some(n);
    write_json(&progress_path, &progress)?;
    let mut report = json!({"lesson": n, "title": lesson.title, "seed_section": lesson.seed_section,
        "prefix": lab.prefix});
    let passed = if a.check {
        lab.check_and_compare(lesson, &mut report)?
    } else {
        let text = lab::render_lesson(lesson, &lab.prefix, &lab.berth_str());
        lab.text(text.trim_end());
        lab.prepare(lesson)?;
        if a.show {
            lab.text(&format!(
                "\nThe sandbox is at the lesson's starting point. Type the commands in `berth lab \
                 shell` (or prefix each with `nsenter --net=/run/netns/{}-host`), then `berth lab \
                 --check`.",
                lab.prefix
            ));
            report["commands"] = json!(lesson
                .steps
                .iter()
                .map(|s| lab::step_line(s, &lab.prefix, &lab.berth_str()))
                .collect::<Vec<_>>());
            report["shell"] = json!(format!("nsenter --net=/run/netns/{}-host sh", lab.prefix));
            if json {
                out(&serde_json::to_string_pretty(&report)?);
            }
            return Ok(0);
        }
        lab.text("\n── your commands ──");
        let host = lab.ns("host");
        let (all_ran, steps) = lab.run_steps(
            &host,
            lesson.steps,
            &format!("lesson {n} step"),
            Duration::ZERO,
        )?;
        report["steps"] = Value::Array(steps);
        all_ran && lab.check_and_compare(lesson, &mut report)?
    };
    if passed {
        progress.done.insert(n);
    }
    write_json(&progress_path, &progress)?;
    report["passed"] = json!(passed);
    report["done"] = json!(progress.done);
    if json {
        out(&serde_json::to_string_pretty(&report)?);
    } else if passed {
        let next = progress
            .next()
            .map_or("every lesson is done".to_string(), |n| {
                format!("next: berth lab --next (lesson {n})")
            });
        out(&format!(
            "\nLesson {n} passed; {next}. `berth lab --clean` removes the sandbox."
        ));
    } else {
        out(&format!(
            "\nLesson {n} did not pass. Fix it in `berth lab shell` and run `berth lab --check`."
        ));
    }
    Ok(if passed { 0 } else { 1 })
}

fn default_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("berth/lab"));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| anyhow!("neither XDG_STATE_HOME nor HOME is set: give --state-dir"))?;
    Ok(PathBuf::from(home).join(".local/state/berth/lab"))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes through a temporary file and a rename, so an interrupted lab never leaves half a file.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn list(progress: &Progress, json: bool) -> Result<i32> {
    if json {
        let v: Vec<Value> = lab::LESSONS
            .iter()
            .map(|l| {
                json!({"lesson": l.n, "title": l.title, "seed_section": l.seed_section,
                    "done": progress.done.contains(&l.n), "current": progress.current == Some(l.n)})
            })
            .collect();
        out(&serde_json::to_string_pretty(
            &json!({"lessons": v, "next": progress.next()}),
        )?);
        return Ok(0);
    }
    let mut rows = vec!["LESSON\tDONE\tTITLE\tSEED".to_string()];
    for l in lab::LESSONS {
        let mark = if progress.done.contains(&l.n) {
            "✓"
        } else {
            ""
        };
        let cur = if progress.current == Some(l.n) {
            " ←"
        } else {
            ""
        };
        rows.push(format!(
            "{}\t{mark}\t{}{cur}\t§{}",
            l.n, l.title, l.seed_section
        ));
    }
    out(crate::format::tabwrite(&rows).trim_end());
    match progress.next() {
        Some(n) => out(&format!(
            "\nberth lab {n} (or --next) runs a lesson; --show prepares it for you to type."
        )),
        None => out("\nEvery lesson is done."),
    }
    Ok(0)
}

/// A command's outcome: (success, stdout followed by stderr).
fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<(bool, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting a command")?;
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .iter_mut()
        .filter_map(Option::take)
        .map(|mut p| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = p.read_to_end(&mut v);
                v
            })
        })
        .collect();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > timeout {
            // Only this child, by its PID.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut text = String::new();
    for r in readers {
        // A background grandchild may keep a pipe open: give up on it after a moment.
        let t0 = Instant::now();
        while !r.is_finished() && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if r.is_finished() {
            if let Ok(v) = r.join() {
                text.push_str(&String::from_utf8_lossy(&v));
            }
        }
    }
    match status {
        Some(st) => Ok((st.success(), text)),
        None => Ok((false, format!("{text}(timed out after {timeout:?})\n"))),
    }
}

/// The network-namespace inode of `/run/netns/NAME`, if it exists.
fn ns_inode(name: &str) -> Option<u64> {
    fs::metadata(Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

/// PIDs of the processes inside the network namespace with this inode.
fn pids_in_ns(inode: u64) -> Vec<u32> {
    let me = std::process::id();
    let want = format!("net:[{inode}]");
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.as_os_str().to_string_lossy() == want)
        })
        .collect()
}

fn kill_pid(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Whether process `pid` holds a listening TCP socket (its namespace's `/proc/PID/net/tcp*`
/// entries in state LISTEN, `0A`, whose inode is one of its file descriptors).
fn listening(pid: u32) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: BTreeSet<String> = fds
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    ["tcp", "tcp6"].iter().any(|f| {
        fs::read_to_string(format!("/proc/{pid}/net/{f}")).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.get(3) == Some(&"0A") && fields.get(9).is_some_and(|i| inodes.contains(*i))
            })
        })
    })
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Lab {
    fn berth_str(&self) -> String {
        self.berth.display().to_string()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run").join("berthd.sock")
    }

    /// The socket of the berthd a command in `ns` talks to: lesson 9's berth hosts have their
    /// own, everything else the private berthd of berth's host.
    fn socket_for(&self, ns: &str) -> PathBuf {
        match ns.strip_prefix(&format!("{}-", self.prefix)) {
            // A directory each: a berthd with a cluster store mounts its overlay networks'
            // namespaces under its socket's directory, which it holds alone.
            Some(host @ ("c1" | "c2")) => self.dir.join("run").join(host).join("berthd.sock"),
            _ => self.socket(),
        }
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn save(&self) -> Result<()> {
        write_json(&self.dir.join("sandbox.json"), &self.record)
    }

    fn progress(&self, line: &str) {
        eprintln!("lab: {line}");
    }

    fn text(&self, s: &str) {
        if !self.json {
            out(s);
        }
    }

    fn emit_note(&self, s: &str) {
        if self.json {
            out(&json!({ "note": s }).to_string());
        } else {
            out(s);
        }
    }

    fn transcript(&self, st: &Step, ok: bool, output: &str) {
        if self.json {
            return;
        }
        out(&format!(
            "$ {}",
            lab::step_line(st, &self.prefix, &self.berth_str())
        ));
        if !output.trim().is_empty() {
            out(output.trim_end());
        }
        if !ok {
            out("(failed)");
        }
    }

    /// `nsenter --net=/run/netns/NS sh -c CMD` with `berth` on PATH and `BERTH_HOST` naming the
    /// private berthd. Not `ip netns exec`: that runs the command in a mount namespace of its
    /// own whose mounts do not propagate back, so an `ip netns add` typed in a lesson would make
    /// a namespace nobody else can enter. nsenter changes the network namespace only.
    ///
    /// On lesson 9's berth hosts the command enters their berthd's mount namespace too: that
    /// is where berthd mounts its overlay networks' namespaces (`RUNDIR/netns/ov-…`, listed
    /// in `BERTH_NETNS`), so a lesson can look inside them with `nsenter --net=…`.
    fn command(&self, ns: &str, cmd: &str) -> Command {
        let mut c = Command::new("nsenter");
        match self.cluster_berthd(ns) {
            Some(pid) => {
                c.args(["-t", &pid.to_string(), "-m", "-n"]);
                if let Some(run) = self.socket_for(ns).parent() {
                    c.env("BERTH_NETNS", run.join("netns"));
                }
            }
            None => {
                c.arg(format!("--net=/run/netns/{ns}"));
            }
        }
        c.args(["sh", "-c", cmd]);
        let dir = self
            .berth
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", dir.display()))
            .env(
                "BERTH_HOST",
                format!("unix://{}", self.socket_for(ns).display()),
            )
            .env(
                "BERTH_C2",
                format!("unix://{}", self.socket_for(&self.ns("c2")).display()),
            )
            .env("BERTH_LAB_PREFIX", &self.prefix)
            .env("BERTH_LAB_DIR", &self.dir)
            .env("NO_COLOR", "1");
        c
    }

    fn sh(&self, ns: &str, cmd: &str) -> Result<(bool, String)> {
        run_bounded(self.command(ns, cmd), STEP_TIMEOUT)
    }

    /// Runs a step in `ns`; a background step is started and recorded (its PID is the
    /// command's: `sh -c 'exec …'`, and `ip netns exec` execs in place too).
    fn step(&mut self, ns: &str, st: &Step) -> Result<(bool, String)> {
        let cmd = lab::fill(st.cmd, &self.prefix, &self.berth_str());
        if !st.background {
            return self.sh(ns, &cmd);
        }
        let pid = self.spawn(ns, &cmd)?;
        // The lesson's next command talks to this server: wait (bounded) until it listens.
        let t0 = Instant::now();
        while alive(pid) && !listening(pid) && t0.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((true, format!("(running in the background, pid {pid})")))
    }

    /// Starts `cmd` in the background inside `ns` and records its PID.
    fn spawn(&mut self, ns: &str, cmd: &str) -> Result<u32> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("background.log"))?;
        let mut c = self.command(ns, &format!("exec {cmd}"));
        c.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the learner's terminal does not end it.
            .process_group(0);
        let child: Child = c.spawn().context("starting a background command")?;
        self.record.pids.insert(child.id());
        self.save()?;
        Ok(child.id())
    }

    /// Records `names` as the lab's before anything creates them (a lesson's own commands
    /// create some), refusing a name that exists but was never the lab's: `--clean` deletes
    /// recorded namespaces only, so a namespace of someone else's is never touched.
    fn claim(&mut self, names: &[String]) -> Result<()> {
        for name in names {
            if !self.record.namespaces.contains(name) && ns_inode(name).is_some() {
                bail!(
                    "network namespace {name} exists and the lab did not create it: \
                     give the lab another --prefix"
                );
            }
        }
        self.record.namespaces.extend(names.iter().cloned());
        self.save()
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        // Claimed before it exists: a crash in between leaves a name to clean, not a leak.
        self.claim(&[name.to_string()])?;
        if ns_inode(name).is_none() {
            let (ok, o) = run_bounded(
                {
                    let mut c = Command::new("ip");
                    c.args(["netns", "add", name]);
                    c
                },
                STEP_TIMEOUT,
            )?;
            if !ok {
                bail!("ip netns add {name}: {o}");
            }
        }
        self.must(name, "ip link set lo up")
    }

    fn must(&self, ns: &str, cmd: &str) -> Result<()> {
        let (ok, o) = self.sh(ns, cmd)?;
        if !ok {
            bail!("in {ns}: {cmd}: {}", o.trim());
        }
        Ok(())
    }

    /// Ends every process inside the namespace (by PID) and deletes it; `/etc/netns/NAME` too.
    /// Only a namespace the lab recorded; it stays recorded (the name is the lab's until
    /// `--clean`).
    fn remove_ns(&mut self, name: &str) -> Result<bool> {
        if !self.record.namespaces.contains(name) {
            return Ok(false);
        }
        let etc = Path::new("/etc/netns").join(name);
        if etc.is_dir() {
            fs::remove_dir_all(&etc).with_context(|| format!("removing {}", etc.display()))?;
        }
        let Some(ino) = ns_inode(name) else {
            return Ok(false);
        };
        self.progress(&format!("removing namespace {name}"));
        for pid in pids_in_ns(ino) {
            kill_pid(pid, rustix::process::Signal::KILL);
            self.record.pids.remove(&pid);
        }
        let t0 = Instant::now();
        while !pids_in_ns(ino).is_empty() && t0.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut c = Command::new("ip");
        c.args(["netns", "delete", name]);
        let (ok, o) = run_bounded(c, STEP_TIMEOUT)?;
        if !ok {
            bail!("ip netns delete {name}: {o}");
        }
        self.save()?;
        Ok(true)
    }

    /// A host namespace with an "outside" peer on 198.18.N.0/24 running the outside server.
    fn host_pair(&mut self, host: &str, outside: &str, n: u8) -> Result<()> {
        self.add_ns(host)?;
        self.add_ns(outside)?;
        self.must(
            host,
            &format!("ip link add uplink type veth peer name lan netns {outside}"),
        )?;
        self.must(
            host,
            &format!("ip addr add 198.18.{n}.1/24 dev uplink && ip link set uplink up"),
        )?;
        self.must(
            outside,
            &format!("ip addr add 198.18.{n}.2/24 dev lan && ip link set lan up"),
        )?;
        let server = Step {
            cmd: "berth lab serve 9000",
            background: true,
        };
        self.step(outside, &server)?;
        Ok(())
    }

    /// Resets the hand-made side and brings it to the lesson's starting point.
    fn prepare(&mut self, l: &Lesson) -> Result<()> {
        self.progress(&format!("lesson {}: resetting the hand-made host", l.n));
        self.claim(&lab::hand_namespaces(&self.prefix))?;
        for name in lab::hand_namespaces(&self.prefix).iter().rev() {
            self.remove_ns(name)?;
        }
        let (host, outside) = (self.ns("host"), self.ns("out"));
        self.host_pair(&host, &outside, 0)?;
        let setup: Vec<&Step> = l.setup.iter().flat_map(|s| s.iter()).collect();
        for (i, st) in setup.iter().enumerate() {
            self.progress(&format!(
                "lesson {} starting point {}/{}: {}",
                l.n,
                i + 1,
                setup.len(),
                lab::step_line(st, &self.prefix, &self.berth_str())
            ));
            let (ok, o) = self.step(&host, st)?;
            if !ok {
                bail!("preparing lesson {}: {}: {}", l.n, st.cmd, o.trim());
            }
        }
        Ok(())
    }

    fn berthd_up(&self) -> bool {
        self.record
            .berthd_pid
            .is_some_and(|pid| self.daemon_up(pid, &self.ns("bhost")))
    }

    /// The berthd of lesson 9's berth host `ns` (`P-c1`, `P-c2`), if it runs: the recorded
    /// cluster berthd whose network namespace is `ns`'s.
    fn cluster_berthd(&self, ns: &str) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        let id = |p: String| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let want = id(format!("/run/netns/{ns}"))?;
        self.record
            .cluster_pids
            .iter()
            .copied()
            .find(|pid| alive(*pid) && id(format!("/proc/{pid}/ns/net")) == Some(want))
    }

    fn daemon_up(&self, pid: u32, ns: &str) -> bool {
        alive(pid) && std::os::unix::net::UnixStream::connect(self.socket_for(ns)).is_ok()
    }

    /// Starts a berthd in `ns` (state in the lab dir under `name`, socket [`Lab::socket_for`]).
    fn start_berthd(&mut self, ns: &str, name: &str, extra: &[String]) -> Result<u32> {
        let sock = self.socket_for(ns);
        if let Some(d) = sock.parent() {
            fs::create_dir_all(d)?;
        }
        let _ = fs::remove_file(&sock);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&self.berthd)
            .arg("--state-dir")
            .arg(self.dir.join(name))
            .arg("--socket")
            .arg(&sock)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the learner's terminal does not end it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.berthd.display()))?;
        Ok(child.id())
    }

    /// Waits (≤ 15 s) until the berthd `pid` in `ns` answers on its socket.
    fn wait_berthd(&self, pid: u32, ns: &str) -> Result<()> {
        let t0 = Instant::now();
        while !self.daemon_up(pid, ns) {
            if t0.elapsed() > Duration::from_secs(15) || !alive(pid) {
                bail!(
                    "the private berthd in {ns} did not come up; see its log in {}",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Lesson 9's berth side: two berth hosts `P-c1`, `P-c2` on a LAN `P-clan` (a bridge)
    /// where etcd runs, each with a berthd in the cluster. Built once, emptied on reuse.
    fn cluster_side(&mut self) -> Result<()> {
        let (c1, c2, clan) = (self.ns("c1"), self.ns("c2"), self.ns("clan"));
        let up = self.record.cluster_pids.len() == 2
            && [&c1, &c2].iter().all(|ns| {
                self.record
                    .cluster_pids
                    .iter()
                    .any(|pid| self.daemon_up(*pid, ns))
            });
        if up {
            self.progress("emptying berth's cluster (containers, networks)");
            for ns in [&c2, &c1] {
                self.must(
                    ns,
                    "ids=$(berth ps -aq); [ -z \"$ids\" ] || berth rm -f $ids >/dev/null; true",
                )?;
            }
            return self.must(&c1, "berth network prune -f >/dev/null");
        }
        self.progress("building berth's cluster: a LAN with etcd, two hosts with a berthd each");
        for pid in std::mem::take(&mut self.record.cluster_pids) {
            kill_pid(pid, rustix::process::Signal::KILL);
        }
        for ns in [&c1, &c2, &clan] {
            self.remove_ns(ns)?;
        }
        self.add_ns(&clan)?;
        self.must(
            &clan,
            &format!(
                "ip link add br0 type bridge && ip addr add {ETCD_ADDR}/24 dev br0 && \
                 ip link set br0 up"
            ),
        )?;
        let data = self.dir.join("etcd");
        let _ = fs::remove_dir_all(&data);
        let url = format!("http://{ETCD_ADDR}");
        self.spawn(
            &clan,
            &format!(
                "etcd --name e0 --data-dir {} --listen-client-urls {url}:2379 \
                 --advertise-client-urls {url}:2379 --listen-peer-urls {url}:2380 \
                 --initial-advertise-peer-urls {url}:2380 --initial-cluster e0={url}:2380",
                data.display()
            ),
        )?;
        let store = format!("etcd://{ETCD_ADDR}:2379");
        for (i, ns) in [&c1, &c2].into_iter().enumerate() {
            let n = i + 1;
            self.add_ns(ns)?;
            self.must(
                &clan,
                &format!(
                    "ip link add p{n} type veth peer name ul0 netns {ns} && \
                     ip link set p{n} master br0 up"
                ),
            )?;
            self.must(
                ns,
                &format!("ip addr add 192.168.60.{n}/24 dev ul0 && ip link set ul0 up"),
            )?;
            let extra: Vec<String> = [
                "--cluster-store",
                store.as_str(),
                "--advertise-addr",
                "ul0",
                "--node-name",
                &format!("c{n}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let pid = self.start_berthd(ns, &format!("c{n}"), &extra)?;
            self.record.cluster_pids.insert(pid);
            self.save()?;
            self.wait_berthd(pid, ns)?;
        }
        // Both hosts registered in etcd (berthd starts before etcd answers and joins later).
        self.progress("waiting for both berth hosts in `berth node ls`");
        let t0 = Instant::now();
        loop {
            let (_, o) = self.sh(&c1, "berth node ls -q")?;
            if o.lines().filter(|l| !l.trim().is_empty()).count() == 2 {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("berth's cluster did not form: berth node ls says {o:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the private berthd in berth's host (once; later lessons reuse it) and empties it.
    fn berth_side(&mut self) -> Result<()> {
        let bhost = self.ns("bhost");
        if !self.berthd_up() {
            self.progress("starting a private berthd in berth's host");
            if let Some(pid) = self.record.berthd_pid.take() {
                kill_pid(pid, rustix::process::Signal::KILL);
            }
            let bout = self.ns("bout");
            self.remove_ns(&bout)?;
            self.remove_ns(&bhost)?;
            self.host_pair(&bhost, &bout, 1)?;
            let pid = self.start_berthd(&bhost, "berthd", &[])?;
            self.record.berthd_pid = Some(pid);
            self.save()?;
            self.wait_berthd(pid, &bhost)?;
        }
        self.progress("emptying berth's host (containers, networks, chain user)");
        self.must(
            &bhost,
            "ids=$(berth ps -aq); [ -z \"$ids\" ] || berth rm -f $ids >/dev/null; \
             berth network prune -f >/dev/null; nft flush chain inet berth user 2>/dev/null; true",
        )
    }

    /// Runs steps in `ns` in order, with a progress line each and the transcript; stops at the
    /// first that fails. A step failing with "not found" is tried again until `patience` has
    /// passed (berth's cluster: a network created on host 1 reaches host 2 through etcd a
    /// moment later).
    /// Returns (all ran, JSON results).
    fn run_steps(
        &mut self,
        ns: &str,
        steps: &[Step],
        label: &str,
        patience: Duration,
    ) -> Result<(bool, Vec<Value>)> {
        let mut results = Vec::new();
        for (i, st) in steps.iter().enumerate() {
            let line = lab::step_line(st, &self.prefix, &self.berth_str());
            self.progress(&format!("{label} {}/{}: {line}", i + 1, steps.len()));
            let t0 = Instant::now();
            let (ok, output) = loop {
                let (ok, output) = self.step(ns, st)?;
                // Only "not found" is worth waiting for: anything else would fail again.
                if ok || st.background || !output.contains("not found") || t0.elapsed() >= patience
                {
                    break (ok, output);
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            self.transcript(st, ok, &output);
            results.push(json!({"cmd": line, "ok": ok, "output": output}));
            if !ok {
                return Ok((false, results));
            }
        }
        Ok((true, results))
    }

    /// Runs checks with patience; returns (all passed, JSON results).
    fn checks(&self, checks: &[Check], side: &str) -> Result<(bool, Vec<Value>)> {
        let mut all = true;
        let mut results = Vec::new();
        // Once a check has failed after waiting, the others are tried once each: a learner who
        // has not built the thing yet should not wait for every check in turn.
        let mut patience = CHECK_PATIENCE;
        for (i, c) in checks.iter().enumerate() {
            let ns = lab::fill(c.ns, &self.prefix, &self.berth_str());
            let cmd = lab::fill(c.cmd, &self.prefix, &self.berth_str());
            self.progress(&format!(
                "{side} check {}/{}: {}",
                i + 1,
                checks.len(),
                c.what
            ));
            let t0 = Instant::now();
            let (passed, output) = loop {
                let (ok, o) = self.sh(&ns, &cmd)?;
                let met = lab::expectation_met(c.expect, ok, &o);
                // A packet that must not pass is tried once; one that must is retried.
                if met || c.expect == lab::Expect::Fails || t0.elapsed() > patience {
                    break (met, o);
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            all &= passed;
            if !passed {
                patience = Duration::ZERO;
            }
            if !self.json {
                let mark = if passed { "✓" } else { "✗" };
                out(&format!("{mark} {}    [{ns}] {cmd}", c.what));
                if !passed {
                    out(&format!(
                        "    got: {}",
                        output.trim().replace('\n', "\n         ")
                    ));
                }
            }
            results.push(
                json!({"what": c.what, "ns": ns, "cmd": cmd, "expect": c.expect,
                "passed": passed, "output": output}),
            );
        }
        Ok((all, results))
    }

    /// Checks the hand-made result; when it passes, builds berth's side and compares.
    fn check_and_compare(&mut self, l: &Lesson, report: &mut Value) -> Result<bool> {
        if ns_inode(&self.ns("host")).is_none() {
            bail!("no sandbox: `berth lab {} --show` prepares it", l.n);
        }
        self.text("\n── checks, with real packets ──");
        let (hand_ok, results) = self.checks(l.checks, "your")?;
        report["checks"] = Value::Array(results);
        if !hand_ok {
            return Ok(false);
        }
        let mut berth_ok = true;
        let bhost = self.ns(if l.cluster { "c1" } else { "bhost" });
        if !l.berth_steps.is_empty() {
            if l.cluster {
                self.cluster_side()?;
            } else {
                self.berth_side()?;
            }
            self.text(&format!(
                "\n── berth's side, in {bhost} (berthd on {}) ──",
                self.socket_for(&bhost).display()
            ));
            let (ran, steps) = {
                let patience = if l.cluster {
                    Duration::from_secs(3)
                } else {
                    Duration::ZERO
                };
                self.run_steps(&bhost, l.berth_steps, "berth step", patience)?
            };
            berth_ok &= ran;
            report["berth_steps"] = Value::Array(steps);
            let (ok, results) = self.checks(l.berth_checks, "berth's")?;
            berth_ok &= ok;
            report["berth_checks"] = Value::Array(results);
        }
        self.text("\n── side by side: by hand │ berth ──");
        let mut compare = Vec::new();
        for c in l.compare {
            let hand = lab::fill(c.hand, &self.prefix, &self.berth_str());
            let berth = lab::fill(c.berth, &self.prefix, &self.berth_str());
            let h = if hand.is_empty() {
                String::new()
            } else {
                self.sh(&self.ns("host"), &hand)?.1
            };
            let b = if berth.is_empty() || l.berth_steps.is_empty() {
                String::new()
            } else {
                self.sh(&bhost, &berth)?.1
            };
            self.text(&format!("\n{}:", c.what));
            if berth.is_empty() {
                self.text(&format!("$ {hand}\n{}", h.trim_end()));
            } else {
                self.text(
                    lab::side_by_side(&format!("$ {hand}"), &h, &format!("$ {berth}"), &b, 160)
                        .trim_end(),
                );
            }
            compare.push(json!({"what": c.what, "hand_cmd": hand, "hand": h,
                "berth_cmd": berth, "berth": b}));
        }
        report["compare"] = Value::Array(compare);
        let notes = lab::fill(l.notes, &self.prefix, &self.berth_str());
        let notes = notes.split_whitespace().collect::<Vec<_>>().join(" ");
        self.text(&format!("\n{notes}"));
        report["notes"] = json!(notes);
        if l.n == 8 {
            self.text(&format!("\n{}", lab::render_chain_map().trim_end()));
            report["chain_map"] = json!(lab::CHAIN_MAP
                .iter()
                .map(|(d, b)| json!({"docker": d, "berth": b}))
                .collect::<Vec<_>>());
        }
        Ok(berth_ok)
    }

    /// An interactive shell in the hand-made host.
    fn shell(&mut self, progress: &Progress) -> Result<i32> {
        if self.json {
            bail!("berth lab shell is interactive: no --format json");
        }
        let host = self.ns("host");
        if ns_inode(&host).is_none() {
            let n = progress.current.unwrap_or(1);
            let l = lab::lesson(n).ok_or_else(|| anyhow!("no lesson {n}"))?;
            self.prepare(l)?;
        }
        let lesson = progress.current.map_or(String::new(), |n| format!(" {n}"));
        let mut c = self.command(&host, "exec bash --norc -i || exec sh -i");
        c.env("PS1", format!("[berth lab{lesson} {host}] # "));
        eprintln!(
            "lab: a shell in {host} (the lab's hand-made host; exit to leave). Then: berth lab --check"
        );
        let st = c.status().context("starting the shell")?;
        Ok(st.code().unwrap_or(1))
    }

    /// Removes everything: berth's containers, the private berthd, every namespace of the
    /// prefix (processes inside ended by PID), recorded processes still alive.
    fn clean(&mut self) -> Result<i32> {
        let mut removed = Vec::new();
        // Every berthd of the lab, with its host: containers first (they outlive a berthd).
        let mut daemons: Vec<(u32, String)> = self
            .record
            .berthd_pid
            .take()
            .map(|pid| (pid, self.ns("bhost")))
            .into_iter()
            .collect();
        let cluster = std::mem::take(&mut self.record.cluster_pids);
        for ns in [self.ns("c2"), self.ns("c1")] {
            if let Some(pid) = cluster.iter().find(|pid| self.daemon_up(**pid, &ns)) {
                daemons.push((*pid, ns));
            }
        }
        // A cluster berthd no longer answering is still ended, without its containers step.
        let silent: Vec<(u32, String)> = cluster
            .iter()
            .filter(|pid| !daemons.iter().any(|(p, _)| p == *pid))
            .map(|pid| (*pid, String::new()))
            .collect();
        daemons.extend(silent);
        for (pid, ns) in &daemons {
            if !ns.is_empty() && self.daemon_up(*pid, ns) {
                self.progress(&format!("removing the containers of the berthd in {ns}"));
                let _ = self.sh(
                    ns,
                    "ids=$(berth ps -aq); [ -z \"$ids\" ] || berth rm -f $ids >/dev/null; \
                     berth network prune -f >/dev/null",
                );
            }
        }
        for (pid, _) in daemons {
            if alive(pid) {
                self.progress(&format!("stopping a private berthd (pid {pid})"));
                kill_pid(pid, rustix::process::Signal::TERM);
                let t0 = Instant::now();
                while alive(pid) && t0.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if alive(pid) {
                    kill_pid(pid, rustix::process::Signal::KILL);
                }
                removed.push(format!("process {pid} (berthd)"));
            }
        }
        self.save()?;
        let names: Vec<String> = self.record.namespaces.iter().cloned().collect();
        for name in names {
            if self.remove_ns(&name)? {
                removed.push(format!("netns {name}"));
            }
            self.record.namespaces.remove(&name);
        }
        // Recorded background processes are inside the namespaces, ended above; a recorded PID
        // still alive here is only ended when it is still the lab's own helper.
        for pid in std::mem::take(&mut self.record.pids) {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("lab\0serve") {
                kill_pid(pid, rustix::process::Signal::KILL);
                removed.push(format!("process {pid}"));
            }
        }
        for name in ["berthd", "c1", "c2", "etcd"] {
            let _ = fs::remove_dir_all(self.dir.join(name));
        }
        let _ = fs::remove_dir_all(self.dir.join("run"));
        self.save()?;
        if self.json {
            out(&serde_json::to_string_pretty(
                &json!({ "removed": removed }),
            )?);
        } else if removed.is_empty() {
            out("Nothing to remove: the lab has no sandbox.");
        } else {
            out(&format!("Removed: {}", removed.join(", ")));
        }
        Ok(0)
    }
}

/// `berth lab serve PORT`: answers every TCP connection with one line naming the server's
/// address and the client's, then closes it (so a check sees whether NAT changed the source).
fn serve(port: Option<&String>) -> Result<i32> {
    let port: u16 = port
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("usage: berth lab serve PORT"))?;
    let l =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("listening on :{port}"))?;
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let (Ok(me), Ok(peer)) = (c.local_addr(), c.peer_addr()) else {
            continue;
        };
        let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = writeln!(c, "hello from {me}, you are {}", peer.ip());
    }
    Ok(0)
}

/// `berth lab probe HOST:PORT`: connects (1 s at most: everything is local to the sandbox),
/// prints the server's line; exit 1 when the connection fails.
fn probe(target: Option<&String>) -> Result<i32> {
    let target = target.ok_or_else(|| anyhow!("usage: berth lab probe HOST:PORT"))?;
    let addr = target
        .to_socket_addrs()
        .with_context(|| format!("{target}: not HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("{target}: no address"))?;
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .with_context(|| format!("connecting to {addr}"))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut s = String::new();
    c.read_to_string(&mut s)
        .with_context(|| format!("reading from {addr}"))?;
    out(s.trim_end());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serve and probe talk to each other over loopback (no namespace needed).
    #[test]
    fn serve_and_probe() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let p = port.to_string();
        std::thread::spawn(move || serve(Some(&p)));
        let target = format!("127.0.0.1:{port}");
        let t0 = Instant::now();
        while TcpStream::connect(&target).is_err() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(probe(Some(&target)).ok(), Some(0));
        assert!(probe(Some(&"127.0.0.1:1".to_string())).is_err());
    }

    /// A process with a listening socket is seen as listening (other tests of this process
    /// listen too, so "not listening" cannot be asserted here; a dead PID is not).
    #[test]
    fn listening_sockets() {
        let me = std::process::id();
        assert!(!listening(u32::MAX));
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(listening(me));
        drop(l);
    }

    #[test]
    fn bounded_commands() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let (ok, text) = run_bounded(c, Duration::from_secs(5)).expect("run");
        assert!(!ok);
        assert_eq!(text, "out\nerr\n");
        let mut c = Command::new("sleep");
        c.arg("5");
        let (ok, text) = run_bounded(c, Duration::from_millis(100)).expect("run");
        assert!(!ok && text.contains("timed out"));
    }
}
