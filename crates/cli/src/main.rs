//! `berth`: the command-line client of berthd, with docker's flags and habits.
// The process starts in `entry::main`, without std's runtime start-up (see there); the test
// harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

mod cmd;
#[cfg(not(test))]
mod entry;
mod format;
mod graph;
mod json;
mod lazy;
mod template;

use berth_api::client::{ApiError, Client};
use clap::{Parser, Subcommand};
use lazy::Lazy;

/// Container networking for Linux: a docker-networking workalike.
// `bin_name`: usage lines say `berth` whether the user ran the front (`berth`) or this binary
// (`berth-cli`) directly.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    bin_name = "berth",
    version,
    about,
    propagate_version = true
)]
pub struct Cli {
    /// berthd's socket: unix:///path or /path [default: /run/berth/berth.sock].
    #[arg(
        short = 'H',
        long,
        env = "BERTH_HOST",
        global = true,
        value_name = "HOST"
    )]
    host: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage networks.
    #[command(subcommand)]
    Network(cmd::network::NetworkCommand),
    /// Create and start a container running a command.
    #[command(disable_help_flag = true)]
    Run(Lazy<Box<cmd::run::Args>>),
    /// Create a container (as `run`, without starting it) and print its id.
    #[command(disable_help_flag = true)]
    Create(Lazy<Box<cmd::run::Args>>),
    /// Start created or stopped containers (`-a`: attach to one and exit with its code).
    Start(Lazy<cmd::start::Args>),
    /// Stop then start containers.
    Restart(Lazy<cmd::stop::Args>),
    /// Block until containers stop, then print their exit codes.
    Wait(Lazy<cmd::wait::Args>),
    /// Run a command in a running container.
    Exec(Lazy<cmd::exec::Args>),
    /// Print a container's output.
    Logs(Lazy<cmd::logs::Args>),
    /// List containers.
    #[command(alias = "ls")]
    Ps(Lazy<cmd::ps::Args>),
    /// Show containers (or networks) as JSON.
    Inspect(Lazy<cmd::inspect::Args>),
    /// List a container's published ports.
    Port(Lazy<cmd::port::Args>),
    /// Stop running containers.
    Stop(Lazy<cmd::stop::Args>),
    /// Change containers' restart policy (`--restart`).
    Update(Lazy<cmd::update::Args>),
    /// Remove containers.
    Rm(Lazy<cmd::rm::Args>),
    /// Send a signal to running containers (SIGKILL unless `-s`).
    Kill(Lazy<cmd::kill::Args>),
    /// Show berthd's state and warnings.
    Info,
    /// The hosts of berthd's cluster (`berth node ls`; needs `--cluster-store`).
    #[command(subcommand)]
    Node(cmd::node::NodeCommand),
    /// Check the host against berthd's intent (`berth system check`).
    #[command(subcommand)]
    System(cmd::system::SystemCommand),
    /// Show networks, bridges, veths and containers as the kernel has them, drift marked.
    Topology(Lazy<cmd::topology::Args>),
    /// Show who can reach a container, on which ports, from where, and where it can go.
    Explain(Lazy<cmd::explain::Args>),
    /// Trace a packet's journey through this host: each hop, the rule that decided it, and why.
    Trace(Lazy<cmd::trace::Args>),
    /// The seed as a step-by-step lab in a sandbox of namespaces: `--list`, `N`, `--next`,
    /// `--show` + `shell` + `--check`, `--clean`.
    Lab(Lazy<cmd::lab::Args>),
    /// Show client and daemon versions.
    Version,
    /// Print a shell completion script (`berth completion bash > /etc/bash_completion.d/berth`).
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Writes the completion script for `shell`, generated from the same definition the parser
/// uses, so it never lists a flag the CLI does not take.
fn completion(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    let mut cli = lazy::eager(Cli::command);
    clap_complete::generate(shell, &mut cli, "berth", out);
}

/// Prints `err` the way docker does: daemon errors as `Error response from daemon: …`, anything
/// else as `berth: …`.
///
/// Written with `writeln!`, not `eprintln!`, which panics when stderr is a closed pipe
/// (`berth … 2>&1 | head -0`): the command's exit code stays 1, not a panic's 101.
pub fn report(err: &anyhow::Error) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = match err.downcast_ref::<ApiError>() {
        Some(api @ ApiError::Server { .. }) => writeln!(stderr, "{api}"),
        _ => writeln!(stderr, "berth: {err:#}"),
    };
}

