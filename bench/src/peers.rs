//! The peers, driven exactly as peers.md drove them (and with the JSON podman gives them, see
//! `shared/reference/podman/`), minus port mappings: berth's published ports are measured
//! separately once they exist.
//!
//! * netavark 1.4: `netavark --config DIR -a AARDVARK setup|teardown /run/netns/C < options.json`,
//!   bridge driver, `host-local` IPAM (podman hands netavark the address in `static_ips`), DNS off.
//! * CNI plugins 1.1.1: ADD = `loopback` (lo) then `bridge` (eth0: `isGateway`, `ipMasq`,
//!   `hairpinMode`, `host-local` IPAM); DEL = `bridge` (with the ADD result as `prevResult`)
//!   then `loopback`. Timed = the plugin processes only, no libcni glue (as peers.md).
//!
//! Every call goes through a [`Worker`] inside the tool's own bench host namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::berth::hex_id;
use crate::guard::Netns;
use crate::worker::{Request, Worker};

/// netavark's binary.
pub const NETAVARK: &str = "/usr/lib/podman/netavark";
/// aardvark-dns (never started here: DNS is off; passed like podman does).
pub const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
/// The CNI plugin directory.
pub const CNI_PATH: &str = "/usr/lib/cni";
/// Per-process timeout.
const TIMEOUT_MS: u64 = 30_000;

/// One peer container: its namespace (made with `ip netns add`, untimed) and identity.
#[derive(Debug)]
pub struct PeerContainer {
    /// The namespace.
    pub ns: Netns,
    /// 64-hex id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its address (netavark: given as `static_ips`; CNI: host-local allocates its own).
    pub ip: Ipv4Addr,
}

impl PeerContainer {
    /// Creates the namespace `<ns_name>` for container number `n` of a network on `subnet`
    /// (address = subnet base + 2 + n).
    pub fn new(ns_name: &str, tag: u8, n: u32, subnet: Ipv4Net) -> Result<PeerContainer> {
        let base = u32::from(subnet.network());
        let ip = Ipv4Addr::from(base.wrapping_add(2).wrapping_add(n));
        anyhow::ensure!(
            subnet.contains(&ip),
            "container {n} does not fit in {subnet}"
        );
        Ok(PeerContainer {
            ns: Netns::add(ns_name)?,
            id: hex_id(tag, u64::from(n)),
            name: format!("bench{n}"),
            ip,
        })
    }

    fn ns_path(&self) -> String {
        self.ns.path().to_string_lossy().into_owned()
    }
}

/// netavark with one bridge network in its own host namespace.
#[derive(Debug)]
pub struct Netavark {
    worker: Worker,
    config: PathBuf,
    bridge: String,
    subnet: Ipv4Net,
}

impl Netavark {
    /// A netavark "installation" in `host`: state under `config`, bridge `bridge` on `subnet`.
    pub fn new(host: &Netns, config: &Path, bridge: &str, subnet: Ipv4Net) -> Result<Netavark> {
        std::fs::create_dir_all(config)
            .with_context(|| format!("creating {}", config.display()))?;
        Ok(Netavark {
            worker: Worker::start(host)?,
            config: config.to_path_buf(),
            bridge: bridge.to_string(),
            subnet,
        })
    }

    /// podman's `network-options.json` for `c` (no port mappings, DNS off).
    fn options(&self, c: &PeerContainer) -> Value {
        let gateway = Ipv4Addr::from(u32::from(self.subnet.network()).wrapping_add(1));
        json!({
            "container_id": c.id,
            "container_name": c.name,
            "networks": {
                "bbnet": {
                    "static_ips": [c.ip.to_string()],
                    "aliases": [&c.id[..12]],
                    "interface_name": "eth0"
                }
            },
            "network_info": {
                "bbnet": {
                    "name": "bbnet",
                    "id": hex_id(0xaa, 0),
                    "driver": "bridge",
                    "network_interface": self.bridge,
                    "created": "2026-01-01T00:00:00.000000000Z",
                    "subnets": [{"subnet": self.subnet.to_string(), "gateway": gateway.to_string()}],
                    "ipv6_enabled": false,
                    "internal": false,
                    "dns_enabled": false,
                    "ipam_options": {"driver": "host-local"}
                }
            }
        })
    }

