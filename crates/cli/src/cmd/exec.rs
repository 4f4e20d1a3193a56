//! `berth exec`: run a command in a running container and exit with its code.

use std::time::Duration;

use anyhow::{bail, Result};
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::{ExecCreateRequest, ExecInspect, IdResponse};

use super::{copy_stream_with_body, env_entry, exit_code, obj_path};

/// Flags of `berth exec`. Options go before the container.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment variable KEY=VALUE, or KEY to pass berth's own value (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The container.
    container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    cmd: Vec<String>,
}

/// Runs the command, streams its output, returns its exit code.
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    let req = ExecCreateRequest {
        cmd: args.cmd,
        env: args.env.iter().filter_map(|e| env_entry(e)).collect(),
    };
    let created: IdResponse = client
        .request_json(
            Method::POST,
            &obj_path("containers", &args.container, "/exec"),
            Some(&req),
        )
        .await?;
    let start = serde_json::json!({ "Detach": false, "Tty": false });
    copy_stream_with_body(
        client,
        Method::POST,
        &obj_path("exec", &created.id, "/start"),
        Some(&start),
    )
    .await?;
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
