//! `berth ps`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::ContainerSummary;

use crate::format::{ellipsis, human_duration, row, short_id, with_filters, write_raw, Format};
use crate::json::Value;

/// Flags of `berth ps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Only print container ids.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate ids and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: label=KEY[=VALUE], name=, id=, status=, exited=CODE, network= (repeatable).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Go-template format (`{{.ID}} {{.Command}} {{.RunningFor}} {{.Status}} {{.State}}
    /// {{.Networks}} {{.Names}} {{.Labels}}`), `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
}

const DEFAULT_TABLE: &str =
    "{{.ID}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Networks}}\t{{.Names}}";

const HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Command", "COMMAND"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Ports", "PORTS"),
    ("Networks", "NETWORKS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
];

/// Lists containers.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let format = Format::parse(args.format.as_deref())?;
    let mut path = with_filters("/containers/json", &args.filter)?;
    if args.all {
        path.push_str(if path.contains('?') {
            "&all=1"
        } else {
            "?all=1"
        });
    }
    let list: Vec<ContainerSummary> = client.request_json_blocking(Method::GET, &path, NO_BODY)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    write_raw(
        false,
        render(&list, args.quiet, args.no_trunc, &format, now)?.as_bytes(),
    );
    Ok(0)
}

fn container_row(c: &ContainerSummary, no_trunc: bool, now: i64) -> Value {
    let command = if no_trunc {
        c.command.clone()
    } else {
        ellipsis(&c.command, 20)
    };
    let names: Vec<&str> = c.names.iter().map(|n| n.trim_start_matches('/')).collect();
    let networks: Vec<&str> = c
        .network_settings
        .networks
        .keys()
        .map(String::as_str)
        .collect();
    row(&[
        ("ID", short_id(&c.id, no_trunc)),
        (
            "Command",
            serde_json::to_string(&command).unwrap_or(command),
        ),
        (
            "RunningFor",
            format!("{} ago", human_duration(now - c.created)),
        ),
        ("Status", c.status.clone()),
        ("State", c.state.clone()),
        ("Ports", ports_column(c)),
        ("Networks", networks.join(",")),
        ("Names", names.join(",")),
        (
            "Labels",
            c.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    ])
}

/// Docker's PORTS column: `0.0.0.0:8080->80/tcp, [::]:8080->80/tcp`.
fn ports_column(c: &ContainerSummary) -> String {
    c.ports
        .iter()
        .map(|p| {
            let host = if p.ip.contains(':') {
                format!("[{}]", p.ip)
            } else {
                p.ip.clone()
            };
            format!("{host}:{}->{}/{}", p.public_port, p.private_port, p.kind)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(
    list: &[ContainerSummary],
    quiet: bool,
    no_trunc: bool,
    format: &Format,
    now: i64,
) -> Result<String> {
    if quiet {
        return Ok(list
            .iter()
            .map(|c| short_id(&c.id, no_trunc) + "\n")
            .collect());
    }
    let rows: Vec<Value> = list
        .iter()
        .map(|c| container_row(c, no_trunc, now))
        .collect();
    format.render(&rows, HEADERS, DEFAULT_TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::types::{EndpointSettings, PortSummary, SummaryNetworkSettings};

    #[test]
    fn table() {
        let c = ContainerSummary {
            id: "184d1efa830a8fd6fbedb2d5c1a4".into(),
            names: vec!["/cpc2".into()],
            command: "sleep 600".into(),
            created: 1000,
            state: "running".into(),
            status: "Up 5 minutes".into(),
            network_mode: "n2".into(),
            network_settings: SummaryNetworkSettings {
                networks: [
                    ("n2".to_string(), EndpointSettings::default()),
                    ("n3".to_string(), EndpointSettings::default()),
                ]
                .into_iter()
                .collect(),
            },
            ports: vec![
                PortSummary {
                    ip: "0.0.0.0".into(),
                    private_port: 80,
                    public_port: 8080,
                    kind: "tcp".into(),
                },
                PortSummary {
                    ip: "::".into(),
                    private_port: 80,
                    public_port: 8080,
                    kind: "tcp".into(),
                },
            ],
            labels: Default::default(),
        };
        let got = render(
            std::slice::from_ref(&c),
            false,
            false,
            &Format::DefaultTable,
            1300,
        )
        .expect("ok");
        assert_eq!(
            got,
            "CONTAINER ID   COMMAND       CREATED         STATUS         PORTS                                     NETWORKS   NAMES\n\
             184d1efa830a   \"sleep 600\"   5 minutes ago   Up 5 minutes   0.0.0.0:8080->80/tcp, [::]:8080->80/tcp   n2,n3      cpc2\n"
        );
        let q = render(&[c], true, true, &Format::DefaultTable, 0).expect("ok");
        assert_eq!(q, "184d1efa830a8fd6fbedb2d5c1a4\n");
    }
}
