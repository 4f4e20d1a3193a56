//! `berth`: the command-line client of berthd, with docker's flags and habits.

mod cmd;
mod format;
mod graph;
mod json;
mod template;

use std::process::ExitCode;

use berth_api::client::{ApiError, Client};
use clap::{Parser, Subcommand};

/// Container networking for Linux: a docker-networking workalike.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
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
    Run(Box<cmd::run::Args>),
    /// Create a container (as `run`, without starting it) and print its id.
    #[command(disable_help_flag = true)]
    Create(Box<cmd::run::Args>),
    /// Start created or stopped containers (`-a`: attach to one and exit with its code).
    Start(cmd::start::Args),
    /// Stop then start containers.
    Restart(cmd::stop::Args),
    /// Block until containers stop, then print their exit codes.
    Wait(cmd::wait::Args),
    /// Run a command in a running container.
    Exec(cmd::exec::Args),
    /// Print a container's output.
    Logs(cmd::logs::Args),
    /// List containers.
    #[command(alias = "ls")]
    Ps(cmd::ps::Args),
    /// Show containers (or networks) as JSON.
    Inspect(cmd::inspect::Args),
    /// List a container's published ports.
    Port(cmd::port::Args),
    /// Stop running containers.
    Stop(cmd::stop::Args),
    /// Change containers' restart policy (`--restart`).
    Update(cmd::update::Args),
    /// Remove containers.
    Rm(cmd::rm::Args),
    /// Send a signal to running containers (SIGKILL unless `-s`).
    Kill(cmd::kill::Args),
    /// Show berthd's state and warnings.
    Info,
    /// The hosts of berthd's cluster (`berth node ls`; needs `--cluster-store`).
    #[command(subcommand)]
    Node(cmd::node::NodeCommand),
    /// Check the host against berthd's intent (`berth system check`).
    #[command(subcommand)]
    System(cmd::system::SystemCommand),
    /// Show networks, bridges, veths and containers as the kernel has them, drift marked.
    Topology(cmd::topology::Args),
    /// Show who can reach a container, on which ports, from where, and where it can go.
    Explain(cmd::explain::Args),
    /// Trace a packet's journey through this host: each hop, the rule that decided it, and why.
    Trace(cmd::trace::Args),
    /// The seed as a step-by-step lab in a sandbox of namespaces: `--list`, `N`, `--next`,
    /// `--show` + `shell` + `--check`, `--clean`.
    Lab(cmd::lab::Args),
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
    clap_complete::generate(shell, &mut Cli::command(), "berth", out);
}

/// Prints `err` the way docker does: daemon errors as `Error response from daemon: …`, anything
/// else as `berth: …`.
pub fn report(err: &anyhow::Error) {
    match err.downcast_ref::<ApiError>() {
        Some(api @ ApiError::Server { .. }) => eprintln!("{api}"),
        _ => eprintln!("berth: {err:#}"),
    }
}

async fn dispatch(cli: Cli) -> i32 {
    if let Command::Completion { shell } = cli.command {
        completion(shell, &mut std::io::stdout());
        return 0;
    }
    // The lab runs its own private berthd: it needs no client.
    if let Command::Lab(a) = cli.command {
        return match cmd::lab::run(a) {
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
    let result = match cli.command {
        Command::Network(c) => cmd::network::run(&client, c).await,
        Command::Run(a) => return cmd::run::run(&client, *a).await,
        Command::Create(a) => return cmd::run::create_only(&client, *a).await,
        Command::Start(a) => cmd::start::run(&client, a).await,
        Command::Restart(a) => cmd::stop::restart(&client, a).await,
        Command::Wait(a) => cmd::wait::run(&client, a).await,
        Command::Exec(a) => cmd::exec::run(&client, a).await,
        Command::Logs(a) => cmd::logs::run(&client, a).await,
        Command::Ps(a) => cmd::ps::run(&client, a).await,
        Command::Inspect(a) => cmd::inspect::run(&client, a).await,
        Command::Port(a) => cmd::port::run(&client, a).await,
        Command::Stop(a) => cmd::stop::run(&client, a).await,
        Command::Update(a) => cmd::update::run(&client, a).await,
        Command::Rm(a) => cmd::rm::run(&client, a).await,
        Command::Kill(a) => cmd::kill::run(&client, a).await,
        Command::Info => cmd::info::run(&client).await,
        Command::System(c) => cmd::system::run(&client, c).await,
        Command::Node(c) => cmd::node::run(&client, c).await,
        Command::Topology(a) => cmd::topology::run(&client, a).await,
        Command::Explain(a) => cmd::explain::run(&client, a).await,
        Command::Trace(a) => cmd::trace::run(&client, a).await,
        Command::Version => cmd::version::run(&client).await,
        Command::Completion { .. } | Command::Lab(_) => Ok(0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            1
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: clap_complete::Shell) -> String {
        let mut out = Vec::new();
        completion(shell, &mut out);
        String::from_utf8(out).unwrap_or_default()
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
