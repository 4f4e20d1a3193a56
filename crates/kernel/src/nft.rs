//! nftables through the `nft` binary: one atomic transaction per change.
//!
//! `nft -f -` applies a whole script as one netlink batch: either every statement takes effect
//! or none does. For another namespace the command runs as `nsenter --net=PATH nft …`, so the
//! daemon itself never changes namespace for it.

use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::error::{KernelError, Result};

/// The nftables command-line tool.
const NFT: &str = "nft";

/// Checks that `nft` is installed, with an error saying how to install it when not.
pub fn check_available() -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(NFT))))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(KernelError::NftMissing)
    }
}

/// Whether `path` is an executable regular file.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `nft ARGS`, or `nsenter --net=PATH nft ARGS` for another namespace.
fn command(netns: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg(NFT);
            c
        }
        None => Command::new(NFT),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a command (feeding `stdin`), mapping a missing binary to a clear error.
fn run(mut cmd: Command, stdin: Option<&str>, op: &str) -> Result<Output> {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(e, op))?;
    remember_own(child.id());
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Dropping the pipe after writing closes nft's stdin, ending the script.
        pipe.write_all(script.as_bytes())
            .map_err(|e| KernelError::io(format!("{op}: writing script to nft"), e))?;
    }
    child
        .wait_with_output()
        .map_err(|e| KernelError::io(format!("{op}: waiting for nft"), e))
}

/// Pids of the last `nft` processes berth ran: their commits are berth's own, not drift (see
/// [`is_own_commit`]). A small ring: commits are reported within milliseconds.
static OWN_PIDS: std::sync::Mutex<std::collections::VecDeque<u32>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

pub(crate) fn remember_own(pid: u32) {
    if let Ok(mut q) = OWN_PIDS.lock() {
        // berthd's own threads commit too ([`crate::nftnl`]): each is recorded once.
        if q.contains(&pid) {
            return;
        }
        if q.len() >= 64 {
            q.pop_front();
        }
        q.push_back(pid);
    }
}

/// Whether the nft commit reported for process `pid` (`NFTA_GEN_PROC_PID`, the committing
/// task's id) was made by an `nft` berth ran itself or by one of berthd's threads.
pub fn is_own_commit(pid: u32) -> bool {
    OWN_PIDS.lock().map(|q| q.contains(&pid)).unwrap_or(false)
}

/// A spawn failure: `NotFound` means the binary (nft, or nsenter) is missing.
fn spawn_error(e: io::Error, op: &str) -> KernelError {
    if e.kind() == io::ErrorKind::NotFound && check_available().is_err() {
        KernelError::NftMissing
    } else {
        KernelError::io(format!("{op}: running nft"), e)
    }
}