/// Runs `future` on a current-thread tokio runtime built for it. Only the commands that
/// stream, attach, or run requests side by side (`run`, `create`, `start -a`, `wait`, `exec`,
/// `logs`, `explain`, `trace`) need one; the others talk to berthd with blocking one-shot
/// requests and never build it (docs/PERFORMANCE.md, "The CLI's own cost").
fn block_on<T>(future: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    use anyhow::Context;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

fn dispatch(cli: Cli) -> i32 {
    if let Command::Completion { shell } = cli.command {
        completion(shell, &mut std::io::stdout());
        return 0;
    }
    // The lab runs its own private berthd: it needs no client.
    if let Command::Lab(a) = cli.command {
        return match cmd::lab::run(a.0) {
            Ok(code) => code,
            Err(e) => {
                report(&e);
                1
            }
        };
    }
    let host = cli.host.as_deref();
    // `version` prints the client's half even without a reachable daemon.
    let client = Client::from_env(host);
    let client = match (&cli.command, client) {
        (_, Ok(c)) => c,
        (Command::Run(_) | Command::Create(_), Err(e)) => {
            report(&e.into());
            return 125;
        }
        (_, Err(e)) => {
            report(&e.into());
            return 1;
        }
    };
    let code_of = |result: anyhow::Result<i32>| {
        result.unwrap_or_else(|e| {
            report(&e);
            1
        })
    };
    let result = match cli.command {
        Command::Network(c) => cmd::network::run(&client, c),
        Command::Run(a) => return code_of(block_on(cmd::run::run(&client, *a.0))),
        Command::Create(a) => return code_of(block_on(cmd::run::create_only(&client, *a.0))),
        Command::Start(a) if !a.0.attaches() => Ok(cmd::start::run_detached(&client, a.0)),
        Command::Start(a) => block_on(cmd::start::run(&client, a.0)).and_then(|r| r),
        Command::Restart(a) => cmd::stop::restart(&client, a.0),
        Command::Wait(a) => block_on(cmd::wait::run(&client, a.0)).and_then(|r| r),
        Command::Exec(a) => block_on(cmd::exec::run(&client, a.0)).and_then(|r| r),
        Command::Logs(a) => block_on(cmd::logs::run(&client, a.0)).and_then(|r| r),
        Command::Ps(a) => cmd::ps::run(&client, a.0),
        Command::Inspect(a) => cmd::inspect::run(&client, a.0),
        Command::Port(a) => cmd::port::run(&client, a.0),
        Command::Stop(a) => cmd::stop::run(&client, a.0),
        Command::Update(a) => cmd::update::run(&client, a.0),
        Command::Rm(a) => cmd::rm::run(&client, a.0),
        Command::Kill(a) => cmd::kill::run(&client, a.0),
        Command::Info => cmd::info::run(&client),
        Command::System(c) => cmd::system::run(&client, c),
        Command::Node(c) => cmd::node::run(&client, c),
        Command::Topology(a) => cmd::topology::run(&client, a.0),
        Command::Explain(a) => block_on(cmd::explain::run(&client, a.0)).and_then(|r| r),
        Command::Trace(a) => block_on(cmd::trace::run(&client, a.0)).and_then(|r| r),
        Command::Version => cmd::version::run(&client),
        Command::Completion { .. } | Command::Lab(_) => Ok(0),
    };
    code_of(result)
}

/// Parses the command line and runs the command; the process's exit code (0–255). Called by
/// `entry::main` (the unit tests parse with `Cli::try_parse_from` instead).
#[cfg_attr(test, allow(dead_code))]
fn run() -> i32 {
    dispatch(Cli::parse()).clamp(0, 255)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: clap_complete::Shell) -> String {
        let mut out = Vec::new();
        completion(shell, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The `###` sections of docs/CLI.md: (heading, text up to the next `##`/`###` heading,
    /// `####` subsections included).
    fn doc_sections(doc: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in doc.lines() {
            let level = line.chars().take_while(|c| *c == '#').count();
            if (2..=3).contains(&level) && line[level..].starts_with(' ') {
                out.push((line.to_string(), String::new()));
            } else if let Some((_, body)) = out.last_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        out
    }

    /// The text of the section(s) whose heading names `berth PATH` (as `` `berth PATH `` then a
    /// space or a backquote), with the section of `berth OTHER` when it says "The flags of
    /// `OTHER`" (`create`: `run`'s). `None`: no such section.
    fn section_of(sections: &[(String, String)], path: &str) -> Option<String> {
        let key = format!("`berth {path}");
        let mut text = String::new();
        let mut found = false;
        for (heading, body) in sections {
            let named = heading
                .match_indices(&key)
                .any(|(i, _)| matches!(heading[i + key.len()..].chars().next(), Some(' ' | '`')));
            if named {
                found = true;
                text.push_str(heading);
                text.push_str(body);
                if let Some(rest) = body.split("The flags of `").nth(1) {
                    let other = rest.split('`').next().unwrap_or_default();
                    if other != path {
                        text.push_str(&section_of(sections, other).unwrap_or_default());
                    }
                }
            }
        }
        found.then_some(text)
    }

    /// Whether `text` names `--flag` as a whole word (`--link` is not in `--link-local-ip`).
    fn mentions_flag(text: &str, flag: &str) -> bool {
        let key = format!("--{flag}");
        text.match_indices(&key).any(|(i, _)| {
            !text[i + key.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    }

    /// Every subcommand (leaf or group) and every long flag of the `berth` CLI, as clap
    /// defines them: `(path, Some(flag))` for a flag, `(path, None)` for the command itself.
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, Option<String>)>) {
        for a in cmd.get_arguments() {
            if a.is_hide_set() || a.is_global_set() && !path.is_empty() {
                continue;
            }
            if let Some(long) = a.get_long() {
                if !matches!(long, "help" | "version") {
                    out.push((path.to_string(), Some(long.to_string())));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let p = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            out.push((p.clone(), None));
            walk(sub, &p, out);
        }
    }

    /// `--help` matches docs/CLI.md: every subcommand clap knows has a section there (a group
    /// such as `network` is named by its subcommands' sections) and every long flag appears in
    /// its command's section (global flags in `## Global`). Fails listing everything missing.
    #[test]
    fn every_command_and_flag_is_in_cli_md() {
        use clap::CommandFactory;
        let doc = include_str!("../../../docs/CLI.md");
        let sections = doc_sections(doc);
        let global = sections
            .iter()
            .find(|(h, _)| h == "## Global")
            .map(|(h, b)| format!("{h}{b}"))
            .unwrap_or_default();
        // The eager tree: a lazy one has no flags on its subcommands until built.
        let cli = crate::lazy::eager(Cli::command);
        let mut all = Vec::new();
        walk(&cli, "", &mut all);
        let mut missing = Vec::new();
        for (path, flag) in &all {
            let is_group = cli
                .get_subcommands()
                .any(|s| s.get_name() == path && s.has_subcommands());
            let text = if path.is_empty() {
                Some(global.clone())
            } else if is_group {
                doc.contains(&format!("`berth {path} ")).then(String::new)
            } else {
                section_of(&sections, path)
            };
            match (text, flag) {
                (None, None) => missing.push(format!("command `berth {path}`: no section")),
                (Some(t), Some(f)) if !mentions_flag(&t, f) => {
                    missing.push(format!("`berth {path}`: flag --{f}"))
                }
                _ => {}
            }
        }
        assert!(
            missing.is_empty(),
            "docs/CLI.md lacks what `berth --help` shows:\n  {}",
            missing.join("\n  ")
        );
    }

    /// The scripts name every subcommand and the flags users type most, and bash accepts its own.
    #[test]
    fn completion_scripts_list_the_cli() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let s = script(shell);
            for word in [
                "network", "run", "exec", "trace", "explain", "topology", "publish",
            ] {
                assert!(s.contains(word), "{shell}: no {word}");
            }
        }
        let bash = script(clap_complete::Shell::Bash);
        if let Ok(mut child) = std::process::Command::new("bash")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .spawn()
        {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(bash.as_bytes()).expect("write to bash -n");
            }
            let status = child.wait().expect("bash -n");
            assert!(
                status.success(),
                "bash -n rejects the bash completion script"
            );
        }
    }
}
