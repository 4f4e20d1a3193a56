//! Docker's legacy links on the default `bridge` network (`--link NAME[:ALIAS]`,
//! `HostConfig.Links`): what the linking container gets of each running linked container —
//! `/etc/hosts` lines and environment variables — as moby's `daemon/links` and
//! `addLegacyLinks` make them. Pure: the daemon gathers the linked containers.

use std::net::IpAddr;

use crate::model::{ContainerSpec, NetworkSpec};
use crate::ports::Proto;

/// The default `bridge` network among `nets`, when `c` has an endpoint on it: legacy links
/// exist only there (moby sets them up for a container on the default bridge only).
pub fn default_bridge_of<'a>(
    c: &ContainerSpec,
    nets: &'a [NetworkSpec],
) -> Option<&'a NetworkSpec> {
    nets.iter()
        .find(|n| n.predefined && n.name == "bridge")
        .filter(|b| c.endpoints.iter().any(|e| e.network_id == b.id))
}

/// What a linking container sees of one linked container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked<'a> {
    /// The link's alias.
    pub alias: &'a str,
    /// The linked container's name (no leading `/`).
    pub name: &'a str,
    /// Its hostname.
    pub hostname: &'a str,
    /// Its environment (`KEY=VALUE`).
    pub env: &'a [String],
    /// Its addresses on the default bridge network (IPv4 first).
    pub addrs: Vec<IpAddr>,
    /// Its exposed ports (berth: the container ports it publishes), `(port, protocol)`.
    pub ports: Vec<(u16, Proto)>,
}

/// The `/etc/hosts` lines of a link: each address, then the alias, the linked container's
/// hostname and its name (when the alias is not its name), as moby's `addLegacyLinks`.
pub fn hosts_lines(l: &Linked<'_>) -> Vec<(IpAddr, String)> {
    let mut names = format!("{} {}", l.alias, l.hostname);
    if l.alias != l.name {
        names.push(' ');
        names.push_str(l.name);
    }
    l.addrs.iter().map(|a| (*a, names.clone())).collect()
}

