//! One module per subcommand. Each `run` returns the process exit code; errors are printed by
//! the caller (`report`).

pub mod exec;
pub mod explain;
pub mod info;
pub mod inspect;
pub mod interactive;
pub mod kill;
pub mod kvfile;
pub mod lab;
pub mod logs;
pub mod network;
pub mod network_connect;
pub mod network_create;
pub mod network_disconnect;
pub mod network_inspect;
pub mod network_ls;
pub mod network_prune;
pub mod network_rm;
pub mod node;
pub mod port;
pub mod ps;
pub mod rm;
pub mod run;
pub mod start;
pub mod stop;
pub mod system;
pub mod topology;
pub mod trace;
pub mod update;
pub mod version;
pub mod wait;

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::stream::{Decoder, STDERR};

use crate::format::{url_escape, write_raw};

/// `/{kind}/{escaped id}{suffix}`.
pub fn obj_path(kind: &str, id: &str, suffix: &str) -> String {
    format!("/{kind}/{}{suffix}", url_escape(id))
}

/// `METHOD /containers/{c}{suffix}` for each container in turn, printing the name of each one
/// that succeeded and reporting each failure as docker does; 1 if any failed (`stop`, `kill`,
/// `rm`: the others are still acted on).
pub fn each_container(client: &Client, method: Method, containers: &[String], suffix: &str) -> i32 {
    let mut code = 0;
    for c in containers {
        let path = obj_path("containers", c, suffix);
        match client.request_empty_blocking(method.clone(), &path, NO_BODY) {
            Ok(()) => crate::format::out(c),
            Err(e) => {
                crate::report(&e.into());
                code = 1;
            }
        }
    }
    code
}

/// Copies a Docker multiplexed stream to stdout/stderr until it ends.
pub async fn copy_stream(client: &Client, method: Method, path: &str) -> Result<()> {
    copy_stream_with_body(client, method, path, NO_BODY).await
}

/// [`copy_stream`] with a request body.
pub async fn copy_stream_with_body<B: serde::Serialize + ?Sized>(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&B>,
) -> Result<()> {
    let mut stream = client.request_stream(method, path, body).await?;
    let mut decoder = Decoder::default();
    while let Some(chunk) = stream.next().await {
        for (kind, payload) in decoder.push(&chunk?) {
            write_raw(kind == STDERR, &payload);
        }
    }
    Ok(())
}

/// The value of `-e KEY` (from the environment) or `-e KEY=VALUE`; `None` when unset.
pub fn env_entry(spec: &str) -> Option<String> {
    if spec.contains('=') {
        return Some(spec.to_string());
    }
    std::env::var(spec).ok().map(|v| format!("{spec}={v}"))
}

/// An exit code from a 64-bit status (`WaitResponse`, `ExecInspect`).
pub fn exit_code(status: i64) -> i32 {
    i32::try_from(status.rem_euclid(256)).unwrap_or(1)
}

/// Reads an `application/x-ndjson` answer line by line, handing each parsed line to `each`
/// (which returns `Err` to stop, e.g. on an error line).
pub async fn read_ndjson<T, B>(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&B>,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<()>
where
    T: serde::de::DeserializeOwned,
    B: serde::Serialize + ?Sized,
{
    let mut stream = client.request_stream(method, path, body).await?;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            each(serde_json::from_slice(&line)?)?;
        }
    }
    Ok(())
}
