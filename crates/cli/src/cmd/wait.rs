//! `berth wait`.

use anyhow::Result;
use berth_api::client::{Client, Method, NO_BODY};
use berth_api::types::WaitResponse;

use super::obj_path;

/// Flags of `berth wait`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Containers by name or id.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// Waits for each container in turn and prints its exit code, as `docker wait`; exit 1 if any
/// could not be waited for (the others are still waited for).
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    let mut code = 0;
    for c in &args.containers {
        let path = obj_path("containers", c, "/wait");
        match client
            .request_json::<WaitResponse, _>(Method::POST, &path, NO_BODY)
            .await
        {
            Ok(w) => crate::format::out(&w.status_code.to_string()),
            Err(e) => {
                crate::report(&e.into());
                code = 1;
            }
        }
    }
    Ok(code)
}
