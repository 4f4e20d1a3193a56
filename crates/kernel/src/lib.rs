//! berth-kernel: executes plans made by `berth-plan` and reads kernel state back. Decides nothing.
//!
//! Modules: `netns` (creating/removing/entering network namespaces), `link` (rtnetlink: bridges,
//! veths, addresses, routes), `nft` (one atomic `nft -f -` transaction per change), `sysctl`,
//! `container` (the container init/enter stages: the only other place that calls setns/unshare),
//! `rootfs` (the container's filesystem and `pivot_root`), `confine` (capabilities, seccomp,
//! `no_new_privs`), `sys` (the only `unsafe`: the few system and libc calls nothing wraps,
//! each listed there).

pub mod confine;
pub mod conntrack;
pub mod console;
pub mod container;
pub mod cpu_latency;
pub mod error;
pub mod filewatch;
pub mod gate;
pub mod hostport;
pub mod link;
pub mod monitor;
pub mod netns;
pub mod nft;
pub mod nftnl;
mod nl;
pub mod observe;
pub mod ops;
pub mod overlayns;
pub mod probe;
pub mod rootfs;
pub mod routeget;
pub mod seccomp;
#[rustfmt::skip]
mod seccomp_table;
pub mod spare;
pub mod sublink;
pub mod sys;
pub mod sysctl;
pub mod trace;
pub mod user;
pub mod vnet;
pub mod vxlan;
