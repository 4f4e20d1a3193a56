//! `berth network ls`.

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::NetworkResource;

use crate::format::{go_time, natural_cmp, row, short_id, with_filters, write_raw, Format};
use crate::json::Value;

/// Flags of `berth network ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only print network ids.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: driver=, name=, id=, label=KEY[=VALUE], type=custom|builtin, dangling= (repeatable).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Go-template format (`{{.ID}} {{.Name}} {{.Driver}} {{.Scope}} {{.IPv4}} {{.IPv6}}
    /// {{.Internal}} {{.Labels}} {{.CreatedAt}}`), `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// The default table.
pub const DEFAULT_TABLE: &str = "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";

/// Column titles of the fields.
pub const HEADERS: &[(&str, &str)] = &[
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("IPv4", "IPV4"),
    ("IPv6", "IPV6"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
    ("CreatedAt", "CREATED AT"),
];

/// Lists networks.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let format = Format::parse(args.format.as_deref())?;
    let path = with_filters("/networks", &args.filter)?;
    let mut nets: Vec<NetworkResource> =
        client.request_json_blocking(Method::GET, &path, NO_BODY)?;
    write_raw(
        false,
        render(&mut nets, args.quiet, args.no_trunc, &format)?.as_bytes(),
    );
    Ok(0)
}

/// The row object a `--format` template sees.
pub fn network_row(n: &NetworkResource, no_trunc: bool) -> Value {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    row(&[
        ("ID", short_id(&n.id, no_trunc)),
        ("Name", n.name.clone()),
        ("Driver", n.driver.clone()),
        ("Scope", n.scope.clone()),
        ("IPv4", n.enable_ipv4.to_string()),
        ("IPv6", n.enable_ipv6.to_string()),
        ("Internal", n.internal.to_string()),
        ("Labels", labels.join(",")),
        ("CreatedAt", go_time(&n.created)),
    ])
}

fn render(
    nets: &mut [NetworkResource],
    quiet: bool,
    no_trunc: bool,
    format: &Format,
) -> Result<String> {
    nets.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    if quiet {
        return Ok(nets
            .iter()
            .map(|n| short_id(&n.id, no_trunc) + "\n")
            .collect());
    }
    let rows: Vec<Value> = nets.iter().map(|n| network_row(n, no_trunc)).collect();
    format.render(&rows, HEADERS, DEFAULT_TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, id: &str, driver: &str, labels: &[(&str, &str)]) -> NetworkResource {
        NetworkResource {
            name: name.into(),
            id: id.into(),
            driver: driver.into(),
            scope: "local".into(),
            created: "2026-11-27T20:13:26.26527981Z".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NetworkResource::default()
        }
    }

    fn nets() -> Vec<NetworkResource> {
        vec![
            net("none", "f79ca311a009b57d94576c95d0a6", "null", &[]),
            net(
                "n2",
                "5023a32964ca40abf8641b64ec02",
                "bridge",
                &[("team", "x")],
            ),
            net("bridge", "c9178719ad511fb5cbed6ccab38a", "bridge", &[]),
        ]
    }

    #[test]
    fn table_like_docker() {
        let got = render(&mut nets(), false, false, &Format::DefaultTable).expect("ok");
        assert_eq!(
            got,
            "NETWORK ID     NAME      DRIVER    SCOPE\n\
             c9178719ad51   bridge    bridge    local\n\
             5023a32964ca   n2        bridge    local\n\
             f79ca311a009   none      null      local\n"
        );
    }

    #[test]
    fn quiet_and_format() {
        let got = render(&mut nets(), true, true, &Format::DefaultTable).expect("ok");
        assert_eq!(
            got,
            "c9178719ad511fb5cbed6ccab38a\n5023a32964ca40abf8641b64ec02\nf79ca311a009b57d94576c95d0a6\n"
        );
        let f = Format::parse(Some(
            "{{.ID}} {{.Name}} {{.Driver}} {{.Scope}} {{.IPv6}} {{.Internal}} {{.Labels}} {{.CreatedAt}}",
        ))
        .expect("format");
        let got = render(&mut nets(), false, false, &f).expect("ok");
        assert_eq!(
            got.lines().nth(1),
            Some("5023a32964ca n2 bridge local false false team=x 2026-11-27 20:13:26.26527981 +0000 UTC")
        );
        let j = render(&mut nets(), false, false, &Format::Json).expect("ok");
        assert!(j.starts_with("{\"CreatedAt\":\"2026-11-27 20:13:26.26527981 +0000 UTC\",\"Driver\":\"bridge\",\"ID\":\"c9178719ad51\""));
    }
}
