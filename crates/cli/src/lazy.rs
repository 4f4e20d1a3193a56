//! Subcommands whose flags clap builds only when it needs them.
//!
//! clap's derive builds every subcommand's flags (`Args::augment_args`) before it looks at the
//! command line: for `berth network connect NET CTR` that was most of the process's own CPU
//! time (docs/PERFORMANCE.md, "The CLI's own cost"). [`Lazy`] hands clap a deferred builder
//! instead ([`clap::Command::defer`]), which clap runs when it builds that subcommand: when it
//! is the one invoked, or when its help is asked for. The names, aliases and one-line
//! descriptions stay eager (they belong to the parent's help and to "did you mean"
//! suggestions). Completion scripts build the whole tree at once ([`eager`]).
//!
//! Why not clap's own `#[command(defer = true)]`: it applies the variant's attributes first and
//! the `Args` struct's later, so a struct's doc comment ("Flags of `berth …`") would replace
//! the variant's description in `berth SUB --help`. [`Lazy`] keeps the variant's.

use std::cell::Cell;

use clap::{ArgMatches, Args, Command, FromArgMatches};

/// A subcommand's flags `T`, added to its [`Command`] only when clap builds that command.
/// Parses exactly as `T`; the value is in `.0`.
#[derive(Debug, Clone)]
pub struct Lazy<T>(pub T);

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: Command) -> Command {
        defer(cmd, augment::<T>, T::augment_args)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        defer(cmd, augment_for_update::<T>, T::augment_args_for_update)
    }

    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Lazy)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

/// `cmd` with `deferred` to run when clap builds it; `eager` right away inside [`eager`], which
/// is what the derive did before.
fn defer(cmd: Command, deferred: fn(Command) -> Command, eager: fn(Command) -> Command) -> Command {
    if EAGER.with(Cell::get) {
        eager(cmd)
    } else {
        cmd.defer(deferred)
    }
}

fn augment<T: Args>(cmd: Command) -> Command {
    keep_variant_about(cmd, T::augment_args)
}

fn augment_for_update<T: Args>(cmd: Command) -> Command {
    keep_variant_about(cmd, T::augment_args_for_update)
}

/// Runs `augment` on `cmd`, then gives back the description the enum variant had set: eagerly,
/// the derive adds the struct's flags (and its doc comment as `about`) first and the variant's
/// attributes last, so the variant's description wins; deferred, the struct's would come last.
fn keep_variant_about(cmd: Command, augment: fn(Command) -> Command) -> Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = augment(cmd);
    match (about, long_about) {
        // The variant had no description of its own: the struct's stands, as eagerly.
        (None, _) => cmd,
        (Some(about), Some(long)) => cmd.about(about).long_about(long),
        (Some(about), None) => cmd.about(about).long_about(None::<&'static str>),
    }
}