/// nft's failure as an error carrying its stderr.
fn failed(op: String, out: &Output) -> KernelError {
    KernelError::Nft {
        op,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// ` in PATH` for messages.
fn in_ns(netns: Option<&Path>) -> String {
    netns
        .map(|p| format!(" in network namespace {}", p.display()))
        .unwrap_or_default()
}

/// Applies `script` as ONE atomic transaction (`nft -f -`, script on stdin) in `netns` or the
/// current namespace. On failure nothing was applied and the error carries nft's stderr.
pub fn apply(netns: Option<&Path>, script: &str) -> Result<()> {
    let op = format!("applying nftables script{}", in_ns(netns));
    let out = run(command(netns, &["-f", "-"]), Some(script), &op)?;
    if !out.status.success() {
        return Err(failed(op, &out));
    }
    tracing::debug!(bytes = script.len(), "applied nftables script");
    Ok(())
}

/// Applies element changes of berth's own sets and maps (in berthd's namespace) as ONE atomic
/// transaction: over netlink from this process ([`crate::nftnl`]) when every change can be
/// encoded there, else as an `nft -f` script (one-field interval sets: network create and
/// remove).
///
/// `BERTH_NFT_EXEC=1` in berthd's environment makes every change run `nft`, and the tables be
/// read back with `nft -j` (the benchmarks' A/B of the two executors, and a way out should a
/// kernel refuse berth's messages).
pub fn apply_changes(changes: &[berth_plan::firewall::SetChange]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    if !exec_forced() && crate::nftnl::apply(changes)? {
        return Ok(());
    }
    apply(None, &berth_plan::firewall::changes_script(changes))
}

/// [`apply_changes`] now, on the calling thread, when berthd's nf_tables socket is open and no
/// other change holds it (`None` otherwise: the caller sends them from a blocking thread). For
/// a few elements: the kernel applies a batch within the `sendmsg`, so this waits on nothing
/// but the kernel's own work (and its per-namespace commit mutex, should another process's
/// `nft` be committing at that moment).
pub fn try_apply_changes_now(changes: &[berth_plan::firewall::SetChange]) -> Option<Result<()>> {
    if changes.is_empty() {
        return Some(Ok(()));
    }
    if exec_forced() {
        return None;
    }
    match crate::nftnl::try_apply_now(changes)? {
        Ok(true) => Some(Ok(())),
        // A change the in-process batch cannot encode: `nft`, on a blocking thread.
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Whether `BERTH_NFT_EXEC=1` asks for the `nft` binary for element changes and for reading
/// berth's tables back too.
pub(crate) fn exec_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var_os("BERTH_NFT_EXEC").is_some_and(|v| v == "1"))
}

/// `nft -j list table FAMILY TABLE` parsed; `Ok(None)` when the table does not exist.
pub fn list_table_json(
    netns: Option<&Path>,
    family: &str,
    table: &str,
) -> Result<Option<serde_json::Value>> {
    let op = format!("listing nftables table {family} {table}{}", in_ns(netns));
    let out = run(
        command(netns, &["-j", "list", "table", family, table]),
        None,
        &op,
    )?;
    if !out.status.success() {
        // nft reports a missing table as ENOENT: "Error: No such file or directory".
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(failed(op, &out));
    }
    parse_json(&out.stdout, &op).map(Some)
}

/// `nft -j list WHAT` parsed (`ruleset`, `chains`, `tables`).
fn list_json(netns: Option<&Path>, what: &str) -> Result<serde_json::Value> {
    let op = format!("listing nftables {what}{}", in_ns(netns));
    let out = run(command(netns, &["-j", "list", what]), None, &op)?;
    if !out.status.success() {
        return Err(failed(op, &out));
    }
    parse_json(&out.stdout, &op)
}

/// `nft -j list ruleset` parsed: the whole ruleset (read-only inspection of other tables).
pub fn list_ruleset_json(netns: Option<&Path>) -> Result<serde_json::Value> {
    list_json(netns, "ruleset")
}

/// `nft -j list chains` parsed: every chain (base chains with their hook and policy), without
/// rules or set elements: a fraction of the rule set once 10,000 ports are published.
pub fn list_chains_json(netns: Option<&Path>) -> Result<serde_json::Value> {
    list_json(netns, "chains")
}

/// `nft -j list tables` parsed: every table's family and name.
pub fn list_tables_json(netns: Option<&Path>) -> Result<serde_json::Value> {
    list_json(netns, "tables")
}

/// `nft -a list ruleset`: the whole rule set as text, every rule with its handle.
pub fn list_ruleset_text(netns: Option<&Path>) -> Result<String> {
    let op = format!("listing nftables ruleset{}", in_ns(netns));
    let out = run(command(netns, &["-a", "list", "ruleset"]), None, &op)?;
    if !out.status.success() {
        return Err(failed(op, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// nft's JSON output, with an error naming the listing.
fn parse_json(stdout: &[u8], op: &str) -> Result<serde_json::Value> {
    serde_json::from_slice(stdout)
        .map_err(|e| KernelError::invalid(format!("{op}: parsing nft's JSON"), e.to_string()))
}
