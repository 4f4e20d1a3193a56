//! `berth port NAME [PRIVATE_PORT[/PROTO]]`: a container's published ports, in docker's format
//! (`80/tcp -> 0.0.0.0:8080`, one line per host binding; with a port given, only the host
//! sides).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::{ContainerInspect, PortBinding};

use super::obj_path;
use crate::format::out;

/// Flags of `berth port`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container name or id.
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// Only this container port (`80`, `80/tcp`, `53/udp`).
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
}

/// Prints the container's published ports.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let c: ContainerInspect = client.request_json_blocking(
        Method::GET,
        &obj_path("containers", &args.container, "/json"),
        NO_BODY,
    )?;
    for line in lines(
        &c.network_settings.ports,
        args.port.as_deref(),
        &args.container,
    )? {
        out(&line);
    }
    Ok(0)
}

/// `[::]:8080` / `0.0.0.0:8080`.
fn host_side(b: &PortBinding) -> String {
    if b.host_ip.contains(':') {
        format!("[{}]:{}", b.host_ip, b.host_port)
    } else {
        format!("{}:{}", b.host_ip, b.host_port)
    }
}

/// Sort key of `80/tcp`: the number, then the protocol.
fn key_order(k: &str) -> (u32, String) {
    let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
    (p.parse().unwrap_or(u32::MAX), proto.to_string())
}

/// The lines `docker port` prints for `ports` (`NetworkSettings.Ports`), all of them or those
/// of `filter` (`80` means `80/tcp`); an error naming the port when nothing is published for
/// it.
pub fn lines(
    ports: &BTreeMap<String, Option<Vec<PortBinding>>>,
    filter: Option<&str>,
    container: &str,
) -> Result<Vec<String>> {
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort_by_key(|k| key_order(k));
    match filter {
        None => Ok(keys
            .into_iter()
            .flat_map(|k| {
                ports[k]
                    .iter()
                    .flatten()
                    .map(move |b| format!("{k} -> {}", host_side(b)))
            })
            .collect()),
        Some(f) => {
            let want = if f.contains('/') {
                f.to_ascii_lowercase()
            } else {
                format!("{f}/tcp")
            };
            let found: Vec<String> = ports
                .get(&want)
                .into_iter()
                .flatten()
                .flatten()
                .map(host_side)
                .collect();
            if found.is_empty() {
                bail!("No public port '{want}' published for {container}");
            }
            Ok(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: ip.into(),
            host_port: port.into(),
        }
    }

    #[test]
    fn docker_format() {
        let mut ports = BTreeMap::new();
        ports.insert(
            "80/tcp".to_string(),
            Some(vec![b("0.0.0.0", "8080"), b("::", "8080")]),
        );
        ports.insert("9000/tcp".to_string(), Some(vec![b("127.0.0.1", "9000")]));
        ports.insert("53/udp".to_string(), Some(vec![b("::1", "5353")]));
        ports.insert("7/tcp".to_string(), None);
        assert_eq!(
            lines(&ports, None, "web").expect("lines"),
            vec![
                "53/udp -> [::1]:5353",
                "80/tcp -> 0.0.0.0:8080",
                "80/tcp -> [::]:8080",
                "9000/tcp -> 127.0.0.1:9000",
            ]
        );
        assert_eq!(
            lines(&ports, Some("80"), "web").expect("lines"),
            vec!["0.0.0.0:8080", "[::]:8080"]
        );
        assert_eq!(
            lines(&ports, Some("53/UDP"), "web").expect("lines"),
            vec!["[::1]:5353"]
        );
        let e = lines(&ports, Some("7"), "web").expect_err("not published");
        assert_eq!(e.to_string(), "No public port '7/tcp' published for web");
    }
}
