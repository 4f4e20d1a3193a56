//! `berth inspect`: containers (falling back to networks) as JSON, like `docker inspect`.

use anyhow::Result;
use berth_api::client::{ApiError, Client, Method, NO_BODY};

use super::obj_path;
use crate::format::out;
use crate::json::{inspect_array, Value};
use crate::template::Template;

/// Flags of `berth inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Go template, e.g. '{{.NetworkSettings.Networks.web.IPAddress}}' or
    /// '{{json .NetworkSettings.Networks}}'.
    #[arg(short, long)]
    format: Option<String>,
    /// Only this kind of object (`container` or `network`), as docker's `--type`: a
    /// container named like a network's id prefix (`c6`) is then never taken for it.
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// Containers (or networks) by name or id.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

/// Which objects a name is looked up as (`--type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A container, else a network (no `--type`, docker's order).
    Any,
    Container,
    Network,
}

/// `--type`'s value: docker's object kinds berth has, a clear error for the ones it has not.
fn kind(value: Option<&str>) -> Result<Kind> {
    match value {
        None => Ok(Kind::Any),
        Some("container") => Ok(Kind::Container),
        Some("network") => Ok(Kind::Network),
        Some(
            t @ ("image" | "node" | "plugin" | "secret" | "service" | "task" | "volume" | "config"),
        ) => {
            anyhow::bail!("berth has no {t} objects: --type takes container or network")
        }
        Some(t) => anyhow::bail!("{t:?} is not a valid value for --type (container or network)"),
    }
}

/// Inspects containers; a name that is no container is looked up as a network (unless
/// `--type` says which).
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let kind = kind(args.kind.as_deref())?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &args.names {
        let container = match kind {
            Kind::Network => None,
            Kind::Any | Kind::Container => {
                Some(fetch(client, &obj_path("containers", name, "/json")))
            }
        };
        match container {
            Some(Ok(v)) => found.push(v),
            Some(Err(e)) if !e.is_not_found() => errors.push(e.into()),
            Some(Err(_)) if kind == Kind::Container => {
                errors.push(anyhow::anyhow!("No such container: {name}"));
            }
            Some(Err(_)) | None => match fetch(client, &obj_path("networks", name, "")) {
                Ok(v) => found.push(v),
                Err(n) if n.is_not_found() => errors.push(match kind {
                    Kind::Network => anyhow::anyhow!("No such network: {name}"),
                    _ => anyhow::anyhow!("No such object: {name}"),
                }),
                Err(n) => errors.push(n.into()),
            },
        }
    }
    Ok(print(&found, template.as_ref(), errors))
}

/// GETs `path` as an order-preserving JSON value.
pub fn fetch(client: &Client, path: &str) -> Result<Value, ApiError> {
    client.request_json_blocking(Method::GET, path, NO_BODY)
}

/// Prints what was found (array or one template line each), then the errors; exit 1 if any.
pub fn print(found: &[Value], template: Option<&Template>, errors: Vec<anyhow::Error>) -> i32 {
    match template {
        Some(t) => {
            for v in found {
                out(&t.render(v));
            }
        }
        None => out(&inspect_array(found)),
    }
    let failed = !errors.is_empty();
    for e in errors {
        match e.downcast_ref::<ApiError>() {
            Some(_) => crate::report(&e),
            None => eprintln!("Error: {e}"),
        }
    }
    i32::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_takes_dockers_kinds_berth_has() {
        assert_eq!(kind(None).ok(), Some(Kind::Any));
        assert_eq!(kind(Some("container")).ok(), Some(Kind::Container));
        assert_eq!(kind(Some("network")).ok(), Some(Kind::Network));
        let e = kind(Some("image"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("no image objects"), "{e}");
        let e = kind(Some("Container\n"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not a valid value for --type"), "{e}");
    }
}
