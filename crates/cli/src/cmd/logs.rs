//! `berth logs`.

use anyhow::Result;
use berth_api::client::{Client, Method};

use super::{copy_stream, obj_path};

/// Flags of `berth logs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep following the output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines of what is logged so far (`all`: everything).
    #[arg(short = 'n', long, default_value = "all", value_parser = parse_tail)]
    tail: String,
    /// Prefix each line with the time it was logged (RFC 3339, nanoseconds).
    #[arg(short, long)]
    timestamps: bool,
    /// The container.
    container: String,
}

/// Docker's `--tail`: a number of lines or `all` (a negative number means all too).
fn parse_tail(s: &str) -> Result<String, String> {
    if s == "all" || s.parse::<i64>().is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a number of lines or \"all\""))
    }
}

/// The query of `GET /containers/{id}/logs` for these flags.
fn query(args: &Args) -> String {
    let mut q = String::from("/logs?stdout=1&stderr=1");
    if args.follow {
        q.push_str("&follow=1");
    }
    if args.tail != "all" {
        q.push_str(&format!("&tail={}", args.tail));
    }
    if args.timestamps {
        q.push_str("&timestamps=1");
    }
    q
}

/// Prints the container's stdout and stderr to ours.
pub async fn run(client: &Client, args: Args) -> Result<i32> {
    copy_stream(
        client,
        Method::GET,
        &obj_path("containers", &args.container, &query(&args)),
    )
    .await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_accepts_counts_and_all() {
        assert_eq!(parse_tail("2").as_deref(), Ok("2"));
        assert_eq!(parse_tail("all").as_deref(), Ok("all"));
        assert_eq!(parse_tail("-1").as_deref(), Ok("-1"));
        assert!(parse_tail("two").is_err());
    }

    #[test]
    fn query_carries_tail_and_timestamps() {
        let args = Args {
            follow: false,
            tail: "2".into(),
            timestamps: true,
            container: "c".into(),
        };
        assert_eq!(query(&args), "/logs?stdout=1&stderr=1&tail=2&timestamps=1");
    }
}