thread_local! {
    /// Inside [`eager`]: build every subcommand at once, as the derive does without [`Lazy`].
    static EAGER: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every [`Lazy`] it creates on this thread built at once, as without [`Lazy`]:
/// for what walks the whole tree anyway. Completion scripts need it (a deferred subcommand
/// gets the global `-H` before its own flags, so the scripts would list them in another
/// order); the tests use it as the reference the lazy tree is compared with.
pub fn eager<R>(f: impl FnOnce() -> R) -> R {
    let before = EAGER.with(|e| e.replace(true));
    let r = f();
    EAGER.with(|e| e.set(before));
    r
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::eager;
    use crate::Cli;

    /// What `berth ARGV…` does in clap's hands: the parsed command, or the error or help text
    /// exactly as printed (styled), with its kind and exit code.
    fn outcome(argv: &[String]) -> String {
        match Cli::try_parse_from(std::iter::once("berth".to_string()).chain(argv.iter().cloned()))
        {
            Ok(cli) => format!("ok: {cli:?}"),
            Err(e) => format!(
                "{:?} (exit {}, stderr {}):\n{}",
                e.kind(),
                e.exit_code(),
                e.use_stderr(),
                e.render().ansi()
            ),
        }
    }

    /// Every subcommand path of the eager tree (`["network", "connect"]`…), groups included.
    fn paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            let mut p = prefix.to_vec();
            p.push(sub.get_name().to_string());
            out.push(p.clone());
            paths(sub, &p, out);
        }
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    /// The invocations compared: for every subcommand, its help (`-h`, `--help`, `berth help
    /// …`), its usage error without arguments, an unknown flag, a misspelt flag ("did you
    /// mean"), `--version`; for groups an unknown and a misspelt subcommand; and hand-picked
    /// command lines, valid and not, with the global `-H` in its places.
    fn invocations() -> Vec<Vec<String>> {
        let mut all = Vec::new();
        eager(|| paths(&Cli::command(), &[], &mut all));
        assert!(all.len() > 25, "the walk found {} subcommands", all.len());
        let mut out: Vec<Vec<String>> = Vec::new();
        for p in &all {
            let with = |extra: &[&str]| {
                let mut v = p.clone();
                v.extend(extra.iter().map(|s| s.to_string()));
                v
            };
            for extra in [
                &["--help"][..],
                &["-h"],
                &[],
                &["--no-such-flag"],
                &["--versio"],
                &["--version"],
                &["-V"],
                &["-H"],
                &["x", "y", "z", "w", "v"],
            ] {
                out.push(with(extra));
            }
            let mut help = vec!["help".to_string()];
            help.extend(p.iter().cloned());
            out.push(help);
            if let Some(last) = p.last() {
                // A misspelt subcommand: its last letter dropped.
                let mut typo = p.clone();
                typo.pop();
                typo.push(last[..last.len() - 1].to_string());
                out.push(typo);
            }
            out.push(with(&["bogus"]));
        }
        for line in [
            "",
            "--help",
            "-h",
            "help",
            "help bogus",
            "help network bogus",
            "--version",
            "-V",
            "netwrk ls",
            "network",
            "network conect a b",
            "network connect a",
            "network connect a b",
            "network connect a b c",
            "network connect --ip 10.0.0.5 --alias x --alias y --link c1:db a b",
            "network connect --ip",
            "-H unix:///tmp/x.sock network connect a b",
            "--host=/tmp/x.sock network disconnect -f a b",
            "network connect a b -H /tmp/y.sock",
            "-H",
            "-H /x",
            "network ls",
            "network ls -q --no-trunc -f driver=bridge --format {{.Name}}",
            "network list",
            "network ls --quiet=yes",
            "network create --subnet 10.1.0.0/24 --ipv6 -o a=b n",
            "network rm a b",
            "network remove",
            "network prune -f",
            "network inspect a",
            "ps -a -f label=x",
            "ls",
            "run --rm --network web curl -s http://x/ --rm",
            "run -it --rm sh",
            "run --help",
            "run -h box sh",
            "create --name job sh -c exit",
            "exec -it api sh",
            "logs -f --tail 20 -t api",
            "stop -t 1 a b",
            "restart -t x a",
            "kill -s HUP a",
            "rm -f a",
            "wait a",
            "start -a a",
            "update --restart always a",
            "inspect -f {{.Id}} a",
            "port a 80/tcp",
            "info",
            "info extra",
            "version",
            "node ls",
            "node list -q",
            "system check --format json",
            "system",
            "topology --format svg",
            "explain --verify www",
            "trace --to 192.0.2.1:8080 --from client",
            "lab --list",
            "lab --next",
            "completion bash",
            "completion",
            "completion tcsh",
        ] {
            out.push(words(line));
        }
        out
    }

    /// The lazily built tree parses, errs and helps exactly as the eager one (clap's full tree,
    /// what the derive builds without [`super::Lazy`]) for every invocation above.
    #[test]
    fn lazy_tree_answers_as_the_eager_one() {
        let mut differ = Vec::new();
        let lines = invocations();
        for argv in &lines {
            let want = eager(|| outcome(argv));
            let got = outcome(argv);
            if want != got {
                differ.push(format!(
                    "berth {}:\n--- eager\n{want}\n--- lazy\n{got}",
                    argv.join(" ")
                ));
            }
        }
        assert!(
            differ.is_empty(),
            "{} of {} invocations differ:\n{}",
            differ.len(),
            lines.len(),
            differ.join("\n")
        );
    }

    /// Every subcommand's help, long help and usage from the fully built tree are the eager
    /// ones, and so is every completion script (`completion` builds the tree eagerly).
    #[test]
    fn built_tree_and_completions_are_the_eager_ones() {
        fn texts(cmd: &mut clap::Command, out: &mut Vec<String>) {
            out.push(cmd.render_help().ansi().to_string());
            out.push(cmd.render_long_help().ansi().to_string());
            out.push(cmd.render_usage().ansi().to_string());
            for sub in cmd.get_subcommands_mut() {
                texts(sub, out);
            }
        }
        let all = || {
            let mut cmd = Cli::command();
            cmd.build();
            let mut out = Vec::new();
            texts(&mut cmd, &mut out);
            for shell in [
                clap_complete::Shell::Bash,
                clap_complete::Shell::Zsh,
                clap_complete::Shell::Fish,
                clap_complete::Shell::Elvish,
                clap_complete::Shell::PowerShell,
            ] {
                let mut script = Vec::new();
                crate::completion(shell, &mut script);
                out.push(String::from_utf8_lossy(&script).into_owned());
            }
            out
        };
        let want = eager(all);
        let got = all();
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w, g);
        }
    }
}
