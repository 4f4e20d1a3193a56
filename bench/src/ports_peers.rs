//! The peers with port mappings, for `berth-bench-ports`, driven as peers.md drove them:
//!
//! * netavark 1.4: `netavark --config DIR -a AARDVARK setup|teardown /run/netns/C <
//!   options.json`, bridge driver, `static_ips`, DNS off, and `port_mappings`
//!   (`[{host_ip, container_port, host_port, range, protocol}]`): N single-port mappings for N
//!   ports, or one mapping with `range` for a port range.
//! * CNI plugins 1.1.1: ADD = `loopback`, `bridge` (`isGateway`, `ipMasq`, `hairpinMode`,
//!   `host-local`), then `portmap` (`snat: true`, `capabilities.portMappings`,
//!   `runtimeConfig.portMappings`, `prevResult` = the bridge's result); DEL in reverse order with
//!   `prevResult` = the final ADD result. A range is one `portMappings` entry per port (CNI has
//!   no range). Timed = the plugin processes only (no libcni glue), as in peers.md.
//!
//! Each tool has its own "host" namespace (`bb<pid>pn` / `bb<pid>pc`), where it runs through a
//! [`Worker`] (`ip netns exec`, `PATH=/usr/sbin:/usr/bin:/sbin:/bin`, `DBUS_SYSTEM_BUS_ADDRESS=`),
//! and an anchor container without ports that keeps its bridge up ("warm", like berth's network
//! that exists before its containers).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::guard::{prefix, run_ip, Netns};
use crate::worker::{Request, Worker};

/// netavark's binary.
pub const NETAVARK: &str = "/usr/lib/podman/netavark";
/// aardvark-dns (never started: DNS is off; passed like podman does).
const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
/// The CNI plugin directory.
pub const CNI_PATH: &str = "/usr/lib/cni";
/// Per-process timeout: netavark took 121 s to tear down 1,000 mappings in peers.md.
const TIMEOUT_MS: u64 = 900_000;

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// netavark with iptables (its default firewall driver).
    Netavark,
    /// CNI `bridge` + `portmap`.
    Cni,
}

impl Kind {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Netavark => "netavark",
            Kind::Cni => "CNI portmap",
        }
    }
}

/// The TCP ports of one container.
#[derive(Debug, Clone, Copy)]
pub enum Ports {
    /// None.
    None,
    /// `count` single-port mappings, host port = container port = `first + i`.
    Each { first: u16, count: u16 },
    /// One range of `count` ports from `first` (host = container).
    Range { first: u16, count: u16 },
}

/// One peer container: its namespace (made untimed with `ip netns add`) and identity.
#[derive(Debug)]
pub struct Ctr {
    ns: Netns,
    id: String,
    name: String,
    ip: Ipv4Addr,
    /// The final ADD result (CNI), for DEL.
    result: Value,
}

/// One peer tool in its own host namespace.
#[derive(Debug)]
pub struct Peer {
    /// Which one.
    pub kind: Kind,
    worker: Worker,
    dir: PathBuf,
    subnet_base: u32,
    next: u32,
    anchor: Option<Ctr>,
    // Declared last: dropped after the worker (which runs in it) and the containers.
    host: Netns,
}

impl Peer {
    /// Creates the host namespace, starts the worker, and sets up the anchor container.
    pub fn new(kind: Kind, scratch: &Path) -> Result<Peer> {
        let (tag, net) = match kind {
            Kind::Netavark => ("pn", 0x0afa_0000u32), // 10.250.0.0/16
            Kind::Cni => ("pc", 0x0afb_0000u32),      // 10.251.0.0/16
        };
        let host = Netns::add(&format!("{}{tag}", prefix()))?;
        run_ip(&["-n", host.name(), "link", "set", "lo", "up"])?;
        let dir = scratch.join(tag);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let worker = Worker::start(&host)?;
        let mut p = Peer {
            kind,
            worker,
            dir,
            subnet_base: net,
            next: 0,
            anchor: None,
            host,
        };
        let mut anchor = p.container()?;
        p.setup(&mut anchor, Ports::None)?;
        p.anchor = Some(anchor);
        Ok(p)
    }

    /// A fresh container namespace (untimed).
    pub fn container(&mut self) -> Result<Ctr> {
        self.next += 1;
        let n = self.next;
        let ns = Netns::add(&format!("{}-{n}", self.host.name()))?;
        Ok(Ctr {
            ns,
            id: format!("{:02x}{:062x}", (self.subnet_base >> 16) & 0xff, n),
            name: format!("bench{n}"),
            ip: Ipv4Addr::from(self.subnet_base + 2 + n),
            result: Value::Null,
        })
    }

    fn subnet(&self) -> String {
        format!("{}/16", Ipv4Addr::from(self.subnet_base))
    }

    fn gateway(&self) -> String {
        Ipv4Addr::from(self.subnet_base + 1).to_string()
    }

