//! berth's side, in-process: exactly what berthd does per container network setup.
//!
//! Setup = `berth_kernel::netns::create_netns_fd()` (the container's namespace) then
//! `Kernel::setup_endpoint(&endpoint_plan(net, ep, netns_path, true))`; teardown =
//! `Kernel::teardown_endpoint(host_ifname)`. The bridge comes from `Kernel::ensure_bridge` at
//! network creation (berth has no "first container creates the bridge" case). Endpoints are
//! planned with `berth_plan::network::plan_endpoint` against every container attached so far,
//! as berthd does, but planning is not timed.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_kernel::link::Kernel;
use berth_kernel::netns::{create_netns_fd, fd_path};
use berth_plan::model::{ContainerSpec, EndpointSpec, NetworkMode, NetworkSpec};
use berth_plan::network::{
    bridge_plan, endpoint_plan, plan_endpoint, plan_network, EndpointRequest, IpamRequest,
    NetworkRequest,
};

use crate::guard::Netns;

/// A 64-hex id that is unique in this run: 4 hex of the PID, 8 of `n`, then `tag`'s hex.
/// (Veth names are `vb` + the first 12 characters, so `n` keeps them apart.)
pub fn hex_id(tag: u8, n: u64) -> String {
    format!(
        "{:04x}{:08x}{:052x}",
        std::process::id() & 0xffff,
        n & 0xffff_ffff,
        tag
    )
}

/// One container attached by [`BerthNet::setup`]: its namespace fd keeps the namespace alive.
#[derive(Debug)]
pub struct Attached {
    /// Holds the container namespace (as berthd does until the container's init has joined).
    fd: OwnedFd,
    /// The endpoint, for teardown.
    ep: EndpointSpec,
    /// The container id.
    id: String,
}

/// How long one setup took.
#[derive(Debug, Clone, Copy)]
pub struct SetupTimes {
    /// `create_netns_fd()`.
    pub netns: Duration,
    /// Planning the kernel plan plus `setup_endpoint()`.
    pub endpoint: Duration,
}

impl SetupTimes {
    /// Namespace plus endpoint.
    pub fn total(&self) -> Duration {
        self.netns + self.endpoint
    }
}

/// One berth bridge network in a bench host namespace, driven through `berth-kernel`.
#[derive(Debug)]
pub struct BerthNet {
    kernel: Kernel,
    net: NetworkSpec,
    /// Every container currently attached (for address allocation).
    all: Vec<ContainerSpec>,
    next: u64,
    /// Experiment: IPv6 disabled in every container namespace (see [`disable_ipv6`]).
    no_ipv6: bool,
}

/// Sets `net.ipv6.conf.{all,default}.disable_ipv6=1` inside the namespace at `ns` (never the
/// caller's own): interfaces created there afterwards get no IPv6 link-local address, so no
/// DAD, router solicitations or MLD reports that the bridge would flood to every port.
pub fn disable_ipv6(ns: &std::path::Path) -> Result<()> {
    for key in [
        "net.ipv6.conf.default.disable_ipv6",
        "net.ipv6.conf.all.disable_ipv6",
    ] {
        berth_kernel::sysctl::write(Some(ns), key, "1")
            .with_context(|| format!("disabling IPv6 in {}", ns.display()))?;
    }
    Ok(())
}

impl BerthNet {
    /// Binds a kernel to `host`, plans a network on `subnet` and creates its bridge.
    ///
    /// With `no_ipv6` (an experiment, not what berthd does today), IPv6 is disabled in `host`
    /// before the bridge exists and in each container namespace before its endpoint is set up
    /// (untimed).
    pub async fn new(host: &Netns, name: &str, subnet: &str, no_ipv6: bool) -> Result<BerthNet> {
        if no_ipv6 {
            disable_ipv6(host.path())?;
        }
        let kernel = Kernel::new_in(host.path())
            .await
            .with_context(|| format!("binding berth-kernel to {}", host.name()))?;
        let req = NetworkRequest {
            name: name.to_string(),
            ipam: vec![IpamRequest {
                subnet: Some(subnet.to_string()),
                ..IpamRequest::default()
            }],
            ..NetworkRequest::default()
        };
        let net = plan_network(
            &req,
            hex_id(0xee, 0),
            "2026-01-01T00:00:00.000000000Z".into(),
            &[],
            &[],
        )
        .context("planning the bench network")?;
        let plan = bridge_plan(&net).context("the bench network has no bridge plan")?;
        kernel
            .ensure_bridge(&plan)
            .await
            .with_context(|| format!("creating bridge {}", plan.name))?;
        Ok(BerthNet {
            kernel,
            net,
            all: Vec::new(),
            next: 1,
            no_ipv6,
        })
    }

