//! berth-api: the wire types of berthd's HTTP API and a client for it over a unix socket.
//!
//! Networks speak the Docker Engine API (so the stock `docker` CLI works); containers use
//! Docker's shapes where Docker has one. See docs/API.md for the endpoint list.

mod awake;
pub mod client;
pub mod gojson;
pub mod types;
mod wire;

/// The Docker Engine API version berthd announces (`Api-Version` header, `/version`).
pub const API_VERSION: &str = "1.41";
/// The lowest Docker Engine API version berthd accepts in a `/vX.Y` prefix.
pub const MIN_API_VERSION: &str = "1.24";
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";

/// The detach keys as dockerd and the docker CLI read them (`detachKeys`, `--detach-keys`):
/// comma-separated `ctrl-X` (X a letter or one of `@[\\]^_`) or single characters; Docker's
/// default `ctrl-p,ctrl-q` when none are given.
pub fn detach_keys(spec: Option<&str>) -> Result<Vec<u8>, String> {
    let spec = spec.filter(|s| !s.is_empty()).unwrap_or("ctrl-p,ctrl-q");
    spec.split(',')
        .map(|key| match (key.strip_prefix("ctrl-"), key.as_bytes()) {
            (Some(c), _) => match c.as_bytes() {
                [c @ b'a'..=b'z'] => Ok(c - b'a' + 1),
                [b'@'] => Ok(0),
                [c @ b'['..=b'_'] => Ok(c - b'[' + 27),
                _ => Err(format!("Invalid detach keys ({spec}): unknown key {key:?}")),
            },
            (None, [b]) => Ok(*b),
            _ => Err(format!("Invalid detach keys ({spec}): unknown key {key:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn detach_keys_as_docker_reads_them() {
        assert_eq!(super::detach_keys(None), Ok(vec![0x10, 0x11]));
        assert_eq!(super::detach_keys(Some("ctrl-x,q")), Ok(vec![0x18, b'q']));
        assert_eq!(super::detach_keys(Some("ctrl-@,ctrl-[")), Ok(vec![0, 27]));
        assert!(super::detach_keys(Some("ctrl-1")).is_err());
        assert!(super::detach_keys(Some("ctrl-")).is_err());
        assert!(super::detach_keys(Some("esc")).is_err());
    }
}
