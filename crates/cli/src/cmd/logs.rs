//! `berth logs`.

use anyhow::Result;
use berth_api::client::{Client, Method};

use super::{copy_stream, obj_path};

/// Flags of `berth logs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep following the output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// The container.
    container: String,
}

/// Prints the container's stdout and stderr to ours.
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    let query = if args.follow {
        "/logs?follow=1&stdout=1&stderr=1"
    } else {
        "/logs?stdout=1&stderr=1"
    };
    copy_stream(
        client,
        Method::GET,
        &obj_path("containers", &args.container, query),
    )
    .await?;
    Ok(0)
}