    /// Plans (untimed) and sets up (timed) one more container.
    pub async fn setup(&mut self) -> Result<(Attached, SetupTimes)> {
        let n = self.next;
        self.next += 1;
        let id = hex_id(0xc0, n);
        let mut container = ContainerSpec {
            id: id.clone(),
            name: format!("bench{n}"),
            hostname: format!("bench{n}"),
            created: "2026-01-01T00:00:00.000000000Z".into(),
            cmd: vec!["true".into()],
            env: Vec::new(),
            mode: NetworkMode::Networks,
            endpoints: Vec::new(),
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            extra_hosts: Vec::new(),
            rootfs: None,
            auto_remove: false,
            security: Default::default(),
            stdio: Default::default(),
            process: Default::default(),
            restart: Default::default(),
            legacy_links: Vec::new(),
        };
        let ep = plan_endpoint(
            &self.net,
            &container,
            &self.all,
            &EndpointRequest::default(),
            hex_id(0xe0, n),
        )
        .with_context(|| format!("planning endpoint of container {n}"))?;

        let t0 = Instant::now();
        let fd = create_netns_fd().context("creating a container namespace")?;
        let netns = t0.elapsed();
        let path = fd_path(&fd);
        if self.no_ipv6 {
            disable_ipv6(&path)?; // untimed
        }
        let t1 = Instant::now();
        let plan = endpoint_plan(&self.net, &ep, &path.to_string_lossy(), true);
        self.kernel
            .setup_endpoint(&plan)
            .await
            .with_context(|| format!("setting up endpoint of container {n}"))?;
        let t2 = Instant::now();

        container.endpoints.push(ep.clone());
        self.all.push(container);
        Ok((
            Attached { fd, ep, id },
            SetupTimes {
                netns,
                endpoint: t2 - t1,
            },
        ))
    }

    /// Tears one container down the way berthd does when a container exits or is removed:
    /// the container's namespace loses its last reference (here: the fd; in berthd: the last
    /// process) and the kernel destroys it, and every veth end in it, in its own cleanup work.
    /// Returns (synchronous cost, time until the host-side veth is gone — polled, bounded 5 s).
    pub async fn teardown(&mut self, a: Attached) -> Result<(Duration, Duration)> {
        let t0 = Instant::now();
        drop(a.fd);
        let sync = t0.elapsed();
        loop {
            let links = self.kernel.list_links().await.context("listing links")?;
            if !links.iter().any(|l| l.name == a.ep.host_ifname) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                anyhow::bail!(
                    "veth {} still present 5 s after its namespace was released",
                    a.ep.host_ifname
                );
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let gone = t0.elapsed();
        self.all.retain(|c| c.id != a.id);
        Ok((sync, gone))
    }

    /// Explicit removal of a running container's endpoint (`berth network disconnect`):
    /// `teardown_endpoint`, one RTM_DELLINK, synchronous. Then releases the namespace (untimed).
    pub async fn disconnect(&mut self, a: Attached) -> Result<Duration> {
        let t0 = Instant::now();
        self.kernel
            .teardown_endpoint(&a.ep.host_ifname)
            .await
            .with_context(|| format!("tearing down endpoint {}", a.ep.host_ifname))?;
        let took = t0.elapsed();
        self.all.retain(|c| c.id != a.id);
        drop(a.fd);
        Ok(took)
    }
}
