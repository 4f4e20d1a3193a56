//! berth-plan: the pure layer of berth.
//!
//! Everything here decides and nothing here acts: no sockets, no files, no clocks, no randomness,
//! no processes. The daemon feeds it desired state (from the store) and observed state (from the
//! kernel layer) and gets back plans and steps to execute. That makes every decision unit-testable
//! without root, in milliseconds.

pub mod capacity;
pub mod cluster;
pub mod dns;
pub mod driver;
pub mod error;
pub mod explain;
pub mod files;
pub mod firewall;
pub mod host;
pub mod input;
pub mod ipam;
pub mod lab;
pub mod links;
pub mod model;
pub mod names;
pub mod network;
pub mod overlay;
pub mod overlayns;
pub mod ports;
pub mod ps;
pub mod remotes;
pub mod restart;
pub mod security;
pub mod sysctl;
#[cfg(test)]
pub(crate) mod testutil;
pub mod trace;
pub mod until;
pub mod wireguard;