/// The environment variables a link gives the linking container `parent`, in moby's
/// `links.Link.ToEnv` order: `ALIAS_PORT` (the first port), per port `ALIAS_PORT_N_PROTO`,
/// `…_ADDR`, `…_PORT`, `…_PROTO` (and `…_START`/`…_END` over runs of consecutive ports), then
/// `ALIAS_NAME=/PARENT/ALIAS` and `ALIAS_ENV_KEY=VALUE` for the linked container's environment
/// (but `HOME` and `PATH`). `ALIAS` is the alias upper-cased, `-` as `_`. The address is the
/// linked container's IPv4 address on the bridge (moby uses its `IPAddress`).
pub fn env_vars(parent: &str, l: &Linked<'_>) -> Vec<String> {
    let alias = l.alias.to_ascii_uppercase().replace('-', "_");
    let ip = l
        .addrs
        .iter()
        .find(|a| a.is_ipv4())
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut ports = l.ports.clone();
    // moby's withTCPPriority: TCP first, then by number.
    ports.sort_by_key(|(n, p)| (*p != Proto::Tcp, p.as_str(), *n));
    ports.dedup();
    let mut env = Vec::new();
    let mut start = ports.first().copied();
    let mut end = start;
    for (i, &(num, proto)) in ports.iter().enumerate() {
        if i == 0 {
            env.push(format!("{alias}_PORT={proto}://{ip}:{num}"));
        }
        let prefix = format!("{alias}_PORT_{num}_{}", proto.as_str().to_ascii_uppercase());
        env.push(format!("{prefix}={proto}://{ip}:{num}"));
        env.push(format!("{prefix}_ADDR={ip}"));
        env.push(format!("{prefix}_PORT={num}"));
        env.push(format!("{prefix}_PROTO={proto}"));
        if let Some((end_num, end_proto)) = end {
            if i > 0 && num == end_num.wrapping_add(1) && proto == end_proto {
                end = Some((num, proto));
                if i < ports.len() - 1 {
                    continue;
                }
            }
        }
        if let (Some(s), Some(e)) = (start, end) {
            if s != e {
                let prefix = format!("{alias}_PORT_{}_{}", s.0, s.1.as_str().to_ascii_uppercase());
                env.push(format!("{prefix}_START={}://{ip}:{}", s.1, s.0));
                env.push(format!("{prefix}_PORT_START={}", s.0));
                env.push(format!("{prefix}_END={}://{ip}:{}", e.1, e.0));
                env.push(format!("{prefix}_PORT_END={}", e.0));
            }
        }
        start = Some((num, proto));
        end = start;
    }
    env.push(format!("{alias}_NAME=/{parent}/{}", l.alias));
    for kv in l.env {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        if k == "HOME" || k == "PATH" {
            continue;
        }
        env.push(format!("{alias}_ENV_{k}={v}"));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_belong_to_the_predefined_bridge_only() {
        use crate::testutil::{container, net};
        let mut bridge = net('b', "bridge", "172.17.0.0/16");
        bridge.predefined = true;
        let user = net('u', "bridge2", "10.1.0.0/24");
        let mut impostor = net('i', "bridge", "10.2.0.0/24");
        impostor.predefined = false;
        let nets = vec![impostor.clone(), user.clone(), bridge.clone()];
        let on = container('1', "app", &[(&bridge, "172.17.0.2/16")]);
        assert_eq!(
            default_bridge_of(&on, &nets).map(|n| &n.id),
            Some(&bridge.id)
        );
        let off = container(
            '2',
            "app2",
            &[(&user, "10.1.0.2/24"), (&impostor, "10.2.0.2/24")],
        );
        assert_eq!(
            default_bridge_of(&off, &nets),
            None,
            "a user network named bridge is not it"
        );
    }

    fn linked<'a>(env: &'a [String], ports: Vec<(u16, Proto)>) -> Linked<'a> {
        Linked {
            alias: "docker-1",
            name: "db",
            hostname: "dbhost",
            env,
            addrs: vec!["172.0.17.2".parse().expect("address")],
            ports,
        }
    }

    /// moby's `TestLinkNaming`, `TestLinkEnv` and `TestLinkMultipleEnv` (a run of three
    /// consecutive TCP ports), with HOME and PATH left out.
    #[test]
    fn env_as_moby() {
        let env = vec![
            "PASSWORD=gordon".to_string(),
            "PATH=/bin".into(),
            "X".into(),
        ];
        let got = env_vars("docker", &linked(&env, vec![(6379, Proto::Tcp)]));
        assert_eq!(
            got,
            [
                "DOCKER_1_PORT=tcp://172.0.17.2:6379",
                "DOCKER_1_PORT_6379_TCP=tcp://172.0.17.2:6379",
                "DOCKER_1_PORT_6379_TCP_ADDR=172.0.17.2",
                "DOCKER_1_PORT_6379_TCP_PORT=6379",
                "DOCKER_1_PORT_6379_TCP_PROTO=tcp",
                "DOCKER_1_NAME=/docker/docker-1",
                "DOCKER_1_ENV_PASSWORD=gordon",
            ]
        );
        let ports = vec![(6381, Proto::Tcp), (6379, Proto::Tcp), (6380, Proto::Tcp)];
        let got = env_vars("docker", &linked(&[], ports));
        for want in [
            "DOCKER_1_PORT=tcp://172.0.17.2:6379",
            "DOCKER_1_PORT_6379_TCP_START=tcp://172.0.17.2:6379",
            "DOCKER_1_PORT_6379_TCP_END=tcp://172.0.17.2:6381",
            "DOCKER_1_PORT_6379_TCP_PORT_START=6379",
            "DOCKER_1_PORT_6379_TCP_PORT_END=6381",
            "DOCKER_1_PORT_6380_TCP_ADDR=172.0.17.2",
        ] {
            assert!(got.iter().any(|e| e == want), "{want} not in {got:?}");
        }
        // UDP sorts after TCP.
        let got = env_vars("p", &linked(&[], vec![(53, Proto::Udp), (80, Proto::Tcp)]));
        assert_eq!(got[0], "DOCKER_1_PORT=tcp://172.0.17.2:80");
    }

    #[test]
    fn hosts_name_alias_hostname_and_name() {
        let l = linked(&[], vec![]);
        assert_eq!(
            hosts_lines(&l),
            vec![(
                "172.0.17.2".parse().expect("address"),
                "docker-1 dbhost db".to_string()
            )]
        );
        let same = Linked { alias: "db", ..l };
        assert_eq!(hosts_lines(&same)[0].1, "db dbhost");
    }
}
