//! `berth exec`: run a command in a running container and exit with its code.

use std::time::Duration;

use anyhow::{bail, Result};
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::{ExecCreateRequest, ExecInspect, ExecStartRequest, IdResponse};

use super::{copy_stream_with_body, env_entry, exit_code, obj_path};

/// Flags of `berth exec`. Options go before the container.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment variable KEY=VALUE, or KEY to pass berth's own value (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Pass our stdin to the command.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run the command on a pseudo-terminal (ours goes raw meanwhile).
    #[arg(short = 't', long)]
    tty: bool,
    /// Keys that leave the session with the command running (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys", value_name = "KEYS")]
    detach_keys: Option<String>,
    /// The container.
    container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    cmd: Vec<String>,
}

/// Runs the command, streams its output, returns its exit code.
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    use super::interactive::{self, Options, Outcome};
    if args.interactive && args.tty && !interactive::stdin_is_terminal() {
        bail!("the input device is not a TTY (use -i without -t to pipe input)");
    }
    let detach_keys = interactive::detach_keys(args.detach_keys.as_deref())?;
    let size = if args.tty {
        interactive::terminal_size().map(|(h, w)| vec![u32::from(h), u32::from(w)])
    } else {
        None
    };
    let req = ExecCreateRequest {
        cmd: args.cmd,
        env: args.env.iter().filter_map(|e| env_entry(e)).collect(),
        tty: args.tty,
        attach_stdin: args.interactive,
        console_size: size.clone(),
    };
    let created: IdResponse = client
        .request_json(
            Method::POST,
            &obj_path("containers", &args.container, "/exec"),
            Some(&req),
        )
        .await?;
    let start_path = obj_path("exec", &created.id, "/start");
    if args.interactive || args.tty {
        let start = ExecStartRequest {
            detach: false,
            tty: args.tty,
            console_size: size,
        };
        let conn = client
            .hijack(Method::POST, &start_path, Some(&start))
            .await?;
        let opts = Options {
            tty: args.tty,
            stdin: args.interactive,
            detach_keys,
            resize: Some(obj_path("exec", &created.id, "/resize")),
            interrupt: None,
        };
        match interactive::session(client, conn, &opts).await? {
            Outcome::Ended => {}
            Outcome::Detached => return Ok(0),
            Outcome::Signalled(sig) => return Ok(128 + sig),
        }
    } else {
        let start = serde_json::json!({ "Detach": false, "Tty": false });
        copy_stream_with_body(client, Method::POST, &start_path, Some(&start)).await?;
    }
    let inspect = obj_path("exec", &created.id, "/json");
    // The stream ends when the process exits; its code may take a moment to be recorded.
    for _ in 0..50 {
        let state: ExecInspect = client.request_json(Method::GET, &inspect, NO_BODY).await?;
        if let (false, Some(code)) = (state.running, state.exit_code) {
            return Ok(exit_code(code));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the exec's output ended but berthd reports no exit code for it")
}
