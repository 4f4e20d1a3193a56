//! `berth start`.

use anyhow::{bail, Result};
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::stream::{Decoder, STDERR};

use super::{each_container, obj_path};
use crate::format::write_raw;

/// Flags of `berth start`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Attach to the container's stdout and stderr and exit with its code.
    #[arg(short, long)]
    attach: bool,
    /// Containers by name or id.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

impl Args {
    /// `-a`: the command follows the container's output (it needs the async runtime).
    pub fn attaches(&self) -> bool {
        self.attach
    }
}

/// Without `-a`: starts each container, printing its name; exit 1 if any failed.
pub fn run_detached(client: &Client, args: Args) -> i32 {
    each_container(client, Method::POST, &args.containers, "/start")
}

/// Starts each container, printing its name (exit 1 if any failed); with `-a`, the one
/// container's output until it exits, and its exit code.
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    if !args.attach {
        return Ok(run_detached(client, args));
    }
    let [c] = &args.containers[..] else {
        bail!("you cannot start and attach multiple containers at once");
    };
    let info: serde_json::Value = client
        .request_json(Method::GET, &obj_path("containers", c, "/json"), NO_BODY)
        .await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    // Wait and attach before the start, as docker does: nothing it prints or its exit is missed.
    // Both registered (their heads in) before the start is sent; asked for side by side.
    let attach = obj_path("containers", c, "/attach?stream=1&stdout=1&stderr=1");
    let (waiter, stream) = tokio::join!(
        super::run::wait_for_next_exit(client, c),
        client.request_stream(Method::POST, &attach, NO_BODY)
    );
    let (waiter, mut stream) = (waiter?, stream?);
    client
        .request_empty(Method::POST, &obj_path("containers", c, "/start"), NO_BODY)
        .await?;
    let mut decoder = Decoder::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if tty {
            write_raw(false, &chunk);
        } else {
            for (kind, payload) in decoder.push(&chunk) {
                write_raw(kind == STDERR, &payload);
            }
        }
    }
    Ok(super::run::waited(waiter).await)
}
