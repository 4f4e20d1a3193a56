//! `berth network …`.

use anyhow::Result;
use berth_api::client::Client;
use clap::Subcommand;

use crate::lazy::Lazy;

use super::{
    network_connect, network_create, network_disconnect, network_inspect, network_ls,
    network_prune, network_rm,
};

/// The network subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(Lazy<Box<network_create::Args>>),
    /// List networks.
    #[command(alias = "list")]
    Ls(Lazy<network_ls::Args>),
    /// Show networks as JSON.
    Inspect(Lazy<network_inspect::Args>),
    /// Connect a container to a network.
    Connect(Lazy<network_connect::Args>),
    /// Disconnect a container from a network.
    Disconnect(Lazy<network_disconnect::Args>),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm(Lazy<network_rm::Args>),
    /// Remove all networks not used by at least one container.
    Prune(Lazy<network_prune::Args>),
}

/// Runs a network subcommand.
pub fn run(client: &Client, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create(a) => network_create::run(client, *a.0),
        NetworkCommand::Ls(a) => network_ls::run(client, a.0),
        NetworkCommand::Inspect(a) => network_inspect::run(client, a.0),
        NetworkCommand::Connect(a) => network_connect::run(client, a.0),
        NetworkCommand::Disconnect(a) => network_disconnect::run(client, a.0),
        NetworkCommand::Rm(a) => network_rm::run(client, a.0),
        NetworkCommand::Prune(a) => network_prune::run(client, a.0),
    }
}
