//! The OpenAPI document of berthd's API (`GET /openapi.json`, also in docs/openapi.json).
//!
//! The operations below are declarations only (utoipa reads their attributes); the handlers
//! live in `http.rs`. Every path is also served with Docker's `/vX.Y` prefix.
#![allow(dead_code)]

use berth_api::types::*;
use utoipa::OpenApi;

#[utoipa::path(get, path = "/_ping", responses((status = 200, description = "OK; headers Api-Version, Ostype")))]
fn ping() {}
#[utoipa::path(get, path = "/version", responses((status = 200, body = VersionResponse)))]
fn version() {}
#[utoipa::path(get, path = "/info", responses((status = 200, body = InfoResponse)))]
fn info() {}
#[utoipa::path(get, path = "/system/check", responses((status = 200, body = SystemCheck, description = "berth's own: the kernel against the stored intent and the steps a reconcile pass would take (dry run)")))]
fn system_check() {}
#[utoipa::path(get, path = "/cluster/nodes", responses((status = 200, body = [NodeSummary], description = "berth's own: the live hosts of this berthd's cluster (--cluster-store)"), (status = 503, body = ErrorResponse, description = "no cluster store, or etcd unreachable")))]
fn cluster_nodes() {}
#[utoipa::path(get, path = "/system/topology", responses((status = 200, body = Topology, description = "berth's own: networks, their devices, veths and containers as the kernel has them, beside the intent, drift marked")))]
fn system_topology() {}
#[utoipa::path(post, path = "/system/trace", request_body = TraceRequest, responses((status = 200, body = TraceEvent, description = "berth's own: an application/x-ndjson stream of TraceEvent lines: progress, then the journey of the traced flow through this host (from the kernel's nftables trace) or an error"), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
fn system_trace() {}
#[utoipa::path(get, path = "/containers/{id}/explain", params(("id" = String, Path), ("verify" = Option<bool>, Query, description = "also send real TCP probes; the answer is then an application/x-ndjson stream of ExplainEvent lines")), responses((status = 200, body = Exposure, description = "berth's own: who can reach the container, on which ports, from where, and where it can go"), (status = 404, body = ErrorResponse)))]
fn explain() {}
#[utoipa::path(get, path = "/networks", params(("filters" = Option<String>, Query, description = "Docker filters JSON: driver, id, name, label, scope, type, dangling")), responses((status = 200, body = [NetworkResource]), (status = 400, body = ErrorResponse)))]
fn list_networks() {}
#[utoipa::path(get, path = "/networks/{id}", params(("id" = String, Path, description = "name, id or unique id prefix")), responses((status = 200, body = NetworkResource), (status = 404, body = ErrorResponse)))]
fn inspect_network() {}
#[utoipa::path(post, path = "/networks/create", request_body = NetworkCreateRequest, responses((status = 201, body = NetworkCreateResponse), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
fn create_network() {}
#[utoipa::path(delete, path = "/networks/{id}", params(("id" = String, Path)), responses((status = 204), (status = 403, body = ErrorResponse, description = "in use or predefined"), (status = 404, body = ErrorResponse)))]
fn remove_network() {}
#[utoipa::path(post, path = "/networks/{id}/connect", params(("id" = String, Path)), request_body = NetworkConnectRequest, responses((status = 200), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
fn connect() {}
#[utoipa::path(post, path = "/networks/{id}/disconnect", params(("id" = String, Path)), request_body = NetworkDisconnectRequest, responses((status = 200), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
fn disconnect() {}
#[utoipa::path(post, path = "/networks/prune", params(("filters" = Option<String>, Query, description = "Docker filters JSON: label, label!, until")), responses((status = 200, body = NetworkPruneResponse), (status = 400, body = ErrorResponse)))]
fn prune_networks() {}
#[utoipa::path(post, path = "/swarm/init", responses((status = 503, body = ErrorResponse, description = "berth does not implement swarm mode (also POST /swarm/join)")))]
fn swarm_init() {}
#[utoipa::path(post, path = "/swarm/leave", responses((status = 503, body = ErrorResponse, description = "This node is not part of a swarm")))]
fn swarm_leave() {}
#[utoipa::path(get, path = "/swarm", responses((status = 503, body = ErrorResponse, description = "dockerd's answer outside a swarm, as for every path of /swarm, /services, /nodes, /tasks, /secrets and /configs: This node is not a swarm manager. …")))]
fn swarm_inspect() {}
#[utoipa::path(post, path = "/containers/create", params(("name" = Option<String>, Query), ("start" = Option<bool>, Query, description = "berth's own (berth run -d): start it in the same request; its overlay endpoints are published with their address claims")), request_body = ContainerCreateRequest, responses((status = 201, body = ContainerCreateResponse), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
fn create_container() {}
#[utoipa::path(get, path = "/containers/json", params(("all" = Option<bool>, Query), ("filters" = Option<String>, Query, description = "JSON: label, name, id, status, exited, network")), responses((status = 200, body = [ContainerSummary]), (status = 400, body = ErrorResponse)))]
fn list_containers() {}
#[utoipa::path(get, path = "/containers/{id}/json", params(("id" = String, Path)), responses((status = 200, body = ContainerInspect), (status = 404, body = ErrorResponse)))]
fn inspect_container() {}
#[utoipa::path(post, path = "/containers/{id}/start", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorResponse), (status = 500, body = ErrorResponse)))]
fn start_container() {}
#[utoipa::path(post, path = "/containers/{id}/stop", params(("id" = String, Path), ("t" = Option<u64>, Query, description = "seconds before SIGKILL")), responses((status = 204)))]
fn stop_container() {}
#[utoipa::path(post, path = "/containers/{id}/restart", params(("id" = String, Path), ("t" = Option<u64>, Query, description = "seconds before SIGKILL")), responses((status = 204), (status = 404, body = ErrorResponse), (status = 500, body = ErrorResponse)))]
fn restart_container() {}
#[utoipa::path(post, path = "/containers/{id}/kill", params(("id" = String, Path), ("signal" = Option<String>, Query, description = "a number or a name, with or without SIG (default SIGKILL)")), responses((status = 204), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
fn kill_container() {}
#[utoipa::path(post, path = "/containers/{id}/update", params(("id" = String, Path)), request_body = ContainerUpdateRequest, responses((status = 200, body = ContainerUpdateResponse), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
fn update_container() {}
#[utoipa::path(post, path = "/containers/{id}/wait", params(("id" = String, Path), ("condition" = Option<String>, Query, description = "next-exit: wait through the next start of an exited container")), responses((status = 200, body = WaitResponse, description = "the head at once, the body when the container exits")))]
fn wait_container() {}
#[utoipa::path(post, path = "/containers/{id}/attach", params(("id" = String, Path), ("stream" = Option<bool>, Query), ("stdin" = Option<bool>, Query), ("stdout" = Option<bool>, Query), ("stderr" = Option<bool>, Query), ("detachKeys" = Option<String>, Query)), responses((status = 101, description = "with Upgrade: tcp, the connection carries the output (raw with Tty, else multiplexed) and the input until the next exit"), (status = 200, description = "without Upgrade: the output as a stream body"), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
fn attach_container() {}
#[utoipa::path(post, path = "/containers/{id}/resize", params(("id" = String, Path), ("h" = u16, Query), ("w" = u16, Query)), responses((status = 200), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
fn resize_container() {}
#[utoipa::path(post, path = "/exec/{id}/resize", params(("id" = String, Path), ("h" = u16, Query), ("w" = u16, Query)), responses((status = 200), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
fn resize_exec() {}
#[utoipa::path(get, path = "/containers/{id}/logs", params(("id" = String, Path), ("follow" = Option<bool>, Query), ("stdout" = Option<bool>, Query), ("stderr" = Option<bool>, Query), ("tail" = Option<String>, Query, description = "the last N lines, or all"), ("timestamps" = Option<bool>, Query, description = "prefix each line with its RFC 3339 time")), responses((status = 200, description = "Docker multiplexed stream (8-byte frame headers)")))]
fn logs() {}
#[utoipa::path(delete, path = "/containers/{id}", params(("id" = String, Path), ("force" = Option<bool>, Query)), responses((status = 204), (status = 409, body = ErrorResponse)))]
fn remove_container() {}
#[utoipa::path(post, path = "/containers/{id}/exec", params(("id" = String, Path)), request_body = ExecCreateRequest, responses((status = 201, body = IdResponse), (status = 409, body = ErrorResponse)))]
fn create_exec() {}
#[utoipa::path(post, path = "/exec/{id}/start", params(("id" = String, Path)), request_body = ExecStartRequest, responses((status = 101, description = "with Upgrade: tcp, the hijacked connection (output raw with Tty, else multiplexed; input with AttachStdin)"), (status = 200, description = "Detach: at once; else the output as a stream body until the process exits"), (status = 409, body = ErrorResponse)))]
fn start_exec() {}
#[utoipa::path(get, path = "/exec/{id}/json", params(("id" = String, Path)), responses((status = 200, body = ExecInspect)))]
fn inspect_exec() {}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "berthd API",
        description = "Docker-Engine-compatible for networks; berth's own container endpoints in Docker's shapes. Every path is also served under /vX.Y (Docker's version prefix)."
    ),
    paths(
        ping,
        version,
        info,
        system_check,
        cluster_nodes,
        system_topology,
        system_trace,
        explain,
        list_networks,
        inspect_network,
        create_network,
        remove_network,
        connect,
        disconnect,
        prune_networks,
        swarm_init,
        swarm_leave,
        swarm_inspect,
        create_container,
        list_containers,
        inspect_container,
        start_container,
        stop_container,
        restart_container,
        kill_container,
        update_container,
        wait_container,
        attach_container,
        resize_container,
        resize_exec,
        logs,
        remove_container,
        create_exec,
        start_exec,
        inspect_exec
    )
)]
struct ApiDoc;

/// The document, as pretty JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    /// docs/openapi.json is the committed copy of the served document; keep it current.
    #[test]
    fn committed_document_is_current() {
        let doc = super::document();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        if std::env::var_os("BERTH_BLESS").is_some() {
            std::fs::write(path, &doc).expect("writing docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == doc,
            "docs/openapi.json is stale: run BERTH_BLESS=1 cargo test -p berthd openapi"
        );
        assert!(doc.contains("/networks/{id}/connect"));
    }
}
