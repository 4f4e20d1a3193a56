//! `berth version`.

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::VersionResponse;

use crate::format::out;

/// Prints the client's version, then berthd's (an unreachable daemon is an error, exit 1).
pub fn run(client: &Client) -> Result<i32> {
    out("Client:");
    out(&format!(
        " Version:           {}",
        env!("CARGO_PKG_VERSION")
    ));
    out(&format!(" API version:       {}", berth_api::API_VERSION));
    out(&format!(
        " OS/Arch:           {}/{}",
        std::env::consts::OS,
        go_arch(std::env::consts::ARCH)
    ));
    out("");
    let v: VersionResponse = client.request_json_blocking(Method::GET, "/version", NO_BODY)?;
    out("Server:");
    out(&format!(" Version:           {}", v.version));
    out(&format!(
        " API version:       {} (minimum version {})",
        v.api_version, v.min_api_version
    ));
    out(&format!(" OS/Arch:           {}/{}", v.os, v.arch));
    out(&format!(" Kernel Version:    {}", v.kernel_version));
    for c in &v.components {
        out(&format!(" {}:", c.name));
        out(&format!("  Version:          {}", c.version));
    }
    Ok(0)
}

/// Go's architecture names, which docker prints.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}