    fn call(&mut self, verb: &str, c: &PeerContainer) -> Result<f64> {
        let req = Request {
            argv: vec![
                NETAVARK.into(),
                "--config".into(),
                self.config.to_string_lossy().into_owned(),
                "-a".into(),
                AARDVARK.into(),
                verb.into(),
                c.ns_path(),
            ],
            env: Vec::new(),
            stdin: self.options(c).to_string(),
            timeout_ms: TIMEOUT_MS,
        };
        let what = format!("netavark {verb} {}", c.ns.name());
        Ok(self.worker.run_ok(&what, &req)?.ms())
    }

    /// `netavark setup`, in ms.
    pub fn setup(&mut self, c: &PeerContainer) -> Result<f64> {
        self.call("setup", c)
    }

    /// `netavark teardown`, in ms.
    pub fn teardown(&mut self, c: &PeerContainer) -> Result<f64> {
        self.call("teardown", c)
    }
}

/// Times of one CNI ADD or DEL, in ms.
#[derive(Debug, Clone, Copy)]
pub struct CniTimes {
    /// `loopback`.
    pub lo: f64,
    /// `bridge` (which runs `host-local` itself).
    pub bridge: f64,
}

impl CniTimes {
    /// Sum of the plugin processes.
    pub fn total(&self) -> f64 {
        self.lo + self.bridge
    }
}

/// The CNI reference plugins with one bridge network in their own host namespace.
#[derive(Debug)]
pub struct Cni {
    worker: Worker,
    bridge: String,
    subnet: Ipv4Net,
    data_dir: PathBuf,
}

impl Cni {
    /// CNI in `host`: bridge `bridge` on `subnet`, host-local's state under `data_dir`.
    pub fn new(host: &Netns, bridge: &str, subnet: Ipv4Net, data_dir: &Path) -> Result<Cni> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        Ok(Cni {
            worker: Worker::start(host)?,
            bridge: bridge.to_string(),
            subnet,
            data_dir: data_dir.to_path_buf(),
        })
    }

    fn bridge_conf(&self) -> Value {
        let gateway = Ipv4Addr::from(u32::from(self.subnet.network()).wrapping_add(1));
        json!({
            "cniVersion": "1.0.0",
            "name": "bbcni",
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet.to_string(), "gateway": gateway.to_string()}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir.to_string_lossy()
            }
        })
    }

    fn plugin(
        &mut self,
        plugin: &str,
        cmd: &str,
        c: &PeerContainer,
        conf: &Value,
    ) -> Result<(f64, String)> {
        let ifname = if plugin == "loopback" { "lo" } else { "eth0" };
        let req = Request {
            argv: vec![format!("{CNI_PATH}/{plugin}")],
            env: vec![
                ("CNI_COMMAND".into(), cmd.into()),
                ("CNI_CONTAINERID".into(), c.id.clone()),
                ("CNI_NETNS".into(), c.ns_path()),
                ("CNI_IFNAME".into(), ifname.into()),
                ("CNI_PATH".into(), CNI_PATH.into()),
            ],
            stdin: conf.to_string(),
            timeout_ms: TIMEOUT_MS,
        };
        let what = format!("CNI {plugin} {cmd} {}", c.ns.name());
        let resp = self.worker.run_ok(&what, &req)?;
        Ok((resp.ms(), resp.stdout))
    }

    /// ADD: loopback then bridge. Returns the times and the bridge's result (for DEL).
    pub fn add(&mut self, c: &PeerContainer) -> Result<(CniTimes, Value)> {
        let lo_conf = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let (lo, _) = self.plugin("loopback", "ADD", c, &lo_conf)?;
        let conf = self.bridge_conf();
        let (bridge, out) = self.plugin("bridge", "ADD", c, &conf)?;
        let result: Value = serde_json::from_str(&out)
            .with_context(|| format!("parsing the bridge plugin's ADD result {out:?}"))?;
        Ok((CniTimes { lo, bridge }, result))
    }

    /// DEL: bridge (with `prevResult`) then loopback.
    pub fn del(&mut self, c: &PeerContainer, prev: &Value) -> Result<CniTimes> {
        let mut conf = self.bridge_conf();
        if let Some(obj) = conf.as_object_mut() {
            obj.insert("prevResult".into(), prev.clone());
        }
        let (bridge, _) = self.plugin("bridge", "DEL", c, &conf)?;
        let lo_conf = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let (lo, _) = self.plugin("loopback", "DEL", c, &lo_conf)?;
        Ok(CniTimes { lo, bridge })
    }
}
