//! berth-api: the wire types of berthd's HTTP API and a client for it over a unix socket.
//!
//! Networks speak the Docker Engine API (so the stock `docker` CLI works); containers use
//! Docker's shapes where Docker has one. See docs/API.md for the endpoint list.

pub mod client;
pub mod gojson;
pub mod types;

/// The Docker Engine API version berthd announces (`Api-Version` header, `/version`).
pub const API_VERSION: &str = "1.41";
/// The lowest Docker Engine API version berthd accepts in a `/vX.Y` prefix.
pub const MIN_API_VERSION: &str = "1.24";
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";
