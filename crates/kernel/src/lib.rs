//! berth-kernel: executes plans made by `berth-plan` and reads kernel state back. Decides nothing.
//!
//! Modules: `netns` (creating/removing/entering network namespaces), `link` (rtnetlink: bridges,
//! veths, addresses, routes), `nft` (one atomic `nft -f -` transaction per change), `sysctl`,
//! `container` (the container init/enter stages: the only other place that calls setns/unshare).

pub mod conntrack;
pub mod container;
pub mod error;
pub mod hostport;
pub mod link;
pub mod monitor;
pub mod netns;
pub mod nft;
mod nl;
pub mod observe;
pub mod ops;
pub mod sublink;
pub mod sysctl;
