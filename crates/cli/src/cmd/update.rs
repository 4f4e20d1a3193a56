//! `berth update --restart POLICY CONTAINER…`: changes the restart policy of containers, as
//! `docker update --restart` (berth limits no resources, so that is its only option).

use anyhow::Result;
use berth_api::client::{Client, Method};
use berth_api::types::{ContainerUpdateRequest, RestartPolicy};

use super::obj_path;

/// Flags of `berth update`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Restart policy: no, always, unless-stopped, on-failure[:MAX-RETRIES].
    #[arg(long, value_name = "POLICY", required = true)]
    restart: String,
    /// Containers by name or id.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// Updates each container, printing its name; exit 1 if any failed.
pub fn run(client: &Client, args: Args) -> Result<i32> {
    let (name, maximum_retry_count) = berth_plan::restart::parse_flag(&args.restart)?;
    let body = ContainerUpdateRequest {
        restart_policy: Some(RestartPolicy {
            name,
            maximum_retry_count,
        }),
    };
    let mut code = 0;
    for c in &args.containers {
        let path = obj_path("containers", c, "/update");
        match client.request_empty_blocking(Method::POST, &path, Some(&body)) {
            Ok(()) => crate::format::out(c),
            Err(e) => {
                crate::report(&e.into());
                code = 1;
            }
        }
    }
    Ok(code)
}