    fn bridge(&self) -> &'static str {
        match self.kind {
            Kind::Netavark => "bbnv0",
            Kind::Cni => "bbcni0",
        }
    }

    /// Sets `c` up with `ports`; the time of the tool's processes, in ms.
    pub fn setup(&mut self, c: &mut Ctr, ports: Ports) -> Result<f64> {
        match self.kind {
            Kind::Netavark => self.netavark("setup", c, ports),
            Kind::Cni => {
                let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
                let (t_lo, _) = self.plugin("loopback", "ADD", c, &lo)?;
                let (t_br, out) = self.plugin("bridge", "ADD", c, &self.bridge_conf(None))?;
                let mut result: Value = serde_json::from_str(&out)
                    .with_context(|| format!("parsing the bridge plugin's result {out:?}"))?;
                let mut total = t_lo + t_br;
                if let Some(conf) = self.portmap_conf(ports, &result) {
                    let (t_pm, out) = self.plugin("portmap", "ADD", c, &conf)?;
                    result = serde_json::from_str(&out)
                        .with_context(|| format!("parsing the portmap plugin's result {out:?}"))?;
                    total += t_pm;
                }
                c.result = result;
                Ok(total)
            }
        }
    }

    /// Tears `c` down (it was set up with `ports`); the time of the tool's processes, in ms.
    pub fn teardown(&mut self, c: &Ctr, ports: Ports) -> Result<f64> {
        match self.kind {
            Kind::Netavark => self.netavark("teardown", c, ports),
            Kind::Cni => {
                let mut total = 0.0;
                if let Some(conf) = self.portmap_conf(ports, &c.result) {
                    total += self.plugin("portmap", "DEL", c, &conf)?.0;
                }
                total += self
                    .plugin("bridge", "DEL", c, &self.bridge_conf(Some(&c.result)))?
                    .0;
                let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
                total += self.plugin("loopback", "DEL", c, &lo)?.0;
                Ok(total)
            }
        }
    }

    /// podman's `network-options.json` with `port_mappings`.
    fn netavark(&mut self, verb: &str, c: &Ctr, ports: Ports) -> Result<f64> {
        let map = |first: u16, range: u16| {
            json!({"host_ip": "", "container_port": first, "host_port": first,
                   "range": range, "protocol": "tcp"})
        };
        let mappings: Vec<Value> = match ports {
            Ports::None => Vec::new(),
            Ports::Each { first, count } => (0..count).map(|i| map(first + i, 1)).collect(),
            Ports::Range { first, count } => vec![map(first, count)],
        };
        let options = json!({
            "container_id": c.id,
            "container_name": c.name,
            "port_mappings": mappings,
            "networks": {"bbnet": {
                "static_ips": [c.ip.to_string()],
                "aliases": [&c.id[..12]],
                "interface_name": "eth0"
            }},
            "network_info": {"bbnet": {
                "name": "bbnet",
                "id": format!("{:064x}", 0xaau8),
                "driver": "bridge",
                "network_interface": self.bridge(),
                "created": "2026-01-01T00:00:00.000000000Z",
                "subnets": [{"subnet": self.subnet(), "gateway": self.gateway()}],
                "ipv6_enabled": false,
                "internal": false,
                "dns_enabled": false,
                "ipam_options": {"driver": "host-local"}
            }}
        });
        let req = Request {
            argv: vec![
                NETAVARK.into(),
                "--config".into(),
                self.dir.to_string_lossy().into_owned(),
                "-a".into(),
                AARDVARK.into(),
                verb.into(),
                c.ns.path().to_string_lossy().into_owned(),
            ],
            env: Vec::new(),
            stdin: options.to_string(),
            timeout_ms: TIMEOUT_MS,
        };
        let what = format!("netavark {verb} {}", c.ns.name());
        Ok(self.worker.run_ok(&what, &req)?.ms())
    }

    fn bridge_conf(&self, prev: Option<&Value>) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": "bbcni",
            "type": "bridge",
            "bridge": self.bridge(),
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet(), "gateway": self.gateway()}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.dir.join("ipam").to_string_lossy()
            }
        });
        if let (Some(prev), Some(obj)) = (prev, conf.as_object_mut()) {
            obj.insert("prevResult".into(), prev.clone());
        }
        conf
    }

    /// The chained `portmap` configuration for `ports` (none without ports).
    fn portmap_conf(&self, ports: Ports, prev: &Value) -> Option<Value> {
        let (first, count) = match ports {
            Ports::None => return None,
            Ports::Each { first, count } | Ports::Range { first, count } => (first, count),
        };
        let mappings: Vec<Value> = (0..count)
            .map(|i| json!({"hostPort": first + i, "containerPort": first + i, "protocol": "tcp"}))
            .collect();
        Some(json!({
            "cniVersion": "1.0.0",
            "name": "bbcni",
            "type": "portmap",
            "snat": true,
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": prev
        }))
    }

    fn plugin(&mut self, plugin: &str, cmd: &str, c: &Ctr, conf: &Value) -> Result<(f64, String)> {
        let ifname = if plugin == "loopback" { "lo" } else { "eth0" };
        let req = Request {
            argv: vec![format!("{CNI_PATH}/{plugin}")],
            env: vec![
                ("CNI_COMMAND".into(), cmd.into()),
                ("CNI_CONTAINERID".into(), c.id.clone()),
                (
                    "CNI_NETNS".into(),
                    c.ns.path().to_string_lossy().into_owned(),
                ),
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
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(a) = self.anchor.take() {
            if let Err(e) = self.teardown(&a, Ports::None) {
                eprintln!(
                    "warning: cleanup: {} anchor teardown: {e:#}",
                    self.kind.name()
                );
            }
        }
    }
}
