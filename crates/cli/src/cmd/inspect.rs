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
    /// Containers (or networks) by name or id.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

/// Inspects containers; a name that is no container is looked up as a network.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &args.names {
        let container = fetch(client, &obj_path("containers", name, "/json"));
        match container {
            Err(e) if e.is_not_found() => match fetch(client, &obj_path("networks", name, "")) {
                Ok(v) => found.push(v),
                Err(n) if n.is_not_found() => {
                    errors.push(anyhow::anyhow!("No such object: {name}"));
                }
                Err(n) => errors.push(n.into()),
            },
            Err(e) => errors.push(e.into()),
            Ok(v) => found.push(v),
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
